/*  zf_runner — see zf_runner.h. Also the zf_job_* half of the handler API. */
#include "zf_runner.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "../common/zf_util.h"
#include "../proto/zf_wire.h"
#include "zf_crash.h"
#include "zf_device.h"

#define PROGRESS_EVERY_US 50000
#define BATCH_MAX 256      /* zf_registry's limit on max_batch */
#define RECENT_FNS 8       /* functions whose last arrival the runner remembers (the idle rule) */
#define BURST_GRACE_US 200 /* a job after a quiet spell waits this long for a burst's mates */
/* A result is held behind the next job (zf_runner_hooks_t.hold) only after a run of
   HOLD_MIN_US or more, and for 1/HOLD_SHARE of its run at most, HOLD_MAX_US at most: 20-200
   µs, enough for the next job to get going (a few µs for a C handler, tens for Python). */
#define HOLD_MIN_US 1000
#define HOLD_SHARE 50
#define HOLD_MAX_US 200

typedef struct rjob {
    uint64_t id;
    uint32_t attempt, timeout_ms;
    int64_t arrived_us; /* when pushed: a batch waits for mates until its oldest's + delay */
    int64_t quiet_us;   /* how long before it the last job of its function came (INT64_MAX:
                           none remembered): the batch rule's idle case */
    char fn[ZF_FN_MAX + 1];
    zmq_msg_t payload;
    struct rjob *next;
} rjob_t;

struct zf_runner {
    pthread_t thread;
    void *ctx;
    char ep[128];
    zf_registry_t *mods;
    const zf_device_t *dev;
    zf_runner_hooks_t hooks;
    int wake_fd; /* eventfd: the idle hook's wake-up (zf_runner_hooks_t) */
    _Atomic uint64_t cancel_id;
    _Atomic uint32_t cancel_attempt;
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    rjob_t *head, **tail;
    bool waiting, stop;
    bool idle;   /* in the idle hook: a push from another thread writes wake_fd */
    bool kicked; /* wake_fd was written and is not read yet */
    zf_running_t running;
    /* the batch in hand (issue 17): running is batch[0]; the others are started too (not
       takeable), and are listed by zf_runner_each so that a READY claims them */
    rjob_t *batch[BATCH_MAX];
    size_t nbatch;
    struct {
        char fn[ZF_FN_MAX + 1];
        int64_t at_us;
    } recent[RECENT_FNS]; /* the last arrival of each, replaced round-robin */
    unsigned recent_next;
};

struct zf_job {
    zf_runner_t *runner;
    void *pair;
    uint64_t id;
    uint32_t attempt;
    char fn[ZF_FN_MAX + 1];
    const void *data;
    size_t size;
    zmq_msg_t *in; /* the payload frame data/size point into */
    zmq_msg_t out;
    char error[ZF_TEXT_MAX + 1];
    int64_t last_progress_us;
    bool permanent; /* zf_job_fail_permanent: the broker must not retry it */
};

const void *zf_job_data(const zf_job_t *job)
{
    return job->data;
}
size_t zf_job_size(const zf_job_t *job)
{
    return job->size;
}
const char *zf_job_function(const zf_job_t *job)
{
    return job->fn;
}
uint64_t zf_job_id(const zf_job_t *job)
{
    return job->id;
}
uint32_t zf_job_attempt(const zf_job_t *job)
{
    return job->attempt;
}
const zf_device_t *zf_job_device(const zf_job_t *job)
{
    return job->runner->dev;
}

void *zf_job_output_alloc(zf_job_t *job, size_t len)
{
    zmq_msg_close(&job->out);
    if (zmq_msg_init_size(&job->out, len) < 0) {
        zmq_msg_init(&job->out);
        return NULL;
    }
    return zmq_msg_data(&job->out);
}

int zf_job_output_input(zf_job_t *job)
{
    zmq_msg_close(&job->out);
    zmq_msg_init(&job->out);
    /* shares the input's buffer (refcounted), or copies it when it is a small inline one */
    return zmq_msg_copy(&job->out, job->in) == 0 ? 0 : -1;
}

int zf_runner_job_input(const zf_job_t *job, zmq_msg_t *out)
{
    zmq_msg_init(out);
    return zmq_msg_copy(out, job->in) == 0 ? 0 : -1;
}

