/*  zf_registry — see zf_registry.h. */
#include "zf_registry.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proto/zf_proto.h"
#include "zf_crash.h"
#include "zf_python.h"

#define MAX_MODULES 32

/* A module is C (mod, from the executable or a .so) or Python (py: its functions join the
   function table when it is imported, in zf_registry_init on the handler thread). */
typedef struct {
    const zf_module_t *mod; /* NULL for a Python module */
    zf_pymod_t *py;
    void *dl; /* dlopen handle, NULL for built-ins */
    void *state;
    bool inited, finished;
    char label[256]; /* what a crash report calls it: the .so or .py path, py:name, or the
                        built-in's name */
} entry_t;

typedef struct {
    const char *name;
    zf_run_fn run;
    unsigned module;
    void *state;               /* a Python function's own (zf_pymod_function); NULL: the module's */
    zf_run_batch_fn run_batch; /* NULL: not batched */
    uint32_t max_batch, max_delay_us;
} fentry_t;

struct zf_registry {
    entry_t mods[MAX_MODULES];
    unsigned nmods;
    fentry_t fns[ZF_MAX_FUNCTIONS];
    unsigned nfns;
};

zf_registry_t *zf_registry_new(void)
{
    return calloc(1, sizeof(zf_registry_t));
}

static const fentry_t *find_function(const zf_registry_t *self, const char *name)
{
    for (unsigned i = 0; i < self->nfns; i++)
        if (!strcmp(self->fns[i].name, name))
            return &self->fns[i];
    return NULL;
}

/* Adds function name of module `module` (called modname in errors). Returns 0, or -1. */
static int add_function(zf_registry_t *self, const char *modname, const char *name, zf_run_fn run,
                        void *state, unsigned module, char *err, size_t errlen)
{
    if (!name[0] || strlen(name) > ZF_FN_MAX) {
        snprintf(err, errlen, "module %s: function '%s' has no handler or a bad name", modname,
                 name);
        return -1;
    }
    if (find_function(self, name)) {
        snprintf(err, errlen, "module %s: function %s is already defined", modname, name);
        return -1;
    }
    if (self->nfns == ZF_MAX_FUNCTIONS) {
        snprintf(err, errlen, "more than %d functions in one worker", ZF_MAX_FUNCTIONS);
        return -1;
    }
    self->fns[self->nfns++] = (fentry_t){name, run, module, state, NULL, 0, 0};
    return 0;
}

#define BATCH_MAX 256

/* Adds a C module's function, single or batched. Returns 0, or -1. */
static int add_c_function(zf_registry_t *self, const char *modname, const zf_function_t *f,
                          char *err, size_t errlen)
{
    if (!f->run && !f->run_batch) {
        snprintf(err, errlen, "module %s: function '%s' has no handler", modname, f->name);
        return -1;
    }
    if (f->run_batch && f->max_batch > BATCH_MAX) {
        snprintf(err, errlen, "module %s: function %s: max_batch %u is over %d", modname, f->name,
                 f->max_batch, BATCH_MAX);
        return -1;
    }
    if (add_function(self, modname, f->name, f->run, NULL, self->nmods, err, errlen) < 0)
        return -1;
    fentry_t *e = &self->fns[self->nfns - 1];
    e->run_batch = f->run_batch;
    e->max_batch = f->run_batch ? (f->max_batch ? f->max_batch : 1) : 0;
    e->max_delay_us = f->run_batch ? f->max_delay_us : 0;
    return 0;
}

int zf_registry_add_batched(zf_registry_t *self, const char *name, zf_run_batch_fn run_batch,
                            uint32_t max_batch, uint32_t max_delay_us, char *err, size_t errlen)
{
    fentry_t *e = (fentry_t *)find_function(self, name);
    if (!e || !run_batch || max_batch < 1 || max_batch > BATCH_MAX) {
        snprintf(err, errlen, "function %s: bad batch settings (max_batch 1..%d)", name, BATCH_MAX);
        return -1;
    }
    e->run_batch = run_batch;
    e->max_batch = max_batch;
    e->max_delay_us = max_delay_us;
    return 0;
}

