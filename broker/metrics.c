/*  zf_metrics — see zf_metrics.h. The names follow Prometheus' conventions: the zfleet_
    prefix, _total on counters, base units (seconds, bytes), label names function, status,
    reason, device_kind. */
#include "zf_metrics.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "../common/zf_util.h"

/* Histogram buckets shown from 2^4 us = 16 us up (zf_hist's octave bounds). */
#define HIST_MIN_POW2 4

static void counter(zf_prom_t *t, const char *name, const char *help, uint64_t v)
{
    zf_prom_family(t, name, "counter", help);
    zf_prom_u64(t, name, v, NULL);
}

static void gauge(zf_prom_t *t, const char *name, const char *help, uint64_t v)
{
    zf_prom_family(t, name, "gauge", help);
    zf_prom_u64(t, name, v, NULL);
}

/* "queue full" -> "queue_full": label values that read as identifiers in queries. */
static const char *snake(const char *s, char *out, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        out[i] = s[i] == ' ' ? '_' : s[i];
    out[i] = 0;
    return out;
}

static void write_jobs(zf_prom_t *t, const zfb_stats_t *v)
{
    const counters_t *c = v->c;
    counter(t, "zfleet_jobs_submitted_total", "SUBMIT requests received (accepted or not).",
            c->submitted);
    zf_prom_family(t, "zfleet_jobs_accepted_total", "counter",
                   "Jobs accepted (journaled and acknowledged), by function.");
    for (const fnq_t *f = v->fns; f; f = f->hh.next)
        zf_prom_u64(t, "zfleet_jobs_accepted_total", f->accepted, "function", f->name, NULL);
    zf_prom_family(t, "zfleet_jobs_rejected_total", "counter",
                   "Submissions refused, by reason (the error a client gets, in snake_case).");
    for (int e = 1; e < ZF__ECOUNT; e++) {
        char reason[64];
        zf_prom_u64(t, "zfleet_jobs_rejected_total", c->rejected[e], "reason",
                    snake(zf_error_name((uint32_t)e), reason, sizeof reason), NULL);
    }
    zf_prom_family(t, "zfleet_jobs_finished_total", "counter",
                   "Jobs that reached a terminal state, by function and status.");
    for (const fnq_t *f = v->fns; f; f = f->hh.next)
        for (int s = ZF_ST_SUCCEEDED; s <= ZF_ST_OUTPUT_LOST; s++)
            zf_prom_u64(t, "zfleet_jobs_finished_total", f->finished[s], "function", f->name,
                        "status", zf_state_name((uint32_t)s), NULL);
    zf_prom_family(t, "zfleet_jobs_queued", "gauge", "Jobs waiting for a worker, by function.");
    for (const fnq_t *f = v->fns; f; f = f->hh.next)
        zf_prom_u64(t, "zfleet_jobs_queued", f->queued, "function", f->name, NULL);
    zf_prom_family(t, "zfleet_jobs_running", "gauge", "Jobs leased to a worker, by function.");
    for (const fnq_t *f = v->fns; f; f = f->hh.next)
        zf_prom_u64(t, "zfleet_jobs_running", f->running, "function", f->name, NULL);
    counter(t, "zfleet_jobs_dispatched_total", "Attempts sent to workers.", c->dispatched);
    counter(t, "zfleet_requeues_total",
            "Attempts put back in their queue (worker lost, timed out with attempts left).",
            c->requeued);
    counter(t, "zfleet_recalls_total", "Prefetched jobs a worker gave back unstarted.",
            c->recalled);
    counter(t, "zfleet_run_timeouts_total",
            "Attempts the broker ended itself: no result by the run timeout plus grace.",
            c->run_timeouts);
}

static void write_hists(zf_prom_t *t, const zfb_stats_t *v)
{
    zf_prom_family(t, "zfleet_job_queue_wait_seconds", "histogram",
                   "Time from a job's placement in its queue (acceptance or requeue) to its "
                   "dispatch, by function; millisecond resolution.");
    for (const fnq_t *f = v->fns; f; f = f->hh.next)
        zf_prom_hist(t, "zfleet_job_queue_wait_seconds", &f->qwait, HIST_MIN_POW2, "function",
                     f->name, NULL);
    zf_prom_family(t, "zfleet_job_run_seconds", "histogram",
                   "Handler run time of each answered attempt as the worker measured it, "
                   "by function.");
    for (const fnq_t *f = v->fns; f; f = f->hh.next)
        zf_prom_hist(t, "zfleet_job_run_seconds", &f->run, HIST_MIN_POW2, "function", f->name,
                     NULL);
}

/* The state names of STATS' workers list. */
enum { W_IDLE, W_BUSY, W_SUSPECT, W_DRAINING, W_NSTATES };
static const char *const wstate_names[W_NSTATES] = {"idle", "busy", "suspect", "draining"};

static void write_workers(zf_prom_t *t, const zfb_stats_t *v)
{
    uint64_t n[ZF_NKINDS][W_NSTATES] = {{0}};
    for (const wrk_t *w = v->workers; w; w = w->hh.next) {
        int st = w->draining ? W_DRAINING : w->suspect ? W_SUSPECT : w->inflight ? W_BUSY : W_IDLE;
        n[w->kind == ZF_DEV_GPU][st]++;
    }
    zf_prom_family(t, "zfleet_workers", "gauge", "Registered workers, by device kind and state.");
    for (int k = 0; k < ZF_NKINDS; k++)
        for (int s = 0; s < W_NSTATES; s++)
            zf_prom_u64(t, "zfleet_workers", n[k][s], "device_kind",
                        zf_device_kind_name(k ? ZF_DEV_GPU : ZF_DEV_CPU), "state", wstate_names[s],
                        NULL);
    counter(t, "zfleet_workers_lost_total",
            "Workers removed as dead (no heartbeat, obituary, wedged).", v->c->workers_lost);
    counter(t, "zfleet_stale_results_total",
            "Results discarded: their (job, attempt) lease was not the current one.",
            v->c->stale_results);
    zf_prom_family(t, "zfleet_malformed_messages_total", "counter",
                   "Messages that could not be decoded or were not a command of their "
                   "socket, by sender.");
    zf_prom_u64(t, "zfleet_malformed_messages_total", v->c->malformed_client, "source", "client",
                NULL);
    zf_prom_u64(t, "zfleet_malformed_messages_total", v->c->malformed_worker, "source", "worker",
                NULL);
}

