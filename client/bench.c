/*  zf_bench — `zfleet bench`: measures a running broker and its workers, as a client.

    Every workload checks what it measures: each job is tracked by its submit tag, every
    result must arrive exactly once, with status succeeded, the id the broker accepted it
    under, and an output equal to the payload that was sent (payloads are distinct per job:
    they embed the job's index, so a mixup or a corruption shows). Whatever fails is counted
    in `errors`, reported, and turns the exit status to 1. See bench/README.md.
*/
#include <getopt.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zf_bench.h"
#include "zf_util.h"
#include "zf_json.h"
#include "zfleet.h"

enum { EXIT_ERRORS = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 4 };

#define MIB (1024u * 1024u)
#define MAX_FIELDS 48

typedef struct {
    const char *ep; /* broker client endpoint; NULL = library default */
    const char *workload;
    const char *function; /* NULL = the workload's default */
    int json;
    uint64_t jobs;     /* 0 = the workload's default */
    uint64_t payload;  /* bytes; UINT64_MAX = the workload's default */
    uint64_t inflight; /* 0 = the workload's default */
    uint64_t workers;  /* efficiency: the workers the ideal time is divided by */
    uint64_t spin_ms;
    uint64_t warmup;
    uint64_t broker_pid;     /* 0 = not given */
    uint64_t stall_ms;       /* no event for this long ends a run; the rest count missing */
    uint64_t attach_s;       /* backlog: how long to wait for workers to attach */
    bool forget;             /* throughput, latency, bigpayload: submit with forget */
    bool no_ack;             /* the same: submit with no_ack (no ACCEPTED) */
    uint64_t run_timeout_ms; /* every workload: submit with this run timeout (0: none) */
    zf_submit_opts_t so;     /* the submit options the three above make */
} opts_t;

/* ------------------------------------------------------------------ report */

/* The figures of one run, printed as "name value" lines or one JSON object. */
typedef struct {
    const char *workload;
    int n;
    struct {
        const char *key;
        char val[96];
        int is_str;
    } f[MAX_FIELDS];
} report_t;

