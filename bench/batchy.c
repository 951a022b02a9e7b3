/*  The "batchy" benchmark module (issue 17, bench/batchy.sh): a stand-in for a GPU forward
    pass, whose cost is a fixed 2 ms per call plus 0.05 ms per job in it. It sleeps rather
    than spins: a GPU call leaves the CPU free, and so does this (and the benchmark does
    not measure how busy the CPU cores of the machine it shares are).
    Every job's output is its input (so `zfleet bench` checks each job's payload).
        batchy    batched: max_batch 32, max_delay 5 ms
        batchy1   the same cost, one job per call */
#include <time.h>

#include "zf_module.h"

#define CALL_US 2000
#define JOB_US 50

static void cost(size_t jobs)
{
    long us = CALL_US + JOB_US * (long)jobs;
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int run_batchy(void *state, zf_job_t **jobs, size_t n)
{
    cost(n);
    for (size_t i = 0; i < n; i++)
        if (zf_job_output_input(jobs[i]) < 0)
            zf_job_fail(jobs[i], "out of memory");
    return 0;
}

static int run_batchy1(void *state, zf_job_t *job)
{
    cost(1);
    return zf_job_output_input(job);
}

static const zf_function_t functions[] = {
    {.name = "batchy", .run_batch = run_batchy, .max_batch = 32, .max_delay_us = 5000},
    {.name = "batchy1", .run = run_batchy1},
    {.name = NULL},
};

static const zf_module_t module = {.abi = ZF_MODULE_ABI, .name = "batchy", .functions = functions};

const zf_module_t *zf_module_entry(void);
const zf_module_t *zf_module_entry(void)
{
    return &module;
}
