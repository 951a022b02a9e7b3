/*  Codec: every message round-trips; truncated, oversized and wrong-type headers are
    rejected with the right error. */
#include <criterion/criterion.h>
#include <errno.h>
#include <malloc.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "ref_decode.h"
#include "zf_proto.h"
#include "zf_proto_fields.h"
#include "zf_wire.h"

static const uint8_t all_cmds[] = {
    ZF_CMD_SUBMIT, ZF_CMD_WAIT,     ZF_CMD_GET,      ZF_CMD_CANCEL,    ZF_CMD_STATS,
    ZF_CMD_DEAD,   ZF_CMD_RETRY,    ZF_CMD_PING,     ZF_CMD_ACCEPTED,  ZF_CMD_REJECTED,
    ZF_CMD_RESULT, ZF_CMD_STATUS,   ZF_CMD_PROGRESS, ZF_CMD_REPLY,     ZF_CMD_PONG,
    ZF_CMD_ERROR,  ZF_CMD_READY,    ZF_CMD_DONE,     ZF_CMD_WPROGRESS, ZF_CMD_HEARTBEAT,
    ZF_CMD_BYE,    ZF_CMD_RECALLED, ZF_CMD_JOB,      ZF_CMD_WCANCEL,   ZF_CMD_BHEARTBEAT,
    ZF_CMD_RESET,  ZF_CMD_RECALL};

/* A header with every field set. */
static void fill_all(zf_msg_t *m, uint8_t cmd)
{
    zf_msg_init(m, cmd);
    zf_msg_set_u64(m, ZF_F_ID, 0x123456789abcdefull);
    zf_msg_set_u64(m, ZF_F_ATTEMPT, 7);
    zf_msg_set_u64(m, ZF_F_TAG, UINT64_MAX);
    zf_msg_set_str(m, ZF_F_FN, "resize_image");
    zf_msg_set_i32(m, ZF_F_PRIORITY, -42);
    zf_msg_set_u64(m, ZF_F_TIMEOUT, 60000);
    zf_msg_set_u64(m, ZF_F_DEADLINE, 5000);
    zf_msg_set_u64(m, ZF_F_MAX_ATTEMPTS, 5);
    zf_msg_set_u64(m, ZF_F_DEVICE, ZF_DEV_GPU);
    zf_msg_set_u64(m, ZF_F_STATUS, ZF_ST_TIMED_OUT);
    zf_msg_set_u64(m, ZF_F_CODE, ZF_EQUEUE_FULL);
    zf_msg_set_str(m, ZF_F_TEXT, "queue full (function limit)");
    zf_msg_set_u64(m, ZF_F_CREDITS, 16);
    zf_msg_set_u64(m, ZF_F_DURATION, 123456789);
    zf_msg_set_str(m, ZF_F_WORKER, "host:1234:gpu:0");
    zf_msg_set_str(m, ZF_F_DEVNAME, "gpu:0");
    zf_msg_set_progress(m, 0.625);
    zf_msg_add_function(m, "echo");
    zf_msg_add_function(m, "spin");
    zf_msg_set_i32(m, ZF_F_DEVINDEX, 3);
    zf_msg_set_u64(m, ZF_F_DEVMEM, 80ull << 30);
    zf_msg_set_u64(m, ZF_F_HEARTBEAT, 1000);
    zf_msg_set_u64(m, ZF_F_FLAGS, ZF_FLAG_PURGE);
    zf_msg_set_u64(m, ZF_F_QUEUED, 99);
}

