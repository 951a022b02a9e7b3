/*  Job listing (issue 18): `JOBS` pages through the broker's jobs in id order from a cursor,
    with filters (state, function, tag), each page bounded in the work it costs the broker. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "harness.h"
#include "zf_wire.h"

TestSuite(listing, .fini = zt_kill_all);

/* Submits n jobs asynchronously (a window of 1000 unanswered), fn "la" or "lb" by parity,
   every 100th tagged mark=yes; waits for every acceptance. */
static void submit_many(zf_client_t *c, int n)
{
    int sent = 0, accepted = 0;
    while (accepted < n) {
        while (sent < n && sent - accepted < 1000) {
            zf_submit_opts_t o = {.tags = sent % 100 == 0 ? "mark=yes,k=v" : NULL};
            uint64_t tag;
            cr_assert_eq(zf_client_submit_async(c, sent % 2 ? "lb" : "la", "x", 1, &o, &tag), 0,
                         "%s", zf_client_error(c));
            sent++;
        }
        zf_event_t *e = zf_client_next(c, 5000);
        cr_assert(e, "no acceptance after %d of %d", accepted, n);
        cr_assert_neq(e->type, ZF_EV_REJECTED, "rejected: %s", e->text);
        accepted += e->type == ZF_EV_ACCEPTED;
        zf_event_destroy(&e);
    }
}

typedef struct {
    uint64_t jobs, pages, last_id, next;
    bool ordered;
} pages_t;

/* Walks every page of the query; checks ids increase across pages. */
static pages_t walk(zf_client_t *c, zf_jobs_query_t q)
{
    pages_t p = {.ordered = true};
    do {
        zf_event_t *e = zf_client_jobs(c, &q);
        cr_assert(e && e->type == ZF_EV_REPLY, "%s", zf_client_error(c));
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        cr_assert_eq(msgpack_unpack_next(&up, e->output, e->output_len, &off),
                     MSGPACK_UNPACK_SUCCESS);
        msgpack_object *jobs = zt_mp_get(&up.data, "jobs");
        msgpack_object *next = zt_mp_get(&up.data, "next");
        msgpack_object *scanned = zt_mp_get(&up.data, "scanned");
        cr_assert(jobs && jobs->type == MSGPACK_OBJECT_ARRAY && next && scanned);
        cr_assert_leq(scanned->via.u64, 10000, "a page looked at %llu jobs",
                      (unsigned long long)scanned->via.u64);
        cr_assert_leq(jobs->via.array.size, q.limit ? q.limit : 100);
        for (uint32_t i = 0; i < jobs->via.array.size; i++) {
            uint64_t id = zt_mp_get(&jobs->via.array.ptr[i], "id")->via.u64;
            p.ordered = p.ordered && id > p.last_id;
            p.last_id = id;
        }
        p.jobs += jobs->via.array.size;
        p.pages++;
        q.after = next->via.u64;
        msgpack_unpacked_destroy(&up);
        zf_event_destroy(&e);
    } while (q.after && p.pages < 100000);
    return p;
}

Test(listing, pages_over_100000_jobs_by_id_with_filters, .timeout = 300)
{
    zt_env_t env;
    zt_fleet_t fleet = {.hb_ms = 500, .broker_args = ZT_ARGS("--no-journal")};
    zf_client_t *c = zt_start(&env, &fleet);
    submit_many(c, 100000);
    pages_t all = walk(c, (zf_jobs_query_t){.limit = 1000, .state = -1});
    cr_assert_eq(all.jobs, 100000, "listed %llu", (unsigned long long)all.jobs);
    cr_assert(all.ordered, "ids not increasing across pages");
    cr_assert_eq(all.pages, 100);
    pages_t fa = walk(c, (zf_jobs_query_t){.limit = 1000, .state = -1, .function = "la"});
    cr_assert_eq(fa.jobs, 50000);
    cr_assert(fa.ordered);
    /* a sparse filter: pages hold few jobs (each looks at 10,000 at most), all are found */
    pages_t tagged = walk(c, (zf_jobs_query_t){.limit = 1000, .state = -1, .tag = "mark=yes"});
    cr_assert_eq(tagged.jobs, 1000);
    cr_assert_geq(tagged.pages, 10, "a page scanned more than 10,000 jobs");
    pages_t both =
        walk(c, (zf_jobs_query_t){.limit = 7, .state = -1, .function = "la", .tag = "k=v"});
    cr_assert_eq(both.jobs, 1000); /* (every 100th is even: all of them are "la") */
    pages_t queued = walk(c, (zf_jobs_query_t){.limit = 1000, .state = ZFLEET_QUEUED});
    cr_assert_eq(queued.jobs, 100000);
    pages_t done = walk(c, (zf_jobs_query_t){.limit = 1000, .state = ZFLEET_SUCCEEDED});
    cr_assert_eq(done.jobs, 0);
    zf_client_destroy(&c);
}

