/*  Re-attach (PROTOCOL.md §7.11): a broker restart costs no work. Real broker and worker
    processes; the broker is killed with SIGKILL and started again on the same journal, or
    stopped with SIGSTOP; workers keep running their jobs, claim their leases in READY, and
    deliver results finished while the broker was away. Claims that do not match the
    journal (late, forged, another worker's) are refused and counted.

    Heartbeats are 250 ms; the re-attach window is given explicitly where a test needs the
    claim to land (a loaded machine may take a while to reconnect), and every wait has a
    generous deadline. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "harness.h"
#include "zf_proto.h"
#include "zf_wire.h"

#define HB 250

TestSuite(reattach, .fini = zt_kill_all);

static const char *data_dir(const zt_env_t *env)
{
    static char d[160];
    snprintf(d, sizeof d, "%s/data", env->dir);
    return d;
}

static pid_t broker(const zt_env_t *env, const char *window)
{
    return zt_broker(env, HB, "--data", data_dir(env), "--reattach-window", window, NULL);
}

/* The worker running job id now (STATUS), into name; false if it is not running. */
static bool running_on(zf_client_t *c, uint64_t id, char *name, size_t cap)
{
    zf_event_t *e = zf_client_get(c, id);
    bool ok = e && e->status == ZFLEET_RUNNING && e->worker[0];
    if (ok)
        snprintf(name, cap, "%s", e->worker);
    zf_event_destroy(&e);
    return ok;
}

/* Waits for job id's RESULT on c and checks that no second one follows. */
static zf_event_t *one_result(zf_client_t *c, uint64_t id, int timeout_ms)
{
    zf_event_t *r = zf_client_wait(c, id, timeout_ms);
    cr_assert_not_null(r, "job %llu: %s", (unsigned long long)id, zf_client_error(c));
    return r;
}

/* No second run's result reaches the client: a RESULT that still comes for the job is the
   answer to a WAIT the client sent while the push was on its way (its own tag, the same
   run: worker, duration and attempts equal to the first), never a second push. */
static void no_second_result(zf_client_t *c, const zf_event_t *first, int ms)
{
    int64_t until = zt_now_ms() + ms;
    while (zt_now_ms() < until) {
        zf_event_t *e = zf_client_next(c, 100);
        if (e && e->type == ZF_EV_RESULT && e->id == first->id) {
            cr_assert_neq(e->tag, first->tag, "job %llu pushed twice", (unsigned long long)e->id);
            cr_assert(!strcmp(e->worker, first->worker) && e->duration_us == first->duration_us &&
                          e->attempts == first->attempts,
                      "job %llu: a second run's result (%s, %llu us, attempt %u)",
                      (unsigned long long)e->id, e->worker, (unsigned long long)e->duration_us,
                      e->attempts);
        }
        zf_event_destroy(&e);
    }
}

/* The scenario: 4 spin jobs of 3 s on 2 workers with credits 2 (two running, two
   prefetched); the broker is killed 1.5 s in and restarted 1 s later on the same journal.
   Every job succeeds with attempt 1 on the worker that had it, and each client gets one
   result. Without re-attach every job ran twice (attempt 2; the last done after ~12 s). */
