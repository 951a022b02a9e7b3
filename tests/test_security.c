/*  Security (CURVE): who gets service, what travels in clear, whose jobs a key can see, and
    what a reload (SIGHUP) changes. Real broker, worker and CLI processes over TCP on
    127.0.0.1; keys made by `zfleet keygen` (and pyzmq's zmq.auth) in each test's directory
    (harness.h: zt_curve_on). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(security, .fini = zt_kill_all);

#define HB 200
#define MARKER "ZFLEET-MARKER-1234567890"
#define NOBODY "nobody-serves-this" /* a function no worker has: its jobs stay queued */

/* ------------------------------------------------------------------ helpers */

/* A broker with CURVE on TCP: keys "broker", "admin", "client", "worker" and, before it
   starts (it reads the key directories then), the pairs NAME, ROLE of `keys` (ROLE "" for
   a key listed nowhere). */
static pid_t curve_broker(zt_env_t *env, const char *const *keys)
{
    zt_env_init(env);
    zt_curve_on(env);
    zt_env_tcp(env);
    for (; keys && keys[0]; keys += 2)
        zt_key_new(env, keys[0], *keys[1] ? keys[1] : NULL);
    return zt_broker(env, HB, NULL);
}

static long long security_counter(msgpack_object *doc, const char *name)
{
    msgpack_object *v = zt_mp_get(zt_mp_get(doc, "security"), name);
    return v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (long long)v->via.u64 : -1;
}

/* A counter of the stats' security section (as admin), or -1. */
static long long sec(const zt_env_t *env, const char *name)
{
    return zt_with_stats(env, security_counter, name);
}

/* Polls the security counter until it is at least want; its last value. */
static long long wait_sec(const zt_env_t *env, const char *name, long long want, int ms)
{
    long long v = -1;
    for (int64_t until = zt_now_ms() + ms; zt_now_ms() < until; zt_pause_ms(25))
        if ((v = sec(env, name)) >= want)
            break;
    return v;
}

static bool log_has(const zt_env_t *env, const char *file, const char *words)
{
    static char buf[1 << 20];
    char path[200];
    snprintf(path, sizeof path, "%s/%s", env->dir, file);
    zt_read_file(path, buf, sizeof buf);
    return strstr(buf, words) != NULL;
}

static bool wait_log(const zt_env_t *env, const char *file, const char *words, int ms)
{
    for (int64_t until = zt_now_ms() + ms; zt_now_ms() < until; zt_pause_ms(25))
        if (log_has(env, file, words))
            return true;
    return log_has(env, file, words);
}

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* The job's state as key `as` sees it through the C API: a ZFLEET_* state, or -code for a
   broker error code (-ZF_BROKER_UNKNOWN_JOB...). */
static int state_as(const zt_env_t *env, const char *as, uint64_t id)
{
    zf_client_t *c = zt_client_as(env, as);
    zf_event_t *e = zf_client_get(c, id);
    int st = e ? (int)e->status : -zf_client_brokercode(c);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
    return st;
}

/* Submits fn(payload) as key `as`, with a run timeout and one attempt when run_timeout_ms
   is not 0 (a job that then times out is a dead letter); returns the id. */
static uint64_t submit_as(const zt_env_t *env, const char *as, const char *fn, const char *p,
                          int run_timeout_ms)
{
    zf_client_t *c = zt_client_as(env, as);
    zf_submit_opts_t o = {.timeout_ms = run_timeout_ms, .max_attempts = run_timeout_ms ? 1 : 0};
    uint64_t id = 0;
    cr_assert_eq(zf_client_submit(c, fn, p, strlen(p), &o, &id), 0, "submit as %s: %s",
                 as ? as : "(no key)", zf_client_error(c));
    zf_client_destroy(&c);
    return id;
}

/* The ids in a DEAD document (as key `as`): how many, and whether `id` is among them. */
static int dead_as(const zt_env_t *env, const char *as, uint64_t id, bool *has)
{
    zf_client_t *c = zt_client_as(env, as);
    zf_event_t *e = zf_client_dead(c, false);
    cr_assert_not_null(e, "dead as %s: %s", as, zf_client_error(c));
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&u, e->output, e->output_len, &off), MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(u.data.type, MSGPACK_OBJECT_ARRAY);
    int n = (int)u.data.via.array.size;
    *has = false;
    for (int i = 0; i < n; i++) {
        msgpack_object *v = zt_mp_get(&u.data.via.array.ptr[i], "id");
        *has |= v && v->via.u64 == id;
    }
    msgpack_unpacked_destroy(&u);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
    return n;
}

static const char *idstr(uint64_t id, char *buf)
{
    snprintf(buf, 24, "%llu", (unsigned long long)id);
    return buf;
}

/* Waits for a job's result as key `as`; returns its state (or -1 without one). */
static int result_as(const zt_env_t *env, const char *as, uint64_t id, int ms)
{
    zf_client_t *c = zt_client_as(env, as);
    zf_event_t *e = zf_client_wait(c, id, ms);
    int st = e ? (int)e->status : -1;
    zf_event_destroy(&e);
    zf_client_destroy(&c);
    return st;
}

static int port_of(const char *ep);

/* ------------------------------------------------------------------ no service */

