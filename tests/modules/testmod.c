/*  A zfleet module for tests only: handlers that fail, crash, hang, ignore cancellation,
    report progress, or corrupt results on purpose, and that report the environment and
    device they run with. Never load it in production. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zf_module.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long payload_num(zf_job_t *job, long dflt)
{
    char buf[32];
    size_t n = zf_job_size(job);
    if (n == 0 || n >= sizeof buf)
        return dflt;
    memcpy(buf, zf_job_data(job), n);
    buf[n] = 0;
    return strtol(buf, NULL, 10);
}

/* fail: fails with the payload as its message */
static int run_fail(void *s, zf_job_t *job)
{
    (void)s;
    return zf_job_fail(job, "%.*s", (int)zf_job_size(job), (const char *)zf_job_data(job));
}

/* flaky: fails ("flaky attempt N") on its first N-1 deliveries, where N is the payload's
   number, then succeeds with "ok after N" */
static int run_flaky(void *s, zf_job_t *job)
{
    (void)s;
    uint32_t a = zf_job_attempt(job);
    if ((long)a < payload_num(job, 1))
        return zf_job_fail(job, "flaky attempt %u", a);
    char out[32];
    int n = snprintf(out, sizeof out, "ok after %u", a);
    return zf_job_output(job, out, (size_t)n);
}

/* permanent: fails permanently with the payload as its message (never to be retried) */
static int run_permanent(void *s, zf_job_t *job)
{
    (void)s;
    return zf_job_fail_permanent(job, "%.*s", (int)zf_job_size(job),
                                 (const char *)zf_job_data(job));
}

/* abort: kills its worker process, every time */
static int run_abort(void *s, zf_job_t *job)
{
    (void)s, (void)job;
    abort();
}

/* hang: burns CPU for payload ms (default: an hour), ignoring cancellation */
static int run_hang(void *s, zf_job_t *job)
{
    (void)s;
    int64_t end = now_ms() + payload_num(job, 3600 * 1000);
    volatile uint64_t sink = 0;
    while (now_ms() < end)
        sink++;
    return zf_job_output(job, "woke", 4);
}

/* coop: burns CPU for payload ms, stopping as soon as it is cancelled */
static int run_coop(void *s, zf_job_t *job)
{
    (void)s;
    int64_t end = now_ms() + payload_num(job, 3600 * 1000);
    while (now_ms() < end)
        if (zf_job_cancelled(job))
            return zf_job_fail(job, "coop: stopped on cancel");
    return zf_job_output(job, "done", 4);
}

/* mark: creates the file named by the payload as it starts (a test sees the handler run
   without asking the broker), then burns CPU for 3 s, stopping on cancel */
static int run_mark(void *s, zf_job_t *job)
{
    (void)s;
    char path[512];
    size_t n = zf_job_size(job);
    if (n == 0 || n >= sizeof path)
        return zf_job_fail(job, "mark: expected a file path");
    memcpy(path, zf_job_data(job), n);
    path[n] = 0;
    FILE *f = fopen(path, "w");
    if (!f || fclose(f) != 0)
        return zf_job_fail(job, "mark: cannot create the file");
    int64_t end = now_ms() + 3000;
    while (now_ms() < end)
        if (zf_job_cancelled(job))
            return zf_job_fail(job, "mark: stopped on cancel");
    return zf_job_output(job, "marked", 6);
}

/* progress: reports 4 steps (payload ms apart, default 100) then returns "done" */
static int run_progress(void *s, zf_job_t *job)
{
    (void)s;
    long step = payload_num(job, 100);
    for (int i = 1; i <= 4; i++) {
        int64_t end = now_ms() + step;
        while (now_ms() < end)
            ;
        char text[32];
        snprintf(text, sizeof text, "step %d of 4", i);
        zf_job_progress(job, i / 4.0, text);
    }
    return zf_job_output(job, "done", 4);
}

/* corrupt: echo, except every Nth result (N = $ZF_TEST_CORRUPT_EVERY, default 100) has
   its first byte flipped */
static int run_corrupt(void *s, zf_job_t *job)
{
    (void)s;
    static unsigned long count;
    const char *env = getenv("ZF_TEST_CORRUPT_EVERY");
    unsigned long every = env ? strtoul(env, NULL, 10) : 100;
    size_t n = zf_job_size(job);
    unsigned char *out = zf_job_output_alloc(job, n);
    if (!out && n)
        return zf_job_fail(job, "out of memory");
    memcpy(out, zf_job_data(job), n);
    if (n && every && ++count % every == 0)
        out[0] ^= 0xff;
    return 0;
}

/* env: the handler's view of the environment variable named by the payload: "set:VALUE"
   or "unset" (what a framework in this process would read) */
static int run_env(void *s, zf_job_t *job)
{
    (void)s;
    char name[128];
    size_t n = zf_job_size(job);
    if (n == 0 || n >= sizeof name)
        return zf_job_fail(job, "env: expected a variable name");
    memcpy(name, zf_job_data(job), n);
    name[n] = 0;
    const char *v = getenv(name);
    char out[1024];
    int len = v ? snprintf(out, sizeof out, "set:%s", v) : snprintf(out, sizeof out, "unset");
    return zf_job_output(job, out, (size_t)len < sizeof out ? (size_t)len : sizeof out - 1);
}

/* device: the zf_device_t the handler was given, "index=N cuda_index=M label=L" */
static int run_device(void *s, zf_job_t *job)
{
    (void)s;
    const zf_device_t *d = zf_job_device(job);
    char out[128];
    int len = snprintf(out, sizeof out, "index=%d cuda_index=%d label=%s", d->index, d->cuda_index,
                       d->label);
    return zf_job_output(job, out, (size_t)len < sizeof out ? (size_t)len : sizeof out - 1);
}

static const zf_function_t functions[] = {
    {.name = "fail", .run = run_fail},         {.name = "abort", .run = run_abort},
    {.name = "hang", .run = run_hang},         {.name = "coop", .run = run_coop},
    {.name = "progress", .run = run_progress}, {.name = "corrupt", .run = run_corrupt},
    {.name = "env", .run = run_env},           {.name = "device", .run = run_device},
    {.name = "flaky", .run = run_flaky},       {.name = "permanent", .run = run_permanent},
    {.name = "mark", .run = run_mark},         {.name = NULL},
};

static const zf_module_t module = {.abi = ZF_MODULE_ABI, .name = "testmod", .functions = functions};

const zf_module_t *zf_module_entry(void);
const zf_module_t *zf_module_entry(void)
{
    return &module;
}
