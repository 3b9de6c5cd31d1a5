/* http.c - the libmicrohttpd daemon: connections, the request handler's dispatch, shutdown.
 *
 * libmicrohttpd calls on_request several times per request: once when the headers are in (the
 * request is created, authorised and routed), once per piece of body, once when the body is
 * complete, and once more after each resume. Which of these it is follows from the request's
 * state (request.h); what to answer is api.c's business, how to answer reply.c's.
 */
#include "api.h"
#include "framing.h"
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
#include <strings.h>
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
    /* bytes of a refused chunked body read before the connection is cut */
    HTTP_DRAIN_MAX = 1 << 20,
    HTTP_MAX_TARGET = 8192, /* bytes of a request target (path and query) */
    HTTP_MAX_PARAMS = 64,   /* arguments of a query */
};

static const char HTTP_HEALTH_PREFIX[] = "/v2/health/";

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

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Authorization: Bearer <key>, read as RFC 9110 (11.4) and RFC 6750 write it: the scheme in any
 * case, one or more spaces, the credentials, nothing after them but white space. (A NUL or CR in
 * the value, or a second Authorization line, is refused earlier as malformed.) */
static bool authorized(const request *rq)
{
    static const char scheme[] = "bearer";
    const char *key = rq->srv->cfg.api_key;
    if (!key[0])
        return true;
    const char *h = NULL;
    size_t n = 0;
    if (MHD_lookup_connection_value_n(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION,
                                      strlen(MHD_HTTP_HEADER_AUTHORIZATION), &h, &n) != MHD_YES)
        return false;
    while (n > 0 && is_ows(h[n - 1]))
        n--;
    size_t sl = sizeof scheme - 1;
    if (n <= sl || strncasecmp(h, scheme, sl) != 0 || h[sl] != ' ')
        return false;
    size_t i = sl;
    while (i < n && h[i] == ' ')
        i++;
    return constant_time_equal(h + i, n - i, key, strlen(key));
}

/* The body a request announces: a Content-Length (*length), or chunked (*chunked). */
static bool announces_body(struct MHD_Connection *conn, unsigned long long *length, bool *chunked)
{
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    *length = 0;
    *chunked = te != NULL;
    if (cl) {
        char *end;
        *length = strtoull(cl, &end, 10); /* libmicrohttpd has checked it is all digits */
    }
    return *chunked || *length > 0;
}

/* A CORS preflight: what a browser sends, without credentials, before a cross-origin request. */
static bool is_preflight(const request *rq, const char *method)
{
    return rq->srv->cfg.cors_origin[0] && !strcmp(method, "OPTIONS") &&
           MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "Origin") &&
           MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "Access-Control-Request-Method");
}

/* Sends an answer decided from the headers. When a body is coming, now (libmicrohttpd then
 * closes the connection rather than read what nobody needs); otherwise on the next call, which
 * keeps the connection open. */
static enum MHD_Result early_answer(request *rq, srv_status s, bool body)
{
    rq->early = s;
    if (body)
        return reply_error(rq, rq->early, "%s", rq->errbuf);
    return MHD_YES;
}

/* The request line is in (libmicrohttpd's URI log callback, called once per request, before the
 * header fields and before the query is split into arguments): the request starts here. A target
 * past HTTP_MAX_TARGET or with more than HTTP_MAX_PARAMS arguments is refused with 414 or 400
 * once the headers are in. Its query is cut off now, in libmicrohttpd's own buffer, before
 * libmicrohttpd splits it: in 0.9.75 running out of connection memory while splitting arguments
 * loses its own 431 and goes on reading, so no request may get that far. */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
    server *s = cls;
    request *rq = request_create(s, conn);
    if (!rq)
        return NULL;
    size_t len = strlen(uri), params = 0;
    char *query = strchr(uri, '?');
    for (const char *p = query; p && *p; p++)
        params += *p == '&' || *p == '?';
    rq->target_len = len;
    if (len > HTTP_MAX_TARGET)
        rq->target_status =
            srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_URI_TOO_LONG,
                     "the request target is %zu bytes; the limit is %d", len, HTTP_MAX_TARGET);
    else if (params > HTTP_MAX_PARAMS)
        rq->target_status =
            srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                     "the query has %zu parameters; the limit is %d", params, HTTP_MAX_PARAMS);
    if (rq->target_status != SRV_OK && query)
        query[1] = '\0'; /* the buffer is libmicrohttpd's, writable, and the NUL is in it */
    return rq;
}

typedef struct {
    framing_field fields[FRAMING_MAX_FIELDS + 1];
    size_t n;
} field_list;

static enum MHD_Result collect_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     size_t key_size, const char *value, size_t value_size)
{
    field_list *l = cls;
    (void)kind;
    if (l->n > FRAMING_MAX_FIELDS)
        return MHD_NO; /* one past the limit is enough to say "too many" */
    l->fields[l->n++] =
        (framing_field){key, key_size, value ? value : "", value ? value_size : 0, false};
    return MHD_YES;
}

/* The header section, checked as RFC 9112 wants (framing.h). libmicrohttpd 0.9.75 keeps each value
 * where it was received, NUL-terminated at its line's end (CR and LF become NULs), and takes a
 * value up to its first NUL: a NUL inside a value shows as a non-NUL byte right after that
 * terminator, where a line's end is followed by its LF's NUL or, with a bare LF, by the next
 * field's name. */
