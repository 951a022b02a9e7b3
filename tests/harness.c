/*  Test harness — see harness.h. */
#include "harness.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef ZF_BUILD_DIR
#define ZF_BUILD_DIR "build"
#endif

#define MAX_PROCS 256
static pid_t procs[MAX_PROCS];
static int nprocs;
static int counter;

int64_t zt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void zt_pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

const char *zt_build_dir(void)
{
    const char *d = getenv("ZF_BUILD_DIR");
    return d ? d : ZF_BUILD_DIR;
}

const char *zt_path(const char *rel)
{
    static char bufs[4][1024];
    static int slot;
    char *b = bufs[slot++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", zt_build_dir(), rel);
    return b;
}

/* Sends sig to every process still tracked and reaps those that exit within ms. */
static void signal_and_reap(int sig, int ms)
{
    int left = 0;
    for (int i = 0; i < nprocs; i++)
        if (procs[i] > 0 && kill(procs[i], sig) == 0)
            left++;
    for (int64_t until = zt_now_ms() + ms; left && zt_now_ms() < until; zt_pause_ms(10))
        for (int i = 0; i < nprocs; i++)
            if (procs[i] > 0 && waitpid(procs[i], NULL, WNOHANG) == procs[i]) {
                procs[i] = 0;
                left--;
            }
}

void zt_kill_all(void)
{
    /* With $ZT_GRACEFUL_STOP (scripts/test's sanitizer pass) the processes are asked to
       leave first, so that they reach exit() and LeakSanitizer checks them: SIGTERM, then
       a second one (a draining worker leaves at once on it); SIGKILL ends the rest. */
    if (getenv("ZT_GRACEFUL_STOP")) {
        signal_and_reap(SIGTERM, 3000);
        signal_and_reap(SIGTERM, 3000);
    }
    for (int i = 0; i < nprocs; i++)
        if (procs[i] > 0) {
            kill(procs[i], SIGKILL);
            waitpid(procs[i], NULL, 0);
            procs[i] = 0;
        }
    nprocs = 0;
}

void zt_env_init(zt_env_t *env)
{
    static int registered;
    if (!registered) {
        atexit(zt_kill_all);
        registered = 1;
    }
    int n = counter++;
    snprintf(env->dir, sizeof env->dir, "/tmp/zft-%d-%d-%lld", (int)getpid(), n,
             (long long)zt_now_ms());
    mkdir(env->dir, 0700);
    snprintf(env->client_ep, sizeof env->client_ep, "ipc://%s/c", env->dir);
    snprintf(env->worker_ep, sizeof env->worker_ep, "ipc://%s/w", env->dir);
    env->curve = false;
    if (getenv("ZT_CURVE") && !strcmp(getenv("ZT_CURVE"), "1"))
        zt_curve_on(env);
}

int zt_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0, "socket failed");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                  getsockname(fd, (struct sockaddr *)&a, &len) == 0,
              "no free port");
    close(fd);
    return ntohs(a.sin_port);
}

void zt_env_tcp(zt_env_t *env)
{
    int c = zt_free_port(), w = zt_free_port();
    while (w == c)
        w = zt_free_port();
    snprintf(env->client_ep, sizeof env->client_ep, "tcp://127.0.0.1:%d", c);
    snprintf(env->worker_ep, sizeof env->worker_ep, "tcp://127.0.0.1:%d", w);
}

/* ------------------------------------------------------------------ CURVE */

/* The endpoints of the brokers this harness started with CURVE, and the key directory of
   each: clients and workers of those endpoints get keys, others do not. */
typedef struct {
    char client_ep[128], worker_ep[128], dir[96];
} curve_ep_t;
static curve_ep_t curve_eps[64];
static int ncurve;

static const curve_ep_t *curve_find(const char *ep, bool worker)
{
    for (int i = ncurve - 1; i >= 0; i--)
        if (!strcmp(worker ? curve_eps[i].worker_ep : curve_eps[i].client_ep, ep))
            return &curve_eps[i];
    return NULL;
}

/* Remembers (on) or forgets whether env's endpoints now belong to a CURVE broker. */
static void curve_mark(const zt_env_t *env, bool on)
{
    for (int i = 0; i < ncurve; i++)
        if (!strcmp(curve_eps[i].client_ep, env->client_ep) ||
            !strcmp(curve_eps[i].worker_ep, env->worker_ep))
            curve_eps[i] = curve_eps[--ncurve], i--;
    if (!on)
        return;
    if (ncurve == (int)(sizeof curve_eps / sizeof curve_eps[0]))
        memmove(curve_eps, curve_eps + 1, sizeof curve_eps - sizeof curve_eps[0]), ncurve--;
    curve_ep_t *e = &curve_eps[ncurve++];
    snprintf(e->client_ep, sizeof e->client_ep, "%s", env->client_ep);
    snprintf(e->worker_ep, sizeof e->worker_ep, "%s", env->worker_ep);
    snprintf(e->dir, sizeof e->dir, "%s", env->dir);
}

