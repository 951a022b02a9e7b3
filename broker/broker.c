/*  zf_broker — see zf_broker.h. The event loop, the client and worker protocols, dispatch.

    Invariants kept by this file:
    - a job is in exactly one place: a function queue (QUEUED), a worker lease (RUNNING), or
      the done / dead lists (terminal);
    - a queued job exists only while no eligible worker has a free credit (dispatch is greedy
      whenever a job arrives or a credit frees), so an idle worker never waits beside work;
    - a worker's inflight counts every lease it was given and has not answered, even leases
      the broker has since fenced (cancelled jobs), so credits are never exceeded;
    - a DONE whose (id, attempt) is not the job's current lease is discarded and counted;
    - a worker is never removed inside dispatch: a failed send dooms it (doom), and it is
      removed at the end of the loop turn (reap_workers), as redis frees clients in
      beforeSleep. Removal (worker_remove) happens only from handlers at the top of the
      loop, so no caller up the stack ever holds a freed worker.

    Out of memory, one rule: what the broker has already promised (a queued or running job,
    its lease, deadline, waiters, causes, result) is never dropped silently: failing to
    allocate for it stops the broker with a log line (oom), and a restart replays the
    journal. What it has not accepted yet is refused with a clear error and nothing changed:
    a SUBMIT or a RETRY (EINTERNAL), a WAIT or GET (ERROR EINTERNAL), a READY (the worker is
    not registered; it is told RESET when it speaks and registers again). Held-back results
    that cannot be queued stay in the result store (a GET finds them).
*/

#include "zf_broker.h"

#include <assert.h>
#include <errno.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <utlist.h>

#include "../common/zf_httpd.h"
#include "../common/zf_util.h"
#include "../proto/zf_wire.h"
#include "zf_auth.h"
#include "zf_ids.h"
#include "zf_index.h"
#include "zf_journal.h"
#include "zf_listing.h"
#include "zf_pipeline.h"
#include "zf_metrics.h"
#include "zf_notify.h"
#include "zf_pacer.h"
#include "zf_reattach.h"
#include "zf_state.h"
#include "zf_stats.h"

#define ZF_MAX_FN_QUEUES 10000 /* distinct function names; each costs a queue forever */
/* Retry on failure and delayed jobs (PROTOCOL.md §4.5). */
#define ZF_BACKOFF_DEFAULT_MS 1000             /* first retry's backoff when SUBMIT says none */
#define ZF_BACKOFF_CAP_MS 60000                /* no retry waits longer than this */
#define ZF_DELAY_MAX_MS (30ull * 24 * 3600000) /* 30 days: the furthest a job may be delayed */
#define BATCH 512 /* messages read from one socket per loop turn before looking at the other */
/* Outputs from this size on count against a client's unread-bytes bound; smaller ones are
   bounded by the socket's message high-water mark alone (100,000 x 256 B = 25 MB). */
#define ZF_TRACKED_OUTPUT_MIN 256
/* Results held back for one connection at most (24 bytes each): past it, a connection that
   keeps asking (GET) without reading gets no more answers, and costs no more memory. */
#define ZF_DEFERRED_MAX 100000
/* A FORGET job's FORGET record is written this many heartbeats after its result was pushed
   (see forget_later): ZeroMQ may hold a pushed result in its queue that long or longer. */
#define FORGET_DELAY_BEATS 10
/* During a journal replay the metrics server answers (503 "replaying") once per this many
   restored jobs (see restore_job). */
#define REPLAY_SERVE_EVERY 4096

struct zf_broker {
    zf_broker_config_t cfg;
    void *ctx, *front, *back;
    int sigfd;
    bool stop;
    job_t *jobs;        /* all jobs by id */
    zfb_index_t *index; /* the same jobs in id order, for JOBS listings (zf_index.h) */
    zfb_pacer_t *pacer; /* JOBS pages kept to a share of the loop while jobs run */
    fnq_t *fns;         /* functions by name */
    wrk_t *workers;     /* workers by routing id */
    client_t *clients;  /* clients by routing id */
    client_t *slow;     /* clients with results held back (client_t.deferred) */
    int wake_fd;        /* eventfd: ZeroMQ wrote out enough for a held-back result */
    int stop_fd;        /* eventfd: zf_broker_stop (any thread) asks the loop to stop */
    wrk_t *alive;       /* liveness list, oldest first */
    job_t *done, *dead; /* terminal jobs: results kept for get/wait; dead letters */
    uint64_t ndone, ndead, queued;
    uint64_t payload_bytes; /* payloads of unfinished jobs, bounded by max_queued_bytes */
    uint64_t unplaced;      /* accepted this turn, placed after the commit: count as queued */
    uint64_t result_bytes;  /* what done and dead hold (stored_bytes of each), bounded by
                               cfg.result_store_bytes at the end of every loop turn */
    uint32_t prefetching;   /* workers holding 2+ leases: the only ones steal_for can use */
    job_t *ack_head, **ack_tail;
    job_t *send_head, **send_tail; /* terminal jobs whose results wait for the commit */
    job_t *forgetting;             /* pushed FORGET jobs whose FORGET record waits, oldest first */
    struct lazy_ack *lazy;         /* owed LAZY_ACK acceptances, a ring, oldest (first due) first */
    size_t lazy_cap, lazy_first, lazy_len;
    long lazy_ms; /* how long one may wait: ZF_LAZY_ACK_MS, or $ZFLEET_LAZY_ACK_MS (tests) */
    struct receipts *receipts;              /* FORGET pushes written out (see struct receipts) */
    uint64_t nforgetting, forgetting_bytes; /* bounded like the result store */
    wrk_t *doomed; /* workers to remove at the end of the loop turn (doom) */
    zf_heap_t deadlines;
    zf_heap_t scheduled;    /* SCHEDULED jobs by res->due_at (delayed, or a retry's backoff) */
    uint64_t jitter;        /* xorshift state for the retries' backoff jitter */
    zf_heap_t runs;         /* workers whose current lease has a run timer (wrk_t.run_until) */
    int64_t last_timers_ms; /* when run_timers last ran, and the poll wait planned since: */
    long poll_wait_ms;      /* a turn much later than that means the broker itself stalled */
    zf_ids_t *ids;          /* job ids: unique across restarts, not guessable (zf_ids.h) */
    int64_t front_seq, back_seq;
    int64_t next_tick_ms;
    int64_t started_ms;
    zf_journal_t *journal;
    zfb_reattach_t *reattach; /* jobs restored running, waiting for their workers' claims */
    zfb_owners_t *owners;     /* every key that was listed or owns a job (zf_owners.h) */
    zfb_auth_t *auth;         /* CURVE and ZAP; NULL when off (then nobody owns anything new) */
    /* Who sent the client message being handled: its owner id (0 without CURVE) and
       whether its key is an admin's. Set by client_message before any handler runs. */
    uint32_t caller;
    bool caller_admin;
    counters_t c;
    /* --metrics (zf_metrics.h): the HTTP server polled by the loop, the client endpoint's
       connection monitor, and what /healthz and /readyz read */
    zf_httpd_t *httpd;     /* NULL when off */
    void *conn_mon;        /* ZMQ_PAIR of the front socket's monitor, or NULL */
    uint64_t clients_open; /* client connections open (from conn_mon) */
    zf_hist_t fsync_hist;  /* the journal's fdatasync durations */
    bool replaying;        /* inside zf_journal_replay */
    uint64_t restored;     /* jobs restored so far by the replay */
    int64_t last_turn_ms;  /* when the loop last turned */
};

/* ------------------------------------------------------------------ helpers */

static bool job_less(const void *a, const void *b)
{
    const job_t *x = a, *y = b;
    return x->priority != y->priority ? x->priority > y->priority : x->seq < y->seq;
}

static void job_setqpos(void *e, uint32_t pos)
{
    ((job_t *)e)->qpos = pos;
}

static bool deadline_less(const void *a, const void *b)
{
    return ((const job_t *)a)->deadline_at < ((const job_t *)b)->deadline_at;
}

static void job_settpos(void *e, uint32_t pos)
{
    ((job_t *)e)->tpos = pos;
}

static bool due_less(const void *a, const void *b)
{
    return ((const job_t *)a)->res->due_at < ((const job_t *)b)->res->due_at;
}

static bool run_less(const void *a, const void *b)
{
    return ((const wrk_t *)a)->run_until < ((const wrk_t *)b)->run_until;
}

static void run_setpos(void *e, uint32_t pos)
{
    ((wrk_t *)e)->rpos = pos;
}

/* Takes a received frame to keep for a while (a stored output; a queued payload is kept
   inside its job, see on_submit). ZeroMQ
   receives small messages into a shared 8 KiB buffer that stays allocated while any of
   them lives, so keeping a small frame as it is would pin the whole buffer: up to 100x its
   size across a million queued jobs. Small frames are therefore copied once into their own
   allocation; larger ones have their own buffer already and are moved, never copied. */
static void keep_frame(zmq_msg_t *dst, zmq_msg_t *src)
{
    size_t n = zmq_msg_size(src);
    if (n > 0 && n <= ZF_JOB_INLINE_MAX && zmq_msg_init_size(dst, n) == 0) {
        memcpy(zmq_msg_data(dst), zmq_msg_data(src), n);
        return;
    }
    zmq_msg_init(dst);
    zmq_msg_move(dst, src);
}

static result_t *job_res(job_t *j)
{
    result_t *r = zfb_job_res(j);
    if (!r)
        zfb_oom("a result record");
    return r;
}

static void flight_release(flight_t *f)
{
    if (atomic_fetch_sub(&f->refs, 1) == 1)
        free(f);
}

static client_t *client_get(zf_broker_t *b, const void *rid, size_t len)
{
    client_t *c;
    HASH_FIND(hh, b->clients, rid, len, c);
    if (c)
        return c;
    c = calloc(1, sizeof *c + len);
    flight_t *f = c ? calloc(1, sizeof *f) : NULL;
    if (!f) {
        free(c);
        return NULL;
    }
    atomic_init(&f->refs, 1);
    f->wake_fd = b->wake_fd;
    c->flight = f;
    c->rid_len = (uint8_t)len;
    memcpy(c->rid, rid, len);
    HASH_ADD(hh, b->clients, rid, len, c);
    return c;
}

static void client_free(zf_broker_t *b, client_t *c)
{
    HASH_DEL(b->clients, c);
    flight_release(c->flight);
    free(c->deferred);
    free(c);
}

/* A client entry may go once no job names it, nothing is held back for it, and all it was
   sent has been written out: a new entry for the same connection would start its unread
   bytes from zero. */
static bool client_idle(const client_t *c)
{
    return c->refs == 0 && c->ndeferred == 0 && atomic_load(&c->flight->bytes) == 0;
}

static void client_release(zf_broker_t *b, client_t **p)
{
    client_t *c = *p;
    *p = NULL;
    if (c && --c->refs == 0 && client_idle(c))
        client_free(b, c);
}

/* Frees a client entry that no job refers to (a rejected or NO_PUSH submit created it). */
static void client_drop_unused(zf_broker_t *b, client_t *c)
{
    if (client_idle(c))
        client_free(b, c);
}

/* The tick's sweep: entries kept only until ZeroMQ had written what they were sent. */
static void sweep_clients(zf_broker_t *b)
{
    client_t *c, *tmp;
    HASH_ITER(hh, b->clients, c, tmp)
    if (client_idle(c))
        client_free(b, c);
}

/* zfb_job_clear_waiters's release */
static void release_client(void *b, client_t **c)
{
    client_release(b, c);
}

/* An unfinished job's payload counts against the queue's byte bound, and (with its waiter,
   the connection that submitted or retried it) against that connection's share. */
static void count_unfinished(zf_broker_t *b, job_t *j)
{
    b->payload_bytes += j->plen;
    zfb_owner_t *o = j->owner ? zfb_owners_get(b->owners, j->owner) : NULL; /* (CURVE only) */
    if (o) {
        o->unfinished++;
        o->unfinished_bytes += j->plen;
    }
    if (!j->waiter)
        return; /* restored from the journal: nobody's share */
    j->counted = true;
    j->waiter->queued_jobs++;
    j->waiter->queued_bytes += j->plen;
}

static void uncount_unfinished(zf_broker_t *b, job_t *j)
{
    b->payload_bytes -= j->plen;
    zfb_owner_t *o = j->owner ? zfb_owners_get(b->owners, j->owner) : NULL;
    if (o && o->unfinished) {
        o->unfinished--;
        o->unfinished_bytes -= o->unfinished_bytes < j->plen ? o->unfinished_bytes : j->plen;
    }
    if (!j->counted)
        return;
    j->counted = false;
    j->waiter->queued_jobs--;
    j->waiter->queued_bytes -= j->plen;
}

/* Takes the job out of the broker (table, waiters, deadline heap) and frees it. */
static void job_free(zf_broker_t *b, job_t *j)
{
    HASH_DEL(b->jobs, j);
    zfb_index_remove(b->index, j->id);
    zfb_job_clear_waiters(j, release_client, b);
    if (j->tpos != ZF_HEAP_NONE)
        zf_heap_remove(&b->deadlines, j->tpos);
    zfb_job_free(&j);
}

/* ------------------------------------------------------------------ functions & workers */

static fnq_t *fn_get(zf_broker_t *b, zf_str_t name, bool create)
{
    fnq_t *f;
    HASH_FIND(hh, b->fns, name.ptr, name.len, f);
    if (f || !create)
        return f;
    f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    zf_str_copy(f->name, sizeof f->name, name);
    for (int i = 0; i < 3; i++)
        zf_heap_init(&f->q[i], job_less, job_setqpos);
    HASH_ADD(hh, b->fns, name, name.len, f);
    return f;
}

static int kind_slot(uint8_t kind)
{
    return kind == ZF_DEV_GPU ? 1 : 0;
}

/* Puts the worker's slots in the ready list its credits call for. */
static void worker_relist(wrk_t *w)
{
    int want = LIST_NONE;
    if (!w->draining && !w->suspect && !w->doomed && w->inflight < w->credits)
        want = w->inflight == 0 ? LIST_IDLE : LIST_PARTIAL;
    if (want == w->list)
        return;
    int k = kind_slot(w->kind);
    for (uint32_t i = 0; i < w->nslots; i++) {
        wslot_t *s = &w->slots[i];
        if (w->list != LIST_NONE)
            DL_DELETE(s->fn->ready[k][w->list], s);
        if (want != LIST_NONE)
            DL_APPEND(s->fn->ready[k][want], s);
    }
    w->list = (int8_t)want;
}

/* ------------------------------------------------------------------ dispatch and batches

   The dispatch rule with batched functions (issue 17). A worker that serves a batched
   function registers with credits >= its largest max_batch (READY ZF_F_CREDITS, raised by
   the worker) and says so (READY ZF_F_BATCH). The broker then dispatches as for any worker:
   - an idle worker first (pick_worker): a job that arrives when a worker is free starts
     there at once, so at low load a batched job waits only its worker's max_delay for
     mates, never for the broker;
   - under load every worker is busy, and the jobs go to the free credits of the busy ones
     (the partial list); those jobs wait in the worker, where the next batch forms from
     them. When a batch of n ends, its n DONEs free n credits and refill() sends the next n
     queued jobs at once: the broker keeps a loaded batching worker's queue at max_batch,
     which is what makes full batches, instead of spreading one job per worker.
   Why short jobs do not wait behind long ones: the credits above max_batch are only on
   workers that serve a batched function; a worker forms a batch only from jobs of that one
   function, and jobs of other functions it holds keep their place in its queue (they run
   after the current call, as behind a single job). An idle worker still takes back the
   last not-started job of a busy one (steal_for, RECALL), batched or not, so nothing
   queued waits behind a long batch while a worker that could run it is free. The broker
   does not hold jobs back to fill batches: holding is the worker's max_delay, bounded and
   chosen per function by its author.
   The poison rule's broker half is lease_started (a batching worker's retry ran alone). */

/* The worker that should take a job of `fn` needing `device`: idle before busy, GPU
   before CPU for jobs that run anywhere. NULL when every eligible worker is full. */
static wrk_t *pick_worker(fnq_t *fn, uint8_t device)
{
    int kinds[2], nk = 0;
    if (device == ZF_DEV_ANY) {
        kinds[nk++] = 1;
        kinds[nk++] = 0;
    } else {
        kinds[nk++] = kind_slot(device);
    }
    for (int list = LIST_IDLE; list <= LIST_PARTIAL; list++)
        for (int i = 0; i < nk; i++)
            if (fn->ready[kinds[i]][list])
                return fn->ready[kinds[i]][list]->w;
    return NULL;
}

static void enqueue(zf_broker_t *b, job_t *j, bool front)
{
    j->state = ZF_ST_QUEUED;
    j->worker = NULL;
    j->seq = front ? --b->front_seq : ++b->back_seq;
    if (zf_heap_push(&j->fn->q[j->device], j) < 0)
        zfb_oom("a queue slot");
    j->fn->queued++;
    b->queued++;
}

static void dequeue(zf_broker_t *b, job_t *j)
{
    assert(j->qpos != ZF_HEAP_NONE);
    zf_heap_remove(&j->fn->q[j->device], j->qpos);
    j->fn->queued--;
    b->queued--;
}

static void finalize(zf_broker_t *b, job_t *j, zf_state_t st);
static void run_timer_follow(zf_broker_t *b, wrk_t *w);
static void schedule(zf_broker_t *b, job_t *j);
static bool keeps_payload(const job_t *j);

/* Queues w's removal for the end of the loop turn (reap_workers): a caller up the stack
   (place, refill, on_done) may hold w, and removing a worker requeues its jobs, which
   places them again: removal inside dispatch would recurse. A doomed worker is in no
   ready list, so nothing more is dispatched to it. */
static void doom(zf_broker_t *b, wrk_t *w, const char *why)
{
    if (w->doomed)
        return;
    w->doomed = true;
    w->doom_why = why;
    worker_relist(w);
    w->doomed_next = b->doomed;
    b->doomed = w;
}

/* Sends the queued-state job j (in its queue or not) to w under a new lease. Returns true
   when it went: j is then out of its queue and running on w. On a failed send j is left
   exactly as it was and w is doomed (removed at the end of the loop turn; out of the ready
   lists at once), so the caller tries another worker or queues j. */
