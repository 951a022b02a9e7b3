/*  zf_worker — see zf_worker.h. The I/O thread: broker socket, heartbeats, the local queue
    of prefetched jobs, run timeouts, cancellation, drain and reconnection.

    Invariants:
    - prefetched jobs wait in the runner's queue, where a RECALL or WCANCEL can still take
      them back; the runner pulls the next one itself when it finishes;
    - every lease the broker gave us is answered exactly once: DONE (ran or cancelled),
      RECALLED (never started), or not at all when we re-register (the broker has already
      dropped our old leases then);
    - the broker socket is used by two threads, never at once: this one, which holds
      sock_mu at all times but while it waits in poll, and the runner, which sends its
      results and progress on it under sock_mu (runner_send) when it can take the lock at
      once, so that a finished job wakes no other thread of this process. When it cannot
      (this thread is awake and busy anyway), the runner's messages come over the PAIR and
      this thread forwards them; `relayed` counts those not forwarded yet, and while it is
      above zero the runner does not send directly, so its messages keep their order. This
      thread waits on the socket's ZMQ_FD rather than on the socket, so that the wait
      itself touches no socket state;
    - whoever holds sock_mu may read the broker socket and handle what it brings (on_broker
      and all it touches is under sock_mu). While its queue is empty the runner watches the
      socket itself (runner_idle) and this thread's wait leaves it out, so a job reaching an
      idle worker wakes only the thread that runs it: the I/O thread would otherwise wake,
      read it, and wake the runner, one hand-off more per job. When the runner leaves idle
      with a job it hands the watch back (runner_busy): a timer wakes this thread within
      HANDBACK_US, or at once for a batch (which waits for mates); a job shorter than that
      costs this thread no wake-up, and a message that arrives meanwhile (a cancel, a
      recall) waits for it at most that long. Whatever this thread's own use of the socket
      consumes of ZMQ_FD's notice, it sees again in dealer_readable before it waits, and
      then reads the socket itself;
    - a DONE the runner holds behind its next job (runner_hold) is sent before anything else
      leaves on the socket from either thread: by the runner's next send, by this thread on
      any wake-up (the hold timer's at the latest), before a READY, a BYE or a new socket.
      It is in the outbox from the moment it is held, as if sent then.
*/
#include "zf_worker.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <zmq.h>

#include "../common/zf_cert.h"
#include "../common/zf_handshake.h"
#include "../common/zf_util.h"
#include "../proto/zf_wire.h"
#include "zf_device.h"
#include "zf_outbox.h"
#include "zf_prefetch.h"
#include "zf_registry.h"
#include "zf_runner.h"

#define RUNNER_EP "inproc://zfleet-runner"
#define HANDBACK_US 1000 /* a job the runner read itself: how long the socket may go unwatched */
#define BACKOFF_MAX_MS 30000

typedef struct {
    const zf_worker_config_t *cfg;
    zf_device_binding_t bind;
    zf_registry_t *mods;
    void *ctx_in, *ctx_net, *pair, *dealer;
    zf_runner_t *runner;
    pthread_mutex_t sock_mu;  /* guards dealer, dealer_fd and last_send_ms */
    int dealer_fd;            /* the dealer's ZMQ_FD */
    int wake_fd;              /* eventfd: the runner's send left a message to read */
    _Atomic uint32_t relayed; /* runner messages sent over the PAIR, not forwarded yet */
    /* Who watches the broker socket (see the invariants): while runner_watch is set, the
       idle runner does, and this thread's wait leaves the socket out. hand_fd (a timerfd) is
       armed by the runner when it leaves idle with a job, so that this thread takes the
       watch back within HANDBACK_US; hand_armed is the runner's own note of that. */
    _Atomic bool runner_watch;
    int hand_fd;
    bool hand_armed;
    int64_t io_wake_ms;  /* under sock_mu: when this thread's current wait ends at the latest */
    bool runner_reading; /* under sock_mu: the runner is the one reading the socket now */
    uint64_t jobs_by_runner, jobs_by_io, handbacks; /* for the debug log, under sock_mu */
    uint64_t sent_direct, sent_relayed;             /* runner messages by path, for the debug log */
    uint64_t sent_held;                             /* DONEs held behind the next job */
    /* The DONE the runner left to send (runner_hold), under sock_mu; hlen 0: none. hold_fd
       (a timerfd) fires when it is due. */
    struct {
        uint8_t hdr[ZF_HEADER_MAX];
        size_t hlen;
        zmq_msg_t out;
    } held;
    int hold_fd;
    /* A timerfd the runner arms as a job with a run timeout starts (runner_started): it
       fires at the job's deadline, so that this thread, asleep meanwhile, enforces it. A
       finished job's timer may still fire: run_timers then finds nothing due. */
    int run_fd;
    int sigfd;
    struct { /* a cancel sent to the running handler */
        uint64_t id;
        uint32_t attempt;
        int64_t deadline_ms; /* grace end; 0 = none pending */
    } cancel;
    int64_t last_send_ms, last_recv_ms, broker_deadline_ms;
    int64_t ready_sent_ms; /* READY not yet answered since then; 0 = answered */
    uint32_t hb_ms;        /* heartbeat send interval: ours, or the broker's if shorter */
    uint32_t backoff_ms;
    bool silence_logged; /* the broker has been silent past its liveness window */
    bool denied_logged;  /* told the broker no longer allows our key (EDENIED), until it
                            answers otherwise: it answers every heartbeat so */
    bool draining;
    int64_t drain_deadline_ms;
    char name[ZF_NAME_MAX + 1];
    char supervisor[ZF_SUPERVISOR_MAX + 1]; /* from ZF_SUPERVISOR_ENV, or empty */
    bool curve;                             /* --key and --broker-key given */
    zf_cert_t key;
    uint8_t broker_key[ZF_KEY_BYTES];
    zf_handshake_t *hs; /* the dealer's handshakes: a refused key is logged as such */
    /* Re-attach (PROTOCOL.md §7.11): this process's session, the results sent and kept
       until the broker surely has them, and whether the last READY claimed leases that
       its answer has not yet judged. */
    uint64_t session;
    zf_outbox_t *outbox;
    bool claims_pending;
    /* Adaptive prefetch (no --credits; zf_prefetch.h), under sock_mu: what it measured, and
       whether this connection's broker takes CREDITS (ZF_FLAG_CREDITS in its READY answer). */
    zf_prefetch_t pf;
    bool broker_credits;
} wk_t;

