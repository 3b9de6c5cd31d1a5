/* http.c - the libmicrohttpd daemon: connections, the request handler's dispatch, shutdown.
 *
 * libmicrohttpd calls on_request several times per request: once when the headers are in (the
 * request is created, authorised and routed), once per piece of body, once when the body is
 * complete, and once more after each resume. Which of these it is follows from the request's
 * state (request.h); what to answer is api.c's business, how to answer reply.c's.
 */
#include "api.h"
#include "guard.h"
#include "reply.h"
#include "request.h"
#include "ui.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    HTTP_SHUTDOWN_POLL_MS = 20,
    HTTP_MEMORY_LIMIT = 64 * 1024, /* per-connection pool: headers and I/O buffers */
    HTTP_MHD_LOG_MAX = 512,        /* bytes of one libmicrohttpd message */
    HTTP_NS_PER_MS = 1000000,
    HTTP_NS_PER_S = 1000000000,
    HTTP_DRAIN_S = 1, /* after the shutdown timeout, how long the drained queues may take */
};

/* libmicrohttpd's own messages are about clients that went away or misbehaved (closed mid-request,
 * timed out, sent a malformed header): useful when debugging, noise otherwise. They go through the
 * server's log format at debug level instead of straight to stderr. */
static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    const server *s = cls;
    if (s->level < LOG_DEBUG)
        return;
    char msg[HTTP_MHD_LOG_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    server_log(s, LOG_DEBUG, "libmicrohttpd: %s", msg);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = ci ? guard_open(s->guard, ci->connect_fd) : NULL;
    } else {
        guard_close(s->guard, *socket_context);
        *socket_context = NULL;
    }
}

/* Compares without an early exit, so response timing tells nothing about the key. */
static bool constant_time_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (blen ? blen : 1)]);
    return diff == 0 && blen > 0;
}

static bool authorized(const request *rq)
{
    const char *key = rq->srv->cfg.api_key;
    if (!key[0])
        return true;
    const char *h =
        MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    static const char bearer[] = "Bearer ";
    if (!h || strncmp(h, bearer, sizeof bearer - 1) != 0)
        return false;
    h += sizeof bearer - 1;
    return constant_time_equal(h, strlen(h), key, strlen(key));
}

/* True when the request carries a body (a non-zero Content-Length, or chunked). An error decided
 * from the headers is then sent at once, and MHD closes the connection instead of reading a body
 * nobody needs; without a body the answer waits one call, which keeps the connection open. */
static bool announces_body(struct MHD_Connection *conn)
{
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    return te != NULL || (cl != NULL && strcmp(cl, "0") != 0);
}

/* The first call: the headers are in. Creates the request, checks the key, routes it, and refuses
 * what can be refused before the body is read. */
static enum MHD_Result on_headers(server *s, struct MHD_Connection *conn, const char *url,
                                  const char *method, void **con_cls)
{
    request *rq = request_create(s, conn, method, url);
    if (!rq)
        return MHD_NO;
    *con_cls = rq;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    rq->gc = ci ? ci->socket_context : NULL;
    guard_busy(s->guard, rq->gc, true);

    /* The key is checked before the route, so that without it nothing about the models (not
     * even which names exist) can be learnt. Health stays open for probes. */
    /* Health stays open for probes, and the page and docs (which hold no model data) so that the
     * page can ask for the key. */
    if (strncmp(url, "/v2/health/", 11) != 0 && strcmp(method, "OPTIONS") != 0 &&
        !ui_find(&s->cfg, url) && !authorized(rq)) {
        rq->early = srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_UNAUTHORIZED,
                             "missing or wrong API key; send 'Authorization: Bearer <key>'");
        if (announces_body(conn))
            return reply_error(rq, rq->early, "%s", rq->errbuf);
        return MHD_YES;
    }
    rq->early = api_route(rq, url, method);
    if (rq->early != SRV_OK && announces_body(conn))
        return reply_error(rq, rq->early, "%s", rq->errbuf); /* no use reading it */
    if (rq->early != SRV_OK || !rq->has_body)
        return MHD_YES; /* answered on the next call, which keeps the connection open */

    /* Refuse an oversized body from its Content-Length, before reading any of it. MHD then
     * closes the connection, which is right: the client may still be sending. */
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (*end == 0 && n > (unsigned long long)s->cfg.max_body_bytes)
            return reply_error(rq, SRV_TOO_LARGE, "request body is %llu bytes; the limit is %lld",
                               n, (long long)s->cfg.max_body_bytes);
    }
    rq->early = api_check_headers(rq);
    if (rq->early != SRV_OK)
        return reply_error(rq, rq->early, "%s", rq->errbuf);
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    server *s = cls;
    request *rq = *con_cls;
    (void)version;

    if (!rq)
        return on_headers(s, conn, url, method, con_cls);

    if (rq->replied) {
        /* A response was queued early (413, 415): swallow whatever body still arrives. */
        *upload_size = 0;
        return MHD_YES;
    }

    if (*upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        /* A body that trickles in (rather than stalls, which MHD's own timeout catches) may not
         * hold the connection past the timeout either. */
        if (monotonic_ns() - rq->t0 > s->cfg.connection_timeout * HTTP_NS_PER_S)
            return MHD_NO;
        if (rq->early != SRV_OK)
            return MHD_YES; /* the answer does not depend on these bytes */
        return request_body_append(rq, upload, n) ? MHD_YES : MHD_NO;
    }

    switch (rq->state) {
    case REQUEST_RECEIVING:
        if (rq->early != SRV_OK)
            return reply_error(rq, rq->early, "%s", rq->errbuf);
        if (rq->too_large)
            return reply_error(rq, SRV_TOO_LARGE, "request body exceeds the limit of %lld bytes",
                               (long long)s->cfg.max_body_bytes);
        return api_handle(rq);
    case REQUEST_DONE:
        return api_finish(rq);
    case REQUEST_DECODING:
    case REQUEST_QUEUED:
    case REQUEST_ANSWERING:
        break;
    }
    return MHD_YES; /* suspended work: nothing to do until it resumes */
}

