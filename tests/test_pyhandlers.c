/*  Python handler modules (worker/zf_python.h, docs/PYTHON.md) with real processes: the
    handlers are in tests/py/handlers.py, run by the embedded interpreter of a real
    zfleet-worker, submitted to by a real client through a real broker. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

#ifndef ZT_PY_DIR
#error "ZT_PY_DIR (tests/py in the source tree) comes from tests/meson.build"
#endif

static void teardown(void)
{
    zt_kill_all();
}

TestSuite(pyhandlers, .fini = teardown);

static const char *handlers(void)
{
    return ZT_PY_DIR "/handlers.py";
}

/* Sets ASAN_OPTIONS and UBSAN_OPTIONS so a sanitizer's handler leaves a fatal signal alone
   (the process must die by it, as without a sanitizer); restore_sanitizers undoes it. */
static char *saved_san[2];
static const char *const san_vars[2] = {"ASAN_OPTIONS", "UBSAN_OPTIONS"};

static void sanitizers_let_signals_through(void)
{
    for (int i = 0; i < 2; i++) {
        const char *v = getenv(san_vars[i]);
        saved_san[i] = v ? strdup(v) : NULL;
        char opts[512];
        snprintf(opts, sizeof opts, "%s%shandle_segv=0:handle_abort=0", v ? v : "",
                 v && *v ? ":" : "");
        setenv(san_vars[i], opts, 1);
    }
}

static void restore_sanitizers(void)
{
    for (int i = 0; i < 2; i++) {
        if (saved_san[i])
            setenv(san_vars[i], saved_san[i], 1);
        else
            unsetenv(san_vars[i]);
        free(saved_san[i]);
        saved_san[i] = NULL;
    }
}

/* A broker and one worker serving handlers.py (plus extra args), both heartbeating at hb. */
static pid_t start(zt_env_t *env, int hb, const char *extra)
{
    zt_env_init(env);
    zt_broker(env, hb, NULL);
    pid_t w = extra ? zt_worker(env, hb, "--module", handlers(), extra, NULL)
                    : zt_worker(env, hb, "--module", handlers(), NULL);
    cr_assert(zt_wait_workers(env, 1, 15000), "the Python worker did not register (see %s)",
              env->dir);
    return w;
}

/* Submits and waits for the result (asserted to come). */
static zf_event_t *run(zf_client_t *c, const char *fn, const void *data, size_t len,
                       const zf_submit_opts_t *o, int timeout_ms)
{
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, fn, data, len, o, &id), 0, "%s", zf_client_error(c));
    zf_event_t *r = zf_client_wait(c, id, timeout_ms);
    cr_assert_not_null(r, "no result for %s: %s", fn, zf_client_error(c));
    return r;
}

static void assert_output(const zf_event_t *r, const char *want)
{
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s: %s %s", r->function,
                 zfleet_state_name(r->status), r->text);
    cr_assert(r->output_len == strlen(want) && !memcmp(r->output, want, r->output_len),
              "%s: output '%.*s', not '%s'", r->function, (int)r->output_len,
              (const char *)r->output, want);
}

