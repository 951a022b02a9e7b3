/*  Failure handling with real processes: zombie results, poison jobs, run timeouts,
    deadlines, cancellation, limits and reconnection. Every job ends exactly once. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

TestSuite(failure, .fini = zt_kill_all);

static const char *testmod(void)
{
    return zt_path("tests/zf_testmod.so");
}

/* The next RESULT event (PROGRESS events are skipped), or NULL. */
static zf_event_t *next_result(zf_client_t *c, int timeout_ms)
{
    int64_t until = zt_now_ms() + timeout_ms;
    while (zt_now_ms() < until) {
        zf_event_t *e = zf_client_next(c, (int)(until - zt_now_ms()));
        if (!e || e->type == ZF_EV_RESULT)
            return e;
        zf_event_destroy(&e);
    }
    return NULL;
}

static zf_event_t *wait_state(zf_client_t *c, uint64_t id, int state, int timeout_ms)
{
    int64_t until = zt_now_ms() + timeout_ms;
    while (zt_now_ms() < until) {
        zf_event_t *e = zf_client_get(c, id);
        if (e && e->status == state)
            return e;
        zf_event_destroy(&e);
        zt_pause_ms(20);
    }
    return NULL;
}

static pid_t fleet(const zt_env_t *env, const char *cpus, const char *log_name, int hb)
{
    static char log[200], hbs[16];
    snprintf(log, sizeof log, "%s/%s", env->dir, log_name);
    snprintf(hbs, sizeof hbs, "%d", hb);
    const char *args[] = {"--fleet",      "--cpus",      cpus, "--gpus",   "none",    "--broker",
                          env->worker_ep, "--heartbeat", hbs,  "--module", testmod(), NULL};
    return zt_spawn("worker/zfleet-worker", log, args);
}

static bool file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

/* A worker frozen with SIGSTOP while running a job is declared dead; the job completes
   elsewhere; after SIGCONT its late result is dropped and counted; one result reached the
   client. */
Test(failure, zombie_result_is_dropped_and_counted, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 200,
                     .broker_args = ZT_ARGS("--liveness", "3"),
                     .workers = 1,
                     .worker_args = ZT_ARGS("--name", "zombie")};
    zf_client_t *c = zt_start(&env, &up);
    pid_t a = up.worker[0];
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "1500", 4, NULL, &id), 0);
    zf_event_t *st = wait_state(c, id, ZFLEET_RUNNING, 5000);
    cr_assert(st, "job never started");
    zf_event_destroy(&st);
    kill(a, SIGSTOP);
    zt_worker(&env, 200, "--name", "healthy", NULL);
    zf_event_t *r = next_result(c, 15000);
    cr_assert_not_null(r, "no result while the first worker is frozen");
    cr_assert_eq(r->id, id);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    cr_assert_eq(r->attempts, 2);
    cr_assert_str_eq(r->worker, "healthy");
    zf_event_destroy(&r);
    kill(a, SIGCONT);
    /* the zombie finishes its (time-based) spin at once and reports a stale lease: as a DONE
       (counted stale_results), or, when it first noticed the broker's long silence and
       registered again, as a claim in its READY (refused and counted claims_refused) */
    int64_t until = zt_now_ms() + 8000;
    long long late = 0;
    while ((late = zt_broker_counter(&env, "stale_results") +
                   zt_broker_counter(&env, "claims_refused")) < 1 &&
           zt_now_ms() < until)
        zt_pause_ms(50);
    cr_assert_geq(late, 1, "late result was not counted");
    zf_event_t *extra = next_result(c, 500);
    cr_assert_null(extra, "the client saw a second result");
    /* the zombie registers again and is useful */
    cr_assert(zt_wait_workers(&env, 2, 8000), "the thawed worker did not re-register");
    zf_client_destroy(&c);
}

/* A handler that aborts its process on every call: the job ends lost after exactly
   max_attempts deliveries, with a cause per attempt, lands in the dead-letter list, and
   the fleet keeps serving other jobs. */
