/*  zfleet-idle-fleet — what an idle fleet costs the broker: N simulated workers that
    register and then only heartbeat, and the broker's CPU over a window.

    The one bench program that speaks the worker protocol (through proto's codec); the
    client-side workloads are `zfleet bench` (client/bench.c). It asks the broker for its
    worker list through libzfleet, so a worker that fails to register, is dropped, is reset
    (presumed dead) or is sent a job counts as an error. Output: "name value" lines, or one
    JSON object with --json (the same keys `zfleet bench idle-fleet` printed). Exit: 0 no
    errors, 1 errors, 2 usage, 4 broker unreachable. See bench/README.md.
*/
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

#include "zf_proto.h"
#include "zf_util.h"
#include "zf_wire.h"
#include "zfleet.h"

enum { EXIT_ERRORS = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 4 };

#define BENCH_FN "zfleet_bench_idle"

typedef struct {
    const char *ep, *worker_ep;
    int json;
    uint64_t broker_pid, seconds, fleet, heartbeat_ms;
} opts_t;

typedef struct {
    uint64_t jobs, resets, send_failed, malformed;
} idle_errs_t;

/* ------------------------------------------------------------------ the broker, from outside */

/* Workers the broker lists (the size of STATS "workers"), or -1 (the client's error says
   why). */
static int64_t broker_workers(zf_client_t *c)
{
    zf_event_t *e = zf_client_stats(c);
    if (!e)
        return -1;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int64_t n = -1;
    if (msgpack_unpack_next(&up, e->output, e->output_len, &off) == MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < up.data.via.map.size; i++) {
            const msgpack_object *k = &up.data.via.map.ptr[i].key;
            const msgpack_object *v = &up.data.via.map.ptr[i].val;
            if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 7 &&
                !memcmp(k->via.str.ptr, "workers", 7) && v->type == MSGPACK_OBJECT_ARRAY)
                n = v->via.array.size;
        }
    }
    msgpack_unpacked_destroy(&up);
    zf_event_destroy(&e);
    return n;
}

/* CPU time (user + system) of pid in seconds, or -1. */
static double proc_cpu_s(uint64_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%llu/stat", (unsigned long long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* fields after the command name, which may itself hold spaces and parentheses */
    const char *p = strrchr(buf, ')');
    unsigned long long ut, stime;
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stime) != 2)
        return -1;
    return (double)(ut + stime) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ------------------------------------------------------------------ the simulated fleet */

/* One simulated worker: a DEALER that registers and then only heartbeats. */
static int idle_ready(void *s, uint64_t i, uint32_t hb_ms)
{
    char name[64];
    snprintf(name, sizeof name, "bench-idle-%d-%llu", (int)getpid(), (unsigned long long)i);
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_READY);
    zf_msg_set_str(&m, ZF_F_WORKER, name);
    zf_msg_set_u64(&m, ZF_F_DEVICE, ZF_DEV_CPU);
    zf_msg_set_i32(&m, ZF_F_DEVINDEX, -1);
    zf_msg_set_str(&m, ZF_F_DEVNAME, "cpu:sim");
    zf_msg_set_str(&m, ZF_F_TEXT, "simulated idle worker");
    zf_msg_set_u64(&m, ZF_F_CREDITS, 1);
    zf_msg_set_u64(&m, ZF_F_HEARTBEAT, hb_ms);
    zf_msg_add_function(&m, BENCH_FN);
    return zf_wire_send(s, NULL, &m, NULL);
}

static int idle_send(void *s, uint8_t cmd, uint32_t flags)
{
    zf_msg_t m;
    zf_msg_init(&m, cmd);
    if (flags)
        zf_msg_set_u64(&m, ZF_F_FLAGS, flags);
    return zf_wire_send(s, NULL, &m, NULL);
}

/* The simulated worker a message came to, for idle_message. */
typedef struct {
    void *sock;
    uint64_t index;
    uint32_t hb_ms;
    idle_errs_t *err;
} idle_worker_t;

/* Counts what an idle worker should never get; a RESET is answered with a new READY. */
static void idle_message(void *arg, zf_frames_t *f)
{
    idle_worker_t *w = arg;
    zf_msg_t m;
    int e;
    if (f->n < 1 ||
        zf_msg_decode(&m, zmq_msg_data(&f->part[0]), zmq_msg_size(&f->part[0]), &e, NULL) < 0) {
        w->err->malformed++;
    } else if (m.cmd == ZF_CMD_JOB) {
        w->err->jobs++; /* nothing should route a job to BENCH_FN */
    } else if (m.cmd == ZF_CMD_RESET) {
        w->err->resets++; /* the broker presumed this live worker dead */
        idle_ready(w->sock, w->index, w->hb_ms);
    }
}

