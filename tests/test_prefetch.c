/*  zf_prefetch: the credits adaptive prefetch chooses from what it measured. */
#include <criterion/criterion.h>

#include "../worker/zf_prefetch.h"

/* n probes of rtt_us each, answered, starting at *now (advanced past them). */
static void probe(zf_prefetch_t *p, int64_t *now, int n, int64_t rtt_us)
{
    for (int i = 0; i < n; i++) {
        cr_assert(zf_prefetch_probe_due(p, *now));
        zf_prefetch_probe_sent(p, *now);
        cr_assert_not(zf_prefetch_probe_due(p, *now + 1), "a probe in flight is not repeated");
        *now += rtt_us;
        zf_prefetch_answered(p, *now);
        *now += ZF_PREFETCH_PROBE_MS * 1000;
    }
}

static void runs(zf_prefetch_t *p, int n, uint64_t us)
{
    for (int i = 0; i < n; i++)
        zf_prefetch_ran(p, us);
}

Test(prefetch, starts_at_one_until_measured)
{
    zf_prefetch_t p;
    zf_prefetch_init(&p);
    cr_assert_eq(zf_prefetch_target(&p), 1);
    runs(&p, 10, 5);
    cr_assert_eq(zf_prefetch_target(&p), 1, "no round trip known yet");
}

Test(prefetch, short_jobs_deep_long_jobs_one)
{
    zf_prefetch_t p;
    zf_prefetch_init(&p);
    int64_t now = 1000000;
    probe(&p, &now, 4, 300);
    runs(&p, 50, 2); /* echo-like */
    cr_assert_eq(zf_prefetch_target(&p), ZF_PREFETCH_MAX);
    zf_prefetch_init(&p);
    probe(&p, &now, 4, 300);
    runs(&p, 50, 5000); /* 5 ms spins: 1 + ceil(2 x 0.06) */
    cr_assert_eq(zf_prefetch_target(&p), 2);
    runs(&p, 50, 5000000); /* 5 s jobs */
    cr_assert_eq(zf_prefetch_target(&p), 1);
}

/* A fast probe (30 µs: cores awake) still leaves 5 ms jobs a prefetched one: the refill of
   a DONE takes far longer than the probe when the handlers keep every core busy. */
Test(prefetch, fast_probe_still_prefetches_for_millisecond_jobs)
{
    zf_prefetch_t p;
    zf_prefetch_init(&p);
    int64_t now = 1000000;
    probe(&p, &now, 4, 30);
    runs(&p, 50, 5000);
    cr_assert_eq(zf_prefetch_target(&p), 2);
    runs(&p, 100, 100000); /* 100 ms jobs: 0.03 % */
    cr_assert_eq(zf_prefetch_target(&p), 1);
}

Test(prefetch, round_trip_takes_the_lowest_and_rises_slowly)
{
    zf_prefetch_t p;
    zf_prefetch_init(&p);
    int64_t now = 1000000;
    probe(&p, &now, 1, 5000);
    probe(&p, &now, 3, 300);
    cr_assert_float_eq(p.rtt_us, 300, 0.5);
    runs(&p, 1, 1);
    probe(&p, &now, 1, 3300); /* one slow probe: an eighth of the difference */
    cr_assert_float_eq(p.rtt_us, 675, 0.5);
}

Test(prefetch, announces_only_large_changes)
{
    zf_prefetch_t p;
    zf_prefetch_init(&p);
    int64_t now = 1000000;
    probe(&p, &now, 4, 100);
    runs(&p, 1, 10); /* 1 + ceil(2 x 10) = 21 */
    cr_assert(zf_prefetch_probe_due(&p, now), "a large change is told at once");
    cr_assert_eq(zf_prefetch_probe_sent(&p, now), 21);
    zf_prefetch_answered(&p, now + 100);
    zf_prefetch_ran(&p, 20); /* 1 + ceil(2 x 100 / 11.25) = 19: not half away */
    cr_assert_neq(zf_prefetch_target(&p), 21);
    cr_assert_not(zf_prefetch_probe_due(&p, now + 200), "a small change waits for the next probe");
    cr_assert_eq(zf_prefetch_probe_sent(&p, now + ZF_PREFETCH_PROBE_MS * 1000), 21,
                 "and is not told then either");
}

Test(prefetch, lost_probe_is_given_up_after_a_second)
{
    zf_prefetch_t p;
    zf_prefetch_init(&p);
    zf_prefetch_probe_sent(&p, 1000000);
    cr_assert_not(zf_prefetch_probe_due(&p, 1500000));
    cr_assert(zf_prefetch_probe_due(&p, 2000001));
    zf_prefetch_reset_probe(&p);
    cr_assert(zf_prefetch_probe_due(&p, 1000001));
    zf_prefetch_answered(&p, 1000002); /* no probe in flight: ignored */
    cr_assert_eq(p.probes, 0);
}
