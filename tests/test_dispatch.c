/*  Dispatch with real processes: priorities, FIFO within a priority, credits, idle before
    busy, and no starvation behind a long job in a busy worker's prefetch. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

TestSuite(dispatch, .fini = zt_kill_all);

/* Jobs queued with mixed priorities run highest priority first, FIFO within one. */
Test(dispatch, priority_then_fifo, .timeout = 60)
{
    enum { N = 60 };
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 300});
    int prio[N];
    srand(42);
    for (int i = 0; i < N; i++) {
        prio[i] = rand() % 4 - 1; /* -1 .. 2 */
        char p[16];
        int len = snprintf(p, sizeof p, "%d", i);
        zf_submit_opts_t o = {.priority = prio[i]};
        uint64_t id;
        cr_assert_eq(zf_client_submit(c, "echo", p, (size_t)len, &o, &id), 0);
    }
    /* one worker, one credit: the order results arrive is the dispatch order */
    zt_worker(&env, 300, "--credits", "1", NULL);
    int prev_prio = 1000, prev_idx = -1;
    for (int k = 0; k < N; k++) {
        zf_event_t *e = zf_client_next(c, 10000);
        cr_assert_not_null(e);
        cr_assert_eq(e->type, ZF_EV_RESULT);
        int idx = (int)zt_output_long(e);
        cr_assert(idx >= 0 && idx < N, "output %d is not a job index", idx);
        if (prio[idx] == prev_prio)
            cr_assert_gt(idx, prev_idx, "FIFO broken within priority %d: %d after %d", prio[idx],
                         idx, prev_idx);
        else
            cr_assert_lt(prio[idx], prev_prio, "priority order broken: %d after %d", prio[idx],
                         prev_prio);
        prev_prio = prio[idx];
        prev_idx = idx;
        zf_event_destroy(&e);
    }
    zf_client_destroy(&c);
}

/* The most jobs any one worker holds right now, from the broker's stats. */
static long long most_jobs(msgpack_object *doc, const char *unused)
{
    (void)unused;
    msgpack_object *ws = zt_mp_get(doc, "workers");
    long long best = -1;
    for (uint32_t w = 0; ws && w < ws->via.array.size; w++) {
        msgpack_object *jobs = zt_mp_get(&ws->via.array.ptr[w], "jobs");
        if (jobs && (long long)jobs->via.array.size > best)
            best = (long long)jobs->via.array.size;
    }
    return best;
}

/* A worker is never given more jobs than its credits, and is given up to them. */
Test(dispatch, credits_never_exceeded, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 300, .workers = 1, .worker_args = ZT_ARGS("--credits", "3")};
    zf_client_t *c = zt_start(&env, &up);
    for (int i = 0; i < 12; i++)
        cr_assert_eq(zf_client_submit(c, "spin", "100", 3, NULL, NULL), 0);
    int highest = 0;
    for (int k = 0; k < 40; k++) {
        int held = (int)zt_with_stats(&env, most_jobs, NULL);
        cr_assert_leq(held, 3, "worker holds %d jobs with 3 credits", held);
        if (held > highest)
            highest = held;
        zt_pause_ms(25);
    }
    cr_assert_eq(highest, 3, "a worker with queued work uses all its credits");
    for (int i = 0; i < 12;) {
        zf_event_t *e = zf_client_next(c, 10000);
        cr_assert_not_null(e);
        if (e->type != ZF_EV_PROGRESS) {
            cr_assert(e->type == ZF_EV_RESULT && e->status == ZFLEET_SUCCEEDED);
            i++;
        }
        zf_event_destroy(&e);
    }
    zf_client_destroy(&c);
}

/* Two jobs, two workers with spare credits: they run side by side, one on each worker. */
Test(dispatch, idle_worker_served_before_busy_one, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 300,
                     .workers = 2,
                     .worker_args = ZT_ARGS("--credits", "4"),
                     .names = ZT_ARGS("a", "b")};
    zf_client_t *c = zt_start(&env, &up);
    for (int round = 0; round < 5; round++) {
        uint64_t id1, id2;
        cr_assert_eq(zf_client_submit(c, "spin", "50", 2, NULL, &id1), 0);
        cr_assert_eq(zf_client_submit(c, "spin", "50", 2, NULL, &id2), 0);
        zf_event_t *r1 = zf_client_wait(c, id1, 5000), *r2 = zf_client_wait(c, id2, 5000);
        cr_assert(r1 && r2);
        cr_assert_str_neq(r1->worker, r2->worker, "both jobs went to %s", r1->worker);
        zf_event_destroy(&r1);
        zf_event_destroy(&r2);
    }
    zf_client_destroy(&c);
}

/* 1 long job + many short ones, 2 workers with prefetch credits: the short ones all finish
   on the free worker while the long one runs (none waits behind it in a prefetch). */
