/*  Hardening: what a lying or wedged worker, a forged message, a stalled broker or a
    client that never reads must not be able to do. Real broker and worker processes; the
    misbehaving peers are hand-driven sockets speaking the wire protocol. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "harness.h"
#include "zf_proto.h"
#include "zf_wire.h"

TestSuite(hardening, .fini = zt_kill_all);

/* ------------------------------------------------------------------ a silent worker */

/* A worker that registers, heartbeats, takes jobs and never answers them: wedged, or
   lying. It runs in its own thread, which alone touches its socket. */
typedef struct {
    const char *ep;
    const char *name;
    atomic_bool stop;
    atomic_int jobs, cancels, resets;
    void *ctx, *sock;
    pthread_t th;
} silent_t;

static void silent_ready(silent_t *s)
{
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_READY);
    zf_msg_set_str(&m, ZF_F_WORKER, s->name);
    zf_msg_set_u64(&m, ZF_F_DEVICE, ZF_DEV_CPU);
    zf_msg_set_str(&m, ZF_F_DEVNAME, "cpu:0");
    zf_msg_set_u64(&m, ZF_F_CREDITS, 1);
    zf_msg_add_function(&m, "echo");
    zf_wire_send_blocking(s->sock, &m, NULL);
}

static void *silent_main(void *arg)
{
    silent_t *s = arg;
    silent_ready(s);
    int64_t next_hb = zt_now_ms();
    while (!atomic_load(&s->stop)) {
        if (zt_now_ms() >= next_hb) {
            zf_msg_t hb;
            zf_msg_init(&hb, ZF_CMD_HEARTBEAT);
            zf_wire_send_blocking(s->sock, &hb, NULL);
            next_hb = zt_now_ms() + 50;
        }
        zmq_pollitem_t it = {s->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) != 1)
            continue;
        zf_frames_t f;
        if (zf_wire_recv(s->sock, &f, 0) < 0)
            continue;
        zf_msg_t m;
        if (zf_msg_decode(&m, zmq_msg_data(&f.part[0]), zmq_msg_size(&f.part[0]), NULL, NULL) ==
            0) {
            atomic_fetch_add(&s->jobs, m.cmd == ZF_CMD_JOB);
            atomic_fetch_add(&s->cancels, m.cmd == ZF_CMD_WCANCEL);
            atomic_fetch_add(&s->resets, m.cmd == ZF_CMD_RESET);
        }
        zf_frames_close(&f);
    }
    return NULL;
}

static void silent_start(silent_t *s, const char *ep, const char *name)
{
    memset(s, 0, sizeof *s);
    s->ep = ep;
    s->name = name;
    s->ctx = zmq_ctx_new();
    s->sock = zmq_socket(s->ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s->sock, ZMQ_LINGER, &zero, sizeof zero);
    cr_assert_eq(zmq_connect(s->sock, ep), 0);
    cr_assert_eq(pthread_create(&s->th, NULL, silent_main, s), 0);
}

static void silent_stop(silent_t *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->th, NULL);
    zmq_close(s->sock);
    zmq_ctx_term(s->ctx);
}

static bool wait_until(atomic_int *v, int want, int timeout_ms)
{
    int64_t until = zt_now_ms() + timeout_ms;
    while (atomic_load(v) < want && zt_now_ms() < until)
        zt_pause_ms(10);
    return atomic_load(v) >= want;
}

/* A worker that keeps heartbeating but never answers a job with a 500 ms run timeout: the
   broker ends the attempt at timeout + grace, tells the worker (WCANCEL), gives it no more
   work, and the retry runs on an honest worker. Before, the job was held forever. */
