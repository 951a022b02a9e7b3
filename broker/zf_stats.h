/*  zf_stats — the broker's reply documents: STATS (PROTOCOL.md §13.1) and DEAD (§13.2).

    Internal to the broker. broker.c keeps the counters (counters_t, bumped where things
    happen) and answers the commands; this module only packs what it is given into
    MessagePack, so the documents' shape lives in one place. Nothing here changes broker
    state or sends anything.
*/
#ifndef ZF_STATS_H
#define ZF_STATS_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/zf_hist.h"
#include "zf_auth.h"
#include "zf_owners.h"
#include "zf_state.h"

/* Event counters since start, each bumped by broker.c where the event happens. */
typedef struct {
    uint64_t submitted, accepted, dispatched, requeued, recalled;
    uint64_t rejected[ZF__ECOUNT];
    uint64_t finished[ZF_ST__COUNT];
    uint64_t malformed_client, malformed_worker;
    uint64_t stale_results, stale_progress;
    uint64_t workers_lost, undeliverable;
    uint64_t forgotten;          /* FORGET results dropped once pushed to their submitter */
    uint64_t obituaries_refused; /* OBITUARY from a peer that is not the worker's supervisor */
    uint64_t results_held;       /* results held back for a client with too many bytes unread */
    uint64_t run_timeouts;       /* attempts the broker ended: no result by timeout + grace */
    uint64_t stalls;             /* loop turns far later than planned (liveness windows renewed) */
    uint64_t reattached;         /* leases claimed back in a READY after a restart (re-attach) */
    uint64_t claims_refused;     /* claims that did not match the journal: fenced (WCANCEL) */
    uint64_t reattach_expired;   /* jobs held for a re-attach that nobody claimed in the window */
    uint64_t jobs_refused;       /* JOBS pages refused: too many waiting their turn (zf_pacer.h) */
    uint64_t acks_with_result;   /* LAZY_ACK acceptances that went out with their RESULT */
} counters_t;

/* What a STATS document shows: the counters and the gauges of this instant, read by the
   broker right before packing (borrowed for the call). */
typedef struct {
    const counters_t *c;
    uint64_t uptime_ms, queued, results_kept, dead_letters, result_bytes;
    uint64_t forget_pending, forget_pending_bytes;
    bool journal_ok;
    uint64_t journal_errors, queued_bytes, clients_slow;
    uint64_t jobs_paced, jobs_waiting; /* JOBS pages that waited their turn; waiting now */
    fnq_t *fns;                        /* the broker's functions, linked through hh */
    wrk_t *workers;                    /* the broker's workers, linked through hh */
    int64_t now_ms;                    /* monotonic: workers' last_seen_ms is counted from it */
    bool curve;                        /* CURVE on */
    const zfb_auth_counts_t *auth;     /* zeros when off */
    const zfb_owners_t *owners;
    /* for the metrics only (zf_metrics.h); STATS does not show them */
    bool journal; /* the broker has one (not --no-journal) */
    uint64_t journal_bytes, journal_records;
    const zf_hist_t *fsync; /* the journal's fdatasync durations */
    uint64_t clients;       /* client connections open */
} zfb_stats_t;

/* Initialises sb and packs the STATS document into it; the caller owns sb's data (free()). */
void zfb_stats_pack(msgpack_sbuffer *sb, const zfb_stats_t *v);

/* Initialises sb and packs the DEAD document: the ndead dead letters from `dead`, linked
   through next, oldest first, each with its owner's key ("" for none); only_owner 0 lists
   them all, another id only that owner's. The caller owns sb's data (free()). */
void zfb_dead_pack(msgpack_sbuffer *sb, const job_t *dead, uint64_t ndead,
                   const zfb_owners_t *owners, uint32_t only_owner);

#endif
