/*  Devices with real processes: core pinning, a missing GPU, the fleet supervisor (one
    worker per core, restart with backoff, drain on SIGTERM, giving up a crash loop),
    routing by device kind (with --fake-gpu, a test-only flag, standing in for a GPU), and
    CUDA_VISIBLE_DEVICES: read from /proc/PID/environ for fleet workers (the fleet sets it
    in their starting environment), and through the test module's `env` and `device`
    handlers for workers started by hand (they set it in their own environment, which
    /proc/PID/environ does not show: what matters is what their handlers see). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "zf_fleet.h"
#include "zf_gpu.h"

TestSuite(devices, .fini = zt_kill_all);

#define HB "200" /* heartbeat for every process here, ms */

/* ------------------------------------------------------------------ helpers */

/* The value of `key` in /proc/<pid>[/task/<tid>]/status, into out. 0, or -1. */
static int status_field(const char *path, const char *key, char *out, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[512];
    size_t kl = strlen(key);
    int rc = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            char *v = line + kl + 1;
            v += strspn(v, " \t");
            v[strcspn(v, "\n")] = 0;
            snprintf(out, len, "%s", v);
            rc = 0;
            break;
        }
    fclose(f);
    return rc;
}

/* The cores this test may use. */
static int allowed_cores(int *cores, int max)
{
    cpu_set_t set;
    cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < max; c++)
        if (CPU_ISSET(c, &set))
            cores[n++] = c;
    return n;
}

/* The live children of ppid and the --device each was given ("" if none). */
typedef struct {
    pid_t pid;
    char device[32];
} kid_t;

static int children(pid_t ppid, kid_t *kids, int max)
{
    DIR *d = opendir("/proc");
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0)
            continue;
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t got = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[got] = 0;
        char *rp = strrchr(buf, ')'); /* comm may hold spaces */
        char state;
        int parent;
        if (!rp || sscanf(rp + 2, "%c %d", &state, &parent) != 2 || parent != ppid || state == 'Z')
            continue;
        kids[n].pid = pid;
        kids[n].device[0] = 0;
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
        if ((f = fopen(path, "r"))) {
            got = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[got] = 0;
            for (size_t i = 0; i < got; i += strlen(buf + i) + 1)
                if (!strcmp(buf + i, "--device") && i + 9 < got)
                    snprintf(kids[n].device, sizeof kids[n].device, "%s", buf + i + 9);
        }
        n++;
    }
    closedir(d);
    return n;
}

/* Waits until ppid has `want` children. Returns how many it has at the end. */
static int wait_children(pid_t ppid, kid_t *kids, int max, int want, int timeout_ms)
{
    int64_t until = zt_now_ms() + timeout_ms;
    int n;
    while ((n = children(ppid, kids, max)) != want && zt_now_ms() < until)
        zt_pause_ms(10);
    return n;
}

/* `zfleet workers --json` into out. */
static void workers_json(const zt_env_t *env, char *out, size_t len)
{
    int rc = zt_cli(env, out, len, "workers", "--json", NULL);
    cr_assert_eq(rc, 0, "zfleet workers --json exited %d", rc);
}

/* Waits until `zfleet workers --json` contains every string in a NULL-terminated list and
   none of the `absent` one (may be NULL). */
static bool wait_workers_json(const zt_env_t *env, const char *absent, int timeout_ms, ...)
{
    int64_t until = zt_now_ms() + timeout_ms;
    char out[16384];
    while (zt_now_ms() < until) {
        workers_json(env, out, sizeof out);
        bool ok = !absent || !strstr(out, absent);
        va_list ap;
        va_start(ap, timeout_ms);
        for (const char *s; ok && (s = va_arg(ap, const char *));)
            ok = strstr(out, s) != NULL;
        va_end(ap);
        if (ok)
            return true;
        zt_pause_ms(50);
    }
    cr_log_error("last workers list: %s", out);
    return false;
}

static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static pid_t start_fleet(const zt_env_t *env, const char *log, const char *extra)
{
    const char *args[] = {"--fleet",     "--broker", env->worker_ep,
                          "--heartbeat", HB,         extra ? "--module" : NULL,
                          extra,         NULL};
    return zt_spawn("worker/zfleet-worker", log, args);
}

