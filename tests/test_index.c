/*  zf_index (the broker's jobs in id order): every walk agrees with a sorted reference
    through adds and removes in any order, as the slices double and halve, with ids spread as
    the broker's are and bunched in one slice, up to and past 2^53. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "zf_index.h"

enum { N = 20000 };

static job_t jobs[N + 1]; /* jobs[i].id grows with i (see fresh) */
static bool in[N + 1];    /* the reference: which jobs are in the index */

static bool take_all(void *arg, job_t *j)
{
    uint64_t **out = arg;
    *(*out)++ = j->id;
    return true;
}

/* The whole index, walked in pages of `page`, must be exactly the reference, in order. */
static void check(const zfb_index_t *x, uint32_t page)
{
    static uint64_t got[N + 1];
    uint64_t *p = got, cursor = 0;
    do
        cursor = zfb_index_walk(x, cursor, page, page, take_all, &p);
    while (cursor);
    size_t k = 0, want = 0;
    for (uint64_t i = 1; i <= N; i++) {
        if (!in[i])
            continue;
        uint64_t id = jobs[i].id;
        want++;
        cr_assert(k < (size_t)(p - got), "id %lu missing from the walk", (unsigned long)id);
        cr_assert_eq(got[k], id, "walk position %zu: got %lu, want %lu", k, (unsigned long)got[k],
                     (unsigned long)id);
        k++;
    }
    cr_assert_eq((size_t)(p - got), want, "the walk returned %zu ids, the index holds %zu",
                 (size_t)(p - got), want);
    cr_assert_eq(zfb_index_count(x), want);
}

static void add(zfb_index_t *x, uint64_t i)
{
    cr_assert(!in[i]);
    cr_assert_eq(zfb_index_add(x, &jobs[i]), 0);
    in[i] = true;
}

static void del(zfb_index_t *x, uint64_t i)
{
    zfb_index_remove(x, jobs[i].id);
    in[i] = false;
}

/* An empty index, and ids i * stride + a little (the broker's ids are spread evenly over
   [1, 2^53); a stride of 1 puts them all in the first slice). */
static zfb_index_t *fresh_spread(uint64_t stride)
{
    memset(in, 0, sizeof in);
    for (uint64_t i = 0; i <= N; i++)
        jobs[i].id = i * stride + (stride > 8 ? i % 7 : 0);
    zfb_index_t *x = zfb_index_new();
    cr_assert_not_null(x);
    return x;
}

static zfb_index_t *fresh(void)
{
    return fresh_spread((1ull << 53) / (N + 1));
}

Test(index, a_stream_of_new_ids_and_oldest_first_removals)
{
    zfb_index_t *x = fresh();
    /* ids in increasing order, and once 1,000 are kept the oldest goes, now and then a
       little out of order */
    uint64_t oldest = 1;
    for (uint64_t i = 1; i <= N; i++) {
        add(x, i);
        if (i > 1000) {
            uint64_t victim = oldest + (i % 7 == 0 ? 3 : 0);
            while (victim <= i && !in[victim])
                victim++;
            if (victim <= i)
                del(x, victim);
            while (oldest <= i && !in[oldest])
                oldest++;
        }
        if (i % 2500 == 0)
            check(x, 97);
    }
    check(x, 1000);
    zfb_index_destroy(&x);
    cr_assert_null(x);
}

Test(index, removes_of_the_last_node_then_adds_past_it)
{
    zfb_index_t *x = fresh();
    for (uint64_t i = 1; i <= 5000; i++)
        add(x, i);
    /* the last i goes, one after the other, and adds after it land after the new last one */
    for (uint64_t i = 5000; i > 2000; i--) {
        del(x, i);
        if (i % 300 == 0) {
            add(x, i);
            check(x, 512);
            del(x, i);
        }
    }
    check(x, 512);
    for (uint64_t i = 2001; i <= 6000; i++)
        add(x, i);
    check(x, 333);
    /* empty it from the front, then use it again */
    for (uint64_t i = 1; i <= 6000; i++)
        del(x, i);
    check(x, 10);
    cr_assert_eq(zfb_index_count(x), 0);
    for (uint64_t i = 100; i <= 200; i++)
        add(x, i);
    check(x, 10);
    zfb_index_destroy(&x);
}

