/*  zf_prefetch — see zf_prefetch.h. */
#include "zf_prefetch.h"

#include <math.h>
#include <string.h>

#define HEADROOM 2.0    /* a round trip is not always the fastest one */
#define RUN_ALPHA 0.125 /* EWMA weights: a few jobs are enough to follow a new kind */
#define RTT_RISE 0.125  /* round trips: down at once, up slowly (scheduling noise only adds) */
#define FIRST_PROBES 4  /* taken back to back at the start, before the estimate counts */
/* round trip / run below this: no prefetch. Low, because the probe's round trip is the
   fastest one: a DONE's refill on a machine whose cores the handlers keep busy can take
   10-100 times longer (the broker waits for a core), and at 1 credit the worker idles for
   all of it (5 ms jobs with 30 µs probes lost 2-3 % of their time at 1 %) */
#define NEGLIGIBLE 0.001
#define LOST_PROBE_US 1000000

void zf_prefetch_init(zf_prefetch_t *p)
{
    memset(p, 0, sizeof *p);
    p->announced = 1;
}

static double ewma(double cur, double sample, double alpha)
{
    return cur <= 0 ? sample : cur + alpha * (sample - cur);
}

void zf_prefetch_ran(zf_prefetch_t *p, uint64_t run_us)
{
    /* a handler that returns at once still costs the runner a little: never divide by 0 */
    p->run_us = ewma(p->run_us, run_us < 1 ? 1.0 : (double)run_us, RUN_ALPHA);
    p->runs++;
}

uint32_t zf_prefetch_target(const zf_prefetch_t *p)
{
    if (p->run_us <= 0 || p->probes < FIRST_PROBES)
        return p->announced; /* nothing to go by yet */
    double ratio = p->rtt_us / p->run_us;
    if (ratio < NEGLIGIBLE)
        return 1;
    double extra = ceil(HEADROOM * ratio);
    return extra >= ZF_PREFETCH_MAX - 1 ? ZF_PREFETCH_MAX : 1 + (uint32_t)extra;
}

/* Far enough apart to tell the broker: by half or more either way. */
static bool worth_telling(uint32_t target, uint32_t announced)
{
    return 2 * target >= 3 * announced || 3 * target <= 2 * announced;
}

bool zf_prefetch_probe_due(const zf_prefetch_t *p, int64_t now_us)
{
    if (p->probe_sent_us && now_us - p->probe_sent_us < LOST_PROBE_US)
        return false;
    if (p->probes < FIRST_PROBES)
        return true;
    if (worth_telling(zf_prefetch_target(p), p->announced))
        return true;
    return p->runs != p->probed_runs && now_us - p->probe_last_us >= ZF_PREFETCH_PROBE_MS * 1000;
}

uint32_t zf_prefetch_probe_sent(zf_prefetch_t *p, int64_t now_us)
{
    uint32_t target = zf_prefetch_target(p);
    if (worth_telling(target, p->announced))
        p->announced = target;
    p->probe_sent_us = p->probe_last_us = now_us;
    p->probed_runs = p->runs;
    return p->announced;
}

void zf_prefetch_answered(zf_prefetch_t *p, int64_t now_us)
{
    if (!p->probe_sent_us)
        return;
    double rtt = (double)(now_us - p->probe_sent_us);
    p->rtt_us = p->rtt_us <= 0 || rtt < p->rtt_us ? rtt : ewma(p->rtt_us, rtt, RTT_RISE);
    p->probes++;
    p->probe_sent_us = 0;
}

void zf_prefetch_reset_probe(zf_prefetch_t *p)
{
    p->probe_sent_us = 0;
}