void zf_runner_job_output(zf_job_t *job, zmq_msg_t *msg)
{
    zmq_msg_close(&job->out);
    zmq_msg_init(&job->out);
    zmq_msg_move(&job->out, msg);
}

int zf_job_output(zf_job_t *job, const void *data, size_t len)
{
    void *p = zf_job_output_alloc(job, len);
    if (!p && len)
        return -1;
    if (len)
        memcpy(p, data, len);
    return 0;
}

int zf_job_fail(zf_job_t *job, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(job->error, sizeof job->error, fmt, ap);
    va_end(ap);
    return -1;
}

int zf_job_fail_permanent(zf_job_t *job, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(job->error, sizeof job->error, fmt, ap);
    va_end(ap);
    job->permanent = true;
    return -1;
}

bool zf_job_cancelled(const zf_job_t *job)
{
    zf_runner_t *r = job->runner;
    return atomic_load(&r->cancel_id) == job->id && atomic_load(&r->cancel_attempt) == job->attempt;
}

/* Sends to the broker directly, or through the I/O thread when that cannot be done now.
   Consumes payload (may be NULL) either way. */
static void to_broker(zf_runner_t *r, void *pair, const zf_msg_t *m, zmq_msg_t *payload)
{
    if (r->hooks.send && r->hooks.send(r->hooks.arg, m, payload) == 0)
        return;
    if (zf_wire_send_blocking(pair, m, payload) < 0 && payload)
        zmq_msg_close(payload);
}

void zf_job_progress(zf_job_t *job, double fraction, const char *text)
{
    int64_t now = zf_now_us();
    if (now - job->last_progress_us < PROGRESS_EVERY_US && fraction < 1.0)
        return;
    job->last_progress_us = now;
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_WPROGRESS);
    zf_msg_set_u64(&m, ZF_F_ID, job->id);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, job->attempt);
    zf_msg_set_progress(&m, fraction);
    if (text)
        zf_msg_set_str(&m, ZF_F_TEXT, text);
    to_broker(job->runner, job->pair, &m, NULL);
}

void zf_runner_cancel(zf_runner_t *self, uint64_t id, uint32_t attempt)
{
    atomic_store(&self->cancel_attempt, attempt);
    atomic_store(&self->cancel_id, id);
}

/* Whether the DONE of a run of run_us is left to the hold hook, the next job being queued:
   a result sent at once wakes the I/O threads of this process and the broker's, and on a
   busy machine they run on this core before the next job starts; held, they run while it
   does. For a job whose time is a device's or a clock's (a GPU kernel, a wait), the gap
   between jobs is what the fleet loses; a CPU-bound job loses the same CPU either way. */
static bool held(zf_runner_t *r, const zf_msg_t *done, zmq_msg_t *out, int64_t run_us)
{
    if (!r->hooks.hold || run_us < HOLD_MIN_US)
        return false;
    int64_t delay_us = run_us / HOLD_SHARE;
    if (delay_us > HOLD_MAX_US)
        delay_us = HOLD_MAX_US;
    return r->hooks.hold(r->hooks.arg, done, out, (uint32_t)delay_us) == 0;
}

