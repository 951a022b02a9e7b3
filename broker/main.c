/*  zfleet-broker — command line front of zf_broker. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/zf_httpd.h"
#include "../common/zf_util.h"
#include "zf_broker.h"
#include "zf_journal.h"
#include "zf_notify.h"

static void usage(FILE *out)
{
    fputs("usage: zfleet-broker [options]\n"
          "  --clients EP          client endpoint (default tcp://127.0.0.1:5555)\n"
          "  --workers EP          worker endpoint (default tcp://127.0.0.1:5556)\n"
          "  --heartbeat MS        heartbeat interval (default 1000)\n"
          "  --liveness N          missed heartbeats before a worker is dead (default 3)\n"
          "  --run-grace MS        a running job with a timeout that has no result this long\n"
          "                        past it is ended by the broker (default heartbeat x liveness)\n"
          "  --reattach-window MS  after a restart, how long jobs that were running wait for\n"
          "                        their workers to claim them back; 0 = off (default\n"
          "                        heartbeat x liveness)\n"
          "  --max-queued N        jobs queued in all (default 2000000)\n"
          "  --max-queued-per-fn N jobs queued for one function (default: --max-queued)\n"
          "  --max-queued-bytes N  payload bytes of unfinished jobs in all (default: a quarter\n"
          "                        of this machine's memory)\n"
          "  --max-queued-per-client N\n"
          "                        unfinished jobs one client connection may have (default:\n"
          "                        half of --max-queued), so one client cannot fill the queue;\n"
          "                        with CURVE it holds per key too (all its connections)\n"
          "  --max-queued-bytes-per-client N\n"
          "                        and their payload bytes (default: half of --max-queued-bytes)\n"
          "  --client-buffer-bytes N\n"
          "                        result bytes that may wait unread for one client connection;\n"
          "                        later results are held in the result store until it reads\n"
          "                        (default 67108864 = 64 MiB)\n"
          "  --max-payload BYTES   largest payload accepted (default 67108864, at most 4 GiB - 1)\n"
          "  --max-results N       finished jobs kept for get/wait (default 100000)\n"
          "  --result-store-bytes N\n"
          "                        memory the kept results may hold (outputs, and dead letters'\n"
          "                        payloads); oldest evicted past it (default 1073741824 = 1 GiB)\n"
          "  --result-ttl MS       how long a finished job is kept (default 3600000)\n"
          "  --max-attempts N      deliveries before a job is lost (default 3)\n"
          "  --max-dead N          dead-letter list bound (default 10000)\n"
          "  --data DIR            journal directory (default $ZFLEET_DATA, else ./zfleet-data)\n"
          "  --no-journal          keep everything in memory (jobs are lost on a crash)\n"
          "  --fsync POLICY        always | interval:MS | never | always-inline (default\n"
          "                        always); see docs/JOURNAL.md for what each can lose.\n"
          "                        always: the fsync runs in a thread off the event loop;\n"
          "                        always-inline: the same guarantee, synced in the loop\n"
          "  --result-max-bytes N  largest output written whole to the journal (default: the\n"
          "                        --result-store-bytes value). A longer one is kept in memory\n"
          "                        but journaled by its length only: after a restart its job\n"
          "                        reads output_lost, with no output bytes\n"
          "  --compact-min-bytes N journal size before compaction is considered (default 64 MiB)\n"
          "  --curve-secret FILE   the broker's own key (a NAME.key_secret from zfleet keygen,\n"
          "                        czmq's zcert or pyzmq's zmq.auth): CURVE encryption and\n"
          "                        authentication on both endpoints (docs/SECURITY.md)\n"
          "  --client-keys DIR     public .key files of the clients allowed (with CURVE)\n"
          "  --worker-keys DIR     public .key files of the workers allowed (with CURVE)\n"
          "  --admin-keys DIR      public .key files of clients that may act on every job and\n"
          "                        read stats and workers; others see only their own jobs.\n"
          "                        SIGHUP reads the three directories again\n"
          "  --log-format FORMAT   text (default; env ZF_LOG_FORMAT) or json: one JSON object\n"
          "                        per line with time, level, component, event, msg and the\n"
          "                        event's fields (job, fn, worker, device, attempt, ...)\n"
          "  --log-level LEVEL     error, warn, info (default; env ZF_LOG) or debug\n"
          "  --metrics HOST:PORT   serve GET /metrics (Prometheus), /healthz and /readyz over\n"
          "                        HTTP on this address, e.g. 127.0.0.1:9464 (off by default;\n"
          "                        docs/METRICS.md)\n"
          "  --journal-repair      repair DIR/journal after damage in its middle (the broker\n"
          "                        refuses to start on one): save the original as\n"
          "                        DIR/journal.damaged-<UTC time>, rewrite the journal without\n"
          "                        the damaged records, report what was skipped, and exit\n"
          "                        (0 repaired or nothing to repair, 1 failed); does not start\n"
          "                        the broker. Exit codes otherwise: 0 clean stop, 1 failure\n"
          "                        (e.g. damaged journal), 2 usage\n",
          out);
}

/* A bounded number for --opt, or exit 2 (usage) after zf_parse_opt's one line. */
static uint64_t num(const char *opt, const char *s, uint64_t min, uint64_t max)
{
    uint64_t v;
    if (zf_parse_opt(NULL, opt, s, min, max, &v) < 0)
        exit(2);
    return v;
}