static void rep_add(report_t *r, const char *key, int is_str, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void rep_add(report_t *r, const char *key, int is_str, const char *fmt, ...)
{
    if (r->n == MAX_FIELDS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->f[r->n].val, sizeof r->f[r->n].val, fmt, ap);
    va_end(ap);
    r->f[r->n].key = key;
    r->f[r->n].is_str = is_str;
    r->n++;
}

static void rep_u(report_t *r, const char *key, uint64_t v)
{
    rep_add(r, key, 0, "%llu", (unsigned long long)v);
}

static void rep_d(report_t *r, const char *key, double v, int decimals)
{
    if (isfinite(v))
        rep_add(r, key, 0, "%.*f", decimals, v);
    else
        rep_add(r, key, 0, "null");
}

static void rep_s(report_t *r, const char *key, const char *v)
{
    rep_add(r, key, 1, "%s", v);
}

static void rep_print(const report_t *r, int json)
{
    if (json) {
        printf("{\"workload\":\"%s\"", r->workload);
        for (int i = 0; i < r->n; i++) {
            printf(",\"%s\":", r->f[i].key);
            if (r->f[i].is_str)
                zf_json_string(stdout, r->f[i].val, strlen(r->f[i].val));
            else
                fputs(r->f[i].val, stdout);
        }
        printf("}\n");
    } else {
        printf("zfleet bench %s\n", r->workload);
        for (int i = 0; i < r->n; i++)
            printf("  %-18s %s\n", r->f[i].key, r->f[i].val);
    }
    fflush(stdout);
}

/* ------------------------------------------------------------------ payloads */

/* What job `idx` carries: "zfb <idx> " and then bytes that depend on the index and a
   per-run nonce, or, when `fixed` is set, exactly that text (spin's argument). */
typedef struct {
    size_t len;
    uint64_t nonce;
    const char *fixed;
} gen_t;

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Writes job idx's payload into buf (g->len bytes, or strlen(fixed)). Returns its length. */
static size_t gen_fill(const gen_t *g, uint64_t idx, unsigned char *buf)
{
    if (g->fixed) {
        size_t n = strlen(g->fixed);
        memcpy(buf, g->fixed, n);
        return n;
    }
    /* "zfb <idx> ", written by hand: snprintf cost the client more than a job's messages */
    char head[32] = "zfb ", digits[20];
    size_t h = 4, d = 0;
    uint64_t rest = idx;
    do
        digits[d++] = (char)('0' + rest % 10);
    while ((rest /= 10) && d < sizeof digits);
    while (d)
        head[h++] = digits[--d];
    head[h++] = ' ';
    size_t n = h < g->len ? h : g->len;
    memcpy(buf, head, n);
    uint64_t s = g->nonce ^ (idx * 0xd1342543de82ef95ull);
    size_t i = n;
    for (; i + 8 <= g->len; i += 8) {
        uint64_t v = splitmix64(&s);
        memcpy(buf + i, &v, 8);
    }
    if (i < g->len) {
        uint64_t v = splitmix64(&s);
        memcpy(buf + i, &v, g->len - i);
    }
    return g->len;
}

static size_t gen_max(const gen_t *g)
{
    return g->fixed ? strlen(g->fixed) : g->len;
}

/* ------------------------------------------------------------------ the tally */

/* Every job of a run by index (its tag minus the first tag): what the broker answered and
   how many results came. */
typedef struct {
    uint64_t n;     /* jobs in the run */
    uint64_t tag0;  /* the first job's submit tag; job i has tag0 + i */
    uint64_t *ids;  /* id from ACCEPTED; 0 until then */
    uint8_t *ended; /* results (or a rejection) seen, saturating at 255 */
    const gen_t *gen;
    unsigned char *expect; /* scratch for the expected payload */
    uint64_t accepted, results;
    /* errors */
    uint64_t rejected, failed, mismatched, duplicates, missing, unknown, wrong_id, send_failed;
    int64_t first_result_us, last_end_us;
} tally_t;

static int tally_init(tally_t *t, uint64_t n, const gen_t *g)
{
    memset(t, 0, sizeof *t);
    t->n = n;
    t->gen = g;
    t->ids = calloc(n ? n : 1, sizeof *t->ids);
    t->ended = calloc(n ? n : 1, 1);
    t->expect = malloc(gen_max(g) + 1);
    return t->ids && t->ended && t->expect ? 0 : -1;
}

static void tally_free(tally_t *t)
{
    free(t->ids);
    free(t->ended);
    free(t->expect);
}

static uint64_t tally_errors(const tally_t *t)
{
    return t->rejected + t->failed + t->mismatched + t->duplicates + t->missing + t->unknown +
           t->wrong_id + t->send_failed;
}

/* Jobs that ended without a result are missing: the broker owed one for each. */
static void tally_close(tally_t *t, uint64_t submitted)
{
    for (uint64_t i = 0; i < submitted; i++)
        if (!t->ended[i])
            t->missing++;
}

static void tally_report(const tally_t *t, report_t *r)
{
    rep_u(r, "errors", tally_errors(t));
    rep_u(r, "results", t->results);
    rep_u(r, "mismatched", t->mismatched);
    rep_u(r, "duplicates", t->duplicates);
    rep_u(r, "missing", t->missing);
    rep_u(r, "failed", t->failed);
    rep_u(r, "rejected", t->rejected);
    if (t->unknown)
        rep_u(r, "unknown_results", t->unknown);
    if (t->wrong_id)
        rep_u(r, "wrong_id", t->wrong_id);
    if (t->send_failed)
        rep_u(r, "send_failed", t->send_failed);
}

/* Applies one event. Returns the job's index when the event ended it (its first result or
   a rejection), else -1. */
static int64_t tally_event(tally_t *t, const zf_event_t *e)
{
    uint64_t idx = e->tag - t->tag0;
    bool ours = e->tag >= t->tag0 && idx < t->n;
    switch (e->type) {
    case ZF_EV_ACCEPTED:
        if (ours) {
            t->ids[idx] = e->id;
            t->accepted++;
        }
        return -1;
    case ZF_EV_REJECTED:
        if (!ours || t->ended[idx])
            return -1;
        t->rejected++;
        t->ended[idx] = 1;
        if (t->rejected <= 3)
            fprintf(stderr, "zfleet bench: job %llu rejected: %s\n", (unsigned long long)idx,
                    e->text);
        return (int64_t)idx;
    case ZF_EV_RESULT: break;
    default: return -1; /* progress, status: not results */
    }
    t->results++;
    int64_t now = zf_now_us();
    if (!t->first_result_us)
        t->first_result_us = now;
    if (!ours) {
        t->unknown++;
        return -1;
    }
    if (t->ended[idx]) {
        t->duplicates++;
        if (t->ended[idx] < 255)
            t->ended[idx]++;
        return -1;
    }
    t->ended[idx] = 1;
    t->last_end_us = now;
    if (t->ids[idx] && t->ids[idx] != e->id)
        t->wrong_id++;
    if (e->status != ZFLEET_SUCCEEDED) {
        if (t->failed++ < 3)
            fprintf(stderr, "zfleet bench: job %llu (id %llu) %s: %s\n", (unsigned long long)idx,
                    (unsigned long long)e->id, zfleet_state_name(e->status), e->text);
        return (int64_t)idx;
    }
    size_t len = gen_fill(t->gen, idx, t->expect);
    if (e->output_len != len || (len && memcmp(e->output, t->expect, len) != 0)) {
        if (t->mismatched++ < 3)
            fprintf(stderr,
                    "zfleet bench: job %llu (id %llu): output differs from its "
                    "payload (%zu bytes back, %zu sent)\n",
                    (unsigned long long)idx, (unsigned long long)e->id, e->output_len, len);
    }
    return (int64_t)idx;
}

/* ------------------------------------------------------------------ broker stats */

static const msgpack_object *mp_get(const msgpack_object *map, const char *key)
{
    return zf_json_get(map, key);
}

static uint64_t mp_u(const msgpack_object *map, const char *key)
{
    const msgpack_object *o = mp_get(map, key);
    return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? o->via.u64 : 0;
}

typedef struct {
    uint64_t fn_workers; /* workers serving the function asked about */
    uint64_t fn_queued;
    uint64_t workers; /* all connected workers */
    uint64_t credits; /* credits summed over the workers serving the function */
} stats_t;

/* Fetches the broker's stats. Returns 0, or -1 (the client's error says why). */
static int get_stats(zf_client_t *c, const char *fn, stats_t *st)
{
    memset(st, 0, sizeof *st);
    zf_event_t *e = zf_client_stats(c);
    if (!e)
        return -1;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int rc = -1;
    if (msgpack_unpack_next(&up, e->output, e->output_len, &off) == MSGPACK_UNPACK_SUCCESS) {
        rc = 0;
        const msgpack_object *fns = mp_get(&up.data, "functions");
        for (uint32_t i = 0;
             fn && fns && fns->type == MSGPACK_OBJECT_ARRAY && i < fns->via.array.size; i++) {
            const msgpack_object *f = &fns->via.array.ptr[i];
            const msgpack_object *name = mp_get(f, "name");
            if (name && name->type == MSGPACK_OBJECT_STR && name->via.str.size == strlen(fn) &&
                !memcmp(name->via.str.ptr, fn, name->via.str.size)) {
                st->fn_workers = mp_u(f, "workers");
                st->fn_queued = mp_u(f, "queued");
            }
        }
        const msgpack_object *ws = mp_get(&up.data, "workers");
        if (ws && ws->type == MSGPACK_OBJECT_ARRAY) {
            st->workers = ws->via.array.size;
            for (uint32_t i = 0; fn && i < ws->via.array.size; i++) {
                const msgpack_object *w = &ws->via.array.ptr[i];
                const msgpack_object *wf = mp_get(w, "functions");
                for (uint32_t k = 0;
                     wf && wf->type == MSGPACK_OBJECT_ARRAY && k < wf->via.array.size; k++) {
                    const msgpack_object *s = &wf->via.array.ptr[k];
                    if (s->type == MSGPACK_OBJECT_STR && s->via.str.size == strlen(fn) &&
                        !memcmp(s->via.str.ptr, fn, s->via.str.size))
                        st->credits += mp_u(w, "credits");
                }
            }
        }
    }
    msgpack_unpacked_destroy(&up);
    zf_event_destroy(&e);
    return rc;
}

/* Waits up to timeout_ms for at least one worker serving fn. Returns 0, or -1 with a
   message printed. */
static int await_workers(zf_client_t *c, const char *fn, int timeout_ms, stats_t *st)
{
    int64_t until = zf_now_ms() + timeout_ms;
    for (;;) {
        if (get_stats(c, fn, st) < 0) {
            fprintf(stderr, "zfleet bench: %s\n", zf_client_error(c));
            return -1;
        }
        if (st->fn_workers > 0)
            return 0;
        if (zf_now_ms() >= until) {
            fprintf(stderr, "zfleet bench: no worker serves '%s' (start workers first)\n", fn);
            return -1;
        }
        zf_event_t *e = zf_client_next(c, 100); /* a bounded wait on our own socket */
        zf_event_destroy(&e);
    }
}

/* ------------------------------------------------------------------ /proc */

/* Resident and peak resident set of pid in bytes (VmRSS, VmHWM). Returns 0, or -1. */
static int proc_rss(uint64_t pid, uint64_t *rss, uint64_t *hwm)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%llu/status", (unsigned long long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    *rss = *hwm = 0;
    unsigned long long kb;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            *rss = kb * 1024;
        else if (sscanf(line, "VmHWM: %llu kB", &kb) == 1)
            *hwm = kb * 1024;
    }
    fclose(f);
    return 0;
}

