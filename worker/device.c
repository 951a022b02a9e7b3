/*  zf_device — see zf_device.h. */
#include "zf_device.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/zf_util.h"
#include "zf_gpu.h"

/* The name a --fake-gpu device reports; also how it is recognised (zf_device_is_fake). */
#define FAKE_GPU_NAME "fake GPU (test only)"

int zf_device_parse(const char *spec, zf_device_type_t *type, int *index)
{
    uint64_t n = 0;
    if (!strcmp(spec, "cpu")) {
        *type = ZF_DEVICE_CPU;
        *index = -1;
        return 0;
    }
    if (!strncmp(spec, "cpu:", 4))
        *type = ZF_DEVICE_CPU;
    else if (!strncmp(spec, "gpu:", 4))
        *type = ZF_DEVICE_GPU;
    else
        return -1;
    if (zf_parse_u64(spec + 4, 4095, &n) < 0)
        return -1;
    *index = (int)n;
    return 0;
}

int zf_device_cpus(int *cores, int max)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) < 0)
        return 0;
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < max; c++)
        if (CPU_ISSET(c, &set))
            cores[n++] = c;
    return n;
}

static void cpu_model(char *out, size_t len)
{
    snprintf(out, len, "cpu");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *v = strchr(line, ':');
            if (v) {
                v += 1 + (v[1] == ' ');
                v[strcspn(v, "\n")] = 0;
                snprintf(out, len, "%s", v);
            }
            break;
        }
    fclose(f);
}

/* Libraries that start a thread pool per core would fight the other workers for the
   machine; one worker owns one core. */
static void limit_threads(void)
{
    static const char *vars[] = {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                 "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        setenv(vars[i], "1", 1);
}

static int bind_cpu(zf_device_binding_t *b, int index, char *err, size_t errlen)
{
    b->dev.type = ZF_DEVICE_CPU;
    b->dev.index = index;
    cpu_model(b->name, sizeof b->name);
    b->dev.memory = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
    if (index < 0) {
        snprintf(b->label, sizeof b->label, "cpu");
        return 0;
    }
    snprintf(b->label, sizeof b->label, "cpu:%d", index);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) < 0 || !CPU_ISSET(index, &set)) {
        snprintf(err, errlen, "device cpu:%d: no such core available to this process", index);
        return -1;
    }
    CPU_ZERO(&set);
    CPU_SET(index, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) {
        snprintf(err, errlen, "device cpu:%d: cannot pin to it", index);
        return -1;
    }
    b->pinned = 1;
    limit_threads();
    return 0;
}

static int bind_gpu(zf_device_binding_t *b, int index, int fake, char *err, size_t errlen)
{
    b->dev.type = ZF_DEVICE_GPU;
    b->dev.index = index;
    snprintf(b->label, sizeof b->label, "gpu:%d", index);
    if (fake) {
        snprintf(b->name, sizeof b->name, "%s", FAKE_GPU_NAME);
        b->dev.memory = 1ull << 30;
        return 0;
    }
    char why[256] = "";
    int n = zf_gpu_count(why, sizeof why);
    if (n == 0) {
        snprintf(err, errlen, "device gpu:%d: %s", index, why);
        return -1;
    }
    if (index >= n) {
        snprintf(err, errlen, "device gpu:%d: no such GPU (this machine has %d)", index, n);
        return -1;
    }
    if (zf_gpu_info(index, b->name, sizeof b->name, &b->dev.memory) < 0) {
        snprintf(err, errlen, "device gpu:%d: cannot read its properties", index);
        return -1;
    }
    return 0;
}

int zf_device_bind(zf_device_binding_t *b, const char *spec, int fake_gpu, char *err,
                   size_t errlen)
{
    memset(b, 0, sizeof *b);
    zf_device_type_t type;
    int index;
    if (zf_device_parse(spec, &type, &index) < 0) {
        snprintf(err, errlen, "device '%s': expected cpu, cpu:N or gpu:N", spec);
        return -1;
    }
    int rc = type == ZF_DEVICE_CPU ? bind_cpu(b, index, err, errlen)
                                   : bind_gpu(b, index, fake_gpu, err, errlen);
    b->dev.label = b->label;
    b->dev.name = b->name;
    return rc;
}

int zf_device_is_fake(const zf_device_t *dev)
{
    return dev->type == ZF_DEVICE_GPU && dev->name && !strcmp(dev->name, FAKE_GPU_NAME);
}

int zf_device_bind_thread(const zf_device_t *dev, char *err, size_t errlen)
{
    if (dev->type != ZF_DEVICE_GPU || zf_device_is_fake(dev))
        return 0;
    return zf_gpu_select(dev->index, err, errlen);
}
