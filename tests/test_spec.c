/*  Spec: the places where proto/PROTOCOL.md and the broker were found to disagree, driven
    as a third-party implementer would, through hand-driven sockets that speak the wire
    protocol to a real broker. Each test names the section it holds the broker to. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "harness.h"
#include "zf_proto.h"
#include "zf_wire.h"

static void *ctx;

static void setup(void)
{
    ctx = zmq_ctx_new();
}

/* The context is not terminated: a failed assertion leaves sockets open, and zmq_ctx_term
   would wait for them (each test is a process of its own; its exit frees everything). */
TestSuite(spec, .init = setup, .fini = zt_kill_all);

/* ------------------------------------------------------------------ raw peers */

static void *peer(const char *ep)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    cr_assert_eq(zmq_connect(s, ep), 0);
    return s;
}

/* Sends m followed by `payloads` frames (each the bytes "p"), whatever the command says. */
static void send_frames(void *s, const zf_msg_t *m, int payloads)
{
    char buf[ZF_HEADER_MAX];
    int n = zf_msg_encode(m, buf, sizeof buf);
    cr_assert_gt(n, 0);
    cr_assert_eq(zmq_send(s, buf, (size_t)n, payloads ? ZMQ_SNDMORE : 0), n);
    for (int i = 0; i < payloads; i++)
        cr_assert_eq(zmq_send(s, "p", 1, i + 1 < payloads ? ZMQ_SNDMORE : 0), 1);
}

/* One received message; m's strings point into f. */
typedef struct {
    zf_frames_t f;
    zf_msg_t m;
} rx_t;

/* Receives the next message other than BHEARTBEAT within timeout_ms. False on timeout. */
static bool recv_msg(void *s, rx_t *rx, int timeout_ms)
{
    int64_t until = zt_now_ms() + timeout_ms;
    for (;;) {
        long left = (long)(until - zt_now_ms());
        if (left <= 0)
            return false;
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, left) != 1)
            continue;
        cr_assert_eq(zf_wire_recv(s, &rx->f, 0), 0);
        if (zf_msg_decode(&rx->m, zmq_msg_data(&rx->f.part[0]), zmq_msg_size(&rx->f.part[0]), NULL,
                          NULL) == 0 &&
            rx->m.cmd != ZF_CMD_BHEARTBEAT)
            return true;
        zf_frames_close(&rx->f);
    }
}

/* Receives until a message of cmd arrives (others dropped). */
static void expect_cmd(void *s, rx_t *rx, uint8_t cmd, int timeout_ms)
{
    int64_t until = zt_now_ms() + timeout_ms;
    while (zt_now_ms() < until) {
        if (!recv_msg(s, rx, (int)(until - zt_now_ms())))
            break;
        if (rx->m.cmd == cmd)
            return;
        zf_frames_close(&rx->f);
    }
    cr_assert_fail("no %s within %d ms", zf_cmd_name(cmd), timeout_ms);
}

static void ready(void *w, const char *name, const char *const *fns, size_t nfns)
{
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_READY);
    zf_msg_set_str(&m, ZF_F_WORKER, name);
    zf_msg_set_u64(&m, ZF_F_DEVICE, ZF_DEV_CPU);
    zf_msg_set_str(&m, ZF_F_DEVNAME, "cpu:0");
    for (size_t i = 0; i < nfns; i++)
        zf_msg_add_function(&m, fns[i]);
    send_frames(w, &m, 0);
}

/* A worker that registered: the BHEARTBEAT after READY has arrived. */
static void *registered_worker(const zt_env_t *env, const char *name, const char *fn)
{
    void *w = peer(env->worker_ep);
    ready(w, name, &fn, 1);
    zmq_pollitem_t it = {w, 0, ZMQ_POLLIN, 0};
    cr_assert_eq(zmq_poll(&it, 1, 10000), 1, "the broker answers READY");
    zf_frames_t f;
    cr_assert_eq(zf_wire_recv(w, &f, 0), 0);
    zf_frames_close(&f);
    cr_assert(zt_wait_workers(env, 1, 10000));
    return w;
}

