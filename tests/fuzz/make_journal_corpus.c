/*  Writes the journal fuzzer's seed corpus (fuzz_journal.c): journals made by the journal's
    own appenders (zf_journal_accept/start/finish/forget and zf_journal_commit), stored
    without their 8-byte magic (the target adds it), then damaged copies of them.

    Valid: every record type (ACCEPT with a small, an inline-limit and a large payload, a
    deadline, every device kind; START; FINISH in every terminal state, with an error text,
    a worker, and an output cut for being over result_max_bytes; FORGET; ATTEMPTS after a
    RECALLED; OWNER after the ACCEPT of a job submitted with CURVE on), a dead letter
    retried (a second ACCEPT for the same id), and more workers than replay's cache holds.
    Damaged: torn tails (cut in a header, in a body), a bad checksum in the last and in a
    middle record, garbage between records, an unknown type and a FINISH with a
    non-terminal state under good checksums, a zero-length and an over-long length field,
    and a payload that holds a whole valid-looking record (a false resynchronisation).

    Usage: make_journal_corpus DIR   (tests/fuzz/run.sh --make-corpus runs it; the committed
    corpus in tests/fuzz/corpus-journal/ is its output.)
*/
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "zf_journal.h"
#include "zf_pipeline.h"
#include "zf_util.h"

#define MAGIC_LEN 8
#define HDR 9
#define OUT_MAX 16 /* result_max_bytes: a longer output is journaled by its length only */

/* A fixed clock (run.sh links with -Wl,--wrap=zf_now_ms,--wrap=zf_wall_ms), so that the
   times in the records, and so the corpus, are the same on every run. */
int64_t __wrap_zf_now_ms(void)
{
    return 5000000; /* monotonic ms */
}

int64_t __wrap_zf_wall_ms(void)
{
    return 1796169600000; /* 2026-12-02 00:00 UTC */
}

static const char *outdir;
static zfb_owners_t *owners; /* two fixed keys: jobs submitted with CURVE on */
static char scratch[256];
static int nfiles;

static void die(const char *what)
{
    fprintf(stderr, "make_journal_corpus: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void write_file(const char *name, const uint8_t *buf, size_t len)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s.bin", outdir, name);
    FILE *f = fopen(p, "wb");
    if (!f || (len && fwrite(buf, 1, len, f) != len) || fclose(f) != 0)
        die(p);
    nfiles++;
}

/* ---- jobs as the broker holds them ---- */

static fnq_t fns[3];
static winfo_t *workers[80];

static job_t *job(uint64_t id, int fn, size_t plen, uint8_t device)
{
    size_t inl = plen <= ZF_JOB_INLINE_MAX ? plen : 0;
    job_t *j = calloc(1, sizeof *j + inl);
    if (!j)
        die("calloc");
    j->id = id;
    j->fn = &fns[fn];
    j->tag = id * 7919;
    j->priority = (int32_t)(id % 5) - 2;
    j->device = device;
    j->max_attempts = 3;
    j->timeout_ms = 30000;
    j->attempt = 0;
    if (inl) {
        for (size_t i = 0; i < inl; i++)
            j->inline_payload[i] = (uint8_t)(id + i);
        j->plen = (uint32_t)inl;
    } else if (plen) {
        uint8_t *p = malloc(plen);
        if (!p)
            die("malloc");
        memset(p, 'P', plen);
        if (zfb_job_copy_payload(j, p, plen) < 0)
            die("payload");
        free(p);
    }
    return j;
}

/* Makes j terminal in state st, with an output of olen bytes, an error, a worker. */
static void finish(job_t *j, uint8_t st, size_t olen, const char *error, int worker)
{
    result_t *r = j->res ? j->res : calloc(1, sizeof *r);
    if (!r)
        die("calloc");
    j->res = r;
    zmq_msg_init_size(&r->output, olen);
    memset(zmq_msg_data(&r->output), 'o', olen);
    r->error = error ? strdup(error) : NULL;
    r->duration_us = 1234 + olen;
    r->ran_on = worker >= 0 ? workers[worker] : NULL;
    j->state = st;
    j->finished_ms = zf_now_ms() - 10;
}

