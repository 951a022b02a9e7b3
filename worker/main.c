/*  zfleet-worker — one worker process, or (--fleet) a supervisor of one worker per device. */
#include <assert.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/zf_cert.h"
#include "../common/zf_httpd.h"
#include "../common/zf_util.h"
#include "zf_fleet.h"
#include "zf_python.h"
#include "zf_worker.h"

static void usage(FILE *out)
{
    fputs("usage: zfleet-worker [options]\n"
          "       zfleet-worker --fleet [--gpus LIST|all|none] [--cpus LIST|all|none] [options]\n"
          "  --broker EP          broker worker endpoint (default tcp://127.0.0.1:5556;\n"
          "                       env ZFLEET_WORKER_BROKER)\n"
          "  --device DEV         cpu, cpu:N (pin to core N) or gpu:N (CUDA device N)\n"
          "  --module MODULE      load a handler module (repeatable): PATH.so (C), PATH.py or\n"
          "                       py:package.module (Python, from sys.path)\n"
          "  --venv DIR           run Python modules inside the virtual environment DIR\n"
          "  --credits N          jobs held at once, running + prefetched (default: adaptive,\n"
          "                       1 + round trip / mean run time, within [1, 64])\n"
          "  --name NAME          worker name shown in stats (default host:pid:device)\n"
          "  --heartbeat MS       heartbeat interval (default 1000)\n"
          "  --liveness N         missed heartbeats before the broker is presumed gone (3)\n"
          "  --cancel-grace MS    time a cancelled handler gets to return (default 2000)\n"
          "  --drain-timeout MS   longest drain on SIGTERM, 0 = wait for the job (default 0)\n"
          "  --hold-bytes N       output bytes of sent results kept until the broker surely\n"
          "                       has them, to deliver again after a broker restart\n"
          "                       (default 67108864, 0 = none)\n"
          "  --key FILE           this worker's CURVE key, a NAME.key_secret listed in the\n"
          "                       broker's --worker-keys (docs/SECURITY.md)\n"
          "  --broker-key FILE    the broker's public key (its NAME.key)\n"
          "  --log-format FORMAT  text (default; env ZF_LOG_FORMAT) or json: one JSON object\n"
          "                       per line with time, level, component, event, msg and the\n"
          "                       event's fields (job, fn, worker, device, attempt, ...)\n"
          "  --log-level LEVEL    error, warn, info (default; env ZF_LOG) or debug; a fleet\n"
          "                       passes both on to its workers\n"
          "  --fake-gpu           TESTS ONLY: with --device gpu:N, register as a GPU worker\n"
          "                       without using CUDA (GPU modules take their CPU path);\n"
          "                       with --fleet, the GPUs of --gpus LIST are such fakes\n"
          "fleet options:\n"
          "  --fleet              start and supervise one worker per device\n"
          "  --gpus LIST|all|none GPUs to use, e.g. 0,1 (default all)\n"
          "  --cpus LIST|all|none cores to use, e.g. 0-3,6 (default all)\n"
          "  --worker-bin PATH    worker executable (default: this program)\n"
          "  --restart-backoff MIN:MAX  delay before restarting a worker that exited, in ms:\n"
          "                       MIN, doubling per exit in a row, up to MAX (200:10000)\n"
          "  --crash-limit N      give a device up after N exits within 30 s; 0 = never (8)\n"
          "  --metrics HOST:PORT  serve GET /metrics (Prometheus), /healthz and /readyz over\n"
          "                       HTTP, e.g. 127.0.0.1:9465 (off by default; docs/METRICS.md)\n"
          "  --version            print the version and the embedded Python's\n"
          "exit codes: 0 clean stop, 1 could not start, 3 job timed out, 4 cancel not honoured\n",
          out);
}

static void version(void)
{
    const char *py = zf_python_version();
    printf("zfleet-worker %s\n", ZF_VERSION);
    if (py)
        printf("python %s (embedded: .py and py: modules)\n", py);
    else
        printf("python: none (built without python3-dev: C modules only)\n");
}

