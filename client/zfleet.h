/*  zfleet.h — the zfleet client library (libzfleet).

    A client submits jobs to a zfleet broker and receives their results, progress and
    errors. One zf_client_t is one connection; use it from one thread at a time.

    Two styles:
    - synchronous: zf_client_submit() returns the job id once the broker has accepted the
      job (journaled, if the broker journals); zf_client_wait() returns its result.
    - asynchronous: zf_client_submit_async() returns at once; acceptances, rejections,
      progress and results arrive as events from zf_client_next(). zf_client_fd() gives a
      file descriptor to watch in your own event loop (it signals edge-triggered: when it
      is readable, call zf_client_next(c, 0) until it returns NULL).

    Results are pushed to the connection that submitted the job. Any connection may also
    wait for, or fetch, any job by id (a web app can submit from one process and fetch from
    another). The library reconnects by itself if the broker goes away, and re-attaches to
    the job it is waiting for.

    Ownership: every zf_event_t returned is the caller's, freed with zf_event_destroy.
    Errors: functions return 0 / -1 or NULL; zf_client_error() describes the last failure
    and zf_client_errcode() classifies it (ZF_CE_* below).
*/
#ifndef ZFLEET_H
#define ZFLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks what libzfleet exports: the library is built with hidden visibility, so a symbol
   without ZF_EXPORT stays inside it (tests/check_exports.sh checks that nm -D lists exactly
   the functions declared here). */
#if defined(ZF_BUILDING_LIBZFLEET) && defined(__GNUC__)
#define ZF_EXPORT __attribute__((visibility("default")))
#else
#define ZF_EXPORT
#endif

#define ZFLEET_DEFAULT_BROKER "tcp://127.0.0.1:5555"

/* Longest function name, in bytes (a longer one is ZF_CE_USAGE). */
#define ZFLEET_FUNCTION_MAX 63

/* Longest tags text (zf_submit_opts_t.tags), in bytes, and most tags per job. */
#define ZFLEET_TAGS_MAX 255
#define ZFLEET_TAGS_COUNT 8

/* Job states (the same numbers as on the wire). */
typedef enum {
    ZFLEET_QUEUED = 0,
    ZFLEET_RUNNING = 1,
    ZFLEET_SUCCEEDED = 2,
    ZFLEET_FAILED = 3,
    ZFLEET_TIMED_OUT = 4,
    ZFLEET_CANCELLED = 5,
    ZFLEET_EXPIRED = 6,
    ZFLEET_LOST = 7,
    ZFLEET_OUTPUT_LOST = 8, /* the handler succeeded but its output was not kept in full
                                across a broker restart (over --result-max-bytes): the RESULT
                                has no output bytes and text says what was lost. Not a
                                success: only ZFLEET_SUCCEEDED is. */
    ZFLEET_SCHEDULED = 9,   /* not finished: waiting for its time (a delayed job, or the
                                backoff before a retry), in the broker's timer heap */
} zfleet_state_t;

/* Device kinds a job may require (zf_submit_opts_t.device; the same numbers as on the wire). */
typedef enum {
    ZFLEET_DEVICE_ANY = 0,
    ZFLEET_DEVICE_CPU = 1,
    ZFLEET_DEVICE_GPU = 2,
} zfleet_device_t;

/* The broker's error codes (zf_client_brokercode(), zf_event_t.code; the same numbers as on
   the wire, PROTOCOL.md). */
typedef enum {
    ZF_BROKER_OK = 0,
    ZF_BROKER_VERSION = 1,      /* unsupported protocol version */
    ZF_BROKER_MALFORMED = 2,    /* the request could not be decoded */
    ZF_BROKER_COMMAND = 3,      /* unknown command */
    ZF_BROKER_UNKNOWN_JOB = 4,  /* no such job (never accepted, or its result expired) */
    ZF_BROKER_QUEUE_FULL = 5,   /* a queue bound was reached; nothing was accepted */
    ZF_BROKER_TOO_LARGE = 6,    /* payload larger than the broker's limit */
    ZF_BROKER_BAD_ARGUMENT = 7, /* a field is missing, out of range or not allowed here */
    ZF_BROKER_STATE = 8,        /* the job's state forbids the request (e.g. cancel a
                                   finished job) */
    ZF_BROKER_SHUTDOWN = 9,     /* the broker is stopping */
    ZF_BROKER_INTERNAL = 10,    /* the broker could not do it (out of memory) */
    ZF_BROKER_JOURNAL = 11,     /* the broker's journal cannot be written: nothing new is
                                   accepted until it can */
    ZF_BROKER_DENIED = 12,      /* this client's key is no longer allowed (revoked from the
                                   broker's key directories); see ZF_CE_DENIED */
} zf_broker_code_t;