static zf_event_t *run_job(zf_client_t *c, const char *fn, const char *data, int device,
                           uint32_t deadline_ms, int wait_ms)
{
    zf_submit_opts_t o = {.device = device, .deadline_ms = deadline_ms};
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, fn, data, strlen(data), &o, &id), 0, "%s", zf_client_error(c));
    zf_event_t *r = zf_client_wait(c, id, wait_ms);
    cr_assert_not_null(r, "no result for %s: %s", fn, zf_client_error(c));
    return r;
}

/* Waits until the job's handler has reported progress: it is in a worker's hands (a job
   merely sent to a worker that starts draining is given back, not run). */
static void wait_in_hand(zf_client_t *c, uint64_t id)
{
    int64_t until = zt_now_ms() + 10000;
    bool in_hand = false;
    while (!in_hand && zt_now_ms() < until) {
        zf_event_t *s = zf_client_get(c, id);
        in_hand = s && s->status == ZFLEET_RUNNING && s->progress > 0;
        zf_event_destroy(&s);
        if (!in_hand)
            zt_pause_ms(20);
    }
    cr_assert(in_hand, "the job did not start");
}

/* ------------------------------------------------------------------ one worker */

Test(devices, cpu1_worker_is_pinned_to_exactly_core_1)
{
    int cores[CPU_SETSIZE];
    int n = allowed_cores(cores, CPU_SETSIZE), has1 = 0;
    for (int i = 0; i < n; i++)
        has1 |= cores[i] == 1;
    if (!has1)
        cr_skip("core 1 is not available to this test");
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    pid_t w = zt_worker(&env, 200, "--device", "cpu:1", NULL);
    cr_assert(wait_workers_json(&env, NULL, 10000, "\"device\":\"cpu:1\"", "\"kind\":\"cpu\"",
                                NULL));
    char path[96], val[128];
    snprintf(path, sizeof path, "/proc/%d/status", (int)w);
    cr_assert_eq(status_field(path, "Cpus_allowed_list", val, sizeof val), 0);
    cr_assert_str_eq(val, "1", "Cpus_allowed_list is '%s'", val);
    /* every thread (handler, ZeroMQ I/O) inherited the pinning */
    snprintf(path, sizeof path, "/proc/%d/task", (int)w);
    DIR *d = opendir(path);
    cr_assert_not_null(d);
    int threads = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char tp[384];
        snprintf(tp, sizeof tp, "/proc/%d/task/%s/status", (int)w, e->d_name);
        if (status_field(tp, "Cpus_allowed_list", val, sizeof val) == 0) {
            cr_assert_str_eq(val, "1", "thread %s: Cpus_allowed_list is '%s'", e->d_name, val);
            threads++;
        }
    }
    closedir(d);
    cr_assert_geq(threads, 2, "I/O and handler threads");
    /* and it serves, reporting its device */
    zf_client_t *c = zt_client(&env);
    zf_event_t *r = run_job(c, "echo", "x", 0, 0, 10000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    cr_assert_str_eq(r->device, "cpu:1");
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

Test(devices, missing_devices_fail_at_start_with_one_clear_line)
{
    char why[256] = "";
    int ngpu = zf_gpu_count(why, sizeof why);
    zt_env_t env;
    zt_env_init(&env);
    struct {
        const char *dev, *says;
    } cases[] = {{"gpu:0", "gpu:0"},
                 {"gpu:4000", "gpu:4000"},
                 {"cpu:999", "cpu:999"},
                 {"tpu:0", "expected cpu"}};
    for (size_t i = ngpu > 0 ? 1 : 0; i < sizeof cases / sizeof *cases; i++) {
        char log[160];
        snprintf(log, sizeof log, "%s/w%zu.log", env.dir, i);
        const char *args[] = {"--broker", env.worker_ep, "--device", cases[i].dev, NULL};
        pid_t w = zt_spawn("worker/zfleet-worker", log, args);
        int st = zt_wait_exit(w, 10000);
        cr_assert_neq(st, -1, "%s: the worker did not exit", cases[i].dev);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s: exit status %d", cases[i].dev, st);
        FILE *f = fopen(log, "r");
        cr_assert_not_null(f);
        char line[1024], first[1024] = "";
        int lines = 0;
        while (fgets(line, sizeof line, f))
            if (lines++ == 0)
                snprintf(first, sizeof first, "%s", line);
        fclose(f);
        cr_assert_eq(lines, 1, "%s: expected one line, got %d", cases[i].dev, lines);
        cr_assert(strstr(first, cases[i].says) && strstr(first, "error"), "%s: unclear message: %s",
                  cases[i].dev, first);
    }
    if (ngpu == 0) {
        /* the fleet refuses a GPU list it cannot serve */
        char log[160];
        snprintf(log, sizeof log, "%s/fleet.log", env.dir);
        const char *args[] = {"--fleet", "--broker", env.worker_ep, "--gpus", "0", NULL};
        pid_t f = zt_spawn("worker/zfleet-worker", log, args);
        int st = zt_wait_exit(f, 10000);
        cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1, "fleet --gpus 0: %d", st);
        cr_assert(file_has(log, "--gpus 0"), "the fleet says why");
    }
}

