/*  zf_top — see zf_top.h.

    Invariants:
    - cur and prev are parsed copies: nothing points into a STATS document after
      zf_top_sample returns.
    - A rate is shown only between two samples of the same broker run (uptime grew) with no
      failed fetch between them; otherwise "-". Counters that went down (a restart within
      one refresh) give "-" too, never a negative or huge rate.
    - The interactive loop sleeps only in ppoll (stdin and the refresh timer together), with
      the signals it handles blocked everywhere else, so a signal is never lost between a
      check and the wait, and a fetch is never interrupted half-way.
*/
#include "zf_top.h"

#include <assert.h>
#include <errno.h>
#include "zf_json.h"

#include <msgpack.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "zf_util.h"

#define TOP_NAME 64     /* bytes kept of a function or worker name (ZFLEET_FUNCTION_MAX + 1) */
#define TOP_JOBS 8      /* job ids kept per worker (the count is kept whole) */
#define TOP_LINE 1024   /* longest line built before it is cut to the width */
#define TOP_MIN_COLS 20 /* below this a frame is still cut, never laid out narrower */

typedef struct {
    char name[TOP_NAME];
    uint64_t queued, running, succeeded, failed;
    bool has_p50, has_p99;
    uint64_t p50_us, p99_us;
} fn_row_t;

typedef struct {
    char name[TOP_NAME], device[32], state[16];
    uint64_t done, failed, njobs;
    uint64_t jobs[TOP_JOBS];
} wrk_row_t;

typedef struct {
    bool valid;
    int64_t wall_ms; /* when it was received */
    uint64_t uptime_ms, dead_letters, journal_ok, journal_errors, workers_lost;
    fn_row_t *fns;
    size_t nfns;
    wrk_row_t *wrks;
    size_t nwrks;
} sample_t;

struct zf_top {
    char endpoint[256];
    sample_t cur, prev;
    bool rates; /* prev is the base of cur's rates (see the invariants) */
    bool down, down_unreachable;
    int64_t down_since_ms;
    char why[256];
};

/* ------------------------------------------------------------------ the model */

static void sample_clear(sample_t *s)
{
    free(s->fns);
    free(s->wrks);
    memset(s, 0, sizeof *s);
}

zf_top_t *zf_top_new(const char *endpoint)
{
    zf_top_t *t = calloc(1, sizeof *t);
    if (t)
        snprintf(t->endpoint, sizeof t->endpoint, "%s", endpoint ? endpoint : "");
    return t;
}

void zf_top_destroy(zf_top_t **self_p)
{
    zf_top_t *t = *self_p;
    if (!t)
        return;
    *self_p = NULL;
    sample_clear(&t->cur);
    sample_clear(&t->prev);
    free(t);
}

static const msgpack_object *get(const msgpack_object *map, const char *key)
{
    return zf_json_get(map, key);
}

/* The unsigned value under key; false (and *v untouched) when absent or of another type. */
static bool get_u64(const msgpack_object *map, const char *key, uint64_t *v)
{
    const msgpack_object *o = get(map, key);
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *v = o->via.u64;
    return true;
}

static uint64_t u64_or_0(const msgpack_object *map, const char *key)
{
    uint64_t v = 0;
    get_u64(map, key, &v);
    return v;
}

/* Copies a string value as printable ASCII (anything else becomes '?'), cut to len - 1. */
static void get_str(const msgpack_object *map, const char *key, char *out, size_t len)
{
    const msgpack_object *o = get(map, key);
    size_t n = 0;
    if (o && o->type == MSGPACK_OBJECT_STR)
        for (; n < o->via.str.size && n + 1 < len; n++) {
            unsigned char ch = (unsigned char)o->via.str.ptr[n];
            out[n] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
        }
    out[n] = 0;
}

static const msgpack_object *get_array(const msgpack_object *map, const char *key)
{
    const msgpack_object *o = get(map, key);
    return o && o->type == MSGPACK_OBJECT_ARRAY ? o : NULL;
}

