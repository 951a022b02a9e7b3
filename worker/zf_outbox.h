/*  zf_outbox — results a worker has sent, kept until the broker surely has them, so that
    a result finished while the broker was away (or sent into a broker that died before
    journaling it) can be claimed and delivered again after a restart (PROTOCOL.md §7.11).

    Each entry is a DONE's header bytes and a reference to its output (zmq_msg_copy: the
    buffer is shared, not copied). Bounded by output bytes and by entries: past a bound the
    oldest go (their jobs run again if the broker never had them). Not thread-safe: the
    worker uses it under its socket lock.
*/
#ifndef ZF_OUTBOX_H
#define ZF_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#define ZF_OUTBOX_MAX 64 /* entries at most: claims in one READY are bounded too */

typedef struct zf_outbox zf_outbox_t;

/* A new outbox keeping up to max_bytes of outputs (0: keeps nothing). NULL when memory
   runs out. */
zf_outbox_t *zf_outbox_new(uint64_t max_bytes);

/* Frees it and the references it holds. NULL-safe; sets *self_p to NULL. */
void zf_outbox_destroy(zf_outbox_t **self_p);

/* Keeps the DONE of lease (id, attempt) sent at now_ms: a copy of the hlen header bytes
   and a new reference to out (out itself is left to the caller, who then sends it). An
   output over the whole bound is not kept. Nothing is kept when memory runs out. */
void zf_outbox_keep(zf_outbox_t *self, uint64_t id, uint32_t attempt, const void *hdr, size_t hlen,
                    zmq_msg_t *out, int64_t now_ms);

/* The broker had everything sent up to before_ms: drops those entries. */
void zf_outbox_confirm(zf_outbox_t *self, int64_t before_ms);

/* Drops the entry of lease (id, attempt) (the broker refused its claim). True if it was
   there. */
bool zf_outbox_drop(zf_outbox_t *self, uint64_t id, uint32_t attempt);

/* Drops every entry. */
void zf_outbox_clear(zf_outbox_t *self);

/* Entries kept, oldest first, and the lease of entry i (i < zf_outbox_count). */
uint32_t zf_outbox_count(const zf_outbox_t *self);
void zf_outbox_lease(const zf_outbox_t *self, uint32_t i, uint64_t *id, uint32_t *attempt);

/* Sends every entry again on sock (a DEALER), without blocking, and marks them sent at
   now_ms. Returns the number sent. */
uint32_t zf_outbox_resend(zf_outbox_t *self, void *sock, int64_t now_ms);

#endif