/* Client-side error classes (zf_client_errcode). */
typedef enum {
    ZF_CE_NONE = 0,
    ZF_CE_TIMEOUT = 1,     /* nothing arrived in time (the job may still be running) */
    ZF_CE_UNREACHABLE = 2, /* the broker did not answer */
    ZF_CE_REJECTED = 3,    /* the broker refused: see zf_client_brokercode() */
    ZF_CE_USAGE = 4,       /* bad argument */
    ZF_CE_NOMEM = 5,
    ZF_CE_DENIED = 6, /* no service for this client's key: the broker refused the CURVE
                         handshake (key not listed, or a worker key), the keys do not match
                         (wrong broker key, or CURVE on one side only), or the key was
                         revoked (ZF_BROKER_DENIED); zf_client_error() says which */
} zf_client_errcode_t;

typedef enum {
    ZF_EV_ACCEPTED = 1, /* tag, id */
    ZF_EV_REJECTED = 2, /* tag, code, text */
    ZF_EV_RESULT = 3,   /* id, tag, status, output, text (error), attempts, ... */
    ZF_EV_PROGRESS = 4, /* id, tag, progress, text */
    ZF_EV_STATUS = 5,   /* id, status, attempts, progress, text, worker, device */
    ZF_EV_ERROR = 6,    /* tag, code, text (e.g. unknown job) */
    ZF_EV_REPLY = 7,    /* tag, code, text, output = msgpack document (stats, dead) */
} zf_event_type_t;

typedef struct zf_event {
    zf_event_type_t type;
    uint64_t id;        /* job id (0 if not about one job) */
    uint64_t tag;       /* the submit tag this answers */
    int status;         /* zfleet_state_t, for RESULT and STATUS */
    int code;           /* zf_broker_code_t, ZF_BROKER_OK = 0 */
    const char *text;   /* error text, progress text or reason; never NULL */
    const void *output; /* RESULT: the handler's output; REPLY: the document. Not
                           NUL-terminated: output_len bytes */
    size_t output_len;
    uint32_t attempts;
    uint64_t duration_us; /* handler run time */
    double progress;      /* 0..1 */
    const char *function; /* never NULL */
    const char *worker;   /* worker that ran it; never NULL */
    const char *device;   /* its device label, e.g. "cpu:1"; never NULL */
    const char *tags;     /* RESULT, STATUS: the job's tags, "k=v,k=v"; "" if none; never NULL */
    uint32_t step, steps; /* RESULT, STATUS of a pipeline: the step it is (or ended) at,
                             1-based, of steps; 0, 0 for a job of one step */
    void *priv_;          /* the library's */
} zf_event_t;

typedef struct zf_client zf_client_t;