/* Runs one job and sends [DONE][output] back. */
static void run_one(zf_runner_t *r, void *pair, rjob_t *q)
{
    zf_job_t job = {.runner = r,
                    .pair = pair,
                    .id = q->id,
                    .attempt = q->attempt,
                    .data = zmq_msg_data(&q->payload),
                    .size = zmq_msg_size(&q->payload),
                    .in = &q->payload};
    memcpy(job.fn, q->fn, sizeof job.fn);
    zmq_msg_init(&job.out);
    void *state;
    zf_run_fn run = zf_registry_find(r->mods, job.fn, &state);
    int64_t t0 = zf_now_us();
    /* the first report comes PROGRESS_EVERY_US into the run, not at its start: a job shorter
       than that costs no progress messages (the broker already shows it running) */
    job.last_progress_us = t0;
    int rc;
    if (run) {
        zf_crash_enter(zf_registry_label(r->mods, job.fn), "run", job.fn, job.id);
        rc = run(state, &job);
        zf_crash_leave();
    } else {
        rc = zf_job_fail(&job, "no function %s on this worker", job.fn);
    }
    int64_t t1 = zf_now_us();
    /* not running any more before the DONE is seen, so no timeout fires on a finished job */
    pthread_mutex_lock(&r->mu);
    r->running.active = false;
    bool next = r->head && !r->stop; /* (a recall may take it: the hook's owner copes) */
    pthread_mutex_unlock(&r->mu);
    zf_msg_t done;
    zf_msg_init(&done, ZF_CMD_DONE);
    zf_msg_set_u64(&done, ZF_F_ID, job.id);
    zf_msg_set_u64(&done, ZF_F_ATTEMPT, job.attempt);
    zf_msg_set_u64(&done, ZF_F_DURATION, (uint64_t)(t1 - t0));
    zf_msg_set_u64(&done, ZF_F_BATCH, 1);
    if (rc == 0) {
        zf_msg_set_u64(&done, ZF_F_STATUS, ZF_ST_SUCCEEDED);
    } else {
        zf_msg_set_u64(&done, ZF_F_STATUS, zf_job_cancelled(&job) ? ZF_ST_CANCELLED : ZF_ST_FAILED);
        zf_msg_set_str(&done, ZF_F_TEXT, job.error[0] ? job.error : "handler failed");
        if (job.permanent)
            zf_msg_set_u64(&done, ZF_F_FLAGS, ZF_FLAG_PERMANENT);
        zmq_msg_close(&job.out);
        zmq_msg_init(&job.out);
    }
    if (next && held(r, &done, &job.out, t1 - t0))
        return;
    to_broker(r, pair, &done, &job.out);
}

static void rjob_free(rjob_t *q)
{
    zmq_msg_close(&q->payload);
    free(q);
}

/* ------------------------------------------------------------------ batches (issue 17)

   The batch rule: the job the runner pulled next (the oldest of the queue) is the batch's
   first; every queued job of the same function joins it, in queue order, up to max_batch;
   while it is short, the runner waits for more until the first job has waited max_delay
   since it reached the worker, then runs what it has. So a job waits at most max_delay
   for mates, a full batch runs at once, and jobs of other functions keep their place in
   the queue (they run after this batch, as they would after a single job).

   The idle case: a job that came after a quiet spell (no job of its function reached the
   worker in the max_delay before it) waits only BURST_GRACE_US (200 µs, or max_delay if
   shorter) for mates; if none came by then, it runs alone at once. At low load a lone job
   so pays no max_delay (nothing else is coming: its function was idle), and the first job
   of a burst still gathers the burst's others, which its prefetch brings within
   microseconds; once jobs come closer than max_delay apart, every batch waits for mates as
   above.

   The poison rule: a job on its second or later attempt runs alone (a batch of 1, without
   waiting), and never joins a batch. A worker killed mid-batch costs every job of the
   batch an attempt (the broker requeues them all, attempt + 1); on the retry each runs
   alone, so a job that kills its worker takes down only itself from then on and its
   batch-mates succeed on their second attempt instead of following it to `lost`. The
   attempt number is the signal because the worker has it for every job and no broker
   state is needed; a retry for another cause (a timeout, a restart) also runs alone once,
   which costs throughput on a path that is rare, never correctness. */
static bool batchable(const rjob_t *q)
{
    return q->attempt <= 1;
}

/* Moves the queued jobs of fn into r->batch until it holds max. Under r->mu. */
static void gather(zf_runner_t *r, const char *fn, size_t max)
{
    rjob_t **pp = &r->head;
    while (*pp && r->nbatch < max) {
        rjob_t *q = *pp;
        if (strcmp(q->fn, fn) || !batchable(q)) {
            pp = &q->next;
            continue;
        }
        *pp = q->next;
        r->batch[r->nbatch++] = q;
    }
    /* the tail is the last link still in the list */
    r->tail = &r->head;
    while (*r->tail)
        r->tail = &(*r->tail)->next;
}