/* (not zfb_job_free: the workers here are static, ran_on holds no reference) */
static void job_free(job_t *j)
{
    free(j->pipe);
    zfb_job_drop_payload(j);
    if (j->res) {
        zmq_msg_close(&j->res->output);
        free(j->res->error);
        free(j->res);
    }
    free(j);
}

/* ---- journals ---- */

static zf_journal_t *jr;

static void begin(void)
{
    char p[300];
    snprintf(p, sizeof p, "%s/journal", scratch);
    unlink(p);
    zf_journal_opts_t o = {.policy = ZF_FSYNC_NEVER, .result_max_bytes = OUT_MAX, .owners = owners};
    if (!(jr = zf_journal_open(scratch, &o)))
        die("zf_journal_open");
}

/* Commits and closes the journal; returns its bytes after the magic (malloc'd). */
static uint8_t *end(size_t *len)
{
    if (zf_journal_commit(jr) < 0)
        die("zf_journal_commit");
    zf_journal_close(&jr);
    char p[300];
    snprintf(p, sizeof p, "%s/journal", scratch);
    FILE *f = fopen(p, "rb");
    if (!f)
        die(p);
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (n < MAGIC_LEN)
        die("short journal");
    uint8_t *body = malloc(n - MAGIC_LEN + 1);
    if (!body)
        die("malloc");
    memcpy(body, buf + MAGIC_LEN, n - MAGIC_LEN);
    *len = n - MAGIC_LEN;
    return body;
}

/* Offsets of the records in a body (after the magic), at most max; returns how many. */
static int records(const uint8_t *b, size_t len, size_t *offs, int max)
{
    int n = 0;
    for (size_t off = 0; off + HDR <= len && n < max;) {
        uint32_t rl = (uint32_t)b[off] | (uint32_t)b[off + 1] << 8 | (uint32_t)b[off + 2] << 16 |
                      (uint32_t)b[off + 3] << 24;
        offs[n++] = off;
        off += HDR + rl;
    }
    return n;
}

/* Recomputes the checksum of the record at off, after a deliberate change to it. */
static void reseal(uint8_t *b, size_t off)
{
    uint32_t rl = (uint32_t)b[off] | (uint32_t)b[off + 1] << 8 | (uint32_t)b[off + 2] << 16 |
                  (uint32_t)b[off + 3] << 24;
    uint32_t crc = (uint32_t)crc32(0L, b + off + 8, rl + 1);
    for (int i = 0; i < 4; i++)
        b[off + 4 + i] = (uint8_t)(crc >> (8 * i));
}

