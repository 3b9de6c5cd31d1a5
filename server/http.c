/* http.c - the libmicrohttpd side: request lifecycle, routing, replies, access log, shutdown.
 *
 * Each request lives in a `request` from its first handler call to the completed callback. Bodies
 * are collected up to the body limit; a request that needs inference is parsed and validated on
 * the MHD thread, handed to its model's batcher and its connection suspended; the worker resumes
 * it when the output is in place, and the MHD thread serialises the answer. MHD threads never run
 * the network.
 */
#include "http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    HTTP_MAX_URL_LOG = 200, /* bytes of the path kept for the access log */
    HTTP_SHUTDOWN_POLL_MS = 20,
    HTTP_MEMORY_LIMIT = 64 * 1024, /* per-connection pool: headers and I/O buffers */
    HTTP_BODY_INITIAL = 64 * 1024,
    HTTP_GUARD_TICK_MS = 250, /* how often the slow-client guard looks */
};

/* libmicrohttpd's own messages are about clients that went away or misbehaved (closed mid-request,
 * timed out, sent a malformed header): useful when debugging, noise otherwise. They go through the
 * server's log format at debug level instead of straight to stderr. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    const server *s = cls;
    if (s->level < LOG_DEBUG)
        return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    server_log(s, LOG_DEBUG, "libmicrohttpd: %s", msg);
}

/* ---- replies ------------------------------------------------------------------------------ */

static void add_common_headers(request *rq, struct MHD_Response *resp)
{
    const server *s = rq->srv;
    if (s->cfg.cors_origin[0]) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", s->cfg.cors_origin);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                "Inference-Header-Content-Length");
    }
}

/* Queues `body` (malloc'd; freed by MHD) with the given status and content type. */
static enum MHD_Result reply(request *rq, int code, const char *content_type, char *body,
                             size_t len, const char *const *headers)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, body ? body : "", body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    for (int i = 0; headers && headers[i]; i += 2)
        MHD_add_response_header(resp, headers[i], headers[i + 1]);
    add_common_headers(rq, resp);
    rq->http_code = code;
    rq->resp_bytes = len;
    enum MHD_Result r = MHD_queue_response(rq->conn, (unsigned)code, resp);
    MHD_destroy_response(resp);
    rq->replied = true;
    return r;
}

enum MHD_Result http_reply_json(request *rq, int code, text *t)
{
    size_t len;
    char *body = text_take(t, &len);
    if (!body)
        return http_reply_error(rq, SRV_INTERNAL, "out of memory building the answer");
    return reply(rq, code, "application/json", body, len, NULL);
}

enum MHD_Result http_reply_raw(request *rq, int code, const char *content_type, char *body,
                               size_t len, const char *const *headers)
{
    return reply(rq, code, content_type, body, len, headers);
}

/* Every error answer of the server goes through here: {"error": "<message>"}. */
enum MHD_Result http_reply_error(request *rq, srv_status s, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    text t = {0};
    text_put(&t, "{\"error\":");
    text_json_string(&t, msg, strlen(msg));
    text_put(&t, "}");
    size_t len;
    char *body = text_take(&t, &len);
    const char *headers[5] = {NULL};
    int h = 0;
    if (s == SRV_METHOD && rq->allow) {
        headers[h++] = MHD_HTTP_HEADER_ALLOW;
        headers[h++] = rq->allow;
    }
    if (s == SRV_UNAUTHORIZED) {
        headers[h++] = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
        headers[h++] = "Bearer";
    }
    if (!body)
        return MHD_NO;
    server_log(rq->srv, LOG_DEBUG, "%s %s -> %d: %s", rq->method, rq->path, srv_status_http(s),
               msg);
    return reply(rq, srv_status_http(s), "application/json", body, len, headers);
}

/* ---- slow clients -------------------------------------------------------------------------
 *
 * libmicrohttpd's connection timeout only closes connections that stay silent, so a client that
 * sends one header byte a second would hold its connection forever, and enough of them would lock
 * everyone out. The guard tracks each connection from the moment it has no request in the handler
 * (opened, or its last request answered): if the next request has not reached the handler within
 * --connection-timeout, a reaper thread shuts the socket down and MHD closes it. Bodies are bounded
 * the same way in on_request. MHD reports a connection closed (removing it here, under the mutex)
 * before it closes the socket, so the reaper can never shut down a reused descriptor. */

