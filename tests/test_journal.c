/*  Durability with real processes: the broker's journal survives kill -9 (jobs run again,
    results are delivered exactly once), a torn or corrupt tail is cut and reported, the
    journal is compacted, each fsync policy works, and waiting clients resume.

    Heartbeats are 250 ms and every wait has a generous timeout, so a loaded 2-core machine
    slows these tests down but does not fail them. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "harness.h"

#define HB 250 /* ms, heartbeats of broker and workers */

TestSuite(journal, .fini = zt_kill_all);

/* ------------------------------------------------------------------ helpers */

static const char *data_dir(const zt_env_t *env)
{
    static char d[160];
    snprintf(d, sizeof d, "%s/data", env->dir);
    return d;
}

static const char *journal_path(const zt_env_t *env)
{
    static char p[192];
    snprintf(p, sizeof p, "%s/data/journal", env->dir);
    return p;
}

static pid_t broker(const zt_env_t *env, const char *fsync)
{
    return zt_broker(env, HB, "--data", data_dir(env), "--fsync", fsync, NULL);
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* The broker's log (all its runs appended). Caller frees. */
static char *broker_log(const zt_env_t *env)
{
    char path[192];
    snprintf(path, sizeof path, "%s/broker.log", env->dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static int count_substr(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* Submits n echo jobs synchronously (each acknowledged: durable); ids into ids. */
static void submit_echoes(zf_client_t *c, int n, uint64_t *ids)
{
    for (int i = 0; i < n; i++) {
        char p[32];
        int len = snprintf(p, sizeof p, "job-%d", i);
        cr_assert_eq(zf_client_submit(c, "echo", p, (size_t)len, NULL, &ids[i]), 0, "%s",
                     zf_client_error(c));
    }
}

/* ------------------------------------------------------------------ crash mid-run */

/* One job of the crash test, keyed by the id the broker gave it. */
typedef struct {
    int ms;          /* spin time, also the payload */
    uint64_t id;     /* 0 until its acceptance arrived */
    int results;     /* RESULT events received for it */
    bool in_session; /* submitted or waited for on the current connection */
} slot_t;

typedef struct {
    uint64_t id;
    int slot;
    UT_hash_handle hh;
} idmap_t;

typedef struct {
    slot_t *s;
    int n, done;
    idmap_t *ids;  /* job id -> slot */
    idmap_t *tags; /* submit tag on this connection -> slot */
    zf_client_t *c;
    int inflight;
} crash_t;

static void map_put(idmap_t **map, uint64_t key, int slot)
{
    idmap_t *m = calloc(1, sizeof *m);
    m->id = key;
    m->slot = slot;
    HASH_ADD(hh, *map, id, sizeof m->id, m);
}

static int map_get(idmap_t *map, uint64_t key)
{
    idmap_t *m;
    HASH_FIND(hh, map, &key, sizeof key, m);
    return m ? m->slot : -1;
}

static void map_clear(idmap_t **map)
{
    idmap_t *m, *tmp;
    HASH_ITER(hh, *map, m, tmp)
    {
        HASH_DEL(*map, m);
        free(m);
    }
}

static void on_event(crash_t *t, zf_event_t *e)
{
    if (e->type == ZF_EV_ACCEPTED) {
        int i = map_get(t->tags, e->tag);
        cr_assert_geq(i, 0, "ACCEPTED with a tag we never sent");
        cr_assert_eq(t->s[i].id, 0, "slot %d accepted twice", i);
        t->s[i].id = e->id;
        map_put(&t->ids, e->id, i);
    } else if (e->type == ZF_EV_REJECTED) {
        cr_assert_fail("submission rejected: %s", e->text);
    } else if (e->type == ZF_EV_RESULT) {
        int i = map_get(t->ids, e->id);
        cr_assert_geq(i, 0, "result for job %llu that we were never told was accepted",
                      (unsigned long long)e->id);
        cr_assert_eq(e->status, ZFLEET_SUCCEEDED, "job %llu ended %s: %s",
                     (unsigned long long)e->id, zfleet_state_name(e->status), e->text);
        char p[16];
        int len = snprintf(p, sizeof p, "%d", t->s[i].ms);
        cr_assert(e->output_len == (size_t)len && !memcmp(e->output, p, (size_t)len));
        t->s[i].results++;
        cr_assert_eq(t->s[i].results, 1, "job %llu delivered twice", (unsigned long long)e->id);
        if (t->s[i].in_session) {
            t->s[i].in_session = false;
            t->inflight--;
        }
        t->done++;
    }
    /* STATUS answers to our WAITs and stray errors carry nothing to check */
}

/* A fresh connection: nothing is in flight on it yet. */
static void new_session(crash_t *t, const zt_env_t *env)
{
    zf_client_destroy(&t->c);
    t->c = zt_client(env);
    zf_client_set_heartbeat(t->c, HB);
    map_clear(&t->tags);
    t->inflight = 0;
    for (int i = 0; i < t->n; i++)
        t->s[i].in_session = false;
}

/* Keeps up to `window` jobs in flight: acknowledged jobs without a result are waited for
   (a restarted broker pushes results only to connections that asked), the rest submitted. */
static int next_slot;
static void top_up(crash_t *t, int window)
{
    /* Attempts to spare: after a restart a worker re-registers once per message it sent
       while the broker was down, and each extra registration ends the attempt it held
       (reported with issue 5). This test is about durability, not attempt counting. */
    static const zf_submit_opts_t opts = {.max_attempts = 50};
    for (int scanned = 0; t->inflight < window && scanned < t->n; scanned++) {
        int i = next_slot;
        next_slot = (next_slot + 1) % t->n;
        slot_t *s = &t->s[i];
        if (s->results || s->in_session)
            continue;
        if (s->id) {
            /* zero timeout: sends WAIT and returns; the result comes as an event */
            zf_event_t *e = zf_client_wait(t->c, s->id, 0);
            if (e) {
                on_event(t, e);
                zf_event_destroy(&e);
                continue;
            }
        } else {
            char p[16];
            int len = snprintf(p, sizeof p, "%d", s->ms);
            uint64_t tag;
            cr_assert_eq(zf_client_submit_async(t->c, "spin", p, (size_t)len, &opts, &tag), 0);
            map_put(&t->tags, tag, i);
        }
        s->in_session = true;
        t->inflight++;
    }
}

static void crash_run(int nkills, unsigned seed)
{
    enum { N = 5000, WINDOW = 400 };
    zt_env_t env;
    zt_env_init(&env);
    srand(seed);
    fprintf(stderr, "crash test: %d kill(s), seed %u, dir %s\n", nkills, seed, env.dir);
    crash_t t = {.n = N, .s = calloc(N, sizeof(slot_t))};
    for (int i = 0; i < N; i++)
        t.s[i].ms = 1 + rand() % 10;
    /* kill points: numbers of results received, spread over the run */
    int kill_at[3];
    for (int k = 0; k < nkills; k++)
        kill_at[k] =
            (k + 1) * N / (nkills + 1) + rand() % (N / (2 * (nkills + 1))) - N / (4 * (nkills + 1));
    /* ZT_CRASH_FSYNC=never|interval:MS compares the policies' cost; the default proves
       the strongest promise */
    const char *policy = getenv("ZT_CRASH_FSYNC") ? getenv("ZT_CRASH_FSYNC") : "always";
    pid_t b = broker(&env, policy);
    /* two credits: a worker has its next job in hand while the broker syncs */
    zt_worker(&env, HB, "--credits", "2", NULL);
    zt_worker(&env, HB, "--credits", "2", NULL);
    cr_assert(zt_wait_workers(&env, 2, 10000));
    new_session(&t, &env);
    next_slot = 0;
    int kills = 0;
    int64_t until = zt_now_ms() + 150000;
    while (t.done < N) {
        cr_assert_lt(zt_now_ms(), until, "only %d of %d jobs finished", t.done, N);
        top_up(&t, WINDOW);
        zf_event_t *e = zf_client_next(t.c, 100);
        for (; e; e = zf_client_next(t.c, 0)) {
            on_event(&t, e);
            zf_event_destroy(&e);
        }
        if (kills < nkills && t.done >= kill_at[kills]) {
            zt_kill(b, SIGKILL);
            /* whatever the dead broker had sent is still readable: take it, then reconnect */
            for (e = zf_client_next(t.c, 300); e; e = zf_client_next(t.c, 300)) {
                on_event(&t, e);
                zf_event_destroy(&e);
            }
            int acked = 0;
            for (int i = 0; i < N; i++)
                acked += t.s[i].id != 0;
            fprintf(stderr, "  kill %d at %d results, %d accepted\n", kills + 1, t.done, acked);
            b = broker(&env, policy);
            new_session(&t, &env);
            kills++;
        }
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(t.s[i].results, 1, "slot %d (job %llu) had %d results", i,
                     (unsigned long long)t.s[i].id, t.s[i].results);
    char *log = broker_log(&env);
    cr_assert_eq(count_substr(log, "journal: cut"), 0, "a clean journal was cut:\n%s", log);
    cr_assert_eq(count_substr(log, "restored"), nkills + 1);
    free(log);
    zf_client_destroy(&t.c);
    map_clear(&t.ids);
    map_clear(&t.tags);
    free(t.s);
}

Test(journal, broker_killed_mid_run_every_accepted_job_succeeds_once, .timeout = 200)
{
    crash_run(1, (unsigned)time(NULL));
}

Test(journal, three_kills_in_one_run_every_accepted_job_succeeds_once, .timeout = 250)
{
    crash_run(3, (unsigned)time(NULL) ^ 0x5a5a);
}

/* ------------------------------------------------------------------ torn tail */

/* Where a journal file's records end (records: u32 len, u32 crc, u8 type, body): its size,
   or where the zeros the broker reserves ahead of its records begin (a record never starts
   with 9 zero bytes: its type is 1 or more). *last: the offset of the last record and *len
   its length, when wanted. */
static long long records_end(const char *path, long long *last, long long *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    long long off = 8, size = file_size(path);
    while (off + 9 <= size) {
        unsigned char h[9];
        fseek(f, off, SEEK_SET);
        cr_assert_eq(fread(h, 1, 9, f), 9);
        static const unsigned char zero[9];
        if (!memcmp(h, zero, 9))
            break; /* the reserve */
        long long l = h[0] | h[1] << 8 | h[2] << 16 | (long long)h[3] << 24;
        if (last)
            *last = off;
        if (len)
            *len = 9 + l;
        off += 9 + l;
    }
    cr_assert_leq(off, size, "journal is not whole records before the test damaged it");
    fseek(f, off, SEEK_SET);
    for (int ch; (ch = fgetc(f)) != EOF;) /* the rest is the reserve: zeros only */
        cr_assert_eq(ch, 0, "journal is not whole records before the test damaged it");
    fclose(f);
    return off;
}

/* Offset of the last record in a journal file. */
static long long last_record(const char *path, long long *len)
{
    long long last = -1;
    records_end(path, &last, len);
    return last;
}

/* Runs a broker, submits 20 jobs (no worker: they stay queued), kills it, lets damage()
   hurt the file, restarts, and checks the first 19 jobs are back and the cut reported. */
static void torn_case(void (*damage)(const char *path, long long at, long long len))
{
    enum { N = 20 };
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "always");
    zf_client_t *c = zt_client(&env);
    uint64_t ids[N];
    submit_echoes(c, N, ids);
    zf_client_destroy(&c);
    zt_kill(b, SIGKILL);
    long long len = 0, at = last_record(journal_path(&env), &len);
    damage(journal_path(&env), at, len);
    long long damaged = file_size(journal_path(&env));
    broker(&env, "always");
    char *log = broker_log(&env);
    char want[128];
    snprintf(want, sizeof want, "journal: cut %lld bytes of torn/corrupt tail at offset %lld",
             damaged - at, at);
    cr_assert(strstr(log, want), "expected \"%s\" in the log:\n%s", want, log);
    cr_assert_eq(count_substr(log, "journal: cut"), 1, "the cut is reported in one line");
    free(log);
    cr_assert_eq(file_size(journal_path(&env)), at, "the file is cut to its valid prefix");
    c = zt_client(&env);
    for (int i = 0; i < N - 1; i++) {
        zf_event_t *e = zf_client_get(c, ids[i]);
        cr_assert_not_null(e, "job %d lost: %s", i, zf_client_error(c));
        cr_assert_eq(e->status, ZFLEET_QUEUED);
        zf_event_destroy(&e);
    }
    cr_assert_null(zf_client_get(c, ids[N - 1]), "the damaged record's job came back");
    /* the broker keeps going: a new id is none of the old ones (not even the cut job's;
       ids carry no order, so only distinctness is asserted), and everything runs */
    uint64_t fresh;
    cr_assert_eq(zf_client_submit(c, "echo", "x", 1, NULL, &fresh), 0);
    for (int i = 0; i < N; i++)
        cr_assert_neq(fresh, ids[i], "a new job got the id of job %d", i);
    zt_worker(&env, HB, NULL);
    for (int i = 0; i < N - 1; i++) {
        zf_event_t *e = zf_client_wait(c, ids[i], 20000);
        cr_assert_not_null(e, "%s", zf_client_error(c));
        cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
        char p[32];
        int plen = snprintf(p, sizeof p, "job-%d", i);
        cr_assert(e->output_len == (size_t)plen && !memcmp(e->output, p, (size_t)plen));
        zf_event_destroy(&e);
    }
    zf_client_destroy(&c);
}

static void truncate_last(const char *path, long long at, long long len)
{
    cr_assert_eq(truncate(path, at + len - 3), 0);
}

static void flip_last(const char *path, long long at, long long len)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    unsigned char byte;
    off_t where = (off_t)(at + len - 2); /* in the payload */
    cr_assert_eq(pread(fd, &byte, 1, where), 1);
    byte ^= 0x40;
    cr_assert_eq(pwrite(fd, &byte, 1, where), 1);
    close(fd);
}

Test(journal, truncated_last_record_is_cut_and_earlier_jobs_kept, .timeout = 60)
{
    torn_case(truncate_last);
}

Test(journal, flipped_byte_in_last_record_is_cut_and_earlier_jobs_kept, .timeout = 60)
{
    torn_case(flip_last);
}

/* ------------------------------------------------------------------ the reserve */

/* Under a syncing policy the broker grows its journal ahead of its records, with zeros
   (docs/JOURNAL.md "The reserve"), so that a sync writes only data. A kill -9 leaves those
   zeros after the last record: the restart takes them for the reserve, not for a torn
   tail (nothing cut, every job back), and appends on into it. */
Test(journal, the_reserve_past_the_records_is_kept_and_appended_into, .timeout = 90)
{
    enum { N = 20 };
    zt_env_t env;
    zt_env_init(&env);
    struct statfs fs;
    cr_assert_eq(statfs(env.dir, &fs), 0);
    if (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC)
        cr_skip_test("%s is a tmpfs: the broker reserves nothing there (its syncs are free)",
                     env.dir);
    pid_t b = broker(&env, "always");
    zf_client_t *c = zt_client(&env);
    uint64_t ids[2 * N];
    submit_echoes(c, N, ids);
    zf_client_destroy(&c);
    zt_kill(b, SIGKILL);
    const char *jp = journal_path(&env);
    long long size = file_size(jp), end = records_end(jp, NULL, NULL);
    cr_assert_gt(size, end, "no reserve past the records (%lld bytes, records end at %lld)", size,
                 end);
    cr_assert_geq(size - end, 512 * 1024, "a reserve of only %lld bytes", size - end);

    b = broker(&env, "always");
    c = zt_client(&env);
    submit_echoes(c, N, ids + N);
    zf_client_destroy(&c);
    zt_kill(b, SIGKILL);
    cr_assert_eq(file_size(jp), size, "the restart did not append into the reserve");
    long long end2 = records_end(jp, NULL, NULL);
    cr_assert_gt(end2, end, "the second run's records are not after the first's");

    broker(&env, "always");
    char *log = broker_log(&env);
    cr_assert_eq(count_substr(log, "journal: cut"), 0, "the reserve was cut as damage:\n%s", log);
    free(log);
    c = zt_client(&env);
    for (int i = 0; i < 2 * N; i++) {
        zf_event_t *e = zf_client_get(c, ids[i]);
        cr_assert(e && e->status == ZFLEET_QUEUED, "job %d lost: %s", i, zf_client_error(c));
        zf_event_destroy(&e);
    }
    zf_client_destroy(&c);
}

/* ------------------------------------------------------------------ compaction */

Test(journal, compaction_keeps_the_journal_small_and_recovers_live_jobs, .timeout = 250)
{
    enum { N = 100000, WINDOW = 512, KEPT = 1000, LIVE = 50 };
    zt_env_t env;
    zt_env_init(&env);
    /* 256 KiB instead of 64 MiB so that a test-sized run compacts many times; a result
       store of 1000 makes the other 99,000 results dead weight. "never" keeps the run fast;
       compaction syncs its new file whatever the policy. */
    pid_t b = zt_broker(&env, HB, "--data", data_dir(&env), "--fsync", "never",
                        "--compact-min-bytes", "262144", "--max-results", "1000", NULL);
    pid_t w1 = zt_worker(&env, HB, "--credits", "8", NULL);
    pid_t w2 = zt_worker(&env, HB, "--credits", "8", NULL);
    cr_assert(zt_wait_workers(&env, 2, 10000));
    zf_client_t *c = zt_client(&env);
    long long peak = 0, appended_estimate = 0;
    int sent = 0, done = 0;
    uint64_t last_ids[KEPT];
    int64_t until = zt_now_ms() + 200000, next_stat = 0;
    while (done < N) {
        cr_assert_lt(zt_now_ms(), until, "only %d of %d jobs done", done, N);
        while (sent < N && sent - done < WINDOW) {
            char p[16];
            int len = snprintf(p, sizeof p, "%08d", sent);
            cr_assert_eq(zf_client_submit_async(c, "echo", p, (size_t)len, NULL, NULL), 0);
            sent++;
        }
        for (zf_event_t *e = zf_client_next(c, 1000); e; e = zf_client_next(c, 0)) {
            cr_assert_neq(e->type, ZF_EV_REJECTED, "%s", e->text);
            if (e->type == ZF_EV_RESULT) {
                cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
                last_ids[done % KEPT] = e->id;
                done++;
            }
            zf_event_destroy(&e);
        }
        if (zt_now_ms() >= next_stat) {
            long long s = file_size(journal_path(&env));
            peak = s > peak ? s : peak;
            next_stat = zt_now_ms() + 20;
        }
    }
    /* accept + start + finish + forget of an 8-byte echo is about 180 bytes */
    appended_estimate = (long long)N * 180;
    /* park LIVE jobs in the queue, then crash */
    zt_kill(w1, SIGKILL);
    zt_kill(w2, SIGKILL);
    cr_assert(zt_wait_workers(&env, 0, 10000));
    uint64_t live[LIVE];
    submit_echoes(c, LIVE, live);
    zf_client_destroy(&c);
    /* one more heartbeat, for a compaction that was due */
    zt_pause_ms(2 * HB);
    long long final = file_size(journal_path(&env));
    char *log = broker_log(&env);
    int compactions = count_substr(log, "journal: compacted");
    fprintf(stderr,
            "compaction: peak %lld bytes, final %lld bytes, %d compactions, "
            "~%lld bytes appended in all\n",
            peak, final, compactions, appended_estimate);
    const char *last = log, *p;
    while ((p = strstr(last + 1, "journal: compacted")))
        last = p;
    if (compactions)
        fprintf(stderr, "  last: %.*s\n", (int)strcspn(last, "\n"), last);
    free(log);
    cr_assert_geq(compactions, 5);
    cr_assert_lt(final * 10, appended_estimate,
                 "the journal is not a small fraction of the "
                 "bytes written (%lld vs %lld)",
                 final, appended_estimate);
    cr_assert_lt(peak, 8ll << 20, "the journal grew to %lld bytes", peak);
    zt_kill(b, SIGKILL);
    broker(&env, "never");
    c = zt_client(&env);
    /* the kept results (the last 1000) are all there, with their output */
    int found = 0;
    for (int i = 0; i < KEPT; i++) {
        zf_event_t *e = zf_client_get(c, last_ids[i]);
        if (e) {
            cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
            cr_assert_eq(e->output_len, 8);
            found++;
            zf_event_destroy(&e);
        }
    }
    /* eviction runs once a heartbeat, so a few over the bound may still be kept */
    cr_assert_geq(found, KEPT - 50, "only %d of the last %d results came back", found, KEPT);
    zt_worker(&env, HB, NULL);
    for (int i = 0; i < LIVE; i++) {
        zf_event_t *e = zf_client_wait(c, live[i], 20000);
        cr_assert_not_null(e, "%s", zf_client_error(c));
        cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
        zf_event_destroy(&e);
    }
    zf_client_destroy(&c);
}

/* ------------------------------------------------------------------ policies */

/* Jobs finished under each policy survive a kill -9 of the broker (a process crash loses
   nothing in any policy: records are written every loop turn); unfinished ones run after. */
static void policy_case(const char *policy)
{
    enum { N = 100 };
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, policy);
    pid_t w = zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    uint64_t ids[N];
    submit_echoes(c, N, ids);
    for (int i = 0; i < N; i++) {
        zf_event_t *e = zf_client_wait(c, ids[i], 20000);
        cr_assert_not_null(e, "%s: %s", policy, zf_client_error(c));
        cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
        zf_event_destroy(&e);
    }
    zt_kill(w, SIGKILL);
    uint64_t queued;
    cr_assert_eq(zf_client_submit(c, "echo", "later", 5, NULL, &queued), 0);
    zf_client_destroy(&c);
    zt_kill(b, SIGKILL);
    broker(&env, policy);
    c = zt_client(&env);
    for (int i = 0; i < N; i++) {
        zf_event_t *e = zf_client_get(c, ids[i]);
        cr_assert_not_null(e, "%s: result %d lost: %s", policy, i, zf_client_error(c));
        cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
        char p[32];
        int len = snprintf(p, sizeof p, "job-%d", i);
        cr_assert(e->output_len == (size_t)len && !memcmp(e->output, p, (size_t)len));
        zf_event_destroy(&e);
    }
    zt_worker(&env, HB, NULL);
    zf_event_t *e = zf_client_wait(c, queued, 20000);
    cr_assert_not_null(e, "%s: %s", policy, zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

Test(journal, policy_always_works_and_survives_kill, .timeout = 60)
{
    policy_case("always");
}

Test(journal, policy_interval_works_and_survives_kill, .timeout = 60)
{
    policy_case("interval:20");
}

Test(journal, policy_never_works_and_survives_kill, .timeout = 60)
{
    policy_case("never");
}

Test(journal, no_journal_forgets_jobs_on_restart, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = zt_broker(&env, HB, "--no-journal", NULL);
    zf_client_t *c = zt_client(&env);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "echo", "x", 1, NULL, &id), 0);
    zt_kill(b, SIGKILL);
    zt_broker(&env, HB, "--no-journal", NULL);
    cr_assert_null(zf_client_get(c, id), "an in-memory broker remembered a job");
    zf_client_destroy(&c);
    cr_assert_eq(file_size(journal_path(&env)), -1);
}

/* ------------------------------------------------------------------ more recovery */

Test(journal, second_broker_on_the_same_directory_is_refused, .timeout = 30)
{
    zt_env_t env, other;
    zt_env_init(&env);
    zt_env_init(&other);
    broker(&env, "always");
    char log[192];
    snprintf(log, sizeof log, "%s/second.log", other.dir);
    const char *args[] = {"--clients", other.client_ep, "--workers", other.worker_ep,
                          "--data",    data_dir(&env),  NULL};
    pid_t p = zt_spawn("broker/zfleet-broker", log, args);
    int st = zt_wait_exit(p, 10000);
    cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1, "second broker did not fail");
}

Test(journal, dead_letter_survives_restart_with_its_payload, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "always");
    pid_t w = zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    zf_submit_opts_t o = {.max_attempts = 1};
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "30000", 5, &o, &id), 0);
    cr_assert(zt_wait_running(c, id, 10000), "the job never ran");
    zt_kill(w, SIGKILL); /* the only attempt dies with its worker: lost, a dead letter */
    zf_event_t *e = zf_client_wait(c, id, 20000);
    cr_assert_not_null(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_LOST);
    zf_event_destroy(&e);
    zt_kill(b, SIGKILL);
    broker(&env, "always");
    zf_client_destroy(&c);
    c = zt_client(&env);
    e = zf_client_get(c, id);
    cr_assert_not_null(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_LOST);
    zf_event_destroy(&e);
    char out[4096];
    cr_assert_eq(zt_cli(&env, out, sizeof out, "dead", NULL), 0);
    char idtext[32];
    snprintf(idtext, sizeof idtext, "%llu", (unsigned long long)id);
    cr_assert(strstr(out, idtext), "dead letter missing after restart:\n%s", out);
    /* a retry needs the payload, which came back from the journal; make it quick */
    zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    cr_assert_eq(zf_client_retry(c, id), 0, "%s", zf_client_error(c));
    cr_assert_eq(zf_client_cancel(c, id), 0, "%s", zf_client_error(c));
    e = zf_client_wait(c, id, 20000);
    cr_assert_not_null(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_CANCELLED);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

