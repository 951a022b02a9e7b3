/*  bstalk_bench — the peer driver: zfleet bench's throughput and latency workloads, run
    against beanstalkd over its plain text protocol (no client library needed).

    Echo semantics as in zfleet: the client puts each job into a job tube; --workers worker
    processes (forked here) reserve it, put its body unchanged into a result tube and delete
    it; the client reserves each result, checks it and deletes it. Workers and the client's
    result reader pipeline their commands (delete + next reserve in one write), which is how
    a well-written beanstalkd worker runs. Every result is checked like zfleet bench does:
    the body is the job's payload (its index embedded), each job exactly once.

    usage: bstalk_bench throughput|latency [--port P] [--jobs N] [--payload B]
                        [--inflight W] [--workers K] [--warmup K] [--json]
    Exit: 0 no errors, 1 errors, 2 usage or connection failure.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zf_util.h"

#define LINE_MAX_ 256
#define PROG "bstalk_bench"

typedef struct {
    int fd;
    char buf[1 << 16];
    size_t beg, end;
} conn_t;

static int port = 11300;
static char jobs_tube[64], res_tube[64];

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what)
{
    fprintf(stderr, "bstalk_bench: %s: %s\n", what, errno ? strerror(errno) : "protocol error");
    exit(2);
}

static conn_t *conn_open(void)
{
    conn_t *c = calloc(1, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect to beanstalkd");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return c;
}

static void send_all(conn_t *c, const struct iovec *iov, int n)
{
    struct iovec v[8];
    memcpy(v, iov, (size_t)n * sizeof *v);
    struct iovec *p = v;
    while (n > 0) {
        ssize_t w = writev(c->fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        while (n > 0 && (size_t)w >= p->iov_len) {
            w -= (ssize_t)p->iov_len;
            p++, n--;
        }
        if (n > 0) {
            p->iov_base = (char *)p->iov_base + w;
            p->iov_len -= (size_t)w;
        }
    }
}

static void send_str(conn_t *c, const char *s)
{
    struct iovec v = {(void *)s, strlen(s)};
    send_all(c, &v, 1);
}

static int fill(conn_t *c)
{
    if (c->beg > 0) {
        memmove(c->buf, c->buf + c->beg, c->end - c->beg);
        c->end -= c->beg;
        c->beg = 0;
    }
    if (c->end == sizeof c->buf)
        return -1;
    ssize_t r;
    do
        r = read(c->fd, c->buf + c->end, sizeof c->buf - c->end);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return -1;
    c->end += (size_t)r;
    return 0;
}

/* Reads one "\r\n"-terminated line into out (without the terminator). */
static void read_line(conn_t *c, char *out, size_t cap)
{
    for (;;) {
        char *nl = memmem(c->buf + c->beg, c->end - c->beg, "\r\n", 2);
        if (nl) {
            size_t n = (size_t)(nl - (c->buf + c->beg));
            if (n >= cap)
                n = cap - 1;
            memcpy(out, c->buf + c->beg, n);
            out[n] = 0;
            c->beg = (size_t)(nl - c->buf) + 2;
            return;
        }
        if (fill(c) < 0)
            die("read");
    }
}

/* Reads n bytes and the trailing "\r\n" into out. */
static void read_body(conn_t *c, unsigned char *out, size_t n)
{
    size_t got = 0;
    while (got < n + 2) {
        if (c->beg == c->end && fill(c) < 0)
            die("read body");
        size_t take = c->end - c->beg;
        if (take > n + 2 - got)
            take = n + 2 - got;
        for (size_t i = 0; i < take; i++, got++)
            if (got < n)
                out[got] = (unsigned char)c->buf[c->beg + i];
        c->beg += take;
    }
}

static void expect(conn_t *c, const char *prefix)
{
    char line[LINE_MAX_];
    read_line(c, line, sizeof line);
    if (strncmp(line, prefix, strlen(prefix)) != 0) {
        fprintf(stderr, "bstalk_bench: expected %s, got '%s'\n", prefix, line);
        exit(2);
    }
}

/* Sends "put" for body. */
static void send_put(conn_t *c, const unsigned char *body, size_t len)
{
    char head[64];
    int h = snprintf(head, sizeof head, "put 1024 0 60 %zu\r\n", len);
    struct iovec v[3] = {{head, (size_t)h}, {(void *)body, len}, {"\r\n", 2}};
    send_all(c, v, 3);
}

/* Reads a RESERVED reply: returns the body length, the id in *id, the body in *body (grown
   as needed). */
static size_t read_reserved(conn_t *c, unsigned long long *id, unsigned char **body, size_t *cap)
{
    char line[LINE_MAX_];
    read_line(c, line, sizeof line);
    size_t len;
    if (sscanf(line, "RESERVED %llu %zu", id, &len) != 2) {
        fprintf(stderr, "bstalk_bench: expected RESERVED, got '%s'\n", line);
        exit(2);
    }
    if (len > *cap) {
        *body = realloc(*body, len);
        *cap = len;
    }
    read_body(c, *body, len);
    return len;
}

