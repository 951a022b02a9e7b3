/*  zf_heap: ordering, removal from the middle, positions kept up to date. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "zf_heap.h"

typedef struct {
    int key;
    int seq;
    uint32_t pos;
} item_t;

static bool less(const void *a, const void *b)
{
    const item_t *x = a, *y = b;
    return x->key != y->key ? x->key < y->key : x->seq < y->seq;
}

static void setpos(void *e, uint32_t pos)
{
    ((item_t *)e)->pos = pos;
}

Test(heap, pops_in_order_with_fifo_ties)
{
    zf_heap_t h;
    zf_heap_init(&h, less, setpos);
    enum { N = 5000 };
    static item_t items[N];
    srand(7);
    for (int i = 0; i < N; i++) {
        items[i] = (item_t){rand() % 50, i, ZF_HEAP_NONE};
        cr_assert_eq(zf_heap_push(&h, &items[i]), 0);
    }
    item_t *prev = NULL;
    for (int i = 0; i < N; i++) {
        item_t *it = zf_heap_pop(&h);
        cr_assert_not_null(it);
        cr_assert_eq(it->pos, ZF_HEAP_NONE);
        if (prev)
            cr_assert(!less(it, prev), "heap order broken at %d", i);
        prev = it;
    }
    cr_assert_null(zf_heap_pop(&h));
    zf_heap_release(&h);
}

Test(heap, remove_from_middle_keeps_order_and_positions)
{
    zf_heap_t h;
    zf_heap_init(&h, less, setpos);
    enum { N = 1000 };
    static item_t items[N];
    for (int i = 0; i < N; i++) {
        items[i] = (item_t){(i * 7919) % 101, i, ZF_HEAP_NONE};
        zf_heap_push(&h, &items[i]);
    }
    for (int i = 0; i < N; i += 3) {
        cr_assert_neq(items[i].pos, ZF_HEAP_NONE);
        cr_assert_eq(h.v[items[i].pos], &items[i], "position of %d is stale", i);
        zf_heap_remove(&h, items[i].pos);
        cr_assert_eq(items[i].pos, ZF_HEAP_NONE);
    }
    int left = 0;
    item_t *prev = NULL, *it;
    while ((it = zf_heap_pop(&h))) {
        cr_assert_neq(it->seq % 3, 0, "removed item %d came back", it->seq);
        if (prev)
            cr_assert(!less(it, prev));
        prev = it;
        left++;
    }
    cr_assert_eq(left, N - (N + 2) / 3);
    zf_heap_release(&h);
}