void zf_worker_default_name(char *out, size_t len, int pid, const char *device_label)
{
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(out, len, "%.30s:%d:%.16s", host, pid, device_label);
}

void zf_worker_config_defaults(zf_worker_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->broker_ep = "tcp://127.0.0.1:5556";
    cfg->device = "cpu";
    cfg->credits = 0; /* adaptive */
    cfg->heartbeat_ms = 1000;
    cfg->liveness = 3;
    cfg->cancel_grace_ms = 2000;
    cfg->hold_bytes = 64u << 20;
}

/* ------------------------------------------------------------------ broker socket */

static void to_broker(wk_t *w, const zf_msg_t *m, zmq_msg_t *payload)
{
    if (zf_wire_send(w->dealer, NULL, m, payload) < 0) {
        if (payload)
            zmq_msg_close(payload);
        return; /* heartbeats will tell whether the broker is still there */
    }
    w->last_send_ms = zf_now_ms();
}

/* Wakes this I/O thread from another (its wait watches wake_fd). */
static void wake_io(wk_t *w)
{
    uint64_t one = 1;
    if (write(w->wake_fd, &one, sizeof one) < 0)
        zf_log(ZF_LOG_WARN, "cannot wake the I/O thread: %s", strerror(errno));
}

/* Sends the DONE the runner holds, if any (under sock_mu, either thread); true if there was
   one. It is in the outbox already: when the socket refuses it, it goes again with the next
   READY, as a relayed result would. */
static bool send_held(wk_t *w)
{
    if (!w->held.hlen)
        return false;
    timerfd_settime(w->hold_fd, 0, &(struct itimerspec){{0, 0}, {0, 0}}, NULL);
    size_t hlen = w->held.hlen;
    w->held.hlen = 0;
    if (w->dealer && zmq_send(w->dealer, w->held.hdr, hlen, ZMQ_DONTWAIT | ZMQ_SNDMORE) >= 0 &&
        zmq_msg_send(&w->held.out, w->dealer, ZMQ_DONTWAIT) >= 0) {
        w->last_send_ms = zf_now_ms();
        return true;
    }
    zmq_msg_close(&w->held.out);
    return true;
}

static void send_simple(wk_t *w, uint8_t cmd, uint64_t id, uint32_t attempt, uint32_t flags)
{
    zf_msg_t m;
    zf_msg_init(&m, cmd);
    if (id) {
        zf_msg_set_u64(&m, ZF_F_ID, id);
        zf_msg_set_u64(&m, ZF_F_ATTEMPT, attempt);
    }
    if (flags)
        zf_msg_set_u64(&m, ZF_F_FLAGS, flags);
    to_broker(w, &m, NULL);
}

/* The handler API's device type (zf_module.h) and the wire's device kind (zf_proto.h) are two
   enums of two contracts; they are mapped here, never cast into each other. */
static zf_device_kind_t wire_kind(zf_device_type_t type)
{
    return type == ZF_DEVICE_GPU ? ZF_DEV_GPU : ZF_DEV_CPU;
}

static void add_claim(void *arg, uint64_t id, uint32_t attempt)
{
    zf_msg_add_claim(arg, id, attempt); /* (past ZF_CLAIMS_MAX: not claimed, runs again) */
}

/* The leases we hold, the one running first, as the broker keeps them (PROTOCOL.md §7.11):
   the running job, the prefetched ones, then the results kept in the outbox. */
static void add_claims(wk_t *w, zf_msg_t *m)
{
    zf_running_t run = zf_runner_running(w->runner);
    if (run.active)
        add_claim(m, run.id, run.attempt);
    zf_runner_each(w->runner, add_claim, m);
    for (uint32_t i = 0; i < zf_outbox_count(w->outbox); i++) {
        uint64_t id;
        uint32_t attempt;
        zf_outbox_lease(w->outbox, i, &id, &attempt);
        add_claim(m, id, attempt);
    }
}

/* The credits a READY asks for: --credits, raised to the largest max_batch of the batched
   functions served (issue 17), so that a batch can fill: the broker never has more of our
   jobs out than the credits, and a batch is formed only from jobs the worker holds. */
/* The credits to ask for: --credits, else the adaptive number; never fewer than the largest
   batch a function here forms, or batches could not fill. */
static uint32_t with_batch(const wk_t *w, uint32_t credits)
{
    uint32_t batch = zf_registry_max_batch(w->mods);
    return credits > batch ? credits : batch;
}

static uint32_t ready_credits(const wk_t *w)
{
    return with_batch(w, w->cfg->credits ? w->cfg->credits : w->pf.announced);
}

static void send_ready(wk_t *w)
{
    /* CREDITS belongs to a registration: none until the BHEARTBEAT answering this READY
       says the broker takes it (a restarted broker behind the same endpoint may not know
       us yet, and would answer a CREDITS with RESET) */
    w->broker_credits = false;
    send_held(w); /* before the READY that claims it */
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_READY);
    zf_msg_set_str(&m, ZF_F_WORKER, w->name);
    zf_msg_set_u64(&m, ZF_F_DEVICE, wire_kind(w->bind.dev.type));
    zf_msg_set_i32(&m, ZF_F_DEVINDEX, w->bind.dev.index);
    zf_msg_set_str(&m, ZF_F_DEVNAME, w->bind.label);
    zf_msg_set_str(&m, ZF_F_TEXT, w->bind.name);
    zf_msg_set_u64(&m, ZF_F_DEVMEM, w->bind.dev.memory);
    zf_msg_set_u64(&m, ZF_F_CREDITS, ready_credits(w));
    zf_msg_set_u64(&m, ZF_F_BATCH, zf_registry_max_batch(w->mods)); /* the broker's poison rule */
    zf_msg_set_u64(&m, ZF_F_HEARTBEAT, w->cfg->heartbeat_ms);
    for (unsigned i = 0; i < zf_registry_count(w->mods); i++)
        zf_msg_add_function(&m, zf_registry_name(w->mods, i));
    if (w->supervisor[0]) /* the fleet that started us: the one peer trusted with our obituary */
        zf_msg_set_str(&m, ZF_F_SUPERVISOR, w->supervisor);
    zf_msg_set_u64(&m, ZF_F_SESSION, w->session);
    m.nclaims = 0;
    add_claims(w, &m);
    w->claims_pending = m.nclaims > 0;
    w->ready_sent_ms = zf_now_ms();
    if (m.nfunctions == 0)
        m.present |= 1u << ZF_F_FUNCTIONS;
    to_broker(w, &m, NULL);
    /* behind the READY, in order: a broker that re-attached their leases takes them now */
    if (zf_outbox_count(w->outbox))
        zf_log(ZF_LOG_INFO, "claimed %u lease(s); delivering %u kept result(s) again", m.nclaims,
               zf_outbox_resend(w->outbox, w->dealer, zf_now_ms()));
    else if (m.nclaims)
        zf_log(ZF_LOG_INFO, "claimed %u lease(s)", m.nclaims);
}

