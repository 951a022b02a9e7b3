/*  zf_heap — an indexed binary min-heap of pointers.

    The order is given by `less`; each element stores its own position through `setpos`,
    so an element can be removed from the middle in O(log n) (a cancelled job, a worker
    that left). The heap never owns its elements.
*/
#ifndef ZF_HEAP_H
#define ZF_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZF_HEAP_NONE UINT32_MAX /* position of an element that is in no heap */

typedef bool (*zf_heap_less_fn)(const void *a, const void *b);
typedef void (*zf_heap_setpos_fn)(void *elem, uint32_t pos);

typedef struct {
    void **v;
    uint32_t n, cap;
    zf_heap_less_fn less;
    zf_heap_setpos_fn setpos;
} zf_heap_t;

void zf_heap_init(zf_heap_t *h, zf_heap_less_fn less, zf_heap_setpos_fn setpos);
/* Frees the heap's array; the elements are the caller's. */
void zf_heap_release(zf_heap_t *h);
/* Returns 0, or -1 when memory runs out (the heap is unchanged). */
int zf_heap_push(zf_heap_t *h, void *elem);
/* The least element, or NULL. */
static inline void *zf_heap_top(const zf_heap_t *h)
{
    return h->n ? h->v[0] : NULL;
}
/* Removes and returns the least element, or NULL. */
void *zf_heap_pop(zf_heap_t *h);
/* Removes the element at position pos (as told through setpos). */
void zf_heap_remove(zf_heap_t *h, uint32_t pos);

#endif