zf_run_batch_fn zf_registry_batch(const zf_registry_t *self, const char *name, void **state,
                                  uint32_t *max_batch, uint32_t *max_delay_us)
{
    const fentry_t *f = find_function(self, name);
    if (!f || !f->run_batch)
        return NULL;
    *state = f->state ? f->state : self->mods[f->module].state;
    *max_batch = f->max_batch;
    *max_delay_us = f->max_delay_us;
    return f->run_batch;
}

uint32_t zf_registry_max_batch(const zf_registry_t *self)
{
    uint32_t most = 1;
    for (unsigned i = 0; i < self->nfns; i++)
        if (self->fns[i].run_batch && self->fns[i].max_batch > most)
            most = self->fns[i].max_batch;
    return most;
}

static bool room_for_module(const zf_registry_t *self, char *err, size_t errlen)
{
    if (self->nmods < MAX_MODULES)
        return true;
    snprintf(err, errlen, "more than %d modules", MAX_MODULES);
    return false;
}

/* A spec that names Python: a .py file, or py:module. */
static bool is_python(const char *spec)
{
    size_t n = strlen(spec);
    return !strncmp(spec, "py:", 3) || (n > 3 && !strcmp(spec + n - 3, ".py"));
}

int zf_registry_add(zf_registry_t *self, const zf_module_t *mod, char *err, size_t errlen)
{
    if (!mod || mod->abi != ZF_MODULE_ABI) {
        snprintf(err, errlen, "module ABI %u, this worker needs %u", mod ? mod->abi : 0,
                 ZF_MODULE_ABI);
        return -1;
    }
    if (!room_for_module(self, err, errlen))
        return -1;
    for (const zf_function_t *f = mod->functions; f && f->name; f++)
        if (add_c_function(self, mod->name, f, err, errlen) < 0)
            return -1;
    entry_t *e = &self->mods[self->nmods++];
    *e = (entry_t){.mod = mod};
    snprintf(e->label, sizeof e->label, "%s", mod->name ? mod->name : "?");
    return 0;
}

/* A Python module: checked now, imported by zf_registry_init. */
static int load_python(zf_registry_t *self, const char *spec, char *err, size_t errlen)
{
    if (!room_for_module(self, err, errlen))
        return -1;
    zf_pymod_t *py = zf_pymod_new(spec, err, errlen);
    if (!py)
        return -1;
    entry_t *e = &self->mods[self->nmods++];
    *e = (entry_t){.py = py};
    snprintf(e->label, sizeof e->label, "%s", spec);
    return 0;
}

int zf_registry_load(zf_registry_t *self, const char *path, char *err, size_t errlen)
{
    if (is_python(path))
        return load_python(self, path, err, errlen);
    if (!strcmp(path, "builtin:image_batch")) /* compiled in, not served by default */
        return zf_registry_add(self, &zf_builtin_image_batch, err, errlen);
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        snprintf(err, errlen, "cannot load module %s: %s", path, dlerror());
        return -1;
    }
    const zf_module_t *(*entry)(void) = (const zf_module_t *(*)(void))dlsym(dl, "zf_module_entry");
    if (!entry) {
        snprintf(err, errlen, "%s has no zf_module_entry symbol", path);
        dlclose(dl);
        return -1;
    }
    unsigned before = self->nmods;
    if (zf_registry_add(self, entry(), err, errlen) < 0) {
        dlclose(dl);
        return -1;
    }
    self->mods[before].dl = dl;
    snprintf(self->mods[before].label, sizeof self->mods[before].label, "%s", path);
    return 0;
}

