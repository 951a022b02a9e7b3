/*  Dynamic batching (issue 17): batched C handlers (tests/modules/batchmod.c) on real
    workers. Jobs are usually submitted before a worker joins, so the worker receives
    them together (its credits are at least max_batch) and forms one batch from them. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

TestSuite(batch, .fini = zt_kill_all);

static const char *batchmod(void)
{
    return zt_path("tests/zf_batchmod.so");
}

static pid_t batch_worker(const zt_env_t *env)
{
    pid_t w = zt_worker(env, 200, "--module", batchmod(), NULL);
    cr_assert(zt_wait_workers(env, 1, 8000), "the worker did not register");
    return w;
}

/* The batch size a bsize/blone output reports ("<n>|<input>"), or -1. */
static int batch_of(const zf_event_t *r)
{
    char buf[64];
    size_t n = r->output_len < sizeof buf - 1 ? r->output_len : sizeof buf - 1;
    memcpy(buf, r->output, n);
    buf[n] = '\0';
    return strchr(buf, '|') ? atoi(buf) : -1;
}

/* True when the output is "<n>|" followed by exactly input. */
static bool output_is_for(const zf_event_t *r, const char *input)
{
    const char *bar = memchr(r->output, '|', r->output_len);
    if (!bar)
        return false;
    size_t rest = r->output_len - (size_t)(bar + 1 - (const char *)r->output);
    return rest == strlen(input) && !memcmp(bar + 1, input, rest);
}

static uint64_t submit(zf_client_t *c, const char *fn, const char *input)
{
    uint64_t id;
    cr_assert_eq(zf_client_submit(c, fn, input, strlen(input), NULL, &id), 0, "%s",
                 zf_client_error(c));
    return id;
}

/* Many jobs at once: they run in batches (of at most max_batch), and every output is the
   one of its own job. */
Test(batch, outputs_match_jobs_and_batches_form_under_load, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 200});
    enum { N = 40 };
    uint64_t ids[N];
    char inputs[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(inputs[i], sizeof inputs[i], "p%d", i);
        ids[i] = submit(c, "bsize", inputs[i]);
    }
    batch_worker(&env);
    int biggest = 0;
    for (int i = 0; i < N; i++) {
        zf_event_t *r = zf_client_wait(c, ids[i], 20000);
        cr_assert_not_null(r, "%s", zf_client_error(c));
        cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "job %d: %s", i, r->text);
        cr_assert(output_is_for(r, inputs[i]), "job %d got %.*s", i, (int)r->output_len,
                  (const char *)r->output);
        int n = batch_of(r);
        cr_assert(n >= 1 && n <= 8, "batch of %d", n);
        biggest = n > biggest ? n : biggest;
        zf_event_destroy(&r);
    }
    cr_assert_eq(biggest, 8, "batches grew to max_batch under load");
    /* the sizes show in `zfleet stats` (per function) and `zfleet workers` (per worker and
       function), and in the STATS document */
    static char out[16384];
    cr_assert_eq(zt_cli(&env, out, sizeof out, "stats", NULL), 0);
    cr_assert(strstr(out, "bsize") && strstr(out, "batch mean") && strstr(out, " 5-8:"), "%s", out);
    cr_assert_eq(zt_cli(&env, out, sizeof out, "workers", NULL), 0);
    cr_assert(strstr(out, "    bsize") && strstr(out, "batch mean"), "%s", out);
    cr_assert_eq(zt_cli(&env, out, sizeof out, "--json", "stats", NULL), 0);
    cr_assert(strstr(out, "\"batch_mean\":") && strstr(out, "\"batch_hist\":["), "%s", out);
    zf_client_destroy(&c);
}

/* Submits one blone job, waits for it; its latency in ms. It ran in a batch of 1. */
static int64_t lone_latency(zf_client_t *c, const char *input)
{
    int64_t t0 = zt_now_ms();
    uint64_t id = submit(c, "blone", input);
    zf_event_t *r = zf_client_wait(c, id, 10000);
    int64_t took = zt_now_ms() - t0;
    cr_assert_not_null(r, "%s", zf_client_error(c));
    cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s", r->text);
    cr_assert_eq(batch_of(r), 1);
    cr_assert(output_is_for(r, input));
    zf_event_destroy(&r);
    return took;
}

/* At idle a lone job runs at once in a batch of 1: its function was quiet for max_delay
   (2 s for blone) before it, so it waits only 200 µs for a burst's mates, not max_delay.
   A job that comes within max_delay of the previous one waits for mates up to max_delay
   (the delay is honoured), then runs alone, and no longer. */
