/*  zf_journal — the broker's write-ahead journal: accepted jobs and terminal states.

    Append-only records with a checksum each; one group commit per event-loop turn covers
    every record appended in it (zf_journal_commit), so the broker acknowledges a batch of
    submissions with a single fsync. Under ZF_FSYNC_ALWAYS that fsync runs in the journal's
    flusher thread (zf_journal_commit_async, zf_journal_durable), so the loop goes on
    while it is in flight. Replay rebuilds the live jobs; a torn or corrupt tail
    is reported and cut, but damage with valid records after it stops the start (the file
    is left untouched) until zf_journal_repair skips just the damaged records. Compaction
    rewrites the live state to a new file and swaps it in atomically.

    Every function accepts a NULL journal and then does nothing (the broker without
    --data). Records are buffered in memory until commit. A failed write or sync (disk
    full, EIO) takes the journal down: it drops its buffered records and takes no more,
    commits fail, and zf_journal_recover brings it back by writing a snapshot of the
    broker's state over the file. Nothing here aborts the process.

    On disk: DIR/journal, locked with flock() while a broker has it open (a second broker
    on the same directory is refused). The file starts with an 8-byte magic; each record is
    [u32 body length][u32 CRC-32 of type and body][u8 type][body], little-endian. Record
    types: ACCEPT (job header, attempt and payload), START (id, attempt), FINISH (id, state,
    attempts, duration, finish time, error, worker, device, output), FORGET (id), ATTEMPTS
    (id, attempt, deliveries not charged), OWNER (id, owner's 32-byte public key), LEASE
    (a START naming its holder: session, key, worker name; for re-attach). The last record for an id wins; a second ACCEPT
    for an id is a RETRY (its attempts used start from 0). New kinds of record are new types,
    so older journals replay unchanged; docs/JOURNAL.md has the field layout and the
    guarantees of each fsync policy.
*/
#ifndef ZF_JOURNAL_H
#define ZF_JOURNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/zf_hist.h"
#include "zf_broker.h"
#include "zf_owners.h"
#include "zf_state.h"

/* A journaled payload must fit a record's 32-bit length with room for the header. */
#define ZF_JOURNAL_MAX_PAYLOAD (3ull << 30)
/* Compaction is considered once the file reaches this size (and four times the live size
   after the last compaction); it runs when live records are under a quarter of the file. */
#define ZF_JOURNAL_COMPACT_MIN_DEFAULT (64ull << 20)

typedef struct zf_journal zf_journal_t;

typedef struct {
    zf_fsync_t policy;
    uint32_t interval_ms;       /* with ZF_FSYNC_INTERVAL */
    uint64_t result_max_bytes;  /* largest output journaled; a longer one is recorded by its
                                   length only and replays as ZF_ST_OUTPUT_LOST */
    uint64_t compact_min_bytes; /* 0 = ZF_JOURNAL_COMPACT_MIN_DEFAULT */
    zfb_owners_t *owners;       /* job owners' keys (borrowed): written in OWNER records,
                                   and replayed ones are added to it; NULL = none kept */
    zf_hist_t *fsync_hist;      /* each fdatasync of a commit or an interval sync is timed
                                   into it (borrowed); NULL = not timed */
    int wake_fd;                /* an eventfd the flusher thread writes 1 to when a sync
                                   ends (borrowed; the loop polls it); 0 = none */
    bool flusher;               /* under ZF_FSYNC_ALWAYS: zf_journal_commit_async hands the
                                   sync to the flusher thread; false: it syncs in line */
} zf_journal_opts_t;

/* Opens (creating) the journal in dir (created if missing, one level). Returns NULL with a
   logged reason on failure (cannot create, in use by another broker, not a journal). The
   journal copies what it needs from opts. */
zf_journal_t *zf_journal_open(const char *dir, const zf_journal_opts_t *opts);

