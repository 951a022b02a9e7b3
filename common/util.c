/*  zf_util — see zf_util.h. */
#include "zf_util.h"

#include <assert.h>
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int64_t zf_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t zf_now_ms(void)
{
    return zf_now_us() / 1000;
}

int64_t zf_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int zf_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

/* The one wording for a bad option value; `range` is "from MIN to MAX". */
static void bad_option(const char *prog, const char *opt, const char *s, const char *range)
{
    if (prog)
        fprintf(stderr, "%s: --%s: expected a number %s, got '%s'\n", prog, opt, range, s ? s : "");
    else
        zf_log(ZF_LOG_ERROR, "--%s: expected a number %s, got '%s'", opt, range, s ? s : "");
}

int zf_parse_opt(const char *prog, const char *opt, const char *s, uint64_t min, uint64_t max,
                 uint64_t *out)
{
    assert(min <= max);
    uint64_t v;
    if (zf_parse_u64(s, max, &v) < 0 || v < min) {
        char range[64];
        snprintf(range, sizeof range, "from %llu to %llu", (unsigned long long)min,
                 (unsigned long long)max);
        bad_option(prog, opt, s, range);
        return -1;
    }
    *out = v;
    return 0;
}

int zf_parse_opt_int(const char *prog, const char *opt, const char *s, int64_t min, int64_t max,
                     int64_t *out)
{
    assert(min <= max);
    /* strtoll alone takes leading blanks and a '+'; a number is digits with an optional '-' */
    const char *digits = s && *s == '-' ? s + 1 : s;
    bool ok = digits && *digits >= '0' && *digits <= '9';
    long long v = 0;
    if (ok) {
        char *end;
        errno = 0;
        v = strtoll(s, &end, 10);
        ok = !errno && !*end && v >= min && v <= max;
    }
    if (!ok) {
        char range[64];
        snprintf(range, sizeof range, "from %lld to %lld", (long long)min, (long long)max);
        bad_option(prog, opt, s, range);
        return -1;
    }
    *out = v;
    return 0;
}

uint64_t zf_random64(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != sizeof v)
        v = (uint64_t)zf_now_us() * 6364136223846793005ull + 1442695040888963407ull;
    return v;
}

void zf_tune_malloc(void)
{
    /* setting either one also turns off glibc's dynamic threshold, which would otherwise
       move both as it sees frees, and trims the heap back after every burst */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
}