static void assert_same(const zf_msg_t *a, const zf_msg_t *b)
{
    cr_assert_eq(a->cmd, b->cmd);
    cr_assert_eq(a->present, b->present);
    cr_assert_eq(a->id, b->id);
    cr_assert_eq(a->attempt, b->attempt);
    cr_assert_eq(a->tag, b->tag);
    cr_assert_eq(a->priority, b->priority);
    cr_assert_eq(a->timeout_ms, b->timeout_ms);
    cr_assert_eq(a->deadline_ms, b->deadline_ms);
    cr_assert_eq(a->max_attempts, b->max_attempts);
    cr_assert_eq(a->device, b->device);
    cr_assert_eq(a->status, b->status);
    cr_assert_eq(a->code, b->code);
    cr_assert_eq(a->credits, b->credits);
    cr_assert_eq(a->duration_us, b->duration_us);
    cr_assert_eq(a->devindex, b->devindex);
    cr_assert_eq(a->devmem, b->devmem);
    cr_assert_eq(a->heartbeat_ms, b->heartbeat_ms);
    cr_assert_eq(a->flags, b->flags);
    cr_assert_eq(a->queued_us, b->queued_us);
    cr_assert_float_eq(a->progress, b->progress, 1e-12);
    const zf_str_t *sa[] = {&a->fn, &a->text, &a->worker, &a->devname};
    const zf_str_t *sb[] = {&b->fn, &b->text, &b->worker, &b->devname};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(sa[i]->len, sb[i]->len);
        cr_assert(sa[i]->len == 0 || memcmp(sa[i]->ptr, sb[i]->ptr, sa[i]->len) == 0);
    }
    cr_assert_eq(a->nfunctions, b->nfunctions);
    for (uint32_t i = 0; i < a->nfunctions; i++)
        cr_assert(a->functions[i].len == b->functions[i].len &&
                  !memcmp(a->functions[i].ptr, b->functions[i].ptr, a->functions[i].len));
}

Test(proto, every_message_round_trips_with_all_fields)
{
    for (size_t i = 0; i < sizeof all_cmds; i++) {
        zf_msg_t in, out;
        fill_all(&in, all_cmds[i]);
        char buf[ZF_HEADER_MAX];
        int len = zf_msg_encode(&in, buf, sizeof buf);
        cr_assert_gt(len, 4, "encode %s", zf_cmd_name(all_cmds[i]));
        int err = -1;
        cr_assert_eq(zf_msg_decode(&out, buf, (size_t)len, &err, NULL), 0, "decode %s",
                     zf_cmd_name(all_cmds[i]));
        assert_same(&in, &out);
        cr_assert_geq(zf_cmd_payload_frames(all_cmds[i]), 0);
    }
}

Test(proto, minimal_messages_round_trip)
{
    zf_msg_t in, out;
    zf_msg_init(&in, ZF_CMD_HEARTBEAT);
    char buf[64];
    int len = zf_msg_encode(&in, buf, sizeof buf);
    cr_assert_eq(len, 5); /* signature, version, command, empty map */
    cr_assert_eq(zf_msg_decode(&out, buf, (size_t)len, NULL, NULL), 0);
    assert_same(&in, &out);
}

static int decode_err(const void *buf, size_t len)
{
    zf_msg_t m;
    int err = 0;
    const char *why = NULL;
    if (zf_msg_decode(&m, buf, len, &err, &why) == 0)
        return 0;
    cr_assert(why && *why, "a rejection says why");
    return err;
}

Test(proto, truncated_headers_are_malformed)
{
    zf_msg_t in;
    fill_all(&in, ZF_CMD_SUBMIT);
    char buf[ZF_HEADER_MAX];
    int len = zf_msg_encode(&in, buf, sizeof buf);
    for (int cut = 0; cut < len; cut++)
        cr_assert_eq(decode_err(buf, (size_t)cut), ZF_EMALFORMED, "cut at %d of %d", cut, len);
}

Test(proto, bad_signature_version_and_command)
{
    char buf[] = {'Z', 'F', ZF_PROTO_VERSION, (char)ZF_CMD_PING, (char)0x80};
    cr_assert_eq(decode_err(buf, sizeof buf), 0);
    buf[0] = 'X';
    cr_assert_eq(decode_err(buf, sizeof buf), ZF_EMALFORMED);
    buf[0] = 'Z';
    buf[2] = 9;
    cr_assert_eq(decode_err(buf, sizeof buf), ZF_EVERSION);
    buf[2] = ZF_PROTO_VERSION;
    buf[3] = 0x7e;
    cr_assert_eq(decode_err(buf, sizeof buf), ZF_ECOMMAND);
}

Test(proto, oversized_header_is_rejected)
{
    static char big[ZF_HEADER_MAX + 10];
    big[0] = 'Z', big[1] = 'F', big[2] = ZF_PROTO_VERSION, big[3] = (char)ZF_CMD_PING;
    cr_assert_eq(decode_err(big, sizeof big), ZF_EMALFORMED);
    /* and the encoder refuses what would not fit */
    zf_msg_t m;
    fill_all(&m, ZF_CMD_SUBMIT);
    char small[16];
    cr_assert_eq(zf_msg_encode(&m, small, sizeof small), -1);
}

