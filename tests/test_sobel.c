/*  The `sobel` function of the built-in image module: the rounding rule, PGM parsing, the
    CPU output against an independently computed reference (tests/data/make_sobel_ref.py),
    GPU against CPU byte for byte where a GPU exists, and jobs through real processes. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "zf_gpu.h"
#include "handlers/zf_image.h"

TestSuite(sobel, .fini = zt_kill_all);

/* A file of the source tree. __FILE__ is this file's path as the compiler saw it: absolute,
   or relative to the build directory. */
static const char *src_path(const char *rel)
{
    static char bufs[4][1024];
    static int slot;
    char *b = bufs[slot++ % 4];
    char dir[512];
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    if (dir[0] == '/')
        snprintf(b, sizeof bufs[0], "%s/../%s", dir, rel);
    else
        snprintf(b, sizeof bufs[0], "%s/%s/../%s", zt_build_dir(), dir, rel);
    return b;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* The whole output file (header + raster) the module produces for an input file. */
static uint8_t *sobel_file_cpu(const char *path, size_t *outlen)
{
    size_t len;
    uint8_t *in = slurp(path, &len);
    zf_pgm_t img;
    char err[256];
    cr_assert_eq(zf_pgm_parse(in, len, &img, err, sizeof err), 0, "%s: %s", path, err);
    char hdr[ZF_PGM_HEADER_MAX];
    size_t hlen = zf_pgm_header(hdr, img.width, img.height);
    size_t n = (size_t)img.width * (size_t)img.height;
    uint8_t *out = malloc(hlen + n);
    memcpy(out, hdr, hlen);
    zf_sobel_cpu(img.pixels, out + hlen, img.width, img.height);
    free(in);
    *outlen = hlen + n;
    return out;
}

static void assert_same_image(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                              const char *what)
{
    cr_assert_eq(alen, blen, "%s: %zu bytes, reference has %zu", what, alen, blen);
    for (size_t i = 0; i < alen; i++)
        cr_assert_eq(a[i], b[i], "%s: byte %zu is %u, reference %u", what, i, a[i], b[i]);
}

/* ------------------------------------------------------------------ the arithmetic */

Test(sobel, rounding_rule_is_round_half_up_of_the_true_magnitude_for_every_sum)
{
    /* every value Gx^2 + Gy^2 can take lies in 0 .. 2 * 1020^2 */
    for (int32_t s = 0; s <= 2 * 1020 * 1020; s++) {
        double m = floor(sqrt((double)s) + 0.5);
        unsigned want = m > 255 ? 255 : (unsigned)m;
        cr_assert_eq(zf_sobel_round(s), want, "s=%d: got %u, want %u", s, zf_sobel_round(s), want);
    }
}

Test(sobel, flat_image_has_no_edges_and_a_step_saturates)
{
    uint8_t in[4 * 3], out[4 * 3];
    memset(in, 77, sizeof in);
    zf_sobel_cpu(in, out, 4, 3);
    for (int i = 0; i < 12; i++)
        cr_assert_eq(out[i], 0);
    uint8_t one = 200, o1;
    zf_sobel_cpu(&one, &o1, 1, 1);
    cr_assert_eq(o1, 0, "a 1x1 image has no gradient");
    /* a vertical 0 | 255 step: Gx = 4 * 255 at the step, far above 255 */
    uint8_t step[4] = {0, 0, 255, 255}, so[4];
    zf_sobel_cpu(step, so, 4, 1);
    cr_assert_eq(so[0], 0);
    cr_assert_eq(so[1], 255);
    cr_assert_eq(so[2], 255);
    cr_assert_eq(so[3], 0);
}

/* ------------------------------------------------------------------ parsing */

Test(sobel, pgm_header_comments_and_whitespace_are_accepted)
{
    static const struct {
        const char *hdr;
        int w, h;
    } ok[] = {
        {"P5\n3 2\n255\n", 3, 2},
        {"P5 3 2 255 ", 3, 2},
        {"P5\t3\r\n2\r255\r", 3, 2},
        {"P5#c\n3#c\n2 # dims\n# more\n255\n", 3, 2},
        {"P5\n# comment with 999 999\n\n  3   2\n255\t", 3, 2},
        {"P5\n0003 02\n255\n", 3, 2},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        uint8_t buf[128];
        size_t hl = strlen(ok[i].hdr);
        memcpy(buf, ok[i].hdr, hl);
        for (int k = 0; k < 6; k++)
            buf[hl + k] = (uint8_t)(10 * k);
        zf_pgm_t img;
        char err[256] = "";
        cr_assert_eq(zf_pgm_parse(buf, hl + 6, &img, err, sizeof err), 0, "header %zu: %s", i, err);
        cr_assert_eq(img.width, ok[i].w);
        cr_assert_eq(img.height, ok[i].h);
        cr_assert_eq(img.pixels, buf + hl, "header %zu: raster starts after one whitespace", i);
    }
}

/* A payload and a phrase its error must contain. */
typedef struct {
    const char *name;
    const char *data;
    size_t len;
    const char *reason;
} bad_t;

#define BAD(name, lit, reason)            \
    {                                     \
        name, lit, sizeof lit - 1, reason \
    }

static const bad_t bad_images[] = {
    BAD("empty", "", "not a PGM"),
    BAD("text", "hello world", "not a PGM"),
    BAD("plain PGM", "P2\n2 2\n255\n1 2 3 4\n", "P2"),
    BAD("PPM colour", "P6\n1 1\n255\nabc", "P6"),
    BAD("16-bit", "P5\n2 2\n65535\n12345678", "maxval 65535"),
    BAD("maxval 100", "P5\n2 2\n100\n1234", "maxval 100"),
    BAD("truncated raster", "P5\n4 4\n255\n0123456789", "truncated"),
    BAD("truncated header", "P5\n4 4", "header ends"),
    BAD("header only magic", "P5", "header ends"),
    BAD("no whitespace after magic", "P54 4 255\n", "expected whitespace"),
    BAD("garbage width", "P5\nab 4\n255\n", "width"),
    BAD("zero width", "P5\n0 4\n255\n", "empty"),
    BAD("too wide", "P5\n16385 1\n255\n", "too large"),
    BAD("huge", "P5\n100000 100000\n255\n\x01\x02", "too large"),
    BAD("overflow", "P5\n99999999999999999999999 1\n255\n", "larger than"),
    BAD("no separator after maxval", "P5\n1 1\n255", "followed by one whitespace"),
    BAD("comment after maxval", "P5\n1 1\n255#x\n\x01", "followed by one whitespace"),
};

Test(sobel, malformed_images_are_rejected_with_a_clear_reason)
{
    for (size_t i = 0; i < sizeof bad_images / sizeof *bad_images; i++) {
        const bad_t *b = &bad_images[i];
        zf_pgm_t img;
        char err[256] = "";
        cr_assert_eq(zf_pgm_parse(b->data, b->len, &img, err, sizeof err), -1, "%s: accepted",
                     b->name);
        cr_assert(strstr(err, b->reason), "%s: error '%s' does not say '%s'", b->name, err,
                  b->reason);
    }
}

/* ------------------------------------------------------------------ against references */

Test(sobel, cpu_output_matches_the_independent_reference_images)
{
    static const char *pairs[][2] = {
        {"examples/sample.pgm", "tests/data/sample_sobel.pgm"},
        {"tests/data/odd.pgm", "tests/data/odd_sobel.pgm"},
    };
    for (size_t i = 0; i < 2; i++) {
        size_t n, rn;
        uint8_t *out = sobel_file_cpu(src_path(pairs[i][0]), &n);
        uint8_t *ref = slurp(src_path(pairs[i][1]), &rn);
        assert_same_image(out, n, ref, rn, pairs[i][0]);
        free(out);
        free(ref);
    }
}

Test(sobel, gpu_output_is_byte_for_byte_the_cpu_output)
{
    char why[256] = "";
    if (zf_gpu_count(why, sizeof why) == 0)
        cr_skip("no GPU here, so the GPU-vs-CPU comparison is skipped (%s)", why);
    char err[256] = "";
    zf_sobel_gpu_t *g = zf_sobel_gpu_new(0, err, sizeof err);
    cr_assert_not_null(g, "%s", err);
    static const int sizes[][2] = {{1, 1},   {1, 7},     {7, 1},      {2, 2},
                                   {37, 23}, {257, 129}, {1024, 768}, {3000, 17}};
    uint64_t seed = 42;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        int w = sizes[i][0], h = sizes[i][1];
        size_t n = (size_t)w * (size_t)h;
        uint8_t *in = malloc(n), *c = malloc(n), *gp = malloc(n);
        for (size_t k = 0; k < n; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            /* mix noise with saturated blocks so both ends of the range are hit */
            in[k] = (k / 97) % 3 == 0 ? (uint8_t)((k / 5) % 2 * 255) : (uint8_t)(seed >> 56);
        }
        zf_sobel_cpu(in, c, w, h);
        cr_assert_eq(zf_sobel_gpu_run(g, in, gp, w, h, err, sizeof err), 0, "%s", err);
        for (size_t k = 0; k < n; k++)
            cr_assert_eq(gp[k], c[k], "%dx%d: pixel %zu GPU %u CPU %u", w, h, k, gp[k], c[k]);
        free(in);
        free(c);
        free(gp);
    }
    size_t len;
    uint8_t *file = slurp(src_path("examples/sample.pgm"), &len);
    zf_pgm_t img;
    cr_assert_eq(zf_pgm_parse(file, len, &img, err, sizeof err), 0);
    size_t n = (size_t)img.width * (size_t)img.height;
    uint8_t *c = malloc(n), *gp = malloc(n);
    zf_sobel_cpu(img.pixels, c, img.width, img.height);
    cr_assert_eq(zf_sobel_gpu_run(g, img.pixels, gp, img.width, img.height, err, sizeof err), 0);
    cr_assert(memcmp(c, gp, n) == 0, "sample.pgm: GPU and CPU differ");
    free(c);
    free(gp);
    free(file);
    zf_sobel_gpu_destroy(&g);
    cr_assert_null(g);
}