static bool dispatch(zf_broker_t *b, wrk_t *w, job_t *j)
{
    assert(w->inflight < w->credits && !w->doomed && j->state == ZF_ST_QUEUED);
    uint32_t attempt = j->attempt + 1;
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_JOB);
    zf_msg_set_u64(&m, ZF_F_ID, j->id);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, attempt);
    zf_msg_set_strn(&m, ZF_F_FN, j->fn->name, strlen(j->fn->name));
    if (j->timeout_ms)
        zf_msg_set_u64(&m, ZF_F_TIMEOUT, j->timeout_ms);
    /* A large payload's buffer is shared (zmq_msg_copy is refcounted): nothing is copied.
       A small one lives in the job, which may be freed before ZeroMQ sends the message, so
       the message gets its own copy of those few bytes. */
    zmq_msg_t payload;
    zmq_msg_init(&payload);
    if (j->big) {
        zmq_msg_copy(&payload, j->big);
    } else if (j->plen) {
        if (zmq_msg_init_size(&payload, j->plen) < 0)
            zfb_oom("a job message");
        memcpy(zmq_msg_data(&payload), j->inline_payload, j->plen);
    }
    if (zf_wire_send_to(b->back, w->rid, w->rid_len, &m, &payload) < 0) {
        zmq_msg_close(&payload);
        doom(b, w, errno == EHOSTUNREACH ? "gone (unroutable)" : "send queue full");
        return false;
    }
    if (j->qpos != ZF_HEAP_NONE)
        dequeue(b, j);
    j->attempt = attempt;
    j->state = ZF_ST_RUNNING;
    j->worker = w;
    zf_journal_start(b->journal, j);
    w->leases[w->inflight++] = (lease_t){j->id, j->attempt, false};
    b->prefetching += w->inflight == 2;
    if (w->inflight == 1) /* an idle worker starts it now; later leases wait their turn */
        run_timer_follow(b, w);
    j->fn->running++;
    b->c.dispatched++;
    zf_hist_observe(&j->fn->qwait, (uint64_t)((uint32_t)zf_now_ms() - j->queued_at) * 1000);
    worker_relist(w);
    return true;
}

/* The best queued job w can run, or NULL. */
static job_t *next_job_for(wrk_t *w)
{
    job_t *best = NULL;
    for (uint32_t i = 0; i < w->nslots; i++) {
        fnq_t *fn = w->slots[i].fn;
        job_t *a = zf_heap_top(&fn->q[ZF_DEV_ANY]);
        job_t *k = zf_heap_top(&fn->q[w->kind]);
        if (a && (!best || job_less(a, best)))
            best = a;
        if (k && (!best || job_less(k, best)))
            best = k;
    }
    return best;
}

static bool serves(const wrk_t *w, const fnq_t *fn)
{
    for (uint32_t i = 0; i < w->nslots; i++)
        if (w->slots[i].fn == fn)
            return true;
    return false;
}

static job_t *job_find(zf_broker_t *b, uint64_t id);

/* w is idle and nothing is queued for it: if another worker holds a job w could run
   behind the one it is running (prefetch), ask for it back so it runs now on w. The
   worker answers RECALLED if the job has not started; place() then gives it to w. One
   recall per idle worker at a time; a lease is recalled at most once. */
static void steal_for(zf_broker_t *b, wrk_t *w)
{
    if (b->prefetching == 0)
        return; /* nobody holds a job behind another: skip the walk over every worker */
    for (wrk_t *v = b->workers; v; v = v->hh.next) {
        if (v == w || v->inflight < 2)
            continue;
        lease_t *l = &v->leases[v->inflight - 1];
        if (l->recalling)
            continue;
        job_t *j = job_find(b, l->id);
        if (!j || j->state != ZF_ST_RUNNING || j->worker != v || j->attempt != l->attempt ||
            (j->device != ZF_DEV_ANY && j->device != w->kind) || !serves(w, j->fn))
            continue;
        zf_msg_t m;
        zf_msg_init(&m, ZF_CMD_RECALL);
        zf_msg_set_u64(&m, ZF_F_ID, l->id);
        zf_msg_set_u64(&m, ZF_F_ATTEMPT, l->attempt);
        if (zf_wire_send_to(b->back, v->rid, v->rid_len, &m, NULL) == 0)
            l->recalling = true;
        return;
    }
}

/* Gives w queued work until its credits are used or nothing fits. */
static void refill(zf_broker_t *b, wrk_t *w)
{
    while (!w->doomed && !w->draining && !w->suspect && w->inflight < w->credits) {
        job_t *j = next_job_for(w);
        if (!j) {
            if (w->inflight == 0)
                steal_for(b, w);
            return;
        }
        if (!dispatch(b, w, j))
            return; /* w is doomed; j stays queued */
    }
}

/* A job that is not due yet waits in the timer heap, in no queue (run_timers places it
   when it comes due). qpos is its position there while it is SCHEDULED. */
static void schedule(zf_broker_t *b, job_t *j)
{
    j->state = ZF_ST_SCHEDULED;
    if (zf_heap_push(&b->scheduled, j) < 0)
        zfb_oom("a scheduled job");
}

/* Places a queued-state job: straight to a free worker, or into its queue; one that is not
   due yet (res->due_at) into the timer heap instead. */
static void place(zf_broker_t *b, job_t *j, bool front)
{
    if (j->deadline_at && j->deadline_at <= zf_now_ms()) {
        /* a requeue's causes come first: the text says why it does not run again */
        zfb_job_note(j, j->attempt ? "deadline passed before it could run again"
                                   : "deadline passed while queued");
        finalize(b, j, ZF_ST_EXPIRED);
        return;
    }
    j->worker = NULL;
    if (j->res && j->res->due_at > zf_now_ms()) {
        schedule(b, j);
        return;
    }
    j->state = ZF_ST_QUEUED;
    j->queued_at = (uint32_t)zf_now_ms(); /* (mod 2^32: dispatch subtracts mod 2^32 too) */
    wrk_t *w;
    while ((w = pick_worker(j->fn, j->device)))
        if (dispatch(b, w, j))
            return; /* (a failed send doomed w, which left the ready lists: try the next) */
    enqueue(b, j, front);
}

/* Keeps the leases in dispatch order: the newest is the likeliest still prefetched. */
static void lease_drop(zf_broker_t *b, wrk_t *w, uint32_t i)
{
    if (w->suspect && w->leases[i].id == w->run_id && w->leases[i].attempt == w->run_attempt)
        w->suspect = false; /* it answered the lease it was suspected for: back to work */
    b->prefetching -= w->inflight == 2;
    memmove(&w->leases[i], &w->leases[i + 1], (w->inflight - i - 1) * sizeof w->leases[0]);
    w->inflight--;
    if (i == 0) /* the worker now runs the next lease, from about now */
        run_timer_follow(b, w);
}

static int lease_find(const wrk_t *w, uint64_t id, uint32_t attempt)
{
    for (uint32_t i = 0; i < w->inflight; i++)
        if (w->leases[i].id == id && w->leases[i].attempt == attempt)
            return (int)i;
    return -1;
}

/* A job a client or worker may name: a forgotten one (forgetting) is gone for them. */
static job_t *job_find(zf_broker_t *b, uint64_t id)
{
    job_t *j;
    HASH_FIND(hh, b->jobs, &id, sizeof id, j);
    return j && !j->forgetting ? j : NULL;
}

/* The running job whose current lease is (id, attempt), held by w; NULL when there is none
   (fenced, finished, or never w's). */
static job_t *current_lease(zf_broker_t *b, wrk_t *w, uint64_t id, uint32_t attempt)
{
    job_t *j = job_find(b, id);
    if (!j || j->state != ZF_ST_RUNNING || j->worker != w || j->attempt != attempt)
        return NULL;
    return j;
}

/* ------------------------------------------------------------------ run timers */

static uint32_t run_grace_ms(const zf_broker_t *b)
{
    return b->cfg.run_grace_ms ? b->cfg.run_grace_ms : b->cfg.heartbeat_ms * b->cfg.liveness;
}

static void run_timer_stop(zf_broker_t *b, wrk_t *w)
{
    if (w->rpos != ZF_HEAP_NONE)
        zf_heap_remove(&b->runs, w->rpos);
}

static void run_timer_set(zf_broker_t *b, wrk_t *w, const lease_t *l, uint8_t stage, int64_t at)
{
    run_timer_stop(b, w);
    w->run_id = l->id;
    w->run_attempt = l->attempt;
    w->run_stage = stage;
    w->run_until = at;
    if (zf_heap_push(&b->runs, w) < 0)
        zfb_oom("a run timer");
}

/* Points the run timer at the lease w runs now (leases[0]); call whenever that may have
   changed. The timer of a lease that stays first runs on. An untimed job may run forever. */
static void run_timer_follow(zf_broker_t *b, wrk_t *w)
{
    if (w->doomed || w->inflight == 0) {
        run_timer_stop(b, w);
        return;
    }
    const lease_t *l = &w->leases[0];
    if (w->rpos != ZF_HEAP_NONE && w->run_id == l->id && w->run_attempt == l->attempt)
        return;
    run_timer_stop(b, w);
    job_t *j = current_lease(b, w, l->id, l->attempt);
    if (!j) /* ended already (cancelled while it waited): the worker owes only an answer */
        run_timer_set(b, w, l, 1, zf_now_ms() + run_grace_ms(b));
    else if (j->timeout_ms)
        run_timer_set(b, w, l, 0, zf_now_ms() + j->timeout_ms + run_grace_ms(b));
}

/* The attempt of a running job ended without a result (worker died, timed out). The job
   runs again unless it has used its attempts. */
static void attempt_failed(zf_broker_t *b, job_t *j, zf_state_t final, const char *cause)
{
    zfb_job_note(j, "attempt %u: %s", zfb_job_attempts_used(j),
                 cause); /* as RESULT counts, not leases */
    j->fn->running--;
    const char *wname = j->worker ? j->worker->info->name : NULL;
    j->worker = NULL;
    /* handler failures that were retried are the retries' budget, not max_attempts' */
    if (zfb_job_attempts_used(j) - (j->res ? j->res->retried : 0) >= j->max_attempts) {
        finalize(b, j, final);
        return;
    }
    b->c.requeued++;
    zf_log_event(ZF_LOG_INFO, "job_requeued",
                 &(zf_log_fields_t){.job = j->id,
                                    .attempt = j->attempt,
                                    .fn = j->fn->name,
                                    .worker = wname,
                                    .reason = cause},
                 "job %llu requeued after attempt %u: %s", (unsigned long long)j->id, j->attempt,
                 cause);
    place(b, j, true);
}

/* ------------------------------------------------------------------ re-attach */

/* The job is no longer held for a re-attach (claimed, cancelled or expired). */
static void reattach_forget(zf_broker_t *b, job_t *j)
{
    zfb_reattach_release(b->reattach, j->id);
    free(j->res->holder);
    j->res->holder = NULL;
}

static uint32_t reattach_window_ms(const zf_broker_t *b)
{
    return b->cfg.reattach_ms == ZF_REATTACH_DEFAULT ? b->cfg.heartbeat_ms * b->cfg.liveness
                                                     : b->cfg.reattach_ms;
}

/* The window closed with the job unclaimed: it runs again, as after a restart without
   re-attach (its attempt counts). */
static void reattach_expired(void *arg, uint64_t id)
{
    zf_broker_t *b = arg;
    job_t *j = job_find(b, id);
    if (!j || j->state != ZF_ST_RUNNING || j->worker || !j->res || !j->res->holder)
        return;
    char cause[200];
    snprintf(cause, sizeof cause, "worker %s did not claim it within %u ms of the broker's restart",
             j->res->holder->name, reattach_window_ms(b));
    reattach_forget(b, j);
    b->c.reattach_expired++;
    attempt_failed(b, j, ZF_ST_LOST, cause);
}

/* A claimed lease that matches the journal: w holds it again, attempt unchanged, and its
   DONE (or the one it kept while the broker was away) is taken as any other. */
static void reattach_lease(zf_broker_t *b, wrk_t *w, job_t *j)
{
    reattach_forget(b, j);
    j->worker = w;
    w->leases[w->inflight++] = (lease_t){j->id, j->attempt, false};
    b->prefetching += w->inflight == 2;
    if (w->inflight == 1)
        run_timer_follow(b, w);
    b->c.reattached++;
}

/* A claim that does not match: the worker is told to drop the lease (WCANCEL: it answers
   as for a cancelled job, and that answer is stale), so a lying or late worker's result
   never counts. */
static void refuse_claim(zf_broker_t *b, wrk_t *w, const zf_claim_t *c)
{
    b->c.claims_refused++;
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_WCANCEL);
    zf_msg_set_u64(&m, ZF_F_ID, c->id);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, c->attempt);
    zf_wire_send_to(b->back, w->rid, w->rid_len, &m, NULL);
}

/* The leases a READY claims, in the order the worker holds them (the one it runs first). */
static void reattach_claims(zf_broker_t *b, wrk_t *w, const zf_msg_t *m)
{
    uint32_t ok = 0;
    zfb_claim_t first = ZFB_CLAIM_OK;
    int64_t now = zf_now_ms();
    for (uint32_t i = 0; i < m->nclaims; i++) {
        const zf_claim_t *c = &m->claims[i];
        job_t *j = job_find(b, c->id);
        zfb_claim_t why = zfb_reattach_check(b->reattach, j, c->attempt, w, now);
        if (why == ZFB_CLAIM_OK) {
            reattach_lease(b, w, j);
            ok++;
            continue;
        }
        if (first == ZFB_CLAIM_OK)
            first = why;
        refuse_claim(b, w, c);
    }
    if (m->nclaims)
        zf_log(ok == m->nclaims ? ZF_LOG_INFO : ZF_LOG_WARN,
               "worker %s claimed %u lease(s): %u re-attached%s%s", w->info->name, m->nclaims, ok,
               ok == m->nclaims ? "" : ", the others refused: ",
               ok == m->nclaims ? "" : zfb_claim_text(first));
}

/* The lease was handed to w but never started: it goes back to the front of its queue
   and the delivery does not count (as a RECALLED one). */
static void unstarted_requeue(zf_broker_t *b, job_t *j)
{
    j->fn->running--;
    j->worker = NULL;
    job_res(j)->attempt_base++;
    zf_journal_attempts(b->journal, j);
    b->c.recalled++;
    place(b, j, true);
}

/* Whether lease i of the dead worker w had started. A worker that batches (issue 17) runs
   a job on its second or later attempt alone, before anything it holds behind it (the
   poison rule, worker/runner.c): when its first lease is such a retry, that one alone was
   running, and the leases behind it did not start. Counting them would let a poison job,
   retried alone, still take its prefetched former batch-mates to `lost` with it. Any other
   death counts every lease, as it always did: a worker's leases may all have run. */
static bool lease_started(const wrk_t *w, uint32_t i)
{
    /* the lease's own number, as the worker saw it (a recalled delivery also counts there) */
    return i == 0 || w->batch <= 1 || w->leases[0].attempt <= 1;
}

/* Removes w now and frees it: only from a handler at the top of the loop (never from
   inside dispatch, which dooms instead). Its current leases fail (attempt_failed): their
   jobs go back to the front of their queues or end. */
static void worker_remove(zf_broker_t *b, wrk_t *w, const char *why)
{
    /* a worker that said goodbye, or one the stopping broker lets go, is not lost */
    bool left = !strcmp(why, "left"), stopping = !strcmp(why, "broker stopping");
    zf_log_event(left || stopping ? ZF_LOG_INFO : ZF_LOG_WARN,
                 left       ? "worker_left"
                 : stopping ? "worker_removed"
                            : "worker_lost",
                 &(zf_log_fields_t){.worker = w->info->name,
                                    .device = w->info->devname,
                                    .reason = why,
                                    .count = w->inflight},
                 "worker %s (%s) removed: %s; %u job(s) in hand", w->info->name, w->info->devname,
                 why, w->inflight);
    w->draining = true;
    worker_relist(w);
    run_timer_stop(b, w);
    HASH_DEL(b->workers, w);
    DL_DELETE(b->alive, w);
    char cause[160];
    snprintf(cause, sizeof cause, "worker %s lost: %s", w->info->name, why);
    for (uint32_t i = 0; i < w->inflight; i++) {
        job_t *j = current_lease(b, w, w->leases[i].id, w->leases[i].attempt);
        if (j && lease_started(w, i))
            attempt_failed(b, j, ZF_ST_LOST, cause);
        else if (j)
            unstarted_requeue(b, j);
    }
    for (uint32_t i = 0; i < w->nslots; i++)
        w->slots[i].fn->nworkers--;
    b->prefetching -= w->inflight >= 2;
    for (wrk_t **p = &b->doomed; w->doomed && *p; p = &(*p)->doomed_next)
        if (*p == w) { /* removed for another reason before its turn came */
            *p = w->doomed_next;
            break;
        }
    free(w->slots);
    zfb_winfo_release(&w->info);
    free(w);
}

/* The end of the loop turn: removes the workers dispatch doomed. Their jobs are placed
   again, which may doom others: the loop runs until none is left. */
static void reap_workers(zf_broker_t *b)
{
    while (b->doomed) {
        wrk_t *w = b->doomed;
        b->doomed = w->doomed_next;
        w->doomed = false; /* out of the list already */
        worker_remove(b, w, w->doom_why);
    }
}

/* ------------------------------------------------------------------ results */

static void fill_result(zf_msg_t *m, job_t *j, uint64_t tag)
{
    zf_msg_init(m, ZF_CMD_RESULT);
    zf_msg_set_u64(m, ZF_F_ID, j->id);
    zf_msg_set_u64(m, ZF_F_TAG, tag);
    zf_msg_set_u64(m, ZF_F_STATUS, j->state);
    zf_msg_set_u64(m, ZF_F_ATTEMPT, zfb_job_attempts_used(j));
    zf_msg_set_str(m, ZF_F_FN, j->fn->name);
    if (j->tags)
        zf_msg_set_str(m, ZF_F_TAGS, j->tags);
    if (j->pipe) {
        zf_msg_set_u64(m, ZF_F_STEP, j->pipe->cur + 1u);
        zf_msg_set_u64(m, ZF_F_STEPS, j->pipe->n);
    }
    if (!j->res)
        return;
    zf_msg_set_u64(m, ZF_F_DURATION, j->res->duration_us);
    if (j->res->error)
        zf_msg_set_str(m, ZF_F_TEXT, j->res->error);
    if (j->res->ran_on) {
        zf_msg_set_str(m, ZF_F_WORKER, j->res->ran_on->name);
        zf_msg_set_str(m, ZF_F_DEVNAME, j->res->ran_on->devname);
    }
}

