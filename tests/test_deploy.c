/*  The broker under a service manager (issue 15): what it tells systemd over NOTIFY_SOCKET.

    The test plays systemd: it binds a unix datagram socket in its scratch directory, hands
    its path to a real zfleet-broker as NOTIFY_SOCKET (and WATCHDOG_USEC where a watchdog is
    asked for), and reads the sd_notify datagrams as they come. READY=1 must wait for the
    journal's replay (20,000 queued jobs) and the endpoints; WATCHDOG=1 comes from the loop
    at half the interval, even when the broker's own tick is much longer; STOPPING=1 comes on
    SIGTERM, before a clean exit. */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define HB 250 /* ms, the broker's heartbeat where the test does not say otherwise */

TestSuite(deploy, .fini = zt_kill_all);

/* ------------------------------------------------------------------ helpers */

/* The "service manager's" end: a datagram socket bound at DIR/notify, its path in *path. */
static int notify_listen(const zt_env_t *env, char *path, size_t len)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(path, len, "%s/notify", env->dir);
    cr_assert_lt(strlen(path), sizeof sa.sun_path);
    strcpy(sa.sun_path, path);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0, "bind %s", path);
    /* the kernel stamps each datagram as it is sent, so the spacing of the pings is the
       broker's, not that of this process's reads, which a loaded host delays */
    int one = 1;
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one), 0);
    return fd;
}

/* Waits up to timeout_ms for one datagram; NUL-terminated into buf, the time it was sent
   (CLOCK_REALTIME, ms) in *sent_ms unless NULL. Returns its length, or -1 when none came in
   time. */
static int notify_recv_at(int fd, char *buf, size_t len, int timeout_ms, int64_t *sent_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int64_t until = zt_now_ms() + timeout_ms;
    int r;
    while ((r = poll(&p, 1, (int)(until - zt_now_ms() > 0 ? until - zt_now_ms() : 0))) < 0)
        cr_assert_eq(errno, EINTR, "poll: %s", strerror(errno));
    if (r == 0)
        return -1;
    struct iovec iov = {.iov_base = buf, .iov_len = len - 1};
    union {
        struct cmsghdr align;
        char b[CMSG_SPACE(sizeof(struct timespec))];
    } ctl;
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof ctl};
    ssize_t n = recvmsg(fd, &m, 0);
    cr_assert_geq(n, 0);
    buf[n] = '\0';
    if (sent_ms) {
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        cr_assert(h && h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_TIMESTAMPNS,
                  "no SCM_TIMESTAMPNS on the datagram");
        struct timespec ts;
        memcpy(&ts, CMSG_DATA(h), sizeof ts);
        *sent_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    return (int)n;
}

static int notify_recv(int fd, char *buf, size_t len, int timeout_ms)
{
    return notify_recv_at(fd, buf, len, timeout_ms, NULL);
}

/* Whether the datagram has the assignment line (sd_notify's lines are VAR=VALUE). */
static bool has_line(const char *msg, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = msg; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, line, n) && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

/* Starts the broker with NOTIFY_SOCKET=sock (and WATCHDOG_USEC=wd_usec unless NULL) in its
   environment only, logging to DIR/log_name; does not wait for it. */
static pid_t spawn_notified(const zt_env_t *env, const char *sock, const char *wd_usec,
                            const char *log_name, const char *const *args)
{
    char log[192];
    snprintf(log, sizeof log, "%s/%s", env->dir, log_name);
    setenv("NOTIFY_SOCKET", sock, 1);
    if (wd_usec)
        setenv("WATCHDOG_USEC", wd_usec, 1);
    pid_t pid = zt_spawn("broker/zfleet-broker", log, args);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    return pid;
}