static char *rotating(void)
{
    static char bufs[4][256];
    static int slot;
    return bufs[slot++ % 4];
}

static const char *key_path_in(const char *dir, const char *name, bool secret)
{
    char *b = rotating();
    snprintf(b, 256, "%s/keys/%s.key%s", dir, name, secret ? "_secret" : "");
    return b;
}

const char *zt_key_path(const zt_env_t *env, const char *name, bool secret)
{
    return key_path_in(env->dir, name, secret);
}

const char *zt_key_dir(const zt_env_t *env, const char *role)
{
    char *b = rotating();
    snprintf(b, 256, "%s/keys%s%s", env->dir, role ? "/" : "", role ? role : "");
    return b;
}

void zt_key_list(const zt_env_t *env, const char *name, const char *role)
{
    char buf[1024], to[300];
    size_t n = zt_read_file(zt_key_path(env, name, false), buf, sizeof buf);
    cr_assert(n > 0, "no key %s in %s", name, zt_key_dir(env, NULL));
    snprintf(to, sizeof to, "%s/%s.key", zt_key_dir(env, role), name);
    FILE *f = fopen(to, "w");
    cr_assert(f, "cannot write %s", to);
    fwrite(buf, 1, n, f);
    fclose(f);
}

void zt_key_unlist(const zt_env_t *env, const char *name, const char *role)
{
    char path[300];
    snprintf(path, sizeof path, "%s/%s.key", zt_key_dir(env, role), name);
    cr_assert(unlink(path) == 0, "cannot remove %s", path);
}

static int run_cli(const zt_env_t *env, const char *key_dir, const char *key, char *out,
                   size_t outlen, const char *err_path, const char *const *args);

const char *zt_key_new(const zt_env_t *env, const char *name, const char *role)
{
    char out[512], prefix[256];
    snprintf(prefix, sizeof prefix, "%s/keys/%s", env->dir, name);
    int rc = run_cli(env, NULL, NULL, out, sizeof out, NULL,
                     (const char *const[]){"keygen", prefix, NULL});
    cr_assert_eq(rc, 0, "zfleet keygen %s failed (%d)", prefix, rc);
    char *pub = strstr(out, "public key: ");
    cr_assert(pub, "zfleet keygen printed no public key: %s", out);
    char *b = rotating();
    snprintf(b, 256, "%.40s", pub + 12);
    if (role)
        zt_key_list(env, name, role);
    return b;
}

void zt_curve_on(zt_env_t *env)
{
    env->curve = true;
    const char *roles[] = {NULL, "clients", "workers", "admins"};
    for (int i = 0; i < 4; i++)
        cr_assert(mkdir(zt_key_dir(env, roles[i]), 0700) == 0 || errno == EEXIST);
    /* each key that is not there yet (a test may bring its own, e.g. pyzmq's broker key) */
    const char *keys[][2] = {
        {"broker", NULL}, {"admin", "admins"}, {"client", "clients"}, {"worker", "workers"}};
    for (int i = 0; i < 4; i++)
        if (access(zt_key_path(env, keys[i][0], true), F_OK) != 0)
            zt_key_new(env, keys[i][0], keys[i][1]);
}

long zt_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

void zt_track(pid_t pid)
{
    if (nprocs < MAX_PROCS)
        procs[nprocs++] = pid;
}

pid_t zt_spawn(const char *rel_bin, const char *log, const char *const *args)
{
    /* not zt_path: its rotating buffers may hold the caller's arguments */
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/%s", zt_build_dir(), rel_bin);
    const char *argv[64];
    int n = 0;
    argv[n++] = bin;
    const curve_ep_t *curve = NULL;
    bool keyed = false;
    for (; args && *args && n < 63; args++) {
        argv[n++] = *args;
        keyed |= !strcmp(*args, "--key");
        if (!strcmp(*args, "--broker") && args[1])
            curve = curve_find(args[1], true);
    }
    /* a worker of a CURVE broker gets its key (zt_curve_on) */
    if (curve && !keyed && !strcmp(rel_bin, "worker/zfleet-worker") && n < 59) {
        argv[n++] = "--key";
        argv[n++] = key_path_in(curve->dir, "worker", true);
        argv[n++] = "--broker-key";
        argv[n++] = key_path_in(curve->dir, "broker", false);
    }
    argv[n] = NULL;
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        setpgid(0, 0);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (nprocs < MAX_PROCS)
        procs[nprocs++] = pid;
    return pid;
}

