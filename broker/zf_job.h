/*  zf_job — the job record's life: new and free, its payload, its result record, the causes
    noted on it and the clients waiting for it. Shared by the broker (broker.c) and the
    journal's replay (journal.c), so that a job is built and torn down one way only.

    Internal to the broker. Names: `zf_` is the public prefix (client/zfleet.h, and the
    handler API of worker/zf_module.h owns `zf_job_*`); functions shared between broker files
    use the internal prefix `zfb_` (as nng keeps `nng_` public and `nni_` internal); functions
    of one file are static and unprefixed.

    Ownership: a job owns its payload (inline or a frame of its own), its result record and
    everything in it; ran_on is shared (refcounted). Waiters are borrowed client entries with
    one reference each (client_t.refs), owned by the broker's client table. A job is in the
    broker's tables and heaps while it lives: removing it from them is the caller's part.
    Out of memory: constructors return NULL (or -1) with nothing changed; what the broker has
    already promised (waiters, causes) stops the process through zfb_oom (top of broker.c).
*/
#ifndef ZF_JOB_H
#define ZF_JOB_H

#include <stdbool.h>
#include <stdint.h>
#include <uthash.h>
#include <zmq.h>

#include "../proto/zf_proto.h"

#define ZF_JOB_INLINE_MAX 1024 /* payloads up to this size live inside their job_t */

struct client;
struct fnq;
struct wrk;

/* Where a finished job ran: shared by its results, so a worker may leave before them. */
typedef struct winfo {
    uint32_t refs;
    char name[ZF_NAME_MAX + 1];
    char devname[ZF_NAME_MAX + 1];
} winfo_t;

/* Who held the job's lease when the journal last recorded its start (a LEASE record): the
   one worker whose claim may re-attach the job after a broker restart (zf_reattach.h). */
typedef struct holder {
    uint32_t attempt; /* the lease number that was started */
    uint32_t owner;   /* the worker's key (zf_owners.h) under CURVE; 0 = none recorded */
    uint64_t session; /* the worker process's READY session */
    char name[ZF_NAME_MAX + 1];
} holder_t;

/* What a job produced. Kept apart from job_t so that queued jobs stay small. */
typedef struct result {
    zmq_msg_t output; /* empty until the job succeeds */
    char *error;      /* error text and per-attempt causes; malloc'd, or NULL */
    uint64_t duration_us;
    winfo_t *ran_on; /* NULL if it never ran */
    double progress;
    char *progress_text;  /* malloc'd, or NULL */
    struct client **more; /* waiters besides job->waiter (WAIT from other connections) */
    uint32_t nmore;
    uint32_t attempt_base; /* deliveries not charged against max_attempts: job->attempt
                                when it was last retried, plus one per RECALLED since (lease
                                numbers never repeat; zfb_job_attempts_used). Journaled */
    holder_t *holder;      /* malloc'd, or NULL: only on a job restored running (the journal's
                         last word on it was a LEASE) until it is re-attached or requeued */
    /* Retry on failure and delayed start (PROTOCOL.md §4.5), journaled by SCHEDULE records.
       While the job is SCHEDULED it sits in the broker's timer heap (its qpos is then its
       position there: a scheduled job is in no queue). */
    int64_t due_at;      /* monotonic ms: placed no earlier than this; 0 = no wait */
    uint32_t backoff_ms; /* first retry's backoff (doubles per retry, capped); 0 = default */
    uint8_t retries;     /* handler failures to retry (SUBMIT's retries) */
    uint8_t retried;     /* handler failures retried so far (not charged to max_attempts) */
} result_t;

