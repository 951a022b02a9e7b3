/*  End to end with real processes: broker + workers + clients over ipc:// sockets. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "harness.h"
#include "zf_proto.h"
#include "zf_wire.h"

TestSuite(e2e, .fini = zt_kill_all);

Test(e2e, echo_round_trip_through_broker_and_worker)
{
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 200, .workers = 1});
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "echo", "hello", 5, NULL, &id), 0, "%s", zf_client_error(c));
    zf_event_t *r = zf_client_wait(c, id, 5000);
    cr_assert_not_null(r, "%s", zf_client_error(c));
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    cr_assert_eq(r->output_len, 5);
    cr_assert(memcmp(r->output, "hello", 5) == 0);
    cr_assert_eq(r->attempts, 1);
    cr_assert_str_eq(r->function, "echo");
    cr_assert(strlen(r->worker) > 0 && strlen(r->device) > 0);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* Payloads on both sides of every size boundary the broker has (kept inside the job up
   to 1024 bytes, in their own frame above; ZeroMQ's own 33-byte inline messages) come back
   byte for byte, also when the first delivery dies with its worker and the job is sent
   again from what the broker kept. */
Test(e2e, payloads_of_every_size_class_round_trip_and_survive_redelivery, .timeout = 60)
{
    zt_env_t env;
    /* credits: the echoes are prefetched behind the spin, so the kill takes them too */
    zt_fleet_t up = {.hb_ms = 200, .workers = 1, .worker_args = ZT_ARGS("--credits", "16")};
    zf_client_t *c = zt_start(&env, &up);
    pid_t w1 = up.worker[0];
    static const size_t sizes[] = {0, 1, 33, 34, 1023, 1024, 1025, 65536, 1 << 20};
    enum { N = sizeof sizes / sizeof sizes[0] };
    unsigned char *buf = malloc(1 << 20);
    cr_assert_not_null(buf);
    for (int round = 0; round < 2; round++) {
        uint64_t ids[N];
        if (round == 1) { /* a spin holds the only worker; the echoes queue behind it */
            zf_submit_opts_t o = {.max_attempts = 3};
            uint64_t sid;
            cr_assert_eq(zf_client_submit(c, "spin", "1000", 4, &o, &sid), 0);
        }
        for (size_t i = 0; i < N; i++) {
            zt_pattern(buf, sizes[i], (unsigned)(i * 2 + round));
            cr_assert_eq(zf_client_submit(c, "echo", buf, sizes[i], NULL, &ids[i]), 0, "%s",
                         zf_client_error(c));
        }
        if (round == 1) { /* kill the worker holding them; a new one runs them again */
            zt_pause_ms(100);
            zt_kill(w1, SIGKILL);
            zt_worker(&env, 200, NULL);
        }
        for (size_t i = 0; i < N; i++) {
            zf_event_t *r = zf_client_wait(c, ids[i], 15000);
            cr_assert_not_null(r, "size %zu: %s", sizes[i], zf_client_error(c));
            cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "size %zu: %s", sizes[i], r->text);
            cr_assert_eq(r->output_len, sizes[i]);
            cr_assert_eq(r->attempts, round + 1u, "size %zu: %u attempt(s)", sizes[i], r->attempts);
            size_t k = zt_pattern_mismatch(r->output, sizes[i], (unsigned)(i * 2 + round));
            cr_assert_eq(k, sizes[i], "size %zu: byte %zu differs", sizes[i], k);
            zf_event_destroy(&r);
        }
    }
    free(buf);
    zf_client_destroy(&c);
}

/* 2000 echo jobs with distinct payloads through 2 workers: every result correct and each
   received exactly once. */
