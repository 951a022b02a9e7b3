/*  zf_outbox: the results a worker keeps until the broker surely has them, oldest first,
    within their bounds, across the ring's wrap-around. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "../worker/zf_outbox.h"

static void keep(zf_outbox_t *o, uint64_t id, size_t out_len, int64_t now_ms)
{
    char hdr[32], out[256];
    int n = snprintf(hdr, sizeof hdr, "done %llu", (unsigned long long)id);
    memset(out, 'x', sizeof out);
    zmq_msg_t m;
    cr_assert_eq(zmq_msg_init_size(&m, out_len), 0);
    memcpy(zmq_msg_data(&m), out, out_len);
    zf_outbox_keep(o, id, 1, hdr, (size_t)n, &m, now_ms);
    zmq_msg_close(&m); /* the outbox holds its own reference */
}

/* The leases kept, oldest first, are first..first + count - 1. */
static void expect_run(zf_outbox_t *o, uint64_t first, uint32_t count)
{
    cr_assert_eq(zf_outbox_count(o), count);
    for (uint32_t i = 0; i < count; i++) {
        uint64_t id;
        uint32_t attempt;
        zf_outbox_lease(o, i, &id, &attempt);
        cr_assert_eq(id, first + i, "entry %u: lease %llu, not %llu", i, (unsigned long long)id,
                     (unsigned long long)(first + i));
        cr_assert_eq(attempt, 1);
    }
}

Test(outbox, keeps_the_newest_entries_in_order_across_wrap_around)
{
    zf_outbox_t *o = zf_outbox_new(1 << 20);
    cr_assert_not_null(o);
    for (uint64_t id = 1; id <= 5 * ZF_OUTBOX_MAX + 7; id++) {
        keep(o, id, 16, (int64_t)id);
        uint64_t kept = id < ZF_OUTBOX_MAX ? id : ZF_OUTBOX_MAX;
        expect_run(o, id - kept + 1, (uint32_t)kept);
    }
    zf_outbox_destroy(&o);
    cr_assert_null(o);
}

Test(outbox, drop_and_confirm_keep_the_order_of_the_rest)
{
    zf_outbox_t *o = zf_outbox_new(1 << 20);
    for (uint64_t id = 1; id <= ZF_OUTBOX_MAX + 10; id++) /* the ring has wrapped */
        keep(o, id, 16, (int64_t)id);
    expect_run(o, 11, ZF_OUTBOX_MAX);
    cr_assert(zf_outbox_drop(o, 30, 1));
    cr_assert_not(zf_outbox_drop(o, 30, 1), "dropped once");
    cr_assert_not(zf_outbox_drop(o, 31, 2), "another attempt of a kept lease");
    cr_assert_eq(zf_outbox_count(o), ZF_OUTBOX_MAX - 1);
    for (uint32_t i = 0; i < zf_outbox_count(o); i++) {
        uint64_t id;
        uint32_t attempt;
        zf_outbox_lease(o, i, &id, &attempt);
        cr_assert_eq(id, i < 19 ? 11 + i : 12 + i, "entry %u is lease %llu", i,
                     (unsigned long long)id);
    }
    zf_outbox_confirm(o, 30); /* everything sent before 30 ms: leases 11..29 */
    expect_run(o, 31, ZF_OUTBOX_MAX + 10 - 30);
    keep(o, 500, 16, 500); /* and the ring still takes new ones at its end */
    uint64_t id;
    uint32_t attempt;
    zf_outbox_lease(o, zf_outbox_count(o) - 1, &id, &attempt);
    cr_assert_eq(id, 500);
    zf_outbox_clear(o);
    cr_assert_eq(zf_outbox_count(o), 0);
    zf_outbox_destroy(&o);
}

Test(outbox, a_lease_sent_again_is_kept_once_at_the_end)
{
    zf_outbox_t *o = zf_outbox_new(1 << 20);
    for (uint64_t id = 1; id <= 3; id++)
        keep(o, id, 16, (int64_t)id);
    keep(o, 1, 16, 4);
    cr_assert_eq(zf_outbox_count(o), 3);
    uint64_t ids[3];
    for (uint32_t i = 0; i < 3; i++) {
        uint32_t attempt;
        zf_outbox_lease(o, i, &ids[i], &attempt);
    }
    cr_assert(ids[0] == 2 && ids[1] == 3 && ids[2] == 1);
    zf_outbox_destroy(&o);
}

/* Output bytes are bounded too: the oldest go first; an output over the bound is not kept. */
Test(outbox, the_byte_bound_evicts_the_oldest)
{
    zf_outbox_t *o = zf_outbox_new(1000);
    for (uint64_t id = 1; id <= 10; id++)
        keep(o, id, 200, (int64_t)id);
    expect_run(o, 6, 5); /* 5 x 200 bytes */
    zf_outbox_t *small = zf_outbox_new(100);
    keep(small, 1, 200, 1);
    cr_assert_eq(zf_outbox_count(small), 0);
    zf_outbox_t *none = zf_outbox_new(0);
    keep(none, 1, 0, 1);
    cr_assert_eq(zf_outbox_count(none), 0, "a bound of 0 keeps nothing");
    zf_outbox_destroy(&small);
    zf_outbox_destroy(&none);
    zf_outbox_destroy(&o);
}

/* What is kept is sent again, header then output, on a socket. */
Test(outbox, resend_sends_every_entry_again)
{
    void *ctx = zmq_ctx_new();
    void *a = zmq_socket(ctx, ZMQ_PAIR), *b = zmq_socket(ctx, ZMQ_PAIR);
    cr_assert_eq(zmq_bind(a, "inproc://outbox"), 0);
    cr_assert_eq(zmq_connect(b, "inproc://outbox"), 0);
    zf_outbox_t *o = zf_outbox_new(1 << 20);
    for (uint64_t id = 1; id <= ZF_OUTBOX_MAX + 3; id++)
        keep(o, id, 8, (int64_t)id);
    cr_assert_eq(zf_outbox_resend(o, a, 1000), ZF_OUTBOX_MAX);
    for (uint64_t id = 4; id <= ZF_OUTBOX_MAX + 3; id++) {
        char hdr[32], want[32];
        int n = zmq_recv(b, hdr, sizeof hdr - 1, 0);
        cr_assert_gt(n, 0);
        hdr[n] = 0;
        snprintf(want, sizeof want, "done %llu", (unsigned long long)id);
        cr_assert_str_eq(hdr, want);
        int more;
        size_t len = sizeof more;
        zmq_getsockopt(b, ZMQ_RCVMORE, &more, &len);
        cr_assert(more);
        char out[16];
        cr_assert_eq(zmq_recv(b, out, sizeof out, 0), 8);
    }
    zf_outbox_confirm(o, 1000); /* resent at 1000 ms: nothing was sent before */
    cr_assert_eq(zf_outbox_count(o), ZF_OUTBOX_MAX);
    zf_outbox_confirm(o, 1001);
    cr_assert_eq(zf_outbox_count(o), 0);
    zf_outbox_destroy(&o);
    zmq_close(a);
    zmq_close(b);
    zmq_ctx_term(ctx);
}