static zf_client_t *client_with(const zt_env_t *env, const char *dir, const char *name)
{
    zf_client_t *c = zf_client_new(env->client_ep);
    cr_assert(c, "client_new failed");
    if (name)
        cr_assert_eq(zf_client_set_keys(c, key_path_in(dir, name, true),
                                        key_path_in(dir, "broker", false)),
                     0, "zf_client_set_keys %s: %s", name, zf_client_error(c));
    zf_client_set_request_timeout(c, 3000);
    return c;
}

zf_client_t *zt_client(const zt_env_t *env)
{
    const curve_ep_t *curve = curve_find(env->client_ep, false);
    return client_with(env, curve ? curve->dir : NULL, curve ? "admin" : NULL);
}

zf_client_t *zt_client_as(const zt_env_t *env, const char *name)
{
    return client_with(env, env->dir, name);
}

/* Copies a NULL-terminated va_list of arguments into args[max] (NULL-terminated). */
static void collect_args(const char **args, int max, va_list ap)
{
    int n = 0;
    for (const char *a; n < max - 1 && (a = va_arg(ap, const char *));)
        args[n++] = a;
    args[n] = NULL;
}

/* Adds `more` (NULL-terminated, may be NULL) to argv[n..63]; returns the new n. */
static int append_args(const char **argv, int n, const char *const *more)
{
    for (; more && *more && n < 63; more++)
        argv[n++] = *more;
    argv[n] = NULL;
    return n;
}

static void wait_broker_up(const zt_env_t *env, const char *log)
{
    zf_client_t *c = zt_client(env);
    int64_t until = zt_now_ms() + 5000;
    zf_event_t *e = NULL;
    while (!e && zt_now_ms() < until) {
        e = zf_client_stats(c);
        if (!e)
            zt_pause_ms(20);
    }
    zf_client_destroy(&c);
    cr_assert(e, "broker did not come up (see %s)", log);
    zf_event_destroy(&e);
}

static pid_t start_broker(const zt_env_t *env, int hb_ms, const char *const *extra)
{
    char hb[16], log[160], data[160];
    snprintf(hb, sizeof hb, "%d", hb_ms);
    snprintf(log, sizeof log, "%s/broker.log", env->dir);
    /* The broker journals by default (./zfleet-data); a test that does not say where gets
       an in-memory broker, or with ZT_JOURNAL=1 a journal in its own scratch directory. */
    snprintf(data, sizeof data, "%s/data", env->dir);
    bool says = false, curve = env->curve;
    for (const char *const *a = extra; a && *a; a++) {
        says |= !strcmp(*a, "--data") || !strcmp(*a, "--no-journal");
        curve |= !strcmp(*a, "--curve-secret");
    }
    const char *argv[64] = {"--clients",    env->client_ep, "--workers",
                            env->worker_ep, "--heartbeat",  hb};
    int n = 6;
    if (!says) {
        bool journal = getenv("ZT_JOURNAL") && !strcmp(getenv("ZT_JOURNAL"), "1");
        argv[n++] = journal ? "--data" : "--no-journal";
        if (journal)
            argv[n++] = data;
    }
    bool curve_args = curve && env->curve;
    for (const char *const *a = extra; curve_args && a && *a; a++)
        curve_args = strcmp(*a, "--curve-secret") != 0;
    if (curve_args) {
        const char *more[] = {"--curve-secret",
                              zt_key_path(env, "broker", true),
                              "--client-keys",
                              zt_key_dir(env, "clients"),
                              "--worker-keys",
                              zt_key_dir(env, "workers"),
                              "--admin-keys",
                              zt_key_dir(env, "admins"),
                              NULL};
        n = append_args(argv, n, more); /* (the rotating buffers are copied by zt_spawn) */
    }
    append_args(argv, n, extra);
    curve_mark(env, curve);
    pid_t pid = zt_spawn("broker/zfleet-broker", log, argv); /* copies what it needs */
    wait_broker_up(env, log);
    return pid;
}

/* A worker with `extra`, then --name name when name is not NULL. */
static pid_t start_worker(const zt_env_t *env, int hb_ms, const char *const *extra,
                          const char *name)
{
    char hb[16], log[160];
    snprintf(hb, sizeof hb, "%d", hb_ms);
    snprintf(log, sizeof log, "%s/workers.log", env->dir);
    const char *argv[64] = {"--broker", env->worker_ep, "--heartbeat", hb};
    int n = append_args(argv, 4, extra);
    if (name)
        append_args(argv, n, (const char *const[]){"--name", name, NULL});
    return zt_spawn("worker/zfleet-worker", log, argv);
}

