/*  zf_job — see zf_job.h.

    Invariants kept by this file:
    - a job's payload is in exactly one place: inline_payload (big NULL) or its own frame
      (big), and plen is its size; plen 0 once dropped;
    - a waiter is named at most once per job (waiter or more[]) and holds one reference;
    - the error text stays valid UTF-8 and under ZF_TEXT_MAX bytes with its terminator.
*/
#include "zf_job.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/zf_util.h"
#include "zf_heap.h"
#include "zf_pipeline.h"
#include "zf_state.h"

void zfb_oom(const char *what)
{
    zf_log(ZF_LOG_ERROR, "out of memory for %s: stopping (a restart replays the journal)", what);
    abort();
}

static job_t *job_alloc(size_t inline_room)
{
    job_t *j = calloc(1, sizeof *j + inline_room);
    if (j)
        j->qpos = j->tpos = ZF_HEAP_NONE;
    return j;
}

/* Moves frame into the job's own frame; the job must have none. */
static int take_frame(job_t *j, zmq_msg_t *frame)
{
    assert(!j->big);
    j->big = malloc(sizeof *j->big);
    if (!j->big)
        return -1;
    zmq_msg_init(j->big);
    zmq_msg_move(j->big, frame);
    j->plen = (uint32_t)zmq_msg_size(j->big);
    return 0;
}

job_t *zfb_job_new(const void *payload, size_t n)
{
    size_t inl = n <= ZF_JOB_INLINE_MAX ? n : 0;
    job_t *j = job_alloc(inl);
    if (!j)
        return NULL;
    if (inl) {
        memcpy(j->inline_payload, payload, inl);
        j->plen = (uint32_t)inl;
    } else if (n && zfb_job_copy_payload(j, payload, n) < 0) {
        free(j);
        return NULL;
    }
    return j;
}

job_t *zfb_job_new_frame(zmq_msg_t *frame)
{
    size_t n = zmq_msg_size(frame);
    if (n <= ZF_JOB_INLINE_MAX)
        return zfb_job_new(zmq_msg_data(frame), n);
    job_t *j = job_alloc(0);
    if (j && take_frame(j, frame) < 0) {
        free(j);
        return NULL;
    }
    return j;
}

void zfb_job_free(job_t **jp)
{
    job_t *j = *jp;
    if (!j)
        return;
    *jp = NULL;
    assert(!j->waiter && (!j->res || !j->res->nmore));
    zfb_job_drop_payload(j);
    zfb_job_drop_result(j);
    free(j->tags);
    free(j->pipe);
    free(j);
}

void zfb_job_drop_payload(job_t *j)
{
    if (j->big) {
        zmq_msg_close(j->big);
        free(j->big);
        j->big = NULL;
    }
    j->plen = 0;
}

int zfb_job_copy_payload(job_t *j, const void *p, size_t n)
{
    assert(j->plen == 0 && !j->big);
    zmq_msg_t frame;
    if (zmq_msg_init_size(&frame, n) < 0)
        return -1;
    memcpy(zmq_msg_data(&frame), p, n);
    if (take_frame(j, &frame) < 0) {
        zmq_msg_close(&frame);
        return -1;
    }
    return 0;
}

result_t *zfb_job_res(job_t *j)
{
    if (!j->res && (j->res = calloc(1, sizeof *j->res)))
        zmq_msg_init(&j->res->output);
    return j->res;
}

void zfb_job_drop_result(job_t *j)
{
    result_t *r = j->res;
    if (!r)
        return;
    assert(!r->nmore);
    j->res = NULL;
    zmq_msg_close(&r->output);
    free(r->error);
    free(r->progress_text);
    free(r->more);
    free(r->holder);
    zfb_winfo_release(&r->ran_on);
    free(r);
}

void zfb_winfo_release(winfo_t **p)
{
    if (*p && --(*p)->refs == 0)
        free(*p);
    *p = NULL;
}

static result_t *job_res(job_t *j)
{
    result_t *r = zfb_job_res(j);
    if (!r)
        zfb_oom("a result record");
    return r;
}

void zfb_job_note(job_t *j, const char *fmt, ...)
{
    char line[ZF_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    line[zf_utf8_prefix(line, strlen(line))] = 0; /* a cut text stays UTF-8 (DEAD, RESULT) */
    result_t *r = job_res(j);
    size_t old = r->error ? strlen(r->error) : 0;
    if (old + strlen(line) + 3 > ZF_TEXT_MAX)
        return; /* keep the first causes; the rest would overflow the wire field */
    char *e = realloc(r->error, old + strlen(line) + 3);
    if (!e)
        zfb_oom("a job's causes");
    if (old)
        strcpy(e + old, "; ");
    else
        e[0] = 0;
    strcat(e, line);
    r->error = e;
}

bool zfb_job_has_waiter(const job_t *j, const client_t *c)
{
    if (j->waiter == c)
        return true;
    for (uint32_t i = 0; j->res && i < j->res->nmore; i++)
        if (j->res->more[i] == c)
            return true;
    return false;
}

void zfb_job_add_waiter(job_t *j, client_t *c)
{
    if (zfb_job_has_waiter(j, c))
        return;
    if (!j->waiter) {
        j->waiter = c;
    } else {
        result_t *r = job_res(j);
        client_t **m = realloc(r->more, (r->nmore + 1) * sizeof *m);
        if (!m)
            zfb_oom("a waiter");
        r->more = m;
        r->more[r->nmore++] = c;
    }
    c->refs++;
}

void zfb_job_clear_waiters(job_t *j, void (*release)(void *arg, client_t **c), void *arg)
{
    release(arg, &j->waiter);
    if (!j->res)
        return;
    for (uint32_t i = 0; i < j->res->nmore; i++)
        release(arg, &j->res->more[i]);
    free(j->res->more);
    j->res->more = NULL;
    j->res->nmore = 0;
}

int zfb_job_enter_step(job_t *j)
{
    const zfb_pipe_t *p = j->pipe;
    assert(p && p->cur < p->n);
    if (!p->opts)
        return 0;
    j->timeout_ms = p->timeout_ms[p->cur];
    if (!p->retries[p->cur] && !j->res)
        return 0; /* no retries to count: the job stays without a result record */
    result_t *r = zfb_job_res(j);
    if (!r)
        return -1;
    r->retries = p->retries[p->cur];
    r->retried = 0;
    return 0;
}