Test(hardening, broker_ends_attempt_a_silent_worker_holds_past_its_timeout, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 100, .broker_args = ZT_ARGS("--run-grace", "300")});
    silent_t s;
    silent_start(&s, env.worker_ep, "silent");
    cr_assert(zt_wait_workers(&env, 1, 5000));
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    zf_submit_opts_t o = {.timeout_ms = 500, .max_attempts = 2};
    int64_t t0 = zt_now_ms();
    cr_assert_eq(zf_client_submit(c, "echo", "held", 4, &o, &id), 0, "%s", zf_client_error(c));
    cr_assert(wait_until(&s.jobs, 1, 5000), "the silent worker got no job");
    zt_worker(&env, 100, NULL); /* honest, and idle: the retry must not go back to "silent" */
    zf_event_t *r = zf_client_wait(c, id, 15000);
    cr_assert_not_null(r, "the job was never ended: %s", zf_client_error(c));
    int64_t took = zt_now_ms() - t0;
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s: %s", zfleet_state_name(r->status), r->text);
    cr_assert_eq(r->attempts, 2);
    cr_assert(strstr(r->text, "ended by the broker"), "cause: %s", r->text);
    cr_assert_eq(r->output_len, 4);
    cr_assert_geq(took, 800, "ended before timeout + grace (%lld ms)", (long long)took);
    cr_assert(wait_until(&s.cancels, 1, 2000), "the silent worker was not told");
    cr_assert_eq(atomic_load(&s.jobs), 1, "the suspect worker was given more work");
    cr_assert_eq(zt_broker_counter(&env, "run_timeouts"), 1);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
    silent_stop(&s);
}

/* The same worker, still silent one grace after it was told: removed as wedged, so jobs
   it holds behind that lease cannot be held forever either. A job whose last attempt ran
   out ends timed_out. */
Test(hardening, silent_worker_is_removed_one_grace_after_its_lease_was_ended, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 100, .broker_args = ZT_ARGS("--run-grace", "300")});
    silent_t s;
    silent_start(&s, env.worker_ep, "silent");
    cr_assert(zt_wait_workers(&env, 1, 5000));
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    zf_submit_opts_t o = {.timeout_ms = 400, .max_attempts = 1};
    cr_assert_eq(zf_client_submit(c, "echo", "x", 1, &o, &id), 0, "%s", zf_client_error(c));
    zf_event_t *r = zf_client_wait(c, id, 10000);
    cr_assert_not_null(r, "%s", zf_client_error(c));
    cr_assert_eq(r->status, ZFLEET_TIMED_OUT, "%s", zfleet_state_name(r->status));
    zf_event_destroy(&r);
    int64_t until = zt_now_ms() + 5000;
    while (zt_count_workers(&env) != 0 && zt_now_ms() < until)
        zt_pause_ms(20);
    cr_assert_eq(zt_count_workers(&env), 0, "the wedged worker is still registered");
    cr_assert_geq(zt_broker_counter(&env, "workers_lost"), 1);
    cr_assert(wait_until(&s.resets, 1, 3000), "the removed worker was not told to register again");
    zf_client_destroy(&c);
    silent_stop(&s);
}

/* ------------------------------------------------------------------ forged obituaries */

/* Anyone who reaches the worker port can send OBITUARY naming a real worker. Only the
   worker's supervisor (or the worker) may: a forged one moves nothing, and is counted. */
Test(hardening, forged_obituary_moves_no_job, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 200, .workers = 1, .worker_args = ZT_ARGS("--name", "victim")};
    zf_client_t *c = zt_start(&env, &up);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "1200", 4, NULL, &id), 0, "%s", zf_client_error(c));
    cr_assert(zt_wait_running(c, id, 5000));
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    cr_assert_eq(zmq_connect(s, env.worker_ep), 0);
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_OBITUARY);
    zf_msg_set_str(&m, ZF_F_WORKER, "victim");
    zf_msg_set_str(&m, ZF_F_TEXT, "killed by signal 9 (forged)");
    cr_assert_eq(zf_wire_send_blocking(s, &m, NULL), 0);
    int64_t until = zt_now_ms() + 3000;
    while (zt_broker_counter(&env, "obituaries_refused") < 1 && zt_now_ms() < until)
        zt_pause_ms(20);
    cr_assert_eq(zt_broker_counter(&env, "obituaries_refused"), 1);
    cr_assert_eq(zt_broker_counter(&env, "workers_lost"), 0);
    zf_event_t *r = zf_client_wait(c, id, 10000);
    cr_assert_not_null(r, "%s", zf_client_error(c));
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    cr_assert_eq(r->attempts, 1, "the job moved after a forged obituary");
    zf_event_destroy(&r);
    zmq_close(s);
    zmq_ctx_term(ctx);
    zf_client_destroy(&c);
}

