/*  Test harness: real zfleet processes over real sockets.

    Every test gets its own ipc:// endpoints (unique per process and call), starts the real
    zfleet-broker / zfleet-worker binaries from the build directory, and kills them with
    real signals. Helpers abort the test (cr_assert) when something does not come up.

    CURVE: with ZT_CURVE=1 in the environment (or zt_curve_on) every start-up is secured:
    the broker gets its key and the three key directories, workers their key, and
    zt_client, zt_cli and the stats helpers speak with the admin key (see zt_curve_on).
*/
#ifndef ZT_HARNESS_H
#define ZT_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "zfleet.h"

typedef struct {
    char client_ep[128];
    char worker_ep[128];
    char dir[96]; /* a fresh scratch directory for this test */
    bool curve;   /* brokers started by the harness get CURVE (zt_curve_on) */
} zt_env_t;

/* The build directory (binaries live under it). */
const char *zt_build_dir(void);
/* Absolute path of a built file, e.g. zt_path("worker/zfleet-worker"). Static buffer per
   call slot (4 in rotation). */
const char *zt_path(const char *rel);

/* Fresh endpoints and scratch directory; with ZT_CURVE=1 also zt_curve_on. */
void zt_env_init(zt_env_t *env);
/* Replaces env's endpoints by tcp://127.0.0.1:PORT ones on two free ports (call before the
   broker starts). */
void zt_env_tcp(zt_env_t *env);
/* A free TCP port on 127.0.0.1 (free when asked: bind it soon). */
int zt_free_port(void);

/* ------------------------------------------------------------------ CURVE keys
   The keys of a test live in env->dir/keys: NAME.key (public) and NAME.key_secret for every
   key made, and the broker's allowlists keys/clients, keys/workers, keys/admins, which
   hold copies of public .key files only (a role is granted by listing the copy, revoked by
   removing it). */

/* Makes keys/ with the keys "broker", "admin" (listed in admins), "client"
   (in clients) and "worker" (in workers), each unless keys/NAME.key_secret is there
   already, and sets env->curve. From then on:
   - zt_broker / zt_fleet_up add --curve-secret keys/broker.key_secret --client-keys
     keys/clients --worker-keys keys/workers --admin-keys keys/admins, unless the extra
     arguments already have --curve-secret; the endpoint is then known as a CURVE one;
   - workers of a CURVE endpoint (zt_worker, zt_fleet_up, and zt_spawn of
     worker/zfleet-worker with --broker EP) get --key keys/worker.key_secret and
     --broker-key keys/broker.key, unless their arguments have --key;
   - zt_client, zt_cli, zt_cli_err and the stats helpers use the admin key at a CURVE
     endpoint (a broker this harness started with CURVE), no keys elsewhere. */
void zt_curve_on(zt_env_t *env);
/* Makes the keypair keys/NAME with `zfleet keygen` and lists it in keys/ROLE ("clients",
   "workers" or "admins"; NULL: nowhere). Returns the public key in Z85 (static buffer, 4
   in rotation). */
const char *zt_key_new(const zt_env_t *env, const char *name, const char *role);
/* keys/NAME.key_secret (secret) or keys/NAME.key. Static buffer, 4 in rotation. */
const char *zt_key_path(const zt_env_t *env, const char *name, bool secret);
/* The directory keys/ROLE, or keys/ itself for NULL. Static buffer, 4 in rotation. */
const char *zt_key_dir(const zt_env_t *env, const char *role);
/* Lists key NAME in keys/ROLE (a copy of its .key) or removes it from there. */
void zt_key_list(const zt_env_t *env, const char *name, const char *role);
void zt_key_unlist(const zt_env_t *env, const char *name, const char *role);

/* A client of env speaking with key NAME (keys/NAME.key_secret, the broker's keys/broker.key)
   or, name NULL, without keys. Request timeout 3000 ms. */
zf_client_t *zt_client_as(const zt_env_t *env, const char *name);
/* zt_cli_err with key NAME (ZFLEET_KEY, ZFLEET_BROKER_KEY) or, name NULL, without keys. */
int zt_cli_as(const zt_env_t *env, const char *name, char *out, size_t outlen, char *err,
              size_t errlen, ...);

/* Starts a program from the build dir with NULL-terminated args; its stdout and stderr go
   to log (or /dev/null when log is NULL). Returns the pid. */
pid_t zt_spawn(const char *rel_bin, const char *log, const char *const *args);

/* Starts a broker on env's endpoints with heartbeat hb_ms and extra args (NULL-terminated
   list, may be empty). Waits until it answers a ping. */