/* No key, a key nobody listed, a worker's key: the CLI exits 4 with one line that says
   why, the C client gets ZF_CE_DENIED at once (not after its request timeout), and the
   broker accepted nothing. */
Test(security, client_without_keys_unknown_key_or_worker_key_gets_no_service, .timeout = 60)
{
    zt_env_t env;
    curve_broker(&env, ZT_ARGS("stranger", ""));
    const char *who[] = {NULL, "stranger", "worker"};
    const char *words[] = {"CURVE is on at one end only", "refused this key", "refused this key"};
    for (int i = 0; i < 3; i++) {
        const char *name = who[i] ? who[i] : "(no key)";
        char out[512], err[1024];
        int rc =
            zt_cli_as(&env, who[i], out, sizeof out, err, sizeof err, "submit", "echo", "x", NULL);
        cr_assert_eq(rc, 4, "CLI %s: exit %d (%s)", name, rc, err);
        cr_assert_eq(lines(err), 1, "CLI %s: not one line: %s", name, err);
        cr_assert(strstr(err, "no service from the broker") && strstr(err, words[i]), "CLI %s: %s",
                  name, err);

        zf_client_t *c = zt_client_as(&env, who[i]);
        zf_client_set_request_timeout(c, 10000);
        uint64_t id = 0;
        int64_t t0 = zt_now_ms();
        int r = zf_client_submit(c, "echo", "x", 1, NULL, &id);
        int64_t took = zt_now_ms() - t0;
        cr_assert_eq(r, -1, "C client %s was served", name);
        cr_assert_eq(zf_client_errcode(c), ZF_CE_DENIED, "C client %s: %d %s", name,
                     zf_client_errcode(c), zf_client_error(c));
        cr_assert(strstr(zf_client_error(c), words[i]), "C client %s: %s", name,
                  zf_client_error(c));
        cr_assert_lt(took, 3000, "C client %s: denied after %lld ms", name, (long long)took);
        /* the other calls too */
        cr_assert_null(zf_client_stats(c));
        cr_assert_eq(zf_client_errcode(c), ZF_CE_DENIED);
        zf_client_destroy(&c);
    }
    cr_assert_eq(zt_broker_counter(&env, "accepted"), 0);
    cr_assert_eq(zt_broker_counter(&env, "queued"), 0);
    /* the stranger and the worker key, from the CLI and the C client, reached ZAP */
    cr_assert_geq(sec(&env, "denied_clients"), 4);
    cr_assert(log_has(&env, "broker.log", "is a worker key, not a client key"));
    cr_assert(log_has(&env, "broker.log", "is not in --client-keys or --admin-keys"));
    /* and the listed client key is served (the refusals above were about the keys) */
    char out[512], err[512];
    cr_assert_eq(zt_cli_as(&env, "client", out, sizeof out, err, sizeof err, "submit", "echo", "x",
                           NULL),
                 0, "%s", err);
    cr_assert_eq(zt_broker_counter(&env, "accepted"), 1);
}

/* Workers with a client's key or an unlisted key never register nor receive a job; one
   with a worker key then runs it. */
Test(security, worker_with_client_key_or_unknown_key_never_gets_a_job, .timeout = 60)
{
    zt_env_t env;
    curve_broker(&env, ZT_ARGS("stranger", ""));
    const char *bk = zt_key_path(&env, "broker", false);
    char ck[256], sk[256];
    snprintf(ck, sizeof ck, "%s", zt_key_path(&env, "client", true));
    snprintf(sk, sizeof sk, "%s", zt_key_path(&env, "stranger", true));
    zt_worker(&env, HB, "--key", ck, "--broker-key", bk, "--name", "with-client-key", NULL);
    zt_worker(&env, HB, "--key", sk, "--broker-key", bk, "--name", "with-unknown-key", NULL);
    /* and one without keys: the harness gives keys to workers of env->worker_ep, so this
       one names the same endpoint as localhost */
    char plain_ep[64], wlog[200];
    snprintf(plain_ep, sizeof plain_ep, "tcp://localhost:%d", port_of(env.worker_ep));
    snprintf(wlog, sizeof wlog, "%s/workers.log", env.dir);
    zt_spawn("worker/zfleet-worker", wlog,
             ZT_ARGS("--broker", plain_ep, "--heartbeat", "200", "--name", "without-keys"));
    uint64_t id = submit_as(&env, "client", "echo", "payload", 0);
    cr_assert_geq(wait_sec(&env, "denied_workers", 2, 5000), 2);
    zt_pause_ms(1500);
    cr_assert_eq(state_as(&env, "client", id), ZFLEET_QUEUED, "the job left the queue");
    cr_assert_eq(zt_count_workers(&env), 0);
    cr_assert_eq(zt_broker_counter(&env, "dispatched"), 0);
    cr_assert(log_has(&env, "broker.log", "is a client key, not a worker key"));
    cr_assert(log_has(&env, "broker.log", "is not in --worker-keys"));
    cr_assert(wait_log(&env, "workers.log", "CURVE is on at one end only", 3000),
              "the worker without keys does not say why it gets nothing");
    /* a worker key gets it */
    zt_worker(&env, HB, NULL);
    cr_assert_eq(result_as(&env, "client", id, 10000), ZFLEET_SUCCEEDED);
}

/* ------------------------------------------------------------------ capture */