static void parse_fn(const msgpack_object *o, fn_row_t *f)
{
    get_str(o, "name", f->name, sizeof f->name);
    f->queued = u64_or_0(o, "queued");
    f->running = u64_or_0(o, "running");
    f->succeeded = u64_or_0(o, "succeeded");
    f->failed = u64_or_0(o, "failed");
    /* added by a later broker: absent from older ones, shown as "-" then */
    f->has_p50 = get_u64(o, "run_p50_us", &f->p50_us);
    f->has_p99 = get_u64(o, "run_p99_us", &f->p99_us);
}

static void parse_wrk(const msgpack_object *o, wrk_row_t *w)
{
    get_str(o, "name", w->name, sizeof w->name);
    get_str(o, "device", w->device, sizeof w->device);
    get_str(o, "state", w->state, sizeof w->state);
    w->done = u64_or_0(o, "done");
    w->failed = u64_or_0(o, "failed");
    const msgpack_object *jobs = get_array(o, "jobs");
    w->njobs = jobs ? jobs->via.array.size : 0;
    for (uint64_t i = 0; i < w->njobs && i < TOP_JOBS; i++) {
        const msgpack_object *j = &jobs->via.array.ptr[i];
        w->jobs[i] = j->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? j->via.u64 : 0;
    }
}

/* Fills s from a decoded document. Returns 0, or -1 (no memory, or not a STATS document). */
static int parse_sample(const msgpack_object *doc, sample_t *s)
{
    const msgpack_object *b = get(doc, "broker");
    if (!b || b->type != MSGPACK_OBJECT_MAP)
        return -1;
    s->uptime_ms = u64_or_0(b, "uptime_ms");
    s->dead_letters = u64_or_0(b, "dead_letters");
    s->journal_errors = u64_or_0(b, "journal_errors");
    s->workers_lost = u64_or_0(b, "workers_lost");
    s->journal_ok = 1;
    get_u64(b, "journal_ok", &s->journal_ok);
    const msgpack_object *fns = get_array(doc, "functions"), *ws = get_array(doc, "workers");
    s->nfns = fns ? fns->via.array.size : 0;
    s->nwrks = ws ? ws->via.array.size : 0;
    s->fns = calloc(s->nfns + 1, sizeof *s->fns);
    s->wrks = calloc(s->nwrks + 1, sizeof *s->wrks);
    if (!s->fns || !s->wrks)
        return -1;
    for (size_t i = 0; i < s->nfns; i++)
        parse_fn(&fns->via.array.ptr[i], &s->fns[i]);
    for (size_t i = 0; i < s->nwrks; i++)
        parse_wrk(&ws->via.array.ptr[i], &s->wrks[i]);
    s->valid = true;
    return 0;
}

int zf_top_sample(zf_top_t *t, const void *doc, size_t len, int64_t wall_ms)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    sample_t s = {.wall_ms = wall_ms};
    int rc = -1;
    if (msgpack_unpack_next(&up, doc, len, &off) == MSGPACK_UNPACK_SUCCESS)
        rc = parse_sample(&up.data, &s);
    msgpack_unpacked_destroy(&up);
    if (rc < 0) {
        sample_clear(&s);
        return -1;
    }
    /* a failed fetch in between breaks the pair: its rate would span the outage */
    bool pair = t->cur.valid && !t->down && s.uptime_ms > t->cur.uptime_ms;
    sample_clear(&t->prev);
    t->prev = t->cur;
    t->cur = s;
    t->rates = pair;
    t->down = false;
    return 0;
}

void zf_top_failed(zf_top_t *t, bool unreachable, const char *why, int64_t wall_ms)
{
    if (!t->down || t->down_unreachable != unreachable)
        t->down_since_ms = wall_ms;
    t->down = true;
    t->down_unreachable = unreachable;
    t->rates = false;
    snprintf(t->why, sizeof t->why, "%s", why ? why : "");
}

/* Jobs per second of f since the previous sample, or -1 when there is no rate. */
static double fn_rate(const zf_top_t *t, const fn_row_t *f)
{
    if (!t->rates)
        return -1;
    uint64_t before = 0; /* a function first seen in this sample had finished none */
    for (size_t i = 0; i < t->prev.nfns; i++)
        if (!strcmp(t->prev.fns[i].name, f->name))
            before = t->prev.fns[i].succeeded + t->prev.fns[i].failed;
    uint64_t now = f->succeeded + f->failed;
    if (now < before)
        return -1;
    return (double)(now - before) * 1000.0 / (double)(t->cur.uptime_ms - t->prev.uptime_ms);
}

