/*  `zfleet top` (issue 15): the model on documents made here (widths, rates, percentiles,
    outages, hostile names), then the real CLI against a real broker and worker: --once with
    known jobs, --once with no broker, and the live view in a detached tmux session whose
    screen is read back with capture-pane while jobs run, quit with q, ended with SIGTERM,
    and kept retrying across a broker that comes up late. */
#include <criterion/criterion.h>
#include <errno.h>
#include <msgpack.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"
#include "zf_top.h"

/* ------------------------------------------------------------------ tmux */

static char tmux_sock[200]; /* this test's tmux server, killed by the teardown */

static void top_fini(void)
{
    if (tmux_sock[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "tmux -S '%s' kill-server >/dev/null 2>&1", tmux_sock);
        if (system(cmd) < 0)
            perror("tmux kill-server");
        tmux_sock[0] = 0;
    }
    zt_kill_all();
}

TestSuite(top, .fini = top_fini);

enum { EXIT_USAGE = 2, EXIT_UNREACHABLE = 4 };

/* ------------------------------------------------------------------ documents */

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} doc_t;

static void pk_str(doc_t *d, const char *s)
{
    msgpack_pack_str(&d->pk, strlen(s));
    msgpack_pack_str_body(&d->pk, s, strlen(s));
}

static void pk_u64(doc_t *d, const char *k, uint64_t v)
{
    pk_str(d, k);
    msgpack_pack_uint64(&d->pk, v);
}

typedef struct {
    const char *name;
    uint64_t queued, running, succeeded, failed;
    int64_t p50, p99; /* -1: absent, as from a broker that does not report them */
} fn_spec_t;

/* A STATS document: broker uptime, the functions, and nwrk workers named wname-N (or wname
   itself for one) holding njobs jobs each. */
static void make_doc(doc_t *d, uint64_t uptime_ms, const fn_spec_t *fns, size_t nfns,
                     const char *wname, size_t nwrk, uint32_t njobs)
{
    msgpack_sbuffer_init(&d->sb);
    msgpack_packer_init(&d->pk, &d->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&d->pk, 3);
    pk_str(d, "broker");
    msgpack_pack_map(&d->pk, 3);
    pk_u64(d, "uptime_ms", uptime_ms);
    pk_u64(d, "journal_ok", 1);
    pk_u64(d, "journal_errors", 0);
    pk_str(d, "functions");
    msgpack_pack_array(&d->pk, nfns);
    for (size_t i = 0; i < nfns; i++) {
        const fn_spec_t *f = &fns[i];
        msgpack_pack_map(&d->pk, 5 + (f->p50 >= 0) + (f->p99 >= 0));
        pk_str(d, "name");
        pk_str(d, f->name);
        pk_u64(d, "queued", f->queued);
        pk_u64(d, "running", f->running);
        pk_u64(d, "succeeded", f->succeeded);
        pk_u64(d, "failed", f->failed);
        if (f->p50 >= 0)
            pk_u64(d, "run_p50_us", (uint64_t)f->p50);
        if (f->p99 >= 0)
            pk_u64(d, "run_p99_us", (uint64_t)f->p99);
    }
    pk_str(d, "workers");
    msgpack_pack_array(&d->pk, nwrk);
    for (size_t i = 0; i < nwrk; i++) {
        char name[128];
        if (nwrk == 1)
            snprintf(name, sizeof name, "%s", wname);
        else
            snprintf(name, sizeof name, "%s-%zu", wname, i);
        msgpack_pack_map(&d->pk, 6);
        pk_str(d, "name");
        pk_str(d, name);
        pk_str(d, "device");
        pk_str(d, "cpu:0");
        pk_str(d, "state");
        pk_str(d, njobs ? "busy" : "idle");
        pk_str(d, "jobs");
        msgpack_pack_array(&d->pk, njobs);
        for (uint32_t j = 0; j < njobs; j++)
            msgpack_pack_uint64(&d->pk, 4503599627370000ull + j);
        pk_u64(d, "done", 7);
        pk_u64(d, "failed", 1);
    }
}

static void sample(zf_top_t *t, doc_t *d, int64_t wall_ms)
{
    cr_assert_eq(zf_top_sample(t, d->sb.data, d->sb.size, wall_ms), 0);
    msgpack_sbuffer_destroy(&d->sb);
}

