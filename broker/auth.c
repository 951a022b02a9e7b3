/*  zf_auth — see zf_auth.h. */
#include "zf_auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/zf_util.h"
#include "../proto/zf_proto.h"

/* A draft option in libzmq 4.3's header, which the library takes all the same. Without it
   a CURVE socket whose ZAP handler is missing lets everyone in; ours is always there (it is
   bound before the sockets) and checks the domain itself, so this is a second lock only. */
#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93
#endif

#define ZAP_ENDPOINT "inproc://zeromq.zap.01" /* where libzmq looks for the handler */
#define ZAP_FRAMES_MAX 8
/* Denial lines per second at most: a flood of handshakes with random keys must not flood
   the log too (the counters count every one). */
#define DENIALS_LOGGED_PER_S 10

struct zfb_auth {
    const zf_broker_config_t *cfg;
    zfb_owners_t *owners;
    zf_cert_t cert; /* the broker's own */
    void *zap;
    zfb_auth_counts_t n;
    int64_t log_second;
    uint32_t logged, suppressed;
};

/* ------------------------------------------------------------------ key directories */

typedef struct {
    zfb_owners_t *owners;
    uint32_t *ids; /* the owner ids listed, with their roles */
    uint8_t *roles;
    uint32_t n, cap;
    uint8_t role; /* the directory being read */
    bool oom;
} listing_t;

static void list_key(void *arg, const char *path, const zf_cert_t *c)
{
    (void)path;
    listing_t *l = arg;
    uint32_t id = zfb_owners_intern(l->owners, c->public_key);
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 64;
        uint32_t *ids = realloc(l->ids, cap * sizeof *ids);
        l->ids = ids ? ids : l->ids;
        uint8_t *roles = ids ? realloc(l->roles, cap) : NULL;
        l->roles = roles ? roles : l->roles;
        if (!roles) {
            l->oom = true;
            return;
        }
        l->cap = cap;
    }
    if (!id) {
        l->oom = true;
        return;
    }
    l->ids[l->n] = id;
    l->roles[l->n++] = l->role;
}

static int list_dir(listing_t *l, const char *dir, uint8_t role, uint32_t *count)
{
    if (!dir)
        return 0;
    char err[512];
    l->role = role;
    int n = zf_cert_load_dir(dir, list_key, l, err, sizeof err);
    if (n < 0 || l->oom) {
        zf_log(ZF_LOG_ERROR, "%s", n < 0 ? err : "reading keys: out of memory");
        return -1;
    }
    *count = (uint32_t)n;
    return 0;
}

/* Reads the three directories into new role bits for every owner; all or nothing. */
static int load_keys(zfb_auth_t *a, bool reload)
{
    listing_t l = {.owners = a->owners};
    uint32_t nc = 0, nw = 0, na = 0;
    int rc = list_dir(&l, a->cfg->client_keys_dir, ZFB_ROLE_CLIENT, &nc);
    if (rc == 0)
        rc = list_dir(&l, a->cfg->worker_keys_dir, ZFB_ROLE_WORKER, &nw);
    if (rc == 0)
        rc = list_dir(&l, a->cfg->admin_keys_dir, ZFB_ROLE_ADMIN, &na);
    if (rc == 0) {
        uint32_t revoked = 0, total = zfb_owners_count(a->owners);
        uint8_t *before = calloc(total ? total : 1, 1);
        for (uint32_t id = 1; id <= total; id++) {
            zfb_owner_t *o = zfb_owners_get(a->owners, id);
            if (before)
                before[id - 1] = o->roles;
            o->roles = 0;
        }
        for (uint32_t i = 0; i < l.n; i++)
            zfb_owners_get(a->owners, l.ids[i])->roles |= l.roles[i];
        for (uint32_t id = 1; before && id <= total; id++)
            revoked += (before[id - 1] & ~zfb_owners_get(a->owners, id)->roles) != 0;
        free(before);
        a->n.client_keys = nc;
        a->n.worker_keys = nw;
        a->n.admin_keys = na;
        zf_log_event(ZF_LOG_INFO, reload ? "keys_reloaded" : "keys_read",
                     &(zf_log_fields_t){.count = nc + nw + na},
                     "keys %s: %u client, %u worker, %u admin", reload ? "reloaded" : "read", nc,
                     nw, na);
        if (reload && revoked)
            zf_log_event(ZF_LOG_INFO, "keys_revoked", &(zf_log_fields_t){.count = revoked},
                         "%u key(s) lost a role: their connections get no further service",
                         revoked);
    }
    free(l.ids);
    free(l.roles);
    return rc;
}

int zfb_auth_reload(zfb_auth_t *a)
{
    a->n.reloads++;
    if (load_keys(a, true) == 0)
        return 0;
    a->n.reload_failures++;
    zf_log_event(ZF_LOG_ERROR, "keys_reload_failed", NULL,
                 "keys not reloaded: the key sets stay as they were");
    return -1;
}

