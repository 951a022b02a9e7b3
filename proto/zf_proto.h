/*  zf_proto — the zfleet wire protocol: one codec for broker, worker and client.

    A message is a ZeroMQ multipart message: one header frame, then the payload frames its
    command defines (0 or 1). The header is 4 bytes ('Z', 'F', version, command) followed by
    a msgpack map from small unsigned keys to values. proto/PROTOCOL.md is the normative spec;
    this header is its C form.

    Ownership: zf_msg_decode never allocates; the strings of a decoded zf_msg_t point into the
    header buffer and live only as long as that buffer. zf_msg_encode writes into a caller
    buffer. Errors: functions return 0 on success and -1 on failure with an error code
    (ZF_E*) where one is documented.
*/
#ifndef ZF_PROTO_H
#define ZF_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZF_PROTO_VERSION 1
#define ZF_HEADER_MAX 4096     /* bytes: a longer header frame is malformed */
#define ZF_FN_MAX 63           /* bytes of a function name */
#define ZF_NAME_MAX 63         /* bytes of a worker or device name */
#define ZF_TEXT_MAX 1024       /* bytes of an error or progress text */
#define ZF_MAX_FUNCTIONS 32    /* functions one worker may announce */
#define ZF_TAGS_MAX 255        /* bytes of a job's joined tags (ZF_F_TAGS); = ZFLEET_TAGS_MAX */
#define ZF_TAGS_COUNT 8        /* tags one job may carry */
#define ZF_PIPE_STEPS 8        /* further steps (ZF_F_THEN) one SUBMIT may name */
#define ZF_RETRIES_MAX 20      /* handler failures one job (or pipeline step) may retry */
#define ZF_THEN_MAX 600        /* bytes of ZF_F_THEN */
#define ZF_JOBS_LIMIT_MAX 1000 /* jobs one JOBS page may hold */
#define ZF_JOBS_SCAN 10000     /* jobs one JOBS request may look at (bounded work per call) */
#define ZF_TAG_PART_MAX 63     /* bytes of one tag's key or value */
#define ZF_CLAIMS_MAX \
    256 /* leases one READY may claim (PROTOCOL.md §7.1): a worker's credits
                               cap; a header of 4096 bytes holds about this many anyway */

/* Commands. Client <-> broker: 0x01-0x3f requests, 0x40-0x7f replies.
   Worker <-> broker: 0x80-0xbf from worker, 0xc0-0xff from broker. */
typedef enum {
    ZF_CMD_SUBMIT = 0x01, /* +1 payload frame */
    ZF_CMD_WAIT = 0x02,
    ZF_CMD_GET = 0x03,
    ZF_CMD_CANCEL = 0x04,
    ZF_CMD_STATS = 0x05,
    ZF_CMD_DEAD = 0x06,
    ZF_CMD_RETRY = 0x07,
    ZF_CMD_PING = 0x08,
    ZF_CMD_JOBS = 0x09, /* listing (PROTOCOL.md §4.10): answered by REPLY + document */

    ZF_CMD_ACCEPTED = 0x41,
    ZF_CMD_REJECTED = 0x42,
    ZF_CMD_RESULT = 0x43, /* +1 output frame */
    ZF_CMD_STATUS = 0x44,
    ZF_CMD_PROGRESS = 0x45,
    ZF_CMD_REPLY = 0x46, /* +1 frame (msgpack document) for STATS and DEAD */
    ZF_CMD_PONG = 0x47,
    ZF_CMD_ERROR = 0x48,

    ZF_CMD_READY = 0x81,
    ZF_CMD_DONE = 0x82, /* +1 output frame */
    ZF_CMD_WPROGRESS = 0x83,
    ZF_CMD_HEARTBEAT = 0x84,
    ZF_CMD_BYE = 0x85,
    ZF_CMD_RECALLED = 0x86,
    ZF_CMD_OBITUARY = 0x87, /* from a fleet supervisor: a worker of its died, and why */
    ZF_CMD_CREDITS = 0x88,  /* a registered worker's new credits (adaptive prefetch) */

    ZF_CMD_JOB = 0xc1, /* +1 payload frame */
    ZF_CMD_WCANCEL = 0xc2,
    ZF_CMD_BHEARTBEAT = 0xc3,
    ZF_CMD_RESET = 0xc4,
    ZF_CMD_RECALL = 0xc5,
    ZF_CMD_CREDITED = 0xc6, /* answers CREDITS at once: the credits granted */
} zf_cmd_t;