/* ------------------------------------------------------------------ unread bytes per client */

/* Ids of FORGET jobs whose pushed RESULT ZeroMQ has written to the connection's socket (or
   dropped, the connection being gone): filled by sent_free in ZeroMQ's I/O thread, drained
   by forget_due, which frees their outputs then. Their FORGET records still wait
   FORGET_DELAY_BEATS: written out is not yet read, and a client that reconnects loses what
   its old connection had not read. */
struct receipts {
    pthread_mutex_t mu;
    uint64_t *ids;
    size_t n, cap;
};

/* An output sent to a client: the message ZeroMQ was given points into `ref`, a shared
   reference to the stored output, so nothing is copied and an eviction from the store
   cannot free bytes still queued. ZeroMQ's I/O thread calls sent_free once it has written
   the message out (or dropped it): only that thread and this struct touch `flight` then. */
typedef struct {
    zmq_msg_t ref;
    flight_t *flight;
    size_t n;
    struct receipts *receipts; /* a FORGET job's push: tell forget_due once it is written */
    uint64_t id;
} sent_t;

static void sent_free(void *data, void *hint)
{
    (void)data;
    sent_t *s = hint;
    ZF_TSAN_ACQUIRE(s); /* filled by the loop's thread before ZeroMQ had it */
    flight_t *f = s->flight;
    uint64_t left = atomic_fetch_sub(&f->bytes, s->n) - s->n;
    if (left <= f->resume_at && atomic_exchange(&f->want_wake, false)) {
        uint64_t one = 1; /* a held-back result can go now: wake the loop */
        if (write(f->wake_fd, &one, sizeof one) < 0) {
            /* a full eventfd is readable already */
        }
    }
    if (s->receipts) {
        struct receipts *r = s->receipts;
        pthread_mutex_lock(&r->mu);
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 64;
            uint64_t *ids = realloc(r->ids, cap * sizeof *ids);
            if (ids) {
                r->ids = ids;
                r->cap = cap;
            }
        }
        if (r->n < r->cap) /* else (no memory) the output is freed with the job, later */
            r->ids[r->n++] = s->id;
        pthread_mutex_unlock(&r->mu);
    }
    zmq_msg_close(&s->ref);
    flight_release(f);
    free(s);
}

/* Sends the result to one client, its output frame shared, not copied, and counted in the
   client's unread bytes until ZeroMQ has written it (small outputs only count against
   the socket's message bound). */
static bool send_result(zf_broker_t *b, job_t *j, client_t *c, uint64_t tag, bool receipt)
{
    zf_msg_t m;
    fill_result(&m, j, tag);
    if (j->ack_in_result && c == j->waiter && tag == j->tag) { /* (lazy acks) */
        zf_msg_set_u64(&m, ZF_F_FLAGS, ZF_FLAG_LAZY_ACK);
        j->ack_in_result = false;
    }
    zmq_msg_t out;
    zmq_msg_init(&out);
    size_t n = j->res ? zmq_msg_size(&j->res->output) : 0;
    sent_t *s = n >= ZF_TRACKED_OUTPUT_MIN ? malloc(sizeof *s) : NULL;
    if (s) {
        zmq_msg_init(&s->ref);
        zmq_msg_copy(&s->ref, &j->res->output);
        s->flight = c->flight;
        s->n = n;
        s->receipts = receipt ? b->receipts : NULL;
        s->id = j->id;
        atomic_fetch_add(&c->flight->refs, 1);
        atomic_fetch_add(&c->flight->bytes, n);
        ZF_TSAN_RELEASE(s);
        zmq_msg_init_data(&out, zmq_msg_data(&s->ref), n, sent_free, s);
    } else if (j->res) {
        zmq_msg_copy(&out, &j->res->output);
    }
    if (zf_wire_send_to(b->front, c->rid, c->rid_len, &m, &out) < 0) {
        zmq_msg_close(&out); /* (runs sent_free: the bytes are not unread after all) */
        b->c.undeliverable++;
        return false;
    }
    return true;
}

/* Holds a result back for c (see deliver). Returns false when even that is impossible
   (out of memory): the result stays in the store for a GET. */
static bool defer_result(zf_broker_t *b, client_t *c, const job_t *j, uint64_t tag, bool forget)
{
    if (c->ndeferred >= ZF_DEFERRED_MAX) {
        b->c.undeliverable++; /* a client that asks and never reads: the result stays kept */
        return false;
    }
    if (c->dhead + c->ndeferred == c->dcap) {
        if (c->dhead > 0) { /* slide the live part to the front before growing */
            memmove(c->deferred, c->deferred + c->dhead, c->ndeferred * sizeof *c->deferred);
            c->dhead = 0;
        }
        if (c->ndeferred == c->dcap) {
            uint32_t cap = c->dcap ? c->dcap * 2 : 16;
            deferred_t *d = realloc(c->deferred, cap * sizeof *d);
            if (!d)
                return false;
            c->deferred = d;
            c->dcap = cap;
        }
    }
    c->deferred[c->dhead + c->ndeferred++] = (deferred_t){j->id, tag, forget};
    if (c->ndeferred == 1)
        DL_APPEND2(b->slow, c, slow_prev, slow_next);
    b->c.results_held++;
    return true; /* resume_client, at the end of this turn, arms the wake-up */
}

/* Would another `n` bytes pass the bound on what waits unread for c? One result always
   fits when nothing else is queued, so a result larger than the bound still goes. */
static bool over_buffer(const zf_broker_t *b, client_t *c, size_t n)
{
    uint64_t unread = atomic_load(&c->flight->bytes);
    return c->ndeferred > 0 || (unread > 0 && unread + n > b->cfg.client_buffer_bytes);
}

/* Whether j's result must be held back for c (see deliver). */
static bool must_defer(const zf_broker_t *b, const job_t *j, client_t *c)
{
    size_t n = j->res ? zmq_msg_size(&j->res->output) : 0;
    return n >= ZF_TRACKED_OUTPUT_MIN && over_buffer(b, c, n);
}

/* Sends j's result to c now, or holds it back while c has too many bytes unread (a client
   that never reads must not make the broker hold more than the bound for it: past that,
   results stay in the store only). Returns true when it was sent. */
static bool deliver(zf_broker_t *b, job_t *j, client_t *c, uint64_t tag, bool forget)
{
    if (must_defer(b, j, c)) {
        defer_result(b, c, j, tag, forget);
        return false;
    }
    return send_result(b, j, c, tag, forget);
}

static void forget_later(zf_broker_t *b, job_t *j);
static bool is_dead_letter(const job_t *j);

/* Sends what was held back for c, oldest first, while it fits under the bound; when the
   next does not fit, asks ZeroMQ's I/O thread to wake the loop once enough is written
   (flight_t.resume_at). A result evicted or retried meanwhile is skipped: a GET then
   answers as for any evicted result. */
static void resume_client(zf_broker_t *b, client_t *c)
{
    flight_t *f = c->flight;
    while (c->ndeferred) {
        deferred_t d = c->deferred[c->dhead];
        job_t *j; /* a forgetting job too: its output stays until forget_due frees it */
        HASH_FIND(hh, b->jobs, &d.id, sizeof d.id, j);
        bool gone = !j || !zf_state_is_terminal(j->state) || j->result_pending || j->released;
        if (!gone) {
            size_t n = j->res ? zmq_msg_size(&j->res->output) : 0;
            uint64_t unread = atomic_load(&f->bytes);
            if (unread > 0 && unread + n > b->cfg.client_buffer_bytes) {
                atomic_store(&f->resume_at,
                             n >= b->cfg.client_buffer_bytes ? 0 : b->cfg.client_buffer_bytes - n);
                atomic_store(&f->want_wake, true);
                /* the I/O thread may have written it all between the load and the store,
                   and seen no wish to be woken: look again */
                if (atomic_load(&f->bytes) <= atomic_load(&f->resume_at))
                    continue;
                return;
            }
        }
        c->dhead++;
        c->ndeferred--;
        /* (d.forget from the submitter's push; a retry since cleared j->forget) */
        if (!gone && send_result(b, j, c, d.tag, d.forget) && d.forget && j->forget &&
            !j->forgetting && !is_dead_letter(j))
            forget_later(b, j);
    }
    c->dhead = 0;
    atomic_store(&f->want_wake, false);
    DL_DELETE2(b->slow, c, slow_prev, slow_next);
}

static void resume_slow_clients(zf_broker_t *b)
{
    for (client_t *c = b->slow, *next; c; c = next) {
        next = c->slow_next;
        resume_client(b, c);
    }
}

/* ------------------------------------------------------------------ result store */

/* Lost and timed-out jobs are dead letters: kept, with their payload, for a retry. */
static bool is_dead_letter(const job_t *j)
{
    return j->state == ZF_ST_LOST || j->state == ZF_ST_TIMED_OUT;
}

/* Dead letters and failed jobs keep their payload: RETRY may queue them again. */
static bool keeps_payload(const job_t *j)
{
    return is_dead_letter(j) || j->state == ZF_ST_FAILED;
}

/* The bytes a kept job holds: its output, and a kept payload too. It depends only
   on what stays fixed while the job is kept, so adding and subtracting it always agree. */
static uint64_t stored_bytes(const job_t *j)
{
    uint64_t n = j->res ? zmq_msg_size((zmq_msg_t *)&j->res->output) : 0;
    if (keeps_payload(j))
        n += j->plen;
    return n;
}

/* Keeps a terminal job: in the dead-letter list or the result store, newest last. */
static void store_keep(zf_broker_t *b, job_t *j)
{
    b->result_bytes += stored_bytes(j);
    if (is_dead_letter(j)) {
        DL_APPEND(b->dead, j);
        b->ndead++;
    } else {
        DL_APPEND(b->done, j);
        b->ndone++;
    }
}

/* Takes a kept job out of its list; the caller frees or requeues it. */
static void store_drop(zf_broker_t *b, job_t *j)
{
    uint64_t n = stored_bytes(j);
    assert(b->result_bytes >= n);
    b->result_bytes -= n;
    if (is_dead_letter(j)) {
        DL_DELETE(b->dead, j);
        b->ndead--;
    } else {
        DL_DELETE(b->done, j);
        b->ndone--;
    }
}

/* Deletes a kept job for good; GET/WAIT answer `unknown job` from now on. */
static void store_discard(zf_broker_t *b, job_t *j)
{
    store_drop(b, j);
    zf_journal_forget(b->journal, j->id);
    job_free(b, j);
}

/* A FORGET job's result was pushed: it leaves the store and clients no longer see it, but
   its FORGET record waits FORGET_DELAY_BEATS heartbeats (forget_due). ZeroMQ accepting the
   RESULT does not mean it has left the process: it may sit in the connection's queue while
   the client reads slowly, and a kill -9 then loses it. Until the record is written the
   journal (and a compaction, which walks b->jobs) keeps the FINISH with its output, so a
   restart brings the result back for GET/WAIT. What this holds is bounded like the store:
   at most max_results jobs and result_store_bytes of output, or the oldest go early. */
static void forget_later(zf_broker_t *b, job_t *j)
{
    store_drop(b, j);
    j->forgetting = true;
    j->seq = zf_now_ms(); /* when it was pushed (seq orders only queued jobs) */
    DL_APPEND(b->forgetting, j);
    b->nforgetting++;
    b->forgetting_bytes += stored_bytes(j);
    b->c.forgotten++;
}

/* Writes a forgotten job's FORGET record and frees it. */
static void forget_now(zf_broker_t *b, job_t *j)
{
    DL_DELETE(b->forgetting, j);
    b->nforgetting--;
    b->forgetting_bytes -= stored_bytes(j);
    zf_journal_forget(b->journal, j->id);
    job_free(b, j);
}

/* Frees the outputs of the forgetting jobs whose RESULT ZeroMQ has written out: the client
   has it (or its connection is gone), so memory need not hold it for the FORGET delay. The
   journal still holds the FINISH with the output until the FORGET record, so a crash in
   between brings it back; a compaction meanwhile leaves such a job out (`released`). */
static void release_written(zf_broker_t *b)
{
    struct receipts *r = b->receipts;
    uint64_t *ids = NULL;
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    if (r->n) {
        ids = r->ids;
        n = r->n;
        r->ids = NULL;
        r->n = r->cap = 0;
    }
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < n; i++) {
        job_t *j;
        HASH_FIND(hh, b->jobs, &ids[i], sizeof ids[i], j);
        if (!j || !j->forgetting || j->released || !j->res)
            continue; /* (a failed push: the job was kept as usual) */
        b->forgetting_bytes -= stored_bytes(j);
        zmq_msg_close(&j->res->output);
        zmq_msg_init(&j->res->output);
        j->released = true;
    }
    free(ids);
}

/* Writes the FORGET records that are due (or over the bounds) and frees their jobs. */
static void forget_due(zf_broker_t *b, int64_t now)
{
    release_written(b);
    int64_t delay = (int64_t)b->cfg.heartbeat_ms * FORGET_DELAY_BEATS;
    job_t *j;
    while ((j = b->forgetting) && (j->seq + delay <= now || b->nforgetting > b->cfg.max_results ||
                                   b->forgetting_bytes > b->cfg.result_store_bytes))
        forget_now(b, j);
}

/* A kept job may go once its result has been pushed and its acceptance sent. */
static bool evictable(const job_t *j)
{
    return j && !j->result_pending && j->acked;
}

/* The older of the two list heads that may go, or NULL. */
static job_t *oldest_evictable(zf_broker_t *b)
{
    job_t *d = evictable(b->done) ? b->done : NULL;
    job_t *x = evictable(b->dead) ? b->dead : NULL;
    if (d && x)
        return d->finished_ms <= x->finished_ms ? d : x;
    return d ? d : x;
}

/* Applies the result store's bounds, oldest first: TTL and max_results to the results,
   max_dead to the dead letters, and result_store_bytes to both together (a byte bound that
   left dead letters out could be filled by them, and then no result would be kept). */
static void evict_results(zf_broker_t *b, int64_t now)
{
    while (evictable(b->done) &&
           (b->ndone > b->cfg.max_results || b->done->finished_ms + b->cfg.result_ttl_ms <= now))
        store_discard(b, b->done);
    while (evictable(b->dead) && b->ndead > b->cfg.max_dead)
        store_discard(b, b->dead);
    job_t *j;
    while (b->result_bytes > b->cfg.result_store_bytes && (j = oldest_evictable(b)))
        store_discard(b, j);
}

/* Ends the job in a terminal state: journal, push the result to every waiter, keep it in the
   result store (or the dead-letter list). The payload is no longer needed. */
static void finalize(zf_broker_t *b, job_t *j, zf_state_t st)
{
    assert(zf_state_is_terminal(st) && !zf_state_is_terminal(j->state));
    if (j->state == ZF_ST_QUEUED && j->qpos != ZF_HEAP_NONE)
        dequeue(b, j);
    if (j->state == ZF_ST_SCHEDULED && j->qpos != ZF_HEAP_NONE)
        zf_heap_remove(&b->scheduled, j->qpos);
    if (j->tpos != ZF_HEAP_NONE)
        zf_heap_remove(&b->deadlines, j->tpos);
    uncount_unfinished(b, j); /* before the payload goes, and while the waiter is there */
    j->state = (uint8_t)st;
    j->worker = NULL;
    j->finished_ms = zf_now_ms();
    b->c.finished[st]++;
    j->fn->finished[st]++;
    if (st == ZF_ST_SUCCEEDED)
        j->fn->done++;
    else
        j->fn->failed++;
    zf_journal_finish(b->journal, j);
    bool dead = is_dead_letter(j);
    if (!keeps_payload(j)) /* dead letters and failed jobs keep theirs for a retry */
        zfb_job_drop_payload(j);
    /* pushed after the turn's journal commit, so no client sees a result that a crash
       could take back (see flush_turn) */
    j->result_pending = true;
    j->send_seq = zf_journal_seq(b->journal);
    *b->send_tail = j;
    b->send_tail = &j->send_next;
    store_keep(b, j);
    if (dead)
        zf_log_event(ZF_LOG_WARN, "job_dead_lettered",
                     &(zf_log_fields_t){.job = j->id,
                                        .attempt = j->attempt,
                                        .fn = j->fn->name,
                                        .state = zf_state_name(st)},
                     "job %llu %s after %u attempt(s): %s", (unsigned long long)j->id,
                     zf_state_name(st), j->attempt, j->res && j->res->error ? j->res->error : "");
}

/* ------------------------------------------------------------------ replies to clients */

static void reply_error(zf_broker_t *b, zmq_msg_t *rid, uint8_t cmd, uint64_t tag, int code,
                        const char *text)
{
    zf_msg_t m;
    zf_msg_init(&m, cmd);
    zf_msg_set_u64(&m, ZF_F_TAG, tag);
    zf_msg_set_u64(&m, ZF_F_CODE, (uint64_t)code);
    zf_msg_set_str(&m, ZF_F_TEXT, text);
    zmq_msg_t empty;
    zmq_msg_init(&empty);
    if (zf_wire_send(b->front, rid, &m, cmd == ZF_CMD_REPLY ? &empty : NULL) < 0)
        b->c.undeliverable++;
    zmq_msg_close(&empty);
}

static void reject(zf_broker_t *b, zmq_msg_t *rid, uint64_t tag, int code, const char *text)
{
    b->c.rejected[code]++;
    reply_error(b, rid, ZF_CMD_REJECTED, tag, code, text);
}

