/*  The result store with real processes: FORGET drops a result once it has reached its
    submitter (and only then), the store's byte bound evicts the oldest results, NO_ACK
    submits are answered by their RESULT alone, and LAZY_ACK ones (every asynchronous
    submit of the C client) see ACCEPTED then RESULT, the ACCEPTED riding with a quick
    result. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "zf_proto.h"

#define HB 200 /* ms, heartbeats of broker and workers */

TestSuite(results, .fini = zt_kill_all);

static zf_client_t *start(zt_env_t *env, const char *opt, const char *val)
{
    zt_fleet_up(env, &(zt_fleet_t){.hb_ms = HB, .broker_args = ZT_ARGS(opt, val), .workers = 1});
    return zt_client(env);
}

/* True when a GET of id answers `unknown job`. */
static bool unknown(zf_client_t *c, uint64_t id)
{
    zf_event_t *e = zf_client_get(c, id);
    if (e) {
        zf_event_destroy(&e);
        return false;
    }
    return zf_client_errcode(c) == ZF_CE_REJECTED && zf_client_brokercode(c) == ZF_EUNKNOWN_JOB;
}

/* Polls GET until the job is terminal; returns its RESULT, or NULL after timeout_ms or
   when the broker does not know the job. */
static zf_event_t *poll_result(zf_client_t *c, uint64_t id, int timeout_ms)
{
    for (int64_t until = zt_now_ms() + timeout_ms; zt_now_ms() < until; zt_pause_ms(20)) {
        zf_event_t *e = zf_client_get(c, id);
        if (!e || e->type == ZF_EV_RESULT)
            return e;
        zf_event_destroy(&e);
    }
    return NULL;
}

Test(results, forget_result_is_dropped_after_push, .timeout = 30)
{
    zt_env_t env;
    zf_client_t *c = start(&env, NULL, NULL);
    zf_submit_opts_t o = {.forget = true};
    uint64_t id, kept;
    cr_assert_eq(zf_client_submit(c, "echo", "once", 4, &o, &id), 0, "%s", zf_client_error(c));
    zf_event_t *r = zf_client_wait(c, id, 5000);
    cr_assert_not_null(r, "%s", zf_client_error(c));
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    cr_assert(r->output_len == 4 && !memcmp(r->output, "once", 4));
    zf_event_destroy(&r);
    /* the same job without the flag stays in the store */
    cr_assert_eq(zf_client_submit(c, "echo", "kept", 4, NULL, &kept), 0);
    r = zf_client_wait(c, kept, 5000);
    cr_assert(r && r->status == ZFLEET_SUCCEEDED);
    zf_event_destroy(&r);

    zf_client_t *other = zt_client(&env);
    cr_assert(unknown(other, id), "a forgotten result was still there: %s", zf_client_error(other));
    r = zf_client_get(other, kept);
    cr_assert(r && r->type == ZF_EV_RESULT && r->output_len == 4, "%s", zf_client_error(other));
    zf_event_destroy(&r);
    cr_assert_eq(zt_broker_counter(&env, "forgotten"), 1);
    cr_assert_eq(zt_broker_counter(&env, "results_kept"), 1);
    cr_assert_eq(zt_broker_counter(&env, "result_bytes"), 4);
    zf_client_destroy(&other);
    zf_client_destroy(&c);
}

/* The submitter is gone when the job ends: the push fails and the result is kept. */
Test(results, forget_result_kept_when_submitter_gone, .timeout = 30)
{
    zt_env_t env;
    zf_client_t *c = start(&env, NULL, NULL);
    zf_submit_opts_t o = {.forget = true};
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "300", 3, &o, &id), 0, "%s", zf_client_error(c));
    zf_client_destroy(&c);
    zf_client_t *other = zt_client(&env);
    zf_event_t *r = poll_result(other, id, 10000);
    cr_assert_not_null(r, "no result: %s", zf_client_error(other));
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    zf_event_destroy(&r);
    r = zf_client_get(other, id); /* and it stays */
    cr_assert(r && r->type == ZF_EV_RESULT, "%s", zf_client_error(other));
    zf_event_destroy(&r);
    cr_assert_eq(zt_broker_counter(&env, "forgotten"), 0);
    cr_assert_eq(zt_broker_counter(&env, "results_kept"), 1);
    cr_assert_geq(zt_broker_counter(&env, "undeliverable"), 1);
    zf_client_destroy(&other);
}