/* ------------------------------------------------------------------ rendering */

typedef struct {
    char *buf;
    size_t len, cap;
    int lines, rows, cols;
} frame_t;

/* Appends one line, cut to the width; nothing once the frame has all its rows. */
static void line(frame_t *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line(frame_t *f, const char *fmt, ...)
{
    if (f->lines >= f->rows)
        return;
    char tmp[TOP_LINE];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1;
    while (len > 0 && tmp[len - 1] == ' ')
        len--;
    if (len > (size_t)f->cols)
        len = (size_t)f->cols;
    /* (cap holds rows x (cols + 1) + 1, so this always fits) */
    memcpy(f->buf + f->len, tmp, len);
    f->len += len;
    f->buf[f->len++] = '\n';
    f->buf[f->len] = 0;
    f->lines++;
}

static void fmt_duration_us(char *out, size_t len, bool has, uint64_t us)
{
    if (!has)
        snprintf(out, len, "-");
    else if (us < 1000)
        snprintf(out, len, "%lluus", (unsigned long long)us);
    else if (us < 1000000)
        snprintf(out, len, "%.1fms", (double)us / 1e3);
    else if (us < 100000000)
        snprintf(out, len, "%.2fs", (double)us / 1e6);
    else
        snprintf(out, len, "%.0fs", (double)us / 1e6);
}

static void fmt_uptime(char *out, size_t len, uint64_t ms)
{
    unsigned long long s = ms / 1000, d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60;
    if (d)
        snprintf(out, len, "%llud%02lluh%02llum", d, h, m);
    else if (h)
        snprintf(out, len, "%lluh%02llum%02llus", h, m, s % 60);
    else if (m)
        snprintf(out, len, "%llum%02llus", m, s % 60);
    else
        snprintf(out, len, "%llus", s);
}

static void fmt_clock(char *out, size_t len, int64_t wall_ms)
{
    time_t sec = (time_t)(wall_ms / 1000);
    struct tm tm;
    if (!localtime_r(&sec, &tm) || !strftime(out, len, "%H:%M:%S", &tm))
        snprintf(out, len, "?");
}

static void fmt_rate(char *out, size_t len, double rate)
{
    if (rate < 0)
        snprintf(out, len, "-");
    else
        snprintf(out, len, rate < 100 ? "%.1f" : "%.0f", rate);
}

/* name cut to width, its last kept byte replaced by '~' when something was cut */
static const char *fit(char *out, size_t len, const char *name, int width)
{
    snprintf(out, len, "%.*s", width, name);
    if ((int)strlen(name) > width && width > 0)
        out[width - 1] = '~';
    return out;
}

static void render_title(frame_t *f, const zf_top_t *t, const zf_top_view_t *v)
{
    char clock[16], up[32];
    fmt_clock(clock, sizeof clock, v->wall_ms);
    if (!t->cur.valid) {
        line(f, "zfleet top %s - %s", clock, t->endpoint);
        return;
    }
    const sample_t *s = &t->cur;
    char journal[80];
    if (!s->journal_ok)
        snprintf(journal, sizeof journal, "journal DOWN (%llu errors; submits refused)",
                 (unsigned long long)s->journal_errors);
    else if (s->journal_errors)
        snprintf(journal, sizeof journal, "journal ok (%llu errors since start)",
                 (unsigned long long)s->journal_errors);
    else
        snprintf(journal, sizeof journal, "journal ok");
    fmt_uptime(up, sizeof up, s->uptime_ms);
    line(f, "zfleet top %s - up %s, %s - %s", clock, up, journal, t->endpoint);
}

static void render_outage(frame_t *f, const zf_top_t *t, const zf_top_view_t *v)
{
    char since[16], asof[16];
    fmt_clock(since, sizeof since, t->down_since_ms);
    long long ago = (v->wall_ms - t->down_since_ms) / 1000;
    line(f, "%s since %s (%lld s)%s: %s",
         t->down_unreachable ? "broker unreachable" : "no stats from the broker", since,
         ago < 0 ? 0 : ago, v->interval_ms > 0 ? ", retrying" : "", t->why);
    if (t->cur.valid) {
        fmt_clock(asof, sizeof asof, t->cur.wall_ms);
        line(f, "(the figures below are from %s)", asof);
    }
}

static void render_totals(frame_t *f, const zf_top_t *t)
{
    const sample_t *s = &t->cur;
    uint64_t q = 0, r = 0, ok = 0, bad = 0;
    double rate = t->rates ? 0 : -1;
    for (size_t i = 0; i < s->nfns; i++) {
        q += s->fns[i].queued;
        r += s->fns[i].running;
        ok += s->fns[i].succeeded;
        bad += s->fns[i].failed;
        double fr = fn_rate(t, &s->fns[i]);
        rate = rate < 0 || fr < 0 ? -1 : rate + fr;
    }
    char rt[32];
    fmt_rate(rt, sizeof rt, rate);
    line(f, "jobs: %llu queued, %llu running, %llu succeeded, %llu failed, %s/s, %llu dead",
         (unsigned long long)q, (unsigned long long)r, (unsigned long long)ok,
         (unsigned long long)bad, rt, (unsigned long long)s->dead_letters);
    uint64_t busy = 0, idle = 0;
    for (size_t i = 0; i < s->nwrks; i++) {
        busy += !strcmp(s->wrks[i].state, "busy");
        idle += !strcmp(s->wrks[i].state, "idle");
    }
    line(f, "workers: %zu (%llu busy, %llu idle, %llu other), %llu lost since start", s->nwrks,
         (unsigned long long)busy, (unsigned long long)idle,
         (unsigned long long)(s->nwrks - busy - idle), (unsigned long long)s->workers_lost);
}

static void render_fn(frame_t *f, const zf_top_t *t, const fn_row_t *fn, int w)
{
    char name[TOP_NAME], rate[32], p50[32], p99[32];
    fmt_rate(rate, sizeof rate, fn_rate(t, fn));
    fmt_duration_us(p50, sizeof p50, fn->has_p50, fn->p50_us);
    fmt_duration_us(p99, sizeof p99, fn->has_p99, fn->p99_us);
    line(f, "%-*s %7llu %7llu %9llu %7llu %7s %8s %8s", w, fit(name, sizeof name, fn->name, w),
         (unsigned long long)fn->queued, (unsigned long long)fn->running,
         (unsigned long long)fn->succeeded, (unsigned long long)fn->failed, rate, p50, p99);
}

/* The ids a worker holds, as many whole ones as fit in room bytes, then "+N". */
static void fmt_in_hand(char *out, size_t len, const wrk_row_t *w, int room)
{
    size_t n = 0;
    out[0] = 0;
    uint64_t shown = 0;
    for (; shown < w->njobs && shown < TOP_JOBS; shown++) {
        char id[24];
        int k =
            snprintf(id, sizeof id, "%s%llu", shown ? " " : "", (unsigned long long)w->jobs[shown]);
        /* keep room for " +N" unless this is the last id */
        int need = k + (shown + 1 < w->njobs ? 6 : 0);
        if ((int)n + need > room || n + (size_t)k >= len)
            break;
        memcpy(out + n, id, (size_t)k + 1);
        n += (size_t)k;
    }
    if (shown < w->njobs)
        snprintf(out + n, len - n, "%s+%llu", n ? " " : "", (unsigned long long)(w->njobs - shown));
}

static void render_wrk(frame_t *f, const wrk_row_t *wk, int w)
{
    char name[TOP_NAME], hand[TOP_LINE / 2];
    /* 38 bytes of columns after the name, then two spaces */
    fmt_in_hand(hand, sizeof hand, wk, f->cols - w - 40);
    line(f, "%-*s %-7s %-8s %5llu %7llu %6llu  %s", w, fit(name, sizeof name, wk->name, w),
         wk->device, wk->state, (unsigned long long)wk->njobs, (unsigned long long)wk->done,
         (unsigned long long)wk->failed, hand);
}

static int clamp(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* How many rows each table gets out of room: all of both when they fit, else the larger
   one gives up rows first (each keeps one, room allowing). */
static void share_rows(size_t nfns, size_t nwrks, int room, int *fn_rows, int *wrk_rows)
{
    int a = (int)(nfns < 100000 ? nfns : 100000), b = (int)(nwrks < 100000 ? nwrks : 100000);
    while (a + b > room && (a > 1 || b > 1)) {
        if (a >= b)
            a--;
        else
            b--;
    }
    while (a + b > room && (a > 0 || b > 0)) {
        if (b > 0)
            b--;
        else
            a--;
    }
    *fn_rows = a;
    *wrk_rows = b;
}

static void render_tables(frame_t *f, const zf_top_t *t, int footer)
{
    const sample_t *s = &t->cur;
    /* the blank line and the header of each table, then the footer */
    int room = f->rows - f->lines - 4 - footer, fr, wr;
    share_rows(s->nfns, s->nwrks, room, &fr, &wr);
    int w = clamp(f->cols - 60, 12, 32);
    line(f, "%s", "");
    line(f, "%-*s %7s %7s %9s %7s %7s %8s %8s", w, "FUNCTION", "QUEUED", "RUNNING", "SUCCEEDED",
         "FAILED", "RATE/S", "P50", "P99");
    for (size_t i = 0; i < s->nfns && (int)i < fr; i++) {
        if ((int)i == fr - 1 && s->nfns > (size_t)fr)
            line(f, "... %zu more", s->nfns - i);
        else
            render_fn(f, t, &s->fns[i], w);
    }
    w = clamp(f->cols - 62, 12, 32);
    line(f, "%s", "");
    line(f, "%-*s %-7s %-8s %5s %7s %6s  %s", w, "WORKER", "DEVICE", "STATE", "JOBS", "DONE",
         "FAILED", "IN HAND");
    for (size_t i = 0; i < s->nwrks && (int)i < wr; i++) {
        if ((int)i == wr - 1 && s->nwrks > (size_t)wr)
            line(f, "... %zu more", s->nwrks - i);
        else
            render_wrk(f, &s->wrks[i], w);
    }
}

char *zf_top_render(const zf_top_t *t, const zf_top_view_t *v)
{
    assert(v->cols > 0 && v->rows > 0);
    frame_t f = {.rows = v->rows, .cols = v->cols < TOP_MIN_COLS ? TOP_MIN_COLS : v->cols};
    f.cap = (size_t)f.rows * ((size_t)f.cols + 1) + 1;
    if (!(f.buf = malloc(f.cap)))
        return NULL;
    f.buf[0] = 0;
    int footer = v->interval_ms > 0;
    render_title(&f, t, v);
    if (t->down)
        render_outage(&f, t, v);
    else if (!t->cur.valid)
        line(&f, "waiting for the broker's first answer");
    if (t->cur.valid) {
        render_totals(&f, t);
        render_tables(&f, t, footer);
    }
    if (footer) {
        /* the footer sits on the last row, below whatever space is left */
        while (f.lines < f.rows - 1)
            line(&f, "%s", "");
        line(&f, "q quits, space refreshes; every %.1f s", v->interval_ms / 1000.0);
    }
    return f.buf;
}

/* ------------------------------------------------------------------ the terminal */

static volatile sig_atomic_t quit_signal, resized;

static void on_signal(int sig)
{
    if (sig == SIGWINCH)
        resized = 1;
    else
        quit_signal = sig;
}

typedef struct {
    struct termios saved;
    bool raw;
    sigset_t unblocked; /* the mask ppoll waits with */
} term_t;

/* The terminal's size, else $COLUMNS x $LINES, else 80 x 24. */
static void term_size(int fd, int *cols, int *rows)
{
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
        *cols = ws.ws_col;
        *rows = ws.ws_row;
        return;
    }
    uint64_t v;
    const char *c = getenv("COLUMNS"), *l = getenv("LINES");
    *cols = c && zf_parse_u64(c, 10000, &v) == 0 && v > 0 ? (int)v : 80;
    *rows = l && zf_parse_u64(l, 10000, &v) == 0 && v > 0 ? (int)v : 24;
}

static void write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, s, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return; /* the terminal is gone: nothing left to show it */
        s += k;
        n -= (size_t)k;
    }
}