static void send_status(zf_broker_t *b, zmq_msg_t *rid, job_t *j, uint64_t tag)
{
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_STATUS);
    zf_msg_set_u64(&m, ZF_F_TAG, tag);
    zf_msg_set_u64(&m, ZF_F_ID, j->id);
    zf_msg_set_u64(&m, ZF_F_STATUS, j->result_pending ? ZF_ST_RUNNING : j->state);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, zfb_job_attempts_used(j));
    zf_msg_set_str(&m, ZF_F_FN, j->fn->name);
    if (j->tags)
        zf_msg_set_str(&m, ZF_F_TAGS, j->tags);
    if (j->pipe) {
        zf_msg_set_u64(&m, ZF_F_STEP, j->pipe->cur + 1u);
        zf_msg_set_u64(&m, ZF_F_STEPS, j->pipe->n);
    }
    if (j->res) {
        zf_msg_set_progress(&m, j->res->progress);
        if (j->res->progress_text)
            zf_msg_set_str(&m, ZF_F_TEXT, j->res->progress_text);
        else if (j->res->error && (j->state == ZF_ST_SCHEDULED || j->res->retried))
            zf_msg_set_str(&m, ZF_F_TEXT, j->res->error); /* the causes so far */
        if (j->state == ZF_ST_SCHEDULED)                  /* when it is due, as wall-clock ms */
            zf_msg_set_u64(&m, ZF_F_NOT_BEFORE,
                           (uint64_t)(zf_wall_ms() + (j->res->due_at - zf_now_ms())));
    }
    if (j->worker) {
        zf_msg_set_str(&m, ZF_F_WORKER, j->worker->info->name);
        zf_msg_set_str(&m, ZF_F_DEVNAME, j->worker->info->devname);
    }
    if (zf_wire_send(b->front, rid, &m, NULL) < 0)
        b->c.undeliverable++;
}

static void push_results(zf_broker_t *b, job_t *sends);

/* "journal unavailable: no space left on device": the text of every EJOURNAL answer. */
static const char *journal_text(zf_broker_t *b, char *buf, size_t len)
{
    snprintf(buf, len, "%s: %s", zf_error_name(ZF_EJOURNAL),
             strerror(zf_journal_error(b->journal)));
    return buf;
}

/* Takes j out of the list of results waiting for the commit. */
static void send_unlink(zf_broker_t *b, job_t *j)
{
    for (job_t **p = &b->send_head; *p; p = &(*p)->send_next)
        if (*p == j) {
            *p = j->send_next;
            if (b->send_tail == &j->send_next)
                b->send_tail = p;
            j->send_next = NULL;
            return;
        }
}

/* The commit that held this turn's ACCEPT records failed: those jobs were never
   acknowledged, never placed (with a journal a job is placed only once it is durable), and
   the journal dropped their records, so each is rejected with EJOURNAL and freed. */
static void reject_unjournaled(zf_broker_t *b)
{
    char text[128];
    journal_text(b, text, sizeof text);
    for (job_t *j = b->ack_head, *next; j; j = next) {
        next = j->ack_next;
        if (j->waiter) {
            zf_msg_t m;
            zf_msg_init(&m, ZF_CMD_REJECTED);
            zf_msg_set_u64(&m, ZF_F_TAG, j->tag);
            zf_msg_set_u64(&m, ZF_F_CODE, ZF_EJOURNAL);
            zf_msg_set_str(&m, ZF_F_TEXT, text);
            if (zf_wire_send_to(b->front, j->waiter->rid, j->waiter->rid_len, &m, NULL) < 0)
                b->c.undeliverable++;
        }
        b->c.rejected[ZF_EJOURNAL]++;
        b->c.accepted--;
        j->fn->accepted--;
        if (zf_state_is_terminal(j->state)) { /* cancelled or expired in the same turn */
            b->c.finished[j->state]--;
            j->fn->finished[j->state]--;
            if (j->state == ZF_ST_SUCCEEDED)
                j->fn->done--;
            else
                j->fn->failed--;
            j->result_pending = false;
            send_unlink(b, j);
            store_drop(b, j);
        } else {
            uncount_unfinished(b, j);
        }
        job_free(b, j);
    }
    b->ack_head = NULL;
    b->ack_tail = &b->ack_head;
    b->unplaced = 0;
}

/* Acceptances and results wait for the journal's group commit; they go out once per loop
   turn. The commit runs every turn, acceptances or not, so that START and FINISH records
   reach the file too (it costs one comparison when the turn appended nothing). With a
   journal, accepted jobs are placed here, after the commit that holds their ACCEPT: a job
   that a failed commit could take back is never dispatched. */
static void after_commit(zf_broker_t *b, int64_t now);
static void release_durable(zf_broker_t *b, uint64_t durable);

/* ------------------------------------------------------------------ lazy acks

   A SUBMIT with LAZY_ACK (the C client's asynchronous submits) lets the ACCEPTED of a job
   that went straight to a worker wait up to ZF_LAZY_ACK_MS past the point where it would
   go (PROTOCOL.md §6.2): a job that ends sooner gets none, its RESULT answers the SUBMIT
   (flagged so), and the client's threads wake once instead of twice, which is most of
   what a short round trip costs beyond ZeroMQ's own (bench/README.md). Sending the
   ACCEPTED right before the RESULT would not do: the broker's I/O thread, on the other
   core, writes the first message out before the loop has queued the second. The owed
   acceptances wait in a ring of ids in the order they came due (so their due times rise
   along it); one whose ACCEPTED already went (or whose RESULT answered), or whose job is
   gone, is skipped when its turn comes, so the ring never points at a freed job. */
typedef struct lazy_ack {
    uint64_t id;
    int64_t due_ms;
} lazy_ack_t;

static void send_accepted(zf_broker_t *b, job_t *j)
{
    j->ack_owed = false;
    if (!j->waiter)
        return;
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_ACCEPTED);
    zf_msg_set_u64(&m, ZF_F_TAG, j->tag);
    zf_msg_set_u64(&m, ZF_F_ID, j->id);
    if (zf_wire_send_to(b->front, j->waiter->rid, j->waiter->rid_len, &m, NULL) < 0)
        b->c.undeliverable++;
}

/* Puts j's ACCEPTED in the ring. Returns 0, or -1 without memory (then send it now). */
static int owe_ack(zf_broker_t *b, job_t *j)
{
    if (b->lazy_len == b->lazy_cap) {
        size_t cap = b->lazy_cap ? 2 * b->lazy_cap : 64;
        lazy_ack_t *p = malloc(cap * sizeof *p);
        if (!p)
            return -1;
        for (size_t i = 0; i < b->lazy_len; i++) /* unrolled from lazy_first */
            p[i] = b->lazy[(b->lazy_first + i) % b->lazy_cap];
        free(b->lazy);
        b->lazy = p;
        b->lazy_cap = cap;
        b->lazy_first = 0;
    }
    b->lazy[(b->lazy_first + b->lazy_len) % b->lazy_cap] =
        (lazy_ack_t){j->id, zf_now_ms() + b->lazy_ms};
    b->lazy_len++;
    j->ack_owed = true;
    return 0;
}

/* j ends with its ACCEPTED owed: its RESULT, pushed now, answers the SUBMIT instead (with
   the LAZY_ACK flag, from which the C client makes the ACCEPTED event it owes its caller,
   so that the client reads one message for both). A result held back for a slow client,
   or not pushed at all, has its ACCEPTED sent now, on its own. */
static void ack_with_result(zf_broker_t *b, job_t *j)
{
    if (!j->waiter || j->no_push || must_defer(b, j, j->waiter)) {
        send_accepted(b, j);
        return;
    }
    j->ack_owed = false;
    j->ack_in_result = true; /* send_result sets the flag and clears this */
    b->c.acks_with_result++;
}

/* Sends the owed acceptances due by now. */
static void send_due_acks(zf_broker_t *b, int64_t now)
{
    while (b->lazy_len && b->lazy[b->lazy_first].due_ms <= now) {
        uint64_t id = b->lazy[b->lazy_first].id;
        b->lazy_first = (b->lazy_first + 1) % b->lazy_cap;
        b->lazy_len--;
        job_t *j = job_find(b, id);
        if (j && j->ack_owed)
            send_accepted(b, j);
    }
}

static void flush_turn(zf_broker_t *b)
{
    int64_t now = zf_now_ms();
    zf_journal_recover(b->journal, now, b->jobs); /* no-op unless the journal is down */
    /* under `always` the sync runs in the journal's flusher thread: what this turn wrote
       goes out in a later turn, when the flusher says it is durable (it wakes the loop) */
    if (zf_journal_commit_async(b->journal) < 0) {
        /* logged by the journal; what the last good sync covered still goes out, the
           later acceptances are refused, the later results wait for a commit (the
           recovering snapshot) */
        release_durable(b, zf_journal_durable(b->journal));
        reject_unjournaled(b);
        return;
    }
    after_commit(b, now);
    /* the jobs it placed are on their way to workers: their START/LEASE records go to the
       file now, not at the next turn's commit, where the turn's requests come first (a GET
       answered `running` from memory before the record was written, and a broker killed
       right then did not know the lease: after its restart the worker's claim was refused
       and the job ran again) */
    zf_journal_write(b->journal);
}

/* At the loop's end: waits for the flusher, so that every acceptance the journal holds is
   answered before the broker stops. */
static void flush_drain(zf_broker_t *b)
{
    flush_turn(b);
    if (zf_journal_commit(b->journal) == 0)
        after_commit(b, zf_now_ms());
}

/* What the commits that are durable let go out (see after_commit). */
static void after_commit(zf_broker_t *b, int64_t now)
{
    release_durable(b, zf_journal_durable(b->journal));
    resume_slow_clients(b);
    forget_due(b, now);
    /* every turn, not only on the tick: the byte bound must hold while results stream in */
    evict_results(b, now);
}

/* The acceptances and placements of the jobs whose ACCEPT records are in commits up to
   `durable`, and the results whose FINISH records are. Both lists are in commit order. A
   RETRY's own commit waits for its sync, which holds every record so far: those jobs are
   durable then, and must not be refused by a later commit that fails. */
static void release_durable(zf_broker_t *b, uint64_t durable)
{
    /* the results whose FINISH records are durable; results of jobs placed below (a
       deadline already passed) wait for the next commit */
    job_t *sends = NULL, **stail = &sends;
    while (b->send_head && b->send_head->send_seq <= durable) {
        job_t *j = b->send_head;
        b->send_head = j->send_next;
        *stail = j;
        stail = &j->send_next;
    }
    *stail = NULL;
    if (!b->send_head)
        b->send_tail = &b->send_head;
    while (b->ack_head && b->ack_head->ack_seq <= durable) {
        job_t *j = b->ack_head;
        b->ack_head = j->ack_next;
        j->ack_next = NULL;
        j->acked = true;
        /* no waiter: a NO_PUSH submit with the client gone, nothing to tell; NO_ACK: the
           RESULT will answer the SUBMIT, and the submitter's threads wake once, not twice;
           LAZY_ACK: the same for a job that went straight to a worker, when it ends within
           ZF_LAZY_ACK_MS (lazy acks below); a queued one waits longer than that anyway */
        bool ack = j->waiter && !j->no_ack, lazy = ack && j->lazy_ack;
        if (ack && !lazy)
            send_accepted(b, j);
        if (b->journal) {
            b->unplaced--;
            if (!zf_state_is_terminal(j->state))
                place(b, j, false);
        }
        if (lazy && !(j->state == ZF_ST_RUNNING && owe_ack(b, j) == 0))
            send_accepted(b, j);
    }
    if (!b->ack_head)
        b->ack_tail = &b->ack_head;
    push_results(b, sends); /* after the acceptances: a client hears ACCEPTED first */
}

/* Pushes the results in the list `sends` (linked through send_next) to their waiters. */
static void push_results(zf_broker_t *b, job_t *sends)
{
    for (job_t *j = sends, *next; j; j = next) {
        next = j->send_next;
        j->send_next = NULL;
        j->result_pending = false;
        if (j->ack_owed) /* (lazy acks) */
            ack_with_result(b, j);
        bool pushed = false, others = true;
        if (j->waiter && !j->no_push)
            pushed = deliver(b, j, j->waiter, j->tag, j->forget);
        for (uint32_t i = 0; j->res && i < j->res->nmore; i++)
            others &= deliver(b, j, j->res->more[i], j->tag, false);
        zfb_job_clear_waiters(j, release_client, b);
        /* FORGET: the submitter has its result (ZeroMQ took it for a connected peer), so the
           store need not keep it. A failed push leaves it for GET under the usual bounds; a
           dead letter stays for inspection and retry. j->waiter was the submitter: a job
           that had a RETRY, or came back from the journal, has no FORGET. */
        if (j->forget && pushed && others && !is_dead_letter(j)) /* (another waiter's copy
            held back keeps it in the store: FORGET only spares the store a copy) */
            forget_later(b, j);
    }
}

/* ------------------------------------------------------------------ client commands */

/* The bound a new job of plen payload bytes from c would pass, as a rejection text, or
   NULL. Besides the broker-wide and per-function bounds, one connection may hold only
   part of the queue, so that a client that floods it leaves room for the others. */
/* With CURVE the per-client bounds hold per key too: a key holder that opens many
   connections still gets one client's share, so one tenant cannot fill the queue. */
static const char *over_key_bound(const zf_broker_t *b, size_t plen, char *text, size_t cap)
{
    const zfb_owner_t *o = b->caller ? zfb_owners_get(b->owners, b->caller) : NULL;
    if (o && o->unfinished >= b->cfg.max_queued_per_client)
        snprintf(text, cap,
                 "queue full for this key: %llu unfinished jobs over all its connections "
                 "(limit per client)",
                 (unsigned long long)o->unfinished);
    else if (o && o->unfinished_bytes + plen > b->cfg.max_queued_bytes_per_client)
        snprintf(text, cap,
                 "queue full for this key: its unfinished jobs would hold more than %llu "
                 "payload bytes (limit per client)",
                 (unsigned long long)b->cfg.max_queued_bytes_per_client);
    else
        return NULL;
    return text;
}

static const char *over_queue_bound(const zf_broker_t *b, const client_t *c, const fnq_t *fn,
                                    size_t plen, char *text, size_t cap)
{
    const zf_broker_config_t *k = &b->cfg;
    if (fn->queued >= k->max_queued_per_fn)
        return "queue full (function limit)";
    if (b->payload_bytes + plen > k->max_queued_bytes)
        snprintf(text, cap,
                 "queue full: unfinished jobs would hold more than %llu payload "
                 "bytes (broker limit)",
                 (unsigned long long)k->max_queued_bytes);
    else if (c->queued_jobs >= k->max_queued_per_client)
        snprintf(text, cap,
                 "queue full for this connection: %llu unfinished jobs (limit per "
                 "client)",
                 (unsigned long long)c->queued_jobs);
    else if (c->queued_bytes + plen > k->max_queued_bytes_per_client)
        snprintf(text, cap,
                 "queue full for this connection: its unfinished jobs would hold "
                 "more than %llu payload bytes (limit per client)",
                 (unsigned long long)k->max_queued_bytes_per_client);
    else
        return over_key_bound(b, plen, text, cap);
    return text;
}

/* Why a SUBMIT's retry and delay fields are out of range, or NULL. */
static const char *bad_schedule(const zf_msg_t *m)
{
    if (m->retries > ZF_RETRIES_MAX)
        return "retries must be at most 20";
    if (m->backoff_ms > ZF_BACKOFF_CAP_MS)
        return "retry_backoff_ms must be at most 60000";
    if (m->delay_ms > ZF_DELAY_MAX_MS)
        return "delay_ms must be at most 30 days (2592000000 ms)";
    if (m->not_before && m->not_before > (uint64_t)zf_wall_ms() + ZF_DELAY_MAX_MS)
        return "not_before must be at most 30 days ahead (wall-clock ms since the epoch)";
    return NULL;
}

/* The submitted retry policy and start time (a delay, or a wall-clock not_before), kept in
   the result record of the jobs that have one: others stay small. */
static void set_schedule(job_t *j, const zf_msg_t *m, int64_t accepted_ms)
{
    int64_t due = m->delay_ms ? accepted_ms + (int64_t)m->delay_ms : 0;
    if (m->not_before) {
        int64_t nb = accepted_ms + ((int64_t)m->not_before - zf_wall_ms());
        if (nb > due)
            due = nb;
    }
    if (!m->retries && !m->backoff_ms && due <= accepted_ms)
        return;
    result_t *r = job_res(j);
    r->retries = (uint8_t)m->retries;
    r->backoff_ms = m->backoff_ms;
    r->due_at = due > accepted_ms ? due : 0;
}

/* The wait before retry number n (1-based): min(cap, base * 2^(n-1)) with equal jitter,
   uniform in [d/2, d], so a retry never comes sooner than half its backoff (and a burst of
   failures does not retry in step). */
static uint32_t backoff_delay(zf_broker_t *b, const result_t *r)
{
    uint64_t d = r->backoff_ms ? r->backoff_ms : ZF_BACKOFF_DEFAULT_MS;
    for (uint32_t i = 1; i < r->retried && d < ZF_BACKOFF_CAP_MS; i++)
        d *= 2;
    if (d > ZF_BACKOFF_CAP_MS)
        d = ZF_BACKOFF_CAP_MS;
    b->jitter ^= b->jitter << 13;
    b->jitter ^= b->jitter >> 7;
    b->jitter ^= b->jitter << 17;
    return (uint32_t)(d / 2 + b->jitter % (d / 2 + 1));
}

/* A handler failure: retried after its backoff while the job has retries left and the
   handler did not mark it permanent; else the job ends `failed`. Each retried failure is
   kept among the job's causes ("attempt N: ..."). */
static void handler_failed(zf_broker_t *b, job_t *j, const char *text, bool permanent)
{
    result_t *r = job_res(j);
    if (permanent || r->retried >= r->retries) {
        zfb_job_note(j, "%s%s", text, permanent && r->retries ? " (permanent: not retried)" : "");
        finalize(b, j, ZF_ST_FAILED);
        return;
    }
    r->retried++;
    zfb_job_note(j, "attempt %u: %s", zfb_job_attempts_used(j), text);
    uint32_t wait = backoff_delay(b, r);
    r->due_at = zf_now_ms() + wait;
    zf_journal_schedule(b->journal, j);
    b->c.requeued++;
    zf_log_event(ZF_LOG_INFO, "job_retry_scheduled",
                 &(zf_log_fields_t){
                     .job = j->id, .attempt = j->attempt, .fn = j->fn->name, .reason = text},
                 "job %llu failed (attempt %u): retry %u of %u in %u ms", (unsigned long long)j->id,
                 j->attempt, r->retried, r->retries, wait);
    place(b, j, true); /* into the timer heap: it is not due */
}