Test(index, random_adds_and_removes_agree_with_a_reference)
{
    zfb_index_t *x = fresh();
    srand(19);
    for (int round = 0; round < 200000; round++) {
        uint64_t i = 1 + (uint64_t)rand() % N;
        if (in[i])
            del(x, i);
        else
            add(x, i);
        if (round % 20000 == 0)
            check(x, 1 + (uint32_t)(rand() % 700));
    }
    check(x, 64);
    /* a removal of an id that is not there changes nothing */
    for (uint64_t i = 1; i <= N; i++)
        if (!in[i]) {
            zfb_index_remove(x, jobs[i].id);
            break;
        }
    check(x, 64);
    zfb_index_destroy(&x);
}

Test(index, a_walk_stops_at_its_budget_and_resumes_from_its_cursor)
{
    zfb_index_t *x = fresh_spread(1);
    for (uint64_t id = 10; id <= 100; id += 10)
        add(x, id);
    uint64_t got[16], *p = got;
    uint64_t cursor = zfb_index_walk(x, 0, 100, 3, take_all, &p);
    cr_assert_eq(p - got, 3);
    cr_assert_eq(cursor, 30);
    cursor = zfb_index_walk(x, cursor, 2, 100, take_all, &p);
    cr_assert_eq(p - got, 5);
    cr_assert_eq(got[4], 50);
    cursor = zfb_index_walk(x, 95, 100, 100, take_all, &p);
    cr_assert_eq(cursor, 0, "a walk that reaches the end returns 0");
    cr_assert_eq(got[5], 100);
    p = got;
    cr_assert_eq(zfb_index_walk(x, 100, 100, 100, take_all, &p), 0);
    cr_assert_eq(p, got, "nothing after the last id");
    zfb_index_destroy(&x);
}

Test(index, ids_bunched_in_one_slice_and_past_2_to_the_53)
{
    zfb_index_t *x = fresh_spread(1); /* 1..N: all in the first slice */
    for (uint64_t i = 1; i <= 3000; i++)
        add(x, i);
    check(x, 100);
    for (uint64_t i = 1; i <= 3000; i += 3)
        del(x, i);
    check(x, 100);
    /* ids no broker hands out (a damaged journal's) still come in order, last */
    jobs[N].id = UINT64_MAX;
    jobs[N - 1].id = (1ull << 53) + 5;
    jobs[N - 2].id = (1ull << 53) - 1;
    add(x, N);
    add(x, N - 2);
    add(x, N - 1);
    check(x, 7);
    uint64_t got[4], *p = got;
    cr_assert_eq(zfb_index_walk(x, (1ull << 53) - 2, 10, 10, take_all, &p), 0);
    cr_assert_eq(p - got, 3);
    cr_assert_eq(got[2], UINT64_MAX);
    p = got;
    cr_assert_eq(zfb_index_walk(x, UINT64_MAX, 10, 10, take_all, &p), 0);
    cr_assert_eq(p, got);
    zfb_index_destroy(&x);
}

Test(index, walks_agree_at_every_step_of_a_doubling_and_a_halving)
{
    zfb_index_t *x = fresh();
    /* 256 slices double past 1,024 jobs and again past 2,048, moving 8 slices per add, so
       many of these walks run with part of the jobs in the old table and part in the new */
    for (uint64_t i = 1; i <= 3000; i++) {
        add(x, i * 5 % 3001 + 1); /* 2..3001, each once */
        check(x, 1 + (uint32_t)(i % 50));
    }
    for (uint64_t i = 1; i <= 3001; i++)
        if (in[i]) {
            del(x, i);
            check(x, 1 + (uint32_t)(i % 70));
        }
    cr_assert_eq(zfb_index_count(x), 0);
    zfb_index_destroy(&x);
}
