/*  zf_outbox — see zf_outbox.h.

    Invariants: entries are in the order they were sent (oldest first), in a ring: entry i
    is e[(head + i) % ZF_OUTBOX_MAX], so the oldest goes without moving the others (under
    load every DONE pushes one out); `bytes` is the sum of their outputs' sizes, never above
    max_bytes; each entry holds one reference to its output and owns its header copy.
*/
#include "zf_outbox.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t id;
    uint32_t attempt;
    int64_t sent_ms;
    void *hdr;
    size_t hlen;
    zmq_msg_t out;
} entry_t;

struct zf_outbox {
    uint64_t max_bytes, bytes;
    uint32_t head, n;
    entry_t e[ZF_OUTBOX_MAX];
};

static entry_t *at(zf_outbox_t *self, uint32_t i)
{
    return &self->e[(self->head + i) % ZF_OUTBOX_MAX];
}

zf_outbox_t *zf_outbox_new(uint64_t max_bytes)
{
    zf_outbox_t *self = calloc(1, sizeof *self);
    if (self)
        self->max_bytes = max_bytes;
    return self;
}

/* Frees entry i; the later ones move up one (none for the oldest, i = 0). */
static void entry_free(zf_outbox_t *self, uint32_t i)
{
    entry_t *e = at(self, i);
    self->bytes -= zmq_msg_size(&e->out);
    zmq_msg_close(&e->out);
    free(e->hdr);
    if (i == 0) {
        self->head = (self->head + 1) % ZF_OUTBOX_MAX;
    } else {
        for (uint32_t k = i; k + 1 < self->n; k++)
            *at(self, k) = *at(self, k + 1); /* a zmq_msg_t may be moved by copying it */
    }
    self->n--;
}

void zf_outbox_destroy(zf_outbox_t **self_p)
{
    zf_outbox_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    zf_outbox_clear(self);
    free(self);
}

void zf_outbox_keep(zf_outbox_t *self, uint64_t id, uint32_t attempt, const void *hdr, size_t hlen,
                    zmq_msg_t *out, int64_t now_ms)
{
    size_t size = out ? zmq_msg_size(out) : 0;
    if (size > self->max_bytes || self->max_bytes == 0)
        return;
    zf_outbox_drop(self, id, attempt); /* sent again: one entry per lease */
    while (self->n && (self->n == ZF_OUTBOX_MAX || self->bytes + size > self->max_bytes))
        entry_free(self, 0);
    entry_t *e = at(self, self->n);
    if (!(e->hdr = malloc(hlen)))
        return;
    memcpy(e->hdr, hdr, hlen);
    e->hlen = hlen;
    zmq_msg_init(&e->out);
    if (out && zmq_msg_copy(&e->out, out) < 0) {
        free(e->hdr);
        return;
    }
    e->id = id;
    e->attempt = attempt;
    e->sent_ms = now_ms;
    self->bytes += size;
    self->n++;
}

void zf_outbox_confirm(zf_outbox_t *self, int64_t before_ms)
{
    while (self->n && at(self, 0)->sent_ms < before_ms)
        entry_free(self, 0);
}

bool zf_outbox_drop(zf_outbox_t *self, uint64_t id, uint32_t attempt)
{
    for (uint32_t i = 0; i < self->n; i++)
        if (at(self, i)->id == id && at(self, i)->attempt == attempt) {
            entry_free(self, i);
            return true;
        }
    return false;
}

void zf_outbox_clear(zf_outbox_t *self)
{
    while (self->n)
        entry_free(self, self->n - 1);
}

uint32_t zf_outbox_count(const zf_outbox_t *self)
{
    return self->n;
}

void zf_outbox_lease(const zf_outbox_t *self, uint32_t i, uint64_t *id, uint32_t *attempt)
{
    const entry_t *e = &self->e[(self->head + i) % ZF_OUTBOX_MAX];
    *id = e->id;
    *attempt = e->attempt;
}

uint32_t zf_outbox_resend(zf_outbox_t *self, void *sock, int64_t now_ms)
{
    uint32_t sent = 0;
    for (uint32_t i = 0; i < self->n; i++) {
        entry_t *e = at(self, i);
        zmq_msg_t out;
        zmq_msg_init(&out);
        if (zmq_msg_copy(&out, &e->out) < 0)
            continue;
        if (zmq_send(sock, e->hdr, e->hlen, ZMQ_DONTWAIT | ZMQ_SNDMORE) < 0 ||
            zmq_msg_send(&out, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&out);
            continue;
        }
        e->sent_ms = now_ms;
        sent++;
    }
    return sent;
}