/* The real supervisor's obituary still counts: a fleet worker killed mid-job has its job
   requeued at once with the real cause, long before its heartbeats would run out. */
Test(hardening, supervisor_obituary_still_requeues_at_once, .timeout = 60)
{
    zt_env_t env;
    /* expiry 3 s: an obituary is the only quick way */
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 1000});
    char log[160];
    snprintf(log, sizeof log, "%s/fleet.log", env.dir);
    const char *args[] = {"--fleet",  "--cpus",      "0",           "--gpus", "none",
                          "--broker", env.worker_ep, "--heartbeat", "1000",   NULL};
    zt_track(zt_spawn("worker/zfleet-worker", log, args));
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    zf_submit_opts_t o = {.max_attempts = 1};
    cr_assert_eq(zf_client_submit(c, "spin", "5000", 4, &o, &id), 0, "%s", zf_client_error(c));
    cr_assert(zt_wait_running(c, id, 5000));
    zf_event_t *st = zf_client_get(c, id);
    cr_assert_not_null(st);
    /* the worker's name is host:pid:device */
    const char *colon = strchr(st->worker, ':');
    cr_assert_not_null(colon, "worker name %s", st->worker);
    pid_t wpid = (pid_t)atoi(colon + 1);
    zf_event_destroy(&st);
    int64_t t0 = zt_now_ms();
    cr_assert_eq(kill(wpid, SIGKILL), 0);
    zf_event_t *r = zf_client_wait(c, id, 10000);
    cr_assert_not_null(r, "%s", zf_client_error(c));
    cr_assert_eq(r->status, ZFLEET_LOST);
    cr_assert(strstr(r->text, "killed by signal 9"), "cause: %s", r->text);
    cr_assert_lt(zt_now_ms() - t0, 2500, "requeued by heartbeat expiry, not by the obituary");
    cr_assert_eq(zt_broker_counter(&env, "obituaries_refused"), 0);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* ------------------------------------------------------------------ a stalled broker */

/* The broker is stopped (SIGSTOP) for five times its workers' liveness window: on resume
   it sees its own lateness and gives them a fresh window instead of declaring them all
   dead, and the workers, which kept their connection and their jobs through the silence,
   deliver the results: nothing runs twice. */