/* Blocks the signals the loop handles (they arrive only inside ppoll), then raw mode, the
   alternate screen and no cursor. Returns 0, or -1 with errno (not a terminal). */
static int term_enter(term_t *tm)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGWINCH);
    sigprocmask(SIG_BLOCK, &set, &tm->unblocked);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGWINCH, &sa, NULL);
    if (tcgetattr(STDIN_FILENO, &tm->saved) < 0)
        return -1;
    struct termios raw = tm->saved;
    /* no echo, no line editing, Ctrl-C and Ctrl-Z as plain bytes (read as keys), reads
       that return what is there; output processing stays on */
    raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO | ISIG | IEXTEN);
    raw.c_iflag &= ~(tcflag_t)(IXON | ICRNL);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) < 0)
        return -1;
    tm->raw = true;
    static const char enter[] = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J";
    write_all(STDOUT_FILENO, enter, sizeof enter - 1);
    return 0;
}

static void term_leave(term_t *tm)
{
    if (!tm->raw)
        return;
    static const char leave[] = "\x1b[?25h\x1b[?1049l";
    write_all(STDOUT_FILENO, leave, sizeof leave - 1);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &tm->saved);
    tm->raw = false;
}

/* Draws a frame over the last one: home, each line cleared to its end, the rest cleared. */
static void term_draw(const zf_top_t *t, int interval_ms)
{
    zf_top_view_t v = {.wall_ms = zf_wall_ms(), .interval_ms = interval_ms};
    term_size(STDOUT_FILENO, &v.cols, &v.rows);
    char *frame = zf_top_render(t, &v);
    if (!frame)
        return;
    size_t n = strlen(frame), cap = n * 5 + 16, k = 0; /* "\n" grows to 5 bytes */
    char *out = malloc(cap);
    if (out) {
        k += (size_t)snprintf(out, cap, "\x1b[H");
        for (const char *p = frame; *p; p++) {
            if (*p != '\n') {
                out[k++] = *p;
                continue;
            }
            memcpy(out + k, "\x1b[K", 3);
            k += 3;
            if (p[1]) { /* no newline after the last row: it would scroll */
                memcpy(out + k, "\r\n", 2);
                k += 2;
            }
        }
        memcpy(out + k, "\x1b[J", 3);
        write_all(STDOUT_FILENO, out, k + 3);
    }
    free(out);
    free(frame);
}

