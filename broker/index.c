/*  zf_index — jobs in id order, in sorted slices of the id range. See zf_index.h.

    A resize moves the jobs a few slices at a time (the way Redis rehashes its dicts), so no
    add or remove pays for all of them at once (moving a million jobs in one go took 60 ms).
    While it runs there are two tables: the old one's slices [0, moved) are already in the
    new one, the rest are not. Slices follow the id order in both, so every id below the
    `moved` boundary is in the new table and every id at or above it in the old one, and a
    walk reads the new table up to the boundary and the old one after it. */
#include "zf_index.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Old slices moved per add or remove while a resize runs: a doubling (4 jobs per old slice)
   ends long before the next is due, and a halving (1 job per 2 slices) before the next. */
#define MOVE_STEP 8
#define ID_BITS 53    /* ids are below 2^53 (ZF_IDS_MAX); larger ones share the last slice */
#define MIN_LOG 8     /* never fewer than 256 slices */
#define GROW_LOAD 4   /* more jobs than this per slice on average: twice the slices */
#define SHRINK_LOAD 2 /* fewer than one job per this many slices: half the slices */
#define FIRST_CAP 8   /* entries in a slice's array, at least (see cap_for) */
#define GIVE_BACK (64 * 1024) /* bytes of a resized table unmapped at a time (page multiple) */

typedef struct {
    uint64_t id;
    job_t *job;
} entry_t;

typedef struct {
    entry_t *e; /* sorted by id; NULL when cap is 0 */
    uint32_t len, cap;
} slice_t;

typedef struct {
    slice_t *s;     /* 1 << log slices; slice i holds the ids whose top `log` bits are i */
    uint64_t *used; /* bit i: slice i is not empty (what a walk skips by) */
    size_t gone;    /* bytes at the start of s already given back (moved slices) */
    int log;
} table_t;

struct zfb_index {
    table_t t;    /* where every job is once a resize has ended */
    table_t old;  /* during a resize, the table being moved into t; old.s is NULL otherwise */
    size_t moved; /* old's slices [0, moved) are empty, their jobs in t (a multiple of 2
                     when halving, so that t's slice k never holds half a pair) */
    uint64_t count;
};

static size_t nslices(const table_t *t)
{
    return (size_t)1 << t->log;
}

static size_t slice_of(const table_t *t, uint64_t id)
{
    uint64_t i = id >> (ID_BITS - t->log), last = nslices(t) - 1;
    return i > last ? last : (size_t)i;
}

