/*  zf_proto — header codec. See zf_proto.h and PROTOCOL.md. */
#include "zf_proto.h"
#include "zf_proto_fields.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

#define U64(mem)                          \
    {                                     \
        T_U64, offsetof(zf_msg_t, mem), 0 \
    }
#define U32(mem)                          \
    {                                     \
        T_U32, offsetof(zf_msg_t, mem), 0 \
    }
#define I32(mem)                          \
    {                                     \
        T_I32, offsetof(zf_msg_t, mem), 0 \
    }
#define STR(mem, n)                       \
    {                                     \
        T_STR, offsetof(zf_msg_t, mem), n \
    }

const zf_fdesc_t zf_proto_fields[ZF_F__MAX] = {
    [ZF_F_ID] = U64(id),
    [ZF_F_ATTEMPT] = U32(attempt),
    [ZF_F_TAG] = U64(tag),
    [ZF_F_FN] = STR(fn, ZF_FN_MAX),
    [ZF_F_PRIORITY] = I32(priority),
    [ZF_F_TIMEOUT] = U32(timeout_ms),
    [ZF_F_DEADLINE] = U32(deadline_ms),
    [ZF_F_MAX_ATTEMPTS] = U32(max_attempts),
    [ZF_F_DEVICE] = U32(device),
    [ZF_F_STATUS] = U32(status),
    [ZF_F_CODE] = U32(code),
    [ZF_F_TEXT] = STR(text, ZF_TEXT_MAX),
    [ZF_F_CREDITS] = U32(credits),
    [ZF_F_DURATION] = U64(duration_us),
    [ZF_F_WORKER] = STR(worker, ZF_NAME_MAX),
    [ZF_F_DEVNAME] = STR(devname, ZF_NAME_MAX),
    [ZF_F_PROGRESS] = {T_F64, offsetof(zf_msg_t, progress), 0},
    [ZF_F_FUNCTIONS] = {T_STRARR, offsetof(zf_msg_t, functions), ZF_FN_MAX},
    [ZF_F_DEVINDEX] = I32(devindex),
    [ZF_F_DEVMEM] = U64(devmem),
    [ZF_F_HEARTBEAT] = U32(heartbeat_ms),
    [ZF_F_FLAGS] = U32(flags),
    [ZF_F_QUEUED] = U64(queued_us),
    [ZF_F_SUPERVISOR] = STR(supervisor, 64),
    [ZF_F_MAXPAYLOAD] = U64(max_payload),
    [ZF_F_SESSION] = U64(session),
    [ZF_F_CLAIMS] = {T_CLAIMS, offsetof(zf_msg_t, claims), 0},
    [ZF_F_BATCH] = U32(batch),
    [ZF_F_RETRIES] = U32(retries),
    [ZF_F_BACKOFF] = U32(backoff_ms),
    [ZF_F_DELAY] = U32(delay_ms),
    [ZF_F_NOT_BEFORE] = U64(not_before),
    [ZF_F_TAGS] = STR(tags, ZF_TAGS_MAX),
    [ZF_F_LIMIT] = U32(limit),
    [ZF_F_THEN] = STR(then, ZF_THEN_MAX),
    [ZF_F_STEP] = U32(step),
    [ZF_F_STEPS] = U32(steps),
};

#define B(f) (1ull << (f))