Test(failure, poison_job_is_lost_after_max_attempts, .timeout = 90)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200, .broker_args = ZT_ARGS("--liveness", "3")});
    fleet(&env, "0,1", "fleet.log", 200);
    cr_assert(zt_wait_workers(&env, 2, 8000));
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    zf_submit_opts_t o = {.max_attempts = 3};
    cr_assert_eq(zf_client_submit(c, "abort", "", 0, &o, &id), 0);
    zf_event_t *r = zf_client_wait(c, id, 30000);
    cr_assert_not_null(r, "%s", zf_client_error(c));
    cr_assert_eq(r->status, ZFLEET_LOST, "status %s", zfleet_state_name(r->status));
    cr_assert_eq(r->attempts, 3);
    cr_assert(strstr(r->text, "attempt 1:") && strstr(r->text, "attempt 3:") &&
                  !strstr(r->text, "attempt 4:"),
              "causes: %s", r->text);
    /* the supervisor reported how each worker died */
    cr_assert(strstr(r->text, "killed by signal 6"), "causes: %s", r->text);
    zf_event_destroy(&r);
    cr_assert_eq(zt_broker_counter(&env, "workers_lost"), 3, "more workers died than attempts");
    char out[8192], want[64];
    cr_assert_eq(zt_cli(&env, out, sizeof out, "--json", "dead", NULL), 0);
    snprintf(want, sizeof want, "\"id\":%llu", (unsigned long long)id);
    cr_assert(strstr(out, want), "dead letters: %s", out);
    /* the fleet still serves */
    cr_assert(zt_wait_workers(&env, 2, 10000));
    cr_assert_eq(zt_cli(&env, out, sizeof out, "submit", "echo", "alive", "--wait", "--timeout",
                        "10000", NULL),
                 0);
    /* retry requeues it (it will die again, but it is back in play) */
    char ids[32];
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)id);
    cr_assert_eq(zt_cli(&env, out, sizeof out, "retry", ids, NULL), 0, "%s", out);
    cr_assert_eq(zt_cli(&env, out, sizeof out, "dead", "--purge", NULL), 0);
    zf_client_destroy(&c);
}

/* A handler past its run timeout ends the attempt timed_out; the worker exits (code 3) and
   the fleet restarts it; when attempts run out the job ends timed_out. */
Test(failure, run_timeout_ends_attempts_and_restarts_worker, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    fleet(&env, "0", "fleet.log", 200);
    cr_assert(zt_wait_workers(&env, 1, 8000));
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    zf_submit_opts_t o = {.timeout_ms = 300, .max_attempts = 2};
    cr_assert_eq(zf_client_submit(c, "hang", "60000", 5, &o, &id), 0);
    zf_event_t *r = zf_client_wait(c, id, 20000);
    cr_assert_not_null(r, "%s", zf_client_error(c));
    cr_assert_eq(r->status, ZFLEET_TIMED_OUT, "status %s", zfleet_state_name(r->status));
    cr_assert_eq(r->attempts, 2);
    cr_assert(strstr(r->text, "run timeout of 300 ms exceeded"), "%s", r->text);
    zf_event_destroy(&r);
    char log[200];
    snprintf(log, sizeof log, "%s/fleet.log", env.dir);
    cr_assert(zt_wait_workers(&env, 1, 8000));
    cr_assert(file_contains(log, "exited after a job timed out"), "fleet log lacks the reason");
    /* a job within its timeout still succeeds */
    zf_submit_opts_t ok = {.timeout_ms = 5000};
    cr_assert_eq(zf_client_submit(c, "spin", "50", 2, &ok, &id), 0);
    r = zf_client_wait(c, id, 10000);
    cr_assert(r && r->status == ZFLEET_SUCCEEDED);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* A standalone worker (no supervisor) exits with code 3 and a clear message. */
Test(failure, standalone_worker_exits_3_on_timeout, .timeout = 30)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 200, .workers = 1, .worker_args = ZT_ARGS("--module", testmod())};
    zf_client_t *c = zt_start(&env, &up);
    pid_t w = up.worker[0];
    zf_submit_opts_t o = {.timeout_ms = 200, .max_attempts = 1};
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "hang", "60000", 5, &o, &id), 0);
    int status = zt_wait_exit(w, 10000);
    cr_assert_neq(status, -1, "worker did not exit");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 3, "status %d", status);
    char log[200];
    snprintf(log, sizeof log, "%s/workers.log", env.dir);
    cr_assert(file_contains(log, "run timeout of 200 ms exceeded"));
    zf_event_t *r = zf_client_wait(c, id, 5000);
    cr_assert(r && r->status == ZFLEET_TIMED_OUT && r->attempts == 1);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* A job with a run timeout that starts while the worker's I/O thread sleeps (the previous
   job's result, under 1 ms, left from the handler thread, taking the one held before it
   with it) is still timed: the handler thread arms a timer as it starts, which wakes no
   one until the deadline. Heartbeats are 5 s apart, so the next wake-up of the I/O thread
   would otherwise come seconds too late. */