/* A result dropped under FORGET does not come back with a replay; a kept one does. */
Test(journal, forgotten_result_does_not_come_back_after_restart, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "always");
    zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    zf_submit_opts_t o = {.forget = true};
    uint64_t kept, gone;
    cr_assert_eq(zf_client_submit(c, "echo", "kept", 4, NULL, &kept), 0, "%s", zf_client_error(c));
    zf_event_t *e = zf_client_wait(c, kept, 10000);
    cr_assert(e && e->status == ZFLEET_SUCCEEDED, "%s", zf_client_error(c));
    zf_event_destroy(&e);
    cr_assert_eq(zf_client_submit(c, "echo", "gone", 4, &o, &gone), 0, "%s", zf_client_error(c));
    e = zf_client_wait(c, gone, 10000);
    cr_assert(e && e->status == ZFLEET_SUCCEEDED, "%s", zf_client_error(c));
    zf_event_destroy(&e);
    /* The FORGET record is written some heartbeats after the push (forget_pending counts
       the jobs whose record waits) and committed by the next loop turn; the second of two
       requests is answered after that turn has ended. */
    int64_t until = zt_now_ms() + 20000;
    while (zt_broker_counter(&env, "forget_pending") != 0 && zt_now_ms() < until)
        zt_pause_ms(50);
    cr_assert_eq(zt_broker_counter(&env, "forget_pending"), 0);
    for (int i = 0; i < 2; i++) {
        e = zf_client_stats(c);
        cr_assert_not_null(e);
        zf_event_destroy(&e);
    }
    cr_assert_eq(zt_broker_counter(&env, "forgotten"), 1);
    zt_kill(b, SIGKILL);
    broker(&env, "always");
    zf_client_destroy(&c);
    c = zt_client(&env);
    e = zf_client_get(c, kept);
    cr_assert(e && e->type == ZF_EV_RESULT && e->output_len == 4, "%s", zf_client_error(c));
    zf_event_destroy(&e);
    cr_assert_null(zf_client_get(c, gone), "a forgotten result came back from the journal");
    cr_assert_eq(zf_client_brokercode(c), 4);
    cr_assert_eq(zt_broker_counter(&env, "results_kept"), 1);
    zf_client_destroy(&c);
}