/* Fields each command must carry; everything else is optional. */
uint32_t zf_proto_required(uint8_t cmd)
{
    switch (cmd) {
    case ZF_CMD_SUBMIT: return B(ZF_F_TAG) | B(ZF_F_FN);
    case ZF_CMD_WAIT:
    case ZF_CMD_GET:
    case ZF_CMD_CANCEL:
    case ZF_CMD_RETRY: return B(ZF_F_ID);
    case ZF_CMD_STATS:
    case ZF_CMD_DEAD:
    case ZF_CMD_PING:
    case ZF_CMD_JOBS: return 0;
    case ZF_CMD_ACCEPTED: return B(ZF_F_TAG) | B(ZF_F_ID);
    case ZF_CMD_REJECTED: return B(ZF_F_TAG) | B(ZF_F_CODE);
    case ZF_CMD_RESULT: return B(ZF_F_ID) | B(ZF_F_STATUS);
    case ZF_CMD_STATUS: return B(ZF_F_ID) | B(ZF_F_STATUS);
    case ZF_CMD_PROGRESS: return B(ZF_F_ID) | B(ZF_F_PROGRESS);
    case ZF_CMD_REPLY: return B(ZF_F_CODE);
    case ZF_CMD_PONG: return 0;
    case ZF_CMD_ERROR: return B(ZF_F_CODE);
    case ZF_CMD_READY: return B(ZF_F_FUNCTIONS) | B(ZF_F_DEVICE);
    case ZF_CMD_DONE: return B(ZF_F_ID) | B(ZF_F_ATTEMPT) | B(ZF_F_STATUS);
    case ZF_CMD_WPROGRESS: return B(ZF_F_ID) | B(ZF_F_ATTEMPT) | B(ZF_F_PROGRESS);
    case ZF_CMD_HEARTBEAT:
    case ZF_CMD_BYE: return 0;
    case ZF_CMD_RECALLED: return B(ZF_F_ID) | B(ZF_F_ATTEMPT);
    case ZF_CMD_OBITUARY: return B(ZF_F_WORKER) | B(ZF_F_TEXT);
    case ZF_CMD_CREDITS:
    case ZF_CMD_CREDITED: return B(ZF_F_CREDITS);
    case ZF_CMD_JOB: return B(ZF_F_ID) | B(ZF_F_ATTEMPT) | B(ZF_F_FN);
    case ZF_CMD_WCANCEL: return B(ZF_F_ID) | B(ZF_F_ATTEMPT);
    case ZF_CMD_BHEARTBEAT:
    case ZF_CMD_RESET: return 0;
    case ZF_CMD_RECALL: return B(ZF_F_ID) | B(ZF_F_ATTEMPT);
    default: return UINT32_MAX;
    }
}

int zf_cmd_payload_frames(uint8_t cmd)
{
    switch (cmd) {
    case ZF_CMD_SUBMIT:
    case ZF_CMD_RESULT:
    case ZF_CMD_DONE:
    case ZF_CMD_JOB: return 1;
    case ZF_CMD_REPLY: return 1;
    default: return zf_proto_required(cmd) == UINT32_MAX ? -1 : 0;
    }
}

void zf_msg_init(zf_msg_t *m, uint8_t cmd)
{
    /* functions[] is half the struct and valid only up to nfunctions: not cleared, which
       keeps header handling off the broker's profile */
    memset(m, 0, offsetof(zf_msg_t, functions));
    m->cmd = cmd;
}

static void *field_ptr(zf_msg_t *m, zf_field_t f)
{
    return (char *)m + zf_proto_fields[f].off;
}

void zf_msg_set_u64(zf_msg_t *m, zf_field_t f, uint64_t v)
{
    assert(f > 0 && f < ZF_F__MAX);
    switch (zf_proto_fields[f].type) {
    case T_U64: *(uint64_t *)field_ptr(m, f) = v; break;
    case T_U32: *(uint32_t *)field_ptr(m, f) = (uint32_t)v; break;
    case T_I32: *(int32_t *)field_ptr(m, f) = (int32_t)v; break;
    default: assert(!"not an integer field");
    }
    m->present |= B(f);
}

void zf_msg_set_i32(zf_msg_t *m, zf_field_t f, int32_t v)
{
    assert(zf_proto_fields[f].type == T_I32);
    *(int32_t *)field_ptr(m, f) = v;
    m->present |= B(f);
}

void zf_msg_set_strn(zf_msg_t *m, zf_field_t f, const char *s, size_t len)
{
    assert(zf_proto_fields[f].type == T_STR);
    if (len > zf_proto_fields[f].maxlen)
        len = zf_proto_fields[f].maxlen;
    zf_str_t *dst = field_ptr(m, f);
    dst->ptr = s;
    dst->len = (uint32_t)len;
    m->present |= B(f);
}

void zf_msg_set_str(zf_msg_t *m, zf_field_t f, const char *s)
{
    zf_msg_set_strn(m, f, s ? s : "", s ? strlen(s) : 0);
}

void zf_msg_set_progress(zf_msg_t *m, double v)
{
    m->progress = v < 0 ? 0 : v > 1 ? 1 : v;
    m->present |= B(ZF_F_PROGRESS);
}