static uint64_t submit(void *c, const char *fn, uint64_t tag, uint32_t deadline_ms,
                       uint32_t max_attempts)
{
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_SUBMIT);
    zf_msg_set_u64(&m, ZF_F_TAG, tag);
    zf_msg_set_str(&m, ZF_F_FN, fn);
    if (deadline_ms)
        zf_msg_set_u64(&m, ZF_F_DEADLINE, deadline_ms);
    if (max_attempts)
        zf_msg_set_u64(&m, ZF_F_MAX_ATTEMPTS, max_attempts);
    send_frames(c, &m, 1);
    rx_t rx;
    expect_cmd(c, &rx, ZF_CMD_ACCEPTED, 10000);
    cr_assert_eq(rx.m.tag, tag);
    uint64_t id = rx.m.id;
    zf_frames_close(&rx.f);
    return id;
}

static void send_simple(void *s, uint8_t cmd, uint64_t id, uint32_t attempt, uint32_t flags)
{
    zf_msg_t m;
    zf_msg_init(&m, cmd);
    if (id)
        zf_msg_set_u64(&m, ZF_F_ID, id);
    if (attempt || cmd == ZF_CMD_DONE || cmd == ZF_CMD_RECALLED)
        zf_msg_set_u64(&m, ZF_F_ATTEMPT, attempt);
    if (flags)
        zf_msg_set_u64(&m, ZF_F_FLAGS, flags);
    if (cmd == ZF_CMD_DONE)
        zf_msg_set_u64(&m, ZF_F_STATUS, ZF_ST_SUCCEEDED);
    send_frames(s, &m, cmd == ZF_CMD_DONE);
}

static void expect_text(const zf_msg_t *m, const char *want)
{
    char text[ZF_TEXT_MAX + 1];
    zf_str_copy(text, sizeof text, m->text);
    cr_assert(strstr(text, want), "text '%s' should contain '%s'", text, want);
}

/* ------------------------------------------------------------------ worker socket */

/* §12: a worker-socket message with the wrong number of frames for its command gets the
   same error as on the client socket, not "not a worker command" (found by a third-party
   worker: it could not tell a framing bug from a wrong command byte). */
Test(spec, worker_socket_wrong_frame_count_is_malformed, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    void *w = registered_worker(&env, "framing", "echo");
    long long before = zt_broker_counter(&env, "malformed_worker");
    struct {
        uint8_t cmd;
        int payloads;
    } bad[] = {{ZF_CMD_HEARTBEAT, 1}, {ZF_CMD_DONE, 0}, {ZF_CMD_DONE, 2}, {ZF_CMD_BYE, 2}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        zf_msg_t m;
        zf_msg_init(&m, bad[i].cmd);
        if (bad[i].cmd == ZF_CMD_DONE) {
            zf_msg_set_u64(&m, ZF_F_ID, 1);
            zf_msg_set_u64(&m, ZF_F_ATTEMPT, 1);
            zf_msg_set_u64(&m, ZF_F_STATUS, ZF_ST_SUCCEEDED);
        }
        send_frames(w, &m, bad[i].payloads);
        rx_t rx;
        expect_cmd(w, &rx, ZF_CMD_ERROR, 10000);
        cr_assert_eq(rx.m.code, ZF_EMALFORMED, "case %zu: code %u", i, rx.m.code);
        expect_text(&rx.m, "wrong number of frames for the command");
        zf_frames_close(&rx.f);
    }
    cr_assert_eq(zt_broker_counter(&env, "malformed_worker"), before + 4);
    cr_assert_eq(zt_count_workers(&env), 1, "a malformed message removes no worker");
    /* a client command on the worker socket is still a wrong command */
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_PING);
    send_frames(w, &m, 0);
    rx_t rx;
    expect_cmd(w, &rx, ZF_CMD_ERROR, 10000);
    cr_assert_eq(rx.m.code, ZF_ECOMMAND);
    zf_frames_close(&rx.f);
    zmq_close(w);
}

/* §7.10: an unregistered connection's DONE is stale and answered RESET, whatever frames it
   came in; before, a DONE without its payload frame got ERROR ECOMMAND and no RESET. */
