/*  zf_pipeline — parsing a job's steps. See zf_pipeline.h. */
#include "zf_pipeline.h"

#include <stdio.h>
#include <string.h>

static const char *parse_step(const char *p, size_t n, char *fn, uint8_t *dev)
{
    const char *at = memchr(p, '@', n);
    size_t flen = at ? (size_t)(at - p) : n;
    if (flen == 0)
        return "a pipeline step's function name is empty";
    if (flen > ZF_FN_MAX)
        return "a pipeline step's function name is longer than 63 bytes";
    if (!zf_utf8_valid(p, flen))
        return "a pipeline step's function name is not valid UTF-8";
    *dev = ZF_DEV_ANY;
    if (at) {
        char d[8];
        size_t dlen = n - flen - 1;
        if (dlen == 0 || dlen >= sizeof d)
            return "unknown device in a pipeline step (cpu, gpu or any)";
        memcpy(d, at + 1, dlen);
        d[dlen] = 0;
        int k = zf_device_kind_parse(d);
        if (k < 0)
            return "unknown device in a pipeline step (cpu, gpu or any)";
        *dev = (uint8_t)k;
    }
    memcpy(fn, p, flen);
    fn[flen] = 0;
    return NULL;
}

const char *zfb_pipe_parse(zf_str_t then, const char *fn, uint8_t dev, zfb_pipe_t *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->fn[0], sizeof out->fn[0], "%s", fn);
    out->dev[0] = dev;
    out->n = 1;
    size_t start = 0;
    for (size_t i = 0; i <= then.len; i++) {
        if (i < then.len && then.ptr[i] != ',')
            continue;
        if (out->n == ZFB_PIPE_MAX)
            return "more than 8 further pipeline steps";
        const char *why =
            parse_step(then.ptr + start, i - start, out->fn[out->n], &out->dev[out->n]);
        if (why)
            return why;
        out->n++;
        start = i + 1;
    }
    return NULL;
}