/* Header field keys (the msgpack map keys). */
typedef enum {
    ZF_F_ID = 1,           /* uint64: job id */
    ZF_F_ATTEMPT = 2,      /* uint32: delivery number, 1-based */
    ZF_F_TAG = 3,          /* uint64: client correlation tag, echoed in replies */
    ZF_F_FN = 4,           /* str: function name */
    ZF_F_PRIORITY = 5,     /* int32: higher runs first; default 0 */
    ZF_F_TIMEOUT = 6,      /* uint32 ms: run timeout per attempt; 0 = none */
    ZF_F_DEADLINE = 7,     /* uint32 ms after acceptance by which the job must have started */
    ZF_F_MAX_ATTEMPTS = 8, /* uint32: deliveries before a job is given up; default 3 */
    ZF_F_DEVICE = 9,       /* uint32 zf_device_kind_t */
    ZF_F_STATUS = 10,      /* uint32 zf_state_t */
    ZF_F_CODE = 11,        /* uint32 zf_error_t */
    ZF_F_TEXT = 12,        /* str: error, progress or reason text */
    ZF_F_CREDITS = 13,     /* uint32: jobs a worker can hold */
    ZF_F_DURATION = 14,    /* uint64 us: handler run time */
    ZF_F_WORKER = 15,      /* str: worker name */
    ZF_F_DEVNAME = 16,     /* str: device label, e.g. "cpu:1" */
    ZF_F_PROGRESS = 17,    /* float64 in [0, 1] */
    ZF_F_FUNCTIONS = 18,   /* array of str */
    ZF_F_DEVINDEX = 19,    /* int32 */
    ZF_F_DEVMEM = 20,      /* uint64 bytes */
    ZF_F_HEARTBEAT = 21,   /* uint32 ms: sender's heartbeat interval */
    ZF_F_FLAGS = 22,       /* uint32: command-specific flags */
    ZF_F_QUEUED = 23,      /* uint64 us: time spent queued */
    ZF_F_SUPERVISOR =
        24, /* str (<= 64 bytes): READY: routing id of the fleet supervisor that started the
                             worker (the only peer besides the worker whose OBITUARY counts) */
    ZF_F_MAXPAYLOAD = 25, /* uint64 bytes: PONG: the largest payload the broker accepts */
    ZF_F_SESSION = 26,    /* uint64: READY: the worker process's session, random and nonzero,
                             the same on every registration of that process (re-attach) */
    ZF_F_CLAIMS = 27,     /* array of uint64 pairs: READY: the leases (id, attempt) the worker
                             still holds, oldest first (re-attach after a broker restart) */
    ZF_F_BATCH = 28,      /* uint32: DONE: jobs in the handler call that ran this one (1
                             unless the function is batched, issue 17) */
    ZF_F_RETRIES = 30,    /* uint32: SUBMIT: handler failures retried before `failed` (<= 20) */
    ZF_F_BACKOFF = 31,    /* uint32 ms: SUBMIT: first retry's backoff base; default 1000 */
    ZF_F_DELAY = 32,      /* uint32 ms: SUBMIT: run no earlier than this long after acceptance */
    ZF_F_NOT_BEFORE = 33, /* uint64 wall-clock ms since the epoch: SUBMIT: run no earlier */
    ZF_F_TAGS = 35,       /* str (<= ZF_TAGS_MAX bytes): SUBMIT, STATUS, RESULT: the job's tags,
                       "k=v" pairs joined by ','; at most ZF_TAGS_COUNT (PROTOCOL.md §4) */
    ZF_F_LIMIT = 36,      /* uint32: JOBS: most jobs in one page (1..ZF_JOBS_LIMIT_MAX) */
    ZF_F_THEN = 37,       /* str: SUBMIT: the pipeline's further steps, "fn@dev,fn@dev" (dev cpu,
                        gpu or any; "@dev" may be left out: any); at most ZF_PIPE_STEPS */
    ZF_F_STEP = 38,       /* uint32: STATUS, RESULT: the pipeline step the job is at, 1-based */
    ZF_F_STEPS = 39,      /* uint32: STATUS, RESULT: the pipeline's steps in all */
    ZF_F__MAX = 40,
} zf_field_t;

/* Device kinds. ZF_DEV_ANY is only meaningful as a job requirement. */
typedef enum { ZF_DEV_ANY = 0, ZF_DEV_CPU = 1, ZF_DEV_GPU = 2 } zf_device_kind_t;