Test(spec, unregistered_done_without_payload_is_stale_and_reset, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    void *w = peer(env.worker_ep);
    long long stale = zt_broker_counter(&env, "stale_results");
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_DONE);
    zf_msg_set_u64(&m, ZF_F_ID, 42);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, 1);
    zf_msg_set_u64(&m, ZF_F_STATUS, ZF_ST_SUCCEEDED);
    send_frames(w, &m, 0);
    rx_t rx;
    cr_assert(recv_msg(w, &rx, 10000));
    cr_assert_eq(rx.m.cmd, ZF_CMD_RESET, "got %s", zf_cmd_name(rx.m.cmd));
    zf_frames_close(&rx.f);
    cr_assert_eq(zt_broker_counter(&env, "stale_results"), stale + 1);
    zmq_close(w);
}

/* §4, §7.3: 0 is never a job id nor a lease number, and naming it is no error: WAIT of id 0
   answers "unknown job" with the request's tag; DONE for attempt 0 is stale. */
Test(spec, id_and_attempt_zero_are_unknown_not_malformed, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    void *c = peer(env.client_ep);
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_WAIT);
    zf_msg_set_u64(&m, ZF_F_ID, 0);
    zf_msg_set_u64(&m, ZF_F_TAG, 77);
    send_frames(c, &m, 0);
    rx_t rx;
    expect_cmd(c, &rx, ZF_CMD_ERROR, 10000);
    cr_assert_eq(rx.m.code, ZF_EUNKNOWN_JOB);
    cr_assert_eq(rx.m.tag, 77);
    zf_frames_close(&rx.f);

    void *w = registered_worker(&env, "zero", "echo");
    uint64_t id = submit(c, "echo", 1, 0, 0);
    expect_cmd(w, &rx, ZF_CMD_JOB, 10000);
    cr_assert_eq(rx.m.id, id);
    cr_assert_eq(rx.m.attempt, 1, "lease numbers start at 1");
    zf_frames_close(&rx.f);
    long long stale = zt_broker_counter(&env, "stale_results");
    send_simple(w, ZF_CMD_DONE, id, 0, 0);
    cr_assert_eq(zt_broker_counter(&env, "stale_results"), stale + 1);
    send_simple(w, ZF_CMD_DONE, id, 1, 0); /* the real lease still ends the job */
    expect_cmd(c, &rx, ZF_CMD_RESULT, 10000);
    cr_assert_eq(rx.m.status, ZF_ST_SUCCEEDED);
    zf_frames_close(&rx.f);
    zmq_close(w);
    zmq_close(c);
}

/* ------------------------------------------------------------------ function names */

/* Walks a msgpack value: true when every str in it is well-formed UTF-8. */
static bool all_utf8(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_STR: return zf_utf8_valid(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (!all_utf8(&o->via.array.ptr[i]))
                return false;
        return true;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++)
            if (!all_utf8(&o->via.map.ptr[i].key) || !all_utf8(&o->via.map.ptr[i].val))
                return false;
        return true;
    default: return true;
    }
}

static long long stats_utf8(msgpack_object *doc, const char *arg)
{
    (void)arg;
    return all_utf8(doc);
}

/* The functions one worker serves, joined with ','; its name in out_name. */
static long long worker_functions(msgpack_object *doc, const char *arg)
{
    char *out = (char *)arg; /* (the harness passes the argument through) */
    msgpack_object *ws = zt_mp_get(doc, "workers");
    if (!ws || ws->type != MSGPACK_OBJECT_ARRAY || ws->via.array.size != 1)
        return -1;
    msgpack_object *fns = zt_mp_get(&ws->via.array.ptr[0], "functions");
    msgpack_object *name = zt_mp_get(&ws->via.array.ptr[0], "name");
    out[0] = 0;
    for (uint32_t i = 0; fns && i < fns->via.array.size; i++) {
        strcat(out, i ? "," : "");
        strncat(out, fns->via.array.ptr[i].via.str.ptr, fns->via.array.ptr[i].via.str.size);
    }
    strcat(out, "|");
    if (name)
        strncat(out, name->via.str.ptr, name->via.str.size);
    return 0;
}

