/*  zf_log — see zf_log.h.

    Invariant: zf_log_format_line and zf_log_emit touch only their arguments, their stack
    and the settings below, which are written before any other thread (or signal handler)
    logs; they call only write(2) and clock_gettime(2), both async-signal-safe. A line is
    built whole in one buffer and written with one write.
*/
#include "zf_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zf_util.h"

#define CTX_MAX 64
#define FIELDS_MAX 2048 /* the fields' share of a line; the message gets the rest */

static struct {
    const char *prog;
    zf_log_level_t max;
    zf_log_format_t format;
    char worker[CTX_MAX], device[CTX_MAX];
} cfg = {"zfleet", ZF_LOG_INFO, ZF_LOG_TEXT, "", ""};

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const char *const format_names[] = {"text", "json"};

/* ------------------------------------------------------------------ settings */

static int lookup(const char *const *names, int n, const char *s)
{
    for (int i = 0; s && i < n; i++)
        if (!strcmp(names[i], s))
            return i;
    return -1;
}

void zf_log_set_component(const char *prog)
{
    cfg.prog = prog;
}

void zf_log_init(const char *prog)
{
    cfg.prog = prog;
    /* the format first, so that a bad ZF_LOG is told in the asked format */
    const char *fmt = getenv("ZF_LOG_FORMAT");
    int f = lookup(format_names, 2, fmt);
    if (f >= 0)
        cfg.format = (zf_log_format_t)f;
    const char *lv = getenv("ZF_LOG");
    int l = lookup(level_names, 4, lv);
    if (l >= 0)
        cfg.max = (zf_log_level_t)l;
    if (fmt && *fmt && f < 0)
        zf_log(ZF_LOG_WARN, "ZF_LOG_FORMAT=%s: expected text or json; using %s", fmt,
               format_names[cfg.format]);
    if (lv && *lv && l < 0)
        zf_log(ZF_LOG_WARN, "ZF_LOG=%s: expected error, warn, info or debug; using %s", lv,
               level_names[cfg.max]);
}

int zf_log_option(const char *opt, const char *value)
{
    if (!strcmp(opt, "log-level")) {
        int l = lookup(level_names, 4, value);
        if (l < 0) {
            zf_log(ZF_LOG_ERROR, "--log-level: expected error, warn, info or debug, got '%s'",
                   value ? value : "");
            return -1;
        }
        cfg.max = (zf_log_level_t)l;
        return 0;
    }
    if (!strcmp(opt, "log-format")) {
        int f = lookup(format_names, 2, value);
        if (f < 0) {
            zf_log(ZF_LOG_ERROR, "--log-format: expected text or json, got '%s'",
                   value ? value : "");
            return -1;
        }
        cfg.format = (zf_log_format_t)f;
        return 0;
    }
    return -1;
}

int zf_log_scan_args(int argc, char *const argv[])
{
    static const char *const opts[] = {"log-level", "log-format"};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (strncmp(argv[i], "--", 2))
            continue;
        for (int k = 0; k < 2; k++) {
            size_t n = strlen(opts[k]);
            const char *a = argv[i] + 2;
            if (strncmp(a, opts[k], n))
                continue;
            if (a[n] == '=' && zf_log_option(opts[k], a + n + 1) < 0)
                return -1;
            if (a[n] == 0 && i + 1 < argc && zf_log_option(opts[k], argv[++i]) < 0)
                return -1;
        }
    }
    return 0;
}

const char *zf_log_level_name(void)
{
    return level_names[cfg.max];
}

const char *zf_log_format_name(void)
{
    return format_names[cfg.format];
}

int zf_log_enabled(zf_log_level_t level)
{
    return level <= cfg.max;
}

static void copy_ctx(char *dst, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    n = n < CTX_MAX - 1 ? n : CTX_MAX - 1;
    memcpy(dst, src ? src : "", n);
    dst[n] = 0;
}

void zf_log_set_context(const char *worker, const char *device)
{
    copy_ctx(cfg.worker, worker);
    copy_ctx(cfg.device, device);
}