/* ------------------------------------------------------------------ the job pump */

typedef struct {
    uint64_t submitted;
    int64_t start_us, end_us; /* first submit, last job ended */
} pump_t;

/* The submit options of a workload that honours --forget, --no-ack and --run-timeout (NULL:
   the defaults). */
static const zf_submit_opts_t *submit_opts(const opts_t *o)
{
    return o->forget || o->no_ack || o->run_timeout_ms ? &o->so : NULL;
}

/* Submits n jobs (payloads from t->gen, options so, may be NULL) with at most `window`
   outstanding and collects their results into t. Returns 0, or -1 when it stopped early
   (stall or send failure; the jobs not ended then count as missing). */
static int pump(const opts_t *o, zf_client_t *c, const char *fn, const zf_submit_opts_t *so,
                tally_t *t, uint64_t n, uint64_t window, pump_t *p)
{
    unsigned char *buf = malloc(gen_max(t->gen) + 1);
    if (!buf)
        return -1;
    uint64_t ended = 0;
    int rc = 0;
    p->submitted = 0;
    p->start_us = zf_now_us();
    while (ended < n) {
        while (p->submitted < n && p->submitted - ended < window) {
            size_t len = gen_fill(t->gen, p->submitted, buf);
            uint64_t tag;
            if (zf_client_submit_async(c, fn, buf, len, so, &tag) < 0) {
                fprintf(stderr, "zfleet bench: submit failed: %s\n", zf_client_error(c));
                t->send_failed++;
                rc = -1;
                goto out;
            }
            if (p->submitted == 0)
                t->tag0 = tag;
            else if (tag != t->tag0 + p->submitted) {
                fprintf(stderr, "zfleet bench: submit tags are not consecutive\n");
                rc = -1;
                goto out;
            }
            p->submitted++;
        }
        zf_event_t *e = zf_client_next(c, (int)o->stall_ms);
        if (!e) {
            fprintf(stderr,
                    "zfleet bench: nothing arrived for %llu ms with %llu job(s) "
                    "outstanding; giving up\n",
                    (unsigned long long)o->stall_ms, (unsigned long long)(p->submitted - ended));
            rc = -1;
            break;
        }
        if (tally_event(t, e) >= 0)
            ended++;
        zf_event_destroy(&e);
    }
out:
    p->end_us = t->last_end_us > p->start_us ? t->last_end_us : zf_now_us();
    tally_close(t, p->submitted);
    t->missing += n - p->submitted; /* never sent: no result either */
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ workloads */

static int finish(report_t *r, const opts_t *o, uint64_t errors)
{
    rep_print(r, o->json);
    return errors ? EXIT_ERRORS : 0;
}

/* A client of the broker, with CURVE when $ZFLEET_KEY and $ZFLEET_BROKER_KEY name key
   files (as for the CLI: bench/run measures CURVE's cost that way). NULL after one line. */
static zf_client_t *bench_client(const char *ep)
{
    zf_client_t *c = zf_client_new(ep);
    if (!c) {
        fprintf(stderr, "zfleet bench: bad broker endpoint\n");
        return NULL;
    }
    const char *key = getenv("ZFLEET_KEY"), *bkey = getenv("ZFLEET_BROKER_KEY");
    if (((key && *key) || (bkey && *bkey)) &&
        zf_client_set_keys(c, key && *key ? key : NULL, bkey && *bkey ? bkey : NULL) < 0) {
        fprintf(stderr, "zfleet bench: %s\n", zf_client_error(c));
        zf_client_destroy(&c);
    }
    return c;
}

/* Opens a client and checks the broker answers and serves fn. */
static zf_client_t *open_client(const opts_t *o, const char *fn, stats_t *st, int *rc)
{
    *rc = 0; /* (set again on every failure: this quiets -O3's maybe-uninitialized) */
    zf_client_t *c = bench_client(o->ep);
    if (!c) {
        *rc = EXIT_USAGE;
        return NULL;
    }
    zf_client_set_request_timeout(c, 3000);
    if (get_stats(c, NULL, st) < 0) {
        fprintf(stderr, "zfleet bench: %s\n", zf_client_error(c));
        zf_client_destroy(&c);
        *rc = EXIT_UNREACHABLE;
        return NULL;
    }
    if (fn && await_workers(c, fn, 10000, st) < 0) {
        zf_client_destroy(&c);
        *rc = EXIT_ERRORS;
        return NULL;
    }
    return c;
}

/* throughput and bigpayload: echo jobs through a window of outstanding submits. */
static int wl_stream(const opts_t *o, bool big)
{
    const char *fn = o->function ? o->function : "echo";
    uint64_t n = o->jobs ? o->jobs : big ? 200 : 20000;
    uint64_t len = o->payload != UINT64_MAX ? o->payload : big ? MIB : 64;
    uint64_t window = o->inflight ? o->inflight : big ? 8 : 256;
    stats_t st;
    int rc;
    zf_client_t *c = open_client(o, fn, &st, &rc);
    if (!c)
        return rc;
    gen_t g = {.len = len, .nonce = zf_random64()};
    tally_t t;
    if (tally_init(&t, n, &g) < 0) {
        zf_client_destroy(&c);
        return EXIT_USAGE;
    }
    pump_t p;
    pump(o, c, fn, submit_opts(o), &t, n, window, &p);
    double wall = (double)(p.end_us - p.start_us) / 1e6;
    report_t r = {.workload = big ? "bigpayload" : "throughput"};
    rep_s(&r, "function", fn);
    rep_u(&r, "jobs", n);
    rep_u(&r, "payload_bytes", len);
    rep_u(&r, "inflight", window);
    rep_u(&r, "forget", o->forget);
    rep_u(&r, "no_ack", o->no_ack);
    rep_u(&r, "workers", st.fn_workers);
    rep_u(&r, "credits_total", st.credits);
    rep_d(&r, "wall_s", wall, 3);
    rep_d(&r, "jobs_per_s", (double)t.results / wall, 1);
    if (big)
        rep_d(&r, "mb_per_s", (double)t.results * (double)len / 1e6 / wall, 1);
    tally_report(&t, &r);
    uint64_t errors = tally_errors(&t);
    tally_free(&t);
    zf_client_destroy(&c);
    return finish(&r, o, errors);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[n]. */
static int64_t pct(const int64_t *v, uint64_t n, double p)
{
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)n);
    return v[rank ? rank - 1 : 0];
}

