/*  zf_ids — job ids: safe in JSON and JavaScript, never reused, not guessable.

    An id is a keyed pseudo-random permutation of a counter: a 4-round alternating Feistel
    network over 53 bits whose round function is SipHash-2-4 (libsodium crypto_shorthash)
    under a secret 128-bit key, with cycle-walking to leave out one value. So every id is in
    [1, 2^53 - 1] (ZF_IDS_MAX), two counter values never give the same id, and without the
    key the next id cannot be told from the ones seen.

    With a directory the key and the counter survive restarts: DIR/ids.key (16 raw bytes,
    mode 0600, made from the OS's random source on first use) and DIR/ids.next (decimal
    text: the first counter value not yet reserved). The counter is reserved in blocks of
    ZF_IDS_BLOCK: ids.next is rewritten (temp file, fsync, rename, directory fsync) before
    the first id of a block is handed out, so a restart, a crash or a compacted journal
    never brings back an id issued before. Without a directory the key is random per
    process and the counter starts at 0: ids are then unique within a run, and across runs
    only with high probability (2^-53 per pair of ids).

    Not thread-safe: one broker thread owns it.
*/
#ifndef ZF_IDS_H
#define ZF_IDS_H

#include <stdint.h>

#define ZF_IDS_MAX ((1ull << 53) - 1) /* largest id; also the number of distinct ids */
#define ZF_IDS_BLOCK (1ull << 20)     /* counter values reserved per write of ids.next */

typedef struct zf_ids zf_ids_t;

/* Opens the id source of data_dir (created if missing, one level), or an in-memory one
   when data_dir is NULL. Refuses (NULL, with a logged one-line reason) a damaged or
   unreadable ids.key or ids.next, a key without its counter file, or a counter without
   its key once ids were issued: either would let ids repeat. Caller owns the result. */
zf_ids_t *zf_ids_new(const char *data_dir);

/* The next id, in [1, ZF_IDS_MAX]. Costs one permutation (~4 SipHash calls); once per
   ZF_IDS_BLOCK ids it also persists the next block's start (one fsync'd rename). Returns 0
   with errno set when that cannot be written (ENOSPC, EIO...) or the counter is spent:
   no id is handed out whose reservation is not on disk, and the next call tries again. */
uint64_t zf_ids_next(zf_ids_t *self);

/* The id that counter value n (n < ZF_IDS_MAX) maps to under this source's key; pure, the
   same (key, n) always gives the same id. Returns 0 for n out of range. */
uint64_t zf_ids_at(const zf_ids_t *self, uint64_t n);

/* Frees the source and sets *self_p to NULL. NULL-safe. Nothing is written: the unused
   rest of the current block is skipped by the next start. */
void zf_ids_destroy(zf_ids_t **self_p);

#endif