/* ------------------------------------------------------------------ routing by kind */

Test(devices, gpu_job_with_only_cpu_workers_waits_and_expires_at_its_deadline)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 200, .workers = 1, .worker_args = ZT_ARGS("--device", "cpu")};
    zf_client_t *c = zt_start(&env, &up);
    zf_submit_opts_t gpu = {.device = 2, .deadline_ms = 1500};
    uint64_t id;
    int64_t t0 = zt_now_ms();
    cr_assert_eq(zf_client_submit(c, "echo", "g", 1, &gpu, &id), 0, "%s", zf_client_error(c));
    /* meanwhile the CPU worker serves CPU and any jobs: it is there, it just may not take it */
    zf_event_t *r = run_job(c, "echo", "c", 1, 0, 10000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    zf_event_destroy(&r);
    r = run_job(c, "echo", "a", 0, 0, 10000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    zf_event_destroy(&r);
    zf_event_t *s = zf_client_get(c, id);
    cr_assert_not_null(s);
    cr_assert_eq(s->status, ZFLEET_QUEUED, "the GPU job waits: %s", zfleet_state_name(s->status));
    zf_event_destroy(&s);
    r = zf_client_wait(c, id, 15000);
    int64_t took = zt_now_ms() - t0;
    cr_assert_not_null(r, "%s", zf_client_error(c));
    cr_assert_eq(r->status, ZFLEET_EXPIRED, "state %s", zfleet_state_name(r->status));
    cr_assert_eq(r->attempts, 0, "never dispatched");
    cr_assert_geq(took, 1400, "expired after %lld ms, before its deadline", (long long)took);
    cr_assert_leq(took, 6000, "expired %lld ms after submission", (long long)took);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

Test(devices, cpu_job_never_goes_to_a_gpu_worker)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    /* --fake-gpu (tests only) registers a GPU worker without CUDA */
    zt_worker(&env, 200, "--device", "gpu:0", "--fake-gpu", "--name", "fakegpu", NULL);
    cr_assert(wait_workers_json(&env, NULL, 10000, "\"kind\":\"gpu\"", "\"device\":\"gpu:0\"",
                                NULL));
    zf_client_t *c = zt_client(&env);
    /* with only the GPU worker, a CPU job waits until its deadline */
    zf_event_t *r = run_job(c, "echo", "cpu only", 1, 1000, 15000);
    cr_assert_eq(r->status, ZFLEET_EXPIRED, "state %s on %s", zfleet_state_name(r->status),
                 r->worker);
    zf_event_destroy(&r);
    r = run_job(c, "echo", "gpu", 2, 0, 10000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    cr_assert_str_eq(r->device, "gpu:0");
    cr_assert_str_eq(r->worker, "fakegpu");
    zf_event_destroy(&r);
    /* with a CPU worker too, every CPU job lands there, even while the GPU one is idle */
    zt_worker(&env, 200, "--device", "cpu", "--name", "cpuworker", NULL);
    cr_assert(zt_wait_workers(&env, 2, 10000));
    for (int i = 0; i < 8; i++) {
        r = run_job(c, "echo", "cpu", 1, 0, 10000);
        cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
        cr_assert_str_eq(r->worker, "cpuworker", "CPU job %d ran on %s (%s)", i, r->worker,
                         r->device);
        zf_event_destroy(&r);
    }
    /* the fake GPU worker runs sobel on its CPU path */
    const char img[] = "P5\n3 1\n255\n\x00\x00\xff";
    zf_submit_opts_t o = {.device = 2};
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "sobel", img, sizeof img - 1, &o, &id), 0);
    r = zf_client_wait(c, id, 10000);
    cr_assert_not_null(r);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s", r->text);
    cr_assert_str_eq(r->worker, "fakegpu");
    const char want[] = "P5\n3 1\n255\n\x00\xff\xff";
    cr_assert_eq(r->output_len, sizeof want - 1);
    cr_assert(memcmp(r->output, want, sizeof want - 1) == 0);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* ------------------------------------------------------------------ the fleet */

Test(devices, fleet_device_lists_parse_against_the_available_devices)
{
    const int avail[] = {0, 1, 2, 3, 6};
    int out[16];
    cr_assert_eq(zf_fleet_parse_list("all", avail, 5, out, 16), 5);
    cr_assert_eq(out[4], 6);
    cr_assert_eq(zf_fleet_parse_list("none", avail, 5, out, 16), 0);
    cr_assert_eq(zf_fleet_parse_list("0,2-3,6", avail, 5, out, 16), 4);
    cr_assert(out[0] == 0 && out[1] == 2 && out[2] == 3 && out[3] == 6);
    cr_assert_eq(zf_fleet_parse_list("all", avail, 0, out, 16), 0, "all of nothing");
    static const char *bad[] = {"", "4", "3-6", "1,1", "0-1,1", "x", "1,", "-1", "2-1", "1;2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(zf_fleet_parse_list(bad[i], avail, 5, out, 16), -1, "'%s' accepted", bad[i]);
}

Test(devices, fleet_runs_one_worker_per_core_and_restarts_a_killed_one)
{
    int cores[CPU_SETSIZE];
    int ncores = allowed_cores(cores, CPU_SETSIZE);
    if (ncores > 16)
        ncores = 16;
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    char log[160];
    snprintf(log, sizeof log, "%s/fleet.log", env.dir);
    pid_t fleet = start_fleet(&env, log, NULL);
    cr_assert(zt_wait_workers(&env, ncores, 20000), "expected %d workers, have %d", ncores,
              zt_count_workers(&env));
    char out[16384];
    workers_json(&env, out, sizeof out);
    for (int i = 0; i < ncores; i++) {
        char want[64];
        snprintf(want, sizeof want, "\"device\":\"cpu:%d\"", cores[i]);
        cr_assert(strstr(out, want), "no worker on cpu:%d: %s", cores[i], out);
    }
    kid_t kids[64];
    cr_assert_eq(wait_children(fleet, kids, 64, ncores, 5000), ncores);
    /* each worker is pinned to the core it reports */
    for (int i = 0; i < ncores; i++) {
        char path[64], val[64];
        snprintf(path, sizeof path, "/proc/%d/status", (int)kids[i].pid);
        cr_assert_eq(status_field(path, "Cpus_allowed_list", val, sizeof val), 0);
        cr_assert_str_eq(val, kids[i].device + 4, "%s is pinned to %s", kids[i].device, val);
    }
    cr_assert(file_has(log, "worker started"), "the log says which device each worker has");

    /* SIGKILL one: the fleet starts a new one within its first backoff (200 ms) */
    kid_t victim = kids[0];
    kill(victim.pid, SIGKILL);
    int64_t t0 = zt_now_ms();
    pid_t fresh = 0;
    while (!fresh && zt_now_ms() - t0 < 5000) {
        int n = children(fleet, kids, 64);
        for (int i = 0; i < n; i++)
            if (!strcmp(kids[i].device, victim.device) && kids[i].pid != victim.pid)
                fresh = kids[i].pid;
        if (!fresh)
            zt_pause_ms(5);
    }
    int64_t back = zt_now_ms() - t0;
    cr_assert(fresh, "%s was not restarted", victim.device);
    /* backoff 200 ms, plus scheduling slack on a busy 2-core machine */
    cr_assert_leq(back, 2000, "%s restarted after %lld ms", victim.device, (long long)back);
    cr_assert(file_has(log, "killed by signal 9"), "the log says why the worker left");
    /* the new process registers, the dead one is forgotten, and the new one serves jobs */
    char fresh_name[64], dead_name[64];
    snprintf(fresh_name, sizeof fresh_name, ":%d:%s\"", (int)fresh, victim.device);
    snprintf(dead_name, sizeof dead_name, ":%d:%s\"", (int)victim.pid, victim.device);
    cr_assert(wait_workers_json(&env, dead_name, 10000, fresh_name, NULL),
              "the restarted worker is not listed");
    cr_assert(zt_wait_workers(&env, ncores, 5000));
    /* one 400 ms job per worker at once: idle workers are served first, so each gets one.
       A worker that missed a heartbeat on a loaded machine is briefly not offered work
       (suspect), so up to three rounds: the claim is that the new process serves jobs. */
    zf_client_t *c = zt_client(&env);
    char mine[40];
    snprintf(mine, sizeof mine, ":%d:", (int)fresh);
    bool fresh_served = false;
    for (int round = 0; round < 3 && !fresh_served; round++) {
        if (round)
            cr_log_warn("round %d: the restarted worker served none yet", round);
        uint64_t ids[16];
        for (int i = 0; i < ncores; i++)
            cr_assert_eq(zf_client_submit(c, "spin", "400", 3, NULL, &ids[i]), 0);
        for (int i = 0; i < ncores; i++) {
            zf_event_t *r = zf_client_wait(c, ids[i], 15000);
            cr_assert_not_null(r, "%s", zf_client_error(c));
            cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s", r->text);
            fresh_served |= strstr(r->worker, mine) != NULL;
            zf_event_destroy(&r);
        }
    }
    if (!fresh_served) {
        workers_json(&env, out, sizeof out);
        cr_log_error("workers: %s", out);
    }
    cr_assert(fresh_served, "the restarted worker served no job");
    zf_client_destroy(&c);
    kill(fleet, SIGTERM);
    cr_assert_neq(zt_wait_exit(fleet, 15000), -1);
}

Test(devices, fleet_sigterm_finishes_the_running_job_then_every_worker_leaves)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    char log[160];
    snprintf(log, sizeof log, "%s/fleet.log", env.dir);
    int cores[CPU_SETSIZE];
    int ncores = allowed_cores(cores, CPU_SETSIZE);
    if (ncores > 16)
        ncores = 16;
    pid_t fleet = start_fleet(&env, log, NULL);
    cr_assert(zt_wait_workers(&env, ncores, 20000));
    kid_t kids[64];
    int nk = wait_children(fleet, kids, 64, ncores, 5000);
    cr_assert_eq(nk, ncores);

    zf_client_t *c = zt_client(&env);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "2000", 4, NULL, &id), 0);
    wait_in_hand(c, id);
    zt_pause_ms(300); /* well inside the 2 s job */
    kill(fleet, SIGTERM);
    int64_t t_term = zt_now_ms();

    /* the job in hand completes and is delivered */
    zf_event_t *r = zf_client_wait(c, id, 20000);
    cr_assert_not_null(r, "%s", zf_client_error(c));
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "state %s: %s", zfleet_state_name(r->status),
                 r->text);
    cr_assert_eq(r->attempts, 1, "it was not re-run elsewhere");
    cr_assert_geq(r->duration_us, 1900000);
    cr_assert_eq(r->output_len, 4);
    zf_event_destroy(&r);

    /* then the fleet exits 0 and no worker is left, in the broker or on the machine */
    int fst = zt_wait_exit(fleet, 15000);
    cr_assert_neq(fst, -1, "the fleet did not exit");
    cr_assert(WIFEXITED(fst) && WEXITSTATUS(fst) == 0, "fleet exit status %d", fst);
    for (int i = 0; i < nk; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d", (int)kids[i].pid);
        cr_assert(access(path, F_OK) != 0, "worker %d (%s) still exists", (int)kids[i].pid,
                  kids[i].device);
    }
    /* they said BYE: gone from the broker long before a heartbeat expiry would remove them */
    cr_assert(zt_wait_workers(&env, 0, 5000), "workers still registered");
    cr_assert(file_has(log, "left cleanly"), "the log says why each worker left");
    cr_log_info("drain took %lld ms", (long long)(zt_now_ms() - t_term));
    /* a new job now waits: nobody serves */
    cr_assert_eq(zt_count_workers(&env), 0);
    zf_client_destroy(&c);
}