/* ------------------------------------------------------------------ fetching */

/* One STATS round trip into the model. On failure the connection is dropped (the next fetch
   opens a fresh one: what a dead connection queued would otherwise pile up to its high-water
   mark and block us) and its error returned. */
static zf_client_errcode_t fetch(zf_top_t *t, zf_client_t **c, const zf_top_opts_t *o, char *why,
                                 size_t len)
{
    if (!*c && !(*c = o->connect(o->arg))) {
        snprintf(why, len, "cannot connect to %s", o->endpoint);
        zf_top_failed(t, true, why, zf_wall_ms());
        return ZF_CE_UNREACHABLE;
    }
    if (!o->once) /* a fetch holds up the keys: not longer than a refresh or two */
        zf_client_set_request_timeout(*c, clamp(o->interval_ms, 500, 2000));
    zf_event_t *e = zf_client_stats(*c);
    zf_client_errcode_t err = ZF_CE_NONE;
    if (!e) {
        err = zf_client_errcode(*c);
        snprintf(why, len, "%s", zf_client_error(*c));
    } else if (zf_top_sample(t, e->output, e->output_len, zf_wall_ms()) < 0) {
        err = ZF_CE_REJECTED;
        snprintf(why, len, "the broker sent an unreadable STATS document");
    }
    zf_event_destroy(&e);
    if (err != ZF_CE_NONE) {
        zf_top_failed(t, err == ZF_CE_UNREACHABLE, why, zf_wall_ms());
        zf_client_destroy(c);
    }
    return err;
}