Test(failure, timeout_of_a_job_started_from_the_queue_wakes_the_worker, .timeout = 30)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 5000,
                     .workers = 1,
                     .worker_args = ZT_ARGS("--module", testmod(), "--credits", "3")};
    zf_client_t *c = zt_start(&env, &up);
    uint64_t first, quick, hung;
    zf_submit_opts_t o = {.timeout_ms = 300, .max_attempts = 1};
    int64_t t0 = zt_now_ms();
    cr_assert_eq(zf_client_submit(c, "coop", "300", 3, NULL, &first), 0);
    cr_assert_eq(zf_client_submit(c, "echo", "x", 1, NULL, &quick), 0);
    cr_assert_eq(zf_client_submit(c, "hang", "60000", 5, &o, &hung), 0);
    int status = zt_wait_exit(up.worker[0], 10000);
    int64_t took = zt_now_ms() - t0;
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 3, "status %d", status);
    cr_assert_lt(took, 3000, "the worker enforced a 300 ms timeout after %lld ms", (long long)took);
    zf_event_t *r = zf_client_wait(c, hung, 5000);
    cr_assert(r && r->status == ZFLEET_TIMED_OUT, "%s", r ? zfleet_state_name(r->status) : "none");
    zf_event_destroy(&r);
    for (int i = 0; i < 2; i++) {
        r = zf_client_wait(c, i ? quick : first, 5000);
        cr_assert(r && r->status == ZFLEET_SUCCEEDED, "job %d before it: %s", i,
                  r ? zfleet_state_name(r->status) : "none");
        zf_event_destroy(&r);
    }
    zf_client_destroy(&c);
}

/* A job still queued at its deadline ends expired without running. */
Test(failure, queued_job_expires_at_deadline, .timeout = 30)
{
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 200});
    zf_submit_opts_t o = {.deadline_ms = 300};
    uint64_t id;
    int64_t t0 = zt_now_ms();
    cr_assert_eq(zf_client_submit(c, "echo", "late", 4, &o, &id), 0);
    zf_event_t *r = zf_client_wait(c, id, 5000);
    int64_t took = zt_now_ms() - t0;
    cr_assert_not_null(r);
    cr_assert_eq(r->status, ZFLEET_EXPIRED);
    cr_assert_eq(r->attempts, 0, "it never ran");
    cr_assert(took >= 280 && took < 2000, "expired after %lld ms", (long long)took);
    zf_event_destroy(&r);
    /* a worker joining later never sees it */
    zt_worker(&env, 200, NULL);
    cr_assert(zt_wait_workers(&env, 1, 5000));
    zt_pause_ms(300);
    cr_assert_eq(zt_broker_counter(&env, "dispatched"), 0);
    zf_client_destroy(&c);
}

/* Cancel: a queued job ends cancelled at once; a running cooperative handler stops and the
   worker keeps serving; exactly one cancelled result each. */