/* A TCP relay: accepts on its own port, connects each connection to the target port and
   copies both ways, keeping every byte that passes. */
typedef struct {
    int port, target, lfd;
    atomic_bool stop;
    pthread_t th;
    pthread_mutex_t mu;
    char *bytes;
    size_t n, cap;
} relay_t;

static void relay_keep(relay_t *r, const char *p, size_t n)
{
    pthread_mutex_lock(&r->mu);
    if (r->n + n > r->cap) {
        r->cap = (r->n + n) * 2;
        r->bytes = realloc(r->bytes, r->cap);
    }
    memcpy(r->bytes + r->n, p, n);
    r->n += n;
    pthread_mutex_unlock(&r->mu);
}

static void *relay_main(void *arg)
{
    relay_t *r = arg;
    enum { PAIRS = 8 };
    int a[PAIRS], b[PAIRS], np = 0;
    while (!atomic_load(&r->stop)) {
        struct pollfd p[1 + 2 * PAIRS];
        p[0] = (struct pollfd){r->lfd, POLLIN, 0};
        for (int i = 0; i < np; i++) {
            p[1 + 2 * i] = (struct pollfd){a[i], POLLIN, 0};
            p[2 + 2 * i] = (struct pollfd){b[i], POLLIN, 0};
        }
        if (poll(p, (nfds_t)(1 + 2 * np), 50) <= 0)
            continue;
        if ((p[0].revents & POLLIN) && np < PAIRS) {
            int in = accept(r->lfd, NULL, NULL);
            int out = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in to = {.sin_family = AF_INET,
                                     .sin_port = htons((uint16_t)r->target),
                                     .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            if (in >= 0 && out >= 0 && connect(out, (struct sockaddr *)&to, sizeof to) == 0) {
                a[np] = in;
                b[np++] = out;
            } else {
                if (in >= 0)
                    close(in);
                if (out >= 0)
                    close(out);
            }
            continue; /* the pollfd array changed */
        }
        for (int i = 0; i < np; i++)
            for (int side = 0; side < 2; side++) {
                if (!(p[1 + 2 * i + side].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                char buf[65536];
                int from = side ? b[i] : a[i], to = side ? a[i] : b[i];
                ssize_t got = read(from, buf, sizeof buf);
                if (got <= 0) { /* one side closed: close the pair */
                    close(a[i]);
                    close(b[i]);
                    a[i] = a[np - 1], b[i] = b[np - 1];
                    np--;
                    i = np; /* the array changed: poll again */
                    break;
                }
                relay_keep(r, buf, (size_t)got);
                for (ssize_t off = 0, w; off < got; off += w)
                    if ((w = write(to, buf + off, (size_t)(got - off))) <= 0)
                        break;
            }
    }
    for (int i = 0; i < np; i++)
        close(a[i]), close(b[i]);
    return NULL;
}

static void relay_start(relay_t *r, int target)
{
    memset(r, 0, sizeof *r);
    r->target = target;
    pthread_mutex_init(&r->mu, NULL);
    r->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert(bind(r->lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(r->lfd, 8) == 0 &&
              getsockname(r->lfd, (struct sockaddr *)&a, &len) == 0);
    r->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&r->th, NULL, relay_main, r), 0);
}

static void relay_stop(relay_t *r)
{
    atomic_store(&r->stop, true);
    pthread_join(r->th, NULL);
    close(r->lfd);
}

static int port_of(const char *ep)
{
    const char *colon = strrchr(ep, ':');
    return colon ? atoi(colon + 1) : -1;
}

/* Submits a job with MARKER in its payload through a relay and waits for its result (the
   echo brings the marker back); returns the relay's bytes (the caller frees them). */
static char *capture_job(const zt_env_t *env, bool curve, size_t *n)
{
    relay_t r;
    relay_start(&r, port_of(env->client_ep));
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", r.port);
    zf_client_t *c = zf_client_new(ep);
    cr_assert_not_null(c);
    if (curve)
        cr_assert_eq(zf_client_set_keys(c, zt_key_path(env, "client", true),
                                        zt_key_path(env, "broker", false)),
                     0);
    zf_client_set_request_timeout(c, 5000);
    const char *payload = "before " MARKER " after";
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "echo", payload, strlen(payload), NULL, &id), 0, "%s",
                 zf_client_error(c));
    zf_event_t *e = zf_client_wait(c, id, 10000);
    cr_assert_not_null(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
    cr_assert(e->output_len == strlen(payload) && !memcmp(e->output, payload, e->output_len));
    zf_event_destroy(&e);
    zf_client_destroy(&c);
    relay_stop(&r);
    *n = r.n;
    pthread_mutex_destroy(&r.mu);
    return r.bytes;
}

/* The bytes between a client and the broker hold the payload's marker with CURVE off (so
   the check can fail) and none of it with CURVE on. */
Test(security, captured_tcp_bytes_hold_the_payload_only_without_curve, .timeout = 60)
{
    zt_env_t env;
    curve_broker(&env, NULL);
    zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    size_t n;
    char *bytes = capture_job(&env, true, &n);
    cr_assert_gt(n, 300, "the relay saw only %zu bytes", n);
    cr_assert_null(memmem(bytes, n, MARKER, strlen(MARKER)), "the marker crossed in clear");
    cr_assert_null(memmem(bytes, n, "echo", 4), "the function name crossed in clear");
    free(bytes);

    zt_env_t open;
    zt_env_init(&open);
    zt_env_tcp(&open);
    zt_broker(&open, HB, NULL);
    zt_worker(&open, HB, NULL);
    cr_assert(zt_wait_workers(&open, 1, 10000));
    bytes = capture_job(&open, false, &n);
    cr_assert_not_null(memmem(bytes, n, MARKER, strlen(MARKER)),
                       "without CURVE the marker should be in the %zu bytes captured", n);
    free(bytes);
}

/* ------------------------------------------------------------------ owners */

/* B cannot see, wait for, cancel or retry A's job (`unknown job`, as if there were none),
   nor its dead letters; stats and workers are admin-only; the admin can do all of it; two
   connections with the same key are the same owner. */
Test(security, jobs_are_visible_only_to_their_owner_and_admins, .timeout = 120)
{
    zt_env_t env;
    curve_broker(&env, ZT_ARGS("bob", "clients"));
    zt_worker(&env, HB, NULL);
    zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 2, 10000));
    char out[1024], err[1024], idbuf[24];

    /* A's job, queued (no worker serves its function) */
    cr_assert_eq(zt_cli_as(&env, "client", out, sizeof out, err, sizeof err, "submit", NOBODY,
                           "secret", NULL),
                 0, "%s", err);
    uint64_t id = strtoull(out, NULL, 10);
    cr_assert_gt(id, 0);
    const char *ids = idstr(id, idbuf);
    /* bob's answers for A's job are those for an id that never existed, word for word */
    char fakebuf[24];
    const char *fake = idstr(id ^ 1, fakebuf);
    const char *cmds[] = {"wait", "get", "status", "cancel", "retry"};
    for (int i = 0; i < 5; i++) {
        char err2[1024];
        int rc = zt_cli_as(&env, "bob", out, sizeof out, err, sizeof err, cmds[i], ids,
                           "--timeout=2000", NULL);
        cr_assert_eq(rc, 5, "bob's %s: exit %d (%s)", cmds[i], rc, err);
        cr_assert(strstr(err, i < 4 ? "unknown job" : "no such job"), "bob's %s: %s", cmds[i], err);
        cr_assert_eq(lines(err), 1, "bob's %s: %s", cmds[i], err);
        int rc2 = zt_cli_as(&env, "bob", out, sizeof out, err2, sizeof err2, cmds[i], fake,
                            "--timeout=2000", NULL);
        for (char *at; (at = strstr(err2, fake));)
            memcpy(at, ids, strlen(ids)); /* the same length: only the last digit differs */
        cr_assert_eq(rc2, rc);
        cr_assert_str_eq(err, err2, "bob's %s tells A's job from none", cmds[i]);
    }
    zf_client_t *b = zt_client_as(&env, "bob");
    cr_assert_null(zf_client_get(b, id));
    cr_assert_eq(zf_client_brokercode(b), ZF_BROKER_UNKNOWN_JOB);
    cr_assert_null(zf_client_wait(b, id, 2000));
    cr_assert_eq(zf_client_brokercode(b), ZF_BROKER_UNKNOWN_JOB, "%s", zf_client_error(b));
    cr_assert_eq(zf_client_cancel(b, id), -1);
    cr_assert_eq(zf_client_brokercode(b), ZF_BROKER_UNKNOWN_JOB);
    cr_assert_eq(zf_client_retry(b, id), -1);
    cr_assert_eq(zf_client_brokercode(b), ZF_BROKER_UNKNOWN_JOB);
    /* stats and workers: admin only */
    cr_assert_null(zf_client_stats(b));
    cr_assert_eq(zf_client_brokercode(b), ZF_BROKER_DENIED);
    cr_assert_eq(zf_client_errcode(b), ZF_CE_DENIED);
    const char *admin_only[] = {"stats", "workers"};
    for (int i = 0; i < 2; i++) {
        int rc = zt_cli_as(&env, "bob", out, sizeof out, err, sizeof err, admin_only[i], NULL);
        cr_assert_eq(rc, 4, "bob's %s: exit %d (%s)", admin_only[i], rc, err);
        cr_assert(strstr(err, "admin"), "bob's %s: %s", admin_only[i], err);
        cr_assert_eq(lines(err), 1);
        rc = zt_cli_as(&env, "client", out, sizeof out, err, sizeof err, admin_only[i], NULL);
        cr_assert_eq(rc, 4, "client's %s: exit %d (%s)", admin_only[i], rc, err);
        cr_assert_eq(zt_cli_as(&env, "admin", out, sizeof out, err, sizeof err, admin_only[i],
                               NULL),
                     0, "admin's %s: %s", admin_only[i], err);
    }
    /* bob's attempts changed nothing: A and the admin still see it queued */
    cr_assert_eq(state_as(&env, "client", id), ZFLEET_QUEUED);
    cr_assert_eq(state_as(&env, "admin", id), ZFLEET_QUEUED);
    cr_assert_eq(zt_cli_as(&env, "client", out, sizeof out, err, sizeof err, "get", ids, NULL), 0,
                 "%s", err);
    /* the admin cancels anyone's job */
    cr_assert_eq(zt_cli_as(&env, "admin", out, sizeof out, err, sizeof err, "cancel", ids, NULL), 0,
                 "%s", err);
    cr_assert_eq(state_as(&env, "client", id), ZFLEET_CANCELLED);

    /* dead letters: one of A's and one of bob's (timed out on their only attempt) */
    uint64_t da = submit_as(&env, "client", "spin", "2000", 200);
    uint64_t db = submit_as(&env, "bob", "spin", "2000", 200);
    cr_assert_eq(result_as(&env, "client", da, 15000), ZFLEET_TIMED_OUT);
    cr_assert_eq(result_as(&env, "bob", db, 15000), ZFLEET_TIMED_OUT);
    bool has;
    int na = dead_as(&env, "client", da, &has);
    cr_assert(na == 1 && has, "A sees %d dead letter(s), its own %s", na, has ? "too" : "not");
    na = dead_as(&env, "bob", db, &has);
    cr_assert(na == 1 && has, "bob sees %d dead letter(s), his own %s", na, has ? "too" : "not");
    cr_assert_eq(dead_as(&env, "admin", da, &has), 2);
    cr_assert(has);
    /* bob cannot retry A's dead letter; the admin can */
    cr_assert_eq(zt_cli_as(&env, "bob", out, sizeof out, err, sizeof err, "retry", idstr(da, idbuf),
                           NULL),
                 5, "%s", err);
    cr_assert(strstr(err, "no such job"), "%s", err);
    /* A purges its own only */
    cr_assert_eq(zt_cli_as(&env, "client", out, sizeof out, err, sizeof err, "dead", "--purge",
                           NULL),
                 0, "%s", err);
    cr_assert(strstr(out, "purged 1 "), "%s", out);
    cr_assert_eq(dead_as(&env, "bob", db, &has), 1);
    cr_assert(has, "A's purge took bob's dead letter");
    cr_assert_eq(dead_as(&env, "admin", db, &has), 1);
    cr_assert(has);

    /* (the workers left at their run timeouts: one for what follows) */
    zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    /* one key, two connections: the same owner */
    zf_client_t *c1 = zt_client_as(&env, "client"), *c2 = zt_client_as(&env, "client");
    uint64_t shared;
    cr_assert_eq(zf_client_submit(c1, "echo", "shared", 6, NULL, &shared), 0);
    zf_event_t *e = zf_client_wait(c2, shared, 10000);
    cr_assert_not_null(e, "the other process of the same key: %s", zf_client_error(c2));
    cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
    zf_event_destroy(&e);
    zf_client_destroy(&c1);
    zf_client_destroy(&c2);
    cr_assert_eq(zt_cli_as(&env, "client", out, sizeof out, err, sizeof err, "submit", "echo",
                           "two-clis", NULL),
                 0, "%s", err);
    ids = idstr(strtoull(out, NULL, 10), idbuf);
    cr_assert_eq(zt_cli_as(&env, "client", out, sizeof out, err, sizeof err, "wait", ids,
                           "--timeout=10000", NULL),
                 0, "%s", err);
    cr_assert(strstr(out, "two-clis"), "%s", out);
    cr_assert_eq(zt_cli_as(&env, "bob", out, sizeof out, err, sizeof err, "wait", ids,
                           "--timeout=2000", NULL),
                 5, "%s", err);
    /* the admin retries bob's dead letter */
    cr_assert_eq(zt_cli_as(&env, "admin", out, sizeof out, err, sizeof err, "retry",
                           idstr(db, idbuf), NULL),
                 0, "admin retry: %s", err);
    cr_assert(strstr(out, "requeued"), "%s", out);
    cr_assert_eq(dead_as(&env, "admin", db, &has), 0);
    cr_assert_neq(state_as(&env, "bob", db), -ZF_BROKER_UNKNOWN_JOB);
    zf_client_destroy(&b);
}