/* ------------------------------------------------------------------ life */

zfb_auth_t *zfb_auth_new(void *ctx, const zf_broker_config_t *cfg, zfb_owners_t *owners)
{
    if (!cfg->worker_keys_dir || (!cfg->client_keys_dir && !cfg->admin_keys_dir)) {
        zf_log(ZF_LOG_ERROR, "--curve-secret needs --worker-keys DIR and --client-keys DIR (or "
                             "--admin-keys DIR): with CURVE on, only listed keys get in");
        return NULL;
    }
    zfb_auth_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->cfg = cfg;
    a->owners = owners;
    char err[512];
    if (zf_cert_load(cfg->curve_secret, true, &a->cert, err, sizeof err) < 0) {
        zf_log(ZF_LOG_ERROR, "--curve-secret: %s", err);
        return zfb_auth_destroy(&a), NULL;
    }
    if (load_keys(a, false) < 0)
        return zfb_auth_destroy(&a), NULL;
    a->zap = zmq_socket(ctx, ZMQ_REP);
    int zero = 0;
    if (a->zap)
        zmq_setsockopt(a->zap, ZMQ_LINGER, &zero, sizeof zero);
    if (!a->zap || zmq_bind(a->zap, ZAP_ENDPOINT) < 0) {
        zf_log(ZF_LOG_ERROR, "cannot start the ZAP handler: %s", zmq_strerror(errno));
        return zfb_auth_destroy(&a), NULL;
    }
    char z85[ZF_KEY_Z85 + 1];
    zf_key_z85(a->cert.public_key, z85);
    zf_log(ZF_LOG_INFO, "CURVE on: the broker's public key is %s", z85);
    return a;
}

void zfb_auth_destroy(zfb_auth_t **self_p)
{
    zfb_auth_t *a = *self_p;
    if (!a)
        return;
    *self_p = NULL;
    if (a->zap)
        zmq_close(a->zap);
    memset(&a->cert, 0, sizeof a->cert);
    free(a);
}

int zfb_auth_secure(const zfb_auth_t *a, void *sock, const char *domain)
{
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, a->cert.secret_key, ZF_KEY_BYTES) < 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, domain, strlen(domain)) < 0) {
        zf_log(ZF_LOG_ERROR, "cannot make the %s socket a CURVE server: %s", domain,
               zmq_strerror(errno));
        return -1;
    }
    if (zmq_setsockopt(sock, ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one) < 0)
        zf_log(ZF_LOG_DEBUG, "ZMQ_ZAP_ENFORCE_DOMAIN not taken: %s", zmq_strerror(errno));
    return 0;
}

void *zfb_auth_socket(const zfb_auth_t *a)
{
    return a->zap;
}

/* ------------------------------------------------------------------ ZAP */

static void send_part(void *s, const void *p, size_t n, bool more)
{
    zmq_send(s, p, n, more ? ZMQ_SNDMORE : 0);
}

static void zap_reply(zfb_auth_t *a, const zmq_msg_t *reqid, const char *status, const char *text,
                      uint32_t owner)
{
    char uid[16] = "";
    if (owner)
        snprintf(uid, sizeof uid, "%u", owner);
    send_part(a->zap, "1.0", 3, true);
    send_part(a->zap, zmq_msg_data((zmq_msg_t *)reqid), zmq_msg_size((zmq_msg_t *)reqid), true);
    send_part(a->zap, status, strlen(status), true);
    send_part(a->zap, text, strlen(text), true);
    send_part(a->zap, uid, strlen(uid), true);
    send_part(a->zap, "", 0, false);
}

static bool frame_is(const zmq_msg_t *m, const char *s)
{
    size_t n = strlen(s);
    return zmq_msg_size((zmq_msg_t *)m) == n && memcmp(zmq_msg_data((zmq_msg_t *)m), s, n) == 0;
}

static void log_denial(zfb_auth_t *a, const char *domain, const char *address, const char *key,
                       const char *why)
{
    int64_t second = zf_now_ms() / 1000;
    if (second != a->log_second) {
        if (a->suppressed)
            zf_log_event(ZF_LOG_WARN, "denials_suppressed",
                         &(zf_log_fields_t){.count = a->suppressed},
                         "%u more connection(s) denied (not logged one by one)", a->suppressed);
        a->log_second = second;
        a->logged = a->suppressed = 0;
    }
    if (a->logged++ >= DENIALS_LOGGED_PER_S) {
        a->suppressed++;
        return;
    }
    zf_log_event(ZF_LOG_WARN, "connection_denied",
                 &(zf_log_fields_t){.peer = address, .key = key, .reason = why},
                 "denied a connection from %s to the %s endpoint: key %s %s", address, domain, key,
                 why);
}