static char *render(const zf_top_t *t, int cols, int rows, int interval_ms)
{
    zf_top_view_t v = {
        .cols = cols, .rows = rows, .wall_ms = 1700000000000, .interval_ms = interval_ms};
    char *f = zf_top_render(t, &v);
    cr_assert(f);
    return f;
}

/* The row of the table that starts with name (the first word), copied into out; NULL if
   there is none. */
static const char *row(const char *frame, const char *name, char *out, size_t len)
{
    size_t n = strlen(name);
    for (const char *p = frame; *p;) {
        size_t l = strcspn(p, "\n");
        if (l > n && !strncmp(p, name, n) && p[n] == ' ') {
            snprintf(out, len, "%.*s", (int)l, p);
            return out;
        }
        p += l + (p[l] == '\n');
    }
    return NULL;
}

typedef struct {
    unsigned long long queued, running, succeeded, failed;
    char rate[32], p50[32], p99[32];
} fn_row_t;

static bool parse_fn_row(const char *frame, const char *name, fn_row_t *r)
{
    char line[512], fn[80];
    if (!row(frame, name, line, sizeof line))
        return false;
    return sscanf(line, "%79s %llu %llu %llu %llu %31s %31s %31s", fn, &r->queued, &r->running,
                  &r->succeeded, &r->failed, r->rate, r->p50, r->p99) == 8;
}

/* ------------------------------------------------------------------ the model */

/* However many functions and workers, and however long their names, a frame has at most
   the rows and the columns it is given; what does not fit is counted, not dropped silently. */
Test(top, frame_fits_the_terminal_and_counts_what_is_left_out)
{
    fn_spec_t fns[30];
    char names[30][80];
    for (int i = 0; i < 30; i++) {
        snprintf(names[i], sizeof names[i], "function-with-a-rather-long-name-%02d", i);
        fns[i] =
            (fn_spec_t){.name = names[i], .queued = 1000000 + (uint64_t)i, .p50 = -1, .p99 = -1};
    }
    zf_top_t *t = zf_top_new("ipc:///a/rather/long/endpoint/path/that/does/not/fit/in/the/title");
    doc_t d;
    make_doc(&d, 5000, fns, 30, "worker-with-a-very-long-name-that-goes-on", 30, 5);
    sample(t, &d, 1700000000000);
    static const int sizes[][2] = {{80, 24}, {40, 10}, {132, 50}, {20, 3}, {200, 200}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int cols = sizes[k][0], rows = sizes[k][1];
        char *f = render(t, cols, rows, 1000);
        int lines = 0;
        for (const char *p = f; *p;) {
            size_t l = strcspn(p, "\n");
            cr_assert_leq(l, (size_t)cols, "%dx%d: a line of %zu bytes: '%.*s'", cols, rows, l,
                          (int)l, p);
            cr_assert_eq(p[l], '\n', "%dx%d: the last line has no newline", cols, rows);
            lines++;
            p += l + 1;
        }
        cr_assert_leq(lines, rows, "%dx%d: %d lines", cols, rows, lines);
        if (rows >= 10 && rows < 100) {
            cr_assert(strstr(f, " more"), "%dx%d: nothing says rows were left out:\n%s", cols, rows,
                      f);
            cr_assert(strstr(f, "q quits"), "%dx%d: no footer:\n%s", cols, rows, f);
        }
        if (rows == 200)
            cr_assert_not(strstr(f, " more"), "everything fits in 200 rows:\n%s", f);
        free(f);
    }
    /* 80 columns: one whole job id in hand and how many more, never a cut id */
    char *f = render(t, 80, 24, 0);
    char line[512];
    cr_assert(row(f, "worker-with-a-ver~", line, sizeof line), "no worker row:\n%s", f);
    cr_assert(strstr(line, " 4503599627370000 +4"), "'%s'", line);
    cr_assert_not(strstr(f, "q quits"), "--once has no footer:\n%s", f);
    free(f);
    zf_top_destroy(&t);
    cr_assert_null(t);
}

/* A name from the network cannot drive the terminal: control bytes and escape sequences in
   it reach the frame as '?'. */
