/*  zf_reattach — the broker's re-attach window after a restart (PROTOCOL.md §7.11).

    The journal brings back the jobs that were running when the broker stopped, each with
    the worker that held its lease (holder_t: session, key, name; a LEASE record). For a
    bounded window after the broker starts listening such a job is held, neither queued nor
    leased: the worker that held it may claim the lease in its READY and so keep running it
    (attempt unchanged) and deliver its result. What is not claimed by the end of the window
    runs again, as after a restart without re-attach. This module keeps the held jobs' ids
    and the window, and judges each claim; broker.c moves the jobs.

    Internal to the broker (zfb_ prefix, see zf_job.h). Errors: zfb_reattach_hold returns -1
    when memory runs out (the job is then not held: it runs again, as it would have).
*/
#ifndef ZF_REATTACH_H
#define ZF_REATTACH_H

#include <stdbool.h>
#include <stdint.h>

#include "zf_state.h"

typedef struct zfb_reattach zfb_reattach_t;

/* Why a claim is refused, or ZFB_CLAIM_OK. */
typedef enum {
    ZFB_CLAIM_OK = 0,
    ZFB_CLAIM_UNKNOWN,  /* no such job, or it is not held (queued, running elsewhere, done) */
    ZFB_CLAIM_ATTEMPT,  /* held, but its journaled lease has another number */
    ZFB_CLAIM_HOLDER,   /* held, but another worker (session, name or key) holds it */
    ZFB_CLAIM_CLOSED,   /* the window has closed */
    ZFB_CLAIM_NOSPACE,  /* more claims than a worker can hold (ZF_LEASES_MAX) */
    ZFB_CLAIM_NOSESSION /* the READY named no session: nothing to match */
} zfb_claim_t;

/* A new, empty table: no window (every claim is refused as closed). NULL when memory runs
   out. */
zfb_reattach_t *zfb_reattach_new(void);

/* Frees the table (not the jobs). NULL-safe; sets *self_p to NULL. */
void zfb_reattach_destroy(zfb_reattach_t **self_p);

/* Holds job id for the window (replay, before zfb_reattach_open). Returns 0, or -1 when
   memory runs out. */
int zfb_reattach_hold(zfb_reattach_t *self, uint64_t id);

/* Jobs held now (not yet re-attached nor released). */
uint32_t zfb_reattach_held(const zfb_reattach_t *self);

/* Opens the window until until_ms (monotonic), if any job is held. */
void zfb_reattach_open(zfb_reattach_t *self, int64_t until_ms);

/* Whether the window is open at now_ms (it stays open until zfb_reattach_close). */
bool zfb_reattach_is_open(const zfb_reattach_t *self, int64_t now_ms);

/* Milliseconds until the window closes (0: due now); -1 when it is not open. */
long zfb_reattach_due_ms(const zfb_reattach_t *self, int64_t now_ms);

/* Judges a claim of the lease (id, attempt) by worker w at now_ms against j, the job with
   that id (NULL if none). Changes nothing. */
zfb_claim_t zfb_reattach_check(const zfb_reattach_t *self, const job_t *j, uint32_t attempt,
                               const wrk_t *w, int64_t now_ms);

/* The job id is re-attached (or ended otherwise): no longer held. */
void zfb_reattach_release(zfb_reattach_t *self, uint64_t id);

/* Closes the window: calls expire(arg, id) for every job still held, then holds none. */
void zfb_reattach_close(zfb_reattach_t *self, void (*expire)(void *arg, uint64_t id), void *arg);

/* A few words for a refusal, for logs. */
const char *zfb_claim_text(zfb_claim_t why);

#endif
