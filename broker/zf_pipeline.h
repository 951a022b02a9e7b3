/*  zf_pipeline — a job's steps (issue 18): the function and device kind of each, and the one
    it is at. Step 0 is the submitted function; SUBMIT's `then` names the rest. When a step
    succeeds and another follows, the broker queues the job again for the next step's
    function and device with the output as its input (broker.c: advance_step), under the
    same id, and journals that (a STEP record); only the last step's result is published.

    Internal to the broker. A job owns its pipeline (job_t.pipe, freed with the job).
*/
#ifndef ZF_PIPELINE_H
#define ZF_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "../proto/zf_proto.h"

#define ZFB_PIPE_MAX (ZF_PIPE_STEPS + 1) /* steps in all, the first included */

typedef struct zfb_pipe {
    uint8_t cur, n; /* the step the job is at, of n (2..ZFB_PIPE_MAX) */
    uint8_t dev[ZFB_PIPE_MAX];
    char fn[ZFB_PIPE_MAX][ZF_FN_MAX + 1];
} zfb_pipe_t;

/* Parses SUBMIT's `then` ("fn@dev,fn@dev", dev cpu, gpu or any, "@dev" optional) after the
   first step (fn, dev) into *out. Returns NULL, or a static description of what is wrong
   (too many steps, an empty or too long name, not UTF-8, an unknown device). */
const char *zfb_pipe_parse(zf_str_t then, const char *fn, uint8_t dev, zfb_pipe_t *out);

#endif
