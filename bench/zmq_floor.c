/*  zmq_floor — the latency floor of a job round trip through a broker over ZeroMQ.

    The same topology as zfleet (client, broker and worker processes on loopback TCP) with
    none of zfleet's logic: the client's DEALER sends a 64-byte frame, a broker forwards it
    from its client ROUTER to its worker ROUTER and back, and a worker DEALER echoes it. So a
    round trip is two ZeroMQ hops each way, the minimum any broker built on libzmq pays, and
    the rest of a zfleet round trip is what zfleet itself costs. Also measured: one hop
    (client straight to the echoing worker), what a brokerless design would pay.

    Usage: zmq_floor [ROUND_TRIPS] [--json]      (default 2000, after 200 warm-up ones)
    Prints p50/p90/p99/max in µs for both ("broker", "direct"); exits 1 if a round trip was
    lost or came back different. Not installed; bench/run shows it beside zfleet.
*/
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define WARMUP 200
#define PAYLOAD 64

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Moves one whole message from `from` to `to`, frame by frame. Returns -1 on error. */
static int forward(void *from, void *to)
{
    for (;;) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, from, 0) < 0) {
            zmq_msg_close(&f);
            return -1;
        }
        int more = zmq_msg_more(&f);
        if (zmq_msg_send(&f, to, more ? ZMQ_SNDMORE : 0) < 0) {
            zmq_msg_close(&f);
            return -1;
        }
        if (!more)
            return 0;
    }
}

/* Worker: a DEALER that echoes every message. Runs until killed. */
static void run_worker(const char *ep)
{
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    zmq_connect(s, ep);
    zmq_send(s, "ready", 5, 0); /* lets the broker learn our routing id */
    while (forward(s, s) == 0)
        ;
    exit(0);
}

/* Binds s to a free loopback port and writes the endpoint to fd (one line). */
static int bind_any(void *s, int fd)
{
    char ep[64];
    size_t len = sizeof ep;
    if (zmq_bind(s, "tcp://127.0.0.1:*") < 0 || zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &len) < 0)
        return -1;
    dprintf(fd, "%s\n", ep);
    return 0;
}

/* Broker: client ROUTER <-> worker ROUTER, one worker; the client's routing id travels in
   the message as the zfleet header's tag would. Tells its two endpoints on fd (client's
   first), then runs until killed. */
static void run_broker(int fd)
{
    void *ctx = zmq_ctx_new();
    void *front = zmq_socket(ctx, ZMQ_ROUTER), *back = zmq_socket(ctx, ZMQ_ROUTER);
    if (bind_any(front, fd) < 0 || bind_any(back, fd) < 0)
        exit(2);
    close(fd);
    char wid[256];
    int wlen = zmq_recv(back, wid, sizeof wid, 0); /* the worker's "ready" */
    char junk[16];
    zmq_recv(back, junk, sizeof junk, 0);
    zmq_pollitem_t items[2] = {{front, 0, ZMQ_POLLIN, 0}, {back, 0, ZMQ_POLLIN, 0}};
    for (;;) {
        if (zmq_poll(items, 2, -1) < 0)
            exit(0);
        if (items[0].revents & ZMQ_POLLIN) { /* [client id][payload] -> worker */
            zmq_send(back, wid, (size_t)wlen, ZMQ_SNDMORE);
            forward(front, back);
        }
        if (items[1].revents & ZMQ_POLLIN) { /* [worker id][client id][payload] -> client */
            zmq_recv(back, junk, sizeof junk, 0);
            forward(back, front);
        }
    }
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Round trips from a DEALER connected to ep; fills lat[n] (sorted). -1 if one is lost. */
static int measure(const char *ep, int64_t *lat, int n)
{
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int ms = 5000, zero = 0;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &ms, sizeof ms);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &ms, sizeof ms);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero); /* a lost round trip must not hang us */
    zmq_connect(s, ep);
    char buf[PAYLOAD], back[PAYLOAD + 1];
    int rc = 0;
    for (int i = 0; i < WARMUP + n && rc == 0; i++) {
        memset(buf, 'a' + i % 26, sizeof buf);
        int64_t t0 = now_us();
        if (zmq_send(s, buf, sizeof buf, 0) < 0 || zmq_recv(s, back, sizeof back, 0) != PAYLOAD ||
            memcmp(buf, back, PAYLOAD) != 0)
            rc = -1;
        else if (i >= WARMUP)
            lat[i - WARMUP] = now_us() - t0;
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
    qsort(lat, (size_t)n, sizeof *lat, cmp);
    return rc;
}

