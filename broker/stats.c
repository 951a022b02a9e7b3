/*  zf_stats — see zf_stats.h. */
#include "zf_stats.h"

#include <string.h>

static void pk_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pk_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
    pk_str(pk, k);
    msgpack_pack_uint64(pk, v);
}

/* batch_mean (jobs per handler call; 0 before any answer) and batch_hist (jobs by batch
   size: 1, 2, 3-4, 5-8, ..., 129-256): two map entries (issue 17). */
static void pack_batches(msgpack_packer *pk, const zfb_batches_t *bs)
{
    uint64_t jobs = 0;
    for (int i = 0; i < ZFB_BATCH_BUCKETS; i++)
        jobs += bs->jobs[i];
    pk_str(pk, "batch_mean");
    msgpack_pack_double(pk, bs->calls > 0 ? (double)jobs / bs->calls : 0);
    pk_str(pk, "batch_hist");
    msgpack_pack_array(pk, ZFB_BATCH_BUCKETS);
    for (int i = 0; i < ZFB_BATCH_BUCKETS; i++)
        msgpack_pack_uint64(pk, bs->jobs[i]);
}

static void pk_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    pk_str(pk, k);
    pk_str(pk, v);
}

static void pack_job_brief(msgpack_packer *pk, const job_t *j, const zfb_owners_t *owners)
{
    const zfb_owner_t *o = zfb_owners_get(owners, j->owner);
    msgpack_pack_map(pk, 6);
    pk_kv_str(pk, "owner", o ? o->z85 : "");
    pk_kv_u64(pk, "id", j->id);
    pk_kv_str(pk, "function", j->fn->name);
    pk_kv_str(pk, "state", zf_state_name(j->state));
    pk_kv_u64(pk, "attempts", zfb_job_attempts_used(j));
    pk_kv_str(pk, "causes", j->res && j->res->error ? j->res->error : "");
}

static void pack_workers(msgpack_packer *pk, wrk_t *workers, int64_t now)
{
    msgpack_pack_array(pk, HASH_COUNT(workers));
    for (wrk_t *w = workers; w; w = w->hh.next) {
        msgpack_pack_map(pk, 14);
        pk_kv_str(pk, "name", w->info->name);
        pk_kv_str(pk, "model", w->model);
        pk_kv_str(pk, "device", w->info->devname);
        pk_kv_str(pk, "kind", zf_device_kind_name(w->kind));
        pk_str(pk, "index");
        msgpack_pack_int32(pk, w->devindex);
        pk_kv_u64(pk, "memory", w->devmem);
        pk_kv_str(pk, "state",
                  w->draining   ? "draining"
                  : w->suspect  ? "suspect"
                  : w->inflight ? "busy"
                                : "idle");
        pk_kv_u64(pk, "credits", w->credits);
        pk_str(pk, "jobs");
        msgpack_pack_array(pk, w->inflight);
        for (uint32_t i = 0; i < w->inflight; i++)
            msgpack_pack_uint64(pk, w->leases[i].id);
        pk_kv_u64(pk, "done", w->jobs_done);
        pk_kv_u64(pk, "failed", w->jobs_failed);
        pk_kv_u64(pk, "last_seen_ms", (uint64_t)(now - w->last_recv_ms));
        pk_str(pk, "functions");
        msgpack_pack_array(pk, w->nslots);
        for (uint32_t i = 0; i < w->nslots; i++)
            pk_str(pk, w->slots[i].fn->name);
        /* per function it serves, in the order of "functions" (issue 17) */
        pk_str(pk, "batches");
        msgpack_pack_array(pk, w->nslots);
        for (uint32_t i = 0; i < w->nslots; i++) {
            msgpack_pack_map(pk, 3);
            pk_kv_str(pk, "function", w->slots[i].fn->name);
            pack_batches(pk, &w->slots[i].batches);
        }
    }
}

static void pack_security(msgpack_packer *pk, const zfb_stats_t *v);

