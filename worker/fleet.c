/*  zf_fleet — see zf_fleet.h. One process supervising one worker process per device.

    Restart policy: a worker that exits while the fleet is not draining is started again
    after a backoff that doubles with each exit in a row (default 200 ms up to 10 s) and
    resets once a worker has run for a minute. A device whose worker exits crash_limit times
    (default 8) within CRASH_WINDOW_MS is given up, with a log line saying so; when every
    device is given up the fleet exits 1.

    Devices: each worker starts with CUDA_VISIBLE_DEVICES in its environment (set in the
    environment execve is given, so /proc/PID/environ shows it): a GPU worker's names its
    one GPU (entry N of the fleet's own CUDA_VISIBLE_DEVICES when that is set), with
    ZF_GPU_BOUND_ENV saying so; a CPU worker's is empty. Frameworks see only the GPU the
    worker owns, as their device 0.

    Signals: each worker runs in its own process group, so a terminal's Ctrl-C reaches only
    the fleet, which then asks every worker to drain exactly once (a second signal to a
    worker means "leave now"). A worker whose fleet dies gets SIGTERM (PR_SET_PDEATHSIG) and
    drains, so no worker outlives its supervisor.
*/
#include "zf_fleet.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/zf_cert.h"
#include "../common/zf_httpd.h"
#include "../common/zf_util.h"
#include "../proto/zf_wire.h"
#include "zf_device.h"
#include "zf_gpu.h"

#define MAX_DEVICES 1024
#define HEALTHY_MS 60000
#define CRASH_WINDOW_MS 30000

/* Why a worker was restarted: the label `reason` of zfleet_fleet_restarts_total. */
enum { R_KILLED, R_CRASHED, R_JOB_TIMEOUT, R_CANCEL_IGNORED, R_START_FAILED, R_EXITED, R_N };
static const char *const reason_names[R_N] = {"killed",         "crashed",      "job_timeout",
                                              "cancel_ignored", "start_failed", "exited"};

typedef struct {
    char label[16];
    char cuda[ZF_CUDA_ENTRY_MAX]; /* its CUDA_VISIBLE_DEVICES ("" for a CPU worker) */
    pid_t pid;                    /* 0 when not running */
    int64_t started_ms, restart_at_ms;
    uint32_t backoff_ms;
    int64_t crashes[ZF_FLEET_CRASH_LIMIT_MAX]; /* times of the last exits, a ring */
    unsigned ncrash;
    int given_up;
    char name[ZF_NAME_MAX + 1]; /* the running worker's name, as the broker knows it */
    uint64_t restarts[R_N];     /* restarts scheduled, by the cause of the exit before */
} child_t;

typedef struct {
    const zf_fleet_config_t *fc;
    const zf_worker_config_t *wc;
    char bin[4096];
    child_t *kids;
    int nkids;
    int sigfd;
    int draining;
    const char *forced; /* why workers were told to leave at once, or NULL */
    int64_t drain_started_ms;
    void *zctx, *zsock; /* to the broker's worker endpoint, for obituaries */
    zf_httpd_t *httpd;  /* --metrics, or NULL */
} fleet_t;

/* Opens the fleet's own connection to the broker's worker endpoint, for obituaries, under a
   random routing id that it hands to its workers (ZF_SUPERVISOR_ENV, inherited by every
   child): the broker takes a worker's obituary only from the peer its READY named. ZeroMQ
   refuses a second peer with a routing id already connected, and the id is not guessable. */