Test(e2e, two_thousand_echo_jobs_each_result_once, .timeout = 120)
{
    enum { N = 2000, WINDOW = 128 };
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 500, .workers = 2, .worker_args = ZT_ARGS("--credits", "4")};
    zf_client_t *c = zt_start(&env, &up);
    static uint64_t tag_of[N], id_of[N];
    static int seen[N], accepted;
    int sent = 0, done = 0, outstanding = 0;
    int64_t t0 = zt_now_ms();
    while (done < N) {
        while (sent < N && outstanding < WINDOW) {
            char p[32];
            int len = snprintf(p, sizeof p, "job-%d-%x", sent, sent * 2654435761u);
            cr_assert_eq(zf_client_submit_async(c, "echo", p, (size_t)len, NULL, &tag_of[sent]), 0);
            sent++;
            outstanding++;
        }
        zf_event_t *e = zf_client_next(c, 10000);
        cr_assert_not_null(e, "stalled after %d results", done);
        if (e->type == ZF_EV_ACCEPTED) {
            accepted++;
            for (int i = 0; i < sent; i++)
                if (tag_of[i] == e->tag)
                    id_of[i] = e->id;
        } else if (e->type == ZF_EV_RESULT) {
            cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
            int idx = -1;
            sscanf(e->output, "job-%d-", &idx);
            cr_assert(idx >= 0 && idx < N, "bad output");
            char want[32];
            int len = snprintf(want, sizeof want, "job-%d-%x", idx, idx * 2654435761u);
            cr_assert_eq(e->output_len, (size_t)len);
            cr_assert(memcmp(e->output, want, (size_t)len) == 0, "output of job %d corrupted", idx);
            cr_assert_eq(e->tag, tag_of[idx], "result carries the submit tag");
            cr_assert_eq(seen[idx], 0, "job %d delivered twice", idx);
            seen[idx] = 1;
            done++;
            outstanding--;
        } else {
            cr_assert_fail("unexpected event %d: %s", e->type, e->text);
        }
        zf_event_destroy(&e);
    }
    int64_t ms = zt_now_ms() - t0;
    cr_assert_eq(accepted, N);
    for (int i = 0; i < N; i++)
        cr_assert(seen[i] && id_of[i], "job %d missing", i);
    /* nothing more arrives: no duplicates after the fact */
    zf_event_t *extra = zf_client_next(c, 300);
    cr_assert_null(extra, "an extra event arrived after all results");
    fprintf(stderr, "e2e: %d echo jobs in %lld ms (%.0f jobs/s)\n", N, (long long)ms,
            N * 1000.0 / (double)(ms ? ms : 1));
    zf_client_destroy(&c);
}

/* A worker killed with SIGKILL while running a 2 s spin: the job completes on the other
   worker with attempts == 2, within the heartbeat window plus the job time. */
Test(e2e, killed_worker_job_completes_elsewhere, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    const int hb = 300, liveness = 3;
    zt_broker(&env, hb, "--liveness", "3", NULL);
    pid_t w1 = zt_worker(&env, hb, "--name", "first", NULL);
    cr_assert(zt_wait_workers(&env, 1, 5000));
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "2000", 4, NULL, &id), 0);
    /* it runs on the only worker; then a second one joins and the first dies */
    zf_event_t *st = NULL;
    for (int i = 0; i < 100; i++) {
        st = zf_client_get(c, id);
        if (st && st->status == ZFLEET_RUNNING)
            break;
        zf_event_destroy(&st);
        zt_pause_ms(20);
    }
    cr_assert(st && st->status == ZFLEET_RUNNING);
    cr_assert_str_eq(st->worker, "first");
    zf_event_destroy(&st);
    zt_worker(&env, hb, "--name", "second", NULL);
    cr_assert(zt_wait_workers(&env, 2, 5000));
    int64_t killed_at = zt_now_ms();
    zt_kill(w1, SIGKILL);
    zf_event_t *r = zf_client_wait(c, id, 20000);
    cr_assert_not_null(r, "%s", zf_client_error(c));
    int64_t took = zt_now_ms() - killed_at;
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    cr_assert_eq(r->attempts, 2);
    cr_assert_str_eq(r->worker, "second");
    /* detection within hb x liveness (+ one loop of slack), then the 2 s job */
    cr_assert_leq(took, hb * liveness + 2000 + 1500, "took %lld ms", (long long)took);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* Unknown function with no worker: the job waits; with --timeout the CLI reports a
   timeout with its exit code (3), and the job is still queued. */
Test(e2e, unknown_function_waits_and_cli_times_out, .timeout = 30)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200, .workers = 1});
    char out[4096];
    int rc = zt_cli(&env, out, sizeof out, "submit", "no_such_fn", "x", "--wait", "--timeout",
                    "400", NULL);
    cr_assert_eq(rc, 3, "exit code for a timeout is 3, got %d", rc);
    rc = zt_cli(&env, out, sizeof out, "--json", "stats", NULL);
    cr_assert_eq(rc, 0);
    cr_assert(strstr(out, "\"name\":\"no_such_fn\",\"queued\":1"), "job still queued: %s", out);
    /* the CLI submit without --wait prints the id; get says queued */
    rc = zt_cli(&env, out, sizeof out, "submit", "no_such_fn", "y", NULL);
    cr_assert_eq(rc, 0);
    char id[32];
    snprintf(id, sizeof id, "%llu", strtoull(out, NULL, 10));
    rc = zt_cli(&env, out, sizeof out, "--json", "status", id, NULL);
    cr_assert_eq(rc, 0);
    cr_assert(strstr(out, "\"status\":\"queued\""), "%s", out);
}