Test(hardening, stalled_broker_does_not_expire_its_workers, .timeout = 60)
{
    zt_env_t env;
    /* (200 ms heartbeats, not shorter: the two spins fill both cores of a CI host, and a
       worker's I/O thread starved for a 300 ms window would be expired for real) */
    zt_fleet_t up = {.hb_ms = 200, .broker_args = ZT_ARGS("--liveness", "3"), .workers = 2};
    zf_client_t *c = zt_start(&env, &up);
    pid_t b = up.broker;
    uint64_t id[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(zf_client_submit(c, "spin", "4000", 4, NULL, &id[i]), 0, "%s",
                     zf_client_error(c));
    cr_assert(zt_wait_running(c, id[0], 5000) && zt_wait_running(c, id[1], 5000));
    cr_assert_eq(kill(b, SIGSTOP), 0);
    zt_pause_ms(3000); /* 5x the broker's 600 ms expiry */
    cr_assert_eq(kill(b, SIGCONT), 0);
    for (int i = 0; i < 2; i++) {
        zf_event_t *r = zf_client_wait(c, id[i], 10000);
        cr_assert_not_null(r, "%s", zf_client_error(c));
        cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
        cr_assert_eq(r->attempts, 1, "job %d ran again after the stall", i);
        zf_event_destroy(&r);
    }
    cr_assert_eq(zt_broker_counter(&env, "workers_lost"), 0);
    cr_assert_geq(zt_broker_counter(&env, "stalls"), 1);
    zf_client_destroy(&c);
}

/* ------------------------------------------------------------------ queue bounds */

/* Counts ACCEPTED and REJECTED (with its text) for n async submits from c. */
static void submit_n(zf_client_t *c, const char *fn, const void *p, size_t len, int n,
                     int *accepted, int *rejected, char *last_why, size_t whylen)
{
    *accepted = *rejected = 0;
    for (int i = 0; i < n; i++)
        cr_assert_eq(zf_client_submit_async(c, fn, p, len, NULL, NULL), 0);
    while (*accepted + *rejected < n) {
        zf_event_t *e = zf_client_next(c, 5000);
        cr_assert_not_null(e, "no answer after %d of %d", *accepted + *rejected, n);
        if (e->type == ZF_EV_ACCEPTED)
            ++*accepted;
        if (e->type == ZF_EV_REJECTED) {
            ++*rejected;
            cr_assert_eq(e->code, 5, "code %d: %s", e->code, e->text);
            snprintf(last_why, whylen, "%s", e->text);
        }
        zf_event_destroy(&e);
    }
}

/* Payloads waiting for a worker are bounded in bytes, not only in count: 16 x 48 MiB jobs
   for an unserved function took the broker to 774 MB. Over the bound: a clear rejection,
   and the memory stays where it was. */
Test(hardening, queued_payload_bytes_are_bounded, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = zt_broker(&env, 500, "--max-queued-bytes", "10485760",
                        "--max-queued-bytes-per-client", "1073741824", NULL);
    zf_client_t *c = zt_client(&env);
    size_t len = 4 << 20;
    char *p = malloc(len);
    memset(p, 'q', len);
    int acc, rej;
    char why[256] = "";
    submit_n(c, "nobody", p, len, 2, &acc, &rej, why, sizeof why);
    cr_assert_eq(acc, 2);
    long before = zt_rss_kb(b);
    /* in four bursts of three: what is in flight at once (12 MiB) stays under the RSS bound
       below, which is about what the broker keeps, not what ZeroMQ's read-ahead holds */
    int acc_all = 0, rej_all = 0;
    for (int i = 0; i < 4; i++) {
        submit_n(c, "nobody", p, len, 3, &acc, &rej, why, sizeof why);
        acc_all += acc;
        rej_all += rej;
    }
    cr_assert_eq(acc_all, 0, "%d more 4 MiB jobs accepted past a 10 MiB bound", acc_all);
    cr_assert_eq(rej_all, 12);
    cr_assert(strstr(why, "payload bytes"), "rejection text: %s", why);
    cr_assert_eq(zt_broker_counter(&env, "queued_bytes"), 8 << 20);
#if !defined(__SANITIZE_ADDRESS__)
    long after = zt_rss_kb(b);
    cr_assert_lt(after, before + 20 * 1024, "RSS %ld -> %ld kB", before, after);
#else
    (void)before; /* ASan's quarantine keeps freed memory: RSS says nothing here */
#endif
    free(p);
    zf_client_destroy(&c);
}

/* One connection may hold only its share of the queue: a client that floods it leaves
   room for the others (before, it took every slot and everyone else got `queue full`).
   Its share frees as its jobs end. */
Test(hardening, one_client_cannot_take_the_whole_queue, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 500, .broker_args = ZT_ARGS("--max-queued", "100")});
    zf_client_t *greedy = zt_client(&env), *other = zt_client(&env);
    int acc, rej;
    char why[256] = "";
    submit_n(greedy, "nobody", "g", 1, 120, &acc, &rej, why, sizeof why);
    cr_assert_eq(acc, 50, "the flooding client got %d of 100 slots", acc);
    cr_assert(strstr(why, "this connection"), "rejection text: %s", why);
    submit_n(other, "nobody", "o", 1, 10, &acc, &rej, why, sizeof why);
    cr_assert_eq(acc, 10, "another client got %d of 10 (%s)", acc, why);
    zf_client_destroy(&greedy); /* its jobs stay queued; a new connection has a share of its own */
    zf_client_t *again = zt_client(&env);
    submit_n(again, "nobody", "a", 1, 5, &acc, &rej, why, sizeof why);
    cr_assert_eq(acc, 5);
    zf_client_destroy(&again);
    zf_client_destroy(&other);
}