Test(top, control_bytes_in_names_are_not_sent_to_the_terminal)
{
    fn_spec_t fn = {.name = "evil\x1b[2J\x07", .p50 = -1, .p99 = -1};
    zf_top_t *t = zf_top_new("x");
    doc_t d;
    make_doc(&d, 1000, &fn, 1, "w\x1b]0;pwned\x07\r\n", 1, 0);
    sample(t, &d, 1700000000000);
    char *f = render(t, 100, 30, 1000);
    for (const char *p = f; *p; p++)
        cr_assert((*p >= 0x20 && *p < 0x7f) || *p == '\n', "byte 0x%02x in the frame:\n%s",
                  (unsigned char)*p, f);
    cr_assert(strstr(f, "evil?[2J?"), "%s", f);
    cr_assert(strstr(f, "w?]0;pwned???"), "%s", f);
    free(f);
    zf_top_destroy(&t);
}

/* rate/s is the finished jobs (succeeded + failed) between two samples over the broker's
   uptime between them; none after one sample, after a failed fetch, or across a restart. */
Test(top, rate_is_finished_jobs_between_two_samples)
{
    zf_top_t *t = zf_top_new("x");
    fn_spec_t a = {.name = "a", .succeeded = 10, .failed = 2, .p50 = -1, .p99 = -1};
    fn_spec_t b = {.name = "b", .queued = 4, .p50 = -1, .p99 = -1};
    fn_spec_t both[2] = {a, b};
    doc_t d;
    make_doc(&d, 10000, both, 2, "w", 1, 0);
    sample(t, &d, 1);
    fn_row_t r;
    char *f = render(t, 100, 30, 0);
    cr_assert(parse_fn_row(f, "a", &r), "%s", f);
    cr_assert_str_eq(r.rate, "-", "one sample has no rate:\n%s", f);
    free(f);

    both[0].succeeded = 40, both[0].failed = 12; /* +40 in 2 s */
    both[1].queued = 0, both[1].succeeded = 3;   /* +3 */
    make_doc(&d, 12000, both, 2, "w", 1, 0);
    sample(t, &d, 2);
    f = render(t, 100, 30, 0);
    cr_assert(parse_fn_row(f, "a", &r), "%s", f);
    cr_assert_str_eq(r.rate, "20.0", "%s", f);
    cr_assert_eq(r.succeeded, 40);
    cr_assert_eq(r.failed, 12);
    cr_assert(parse_fn_row(f, "b", &r), "%s", f);
    cr_assert_str_eq(r.rate, "1.5", "%s", f);
    cr_assert(strstr(f, "jobs: 0 queued, 0 running, 43 succeeded, 12 failed, 21.5/s"), "%s", f);
    free(f);

    /* a function first seen now had finished none before */
    fn_spec_t three[3] = {both[0], both[1], {.name = "c", .succeeded = 5, .p50 = -1, .p99 = -1}};
    make_doc(&d, 13000, three, 3, "w", 1, 0);
    sample(t, &d, 3);
    f = render(t, 100, 30, 0);
    cr_assert(parse_fn_row(f, "c", &r), "%s", f);
    cr_assert_str_eq(r.rate, "5.0", "%s", f);
    cr_assert(parse_fn_row(f, "a", &r), "%s", f);
    cr_assert_str_eq(r.rate, "0.0", "%s", f);
    free(f);

    /* a restart: uptime went down, counters too */
    make_doc(&d, 500, &a, 1, "w", 1, 0);
    sample(t, &d, 4);
    f = render(t, 100, 30, 0);
    cr_assert(parse_fn_row(f, "a", &r), "%s", f);
    cr_assert_str_eq(r.rate, "-", "a rate across a restart:\n%s", f);
    free(f);

    /* a failed fetch between two samples: no rate over the outage */
    zf_top_failed(t, true, "broker at x is not answering", 1700000000000 - 12000);
    make_doc(&d, 1500, &a, 1, "w", 1, 0);
    sample(t, &d, 5);
    f = render(t, 100, 30, 0);
    cr_assert(parse_fn_row(f, "a", &r), "%s", f);
    cr_assert_str_eq(r.rate, "-", "a rate across an outage:\n%s", f);
    cr_assert_not(strstr(f, "unreachable"), "a sample ends the outage:\n%s", f);
    free(f);
    zf_top_destroy(&t);
}