/* Forms the batch that starts with first (already marked running). Returns its size. */
static size_t form_batch(zf_runner_t *r, rjob_t *first, size_t max, uint32_t delay_us)
{
    int64_t deadline_us = first->arrived_us + delay_us;
    if (first->quiet_us > (int64_t)delay_us && delay_us > BURST_GRACE_US)
        deadline_us = first->arrived_us + BURST_GRACE_US; /* (until a mate comes: below) */
    pthread_mutex_lock(&r->mu);
    r->batch[0] = first;
    r->nbatch = 1;
    if (!batchable(first))
        max = 1;
    for (;;) {
        gather(r, first->fn, max);
        if (r->nbatch > 1)
            deadline_us = first->arrived_us + delay_us; /* mates: not idle after all */
        if (r->nbatch >= max || r->stop || zf_now_us() >= deadline_us)
            break;
        struct timespec ts = {.tv_sec = deadline_us / 1000000,
                              .tv_nsec = (deadline_us % 1000000) * 1000};
        r->waiting = true; /* a push wakes us */
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        r->waiting = false;
    }
    size_t n = r->nbatch;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* The DONE of one job of a batch of n, given the handler's rc for the whole batch. */
static void batch_done(zf_runner_t *r, void *pair, zf_job_t *job, int rc, const char *batch_err,
                       size_t n, int64_t duration_us)
{
    zf_msg_t done;
    zf_msg_init(&done, ZF_CMD_DONE);
    zf_msg_set_u64(&done, ZF_F_ID, job->id);
    zf_msg_set_u64(&done, ZF_F_ATTEMPT, job->attempt);
    zf_msg_set_u64(&done, ZF_F_DURATION, (uint64_t)duration_us);
    zf_msg_set_u64(&done, ZF_F_BATCH, n);
    uint32_t st = ZF_ST_SUCCEEDED;
    if (zf_job_cancelled(job))
        st = ZF_ST_CANCELLED; /* dropped from the batch's result, whatever the handler did */
    else if (job->error[0] || rc != 0)
        st = ZF_ST_FAILED;
    zf_msg_set_u64(&done, ZF_F_STATUS, st);
    if (st != ZF_ST_SUCCEEDED) {
        const char *text = job->error[0] ? job->error : batch_err;
        zf_msg_set_str(&done, ZF_F_TEXT, st == ZF_ST_CANCELLED ? "cancelled" : text);
        zmq_msg_close(&job->out);
        zmq_msg_init(&job->out);
    }
    to_broker(r, pair, &done, &job->out);
}

/* Runs the batch that starts with first, sends one DONE per job, frees the jobs. */
static void run_batch(zf_runner_t *r, void *pair, rjob_t *first, zf_run_batch_fn fn, void *state,
                      uint32_t max, uint32_t delay_us)
{
    size_t n = form_batch(r, first, max, delay_us);
    zf_job_t *jobs = calloc(n, sizeof *jobs);
    zf_job_t **ptrs = calloc(n, sizeof *ptrs);
    int64_t t0 = zf_now_us();
    for (size_t i = 0; jobs && ptrs && i < n; i++) {
        rjob_t *q = r->batch[i];
        jobs[i] = (zf_job_t){.runner = r,
                             .pair = pair,
                             .id = q->id,
                             .attempt = q->attempt,
                             .data = zmq_msg_data(&q->payload),
                             .size = zmq_msg_size(&q->payload),
                             .in = &q->payload,
                             .last_progress_us = t0};
        memcpy(jobs[i].fn, q->fn, sizeof jobs[i].fn);
        zmq_msg_init(&jobs[i].out);
        ptrs[i] = &jobs[i];
    }
    int rc = -1;
    const char *batch_err = "out of memory forming a batch";
    if (jobs && ptrs) {
        zf_crash_enter(zf_registry_label(r->mods, first->fn), "run_batch", first->fn, first->id);
        rc = fn(state, ptrs, n);
        zf_crash_leave();
        batch_err = "handler failed";
        for (size_t i = 0; rc != 0 && i < n; i++)
            if (jobs[i].error[0]) {
                batch_err = jobs[i].error; /* the batch's message: the first one given */
                break;
            }
    }
    int64_t t1 = zf_now_us();
    /* not running any more, as run_one does before its DONE: from here each job is in the
       outbox once its DONE is out (r->batch[] stays ours: only this thread writes it) */
    pthread_mutex_lock(&r->mu);
    r->running.active = false;
    r->nbatch = 0;
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < n; i++) {
        if (jobs && ptrs) {
            batch_done(r, pair, &jobs[i], rc, batch_err, n, t1 - t0);
        } else {
            zf_job_t lone = {.runner = r, .id = r->batch[i]->id, .attempt = r->batch[i]->attempt};
            zmq_msg_init(&lone.out);
            batch_done(r, pair, &lone, -1, batch_err, n, 0);
        }
    }
    for (size_t i = 0; i < n; i++)
        rjob_free(r->batch[i]);
    free(jobs);
    free(ptrs);
}