/* §6.2 item 1a: one SUBMIT with a function name that is not UTF-8 used to make every later
   STATS document fail strict decoding in clients (Python's msgpack default). */
Test(spec, submit_with_non_utf8_function_is_rejected, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    void *c = peer(env.client_ep);
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_SUBMIT);
    zf_msg_set_u64(&m, ZF_F_TAG, 5);
    zf_msg_set_str(&m, ZF_F_FN, "caf\xc3");
    send_frames(c, &m, 1);
    rx_t rx;
    cr_assert(recv_msg(c, &rx, 10000));
    cr_assert_eq(rx.m.cmd, ZF_CMD_REJECTED, "got %s", zf_cmd_name(rx.m.cmd));
    cr_assert_eq(rx.m.code, ZF_EBADARG);
    cr_assert_eq(rx.m.tag, 5);
    expect_text(&rx.m, "function name is not valid UTF-8");
    zf_frames_close(&rx.f);
    cr_assert_eq(zt_with_stats(&env, stats_utf8, NULL), 1, "STATS stays valid UTF-8");
    submit(c, "caf\xc3\xa9", 6, 0, 0); /* a valid UTF-8 name is accepted */
    cr_assert_eq(zt_with_stats(&env, stats_utf8, NULL), 1);
    zmq_close(c);
}

/* §7.1: READY's function names that are not UTF-8 are dropped (the others served), a
   worker name that is not counts as absent, and the worker is told with ERROR. */
Test(spec, ready_drops_non_utf8_names, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    void *w = peer(env.worker_ep);
    const char *fns[] = {"echo", "bad\xff", "upper"};
    ready(w, "w\xc3", fns, 3);
    rx_t rx;
    expect_cmd(w, &rx, ZF_CMD_ERROR, 10000);
    cr_assert_eq(rx.m.code, ZF_EMALFORMED);
    expect_text(&rx.m, "not valid UTF-8");
    zf_frames_close(&rx.f);
    cr_assert(zt_wait_workers(&env, 1, 10000), "the worker is registered all the same");
    char out[512];
    cr_assert_eq(zt_with_stats(&env, worker_functions, out), 0);
    cr_assert(!strncmp(out, "echo,upper|worker-", 18), "stats: %s", out);
    cr_assert_eq(zt_with_stats(&env, stats_utf8, NULL), 1, "STATS stays valid UTF-8");
    zmq_close(w);
}

/* §3: a worker's text that is not UTF-8 reaches clients with each bad byte as '?'
   (RESULT text, causes in the DEAD document), so clients can decode strictly. */
Test(spec, worker_text_reaches_clients_as_utf8, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    void *w = registered_worker(&env, "texter", "echo");
    void *c = peer(env.client_ep);
    uint64_t id = submit(c, "echo", 2, 0, 0);
    rx_t rx;
    expect_cmd(w, &rx, ZF_CMD_JOB, 10000);
    zf_frames_close(&rx.f);
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_DONE);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_ATTEMPT, 1);
    zf_msg_set_u64(&m, ZF_F_STATUS, ZF_ST_FAILED);
    zf_msg_set_str(&m, ZF_F_TEXT, "bad\xff byte, caf\xc3\xa9 kept, cut \xe2\x82");
    send_frames(w, &m, 1);
    expect_cmd(c, &rx, ZF_CMD_RESULT, 10000);
    cr_assert_eq(rx.m.status, ZF_ST_FAILED);
    char text[ZF_TEXT_MAX + 1];
    zf_str_copy(text, sizeof text, rx.m.text);
    cr_assert_str_eq(text, "bad? byte, caf\xc3\xa9 kept, cut ??");
    zf_frames_close(&rx.f);
    zmq_close(w);
    zmq_close(c);
}

/* ------------------------------------------------------------------ attempts */