/* Another connection that waited gets the result too, before the broker drops it. */
Test(results, forget_result_reaches_every_waiter_first, .timeout = 30)
{
    zt_env_t env;
    zf_client_t *c = start(&env, NULL, NULL);
    zf_submit_opts_t o = {.forget = true};
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "300", 3, &o, &id), 0, "%s", zf_client_error(c));
    zf_client_t *other = zt_client(&env);
    zf_event_t *r = zf_client_wait(other, id, 10000); /* a waiter before the job ends */
    cr_assert(r && r->status == ZFLEET_SUCCEEDED, "%s", zf_client_error(other));
    zf_event_destroy(&r);
    r = zf_client_wait(c, id, 5000);
    cr_assert(r && r->status == ZFLEET_SUCCEEDED, "%s", zf_client_error(c));
    zf_event_destroy(&r);
    cr_assert(unknown(other, id), "%s", zf_client_error(other));
    cr_assert_eq(zt_broker_counter(&env, "forgotten"), 1);
    zf_client_destroy(&other);
    zf_client_destroy(&c);
}

/* A lost job is a dead letter: kept for inspection and retry, FORGET or not. */
Test(results, forget_never_drops_a_dead_letter, .timeout = 30)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = HB, .workers = 1};
    zf_client_t *c = zt_start(&env, &up);
    pid_t w = up.worker[0];
    zf_submit_opts_t o = {.forget = true, .max_attempts = 1};
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "30000", 5, &o, &id), 0, "%s", zf_client_error(c));
    cr_assert(zt_wait_running(c, id, 5000), "the job never ran");
    zt_kill(w, SIGKILL);
    zf_event_t *e = zf_client_wait(c, id, 10000); /* pushed to the submitter */
    cr_assert(e && e->status == ZFLEET_LOST, "%s", zf_client_error(c));
    zf_event_destroy(&e);
    zf_client_t *other = zt_client(&env);
    e = zf_client_get(other, id);
    cr_assert(e && e->type == ZF_EV_RESULT && e->status == ZFLEET_LOST, "%s",
              zf_client_error(other));
    zf_event_destroy(&e);
    cr_assert_eq(zt_broker_counter(&env, "dead_letters"), 1);
    cr_assert_eq(zt_broker_counter(&env, "forgotten"), 0);
    /* its payload ("30000") is kept for a retry and counts in the store's bytes */
    cr_assert_eq(zt_broker_counter(&env, "result_bytes"), 5);
    zf_client_destroy(&other);
    zf_client_destroy(&c);
}

Test(results, forget_with_no_push_is_rejected, .timeout = 30)
{
    zt_env_t env;
    zf_client_t *c = start(&env, NULL, NULL);
    zf_submit_opts_t o = {.forget = true, .no_push = true};
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "echo", "x", 1, &o, &id), -1);
    cr_assert_eq(zf_client_errcode(c), ZF_CE_REJECTED);
    cr_assert_eq(zf_client_brokercode(c), ZF_EBADARG);
    cr_assert(strstr(zf_client_error(c), "forget needs the result pushed"), "%s",
              zf_client_error(c));
    cr_assert_eq(zt_broker_counter(&env, "accepted"), 0);
    /* the CLI refuses --forget without --wait (the result would be pushed as it exits) */
    cr_assert_eq(zt_cli(&env, NULL, 0, "submit", "echo", "x", "--forget", NULL), 2);
    cr_assert_eq(zt_broker_counter(&env, "accepted"), 0);
    zf_client_destroy(&c);
}

