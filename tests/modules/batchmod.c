/*  Test module: batched handlers (issue 17), driven by their inputs.

    bsize (max_batch 8, max_delay 50 ms; 30 ms per call): every job's output is
    "<batch size>|<its input>", except for inputs that say otherwise:
        fail...  this job fails ("bad input: fail..."), its batch-mates do not
        failall  the whole batch fails ("the batch failed")
        wait     the handler waits (up to 5 s) until this job is cancelled
        slow     on attempt 1, the call takes 1.5 s (time to kill the worker mid-batch)
        poison   the process dies (SIGKILL, 200 ms into the call) on every attempt
    blone (max_batch 8, max_delay 2 s): the same outputs, no sleep: a lone job's latency
    shows whether it waited the delay. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "zf_module.h"

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool input_is(const zf_job_t *job, const char *what, bool prefix)
{
    size_t n = strlen(what), len = zf_job_size(job);
    return prefix ? len >= n && !memcmp(zf_job_data(job), what, n)
                  : len == n && !memcmp(zf_job_data(job), what, n);
}

/* Waits until every "wait" job of the batch is cancelled, at most 5 s. */
static void wait_for_cancels(zf_job_t **jobs, size_t n)
{
    for (int t = 0; t < 500; t++) {
        bool pending = false;
        for (size_t i = 0; i < n; i++)
            pending |= input_is(jobs[i], "wait", false) && !zf_job_cancelled(jobs[i]);
        if (!pending)
            return;
        sleep_ms(10);
    }
}

static int outputs(zf_job_t **jobs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (input_is(jobs[i], "failall", false))
            return zf_job_fail(jobs[i], "the batch failed");
    }
    for (size_t i = 0; i < n; i++) {
        zf_job_t *job = jobs[i];
        if (input_is(job, "fail", true)) {
            zf_job_fail(job, "bad input: %.*s", (int)zf_job_size(job),
                        (const char *)zf_job_data(job));
            continue;
        }
        char head[24];
        int h = snprintf(head, sizeof head, "%zu|", n);
        char *out = zf_job_output_alloc(job, (size_t)h + zf_job_size(job));
        if (!out)
            return zf_job_fail(job, "out of memory");
        memcpy(out, head, (size_t)h);
        memcpy(out + h, zf_job_data(job), zf_job_size(job));
    }
    return 0;
}

static int run_bsize(void *state, zf_job_t **jobs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (input_is(jobs[i], "poison", false)) {
            sleep_ms(200); /* some work first, as a real crash: earlier results get out */
            raise(SIGKILL);
        }
    }
    bool slow = false;
    for (size_t i = 0; i < n; i++)
        slow |= input_is(jobs[i], "slow", false) && zf_job_attempt(jobs[i]) == 1;
    sleep_ms(slow ? 1500 : 30);
    wait_for_cancels(jobs, n);
    return outputs(jobs, n);
}

static int run_blone(void *state, zf_job_t **jobs, size_t n)
{
    return outputs(jobs, n);
}

static const zf_function_t functions[] = {
    {.name = "bsize", .run_batch = run_bsize, .max_batch = 8, .max_delay_us = 50000},
    {.name = "blone", .run_batch = run_blone, .max_batch = 8, .max_delay_us = 2000000},
    {.name = NULL},
};

static const zf_module_t module = {
    .abi = ZF_MODULE_ABI, .name = "batchmod", .functions = functions};

const zf_module_t *zf_module_entry(void);
const zf_module_t *zf_module_entry(void)
{
    return &module;
}
