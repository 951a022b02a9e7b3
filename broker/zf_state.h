/*  zf_state — the broker's in-memory model: jobs, functions, workers, clients.

    Internal to the broker. Every structure here is owned by the broker (zf_broker_t) and
    lives in its hash tables; pointers between them are borrowed, with the invariants
    written beside each field.
*/
#ifndef ZF_STATE_H
#define ZF_STATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <uthash.h>
#include <zmq.h>

#include "../common/zf_hist.h"
#include "../proto/zf_proto.h"
#include "zf_heap.h"
#include "zf_job.h"

#define ZF_RID_MAX 256    /* ZeroMQ routing ids are at most 255 bytes */
#define ZF_LEASES_MAX 256 /* credits one worker may hold */
#define ZF_NKINDS 2       /* device kinds a worker can have: cpu (0) and gpu (1) */

/* Bytes of results handed to ZeroMQ for one client connection and not yet written to its
   socket. Shared with ZeroMQ's I/O thread, which subtracts what it has written (from the
   free callback of each message it was given; see send_result), so it is refcounted and
   atomic: one reference is the client's, one each message's. */
typedef struct flight {
    _Atomic uint64_t bytes;
    _Atomic uint32_t refs;
    _Atomic bool want_wake;     /* the broker holds results back: wake it when bytes fall to */
    _Atomic uint64_t resume_at; /* this level (writing to wake_fd), where the next one fits */
    int wake_fd;
} flight_t;

/* A result held back because the connection's unread bytes would pass the bound: sent
   once the client has read enough (by id: the job may be evicted meanwhile). */
typedef struct {
    uint64_t id, tag;
    bool forget; /* the submitter's push of a FORGET job: drop it once sent */
} deferred_t;

/* A client connection, known by its routing id. Refcounted by the jobs that name it as a
   waiter; freed when the last one lets go and nothing it was sent is still unwritten
   (until then it stays in the table with refs 0; the tick sweeps such entries). */
typedef struct client {
    uint32_t refs;
    uint8_t rid_len;
    uint64_t queued_jobs;  /* unfinished jobs this connection submitted (job_t.counted) */
    uint64_t queued_bytes; /* and their payload bytes */
    flight_t *flight;
    deferred_t *deferred; /* a FIFO of held-back results: [dhead, ndeferred) */
    uint32_t dhead, ndeferred, dcap;
    struct client *slow_prev, *slow_next; /* in the broker's slow list while ndeferred */
    UT_hash_handle hh;
    unsigned char rid[];
} client_t;

/* Batch sizes (issue 17), from the DONEs' ZF_F_BATCH: jobs[i] counts the jobs that ran in a
   batch of size 1 (i = 0) or 2^(i-1) + 1 .. 2^i (i = 1..8: 2, 3-4, ..., 129-256); calls is
   the handler calls they took (each job adds 1/size), so the mean size is jobs / calls. */
#define ZFB_BATCH_BUCKETS 9
typedef struct {
    uint64_t jobs[ZFB_BATCH_BUCKETS];
    double calls;
} zfb_batches_t;

/* One worker's membership in one function's ready lists. */
typedef struct wslot {
    struct wrk *w;
    struct fnq *fn;
    struct wslot *prev, *next;
    zfb_batches_t batches; /* the batch sizes of the jobs of fn this worker answered */
} wslot_t;

enum { LIST_NONE = -1, LIST_IDLE = 0, LIST_PARTIAL = 1 };

typedef struct fnq {
    char name[ZF_FN_MAX + 1];
    zf_heap_t q[3]; /* queued jobs by required device kind (any, cpu, gpu) */
    uint64_t queued, running, done, failed;
    /* For the metrics (docs/METRICS.md): accepted jobs and terminal states by status, as
       the broker-wide counters_t counts them; queue wait (placed to dispatched) and run
       time (the worker's duration of each answered attempt). */
    uint64_t accepted;
    uint64_t finished[ZF_ST__COUNT];
    zf_hist_t qwait, run;
    zfb_batches_t batches;        /* the batch sizes its jobs ran in (issue 17) */
    wslot_t *ready[ZF_NKINDS][2]; /* workers with free credits: [kind][idle|partial] */
    uint32_t nworkers;
    UT_hash_handle hh;
} fnq_t;

typedef struct {
    uint64_t id;
    uint32_t attempt;
    bool recalling; /* RECALL sent; the worker answers RECALLED or runs it */
} lease_t;

typedef struct wrk {
    unsigned char rid[ZF_RID_MAX];
    uint8_t rid_len;
    uint8_t kind; /* ZF_DEV_CPU or ZF_DEV_GPU */
    int8_t list;  /* LIST_* the slots are in now */
    bool draining;
    bool suspect; /* its run timer ended a lease it did not answer: no new
                                        work until it answers that lease */
    bool doomed;  /* a send to it failed: removed at the end of the turn */
    int32_t devindex;
    uint32_t owner;   /* its key's owner id (zf_owners.h); 0 without CURVE */
    uint64_t session; /* READY's session: the process, across its registrations; 0 = none */
    uint64_t devmem;
    uint32_t credits, inflight;
    uint32_t batch; /* READY's ZF_F_BATCH: most jobs it runs in one call (issue 17); 1 = none */
    lease_t leases[ZF_LEASES_MAX]; /* the jobs this worker holds, oldest first */
    winfo_t *info;
    char model[ZF_NAME_MAX + 1]; /* the device's own name, e.g. the GPU model */
    char supervisor[65];         /* READY's supervisor (hex routing id), or empty: the
                                        one peer besides the worker whose OBITUARY counts */
    wslot_t *slots;
    uint32_t nslots;
    int64_t last_recv_ms;
    /* The broker's backstop for the worker's own run timeout, on the lease the worker runs
       now (leases[0]: a worker runs its jobs in the order it was given them, so that lease
       started when the one before it was answered). Stage 0 ends at timeout + grace: the
       job's attempt ends as timed out and the worker is told (WCANCEL); stage 1 ends one
       grace later with the lease still unanswered: the worker is removed as wedged. */
    int64_t run_until; /* monotonic ms; in b->runs while rpos != ZF_HEAP_NONE */
    uint64_t run_id;   /* the lease the timer is about */
    uint32_t run_attempt;
    uint32_t rpos;
    uint8_t run_stage;
    uint64_t jobs_done, jobs_failed;
    int64_t joined_ms;
    struct wrk *prev, *next; /* liveness list, oldest last_recv first */
    struct wrk *doomed_next; /* the broker's doomed list, while doomed */
    const char *doom_why;    /* a static string */
    UT_hash_handle hh;
} wrk_t;

#endif