/* 10 results of 1000 bytes under a 3000-byte budget: the 3 newest are kept. */
Test(results, result_store_bytes_bound_evicts_oldest, .timeout = 30)
{
    enum { N = 10, LEN = 1000, KEEP = 3 };
    zt_env_t env;
    zf_client_t *c = start(&env, "--result-store-bytes", "3000");
    uint64_t ids[N];
    char p[LEN];
    for (int i = 0; i < N; i++) {
        memset(p, 'a' + i, sizeof p);
        cr_assert_eq(zf_client_submit(c, "echo", p, sizeof p, NULL, &ids[i]), 0);
        zf_event_t *r = zf_client_wait(c, ids[i], 5000);
        cr_assert(r && r->status == ZFLEET_SUCCEEDED && r->output_len == LEN, "%s",
                  zf_client_error(c));
        zf_event_destroy(&r);
    }
    for (int i = 0; i < N - KEEP; i++)
        cr_assert(unknown(c, ids[i]), "job %d of %d was kept past the byte bound", i + 1, N);
    for (int i = N - KEEP; i < N; i++) {
        zf_event_t *r = zf_client_get(c, ids[i]);
        cr_assert(r && r->type == ZF_EV_RESULT && r->output_len == LEN, "job %d: %s", i + 1,
                  zf_client_error(c));
        cr_assert_eq(((const char *)r->output)[0], 'a' + i);
        zf_event_destroy(&r);
    }
    cr_assert_eq(zt_broker_counter(&env, "result_bytes"), KEEP * LEN);
    cr_assert_eq(zt_broker_counter(&env, "results_kept"), KEEP);
    zf_client_destroy(&c);
}

/* NO_ACK (PROTOCOL.md §6.2): the broker sends no ACCEPTED; the RESULT, with the SUBMIT's
   tag, answers it; a refused submit still gets its REJECTED. Returns the events seen for
   tag until its RESULT or REJECTED, counting the ACCEPTED ones in *acks. */
static zf_event_t *answer_of(zf_client_t *c, uint64_t tag, int *acks)
{
    for (int64_t until = zt_now_ms() + 10000; zt_now_ms() < until;) {
        zf_event_t *e = zf_client_next(c, 500);
        if (!e || e->tag != tag) {
            zf_event_destroy(&e);
            continue;
        }
        if (e->type == ZF_EV_RESULT || e->type == ZF_EV_REJECTED)
            return e;
        *acks += e->type == ZF_EV_ACCEPTED;
        zf_event_destroy(&e);
    }
    return NULL;
}

static void no_ack_round_trips(zt_env_t *env, zf_client_t *c)
{
    zf_submit_opts_t o = {.no_ack = true};
    uint64_t tags[20];
    for (int i = 0; i < 20; i++)
        cr_assert_eq(zf_client_submit_async(c, "echo", "abcd", 4, &o, &tags[i]), 0);
    for (int i = 0; i < 20; i++) {
        int acks = 0;
        zf_event_t *r = answer_of(c, tags[i], &acks);
        cr_assert(r && r->type == ZF_EV_RESULT && r->status == ZFLEET_SUCCEEDED, "job %d", i);
        cr_assert(r->id != 0 && r->output_len == 4 && !memcmp(r->output, "abcd", 4));
        cr_assert_eq(acks, 0, "job %d: %d ACCEPTED sent despite NO_ACK", i, acks);
        zf_event_destroy(&r);
    }
    /* the same submit without the flag is acknowledged, as before */
    uint64_t tag;
    int acks = 0;
    cr_assert_eq(zf_client_submit_async(c, "echo", "abcd", 4, NULL, &tag), 0);
    zf_event_t *r = answer_of(c, tag, &acks);
    cr_assert(r && r->type == ZF_EV_RESULT);
    cr_assert_eq(acks, 1);
    zf_event_destroy(&r);
    cr_assert_eq(zt_broker_counter(env, "accepted"), 21);
}

Test(results, no_ack_submits_are_answered_by_their_result, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = start(&env, NULL, NULL);
    no_ack_round_trips(&env, c);
    zf_client_destroy(&c);
}