int zf_msg_add_function(zf_msg_t *m, const char *s)
{
    if (m->nfunctions >= ZF_MAX_FUNCTIONS)
        return -1;
    size_t len = strlen(s);
    m->functions[m->nfunctions].ptr = s;
    m->functions[m->nfunctions].len = (uint32_t)(len > ZF_FN_MAX ? ZF_FN_MAX : len);
    m->nfunctions++;
    m->present |= B(ZF_F_FUNCTIONS);
    return 0;
}

int zf_msg_add_claim(zf_msg_t *m, uint64_t id, uint32_t attempt)
{
    if (m->nclaims >= ZF_CLAIMS_MAX)
        return -1;
    m->claims[m->nclaims++] = (zf_claim_t){id, attempt};
    m->present |= B(ZF_F_CLAIMS);
    return 0;
}

/* ---- encoding ----
   Headers are written as msgpack byte by byte into the caller's buffer: the subset we need
   (a map of small unsigned keys to integers, a double, strings, one array of strings) is
   a handful of formats, and writing them directly costs a fraction of going through
   msgpack-c's packer callbacks, which matters on the broker's hot path. The output is
   plain msgpack, smallest encodings first, decoded by msgpack-c like any other. */

typedef struct {
    unsigned char *p, *end;
    bool overflow;
} wr_t;

/* Room for n more bytes; once short, every later write is refused too. */
static bool room(wr_t *w, size_t n)
{
    if (w->overflow || (size_t)(w->end - w->p) < n)
        w->overflow = true;
    return !w->overflow;
}

static void wr_byte(wr_t *w, unsigned v)
{
    if (room(w, 1))
        *w->p++ = (unsigned char)v;
}

/* a type byte followed by the low n bytes of v, big-endian */
static void wr_be(wr_t *w, unsigned type, uint64_t v, int n)
{
    if (!room(w, (size_t)n + 1))
        return;
    w->p[0] = (unsigned char)type;
    for (int i = 0; i < n; i++)
        w->p[1 + i] = (unsigned char)(v >> (8 * (n - 1 - i)));
    w->p += n + 1;
}

static void wr_uint(wr_t *w, uint64_t v)
{
    if (v <= 0x7f)
        wr_byte(w, (unsigned)v);
    else if (v <= 0xff)
        wr_be(w, 0xcc, v, 1);
    else if (v <= 0xffff)
        wr_be(w, 0xcd, v, 2);
    else if (v <= 0xffffffffu)
        wr_be(w, 0xce, v, 4);
    else
        wr_be(w, 0xcf, v, 8);
}

static void wr_int(wr_t *w, int64_t v)
{
    if (v >= 0)
        wr_uint(w, (uint64_t)v);
    else if (v >= -32)
        wr_byte(w, (unsigned)(0xe0 | (v & 0x1f)));
    else if (v >= -128)
        wr_be(w, 0xd0, (uint64_t)v, 1);
    else if (v >= -32768)
        wr_be(w, 0xd1, (uint64_t)v, 2);
    else
        wr_be(w, 0xd2, (uint64_t)v, 4);
}

static void wr_str(wr_t *w, const char *s, uint32_t n)
{
    if (n <= 31)
        wr_byte(w, 0xa0 | n);
    else if (n <= 0xff)
        wr_be(w, 0xd9, n, 1);
    else if (n <= 0xffff)
        wr_be(w, 0xda, n, 2);
    else
        wr_be(w, 0xdb, n, 4);
    if (n && room(w, n)) {
        memcpy(w->p, s, n);
        w->p += n;
    }
}

static void wr_len(wr_t *w, unsigned fix, unsigned type16, uint32_t n)
{
    if (n <= 15)
        wr_byte(w, fix | n);
    else
        wr_be(w, type16, n, 2);
}