static int open_obituary_socket(fleet_t *f)
{
    unsigned char id[16];
    char hex[2 * sizeof id + 1];
    for (size_t i = 0; i < sizeof id; i += 8) {
        uint64_t r = zf_random64();
        memcpy(id + i, &r, 8);
    }
    id[0] |= 1; /* ZeroMQ reserves routing ids that start with a zero byte */
    for (size_t i = 0; i < sizeof id; i++)
        snprintf(hex + 2 * i, 3, "%02x", id[i]);
    if (setenv(ZF_SUPERVISOR_ENV, hex, 1) < 0) /* before ZeroMQ starts its threads */
        return -1;
    f->zctx = zmq_ctx_new();
    f->zsock = f->zctx ? zmq_socket(f->zctx, ZMQ_DEALER) : NULL;
    int linger = 500;
    /* the same key as the workers: the broker takes obituaries on its worker endpoint */
    zf_cert_t key;
    uint8_t broker_key[ZF_KEY_BYTES];
    bool curve = false;
    char err[512];
    if (zf_cert_load_pair(f->wc->key_file, f->wc->broker_key_file, &curve, &key, broker_key, err,
                          sizeof err) < 0) {
        zf_log(ZF_LOG_ERROR, "%s", err);
        return -1;
    }
    int secured = f->zsock && curve ? zf_cert_apply_client(f->zsock, &key, broker_key) : 0;
    memset(&key, 0, sizeof key);
    if (!f->zsock || secured < 0 || zmq_setsockopt(f->zsock, ZMQ_ROUTING_ID, id, sizeof id) < 0 ||
        zmq_setsockopt(f->zsock, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
        zmq_connect(f->zsock, f->wc->broker_ep) < 0) {
        zf_log(ZF_LOG_ERROR, "cannot connect to the broker at %s: %s", f->wc->broker_ep,
               zmq_strerror(errno));
        return -1;
    }
    return 0;
}

/* Tells the broker that a worker died and why, so its jobs are requeued now, with the real
   cause (killed by signal 6, ...), instead of after its heartbeats run out. Best effort:
   the heartbeat expiry still covers a lost message. */
static void send_obituary(fleet_t *f, const char *name, const char *why)
{
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_OBITUARY);
    zf_msg_set_str(&m, ZF_F_WORKER, name);
    zf_msg_set_str(&m, ZF_F_TEXT, why);
    zf_wire_send(f->zsock, NULL, &m, NULL);
}

void zf_fleet_config_defaults(zf_fleet_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->gpus = "all";
    cfg->cpus = "all";
    cfg->backoff_min_ms = 200;
    cfg->backoff_max_ms = 10000;
    cfg->crash_limit = 8;
}

int zf_fleet_parse_list(const char *spec, const int *avail, int navail, int *out, int max)
{
    if (!strcmp(spec, "none"))
        return 0;
    if (!*spec)
        return -1;
    if (!strcmp(spec, "all")) {
        int n = navail < max ? navail : max;
        memcpy(out, avail, (size_t)n * sizeof *out);
        return n;
    }
    int n = 0;
    const char *p = spec;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10), b = a;
        if (end == p || a < 0)
            return -1;
        if (*end == '-') {
            p = end + 1;
            b = strtol(p, &end, 10);
            if (end == p || b < a)
                return -1;
        }
        for (long i = a; i <= b; i++) {
            int ok = 0, dup = 0;
            for (int k = 0; k < navail; k++)
                ok |= avail[k] == i;
            for (int k = 0; k < n; k++)
                dup |= out[k] == i;
            if (!ok || dup || n == max)
                return -1;
            out[n++] = (int)i;
        }
        if (*end == ',' && end[1])
            end++;
        else if (*end)
            return -1; /* junk, or a trailing comma */
        p = end;
    }
    return n;
}

static void add_arg(char **argv, int *n, const char *a)
{
    argv[(*n)++] = (char *)a;
}

static int is_var(const char *entry, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(entry, name, n) && entry[n] == '=';
}

/* The environment a worker starts with: the fleet's, with CUDA_VISIBLE_DEVICES set for its
   device (and, for a GPU, ZF_GPU_BOUND_ENV naming it). Built before fork, so the child
   only calls execve. The strings live in vars[2]; free the array (not the strings). */
static char **worker_env(const child_t *k, char vars[2][ZF_CUDA_ENTRY_MAX + 32])
{
    extern char **environ;
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = malloc((n + 3) * sizeof *env);
    if (!env)
        return NULL;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!is_var(environ[i], ZF_CUDA_ENV) && !is_var(environ[i], ZF_GPU_BOUND_ENV))
            env[m++] = environ[i];
    snprintf(vars[0], sizeof vars[0], "%s=%s", ZF_CUDA_ENV, k->cuda);
    env[m++] = vars[0];
    if (!strncmp(k->label, "gpu:", 4)) {
        snprintf(vars[1], sizeof vars[1], "%s=%s", ZF_GPU_BOUND_ENV, k->label);
        env[m++] = vars[1];
    }
    env[m] = NULL;
    return env;
}