/* With the journal (and its fsync) the result still comes, after the sync that holds it. */
Test(results, no_ack_submits_with_the_journal, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    char data[200];
    snprintf(data, sizeof data, "%s/data", env.dir);
    zt_fleet_up(&env,
                &(zt_fleet_t){.hb_ms = HB, .broker_args = ZT_ARGS("--data", data), .workers = 1});
    zf_client_t *c = zt_client(&env);
    no_ack_round_trips(&env, c);
    zf_client_destroy(&c);
}

/* LAZY_ACK (PROTOCOL.md §6.2), which zf_client_submit_async always asks for: the broker may
   hold a job's ACCEPTED up to ZF_LAZY_ACK_MS; a job that ends sooner has its RESULT answer the
   SUBMIT, and the C client makes the ACCEPTED event from it. Either way its caller sees
   exactly one ACCEPTED, with the RESULT's id, before the RESULT. Returns the RESULT. */
static zf_event_t *accepted_then_result(zf_client_t *c, uint64_t tag, int timeout_ms)
{
    uint64_t id = 0;
    for (int64_t until = zt_now_ms() + timeout_ms; zt_now_ms() < until;) {
        zf_event_t *e = zf_client_next(c, 500);
        if (!e || e->tag != tag) {
            zf_event_destroy(&e);
            continue;
        }
        if (e->type == ZF_EV_ACCEPTED) {
            cr_assert_eq(id, 0, "two ACCEPTED events for tag %llu", (unsigned long long)tag);
            cr_assert_neq(e->id, 0);
            id = e->id;
            zf_event_destroy(&e);
            continue;
        }
        cr_assert_eq(e->type, ZF_EV_RESULT, "event %d for tag %llu", e->type,
                     (unsigned long long)tag);
        cr_assert_neq(id, 0, "the RESULT came before its ACCEPTED");
        cr_assert_eq(e->id, id, "the RESULT names another job than its ACCEPTED");
        return e;
    }
    cr_assert_fail("no RESULT for tag %llu within %d ms", (unsigned long long)tag, timeout_ms);
    return NULL;
}

/* Quick jobs, one at a time, each straight to the idle worker: every caller sees ACCEPTED
   then RESULT, and each RESULT carried its ACCEPTED (acks_with_result); the window is
   made 10 s long for the test ($ZFLEET_LAZY_ACK_MS), so that no timing decides. A
   zf_client_wait for the id of an ACCEPTED made from a RESULT finds the RESULT behind it.
   A job that is queued (no worker serves it) is not held: its ACCEPTED comes at once. */
Test(results, lazy_ack_events_are_accepted_then_result, .timeout = 60)
{
    setenv("ZFLEET_LAZY_ACK_MS", "10000", 1);
    zt_env_t env;
    zf_client_t *c = start(&env, NULL, NULL);
    enum { N = 30 };
    for (int i = 0; i < N; i++) {
        uint64_t tag;
        cr_assert_eq(zf_client_submit_async(c, "echo", "abcd", 4, NULL, &tag), 0);
        zf_event_t *r = accepted_then_result(c, tag, 5000);
        cr_assert(r->status == ZFLEET_SUCCEEDED && r->output_len == 4 &&
                  !memcmp(r->output, "abcd", 4));
        zf_event_destroy(&r);
    }
    cr_assert_eq(zt_broker_counter(&env, "acks_with_result"), N);
    /* the ACCEPTED made from a RESULT, then a wait for its id */
    uint64_t tag;
    cr_assert_eq(zf_client_submit_async(c, "echo", "efgh", 4, NULL, &tag), 0);
    zf_event_t *a = zf_client_next(c, 5000);
    cr_assert(a && a->type == ZF_EV_ACCEPTED && a->tag == tag, "%s", zf_client_error(c));
    zf_event_t *r = zf_client_wait(c, a->id, 5000);
    cr_assert(r && r->type == ZF_EV_RESULT && r->id == a->id && r->status == ZFLEET_SUCCEEDED, "%s",
              zf_client_error(c));
    zf_event_destroy(&r);
    zf_event_destroy(&a);
    cr_assert_eq(zt_broker_counter(&env, "acks_with_result"), N + 1);
    /* queued: told at once, well inside the 10 s window */
    int64_t t0 = zt_now_ms();
    cr_assert_eq(zf_client_submit_async(c, "nobody", "x", 1, NULL, &tag), 0);
    for (a = zf_client_next(c, 5000); a && a->tag != tag; a = zf_client_next(c, 5000))
        zf_event_destroy(&a); /* (nothing else is expected: skipped all the same) */
    cr_assert(a && a->type == ZF_EV_ACCEPTED, "%s", zf_client_error(c));
    cr_assert_lt(zt_now_ms() - t0, 5000, "a queued job's ACCEPTED was held");
    zf_event_destroy(&a);
    cr_assert_eq(zt_broker_counter(&env, "acks_with_result"), N + 1);
    cr_assert_eq(zt_broker_counter(&env, "accepted"), N + 2);
    zf_client_destroy(&c);
}

