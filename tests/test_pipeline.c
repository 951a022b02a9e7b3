/*  Pipelines (issue 18): a job with further steps (`then`) runs each on its own device kind
    with the previous step's output as input, under one id; a failed step ends it with that
    step's error; a broker killed between steps resumes at the step that had not run; bad
    steps are refused. Steps: tests/py/pipe_steps.py (each appends "+NAME@KIND"). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

TestSuite(pipeline, .fini = zt_kill_all);

/* This file's directory (tests/), absolute. */
static const char *tests_dir(void)
{
    static char p[1100];
    char here[512];
    snprintf(here, sizeof here, "%s", __FILE__); /* (relative to the build directory) */
    *strrchr(here, '/') = 0;
    snprintf(p, sizeof p, "%s%s%s", here[0] == '/' ? "" : zt_build_dir(), here[0] == '/' ? "" : "/",
             here);
    return p;
}

static const char *steps_py(void)
{
    static char p[1200];
    snprintf(p, sizeof p, "%s/py/pipe_steps.py", tests_dir());
    return p;
}

static uint64_t submit_with(zf_client_t *c, const char *fn, zf_submit_opts_t o)
{
    uint64_t id = 0;
    cr_assert_eq(zf_client_submit(c, fn, "x", 1, &o, &id), 0, "%s", zf_client_error(c));
    return id;
}

static uint64_t submit_pipe(zf_client_t *c, const char *fn, int dev, const char *then)
{
    return submit_with(c, fn, (zf_submit_opts_t){.device = dev, .then = then});
}

/* Waits for the job's result; asserts its state and (when want is not NULL) its output. */
static void expect_result(zf_client_t *c, uint64_t id, int status, const char *want)
{
    zf_event_t *e = zf_client_wait(c, id, 30000);
    cr_assert(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, status, "%s, not %s: %s", zfleet_state_name(e->status),
                 zfleet_state_name(status), e->text);
    if (want)
        cr_assert(e->output_len == strlen(want) && !memcmp(e->output, want, e->output_len),
                  "%.*s, not %s", (int)e->output_len, (const char *)e->output, want);
    zf_event_destroy(&e);
}

/* Each bad[i][0] as `then` is refused (EBADARG) with a reason holding bad[i][1]. */
static void expect_refused(zf_client_t *c, const char *const bad[][2], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        zf_submit_opts_t o = {.then = bad[i][0]};
        uint64_t x;
        cr_assert_eq(zf_client_submit(c, "decode", "x", 1, &o, &x), -1, "'%s'", bad[i][0]);
        cr_assert_eq(zf_client_brokercode(c), ZF_BROKER_BAD_ARGUMENT);
        cr_assert(strstr(zf_client_error(c), bad[i][1]), "'%s': %s", bad[i][0], zf_client_error(c));
    }
}

/* A broker, a CPU worker and a (fake) GPU worker with the test steps. */
static zf_client_t *cpu_and_gpu(zt_env_t *env, const char *data)
{
    zt_env_init(env);
    zt_broker(env, 200, data ? "--data" : NULL, data, NULL);
    zt_worker(env, 200, "--device", "cpu:0", "--module", steps_py(), NULL);
    zt_worker(env, 200, "--device", "gpu:0", "--fake-gpu", "--module", steps_py(), NULL);
    cr_assert(zt_wait_workers(env, 2, 10000));
    return zt_client(env);
}

