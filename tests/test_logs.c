/*  Structured logs (common/zf_log.h): the line format itself (escaping, cutting, time,
    text mode), then real brokers, workers and fleets run with --log-format json whose every
    stderr line is parsed as JSON (tests/logs_check.py, by Python's strict parser) and
    searched for each event with its fields and values. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/zf_log.h"
#include "harness.h"

TestSuite(logs, .fini = zt_kill_all);

#define MAX_SPECS 24

/* Runs logs_check.py on path with the expectations (JSON objects, NULL-terminated list);
   true when every line is good JSON and every expectation is met. Its report goes to
   report (NUL-terminated). */
static bool check_log(const char *path, const char *const *specs, char *report, size_t len)
{
    char out[256];
    snprintf(out, sizeof out, "%s.check", path);
    const char *argv[MAX_SPECS + 4] = {"/usr/bin/python3", ZT_LOGS_CHECK, path};
    int n = 3;
    for (const char *const *s = specs; s && *s && n < MAX_SPECS + 3; s++)
        argv[n++] = *s;
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(out, "w", stdout);
        (void)f;
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    zt_read_file(out, report, len);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

#define ASSERT_LOG(path, ...)                                                                      \
    do {                                                                                           \
        char report_[8192];                                                                        \
        cr_assert(check_log(path, ZT_ARGS(__VA_ARGS__), report_, sizeof report_), "%s:\n%s", path, \
                  report_);                                                                        \
    } while (0)

/* Polls the file until it holds needle (true) or timeout_ms passes (false). */
static bool wait_text(const char *path, const char *needle, int timeout_ms)
{
    static char text[1 << 20];
    int64_t end = zt_now_ms() + timeout_ms;
    do {
        zt_read_file(path, text, sizeof text);
        if (strstr(text, needle))
            return true;
        zt_pause_ms(50);
    } while (zt_now_ms() < end);
    return false;
}

static const char *log_path(const zt_env_t *env, const char *name)
{
    static char p[4][200];
    static int k;
    char *s = p[k++ % 4];
    snprintf(s, 200, "%s/%s", env->dir, name);
    return s;
}

/* A JSON object for an expectation, from a printf format (static buffer, 16 in rotation). */
static const char *spec(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *spec(const char *fmt, ...)
{
    static char s[16][512];
    static int k;
    char *b = s[k++ % 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, 512, fmt, ap);
    va_end(ap);
    return b;
}

static void json_mode(void)
{
    zf_log_set_component("zt");
    cr_assert_eq(zf_log_option("log-format", "json"), 0);
}

/* ------------------------------------------------------------------ the line format */

/* User data (function names, worker names, error text) reaches the log escaped: quotes,
   backslashes and control characters as JSON escapes, bytes that are not UTF-8 as U+FFFD,
   well-formed UTF-8 as it is. */
Test(logs, json_strings_are_escaped, .timeout = 30)
{
    json_mode();
    const char *fn = "q\"b\\s\nnl\ttab\x01"
                     "ctl\x7f"
                     "bad\xff"
                     "cut\xc3"
                     "(\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                     "over\xc0\xaf"
                     "sur\xed\xa0\x80";
    zf_log_fields_t f = {.job = 42, .attempt = 3, .fn = fn, .worker = "w\"1", .device = "cpu:0"};
    char line[ZF_LOG_LINE_MAX + 1];
    unsigned n = zf_log_format_line(line, ZF_LOG_LINE_MAX, 1796236801123, ZF_LOG_WARN,
                                    "job_requeued", &f, "a \"quoted\" \xfe msg");
    line[n] = 0;
    const char *want =
        "{\"time\":\"2026-12-02T18:40:01.123Z\",\"level\":\"warn\",\"component\":\"zt\","
        "\"event\":\"job_requeued\",\"msg\":\"a \\\"quoted\\\" \\ufffd msg\",\"job\":42,"
        "\"attempt\":3,\"fn\":\"q\\\"b\\\\s\\nnl\\ttab\\u0001ctl\\u007fbad\\ufffdcut\\ufffd("
        "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80over\\ufffd\\ufffdsur\\ufffd\\ufffd\\ufffd\","
        "\"worker\":\"w\\\"1\",\"device\":\"cpu:0\"}\n";
    cr_assert_str_eq(line, want);
    /* and Python reads back the same string */
    char path[200];
    zt_env_t env;
    zt_env_init(&env);
    snprintf(path, sizeof path, "%s/line.log", env.dir);
    FILE *o = fopen(path, "w");
    fputs(line, o);
    fclose(o);
    ASSERT_LOG(path,
               "{\"fn\":\"q\\\"b\\\\s\\nnl\\ttab\\u0001ctl\\u007fbad\\ufffdcut\\ufffd(\\u00e9"
               "\\u20ac\\ud83d\\ude00over\\ufffd\\ufffdsur\\ufffd\\ufffd\\ufffd\"}",
               "{\"msg\":\"a \\\"quoted\\\" \\ufffd msg\",\"worker\":\"w\\\"1\",\"job\":42}");
}

/* A message longer than a line is cut at a character boundary: the line stays one valid
   JSON object of at most ZF_LOG_LINE_MAX bytes, keeps its fields and says it was cut; a
   field too long for its share is left out whole. Text lines are cut the same way. */
Test(logs, long_messages_are_cut_to_valid_lines, .timeout = 30)
{
    json_mode();
    static char msg[12000], reason[3000];
    for (size_t i = 0; i + 3 < sizeof msg; i += 3)
        memcpy(msg + i, i % 2 ? "\xc3\xa9\"" : "\\\n\xe2", 3); /* escapes and UTF-8 */
    memset(reason, 'r', sizeof reason - 1);
    zt_env_t env;
    zt_env_init(&env);
    char path[200];
    snprintf(path, sizeof path, "%s/cut.log", env.dir);
    FILE *o = fopen(path, "w");
    char line[ZF_LOG_LINE_MAX];
    zf_log_fields_t f = {.job = 7, .fn = "echo"};
    unsigned n = zf_log_format_line(line, sizeof line, 0, ZF_LOG_INFO, "e", &f, msg);
    cr_assert_leq(n, ZF_LOG_LINE_MAX);
    cr_assert_gt(n, ZF_LOG_LINE_MAX - 64, "cut far short: %u bytes", n);
    cr_assert_eq(line[n - 1], '\n');
    cr_assert_eq(memchr(line, '\n', n), line + n - 1, "more than one line");
    fwrite(line, 1, n, o);
    f.reason = reason;
    n = zf_log_format_line(line, sizeof line, 0, ZF_LOG_INFO, "e", &f, "short");
    fwrite(line, 1, n, o);
    fclose(o);
    ASSERT_LOG(path,
               "{\"job\":7,\"fn\":\"echo\",\"truncated\":true,\"time\":\"1970-01-01T00:00:00."
               "000Z\"}",
               "{\"msg\":\"short\",\"job\":7,\"truncated\":true}");
    char text[3 * ZF_LOG_LINE_MAX];
    zt_read_file(path, text, sizeof text);
    cr_assert_null(strstr(text, "\"reason\""), "a field too long for its share was written");

    cr_assert_eq(zf_log_option("log-format", "text"), 0);
    n = zf_log_format_line(line, sizeof line, 0, ZF_LOG_INFO, "e", &(zf_log_fields_t){.job = 7},
                           msg);
    cr_assert_leq(n, ZF_LOG_LINE_MAX);
    cr_assert_eq(memchr(line, '\n', n), line + n - 1, "a text line kept a newline");
    cr_assert(n > 12 && !memcmp(line + n - 10, "... job=7\n", 10), "%.*s", 40, line + n - 40);
}

/* Times are UTC with milliseconds, across a leap day and before 1970. */
Test(logs, times_are_utc_iso8601, .timeout = 30)
{
    json_mode();
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {{0, "1970-01-01T00:00:00.000Z"},
                 {1709251199999, "2024-02-29T23:59:59.999Z"},
                 {1709251200000, "2024-03-01T00:00:00.000Z"},
                 {-1, "1969-12-31T23:59:59.999Z"},
                 {951782400000, "2000-02-29T00:00:00.000Z"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char line[512];
        unsigned n =
            zf_log_format_line(line, sizeof line, cases[i].ms, ZF_LOG_INFO, NULL, NULL, "");
        line[n] = 0;
        char want[200];
        snprintf(want, sizeof want, "{\"time\":\"%s\",\"level\":\"info\"", cases[i].want);
        cr_assert(!strncmp(line, want, strlen(want)), "%lld: %s", (long long)cases[i].ms, line);
    }
}

/* Text mode is today's "prog: level: msg", plus the fields the message does not already
   show, as key=value (quoted when they have a blank); a process's context stays out. */
Test(logs, text_lines_add_the_fields_their_message_lacks, .timeout = 30)
{
    zf_log_set_component("zt");
    cr_assert_eq(zf_log_option("log-format", "text"), 0);
    zf_log_set_context("ctxworker", "cpu:9");
    char line[512];
    zf_log_fields_t f = {
        .job = 17, .attempt = 2, .worker = "w1", .device = "cpu:0", .reason = "no heartbeat"};
    unsigned n = zf_log_format_line(line, sizeof line, 0, ZF_LOG_WARN, "worker_lost", &f,
                                    "worker w1 (cpu:0) removed; job 170");
    line[n] = 0;
    cr_assert_str_eq(line, "zt: warn: worker w1 (cpu:0) removed; job 170 job=17 attempt=2 "
                           "reason=\"no heartbeat\"\n");
    n = zf_log_format_line(line, sizeof line, 0, ZF_LOG_ERROR, NULL, NULL, "two\nlines\x01");
    line[n] = 0;
    cr_assert_str_eq(line, "zt: error: two\\nlines\\x01\n");
}

/* Bad values of the flags are one clear line and the program's usage exit code. */
Test(logs, bad_log_flags_are_refused, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    static const struct {
        const char *bin;
        const char *args[4];
        int code;
        const char *want;
    } cases[] = {
        {"broker/zfleet-broker",
         {"--log-format", "xml"},
         2,
         "zfleet-broker: error: --log-format: expected text or json, got 'xml'\n"},
        {"broker/zfleet-broker",
         {"--log-level=loud"},
         2,
         "zfleet-broker: error: --log-level: expected error, warn, info or debug, got 'loud'\n"},
        {"worker/zfleet-worker",
         {"--fleet", "--log-format", "JSON"},
         1,
         "zfleet-worker: error: --log-format: expected text or json, got 'JSON'\n"},
        {"worker/zfleet-worker",
         {"--log-level", "verbose"},
         1,
         "zfleet-worker: error: --log-level: expected error, warn, info or debug, got "
         "'verbose'\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char log[160], err[4096];
        snprintf(log, sizeof log, "%s/err-%zu", env.dir, i);
        pid_t pid = zt_spawn(cases[i].bin, log, cases[i].args);
        int status = zt_wait_exit(pid, 10000);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == cases[i].code, "%s: status %#x",
                  cases[i].bin, status);
        zt_read_file(log, err, sizeof err);
        cr_assert_str_eq(err, cases[i].want);
    }
    /* and an error about another option, after --log-format json, is JSON already */
    char log[160];
    snprintf(log, sizeof log, "%s/err-json", env.dir);
    pid_t pid =
        zt_spawn("broker/zfleet-broker", log, ZT_ARGS("--heartbeat", "5", "--log-format", "json"));
    int status = zt_wait_exit(pid, 10000);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "status %#x", status);
    ASSERT_LOG(log, "{\"level\":\"error\",\"component\":\"zfleet-broker\",\"msg\":\"--heartbeat: "
                    "expected a number from 10 to 3600000, got '5'\"}");
    /* an unknown option too (and no usage text, which is not JSON) */
    snprintf(log, sizeof log, "%s/err-unknown", env.dir);
    pid = zt_spawn("worker/zfleet-worker", log, ZT_ARGS("--log-format", "json", "--bogus"));
    status = zt_wait_exit(pid, 10000);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %#x", status);
    ASSERT_LOG(log, "{\"level\":\"error\",\"component\":\"zfleet-worker\",\"msg\":\"option "
                    "'--bogus' is unknown or lacks its value (see --help)\"}");
}

/* ------------------------------------------------------------------ real processes */

/* A worker with the crash module ($ZF_TEST_CRASH_INIT unset), its sanitizers told to leave
   SIGSEGV alone (see test_cli.c's crash_worker). */
static pid_t crash_worker(const zt_env_t *env, const char *name)
{
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
    pid_t w = zt_worker(env, 200, "--log-format", "json", "--module",
                        zt_path("tests/zf_crashmod.so"), "--name", name, NULL);
    for (int i = 0; i < 2; i++) {
        if (was[i])
            setenv(vars[i], was[i], 1);
        else
            unsetenv(vars[i]);
        free(was[i]);
    }
    return w;
}

/* The broker's and the workers' events, each with its fields: a worker joins, one is
   SIGKILLed with a job in hand (lost, its job requeued and run elsewhere), a job crashes
   its worker and dead-letters, the journal compacts, the broker stops. Every line of both
   logs is JSON. */
Test(logs, json_logs_carry_every_event_with_its_fields, .timeout = 120)
{
    zt_env_t env;
    zt_env_init(&env);
    char data[160];
    snprintf(data, sizeof data, "%s/data", env.dir);
    pid_t broker = zt_broker(&env, 200, "--log-format", "json", "--data", data,
                             "--compact-min-bytes", "8192", "--max-results", "20", NULL);
    const char *blog = log_path(&env, "broker.log"), *wlog = log_path(&env, "workers.log");
    pid_t wa = zt_worker(&env, 200, "--log-format", "json", "--name", "wa", NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000), "wa did not join");
    zf_client_t *c = zt_client(&env);

    /* a job in wa's hands when it is killed: lost with wa, requeued, run again on wb (which
       starts only then, so the job cannot have gone to it first) */
    uint64_t spin;
    cr_assert_eq(zf_client_submit(c, "spin", "2000", 4, NULL, &spin), 0, "%s", zf_client_error(c));
    cr_assert(zt_wait_running(c, spin, 10000));
    zt_kill(wa, SIGKILL); /* at once, long before the job could end */
    pid_t wb = zt_worker(&env, 200, "--log-format", "json", "--name", "wb", NULL);
    zf_event_t *r = zf_client_wait(c, spin, 20000);
    cr_assert(r && r->status == ZFLEET_SUCCEEDED && r->attempts == 2 && !strcmp(r->worker, "wb"),
              "the spin job did not run again on wb");
    zf_event_destroy(&r);

    /* a job that crashes its worker, with one attempt: dead-lettered as lost */
    pid_t wc = crash_worker(&env, "wc");
    cr_assert(zt_wait_workers(&env, 2, 10000), "wc did not join");
    uint64_t segv;
    cr_assert_eq(zf_client_submit(c, "segv", "", 0, &(zf_submit_opts_t){.max_attempts = 1}, &segv),
                 0);
    r = zf_client_wait(c, segv, 20000);
    cr_assert(r && r->status == ZFLEET_LOST, "the segv job did not end lost");
    zf_event_destroy(&r);
    zt_wait_exit(wc, 10000);

    /* finished jobs past a result store of 20: a journal that is mostly dead compacts */
    for (int i = 0; i < 200; i++) {
        uint64_t id;
        char payload[200];
        memset(payload, 'p', sizeof payload);
        cr_assert_eq(zf_client_submit(c, "echo", payload, sizeof payload, NULL, &id), 0);
        r = zf_client_wait(c, id, 10000);
        cr_assert(r && r->status == ZFLEET_SUCCEEDED);
        zf_event_destroy(&r);
        if (i % 20 == 19 && wait_text(blog, "\"event\":\"journal_compacted\"", 10))
            break;
    }
    cr_assert(wait_text(blog, "\"event\":\"journal_compacted\"", 10000), "no compaction");
    zf_client_destroy(&c);
    zt_kill(broker, SIGTERM);
    cr_assert(wait_text(blog, "\"event\":\"broker_stopped\"", 10000));
    zt_kill(wb, SIGTERM);
    cr_assert(wait_text(wlog, "\"reason\":\"drained\"", 10000), "wb did not leave");

    ASSERT_LOG(blog, "{\"event\":\"broker_ready\",\"component\":\"zfleet-broker\"}",
               "{\"event\":\"worker_joined\",\"worker\":\"wa\",\"device\":\"cpu\"}",
               "{\"event\":\"worker_joined\",\"worker\":\"wb\",\"device\":\"cpu\"}",
               "{\"event\":\"worker_lost\",\"level\":\"warn\",\"worker\":\"wa\",\"count\":1}",
               spec("{\"event\":\"job_requeued\",\"job\":%llu,\"attempt\":1,\"fn\":\"spin\","
                    "\"worker\":\"wa\"}",
                    (unsigned long long)spin),
               "{\"event\":\"worker_lost\",\"worker\":\"wc\"}",
               spec("{\"event\":\"job_dead_lettered\",\"job\":%llu,\"attempt\":1,\"fn\":\"segv\","
                    "\"state\":\"lost\"}",
                    (unsigned long long)segv),
               spec("{\"event\":\"journal_compacted\",\"path\":\"%s/journal\"}", data),
               "{\"event\":\"journal_replayed\"}", "{\"event\":\"broker_stopping\"}",
               "{\"event\":\"broker_stopped\"}");
    ASSERT_LOG(wlog,
               "{\"event\":\"worker_started\",\"component\":\"zfleet-worker\",\"worker\":\"wa\","
               "\"device\":\"cpu\"}",
               spec("{\"event\":\"module_crash\",\"level\":\"error\",\"job\":%llu,\"fn\":\"segv\","
                    "\"worker\":\"wc\",\"reason\":\"Segmentation fault\"}",
                    (unsigned long long)segv),
               "{\"event\":\"worker_draining\",\"worker\":\"wb\"}",
               "{\"event\":\"worker_exit\",\"worker\":\"wb\",\"reason\":\"drained\"}");
}

/* A burst of denied connections: the first ones one line each with the peer and the
   reason, the rest counted in one denials_suppressed line. */
Test(logs, denial_bursts_are_rate_limited_events, .timeout = 120)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_curve_on(&env);
    zt_broker(&env, 200, "--log-format", "json", NULL);
    zt_key_new(&env, "stranger", NULL);
    const char *blog = log_path(&env, "broker.log");
    /* every client a new connection, all opened at once, each refused in its handshake
       (and again on each retry); a round in a later second flushes the count of the one
       before, so rounds go on until it is there */
    enum { BURST = 30 };
    for (int round = 0; round < 5; round++) {
        zf_client_t *c[BURST];
        for (int i = 0; i < BURST; i++)
            c[i] = zt_client_as(&env, "stranger");
        for (int i = 0; i < BURST; i++) {
            uint64_t id;
            cr_assert_eq(zf_client_submit(c[i], "echo", "x", 1, NULL, &id), -1);
            zf_client_destroy(&c[i]);
        }
        if (wait_text(blog, "\"event\":\"denials_suppressed\"", 1500))
            break;
    }
    cr_assert(wait_text(blog, "\"event\":\"denials_suppressed\"", 100), "no suppressed count");
    ASSERT_LOG(blog,
               "{\"event\":\"connection_denied\",\"level\":\"warn\",\"reason\":\"is not in "
               "--client-keys or --admin-keys\"}",
               "{\"event\":\"denials_suppressed\",\"level\":\"warn\"}",
               "{\"event\":\"keys_read\",\"count\":3}");
    /* the peer and the key are there too */
    char text[1 << 16];
    zt_read_file(blog, text, sizeof text);
    cr_assert(strstr(text, "\"peer\":\"") && strstr(text, "\"key\":\""), "%s", text);
}

