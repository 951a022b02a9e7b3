/*  zf_top — `zfleet top`: a live view of one broker, built on the client protocol's STATS.

    Two halves. The model (zf_top_t) keeps the latest STATS sample and the one before it,
    and renders a frame of plain text: per function queued, running, succeeded, failed,
    rate/s (finished jobs between the two samples, over the broker's own uptime between
    them) and run-time p50/p99 (when the broker reports them, else "-"); per worker device,
    state, jobs in hand, done, failed; the broker's uptime and journal state, or "broker
    unreachable since ...". The driver (zf_top_run) fetches, redraws and reads keys, on a raw
    terminal, or prints one frame (--once). Tests use the model on their own documents.

    Everything shown that came from the network is reduced to printable ASCII first: a
    worker name cannot carry escape sequences to the terminal.
*/
#ifndef ZF_TOP_H
#define ZF_TOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zfleet.h"

typedef struct zf_top zf_top_t;

/* A new model with no sample; endpoint (copied) is shown in the frame's title. NULL only
   without memory. */
zf_top_t *zf_top_new(const char *endpoint);
/* NULL-safe; clears the caller's pointer. */
void zf_top_destroy(zf_top_t **self_p);

/* Takes the STATS document doc[len] (msgpack, PROTOCOL.md §13.1; borrowed for the call),
   received at wall_ms (ms since the epoch), as the latest sample; the one before becomes
   the base of the rates. Clears the unreachable state. Returns 0, or -1 when doc is not a
   STATS document (no memory, or not a map with a `broker` map): the model is unchanged. */
int zf_top_sample(zf_top_t *self, const void *doc, size_t len, int64_t wall_ms);

/* Records that a fetch failed at wall_ms with the error why (copied): the frame says
   "broker unreachable since T" (T: the first failure of the spell; with unreachable false,
   "no stats from the broker since T", for a refusal such as a non-admin key) and keeps the
   last sample's figures, marked as of when they were taken. The rates restart with the
   next two samples. */
void zf_top_failed(zf_top_t *self, bool unreachable, const char *why, int64_t wall_ms);

/* How a frame is laid out. */
typedef struct {
    int cols, rows;  /* at most rows lines of at most cols bytes (both > 0) */
    int64_t wall_ms; /* now, for the clock and "N s ago" */
    int interval_ms; /* > 0: interactive, a footer names the keys and the refresh */
} zf_top_view_t;

/* The frame for view: lines ended by '\n', NUL-terminated; the caller frees it (free()).
   A section with more rows than fit ends in a "... N more" line. NULL only without memory. */
char *zf_top_render(const zf_top_t *self, const zf_top_view_t *view);

/* What zf_top_run needs. connect makes a client of the broker (keys set), or prints one
   line on stderr and returns NULL; it is called once before anything is shown, and again
   after every failed fetch (a fresh connection drops what the old one had queued). */
typedef struct {
    zf_client_t *(*connect)(void *arg);
    void *arg;
    const char *endpoint; /* for the title */
    int interval_ms;      /* refresh, > 0 */
    bool once;            /* print one frame on stdout and return */
} zf_top_opts_t;

/* Runs `zfleet top`. Interactive (not once): needs stdin and stdout on a terminal; puts it
   in raw mode on the alternate screen, redraws every interval_ms (at once on a resize),
   quits on `q` or Ctrl-C, refreshes on space, and keeps retrying an unreachable broker.
   The terminal is restored on every way out, SIGINT, SIGTERM and SIGHUP included (after
   which the process dies by that signal, as its parent expects). Returns 0, or -1 after
   one line on stderr with *err the cause: ZF_CE_USAGE (connect failed, or no terminal),
   or, with once, the fetch's error (ZF_CE_UNREACHABLE, ZF_CE_DENIED, ZF_CE_REJECTED...). */
int zf_top_run(const zf_top_opts_t *opts, zf_client_errcode_t *err);

#endif
