/*  Test module: a batched function whose max_batch is over the limit (256): the worker
    refuses the module at load (tests/test_batch.c). */
#include "zf_module.h"

static int run_big(void *state, zf_job_t **jobs, size_t n)
{
    return 0;
}

static const zf_function_t functions[] = {
    {.name = "big", .run_batch = run_big, .max_batch = 300, .max_delay_us = 1000},
    {.name = NULL},
};

static const zf_module_t module = {
    .abi = ZF_MODULE_ABI, .name = "batchbad", .functions = functions};

const zf_module_t *zf_module_entry(void);
const zf_module_t *zf_module_entry(void)
{
    return &module;
}
