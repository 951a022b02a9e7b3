/*  A zfleet module for tests only, whose code crashes the worker on purpose: its init()
    crashes as $ZF_TEST_CRASH_INIT says ("segv": a real invalid write, "abort"), and its
    function "segv" makes a real invalid write in run(). Never load it in production. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "zf_module.h"

/* volatile: the compiler cannot see that it is NULL, so the write is a real fault (not a
   trap instruction it would put in place of a known NULL dereference). Not instrumented by
   UBSan, which would report the NULL store and exit before the fault happens. */
static int *volatile nowhere;

__attribute__((no_sanitize("undefined"))) static void crash(const char *how)
{
    if (!strcmp(how, "segv"))
        *nowhere = 1;
    else if (!strcmp(how, "abort"))
        abort();
}

static void *init(const zf_device_t *dev, char *err, size_t errlen)
{
    (void)dev, (void)err, (void)errlen;
    const char *how = getenv("ZF_TEST_CRASH_INIT");
    if (how)
        crash(how);
    static int state;
    return &state;
}

static int run_segv(void *s, zf_job_t *job)
{
    (void)s, (void)job;
    crash("segv");
    return 0;
}

static const zf_function_t functions[] = {{.name = "segv", .run = run_segv}, {.name = NULL}};

static const zf_module_t module = {
    .abi = ZF_MODULE_ABI, .name = "crashmod", .init = init, .functions = functions};

const zf_module_t *zf_module_entry(void);
const zf_module_t *zf_module_entry(void)
{
    return &module;
}