static void on_submit(zf_broker_t *b, zmq_msg_t *rid, const zf_msg_t *m, zmq_msg_t *payload)
{
    b->c.submitted++;
    if (m->fn.len == 0)
        return reject(b, rid, m->tag, ZF_EBADARG, "function name is empty");
    /* the name is shown in every STATS document, which clients decode as strict UTF-8 */
    if (!zf_utf8_valid(m->fn.ptr, m->fn.len))
        return reject(b, rid, m->tag, ZF_EBADARG, "function name is not valid UTF-8");
    if (zmq_msg_size(payload) > b->cfg.max_payload) {
        char text[96];
        snprintf(text, sizeof text, "payload too large: %zu bytes, limit %llu",
                 zmq_msg_size(payload), (unsigned long long)b->cfg.max_payload);
        return reject(b, rid, m->tag, ZF_ETOO_LARGE, text);
    }
    if (zf_msg_has(m, ZF_F_DEVICE) && m->device > ZF_DEV_GPU)
        return reject(b, rid, m->tag, ZF_EBADARG, "device must be any, cpu or gpu");
    if (m->max_attempts > 100)
        return reject(b, rid, m->tag, ZF_EBADARG, "max_attempts must be at most 100");
    const char *bad = bad_schedule(m);
    if (bad)
        return reject(b, rid, m->tag, ZF_EBADARG, bad);
    if ((m->flags & ZF_FLAG_FORGET) && (m->flags & ZF_FLAG_NO_PUSH))
        return reject(b, rid, m->tag, ZF_EBADARG,
                      "forget needs the result pushed to this connection (not with no_push)");
    if ((m->flags & ZF_FLAG_NO_ACK) && (m->flags & ZF_FLAG_NO_PUSH))
        return reject(b, rid, m->tag, ZF_EBADARG,
                      "no_ack needs the result pushed to this connection (not with no_push)");
    const char *bad_tags = zf_tags_check(m->tags.ptr, m->tags.len);
    if (bad_tags)
        return reject(b, rid, m->tag, ZF_EBADARG, bad_tags);
    zfb_pipe_t steps;
    if (m->then.len) {
        char first[ZF_FN_MAX + 1];
        zf_str_copy(first, sizeof first, m->fn);
        zfb_pipe_first_t one = {first, (uint8_t)m->device, m->timeout_ms, (uint8_t)m->retries};
        const char *bad_steps = zfb_pipe_parse(m->then, &one, &steps);
        if (bad_steps)
            return reject(b, rid, m->tag, ZF_EBADARG, bad_steps);
    }
    char jtext[128];
    if (zf_journal_error(b->journal)) /* before any allocation: refusals cost nothing */
        return reject(b, rid, m->tag, ZF_EJOURNAL, journal_text(b, jtext, sizeof jtext));
    if (b->queued + b->unplaced >= b->cfg.max_queued)
        return reject(b, rid, m->tag, ZF_EQUEUE_FULL, "queue full (broker limit)");
    fnq_t *fn = fn_get(b, m->fn, false);
    if (!fn && HASH_COUNT(b->fns) >= ZF_MAX_FN_QUEUES)
        return reject(b, rid, m->tag, ZF_EQUEUE_FULL, "too many distinct function names");
    if (!fn)
        fn = fn_get(b, m->fn, true);
    size_t plen = zmq_msg_size(payload);
    client_t *c = fn ? client_get(b, zmq_msg_data(rid), zmq_msg_size(rid)) : NULL;
    if (!c)
        return reject(b, rid, m->tag, ZF_EINTERNAL, "out of memory");
    char why[160];
    const char *full = over_queue_bound(b, c, fn, plen, why, sizeof why);
    if (full) {
        client_drop_unused(b, c);
        return reject(b, rid, m->tag, ZF_EQUEUE_FULL, full);
    }
    /* A small payload is kept inside the job's own allocation (see keep_frame); a larger
       one keeps the frame it came in, moved, never copied. */
    job_t *j = zfb_job_new_frame(payload);
    if (!j) {
        client_drop_unused(b, c);
        return reject(b, rid, m->tag, ZF_EINTERNAL, "out of memory");
    }
    /* An id already taken is skipped: only a journal restored without its ids files (copied
       elsewhere) can hold one, and then with odds of about 2^-53 per live job. With no job
       restored, every id in the table came from this run's source, a permutation of a
       counter that only grows: none can repeat, and the look-up (a few cache misses on a
       table of 100,000 results, 2 % of the CPU of a busy run) is skipped. */
    job_t *dup = NULL;
    do {
        j->id = zf_ids_next(b->ids);
        if (j->id && b->restored) /* (the table, not job_find: a forgetting job holds its id) */
            HASH_FIND(hh, b->jobs, &j->id, sizeof j->id, dup);
    } while (j->id && dup);
    if (!j->id) {
        char text[128];
        snprintf(text, sizeof text, "journal unavailable: cannot reserve job ids: %s",
                 strerror(errno));
        zfb_job_free(&j);
        client_drop_unused(b, c);
        return reject(b, rid, m->tag, ZF_EJOURNAL, text);
    }
    j->fn = fn;
    j->owner = b->caller;
    zfb_owner_t *o = b->caller ? zfb_owners_get(b->owners, b->caller) : NULL;
    if (o)
        o->accepted++;
    j->priority = m->priority;
    j->device = (uint8_t)m->device;
    j->max_attempts = (uint8_t)(m->max_attempts ? m->max_attempts : b->cfg.max_attempts);
    j->timeout_ms = m->timeout_ms;
    j->tag = m->tag;
    if (m->tags.len && !(j->tags = strndup(m->tags.ptr, m->tags.len)))
        zfb_oom("a job's tags");
    if (m->then.len) {
        if (!(j->pipe = malloc(sizeof *j->pipe)))
            zfb_oom("a job's pipeline");
        *j->pipe = steps;
    }
    int64_t accepted_ms = zf_now_ms();
    /* the submitter is the first waiter: it gets ACCEPTED, and the result unless NO_PUSH */
    zfb_job_add_waiter(j, c);
    count_unfinished(b, j);
    j->no_push = (m->flags & ZF_FLAG_NO_PUSH) != 0;
    j->forget = (m->flags & ZF_FLAG_FORGET) != 0;
    j->no_ack = (m->flags & ZF_FLAG_NO_ACK) != 0;
    j->lazy_ack = (m->flags & ZF_FLAG_LAZY_ACK) != 0;
    set_schedule(j, m, accepted_ms);
    HASH_ADD(hh, b->jobs, id, sizeof j->id, j);
    if (zfb_index_add(b->index, j) < 0)
        zfb_oom("the job index");
    b->c.accepted++;
    fn->accepted++;
    zf_journal_accept(b->journal, j);
    j->ack_seq = zf_journal_seq(b->journal);
    zf_journal_schedule(b->journal, j); /* (nothing unless it has a retry policy or a delay) */
    *b->ack_tail = j;
    b->ack_tail = &j->ack_next;
    if (m->deadline_ms) {
        j->deadline_at = accepted_ms + m->deadline_ms;
        if (zf_heap_push(&b->deadlines, j) < 0)
            zfb_oom("a deadline");
    }
    if (!b->journal)
        place(b, j, false); /* nothing to wait for; with a journal, flush_turn places it */
    else
        b->unplaced++;
}

/* The job, if the caller may see it: with CURVE on, a job is its owner's (the key that
   submitted it) and an admin's; to anyone else it does not exist, so that ids do not tell
   which jobs are there (PROTOCOL.md, Security). */
static job_t *job_for_caller(zf_broker_t *b, uint64_t id)
{
    job_t *j = job_find(b, id);
    if (j && b->auth && !b->caller_admin && j->owner != b->caller)
        return NULL;
    return j;
}

static void on_wait_or_get(zf_broker_t *b, zmq_msg_t *rid, const zf_msg_t *m)
{
    job_t *j = job_for_caller(b, m->id);
    if (!j)
        return reply_error(b, rid, ZF_CMD_ERROR, m->tag, ZF_EUNKNOWN_JOB,
                           "unknown job (never accepted, or its result expired)");
    /* A result whose FINISH record is not committed yet (the journal is down) is not told:
       a crash could still take it back. Until then the job reads as running, and a WAIT is
       pushed the result with the others once it is durable. */
    if (zf_state_is_terminal(j->state) && !j->result_pending) {
        client_t *c = client_get(b, zmq_msg_data(rid), zmq_msg_size(rid));
        if (!c)
            return reply_error(b, rid, ZF_CMD_ERROR, m->tag, ZF_EINTERNAL, "out of memory");
        deliver(b, j, c, m->tag, false);
        client_drop_unused(b, c);
        return;
    }
    if (m->cmd == ZF_CMD_WAIT) {
        client_t *c = client_get(b, zmq_msg_data(rid), zmq_msg_size(rid));
        if (!c)
            return reply_error(b, rid, ZF_CMD_ERROR, m->tag, ZF_EINTERNAL, "out of memory");
        if (c == j->waiter)
            j->no_push = false; /* a NO_PUSH submitter that now waits wants the result */
        else
            zfb_job_add_waiter(j, c);
    }
    send_status(b, rid, j, m->tag);
}

static void reply_ok(zf_broker_t *b, zmq_msg_t *rid, uint64_t tag, const char *text)
{
    reply_error(b, rid, ZF_CMD_REPLY, tag, ZF_OK, text);
}

static void on_cancel(zf_broker_t *b, zmq_msg_t *rid, const zf_msg_t *m)
{
    job_t *j = job_for_caller(b, m->id);
    if (!j)
        return reply_error(b, rid, ZF_CMD_REPLY, m->tag, ZF_EUNKNOWN_JOB, "unknown job");
    if (zf_state_is_terminal(j->state)) {
        char text[64];
        snprintf(text, sizeof text, "job already %s", zf_state_name(j->state));
        return reply_error(b, rid, ZF_CMD_REPLY, m->tag, ZF_ESTATE, text);
    }
    if (j->state == ZF_ST_RUNNING) {
        /* The lease is fenced by the terminal state; the worker keeps the credit until it
           answers, and its handler sees the cancel flag. */
        wrk_t *w = j->worker;
        j->fn->running--;
        if (!w) /* held for a re-attach: a claim of it will be refused */
            reattach_forget(b, j);
        zf_msg_t c;
        zf_msg_init(&c, ZF_CMD_WCANCEL);
        zf_msg_set_u64(&c, ZF_F_ID, j->id);
        zf_msg_set_u64(&c, ZF_F_ATTEMPT, j->attempt);
        if (w)
            zf_wire_send_to(b->back, w->rid, w->rid_len, &c, NULL);
        /* if it is the lease being run, the worker must answer within a grace or be
           removed as wedged: jobs queued behind it in the worker wait for that answer */
        if (w && w->inflight && w->leases[0].id == j->id && w->leases[0].attempt == j->attempt)
            run_timer_set(b, w, &w->leases[0], 1, zf_now_ms() + run_grace_ms(b));
    }
    zfb_job_note(j, "cancelled by request");
    finalize(b, j, ZF_ST_CANCELLED);
    reply_ok(b, rid, m->tag, "cancelled");
}

static void on_retry(zf_broker_t *b, zmq_msg_t *rid, const zf_msg_t *m)
{
    job_t *j = job_for_caller(b, m->id);
    bool is_dead = false;
    for (job_t *d = b->dead; d && j; d = d->next)
        if (d == j) {
            is_dead = true;
            break;
        }
    if (j && !is_dead && j->state == ZF_ST_FAILED)
        is_dead = true; /* a finished failed job is retried too (it kept its payload) */
    if (!is_dead)
        return reply_error(b, rid, ZF_CMD_REPLY, m->tag, ZF_EUNKNOWN_JOB,
                           "no such job in the dead-letter list, nor a failed job");
    if (j->result_pending) /* its `lost` result is still being pushed, this very turn */
        return reply_error(b, rid, ZF_CMD_REPLY, m->tag, ZF_ESTATE,
                           "the job has only just ended; retry again");
    if (b->queued + b->unplaced >= b->cfg.max_queued || j->fn->queued >= b->cfg.max_queued_per_fn ||
        b->payload_bytes + j->plen > b->cfg.max_queued_bytes)
        return reply_error(b, rid, ZF_CMD_REPLY, m->tag, ZF_EQUEUE_FULL, "queue full");
    /* Journaled and committed before anything changes (a retry is rare: its own fsync), so
       a failed commit leaves the dead letter as it was and nothing unjournaled runs. The
       record says what the requeued job will be: its deadline is cleared (below). */
    char jtext[128];
    int64_t deadline = j->deadline_at;
    j->deadline_at = 0;
    if (j->res) { /* a retry policy starts over: its SCHEDULE record follows the ACCEPT */
        j->res->retried = 0;
        j->res->due_at = 0;
    }
    zf_journal_accept(b->journal, j);
    zf_journal_schedule(b->journal, j);
    if (zf_journal_commit(b->journal) < 0) {
        j->deadline_at = deadline;
        return reply_error(b, rid, ZF_CMD_REPLY, m->tag, ZF_EJOURNAL,
                           journal_text(b, jtext, sizeof jtext));
    }
    store_drop(b, j); /* before its state changes: stored_bytes depends on it */
    /* The payload was released at the terminal state; the journal keeps it only until then,
       so a retry needs it in memory: dead jobs keep theirs (see finalize). */
    /* lease numbers go on from where they were: a worker still running an old attempt must
       never match the new lease */
    job_res(j)->attempt_base = j->attempt;
    j->no_push = false; /* the retrying client is pushed the result */
    j->forget = false;  /* and it kept the job to retry it: its result is kept too */
    j->state = ZF_ST_QUEUED;
    j->deadline_at = 0; /* a retry is a fresh start: the old deadline has passed */
    if (j->res) {
        free(j->res->error);
        j->res->error = NULL;
    }
    client_t *c = client_get(b, zmq_msg_data(rid), zmq_msg_size(rid));
    if (!c) /* (after the journal's commit: the retry is promised) */
        zfb_oom("a client entry");
    zfb_job_add_waiter(j, c);
    count_unfinished(b, j);
    place(b, j, false);
    reply_ok(b, rid, m->tag, "requeued");
    after_commit(b, zf_now_ms()); /* what this turn accepted so far is durable now */
}

static void free_doc(void *data, void *hint)
{
    (void)hint;
    ZF_TSAN_ACQUIRE(data); /* written by the loop's thread before ZeroMQ had it */
    free(data);
}

static void send_doc(zf_broker_t *b, zmq_msg_t *rid, uint64_t tag, msgpack_sbuffer *sb)
{
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_REPLY);
    zf_msg_set_u64(&m, ZF_F_TAG, tag);
    zf_msg_set_u64(&m, ZF_F_CODE, ZF_OK);
    zmq_msg_t doc;
    /* The sbuffer's memory is handed to ZeroMQ, which frees it after sending. */
    ZF_TSAN_RELEASE(sb->data);
    zmq_msg_init_data(&doc, sb->data, sb->size, free_doc, NULL);
    sb->data = NULL;
    if (zf_wire_send(b->front, rid, &m, &doc) < 0) {
        zmq_msg_close(&doc);
        b->c.undeliverable++;
    }
}

/* What STATS and /metrics show, as of now; auth is filled for v to borrow. */
static void stats_view(zf_broker_t *b, zfb_stats_t *out, zfb_auth_counts_t *auth)
{
    int64_t now = zf_now_ms();
    *auth = (zfb_auth_counts_t){0};
    if (b->auth)
        zfb_auth_counts(b->auth, auth);
    uint64_t slow = 0;
    for (client_t *c = b->slow; c; c = c->slow_next)
        slow++;
    *out = (zfb_stats_t){
        .c = &b->c,
        .uptime_ms = (uint64_t)(now - b->started_ms),
        .queued = b->queued,
        .results_kept = b->ndone,
        .dead_letters = b->ndead,
        .result_bytes = b->result_bytes,
        .forget_pending = b->nforgetting,
        .forget_pending_bytes = b->forgetting_bytes,
        .journal_ok = !(b->journal && zf_journal_error(b->journal)),
        .journal_errors = zf_journal_failures(b->journal),
        .queued_bytes = b->payload_bytes,
        .clients_slow = slow,
        .jobs_paced = zfb_pacer_deferred(b->pacer),
        .jobs_waiting = zfb_pacer_held(b->pacer),
        .fns = b->fns,
        .workers = b->workers,
        .now_ms = now,
        .curve = b->auth != NULL,
        .auth = auth,
        .owners = b->owners,
        .journal = b->journal != NULL,
        .journal_bytes = zf_journal_size(b->journal),
        .journal_records = zf_journal_records(b->journal),
        .fsync = &b->fsync_hist,
        .clients = b->clients_open,
    };
}

static void on_stats(zf_broker_t *b, zmq_msg_t *rid, const zf_msg_t *m)
{
    /* The whole fleet (workers, hosts, every tenant's functions and counts) is the
       operator's view, not a tenant's: with CURVE on it is for admin keys only. */
    if (b->auth && !b->caller_admin)
        return reply_error(b, rid, ZF_CMD_REPLY, m->tag, ZF_EDENIED,
                           "stats and workers are for admin keys (--admin-keys)");
    zfb_auth_counts_t auth;
    zfb_stats_t v;
    stats_view(b, &v, &auth);
    msgpack_sbuffer sb;
    zfb_stats_pack(&sb, &v);
    send_doc(b, rid, m->tag, &sb);
}

/* With CURVE on, DEAD and DEAD PURGE are scoped to the caller's own jobs (all of them for an
   admin): a web app lists and clears its own failures, and sees nobody else's. */