static void outage_loses_no_work(bool kill_it)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "5000");
    zt_worker(&env, HB, "--credits", "2", "--name", "wa", NULL);
    zt_worker(&env, HB, "--credits", "2", "--name", "wb", NULL);
    cr_assert(zt_wait_workers(&env, 2, 10000));
    zf_client_t *c[4];
    uint64_t id[4];
    int64_t t0 = zt_now_ms();
    for (int i = 0; i < 4; i++) {
        c[i] = zt_client(&env);
        cr_assert_eq(zf_client_submit(c[i], "spin", "3000", 4, NULL, &id[i]), 0, "%s",
                     zf_client_error(c[i]));
    }
    char had[4][64] = {{0}};
    int running = 0;
    for (int64_t until = zt_now_ms() + 10000; running < 2 && zt_now_ms() < until;) {
        running = 0;
        for (int i = 0; i < 4; i++)
            running += running_on(c[0], id[i], had[i], sizeof had[i]);
        zt_pause_ms(50);
    }
    cr_assert_eq(running, 4, "the four jobs are leased (two running, two prefetched)");
    int64_t wait = t0 + 1500 - zt_now_ms();
    zt_pause_ms(wait > 0 ? (int)wait : 0);
    if (kill_it) {
        zt_kill(b, SIGKILL);
        zt_pause_ms(1000);
        b = broker(&env, "5000");
    } else {
        kill(b, SIGSTOP);
        zt_pause_ms(5000);
        kill(b, SIGCONT);
    }
    int64_t last = 0;
    zf_event_t *r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = one_result(c[i], id[i], 60000);
        cr_assert_eq(r[i]->status, ZFLEET_SUCCEEDED, "job %d: %s", i, r[i]->text);
        cr_assert_eq(r[i]->attempts, 1, "job %d ran again: attempt %u (%s)", i, r[i]->attempts,
                     r[i]->text);
        cr_assert_str_eq(r[i]->worker, had[i], "job %d moved from %s to %s", i, had[i],
                         r[i]->worker);
        cr_assert_eq(r[i]->output_len, 4);
        if (zt_now_ms() > last)
            last = zt_now_ms();
    }
    fprintf(stderr, "  %s: last of 4 jobs finished %lld ms after submit\n",
            kill_it ? "kill -9 + restart" : "SIGSTOP 5 s", (long long)(last - t0));
    for (int i = 0; i < 4; i++) {
        no_second_result(c[i], r[i], i == 0 ? 800 : 100);
        zf_event_destroy(&r[i]);
    }
    if (kill_it) {
        cr_assert_eq(zt_broker_counter(&env, "reattached"), 4);
        cr_assert_eq(zt_broker_counter(&env, "claims_refused"), 0);
        cr_assert_eq(zt_broker_counter(&env, "reattach_expired"), 0);
    } else {
        cr_assert_eq(zt_broker_counter(&env, "workers_lost"), 0);
    }
    cr_assert_eq(zt_broker_counter(&env, "requeued"), 0);
    for (int i = 0; i < 4; i++)
        zf_client_destroy(&c[i]);
}

Test(reattach, broker_kill_and_restart_reattaches_running_and_prefetched_jobs, .timeout = 120)
{
    outage_loses_no_work(true);
}

Test(reattach, broker_stopped_5s_loses_no_work, .timeout = 120)
{
    outage_loses_no_work(false);
}

/* The worker finishes its job while the broker is dead; it keeps the result, claims it in
   READY and delivers it to the restarted broker, which gives it to the waiting client. */
Test(reattach, result_finished_while_broker_down_is_delivered_after_restart, .timeout = 90)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "5000");
    zt_worker(&env, HB, "--name", "solo", NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "800", 3, NULL, &id), 0);
    cr_assert(zt_wait_running(c, id, 10000));
    zt_kill(b, SIGKILL);
    zt_pause_ms(2500); /* it finishes meanwhile, into the void */
    broker(&env, "5000");
    zf_event_t *r = one_result(c, id, 30000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s", r->text);
    cr_assert_eq(r->attempts, 1, "it ran again: %s", r->text);
    cr_assert_str_eq(r->worker, "solo");
    cr_assert_eq(r->output_len, 3);
    cr_assert_eq(memcmp(r->output, "800", 3), 0);
    no_second_result(c, r, 800);
    zf_event_destroy(&r);
    long long reattached = (long long)zt_broker_counter(&env, "reattached");
    cr_assert_eq(reattached, 1, "reattached %lld, claims refused %lld", reattached,
                 (long long)zt_broker_counter(&env, "claims_refused"));
    cr_assert_eq(zt_broker_counter(&env, "dispatched"), 0, "the restarted broker ran it again");
    zf_client_destroy(&c);
}