/* SIGTERM: STOPPING=1 comes (after any WATCHDOG=1 already on its way), then exit 0. */
static void stop_and_expect_stopping(pid_t pid, int fd)
{
    cr_assert_eq(kill(pid, SIGTERM), 0);
    char msg[512];
    int64_t until = zt_now_ms() + 10000;
    bool stopping = false;
    while (!stopping && zt_now_ms() < until) {
        cr_assert_geq(notify_recv(fd, msg, sizeof msg, 10000), 0, "no STOPPING=1 on SIGTERM");
        cr_assert(has_line(msg, "STOPPING=1") || has_line(msg, "WATCHDOG=1"),
                  "unexpected after SIGTERM: '%s'", msg);
        stopping = has_line(msg, "STOPPING=1");
    }
    cr_assert(stopping);
    int status = zt_wait_exit(pid, 10000);
    cr_assert(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the broker did not stop cleanly (status %d)", status);
}

/* ------------------------------------------------------------------ tests */

Test(deploy, ready_comes_only_after_the_journal_is_recovered, .timeout = 240)
{
    enum { N = 20000, WINDOW = 1000 };
    zt_env_t env;
    zt_env_init(&env);
    char data[160];
    snprintf(data, sizeof data, "%s/data", env.dir);
    /* a journal of N queued jobs (no worker runs them) */
    pid_t b = zt_broker(&env, HB, "--data", data, "--fsync", "never", NULL);
    zf_client_t *c = zt_client(&env);
    int sent = 0, accepted = 0;
    uint64_t last = 0;
    int64_t until = zt_now_ms() + 120000;
    while (accepted < N) {
        cr_assert_lt(zt_now_ms(), until, "only %d of %d jobs accepted", accepted, N);
        while (sent < N && sent - accepted < WINDOW) {
            char p[16];
            int len = snprintf(p, sizeof p, "%08d", sent);
            cr_assert_eq(zf_client_submit_async(c, "echo", p, (size_t)len, NULL, NULL), 0);
            sent++;
        }
        for (zf_event_t *e = zf_client_next(c, 1000); e; e = zf_client_next(c, 0)) {
            cr_assert_neq(e->type, ZF_EV_REJECTED, "%s", e->text);
            if (e->type == ZF_EV_ACCEPTED) {
                accepted++;
                last = e->id;
            }
            zf_event_destroy(&e);
        }
    }
    zf_client_destroy(&c);
    zt_kill(b, SIGTERM);

    char sock[192], msg[512], log[192], text[16384];
    int fd = notify_listen(&env, sock, sizeof sock);
    snprintf(log, sizeof log, "%s/notified.log", env.dir);
    char hb[16];
    snprintf(hb, sizeof hb, "%d", HB);
    int64_t t0 = zt_now_ms();
    pid_t pid = spawn_notified(&env, sock, NULL, "notified.log",
                               ZT_ARGS("--clients", env.client_ep, "--workers", env.worker_ep,
                                       "--heartbeat", hb, "--data", data, "--fsync", "never"));
    cr_assert_geq(notify_recv(fd, msg, sizeof msg, 60000), 0, "no READY=1 within 60 s (see %s)",
                  log);
    int64_t t_ready = zt_now_ms();
    /* the very first word is READY, and by then the replay is over: its line is logged */
    cr_assert(has_line(msg, "READY=1"), "first notification '%s', not READY=1", msg);
    zt_read_file(log, text, sizeof text);
    const char *restored = strstr(text, "restored 20000 unfinished");
    cr_assert(restored, "READY=1 came before the journal's replay was logged: '%s'", text);
    double replay_ms = -1;
    const char *in = strstr(restored, " in ");
    cr_assert(in && sscanf(in, " in %lf ms", &replay_ms) == 1, "no replay time in '%s'", text);
    cr_assert_geq((double)(t_ready - t0), replay_ms,
                  "READY=1 %lld ms after the start, the replay alone took %.1f ms",
                  (long long)(t_ready - t0), replay_ms);
    cr_assert(strstr(msg, "STATUS=clients on "), "READY without its STATUS line: '%s'", msg);
    /* ...and the broker serves at once, with every job recovered */
    zf_client_t *c2 = zt_client(&env);
    zf_client_set_request_timeout(c2, 2000);
    zf_event_t *e = zf_client_get(c2, last);
    cr_assert(e, "no answer right after READY=1: %s", zf_client_error(c2));
    cr_assert_eq(e->type, ZF_EV_STATUS);
    cr_assert_eq(e->status, ZFLEET_QUEUED);
    zf_event_destroy(&e);
    zf_client_destroy(&c2);
    cr_assert_eq(zt_broker_counter(&env, "queued"), N);
    cr_log_info("READY=1 %lld ms after the start; replay of %d jobs %.1f ms",
                (long long)(t_ready - t0), N, replay_ms);
    /* no WATCHDOG_USEC: nothing more until it stops */
    cr_assert_lt(notify_recv(fd, msg, sizeof msg, 1500), 0, "unasked for: '%s'", msg);
    stop_and_expect_stopping(pid, fd);
    close(fd);
}

/* Collects WATCHDOG=1 for watch_ms, with a client asking for stats between them when busy,
   and checks their count and spacing against a ping every wd_ms / 2. */
static void watch_pings(int fd, const zt_env_t *env, int wd_ms, int watch_ms, bool busy)
{
    char msg[512];
    zf_client_t *c = busy ? zt_client(env) : NULL;
    int pings = 0, requests = 0;
    int64_t start = zt_now_ms(), prev = 0, min_gap = 1 << 30, max_gap = 0, now;
    while (zt_now_ms() - start < watch_ms) {
        if (notify_recv_at(fd, msg, sizeof msg, busy ? 20 : watch_ms / 4, &now) < 0) {
            if (c) {
                zf_event_t *e = zf_client_stats(c);
                cr_assert(e, "stats: %s", zf_client_error(c));
                zf_event_destroy(&e);
                requests++;
            }
            continue;
        }
        cr_assert(has_line(msg, "WATCHDOG=1"), "unexpected notification '%s'", msg);
        if (pings++) {
            min_gap = now - prev < min_gap ? now - prev : min_gap;
            max_gap = now - prev > max_gap ? now - prev : max_gap;
        }
        prev = now;
    }
    zf_client_destroy(&c);
    cr_log_info("%s: %d pings in %d ms (%d requests meanwhile), gaps %lld..%lld ms",
                busy ? "busy" : "idle", pings, watch_ms, requests, (long long)min_gap,
                (long long)max_gap);
    int expect = watch_ms / (wd_ms / 2);
    cr_assert_geq(pings, expect - 2, "%s: %d WATCHDOG=1 in %d ms", busy ? "busy" : "idle", pings,
                  watch_ms);
    cr_assert_leq(pings, expect + 1, "%s: %d WATCHDOG=1 in %d ms", busy ? "busy" : "idle", pings,
                  watch_ms);
    cr_assert_geq(min_gap, wd_ms / 2 - 100, "pings %lld ms apart: more often than asked",
                  (long long)min_gap);
    cr_assert_lt(max_gap, wd_ms, "pings %lld ms apart: systemd would have killed the broker",
                 (long long)max_gap);
}

Test(deploy, watchdog_pings_come_from_the_loop_at_half_the_interval, .timeout = 60)
{
    /* WatchdogSec=1s: a ping every 500 ms, while the broker's own tick is 5 s: an idle loop
       must wake for the pings, a busy one must not send them more often. */
    enum { WD_MS = 1000 };
    zt_env_t env;
    zt_env_init(&env);
    char sock[192], msg[512], usec[24];
    int fd = notify_listen(&env, sock, sizeof sock);
    snprintf(usec, sizeof usec, "%d", WD_MS * 1000);
    pid_t pid = spawn_notified(&env, sock, usec, "notified.log",
                               ZT_ARGS("--clients", env.client_ep, "--workers", env.worker_ep,
                                       "--heartbeat", "5000", "--no-journal"));
    cr_assert_geq(notify_recv(fd, msg, sizeof msg, 10000), 0, "no READY=1 (see %s/notified.log)",
                  env.dir);
    cr_assert(has_line(msg, "READY=1"), "first notification '%s', not READY=1", msg);
    watch_pings(fd, &env, WD_MS, 3000, false);
    watch_pings(fd, &env, WD_MS, 2000, true);
    stop_and_expect_stopping(pid, fd);
    close(fd);
}
