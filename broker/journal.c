/*  zf_journal — see zf_journal.h.

    Invariants kept by this file:
    - the file is the magic followed by whole records: everything up to `size` was written
      by a commit that succeeded (a failed write is cut back to `size`);
    - `pend` holds the records appended since the last commit, in order; nothing in it is
      on disk yet, so an acceptance in it must not be acknowledged;
    - under ZF_FSYNC_ALWAYS, `unsynced` is false whenever zf_journal_commit has returned 0;
    - commits are numbered: every record of commits 1..dseq is durable (dsize bytes of the
      file), wseq >= dseq is the last one written; only the flusher thread (see "the
      flusher thread") moves dseq past a commit written by zf_journal_commit_async, and the
      thread never touches the file but to fdatasync it: cutting, swapping and closing it
      happen in the loop while the thread is idle;
    - compaction writes the broker's in-memory state, which already reflects every record in
      `pend`: after a compaction `pend` is empty and the new file is synced;
    - while `down` (a write or sync failed) nothing is appended and `pend` is empty: the
      file's contents past the last good sync are unknown, so the only way back is a
      snapshot of the in-memory state (zf_journal_recover), which holds everything the
      dropped records said. A failed sync never aborts the process.

    CRC-32 comes from zlib (crc32()): a well-kept Debian library (libz-dev), fast (it uses
    the CPU's carry-less multiply where there is one) and the checksum every tool can check.
*/
#include "zf_journal.h"
#include "zf_pipeline.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "../common/zf_util.h"

#define MAGIC "ZFJRNL01"
#define MAGIC_LEN 8
#define HDR 9                      /* u32 length, u32 crc, u8 type */
#define FLUSH_BYTES (1u << 20)     /* compaction writes in chunks of about this much */
#define KEEP_BUF_BYTES (16u << 20) /* a pending buffer larger than this is freed when empty */
#define WINFO_CACHE 64             /* distinct workers shared by restored results */
#define RETRY_MS 250               /* a journal that is down tries a snapshot this often, */
#define RETRY_MAX_MS 2000          /* doubling while the disk has no room for one, up to this */
#define PREALLOC_BYTES (1u << 20)  /* the file is grown ahead of its records by this much */

/* Record types. The format grows by new types only, never by changing a type's body, so
   every journal an older broker wrote replays as it did (ATTEMPTS came in 2026-12: a
   journal without it replays a recalled job's attempts used as its lease number; OWNER came
   with CURVE: a journal without it replays every job as nobody's; LEASE came with
   re-attach: a journal without it replays every started job as one to run again; SCHEDULE
   came with retries and delayed jobs: a journal without it replays every job as one with
   neither). The magic names the framing (ZFJRNL01); the record types are the version. */
enum {
    REC_ACCEPT = 1,
    REC_START = 2,
    REC_FINISH = 3,
    REC_FORGET = 4,
    REC_ATTEMPTS = 5,
    REC_OWNER = 6,
    REC_LEASE = 7,
    REC_SCHEDULE = 8, /* retry policy, due time and causes of an unfinished job */
    REC_TAGS = 10,    /* a job's tags, after its ACCEPT (jobs without tags have none) */
    REC_STEP = 11,    /* a pipeline: its steps, the one the job is at, and maybe its payload */
    REC_LAST = REC_STEP
};
/* FINISH flags: the output was longer than result_max_bytes and is not in the record (a
   journal written before 2026-12 holds its first result_max_bytes; they are ignored). */
enum { FIN_OUTPUT_CUT = 1 };

/* Fixed part of each record body, for size estimates. */
#define ACCEPT_FIXED (8 + 4 + 4 + 1 + 1 + 4 + 8 + 8 + 1 + 4)
#define START_FIXED (8 + 4)
#define FINISH_FIXED (8 + 1 + 4 + 8 + 8 + 1 + 2 + 1 + 1 + 4)
#define FORGET_FIXED 8
#define ATTEMPTS_FIXED (8 + 4 + 4)
#define OWNER_FIXED (8 + ZF_KEY_BYTES)
#define LEASE_FIXED (8 + 4 + 8 + 1 + ZF_KEY_BYTES + 1)
#define SCHEDULE_FIXED (8 + 8 + 1 + 1 + 4 + 2)

#define TAGS_FIXED (8 + 1)
#define STEP_FIXED (8 + 1 + 1 + 1) /* id, cur, n, flags; then n x (dev, len, name) */
/* STEP flags: OPTS: n x (timeout u32, retries u8) follow the names (journals written before
   steps had options lack it: their steps keep the submit's); PAYLOAD: then the payload. */
enum { STEP_PAYLOAD = 1, STEP_OPTS = 2 };
/* LEASE flags: the key is the holder's (CURVE on); without it the key bytes are zero. */
enum { LEASE_KEYED = 1 };

typedef struct {
    uint8_t *p;
    size_t len, cap;
    uint64_t nrec; /* records ended in it (rec_end) since it was last emptied */
} jbuf_t;

struct zf_journal {
    zf_journal_opts_t o;
    char *dir, *path, *tmp; /* DIR, DIR/journal and DIR/journal.compact */
    int fd, dirfd;
    jbuf_t pend;      /* records appended since the last commit */
    uint64_t size;    /* bytes of whole records at the start of the file */
    uint64_t alloc;   /* the file's length: size, then the zeros reserved ahead (reserve) */
    bool prealloc;    /* reserve ahead: the policy syncs, and the file system keeps files */
    uint64_t records; /* and how many records those are */
    bool unsynced;    /* written since the last fdatasync */
    int64_t last_sync_ms;
    uint64_t check_at; /* file size at which compaction is next considered */
    int down;          /* errno of the write or sync that failed; 0 while writable */
    int64_t retry_at;  /* while down: when zf_journal_recover tries the next snapshot */
    int64_t retry_ms;  /* and the wait after that one */
    uint64_t failures; /* writes and syncs that failed (each took the journal down) */
    char *fault;       /* $ZFLEET_JOURNAL_FAULT, the test seam (see fault_errno), or NULL */
    /* Group commits: commit number wseq is the last one written; every record of commits
       up to dseq is on disk (dsize bytes and drecords records of the file at that point). */
    uint64_t wseq, dseq, dsize, drecords;
    struct flusher *flusher; /* under ZF_FSYNC_ALWAYS, started by the first async commit */
};

/* ------------------------------------------------------------------ encoding */

static void buf_reserve(jbuf_t *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        abort(); /* a journal that cannot buffer a record cannot keep its promise; restart */
    b->p = p;
    b->cap = cap;
}