/* The id in a `zfleet --json` document, or 0. */
static unsigned long long json_id(const char *doc)
{
    const char *p = strstr(doc, "\"id\":");
    return p ? strtoull(p + 5, NULL, 10) : 0;
}

/* Job ids are safe integers in JSON and JavaScript (1 <= id < 2^53) and never repeat across
   restarts (kill -9 and a clean stop), even when every earlier job was forgotten, so that
   nothing in the journal remembers its id. */
Test(journal, job_ids_are_below_2_53_and_never_repeat_across_restarts, .timeout = 120)
{
    enum { RUNS = 3, PER = 4 };
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "always");
    zt_worker(&env, HB, NULL);
    unsigned long long ids[RUNS * PER];
    char out[1024];
    for (int r = 0; r < RUNS; r++) {
        cr_assert(zt_wait_workers(&env, 1, 15000), "run %d: no worker", r);
        for (int i = 0; i < PER; i++) {
            int rc = zt_cli(&env, out, sizeof out, "--json", "submit", "echo", "x", "--wait",
                            "--forget", "--timeout", "15000", NULL);
            cr_assert_eq(rc, 0, "run %d: submit exited %d: %s", r, rc, out);
            unsigned long long id = json_id(out);
            cr_assert(id >= 1 && id < (1ull << 53), "id %llu is not a safe integer: %s", id, out);
            for (int k = 0; k < r * PER + i; k++)
                cr_assert_neq(ids[k], id, "id %llu handed out twice (run %d)", id, r);
            ids[r * PER + i] = id;
        }
        /* The FORGET records are written some heartbeats after the push (forget_pending
           counts those still due): once none is due, none of these results is in the
           journal any more, and nothing there remembers their ids. */
        int64_t until = zt_now_ms() + 15000;
        while (zt_broker_counter(&env, "forget_pending") != 0 && zt_now_ms() < until)
            zt_pause_ms(50);
        cr_assert_eq(zt_broker_counter(&env, "forget_pending"), 0);
        cr_assert_eq(zt_broker_counter(&env, "forgotten"), PER, "run %d", r);
        if (r + 1 < RUNS) {
            zt_kill(b, r == 0 ? SIGKILL : SIGTERM);
            b = broker(&env, "always");
            char idtext[32];
            snprintf(idtext, sizeof idtext, "%llu", ids[r * PER]);
            int rc = zt_cli(&env, out, sizeof out, "get", idtext, NULL);
            cr_assert_neq(rc, 0, "a forgotten job came back after the restart: %s", out);
            cr_assert_eq(zt_broker_counter(&env, "results_kept"), 0);
        }
    }
}