Test(dispatch, short_jobs_not_held_behind_long_one, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 300,
                     .workers = 2,
                     .worker_args = ZT_ARGS("--credits", "4"),
                     .names = ZT_ARGS("a", "b")};
    zf_client_t *c = zt_start(&env, &up);
    uint64_t long_id;
    cr_assert_eq(zf_client_submit(c, "spin", "3000", 4, NULL, &long_id), 0);
    enum { SHORT = 40 };
    uint64_t ids[SHORT];
    for (int i = 0; i < SHORT; i++)
        cr_assert_eq(zf_client_submit(c, "spin", "10", 2, NULL, &ids[i]), 0);
    int64_t t0 = zt_now_ms();
    char long_worker[64] = "";
    for (int i = 0; i < SHORT; i++) {
        zf_event_t *r = zf_client_wait(c, ids[i], 10000);
        cr_assert_not_null(r);
        cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
        zf_event_destroy(&r);
    }
    int64_t shorts_done = zt_now_ms() - t0;
    zf_event_t *l = zf_client_get(c, long_id);
    cr_assert_not_null(l);
    cr_assert_eq(l->status, ZFLEET_RUNNING,
                 "the long job is still running when the short ones are done");
    snprintf(long_worker, sizeof long_worker, "%s", l->worker);
    zf_event_destroy(&l);
    cr_assert_lt(shorts_done, 2500, "short jobs waited behind the long one (%lld ms)",
                 (long long)shorts_done);
    zf_event_t *r = zf_client_wait(c, long_id, 10000);
    cr_assert(r && r->status == ZFLEET_SUCCEEDED);
    cr_assert_str_eq(r->worker, long_worker);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* The highest credits any worker has now, from the broker's stats. */
static long long most_credits(msgpack_object *doc, const char *unused)
{
    (void)unused;
    msgpack_object *ws = zt_mp_get(doc, "workers");
    long long best = -1;
    for (uint32_t w = 0; ws && w < ws->via.array.size; w++) {
        msgpack_object *cr = zt_mp_get(&ws->via.array.ptr[w], "credits");
        if (cr && (long long)cr->via.u64 > best)
            best = (long long)cr->via.u64;
    }
    return best;
}

/* Echoes the fleet with n echo jobs and waits for them all. */
static void run_echoes(zf_client_t *c, int n)
{
    for (int i = 0; i < n; i++)
        cr_assert_eq(zf_client_submit(c, "echo", "x", 1, NULL, NULL), 0);
    for (int i = 0; i < n;) {
        zf_event_t *e = zf_client_next(c, 10000);
        cr_assert_not_null(e);
        if (e->type == ZF_EV_RESULT) {
            cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
            i++;
        }
        zf_event_destroy(&e);
    }
}

/* No --credits: workers that run microsecond jobs raise their credits themselves (adaptive
   prefetch), and a long job then still keeps no short one waiting behind it: the broker
   takes the prefetched jobs back for the idle worker (RECALL). */
Test(dispatch, adaptive_default_short_jobs_not_held_behind_long_one, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 300, .workers = 2, .names = ZT_ARGS("a", "b")};
    zf_client_t *c = zt_start(&env, &up);
    long long credits = 0;
    for (int round = 0; round < 20 && credits <= 4; round++) {
        run_echoes(c, 500);
        credits = zt_with_stats(&env, most_credits, NULL);
    }
    cr_assert_gt(credits, 4, "fast jobs raised no worker's credits (highest %lld)", credits);
    uint64_t long_id;
    cr_assert_eq(zf_client_submit(c, "spin", "3000", 4, NULL, &long_id), 0);
    enum { SHORT = 40 };
    uint64_t ids[SHORT];
    for (int i = 0; i < SHORT; i++)
        cr_assert_eq(zf_client_submit(c, "spin", "10", 2, NULL, &ids[i]), 0);
    int64_t t0 = zt_now_ms();
    for (int i = 0; i < SHORT; i++) {
        zf_event_t *r = zf_client_wait(c, ids[i], 10000);
        cr_assert_not_null(r);
        cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
        zf_event_destroy(&r);
    }
    int64_t shorts_done = zt_now_ms() - t0;
    zf_event_t *l = zf_client_get(c, long_id);
    cr_assert_not_null(l);
    cr_assert_eq(l->status, ZFLEET_RUNNING,
                 "the long job is still running when the short ones are done");
    zf_event_destroy(&l);
    cr_assert_lt(shorts_done, 2500, "short jobs waited behind the long one (%lld ms)",
                 (long long)shorts_done);
    zf_event_t *r = zf_client_wait(c, long_id, 10000);
    cr_assert(r && r->status == ZFLEET_SUCCEEDED);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* No --credits, long jobs: a worker keeps 1 credit (prefetch would only make jobs wait). */
Test(dispatch, adaptive_default_long_jobs_keep_one_credit, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 300, .workers = 1};
    zf_client_t *c = zt_start(&env, &up);
    enum { N = 4 };
    uint64_t ids[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(zf_client_submit(c, "spin", "1000", 4, NULL, &ids[i]), 0);
    for (int i = 0; i < N; i++) {
        long long held = zt_with_stats(&env, most_jobs, NULL);
        cr_assert_leq(held, 1, "a worker of 1 s jobs holds %lld (credits %lld)", held,
                      zt_with_stats(&env, most_credits, NULL));
        zf_event_t *r = zf_client_wait(c, ids[i], 10000);
        cr_assert(r && r->status == ZFLEET_SUCCEEDED);
        zf_event_destroy(&r);
    }
    cr_assert_eq(zt_with_stats(&env, most_credits, NULL), 1);
    zf_client_destroy(&c);
}
