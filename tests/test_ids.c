/*  zf_ids: ids are in [1, 2^53 - 1], never repeat (within a run, across reopens of a
    directory, past a failed reservation), are not sequential, and depend only on the key
    and the counter. Prints the cost of one id (ns/id); nothing here asserts a timing. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "zf_ids.h"

static char *tmpdir(void)
{
    char *d = strdup("/tmp/zf_ids_XXXXXX");
    cr_assert(d && mkdtemp(d), "mkdtemp");
    return d;
}

static void rm_rf(const char *d)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_assert_eq(system(cmd), 0);
}

static const char *path(const char *dir, const char *name)
{
    static char p[4][256];
    static int k;
    char *r = p[k++ % 4];
    snprintf(r, 256, "%s/%s", dir, name);
    return r;
}

static void put_file(const char *p, const void *data, size_t len)
{
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f, "%s", p);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* The file's contents (up to 63 bytes), NUL-terminated; "" when missing. */
static const char *file_text(const char *p)
{
    static char buf[64];
    buf[0] = 0;
    FILE *f = fopen(p, "rb");
    if (f) {
        buf[fread(buf, 1, sizeof buf - 1, f)] = 0;
        fclose(f);
    }
    return buf;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v[n] and returns the number of values that equal their predecessor. */
static size_t duplicates(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
    size_t d = 0;
    for (size_t i = 1; i < n; i++)
        d += v[i] == v[i - 1];
    return d;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

Test(ids, ids_are_in_range_at_every_counter_value)
{
    zf_ids_t *s = zf_ids_new(NULL);
    cr_assert_not_null(s);
    const uint64_t edges[] = {0, 1, 2, ZF_IDS_BLOCK, ZF_IDS_MAX - 2, ZF_IDS_MAX - 1};
    for (size_t i = 0; i < sizeof edges / sizeof *edges; i++) {
        uint64_t id = zf_ids_at(s, edges[i]);
        cr_assert(id >= 1 && id <= ZF_IDS_MAX, "counter %llu -> id %llu",
                  (unsigned long long)edges[i], (unsigned long long)id);
    }
    cr_assert_eq(zf_ids_at(s, ZF_IDS_MAX), 0, "a counter past the domain maps to nothing");
    uint64_t top = 0;
    for (int i = 0; i < 100000; i++) {
        uint64_t id = zf_ids_next(s);
        cr_assert(id >= 1 && id <= ZF_IDS_MAX, "id %llu out of range", (unsigned long long)id);
        top = id > top ? id : top;
    }
    /* spread over the whole space, not packed at the bottom (uniform ids all below 2^52:
       odds 2^-100000) */
    cr_assert_gt(top, 1ull << 52);
    zf_ids_destroy(&s);
    cr_assert_null(s);
    zf_ids_destroy(&s); /* NULL-safe */
}

/* A million ids from one directory-backed source, across a block reservation, are
   distinct; the same count from an in-memory source is timed. */
Test(ids, a_million_ids_are_distinct_across_a_block_boundary, .timeout = 60)
{
    char *d = tmpdir();
    zf_ids_t *s = zf_ids_new(d);
    cr_assert_not_null(s);
    size_t n = ZF_IDS_BLOCK + 50000;
    uint64_t *v = malloc(n * sizeof *v);
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++) {
        v[i] = zf_ids_next(s);
        cr_assert_neq(v[i], 0, "id %zu: %s", i, strerror(errno));
    }
    cr_assert_str_eq(file_text(path(d, "ids.next")), "2097152\n", "two blocks reserved");
    cr_assert_eq(duplicates(v, n), 0);
    zf_ids_destroy(&s);

    s = zf_ids_new(NULL);
    const size_t m = 1000000;
    double t0 = now_s();
    for (size_t i = 0; i < m; i++)
        v[i] = zf_ids_next(s);
    double ns = (now_s() - t0) * 1e9 / m;
    printf("ids: %.1f ns/id (%zu ids, in memory)\n", ns, m);
    cr_log_info("ids: %.1f ns/id", ns);
    cr_assert_eq(duplicates(v, m), 0);
    zf_ids_destroy(&s);
    free(v);
    rm_rf(d);
    free(d);
}

/* Consecutive ids go up about as often as down, and their steps differ: one id says
   nothing useful about the next one. Different keys give different sequences. */
Test(ids, ids_are_neither_increasing_nor_sequential)
{
    zf_ids_t *a = zf_ids_new(NULL), *b = zf_ids_new(NULL);
    cr_assert(a && b);
    const int n = 10000;
    uint64_t prev = zf_ids_next(a), prev_step = 0;
    int up = 0, same_step = 0, same_as_b = 0;
    for (int i = 1; i < n; i++) {
        uint64_t id = zf_ids_next(a), step = id - prev;
        up += id > prev;
        same_step += step == prev_step;
        same_as_b += id == zf_ids_next(b);
        prev = id;
        prev_step = step;
    }
    cr_assert(up > n * 4 / 10 && up < n * 6 / 10, "%d of %d steps went up", up, n - 1);
    cr_assert_lt(same_step, 3, "%d repeated steps", same_step);
    cr_assert_lt(same_as_b, 3, "two keys agreed on %d ids", same_as_b);
    /* low bits are as mixed as the high ones */
    int odd = 0;
    for (int i = 0; i < n; i++)
        odd += (int)(zf_ids_next(a) & 1);
    cr_assert(odd > n * 4 / 10 && odd < n * 6 / 10, "%d of %d ids odd", odd, n);
    zf_ids_destroy(&a);
    zf_ids_destroy(&b);
}

/* Two directories holding the same key and counter hand out the same ids. */
Test(ids, same_key_and_counter_give_the_same_ids)
{
    char *d1 = tmpdir(), *d2 = tmpdir();
    zf_ids_t *s = zf_ids_new(d1);
    cr_assert_not_null(s);
    zf_ids_destroy(&s); /* creates ids.key and ids.next (0) */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "cp -p '%s/ids.key' '%s/ids.next' '%s/'", d1, d1, d2);
    cr_assert_eq(system(cmd), 0);
    zf_ids_t *a = zf_ids_new(d1), *b = zf_ids_new(d2);
    cr_assert(a && b);
    for (int i = 0; i < 1000; i++) {
        uint64_t x = zf_ids_next(a);
        cr_assert_eq(x, zf_ids_next(b), "id %d differs", i);
        cr_assert_eq(x, zf_ids_at(a, (uint64_t)i), "id %d is not the permutation of %d", i, i);
    }
    zf_ids_destroy(&a);
    zf_ids_destroy(&b);
    rm_rf(d1);
    rm_rf(d2);
    free(d1);
    free(d2);
}

