/*  zf_bench — placeholder until the benchmark lands (see issue 6). */
#include <stdio.h>

#include "zf_bench.h"

int zf_bench_main(int argc, char **argv, const char *ep, int json)
{
    (void)argc, (void)argv, (void)ep, (void)json;
    fprintf(stderr, "zfleet bench: not available in this build\n");
    return 2;
}