/* When the next block of ids cannot be reserved on disk, a submit is refused at once with
   ZF_EJOURNAL (no id that could repeat is handed out), and submits work again as soon as
   the write succeeds. The write is made to fail by a directory where its temp file goes. */
Test(journal, submit_is_refused_while_ids_cannot_be_reserved, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    broker(&env, "always");
    char tmp[192], out[1024];
    snprintf(tmp, sizeof tmp, "%s/ids.next.tmp", data_dir(&env));
    cr_assert_eq(mkdir(tmp, 0700), 0, "%s", tmp);
    int rc = zt_cli(&env, out, sizeof out, "--json", "submit", "echo", "x", NULL);
    cr_assert_eq(rc, 5, "submit exited %d: %s", rc, out);
    cr_assert(strstr(out, "journal unavailable: cannot reserve job ids") &&
                  strstr(out, "\"code\":11"),
              "%s", out);
    cr_assert_eq(rmdir(tmp), 0);
    rc = zt_cli(&env, out, sizeof out, "--json", "submit", "echo", "x", NULL);
    cr_assert_eq(rc, 0, "submit exited %d after the write works again: %s", rc, out);
    cr_assert_gt(json_id(out), 0, "%s", out);
}

/* ------------------------------------------------------------------ client resume */

typedef struct {
    zf_client_t *c;
    uint64_t id;
    zf_event_t *result;
} waiter_t;