/* ------------------------------------------------------------------ reload */

/* Removing a worker's key and SIGHUP: the worker is removed and gets no further job, the
   log says so; the key back and SIGHUP: it registers again and runs the job. */
Test(security, sighup_revokes_a_worker_key_and_restores_it, .timeout = 90)
{
    zt_env_t env;
    pid_t broker = curve_broker(&env, ZT_ARGS("w1", "workers"));
    char wk[256];
    snprintf(wk, sizeof wk, "%s", zt_key_path(&env, "w1", true));
    zt_worker(&env, HB, "--key", wk, "--broker-key", zt_key_path(&env, "broker", false), "--name",
              "w1", NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    cr_assert_eq(result_as(&env, "client", submit_as(&env, "client", "echo", "a", 0), 10000),
                 ZFLEET_SUCCEEDED);

    zt_key_unlist(&env, "w1", "workers");
    kill(broker, SIGHUP);
    cr_assert(zt_wait_workers(&env, 0, 5000), "the revoked worker is still listed");
    cr_assert(wait_log(&env, "broker.log", "1 key(s) lost a role", 2000));
    cr_assert(log_has(&env, "broker.log", "its key was revoked"));
    cr_assert_eq(sec(&env, "reloads"), 1);
    cr_assert_eq(sec(&env, "worker_keys"), 1); /* "worker" only */
    uint64_t id = submit_as(&env, "client", "echo", "b", 0);
    zt_pause_ms(1500);
    cr_assert_eq(state_as(&env, "client", id), ZFLEET_QUEUED, "a revoked worker ran a job");
    cr_assert_eq(zt_count_workers(&env), 0);

    zt_key_list(&env, "w1", "workers");
    kill(broker, SIGHUP);
    cr_assert_eq(wait_sec(&env, "reloads", 2, 3000), 2);
    cr_assert_eq(result_as(&env, "client", id, 30000), ZFLEET_SUCCEEDED,
                 "the worker did not come back (see %s/workers.log)", env.dir);
    cr_assert_eq(zt_count_workers(&env), 1);
}

/* Removing a client's key and SIGHUP: its next request on the same connection is refused
   (ZF_CE_DENIED), a new CLI run with it exits 4; another client's connection keeps working. */
Test(security, sighup_revokes_a_client_key_on_its_open_connection, .timeout = 60)
{
    zt_env_t env;
    pid_t broker = curve_broker(&env, ZT_ARGS("c1", "clients", "c2", "clients"));
    zf_client_t *c1 = zt_client_as(&env, "c1"), *c2 = zt_client_as(&env, "c2");
    uint64_t id1, id2;
    cr_assert_eq(zf_client_submit(c1, NOBODY, "1", 1, NULL, &id1), 0, "%s", zf_client_error(c1));
    cr_assert_eq(zf_client_submit(c2, NOBODY, "2", 1, NULL, &id2), 0, "%s", zf_client_error(c2));
    zt_key_unlist(&env, "c1", "clients");
    kill(broker, SIGHUP);
    cr_assert_eq(wait_sec(&env, "reloads", 1, 3000), 1);
    uint64_t id;
    int64_t t0 = zt_now_ms();
    cr_assert_eq(zf_client_submit(c1, NOBODY, "3", 1, NULL, &id), -1, "a revoked key submitted");
    cr_assert_eq(zf_client_errcode(c1), ZF_CE_DENIED, "%s", zf_client_error(c1));
    cr_assert_lt(zt_now_ms() - t0, 3000);
    cr_assert_null(zf_client_get(c1, id1), "a revoked key read its job");
    cr_assert_eq(zf_client_errcode(c1), ZF_CE_DENIED);
    cr_assert_geq(sec(&env, "refused_messages"), 2);
    /* the other connection is undisturbed */
    cr_assert_eq(zf_client_submit(c2, NOBODY, "4", 1, NULL, &id), 0, "%s", zf_client_error(c2));
    zf_event_t *e = zf_client_get(c2, id2);
    cr_assert_not_null(e, "%s", zf_client_error(c2));
    cr_assert_eq(e->status, ZFLEET_QUEUED);
    zf_event_destroy(&e);
    char out[512], err[1024];
    cr_assert_eq(zt_cli_as(&env, "c1", out, sizeof out, err, sizeof err, "submit", NOBODY, "5",
                           NULL),
                 4, "%s", err);
    cr_assert(strstr(err, "refused this key"), "%s", err);
    cr_assert_eq(zt_broker_counter(&env, "accepted"), 3);
    zf_client_destroy(&c1);
    zf_client_destroy(&c2);
}

/* A .key file that is not a certificate: the broker does not start (and names it); on a
   reload it changes nothing (all or nothing) and is counted. */
Test(security, broken_key_file_stops_start_and_is_refused_on_reload, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_curve_on(&env);
    zt_env_tcp(&env);
    char broken[256], log[200];
    snprintf(broken, sizeof broken, "%s/broken.key", zt_key_dir(&env, "clients"));
    FILE *f = fopen(broken, "w");
    cr_assert(f);
    fputs("#   not a certificate\ncurve\n    public-key = \"too-short\"\n", f);
    fclose(f);
    snprintf(log, sizeof log, "%s/refused.log", env.dir);
    const char *args[] = {"--clients",
                          env.client_ep,
                          "--workers",
                          env.worker_ep,
                          "--no-journal",
                          "--curve-secret",
                          zt_key_path(&env, "broker", true),
                          "--client-keys",
                          zt_key_dir(&env, "clients"),
                          "--worker-keys",
                          zt_key_dir(&env, "workers"),
                          "--admin-keys",
                          zt_key_dir(&env, "admins"),
                          NULL};
    pid_t p = zt_spawn("broker/zfleet-broker", log, args);
    int st = zt_wait_exit(p, 10000);
    cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1,
              "the broker started with a broken key file (status %d)", st);
    cr_assert(log_has(&env, "refused.log", "broken.key"), "the log does not name the file");

    /* now it starts without it; the reload with it (and c1 removed meanwhile) changes nothing */
    cr_assert_eq(unlink(broken), 0);
    zt_key_new(&env, "c1", NULL);
    pid_t broker = zt_broker(&env, HB, NULL);
    zf_client_t *c = zt_client_as(&env, "client");
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, NOBODY, "1", 1, NULL, &id), 0, "%s", zf_client_error(c));
    f = fopen(broken, "w");
    cr_assert(f);
    fputs("garbage\n", f);
    fclose(f);
    zt_key_unlist(&env, "client", "clients");
    zt_key_list(&env, "c1", "clients");
    kill(broker, SIGHUP);
    cr_assert_eq(wait_sec(&env, "reload_failures", 1, 3000), 1);
    cr_assert(wait_log(&env, "broker.log", "keys not reloaded", 2000));
    cr_assert(log_has(&env, "broker.log", "broken.key"));
    cr_assert_eq(zf_client_submit(c, NOBODY, "2", 1, NULL, &id), 0, "the listed client lost it: %s",
                 zf_client_error(c));
    zf_client_destroy(&c);
    char out[512], err[1024];
    cr_assert_eq(zt_cli_as(&env, "client", out, sizeof out, err, sizeof err, "submit", NOBODY, "3",
                           NULL),
                 0, "%s", err);
    cr_assert_eq(zt_cli_as(&env, "c1", out, sizeof out, err, sizeof err, "submit", NOBODY, "4",
                           NULL),
                 4, "c1 got in through a failed reload: %s", err);
    cr_assert_eq(sec(&env, "client_keys"), 1);
    /* the file fixed: the next reload applies it all */
    cr_assert_eq(unlink(broken), 0);
    kill(broker, SIGHUP);
    cr_assert_eq(wait_sec(&env, "reloads", 2, 3000), 2);
    cr_assert_eq(sec(&env, "reload_failures"), 1);
    cr_assert_eq(zt_cli_as(&env, "c1", out, sizeof out, err, sizeof err, "submit", NOBODY, "5",
                           NULL),
                 0, "%s", err);
}

