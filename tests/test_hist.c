/* zf_hist and zf_prom: bucket bounds, quantiles, the exposition's escaping and lines. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "zf_hist.h"
#include "zf_prom.h"

Test(hist, bounds_are_inclusive_above_and_every_power_of_two_is_one)
{
    zf_hist_t h = {0};
    zf_hist_observe(&h, 4);
    zf_hist_observe(&h, 5);
    cr_assert_eq(h.b[3], 1); /* (3, 4] */
    cr_assert_eq(h.b[4], 1); /* (4, 5] */
    for (unsigned k = 2; k <= ZF_HIST_OCTAVES; k++)
        cr_assert_eq(zf_hist_upper(4 * (k - 1) - 1), 1ull << k, "2^%u", k);
    for (unsigned i = 1; i + 1 < ZF_HIST_BUCKETS; i++)
        cr_assert_gt(zf_hist_upper(i), zf_hist_upper(i - 1));
}

Test(hist, quantiles_land_within_the_bucket_width)
{
    zf_hist_t h = {0};
    cr_assert_eq(zf_hist_quantile(&h, 0.5), 0);
    for (int i = 0; i < 90; i++)
        zf_hist_observe(&h, 1000);
    for (int i = 0; i < 10; i++)
        zf_hist_observe(&h, 100000);
    uint64_t p50 = zf_hist_quantile(&h, 0.5), p99 = zf_hist_quantile(&h, 0.99);
    cr_assert(p50 > 896 && p50 <= 1024, "p50 %llu", (unsigned long long)p50);
    cr_assert(p99 > 98304 && p99 <= 114688, "p99 %llu", (unsigned long long)p99);
    cr_assert_eq(h.count, 100);
    cr_assert_eq(h.sum_us, 90 * 1000 + 10 * 100000);
    zf_hist_observe(&h, UINT64_MAX / 4); /* the overflow bucket */
    cr_assert_eq(h.b[ZF_HIST_BUCKETS - 1], 1);
}

Test(prom, label_values_are_escaped_and_histograms_are_cumulative)
{
    zf_prom_t t;
    zf_prom_init(&t);
    zf_prom_family(&t, "m", "gauge", "a\\b\nc");
    zf_prom_u64(&t, "m", 7, "function", "q\"b\\s\nn", NULL);
    zf_prom_u64(&t, "m", 8, NULL);
    zf_hist_t h = {0};
    zf_hist_observe(&h, 20);
    zf_hist_observe(&h, 3000000);
    zf_prom_hist(&t, "d", &h, 4, "f", "x", NULL);
    size_t len;
    char *s = zf_prom_take(&t, &len);
    cr_assert_not_null(s);
    cr_assert_eq(strlen(s), len);
    cr_assert(strstr(s, "# HELP m a\\\\b\\nc\n# TYPE m gauge\n"), "%s", s);
    cr_assert(strstr(s, "m{function=\"q\\\"b\\\\s\\nn\"} 7\n"), "%s", s);
    cr_assert(strstr(s, "\nm 8\n"), "%s", s);
    cr_assert(strstr(s, "d_bucket{f=\"x\",le=\"0.000016\"} 0\n"), "%s", s);
    cr_assert(strstr(s, "d_bucket{f=\"x\",le=\"0.000024\"} 1\n"), "%s", s);
    cr_assert(strstr(s, "d_bucket{f=\"x\",le=\"2.097152\"} 1\n"), "%s", s);
    cr_assert(strstr(s, "d_bucket{f=\"x\",le=\"3.145728\"} 2\n"), "%s", s);
    cr_assert(strstr(s, "d_bucket{f=\"x\",le=\"+Inf\"} 2\n"), "%s", s);
    cr_assert(strstr(s, "d_sum{f=\"x\"} 3.000020\nd_count{f=\"x\"} 2\n"), "%s", s);
    free(s);
}
