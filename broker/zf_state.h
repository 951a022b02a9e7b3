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

#include "../proto/zf_proto.h"
#include "zf_heap.h"

#define ZF_RID_MAX 256     /* ZeroMQ routing ids are at most 255 bytes */
#define ZF_LEASES_MAX 256  /* credits one worker may hold */
#define ZF_NKINDS 2        /* device kinds a worker can have: cpu (0) and gpu (1) */
#define ZF_JOB_INLINE_MAX 1024 /* payloads up to this size live inside their job_t */

/* Bytes of results handed to ZeroMQ for one client connection and not yet written to its
   socket. Shared with ZeroMQ's I/O thread, which subtracts what it has written (from the
   free callback of each message it was given; see send_result), so it is refcounted and
   atomic: one reference is the client's, one each message's. */
typedef struct flight {
    _Atomic uint64_t bytes;
    _Atomic uint32_t refs;
    _Atomic bool want_wake;  /* the broker holds results back: wake it when bytes fall to */
    _Atomic uint64_t resume_at; /* this level (writing to wake_fd), where the next one fits */
    int wake_fd;
} flight_t;

/* A result held back because the connection's unread bytes would pass the bound: sent
   once the client has read enough (by id: the job may be evicted meanwhile). */
typedef struct {
    uint64_t id, tag;
    bool forget;             /* the submitter's push of a FORGET job: drop it once sent */
} deferred_t;

/* A client connection, known by its routing id. Refcounted by the jobs that name it as a
   waiter; freed when the last one lets go and nothing it was sent is still unwritten
   (until then it stays in the table with refs 0; the tick sweeps such entries). */
typedef struct client {
    uint32_t refs;
    uint8_t rid_len;
    uint64_t queued_jobs;    /* unfinished jobs this connection submitted (job_t.counted) */
    uint64_t queued_bytes;   /* and their payload bytes */
    flight_t *flight;
    deferred_t *deferred;    /* a FIFO of held-back results: [dhead, ndeferred) */
    uint32_t dhead, ndeferred, dcap;
    struct client *slow_prev, *slow_next; /* in the broker's slow list while ndeferred */
    UT_hash_handle hh;
    unsigned char rid[];
} client_t;

/* Where a finished job ran: shared by its results, so a worker may leave before them. */
typedef struct winfo {
    uint32_t refs;
    char name[ZF_NAME_MAX + 1];
    char devname[ZF_NAME_MAX + 1];
} winfo_t;

struct fnq;
struct wrk;

/* What a job produced. Kept apart from job_t so that queued jobs stay small. */
typedef struct result {
    zmq_msg_t output;        /* empty until the job succeeds */
    char *error;             /* error text and per-attempt causes; malloc'd, or NULL */
    uint64_t duration_us;
    winfo_t *ran_on;         /* NULL if it never ran */
    double progress;
    char *progress_text;     /* malloc'd, or NULL */
    client_t **more;         /* waiters besides job->waiter (WAIT from other connections) */
    uint32_t nmore;
    uint32_t attempt_base;   /* job->attempt when it was last retried: attempts before it do
                                not count against max_attempts, yet lease numbers never repeat */
} result_t;

typedef struct job {
    /* A queued job is the broker's unit of memory: keep this struct small (a million
       queued jobs must fit in a few hundred MB; fields are ordered so that none pads).
       Rarely used fields live in result_t. */
    uint64_t id;
    struct fnq *fn;
    int64_t seq;             /* FIFO order within a priority; front requeues are negative;
                                once forgetting: when its result was pushed (monotonic ms) */
    int64_t deadline_at;     /* monotonic ms; 0 = none */
    int64_t finished_ms;     /* monotonic, once terminal */
    uint64_t tag;            /* the submitter's tag, echoed in ACCEPTED and RESULT */
    int32_t priority;
    uint32_t qpos;           /* position in fn->q[device], ZF_HEAP_NONE when not queued */
    uint32_t tpos;           /* position in the deadline heap, ZF_HEAP_NONE if none */
    uint32_t attempt;        /* deliveries so far; the lease is (id, attempt) */
    uint32_t timeout_ms;
    uint32_t plen;           /* payload bytes; 0 once it is dropped (see zf_job_payload) */
    uint8_t state;           /* zf_state_t */
    uint8_t device;          /* required zf_device_kind_t */
    uint8_t max_attempts;
    bool acked;              /* the client was told ACCEPTED */
    bool no_push;            /* the submitter asked not to be sent the result */
    bool forget;             /* drop the result once it has been pushed to the submitter */
    bool result_pending;     /* terminal, result not pushed yet (waits for the commit) */
    bool counted : 1;        /* in its waiter's queued_jobs/queued_bytes (while unfinished) */
    bool forgetting : 1;     /* FORGET result pushed, its FORGET record not yet written: out
                                of the store, invisible to clients (see forget_later) */
    bool released : 1;       /* forgetting, and ZeroMQ has written its RESULT out: its output
                                is freed, so a compaction leaves it out (forget_due) */
    zmq_msg_t *big;          /* the payload's own frame, or NULL: it is in inline_payload */
    struct wrk *worker;      /* lease holder while running, else NULL */
    client_t *waiter;        /* first client to push the result to, or NULL */
    struct result *res;      /* progress, result, further waiters; allocated when needed */
    struct job *prev, *next; /* broker's done or dead list, while terminal */
    struct job *ack_next;    /* pending-acceptance list, while not acked */
    struct job *send_next;   /* results to push once their FINISH record is committed */
    UT_hash_handle hh;
    unsigned char inline_payload[]; /* a small payload lives here, allocated with the job */
} job_t;