/* A connection's share frees as its jobs end (here: cancelled). */
Test(hardening, client_share_frees_as_its_jobs_end, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 500, .broker_args = ZT_ARGS("--max-queued-per-client", "3")};
    zf_client_t *c = zt_start(&env, &up);
    uint64_t id[3], extra;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(zf_client_submit(c, "nobody", "x", 1, NULL, &id[i]), 0, "%s",
                     zf_client_error(c));
    cr_assert_eq(zf_client_submit(c, "nobody", "x", 1, NULL, &extra), -1, "a 4th job accepted");
    cr_assert_eq(zf_client_brokercode(c), 5);
    cr_assert(strstr(zf_client_error(c), "this connection"), "%s", zf_client_error(c));
    cr_assert_eq(zf_client_cancel(c, id[1]), 0, "%s", zf_client_error(c));
    cr_assert_eq(zf_client_submit(c, "nobody", "x", 1, NULL, &extra), 0, "%s", zf_client_error(c));
    zf_client_destroy(&c);
}

/* ------------------------------------------------------------------ a client that never reads */

static void *raw_client(const zt_env_t *env, void **ctx)
{
    *ctx = zmq_ctx_new();
    void *s = zmq_socket(*ctx, ZMQ_DEALER);
    int zero = 0, one = 1;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVHWM, &one, sizeof one); /* what it does not read stays queued */
    int small = 64 << 10;
    zmq_setsockopt(s, ZMQ_RCVBUF, &small, sizeof small);
    cr_assert_eq(zmq_connect(s, env->client_ep), 0);
    return s;
}

static void raw_submit(void *s, const char *fn, const void *p, size_t len, uint64_t tag)
{
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_SUBMIT);
    zf_msg_set_u64(&m, ZF_F_TAG, tag);
    zf_msg_set_str(&m, ZF_F_FN, fn);
    zmq_msg_t pl;
    zmq_msg_init_size(&pl, len);
    memcpy(zmq_msg_data(&pl), p, len);
    cr_assert_eq(zf_wire_send_blocking(s, &m, &pl), 0);
}

/* A client that submits and never reads its results: what waits for it is bounded in
   bytes (--client-buffer-bytes), the rest stays in the result store under its own bound.
   Before, 20,000 x 32 KiB results took the broker to 637 MB with a 64 MiB store. */
