/*  libzfleet — see zfleet.h. */
#include "zfleet.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "../common/zf_cert.h"
#include "../common/zf_handshake.h"
#include "../common/zf_util.h"
#include "../proto/zf_wire.h"

/* zfleet.h repeats the wire's numbers so that its users need no internal header: they must
   stay the same. */
#define ZF_SAME(pub, wire) _Static_assert((int)(pub) == (int)(wire), #pub " != " #wire)
ZF_SAME(ZF_BROKER_OK, ZF_OK);
ZF_SAME(ZF_BROKER_VERSION, ZF_EVERSION);
ZF_SAME(ZF_BROKER_MALFORMED, ZF_EMALFORMED);
ZF_SAME(ZF_BROKER_COMMAND, ZF_ECOMMAND);
ZF_SAME(ZF_BROKER_UNKNOWN_JOB, ZF_EUNKNOWN_JOB);
ZF_SAME(ZF_BROKER_QUEUE_FULL, ZF_EQUEUE_FULL);
ZF_SAME(ZF_BROKER_TOO_LARGE, ZF_ETOO_LARGE);
ZF_SAME(ZF_BROKER_BAD_ARGUMENT, ZF_EBADARG);
ZF_SAME(ZF_BROKER_STATE, ZF_ESTATE);
ZF_SAME(ZF_BROKER_SHUTDOWN, ZF_ESHUTDOWN);
ZF_SAME(ZF_BROKER_INTERNAL, ZF_EINTERNAL);
ZF_SAME(ZF_BROKER_JOURNAL, ZF_EJOURNAL);
ZF_SAME(ZF_BROKER_DENIED, ZF_EDENIED);
ZF_SAME(ZF_BROKER_DENIED + 1, ZF__ECOUNT); /* a new wire code needs its name in zfleet.h */
ZF_SAME(ZFLEET_DEVICE_ANY, ZF_DEV_ANY);
ZF_SAME(ZFLEET_DEVICE_CPU, ZF_DEV_CPU);
ZF_SAME(ZFLEET_DEVICE_GPU, ZF_DEV_GPU);
ZF_SAME(ZFLEET_FUNCTION_MAX, ZF_FN_MAX);
ZF_SAME(ZFLEET_SCHEDULED + 1, ZF_ST__COUNT);
ZF_SAME(ZFLEET_SCHEDULED, ZF_ST_SCHEDULED);
ZF_SAME(ZFLEET_QUEUED, ZF_ST_QUEUED);
ZF_SAME(ZFLEET_RUNNING, ZF_ST_RUNNING);
ZF_SAME(ZFLEET_SUCCEEDED, ZF_ST_SUCCEEDED);
ZF_SAME(ZFLEET_FAILED, ZF_ST_FAILED);
ZF_SAME(ZFLEET_TIMED_OUT, ZF_ST_TIMED_OUT);
ZF_SAME(ZFLEET_CANCELLED, ZF_ST_CANCELLED);
ZF_SAME(ZFLEET_EXPIRED, ZF_ST_EXPIRED);
ZF_SAME(ZFLEET_LOST, ZF_ST_LOST);
ZF_SAME(ZFLEET_OUTPUT_LOST, ZF_ST_OUTPUT_LOST);

/* An event and everything it points to, in one allocation. ev must stay first. */
typedef struct evnode {
    zf_event_t ev;
    zmq_msg_t out;
    struct evnode *next;
    char buf[];
} evnode_t;

#define PUSHED_MAX 64
/* Payloads up to this size reach the broker whatever its limit (see check_limit). */
#define ZF_CLIENT_PROBE_BYTES (1u << 20)

struct zf_client {
    void *ctx, *sock;
    char ep[256];
    int req_timeout_ms, hb_ms;
    uint64_t next_tag;
    evnode_t *qhead, **qtail;
    evnode_t *held; /* a RESULT that answered a LAZY_ACK submit, behind its ACCEPTED (recv_event) */
    int64_t last_recv_ms, last_ping_ms;
    char err[512];
    zf_client_errcode_t errcode;
    int brokercode;
    /* Jobs this connection submitted and will be pushed the result of (the latest
       PUSHED_MAX): waiting for one needs no WAIT, so submit-then-wait costs one round trip
       to the broker, not two. A ring: an id that fell out of it is merely asked for. */
    uint64_t pushed[PUSHED_MAX];
    unsigned pushed_next;
    /* The broker's payload limit as its last PONG on this connection said (0 = not told),
       and the tag of the PING whose PONG learn_limit waits for (0 = none). */
    uint64_t max_payload;
    uint64_t pong_tag;
    /* CURVE (zf_client_set_keys): this client's keypair and the broker's public key, and
       the watcher of the socket's handshakes that tells a refused key from a silent broker */
    bool curve;
    zf_cert_t key;
    uint8_t broker_key[ZF_KEY_BYTES];
    zf_handshake_t *hs;
};

