/*  zf_reattach — see zf_reattach.h.

    Invariants:
    - an id is in `held` exactly while its job is restored running with no worker
      (job_t.worker NULL, res->holder set) and the window has not closed: broker.c releases
      it when the job is re-attached or ends (a cancel), and the close hands back the rest;
    - a claim is accepted only while the window is open, for a held job, with the lease
      number the journal last started, from the worker the journal recorded: the same
      READY session and name, and under CURVE the same key. A session is the worker
      process's own random 64-bit number: a lying worker cannot guess another's.
*/
#include "zf_reattach.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

typedef struct {
    uint64_t id;
    UT_hash_handle hh;
} held_t;

struct zfb_reattach {
    held_t *held;
    int64_t until_ms; /* 0: not open */
    bool closed;
};

zfb_reattach_t *zfb_reattach_new(void)
{
    return calloc(1, sizeof(zfb_reattach_t));
}

void zfb_reattach_destroy(zfb_reattach_t **self_p)
{
    zfb_reattach_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    held_t *h, *tmp;
    HASH_ITER(hh, self->held, h, tmp)
    {
        HASH_DEL(self->held, h);
        free(h);
    }
    free(self);
}

int zfb_reattach_hold(zfb_reattach_t *self, uint64_t id)
{
    held_t *h;
    HASH_FIND(hh, self->held, &id, sizeof id, h);
    if (h)
        return 0;
    if (!(h = calloc(1, sizeof *h)))
        return -1;
    h->id = id;
    HASH_ADD(hh, self->held, id, sizeof h->id, h);
    return 0;
}

uint32_t zfb_reattach_held(const zfb_reattach_t *self)
{
    return HASH_COUNT(self->held);
}

void zfb_reattach_open(zfb_reattach_t *self, int64_t until_ms)
{
    if (self->held && !self->closed)
        self->until_ms = until_ms;
}

bool zfb_reattach_is_open(const zfb_reattach_t *self, int64_t now_ms)
{
    (void)now_ms; /* open until closed: the close runs from the loop's timers */
    return self->until_ms && !self->closed;
}

long zfb_reattach_due_ms(const zfb_reattach_t *self, int64_t now_ms)
{
    if (!zfb_reattach_is_open(self, now_ms))
        return -1;
    return self->until_ms <= now_ms ? 0 : (long)(self->until_ms - now_ms);
}

zfb_claim_t zfb_reattach_check(const zfb_reattach_t *self, const job_t *j, uint32_t attempt,
                               const wrk_t *w, int64_t now_ms)
{
    if (!w->session)
        return ZFB_CLAIM_NOSESSION;
    if (!zfb_reattach_is_open(self, now_ms))
        return ZFB_CLAIM_CLOSED;
    held_t *h = NULL;
    if (j)
        HASH_FIND(hh, self->held, &j->id, sizeof j->id, h);
    if (!h || j->state != ZF_ST_RUNNING || j->worker || !j->res || !j->res->holder)
        return ZFB_CLAIM_UNKNOWN;
    const holder_t *hd = j->res->holder;
    if (hd->attempt != attempt || j->attempt != attempt)
        return ZFB_CLAIM_ATTEMPT;
    /* the key is checked where one was recorded: a worker without CURVE has none */
    if (hd->session != w->session || strcmp(hd->name, w->info->name) != 0 ||
        (hd->owner && hd->owner != w->owner))
        return ZFB_CLAIM_HOLDER;
    /* not bounded by the credits: a claimed result is answered by the DONE right behind
       the READY, and a worker holding a full set of leases may have results kept too */
    if (w->inflight >= ZF_LEASES_MAX)
        return ZFB_CLAIM_NOSPACE;
    return ZFB_CLAIM_OK;
}

void zfb_reattach_release(zfb_reattach_t *self, uint64_t id)
{
    held_t *h;
    HASH_FIND(hh, self->held, &id, sizeof id, h);
    if (h) {
        HASH_DEL(self->held, h);
        free(h);
    }
}

void zfb_reattach_close(zfb_reattach_t *self, void (*expire)(void *arg, uint64_t id), void *arg)
{
    self->closed = true;
    held_t *h, *tmp;
    HASH_ITER(hh, self->held, h, tmp)
    {
        HASH_DEL(self->held, h);
        uint64_t id = h->id;
        free(h);
        expire(arg, id);
    }
}

const char *zfb_claim_text(zfb_claim_t why)
{
    switch (why) {
    case ZFB_CLAIM_OK: return "re-attached";
    case ZFB_CLAIM_UNKNOWN: return "no such lease is waiting to be re-attached";
    case ZFB_CLAIM_ATTEMPT: return "the journal started another attempt";
    case ZFB_CLAIM_HOLDER: return "another worker holds that lease";
    case ZFB_CLAIM_CLOSED: return "the re-attach window has closed";
    case ZFB_CLAIM_NOSPACE: return "more claims than a worker can hold";
    case ZFB_CLAIM_NOSESSION: return "the READY named no session";
    }
    return "refused";
}
