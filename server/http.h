/* http.h - what the HTTP layer (http.c) and the endpoints (api.c) share about one request. */
#ifndef CONVSERVE_HTTP_H
#define CONVSERVE_HTTP_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

#include "server.h"
#include "status.h"
#include "tensor.h"
#include "text.h"

typedef enum {
    ROUTE_HEALTH,  /* /v2/health/live, /v2/health/ready */
    ROUTE_SERVER,  /* /v2 */
    ROUTE_MODEL,   /* /v2/models/{name} */
    ROUTE_READY,   /* /v2/models/{name}/ready */
    ROUTE_INFER,   /* /v2/models/{name}/infer */
    ROUTE_SHAPES,  /* /v2/models/{name}/shapes */
    ROUTE_PREDICT, /* /predictions/{name} */
    ROUTE_METRICS, /* /metrics */
    ROUTE_OPTIONS, /* CORS preflight */
    ROUTE_UI,      /* /, /docs and their files (ui.c) */
} route_kind;

typedef enum { RQ_RECEIVING, RQ_QUEUED, RQ_DONE } request_state;

struct http_conn;

typedef struct request {
    server *srv;
    struct http_conn *hc; /* the connection's entry in the slow-client guard */
    struct MHD_Connection *conn;
    int64_t t0;
    char method[16];
    char path[256];
    route_kind route;
    bool live; /* health: live rather than ready */
    bool has_body;
    const char *allow; /* for 405 */
    model_entry *model;
    const struct ui_asset *asset; /* ROUTE_UI: the embedded file */
    int model_index;
    char errbuf[1024];
    bool arrived_ready; /* the server was ready when the request arrived (not shutting down) */
    srv_status early;   /* an answer decided from the headers, sent once the body is in */

    char *body; /* collected body, up to the limit */
    size_t len, cap;
    bool too_large;
    request_state state;

    /* inference */
    batch_job job;
    infer_request q;
    float *in;            /* the model input, when built from images */
    float *out;           /* the output, filled by the worker */
    spec_shape out_shape; /* of the whole request's output */
    int top;              /* /predictions?top=K */
    size_t header_len;
    bool multipart;

    /* reply, for the access log and metrics */
    bool replied;
    int http_code;
    size_t resp_bytes;
} request;

/* Sends {"error": "..."} with the status's HTTP code (and Allow / WWW-Authenticate as needed). */
enum MHD_Result http_reply_error(request *rq, srv_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends the JSON built in t (takes it). */
enum MHD_Result http_reply_json(request *rq, int code, text *t);
/* Sends a malloc'd body with extra header pairs (NULL-terminated list, may be NULL). */
enum MHD_Result http_reply_raw(request *rq, int code, const char *content_type, char *body,
                               size_t len, const char *const *headers);
/* Sends static bytes (not copied, not freed) with extra header pairs (NULL-terminated). */
enum MHD_Result http_reply_static(request *rq, int code, const char *content_type, const void *body,
                                  size_t len, const char *const *headers);
/* Suspends the connection and queues rq->job; api_finish runs when it is done (or refused). */
void http_submit(request *rq, model_entry *me);

/* api.c: finds the route for the URL and method (SRV_NOT_FOUND / SRV_METHOD with rq->errbuf). */
srv_status api_route(request *rq, const char *url, const char *method);
/* api.c: checks Content-Type and friends of a request with a body, before the body is read. */
srv_status api_check_headers(request *rq);
/* api.c: answers, or validates and submits, once the body is in. */
enum MHD_Result api_handle(request *rq);
/* api.c: answers a request whose job has finished. */
enum MHD_Result api_finish(request *rq);
void api_request_free(request *rq);

#endif