Test(devices, fleet_second_sigterm_ends_workers_at_once, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    char log[160];
    snprintf(log, sizeof log, "%s/fleet.log", env.dir);
    const char *args[] = {"--fleet", "--broker", env.worker_ep, "--heartbeat",
                          HB,        "--cpus",   "0",           NULL};
    pid_t fleet = zt_spawn("worker/zfleet-worker", log, args);
    cr_assert(zt_wait_workers(&env, 1, 20000));
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "20000", 5, NULL, &id), 0);
    wait_in_hand(c, id);
    kill(fleet, SIGTERM);
    zt_pause_ms(300);
    int ignored;
    cr_assert_eq(waitpid(fleet, &ignored, WNOHANG), 0, "still draining the 20 s job");
    int64_t t0 = zt_now_ms();
    kill(fleet, SIGTERM);
    int fst = zt_wait_exit(fleet, 10000);
    cr_assert_neq(fst, -1, "the second SIGTERM did not end the fleet");
    cr_assert_lt(zt_now_ms() - t0, 5000);
    cr_assert(file_has(log, "second stop signal"));
    /* the unfinished job goes back to the queue for another worker */
    zf_event_t *s = zf_client_get(c, id);
    cr_assert_not_null(s);
    cr_assert_eq(s->status, ZFLEET_QUEUED, "state %s", zfleet_state_name(s->status));
    zf_event_destroy(&s);
    zf_client_destroy(&c);
}