/* Packs a header with one field of the given msgpack value (written by fn). */
static size_t header_with(char *out, uint8_t cmd, void (*fn)(msgpack_packer *))
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fn(&pk);
    out[0] = 'Z', out[1] = 'F', out[2] = ZF_PROTO_VERSION, out[3] = (char)cmd;
    memcpy(out + 4, sb.data, sb.size);
    size_t n = sb.size + 4;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static void id_as_string(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_uint8(pk, ZF_F_ID);
    msgpack_pack_str(pk, 2);
    msgpack_pack_str_body(pk, "12", 2);
}
static void attempt_too_big(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    msgpack_pack_uint8(pk, ZF_F_ID);
    msgpack_pack_uint8(pk, 1);
    msgpack_pack_uint8(pk, ZF_F_ATTEMPT);
    msgpack_pack_uint64(pk, 1ull << 40);
}
static void negative_id(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_uint8(pk, ZF_F_ID);
    msgpack_pack_int8(pk, -1);
}
static void not_a_map(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint8(pk, 1);
}
static void string_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_str(pk, 2);
    msgpack_pack_str_body(pk, "id", 2);
    msgpack_pack_uint8(pk, 1);
}
static void fn_too_long(msgpack_packer *pk)
{
    char name[100];
    memset(name, 'a', sizeof name);
    msgpack_pack_map(pk, 2);
    msgpack_pack_uint8(pk, ZF_F_TAG);
    msgpack_pack_uint8(pk, 1);
    msgpack_pack_uint8(pk, ZF_F_FN);
    msgpack_pack_str(pk, sizeof name);
    msgpack_pack_str_body(pk, name, sizeof name);
}
static void progress_out_of_range(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    msgpack_pack_uint8(pk, ZF_F_ID);
    msgpack_pack_uint8(pk, 1);
    msgpack_pack_uint8(pk, ZF_F_PROGRESS);
    msgpack_pack_double(pk, 1.5);
}
static void missing_required(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_uint8(pk, ZF_F_TAG);
    msgpack_pack_uint8(pk, 1);
}
static void unknown_key_ignored(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    msgpack_pack_uint8(pk, ZF_F_ID);
    msgpack_pack_uint8(pk, 5);
    msgpack_pack_uint16(pk, 999);
    msgpack_pack_str(pk, 3);
    msgpack_pack_str_body(pk, "new", 3);
}
static void trailing(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_uint8(pk, ZF_F_ID);
    msgpack_pack_uint8(pk, 5);
    msgpack_pack_nil(pk);
}

Test(proto, wrong_types_and_ranges_are_malformed)
{
    char buf[512];
    void (*bad[])(msgpack_packer *) = {id_as_string, attempt_too_big,       negative_id, not_a_map,
                                       string_key,   progress_out_of_range, trailing};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t n = header_with(buf, ZF_CMD_WAIT, bad[i]);
        cr_assert_eq(decode_err(buf, n), ZF_EMALFORMED, "case %zu", i);
    }
    size_t n = header_with(buf, ZF_CMD_SUBMIT, fn_too_long);
    cr_assert_eq(decode_err(buf, n), ZF_EMALFORMED);
    n = header_with(buf, ZF_CMD_SUBMIT, missing_required);
    cr_assert_eq(decode_err(buf, n), ZF_EMALFORMED, "SUBMIT needs fn");
    n = header_with(buf, ZF_CMD_WAIT, unknown_key_ignored);
    cr_assert_eq(decode_err(buf, n), 0, "unknown keys are ignored");
}

Test(proto, names_are_never_null)
{
    for (int i = 0; i < 256; i++)
        cr_assert_not_null(zf_cmd_name((uint8_t)i));
    cr_assert_str_eq(zf_state_name(ZF_ST_LOST), "lost");
    cr_assert_str_eq(zf_state_name(99), "unknown");
    cr_assert_str_eq(zf_error_name(ZF_ETOO_LARGE), "payload too large");
    cr_assert_eq(zf_device_kind_parse("gpu"), ZF_DEV_GPU);
    cr_assert_eq(zf_device_kind_parse("tpu"), -1);
}