/* ------------------------------------------------------------------ a bounded buffer

   Every put either fits whole or writes nothing and marks the buffer cut, so a cut line
   never ends inside an escape or a character. */

typedef struct {
    char *p;
    unsigned len, cap;
    bool cut;
} out_t;

static bool put_n(out_t *o, const char *s, unsigned n)
{
    if (o->cut || n > o->cap - o->len) {
        o->cut = true;
        return false;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    return true;
}

static bool put(out_t *o, const char *s)
{
    return put_n(o, s, (unsigned)strlen(s));
}

static void put_u64(out_t *o, uint64_t v)
{
    char d[24];
    int n = sizeof d;
    do
        d[--n] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    put_n(o, d + n, (unsigned)(sizeof d - n));
}

static void put_i64(out_t *o, int64_t v)
{
    if (v < 0) {
        put(o, "-");
        put_u64(o, (uint64_t)0 - (uint64_t)v);
    } else {
        put_u64(o, (uint64_t)v);
    }
}

/* Digits of v, zero-padded to width. */
static void put_pad(out_t *o, unsigned v, int width)
{
    char d[12];
    for (int i = width - 1; i >= 0; i--, v /= 10)
        d[i] = (char)('0' + v % 10);
    put_n(o, d, (unsigned)width);
}

/* Bytes of the well-formed UTF-8 character at s (n bytes left), or 0 when s does not start
   one (a stray continuation byte, an overlong form, a surrogate, past U+10FFFF, cut). */
static unsigned utf8_char(const unsigned char *s, size_t n)
{
    unsigned c = s[0], len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (unsigned i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)))
        return 0;
    if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))
        return 0;
    return len;
}

static const char hex[] = "0123456789abcdef";

/* s as the body of a JSON string (no quotes). Stops, cut, at the first character that does
   not fit. */
static void put_json_chars(out_t *o, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n && !o->cut;) {
        unsigned c = u[i], k = utf8_char(u + i, n - i);
        char e[6] = {'\\', 'u', '0', '0', hex[c >> 4 & 0xF], hex[c & 0xF]};
        if (k == 0) {
            put(o, "\\ufffd");
            k = 1;
        } else if (c == '"' || c == '\\') {
            char q[2] = {'\\', (char)c};
            put_n(o, q, 2);
        } else if (c == '\n') {
            put(o, "\\n");
        } else if (c == '\t') {
            put(o, "\\t");
        } else if (c == '\r') {
            put(o, "\\r");
        } else if (c < 0x20 || c == 0x7f) {
            put_n(o, e, 6);
        } else {
            put_n(o, s + i, k);
        }
        i += k;
    }
}

/* s as it goes into a text line: a control character becomes an escape (\n, \t, \xNN) so
   that one event stays one line; everything else is written as it is. */
static void put_text_chars(out_t *o, const char *s, bool quoted)
{
    for (const unsigned char *u = (const unsigned char *)s; *u && !o->cut; u++) {
        char e[4] = {'\\', 'x', hex[*u >> 4], hex[*u & 0xF]};
        if (*u == '\n')
            put(o, "\\n");
        else if (*u == '\t')
            put(o, "\\t");
        else if (*u == '\r')
            put(o, "\\r");
        else if (*u < 0x20 || *u == 0x7f)
            put_n(o, e, 4);
        else if (quoted && (*u == '"' || *u == '\\'))
            put_n(o, (const char[]){'\\', (char)*u}, 2);
        else
            put_n(o, (const char *)u, 1);
    }
}

/* ------------------------------------------------------------------ fields */

typedef struct {
    out_t *o;
    bool json;
    const char *msg;
} fw_t;

static bool is_word_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* Whether msg shows v as a word of its own (not inside a longer name or number). */
static bool shows(const char *msg, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = msg; n && *p; p++)
        if (!strncmp(p, v, n) && (p == msg || !is_word_char(p[-1])) && !is_word_char(p[n]))
            return true;
    return false;
}

/* A text line shows a field only when its message does not already say it, so that the
   lines people read stay as they were and still gain what they lacked. */
