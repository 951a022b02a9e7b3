/*  zf_notify — the broker's word to its service manager (systemd's sd_notify protocol).

    Under systemd with Type=notify the broker says READY=1 once it can serve (the journal
    recovered, both endpoints bound), STOPPING=1 when it stops, and WATCHDOG=1 from its
    event loop every half of WatchdogSec, so a loop that hangs gets the broker restarted.
    Nothing here sleeps or wakes the loop on its own: the loop asks zfb_notify_due_ms how
    long it may wait at most, and calls zfb_notify_tick on every turn.

    The state is the process's (NOTIFY_SOCKET and WATCHDOG_USEC are): zfb_notify_init reads
    it once; before that, or outside systemd (no NOTIFY_SOCKET), every call does nothing.
    Built without libsystemd (meson -Dsystemd=disabled) every call does nothing too.
    Errors: none reported; a message that cannot be sent is dropped (systemd notices a
    missing READY or WATCHDOG by itself).
*/
#ifndef ZF_NOTIFY_H
#define ZF_NOTIFY_H

#include <stdint.h>

/* Reads the watchdog interval (WATCHDOG_USEC, for this process) and arms the loop's pings.
   Call once, from the main thread, before zfb_notify_ready. */
void zfb_notify_init(void);
/* READY=1 with a STATUS line naming the two endpoints. */
void zfb_notify_ready(const char *client_ep, const char *worker_ep);
/* STOPPING=1. */
void zfb_notify_stopping(void);
/* From the event loop, every turn: sends WATCHDOG=1 when half the interval has passed
   since the last one (now_ms from zf_now_ms). */
void zfb_notify_tick(int64_t now_ms);
/* Milliseconds until the next WATCHDOG=1 is due (0 if overdue), or -1 when the watchdog is
   off: the loop's poll waits no longer than that. */
long zfb_notify_due_ms(int64_t now_ms);

#endif