/* ------------------------------------------------------------------ payloads (as zfleet bench) */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t gen_fill(size_t len, uint64_t nonce, uint64_t idx, unsigned char *buf)
{
    char head[32];
    int h = snprintf(head, sizeof head, "zfb %llu ", (unsigned long long)idx);
    size_t n = (size_t)h < len ? (size_t)h : len;
    memcpy(buf, head, n);
    uint64_t s = nonce ^ (idx * 0xd1342543de82ef95ull);
    size_t i = n;
    for (; i + 8 <= len; i += 8) {
        uint64_t v = splitmix64(&s);
        memcpy(buf + i, &v, 8);
    }
    if (i < len) {
        uint64_t v = splitmix64(&s);
        memcpy(buf + i, &v, len - i);
    }
    return len;
}

/* ------------------------------------------------------------------ worker process */

static void worker_main(void)
{
    conn_t *c = conn_open();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "use %s\r\nwatch %s\r\nignore default\r\nreserve\r\n", res_tube,
             jobs_tube);
    send_str(c, cmd);
    expect(c, "USING");
    expect(c, "WATCHING");
    expect(c, "WATCHING");
    unsigned char *body = NULL;
    size_t cap = 0;
    for (;;) {
        unsigned long long id;
        size_t len = read_reserved(c, &id, &body, &cap);
        /* echo: the result is the job's body; then delete the job and take the next */
        char head[64], tail[96];
        int h = snprintf(head, sizeof head, "put 1024 0 60 %zu\r\n", len);
        int t = snprintf(tail, sizeof tail, "\r\ndelete %llu\r\nreserve\r\n", id);
        struct iovec v[3] = {{head, (size_t)h}, {body, len}, {tail, (size_t)t}};
        send_all(c, v, 3);
        expect(c, "INSERTED");
        expect(c, "DELETED");
    }
}

/* ------------------------------------------------------------------ client */

typedef struct {
    uint64_t n, window, len, nonce;
    pthread_mutex_t mu;
    pthread_cond_t room;
    uint64_t ended;
    uint8_t *seen;
    uint64_t mismatched, duplicates, unknown;
    int64_t last_us;
} run_t;

/* Checks one result body; returns 1 when it ended a job. */
static int check(run_t *r, const unsigned char *body, size_t len, unsigned char *expect_buf)
{
    unsigned long long idx;
    if (len < 5 || sscanf((const char *)body, "zfb %llu ", &idx) != 1 || idx >= r->n) {
        r->unknown++;
        return 0;
    }
    if (r->seen[idx]) {
        r->duplicates++;
        return 0;
    }
    r->seen[idx] = 1;
    gen_fill(r->len, r->nonce, idx, expect_buf);
    if (len != r->len || memcmp(body, expect_buf, len) != 0)
        r->mismatched++;
    return 1;
}

static void *collector(void *arg)
{
    run_t *r = arg;
    conn_t *c = conn_open();
    char cmd[160];
    snprintf(cmd, sizeof cmd, "watch %s\r\nignore default\r\nreserve\r\n", res_tube);
    send_str(c, cmd);
    expect(c, "WATCHING");
    expect(c, "WATCHING");
    unsigned char *body = NULL, *exp = malloc(r->len + 1);
    size_t cap = 0;
    for (uint64_t got = 0; got < r->n;) {
        unsigned long long id;
        size_t len = read_reserved(c, &id, &body, &cap);
        char del[64];
        /* delete this result and ask for the next in one write */
        int d =
            snprintf(del, sizeof del, "delete %llu\r\n%s", id, got + 1 < r->n ? "reserve\r\n" : "");
        struct iovec v = {del, (size_t)d};
        send_all(c, &v, 1);
        int ended = check(r, body, len, exp);
        expect(c, "DELETED");
        if (ended) {
            got++;
            pthread_mutex_lock(&r->mu);
            r->ended++;
            r->last_us = now_us();
            pthread_cond_signal(&r->room);
            pthread_mutex_unlock(&r->mu);
        }
    }
    free(body);
    free(exp);
    return NULL;
}