/* A worker that comes back only after the window finds its job run again elsewhere: its
   claim is refused and counted, its late result is fenced, and the client gets the one
   result of the second attempt. */
Test(reattach, worker_back_after_the_window_is_fenced_and_its_job_reruns, .timeout = 90)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "600");
    pid_t w1 = zt_worker(&env, HB, "--name", "late", NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "3000", 4, NULL, &id), 0);
    cr_assert(zt_wait_running(c, id, 10000));
    kill(w1, SIGSTOP);
    zt_kill(b, SIGKILL);
    broker(&env, "600");
    zt_worker(&env, HB, "--name", "other", NULL);
    /* the window closes unclaimed: the job runs again, on the other worker */
    char on[64] = "";
    for (int64_t until = zt_now_ms() + 20000; zt_now_ms() < until; zt_pause_ms(50))
        if (running_on(c, id, on, sizeof on) && !strcmp(on, "other"))
            break;
    cr_assert_str_eq(on, "other", "the unclaimed job did not run again elsewhere");
    kill(w1, SIGCONT);
    long long refused = 0;
    for (int64_t until = zt_now_ms() + 20000; refused < 1 && zt_now_ms() < until; zt_pause_ms(100))
        refused = zt_broker_counter(&env, "claims_refused");
    cr_assert_geq(refused, 1, "the late worker's claim was not refused");
    zf_event_t *r = one_result(c, id, 30000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s", r->text);
    cr_assert_eq(r->attempts, 2, "attempts %u on %s, reattach_expired %lld: %s", r->attempts,
                 r->worker, zt_broker_counter(&env, "reattach_expired"), r->text);
    cr_assert_str_eq(r->worker, "other");
    cr_assert(strstr(r->text, "did not claim it"), "cause: %s", r->text);
    no_second_result(c, r, 1000);
    zf_event_destroy(&r);
    cr_assert_eq(zt_broker_counter(&env, "reattach_expired"), 1);
    cr_assert_eq(zt_broker_counter(&env, "reattached"), 0);
    cr_assert(zt_wait_workers(&env, 2, 10000), "the late worker serves again");
    zf_client_destroy(&c);
}

/* ------------------------------------------------------------------ forged claims */

static void *dealer(void *ctx, const char *ep)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    cr_assert_eq(zmq_connect(s, ep), 0);
    return s;
}

static void send_msg(void *s, const zf_msg_t *m)
{
    char buf[ZF_HEADER_MAX];
    int n = zf_msg_encode(m, buf, sizeof buf);
    cr_assert_gt(n, 0);
    cr_assert_eq(zmq_send(s, buf, (size_t)n, 0), n);
}

/* A READY from a forger: name and session as given, claiming the leases. */
static void forged_ready(void *s, const char *name, uint64_t session, const zf_claim_t *claims,
                         uint32_t n)
{
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_READY);
    zf_msg_set_str(&m, ZF_F_WORKER, name);
    zf_msg_set_u64(&m, ZF_F_DEVICE, ZF_DEV_CPU);
    zf_msg_set_u64(&m, ZF_F_CREDITS, 8);
    zf_msg_add_function(&m, "spin");
    zf_msg_set_u64(&m, ZF_F_SESSION, session);
    for (uint32_t i = 0; i < n; i++)
        zf_msg_add_claim(&m, claims[i].id, claims[i].attempt);
    send_msg(s, &m);
}

/* WCANCELs received within ms, each lease into got (up to cap). */
static uint32_t wcancels(void *s, int ms, zf_claim_t *got, uint32_t cap)
{
    uint32_t n = 0;
    for (int64_t until = zt_now_ms() + ms; zt_now_ms() < until;) {
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) != 1)
            continue;
        zf_frames_t f;
        cr_assert_eq(zf_wire_recv(s, &f, 0), 0);
        zf_msg_t m;
        if (zf_msg_decode(&m, zmq_msg_data(&f.part[0]), zmq_msg_size(&f.part[0]), NULL, NULL) ==
                0 &&
            m.cmd == ZF_CMD_WCANCEL && n < cap)
            got[n++] = (zf_claim_t){m.id, m.attempt};
        cr_assert_neq(m.cmd, ZF_CMD_JOB, "the forger was given a job");
        zf_frames_close(&f);
    }
    return n;
}