Test(pipeline, cpu_gpu_cpu_threads_outputs_and_fails_at_the_failed_step, .timeout = 90)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    zt_worker(&env, 200, "--device", "cpu:0", "--module", steps_py(), NULL);
    zt_worker(&env, 200, "--device", "gpu:0", "--fake-gpu", "--module", steps_py(), NULL);
    cr_assert(zt_wait_workers(&env, 2, 10000));
    zf_client_t *c = zt_client(&env);
    uint64_t id = submit_pipe(c, "decode", ZFLEET_DEVICE_CPU, "infer@gpu,encode@cpu");
    zf_event_t *e = zf_client_wait(c, id, 20000);
    cr_assert(e && e->status == ZFLEET_SUCCEEDED, "%s", e ? e->text : zf_client_error(c));
    cr_assert_eq(e->output_len, strlen("x+decode@cpu+infer@gpu+encode@cpu"));
    cr_assert(!memcmp(e->output, "x+decode@cpu+infer@gpu+encode@cpu", e->output_len), "%.*s",
              (int)e->output_len, (const char *)e->output);
    cr_assert_eq(e->step, 3);
    cr_assert_eq(e->steps, 3);
    zf_event_destroy(&e);
    /* a failed middle step ends the pipeline with its error; the last step never runs */
    id = submit_pipe(c, "decode", ZFLEET_DEVICE_CPU, "fail@gpu,encode@cpu");
    e = zf_client_wait(c, id, 20000);
    cr_assert(e && e->status == ZFLEET_FAILED);
    cr_assert(strstr(e->text, "bad frame in step fail"), "%s", e->text);
    cr_assert_eq(e->step, 2);
    cr_assert_str_eq(e->function, "fail");
    zf_event_destroy(&e);
    /* bad steps are refused with the reason */
    static const char *const bad[][2] = {
        {"infer@tpu", "unknown device"},
        {"a,b,c,d,e,f,g,h,i", "more than 8"},
        {"infer,,encode", "empty"},
        {"@gpu", "empty"},
    };
    expect_refused(c, bad, sizeof bad / sizeof bad[0]);
    zf_client_destroy(&c);
}