/* Replays the journal: calls restore(arg, job) for every job that is live (not yet
   terminal, or terminal with its result kept), each a new job_t the broker then owns, with
   fn set through fn(arg, name). A job whose last record is a LEASE comes back RUNNING with
   no worker and res->holder set (zf_reattach.h). Other non-terminal jobs come back QUEUED with their lease number
   and the attempts they used (a job that was retried or recalled has a res holding only
   attempt_base); terminal ones keep their result (res, with ran_on a winfo_t holding one reference
   per job) and finished_ms on the monotonic clock; deadline_at is on the monotonic clock
   (0 = none). Jobs come in acceptance order, terminal ones in finishing order. A result
   whose output was over result_max_bytes comes back ZF_ST_OUTPUT_LOST (if it had
   succeeded) with no output bytes and an error text saying what was lost.
   A torn or corrupt tail (bad bytes with no valid record after them) is logged in one line
   and cut from the file. Damage with valid records after it is not cut: the file is left
   byte for byte as it is, one error line says where, why, what follows and how to repair,
   and -1 is returned (no job is restored). Call once, right after open.
   Returns 0, or -1 if the file cannot be read or cut, or is damaged (logged). */
int zf_journal_replay(zf_journal_t *self, void (*restore)(void *arg, job_t *job),
                      fnq_t *(*fn)(void *arg, const char *name), void *arg);

/* Repairs DIR/journal after damage in its middle: the original gets a second name,
   DIR/journal.damaged-<UTC time> (a hard link, or a copy where links fail; synced), then
   the journal is rewritten without the damaged ranges and without a torn tail, and renamed
   into place (synced). A damaged range runs from a record that fails its checksum or shape
   to the next offset where a whole valid record starts that is followed by another valid
   record or by the end of the file. Logs one line: ranges and bytes skipped, records kept,
   and the jobs affected as far as they can be known (ids named by the damaged records'
   headers, and jobs whose later records survived without their ACCEPT), saying which are
   gone. Takes the journal's lock (refused while a broker runs on DIR). Does not start a
   broker. Returns 0 (repaired, or nothing to repair: logged), or -1 (logged; the journal
   is as it was). */
int zf_journal_repair(const char *dir);

/* Record that a job was accepted, or requeued from the dead letters (its header fields,
   current attempt and payload; for a requeue, before its attempt_base is set). The five
   appenders do nothing while the journal is down
   (zf_journal_error): the snapshot that recovers it writes the state they describe. */
/* Appends a STEP record: the job's pipeline and the step it is at, with its current payload
   (the previous step's output) when with_payload. Written after ACCEPT (without) and each
   time a step hands on to the next (with). No-op without a pipeline or a journal. */
void zf_journal_step(zf_journal_t *self, const job_t *job, bool with_payload);

void zf_journal_accept(zf_journal_t *self, const job_t *job);
/* Record that a job was dispatched (its attempt number), so the attempt counts after a crash. */
void zf_journal_start(zf_journal_t *self, const job_t *job);
/* Record a job's terminal state and result (output journaled up to result_max_bytes, else
   only its length). */
void zf_journal_finish(zf_journal_t *self, const job_t *job);
/* Record the job's lease number and its deliveries not charged against max_attempts
   (res->attempt_base), after a RECALLED gave one back, so a restart keeps its attempts. */
void zf_journal_attempts(zf_journal_t *self, const job_t *job);
/* The broker dropped the job's result: it is dead weight for compaction. */
void zf_journal_forget(zf_journal_t *self, uint64_t id);
/* Appends the job's retry policy, due time and causes so far (a SCHEDULE record), if it has
   any of them (result_t.retries, backoff_ms, due_at, retried): after its ACCEPT, and each
   time a failure is retried. */
void zf_journal_schedule(zf_journal_t *self, const job_t *job);

/* Writes the buffered records with one write() and syncs them under the policy (always:
   one fdatasync per call that wrote, waiting for the flusher thread if it runs; interval: when the last sync is older than the
   interval). Costs one comparison when nothing was appended. Returns 0, or -1 when the
   journal is down: the write or the sync failed now (logged once; the records buffered
   since the last commit are dropped, and the broker must never acknowledge them), or
   earlier and it has not recovered yet. */