Test(devices, fleet_gives_up_a_device_that_crashes_in_a_tight_loop, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    char log[160];
    snprintf(log, sizeof log, "%s/fleet.log", env.dir);
    /* every worker refuses to start (no such module); short backoffs keep the test quick */
    const char *args[] = {"--fleet",
                          "--broker",
                          env.worker_ep,
                          "--cpus",
                          "0",
                          "--module",
                          "/nonexistent/zf_missing.so",
                          "--restart-backoff",
                          "20:1000",
                          "--crash-limit",
                          "4",
                          NULL};
    pid_t fleet = zt_spawn("worker/zfleet-worker", log, args);
    int st = zt_wait_exit(fleet, 30000);
    cr_assert_neq(st, -1, "the fleet kept restarting a worker that cannot start");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d", st);
    cr_assert(file_has(log, "cpu:0: worker"));
    cr_assert(file_has(log, "given up"), "the log says the device was given up");
    cr_assert(file_has(log, "restarting in 20 ms") && file_has(log, "restarting in 40 ms") &&
                  file_has(log, "restarting in 80 ms"),
              "the backoff doubles");
    cr_assert(file_has(log, "exited 4 times"));
}

/* ------------------------------------------------------------------ CUDA_VISIBLE_DEVICES */

/* The value of `name` in the environment process pid started with (/proc/PID/environ) into
   out. 1 when set, 0 when absent. */