static pid_t spawn(fleet_t *f, child_t *k)
{
    const zf_worker_config_t *wc = f->wc;
    char credits[16], hb[16], live[16], grace[16], drain[16], hold[16];
    snprintf(credits, sizeof credits, "%u", wc->credits);
    snprintf(hb, sizeof hb, "%u", wc->heartbeat_ms);
    snprintf(live, sizeof live, "%u", wc->liveness);
    snprintf(grace, sizeof grace, "%u", wc->cancel_grace_ms);
    snprintf(drain, sizeof drain, "%u", wc->drain_timeout_ms);
    snprintf(hold, sizeof hold, "%u", wc->hold_bytes);
    char *argv[64];
    int n = 0;
    add_arg(argv, &n, f->bin);
    add_arg(argv, &n, "--device");
    add_arg(argv, &n, k->label);
    add_arg(argv, &n, "--broker");
    add_arg(argv, &n, wc->broker_ep);
    if (wc->credits) { /* 0: each worker chooses its own (adaptive prefetch) */
        add_arg(argv, &n, "--credits");
        add_arg(argv, &n, credits);
    }
    add_arg(argv, &n, "--heartbeat");
    add_arg(argv, &n, hb);
    add_arg(argv, &n, "--liveness");
    add_arg(argv, &n, live);
    add_arg(argv, &n, "--cancel-grace");
    add_arg(argv, &n, grace);
    add_arg(argv, &n, "--drain-timeout");
    add_arg(argv, &n, drain);
    add_arg(argv, &n, "--log-format"); /* the fleet's own, from its flags or environment */
    add_arg(argv, &n, zf_log_format_name());
    add_arg(argv, &n, "--log-level");
    add_arg(argv, &n, zf_log_level_name());
    add_arg(argv, &n, "--hold-bytes");
    add_arg(argv, &n, hold);
    for (int i = 0; i < wc->nmodules; i++) {
        add_arg(argv, &n, "--module");
        add_arg(argv, &n, wc->modules[i]);
    }
    if (wc->fake_gpu && !strncmp(k->label, "gpu:", 4))
        add_arg(argv, &n, "--fake-gpu");
    if (wc->venv) {
        add_arg(argv, &n, "--venv");
        add_arg(argv, &n, wc->venv);
    }
    if (wc->key_file && wc->broker_key_file) {
        add_arg(argv, &n, "--key");
        add_arg(argv, &n, wc->key_file);
        add_arg(argv, &n, "--broker-key");
        add_arg(argv, &n, wc->broker_key_file);
    }
    char name[ZF_NAME_MAX + 1];
    add_arg(argv, &n, "--name");
    add_arg(argv, &n, name);
    argv[n] = NULL;
    char vars[2][ZF_CUDA_ENTRY_MAX + 32];
    char **env = worker_env(k, vars);
    pid_t parent = getpid();
    pid_t pid = env ? fork() : -1;
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) /* the fleet died before prctl took effect */
            _exit(ZF_WORKER_EXIT_START);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        zf_worker_default_name(name, sizeof name, (int)getpid(), k->label);
        execve(f->bin, argv, env);
        zf_log_event(ZF_LOG_ERROR, "child_exec_failed",
                     &(zf_log_fields_t){.device = k->label, .pid = getpid(), .path = f->bin},
                     "cannot run %s: %s", f->bin, strerror(errno));
        _exit(127);
    }
    free(env);
    if (pid < 0) {
        k->restarts[R_START_FAILED]++;
        k->backoff_ms = k->backoff_ms ? k->backoff_ms : f->fc->backoff_min_ms;
        k->restart_at_ms = zf_now_ms() + k->backoff_ms;
        zf_log_event(ZF_LOG_ERROR, "child_start_failed",
                     &(zf_log_fields_t){.device = k->label, .reason = strerror(errno)},
                     "%s: cannot start a worker (%s: %s); trying again in %u ms", k->label,
                     env ? "fork" : "environment", strerror(errno), k->backoff_ms);
        return 0;
    }
    k->pid = pid;
    zf_worker_default_name(k->name, sizeof k->name, (int)pid, k->label);
    k->started_ms = zf_now_ms();
    k->restart_at_ms = 0;
    zf_log_event(ZF_LOG_INFO, "child_started",
                 &(zf_log_fields_t){.device = k->label, .worker = k->name, .pid = pid},
                 "%s: worker started (pid %d)", k->label, (int)pid);
    return pid;
}

