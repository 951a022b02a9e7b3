/*  zf_log — the log lines of every zfleet program: one line per event on stderr, as text
    for people or as JSON for machines (--log-format text|json).

    Text:  "zfleet-broker: warn: worker w1 (cpu:0) removed: no heartbeat; ... count=1"
           (the message, then the event's fields that the message does not already show
           as a word of its own, as key=value; a value with a blank, a quote or an '=' is
           quoted; control characters are escaped, \n, \xNN).
    JSON:  {"time":"2026-12-02T18:40:01.123Z","level":"warn","component":"zfleet-broker",
            "event":"worker_lost","msg":"...","worker":"w1","device":"cpu:0",...}
           (one object per line; "event" only on structured events; strings are escaped,
           invalid UTF-8 becomes U+FFFD; a worker's lines also carry its own worker and
           device unless the event names others).
    Every line is written whole with one write(2) of at most ZF_LOG_LINE_MAX bytes (the
    pipe size that is written atomically), so lines of several threads or processes
    sharing a file or a pipe never interleave. A longer message is cut at a character
    boundary; the JSON line stays valid and says "truncated":true, a text line ends "...".
*/
#ifndef ZF_LOG_H
#define ZF_LOG_H

#include <stdint.h>

typedef enum { ZF_LOG_ERROR, ZF_LOG_WARN, ZF_LOG_INFO, ZF_LOG_DEBUG } zf_log_level_t;
typedef enum { ZF_LOG_TEXT, ZF_LOG_JSON } zf_log_format_t;

#define ZF_LOG_LINE_MAX 4096 /* bytes of a line with its newline: PIPE_BUF on Linux */

/* The fields an event may carry, each left out of the line while NULL (strings) or 0
   (numbers: no job id, lease number or pid is 0). Strings are the caller's; they are read
   during the call only. Output order is this order. */
typedef struct {
    uint64_t job;       /* job id */
    uint32_t attempt;   /* lease number (deliveries so far) */
    const char *fn;     /* function name */
    const char *worker; /* worker name */
    const char *device; /* device label: cpu:0, gpu:1 */
    int64_t pid;        /* a process (the fleet's workers) */
    const char *state;  /* a job's terminal state: lost, timed_out, ... */
    const char *reason; /* why, in a few words (a worker's removal, an exit) */
    uint64_t count;     /* how many (jobs in hand, connections denied, live jobs) */
    uint64_t bytes;     /* a size (the journal's) */
    const char *path;   /* a file */
    const char *peer;   /* a remote address */
    const char *key;    /* a CURVE public key (Z85) */
} zf_log_fields_t;

/* Sets the component (the program name) and the defaults: level from ZF_LOG
   (error|warn|info|debug, default info) and format from ZF_LOG_FORMAT (text|json, default
   text). A bad value there is said in one warning and the default kept. */
void zf_log_init(const char *prog);
/* Changes the component only, e.g. "zfleet-fleet" once a worker knows it supervises. */
void zf_log_set_component(const char *prog);

/* Applies --log-level VALUE or --log-format VALUE (opt without the dashes). A bad value is
   one error line, "--log-level: expected error, warn, info or debug, got 'x'", and -1: the
   caller exits with its usage code. Returns 0 otherwise. */
int zf_log_option(const char *opt, const char *value);
/* Applies every --log-level/--log-format in argv (as "--opt V" or "--opt=V") before the
   real option parsing, so that even its errors come out in the asked format. Returns -1
   after the first bad value's line (see zf_log_option), 0 otherwise. */
int zf_log_scan_args(int argc, char *const argv[]);
/* The level and format in force, by name ("info", "json"): what a fleet passes on. */
const char *zf_log_level_name(void);
const char *zf_log_format_name(void);
/* True when lines of this level are written. */
int zf_log_enabled(zf_log_level_t level);

/* The worker and device every later line carries in JSON (a worker process's own); NULL
   for none. Copied (cut to 63 bytes). Call before other threads log. */
void zf_log_set_context(const char *worker, const char *device);

/* A line without an event: {"msg": ...} and the context. */
void zf_log(zf_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A structured event: `event` is a fixed snake_case name (worker_lost, job_requeued, ...:
   the list is in README, "Logs"); fields may be NULL. */
void zf_log_event(zf_log_level_t level, const char *event, const zf_log_fields_t *fields,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The same with the message already made. Async-signal-safe (no lock, no allocation, no
   stdio, one write): for a fatal signal's handler. */
void zf_log_emit(zf_log_level_t level, const char *event, const zf_log_fields_t *fields,
                 const char *msg);

/* Formats the line zf_log_emit writes, with its newline, at wall-clock time wall_ms, into
   buf (cap bytes, at least 256; at most ZF_LOG_LINE_MAX are used). Returns its length.
   Async-signal-safe. For tests and for zf_log_emit. */
unsigned zf_log_format_line(char *buf, unsigned cap, int64_t wall_ms, zf_log_level_t level,
                            const char *event, const zf_log_fields_t *fields, const char *msg);

#endif