Test(hardening, client_that_never_reads_costs_the_broker_a_bounded_buffer, .timeout = 120)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = zt_broker(&env, 500, "--client-buffer-bytes", "4194304", "--result-store-bytes",
                        "8388608", NULL);
    zt_worker(&env, 500, "--credits", "8", NULL);
    cr_assert(zt_wait_workers(&env, 1, 5000));
    long before = zt_rss_kb(b);
    void *ctx, *s = raw_client(&env, &ctx);
    size_t len = 32 << 10;
    char *p = malloc(len);
    memset(p, 'r', len);
    const int n = 3000; /* 96 MiB of results */
    for (int i = 0; i < n; i++) {
        raw_submit(s, "echo", p, len, (uint64_t)i + 1);
        /* paced, so that what the broker holds is results, not a queue of payloads (the
           allocator keeps freed memory: RSS would show the payloads' peak) */
        int64_t wait_until = zt_now_ms() + 10000;
        while (i % 100 == 99 && zt_broker_counter(&env, "dispatched") < i - 100 &&
               zt_now_ms() < wait_until)
            zt_pause_ms(5);
    }
    int64_t until = zt_now_ms() + 60000;
    long long done = 0;
    while (zt_now_ms() < until) {
        done = zt_broker_counter(&env, "dispatched");
        if (done >= n)
            break;
        zt_pause_ms(100);
    }
    cr_assert_geq(done, n, "only %lld of %d jobs ran", done, n);
    zt_pause_ms(500); /* the last results reach the store */
    long after = zt_rss_kb(b);
    long long held = zt_broker_counter(&env, "results_held");
    fprintf(stderr, "never-reading client: broker RSS %ld -> %ld kB, %lld results held back\n",
            before, after, held);
    cr_assert_gt(held, 0);
#if !defined(__SANITIZE_ADDRESS__)
    /* 4 MiB unread + 8 MiB store + the sockets' kernel buffers and allocator slack */
    cr_assert_lt(after - before, 48 * 1024, "RSS grew by %ld kB", after - before);
#endif
    (void)b;
    free(p);
    zmq_close(s);
    zmq_ctx_term(ctx);
}

/* A slow reader loses nothing: results held back while it was behind are sent as soon as
   it has read enough (ZeroMQ's I/O thread wakes the loop), with no GET from the client. The
   client is a raw socket whose own queues hold almost nothing, so the broker's bound is
   what fills. */
Test(hardening, held_back_results_reach_a_slow_reader, .timeout = 120)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 500,
                     .broker_args = ZT_ARGS("--client-buffer-bytes", "1048576"),
                     .workers = 1,
                     .worker_args = ZT_ARGS("--credits", "8")};
    zt_fleet_up(&env, &up);
    void *ctx, *s = raw_client(&env, &ctx);
    size_t len = 128 << 10;
    char *p = malloc(len);
    const int n = 200; /* 25 MiB of results through a 1 MiB window */
    for (int i = 0; i < n; i++) {
        zt_pattern((unsigned char *)p, len, (unsigned)i);
        raw_submit(s, "echo", p, len, (uint64_t)i + 1);
    }
    int64_t until = zt_now_ms() + 60000;
    while (zt_broker_counter(&env, "dispatched") < n && zt_now_ms() < until)
        zt_pause_ms(50);
    until = zt_now_ms() + 10000;
    while (zt_broker_counter(&env, "results_held") <= 0 && zt_now_ms() < until)
        zt_pause_ms(50);
    cr_assert_gt(zt_broker_counter(&env, "results_held"), 0, "the bound was never reached");
    int results = 0, bad = 0;
    bool seen[200] = {false};
    while (results < n) {
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        cr_assert_eq(zmq_poll(&it, 1, 10000), 1, "stalled after %d of %d results", results, n);
        zf_frames_t f;
        cr_assert_eq(zf_wire_recv(s, &f, 0), 0);
        zf_msg_t m;
        cr_assert_eq(zf_msg_decode(&m, zmq_msg_data(&f.part[0]), zmq_msg_size(&f.part[0]), NULL,
                                   NULL),
                     0);
        if (m.cmd == ZF_CMD_RESULT) {
            unsigned k = (unsigned)(m.tag - 1);
            cr_assert(k < (unsigned)n && !seen[k], "tag %llu", (unsigned long long)m.tag);
            seen[k] = true;
            results++;
            bad += m.status != ZF_ST_SUCCEEDED || f.n != 2 || zmq_msg_size(&f.part[1]) != len ||
                   zt_pattern_mismatch(zmq_msg_data(&f.part[1]), len, k) != len;
        }
        zf_frames_close(&f);
    }
    cr_assert_eq(bad, 0);
    free(p);
    zmq_close(s);
    zmq_ctx_term(ctx);
}