typedef struct job {
    /* A queued job is the broker's unit of memory: keep this struct small (a million
       queued jobs must fit in a few hundred MB; fields are ordered so that none pads).
       Rarely used fields live in result_t. */
    uint64_t id;
    struct fnq *fn;
    int64_t seq;         /* FIFO order within a priority; front requeues are negative;
                                once forgetting: when its result was pushed (monotonic ms) */
    int64_t deadline_at; /* monotonic ms; 0 = none */
    int64_t finished_ms; /* monotonic, once terminal */
    uint64_t tag;        /* the submitter's tag, echoed in ACCEPTED and RESULT */
    int32_t priority;
    uint32_t qpos;    /* position in fn->q[device], ZF_HEAP_NONE when not queued */
    uint32_t tpos;    /* position in the deadline heap, ZF_HEAP_NONE if none */
    uint32_t attempt; /* deliveries so far; the lease is (id, attempt) */
    uint32_t timeout_ms;
    uint32_t plen;  /* payload bytes; 0 once it is dropped (see zfb_job_payload) */
    uint32_t owner; /* the key that submitted it (zf_owners.h); 0 = nobody (no CURVE) */
    uint8_t state;  /* zf_state_t */
    uint8_t device; /* required zf_device_kind_t */
    uint8_t max_attempts;
    bool acked;              /* the client was told ACCEPTED */
    bool no_push;            /* the submitter asked not to be sent the result */
    bool forget;             /* drop the result once it has been pushed to the submitter */
    bool no_ack;             /* the submitter asked for no ACCEPTED (NO_ACK) */
    bool result_pending;     /* terminal, result not pushed yet (waits for the commit) */
    bool counted : 1;        /* in its waiter's queued_jobs/queued_bytes (while unfinished) */
    bool forgetting : 1;     /* FORGET result pushed, its FORGET record not yet written: out
                                of the store, invisible to clients (see forget_later) */
    bool released : 1;       /* forgetting, and ZeroMQ has written its RESULT out: its output
                                is freed, so a compaction leaves it out (forget_due) */
    bool lazy_ack : 1;       /* the submitter let its ACCEPTED wait (LAZY_ACK) */
    bool ack_owed : 1;       /* that ACCEPTED is due and not sent yet (broker.c, lazy acks) */
    bool ack_in_result : 1;  /* its RESULT to the submitter is to say it answers the SUBMIT */
    uint32_t queued_at;      /* when it was last placed (monotonic ms, mod 2^32): its
                                queue wait at dispatch, for the metrics (fills padding) */
    zmq_msg_t *big;          /* the payload's own frame, or NULL: it is in inline_payload */
    struct wrk *worker;      /* lease holder while running, else NULL */
    struct client *waiter;   /* first client to push the result to, or NULL */
    struct result *res;      /* progress, result, further waiters; allocated when needed */
    char *tags;              /* the submitter's tags ("k=v,k=v", zf_tags_check), malloc'd, or
                                NULL: the job's own, kept for its whole life (journaled) */
    struct zfb_pipe *pipe;   /* a pipeline's steps (zf_pipeline.h), malloc'd, or NULL */
    struct job *prev, *next; /* broker's done or dead list, while terminal */
    struct job *ack_next;    /* pending-acceptance list, while not acked */
    struct job *send_next;   /* results to push once their FINISH record is committed */
    uint64_t ack_seq;        /* the journal commit holding its ACCEPT (zf_journal_seq) */
    uint64_t send_seq;       /* and the one holding its FINISH, while on the send list */
    UT_hash_handle hh;
    unsigned char inline_payload[]; /* a small payload lives here, allocated with the job */
} job_t;

/* Stops the broker with a log line: the out-of-memory rule for what it has already
   promised (see "Out of memory" at the top of broker.c). */
void zfb_oom(const char *what) __attribute__((noreturn));

/* A new job holding a copy of the n bytes at payload: inline when n <= ZF_JOB_INLINE_MAX,
   else in a frame of its own. Everything else is zero, and it is in no heap (qpos and tpos
   ZF_HEAP_NONE). The caller owns it (zfb_job_free). NULL when memory runs out. */
job_t *zfb_job_new(const void *payload, size_t n);

/* The same for a received frame: a small payload is copied inline (a frame kept as it is
   would pin ZeroMQ's shared receive buffer), a larger frame is moved into the job, never
   copied. NULL when memory runs out, frame untouched. */
job_t *zfb_job_new_frame(zmq_msg_t *frame);

/* Frees the job, its payload and its result record. It must have no waiters left
   (zfb_job_clear_waiters) and be out of every table and heap. NULL-safe; sets *jp to NULL. */
void zfb_job_free(job_t **jp);

/* The job's payload (kept until it is terminal, for redelivery): plen bytes. */
static inline const void *zfb_job_payload(const job_t *j)
{
    return j->big ? zmq_msg_data(j->big) : j->inline_payload;
}

/* Frees the payload; the job then has none (plen 0). */
void zfb_job_drop_payload(job_t *j);

/* Makes a copy of the n bytes at p the job's payload, in a frame of its own (a job that was
   built without room inline for it); the job must have none. Returns 0, or -1 when memory
   runs out (nothing changed). */
int zfb_job_copy_payload(job_t *j, const void *p, size_t n);

/* The job's result record, allocated (zeroed, empty output) on first use. NULL when memory
   runs out (the broker's job_res calls zfb_oom then; the journal's replay gives up). */
result_t *zfb_job_res(job_t *j);

/* The job has moved to its pipeline's current step (zf_pipeline.h): that step's run timeout
   and retries become the job's, its retries counted afresh. Nothing for a pipeline without
   per-step options (an old journal's). Returns 0, or -1 when memory runs out. */
int zfb_job_enter_step(job_t *j);

/* Frees the job's result record (output, texts, its reference to ran_on); it must have no
   further waiters. The job then has none (res NULL). */
void zfb_job_drop_result(job_t *j);

/* Drops one reference to a worker record; frees it with the last. Sets *p to NULL. */
void zfb_winfo_release(winfo_t **p);

/* Attempts used (PROTOCOL.md §4): deliveries charged against max_attempts since the job
   was accepted or last retried, as RESULT, STATUS and DEAD show them. */
static inline uint32_t zfb_job_attempts_used(const job_t *j)
{
    return j->attempt - (j->res ? j->res->attempt_base : 0);
}

/* Appends a cause to the job's error text, "; "-separated, cut to stay UTF-8 and within a
   wire text field (later causes are dropped once it is full). Out of memory: zfb_oom. */
void zfb_job_note(job_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Whether c is among the job's waiters. */
bool zfb_job_has_waiter(const job_t *j, const struct client *c);

/* Adds c as a waiter (one reference), unless it is one already. Out of memory: zfb_oom. */
void zfb_job_add_waiter(job_t *j, struct client *c);

/* Lets every waiter go, each through release(arg, &waiter): the broker's client_release,
   which drops the reference and frees an entry nothing else holds. */
void zfb_job_clear_waiters(job_t *j, void (*release)(void *arg, struct client **c), void *arg);

#endif