/* A handler error reaches the client as `failed` with the handler's message; the worker
   keeps serving. */
Test(e2e, handler_error_is_failed_with_message_and_worker_survives, .timeout = 30)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    pid_t w = zt_worker(&env, 200, "--module", zt_path("worker/zf_example.so"), NULL);
    cr_assert(zt_wait_workers(&env, 1, 5000));
    char out[4096];
    int rc = zt_cli(&env, out, sizeof out, "--json", "submit", "validate", "12x", "--wait", NULL);
    cr_assert_eq(rc, 1, "a failed job exits 1");
    cr_assert(strstr(out, "\"status\":\"failed\""), "%s", out);
    cr_assert(strstr(out, "validate: '12x' is not a number"), "%s", out);
    rc = zt_cli(&env, out, sizeof out, "submit", "upper", "still here", "--wait", NULL);
    cr_assert_eq(rc, 0);
    cr_assert(strstr(out, "STILL HERE"), "%s", out);
    cr_assert_eq(kill(w, 0), 0, "worker is alive");
}

/* Sends raw frames to a ROUTER endpoint from a fresh DEALER. */
static void send_raw(void *ctx, const char *ep, const void *const *frames, const size_t *lens,
                     int n)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 1000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(s, ep);
    for (int i = 0; i < n; i++)
        zmq_send(s, frames[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0);
    zmq_close(s);
}

/* Malformed frames at both broker sockets: the broker stays up, answers where it can,
   counts them, and serves the next valid job. */
Test(e2e, malformed_frames_at_both_sockets_are_survived, .timeout = 30)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 200, .workers = 1};
    zt_fleet_up(&env, &up);
    pid_t b = up.broker;
    void *ctx = zmq_ctx_new();
    const char junk[] = "\x00\x01garbage";
    const char badver[] = {'Z', 'F', 9, ZF_CMD_SUBMIT, (char)0x80};
    const char badcmd[] = {'Z', 'F', ZF_PROTO_VERSION, 0x3f, (char)0x80};
    const char trunc[] = {'Z', 'F', ZF_PROTO_VERSION, ZF_CMD_SUBMIT, (char)0x82, 0x03};
    const char nomap[] = {'Z', 'F', ZF_PROTO_VERSION, ZF_CMD_PING, (char)0x91, 0x01};
    const void *cases[][3] = {{junk}, {badver}, {badcmd}, {trunc}, {nomap}, {""}};
    size_t lens[][3] = {{sizeof junk},  {sizeof badver}, {sizeof badcmd},
                        {sizeof trunc}, {sizeof nomap},  {0}};
    for (int i = 0; i < 6; i++) {
        send_raw(ctx, env.client_ep, cases[i], lens[i], 1);
        send_raw(ctx, env.worker_ep, cases[i], lens[i], 1);
    }
    /* a valid SUBMIT header with too many frames */
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_SUBMIT);
    zf_msg_set_u64(&m, ZF_F_TAG, 1);
    zf_msg_set_str(&m, ZF_F_FN, "echo");
    char hdr[256];
    int hl = zf_msg_encode(&m, hdr, sizeof hdr);
    const void *many[3] = {hdr, "a", "b"};
    size_t many_len[3] = {(size_t)hl, 1, 1};
    send_raw(ctx, env.client_ep, many, many_len, 3);
    /* the client endpoint answers a malformed request with ERROR, addressed to the sender */
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    zmq_connect(s, env.client_ep);
    zmq_send(s, badver, sizeof badver, 0);
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    cr_assert_eq(zmq_poll(&it, 1, 3000), 1, "no error reply");
    char reply[512];
    int n = zmq_recv(s, reply, sizeof reply, 0);
    zf_msg_t r;
    cr_assert_eq(zf_msg_decode(&r, reply, (size_t)n, NULL, NULL), 0);
    cr_assert_eq(r.cmd, ZF_CMD_ERROR);
    cr_assert_eq(r.code, ZF_EVERSION);
    zmq_close(s);
    zmq_ctx_term(ctx);
    /* still serving */
    char out[1024];
    cr_assert_eq(zt_cli(&env, out, sizeof out, "submit", "echo", "after", "--wait", "--timeout",
                        "5000", NULL),
                 0);
    cr_assert(strstr(out, "after"));
    cr_assert_eq(kill(b, 0), 0, "broker is alive");
    cr_assert_geq(zt_broker_counter(&env, "malformed_client"), 7);
    cr_assert_geq(zt_broker_counter(&env, "malformed_worker"), 6);
}