/* Found by the fuzzer (tests/fuzz/regress/): containers that declare more items than the
   header holds are refused before msgpack-c allocates for them, and an empty string decodes
   to a non-NULL pointer that re-encodes cleanly. */
Test(proto, huge_declared_counts_are_malformed)
{
    static const unsigned char array32[] = {'Z',  'F',  1,    ZF_CMD_SUBMIT, 0xdd,
                                            0xff, 0xff, 0xff, 0xff};
    static const unsigned char map32_under_unknown_key[] = {
        'Z', 'F', 1, ZF_CMD_READY, 0x81, 0x28, 0xdf, 0x0f, 0xff, 0xff, 0xff};
    static const unsigned char fixarray_too_long[] = {'Z',  'F',  1,    ZF_CMD_PING,
                                                      0x81, 0x28, 0x9f, 0x01};
    cr_assert_eq(decode_err(array32, sizeof array32), ZF_EMALFORMED);
    cr_assert_eq(decode_err(map32_under_unknown_key, sizeof map32_under_unknown_key),
                 ZF_EMALFORMED);
    cr_assert_eq(decode_err(fixarray_too_long, sizeof fixarray_too_long), ZF_EMALFORMED);
}

Test(proto, empty_string_round_trips)
{
    static const unsigned char in[] = {'Z', 'F', 1, ZF_CMD_REPLY, 0x82, 0x0b, 0x00, 0x0c, 0xa0};
    zf_msg_t m, back;
    int err;
    cr_assert_eq(zf_msg_decode(&m, in, sizeof in, &err, NULL), 0);
    cr_assert(zf_msg_has(&m, ZF_F_TEXT));
    cr_assert_not_null(m.text.ptr);
    cr_assert_eq(m.text.len, 0);
    char buf[64];
    int n = zf_msg_encode(&m, buf, sizeof buf);
    cr_assert_eq(n, (int)sizeof in);
    cr_assert_eq(memcmp(buf, in, sizeof in), 0);
    cr_assert_eq(zf_msg_decode(&back, buf, (size_t)n, &err, NULL), 0);
    cr_assert_eq(back.text.len, 0);
}

/* PROTOCOL.md §3: containers nest at most 32 deep counting the header map itself, also
   under an unknown key (msgpack-c's parser stack). The limit is part of the contract. */
Test(proto, nesting_deeper_than_32_levels_is_malformed)
{
    for (int arrays = 30; arrays <= 33; arrays++) {
        unsigned char b[64] = {'Z', 'F', 1, ZF_CMD_PING, 0x81, 0x00}; /* {0: [[...nil...]]} */
        size_t n = 6;
        for (int i = 0; i < arrays; i++)
            b[n++] = 0x91;
        b[n++] = 0xc0;
        cr_assert_eq(decode_err(b, n), arrays <= 31 ? 0 : ZF_EMALFORMED, "%d levels", arrays + 1);
    }
}

/* §3: a field the command does not use is still type-checked (then ignored). */
Test(proto, wrongly_typed_unused_field_is_malformed)
{
    static const unsigned char ping_fn_int[] = {'Z', 'F', 1, ZF_CMD_PING, 0x81, 0x04, 0x07};
    static const unsigned char ping_fn_str[] = {'Z', 'F', 1, ZF_CMD_PING, 0x81, 0x04, 0xa1, 'x'};
    cr_assert_eq(decode_err(ping_fn_int, sizeof ping_fn_int), ZF_EMALFORMED);
    cr_assert_eq(decode_err(ping_fn_str, sizeof ping_fn_str), 0);
}