static void pushed_add(zf_client_t *c, uint64_t id)
{
    c->pushed[c->pushed_next++ % PUSHED_MAX] = id;
}

/* True if id was in the ring; it leaves it (its result is being taken). */
static bool pushed_take(zf_client_t *c, uint64_t id)
{
    for (unsigned i = 0; i < PUSHED_MAX; i++)
        if (id && c->pushed[i] == id) {
            c->pushed[i] = 0;
            return true;
        }
    return false;
}

static int set_error(zf_client_t *c, zf_client_errcode_t code, int bcode, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int set_error(zf_client_t *c, zf_client_errcode_t code, int bcode, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    c->errcode = code;
    c->brokercode = bcode;
    return -1;
}

const char *zfleet_state_name(int state)
{
    return zf_state_name((uint32_t)state);
}

const char *zf_client_error(const zf_client_t *c)
{
    return c->err;
}

zf_client_errcode_t zf_client_errcode(const zf_client_t *c)
{
    return c->errcode;
}

int zf_client_brokercode(const zf_client_t *c)
{
    return c->brokercode;
}

/* ------------------------------------------------------------------ connection */

/* Makes the socket a CURVE client if keys are set, and watches its handshakes either way
   (before it connects): a client without keys at a CURVE broker, too, is told why it gets
   no answer. */
static int secure_socket(zf_client_t *c)
{
    if (c->curve && zf_cert_apply_client(c->sock, &c->key, c->broker_key) < 0)
        return -1;
    c->hs = zf_handshake_new(c->ctx, c->sock);
    return c->hs ? 0 : -1;
}

static int open_socket(zf_client_t *c)
{
    zf_handshake_destroy(&c->hs);
    if (c->sock)
        zmq_close(c->sock);
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->sock || secure_socket(c) < 0)
        return -1;
    /* exponential reconnect backoff (ZeroMQ doubles the interval up to the max), with
       jitter so that many clients of a restarted broker do not come back in lockstep */
    int zero = 0, ivl = 75 + (int)(zf_random64() % 50),
        ivl_max = 4000 + (int)(zf_random64() % 2000);
    zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(c->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(c->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    /* a new connection is nobody's waiter yet: what the old one was pushed is asked for */
    memset(c->pushed, 0, sizeof c->pushed);
    if (zmq_connect(c->sock, c->ep) < 0)
        return -1;
    c->last_recv_ms = c->last_ping_ms = zf_now_ms();
    return 0;
}

zf_client_t *zf_client_new(const char *endpoint)
{
    if (!endpoint)
        endpoint = getenv("ZFLEET_BROKER");
    if (!endpoint || !*endpoint)
        endpoint = ZFLEET_DEFAULT_BROKER;
    zf_client_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    snprintf(c->ep, sizeof c->ep, "%s", endpoint);
    c->req_timeout_ms = 5000;
    c->hb_ms = 1000;
    c->next_tag = zf_random64() >> 1;
    c->qtail = &c->qhead;
    c->ctx = zmq_ctx_new();
    if (!c->ctx || open_socket(c) < 0) {
        zf_client_destroy(&c);
        return NULL;
    }
    return c;
}

void zf_event_destroy(zf_event_t **self_p)
{
    evnode_t *n = (evnode_t *)*self_p;
    if (!n)
        return;
    *self_p = NULL;
    zmq_msg_close(&n->out);
    free(n);
}

void zf_client_destroy(zf_client_t **self_p)
{
    zf_client_t *c = *self_p;
    if (!c)
        return;
    *self_p = NULL;
    while (c->qhead) {
        evnode_t *n = c->qhead;
        c->qhead = n->next;
        zf_event_t *ev = &n->ev;
        zf_event_destroy(&ev);
    }
    if (c->held) {
        zf_event_t *ev = &c->held->ev;
        zf_event_destroy(&ev);
    }
    zf_handshake_destroy(&c->hs);
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    memset(&c->key, 0, sizeof c->key);
    free(c);
}

int zf_client_set_keys(zf_client_t *c, const char *key_file, const char *broker_key_file)
{
    char err[512];
    zf_cert_t mine;
    uint8_t broker[ZF_KEY_BYTES];
    bool on;
    if (zf_cert_load_pair(key_file, broker_key_file, &on, &mine, broker, err, sizeof err) < 0)
        return set_error(c, ZF_CE_USAGE, 0, "%s", err);
    c->curve = on;
    if (on) {
        c->key = mine;
        memcpy(c->broker_key, broker, ZF_KEY_BYTES);
        memset(&mine, 0, sizeof mine);
    }
    if (open_socket(c) < 0)
        return set_error(c, ZF_CE_NOMEM, 0, "cannot open a socket: %s", zmq_strerror(errno));
    return 0;
}

void zf_client_set_request_timeout(zf_client_t *c, int ms)
{
    c->req_timeout_ms = ms;
}

void zf_client_set_heartbeat(zf_client_t *c, int ms)
{
    c->hb_ms = ms > 0 ? ms : 1000;
}

int zf_client_fd(zf_client_t *c)
{
    int fd = -1;
    size_t len = sizeof fd;
    zmq_getsockopt(c->sock, ZMQ_FD, &fd, &len);
    return fd;
}

/* ------------------------------------------------------------------ events */

static const char *put_str(char **cursor, zf_str_t s)
{
    char *p = *cursor;
    zf_str_copy(p, s.len + 1, s);
    *cursor += s.len + 1;
    return p;
}

static evnode_t *make_event(const zf_msg_t *m, zmq_msg_t *payload)
{
    size_t extra = m->text.len + m->worker.len + m->devname.len + m->fn.len + m->tags.len + 5;
    evnode_t *n = calloc(1, sizeof *n + extra);
    if (!n)
        return NULL;
    zf_event_t *e = &n->ev;
    switch (m->cmd) {
    case ZF_CMD_ACCEPTED: e->type = ZF_EV_ACCEPTED; break;
    case ZF_CMD_REJECTED: e->type = ZF_EV_REJECTED; break;
    case ZF_CMD_RESULT: e->type = ZF_EV_RESULT; break;
    case ZF_CMD_PROGRESS: e->type = ZF_EV_PROGRESS; break;
    case ZF_CMD_STATUS: e->type = ZF_EV_STATUS; break;
    case ZF_CMD_REPLY: e->type = ZF_EV_REPLY; break;
    default: e->type = ZF_EV_ERROR; break;
    }
    e->id = m->id;
    e->tag = m->tag;
    e->status = (int)m->status;
    e->code = (int)m->code;
    e->attempts = m->attempt;
    e->duration_us = m->duration_us;
    e->progress = m->progress;
    char *cur = n->buf;
    e->text = put_str(&cur, m->text);
    e->worker = put_str(&cur, m->worker);
    e->device = put_str(&cur, m->devname);
    e->function = put_str(&cur, m->fn);
    e->tags = put_str(&cur, m->tags);
    e->step = m->step;
    e->steps = m->steps;
    zmq_msg_init(&n->out);
    if (payload)
        zmq_msg_move(&n->out, payload);
    e->output = zmq_msg_data(&n->out);
    e->output_len = zmq_msg_size(&n->out);
    e->priv_ = n;
    return n;
}

/* A PONG is no event: it answers a liveness ping or learn_limit, and says the limit. */
static void on_pong(zf_client_t *c, const zf_msg_t *m)
{
    if (zf_msg_has(m, ZF_F_MAXPAYLOAD))
        c->max_payload = m->max_payload;
    if (m->tag && m->tag == c->pong_tag)
        c->pong_tag = 0;
}

/* Waits up to timeout_ms (-1 forever) for a message on the socket. Returns 0 with f, or -1:
   nothing came, or a handshake failed (a refused key: the waiter sees it as denied instead
   of waiting on). Handshakes that succeed only wake the wait. */
static int recv_frames(zf_client_t *c, zf_frames_t *f, int timeout_ms)
{
    /* try first: under load a message is usually waiting, and a poll costs a syscall */
    if (zf_wire_recv(c->sock, f, ZMQ_DONTWAIT) == 0)
        return 0;
    int64_t until = zf_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        int left = timeout_ms < 0 ? -1 : (int)(until - zf_now_ms());
        if (timeout_ms == 0 || (timeout_ms > 0 && left <= 0))
            return -1;
        zmq_pollitem_t it[2] = {{c->sock, 0, ZMQ_POLLIN, 0},
                                {c->hs ? zf_handshake_socket(c->hs) : NULL, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, c->hs ? 2 : 1, left) <= 0)
            return -1;
        if (c->hs && (it[1].revents & ZMQ_POLLIN) && zf_handshake_failed(c->hs, NULL, 0))
            return -1;
        if (zf_wire_recv(c->sock, f, ZMQ_DONTWAIT) == 0)
            return 0;
    }
}

/* A RESULT that says it answers its SUBMIT (LAZY_ACK: the broker sent no ACCEPTED, the job
   ended first): the ACCEPTED event the caller of zf_client_submit_async is owed, made
   here, so that every caller sees ACCEPTED then RESULT whichever way the broker sent
   them. NULL without memory (the RESULT alone then, as the protocol allows, §6.2). */
static evnode_t *accepted_for(const zf_event_t *r)
{
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_ACCEPTED);
    zf_msg_set_u64(&m, ZF_F_TAG, r->tag);
    zf_msg_set_u64(&m, ZF_F_ID, r->id);
    return make_event(&m, NULL);
}

