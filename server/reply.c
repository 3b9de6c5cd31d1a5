/* reply.c - queues answers on a request's connection: JSON, errors, raw bodies. */
#include "reply.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    REPLY_MAX_HEADERS = 4,   /* extra header pairs an error answer may carry */
    REPLY_BLOCK = 64 * 1024, /* libmicrohttpd's buffer for an answer sent from a callback */
};

static const char REPLY_RETRY_AFTER_S[] = "1"; /* seconds, on every 503 */

static void add_common_headers(const request *rq, struct MHD_Response *resp)
{
    const server *s = rq->srv;
    /* libmicrohttpd closes the connection after an answer that says so. */
    if (rq->must_close)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (s->cfg.cors_origin[0]) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", s->cfg.cors_origin);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                "Inference-Header-Content-Length");
    }
}

/* Queues a response with its content type, extra headers and the common headers. */
static enum MHD_Result queue(request *rq, int code, struct MHD_Response *resp,
                             const char *content_type, const char *const *headers)
{
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    for (int i = 0; headers && headers[i]; i += 2)
        MHD_add_response_header(resp, headers[i], headers[i + 1]);
    add_common_headers(rq, resp);
    rq->http_code = code;
    rq->state = REQUEST_ANSWERING;
    enum MHD_Result r = MHD_queue_response(rq->conn, (unsigned)code, resp);
    MHD_destroy_response(resp);
    rq->replied = true;
    return r;
}

/* Queues `body` (len bytes); MHD frees it when `mode` says so. */
static enum MHD_Result reply_mode(request *rq, int code, const char *content_type, void *body,
                                  size_t len, enum MHD_ResponseMemoryMode mode,
                                  const char *const *headers)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
    if (!resp) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    rq->resp_bytes = len;
    return queue(rq, code, resp, content_type, headers);
}

enum MHD_Result reply_raw(request *rq, int code, const char *content_type, char *body, size_t len,
                          const char *const *headers)
{
    return reply_mode(rq, code, content_type, body ? body : "", len,
                      body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT, headers);
}

enum MHD_Result reply_static(request *rq, int code, const char *content_type, const void *body,
                             size_t len, const char *const *headers)
{
    /* MHD takes a non-const pointer but never writes through a PERSISTENT buffer. */
    return reply_mode(rq, code, content_type, (void *)(body ? body : ""), len,
                      MHD_RESPMEM_PERSISTENT, headers);
}

enum MHD_Result reply_json(request *rq, int code, text *t)
{
    size_t len;
    char *body = text_take(t, &len);
    if (!body)
        return reply_error(rq, SRV_UNAVAILABLE, "out of memory building the answer");
    return reply_raw(rq, code, "application/json", body, len, NULL);
}

/* Every error answer of the server goes through here: {"error": "<message>"}. */
enum MHD_Result reply_error(request *rq, srv_status s, const char *fmt, ...)
{
    char msg[REQUEST_ERR_MAX];
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
    const char *headers[2 * REPLY_MAX_HEADERS + 1] = {NULL};
    int h = 0;
    if (s == SRV_METHOD && rq->allow) {
        headers[h++] = MHD_HTTP_HEADER_ALLOW;
        headers[h++] = rq->allow;
    }
    if (s == SRV_UNAUTHORIZED) {
        headers[h++] = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
        headers[h++] = "Bearer";
    }
    if (s == SRV_UNAVAILABLE) {
        /* Overload, a full budget, shutting down: all pass; a client (or a proxy) may retry. */
        headers[h++] = MHD_HTTP_HEADER_RETRY_AFTER;
        headers[h++] = REPLY_RETRY_AFTER_S;
    }
    if (!body)
        return MHD_NO;
    server_log(rq->srv, LOG_DEBUG, "%s %s -> %d: %s", rq->method, rq->path, srv_status_http(s),
               msg);
    return reply_raw(rq, srv_status_http(s), "application/json", body, len, headers);
}

/* libmicrohttpd asks for more of a streamed answer: the rest of the current piece, then new
 * pieces from the writer, as much as fits in `max`. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    request *rq = cls;
    size_t o = 0;
    (void)pos;
    while (o < max) {
        if (rq->piece_off == rq->piece.len) {
            if (rq->written)
                break;
            rq->piece.len = 0; /* the buffer is reused: one piece in memory at a time */
            rq->piece_off = 0;
            rq->written = !rq->writer(rq, &rq->piece);
            if (rq->piece.failed)
                return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        size_t n = rq->piece.len - rq->piece_off;
        if (n > max - o)
            n = max - o;
        memcpy(buf + o, rq->piece.p + rq->piece_off, n);
        rq->piece_off += n;
        o += n;
    }
    if (o == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    rq->resp_bytes += o;
    return (ssize_t)o;
}

enum MHD_Result reply_write(request *rq, int code, const char *content_type, reply_writer w,
                            size_t estimate)
{
    rq->writer = w;
    if (estimate <= REPLY_WHOLE_MAX) {
        text t = {0};
        while (w(rq, &t))
            ;
        size_t len;
        char *body = text_take(&t, &len);
        if (!body)
            return reply_error(rq, SRV_UNAVAILABLE, "out of memory building the answer");
        return reply_raw(rq, code, content_type, body, len, NULL);
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, REPLY_BLOCK, stream_read, rq, NULL);
    if (!resp)
        return MHD_NO;
    return queue(rq, code, resp, content_type, NULL);
}

/* The header in rq->piece, then the data, read where they are. */
static ssize_t data_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    request *rq = cls;
    size_t total = rq->head_len + rq->at, o = 0;
    while (o < max && pos + o < total) {
        size_t at = (size_t)pos + o;
        const char *src =
            at < rq->head_len ? rq->piece.p + at : (const char *)rq->out + (at - rq->head_len);
        size_t n = at < rq->head_len ? rq->head_len - at : total - at;
        if (n > max - o)
            n = max - o;
        memcpy(buf + o, src, n);
        o += n;
    }
    rq->resp_bytes += o;
    return o ? (ssize_t)o : MHD_CONTENT_READER_END_OF_STREAM;
}

enum MHD_Result reply_with_output(request *rq, int code, const char *content_type,
                                  const char *const *headers)
{
    rq->head_len = rq->piece.len;
    rq->at = rq->job.out_count * sizeof *rq->out;
    struct MHD_Response *resp = MHD_create_response_from_callback((uint64_t)(rq->head_len + rq->at),
                                                                  REPLY_BLOCK, data_read, rq, NULL);
    if (!resp)
        return MHD_NO;
    return queue(rq, code, resp, content_type, headers);
}
