/*  zf_runner — see zf_runner.h. Also the zf_job_* half of the handler API. */
#include "zf_runner.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "../proto/zf_util.h"
#include "../proto/zf_wire.h"
#include "zf_device.h"

#define PROGRESS_EVERY_US 50000

struct zf_runner {
    pthread_t thread;
    void *ctx;
    char ep[128];
    zf_modules_t *mods;
    const zf_device_t *dev;
    _Atomic uint64_t cancel_id;
    _Atomic uint32_t cancel_attempt;
};

struct zf_job {
    zf_runner_t *runner;
    void *pair;
    uint64_t id;
    uint32_t attempt;
    char fn[ZF_FN_MAX + 1];
    const void *data;
    size_t size;
    zmq_msg_t out;
    char error[ZF_TEXT_MAX + 1];
    int64_t last_progress_us;
};

const void *zf_job_data(const zf_job_t *job) { return job->data; }
size_t zf_job_size(const zf_job_t *job) { return job->size; }
const char *zf_job_function(const zf_job_t *job) { return job->fn; }
uint64_t zf_job_id(const zf_job_t *job) { return job->id; }
uint32_t zf_job_attempt(const zf_job_t *job) { return job->attempt; }
const zf_device_t *zf_job_device(const zf_job_t *job) { return job->runner->dev; }

void *zf_job_output_alloc(zf_job_t *job, size_t len)
{
    zmq_msg_close(&job->out);
    if (zmq_msg_init_size(&job->out, len) < 0) {
        zmq_msg_init(&job->out);
        return NULL;
    }
    return zmq_msg_data(&job->out);
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

bool zf_job_cancelled(const zf_job_t *job)
{
    zf_runner_t *r = job->runner;
    return atomic_load(&r->cancel_id) == job->id && atomic_load(&r->cancel_attempt) == job->attempt;
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
    zf_wire_send_blocking(job->pair, &m, NULL);
}

void zf_runner_cancel(zf_runner_t *self, uint64_t id, uint32_t attempt)
{
    atomic_store(&self->cancel_attempt, attempt);
    atomic_store(&self->cancel_id, id);
}

/* Runs one job from its [header][payload] frames and sends [DONE][output] back. */
static void run_one(zf_runner_t *r, void *pair, zf_frames_t *f)
{
    zf_msg_t m;
    int err;
    /* Frames come from our own I/O thread, which checked them. */
    if (f->n != 2 || zf_msg_decode(&m, zmq_msg_data(&f->part[0]), zmq_msg_size(&f->part[0]),
                                   &err, NULL) < 0)
        return;
    zf_job_t job = {.runner = r, .pair = pair, .id = m.id, .attempt = m.attempt,
                    .data = zmq_msg_data(&f->part[1]), .size = zmq_msg_size(&f->part[1])};
    zf_str_copy(job.fn, sizeof job.fn, m.fn);
    zmq_msg_init(&job.out);
    void *state;
    zf_run_fn run = zf_modules_find(r->mods, job.fn, &state);
    int64_t t0 = zf_now_us();
    int rc = run ? run(state, &job) : zf_job_fail(&job, "no function %s on this worker", job.fn);
    int64_t t1 = zf_now_us();
    zf_msg_t done;
    zf_msg_init(&done, ZF_CMD_DONE);
    zf_msg_set_u64(&done, ZF_F_ID, job.id);
    zf_msg_set_u64(&done, ZF_F_ATTEMPT, job.attempt);
    zf_msg_set_u64(&done, ZF_F_DURATION, (uint64_t)(t1 - t0));
    if (rc == 0) {
        zf_msg_set_u64(&done, ZF_F_STATUS, ZF_ST_SUCCEEDED);
    } else {
        zf_msg_set_u64(&done, ZF_F_STATUS, zf_job_cancelled(&job) ? ZF_ST_CANCELLED : ZF_ST_FAILED);
        zf_msg_set_str(&done, ZF_F_TEXT, job.error[0] ? job.error : "handler failed");
        zmq_msg_close(&job.out);
        zmq_msg_init(&job.out);
    }
    if (zf_wire_send_blocking(pair, &done, &job.out) < 0)
        zmq_msg_close(&job.out);
}

static void *thread_main(void *arg)
{
    zf_runner_t *r = arg;
    void *pair = zmq_socket(r->ctx, ZMQ_PAIR);
    zmq_connect(pair, r->ep);
    char err[512] = "";
    if (zf_device_bind_thread(r->dev, err, sizeof err) == 0)
        zf_modules_init(r->mods, r->dev, err, sizeof err);
    zmq_send(pair, err, strlen(err), 0);
    if (err[0]) {
        zmq_close(pair);
        return NULL;
    }
    for (;;) {
        zf_frames_t f;
        if (zf_wire_recv(pair, &f, 0) < 0)
            break;
        bool stop = f.n == 1 && zmq_msg_size(&f.part[0]) == 0;
        if (!stop)
            run_one(r, pair, &f);
        zf_frames_close(&f);
        if (stop)
            break;
    }
    zmq_close(pair);
    return NULL;
}

zf_runner_t *zf_runner_new(void *ctx, const char *ep, zf_modules_t *mods, const zf_device_t *dev)
{
    zf_runner_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->ctx = ctx;
    snprintf(r->ep, sizeof r->ep, "%s", ep);
    r->mods = mods;
    r->dev = dev;
    if (pthread_create(&r->thread, NULL, thread_main, r) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

void zf_runner_destroy(zf_runner_t **self_p)
{
    zf_runner_t *r = *self_p;
    if (!r)
        return;
    *self_p = NULL;
    pthread_join(r->thread, NULL);
    free(r);
}