/* Receives one event from the socket, waiting up to timeout_ms. NULL if none. */
static evnode_t *recv_event(zf_client_t *c, int timeout_ms)
{
    if (c->held) { /* the RESULT behind an ACCEPTED made from it */
        evnode_t *n = c->held;
        c->held = NULL;
        return n;
    }
    for (;;) {
        zf_frames_t f;
        if (recv_frames(c, &f, timeout_ms) < 0)
            return NULL;
        c->last_recv_ms = zf_now_ms();
        zf_msg_t m;
        int err;
        evnode_t *n = NULL;
        if (f.n >= 1 && zf_msg_decode(&m, zmq_msg_data(&f.part[0]), zmq_msg_size(&f.part[0]), &err,
                                      NULL) == 0) {
            if (m.cmd != ZF_CMD_PONG)
                n = make_event(&m, f.n >= 2 ? &f.part[1] : NULL);
            else
                on_pong(c, &m);
        }
        zf_frames_close(&f);
        if (n && n->ev.type == ZF_EV_RESULT)
            pushed_take(c, n->ev.id); /* it came: a later wait for it must ask */
        evnode_t *a;
        if (n && n->ev.type == ZF_EV_RESULT && (m.flags & ZF_FLAG_LAZY_ACK) &&
            (a = accepted_for(&n->ev))) {
            c->held = n;
            return a;
        }
        if (n)
            return n;
        timeout_ms = 0; /* a PONG or junk: look again without waiting */
    }
}

