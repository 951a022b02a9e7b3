/*  zf_registry — the functions one worker serves: built-in modules, loaded .so files and
    Python modules (zf_python.h).

    Modules are initialised (and Python ones imported) on the handler thread, after the
    device is bound, so a CUDA module's context and the interpreter belong to that thread;
    fini runs there too (zf_registry_fini). Lookups are by function name.
*/
#ifndef ZF_REGISTRY_H
#define ZF_REGISTRY_H

#include "zf_module.h"

typedef struct zf_registry zf_registry_t;

/* An empty set. Returns NULL when memory runs out. */
zf_registry_t *zf_registry_new(void);
/* Adds a module from a shared object, or a Python module when path ends in .py or is
   py:dotted.name (checked now; imported by zf_registry_init, whose functions only then join
   the set), or the built-in that is not served by default, builtin:image_batch. Returns 0,
   or -1 with a reason in err. */
int zf_registry_load(zf_registry_t *self, const char *path, char *err, size_t errlen);
/* Adds a module compiled into the worker. Returns 0, or -1 with a reason in err. */
int zf_registry_add(zf_registry_t *self, const zf_module_t *mod, char *err, size_t errlen);
/* Calls every module's init for dev (importing Python modules first), on the handler
   thread. Returns 0, or -1 with the first refusal in err (one line).
   A crash inside an init is named on stderr before the signal ends the process
   (zf_crash.h); so is one inside a fini (zf_registry_destroy). */
int zf_registry_init(zf_registry_t *self, const zf_device_t *dev, char *err, size_t errlen);
/* Finds a function; *state receives its module's state. NULL if none has that name. */
zf_run_fn zf_registry_find(const zf_registry_t *self, const char *name, void **state);
/* A batched function (zf_module.h): its batch handler, *state, *max_batch (>= 1) and
   *max_delay_us; NULL (outputs untouched) when name is not batched or not here. */
zf_run_batch_fn zf_registry_batch(const zf_registry_t *self, const char *name, void **state,
                                  uint32_t *max_batch, uint32_t *max_delay_us);
/* The largest max_batch of the batched functions, 1 when none is: the fewest jobs the worker
   asks the broker for at once (its READY credits). */
uint32_t zf_registry_max_batch(const zf_registry_t *self);
/* Makes an added function batched (for Python's zfleet.batched). Returns 0, or -1 with the
   reason in err (no such function, max_batch not in 1..256). */
int zf_registry_add_batched(zf_registry_t *self, const char *name, zf_run_batch_fn run_batch,
                            uint32_t max_batch, uint32_t max_delay_us, char *err, size_t errlen);
/* What crash reports call the module that serves function name (its .so path, or the
   built-in's name), or NULL. Lives as long as self. */
const char *zf_registry_label(const zf_registry_t *self, const char *name);
/* Number of functions, and the name of the i-th. */
unsigned zf_registry_count(const zf_registry_t *self);
const char *zf_registry_name(const zf_registry_t *self, unsigned i);
/* Calls the fini of every module whose init ran, in reverse order, on the calling thread:
   the handler thread, which ran init. Later calls do nothing. */
void zf_registry_fini(zf_registry_t *self);
/* Calls the C modules' fini if zf_registry_fini has not, unloads, frees; sets *self_p to
   NULL. NULL-safe. Never calls Python. */
void zf_registry_destroy(zf_registry_t **self_p);

/* The built-in modules: "core" with echo and spin (builtin.c); "image" with sobel
   (image.c, GPU variant in sobel.cu). */
extern const zf_module_t zf_builtin_core;
extern const zf_module_t zf_builtin_image;
/* "image_batch" with sobel_batch, the batched sobel (issue 17; docs/DEVICES.md): not added
   by default (a batched function raises the worker's credits, zf_module.h). */
extern const zf_module_t zf_builtin_image_batch;

#endif