/* p50/p99 are shown when the broker reports them (run_p50_us, run_p99_us) and "-" when it
   does not (a broker from before they were added). */
Test(top, percentiles_are_shown_when_the_broker_has_them)
{
    fn_spec_t fns[2] = {{.name = "timed", .succeeded = 9, .p50 = 1500, .p99 = 2500000},
                        {.name = "older", .succeeded = 9, .p50 = -1, .p99 = -1}};
    zf_top_t *t = zf_top_new("x");
    doc_t d;
    make_doc(&d, 1000, fns, 2, "w", 1, 0);
    sample(t, &d, 1);
    char *f = render(t, 100, 30, 0);
    fn_row_t r;
    cr_assert(parse_fn_row(f, "timed", &r), "%s", f);
    cr_assert_str_eq(r.p50, "1.5ms", "%s", f);
    cr_assert_str_eq(r.p99, "2.50s", "%s", f);
    cr_assert(parse_fn_row(f, "older", &r), "%s", f);
    cr_assert_str_eq(r.p50, "-", "%s", f);
    cr_assert_str_eq(r.p99, "-", "%s", f);
    free(f);
    zf_top_destroy(&t);
}

/* A fetch that fails says since when, why, and keeps the last figures, marked as old; a
   document that is not STATS is refused and changes nothing. */
Test(top, outage_keeps_the_last_figures_and_bad_documents_change_nothing)
{
    zf_top_t *t = zf_top_new("x");
    char *f = render(t, 100, 30, 1000);
    cr_assert(strstr(f, "waiting for the broker's first answer"), "%s", f);
    free(f);
    fn_spec_t fn = {.name = "echo", .succeeded = 3, .p50 = -1, .p99 = -1};
    doc_t d;
    make_doc(&d, 1000, &fn, 1, "w", 1, 0);
    sample(t, &d, 1700000000000 - 20000);
    static const unsigned char junk[] = {0xc1, 0xc1, 0xc1};
    cr_assert_eq(zf_top_sample(t, junk, sizeof junk, 1700000000000), -1);
    static const unsigned char not_stats[] = {0x93, 1, 2, 3}; /* [1, 2, 3] */
    cr_assert_eq(zf_top_sample(t, not_stats, sizeof not_stats, 1700000000000), -1);
    zf_top_failed(t, true, "broker at x is not answering", 1700000000000 - 12000);
    zf_top_failed(t, true, "broker at x is not answering", 1700000000000 - 6000);
    f = render(t, 120, 30, 1000);
    cr_assert(strstr(f, "broker unreachable since "), "%s", f);
    cr_assert(strstr(f, " (12 s), retrying: broker at x is not answering"),
              "the outage counts from its first failure:\n%s", f);
    cr_assert(strstr(f, "(the figures below are from "), "%s", f);
    fn_row_t r;
    cr_assert(parse_fn_row(f, "echo", &r), "the last figures are gone:\n%s", f);
    cr_assert_eq(r.succeeded, 3);
    free(f);
    zf_top_failed(t, false, "access denied", 1700000000000);
    f = render(t, 120, 30, 0);
    cr_assert(strstr(f, "no stats from the broker since ") && strstr(f, "access denied"), "%s", f);
    cr_assert_not(strstr(f, "retrying"), "--once does not retry:\n%s", f);
    free(f);
    zf_top_destroy(&t);
}

/* ------------------------------------------------------------------ the CLI, --once */

/* The first line of s that contains word, into out ("" if none). */
static const char *line_with(const char *s, const char *word, char *out, size_t len)
{
    out[0] = 0;
    const char *p = strstr(s, word);
    if (!p)
        return out;
    const char *b = p;
    while (b > s && b[-1] != '\n')
        b--;
    snprintf(out, len, "%.*s", (int)strcspn(b, "\n"), b);
    return out;
}

/* Against a real broker and worker with known jobs: 3 echo done, one spin running and two
   queued behind it (credits 1); the frame has those numbers and the worker with its job. */
