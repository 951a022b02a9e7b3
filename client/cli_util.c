/*  zf_cli_util — see zf_cli_util.h. */
#include "zf_cli_util.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "zfleet.h"

int64_t zf_cli_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t zf_cli_now_ms(void)
{
    return zf_cli_now_us() / 1000;
}

int zf_cli_parse_u64(const char *s, uint64_t max, uint64_t *out)
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

int zf_cli_device_parse(const char *s)
{
    if (!strcmp(s, "any"))
        return ZFLEET_DEVICE_ANY;
    if (!strcmp(s, "cpu"))
        return ZFLEET_DEVICE_CPU;
    if (!strcmp(s, "gpu"))
        return ZFLEET_DEVICE_GPU;
    return -1;
}

uint64_t zf_cli_random64(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != sizeof v)
        v = (uint64_t)zf_cli_now_us() * 6364136223846793005ull + 1442695040888963407ull;
    return v;
}

void zf_cli_tune_malloc(void)
{
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
}