/* Decides one request; frames are [version, request id, domain, address, routing id,
   mechanism, credentials...] (RFC 27). */
static void zap_decide(zfb_auth_t *a, zmq_msg_t *f, int n)
{
    if (n < 6 || !frame_is(&f[0], "1.0"))
        return n >= 2 ? zap_reply(a, &f[1], "500", "bad ZAP request", 0) : (void)0;
    char domain[32], address[64];
    zf_str_copy(domain, sizeof domain, (zf_str_t){zmq_msg_data(&f[2]), zmq_msg_size(&f[2])});
    zf_str_copy(address, sizeof address, (zf_str_t){zmq_msg_data(&f[3]), zmq_msg_size(&f[3])});
    bool clients = frame_is(&f[2], ZFB_DOMAIN_CLIENTS),
         workers = frame_is(&f[2], ZFB_DOMAIN_WORKERS);
    if (!frame_is(&f[5], "CURVE") || n != 7 || zmq_msg_size(&f[6]) != ZF_KEY_BYTES ||
        (!clients && !workers))
        return zap_reply(a, &f[1], "400", "CURVE only", 0);
    const uint8_t *key = zmq_msg_data(&f[6]);
    uint32_t owner = 0;
    zfb_owner_t *o = zfb_owners_find(a->owners, key, &owner);
    uint8_t need = clients ? ZFB_ROLE_CLIENT | ZFB_ROLE_ADMIN : ZFB_ROLE_WORKER;
    if (o && (o->roles & need))
        return zap_reply(a, &f[1], "200", "OK", owner);
    clients ? a->n.denied_clients++ : a->n.denied_workers++;
    char z85[ZF_KEY_Z85 + 1];
    zf_key_z85(key, z85);
    const char *why = o && o->roles ? (clients ? "is a worker key, not a client key"
                                               : "is a client key, not a worker key")
                      : clients     ? "is not in --client-keys or --admin-keys"
                                    : "is not in --worker-keys";
    log_denial(a, clients ? "client" : "worker", address, z85, why);
    zap_reply(a, &f[1], "400", "key not allowed", 0);
}

void zfb_auth_serve(zfb_auth_t *a)
{
    for (;;) {
        zmq_msg_t f[ZAP_FRAMES_MAX];
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, a->zap, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&part);
                for (int i = 0; i < n; i++)
                    zmq_msg_close(&f[i]);
                return; /* nothing waits (a REP socket delivers whole messages) */
            }
            more = zmq_msg_more(&part);
            if (n < ZAP_FRAMES_MAX)
                f[n++] = part;
            else
                zmq_msg_close(&part);
        }
        zap_decide(a, f, n);
        for (int i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
    }
}

/* ------------------------------------------------------------------ messages */

uint32_t zfb_auth_caller(const zmq_msg_t *frame)
{
    const char *uid = zmq_msg_gets((zmq_msg_t *)frame, "User-Id");
    uint64_t id = 0;
    if (!uid || zf_parse_u64(uid, UINT32_MAX, &id) < 0)
        return 0;
    return (uint32_t)id;
}

bool zfb_auth_may(const zfb_auth_t *a, uint32_t owner, uint8_t roles)
{
    const zfb_owner_t *o = zfb_owners_get(a->owners, owner);
    return o && (o->roles & roles);
}

void zfb_auth_refused(zfb_auth_t *a, uint32_t owner)
{
    zfb_owner_t *o = zfb_owners_get(a->owners, owner);
    if (o)
        o->refused++;
    a->n.refused_messages++;
}

void zfb_auth_counts(const zfb_auth_t *a, zfb_auth_counts_t *out)
{
    *out = a->n;
}

/* ------------------------------------------------------------------ exposure */

static bool is_loopback_tcp(const char *ep)
{
    const char *host = ep + 6; /* after tcp:// */
    return !strncmp(host, "127.", 4) || !strncmp(host, "localhost:", 10) ||
           !strncmp(host, "[::1]:", 6) || !strncmp(host, "::1:", 4);
}

void zfb_auth_warn_open(const char *ep, const char *what)
{
    if (strncmp(ep, "tcp://", 6) != 0 || is_loopback_tcp(ep))
        return; /* ipc:// and inproc:// are guarded by the file system and the process */
    if (!strcmp(what, "client"))
        zf_log(ZF_LOG_WARN,
               "%s is bound without CURVE: anyone who can reach it can submit jobs and read, "
               "wait for, cancel, retry or purge anyone's jobs and results, and everything "
               "travels in plain text (use --curve-secret with --client-keys)",
               ep);
    else
        zf_log(ZF_LOG_WARN,
               "%s is bound without CURVE: anyone who can reach it can register as a worker, "
               "receive every job's payload and return forged results, in plain text (use "
               "--curve-secret with --worker-keys)",
               ep);
}