/* latency: one job at a time, submit to result. */
static int wl_latency(const opts_t *o)
{
    const char *fn = o->function ? o->function : "echo";
    uint64_t m = o->jobs ? o->jobs : 2000;
    uint64_t warm = o->warmup != UINT64_MAX ? o->warmup : 200;
    uint64_t len = o->payload != UINT64_MAX ? o->payload : 64;
    stats_t st;
    int rc;
    zf_client_t *c = open_client(o, fn, &st, &rc);
    if (!c)
        return rc;
    gen_t g = {.len = len, .nonce = zf_random64()};
    tally_t t;
    int64_t *lat = malloc(m * sizeof *lat);
    unsigned char *buf = malloc(len + 1);
    if (!lat || !buf || tally_init(&t, warm + m, &g) < 0) {
        zf_client_destroy(&c);
        return EXIT_USAGE;
    }
    uint64_t done = 0, submitted = 0;
    for (uint64_t i = 0; i < warm + m; i++) {
        size_t plen = gen_fill(&g, i, buf);
        uint64_t tag;
        int64_t t0 = zf_now_us();
        if (zf_client_submit_async(c, fn, buf, plen, submit_opts(o), &tag) < 0) {
            fprintf(stderr, "zfleet bench: submit failed: %s\n", zf_client_error(c));
            t.send_failed++;
            break;
        }
        if (i == 0)
            t.tag0 = tag;
        submitted++;
        int64_t ended = -1;
        while (ended != (int64_t)i) {
            zf_event_t *e = zf_client_next(c, (int)o->stall_ms);
            if (!e)
                break;
            ended = tally_event(&t, e);
            zf_event_destroy(&e);
        }
        if (ended != (int64_t)i) {
            fprintf(stderr, "zfleet bench: job %llu: no result within %llu ms; giving up\n",
                    (unsigned long long)i, (unsigned long long)o->stall_ms);
            break;
        }
        if (i >= warm)
            lat[done++] = zf_now_us() - t0;
    }
    tally_close(&t, submitted);
    t.missing += warm + m - submitted;
    qsort(lat, done, sizeof *lat, cmp_i64);
    report_t r = {.workload = "latency"};
    rep_s(&r, "function", fn);
    rep_u(&r, "jobs", m);
    rep_u(&r, "warmup", warm);
    rep_u(&r, "payload_bytes", len);
    rep_u(&r, "forget", o->forget);
    rep_u(&r, "no_ack", o->no_ack);
    rep_u(&r, "workers", st.fn_workers);
    if (done) {
        double sum = 0;
        for (uint64_t i = 0; i < done; i++)
            sum += (double)lat[i];
        rep_u(&r, "p50_us", (uint64_t)pct(lat, done, 50));
        rep_u(&r, "p90_us", (uint64_t)pct(lat, done, 90));
        rep_u(&r, "p99_us", (uint64_t)pct(lat, done, 99));
        rep_u(&r, "max_us", (uint64_t)lat[done - 1]);
        rep_d(&r, "mean_us", sum / (double)done, 1);
    }
    tally_report(&t, &r);
    uint64_t errors = tally_errors(&t);
    free(lat);
    free(buf);
    tally_free(&t);
    zf_client_destroy(&c);
    return finish(&r, o, errors);
}