static int64_t pct(const int64_t *v, int n, double p)
{
    int rank = (int)(p / 100.0 * n + 0.999999);
    return v[rank > 0 ? rank - 1 : 0];
}

/* One line per topology, or flat JSON fields NAME_p50_us ... (for bench/run's table). */
static void report(const char *name, const int64_t *v, int n, int json)
{
    long long p50 = (long long)pct(v, n, 50), p90 = (long long)pct(v, n, 90),
              p99 = (long long)pct(v, n, 99), max = (long long)v[n - 1];
    if (json)
        printf(",\"%s_p50_us\":%lld,\"%s_p90_us\":%lld,\"%s_p99_us\":%lld,\"%s_max_us\":%lld", name,
               p50, name, p90, name, p99, name, max);
    else
        printf("%-8s p50 %5lld  p90 %5lld  p99 %5lld  max %6lld us\n", name, p50, p90, p99, max);
}

/* Reads one endpoint line from fd into ep. Returns -1 at end of file (the child failed). */
static int read_ep(FILE *f, char *ep, size_t len)
{
    if (!fgets(ep, (int)len, f))
        return -1;
    ep[strcspn(ep, "\n")] = 0;
    return 0;
}

static void reap(pid_t p)
{
    if (p > 0) {
        kill(p, SIGKILL);
        waitpid(p, NULL, 0);
    }
}

/* Forks fn(fd), fn writing its endpoints to the pipe whose reading end comes back in *f. */
static pid_t spawn_binder(void (*fn)(int), FILE **f)
{
    int pfd[2];
    if (pipe(pfd) < 0)
        return -1;
    pid_t p = fork();
    if (p == 0) {
        close(pfd[0]);
        fn(pfd[1]);
        _exit(0);
    }
    close(pfd[1]);
    *f = fdopen(pfd[0], "r");
    return p;
}

/* Echo peer for the one-hop measurement: a ROUTER that sends every message back. */
static void run_echo(int fd)
{
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    if (bind_any(s, fd) < 0)
        exit(2);
    close(fd);
    while (forward(s, s) == 0)
        ;
    exit(0);
}

/* Endpoints are free ports the children bind and report, so runs never collide. */
int main(int argc, char **argv)
{
    int n = 2000, json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if ((n = atoi(argv[i])) <= 0) {
            fprintf(stderr, "usage: zmq_floor [ROUND_TRIPS] [--json]\n");
            return 2;
        }
    }
    int64_t *hop2 = malloc((size_t)n * sizeof *hop2), *hop1 = malloc((size_t)n * sizeof *hop1);
    if (!hop1 || !hop2)
        return 2;
    char cep[64], wep[64], dep[64];
    FILE *bf = NULL, *ef = NULL;
    pid_t w = -1, b = spawn_binder(run_broker, &bf);
    int rc2 = -1, rc1 = -1;
    if (b > 0 && bf && read_ep(bf, cep, sizeof cep) == 0 && read_ep(bf, wep, sizeof wep) == 0) {
        w = fork();
        if (w == 0)
            run_worker(wep);
        rc2 = measure(cep, hop2, n);
    }
    reap(w);
    reap(b);
    pid_t e = spawn_binder(run_echo, &ef);
    if (e > 0 && ef && read_ep(ef, dep, sizeof dep) == 0)
        rc1 = measure(dep, hop1, n);
    reap(e);
    if (rc1 < 0 || rc2 < 0) {
        fprintf(stderr, "zmq_floor: a round trip was lost or corrupted\n");
        return 1;
    }
    if (json)
        printf("{\"round_trips\":%d,\"errors\":0", n);
    report("broker", hop2, n, json);
    report("direct", hop1, n, json);
    if (json)
        printf("}\n");
    free(hop1);
    free(hop2);
    return 0;
}