/* A FORGET job's output leaves the broker's memory as soon as ZeroMQ has written its RESULT
   out, though its FORGET record waits some heartbeats (so that a kill -9 meanwhile cannot
   lose a result the client has not read yet: the journal still has it). Before, 200 x 1 MiB
   FORGET results held 200 MB in the broker for those heartbeats. */
Test(hardening, forgotten_outputs_leave_memory_once_written, .timeout = 60)
{
    zt_env_t env;
    /* FORGET records wait 10 s */
    zt_fleet_t up = {.hb_ms = 1000, .workers = 1, .worker_args = ZT_ARGS("--credits", "4")};
    zf_client_t *c = zt_start(&env, &up);
    size_t len = 1 << 20;
    char *p = malloc(len);
    memset(p, 'f', len);
    zf_submit_opts_t o = {.forget = true};
    for (int i = 0; i < 20; i++) {
        uint64_t id;
        cr_assert_eq(zf_client_submit(c, "echo", p, len, &o, &id), 0, "%s", zf_client_error(c));
        zf_event_t *r = zf_client_wait(c, id, 5000);
        cr_assert(r && r->status == ZFLEET_SUCCEEDED && r->output_len == len, "%s",
                  zf_client_error(c));
        zf_event_destroy(&r);
    }
    int64_t until = zt_now_ms() + 3000;
    while (zt_broker_counter(&env, "forget_pending_bytes") != 0 && zt_now_ms() < until)
        zt_pause_ms(20);
    cr_assert_eq(zt_broker_counter(&env, "forget_pending_bytes"), 0,
                 "outputs still held after the client read them");
    cr_assert_eq(zt_broker_counter(&env, "forget_pending"), 20, "records written early");
    free(p);
    zf_client_destroy(&c);
}

/* Workers that registered and vanished: every dispatch to them fails (unroutable). Each
   failed send leaves the job as it was and dooms the worker, removed at the end of the
   loop turn (never inside dispatch): the jobs go to the next worker or wait, nothing is
   counted as an attempt, and all of them run on the one real worker. */
Test(hardening, vanished_workers_cost_no_attempt, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = zt_broker(&env, 1000, NULL); /* expiry 3 s: the sends find them first */
    for (int i = 0; i < 5; i++) {
        void *ctx = zmq_ctx_new();
        void *s = zmq_socket(ctx, ZMQ_DEALER);
        int zero = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
        cr_assert_eq(zmq_connect(s, env.worker_ep), 0);
        zf_msg_t m;
        zf_msg_init(&m, ZF_CMD_READY);
        zf_msg_set_str(&m, ZF_F_WORKER, "ghost");
        zf_msg_set_u64(&m, ZF_F_DEVICE, ZF_DEV_CPU);
        zf_msg_set_u64(&m, ZF_F_CREDITS, 4);
        zf_msg_add_function(&m, "echo");
        cr_assert_eq(zf_wire_send_blocking(s, &m, NULL), 0);
        cr_assert(zt_wait_workers(&env, i + 1, 5000));
        zmq_close(s);
        zmq_ctx_term(ctx);
    }
    zf_client_t *c = zt_client(&env);
    uint64_t id[20];
    for (int i = 0; i < 20; i++)
        cr_assert_eq(zf_client_submit(c, "echo", "x", 1, NULL, &id[i]), 0, "%s",
                     zf_client_error(c));
    zt_worker(&env, 1000, NULL);
    for (int i = 0; i < 20; i++) {
        zf_event_t *r = zf_client_wait(c, id[i], 10000);
        cr_assert_not_null(r, "job %d: %s", i, zf_client_error(c));
        cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
        cr_assert_eq(r->attempts, 1, "job %d: %u attempts", i, r->attempts);
        zf_event_destroy(&r);
    }
    cr_assert_eq(kill(b, 0), 0, "broker died");
    zf_client_destroy(&c);
}
