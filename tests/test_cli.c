/*  The zfleet CLI and the worker's own messages, run for real: usage errors, unreadable
    input, payloads over the broker's limit, waits that run out, and module code that
    crashes its worker. Each failure is one clear line and the documented exit code. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "harness.h"

TestSuite(cli, .fini = zt_kill_all);

enum { EXIT_TIMEOUT = 3, EXIT_USAGE = 2, EXIT_REFUSED = 5 };

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static const char *crashmod(void)
{
    return zt_path("tests/zf_crashmod.so");
}

/* Every command given one word too many (or too few) is a usage error that says so in one
   line, and nothing reaches the broker: `submit echo a b` used to submit "a". */
Test(cli, extra_or_missing_arguments_are_usage_errors, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    static const char *const cases[][4] = {
        {"submit", "echo", "a", "b"}, {"wait", "1", "2", NULL},     {"get", "1", "2", NULL},
        {"status", "1", "2", NULL},   {"cancel", "1", "2", NULL},   {"retry", "1", "2", NULL},
        {"stats", "x", NULL, NULL},   {"workers", "x", NULL, NULL}, {"dead", "x", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *const *a = cases[i];
        char out[512], err[1024];
        int rc = zt_cli_err(&env, out, sizeof out, err, sizeof err, a[0], a[1], a[2], a[3], NULL);
        cr_assert_eq(rc, EXIT_USAGE, "%s: exit %d, stdout '%s'", a[0], rc, out);
        cr_assert_str_empty(out, "%s printed '%s'", a[0], out);
        cr_assert_eq(lines(err), 1, "%s: stderr '%s'", a[0], err);
        cr_assert(strstr(err, "unexpected argument"), "%s: '%s'", a[0], err);
    }
    static const char *const missing[] = {"submit", "wait", "get", "cancel", "retry"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        char out[512], err[1024];
        int rc = zt_cli_err(&env, out, sizeof out, err, sizeof err, missing[i], NULL);
        cr_assert_eq(rc, EXIT_USAGE, "%s alone: exit %d", missing[i], rc);
        cr_assert_eq(lines(err), 1, "%s alone: stderr '%s'", missing[i], err);
        cr_assert(strstr(err, "needs"), "%s alone: '%s'", missing[i], err);
    }
    cr_assert_eq(zt_broker_counter(&env, "accepted"), 0, "a job was submitted");
}

/* --file naming a directory, or a file that does not exist, is an input error (exit 2,
   one line), not an empty payload submitted with exit 0. */
Test(cli, unreadable_file_is_an_input_error, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    char missing[200], out[512], err[1024];
    snprintf(missing, sizeof missing, "%s/no-such-file", env.dir);
    int rc = zt_cli_err(&env, out, sizeof out, err, sizeof err, "submit", "echo", "--file", env.dir,
                        NULL);
    cr_assert_eq(rc, EXIT_USAGE, "directory: exit %d, stdout '%s'", rc, out);
    cr_assert_eq(lines(err), 1, "'%s'", err);
    cr_assert(strstr(err, "Is a directory") && strstr(err, env.dir), "'%s'", err);
    rc = zt_cli_err(&env, out, sizeof out, err, sizeof err, "submit", "echo", "--file", missing,
                    NULL);
    cr_assert_eq(rc, EXIT_USAGE, "missing file: exit %d", rc);
    cr_assert_eq(lines(err), 1, "'%s'", err);
    cr_assert(strstr(err, "No such file"), "'%s'", err);
    cr_assert_eq(zt_broker_counter(&env, "accepted"), 0, "a job was submitted");
}

/* A payload far over the broker's limit (beyond its ZMQ_MAXMSGSIZE, which would cut the
   connection) is refused by the client before sending, as "payload too large", in the
   library (REJECTED, ETOO_LARGE) and the CLI (exit 5, one line); the connection stays
   usable. One moderately over is still refused by the broker itself. */
Test(cli, payload_over_the_broker_limit_is_refused_before_sending, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200, .broker_args = ZT_ARGS("--max-payload", "1000")});
    const size_t big = 4u << 20; /* > 2 x 1000 + 1 MiB */
    char path[200], out[512], err[1024];
    snprintf(path, sizeof path, "%s/big", env.dir);
    char *data = calloc(1, big);
    cr_assert(data);
    FILE *f = fopen(path, "wb");
    cr_assert(f && fwrite(data, 1, big, f) == big && fclose(f) == 0);

    zf_client_t *c = zt_client(&env);
    cr_assert_eq(zf_client_submit(c, "echo", data, big, NULL, NULL), -1);
    cr_assert_eq(zf_client_errcode(c), ZF_CE_REJECTED, "%s", zf_client_error(c));
    cr_assert_eq(zf_client_brokercode(c), 6);
    cr_assert_str_eq(zf_client_error(c),
                     "payload too large: 4194304 bytes, the broker's limit is 1000");
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "echo", "ok", 2, NULL, &id), 0, "%s", zf_client_error(c));
    zf_client_destroy(&c);
    free(data);

    int rc =
        zt_cli_err(&env, out, sizeof out, err, sizeof err, "submit", "echo", "--file", path, NULL);
    cr_assert_eq(rc, EXIT_REFUSED, "exit %d, stderr '%s'", rc, err);
    cr_assert_eq(lines(err), 1, "'%s'", err);
    cr_assert(strstr(err, "payload too large: 4194304 bytes, the broker's limit is 1000"), "'%s'",
              err);
    static char mid[1002]; /* 1001 bytes: one over */
    memset(mid, 'x', sizeof mid);
    mid[sizeof mid - 1] = 0;
    rc = zt_cli_err(&env, out, sizeof out, err, sizeof err, "submit", "echo", mid, NULL);
    cr_assert_eq(rc, EXIT_REFUSED, "exit %d, stderr '%s'", rc, err);
    cr_assert(strstr(err, "payload too large"), "'%s'", err);
    cr_assert_eq(zt_broker_counter(&env, "accepted"), 1);
}