static void read_log(const zt_env_t *env, const char *name, char *buf, size_t len)
{
    char path[200];
    snprintf(path, sizeof path, "%s/%s", env->dir, name);
    zt_read_file(path, buf, len);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* A 1 MiB payload reaches the handler as a read-only memoryview and comes back intact
   (returned as it is: a buffer); the job object carries id, attempt, function, device. */
Test(pyhandlers, one_mib_round_trip_through_a_memoryview, .timeout = 60)
{
    zt_env_t env;
    start(&env, 200, NULL);
    zf_client_t *c = zt_client(&env);
    size_t n = 1 << 20;
    unsigned char *p = malloc(n);
    zt_pattern(p, n, 11);
    zf_event_t *r = run(c, "py_roundtrip", p, n, NULL, 20000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s", r->text);
    cr_assert_eq(r->output_len, n);
    cr_assert_eq(zt_pattern_mismatch(r->output, n, 11), n, "the output differs from the input");
    zf_event_destroy(&r);
    free(p);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "py_info", "", 0, NULL, &id), 0);
    r = zf_client_wait(c, id, 10000);
    cr_assert_not_null(r);
    char want[256];
    snprintf(want, sizeof want, "%llu 1 py_info cpu -1 -1 cpu 1 ", (unsigned long long)id);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s", r->text);
    cr_assert(r->output_len > strlen(want) && !memcmp(r->output, want, strlen(want)),
              "info '%.*s', wanted '%s...'", (int)r->output_len, (const char *)r->output, want);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* An exception fails the job with its type, message and the traceback's last lines; the
   same worker process serves the next job. */
Test(pyhandlers, exception_fails_the_job_and_the_worker_serves_on, .timeout = 60)
{
    zt_env_t env;
    pid_t w = start(&env, 200, NULL);
    zf_client_t *c = zt_client(&env);
    zf_event_t *r = run(c, "py_boom", "xyz", 3, NULL, 10000);
    cr_assert_eq(r->status, ZFLEET_FAILED, "%s", zfleet_state_name(r->status));
    cr_assert_eq(r->attempts, 1);
    cr_assert(!strncmp(r->text, "ValueError: bad things: xyz\n", 28), "error '%s'", r->text);
    cr_assert(strstr(r->text, "Traceback") && strstr(r->text, "handlers.py\", line") &&
                  strstr(r->text, "in boom") && strstr(r->text, "raise ValueError"),
              "no traceback tail in '%s'", r->text);
    zf_event_destroy(&r);
    r = run(c, "py_inits", "", 0, NULL, 10000);
    char want[64];
    snprintf(want, sizeof want, "%d:1", (int)w);
    assert_output(r, want);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* zfleet.Permanent ends the job at once, whatever its retries; a plain exception is retried. */
Test(pyhandlers, permanent_exception_is_not_retried, .timeout = 60)
{
    zt_env_t env;
    start(&env, 200, NULL);
    zf_client_t *c = zt_client(&env);
    zf_submit_opts_t o = {.retries = 3, .backoff_ms = 50};
    zf_event_t *r = run(c, "py_permanent", "xyz", 3, &o, 10000);
    cr_assert_eq(r->status, ZFLEET_FAILED, "%s", zfleet_state_name(r->status));
    cr_assert_eq(r->attempts, 1);
    cr_assert(strstr(r->text, "Permanent: bad input: xyz") && strstr(r->text, "(permanent"),
              "error '%s'", r->text);
    zf_event_destroy(&r);
    r = run(c, "py_boom", "xyz", 3, &o, 10000);
    cr_assert_eq(r->status, ZFLEET_FAILED);
    cr_assert_eq(r->attempts, 4, "a plain exception is retried 3 times, got %u", r->attempts);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* bytes, bytearray, str, None, a NumPy array (contiguous or strided) and a large buffer
   (sent without a copy) are outputs; an int fails the job with a message saying what is. */
Test(pyhandlers, return_values_become_outputs, .timeout = 60)
{
    zt_env_t env;
    start(&env, 200, NULL);
    zf_client_t *c = zt_client(&env);
    const char *kinds[] = {"bytes", "bytearray", "str", "numpy", "strided"};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        zf_event_t *r = run(c, "py_types", kinds[i], strlen(kinds[i]), NULL, 10000);
        assert_output(r, "abc");
        zf_event_destroy(&r);
    }
    zf_event_t *r = run(c, "py_types", "none", 4, NULL, 10000);
    assert_output(r, "");
    zf_event_destroy(&r);
    r = run(c, "py_types", "big", 3, NULL, 10000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s", r->text);
    cr_assert_eq(r->output_len, 256 * 1024);
    for (size_t i = 0; i < r->output_len; i++)
        cr_assert_eq(((const unsigned char *)r->output)[i], i % 256, "byte %zu", i);
    zf_event_destroy(&r);
    r = run(c, "py_types", "int", 3, NULL, 10000);
    cr_assert_eq(r->status, ZFLEET_FAILED);
    cr_assert(strstr(r->text, "py_types returned int") && strstr(r->text, "buffer protocol"),
              "'%s'", r->text);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* A job object kept past its call: its data is released (ValueError), progress() and
   cancelled refuse (RuntimeError); nothing reads freed memory and the worker serves on. */
Test(pyhandlers, a_job_used_after_its_call_fails_cleanly, .timeout = 60)
{
    zt_env_t env;
    start(&env, 200, NULL);
    zf_client_t *c = zt_client(&env);
    zf_event_t *r = run(c, "py_keep", "first", 5, NULL, 10000);
    assert_output(r, "kept");
    zf_event_destroy(&r);
    r = run(c, "py_keep", "second", 6, NULL, 10000);
    assert_output(r, "data: ValueError; progress: RuntimeError; cancelled: RuntimeError");
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* job.progress reaches the submitting client, fraction and text. */
Test(pyhandlers, progress_reaches_the_client, .timeout = 60)
{
    zt_env_t env;
    start(&env, 200, NULL);
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "py_progress", "", 0, NULL, &id), 0);
    bool seen = false, done = false;
    while (!done) {
        zf_event_t *e = zf_client_next(c, 10000);
        cr_assert_not_null(e, "%s", zf_client_error(c));
        if (e->type == ZF_EV_PROGRESS && e->id == id) {
            cr_assert_float_eq(e->progress, 0.5, 1e-6);
            cr_assert_str_eq(e->text, "half way");
            seen = true;
        }
        if (e->type == ZF_EV_RESULT) {
            assert_output(e, "done");
            done = true;
        }
        zf_event_destroy(&e);
    }
    cr_assert(seen, "no progress event reached the client");
    zf_client_destroy(&c);
}

/* A running Python job sees job.cancelled turn true and returns; it ends cancelled and the
   same process serves on. */
Test(pyhandlers, cancel_of_a_running_python_job, .timeout = 60)
{
    zt_env_t env;
    pid_t w = start(&env, 200, NULL);
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "py_wait_cancel", "", 0, NULL, &id), 0);
    cr_assert(zt_wait_running(c, id, 10000), "the job never ran");
    cr_assert_eq(zf_client_cancel(c, id), 0, "%s", zf_client_error(c));
    zf_event_t *r = zf_client_wait(c, id, 10000);
    cr_assert_not_null(r);
    cr_assert_eq(r->status, ZFLEET_CANCELLED, "%s", zfleet_state_name(r->status));
    zf_event_destroy(&r);
    r = run(c, "py_inits", "", 0, NULL, 10000);
    char want[64];
    snprintf(want, sizeof want, "%d:1", (int)w);
    assert_output(r, want);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* A Python job past its run timeout ends timed_out, and its worker exits 3, as for C. */
Test(pyhandlers, run_timeout_ends_the_attempt_and_the_worker, .timeout = 60)
{
    zt_env_t env;
    pid_t w = start(&env, 200, NULL);
    zf_client_t *c = zt_client(&env);
    zf_submit_opts_t o = {.timeout_ms = 500, .max_attempts = 1};
    zf_event_t *r = run(c, "py_spin", "20000", 5, &o, 20000);
    cr_assert_eq(r->status, ZFLEET_TIMED_OUT, "%s %s", zfleet_state_name(r->status), r->text);
    cr_assert(strstr(r->text, "run timeout of 500 ms"), "'%s'", r->text);
    zf_event_destroy(&r);
    int status = zt_wait_exit(w, 10000);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 3, "status %#x", status);
    zf_client_destroy(&c);
}

/* Five seconds of pure Python (the GIL never released by the handler) with heartbeats of
   200 ms x 3: the heartbeats live in the I/O thread, which never takes the GIL, so the job
   keeps its single attempt. */
Test(pyhandlers, five_seconds_of_pure_python_keep_their_single_attempt, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, "--liveness", "3", NULL);
    zt_worker(&env, 200, "--liveness", "3", "--module", handlers(), NULL);
    cr_assert(zt_wait_workers(&env, 1, 15000));
    zf_client_t *c = zt_client(&env);
    zf_event_t *r = run(c, "py_spin", "5000", 4, NULL, 30000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s %s", zfleet_state_name(r->status), r->text);
    cr_assert_eq(r->attempts, 1, "the worker was presumed dead during the job");
    cr_assert_geq(r->duration_us, 5000000);
    zf_event_destroy(&r);
    cr_assert_eq(zt_broker_counter(&env, "workers_lost"), 0);
    zf_client_destroy(&c);
}

/* ctypes.string_at(0) crashes the process, as a crashing C extension does: each attempt
   costs its worker, the supervisor reports signal 11, and the job ends lost after
   max_attempts; the fleet serves on. */
Test(pyhandlers, a_crash_in_a_c_extension_ends_lost_with_signal_11, .timeout = 120)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, "--liveness", "3", NULL);
    char log[200];
    snprintf(log, sizeof log, "%s/fleet.log", env.dir);
    const char *args[] = {"--fleet",  "--cpus",      "0",           "--gpus", "none",
                          "--broker", env.worker_ep, "--heartbeat", "200",    "--restart-backoff",
                          "20:200",   "--module",    handlers(),    NULL};
    sanitizers_let_signals_through();
    zt_spawn("worker/zfleet-worker", log, args);
    restore_sanitizers();
    cr_assert(zt_wait_workers(&env, 1, 15000));
    zf_client_t *c = zt_client(&env);
    zf_submit_opts_t o = {.max_attempts = 3};
    zf_event_t *r = run(c, "py_segv", "", 0, &o, 60000);
    cr_assert_eq(r->status, ZFLEET_LOST, "%s %s", zfleet_state_name(r->status), r->text);
    cr_assert_eq(r->attempts, 3);
    cr_assert(strstr(r->text, "killed by signal 11"), "causes: %s", r->text);
    zf_event_destroy(&r);
    char text[1 << 16];
    read_log(&env, "fleet.log", text, sizeof text);
    cr_assert(strstr(text, "handlers.py crashed in run() of function py_segv"), "%s", text);
    cr_assert(zt_wait_workers(&env, 1, 15000));
    r = run(c, "py_inits", "", 0, NULL, 15000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s", r->text);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* init runs once per worker process, however many jobs it serves. */
Test(pyhandlers, init_runs_once_per_worker_across_200_jobs, .timeout = 120)
{
    zt_env_t env;
    pid_t w = start(&env, 200, NULL);
    zf_client_t *c = zt_client(&env);
    char want[64];
    snprintf(want, sizeof want, "%d:1", (int)w);
    for (int i = 0; i < 200; i++) {
        zf_event_t *r = run(c, "py_inits", "", 0, NULL, 10000);
        assert_output(r, want);
        zf_event_destroy(&r);
    }
    char text[1 << 16];
    read_log(&env, "workers.log", text, sizeof text);
    const char *p = strstr(text, "handlers.py: init on cpu");
    cr_assert(p && !strstr(p + 1, "handlers.py: init on"), "init ran other than once:\n%s", text);
    zf_client_destroy(&c);
}

/* Between jobs the handler thread releases the GIL: a thread started by init keeps
   running while the worker is idle. */
Test(pyhandlers, model_threads_run_between_jobs, .timeout = 60)
{
    zt_env_t env;
    start(&env, 200, NULL);
    zf_client_t *c = zt_client(&env);
    zf_event_t *r = run(c, "py_ticks", "", 0, NULL, 10000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    long before = zt_output_long(r);
    zf_event_destroy(&r);
    zt_pause_ms(300);
    r = run(c, "py_ticks", "", 0, NULL, 10000);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED);
    long after = zt_output_long(r);
    zf_event_destroy(&r);
    cr_assert_gt(after, before, "the model's thread did not run while the worker was idle");
    zf_client_destroy(&c);
}

/* init raising: the worker exits 1 with the exception's type and message in one line; a
   fleet restarts it until the crash limit and then gives the device up. */
Test(pyhandlers, init_raising_ends_the_worker_and_the_fleet_gives_the_device_up, .timeout = 120)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    pid_t w = zt_worker(&env, 200, "--module", ZT_PY_DIR "/init_raises.py", NULL);
    int status = zt_wait_exit(w, 15000);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %#x", status);
    char text[1 << 16];
    read_log(&env, "workers.log", text, sizeof text);
    cr_assert(strstr(text, "zfleet-worker: error: module " ZT_PY_DIR "/init_raises.py refused "
                           "cpu: RuntimeError: no weights at /nonexistent/model.pt "
                           "(init_raises.py:3 in init)\n"),
              "%s", text);
    cr_assert_eq(count_lines(text), 1, "more than one line:\n%s", text);
    char log[200];
    snprintf(log, sizeof log, "%s/fleet.log", env.dir);
    const char *args[] = {
        "--fleet",  "--cpus",        "0",           "--gpus",   "none",
        "--broker", env.worker_ep,   "--heartbeat", "200",      "--restart-backoff",
        "20:100",   "--crash-limit", "3",           "--module", ZT_PY_DIR "/init_raises.py",
        NULL};
    pid_t f = zt_spawn("worker/zfleet-worker", log, args);
    status = zt_wait_exit(f, 60000);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1,
              "the fleet did not give up (status %#x)", status);
    zt_read_file(log, text, sizeof text);
    cr_assert(strstr(text, "cpu:0: worker") && strstr(text, "given up") &&
                  strstr(text, "RuntimeError: no weights"),
              "%s", text);
}