static bool skip_in_text(const fw_t *w, const char *v)
{
    return !w->json && shows(w->msg, v);
}

/* ,"key": or " key=" */
static void put_key(fw_t *w, const char *key)
{
    put(w->o, w->json ? ",\"" : " ");
    put(w->o, key);
    put(w->o, w->json ? "\":" : "=");
}

/* A field that does not fit is left out whole (and the buffer stays cut: so are the rest). */
static void field_end(fw_t *w, unsigned start)
{
    if (w->o->cut)
        w->o->len = start;
}

static void field_str(fw_t *w, const char *key, const char *v)
{
    if (!v || skip_in_text(w, v))
        return;
    unsigned start = w->o->len;
    put_key(w, key);
    bool quote = w->json || !*v || strpbrk(v, " \"=") != NULL;
    if (quote)
        put(w->o, "\"");
    if (w->json)
        put_json_chars(w->o, v);
    else
        put_text_chars(w->o, v, quote);
    if (quote)
        put(w->o, "\"");
    field_end(w, start);
}

/* A number, given as its digits. */
static void field_num(fw_t *w, const char *key, const char *digits)
{
    if (skip_in_text(w, digits))
        return;
    unsigned start = w->o->len;
    put_key(w, key);
    put(w->o, digits);
    field_end(w, start);
}

static void field_u64(fw_t *w, const char *key, uint64_t v)
{
    char d[24];
    out_t digits = {d, 0, sizeof d - 1, false};
    put_u64(&digits, v);
    d[digits.len] = 0;
    if (v)
        field_num(w, key, d);
}

static void field_i64(fw_t *w, const char *key, int64_t v)
{
    char d[24];
    out_t digits = {d, 0, sizeof d - 1, false};
    put_i64(&digits, v);
    d[digits.len] = 0;
    if (v)
        field_num(w, key, d);
}

static void put_fields(fw_t *w, const zf_log_fields_t *f)
{
    static const zf_log_fields_t none;
    f = f ? f : &none;
    field_u64(w, "job", f->job);
    field_u64(w, "attempt", f->attempt);
    field_str(w, "fn", f->fn);
    /* a worker process's own name and device, unless the event is about another one */
    bool ctx = w->json && !f->worker && !f->device;
    field_str(w, "worker", ctx && *cfg.worker ? cfg.worker : f->worker);
    field_str(w, "device", ctx && *cfg.device ? cfg.device : f->device);
    field_i64(w, "pid", f->pid);
    field_str(w, "state", f->state);
    field_str(w, "reason", f->reason);
    field_u64(w, "count", f->count);
    field_u64(w, "bytes", f->bytes);
    field_str(w, "path", f->path);
    field_str(w, "peer", f->peer);
    field_str(w, "key", f->key);
}

/* ------------------------------------------------------------------ lines */