typedef struct http_conn {
    struct http_conn *prev, *next;
    MHD_socket fd;
    int64_t since_ns; /* when it last had no request in the handler */
    bool busy;        /* a request is in the handler (receiving, queued or answering) */
} http_conn;

struct http_guard {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    http_conn *head;
    bool stop;
    int64_t timeout_ns;
    pthread_t thread;
    unsigned long reaped;
};

static void *guard_main(void *arg)
{
    struct http_guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        int64_t now = monotonic_ns();
        for (http_conn *c = g->head; c; c = c->next) {
            if (!c->busy && now - c->since_ns > g->timeout_ns) {
                shutdown(c->fd, SHUT_RDWR);
                c->since_ns = now; /* once is enough; MHD closes it on its next read */
                g->reaped++;
            }
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += HTTP_GUARD_TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    server *s = cls;
    struct http_guard *g = s->guard;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        http_conn *c = calloc(1, sizeof *c);
        if (!c || !ci) {
            free(c);
            *socket_context = NULL;
            return;
        }
        c->fd = ci->connect_fd;
        c->since_ns = monotonic_ns();
        pthread_mutex_lock(&g->mu);
        c->next = g->head;
        if (g->head)
            g->head->prev = c;
        g->head = c;
        pthread_mutex_unlock(&g->mu);
        *socket_context = c;
    } else if (*socket_context) {
        http_conn *c = *socket_context;
        pthread_mutex_lock(&g->mu);
        if (c->prev)
            c->prev->next = c->next;
        else
            g->head = c->next;
        if (c->next)
            c->next->prev = c->prev;
        pthread_mutex_unlock(&g->mu);
        free(c);
        *socket_context = NULL;
    }
}

static void guard_set_busy(server *s, http_conn *c, bool busy)
{
    if (!c)
        return;
    pthread_mutex_lock(&s->guard->mu);
    c->busy = busy;
    c->since_ns = monotonic_ns();
    pthread_mutex_unlock(&s->guard->mu);
}

static bool guard_start(server *s)
{
    struct http_guard *g = calloc(1, sizeof *g);
    if (!g)
        return false;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->timeout_ns = s->cfg.connection_timeout * INT64_C(1000000000);
    if (pthread_create(&g->thread, NULL, guard_main, g) != 0) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
        free(g);
        return false;
    }
    s->guard = g;
    return true;
}

static void guard_stop(server *s)
{
    struct http_guard *g = s->guard;
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    /* MHD_stop_daemon has reported every connection closed, so the list is empty. */
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
    s->guard = NULL;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

/* Compares without an early exit, so response timing tells nothing about the key. */
static bool constant_time_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (blen ? blen : 1)]);
    return diff == 0 && blen > 0;
}

static bool authorized(request *rq)
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

static void job_done(batch_job *job, void *ctx)
{
    request *rq = ctx;
    (void)job;
    /* Runs on the worker thread; the result fields are written before resuming, and MHD's resume
     * takes a mutex that the connection's thread takes again before calling the handler. */
    rq->state = RQ_DONE;
    MHD_resume_connection(rq->conn);
}

