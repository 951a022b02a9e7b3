/*  zf_registry — see zf_registry.h. */
#include "zf_registry.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proto/zf_proto.h"
#include "zf_crash.h"

#define MAX_MODULES 32

typedef struct {
    const zf_module_t *mod;
    void *dl;       /* dlopen handle, NULL for built-ins */
    void *state;
    bool inited;
    char label[256]; /* what a crash report calls it: the .so path, or the built-in's name */
} entry_t;

typedef struct {
    const char *name;
    zf_run_fn run;
    unsigned module;
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

int zf_registry_add(zf_registry_t *self, const zf_module_t *mod, char *err, size_t errlen)
{
    if (!mod || mod->abi != ZF_MODULE_ABI) {
        snprintf(err, errlen, "module ABI %u, this worker needs %u", mod ? mod->abi : 0,
                 ZF_MODULE_ABI);
        return -1;
    }
    if (self->nmods == MAX_MODULES) {
        snprintf(err, errlen, "more than %d modules", MAX_MODULES);
        return -1;
    }
    for (const zf_function_t *f = mod->functions; f && f->name; f++) {
        if (!f->run || !f->name[0] || strlen(f->name) > ZF_FN_MAX) {
            snprintf(err, errlen, "module %s: function '%s' has no handler or a bad name",
                     mod->name, f->name);
            return -1;
        }
        void *unused;
        if (zf_registry_find(self, f->name, &unused)) {
            snprintf(err, errlen, "module %s: function %s is already defined", mod->name,
                     f->name);
            return -1;
        }
        if (self->nfns == ZF_MAX_FUNCTIONS) {
            snprintf(err, errlen, "more than %d functions in one worker", ZF_MAX_FUNCTIONS);
            return -1;
        }
        self->fns[self->nfns++] = (fentry_t){f->name, f->run, self->nmods};
    }
    entry_t *e = &self->mods[self->nmods++];
    *e = (entry_t){.mod = mod};
    snprintf(e->label, sizeof e->label, "%s", mod->name ? mod->name : "?");
    return 0;
}

int zf_registry_load(zf_registry_t *self, const char *path, char *err, size_t errlen)
{
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

int zf_registry_init(zf_registry_t *self, const zf_device_t *dev, char *err, size_t errlen)
{
    zf_crash_install(); /* best effort: without it a crash is only not named */
    for (unsigned i = 0; i < self->nmods; i++) {
        entry_t *e = &self->mods[i];
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
    for (unsigned i = 0; i < self->nfns; i++)
        if (!strcmp(self->fns[i].name, name)) {
            *state = self->mods[self->fns[i].module].state;
            return self->fns[i].run;
        }
    return NULL;
}

const char *zf_registry_label(const zf_registry_t *self, const char *name)
{
    for (unsigned i = 0; i < self->nfns; i++)
        if (!strcmp(self->fns[i].name, name))
            return self->mods[self->fns[i].module].label;
    return NULL;
}

unsigned zf_registry_count(const zf_registry_t *self)
{
    return self->nfns;
}

const char *zf_registry_name(const zf_registry_t *self, unsigned i)
{
    return i < self->nfns ? self->fns[i].name : NULL;
}

void zf_registry_destroy(zf_registry_t **self_p)
{
    zf_registry_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    for (unsigned i = self->nmods; i-- > 0;) {
        entry_t *e = &self->mods[i];
        if (e->inited && e->mod->fini) {
            zf_crash_enter(e->label, "fini", NULL, 0);
            e->mod->fini(e->state);
            zf_crash_leave();
        }
        if (e->dl)
            dlclose(e->dl);
    }
    free(self);
}