static void pack_field(wr_t *w, const zf_msg_t *m, zf_field_t f)
{
    const void *p = (const char *)m + zf_proto_fields[f].off;
    wr_byte(w, f); /* keys are below 128: a positive fixint */
    switch (zf_proto_fields[f].type) {
    case T_U64: wr_uint(w, *(const uint64_t *)p); break;
    case T_U32: wr_uint(w, *(const uint32_t *)p); break;
    case T_I32: wr_int(w, *(const int32_t *)p); break;
    case T_F64: {
        uint64_t bits;
        memcpy(&bits, p, sizeof bits);
        wr_be(w, 0xcb, bits, 8);
        break;
    }
    case T_STR: {
        const zf_str_t *s = p;
        wr_str(w, s->ptr, s->len);
        break;
    }
    case T_STRARR:
        wr_len(w, 0x90, 0xdc, m->nfunctions);
        for (uint32_t i = 0; i < m->nfunctions; i++)
            wr_str(w, m->functions[i].ptr, m->functions[i].len);
        break;
    case T_CLAIMS: /* flat: id, attempt, id, attempt, ... */
        wr_len(w, 0x90, 0xdc, 2 * m->nclaims);
        for (uint32_t i = 0; i < m->nclaims; i++) {
            wr_uint(w, m->claims[i].id);
            wr_uint(w, m->claims[i].attempt);
        }
        break;
    case T_NONE: assert(!"no such field");
    }
}

int zf_msg_encode(const zf_msg_t *m, void *buf, size_t cap)
{
    if (cap < 4)
        return -1;
    unsigned char *out = buf;
    out[0] = 'Z';
    out[1] = 'F';
    out[2] = ZF_PROTO_VERSION;
    out[3] = m->cmd;
    wr_t w = {out + 4, out + cap, false};
    uint64_t fields = m->present & ((1ull << ZF_F__MAX) - 2); /* keys 1 .. ZF_F__MAX - 1 */
    wr_len(&w, 0x80, 0xde, (uint32_t)__builtin_popcountll(fields));
    for (; fields; fields &= fields - 1) /* in key order: the lowest set bit first */
        pack_field(&w, m, (zf_field_t)__builtin_ctzll(fields));
    return w.overflow ? -1 : (int)(w.p - out);
}

/* ---- decoding ---- */

/* Read straight off the bytes, as the encoder writes them. A header is a few dozen bytes,
   and msgpack-c's object tree (a zone, an array per container, an object per value) cost
   more than the rest of a message's handling on the broker, the worker and the client
   (bench/README.md, "Broker instructions per job"). The decoder accepts exactly what
   msgpack_unpack accepted, which is what PROTOCOL.md §3 allows: every msgpack format,
   nesting up to msgpack-c's 32 open containers, unknown keys skipped whatever their value.
   tests/ref_decode.c keeps the msgpack-c decoder, and test_proto and the fuzzer hold the
   two to the same answer on every input.

   Errors are found in the order the old decoder found them: the structure first (a
   container that declares more items than the bytes left could hold, a truncated or
   invalid object, trailing bytes), then the map's fields in order, then the required
   ones. */

typedef enum {
    V_UINT,
    V_NINT,
    V_FLOAT,
    V_STR,
    V_BIN,
    V_EXT,
    V_ARRAY,
    V_MAP,
    V_NIL,
    V_BOOL
} vkind_t;

typedef struct {
    vkind_t kind;
    uint64_t u;              /* V_UINT: the value; V_NINT: its int64 bits; else a count or length */
    double f;                /* V_FLOAT */
    const unsigned char *at; /* V_STR, V_BIN, V_EXT: the bytes; V_ARRAY, V_MAP: the first item */
} val_t;

typedef struct {
    const unsigned char *p, *end;
    uint64_t pending; /* objects still to read: never more than the bytes left */
    const char *why;  /* the first structural error */
} rd_t;

enum { DEPTH_MAX = 32 }; /* msgpack-c's MSGPACK_EMBED_STACK_SIZE: containers open at once */

static bool broken(rd_t *r, const char *why)
{
    if (!r->why)
        r->why = why;
    return false;
}

static bool take(rd_t *r, size_t n, const unsigned char **at)
{
    if ((size_t)(r->end - r->p) < n)
        return broken(r, "truncated header");
    *at = r->p;
    r->p += n;
    return true;
}

/* n bytes, big-endian, at r->p */
static bool take_be(rd_t *r, int n, uint64_t *v)
{
    const unsigned char *q;
    if (!take(r, (size_t)n, &q))
        return false;
    uint64_t x = 0;
    for (int i = 0; i < n; i++)
        x = x << 8 | q[i];
    *v = x;
    return true;
}