Test(listing, after_cursor_and_states_follow_the_jobs, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t fleet = {.hb_ms = 200, .workers = 1};
    zf_client_t *c = zt_start(&env, &fleet);
    uint64_t ids[6];
    for (int i = 0; i < 6; i++) {
        zf_submit_opts_t o = {.tags = i < 3 ? "batch=one" : "batch=two"};
        cr_assert_eq(zf_client_submit(c, i % 2 ? "echo" : "parked", "x", 1, &o, &ids[i]), 0);
    }
    for (int i = 1; i < 6; i += 2) {
        zf_event_t *e = zf_client_wait(c, ids[i], 10000);
        cr_assert(e && e->status == ZFLEET_SUCCEEDED);
        zf_event_destroy(&e);
    }
    pages_t ok = walk(c, (zf_jobs_query_t){.state = ZFLEET_SUCCEEDED});
    cr_assert_eq(ok.jobs, 3);
    pages_t parked = walk(c, (zf_jobs_query_t){.state = ZFLEET_QUEUED, .function = "parked"});
    cr_assert_eq(parked.jobs, 3);
    pages_t two = walk(c, (zf_jobs_query_t){.state = -1, .tag = "batch=two"});
    cr_assert_eq(two.jobs, 3);
    /* pages of one: every job once, in id order, the cursor carrying on */
    pages_t ones = walk(c, (zf_jobs_query_t){.limit = 1, .state = -1});
    cr_assert_eq(ones.jobs, 6);
    cr_assert(ones.ordered);
    /* after the largest id: nothing, and done */
    uint64_t max = 0;
    for (int i = 0; i < 6; i++)
        max = ids[i] > max ? ids[i] : max;
    pages_t none = walk(c, (zf_jobs_query_t){.after = max, .state = -1});
    cr_assert_eq(none.jobs, 0);
    cr_assert_eq(none.pages, 1);
    zf_client_destroy(&c);
}

Test(listing, bad_listing_requests_are_refused, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t fleet = {.hb_ms = 200};
    zf_client_t *c = zt_start(&env, &fleet);
    zf_event_t *e = zf_client_jobs(c, &(zf_jobs_query_t){.state = -1, .tag = "a=1,b=2"});
    cr_assert_null(e);
    cr_assert_eq(zf_client_errcode(c), ZF_CE_USAGE);
    e = zf_client_jobs(c, &(zf_jobs_query_t){.state = -1, .limit = 5000});
    cr_assert_null(e);
    cr_assert_eq(zf_client_brokercode(c), ZF_BROKER_BAD_ARGUMENT, "%s", zf_client_error(c));
    cr_assert(strstr(zf_client_error(c), "limit"), "%s", zf_client_error(c));
    e = zf_client_jobs(c, &(zf_jobs_query_t){.state = 42});
    cr_assert_null(e);
    cr_assert(strstr(zf_client_error(c), "state"), "%s", zf_client_error(c));
    char out[256], err[512];
    cr_assert_eq(zt_cli_err(&env, out, sizeof out, err, sizeof err, "jobs", "--state", "nope",
                            NULL),
                 2);
    cr_assert(strstr(err, "--state"), "%s", err);
    cr_assert_eq(zt_cli_err(&env, out, sizeof out, err, sizeof err, "jobs", "--limit", "0", NULL),
                 2);
    cr_assert_eq(zt_cli(&env, out, sizeof out, "jobs", NULL), 0);
    zf_client_destroy(&c);
}

/* ------------------------------------------------------------------ pacing */

/* Sends n JOBS requests (limit 1000, tags first_tag..) on a raw DEALER, back to back. */
static void send_pages(void *s, int n, uint64_t first_tag)
{
    for (int i = 0; i < n; i++) {
        zf_msg_t m;
        zf_msg_init(&m, ZF_CMD_JOBS);
        zf_msg_set_u64(&m, ZF_F_TAG, first_tag + (uint64_t)i);
        zf_msg_set_u64(&m, ZF_F_LIMIT, 1000);
        cr_assert_eq(zf_wire_send_blocking(s, &m, NULL), 0);
    }
}

typedef struct {
    int pages, refused;
    bool in_order; /* pages answered in the order they were asked for */
} answers_t;

/* Reads the answers to n JOBS requests: pages (REPLY, code 0) and refusals (ERROR
   EQUEUE_FULL, with their reason); anything else fails the test. */