Test(batch, lone_job_at_idle_runs_at_once_and_a_close_one_waits_max_delay, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 200});
    batch_worker(&env);
    for (int i = 0; i < 2; i++) {
        if (i)
            zt_pause_ms(2200); /* quiet again */
        int64_t took = lone_latency(c, "alone");
        cr_assert_lt(took, 1000, "a lone job at idle took %lld ms (max_delay 2000)",
                     (long long)took);
    }
    int64_t took = lone_latency(c, "close behind"); /* within 2 s of the last one */
    cr_assert(took >= 1900 && took < 6000, "a close job took %lld ms (max_delay 2000)",
              (long long)took);
    zf_client_destroy(&c);
}

/* One job of a batch fails on its own; its batch-mates succeed. */
Test(batch, one_job_fails_inside_a_batch, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 200});
    const char *in[] = {"a0", "fail1", "a2", "fail3", "a4"};
    uint64_t ids[5];
    for (int i = 0; i < 5; i++)
        ids[i] = submit(c, "bsize", in[i]);
    batch_worker(&env);
    for (int i = 0; i < 5; i++) {
        zf_event_t *r = zf_client_wait(c, ids[i], 10000);
        cr_assert_not_null(r, "%s", zf_client_error(c));
        if (in[i][0] == 'f') {
            cr_assert_eq(r->status, ZFLEET_FAILED);
            char want[32];
            snprintf(want, sizeof want, "bad input: %s", in[i]);
            cr_assert_str_eq(r->text, want);
        } else {
            cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s: %s", in[i], r->text);
            cr_assert(output_is_for(r, in[i]));
            cr_assert_eq(batch_of(r), 5, "the five ran together");
        }
        zf_event_destroy(&r);
    }
    zf_client_destroy(&c);
}

/* A handler that fails the whole batch fails every job of it, with its message. */
Test(batch, whole_batch_failure_fails_every_job, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 200});
    const char *in[] = {"b0", "failall", "b2"};
    uint64_t ids[3];
    for (int i = 0; i < 3; i++)
        ids[i] = submit(c, "bsize", in[i]);
    batch_worker(&env);
    for (int i = 0; i < 3; i++) {
        zf_event_t *r = zf_client_wait(c, ids[i], 10000);
        cr_assert_not_null(r, "%s", zf_client_error(c));
        cr_assert_eq(r->status, ZFLEET_FAILED, "%s", in[i]);
        cr_assert_str_eq(r->text, "the batch failed");
        zf_event_destroy(&r);
    }
    /* the worker keeps serving */
    zf_event_t *r = zf_client_wait(c, submit(c, "bsize", "after"), 10000);
    cr_assert(r && r->status == ZFLEET_SUCCEEDED);
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

/* A job cancelled while its batch runs ends cancelled; its batch-mates succeed. */
Test(batch, cancel_inside_a_batch, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 200});
    const char *in[] = {"c0", "wait", "c2", "c3"};
    uint64_t ids[4];
    for (int i = 0; i < 4; i++)
        ids[i] = submit(c, "bsize", in[i]);
    batch_worker(&env);
    zt_pause_ms(400); /* the batch is running: the handler waits for the cancel */
    cr_assert_eq(zf_client_cancel(c, ids[1]), 0, "%s", zf_client_error(c));
    for (int i = 0; i < 4; i++) {
        zf_event_t *r = zf_client_wait(c, ids[i], 10000);
        cr_assert_not_null(r, "%s", zf_client_error(c));
        if (i == 1) {
            cr_assert_eq(r->status, ZFLEET_CANCELLED, "%s", zfleet_state_name(r->status));
        } else {
            cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s: %s", in[i], r->text);
            cr_assert(output_is_for(r, in[i]));
            cr_assert_eq(batch_of(r), 4);
        }
        zf_event_destroy(&r);
    }
    zf_client_destroy(&c);
}

/* SIGKILL mid-batch: every job of the batch is requeued (attempt 2) and succeeds once. */
Test(batch, sigkill_mid_batch_requeues_every_job, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 200});
    const char *in[] = {"d0", "slow", "d2", "d3"};
    uint64_t ids[4];
    for (int i = 0; i < 4; i++)
        ids[i] = submit(c, "bsize", in[i]);
    pid_t w = batch_worker(&env);
    zt_pause_ms(500); /* inside the 1.5 s call */
    zt_kill(w, SIGKILL);
    zt_worker(&env, 200, "--module", batchmod(), NULL);
    for (int i = 0; i < 4; i++) {
        zf_event_t *r = zf_client_wait(c, ids[i], 20000);
        cr_assert_not_null(r, "%s", zf_client_error(c));
        cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s: %s", in[i], r->text);
        cr_assert_eq(r->attempts, 2, "%s ran %u times", in[i], r->attempts);
        cr_assert(output_is_for(r, in[i]));
        cr_assert_eq(batch_of(r), 1, "a retry runs alone");
        zf_event_destroy(&r);
    }
    zf_client_destroy(&c);
}