/* A bounded number for --opt, or exit ZF_WORKER_EXIT_START after zf_parse_opt's one line. */
static uint32_t num(const char *opt, const char *s, uint64_t min, uint64_t max)
{
    assert(max <= UINT32_MAX);
    uint64_t v;
    if (zf_parse_opt(NULL, opt, s, min, max, &v) < 0)
        exit(ZF_WORKER_EXIT_START);
    return (uint32_t)v;
}

/* --restart-backoff MIN:MAX (ms) */
static void backoff(const char *s, zf_fleet_config_t *fleet)
{
    char min[32];
    const char *colon = strchr(s, ':');
    if (!colon || colon - s >= (long)sizeof min) {
        zf_log(ZF_LOG_ERROR, "--restart-backoff: expected MIN:MAX in ms, got '%s'", s);
        exit(ZF_WORKER_EXIT_START);
    }
    snprintf(min, sizeof min, "%.*s", (int)(colon - s), s);
    fleet->backoff_min_ms = num("restart-backoff", min, 1, 3600000);
    fleet->backoff_max_ms = num("restart-backoff", colon + 1, fleet->backoff_min_ms, 3600000);
}

/* An unknown option, or one without its value: one log line (JSON with --log-format
   json), and the usage too in text mode. Returns the usage exit code. */
static int bad_option(const char *arg)
{
    zf_log(ZF_LOG_ERROR, "option '%s' is unknown or lacks its value (see --help)", arg);
    if (!strcmp(zf_log_format_name(), "text"))
        usage(stderr);
    return ZF_WORKER_EXIT_START;
}