static void enqueue(zf_client_t *c, evnode_t *n)
{
    n->next = NULL;
    *c->qtail = n;
    c->qtail = &n->next;
}

typedef bool (*match_fn)(const zf_event_t *e, const void *arg);

static evnode_t *take_queued(zf_client_t *c, match_fn match, const void *arg)
{
    for (evnode_t **pp = &c->qhead; *pp; pp = &(*pp)->next) {
        evnode_t *n = *pp;
        if (!match(&n->ev, arg))
            continue;
        *pp = n->next;
        if (!*pp)
            c->qtail = pp;
        return n;
    }
    return NULL;
}

static bool denied(zf_client_t *c);

/* Sends, waiting while the pipe is full, but not for ever on a connection the broker
   refused: libzmq drops the pipe of a connection whose handshake failed and does not
   reconnect, so a blocking send would wait for a peer that never comes. */
static int send_msg(zf_client_t *c, const zf_msg_t *m, zmq_msg_t *payload)
{
    for (;;) {
        if (denied(c))
            return -1;
        if (zf_wire_send(c->sock, NULL, m, payload) == 0)
            return 0;
        if (errno != EAGAIN)
            return set_error(c, ZF_CE_UNREACHABLE, 0, "cannot send to %s: %s", c->ep,
                             zmq_strerror(errno));
        zmq_pollitem_t it[2] = {{c->sock, 0, ZMQ_POLLOUT, 0},
                                {c->hs ? zf_handshake_socket(c->hs) : NULL, 0, ZMQ_POLLIN, 0}};
        zmq_poll(it, c->hs ? 2 : 1, -1);
    }
}

/* True (with the error set) when the broker refused this client's key at the handshake:
   nothing would ever come, so a waiter stops at once. libzmq does not connect again after
   a refused handshake, so the socket is replaced: the next call tries afresh (the key may
   have been listed since), and nothing queued on the refused one is sent later. */
