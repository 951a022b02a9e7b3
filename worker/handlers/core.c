/*  The built-in "core" module: echo and spin. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../common/zf_util.h"
#include "../zf_registry.h"

/* Returns its input unchanged. */
static int run_echo(void *state, zf_job_t *job)
{
    (void)state;
    return zf_job_output_input(job);
}

/* Payload: a decimal number of milliseconds. Burns CPU (no sleep) for that long, reporting
   progress, then returns the payload. Stops early if cancelled. */
static int run_spin(void *state, zf_job_t *job)
{
    (void)state;
    char text[32];
    size_t n = zf_job_size(job);
    if (n == 0 || n >= sizeof text)
        return zf_job_fail(job, "spin: payload must be a number of milliseconds");
    memcpy(text, zf_job_data(job), n);
    text[n] = 0;
    uint64_t ms;
    if (zf_parse_u64(text, 24ull * 3600 * 1000, &ms) < 0)
        return zf_job_fail(job, "spin: '%s' is not a number of milliseconds", text);
    int64_t start = zf_now_us(), end = start + (int64_t)ms * 1000;
    volatile uint64_t sink = 0;
    for (int64_t now = start; now < end; now = zf_now_us()) {
        for (int i = 0; i < 2000; i++)
            sink += (uint64_t)i * 2654435761u;
        if (zf_job_cancelled(job))
            return zf_job_fail(job, "spin: cancelled");
        zf_job_progress(job, (double)(now - start) / (double)(end - start), NULL);
    }
    (void)sink;
    return zf_job_output(job, zf_job_data(job), n);
}

static const zf_function_t core_functions[] = {
    {.name = "echo", .run = run_echo},
    {.name = "spin", .run = run_spin},
    {.name = NULL},
};

const zf_module_t zf_builtin_core = {
    .abi = ZF_MODULE_ABI,
    .name = "core",
    .init = NULL,
    .fini = NULL,
    .functions = core_functions,
};