static srv_status check_framing(request *rq, const char *version)
{
    field_list l = {.n = 0};
    MHD_get_connection_values_n(rq->conn, MHD_HEADER_KIND, collect_field, &l);
    for (size_t i = 0; i < l.n && i < FRAMING_MAX_FIELDS; i++) {
        const char *after = l.fields[i].value + l.fields[i].value_len + 1;
        bool next_name = i + 1 < l.n && after == l.fields[i + 1].name;
        l.fields[i].value_cut = *after != '\0' && !next_name;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    framing_request r = {.http10 = !strcmp(version, MHD_HTTP_VERSION_1_0),
                         .fields = l.fields,
                         .nfields = l.n,
                         .header_bytes = ci ? ci->header_size : 0};
    return framing_check(&r, rq->errbuf, sizeof rq->errbuf);
}

/* The first call: the headers are in. Checks the framing, checks the key, routes the request, and
 * refuses what can be refused before the body is read, so that nothing of a body is held before
 * the request is known to be well framed, authorised, routed to something that takes a body,
 * within the body limit and within the request budget. */
static enum MHD_Result on_headers(server *s, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, void **con_cls)
{
    request *rq = *con_cls ? *con_cls : request_create(s, conn);
    if (!rq)
        return MHD_NO;
    *con_cls = rq;
    request_set_line(rq, method, url);
    rq->state = REQUEST_RECEIVING;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    rq->gc = ci ? ci->socket_context : NULL;
    guard_busy(s->guard, rq->gc, true);
    unsigned long long length;
    bool chunked, body = announces_body(conn, &length, &chunked);

    /* Framing first: when it cannot be trusted, nothing after the headers can be, so the answer
     * goes now and the connection closes after it. */
    srv_status st = rq->target_status != SRV_OK ? rq->target_status : check_framing(rq, version);
    if (st != SRV_OK) {
        rq->must_close = true;
        return reply_error(rq, st, "%s", rq->errbuf);
    }

    /* The key comes first for every method, so that without it nothing about the models (not
     * even which names exist) can be learnt, and no body is held. Health stays open for probes,
     * and so do CORS preflights, which browsers send without credentials: they get one answer
     * whatever the path. */
    /* The browser page and its docs hold no model data: open too, so that the page can ask for
     * the key. */
    bool open = !strncmp(url, HTTP_HEALTH_PREFIX, strlen(HTTP_HEALTH_PREFIX)) ||
                is_preflight(rq, method) || ui_find(&s->cfg, url);
    if (!open && !authorized(rq))
        return early_answer(
            rq,
            srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_UNAUTHORIZED,
                     "missing or wrong API key; send 'Authorization: Bearer <key>'"),
            body);
    st = api_route(rq, url, method);
    if (st != SRV_OK)
        return early_answer(rq, st, body);
    if (!rq->has_body) {
        if (body)
            return early_answer(rq,
                                srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_TOO_LARGE,
                                         "%s %s takes no request body", method, rq->path),
                                true);
        return MHD_YES; /* answered on the next call */
    }

    /* Refuse an oversized body from its Content-Length, before reading any of it. */
    if (length > (unsigned long long)s->cfg.max_body_bytes)
        return reply_error(rq, SRV_TOO_LARGE, "request body is %llu bytes; the limit is %lld",
                           length, (long long)s->cfg.max_body_bytes);
    if ((st = api_check_headers(rq)) != SRV_OK)
        return early_answer(rq, st, true);
    if (!chunked && length > 0 && !request_body_expect(rq, (size_t)length))
        return reply_error(rq, SRV_UNAVAILABLE,
                           "the server holds %lld bytes of requests and this body of %llu does "
                           "not fit under --request-budget-bytes %lld; retry later",
                           (long long)budget_used(&s->request_budget), length,
                           (long long)s->request_budget.limit);
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    server *s = cls;
    request *rq = *con_cls;

    if (!rq || rq->state == REQUEST_LINE)
        return on_headers(s, conn, url, method, version, con_cls);

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
        if (rq->early != SRV_OK || !rq->has_body)
            return MHD_YES; /* the answer does not depend on these bytes, which are not kept */
        if (!request_body_append(rq, upload, n))
            return MHD_NO;
        /* A chunked body past a limit is only counted; libmicrohttpd cannot answer before the
         * body ends, so a short overrun still gets its 413 or 503, and a long one is cut. */
        return rq->drained > HTTP_DRAIN_MAX ? MHD_NO : MHD_YES;
    }

    switch (rq->state) {
    case REQUEST_RECEIVING:
        if (rq->early != SRV_OK)
            return reply_error(rq, rq->early, "%s", rq->errbuf);
        if (rq->too_large)
            return reply_error(rq, SRV_TOO_LARGE, "request body exceeds the limit of %lld bytes",
                               (long long)s->cfg.max_body_bytes);
        if (rq->over_budget)
            return reply_error(rq, SRV_UNAVAILABLE,
                               "the server holds %lld bytes of requests and this body did not fit "
                               "under --request-budget-bytes %lld; retry later",
                               (long long)budget_used(&s->request_budget),
                               (long long)s->request_budget.limit);
        return api_handle(rq);
    case REQUEST_DONE:
        return api_finish(rq);
    case REQUEST_LINE:
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
    if (rq->state == REQUEST_LINE) {
        /* The client went away (or was timed out) before its headers were complete: not a
         * request anyone answered. */
        server_log(s, LOG_DEBUG, "a client left after its request line (%.3fms)",
                   (double)dt / HTTP_NS_PER_MS);
    } else {
        metrics_request(s->metrics, rq->model_index, code, dt);
        if (s->level >= LOG_INFO)
            log_access(s, rq, code, dt, toe);
    }
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
        MHD_OPTION_URI_LOG_CALLBACK, on_request_line, s, MHD_OPTION_END);
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
    /* Finish whatever is still queued, so that no connection stays suspended: first the decodes
     * (each ends on its model's queue or with an answer), then the model queues they fed. */
    decode_pool_stop(s->decode);
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
