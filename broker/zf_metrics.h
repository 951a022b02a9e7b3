/*  zf_metrics — the broker's HTTP endpoints: /metrics (Prometheus), /healthz, /readyz.

    Internal to the broker. broker.c serves them from its own event loop (zf_httpd.h) and,
    for each request, fills a zfb_stats_t (the same view STATS packs) and a zfb_health_t;
    this module only writes the answer, so the metric names, types and labels live in one
    place (docs/METRICS.md lists them). Nothing here changes broker state.
*/
#ifndef ZF_METRICS_H
#define ZF_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/zf_prom.h"
#include "zf_stats.h"

/* The loop's health, for /healthz and /readyz. */
typedef struct {
    bool replaying;   /* the journal's replay is under way (zf_broker_new) */
    bool accepting;   /* new jobs are taken: no journal, or a writable one */
    bool stopping;    /* a stop was asked for */
    int64_t since_ms; /* since the event loop last turned */
} zfb_health_t;

/* The loop counts as alive while it turned within this long (it answers from the loop, so
   an answer is itself a turn: a stuck loop shows as a probe that times out). */
#define ZFB_HEALTHY_TURN_MS 5000

/* Answers GET path: /metrics (200, or 503 while the journal replays), /healthz (200 while
   the loop turns), /readyz (200 once the journal is replayed and jobs are accepted, else
   503 with the reason), anything else 404. Writes the body into `body` and the content
   type of /metrics into *type. Returns the HTTP status. */
int zfb_metrics_answer(const char *path, const zfb_health_t *h, const zfb_stats_t *v,
                       zf_prom_t *body, const char **type);

/* Writes every broker metric family (Prometheus text format) from v. */
void zfb_metrics_write(zf_prom_t *t, const zfb_stats_t *v);

/* Watches sock's connections (zmq_socket_monitor: accepted and disconnected) for the
   zfleet_clients_connected gauge. Returns the ZMQ_PAIR to poll (the caller closes it
   before sock), or NULL with a logged line. */
void *zfb_metrics_monitor(void *ctx, void *sock);

/* Reads the monitor's pending events without blocking and keeps *open up to date. */
void zfb_metrics_monitor_read(void *mon, uint64_t *open);

#endif
