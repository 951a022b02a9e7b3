/*  zf_crash — says which module code crashed the worker, and with which signal.

    While a thread runs module code (init, run or fini) it holds a note saying what. A
    fatal signal on that thread (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) then writes one
    line to stderr (here cut in two), e.g.
        zfleet-worker: error: module ./bad.so crashed in init() with signal 11
        (Segmentation fault)
    and lets the signal take its course through the handler that was there before (by
    default the process dies by that signal, so its exit status and the fleet supervisor
    still see it; a sanitizer's handler still reports). The handler is async-signal-safe:
    it reads only the note (thread-local, pointers set before the call), write(2)s and
    sigaction(2)s. Without a note (the worker's own code) it only passes the signal on.
*/
#ifndef ZF_CRASH_H
#define ZF_CRASH_H

#include <stdint.h>

/* Installs the handlers, once per process (later calls do nothing). Returns 0, or -1 if
   sigaction failed (the worker runs on; crashes are then just not named). */
int zf_crash_install(void);

/* The calling thread now runs module code: module is its label (the .so path, or a
   built-in's name), phase "init", "run" or "fini", fn the function (NULL outside run),
   job its id (0 outside run). The strings must outlive the matching zf_crash_leave. */
void zf_crash_enter(const char *module, const char *phase, const char *fn, uint64_t job);
/* The calling thread is back in the worker's own code. */
void zf_crash_leave(void);

#endif
