/*  zf_gpu — the few CUDA runtime calls zfleet needs, behind one small interface.

    gpu_cuda.c implements it with the CUDA runtime when the toolkit was found at build time;
    gpu_none.c otherwise. At run time, no driver or no device means zero GPUs, never a crash.
*/
#ifndef ZF_GPU_H
#define ZF_GPU_H

#include <stddef.h>
#include <stdint.h>

/* Number of usable GPUs; 0 with the reason in why (may be NULL) when there are none. */
int zf_gpu_count(char *why, size_t whylen);
/* Name and total memory of device i. Returns 0, or -1. */
int zf_gpu_info(int i, char *name, size_t namelen, uint64_t *memory);
/* cudaSetDevice(i) on the calling thread. Returns 0, or -1 with the reason in why. */
int zf_gpu_select(int i, char *why, size_t whylen);
/* 1 when this build has CUDA support. */
int zf_gpu_built(void);

#endif