/* The runner whose thread this is (NULL on other threads). */
static _Thread_local zf_runner_t *on_thread;

/* Writes wake_fd if the runner is in its idle hook and not yet woken. Under r->mu. */
static void kick(zf_runner_t *r)
{
    uint64_t one = 1;
    if (r->idle && !r->kicked && write(r->wake_fd, &one, sizeof one) == sizeof one)
        r->kicked = true;
}

/* Waits for a job: in the idle hook when there is one, else on the condition. Under r->mu,
   which the hook is called without. *idled tells whether the hook was called. */
static void wait_for_job(zf_runner_t *r, bool *idled)
{
    if (!r->hooks.idle) {
        r->waiting = true;
        pthread_cond_wait(&r->cv, &r->mu);
        r->waiting = false;
        return;
    }
    r->idle = true;
    pthread_mutex_unlock(&r->mu);
    r->hooks.idle(r->hooks.arg, r->wake_fd);
    pthread_mutex_lock(&r->mu);
    r->idle = false;
    uint64_t n;
    if (r->kicked && read(r->wake_fd, &n, sizeof n) < 0) {
        /* (nonblocking: a kick already read leaves nothing to do) */
    }
    r->kicked = false;
    *idled = true;
}

/* The next job, marked running; NULL when stopping. *idled: whether the runner waited in
   its idle hook for it. */
static rjob_t *next_job(zf_runner_t *r, bool *idled)
{
    *idled = false;
    pthread_mutex_lock(&r->mu);
    while (!r->head && !r->stop)
        wait_for_job(r, idled);
    rjob_t *q = r->stop ? NULL : r->head;
    if (q) {
        r->head = q->next;
        if (!r->head)
            r->tail = &r->head;
        r->running = (zf_running_t){true, q->id, q->attempt, q->timeout_ms, zf_now_ms()};
    }
    pthread_mutex_unlock(&r->mu);
    return q;
}

static void *thread_main(void *arg)
{
    zf_runner_t *r = arg;
    on_thread = r;
    void *pair = zmq_socket(r->ctx, ZMQ_PAIR);
    zmq_connect(pair, r->ep);
    char err[512] = "";
    if (zf_device_bind_thread(r->dev, err, sizeof err) == 0)
        zf_registry_init(r->mods, r->dev, err, sizeof err);
    if (err[0]) /* the modules that did start stop here, on their own thread */
        zf_registry_fini(r->mods);
    zmq_send(pair, err, strlen(err), 0);
    if (err[0]) {
        zmq_close(pair);
        return NULL;
    }
    rjob_t *q;
    bool idled;
    while ((q = next_job(r, &idled))) {
        void *state = NULL;
        uint32_t max = 1, delay_us = 0;
        zf_run_batch_fn batch = zf_registry_batch(r->mods, q->fn, &state, &max, &delay_us);
        /* a batch waits for mates, which only a watched socket brings */
        if (idled && r->hooks.busy)
            r->hooks.busy(r->hooks.arg, batch != NULL);
        if (q->timeout_ms && r->hooks.started)
            r->hooks.started(r->hooks.arg, q->timeout_ms);
        else if (q->timeout_ms)
            zmq_send(pair, "S", 1, 0); /* the I/O thread arms the run timeout */
        if (batch) {
            run_batch(r, pair, q, batch, state, max, delay_us); /* frees q */
            continue;
        }
        run_one(r, pair, q);
        rjob_free(q);
    }
    /* fini on the thread that ran init and the jobs: a CUDA context, or an interpreter's
       thread state, belongs to it */
    zf_registry_fini(r->mods);
    zmq_close(pair);
    return NULL;
}

zf_runner_t *zf_runner_new(void *ctx, const char *ep, zf_registry_t *mods, const zf_device_t *dev,
                           const zf_runner_hooks_t *hooks)
{
    zf_runner_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->wake_fd < 0) {
        free(r);
        return NULL;
    }
    r->ctx = ctx;
    snprintf(r->ep, sizeof r->ep, "%s", ep);
    r->mods = mods;
    r->dev = dev;
    if (hooks)
        r->hooks = *hooks;
    r->tail = &r->head;
    pthread_mutex_init(&r->mu, NULL);
    /* monotonic: a batch's wait for mates (form_batch) is timed against zf_now_us */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&r->thread, NULL, thread_main, r) != 0) {
        close(r->wake_fd);
        free(r);
        return NULL;
    }
    return r;
}