/* Modules that cannot be served: one clear line each, exit 1. */
Test(pyhandlers, bad_modules_are_refused_in_one_line, .timeout = 120)
{
    static const struct {
        const char *module, *want;
    } cases[] = {
        {ZT_PY_DIR "/nonexistent.py", "zfleet-worker: error: cannot load module " ZT_PY_DIR
                                      "/nonexistent.py: No such file or directory\n"},
        {ZT_PY_DIR "/nofunctions.py",
         "zfleet-worker: error: " ZT_PY_DIR "/nofunctions.py defines no FUNCTIONS (a dict "
         "from function name to fn(state, job))\n"},
        {ZT_PY_DIR "/notcallable.py",
         "zfleet-worker: error: " ZT_PY_DIR "/notcallable.py: FUNCTIONS['broken'] is not "
         "callable (it is int)\n"},
        {ZT_PY_DIR "/longname.py", "is 64 bytes; names are 1 to 63 bytes\n"},
        {"py:zt_no_such.module", "zfleet-worker: error: cannot import py:zt_no_such.module: "
                                 "ModuleNotFoundError: No module named 'zt_no_such'"},
        {"py:not a name", "cannot load module py:not a name: expected py:package.module\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        zt_env_t env;
        zt_env_init(&env);
        pid_t w = zt_worker(&env, 200, "--module", cases[i].module, NULL);
        int status = zt_wait_exit(w, 15000);
        cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1, "%s: status %#x",
                  cases[i].module, status);
        char text[8192];
        read_log(&env, "workers.log", text, sizeof text);
        cr_assert(strstr(text, cases[i].want), "%s: log '%s', wanted '%s'", cases[i].module, text,
                  cases[i].want);
        cr_assert_eq(count_lines(text), 1, "%s: more than one line:\n%s", cases[i].module, text);
    }
}