/* The damaged variants of one valid journal. */
static void damage(const char *name, const uint8_t *b, size_t len)
{
    size_t offs[256];
    int n = records(b, len, offs, 256);
    if (n < 3)
        return;
    char fn[128];
    uint8_t *c = malloc(len + 64);
    if (!c)
        die("malloc");
    /* torn tails: in the last record's header, and in its body */
    snprintf(fn, sizeof fn, "%s_torn_header", name);
    write_file(fn, b, offs[n - 1] + 5);
    snprintf(fn, sizeof fn, "%s_torn_body", name);
    write_file(fn, b, len - 3);
    /* a bad checksum in the last record (a corrupt tail), then in a middle one */
    memcpy(c, b, len);
    c[len - 1] ^= 0x5a;
    snprintf(fn, sizeof fn, "%s_bad_crc_tail", name);
    write_file(fn, c, len);
    memcpy(c, b, len);
    c[offs[n / 2] + HDR] ^= 0x01;
    snprintf(fn, sizeof fn, "%s_bad_crc_middle", name);
    write_file(fn, c, len);
    /* garbage between two records, valid records after it */
    size_t at = offs[1];
    memcpy(c, b, at);
    memcpy(c + at, "\x13\x37garbage!", 11);
    memcpy(c + at + 11, b + at, len - at);
    snprintf(fn, sizeof fn, "%s_garbage_middle", name);
    write_file(fn, c, len + 11);
    /* an unknown record type with a good checksum */
    memcpy(c, b, len);
    c[offs[1] + 8] = 9;
    reseal(c, offs[1]);
    snprintf(fn, sizeof fn, "%s_unknown_type", name);
    write_file(fn, c, len);
    /* a length of zero, and one past the end of the file */
    memcpy(c, b, len);
    memset(c + offs[1], 0, 4);
    snprintf(fn, sizeof fn, "%s_len_zero", name);
    write_file(fn, c, len);
    memcpy(c, b, len);
    memset(c + offs[n / 2], 0xff, 4);
    snprintf(fn, sizeof fn, "%s_len_huge", name);
    write_file(fn, c, len);
    /* a middle record cut short (a record lost in a write), the rest intact */
    memcpy(c, b, offs[1] + 12);
    memcpy(c + offs[1] + 12, b + offs[2], len - offs[2]);
    snprintf(fn, sizeof fn, "%s_hole_middle", name);
    write_file(fn, c, offs[1] + 12 + len - offs[2]);
    free(c);
    /* the broker's reserve (docs/JOURNAL.md): zeros past the records, whole or after a torn
       last record */
    size_t zeros = 4096;
    uint8_t *z = calloc(1, len + zeros);
    if (!z)
        die("calloc");
    memcpy(z, b, len);
    snprintf(fn, sizeof fn, "%s_reserve", name);
    write_file(fn, z, len + zeros);
    memset(z + len - 3, 0, 3);
    snprintf(fn, sizeof fn, "%s_torn_body_reserve", name);
    write_file(fn, z, len + zeros);
    free(z);
}

