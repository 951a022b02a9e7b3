/*  An example zfleet module: the template for your own.

    Build it as a shared object and load it into workers:
        cc -shared -fPIC -I/path/to/zfleet/worker example_module.c -o zf_example.so
        zfleet-worker --module ./zf_example.so

    init() runs once per worker process, after the device is bound: load your model here
    (this example builds a small lookup table to stand in for one). run() is called once
    per job on the worker's handler thread with that state; it must be re-entrant only
    with respect to the state it owns. Return 0 with an output, or zf_job_fail(...).
*/
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../zf_module.h"

typedef struct {
    char device[32];
    unsigned char upper[256]; /* the "model": a byte translation table */
    unsigned long jobs;
} model_t;

static void *example_init(const zf_device_t *dev, char *err, size_t errlen)
{
    model_t *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(m->device, sizeof m->device, "%s", dev->label);
    for (int i = 0; i < 256; i++)
        m->upper[i] = (unsigned char)toupper(i);
    return m;
}

static void example_fini(void *state)
{
    free(state);
}

/* upper: returns the input with ASCII letters upper-cased (zero-copy output buffer). */
static int run_upper(void *state, zf_job_t *job)
{
    model_t *m = state;
    size_t n = zf_job_size(job);
    const unsigned char *in = zf_job_data(job);
    unsigned char *out = zf_job_output_alloc(job, n);
    if (!out && n)
        return zf_job_fail(job, "upper: out of memory for %zu bytes", n);
    for (size_t i = 0; i < n; i++)
        out[i] = m->upper[in[i]];
    m->jobs++;
    return 0;
}

/* wordcount: returns {"words": N, "device": "..."} for a text input. */
static int run_wordcount(void *state, zf_job_t *job)
{
    model_t *m = state;
    const char *in = zf_job_data(job);
    size_t n = zf_job_size(job), words = 0;
    int inword = 0;
    for (size_t i = 0; i < n; i++) {
        int sp = isspace((unsigned char)in[i]);
        words += !sp && !inword;
        inword = !sp;
        if ((i & 0xfffff) == 0)
            zf_job_progress(job, (double)i / (double)n, "counting");
    }
    char out[96];
    int len = snprintf(out, sizeof out, "{\"words\": %zu, \"device\": \"%s\"}", words, m->device);
    m->jobs++;
    return zf_job_output(job, out, (size_t)len);
}

/* validate: succeeds with "ok" for a decimal number, fails with a clear message otherwise. */
static int run_validate(void *state, zf_job_t *job)
{
    (void)state;
    const char *in = zf_job_data(job);
    size_t n = zf_job_size(job);
    if (n == 0)
        return zf_job_fail(job, "validate: empty input");
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)in[i]))
            return zf_job_fail(job, "validate: '%.*s' is not a number", (int)(n > 64 ? 64 : n), in);
    return zf_job_output(job, "ok", 2);
}

static const zf_function_t functions[] = {
    {.name = "upper", .run = run_upper},
    {.name = "wordcount", .run = run_wordcount},
    {.name = "validate", .run = run_validate},
    {.name = NULL},
};

static const zf_module_t module = {
    .abi = ZF_MODULE_ABI,
    .name = "example",
    .init = example_init,
    .fini = example_fini,
    .functions = functions,
};

const zf_module_t *zf_module_entry(void);
const zf_module_t *zf_module_entry(void)
{
    return &module;
}
