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
    /* Each step's run timeout and handler-failure retries, applied when the job moves to it
       (broker.c: advance_step). False only for a pipeline replayed from a journal written
       before steps had options: every step then keeps the submit's. */
    bool opts;
    uint32_t timeout_ms[ZFB_PIPE_MAX];
    uint8_t retries[ZFB_PIPE_MAX];
} zfb_pipe_t;

/* The first step: the submit's function, device, timeout and retries. */
typedef struct {
    const char *fn;
    uint8_t dev;
    uint32_t timeout_ms;
    uint8_t retries;
} zfb_pipe_first_t;

/* Parses SUBMIT's `then` after the first step into *out. `then` is steps joined by ",",
   each "fn[@dev][;timeout=MS][;retries=N]" (dev cpu, gpu or any; left out: any); a step's
   timeout and retries default to the first step's. Returns NULL, or a static description
   of what is wrong (too many steps, an empty or too long name, not UTF-8, an unknown
   device, an unknown or out-of-range option). */
const char *zfb_pipe_parse(zf_str_t then, const zfb_pipe_first_t *first, zfb_pipe_t *out);

/* The job's progress over the whole pipeline when its current step reports `step` (0..1):
   (cur + step) / n. */
double zfb_pipe_progress(const zfb_pipe_t *p, double step);

#endif