static answers_t read_answers(void *s, int n)
{
    answers_t a = {.in_order = true};
    uint64_t last_page = 0;
    for (int k = 0; k < n; k++) {
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        cr_assert_eq(zmq_poll(&it, 1, 20000), 1, "no answer after %d of %d", k, n);
        zf_frames_t f;
        cr_assert_eq(zf_wire_recv(s, &f, 0), 0);
        zf_msg_t m;
        cr_assert_eq(zf_msg_decode(&m, zmq_msg_data(&f.part[0]), zmq_msg_size(&f.part[0]), NULL,
                                   NULL),
                     0);
        if (m.cmd == ZF_CMD_REPLY) {
            cr_assert_eq(m.code, 0);
            cr_assert_eq(f.n, 2, "a page has its document");
            a.in_order = a.in_order && m.tag > last_page;
            last_page = m.tag;
            a.pages++;
        } else {
            cr_assert_eq(m.cmd, ZF_CMD_ERROR, "command 0x%x", m.cmd);
            cr_assert_eq(m.code, ZF_EQUEUE_FULL, "code %u: %.*s", (unsigned)m.code, (int)m.text.len,
                         m.text.ptr);
            cr_assert(m.text.len && memmem(m.text.ptr, m.text.len, "retry", 5), "%.*s",
                      (int)m.text.len, m.text.ptr);
            a.refused++;
        }
        zf_frames_close(&f);
    }
    return a;
}

/* While a job runs, a client asking for pages back to back gets them at the paced rate:
   8 wait their turn in the broker and are answered in order, the rest are refused with
   EQUEUE_FULL at once; the running job is not disturbed, and a client that leaves with
   pages waiting costs nothing. With no job running, pages are answered at once. */
Test(listing, back_to_back_pages_wait_their_turn_while_jobs_run, .timeout = 120)
{
    zt_env_t env;
    zt_fleet_t fleet = {.hb_ms = 500, .workers = 1, .broker_args = ZT_ARGS("--no-journal")};
    zf_client_t *c = zt_start(&env, &fleet);
    submit_many(c, 20000); /* nobody serves them: every page has 1000 to pack */
    uint64_t spin;
    cr_assert_eq(zf_client_submit(c, "spin", "10000", 5, NULL, &spin), 0);
    cr_assert(zt_wait_running(c, spin, 10000), "the spin job did not start");
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    cr_assert_eq(zmq_connect(s, env.client_ep), 0);
    send_pages(s, 100, 1);
    answers_t a = read_answers(s, 100);
    cr_log_info("while a job runs: %d pages answered, %d refused", a.pages, a.refused);
    cr_assert(a.in_order, "pages answered out of order");
    /* one answered at once, 8 waited their turn (the most one connection may have waiting),
       give or take one served while the rest were still arriving */
    cr_assert(a.pages >= 9 && a.pages <= 12, "%d pages, %d refused", a.pages, a.refused);
    cr_assert_geq(zt_broker_counter(&env, "jobs_paced"), 8);
    cr_assert_eq(zt_broker_counter(&env, "jobs_refused"), a.refused);
    /* a client that asks and leaves: its pages wait, are sent to nobody, and the broker goes
       on; a flood from one client does not keep another's page out */
    send_pages(s, 64, 1000);
    zmq_close(s);
    zf_event_t *e = zf_client_jobs(c, &(zf_jobs_query_t){.limit = 10, .state = -1});
    cr_assert(e && e->type == ZF_EV_REPLY, "%s", zf_client_error(c));
    zf_event_destroy(&e);
    int64_t until = zt_now_ms() + 10000; /* (its last pages may reach the broker after ours) */
    while (zt_broker_counter(&env, "jobs_waiting") > 0 && zt_now_ms() < until)
        zt_pause_ms(20);
    cr_assert_eq(zt_broker_counter(&env, "jobs_waiting"), 0, "pages for nobody still wait");
    zf_event_t *r = zf_client_wait(c, spin, 20000);
    cr_assert(r && r->status == ZFLEET_SUCCEEDED, "the running job: %s",
              r ? zfleet_state_name(r->status) : zf_client_error(c));
    zf_event_destroy(&r);
    /* nothing runs: pages back to back are all answered, none waits */
    long long paced = zt_broker_counter(&env, "jobs_paced");
    s = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    cr_assert_eq(zmq_connect(s, env.client_ep), 0);
    send_pages(s, 100, 1);
    a = read_answers(s, 100);
    cr_assert_eq(a.pages, 100, "%d refused with no job running", a.refused);
    cr_assert_eq(zt_broker_counter(&env, "jobs_paced"), paced, "pages waited with no job running");
    zmq_close(s);
    zf_client_destroy(&c);
}
