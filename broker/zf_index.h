/*  zf_index — the broker's jobs in id order: a skip list beside the id hash (b->jobs), so
    that a listing (JOBS, PROTOCOL.md §4.10) walks a page in id order from a cursor in
    O(log n + scanned), never the whole table, however many jobs there are.

    Internal to the broker. The index borrows its jobs: the broker adds a job when it enters
    b->jobs and removes it before freeing it. Memory: one node per job, about 40 bytes
    (expected 1.33 links). Out of memory: zfb_index_add returns -1 with nothing changed.
*/
#ifndef ZF_INDEX_H
#define ZF_INDEX_H

#include <stdbool.h>
#include <stdint.h>

#include "zf_job.h"

typedef struct zfb_index zfb_index_t;

/* A new, empty index (the caller owns it), or NULL when memory runs out. */
zfb_index_t *zfb_index_new(void);
/* Frees the index (not its jobs). NULL-safe; sets *p to NULL. */
void zfb_index_destroy(zfb_index_t **p);

/* Adds j under j->id, which must not be in the index. 0, or -1 when memory runs out. */
int zfb_index_add(zfb_index_t *x, job_t *j);
/* Removes the job with this id; no-op when there is none. */
void zfb_index_remove(zfb_index_t *x, uint64_t id);
/* Jobs in the index. */
uint64_t zfb_index_count(const zfb_index_t *x);

/* Walks the jobs with id > after in increasing id order, calling take(arg, job) on each,
   and stops once `limit` calls returned true or `budget` jobs were looked at. Returns the
   cursor for the next call (the last id looked at), or 0 when the walk reached the end. */
uint64_t zfb_index_walk(const zfb_index_t *x, uint64_t after, uint32_t limit, uint32_t budget,
                        bool (*take)(void *arg, job_t *j), void *arg);

#endif