void zf_runner_wake(zf_runner_t *r)
{
    pthread_mutex_lock(&r->mu);
    kick(r);
    pthread_mutex_unlock(&r->mu);
}

/* A bounded copy of a name, cut to fit (snprintf "%s" cost ~600 instructions a job). */
static void copy_name(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* Remembers that a job of fn arrived at now_us; returns how long since the last one did
   (INT64_MAX when none is remembered). Under r->mu. */
static int64_t note_arrival(zf_runner_t *r, const char *fn, int64_t now_us)
{
    for (unsigned i = 0; i < RECENT_FNS; i++) {
        if (strcmp(r->recent[i].fn, fn))
            continue;
        int64_t quiet = now_us - r->recent[i].at_us;
        r->recent[i].at_us = now_us;
        return quiet;
    }
    unsigned k = r->recent_next++ % RECENT_FNS;
    copy_name(r->recent[k].fn, sizeof r->recent[k].fn, fn);
    r->recent[k].at_us = now_us;
    return INT64_MAX;
}

int zf_runner_push(zf_runner_t *r, uint64_t id, uint32_t attempt, const char *fn,
                   uint32_t timeout_ms, zmq_msg_t *payload)
{
    rjob_t *q = malloc(sizeof *q);
    if (!q)
        return -1;
    q->id = id;
    q->attempt = attempt;
    q->timeout_ms = timeout_ms;
    q->arrived_us = zf_now_us();
    copy_name(q->fn, sizeof q->fn, fn);
    zmq_msg_init(&q->payload);
    zmq_msg_move(&q->payload, payload);
    q->next = NULL;
    pthread_mutex_lock(&r->mu);
    q->quiet_us = note_arrival(r, q->fn, q->arrived_us);
    *r->tail = q;
    r->tail = &q->next;
    if (r->waiting)
        pthread_cond_signal(&r->cv);
    /* (the runner's own push, from its idle hook, needs no wake-up: it looks when it returns) */
    if (on_thread != r)
        kick(r);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

bool zf_runner_take(zf_runner_t *r, uint64_t id, uint32_t attempt)
{
    rjob_t *found = NULL;
    pthread_mutex_lock(&r->mu);
    for (rjob_t **pp = &r->head; *pp; pp = &(*pp)->next) {
        if ((*pp)->id != id || (*pp)->attempt != attempt)
            continue;
        found = *pp;
        *pp = found->next;
        if (!*pp)
            r->tail = pp;
        break;
    }
    pthread_mutex_unlock(&r->mu);
    if (found)
        rjob_free(found);
    return found != NULL;
}

void zf_runner_take_all(zf_runner_t *r, void (*fn)(void *, uint64_t, uint32_t), void *arg)
{
    pthread_mutex_lock(&r->mu);
    rjob_t *list = r->head;
    r->head = NULL;
    r->tail = &r->head;
    pthread_mutex_unlock(&r->mu);
    while (list) {
        rjob_t *q = list;
        list = q->next;
        if (fn)
            fn(arg, q->id, q->attempt);
        rjob_free(q);
    }
}

void zf_runner_each(zf_runner_t *r, void (*fn)(void *, uint64_t, uint32_t), void *arg)
{
    pthread_mutex_lock(&r->mu);
    for (rjob_t *q = r->head; q; q = q->next)
        fn(arg, q->id, q->attempt);
    for (size_t i = 1; i < r->nbatch; i++) /* batch[0] is the running job */
        fn(arg, r->batch[i]->id, r->batch[i]->attempt);
    pthread_mutex_unlock(&r->mu);
}

zf_running_t zf_runner_running(zf_runner_t *r)
{
    pthread_mutex_lock(&r->mu);
    zf_running_t now = r->running;
    pthread_mutex_unlock(&r->mu);
    return now;
}

void zf_runner_destroy(zf_runner_t **self_p)
{
    zf_runner_t *r = *self_p;
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cv);
    kick(r);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    *self_p = NULL; /* not before: the hooks may use it until the thread has ended */
    zf_runner_take_all(r, NULL, NULL);
    close(r->wake_fd);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