/* Claims that do not match the journal are refused (WCANCEL), counted, and move nothing:
   another worker's lease (other session, or its name with another session), a lease
   number the journal never started, an unknown id, a finished job. The real holder then
   claims its job and finishes it on attempt 1. */
Test(reattach, forged_claims_are_refused_and_the_holder_reattaches, .timeout = 90)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "8000");
    pid_t w = zt_worker(&env, HB, "--name", "holder", NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    uint64_t done_id, id;
    cr_assert_eq(zf_client_submit(c, "echo", "x", 1, NULL, &done_id), 0);
    zf_event_t *r = one_result(c, done_id, 10000);
    zf_event_destroy(&r);
    cr_assert_eq(zf_client_submit(c, "spin", "2500", 4, NULL, &id), 0);
    cr_assert(zt_wait_running(c, id, 10000));
    kill(w, SIGSTOP); /* the holder cannot claim before the forger */
    zt_kill(b, SIGKILL);
    broker(&env, "8000");
    void *ctx = zmq_ctx_new();
    const zf_claim_t forged[] = {
        {id, 1},      /* another worker's lease: right lease, wrong session */
        {id, 2},      /* a lease number the journal never started */
        {id ^ 1, 1},  /* an unknown id */
        {done_id, 1}, /* a finished job */
    };
    void *f1 = dealer(ctx, env.worker_ep);
    forged_ready(f1, "forger", 12345, forged, 4);
    zf_claim_t got[8];
    uint32_t n = wcancels(f1, 1500, got, 8);
    cr_assert_eq(n, 4, "each refused claim is fenced: %u WCANCEL", n);
    for (uint32_t i = 0; i < 4; i++)
        cr_assert(got[i].id == forged[i].id && got[i].attempt == forged[i].attempt);
    /* the holder's own name does not help without its session */
    void *f2 = dealer(ctx, env.worker_ep);
    forged_ready(f2, "holder", 777, forged, 1);
    cr_assert_eq(wcancels(f2, 1000, got, 8), 1);
    cr_assert_eq(zt_broker_counter(&env, "claims_refused"), 5);
    cr_assert_eq(zt_broker_counter(&env, "reattached"), 0);
    zmq_close(f1);
    zmq_close(f2);
    zmq_ctx_destroy(ctx);
    kill(w, SIGCONT);
    r = one_result(c, id, 30000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s", r->text);
    cr_assert_eq(r->attempts, 1, "the holder's job ran again: %s", r->text);
    cr_assert_str_eq(r->worker, "holder");
    zf_event_destroy(&r);
    cr_assert_eq(zt_broker_counter(&env, "reattached"), 1);
    zf_client_destroy(&c);
}

/* A READY claiming more leases than the codec allows is malformed as a whole: nothing is
   registered, nothing moves. */
Test(reattach, oversized_claim_list_is_malformed, .timeout = 30)
{
    zt_env_t env;
    zt_env_init(&env);
    broker(&env, "1000");
    void *ctx = zmq_ctx_new();
    void *s = dealer(ctx, env.worker_ep);
    /* hand-built: the encoder stops at ZF_CLAIMS_MAX */
    unsigned char buf[ZF_HEADER_MAX];
    size_t n = 0;
    buf[n++] = 'Z', buf[n++] = 'F', buf[n++] = ZF_PROTO_VERSION, buf[n++] = ZF_CMD_READY;
    buf[n++] = 0x83; /* map of 3 */
    buf[n++] = ZF_F_DEVICE, buf[n++] = ZF_DEV_CPU;
    buf[n++] = ZF_F_FUNCTIONS, buf[n++] = 0x90;
    buf[n++] = ZF_F_CLAIMS, buf[n++] = 0xdc, buf[n++] = 0x02, buf[n++] = 0x02; /* 514 items */
    for (int i = 0; i < 514; i++)
        buf[n++] = 1;
    cr_assert_eq(zmq_send(s, buf, n, 0), (int)n);
    long long bad = 0;
    for (int64_t until = zt_now_ms() + 5000; bad < 1 && zt_now_ms() < until; zt_pause_ms(50))
        bad = zt_broker_counter(&env, "malformed_worker");
    cr_assert_eq(bad, 1);
    cr_assert_eq(zt_count_workers(&env), 0);
    zmq_close(s);
    zmq_ctx_destroy(ctx);
}

/* --reattach-window 0: the restart runs every started job again, as brokers did before. */
Test(reattach, window_off_runs_started_jobs_again, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "0");
    zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "1500", 4, NULL, &id), 0);
    cr_assert(zt_wait_running(c, id, 10000));
    zt_kill(b, SIGKILL);
    broker(&env, "0");
    zf_event_t *r = one_result(c, id, 30000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    cr_assert_eq(r->attempts, 2);
    zf_event_destroy(&r);
    cr_assert_geq(zt_broker_counter(&env, "claims_refused"), 1, "its claim is refused");
    zf_client_destroy(&c);
}