/* Job states. Terminal: every state from ZF_ST_SUCCEEDED on. */
typedef enum {
    ZF_ST_QUEUED = 0,
    ZF_ST_RUNNING = 1,
    ZF_ST_SUCCEEDED = 2,
    ZF_ST_FAILED = 3,
    ZF_ST_TIMED_OUT = 4,
    ZF_ST_CANCELLED = 5,
    ZF_ST_EXPIRED = 6,
    ZF_ST_LOST = 7,
    ZF_ST_OUTPUT_LOST = 8, /* the handler succeeded but its output was not kept in full (cut
                              by the journal's bound, then the broker restarted): no bytes */
    ZF_ST_SCHEDULED = 9,   /* not terminal: waiting in the broker's timer heap for its time (a
                            delayed job, or a retry's backoff), not in a queue */
    ZF_ST__COUNT = 10,
} zf_state_t;

/* Error codes carried in REJECTED / ERROR / REPLY (ZF_F_CODE). */
typedef enum {
    ZF_OK = 0,
    ZF_EVERSION = 1,     /* unsupported protocol version */
    ZF_EMALFORMED = 2,   /* header could not be decoded, or bad frame count */
    ZF_ECOMMAND = 3,     /* unknown command for this socket */
    ZF_EUNKNOWN_JOB = 4, /* no such job id (never existed, or its result expired) */
    ZF_EQUEUE_FULL = 5,  /* a queue bound was reached; nothing was accepted */
    ZF_ETOO_LARGE = 6,   /* payload larger than the broker's limit */
    ZF_EBADARG = 7,      /* a field is missing or out of range */
    ZF_ESTATE = 8,       /* the job is in a state that forbids the request */
    ZF_ESHUTDOWN = 9,    /* the broker is stopping */
    ZF_EINTERNAL = 10,   /* the broker could not do it (out of memory) */
    ZF_EJOURNAL = 11,    /* the journal cannot be written (disk full, I/O error): nothing
                             new is accepted until it can */
    ZF_EDENIED = 12,     /* this connection's CURVE key has no (longer any) right to it:
                            removed from the broker's key directories (docs/SECURITY.md) */
    ZF__ECOUNT = 13,
} zf_error_t;

/* Flags (ZF_F_FLAGS). */
#define ZF_FLAG_PURGE 0x1      /* DEAD: clear the dead-letter list */
#define ZF_FLAG_NO_PUSH 0x2    /* SUBMIT: do not push the result to this connection */
#define ZF_FLAG_FORGET 0x4     /* SUBMIT: drop the result once pushed to the submitter */
#define ZF_FLAG_NO_ACK 0x8     /* SUBMIT: no ACCEPTED: the RESULT (or a REJECTED) answers it */
#define ZF_FLAG_PERMANENT 0x10 /* DONE (failed): do not retry, the input is bad */
#define ZF_FLAG_LAZY_ACK \
    0x20                    /* SUBMIT: ACCEPTED may wait ZF_LAZY_ACK_MS, or ride with the RESULT */
#define ZF_LAZY_ACK_MS 2    /* how long a LAZY_ACK acceptance may wait for its result */
#define ZF_FLAG_BYE_NOW 0x1 /* BYE: leaving now (clear: draining, finish what you hold) */
#define ZF_FLAG_REATTACH \
    0x1 /* BHEARTBEAT answering a READY: the broker judged its claims
                                (PROTOCOL.md §7.11); without it, claimed leases are void */
#define ZF_FLAG_CREDITS \
    0x100 /* BHEARTBEAT answering a READY: the broker takes CREDITS (PROTOCOL.md §7.12) */

/* A string that points into a header buffer; not NUL-terminated. */
typedef struct {
    const char *ptr;
    uint32_t len;
} zf_str_t;

/* One lease a READY claims (ZF_F_CLAIMS). */
typedef struct {
    uint64_t id;
    uint32_t attempt;
} zf_claim_t;

/* A decoded or to-be-encoded header. `present` has bit (1 << key) set for every field that
   is present; zf_msg_set_* helpers keep it up to date. */
