/*  Pipelines (issue 18): a job with further steps (`then`) runs each on its own device kind
    with the previous step's output as input, under one id; a failed step ends it with that
    step's error; a broker killed between steps resumes at the step that had not run; bad
    steps are refused. Steps: tests/py/pipe_steps.py (each appends "+NAME@KIND"). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

TestSuite(pipeline, .fini = zt_kill_all);

static const char *steps_py(void)
{
    static char p[1200];
    char here[512];
    snprintf(here, sizeof here, "%s", __FILE__);
    *strrchr(here, '/') = 0;
    snprintf(p, sizeof p, "%s%s%s/py/pipe_steps.py", here[0] == '/' ? "" : zt_build_dir(),
             here[0] == '/' ? "" : "/", here);
    return p;
}

static uint64_t submit_pipe(zf_client_t *c, const char *fn, int dev, const char *then)
{
    zf_submit_opts_t o = {.device = dev, .then = then};
    uint64_t id = 0;
    cr_assert_eq(zf_client_submit(c, fn, "x", 1, &o, &id), 0, "%s", zf_client_error(c));
    return id;
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
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        zf_submit_opts_t o = {.then = bad[i][0]};
        uint64_t x;
        cr_assert_eq(zf_client_submit(c, "decode", "x", 1, &o, &x), -1, "'%s'", bad[i][0]);
        cr_assert_eq(zf_client_brokercode(c), ZF_BROKER_BAD_ARGUMENT);
        cr_assert(strstr(zf_client_error(c), bad[i][1]), "'%s': %s", bad[i][0], zf_client_error(c));
    }
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