pid_t zt_broker(const zt_env_t *env, int hb_ms, ...)
{
    const char *extra[64];
    va_list ap;
    va_start(ap, hb_ms);
    collect_args(extra, 64, ap);
    va_end(ap);
    return start_broker(env, hb_ms, extra);
}

pid_t zt_worker(const zt_env_t *env, int hb_ms, ...)
{
    const char *extra[64];
    va_list ap;
    va_start(ap, hb_ms);
    collect_args(extra, 64, ap);
    va_end(ap);
    return start_worker(env, hb_ms, extra, NULL);
}

void zt_fleet_up(zt_env_t *env, zt_fleet_t *fleet)
{
    cr_assert(fleet->hb_ms > 0 && fleet->workers >= 0 && fleet->workers <= ZT_MAX_WORKERS,
              "zt_fleet_t: a heartbeat and 0 to %d workers", ZT_MAX_WORKERS);
    zt_env_init(env);
    fleet->broker = start_broker(env, fleet->hb_ms, fleet->broker_args);
    const char *const *name = fleet->names;
    for (int i = 0; i < fleet->workers; i++) {
        fleet->worker[i] =
            start_worker(env, fleet->hb_ms, fleet->worker_args, name && *name ? *name : NULL);
        name += name && *name; /* a list shorter than the fleet names only the first ones */
    }
    if (fleet->workers)
        cr_assert(zt_wait_workers(env, fleet->workers, 20000),
                  "%d of %d workers registered (see %s/workers.log)", zt_count_workers(env),
                  fleet->workers, env->dir);
}

zf_client_t *zt_start(zt_env_t *env, zt_fleet_t *fleet)
{
    zt_fleet_up(env, fleet);
    return zt_client(env);
}

msgpack_object *zt_mp_get(msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            !memcmp(k->via.str.ptr, key, n))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

long long zt_with_stats(const zt_env_t *env, long long (*fn)(msgpack_object *, const char *),
                        const char *arg)
{
    zf_client_t *c = zt_client(env);
    zf_event_t *e = zf_client_stats(c);
    long long v = -1;
    if (e) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        if (msgpack_unpack_next(&u, e->output, e->output_len, &off) == MSGPACK_UNPACK_SUCCESS)
            v = fn(&u.data, arg);
        msgpack_unpacked_destroy(&u);
        zf_event_destroy(&e);
    }
    zf_client_destroy(&c);
    return v;
}

static long long count_workers(msgpack_object *doc, const char *unused)
{
    (void)unused;
    msgpack_object *w = zt_mp_get(doc, "workers");
    return w && w->type == MSGPACK_OBJECT_ARRAY ? (long long)w->via.array.size : -1;
}

static long long broker_counter(msgpack_object *doc, const char *name)
{
    msgpack_object *v = zt_mp_get(zt_mp_get(doc, "broker"), name);
    return v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (long long)v->via.u64 : -1;
}

int zt_count_workers(const zt_env_t *env)
{
    return (int)zt_with_stats(env, count_workers, NULL);
}

long long zt_broker_counter(const zt_env_t *env, const char *name)
{
    return zt_with_stats(env, broker_counter, name);
}

bool zt_wait_workers(const zt_env_t *env, int n, int timeout_ms)
{
    int64_t until = zt_now_ms() + timeout_ms;
    while (zt_now_ms() < until) {
        if (zt_count_workers(env) == n)
            return true;
        zt_pause_ms(25);
    }
    return false;
}

int zt_wait_exit(pid_t pid, int timeout_ms)
{
    int64_t until = zt_now_ms() + timeout_ms;
    int status;
    while (zt_now_ms() < until) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            for (int i = 0; i < nprocs; i++)
                if (procs[i] == pid)
                    procs[i] = 0;
            return status;
        }
        zt_pause_ms(10);
    }
    return -1;
}

void zt_kill(pid_t pid, int sig)
{
    kill(pid, sig);
    if (sig == SIGKILL || sig == SIGTERM)
        zt_wait_exit(pid, 10000);
}

/* Runs the CLI with args; stdout into out, stderr to err_path (NULL: this process's
   stderr); with key (keys/KEY.key_secret under key_dir) in ZFLEET_KEY, else no keys. */