/* The limit check costs nothing to payloads under the limit, large ones included: a
   3 MiB payload to a broker with the default limit runs and comes back whole. */
Test(cli, large_payload_under_the_limit_is_accepted, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200, .workers = 1});
    const size_t n = 3u << 20;
    unsigned char *data = malloc(n);
    cr_assert(data);
    zt_pattern(data, n, 7);
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "echo", data, n, NULL, &id), 0, "%s", zf_client_error(c));
    zf_event_t *e = zf_client_wait(c, id, 20000);
    cr_assert(e && e->status == ZFLEET_SUCCEEDED, "%s", e ? e->text : zf_client_error(c));
    cr_assert_eq(e->output_len, n);
    cr_assert_eq(zt_pattern_mismatch(e->output, n, 7), n);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
    free(data);
}

/* A wait that runs out says so in one line, naming the job (exit 3), for `wait` and for
   `submit --wait` alike. */
Test(cli, expired_wait_is_one_line, .timeout = 60)
{
    zt_env_t env;
    /* no worker: the job stays queued */
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    char out[512], err[1024], id[32], want[96];
    cr_assert_eq(zt_cli(&env, out, sizeof out, "submit", "echo", "x", NULL), 0);
    snprintf(id, sizeof id, "%.*s", (int)strcspn(out, "\n"), out);
    snprintf(want, sizeof want, "job %s: no result within 300 ms", id);
    int rc =
        zt_cli_err(&env, out, sizeof out, err, sizeof err, "wait", id, "--timeout", "300", NULL);
    cr_assert_eq(rc, EXIT_TIMEOUT, "exit %d", rc);
    cr_assert_eq(lines(err), 1, "'%s'", err);
    cr_assert(strstr(err, want), "'%s' lacks '%s'", err, want);
    rc = zt_cli_err(&env, out, sizeof out, err, sizeof err, "submit", "echo", "y", "--wait",
                    "--timeout", "300", NULL);
    cr_assert_eq(rc, EXIT_TIMEOUT, "exit %d", rc);
    cr_assert_eq(lines(err), 1, "'%s'", err);
    cr_assert(strstr(err, "no result within 300 ms") && strstr(err, "still queued or running"),
              "'%s'", err);
}

/* Starts a worker with the crash module, with $ZF_TEST_CRASH_INIT = how (NULL: unset). A
   sanitizer's own handler would turn the death by signal into exit 1: it is told not to. */
static pid_t crash_worker(const zt_env_t *env, const char *how)
{
    /* both runtimes read their own variable for the common handle_* flags */
    static const char *const vars[2] = {"ASAN_OPTIONS", "UBSAN_OPTIONS"};
    char *was[2];
    for (int i = 0; i < 2; i++) {
        const char *v = getenv(vars[i]);
        was[i] = v ? strdup(v) : NULL;
        char opts[512];
        snprintf(opts, sizeof opts, "%s%shandle_segv=0:handle_abort=0", v ? v : "",
                 v && *v ? ":" : "");
        setenv(vars[i], opts, 1);
    }
    if (how)
        setenv("ZF_TEST_CRASH_INIT", how, 1);
    pid_t w = zt_worker(env, 200, "--module", crashmod(), NULL);
    unsetenv("ZF_TEST_CRASH_INIT");
    for (int i = 0; i < 2; i++) {
        if (was[i])
            setenv(vars[i], was[i], 1);
        else
            unsetenv(vars[i]);
        free(was[i]);
    }
    return w;
}