static void log_access(const server *s, const request *rq, int code, int64_t dt,
                       enum MHD_RequestTerminationCode toe)
{
    char addr[INET6_ADDRSTRLEN] = "-";
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, addr, sizeof addr);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, addr, sizeof addr);
    }
    /* The version that answered: the one whose reference the request held. */
    server_log(s, LOG_INFO, "%s \"%s %s\" %d %zuB %.3fms batch=%d%s%s%s", addr, rq->method,
               rq->path, code, rq->resp_bytes, (double)dt / HTTP_NS_PER_MS, rq->job.batch_size,
               rq->model ? " version=" : "", rq->model ? rq->model->version_str : "",
               toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed)");
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    server *s = cls;
    request *rq = *con_cls;
    (void)conn;
    if (!rq)
        return;
    int64_t dt = monotonic_ns() - rq->t0;
    int code = rq->replied ? rq->http_code : 0;
    metrics_request(s->metrics, rq->model_index, code, dt);
    if (s->level >= LOG_INFO)
        log_access(s, rq, code, dt, toe);
    guard_busy(s->guard, rq->gc, false);
    request_destroy(rq);
    *con_cls = NULL;
}

bool http_start(server *s, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%lld", (long long)s->cfg.port);
    int gai = getaddrinfo(s->cfg.host, port, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve --host '%s': %s", s->cfg.host, gai_strerror(gai));
        return false;
    }
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->guard = guard_create(s->cfg.connection_timeout * HTTP_NS_PER_S);
    if (!s->guard) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "cannot start the slow-client guard thread");
        return false;
    }
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)s->cfg.port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)s->cfg.http_threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)s->cfg.max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)s->cfg.connection_timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)HTTP_MEMORY_LIMIT, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        guard_destroy(s->guard);
        s->guard = NULL;
        snprintf(err, errlen, "cannot listen on %s:%lld (address in use, or not permitted)",
                 s->cfg.host, (long long)s->cfg.port);
        return false;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : (uint16_t)s->cfg.port;
    return true;
}

static void wait_idle(server *s, int64_t deadline_ns)
{
    while (atomic_load(&s->inflight) > 0 && monotonic_ns() < deadline_ns) {
        struct timespec ts = {0, HTTP_SHUTDOWN_POLL_MS * HTTP_NS_PER_MS};
        nanosleep(&ts, NULL);
    }
}

void http_shutdown(server *s)
{
    if (!s->daemon)
        return;
    atomic_store(&s->ready, false);
    MHD_socket lfd = MHD_quiesce_daemon(s->daemon);
    int64_t deadline = monotonic_ns() + s->cfg.shutdown_timeout * HTTP_NS_PER_S;
    wait_idle(s, deadline);
    int left = atomic_load(&s->inflight);
    /* Finish whatever is still queued, so that no connection stays suspended. */
    repository_stop(s->repo);
    wait_idle(s, monotonic_ns() + HTTP_DRAIN_S * HTTP_NS_PER_S);
    if (left > 0)
        server_log(s, LOG_WARN, "%d requests were still open after %llds", left,
                   (long long)s->cfg.shutdown_timeout);
    /* MHD_stop_daemon reports every connection closed, so the guard's list is empty after it. */
    MHD_stop_daemon(s->daemon);
    guard_destroy(s->guard);
    s->guard = NULL;
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    s->daemon = NULL;
}
