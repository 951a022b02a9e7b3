/*  zf_image — see zf_image.h. PGM parsing, the CPU Sobel filter, and the built-in `image`
    module whose `sobel` function runs on the GPU on GPU workers and on the CPU otherwise. */
#include "zf_image.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../zf_device.h"
#include "../zf_registry.h"

/* ------------------------------------------------------------------ PGM */

static int is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Skips whitespace and comments; at least one separator must be there. Returns 0, or -1 at
   the end of the data. */
static int skip_separator(const uint8_t **pp, const uint8_t *end, int *seen)
{
    const uint8_t *p = *pp;
    *seen = 0;
    while (p < end) {
        if (is_ws(*p)) {
            p++;
            *seen = 1;
        } else if (*p == '#') {
            while (p < end && *p != '\n' && *p != '\r')
                p++;
            *seen = 1;
        } else {
            break;
        }
    }
    *pp = p;
    return p < end ? 0 : -1;
}

/* Reads one header number (decimal digits). Values over `max` are reported as such. */
static int read_number(const uint8_t **pp, const uint8_t *end, const char *what, uint32_t max,
                       uint32_t *out, char *err, size_t errlen)
{
    int seen;
    if (skip_separator(pp, end, &seen) < 0) {
        snprintf(err, errlen, "bad PGM: the header ends before the %s", what);
        return -1;
    }
    const uint8_t *p = *pp;
    if (!seen || *p < '0' || *p > '9') {
        snprintf(err, errlen, "bad PGM header: expected whitespace then the %s (a decimal number)",
                 what);
        return -1;
    }
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p++ - '0');
        if (v > max) {
            snprintf(err, errlen, "bad PGM: %s is larger than %u", what, max);
            return -1;
        }
    }
    *pp = p;
    *out = (uint32_t)v;
    return 0;
}

int zf_pgm_parse(const void *data, size_t len, zf_pgm_t *img, char *err, size_t errlen)
{
    const uint8_t *p = data, *end = p + len;
    if (len < 2 || p[0] != 'P') {
        snprintf(err, errlen, "not a PGM image: it does not start with the magic number P5");
        return -1;
    }
    if (p[1] != '5') {
        snprintf(err, errlen,
                 "unsupported image format P%c: only binary 8-bit grayscale PGM (P5) is accepted",
                 p[1] >= 0x21 && p[1] < 0x7f ? p[1] : '?');
        return -1;
    }
    p += 2;
    uint32_t w, h, maxval;
    /* larger than any limit, so a huge number is caught without overflowing */
    const uint32_t big = 100000000;
    if (read_number(&p, end, "width", big, &w, err, errlen) < 0 ||
        read_number(&p, end, "height", big, &h, err, errlen) < 0 ||
        read_number(&p, end, "maxval", big, &maxval, err, errlen) < 0)
        return -1;
    if (w == 0 || h == 0) {
        snprintf(err, errlen, "bad PGM: the image is %ux%u (empty)", w, h);
        return -1;
    }
    if (w > ZF_PGM_MAX_DIM || h > ZF_PGM_MAX_DIM) {
        snprintf(err, errlen, "image too large: %ux%u exceeds the limit of %dx%d", w, h,
                 ZF_PGM_MAX_DIM, ZF_PGM_MAX_DIM);
        return -1;
    }
    if (maxval != 255) {
        snprintf(err, errlen,
                 "unsupported PGM maxval %u: only 8-bit images (maxval 255) are "
                 "accepted",
                 maxval);
        return -1;
    }
    if (p == end || !is_ws(*p)) {
        snprintf(err, errlen,
                 "bad PGM header: the maxval must be followed by one whitespace "
                 "character");
        return -1;
    }
    p++;
    size_t need = (size_t)w * h, have = (size_t)(end - p);
    if (have < need) {
        snprintf(err, errlen, "truncated PGM: %ux%u needs %zu bytes of pixels, got %zu", w, h, need,
                 have);
        return -1;
    }
    img->width = (int)w;
    img->height = (int)h;
    img->pixels = p;
    return 0;
}

size_t zf_pgm_header(char *buf, int w, int h)
{
    return (size_t)snprintf(buf, ZF_PGM_HEADER_MAX, "P5\n%d %d\n255\n", w, h);
}

/* ------------------------------------------------------------------ CPU Sobel */

void zf_sobel_cpu_rows(const uint8_t *in, uint8_t *out, int w, int h, int y0, int y1)
{
    for (int y = y0; y < y1; y++) {
        uint8_t *o = out + (size_t)y * (size_t)w;
        for (int x = 0; x < w; x++)
            o[x] = zf_sobel_pixel(in, w, h, x, y);
    }
}

void zf_sobel_cpu(const uint8_t *in, uint8_t *out, int w, int h)
{
    zf_sobel_cpu_rows(in, out, w, h, 0, h);
}

/* ------------------------------------------------------------------ the module */

typedef struct {
    zf_sobel_gpu_t *gpu; /* NULL on CPU workers (and on --fake-gpu test workers) */
} image_state_t;

static void *image_init(const zf_device_t *dev, char *err, size_t errlen)
{
    image_state_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (dev->type == ZF_DEVICE_GPU && !zf_device_is_fake(dev)) {
        s->gpu = zf_sobel_gpu_new(dev->cuda_index, err, errlen);
        if (!s->gpu) {
            free(s);
            return NULL;
        }
    }
    return s;
}

static void image_fini(void *state)
{
    image_state_t *s = state;
    zf_sobel_gpu_destroy(&s->gpu);
    free(s);
}

#define ROWS_PER_STEP 64