static int exit_reason(int status)
{
    if (WIFSIGNALED(status))
        return R_KILLED;
    switch (WEXITSTATUS(status)) {
    case ZF_WORKER_EXIT_OK: return R_EXITED;
    case ZF_WORKER_EXIT_TIMEOUT: return R_JOB_TIMEOUT;
    case ZF_WORKER_EXIT_CANCEL: return R_CANCEL_IGNORED;
    case ZF_WORKER_EXIT_START:
    case 127: return R_START_FAILED;
    default: return R_CRASHED;
    }
}

static void describe_exit(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else if (WEXITSTATUS(status) == ZF_WORKER_EXIT_OK)
        snprintf(buf, len, "left cleanly (exit 0)");
    else if (WEXITSTATUS(status) == ZF_WORKER_EXIT_TIMEOUT)
        snprintf(buf, len, "exited after a job timed out");
    else if (WEXITSTATUS(status) == ZF_WORKER_EXIT_CANCEL)
        snprintf(buf, len, "exited after a cancelled job ignored its cancel");
    else if (WEXITSTATUS(status) == ZF_WORKER_EXIT_START)
        snprintf(buf, len, "could not start (exit 1; its reason is logged above)");
    else if (WEXITSTATUS(status) == 127)
        snprintf(buf, len, "could not be executed (exit 127)");
    else
        snprintf(buf, len, "exited with code %d", WEXITSTATUS(status));
}

/* A worker exited: decide when (and whether) it comes back. */
static void on_exit_of(fleet_t *f, child_t *k, pid_t pid, int status)
{
    char why[128];
    describe_exit(status, why, sizeof why);
    int64_t now = zf_now_ms();
    k->pid = 0;
    /* a worker that left by itself (clean stop, timeout, ignored cancel) said so already */
    if (WIFSIGNALED(status) || (WEXITSTATUS(status) != ZF_WORKER_EXIT_OK &&
                                WEXITSTATUS(status) != ZF_WORKER_EXIT_TIMEOUT &&
                                WEXITSTATUS(status) != ZF_WORKER_EXIT_CANCEL))
        send_obituary(f, k->name, why);
    if (f->draining) {
        if (!f->forced && f->wc->drain_timeout_ms &&
            now - f->drain_started_ms >= f->wc->drain_timeout_ms)
            f->forced = "drain timeout";
        zf_log_fields_t ev = {.device = k->label, .worker = k->name, .pid = pid, .reason = why};
        if (f->forced && WIFEXITED(status) && WEXITSTATUS(status) == ZF_WORKER_EXIT_OK)
            zf_log_event(ZF_LOG_INFO, "child_exited", &ev, "%s: worker (pid %d) left at once (%s)",
                         k->label, (int)pid, f->forced);
        else
            zf_log_event(ZF_LOG_INFO, "child_exited", &ev, "%s: worker (pid %d) %s", k->label,
                         (int)pid, why);
        return;
    }
    if (now - k->started_ms >= HEALTHY_MS)
        k->backoff_ms = 0;
    k->backoff_ms = k->backoff_ms ? k->backoff_ms * 2 : f->fc->backoff_min_ms;
    if (k->backoff_ms > f->fc->backoff_max_ms)
        k->backoff_ms = f->fc->backoff_max_ms;
    unsigned limit = f->fc->crash_limit;
    int64_t oldest = now;
    if (limit) {
        k->crashes[k->ncrash++ % limit] = now;
        oldest = k->crashes[k->ncrash % limit];
    }
    if (limit && k->ncrash >= limit && now - oldest < CRASH_WINDOW_MS) {
        k->given_up = 1;
        zf_log_event(ZF_LOG_ERROR, "device_given_up",
                     &(zf_log_fields_t){
                         .device = k->label, .worker = k->name, .pid = pid, .reason = why},
                     "%s: worker (pid %d) %s; it exited %d times in %lld ms, so this device is "
                     "given up (fix the cause and restart the fleet)",
                     k->label, (int)pid, why, limit, (long long)(now - oldest));
        return;
    }
    k->restart_at_ms = now + k->backoff_ms;
    k->restarts[exit_reason(status)]++;
    zf_log_event(ZF_LOG_WARN, "child_restart",
                 &(zf_log_fields_t){
                     .device = k->label, .worker = k->name, .pid = pid, .reason = why},
                 "%s: worker (pid %d) %s; restarting in %u ms", k->label, (int)pid, why,
                 k->backoff_ms);
}

