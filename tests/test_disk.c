/*  The journal's disk failing under a running broker: a full disk (a real, small tmpfs as
    the data directory) and write or sync errors (the ZFLEET_JOURNAL_FAULT seam,
    docs/JOURNAL.md). The broker must refuse new jobs at once with EJOURNAL, never dispatch
    a job it has not journaled, keep its memory bounded, finish what it acknowledged, and
    come back by itself. Also: a FORGET job's result survives a kill -9 that comes before
    the client has read it.

    The tmpfs tests need root (mount); without it they are skipped with a message. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define HB 250      /* ms, heartbeats of broker and workers */
#define EJOURNAL 11 /* the broker's error code (proto/zf_proto.h ZF_EJOURNAL) */
#define BIG 4096    /* a payload that needs a fresh tmpfs page in the journal */
/* How much the broker's RSS may grow while it refuses 3000 submits of BIG bytes: far under
   what keeping them would cost (26 KB each: 78 MB), over what their flood can hold in flight
   at once (the client socket's RCVHWM is 100,000, so all 3000, 12 MB, when the loop is
   descheduled while ZeroMQ's I/O thread reads them: 9.9 MB was seen once under CI's load,
   against an 8 MB bound; 1-4 MB is usual). ASan quarantines freed memory, so its builds get
   more. */
#ifdef __SANITIZE_ADDRESS__
#define RSS_GROWTH_KB (48 * 1024)
#else
#define RSS_GROWTH_KB (20 * 1024)
#endif

static char mounted[160]; /* the tmpfs to unmount after the test, or "" */

static void teardown(void)
{
    zt_kill_all();
    if (mounted[0]) {
        umount2(mounted, MNT_DETACH);
        mounted[0] = 0;
    }
    unsetenv("ZFLEET_JOURNAL_FAULT");
}

TestSuite(disk, .fini = teardown);

/* ------------------------------------------------------------------ helpers */

static const char *data_dir(const zt_env_t *env)
{
    static char d[160];
    snprintf(d, sizeof d, "%s/data", env->dir);
    return d;
}

/* Makes DIR/data a tmpfs of `size` (e.g. "2m"), or skips the test when that is not allowed. */
static void mount_tmpfs(const zt_env_t *env, const char *size)
{
    const char *d = data_dir(env);
    mkdir(d, 0755);
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s", size);
    if (mount("tmpfs", d, "tmpfs", 0, opts) < 0)
        cr_skip("cannot mount a tmpfs on %s (%s): this test needs root", d, strerror(errno));
    snprintf(mounted, sizeof mounted, "%s", d);
}