/* A str, bin or ext body: lenbytes of length (ext: then a type byte), then the bytes. */
static bool take_body(rd_t *r, val_t *v, vkind_t kind, int lenbytes, uint64_t fixed)
{
    v->kind = kind;
    uint64_t n = fixed;
    if (lenbytes && !take_be(r, lenbytes, &n))
        return false;
    const unsigned char *type;
    if (kind == V_EXT && !take(r, 1, &type))
        return false;
    v->u = n;
    return take(r, (size_t)n, &v->at);
}

/* A signed integer of n bytes: msgpack-c makes a non-negative one unsigned. */
static bool take_int(rd_t *r, val_t *v, int n)
{
    uint64_t x;
    if (!take_be(r, n, &x))
        return false;
    int shift = 64 - 8 * n;
    int64_t s = (int64_t)(x << shift) >> shift;
    v->kind = s < 0 ? V_NINT : V_UINT;
    v->u = (uint64_t)s;
    return true;
}

static bool take_float(rd_t *r, val_t *v, int n)
{
    uint64_t x;
    if (!take_be(r, n, &x))
        return false;
    v->kind = V_FLOAT;
    if (n == 4) {
        uint32_t bits = (uint32_t)x;
        float f;
        memcpy(&f, &bits, sizeof f);
        v->f = f;
    } else {
        memcpy(&v->f, &x, sizeof v->f);
    }
    return true;
}

static bool head_of(rd_t *r, unsigned t, val_t *v)
{
    if (t <= 0x7f || t >= 0xe0) {
        v->kind = t <= 0x7f ? V_UINT : V_NINT;
        v->u = t <= 0x7f ? t : (uint64_t)(int64_t)(int8_t)t;
        return true;
    }
    if (t <= 0x9f) {
        v->kind = t <= 0x8f ? V_MAP : V_ARRAY;
        v->u = t & 0x0f;
        return true;
    }
    if (t <= 0xbf)
        return take_body(r, v, V_STR, 0, t & 0x1f);
    static const int width[4] = {1, 2, 4, 8};
    switch (t) {
    case 0xc0: v->kind = V_NIL; return true;
    case 0xc2:
    case 0xc3: v->kind = V_BOOL; return true;
    case 0xc4:
    case 0xc5:
    case 0xc6: return take_body(r, v, V_BIN, width[t - 0xc4], 0);
    case 0xc7:
    case 0xc8:
    case 0xc9: return take_body(r, v, V_EXT, width[t - 0xc7], 0);
    case 0xca: return take_float(r, v, 4);
    case 0xcb: return take_float(r, v, 8);
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf: v->kind = V_UINT; return take_be(r, width[t - 0xcc], &v->u);
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: return take_int(r, v, width[t - 0xd0]);
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7: return take_body(r, v, V_EXT, 0, (uint64_t)width[t - 0xd4]);
    case 0xd8: return take_body(r, v, V_EXT, 0, 16);
    case 0xd9:
    case 0xda:
    case 0xdb: return take_body(r, v, V_STR, width[t - 0xd9], 0);
    case 0xdc:
    case 0xdd: v->kind = V_ARRAY; return take_be(r, t == 0xdc ? 2 : 4, &v->u);
    case 0xde:
    case 0xdf: v->kind = V_MAP; return take_be(r, t == 0xde ? 2 : 4, &v->u);
    default: return broken(r, "header is not valid msgpack"); /* 0xc1, never used */
    }
}

/* The head of one object: a scalar whole, a str, bin or ext with its bytes, a container's
   count (its items follow). A container declaring more items than the bytes left could
   hold (every object takes one byte at least) is refused before anything is read of it:
   the old decoder's guard against a 9-byte header asking msgpack-c for 100 GB. */
static bool rd_head(rd_t *r, val_t *v)
{
    const unsigned char *t;
    if (!take(r, 1, &t) || !head_of(r, *t, v))
        return false;
    r->pending--;
    if (v->kind == V_ARRAY || v->kind == V_MAP) {
        r->pending += v->kind == V_MAP ? 2 * v->u : v->u;
        v->at = r->p;
    }
    if (r->pending > (uint64_t)(r->end - r->p))
        return broken(r, "header declares more items than it holds");
    return true;
}