static void usage(void)
{
    fputs("usage: bstalk_bench throughput|latency [--port P] [--jobs N] [--payload B]\n"
          "                    [--inflight W] [--workers K] [--warmup K] [--json]\n",
          stderr);
    exit(2);
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
    int o;
    uint64_t port_v = (uint64_t)port;
    int bad = 0;
    /* --payload: a body must have room for its "zfb INDEX " tag, which the checks read */
    while (!bad && (o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'P': bad = zf_parse_opt(PROG, "port", optarg, 1, 65535, &port_v); break;
        case 'n': bad = zf_parse_opt(PROG, "jobs", optarg, 1, 1000000000, &jobs); break;
        case 'p': bad = zf_parse_opt(PROG, "payload", optarg, 24, 1ull << 30, &len); break;
        case 'i': bad = zf_parse_opt(PROG, "inflight", optarg, 1, 10000000, &window); break;
        case 'w': bad = zf_parse_opt(PROG, "workers", optarg, 1, 64, &nworkers); break;
        case 'W': bad = zf_parse_opt(PROG, "warmup", optarg, 0, 10000000, &warm); break;
        case 'j': json = 1; break;
        default: bad = -1;
        }
    }
    if (bad || optind + 1 != argc)
        usage();
    port = (int)port_v;
    const char *wl = argv[optind];
    int latency = !strcmp(wl, "latency");
    if (!latency && strcmp(wl, "throughput"))
        usage();
    if (!jobs)
        jobs = latency ? 2000 : 20000;
    snprintf(jobs_tube, sizeof jobs_tube, "zfb-jobs-%d", (int)getpid());
    snprintf(res_tube, sizeof res_tube, "zfb-res-%d", (int)getpid());

    pid_t wpid[64];
    for (uint64_t i = 0; i < nworkers; i++) {
        wpid[i] = fork();
        if (wpid[i] < 0)
            die("fork");
        if (wpid[i] == 0) {
            worker_main();
            _exit(0);
        }
    }

    run_t r = {.n = latency ? warm + jobs : jobs, .window = latency ? 1 : window, .len = len};
    r.nonce = (uint64_t)now_us() * 0x9e3779b97f4a7c15ull;
    r.seen = calloc(r.n, 1);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.room, NULL);
    unsigned char *buf = malloc(len);
    int64_t *lat = latency ? malloc(jobs * sizeof *lat) : NULL;
    conn_t *pc = conn_open();
    char cmd[96];
    snprintf(cmd, sizeof cmd, "use %s\r\n", jobs_tube);
    send_str(pc, cmd);
    expect(pc, "USING");

    int64_t start = 0, end;
    if (!latency) {
        pthread_t th;
        pthread_create(&th, NULL, collector, &r);
        start = now_us();
        for (uint64_t sent = 0; sent < r.n;) {
            /* put as many as the window allows, pipelined, then read their INSERTED */
            pthread_mutex_lock(&r.mu);
            while (sent - r.ended >= r.window)
                pthread_cond_wait(&r.room, &r.mu);
            uint64_t room = r.window - (sent - r.ended);
            pthread_mutex_unlock(&r.mu);
            if (room > r.n - sent)
                room = r.n - sent;
            if (room > 64)
                room = 64;
            for (uint64_t k = 0; k < room; k++) {
                gen_fill(len, r.nonce, sent + k, buf);
                send_put(pc, buf, len);
            }
            for (uint64_t k = 0; k < room; k++)
                expect(pc, "INSERTED");
            sent += room;
        }
        pthread_join(th, NULL);
        end = r.last_us;
    } else {
        conn_t *rc = conn_open();
        snprintf(cmd, sizeof cmd, "watch %s\r\nignore default\r\n", res_tube);
        send_str(rc, cmd);
        expect(rc, "WATCHING");
        expect(rc, "WATCHING");
        unsigned char *body = NULL, *exp = malloc(len);
        size_t cap = 0;
        for (uint64_t i = 0; i < r.n; i++) {
            gen_fill(len, r.nonce, i, buf);
            int64_t t0 = now_us();
            send_put(pc, buf, len);
            send_str(rc, "reserve\r\n");
            expect(pc, "INSERTED");
            unsigned long long id;
            size_t blen = read_reserved(rc, &id, &body, &cap);
            int64_t t1 = now_us();
            if (i == warm)
                start = t0;
            if (i >= warm)
                lat[i - warm] = t1 - t0;
            check(&r, body, blen, exp);
            snprintf(cmd, sizeof cmd, "delete %llu\r\n", id);
            send_str(rc, cmd);
            expect(rc, "DELETED");
        }
        end = now_us();
    }
    for (uint64_t i = 0; i < nworkers; i++)
        kill(wpid[i], SIGTERM);
    for (uint64_t i = 0; i < nworkers; i++)
        waitpid(wpid[i], NULL, 0);

    uint64_t missing = 0;
    for (uint64_t i = 0; i < r.n; i++)
        missing += !r.seen[i];
    uint64_t errors = r.mismatched + r.duplicates + r.unknown + missing;
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
        printf("{\"peer\":\"beanstalkd\",\"workload\":\"%s\",\"jobs\":%llu,\"payload_bytes\":%llu,"
               "\"inflight\":%llu,\"workers\":%llu,%s,\"errors\":%llu,\"mismatched\":%llu,"
               "\"duplicates\":%llu,\"missing\":%llu}\n",
               wl, (unsigned long long)jobs, (unsigned long long)len, (unsigned long long)r.window,
               (unsigned long long)nworkers, figures, (unsigned long long)errors,
               (unsigned long long)r.mismatched, (unsigned long long)r.duplicates,
               (unsigned long long)missing);
    else
        printf("beanstalkd %s: %llu jobs, %llu-byte payload, %llu workers: %s, errors %llu\n", wl,
               (unsigned long long)jobs, (unsigned long long)len, (unsigned long long)nworkers,
               figures, (unsigned long long)errors);
    return errors ? 1 : 0;
}
