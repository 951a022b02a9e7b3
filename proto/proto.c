/*  zf_proto — header codec. See zf_proto.h and PROTOCOL.md. */
#include "zf_proto.h"

#include <assert.h>
#include <msgpack.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>

typedef enum { T_NONE, T_U64, T_U32, T_I32, T_STR, T_F64, T_STRARR, T_CLAIMS } ftype_t;

typedef struct {
    ftype_t type;
    size_t off;
    uint32_t maxlen; /* strings: longest accepted */
} fdesc_t;

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

static const fdesc_t fields[ZF_F__MAX] = {
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
static uint32_t required_fields(uint8_t cmd)
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
    default: return required_fields(cmd) == UINT32_MAX ? -1 : 0;
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
    return (char *)m + fields[f].off;
}

void zf_msg_set_u64(zf_msg_t *m, zf_field_t f, uint64_t v)
{
    assert(f > 0 && f < ZF_F__MAX);
    switch (fields[f].type) {
    case T_U64: *(uint64_t *)field_ptr(m, f) = v; break;
    case T_U32: *(uint32_t *)field_ptr(m, f) = (uint32_t)v; break;
    case T_I32: *(int32_t *)field_ptr(m, f) = (int32_t)v; break;
    default: assert(!"not an integer field");
    }
    m->present |= B(f);
}

void zf_msg_set_i32(zf_msg_t *m, zf_field_t f, int32_t v)
{
    assert(fields[f].type == T_I32);
    *(int32_t *)field_ptr(m, f) = v;
    m->present |= B(f);
}

void zf_msg_set_strn(zf_msg_t *m, zf_field_t f, const char *s, size_t len)
{
    assert(fields[f].type == T_STR);
    if (len > fields[f].maxlen)
        len = fields[f].maxlen;
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

static void wr_bytes(wr_t *w, const void *src, size_t n)
{
    if (w->overflow || (size_t)(w->end - w->p) < n) {
        w->overflow = true;
        return;
    }
    if (n)
        memcpy(w->p, src, n);
    w->p += n;
}

static void wr_byte(wr_t *w, unsigned v)
{
    unsigned char b = (unsigned char)v;
    wr_bytes(w, &b, 1);
}

/* a type byte followed by the low n bytes of v, big-endian */
static void wr_be(wr_t *w, unsigned type, uint64_t v, int n)
{
    unsigned char b[9];
    b[0] = (unsigned char)type;
    for (int i = 0; i < n; i++)
        b[1 + i] = (unsigned char)(v >> (8 * (n - 1 - i)));
    wr_bytes(w, b, (size_t)n + 1);
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
    wr_bytes(w, s, n);
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
    const void *p = (const char *)m + fields[f].off;
    wr_byte(w, f); /* keys are below 128: a positive fixint */
    switch (fields[f].type) {
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
    wr_len(&w, 0x80, 0xde, (uint32_t)__builtin_popcountll(m->present));
    for (int f = 1; f < ZF_F__MAX; f++)
        if (zf_msg_has(m, (zf_field_t)f))
            pack_field(&w, m, (zf_field_t)f);
    return w.overflow ? -1 : (int)(w.p - out);
}

/* ---- decoding ---- */

static bool obj_to_u64(const msgpack_object *o, uint64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *v = o->via.u64;
        return true;
    }
    return false;
}

static bool obj_to_str(const msgpack_object *o, uint32_t maxlen, zf_str_t *s)
{
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size > maxlen)
        return false;
    /* msgpack-c may give an empty string a NULL pointer; callers get "" instead */
    s->ptr = o->via.str.size ? o->via.str.ptr : "";
    s->len = o->via.str.size;
    return true;
}

/* A flat array of (id, attempt) pairs: an even count of at most 2 x ZF_CLAIMS_MAX
   unsigned integers, each attempt a uint32. */
static bool decode_claims(zf_msg_t *m, const msgpack_object *o)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size % 2 ||
        o->via.array.size > 2 * ZF_CLAIMS_MAX)
        return false;
    m->nclaims = o->via.array.size / 2;
    for (uint32_t i = 0; i < m->nclaims; i++) {
        uint64_t id, attempt;
        if (!obj_to_u64(&o->via.array.ptr[2 * i], &id) ||
            !obj_to_u64(&o->via.array.ptr[2 * i + 1], &attempt) || attempt > UINT32_MAX)
            return false;
        m->claims[i] = (zf_claim_t){id, (uint32_t)attempt};
    }
    return true;
}

