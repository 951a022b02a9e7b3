/*  zf_prefetch — how many jobs a worker holds at once when --credits is not given
    (adaptive prefetch, README "Tuning").

    Enough to cover a round trip to the broker at the recent job duration:
        credits = 1 + ceil(HEADROOM x round trip / mean run time), within [1, ZF_PREFETCH_MAX],
    and 1 when a round trip is under 0.1 % of a run (long jobs: prefetch would only make a job
    wait behind another). The run time is an EWMA of the DONE durations; the round trip is
    the lowest of CREDITS -> CREDITED probes, rising slowly toward higher ones (PROTOCOL.md §7.12), which travel the same sockets
    and broker loop as a DONE and the JOB it frees. A new number is announced only when it
    differs from the announced one by half or more, so the broker is not told every wobble.
    Pure arithmetic on the times it is given: no clock, no I/O, no locking (the caller's). */
#ifndef ZF_PREFETCH_H
#define ZF_PREFETCH_H

#include <stdbool.h>
#include <stdint.h>

#define ZF_PREFETCH_MAX 64
#define ZF_PREFETCH_PROBE_MS 200 /* a round-trip probe at most this often, while busy */

typedef struct {
    double run_us;         /* EWMA of run times; 0 = none seen yet */
    double rtt_us;         /* probe round trips: the lowest, rising slowly; 0 = none yet */
    uint32_t probes;       /* answered probes */
    uint32_t announced;    /* the credits the broker was last told (READY or CREDITS) */
    uint64_t runs;         /* DONEs seen, in all */
    uint64_t probed_runs;  /* `runs` when the last probe went out */
    int64_t probe_sent_us; /* the probe in flight; 0 = none */
    int64_t probe_last_us; /* when the last probe went out */
} zf_prefetch_t;

/* Starts with 1 credit announced and nothing measured. */
void zf_prefetch_init(zf_prefetch_t *p);

/* A job ran for run_us. */
void zf_prefetch_ran(zf_prefetch_t *p, uint64_t run_us);

/* The credits the measurements call for now, in [1, ZF_PREFETCH_MAX]. */
uint32_t zf_prefetch_target(const zf_prefetch_t *p);

/* True when a probe should go out at now_us: none in flight (or the one in flight is lost:
   older than a second), and either fewer than the first few probes are answered, or jobs ran since the last
   one, ZF_PREFETCH_PROBE_MS ago or more. Also true, without waiting, when the target has
   moved far enough from the announced credits to be worth telling. */
bool zf_prefetch_probe_due(const zf_prefetch_t *p, int64_t now_us);

/* A probe (CREDITS) goes out at now_us; returns the credits it carries (now announced). */
uint32_t zf_prefetch_probe_sent(zf_prefetch_t *p, int64_t now_us);

/* The broker's answer (CREDITED) arrived at now_us. Ignored when no probe is in flight. */
void zf_prefetch_answered(zf_prefetch_t *p, int64_t now_us);

/* Forgets the probe in flight (a new connection: its answer will not come). */
void zf_prefetch_reset_probe(zf_prefetch_t *p);

#endif