/* The first position in s whose id is >= id (s->len when none). */
static uint32_t lower(const slice_t *s, uint64_t id)
{
    uint32_t lo = 0, hi = s->len;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->e[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void mark(table_t *t, size_t i, bool on)
{
    uint64_t bit = 1ull << (i % 64);
    if (on)
        t->used[i / 64] |= bit;
    else
        t->used[i / 64] &= ~bit;
}

/* The first non-empty slice of t in [i, end), or end when there is none. */
static size_t next_used(const table_t *t, size_t i, size_t end)
{
    while (i < end) {
        uint64_t w = t->used[i / 64] >> (i % 64);
        if (w) {
            size_t at = i + (size_t)__builtin_ctzll(w);
            return at < end ? at : end;
        }
        i = (i / 64 + 1) * 64;
    }
    return end;
}

/* A table's arrays come straight from mmap: zero pages the kernel gives as they are first
   touched, and back to it whole when freed. From malloc, a large array could come from the
   heap instead (glibc raises its mmap threshold after a large free), which calloc must
   clear at once and free may consolidate: milliseconds in one add at a million jobs. */
static void *zalloc(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void zfree(void *p, size_t n)
{
    if (p)
        munmap(p, n);
}

static size_t slices_bytes(const table_t *t)
{
    return nslices(t) * sizeof(slice_t);
}

static size_t used_bytes(const table_t *t)
{
    return (nslices(t) + 63) / 64 * sizeof(uint64_t);
}

static void table_free(table_t *t)
{
    for (size_t i = t->gone / sizeof *t->s; t->s && i < nslices(t); i++)
        free(t->s[i].e);
    if (t->s)
        zfree((char *)t->s + t->gone, slices_bytes(t) - t->gone);
    zfree(t->used, used_bytes(t));
    *t = (table_t){0};
}

/* Gives back the whole GIVE_BACK blocks of old slices that a resize has moved: the table is
   unmapped as it empties, not all at once at the end (a millisecond at a million jobs). */
static void give_back(table_t *o, size_t moved)
{
    size_t done = moved * sizeof *o->s / GIVE_BACK * GIVE_BACK;
    if (done > o->gone && done < slices_bytes(o)) {
        zfree((char *)o->s + o->gone, done - o->gone);
        o->gone = done;
    }
}

static int table_new(table_t *t, int log)
{
    *t = (table_t){.log = log};
    t->s = zalloc(slices_bytes(t));
    t->used = zalloc(used_bytes(t));
    if (t->s && t->used)
        return 0;
    table_free(t);
    return -1;
}

/* The capacity a slice of n entries gets: FIRST_CAP, or the power of two above. Nearly
   every slice then has the same size of array, which malloc reuses at once; arrays of many
   sizes, freed and asked for by the thousand while a resize runs, made one malloc sort
   them all through glibc's unsorted bin (30 ms once, at a million jobs). */
static uint32_t cap_for(uint32_t n)
{
    uint32_t cap = FIRST_CAP;
    while (cap < n)
        cap *= 2;
    return cap;
}

/* Fills t's empty slice i with the n entries of a and then the m of b (sorted, all of them
   slice i's); -1 without memory. */
static int fill(table_t *t, size_t i, const entry_t *a, uint32_t n, const entry_t *b, uint32_t m)
{
    if (!n && !m)
        return 0;
    slice_t *s = &t->s[i];
    assert(!s->len && !s->e);
    uint32_t cap = cap_for(n + m);
    if (!(s->e = malloc(cap * sizeof *s->e)))
        return -1;
    if (n) /* (an empty slice's array is NULL, which memcpy may not be given) */
        memcpy(s->e, a, n * sizeof *a);
    if (m)
        memcpy(s->e + n, b, m * sizeof *b);
    s->len = n + m;
    s->cap = cap;
    mark(t, i, true);
    return 0;
}

static void empty(table_t *t, size_t i)
{
    free(t->s[i].e);
    t->s[i] = (slice_t){0};
    mark(t, i, false);
}

/* Moves the next old slice (doubling) or pair of slices (halving) into t. -1 when memory
   runs out: nothing moved, tried again at the next add or remove. */
static int move_next(zfb_index_t *x)
{
    table_t *o = &x->old, *t = &x->t;
    size_t i = x->moved;
    if (t->log > o->log) { /* old slice i splits into t's 2i and 2i + 1 */
        slice_t *s = &o->s[i];
        /* (ids past 2^53, in old's last slice, go on to t's last, 2i + 1) */
        uint32_t half = lower(s, (uint64_t)(2 * i + 1) << (ID_BITS - t->log));
        if (fill(t, 2 * i, s->e, half, NULL, 0) < 0 ||
            fill(t, 2 * i + 1, s->e + half, s->len - half, NULL, 0) < 0) {
            if (t->s[2 * i].e)
                empty(t, 2 * i);
            return -1;
        }
        empty(o, i);
        x->moved = i + 1;
        return 0;
    }
    /* old slices i and i + 1 join into t's i / 2 */
    slice_t *a = &o->s[i], *b = &o->s[i + 1];
    if (fill(t, i / 2, a->e, a->len, b->e, b->len) < 0)
        return -1;
    empty(o, i);
    empty(o, i + 1);
    x->moved = i + 2;
    return 0;
}

/* One step of a running resize; ends it once every old slice is moved. */
static void move_step(zfb_index_t *x)
{
    for (int k = 0; k < MOVE_STEP && x->moved < nslices(&x->old); k++)
        if (move_next(x) < 0)
            return;
    if (x->moved == nslices(&x->old))
        table_free(&x->old);
    else
        give_back(&x->old, x->moved);
}

/* Starts moving the jobs into 1 << log slices. Without memory nothing starts (tried again
   at the next add or remove that calls for it). */
static void start_resize(zfb_index_t *x, int log)
{
    table_t t;
    if (table_new(&t, log) < 0)
        return;
    x->old = x->t;
    x->t = t;
    x->moved = 0;
    move_step(x);
}

/* The table that holds (or is to hold) id. */
static table_t *table_of(zfb_index_t *x, uint64_t id)
{
    return x->old.s && slice_of(&x->old, id) >= x->moved ? &x->old : &x->t;
}

/* Slices of t that a walk reads: all of them, or during a resize those below the boundary. */
static size_t t_end(const zfb_index_t *x)
{
    if (!x->old.s)
        return nslices(&x->t);
    return x->t.log > x->old.log ? 2 * x->moved : x->moved / 2;
}

zfb_index_t *zfb_index_new(void)
{
    zfb_index_t *x = calloc(1, sizeof *x);
    if (!x || table_new(&x->t, MIN_LOG) < 0) {
        free(x);
        return NULL;
    }
    return x;
}

void zfb_index_destroy(zfb_index_t **p)
{
    zfb_index_t *x = *p;
    if (!x)
        return;
    *p = NULL;
    table_free(&x->t);
    table_free(&x->old);
    free(x);
}

int zfb_index_add(zfb_index_t *x, job_t *j)
{
    table_t *t = table_of(x, j->id);
    size_t i = slice_of(t, j->id);
    slice_t *s = &t->s[i];
    if (s->len == s->cap) {
        uint32_t cap = cap_for(s->len + 1);
        entry_t *e = realloc(s->e, cap * sizeof *e);
        if (!e)
            return -1;
        s->e = e;
        s->cap = cap;
    }
    uint32_t at = lower(s, j->id);
    assert(at == s->len || s->e[at].id != j->id);
    memmove(s->e + at + 1, s->e + at, (s->len - at) * sizeof *s->e);
    s->e[at] = (entry_t){j->id, j};
    s->len++;
    mark(t, i, true);
    x->count++;
    if (x->old.s)
        move_step(x);
    else if (x->count > GROW_LOAD * nslices(&x->t) && x->t.log < ID_BITS)
        start_resize(x, x->t.log + 1);
    return 0;
}

void zfb_index_remove(zfb_index_t *x, uint64_t id)
{
    table_t *t = table_of(x, id);
    size_t i = slice_of(t, id);
    slice_t *s = &t->s[i];
    uint32_t at = lower(s, id);
    if (at == s->len || s->e[at].id != id)
        return;
    memmove(s->e + at, s->e + at + 1, (s->len - at - 1) * sizeof *s->e);
    if (!--s->len) /* an emptied slice gives its memory back: slack stays bounded */
        empty(t, i);
    x->count--;
    if (x->old.s)
        move_step(x);
    else if (x->t.log > MIN_LOG && SHRINK_LOAD * x->count < nslices(&x->t))
        start_resize(x, x->t.log - 1);
}

uint64_t zfb_index_count(const zfb_index_t *x)
{
    return x->count;
}

typedef struct {
    uint32_t limit, budget, taken, seen;
    uint64_t last;
    bool (*take)(void *arg, job_t *j);
    void *arg;
} walk_t;

/* Walks t's slices [i, end) from the first id >= from. True when it stopped at the limit or
   the budget with a job still to look at. */
static bool scan(walk_t *w, const table_t *t, size_t i, size_t end, uint64_t from)
{
    if (i >= end)
        return false;
    uint32_t at = lower(&t->s[i], from);
    for (; i < end; i = next_used(t, i + 1, end), at = 0)
        for (const slice_t *s = &t->s[i]; at < s->len; at++) {
            if (w->taken >= w->limit || w->seen >= w->budget)
                return true;
            w->last = s->e[at].id;
            w->seen++;
            w->taken += w->take(w->arg, s->e[at].job);
        }
    return false;
}

uint64_t zfb_index_walk(const zfb_index_t *x, uint64_t after, uint32_t limit, uint32_t budget,
                        bool (*take)(void *arg, job_t *j), void *arg)
{
    if (after == UINT64_MAX)
        return 0;
    walk_t w = {.limit = limit, .budget = budget, .last = after, .take = take, .arg = arg};
    uint64_t from = after + 1;
    const table_t *o = &x->old;
    bool stopped;
    if (o->s && slice_of(o, from) >= x->moved) /* past the boundary: the old table only */
        stopped = scan(&w, o, slice_of(o, from), nslices(o), from);
    else /* the new table up to the boundary, then every id of the old one */
        stopped = scan(&w, &x->t, slice_of(&x->t, from), t_end(x), from) ||
                  (o->s && scan(&w, o, x->moved, nslices(o), 0));
    return stopped ? w.last : 0; /* stopped: the cursor is the last id looked at */
}