/* One whole object (a container with all it holds), `depth` containers open around it. */
static bool rd_obj(rd_t *r, int depth, val_t *v)
{
    if (!rd_head(r, v))
        return false;
    if (v->kind != V_ARRAY && v->kind != V_MAP)
        return true;
    if (depth >= DEPTH_MAX)
        return broken(r, "header is not valid msgpack");
    uint64_t items = v->kind == V_MAP ? 2 * v->u : v->u;
    for (uint64_t i = 0; i < items; i++) {
        val_t item;
        if (!rd_obj(r, depth + 1, &item))
            return false;
    }
    return true;
}

/* The items of an array already read whole by rd_obj, to read again: that cannot fail. */
static rd_t items_of(const rd_t *r, const val_t *array)
{
    return (rd_t){array->at, r->end, array->u, NULL};
}

static bool val_str(const val_t *v, uint32_t maxlen, zf_str_t *s)
{
    if (v->kind != V_STR || v->u > maxlen)
        return false;
    s->ptr = v->u ? (const char *)v->at : "";
    s->len = (uint32_t)v->u;
    return true;
}

static bool val_functions(zf_msg_t *m, const rd_t *r, const val_t *v)
{
    if (v->kind != V_ARRAY || v->u > ZF_MAX_FUNCTIONS)
        return false;
    m->nfunctions = (uint32_t)v->u;
    rd_t in = items_of(r, v);
    for (uint32_t i = 0; i < m->nfunctions; i++) {
        val_t s;
        rd_obj(&in, 2, &s);
        if (!val_str(&s, ZF_FN_MAX, &m->functions[i]) || m->functions[i].len == 0)
            return false;
    }
    return true;
}

/* A flat array of (id, attempt) pairs: an even count of at most 2 x ZF_CLAIMS_MAX unsigned
   integers, each attempt a uint32. */
static bool val_claims(zf_msg_t *m, const rd_t *r, const val_t *v)
{
    if (v->kind != V_ARRAY || v->u % 2 || v->u > 2 * ZF_CLAIMS_MAX)
        return false;
    m->nclaims = (uint32_t)v->u / 2;
    rd_t in = items_of(r, v);
    for (uint32_t i = 0; i < m->nclaims; i++) {
        val_t id, attempt;
        rd_obj(&in, 2, &id);
        rd_obj(&in, 2, &attempt);
        if (id.kind != V_UINT || attempt.kind != V_UINT || attempt.u > UINT32_MAX)
            return false;
        m->claims[i] = (zf_claim_t){id.u, (uint32_t)attempt.u};
    }
    return true;
}

static bool val_field(zf_msg_t *m, zf_field_t f, const rd_t *r, const val_t *v)
{
    void *p = field_ptr(m, f);
    switch (zf_proto_fields[f].type) {
    case T_U64: *(uint64_t *)p = v->u; return v->kind == V_UINT;
    case T_U32: *(uint32_t *)p = (uint32_t)v->u; return v->kind == V_UINT && v->u <= UINT32_MAX;
    case T_I32:
        *(int32_t *)p = (int32_t)v->u;
        return (v->kind == V_UINT && v->u <= INT32_MAX) ||
               (v->kind == V_NINT && (int64_t)v->u >= INT32_MIN);
    case T_F64: {
        double d = v->kind == V_FLOAT ? v->f : (double)v->u;
        *(double *)p = d;
        return (v->kind == V_FLOAT || v->kind == V_UINT) && d >= 0 && d <= 1;
    }
    case T_STR: return val_str(v, zf_proto_fields[f].maxlen, (zf_str_t *)p);
    case T_STRARR: return val_functions(m, r, v);
    case T_CLAIMS: return val_claims(m, r, v);
    case T_NONE: break;
    }
    return true;
}

static int fail(int *err, const char **why, int code, const char *text)
{
    if (err)
        *err = code;
    if (why)
        *why = text;
    return -1;
}