typedef struct {
    uint8_t cmd;
    uint64_t present; /* 64 bits: keys run past 31 */
    uint64_t id, tag, duration_us, devmem, queued_us, max_payload, session, not_before;
    uint32_t attempt, timeout_ms, deadline_ms, max_attempts, device, status, code, credits;
    uint32_t batch; /* ZF_F_BATCH */
    uint32_t heartbeat_ms, flags, retries, backoff_ms, delay_ms;
    uint32_t limit, step, steps;
    int32_t priority, devindex;
    double progress;
    zf_str_t fn, text, worker, devname, supervisor, tags, then;
    uint32_t nfunctions, nclaims;
    zf_str_t functions[ZF_MAX_FUNCTIONS]; /* from here on: zf_msg_init leaves it uninitialised */
    zf_claim_t claims[ZF_CLAIMS_MAX];     /* valid up to nclaims */
} zf_msg_t;

static inline bool zf_msg_has(const zf_msg_t *m, zf_field_t f)
{
    return (m->present >> f) & 1ull;
}

/* Starts a header for `cmd` with no fields. */
void zf_msg_init(zf_msg_t *m, uint8_t cmd);

/* Field setters: each records the field as present. Strings are borrowed, not copied. */
void zf_msg_set_u64(zf_msg_t *m, zf_field_t f, uint64_t v);
void zf_msg_set_i32(zf_msg_t *m, zf_field_t f, int32_t v);
void zf_msg_set_str(zf_msg_t *m, zf_field_t f, const char *s);
void zf_msg_set_strn(zf_msg_t *m, zf_field_t f, const char *s, size_t len);
void zf_msg_set_progress(zf_msg_t *m, double v);
/* Adds a function name to ZF_F_FUNCTIONS. Returns -1 when ZF_MAX_FUNCTIONS are set. */
int zf_msg_add_function(zf_msg_t *m, const char *s);

/* Adds a lease to ZF_F_CLAIMS. Returns -1 when ZF_CLAIMS_MAX are set. */
int zf_msg_add_claim(zf_msg_t *m, uint64_t id, uint32_t attempt);

/* Encodes `m` into buf (at most cap bytes). Returns the length, or -1 if it does not fit. */
int zf_msg_encode(const zf_msg_t *m, void *buf, size_t cap);

/* Decodes a header frame. Returns 0, or -1 with *err set to ZF_EVERSION, ZF_EMALFORMED or
   ZF_ECOMMAND; `why` (may be NULL) receives a static description of the problem. The
   required fields of the command are checked (see PROTOCOL.md). */
int zf_msg_decode(zf_msg_t *m, const void *buf, size_t len, int *err, const char **why);

/* The number of payload frames that follow a header of `cmd` (0 or 1), or -1 if unknown. */
int zf_cmd_payload_frames(uint8_t cmd);

/* Names, for logs and the CLI. Never NULL. */
const char *zf_cmd_name(uint8_t cmd);
const char *zf_state_name(uint32_t state);
const char *zf_error_name(uint32_t code);
const char *zf_device_kind_name(uint32_t kind);
/* Parses "any", "cpu" or "gpu". Returns -1 on anything else. */
int zf_device_kind_parse(const char *s);

static inline bool zf_state_is_terminal(uint32_t st)
{
    return st >= ZF_ST_SUCCEEDED && st <= ZF_ST_OUTPUT_LOST;
}

/* Copies a zf_str_t into a NUL-terminated buffer, truncating to cap - 1 bytes. */
void zf_str_copy(char *dst, size_t cap, zf_str_t s);
/* True when s equals the C string c. */
bool zf_str_eq(zf_str_t s, const char *c);
/* True when the len bytes at p are well-formed UTF-8 (RFC 3629: no overlong forms, no
   surrogates, nothing above U+10FFFF). The codec does not check strings itself; the broker
   checks the ones it passes on to every client (function names). */
bool zf_utf8_valid(const char *p, size_t len);
/* The length of the longest prefix of the len bytes at p that is well-formed UTF-8: where
   a text cut to a byte bound may be cut again so that it stays valid. */
size_t zf_utf8_prefix(const char *p, size_t len);

/* Tags (ZF_F_TAGS): "k=v" pairs joined by ','. Checks the len bytes at p: NULL when they are
   well formed (an empty text is: no tags), else a static description of the first problem
   (too long, too many, a pair without '=' or with an empty or too long side, control
   characters, not UTF-8). */
const char *zf_tags_check(const char *p, size_t len);
/* True when the well-formed tags at `tags` hold the pair "k=v" given as want (wlen bytes). */
bool zf_tags_match(const char *tags, size_t len, const char *want, size_t wlen);

#endif