/* A worker configured with a slower heartbeat than the broker's adopts the broker's
   interval, so it is not expired while idle. */
Test(e2e, worker_adopts_the_brokers_shorter_heartbeat, .timeout = 30)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 150, "--liveness", "3", NULL);
    zt_worker(&env, 2000, NULL);
    cr_assert(zt_wait_workers(&env, 1, 5000));
    zt_pause_ms(2000);
    cr_assert_eq(zt_count_workers(&env), 1, "the idle worker was expired");
    cr_assert_eq(zt_broker_counter(&env, "workers_lost"), 0);
}

/* NO_PUSH: the submitter is told ACCEPTED but not pushed the result; a WAIT fetches it. */
Test(e2e, no_push_submit_is_acknowledged_and_fetched_by_wait, .timeout = 30)
{
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 200, .workers = 1});
    zf_submit_opts_t o = {.no_push = true};
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "echo", "quiet", 5, &o, &id), 0, "%s", zf_client_error(c));
    zf_event_t *e = zf_client_next(c, 500);
    cr_assert_null(e, "a NO_PUSH submitter was pushed an event");
    e = zf_client_wait(c, id, 5000);
    cr_assert(e && e->type == ZF_EV_RESULT && e->status == ZFLEET_SUCCEEDED);
    cr_assert(e->output_len == 5 && !memcmp(e->output, "quiet", 5));
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

/* A worker that answers DONE timed_out and vanishes at once: the retry cannot be sent to
   it; the broker drops it without touching it again, and the job runs on a real worker. */
Test(e2e, worker_vanishing_after_timed_out_done_is_survived, .timeout = 30)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = zt_broker(&env, 300, NULL);
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(s, env.worker_ep);
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_READY);
    zf_msg_set_str(&m, ZF_F_WORKER, "fake");
    zf_msg_set_u64(&m, ZF_F_DEVICE, ZF_DEV_CPU);
    zf_msg_set_str(&m, ZF_F_DEVNAME, "cpu:0");
    zf_msg_set_u64(&m, ZF_F_CREDITS, 2);
    zf_msg_add_function(&m, "echo");
    cr_assert_eq(zf_wire_send_blocking(s, &m, NULL), 0);
    cr_assert(zt_wait_workers(&env, 1, 5000));
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    zf_submit_opts_t o = {.max_attempts = 5};
    cr_assert_eq(zf_client_submit(c, "echo", "x", 1, &o, &id), 0);
    /* take the JOB (skipping heartbeats), answer timed_out, vanish */
    zf_msg_t job;
    for (;;) {
        zf_frames_t f;
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        cr_assert_eq(zmq_poll(&it, 1, 5000), 1, "no JOB for the fake worker");
        cr_assert_eq(zf_wire_recv(s, &f, 0), 0);
        int ok =
            zf_msg_decode(&job, zmq_msg_data(&f.part[0]), zmq_msg_size(&f.part[0]), NULL, NULL);
        zf_frames_close(&f);
        if (ok == 0 && job.cmd == ZF_CMD_JOB)
            break;
    }
    zf_msg_t d;
    zf_msg_init(&d, ZF_CMD_DONE);
    zf_msg_set_u64(&d, ZF_F_ID, job.id);
    zf_msg_set_u64(&d, ZF_F_ATTEMPT, job.attempt);
    zf_msg_set_u64(&d, ZF_F_STATUS, ZF_ST_TIMED_OUT);
    zmq_msg_t empty;
    zmq_msg_init(&empty);
    cr_assert_eq(zf_wire_send_blocking(s, &d, &empty), 0);
    zmq_close(s);
    zmq_ctx_term(ctx);
    zt_worker(&env, 300, NULL);
    zf_event_t *r = zf_client_wait(c, id, 10000);
    cr_assert_not_null(r, "%s", zf_client_error(c));
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    zf_event_destroy(&r);
    cr_assert_eq(kill(b, 0), 0, "broker died");
    zf_client_destroy(&c);
}