static int environ_value(pid_t pid, const char *name, char *out, size_t len)
{
    char path[64], buf[65536];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot read %s", path);
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = 0;
    size_t nl = strlen(name);
    for (size_t i = 0; i < got; i += strlen(buf + i) + 1)
        if (!strncmp(buf + i, name, nl) && buf[i + nl] == '=') {
            snprintf(out, len, "%s", buf + i + nl + 1);
            return 1;
        }
    return 0;
}

/* Runs a testmod function on the kind of device given (0 any, 1 cpu, 2 gpu); returns its
   output in out and the device label it ran on in dev. */
static void ask(zf_client_t *c, const char *fn, const char *arg, int device, char *out, size_t len,
                char *dev, size_t devlen)
{
    zf_event_t *r = run_job(c, fn, arg, device, 0, 10000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s %s: %s", fn, arg, r->text);
    snprintf(out, len, "%.*s", (int)r->output_len, (const char *)r->output);
    snprintf(dev, devlen, "%s", r->device);
    zf_event_destroy(&r);
}

/* What the worker's handlers see: CUDA_VISIBLE_DEVICES narrowed to their one GPU (or empty
   on a CPU worker), the fleet's mark gone, and the device numbers. */
static void assert_handler_view(zf_client_t *c, int device, const char *label, const char *cuda,
                                const char *index)
{
    char out[256], dev[64], want[128];
    ask(c, "env", "CUDA_VISIBLE_DEVICES", device, out, sizeof out, dev, sizeof dev);
    cr_assert_str_eq(dev, label);
    snprintf(want, sizeof want, "set:%s", cuda);
    cr_assert_str_eq(out, want, "%s: CUDA_VISIBLE_DEVICES as its handlers see it", label);
    ask(c, "env", "ZFLEET_GPU_BOUND", device, out, sizeof out, dev, sizeof dev);
    cr_assert_str_eq(out, "unset", "%s: the fleet's mark is not passed on", label);
    ask(c, "device", "", device, out, sizeof out, dev, sizeof dev);
    snprintf(want, sizeof want, "index=%s cuda_index=%d label=%s", index, device == 2 ? 0 : -1,
             label);
    cr_assert_str_eq(out, want);
}

/* Starts a worker with args, expects exit 1 and one error line that contains says. */
static void assert_refused(const zt_env_t *env, const char *name, const char *const *args,
                           const char *says)
{
    char log[160], text[2048];
    snprintf(log, sizeof log, "%s/%s.log", env->dir, name);
    pid_t w = zt_spawn("worker/zfleet-worker", log, args);
    int st = zt_wait_exit(w, 10000);
    cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s: exit status %d", name, st);
    zt_read_file(log, text, sizeof text);
    cr_assert(strstr(text, says) && strstr(text, "error"), "%s: unclear: %s", name, text);
    cr_assert_eq(strchr(text, '\n'), text + strlen(text) - 1, "%s: not one line: %s", name, text);
}

Test(devices, gpu_worker_started_by_hand_sees_only_its_gpu_as_cuda_device_0)
{
    unsetenv("CUDA_VISIBLE_DEVICES");
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    const char *mod = zt_path("tests/zf_testmod.so");
    zt_worker(&env, 200, "--device", "gpu:1", "--fake-gpu", "--module", mod, NULL);
    zt_worker(&env, 200, "--device", "cpu", "--module", mod, NULL);
    /* the broker and `zfleet workers` show the GPU's own number, not CUDA's 0 */
    cr_assert(wait_workers_json(&env, NULL, 10000, "\"device\":\"gpu:1\"", "\"index\":1",
                                "\"kind\":\"cpu\"", NULL));
    zf_client_t *c = zt_client(&env);
    assert_handler_view(c, 2, "gpu:1", "1", "1");
    /* a CPU worker hides every GPU, so no framework makes a context on GPU 0 */
    assert_handler_view(c, 1, "cpu", "", "-1");
    zf_client_destroy(&c);
    zt_kill_all();
}

Test(devices, gpu_n_counts_within_the_users_own_cuda_visible_devices)
{
    /* the user gave this shell GPUs 7 and 5 (in that order): gpu:1 is GPU 5 */
    setenv("CUDA_VISIBLE_DEVICES", "7, 5", 1);
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    const char *mod = zt_path("tests/zf_testmod.so");
    zt_worker(&env, 200, "--device", "gpu:1", "--fake-gpu", "--module", mod, NULL);
    zt_worker(&env, 200, "--device", "cpu", "--module", mod, NULL);
    cr_assert(zt_wait_workers(&env, 2, 10000));
    zf_client_t *c = zt_client(&env);
    assert_handler_view(c, 2, "gpu:1", "5", "1");
    assert_handler_view(c, 1, "cpu", "", "-1");
    zf_client_destroy(&c);
    /* an index past the user's list is refused with one line that names the list */
    const char *past[] = {"--broker", env.worker_ep, "--device", "gpu:2", "--fake-gpu", NULL};
    assert_refused(&env, "past", past, "CUDA_VISIBLE_DEVICES=\"7, 5\" makes 2 GPU(s) visible");
    /* CUDA ignores a list from its first invalid entry on, and so does the mapping */
    setenv("CUDA_VISIBLE_DEVICES", "GPU-4f2a,-1,3", 1);
    const char *cut[] = {"--broker", env.worker_ep, "--device", "gpu:1", "--fake-gpu", NULL};
    assert_refused(&env, "cut", cut, "makes 1 GPU(s) visible");
    zt_kill_all();
}

/* Starts a fleet of fake GPUs (--gpus) and one CPU worker with testmod; waits for all. */
static pid_t start_gpu_fleet(const zt_env_t *env, const char *gpus, int nworkers, int *core)
{
    int cores[CPU_SETSIZE];
    cr_assert_gt(allowed_cores(cores, CPU_SETSIZE), 0);
    *core = cores[0];
    static char cpu[16], log[160];
    snprintf(cpu, sizeof cpu, "%d", cores[0]);
    snprintf(log, sizeof log, "%s/fleet.log", env->dir);
    const char *args[] = {"--fleet", "--broker",   env->worker_ep, "--heartbeat",
                          HB,        "--fake-gpu", "--gpus",       gpus,
                          "--cpus",  cpu,          "--module",     zt_path("tests/zf_testmod.so"),
                          NULL};
    pid_t fleet = zt_spawn("worker/zfleet-worker", log, args);
    cr_assert(zt_wait_workers(env, nworkers, 20000), "expected %d workers, have %d", nworkers,
              zt_count_workers(env));
    return fleet;
}

/* Checks each fleet child's starting environment: GPU workers CUDA_VISIBLE_DEVICES=want[i]
   for the i-th GPU of labels, with the mark; the CPU worker an empty one, without it. */
static void assert_fleet_environ(pid_t fleet, int nkids, const char *const *labels,
                                 const char *const *want)
{
    kid_t kids[8];
    cr_assert_eq(wait_children(fleet, kids, 8, nkids, 5000), nkids);
    int checked = 0;
    for (int i = 0; i < nkids; i++) {
        char cuda[256] = "", mark[64] = "";
        int has = environ_value(kids[i].pid, "CUDA_VISIBLE_DEVICES", cuda, sizeof cuda);
        int marked = environ_value(kids[i].pid, "ZFLEET_GPU_BOUND", mark, sizeof mark);
        cr_assert(has, "%s (pid %d) starts without CUDA_VISIBLE_DEVICES", kids[i].device,
                  (int)kids[i].pid);
        if (!strncmp(kids[i].device, "cpu:", 4)) {
            cr_assert_str_eq(cuda, "", "%s: CUDA_VISIBLE_DEVICES=%s", kids[i].device, cuda);
            cr_assert_not(marked, "%s carries the GPU mark", kids[i].device);
            checked++;
            continue;
        }
        for (int g = 0; labels[g]; g++)
            if (!strcmp(kids[i].device, labels[g])) {
                cr_assert_str_eq(cuda, want[g], "%s: CUDA_VISIBLE_DEVICES", labels[g]);
                cr_assert(marked, "%s: no mark", labels[g]);
                cr_assert_str_eq(mark, labels[g]);
                checked++;
            }
    }
    cr_assert_eq(checked, nkids, "a child with an unexpected device");
}

Test(devices, fleet_starts_each_gpu_worker_with_cuda_visible_devices_of_its_gpu)
{
    unsetenv("CUDA_VISIBLE_DEVICES");
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    int core;
    pid_t fleet = start_gpu_fleet(&env, "0,3", 3, &core);
    static const char *labels[] = {"gpu:0", "gpu:3", NULL}, *want[] = {"0", "3"};
    assert_fleet_environ(fleet, 3, labels, want);
    cr_assert(wait_workers_json(&env, NULL, 5000, "\"device\":\"gpu:3\"", "\"index\":3",
                                "\"device\":\"gpu:0\"", NULL));
    /* each GPU worker serves, with its handlers seeing the fleet's narrowing as it was */
    zf_client_t *c = zt_client(&env);
    for (int i = 0; i < 4; i++) {
        char out[256], dev[64];
        ask(c, "env", "CUDA_VISIBLE_DEVICES", 2, out, sizeof out, dev, sizeof dev);
        cr_assert(!strcmp(dev, "gpu:0") ? !strcmp(out, "set:0") : !strcmp(out, "set:3"),
                  "%s sees CUDA_VISIBLE_DEVICES %s", dev, out);
    }
    char cpu[16];
    snprintf(cpu, sizeof cpu, "cpu:%d", core);
    char idx[16];
    snprintf(idx, sizeof idx, "%d", core);
    assert_handler_view(c, 1, cpu, "", idx);
    zf_client_destroy(&c);
    kill(fleet, SIGTERM);
    cr_assert_neq(zt_wait_exit(fleet, 15000), -1);
    zt_kill_all();
}

Test(devices, fleet_maps_its_gpus_through_the_users_cuda_visible_devices)
{
    /* the fleet was given GPUs 7 and 5: it has two, gpu:0 and gpu:1, which are 7 and 5 */
    setenv("CUDA_VISIBLE_DEVICES", "7,5", 1);
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    int core;
    pid_t fleet = start_gpu_fleet(&env, "0,1", 3, &core);
    static const char *labels[] = {"gpu:0", "gpu:1", NULL}, *want[] = {"7", "5"};
    assert_fleet_environ(fleet, 3, labels, want);
    /* gpu:1 kept the fleet's "5" (it did not map 1 through a one-entry list and fail) */
    cr_assert(wait_workers_json(&env, NULL, 5000, "\"device\":\"gpu:1\"", "\"index\":1", NULL));
    kill(fleet, SIGTERM);
    cr_assert_neq(zt_wait_exit(fleet, 15000), -1);
    /* a GPU the list does not name is refused at start, as any unavailable device is */
    const char *past[] = {"--fleet", "--broker", env.worker_ep, "--fake-gpu", "--gpus", "2", NULL};
    assert_refused(&env, "fleet-past", past, "--gpus 2");
    /* and fake GPUs must be named */
    const char *all[] = {"--fleet", "--broker", env.worker_ep, "--fake-gpu", NULL};
    assert_refused(&env, "fleet-all", all, "--gpus LIST");
    zt_kill_all();
}
