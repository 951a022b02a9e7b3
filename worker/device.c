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

/* ------------------------------------------------------------------ CUDA_VISIBLE_DEVICES */

/* The next entry of a CUDA_VISIBLE_DEVICES list at *p, blanks trimmed, into out; advances
   *p past it and its comma. Returns 0, or -1 at the end of the list or at an entry CUDA
   would not take (it ignores every entry from the first invalid one on). */
static int next_entry(const char **p, char *out, size_t len)
{
    const char *s = *p;
    if (!*s)
        return -1;
    size_t n = strcspn(s, ",");
    *p = s + n + (s[n] == ',');
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= len)
        return -1;
    int number = strspn(s, "0123456789") >= n;
    if (!number && strncmp(s, "GPU-", 4) && strncmp(s, "MIG-", 4))
        return -1;
    memcpy(out, s, n);
    out[n] = 0;
    return 0;
}

int zf_device_cuda_listed(void)
{
    const char *p = getenv(ZF_CUDA_ENV);
    if (!p)
        return -1;
    char e[ZF_CUDA_ENTRY_MAX];
    int n = 0;
    while (next_entry(&p, e, sizeof e) == 0)
        n++;
    return n;
}

int zf_device_cuda_entry(int index, char *out, size_t len, char *err, size_t errlen)
{
    const char *list = getenv(ZF_CUDA_ENV);
    if (!list) {
        snprintf(out, len, "%d", index);
        return 0;
    }
    const char *p = list;
    char e[ZF_CUDA_ENTRY_MAX];
    for (int i = 0; next_entry(&p, e, sizeof e) == 0; i++)
        if (i == index) {
            snprintf(out, len, "%s", e);
            return 0;
        }
    int n = zf_device_cuda_listed();
    snprintf(err, errlen,
             "device gpu:%d: %s=\"%.64s\" makes %d GPU(s) visible, and gpu:N "
             "counts within that list (gpu:0 is its first entry)",
             index, ZF_CUDA_ENV, list, n);
    return -1;
}

/* Makes gpu:index the only GPU CUDA can see in this process (and its children), unless the
   fleet that started us did so already (ZF_GPU_BOUND_ENV names our label). */
static int narrow_cuda(zf_device_binding_t *b, int index, char *err, size_t errlen)
{
    const char *mark = getenv(ZF_GPU_BOUND_ENV);
    int done = mark && !strcmp(mark, b->label) && zf_device_cuda_listed() == 1;
    if (done) {
        const char *p = getenv(ZF_CUDA_ENV);
        return next_entry(&p, b->cuda_visible, sizeof b->cuda_visible); /* listed: one */
    }
    if (zf_device_cuda_entry(index, b->cuda_visible, sizeof b->cuda_visible, err, errlen) < 0)
        return -1;
    if (setenv(ZF_CUDA_ENV, b->cuda_visible, 1) < 0) {
        snprintf(err, errlen, "device gpu:%d: cannot set %s", index, ZF_CUDA_ENV);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ binding */

static int bind_cpu(zf_device_binding_t *b, int index, char *err, size_t errlen)
{
    b->dev.type = ZF_DEVICE_CPU;
    b->dev.index = index;
    b->dev.cuda_index = -1;
    /* no GPU for a CPU worker: a framework that probes CUDA (torch.cuda.is_available) would
       otherwise make a context, and take its memory, on GPU 0 */
    if (setenv(ZF_CUDA_ENV, "", 1) < 0) {
        snprintf(err, errlen, "device cpu: cannot set %s", ZF_CUDA_ENV);
        return -1;
    }
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
    b->dev.cuda_index = 0; /* the only GPU this process sees */
    snprintf(b->label, sizeof b->label, "gpu:%d", index);
    if (narrow_cuda(b, index, err, errlen) < 0)
        return -1;
    if (fake) {
        snprintf(b->name, sizeof b->name, "%s", FAKE_GPU_NAME);
        b->dev.memory = 1ull << 30;
        return 0;
    }
    char why[256] = "";
    int n = zf_gpu_count(why, sizeof why); /* the process's first CUDA call */
    if (n == 0) {
        snprintf(err, errlen, "device gpu:%d: %s (with %s=%s)", index, why, ZF_CUDA_ENV,
                 b->cuda_visible);
        return -1;
    }
    if (zf_gpu_info(b->dev.cuda_index, b->name, sizeof b->name, &b->dev.memory) < 0) {
        snprintf(err, errlen, "device gpu:%d: cannot read its properties", index);
        return -1;
    }
    return 0;
}

int zf_device_bind(zf_device_binding_t *b, const char *spec, int fake_gpu, char *err, size_t errlen)
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
    unsetenv(ZF_GPU_BOUND_ENV); /* read; not for the handlers' own child processes */
    b->dev.label = b->label;
    b->dev.name = b->name;
    if (rc == 0 && type == ZF_DEVICE_GPU)
        zf_log_event(ZF_LOG_INFO, "device_bound", &(zf_log_fields_t){.device = b->label},
                     "%s: %s=%s, so CUDA and every framework in this process see "
                     "only this GPU, as their device %d",
                     b->label, ZF_CUDA_ENV, b->cuda_visible, b->dev.cuda_index);
    else if (rc == 0)
        zf_log_event(ZF_LOG_DEBUG, "device_bound", &(zf_log_fields_t){.device = b->label}, "%s: %s",
                     b->label, b->pinned ? "pinned to this core" : "not pinned");
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
    return zf_gpu_select(dev->cuda_index, err, errlen);
}
