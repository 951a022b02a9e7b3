/*  zf_runner — the handler thread of a worker.

    The runner owns the modules: it binds the device on its own thread, initialises the
    modules, then runs one job at a time as the I/O thread hands them over an inproc PAIR
    socket ([JOB header][payload] in; [DONE header][output] and WPROGRESS out). The I/O
    thread keeps heartbeats going whatever a handler does.
*/
#ifndef ZF_RUNNER_H
#define ZF_RUNNER_H

#include <stdatomic.h>
#include <stdint.h>

#include "zf_module.h"
#include "zf_modules.h"

typedef struct zf_runner zf_runner_t;

/* Starts the runner thread on `ctx` (a ZeroMQ context), connected to the inproc endpoint
   `ep` that the caller has bound as a PAIR. mods and dev are borrowed until destroy.
   Returns NULL when the thread cannot start. The runner then sends one frame: empty when
   init succeeded, or the reason it failed. */
zf_runner_t *zf_runner_new(void *ctx, const char *ep, zf_modules_t *mods, const zf_device_t *dev);

/* Flags the job (id, attempt) as cancelled; zf_job_cancelled turns true for it. */
void zf_runner_cancel(zf_runner_t *self, uint64_t id, uint32_t attempt);

/* Asks the thread to stop after its current job and joins it (the caller sends the stop
   request frame first: an empty frame on the PAIR). Frees; sets *self_p to NULL. */
void zf_runner_destroy(zf_runner_t **self_p);

#endif
