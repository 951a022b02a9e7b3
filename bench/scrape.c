/*  zfleet-scrape — a Prometheus stand-in for bench/metrics: GET /metrics every INTERVAL ms.

    usage: zfleet-scrape HOST:PORT INTERVAL_MS
    Scrapes over a fresh connection each time (as Prometheus does after the broker closes
    one), reads each answer to its end, and on SIGINT/SIGTERM prints one line:
        scrapes N errors E bytes B mean_us U
    A scrape that fails (no connection, not 200, short) counts as an error. Bench only: it
    sleeps between scrapes, which is what a scraper does.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "zf_httpd.h"
#include "zf_util.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* One GET /metrics; returns the bytes of the answer, or -1. */
static long scrape(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)ss, len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
    long total = 0;
    char buf[65536], head[16] = "";
    if (write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0) {
            if (!total)
                memcpy(head, buf, n < 15 ? (size_t)n : 15);
            total += n;
        }
    }
    close(fd);
    return strncmp(head, "HTTP/1.1 200", 12) ? -1 : total;
}

int main(int argc, char **argv)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256];
    uint64_t ms;
    if (argc != 3 || zf_httpd_parse_addr(argv[1], &ss, &len, err, sizeof err) < 0 ||
        zf_parse_u64(argv[2], 60000, &ms) < 0 || !ms) {
        fprintf(stderr, "usage: zfleet-scrape HOST:PORT INTERVAL_MS%s%s\n", argc == 3 ? ": " : "",
                argc == 3 ? err : "");
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    uint64_t scrapes = 0, errors = 0, bytes = 0, busy_us = 0;
    int64_t next = zf_now_us();
    while (!stop) {
        int64_t t0 = zf_now_us();
        long n = scrape(&ss, len);
        busy_us += (uint64_t)(zf_now_us() - t0);
        scrapes++;
        if (n < 0)
            errors++;
        else
            bytes += (uint64_t)n;
        next += (int64_t)ms * 1000;
        int64_t wait = next - zf_now_us();
        if (wait > 0) {
            struct timespec ts = {wait / 1000000, (wait % 1000000) * 1000};
            nanosleep(&ts, NULL);
        } else {
            next = zf_now_us(); /* behind: no burst to catch up */
        }
    }
    printf("scrapes %llu errors %llu bytes %llu mean_us %llu\n", (unsigned long long)scrapes,
           (unsigned long long)errors, (unsigned long long)bytes,
           (unsigned long long)(scrapes ? busy_us / scrapes : 0));
    return errors ? 1 : 0;
}
