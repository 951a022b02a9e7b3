/*  zf_notify — sd_notify for the broker (see zf_notify.h). */
#include "zf_notify.h"

#ifdef ZF_HAVE_LIBSYSTEMD

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

#include "../common/zf_util.h"

static bool on;             /* zfb_notify_init ran and NOTIFY_SOCKET is set */
static int64_t wd_every_ms; /* half of WATCHDOG_USEC; 0 = no watchdog */
static int64_t wd_next_ms;  /* when the next WATCHDOG=1 is due */

void zfb_notify_init(void)
{
    const char *sock = getenv("NOTIFY_SOCKET");
    on = sock && *sock;
    uint64_t usec = 0;
    /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID (if set) is this process */
    if (on && sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        wd_every_ms = (int64_t)(usec / 2000);
        if (wd_every_ms < 1)
            wd_every_ms = 1;
        wd_next_ms = zf_now_ms(); /* the first ping goes with the first loop turn */
        zf_log(ZF_LOG_INFO, "systemd watchdog: %llu ms, pinged every %lld ms",
               (unsigned long long)(usec / 1000), (long long)wd_every_ms);
    }
}

void zfb_notify_ready(const char *client_ep, const char *worker_ep)
{
    if (!on)
        return;
    char status[512];
    snprintf(status, sizeof status, "READY=1\nSTATUS=clients on %s, workers on %s", client_ep,
             worker_ep);
    if (sd_notify(0, status) <= 0)
        zf_log(ZF_LOG_WARN, "sd_notify: READY=1 could not be sent");
}

void zfb_notify_stopping(void)
{
    if (on)
        sd_notify(0, "STOPPING=1");
}

void zfb_notify_tick(int64_t now_ms)
{
    if (!wd_every_ms || now_ms < wd_next_ms)
        return;
    sd_notify(0, "WATCHDOG=1");
    wd_next_ms = now_ms + wd_every_ms;
}

long zfb_notify_due_ms(int64_t now_ms)
{
    if (!wd_every_ms)
        return -1;
    return wd_next_ms <= now_ms ? 0 : (long)(wd_next_ms - now_ms);
}

#else /* built without libsystemd: nothing to say, nobody to say it to */

void zfb_notify_init(void) {}
void zfb_notify_ready(const char *client_ep, const char *worker_ep) {}
void zfb_notify_stopping(void) {}
void zfb_notify_tick(int64_t now_ms) {}
long zfb_notify_due_ms(int64_t now_ms)
{
    return -1;
}

#endif
