/* request.h - one HTTP request from its first byte to its answer: the one object that owns it.
 *
 * The daemon (http.c) creates a request when a request line arrives and destroys it when
 * libmicrohttpd reports the request completed; request_destroy() is the only place anything a
 * request holds is released. In between, a request moves through these states:
 *
 *     LINE --> RECEIVING --> DECODING --> QUEUED --> DONE --> ANSWERING
 *             (MHD thread)  (suspended)  (suspended)  (resumed)  (MHD thread)
 *                  +--------------------------------------------> ANSWERING
 *
 * LINE: the request line has arrived (libmicrohttpd's URI log callback), the header fields have
 * not. RECEIVING: headers are in and the body arrives on a libmicrohttpd thread. A request that
 * needs no work beyond parsing is answered from here. DECODING: the connection is suspended while
 * a decode thread builds the model input (request_decode: images, and large JSON tensors), so
 * that costly input never holds a libmicrohttpd thread that health, metadata and metrics need.
 * QUEUED: the connection is suspended while the model's batcher has the job. DONE: whoever finished
 * the work (worker, pool, or a refusal) has set the outcome and resumed the connection; the daemon
 * then calls api_finish() on a libmicrohttpd thread, which answers (ANSWERING).
 *
 * Everything a request uses of a model is reached through `model`: a counted reference to one
 * version (repository.h), taken in api_route() and released in request_destroy(), so that a
 * version replaced or unloaded meanwhile lives until its last request is done. A load or unload
 * through the repository API waits suspended (QUEUED) for the repository's thread the same way.
 */
#ifndef CONVSERVE_REQUEST_H
#define CONVSERVE_REQUEST_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
    ROUTE_UI,      /* the browser page, the API docs and their files (ui.c) */

    ROUTE_REPO_INDEX,  /* /v2/repository/index */
    ROUTE_REPO_LOAD,   /* /v2/repository/models/{name}/load */
    ROUTE_REPO_UNLOAD, /* /v2/repository/models/{name}/unload */
} route_kind;

typedef enum {
    REQUEST_LINE, /* the request line is in; the header fields are arriving */
    REQUEST_RECEIVING,
    REQUEST_DECODING,
    REQUEST_QUEUED,
    REQUEST_DONE,
    REQUEST_ANSWERING,
} request_state;

enum {
    REQUEST_METHOD_MAX = 16, /* bytes of the method kept (longer ones are cut) */
    REQUEST_PATH_MAX = 201,  /* the first 200 bytes of the path (for messages and the log) + NUL */
    REQUEST_ERR_MAX = 1024,  /* bytes of an error message */
};

struct guard_conn;

typedef struct request {
    server *srv;
    struct MHD_Connection *conn;
    struct guard_conn *gc; /* the connection's entry in the slow-client guard */
    int64_t t0;            /* monotonic ns when the request line arrived */
    char method[REQUEST_METHOD_MAX];
    char path[REQUEST_PATH_MAX];
    bool arrived_ready; /* the server was ready when the request arrived (not shutting down) */
    request_state state;
    srv_status target_status; /* a request target refused as it arrived (414, 400) */
    size_t target_len;        /* its length as sent */
    bool must_close;          /* framing cannot be trusted: close the connection after answering */
    bool counted;             /* in the server's in-flight count (from request_set_line) */

    /* routing (api_route) */
    route_kind route;
    bool live;         /* health: live rather than ready */
    bool has_body;     /* the route takes a body */
    const char *allow; /* for 405 */
    model_entry *model;
    const struct ui_asset *asset; /* ROUTE_UI: the file asked for */
    int model_index;              /* for metrics; -1 when no model */

    /* the model is a counted reference (repository_acquire); a load or unload names its model */
    char repo_name[SPEC_MAX_NAME];

    /* an answer decided from the headers, sent once the body is in */
    srv_status early;
    char errbuf[REQUEST_ERR_MAX];

    /* the body, collected up to the limit */
    char *body;
    size_t len, cap;
    bool too_large;   /* past --max-body-bytes: dropped */
    bool over_budget; /* past the request budget: dropped */
    size_t drained;   /* bytes that arrived after the body was dropped */

    /* memory held against the server's budgets (server.h), all given back by request_destroy */
    int64_t body_reserved;   /* request budget: the body buffer */
    int64_t input_reserved;  /* request budget: tensors decoded from the body */
    int64_t answer_reserved; /* answer budget: the output and its serialisation */

    /* what the endpoint parsed */
    infer_request q;
    size_t header_len; /* Inference-Header-Content-Length */
    bool multipart;
    int top; /* /predictions?top=K */

    /* inference */
    batch_job job;
    tensor_bytes *imgs; /* /predictions: the images, views into the body, until decoded */
    size_t nimgs;
    float *in;            /* the model input, when built from images */
    float *out;           /* the output, filled by the worker */
    spec_shape out_shape; /* of the whole request's output */

    /* an answer written piece by piece (reply_write): the writer, where it is, its piece */
    bool (*writer)(struct request *rq, text *piece);
    text piece;
    size_t piece_off;
    bool written; /* the writer has produced its last piece */
    int phase;
    size_t at;       /* the next value of the current run */
    int64_t sample;  /* /predictions: the sample being written */
    float *prob;     /* /predictions: its probabilities */
    int *top_idx;    /* /predictions: its classes by probability */
    size_t head_len; /* binary output: the JSON header's length */

    /* the answer, for the access log and metrics */
    bool replied;
    int http_code;
    size_t resp_bytes;
} request;