/* ------------------------------------------------------------------ through the fleet */

static void start_fleet(zt_env_t *env)
{
    zt_fleet_t up = {.hb_ms = 200, .workers = 1, .worker_args = ZT_ARGS("--device", "cpu")};
    zt_fleet_up(env, &up);
}

Test(sobel, sobel_job_returns_the_reference_edge_image)
{
    zt_env_t env;
    start_fleet(&env);
    size_t len, rlen;
    uint8_t *in = slurp(src_path("examples/sample.pgm"), &len);
    uint8_t *ref = slurp(src_path("tests/data/sample_sobel.pgm"), &rlen);
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "sobel", in, len, NULL, &id), 0, "%s", zf_client_error(c));
    zf_event_t *r = zf_client_wait(c, id, 20000);
    cr_assert_not_null(r, "%s", zf_client_error(c));
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "sobel: %s", r->text);
    assert_same_image(r->output, r->output_len, ref, rlen, "sobel job");
    zf_event_destroy(&r);
    zf_client_destroy(&c);
    free(in);
    free(ref);
}

Test(sobel, malformed_images_give_failed_and_the_worker_keeps_serving)
{
    zt_env_t env;
    start_fleet(&env);
    zf_client_t *c = zt_client(&env);
    for (size_t i = 0; i < sizeof bad_images / sizeof *bad_images; i++) {
        const bad_t *b = &bad_images[i];
        uint64_t id;
        cr_assert_eq(zf_client_submit(c, "sobel", b->data, b->len, NULL, &id), 0, "%s: %s", b->name,
                     zf_client_error(c));
        zf_event_t *r = zf_client_wait(c, id, 20000);
        cr_assert_not_null(r, "%s: %s", b->name, zf_client_error(c));
        cr_assert_eq(r->status, ZFLEET_FAILED, "%s: state %s", b->name,
                     zfleet_state_name(r->status));
        cr_assert(strstr(r->text, "sobel: ") && strstr(r->text, b->reason),
                  "%s: error '%s' does not say '%s'", b->name, r->text, b->reason);
        cr_assert_eq(r->attempts, 1, "%s: a bad input is not retried", b->name);
        zf_event_destroy(&r);
    }
    /* same worker, still alive and serving */
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "echo", "alive", 5, NULL, &id), 0);
    zf_event_t *r = zf_client_wait(c, id, 10000);
    cr_assert_not_null(r);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