static void write_store(zf_prom_t *t, const zfb_stats_t *v)
{
    gauge(t, "zfleet_result_store_bytes",
          "Bytes the kept results hold in memory (outputs, and dead letters' payloads).",
          v->result_bytes);
    gauge(t, "zfleet_results_kept", "Finished jobs kept for get and wait.", v->results_kept);
    gauge(t, "zfleet_dead_letters", "Jobs in the dead-letter list.", v->dead_letters);
    gauge(t, "zfleet_queued_payload_bytes", "Payload bytes of unfinished jobs.", v->queued_bytes);
    gauge(t, "zfleet_clients_connected", "Client connections open to the broker.", v->clients);
    counter(t, "zfleet_loop_stalls_total",
            "Event-loop turns far later than planned (the broker was stopped or blocked).",
            v->c->stalls);
}

static void write_journal(zf_prom_t *t, const zfb_stats_t *v)
{
    if (!v->journal)
        return; /* --no-journal: no journal families at all */
    gauge(t, "zfleet_journal_bytes", "Size of the journal file.", v->journal_bytes);
    gauge(t, "zfleet_journal_records", "Records in the journal file.", v->journal_records);
    gauge(t, "zfleet_journal_writable",
          "1 while the journal takes records, 0 while it is down (new jobs refused).",
          v->journal_ok);
    counter(t, "zfleet_journal_failures_total",
            "Journal writes and syncs that failed (each took the journal down).",
            v->journal_errors);
    zf_prom_family(t, "zfleet_journal_fsync_duration_seconds", "histogram",
                   "Duration of each journal fdatasync (group commits and interval syncs).");
    zf_prom_hist(t, "zfleet_journal_fsync_duration_seconds", v->fsync, HIST_MIN_POW2, NULL);
}

void zfb_metrics_write(zf_prom_t *t, const zfb_stats_t *v)
{
    zf_prom_family(t, "zfleet_broker_uptime_seconds", "gauge", "Seconds since the broker started.");
    zf_prom_f64(t, "zfleet_broker_uptime_seconds", (double)v->uptime_ms / 1000.0, NULL);
    write_jobs(t, v);
    write_hists(t, v);
    write_workers(t, v);
    write_store(t, v);
    write_journal(t, v);
}

int zfb_metrics_answer(const char *path, const zfb_health_t *h, const zfb_stats_t *v,
                       zf_prom_t *body, const char **type)
{
    if (!strcmp(path, "/healthz")) {
        /* alive: a replay is the broker at work, and the loop answered this very request */
        if (h->replaying || h->since_ms <= ZFB_HEALTHY_TURN_MS) {
            zf_prom_printf(body, "ok%s\n", h->replaying ? ": replaying the journal" : "");
            return 200;
        }
        zf_prom_printf(body, "stalled: the event loop last turned %lld ms ago\n",
                       (long long)h->since_ms);
        return 503;
    }
    if (!strcmp(path, "/readyz")) {
        const char *why = h->replaying  ? "replaying the journal"
                          : h->stopping ? "stopping"
                          : !h->accepting
                              ? "the journal is down: new jobs are refused until it recovers"
                              : NULL;
        zf_prom_printf(body, "%s%s\n", why ? "not ready: " : "ready", why ? why : "");
        return why ? 503 : 200;
    }
    if (!strcmp(path, "/metrics")) {
        if (h->replaying) {
            zf_prom_printf(body, "not ready: replaying the journal\n");
            return 503;
        }
        zfb_metrics_write(body, v);
        *type = ZF_PROM_CONTENT_TYPE;
        return 200;
    }
    zf_prom_printf(body, "not found: %s (try /metrics, /healthz or /readyz)\n", path);
    return 404;
}

void *zfb_metrics_monitor(void *ctx, void *sock)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://zfb-metrics-monitor-%p", sock);
    void *mon = NULL;
    if (zmq_socket_monitor(sock, ep, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) == 0)
        mon = zmq_socket(ctx, ZMQ_PAIR);
    if (mon && zmq_connect(mon, ep) == 0)
        return mon;
    zf_log(ZF_LOG_ERROR, "metrics: cannot monitor the client endpoint: %s", zmq_strerror(errno));
    if (mon)
        zmq_close(mon);
    return NULL;
}

/* Each event is two frames: u16 event and u32 value (host order), then the endpoint. */
void zfb_metrics_monitor_read(void *mon, uint64_t *open)
{
    for (;;) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= 2)
            memcpy(&event, zmq_msg_data(&ev), 2);
        bool more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        zmq_msg_init(&addr);
        if (more)
            zmq_msg_recv(&addr, mon, 0); /* (the second frame of an event is always there) */
        zmq_msg_close(&addr);
        if (event == ZMQ_EVENT_ACCEPTED)
            ++*open;
        else if (event == ZMQ_EVENT_DISCONNECTED && *open)
            --*open;
    }
}