/* Reads and answers whatever the broker sent the fleet, heartbeats every hb_ms, until
   `until_ms`. */
static void idle_serve(void **socks, zmq_pollitem_t *items, uint64_t n, uint32_t hb_ms,
                       int64_t *next_hb, int64_t until_ms, idle_errs_t *err)
{
    for (;;) {
        int64_t now = zf_now_ms();
        if (now >= *next_hb) {
            for (uint64_t i = 0; i < n; i++)
                if (idle_send(socks[i], ZF_CMD_HEARTBEAT, 0) < 0)
                    err->send_failed++;
            *next_hb = now + hb_ms;
        }
        if (now >= until_ms)
            return;
        int64_t wake = *next_hb < until_ms ? *next_hb : until_ms;
        if (zmq_poll(items, (int)n, (long)(wake - now)) <= 0)
            continue;
        for (uint64_t i = 0; i < n; i++) {
            idle_worker_t w = {socks[i], i, hb_ms, err};
            /* all that is waiting: the broker sends an idle worker next to nothing */
            if (items[i].revents & ZMQ_POLLIN)
                zf_wire_read_batch(socks[i], INT_MAX, idle_message, &w);
        }
    }
}

/* ------------------------------------------------------------------ report */

static void field(const opts_t *o, int *first, const char *key, const char *fmt, double v)
{
    char val[64];
    snprintf(val, sizeof val, fmt, v);
    if (o->json)
        printf("%s\"%s\":%s", *first ? "{\"workload\":\"idle-fleet\"," : ",", key, val);
    else
        printf("%s  %-18s %s\n", *first ? "zfleet-idle-fleet\n" : "", key, val);
    *first = 0;
}

static int run(const opts_t *o)
{
    zf_client_t *c = zf_client_new(o->ep);
    if (!c) {
        fprintf(stderr, "zfleet-idle-fleet: bad broker endpoint\n");
        return EXIT_USAGE;
    }
    zf_client_set_request_timeout(c, 3000);
    int64_t before = broker_workers(c);
    if (before < 0) {
        fprintf(stderr, "zfleet-idle-fleet: %s\n", zf_client_error(c));
        zf_client_destroy(&c);
        return EXIT_UNREACHABLE;
    }
    uint64_t n = o->fleet;
    uint32_t hb = (uint32_t)o->heartbeat_ms;
    /* each socket holds a TCP connection and a mailbox: raise the descriptor limit */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, (int)n + 64);
    void **socks = calloc(n, sizeof *socks);
    zmq_pollitem_t *items = calloc(n, sizeof *items);
    idle_errs_t err = {0};
    uint64_t opened = 0;
    for (; socks && items && opened < n; opened++) {
        void *s = zmq_socket(ctx, ZMQ_DEALER);
        int zero = 0;
        if (!s || zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
            zmq_connect(s, o->worker_ep) < 0) {
            fprintf(stderr, "zfleet-idle-fleet: socket %llu of %llu: %s\n",
                    (unsigned long long)opened, (unsigned long long)n, zmq_strerror(errno));
            if (s)
                zmq_close(s);
            break;
        }
        socks[opened] = s;
        items[opened] = (zmq_pollitem_t){s, 0, ZMQ_POLLIN, 0};
        if (idle_ready(s, opened, hb) < 0)
            err.send_failed++;
    }
    /* wait until the broker lists them all, answering heartbeats meanwhile */
    int64_t next_hb = zf_now_ms() + hb, until = zf_now_ms() + 30000;
    uint64_t registered = 0;
    while (zf_now_ms() < until) {
        idle_serve(socks, items, opened, hb, &next_hb, zf_now_ms() + 200, &err);
        int64_t now_listed = broker_workers(c);
        registered = now_listed > before ? (uint64_t)(now_listed - before) : 0;
        if (registered >= opened)
            break;
    }
    /* settle, then measure */
    idle_serve(socks, items, opened, hb, &next_hb, zf_now_ms() + 1000, &err);
    double cpu0 = proc_cpu_s(o->broker_pid), self0 = self_cpu_s();
    int64_t t0 = zf_now_us();
    idle_serve(socks, items, opened, hb, &next_hb, zf_now_ms() + (int64_t)o->seconds * 1000, &err);
    double cpu1 = proc_cpu_s(o->broker_pid), self1 = self_cpu_s();
    double wall = (double)(zf_now_us() - t0) / 1e6;
    int64_t after = broker_workers(c);
    uint64_t still = after > before ? (uint64_t)(after - before) : 0;
    for (uint64_t i = 0; i < opened; i++) {
        idle_send(socks[i], ZF_CMD_BYE, ZF_FLAG_BYE_NOW); /* leave now, no drain */
        zmq_close(socks[i]);
    }
    free(socks);
    free(items);
    zmq_ctx_term(ctx);
    zf_client_destroy(&c);
    uint64_t missing = n - (registered < n ? registered : n);
    uint64_t lost = registered > still ? registered - still : 0;
    uint64_t errors = missing + lost + err.jobs + err.resets + err.send_failed + err.malformed;
    int first = 1;
    field(o, &first, "workers", "%.0f", (double)n);
    field(o, &first, "registered", "%.0f", (double)registered);
    field(o, &first, "heartbeat_ms", "%.0f", hb);
    field(o, &first, "seconds", "%.1f", wall);
    if (cpu0 < 0 || cpu1 < 0) {
        fprintf(stderr, "zfleet-idle-fleet: cannot read /proc/%llu/stat\n",
                (unsigned long long)o->broker_pid);
        errors++;
        field(o, &first, "broker_cpu_pct", o->json ? "\"unreadable\"" : "unreadable", 0);
    } else {
        field(o, &first, "broker_cpu_pct", "%.2f", (cpu1 - cpu0) / wall * 100.0);
    }
    field(o, &first, "bench_cpu_pct", "%.2f", (self1 - self0) / wall * 100.0);
    field(o, &first, "errors", "%.0f", (double)errors);
    field(o, &first, "missing_workers", "%.0f", (double)missing);
    field(o, &first, "lost_workers", "%.0f", (double)lost);
    field(o, &first, "resets", "%.0f", (double)err.resets);
    field(o, &first, "unexpected_jobs", "%.0f", (double)err.jobs);
    field(o, &first, "send_failed", "%.0f", (double)err.send_failed);
    if (o->json)
        printf("}\n");
    fflush(stdout);
    return errors ? EXIT_ERRORS : 0;
}