/* §3, §6.2, §7.1: what the broker checks function names (and READY names) with. */
Test(proto, utf8_validation)
{
    static const struct {
        const char *s;
        size_t valid_prefix;
    } cases[] = {
        {"", 0},
        {"echo", 4},
        {"caf\xc3\xa9", 5},      /* é */
        {"\xe2\x82\xac", 3},     /* € */
        {"\xf0\x9f\x98\x80", 4}, /* U+1F600 */
        {"ab\xff", 2},           /* never in UTF-8 */
        {"ab\x80", 2},           /* a continuation byte first */
        {"ab\xc3", 2},           /* cut inside a character */
        {"\xc0\xaf", 0},         /* overlong '/' */
        {"\xe0\x80\xaf", 0},     /* overlong, 3 bytes */
        {"\xed\xa0\x80", 0},     /* a surrogate (U+D800) */
        {"\xf4\x90\x80\x80", 0}, /* above U+10FFFF */
        {"x\xe2\x82", 1},        /* a truncated 3-byte character */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t len = strlen(cases[i].s);
        cr_assert_eq(zf_utf8_prefix(cases[i].s, len), cases[i].valid_prefix, "case %zu", i);
        cr_assert_eq(zf_utf8_valid(cases[i].s, len), cases[i].valid_prefix == len, "case %zu", i);
    }
    cr_assert(zf_utf8_valid("a\0b", 3), "NUL is a valid character");
}

/* ---- the direct decoder against the msgpack-c one it replaced (tests/ref_decode.c) ---- */

typedef struct {
    unsigned char b[ZF_HEADER_MAX + 64];
    size_t n;
    uint64_t rng;
} gen_t;

static uint64_t gen_rand(gen_t *g)
{
    g->rng ^= g->rng << 13; /* xorshift64: the cases are the same on every run */
    g->rng ^= g->rng >> 7;
    g->rng ^= g->rng << 17;
    return g->rng;
}

static unsigned gen_below(gen_t *g, unsigned n)
{
    return (unsigned)(gen_rand(g) % n);
}

static void gen_byte(gen_t *g, unsigned v)
{
    if (g->n < sizeof g->b)
        g->b[g->n++] = (unsigned char)v;
}

static void gen_be(gen_t *g, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--)
        gen_byte(g, (unsigned)(v >> (8 * i)));
}

/* An unsigned value in any of msgpack's integer formats, signed ones included. */
static void gen_uint(gen_t *g, uint64_t v)
{
    switch (gen_below(g, 6)) {
    case 0: v <= 0x7f ? gen_byte(g, (unsigned)v) : (gen_byte(g, 0xcf), gen_be(g, v, 8)); break;
    case 1: gen_byte(g, 0xcc), gen_be(g, v, 1); break;
    case 2: gen_byte(g, 0xcd), gen_be(g, v, 2); break;
    case 3: gen_byte(g, 0xce), gen_be(g, v, 4); break;
    case 4: gen_byte(g, 0xd3), gen_be(g, v, 8); break; /* int64: unsigned below 2^63 */
    default: gen_byte(g, 0xd2), gen_be(g, v, 4); break;
    }
}

static uint64_t gen_number(gen_t *g)
{
    static const uint64_t edges[] = {0,
                                     1,
                                     0x7f,
                                     0x80,
                                     0xff,
                                     0x100,
                                     0xffff,
                                     0x10000,
                                     INT32_MAX,
                                     0x80000000,
                                     UINT32_MAX,
                                     0x100000000ull,
                                     INT64_MAX,
                                     UINT64_MAX,
                                     (uint64_t)INT32_MIN,
                                     (uint64_t)-33,
                                     (uint64_t)-32,
                                     (uint64_t)-1};
    return gen_below(g, 3) ? edges[gen_below(g, sizeof edges / sizeof edges[0])] : gen_rand(g);
}

static void gen_str(gen_t *g, unsigned len, bool bin)
{
    int form = bin ? 1 + (int)gen_below(g, 3) : (int)gen_below(g, 4);
    static const unsigned types[] = {0xa0, 0xd9, 0xda, 0xdb};
    static const unsigned bins[] = {0, 0xc4, 0xc5, 0xc6};
    static const int widths[] = {0, 1, 2, 4};
    if (form == 0 && len > 31)
        form = 1;
    if (form == 0)
        gen_byte(g, 0xa0 | len);
    else
        gen_byte(g, bin ? bins[form] : types[form]), gen_be(g, len, widths[form]);
    for (unsigned i = 0; i < len; i++)
        gen_byte(g, 'a' + gen_below(g, 26));
}

static void gen_value(gen_t *g, int depth);

