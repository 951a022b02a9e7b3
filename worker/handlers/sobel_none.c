/*  zf_sobel_gpu without CUDA: this build has no GPU support, so there is no GPU state. */
#include <stdio.h>

#include "zf_image.h"

zf_sobel_gpu_t *zf_sobel_gpu_new(int device, char *err, size_t errlen)
{
    snprintf(err, errlen, "gpu:%d: this zfleet was built without CUDA", device);
    return NULL;
}

int zf_sobel_gpu_run(zf_sobel_gpu_t *self, const uint8_t *in, uint8_t *out, int w, int h, char *err,
                     size_t errlen)
{
    (void)self, (void)in, (void)out, (void)w, (void)h;
    snprintf(err, errlen, "this zfleet was built without CUDA");
    return -1;
}

int zf_sobel_gpu_run_batch(zf_sobel_gpu_t *self, const uint8_t *const *in, uint8_t *const *out,
                           int n, int w, int h, char *err, size_t errlen)
{
    (void)self, (void)in, (void)out, (void)n, (void)w, (void)h;
    snprintf(err, errlen, "this zfleet was built without CUDA");
    return -1;
}

void zf_sobel_gpu_destroy(zf_sobel_gpu_t **self_p)
{
    *self_p = NULL;
}