static bool denied(zf_client_t *c)
{
    char why[400];
    if (!c->hs || !zf_handshake_failed(c->hs, why, sizeof why))
        return false;
    set_error(c, ZF_CE_DENIED, ZF_EDENIED, "no service from the broker at %s: %s", c->ep, why);
    open_socket(c); /* (a failure leaves no socket: the next call reports it) */
    return true;
}

/* What a waiter does when the broker has been silent for three heartbeats: reconnect and
   re-send whatever it is waiting on. Returns -1 to give up. */
typedef int (*resend_fn)(zf_client_t *c, void *arg);

/* Waits for an event that matches, up to timeout_ms (-1 forever). Keeps other events. */
static evnode_t *await(zf_client_t *c, match_fn match, const void *arg, int timeout_ms,
                       resend_fn resend, void *rarg)
{
    int64_t start = zf_now_ms();
    for (;;) {
        evnode_t *n = take_queued(c, match, arg);
        if (n)
            return n;
        int64_t now = zf_now_ms();
        int64_t left = timeout_ms < 0 ? c->hb_ms : start + timeout_ms - now;
        if (left <= 0) {
            set_error(c, ZF_CE_TIMEOUT, 0, "timed out after %d ms", timeout_ms);
            return NULL;
        }
        n = recv_event(c, (int)(left < c->hb_ms ? left : c->hb_ms));
        if (n) {
            if (match(&n->ev, arg))
                return n;
            enqueue(c, n);
            continue;
        }
        if (denied(c))
            return NULL;
        now = zf_now_ms();
        /* silence counts from when this wait began, not from an idle spell before it */
        if (c->last_recv_ms < start)
            c->last_recv_ms = start;
        if (now - c->last_recv_ms >= 3 * (int64_t)c->hb_ms) {
            if (!resend || open_socket(c) < 0 || resend(c, rarg) < 0) {
                set_error(c, ZF_CE_UNREACHABLE, 0, "broker at %s is not answering", c->ep);
                return NULL;
            }
        } else if (now - c->last_recv_ms >= c->hb_ms && now - c->last_ping_ms >= c->hb_ms) {
            /* A waiter probes with its own request, not a PING: a broker that restarted
               within three heartbeats answers PINGs but no longer knows we wait, so only
               the re-sent request (idempotent) re-attaches us. */
            if (resend) {
                resend(c, rarg);
            } else {
                zf_msg_t p;
                zf_msg_init(&p, ZF_CMD_PING);
                zf_wire_send(c->sock, NULL, &p, NULL);
            }
            c->last_ping_ms = now;
        }
    }
}

static bool match_tag(const zf_event_t *e, const void *arg)
{
    return e->tag == *(const uint64_t *)arg &&
           (e->type == ZF_EV_ACCEPTED || e->type == ZF_EV_REJECTED || e->type == ZF_EV_ERROR ||
            e->type == ZF_EV_REPLY || e->type == ZF_EV_STATUS || e->type == ZF_EV_RESULT);
}

/* Sends a request and waits for the reply with its tag. */
static evnode_t *request(zf_client_t *c, zf_msg_t *m, zmq_msg_t *payload)
{
    uint64_t tag = ++c->next_tag;
    zf_msg_set_u64(m, ZF_F_TAG, tag);
    if (send_msg(c, m, payload) < 0)
        return NULL;
    evnode_t *n = await(c, match_tag, &tag, c->req_timeout_ms, NULL, NULL);
    if (!n && c->errcode == ZF_CE_TIMEOUT && !denied(c))
        set_error(c, ZF_CE_UNREACHABLE, 0, "no answer from the broker at %s within %d ms", c->ep,
                  c->req_timeout_ms);
    return n;
}

/* Turns an error reply into the client's error; returns true if it was one. */
static bool broker_refused(zf_client_t *c, evnode_t *n)
{
    if (n->ev.type != ZF_EV_REJECTED && n->ev.type != ZF_EV_ERROR &&
        !(n->ev.type == ZF_EV_REPLY && n->ev.code != 0))
        return false;
    set_error(c, n->ev.code == ZF_EDENIED ? ZF_CE_DENIED : ZF_CE_REJECTED, n->ev.code, "%s",
              n->ev.text[0] ? n->ev.text : zf_error_name((uint32_t)n->ev.code));
    zf_event_t *e = &n->ev;
    zf_event_destroy(&e);
    return true;
}

/* ------------------------------------------------------------------ API */

