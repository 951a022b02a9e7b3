/*  Retry on failure and delayed jobs (issue 18, PROTOCOL.md §4.5) with real processes:
    backoff bounds, permanent failures, causes, RETRY of a failed job, delayed starts that
    survive kill -9 of the broker, old journals, and bad input. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "harness.h"

#define HB 250 /* ms */

TestSuite(retry, .fini = zt_kill_all);

static const char *testmod(void)
{
    return zt_path("tests/zf_testmod.so");
}

static const char *data_dir(const zt_env_t *env)
{
    static char d[160];
    snprintf(d, sizeof d, "%s/data", env->dir);
    return d;
}

static uint64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* A broker (journaled when data is true) and one worker with the test module. */
static zf_client_t *up(zt_env_t *env, bool data)
{
    zt_env_init(env);
    if (data)
        zt_broker(env, HB, "--data", data_dir(env), NULL);
    else
        zt_broker(env, HB, NULL);
    zt_worker(env, HB, "--module", testmod(), NULL);
    cr_assert(zt_wait_workers(env, 1, 10000), "the worker registers");
    return zt_client(env);
}

static zf_event_t *submit_wait(zf_client_t *c, const char *fn, const char *data,
                               const zf_submit_opts_t *o, uint64_t *id, int timeout_ms)
{
    cr_assert_eq(zf_client_submit(c, fn, data, strlen(data), o, id), 0, "submit: %s",
                 zf_client_error(c));
    zf_event_t *e = zf_client_wait(c, *id, timeout_ms);
    cr_assert(e, "a result for %s: %s", fn, zf_client_error(c));
    return e;
}

/* Two handler failures, retried with a 200 ms base: the third attempt succeeds, and the
   waits are at least half of 200 + 400 ms (equal jitter), well under the cap. */
Test(retry, failed_attempts_are_retried_with_backoff, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = up(&env, false);
    zf_submit_opts_t o = {.retries = 3, .backoff_ms = 200};
    uint64_t id;
    int64_t t0 = zt_now_ms();
    zf_event_t *e = submit_wait(c, "flaky", "3", &o, &id, 20000);
    int64_t took = zt_now_ms() - t0;
    cr_assert_eq(e->status, ZFLEET_SUCCEEDED, "status %d: %s", e->status, e->text);
    cr_assert_eq(e->output_len, strlen("ok after 3"));
    cr_assert(!memcmp(e->output, "ok after 3", e->output_len));
    cr_assert_geq(took, 300, "two backoffs of >= 100 and >= 200 ms, took %lld ms", (long long)took);
    cr_assert_lt(took, 10000, "took %lld ms", (long long)took);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

/* While it waits for its retry the job reads `scheduled`, with the cause so far. */
Test(retry, job_waiting_for_retry_is_scheduled_with_its_cause, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = up(&env, false);
    zf_submit_opts_t o = {.retries = 1, .backoff_ms = 4000};
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "flaky", "2", 1, &o, &id), 0);
    zf_event_t *e = NULL;
    int64_t until = zt_now_ms() + 5000;
    while (zt_now_ms() < until) {
        zf_event_destroy(&e);
        e = zf_client_get(c, id);
        if (e && e->status == ZFLEET_SCHEDULED)
            break;
        zt_pause_ms(20);
    }
    cr_assert(e && e->status == ZFLEET_SCHEDULED, "the job waits for its retry as scheduled");
    cr_assert(strstr(e->text, "attempt 1: flaky attempt 1"), "cause: %s", e->text);
    zf_event_destroy(&e);
    e = zf_client_wait(c, id, 15000);
    cr_assert(e && e->status == ZFLEET_SUCCEEDED);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