/* The map's pairs, each read whole; the first field that is wrong is kept in *bad. */
static void rd_fields(zf_msg_t *m, rd_t *r, uint64_t pairs, const char **bad)
{
    for (uint64_t i = 0; i < pairs; i++) {
        val_t k, v;
        if (!rd_obj(r, 1, &k) || !rd_obj(r, 1, &v))
            return;
        if (*bad)
            continue;
        if (k.kind != V_UINT) {
            *bad = "header key is not an unsigned integer";
            continue;
        }
        if (k.u == 0 || k.u >= ZF_F__MAX || zf_proto_fields[k.u].type == T_NONE)
            continue; /* unknown (newer) keys are skipped */
        if (!val_field(m, (zf_field_t)k.u, r, &v))
            *bad = "header field has the wrong type or range";
        m->present |= B(k.u);
    }
}

int zf_msg_decode(zf_msg_t *m, const void *buf, size_t len, int *err, const char **why)
{
    const unsigned char *b = buf;
    if (len < 4 || b[0] != 'Z' || b[1] != 'F')
        return fail(err, why, ZF_EMALFORMED, "not a zfleet header (bad signature)");
    if (b[2] != ZF_PROTO_VERSION)
        return fail(err, why, ZF_EVERSION, "unsupported protocol version");
    if (len > ZF_HEADER_MAX)
        return fail(err, why, ZF_EMALFORMED, "header too large");
    zf_msg_init(m, b[3]);
    uint32_t required = zf_proto_required(m->cmd);
    if (required == UINT32_MAX)
        return fail(err, why, ZF_ECOMMAND, "unknown command");
    rd_t r = {b + 4, b + len, 1, NULL};
    const char *bad = NULL;
    val_t top;
    if (rd_head(&r, &top) && top.kind == V_MAP)
        rd_fields(m, &r, top.u, &bad);
    else if (!r.why) { /* read it whole: its structure's errors come first */
        r = (rd_t){b + 4, b + len, 1, NULL};
        if (rd_obj(&r, 0, &top))
            bad = "header is not a map";
    }
    if (r.why)
        return fail(err, why, ZF_EMALFORMED, r.why);
    if (r.p != r.end)
        return fail(err, why, ZF_EMALFORMED, "trailing bytes after header map");
    if (bad)
        return fail(err, why, ZF_EMALFORMED, bad);
    if ((m->present & required) != required)
        return fail(err, why, ZF_EMALFORMED, "a required header field is missing");
    return 0;
}

/* ---- names ---- */

const char *zf_cmd_name(uint8_t cmd)
{
    switch (cmd) {
    case ZF_CMD_SUBMIT: return "SUBMIT";
    case ZF_CMD_WAIT: return "WAIT";
    case ZF_CMD_GET: return "GET";
    case ZF_CMD_CANCEL: return "CANCEL";
    case ZF_CMD_STATS: return "STATS";
    case ZF_CMD_DEAD: return "DEAD";
    case ZF_CMD_RETRY: return "RETRY";
    case ZF_CMD_PING: return "PING";
    case ZF_CMD_JOBS: return "JOBS";
    case ZF_CMD_ACCEPTED: return "ACCEPTED";
    case ZF_CMD_REJECTED: return "REJECTED";
    case ZF_CMD_RESULT: return "RESULT";
    case ZF_CMD_STATUS: return "STATUS";
    case ZF_CMD_PROGRESS: return "PROGRESS";
    case ZF_CMD_REPLY: return "REPLY";
    case ZF_CMD_PONG: return "PONG";
    case ZF_CMD_ERROR: return "ERROR";
    case ZF_CMD_READY: return "READY";
    case ZF_CMD_DONE: return "DONE";
    case ZF_CMD_WPROGRESS: return "WPROGRESS";
    case ZF_CMD_HEARTBEAT: return "HEARTBEAT";
    case ZF_CMD_BYE: return "BYE";
    case ZF_CMD_RECALLED: return "RECALLED";
    case ZF_CMD_OBITUARY: return "OBITUARY";
    case ZF_CMD_JOB: return "JOB";
    case ZF_CMD_WCANCEL: return "WCANCEL";
    case ZF_CMD_BHEARTBEAT: return "BHEARTBEAT";
    case ZF_CMD_RESET: return "RESET";
    case ZF_CMD_RECALL: return "RECALL";
    case ZF_CMD_CREDITS: return "CREDITS";
    case ZF_CMD_CREDITED: return "CREDITED";
    default: return "?";
    }
}

