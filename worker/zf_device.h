/*  zf_device — binding a worker process to one device.

    cpu:N pins the whole process to core N (sched_setaffinity, before any thread starts) and
    sets the usual thread-count variables to 1 so numeric libraries do not oversubscribe.
    gpu:N checks that CUDA device N exists; the handler thread then selects it
    (cudaSetDevice is per thread). The GPU calls sit behind zf_gpu.h.
*/
#ifndef ZF_DEVICE_H
#define ZF_DEVICE_H

#include <stddef.h>

#include "zf_module.h"

typedef struct {
    zf_device_t dev;        /* what modules see; strings point into the buffers below */
    char label[32];
    char name[128];
    int pinned;             /* 1 when the process is pinned to dev.index */
} zf_device_binding_t;

/* Parses "cpu:N", "gpu:N" or "cpu" (any core, not pinned). Returns 0, or -1. */
int zf_device_parse(const char *spec, zf_device_type_t *type, int *index);

/* Binds the calling process to the device of `spec`. Returns 0, or -1 with one clear line
   in err (no such core, no GPU, no driver). `fake_gpu` (tests only) reports a GPU device
   without touching CUDA. */
int zf_device_bind(zf_device_binding_t *b, const char *spec, int fake_gpu, char *err,
                   size_t errlen);

/* 1 when dev is a --fake-gpu device (tests only): a GPU label with no CUDA behind it, so
   GPU modules must fall back to their CPU path. */
int zf_device_is_fake(const zf_device_t *dev);

/* Selects the device on the calling thread (cudaSetDevice for GPUs). Returns 0, or -1. */
int zf_device_bind_thread(const zf_device_t *dev, char *err, size_t errlen);

/* The cores this process may run on, in ascending order. Returns how many were written. */
int zf_device_cpus(int *cores, int max);

#endif
