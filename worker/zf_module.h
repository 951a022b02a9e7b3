/*  zf_module — the handler API: how users add functions to zfleet workers.

    A module is a shared object (.so) loaded once per worker process. It exports one symbol,

        const zf_module_t *zf_module_entry(void);

    returning a static description. The worker calls, in order:
        state = init(device, err, errlen)   once, after the device is bound (a model loads here)
        run(state, job)                      once per job, always on the same handler thread
        fini(state)                          once, when the worker stops cleanly

    run() returns 0 for success (output set with zf_job_output / zf_job_output_alloc, or
    empty) or -1 for failure (message set with zf_job_fail, or a generic one). A failure
    ends the job as `failed` with that message; the worker keeps serving. A handler that
    crashes the process or runs past its timeout costs the worker process (it is restarted).

    Ownership: the job, its input and its output buffer belong to the worker; pointers from
    zf_job_* are valid until run() returns. The state is the module's own.
*/
#ifndef ZF_MODULE_H
#define ZF_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 2: zf_function_t grew run_batch, max_batch and max_delay_us (its size, so the stride of a
   module's function array, changed: an ABI 1 module is refused rather than misread). */
#define ZF_MODULE_ABI 2

typedef enum { ZF_DEVICE_CPU = 1, ZF_DEVICE_GPU = 2 } zf_device_type_t;

/* The device a worker is bound to.

   A GPU worker's process sees only its own GPU: CUDA_VISIBLE_DEVICES names that one GPU
   before anything in the process initialises CUDA (see docs/DEVICES.md), so that CUDA,
   PyTorch, TensorFlow and any other framework find exactly one device, as their device 0,
   and make no context on another GPU. So there are two numbers:
   - index: the GPU's number as the fleet and the operator name it (gpu:N, the label, the
     logs, `zfleet workers`): what --device said. Not a CUDA device number: never pass it
     to cudaSetDevice.
   - cuda_index: the device number to use with CUDA inside this process: 0 for every GPU
     worker (a framework calls it cuda:0). cudaSetDevice(cuda_index) has already been
     called on the handler thread when init and run are called; a module that starts its
     own threads calls it on each of them (the current device is per thread).
   A CPU worker has index = its core (-1 when not pinned), cuda_index = -1, and no GPU
   visible at all (CUDA_VISIBLE_DEVICES is empty).

   The rule for modules: every CUDA call that takes a device number gets cuda_index (or
   the module makes none: the device is already current on the handler thread). index is
   for logs and for telling GPUs apart, never for CUDA.

   Why ZF_MODULE_ABI stayed 1 when cuda_index came: the struct is made by the worker and
   only read by modules, through a const pointer; cuda_index was appended after every
   field a module built earlier knows, whose offsets and meanings did not change (type 0,
   index 4, label 8, name 16, memory 24 on LP64; cuda_index 32). Such a module reads
   exactly what it read before, never reads past its own sizeof, and no zf_device_t goes
   from a module to the worker. What did change is what CUDA accepts in the process
   (CUDA_VISIBLE_DEVICES leaves one GPU, device 0): a module that passed index to
   cudaSetDevice still works on gpu:0, and on gpu:1 and up the call fails with CUDA's
   "invalid device ordinal" (it cannot select another GPU: the process sees no other), so
   a module that checks it fails its init (the worker exits with the message, and the
   fleet's crash limit gives the device up) or its job, and none computes on a wrong GPU.
   Bumping the ABI would refuse every older module, the many that never call
   cudaSetDevice and run correctly, to catch that one mistake, which CUDA reports anyway.
   A change that moves, resizes or redefines a field here, or any change to a struct the
   worker reads from a module (zf_module_t, zf_function_t), bumps ZF_MODULE_ABI
   (zf_registry_add refuses a mismatch: "module ABI N, this worker needs M"). */
typedef struct {
    zf_device_type_t type;
    int index;         /* core number, or the GPU's number in gpu:N (not for CUDA) */
    const char *label; /* "cpu:3", "gpu:0" */
    const char *name;  /* "NVIDIA H100 80GB HBM3", or the CPU model */
    uint64_t memory;   /* bytes of device memory (GPU) or of the machine (CPU) */
    int cuda_index;    /* the CUDA device number in this process: 0 on GPU, -1 on CPU;
                          appended after ABI 1 (see above): keep it last */
} zf_device_t;