/* ------------------------------------------------------------------ other tools' keys */

static int sh(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool have_pyzmq(void)
{
    return sh("/usr/bin/python3 -c 'import zmq.auth' >/dev/null 2>&1") == 0;
}

/* Keys from pyzmq's zmq.auth.create_certificates work for the broker, a client and a
   worker; keys from zfleet keygen load in pyzmq with the same public key. */
Test(security, pyzmq_certificates_work_both_ways, .timeout = 60)
{
    if (!have_pyzmq())
        cr_skip_test("python3-zmq (zmq.auth) is not installed");
    zt_env_t env;
    zt_env_init(&env);
    char cmd[1024];
    cr_assert(mkdir(zt_key_dir(&env, NULL), 0700) == 0);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import zmq.auth; [zmq.auth.create_certificates('%s', n) for n "
             "in ('broker', 'pyclient', 'pyworker')]\"",
             zt_key_dir(&env, NULL));
    cr_assert_eq(sh(cmd), 0, "create_certificates failed");
    zt_curve_on(&env); /* keeps pyzmq's broker key */
    zt_env_tcp(&env);
    zt_key_list(&env, "pyclient", "clients");
    zt_key_list(&env, "pyworker", "workers");
    zt_broker(&env, HB, NULL);
    char wk[256];
    snprintf(wk, sizeof wk, "%s", zt_key_path(&env, "pyworker", true));
    zt_worker(&env, HB, "--key", wk, "--broker-key", zt_key_path(&env, "broker", false), "--name",
              "pyworker", NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000), "the pyzmq-keyed worker did not register");
    zf_client_t *c = zt_client_as(&env, "pyclient");
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "echo", "py", 2, NULL, &id), 0, "%s", zf_client_error(c));
    zf_event_t *e = zf_client_wait(c, id, 10000);
    cr_assert_not_null(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
    cr_assert_str_eq(e->worker, "pyworker");
    zf_event_destroy(&e);
    zf_client_destroy(&c);
    char out[512], err[1024];
    cr_assert_eq(zt_cli_as(&env, "pyclient", out, sizeof out, err, sizeof err, "submit", "echo",
                           "py-cli", "--wait", "--timeout=10000", NULL),
                 0, "%s", err);

    /* ours in pyzmq */
    const char *z85 = zt_key_new(&env, "ours", NULL);
    char expect[64];
    snprintf(expect, sizeof expect, "%s", z85);
    char outfile[200];
    snprintf(outfile, sizeof outfile, "%s/pyread.txt", env.dir);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import zmq.auth, sys\n"
             "p, s = zmq.auth.load_certificate('%s')\n"
             "q, t = zmq.auth.load_certificate('%s')\n"
             "assert s is not None and len(s) == 40 and t is None and p == q\n"
             "print(p.decode())\" > %s",
             zt_key_path(&env, "ours", true), zt_key_path(&env, "ours", false), outfile);
    cr_assert_eq(sh(cmd), 0, "pyzmq could not load zfleet keygen's files");
    char got[128];
    zt_read_file(outfile, got, sizeof got);
    got[strcspn(got, "\n")] = 0;
    cr_assert_str_eq(got, expect, "pyzmq reads another public key");
}