/* efficiency: many short CPU-bound jobs at once; how close to ideal the fleet stays busy. */
static int wl_efficiency(const opts_t *o)
{
    const char *fn = o->function ? o->function : "spin";
    uint64_t n = o->jobs ? o->jobs : 400;
    stats_t st;
    int rc;
    zf_client_t *c = open_client(o, fn, &st, &rc);
    if (!c)
        return rc;
    char arg[24];
    snprintf(arg, sizeof arg, "%llu", (unsigned long long)o->spin_ms);
    gen_t g = {.fixed = arg};
    tally_t t;
    if (tally_init(&t, n, &g) < 0) {
        zf_client_destroy(&c);
        return EXIT_USAGE;
    }
    pump_t p;
    pump(o, c, fn, submit_opts(o), &t, n, o->inflight ? o->inflight : n, &p);
    double wall = (double)(p.end_us - p.start_us) / 1e6;
    double ideal = (double)n * (double)o->spin_ms / 1000.0 / (double)o->workers;
    report_t r = {.workload = "efficiency"};
    rep_s(&r, "function", fn);
    rep_u(&r, "jobs", n);
    rep_u(&r, "spin_ms", o->spin_ms);
    rep_u(&r, "run_timeout_ms", o->run_timeout_ms);
    rep_u(&r, "workers", o->workers);
    rep_u(&r, "workers_seen", st.fn_workers);
    rep_u(&r, "credits_total", st.credits);
    rep_d(&r, "ideal_s", ideal, 3);
    rep_d(&r, "wall_s", wall, 3);
    rep_d(&r, "efficiency", ideal / wall, 4);
    rep_d(&r, "jobs_per_s", (double)t.results / wall, 1);
    tally_report(&t, &r);
    if (st.fn_workers != o->workers)
        fprintf(stderr,
                "zfleet bench: note: %llu worker(s) serve '%s', the efficiency divides "
                "by --workers %llu\n",
                (unsigned long long)st.fn_workers, fn, (unsigned long long)o->workers);
    uint64_t errors = tally_errors(&t);
    tally_free(&t);
    zf_client_destroy(&c);
    return finish(&r, o, errors);
}