void zfb_stats_pack(msgpack_sbuffer *sb, const zfb_stats_t *v)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    pk_str(&pk, "broker");
    msgpack_pack_map(&pk, 35);
    pk_kv_u64(&pk, "uptime_ms", v->uptime_ms);
    pk_kv_u64(&pk, "submitted", v->c->submitted);
    pk_kv_u64(&pk, "accepted", v->c->accepted);
    pk_kv_u64(&pk, "dispatched", v->c->dispatched);
    pk_kv_u64(&pk, "requeued", v->c->requeued);
    pk_kv_u64(&pk, "recalled", v->c->recalled);
    pk_kv_u64(&pk, "queued", v->queued);
    pk_kv_u64(&pk, "results_kept", v->results_kept);
    pk_kv_u64(&pk, "dead_letters", v->dead_letters);
    pk_kv_u64(&pk, "result_bytes", v->result_bytes);
    pk_kv_u64(&pk, "forgotten", v->c->forgotten);
    pk_kv_u64(&pk, "forget_pending", v->forget_pending);
    pk_kv_u64(&pk, "forget_pending_bytes", v->forget_pending_bytes);
    pk_kv_u64(&pk, "journal_ok", v->journal_ok);
    pk_kv_u64(&pk, "journal_errors", v->journal_errors);
    pk_kv_u64(&pk, "malformed_client", v->c->malformed_client);
    pk_kv_u64(&pk, "malformed_worker", v->c->malformed_worker);
    pk_kv_u64(&pk, "stale_results", v->c->stale_results);
    pk_kv_u64(&pk, "stale_progress", v->c->stale_progress);
    pk_kv_u64(&pk, "workers_lost", v->c->workers_lost);
    pk_kv_u64(&pk, "undeliverable", v->c->undeliverable);
    pk_kv_u64(&pk, "obituaries_refused", v->c->obituaries_refused);
    pk_kv_u64(&pk, "run_timeouts", v->c->run_timeouts);
    pk_kv_u64(&pk, "stalls", v->c->stalls);
    pk_kv_u64(&pk, "reattached", v->c->reattached);
    pk_kv_u64(&pk, "claims_refused", v->c->claims_refused);
    pk_kv_u64(&pk, "reattach_expired", v->c->reattach_expired);
    pk_kv_u64(&pk, "queued_bytes", v->queued_bytes);
    pk_kv_u64(&pk, "results_held", v->c->results_held);
    pk_kv_u64(&pk, "acks_with_result", v->c->acks_with_result);
    pk_kv_u64(&pk, "clients_slow", v->clients_slow);
    pk_kv_u64(&pk, "jobs_paced", v->jobs_paced);
    pk_kv_u64(&pk, "jobs_waiting", v->jobs_waiting);
    pk_kv_u64(&pk, "jobs_refused", v->c->jobs_refused);
    pk_str(&pk, "rejected");
    msgpack_pack_map(&pk, ZF__ECOUNT - 1);
    for (int e = 1; e < ZF__ECOUNT; e++)
        pk_kv_u64(&pk, zf_error_name((uint32_t)e), v->c->rejected[e]);
    pk_str(&pk, "finished");
    msgpack_pack_map(&pk, ZF_ST_OUTPUT_LOST - ZF_ST_SUCCEEDED + 1);
    for (int s = ZF_ST_SUCCEEDED; s <= ZF_ST_OUTPUT_LOST; s++)
        pk_kv_u64(&pk, zf_state_name((uint32_t)s), v->c->finished[s]);
    pk_str(&pk, "functions");
    msgpack_pack_array(&pk, HASH_COUNT(v->fns));
    for (const fnq_t *f = v->fns; f; f = f->hh.next) {
        msgpack_pack_map(&pk, 10);
        pk_kv_str(&pk, "name", f->name);
        pk_kv_u64(&pk, "queued", f->queued);
        pk_kv_u64(&pk, "running", f->running);
        pk_kv_u64(&pk, "succeeded", f->done);
        pk_kv_u64(&pk, "failed", f->failed);
        pk_kv_u64(&pk, "workers", f->nworkers);
        /* estimated from the run-time histogram (within one bucket: under 20 %); 0 with no samples */
        pk_kv_u64(&pk, "run_p50_us", zf_hist_quantile(&f->run, 0.50));
        pk_kv_u64(&pk, "run_p99_us", zf_hist_quantile(&f->run, 0.99));
        pack_batches(&pk, &f->batches);
    }
    pk_str(&pk, "workers");
    pack_workers(&pk, v->workers, v->now_ms);
    pack_security(&pk, v);
}

void zfb_dead_pack(msgpack_sbuffer *sb, const job_t *dead, uint64_t ndead,
                   const zfb_owners_t *owners, uint32_t only_owner)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    if (only_owner) {
        ndead = 0;
        for (const job_t *j = dead; j; j = j->next)
            ndead += j->owner == only_owner;
    }
    msgpack_pack_array(&pk, ndead);
    for (const job_t *j = dead; j; j = j->next)
        if (!only_owner || j->owner == only_owner)
            pack_job_brief(&pk, j, owners);
}

static const char *role_name(uint8_t roles)
{
    return roles & ZFB_ROLE_ADMIN    ? "admin"
           : roles & ZFB_ROLE_CLIENT ? (roles & ZFB_ROLE_WORKER ? "client+worker" : "client")
           : roles & ZFB_ROLE_WORKER ? "worker"
                                     : "none";
}

/* The security section: whether CURVE is on, its counters, and every key the broker knows
   with its role now and its jobs (a revoked key shows role "none" and what it still owns). */
static void pack_security(msgpack_packer *pk, const zfb_stats_t *v)
{
    const zfb_auth_counts_t *a = v->auth;
    uint32_t n = v->owners ? zfb_owners_count(v->owners) : 0;
    pk_str(pk, "security");
    msgpack_pack_map(pk, 10);
    pk_kv_u64(pk, "curve", v->curve);
    pk_kv_u64(pk, "client_keys", a->client_keys);
    pk_kv_u64(pk, "worker_keys", a->worker_keys);
    pk_kv_u64(pk, "admin_keys", a->admin_keys);
    pk_kv_u64(pk, "denied_clients", a->denied_clients);
    pk_kv_u64(pk, "denied_workers", a->denied_workers);
    pk_kv_u64(pk, "refused_messages", a->refused_messages);
    pk_kv_u64(pk, "reloads", a->reloads);
    pk_kv_u64(pk, "reload_failures", a->reload_failures);
    pk_str(pk, "keys");
    msgpack_pack_array(pk, n);
    for (uint32_t id = 1; id <= n; id++) {
        const zfb_owner_t *o = zfb_owners_get(v->owners, id);
        msgpack_pack_map(pk, 5);
        pk_kv_str(pk, "key", o->z85);
        pk_kv_str(pk, "role", role_name(o->roles));
        pk_kv_u64(pk, "unfinished", o->unfinished);
        pk_kv_u64(pk, "accepted", o->accepted);
        pk_kv_u64(pk, "refused", o->refused);
    }
}