static void gen_container(gen_t *g, int depth, bool map, unsigned count)
{
    if (count <= 15 && gen_below(g, 2))
        gen_byte(g, (map ? 0x80 : 0x90) | count);
    else if (gen_below(g, 2))
        gen_byte(g, map ? 0xde : 0xdc), gen_be(g, count, 2);
    else
        gen_byte(g, map ? 0xdf : 0xdd), gen_be(g, count, 4);
    for (unsigned i = 0; i < count * (map ? 2 : 1); i++)
        gen_value(g, depth + 1);
}

static void gen_value(gen_t *g, int depth)
{
    switch (gen_below(g, depth > 34 ? 9 : 12)) {
    case 0:
    case 1: gen_uint(g, gen_number(g)); break;
    case 2: { /* a negative integer */
        static const int64_t edges[] = {-1,       -32, -33, -128, -129, INT32_MIN, INT32_MIN - 1ll,
                                        INT64_MIN};
        int64_t v = gen_below(g, 2) ? edges[gen_below(g, sizeof edges / sizeof edges[0])]
                                    : -(int64_t)(gen_below(g, 1000000) + 1);
        if (v >= -32 && gen_below(g, 2))
            gen_byte(g, (unsigned)(v & 0xff));
        else
            gen_byte(g, 0xd3), gen_be(g, (uint64_t)v, 8);
        break;
    }
    case 3: { /* a float: in [0, 1], out of it, NaN */
        static const double fs[] = {0.0, 0.25, 1.0, 1.5, -0.5, 0.1};
        double d = gen_below(g, 8) ? fs[gen_below(g, 6)] : __builtin_nan("");
        if (gen_below(g, 2)) {
            float f = (float)d;
            uint32_t bits;
            memcpy(&bits, &f, sizeof bits);
            gen_byte(g, 0xca), gen_be(g, bits, 4);
        } else {
            uint64_t bits;
            memcpy(&bits, &d, sizeof bits);
            gen_byte(g, 0xcb), gen_be(g, bits, 8);
        }
        break;
    }
    case 4:
    case 5: gen_str(g, gen_below(g, 3) ? gen_below(g, 12) : gen_below(g, 80), false); break;
    case 6: gen_str(g, gen_below(g, 6), true); break;
    case 7:
        if (gen_below(g, 8) == 0) { /* deep: around msgpack-c's 32 open containers */
            for (unsigned d = 28 + gen_below(g, 8); d; d--) {
                bool map = gen_below(g, 4) == 0; /* {0: ...} or [...] */
                gen_byte(g, map ? 0x81 : 0x91);
                if (map)
                    gen_byte(g, 0);
            }
            gen_byte(g, gen_below(g, 2) ? 0xc0 : 0x90); /* innermost: nil or an empty array */
        } else {
            gen_byte(g, 0xc0 + gen_below(g, 4)); /* nil, never used, false, true */
        }
        break;
    case 8: { /* ext: fixext or ext8 */
        unsigned k = gen_below(g, 6);
        if (k < 5) { /* fixext 1, 2, 4, 8, 16: a type byte and 2^k zero bytes */
            gen_byte(g, 0xd4 + k);
            for (unsigned i = 0; i <= 1u << k; i++)
                gen_byte(g, i == 0);
        } else { /* ext8 of no bytes: its type byte only */
            gen_byte(g, 0xc7);
            gen_byte(g, 0);
            gen_byte(g, 1);
        }
        break;
    }
    case 9:
    case 10: gen_container(g, depth, false, gen_below(g, 4)); break;
    default: gen_container(g, depth, true, gen_below(g, 3)); break;
    }
}

/* A value of the type field `key` has (within its range or not), or of any type. */
static void gen_field(gen_t *g, unsigned key)
{
    zf_ftype_t t = key < ZF_F__MAX ? zf_proto_fields[key].type : T_NONE;
    unsigned n = gen_below(g, 4);
    switch (t) {
    case T_U64:
    case T_U32: gen_uint(g, gen_below(g, 8) ? gen_below(g, 300) : gen_number(g)); break;
    case T_I32:
        if (gen_below(g, 2))
            gen_byte(g, 0xe0 | gen_below(g, 32)); /* negative fixint */
        else
            gen_uint(g, gen_below(g, 4) ? gen_below(g, 300) : gen_number(g));
        break;
    case T_F64: {
        double d = gen_below(g, 5) / 4.0;
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        gen_byte(g, 0xcb), gen_be(g, bits, 8);
        break;
    }
    case T_STR: gen_str(g, gen_below(g, 8) ? gen_below(g, 20) : gen_below(g, 1100), false); break;
    case T_STRARR:
        gen_byte(g, 0x90 | n);
        for (unsigned f = 0; f < n; f++)
            gen_str(g, gen_below(g, 10), false);
        break;
    case T_CLAIMS:
        gen_byte(g, 0x90 | 2 * n);
        for (unsigned c = 0; c < 2 * n; c++)
            gen_uint(g, gen_below(g, 2) ? gen_below(g, 9) : gen_number(g));
        break;
    case T_NONE: gen_value(g, 1); break;
    }
}