Test(failure, cancel_queued_and_running_jobs, .timeout = 30)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 200, .workers = 1, .worker_args = ZT_ARGS("--module", testmod())};
    zf_client_t *c = zt_start(&env, &up);
    uint64_t running, queued;
    cr_assert_eq(zf_client_submit(c, "coop", "20000", 5, NULL, &running), 0);
    cr_assert_eq(zf_client_submit(c, "echo", "never", 5, NULL, &queued), 0);
    zf_event_t *st = wait_state(c, running, ZFLEET_RUNNING, 5000);
    cr_assert(st);
    zf_event_destroy(&st);
    cr_assert_eq(zf_client_cancel(c, queued), 0, "%s", zf_client_error(c));
    zf_event_t *r = next_result(c, 2000);
    cr_assert(r && r->id == queued && r->status == ZFLEET_CANCELLED);
    cr_assert_eq(r->attempts, 0);
    zf_event_destroy(&r);
    cr_assert_eq(zf_client_cancel(c, running), 0, "%s", zf_client_error(c));
    r = next_result(c, 2000);
    cr_assert(r && r->id == running && r->status == ZFLEET_CANCELLED);
    zf_event_destroy(&r);
    /* cancelling again is refused: it is already cancelled */
    cr_assert_eq(zf_client_cancel(c, running), -1);
    cr_assert_eq(zf_client_brokercode(c), 8);
    /* the worker frees its credit and serves the next job */
    uint64_t next;
    cr_assert_eq(zf_client_submit(c, "echo", "next", 4, NULL, &next), 0);
    r = next_result(c, 5000);
    cr_assert(r && r->id == next && r->status == ZFLEET_SUCCEEDED);
    zf_event_destroy(&r);
    cr_assert_null(next_result(c, 300), "a second result arrived");
    zf_client_destroy(&c);
}

/* A running handler that ignores the cancel: one cancelled result at once, and after the
   grace period its worker process ends (exit code 4). */
Test(failure, cancel_ignored_past_grace_ends_worker, .timeout = 30)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 200,
                     .workers = 1,
                     .worker_args = ZT_ARGS("--module", testmod(), "--cancel-grace", "300")};
    zf_client_t *c = zt_start(&env, &up);
    pid_t w = up.worker[0];
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "hang", "60000", 5, NULL, &id), 0);
    zf_event_t *st = wait_state(c, id, ZFLEET_RUNNING, 5000);
    cr_assert(st);
    zf_event_destroy(&st);
    /* `running` is the broker's view from the dispatch on: give the worker's handler thread
       time to have started it, or the cancel takes it from the worker's queue unstarted
       (answered at once, and the worker rightly stays); 1 s, as a loaded host can take
       hundreds of ms to schedule the worker's threads */
    zt_pause_ms(1000);
    cr_assert_eq(zf_client_cancel(c, id), 0);
    zf_event_t *r = next_result(c, 2000);
    cr_assert(r && r->status == ZFLEET_CANCELLED);
    zf_event_destroy(&r);
    int status = zt_wait_exit(w, 5000);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 4, "status %d", status);
    cr_assert_null(next_result(c, 300), "a second result arrived");
    zf_client_destroy(&c);
}

/* Queue and payload limits: clear rejections at once; what was accepted is unaffected. */
Test(failure, queue_full_and_payload_too_large_are_rejected, .timeout = 30)
{
    zt_env_t env;
    zt_env_init(&env);
    /* (one client here: its share of the queue, by default half, is lifted) */
    zt_broker(&env, 200, "--max-queued", "5", "--max-queued-per-fn", "3", "--max-payload", "1000",
              "--max-queued-per-client", "5", NULL);
    zf_client_t *c = zt_client(&env);
    uint64_t ids[5];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(zf_client_submit(c, "echo", "a", 1, NULL, &ids[i]), 0);
    cr_assert_eq(zf_client_submit(c, "echo", "a", 1, NULL, NULL), -1);
    cr_assert_eq(zf_client_brokercode(c), 5);
    cr_assert(strstr(zf_client_error(c), "queue full"), "%s", zf_client_error(c));
    for (int i = 3; i < 5; i++)
        cr_assert_eq(zf_client_submit(c, "upper", "b", 1, NULL, &ids[i]), 0);
    cr_assert_eq(zf_client_submit(c, "upper", "b", 1, NULL, NULL), -1);
    cr_assert(strstr(zf_client_error(c), "queue full"), "%s", zf_client_error(c));
    static char big[1001];
    memset(big, 'x', sizeof big);
    cr_assert_eq(zf_client_submit(c, "other", big, sizeof big, NULL, NULL), -1);
    cr_assert_eq(zf_client_brokercode(c), 6);
    cr_assert(strstr(zf_client_error(c), "payload too large"), "%s", zf_client_error(c));
    /* the CLI reports it in one line with exit code 5 */
    char out[1024];
    cr_assert_eq(zt_cli(&env, out, sizeof out, "submit", "echo", "z", NULL), 5);
    /* the accepted ones run once workers come */
    zt_worker(&env, 200, "--module", zt_path("worker/zf_example.so"), NULL);
    for (int i = 0; i < 5; i++) {
        zf_event_t *r = zf_client_wait(c, ids[i], 5000);
        cr_assert(r && r->status == ZFLEET_SUCCEEDED, "accepted job %d did not run", i);
        zf_event_destroy(&r);
    }
    zf_client_destroy(&c);
}