static void *wait_thread(void *arg)
{
    waiter_t *w = arg;
    w->result = zf_client_wait(w->c, w->id, 30000);
    return NULL;
}

/* A client blocked in zf_client_wait across a kill -9 and restart of the broker gets the
   job's result, once. */
Test(journal, waiting_client_resumes_across_broker_restart, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "always");
    zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    waiter_t w = {.c = zt_client(&env)};
    zf_client_set_heartbeat(w.c, HB);
    /* Attempts to spare: after a restart a worker re-registers once per message it sent
       while the broker was down, and each extra registration ends the attempt it held
       (reported with issue 5; this test is about the client). */
    zf_submit_opts_t o = {.max_attempts = 20};
    cr_assert_eq(zf_client_submit(w.c, "spin", "1500", 4, &o, &w.id), 0);
    pthread_t th;
    pthread_create(&th, NULL, wait_thread, &w);
    zt_pause_ms(400);
    zt_kill(b, SIGKILL);
    zt_pause_ms(100);
    broker(&env, "always");
    pthread_join(th, NULL);
    cr_assert_not_null(w.result, "wait failed: %s", zf_client_error(w.c));
    cr_assert_eq(w.result->status, ZFLEET_SUCCEEDED);
    cr_assert_eq(w.result->id, w.id);
    zf_event_destroy(&w.result);
    /* nothing else arrives for it */
    zf_event_t *e = zf_client_next(w.c, 500);
    cr_assert(!e || e->type != ZF_EV_RESULT, "result delivered twice");
    zf_event_destroy(&e);
    zf_client_destroy(&w.c);
}

/* A connection that submitted a job expects its result pushed and sends no WAIT. After a
   kill -9 and restart the restored job has no waiters, so the push never comes: the wait
   must ask within a heartbeat even while other traffic (a long job's progress) keeps the
   connection busy, not only after a silence that never happens. */