/* A request for a connection whose request line has arrived. NULL when out of memory. */
request *request_create(server *s, struct MHD_Connection *conn);
/* Records the method and path (the first REQUEST_PATH_MAX - 1 bytes) once the headers are in;
 * the request counts as in flight from then on. */
void request_set_line(request *rq, const char *method, const char *url);
/* Releases everything the request holds. Safe on NULL. */
void request_destroy(request *rq);

/* Reserves a body of n bytes (its Content-Length) from the request budget before any of it is
 * read. False when it does not fit. */
bool request_body_expect(request *rq, size_t n);
/* Appends n bytes of body. Past --max-body-bytes the body is dropped and too_large set; a body of
 * unknown length (chunked) reserves as it grows, and one that does not fit the request budget is
 * dropped with over_budget set. Dropped bodies only count what still arrives (drained). False when
 * out of memory. */
bool request_body_append(request *rq, const char *data, size_t n);
/* Frees the body once the input has been built from it, and gives its bytes back. */
void request_drop_body(request *rq);
/* Takes n more bytes for this request from the request budget (tensors decoded from the body) or
 * the answer budget; false, with nothing taken, when they do not fit. */
bool request_reserve_input(request *rq, size_t n);
bool request_reserve_answer(request *rq, size_t n);

/* Suspends the connection and queues rq->job on the model's batcher (state QUEUED). The
 * connection is resumed in state DONE when the job has run or was refused; rq->job.status and
 * rq->job.err then hold the outcome. On a libmicrohttpd thread, from the handler. */
void request_submit(request *rq);

/* Builds the input off the libmicrohttpd threads, then queues the job: suspends the connection
 * (state DECODING) and hands rq to the server's decode pool, where run(rq) builds the input (sets
 * rq->job.in, or on a failure rq->job.status and rq->job.err). Then, on the pool's thread, the body
 * is dropped and the job queued (request_queue), or a failure completes the request. A pool that
 * refuses (its queue is full, or it is stopping) completes it with 503 at once. Either way
 * api_finish() answers on a libmicrohttpd thread. The request stays alive meanwhile: a suspended
 * connection is not closed, so request_destroy cannot run before the resume. On a libmicrohttpd
 * thread, from the handler. */
void request_decode(request *rq, void (*run)(void *rq));

/* The pieces of request_submit and request_decode, for work done off the libmicrohttpd threads:
 * on the handler's thread, request_suspend(rq, REQUEST_DECODING), then hand rq to another thread;
 * there, when the input is built, request_queue(rq) (which completes it if the batcher refuses),
 * or on a failure set rq->job.status and rq->job.err and call request_complete(rq). Either way
 * api_finish() answers it on a libmicrohttpd thread. */
void request_suspend(request *rq, request_state state);
/* Queues rq->job on its model's batcher; the connection must be suspended. Any thread. */
void request_queue(request *rq);
/* Marks the suspended work finished (state DONE) and resumes the connection. Any thread. */
void request_complete(request *rq);
/* Suspends the connection while other work (the repository's thread) has the request (state
 * QUEUED); request_wake() sets the outcome in rq->job.status and rq->job.err and resumes it in
 * state DONE, from any thread, exactly once. */
void request_park(request *rq);
void request_wake(request *rq, srv_status status, const char *msg);

#endif