Test(pipeline, broker_killed_between_steps_resumes_at_the_unfinished_step, .timeout = 90)
{
    zt_env_t env;
    zt_env_init(&env);
    char data[160];
    snprintf(data, sizeof data, "%s/data", env.dir);
    pid_t b = zt_broker(&env, 200, "--data", data, NULL);
    zt_worker(&env, 200, "--device", "cpu:0", "--module", steps_py(), NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    /* no GPU worker yet: step 1 runs, then the job waits at step 2 */
    uint64_t id = submit_pipe(c, "decode", ZFLEET_DEVICE_CPU, "infer@gpu,encode@cpu");
    int64_t until = zt_now_ms() + 10000;
    zf_event_t *e = NULL;
    for (;;) {
        e = zf_client_get(c, id);
        cr_assert(e);
        if (e->step == 2)
            break;
        zf_event_destroy(&e);
        cr_assert_lt(zt_now_ms(), until, "step 1 did not finish");
        zt_pause_ms(50);
    }
    cr_assert_str_eq(e->function, "infer");
    zf_event_destroy(&e);
    zt_pause_ms(300); /* (the STEP record's commit) */
    zf_client_destroy(&c);
    zt_kill(b, SIGKILL);
    zt_broker(&env, 200, "--data", data, NULL);
    c = zt_client(&env);
    e = zf_client_get(c, id);
    cr_assert(e && e->step == 2 && e->status == ZFLEET_QUEUED, "step %u", e ? e->step : 0);
    zf_event_destroy(&e);
    zt_worker(&env, 200, "--device", "gpu:0", "--fake-gpu", "--module", steps_py(), NULL);
    e = zf_client_wait(c, id, 20000);
    cr_assert(e && e->status == ZFLEET_SUCCEEDED, "%s", e ? e->text : zf_client_error(c));
    /* step 1 ran once: its output was the journaled input of step 2 */
    cr_assert(!memcmp(e->output, "x+decode@cpu+infer@gpu+encode@cpu", e->output_len), "%.*s",
              (int)e->output_len, (const char *)e->output);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

/* A worker killed during step 2: that step runs again elsewhere (its attempt counted), the
   steps before it do not, and the output shows each step's work once. */
Test(pipeline, worker_killed_during_a_step_reruns_only_that_step, .timeout = 90)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    zt_worker(&env, 200, "--device", "cpu:0", "--module", steps_py(), NULL);
    pid_t gpu = zt_worker(&env, 200, "--device", "gpu:0", "--fake-gpu", "--module", steps_py(),
                          "--credits", "1", NULL);
    cr_assert(zt_wait_workers(&env, 2, 10000));
    zf_client_t *c = zt_client(&env);
    uint64_t id = submit_pipe(c, "decode", ZFLEET_DEVICE_CPU, "slow@gpu,encode@cpu");
    int64_t until = zt_now_ms() + 10000;
    zf_event_t *e = NULL;
    for (;;) { /* until step 2 runs on the GPU worker */
        e = zf_client_get(c, id);
        cr_assert(e);
        if (e->step == 2 && e->status == ZFLEET_RUNNING)
            break;
        zf_event_destroy(&e);
        cr_assert_lt(zt_now_ms(), until, "step 2 did not start");
        zt_pause_ms(20);
    }
    zf_event_destroy(&e);
    zt_kill(gpu, SIGKILL);
    zt_worker(&env, 200, "--device", "gpu:1", "--fake-gpu", "--module", steps_py(), NULL);
    e = zf_client_wait(c, id, 30000);
    cr_assert(e && e->status == ZFLEET_SUCCEEDED, "%s", e ? e->text : zf_client_error(c));
    const char *want = "x+decode@cpu+slow@gpu+encode@cpu";
    cr_assert(e->output_len == strlen(want) && !memcmp(e->output, want, e->output_len), "%.*s",
              (int)e->output_len, (const char *)e->output);
    cr_assert_eq(e->step, 3);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

/* Each step may have its own run timeout and retries ("fn@dev;timeout=MS;retries=N"); a step
   without them keeps the submit's. Bad options are refused with the reason. */
Test(pipeline, steps_have_their_own_timeout_and_retries, .timeout = 90)
{
    zt_env_t env;
    zf_client_t *c = cpu_and_gpu(&env, NULL);
    /* flaky fails twice per job: two retries of that step see it through */
    uint64_t id =
        submit_pipe(c, "decode", ZFLEET_DEVICE_CPU, "flaky@gpu;retries=2;timeout=10000,encode@cpu");
    expect_result(c, id, ZFLEET_SUCCEEDED, "x+decode@cpu+flaky@gpu+encode@cpu");
    /* without: the submit's (no retries) */
    id = submit_pipe(c, "decode", ZFLEET_DEVICE_CPU, "flaky@gpu,encode@cpu");
    expect_result(c, id, ZFLEET_FAILED, NULL);
    /* the submit's retries apply to a step that names none */
    id = submit_with(c, "decode",
                     (zf_submit_opts_t){.device = ZFLEET_DEVICE_CPU,
                                        .retries = 2,
                                        .backoff_ms = 50,
                                        .then = "flaky@gpu,encode@cpu"});
    expect_result(c, id, ZFLEET_SUCCEEDED, "x+decode@cpu+flaky@gpu+encode@cpu");
    /* a step's timeout=0 lifts the submit's 300 ms for that step only */
    id = submit_with(c, "decode",
                     (zf_submit_opts_t){.device = ZFLEET_DEVICE_CPU,
                                        .timeout_ms = 300,
                                        .max_attempts = 1,
                                        .then = "slow@gpu;timeout=0"});
    expect_result(c, id, ZFLEET_SUCCEEDED, "x+decode@cpu+slow@gpu");
    /* a step's timeout ends that step's attempts (last: a worker whose Python handler
       overran its timeout leaves, as the handler cannot be stopped) */
    id = submit_with(c, "decode",
                     (zf_submit_opts_t){.device = ZFLEET_DEVICE_CPU,
                                        .max_attempts = 1,
                                        .then = "slow@gpu;timeout=300,encode@cpu"});
    zf_event_t *e = zf_client_wait(c, id, 30000);
    cr_assert(e && e->status == ZFLEET_TIMED_OUT, "%s", e ? zfleet_state_name(e->status) : "");
    cr_assert_eq(e->step, 2);
    zf_event_destroy(&e);
    static const char *const bad[][2] = {
        {"infer;timeout=abc", "timeout must be a number"},
        {"infer;timeout=", "timeout must be a number"},
        {"infer;retries=21", "retries must be 0 to 20"},
        {"infer@gpu;colour=red", "unknown pipeline step option"},
        {"infer;", "unknown pipeline step option"},
        {";retries=1", "empty"},
    };
    expect_refused(c, bad, sizeof bad / sizeof bad[0]);
    zf_client_destroy(&c);
}

/* A pipeline's progress spans its steps: each hand-on is pushed as (k - 1) / n with "step k
   of n: fn", and a step's own report p as (k - 1 + p) / n; it never goes back. */
Test(pipeline, progress_spans_the_steps, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = cpu_and_gpu(&env, NULL);
    uint64_t id = submit_pipe(c, "decode", ZFLEET_DEVICE_CPU, "prog@gpu,encode@cpu");
    bool step2 = false, half = false, step3 = false;
    double last = 0;
    for (;;) {
        zf_event_t *e = zf_client_next(c, 20000);
        cr_assert(e, "no result: %s", zf_client_error(c));
        if (e->type == ZF_EV_RESULT) {
            cr_assert_eq(e->status, ZFLEET_SUCCEEDED, "%s", e->text);
            zf_event_destroy(&e);
            break;
        }
        if (e->type == ZF_EV_PROGRESS && e->id == id) {
            cr_assert_geq(e->progress, last, "progress went back to %f from %f", e->progress, last);
            last = e->progress;
            step2 |=
                !strcmp(e->text, "step 2 of 3: prog") && e->progress > 0.33 && e->progress < 0.34;
            half |= !strcmp(e->text, "halfway") && e->progress > 0.49 && e->progress < 0.51;
            step3 |=
                !strcmp(e->text, "step 3 of 3: encode") && e->progress > 0.66 && e->progress < 0.67;
        }
        zf_event_destroy(&e);
    }
    cr_assert(step2 && half && step3, "hand-on to 2 %d, halfway %d, hand-on to 3 %d", step2, half,
              step3);
    zf_client_destroy(&c);
}

/* A step's options are journaled with the pipeline: after kill -9 of the broker between
   steps, step 2 still times out at its own timeout. */
Test(pipeline, step_options_survive_a_broker_kill9, .timeout = 90)
{
    zt_env_t env;
    zt_env_init(&env);
    char data[160];
    snprintf(data, sizeof data, "%s/data", env.dir);
    pid_t b = zt_broker(&env, 200, "--data", data, NULL);
    zt_worker(&env, 200, "--device", "cpu:0", "--module", steps_py(), NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    uint64_t id = submit_with(c, "decode",
                              (zf_submit_opts_t){.device = ZFLEET_DEVICE_CPU,
                                                 .max_attempts = 1,
                                                 .then = "slow@gpu;timeout=300"});
    int64_t until = zt_now_ms() + 10000;
    for (;;) {
        zf_event_t *e = zf_client_get(c, id);
        cr_assert(e);
        uint32_t step = e->step;
        zf_event_destroy(&e);
        if (step == 2)
            break;
        cr_assert_lt(zt_now_ms(), until, "step 1 did not finish");
        zt_pause_ms(50);
    }
    zt_pause_ms(300); /* (the STEP record's commit) */
    zf_client_destroy(&c);
    zt_kill(b, SIGKILL);
    zt_broker(&env, 200, "--data", data, NULL);
    zt_worker(&env, 200, "--device", "gpu:0", "--fake-gpu", "--module", steps_py(), NULL);
    c = zt_client(&env);
    zf_event_t *e = zf_client_wait(c, id, 30000);
    cr_assert(e && e->status == ZFLEET_TIMED_OUT, "%s: %s", e ? zfleet_state_name(e->status) : "",
              e ? e->text : zf_client_error(c));
    cr_assert_eq(e->step, 2);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

/* A journal written before steps had options (tests/data/journal-2026-12-pipe, by the broker
   of commit 2b6135b, killed with both pipelines waiting at step 2 for a GPU worker: "x"
   decode then infer@gpu then encode@cpu, and "y" decode then infer@gpu with a 60 s run
   timeout) replays: each resumes at step 2 with the submit's options and ends with every
   step's work in its output. */
Test(pipeline, journal_from_before_step_options_replays, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    char data[160], cmd[1600];
    snprintf(data, sizeof data, "%s/data", env.dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/data/journal-2026-12-pipe/journal %s/journal",
             data, tests_dir(), data);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    zt_broker(&env, 200, "--data", data, NULL);
    zf_client_t *c = zt_client(&env);
    const uint64_t x = 2579323016101511ull, y = 1063323107687690ull;
    zf_event_t *e = zf_client_get(c, x);
    cr_assert(e && e->status == ZFLEET_QUEUED && e->step == 2 && e->steps == 3, "%s",
              e ? zfleet_state_name(e->status) : zf_client_error(c));
    cr_assert_str_eq(e->function, "infer");
    zf_event_destroy(&e);
    zt_worker(&env, 200, "--device", "cpu:0", "--module", steps_py(), NULL);
    zt_worker(&env, 200, "--device", "gpu:0", "--fake-gpu", "--module", steps_py(), NULL);
    expect_result(c, x, ZFLEET_SUCCEEDED, "x+decode@cpu+infer@gpu+encode@cpu");
    expect_result(c, y, ZFLEET_SUCCEEDED, "y+decode@cpu+infer@gpu");
    zf_client_destroy(&c);
}
