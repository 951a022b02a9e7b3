/*  libFuzzer target over the broker's journal replay (broker/journal.c).

    Each input is the bytes of a journal after its 8-byte magic; it is replayed as it is, then
    (when that changes it) with the checksum of every record its length fields delimit
    recomputed, so that mutated bodies reach the record decoders. The target writes the magic
    and the input to DIR/journal, in one scratch directory per process (on /dev/shm where
    there is one, so syncs cost nothing), opens it with zf_journal_open and replays it with
    zf_journal_replay, which scans the records and applies every valid one. It checks what
    zf_journal.h promises:

    - replay returns 0 or -1, and -1 comes with a logged error;
    - every restored job is sound: a unique id, a function, a known device kind, a state
      that is queued or terminal, a terminal job has a result, its payload and output
      bytes can be read in full (ASan sees any pointer outside them), a cut output comes
      back with no bytes, its attempts used (attempt - attempt_base) do not wrap;
    - 0: the file is what it was or a prefix of it (a torn tail cut), and opening and
      replaying it again restores the same jobs and cuts nothing; where the records are
      followed by zeros only (the reserve, docs/JOURNAL.md) the file is kept whole, with
      no warning, and the journal's size is where the zeros start;
    - -1 (damage with valid records after it): no job restored, the file byte for byte
      as it was; zf_journal_repair then succeeds, and the repaired file replays with 0
      and needs no cut.

    Every job the replay hands out is freed as the broker would free it, so LeakSanitizer
    sees any leak in replay or repair. Log lines are formatted (so a bad format argument
    is caught) and counted, not printed: -Wl,--wrap=zf_log,--wrap=zf_log_event route them here.

    Build and run: tests/fuzz/run.sh (see tests/fuzz/README.md). To replay a finding with a
    real broker: (printf ZFJRNL01; cat CRASH) > DIR/journal; zfleet-broker --data DIR.
*/
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "zf_journal.h"
#include "zf_util.h"

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "fuzz_journal: check failed at line %d: %s\n", __LINE__, #cond); \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

#define MAGIC "ZFJRNL01"
#define MAGIC_LEN 8
#define MAX_JOBS 4096 /* more than any input of -max_len can hold (an ACCEPT is 52+ bytes) */

static char dir[256], path[300];
static int nerrors, nwarns;                      /* log lines so far */
static unsigned long n_whole, n_cut, n_repaired; /* replays by outcome, printed at exit */
static unsigned long n_reserve;                  /* whole, with zeros after the records */
static unsigned long n_resealed;                 /* inputs replayed resealed too */

/* ---- log lines: formatted, counted, dropped ---- */

static void count_line(zf_log_level_t level, const char *fmt, va_list ap)
{
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    if (level == ZF_LOG_ERROR)
        nerrors++;
    else if (level == ZF_LOG_WARN)
        nwarns++;
}

void __wrap_zf_log(zf_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    count_line(level, fmt, ap);
    va_end(ap);
}

/* the journal's structured events (-Wl,--wrap=zf_log_event) */
void __wrap_zf_log_event(zf_log_level_t level, const char *event, const zf_log_fields_t *fields,
                         const char *fmt, ...)
{
    (void)event;
    (void)fields;
    va_list ap;
    va_start(ap, fmt);
    count_line(level, fmt, ap);
    va_end(ap);
}

/* ---- the broker's side: functions and restored jobs ---- */

/* The owners replay adds the keys of OWNER records to, one table per replay. */
static zfb_owners_t *owners;

typedef struct {
    fnq_t *fns; /* by name, owned here, freed after each input */
    uint64_t ids[MAX_JOBS];
    uint8_t states[MAX_JOBS];
    uint32_t attempts[MAX_JOBS], plens[MAX_JOBS];
    uint64_t outlens[MAX_JOBS], sums[MAX_JOBS];
    int n;
} restored_t;

static fnq_t *get_fn(void *arg, const char *name)
{
    restored_t *rs = arg;
    size_t n = strlen(name);
    CHECK(n >= 1 && n <= ZF_FN_MAX);
    fnq_t *f;
    HASH_FIND(hh, rs->fns, name, n, f);
    if (f)
        return f;
    if (!(f = calloc(1, sizeof *f)))
        return NULL; /* the replay must take this as out of memory */
    memcpy(f->name, name, n + 1);
    HASH_ADD(hh, rs->fns, name[0], n, f);
    return f;
}

/* Reads every byte, so ASan sees a payload or output pointer that is short or stale. */
static uint64_t sum_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t s = n;
    for (size_t i = 0; i < n; i++)
        s = s * 31 + b[i];
    return s;
}

/* What the broker does with a job it drops: payload, result, where it ran, the job. */
static void job_free(job_t *j)
{
    zfb_job_free(&j);
}

