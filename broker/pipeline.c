/*  zf_pipeline — parsing a job's steps. See zf_pipeline.h. */
#include "zf_pipeline.h"

#include <stdio.h>
#include <string.h>

/* A step's number option: decimal digits only, at most max. */
static bool parse_num(const char *p, size_t n, uint64_t max, uint64_t *out)
{
    if (n == 0 || n > 10)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return v <= max;
}

/* One ";key=value" option of step k ("timeout" ms, "retries"). */
static const char *parse_opt(const char *p, size_t n, zfb_pipe_t *out, int k)
{
    uint64_t v;
    if (n >= 8 && memcmp(p, "timeout=", 8) == 0) {
        if (!parse_num(p + 8, n - 8, UINT32_MAX, &v))
            return "a pipeline step's timeout must be a number of milliseconds";
        out->timeout_ms[k] = (uint32_t)v;
        return NULL;
    }
    if (n >= 8 && memcmp(p, "retries=", 8) == 0) {
        if (!parse_num(p + 8, n - 8, ZF_RETRIES_MAX, &v))
            return "a pipeline step's retries must be 0 to 20";
        out->retries[k] = (uint8_t)v;
        return NULL;
    }
    return "unknown pipeline step option (timeout=MS or retries=N)";
}

/* Step k's options: the text after its name and device, each option starting with ';'. */
static const char *parse_opts(const char *p, size_t n, zfb_pipe_t *out, int k)
{
    while (n) {
        const char *next = memchr(p + 1, ';', n - 1);
        size_t len = next ? (size_t)(next - p) : n;
        const char *why = parse_opt(p + 1, len - 1, out, k);
        if (why)
            return why;
        p += len;
        n -= len;
    }
    return NULL;
}

static const char *parse_step(const char *p, size_t n, zfb_pipe_t *out, int k)
{
    const char *semi = memchr(p, ';', n);
    size_t head = semi ? (size_t)(semi - p) : n; /* "fn[@dev]" */
    const char *why = semi ? parse_opts(semi, n - head, out, k) : NULL;
    if (why)
        return why;
    char *fn = out->fn[k];
    uint8_t *dev = &out->dev[k];
    n = head;
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
        int kind = zf_device_kind_parse(d);
        if (kind < 0)
            return "unknown device in a pipeline step (cpu, gpu or any)";
        *dev = (uint8_t)kind;
    }
    memcpy(fn, p, flen);
    fn[flen] = 0;
    return NULL;
}

const char *zfb_pipe_parse(zf_str_t then, const zfb_pipe_first_t *first, zfb_pipe_t *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->fn[0], sizeof out->fn[0], "%s", first->fn);
    out->dev[0] = first->dev;
    out->opts = true;
    for (int k = 0; k < ZFB_PIPE_MAX; k++) {
        out->timeout_ms[k] = first->timeout_ms;
        out->retries[k] = first->retries;
    }
    out->n = 1;
    size_t start = 0;
    for (size_t i = 0; i <= then.len; i++) {
        if (i < then.len && then.ptr[i] != ',')
            continue;
        if (out->n == ZFB_PIPE_MAX)
            return "more than 8 further pipeline steps";
        const char *why = parse_step(then.ptr + start, i - start, out, out->n);
        if (why)
            return why;
        out->n++;
        start = i + 1;
    }
    return NULL;
}

double zfb_pipe_progress(const zfb_pipe_t *p, double step)
{
    if (!(step >= 0)) /* (NaN too) */
        step = 0;
    if (step > 1)
        step = 1;
    return (p->cur + step) / p->n;
}