/* Each open of a directory starts past every block reserved before, so ids from earlier
   runs (however few were used) never come back; the key is private to its owner. */
Test(ids, reopened_directory_never_repeats_an_id)
{
    char *d = tmpdir();
    enum { RUNS = 4, PER = 1000 };
    uint64_t v[RUNS * PER];
    for (int r = 0; r < RUNS; r++) {
        zf_ids_t *s = zf_ids_new(d);
        cr_assert_not_null(s, "run %d", r);
        for (int i = 0; i < PER; i++) {
            v[r * PER + i] = zf_ids_next(s);
            cr_assert_neq(v[r * PER + i], 0);
        }
        /* the first id of run r is counter r * BLOCK: the reservation survived the reopen */
        cr_assert_eq(v[r * PER], zf_ids_at(s, (uint64_t)r * ZF_IDS_BLOCK), "run %d", r);
        zf_ids_destroy(&s);
        char want[32];
        snprintf(want, sizeof want, "%llu\n", (unsigned long long)(r + 1) * ZF_IDS_BLOCK);
        cr_assert_str_eq(file_text(path(d, "ids.next")), want);
    }
    cr_assert_eq(duplicates(v, RUNS * PER), 0);
    struct stat st;
    cr_assert_eq(stat(path(d, "ids.key"), &st), 0);
    cr_assert_eq(st.st_size, 16);
    cr_assert_eq(st.st_mode & 0777, 0600, "ids.key mode %o", st.st_mode & 0777);
    cr_assert_neq(access(path(d, "ids.next.tmp"), F_OK), 0, "temp file left behind");
    rm_rf(d);
    free(d);
}

/* When the next block cannot be written no id is handed out (0, errno set), and the
   source recovers by itself once the write succeeds, with no id skipped into reuse. */
Test(ids, failed_reservation_hands_out_nothing_and_recovers)
{
    char *d = tmpdir();
    zf_ids_t *s = zf_ids_new(d);
    cr_assert_not_null(s);
    /* a directory where the temp file must go: open(O_CREAT) fails with EISDIR, even as root */
    cr_assert_eq(mkdir(path(d, "ids.next.tmp"), 0700), 0);
    for (int i = 0; i < 3; i++) {
        errno = 0;
        cr_assert_eq(zf_ids_next(s), 0, "an id was handed out without its reservation");
        cr_assert_eq(errno, EISDIR, "errno %d", errno);
    }
    cr_assert_str_eq(file_text(path(d, "ids.next")), "0\n");
    cr_assert_eq(rmdir(path(d, "ids.next.tmp")), 0);
    cr_assert_eq(zf_ids_next(s), zf_ids_at(s, 0));
    cr_assert_str_eq(file_text(path(d, "ids.next")), "1048576\n");
    zf_ids_destroy(&s);
    rm_rf(d);
    free(d);
}

/* A damaged file, or one of the pair missing after ids were issued, stops the start
   (ids could repeat); a crash between creating the two files on first start does not. */
Test(ids, damaged_or_missing_state_is_refused)
{
    char *d = tmpdir();
    zf_ids_t *s = zf_ids_new(d);
    cr_assert_not_null(s);
    cr_assert_neq(zf_ids_next(s), 0);
    zf_ids_destroy(&s);
    char key[16];
    FILE *f = fopen(path(d, "ids.key"), "rb");
    cr_assert_not_null(f);
    cr_assert_eq(fread(key, 1, sizeof key, f), sizeof key);
    fclose(f);

    put_file(path(d, "ids.next"), "12x\n", 4);
    cr_assert_null(zf_ids_new(d), "a damaged ids.next was accepted");
    put_file(path(d, "ids.next"), "", 0);
    cr_assert_null(zf_ids_new(d), "an empty ids.next was accepted");
    put_file(path(d, "ids.next"), "9007199254740992\n", 17); /* 2^53 */
    cr_assert_null(zf_ids_new(d), "ids.next out of range was accepted");
    unlink(path(d, "ids.next"));
    cr_assert_null(zf_ids_new(d), "a key without its counter was accepted");
    put_file(path(d, "ids.next"), "1048576\n", 8);
    put_file(path(d, "ids.key"), key, 15);
    cr_assert_null(zf_ids_new(d), "a short key was accepted");
    unlink(path(d, "ids.key"));
    cr_assert_null(zf_ids_new(d), "a counter past 0 without its key was accepted");
    /* the crash window of a first start: ids.next says 0, no key yet */
    put_file(path(d, "ids.next"), "0\n", 2);
    s = zf_ids_new(d);
    cr_assert_not_null(s, "the first start's crash window was refused");
    cr_assert_neq(zf_ids_next(s), 0);
    zf_ids_destroy(&s);
    rm_rf(d);
    free(d);
}