/* Retries used up: the job fails, and its result names every attempt's error. */
Test(retry, exhausted_retries_fail_with_every_cause, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = up(&env, false);
    zf_submit_opts_t o = {.retries = 2, .backoff_ms = 50};
    uint64_t id;
    zf_event_t *e = submit_wait(c, "flaky", "10", &o, &id, 20000);
    cr_assert_eq(e->status, ZFLEET_FAILED);
    cr_assert_eq(e->attempts, 3, "three deliveries, got %u", e->attempts);
    cr_assert(strstr(e->text, "attempt 1: flaky attempt 1"), "causes: %s", e->text);
    cr_assert(strstr(e->text, "attempt 2: flaky attempt 2"), "causes: %s", e->text);
    cr_assert(strstr(e->text, "flaky attempt 3"), "causes: %s", e->text);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

/* zf_job_fail_permanent: one attempt, however many retries were asked for. */
Test(retry, permanent_failure_is_not_retried, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = up(&env, false);
    zf_submit_opts_t o = {.retries = 5, .backoff_ms = 50};
    uint64_t id;
    zf_event_t *e = submit_wait(c, "permanent", "bad input", &o, &id, 20000);
    cr_assert_eq(e->status, ZFLEET_FAILED);
    cr_assert_eq(e->attempts, 1, "got %u attempts", e->attempts);
    cr_assert(strstr(e->text, "bad input"), "%s", e->text);
    cr_assert(strstr(e->text, "permanent"), "%s", e->text);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

/* RETRY of a finished `failed` job queues it again (not only dead letters). */
Test(retry, retry_of_failed_job_requeues_it, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = up(&env, true);
    uint64_t id;
    zf_event_t *e = submit_wait(c, "flaky", "2", NULL, &id, 20000);
    cr_assert_eq(e->status, ZFLEET_FAILED);
    zf_event_destroy(&e);
    cr_assert_eq(zf_client_retry(c, id), 0, "retry: %s", zf_client_error(c));
    e = zf_client_wait(c, id, 20000);
    cr_assert(e);
    cr_assert_eq(e->status, ZFLEET_SUCCEEDED, "status %d: %s", e->status, e->text);
    cr_assert(!memcmp(e->output, "ok after 2", e->output_len));
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

/* delay_ms: `scheduled` until due, and it runs no earlier. */
Test(retry, delayed_job_runs_no_earlier_than_due, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = up(&env, false);
    zf_submit_opts_t o = {.delay_ms = 800};
    uint64_t id;
    int64_t t0 = zt_now_ms();
    cr_assert_eq(zf_client_submit(c, "echo", "later", 5, &o, &id), 0);
    zf_event_t *e = zf_client_get(c, id);
    cr_assert(e && e->status == ZFLEET_SCHEDULED, "status %d", e ? e->status : -1);
    zf_event_destroy(&e);
    e = zf_client_wait(c, id, 10000);
    int64_t took = zt_now_ms() - t0;
    cr_assert(e && e->status == ZFLEET_SUCCEEDED);
    cr_assert_geq(took, 800, "ran after %lld ms", (long long)took);
    zf_event_destroy(&e);
    /* not_before, as wall-clock ms */
    o = (zf_submit_opts_t){.not_before = wall_ms() + 600};
    t0 = zt_now_ms();
    e = submit_wait(c, "echo", "at", &o, &id, 10000);
    took = zt_now_ms() - t0;
    cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
    cr_assert_geq(took, 590, "ran after %lld ms", (long long)took); /* (wall vs monotonic) */
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

/* A delayed job is journaled: kill -9 of the broker while it is scheduled loses nothing,
   and the restarted broker still holds it until its time. */
Test(retry, delayed_job_survives_broker_kill9, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = zt_broker(&env, HB, "--data", data_dir(&env), NULL);
    zf_client_t *c = zt_client(&env);
    zf_submit_opts_t o = {.delay_ms = 2500};
    uint64_t id;
    int64_t t0 = zt_now_ms();
    cr_assert_eq(zf_client_submit(c, "echo", "durable", 7, &o, &id), 0);
    zf_client_destroy(&c);
    zt_kill(b, SIGKILL);
    zt_wait_exit(b, 5000);
    zt_broker(&env, HB, "--data", data_dir(&env), NULL);
    zt_worker(&env, HB, "--module", testmod(), NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    c = zt_client(&env);
    zf_event_t *e = zf_client_get(c, id);
    cr_assert(e, "the job survived: %s", zf_client_error(c));
    if (zt_now_ms() - t0 < 2300)
        cr_assert_eq(e->status, ZFLEET_SCHEDULED, "still scheduled after the restart");
    zf_event_destroy(&e);
    e = zf_client_wait(c, id, 15000);
    int64_t took = zt_now_ms() - t0;
    cr_assert(e && e->status == ZFLEET_SUCCEEDED);
    cr_assert(!memcmp(e->output, "durable", e->output_len));
    cr_assert_geq(took, 2500, "ran after %lld ms", (long long)took);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

/* A journal written before SCHEDULE records existed (tests/data/journal-v1, by the broker
   of commit 73e4ed8) still replays: its finished jobs keep their results, its queued one
   runs. */
Test(retry, journal_without_schedule_records_replays, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    char src[512], cmd[1200];
    /* tests/test_retry.c: its folder's data/ (__FILE__ is relative to the build folder) */
    snprintf(src, sizeof src, "%s%s%s", __FILE__[0] == '/' ? "" : zt_build_dir(),
             __FILE__[0] == '/' ? "" : "/", __FILE__);
    char *slash = strrchr(src, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(src, sizeof src, ".");
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/data/journal-v1/journal %s/journal",
             data_dir(&env), src, data_dir(&env));
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    /* the finished jobs are kept for the result TTL from when they finished (the fixture
       was written 2026-12-03 ~11:30Z): the longest TTL keeps them ~49 days after that;
       past it only the queued job is checked */
    zt_broker(&env, HB, "--data", data_dir(&env), "--result-ttl", "4294967295", NULL);
    zt_worker(&env, HB, "--module", testmod(), NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    zf_event_t *e = NULL;
    bool kept = (int64_t)time(NULL) < 1796299200LL + 49LL * 86400;
    if (kept) {
        e = zf_client_get(c, 5788980580336460ull);
        cr_assert(e && e->status == ZFLEET_SUCCEEDED, "an old success is kept");
        cr_assert(!memcmp(e->output, "queued-one", e->output_len));
        zf_event_destroy(&e);
        e = zf_client_get(c, 4773009322313575ull);
        cr_assert(e && e->status == ZFLEET_FAILED && strstr(e->text, "oldfail"));
        zf_event_destroy(&e);
    }
    e = zf_client_wait(c, 6988869925629654ull, 10000);
    cr_assert(e && e->status == ZFLEET_SUCCEEDED, "the old queued job runs");
    cr_assert(!memcmp(e->output, "queued-three", e->output_len));
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

static void rejected(zf_client_t *c, const zf_submit_opts_t *o, const char *why)
{
    uint64_t id = 0;
    cr_assert_neq(zf_client_submit(c, "echo", "x", 1, o, &id), 0, "rejected: %s", why);
    cr_assert(strstr(zf_client_error(c), why), "error '%s' says '%s'", zf_client_error(c), why);
}

Test(retry, bad_retry_and_delay_fields_are_rejected, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, HB, NULL);
    zf_client_t *c = zt_client(&env);
    rejected(c, &(zf_submit_opts_t){.retries = 21}, "retries must be at most 20");
    rejected(c, &(zf_submit_opts_t){.backoff_ms = 60001}, "retry_backoff_ms must be at most");
    rejected(c, &(zf_submit_opts_t){.delay_ms = 4000000000u}, "delay_ms must be at most 30 days");
    rejected(c, &(zf_submit_opts_t){.not_before = wall_ms() + 31ull * 86400000},
             "not_before must be at most 30 days ahead");
    zf_client_destroy(&c);
    /* the CLI refuses a negative or non-numeric delay and a retries count over the cap */
    char out[512], err[512];
    cr_assert_neq(zt_cli_err(&env, out, sizeof out, err, sizeof err, "submit", "echo", "x",
                             "--delay-ms", "-5", NULL),
                  0);
    cr_assert(strstr(err, "delay-ms"), "%s", err);
    cr_assert_neq(zt_cli_err(&env, out, sizeof out, err, sizeof err, "submit", "echo", "x",
                             "--retries", "21", NULL),
                  0);
    cr_assert(strstr(err, "retries"), "%s", err);
    cr_assert_neq(zt_cli_err(&env, out, sizeof out, err, sizeof err, "submit", "echo", "x",
                             "--not-before", "soon", NULL),
                  0);
    cr_assert(strstr(err, "not-before"), "%s", err);
}

/* The CLI's flags reach the broker: a delayed submit reads scheduled. */
Test(retry, cli_submit_with_delay_and_retries, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, HB, NULL);
    char out[512];
    cr_assert_eq(zt_cli(&env, out, sizeof out, "--json", "submit", "echo", "x", "--delay-ms",
                        "60000", "--retries", "2", NULL),
                 0, "%s", out);
    cr_assert(strstr(out, "\"status\":\"scheduled\""), "%s", out);
}

/* A job waiting for its retry is journaled with its retries used and its causes: after
   kill -9 of the broker it is still scheduled, and its next attempt succeeds. */
Test(retry, retry_wait_survives_broker_kill9, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = zt_broker(&env, HB, "--data", data_dir(&env), NULL);
    pid_t w = zt_worker(&env, HB, "--module", testmod(), NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    zf_submit_opts_t o = {.retries = 1, .backoff_ms = 8000}; /* waits 4 to 8 s */
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "flaky", "2", 1, &o, &id), 0);
    zf_event_t *e = NULL;
    for (int i = 0; i < 250; i++) {
        zf_event_destroy(&e);
        e = zf_client_get(c, id);
        if (e && e->status == ZFLEET_SCHEDULED)
            break;
        zt_pause_ms(20);
    }
    cr_assert(e && e->status == ZFLEET_SCHEDULED, "waiting for its retry");
    int64_t failed_at = zt_now_ms();
    zf_event_destroy(&e);
    zf_client_destroy(&c);
    /* GET answers from memory, possibly in the loop turn that took the failure and before
       that turn wrote its SCHEDULE record: let the record reach the journal first */
    zt_pause_ms(300);
    zt_kill(b, SIGKILL);
    zt_kill(w, SIGKILL);
    zt_wait_exit(b, 5000);
    zt_broker(&env, HB, "--data", data_dir(&env), NULL);
    c = zt_client(&env);
    e = zf_client_get(c, id);
    cr_assert(e, "the job survived");
    if (zt_now_ms() - failed_at < 3800) /* (a slow restart may outlast the shortest wait) */
        cr_assert_eq(e->status, ZFLEET_SCHEDULED, "still scheduled after the restart");
    cr_assert(strstr(e->text, "attempt 1: flaky attempt 1"), "the cause is kept: %s", e->text);
    zf_event_destroy(&e);
    zt_worker(&env, HB, "--module", testmod(), NULL);
    e = zf_client_wait(c, id, 20000);
    cr_assert(e && e->status == ZFLEET_SUCCEEDED, "status %d: %s", e ? e->status : -1,
              e ? e->text : "");
    cr_assert(!memcmp(e->output, "ok after 2", e->output_len));
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}