static void restore(void *arg, job_t *j)
{
    restored_t *rs = arg;
    CHECK(rs->n < MAX_JOBS);
    for (int i = 0; i < rs->n; i++)
        CHECK(rs->ids[i] != j->id);
    CHECK(j->fn != NULL && j->fn->name[0]);
    fnq_t *f;
    HASH_FIND(hh, rs->fns, j->fn->name, strlen(j->fn->name), f);
    CHECK(f == j->fn); /* one of ours, not a copy */
    CHECK(j->device <= ZF_DEV_GPU);
    CHECK(j->state == ZF_ST_QUEUED || zf_state_is_terminal(j->state));
    CHECK(j->qpos == ZF_HEAP_NONE && j->tpos == ZF_HEAP_NONE);
    CHECK(!j->worker && !j->waiter && !j->acked);
    /* an owner is a key the replay added to the table, never a stray number */
    CHECK(j->owner == 0 || zfb_owners_get(owners, j->owner) != NULL);
    uint64_t sum = sum_bytes(zfb_job_payload(j), j->plen);
    CHECK(!j->big || zmq_msg_size(j->big) == j->plen);
    uint64_t outlen = 0;
    if (zf_state_is_terminal(j->state)) {
        CHECK(j->res != NULL);
        CHECK(j->finished_ms > 0);
        outlen = zmq_msg_size(&j->res->output);
        sum = sum * 131 + sum_bytes(zmq_msg_data(&j->res->output), outlen);
        if (j->res->error)
            sum = sum * 131 + sum_bytes(j->res->error, strlen(j->res->error));
        if (j->res->ran_on) {
            CHECK(j->res->ran_on->refs >= 1);
            sum = sum * 131 + sum_bytes(j->res->ran_on->name, strlen(j->res->ran_on->name));
        }
        if (j->state == ZF_ST_OUTPUT_LOST)
            CHECK(outlen == 0);
        /* only dead letters and failed jobs keep their payload, for a retry */
        if (j->state != ZF_ST_LOST && j->state != ZF_ST_TIMED_OUT && j->state != ZF_ST_FAILED)
            CHECK(j->plen == 0);
    } else {
        /* an unfinished job's result record holds only its uncharged deliveries */
        CHECK(!j->res || (zmq_msg_size(&j->res->output) == 0 && !j->res->error && !j->res->ran_on));
    }
    /* attempts used (attempt - attempt_base) never wrap */
    CHECK(!j->res || j->res->attempt_base <= j->attempt);
    sum = sum * 131 + (j->res ? j->res->attempt_base : 0);
    rs->ids[rs->n] = j->id;
    rs->states[rs->n] = j->state;
    rs->attempts[rs->n] = j->attempt;
    rs->plens[rs->n] = j->plen;
    rs->outlens[rs->n] = outlen;
    rs->sums[rs->n] = sum;
    rs->n++;
    job_free(j);
}

static void fns_free(restored_t *rs)
{
    fnq_t *f, *tmp;
    HASH_ITER(hh, rs->fns, f, tmp)
    {
        HASH_DEL(rs->fns, f);
        free(f);
    }
}

static void same_jobs(const restored_t *a, const restored_t *b)
{
    CHECK(a->n == b->n);
    for (int i = 0; i < a->n; i++) {
        CHECK(a->ids[i] == b->ids[i]);
        CHECK(a->states[i] == b->states[i]);
        CHECK(a->attempts[i] == b->attempts[i]);
        CHECK(a->plens[i] == b->plens[i]);
        CHECK(a->outlens[i] == b->outlens[i]);
        CHECK(a->sums[i] == b->sums[i]);
    }
}

/* ---- files ---- */

static void write_journal(const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, MAGIC, MAGIC_LEN) == MAGIC_LEN);
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        CHECK(w > 0);
        done += (size_t)w;
    }
    CHECK(close(fd) == 0);
}

/* The journal file now, malloc'd (*len bytes). */
static uint8_t *read_journal(size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    uint8_t *p = malloc((size_t)st.st_size + 1);
    CHECK(p != NULL);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, p + got, (size_t)st.st_size - got);
        CHECK(r > 0);
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return p;
}

/* Removes everything a repair left beside the journal (journal.damaged-*). */
static void clean_dir(void)
{
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    struct dirent *e;
    char p[600];
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "journal.", 8)) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
}

static void remove_dir(void)
{
    fprintf(stderr,
            "fuzz_journal: %lu replay(s) whole, %lu whole with zeros after the records (the "
            "reserve), %lu with a tail cut, %lu damaged and repaired; %lu input(s) also "
            "replayed with their checksums fixed\n",
            n_whole, n_reserve, n_cut, n_repaired, n_resealed);
    clean_dir();
    unlink(path);
    rmdir(dir);
}

