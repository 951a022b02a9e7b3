/*  zf_httpd — a small HTTP GET server (GNU libmicrohttpd) inside the caller's event loop.

    For /metrics, /healthz and /readyz of the broker and the fleet. No thread of its own:
    libmicrohttpd runs in external epoll mode, the caller polls zf_httpd_fd (readable)
    within zf_httpd_timeout_ms, and calls zf_httpd_serve after each poll. Every socket is
    non-blocking, so a scraper that never reads costs a connection slot until the
    connection timeout, never a stalled loop.

    Bounds: ZF_HTTPD_MAX_CONNS connections at once (more are closed at accept), each closed
    after ZF_HTTPD_TIMEOUT_S seconds without progress; only GET (and HEAD) is answered,
    anything else gets 405; the handler decides the rest (404 for unknown paths).
    Not thread-safe: one thread owns a server.
*/
#ifndef ZF_HTTPD_H
#define ZF_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "zf_prom.h"

#define ZF_HTTPD_MAX_CONNS 16
#define ZF_HTTPD_TIMEOUT_S 10

/* Answers one GET of `path` (without its query): writes the body into `body` (an empty
   buffer), sets *content_type if not text/plain, and returns the HTTP status. */
typedef int zf_httpd_handler_fn(void *arg, const char *path, zf_prom_t *body,
                                const char **content_type);

typedef struct zf_httpd zf_httpd_t;

/* Parses "HOST:PORT" (HOST an IPv4 address, "[IPv6]" or "localhost"; PORT 0-65535, 0 = any
   free port) into *ss and *len. Returns 0, or -1 with a one-line reason in err. */
int zf_httpd_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *err,
                        size_t cap);

/* Listens on addr (as zf_httpd_parse_addr takes it) and answers with fn(arg, ...). what
   names the server in log lines ("metrics"). Returns NULL with one logged line on failure
   (bad address, address in use). The string is copied. */
zf_httpd_t *zf_httpd_new(const char *addr, const char *what, zf_httpd_handler_fn *fn, void *arg);

/* The descriptor to poll for readability (libmicrohttpd's epoll set). */
int zf_httpd_fd(const zf_httpd_t *self);

/* The port it listens on (the one chosen, for PORT 0). */
uint16_t zf_httpd_port(const zf_httpd_t *self);

/* How long the caller's poll may wait at most for this server: ms, or -1 for as long as it
   likes. Call before every poll: it also decides whether zf_httpd_serve must run after it. */
long zf_httpd_timeout_ms(zf_httpd_t *self);

/* Serves what is ready, without blocking: call after every poll, with readable = whether
   zf_httpd_fd polled readable. Handlers run inside this call. */
void zf_httpd_serve(zf_httpd_t *self, bool readable);

/* Closes every connection and the listening socket; sets *self_p to NULL. NULL-safe. */
void zf_httpd_destroy(zf_httpd_t **self_p);

#endif
