/* reply.c - queues answers on a request's connection: JSON, errors, raw bodies. */
#include "reply.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { REPLY_MAX_HEADERS = 4 }; /* extra header pairs an error answer may carry */

static void add_common_headers(const request *rq, struct MHD_Response *resp)
{
    const server *s = rq->srv;
    if (s->cfg.cors_origin[0]) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", s->cfg.cors_origin);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                "Inference-Header-Content-Length");
    }
}

/* Queues `body` with the given status and content type; MHD frees it when `mode` says so. */
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
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    for (int i = 0; headers && headers[i]; i += 2)
        MHD_add_response_header(resp, headers[i], headers[i + 1]);
    add_common_headers(rq, resp);
    rq->http_code = code;
    rq->resp_bytes = len;
    rq->state = REQUEST_ANSWERING;
    enum MHD_Result r = MHD_queue_response(rq->conn, (unsigned)code, resp);
    MHD_destroy_response(resp);
    rq->replied = true;
    return r;
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
    if (!body)
        return MHD_NO;
    server_log(rq->srv, LOG_DEBUG, "%s %s -> %d: %s", rq->method, rq->path, srv_status_http(s),
               msg);
    return reply_raw(rq, srv_status_http(s), "application/json", body, len, headers);
}
