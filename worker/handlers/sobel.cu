/*  zf_sobel_gpu with CUDA — see zf_image.h. One thread per output pixel; the arithmetic is
    zf_sobel_pixel, the same inline function the CPU variant runs, so outputs are identical.

    The state keeps one input and one output buffer on the device and grows them when a
    larger image arrives, so a stream of jobs does not pay cudaMalloc each time. */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#include "zf_image.h"

struct zf_sobel_gpu {
    int cuda_index; /* the CUDA device number in this process (zf_device_t.cuda_index) */
    uint8_t *d_in, *d_out;
    size_t cap; /* bytes of each device buffer */
};

__global__ void sobel_kernel(const uint8_t *__restrict__ in, uint8_t *__restrict__ out, int w,
                             int h)
{
    int x = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    int y = (int)(blockIdx.y * blockDim.y + threadIdx.y);
    if (x < w && y < h)
        out[(size_t)y * (size_t)w + (size_t)x] = zf_sobel_pixel(in, w, h, x, y);
}

static int failed(cudaError_t e, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: %s", what, cudaGetErrorString(e));
    return -1;
}

/* cuda_index is zf_device_t.cuda_index (0: the one GPU CUDA_VISIBLE_DEVICES leaves this
   process), never zf_device_t.index, which is gpu:N's N and invalid here for N >= 1. */
extern "C" zf_sobel_gpu_t *zf_sobel_gpu_new(int cuda_index, char *err, size_t errlen)
{
    cudaError_t e = cudaSetDevice(cuda_index);
    if (e == cudaSuccess)
        e = cudaFree(0); /* creates the context now, at init, not during the first job */
    if (e != cudaSuccess) {
        failed(e, "cannot use the GPU", err, errlen);
        return NULL;
    }
    zf_sobel_gpu_t *g = (zf_sobel_gpu_t *)calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->cuda_index = cuda_index;
    return g;
}

static int reserve(zf_sobel_gpu_t *g, size_t n, char *err, size_t errlen)
{
    if (n <= g->cap)
        return 0;
    cudaFree(g->d_in);
    cudaFree(g->d_out);
    g->d_in = g->d_out = NULL;
    g->cap = 0;
    cudaError_t e = cudaMalloc((void **)&g->d_in, n);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&g->d_out, n);
    if (e != cudaSuccess) {
        cudaFree(g->d_in);
        g->d_in = NULL;
        return failed(e, "cudaMalloc", err, errlen);
    }
    g->cap = n;
    return 0;
}

extern "C" int zf_sobel_gpu_run(zf_sobel_gpu_t *g, const uint8_t *in, uint8_t *out, int w, int h,
                                char *err, size_t errlen)
{
    size_t n = (size_t)w * (size_t)h;
    if (reserve(g, n, err, errlen) < 0)
        return -1;
    cudaError_t e = cudaMemcpy(g->d_in, in, n, cudaMemcpyHostToDevice);
    if (e != cudaSuccess)
        return failed(e, "copy to the GPU", err, errlen);
    dim3 block(32, 8);
    dim3 grid((unsigned)(w + 31) / 32, (unsigned)(h + 7) / 8);
    sobel_kernel<<<grid, block>>>(g->d_in, g->d_out, w, h);
    e = cudaGetLastError();
    if (e != cudaSuccess)
        return failed(e, "kernel launch", err, errlen);
    e = cudaMemcpy(out, g->d_out, n, cudaMemcpyDeviceToHost); /* waits for the kernel */
    if (e != cudaSuccess)
        return failed(e, "copy from the GPU", err, errlen);
    return 0;
}

/* The batched variant (issue 17): n images of one size in one launch, blockIdx.z the image.
   The images travel as one contiguous block each way, so a batch costs one upload, one
   launch and one download instead of n of each: the fixed cost per call (launch latency,
   the copies' setup, the synchronisation) is paid once per batch. */
__global__ void sobel_batch_kernel(const uint8_t *__restrict__ in, uint8_t *__restrict__ out, int w,
                                   int h)
{
    int x = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    int y = (int)(blockIdx.y * blockDim.y + threadIdx.y);
    size_t img = (size_t)blockIdx.z * (size_t)w * (size_t)h;
    if (x < w && y < h)
        out[img + (size_t)y * (size_t)w + (size_t)x] = zf_sobel_pixel(in + img, w, h, x, y);
}

extern "C" int zf_sobel_gpu_run_batch(zf_sobel_gpu_t *g, const uint8_t *const *in,
                                      uint8_t *const *out, int n, int w, int h, char *err,
                                      size_t errlen)
{
    size_t npix = (size_t)w * (size_t)h;
    if (n < 1 || n > 65535)
        return failed(cudaErrorInvalidValue, "batch size", err, errlen);
    if (reserve(g, npix * (size_t)n, err, errlen) < 0)
        return -1;
    cudaError_t e = cudaSuccess;
    for (int i = 0; i < n && e == cudaSuccess; i++) /* queued: they run in order, before the
                                                       kernel on the same (default) stream */
        e = cudaMemcpyAsync(g->d_in + (size_t)i * npix, in[i], npix, cudaMemcpyHostToDevice);
    if (e != cudaSuccess)
        return failed(e, "copy to the GPU", err, errlen);
    dim3 block(32, 8);
    dim3 grid((unsigned)(w + 31) / 32, (unsigned)(h + 7) / 8, (unsigned)n);
    sobel_batch_kernel<<<grid, block>>>(g->d_in, g->d_out, w, h);
    e = cudaGetLastError();
    if (e != cudaSuccess)
        return failed(e, "kernel launch", err, errlen);
    for (int i = 0; i < n && e == cudaSuccess; i++)
        e = cudaMemcpy(out[i], g->d_out + (size_t)i * npix, npix, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess)
        return failed(e, "copy from the GPU", err, errlen);
    return 0;
}

extern "C" void zf_sobel_gpu_destroy(zf_sobel_gpu_t **self_p)
{
    zf_sobel_gpu_t *g = *self_p;
    if (!g)
        return;
    *self_p = NULL;
    cudaFree(g->d_in);
    cudaFree(g->d_out);
    free(g);
}