/* A C module, a Python file and a py:package.module (from PYTHONPATH) load together; print
   goes to the worker's log; SIGTERM still drains (Python took no signal), fini runs, and
   the worker exits 0. */
Test(pyhandlers, c_and_python_modules_together_and_a_clean_drain, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    setenv("PYTHONPATH", ZT_PY_DIR, 1);
    pid_t w = zt_worker(&env, 200, "--module", zt_path("tests/zf_testmod.so"), "--module",
                        handlers(), "--module", "py:zt_pkg.mod", NULL);
    unsetenv("PYTHONPATH");
    cr_assert(zt_wait_workers(&env, 1, 15000));
    zf_client_t *c = zt_client(&env);
    zf_event_t *r = run(c, "py_pkg", "x", 1, NULL, 10000);
    assert_output(r, "from a package x");
    zf_event_destroy(&r);
    r = run(c, "fail", "", 0, NULL, 10000); /* the C module's */
    cr_assert_eq(r->status, ZFLEET_FAILED, "%s", zfleet_state_name(r->status));
    cr_assert_str_neq(r->text, "no function fail on this worker");
    zf_event_destroy(&r);
    r = run(c, "py_say", "", 0, NULL, 10000);
    assert_output(r, "");
    zf_event_destroy(&r);
    kill(w, SIGTERM);
    int status = zt_wait_exit(w, 10000);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
    char text[1 << 16];
    read_log(&env, "workers.log", text, sizeof text);
    cr_assert(strstr(text, "hello from a python handler\n"), "print did not reach the log:\n%s",
              text);
    cr_assert(strstr(text, "handlers.py: fini after ticks\n"), "fini did not run:\n%s", text);
    cr_assert(strstr(text, "drained: leaving"), "%s", text);
    zf_client_destroy(&c);
}