/* §4, §8.2: the lease number (`attempt` in worker messages) and the attempts a client sees
   (`attempt` in RESULT and STATUS) are two counters. An unprompted RECALLED uses a lease
   number but no attempt; the causes count attempts, as RESULT does (before, they said
   "attempt 2" for a RESULT with attempt 1). */
Test(spec, recalled_lease_is_not_an_attempt, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    void *w = registered_worker(&env, "recaller", "echo");
    void *c = peer(env.client_ep);
    uint64_t id = submit(c, "echo", 9, 0, 1);
    rx_t rx;
    expect_cmd(w, &rx, ZF_CMD_JOB, 10000);
    cr_assert_eq(rx.m.attempt, 1);
    zf_frames_close(&rx.f);
    send_simple(w, ZF_CMD_RECALLED, id, 1, 0);
    expect_cmd(w, &rx, ZF_CMD_JOB, 10000);
    cr_assert_eq(rx.m.id, id);
    cr_assert_eq(rx.m.attempt, 2, "a new lease number, never reused");
    zf_frames_close(&rx.f);
    send_simple(w, ZF_CMD_BYE, 0, 0, ZF_FLAG_BYE_NOW);
    expect_cmd(c, &rx, ZF_CMD_RESULT, 10000);
    cr_assert_eq(rx.m.status, ZF_ST_LOST, "max_attempts 1: one attempt used");
    cr_assert_eq(rx.m.attempt, 1, "attempts used, not the lease number");
    expect_text(&rx.m, "attempt 1: worker recaller lost: left");
    char text[ZF_TEXT_MAX + 1];
    zf_str_copy(text, sizeof text, rx.m.text);
    cr_assert(!strstr(text, "attempt 2"), "text: %s", text);
    zf_frames_close(&rx.f);
    zmq_close(w);
    zmq_close(c);
}

/* §8.1: a job whose deadline passed while it ran, and whose worker is then lost, expires
   instead of running again, and its causes say both why the attempt failed and why it does
   not run again (before: only the loss). */
Test(spec, requeued_job_past_its_deadline_says_why_it_expired, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    void *w = registered_worker(&env, "late", "echo");
    void *c = peer(env.client_ep);
    int64_t t0 = zt_now_ms();
    uint64_t id = submit(c, "echo", 3, 300, 0);
    rx_t rx;
    expect_cmd(w, &rx, ZF_CMD_JOB, 10000);
    zf_frames_close(&rx.f);
    /* not a timing assertion: the loss must only come after the deadline */
    int64_t left = t0 + 300 + 200 - zt_now_ms();
    if (left > 0)
        zt_pause_ms((int)left);
    send_simple(w, ZF_CMD_BYE, 0, 0, ZF_FLAG_BYE_NOW);
    expect_cmd(c, &rx, ZF_CMD_RESULT, 10000);
    cr_assert_eq(rx.m.id, id);
    cr_assert_eq(rx.m.status, ZF_ST_EXPIRED, "got %s", zf_state_name(rx.m.status));
    expect_text(&rx.m, "attempt 1: worker late lost: left");
    expect_text(&rx.m, "deadline passed before it could run again");
    zf_frames_close(&rx.f);
    zmq_close(w);
    zmq_close(c);
}

/* §8.1: a job still queued at its deadline ends with the text the spec gives. */
Test(spec, queued_job_past_its_deadline_expires_with_the_documented_text, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    void *c = peer(env.client_ep);
    uint64_t id = submit(c, "nobody-serves-this", 4, 100, 0);
    rx_t rx;
    expect_cmd(c, &rx, ZF_CMD_RESULT, 10000);
    cr_assert_eq(rx.m.id, id);
    cr_assert_eq(rx.m.status, ZF_ST_EXPIRED);
    cr_assert_eq(rx.m.attempt, 0);
    expect_text(&rx.m, "deadline passed while queued");
    zf_frames_close(&rx.f);
    zmq_close(c);
}

/* ------------------------------------------------------------------ client replies */

/* §6.5: the requester's REPLY comes first, then the RESULT pushed to the waiters (which
   include the requester when it submitted the job). */
