/*  zf_image — 8-bit grayscale PGM images and the Sobel edge filter behind the built-in
    `image` module (function `sobel`). The CPU (image.c) and CUDA (sobel.cu) variants share
    the per-pixel arithmetic below, so their outputs are bit-identical.

    Input: a binary PGM ("P5") per the netpbm spec: the magic "P5", whitespace, width,
    whitespace, height, whitespace, maxval, then exactly one whitespace character and the
    raster (width*height bytes, row-major, top row first). Whitespace is blanks, TABs, CRs
    and LFs (VT and FF too, as netpbm's reader accepts); before the maxval, '#' starts a
    comment that runs to the end of its line and counts as whitespace. maxval must be 255.
    Bytes after the raster (a second image) are ignored. Limits: 1 <= width, height <=
    ZF_PGM_MAX_DIM (so at most 256 Mi pixels).

    Sobel, exactly (P is the input, clamped: pixels outside the image repeat the nearest
    border pixel, i.e. P(x, y) = in[clamp(y, 0, h-1)][clamp(x, 0, w-1)]):
        Gx = P(x+1,y-1) + 2 P(x+1,y) + P(x+1,y+1) - P(x-1,y-1) - 2 P(x-1,y) - P(x-1,y+1)
        Gy = P(x-1,y+1) + 2 P(x,y+1) + P(x+1,y+1) - P(x-1,y-1) - 2 P(x,y-1) - P(x+1,y-1)
        out(x, y) = min(255, floor(sqrt(Gx*Gx + Gy*Gy) + 1/2))
    i.e. the magnitude rounded half up, then saturated. It is computed with integers only:
    with s = Gx*Gx + Gy*Gy (0 <= s <= 2 * 1020^2), out is the largest m in 0..255 with
    m*(m-1) < s, or 0 when s is 0. (sqrt(s) >= m - 1/2  <=>  s >= m*m - m + 1/4  <=>
    m*(m-1) < s for integers; sqrt(s) is never exactly halfway, so no tie rule is needed.)
    The output is a P5 image of the same size: "P5\n<w> <h>\n255\n" then the raster.
*/
#ifndef ZF_IMAGE_H
#define ZF_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define ZF_HD __host__ __device__
#else
#define ZF_HD
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define ZF_PGM_MAX_DIM 16384 /* pixels per side; 16384^2 = 256 Mi pixels */
#define ZF_PGM_HEADER_MAX 32 /* bytes zf_pgm_header can write */

/* A parsed image. pixels points into the buffer given to zf_pgm_parse (not owned). */
typedef struct {
    int width, height;
    const uint8_t *pixels;
} zf_pgm_t;

/* Parses a P5 image from data[0..len). Returns 0, or -1 with one clear sentence in err
   (not P5, maxval not 255, bad or truncated header, dimensions over the limit, truncated
   raster). Never reads past len and allocates nothing. */
int zf_pgm_parse(const void *data, size_t len, zf_pgm_t *img, char *err, size_t errlen);

/* Writes the header of a w x h, maxval 255 P5 image into buf (at least ZF_PGM_HEADER_MAX
   bytes). Returns its length. */
size_t zf_pgm_header(char *buf, int w, int h);

/* The Sobel output for rows [y0, y1) of a w x h image: out points at row 0 of a w*h
   buffer (only rows y0..y1-1 are written). */
void zf_sobel_cpu_rows(const uint8_t *in, uint8_t *out, int w, int h, int y0, int y1);
/* The whole image. */
void zf_sobel_cpu(const uint8_t *in, uint8_t *out, int w, int h);

/* The GPU variant: per-device state (device buffers that grow as needed, kept between
   jobs). Built from sobel.cu with CUDA, from sobel_none.c without.
   new: selects CUDA device `device` on the calling thread and creates the state; NULL with
   the reason in err when CUDA or the device is unusable. Owned by the caller.
   run: same contract as zf_sobel_cpu, on the GPU; must be called on the thread that called
   new (or another thread that selected the same device). Returns 0, or -1 with err.
   destroy: frees the device buffers and the state; NULL-safe; sets *self_p to NULL. */
typedef struct zf_sobel_gpu zf_sobel_gpu_t;
zf_sobel_gpu_t *zf_sobel_gpu_new(int device, char *err, size_t errlen);
int zf_sobel_gpu_run(zf_sobel_gpu_t *self, const uint8_t *in, uint8_t *out, int w, int h, char *err,
                     size_t errlen);
/* The batched variant (issue 17): n images (1..65535) of one size w x h, in[i] -> out[i],
   in one upload, one launch and one download. Returns 0, or -1 with the reason in err. */
int zf_sobel_gpu_run_batch(zf_sobel_gpu_t *self, const uint8_t *const *in, uint8_t *const *out,
                           int n, int w, int h, char *err, size_t errlen);
void zf_sobel_gpu_destroy(zf_sobel_gpu_t **self_p);

#ifdef __cplusplus
}
#endif

/* ------------------------------------------------------------------ shared arithmetic */

/* min(255, round-half-up(sqrt(s))), integers only: the largest m in 0..255 with
   m*(m-1) < s (m*(m-1) grows with m, so a binary search over its 8 bits finds it). */
static inline ZF_HD uint8_t zf_sobel_round(int32_t s)
{
    int32_t m = 0;
    for (int32_t bit = 128; bit; bit >>= 1) {
        int32_t t = m | bit;
        if (t * (t - 1) < s)
            m = t;
    }
    return (uint8_t)m;
}

/* The output pixel (x, y) of a w x h image, with clamped borders. */
static inline ZF_HD uint8_t zf_sobel_pixel(const uint8_t *in, int w, int h, int x, int y)
{
    int xm = x > 0 ? x - 1 : 0, xp = x < w - 1 ? x + 1 : w - 1;
    int ym = y > 0 ? y - 1 : 0, yp = y < h - 1 ? y + 1 : h - 1;
    const uint8_t *rm = in + (size_t)ym * (size_t)w, *r0 = in + (size_t)y * (size_t)w,
                  *rp = in + (size_t)yp * (size_t)w;
    int32_t gx = (rm[xp] + 2 * r0[xp] + rp[xp]) - (rm[xm] + 2 * r0[xm] + rp[xm]);
    int32_t gy = (rp[xm] + 2 * rp[x] + rp[xp]) - (rm[xm] + 2 * rm[x] + rm[xp]);
    return zf_sobel_round(gx * gx + gy * gy);
}

#endif