Test(top, once_shows_the_functions_and_workers_of_a_real_broker, .timeout = 120)
{
    zt_env_t env;
    zt_fleet_t fleet = {.hb_ms = 200,
                        .workers = 1,
                        .worker_args = ZT_ARGS("--credits", "1"),
                        .names = ZT_ARGS("top-w1")};
    zf_client_t *c = zt_start(&env, &fleet);
    for (int i = 0; i < 3; i++) {
        uint64_t id;
        cr_assert_eq(zf_client_submit(c, "echo", "x", 1, NULL, &id), 0, "%s", zf_client_error(c));
        zf_event_t *e = zf_client_wait(c, id, 20000);
        cr_assert(e && e->status == ZFLEET_SUCCEEDED);
        zf_event_destroy(&e);
    }
    uint64_t long_id, id;
    cr_assert_eq(zf_client_submit(c, "spin", "60000", 5, NULL, &long_id), 0);
    cr_assert(zt_wait_running(c, long_id, 20000), "the spin job never ran");
    cr_assert_eq(zf_client_submit(c, "spin", "10", 2, NULL, &id), 0);
    cr_assert_eq(zf_client_submit(c, "spin", "10", 2, NULL, &id), 0);

    /* stdout is a pipe: the frame's size comes from $COLUMNS and $LINES */
    setenv("COLUMNS", "120", 1);
    setenv("LINES", "40", 1);
    char out[8192], err[1024];
    int rc = zt_cli_err(&env, out, sizeof out, err, sizeof err, "top", "--once", NULL);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
    cr_assert_str_empty(err, "stderr: %s", err);
    fn_row_t r;
    cr_assert(parse_fn_row(out, "echo", &r), "no echo row:\n%s", out);
    cr_assert(r.queued == 0 && r.running == 0 && r.succeeded == 3 && r.failed == 0, "echo:\n%s",
              out);
    cr_assert(parse_fn_row(out, "spin", &r), "no spin row:\n%s", out);
    cr_assert(r.queued == 2 && r.running == 1 && r.succeeded == 0 && r.failed == 0, "spin:\n%s",
              out);
    cr_assert_str_eq(r.rate, "-", "one frame has no rate:\n%s", out);
    char line[512], want[64];
    cr_assert(row(out, "top-w1", line, sizeof line), "no worker row:\n%s", out);
    unsigned long long jobs, done, failed;
    char name[80], dev[32], state[32];
    cr_assert_eq(sscanf(line, "%79s %31s %31s %llu %llu %llu", name, dev, state, &jobs, &done,
                        &failed),
                 6, "'%s'", line);
    cr_assert_str_eq(state, "busy", "'%s'", line);
    cr_assert(jobs == 1 && done == 3 && failed == 0, "'%s'", line);
    snprintf(want, sizeof want, "  %llu", (unsigned long long)long_id);
    cr_assert(strstr(line, want), "the job in hand is not %llu: '%s'", (unsigned long long)long_id,
              line);
    cr_assert(strstr(line_with(out, "workers:", line, sizeof line), "workers: 1 (1 busy"), "'%s'",
              line);
    cr_assert(strstr(out, "journal ok"), "%s", out);
    cr_assert(strstr(out, env.client_ep), "%s", out);
    zf_client_destroy(&c);
}

/* With no broker, --once gives up with the CLI's unreachable code (4) and one line naming
   the endpoint; nothing on stdout. */
Test(top, once_without_a_broker_exits_unreachable, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    char out[4096], err[1024];
    int64_t t0 = zt_now_ms();
    int rc = zt_cli_err(&env, out, sizeof out, err, sizeof err, "top", "--once", NULL);
    cr_assert_eq(rc, EXIT_UNREACHABLE, "exit %d, stdout '%s', stderr '%s'", rc, out, err);
    cr_assert_str_empty(out, "'%s'", out);
    cr_assert_eq(strchr(err, '\n') - err + 1, (long)strlen(err), "one line: '%s'", err);
    cr_assert(strstr(err, "zfleet: top: ") && strstr(err, env.client_ep) &&
                  strstr(err, "not answering"),
              "'%s'", err);
    cr_assert_lt(zt_now_ms() - t0, 30000, "it took %lld ms", (long long)(zt_now_ms() - t0));
    /* and the usage errors around it */
    rc = zt_cli_err(&env, out, sizeof out, err, sizeof err, "top", "--interval", "5", NULL);
    cr_assert_eq(rc, EXIT_USAGE, "exit %d", rc);
    cr_assert(strstr(err, "--interval"), "'%s'", err);
    rc = zt_cli_err(&env, out, sizeof out, err, sizeof err, "stats", "--once", NULL);
    cr_assert_eq(rc, EXIT_USAGE, "exit %d", rc);
    rc = zt_cli_err(&env, out, sizeof out, err, sizeof err, "top", NULL);
    cr_assert_eq(rc, EXIT_USAGE, "not on a terminal: exit %d", rc);
    cr_assert(strstr(err, "needs a terminal"), "'%s'", err);
}