/* Fills the file system that holds `path` with that file. Returns its size. */
static long long fill(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
    static char block[65536];
    long long n = 0;
    for (size_t chunk = sizeof block; chunk >= 1; chunk /= 16) {
        ssize_t w;
        while ((w = write(fd, block, chunk)) > 0)
            n += w;
        cr_assert(w < 0 && (errno == ENOSPC || errno == EFBIG), "filling %s: %s", path,
                  strerror(errno));
    }
    close(fd);
    return n;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

static long long rejected_journal(msgpack_object *doc, const char *unused)
{
    (void)unused;
    msgpack_object *v =
        zt_mp_get(zt_mp_get(zt_mp_get(doc, "broker"), "rejected"), "journal unavailable");
    return v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (long long)v->via.u64 : -1;
}

static long long finished_ok(msgpack_object *doc, const char *unused)
{
    (void)unused;
    msgpack_object *v = zt_mp_get(zt_mp_get(doc, "finished"), "succeeded");
    return v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (long long)v->via.u64 : -1;
}

static bool wait_counter(const zt_env_t *env, const char *name, long long want, int timeout_ms)
{
    int64_t until = zt_now_ms() + timeout_ms;
    while (zt_now_ms() < until) {
        if (zt_broker_counter(env, name) == want)
            return true;
        zt_pause_ms(50);
    }
    return false;
}

static bool wait_succeeded(const zt_env_t *env, long long want, int timeout_ms)
{
    int64_t until = zt_now_ms() + timeout_ms;
    while (zt_now_ms() < until) {
        if (zt_with_stats(env, finished_ok, NULL) >= want)
            return true;
        zt_pause_ms(50);
    }
    return false;
}

/* A synchronous submit that must be refused with EJOURNAL and the errno's text, quickly
   (a refusal, not the client's request timeout). */
static void submit_refused(zf_client_t *c, const void *p, size_t n, const char *why)
{
    uint64_t id = 0;
    int64_t t0 = zt_now_ms();
    cr_assert_eq(zf_client_submit(c, "echo", p, n, NULL, &id), -1, "accepted as %llu",
                 (unsigned long long)id);
    cr_assert_eq(zf_client_errcode(c), ZF_CE_REJECTED, "not refused: %s", zf_client_error(c));
    cr_assert_eq(zf_client_brokercode(c), EJOURNAL, "%s", zf_client_error(c));
    char want[128];
    snprintf(want, sizeof want, "journal unavailable: %s", why);
    cr_assert(strstr(zf_client_error(c), want), "'%s' lacks '%s'", zf_client_error(c), want);
    cr_assert_lt(zt_now_ms() - t0, 2000, "the refusal took %lld ms", (long long)(zt_now_ms() - t0));
}

/* Submits n jobs without waiting and collects their answers: every one must be REJECTED
   with EJOURNAL. */
static void flood_refused(zf_client_t *c, int n, const void *p, size_t len)
{
    for (int i = 0; i < n; i++) {
        uint64_t tag;
        cr_assert_eq(zf_client_submit_async(c, "echo", p, len, NULL, &tag), 0);
    }
    int refused = 0;
    int64_t until = zt_now_ms() + 60000;
    while (refused < n && zt_now_ms() < until) {
        zf_event_t *e = zf_client_next(c, 1000);
        if (!e)
            continue;
        cr_assert_eq(e->type, ZF_EV_REJECTED, "event %d (id %llu) among the refusals", e->type,
                     (unsigned long long)e->id);
        cr_assert_eq(e->code, EJOURNAL, "%s", e->text);
        refused++;
        zf_event_destroy(&e);
    }
    cr_assert_eq(refused, n, "only %d of %d submits were answered", refused, n);
}

static void expect_result(zf_client_t *c, uint64_t id, const void *p, size_t n)
{
    zf_event_t *e = zf_client_wait(c, id, 20000);
    cr_assert(e, "no result for %llu: %s", (unsigned long long)id, zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_SUCCEEDED, "%s", e->text);
    cr_assert(e->output_len == n && !memcmp(e->output, p, n), "wrong output for %llu",
              (unsigned long long)id);
    zf_event_destroy(&e);
}

static int count_in_log(const zt_env_t *env, const char *needle)
{
    char path[192];
    snprintf(path, sizeof path, "%s/broker.log", env->dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* ------------------------------------------------------------------ disk full (tmpfs) */

/* The data directory fills up: submits are refused at once with EJOURNAL, none of them is
   dispatched, the broker's memory stays flat through thousands of refusals, jobs it had
   acknowledged still run and their results arrive once they are durable, and when space
   comes back it accepts again by itself; every job runs exactly once. */
Test(disk, full_disk_refuses_then_recovers, .timeout = 180)
{
    zt_env_t env;
    zt_env_init(&env);
    mount_tmpfs(&env, "4m");
    pid_t b = zt_broker(&env, HB, "--data", data_dir(&env), "--fsync", "always", NULL);
    zf_client_t *c = zt_client(&env);
    static unsigned char big[BIG];
    zt_pattern(big, sizeof big, 7);

    /* three acknowledged jobs wait in the queue: no worker yet */
    uint64_t acked[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(zf_client_submit(c, "echo", big, sizeof big, NULL, &acked[i]), 0, "%s",
                     zf_client_error(c));

    char filler[200];
    snprintf(filler, sizeof filler, "%s/filler", data_dir(&env));
    fill(filler);
    submit_refused(c, big, sizeof big, "No space left on device");
    submit_refused(c, big, sizeof big, "No space left on device"); /* already down */
    cr_assert_eq(zt_broker_counter(&env, "journal_ok"), 0);
    cr_assert_geq(zt_broker_counter(&env, "journal_errors"), 1);

    long rss0 = zt_rss_kb(b);
    int64_t t0 = zt_now_ms();
    flood_refused(c, 3000, big, sizeof big);
    long rss1 = zt_rss_kb(b);
    cr_log_info("broker RSS %ld kB before 3000 refused 4 KiB submits, %ld kB after (%lld ms)", rss0,
                rss1, (long long)(zt_now_ms() - t0));
    cr_assert_lt(rss1 - rss0, RSS_GROWTH_KB, "RSS grew from %ld to %ld kB", rss0, rss1);
    long long nrej = zt_with_stats(&env, rejected_journal, NULL);
    cr_assert_eq(nrej, 3002, "%lld refusals counted", nrej);
    cr_assert_eq(zt_broker_counter(&env, "accepted"), 3);

    /* the acknowledged jobs run while the disk is full; their results wait for a commit */
    zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    cr_assert(wait_succeeded(&env, 3, 20000), "the acknowledged jobs did not run");
    zf_event_t *e = zf_client_get(c, acked[0]);
    cr_assert(e && e->type == ZF_EV_STATUS && e->status == ZFLEET_RUNNING,
              "a result that is not durable was told (type %d)", e ? (int)e->type : -1);
    zf_event_destroy(&e);
    cr_assert_eq(zt_broker_counter(&env, "dispatched"), 3, "a refused job was dispatched");

    /* space comes back: the broker recovers by itself */
    cr_assert_eq(unlink(filler), 0);
    cr_assert(wait_counter(&env, "journal_ok", 1, 20000), "the journal did not recover");
    for (int i = 0; i < 3; i++)
        expect_result(c, acked[i], big, sizeof big);
    uint64_t more[5];
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(zf_client_submit(c, "echo", big, sizeof big, NULL, &more[i]), 0, "%s",
                     zf_client_error(c));
        expect_result(c, more[i], big, sizeof big);
    }
    cr_assert_eq(zt_broker_counter(&env, "dispatched"), 8, "a job ran twice, or a refused one ran");
    cr_assert_eq(count_in_log(&env, "failed: No space left on device"), 1);
    cr_assert_eq(count_in_log(&env, "writable again"), 1);

    /* what was recovered is durable: after kill -9 every result is still there */
    zt_kill(b, SIGKILL);
    zt_broker(&env, HB, "--data", data_dir(&env), "--fsync", "always", NULL);
    zf_client_destroy(&c);
    c = zt_client(&env);
    for (int i = 0; i < 3; i++)
        expect_result(c, acked[i], big, sizeof big);
    for (int i = 0; i < 5; i++)
        expect_result(c, more[i], big, sizeof big);
    cr_assert_eq(zt_broker_counter(&env, "queued"), 0);
    zf_client_destroy(&c);
}

/* ------------------------------------------------------------------ the fault seam */

static pid_t seam_broker(const zt_env_t *env, const char *fault, const char *fsync)
{
    setenv("ZFLEET_JOURNAL_FAULT", fault, 1);
    pid_t b = zt_broker(env, HB, "--data", data_dir(env), "--fsync", fsync, NULL);
    unsetenv("ZFLEET_JOURNAL_FAULT");
    return b;
}

/* Write errors (EIO): refused at once, nothing dispatched, recovered when writes work. */
Test(disk, write_eio_refuses_and_recovers, .timeout = 120)
{
    zt_env_t env;
    zt_env_init(&env);
    char fault[200];
    snprintf(fault, sizeof fault, "%s/fault", env.dir);
    seam_broker(&env, fault, "always");
    zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    uint64_t before;
    cr_assert_eq(zf_client_submit(c, "echo", "one", 3, NULL, &before), 0, "%s", zf_client_error(c));
    expect_result(c, before, "one", 3);

    write_file(fault, "write:EIO\n");
    submit_refused(c, "two", 3, "Input/output error");
    flood_refused(c, 200, "x", 1);
    cr_assert_eq(zt_broker_counter(&env, "dispatched"), 1, "an unjournaled job was dispatched");
    cr_assert_eq(zt_broker_counter(&env, "journal_ok"), 0);
    long long nrej = zt_with_stats(&env, rejected_journal, NULL);
    cr_assert_eq(nrej, 201, "%lld refusals counted", nrej);

    cr_assert_eq(unlink(fault), 0);
    cr_assert(wait_counter(&env, "journal_ok", 1, 20000), "the journal did not recover");
    uint64_t after;
    cr_assert_eq(zf_client_submit(c, "echo", "three", 5, NULL, &after), 0, "%s",
                 zf_client_error(c));
    expect_result(c, after, "three", 5);
    cr_assert_eq(zt_broker_counter(&env, "dispatched"), 2);
    cr_assert_eq(count_in_log(&env, "write of"), 1, "the failure is logged once");
    cr_assert_eq(count_in_log(&env, "writable again"), 1);
    zf_client_destroy(&c);
}

/* A failed fdatasync (EIO) does not abort the broker: it refuses new jobs, keeps serving the
   one it acknowledged (its result is pushed once a snapshot made it durable), and the
   snapshot it recovers with is what a restart finds. */
Test(disk, fsync_eio_keeps_the_broker_up, .timeout = 120)
{
    zt_env_t env;
    zt_env_init(&env);
    char fault[200];
    snprintf(fault, sizeof fault, "%s/fault", env.dir);
    pid_t b = seam_broker(&env, fault, "always");
    zf_client_t *c = zt_client(&env);
    uint64_t acked;
    cr_assert_eq(zf_client_submit(c, "echo", "kept", 4, NULL, &acked), 0, "%s", zf_client_error(c));

    write_file(fault, "sync:EIO");
    submit_refused(c, "lost", 4, "Input/output error");
    cr_assert_eq(waitpid(b, NULL, WNOHANG), 0, "the broker died on a failed fdatasync");
    zt_worker(&env, HB, NULL); /* the acknowledged job runs meanwhile */
    cr_assert(wait_succeeded(&env, 1, 20000));
    submit_refused(c, "lost", 4, "Input/output error");
    cr_assert_eq(zt_broker_counter(&env, "journal_ok"), 0);

    cr_assert_eq(unlink(fault), 0);
    expect_result(c, acked, "kept", 4);
    cr_assert_eq(zt_broker_counter(&env, "journal_ok"), 1);
    cr_assert_eq(count_in_log(&env, "fdatasync of"), 1);

    zt_kill(b, SIGKILL);
    zt_broker(&env, HB, "--data", data_dir(&env), "--fsync", "always", NULL);
    zf_client_destroy(&c);
    c = zt_client(&env);
    expect_result(c, acked, "kept", 4);
    cr_assert_eq(zt_broker_counter(&env, "queued"), 0, "a refused job came back");
    cr_assert_eq(zt_broker_counter(&env, "results_kept"), 1);
    zf_client_destroy(&c);
}

/* Under --fsync interval the sync that fails comes after the acknowledgement (that policy's
   promise): the broker stays up, refuses from then on, and every job it acknowledged runs
   once and is answered after the recovery. */
Test(disk, interval_sync_eio_refuses_after_the_failed_sync, .timeout = 120)
{
    zt_env_t env;
    zt_env_init(&env);
    char fault[200];
    snprintf(fault, sizeof fault, "%s/fault", env.dir);
    pid_t b = seam_broker(&env, fault, "interval:20");
    zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    write_file(fault, "sync:EIO");
    uint64_t ids[50];
    int acked = 0;
    while (acked < 50) {
        if (zf_client_submit(c, "echo", "x", 1, NULL, &ids[acked]) < 0)
            break;
        acked++;
        zt_pause_ms(10);
    }
    cr_assert_lt(acked, 50, "no submit was refused after the sync failed");
    cr_assert_eq(zf_client_brokercode(c), EJOURNAL, "%s", zf_client_error(c));
    cr_assert(strstr(zf_client_error(c), "journal unavailable: Input/output error"), "%s",
              zf_client_error(c));
    cr_assert_eq(waitpid(b, NULL, WNOHANG), 0, "the broker died on a failed fdatasync");
    cr_assert_eq(unlink(fault), 0);
    for (int i = 0; i < acked; i++)
        expect_result(c, ids[i], "x", 1);
    cr_assert_eq(zt_broker_counter(&env, "dispatched"), acked);
    cr_assert(wait_counter(&env, "journal_ok", 1, 20000), "the journal did not recover");
    zf_client_destroy(&c);
}

/* RETRY writes an ACCEPT record: with the journal down it is refused and the dead letter
   stays as it was; once the journal is back the retry runs the job. */
Test(disk, retry_is_refused_while_the_journal_is_down, .timeout = 120)
{
    zt_env_t env;
    zt_env_init(&env);
    char fault[200];
    snprintf(fault, sizeof fault, "%s/fault", env.dir);
    seam_broker(&env, fault, "always");
    pid_t w = zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    zf_submit_opts_t o = {.max_attempts = 1};
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "30000", 5, &o, &id), 0, "%s", zf_client_error(c));
    cr_assert(zt_wait_running(c, id, 10000), "the job never ran");
    zt_kill(w, SIGKILL);
    zf_event_t *e = zf_client_wait(c, id, 20000);
    cr_assert(e && e->status == ZFLEET_LOST, "%s", zf_client_error(c));
    zf_event_destroy(&e);

    write_file(fault, "EIO");
    submit_refused(c, "x", 1, "Input/output error");
    cr_assert_eq(zf_client_retry(c, id), -1, "a retry was accepted with the journal down");
    cr_assert_eq(zf_client_brokercode(c), EJOURNAL, "%s", zf_client_error(c));
    cr_assert_eq(zt_broker_counter(&env, "dead_letters"), 1);
    cr_assert_eq(zt_broker_counter(&env, "queued"), 0);

    cr_assert_eq(unlink(fault), 0);
    cr_assert(wait_counter(&env, "journal_ok", 1, 20000), "the journal did not recover");
    cr_assert_eq(zf_client_retry(c, id), 0, "%s", zf_client_error(c));
    cr_assert_eq(zt_broker_counter(&env, "dead_letters"), 0);
    cr_assert_eq(zt_broker_counter(&env, "queued"), 1);
    zf_client_destroy(&c);
}

/* ------------------------------------------------------------------ FORGET and kill -9 */

#define NFORGET 2000

/* A client submits FORGET jobs and does not read its results for a while: most of them sit
   in ZeroMQ's queues (the client's takes 1000 messages) when the broker is killed. After the
   restart every job's result is either one the client received or still gettable. */
Test(disk, forget_result_survives_kill_before_it_is_read, .timeout = 180)
{
    zt_env_t env;
    zt_env_init(&env);
    /* heartbeat 1000 ms: FORGET records wait 10 of them, far longer than this test needs */
    pid_t b = zt_broker(&env, 1000, "--data", data_dir(&env), "--fsync", "never", NULL);
    zf_client_t *c = zt_client(&env);
    static unsigned char big[BIG];
    zt_pattern(big, sizeof big, 3);
    zf_submit_opts_t o = {.forget = true};
    static uint64_t ids[NFORGET];
    static bool got[NFORGET];
    for (int i = 0; i < NFORGET; i++) {
        uint64_t tag;
        cr_assert_eq(zf_client_submit_async(c, "echo", big, sizeof big, &o, &tag), 0);
    }
    int accepted = 0;
    int64_t until = zt_now_ms() + 60000;
    while (accepted < NFORGET && zt_now_ms() < until) {
        zf_event_t *e = zf_client_next(c, 1000);
        if (!e)
            continue;
        cr_assert_eq(e->type, ZF_EV_ACCEPTED, "event %d: %s", e->type, e->text);
        ids[accepted++] = e->id;
        zf_event_destroy(&e);
    }
    cr_assert_eq(accepted, NFORGET);

    /* the client stops reading; the jobs run and their results are pushed */
    zt_worker(&env, HB, "--credits", "8", NULL);
    cr_assert(wait_succeeded(&env, NFORGET, 60000));
    cr_assert(wait_counter(&env, "forgotten", NFORGET, 10000));
    zt_broker_counter(&env, "queued"); /* two more loop turns: any FORGET is committed */
    zt_broker_counter(&env, "queued");
    zt_kill(b, SIGKILL);
    zt_broker(&env, 1000, "--data", data_dir(&env), "--fsync", "never", NULL);

    int received = 0;
    zf_event_t *e;
    while ((e = zf_client_next(c, 3000))) {
        for (int i = 0; e->type == ZF_EV_RESULT && i < NFORGET; i++)
            if (ids[i] == e->id && !got[i]) {
                cr_assert(e->output_len == BIG && !memcmp(e->output, big, BIG));
                got[i] = true;
                received++;
            }
        zf_event_destroy(&e);
    }
    int fetched = 0, missing = 0;
    for (int i = 0; i < NFORGET; i++) {
        if (got[i])
            continue;
        e = zf_client_get(c, ids[i]);
        if (e && e->type == ZF_EV_RESULT && e->status == ZFLEET_SUCCEEDED && e->output_len == BIG &&
            !memcmp(e->output, big, BIG))
            fetched++;
        else
            missing++;
        zf_event_destroy(&e);
    }
    cr_log_info("FORGET jobs: %d received, %d fetched after the restart, %d lost", received,
                fetched, missing);
    cr_assert_eq(missing, 0, "%d results lost (%d received, %d fetched)", missing, received,
                 fetched);
    zf_client_destroy(&c);
}

/* Under --fsync always the sync runs in the journal's flusher thread while the loop goes
   on. A sync that fails there (EIO, injected while a slow sync is in flight) takes the
   journal down as the loop's own sync did: none of the acceptances it was to cover goes
   out (each is refused with EJOURNAL), the job acknowledged before still runs, and after a
   kill -9 none of the refused jobs comes back. */
Test(disk, flusher_sync_eio_refuses_what_it_covered, .timeout = 120)
{
    enum { N = 10 };
    zt_env_t env;
    zt_env_init(&env);
    char fault[200];
    snprintf(fault, sizeof fault, "%s/fault", env.dir);
    setenv("ZFLEET_JOURNAL_SLOW_SYNC_MS", "1500", 1);
    pid_t b = seam_broker(&env, fault, "always");
    unsetenv("ZFLEET_JOURNAL_SLOW_SYNC_MS");
    zf_client_t *c = zt_client(&env);
    uint64_t acked;
    cr_assert_eq(zf_client_submit(c, "echo", "kept", 4, NULL, &acked), 0, "%s", zf_client_error(c));

    for (int i = 0; i < N; i++) {
        uint64_t tag;
        cr_assert_eq(zf_client_submit_async(c, "echo", "lost", 4, NULL, &tag), 0);
    }
    zt_pause_ms(300); /* written, and their sync sleeping in the flusher */
    write_file(fault, "sync:EIO");
    int refused = 0;
    int64_t until = zt_now_ms() + 20000;
    while (refused < N && zt_now_ms() < until) {
        zf_event_t *e = zf_client_next(c, 100);
        if (!e)
            continue;
        cr_assert_neq(e->type, ZF_EV_ACCEPTED, "job %llu acknowledged though its sync failed",
                      (unsigned long long)e->id);
        if (e->type == ZF_EV_REJECTED) {
            cr_assert_eq(e->code, EJOURNAL, "%s", e->text);
            refused++;
        }
        zf_event_destroy(&e);
    }
    cr_assert_eq(refused, N);
    cr_assert_eq(zt_broker_counter(&env, "journal_ok"), 0);

    cr_assert_eq(unlink(fault), 0);
    zt_worker(&env, HB, NULL);
    expect_result(c, acked, "kept", 4);
    cr_assert_eq(zt_broker_counter(&env, "journal_ok"), 1);

    zt_kill(b, SIGKILL);
    zt_broker(&env, HB, "--data", data_dir(&env), "--fsync", "always", NULL);
    zf_client_destroy(&c);
    c = zt_client(&env);
    expect_result(c, acked, "kept", 4);
    cr_assert_eq(zt_broker_counter(&env, "queued"), 0, "a refused job came back");
    cr_assert_eq(zt_broker_counter(&env, "results_kept"), 1);
    zf_client_destroy(&c);
}