const char *zf_state_name(uint32_t st)
{
    static const char *names[ZF_ST__COUNT] = {"queued",      "running",   "succeeded", "failed",
                                              "timed_out",   "cancelled", "expired",   "lost",
                                              "output_lost", "scheduled"};
    return st < ZF_ST__COUNT ? names[st] : "unknown";
}

const char *zf_error_name(uint32_t code)
{
    static const char *names[ZF__ECOUNT] = {"ok",
                                            "unsupported protocol version",
                                            "malformed message",
                                            "unknown command",
                                            "unknown job",
                                            "queue full",
                                            "payload too large",
                                            "bad argument",
                                            "wrong state",
                                            "broker shutting down",
                                            "internal error",
                                            "journal unavailable",
                                            "access denied"};
    return code < ZF__ECOUNT ? names[code] : "unknown error";
}

const char *zf_device_kind_name(uint32_t kind)
{
    return kind == ZF_DEV_CPU ? "cpu" : kind == ZF_DEV_GPU ? "gpu" : "any";
}

int zf_device_kind_parse(const char *s)
{
    if (!strcmp(s, "any"))
        return ZF_DEV_ANY;
    if (!strcmp(s, "cpu"))
        return ZF_DEV_CPU;
    if (!strcmp(s, "gpu"))
        return ZF_DEV_GPU;
    return -1;
}

void zf_str_copy(char *dst, size_t cap, zf_str_t s)
{
    assert(cap > 0);
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    if (n)
        memcpy(dst, s.ptr, n);
    dst[n] = 0;
}

bool zf_str_eq(zf_str_t s, const char *c)
{
    size_t n = strlen(c);
    return n == s.len && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

size_t zf_utf8_prefix(const char *p, size_t len)
{
    const unsigned char *start = (const unsigned char *)p, *s = start, *end = s + len;
    while (s < end) {
        const unsigned char *here = s;
        unsigned c = *s++;
        if (c < 0x80)
            continue;
        int more;
        unsigned min; /* the smallest code point of that length: below it is overlong */
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) {
            more = 1, min = 0x80, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            more = 2, min = 0x800, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            more = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return (size_t)(here - start); /* a continuation byte first, or 0xf8-0xff */
        }
        if (end - s < more)
            return (size_t)(here - start);
        for (int i = 0; i < more; i++, s++) {
            if ((*s & 0xc0) != 0x80)
                return (size_t)(here - start);
            cp = cp << 6 | (*s & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return (size_t)(here - start);
    }
    return len;
}

bool zf_utf8_valid(const char *p, size_t len)
{
    return zf_utf8_prefix(p, len) == len;
}

/* ---- tags ---- */

/* One "k=v" pair: both sides non-empty and at most ZF_TAG_PART_MAX bytes, the key without
   '=' (the first '=' splits), neither with ',' (the separator) nor control bytes. */
static const char *tag_check(const char *p, size_t n)
{
    const char *eq = memchr(p, '=', n);
    if (!eq)
        return "a tag must be key=value";
    size_t klen = (size_t)(eq - p), vlen = n - klen - 1;
    if (klen == 0 || vlen == 0)
        return "a tag's key and value must not be empty";
    if (klen > ZF_TAG_PART_MAX || vlen > ZF_TAG_PART_MAX)
        return "a tag's key or value is longer than 63 bytes";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
            return "a tag must not hold control characters";
    return NULL;
}

const char *zf_tags_check(const char *p, size_t len)
{
    if (len == 0)
        return NULL; /* no tags */
    if (len > ZF_TAGS_MAX)
        return "tags are longer than 255 bytes in all";
    if (!zf_utf8_valid(p, len))
        return "tags are not valid UTF-8";
    uint32_t count = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && p[i] != ',')
            continue;
        if (++count > ZF_TAGS_COUNT)
            return "more than 8 tags";
        const char *why = tag_check(p + start, i - start);
        if (why)
            return why;
        start = i + 1;
    }
    return NULL;
}

bool zf_tags_match(const char *tags, size_t len, const char *want, size_t wlen)
{
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && tags[i] != ',')
            continue;
        if (i - start == wlen && memcmp(tags + start, want, wlen) == 0)
            return true;
        start = i + 1;
    }
    return false;
}
