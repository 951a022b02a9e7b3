/*  zf_listing — pages of the job listing. See zf_listing.h. */
#include "zf_listing.h"

#include <stdlib.h>
#include <string.h>

#include "zf_state.h"

typedef struct {
    const zfb_listing_query_t *q;
    job_t *page[ZF_JOBS_LIMIT_MAX];
    uint32_t n, scanned;
} walk_t;

/* The state a client is shown: a terminal job whose result waits for its commit still
   reads running (as STATUS says). */
static int shown_state(const job_t *j)
{
    return j->result_pending ? ZF_ST_RUNNING : j->state;
}

static bool matches(const zfb_listing_query_t *q, const job_t *j)
{
    if (j->forgetting) /* out of the store already: invisible to clients */
        return false;
    if (q->owner && j->owner != q->owner)
        return false;
    if (q->state >= 0 && shown_state(j) != q->state)
        return false;
    if (q->fn.len && !zf_str_eq(q->fn, j->fn->name))
        return false;
    if (q->tag.len && !(j->tags && zf_tags_match(j->tags, strlen(j->tags), q->tag.ptr, q->tag.len)))
        return false;
    return true;
}

static bool take(void *arg, job_t *j)
{
    walk_t *w = arg;
    w->scanned++;
    if (!matches(w->q, j))
        return false;
    w->page[w->n++] = j;
    return true;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_job(msgpack_packer *pk, const job_t *j)
{
    msgpack_pack_map(pk, 5);
    pk_str(pk, "id");
    msgpack_pack_uint64(pk, j->id);
    pk_str(pk, "state");
    pk_str(pk, zf_state_name((uint32_t)shown_state(j)));
    pk_str(pk, "function");
    pk_str(pk, j->fn->name);
    pk_str(pk, "attempts");
    msgpack_pack_uint32(pk, zfb_job_attempts_used(j));
    pk_str(pk, "tags");
    pk_str(pk, j->tags ? j->tags : "");
}

void zfb_listing_pack(msgpack_sbuffer *sb, const zfb_index_t *x, const zfb_listing_query_t *q)
{
    walk_t *w = malloc(sizeof *w);
    if (!w)
        zfb_oom("a listing");
    w->q = q;
    w->n = w->scanned = 0;
    uint32_t limit = q->limit ? q->limit : 1;
    if (limit > ZF_JOBS_LIMIT_MAX)
        limit = ZF_JOBS_LIMIT_MAX;
    uint64_t next = zfb_index_walk(x, q->after, limit, ZF_JOBS_SCAN, take, w);
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "jobs");
    msgpack_pack_array(&pk, w->n);
    for (uint32_t i = 0; i < w->n; i++)
        pack_job(&pk, w->page[i]);
    pk_str(&pk, "next");
    msgpack_pack_uint64(&pk, next);
    pk_str(&pk, "scanned");
    msgpack_pack_uint32(&pk, w->scanned);
    free(w);
    if (!sb->data)
        zfb_oom("a listing");
}
