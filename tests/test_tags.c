/*  Tags (issue 18): up to 8 small key=value pairs a submitter puts on a job, kept with it
    (journaled) and returned by status and wait; malformed tags are refused, by the client
    library before anything is sent and by the broker for a raw peer, with a clear reason. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "harness.h"
#include "zf_proto.h"
#include "zf_wire.h"

TestSuite(tags, .fini = zt_kill_all);

static uint64_t submit_tagged(zf_client_t *c, const char *fn, const char *tags)
{
    zf_submit_opts_t o = {.tags = tags};
    uint64_t id = 0;
    cr_assert_eq(zf_client_submit(c, fn, "x", 1, &o, &id), 0, "%s", zf_client_error(c));
    return id;
}

Test(tags, tags_round_trip_through_status_and_wait, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t fleet = {.hb_ms = 200, .workers = 1};
    zf_client_t *c = zt_start(&env, &fleet);
    /* a function nobody serves stays queued: STATUS carries the tags */
    uint64_t q = submit_tagged(c, "nobody_serves_this", "team=web,image=42");
    zf_event_t *e = zf_client_get(c, q);
    cr_assert(e && e->type == ZF_EV_STATUS);
    cr_assert_str_eq(e->tags, "team=web,image=42");
    zf_event_destroy(&e);
    /* and RESULT (wait) carries them too */
    uint64_t id = submit_tagged(c, "echo", "user=u1");
    e = zf_client_wait(c, id, 10000);
    cr_assert(e && e->type == ZF_EV_RESULT && e->status == ZFLEET_SUCCEEDED);
    cr_assert_str_eq(e->tags, "user=u1");
    zf_event_destroy(&e);
    /* a job without tags reads "" */
    id = submit_tagged(c, "echo", NULL);
    e = zf_client_wait(c, id, 10000);
    cr_assert(e && e->type == ZF_EV_RESULT);
    cr_assert_str_empty(e->tags);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
}

Test(tags, cli_tags_show_in_json_and_survive_kill_9, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    char data[160];
    snprintf(data, sizeof data, "%s/data", env.dir);
    pid_t b = zt_broker(&env, 200, "--data", data, NULL);
    char out[2048];
    cr_assert_eq(zt_cli(&env, out, sizeof out, "--json", "submit", "echo", "x", "--tag", "a=1",
                        "--tag", "b=two", NULL),
                 0, "%s", out);
    unsigned long long id = 0;
    cr_assert(sscanf(strstr(out, "\"id\":"), "\"id\":%llu", &id) == 1 && id, "%s", out);
    zt_kill(b, SIGKILL);
    zt_broker(&env, 200, "--data", data, NULL);
    char ids[32];
    snprintf(ids, sizeof ids, "%llu", id);
    cr_assert_eq(zt_cli(&env, out, sizeof out, "--json", "status", ids, NULL), 0, "%s", out);
    cr_assert(strstr(out, "\"tags\":{\"a\":\"1\",\"b\":\"two\"}"), "%s", out);
    /* no worker until now: the restored job runs, and its result has them */
    zt_worker(&env, 200, NULL);
    cr_assert_eq(zt_cli(&env, out, sizeof out, "--json", "wait", ids, "--timeout", "10000", NULL),
                 0, "%s", out);
    cr_assert(strstr(out, "\"tags\":{\"a\":\"1\",\"b\":\"two\"}"), "%s", out);
}

/* Each malformed tag set: the library refuses it (usage, nothing sent), the CLI exits 2
   with the reason, and the broker refuses it from a raw peer (bad argument). */