int main(int argc, char **argv)
{
    zf_log_init("zfleet-worker");
    if (zf_log_scan_args(argc, argv) < 0) /* first, so that every line has the asked form */
        return ZF_WORKER_EXIT_START;
    zf_tune_malloc();
    zf_worker_config_t cfg;
    zf_worker_config_defaults(&cfg);
    if (getenv("ZFLEET_WORKER_BROKER"))
        cfg.broker_ep = getenv("ZFLEET_WORKER_BROKER");
    zf_fleet_config_t fleet;
    zf_fleet_config_defaults(&fleet);
    int fleet_mode = 0, device_set = 0;
    static const struct option opts[] = {
        {"broker", 1, 0, 'b'},        {"device", 1, 0, 'd'},
        {"module", 1, 0, 'm'},        {"credits", 1, 0, 'c'},
        {"name", 1, 0, 'n'},          {"heartbeat", 1, 0, 'h'},
        {"liveness", 1, 0, 'l'},      {"cancel-grace", 1, 0, 'g'},
        {"drain-timeout", 1, 0, 't'}, {"fake-gpu", 0, 0, 'F'},
        {"fleet", 0, 0, 'f'},         {"gpus", 1, 0, 'G'},
        {"cpus", 1, 0, 'C'},          {"worker-bin", 1, 0, 'W'},
        {"help", 0, 0, 'H'},          {"restart-backoff", 1, 0, 'R'},
        {"crash-limit", 1, 0, 'L'},   {"venv", 1, 0, 'V'},
        {"version", 0, 0, 'v'},       {"key", 1, 0, 'k'},
        {"broker-key", 1, 0, 'K'},    {"log-format", 1, 0, 'o'},
        {"log-level", 1, 0, 'e'},     {"metrics", 1, 0, 'M'},
        {"hold-bytes", 1, 0, 'B'},    {0, 0, 0, 0}};
    int c;
    opterr = 0; /* bad_option says it, in the asked log format */
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'b': cfg.broker_ep = optarg; break;
        case 'd': cfg.device = optarg, device_set = 1; break;
        case 'm':
            if (cfg.nmodules == ZF_WORKER_MAX_MODULES) {
                zf_log(ZF_LOG_ERROR, "at most %d --module options", ZF_WORKER_MAX_MODULES);
                return ZF_WORKER_EXIT_START;
            }
            cfg.modules[cfg.nmodules++] = optarg;
            break;
        case 'c': cfg.credits = num("credits", optarg, 1, 256); break;
        case 'n': cfg.name = optarg; break;
        case 'h': cfg.heartbeat_ms = num("heartbeat", optarg, 10, 3600000); break;
        case 'l': cfg.liveness = num("liveness", optarg, 1, 1000); break;
        case 'g': cfg.cancel_grace_ms = num("cancel-grace", optarg, 0, 3600000); break;
        case 'B': cfg.hold_bytes = num("hold-bytes", optarg, 0, UINT32_MAX); break;
        case 't': cfg.drain_timeout_ms = num("drain-timeout", optarg, 0, 86400000); break;
        case 'F': cfg.fake_gpu = 1; break;
        case 'f': fleet_mode = 1; break;
        case 'G': fleet.gpus = optarg; break;
        case 'C': fleet.cpus = optarg; break;
        case 'W': fleet.worker_bin = optarg; break;
        case 'R': backoff(optarg, &fleet); break;
        case 'L':
            fleet.crash_limit = num("crash-limit", optarg, 0, ZF_FLEET_CRASH_LIMIT_MAX);
            break;
        case 'V': cfg.venv = optarg; break;
        case 'k': cfg.key_file = optarg; break;
        case 'K': cfg.broker_key_file = optarg; break;
        case 'o':
            if (zf_log_option("log-format", optarg) < 0)
                return ZF_WORKER_EXIT_START;
            break;
        case 'e':
            if (zf_log_option("log-level", optarg) < 0)
                return ZF_WORKER_EXIT_START;
            break;
        case 'M': fleet.metrics_addr = optarg; break;
        case 'v': version(); return 0;
        case 'H': usage(stdout); return 0;
        default: return bad_option(argv[optind - 1]);
        }
    }
    if (optind < argc) {
        zf_log(ZF_LOG_ERROR, "unexpected argument '%s' (see --help)", argv[optind]);
        return ZF_WORKER_EXIT_START;
    }
    if (fleet_mode && (device_set || cfg.name)) {
        zf_log(ZF_LOG_ERROR, "--fleet picks each worker's device and name itself: drop "
                             "--device and --name");
        return ZF_WORKER_EXIT_START;
    }
    char err[512];
    if (fleet.metrics_addr && !fleet_mode) {
        zf_log(ZF_LOG_ERROR, "--metrics is a fleet option (--fleet); a single worker shows "
                             "up in the broker's metrics");
        return ZF_WORKER_EXIT_START;
    }
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (fleet.metrics_addr &&
        zf_httpd_parse_addr(fleet.metrics_addr, &ss, &sslen, err, sizeof err) < 0) {
        zf_log(ZF_LOG_ERROR, "--metrics: %s", err);
        return ZF_WORKER_EXIT_START;
    }
    zf_cert_t key;
    uint8_t broker_key[ZF_KEY_BYTES];
    bool curve;
    /* read here too, so a fleet with a bad key file says so once instead of per restart */
    if (zf_cert_load_pair(cfg.key_file, cfg.broker_key_file, &curve, &key, broker_key, err,
                          sizeof err) < 0) {
        zf_log(ZF_LOG_ERROR, "%s", err);
        return ZF_WORKER_EXIT_START;
    }
    memset(&key, 0, sizeof key);
    if (cfg.venv && zf_python_set_venv(cfg.venv, err, sizeof err) < 0) {
        zf_log(ZF_LOG_ERROR, "%s", err);
        return ZF_WORKER_EXIT_START;
    }
    if (fleet_mode) {
        zf_log_set_component("zfleet-fleet");
        fleet.argv0 = argv[0];
        return zf_fleet_run(&fleet, &cfg);
    }
    return zf_worker_run(&cfg);
}
