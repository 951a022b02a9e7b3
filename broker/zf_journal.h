/*  zf_journal — the broker's write-ahead journal: accepted jobs and terminal states.

    Append-only records with a checksum each; one group commit per event-loop turn covers
    every record appended in it (zf_journal_commit), so the broker acknowledges a batch of
    submissions with a single fsync. Replay rebuilds the live jobs; a torn or corrupt tail
    is reported and cut. Compaction rewrites the live state to a new file and swaps it in
    atomically.

    Every function accepts a NULL journal and then does nothing (the broker without
    --data). Records are buffered in memory until commit; a failed write is logged and
    reported by zf_journal_commit.
*/
#ifndef ZF_JOURNAL_H
#define ZF_JOURNAL_H

#include <stdint.h>

#include "zf_broker.h"
#include "zf_state.h"

typedef struct zf_journal zf_journal_t;

/* Opens (creating) the journal in dir. Returns NULL with a logged reason on failure. */
zf_journal_t *zf_journal_open(const char *dir, zf_fsync_t policy, uint32_t interval_ms,
                              uint64_t result_max_bytes);

/* Replays the journal: calls restore(arg, job) for every job that is live (not yet
   terminal, or terminal with its result kept), each a new job_t the broker then owns, with
   fn set through fn(arg, name). Returns 0, or -1 if the file cannot be read at all. */
int zf_journal_replay(zf_journal_t *self, void (*restore)(void *arg, job_t *job),
                      fnq_t *(*fn)(void *arg, const char *name), void *arg);

/* Record that a job was accepted (its header fields and payload). */
void zf_journal_accept(zf_journal_t *self, const job_t *job);
/* Record that a job was dispatched (its attempt number), so the attempt counts after a crash. */
void zf_journal_start(zf_journal_t *self, const job_t *job);
/* Record a job's terminal state and result (output bounded by result_max_bytes). */
void zf_journal_finish(zf_journal_t *self, const job_t *job);
/* The broker dropped the job's result: it is dead weight for compaction. */
void zf_journal_forget(zf_journal_t *self, uint64_t id);

/* Writes the buffered records and syncs them under the policy. Returns 0, or -1 if they
   could not be written (the broker must then not acknowledge). */
int zf_journal_commit(zf_journal_t *self);

/* Periodic work: interval fsync, and compaction when dead records dominate (the live
   jobs are read from the broker's job table `jobs`). */
void zf_journal_tick(zf_journal_t *self, int64_t now_ms, job_t *jobs);

/* Commits, closes and frees; sets *self_p to NULL. NULL-safe. */
void zf_journal_close(zf_journal_t **self_p);

#endif
