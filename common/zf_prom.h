/*  zf_prom — a writer of the Prometheus text exposition format (version 0.0.4).

    Shared by the broker's and the fleet's /metrics. A zf_prom_t is a growing text buffer;
    each metric family is one zf_prom_family (its # HELP and # TYPE lines) followed by its
    samples. Label values are user data (function names), so every one is escaped here
    (backslash, double quote, newline) and never by callers. Labels are given as a
    NULL-terminated list of name, value pairs.

    Out of memory while writing: the buffer is marked failed, later writes do nothing, and
    zf_prom_take returns NULL (the caller answers 500). Nothing here aborts.
*/
#ifndef ZF_PROM_H
#define ZF_PROM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zf_hist.h"

typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} zf_prom_t;

/* The media type of what this module writes, for Content-Type. */
#define ZF_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* An empty buffer (no allocation until the first write). */
void zf_prom_init(zf_prom_t *t);

/* Appends printf-formatted text (for bodies that are not metrics, e.g. "ok\n"). */
void zf_prom_printf(zf_prom_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "# HELP name help" and "# TYPE name type"; type is counter, gauge or histogram. help is
   escaped as the format asks (backslash and newline). */
void zf_prom_family(zf_prom_t *t, const char *name, const char *type, const char *help);

/* One sample line: name{labels} value. The labels: name, value, ..., NULL. */
void zf_prom_u64(zf_prom_t *t, const char *name, uint64_t v, ...) __attribute__((sentinel));
void zf_prom_f64(zf_prom_t *t, const char *name, double v, ...) __attribute__((sentinel));

/* A histogram's samples (name_bucket{...,le}, name_sum, name_count) in seconds from h
   (microseconds), with the half-octave bounds 2^k and 1.5 x 2^k us from 2^min_pow2 us up
   to 2^ZF_HIST_OCTAVES us, and +Inf. The labels as above, without le. */
void zf_prom_hist(zf_prom_t *t, const char *name, const zf_hist_t *h, unsigned min_pow2, ...)
    __attribute__((sentinel));

/* Hands over the text (NUL-terminated, *len bytes without the NUL; the caller frees it) and
   empties t. NULL if a write failed (t is then freed). */
char *zf_prom_take(zf_prom_t *t, size_t *len);

/* Frees the text; t is empty after. */
void zf_prom_free(zf_prom_t *t);

#endif