int zf_journal_commit(zf_journal_t *self);

/* Writes the buffered records to the file (the page cache) without a sync of their own: the
   next sync covers them. For records nobody waits on that were appended after this turn's
   commit (the START or LEASE of a job placed once its ACCEPT became durable, whose JOB is
   already on its way to a worker), so they reach the file before the loop sleeps and a
   broker killed meanwhile still knows the lease. Returns 0, or -1 when the journal is down
   (the write failed now: logged, as a commit's). */
int zf_journal_write(zf_journal_t *self);

/* Group commit off the event loop. Like zf_journal_commit, but under ZF_FSYNC_ALWAYS it only
   writes the buffered records (into the page cache) and hands their fdatasync to the
   journal's flusher thread (started by the first call), so the caller keeps working while
   the sync runs; the records are durable once zf_journal_durable reaches the number
   zf_journal_seq gave while they were appended. Under the other policies it is
   zf_journal_commit. Returns 0, or -1 when the journal is down (as zf_journal_commit; the
   records of commits after zf_journal_durable are then lost, and must never be
   acknowledged). */
int zf_journal_commit_async(zf_journal_t *self);
/* The number of the group commit that will carry the records appended now (commits are
   numbered from 1, in order); 0 for NULL. */
uint64_t zf_journal_seq(const zf_journal_t *self);
/* The last commit whose records are all durable (under the policy: written for `none` and
   `interval`, synced for `always`), after taking in what the flusher finished; never
   blocks. A sync that failed takes the journal down here (zf_journal_error), with the
   file cut back to the last good sync. A snapshot (compaction, recovery) makes everything
   appended before it durable. UINT64_MAX for NULL. */
uint64_t zf_journal_durable(zf_journal_t *self);

/* While the journal is down, tries to bring it back: at most every 250 ms (see
   zf_journal_due_ms; up to 2 s apart while the file system has less free space than the
   snapshot needs), it writes the live state `jobs` (the broker's job table, linked
   through hh) to a new file, syncs it, renames it over the journal and syncs the directory,
   as compaction does. A failed sync leaves the old file's contents unknown (Linux may have
   dropped its dirty pages), so only such a snapshot is trusted. Returns 0 when the journal
   is writable (now, or it was not down), -1 while it stays down (logged when it went down
   and once when it recovers). */
int zf_journal_recover(zf_journal_t *self, int64_t now_ms, job_t *jobs);

/* The errno of the failure that took the journal down (ENOSPC, EIO, ...), 0 while it is
   writable or for NULL. */
int zf_journal_error(const zf_journal_t *self);
/* Writes and syncs that failed since open, each of which took the journal down. */
uint64_t zf_journal_failures(const zf_journal_t *self);

/* Periodic work: interval fsync, and compaction when dead records dominate (the live
   jobs are read from the broker's job table `jobs`, linked through hh). */
void zf_journal_tick(zf_journal_t *self, int64_t now_ms, job_t *jobs);

/* Milliseconds until zf_journal_tick has an interval sync due, or (while the journal is
   down) until zf_journal_recover tries again; 0 while records appended since the last
   commit wait (the START records of jobs placed after a commit: the loop commits them at
   once instead of up to a heartbeat later); -1 when none of these is pending (for an event
   loop that wants to wake up for it). */
long zf_journal_due_ms(const zf_journal_t *self, int64_t now_ms);

/* Current size of the journal file in bytes (committed records); 0 for NULL. */
uint64_t zf_journal_size(const zf_journal_t *self);
/* Records in the journal file (committed); 0 for NULL. */
uint64_t zf_journal_records(const zf_journal_t *self);

/* Commits, syncs, closes and frees; sets *self_p to NULL. NULL-safe. */
void zf_journal_close(zf_journal_t **self_p);

#endif