static bool decode_field(zf_msg_t *m, zf_field_t f, const msgpack_object *o)
{
    void *p = field_ptr(m, f);
    uint64_t u;
    switch (fields[f].type) {
    case T_U64: return obj_to_u64(o, (uint64_t *)p);
    case T_U32:
        if (!obj_to_u64(o, &u) || u > UINT32_MAX)
            return false;
        *(uint32_t *)p = (uint32_t)u;
        return true;
    case T_I32:
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT32_MAX)
            *(int32_t *)p = (int32_t)o->via.u64;
        else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 >= INT32_MIN)
            *(int32_t *)p = (int32_t)o->via.i64;
        else
            return false;
        return true;
    case T_F64:
        if (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32)
            *(double *)p = o->via.f64;
        else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            *(double *)p = (double)o->via.u64;
        else
            return false;
        return *(double *)p >= 0 && *(double *)p <= 1;
    case T_STR: return obj_to_str(o, fields[f].maxlen, (zf_str_t *)p);
    case T_STRARR:
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > ZF_MAX_FUNCTIONS)
            return false;
        m->nfunctions = o->via.array.size;
        for (uint32_t i = 0; i < m->nfunctions; i++)
            if (!obj_to_str(&o->via.array.ptr[i], ZF_FN_MAX, &m->functions[i]) ||
                m->functions[i].len == 0)
                return false;
        return true;
    case T_CLAIMS: return decode_claims(m, o);
    case T_NONE: break;
    }
    return true; /* unknown keys are ignored, for forward compatibility */
}

static int fail(int *err, const char **why, int code, const char *text)
{
    if (err)
        *err = code;
    if (why)
        *why = text;
    return -1;
}

/* msgpack-c allocates a container's element array from its declared count before it reads
   any element, so a 9-byte header declaring an array of 2^32 - 1 items would ask for about
   100 GB. This linear pre-scan rejects any container that declares more items than the
   bytes left could hold (every msgpack object takes at least one byte), which bounds what
   msgpack_unpack can allocate by the header's length. Anything else that is wrong (a
   truncated body, a reserved byte, trailing bytes) is left for msgpack_unpack to report. */
static bool counts_fit(const unsigned char *p, size_t len)
{
    uint64_t pending = 1; /* objects still to read */
    size_t i = 0;
    while (pending > 0 && i < len) {
        unsigned t = p[i++];
        pending--;
        uint64_t items = 0;  /* container: objects it adds */
        uint64_t body = 0;   /* str/bin/ext: bytes to skip */
        size_t lenbytes = 0; /* size of the big-endian length that follows the type byte */
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
            continue; /* fixint, nil, bool */
        if ((t & 0xf0) == 0x80) {
            items = 2u * (t & 0x0f);
        } else if ((t & 0xf0) == 0x90) {
            items = t & 0x0f;
        } else if ((t & 0xe0) == 0xa0) {
            body = t & 0x1f;
        } else {
            switch (t) {
            case 0xc4:
            case 0xd9: lenbytes = 1; break; /* bin8, str8 */
            case 0xc5:
            case 0xda: lenbytes = 2; break; /* bin16, str16 */
            case 0xc6:
            case 0xdb: lenbytes = 4; break; /* bin32, str32 */
            case 0xc7:
                lenbytes = 1;
                body = 1;
                break; /* ext8 (+ type byte) */
            case 0xc8:
                lenbytes = 2;
                body = 1;
                break; /* ext16 */
            case 0xc9:
                lenbytes = 4;
                body = 1;
                break; /* ext32 */
            case 0xca:
            case 0xd2: body = 4; break; /* float32, int32 */
            case 0xcb:
            case 0xd3: body = 8; break; /* float64, int64 */
            case 0xcc:
            case 0xd0: body = 1; break; /* uint8, int8 */
            case 0xcd:
            case 0xd1: body = 2; break;  /* uint16, int16 */
            case 0xce: body = 4; break;  /* uint32 */
            case 0xcf: body = 8; break;  /* uint64 */
            case 0xd4: body = 2; break;  /* fixext1 */
            case 0xd5: body = 3; break;  /* fixext2 */
            case 0xd6: body = 5; break;  /* fixext4 */
            case 0xd7: body = 9; break;  /* fixext8 */
            case 0xd8: body = 17; break; /* fixext16 */
            case 0xdc:
            case 0xdd:
                lenbytes = t == 0xdc ? 2 : 4;
                items = 1;
                break; /* array */
            case 0xde:
            case 0xdf:
                lenbytes = t == 0xde ? 2 : 4;
                items = 2;
                break;            /* map */
            default: return true; /* 0xc1 (never used): msgpack_unpack reports it */
            }
        }
        if (lenbytes) {
            if (len - i < lenbytes)
                return true; /* truncated: msgpack_unpack reports it */
            uint64_t n = 0;
            for (size_t k = 0; k < lenbytes; k++)
                n = n << 8 | p[i + k];
            i += lenbytes;
            if (items)
                items *= n; /* arrays: n objects; maps: 2n */
            else
                body += n;
        }
        if (body) {
            if (len - i < body)
                return true; /* truncated */
            i += (size_t)body;
        }
        pending += items;
        if (pending > len - i)
            return false;
    }
    return true;
}

