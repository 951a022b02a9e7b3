/*  gear_bench — the gearmand peer driver: zfleet bench's throughput and latency workloads
    through libgearman (Debian's libgearman-dev), as bstalk_bench does for beanstalkd.

    Echo semantics as in zfleet: --workers worker processes (forked here) register "echo" and
    return each job's workload unchanged; the client submits foreground jobs and checks every
    result (the body carries the job's index: each job exactly once, bytes unchanged).
    Throughput keeps --inflight jobs in flight: batches of that many tasks, run together by
    gearman_client_run_tasks. Latency: one gearman_client_do at a time, after --warmup.

    usage: gear_bench throughput|latency [--port P] [--jobs N] [--payload B]
                      [--inflight W] [--workers K] [--warmup K] [--json]
    Exit: 0 no errors, 1 errors, 2 usage or connection failure.
*/
#include <getopt.h>
#include <libgearman-1.0/gearman.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zf_util.h"

#define PROG "gear_bench"
#define FN "zfb_echo"

static uint64_t port = 4730;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void usage(void)
{
    fprintf(stderr, "usage: gear_bench throughput|latency [--port P] [--jobs N] [--payload B]\n"
                    "                  [--inflight W] [--workers K] [--warmup K] [--json]\n");
    exit(2);
}

/* ------------------------------------------------------------------ workers */

static void *echo(gearman_job_st *job, void *ctx, size_t *size, gearman_return_t *ret)
{
    (void)ctx;
    size_t n = gearman_job_workload_size(job);
    void *out = malloc(n ? n : 1);
    if (n)
        memcpy(out, gearman_job_workload(job), n);
    *size = n;
    *ret = GEARMAN_SUCCESS;
    return out;
}

static void worker_main(void)
{
    gearman_worker_st *w = gearman_worker_create(NULL);
    if (!w || gearman_worker_add_server(w, "127.0.0.1", (in_port_t)port) != GEARMAN_SUCCESS ||
        gearman_worker_add_function(w, FN, 0, echo, NULL) != GEARMAN_SUCCESS) {
        fprintf(stderr, PROG ": worker cannot register\n");
        _exit(2);
    }
    for (;;)
        if (gearman_worker_work(w) != GEARMAN_SUCCESS)
            usleep(1000);
}

/* ------------------------------------------------------------------ checks */

typedef struct {
    uint64_t n, nonce, len;
    unsigned char *seen;
    uint64_t mismatched, duplicates, unknown, done;
    unsigned char *exp;
} run_t;

/* The body of job idx: "zfb IDX " then bytes derived from the nonce and the position. */
static void gen_fill(uint64_t len, uint64_t nonce, uint64_t idx, unsigned char *buf)
{
    int h = snprintf((char *)buf, len, "zfb %llu ", (unsigned long long)idx);
    for (uint64_t i = (uint64_t)h; i < len; i++)
        buf[i] = (unsigned char)((nonce >> (8 * (i % 8))) + i * 131 + idx);
}

static void check(run_t *r, const void *body, size_t n)
{
    unsigned long long idx;
    char head[32] = "";
    memcpy(head, body, n < sizeof head - 1 ? n : sizeof head - 1);
    if (n != r->len || sscanf(head, "zfb %llu ", &idx) != 1 || idx >= r->n) {
        r->unknown++;
        return;
    }
    gen_fill(r->len, r->nonce, idx, r->exp);
    if (memcmp(body, r->exp, n))
        r->mismatched++;
    else if (r->seen[idx]++)
        r->duplicates++;
    r->done++;
}

static gearman_return_t on_complete(gearman_task_st *task)
{
    check(gearman_task_context(task), gearman_task_data(task), gearman_task_data_size(task));
    return GEARMAN_SUCCESS;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t pct(const int64_t *v, uint64_t n, double p)
{
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)n);
    return v[rank ? rank - 1 : 0];
}

