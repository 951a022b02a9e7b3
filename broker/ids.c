/*  zf_ids — see zf_ids.h.

    Invariants kept by this file:
    - next <= limit, and limit is on disk (ids.next) before any counter value below it is
      turned into an id; a start reads limit back as its next, so counter values (and so
      ids: the permutation is a bijection) never repeat across runs of one directory;
    - the permutation maps [0, ZF_IDS_MAX) onto itself; id = permutation + 1, so 0 (the
      failure value, and "no id" on the wire) is never an id.
*/

#include "zf_ids.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/zf_util.h"

/* An even count; each half is mixed ROUNDS/2 times. Four rounds of a pseudo-random function
   make a strong pseudo-random permutation (Luby-Rackoff); more only cost time on the
   submit path (each round is one SipHash, ~300 instructions). */
#define ROUNDS 4
#define HI_BITS 27
#define LO_BITS 26 /* HI_BITS + LO_BITS = 53 */
#define KEY_FILE "ids.key"
#define NEXT_FILE "ids.next"

struct zf_ids {
    unsigned char key[crypto_shorthash_KEYBYTES];
    uint64_t next;  /* counter value of the next id */
    uint64_t limit; /* first counter value not reserved on disk (UINT64_MAX: no disk) */
    int dirfd;      /* -1 without a directory */
    bool failing;   /* the last reservation failed (logged once until one succeeds) */
    char dir[];
};

/* ------------------------------------------------------------------ the permutation */

static uint64_t round_fn(const zf_ids_t *s, unsigned r, uint64_t half)
{
    unsigned char in[8], out[crypto_shorthash_BYTES];
    uint64_t v = half | (uint64_t)r << 56, h = 0;
    for (int i = 0; i < 8; i++)
        in[i] = (unsigned char)(v >> (8 * i));
    crypto_shorthash(out, in, sizeof in, s->key);
    for (int i = 0; i < 8; i++)
        h |= (uint64_t)out[i] << (8 * i);
    return h;
}

/* A bijection on [0, 2^53): an alternating (unbalanced) Feistel network, each round xoring
   one half with a keyed hash of the other. */
static uint64_t permute(const zf_ids_t *s, uint64_t x)
{
    const uint64_t hmask = (1ull << HI_BITS) - 1, lmask = (1ull << LO_BITS) - 1;
    uint64_t hi = x >> LO_BITS, lo = x & lmask;
    for (unsigned r = 0; r < ROUNDS; r += 2) {
        hi ^= round_fn(s, r, lo) & hmask;
        lo ^= round_fn(s, r + 1, hi) & lmask;
    }
    return hi << LO_BITS | lo;
}

uint64_t zf_ids_at(const zf_ids_t *self, uint64_t n)
{
    if (n >= ZF_IDS_MAX)
        return 0;
    /* Cycle-walking: the one value of [0, 2^53) outside the domain, ZF_IDS_MAX, is stepped
       over by applying the permutation again, which keeps the map a bijection on
       [0, ZF_IDS_MAX). Since n itself is in the domain, at most two steps are needed. */
    uint64_t y = permute(self, n);
    while (y == ZF_IDS_MAX)
        y = permute(self, y);
    return y + 1;
}

/* ------------------------------------------------------------------ files */

/* Writes len bytes to DIR/name atomically and durably: a temp file, fsync, rename over
   name, directory fsync. Returns 0, or -1 with errno set (the old file is untouched). */
static int write_file(zf_ids_t *s, const char *name, const void *data, size_t len)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    int fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, data, len);
    if (n >= 0 && (size_t)n != len)
        errno = ENOSPC; /* a short write of a few bytes: the disk is full */
    if (n < 0 || (size_t)n != len || fsync(fd) < 0) {
        int e = errno;
        close(fd);
        unlinkat(s->dirfd, tmp, 0);
        errno = e;
        return -1;
    }
    if (close(fd) < 0 || renameat(s->dirfd, tmp, s->dirfd, name) < 0) {
        int e = errno;
        unlinkat(s->dirfd, tmp, 0);
        errno = e;
        return -1;
    }
    return fsync(s->dirfd);
}

/* Reads up to cap bytes of DIR/name into buf[cap]. Returns the length read (cap: maybe
   longer), or -1 with errno set (ENOENT: it does not exist). */
static ssize_t read_file(zf_ids_t *s, const char *name, char *buf, size_t cap)
{
    int fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, cap);
    int e = errno;
    close(fd);
    errno = e;
    return n;
}

static int write_next(zf_ids_t *s, uint64_t v)
{
    char text[32];
    int len = snprintf(text, sizeof text, "%llu\n", (unsigned long long)v);
    return write_file(s, NEXT_FILE, text, (size_t)len);
}

/* Reads ids.next into *v. Returns 1 when found, 0 when missing, -1 (logged) otherwise. */
static int read_next(zf_ids_t *s, uint64_t *v)
{
    char text[32];
    ssize_t n = read_file(s, NEXT_FILE, text, sizeof text - 1); /* room for the NUL */
    if (n < 0 && errno == ENOENT)
        return 0;
    if (n < 0) {
        zf_log(ZF_LOG_ERROR, "ids: cannot read %s/%s: %s", s->dir, NEXT_FILE, strerror(errno));
        return -1;
    }
    text[n] = 0;
    if (n > 0 && text[n - 1] == '\n')
        text[n - 1] = 0;
    if (n == (ssize_t)sizeof text - 1 || zf_parse_u64(text, ZF_IDS_MAX, v) < 0) {
        zf_log(ZF_LOG_ERROR,
               "ids: %s/%s is damaged (want one decimal number); ids issued "
               "before could repeat, so the broker will not start",
               s->dir, NEXT_FILE);
        return -1;
    }
    return 1;
}