/* keygen writes the secret 0600 and never overwrites a key. */
Test(security, keygen_refuses_to_overwrite_and_keeps_the_secret_private, .timeout = 30)
{
    zt_env_t env;
    zt_env_init(&env);
    char prefix[200], out[512], err[512];
    snprintf(prefix, sizeof prefix, "%s/app", env.dir);
    cr_assert_eq(zt_cli_as(&env, NULL, out, sizeof out, err, sizeof err, "keygen", prefix, NULL), 0,
                 "%s", err);
    cr_assert(strstr(out, "public key: "), "%s", out);
    char pub[300], sec_path[300], before[512], after[512];
    snprintf(pub, sizeof pub, "%s.key", prefix);
    snprintf(sec_path, sizeof sec_path, "%s.key_secret", prefix);
    struct stat st;
    cr_assert_eq(stat(sec_path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "secret file mode %o", st.st_mode & 0777);
    cr_assert_eq(stat(pub, &st), 0);
    zt_read_file(sec_path, before, sizeof before);
    cr_assert_eq(zt_cli_as(&env, NULL, out, sizeof out, err, sizeof err, "keygen", prefix, NULL),
                 1);
    cr_assert_eq(lines(err), 1, "%s", err);
    zt_read_file(sec_path, after, sizeof after);
    cr_assert_str_eq(before, after, "keygen overwrote the secret key");
    /* nor when only the public half is there */
    cr_assert_eq(unlink(sec_path), 0);
    cr_assert_eq(zt_cli_as(&env, NULL, out, sizeof out, err, sizeof err, "keygen", prefix, NULL),
                 1);
}

/* ------------------------------------------------------------------ journal */

/* With --data, the owner of a queued job survives kill -9: after the restart only its
   owner (and the admin) see it. */
Test(security, journal_keeps_the_owner_across_kill, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_curve_on(&env);
    zt_env_tcp(&env);
    zt_key_new(&env, "bob", "clients");
    char data[200];
    snprintf(data, sizeof data, "%s/data", env.dir);
    pid_t b = zt_broker(&env, HB, "--data", data, NULL);
    uint64_t id = submit_as(&env, "client", NOBODY, "mine", 0);
    zt_kill(b, SIGKILL);
    zt_broker(&env, HB, "--data", data, NULL);
    cr_assert_eq(state_as(&env, "client", id), ZFLEET_QUEUED);
    cr_assert_eq(state_as(&env, "admin", id), ZFLEET_QUEUED);
    cr_assert_eq(state_as(&env, "bob", id), -ZF_BROKER_UNKNOWN_JOB, "bob sees A's job");
    char out[512], err[1024], idbuf[24];
    cr_assert_eq(zt_cli_as(&env, "bob", out, sizeof out, err, sizeof err, "cancel",
                           idstr(id, idbuf), NULL),
                 5, "%s", err);
    cr_assert(strstr(err, "unknown job"), "%s", err);
    cr_assert_eq(state_as(&env, "client", id), ZFLEET_QUEUED);
}

/* The per-client bounds hold per key with CURVE: a key's jobs over all its connections
   count, so opening more connections does not get a tenant more of the queue; another key
   keeps its own share, and a key's share comes back as its jobs end. */
Test(security, per_client_bound_holds_per_key_over_all_its_connections, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_curve_on(&env);
    zt_env_tcp(&env);
    zt_key_new(&env, "bob", "clients");
    zt_broker(&env, HB, "--max-queued-per-client", "3", NULL);
    uint64_t first = 0;
    for (int i = 0; i < 3; i++) { /* three connections, one job each */
        uint64_t id = submit_as(&env, "client", NOBODY, "q", 0);
        first = first ? first : id;
    }
    zf_client_t *c = zt_client_as(&env, "client"); /* a fourth connection of the same key */
    uint64_t id = 0;
    cr_assert_eq(zf_client_submit(c, NOBODY, "q", 1, NULL, &id), -1, "a 4th job was accepted");
    cr_assert_eq(zf_client_brokercode(c), ZF_BROKER_QUEUE_FULL, "%s", zf_client_error(c));
    cr_assert(strstr(zf_client_error(c), "for this key"), "%s", zf_client_error(c));
    submit_as(&env, "bob", NOBODY, "b", 0); /* another key: its own share */
    cr_assert_eq(zf_client_cancel(c, first), 0, "%s", zf_client_error(c));
    cr_assert_eq(zf_client_submit(c, NOBODY, "q", 1, NULL, &id), 0,
                 "the share did not come back: %s", zf_client_error(c));
    zf_client_destroy(&c);
}

/* ------------------------------------------------------------------ exposure */

/* A non-loopback TCP bind without CURVE says what is exposed; loopback says nothing. */
Test(security, open_non_loopback_bind_is_warned_about, .timeout = 30)
{
    zt_env_t env;
    zt_env_init(&env);
    char cep[64], wep[64], log[200];
    snprintf(cep, sizeof cep, "tcp://0.0.0.0:%d", zt_free_port());
    snprintf(wep, sizeof wep, "tcp://0.0.0.0:%d", zt_free_port());
    snprintf(log, sizeof log, "%s/open.log", env.dir);
    const char *args[] = {"--clients", cep, "--workers", wep, "--no-journal", NULL};
    pid_t p = zt_spawn("broker/zfleet-broker", log, args);
    cr_assert(wait_log(&env, "open.log", "anyone who can reach it can submit jobs", 5000),
              "no warning for the client endpoint");
    cr_assert(wait_log(&env, "open.log", "anyone who can reach it can register as a worker", 2000),
              "no warning for the worker endpoint");
    cr_assert(log_has(&env, "open.log", "bound without CURVE"));
    cr_assert(log_has(&env, "open.log", "plain text"));
    zt_kill(p, SIGTERM);

    zt_env_t lo;
    zt_env_init(&lo);
    zt_env_tcp(&lo);
    zt_broker(&lo, HB, NULL); /* returns once it answers */
    zt_pause_ms(200);
    cr_assert(!log_has(&lo, "broker.log", "without CURVE"), "a loopback bind was warned about");
}