static void reap(fleet_t *f)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        for (int i = 0; i < f->nkids; i++)
            if (f->kids[i].pid == pid)
                on_exit_of(f, &f->kids[i], pid, status);
}

static int running(const fleet_t *f)
{
    int n = 0;
    for (int i = 0; i < f->nkids; i++)
        n += f->kids[i].pid != 0;
    return n;
}

static int alive_or_pending(const fleet_t *f)
{
    int n = 0;
    for (int i = 0; i < f->nkids; i++)
        n += f->kids[i].pid != 0 || (!f->kids[i].given_up && f->kids[i].restart_at_ms);
    return n;
}

static void signal_all(fleet_t *f, int sig)
{
    for (int i = 0; i < f->nkids; i++)
        if (f->kids[i].pid)
            kill(f->kids[i].pid, sig);
}

/* How many GPUs the fleet may use: CUDA's count, or with --fake-gpu (tests only) as many
   as the fleet's CUDA_VISIBLE_DEVICES lists, or any number when it is not set. */
static int gpus_available(const fleet_t *f)
{
    if (f->wc->fake_gpu) {
        int listed = zf_device_cuda_listed();
        return listed >= 0 ? listed : MAX_DEVICES;
    }
    char why[256] = "";
    int n = zf_gpu_count(why, sizeof why);
    if (n == 0 && strcmp(f->fc->gpus, "none"))
        zf_log(ZF_LOG_INFO, "no GPUs: %s", why);
    return n;
}

static int discover(fleet_t *f)
{
    int avail[MAX_DEVICES], picked[MAX_DEVICES];
    if (f->wc->fake_gpu && !strcmp(f->fc->gpus, "all")) {
        zf_log(ZF_LOG_ERROR, "--fake-gpu (tests only) with --fleet: name the fake GPUs with "
                             "--gpus LIST");
        return -1;
    }
    int ngpu_avail = gpus_available(f);
    for (int i = 0; i < ngpu_avail && i < MAX_DEVICES; i++)
        avail[i] = i;
    int ng = zf_fleet_parse_list(f->fc->gpus, avail, ngpu_avail, picked, MAX_DEVICES);
    if (ng < 0) {
        zf_log(ZF_LOG_ERROR, "--gpus %s: not a list of available GPUs (this machine has %d)",
               f->fc->gpus, ngpu_avail);
        return -1;
    }
    f->kids = calloc(MAX_DEVICES * 2, sizeof *f->kids);
    if (!f->kids)
        return -1;
    char err[256];
    for (int i = 0; i < ng; i++) {
        child_t *k = &f->kids[f->nkids++];
        snprintf(k->label, sizeof k->label, "gpu:%d", picked[i]);
        if (zf_device_cuda_entry(picked[i], k->cuda, sizeof k->cuda, err, sizeof err) < 0) {
            zf_log(ZF_LOG_ERROR, "%s", err); /* CUDA counted more GPUs than the list names */
            return -1;
        }
    }
    int ncpu_avail = zf_device_cpus(avail, MAX_DEVICES);
    int nc = zf_fleet_parse_list(f->fc->cpus, avail, ncpu_avail, picked, MAX_DEVICES);
    if (nc < 0) {
        zf_log(ZF_LOG_ERROR, "--cpus %s: not a list of cores available to this process",
               f->fc->cpus);
        return -1;
    }
    for (int i = 0; i < nc; i++)
        snprintf(f->kids[f->nkids++].label, sizeof f->kids->label, "cpu:%d", picked[i]);
    zf_log_event(ZF_LOG_INFO, "fleet_started", &(zf_log_fields_t){.count = (uint64_t)(ng + nc)},
                 "fleet: %d GPU worker(s), %d CPU worker(s), broker %s", ng, nc, f->wc->broker_ep);
    if (!f->nkids) {
        zf_log(ZF_LOG_ERROR, "no devices to run workers on (--gpus %s --cpus %s)", f->fc->gpus,
               f->fc->cpus);
        return -1;
    }
    return 0;
}