pid_t zt_broker(const zt_env_t *env, int hb_ms, ...);
/* Starts a worker connected to env with heartbeat hb_ms and extra args (NULL-terminated). */
pid_t zt_worker(const zt_env_t *env, int hb_ms, ...);

/* A NULL-terminated argument list for zt_fleet_t, e.g. ZT_ARGS("--credits", "4"). */
#define ZT_ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

#define ZT_MAX_WORKERS 16

/* The start-up most tests share: a broker, `workers` workers, all registered. */
typedef struct {
    int hb_ms;                      /* heartbeat of the broker and of every worker (> 0) */
    const char *const *broker_args; /* extra broker arguments (ZT_ARGS), or NULL */
    int workers;                    /* workers to start, 0 to ZT_MAX_WORKERS */
    const char *const *worker_args; /* extra arguments of every worker, or NULL */
    const char *const *names;       /* or NULL; else worker i also gets --name names[i] */
    /* set by zt_fleet_up */
    pid_t broker;
    pid_t worker[ZT_MAX_WORKERS];
} zt_fleet_t;

/* zt_env_init(env), zt_broker, then the workers, and waits until the broker lists all of
   them. Aborts the test (naming the logs) when something does not come up. */
void zt_fleet_up(zt_env_t *env, zt_fleet_t *fleet);
/* zt_fleet_up, and returns a client connected to it (zt_client; the caller destroys it). */
zf_client_t *zt_start(zt_env_t *env, zt_fleet_t *fleet);

/* Polls broker stats until `n` workers are connected (serving fn, if not NULL). Returns
   true if that happened within timeout_ms. */
bool zt_wait_workers(const zt_env_t *env, int n, int timeout_ms);
/* Number of connected workers (from stats), or -1. */
int zt_count_workers(const zt_env_t *env);
/* A broker counter from stats ("broker" section), e.g. "stale_results"; -1 on error. */
long long zt_broker_counter(const zt_env_t *env, const char *name);

/* Sends sig and, for SIGKILL/SIGTERM, reaps it (waiting up to 10 s). */
void zt_kill(pid_t pid, int sig);
/* Waits for pid to exit up to timeout_ms. Returns the wait status, or -1 on timeout. */
int zt_wait_exit(pid_t pid, int timeout_ms);

/* Runs the zfleet CLI with ZFLEET_BROKER=env->client_ep and the given args
   (NULL-terminated); captures stdout into out (NUL-terminated). Returns its exit code.
   At a CURVE endpoint it speaks with the admin key (zt_curve_on). */
int zt_cli(const zt_env_t *env, char *out, size_t outlen, ...);
/* The same, and its stderr into err (NUL-terminated; via a file in env->dir). */
int zt_cli_err(const zt_env_t *env, char *out, size_t outlen, char *err, size_t errlen, ...);

/* Reads up to len - 1 bytes of path into buf, NUL-terminated (empty if it cannot be read).
   Returns the bytes read. */
size_t zt_read_file(const char *path, char *buf, size_t len);

/* A client connected to env (with the admin key at a CURVE endpoint). */
zf_client_t *zt_client(const zt_env_t *env);

/* Milliseconds since an arbitrary point. */
int64_t zt_now_ms(void);

/* Blocks the calling thread for ms (tests only: the runtime never sleeps). */
void zt_pause_ms(int ms);

/* Fetches the broker's STATS document and returns fn(document, arg), or -1 when it cannot
   be fetched. The document lives only during the call. */
struct msgpack_object;
long long zt_with_stats(const zt_env_t *env,
                        long long (*fn)(struct msgpack_object *doc, const char *arg),
                        const char *arg);
/* The value under a string key of a msgpack map, or NULL. */
struct msgpack_object *zt_mp_get(struct msgpack_object *map, const char *key);

/* Polls GET until the job is running (in a worker's hands). False after timeout_ms. */
bool zt_wait_running(zf_client_t *c, uint64_t id, int timeout_ms);

/* A RESULT's output read as a decimal number (outputs are not NUL-terminated); fails the
   test when it is not one. */
long zt_output_long(const zf_event_t *e);

/* Fills buf[n] with bytes derived from seed and their position; zt_pattern_mismatch gives
   the index of the first byte of p[n] that differs from that pattern, or n if none does. */
void zt_pattern(unsigned char *buf, size_t n, unsigned seed);
size_t zt_pattern_mismatch(const void *p, size_t n, unsigned seed);

/* Resident set size of a process in kB (VmRSS), or -1. */
long zt_rss_kb(pid_t pid);

/* Adds a process started some other way to those zt_kill_all ends. */
void zt_track(pid_t pid);

/* Kills every process the harness started (registered at exit too). It is every suite's
   teardown: TestSuite(name, .fini = zt_kill_all). */
void zt_kill_all(void);

#endif