/* backlog: queue n jobs with no worker attached, measure the broker, then drain. */
static int wl_backlog(const opts_t *o)
{
    const char *fn = o->function ? o->function : "echo";
    uint64_t n = o->jobs ? o->jobs : 1000000;
    uint64_t len = o->payload != UINT64_MAX ? o->payload : 64;
    stats_t st;
    int rc;
    zf_client_t *c = open_client(o, NULL, &st, &rc);
    if (!c)
        return rc;
    zf_client_t *sc = bench_client(o->ep); /* for stats while results stream in */
    if (!sc || get_stats(sc, fn, &st) < 0) {
        fprintf(stderr, "zfleet bench: stats failed\n");
        zf_client_destroy(&sc);
        zf_client_destroy(&c);
        return EXIT_UNREACHABLE;
    }
    if (st.fn_workers || st.fn_queued) {
        fprintf(stderr,
                "zfleet bench: backlog needs '%s' idle: %llu worker(s) serve it and "
                "%llu job(s) are queued. Stop its workers (or pick another --function)\n",
                fn, (unsigned long long)st.fn_workers, (unsigned long long)st.fn_queued);
        zf_client_destroy(&sc);
        zf_client_destroy(&c);
        return EXIT_USAGE;
    }
    uint64_t rss0 = 0, hwm0 = 0;
    if (o->broker_pid)
        proc_rss(o->broker_pid, &rss0, &hwm0);
    gen_t g = {.len = len, .nonce = zf_random64()};
    tally_t t;
    unsigned char *buf = malloc(len + 1);
    if (!buf || tally_init(&t, n, &g) < 0) {
        zf_client_destroy(&sc);
        zf_client_destroy(&c);
        return EXIT_USAGE;
    }
    /* phase 1: submit everything, reading acceptances as they come (at most 64k unanswered) */
    uint64_t submitted = 0, ended = 0, window = 65536;
    int64_t start = zf_now_us();
    bool stalled = false;
    while (!stalled && (submitted < n || t.accepted + t.rejected < n)) {
        while (submitted < n && submitted - (t.accepted + t.rejected) < window) {
            size_t plen = gen_fill(&g, submitted, buf);
            uint64_t tag;
            if (zf_client_submit_async(c, fn, buf, plen, NULL, &tag) < 0) {
                fprintf(stderr, "zfleet bench: submit failed: %s\n", zf_client_error(c));
                t.send_failed++;
                stalled = true;
                break;
            }
            if (submitted == 0)
                t.tag0 = tag;
            submitted++;
            if ((submitted & 255) == 0)
                break; /* read what has arrived */
        }
        int wait =
            submitted < n && submitted - (t.accepted + t.rejected) < window ? 0 : (int)o->stall_ms;
        for (zf_event_t *e; (e = zf_client_next(c, wait)); wait = 0) {
            if (tally_event(&t, e) >= 0)
                ended++;
            zf_event_destroy(&e);
        }
        if (wait && !stalled && t.accepted + t.rejected < submitted) {
            fprintf(stderr, "zfleet bench: no acceptance for %llu ms; giving up\n",
                    (unsigned long long)o->stall_ms);
            stalled = true;
        }
    }
    int64_t accepted_us = zf_now_us();
    double submit_s = (double)(accepted_us - start) / 1e6;
    uint64_t rss = 0, hwm = 0;
    bool have_rss = o->broker_pid && proc_rss(o->broker_pid, &rss, &hwm) == 0;
    get_stats(sc, fn, &st);
    uint64_t queued_full = st.fn_queued;
    fprintf(stderr,
            "zfleet bench: backlog: %llu job(s) queued for '%s'; waiting up to %llu s "
            "for workers to attach (start them now)\n",
            (unsigned long long)queued_full, fn, (unsigned long long)o->attach_s);
    fflush(stderr);
    /* phase 2: wait for a worker, then drain */
    int64_t drain_start = 0, attach_until = zf_now_ms() + (int64_t)o->attach_s * 1000;
    int64_t last_poll = 0, last_event = zf_now_ms();
    while (!stalled && ended < submitted) {
        zf_event_t *e = zf_client_next(c, drain_start ? 100 : 20);
        int64_t now = zf_now_ms();
        if (e) {
            if (!drain_start)
                drain_start = zf_now_us();
            if (tally_event(&t, e) >= 0)
                ended++;
            zf_event_destroy(&e);
            last_event = now;
            continue;
        }
        if (!drain_start && now - last_poll >= 20) {
            last_poll = now;
            if (get_stats(sc, fn, &st) == 0 && st.fn_workers)
                drain_start = zf_now_us();
        }
        if (!drain_start && now >= attach_until) {
            fprintf(stderr, "zfleet bench: no worker attached within %llu s\n",
                    (unsigned long long)o->attach_s);
            stalled = true;
        }
        if (drain_start && now - last_event >= (int64_t)o->stall_ms) {
            fprintf(stderr,
                    "zfleet bench: nothing arrived for %llu ms with %llu job(s) "
                    "outstanding; giving up\n",
                    (unsigned long long)o->stall_ms, (unsigned long long)(submitted - ended));
            stalled = true;
        }
    }
    tally_close(&t, submitted);
    t.missing += n - submitted;
    uint64_t rss_after = 0, hwm_after = 0;
    if (o->broker_pid)
        proc_rss(o->broker_pid, &rss_after, &hwm_after);
    double drain_s = drain_start && t.last_end_us > drain_start
                         ? (double)(t.last_end_us - drain_start) / 1e6
                         : NAN;
    report_t r = {.workload = "backlog"};
    rep_s(&r, "function", fn);
    rep_u(&r, "jobs", n);
    rep_u(&r, "payload_bytes", len);
    rep_u(&r, "queued_seen", queued_full);
    rep_d(&r, "submit_s", submit_s, 3);
    rep_d(&r, "submit_per_s", (double)t.accepted / submit_s, 1);
    if (have_rss) {
        rep_d(&r, "rss_idle_mb", (double)rss0 / 1e6, 1);
        rep_d(&r, "rss_mb", (double)rss / 1e6, 1);
        rep_d(&r, "rss_peak_mb", (double)hwm / 1e6, 1);
        rep_d(&r, "rss_per_job_b", (double)(rss - rss0) / (double)(n ? n : 1), 1);
        rep_d(&r, "rss_after_drain_mb", (double)rss_after / 1e6, 1);
    } else {
        rep_s(&r, "rss_mb", o->broker_pid ? "unreadable" : "unknown: give --broker-pid");
    }
    rep_d(&r, "drain_s", drain_s, 3);
    rep_d(&r, "drain_per_s", (double)t.results / drain_s, 1);
    tally_report(&t, &r);
    uint64_t errors = tally_errors(&t);
    free(buf);
    tally_free(&t);
    zf_client_destroy(&sc);
    zf_client_destroy(&c);
    return finish(&r, o, errors);
}