/* A job placed once its ACCEPT's (slow) sync ended: a broker killed the moment the worker
   starts it still knows its lease, and the worker's claim re-attaches it (the job does not
   run again). The broker writes a placed job's LEASE in the turn that placed it. */
Test(reattach, lease_of_a_job_placed_after_its_sync_survives_an_immediate_kill, .timeout = 90)
{
    enum { SLOW_HB = 1500 }; /* the loop has no turn of its own for that long */
    zt_env_t env;
    zt_env_init(&env);
    setenv("ZFLEET_JOURNAL_SLOW_SYNC_MS", "300", 1); /* placement waits for the sync's end */
    pid_t b = zt_broker(&env, SLOW_HB, "--data", data_dir(&env), "--reattach-window", "8000", NULL);
    unsetenv("ZFLEET_JOURNAL_SLOW_SYNC_MS");
    /* (fixed credits: an adaptive worker's CREDITS message would start a turn) */
    zt_worker(&env, SLOW_HB, "--name", "marker", "--credits", "1", "--module",
              zt_path("tests/zf_testmod.so"), NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    char mark[256];
    snprintf(mark, sizeof mark, "%s/started", env.dir);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "mark", mark, strlen(mark), NULL, &id), 0, "%s",
                 zf_client_error(c));
    int64_t until = zt_now_ms() + 10000;
    while (access(mark, F_OK) != 0 && zt_now_ms() < until)
        zt_pause_ms(1);
    cr_assert_eq(access(mark, F_OK), 0, "the job did not start");
    /* The LEASE reaches the file microseconds after the JOB is sent, not before: a kill
       inside that window (a broker preempted there, seen once under ASan) costs the job a
       second run, as any crash before a record is written does, and loses nothing. What
       this test pins is that the lease does not wait for a timer: the loop has no turn of
       its own for SLOW_HB (the job reports no progress, heartbeats are 1.5 s apart), so 150 ms
       after the start the lease is on disk only if the turns the placement set off wrote it
       (and not the end of the next 300 ms sync either). 50 ms was once too short under
       ASan on a loaded host. */
    zt_pause_ms(150);
    zt_kill(b, SIGKILL);
    zt_wait_exit(b, 5000);
    broker(&env, "8000");
    zf_event_t *r = one_result(c, id, 30000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s", r->text);
    cr_assert_eq(r->attempts, 1, "it ran again: %s", r->text);
    cr_assert_eq(zt_broker_counter(&env, "reattached"), 1, "claims refused %lld",
                 zt_broker_counter(&env, "claims_refused"));
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}