/* 1,000,000 rejected oversized submissions: the broker's RSS stays within 10% of before. */
Test(failure, rejected_submissions_do_not_grow_memory, .timeout = 240)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = zt_broker(&env, 1000, "--max-payload", "16", NULL);
    zf_client_t *c = zt_client(&env);
    const char payload[17] = "0123456789abcdef";
    const long total = getenv("ZT_QUICK") ? 100000 : 1000000;
    long sent = 0, rejected = 0, before = 0;
    while (rejected < total) {
        while (sent < total && sent - rejected < 512) {
            cr_assert_eq(zf_client_submit_async(c, "echo", payload, 17, NULL, NULL), 0);
            sent++;
        }
        zf_event_t *e = zf_client_next(c, 5000);
        cr_assert_not_null(e, "stalled at %ld", rejected);
        cr_assert_eq(e->type, ZF_EV_REJECTED);
        cr_assert_eq(e->code, 6);
        rejected++;
        zf_event_destroy(&e);
        if (rejected == 20000)
            before = zt_rss_kb(b);
    }
    long after = zt_rss_kb(b);
    fprintf(stderr, "limits: %ld rejections, broker RSS %ld kB after 20k, %ld kB after all\n",
            rejected, before, after);
#if defined(__SANITIZE_ADDRESS__)
    /* ASan keeps freed memory in its quarantine: RSS says nothing about leaks here. The
       bound is checked by the plain build. */
    (void)before;
#else
    cr_assert_leq(after, before + before / 10, "RSS grew from %ld to %ld kB", before, after);
#endif
    zf_client_destroy(&c);
}

/* A broker restarted without a journal: a client waiting on a job gets a clear
   `unknown job` error, not an endless wait; workers register again by themselves. */
Test(failure, restart_without_journal_unknown_job_and_workers_return, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 200, .workers = 1, .worker_args = ZT_ARGS("--liveness", "3")};
    zf_client_t *c = zt_start(&env, &up);
    pid_t b = up.broker;
    zf_client_set_heartbeat(c, 200);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "nobody_serves_this", "x", 1, NULL, &id), 0);
    zt_kill(b, SIGKILL);
    zt_broker(&env, 200, NULL);
    int64_t t0 = zt_now_ms();
    zf_event_t *r = zf_client_wait(c, id, 20000);
    cr_assert_null(r, "a result for a job the new broker never had");
    cr_assert_eq(zf_client_errcode(c), ZF_CE_REJECTED, "%s", zf_client_error(c));
    cr_assert_eq(zf_client_brokercode(c), 4, "%s", zf_client_error(c));
    cr_assert_lt(zt_now_ms() - t0, 10000);
    cr_assert(zt_wait_workers(&env, 1, 10000), "worker did not re-register");
    char out[1024];
    cr_assert_eq(zt_cli(&env, out, sizeof out, "submit", "echo", "back", "--wait", "--timeout",
                        "5000", NULL),
                 0);
    zf_client_destroy(&c);
}
