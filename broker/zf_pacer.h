/*  zfb_pacer — keeps the loop's optional work (JOBS pages) to a share of its time while jobs
    run, so a client that lists as fast as it can does not slow the jobs (issue 18).

    Internal to the broker. The broker asks zfb_pacer_may before serving such a request: when
    the last one served cost C µs, the next may start ZFB_PACE_DIV × C µs after it began (its
    share is 1 / ZFB_PACE_DIV of the loop), never later than ZFB_PACE_MAX_US after. A request
    that may not start yet is held, in arrival order, with its frames (moved in, owned here
    until handed back by zfb_pacer_next or freed by destroy); the loop's poll wakes for it at
    zfb_pacer_due_ms. At most ZFB_PACE_HELD requests wait, and ZFB_PACE_PER_CLIENT from one
    connection (its routing id), so one client that floods cannot take the others' places: a
    further one is refused (zfb_pacer_hold returns -1), and a flood costs memory bounded by
    that many requests.

    The broker decides when pacing applies (while any job runs); when it does not, a held
    request is handed back at once, still in order.
*/
#ifndef ZF_PACER_H
#define ZF_PACER_H

#include <stdbool.h>
#include <stdint.h>
#include <zmq.h>

#define ZFB_PACE_DIV 128       /* optional work gets 1/128 (under 1 %) of the loop */
#define ZFB_PACE_MAX_US 250000 /* a costly page delays the next by 250 ms at most */
#define ZFB_PACE_HELD 64       /* requests waiting their turn, all clients together */
#define ZFB_PACE_PER_CLIENT 8  /* ... and from any one connection */

typedef struct zfb_pacer zfb_pacer_t;

/* A held request: the client's routing id, its request frame, and who it came from. */
typedef struct {
    zmq_msg_t rid;
    zmq_msg_t req;
    uint32_t caller;
    bool admin;
} zfb_paced_t;

/* NULL when memory runs out. */
zfb_pacer_t *zfb_pacer_new(void);
/* Frees the pacer and any requests still held (they get no answer: the broker is closing). */
void zfb_pacer_destroy(zfb_pacer_t **self_p);

/* Whether a request may be served at now_us (monotonic µs): none is held, and the last one's
   share of time has passed. */
bool zfb_pacer_may(const zfb_pacer_t *self, int64_t now_us);
/* Records that a request served from start_us to end_us; sets when the next may start. */
void zfb_pacer_spent(zfb_pacer_t *self, int64_t start_us, int64_t end_us);

/* Holds p (its messages moved in; p's are left empty). Returns 0, or -1 when
   ZFB_PACE_HELD requests already wait, or ZFB_PACE_PER_CLIENT from p's connection (p
   untouched: the caller answers and closes it). */
int zfb_pacer_hold(zfb_pacer_t *self, zfb_paced_t *p);
/* The oldest held request into *out (the caller closes its messages), if one is held and
   either `now` is true or its time has come at now_us. Returns true when one was given. */
bool zfb_pacer_next(zfb_pacer_t *self, int64_t now_us, bool now, zfb_paced_t *out);
/* Milliseconds (rounded up) until a held request's time, 0 when it has come, -1 when none
   is held. */
long zfb_pacer_due_ms(const zfb_pacer_t *self, int64_t now_us);
/* Requests held now, and held since the start (counters for STATS). */
uint32_t zfb_pacer_held(const zfb_pacer_t *self);
uint64_t zfb_pacer_deferred(const zfb_pacer_t *self);

#endif