/* ------------------------------------------------------------------ the CLI, live in tmux */

static bool have_tmux(void)
{
    return system("tmux -V >/dev/null 2>&1") == 0;
}

/* Runs a tmux command on this test's server; its output into out (may be NULL). Returns
   its exit status. */
static int tmux(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int tmux(char *out, size_t len, const char *fmt, ...)
{
    char args[1024], cmd[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "tmux -S '%s' %s 2>&1", tmux_sock, args);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "popen %s", cmd);
    char sink[4096];
    size_t n = out && len ? fread(out, 1, len - 1, p) : 0;
    while (fread(sink, 1, sizeof sink, p) > 0)
        ; /* (the rest, so that tmux never blocks on a full pipe) */
    if (out && len)
        out[n] = 0;
    return pclose(p);
}

static void capture(char *out, size_t len)
{
    tmux(out, len, "capture-pane -p -t top");
}

static const char *scratch(const zt_env_t *env, const char *name)
{
    static char buf[4][256];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, 256, "%s/%s", env->dir, name);
    return b;
}

/* Starts `zfleet top ARGS` in a detached tmux session "top" of 120x40 under a shell script
   that saves the terminal's settings before and after it (stty.before, stty.after), its
   pid (top.pid) and its exit status (top.rc), then stays (so the pane shows the shell's
   screen again). */
static void start_top(const zt_env_t *env, const char *args)
{
    snprintf(tmux_sock, sizeof tmux_sock, "%s/tmux.sock", env->dir);
    const char *script = scratch(env, "run-top.sh");
    FILE *f = fopen(script, "w");
    cr_assert(f);
    fprintf(f,
            "#!/bin/sh\n"
            "cd '%s'\n"
            "export ZFLEET_BROKER='%s'\n"
            "unset ZFLEET_KEY ZFLEET_BROKER_KEY\n"
            "stty -a > stty.before\n"
            "sh -c 'echo $$ > top.pid; exec \"$0\" \"$@\"' '%s' top %s\n"
            "echo $? > top.rc.tmp && mv top.rc.tmp top.rc\n"
            "stty -a > stty.after\n"
            "echo SHELL-AGAIN\n"
            "exec sleep 600\n",
            env->dir, env->client_ep, zt_path("client/zfleet"), args);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(chmod(script, 0755), 0);
    cr_assert_eq(tmux(NULL, 0, "new-session -d -s top -x 120 -y 40 '%s'", script), 0,
                 "tmux new-session failed");
}

/* Waits until the pane shows text (or, want NULL, never). Returns the last capture. */
static bool wait_screen(const char *want, char *out, size_t len, int timeout_ms)
{
    for (int64_t until = zt_now_ms() + timeout_ms; zt_now_ms() < until; zt_pause_ms(100)) {
        capture(out, len);
        if (strstr(out, want))
            return true;
    }
    return false;
}

/* Waits for the script's top.rc; returns the exit status there, or -1. */
static int wait_rc(const zt_env_t *env, int timeout_ms)
{
    char buf[32];
    for (int64_t until = zt_now_ms() + timeout_ms; zt_now_ms() < until; zt_pause_ms(50))
        if (zt_read_file(scratch(env, "top.rc"), buf, sizeof buf) > 0)
            return atoi(buf);
    return -1;
}

/* After top ended: the terminal is as it was (every stty setting), the alternate screen is
   off, the pane shows the shell's screen again, and the process is gone. */
