/*  zfleet — the command line client. See usage() and README.md.

    Exit codes: 0 ok (a waited-for job succeeded), 1 the job ended in another state
    (output_lost included: its output is gone, nothing is written to --out),
    2 usage or input error (a word too many or too few, an unreadable --file), 3 timed out
    waiting, 4 broker unreachable, 5 the broker refused (queue full, payload too large,
    unknown job, ...). Every error is one line on stderr.
*/
#include <errno.h>
#include <getopt.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zf_bench.h"
#include "zf_util.h"
#include "zf_json.h"
#include "zf_top.h"
#include "zfleet.h"
#include "zf_cert.h"

enum {
    EXIT_JOB_FAILED = 1,
    EXIT_USAGE = 2,
    EXIT_TIMEOUT = 3,
    EXIT_UNREACHABLE = 4,
    EXIT_REFUSED = 5
};

typedef struct {
    const char *broker;
    int json;
    int timeout_ms; /* how long to wait for a result; -1 = forever */
    int wait;
    const char *file, *out;
    zf_submit_opts_t opts;
    int purge;
    const char *key, *broker_key;   /* CURVE key files (or $ZFLEET_KEY, $ZFLEET_BROKER_KEY) */
    int once;                       /* top: one frame */
    int interval_ms;                /* top: refresh */
    char tags[ZFLEET_TAGS_MAX + 2]; /* submit: the --tag pairs, joined by ',' (opts.tags) */
    char then[700];                 /* submit: the --then steps, joined by ',' (opts.then) */
    zf_jobs_query_t jobs;           /* jobs: the filters (jobs.tag: the --tag, from tags) */
} cli_t;

static void usage(FILE *f)
{
    fputs("usage: zfleet [--broker EP] [--json] COMMAND [ARGS]\n"
          "commands:\n"
          "  submit FUNCTION [DATA | --file PATH] [--wait] [--timeout MS] [--out PATH]\n"
          "         [--priority N] [--device any|cpu|gpu] [--run-timeout MS]\n"
          "         [--deadline MS] [--max-attempts N] [--forget]\n"
          "         [--retries N] [--retry-backoff-ms MS] [--delay-ms MS]\n"
          "         [--not-before WALL_MS]\n"
          "         [--then FUNCTION[@cpu|@gpu][;timeout=MS][;retries=N]]...\n"
          "                                (pipeline: one per further step, with its options)\n"
          "  wait ID [--timeout MS] [--out PATH]   wait for a job's result\n"
          "  get ID                                 a job's result, or its state if running\n"
          "  status ID                              same as get\n"
          "  cancel ID                              cancel a queued or running job\n"
          "  stats                                  queues, counters and workers\n"
          "  workers                                connected workers and their devices\n"
          "  dead [--purge]                         list (or clear) the dead-letter list\n"
          "  retry ID                               requeue a dead-letter job\n"
          "  jobs [--state S] [--function F] [--tag K=V] [--limit N] [--after ID]\n"
          "                                         list jobs, a page at a time, by id\n"
          "  bench WORKLOAD [options]               measure (see zfleet bench --help)\n"
          "  top [--once] [--interval MS]           live view: functions (queued, running,\n"
          "                                         rate/s, p50/p99), workers, uptime,\n"
          "                                         journal; q quits, space refreshes;\n"
          "                                         --once prints one frame\n"
          "  keygen NAME                            write a CURVE keypair: NAME.key (public)\n"
          "                                         and NAME.key_secret (mode 0600)\n"
          "options:\n"
          "  --broker EP     broker client endpoint (env ZFLEET_BROKER, "
          "default " ZFLEET_DEFAULT_BROKER ")\n"
          "  --json          one JSON document on stdout, for scripts\n"
          "  --key FILE      this client's CURVE key, a NAME.key_secret (env ZFLEET_KEY)\n"
          "  --broker-key FILE\n"
          "                  the broker's public key, its NAME.key (env ZFLEET_BROKER_KEY)\n"
          "  --timeout MS    how long wait/--wait waits for the result (default forever)\n"
          "  --forget        submit --wait: the broker drops the result once it has pushed\n"
          "                  it to this command (a later get/wait answers unknown job)\n"
          "  --once          top: print one frame on stdout and exit (4 if unreachable)\n"
          "  --interval MS   top: refresh every MS (100 to 3600000, default 1000)\n"
          "exit codes: 0 ok, 1 job did not succeed (output_lost too), 2 usage or unreadable\n"
          "  input, 3 timed out, 4 broker unreachable or this key refused (CURVE), 5 refused\n"
          "  by the broker (or payload too large)\n",
          f);
}

/* The exit code for a client error class. */
static int exit_code(zf_client_errcode_t e)
{
    return e == ZF_CE_TIMEOUT                            ? EXIT_TIMEOUT
           : e == ZF_CE_UNREACHABLE || e == ZF_CE_DENIED ? EXIT_UNREACHABLE
           : e == ZF_CE_USAGE                            ? EXIT_USAGE
                                                         : EXIT_REFUSED;
}

/* Reports the client's last error in one line on stderr (and, with --json, one document
   on stdout). Returns the exit code for it. */