/* ------------------------------------------------------------------ options */

static void usage(FILE *f)
{
    fputs("usage: zfleet-idle-fleet --broker-pid PID [options] [--json]\n"
          "  --fleet N              simulated idle workers (1000)\n"
          "  --broker EP            the broker's client endpoint, for its worker list\n"
          "                         ($ZFLEET_BROKER, else tcp://127.0.0.1:5555)\n"
          "  --worker-endpoint EP   the broker's worker endpoint (tcp://127.0.0.1:5556)\n"
          "  --seconds S            measuring window (30)\n"
          "  --heartbeat MS         heartbeat interval of the simulated workers (1000)\n"
          "  --broker-pid PID       the broker, whose CPU is read from /proc (required)\n"
          "  --json                 one JSON object on stdout\n"
          "Exit: 0 no errors, 1 errors, 2 usage, 4 broker unreachable.\n",
          f);
}

/* A bounded number for --opt, or -1 after zf_parse_opt's one line (exit 2). */
static int num(const char *opt, const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    return zf_parse_opt("zfleet-idle-fleet", opt, v, min, max, out);
}

int main(int argc, char **argv)
{
    zf_tune_malloc();
    opts_t o = {
        .worker_ep = "tcp://127.0.0.1:5556", .seconds = 30, .fleet = 1000, .heartbeat_ms = 1000};
    static const struct option opts[] = {
        {"broker", 1, 0, 'b'},          {"json", 0, 0, 'J'},  {"broker-pid", 1, 0, 'P'},
        {"seconds", 1, 0, 'S'},         {"fleet", 1, 0, 'F'}, {"heartbeat", 1, 0, 'h'},
        {"worker-endpoint", 1, 0, 'E'}, {"help", 0, 0, 'H'},  {0, 0, 0, 0}};
    int c, bad = 0;
    while (!bad && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'b': o.ep = optarg; break;
        case 'J': o.json = 1; break;
        case 'P': bad = num("broker-pid", optarg, 1, 1u << 22, &o.broker_pid); break;
        case 'S': bad = num("seconds", optarg, 1, 86400, &o.seconds); break;
        case 'F': bad = num("fleet", optarg, 1, 100000, &o.fleet); break;
        case 'h': bad = num("heartbeat", optarg, 10, 3600000, &o.heartbeat_ms); break;
        case 'E': o.worker_ep = optarg; break;
        case 'H': usage(stdout); return 0;
        default: bad = -1;
        }
    }
    if (bad || optind != argc || !o.broker_pid) {
        if (!bad && !o.broker_pid)
            fprintf(stderr, "zfleet-idle-fleet: it measures the broker's CPU: give "
                            "--broker-pid PID\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    return run(&o);
}