static void parse_fsync(zf_broker_config_t *cfg, const char *s)
{
    /* ("group": what always-with-the-flusher was called while it was opt-in) */
    if (!strcmp(s, "always") || !strcmp(s, "group")) {
        cfg->fsync = ZF_FSYNC_ALWAYS;
        cfg->fsync_thread = true;
    } else if (!strcmp(s, "always-inline")) {
        cfg->fsync = ZF_FSYNC_ALWAYS;
        cfg->fsync_thread = false;
    } else if (!strcmp(s, "never"))
        cfg->fsync = ZF_FSYNC_NEVER;
    else if (!strncmp(s, "interval:", 9)) {
        cfg->fsync = ZF_FSYNC_INTERVAL;
        cfg->fsync_interval_ms = (uint32_t)num("fsync", s + 9, 1, 3600000);
    } else {
        zf_log(ZF_LOG_ERROR,
               "--fsync: expected always, interval:MS, never or always-inline, got '%s'", s);
        exit(2);
    }
}

/* An unknown option, or one without its value: one log line (JSON with --log-format
   json), and the usage too in text mode. Returns the usage exit code. */
static int bad_option(const char *arg)
{
    zf_log(ZF_LOG_ERROR, "option '%s' is unknown or lacks its value (see --help)", arg);
    if (!strcmp(zf_log_format_name(), "text"))
        usage(stderr);
    return 2;
}

/* --metrics HOST:PORT, checked here so that a bad value is a usage error (exit 2); the
   broker binds it when it starts (a port in use is a start failure, exit 1). */
static void parse_metrics(zf_broker_config_t *cfg, const char *s)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256];
    if (zf_httpd_parse_addr(s, &ss, &len, err, sizeof err) < 0) {
        zf_log(ZF_LOG_ERROR, "--metrics: %s", err);
        exit(2);
    }
    cfg->metrics_addr = s;
}

