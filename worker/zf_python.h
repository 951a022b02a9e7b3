/*  zf_python — Python handler modules: CPython embedded in the worker, as uWSGI does.

    A Python module is a file (`handlers.py`) or an importable module (`py:package.module`)
    that defines FUNCTIONS, a dict from function name to fn(state, job), and optionally
    init(device) -> state and fini(state) (docs/PYTHON.md is the user's contract). It is a set
    of functions in the registry like a C module's: zf_pymod_run is their zf_run_fn.

    One interpreter per process, started on the handler thread by the first zf_pymod_import
    (after the device is bound): no signal handlers of its own (SIGTERM and SIGINT stay the
    worker's), standard streams unbuffered on the worker's fds (print goes to its log). The
    handler thread holds the GIL only inside the zf_pymod_* calls; between them it is
    released, so threads a model started keep running. The interpreter is never finalized:
    after fini the process exits.

    Threads: zf_python_version, zf_python_set_venv and zf_pymod_new on the main thread before
    the handler thread starts; every other zf_pymod_* on the handler thread only (the I/O
    thread never calls here). Built without Python (python_none.c), zf_pymod_new refuses.
*/
#ifndef ZF_PYTHON_H
#define ZF_PYTHON_H

#include <stddef.h>
#include <stdint.h>

#include "zf_module.h"

typedef struct zf_pymod zf_pymod_t;

/* The version of the Python this worker embeds ("3.11.2"), or NULL when built without. */
const char *zf_python_version(void);

/* Runs the interpreter inside the virtual environment DIR (its site-packages on sys.path, as
   DIR/bin/python would). Call before any import. Returns 0, or -1 with one line in err: not
   a virtual environment (no DIR/pyvenv.cfg), or one of another Python version. */
int zf_python_set_venv(const char *dir, char *err, size_t errlen);

/* A module named by spec ("path.py" or "py:dotted.name"), not imported yet: a file must
   exist and be readable, a name must be a dotted identifier. Returns NULL with one line in
   err. */
zf_pymod_t *zf_pymod_new(const char *spec, char *err, size_t errlen);

/* Starts the interpreter (once per process), imports the module and reads FUNCTIONS.
   Returns 0, or -1 with one line in err (import error, no FUNCTIONS, a name that is empty
   or over 63 bytes, an entry that is not callable). */
int zf_pymod_import(zf_pymod_t *self, char *err, size_t errlen);

/* After a successful import: how many functions, the i-th's name (lives as long as self),
   and the pointer that zf_pymod_run takes as its state for it. */
unsigned zf_pymod_count(const zf_pymod_t *self);
const char *zf_pymod_name(const zf_pymod_t *self, unsigned i);
void *zf_pymod_function(zf_pymod_t *self, unsigned i);

/* Calls init(device) if the module defines it (state None otherwise). Returns 0, or -1
   with "ExceptionType: message (file:line)" in err. */
int zf_pymod_init(zf_pymod_t *self, const zf_device_t *dev, char *err, size_t errlen);

/* A zf_run_fn: calls the function `function` (from zf_pymod_function) with (state, job) and
   makes its return value the output; an exception fails the job with "Type: message" and
   the traceback's last lines. Returns 0 or -1 as zf_run_fn does. */
int zf_pymod_run(void *function, zf_job_t *job);

/* zfleet.batched (issue 17): the i-th function's max_batch and *max_delay_us, or 0 when it
   is not batched. Its batch handler is zf_pymod_run_batch, with the same state as
   zf_pymod_run's. */
uint32_t zf_pymod_max_batch(const zf_pymod_t *self, unsigned i, uint32_t *max_delay_us);
/* A zf_run_batch_fn: calls fn(state, jobs) with a list of n jobs; its answer is a list of n
   outputs (an Exception instance in place of an output fails that job alone, with
   "Type: message"); an exception, or an answer of another length, fails the whole batch. */
int zf_pymod_run_batch(void *function, zf_job_t **jobs, size_t n);

/* Calls fini(state) if init succeeded and the module defines one (an exception is logged),
   then drops the module's Python objects. Later calls do nothing. */
void zf_pymod_fini(zf_pymod_t *self);

/* Frees self (no Python call: zf_pymod_fini has dropped its objects); sets *self_p to NULL.
   NULL-safe. */
void zf_pymod_destroy(zf_pymod_t **self_p);

#endif