/* Reads ids.key into s->key. Returns 1 when found, 0 when missing, -1 (logged) otherwise. */
static int read_key(zf_ids_t *s)
{
    char buf[sizeof s->key + 1]; /* one more, to see a file that is too long */
    ssize_t n = read_file(s, KEY_FILE, buf, sizeof buf);
    if (n < 0 && errno == ENOENT)
        return 0;
    if (n != (ssize_t)sizeof s->key) {
        if (n < 0)
            zf_log(ZF_LOG_ERROR, "ids: cannot read %s/%s: %s", s->dir, KEY_FILE, strerror(errno));
        else
            zf_log(ZF_LOG_ERROR, "ids: %s/%s is damaged (%s%zd bytes, want %zu)", s->dir, KEY_FILE,
                   n == (ssize_t)sizeof buf ? "at least " : "", n, sizeof s->key);
        return -1;
    }
    memcpy(s->key, buf, sizeof s->key);
    sodium_memzero(buf, sizeof buf);
    return 1;
}

/* First start: writes ids.next (0) unless it is there, then a fresh key. Returns 0, or -1
   (logged). */
static int create(zf_ids_t *s, bool has_next)
{
    const char *file = NEXT_FILE;
    int rc = has_next ? 0 : write_next(s, 0);
    if (rc == 0) {
        file = KEY_FILE;
        randombytes_buf(s->key, sizeof s->key);
        rc = write_file(s, KEY_FILE, s->key, sizeof s->key);
    }
    if (rc < 0)
        zf_log(ZF_LOG_ERROR, "ids: cannot create %s/%s: %s", s->dir, file, strerror(errno));
    return rc;
}

/* Loads or creates the key and the counter. ids.next is created before ids.key, so a crash
   between the two leaves "counter 0, no key", which is safe to complete; any other pair
   with one file missing means ids were issued under a state that is gone. */
static int load(zf_ids_t *s)
{
    uint64_t next = 0;
    int has_next = read_next(s, &next), has_key = has_next < 0 ? -1 : read_key(s);
    if (has_key < 0)
        return -1;
    if (has_key && !has_next) {
        zf_log(ZF_LOG_ERROR,
               "ids: %s/%s is missing beside %s: ids issued before could repeat; "
               "restore it, or remove %s as well to start a new key",
               s->dir, NEXT_FILE, KEY_FILE, KEY_FILE);
        return -1;
    }
    if (!has_key && next > 0) {
        zf_log(ZF_LOG_ERROR,
               "ids: %s/%s is missing but %s says ids were issued; restore it, "
               "or remove %s as well to start a new key",
               s->dir, KEY_FILE, NEXT_FILE, NEXT_FILE);
        return -1;
    }
    if (!has_key && create(s, has_next) < 0)
        return -1;
    s->next = s->limit = next;
    return 0;
}

/* ------------------------------------------------------------------ the source */

zf_ids_t *zf_ids_new(const char *data_dir)
{
    if (sodium_init() < 0) {
        zf_log(ZF_LOG_ERROR, "ids: libsodium cannot start");
        return NULL;
    }
    size_t dlen = data_dir ? strlen(data_dir) : 0;
    zf_ids_t *s = calloc(1, sizeof *s + dlen + 1);
    if (!s)
        return NULL;
    s->dirfd = -1;
    if (!data_dir) {
        randombytes_buf(s->key, sizeof s->key);
        s->limit = UINT64_MAX;
        return s;
    }
    memcpy(s->dir, data_dir, dlen + 1);
    if (mkdir(data_dir, 0755) < 0 && errno != EEXIST) {
        zf_log(ZF_LOG_ERROR, "ids: cannot create directory %s: %s", data_dir, strerror(errno));
        goto fail;
    }
    s->dirfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dirfd < 0) {
        zf_log(ZF_LOG_ERROR, "ids: cannot open directory %s: %s", data_dir, strerror(errno));
        goto fail;
    }
    if (load(s) < 0)
        goto fail;
    return s;
fail:
    zf_ids_destroy(&s);
    return NULL;
}

/* Moves the reservation one block on. Returns 0, or -1 with errno set (logged once per
   run of failures). */
static int reserve(zf_ids_t *s)
{
    uint64_t limit = s->limit + ZF_IDS_BLOCK < ZF_IDS_MAX ? s->limit + ZF_IDS_BLOCK : ZF_IDS_MAX;
    if (s->limit >= ZF_IDS_MAX) {
        errno = EOVERFLOW;
        return -1;
    }
    if (write_next(s, limit) < 0) {
        int e = errno; /* the caller reports it; logging may change errno */
        if (!s->failing)
            zf_log(ZF_LOG_ERROR,
                   "ids: cannot reserve job ids in %s/%s: %s (new jobs are "
                   "refused until it can)",
                   s->dir, NEXT_FILE, strerror(e));
        s->failing = true;
        errno = e;
        return -1;
    }
    if (s->failing)
        zf_log(ZF_LOG_INFO, "ids: job ids reserved again in %s/%s", s->dir, NEXT_FILE);
    s->failing = false;
    s->limit = limit;
    return 0;
}

uint64_t zf_ids_next(zf_ids_t *self)
{
    if (self->next >= self->limit && reserve(self) < 0)
        return 0;
    if (self->next >= ZF_IDS_MAX) {
        errno = EOVERFLOW; /* 2^53 - 1 ids issued: the id space is spent */
        return 0;
    }
    return zf_ids_at(self, self->next++);
}

void zf_ids_destroy(zf_ids_t **self_p)
{
    zf_ids_t *s = *self_p;
    if (!s)
        return;
    *self_p = NULL;
    if (s->dirfd >= 0)
        close(s->dirfd);
    sodium_memzero(s->key, sizeof s->key);
    free(s);
}
