/*  zf_gpu with the CUDA runtime (linked statically, so only the driver is needed at run
    time; without one, cudaGetDeviceCount fails and we report zero GPUs). */
#include <cuda_runtime_api.h>
#include <stdio.h>

#include "zf_gpu.h"

int zf_gpu_count(char *why, size_t whylen)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n <= 0) {
        if (!why)
            return 0;
        if (e == cudaErrorInsufficientDriver)
            snprintf(why, whylen,
                     "no usable NVIDIA driver on this machine, so zero GPUs "
                     "(CUDA: %s)",
                     cudaGetErrorString(e));
        else if (e == cudaErrorNoDevice || e == cudaSuccess)
            snprintf(why, whylen,
                     "CUDA finds no GPU (none on this machine, or none that "
                     "CUDA_VISIBLE_DEVICES lets it see)");
        else
            snprintf(why, whylen, "CUDA cannot be used, so zero GPUs: %s", cudaGetErrorString(e));
        return 0;
    }
    return n;
}

int zf_gpu_info(int i, char *name, size_t namelen, uint64_t *memory)
{
    struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess)
        return -1;
    snprintf(name, namelen, "%s", p.name);
    *memory = (uint64_t)p.totalGlobalMem;
    return 0;
}

int zf_gpu_select(int i, char *why, size_t whylen)
{
    cudaError_t e = cudaSetDevice(i);
    if (e != cudaSuccess) {
        snprintf(why, whylen, "cudaSetDevice(%d): %s", i, cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

int zf_gpu_built(void)
{
    return 1;
}