/* A job that runs longer than the window gets its ACCEPTED within it, not with the
   result; the synchronous submit is answered at once, as ever. */
Test(results, lazy_ack_does_not_wait_for_a_long_job, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = start(&env, NULL, NULL);
    uint64_t tag;
    int64_t t0 = zt_now_ms();
    cr_assert_eq(zf_client_submit_async(c, "spin", "3000", 4, NULL, &tag), 0);
    zf_event_t *a = zf_client_next(c, 10000);
    cr_assert(a && a->type == ZF_EV_ACCEPTED && a->tag == tag, "%s", zf_client_error(c));
    int64_t acked = zt_now_ms() - t0;
    cr_assert_lt(acked, 2000, "the ACCEPTED of a 3 s job came after %lld ms", (long long)acked);
    zf_event_t *r;
    while ((r = zf_client_next(c, 10000)) && r->type == ZF_EV_PROGRESS) /* spin's reports */
        zf_event_destroy(&r);
    cr_assert(r && r->type == ZF_EV_RESULT && r->id == a->id && r->status == ZFLEET_SUCCEEDED, "%s",
              zf_client_error(c));
    cr_assert_geq(zt_now_ms() - t0, 2900);
    zf_event_destroy(&r);
    zf_event_destroy(&a);
    cr_assert_eq(zt_broker_counter(&env, "acks_with_result"), 0);
    zf_client_destroy(&c);
}

/* A refused NO_ACK submit is still told so; NO_ACK with NO_PUSH is refused (the submitter
   would hear nothing); the synchronous submit, which waits for ACCEPTED, refuses the flag. */
Test(results, no_ack_refusals, .timeout = 30)
{
    zt_env_t env;
    zf_client_t *c = start(&env, NULL, NULL);
    uint64_t tag, id;
    int acks = 0;
    zf_submit_opts_t bad_device = {.no_ack = true, .device = 7};
    cr_assert_eq(zf_client_submit_async(c, "echo", "x", 1, &bad_device, &tag), 0);
    zf_event_t *e = answer_of(c, tag, &acks);
    cr_assert(e && e->type == ZF_EV_REJECTED && e->code == ZF_EBADARG);
    zf_event_destroy(&e);
    zf_submit_opts_t silent = {.no_ack = true, .no_push = true};
    cr_assert_eq(zf_client_submit_async(c, "echo", "x", 1, &silent, &tag), 0);
    e = answer_of(c, tag, &acks);
    cr_assert(e && e->type == ZF_EV_REJECTED && e->code == ZF_EBADARG);
    cr_assert(strstr(e->text, "no_ack needs the result pushed"), "%s", e->text);
    zf_event_destroy(&e);
    zf_submit_opts_t o = {.no_ack = true};
    cr_assert_eq(zf_client_submit(c, "echo", "x", 1, &o, &id), -1);
    cr_assert_eq(zf_client_errcode(c), ZF_CE_USAGE);
    cr_assert_eq(zt_broker_counter(&env, "accepted"), 0);
    zf_client_destroy(&c);
}
