/*  The header decoder zfleet used until 2026-12 (msgpack-c's msgpack_unpack into an object
    tree, then the fields read off it), kept as the reference the direct decoder of
    proto/proto.c is checked against: test_proto's differential suite and the fuzzer
    (tests/fuzz/fuzz_proto.c) require both to accept the same headers, reject the same ones
    with the same code, and decode the same fields. See ref_decode.h.
*/
#include "ref_decode.h"

#include <msgpack.h>
#include <pthread.h>
#include <string.h>

#include "zf_proto_fields.h"

#define B(f) (1ull << (f))

static void *field_ptr(zf_msg_t *m, zf_field_t f)
{
    return (char *)m + zf_proto_fields[f].off;
}

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
    switch (zf_proto_fields[f].type) {
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
    case T_STR: return obj_to_str(o, zf_proto_fields[f].maxlen, (zf_str_t *)p);
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

int ref_msg_decode(zf_msg_t *m, const void *buf, size_t len, int *err, const char **why)
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
        if (key == 0 || key >= ZF_F__MAX || zf_proto_fields[key].type == T_NONE)
            continue; /* unknown (newer) keys are skipped */
        if (!decode_field(m, (zf_field_t)key, &kv->val))
            return fail(err, why, ZF_EMALFORMED, "header field has the wrong type or range");
        m->present |= B(key);
    }
    if ((m->present & required) != required)
        return fail(err, why, ZF_EMALFORMED, "a required header field is missing");
    return 0;
}

static bool str_same(zf_str_t a, zf_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

bool ref_msg_same(const zf_msg_t *a, const zf_msg_t *b)
{
    /* the numbers: zf_msg_init zeroes the struct (padding included) up to functions[] */
    if (memcmp(a, b, offsetof(zf_msg_t, fn)) != 0)
        return false;
    const zf_str_t *sa[] = {&a->fn,         &a->text, &a->worker, &a->devname,
                            &a->supervisor, &a->tags, &a->then};
    const zf_str_t *sb[] = {&b->fn,         &b->text, &b->worker, &b->devname,
                            &b->supervisor, &b->tags, &b->then};
    for (size_t i = 0; i < sizeof sa / sizeof sa[0]; i++)
        if (!str_same(*sa[i], *sb[i]))
            return false;
    bool fns = zf_msg_has(a, ZF_F_FUNCTIONS), claims = zf_msg_has(a, ZF_F_CLAIMS);
    if (fns && a->nfunctions != b->nfunctions)
        return false;
    for (uint32_t i = 0; fns && i < a->nfunctions; i++)
        if (!str_same(a->functions[i], b->functions[i]))
            return false;
    if (claims && a->nclaims != b->nclaims)
        return false;
    for (uint32_t i = 0; claims && i < a->nclaims; i++)
        if (a->claims[i].id != b->claims[i].id || a->claims[i].attempt != b->claims[i].attempt)
            return false;
    return true;
}