static int build_submit(zf_client_t *c, zf_msg_t *m, const char *fn, const void *data, size_t len,
                        const zf_submit_opts_t *o, uint32_t lazy, zmq_msg_t *payload)
{
    if (!fn || !*fn || strlen(fn) > ZF_FN_MAX)
        return set_error(c, ZF_CE_USAGE, 0, "function name must be 1 to %d bytes", ZF_FN_MAX);
    zf_msg_init(m, ZF_CMD_SUBMIT);
    zf_msg_set_str(m, ZF_F_FN, fn);
    if (o) {
        if (o->priority)
            zf_msg_set_i32(m, ZF_F_PRIORITY, o->priority);
        if (o->timeout_ms)
            zf_msg_set_u64(m, ZF_F_TIMEOUT, o->timeout_ms);
        if (o->deadline_ms)
            zf_msg_set_u64(m, ZF_F_DEADLINE, o->deadline_ms);
        if (o->max_attempts)
            zf_msg_set_u64(m, ZF_F_MAX_ATTEMPTS, o->max_attempts);
        if (o->device)
            zf_msg_set_u64(m, ZF_F_DEVICE, (uint64_t)o->device);
        if (o->retries)
            zf_msg_set_u64(m, ZF_F_RETRIES, o->retries);
        if (o->backoff_ms)
            zf_msg_set_u64(m, ZF_F_BACKOFF, o->backoff_ms);
        if (o->delay_ms)
            zf_msg_set_u64(m, ZF_F_DELAY, o->delay_ms);
        if (o->not_before)
            zf_msg_set_u64(m, ZF_F_NOT_BEFORE, o->not_before);
        if (o->tags && *o->tags) {
            const char *bad = zf_tags_check(o->tags, strlen(o->tags));
            if (bad)
                return set_error(c, ZF_CE_USAGE, 0, "tags: %s", bad);
            zf_msg_set_str(m, ZF_F_TAGS, o->tags);
        }
        if (o->then && *o->then) {
            if (strlen(o->then) > ZF_THEN_MAX)
                return set_error(c, ZF_CE_USAGE, 0, "then: longer than %d bytes", ZF_THEN_MAX);
            zf_msg_set_str(m, ZF_F_THEN, o->then);
        }
    }
    /* the flags are sent as asked: the broker rejects the pairs it refuses, with why */
    uint32_t flags = !o ? lazy
                        : (o->no_push ? ZF_FLAG_NO_PUSH : 0) | (o->forget ? ZF_FLAG_FORGET : 0) |
                              (o->no_ack ? ZF_FLAG_NO_ACK : lazy);
    if (flags)
        zf_msg_set_u64(m, ZF_F_FLAGS, flags);
    if (zmq_msg_init_size(payload, len) < 0)
        return set_error(c, ZF_CE_NOMEM, 0, "out of memory for a %zu-byte payload", len);
    if (len)
        memcpy(zmq_msg_data(payload), data, len);
    return 0;
}

int zf_client_submit_async(zf_client_t *c, const char *fn, const void *data, size_t len,
                           const zf_submit_opts_t *opts, uint64_t *tag)
{
    zf_msg_t m;
    zmq_msg_t payload;
    /* LAZY_ACK: nobody waits on the ACCEPTED here, so it may ride with a quick result */
    if (build_submit(c, &m, fn, data, len, opts, ZF_FLAG_LAZY_ACK, &payload) < 0)
        return -1;
    uint64_t t = ++c->next_tag;
    zf_msg_set_u64(&m, ZF_F_TAG, t);
    if (send_msg(c, &m, &payload) < 0) {
        zmq_msg_close(&payload);
        return -1;
    }
    if (tag)
        *tag = t;
    return 0;
}

/* Asks the broker for its payload limit (PING, answered by PONG { max_payload }) and
   waits for the answer; events that arrive meanwhile are kept. Returns 0 (c->max_payload
   is then the limit, or 0 for a broker that does not say), or -1 (unreachable). */
static int learn_limit(zf_client_t *c)
{
    zf_msg_t p;
    zf_msg_init(&p, ZF_CMD_PING);
    c->max_payload = 0; /* this answer's, not an earlier broker's */
    c->pong_tag = ++c->next_tag;
    zf_msg_set_u64(&p, ZF_F_TAG, c->pong_tag);
    if (send_msg(c, &p, NULL) < 0)
        return -1;
    int64_t until = zf_now_ms() + c->req_timeout_ms;
    while (c->pong_tag) {
        int64_t left = until - zf_now_ms();
        evnode_t *n = left > 0 ? recv_event(c, (int)left) : NULL;
        if (n)
            enqueue(c, n);
        else if (denied(c))
            return -1;
        else if (c->pong_tag && zf_now_ms() >= until)
            break;
    }
    if (c->pong_tag) {
        c->pong_tag = 0; /* a late PONG still updates the limit, and nothing else */
        return set_error(c, ZF_CE_UNREACHABLE, 0, "no answer from the broker at %s within %d ms",
                         c->ep, c->req_timeout_ms);
    }
    return 0;
}