void http_submit(request *rq, model_entry *me)
{
    rq->job.done = job_done;
    rq->job.ctx = rq;
    rq->state = RQ_QUEUED;
    /* Suspend before submitting: the worker may finish and resume before this thread returns. A
     * refused job (queue full, shutting down) completes the same way, through a resume. */
    MHD_suspend_connection(rq->conn);
    srv_status s = batcher_submit(me->batcher, &rq->job, rq->job.err, sizeof rq->job.err);
    if (s != SRV_OK) {
        rq->job.status = s;
        rq->state = RQ_DONE;
        MHD_resume_connection(rq->conn);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    server *s = cls;
    request *rq = *con_cls;
    (void)version;

    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        rq->srv = s;
        rq->conn = conn;
        rq->t0 = monotonic_ns();
        rq->model_index = -1;
        rq->arrived_ready = atomic_load(&s->ready);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        rq->hc = ci ? ci->socket_context : NULL;
        guard_set_busy(s, rq->hc, true);
        snprintf(rq->method, sizeof rq->method, "%s", method);
        snprintf(rq->path, sizeof rq->path, "%.*s", HTTP_MAX_URL_LOG, url);
        atomic_fetch_add(&s->inflight, 1);
        metrics_inflight(s->metrics, 1);

        /* The key is checked before the route, so that without it nothing about the models
         * (not even which names exist) can be learnt. Health stays open for probes. */
        if (strncmp(url, "/v2/health/", 11) != 0 && strcmp(method, "OPTIONS") != 0 &&
            !authorized(rq)) {
            rq->early = srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_UNAUTHORIZED,
                                 "missing or wrong API key; send 'Authorization: Bearer <key>'");
            if (announces_body(conn))
                return http_reply_error(rq, rq->early, "%s", rq->errbuf);
            return MHD_YES;
        }
        rq->early = api_route(rq, url, method);
        if (rq->early != SRV_OK && announces_body(conn))
            return http_reply_error(rq, rq->early, "%s", rq->errbuf); /* no use reading it */
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
                return http_reply_error(rq, SRV_TOO_LARGE,
                                        "request body is %llu bytes; the limit is %lld", n,
                                        (long long)s->cfg.max_body_bytes);
        }
        rq->early = api_check_headers(rq);
        if (rq->early != SRV_OK)
            return http_reply_error(rq, rq->early, "%s", rq->errbuf);
        return MHD_YES;
    }

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
        if (monotonic_ns() - rq->t0 > s->cfg.connection_timeout * INT64_C(1000000000))
            return MHD_NO;
        if (rq->too_large || rq->early != SRV_OK)
            return MHD_YES; /* the answer does not depend on these bytes */
        if (rq->len + n > (size_t)s->cfg.max_body_bytes) {
            rq->too_large = true;
            free(rq->body);
            rq->body = NULL;
            return MHD_YES;
        }
        if (rq->len + n + 1 > rq->cap) {
            size_t cap = rq->cap ? rq->cap : HTTP_BODY_INITIAL;
            while (cap < rq->len + n + 1)
                cap *= 2;
            if (cap > (size_t)s->cfg.max_body_bytes + 1)
                cap = (size_t)s->cfg.max_body_bytes + 1;
            char *nb = realloc(rq->body, cap);
            if (!nb)
                return MHD_NO;
            rq->body = nb;
            rq->cap = cap;
        }
        memcpy(rq->body + rq->len, upload, n);
        rq->len += n;
        return MHD_YES;
    }

    if (rq->state == RQ_RECEIVING) {
        if (rq->early != SRV_OK)
            return http_reply_error(rq, rq->early, "%s", rq->errbuf);
        if (rq->too_large)
            return http_reply_error(rq, SRV_TOO_LARGE,
                                    "request body exceeds the limit of %lld bytes",
                                    (long long)s->cfg.max_body_bytes);
        return api_handle(rq);
    }
    if (rq->state == RQ_DONE)
        return api_finish(rq);
    return MHD_YES; /* queued: still suspended */
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
    if (s->level >= LOG_INFO) {
        char addr[INET6_ADDRSTRLEN] = "-";
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (ci && ci->client_addr) {
            const struct sockaddr *sa = ci->client_addr;
            if (sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, addr, sizeof addr);
            else if (sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, addr,
                          sizeof addr);
        }
        server_log(s, LOG_INFO, "%s \"%s %s\" %d %zuB %.3fms batch=%d%s", addr, rq->method,
                   rq->path, code, rq->resp_bytes, (double)dt / 1e6, rq->job.batch_size,
                   toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed)");
    }
    guard_set_busy(s, rq->hc, false);
    api_request_free(rq);
    free(rq->body);
    free(rq);
    *con_cls = NULL;
    metrics_inflight(s->metrics, -1);
    atomic_fetch_sub(&s->inflight, 1);
}

/* ---- daemon ------------------------------------------------------------------------------- */

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
    if (!guard_start(s)) {
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
        guard_stop(s);
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
        struct timespec ts = {0, HTTP_SHUTDOWN_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
}

void http_shutdown(server *s)
{
    if (!s->daemon)
        return;
    atomic_store(&s->ready, false);
    MHD_socket lfd = MHD_quiesce_daemon(s->daemon);
    int64_t deadline = monotonic_ns() + s->cfg.shutdown_timeout * INT64_C(1000000000);
    wait_idle(s, deadline);
    int left = atomic_load(&s->inflight);
    /* Finish whatever is still queued, so that no connection stays suspended. */
    for (int i = 0; i < s->nmodels; i++)
        batcher_stop(s->models[i].batcher);
    wait_idle(s, monotonic_ns() + 1000000000LL);
    if (left > 0)
        server_log(s, LOG_WARN, "%d requests were still open after %llds", left,
                   (long long)s->cfg.shutdown_timeout);
    MHD_stop_daemon(s->daemon);
    guard_stop(s);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    s->daemon = NULL;
}