/* Days since 1970-01-01 to a civil date (H. Hinnant's algorithm; no tables, no locale). */
static void civil(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* "2026-12-02T18:40:01.123Z" */
static void put_time(out_t *o, int64_t wall_ms)
{
    int64_t days = wall_ms / 86400000, ms = wall_ms % 86400000;
    if (ms < 0)
        days--, ms += 86400000;
    int64_t y;
    unsigned m, d;
    civil(days, &y, &m, &d);
    put_pad(o, (unsigned)y, 4);
    put(o, "-");
    put_pad(o, m, 2);
    put(o, "-");
    put_pad(o, d, 2);
    put(o, "T");
    put_pad(o, (unsigned)(ms / 3600000), 2);
    put(o, ":");
    put_pad(o, (unsigned)(ms / 60000 % 60), 2);
    put(o, ":");
    put_pad(o, (unsigned)(ms / 1000 % 60), 2);
    put(o, ".");
    put_pad(o, (unsigned)(ms % 1000), 3);
    put(o, "Z");
}

static unsigned json_line(out_t *o, int64_t wall_ms, zf_log_level_t level, const char *event,
                          const char *fields, unsigned flen, bool fields_cut, const char *msg)
{
    static const char tail[] = ",\"truncated\":true}\n";
    put(o, "{\"time\":\"");
    put_time(o, wall_ms);
    put(o, "\",\"level\":\"");
    put(o, level_names[level]);
    put(o, "\",\"component\":\"");
    put_json_chars(o, cfg.prog);
    put(o, "\"");
    if (event) {
        put(o, ",\"event\":\"");
        put_json_chars(o, event);
        put(o, "\"");
    }
    put(o, ",\"msg\":\"");
    /* the message gets what the fields and the closing leave */
    unsigned cap = o->cap;
    unsigned room = flen + (unsigned)sizeof tail + 1;
    o->cap = o->len + room < cap ? cap - room : o->len;
    put_json_chars(o, msg);
    bool cut = o->cut || fields_cut;
    o->cap = cap;
    o->cut = false;
    put(o, "\"");
    put_n(o, fields, flen);
    put(o, cut ? tail : "}\n");
    return o->len;
}

static unsigned text_line(out_t *o, zf_log_level_t level, const char *fields, unsigned flen,
                          bool fields_cut, const char *msg)
{
    put_text_chars(o, cfg.prog, false);
    put(o, ": ");
    put(o, level_names[level]);
    put(o, ": ");
    unsigned cap = o->cap;
    unsigned room = flen + 5; /* "..." and "\n" */
    o->cap = o->len + room < cap ? cap - room : o->len;
    put_text_chars(o, msg, false);
    bool cut = o->cut || fields_cut;
    o->cap = cap;
    o->cut = false;
    if (cut)
        put(o, "...");
    put_n(o, fields, flen);
    put(o, "\n");
    return o->len;
}

unsigned zf_log_format_line(char *buf, unsigned cap, int64_t wall_ms, zf_log_level_t level,
                            const char *event, const zf_log_fields_t *fields, const char *msg)
{
    if (cap > ZF_LOG_LINE_MAX)
        cap = ZF_LOG_LINE_MAX;
    bool json = cfg.format == ZF_LOG_JSON;
    char fb[FIELDS_MAX];
    out_t fo = {fb, 0, cap / 2 < sizeof fb ? cap / 2 : sizeof fb, false};
    put_fields(&(fw_t){&fo, json, msg ? msg : ""}, fields);
    out_t o = {buf, 0, cap, false};
    return json ? json_line(&o, wall_ms, level, event, fb, fo.len, fo.cut, msg ? msg : "")
                : text_line(&o, level, fb, fo.len, fo.cut, msg ? msg : "");
}

/* ------------------------------------------------------------------ writing */

void zf_log_emit(zf_log_level_t level, const char *event, const zf_log_fields_t *fields,
                 const char *msg)
{
    if (level > cfg.max)
        return;
    int saved = errno; /* a log line in an error path must not change the error */
    char line[ZF_LOG_LINE_MAX];
    unsigned n = zf_log_format_line(line, sizeof line, zf_wall_ms(), level, event, fields, msg);
    for (unsigned off = 0; off < n;) {
        ssize_t w = write(STDERR_FILENO, line + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (unsigned)w;
    }
    errno = saved;
}

static void vemit(zf_log_level_t level, const char *event, const zf_log_fields_t *fields,
                  const char *fmt, va_list ap)
{
    char msg[ZF_LOG_LINE_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap); /* a longer one is cut further by the line */
    zf_log_emit(level, event, fields, msg);
}

void zf_log(zf_log_level_t level, const char *fmt, ...)
{
    if (level > cfg.max)
        return;
    va_list ap;
    va_start(ap, fmt);
    vemit(level, NULL, NULL, fmt, ap);
    va_end(ap);
}

void zf_log_event(zf_log_level_t level, const char *event, const zf_log_fields_t *fields,
                  const char *fmt, ...)
{
    if (level > cfg.max)
        return;
    va_list ap;
    va_start(ap, fmt);
    vemit(level, event, fields, fmt, ap);
    va_end(ap);
}