static void on_dead(zf_broker_t *b, zmq_msg_t *rid, const zf_msg_t *m)
{
    uint32_t only = b->auth && !b->caller_admin ? b->caller : 0;
    if (m->flags & ZF_FLAG_PURGE) {
        uint64_t n = 0;
        for (job_t *j = b->dead, *next; j; j = next) {
            next = j->next;
            if (j->result_pending || !j->acked || (only && j->owner != only))
                continue; /* its result or acceptance is still to be sent, or not ours */
            store_discard(b, j);
            n++;
        }
        char text[64];
        snprintf(text, sizeof text, "purged %llu dead letter(s)", (unsigned long long)n);
        return reply_ok(b, rid, m->tag, text);
    }
    msgpack_sbuffer sb;
    zfb_dead_pack(&sb, b->dead, b->ndead, b->owners, only);
    send_doc(b, rid, m->tag, &sb);
}

/* One page of the job listing (zf_listing.h): bounded work whatever the broker holds. */
static void on_jobs(zf_broker_t *b, zmq_msg_t *rid, const zf_msg_t *m)
{
    zfb_listing_query_t q = {.after = zf_msg_has(m, ZF_F_ID) ? m->id : 0,
                             .limit = zf_msg_has(m, ZF_F_LIMIT) ? m->limit : 100,
                             .state = zf_msg_has(m, ZF_F_STATUS) ? (int)m->status : -1,
                             .fn = m->fn,
                             .tag = m->tags,
                             .owner = b->auth && !b->caller_admin ? b->caller : 0};
    if (q.limit == 0 || q.limit > ZF_JOBS_LIMIT_MAX)
        return reply_error(b, rid, ZF_CMD_ERROR, m->tag, ZF_EBADARG, "limit must be 1 to 1000");
    if (zf_msg_has(m, ZF_F_STATUS) && m->status >= ZF_ST__COUNT)
        return reply_error(b, rid, ZF_CMD_ERROR, m->tag, ZF_EBADARG, "unknown state");
    if (q.tag.len && (memchr(q.tag.ptr, ',', q.tag.len) || zf_tags_check(q.tag.ptr, q.tag.len)))
        return reply_error(b, rid, ZF_CMD_ERROR, m->tag, ZF_EBADARG,
                           "the tag filter must be one key=value");
    msgpack_sbuffer sb;
    zfb_listing_pack(&sb, b->index, &q);
    send_doc(b, rid, m->tag, &sb);
}

/* Whether any job is running: then a JOBS page waits its share of the loop (zf_pacer.h). */
static bool jobs_running(const zf_broker_t *b)
{
    for (const fnq_t *f = b->fns; f; f = f->hh.next)
        if (f->running)
            return true;
    return false;
}

/* One page served, its cost recorded for the pacer. */
static void serve_jobs(zf_broker_t *b, zmq_msg_t *rid, const zf_msg_t *m)
{
    int64_t start = zf_now_us();
    on_jobs(b, rid, m);
    zfb_pacer_spent(b->pacer, start, zf_now_us());
}

/* A JOBS request: served now, unless jobs run and the listing has used its share of the loop
   (or pages wait already, which keeps them in order); then held until its turn. The request
   frame is kept whole and decoded again when served: the decoded view points into it. */
static void on_jobs_paced(zf_broker_t *b, zf_frames_t *f, const zf_msg_t *m)
{
    if (!jobs_running(b) && zfb_pacer_held(b->pacer) == 0)
        return serve_jobs(b, &f->part[0], m);
    if (zfb_pacer_may(b->pacer, zf_now_us()))
        return serve_jobs(b, &f->part[0], m);
    zfb_paced_t p = {.caller = b->caller, .admin = b->caller_admin};
    zmq_msg_init(&p.rid);
    zmq_msg_init(&p.req);
    zmq_msg_move(&p.rid, &f->part[0]);
    zmq_msg_move(&p.req, &f->part[1]);
    if (zfb_pacer_hold(b->pacer, &p) == 0)
        return;
    b->c.jobs_refused++;
    reply_error(b, &p.rid, ZF_CMD_ERROR, m->tag, ZF_EQUEUE_FULL,
                "too many listings waiting their turn; retry later");
    zmq_msg_close(&p.rid);
    zmq_msg_close(&p.req);
}

/* Held JOBS pages whose turn has come (all of them when no job runs), at most one per loop
   turn while jobs run. */
static void serve_paced(zf_broker_t *b)
{
    if (zfb_pacer_held(b->pacer) == 0)
        return; /* (the common case: one load per loop turn, no walk of the functions) */
    zfb_paced_t p;
    bool running = jobs_running(b);
    while (zfb_pacer_next(b->pacer, zf_now_us(), !running, &p)) {
        zf_msg_t m;
        int err = 0;
        const char *why = NULL;
        int rc = zf_msg_decode(&m, zmq_msg_data(&p.req), zmq_msg_size(&p.req), &err, &why);
        assert(rc == 0 && "it decoded when it came");
        (void)rc;
        b->caller = p.caller;
        b->caller_admin = p.admin;
        serve_jobs(b, &p.rid, &m);
        zmq_msg_close(&p.rid);
        zmq_msg_close(&p.req);
        if (running)
            break;
    }
}

/* Sets the caller from the message's User-Id (ZAP let the connection in with it) and says
   whether its key may still be a client: one removed from the key directories since it
   connected gets no further service. */
static bool client_allowed(zf_broker_t *b, const zmq_msg_t *frame)
{
    b->caller = zfb_auth_caller(frame);
    b->caller_admin = zfb_auth_may(b->auth, b->caller, ZFB_ROLE_ADMIN);
    if (b->caller_admin || zfb_auth_may(b->auth, b->caller, ZFB_ROLE_CLIENT))
        return true;
    zfb_auth_refused(b->auth, b->caller);
    return false;
}

static void client_message(zf_broker_t *b, zf_frames_t *f)
{
    zmq_msg_t *rid = &f->part[0];
    zf_msg_t m;
    int err = 0;
    const char *why = NULL;
    if (f->n < 2 || f->dropped) {
        b->c.malformed_client++;
        return reply_error(b, rid, ZF_CMD_ERROR, 0, ZF_EMALFORMED, "too many or too few frames");
    }
    if (zf_msg_decode(&m, zmq_msg_data(&f->part[1]), zmq_msg_size(&f->part[1]), &err, &why) < 0 ||
        (m.cmd & 0xc0) != 0) {
        b->c.malformed_client++;
        if (err == 0)
            why = "not a client command";
        return reply_error(b, rid, ZF_CMD_ERROR, 0, err ? err : ZF_ECOMMAND, why);
    }
    if (f->n != 2 + zf_cmd_payload_frames(m.cmd)) {
        b->c.malformed_client++;
        return reply_error(b, rid, ZF_CMD_ERROR, m.tag, ZF_EMALFORMED,
                           "wrong number of frames for the command");
    }
    if (b->auth && !client_allowed(b, &f->part[1])) {
        const char *denied = "access denied: this client's key is no longer allowed by the broker";
        if (m.cmd == ZF_CMD_SUBMIT)
            return reject(b, rid, m.tag, ZF_EDENIED, denied);
        return reply_error(b, rid, ZF_CMD_ERROR, m.tag, ZF_EDENIED, denied);
    }
    switch (m.cmd) {
    case ZF_CMD_SUBMIT: on_submit(b, rid, &m, &f->part[2]); break;
    case ZF_CMD_WAIT:
    case ZF_CMD_GET: on_wait_or_get(b, rid, &m); break;
    case ZF_CMD_CANCEL: on_cancel(b, rid, &m); break;
    case ZF_CMD_STATS: on_stats(b, rid, &m); break;
    case ZF_CMD_DEAD: on_dead(b, rid, &m); break;
    case ZF_CMD_RETRY: on_retry(b, rid, &m); break;
    case ZF_CMD_JOBS: on_jobs_paced(b, f, &m); break;
    case ZF_CMD_PING: {
        zf_msg_t p;
        zf_msg_init(&p, ZF_CMD_PONG);
        zf_msg_set_u64(&p, ZF_F_TAG, m.tag);
        /* so a client refuses a larger payload itself instead of being disconnected */
        zf_msg_set_u64(&p, ZF_F_MAXPAYLOAD, b->cfg.max_payload);
        zf_wire_send(b->front, rid, &p, NULL);
        break;
    }
    default:
        b->c.malformed_client++;
        reply_error(b, rid, ZF_CMD_ERROR, m.tag, ZF_ECOMMAND, "not a client command");
    }
}

/* ------------------------------------------------------------------ worker commands */

/* An ERROR on the worker socket; a sender that does not read it costs nothing. */
static void worker_error(zf_broker_t *b, zmq_msg_t *rid, int code, const char *text)
{
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_ERROR);
    zf_msg_set_u64(&m, ZF_F_CODE, (uint64_t)code);
    zf_msg_set_str(&m, ZF_F_TEXT, text);
    zf_wire_send(b->back, rid, &m, NULL);
}

static void send_to_worker(zf_broker_t *b, zmq_msg_t *rid, uint8_t cmd)
{
    zf_msg_t m;
    zf_msg_init(&m, cmd);
    zf_msg_set_u64(&m, ZF_F_HEARTBEAT, b->cfg.heartbeat_ms);
    zf_wire_send(b->back, rid, &m, NULL);
}

static void on_ready(zf_broker_t *b, zmq_msg_t *rid, wrk_t *w, const zf_msg_t *m)
{
    if (w)
        worker_remove(b, w, "registered again");
    if (m->device != ZF_DEV_CPU && m->device != ZF_DEV_GPU) {
        b->c.malformed_worker++;
        return;
    }
    /* What READY names ends up in every STATS document, which clients decode as strict
       UTF-8: a function name that is not UTF-8 is dropped (no client can submit to it:
       on_submit refuses such names), and a worker name, device label or model that is
       not counts as absent. The worker is told, once. */
    bool bad_fn = false, bad_name = false;
    for (uint32_t i = 0; i < m->nfunctions; i++)
        bad_fn |= !zf_utf8_valid(m->functions[i].ptr, m->functions[i].len);
    zf_str_t name = m->worker, devname = m->devname, model = m->text;
    zf_str_t *names[] = {&name, &devname, &model};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!zf_utf8_valid(names[i]->ptr, names[i]->len)) {
            *names[i] = (zf_str_t){"", 0};
            bad_name = true;
        }
    if (bad_fn || bad_name) {
        b->c.malformed_worker++;
        worker_error(b, rid, ZF_EMALFORMED,
                     bad_fn ? "function names that are not valid UTF-8 were dropped"
                            : "worker, device or model names that are not valid UTF-8 were "
                              "dropped");
    }
    w = calloc(1, sizeof *w);
    winfo_t *info = w ? calloc(1, sizeof *info) : NULL;
    wslot_t *slots = info ? calloc(m->nfunctions ? m->nfunctions : 1, sizeof *slots) : NULL;
    if (!slots) { /* refused (see "Out of memory"): it registers again when told RESET */
        zf_log(ZF_LOG_ERROR, "out of memory registering a worker: not registered");
        free(w);
        free(info);
        return;
    }
    w->rid_len = (uint8_t)zmq_msg_size(rid);
    memcpy(w->rid, zmq_msg_data(rid), w->rid_len);
    w->owner = b->caller; /* (worker_allowed's; 0 without CURVE) */
    w->session = m->session;
    w->kind = (uint8_t)m->device;
    w->list = LIST_NONE;
    w->rpos = ZF_HEAP_NONE;
    w->devindex = m->devindex;
    w->devmem = m->devmem;
    w->credits = m->credits ? m->credits : 1;
    if (w->credits > ZF_LEASES_MAX)
        w->credits = ZF_LEASES_MAX;
    w->batch = zf_msg_has(m, ZF_F_BATCH) && m->batch > 1 ? m->batch : 1;
    info->refs = 1;
    zf_str_copy(info->name, sizeof info->name, name);
    if (!info->name[0])
        snprintf(info->name, sizeof info->name, "worker-%llu",
                 (unsigned long long)(zf_random64() % 100000));
    zf_str_copy(info->devname, sizeof info->devname, devname);
    zf_str_copy(w->model, sizeof w->model, model);
    w->model[zf_utf8_prefix(w->model, strlen(w->model))] = 0; /* not cut inside a character */
    zf_str_copy(w->supervisor, sizeof w->supervisor, m->supervisor);
    w->info = info;
    w->slots = slots;
    for (uint32_t i = 0; i < m->nfunctions; i++) {
        if (!zf_utf8_valid(m->functions[i].ptr, m->functions[i].len))
            continue;
        fnq_t *fn = fn_get(b, m->functions[i], HASH_COUNT(b->fns) < ZF_MAX_FN_QUEUES);
        if (!fn || serves(w, fn))
            continue; /* out of memory, or a name the worker listed twice */
        slots[w->nslots] = (wslot_t){.w = w, .fn = fn};
        w->nslots++;
        fn->nworkers++;
    }
    w->last_recv_ms = w->joined_ms = zf_now_ms();
    HASH_ADD(hh, b->workers, rid, w->rid_len, w);
    DL_APPEND(b->alive, w);
    zf_log_event(ZF_LOG_INFO, "worker_joined",
                 &(zf_log_fields_t){.worker = info->name, .device = info->devname},
                 "worker %s joined on %s with %u function(s), %u credit(s)", info->name,
                 info->devname, w->nslots, w->credits);
    zf_msg_t hb;
    zf_msg_init(&hb, ZF_CMD_BHEARTBEAT);
    zf_msg_set_u64(&hb, ZF_F_HEARTBEAT, b->cfg.heartbeat_ms);
    /* its claims are judged (refusals follow), and it may change its credits later */
    zf_msg_set_u64(&hb, ZF_F_FLAGS, ZF_FLAG_REATTACH | ZF_FLAG_CREDITS);
    zf_wire_send(b->back, rid, &hb, NULL);
    reattach_claims(b, w, m); /* before any new work: the leases it holds come first */
    worker_relist(w);
    refill(b, w);
}

/* Counts one job that ran in a batch of n (issue 17). */
static void batches_observe(zfb_batches_t *bs, uint32_t n)
{
    unsigned i = 0;
    while (i + 1 < ZFB_BATCH_BUCKETS && (1u << i) < n)
        i++;
    bs->jobs[i]++;
    bs->calls += 1.0 / n;
}

/* Stores the job's progress (and text, NULL for none: an earlier one is cleared) for STATUS
   and pushes PROGRESS to its waiters. */
static void set_progress(zf_broker_t *b, job_t *j, double progress, const zf_str_t *text)
{
    result_t *r = job_res(j);
    r->progress = progress;
    free(r->progress_text);
    r->progress_text = NULL;
    if (text && text->len && (r->progress_text = malloc(text->len + 1)))
        zf_str_copy(r->progress_text, text->len + 1, *text);
    zf_msg_t p;
    zf_msg_init(&p, ZF_CMD_PROGRESS);
    zf_msg_set_u64(&p, ZF_F_ID, j->id);
    zf_msg_set_u64(&p, ZF_F_TAG, j->tag);
    zf_msg_set_progress(&p, progress);
    if (text && text->len)
        zf_msg_set_strn(&p, ZF_F_TEXT, text->ptr, text->len);
    if (j->ack_owed) /* ACCEPTED before anything else about the job */
        send_accepted(b, j);
    if (j->waiter && !j->no_push)
        zf_wire_send_to(b->front, j->waiter->rid, j->waiter->rid_len, &p, NULL);
    for (uint32_t i = 0; i < r->nmore; i++)
        zf_wire_send_to(b->front, r->more[i]->rid, r->more[i]->rid_len, &p, NULL);
}

/* A pipeline step succeeded and another follows: the output becomes the job's input, and
   the job is queued for the next step's function and device, its attempts counted afresh
   (a step's attempts are its own), and journaled (STEP). The worker is not held: it is
   free for other work as soon as it answered. */
static void advance_step(zf_broker_t *b, job_t *j, zmq_msg_t *output)
{
    zfb_pipe_t *p = j->pipe;
    uncount_unfinished(b, j); /* its payload's bytes change: counted again below */
    zfb_job_drop_payload(j);
    if (zmq_msg_size(output) &&
        zfb_job_copy_payload(j, zmq_msg_data(output), zmq_msg_size(output)) < 0)
        zfb_oom("a pipeline step's output");
    count_unfinished(b, j);
    p->cur++;
    zf_str_t name = {p->fn[p->cur], (uint32_t)strlen(p->fn[p->cur])};
    fnq_t *fn = fn_get(b, name, true);
    if (!fn)
        zfb_oom("a pipeline step's function queue");
    j->fn = fn;
    fn->accepted++;
    j->device = p->dev[p->cur];
    j->worker = NULL;
    if (j->tpos != ZF_HEAP_NONE) /* the deadline is the first step's, to start by */
        zf_heap_remove(&b->deadlines, j->tpos);
    j->deadline_at = 0;
    job_res(j)->attempt_base = j->attempt;
    if (zfb_job_enter_step(j) < 0)
        zfb_oom("a pipeline step's options");
    char said[40 + ZF_FN_MAX];
    int n = snprintf(said, sizeof said, "step %u of %u: %s", p->cur + 1u, (unsigned)p->n,
                     p->fn[p->cur]);
    set_progress(b, j, zfb_pipe_progress(p, 0), &(zf_str_t){said, (uint32_t)n});
    zf_journal_step(b->journal, j, true);
    place(b, j, false);
}

static void on_done(zf_broker_t *b, wrk_t *w, const zf_msg_t *m, zmq_msg_t *output)
{
    int li = lease_find(w, m->id, m->attempt);
    if (li >= 0)
        lease_drop(b, w, (uint32_t)li);
    job_t *j = li >= 0 ? current_lease(b, w, m->id, m->attempt) : NULL;
    if (!j) {
        if (m->status != ZF_ST_CANCELLED)
            b->c.stale_results++; /* (a WCANCEL answered for a job it had not started is not) */
    } else {
        result_t *r = job_res(j);
        r->duration_us = m->duration_us;
        zf_hist_observe(&j->fn->run, m->duration_us);
        if (zf_msg_has(m, ZF_F_BATCH) && m->batch >= 1) {
            batches_observe(&j->fn->batches, m->batch);
            for (uint32_t i = 0; i < w->nslots; i++)
                if (w->slots[i].fn == j->fn)
                    batches_observe(&w->slots[i].batches, m->batch);
        }
        zfb_winfo_release(&r->ran_on);
        r->ran_on = w->info;
        w->info->refs++;
        if (m->status == ZF_ST_TIMED_OUT) {
            w->jobs_failed++;
            char text[ZF_TEXT_MAX + 1];
            zf_str_copy(text, sizeof text, m->text);
            worker_relist(w); /* before the retry is placed */
            attempt_failed(b, j, ZF_ST_TIMED_OUT, text[0] ? text : "timed out");
        } else if (m->status == ZF_ST_SUCCEEDED && j->pipe && j->pipe->cur + 1 < j->pipe->n) {
            j->fn->running--;
            w->jobs_done++;
            advance_step(b, j, output);
        } else if (m->status == ZF_ST_SUCCEEDED) {
            j->fn->running--;
            w->jobs_done++;
            zmq_msg_close(&r->output);
            keep_frame(&r->output, output);
            finalize(b, j, ZF_ST_SUCCEEDED);
        } else {
            j->fn->running--;
            w->jobs_failed++;
            char text[ZF_TEXT_MAX + 1];
            zf_str_copy(text, sizeof text, m->text);
            j->worker = NULL;
            handler_failed(b, j, text[0] ? text : "handler failed",
                           (m->flags & ZF_FLAG_PERMANENT) != 0);
        }
    }
    if (!w->doomed) {
        worker_relist(w);
        refill(b, w);
    }
}