int main(int argc, char **argv)
{
    uint64_t jobs = 0, len = 64, window = 256, nworkers = 2, warm = 200;
    int json = 0;
    static const struct option opts[] = {{"port", 1, 0, 'P'},    {"jobs", 1, 0, 'n'},
                                         {"payload", 1, 0, 'p'}, {"inflight", 1, 0, 'i'},
                                         {"workers", 1, 0, 'w'}, {"warmup", 1, 0, 'W'},
                                         {"json", 0, 0, 'j'},    {0, 0, 0, 0}};
    int o, bad = 0;
    while (!bad && (o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'P': bad = zf_parse_opt(PROG, "port", optarg, 1, 65535, &port); break;
        case 'n': bad = zf_parse_opt(PROG, "jobs", optarg, 1, 1000000000, &jobs); break;
        case 'p': bad = zf_parse_opt(PROG, "payload", optarg, 24, 1ull << 26, &len); break;
        case 'i': bad = zf_parse_opt(PROG, "inflight", optarg, 1, 100000, &window); break;
        case 'w': bad = zf_parse_opt(PROG, "workers", optarg, 1, 64, &nworkers); break;
        case 'W': bad = zf_parse_opt(PROG, "warmup", optarg, 0, 10000000, &warm); break;
        case 'j': json = 1; break;
        default: bad = -1;
        }
    }
    if (bad || optind + 1 != argc)
        usage();
    const char *wl = argv[optind];
    int latency = !strcmp(wl, "latency");
    if (!latency && strcmp(wl, "throughput"))
        usage();
    if (!jobs)
        jobs = latency ? 2000 : 20000;

    pid_t wpid[64];
    for (uint64_t i = 0; i < nworkers; i++) {
        if ((wpid[i] = fork()) < 0)
            return 2;
        if (wpid[i] == 0) {
            worker_main();
            _exit(0);
        }
    }
    run_t r = {.n = latency ? warm + jobs : jobs, .len = len};
    r.nonce = (uint64_t)now_us() * 0x9e3779b97f4a7c15ull;
    r.seen = calloc(r.n, 1);
    r.exp = malloc(len);
    gearman_client_st *c = gearman_client_create(NULL);
    if (!c || gearman_client_add_server(c, "127.0.0.1", (in_port_t)port) != GEARMAN_SUCCESS) {
        fprintf(stderr, PROG ": cannot reach gearmand on port %llu\n", (unsigned long long)port);
        return 2;
    }
    gearman_client_add_options(c, GEARMAN_CLIENT_FREE_TASKS);
    gearman_client_set_complete_fn(c, on_complete);
    uint64_t batch = window;
    unsigned char *bufs = malloc(batch * len);
    int64_t *lat = latency ? malloc(jobs * sizeof *lat) : NULL;
    int64_t start = now_us(), end;
    uint64_t failed = 0;
    if (!latency) {
        for (uint64_t sent = 0; sent < r.n;) {
            uint64_t k = r.n - sent < batch ? r.n - sent : batch;
            for (uint64_t i = 0; i < k; i++) {
                gearman_return_t ret;
                unsigned char *b = bufs + i * len;
                gen_fill(len, r.nonce, sent + i, b);
                if (!gearman_client_add_task(c, NULL, &r, FN, NULL, b, len, &ret))
                    failed++;
            }
            if (gearman_client_run_tasks(c) != GEARMAN_SUCCESS)
                failed++;
            sent += k;
        }
        end = now_us();
    } else {
        for (uint64_t i = 0; i < r.n; i++) {
            gen_fill(len, r.nonce, i, bufs);
            size_t n = 0;
            gearman_return_t ret;
            int64_t t0 = now_us();
            void *res = gearman_client_do(c, FN, NULL, bufs, len, &n, &ret);
            int64_t t1 = now_us();
            if (ret != GEARMAN_SUCCESS || !res)
                failed++;
            else
                check(&r, res, n);
            free(res);
            if (i == warm)
                start = t0;
            if (i >= warm)
                lat[i - warm] = t1 - t0;
        }
        end = now_us();
    }
    for (uint64_t i = 0; i < nworkers; i++)
        kill(wpid[i], SIGKILL);
    for (uint64_t i = 0; i < nworkers; i++)
        waitpid(wpid[i], NULL, 0);
    uint64_t missing = 0;
    for (uint64_t i = 0; i < r.n; i++)
        missing += !r.seen[i];
    uint64_t errors = r.mismatched + r.duplicates + r.unknown + missing + failed;
    double wall = (double)(end - start) / 1e6;
    char figures[256];
    if (latency) {
        qsort(lat, jobs, sizeof *lat, cmp_i64);
        snprintf(figures, sizeof figures,
                 "\"p50_us\":%lld,\"p90_us\":%lld,\"p99_us\":%lld,\"max_us\":%lld",
                 (long long)pct(lat, jobs, 50), (long long)pct(lat, jobs, 90),
                 (long long)pct(lat, jobs, 99), (long long)lat[jobs - 1]);
    } else {
        snprintf(figures, sizeof figures, "\"wall_s\":%.3f,\"jobs_per_s\":%.1f", wall,
                 (double)jobs / wall);
    }
    if (json)
        printf("{\"peer\":\"gearmand\",\"workload\":\"%s\",\"jobs\":%llu,\"payload_bytes\":%llu,"
               "\"inflight\":%llu,\"workers\":%llu,%s,\"errors\":%llu,\"mismatched\":%llu,"
               "\"duplicates\":%llu,\"missing\":%llu}\n",
               wl, (unsigned long long)jobs, (unsigned long long)len,
               (unsigned long long)(latency ? 1 : window), (unsigned long long)nworkers, figures,
               (unsigned long long)errors, (unsigned long long)r.mismatched,
               (unsigned long long)r.duplicates, (unsigned long long)missing);
    else
        printf("gearmand %s: %llu jobs, %llu-byte payload, %llu workers: %s, errors %llu\n", wl,
               (unsigned long long)jobs, (unsigned long long)len, (unsigned long long)nworkers,
               figures, (unsigned long long)errors);
    return errors ? 1 : 0;
}
