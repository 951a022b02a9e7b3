/*  zf_owners — see zf_owners.h. Entries sit in an array (the id is the index + 1) and in a
    hash by key, for the ZAP handler's lookups. */
#include "zf_owners.h"

#include <stdlib.h>
#include <string.h>

struct zfb_owners {
    zfb_owner_t **all; /* [id - 1] */
    uint32_t n, cap;
    zfb_owner_t *by_key;
};

zfb_owners_t *zfb_owners_new(void)
{
    return calloc(1, sizeof(zfb_owners_t));
}

void zfb_owners_destroy(zfb_owners_t **self_p)
{
    zfb_owners_t *o = *self_p;
    if (!o)
        return;
    *self_p = NULL;
    HASH_CLEAR(hh, o->by_key);
    for (uint32_t i = 0; i < o->n; i++)
        free(o->all[i]);
    free(o->all);
    free(o);
}

zfb_owner_t *zfb_owners_find(const zfb_owners_t *o, const uint8_t key[ZF_KEY_BYTES], uint32_t *id)
{
    zfb_owner_t *e;
    HASH_FIND(hh, o->by_key, key, ZF_KEY_BYTES, e);
    if (e && id)
        *id = e->id;
    return e;
}

uint32_t zfb_owners_intern(zfb_owners_t *o, const uint8_t key[ZF_KEY_BYTES])
{
    uint32_t id = 0;
    if (zfb_owners_find(o, key, &id))
        return id;
    if (o->n == o->cap) {
        uint32_t cap = o->cap ? o->cap * 2 : 16;
        zfb_owner_t **grown = realloc(o->all, cap * sizeof *grown);
        if (!grown)
            return 0;
        o->all = grown;
        o->cap = cap;
    }
    zfb_owner_t *e = calloc(1, sizeof *e);
    if (!e)
        return 0;
    memcpy(e->key, key, ZF_KEY_BYTES);
    zf_key_z85(key, e->z85);
    o->all[o->n++] = e;
    e->id = o->n;
    HASH_ADD(hh, o->by_key, key, ZF_KEY_BYTES, e);
    return o->n;
}

zfb_owner_t *zfb_owners_get(const zfb_owners_t *o, uint32_t id)
{
    return id >= 1 && id <= o->n ? o->all[id - 1] : NULL;
}

uint32_t zfb_owners_count(const zfb_owners_t *o)
{
    return o->n;
}