Test(journal, wait_for_own_job_asks_after_restart_despite_other_traffic, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "always");
    zf_client_t *c = zt_client(&env);
    zf_client_set_heartbeat(c, HB);
    uint64_t id;
    /* no worker yet: the job is journaled and stays queued */
    cr_assert_eq(zf_client_submit(c, "spin", "300", 3, NULL, &id), 0, "%s", zf_client_error(c));
    zt_kill(b, SIGKILL);
    broker(&env, "always");
    zt_worker(&env, HB, NULL);
    zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 2, 10000));
    uint64_t tag; /* progress of this job is pushed to c every 50 ms while the wait runs */
    cr_assert_eq(zf_client_submit_async(c, "spin", "30000", 5, NULL, &tag), 0);
    zf_event_t *e = zf_client_wait(c, id, 8000);
    cr_assert_not_null(e, "the wait was starved by other traffic: %s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

/* Queued payloads on both sides of the broker's inline bound (1024 bytes: inside the job,
   above it a frame of its own) come back from the journal byte for byte after kill -9. */
Test(journal, queued_payloads_of_every_size_survive_restart, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "always");
    zf_client_t *c = zt_client(&env);
    static const size_t sizes[] = {0, 1, 1024, 1025, 65536};
    enum { N = sizeof sizes / sizeof sizes[0] };
    unsigned char *buf = malloc(65536);
    cr_assert_not_null(buf);
    uint64_t ids[N];
    for (size_t i = 0; i < N; i++) { /* no worker yet: they stay queued */
        zt_pattern(buf, sizes[i], (unsigned)i);
        cr_assert_eq(zf_client_submit(c, "echo", buf, sizes[i], NULL, &ids[i]), 0, "%s",
                     zf_client_error(c));
    }
    zt_kill(b, SIGKILL);
    broker(&env, "always");
    zt_worker(&env, HB, NULL);
    for (size_t i = 0; i < N; i++) {
        zf_event_t *r = zf_client_wait(c, ids[i], 15000);
        cr_assert_not_null(r, "size %zu: %s", sizes[i], zf_client_error(c));
        cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "size %zu: %s", sizes[i], r->text);
        cr_assert_eq(r->output_len, sizes[i]);
        size_t k = zt_pattern_mismatch(r->output, sizes[i], (unsigned)i);
        cr_assert_eq(k, sizes[i], "size %zu: byte %zu differs after the restart", sizes[i], k);
        zf_event_destroy(&r);
    }
    free(buf);
    zf_client_destroy(&c);
}

/* ------------------------------------------------------------------ damage mid-journal */

/* Offset of the record of `type` whose body starts with `id` (*len: its whole length). */
static long long find_record(const char *path, int type, uint64_t id, long long *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    long long off = 8, size = file_size(path), found = -1;
    while (found < 0 && off + 17 <= size) {
        unsigned char h[17];
        fseek(f, off, SEEK_SET);
        cr_assert_eq(fread(h, 1, 17, f), 17);
        long long l = h[0] | h[1] << 8 | h[2] << 16 | (long long)h[3] << 24;
        uint64_t rid = 0;
        for (int i = 7; i >= 0; i--)
            rid = rid << 8 | h[9 + i];
        if (h[8] == type && rid == id) {
            found = off;
            *len = 9 + l;
        }
        off += 9 + l;
    }
    fclose(f);
    cr_assert_geq(found, 0, "no record of type %d for job %llu", type, (unsigned long long)id);
    return found;
}

/* The whole file. Caller frees. */
static unsigned char *slurp(const char *path, long long *size)
{
    *size = file_size(path);
    cr_assert_geq(*size, 0, "%s missing", path);
    unsigned char *p = malloc((size_t)*size + 1);
    FILE *f = fopen(path, "rb");
    cr_assert(p && f);
    cr_assert_eq(fread(p, 1, (size_t)*size, f), (size_t)*size);
    fclose(f);
    return p;
}

static void xor_byte(const char *path, long long where, unsigned char mask)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    unsigned char byte;
    cr_assert_eq(pread(fd, &byte, 1, (off_t)where), 1);
    byte ^= mask;
    cr_assert_eq(pwrite(fd, &byte, 1, (off_t)where), 1);
    close(fd);
}

/* One payload byte of the record: its checksum fails, its length is right. */
static void flip_payload(const char *path, long long at, long long len)
{
    xor_byte(path, at + len - 2, 0x40);
}

/* The top byte of its length: the record claims to run past the end of the file, so the
   scan must search byte by byte for where valid records resume. */
static void flip_length(const char *path, long long at, long long len)
{
    (void)len;
    xor_byte(path, at + 3, 0x80);
}

/* Runs zfleet-broker with args on env's data directory; returns its exit status. */
static int broker_exit(const zt_env_t *env, const char *extra)
{
    char log[192];
    snprintf(log, sizeof log, "%s/broker.log", env->dir);
    const char *args[] = {"--clients", env->client_ep, "--workers", env->worker_ep,
                          "--data",    data_dir(env),  extra,       NULL};
    pid_t pid = zt_spawn("broker/zfleet-broker", log, args);
    int st = zt_wait_exit(pid, 30000);
    cr_assert_neq(st, -1, "zfleet-broker %s did not exit", extra ? extra : "");
    cr_assert(WIFEXITED(st), "zfleet-broker %s died of a signal", extra ? extra : "");
    return WEXITSTATUS(st);
}

/* 10 finished jobs (results kept) and 40 queued ones; damage() hits the ACCEPT of queued
   job 20, in the middle of the file. The broker refuses to start and leaves the file as it
   is; --journal-repair saves the original aside and skips that record only: every other
   job comes back (results kept, the queued ones run), the damaged one is gone. */
static void mid_case(void (*damage)(const char *path, long long at, long long len), const char *why)
{
    enum { DONE = 10, N = 50, HIT = DONE + 20 };
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "always");
    pid_t w = zt_worker(&env, HB, NULL);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    zf_client_t *c = zt_client(&env);
    uint64_t ids[N];
    submit_echoes(c, DONE, ids);
    for (int i = 0; i < DONE; i++) {
        zf_event_t *e = zf_client_wait(c, ids[i], 10000);
        cr_assert(e && e->status == ZFLEET_SUCCEEDED, "%s", zf_client_error(c));
        zf_event_destroy(&e);
    }
    zt_kill(w, SIGKILL);
    cr_assert(zt_wait_workers(&env, 0, 10000));
    for (int i = DONE; i < N; i++) { /* queued: no worker */
        char p[32];
        int len = snprintf(p, sizeof p, "job-%d", i);
        cr_assert_eq(zf_client_submit(c, "echo", p, (size_t)len, NULL, &ids[i]), 0);
    }
    zf_client_destroy(&c);
    zt_kill(b, SIGKILL);

    const char *jp = journal_path(&env);
    long long len = 0, at = find_record(jp, 1, ids[HIT], &len);
    long long records = records_end(jp, NULL, NULL);
    damage(jp, at, len);
    long long size, size2;
    unsigned char *before = slurp(jp, &size);
    cr_assert_gt(size - (at + len), (N - HIT - 1) * 50, "the damage is not in the middle");

    /* refused, untouched */
    cr_assert_eq(broker_exit(&env, NULL), 1, "the broker started on a damaged journal");
    unsigned char *after = slurp(jp, &size2);
    cr_assert(size2 == size && !memcmp(before, after, (size_t)size),
              "the refused start changed the journal");
    free(after);
    char *log = broker_log(&env);
    char want[160];
    snprintf(want, sizeof want, "is damaged at offset %lld (%s) and %d valid record(s)", at, why,
             N - HIT - 1);
    cr_assert(strstr(log, want), "expected \"%s\" in the log:\n%s", want, log);
    cr_assert(strstr(log, "--journal-repair"), "the refusal does not say how to repair");
    cr_assert_eq(count_substr(log, "journal: cut"), 0, "damage in the middle was cut");
    free(log);

    /* repaired: the original aside, byte for byte; only the damaged record skipped */
    cr_assert_eq(broker_exit(&env, "--journal-repair"), 0);
    log = broker_log(&env);
    cr_assert(strstr(log, "skipped 1 damaged range(s)"), "%s", log);
    snprintf(want, sizeof want, "%llu (gone)", (unsigned long long)ids[HIT]);
    cr_assert(strstr(log, want), "the report does not name the lost job:\n%s", log);
    const char *saved = strstr(log, "original is saved as ");
    cr_assert_not_null(saved, "%s", log);
    char saved_path[256];
    cr_assert_eq(sscanf(saved + strlen("original is saved as "), "%255s", saved_path), 1);
    free(log);
    after = slurp(saved_path, &size2);
    cr_assert(size2 == size && !memcmp(before, after, (size_t)size),
              "the saved original differs from the damaged journal");
    free(after);
    free(before);
    cr_assert_eq(file_size(jp), records - len, "the repair skipped more than the damaged record");
    /* a second repair finds nothing to do */
    cr_assert_eq(broker_exit(&env, "--journal-repair"), 0);
    log = broker_log(&env);
    cr_assert(strstr(log, "has no damage"), "%s", log);
    free(log);

    broker(&env, "always");
    c = zt_client(&env);
    for (int i = 0; i < N; i++) {
        zf_event_t *e = zf_client_get(c, ids[i]);
        if (i == HIT) {
            cr_assert_null(e, "the damaged job came back");
            cr_assert_eq(zf_client_brokercode(c), 4);
            continue;
        }
        cr_assert_not_null(e, "job %d lost by the repair: %s", i, zf_client_error(c));
        cr_assert_eq(e->status, i < DONE ? ZFLEET_SUCCEEDED : ZFLEET_QUEUED, "job %d", i);
        zf_event_destroy(&e);
    }
    zt_worker(&env, HB, NULL);
    for (int i = 0; i < N; i++) {
        if (i == HIT)
            continue;
        zf_event_t *e = zf_client_wait(c, ids[i], 20000);
        cr_assert_not_null(e, "job %d: %s", i, zf_client_error(c));
        cr_assert_eq(e->status, ZFLEET_SUCCEEDED);
        char p[32];
        int plen = snprintf(p, sizeof p, "job-%d", i);
        cr_assert(e->output_len == (size_t)plen && !memcmp(e->output, p, (size_t)plen),
                  "job %d: wrong output", i);
        zf_event_destroy(&e);
    }
    zf_client_destroy(&c);
}

