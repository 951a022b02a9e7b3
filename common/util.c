/*  zf_util — see zf_util.h. */
#include "zf_util.h"

#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static const char *log_prog = "zfleet";
static int log_max = ZF_LOG_INFO;

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

void zf_log_init(const char *prog)
{
    log_prog = prog;
    const char *lv = getenv("ZF_LOG");
    if (!lv)
        return;
    if (!strcmp(lv, "error"))
        log_max = ZF_LOG_ERROR;
    else if (!strcmp(lv, "warn"))
        log_max = ZF_LOG_WARN;
    else if (!strcmp(lv, "debug"))
        log_max = ZF_LOG_DEBUG;
}

void zf_log(zf_log_level_t level, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    if ((int)level > log_max)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s: %s\n", log_prog, names[level], line);
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