/* A pipeline's progress spans its steps: step k of n reporting p is (k - 1 + p) / n. */
static void on_progress(zf_broker_t *b, wrk_t *w, const zf_msg_t *m)
{
    job_t *j = current_lease(b, w, m->id, m->attempt);
    if (!j) {
        b->c.stale_progress++;
        return;
    }
    set_progress(b, j, j->pipe ? zfb_pipe_progress(j->pipe, m->progress) : m->progress, &m->text);
}

static void on_recalled(zf_broker_t *b, wrk_t *w, const zf_msg_t *m)
{
    int li = lease_find(w, m->id, m->attempt);
    if (li >= 0)
        lease_drop(b, w, (uint32_t)li);
    job_t *j = li >= 0 ? current_lease(b, w, m->id, m->attempt) : NULL;
    if (j) {
        /* The worker never started it: this delivery does not count (its lease number is
           not reused, so the fence stays exact). */
        j->fn->running--;
        job_res(j)->attempt_base++;
        zf_journal_attempts(b->journal, j); /* committed with the turn, like START */
        b->c.recalled++;
        worker_relist(w); /* before place(): w must be in the right ready list */
        place(b, j, true);
    }
    if (!w->doomed) {
        worker_relist(w);
        refill(b, w);
    }
}

/* CREDITS (PROTOCOL.md §7.12): a registered worker changes how many leases it may hold.
   Leases above a lowered number are kept (the worker runs them); no new JOB goes out until
   the worker is below it. The answer, CREDITED, is what the worker times its round trip by,
   so it goes out before any JOB the new credits free. */
static void on_credits(zf_broker_t *b, wrk_t *w, zmq_msg_t *rid, const zf_msg_t *m)
{
    w->credits = m->credits ? m->credits : 1;
    if (w->credits > ZF_LEASES_MAX)
        w->credits = ZF_LEASES_MAX;
    zf_msg_t r;
    zf_msg_init(&r, ZF_CMD_CREDITED);
    zf_msg_set_u64(&r, ZF_F_CREDITS, w->credits);
    zf_wire_send(b->back, rid, &r, NULL);
    if (!w->doomed) {
        worker_relist(w);
        refill(b, w);
    }
}

/* The routing id as lower-case hex, as a fleet supervisor names itself in its workers'
   READY; "" when it would not fit out (a supervisor id is at most 32 bytes). */
static void rid_hex(const zmq_msg_t *rid, char *out, size_t cap)
{
    const unsigned char *p = zmq_msg_data((zmq_msg_t *)rid);
    size_t n = zmq_msg_size((zmq_msg_t *)rid);
    out[0] = 0;
    if (2 * n + 1 > cap)
        return;
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
}

/* May the peer `rid` report w's death? Only w itself, or the supervisor its READY named:
   anyone else who can reach the worker port could otherwise move w's jobs to a worker of
   its own. */
static bool may_bury(const wrk_t *w, const zmq_msg_t *rid, const char *rid_hexed)
{
    if (zmq_msg_size((zmq_msg_t *)rid) == w->rid_len &&
        !memcmp(zmq_msg_data((zmq_msg_t *)rid), w->rid, w->rid_len))
        return true;
    return w->supervisor[0] && !strcmp(w->supervisor, rid_hexed);
}

/* A fleet supervisor saw one of its workers die: remove it now, with the real cause,
   instead of waiting for its heartbeats to run out. */
static void on_obituary(zf_broker_t *b, zmq_msg_t *rid, const zf_msg_t *m)
{
    char name[ZF_NAME_MAX + 1], cause[ZF_TEXT_MAX + 1], sender[sizeof((wrk_t *)0)->supervisor];
    zf_str_copy(name, sizeof name, m->worker);
    zf_str_copy(cause, sizeof cause, m->text);
    rid_hex(rid, sender, sizeof sender);
    for (wrk_t *w = b->workers; w; w = w->hh.next) {
        if (strcmp(w->info->name, name))
            continue;
        if (!may_bury(w, rid, sender)) {
            /* powers of two only: a flood of forgeries must not flood the log */
            uint64_t n = ++b->c.obituaries_refused;
            if ((n & (n - 1)) == 0)
                zf_log_event(ZF_LOG_WARN, "obituary_refused",
                             &(zf_log_fields_t){.worker = name, .count = n},
                             "obituary for worker %s refused: not from its supervisor "
                             "(%llu refused so far)",
                             name, (unsigned long long)n);
            continue;
        }
        b->c.workers_lost++;
        worker_remove(b, w, cause);
        return;
    }
}

/* A worker's text (error, cause, progress) reaches clients in RESULT, STATUS, PROGRESS and
   the DEAD document: each byte that is not part of well-formed UTF-8 becomes '?'. */
static zf_str_t utf8_clean(zf_str_t s, char out[ZF_TEXT_MAX])
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < s.len && n < ZF_TEXT_MAX;) {
        size_t ok = zf_utf8_prefix(s.ptr + i, s.len - i);
        if (ok > ZF_TEXT_MAX - n)
            ok = ZF_TEXT_MAX - n;
        memcpy(out + n, s.ptr + i, ok);
        n += (uint32_t)ok;
        i += (uint32_t)ok;
        if (i < s.len && n < ZF_TEXT_MAX) {
            out[n++] = '?';
            i++;
        }
    }
    return (zf_str_t){out, n};
}

/* Whether the message's key may still be a worker's. One removed from --worker-keys since
   it connected is refused (ERROR EDENIED, no RESET: it must not register again) and, if it
   was registered, removed, so its jobs run elsewhere. */
static bool worker_allowed(zf_broker_t *b, zmq_msg_t *rid, wrk_t *w, const zmq_msg_t *frame)
{
    b->caller = zfb_auth_caller(frame); /* on_ready keeps it as the worker's owner */
    if (zfb_auth_may(b->auth, b->caller, ZFB_ROLE_WORKER))
        return true;
    zfb_auth_refused(b->auth, b->caller);
    if (w)
        worker_remove(b, w, "its key was revoked");
    worker_error(b, rid, ZF_EDENIED,
                 "access denied: this worker's key is no longer allowed by the broker");
    return false;
}

static void worker_message(zf_broker_t *b, zf_frames_t *f)
{
    zmq_msg_t *rid = &f->part[0];
    zf_msg_t m;
    int err = 0;
    const char *why = NULL;
    wrk_t *w;
    HASH_FIND(hh, b->workers, zmq_msg_data(rid), zmq_msg_size(rid), w);
    if (w) {
        w->last_recv_ms = zf_now_ms();
        DL_DELETE(b->alive, w);
        DL_APPEND(b->alive, w);
    }
    /* the same checks, in the same order and with the same words, as client_message */
    if (f->n < 2 || f->dropped) {
        b->c.malformed_worker++;
        return worker_error(b, rid, ZF_EMALFORMED, "too many or too few frames");
    }
    if (b->auth && !worker_allowed(b, rid, w, &f->part[1]))
        return;
    if (zf_msg_decode(&m, zmq_msg_data(&f->part[1]), zmq_msg_size(&f->part[1]), &err, &why) < 0 ||
        (m.cmd & 0x80) == 0) {
        b->c.malformed_worker++;
        return worker_error(b, rid, err ? err : ZF_ECOMMAND, err ? why : "not a worker command");
    }
    bool frames_ok = f->n == 2 + zf_cmd_payload_frames(m.cmd);
    if (!w && m.cmd != ZF_CMD_READY && m.cmd != ZF_CMD_OBITUARY) {
        /* A worker we do not know (we restarted, or declared it dead): its results are
           stale by definition, whatever frames they came in; it must register again. */
        if (m.cmd == ZF_CMD_DONE)
            b->c.stale_results++;
        else if (m.cmd == ZF_CMD_WPROGRESS)
            b->c.stale_progress++;
        if (m.cmd != ZF_CMD_BYE)
            send_to_worker(b, rid, ZF_CMD_RESET);
        return;
    }
    if (!frames_ok && (m.cmd & 0x40) == 0) { /* (a broker->worker command: ECOMMAND below) */
        b->c.malformed_worker++;
        return worker_error(b, rid, ZF_EMALFORMED, "wrong number of frames for the command");
    }
    char clean[ZF_TEXT_MAX];
    if (m.cmd != ZF_CMD_READY && m.text.len && !zf_utf8_valid(m.text.ptr, m.text.len))
        m.text = utf8_clean(m.text, clean);
    if (m.cmd == ZF_CMD_READY)
        return on_ready(b, rid, w, &m);
    if (m.cmd == ZF_CMD_OBITUARY)
        return on_obituary(b, rid, &m);
    switch (m.cmd) {
    case ZF_CMD_DONE: on_done(b, w, &m, &f->part[2]); break;
    case ZF_CMD_WPROGRESS: on_progress(b, w, &m); break;
    case ZF_CMD_HEARTBEAT: break;
    case ZF_CMD_RECALLED: on_recalled(b, w, &m); break;
    case ZF_CMD_CREDITS: on_credits(b, w, rid, &m); break;
    case ZF_CMD_BYE:
        if (m.flags & ZF_FLAG_BYE_NOW) {
            worker_remove(b, w, "left");
        } else {
            zf_log_event(ZF_LOG_INFO, "worker_draining",
                         &(zf_log_fields_t){.worker = w->info->name, .device = w->info->devname},
                         "worker %s is draining", w->info->name);
            w->draining = true;
            worker_relist(w);
        }
        break;
    default: b->c.malformed_worker++; worker_error(b, rid, ZF_ECOMMAND, "not a worker command");
    }
}

/* ------------------------------------------------------------------ timers and loop */

static int64_t expiry_ms(zf_broker_t *b)
{
    return (int64_t)b->cfg.heartbeat_ms * b->cfg.liveness;
}

/* w's current lease outlived its timer (see wrk_t.run_until). */
static void run_expired(zf_broker_t *b, wrk_t *w, int64_t now)
{
    char why[160];
    if (w->run_stage == 1) {
        snprintf(why, sizeof why,
                 "wedged: lease (%llu, %u) unanswered %u ms after the broker "
                 "ended it",
                 (unsigned long long)w->run_id, w->run_attempt, run_grace_ms(b));
        b->c.workers_lost++;
        worker_remove(b, w, why);
        return;
    }
    b->c.run_timeouts++;
    zf_msg_t c;
    zf_msg_init(&c, ZF_CMD_WCANCEL);
    zf_msg_set_u64(&c, ZF_F_ID, w->run_id);
    zf_msg_set_u64(&c, ZF_F_ATTEMPT, w->run_attempt);
    zf_wire_send_to(b->back, w->rid, w->rid_len, &c, NULL);
    /* A worker enforces its own timeout and leaves after reporting it; one that is still
       silent is wedged or lying: it gets no more work until it answers, and one grace to. */
    w->suspect = true;
    worker_relist(w);
    lease_t l = w->leases[0];
    run_timer_set(b, w, &l, 1, now + run_grace_ms(b));
    job_t *j = current_lease(b, w, l.id, l.attempt);
    if (!j)
        return;
    zf_log_event(ZF_LOG_WARN, "job_run_timeout",
                 &(zf_log_fields_t){.job = j->id,
                                    .attempt = j->attempt,
                                    .fn = j->fn->name,
                                    .worker = w->info->name,
                                    .device = w->info->devname},
                 "job %llu: no result from worker %s within its run timeout (%u ms) + "
                 "%u ms: attempt %u ended by the broker",
                 (unsigned long long)j->id, w->info->name, j->timeout_ms, run_grace_ms(b),
                 j->attempt);
    snprintf(why, sizeof why,
             "no result from worker %s within the run timeout of %u ms + %u ms "
             "grace (ended by the broker)",
             w->info->name, j->timeout_ms, run_grace_ms(b));
    attempt_failed(b, j, ZF_ST_TIMED_OUT, why);
}

/* A turn far later than planned (the process was stopped, or a sync or a swap-in took
   seconds): the workers' silence during it is the broker's, not theirs. Each gets a fresh
   liveness window, and run timers move on by the stall. The threshold is well above a busy
   turn, so a broker that is merely loaded still expires dead workers. */
static void check_stall(zf_broker_t *b, int64_t now)
{
    int64_t late = b->last_timers_ms ? now - b->last_timers_ms - b->poll_wait_ms : 0;
    b->last_timers_ms = now;
    int64_t threshold =
        expiry_ms(b) / 2 > b->cfg.heartbeat_ms ? expiry_ms(b) / 2 : b->cfg.heartbeat_ms;
    if (late <= threshold)
        return;
    b->c.stalls++;
    zf_log_event(ZF_LOG_WARN, "broker_stall", &(zf_log_fields_t){.count = HASH_COUNT(b->workers)},
                 "the event loop ran %lld ms late (the broker was stopped, or blocked): "
                 "%u worker(s) get a fresh liveness window",
                 (long long)late, HASH_COUNT(b->workers));
    for (wrk_t *w = b->alive; w; w = w->next)
        w->last_recv_ms = now;               /* all equal: the liveness list stays in order */
    for (uint32_t i = 0; i < b->runs.n; i++) /* a uniform shift keeps the heap a heap */
        ((wrk_t *)b->runs.v[i])->run_until += late;
}

static void run_timers(zf_broker_t *b)
{
    int64_t now = zf_now_ms();
    check_stall(b, now);
    zfb_notify_tick(now); /* systemd's WATCHDOG=1 when due: the loop turns, so it lives */
    while (b->alive && b->alive->last_recv_ms + expiry_ms(b) <= now) {
        b->c.workers_lost++;
        worker_remove(b, b->alive, "no heartbeat");
    }
    wrk_t *rw;
    while ((rw = zf_heap_top(&b->runs)) && rw->run_until <= now) {
        zf_heap_pop(&b->runs);
        run_expired(b, rw, now);
    }
    job_t *j;
    while ((j = zf_heap_top(&b->deadlines)) && j->deadline_at <= now) {
        zf_heap_pop(&b->deadlines);
        if (j->state == ZF_ST_QUEUED || j->state == ZF_ST_SCHEDULED) {
            zfb_job_note(j, j->state == ZF_ST_QUEUED ? "deadline passed while queued"
                                                     : "deadline passed while scheduled");
            finalize(b, j, ZF_ST_EXPIRED);
        }
    }
    while ((j = zf_heap_top(&b->scheduled)) && j->res->due_at <= now) {
        zf_heap_pop(&b->scheduled);
        j->res->due_at = 0;
        place(b, j, j->attempt > 0); /* a retry goes to the front, as a requeue does */
    }
    if (zfb_reattach_due_ms(b->reattach, now) == 0)
        zfb_reattach_close(b->reattach, reattach_expired, b);
    if (now >= b->next_tick_ms) {
        for (wrk_t *w = b->workers; w; w = w->hh.next) {
            zf_msg_t m;
            zf_msg_init(&m, ZF_CMD_BHEARTBEAT);
            zf_wire_send_to(b->back, w->rid, w->rid_len, &m, NULL);
        }
        evict_results(b, now);
        sweep_clients(b);
        zf_journal_tick(b->journal, now, b->jobs);
        b->next_tick_ms = now + b->cfg.heartbeat_ms;
    }
}

static long poll_timeout(zf_broker_t *b)
{
    int64_t now = zf_now_ms();
    int64_t next = b->next_tick_ms;
    if (b->alive && b->alive->last_recv_ms + expiry_ms(b) < next)
        next = b->alive->last_recv_ms + expiry_ms(b);
    job_t *j = zf_heap_top(&b->deadlines);
    if (j && j->deadline_at < next)
        next = j->deadline_at;
    wrk_t *w = zf_heap_top(&b->runs);
    if (w && w->run_until < next)
        next = w->run_until;
    job_t *s = zf_heap_top(&b->scheduled);
    if (s && s->res->due_at < next)
        next = s->res->due_at;
    if (b->lazy_len && b->lazy[b->lazy_first].due_ms < next)
        next = b->lazy[b->lazy_first].due_ms;
    long wait = next <= now ? 0 : (long)(next - now);
    long reattach_in = zfb_reattach_due_ms(b->reattach, now);
    if (reattach_in >= 0 && reattach_in < wait)
        wait = reattach_in;
    long sync_in = zf_journal_due_ms(b->journal, now); /* an interval fsync coming due */
    if (sync_in >= 0 && sync_in < wait)
        wait = sync_in;
    /* a held JOBS page's turn */
    long page_in = zfb_pacer_held(b->pacer) ? zfb_pacer_due_ms(b->pacer, zf_now_us()) : -1;
    if (page_in >= 0 && page_in < wait)
        wait = page_in;
    long wd_in = zfb_notify_due_ms(now); /* systemd's watchdog, when WatchdogSec is short */
    return wd_in >= 0 && wd_in < wait ? wd_in : wait;
}

/* ------------------------------------------------------------------ metrics and health */

/* A GET on --metrics (zf_httpd.h): answered inside the loop, between turns, from the same
   state STATS reads (zf_metrics.h). */