Test(spec, cancel_reply_comes_before_the_cancelled_result, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    void *c = peer(env.client_ep);
    uint64_t id = submit(c, "nobody-serves-this", 8, 0, 0);
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_CANCEL);
    zf_msg_set_u64(&m, ZF_F_ID, id);
    zf_msg_set_u64(&m, ZF_F_TAG, 99);
    send_frames(c, &m, 0);
    rx_t rx;
    cr_assert(recv_msg(c, &rx, 10000));
    cr_assert_eq(rx.m.cmd, ZF_CMD_REPLY, "got %s first", zf_cmd_name(rx.m.cmd));
    cr_assert_eq(rx.m.tag, 99);
    cr_assert_eq(rx.m.code, ZF_OK);
    zf_frames_close(&rx.f);
    cr_assert(recv_msg(c, &rx, 10000));
    cr_assert_eq(rx.m.cmd, ZF_CMD_RESULT);
    cr_assert_eq(rx.m.tag, 8, "pushed with the SUBMIT's tag");
    cr_assert_eq(rx.m.status, ZF_ST_CANCELLED);
    expect_text(&rx.m, "cancelled by request");
    zf_frames_close(&rx.f);
    zmq_close(c);
}

/* §13.1: the STATS document has exactly the five top-level keys the spec lists, with
   `rejected` and `recalled` inside `broker`, `model` in each worker, and `security` saying
   CURVE is off. */
static long long stats_shape(msgpack_object *doc, const char *arg)
{
    (void)arg;
    if (doc->type != MSGPACK_OBJECT_MAP || doc->via.map.size != 5)
        return 1;
    const char *top[] = {"broker", "finished", "functions", "workers", "security"};
    for (size_t i = 0; i < 5; i++)
        if (!zt_mp_get(doc, top[i]))
            return 2;
    msgpack_object *b = zt_mp_get(doc, "broker");
    msgpack_object *rej = zt_mp_get(b, "rejected");
    if (!rej || rej->type != MSGPACK_OBJECT_MAP || rej->via.map.size != ZF__ECOUNT - 1 ||
        !zt_mp_get(rej, "bad argument") || !zt_mp_get(b, "recalled"))
        return 3;
    msgpack_object *ws = zt_mp_get(doc, "workers");
    if (ws->via.array.size != 1)
        return 4;
    msgpack_object *model = zt_mp_get(&ws->via.array.ptr[0], "model");
    if (!model || model->type != MSGPACK_OBJECT_STR)
        return 5;
    msgpack_object *idx = zt_mp_get(&ws->via.array.ptr[0], "index");
    if (!idx || idx->type != MSGPACK_OBJECT_POSITIVE_INTEGER || idx->via.u64 != 0)
        return 6;
    msgpack_object *curve = zt_mp_get(zt_mp_get(doc, "security"), "curve");
    if (!curve || curve->type != MSGPACK_OBJECT_POSITIVE_INTEGER || curve->via.u64 != 0)
        return 7;
    return 0;
}

Test(spec, stats_document_has_the_documented_sections, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 200, .workers = 1, .worker_args = ZT_ARGS("--device", "cpu:0")};
    zt_fleet_up(&env, &up);
    cr_assert_eq(zt_with_stats(&env, stats_shape, NULL), 0);
}

/* §4: an unpinned CPU worker reports index -1 and the machine's memory (not 0). */
static long long unpinned_worker(msgpack_object *doc, const char *arg)
{
    (void)arg;
    msgpack_object *ws = zt_mp_get(doc, "workers");
    if (!ws || ws->type != MSGPACK_OBJECT_ARRAY || ws->via.array.size != 1)
        return 1;
    msgpack_object *idx = zt_mp_get(&ws->via.array.ptr[0], "index");
    msgpack_object *mem = zt_mp_get(&ws->via.array.ptr[0], "memory");
    if (!idx || idx->type != MSGPACK_OBJECT_NEGATIVE_INTEGER || idx->via.i64 != -1)
        return 2;
    if (!mem || mem->type != MSGPACK_OBJECT_POSITIVE_INTEGER || mem->via.u64 == 0)
        return 3;
    return 0;
}