/* ------------------------------------------------------------------ options */

static void bench_usage(FILE *f)
{
    fputs("usage: zfleet [--broker EP] bench WORKLOAD [options] [--json]\n"
          "workloads:\n"
          "  throughput   --jobs N (20000) echo jobs of --payload BYTES (64), at most\n"
          "               --inflight W (256) outstanding; jobs/s from first submit to last result\n"
          "  latency      --jobs M (2000) sequential submit-to-result round trips after\n"
          "               --warmup K (200); p50/p90/p99/max in microseconds\n"
          "  efficiency   --jobs N (400) spin jobs of --spin-ms MS (5) at once;\n"
          "               efficiency = (N * MS / --workers W (2)) / wall time\n"
          "  bigpayload   --jobs N (200) echo jobs of --payload BYTES (1 MiB), --inflight 8;\n"
          "               MB/s of payload delivered\n"
          "  backlog      --jobs N (1000000) jobs of 64 bytes queued while no worker serves\n"
          "               --function (echo); submit rate and broker RSS (--broker-pid), then\n"
          "               waits --attach-timeout S (600) for workers and reports the drain rate\n"
          "The idle-fleet workload speaks the worker protocol: it is its own program,\n"
          "zfleet-idle-fleet (bench/).\n"
          "options:\n"
          "  --function NAME    function to submit to (echo; spin for efficiency)\n"
          "  --stall-ms MS      give up when nothing arrives for this long (10000)\n"
          "  --forget           throughput, latency, bigpayload: submit every job with forget\n"
          "                     (the broker drops each result once it has pushed it here)\n"
          "  --no-ack           throughput, latency, bigpayload: submit every job with no_ack\n"
          "                     (no ACCEPTED: the result answers the submit)\n"
          "  --run-timeout MS   every job with a run timeout of MS (none): what a timed job\n"
          "                     costs its worker\n"
          "  --json             one JSON object on stdout\n"
          "Every result is checked (payload echoed intact, each job exactly once); problems are\n"
          "counted in `errors`. Exit: 0 no errors, 1 errors, 2 usage, 4 broker unreachable.\n",
          f);
}

