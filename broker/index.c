/*  zf_index — jobs in id order (a skip list). See zf_index.h. */
#include "zf_index.h"

#include <assert.h>
#include <stdlib.h>

#define LEVELS 24 /* enough for 4^24 jobs at p = 1/4 */

typedef struct node {
    uint64_t id;
    job_t *job;
    struct node *next[]; /* one per level the node is on */
} node_t;

struct zfb_index {
    node_t *head; /* a sentinel on every level; its id is never compared */
    int level;    /* levels in use, 1..LEVELS */
    uint64_t count;
    uint64_t rng; /* xorshift state for node levels */
};

zfb_index_t *zfb_index_new(void)
{
    zfb_index_t *x = calloc(1, sizeof *x);
    if (x)
        x->head = calloc(1, sizeof *x->head + LEVELS * sizeof(node_t *));
    if (!x || !x->head) {
        free(x);
        return NULL;
    }
    x->level = 1;
    x->rng = 0x9e3779b97f4a7c15ull;
    return x;
}

void zfb_index_destroy(zfb_index_t **p)
{
    zfb_index_t *x = *p;
    if (!x)
        return;
    *p = NULL;
    for (node_t *n = x->head, *next; n; n = next) {
        next = n->next[0];
        free(n);
    }
    free(x);
}

/* 1 + the number of heads before the first tail, p = 1/4 each. */
static int random_level(zfb_index_t *x)
{
    x->rng ^= x->rng << 13;
    x->rng ^= x->rng >> 7;
    x->rng ^= x->rng << 17;
    uint64_t r = x->rng;
    int lv = 1;
    while (lv < LEVELS && (r & 3) == 0) {
        lv++;
        r >>= 2;
    }
    return lv;
}

/* Fills upd[i] with the last node before id on level i; returns the level-0 successor. */
static node_t *find(const zfb_index_t *x, uint64_t id, node_t **upd)
{
    node_t *n = x->head;
    for (int i = x->level - 1; i >= 0; i--) {
        while (n->next[i] && n->next[i]->id < id)
            n = n->next[i];
        if (upd)
            upd[i] = n;
    }
    return n->next[0];
}

int zfb_index_add(zfb_index_t *x, job_t *j)
{
    node_t *upd[LEVELS];
    node_t *at = find(x, j->id, upd);
    assert(!at || at->id != j->id);
    (void)at;
    int lv = random_level(x);
    node_t *n = malloc(sizeof *n + (size_t)lv * sizeof(node_t *));
    if (!n)
        return -1;
    n->id = j->id;
    n->job = j;
    for (int i = x->level; i < lv; i++)
        upd[i] = x->head;
    if (lv > x->level)
        x->level = lv;
    for (int i = 0; i < lv; i++) {
        n->next[i] = upd[i]->next[i];
        upd[i]->next[i] = n;
    }
    x->count++;
    return 0;
}

void zfb_index_remove(zfb_index_t *x, uint64_t id)
{
    node_t *upd[LEVELS];
    node_t *n = find(x, id, upd);
    if (!n || n->id != id)
        return;
    for (int i = 0; i < x->level && upd[i]->next[i] == n; i++)
        upd[i]->next[i] = n->next[i];
    while (x->level > 1 && !x->head->next[x->level - 1])
        x->level--;
    x->count--;
    free(n);
}

uint64_t zfb_index_count(const zfb_index_t *x)
{
    return x->count;
}

uint64_t zfb_index_walk(const zfb_index_t *x, uint64_t after, uint32_t limit, uint32_t budget,
                        bool (*take)(void *arg, job_t *j), void *arg)
{
    node_t *n = find(x, after + 1, NULL);
    uint32_t taken = 0, seen = 0;
    uint64_t last = after;
    for (; n && taken < limit && seen < budget; n = n->next[0], seen++) {
        last = n->id;
        taken += take(arg, n->job);
    }
    return n ? last : 0;
}