/* A poison job (it kills every worker that runs it) is isolated: after the first batch
   dies, every job is retried alone, so the batch-mates succeed and only the poison job
   ends lost. */
Test(batch, poison_job_is_isolated_from_its_batch, .timeout = 90)
{
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 200});
    const char *in[] = {"e0", "e1", "poison", "e3"};
    uint64_t ids[4];
    for (int i = 0; i < 4; i++)
        ids[i] = submit(c, "bsize", in[i]);
    /* a fleet supervisor restarts the worker after each death */
    char log[200];
    snprintf(log, sizeof log, "%s/fleet.log", env.dir);
    const char *args[] = {"--fleet",     "--cpus",      "0",   "--gpus",   "none",     "--broker",
                          env.worker_ep, "--heartbeat", "200", "--module", batchmod(), NULL};
    zt_spawn("worker/zfleet-worker", log, args);
    for (int i = 0; i < 4; i++) {
        zf_event_t *r = zf_client_wait(c, ids[i], 60000);
        cr_assert_not_null(r, "%s", zf_client_error(c));
        if (i == 2) {
            cr_assert_eq(r->status, ZFLEET_LOST, "%s", zfleet_state_name(r->status));
            cr_assert_eq(r->attempts, 3);
        } else {
            cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s: %s", in[i], r->text);
            cr_assert_eq(r->attempts, 2, "%s: attempts %u", in[i], r->attempts);
            cr_assert(output_is_for(r, in[i]));
        }
        zf_event_destroy(&r);
    }
    zf_client_destroy(&c);
}

#if ZT_HAVE_PYTHON
/* zfleet.batched Python handlers: outputs matched to their jobs, per-job failure by an
   exception in place of an output, a whole-batch failure by raising, a wrong answer length. */
Test(batch, python_batched_handler, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 200});
    const char *in[] = {"q0", "fail1", "q2", "q3", "q4"};
    uint64_t ids[5];
    for (int i = 0; i < 5; i++)
        ids[i] = submit(c, "pbatch", in[i]);
    zt_worker(&env, 200, "--module", ZT_PY_DIR "/batch_handlers.py", NULL);
    cr_assert(zt_wait_workers(&env, 1, 15000), "the Python worker did not register");
    for (int i = 0; i < 5; i++) {
        zf_event_t *r = zf_client_wait(c, ids[i], 10000);
        cr_assert_not_null(r, "%s", zf_client_error(c));
        if (i == 1) {
            cr_assert_eq(r->status, ZFLEET_FAILED);
            cr_assert_str_eq(r->text, "ValueError: bad input: fail1");
        } else {
            cr_assert_eq(r->status, ZFLEET_SUCCEEDED, "%s: %s", in[i], r->text);
            cr_assert(output_is_for(r, in[i]));
            cr_assert_eq(batch_of(r), 5, "the five ran together");
        }
        zf_event_destroy(&r);
    }
    /* a raise fails every job of the batch with its message */
    uint64_t a = submit(c, "pbatch", "boom"), b = submit(c, "pbatch", "ok");
    zf_event_t *r = zf_client_wait(c, a, 10000);
    cr_assert(r && r->status == ZFLEET_FAILED && strstr(r->text, "RuntimeError: the batch blew up"),
              "%s", r ? r->text : zf_client_error(c));
    zf_event_destroy(&r);
    /* its batch-mate (both came within the delay, unless the machine was slow) */
    r = zf_client_wait(c, b, 10000);
    cr_assert_not_null(r, "%s", zf_client_error(c));
    if (r->status == ZFLEET_SUCCEEDED)
        cr_assert_eq(batch_of(r), 1, "it succeeded only in a batch of its own");
    else
        cr_assert(strstr(r->text, "RuntimeError: the batch blew up"), "%s", r->text);
    zf_event_destroy(&r);
    /* one output too few fails the batch and says why */
    r = zf_client_wait(c, submit(c, "plen", "x"), 10000);
    cr_assert(r && r->status == ZFLEET_FAILED &&
                  strstr(r->text, "returns a list of one output per job: 1 jobs, it returned 0"),
              "%s", r ? r->text : zf_client_error(c));
    zf_event_destroy(&r);
    /* a lone job is a batch of 1 */
    r = zf_client_wait(c, submit(c, "pbatch", "solo"), 10000);
    cr_assert(r && r->status == ZFLEET_SUCCEEDED && batch_of(r) == 1 && output_is_for(r, "solo"));
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}
#endif