static int run_cli(const zt_env_t *env, const char *key_dir, const char *key, char *out,
                   size_t outlen, const char *err_path, const char *const *args)
{
    const char *argv[64];
    int n = 0;
    argv[n++] = zt_path("client/zfleet");
    for (; n < 63 && args && *args; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    char key_file[256] = "", broker_file[256] = "";
    if (key) {
        snprintf(key_file, sizeof key_file, "%s", key_path_in(key_dir, key, true));
        snprintf(broker_file, sizeof broker_file, "%s", key_path_in(key_dir, "broker", false));
    }
    int fds[2];
    cr_assert(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        if (err_path) {
            int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0)
                dup2(fd, 2);
        }
        setenv("ZFLEET_BROKER", env->client_ep, 1);
        unsetenv("ZFLEET_KEY");
        unsetenv("ZFLEET_BROKER_KEY");
        if (key) {
            setenv("ZFLEET_KEY", key_file, 1);
            setenv("ZFLEET_BROKER_KEY", broker_file, 1);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    char sink[4096];
    while ((r = read(fds[0], out && got + 1 < outlen ? out + got : sink,
                     out && got + 1 < outlen ? outlen - 1 - got : sizeof sink)) > 0)
        if (out && got + 1 < outlen)
            got += (size_t)r;
    close(fds[0]);
    if (out && outlen)
        out[got] = 0;
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The CLI as the harness's default speaker: the admin key at a CURVE endpoint. */
static int run_cli_default(const zt_env_t *env, char *out, size_t outlen, const char *err_path,
                           const char *const *args)
{
    const curve_ep_t *curve = curve_find(env->client_ep, false);
    return run_cli(env, curve ? curve->dir : NULL, curve ? "admin" : NULL, out, outlen, err_path,
                   args);
}

int zt_cli(const zt_env_t *env, char *out, size_t outlen, ...)
{
    const char *args[64];
    va_list ap;
    va_start(ap, outlen);
    collect_args(args, 64, ap);
    va_end(ap);
    return run_cli_default(env, out, outlen, NULL, args);
}

static const char *cli_err_path(const zt_env_t *env, char *buf, size_t len)
{
    snprintf(buf, len, "%s/cli.stderr", env->dir);
    return buf;
}

int zt_cli_err(const zt_env_t *env, char *out, size_t outlen, char *err, size_t errlen, ...)
{
    char path[160];
    const char *args[64];
    va_list ap;
    va_start(ap, errlen);
    collect_args(args, 64, ap);
    va_end(ap);
    int rc = run_cli_default(env, out, outlen, cli_err_path(env, path, sizeof path), args);
    zt_read_file(path, err, errlen);
    return rc;
}

int zt_cli_as(const zt_env_t *env, const char *name, char *out, size_t outlen, char *err,
              size_t errlen, ...)
{
    char path[160];
    const char *args[64];
    va_list ap;
    va_start(ap, errlen);
    collect_args(args, 64, ap);
    va_end(ap);
    int rc = run_cli(env, env->dir, name, out, outlen, cli_err_path(env, path, sizeof path), args);
    zt_read_file(path, err, errlen);
    return rc;
}

size_t zt_read_file(const char *path, char *buf, size_t len)
{
    size_t n = 0;
    FILE *f = fopen(path, "rb");
    if (f) {
        n = len ? fread(buf, 1, len - 1, f) : 0;
        fclose(f);
    }
    if (len)
        buf[n] = 0;
    return n;
}

bool zt_wait_running(zf_client_t *c, uint64_t id, int timeout_ms)
{
    for (int64_t until = zt_now_ms() + timeout_ms; zt_now_ms() < until; zt_pause_ms(20)) {
        zf_event_t *e = zf_client_get(c, id);
        bool running = e && e->status == ZFLEET_RUNNING;
        zf_event_destroy(&e);
        if (running)
            return true;
    }
    return false;
}

static unsigned char pattern_byte(size_t k, unsigned seed)
{
    return (unsigned char)(k * 31 + seed * 7 + (k >> 8));
}

void zt_pattern(unsigned char *buf, size_t n, unsigned seed)
{
    for (size_t k = 0; k < n; k++)
        buf[k] = pattern_byte(k, seed);
}

long zt_output_long(const zf_event_t *e)
{
    char num[32] = {0};
    cr_assert_lt(e->output_len, sizeof num, "output of %zu bytes is not a number", e->output_len);
    memcpy(num, e->output, e->output_len);
    char *end;
    long v = strtol(num, &end, 10);
    cr_assert(end != num && *end == 0, "output '%s' is not a number", num);
    return v;
}

size_t zt_pattern_mismatch(const void *p, size_t n, unsigned seed)
{
    const unsigned char *b = p;
    size_t k = 0;
    while (k < n && b[k] == pattern_byte(k, seed))
        k++;
    return k;
}
