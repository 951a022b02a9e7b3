/*  zf_auth — the broker's CURVE security: its own key, the three key directories (who may be
    a client, a worker, an admin), the ZAP handler that lets a connection in or not, and
    the owner of every message that comes in.

    ZAP (ZeroMQ RFC 27) is served on the broker's own loop: the handler's REP socket is one
    more item in its poll, so the key sets need no lock, and a reload (SIGHUP) changes them
    between two messages. Each endpoint has its own domain ("clients", "workers"), enforced
    (ZMQ_ZAP_ENFORCE_DOMAIN): a key listed only for workers cannot connect as a client, nor
    the other way round. A connection let in carries its owner id as ZeroMQ's User-Id, so
    every message says who sent it (zfb_auth_caller) without a lookup by key.

    Ownership: the auth borrows the owners table and the config's strings. Errors: new
    returns NULL and reload -1, each with one logged line; nothing here aborts.
*/
#ifndef ZF_AUTH_H
#define ZF_AUTH_H

#include <stdbool.h>
#include <stdint.h>
#include <zmq.h>

#include "zf_broker.h"
#include "zf_owners.h"

#define ZFB_DOMAIN_CLIENTS "clients"
#define ZFB_DOMAIN_WORKERS "workers"

typedef struct zfb_auth zfb_auth_t;

typedef struct {
    uint64_t denied_clients;   /* connections refused on the client endpoint */
    uint64_t denied_workers;   /* and on the worker endpoint */
    uint64_t refused_messages; /* messages refused because their key lost its role */
    uint64_t reloads, reload_failures;
    uint32_t client_keys, worker_keys, admin_keys; /* listed now */
} zfb_auth_counts_t;

/* Reads cfg->curve_secret (the broker's .key_secret) and the key directories, and binds
   the ZAP handler in ctx (before any CURVE socket binds). NULL (logged) when a file or a
   directory cannot be read, or no client, admin or worker directory is named. */
zfb_auth_t *zfb_auth_new(void *ctx, const zf_broker_config_t *cfg, zfb_owners_t *owners);
void zfb_auth_destroy(zfb_auth_t **self_p);

/* Makes sock a CURVE server in domain (a ZFB_DOMAIN_*): call before it binds. 0 or -1. */
int zfb_auth_secure(const zfb_auth_t *self, void *sock, const char *domain);

/* The ZAP handler's socket, for the loop's poll. */
void *zfb_auth_socket(const zfb_auth_t *self);

/* Answers every ZAP request waiting (never blocks). */
void zfb_auth_serve(zfb_auth_t *self);

/* Reads the three directories again. All or nothing: when one cannot be read, or holds a
   file that is not a certificate, the sets stay as they were (logged) and -1 is returned.
   Keys no longer listed lose their roles at once: their next message is refused. */
int zfb_auth_reload(zfb_auth_t *self);

/* The owner id a message came from (its first data frame's User-Id); 0 if it has none. */
uint32_t zfb_auth_caller(const zmq_msg_t *frame);

/* Whether owner id currently has any of the roles (ZFB_ROLE_* bits). */
bool zfb_auth_may(const zfb_auth_t *self, uint32_t owner, uint8_t roles);

/* Counts a refused message of owner (its key lost its role). */
void zfb_auth_refused(zfb_auth_t *self, uint32_t owner);

void zfb_auth_counts(const zfb_auth_t *self, zfb_auth_counts_t *out);

/* Logs, once per endpoint, what is exposed when ep is a TCP endpoint on an address other
   than loopback and CURVE is off. what: "client" or "worker". */
void zfb_auth_warn_open(const char *ep, const char *what);

#endif