/* A P5 image of w x h with a pattern that depends on seed. */
static size_t make_pgm(char *buf, size_t cap, int w, int h, int seed)
{
    int n = snprintf(buf, cap, "P5\n%d %d\n255\n", w, h);
    for (int i = 0; i < w * h && (size_t)n + (size_t)i < cap; i++)
        buf[n + i] = (char)((i * 7 + seed * 31 + (i / w) * 13) & 0xff);
    return (size_t)n + (size_t)(w * h);
}

/* sobel_batch (the batched sobel of docs/DEVICES.md, builtin:image_batch) gives sobel's
   outputs byte for byte, for images of mixed sizes in one batch; a bad image fails alone. */
Test(batch, sobel_batch_matches_sobel, .timeout = 60)
{
    zt_env_t env;
    zf_client_t *c = zt_start(&env, &(zt_fleet_t){.hb_ms = 200});
    enum { N = 6 };
    static char img[N][4096];
    size_t len[N];
    uint64_t ids[N], ref[N];
    for (int i = 0; i < N; i++) {
        len[i] = make_pgm(img[i], sizeof img[i], i % 3 ? 40 : 23, i % 3 ? 30 : 17, i);
        cr_assert_eq(zf_client_submit(c, "sobel_batch", img[i], len[i], NULL, &ids[i]), 0);
    }
    uint64_t bad;
    cr_assert_eq(zf_client_submit(c, "sobel_batch", "P6 no", 5, NULL, &bad), 0);
    zt_worker(&env, 200, "--module", "builtin:image_batch", NULL);
    cr_assert(zt_wait_workers(&env, 1, 8000));
    for (int i = 0; i < N; i++)
        cr_assert_eq(zf_client_submit(c, "sobel", img[i], len[i], NULL, &ref[i]), 0);
    for (int i = 0; i < N; i++) {
        zf_event_t *a = zf_client_wait(c, ids[i], 10000), *b = zf_client_wait(c, ref[i], 10000);
        cr_assert(a && b && a->status == ZFLEET_SUCCEEDED && b->status == ZFLEET_SUCCEEDED,
                  "%s / %s", a ? a->text : "-", b ? b->text : "-");
        cr_assert(a->output_len == b->output_len && !memcmp(a->output, b->output, a->output_len),
                  "image %d differs", i);
        zf_event_destroy(&a);
        zf_event_destroy(&b);
    }
    zf_event_t *r = zf_client_wait(c, bad, 10000);
    cr_assert(r && r->status == ZFLEET_FAILED && strstr(r->text, "sobel:"), "%s",
              r ? r->text : zf_client_error(c));
    zf_event_destroy(&r);
    zf_client_destroy(&c);
}

#if ZT_HAVE_PYTHON
/* zfleet.batched with a max_batch out of range: the worker exits 1 at load, and says why. */
Test(batch, python_bad_batch_settings_refuse_the_module, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    pid_t w = zt_worker(&env, 200, "--module", ZT_PY_DIR "/batch_bad.py", NULL);
    int status = zt_wait_exit(w, 15000);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %#x", status);
    char path[200], text[8192];
    snprintf(path, sizeof path, "%s/workers.log", env.dir);
    zt_read_file(path, text, sizeof text);
    cr_assert(strstr(text, "FUNCTIONS['seg']: batched needs a callable, max_batch 1 to 256 and "
                           "max_delay_ms 0 to 60000"),
              "%s", text);
}
#endif

/* A C batched function with max_batch over 256: the worker exits 1 at load, and says why. */
Test(batch, c_bad_max_batch_refuses_the_module, .timeout = 60)
{
    zt_env_t env;
    zt_env_init(&env);
    zt_broker(&env, 200, NULL);
    pid_t w = zt_worker(&env, 200, "--module", zt_path("tests/zf_batchbad.so"), NULL);
    int status = zt_wait_exit(w, 15000);
    cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %#x", status);
    char path[200], text[8192];
    snprintf(path, sizeof path, "%s/workers.log", env.dir);
    zt_read_file(path, text, sizeof text);
    cr_assert(strstr(text, "module batchbad: function big: max_batch 300 is over 256"), "%s", text);
}