/* Imports a Python module, adds its functions and calls its init. Returns 0, or -1. */
static int init_python(zf_registry_t *self, unsigned i, const zf_device_t *dev, char *err,
                       size_t errlen)
{
    entry_t *e = &self->mods[i];
    char why[768] = "";
    e->inited = true; /* zf_pymod_fini drops what an import made, even a failed one */
    zf_crash_enter(e->label, "init", NULL, 0);
    int rc = zf_pymod_import(e->py, why, sizeof why);
    zf_crash_leave();
    if (rc < 0) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    for (unsigned k = 0; k < zf_pymod_count(e->py); k++) {
        if (add_function(self, e->label, zf_pymod_name(e->py, k), zf_pymod_run,
                         zf_pymod_function(e->py, k), i, err, errlen) < 0)
            return -1;
        uint32_t delay_us = 0, max = zf_pymod_max_batch(e->py, k, &delay_us);
        if (max && zf_registry_add_batched(self, zf_pymod_name(e->py, k), zf_pymod_run_batch, max,
                                           delay_us, err, errlen) < 0)
            return -1;
    }
    zf_crash_enter(e->label, "init", NULL, 0);
    rc = zf_pymod_init(e->py, dev, why, sizeof why);
    zf_crash_leave();
    if (rc < 0) {
        snprintf(err, errlen, "module %s refused %s: %s", e->label, dev->label, why);
        return -1;
    }
    return 0;
}

int zf_registry_init(zf_registry_t *self, const zf_device_t *dev, char *err, size_t errlen)
{
    zf_crash_install(); /* best effort: without it a crash is only not named */
    for (unsigned i = 0; i < self->nmods; i++) {
        entry_t *e = &self->mods[i];
        if (e->py) {
            if (init_python(self, i, dev, err, errlen) < 0)
                return -1;
            continue;
        }
        if (!e->mod->init) {
            e->inited = true;
            continue;
        }
        char why[256] = "";
        zf_crash_enter(e->label, "init", NULL, 0);
        e->state = e->mod->init(dev, why, sizeof why);
        zf_crash_leave();
        if (!e->state) {
            snprintf(err, errlen, "module %s refused %s: %s", e->mod->name, dev->label,
                     why[0] ? why : "init failed");
            return -1;
        }
        e->inited = true;
    }
    return 0;
}

zf_run_fn zf_registry_find(const zf_registry_t *self, const char *name, void **state)
{
    const fentry_t *f = find_function(self, name);
    if (!f)
        return NULL;
    *state = f->state ? f->state : self->mods[f->module].state;
    return f->run;
}

const char *zf_registry_label(const zf_registry_t *self, const char *name)
{
    const fentry_t *f = find_function(self, name);
    return f ? self->mods[f->module].label : NULL;
}

unsigned zf_registry_count(const zf_registry_t *self)
{
    return self->nfns;
}

const char *zf_registry_name(const zf_registry_t *self, unsigned i)
{
    return i < self->nfns ? self->fns[i].name : NULL;
}

void zf_registry_fini(zf_registry_t *self)
{
    for (unsigned i = self->nmods; i-- > 0;) {
        entry_t *e = &self->mods[i];
        if (!e->inited || e->finished)
            continue;
        e->finished = true;
        zf_crash_enter(e->label, "fini", NULL, 0);
        if (e->py)
            zf_pymod_fini(e->py);
        else if (e->mod->fini)
            e->mod->fini(e->state);
        zf_crash_leave();
    }
}

void zf_registry_destroy(zf_registry_t **self_p)
{
    zf_registry_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    /* C modules whose fini has not run yet; a Python module's was run by the handler thread
       (zf_registry_init and zf_registry_fini run there), never here */
    for (unsigned i = self->nmods; i-- > 0;)
        if (self->mods[i].py)
            self->mods[i].finished = true;
    zf_registry_fini(self);
    for (unsigned i = self->nmods; i-- > 0;) {
        entry_t *e = &self->mods[i];
        zf_pymod_destroy(&e->py);
        if (e->dl)
            dlclose(e->dl);
    }
    free(self);
}