static int run_once(zf_top_t *t, zf_client_t **c, const zf_top_opts_t *o, zf_client_errcode_t *err)
{
    char why[512];
    if ((*err = fetch(t, c, o, why, sizeof why)) != ZF_CE_NONE) {
        fprintf(stderr, "zfleet: top: %s\n", why);
        return -1;
    }
    zf_top_view_t v = {.wall_ms = zf_wall_ms()};
    term_size(STDOUT_FILENO, &v.cols, &v.rows);
    char *frame = zf_top_render(t, &v);
    if (!frame) {
        fprintf(stderr, "zfleet: top: out of memory\n");
        *err = ZF_CE_NOMEM;
        return -1;
    }
    fputs(frame, stdout);
    free(frame);
    return 0;
}

/* Reads what was typed. Returns true when it asks to quit; sets *now for a refresh. */
static bool read_keys(bool *now)
{
    char keys[64];
    ssize_t n = read(STDIN_FILENO, keys, sizeof keys);
    if (n == 0)
        return true; /* end of input: nobody is left to press q */
    for (ssize_t i = 0; i < n; i++) {
        /* (not 'Q': some terminals send F2 as ESC O Q) */
        if (keys[i] == 'q' || keys[i] == 3 /* Ctrl-C */)
            return true;
        if (keys[i] == ' ')
            *now = true;
    }
    return false;
}

