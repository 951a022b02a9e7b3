/*  zf_prom — see zf_prom.h. */
#include "zf_prom.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void zf_prom_init(zf_prom_t *t)
{
    *t = (zf_prom_t){0};
}

static bool reserve(zf_prom_t *t, size_t more)
{
    if (t->failed)
        return false;
    if (t->len + more + 1 <= t->cap)
        return true;
    size_t cap = t->cap ? t->cap : 4096;
    while (cap < t->len + more + 1)
        cap *= 2;
    char *p = realloc(t->p, cap);
    if (!p) {
        t->failed = true;
        return false;
    }
    t->p = p;
    t->cap = cap;
    return true;
}

static void vappend(zf_prom_t *t, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    if (n >= 0 && reserve(t, (size_t)n)) {
        vsnprintf(t->p + t->len, t->cap - t->len, fmt, again);
        t->len += (size_t)n;
    }
    va_end(again);
}

void zf_prom_printf(zf_prom_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vappend(t, fmt, ap);
    va_end(ap);
}

static void put_char(zf_prom_t *t, char c)
{
    if (reserve(t, 1)) {
        t->p[t->len++] = c;
        t->p[t->len] = 0;
    }
}

static void put_str(zf_prom_t *t, const char *s)
{
    size_t n = strlen(s);
    if (reserve(t, n)) {
        memcpy(t->p + t->len, s, n + 1);
        t->len += n;
    }
}

/* The format's escapes: in HELP text backslash and newline, in label values also the
   double quote. Everything else (any UTF-8) goes as it is. */
static void put_escaped(zf_prom_t *t, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            put_str(t, "\\\\");
        else if (*s == '\n')
            put_str(t, "\\n");
        else if (*s == '"' && quote)
            put_str(t, "\\\"");
        else
            put_char(t, *s);
    }
}

void zf_prom_family(zf_prom_t *t, const char *name, const char *type, const char *help)
{
    zf_prom_printf(t, "# HELP %s ", name);
    put_escaped(t, help, false);
    zf_prom_printf(t, "\n# TYPE %s %s\n", name, type);
}

/* name{k="v",...} with the pairs of ap, plus one more pair (extra_k, extra_v) if given. */
static void put_series(zf_prom_t *t, const char *name, const char *suffix, va_list ap,
                       const char *extra_k, const char *extra_v)
{
    put_str(t, name);
    put_str(t, suffix);
    const char *k = va_arg(ap, const char *);
    if (!k && !extra_k)
        return;
    put_char(t, '{');
    bool first = true;
    for (; k; k = va_arg(ap, const char *)) {
        const char *v = va_arg(ap, const char *);
        zf_prom_printf(t, "%s%s=\"", first ? "" : ",", k);
        put_escaped(t, v, true);
        put_char(t, '"');
        first = false;
    }
    if (extra_k)
        zf_prom_printf(t, "%s%s=\"%s\"", first ? "" : ",", extra_k, extra_v);
    put_char(t, '}');
}

void zf_prom_u64(zf_prom_t *t, const char *name, uint64_t v, ...)
{
    va_list ap;
    va_start(ap, v);
    put_series(t, name, "", ap, NULL, NULL);
    va_end(ap);
    zf_prom_printf(t, " %llu\n", (unsigned long long)v);
}

void zf_prom_f64(zf_prom_t *t, const char *name, double v, ...)
{
    va_list ap;
    va_start(ap, v);
    put_series(t, name, "", ap, NULL, NULL);
    va_end(ap);
    zf_prom_printf(t, " %.15g\n", v);
}

void zf_prom_hist(zf_prom_t *t, const char *name, const zf_hist_t *h, unsigned min_pow2, ...)
{
    assert(min_pow2 <= ZF_HIST_OCTAVES);
    va_list ap;
    char le[32];
    uint64_t cum = 0, from = 1ull << min_pow2;
    /* every second fine bound (2^k and 1.5 x 2^k us): half-octave buckets, so that
       histogram_quantile lands within about 20 % at a fraction of the lines */
    for (unsigned i = 0; i + 1 < ZF_HIST_BUCKETS; i++) {
        cum += h->b[i];
        uint64_t us = zf_hist_upper(i);
        if (i % 2 == 0 || us < from)
            continue;
        snprintf(le, sizeof le, "%llu.%06llu", (unsigned long long)(us / 1000000),
                 (unsigned long long)(us % 1000000));
        va_start(ap, min_pow2);
        put_series(t, name, "_bucket", ap, "le", le);
        va_end(ap);
        zf_prom_printf(t, " %llu\n", (unsigned long long)cum);
    }
    va_start(ap, min_pow2);
    put_series(t, name, "_bucket", ap, "le", "+Inf");
    va_end(ap);
    zf_prom_printf(t, " %llu\n", (unsigned long long)h->count);
    va_start(ap, min_pow2);
    put_series(t, name, "_sum", ap, NULL, NULL);
    va_end(ap);
    zf_prom_printf(t, " %llu.%06llu\n", (unsigned long long)(h->sum_us / 1000000),
                   (unsigned long long)(h->sum_us % 1000000));
    va_start(ap, min_pow2);
    put_series(t, name, "_count", ap, NULL, NULL);
    va_end(ap);
    zf_prom_printf(t, " %llu\n", (unsigned long long)h->count);
}

char *zf_prom_take(zf_prom_t *t, size_t *len)
{
    if (t->failed || !reserve(t, 0)) {
        zf_prom_free(t);
        return NULL;
    }
    char *p = t->p;
    *len = t->len;
    *t = (zf_prom_t){0};
    return p;
}

void zf_prom_free(zf_prom_t *t)
{
    free(t->p);
    *t = (zf_prom_t){0};
}