static void emit(const char *name, int with_damage)
{
    size_t len;
    uint8_t *b = end(&len);
    write_file(name, b, len);
    if (with_damage)
        damage(name, b, len);
    free(b);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    outdir = argv[1];
    mkdir(outdir, 0755);
    setenv("ZF_LOG", "error", 1);
    unsetenv("ZFLEET_JOURNAL_FAULT");
    zf_log_init("make_journal_corpus");
    snprintf(scratch, sizeof scratch, "%s/zfleet-jcorpus.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(scratch))
        die("mkdtemp");
    strcpy(fns[0].name, "echo");
    strcpy(fns[1].name, "resize_image");
    memset(fns[2].name, 'f', ZF_FN_MAX); /* the longest name */
    for (int i = 0; i < 80; i++) {
        workers[i] = calloc(1, sizeof *workers[i]);
        snprintf(workers[i]->name, sizeof workers[i]->name, "host:%d:cpu:%d", 4000 + i, i);
        snprintf(workers[i]->devname, sizeof workers[i]->devname, "cpu:%d", i);
        workers[i]->refs = 1;
    }
    job_t *a, *b, *c, *d;

    /* the empty journal: the magic only */
    begin();
    emit("empty", 0);

    /* owners (CURVE): an OWNER record after each ACCEPT of an owned job; a RECALLED's
       ATTEMPTS record; an owned job retried (a second ACCEPT and OWNER) */
    owners = zfb_owners_new();
    uint8_t k1[ZF_KEY_BYTES], k2[ZF_KEY_BYTES];
    for (int i = 0; i < ZF_KEY_BYTES; i++)
        k1[i] = (uint8_t)(i * 7 + 1), k2[i] = (uint8_t)(255 - i);
    uint32_t o1 = zfb_owners_intern(owners, k1), o2 = zfb_owners_intern(owners, k2);
    begin();
    a = job(40, 0, 5, ZF_DEV_ANY);
    a->owner = o1;
    zf_journal_accept(jr, a);
    b = job(41, 1, 9, ZF_DEV_CPU);
    b->owner = o2;
    zf_journal_accept(jr, b);
    b->attempt = 1;
    zf_journal_start(jr, b);
    zfb_job_res(b)->attempt_base = 1; /* given back with RECALLED: not an attempt */
    zf_journal_attempts(jr, b);
    a->attempt = 1;
    zf_journal_start(jr, a);
    finish(a, ZF_ST_LOST, 5, "worker lost", 0);
    zf_journal_finish(jr, a);
    a->state = ZF_ST_QUEUED; /* retried: a second ACCEPT, its owner again */
    zf_journal_accept(jr, a);
    emit("owners", 1);
    job_free(a);
    job_free(b);

    /* one of each record type, in a job's life */
    begin();
    a = job(1, 0, 5, ZF_DEV_ANY);
    zf_journal_accept(jr, a);
    a->attempt = 1;
    zf_journal_start(jr, a);
    finish(a, ZF_ST_SUCCEEDED, 5, NULL, 0);
    zf_journal_finish(jr, a);
    zf_journal_forget(jr, a->id);
    emit("lifecycle", 1);
    job_free(a);

    /* a pipeline whose steps have options: its STEP after the ACCEPT, step 1 run, a hand-on
       (STEP with the output as the next step's input), step 2 started */
    begin();
    a = job(50, 0, 5, ZF_DEV_CPU);
    if (!(a->pipe = calloc(1, sizeof *a->pipe)))
        die("calloc");
    zfb_pipe_t *pipe = a->pipe;
    pipe->n = 3;
    pipe->opts = true;
    for (int i = 0; i < 3; i++) {
        strcpy(pipe->fn[i], fns[i % 2].name);
        pipe->dev[i] = i == 1 ? ZF_DEV_GPU : ZF_DEV_CPU;
        pipe->timeout_ms[i] = 1000u * (uint32_t)(i + 1);
        pipe->retries[i] = (uint8_t)i;
    }
    zf_journal_accept(jr, a);
    a->attempt = 1;
    zf_journal_start(jr, a);
    pipe->cur = 1;
    a->fn = &fns[1];
    a->state = ZF_ST_QUEUED;
    zfb_job_res(a)->attempt_base = 1;
    zf_journal_step(jr, a, true);
    a->attempt = 2;
    zf_journal_start(jr, a);
    emit("pipeline_opts", 1);
    job_free(a);

    /* queued and running jobs left unfinished: they replay as queued */
    begin();
    a = job(10, 0, 0, ZF_DEV_CPU);
    b = job(11, 1, ZF_JOB_INLINE_MAX, ZF_DEV_GPU);
    c = job(12, 2, ZF_JOB_INLINE_MAX + 1, ZF_DEV_ANY);
    c->deadline_at = zf_now_ms() + 60000;
    zf_journal_accept(jr, a);
    zf_journal_accept(jr, b);
    zf_journal_accept(jr, c);
    b->attempt = 1;
    zf_journal_start(jr, b);
    b->attempt = 2;
    zf_journal_start(jr, b);
    emit("unfinished", 1);
    job_free(a);
    job_free(b);
    job_free(c);

    /* every terminal state, errors, workers; an output over the bound (cut) */
    begin();
    static const uint8_t states[] = {ZF_ST_SUCCEEDED,  ZF_ST_FAILED,  ZF_ST_TIMED_OUT,
                                     ZF_ST_CANCELLED,  ZF_ST_EXPIRED, ZF_ST_LOST,
                                     ZF_ST_OUTPUT_LOST};
    for (int i = 0; i < 7; i++) {
        a = job(100 + (uint64_t)i, i % 3, 8, ZF_DEV_ANY);
        zf_journal_accept(jr, a);
        a->attempt = 1;
        zf_journal_start(jr, a);
        finish(a, states[i], states[i] == ZF_ST_SUCCEEDED ? 4 : 0,
               states[i] == ZF_ST_SUCCEEDED ? NULL : "attempt 1: worker lost: no heartbeat", i);
        zf_journal_finish(jr, a);
        job_free(a);
    }
    a = job(120, 0, 3, ZF_DEV_ANY);
    zf_journal_accept(jr, a);
    a->attempt = 1;
    zf_journal_start(jr, a);
    finish(a, ZF_ST_SUCCEEDED, OUT_MAX + 100, NULL, 1); /* journaled by its length only */
    zf_journal_finish(jr, a);
    job_free(a);
    emit("terminal_states", 1);

    /* a dead letter retried: lost, accepted again, then it succeeds and is forgotten */
    begin();
    a = job(200, 1, 2000, ZF_DEV_GPU);
    zf_journal_accept(jr, a);
    for (uint32_t t = 1; t <= 3; t++) {
        a->attempt = t;
        zf_journal_start(jr, a);
    }
    finish(a, ZF_ST_LOST, 0, "attempt 3: worker died (killed by signal 9)", 2);
    zf_journal_finish(jr, a);
    a->state = ZF_ST_QUEUED;
    zf_journal_accept(jr, a); /* RETRY */
    a->attempt = 4;
    zf_journal_start(jr, a);
    zmq_msg_close(&a->res->output);
    free(a->res->error);
    finish(a, ZF_ST_SUCCEEDED, 6, "attempt 3: worker died", 3);
    zf_journal_finish(jr, a);
    d = job(201, 0, 1, ZF_DEV_ANY);
    zf_journal_accept(jr, d);
    zf_journal_forget(jr, a->id);
    emit("dead_letter_retried", 1);
    job_free(a);
    job_free(d);

    /* records for ids never accepted (after a compaction, or damage) */
    begin();
    a = job(300, 0, 1, ZF_DEV_ANY);
    a->attempt = 1;
    zf_journal_start(jr, a);
    finish(a, ZF_ST_FAILED, 0, "x", -1);
    zf_journal_finish(jr, a);
    zf_journal_forget(jr, 301);
    b = job(302, 0, 1, ZF_DEV_ANY);
    zf_journal_accept(jr, b);
    emit("orphans", 0);
    job_free(a);
    job_free(b);

    /* more workers than the replay's cache of where results ran */
    begin();
    for (int i = 0; i < 70; i++) {
        a = job(400 + (uint64_t)i, 0, 0, ZF_DEV_CPU);
        zf_journal_accept(jr, a);
        finish(a, ZF_ST_SUCCEEDED, 1, NULL, i);
        zf_journal_finish(jr, a);
        job_free(a);
    }
    emit("many_workers", 0);

    /* a payload that holds a whole valid record (a FORGET of job 500 itself): a
       resynchronisation after damage before it must not start inside the payload */
    begin();
    a = job(499, 0, 1, ZF_DEV_ANY);
    zf_journal_accept(jr, a);
    job_free(a);
    b = job(500, 0, 17, ZF_DEV_ANY);
    uint8_t rec[17] = {8, 0, 0, 0, 0, 0, 0, 0, 4, 0xf4, 1, 0, 0, 0, 0, 0, 0};
    uint32_t crc = (uint32_t)crc32(0L, rec + 8, 9);
    for (int i = 0; i < 4; i++)
        rec[4 + i] = (uint8_t)(crc >> (8 * i));
    memcpy(b->inline_payload, rec, sizeof rec);
    zf_journal_accept(jr, b);
    c = job(501, 0, 1, ZF_DEV_ANY);
    zf_journal_accept(jr, c);
    emit("record_in_payload", 1);
    job_free(b);
    job_free(c);

    /* a FINISH whose state is not terminal, under a good checksum (malformed) */
    begin();
    a = job(600, 0, 1, ZF_DEV_ANY);
    zf_journal_accept(jr, a);
    finish(a, ZF_ST_FAILED, 0, NULL, -1);
    zf_journal_finish(jr, a);
    b = job(601, 0, 1, ZF_DEV_ANY);
    zf_journal_accept(jr, b);
    size_t len;
    uint8_t *body = end(&len);
    size_t offs[8];
    if (records(body, len, offs, 8) == 3) {
        body[offs[1] + HDR + 8] = ZF_ST_RUNNING;
        reseal(body, offs[1]);
        write_file("finish_not_terminal", body, len);
    }
    free(body);
    job_free(a);
    job_free(b);

    char p[300];
    snprintf(p, sizeof p, "%s/journal", scratch);
    unlink(p);
    rmdir(scratch);
    for (int i = 0; i < 80; i++)
        free(workers[i]);
    printf("make_journal_corpus: wrote %d files to %s\n", nfiles, outdir);
    return 0;
}
