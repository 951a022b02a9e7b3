/*  zf_device — binding a worker process to one device.

    cpu:N pins the whole process to core N (sched_setaffinity, before any thread starts) and
    sets the usual thread-count variables to 1 so numeric libraries do not oversubscribe.
    gpu:N first narrows CUDA_VISIBLE_DEVICES to that one GPU, before anything in the
    process initialises CUDA (this module makes the process's first CUDA call), so that
    every framework in the process (PyTorch, TensorFlow, a module's own CUDA code) sees
    only its GPU, as device 0; then checks that it exists. The handler thread selects it
    (cudaSetDevice(0) is per thread). CPU workers get an empty CUDA_VISIBLE_DEVICES, so that
    a framework on a CPU worker makes no context on GPU 0. The GPU calls sit behind zf_gpu.h.

    Numbering: gpu:N counts GPUs as CUDA does for the process that was started, so under a
    user's own CUDA_VISIBLE_DEVICES (say "2,3") gpu:N is entry N of that list (gpu:1 is
    GPU 3), as cuda:N would be for any framework started the same way.

    Why setenv and not a re-exec with the variable set: CUDA reads CUDA_VISIBLE_DEVICES
    with getenv when it initialises (so does an embedded Python's os.environ, made at its
    start), and child processes inherit environ, so setting it in the process before the
    first CUDA call binds everything that matters. A re-exec would show it in
    /proc/PID/environ too, but costs a second start, needs /proc/self/exe (gone when the
    binary was replaced by an upgrade) and confuses debuggers and valgrind. The fleet sets
    it in each worker's starting environment (so there /proc/PID/environ shows it) and
    marks it done with ZF_GPU_BOUND_ENV, so the worker does not map it a second time.
*/
#ifndef ZF_DEVICE_H
#define ZF_DEVICE_H

#include <stddef.h>

#include "zf_module.h"

/* CUDA's variable, and the fleet's mark that it already narrowed it for a worker: the
   value is the worker's label ("gpu:1"); a worker with that label keeps the variable as it
   is, and removes the mark from its environment (a worker started by a handler maps its
   own gpu:N through the one-entry list it inherits). */
#define ZF_CUDA_ENV "CUDA_VISIBLE_DEVICES"
#define ZF_GPU_BOUND_ENV "ZFLEET_GPU_BOUND"
#define ZF_CUDA_ENTRY_MAX 128

typedef struct {
    zf_device_t dev; /* what modules see; strings point into the buffers below */
    char label[32];
    char name[128];
    int pinned;                           /* 1 when the process is pinned to dev.index */
    char cuda_visible[ZF_CUDA_ENTRY_MAX]; /* CUDA_VISIBLE_DEVICES as bound ("" on CPU) */
} zf_device_binding_t;

/* Parses "cpu:N", "gpu:N" or "cpu" (any core, not pinned). Returns 0, or -1. */
int zf_device_parse(const char *spec, zf_device_type_t *type, int *index);

/* Binds the calling process to the device of `spec`, CUDA_VISIBLE_DEVICES included (see
   above). Must run while the process has one thread, before any module loads. Returns 0,
   or -1 with one clear line in err (no such core, no GPU, no driver, no entry N in the
   user's CUDA_VISIBLE_DEVICES). `fake_gpu` (tests only) reports a GPU device without
   touching CUDA; the environment is set as for a real one. */
int zf_device_bind(zf_device_binding_t *b, const char *spec, int fake_gpu, char *err,
                   size_t errlen);

/* 1 when dev is a --fake-gpu device (tests only): a GPU label with no CUDA behind it, so
   GPU modules must fall back to their CPU path. */
int zf_device_is_fake(const zf_device_t *dev);

/* Selects the device on the calling thread (cudaSetDevice(dev->cuda_index) for GPUs).
   Returns 0, or -1. */
int zf_device_bind_thread(const zf_device_t *dev, char *err, size_t errlen);

/* How many GPUs this process's CUDA_VISIBLE_DEVICES names (CUDA's reading: entries up to
   the first that is neither a number nor a GPU-/MIG- identifier), or -1 when it is not set. */
int zf_device_cuda_listed(void);

/* The CUDA_VISIBLE_DEVICES value that makes GPU `index` (as this process numbers GPUs) the
   only visible one: entry `index` of this process's CUDA_VISIBLE_DEVICES when it is set,
   else the number itself. Written to out[len]. Returns 0, or -1 with one clear line in err
   when the user's list has no entry `index`. */
int zf_device_cuda_entry(int index, char *out, size_t len, char *err, size_t errlen);

/* The cores this process may run on, in ascending order. Returns how many were written. */
int zf_device_cpus(int *cores, int max);

#endif