static void put(jbuf_t *b, const void *src, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

/* Little-endian on every host, so a journal moves between machines. */
static void put_u(jbuf_t *b, uint64_t v, int bytes)
{
    uint8_t t[8];
    for (int i = 0; i < bytes; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    put(b, t, (size_t)bytes);
}

static uint64_t get_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static size_t rec_begin(jbuf_t *b, uint8_t type)
{
    size_t at = b->len;
    buf_reserve(b, HDR);
    memset(b->p + at, 0, HDR);
    b->p[at + 8] = type;
    b->len += HDR;
    return at;
}

/* Fills the header of the record that starts at `at`: its length and checksum. */
static void rec_end(jbuf_t *b, size_t at)
{
    uint64_t body = b->len - at - HDR;
    uint32_t crc = (uint32_t)crc32(0L, b->p + at + 8, (uInt)(body + 1));
    for (int i = 0; i < 4; i++) {
        b->p[at + i] = (uint8_t)(body >> (8 * i));
        b->p[at + 4 + i] = (uint8_t)(crc >> (8 * i));
    }
    b->nrec++;
}

/* A monotonic instant as wall-clock ms, so it means the same after a restart. */
static uint64_t to_wall(int64_t mono_ms)
{
    int64_t w = zf_wall_ms() - (zf_now_ms() - mono_ms);
    return w > 0 ? (uint64_t)w : 1;
}

static int64_t from_wall(uint64_t wall_ms, int64_t now_ms, int64_t wall_now)
{
    /* far past any clock (a damaged record): clamped, so the sums below cannot overflow */
    if (wall_ms > (uint64_t)INT64_MAX / 4)
        wall_ms = (uint64_t)INT64_MAX / 4;
    int64_t m = now_ms - (wall_now - (int64_t)wall_ms);
    return m > 0 ? m : 1; /* 0 means "none" to the broker */
}

static void enc_accept(jbuf_t *b, const job_t *j)
{
    size_t n = strlen(j->fn->name), plen = j->plen;
    size_t at = rec_begin(b, REC_ACCEPT);
    buf_reserve(b, ACCEPT_FIXED + n + plen);
    put_u(b, j->id, 8);
    put_u(b, j->attempt, 4);
    put_u(b, (uint32_t)j->priority, 4);
    put_u(b, j->device, 1);
    put_u(b, j->max_attempts, 1);
    put_u(b, j->timeout_ms, 4);
    put_u(b, j->deadline_at ? to_wall(j->deadline_at) : 0, 8);
    put_u(b, j->tag, 8);
    put_u(b, n, 1);
    put(b, j->fn->name, n);
    put_u(b, plen, 4);
    put(b, zfb_job_payload(j), plen);
    rec_end(b, at);
}

static void enc_start(jbuf_t *b, const job_t *j)
{
    size_t at = rec_begin(b, REC_START);
    put_u(b, j->id, 8);
    put_u(b, j->attempt, 4);
    rec_end(b, at);
}

/* START with who holds the lease (session, key, name), so that the worker can re-attach
   the job after a restart. */
static void enc_lease_rec(jbuf_t *b, const job_t *j, uint64_t session, const zfb_owner_t *o,
                          const char *name)
{
    static const uint8_t nokey[ZF_KEY_BYTES];
    size_t n = strlen(name);
    size_t at = rec_begin(b, REC_LEASE);
    put_u(b, j->id, 8);
    put_u(b, j->attempt, 4);
    put_u(b, session, 8);
    put_u(b, o ? LEASE_KEYED : 0, 1);
    put(b, o ? o->key : nokey, ZF_KEY_BYTES);
    put_u(b, n, 1);
    put(b, name, n);
    rec_end(b, at);
}

/* A dispatch to a worker that named its session in READY. */
static void enc_lease(jbuf_t *b, const job_t *j, const zfb_owners_t *owners)
{
    const wrk_t *w = j->worker;
    enc_lease_rec(b, j, w->session, owners ? zfb_owners_get(owners, w->owner) : NULL,
                  w->info->name);
}

/* A job restored running and not re-attached yet: its holder as the journal had it. */
static void enc_held(jbuf_t *b, const job_t *j, const zfb_owners_t *owners)
{
    const holder_t *h = j->res->holder;
    enc_lease_rec(b, j, h->session, owners ? zfb_owners_get(owners, h->owner) : NULL, h->name);
}

/* START, or LEASE where the worker can claim the lease back (it named a session). */
static void enc_started(jbuf_t *b, const job_t *j, const zfb_owners_t *owners)
{
    if (j->worker && j->worker->session)
        enc_lease(b, j, owners);
    else
        enc_start(b, j);
}

/* The deliveries not charged against max_attempts (result_t.attempt_base), with the lease
   number they go with: written when a RECALLED gives one back, and after a snapshot's
   ACCEPT of a job that was retried or recalled. */
static void enc_attempts(jbuf_t *b, const job_t *j)
{
    size_t at = rec_begin(b, REC_ATTEMPTS);
    put_u(b, j->id, 8);
    put_u(b, j->attempt, 4);
    put_u(b, j->res ? j->res->attempt_base : 0, 4);
    rec_end(b, at);
}

/* The key that owns a job (CURVE on): written after each ACCEPT of a job that has one. */
static void enc_owner(jbuf_t *b, const job_t *j, const zfb_owners_t *owners)
{
    const zfb_owner_t *o = owners ? zfb_owners_get(owners, j->owner) : NULL;
    if (!o)
        return;
    size_t at = rec_begin(b, REC_OWNER);
    put_u(b, j->id, 8);
    put(b, o->key, ZF_KEY_BYTES);
    rec_end(b, at);
}

/* A job's tags: written after each ACCEPT of a job that has some. */
static void enc_tags(jbuf_t *b, const job_t *j)
{
    if (!j->tags)
        return;
    size_t n = strlen(j->tags); /* <= ZF_TAGS_MAX: on_submit checked them */
    size_t at = rec_begin(b, REC_TAGS);
    put_u(b, j->id, 8);
    put_u(b, n, 1);
    put(b, j->tags, n);
    rec_end(b, at);
}

static void enc_step(jbuf_t *b, const job_t *j, bool with_payload)
{
    const zfb_pipe_t *p = j->pipe;
    if (!p)
        return;
    size_t at = rec_begin(b, REC_STEP);
    buf_reserve(b, STEP_FIXED + p->n * (2 + ZF_FN_MAX + 5) + 4 + (with_payload ? j->plen : 0));
    put_u(b, j->id, 8);
    put_u(b, p->cur, 1);
    put_u(b, p->n, 1);
    put_u(b, (with_payload ? STEP_PAYLOAD : 0) | (p->opts ? STEP_OPTS : 0), 1);
    for (int i = 0; i < p->n; i++) {
        size_t n = strlen(p->fn[i]);
        put_u(b, p->dev[i], 1);
        put_u(b, n, 1);
        put(b, p->fn[i], n);
    }
    for (int i = 0; p->opts && i < p->n; i++) {
        put_u(b, p->timeout_ms[i], 4);
        put_u(b, p->retries[i], 1);
    }
    if (with_payload) {
        put_u(b, j->plen, 4);
        put(b, zfb_job_payload(j), j->plen);
    }
    rec_end(b, at);
}

static size_t str_len_max(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    return n < max ? n : max;
}

static void enc_finish(jbuf_t *b, const job_t *j, uint64_t out_max)
{
    const result_t *r = j->res;
    size_t elen = str_len_max(r ? r->error : NULL, UINT16_MAX);
    size_t wlen = r && r->ran_on ? str_len_max(r->ran_on->name, UINT8_MAX) : 0;
    size_t dlen = r && r->ran_on ? str_len_max(r->ran_on->devname, UINT8_MAX) : 0;
    size_t olen = r ? zmq_msg_size((zmq_msg_t *)&r->output) : 0;
    /* An output over the bound is not journaled at all, only its length: a replay brings
       the job back as output_lost, never as a success with partial bytes. */
    bool cut = olen > out_max;
    size_t keep = cut ? 0 : olen;
    size_t at = rec_begin(b, REC_FINISH);
    buf_reserve(b, FINISH_FIXED + elen + wlen + dlen + keep + 8);
    put_u(b, j->id, 8);
    put_u(b, j->state, 1);
    put_u(b, j->attempt, 4);
    put_u(b, r ? r->duration_us : 0, 8);
    put_u(b, to_wall(j->finished_ms), 8);
    put_u(b, cut ? FIN_OUTPUT_CUT : 0, 1);
    put_u(b, elen, 2);
    put(b, r ? r->error : NULL, elen);
    put_u(b, wlen, 1);
    put(b, wlen ? r->ran_on->name : NULL, wlen);
    put_u(b, dlen, 1);
    put(b, dlen ? r->ran_on->devname : NULL, dlen);
    put_u(b, keep, 4);
    put(b, keep ? zmq_msg_data((zmq_msg_t *)&r->output) : NULL, keep);
    if (cut)
        put_u(b, olen, 8);
    rec_end(b, at);
}

static bool has_schedule(const job_t *j)
{
    const result_t *r = j->res;
    return r && (r->retries || r->backoff_ms || r->due_at || r->retried);
}

/* id, due (wall ms, 0 = none), retries, retried, backoff, causes so far */
static void enc_schedule(jbuf_t *b, const job_t *j)
{
    const result_t *r = j->res;
    size_t elen = str_len_max(r->error, UINT16_MAX);
    size_t at = rec_begin(b, REC_SCHEDULE);
    buf_reserve(b, SCHEDULE_FIXED + elen);
    put_u(b, j->id, 8);
    put_u(b, r->due_at ? to_wall(r->due_at) : 0, 8);
    put_u(b, r->retries, 1);
    put_u(b, r->retried, 1);
    put_u(b, r->backoff_ms, 4);
    put_u(b, elen, 2);
    put(b, r->error, elen);
    rec_end(b, at);
}

static void enc_forget(jbuf_t *b, uint64_t id)
{
    size_t at = rec_begin(b, REC_FORGET);
    put_u(b, id, 8);
    rec_end(b, at);
}

/* Bytes a job's records take after compaction: what keeps it alive in the file. */
static uint64_t live_size(const job_t *j, uint64_t out_max)
{
    if (j->released)
        return 0; /* (write_snapshot leaves it out) */
    uint64_t n = HDR + ACCEPT_FIXED + strlen(j->fn->name) + j->plen;
    if (j->res && j->res->attempt_base)
        n += HDR + ATTEMPTS_FIXED;
    if (j->owner)
        n += HDR + OWNER_FIXED;
    if (!zf_state_is_terminal(j->state) && has_schedule(j))
        n += HDR + SCHEDULE_FIXED + (j->res->error ? strlen(j->res->error) : 0);
    if (j->state == ZF_ST_RUNNING && j->worker && j->worker->session)
        n += HDR + LEASE_FIXED + strlen(j->worker->info->name);
    else if (j->state == ZF_ST_RUNNING && j->res && j->res->holder)
        n += HDR + LEASE_FIXED + strlen(j->res->holder->name);
    if (zf_state_is_terminal(j->state)) {
        const result_t *r = j->res;
        uint64_t olen = r ? zmq_msg_size((zmq_msg_t *)&r->output) : 0;
        n += HDR + FINISH_FIXED + (olen > out_max ? 8 : olen);
        if (r && r->error)
            n += strlen(r->error);
        if (r && r->ran_on)
            n += strlen(r->ran_on->name) + strlen(r->ran_on->devname);
    }
    return n;
}

/* ------------------------------------------------------------------ file helpers */

/* Writes p[0..n) at offset off of fd: the journal's files are written at offsets, not
   appended to, since the main one has zeros reserved past its records (reserve). */
static int write_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* The test seam (docs/JOURNAL.md): while the file named by $ZFLEET_JOURNAL_FAULT exists and
   holds an errno name (EIO, ENOSPC, EDQUOT, EROFS), every journal write and sync fails with
   it; "write:NAME" fails only writes, "sync:NAME" only syncs. Costs nothing unless set. */
static int fault_errno(const zf_journal_t *self, bool sync)
{
    static const struct {
        const char *name;
        int e;
    } names[] = {{"EIO", EIO}, {"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT}, {"EROFS", EROFS}};
    if (!self->fault)
        return 0;
    char buf[32];
    int fd = open(self->fault, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\r'))
        n--;
    buf[n] = 0;
    const char *name = buf;
    if (!strncmp(name, "write:", 6))
        name = sync ? "" : name + 6;
    else if (!strncmp(name, "sync:", 5))
        name = sync ? name + 5 : "";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i].name))
            return names[i].e;
    return 0;
}

/* write_all and fdatasync for the journal's files, through the fault seam. */
static int jwrite(const zf_journal_t *self, int fd, const uint8_t *p, size_t n, uint64_t off)
{
    int e = fault_errno(self, false);
    if (e) {
        errno = e;
        return -1;
    }
    return write_all(fd, p, n, off);
}

static int jsync(const zf_journal_t *self, int fd)
{
    int e = fault_errno(self, true);
    if (e) {
        errno = e;
        return -1;
    }
    return fdatasync(fd);
}

/* Makes room for n more bytes of records without growing the file: a write that grows
   it makes every fdatasync write the inode as well (its size), where one that lands on
   space reserved before writes only the data. On ext4 that is a third less time and CPU
   per sync. So the file is grown PREALLOC_BYTES ahead of its records, with zeros
   (fallocate), as PostgreSQL fills its WAL segments before use; the replay takes the zeros
   after the last record for that reserve, not for damage (scan). Where fallocate fails (no
   room for the reserve, a file system without it) the records are written past the end,
   as before: the reserve is an optimisation, never a condition. */
static void reserve(zf_journal_t *self, size_t n)
{
    if (!self->prealloc || self->size + n <= self->alloc)
        return;
    uint64_t from = self->alloc > self->size ? self->alloc : self->size;
    uint64_t to = self->size + n + PREALLOC_BYTES;
    if (fallocate(self->fd, 0, (off_t)from, (off_t)(to - from)) == 0) {
        self->alloc = to;
        return;
    }
    int e = errno;
    struct stat st; /* a failure may have reserved part of it */
    self->alloc = fstat(self->fd, &st) == 0 ? (uint64_t)st.st_size : self->size;
    if (e == EOPNOTSUPP)
        self->prealloc = false;
}

/* For the start-up paths only (cutting a torn tail): a failed fdatasync may have dropped the
   dirty pages (Linux marks them clean), so the broker does not start on such a file. */
static void sync_or_die(int fd, const char *what)
{
    if (fdatasync(fd) == 0)
        return;
    zf_log_event(ZF_LOG_ERROR, "journal_sync_failed",
                 &(zf_log_fields_t){.path = what, .reason = strerror(errno)},
                 "journal: fdatasync of %s failed: %s; stopping so that a restart "
                 "replays what is durable",
                 what, strerror(errno));
    abort();
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Makes a new or torn-at-birth file a journal; refuses a file that is something else. */
static int check_magic(zf_journal_t *self)
{
    struct stat st;
    char head[MAGIC_LEN] = {0};
    if (fstat(self->fd, &st) < 0)
        return -1;
    ssize_t got = st.st_size ? pread(self->fd, head, MAGIC_LEN, 0) : 0;
    if (got < 0)
        return -1;
    if (got == MAGIC_LEN && !memcmp(head, MAGIC, MAGIC_LEN)) {
        self->size = self->alloc = (uint64_t)st.st_size; /* the replay finds where records end */
        return 0;
    }
    if (st.st_size >= MAGIC_LEN || memcmp(head, MAGIC, (size_t)got) != 0) {
        zf_log(ZF_LOG_ERROR, "journal: %s is not a zfleet journal (bad magic); move it away",
               self->path);
        errno = EINVAL;
        return -1;
    }
    if (ftruncate(self->fd, 0) < 0 ||
        jwrite(self, self->fd, (const uint8_t *)MAGIC, MAGIC_LEN, 0) < 0 ||
        jsync(self, self->fd) < 0)
        return -1;
    if (fsync(self->dirfd) < 0)
        return -1;
    self->size = self->alloc = MAGIC_LEN;
    return 0;
}

zf_journal_t *zf_journal_open(const char *dir, const zf_journal_opts_t *opts)
{
    zf_journal_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->o = *opts;
    if (!self->o.compact_min_bytes)
        self->o.compact_min_bytes = ZF_JOURNAL_COMPACT_MIN_DEFAULT;
    if (self->o.result_max_bytes > ZF_JOURNAL_MAX_PAYLOAD)
        self->o.result_max_bytes = ZF_JOURNAL_MAX_PAYLOAD;
    if (self->o.policy == ZF_FSYNC_INTERVAL && !self->o.interval_ms)
        self->o.interval_ms = 1;
    self->fd = self->dirfd = -1;
    self->dir = strdup(dir);
    self->path = join(dir, "journal");
    self->tmp = join(dir, "journal.compact");
    const char *what = "open", *target = dir;
    const char *fault = getenv("ZFLEET_JOURNAL_FAULT");
    if (fault && *fault && !(self->fault = strdup(fault)))
        goto fail;
    if (!self->dir || !self->path || !self->tmp)
        goto fail;
    what = "create directory";
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        goto fail;
    what = "open directory";
    self->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (self->dirfd < 0)
        goto fail;
    what = "open";
    target = self->path;
    self->fd = open(self->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (self->fd < 0)
        goto fail;
    if (flock(self->fd, LOCK_EX | LOCK_NB) < 0) {
        zf_log(ZF_LOG_ERROR, "journal: %s is in use by another broker", self->path);
        zf_journal_close(&self);
        return NULL;
    }
    unlink(self->tmp); /* left by a compaction that did not finish; the journal is whole */
    what = "read";
    if (check_magic(self) < 0)
        goto fail;
    /* a reserve pays only where syncs are (not under `never`) and cost something (not on
       tmpfs, whose syncs are free and whose pages the reserve would take from memory) */
    struct statfs fs;
    self->prealloc = self->o.policy != ZF_FSYNC_NEVER && fstatfs(self->fd, &fs) == 0 &&
                     fs.f_type != TMPFS_MAGIC && fs.f_type != RAMFS_MAGIC;
    self->last_sync_ms = zf_now_ms();
    self->check_at = self->o.compact_min_bytes;
    return self;
fail:
    if (errno != EINVAL) /* EINVAL: check_magic said why */
        zf_log(ZF_LOG_ERROR, "journal: cannot %s %s: %s", what, target, strerror(errno));
    zf_journal_close(&self);
    return NULL;
}

/* ------------------------------------------------------------------ replay */

typedef struct {
    const uint8_t *p;
    size_t left;
    bool bad;
} reader_t;

static uint64_t rd_u(reader_t *r, int bytes)
{
    if (r->bad || r->left < (size_t)bytes) {
        r->bad = true;
        return 0;
    }
    uint64_t v = get_le(r->p, bytes);
    r->p += bytes;
    r->left -= (size_t)bytes;
    return v;
}

static const uint8_t *rd_bytes(reader_t *r, uint64_t n)
{
    if (r->bad || r->left < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

typedef struct idset {
    uint64_t id;
    UT_hash_handle hh;
} idset_t;

typedef struct {
    zf_journal_t *j;
    job_t *tab; /* jobs rebuilt so far, in the order they come back */
    fnq_t *(*fn)(void *, const char *);
    void *arg;
    winfo_t *winfo[WINFO_CACHE]; /* each holds one reference of the cache's own */
    int nwinfo;
    int64_t now_ms, wall_now;
    uint64_t records;
    uint64_t output_lost; /* results that come back output_lost */
    bool damaged;         /* a damaged range was skipped: records after it may be orphans */
    idset_t *affected;    /* jobs with records in the damaged ranges, as far as known */
    uint64_t naffected;
} replay_t;

static void idset_add(replay_t *rp, uint64_t id)
{
    idset_t *e;
    HASH_FIND(hh, rp->affected, &id, sizeof id, e);
    if (e || !(e = calloc(1, sizeof *e)))
        return; /* known, or no memory: the report is "as far as known" */
    e->id = id;
    HASH_ADD(hh, rp->affected, id, sizeof e->id, e);
    rp->naffected++;
}

static void idset_free(replay_t *rp)
{
    idset_t *e, *tmp;
    HASH_ITER(hh, rp->affected, e, tmp)
    {
        HASH_DEL(rp->affected, e);
        free(e);
    }
    rp->naffected = 0;
}

static void job_discard(replay_t *rp, job_t *j)
{
    HASH_DEL(rp->tab, j);
    zfb_job_free(&j);
}

static job_t *tab_find(replay_t *rp, uint64_t id)
{
    job_t *j;
    HASH_FIND(hh, rp->tab, &id, sizeof id, j);
    return j;
}

/* Finds id into *jp. True when it is not there: a record for a job never accepted, which
   after a damaged range means the damage took its ACCEPT (the job is affected). */
static bool tab_orphan(replay_t *rp, uint64_t id, job_t **jp)
{
    *jp = tab_find(rp, id);
    if (!*jp && rp->damaged)
        idset_add(rp, id);
    return !*jp;
}

/* Moves j to the end of the restore order. */
static void tab_touch(replay_t *rp, job_t *j)
{
    HASH_DEL(rp->tab, j);
    HASH_ADD(hh, rp->tab, id, sizeof j->id, j);
}

/* The shared record of where results ran; NULL for no name or no memory. */
static winfo_t *winfo_get(replay_t *rp, const uint8_t *name, size_t nlen, const uint8_t *dev,
                          size_t dlen)
{
    if (nlen > ZF_NAME_MAX)
        nlen = ZF_NAME_MAX;
    if (dlen > ZF_NAME_MAX)
        dlen = ZF_NAME_MAX;
    for (int i = 0; i < rp->nwinfo; i++) {
        winfo_t *w = rp->winfo[i];
        if (strlen(w->name) == nlen && !memcmp(w->name, name, nlen) && strlen(w->devname) == dlen &&
            !memcmp(w->devname, dev, dlen)) {
            w->refs++;
            return w;
        }
    }
    winfo_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    memcpy(w->name, name, nlen);
    memcpy(w->devname, dev, dlen);
    w->refs = 1;
    if (rp->nwinfo < WINFO_CACHE) {
        rp->winfo[rp->nwinfo++] = w;
        w->refs++;
    }
    return w;
}

static int apply_accept(replay_t *rp, reader_t *r)
{
    uint64_t id = rd_u(r, 8);
    uint32_t attempt = (uint32_t)rd_u(r, 4);
    int32_t priority = (int32_t)(uint32_t)rd_u(r, 4);
    uint8_t device = (uint8_t)rd_u(r, 1);
    uint8_t max_attempts = (uint8_t)rd_u(r, 1);
    uint32_t timeout_ms = (uint32_t)rd_u(r, 4);
    uint64_t deadline = rd_u(r, 8);
    uint64_t tag = rd_u(r, 8);
    uint64_t nlen = rd_u(r, 1);
    const uint8_t *name = rd_bytes(r, nlen);
    uint64_t plen = rd_u(r, 4);
    const uint8_t *payload = rd_bytes(r, plen);
    /* a NUL in the name would bring the job back under another (shorter, even empty) name */
    if (r->bad || r->left || nlen == 0 || nlen > ZF_FN_MAX || memchr(name, 0, nlen) ||
        device > ZF_DEV_GPU)
        return -1;
    job_t *j = tab_find(rp, id);
    if (j) { /* requeued from the dead letters: it starts over */
        zfb_job_drop_payload(j);
        zfb_job_drop_result(j);
        tab_touch(rp, j);
        /* its job was built without room inline for this payload */
        if (plen && zfb_job_copy_payload(j, payload, plen) < 0)
            return -2;
        /* a RETRY: the attempts used start from 0, the lease number goes on (PROTOCOL.md §4;
           the broker writes this ACCEPT before it sets attempt_base, see on_retry) */
        if (attempt) {
            if (!zfb_job_res(j))
                return -2;
            j->res->attempt_base = attempt;
        }
    } else {
        char fname[ZF_FN_MAX + 1];
        memcpy(fname, name, nlen);
        fname[nlen] = 0;
        fnq_t *fn = rp->fn(rp->arg, fname);
        /* built as the broker builds a job it accepts itself (zfb_job_new) */
        j = fn ? zfb_job_new(payload, plen) : NULL;
        if (!j)
            return -2;
        j->id = id;
        j->fn = fn;
        HASH_ADD(hh, rp->tab, id, sizeof j->id, j);
    }
    j->priority = priority;
    j->device = device;
    j->max_attempts = max_attempts;
    j->timeout_ms = timeout_ms;
    j->deadline_at = deadline ? from_wall(deadline, rp->now_ms, rp->wall_now) : 0;
    j->tag = tag;
    j->attempt = attempt;
    j->state = ZF_ST_QUEUED;
    j->qpos = j->tpos = ZF_HEAP_NONE;
    return 0;
}

/* The job is not held for a re-attach (any more): it comes back queued. */
static void drop_holder(job_t *j)
{
    if (j->res && j->res->holder) {
        free(j->res->holder);
        j->res->holder = NULL;
    }
    j->state = ZF_ST_QUEUED;
}

static int apply_start(replay_t *rp, reader_t *r)
{
    uint64_t id = rd_u(r, 8);
    uint32_t attempt = (uint32_t)rd_u(r, 4);
    if (r->bad || r->left)
        return -1;
    job_t *j;
    tab_orphan(rp, id, &j);
    /* A dispatched job comes back queued: the attempt it was on counts. */
    if (j && !zf_state_is_terminal(j->state) && attempt > j->attempt)
        j->attempt = attempt;
    if (j && !zf_state_is_terminal(j->state))
        drop_holder(j); /* started where no claim can come from: it runs again */
    return 0;
}

/* A START that names its holder: the job comes back running, held for its re-attach
   (zf_reattach.h), unless a later record says otherwise. */
static int apply_lease(replay_t *rp, reader_t *r)
{
    uint64_t id = rd_u(r, 8);
    uint32_t attempt = (uint32_t)rd_u(r, 4);
    uint64_t session = rd_u(r, 8);
    uint64_t flags = rd_u(r, 1);
    const uint8_t *key = rd_bytes(r, ZF_KEY_BYTES);
    uint64_t nlen = rd_u(r, 1);
    const uint8_t *name = rd_bytes(r, nlen);
    if (r->bad || r->left || nlen > ZF_NAME_MAX || (name && memchr(name, 0, nlen)))
        return -1;
    job_t *j;
    tab_orphan(rp, id, &j);
    if (!j || zf_state_is_terminal(j->state))
        return 0;
    if (attempt > j->attempt)
        j->attempt = attempt;
    if (attempt != j->attempt)
        return 0; /* an older lease than one already known (damage): nothing to hold */
    if (!zfb_job_res(j))
        return -2;
    holder_t *h = j->res->holder;
    if (!h && !(h = j->res->holder = calloc(1, sizeof *h)))
        return -2;
    h->attempt = attempt;
    h->session = session;
    h->owner = 0;
    zfb_owners_t *owners = rp->j->o.owners;
    if ((flags & LEASE_KEYED) && owners && !(h->owner = zfb_owners_intern(owners, key)))
        return -2;
    memcpy(h->name, name, nlen);
    h->name[nlen] = 0;
    j->state = ZF_ST_RUNNING;
    return 0;
}

static int apply_attempts(replay_t *rp, reader_t *r)
{
    uint64_t id = rd_u(r, 8);
    uint32_t attempt = (uint32_t)rd_u(r, 4);
    uint32_t base = (uint32_t)rd_u(r, 4);
    if (r->bad || r->left)
        return -1;
    job_t *j;
    tab_orphan(rp, id, &j);
    if (!j || zf_state_is_terminal(j->state))
        return 0; /* (written only while a job is unfinished) */
    if (attempt > j->attempt)
        j->attempt = attempt;
    drop_holder(j);        /* a RECALLED: the job went back to its queue */
    if (base > j->attempt) /* a damaged record: never more taken back than delivered */
        base = j->attempt;
    if (!zfb_job_res(j))
        return -2;
    j->res->attempt_base = base;
    return 0;
}

static int apply_owner(replay_t *rp, reader_t *r)
{
    uint64_t id = rd_u(r, 8);
    const uint8_t *key = rd_bytes(r, ZF_KEY_BYTES);
    if (r->bad || r->left)
        return -1;
    job_t *j;
    tab_orphan(rp, id, &j);
    zfb_owners_t *owners = rp->j->o.owners;
    if (!j || !owners)
        return 0; /* (a repair keeps the record as it is, and needs no owner) */
    j->owner = zfb_owners_intern(owners, key);
    return j->owner ? 0 : -2;
}

static int apply_schedule(replay_t *rp, reader_t *r)
{
    uint64_t id = rd_u(r, 8);
    uint64_t due = rd_u(r, 8);
    uint8_t retries = (uint8_t)rd_u(r, 1);
    uint8_t retried = (uint8_t)rd_u(r, 1);
    uint32_t backoff = (uint32_t)rd_u(r, 4);
    uint64_t elen = rd_u(r, 2);
    const uint8_t *err = rd_bytes(r, elen);
    if (r->bad || r->left)
        return -1;
    job_t *j;
    tab_orphan(rp, id, &j);
    if (!j || zf_state_is_terminal(j->state))
        return 0;   /* (written only while a job is unfinished) */
    drop_holder(j); /* a retry's SCHEDULE: its lease ended (a snapshot writes LEASE after) */
    if (!zfb_job_res(j))
        return -2;
    result_t *res = j->res;
    res->due_at = due ? from_wall(due, rp->now_ms, rp->wall_now) : 0;
    res->retries = retries;
    res->retried = retried <= retries ? retried : retries;
    res->backoff_ms = backoff;
    free(res->error);
    res->error = NULL;
    if (elen) {
        if (!(res->error = malloc(elen + 1)))
            return -2;
        memcpy(res->error, err, elen);
        res->error[elen] = 0;
    }
    return 0;
}

static int apply_tags(replay_t *rp, reader_t *r)
{
    uint64_t id = rd_u(r, 8);
    uint64_t n = rd_u(r, 1);
    const uint8_t *p = rd_bytes(r, n);
    if (r->bad || r->left || zf_tags_check((const char *)p, n))
        return -1;
    job_t *j;
    tab_orphan(rp, id, &j);
    if (!j)
        return 0;
    char *t = strndup((const char *)p, n);
    if (!t)
        return -2;
    free(j->tags);
    j->tags = t;
    return 0;
}

/* Reads a STEP body into *p; *payload and *plen are set when it carries one. */
static int read_step(reader_t *r, uint64_t *id, zfb_pipe_t *p, const uint8_t **payload,
                     uint64_t *plen)
{
    memset(p, 0, sizeof *p);
    *id = rd_u(r, 8);
    uint64_t cur = rd_u(r, 1), n = rd_u(r, 1), flags = rd_u(r, 1);
    if (r->bad || n < 2 || n > ZFB_PIPE_MAX || cur >= n)
        return -1;
    p->cur = (uint8_t)cur;
    p->n = (uint8_t)n;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t dev = rd_u(r, 1), len = rd_u(r, 1);
        const uint8_t *name = rd_bytes(r, len);
        if (r->bad || dev > ZF_DEV_GPU || len == 0 || len > ZF_FN_MAX || memchr(name, 0, len))
            return -1;
        p->dev[i] = (uint8_t)dev;
        memcpy(p->fn[i], name, len);
    }
    p->opts = (flags & STEP_OPTS) != 0;
    for (uint64_t i = 0; p->opts && i < n; i++) {
        p->timeout_ms[i] = (uint32_t)rd_u(r, 4);
        uint64_t retries = rd_u(r, 1);
        if (retries > ZF_RETRIES_MAX)
            return -1;
        p->retries[i] = (uint8_t)retries;
    }
    *payload = NULL;
    *plen = 0;
    if (flags & STEP_PAYLOAD) {
        *plen = rd_u(r, 4);
        *payload = rd_bytes(r, *plen);
    }
    return r->bad || r->left ? -1 : 0;
}

/* A job moved to another step (payload: the previous step's output) or, without payload,
   the pipeline of a job just accepted or compacted, which is at the step its ACCEPT shows. */
static int apply_step(replay_t *rp, reader_t *r)
{
    uint64_t id, plen;
    zfb_pipe_t p;
    const uint8_t *payload;
    if (read_step(r, &id, &p, &payload, &plen) < 0)
        return -1;
    job_t *j;
    tab_orphan(rp, id, &j);
    if (!j)
        return 0;
    if (!j->pipe && !(j->pipe = malloc(sizeof *j->pipe)))
        return -2;
    *j->pipe = p;
    if (!payload)
        return 0;
    fnq_t *fn = rp->fn(rp->arg, p.fn[p.cur]);
    if (!fn)
        return -2;
    zfb_job_drop_payload(j);
    if (plen && zfb_job_copy_payload(j, payload, plen) < 0)
        return -2;
    j->fn = fn;
    j->device = p.dev[p.cur];
    if (zfb_job_enter_step(j) < 0)
        return -2;
    j->state = ZF_ST_QUEUED; /* the step before it finished: this one has not started */
    drop_holder(j);
    result_t *res = zfb_job_res(j);
    if (!res)
        return -2;
    res->attempt_base = j->attempt;
    j->deadline_at = 0;
    return 0;
}

static int apply_finish(replay_t *rp, reader_t *r)
{
    uint64_t id = rd_u(r, 8);
    uint8_t state = (uint8_t)rd_u(r, 1);
    uint32_t attempts = (uint32_t)rd_u(r, 4);
    uint64_t duration = rd_u(r, 8);
    uint64_t fin_wall = rd_u(r, 8);
    uint8_t flags = (uint8_t)rd_u(r, 1);
    uint64_t elen = rd_u(r, 2);
    const uint8_t *err = rd_bytes(r, elen);
    uint64_t wlen = rd_u(r, 1);
    const uint8_t *wname = rd_bytes(r, wlen);
    uint64_t dlen = rd_u(r, 1);
    const uint8_t *dname = rd_bytes(r, dlen);
    uint64_t olen = rd_u(r, 4);
    const uint8_t *out = rd_bytes(r, olen);
    uint64_t full = flags & FIN_OUTPUT_CUT ? rd_u(r, 8) : olen;
    if (r->bad || r->left || !zf_state_is_terminal(state))
        return -1;
    job_t *j;
    if (tab_orphan(rp, id, &j))
        return 0;                                      /* not a job we know: nothing to finish */
    uint32_t base = j->res ? j->res->attempt_base : 0; /* (the FINISH keeps what came before) */
    zfb_job_drop_result(j);
    result_t *res = calloc(1, sizeof *res);
    if (!res)
        return -2;
    j->res = res;
    /* An output that was not journaled whole never comes back, not even in part: the job
       reads output_lost, with no bytes, and says what was lost. */
    bool lost = flags & FIN_OUTPUT_CUT;
    if (lost) {
        olen = 0;
        if (state == ZF_ST_SUCCEEDED)
            state = ZF_ST_OUTPUT_LOST;
        rp->output_lost++;
    }
    zmq_msg_init(&res->output);
    if (zmq_msg_init_size(&res->output, olen) < 0) {
        zmq_msg_init(&res->output);
        return -2;
    }
    if (olen)
        memcpy(zmq_msg_data(&res->output), out, olen);
    char note[160] = "";
    if (lost)
        snprintf(note, sizeof note,
                 "%soutput lost: its %llu bytes were over the journal's bound "
                 "(--result-max-bytes) and the broker restarted",
                 elen ? "; " : "", (unsigned long long)full);
    if (elen || note[0]) {
        size_t nn = strlen(note);
        if (!(res->error = malloc(elen + nn + 1)))
            return -2;
        memcpy(res->error, err, elen);
        memcpy(res->error + elen, note, nn + 1);
    }
    res->duration_us = duration;
    res->attempt_base = base <= attempts ? base : attempts;
    if (wlen || dlen)
        res->ran_on = winfo_get(rp, wname, wlen, dname, dlen);
    j->state = state;
    j->attempt = attempts;
    j->finished_ms = from_wall(fin_wall, rp->now_ms, rp->wall_now);
    if (j->finished_ms > rp->now_ms)
        j->finished_ms = rp->now_ms;
    if (state != ZF_ST_LOST && state != ZF_ST_TIMED_OUT && state != ZF_ST_FAILED) {
        /* only dead letters and failed jobs keep their payload, for a retry (as the broker
           does) */
        zfb_job_drop_payload(j);
    }
    tab_touch(rp, j);
    return 0;
}

static int apply(replay_t *rp, uint8_t type, const uint8_t *body, size_t len)
{
    reader_t r = {body, len, false};
    switch (type) {
    case REC_ACCEPT: return apply_accept(rp, &r);
    case REC_START: return apply_start(rp, &r);
    case REC_FINISH: return apply_finish(rp, &r);
    case REC_ATTEMPTS: return apply_attempts(rp, &r);
    case REC_OWNER: return apply_owner(rp, &r);
    case REC_LEASE: return apply_lease(rp, &r);
    case REC_SCHEDULE: return apply_schedule(rp, &r);
    case REC_TAGS: return apply_tags(rp, &r);
    case REC_STEP: return apply_step(rp, &r);
    case REC_FORGET: {
        uint64_t id = rd_u(&r, 8);
        if (r.bad || r.left)
            return -1;
        job_t *j = tab_find(rp, id);
        if (j)
            job_discard(rp, j);
        return 0;
    }
    default: return -1;
    }
}

/* ------------------------------------------------------------------ damage */

/* Whether a body's own lengths add up to its record's length: every record can be checked
   this way before its checksum, which keeps a resynchronisation's byte-by-byte search
   cheap and makes a false start (bytes in a payload that look like a header) rarer still. */
static bool body_shape_ok(uint8_t type, const uint8_t *body, uint64_t len)
{
    reader_t r = {body, len, false};
    switch (type) {
    case REC_ACCEPT: {
        rd_bytes(&r, ACCEPT_FIXED - 5);
        uint64_t nlen = rd_u(&r, 1);
        rd_bytes(&r, nlen);
        rd_bytes(&r, rd_u(&r, 4));
        return !r.bad && !r.left && nlen > 0 && nlen <= ZF_FN_MAX;
    }
    case REC_START: return len == START_FIXED;
    case REC_FINISH: {
        rd_bytes(&r, 8 + 1 + 4 + 8 + 8);
        uint64_t flags = rd_u(&r, 1);
        rd_bytes(&r, rd_u(&r, 2));
        rd_bytes(&r, rd_u(&r, 1));
        rd_bytes(&r, rd_u(&r, 1));
        rd_bytes(&r, rd_u(&r, 4));
        if (flags & FIN_OUTPUT_CUT)
            rd_u(&r, 8);
        return !r.bad && !r.left;
    }
    case REC_FORGET: return len == FORGET_FIXED;
    case REC_ATTEMPTS: return len == ATTEMPTS_FIXED;
    case REC_OWNER: return len == OWNER_FIXED;
    case REC_SCHEDULE: {
        rd_bytes(&r, SCHEDULE_FIXED - 2);
        rd_bytes(&r, rd_u(&r, 2));
        return !r.bad && !r.left;
    }
    case REC_STEP: {
        uint64_t id, plen;
        zfb_pipe_t p;
        const uint8_t *payload;
        return read_step(&r, &id, &p, &payload, &plen) == 0;
    }
    case REC_TAGS: {
        rd_bytes(&r, 8);
        uint64_t n = rd_u(&r, 1);
        rd_bytes(&r, n);
        return !r.bad && !r.left && n <= ZF_TAGS_MAX;
    }
    case REC_LEASE: {
        rd_bytes(&r, LEASE_FIXED - 1);
        uint64_t nlen = rd_u(&r, 1);
        rd_bytes(&r, nlen);
        return !r.bad && !r.left && nlen <= ZF_NAME_MAX;
    }
    default: return false;
    }
}

/* Why the bytes at off are not one whole record with a good checksum and a sound shape, or
   NULL when they are (*len: its body length). */
static const char *rec_check(const uint8_t *map, uint64_t size, uint64_t off, uint64_t *len)
{
    if (size - off < HDR)
        return "torn record header";
    *len = get_le(map + off, 4);
    if (*len > size - off - HDR)
        return "torn record";
    if ((uint32_t)crc32(0L, map + off + 8, (uInt)(*len + 1)) != (uint32_t)get_le(map + off + 4, 4))
        return "bad checksum";
    if (!body_shape_ok(map[off + 8], map + off + HDR, *len))
        return "malformed record";
    return NULL;
}

/* rec_check's test in the cheap order (shape, then checksum), for the search. */
static bool rec_candidate(const uint8_t *map, uint64_t size, uint64_t off, uint64_t *len)
{
    if (size - off < HDR)
        return false;
    *len = get_le(map + off, 4);
    return *len <= size - off - HDR && body_shape_ok(map[off + 8], map + off + HDR, *len) &&
           (uint32_t)crc32(0L, map + off + 8, (uInt)(*len + 1)) ==
               (uint32_t)get_le(map + off + 4, 4);
}

/* True when p[0..n) is all zeros: the reserve past the last record (see reserve). */
static bool all_zero(const uint8_t *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Resynchronisation after damage at from - 1: the first offset where a record that checks
   out starts and is followed by another that does, or ends the file. The second record
   guards against a false start inside a payload (which may hold bytes that look like a
   record, checksum included). Returns size when there is none: the damage is a torn tail.
   (A damaged record followed by one valid record and then a torn one is taken for a torn
   tail too: the cost is that one record, and today's cut.) */
static uint64_t resync(const uint8_t *map, uint64_t size, uint64_t from)
{
    for (uint64_t off = from; off < size && size - off >= HDR; off++) {
        uint64_t len, next_len;
        if (!rec_candidate(map, size, off, &len))
            continue;
        uint64_t next = off + HDR + len;
        if (next == size || rec_candidate(map, size, next, &next_len) ||
            all_zero(map + next, size - next)) /* (the reserve ends the records too) */
            return off;
    }
    return size;
}

/* A range of the file that holds no valid record: skipped by a repair. */
typedef struct {
    uint64_t off, len;
    const char *why; /* of the record that starts it */
} range_t;

/* What a scan found. Damage in the middle: ranges with valid records after them. A torn
   tail: bytes from tail_at to the end that hold no valid record. */
typedef struct {
    range_t *bad; /* in file order */
    size_t nbad;
    uint64_t bad_bytes;
    uint64_t after_records, after_bytes; /* valid records after the first damaged range */
    uint64_t tail_at;                    /* the file's size when there is no torn tail */
    const char *tail_why;
    bool reserve; /* what follows tail_at is the zeros reserved ahead (reserve), not damage */
} scan_t;

static int add_range(scan_t *sc, uint64_t off, uint64_t len, const char *why)
{
    range_t *p = realloc(sc->bad, (sc->nbad + 1) * sizeof *p);
    if (!p)
        return -1;
    sc->bad = p;
    sc->bad[sc->nbad++] = (range_t){off, len, why};
    sc->bad_bytes += len;
    return 0;
}

/* A damaged range starts where a record should: the id its header names is the best guess
   at the job the damage hit (it may be damaged itself). */
static void note_damaged_id(replay_t *rp, const uint8_t *map, uint64_t off, uint64_t len)
{
    uint8_t type = map[off + 8];
    if (len >= HDR + 8 && type >= REC_ACCEPT && type <= REC_LAST)
        idset_add(rp, get_le(map + off + HDR, 8));
}

/* Parses the records in map[MAGIC_LEN..size), applying the valid ones; a damaged record is
   skipped up to the next offset where valid records resume (see resync). Returns 0, or -1
   when memory ran out. */
static int scan(replay_t *rp, const uint8_t *map, uint64_t size, scan_t *sc)
{
    uint64_t off = MAGIC_LEN;
    *sc = (scan_t){.tail_at = size};
    while (off < size) {
        uint64_t len = 0;
        const char *why = rec_check(map, size, off, &len);
        if (why && all_zero(map + off, size - off)) {
            sc->tail_at = off; /* the zeros reserved past the last record: no damage */
            sc->reserve = true;
            break;
        }
        if (!why) {
            int rc = apply(rp, map[off + 8], map + off + HDR, len);
            if (rc == -2)
                return -1;
            if (rc < 0)
                why = "malformed record";
        }
        if (!why) {
            rp->records++;
            if (sc->nbad) {
                sc->after_records++;
                sc->after_bytes += HDR + len;
            }
            off += HDR + len;
            continue;
        }
        uint64_t next = resync(map, size, off + 1);
        if (next == size) {
            sc->tail_at = off;
            sc->tail_why = why;
            break;
        }
        if (add_range(sc, off, next - off, why) < 0)
            return -1;
        note_damaged_id(rp, map, off, next - off);
        rp->damaged = true;
        off = next;
    }
    return 0;
}

/* "at OFF (+LEN bytes, WHY), ..." for the first few ranges, into buf. */
static void ranges_text(const scan_t *sc, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sc->nbad && i < 8 && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%llu (%llu bytes, %s)", i ? ", " : "",
                              (unsigned long long)sc->bad[i].off,
                              (unsigned long long)sc->bad[i].len, sc->bad[i].why);
    if (sc->nbad > 8 && n < cap)
        snprintf(buf + n, cap - n, " and %zu more", sc->nbad - 8);
}

/* The affected jobs: how many, how many of them are gone (no ACCEPT survived) and the
   first few ids, into buf. */
static void affected_text(replay_t *rp, char *buf, size_t cap)
{
    uint64_t gone = 0;
    size_t n = 0, shown = 0;
    buf[0] = 0;
    for (idset_t *e = rp->affected; e; e = e->hh.next)
        gone += !tab_find(rp, e->id);
    n += (size_t)snprintf(buf, cap,
                          "%llu job(s) had records there, as far as can be known (%llu of "
                          "them gone, the others come back without those records)",
                          (unsigned long long)rp->naffected, (unsigned long long)gone);
    for (idset_t *e = rp->affected; e && n < cap; e = e->hh.next, shown++) {
        if (shown == 10) {
            snprintf(buf + n, cap - n, " ...");
            break;
        }
        n += (size_t)snprintf(buf + n, cap - n, "%s%llu%s", shown ? ", " : ": ",
                              (unsigned long long)e->id, tab_find(rp, e->id) ? "" : " (gone)");
    }
}

/* Damage with valid records after it: the broker does not start and the file is not
   touched; the operator chooses the repair. */
static void refuse(zf_journal_t *self, replay_t *rp, const scan_t *sc)
{
    char ranges[1024], jobs[1024];
    ranges_text(sc, ranges, sizeof ranges);
    affected_text(rp, jobs, sizeof jobs);
    zf_log_event(ZF_LOG_ERROR, "journal_damaged",
                 &(zf_log_fields_t){.path = self->path, .bytes = sc->bad[0].off},
                 "journal: %s is damaged at offset %llu (%s) and %llu valid record(s), %llu "
                 "bytes, follow the damage: not starting, the file is left as it is. Damaged "
                 "range(s): %zu, %llu bytes, at %s; %s. To keep every valid record run "
                 "`zfleet-broker --data %s --journal-repair` (it saves the original aside and "
                 "skips only the damaged records), then start the broker again",
                 self->path, (unsigned long long)sc->bad[0].off, sc->bad[0].why,
                 (unsigned long long)sc->after_records, (unsigned long long)sc->after_bytes,
                 sc->nbad, (unsigned long long)sc->bad_bytes, ranges, jobs, self->dir);
}

/* Cuts the file to its valid prefix and says so in one line. */
static int cut_tail(zf_journal_t *self, uint64_t valid, uint64_t size, const char *why)
{
    zf_log_event(ZF_LOG_WARN, "journal_cut",
                 &(zf_log_fields_t){.path = self->path, .bytes = size - valid, .reason = why},
                 "journal: cut %llu bytes of torn/corrupt tail at offset %llu (%s)",
                 (unsigned long long)(size - valid), (unsigned long long)valid, why);
    if (ftruncate(self->fd, (off_t)valid) < 0) {
        zf_log(ZF_LOG_ERROR, "journal: cannot cut %s: %s", self->path, strerror(errno));
        return -1;
    }
    sync_or_die(self->fd, self->path);
    self->size = self->alloc = valid;
    return 0;
}

/* Frees what a replay built and did not hand out. */
static void replay_release(replay_t *rp)
{
    job_t *j, *tmp;
    HASH_ITER(hh, rp->tab, j, tmp)
    job_discard(rp, j);
    for (int i = 0; i < rp->nwinfo; i++)
        if (--rp->winfo[i]->refs == 0)
            free(rp->winfo[i]);
    rp->nwinfo = 0;
    idset_free(rp);
}

static uint8_t *map_file(zf_journal_t *self, uint64_t size)
{
    uint8_t *map = size > MAGIC_LEN ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, self->fd, 0) : NULL;
    if (map == MAP_FAILED)
        zf_log(ZF_LOG_ERROR, "journal: cannot read %s: %s", self->path, strerror(errno));
    return map;
}

int zf_journal_replay(zf_journal_t *self, void (*restore)(void *arg, job_t *job),
                      fnq_t *(*fn)(void *arg, const char *name), void *arg)
{
    if (!self)
        return 0;
    int64_t t0 = zf_now_us();
    uint64_t size = self->size;
    replay_t rp = {
        .j = self, .fn = fn, .arg = arg, .now_ms = zf_now_ms(), .wall_now = zf_wall_ms()};
    uint8_t *map = map_file(self, size);
    if (map == MAP_FAILED)
        return -1;
    scan_t sc = {.tail_at = size};
    int rc = map ? scan(&rp, map, size, &sc) : 0;
    if (map)
        munmap(map, size);
    if (rc < 0) {
        zf_log(ZF_LOG_ERROR, "journal: out of memory replaying %s", self->path);
    } else if (sc.nbad) {
        refuse(self, &rp, &sc);
        rc = -1;
    } else if (sc.reserve) {
        self->size = sc.tail_at; /* appends go on into the reserve; self->alloc is the file's */
    } else if (sc.tail_at < size) {
        rc = cut_tail(self, sc.tail_at, size, sc.tail_why);
    }
    free(sc.bad);
    uint64_t queued = 0, finished = 0;
    job_t *j, *tmp;
    HASH_ITER(hh, rp.tab, j, tmp)
    {
        if (rc < 0)
            break; /* replay_release frees them */
        HASH_DEL(rp.tab, j);
        if (zf_state_is_terminal(j->state))
            finished++;
        else
            queued++;
        restore(arg, j);
    }
    uint64_t lost = rp.output_lost;
    replay_release(&rp);
    if (rc == 0)
        zf_log_event(ZF_LOG_INFO, "journal_replayed",
                     &(zf_log_fields_t){
                         .path = self->path, .bytes = self->size, .count = queued + finished},
                     "journal: %s: %llu bytes, %llu records; restored %llu unfinished "
                     "and %llu finished job(s) in %.1f ms",
                     self->path, (unsigned long long)self->size, (unsigned long long)rp.records,
                     (unsigned long long)queued, (unsigned long long)finished,
                     (double)(zf_now_us() - t0) / 1000.0);
    if (rc == 0 && lost)
        zf_log_event(ZF_LOG_WARN, "journal_output_lost", &(zf_log_fields_t){.count = lost},
                     "journal: %llu result(s) come back output_lost: their output was over "
                     "--result-max-bytes when they finished, so it was not journaled",
                     (unsigned long long)lost);
    if (rc == 0)
        self->records = rp.records;
    /* A replayed file may be mostly dead: the first tick past the minimum looks. */
    self->check_at = self->o.compact_min_bytes;
    return rc;
}

/* ------------------------------------------------------------------ repair */

/* Repair rebuilds jobs only to judge records and report; they belong to no broker. */
static fnq_t *repair_fn(void *arg, const char *name)
{
    static fnq_t any;
    (void)arg;
    (void)name;
    return &any;
}

/* Gives the original a second name, DIR/journal.damaged-<UTC time>, synced: a hard link
   where the file system has them, else a copy of map. The name goes into name. */
static int save_aside(zf_journal_t *self, const uint8_t *map, uint64_t size, char *name, size_t cap)
{
    char stamp[32];
    time_t now = (time_t)(zf_wall_ms() / 1000);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    for (int n = 0; n < 100; n++) {
        if (n)
            snprintf(name, cap, "%s.damaged-%s-%d", self->path, stamp, n);
        else
            snprintf(name, cap, "%s.damaged-%s", self->path, stamp);
        if (link(self->path, name) == 0)
            return fsync(self->dirfd);
        if (errno == EEXIST)
            continue;
        int fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0)
            return -1;
        int rc = write_all(fd, (const uint8_t *)MAGIC, MAGIC_LEN, 0);
        if (rc == 0 && size > MAGIC_LEN)
            rc = write_all(fd, map + MAGIC_LEN, size - MAGIC_LEN, MAGIC_LEN);
        if (rc == 0)
            rc = fdatasync(fd);
        close(fd);
        return rc < 0 ? -1 : fsync(self->dirfd);
    }
    errno = EEXIST;
    return -1;
}

/* Writes the file without the damaged ranges and the torn tail to DIR/journal.compact,
   syncs it and renames it over the journal. */
static int write_repaired(zf_journal_t *self, const uint8_t *map, const scan_t *sc, uint64_t *kept)
{
    int fd = open(self->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int rc = write_all(fd, (const uint8_t *)MAGIC, MAGIC_LEN, 0);
    uint64_t from = MAGIC_LEN;
    *kept = MAGIC_LEN;
    for (size_t i = 0; i <= sc->nbad && rc == 0; i++) {
        uint64_t to = i < sc->nbad ? sc->bad[i].off : sc->tail_at;
        rc = write_all(fd, map + from, to - from, *kept);
        *kept += to - from;
        if (i < sc->nbad)
            from = sc->bad[i].off + sc->bad[i].len;
    }
    if (rc == 0)
        rc = fdatasync(fd);
    int e = errno;
    close(fd);
    if (rc == 0 && rename(self->tmp, self->path) == 0)
        return fsync(self->dirfd);
    e = rc == 0 ? errno : e;
    unlink(self->tmp);
    errno = e;
    return -1;
}

int zf_journal_repair(const char *dir)
{
    char *path = join(dir, "journal");
    struct stat st;
    int exists = path && stat(path, &st) == 0;
    free(path);
    if (!exists) {
        zf_log(ZF_LOG_ERROR, "journal repair: no journal in %s", dir);
        return -1;
    }
    zf_journal_opts_t o = {.policy = ZF_FSYNC_ALWAYS};
    zf_journal_t *self = zf_journal_open(dir, &o); /* locked: no broker runs on it meanwhile */
    if (!self)
        return -1;
    uint64_t size = self->size, kept = 0;
    uint8_t *map = map_file(self, size);
    replay_t rp = {.j = self, .fn = repair_fn, .now_ms = zf_now_ms(), .wall_now = zf_wall_ms()};
    scan_t sc = {.tail_at = size};
    char saved[512] = "", ranges[1024], jobs[1024];
    int rc = map == MAP_FAILED ? -1 : map ? scan(&rp, map, size, &sc) : 0;
    if (rc < 0) {
        if (map != MAP_FAILED)
            zf_log(ZF_LOG_ERROR, "journal repair: out of memory reading %s", self->path);
    } else if (!sc.nbad && (sc.tail_at == size || sc.reserve)) {
        zf_log(ZF_LOG_INFO, "journal repair: %s has no damage (%llu records): nothing to do",
               self->path, (unsigned long long)rp.records);
    } else if (save_aside(self, map, size, saved, sizeof saved) < 0) {
        zf_log(ZF_LOG_ERROR, "journal repair: cannot save %s aside: %s; nothing changed",
               self->path, strerror(errno));
        rc = -1;
    } else if (write_repaired(self, map, &sc, &kept) < 0) {
        zf_log(ZF_LOG_ERROR,
               "journal repair: cannot write the repaired %s: %s; it is as it "
               "was, and a copy is in %s",
               self->path, strerror(errno), saved);
        rc = -1;
    } else {
        ranges_text(&sc, ranges, sizeof ranges);
        affected_text(&rp, jobs, sizeof jobs);
        zf_log(ZF_LOG_WARN,
               "journal repair: %s: skipped %zu damaged range(s), %llu bytes%s%s; cut a "
               "torn tail of %llu bytes; kept %llu valid records, %llu bytes; %s. The "
               "original is saved as %s",
               self->path, sc.nbad, (unsigned long long)sc.bad_bytes, sc.nbad ? " at " : "", ranges,
               (unsigned long long)(sc.reserve ? 0 : size - sc.tail_at),
               (unsigned long long)rp.records, (unsigned long long)kept, jobs, saved);
    }
    if (map && map != MAP_FAILED)
        munmap(map, size);
    free(sc.bad);
    replay_release(&rp);
    zf_journal_close(&self);
    return rc;
}

/* ------------------------------------------------------------------ appending */

void zf_journal_accept(zf_journal_t *self, const job_t *job)
{
    if (self && !self->down) {
        enc_accept(&self->pend, job);
        enc_owner(&self->pend, job, self->o.owners);
        enc_tags(&self->pend, job);
        enc_step(&self->pend, job, false);
    }
}

void zf_journal_step(zf_journal_t *self, const job_t *job, bool with_payload)
{
    if (self && !self->down)
        enc_step(&self->pend, job, with_payload);
}

void zf_journal_start(zf_journal_t *self, const job_t *job)
{
    if (self && !self->down)
        enc_started(&self->pend, job, self->o.owners);
}

void zf_journal_finish(zf_journal_t *self, const job_t *job)
{
    if (self && !self->down)
        enc_finish(&self->pend, job, self->o.result_max_bytes);
}

void zf_journal_attempts(zf_journal_t *self, const job_t *job)
{
    if (self && !self->down)
        enc_attempts(&self->pend, job);
}

void zf_journal_schedule(zf_journal_t *self, const job_t *job)
{
    if (self && !self->down && has_schedule(job))
        enc_schedule(&self->pend, job);
}

void zf_journal_forget(zf_journal_t *self, uint64_t id)
{
    if (self && !self->down)
        enc_forget(&self->pend, id);
}

/* The journal cannot be trusted past its last good sync: it stops taking records (their
   content lives on in the broker's state, which the recovering snapshot writes) and says
   so once. */
static void go_down(zf_journal_t *self, int e, const char *what)
{
    self->failures++;
    if (!self->down)
        zf_log_event(ZF_LOG_ERROR, "journal_down",
                     &(zf_log_fields_t){.path = self->path, .reason = strerror(e)},
                     "journal: %s of %s failed: %s; refusing new jobs until a snapshot of the "
                     "broker's state can be written",
                     what, self->path, strerror(e));
    self->down = e;
    self->retry_ms = RETRY_MS;
    self->retry_at = zf_now_ms() + RETRY_MS;
    self->pend.len = 0;
    self->pend.nrec = 0;
    if (self->pend.cap > KEEP_BUF_BYTES) {
        free(self->pend.p);
        self->pend = (jbuf_t){0};
    }
}

static int do_sync(zf_journal_t *self, int64_t now_ms)
{
    int64_t t0 = self->o.fsync_hist ? zf_now_us() : 0;
    int rc = jsync(self, self->fd);
    if (self->o.fsync_hist)
        zf_hist_observe(self->o.fsync_hist, (uint64_t)(zf_now_us() - t0));
    if (rc < 0) {
        go_down(self, errno, "fdatasync");
        return -1;
    }
    self->unsynced = false;
    self->last_sync_ms = now_ms;
    return 0;
}

static bool interval_due(const zf_journal_t *self, int64_t now_ms)
{
    return self->o.policy == ZF_FSYNC_INTERVAL && self->unsynced && !self->down &&
           now_ms - self->last_sync_ms >= (int64_t)self->o.interval_ms;
}

static int commit_write_sync(zf_journal_t *self);

/* Every commit written so far is as durable as the policy makes it (the inline path). */
static void mark_durable(zf_journal_t *self, bool wrote)
{
    self->wseq += wrote;
    self->dseq = self->wseq;
    self->dsize = self->size;
    self->drecords = self->records;
}

/* The commit of the loop's own thread: write, then (under `always`) fdatasync here. Used
   until the flusher runs, and for the policies other than `always`. */
static int commit_inline(zf_journal_t *self)
{
    bool wrote = self->pend.len != 0;
    int rc = commit_write_sync(self);
    if (rc == 0)
        mark_durable(self, wrote);
    return rc;
}

/* The pending records reached the file (not yet the disk): count them and empty the buffer,
   keeping its memory unless a burst made it large. */
static void pend_written(zf_journal_t *self)
{
    self->size += self->pend.len;
    self->records += self->pend.nrec;
    self->pend.len = 0;
    self->pend.nrec = 0;
    if (self->pend.cap > KEEP_BUF_BYTES) {
        free(self->pend.p);
        self->pend = (jbuf_t){0};
    }
    self->unsynced = true;
}

static int commit_write_sync(zf_journal_t *self)
{
    if (self->down)
        return -1;
    if (self->pend.len == 0) {
        int64_t now = self->unsynced ? zf_now_ms() : 0;
        return self->unsynced && interval_due(self, now) ? do_sync(self, now) : 0;
    }
    reserve(self, self->pend.len);
    if (jwrite(self, self->fd, self->pend.p, self->pend.len, self->size) < 0) {
        int e = errno;
        /* A partial record must not stay (a replay would cut it as a torn tail anyway). */
        if (ftruncate(self->fd, (off_t)self->size) < 0)
            zf_log(ZF_LOG_ERROR, "journal: cannot cut back %s: %s", self->path, strerror(errno));
        self->alloc = self->size;
        go_down(self, e, "write");
        return -1;
    }
    uint64_t before = self->size, before_records = self->records;
    pend_written(self);
    int64_t now = zf_now_ms();
    if (self->o.policy == ZF_FSYNC_ALWAYS) {
        if (do_sync(self, now) == 0)
            return 0;
        /* Under `always` nothing of this write was acknowledged, and its jobs are about to
           be refused: take its records out again, so that a crash before the recovering
           snapshot cannot replay a job its client was told was rejected. */
        if (ftruncate(self->fd, (off_t)before) == 0) {
            self->size = self->alloc = before;
            self->records = before_records;
        }
        return -1;
    }
    if (interval_due(self, now))
        return do_sync(self, now);
    return 0;
}

/* ------------------------------------------------------------------ the flusher thread */

/* The WAL-writer pattern (PostgreSQL's walwriter, Kafka's log flusher): under `always` the
   loop writes each group commit into the page cache and asks this thread to fdatasync up
   to it; the loop keeps accepting and dispatching meanwhile, and lets a commit's
   acknowledgements go only once a sync that covers it has ended (zf_journal_durable).
   The thread only ever syncs: the loop alone writes, cuts and swaps the file, and does
   so (snapshot, close, failures) only while the thread is idle (flusher_idle). After a
   failed sync the thread syncs nothing more until a snapshot resets it: a later sync that
   succeeded would not prove the pages of the failed one reached the disk. */
#define FLUSH_TIMES 64      /* sync durations kept for the loop to time into fsync_hist */
#define COMPANY_MAX_US 1000 /* the longest a sync waits for company (flusher_main) */

struct flusher {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* the thread waits for a request; the loop for the thread's answer */
    int wake_fd;       /* the loop's eventfd, written when a sync ends (borrowed); or -1 */
    long slow_ms;      /* $ZFLEET_JOURNAL_SLOW_SYNC_MS: the test hook, a sleep before a sync */
    /* under mu */
    int fd;                                     /* the file to sync */
    uint64_t want_seq, want_size, want_records; /* the commit a sync was asked to cover */
    uint64_t done_seq, done_size, done_records; /* the commit the last good sync covered */
    int err;                                    /* errno of a failed sync, until a reset */
    bool busy, stop;
    uint64_t company_us; /* a request came in during the last sync: wait this long for more */
    bool resting;        /* in that wait: requests need not wake the thread */
    unsigned ntimes;
    uint64_t times[FLUSH_TIMES];
};

/* The wait for company (see flusher_main), under f->mu, which it releases meanwhile: until
   its time is up, or a stop. The loop's requests do not wake it (`resting`): each would
   cost this thread a wake-up, the very thing the wait saves. */
static void wait_for_company(struct flusher *f)
{
    int64_t until = zf_now_us() + (int64_t)f->company_us; /* CLOCK_MONOTONIC, as f->cv's */
    struct timespec ts = {until / 1000000, (until % 1000000) * 1000};
    f->company_us = 0;
    f->resting = true;
    while (!f->stop && pthread_cond_timedwait(&f->cv, &f->mu, &ts) == 0) {
    }
    f->resting = false;
}

static void *flusher_main(void *arg)
{
    zf_journal_t *self = arg;
    struct flusher *f = self->flusher;
    for (;;) {
        /* (taken each time round: the predicate and the wait need it; a version that took
           it once before the loop waited unlocked from the second sync on, which
           ThreadSanitizer reported and which could miss a request's wake-up) */
        pthread_mutex_lock(&f->mu);
        while (!f->stop && (f->err || f->want_seq == f->done_seq))
            pthread_cond_wait(&f->cv, &f->mu);
        if (f->stop) {
            pthread_mutex_unlock(&f->mu);
            break;
        }
        if (f->company_us && !f->err) {
            wait_for_company(f);
            pthread_mutex_unlock(&f->mu);
            continue; /* (the predicate again: a stop or a reset may have come meanwhile) */
        }
        uint64_t seq = f->want_seq, size = f->want_size, records = f->want_records;
        int fd = f->fd;
        f->busy = true;
        pthread_mutex_unlock(&f->mu);
        if (f->slow_ms > 0)
            nanosleep(&(struct timespec){f->slow_ms / 1000, (f->slow_ms % 1000) * 1000000L}, NULL);
        int64_t t0 = zf_now_us();
        int rc = jsync(self, fd), e = rc < 0 ? (errno ? errno : EIO) : 0;
        uint64_t us = (uint64_t)(zf_now_us() - t0);
        pthread_mutex_lock(&f->mu);
        f->busy = false;
        if (rc < 0) {
            f->err = e;
        } else {
            f->done_seq = seq;
            f->done_size = size;
            f->done_records = records;
        }
        if (f->ntimes < FLUSH_TIMES)
            f->times[f->ntimes++] = us;
        /* a request that came in during this sync means a busy stream: the next sync first
           waits as long as this one took (at most COMPANY_MAX_US) for more commits to join
           it, which halves the syncs of a busy stream for at most that much more latency;
           a lone commit (one request at a time) is synced at once */
        f->company_us =
            rc == 0 && f->want_seq != seq ? (us < COMPANY_MAX_US ? us : COMPANY_MAX_US) : 0;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
        uint64_t one = 1;
        if (f->wake_fd >= 0 && write(f->wake_fd, &one, sizeof one) < 0) {
            /* EAGAIN: the counter is full, so the loop is being woken anyway */
        }
    }
    return NULL;
}

/* Starts the thread (on the first async commit). Returns 0, or -1: the loop then keeps
   syncing inline, as before there was a flusher. */
static int flusher_start(zf_journal_t *self)
{
    struct flusher *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->wake_fd = self->o.wake_fd > 0 ? self->o.wake_fd : -1;
    const char *slow = getenv("ZFLEET_JOURNAL_SLOW_SYNC_MS");
    f->slow_ms = slow ? atol(slow) : 0;
    f->fd = self->fd;
    f->want_seq = f->done_seq = self->wseq;
    f->want_size = f->done_size = self->size;
    f->want_records = f->done_records = self->records;
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_t ca; /* timed waits (for company) on the monotonic clock */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &ca);
    pthread_condattr_destroy(&ca);
    self->flusher = f;
    if (pthread_create(&f->thread, NULL, flusher_main, self) != 0) {
        pthread_mutex_destroy(&f->mu);
        pthread_cond_destroy(&f->cv);
        free(f);
        self->flusher = NULL;
        return -1;
    }
    return 0;
}

/* Waits until the thread is not inside a sync and has nothing to sync, so the loop may cut or
   swap the file. */
static void flusher_idle(zf_journal_t *self)
{
    struct flusher *f = self->flusher;
    if (!f)
        return;
    /* not only out of a sync: with no request left either, since a pending one (the thread
       waiting for company, or not yet woken) would be taken up, with the old file's fd,
       while the caller replaces the file */
    pthread_mutex_lock(&f->mu);
    while (f->busy || (!f->err && f->want_seq != f->done_seq))
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

/* After a snapshot replaced the file (synced, holding all the broker's state): everything
   so far is durable, the thread syncs the new file, and a failure before it is forgotten.
   Only while the thread is idle. */
static void flusher_reset(zf_journal_t *self)
{
    struct flusher *f = self->flusher;
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->fd = self->fd;
    f->err = 0;
    f->want_seq = f->done_seq = self->wseq;
    f->want_size = f->done_size = self->size;
    f->want_records = f->done_records = self->records;
    f->company_us = 0; /* the old file's stream */
    pthread_mutex_unlock(&f->mu);
}

/* Takes in what the thread has finished (waiting, if `wait`, until it has answered every
   request). A failed sync takes the journal down here: everything written after the last
   good sync is cut from the file (none of it was acknowledged), as the inline path cuts
   the write whose sync failed. Returns 0, or -1 when the journal is down. */
static int flusher_collect(zf_journal_t *self, bool wait)
{
    struct flusher *f = self->flusher;
    if (!f)
        return self->down ? -1 : 0;
    uint64_t times[FLUSH_TIMES];
    pthread_mutex_lock(&f->mu);
    while (wait && !f->err && (f->busy || f->want_seq != f->done_seq))
        pthread_cond_wait(&f->cv, &f->mu);
    uint64_t seq = f->done_seq, size = f->done_size, records = f->done_records;
    int err = f->err;
    unsigned n = f->ntimes;
    memcpy(times, f->times, n * sizeof times[0]);
    f->ntimes = 0;
    pthread_mutex_unlock(&f->mu);
    for (unsigned i = 0; self->o.fsync_hist && i < n; i++)
        zf_hist_observe(self->o.fsync_hist, times[i]);
    if (seq > self->dseq) {
        self->dseq = seq;
        self->dsize = size;
        self->drecords = records;
        if (seq == self->wseq)
            self->unsynced = false;
        self->last_sync_ms = zf_now_ms();
    }
    if (self->down)
        return -1;
    if (!err)
        return 0;
    /* the thread is idle now (it stops after a failure): the file is the loop's */
    if (ftruncate(self->fd, (off_t)self->dsize) == 0) {
        self->size = self->alloc = self->dsize;
        self->records = self->drecords;
    }
    go_down(self, err, "fdatasync");
    return -1;
}

/* Stops and joins the thread (after its last answer). */
static void flusher_stop(zf_journal_t *self)
{
    struct flusher *f = self->flusher;
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->stop = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->thread, NULL);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
    self->flusher = NULL;
}

/* Writes the pending records (into the page cache) and counts them; on a failed write the
   journal goes down, with the file cut back to before them. Returns 0 or -1. */
static int write_pend(zf_journal_t *self)
{
    reserve(self, self->pend.len);
    if (jwrite(self, self->fd, self->pend.p, self->pend.len, self->size) < 0) {
        int e = errno;
        /* the commits before this one may still be syncing: their answer decides what stays */
        if (flusher_collect(self, true) < 0)
            return -1;
        if (ftruncate(self->fd, (off_t)self->size) < 0)
            zf_log(ZF_LOG_ERROR, "journal: cannot cut back %s: %s", self->path, strerror(errno));
        self->alloc = self->size;
        go_down(self, e, "write");
        return -1;
    }
    pend_written(self);
    return 0;
}

int zf_journal_write(zf_journal_t *self)
{
    if (!self)
        return 0;
    if (self->down)
        return -1;
    /* (unsynced: the next commit's sync, or interval's, takes them) */
    return self->pend.len ? write_pend(self) : 0;
}

int zf_journal_commit_async(zf_journal_t *self)
{
    if (!self)
        return 0;
    if (self->down)
        return -1;
    if (self->o.policy != ZF_FSYNC_ALWAYS || !self->o.flusher ||
        (!self->flusher && flusher_start(self) < 0))
        return commit_inline(self);
    if (flusher_collect(self, false) < 0)
        return -1;
    if (self->pend.len == 0)
        return 0;
    if (write_pend(self) < 0)
        return -1;
    self->wseq++;
    struct flusher *f = self->flusher;
    pthread_mutex_lock(&f->mu);
    f->want_seq = self->wseq;
    f->want_size = self->size;
    f->want_records = self->records;
    if (!f->resting) /* (resting: it syncs when its wait for company ends) */
        pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return 0;
}

uint64_t zf_journal_seq(const zf_journal_t *self)
{
    return self ? self->wseq + 1 : 0;
}

uint64_t zf_journal_durable(zf_journal_t *self)
{
    if (!self)
        return UINT64_MAX;
    flusher_collect(self, false);
    return self->dseq;
}

int zf_journal_commit(zf_journal_t *self)
{
    if (!self)
        return 0;
    if (!self->flusher)
        return commit_inline(self);
    if (zf_journal_commit_async(self) < 0)
        return -1;
    return flusher_collect(self, true);
}

long zf_journal_due_ms(const zf_journal_t *self, int64_t now_ms)
{
    if (self && self->down) /* the next recovery attempt */
        return self->retry_at > now_ms ? (long)(self->retry_at - now_ms) : 0;
    if (self && self->pend.len) /* records appended after this turn's commit: commit now */
        return 0;
    if (!self || self->o.policy != ZF_FSYNC_INTERVAL || !self->unsynced)
        return -1;
    int64_t left = self->last_sync_ms + self->o.interval_ms - now_ms;
    return left > 0 ? (long)left : 0;
}

uint64_t zf_journal_size(const zf_journal_t *self)
{
    return self ? self->size : 0;
}

uint64_t zf_journal_records(const zf_journal_t *self)
{
    return self ? self->records : 0;
}

int zf_journal_error(const zf_journal_t *self)
{
    return self ? self->down : 0;
}

uint64_t zf_journal_failures(const zf_journal_t *self)
{
    return self ? self->failures : 0;
}

/* ------------------------------------------------------------------ compaction */

/* Writes every job in `jobs` to the temporary file and syncs it. Returns its fd, or -1. */
static int write_snapshot(zf_journal_t *self, job_t *jobs, uint64_t *size, uint64_t *njobs,
                          uint64_t *nrec)
{
    int fd = open(self->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    jbuf_t b = {0};
    put(&b, MAGIC, MAGIC_LEN);
    *size = 0;
    *njobs = 0;
    int rc = 0;
    for (job_t *j = jobs; j && rc == 0; j = j->hh.next) {
        if (j->released) /* forgotten but for its FORGET record, and its output is gone */
            continue;
        enc_accept(&b, j);
        enc_owner(&b, j, self->o.owners);
        enc_tags(&b, j);
        enc_step(&b, j, false);
        if (j->res && j->res->attempt_base)
            enc_attempts(&b, j);
        if (!zf_state_is_terminal(j->state) && has_schedule(j))
            enc_schedule(&b, j);
        if (j->state == ZF_ST_RUNNING && j->worker && j->worker->session)
            enc_lease(&b, j, self->o.owners); /* (a held job is rewritten as its holder) */
        else if (j->state == ZF_ST_RUNNING && j->res && j->res->holder)
            enc_held(&b, j, self->o.owners);
        if (zf_state_is_terminal(j->state))
            enc_finish(&b, j, self->o.result_max_bytes);
        ++*njobs;
        if (b.len >= FLUSH_BYTES || !j->hh.next) {
            rc = jwrite(self, fd, b.p, b.len, *size);
            *size += b.len;
            b.len = 0;
        }
    }
    if (rc == 0 && b.len) { /* no jobs: only the magic */
        rc = jwrite(self, fd, b.p, b.len, *size);
        *size += b.len;
    }
    *nrec = b.nrec;
    free(b.p);
    /* The lock moves with the file: the new inode must be ours before it has the name. */
    if (rc < 0 || jsync(self, fd) < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        unlink(self->tmp);
        errno = e;
        return -1;
    }
    return fd;
}

/* Replaces the journal with a synced snapshot of `jobs`. Returns 0; or -1 with errno: 1 when
   the old journal is still the one in use (untouched), 2 when the snapshot has the name but
   the directory's sync failed (so the rename may not be durable). */
static int snapshot(zf_journal_t *self, job_t *jobs, uint64_t *njobs, int *stage)
{
    uint64_t size, nrec;
    *stage = 1;
    flusher_idle(self); /* it may be syncing the file this replaces */
    int fd = write_snapshot(self, jobs, &size, njobs, &nrec);
    if (fd < 0)
        return -1;
    if (rename(self->tmp, self->path) < 0) {
        int e = errno;
        close(fd);
        unlink(self->tmp);
        errno = e;
        return -1;
    }
    close(self->fd);
    self->fd = fd;
    self->size = self->alloc = size;
    self->records = nrec;
    self->pend.len = 0; /* the snapshot holds what they said */
    self->pend.nrec = 0;
    self->unsynced = false;
    self->last_sync_ms = zf_now_ms();
    self->check_at = size * 4 > self->o.compact_min_bytes ? size * 4 : self->o.compact_min_bytes;
    flusher_reset(self);
    /* The rename is durable only once the directory is: until then a crash finds the old
       file, which is still whole. */
    *stage = 2;
    int e = fault_errno(self, true);
    if (fsync(self->dirfd) < 0)
        return -1;
    errno = e;
    if (e)
        return -1;
    /* it holds every record appended so far, and the jobs those commits still wait for */
    mark_durable(self, true);
    flusher_reset(self);
    return 0;
}

static void compact(zf_journal_t *self, job_t *jobs)
{
    int64_t t0 = zf_now_us();
    uint64_t old = self->size, njobs;
    int stage;
    if (snapshot(self, jobs, &njobs, &stage) < 0) {
        if (stage == 2) { /* a failed sync: the state on disk is unknown */
            go_down(self, errno, "directory fsync after compaction");
            return;
        }
        zf_log_event(ZF_LOG_WARN, "journal_compaction_failed",
                     &(zf_log_fields_t){.path = self->path, .reason = strerror(errno)},
                     "journal: compaction failed: %s; the journal keeps growing, "
                     "next try at 1.5x its size",
                     strerror(errno));
        self->check_at = old + old / 2;
        return;
    }
    zf_log_event(ZF_LOG_INFO, "journal_compacted",
                 &(zf_log_fields_t){.path = self->path, .bytes = self->size, .count = njobs},
                 "journal: compacted %llu -> %llu bytes (%llu live jobs); paused %.1f ms",
                 (unsigned long long)old, (unsigned long long)self->size, (unsigned long long)njobs,
                 (double)(zf_now_us() - t0) / 1000.0);
}

int zf_journal_recover(zf_journal_t *self, int64_t now_ms, job_t *jobs)
{
    if (!self || !self->down)
        return 0;
    if (now_ms < self->retry_at)
        return -1;
    self->retry_at = now_ms + self->retry_ms;
    /* On a disk that is still full, writing the whole state only to hit ENOSPC again would
       cost I/O every try: look at the free space first (one walk of the jobs, no I/O), and
       wait longer each time it is short. */
    uint64_t need = MAGIC_LEN;
    for (job_t *j = jobs; j; j = j->hh.next)
        need += live_size(j, self->o.result_max_bytes);
    struct statvfs vfs;
    if (fstatvfs(self->dirfd, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < need) {
        self->retry_ms = self->retry_ms * 2 < RETRY_MAX_MS ? self->retry_ms * 2 : RETRY_MAX_MS;
        return -1;
    }
    uint64_t njobs;
    int stage;
    if (snapshot(self, jobs, &njobs, &stage) < 0) {
        /* logged when it went down; it stays down. A snapshot writes the whole state: on a
           disk that keeps failing, try it less and less often. */
        self->retry_ms = self->retry_ms * 2 < RETRY_MAX_MS ? self->retry_ms * 2 : RETRY_MAX_MS;
        return -1;
    }
    zf_log_event(ZF_LOG_INFO, "journal_up",
                 &(zf_log_fields_t){.path = self->path, .bytes = self->size, .count = njobs},
                 "journal: %s writable again (a snapshot of %llu jobs, %llu bytes, "
                 "replaced it); accepting jobs",
                 self->path, (unsigned long long)njobs, (unsigned long long)self->size);
    self->down = 0;
    return 0;
}

void zf_journal_tick(zf_journal_t *self, int64_t now_ms, job_t *jobs)
{
    if (!self || self->down)
        return; /* zf_journal_recover's snapshot will compact it too */
    if (interval_due(self, now_ms) && do_sync(self, now_ms) < 0)
        return;
    if (self->size + self->pend.len < self->check_at)
        return;
    /* Walk the jobs only when the file has grown past the mark: amortised over the growth. */
    uint64_t live = MAGIC_LEN;
    for (job_t *j = jobs; j; j = j->hh.next)
        live += live_size(j, self->o.result_max_bytes);
    uint64_t total = self->size + self->pend.len;
    if (live * 4 > total) {
        self->check_at = total * 2; /* mostly live (a backlog): look again when it doubles */
        return;
    }
    compact(self, jobs);
}

void zf_journal_close(zf_journal_t **self_p)
{
    zf_journal_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    if (self->fd >= 0) {
        int rc = zf_journal_commit(self); /* drains the flusher */
        flusher_stop(self);
        if (rc == 0 && self->unsynced)
            do_sync(self, zf_now_ms());
        if (self->down)
            zf_log_event(ZF_LOG_WARN, "journal_closed_down",
                         &(zf_log_fields_t){.path = self->path, .reason = strerror(self->down)},
                         "journal: closed while unavailable (%s): the jobs it missed "
                         "since then run again after a restart",
                         strerror(self->down));
        close(self->fd);
    }
    if (self->dirfd >= 0)
        close(self->dirfd);
    free(self->pend.p);
    free(self->dir);
    free(self->path);
    free(self->tmp);
    free(self->fault);
    free(self);
}