/* Refuses, before sending, a payload the broker would not take. Up to ZF_CLIENT_PROBE_BYTES
   the broker always answers (ZMQ_MAXMSGSIZE is 2 x its limit + 1 MiB), with ETOO_LARGE
   if it is too large, so only a larger payload costs a PING first. The limit is asked
   for each time, not cached: a broker restarted with another limit is never misjudged,
   and one round trip is little beside moving a megabyte. Returns 0, or -1. */
static int check_limit(zf_client_t *c, size_t len)
{
    if (len <= ZF_CLIENT_PROBE_BYTES)
        return 0;
    if (learn_limit(c) < 0)
        return -1;
    if (c->max_payload && len > c->max_payload)
        return set_error(c, ZF_CE_REJECTED, ZF_ETOO_LARGE,
                         "payload too large: %zu bytes, the broker's limit is %llu", len,
                         (unsigned long long)c->max_payload);
    return 0;
}

int zf_client_submit(zf_client_t *c, const char *fn, const void *data, size_t len,
                     const zf_submit_opts_t *opts, uint64_t *id)
{
    zf_msg_t m;
    zmq_msg_t payload;
    if (opts && opts->no_ack)
        return set_error(c, ZF_CE_USAGE, 0,
                         "no_ack: zf_client_submit waits for ACCEPTED; use zf_client_submit_async");
    if (check_limit(c, len) < 0)
        return -1;
    if (build_submit(c, &m, fn, data, len, opts, 0, &payload) < 0)
        return -1;
    evnode_t *n = request(c, &m, &payload);
    if (!n)
        return -1;
    if (broker_refused(c, n))
        return -1;
    if (!(opts && opts->no_push))
        pushed_add(c, n->ev.id);
    if (id)
        *id = n->ev.id;
    zf_event_t *e = &n->ev;
    zf_event_destroy(&e);
    return 0;
}

typedef struct {
    uint64_t id;
    uint64_t tag; /* of the last WAIT sent */
} waitarg_t;

static bool match_result(const zf_event_t *e, const void *arg)
{
    const waitarg_t *w = arg;
    if (e->type == ZF_EV_RESULT && e->id == w->id)
        return true;
    /* the broker's answer to our WAIT: unknown job, or the job's status (absorbed below);
       tag 0 (no WAIT sent yet, or an error about an undecodable message) matches nothing */
    return w->tag != 0 && e->tag == w->tag && (e->type == ZF_EV_ERROR || e->type == ZF_EV_STATUS);
}

static int send_wait(zf_client_t *c, void *arg)
{
    waitarg_t *w = arg;
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_WAIT);
    zf_msg_set_u64(&m, ZF_F_ID, w->id);
    w->tag = ++c->next_tag;
    zf_msg_set_u64(&m, ZF_F_TAG, w->tag);
    return send_msg(c, &m, NULL);
}

zf_event_t *zf_client_wait(zf_client_t *c, uint64_t id, int timeout_ms)
{
    waitarg_t w = {id, 0};
    /* A WAIT covers every case (a job submitted elsewhere, a broker that restarted) at the
       cost of a message each way; a job this connection submitted needs none. */
    bool pushed = pushed_take(c, id);
    evnode_t *n = take_queued(c, match_result, &w);
    if (!n && c->held && match_result(&c->held->ev, &w)) { /* behind an ACCEPTED made from it */
        n = c->held;
        c->held = NULL;
    }
    if (n)
        return &n->ev;
    /* A job submitted here is pushed its result unasked. If the push does not come within
       a heartbeat (lost, or the broker restarted and no longer knows us as its waiter), we
       ask after all, whatever else arrives meanwhile: other traffic must not starve it. */
    bool asked = !pushed;
    if (asked && send_wait(c, &w) < 0)
        return NULL;
    int64_t deadline = timeout_ms < 0 ? -1 : zf_now_ms() + timeout_ms;
    for (;;) {
        int left = deadline < 0 ? -1 : (int)(deadline - zf_now_ms());
        if (deadline >= 0 && left <= 0) {
            set_error(c, ZF_CE_TIMEOUT, 0, "job %llu: no result within %d ms",
                      (unsigned long long)id, timeout_ms);
            return NULL;
        }
        int slice = !asked && (left < 0 || left > c->hb_ms) ? c->hb_ms : left;
        n = await(c, match_result, &w, slice, send_wait, &w);
        if (!n && !asked && c->errcode == ZF_CE_TIMEOUT) {
            if (send_wait(c, &w) < 0)
                return NULL;
            asked = true;
            continue;
        }
        if (!n && c->errcode == ZF_CE_TIMEOUT) /* say which job and the whole wait */
            set_error(c, ZF_CE_TIMEOUT, 0, "job %llu: no result within %d ms",
                      (unsigned long long)id, timeout_ms);
        if (!n)
            return NULL;
        if (n->ev.type == ZF_EV_RESULT)
            return &n->ev;
        if (broker_refused(c, n))
            return NULL;
        zf_event_t *e = &n->ev; /* a STATUS: the broker knows the job; keep waiting */
        zf_event_destroy(&e);
    }
}

