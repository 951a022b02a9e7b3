/*  zf_fleet — the fleet supervisor: one worker process per device.

    Finds the devices (CUDA runtime for GPUs, sched_getaffinity for cores), starts one
    `zfleet-worker --device D` per device, restarts a worker that dies (exponential backoff;
    a device whose worker crashes in a tight loop is given up with a clear message), and on
    SIGTERM drains: every worker finishes the job in hand and leaves; a second SIGTERM or
    the drain timeout ends them. With metrics_addr it serves its own /metrics (workers
    running per device, restarts by cause, devices given up), /healthz and /readyz from its
    supervision loop (zf_httpd.h; docs/METRICS.md).
*/
#ifndef ZF_FLEET_H
#define ZF_FLEET_H

#include <stdint.h>

#include "zf_worker.h"

typedef struct {
    const char *gpus;       /* "all", "none" or a list such as "0,1" */
    const char *cpus;       /* "all", "none" or a list such as "0-3,6" */
    const char *worker_bin; /* NULL: /proc/self/exe */
    const char *argv0;
    uint32_t backoff_min_ms;  /* first restart delay; doubles per exit in a row (200) */
    uint32_t backoff_max_ms;  /* longest restart delay (10000) */
    unsigned crash_limit;     /* exits within 30 s that give a device up; 0 = never (8) */
    const char *metrics_addr; /* HOST:PORT for /metrics, /healthz, /readyz; NULL = off */
} zf_fleet_config_t;

#define ZF_FLEET_CRASH_LIMIT_MAX 64

/* Fills in the defaults above (gpus and cpus "all"). */
void zf_fleet_config_defaults(zf_fleet_config_t *cfg);

/* Parses a device list ("all", "none", "0,2-4") against the available ones. Returns how
   many indices were written to out, or -1 on a syntax error or an unavailable index. */
int zf_fleet_parse_list(const char *spec, const int *avail, int navail, int *out, int max);

/* Runs the fleet until it is stopped and drained. The worker config (broker, modules,
   credits, heartbeat...) is passed on to every worker. Returns 0, or 1 if no worker
   could start. */
int zf_fleet_run(const zf_fleet_config_t *fleet, const zf_worker_config_t *worker);

#endif