int main(int argc, char **argv)
{
    zf_log_init("zfleet-broker");
    if (zf_log_scan_args(argc, argv) < 0) /* first, so that every line has the asked form */
        return 2;
    zf_tune_malloc();
    zf_broker_config_t cfg;
    zf_broker_config_defaults(&cfg);
    bool per_fn_set = false, no_journal = false, repair = false;
    /* Durable by default: a broker that loses accepted jobs on a crash must be asked for. */
    cfg.data_dir =
        getenv("ZFLEET_DATA") && *getenv("ZFLEET_DATA") ? getenv("ZFLEET_DATA") : "./zfleet-data";
    static const struct option opts[] = {{"clients", 1, 0, 'c'},
                                         {"workers", 1, 0, 'w'},
                                         {"heartbeat", 1, 0, 'h'},
                                         {"liveness", 1, 0, 'l'},
                                         {"max-queued", 1, 0, 'q'},
                                         {"max-queued-per-fn", 1, 0, 'Q'},
                                         {"max-payload", 1, 0, 'p'},
                                         {"max-results", 1, 0, 'r'},
                                         {"result-ttl", 1, 0, 't'},
                                         {"max-attempts", 1, 0, 'a'},
                                         {"max-dead", 1, 0, 'D'},
                                         {"data", 1, 0, 'd'},
                                         {"no-journal", 0, 0, 'n'},
                                         {"fsync", 1, 0, 'f'},
                                         {"result-max-bytes", 1, 0, 'R'},
                                         {"compact-min-bytes", 1, 0, 'M'},
                                         {"result-store-bytes", 1, 0, 'B'},
                                         {"run-grace", 1, 0, 'g'},
                                         {"reattach-window", 1, 0, 'E'},
                                         {"max-queued-bytes", 1, 0, 'b'},
                                         {"max-queued-per-client", 1, 0, 'C'},
                                         {"max-queued-bytes-per-client", 1, 0, 'Y'},
                                         {"client-buffer-bytes", 1, 0, 'U'},
                                         {"journal-repair", 0, 0, 'J'},
                                         {"curve-secret", 1, 0, 'S'},
                                         {"client-keys", 1, 0, 'K'},
                                         {"worker-keys", 1, 0, 'W'},
                                         {"admin-keys", 1, 0, 'A'},
                                         {"log-format", 1, 0, 'F'},
                                         {"log-level", 1, 0, 'L'},
                                         {"metrics", 1, 0, 'm'},
                                         {"help", 0, 0, 'H'},
                                         {0, 0, 0, 0}};
    int c;
    opterr = 0; /* bad_option says it, in the asked log format */
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c': cfg.client_ep = optarg; break;
        case 'w': cfg.worker_ep = optarg; break;
        case 'h': cfg.heartbeat_ms = (uint32_t)num("heartbeat", optarg, 10, 3600000); break;
        case 'l': cfg.liveness = (uint32_t)num("liveness", optarg, 1, 1000); break;
        case 'b': cfg.max_queued_bytes = num("max-queued-bytes", optarg, 1, UINT64_MAX); break;
        case 'C':
            cfg.max_queued_per_client = num("max-queued-per-client", optarg, 1, UINT64_MAX);
            break;
        case 'Y':
            cfg.max_queued_bytes_per_client =
                num("max-queued-bytes-per-client", optarg, 1, UINT64_MAX);
            break;
        case 'U':
            cfg.client_buffer_bytes = num("client-buffer-bytes", optarg, 1, UINT64_MAX);
            break;
        case 'E': cfg.reattach_ms = (uint32_t)num("reattach-window", optarg, 0, 3600000); break;
        case 'g': cfg.run_grace_ms = (uint32_t)num("run-grace", optarg, 1, 3600000); break;
        case 'q': cfg.max_queued = num("max-queued", optarg, 1, UINT64_MAX); break;
        case 'Q':
            cfg.max_queued_per_fn = num("max-queued-per-fn", optarg, 1, UINT64_MAX);
            per_fn_set = true;
            break;
        case 'p':
            cfg.max_payload = num("max-payload", optarg, 0, UINT32_MAX);
            break; /* job_t.plen */
        case 'r': cfg.max_results = num("max-results", optarg, 0, UINT64_MAX); break;
        case 'B': cfg.result_store_bytes = num("result-store-bytes", optarg, 1, UINT64_MAX); break;
        case 't': cfg.result_ttl_ms = (uint32_t)num("result-ttl", optarg, 0, UINT32_MAX); break;
        case 'a': cfg.max_attempts = (uint32_t)num("max-attempts", optarg, 1, 100); break;
        case 'D': cfg.max_dead = num("max-dead", optarg, 0, UINT64_MAX); break;
        case 'd': cfg.data_dir = optarg; break;
        case 'n': no_journal = true; break;
        case 'f': parse_fsync(&cfg, optarg); break;
        case 'R': cfg.result_max_bytes = num("result-max-bytes", optarg, 0, 1ull << 32); break;
        case 'M': cfg.compact_min_bytes = num("compact-min-bytes", optarg, 1, UINT64_MAX); break;
        case 'J': repair = true; break;
        case 'S': cfg.curve_secret = optarg; break;
        case 'K': cfg.client_keys_dir = optarg; break;
        case 'W': cfg.worker_keys_dir = optarg; break;
        case 'A': cfg.admin_keys_dir = optarg; break;
        case 'F':
            if (zf_log_option("log-format", optarg) < 0)
                return 2;
            break;
        case 'L':
            if (zf_log_option("log-level", optarg) < 0)
                return 2;
            break;
        case 'm': parse_metrics(&cfg, optarg); break;
        case 'H': usage(stdout); return 0;
        default: return bad_option(argv[optind - 1]);
        }
    }
    if (optind < argc) {
        zf_log(ZF_LOG_ERROR, "unexpected argument '%s' (see --help)", argv[optind]);
        return 2;
    }
    if (!per_fn_set)
        cfg.max_queued_per_fn = cfg.max_queued;
    if (!cfg.curve_secret && (cfg.client_keys_dir || cfg.worker_keys_dir || cfg.admin_keys_dir)) {
        zf_log(ZF_LOG_ERROR, "--client-keys, --worker-keys and --admin-keys need --curve-secret "
                             "FILE (the broker's own key): without it nothing is checked");
        return 2;
    }
    if (repair && no_journal) {
        zf_log(ZF_LOG_ERROR, "--journal-repair needs a journal: drop --no-journal");
        return 2;
    }
    /* An explicit step the operator runs and reads; a broker never repairs on its own. */
    if (repair)
        return zf_journal_repair(cfg.data_dir) == 0 ? 0 : 1;
    if (no_journal)
        cfg.data_dir = NULL; /* whatever --data said: in-memory was asked for explicitly */
    zfb_notify_init();
    zf_broker_t *b = zf_broker_new(&cfg);
    if (!b)
        return 1;
    /* zf_broker_new has replayed the journal and bound both endpoints: from here every
       request is answered, so systemd may start what depends on the broker */
    zfb_notify_ready(cfg.client_ep, cfg.worker_ep);
    int rc = zf_broker_run(b);
    zfb_notify_stopping(); /* before destroy closes the journal (a sync can take a while) */
    zf_broker_destroy(&b);
    zf_log_event(ZF_LOG_INFO, "broker_stopped", NULL, "stopped");
    return rc == 0 ? 0 : 1;
}