static const char *const bad_tags[][2] = {
    {"a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,i=9", "more than 8 tags"},
    {"novalue", "key=value"},
    {"=v", "must not be empty"},
    {"k=", "must not be empty"},
    {"k=1,,j=2", "key=value"},
    {"k=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "longer than 63"},
    {"k=a\tb", "control"},
};

Test(tags, malformed_tags_are_refused_with_a_reason, .timeout = 60)
{
    zt_env_t env;
    zt_fleet_t fleet = {.hb_ms = 200};
    zf_client_t *c = zt_start(&env, &fleet);
    void *ctx = zmq_ctx_new();
    void *raw = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(raw, ZMQ_LINGER, &zero, sizeof zero);
    cr_assert_eq(zmq_connect(raw, env.client_ep), 0);
    for (size_t i = 0; i < sizeof bad_tags / sizeof bad_tags[0]; i++) {
        const char *tags = bad_tags[i][0], *why = bad_tags[i][1];
        zf_submit_opts_t o = {.tags = tags};
        uint64_t id = 0;
        cr_assert_eq(zf_client_submit(c, "echo", "x", 1, &o, &id), -1, "'%s' accepted", tags);
        cr_assert_eq(zf_client_errcode(c), ZF_CE_USAGE);
        cr_assert(strstr(zf_client_error(c), why), "'%s': %s", tags, zf_client_error(c));

        zf_msg_t m;
        zf_msg_init(&m, ZF_CMD_SUBMIT);
        zf_msg_set_u64(&m, ZF_F_TAG, 100 + i);
        zf_msg_set_str(&m, ZF_F_FN, "echo");
        zf_msg_set_str(&m, ZF_F_TAGS, tags);
        char buf[ZF_HEADER_MAX];
        int n = zf_msg_encode(&m, buf, sizeof buf);
        cr_assert_gt(n, 0);
        cr_assert_eq(zmq_send(raw, buf, (size_t)n, ZMQ_SNDMORE), n);
        cr_assert_eq(zmq_send(raw, "p", 1, 0), 1);
        zf_frames_t f;
        zmq_pollitem_t it = {raw, 0, ZMQ_POLLIN, 0};
        cr_assert_eq(zmq_poll(&it, 1, 5000), 1, "no answer to '%s'", tags);
        cr_assert_eq(zf_wire_recv(raw, &f, 0), 0);
        zf_msg_t r;
        cr_assert_eq(zf_msg_decode(&r, zmq_msg_data(&f.part[0]), zmq_msg_size(&f.part[0]), NULL,
                                   NULL),
                     0);
        cr_assert_eq(r.cmd, ZF_CMD_REJECTED, "'%s': %s", tags, zf_cmd_name(r.cmd));
        cr_assert_eq(r.code, ZF_EBADARG);
        char text[ZF_TEXT_MAX + 1];
        zf_str_copy(text, sizeof text, r.text);
        cr_assert(strstr(text, why), "'%s': broker said '%s'", tags, text);
        zf_frames_close(&f);
    }
    char out[512], err[512];
    cr_assert_eq(zt_cli_err(&env, out, sizeof out, err, sizeof err, "submit", "echo", "x", "--tag",
                            "novalue", NULL),
                 2);
    cr_assert(strstr(err, "key=value"), "%s", err);
    cr_assert_eq(zt_cli_err(&env, out, sizeof out, err, sizeof err, "submit", "echo", "x", "--tag",
                            "a=1,b=2", NULL),
                 2);
    cr_assert(strstr(err, "','"), "%s", err);
    cr_assert_eq(zt_broker_counter(&env, "accepted"), 0, "a malformed job was accepted");
    zmq_close(raw);
    zf_client_destroy(&c);
}

/* A journal written before tags and the listing (tests/data/journal-2026-11: three queued
   jobs, "oldfn" twice and "other", by the broker of commit 73e4ed8) replays: the jobs come
   back without tags, and the listing (built on the replay) finds them. */
Test(tags, journal_from_before_tags_replays, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    char here[512], src[1100], data[160], cmd[1600];
    snprintf(here, sizeof here, "%s", __FILE__); /* (relative to the build directory) */
    *strrchr(here, '/') = 0;
    if (here[0] == '/')
        snprintf(src, sizeof src, "%s", here);
    else
        snprintf(src, sizeof src, "%s/%s", zt_build_dir(), here);
    snprintf(data, sizeof data, "%s/data", env.dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/data/journal-2026-11/journal %s/journal", data,
             src, data);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    zt_broker(&env, 200, "--data", data, NULL);
    zf_client_t *c = zt_client(&env);
    zf_event_t *e = zf_client_jobs(c, &(zf_jobs_query_t){.state = ZFLEET_QUEUED});
    cr_assert(e && e->type == ZF_EV_REPLY, "%s", zf_client_error(c));
    const char *doc = e->output;
    size_t n = e->output_len;
    int found = 0;
    for (size_t i = 0; i + 5 <= n; i++)
        found += memcmp(doc + i, "oldfn", 5) == 0;
    cr_assert_eq(found, 2, "listing: %.*s", (int)n, doc);
    zf_event_destroy(&e);
    e = zf_client_jobs(c, &(zf_jobs_query_t){.state = -1, .function = "other"});
    cr_assert(e);
    zf_event_destroy(&e);
    zf_client_destroy(&c);
    char out[4096];
    cr_assert_eq(zt_cli(&env, out, sizeof out, "--json", "jobs", "--function", "other", NULL), 0);
    unsigned long long id = 0;
    cr_assert(sscanf(strstr(out, "\"id\":"), "\"id\":%llu", &id) == 1, "%s", out);
    char ids[32];
    snprintf(ids, sizeof ids, "%llu", id);
    cr_assert_eq(zt_cli(&env, out, sizeof out, "--json", "status", ids, NULL), 0, "%s", out);
    cr_assert(strstr(out, "\"status\":\"queued\"") && strstr(out, "\"tags\":{}"), "%s", out);
}