Test(journal, bad_checksum_mid_journal_refuses_start_and_repair_skips_only_it, .timeout = 90)
{
    mid_case(flip_payload, "bad checksum");
}

Test(journal, bad_length_mid_journal_refuses_start_and_repair_resyncs, .timeout = 90)
{
    mid_case(flip_length, "torn record");
}

/* ------------------------------------------------------------------ large outputs */

#define BIG_OUTPUT (2359296) /* 2.25 MiB */

/* A job with a 2.25 MiB output finishes; the broker is killed and restarted. Returns the
   job's id; the result before the restart was whole. */
static uint64_t big_output_then_restart(zt_env_t *env, const char *max_bytes)
{
    zt_env_init(env);
    pid_t b = max_bytes ? zt_broker(env, HB, "--data", data_dir(env), "--result-max-bytes",
                                    max_bytes, NULL)
                        : broker(env, "always");
    zt_worker(env, HB, NULL);
    cr_assert(zt_wait_workers(env, 1, 10000));
    zf_client_t *c = zt_client(env);
    unsigned char *buf = malloc(BIG_OUTPUT);
    zt_pattern(buf, BIG_OUTPUT, 7);
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "echo", buf, BIG_OUTPUT, NULL, &id), 0, "%s",
                 zf_client_error(c));
    free(buf);
    zf_event_t *e = zf_client_wait(c, id, 20000);
    cr_assert(e && e->status == ZFLEET_SUCCEEDED && e->output_len == BIG_OUTPUT, "%s",
              zf_client_error(c));
    zf_event_destroy(&e);
    zf_client_destroy(&c);
    zt_kill(b, SIGKILL);
    if (max_bytes)
        zt_broker(env, HB, "--data", data_dir(env), "--result-max-bytes", max_bytes, NULL);
    else
        broker(env, "always");
    return id;
}

Test(journal, large_output_survives_restart_whole_with_default_flags, .timeout = 60)
{
    zt_env_t env;
    uint64_t id = big_output_then_restart(&env, NULL);
    zf_client_t *c = zt_client(&env);
    zf_event_t *e = zf_client_get(c, id);
    cr_assert_not_null(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_SUCCEEDED, "%s: %s", zfleet_state_name(e->status), e->text);
    cr_assert_eq(e->output_len, BIG_OUTPUT);
    cr_assert_eq(zt_pattern_mismatch(e->output, BIG_OUTPUT, 7), BIG_OUTPUT,
                 "the output changed across the restart");
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

static long long finished_count(msgpack_object *doc, const char *state)
{
    msgpack_object *v = zt_mp_get(zt_mp_get(doc, "finished"), state);
    return v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (long long)v->via.u64 : -1;
}

Test(journal, output_over_result_max_bytes_comes_back_output_lost, .timeout = 60)
{
    zt_env_t env;
    uint64_t id = big_output_then_restart(&env, "1048576");
    zf_client_t *c = zt_client(&env);
    zf_event_t *e = zf_client_get(c, id);
    cr_assert_not_null(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_OUTPUT_LOST, "%s: %s", zfleet_state_name(e->status), e->text);
    cr_assert_str_eq(zfleet_state_name(e->status), "output_lost");
    cr_assert_eq(e->output_len, 0, "partial output handed back");
    cr_assert(strstr(e->text, "output lost") && strstr(e->text, "2359296"),
              "the error does not say what was lost: %s", e->text);
    zf_event_destroy(&e);
    e = zf_client_wait(c, id, 10000);
    cr_assert(e && e->status == ZFLEET_OUTPUT_LOST && e->output_len == 0);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
    /* counted apart, never among the successes */
    cr_assert_eq(zt_with_stats(&env, finished_count, "output_lost"), 1);
    cr_assert_eq(zt_with_stats(&env, finished_count, "succeeded"), 0);
    char idtext[32], out[4096], outfile[192];
    snprintf(idtext, sizeof idtext, "%llu", (unsigned long long)id);
    snprintf(outfile, sizeof outfile, "%s/out.bin", env.dir);
    cr_assert_eq(zt_cli(&env, out, sizeof out, "get", idtext, NULL), 1, "get: %s", out);
    cr_assert(strstr(out, "output_lost"), "%s", out);
    cr_assert_eq(zt_cli(&env, out, sizeof out, "wait", idtext, "--out", outfile, NULL), 1,
                 "wait: %s", out);
    cr_assert_eq(file_size(outfile), -1, "wait --out wrote a file for a lost output");
    cr_assert_eq(zt_cli(&env, out, sizeof out, "--json", "get", idtext, NULL), 1);
    cr_assert(strstr(out, "\"status\":\"output_lost\"") && strstr(out, "\"output_bytes\":0"), "%s",
              out);
}

/* One attempt of a job that runs past its timeout: a worker that takes it, times out and
   exits (code 3: a handler cannot be stopped, PROTOCOL.md §7.4), leaving no worker behind. */
static void one_timed_out_attempt(const zt_env_t *env)
{
    pid_t w = zt_worker(env, HB, NULL);
    int status = zt_wait_exit(w, 20000);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 3,
              "the worker should exit 3 after its run timeout (status %d)", status);
    cr_assert(zt_wait_workers(env, 0, 10000));
}

