/*  libFuzzer target over the zfleet header codec (proto/proto.c).

    For every input: zf_msg_decode must give the answer of the msgpack-c decoder it replaced
    (tests/ref_decode.c): the same success or failure, the same error code, the same fields.
    It must either fail with one of its documented error codes
    or succeed; on success the header is re-encoded with zf_msg_encode and decoded again,
    and the two decoded headers must be equal field by field, and a second encoding must be
    byte-identical to the first (the codec's canonical form is stable). The name and frame
    helpers are exercised on the command byte and on the decoded values.

    Build and run: tests/fuzz/run.sh (see tests/fuzz/README.md).
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref_decode.h"
#include "zf_proto.h"

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz_proto: check failed at line %d: %s\n", __LINE__, #cond); \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

static int str_same(zf_str_t a, zf_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void check_same(const zf_msg_t *a, const zf_msg_t *b)
{
    CHECK(a->cmd == b->cmd);
    CHECK(a->present == b->present);
    CHECK(a->id == b->id);
    CHECK(a->tag == b->tag);
    CHECK(a->duration_us == b->duration_us);
    CHECK(a->devmem == b->devmem);
    CHECK(a->queued_us == b->queued_us);
    CHECK(a->attempt == b->attempt);
    CHECK(a->timeout_ms == b->timeout_ms);
    CHECK(a->deadline_ms == b->deadline_ms);
    CHECK(a->max_attempts == b->max_attempts);
    CHECK(a->device == b->device);
    CHECK(a->status == b->status);
    CHECK(a->code == b->code);
    CHECK(a->credits == b->credits);
    CHECK(a->heartbeat_ms == b->heartbeat_ms);
    CHECK(a->flags == b->flags);
    CHECK(a->priority == b->priority);
    CHECK(a->devindex == b->devindex);
    CHECK(a->progress == b->progress); /* exact: float64 survives msgpack unchanged */
    CHECK(str_same(a->fn, b->fn));
    CHECK(str_same(a->text, b->text));
    CHECK(str_same(a->worker, b->worker));
    CHECK(str_same(a->devname, b->devname));
    CHECK(a->nfunctions == b->nfunctions);
    for (uint32_t i = 0; i < a->nfunctions; i++)
        CHECK(str_same(a->functions[i], b->functions[i]));
}

/* What every successfully decoded header must satisfy. */
static void check_decoded(const zf_msg_t *m)
{
    CHECK(zf_cmd_payload_frames(m->cmd) == 0 || zf_cmd_payload_frames(m->cmd) == 1);
    CHECK(strcmp(zf_cmd_name(m->cmd), "?") != 0);
    CHECK((m->present & 1u) == 0 && m->present < (1ull << ZF_F__MAX));
    CHECK(m->fn.len <= ZF_FN_MAX && m->worker.len <= ZF_NAME_MAX && m->devname.len <= ZF_NAME_MAX &&
          m->text.len <= ZF_TEXT_MAX);
    CHECK(m->nfunctions <= ZF_MAX_FUNCTIONS);
    for (uint32_t i = 0; i < m->nfunctions; i++)
        CHECK(m->functions[i].len >= 1 && m->functions[i].len <= ZF_FN_MAX);
    CHECK(m->progress >= 0 && m->progress <= 1);
    /* the name helpers take any value */
    CHECK(zf_state_name(m->status) != NULL);
    CHECK(zf_error_name(m->code) != NULL);
    CHECK(zf_device_kind_name(m->device) != NULL);
    /* touch every string byte, so ASan sees any pointer outside the input */
    volatile unsigned sum = 0;
    const zf_str_t *s[] = {&m->fn, &m->text, &m->worker, &m->devname};
    for (int k = 0; k < 4; k++)
        for (uint32_t i = 0; i < s[k]->len; i++)
            sum += (unsigned char)s[k]->ptr[i];
    for (uint32_t f = 0; f < m->nfunctions; f++)
        for (uint32_t i = 0; i < m->functions[f].len; i++)
            sum += (unsigned char)m->functions[f].ptr[i];
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the command helpers, on whatever byte would be the command */
    uint8_t cmd = size >= 4 ? data[3] : (size ? data[0] : 0);
    int frames = zf_cmd_payload_frames(cmd);
    const char *name = zf_cmd_name(cmd);
    CHECK(name != NULL);
    CHECK(frames >= -1 && frames <= 1);
    CHECK((frames == -1) == (strcmp(name, "?") == 0));

    /* decode from an exact-size heap copy, so a read past the end is caught */
    uint8_t *in = malloc(size ? size : 1);
    if (!in)
        return 0;
    if (size)
        memcpy(in, data, size);
    zf_msg_t m;
    int err = -1;
    const char *why = NULL;
    int rc = zf_msg_decode(&m, in, size, &err, &why);
    zf_msg_t ref;
    int ref_err = -1;
    const char *ref_why = NULL;
    int ref_rc = ref_msg_decode(&ref, in, size, &ref_err, &ref_why);
    if (rc != ref_rc || (rc != 0 && err != ref_err))
        fprintf(stderr, "fuzz_proto: decoder says %d (%s), reference %d (%s)\n", rc,
                rc ? why : "ok", ref_rc, ref_rc ? ref_why : "ok");
    CHECK(rc == ref_rc);
    CHECK(rc == 0 ? ref_msg_same(&m, &ref) : err == ref_err);
    if (rc != 0) {
        CHECK(rc == -1);
        CHECK(err == ZF_EVERSION || err == ZF_EMALFORMED || err == ZF_ECOMMAND);
        CHECK(why != NULL && why[0] != 0);
        if (err == ZF_ECOMMAND)
            CHECK(frames == -1);
        free(in);
        return 0;
    }
    CHECK(size >= 4 && size <= ZF_HEADER_MAX);
    CHECK(m.cmd == cmd);
    check_decoded(&m);
    /* decoding with NULL err/why must give the same answer */
    zf_msg_t m0;
    CHECK(zf_msg_decode(&m0, in, size, NULL, NULL) == 0);
    check_same(&m, &m0);

    /* re-encode: the canonical form of any decodable header fits ZF_HEADER_MAX */
    static uint8_t enc1[ZF_HEADER_MAX], enc2[ZF_HEADER_MAX];
    int n1 = zf_msg_encode(&m, enc1, sizeof enc1);
    CHECK(n1 >= 5);
    /* a buffer one byte short must be refused, not overrun */
    uint8_t *tight = malloc((size_t)n1 - 1);
    if (tight) {
        CHECK(zf_msg_encode(&m, tight, (size_t)n1 - 1) == -1);
        free(tight);
    }
    uint8_t *copy = malloc((size_t)n1);
    if (!copy) {
        free(in);
        return 0;
    }
    memcpy(copy, enc1, (size_t)n1);
    zf_msg_t m2;
    err = -1;
    why = NULL;
    rc = zf_msg_decode(&m2, copy, (size_t)n1, &err, &why);
    if (rc != 0)
        fprintf(stderr, "fuzz_proto: re-encoded header does not decode: %s\n", why ? why : "?");
    CHECK(rc == 0);
    check_same(&m, &m2);
    int n2 = zf_msg_encode(&m2, enc2, sizeof enc2);
    CHECK(n2 == n1 && memcmp(enc1, enc2, (size_t)n1) == 0);
    free(copy);
    free(in);
    return 0;
}
