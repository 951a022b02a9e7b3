/*  zf_registry — the functions one worker serves: built-in modules and loaded .so files.

    Modules are loaded (dlopen) and initialised on the handler thread, after the device is
    bound, so a CUDA module's context belongs to that thread. Lookups are by function name.
*/
#ifndef ZF_REGISTRY_H
#define ZF_REGISTRY_H

#include "zf_module.h"

typedef struct zf_registry zf_registry_t;

/* An empty set. Returns NULL when memory runs out. */
zf_registry_t *zf_registry_new(void);
/* Adds a module from a shared object. Returns 0, or -1 with a reason in err. */
int zf_registry_load(zf_registry_t *self, const char *path, char *err, size_t errlen);
/* Adds a module compiled into the worker. Returns 0, or -1 with a reason in err. */
int zf_registry_add(zf_registry_t *self, const zf_module_t *mod, char *err, size_t errlen);
/* Calls every module's init for dev. Returns 0, or -1 with the first refusal in err.
   A crash inside an init is named on stderr before the signal ends the process
   (zf_crash.h); so is one inside a fini (zf_registry_destroy). */
int zf_registry_init(zf_registry_t *self, const zf_device_t *dev, char *err, size_t errlen);
/* Finds a function; *state receives its module's state. NULL if none has that name. */
zf_run_fn zf_registry_find(const zf_registry_t *self, const char *name, void **state);
/* What crash reports call the module that serves function name (its .so path, or the
   built-in's name), or NULL. Lives as long as self. */
const char *zf_registry_label(const zf_registry_t *self, const char *name);
/* Number of functions, and the name of the i-th. */
unsigned zf_registry_count(const zf_registry_t *self);
const char *zf_registry_name(const zf_registry_t *self, unsigned i);
/* Calls every fini, unloads, frees; sets *self_p to NULL. NULL-safe. */
void zf_registry_destroy(zf_registry_t **self_p);

/* The built-in modules: "core" with echo and spin (builtin.c); "image" with sobel
   (image.c, GPU variant in sobel.cu). */
extern const zf_module_t zf_builtin_core;
extern const zf_module_t zf_builtin_image;

#endif