/* A bounded number for --opt, or -1 after zf_parse_opt's one line (exit 2). */
static int num(const char *opt, const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    return zf_parse_opt("zfleet bench", opt, v, min, max, out);
}

int zf_bench_main(int argc, char **argv, const char *ep, int json)
{
    zf_tune_malloc(); /* the bench is a zfleet program, not a host application */
    opts_t o = {.ep = ep,
                .json = json,
                .payload = UINT64_MAX,
                .warmup = UINT64_MAX,
                .workers = 2,
                .spin_ms = 5,
                .stall_ms = 10000,
                .attach_s = 600};
    static const struct option opts[] = {{"broker", 1, 0, 'b'},
                                         {"json", 0, 0, 'J'},
                                         {"jobs", 1, 0, 'n'},
                                         {"payload", 1, 0, 'p'},
                                         {"inflight", 1, 0, 'i'},
                                         {"workers", 1, 0, 'w'},
                                         {"spin-ms", 1, 0, 's'},
                                         {"warmup", 1, 0, 'W'},
                                         {"function", 1, 0, 'f'},
                                         {"broker-pid", 1, 0, 'P'},
                                         {"stall-ms", 1, 0, 'T'},
                                         {"attach-timeout", 1, 0, 'A'},
                                         {"forget", 0, 0, 'G'},
                                         {"no-ack", 0, 0, 'K'},
                                         {"run-timeout", 1, 0, 'R'},
                                         {"help", 0, 0, 'H'},
                                         {0, 0, 0, 0}};
    optind = 1;
    opterr = 1;
    int c, bad = 0;
    while (!bad && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'b': o.ep = optarg; break;
        case 'J': o.json = 1; break;
        case 'n': bad = num("jobs", optarg, 1, 100000000, &o.jobs); break;
        case 'p': bad = num("payload", optarg, 0, 1ull << 30, &o.payload); break;
        case 'i': bad = num("inflight", optarg, 1, 10000000, &o.inflight); break;
        case 'w': bad = num("workers", optarg, 1, 100000, &o.workers); break;
        case 's': bad = num("spin-ms", optarg, 1, 3600000, &o.spin_ms); break;
        case 'W': bad = num("warmup", optarg, 0, 10000000, &o.warmup); break;
        case 'f':
            if (!*optarg || strlen(optarg) > ZFLEET_FUNCTION_MAX) {
                fprintf(stderr, "zfleet bench: --function must be 1 to %d bytes\n",
                        ZFLEET_FUNCTION_MAX);
                bad = -1;
            }
            o.function = optarg;
            break;
        case 'P': bad = num("broker-pid", optarg, 1, 1u << 22, &o.broker_pid); break;
        case 'T': bad = num("stall-ms", optarg, 10, 86400000, &o.stall_ms); break;
        case 'A': bad = num("attach-timeout", optarg, 1, 86400, &o.attach_s); break;
        case 'G': o.forget = true; break;
        case 'K': o.no_ack = true; break;
        case 'R': bad = num("run-timeout", optarg, 1, UINT32_MAX, &o.run_timeout_ms); break;
        case 'H': bench_usage(stdout); return 0;
        default: bad = -1;
        }
    }
    if (bad || optind + 1 != argc) {
        if (!bad)
            fprintf(stderr, "zfleet bench: %s\n",
                    optind >= argc ? "name one WORKLOAD" : "one WORKLOAD at a time");
        bench_usage(stderr);
        return EXIT_USAGE;
    }
    o.workload = argv[optind];
    o.so = (zf_submit_opts_t){
        .forget = o.forget, .no_ack = o.no_ack, .timeout_ms = (uint32_t)o.run_timeout_ms};
    if (!strcmp(o.workload, "throughput"))
        return wl_stream(&o, false);
    if (!strcmp(o.workload, "bigpayload"))
        return wl_stream(&o, true);
    if (!strcmp(o.workload, "latency"))
        return wl_latency(&o);
    if (!strcmp(o.workload, "efficiency"))
        return wl_efficiency(&o);
    if (!strcmp(o.workload, "backlog"))
        return wl_backlog(&o);
    if (!strcmp(o.workload, "idle-fleet")) {
        fprintf(stderr, "zfleet bench: idle-fleet simulates workers, so it is its own program "
                        "now: zfleet-idle-fleet (build/bench/zfleet-idle-fleet)\n");
        return EXIT_USAGE;
    }
    fprintf(stderr, "zfleet bench: unknown workload '%s'\n", o.workload);
    bench_usage(stderr);
    return EXIT_USAGE;
}