/* A header: mostly a map of field keys (and a few others) to values of any type, some
   fields of the type they should have; then, sometimes, bytes cut, changed or added. */
static void gen_header(gen_t *g)
{
    g->n = 0;
    gen_byte(g, 'Z');
    gen_byte(g, 'F');
    gen_byte(g, gen_below(g, 50) ? 1 : 2);
    gen_byte(g, gen_below(g, 20) ? all_cmds[gen_below(g, sizeof all_cmds)] : gen_below(g, 256));
    if (gen_below(g, 20) == 0) {
        gen_value(g, 0); /* not a map, or a map of anything */
    } else {
        /* the command's required fields first, most of the time */
        uint32_t required = zf_proto_required(g->b[3]);
        unsigned keys[48], nkeys = 0;
        for (unsigned k = 1; required != UINT32_MAX && gen_below(g, 4) && k < 32; k++)
            if (required & (1u << k))
                keys[nkeys++] = k;
        for (unsigned extra = gen_below(g, 5); extra; extra--)
            keys[nkeys++] = gen_below(g, 45);
        gen_byte(g, 0x80 | nkeys);
        for (unsigned i = 0; i < nkeys; i++) {
            unsigned key = keys[i];
            if (gen_below(g, 30) == 0)
                gen_value(g, 1);
            else
                gen_uint(g, key);
            if (gen_below(g, 10))
                gen_field(g, key);
            else
                gen_value(g, 1);
        }
    }
    switch (gen_below(g, 12)) {
    case 0: g->n = gen_below(g, (unsigned)g->n + 1); break; /* cut */
    case 1:
        g->b[4 + gen_below(g, (unsigned)g->n - 4 + 1) % (g->n - 3)] ^= 1u << gen_below(g, 8);
        break;
    case 2: gen_byte(g, gen_below(g, 256)); break; /* a trailing byte */
    default: break;
    }
}

/* Every input: the same success or failure, the same error code, the same fields. */
Test(proto, direct_decoder_agrees_with_msgpack_c_on_generated_headers)
{
    gen_t g = {.rng = 0x9e3779b97f4a7c15ull};
    int decoded = 0, refused = 0;
    for (int i = 0; i < 200000; i++) {
        gen_header(&g);
        if (g.n > ZF_HEADER_MAX)
            g.n = ZF_HEADER_MAX;
        zf_msg_t m, ref;
        int err = -1, ref_err = -1;
        const char *why = NULL, *ref_why = NULL;
        int rc = zf_msg_decode(&m, g.b, g.n, &err, &why);
        int ref_rc = ref_msg_decode(&ref, g.b, g.n, &ref_err, &ref_why);
        cr_assert_eq(rc, ref_rc, "case %d (%zu bytes): decoder %d (%s), reference %d (%s)", i, g.n,
                     rc, rc ? why : "ok", ref_rc, ref_rc ? ref_why : "ok");
        if (rc == 0)
            cr_assert(ref_msg_same(&m, &ref), "case %d: the fields differ", i);
        else
            cr_assert_eq(err, ref_err, "case %d: %s against %s", i, why, ref_why);
        rc == 0 ? decoded++ : refused++;
    }
    /* the generator reaches both sides of the decoder */
    cr_assert_gt(decoded, 20000, "%d decoded", decoded);
    cr_assert_gt(refused, 20000, "%d refused", refused);
}