/* Opens and replays the journal; its jobs go to rs. Returns replay's result. */
static int replay_once(restored_t *rs, uint64_t *size_after)
{
    zfb_owners_destroy(&owners);
    owners = zfb_owners_new();
    CHECK(owners != NULL);
    zf_journal_opts_t o = {
        .policy = ZF_FSYNC_ALWAYS, .result_max_bytes = 1 << 20, .owners = owners};
    zf_journal_t *j = zf_journal_open(dir, &o);
    CHECK(j != NULL); /* the file starts with the magic: open must take it */
    int errors = nerrors;
    int rc = zf_journal_replay(j, restore, get_fn, rs);
    CHECK(rc == 0 || rc == -1);
    if (rc < 0)
        CHECK(nerrors > errors && rs->n == 0);
    *size_after = zf_journal_size(j);
    zf_journal_close(&j);
    CHECK(j == NULL);
    return rc;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    unsetenv("ZFLEET_JOURNAL_FAULT"); /* the test seam would make writes fail */
    /* $FUZZ_JOURNAL_TMP: run.sh's own scratch directory, which it removes even after a
       crash (that skips remove_dir) */
    struct stat st;
    const char *base = getenv("FUZZ_JOURNAL_TMP");
    if (!base)
        base = stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0
                   ? "/dev/shm"
                   : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    snprintf(dir, sizeof dir, "%s/zfleet-fuzz-journal.XXXXXX", base);
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/journal", dir);
    atexit(remove_dir);
    return 0;
}

/* Replays one journal body (the bytes after the magic) and checks what replay promises. */
static void check_journal(const uint8_t *data, size_t size)
{
    static restored_t first, again;
    clean_dir();
    write_journal(data, size);
    uint64_t whole = MAGIC_LEN + size, after = 0;

    first.n = 0;
    int warns = nwarns;
    int rc = replay_once(&first, &after);
    size_t len;
    uint8_t *now = read_journal(&len);
    /* the records end at `after`; the file holds them, and maybe zeros past them */
    CHECK(after <= len);
    for (size_t i = after; i < len; i++)
        CHECK(now[i] == 0);
    if (rc == 0) {
        /* unchanged, or cut to a prefix (and then said so) */
        CHECK(len >= MAGIC_LEN && len <= whole);
        CHECK(!memcmp(now, MAGIC, MAGIC_LEN) && !memcmp(now + MAGIC_LEN, data, len - MAGIC_LEN));
        if (len < whole) {
            CHECK(nwarns > warns && after == len); /* a cut takes the zeros with it */
            n_cut++;
        } else if (after < len) { /* the reserve: kept, not cut */
            n_reserve++;
        } else {
            n_whole++;
        }
        /* what was kept replays to the same jobs, with nothing more to cut */
        again.n = 0;
        uint64_t after2 = 0;
        CHECK(replay_once(&again, &after2) == 0);
        CHECK(after2 == after);
        same_jobs(&first, &again);
        fns_free(&again);
    } else {
        /* damage in the middle: the file is left as it was */
        CHECK(len == whole && !memcmp(now + MAGIC_LEN, data, size));
        CHECK(zf_journal_repair(dir) == 0);
        free(now);
        now = read_journal(&len);
        CHECK(len >= MAGIC_LEN && len < whole && !memcmp(now, MAGIC, MAGIC_LEN));
        again.n = 0;
        uint64_t after2 = 0;
        CHECK(replay_once(&again, &after2) == 0);
        CHECK(after2 == len); /* the repair cut the torn tail too */
        n_repaired++;
        fns_free(&again);
    }
    free(now);
    fns_free(&first);
}

/* Recomputes the checksum of every record that the length fields delimit, so that a
   mutated body passes the CRC and reaches the record decoders (apply_*). Returns whether
   any byte changed. */
static bool reseal(uint8_t *b, size_t size)
{
    bool changed = false;
    size_t off = 0;
    while (size - off >= 9) {
        uint32_t len = (uint32_t)b[off] | (uint32_t)b[off + 1] << 8 | (uint32_t)b[off + 2] << 16 |
                       (uint32_t)b[off + 3] << 24;
        if (len > size - off - 9)
            break;
        uint32_t crc = (uint32_t)crc32(0L, b + off + 8, len + 1);
        for (int i = 0; i < 4; i++) {
            changed |= b[off + 4 + i] != (uint8_t)(crc >> (8 * i));
            b[off + 4 + i] = (uint8_t)(crc >> (8 * i));
        }
        off += 9 + (size_t)len;
    }
    return changed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* as it is: checksums, resynchronisation, torn tails, repair */
    check_journal(data, size);
    /* and with good checksums: what the record decoders make of any body */
    uint8_t *copy = malloc(size ? size : 1);
    CHECK(copy != NULL);
    if (size)
        memcpy(copy, data, size);
    if (reseal(copy, size)) {
        n_resealed++;
        check_journal(copy, size);
    }
    free(copy);
    return 0;
}