static int fail_client(cli_t *cli, zf_client_t *c)
{
    zf_client_errcode_t e = zf_client_errcode(c);
    /* a wait that ran out: the job itself goes on, and that belongs in the same line */
    char text[600];
    snprintf(text, sizeof text, "%s%s", zf_client_error(c),
             e == ZF_CE_TIMEOUT ? "; it is still queued or running" : "");
    if (cli->json) {
        printf("{\"error\":");
        zf_json_string(stdout, text, strlen(text));
        printf(",\"code\":%d}\n", zf_client_brokercode(c));
    }
    fprintf(stderr, "zfleet: %s\n", text);
    return exit_code(e);
}

static int parse_id(const char *s, uint64_t *id)
{
    if (!s || zf_parse_u64(s, UINT64_MAX, id) < 0) {
        fprintf(stderr, "zfleet: expected a job id, got '%s'\n", s ? s : "");
        return -1;
    }
    return 0;
}

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "zfleet: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The whole of path (a regular file, a pipe, /dev/stdin...), or NULL with one line on
   stderr: a directory or a failing read is an input error, never an empty payload. */
static void *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "zfleet: cannot read %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                free(buf);
                buf = NULL;
            } else {
                buf = b;
            }
        }
    }
    /* fopen accepts a directory on Linux; its first read fails with EISDIR */
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (!buf || err) {
        fprintf(stderr, "zfleet: cannot read %s: %s\n", path,
                buf ? strerror(err) : "out of memory");
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* ------------------------------------------------------------------ printing results */

/* `,"tags":{"k":"v",...}`: the job's tags (well formed: the broker checked them). */
static void print_tags_json(const char *tags)
{
    printf(",\"tags\":{");
    for (const char *p = tags; *p;) {
        size_t n = strcspn(p, ","), k = strcspn(p, "=");
        printf("%s", p == tags ? "" : ",");
        zf_json_string(stdout, p, k);
        printf(":");
        zf_json_string(stdout, p + k + 1, n - k - 1);
        p += n + (p[n] == ',');
    }
    printf("}");
}

static void print_result_json(const zf_event_t *e, const char *out_path)
{
    printf("{\"id\":%llu,\"status\":\"%s\",\"function\":", (unsigned long long)e->id,
           zfleet_state_name(e->status));
    zf_json_string(stdout, e->function, strlen(e->function));
    printf(",\"attempts\":%u,\"duration_us\":%llu,\"worker\":", e->attempts,
           (unsigned long long)e->duration_us);
    zf_json_string(stdout, e->worker, strlen(e->worker));
    printf(",\"device\":");
    zf_json_string(stdout, e->device, strlen(e->device));
    printf(",\"error\":");
    zf_json_string(stdout, e->text, strlen(e->text));
    printf(",\"output_bytes\":%zu", e->output_len);
    print_tags_json(e->tags);
    if (e->steps)
        printf(",\"step\":%u,\"steps\":%u", e->step, e->steps);
    if (out_path) {
        printf(",\"output_file\":");
        zf_json_string(stdout, out_path, strlen(out_path));
    } else if (zf_json_is_text(e->output, e->output_len)) {
        printf(",\"output\":");
        zf_json_string(stdout, e->output, e->output_len);
    }
    printf("}\n");
}

static void print_result_human(const zf_event_t *e, const char *out_path)
{
    printf("job %llu %s", (unsigned long long)e->id, zfleet_state_name(e->status));
    if (e->worker[0])
        printf(" on %s (%s), %.3f ms", e->worker, e->device, (double)e->duration_us / 1000.0);
    printf(", %u attempt%s\n", e->attempts, e->attempts == 1 ? "" : "s");
    if (e->text[0])
        printf("  %s: %s\n", e->status == ZFLEET_SUCCEEDED ? "note" : "error", e->text);
    if (e->tags[0])
        printf("  tags: %s\n", e->tags);
    if (e->steps)
        printf("  pipeline: step %u of %u\n", e->step, e->steps);
    if (out_path)
        printf("  output: %zu bytes written to %s\n", e->output_len, out_path);
    else if (e->output_len && zf_json_is_text(e->output, e->output_len))
        printf("%.*s%s", (int)e->output_len, (const char *)e->output,
               ((const char *)e->output)[e->output_len - 1] == '\n' ? "" : "\n");
    else if (e->output_len)
        printf("  output: %zu bytes of binary data (use --out PATH)\n", e->output_len);
}

static int finish_result(cli_t *cli, zf_event_t *e)
{
    /* only SUCCEEDED is a success: output_lost carries no bytes, and says so in its text */
    int rc = e->status == ZFLEET_SUCCEEDED ? 0 : EXIT_JOB_FAILED;
    if (cli->out && e->status == ZFLEET_SUCCEEDED &&
        write_file(cli->out, e->output, e->output_len) < 0)
        rc = EXIT_USAGE;
    const char *out = cli->out && e->status == ZFLEET_SUCCEEDED ? cli->out : NULL;
    if (cli->json)
        print_result_json(e, out);
    else
        print_result_human(e, out);
    zf_event_destroy(&e);
    return rc;
}

/* ------------------------------------------------------------------ commands */

static int cmd_submit(cli_t *cli, zf_client_t *c, int argc, char **argv)
{
    if (cli->opts.forget && !cli->wait) {
        /* the result would be pushed to this process as it exits, and then be gone */
        fprintf(stderr, "zfleet: --forget needs --wait (the result is dropped once pushed here)\n");
        return EXIT_USAGE;
    }
    const char *fn = argv[0];
    void *data = NULL;
    size_t len = 0;
    if (cli->file) {
        if (argc > 1) {
            fprintf(stderr, "zfleet: give DATA or --file, not both\n");
            return EXIT_USAGE;
        }
        if (!(data = read_file(cli->file, &len)))
            return EXIT_USAGE;
    } else if (argc > 1) {
        data = strdup(argv[1]);
        len = strlen(argv[1]);
    }
    uint64_t id;
    int rc = zf_client_submit(c, fn, data, len, &cli->opts, &id);
    free(data);
    if (rc < 0)
        return fail_client(cli, c);
    if (!cli->wait) {
        if (cli->json)
            printf("{\"id\":%llu,\"status\":\"%s\"}\n", (unsigned long long)id,
                   cli->opts.delay_ms || cli->opts.not_before ? "scheduled" : "queued");
        else
            printf("%llu\n", (unsigned long long)id);
        return 0;
    }
    zf_event_t *e = zf_client_wait(c, id, cli->timeout_ms);
    return e ? finish_result(cli, e) : fail_client(cli, c);
}

static int cmd_wait(cli_t *cli, zf_client_t *c, const char *arg)
{
    uint64_t id;
    if (parse_id(arg, &id) < 0)
        return EXIT_USAGE;
    zf_event_t *e = zf_client_wait(c, id, cli->timeout_ms);
    return e ? finish_result(cli, e) : fail_client(cli, c);
}

static int cmd_get(cli_t *cli, zf_client_t *c, const char *arg)
{
    uint64_t id;
    if (parse_id(arg, &id) < 0)
        return EXIT_USAGE;
    zf_event_t *e = zf_client_get(c, id);
    if (!e)
        return fail_client(cli, c);
    if (e->type == ZF_EV_RESULT)
        return finish_result(cli, e);
    if (cli->json) {
        printf("{\"id\":%llu,\"status\":\"%s\",\"function\":", (unsigned long long)id,
               zfleet_state_name(e->status));
        zf_json_string(stdout, e->function, strlen(e->function));
        printf(",\"attempts\":%u,\"progress\":%.4f,\"progress_text\":", e->attempts, e->progress);
        zf_json_string(stdout, e->text, strlen(e->text));
        printf(",\"worker\":");
        zf_json_string(stdout, e->worker, strlen(e->worker));
        printf(",\"device\":");
        zf_json_string(stdout, e->device, strlen(e->device));
        print_tags_json(e->tags);
        if (e->steps)
            printf(",\"step\":%u,\"steps\":%u", e->step, e->steps);
        printf("}\n");
    } else {
        printf("job %llu %s (%s), attempt %u", (unsigned long long)id, zfleet_state_name(e->status),
               e->function, e->attempts);
        if (e->worker[0])
            printf(" on %s (%s)", e->worker, e->device);
        if (e->status == ZFLEET_RUNNING)
            printf(", %.0f%%%s%s", e->progress * 100, e->text[0] ? " " : "", e->text);
        if (e->tags[0])
            printf(", tags %s", e->tags);
        if (e->steps)
            printf(", step %u of %u", e->step, e->steps);
        printf("\n");
    }
    zf_event_destroy(&e);
    return 0;
}

static int cmd_simple(cli_t *cli, zf_client_t *c, const char *arg, int cancel)
{
    uint64_t id;
    if (parse_id(arg, &id) < 0)
        return EXIT_USAGE;
    if ((cancel ? zf_client_cancel(c, id) : zf_client_retry(c, id)) < 0)
        return fail_client(cli, c);
    if (cli->json)
        printf("{\"id\":%llu,\"ok\":true}\n", (unsigned long long)id);
    else
        printf("job %llu %s\n", (unsigned long long)id, cancel ? "cancelled" : "requeued");
    return 0;
}

/* msgpack navigation for the human views */
static const msgpack_object *get(const msgpack_object *map, const char *key)
{
    return zf_json_get(map, key);
}

static unsigned long long u(const msgpack_object *map, const char *key)
{
    const msgpack_object *o = get(map, key);
    return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (unsigned long long)o->via.u64 : 0;
}

static const char *s(const msgpack_object *map, const char *key, char *buf, size_t len)
{
    const msgpack_object *o = get(map, key);
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return "";
    snprintf(buf, len, "%.*s", (int)o->via.str.size, o->via.str.ptr);
    return buf;
}

/* One line of batch sizes (issue 17) of a STATS function or worker-batches entry, when its
   jobs ever ran more than one to a call: "mean 7.9  1:3 2:0 3-4:1 5-8:200". */
static void print_batches(const char *indent, const char *fn, const msgpack_object *o)
{
    static const char *const label[] = {"1",     "2",     "3-4",    "5-8",    "9-16",
                                        "17-32", "33-64", "65-128", "129-256"};
    const msgpack_object *hist = get(o, "batch_hist"), *mean = get(o, "batch_mean");
    if (!hist || hist->type != MSGPACK_OBJECT_ARRAY || !mean ||
        mean->type != MSGPACK_OBJECT_FLOAT64 || mean->via.f64 <= 1.0)
        return;
    printf("%s%-24s batch mean %6.2f  jobs by batch size", indent, fn, mean->via.f64);
    for (uint32_t i = 0; i < hist->via.array.size && i < 9; i++)
        printf(" %s:%llu", label[i], (unsigned long long)hist->via.array.ptr[i].via.u64);
    printf("\n");
}

static void print_workers(const msgpack_object *ws)
{
    if (!ws || ws->type != MSGPACK_OBJECT_ARRAY)
        return;
    printf("%-32s %-7s %-24s %7s %-9s %8s %7s  %s\n", "WORKER", "DEVICE", "MODEL", "MEM_GB",
           "STATE", "DONE", "FAILED", "JOBS");
    for (uint32_t i = 0; i < ws->via.array.size; i++) {
        const msgpack_object *w = &ws->via.array.ptr[i];
        char name[80], dev[80], st[32], model[80];
        printf("%-32s %-7s %-24.24s %7.1f %-9s %8llu %7llu ", s(w, "name", name, sizeof name),
               s(w, "device", dev, sizeof dev), s(w, "model", model, sizeof model),
               (double)u(w, "memory") / 1e9, s(w, "state", st, sizeof st), u(w, "done"),
               u(w, "failed"));
        const msgpack_object *jobs = get(w, "jobs");
        for (uint32_t j = 0; jobs && jobs->type == MSGPACK_OBJECT_ARRAY && j < jobs->via.array.size;
             j++)
            printf(" %llu", (unsigned long long)jobs->via.array.ptr[j].via.u64);
        printf("\n");
        const msgpack_object *bs = get(w, "batches");
        for (uint32_t j = 0; bs && bs->type == MSGPACK_OBJECT_ARRAY && j < bs->via.array.size;
             j++) {
            char fn[80];
            print_batches("    ", s(&bs->via.array.ptr[j], "function", fn, sizeof fn),
                          &bs->via.array.ptr[j]);
        }
    }
}

static void print_stats(const msgpack_object *doc)
{
    const msgpack_object *b = get(doc, "broker");
    printf("broker: up %.1f s, %llu accepted, %llu queued, %llu dispatched, %llu requeued\n",
           (double)u(b, "uptime_ms") / 1000, u(b, "accepted"), u(b, "queued"), u(b, "dispatched"),
           u(b, "requeued"));
    printf("        %llu malformed (client) / %llu (worker), %llu stale results, %llu workers "
           "lost, "
           "%llu dead letters\n",
           u(b, "malformed_client"), u(b, "malformed_worker"), u(b, "stale_results"),
           u(b, "workers_lost"), u(b, "dead_letters"));
    printf("        %llu results kept, %.1f MB in the result store, %llu forgotten once pushed\n",
           u(b, "results_kept"), (double)u(b, "result_bytes") / 1e6, u(b, "forgotten"));
    printf("        %.1f MB of queued payloads, %llu results held for %llu slow client(s), "
           "%llu run timeouts, %llu forged obituaries refused, %llu stalls\n",
           (double)u(b, "queued_bytes") / 1e6, u(b, "results_held"), u(b, "clients_slow"),
           u(b, "run_timeouts"), u(b, "obituaries_refused"), u(b, "stalls"));
    printf("        journal %s, %llu write/sync failures\n",
           u(b, "journal_ok") ? "ok" : "UNAVAILABLE (new submits refused)", u(b, "journal_errors"));
    const msgpack_object *sec = get(doc, "security");
    if (u(sec, "curve"))
        printf("        CURVE on: %llu client, %llu worker, %llu admin key(s); denied %llu client "
               "/ "
               "%llu worker connection(s), %llu message(s) of revoked keys refused, %llu "
               "reload(s) (%llu failed)\n",
               u(sec, "client_keys"), u(sec, "worker_keys"), u(sec, "admin_keys"),
               u(sec, "denied_clients"), u(sec, "denied_workers"), u(sec, "refused_messages"),
               u(sec, "reloads"), u(sec, "reload_failures"));
    else
        printf("        CURVE off: no authentication, plain text\n");
    const msgpack_object *fin = get(doc, "finished");
    printf("finished: %llu succeeded, %llu failed, %llu timed_out, %llu cancelled, %llu expired, "
           "%llu lost, %llu output_lost\n",
           u(fin, "succeeded"), u(fin, "failed"), u(fin, "timed_out"), u(fin, "cancelled"),
           u(fin, "expired"), u(fin, "lost"), u(fin, "output_lost"));
    const msgpack_object *fns = get(doc, "functions");
    printf("\n%-24s %10s %8s %10s %8s %8s\n", "FUNCTION", "QUEUED", "RUNNING", "SUCCEEDED",
           "FAILED", "WORKERS");
    for (uint32_t i = 0; fns && fns->type == MSGPACK_OBJECT_ARRAY && i < fns->via.array.size; i++) {
        const msgpack_object *f = &fns->via.array.ptr[i];
        char name[80];
        printf("%-24s %10llu %8llu %10llu %8llu %8llu\n", s(f, "name", name, sizeof name),
               u(f, "queued"), u(f, "running"), u(f, "succeeded"), u(f, "failed"), u(f, "workers"));
    }
    for (uint32_t i = 0; fns && fns->type == MSGPACK_OBJECT_ARRAY && i < fns->via.array.size; i++) {
        char name[80];
        const msgpack_object *f = &fns->via.array.ptr[i];
        print_batches("", s(f, "name", name, sizeof name), f);
    }
    printf("\n");
    print_workers(get(doc, "workers"));
}

static void print_dead(const msgpack_object *doc)
{
    if (!doc || doc->type != MSGPACK_OBJECT_ARRAY)
        return;
    printf("%zu dead letter(s)\n", (size_t)doc->via.array.size);
    for (uint32_t i = 0; i < doc->via.array.size; i++) {
        const msgpack_object *j = &doc->via.array.ptr[i];
        char fn[80], st[32], causes[1100], owner[48];
        printf("%llu %s %s after %llu attempt(s): %s", u(j, "id"), s(j, "function", fn, sizeof fn),
               s(j, "state", st, sizeof st), u(j, "attempts"),
               s(j, "causes", causes, sizeof causes));
        if (*s(j, "owner", owner, sizeof owner))
            printf(" (owner %s)", owner);
        printf("\n");
    }
}

/* One page of `zfleet jobs`: a line per job, then the command for the next page. */
static void print_jobs_human(const msgpack_object *doc)
{
    const msgpack_object *jobs = get(doc, "jobs");
    uint32_t n = jobs && jobs->type == MSGPACK_OBJECT_ARRAY ? jobs->via.array.size : 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *j = &jobs->via.array.ptr[i];
        char st[32], fn[80], tags[300];
        printf("%-17llu %-10s %-20s %3llu  %s\n", u(j, "id"), s(j, "state", st, sizeof st),
               s(j, "function", fn, sizeof fn), u(j, "attempts"), s(j, "tags", tags, sizeof tags));
    }
    unsigned long long next = u(doc, "next");
    if (next)
        printf("(more: zfleet jobs ... --after %llu)\n", next);
}

