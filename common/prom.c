/*  zf_prom — see zf_prom.h. A scrape is hundreds of lines (two histograms per function), so
    the sample lines are built with plain copies and a hand-written integer formatter, never
    printf: a scrape every 10 ms must stay a small part of the loop's time (bench/metrics). */
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
    size_t cap = t->cap ? t->cap : 16384;
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

static void put_mem(zf_prom_t *t, const char *s, size_t n)
{
    if (reserve(t, n)) {
        memcpy(t->p + t->len, s, n);
        t->len += n;
        t->p[t->len] = 0;
    }
}

static void put_str(zf_prom_t *t, const char *s)
{
    put_mem(t, s, strlen(s));
}

static void put_char(zf_prom_t *t, char c)
{
    put_mem(t, &c, 1);
}

static void put_u64(zf_prom_t *t, uint64_t v)
{
    char buf[24];
    int i = sizeof buf;
    do
        buf[--i] = (char)('0' + v % 10);
    while (v /= 10);
    put_mem(t, buf + i, sizeof buf - (size_t)i);
}

/* us microseconds as seconds with exactly six decimals: exact, the same in every scrape */
static void put_seconds(zf_prom_t *t, uint64_t us)
{
    char frac[8];
    put_u64(t, us / 1000000);
    uint64_t f = us % 1000000;
    frac[0] = '.';
    for (int i = 6; i >= 1; i--, f /= 10)
        frac[i] = (char)('0' + f % 10);
    put_mem(t, frac, 7);
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

/* The format's escapes: in HELP text backslash and newline, in label values also the
   double quote. Everything else (any UTF-8) goes as it is. */
static void put_escaped(zf_prom_t *t, const char *s, bool quote)
{
    if (!strpbrk(s, quote ? "\\\n\"" : "\\\n")) {
        put_str(t, s);
        return;
    }
    for (; *s; s++) {
        if (*s == '\\')
            put_mem(t, "\\\\", 2);
        else if (*s == '\n')
            put_mem(t, "\\n", 2);
        else if (*s == '"' && quote)
            put_mem(t, "\\\"", 2);
        else
            put_char(t, *s);
    }
}

void zf_prom_family(zf_prom_t *t, const char *name, const char *type, const char *help)
{
    put_str(t, "# HELP ");
    put_str(t, name);
    put_char(t, ' ');
    put_escaped(t, help, false);
    put_str(t, "\n# TYPE ");
    put_str(t, name);
    put_char(t, ' ');
    put_str(t, type);
    put_char(t, '\n');
}

/* The label pairs of ap as k="v",k="v" (escaped), no braces; returns whether there was any. */
static bool put_labels(zf_prom_t *t, va_list ap)
{
    bool any = false;
    for (const char *k = va_arg(ap, const char *); k; k = va_arg(ap, const char *)) {
        const char *v = va_arg(ap, const char *);
        if (any)
            put_char(t, ',');
        put_str(t, k);
        put_mem(t, "=\"", 2);
        put_escaped(t, v, true);
        put_char(t, '"');
        any = true;
    }
    return any;
}

/* name{labels} with the pairs of ap. */
static void put_series(zf_prom_t *t, const char *name, va_list ap)
{
    put_str(t, name);
    size_t at = t->len;
    put_char(t, '{');
    if (put_labels(t, ap))
        put_char(t, '}');
    else if (!t->failed)
        t->p[t->len = at] = 0; /* no labels: no braces */
}

void zf_prom_u64(zf_prom_t *t, const char *name, uint64_t v, ...)
{
    va_list ap;
    va_start(ap, v);
    put_series(t, name, ap);
    va_end(ap);
    put_char(t, ' ');
    put_u64(t, v);
    put_char(t, '\n');
}

void zf_prom_f64(zf_prom_t *t, const char *name, double v, ...)
{
    va_list ap;
    va_start(ap, v);
    put_series(t, name, ap);
    va_end(ap);
    zf_prom_printf(t, " %.15g\n", v);
}

void zf_prom_hist(zf_prom_t *t, const char *name, const zf_hist_t *h, unsigned min_pow2, ...)
{
    assert(min_pow2 <= ZF_HIST_OCTAVES);
    /* the labels once, escaped: every bucket line repeats them */
    zf_prom_t lab;
    zf_prom_init(&lab);
    va_list ap;
    va_start(ap, min_pow2);
    bool any = put_labels(&lab, ap);
    va_end(ap);
    if (lab.failed) {
        t->failed = true;
        return;
    }
    const char *labels = any ? lab.p : "";
    size_t nlab = any ? lab.len : 0;
    uint64_t cum = 0, from = 1ull << min_pow2;
    /* every second fine bound (2^k and 1.5 x 2^k us): half-octave buckets, so that
       histogram_quantile lands within about 20 % at a fraction of the lines */
    for (unsigned i = 0; i + 1 < ZF_HIST_BUCKETS; i++) {
        cum += h->b[i];
        uint64_t us = zf_hist_upper(i);
        if (i % 2 == 0 || us < from)
            continue;
        put_str(t, name);
        put_mem(t, "_bucket{", 8);
        put_mem(t, labels, nlab);
        put_str(t, any ? ",le=\"" : "le=\"");
        put_seconds(t, us);
        put_mem(t, "\"} ", 3);
        put_u64(t, cum);
        put_char(t, '\n');
    }
    put_str(t, name);
    put_mem(t, "_bucket{", 8);
    put_mem(t, labels, nlab);
    put_str(t, any ? ",le=\"+Inf\"} " : "le=\"+Inf\"} ");
    put_u64(t, h->count);
    put_char(t, '\n');
    const char *tail[2] = {"_sum", "_count"};
    for (int k = 0; k < 2; k++) {
        put_str(t, name);
        put_str(t, tail[k]);
        if (any) {
            put_char(t, '{');
            put_mem(t, labels, nlab);
            put_char(t, '}');
        }
        put_char(t, ' ');
        if (k == 0)
            put_seconds(t, h->sum_us);
        else
            put_u64(t, h->count);
        put_char(t, '\n');
    }
    zf_prom_free(&lab);
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