Test(spec, unpinned_cpu_worker_reports_index_minus_one_and_machine_memory, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t up = {.hb_ms = 200, .workers = 1, .worker_args = ZT_ARGS("--device", "cpu")};
    zt_fleet_up(&env, &up);
    cr_assert_eq(zt_with_stats(&env, unpinned_worker, NULL), 0);
}

/* ------------------------------------------------------------------ credits */

static void send_credits(void *w, bool with_credits, uint32_t credits, int payloads)
{
    zf_msg_t m;
    zf_msg_init(&m, ZF_CMD_CREDITS);
    if (with_credits)
        zf_msg_set_u64(&m, ZF_F_CREDITS, credits);
    send_frames(w, &m, payloads);
}

/* §7.12: the READY's answer says CREDITS is taken; CREDITED answers at once with what was
   granted (0 = 1, capped at 256), before the JOBs the new credits free; bad CREDITS are
   refused, and an unknown worker is told to register. */
Test(spec, credits_change_a_registered_workers_credits, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_up(&env, &(zt_fleet_t){.hb_ms = 200});
    void *w = peer(env.worker_ep);
    send_credits(w, true, 4, 0);
    rx_t rx;
    expect_cmd(w, &rx, ZF_CMD_RESET, 10000);
    zf_frames_close(&rx.f);
    const char *fn = "echo";
    ready(w, "crediter", &fn, 1);
    zmq_pollitem_t it = {w, 0, ZMQ_POLLIN, 0};
    cr_assert_eq(zmq_poll(&it, 1, 10000), 1);
    cr_assert_eq(zf_wire_recv(w, &rx.f, 0), 0);
    cr_assert_eq(zf_msg_decode(&rx.m, zmq_msg_data(&rx.f.part[0]), zmq_msg_size(&rx.f.part[0]),
                               NULL, NULL),
                 0);
    cr_assert_eq(rx.m.cmd, ZF_CMD_BHEARTBEAT);
    cr_assert(rx.m.flags & ZF_FLAG_CREDITS, "flags %u", rx.m.flags);
    zf_frames_close(&rx.f);
    cr_assert(zt_wait_workers(&env, 1, 10000));
    void *c = peer(env.client_ep);
    for (int i = 0; i < 3; i++)
        submit(c, "echo", 10 + (uint64_t)i, 0, 0);
    expect_cmd(w, &rx, ZF_CMD_JOB, 10000); /* one credit: one job */
    zf_frames_close(&rx.f);
    send_credits(w, true, 3, 0);
    cr_assert(recv_msg(w, &rx, 10000));
    cr_assert_eq(rx.m.cmd, ZF_CMD_CREDITED, "CREDITED comes first, got %s", zf_cmd_name(rx.m.cmd));
    cr_assert_eq(rx.m.credits, 3);
    zf_frames_close(&rx.f);
    for (int i = 0; i < 2; i++) {
        expect_cmd(w, &rx, ZF_CMD_JOB, 10000);
        zf_frames_close(&rx.f);
    }
    send_credits(w, true, 1000, 0);
    expect_cmd(w, &rx, ZF_CMD_CREDITED, 10000);
    cr_assert_eq(rx.m.credits, 256);
    zf_frames_close(&rx.f);
    send_credits(w, true, 0, 0);
    expect_cmd(w, &rx, ZF_CMD_CREDITED, 10000);
    cr_assert_eq(rx.m.credits, 1);
    zf_frames_close(&rx.f);
    send_credits(w, false, 0, 0);
    expect_cmd(w, &rx, ZF_CMD_ERROR, 10000);
    cr_assert_eq(rx.m.code, ZF_EMALFORMED);
    zf_frames_close(&rx.f);
    send_credits(w, true, 2, 1);
    expect_cmd(w, &rx, ZF_CMD_ERROR, 10000);
    cr_assert_eq(rx.m.code, ZF_EMALFORMED);
    zf_frames_close(&rx.f);
    cr_assert_eq(zt_count_workers(&env), 1, "bad CREDITS leave the worker registered");
    zmq_close(w);
    zmq_close(c);
}
