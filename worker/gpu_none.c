/*  zf_gpu without CUDA: this build found no toolkit, so there are never any GPUs. */
#include <stdio.h>

#include "zf_gpu.h"

int zf_gpu_count(char *why, size_t whylen)
{
    if (why)
        snprintf(why, whylen, "this zfleet was built without CUDA");
    return 0;
}

int zf_gpu_info(int i, char *name, size_t namelen, uint64_t *memory)
{
    (void)i, (void)name, (void)namelen, (void)memory;
    return -1;
}

int zf_gpu_select(int i, char *why, size_t whylen)
{
    (void)i;
    snprintf(why, whylen, "this zfleet was built without CUDA");
    return -1;
}

int zf_gpu_built(void)
{
    return 0;
}
