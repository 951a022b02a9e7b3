/*  zf_owners — the keys the broker knows: each CURVE public key it has allowed, or found
    owning a journaled job, gets a small number (an owner id, 1 and up; 0 means nobody: a job
    submitted without CURVE), the roles the key directories give it now, and its counters.

    An entry is never removed: jobs and journal records name owners by id for the broker's
    life, and a key that is revoked keeps its id with no roles (the table holds only keys
    that were listed or that own a job, so it stays as small as the key directories).

    Internal to the broker (zfb_ prefix, see zf_job.h). Errors: zfb_owners_intern returns 0
    when memory runs out.
*/
#ifndef ZF_OWNERS_H
#define ZF_OWNERS_H

#include <stdbool.h>
#include <stdint.h>
#include <uthash.h>

#include "../common/zf_cert.h"

enum {
    ZFB_ROLE_CLIENT = 1, /* listed in --client-keys: may submit and act on its own jobs */
    ZFB_ROLE_WORKER = 2, /* listed in --worker-keys: may register as a worker */
    ZFB_ROLE_ADMIN = 4,  /* listed in --admin-keys: a client that may act on every job */
};

typedef struct zfb_owner {
    uint8_t key[ZF_KEY_BYTES];
    char z85[ZF_KEY_Z85 + 1];
    uint32_t id;
    uint8_t roles;             /* ZFB_ROLE_* bits, as the key directories say now */
    uint64_t unfinished;       /* its jobs not yet terminal */
    uint64_t unfinished_bytes; /* and their payload bytes (bounded like a connection's) */
    uint64_t accepted;         /* jobs accepted from it since the broker started */
    uint64_t refused;          /* its messages refused since it lost its role */
    UT_hash_handle hh;
} zfb_owner_t;

typedef struct zfb_owners zfb_owners_t;

zfb_owners_t *zfb_owners_new(void);
void zfb_owners_destroy(zfb_owners_t **self_p);

/* The owner id of key, added (with no roles) if it is new. 0 when memory runs out. */
uint32_t zfb_owners_intern(zfb_owners_t *self, const uint8_t key[ZF_KEY_BYTES]);

/* The entry for an owner id; NULL for 0 or an id never handed out. */
zfb_owner_t *zfb_owners_get(const zfb_owners_t *self, uint32_t id);

/* The entry for key, or NULL if the table does not hold it. */
zfb_owner_t *zfb_owners_find(const zfb_owners_t *self, const uint8_t key[ZF_KEY_BYTES],
                             uint32_t *id);

/* Number of entries (ids run from 1 to this). */
uint32_t zfb_owners_count(const zfb_owners_t *self);

#endif
