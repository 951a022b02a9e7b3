/*  zf_httpd — see zf_httpd.h. */
#include "zf_httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zf_util.h"

/* Request headers and the like, per connection (libmicrohttpd's default is 32 KiB). */
#define CONN_MEMORY (16u << 10)

struct zf_httpd {
    struct MHD_Daemon *d;
    zf_httpd_handler_fn *fn;
    void *arg;
    char what[32];
    int epfd;
    uint16_t port;
    bool armed; /* the last zf_httpd_timeout_ms said MHD_run must follow the poll */
};

static int fail(char *err, size_t cap, const char *s, const char *why)
{
    snprintf(err, cap, "expected HOST:PORT (e.g. 127.0.0.1:9464), got '%s': %s", s, why);
    return -1;
}

int zf_httpd_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *err,
                        size_t cap)
{
    const char *colon = strrchr(s, ':');
    if (!colon)
        return fail(err, cap, s, "no port");
    uint64_t port;
    if (zf_parse_u64(colon + 1, 65535, &port) < 0)
        return fail(err, cap, s, "the port is not a number from 0 to 65535");
    char host[64];
    size_t n = (size_t)(colon - s);
    if (n == 0)
        return fail(err, cap, s, "no host (use 0.0.0.0 for every interface)");
    if (n >= sizeof host)
        return fail(err, cap, s, "the host is too long");
    memcpy(host, s, n);
    host[n] = 0;
    memset(ss, 0, sizeof *ss);
    if (host[0] == '[' && host[n - 1] == ']') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        host[n - 1] = 0;
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return fail(err, cap, s, "not an IPv6 address in brackets");
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    if (!strcmp(host, "localhost"))
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return fail(err, cap, s, "the host is not an IPv4 address, [IPv6] or localhost");
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof *a4;
    return 0;
}

/* The listening socket is ours (not libmicrohttpd's), so that a bind failure is told with
   its errno and a PORT 0 can be read back. */
static int listen_on(const struct sockaddr_storage *ss, socklen_t len, uint16_t *port)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, 64) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    struct sockaddr_storage got;
    socklen_t glen = sizeof got;
    getsockname(fd, (struct sockaddr *)&got, &glen);
    *port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                            : ((struct sockaddr_in *)&got)->sin_port);
    return fd;
}

static enum MHD_Result reply(struct MHD_Connection *c, int status, char *body, size_t len,
                             enum MHD_ResponseMemoryMode mode, const char *type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO; /* libmicrohttpd closes the connection */
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    zf_httpd_t *h = cls;
    static char not_allowed[] = "only GET\n", oom[] = "out of memory\n";
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, not_allowed, sizeof not_allowed - 1,
                     MHD_RESPMEM_PERSISTENT, "text/plain");
    zf_prom_t body;
    zf_prom_init(&body);
    const char *type = "text/plain; charset=utf-8";
    int status = h->fn(h->arg, url, &body, &type);
    size_t len;
    char *text = zf_prom_take(&body, &len);
    if (!text)
        return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, oom, sizeof oom - 1, MHD_RESPMEM_PERSISTENT,
                     "text/plain");
    return reply(c, status, text, len, MHD_RESPMEM_MUST_FREE, type);
}

/* libmicrohttpd's own messages (a connection refused at the limit, a client that timed
   out) are about peers, not about us: debug level, so a flood cannot flood the log. */
static void on_log(void *cls, const char *fmt, va_list ap)
{
    char line[256];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = 0;
    zf_log(ZF_LOG_DEBUG, "%s: %s", ((zf_httpd_t *)cls)->what, line);
}

zf_httpd_t *zf_httpd_new(const char *addr, const char *what, zf_httpd_handler_fn *fn, void *arg)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256];
    if (zf_httpd_parse_addr(addr, &ss, &len, err, sizeof err) < 0) {
        zf_log(ZF_LOG_ERROR, "%s: %s", what, err);
        return NULL;
    }
    zf_httpd_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->fn = fn;
    h->arg = arg;
    snprintf(h->what, sizeof h->what, "%s", what);
    int fd = listen_on(&ss, len, &h->port);
    if (fd < 0) {
        zf_log(ZF_LOG_ERROR, "%s: cannot listen on %s: %s", what, addr, strerror(errno));
        free(h);
        return NULL;
    }
    unsigned flags =
        MHD_USE_EPOLL | MHD_USE_ERROR_LOG | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_log,
                            h, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)ZF_HTTPD_MAX_CONNS, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)ZF_HTTPD_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                            (size_t)CONN_MEMORY, MHD_OPTION_END);
    const union MHD_DaemonInfo *info =
        h->d ? MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    if (!info) {
        zf_log(ZF_LOG_ERROR, "%s: cannot start the HTTP server (libmicrohttpd) on %s", what, addr);
        if (h->d)
            MHD_stop_daemon(h->d);
        else
            close(fd);
        free(h);
        return NULL;
    }
    h->epfd = info->epoll_fd;
    return h;
}

int zf_httpd_fd(const zf_httpd_t *h)
{
    return h->epfd;
}

uint16_t zf_httpd_port(const zf_httpd_t *h)
{
    return h->port;
}

long zf_httpd_timeout_ms(zf_httpd_t *h)
{
    MHD_UNSIGNED_LONG_LONG ms;
    h->armed = MHD_get_timeout(h->d, &ms) == MHD_YES;
    if (!h->armed)
        return -1;
    return ms > 3600000 ? 3600000 : (long)ms;
}

void zf_httpd_serve(zf_httpd_t *h, bool readable)
{
    /* libmicrohttpd asks for MHD_run after every poll while it has a timeout armed (it
       tracks connections whose sockets are ready but not drained: edge-triggered epoll) */
    if (readable || h->armed)
        MHD_run(h->d);
}

void zf_httpd_destroy(zf_httpd_t **self_p)
{
    zf_httpd_t *h = *self_p;
    if (!h)
        return;
    *self_p = NULL;
    MHD_stop_daemon(h->d); /* closes the listening socket too */
    free(h);
}
