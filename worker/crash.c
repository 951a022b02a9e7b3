/*  zf_crash — see zf_crash.h.

    Invariant: on_fatal calls only async-signal-safe functions (zf_log_emit, which formats
    and writes one line, sigaction, raise) and reads only the calling thread's note and
    `previous`, which is written before the handlers are installed and never again.
*/
#include "zf_crash.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "../common/zf_log.h"

typedef struct {
    const char *module, *phase, *fn;
    uint64_t job;
} note_t;

static __thread note_t note;

static const struct {
    int sig;
    const char *name; /* strsignal's words, which a handler may not call */
} fatal[] = {
    {SIGSEGV, "Segmentation fault"}, {SIGBUS, "Bus error"}, {SIGFPE, "Floating point exception"},
    {SIGILL, "Illegal instruction"}, {SIGABRT, "Aborted"},
};
#define NFATAL (sizeof fatal / sizeof fatal[0])

static struct sigaction previous[NFATAL];

/* Appends s to line[*len] (cap bytes), cutting it short rather than overflowing. */
static void put(char *line, size_t *len, size_t cap, const char *s)
{
    while (*s && *len < cap)
        line[(*len)++] = *s++;
}

static void put_u64(char *line, size_t *len, size_t cap, uint64_t v)
{
    char digits[24];
    int n = 0;
    do
        digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < (int)sizeof digits);
    while (n > 0 && *len < cap)
        line[(*len)++] = digits[--n];
}

static void on_fatal(int sig, siginfo_t *si, void *uctx)
{
    (void)uctx;
    unsigned k = 0;
    while (k < NFATAL && fatal[k].sig != sig)
        k++;
    if (k == NFATAL)
        return;
    const note_t *n = &note;
    if (n->phase) {
        char line[640];
        size_t len = 0, cap = sizeof line - 1;
        put(line, &len, cap, "module ");
        put(line, &len, cap, n->module ? n->module : "?");
        put(line, &len, cap, " crashed in ");
        put(line, &len, cap, n->phase);
        put(line, &len, cap, "()");
        if (n->fn) {
            put(line, &len, cap, " of function ");
            put(line, &len, cap, n->fn);
        }
        if (n->job) {
            put(line, &len, cap, " (job ");
            put_u64(line, &len, cap, n->job);
            put(line, &len, cap, ")");
        }
        put(line, &len, cap, " with signal ");
        put_u64(line, &len, cap, (uint64_t)sig);
        put(line, &len, cap, " (");
        put(line, &len, cap, fatal[k].name);
        put(line, &len, cap, ")");
        line[len] = 0;
        zf_log_emit(ZF_LOG_ERROR, "module_crash",
                    &(zf_log_fields_t){.job = n->job, .fn = n->fn, .reason = fatal[k].name}, line);
    }
    /* Hand the signal on. A fault (si_code > 0: raised by the kernel for this instruction)
       happens again when we return, now under the previous handler, with its real context;
       one that was sent (kill, raise, abort: si_code <= 0) is sent again. It is blocked
       while we run, so it arrives as we return. */
    sigaction(sig, &previous[k], NULL);
    if (si->si_code <= 0)
        raise(sig);
}

static int installed;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fatal;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    for (unsigned k = 0; k < NFATAL; k++)
        if (sigaction(fatal[k].sig, NULL, &previous[k]) < 0)
            return;
    for (unsigned k = 0; k < NFATAL; k++)
        if (sigaction(fatal[k].sig, &sa, NULL) < 0)
            return;
    installed = 1;
}

int zf_crash_install(void)
{
    pthread_once(&once, install);
    return installed ? 0 : -1;
}

void zf_crash_enter(const char *module, const char *phase, const char *fn, uint64_t job)
{
    note = (note_t){module, phase, fn, job};
}

void zf_crash_leave(void)
{
    note = (note_t){0};
}