static int cmd_jobs(cli_t *cli, zf_client_t *c)
{
    if (cli->tags[0])
        cli->jobs.tag = cli->tags;
    zf_event_t *e = zf_client_jobs(c, &cli->jobs);
    if (!e)
        return fail_client(cli, c);
    int rc = 0;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    if (msgpack_unpack_next(&up, e->output, e->output_len, &off) != MSGPACK_UNPACK_SUCCESS) {
        fprintf(stderr, "zfleet: the broker sent an unreadable document\n");
        rc = EXIT_REFUSED;
    } else if (cli->json) {
        zf_json_from_msgpack(stdout, e->output, e->output_len);
        printf("\n");
    } else {
        print_jobs_human(&up.data);
    }
    msgpack_unpacked_destroy(&up);
    zf_event_destroy(&e);
    return rc;
}

static int cmd_doc(cli_t *cli, zf_client_t *c, const char *which)
{
    zf_event_t *e = !strcmp(which, "dead") ? zf_client_dead(c, cli->purge) : zf_client_stats(c);
    if (!e)
        return fail_client(cli, c);
    if (!strcmp(which, "dead") && cli->purge) {
        if (cli->json)
            printf("{\"ok\":true,\"text\":\"%s\"}\n", e->text);
        else
            printf("%s\n", e->text);
        zf_event_destroy(&e);
        return 0;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int rc = 0;
    if (msgpack_unpack_next(&up, e->output, e->output_len, &off) != MSGPACK_UNPACK_SUCCESS) {
        fprintf(stderr, "zfleet: the broker sent an unreadable document\n");
        rc = EXIT_REFUSED;
    } else if (cli->json) {
        const msgpack_object *o = !strcmp(which, "workers") ? get(&up.data, "workers") : &up.data;
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_object(&pk, *o);
        zf_json_from_msgpack(stdout, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        printf("\n");
    } else if (!strcmp(which, "workers")) {
        print_workers(get(&up.data, "workers"));
    } else if (!strcmp(which, "dead")) {
        print_dead(&up.data);
    } else {
        print_stats(&up.data);
    }
    msgpack_unpacked_destroy(&up);
    zf_event_destroy(&e);
    return rc;
}

/* ------------------------------------------------------------------ keys */

/* `zfleet keygen NAME`: the two files, and the public key on stdout. */
static int cmd_keygen(cli_t *cli, const char *name)
{
    zf_cert_t cert;
    char err[512], z85[ZF_KEY_Z85 + 1];
    if (zf_cert_generate(name, &cert, err, sizeof err) < 0) {
        fprintf(stderr, "zfleet: keygen: %s\n", err);
        return 1; /* (keygen: 0 written, 1 not) */
    }
    zf_key_z85(cert.public_key, z85);
    memset(&cert, 0, sizeof cert);
    if (cli->json) {
        printf("{\"public\":\"%s.key\",\"secret\":\"%s.key_secret\",\"public_key\":", name, name);
        zf_json_string(stdout, z85, strlen(z85));
        printf("}\n");
    } else
        printf("wrote %s.key (public: give it to the broker) and %s.key_secret (keep it; mode "
               "0600)\npublic key: %s\n",
               name, name, z85);
    return 0;
}

static const char *opt_or_env(const char *opt, const char *env)
{
    const char *v = opt ? opt : getenv(env);
    return v && *v ? v : NULL;
}

/* CURVE from --key/--broker-key or the environment; nothing when neither is set. */
static int use_keys(cli_t *cli, zf_client_t *c)
{
    const char *key = opt_or_env(cli->key, "ZFLEET_KEY");
    const char *broker = opt_or_env(cli->broker_key, "ZFLEET_BROKER_KEY");
    return key || broker ? zf_client_set_keys(c, key, broker) : 0;
}

/* A client of the broker with the keys set, or NULL after one line on stderr. */
static zf_client_t *connect_client(cli_t *cli)
{
    zf_client_t *client = zf_client_new(cli->broker);
    if (!client) {
        fprintf(stderr, "zfleet: bad broker endpoint '%s'\n",
                cli->broker               ? cli->broker
                : getenv("ZFLEET_BROKER") ? getenv("ZFLEET_BROKER")
                                          : "");
        return NULL;
    }
    if (use_keys(cli, client) < 0) {
        fprintf(stderr, "zfleet: %s\n", zf_client_error(client));
        zf_client_destroy(&client);
    }
    return client;
}

static zf_client_t *connect_for_top(void *arg)
{
    return connect_client(arg);
}

/* `zfleet top`: zf_top.h; it makes its own connections (a fresh one after each failure). */
static int cmd_top(cli_t *cli)
{
    if (cli->json) {
        fprintf(stderr, "zfleet: top has no --json (zfleet stats --json is the document)\n");
        return EXIT_USAGE;
    }
    const char *ep = cli->broker ? cli->broker : getenv("ZFLEET_BROKER");
    zf_top_opts_t o = {.connect = connect_for_top,
                       .arg = cli,
                       .endpoint = ep && *ep ? ep : ZFLEET_DEFAULT_BROKER,
                       .interval_ms = cli->interval_ms ? cli->interval_ms : 1000,
                       .once = cli->once};
    zf_client_errcode_t err;
    return zf_top_run(&o, &err) < 0 ? exit_code(err) : 0;
}

/* ------------------------------------------------------------------ main */

/* A number for --opt from 0 to max, or -1 after zf_parse_opt's one line (exit 2). */
static int num_opt(const char *opt, const char *v, uint64_t max, uint64_t *out)
{
    return zf_parse_opt("zfleet", opt, v, 0, max, out);
}

/* Long-only options (no short letter): codes past any char. */
enum { OPT_RETRIES = 0x1a0, OPT_BACKOFF, OPT_DELAY, OPT_NOT_BEFORE };

/* --tag k=v: appended to cli->tags. The pairs themselves are checked by zf_client_submit
   (a usage error, exit 2); here only what joining them could hide. */
static int add_tag(cli_t *cli, const char *arg)
{
    size_t have = strlen(cli->tags), n = strlen(arg);
    const char *bad = strchr(arg, ',')                 ? "a tag must not hold ','"
                      : !*arg                          ? "a tag must be key=value"
                      : have + 1 + n > ZFLEET_TAGS_MAX ? "tags are longer than 255 bytes in all"
                                                       : NULL;
    if (!bad)
        snprintf(cli->tags + have, sizeof cli->tags - have, "%s%s", have ? "," : "", arg);
    if (bad) {
        fprintf(stderr, "zfleet: --tag '%s': %s\n", arg, bad);
        return EXIT_USAGE;
    }
    cli->opts.tags = cli->tags;
    return 0;
}

/* Applies one option. Returns 0, or an exit code. */
static int apply_opt(cli_t *cli, int c, const char *arg)
{
    uint64_t v;
    switch (c) {
    case 'b': cli->broker = arg; return 0;
    case 'j': cli->json = 1; return 0;
    case 'w': cli->wait = 1; return 0;
    case 'f': cli->file = arg; return 0;
    case 'o': cli->out = arg; return 0;
    case 'P': cli->purge = 1; return 0;
    case 'F': cli->opts.forget = true; return 0;
    case 'k': cli->key = arg; return 0;
    case 'T': return add_tag(cli, arg);
    case 'N': {
        size_t have = strlen(cli->then);
        if (!*arg || strchr(arg, ',') || have + 1 + strlen(arg) >= sizeof cli->then) {
            fprintf(stderr,
                    "zfleet: --then expects one FUNCTION[@cpu|@gpu|@any][;timeout=MS][;retries=N], "
                    "got '%s'\n",
                    arg);
            return EXIT_USAGE;
        }
        snprintf(cli->then + have, sizeof cli->then - have, "%s%s", have ? "," : "", arg);
        cli->opts.then = cli->then;
        return 0;
    }
    case 'S': {
        int st = -1;
        for (int i = 0; i <= ZFLEET_OUTPUT_LOST && st < 0; i++)
            if (!strcmp(arg, zfleet_state_name(i)))
                st = i;
        if (st < 0) {
            fprintf(stderr,
                    "zfleet: --state expects queued, running, succeeded, failed, "
                    "timed_out, cancelled, expired, lost or output_lost, got '%s'\n",
                    arg);
            return EXIT_USAGE;
        }
        cli->jobs.state = st;
        return 0;
    }
    case 'U': cli->jobs.function = arg; return 0;
    case 'L':
        if (zf_parse_opt("zfleet", "limit", arg, 1, 1000, &v) < 0)
            return EXIT_USAGE;
        cli->jobs.limit = (uint32_t)v;
        return 0;
    case 'A':
        if (num_opt("after", arg, UINT64_MAX, &v) < 0)
            return EXIT_USAGE;
        cli->jobs.after = v;
        return 0;
    case '1': cli->once = 1; return 0;
    case 'i':
        if (zf_parse_opt("zfleet", "interval", arg, 100, 3600000, &v) < 0)
            return EXIT_USAGE;
        cli->interval_ms = (int)v;
        return 0;
    case 'K': cli->broker_key = arg; return 0;
    case 't':
        if (num_opt("timeout", arg, INT32_MAX, &v) < 0)
            return EXIT_USAGE;
        cli->timeout_ms = (int)v;
        return 0;
    case 'p': {
        int64_t p;
        if (zf_parse_opt_int("zfleet", "priority", arg, INT32_MIN, INT32_MAX, &p) < 0)
            return EXIT_USAGE;
        cli->opts.priority = (int32_t)p;
        return 0;
    }
    case 'd': {
        int k = !strcmp(arg, "any")   ? ZFLEET_DEVICE_ANY
                : !strcmp(arg, "cpu") ? ZFLEET_DEVICE_CPU
                : !strcmp(arg, "gpu") ? ZFLEET_DEVICE_GPU
                                      : -1;
        if (k < 0) {
            fprintf(stderr, "zfleet: --device expects any, cpu or gpu, got '%s'\n", arg);
            return EXIT_USAGE;
        }
        cli->opts.device = k;
        return 0;
    }
    case 'r':
        if (num_opt("run-timeout", arg, UINT32_MAX, &v) < 0)
            return EXIT_USAGE;
        cli->opts.timeout_ms = (uint32_t)v;
        return 0;
    case 'D':
        if (num_opt("deadline", arg, UINT32_MAX, &v) < 0)
            return EXIT_USAGE;
        cli->opts.deadline_ms = (uint32_t)v;
        return 0;
    case 'a':
        if (num_opt("max-attempts", arg, 100, &v) < 0)
            return EXIT_USAGE;
        cli->opts.max_attempts = (uint32_t)v;
        return 0;
    case OPT_RETRIES: /* retries and delayed jobs (PROTOCOL.md §4.5): the broker's bounds */
        if (num_opt("retries", arg, 20, &v) < 0)
            return EXIT_USAGE;
        cli->opts.retries = (uint32_t)v;
        return 0;
    case OPT_BACKOFF:
        if (num_opt("retry-backoff-ms", arg, 60000, &v) < 0)
            return EXIT_USAGE;
        cli->opts.backoff_ms = (uint32_t)v;
        return 0;
    case OPT_DELAY:
        if (num_opt("delay-ms", arg, 30ull * 24 * 3600000, &v) < 0)
            return EXIT_USAGE;
        cli->opts.delay_ms = (uint32_t)v;
        return 0;
    case OPT_NOT_BEFORE:
        if (num_opt("not-before", arg, UINT64_MAX, &v) < 0)
            return EXIT_USAGE;
        cli->opts.not_before = v;
        return 0;
    default: usage(stderr); return EXIT_USAGE;
    }
}

/* The commands and the arguments each takes: a word more or less is a usage error, never
   silently dropped (`submit echo a b` must not submit "a"). bench parses its own. */
typedef enum {
    OP_SUBMIT,
    OP_WAIT,
    OP_GET,
    OP_CANCEL,
    OP_RETRY,
    OP_DOC,
    OP_KEYGEN,
    OP_TOP,
    OP_JOBS
} op_t;
typedef struct {
    const char *name;
    op_t op;
    int min, max;     /* arguments after the command's name */
    const char *args; /* for the message */
} command_t;

static const command_t commands[] = {
    {"submit", OP_SUBMIT, 1, 2, "FUNCTION [DATA]"},
    {"wait", OP_WAIT, 1, 1, "ID"},
    {"get", OP_GET, 1, 1, "ID"},
    {"status", OP_GET, 1, 1, "ID"},
    {"cancel", OP_CANCEL, 1, 1, "ID"},
    {"retry", OP_RETRY, 1, 1, "ID"},
    {"stats", OP_DOC, 0, 0, "no arguments"},
    {"workers", OP_DOC, 0, 0, "no arguments"},
    {"dead", OP_DOC, 0, 0, "no arguments"},
    {"keygen", OP_KEYGEN, 1, 1, "NAME"},
    {"top", OP_TOP, 0, 0, "no arguments"},
    {"jobs", OP_JOBS, 0, 0, "no arguments (filters are options)"},
};

static const command_t *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

/* True (after one line on stderr) if argc is outside what k takes. */
static bool bad_arg_count(const command_t *k, int argc, char **argv)
{
    if (argc < k->min)
        fprintf(stderr, "zfleet: %s needs %s (see zfleet --help)\n", k->name, k->args);
    else if (argc > k->max)
        fprintf(stderr, "zfleet: %s takes %s; unexpected argument '%s'%s\n", k->name, k->args,
                argv[k->max], k->op == OP_SUBMIT ? " (quote DATA that has spaces)" : "");
    return argc < k->min || argc > k->max;
}

/* `zfleet [--broker EP] [--json] bench ...` goes to the benchmark with its own options. */
static int maybe_bench(int argc, char **argv, int *rc)
{
    const char *ep = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--broker") && i + 1 < argc)
            ep = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "bench")) {
            *rc = zf_bench_main(argc - i, argv + i, ep, json);
            return 1;
        } else
            return 0;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int rc;
    if (maybe_bench(argc, argv, &rc))
        return rc;
    cli_t cli = {.timeout_ms = -1, .jobs.state = -1};
    static const struct option opts[] = {{"broker", 1, 0, 'b'},
                                         {"json", 0, 0, 'j'},
                                         {"timeout", 1, 0, 't'},
                                         {"wait", 0, 0, 'w'},
                                         {"file", 1, 0, 'f'},
                                         {"out", 1, 0, 'o'},
                                         {"priority", 1, 0, 'p'},
                                         {"device", 1, 0, 'd'},
                                         {"run-timeout", 1, 0, 'r'},
                                         {"deadline", 1, 0, 'D'},
                                         {"max-attempts", 1, 0, 'a'},
                                         {"retries", 1, 0, OPT_RETRIES},
                                         {"retry-backoff-ms", 1, 0, OPT_BACKOFF},
                                         {"delay-ms", 1, 0, OPT_DELAY},
                                         {"not-before", 1, 0, OPT_NOT_BEFORE},
                                         {"purge", 0, 0, 'P'},
                                         {"forget", 0, 0, 'F'},
                                         {"help", 0, 0, 'h'},
                                         {"key", 1, 0, 'k'},
                                         {"tag", 1, 0, 'T'},
                                         {"state", 1, 0, 'S'},
                                         {"function", 1, 0, 'U'},
                                         {"limit", 1, 0, 'L'},
                                         {"after", 1, 0, 'A'},
                                         {"then", 1, 0, 'N'},
                                         {"broker-key", 1, 0, 'K'},
                                         {"once", 0, 0, '1'},
                                         {"interval", 1, 0, 'i'},
                                         {0, 0, 0, 0}};
    int c;
    /* GNU getopt permutes: options may come before or after the command */
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 0;
        }
        if ((rc = apply_opt(&cli, c, optarg)) != 0)
            return rc;
    }
    int nargs = argc - optind;
    char **args = argv + optind;
    if (nargs == 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = args[0];
    const command_t *k = find_command(cmd);
    if (!k) {
        fprintf(stderr, "zfleet: unknown command '%s' (see zfleet --help)\n", cmd);
        return EXIT_USAGE;
    }
    if (bad_arg_count(k, nargs - 1, args + 1))
        return EXIT_USAGE;
    if (k->op == OP_KEYGEN)
        return cmd_keygen(&cli, args[1]);
    if (k->op != OP_TOP && (cli.once || cli.interval_ms)) {
        fprintf(stderr, "zfleet: --once and --interval are options of top only\n");
        return EXIT_USAGE;
    }
    if (k->op == OP_TOP)
        return cmd_top(&cli);
    zf_client_t *client = connect_client(&cli);
    if (!client)
        return EXIT_USAGE;
    const char *arg = nargs > 1 ? args[1] : NULL;
    switch (k->op) {
    case OP_SUBMIT: rc = cmd_submit(&cli, client, nargs - 1, args + 1); break;
    case OP_WAIT: rc = cmd_wait(&cli, client, arg); break;
    case OP_GET: rc = cmd_get(&cli, client, arg); break;
    case OP_CANCEL: rc = cmd_simple(&cli, client, arg, 1); break;
    case OP_RETRY: rc = cmd_simple(&cli, client, arg, 0); break;
    case OP_DOC: rc = cmd_doc(&cli, client, cmd); break;
    case OP_JOBS: rc = cmd_jobs(&cli, client); break;
    case OP_KEYGEN:
    case OP_TOP: break; /* (handled above: no broker, or its own connections) */
    }
    zf_client_destroy(&client);
    return rc;
}
