/*  A broker in a thread of the test process (zf_broker_new / zf_broker_run / zf_broker_stop),
    served by a real worker process and used through the C client over ipc://. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "zf_broker.h"

TestSuite(inproc, .fini = zt_kill_all);

typedef struct {
    zf_broker_t *b;
    int rc;
} runner_t;

static void *run_broker(void *arg)
{
    runner_t *r = arg;
    r->rc = zf_broker_run(r->b);
    return NULL;
}

static zf_broker_t *new_broker(const zt_env_t *env)
{
    zf_broker_config_t cfg;
    zf_broker_config_defaults(&cfg);
    cfg.client_ep = env->client_ep;
    cfg.worker_ep = env->worker_ep;
    cfg.heartbeat_ms = 200;
    zf_broker_t *b = zf_broker_new(&cfg);
    cr_assert_not_null(b, "zf_broker_new failed (see the log above)");
    return b;
}

/* Joins the broker's thread, failing the test if it has not returned within timeout_ms. */
static void join_within(pthread_t t, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    int rc = pthread_timedjoin_np(t, NULL, &until);
    cr_assert_eq(rc, 0, "the broker's thread did not return within %d ms (%s)", timeout_ms,
                 strerror(rc));
}

Test(inproc, broker_in_a_thread_runs_a_job_then_stops_on_request, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    runner_t r = {.b = new_broker(&env), .rc = -2};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, run_broker, &r), 0);
    zt_worker(&env, 200, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000), "the worker did not register");

    zf_client_t *c = zt_client(&env);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "echo", "in-process", 10, NULL, &id), 0, "%s",
                 zf_client_error(c));
    zf_event_t *e = zf_client_wait(c, id, 10000);
    cr_assert_not_null(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
    cr_assert_eq(e->output_len, 10);
    cr_assert(memcmp(e->output, "in-process", 10) == 0);
    zf_event_destroy(&e);

    /* from this thread, while the loop may be blocked in zmq_poll */
    cr_assert_eq(zf_broker_stop(r.b), 0);
    join_within(t, 10000);
    cr_assert_eq(r.rc, 0, "zf_broker_run returned %d", r.rc);
    zf_broker_destroy(&r.b);
    cr_assert_null(r.b);

    /* the broker is gone: its endpoint no longer answers */
    zf_client_set_request_timeout(c, 500);
    e = zf_client_stats(c);
    cr_assert_null(e, "a stopped broker answered STATS");
    cr_assert_eq(zf_client_errcode(c), ZF_CE_UNREACHABLE, "%s", zf_client_error(c));
    zf_client_destroy(&c);
}

/* A stop asked for before the loop starts is not lost: the run returns after one turn. Each
   request stops one run, so the same broker can run (and be stopped) again. */
Test(inproc, stop_before_run_is_kept_and_each_stop_ends_one_run, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    runner_t r = {.b = new_broker(&env), .rc = -2};
    cr_assert_eq(zf_broker_stop(r.b), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, run_broker, &r), 0);
    join_within(t, 10000);
    cr_assert_eq(r.rc, 0);

    /* run again: it serves until the next stop */
    r.rc = -2;
    cr_assert_eq(pthread_create(&t, NULL, run_broker, &r), 0);
    zf_client_t *c = zt_client(&env);
    zf_event_t *e = zf_client_stats(c);
    cr_assert_not_null(e, "the second run does not answer: %s", zf_client_error(c));
    zf_event_destroy(&e);
    cr_assert_eq(zf_broker_stop(r.b), 0);
    join_within(t, 10000);
    cr_assert_eq(r.rc, 0);
    zf_client_destroy(&c);
    zf_broker_destroy(&r.b);
}