/* Progress reports start 50 ms into a run: a 5 ms job costs no progress messages (they
   were 2 more messages and wake-ups per job), and a 300 ms one still reports while it runs. */
Test(e2e, short_job_sends_no_progress_and_long_one_does, .timeout = 30)
{
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 200, .workers = 1});
    const char *spins[2] = {"5", "300"};
    int progress[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < (k ? 1 : 20); i++) {
            uint64_t tag;
            cr_assert_eq(zf_client_submit_async(c, "spin", spins[k], strlen(spins[k]), NULL, &tag),
                         0);
            bool done = false;
            while (!done) {
                zf_event_t *e = zf_client_next(c, 5000);
                cr_assert_not_null(e, "%s", zf_client_error(c));
                progress[k] += e->type == ZF_EV_PROGRESS;
                if (e->type == ZF_EV_RESULT) {
                    cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
                    done = true;
                }
                zf_event_destroy(&e);
            }
        }
    }
    /* (a few are tolerated: a handler thread descheduled for 45 ms mid-job does report, as
       a loaded CI host does; reporting from the start sent 2 for every one of the 20) */
    cr_assert_leq(progress[0], 5, "%d progress reports for 20 jobs of 5 ms", progress[0]);
    cr_assert_geq(progress[1], 1, "no progress report for a job of 300 ms");
    zf_client_destroy(&c);
}

/* Runs n jobs of fn(arg) one after the other, each to its result. */
static void run_one_by_one(zf_client_t *c, const char *fn, const char *arg, int n)
{
    for (int i = 0; i < n; i++) {
        uint64_t id;
        cr_assert_eq(zf_client_submit(c, fn, arg, strlen(arg), NULL, &id), 0, "%s",
                     zf_client_error(c));
        zf_event_t *r = zf_client_wait(c, id, 5000);
        cr_assert(r && r->status == ZFLEET_SUCCEEDED, "%s job %d: %s", fn, i, zf_client_error(c));
        zf_event_destroy(&r);
    }
}

/* An idle worker's handler thread reads the job that reaches it itself (no hand-off from the
   I/O thread), and hands the socket back when a job runs past 1 ms, so that what comes
   meanwhile is read (failure/cancel_queued_and_running_jobs relies on that too). Counted
   by the worker and told in its debug log when it leaves. */
Test(e2e, idle_worker_reads_its_jobs_on_the_handler_thread, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 200,
                     .workers = 1,
                     .worker_args = ZT_ARGS("--credits", "1", "--log-level", "debug")};
    zf_client_t *c = zt_start(&env, &up);
    run_one_by_one(c, "echo", "x", 200);
    run_one_by_one(c, "spin", "5", 20);
    zf_client_destroy(&c);
    kill(up.worker[0], SIGTERM); /* it drains and leaves, logging the counts */
    int status = zt_wait_exit(up.worker[0], 10000);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    char path[600], log[1 << 16];
    snprintf(path, sizeof path, "%s/workers.log", env.dir);
    zt_read_file(path, log, sizeof log);
    const char *at = strstr(log, "jobs read by the handler thread: ");
    cr_assert(at, "no count in %s", path);
    unsigned long long by_runner, by_io, handbacks;
    cr_assert_eq(sscanf(at,
                        "jobs read by the handler thread: %llu, by the I/O thread: %llu; socket "
                        "handed back by the timer: %llu",
                        &by_runner, &by_io, &handbacks),
                 3, "%.200s", at);
    cr_assert_eq(by_runner + by_io, 220, "%llu + %llu jobs", by_runner, by_io);
    cr_assert_geq(by_runner, 110, "the handler thread read %llu of 220 jobs", by_runner);
    cr_assert_geq(handbacks, 10, "the socket was handed back %llu times for 20 jobs of 5 ms",
                  handbacks);
}

/* The worker's debug count of results held behind the next job, read from its log after it
   drained and left. */
static unsigned long long held_results(const zt_env_t *env, pid_t worker)
{
    kill(worker, SIGTERM);
    int status = zt_wait_exit(worker, 10000);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    char path[600], log[1 << 16];
    snprintf(path, sizeof path, "%s/workers.log", env->dir);
    zt_read_file(path, log, sizeof log);
    const char *at = strstr(log, "results held behind the next job: ");
    cr_assert(at, "no count in %s", path);
    unsigned long long held;
    cr_assert_eq(sscanf(at, "results held behind the next job: %llu", &held), 1, "%.100s", at);
    return held;
}

