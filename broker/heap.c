/*  zf_heap — see zf_heap.h. */
#include "zf_heap.h"

#include <assert.h>
#include <stdlib.h>

void zf_heap_init(zf_heap_t *h, zf_heap_less_fn less, zf_heap_setpos_fn setpos)
{
    h->v = NULL;
    h->n = h->cap = 0;
    h->less = less;
    h->setpos = setpos;
}

void zf_heap_release(zf_heap_t *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

static void place(zf_heap_t *h, uint32_t i, void *e)
{
    h->v[i] = e;
    h->setpos(e, i);
}

static void sift_up(zf_heap_t *h, uint32_t i)
{
    void *e = h->v[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!h->less(e, h->v[parent]))
            break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, e);
}

static void sift_down(zf_heap_t *h, uint32_t i)
{
    void *e = h->v[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= h->n)
            break;
        if (child + 1 < h->n && h->less(h->v[child + 1], h->v[child]))
            child++;
        if (!h->less(h->v[child], e))
            break;
        place(h, i, h->v[child]);
        i = child;
    }
    place(h, i, e);
}

int zf_heap_push(zf_heap_t *h, void *elem)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 64;
        void **v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n] = elem;
    sift_up(h, h->n++);
    return 0;
}

void *zf_heap_pop(zf_heap_t *h)
{
    if (!h->n)
        return NULL;
    void *top = h->v[0];
    zf_heap_remove(h, 0);
    return top;
}

void zf_heap_remove(zf_heap_t *h, uint32_t pos)
{
    assert(pos < h->n);
    void *gone = h->v[pos];
    h->setpos(gone, ZF_HEAP_NONE);
    h->n--;
    if (pos == h->n)
        return;
    place(h, pos, h->v[h->n]);
    if (pos > 0 && h->less(h->v[pos], h->v[(pos - 1) / 2]))
        sift_up(h, pos);
    else
        sift_down(h, pos);
}
