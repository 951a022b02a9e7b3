/*  zf_hist — a fixed histogram of durations: log-spaced buckets, O(1) observe, no allocation.

    For the broker's per-function queue-wait and run times and the journal's fsync times:
    a zf_hist_t is a plain struct (embed it; zero it to start), observing is an index
    computed with one count-leading-zeros and an increment, so it can sit on the dispatch
    path. Values are microseconds. Buckets: four per power of two (each bound 1.19x the one
    before) from 1 us up to 2^32 us (about 72 minutes), then one overflow bucket, so a
    quantile estimate is within one bucket: under 20 % of the true value wherever it falls.

    Bucket i holds the values v with lower(i) < v <= upper(i) (bounds inclusive above, as
    Prometheus' `le`), and every bound is a whole number of microseconds, so the Prometheus
    exposition (zf_prom_hist, which shows every second bound: 2^k and 1.5 x 2^k us) needs
    no rounding and reads the same in every scrape.
    Not thread-safe: one writer, and readers on the same thread.
*/
#ifndef ZF_HIST_H
#define ZF_HIST_H

#include <stdint.h>

#define ZF_HIST_OCTAVES 32 /* 2^32 us: the last finite bound */
/* 4 buckets under 4 us, then 4 per octave up to 2^32 us, then the overflow bucket */
#define ZF_HIST_BUCKETS (4 * (ZF_HIST_OCTAVES - 1) + 1)

typedef struct {
    uint64_t count;  /* observations */
    uint64_t sum_us; /* their sum */
    uint64_t b[ZF_HIST_BUCKETS];
} zf_hist_t;

/* Counts one value of us microseconds. */
void zf_hist_observe(zf_hist_t *h, uint64_t us);

/* The inclusive upper bound of bucket i in microseconds; UINT64_MAX for the overflow
   bucket (i = ZF_HIST_BUCKETS - 1). */
uint64_t zf_hist_upper(unsigned i);

/* The q-quantile (0 < q <= 1) in microseconds, interpolated linearly inside the bucket the
   rank falls in (as Prometheus' histogram_quantile does); 0 when there are no samples. A
   rank in the overflow bucket reads as the last finite bound. */
uint64_t zf_hist_quantile(const zf_hist_t *h, double q);

#endif