/* A fleet passes --log-format and --log-level on: its own lines and its workers' are JSON,
   at the level asked (debug lines come from the workers); a worker that is killed is
   restarted, and both are events with the device, the worker and the pid. */
Test(logs, fleet_passes_its_log_flags_to_its_workers, .timeout = 120)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    const char *wlog = log_path(&env, "workers.log");
    pid_t fleet =
        zt_spawn("worker/zfleet-worker", wlog,
                 ZT_ARGS("--fleet", "--broker", env.worker_ep, "--gpus", "0", "--fake-gpu",
                         "--cpus", "0", "--heartbeat", "200", "--restart-backoff", "100:1000",
                         "--log-format", "json", "--log-level", "debug"));
    cr_assert(zt_wait_workers(&env, 2, 10000), "the fleet's workers did not join");
    cr_assert(wait_text(wlog, "\"event\":\"child_started\"", 5000));
    /* the CPU worker's pid, from its child_started line */
    char text[1 << 16];
    zt_read_file(wlog, text, sizeof text);
    const char *p = strstr(text, "\"device\":\"cpu:0\",\"pid\":");
    p = p ? strstr(p, "\"pid\":") : NULL;
    cr_assert_not_null(p, "%s", text);
    pid_t child = (pid_t)atoi(p + 6);
    cr_assert_gt(child, 0);
    kill(child, SIGKILL);
    cr_assert(wait_text(wlog, "\"event\":\"child_restart\"", 10000), "no restart line");
    cr_assert(zt_wait_workers(&env, 2, 10000));
    zt_kill(fleet, SIGTERM);
    cr_assert(wait_text(wlog, "\"event\":\"fleet_stopped\"", 10000), "the fleet did not stop");
    ASSERT_LOG(wlog, "{\"event\":\"fleet_started\",\"component\":\"zfleet-fleet\",\"count\":2}",
               spec("{\"event\":\"child_started\",\"component\":\"zfleet-fleet\",\"device\":"
                    "\"cpu:0\",\"pid\":%d}",
                    (int)child),
               spec("{\"event\":\"child_restart\",\"level\":\"warn\",\"device\":\"cpu:0\","
                    "\"pid\":%d,\"reason\":\"killed by signal 9 (Killed)\"}",
                    (int)child),
               "{\"event\":\"worker_started\",\"component\":\"zfleet-worker\",\"device\":"
               "\"cpu:0\"}",
               "{\"event\":\"device_bound\",\"level\":\"debug\",\"device\":\"cpu:0\"}",
               "{\"event\":\"device_bound\",\"level\":\"info\",\"device\":\"gpu:0\"}",
               "{\"event\":\"worker_started\",\"device\":\"gpu:0\"}",
               "{\"event\":\"fleet_draining\"}",
               "{\"event\":\"fleet_stopped\",\"reason\":\"drained\"}");
}

/* Without the flags the lines are text, as before: the message as it was, then only the
   fields it does not show. */
Test(logs, text_is_the_default, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200, .workers = 1, .names = ZT_ARGS("w1")});
    const char *blog = log_path(&env, "broker.log");
    cr_assert(wait_text(blog, "zfleet-broker: info: worker w1 joined on cpu with ", 5000));
    char text[1 << 16];
    zt_read_file(blog, text, sizeof text);
    cr_assert_null(strstr(text, "{\""), "JSON in a text log:\n%s", text);
    cr_assert_null(strstr(text, "worker=w1"), "a field the message shows was added:\n%s", text);
}
