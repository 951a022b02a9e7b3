/*  zf_python without Python: this build found no python3-embed, so a Python module is
    refused at load with one clear line, and nothing else here is ever reached. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "zf_python.h"

#define NO_PYTHON "this zfleet-worker was built without Python (install python3-dev and rebuild)"

const char *zf_python_version(void)
{
    return NULL;
}

int zf_python_set_venv(const char *dir, char *err, size_t errlen)
{
    snprintf(err, errlen, "--venv %s: %s", dir, NO_PYTHON);
    return -1;
}

zf_pymod_t *zf_pymod_new(const char *spec, char *err, size_t errlen)
{
    snprintf(err, errlen, "cannot load module %s: %s", spec, NO_PYTHON);
    return NULL;
}

/* No zf_pymod_t ever exists in this build: the rest is unreachable. */
int zf_pymod_import(zf_pymod_t *self, char *err, size_t errlen)
{
    (void)self, (void)err, (void)errlen;
    abort();
}

unsigned zf_pymod_count(const zf_pymod_t *self)
{
    (void)self;
    abort();
}

const char *zf_pymod_name(const zf_pymod_t *self, unsigned i)
{
    (void)self, (void)i;
    abort();
}

void *zf_pymod_function(zf_pymod_t *self, unsigned i)
{
    (void)self, (void)i;
    abort();
}

int zf_pymod_init(zf_pymod_t *self, const zf_device_t *dev, char *err, size_t errlen)
{
    (void)self, (void)dev, (void)err, (void)errlen;
    abort();
}

int zf_pymod_run(void *function, zf_job_t *job)
{
    (void)function, (void)job;
    abort();
}

uint32_t zf_pymod_max_batch(const zf_pymod_t *self, unsigned i, uint32_t *max_delay_us)
{
    (void)self, (void)i, (void)max_delay_us;
    abort();
}

int zf_pymod_run_batch(void *function, zf_job_t **jobs, size_t n)
{
    (void)function, (void)jobs, (void)n;
    abort();
}

void zf_pymod_fini(zf_pymod_t *self)
{
    (void)self;
    abort();
}

void zf_pymod_destroy(zf_pymod_t **self_p)
{
    assert(!*self_p);
}