zf_event_t *zf_client_get(zf_client_t *c, uint64_t id)
{
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_GET);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    evnode_t *n = request(c, &m, NULL);
    if (!n || broker_refused(c, n))
        return NULL;
    return &n->ev;
}

static int simple_request(zf_client_t *c, uint8_t cmd, uint64_t id)
{
    zf_msg_t m;
    zf_msg_init(&m, cmd);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    evnode_t *n = request(c, &m, NULL);
    if (!n || broker_refused(c, n))
        return -1;
    zf_event_t *e = &n->ev;
    zf_event_destroy(&e);
    return 0;
}

int zf_client_cancel(zf_client_t *c, uint64_t id)
{
    return simple_request(c, ZF_CMD_CANCEL, id);
}

int zf_client_retry(zf_client_t *c, uint64_t id)
{
    return simple_request(c, ZF_CMD_RETRY, id);
}

static zf_event_t *doc_request(zf_client_t *c, uint8_t cmd, uint32_t flags)
{
    zf_msg_t m;
    zf_msg_init(&m, cmd);
    if (flags)
        zf_msg_set_u64(&m, ZF_F_FLAGS, flags);
    evnode_t *n = request(c, &m, NULL);
    if (!n || broker_refused(c, n))
        return NULL;
    return &n->ev;
}

zf_event_t *zf_client_stats(zf_client_t *c)
{
    return doc_request(c, ZF_CMD_STATS, 0);
}

zf_event_t *zf_client_dead(zf_client_t *c, bool purge)
{
    return doc_request(c, ZF_CMD_DEAD, purge ? ZF_FLAG_PURGE : 0);
}

zf_event_t *zf_client_jobs(zf_client_t *c, const zf_jobs_query_t *q)
{
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_JOBS);
    if (q && q->after)
        zf_msg_set_u64(&m, ZF_F_ID, q->after);
    if (q && q->limit)
        zf_msg_set_u64(&m, ZF_F_LIMIT, q->limit);
    if (q && q->state >= 0)
        zf_msg_set_u64(&m, ZF_F_STATUS, (uint64_t)q->state);
    if (q && q->function && *q->function) {
        if (strlen(q->function) > ZF_FN_MAX)
            return set_error(c, ZF_CE_USAGE, 0, "function name must be 1 to %d bytes", ZF_FN_MAX),
                   NULL;
        zf_msg_set_str(&m, ZF_F_FN, q->function);
    }
    if (q && q->tag && *q->tag) {
        if (strchr(q->tag, ',') || zf_tags_check(q->tag, strlen(q->tag)))
            return set_error(c, ZF_CE_USAGE, 0, "the tag filter must be one key=value"), NULL;
        zf_msg_set_str(&m, ZF_F_TAGS, q->tag);
    }
    evnode_t *n = request(c, &m, NULL);
    if (!n || broker_refused(c, n))
        return NULL;
    return &n->ev;
}

static bool match_any(const zf_event_t *e, const void *arg)
{
    (void)e, (void)arg;
    return true;
}

zf_event_t *zf_client_next(zf_client_t *c, int timeout_ms)
{
    evnode_t *n = take_queued(c, match_any, NULL);
    if (!n)
        n = recv_event(c, timeout_ms);
    if (!n) {
        set_error(c, ZF_CE_TIMEOUT, 0, "no event within %d ms", timeout_ms);
        return NULL;
    }
    return &n->ev;
}