static int supervise(fleet_t *f)
{
    int64_t drain_deadline = 0;
    while (f->draining ? running(f) > 0 : alive_or_pending(f) > 0) {
        int64_t now = zf_now_ms(), next = now + 60000;
        for (int i = 0; i < f->nkids && !f->draining; i++) {
            child_t *k = &f->kids[i];
            if (!k->pid && !k->given_up && k->restart_at_ms && k->restart_at_ms <= now)
                spawn(f, k);
            if (!k->pid && !k->given_up && k->restart_at_ms && k->restart_at_ms < next)
                next = k->restart_at_ms;
        }
        if (drain_deadline && drain_deadline < next)
            next = drain_deadline;
        struct pollfd p[2] = {{f->sigfd, POLLIN, 0},
                              {f->httpd ? zf_httpd_fd(f->httpd) : -1, POLLIN, 0}};
        int wait = next > now ? (int)(next - now) : 0;
        long http_in = f->httpd ? zf_httpd_timeout_ms(f->httpd) : -1;
        if (http_in >= 0 && http_in < wait)
            wait = (int)http_in;
        int ready = poll(p, f->httpd ? 2 : 1, wait);
        if (f->httpd)
            zf_httpd_serve(f->httpd, ready > 0 && (p[1].revents & POLLIN));
        if (ready > 0 && (p[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            while (read(f->sigfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGCHLD)
                    continue;
                if (f->draining) {
                    zf_log(ZF_LOG_WARN, "second stop signal: workers leave now");
                    f->forced = "second stop signal";
                    signal_all(f, SIGTERM);
                    continue;
                }
                zf_log_event(ZF_LOG_INFO, "fleet_draining",
                             &(zf_log_fields_t){.count = (uint64_t)running(f)},
                             "signal %u: draining %d worker(s)", si.ssi_signo, running(f));
                f->draining = 1;
                f->drain_started_ms = zf_now_ms();
                signal_all(f, SIGTERM);
                if (f->wc->drain_timeout_ms)
                    drain_deadline = zf_now_ms() + f->wc->drain_timeout_ms + 2000;
            }
        }
        reap(f);
        if (drain_deadline && zf_now_ms() >= drain_deadline) {
            zf_log(ZF_LOG_WARN, "drain timeout: killing %d worker(s)", running(f));
            signal_all(f, SIGKILL);
            drain_deadline = 0;
        }
    }
    if (!f->draining) {
        zf_log_event(ZF_LOG_ERROR, "fleet_stopped",
                     &(zf_log_fields_t){.reason = "every device given up"},
                     "fleet stopped: every device was given up");
        return 1;
    }
    zf_log_event(ZF_LOG_INFO, "fleet_stopped", &(zf_log_fields_t){.reason = "drained"},
                 "fleet stopped: every worker drained and left");
    return 0;
}

/* ------------------------------------------------------------------ metrics */

static void write_metrics(const fleet_t *f, zf_prom_t *t)
{
    zf_prom_family(t, "zfleet_fleet_workers_running", "gauge",
                   "1 while the device's worker process runs, by device.");
    for (int i = 0; i < f->nkids; i++) {
        const child_t *k = &f->kids[i];
        zf_prom_u64(t, "zfleet_fleet_workers_running", k->pid != 0, "device", k->label,
                    "device_kind", strncmp(k->label, "gpu:", 4) ? "cpu" : "gpu", NULL);
    }
    zf_prom_family(t, "zfleet_fleet_restarts_total", "counter",
                   "Worker restarts, by device and the cause of the exit before each.");
    for (int i = 0; i < f->nkids; i++)
        for (int r = 0; r < R_N; r++)
            zf_prom_u64(t, "zfleet_fleet_restarts_total", f->kids[i].restarts[r], "device",
                        f->kids[i].label, "reason", reason_names[r], NULL);
    uint64_t given_up = 0;
    for (int i = 0; i < f->nkids; i++)
        given_up += f->kids[i].given_up != 0;
    zf_prom_family(t, "zfleet_fleet_devices", "gauge", "Devices the fleet supervises.");
    zf_prom_u64(t, "zfleet_fleet_devices", (uint64_t)f->nkids, NULL);
    zf_prom_family(t, "zfleet_fleet_devices_given_up", "gauge",
                   "Devices given up: their worker exited --crash-limit times within 30 s.");
    zf_prom_u64(t, "zfleet_fleet_devices_given_up", given_up, NULL);
    zf_prom_family(t, "zfleet_fleet_draining", "gauge", "1 once a stop signal started the drain.");
    zf_prom_u64(t, "zfleet_fleet_draining", (uint64_t)(f->draining != 0), NULL);
}

/* GET on --metrics: answered from the supervision loop, which is alive while it answers;
   ready while it is not draining and at least one worker runs. */
static int on_http(void *arg, const char *path, zf_prom_t *body, const char **type)
{
    const fleet_t *f = arg;
    if (!strcmp(path, "/metrics")) {
        write_metrics(f, body);
        *type = ZF_PROM_CONTENT_TYPE;
        return 200;
    }
    if (!strcmp(path, "/healthz")) {
        zf_prom_printf(body, "ok\n");
        return 200;
    }
    if (!strcmp(path, "/readyz")) {
        const char *why = f->draining ? "draining" : !running(f) ? "no worker is running" : NULL;
        zf_prom_printf(body, "%s%s\n", why ? "not ready: " : "ready", why ? why : "");
        return why ? 503 : 200;
    }
    zf_prom_printf(body, "not found: %s (try /metrics, /healthz or /readyz)\n", path);
    return 404;
}

int zf_fleet_run(const zf_fleet_config_t *fc, const zf_worker_config_t *wc)
{
    fleet_t f = {.fc = fc, .wc = wc, .sigfd = -1};
    if (fc->worker_bin)
        snprintf(f.bin, sizeof f.bin, "%s", fc->worker_bin);
    else {
        ssize_t n = readlink("/proc/self/exe", f.bin, sizeof f.bin - 1);
        if (n <= 0) {
            zf_log(ZF_LOG_ERROR, "cannot find my own executable; use --worker-bin");
            return 1;
        }
        f.bin[n] = 0;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    f.sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (f.sigfd < 0) {
        zf_log(ZF_LOG_ERROR, "cannot watch signals: %s", strerror(errno));
        return 1;
    }
    if (discover(&f) < 0 || open_obituary_socket(&f) < 0 ||
        (fc->metrics_addr && !(f.httpd = zf_httpd_new(fc->metrics_addr, "metrics", on_http, &f)))) {
        /* it said why */
        zf_httpd_destroy(&f.httpd);
        free(f.kids);
        close(f.sigfd);
        if (f.zsock)
            zmq_close(f.zsock);
        if (f.zctx)
            zmq_ctx_term(f.zctx);
        return 1;
    }
    for (int i = 0; i < f.nkids; i++)
        spawn(&f, &f.kids[i]);
    if (f.httpd)
        zf_log(ZF_LOG_INFO, "metrics: http://%s (port %u): /metrics, /healthz, /readyz",
               fc->metrics_addr, zf_httpd_port(f.httpd));
    int rc = supervise(&f);
    zf_httpd_destroy(&f.httpd);
    free(f.kids);
    close(f.sigfd);
    if (f.zsock)
        zmq_close(f.zsock);
    if (f.zctx)
        zmq_ctx_term(f.zctx);
    return rc;
}