/* The loop: fetch and draw when the refresh is due, else wait for a key, a signal or the
   refresh, whichever comes first. Returns the signal that ended it, or 0. */
static int run_loop(zf_top_t *t, zf_client_t **c, const zf_top_opts_t *o, term_t *tm)
{
    char why[512];
    int64_t due = zf_now_ms();
    for (;;) {
        int64_t now = zf_now_ms();
        if (now >= due) {
            fetch(t, c, o, why, sizeof why);
            term_draw(t, o->interval_ms);
            /* keep the cadence; after a fetch longer than a refresh, count from its end */
            int64_t after = zf_now_ms();
            due += o->interval_ms;
            if (due <= after)
                due = after + o->interval_ms;
            continue;
        }
        struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
        int64_t left = due - now;
        struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = left % 1000 * 1000000};
        int rc = ppoll(&pfd, 1, &ts, &tm->unblocked);
        if (quit_signal)
            return quit_signal;
        if (resized) {
            resized = 0;
            term_draw(t, o->interval_ms);
        }
        if (rc < 0 && errno != EINTR)
            return 0;
        bool refresh = false;
        if (rc > 0 && (pfd.revents & (POLLHUP | POLLERR | POLLNVAL)) && !(pfd.revents & POLLIN))
            return 0;
        if (rc > 0 && read_keys(&refresh))
            return 0;
        if (refresh)
            due = zf_now_ms();
    }
}

int zf_top_run(const zf_top_opts_t *o, zf_client_errcode_t *err)
{
    assert(o->connect && o->interval_ms > 0);
    *err = ZF_CE_NONE;
    zf_client_t *c = NULL;
    zf_top_t *t = zf_top_new(o->endpoint);
    if (!t) {
        fprintf(stderr, "zfleet: top: out of memory\n");
        *err = ZF_CE_NOMEM;
        return -1;
    }
    if (!(c = o->connect(o->arg))) {
        zf_top_destroy(&t);
        *err = ZF_CE_USAGE;
        return -1;
    }
    int rc = 0;
    if (o->once) {
        rc = run_once(t, &c, o, err);
    } else if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        fprintf(stderr, "zfleet: top: needs a terminal on stdin and stdout (or use --once)\n");
        *err = ZF_CE_USAGE;
        rc = -1;
    } else {
        term_t tm = {0};
        int sig = 0;
        if (term_enter(&tm) < 0) {
            fprintf(stderr, "zfleet: top: cannot set up the terminal: %s\n", strerror(errno));
            *err = ZF_CE_USAGE;
            rc = -1;
        } else {
            sig = run_loop(t, &c, o, &tm);
        }
        term_leave(&tm);
        sigprocmask(SIG_SETMASK, &tm.unblocked, NULL);
        if (sig) {
            zf_client_destroy(&c);
            zf_top_destroy(&t);
            /* die by the signal, as whoever sent it expects, now that the terminal is back */
            signal(sig, SIG_DFL);
            raise(sig);
        }
    }
    zf_client_destroy(&c);
    zf_top_destroy(&t);
    return rc;
}