static void assert_terminal_restored(const zt_env_t *env)
{
    char before[4096], after[4096], screen[8192], alt[32], pid[32];
    cr_assert(zt_read_file(scratch(env, "stty.before"), before, sizeof before) > 0);
    for (int64_t until = zt_now_ms() + 10000;
         !zt_read_file(scratch(env, "stty.after"), after, sizeof after) && zt_now_ms() < until;)
        zt_pause_ms(50);
    cr_assert_str_eq(after, before, "the terminal's settings were not restored");
    cr_assert(strstr(before, " icanon") && strstr(before, " echo"), "%s", before);
    cr_assert(wait_screen("SHELL-AGAIN", screen, sizeof screen, 10000), "pane:\n%s", screen);
    cr_assert_not(strstr(screen, "FUNCTION"), "top's frame is still on the screen:\n%s", screen);
    tmux(alt, sizeof alt, "display -p -t top '#{alternate_on}'");
    cr_assert_eq(atoi(alt), 0, "the alternate screen is still on ('%s')", alt);
    cr_assert(zt_read_file(scratch(env, "top.pid"), pid, sizeof pid) > 0);
    cr_assert(kill(atoi(pid), 0) < 0 && errno == ESRCH, "top (pid %s) is still there", pid);
}

/* The live view follows jobs as they run: spin jobs drain through one worker (credits 1),
   and successive screens show queued going down, succeeded going up and a non-zero rate;
   then q quits with 0 and the terminal is as it was. */
Test(top, live_view_follows_jobs_and_q_restores_the_terminal, .timeout = 180)
{
    if (!have_tmux())
        cr_skip_test("tmux is not installed (scripts/setup installs it)");
    zt_env_t env;
    zt_fleet_t fleet = {.hb_ms = 200,
                        .workers = 1,
                        .worker_args = ZT_ARGS("--credits", "1"),
                        .names = ZT_ARGS("tw")};
    zf_client_t *c = zt_start(&env, &fleet);
    start_top(&env, "--interval 250");
    char screen[16384];
    cr_assert(wait_screen("FUNCTION", screen, sizeof screen, 20000), "no frame:\n%s", screen);
    cr_assert(strstr(screen, "q quits"), "%s", screen);

    enum { JOBS = 12 };
    for (int i = 0; i < JOBS; i++) {
        uint64_t id;
        cr_assert_eq(zf_client_submit(c, "spin", "400", 3, NULL, &id), 0, "%s", zf_client_error(c));
    }
    unsigned long long max_queued = 0, min_queued_after_max = ~0ull, min_succ = ~0ull, max_succ = 0;
    double max_rate = 0;
    int frames = 0;
    fn_row_t r = {0};
    for (int64_t until = zt_now_ms() + 60000; zt_now_ms() < until; zt_pause_ms(100)) {
        capture(screen, sizeof screen);
        if (!parse_fn_row(screen, "spin", &r))
            continue;
        frames++;
        if (r.queued > max_queued) {
            max_queued = r.queued;
            min_queued_after_max = r.queued;
        }
        if (r.queued < min_queued_after_max)
            min_queued_after_max = r.queued;
        if (r.succeeded < min_succ)
            min_succ = r.succeeded;
        if (r.succeeded > max_succ)
            max_succ = r.succeeded;
        if (strcmp(r.rate, "-") && atof(r.rate) > max_rate)
            max_rate = atof(r.rate);
        if (r.succeeded == JOBS && r.queued == 0 && r.running == 0 && max_rate > 0)
            break;
    }
    cr_assert_geq(max_queued, 5, "never saw the queue (max %llu, %d frames):\n%s", max_queued,
                  frames, screen);
    cr_assert_eq(min_queued_after_max, 0, "the queue never went down:\n%s", screen);
    cr_assert(min_succ < max_succ && max_succ == JOBS, "succeeded went from %llu to %llu:\n%s",
              min_succ, max_succ, screen);
    cr_assert_gt(max_rate, 0, "the rate never moved:\n%s", screen);
    char line[512];
    cr_assert(row(screen, "tw", line, sizeof line), "no worker row:\n%s", screen);
    cr_assert(strstr(line, " idle "), "'%s'", line);

    cr_assert_eq(tmux(NULL, 0, "send-keys -t top q"), 0);
    int rc = wait_rc(&env, 15000);
    cr_assert_eq(rc, 0, "top exited with %d after q", rc);
    assert_terminal_restored(&env);
    zf_client_destroy(&c);
}