typedef struct {
    int32_t priority;      /* higher first; default 0 */
    uint32_t timeout_ms;   /* run timeout of one attempt; 0 = none */
    uint32_t deadline_ms;  /* must start within this long after acceptance; 0 = none */
    uint32_t max_attempts; /* 0 = the broker's default (3) */
    int device;            /* zfleet_device_t; default ZFLEET_DEVICE_ANY */
    bool no_push;          /* do not push the result to this connection */
    bool forget;           /* the broker drops the result once it has pushed it to this
                                connection: collect it here (zf_client_wait finds the pushed
                                RESULT, unless zf_client_next already handed it out); a GET
                                or WAIT the broker answers afterwards, from any connection,
                                is `unknown job`. If the push fails (this connection is
                                gone) the result is kept as usual. Dead letters (lost,
                                timed_out) are always kept. Not with no_push: the broker
                                rejects that (ZF_CE_REJECTED, ZF_BROKER_BAD_ARGUMENT). */
    uint32_t retries;      /* handler failures retried (with backoff) before `failed`; 0 = none,
                                at most 20. A failure the handler marks permanent is not */
    uint32_t backoff_ms;   /* the first retry's backoff; doubles per retry, capped at 60 s
                                by the broker, with jitter; 0 = 1000 */
    uint32_t delay_ms;     /* run no earlier than this long after acceptance; 0 = now */
    uint64_t not_before;   /* run no earlier than this wall-clock time (ms since the epoch);
                                0 = now. With delay_ms too, the later of the two */
    const char *tags;      /* NULL or "k=v[,k=v...]": at most 8 tags, each side 1-63 bytes,
                              255 bytes in all, no control characters, the key without '='.
                              Kept with the job (journaled) and returned by status and
                              wait (zf_event_t.tags). Malformed: ZF_CE_USAGE, nothing sent */
    const char *then;      /* NULL or "fn@dev[,fn@dev...]": a pipeline's further steps (at
                              most 8; dev cpu, gpu or any, "@dev" optional = any), each with
                              options if wanted: "fn@gpu;timeout=5000;retries=2" (that
                              step's run timeout in ms and handler-failure retries; left
                              out: timeout_ms and retries above). Each step runs with the
                              previous step's output as its input, on its own device kind,
                              under the one job id; progress spans the steps; the first
                              failed step ends it with that step's error. The broker checks
                              it (REJECTED, ZF_BROKER_BAD_ARGUMENT, with the reason) */
    bool no_ack;           /* zf_client_submit_async only: the broker sends no ACCEPTED
                              (no ZF_EV_ACCEPTED event, so no id before the result): the
                              RESULT, matched by the tag, or a REJECTED answers the submit.
                              Saves the client a wake-up per job (for one-at-a-time
                              round trips, bench/README.md). Not with no_push (the broker
                              rejects that); zf_client_submit refuses it (ZF_CE_USAGE) */
} zf_submit_opts_t;

/* Connects to endpoint (NULL: $ZFLEET_BROKER, else ZFLEET_DEFAULT_BROKER). Connection is
   lazy: this fails only on a malformed endpoint or no memory (NULL). */
ZF_EXPORT zf_client_t *zf_client_new(const char *endpoint);
ZF_EXPORT void zf_client_destroy(zf_client_t **self_p);

/* CURVE: encrypts the connection and authenticates this client to a broker started with
   --curve-secret (docs/SECURITY.md). key_file is this client's NAME.key_secret, broker_key_file
   the broker's public NAME.key (files of zfleet keygen, czmq's zcert or pyzmq's zmq.auth).
   Both NULL turns CURVE off. Reconnects at once: call it right after zf_client_new. A
   broker that refuses the key answers nothing; requests then fail at once with ZF_CE_DENIED
   and a line that says why (key not listed, wrong broker key, CURVE at one end only).
   Returns 0, or -1 (ZF_CE_USAGE: a file unreadable or not a certificate, or one of the two
   missing). */
ZF_EXPORT int zf_client_set_keys(zf_client_t *self, const char *key_file,
                                 const char *broker_key_file);

/* How long synchronous requests wait for the broker (default 5000 ms), and the interval of
   liveness pings while waiting (default 1000 ms; 3 missed = reconnect). */
ZF_EXPORT void zf_client_set_request_timeout(zf_client_t *self, int ms);
ZF_EXPORT void zf_client_set_heartbeat(zf_client_t *self, int ms);

/* Submits and waits for acceptance. opts may be NULL. Returns 0 with *id, or -1
   (ZF_CE_REJECTED: queue full, payload too large...; ZF_CE_UNREACHABLE).
   Payload limit: a payload over the broker's limit is ZF_CE_REJECTED with ZF_BROKER_TOO_LARGE
   and an error that begins "payload too large", whoever noticed it. One over
   1 MiB is checked here before it is sent ("payload too large: N bytes, the broker's limit
   is M"): the library first asks the broker for its limit (one PING round trip per such
   submit, never cached, so a restarted broker with another limit is judged by its own),
   because a payload far over the limit would make the broker drop the connection without a
   reply. Smaller payloads are judged by the broker, which always answers them. */
ZF_EXPORT int zf_client_submit(zf_client_t *self, const char *function, const void *data,
                               size_t len, const zf_submit_opts_t *opts, uint64_t *id);

/* Submits without waiting; *tag identifies the ACCEPTED or REJECTED event to come.
   The ACCEPTED of a job that goes straight to an idle worker may come up to 2 ms late, or,
   for a job that ends sooner, right before its RESULT, made from it: the broker then sends one message for both (LAZY_ACK, PROTOCOL.md
   §6.2), which saves a quick job a wake-up of this process's threads. Either way the
   ACCEPTED event comes first and only once. zf_client_submit still returns the id at once.
   Returns 0, or -1 if the message could not be queued. The payload is not checked against
   the broker's limit here (that would cost a round trip): over it, a REJECTED event with
   code ZF_BROKER_TOO_LARGE comes, but a payload over 2 x the limit + 1 MiB gets no answer
   (the broker drops the connection): use zf_client_submit for payloads that may be that big. */