/* The job's payload (kept until it is terminal, for redelivery): plen bytes. */
static inline const void *zf_job_payload(const job_t *j)
{
    return j->big ? zmq_msg_data(j->big) : j->inline_payload;
}

/* Frees the payload; the job then has none (plen 0). */
static inline void zf_job_drop_payload(job_t *j)
{
    if (j->big) {
        zmq_msg_close(j->big);
        free(j->big);
        j->big = NULL;
    }
    j->plen = 0;
}

/* Makes `frame` the job's payload, moved (not copied); the job must have none. Returns 0,
   or -1 when memory runs out (frame untouched). */
static inline int zf_job_take_payload(job_t *j, zmq_msg_t *frame)
{
    j->big = malloc(sizeof *j->big);
    if (!j->big)
        return -1;
    zmq_msg_init(j->big);
    zmq_msg_move(j->big, frame);
    j->plen = (uint32_t)zmq_msg_size(j->big);
    return 0;
}

/* One worker's membership in one function's ready lists. */
typedef struct wslot {
    struct wrk *w;
    struct fnq *fn;
    struct wslot *prev, *next;
} wslot_t;

enum { LIST_NONE = -1, LIST_IDLE = 0, LIST_PARTIAL = 1 };

typedef struct fnq {
    char name[ZF_FN_MAX + 1];
    zf_heap_t q[3];                  /* queued jobs by required device kind (any, cpu, gpu) */
    uint64_t queued, running, done, failed;
    wslot_t *ready[ZF_NKINDS][2];    /* workers with free credits: [kind][idle|partial] */
    uint32_t nworkers;
    UT_hash_handle hh;
} fnq_t;

typedef struct {
    uint64_t id;
    uint32_t attempt;
    bool recalling;          /* RECALL sent; the worker answers RECALLED or runs it */
} lease_t;

typedef struct wrk {
    unsigned char rid[ZF_RID_MAX];
    uint8_t rid_len;
    uint8_t kind;                    /* ZF_DEV_CPU or ZF_DEV_GPU */
    int8_t list;                     /* LIST_* the slots are in now */
    bool draining;
    bool suspect;                    /* its run timer ended a lease it did not answer: no new
                                        work until it answers that lease */
    bool doomed;                     /* a send to it failed: removed at the end of the turn */
    int32_t devindex;
    uint64_t devmem;
    uint32_t credits, inflight;
    lease_t leases[ZF_LEASES_MAX];   /* the jobs this worker holds, oldest first */
    winfo_t *info;
    char model[ZF_NAME_MAX + 1];     /* the device's own name, e.g. the GPU model */
    char supervisor[65];             /* READY's supervisor (hex routing id), or empty: the
                                        one peer besides the worker whose OBITUARY counts */
    wslot_t *slots;
    uint32_t nslots;
    int64_t last_recv_ms;
    /* The broker's backstop for the worker's own run timeout, on the lease the worker runs
       now (leases[0]: a worker runs its jobs in the order it was given them, so that lease
       started when the one before it was answered). Stage 0 ends at timeout + grace: the
       job's attempt ends as timed out and the worker is told (WCANCEL); stage 1 ends one
       grace later with the lease still unanswered: the worker is removed as wedged. */
    int64_t run_until;               /* monotonic ms; in b->runs while rpos != ZF_HEAP_NONE */
    uint64_t run_id;                 /* the lease the timer is about */
    uint32_t run_attempt;
    uint32_t rpos;
    uint8_t run_stage;
    uint64_t jobs_done, jobs_failed;
    int64_t joined_ms;
    struct wrk *prev, *next;         /* liveness list, oldest last_recv first */
    struct wrk *doomed_next;         /* the broker's doomed list, while doomed */
    const char *doom_why;            /* a static string */
    UT_hash_handle hh;
} wrk_t;

#endif