/* sobel: P5 image in, P5 edge magnitude of the same size out (rule in zf_image.h). */
static int run_sobel(void *state, zf_job_t *job)
{
    image_state_t *s = state;
    zf_pgm_t img;
    char err[256];
    if (zf_pgm_parse(zf_job_data(job), zf_job_size(job), &img, err, sizeof err) < 0)
        return zf_job_fail(job, "sobel: %s", err);
    char hdr[ZF_PGM_HEADER_MAX];
    size_t hlen = zf_pgm_header(hdr, img.width, img.height);
    size_t npix = (size_t)img.width * (size_t)img.height;
    uint8_t *out = zf_job_output_alloc(job, hlen + npix);
    if (!out)
        return zf_job_fail(job, "sobel: out of memory for a %dx%d output", img.width, img.height);
    memcpy(out, hdr, hlen);
    if (s->gpu) {
        if (zf_sobel_gpu_run(s->gpu, img.pixels, out + hlen, img.width, img.height, err,
                             sizeof err) < 0)
            return zf_job_fail(job, "sobel on %s: %s", zf_job_device(job)->label, err);
        return 0;
    }
    for (int y = 0; y < img.height; y += ROWS_PER_STEP) {
        if (zf_job_cancelled(job))
            return zf_job_fail(job, "sobel: cancelled");
        int y1 = y + ROWS_PER_STEP < img.height ? y + ROWS_PER_STEP : img.height;
        zf_sobel_cpu_rows(img.pixels, out + hlen, img.width, img.height, y, y1);
        zf_job_progress(job, (double)y1 / img.height, NULL);
    }
    return 0;
}

/* One job of a sobel_batch call: its image parsed, its output allocated (header written). */
typedef struct {
    zf_pgm_t img;
    uint8_t *pixels_out; /* NULL: this job has failed already */
} sobel_item_t;

static void sobel_item(zf_job_t *job, sobel_item_t *it)
{
    char err[256], hdr[ZF_PGM_HEADER_MAX];
    it->pixels_out = NULL;
    if (zf_pgm_parse(zf_job_data(job), zf_job_size(job), &it->img, err, sizeof err) < 0) {
        zf_job_fail(job, "sobel: %s", err);
        return;
    }
    size_t hlen = zf_pgm_header(hdr, it->img.width, it->img.height);
    size_t npix = (size_t)it->img.width * (size_t)it->img.height;
    uint8_t *out = zf_job_output_alloc(job, hlen + npix);
    if (!out) {
        zf_job_fail(job, "sobel: out of memory for a %dx%d output", it->img.width, it->img.height);
        return;
    }
    memcpy(out, hdr, hlen);
    it->pixels_out = out + hlen;
}

#define SOBEL_BATCH 16

/* sobel_batch (issue 17): sobel, batched. On a GPU, the jobs whose images have the size of
   the first good one go in one launch (zf_sobel_gpu_run_batch); the others run one by one.
   On a CPU each image is computed alone (batching buys nothing there). A bad image fails
   its own job only; outputs are byte for byte sobel's. */
static int run_sobel_batch(void *state, zf_job_t **jobs, size_t n)
{
    image_state_t *s = state;
    sobel_item_t items[SOBEL_BATCH];
    const uint8_t *ins[SOBEL_BATCH];
    uint8_t *outs[SOBEL_BATCH];
    int same = 0, w = 0, h = 0;
    char err[256];
    for (size_t i = 0; i < n; i++) {
        sobel_item(jobs[i], &items[i]);
        if (!items[i].pixels_out)
            continue;
        if (!same) {
            w = items[i].img.width;
            h = items[i].img.height;
        }
        if (items[i].img.width == w && items[i].img.height == h) {
            ins[same] = items[i].img.pixels;
            outs[same++] = items[i].pixels_out;
            items[i].pixels_out = NULL; /* done by the batch below */
        }
    }
    if (s->gpu && same &&
        zf_sobel_gpu_run_batch(s->gpu, ins, outs, same, w, h, err, sizeof err) < 0)
        return zf_job_fail(jobs[0], "sobel on %s: %s", zf_job_device(jobs[0])->label, err);
    for (int i = 0; !s->gpu && i < same; i++)
        zf_sobel_cpu(ins[i], outs[i], w, h);
    for (size_t i = 0; i < n; i++) { /* the other sizes, one at a time */
        sobel_item_t *it = &items[i];
        if (!it->pixels_out)
            continue;
        if (!s->gpu)
            zf_sobel_cpu(it->img.pixels, it->pixels_out, it->img.width, it->img.height);
        else if (zf_sobel_gpu_run(s->gpu, it->img.pixels, it->pixels_out, it->img.width,
                                  it->img.height, err, sizeof err) < 0)
            zf_job_fail(jobs[i], "sobel on %s: %s", zf_job_device(jobs[i])->label, err);
    }
    return 0;
}

/* sobel_batch is a module of its own, not in zf_builtin_image: a batched function raises its
   worker's credits to its max_batch (zf_module.h), which every worker serving the built-in
   sobel would then pay for its other functions too. */
static const zf_function_t image_batch_functions[] = {
    {.name = "sobel_batch",
     .run_batch = run_sobel_batch,
     .max_batch = SOBEL_BATCH,
     .max_delay_us = 2000},
    {.name = NULL},
};

const zf_module_t zf_builtin_image_batch = {
    .abi = ZF_MODULE_ABI,
    .name = "image_batch",
    .init = image_init,
    .fini = image_fini,
    .functions = image_batch_functions,
};

static const zf_function_t image_functions[] = {
    {.name = "sobel", .run = run_sobel},
    {.name = NULL},
};

const zf_module_t zf_builtin_image = {
    .abi = ZF_MODULE_ABI,
    .name = "image",
    .init = image_init,
    .fini = image_fini,
    .functions = image_functions,
};