/* Returns arg when the header decoded, NULL when not. */
static void *decode_one(void *arg)
{
    char buf[ZF_HEADER_MAX];
    zf_msg_t m, back;
    zf_msg_init(&m, ZF_CMD_PING);
    int n = zf_msg_encode(&m, buf, sizeof buf);
    int rc = n > 0 ? zf_msg_decode(&back, buf, (size_t)n, NULL, NULL) : -1;
    return rc == 0 ? arg : NULL;
}

static void decode_in_thread(void)
{
    pthread_t t;
    static int token;
    void *ok = NULL;
    cr_assert_eq(pthread_create(&t, NULL, decode_one, &token), 0);
    cr_assert_eq(pthread_join(t, &ok), 0);
    cr_assert_not_null(ok, "decode failed in a thread");
}

/* Decoding allocates nothing a thread keeps: a client used from short-lived threads must
   not leak per thread (the msgpack-c decoder kept a zone per thread, freed at the thread's
   exit). (Under ASan mallinfo2 reads zeros and LeakSanitizer makes the same check.) */
Test(proto, decoding_thread_frees_its_zone_when_it_exits)
{
    mallopt(M_ARENA_MAX, 1); /* every thread allocates from the arena mallinfo2 reads */
    decode_in_thread();      /* one-time allocations (the key, the arena) happen here */
    size_t before = mallinfo2().uordblks;
    for (int i = 0; i < 100; i++)
        decode_in_thread();
    size_t after = mallinfo2().uordblks;
    cr_assert_lt(after > before ? after - before : 0, 50000,
                 "100 threads that decoded once each left %zu bytes allocated", after - before);
}

/* zf_wire_read_batch's handler: counts messages, checks each arrives whole, and moves the
   first one's payload frame out (as the broker moves payloads onward). */
typedef struct {
    int seen;
    int whole;
    zmq_msg_t kept;
} batch_t;

static void batch_handle(void *arg, zf_frames_t *f)
{
    batch_t *b = arg;
    char want[16];
    snprintf(want, sizeof want, "m%d", b->seen);
    b->whole += f->n == 2 && zmq_msg_size(&f->part[0]) == strlen(want) &&
                !memcmp(zmq_msg_data(&f->part[0]), want, strlen(want));
    if (b->seen++ == 0)
        zmq_msg_move(&b->kept, &f->part[1]);
}

/* The one read loop: at most `max` messages a call, each handed over whole, EAGAIN ends a
   batch (not an error), a frame the handler moved out stays its own, and a terminated
   context is an error. */
Test(proto, read_batch_reads_at_most_max_and_stops_when_nothing_waits)
{
    void *ctx = zmq_ctx_new();
    void *rx = zmq_socket(ctx, ZMQ_PAIR), *tx = zmq_socket(ctx, ZMQ_PAIR);
    cr_assert_eq(zmq_bind(rx, "inproc://read-batch"), 0);
    cr_assert_eq(zmq_connect(tx, "inproc://read-batch"), 0);
    for (int i = 0; i < 5; i++) {
        char head[16];
        int n = snprintf(head, sizeof head, "m%d", i);
        cr_assert_eq(zmq_send(tx, head, (size_t)n, ZMQ_SNDMORE), n);
        cr_assert_eq(zmq_send(tx, "payload", 7, 0), 7);
    }
    batch_t b = {0};
    zmq_msg_init(&b.kept);
    cr_assert_eq(zf_wire_read_batch(rx, 3, batch_handle, &b), 3);
    cr_assert_eq(zf_wire_read_batch(rx, 3, batch_handle, &b), 2);
    cr_assert_eq(zf_wire_read_batch(rx, 3, batch_handle, &b), 0, "EAGAIN is an empty batch");
    cr_assert_eq(b.seen, 5);
    cr_assert_eq(b.whole, 5, "a message came apart");
    cr_assert_eq(zmq_msg_size(&b.kept), 7, "the moved payload frame was closed");
    cr_assert(!memcmp(zmq_msg_data(&b.kept), "payload", 7));
    zmq_msg_close(&b.kept);
    zmq_ctx_shutdown(ctx); /* what a program's exit does to a loop's sockets */
    cr_assert_eq(zf_wire_read_batch(rx, 3, batch_handle, &b), -1);
    cr_assert_eq(errno, ETERM);
    cr_assert_eq(b.seen, 5);
    zmq_close(tx);
    zmq_close(rx);
    zmq_ctx_term(ctx);
}