/* A DONE leaving for the broker (hdr: its encoded header): kept in the outbox until the
   broker surely has it. Called under sock_mu, from either thread. */
/* m: the DONE whose header bytes are hdr. */
static void keep_done(wk_t *w, const zf_msg_t *m, const void *hdr, size_t hlen, zmq_msg_t *out)
{
    zf_outbox_keep(w->outbox, m->id, m->attempt, hdr, hlen, out, zf_now_ms());
    if (zf_msg_has(m, ZF_F_DURATION))
        zf_prefetch_ran(&w->pf, m->duration_us);
}

static uint32_t jitter(uint32_t ms)
{
    /* +-25%, so a fleet that lost its broker does not come back in lockstep */
    return ms - ms / 4 + (uint32_t)(zf_random64() % (ms / 2 + 1));
}

/* How long a silent broker is waited for on the same connection before it is opened anew.
   Much longer than the liveness window: a broker that was stopped or blocked for a while
   still knows our leases and takes the results of the jobs we kept running (a restarted
   one tells us to register again as soon as ZeroMQ has reconnected underneath). A new
   socket is only for a connection that died without ZeroMQ noticing (a half-open TCP). */
static uint32_t patience_ms(const wk_t *w)
{
    uint32_t window = w->cfg->heartbeat_ms * w->cfg->liveness;
    uint32_t p = window * 10;
    return p > BACKOFF_MAX_MS ? (window > BACKOFF_MAX_MS ? window : BACKOFF_MAX_MS) : p;
}

