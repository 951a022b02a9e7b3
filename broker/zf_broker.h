/*  zf_broker — the zfleet broker: queues, dispatch, liveness, result store, stats.

    One thread runs one event loop (zmq_poll over the client ROUTER, the worker ROUTER and a
    signalfd) with the timers kept in heaps and lists; nothing sleeps or busy-polls.
    zf_broker_run returns when SIGINT or SIGTERM arrives or zf_broker_stop is called; SIGHUP
    reads the key directories again (with CURVE on; otherwise it is logged and ignored).
*/
#ifndef ZF_BROKER_H
#define ZF_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#define ZF_REATTACH_DEFAULT UINT32_MAX

typedef enum { ZF_FSYNC_ALWAYS, ZF_FSYNC_INTERVAL, ZF_FSYNC_NEVER } zf_fsync_t;

/* result_max_bytes that follows result_store_bytes (the default). */
#define ZF_RESULT_MAX_FOLLOW UINT64_MAX

typedef struct {
    const char *client_ep;                /* default tcp://127.0.0.1:5555 */
    const char *worker_ep;                /* default tcp://127.0.0.1:5556 */
    uint32_t heartbeat_ms;                /* default 1000 */
    uint32_t liveness;                    /* missed heartbeats before a worker is dead; default 3 */
    uint32_t run_grace_ms;                /* the broker ends an attempt that ran this long past its
                                       timeout with no word from the worker (the worker's own
                                       timeout should have fired); 0 = heartbeat x liveness */
    uint32_t reattach_ms;                 /* after a restart, how long jobs that were running wait
                                       for their workers to claim them back (PROTOCOL.md
                                       §7.11); 0 = off (they run again at once);
                                       ZF_REATTACH_DEFAULT = heartbeat x liveness */
    uint64_t max_queued;                  /* jobs queued (all functions); default 2,000,000 */
    uint64_t max_queued_per_fn;           /* jobs queued for one function; default max_queued */
    uint64_t max_queued_bytes;            /* payload bytes of unfinished jobs (all functions);
                                       default a quarter of the machine's memory */
    uint64_t max_queued_per_client;       /* unfinished jobs one client connection may have;
                                       default max_queued / 2 */
    uint64_t max_queued_bytes_per_client; /* and their payload bytes; default
                                       max_queued_bytes / 2 */
    uint64_t client_buffer_bytes;         /* result bytes that may wait unread for one client
                                       connection; more are held back (kept in the result
                                       store) until it reads; default 64 MiB */
    uint64_t max_payload;                 /* bytes of one payload; default 64 MiB */
    uint64_t max_results;                 /* finished jobs kept for get/wait; default 100,000 */
    uint64_t result_store_bytes;          /* bytes the kept results may hold in memory (outputs, and
                                       the payloads of dead letters); default 1 GiB, >= 1 */
    uint32_t result_ttl_ms;               /* how long a finished job is kept; default 1 h */
    uint32_t max_attempts;                /* default for jobs that do not say; default 3 */
    uint64_t max_dead;                    /* dead-letter list bound; default 10,000 */
    const char *data_dir;                 /* journal and job-id files (zf_ids.h); NULL = neither */
    zf_fsync_t fsync;                     /* journal fsync policy; default always */
    uint32_t fsync_interval_ms;           /* with ZF_FSYNC_INTERVAL */
    bool fsync_thread;                    /* with ZF_FSYNC_ALWAYS: the sync runs in the
                                             journal's flusher thread, group commit across
                                             loop turns (zf_journal.h); default true, false
                                             (--fsync always-inline): in the loop */
    uint64_t result_max_bytes;            /* largest output written whole to the journal; a longer
                                       one is journaled by its length only and comes back
                                       output_lost after a restart (the result in memory is
                                       whole). Default ZF_RESULT_MAX_FOLLOW: result_store_bytes,
                                       so every output the store would keep is journaled whole */
    uint64_t compact_min_bytes; /* journal size before compaction is considered; 0 = 64 MiB */
    /* CURVE (zf_auth.h, docs/SECURITY.md): the broker's own .key_secret turns it on for both
       endpoints; NULL = off. The directories of public .key files are the allowlists:
       worker_keys_dir and one of client_keys_dir / admin_keys_dir are needed with it.
       SIGHUP reads the directories again. */
    const char *curve_secret;
    const char *client_keys_dir, *worker_keys_dir, *admin_keys_dir;
    /* HOST:PORT for /metrics, /healthz and /readyz over HTTP (docs/METRICS.md), served by
       the event loop itself; NULL = off (the default) */
    const char *metrics_addr;
} zf_broker_config_t;

typedef struct zf_broker zf_broker_t;

/* Fills cfg with the defaults above. The per-client bounds are left 0 (= derived from the
   broker-wide ones when the broker starts), so a caller that changes those need not
   recompute them. */
void zf_broker_config_defaults(zf_broker_config_t *cfg);

/* Creates a broker, binds both endpoints and (with a data_dir) replays the journal.
   Returns NULL with a logged one-line reason on failure (address in use, bad journal
   directory). The config's strings are borrowed for the broker's life. */
zf_broker_t *zf_broker_new(const zf_broker_config_t *cfg);

/* Runs the event loop until stopped (SIGINT, SIGTERM or zf_broker_stop). Returns 0 on a
   clean stop, -1 on a fatal error. Any one thread may run it (not two at once); the broker
   is then that thread's until zf_broker_run returns. zf_broker_new blocks SIGINT, SIGTERM
   and SIGHUP in the thread that calls it (they arrive through a signalfd): a
   process-directed signal reaches the loop only when every other thread blocks it too. */
int zf_broker_run(zf_broker_t *self);

/* Asks a running (or about to run) zf_broker_run to stop: it finishes its loop turn, flushes
   and returns 0. Safe from any thread and from a signal handler (it only writes an eventfd);
   a request made before zf_broker_run starts makes it return after one turn. The caller
   still owns the broker: join the thread that runs it, then zf_broker_destroy. Returns 0,
   or -1 (errno from write). */
int zf_broker_stop(zf_broker_t *self);

/* Destroys the broker and sets *self_p to NULL. NULL-safe. */
void zf_broker_destroy(zf_broker_t **self_p);

#endif
