/*  zf_listing — one page of `zfleet jobs` (JOBS, PROTOCOL.md §4.10): the jobs that match a
    query, in id order after a cursor, packed as the REPLY document.

    Internal to the broker. Bounded work: a page looks at no more than ZF_JOBS_SCAN jobs of
    the id index (zf_index.h) whatever the filters, so a listing over millions of jobs is many
    short requests, each O(log n + ZF_JOBS_SCAN), and never stalls the loop; the document's
    "next" says where the following page starts (0: the walk is done).
*/
#ifndef ZF_LISTING_H
#define ZF_LISTING_H

#include <msgpack.h>
#include <stdint.h>

#include "../proto/zf_proto.h"
#include "zf_index.h"

typedef struct {
    uint64_t after; /* cursor: only ids above it */
    uint32_t limit; /* 1..ZF_JOBS_LIMIT_MAX */
    int state;      /* zf_state_t to match, or -1 for any */
    zf_str_t fn;    /* function to match; empty = any */
    zf_str_t tag;   /* one "k=v" the job's tags must hold; empty = any */
    uint32_t owner; /* only this owner's jobs (CURVE, not an admin); 0 = all */
} zfb_listing_query_t;

/* Packs into sb (initialised here; the caller frees or hands on sb->data) the map
   {"jobs": [{"id", "state", "function", "attempts", "tags"}...], "next": cursor,
   "scanned": jobs looked at}. Out of memory: zfb_oom. */
void zfb_listing_pack(msgpack_sbuffer *sb, const zfb_index_t *x, const zfb_listing_query_t *q);

#endif
