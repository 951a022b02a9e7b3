/*  zf_hist — see zf_hist.h. */
#include "zf_hist.h"

#include <assert.h>
#include <math.h>

/* Bucket of v - 1 (so that a bucket's upper bound is inclusive): values under 4 have a
   bucket each; above, the octave [2^e, 2^(e+1)) of v - 1 splits into four by its two bits
   after the leading one. */
static unsigned bucket_of(uint64_t us)
{
    uint64_t v = us ? us - 1 : 0;
    if (v < 4)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    if (e >= ZF_HIST_OCTAVES)
        return ZF_HIST_BUCKETS - 1;
    return 4 * (e - 1) + (unsigned)((v >> (e - 2)) & 3);
}

void zf_hist_observe(zf_hist_t *h, uint64_t us)
{
    h->count++;
    h->sum_us += us;
    h->b[bucket_of(us)]++;
}

/* The values of bucket i are (lower(i), upper(i)]; lower(i) = upper(i - 1). */
uint64_t zf_hist_upper(unsigned i)
{
    assert(i < ZF_HIST_BUCKETS);
    if (i == ZF_HIST_BUCKETS - 1)
        return UINT64_MAX;
    if (i < 4)
        return i + 1;
    unsigned e = i / 4 + 1, sub = i % 4;
    return ((uint64_t)(5 + sub) << (e - 2));
}

static uint64_t lower_of(unsigned i)
{
    return i ? zf_hist_upper(i - 1) : 0;
}

uint64_t zf_hist_quantile(const zf_hist_t *h, double q)
{
    assert(q > 0 && q <= 1);
    if (!h->count)
        return 0;
    double rank = q * (double)h->count;
    uint64_t below = 0;
    for (unsigned i = 0; i < ZF_HIST_BUCKETS; i++) {
        if (!h->b[i] || (double)(below + h->b[i]) < rank) {
            below += h->b[i];
            continue;
        }
        if (i == ZF_HIST_BUCKETS - 1)
            return lower_of(i);
        double lo = (double)lower_of(i), hi = (double)zf_hist_upper(i);
        return (uint64_t)llround(lo + (hi - lo) * (rank - (double)below) / (double)h->b[i]);
    }
    return lower_of(ZF_HIST_BUCKETS - 1);
}