/* A job of 1 ms or more with another queued behind it: the worker starts the next one before
   the result leaves (zf_runner_hooks_t.hold), and the result leaves on a timer within 200
   µs. Here the next job runs 3 s and sends nothing meanwhile (coop: no progress), and
   heartbeats are 5 s apart: the first result must come while it runs, which only the
   hold's own timer makes it do (the next send, or a heartbeat, would come too late). */
Test(e2e, held_result_leaves_while_the_next_job_runs, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 5000,
                     .workers = 1,
                     .worker_args = ZT_ARGS("--credits", "2", "--log-level", "debug", "--module",
                                            zt_path("tests/zf_testmod.so"))};
    zf_client_t *c = zt_start(&env, &up);
    uint64_t first, next;
    cr_assert_eq(zf_client_submit(c, "spin", "300", 3, NULL, &first), 0, "%s", zf_client_error(c));
    cr_assert_eq(zf_client_submit(c, "coop", "3000", 4, NULL, &next), 0, "%s", zf_client_error(c));
    zf_event_t *r = zf_client_wait(c, first, 2000);
    cr_assert(r && r->status == ZFLEET_SUCCEEDED, "first job: %s", zf_client_error(c));
    zf_event_destroy(&r);
    zf_event_t *s = zf_client_get(c, next);
    cr_assert(s && s->type == ZF_EV_STATUS && s->status == ZFLEET_RUNNING,
              "the next job is not running when the first result came (%s)",
              s ? zfleet_state_name(s->status) : zf_client_error(c));
    zf_event_destroy(&s);
    r = zf_client_wait(c, next, 10000);
    cr_assert(r && r->status == ZFLEET_SUCCEEDED, "next job: %s", zf_client_error(c));
    zf_event_destroy(&r);
    zf_client_destroy(&c);
    cr_assert_eq(held_results(&env, up.worker[0]), 1, "the first result was not held");
}

/* Submits n jobs of fn(arg) at once to one worker at `credits`, waits for every result, and
   returns how many results the worker held behind a next job. A lead of ms > 0 submits a
   spin of that long first, so the n are all queued before the first of them starts (the
   client's submits trickle in otherwise, and under load the first jobs ran with none queued
   behind them: 14 of 20 held was seen under CI). */
static unsigned long long held_in_burst(const char *credits, const char *fn, const char *arg, int n,
                                        const char *lead)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 1000,
                     .workers = 1,
                     .worker_args = ZT_ARGS("--credits", credits, "--log-level", "debug")};
    zf_client_t *c = zt_start(&env, &up);
    uint64_t ids[200];
    cr_assert_leq(n, 200);
    if (lead)
        cr_assert_eq(zf_client_submit(c, "spin", lead, strlen(lead), NULL, NULL), 0, "%s",
                     zf_client_error(c));
    for (int i = 0; i < n; i++)
        cr_assert_eq(zf_client_submit(c, fn, arg, strlen(arg), NULL, &ids[i]), 0, "%s",
                     zf_client_error(c));
    for (int i = 0; i < n; i++) {
        zf_event_t *r = zf_client_wait(c, ids[i], 10000);
        cr_assert(r && r->status == ZFLEET_SUCCEEDED, "%s job %d: %s", fn, i, zf_client_error(c));
        zf_event_destroy(&r);
    }
    zf_client_destroy(&c);
    return held_results(&env, up.worker[0]);
}

/* A result leaves at once when no job is queued behind it (credits 1: one at a time), or
   when its job ran under 1 ms (the hold would be a large share of it); and it is held when
   both hold, for every job but the last of a burst (the control: the same count that
   reads 0 above reads more here). */
Test(e2e, results_are_held_only_behind_a_queued_job_of_1_ms_or_more, .timeout = 60)
{
    cr_assert_eq(held_in_burst("1", "spin", "2", 20, "300"), 0, "held at credits 1");
    cr_assert_eq(held_in_burst("8", "echo", "x", 200, NULL), 0, "held for jobs of microseconds");
    /* The lead and 19 of the 20 have a job queued behind them; one can miss when the broker's
       next job comes later than the 7 queued at the worker take to run (14 ms). */
    unsigned long long held = held_in_burst("8", "spin", "2", 20, "300");
    cr_assert(held >= 15 && held <= 20, "%llu of 21 jobs held at credits 8", held);
}