Test(sobel, cli_submit_file_wait_writes_the_edge_image)
{
    zt_env_t env;
    start_fleet(&env);
    char outpath[256], text[2048];
    snprintf(outpath, sizeof outpath, "%s/edges.pgm", env.dir);
    int rc = zt_cli(&env, text, sizeof text, "submit", "sobel", "--file",
                    src_path("examples/sample.pgm"), "--out", outpath, "--wait", "--timeout",
                    "20000", NULL);
    cr_assert_eq(rc, 0, "zfleet submit exited %d: %s", rc, text);
    cr_assert(strstr(text, outpath), "the CLI says where the output went: %s", text);
    size_t n, rn;
    uint8_t *out = slurp(outpath, &n);
    uint8_t *ref = slurp(src_path("tests/data/sample_sobel.pgm"), &rn);
    assert_same_image(out, n, ref, rn, outpath);
    free(out);
    free(ref);
    /* a bad image: the CLI reports the failure with exit code 1 and writes nothing */
    char badpath[256], badout[256];
    snprintf(badpath, sizeof badpath, "%s/bad.pgm", env.dir);
    snprintf(badout, sizeof badout, "%s/bad-edges.pgm", env.dir);
    FILE *f = fopen(badpath, "wb");
    fputs("P2\n1 1\n255\n7\n", f);
    fclose(f);
    rc = zt_cli(&env, text, sizeof text, "submit", "sobel", "--file", badpath, "--out", badout,
                "--wait", "--timeout", "20000", NULL);
    cr_assert_eq(rc, 1, "a failed job exits 1, got %d: %s", rc, text);
    cr_assert_null(fopen(badout, "rb"), "no output file for a failed job");
}