/* PROTOCOL.md §4: RETRY sets a dead letter's attempts used to 0 while its lease number goes
   on, and the journal keeps both. A job with max_attempts 2 times out twice (a dead letter,
   lease 2), is retried, and the broker is killed before it runs again: after the restart it
   still reads 0 attempts used and gets both its attempts (two runs), not one (a broker that
   journaled only the lease number counted 2 used, and ended it after one more run). */
Test(journal, retried_job_keeps_its_attempts_across_kill, .timeout = 150)
{
    zt_env_t env;
    zt_env_init(&env);
    pid_t b = broker(&env, "always");
    zf_client_t *c = zt_client(&env);
    zf_submit_opts_t o = {.max_attempts = 2, .timeout_ms = 200};
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, "spin", "30000", 5, &o, &id), 0);
    one_timed_out_attempt(&env);
    one_timed_out_attempt(&env);
    zf_event_t *e = zf_client_wait(c, id, 20000);
    cr_assert_not_null(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_TIMED_OUT);
    cr_assert_eq(e->attempts, 2);
    zf_event_destroy(&e);
    cr_assert_eq(zf_client_retry(c, id), 0, "%s", zf_client_error(c));
    e = zf_client_get(c, id);
    cr_assert_not_null(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_QUEUED);
    cr_assert_eq(e->attempts, 0);
    zf_event_destroy(&e);
    zf_client_destroy(&c);

    zt_kill(b, SIGKILL);
    broker(&env, "always");
    c = zt_client(&env);
    e = zf_client_get(c, id);
    cr_assert_not_null(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_QUEUED);
    cr_assert_eq(e->attempts, 0, "a retried job's attempts used after a restart: %u", e->attempts);
    zf_event_destroy(&e);
    one_timed_out_attempt(&env);
    e = zf_client_get(c, id);
    cr_assert_not_null(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_QUEUED, "one attempt is left after the first run");
    cr_assert_eq(e->attempts, 1);
    zf_event_destroy(&e);
    one_timed_out_attempt(&env);
    e = zf_client_wait(c, id, 20000);
    cr_assert_not_null(e, "%s", zf_client_error(c));
    cr_assert_eq(e->status, ZFLEET_TIMED_OUT);
    cr_assert_eq(e->attempts, 2);
    cr_assert(strstr(e->text, "attempt 1:") && strstr(e->text, "attempt 2:"),
              "causes of both attempts: %s", e->text);
    zf_event_destroy(&e);
    /* this broker's run: both attempts dispatched, the first requeued */
    cr_assert_eq(zt_broker_counter(&env, "dispatched"), 2);
    cr_assert_eq(zt_broker_counter(&env, "requeued"), 1);
    zf_client_destroy(&c);
}

/* ------------------------------------------------------------------ the flusher thread */

/* Reads every event that arrives within ms; the ACCEPTED ones' ids go to ids[*n]. */
static void collect_accepted(zf_client_t *c, int ms, uint64_t *ids, int *n)
{
    int64_t until = zt_now_ms() + ms;
    for (zf_event_t *e; zt_now_ms() < until;) {
        if (!(e = zf_client_next(c, 50)))
            continue;
        cr_assert_neq(e->type, ZF_EV_REJECTED, "rejected: %s", e->text);
        if (e->type == ZF_EV_ACCEPTED)
            ids[(*n)++] = e->id;
        zf_event_destroy(&e);
    }
}

static void submit_async_n(zf_client_t *c, int n)
{
    for (int i = 0; i < n; i++) {
        uint64_t tag;
        cr_assert_eq(zf_client_submit_async(c, "echo", "x", 1, NULL, &tag), 0);
    }
}

/* Under --fsync always the fdatasync runs in the journal's flusher thread: the loop keeps
   answering while a sync is in flight, holds the acceptances that sync covers until it
   ends, and a kill -9 in the middle of it loses no job the client was told was accepted.
   $ZFLEET_JOURNAL_SLOW_SYNC_MS (the test hook) makes every sync take 3 s longer. */
Test(journal, broker_killed_while_a_sync_is_in_flight_keeps_every_accepted_job, .timeout = 120)
{
    enum { N = 20, SLOW_MS = 3000 };
    zt_env_t env;
    zt_env_init(&env);
    setenv("ZFLEET_JOURNAL_SLOW_SYNC_MS", "3000", 1);
    pid_t b = broker(&env, "always");
    unsetenv("ZFLEET_JOURNAL_SLOW_SYNC_MS");
    zf_client_t *c = zt_client(&env);
    uint64_t ids[2 * N];
    int n = 0;
    /* a first batch, acknowledged once its (slow) sync ended */
    submit_async_n(c, N);
    int64_t until = zt_now_ms() + 60000;
    while (n < N && zt_now_ms() < until)
        collect_accepted(c, 200, ids, &n);
    cr_assert_eq(n, N, "the first batch was acknowledged after its sync");
    /* a second batch: written to the file, its sync in flight, then the broker killed */
    int64_t sent = zt_now_ms();
    submit_async_n(c, N);
    /* the loop is not blocked by the sync: it counts the new jobs and answers stats */
    until = zt_now_ms() + 10000;
    long long accepted = 0;
    while ((accepted = zt_broker_counter(&env, "accepted")) < 2 * N && zt_now_ms() < until)
        zt_pause_ms(20);
    cr_assert_eq(accepted, 2 * N);
    int before = n;
    collect_accepted(c, 100, ids, &n);
    if (zt_now_ms() - sent < SLOW_MS) /* (a bound only if the machine was that slow) */
        cr_assert_eq(n, before, "no acceptance goes out before the sync that covers it ends");
    zt_kill(b, SIGKILL);
    zt_wait_exit(b, 5000);
    zf_client_destroy(&c);

    broker(&env, "always");
    c = zt_client(&env);
    for (int i = 0; i < n; i++) {
        zf_event_t *e = zf_client_get(c, ids[i]);
        cr_assert_not_null(e, "accepted job %llu lost: %s", (unsigned long long)ids[i],
                           zf_client_error(c));
        cr_assert_eq(e->status, ZFLEET_QUEUED, "job %llu is %s", (unsigned long long)ids[i],
                     zfleet_state_name(e->status));
        zf_event_destroy(&e);
    }
    /* the unacknowledged ones may come back too (they reached the page cache), never more */
    long long queued = zt_broker_counter(&env, "queued");
    cr_assert(queued >= n && queued <= 2 * N, "queued %lld after the restart", queued);
    zf_client_destroy(&c);
}
