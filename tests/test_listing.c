/*  Job listing (issue 18): `JOBS` pages through the broker's jobs in id order from a cursor,
    with filters (state, function, tag), each page bounded in the work it costs the broker. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

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
