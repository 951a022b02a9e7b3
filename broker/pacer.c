/*  zfb_pacer — see zf_pacer.h. A fixed ring of held requests and the time the next may
    start. */
#include "zf_pacer.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

struct zfb_pacer {
    zfb_paced_t held[ZFB_PACE_HELD];
    uint32_t head, n;  /* the oldest at held[head], n of them */
    int64_t next_us;   /* the next request may start at this time */
    uint64_t deferred; /* requests that had to wait, since the start */
};

zfb_pacer_t *zfb_pacer_new(void)
{
    return calloc(1, sizeof(zfb_pacer_t));
}

void zfb_pacer_destroy(zfb_pacer_t **self_p)
{
    assert(self_p);
    zfb_pacer_t *p = *self_p;
    if (!p)
        return;
    zfb_paced_t one;
    while (zfb_pacer_next(p, 0, true, &one)) {
        zmq_msg_close(&one.rid);
        zmq_msg_close(&one.req);
    }
    free(p);
    *self_p = NULL;
}

bool zfb_pacer_may(const zfb_pacer_t *p, int64_t now_us)
{
    return p->n == 0 && now_us >= p->next_us;
}

void zfb_pacer_spent(zfb_pacer_t *p, int64_t start_us, int64_t end_us)
{
    int64_t cost = end_us > start_us ? end_us - start_us : 0;
    int64_t wait = cost * ZFB_PACE_DIV;
    p->next_us = start_us + (wait < ZFB_PACE_MAX_US ? wait : ZFB_PACE_MAX_US);
}

/* Requests held from the connection whose routing id is rid (a walk of at most
   ZFB_PACE_HELD). */
static uint32_t held_from(zfb_pacer_t *p, zmq_msg_t *rid)
{
    uint32_t n = 0;
    size_t len = zmq_msg_size(rid);
    for (uint32_t i = 0; i < p->n; i++) {
        zmq_msg_t *r = &p->held[(p->head + i) % ZFB_PACE_HELD].rid;
        n += zmq_msg_size(r) == len && memcmp(zmq_msg_data(r), zmq_msg_data(rid), len) == 0;
    }
    return n;
}

int zfb_pacer_hold(zfb_pacer_t *p, zfb_paced_t *in)
{
    if (p->n == ZFB_PACE_HELD || held_from(p, &in->rid) >= ZFB_PACE_PER_CLIENT)
        return -1;
    zfb_paced_t *slot = &p->held[(p->head + p->n) % ZFB_PACE_HELD];
    zmq_msg_init(&slot->rid);
    zmq_msg_init(&slot->req);
    zmq_msg_move(&slot->rid, &in->rid);
    zmq_msg_move(&slot->req, &in->req);
    slot->caller = in->caller;
    slot->admin = in->admin;
    p->n++;
    p->deferred++;
    return 0;
}

bool zfb_pacer_next(zfb_pacer_t *p, int64_t now_us, bool now, zfb_paced_t *out)
{
    if (p->n == 0 || (!now && now_us < p->next_us))
        return false;
    zfb_paced_t *slot = &p->held[p->head];
    zmq_msg_init(&out->rid);
    zmq_msg_init(&out->req);
    zmq_msg_move(&out->rid, &slot->rid);
    zmq_msg_move(&out->req, &slot->req);
    zmq_msg_close(&slot->rid);
    zmq_msg_close(&slot->req);
    out->caller = slot->caller;
    out->admin = slot->admin;
    p->head = (p->head + 1) % ZFB_PACE_HELD;
    p->n--;
    return true;
}

long zfb_pacer_due_ms(const zfb_pacer_t *p, int64_t now_us)
{
    if (p->n == 0)
        return -1;
    return now_us >= p->next_us ? 0 : (long)((p->next_us - now_us + 999) / 1000);
}

uint32_t zfb_pacer_held(const zfb_pacer_t *p)
{
    return p->n;
}

uint64_t zfb_pacer_deferred(const zfb_pacer_t *p)
{
    return p->deferred;
}