static int connect_broker(wk_t *w)
{
    send_held(w); /* into the outbox and the old socket: the new one's READY claims it */
    zf_handshake_destroy(&w->hs);
    if (w->dealer)
        zmq_close(w->dealer);
    w->dealer = zmq_socket(w->ctx_net, ZMQ_DEALER);
    if (w->curve && zf_cert_apply_client(w->dealer, &w->key, w->broker_key) < 0) {
        zf_log(ZF_LOG_ERROR, "cannot set the CURVE keys: %s", zmq_strerror(errno));
        return -1;
    }
    w->hs = zf_handshake_new(w->ctx_net, w->dealer); /* NULL: silence is told without why */
    size_t fdlen = sizeof w->dealer_fd;
    zmq_getsockopt(w->dealer, ZMQ_FD, &w->dealer_fd, &fdlen);
    if (w->runner) /* an idle runner watching the old socket: to watch this one */
        zf_runner_wake(w->runner);
    /* Reconnects at least every half liveness window (up to 5 s): a restarted broker waits
       about one window for us to claim our jobs back (PROTOCOL.md §7.11). */
    uint32_t half = w->cfg->heartbeat_ms * w->cfg->liveness / 2;
    int zero = 0, ivl = (int)jitter(100);
    int ivl_max = (int)jitter(half < 200 ? 200 : half > 5000 ? 5000 : half);
    zmq_setsockopt(w->dealer, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(w->dealer, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(w->dealer, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    if (zmq_connect(w->dealer, w->cfg->broker_ep) < 0) {
        zf_log(ZF_LOG_ERROR, "cannot connect to %s: %s", w->cfg->broker_ep, zmq_strerror(errno));
        return -1;
    }
    int64_t now = zf_now_ms();
    w->last_recv_ms = now;
    w->broker_deadline_ms = now + w->backoff_ms;
    zf_prefetch_reset_probe(&w->pf);
    send_ready(w);
    return 0;
}

/* True when a message waits on the dealer. Also what re-arms ZMQ_FD after a send or a
   receive: the descriptor is edge-triggered, so one is due before every wait on it. */
static bool dealer_readable(wk_t *w)
{
    int ev = 0;
    size_t len = sizeof ev;
    return w->dealer && zmq_getsockopt(w->dealer, ZMQ_EVENTS, &ev, &len) == 0 && (ev & ZMQ_POLLIN);
}

/* After a send on the runner's thread (under sock_mu): the send may have consumed the
   notification of a message that arrived; passed on to the I/O thread, which would
   otherwise sleep on the descriptor. */
static void pass_on_readable(wk_t *w)
{
    if (dealer_readable(w))
        wake_io(w);
}

/* The runner's hold hook (zf_runner_hooks_t; see the invariants): keeps the DONE and arms
   hold_fd. Refused, like a direct send, when the socket is busy or relayed messages are
   ahead (it would overtake them), or when there is no socket. */
static int runner_hold(void *arg, const zf_msg_t *m, zmq_msg_t *payload, uint32_t delay_us)
{
    wk_t *w = arg;
    if (atomic_load(&w->relayed) || pthread_mutex_trylock(&w->sock_mu) != 0)
        return -1;
    if (send_held(w)) /* (one still held, its timer not fired yet: it goes first) */
        pass_on_readable(w);
    int hlen = w->dealer ? zf_msg_encode(m, w->held.hdr, sizeof w->held.hdr) : -1;
    struct itimerspec at = {{0, 0}, {0, (long)delay_us * 1000}};
    if (hlen <= 0 || timerfd_settime(w->hold_fd, 0, &at, NULL) < 0) {
        pthread_mutex_unlock(&w->sock_mu);
        return -1;
    }
    keep_done(w, m, w->held.hdr, (size_t)hlen, payload);
    zmq_msg_init(&w->held.out);
    zmq_msg_move(&w->held.out, payload);
    w->held.hlen = (size_t)hlen;
    w->sent_held++;
    pthread_mutex_unlock(&w->sock_mu);
    return 0;
}

/* The runner's way to the broker (called on the runner's thread; see the invariants). */
static int runner_send(void *arg, const zf_msg_t *m, zmq_msg_t *payload)
{
    wk_t *w = arg;
    /* never wait for the I/O thread: when it holds the socket it is awake, and relaying
       through it costs no wake-up (counted before the runner's PAIR send: see on_runner) */
    if (atomic_load(&w->relayed) || pthread_mutex_trylock(&w->sock_mu) != 0) {
        atomic_fetch_add(&w->relayed, 1);
        return -1;
    }
    send_held(w);
    if (m->cmd == ZF_CMD_DONE && w->dealer) {
        uint8_t hdr[ZF_HEADER_MAX];
        int hlen = zf_msg_encode(m, hdr, sizeof hdr);
        if (hlen > 0)
            keep_done(w, m, hdr, (size_t)hlen, payload);
    }
    int rc = w->dealer ? zf_wire_send(w->dealer, NULL, m, payload) : -1;
    if (rc < 0)
        atomic_fetch_add(&w->relayed, 1);
    if (rc == 0) {
        w->sent_direct++;
        w->last_send_ms = zf_now_ms();
        pass_on_readable(w);
    }
    pthread_mutex_unlock(&w->sock_mu);
    return rc;
}

/* ------------------------------------------------------------------ runner queue */

static void send_recalled(void *arg, uint64_t id, uint32_t attempt)
{
    send_simple(arg, ZF_CMD_RECALLED, id, attempt, 0);
}

/* Gives every prefetched job back to the broker. */
static void recall_all(wk_t *w)
{
    zf_runner_take_all(w->runner, send_recalled, w);
}

/* ------------------------------------------------------------------ leaving */

/* Ends the process now: the handler thread may be stuck in user code, so there is no
   clean join. What we say to the broker is flushed first. */
static void die(wk_t *w, int code)
{
    send_held(w);
    send_simple(w, ZF_CMD_BYE, 0, 0, 0);
    recall_all(w);
    send_simple(w, ZF_CMD_BYE, 0, 0, ZF_FLAG_BYE_NOW);
    int linger = 2000;
    zmq_setsockopt(w->dealer, ZMQ_LINGER, &linger, sizeof linger);
    zf_handshake_destroy(&w->hs);
    zmq_close(w->dealer);
    zmq_ctx_term(w->ctx_net);
    _exit(code);
}

static void begin_drain(wk_t *w)
{
    if (w->draining) {
        zf_running_t run = zf_runner_running(w->runner);
        zf_log_event(ZF_LOG_WARN, "worker_exit",
                     &(zf_log_fields_t){.job = run.active ? run.id : 0,
                                        .attempt = run.active ? run.attempt : 0,
                                        .reason = "second stop signal"},
                     "second stop signal: leaving now (job %llu goes back to the queue)",
                     (unsigned long long)run.id);
        die(w, ZF_WORKER_EXIT_OK);
    }
    zf_log_event(ZF_LOG_INFO, "worker_draining", NULL,
                 "draining: finishing the job in hand, returning prefetched jobs");
    w->draining = true;
    send_simple(w, ZF_CMD_BYE, 0, 0, 0);
    recall_all(w);
    if (w->cfg->drain_timeout_ms)
        w->drain_deadline_ms = zf_now_ms() + w->cfg->drain_timeout_ms;
}

/* ------------------------------------------------------------------ messages */

/* Adaptive prefetch: times a round trip to the broker with CREDITS, which also tells it a
   new number when the measurements call for one (zf_prefetch.h). */
static void maybe_probe(wk_t *w)
{
    int64_t now = zf_now_us();
    if (w->cfg->credits || !w->broker_credits || w->draining || !zf_prefetch_probe_due(&w->pf, now))
        return;
    /* only to a broker we are hearing from: after a silence (the broker down, or this
       process stopped) a probe would overtake the DONEs and READY the silence calls for */
    if (zf_now_ms() - w->last_recv_ms > (int64_t)w->cfg->heartbeat_ms * w->cfg->liveness)
        return;
    uint32_t before = w->pf.announced;
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_CREDITS);
    zf_msg_set_u64(&m, ZF_F_CREDITS, with_batch(w, zf_prefetch_probe_sent(&w->pf, now)));
    if (w->pf.announced != before)
        zf_log(ZF_LOG_DEBUG, "prefetch: %u credit(s) (run %.0f us, round trip %.0f us)",
               w->pf.announced, w->pf.run_us, w->pf.rtt_us);
    to_broker(w, &m, NULL);
}

static void on_job(wk_t *w, zf_frames_t *f, const zf_msg_t *m)
{
    if (w->runner_reading)
        w->jobs_by_runner++;
    else
        w->jobs_by_io++;
    char fn[ZF_FN_MAX + 1];
    zf_str_copy(fn, sizeof fn, m->fn);
    if (w->draining ||
        zf_runner_push(w->runner, m->id, m->attempt, fn, m->timeout_ms, &f->part[1]) < 0)
        send_simple(w, ZF_CMD_RECALLED, m->id, m->attempt, 0);
    maybe_probe(w);
}

static void on_cancel(wk_t *w, const zf_msg_t *m)
{
    if (zf_outbox_drop(w->outbox, m->id, m->attempt))
        return; /* a kept result whose claim the broker refused: it is not ours to deliver */
    if (zf_runner_take(w->runner, m->id, m->attempt)) {
        zf_msg_t d;
        zf_msg_init(&d, ZF_CMD_DONE);
        zf_msg_set_u64(&d, ZF_F_ID, m->id);
        zf_msg_set_u64(&d, ZF_F_ATTEMPT, m->attempt);
        zf_msg_set_u64(&d, ZF_F_STATUS, ZF_ST_CANCELLED);
        zmq_msg_t empty;
        zmq_msg_init(&empty);
        to_broker(w, &d, &empty);
        return;
    }
    /* Running, or between the queue and its start (the runner has taken it but not yet
       said so): the flag is keyed by the lease, so it holds either way; a job that has
       already finished is not running when the grace ends, and nothing happens. While the
       running job's own cancel is in progress, this lease is not running: it has finished
       (one job runs at a time, and a queued one was taken above). */
    zf_running_t run = zf_runner_running(w->runner);
    bool in_progress = w->cancel.deadline_ms && run.active && run.id == w->cancel.id &&
                       run.attempt == w->cancel.attempt;
    if (!in_progress) {
        zf_runner_cancel(w->runner, m->id, m->attempt);
        w->cancel.id = m->id;
        w->cancel.attempt = m->attempt;
        w->cancel.deadline_ms = zf_now_ms() + w->cfg->cancel_grace_ms;
    }
}

static void on_broker(wk_t *w, zf_frames_t *f)
{
    zf_msg_t m;
    int err;
    const char *why;
    w->last_recv_ms = zf_now_ms();
    if (w->silence_logged)
        zf_log_event(ZF_LOG_INFO, "broker_heard", NULL, "broker heard again");
    w->silence_logged = false;
    w->backoff_ms = patience_ms(w);
    w->broker_deadline_ms = w->last_recv_ms + w->backoff_ms;
    if (f->n < 1 ||
        zf_msg_decode(&m, zmq_msg_data(&f->part[0]), zmq_msg_size(&f->part[0]), &err, &why) < 0) {
        zf_log(ZF_LOG_WARN, "malformed message from the broker: %s", f->n ? why : "empty");
        return;
    }
    if (f->n != 1 + (m.cmd == ZF_CMD_JOB)) {
        zf_log(ZF_LOG_WARN, "broker sent %s with %d frames", zf_cmd_name(m.cmd), f->n);
        return;
    }
    if (m.cmd != ZF_CMD_RESET) {
        w->ready_sent_ms = 0; /* the broker knows us */
        /* and had what we sent well before this (its turns are far shorter than this) */
        zf_outbox_confirm(w->outbox, w->last_recv_ms - 2 * (int64_t)w->hb_ms);
    }
    if (m.cmd != ZF_CMD_ERROR)
        w->denied_logged = false;
    /* the broker expires us after its own interval: never heartbeat less often than that */
    if (zf_msg_has(&m, ZF_F_HEARTBEAT) && m.heartbeat_ms >= 10 && m.heartbeat_ms < w->hb_ms)
        w->hb_ms = m.heartbeat_ms;
    switch (m.cmd) {
    case ZF_CMD_JOB: on_job(w, f, &m); break;
    case ZF_CMD_WCANCEL: on_cancel(w, &m); break;
    case ZF_CMD_RECALL:
        if (zf_runner_take(w->runner, m.id, m.attempt))
            send_simple(w, ZF_CMD_RECALLED, m.id, m.attempt, 0);
        break;
    case ZF_CMD_RESET:
        /* The broker does not know us (it restarted, or declared us dead). We keep what we
           hold and claim it in the READY: a restarted broker gives back the leases its
           journal says are ours, and refuses the others with WCANCEL (§7.11). RESETs
           answering what we sent before our READY arrive before the broker's answer to the
           READY (both directions keep order), so they are ignored while a READY is fresh. */
        if (w->ready_sent_ms &&
            w->last_recv_ms - w->ready_sent_ms < (int64_t)w->cfg->heartbeat_ms * w->cfg->liveness)
            break;
        zf_log(ZF_LOG_INFO, "broker asked us to register again");
        if (!w->draining)
            send_ready(w);
        break;
    case ZF_CMD_BHEARTBEAT:
        if (w->claims_pending && !(m.flags & ZF_FLAG_REATTACH)) {
            /* a broker without re-attach: the leases we claimed are void, as they were */
            zf_log(ZF_LOG_INFO, "the broker does not re-attach: dropping what we held");
            zf_runner_take_all(w->runner, NULL, NULL);
            zf_outbox_clear(w->outbox);
        }
        w->claims_pending = false;
        if (m.flags & ZF_FLAG_CREDITS)
            w->broker_credits = true;
        break;
    case ZF_CMD_CREDITED: zf_prefetch_answered(&w->pf, zf_now_us()); break;
    case ZF_CMD_ERROR: {
        char text[ZF_TEXT_MAX + 1];
        zf_str_copy(text, sizeof text, m.text);
        if (m.code != ZF_EDENIED)
            zf_log(ZF_LOG_WARN, "broker error %u (%s): %s", m.code, zf_error_name(m.code), text);
        else if (!w->denied_logged) /* our key was revoked: no job will come until it is back */
            zf_log(ZF_LOG_ERROR, "%s (no jobs will come; trying on in case it is listed again)",
                   text);
        w->denied_logged = m.code == ZF_EDENIED;
        break;
    }
    default: zf_log(ZF_LOG_WARN, "unexpected %s from the broker", zf_cmd_name(m.cmd));
    }
}

static void on_runner(wk_t *w, zf_frames_t *f)
{
    if (f->n < 1 || zmq_msg_size(&f->part[0]) < 4)
        return; /* a "started" notice: the loop re-reads the running job's timeout */
    atomic_fetch_sub(&w->relayed, 1); /* whatever becomes of it, it is no longer pending */
    w->sent_relayed++;
    send_held(w); /* (held before this message was relayed: it goes first) */
    uint8_t cmd = ((const uint8_t *)zmq_msg_data(&f->part[0]))[3];
    zf_msg_t done;
    if (cmd == ZF_CMD_DONE &&
        zf_msg_decode(&done, zmq_msg_data(&f->part[0]), zmq_msg_size(&f->part[0]), NULL, NULL) == 0)
        keep_done(w, &done, zmq_msg_data(&f->part[0]), zmq_msg_size(&f->part[0]),
                  f->n > 1 ? &f->part[1] : NULL);
    if (cmd == ZF_CMD_DONE && w->cancel.deadline_ms && w->runner) {
        zf_running_t run = zf_runner_running(w->runner);
        if (!run.active || run.id != w->cancel.id || run.attempt != w->cancel.attempt)
            w->cancel.deadline_ms = 0; /* the cancelled handler returned in time */
    }
    /* forward the frames as they are: the output is moved, not copied */
    int n = f->n;
    bool ok = true;
    for (int i = 0; i < n && ok; i++)
        ok =
            zmq_msg_send(&f->part[i], w->dealer, ZMQ_DONTWAIT | (i + 1 < n ? ZMQ_SNDMORE : 0)) >= 0;
    if (ok)
        w->last_send_ms = zf_now_ms();
}

/* ------------------------------------------------------------------ timers and loop */

static long next_timeout(wk_t *w, int64_t now)
{
    int64_t next = w->last_send_ms + w->hb_ms;
    if (w->broker_deadline_ms < next)
        next = w->broker_deadline_ms;
    zf_running_t run = zf_runner_running(w->runner);
    if (run.active && run.timeout_ms && run.started_ms + run.timeout_ms < next)
        next = run.started_ms + run.timeout_ms;
    if (w->cancel.deadline_ms && w->cancel.deadline_ms < next)
        next = w->cancel.deadline_ms;
    if (w->drain_deadline_ms && w->drain_deadline_ms < next)
        next = w->drain_deadline_ms;
    return next <= now ? 0 : (long)(next - now);
}

static void job_timed_out(wk_t *w, zf_running_t run)
{
    char text[128];
    snprintf(text, sizeof text, "run timeout of %u ms exceeded on %s", run.timeout_ms, w->name);
    zf_log_event(ZF_LOG_ERROR, "job_timed_out",
                 &(zf_log_fields_t){.job = run.id, .attempt = run.attempt},
                 "job %llu: %s; a handler cannot be stopped safely, so this worker "
                 "exits (its supervisor restarts it)",
                 (unsigned long long)run.id, text);
    /* draining first, so the broker does not hand this dying process the retry */
    send_simple(w, ZF_CMD_BYE, 0, 0, 0);
    zf_msg_t d;
    zf_msg_init(&d, ZF_CMD_DONE);
    zf_msg_set_u64(&d, ZF_F_ID, run.id);
    zf_msg_set_u64(&d, ZF_F_ATTEMPT, run.attempt);
    zf_msg_set_u64(&d, ZF_F_STATUS, ZF_ST_TIMED_OUT);
    zf_msg_set_u64(&d, ZF_F_DURATION, (uint64_t)run.timeout_ms * 1000);
    zf_msg_set_str(&d, ZF_F_TEXT, text);
    zmq_msg_t empty;
    zmq_msg_init(&empty);
    to_broker(w, &d, &empty);
    die(w, ZF_WORKER_EXIT_TIMEOUT);
}

static void run_timers(wk_t *w)
{
    int64_t now = zf_now_ms();
    zf_running_t run = zf_runner_running(w->runner);
    if (run.active && run.timeout_ms && now >= run.started_ms + run.timeout_ms)
        job_timed_out(w, run);
    if (w->cancel.deadline_ms && now >= w->cancel.deadline_ms) {
        if (run.active && run.id == w->cancel.id && run.attempt == w->cancel.attempt) {
            zf_log_event(ZF_LOG_ERROR, "job_cancel_ignored",
                         &(zf_log_fields_t){.job = run.id, .attempt = run.attempt},
                         "job %llu was cancelled and did not stop within %u ms: exiting",
                         (unsigned long long)run.id, w->cfg->cancel_grace_ms);
            die(w, ZF_WORKER_EXIT_CANCEL);
        }
        w->cancel.deadline_ms = 0;
    }
    if (w->drain_deadline_ms && now >= w->drain_deadline_ms) {
        zf_log_event(ZF_LOG_WARN, "worker_exit",
                     &(zf_log_fields_t){.job = run.active ? run.id : 0,
                                        .attempt = run.active ? run.attempt : 0,
                                        .reason = "drain timeout"},
                     "drain timeout: leaving with job %llu unfinished", (unsigned long long)run.id);
        die(w, ZF_WORKER_EXIT_OK);
    }
    if (!w->silence_logged &&
        now - w->last_recv_ms >= (int64_t)w->cfg->heartbeat_ms * w->cfg->liveness) {
        char why[400];
        if (w->hs && zf_handshake_failed(w->hs, why, sizeof why))
            zf_log_event(ZF_LOG_ERROR, "broker_refused", &(zf_log_fields_t){.reason = why},
                         "no service from the broker at %s: %s (trying on)", w->cfg->broker_ep,
                         why);
        else
            zf_log_event(ZF_LOG_WARN, "broker_silent", NULL,
                         "broker silent for %lld ms: keeping the connection and the jobs in "
                         "hand (reconnecting after %u ms of silence)",
                         (long long)(now - w->last_recv_ms), w->backoff_ms);
        w->silence_logged = true;
    }
    if (now >= w->broker_deadline_ms) {
        zf_log_event(ZF_LOG_WARN, "broker_reconnect", NULL,
                     "broker silent for %lld ms: reconnecting", (long long)(now - w->last_recv_ms));
        /* what we hold is claimed in the new connection's READY (§7.11) */
        w->backoff_ms = w->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : w->backoff_ms * 2;
        w->backoff_ms = jitter(w->backoff_ms);
        connect_broker(w);
    }
    maybe_probe(w);
    if (now - w->last_send_ms >= w->hb_ms)
        send_simple(w, ZF_CMD_HEARTBEAT, 0, 0, 0);
}

/* zf_wire_read_batch's handlers for the I/O thread's two sockets */
static void runner_message(void *w, zf_frames_t *f)
{
    on_runner(w, f);
}

static void broker_message(void *w, zf_frames_t *f)
{
    on_broker(w, f);
}

/* Messages read from one socket per loop turn before looking at the other. */
#define READ_BATCH 256

/* A batch from the runner's PAIR, then one from the broker. Returns 0, or -1 on a socket
   error. */
static int read_batch(wk_t *w)
{
    if (zf_wire_read_batch(w->pair, READ_BATCH, runner_message, w) < 0)
        return -1;
    return zf_wire_read_batch(w->dealer, READ_BATCH, broker_message, w) < 0 ? -1 : 0;
}

/* The wait's items: the runner's PAIR, the signals, the runner's wake-ups, the hand-back,
   hold and run-timeout timers, and the broker socket unless the idle runner watches it. */
enum { IT_PAIR, IT_SIG, IT_WAKE, IT_HAND, IT_HOLD, IT_RUN, IT_DEALER, IT_N };

/* Waits for the broker, the runner, a signal or the next timer, with sock_mu released
   (the caller holds it before and after). Returns the poll's result. */
static int wait_events(wk_t *w, zmq_pollitem_t items[IT_N])
{
    int64_t now = zf_now_ms();
    long timeout = dealer_readable(w) ? 0 : next_timeout(w, now);
    w->io_wake_ms = now + timeout;
    items[IT_PAIR] = (zmq_pollitem_t){w->pair, 0, ZMQ_POLLIN, 0};
    items[IT_SIG] = (zmq_pollitem_t){NULL, w->sigfd, ZMQ_POLLIN, 0};
    items[IT_WAKE] = (zmq_pollitem_t){NULL, w->wake_fd, ZMQ_POLLIN, 0};
    items[IT_HAND] = (zmq_pollitem_t){NULL, w->hand_fd, ZMQ_POLLIN, 0};
    items[IT_HOLD] = (zmq_pollitem_t){NULL, w->hold_fd, ZMQ_POLLIN, 0};
    items[IT_RUN] = (zmq_pollitem_t){NULL, w->run_fd, ZMQ_POLLIN, 0};
    items[IT_DEALER] = (zmq_pollitem_t){NULL, w->dealer_fd, ZMQ_POLLIN, 0};
    int n = atomic_load(&w->runner_watch) ? IT_DEALER : IT_N;
    pthread_mutex_unlock(&w->sock_mu);
    int rc = zmq_poll(items, n, timeout);
    pthread_mutex_lock(&w->sock_mu);
    return rc;
}

/* ------------------------------------------------------------------ the runner's watch */

/* The runner's idle hook (zf_runner_hooks_t; see the invariants): reads what waits on the
   broker socket, or waits for it or for the runner's wake_fd. */
static void runner_idle(void *arg, int wake_fd)
{
    wk_t *w = arg;
    if (w->hand_armed) { /* back before the timer: the I/O thread never had to wake */
        timerfd_settime(w->hand_fd, 0, &(struct itimerspec){{0, 0}, {0, 0}}, NULL);
        w->hand_armed = false;
    }
    atomic_store(&w->runner_watch, true);
    pthread_mutex_lock(&w->sock_mu);
    send_held(w); /* (the job it was held behind was recalled) */
    while (!dealer_readable(w)) {
        struct pollfd p[2] = {{wake_fd, POLLIN, 0}, {w->dealer ? w->dealer_fd : -1, POLLIN, 0}};
        pthread_mutex_unlock(&w->sock_mu);
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            zf_log(ZF_LOG_WARN, "handler thread: poll: %s", strerror(errno));
        if (p[0].revents) /* a job pushed, a new socket, or stopping: the runner looks */
            return;
        pthread_mutex_lock(&w->sock_mu);
    }
    w->runner_reading = true;
    zf_wire_read_batch(w->dealer, READ_BATCH, broker_message, w); /* (errors: the I/O thread's) */
    w->runner_reading = false;
    /* what we read may call for the I/O thread sooner than it would wake (a cancel's grace
       period, a shorter heartbeat) */
    int64_t now = zf_now_ms();
    if (now + next_timeout(w, now) < w->io_wake_ms)
        wake_io(w);
    pthread_mutex_unlock(&w->sock_mu);
}

/* The runner's started hook: a job with a run timeout starts. Arming a timer wakes no one,
   where a notice to this thread would, on the core that is about to start the job. */
static void runner_started(void *arg, uint32_t timeout_ms)
{
    wk_t *w = arg;
    struct itimerspec at = {{0, 0}, {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L}};
    if (timerfd_settime(w->run_fd, 0, &at, NULL) < 0)
        wake_io(w); /* no timer: the I/O thread wakes and reads the deadline itself */
}

/* The runner's busy hook: it leaves idle with a job; the I/O thread takes the watch back. */
static void runner_busy(void *arg, bool at_once)
{
    wk_t *w = arg;
    atomic_store(&w->runner_watch, false);
    if (at_once) {
        wake_io(w);
        return;
    }
    struct itimerspec in = {{0, 0}, {0, HANDBACK_US * 1000L}};
    w->hand_armed = timerfd_settime(w->hand_fd, 0, &in, NULL) == 0;
    if (!w->hand_armed)
        wake_io(w);
}

/* Reads a timerfd the wait found readable; true if it had fired. EAGAIN (disarmed since,
   which clears it) is not an error. */
static bool timer_fired(const zmq_pollitem_t *it, const char *what)
{
    uint64_t n;
    if (!(it->revents & ZMQ_POLLIN))
        return false;
    if (read(it->fd, &n, sizeof n) == sizeof n)
        return true;
    if (errno != EAGAIN)
        zf_log(ZF_LOG_WARN, "%s: %s", what, strerror(errno));
    return false;
}

static int serve(wk_t *w)
{
    pthread_mutex_lock(&w->sock_mu);
    for (;;) {
        zmq_pollitem_t items[IT_N];
        if (wait_events(w, items) < 0 && errno != EINTR)
            break;
        send_held(w); /* due (IT_HOLD), or awake anyway: it goes first (its timer disarmed) */
        if (items[IT_SIG].revents & ZMQ_POLLIN) {
            struct signalfd_siginfo si;
            if (read(w->sigfd, &si, sizeof si) == sizeof si)
                begin_drain(w);
        }
        uint64_t woken;
        if ((items[IT_WAKE].revents & ZMQ_POLLIN) && read(w->wake_fd, &woken, sizeof woken) < 0)
            zf_log(ZF_LOG_WARN, "wake descriptor: %s", strerror(errno));
        /* (the timer fired: the runner is busy with a job it read; the next wait watches) */
        if (timer_fired(&items[IT_HAND], "hand-back timer"))
            w->handbacks++;
        timer_fired(&items[IT_HOLD], "hold timer"); /* (send_held disarmed it above: cleared) */
        timer_fired(&items[IT_RUN], "run-timeout timer"); /* run_timers judges the running job */
        if (read_batch(w) < 0)
            break;
        run_timers(w);
        if (w->draining && !zf_runner_running(w->runner).active) {
            /* the runner marks itself idle just before it sends its last DONE: stop it
               (join: it may be waiting for the socket), then forward whatever it sent over
               the PAIR, and only then say goodbye */
            pthread_mutex_unlock(&w->sock_mu);
            zf_runner_destroy(&w->runner);
            pthread_mutex_lock(&w->sock_mu);
            zf_wire_read_batch(w->pair, READ_BATCH, runner_message, w);
            send_held(w);
            send_simple(w, ZF_CMD_BYE, 0, 0, ZF_FLAG_BYE_NOW);
            pthread_mutex_unlock(&w->sock_mu);
            zf_log_event(ZF_LOG_INFO, "worker_exit", &(zf_log_fields_t){.reason = "drained"},
                         "drained: leaving");
            return 0;
        }
    }
    pthread_mutex_unlock(&w->sock_mu);
    return -1;
}

/* ------------------------------------------------------------------ start and stop */

static int start(wk_t *w, char *err, size_t errlen)
{
    if (zf_device_bind(&w->bind, w->cfg->device, w->cfg->fake_gpu, err, errlen) < 0)
        return -1;
    const char *sup = getenv(ZF_SUPERVISOR_ENV);
    if (sup && strlen(sup) <= ZF_SUPERVISOR_MAX)
        snprintf(w->supervisor, sizeof w->supervisor, "%s", sup);
    unsetenv(ZF_SUPERVISOR_ENV); /* not for the handlers' own child processes */
    if (w->cfg->name)
        snprintf(w->name, sizeof w->name, "%s", w->cfg->name);
    else
        zf_worker_default_name(w->name, sizeof w->name, (int)getpid(), w->bind.label);
    zf_log_set_context(w->name, w->bind.label); /* on every line of this process (JSON) */
    w->mods = zf_registry_new();
    if (!w->mods || zf_registry_add(w->mods, &zf_builtin_core, err, errlen) < 0 ||
        zf_registry_add(w->mods, &zf_builtin_image, err, errlen) < 0)
        return -1;
    for (int i = 0; i < w->cfg->nmodules; i++)
        if (zf_registry_load(w->mods, w->cfg->modules[i], err, errlen) < 0)
            return -1;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    /* blocked before the runner thread starts, so only the signalfd sees them */
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    w->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    w->hand_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    w->hold_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    w->run_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    w->ctx_in = zmq_ctx_new();
    w->ctx_net = zmq_ctx_new();
    w->pair = zmq_socket(w->ctx_in, ZMQ_PAIR);
    if (w->sigfd < 0 || w->wake_fd < 0 || w->hand_fd < 0 || w->hold_fd < 0 || w->run_fd < 0 ||
        zmq_bind(w->pair, RUNNER_EP) < 0) {
        snprintf(err, errlen, "cannot set up the handler thread's socket");
        return -1;
    }
    zf_runner_hooks_t hooks = {.send = runner_send,
                               .hold = runner_hold,
                               .idle = runner_idle,
                               .busy = runner_busy,
                               .started = runner_started,
                               .arg = w};
    w->runner = zf_runner_new(w->ctx_in, RUNNER_EP, w->mods, &w->bind.dev, &hooks);
    if (!w->runner) {
        snprintf(err, errlen, "cannot start the handler thread");
        return -1;
    }
    /* the runner answers with an empty frame once the modules are initialised */
    char reply[400];
    int n = zmq_recv(w->pair, reply, sizeof reply - 1, 0);
    if (n != 0) {
        reply[n < 0 ? 0 : n > (int)sizeof reply - 1 ? (int)sizeof reply - 1 : n] = 0;
        snprintf(err, errlen, "%s", reply);
        zf_runner_destroy(&w->runner);
        return -1;
    }
    w->backoff_ms = patience_ms(w);
    w->hb_ms = w->cfg->heartbeat_ms;
    while (!w->session) /* nonzero: 0 means "no session" to the broker */
        w->session = zf_random64();
    if (!(w->outbox = zf_outbox_new(w->cfg->hold_bytes))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (zf_cert_load_pair(w->cfg->key_file, w->cfg->broker_key_file, &w->curve, &w->key,
                          w->broker_key, err, errlen) < 0)
        return -1;
    pthread_mutex_lock(&w->sock_mu);
    int rc = connect_broker(w);
    pthread_mutex_unlock(&w->sock_mu);
    if (rc < 0) {
        snprintf(err, errlen, "bad broker endpoint %s", w->cfg->broker_ep);
        return -1;
    }
    zf_log_event(ZF_LOG_INFO, "worker_started", &(zf_log_fields_t){.pid = getpid()},
                 "%s serving %u function(s) on %s (%s) from %s", w->name,
                 zf_registry_count(w->mods), w->bind.label, w->bind.name, w->cfg->broker_ep);
    return 0;
}

static void stop(wk_t *w)
{
    zf_runner_destroy(&w->runner);
    send_held(w);
    zf_log(ZF_LOG_DEBUG,
           "results and progress sent by the handler thread: %llu, relayed by "
           "the I/O thread: %llu; results held behind the next job: %llu",
           (unsigned long long)w->sent_direct, (unsigned long long)w->sent_relayed,
           (unsigned long long)w->sent_held);
    zf_log(ZF_LOG_DEBUG,
           "jobs read by the handler thread: %llu, by the I/O thread: %llu; socket handed "
           "back by the timer: %llu time(s)",
           (unsigned long long)w->jobs_by_runner, (unsigned long long)w->jobs_by_io,
           (unsigned long long)w->handbacks);
    zf_handshake_destroy(&w->hs);
    memset(&w->key, 0, sizeof w->key);
    if (w->dealer) {
        int linger = 1000;
        zmq_setsockopt(w->dealer, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(w->dealer);
    }
    if (w->pair)
        zmq_close(w->pair);
    if (w->ctx_net)
        zmq_ctx_term(w->ctx_net);
    if (w->ctx_in)
        zmq_ctx_term(w->ctx_in);
    zf_registry_destroy(&w->mods);
    zf_outbox_destroy(&w->outbox);
    if (w->sigfd > 0)
        close(w->sigfd);
    if (w->wake_fd > 0)
        close(w->wake_fd);
    if (w->hand_fd > 0)
        close(w->hand_fd);
    if (w->hold_fd > 0)
        close(w->hold_fd);
    if (w->run_fd > 0)
        close(w->run_fd);
}

int zf_worker_run(const zf_worker_config_t *cfg)
{
    wk_t w = {.cfg = cfg,
              .sigfd = -1,
              .wake_fd = -1,
              .hand_fd = -1,
              .hold_fd = -1,
              .run_fd = -1,
              .sock_mu = PTHREAD_MUTEX_INITIALIZER};
    zf_prefetch_init(&w.pf);
    char err[512] = "";
    if (start(&w, err, sizeof err) < 0) {
        zf_log(ZF_LOG_ERROR, "%s", err);
        stop(&w);
        return ZF_WORKER_EXIT_START;
    }
    int rc = serve(&w);
    stop(&w);
    return rc == 0 ? ZF_WORKER_EXIT_OK : ZF_WORKER_EXIT_START;
}