ZF_EXPORT int zf_client_submit_async(zf_client_t *self, const char *function, const void *data,
                                     size_t len, const zf_submit_opts_t *opts, uint64_t *tag);

/* Waits up to timeout_ms (-1 = forever) for the job's result. Returns a RESULT event, or
   NULL (ZF_CE_TIMEOUT, "job ID: no result within T ms"; ZF_CE_REJECTED with
   ZF_BROKER_UNKNOWN_JOB when the broker does not know the job, e.g. it restarted without a
   journal). Other events that arrive meanwhile are kept for zf_client_next. */
ZF_EXPORT zf_event_t *zf_client_wait(zf_client_t *self, uint64_t id, int timeout_ms);

/* Asks for the job's current state: a RESULT event if finished, else a STATUS event; NULL
   on error (unknown job, unreachable). */
ZF_EXPORT zf_event_t *zf_client_get(zf_client_t *self, uint64_t id);

/* Cancels a job. Returns 0, or -1 (already finished: ZF_CE_REJECTED, ZF_BROKER_STATE). */
ZF_EXPORT int zf_client_cancel(zf_client_t *self, uint64_t id);

/* The next event, waiting up to timeout_ms (0 = do not wait, -1 = forever). NULL if none
   arrived (ZF_CE_TIMEOUT) or on error. */
ZF_EXPORT zf_event_t *zf_client_next(zf_client_t *self, int timeout_ms);

/* Broker statistics and the dead-letter list, as REPLY events whose output is a msgpack
   document (see PROTOCOL.md). NULL on error. */
ZF_EXPORT zf_event_t *zf_client_stats(zf_client_t *self);
ZF_EXPORT zf_event_t *zf_client_dead(zf_client_t *self, bool purge);
/* A listing query (zf_client_jobs). Zero it, then set state to -1 for any state. */
typedef struct {
    uint64_t after;       /* cursor: the previous page's "next"; 0 = from the start */
    uint32_t limit;       /* most jobs in the page, 1..1000; 0 = 100 */
    int state;            /* zfleet_state_t to match, or -1 for any */
    const char *function; /* NULL or "" = any */
    const char *tag;      /* NULL or one "k=v" the job's tags must hold */
} zf_jobs_query_t;

/* One page of the job listing, in id order, as a REPLY event whose output is a msgpack map
   {"jobs": [{"id", "state", "function", "attempts", "tags"}...], "next": N, "scanned": N}.
   Pass "next" as the following query's `after` until it is 0. A page looks at no more than
   10,000 jobs (bounded work in the broker), so a page may hold fewer than `limit` jobs, even
   none, and still have a "next". With CURVE on, only the caller's jobs (all for an admin).
   NULL on error (ZF_CE_USAGE for a malformed tag filter; ZF_CE_REJECTED, bad argument). */
ZF_EXPORT zf_event_t *zf_client_jobs(zf_client_t *self, const zf_jobs_query_t *q);

/* Requeues a dead-letter job. Returns 0, or -1. */
ZF_EXPORT int zf_client_retry(zf_client_t *self, uint64_t id);

/* A file descriptor that becomes readable when events may be waiting (ZMQ_FD). It is
   edge-triggered: once it wakes you, take events with zf_client_next(c, 0) until it
   returns NULL, since events already received (kept by a wait, or a RESULT behind the
   ACCEPTED made from it) do not make it readable again. */
ZF_EXPORT int zf_client_fd(zf_client_t *self);

ZF_EXPORT const char *zf_client_error(const zf_client_t *self);
ZF_EXPORT zf_client_errcode_t zf_client_errcode(const zf_client_t *self);
ZF_EXPORT int zf_client_brokercode(const zf_client_t *self);

ZF_EXPORT void zf_event_destroy(zf_event_t **self_p);

/* "queued", "running", "succeeded", ..., "lost", "output_lost"; "unknown" otherwise. */
ZF_EXPORT const char *zfleet_state_name(int state);

#ifdef __cplusplus
}
#endif
#endif