static void assert_died_by(pid_t w, int sig, const zt_env_t *env, const char *want)
{
    int status = zt_wait_exit(w, 10000);
    cr_assert(status != -1, "the worker did not die");
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == sig, "status %#x, not signal %d", status,
              sig);
    char log[200], text[8192];
    snprintf(log, sizeof log, "%s/workers.log", env->dir);
    zt_read_file(log, text, sizeof text);
    cr_assert(strstr(text, want), "the worker log lacks '%s':\n%s", want, text);
}

/* A module whose init() segfaults (or aborts) is named, with the signal, in one log line;
   the worker still dies by that signal, so its supervisor sees the real cause. */
Test(cli, worker_names_the_module_whose_init_crashed, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    char want[400];
    snprintf(want, sizeof want,
             "zfleet-worker: error: module %s crashed in init() with signal 11 "
             "(Segmentation fault)\n",
             crashmod());
    assert_died_by(crash_worker(&env, "segv"), SIGSEGV, &env, want);
    snprintf(want, sizeof want, "module %s crashed in init() with signal 6 (Aborted)\n",
             crashmod());
    assert_died_by(crash_worker(&env, "abort"), SIGABRT, &env, want);
}

/* A handler that segfaults in run() is named too: module, function and job. */
Test(cli, worker_names_the_function_whose_run_crashed, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    pid_t w = crash_worker(&env, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    zf_submit_opts_t o = {.max_attempts = 1};
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "segv", "", 0, &o, &id), 0, "%s", zf_client_error(c));
    char want[400];
    snprintf(want, sizeof want,
             "module %s crashed in run() of function segv (job %llu) with signal 11 "
             "(Segmentation fault)\n",
             crashmod(), (unsigned long long)id);
    assert_died_by(w, SIGSEGV, &env, want);
    zf_client_destroy(&c);
}

/* Every zfleet program parses a bounded option number with the one parser (zf_parse_opt):
   a bad value is the same one line in each, naming the option, the range and the value,
   and each program exits with its own usage code (the worker's is its start failure). */
Test(cli, bad_option_numbers_are_one_line_in_every_program, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    static const struct {
        const char *bin;
        const char *args[6];
        int code;
        const char *want;
    } cases[] = {
        {"broker/zfleet-broker",
         {"--no-journal", "--heartbeat", "5"},
         2,
         "zfleet-broker: error: --heartbeat: expected a number from 10 to 3600000, got '5'\n"},
        {"worker/zfleet-worker",
         {"--credits", "0"},
         1,
         "zfleet-worker: error: --credits: expected a number from 1 to 256, got '0'\n"},
        {"worker/zfleet-worker",
         {"--restart-backoff", "100:5x"},
         1,
         "zfleet-worker: error: --restart-backoff: expected a number from 100 to 3600000, "
         "got '5x'\n"},
        {"client/zfleet",
         {"wait", "1", "--timeout", "-1"},
         EXIT_USAGE,
         "zfleet: --timeout: expected a number from 0 to 2147483647, got '-1'\n"},
        {"client/zfleet",
         {"submit", "echo", "--priority", "+3"},
         EXIT_USAGE,
         "zfleet: --priority: expected a number from -2147483648 to 2147483647, got '+3'\n"},
        {"client/zfleet",
         {"bench", "--jobs", "0", "throughput"},
         EXIT_USAGE,
         "zfleet bench: --jobs: expected a number from 1 to 100000000, got '0'\n"},
        {"bench/zfleet-idle-fleet",
         {"--fleet", "1e3"},
         2,
         "zfleet-idle-fleet: --fleet: expected a number from 1 to 100000, got '1e3'\n"},
        {"bench/bstalk_bench",
         {"throughput", "--workers", "65"},
         2,
         "bstalk_bench: --workers: expected a number from 1 to 64, got '65'\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char log[160], err[4096];
        snprintf(log, sizeof log, "%s/err-%zu", env.dir, i);
        pid_t pid = zt_spawn(cases[i].bin, log, cases[i].args);
        int status = zt_wait_exit(pid, 10000);
        cr_assert(status != -1 && WIFEXITED(status), "%s did not exit", cases[i].bin);
        cr_assert_eq(WEXITSTATUS(status), cases[i].code, "%s: exit %d", cases[i].bin,
                     WEXITSTATUS(status));
        zt_read_file(log, err, sizeof err);
        /* the line comes first; a usage text may follow it */
        cr_assert(!strncmp(err, cases[i].want, strlen(cases[i].want)), "%s: stderr '%s'",
                  cases[i].bin, err);
    }
}
