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

static void teardown(void)
{
    zt_kill_all();
}

TestSuite(hardening, .fini = teardown);

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
        if (zf_msg_decode(&m, zmq_msg_data(&f.part[0]), zmq_msg_size(&f.part[0]), NULL, NULL) == 0) {
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
    zt_env_init(&env);
    zt_broker(&env, 100, "--run-grace", "300", NULL);
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
    zt_env_init(&env);
    zt_broker(&env, 100, "--run-grace", "300", NULL);
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
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    zt_worker(&env, 200, "--name", "victim", NULL);
    cr_assert(zt_wait_workers(&env, 1, 5000));
    zf_client_t *c = zt_client(&env);
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
    zt_env_init(&env);
    zt_broker(&env, 1000, NULL); /* expiry 3 s: an obituary is the only quick way */
    char log[160];
    snprintf(log, sizeof log, "%s/fleet.log", env.dir);
    const char *args[] = {"--fleet",     "--cpus", "0",  "--gpus", "none", "--broker", env.worker_ep,
                          "--heartbeat", "1000",   NULL};
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
    zt_env_init(&env);
    pid_t b = zt_broker(&env, 100, "--liveness", "3", NULL);
    zt_worker(&env, 100, NULL);
    zt_worker(&env, 100, NULL);
    cr_assert(zt_wait_workers(&env, 2, 5000));
    zf_client_t *c = zt_client(&env);
    uint64_t id[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(zf_client_submit(c, "spin", "2500", 4, NULL, &id[i]), 0, "%s",
                     zf_client_error(c));
    cr_assert(zt_wait_running(c, id[0], 5000) && zt_wait_running(c, id[1], 5000));
    cr_assert_eq(kill(b, SIGSTOP), 0);
    zt_pause_ms(1500); /* 5x the broker's 300 ms expiry */
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