typedef struct zf_job zf_job_t;

typedef int (*zf_run_fn)(void *state, zf_job_t *job);

/* A batched handler: n (1..max_batch) jobs of the same function in one call, in the order
   they reached the worker. Each job ends on its own, as after run(): its output is what
   zf_job_output* set on it; it fails when zf_job_fail was called on it (the others still
   succeed). Returning -1 fails every job of the batch that was not failed on its own, with
   the message of the first job that has one, or a generic one. A job cancelled while in the
   batch ends `cancelled` whatever the handler did with it (its output is dropped); the
   handler may check zf_job_cancelled(jobs[i]) and skip it. Progress is per job. */
typedef int (*zf_run_batch_fn)(void *state, zf_job_t **jobs, size_t n);

/* A function is single (run set, run_batch NULL) or batched (run_batch set; run may also be
   set and is then unused). The worker forms a batch from the jobs of the function it holds:
   it calls run_batch as soon as it has max_batch of them, or when the oldest has waited
   max_delay_us, whichever comes first (so a lone job waits at most max_delay_us); a job
   that comes after a quiet spell (no job of the function in the max_delay_us before it)
   waits only 200 µs for mates, so at idle a lone job runs at once. A worker
   serving a batched function asks the broker for at least max_batch jobs at once (its
   credits are raised to the largest max_batch it serves), so batches can form. */
typedef struct {
    const char *name; /* function name clients submit to, at most 63 bytes */
    zf_run_fn run;
    zf_run_batch_fn run_batch; /* NULL: not batched */
    uint32_t max_batch;        /* batched: most jobs per call, 1..256 (0 counts as 1) */
    uint32_t max_delay_us;     /* batched: longest a job waits for batch-mates */
} zf_function_t;

typedef struct {
    uint32_t abi;     /* ZF_MODULE_ABI */
    const char *name; /* module name, for logs */
    /* Returns the module's state, or NULL with a reason written into err when the module
       cannot run on this device (the worker then exits with that reason). A module that
       keeps no state returns any non-NULL pointer. init may be NULL: the state is then
       NULL and run is still called. fini may be NULL. */
    void *(*init)(const zf_device_t *device, char *err, size_t errlen);
    void (*fini)(void *state);
    const zf_function_t *functions; /* terminated by one whose name is NULL */
} zf_module_t;

/* The job's input. */
const void *zf_job_data(const zf_job_t *job);
size_t zf_job_size(const zf_job_t *job);
const char *zf_job_function(const zf_job_t *job);
uint64_t zf_job_id(const zf_job_t *job);
uint32_t zf_job_attempt(const zf_job_t *job);
const zf_device_t *zf_job_device(const zf_job_t *job);

/* Sets the output to a copy of data. Returns 0, or -1 when memory runs out. */
int zf_job_output(zf_job_t *job, const void *data, size_t len);
/* Returns a buffer of len bytes that becomes the output as it is, without a copy; or NULL
   when memory runs out. A later call replaces it. */
void *zf_job_output_alloc(zf_job_t *job, size_t len);
/* Sets the output to the job's input as it is, without copying it (an echo, a filter that
   found nothing to change). Returns 0, or -1. */
int zf_job_output_input(zf_job_t *job);
/* Records the failure message (printf-style, truncated to 1 KiB) and returns -1, so a
   handler can `return zf_job_fail(job, "bad input: %s", why);`. */
int zf_job_fail(zf_job_t *job, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same, and the failure is permanent (bad input): the broker does not retry the job
   even if it was submitted with retries (PROTOCOL.md §4.5). Returns -1. */
int zf_job_fail_permanent(zf_job_t *job, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Reports progress (fraction in [0, 1], short text or NULL) to the submitting client.
   Cheap to call often: reports are coalesced to at most one per 50 ms. */
void zf_job_progress(zf_job_t *job, double fraction, const char *text);
/* True once the job was cancelled: the handler should stop and return soon (its result is
   discarded). After the grace period the worker process is ended. */
bool zf_job_cancelled(const zf_job_t *job);

#endif