static int on_http(void *arg, const char *path, zf_prom_t *body, const char **type)
{
    zf_broker_t *b = arg;
    zfb_auth_counts_t auth;
    zfb_stats_t v;
    stats_view(b, &v, &auth);
    zfb_health_t h = {
        .replaying = b->replaying,
        .accepting = !zf_journal_error(b->journal),
        .stopping = b->stop,
        .since_ms = b->last_turn_ms ? zf_now_ms() - b->last_turn_ms : 0,
    };
    return zfb_metrics_answer(path, &h, &v, body, type);
}

/* --metrics ADDR: the HTTP server, and a monitor of the client endpoint that counts its
   connections. Before the journal's replay, so /readyz can say "replaying". */
static int metrics_open(zf_broker_t *b)
{
    b->httpd = zf_httpd_new(b->cfg.metrics_addr, "metrics", on_http, b);
    if (!b->httpd)
        return -1;
    zf_log(ZF_LOG_INFO, "metrics: http://%s (port %u): /metrics, /healthz, /readyz",
           b->cfg.metrics_addr, zf_httpd_port(b->httpd));
    return 0;
}

/* zf_wire_read_batch's handlers for the loop's two sockets */
static void on_back(void *b, zf_frames_t *f)
{
    worker_message(b, f);
}

static void on_front(void *b, zf_frames_t *f)
{
    client_message(b, f);
}

/* One turn's reading: a batch from the workers' socket, then one from the clients', each
   only where the poll saw input. (A receive that finds nothing costs ZeroMQ a command check,
   getpid and poll, and the poll has just made that check: a socket left with input past
   BATCH shows it again at the next poll, which reports levels, not edges.) Returns 0, or -1
   on a socket error. */
static int read_batch(zf_broker_t *b, bool back_in, bool front_in)
{
    if (back_in && zf_wire_read_batch(b->back, BATCH, on_back, b) < 0)
        return -1;
    return front_in && zf_wire_read_batch(b->front, BATCH, on_front, b) < 0 ? -1 : 0;
}

/* SIGHUP re-reads the key directories and removes the workers whose key lost its role
   (their jobs run elsewhere); any other signal stops the broker. */
static void on_signal(zf_broker_t *b)
{
    struct signalfd_siginfo si;
    if (read(b->sigfd, &si, sizeof si) != sizeof si)
        return;
    if (si.ssi_signo != SIGHUP) {
        zf_log_event(ZF_LOG_INFO, "broker_stopping", NULL, "signal %u: stopping", si.ssi_signo);
        b->stop = true;
        return;
    }
    if (!b->auth) {
        zf_log(ZF_LOG_INFO, "SIGHUP: nothing to reload (CURVE is off)");
        return;
    }
    if (zfb_auth_reload(b->auth) < 0)
        return;
    wrk_t *w, *tmp;
    HASH_ITER(hh, b->workers, w, tmp)
    if (!zfb_auth_may(b->auth, w->owner, ZFB_ROLE_WORKER))
        worker_remove(b, w, "its key was revoked");
}

int zf_broker_run(zf_broker_t *b)
{
    enum { I_FRONT, I_BACK, I_SIG, I_WAKE, I_STOP, I_FIXED };
    zmq_pollitem_t items[8] = {{b->front, 0, ZMQ_POLLIN, 0},
                               {b->back, 0, ZMQ_POLLIN, 0},
                               {NULL, b->sigfd, ZMQ_POLLIN, 0},
                               {NULL, b->wake_fd, ZMQ_POLLIN, 0},
                               {NULL, b->stop_fd, ZMQ_POLLIN, 0}};
    int nitems = I_FIXED, i_auth = -1, i_http = -1, i_mon = -1;
    if (b->auth) {
        i_auth = nitems;
        items[nitems++] = (zmq_pollitem_t){zfb_auth_socket(b->auth), 0, ZMQ_POLLIN, 0};
    }
    if (b->httpd) { /* --metrics: served between turns, in this thread (zf_httpd.h) */
        i_http = nitems;
        items[nitems++] = (zmq_pollitem_t){NULL, zf_httpd_fd(b->httpd), ZMQ_POLLIN, 0};
    }
    if (b->conn_mon) {
        i_mon = nitems;
        items[nitems++] = (zmq_pollitem_t){b->conn_mon, 0, ZMQ_POLLIN, 0};
    }
    zf_log_event(ZF_LOG_INFO, "broker_ready", NULL,
                 "ready: clients on %s, workers on %s, heartbeat %u ms x %u", b->cfg.client_ep,
                 b->cfg.worker_ep, b->cfg.heartbeat_ms, b->cfg.liveness);
    b->stop = false; /* one stop (signal or zf_broker_stop) ends one run */
    while (!b->stop) {
        b->poll_wait_ms = poll_timeout(b);
        long wait = b->poll_wait_ms, http_in = b->httpd ? zf_httpd_timeout_ms(b->httpd) : -1;
        if (http_in >= 0 && http_in < wait)
            wait = http_in; /* (not poll_wait_ms: an early turn for HTTP is no stall) */
        if (zmq_poll(items, nitems, wait) < 0 && errno != EINTR) {
            zf_log(ZF_LOG_ERROR, "poll failed: %s", zmq_strerror(errno));
            return -1;
        }
        b->last_turn_ms = zf_now_ms();
        if (items[I_SIG].revents & ZMQ_POLLIN)
            on_signal(b);
        if (i_auth >= 0 && (items[i_auth].revents & ZMQ_POLLIN))
            zfb_auth_serve(b->auth); /* before the messages: a handshake waits on it */
        uint64_t woken;
        if ((items[I_WAKE].revents & ZMQ_POLLIN) && read(b->wake_fd, &woken, sizeof woken) < 0) {
            /* EAGAIN: another turn read it; the held-back results go in flush_turn */
        }
        uint64_t stops;
        if ((items[I_STOP].revents & ZMQ_POLLIN) && read(b->stop_fd, &stops, sizeof stops) > 0) {
            zf_log_event(ZF_LOG_INFO, "broker_stopping", NULL, "stop requested: stopping");
            b->stop = true;
        }
        if (i_mon >= 0 && (items[i_mon].revents & ZMQ_POLLIN))
            zfb_metrics_monitor_read(b->conn_mon, &b->clients_open);
        if (read_batch(b, items[I_BACK].revents & ZMQ_POLLIN, items[I_FRONT].revents & ZMQ_POLLIN) <
            0)
            return -1;
        run_timers(b);
        serve_paced(b);
        flush_turn(b);
        /* after the turn's results: one that ended as its ACCEPTED came due carries it */
        send_due_acks(b, zf_now_ms());
        reap_workers(b);
        /* last: a scrape sees the state the turn left, with its results committed */
        if (b->httpd)
            zf_httpd_serve(b->httpd, (items[i_http].revents & ZMQ_POLLIN) != 0);
    }
    flush_drain(b);
    send_due_acks(b, INT64_MAX); /* stopping: every acceptance owed goes now */
    return 0;
}

/* Only writes the eventfd: safe from any thread and from a signal handler. */
int zf_broker_stop(zf_broker_t *b)
{
    uint64_t one = 1;
    return write(b->stop_fd, &one, sizeof one) == sizeof one ? 0 : -1;
}

/* ------------------------------------------------------------------ life cycle */

/* A quarter of the machine's memory (at least 64 MiB): payloads waiting for workers must
   leave room for the results, the journal's buffers and everything else on the host. */
static uint64_t default_queued_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    uint64_t mem = pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : 4ull << 30;
    return mem / 4 > (64ull << 20) ? mem / 4 : 64ull << 20;
}

void zf_broker_config_defaults(zf_broker_config_t *cfg)
{
    *cfg = (zf_broker_config_t){
        .client_ep = "tcp://127.0.0.1:5555",
        .worker_ep = "tcp://127.0.0.1:5556",
        .heartbeat_ms = 1000,
        .liveness = 3,
        .max_queued = 2000000,
        .max_queued_per_fn = 2000000,
        .max_queued_bytes = default_queued_bytes(),
        .client_buffer_bytes = 64ull << 20,
        .max_payload = 64ull << 20,
        .max_results = 100000,
        .result_store_bytes = 1ull << 30,
        .result_ttl_ms = 3600 * 1000,
        .max_attempts = 3,
        .max_dead = 10000,
        .fsync = ZF_FSYNC_ALWAYS,
        .fsync_thread = true,
        .fsync_interval_ms = 10,
        .result_max_bytes = ZF_RESULT_MAX_FOLLOW,
        .reattach_ms = ZF_REATTACH_DEFAULT,
    };
}

static void *bind_router(zf_broker_t *b, const char *ep, const char *what, const char *domain)
{
    void *s = zmq_socket(b->ctx, ZMQ_ROUTER);
    /* Bounded per-peer queues: a peer that floods without reading its replies costs the
       broker at most this many messages, then replies to it are dropped and counted. */
    int one = 1, zero = 0, hwm = 100000;
    /* A message far over the payload limit disconnects its sender (ZMQ_MAXMSGSIZE) so it
       cannot exhaust memory; one moderately over gets a clear "payload too large". */
    int64_t maxmsg = (int64_t)(b->cfg.max_payload * 2 + (1 << 20));
    zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (b->auth && zfb_auth_secure(b->auth, s, domain) < 0) {
        zmq_close(s);
        return NULL;
    }
    if (zmq_bind(s, ep) < 0) {
        zf_log(ZF_LOG_ERROR, "cannot bind the %s endpoint %s: %s", what, ep, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    if (!b->auth)
        zfb_auth_warn_open(ep, what);
    return s;
}

static int open_signalfd(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP); /* reload the key directories (on_signal) */
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* A job that was running when the broker stopped, with a worker on record that may claim
   it: held (running, no worker) until the claim or the window's end. False when it cannot
   be (re-attach off, or no memory for the entry): then it runs again. */
static bool restore_held(zf_broker_t *b, job_t *j)
{
    if (j->state != ZF_ST_RUNNING || !j->res || !j->res->holder)
        return false;
    if (reattach_window_ms(b) && zfb_reattach_hold(b->reattach, j->id) == 0) {
        j->fn->running++;
        return true;
    }
    free(j->res->holder);
    j->res->holder = NULL;
    j->state = ZF_ST_QUEUED;
    return false;
}

/* Called by the journal's replay for every live job it finds. A finished job keeps its
   finishing time (its result's TTL runs on) and dead letters go back to the dead list; an
   unfinished one is queued again with its deadline armed, or held for its worker's
   re-attach (restore_held). */
static void restore_job(void *arg, job_t *j)
{
    zf_broker_t *b = arg;
    /* a long replay answers /healthz and /readyz ("replaying") as it goes: the requests
       that came during the journal's scan, and then every REPLAY_SERVE_EVERY jobs */
    if (b->httpd && b->restored % REPLAY_SERVE_EVERY == 0)
        zf_httpd_serve(b->httpd, true);
    b->restored++;
    j->qpos = j->tpos = ZF_HEAP_NONE;
    j->acked = true;
    HASH_ADD(hh, b->jobs, id, sizeof j->id, j);
    if (zfb_index_add(b->index, j) < 0)
        zfb_oom("the job index");
    if (zf_state_is_terminal(j->state)) {
        if (!j->finished_ms)
            j->finished_ms = zf_now_ms();
        /* Only a replay makes this state; counted so that stats show results whose output
           this run could not give back (never among the successes). */
        if (j->state == ZF_ST_OUTPUT_LOST) {
            b->c.finished[ZF_ST_OUTPUT_LOST]++;
            j->fn->finished[ZF_ST_OUTPUT_LOST]++;
        }
        store_keep(b, j); /* over a bound, the first loop turn evicts the oldest */
        return;
    }
    if (j->deadline_at)
        if (zf_heap_push(&b->deadlines, j) < 0)
            zfb_oom("a deadline");
    count_unfinished(b, j);
    if (!restore_held(b, j))
        place(b, j, false);
}

static fnq_t *restore_fn(void *arg, const char *name)
{
    zf_str_t s = {name, (uint32_t)strlen(name)};
    return fn_get(arg, s, true);
}

zf_broker_t *zf_broker_new(const zf_broker_config_t *cfg)
{
    zf_broker_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->cfg = *cfg;
    if (!b->cfg.max_queued_per_client)
        b->cfg.max_queued_per_client = b->cfg.max_queued / 2 ? b->cfg.max_queued / 2 : 1;
    if (!b->cfg.max_queued_bytes_per_client)
        b->cfg.max_queued_bytes_per_client = b->cfg.max_queued_bytes / 2;
    b->ack_tail = &b->ack_head;
    b->send_tail = &b->send_head;
    /* the test hook (tests/test_results.c): a window long enough that no timing decides */
    const char *lazy = getenv("ZFLEET_LAZY_ACK_MS");
    b->lazy_ms = lazy && atol(lazy) > 0 ? atol(lazy) : ZF_LAZY_ACK_MS;
    zf_heap_init(&b->deadlines, deadline_less, job_settpos);
    zf_heap_init(&b->scheduled, due_less, job_setqpos);
    b->jitter = (uint64_t)zf_now_us() * 0x9e3779b97f4a7c15ull | 1; /* never 0 (xorshift) */
    zf_heap_init(&b->runs, run_less, run_setpos);
    b->started_ms = b->next_tick_ms = zf_now_ms();
    b->sigfd = open_signalfd();
    b->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    b->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    b->receipts = calloc(1, sizeof *b->receipts);
    if (b->receipts)
        pthread_mutex_init(&b->receipts->mu, NULL);
    b->ctx = zmq_ctx_new();
    b->owners = zfb_owners_new();
    b->reattach = zfb_reattach_new();
    b->index = zfb_index_new();
    b->pacer = zfb_pacer_new();
    if (b->sigfd < 0 || b->wake_fd < 0 || b->stop_fd < 0 || !b->receipts || !b->ctx || !b->owners ||
        !b->reattach || !b->index || !b->pacer)
        goto fail;
    /* before the journal's replay, which can be long: a bad key file is told at once */
    if (cfg->curve_secret && !(b->auth = zfb_auth_new(b->ctx, &b->cfg, b->owners)))
        goto fail;
    if (cfg->metrics_addr && metrics_open(b) < 0)
        goto fail;
    if (cfg->data_dir) {
        zf_journal_opts_t jo = {.policy = cfg->fsync,
                                .interval_ms = cfg->fsync_interval_ms,
                                .result_max_bytes = cfg->result_max_bytes == ZF_RESULT_MAX_FOLLOW
                                                        ? cfg->result_store_bytes
                                                        : cfg->result_max_bytes,
                                .compact_min_bytes = cfg->compact_min_bytes,
                                .owners = b->owners,
                                .fsync_hist = &b->fsync_hist,
                                .wake_fd = b->wake_fd,
                                .flusher = cfg->fsync_thread};
        if (b->cfg.max_payload > ZF_JOURNAL_MAX_PAYLOAD) {
            zf_log(ZF_LOG_WARN,
                   "journal: payloads limited to %llu bytes (a record's length "
                   "has 32 bits)",
                   (unsigned long long)ZF_JOURNAL_MAX_PAYLOAD);
            b->cfg.max_payload = ZF_JOURNAL_MAX_PAYLOAD;
        }
        b->journal = zf_journal_open(cfg->data_dir, &jo);
        if (!b->journal)
            goto fail;
        b->replaying = true;
        int replayed = zf_journal_replay(b->journal, restore_job, restore_fn, b);
        b->replaying = false;
        if (replayed < 0)
            goto fail;
    }
    /* after the journal: it creates the directory and holds its lock */
    b->ids = zf_ids_new(cfg->data_dir);
    if (!b->ids)
        goto fail;
    b->front = bind_router(b, cfg->client_ep, "client", ZFB_DOMAIN_CLIENTS);
    b->back = b->front ? bind_router(b, cfg->worker_ep, "worker", ZFB_DOMAIN_WORKERS) : NULL;
    if (!b->back)
        goto fail;
    if (b->httpd && !(b->conn_mon = zfb_metrics_monitor(b->ctx, b->front)))
        goto fail;
    /* the window runs from when the workers can reach us */
    zfb_reattach_open(b->reattach, zf_now_ms() + reattach_window_ms(b));
    if (zfb_reattach_held(b->reattach))
        zf_log(ZF_LOG_INFO,
               "re-attach: %u job(s) were running; their workers have %u ms to claim them",
               zfb_reattach_held(b->reattach), reattach_window_ms(b));
    return b;
fail:
    zf_broker_destroy(&b);
    return NULL;
}

void zf_broker_destroy(zf_broker_t **self_p)
{
    zf_broker_t *b = *self_p;
    if (!b)
        return;
    *self_p = NULL;
    zf_journal_close(&b->journal);
    zf_ids_destroy(&b->ids);
    while (b->workers)
        worker_remove(b, b->workers, "broker stopping");
    job_t *j, *tmp;
    HASH_ITER(hh, b->jobs, j, tmp)
    job_free(b, j);
    zfb_index_destroy(&b->index);
    zfb_pacer_destroy(&b->pacer);
    fnq_t *f, *ftmp;
    HASH_ITER(hh, b->fns, f, ftmp)
    {
        HASH_DEL(b->fns, f);
        for (int i = 0; i < 3; i++)
            zf_heap_release(&f->q[i]);
        free(f);
    }
    zf_heap_release(&b->deadlines);
    zf_heap_release(&b->scheduled);
    zf_heap_release(&b->runs);
    free(b->lazy);
    if (b->front)
        zmq_close(b->front);
    if (b->back)
        zmq_close(b->back);
    if (b->conn_mon)
        zmq_close(b->conn_mon);
    zf_httpd_destroy(&b->httpd);
    zfb_auth_destroy(&b->auth);
    if (b->ctx)
        zmq_ctx_term(b->ctx); /* after this, ZeroMQ has released every message it held */
    client_t *c, *ctmp;
    HASH_ITER(hh, b->clients, c, ctmp)
    client_free(b, c);
    if (b->receipts) {
        pthread_mutex_destroy(&b->receipts->mu);
        free(b->receipts->ids);
        free(b->receipts);
    }
    if (b->sigfd >= 0)
        close(b->sigfd);
    if (b->wake_fd >= 0)
        close(b->wake_fd);
    if (b->stop_fd >= 0)
        close(b->stop_fd);
    zfb_owners_destroy(&b->owners);
    zfb_reattach_destroy(&b->reattach);
    free(b);
}