/* --venv with a virtual environment made here by python3 -m venv --system-site-packages:
   a fleet passes it on, the worker's sys.prefix is the venv, a package installed only in
   the venv imports, and so does NumPy from the system's site-packages. A venv of another
   Python version is refused in one line. */
Test(pyhandlers, venv_made_by_the_test_is_used_by_a_fleet, .timeout = 120)
{
    zt_env_t env;
    zt_env_init(&env);
    char venv[200], cmd[600], real[4096];
    snprintf(venv, sizeof venv, "%s/venv", env.dir);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -m venv --system-site-packages --without-pip %s && "
             "echo 'MARK = \"venv-only\"' > %s/lib/python3.11/site-packages/zt_venv_only.py",
             venv, venv);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    cr_assert(realpath(venv, real));
    zt_broker(&env, 200, NULL);
    char log[200];
    snprintf(log, sizeof log, "%s/fleet.log", env.dir);
    const char *args[] = {"--fleet",
                          "--cpus",
                          "0",
                          "--gpus",
                          "none",
                          "--broker",
                          env.worker_ep,
                          "--heartbeat",
                          "200",
                          "--venv",
                          venv,
                          "--module",
                          ZT_PY_DIR "/venv_probe.py",
                          NULL};
    zt_spawn("worker/zfleet-worker", log, args);
    cr_assert(zt_wait_workers(&env, 1, 15000), "the fleet's worker did not register");
    zf_client_t *c = zt_client(&env);
    zf_event_t *r = run(c, "py_where", "", 0, NULL, 15000);
    char want[4200];
    snprintf(want, sizeof want, "%s venv-only numpy ", real);
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s", r->text);
    cr_assert(r->output_len > strlen(want) && !memcmp(r->output, want, strlen(want)),
              "'%.*s', wanted '%s...'", (int)r->output_len, (const char *)r->output, want);
    zf_event_destroy(&r);
    zf_client_destroy(&c);

    /* another Python's venv */
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/old && printf 'home = /usr/bin\\nversion = 3.9.2\\n' "
             "> %s/old/pyvenv.cfg",
             env.dir, env.dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(venv, sizeof venv, "%s/old", env.dir);
    zt_env_t env2;
    zt_env_init(&env2);
    pid_t w = zt_worker(&env2, 200, "--venv", venv, "--module", handlers(), NULL);
    int status = zt_wait_exit(w, 10000);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %#x", status);
    char text[8192];
    read_log(&env2, "workers.log", text, sizeof text);
    cr_assert(strstr(text, "is a Python 3.9 environment, and this zfleet-worker embeds Python "
                           "3.11"),
              "%s", text);
    cr_assert_eq(count_lines(text), 1, "%s", text);
}
