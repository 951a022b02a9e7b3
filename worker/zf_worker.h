/*  zf_worker — one worker process: an I/O thread (this one) that talks to the broker and
    keeps heartbeats going, and a handler thread (zf_runner) that runs jobs.

    Exit codes of zf_worker_run (and of zfleet-worker):
      0 stopped cleanly (SIGTERM/SIGINT drain finished)
      1 could not start (bad device, module refused, bad endpoint)
      3 a job ran past its timeout: the handler cannot be stopped safely, so the process
        ends after reporting it (a supervisor restarts it)
      4 a cancelled job did not stop within the grace period (same reason)
*/
#ifndef ZF_WORKER_H
#define ZF_WORKER_H

#include <stddef.h>
#include <stdint.h>

#define ZF_WORKER_EXIT_OK 0
#define ZF_WORKER_EXIT_START 1
#define ZF_WORKER_EXIT_TIMEOUT 3
#define ZF_WORKER_EXIT_CANCEL 4

#define ZF_WORKER_MAX_MODULES 16

/* A fleet supervisor puts the routing id of its own broker connection (hex) in this
   environment variable for the workers it starts; a worker sends it in READY and removes it
   from its environment, so that the broker accepts an OBITUARY for that worker only from
   that supervisor (or the worker itself). Secret only as far as the environment is. */
#define ZF_SUPERVISOR_ENV "ZFLEET_SUPERVISOR"
#define ZF_SUPERVISOR_MAX 64

typedef struct {
    const char *broker_ep; /* default tcp://127.0.0.1:5556 */
    const char *device;    /* cpu, cpu:N or gpu:N; default cpu */
    const char *modules[ZF_WORKER_MAX_MODULES];
    int nmodules;
    const char *venv;          /* Python virtual environment for Python modules, or NULL */
    const char *name;          /* default host:pid:device */
    uint32_t credits;          /* jobs held at once (1 running + prefetch); default 0 =
                                  adaptive (zf_prefetch.h) */
    uint32_t heartbeat_ms;     /* default 1000 */
    uint32_t liveness;         /* default 3 */
    uint32_t cancel_grace_ms;  /* default 2000 */
    uint32_t drain_timeout_ms; /* default 0 = wait for the job in hand */
    uint32_t hold_bytes;       /* output bytes of sent results kept until the broker has them,
                                  to deliver again after a broker restart (re-attach);
                                  default 64 MiB, 0 = keep none */
    int fake_gpu;              /* tests only: report a GPU device without CUDA */
    /* CURVE (docs/SECURITY.md): this worker's NAME.key_secret and the broker's public key
       file; both NULL = off. The fleet passes them on and uses them itself. */
    const char *key_file, *broker_key_file;
} zf_worker_config_t;

void zf_worker_config_defaults(zf_worker_config_t *cfg);

/* The default worker name, host:pid:device (what the broker and `zfleet workers` show);
   the fleet computes it for its children to report their deaths by name. */
void zf_worker_default_name(char *out, size_t len, int pid, const char *device_label);

/* Binds the device, loads and initialises the modules, and serves until stopped. Returns
   one of the exit codes above. */
int zf_worker_run(const zf_worker_config_t *cfg);

#endif