/* One zone per thread, reused: decoding allocates nothing after warm-up. The key's
   destructor frees a thread's zone when the thread exits, so a client used from
   short-lived threads does not leak one zone per thread. */
static __thread msgpack_zone *tl_zone;
static pthread_key_t zone_key;
static pthread_once_t zone_once = PTHREAD_ONCE_INIT;
static bool zone_key_ok;

static void zone_free(void *zone)
{
    msgpack_zone_free(zone);
    tl_zone = NULL;
}

static void zone_key_init(void)
{
    zone_key_ok = pthread_key_create(&zone_key, zone_free) == 0;
}

/* This thread's zone, made on first use; NULL when memory runs out. */
static msgpack_zone *thread_zone(void)
{
    if (tl_zone)
        return tl_zone;
    pthread_once(&zone_once, zone_key_init);
    tl_zone = msgpack_zone_new(2048);
    if (tl_zone && zone_key_ok)
        pthread_setspecific(zone_key, tl_zone);
    return tl_zone;
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
    uint32_t required = required_fields(m->cmd);
    if (required == UINT32_MAX)
        return fail(err, why, ZF_ECOMMAND, "unknown command");
    if (!thread_zone())
        return fail(err, why, ZF_EMALFORMED, "out of memory");
    if (!counts_fit(b + 4, len - 4))
        return fail(err, why, ZF_EMALFORMED, "header declares more items than it holds");
    msgpack_zone_clear(tl_zone);
    msgpack_object obj;
    size_t off = 0;
    msgpack_unpack_return rc = msgpack_unpack((const char *)b + 4, len - 4, &off, tl_zone, &obj);
    if (rc != MSGPACK_UNPACK_SUCCESS)
        return fail(err, why, ZF_EMALFORMED,
                    rc == MSGPACK_UNPACK_EXTRA_BYTES ? "trailing bytes after header map"
                    : rc == MSGPACK_UNPACK_CONTINUE  ? "truncated header"
                                                     : "header is not valid msgpack");
    if (obj.type != MSGPACK_OBJECT_MAP)
        return fail(err, why, ZF_EMALFORMED, "header is not a map");
    for (uint32_t i = 0; i < obj.via.map.size; i++) {
        const msgpack_object_kv *kv = &obj.via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return fail(err, why, ZF_EMALFORMED, "header key is not an unsigned integer");
        uint64_t key = kv->key.via.u64;
        if (key == 0 || key >= ZF_F__MAX || fields[key].type == T_NONE)
            continue; /* unknown (newer) keys are skipped */
        if (!decode_field(m, (zf_field_t)key, &kv->val))
            return fail(err, why, ZF_EMALFORMED, "header field has the wrong type or range");
        m->present |= B(key);
    }
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
