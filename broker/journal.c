/*  zf_journal — see zf_journal.h. */
#include "zf_journal.h"

#include <stdlib.h>

#include "../proto/zf_util.h"

struct zf_journal {
    int unused;
};

zf_journal_t *zf_journal_open(const char *dir, zf_fsync_t policy, uint32_t interval_ms,
                              uint64_t result_max_bytes)
{
    (void)policy, (void)interval_ms, (void)result_max_bytes;
    zf_log(ZF_LOG_ERROR, "journal in %s: not available in this build yet", dir);
    return NULL;
}

int zf_journal_replay(zf_journal_t *self, void (*restore)(void *, job_t *),
                      fnq_t *(*fn)(void *, const char *), void *arg)
{
    (void)self, (void)restore, (void)fn, (void)arg;
    return 0;
}

void zf_journal_accept(zf_journal_t *self, const job_t *job) { (void)self, (void)job; }
void zf_journal_start(zf_journal_t *self, const job_t *job) { (void)self, (void)job; }
void zf_journal_finish(zf_journal_t *self, const job_t *job) { (void)self, (void)job; }
void zf_journal_forget(zf_journal_t *self, uint64_t id) { (void)self, (void)id; }
int zf_journal_commit(zf_journal_t *self) { (void)self; return 0; }
void zf_journal_tick(zf_journal_t *self, int64_t now_ms, job_t *jobs) { (void)self, (void)now_ms, (void)jobs; }
void zf_journal_close(zf_journal_t **self_p) { free(*self_p); *self_p = NULL; }