/* SIGTERM (and Ctrl-C, which is a key in raw mode) leave the terminal as it was: SIGTERM
   kills it by that signal after the restore (status 143 in the shell), Ctrl-C exits 0. */
Test(top, sigterm_and_ctrl_c_restore_the_terminal, .timeout = 120)
{
    if (!have_tmux())
        cr_skip_test("tmux is not installed (scripts/setup installs it)");
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200, .workers = 1});
    start_top(&env, "--interval 300");
    char screen[16384], pid[32];
    cr_assert(wait_screen("FUNCTION", screen, sizeof screen, 20000), "no frame:\n%s", screen);
    cr_assert(zt_read_file(scratch(&env, "top.pid"), pid, sizeof pid) > 0);
    cr_assert_eq(kill(atoi(pid), SIGTERM), 0);
    int rc = wait_rc(&env, 15000);
    cr_assert_eq(rc, 128 + SIGTERM, "status %d after SIGTERM", rc);
    assert_terminal_restored(&env);

    tmux(NULL, 0, "kill-server");
    unlink(scratch(&env, "top.rc"));
    unlink(scratch(&env, "stty.after"));
    start_top(&env, "--interval 300");
    cr_assert(wait_screen("FUNCTION", screen, sizeof screen, 20000), "no frame:\n%s", screen);
    cr_assert_eq(tmux(NULL, 0, "send-keys -t top C-c"), 0);
    rc = wait_rc(&env, 15000);
    cr_assert_eq(rc, 0, "status %d after Ctrl-C", rc);
    assert_terminal_restored(&env);
}

/* With no broker the live view says so and keeps trying; once a broker comes up on that
   endpoint the figures appear without a restart, and q still quits. */
Test(top, live_view_retries_until_the_broker_answers, .timeout = 120)
{
    if (!have_tmux())
        cr_skip_test("tmux is not installed (scripts/setup installs it)");
    zt_env_t env;
    zt_env_init(&env);
    start_top(&env, "--interval 200");
    char screen[16384];
    cr_assert(wait_screen("broker unreachable since", screen, sizeof screen, 20000),
              "no outage on the screen:\n%s", screen);
    cr_assert(strstr(screen, "retrying"), "%s", screen);
    cr_assert_not(strstr(screen, "FUNCTION"), "%s", screen);
    zt_broker(&env, 200, NULL);
    cr_assert(wait_screen("FUNCTION", screen, sizeof screen, 30000),
              "no figures after the broker came up:\n%s", screen);
    cr_assert(strstr(screen, "journal ok"), "%s", screen);
    cr_assert_not(strstr(screen, "unreachable"), "%s", screen);
    cr_assert_eq(tmux(NULL, 0, "send-keys -t top q"), 0);
    int rc = wait_rc(&env, 15000);
    cr_assert_eq(rc, 0, "top exited with %d after q", rc);
    assert_terminal_restored(&env);
}

/* With CURVE, top is an operator's view as `zfleet stats` is: the admin key gets the frame,
   a client key one line saying stats are for admin keys (exit 4, as the other commands). */
Test(top, once_with_curve_needs_an_admin_key, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_curve_on(&env);
    zt_env_tcp(&env);
    zt_broker(&env, 200, NULL);
    setenv("COLUMNS", "120", 1);
    char out[8192], err[1024];
    int rc = zt_cli_as(&env, "admin", out, sizeof out, err, sizeof err, "top", "--once", NULL);
    cr_assert_eq(rc, 0, "admin: exit %d: %s", rc, err);
    cr_assert(strstr(out, "FUNCTION") && strstr(out, "journal ok"), "%s", out);
    rc = zt_cli_as(&env, "client", out, sizeof out, err, sizeof err, "top", "--once", NULL);
    cr_assert_eq(rc, EXIT_UNREACHABLE, "client key: exit %d: %s", rc, err);
    cr_assert_str_empty(out, "%s", out);
    cr_assert(strstr(err, "zfleet: top: ") && strstr(err, "admin"), "'%s'", err);
}
