/* request.c - creates, fills, suspends, resumes and frees one request. */
#include "request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    REQUEST_BODY_INITIAL = 64 * 1024, /* first allocation of a body; it doubles from there */
};

request *request_create(server *s, struct MHD_Connection *conn, const char *method, const char *url)
{
    request *rq = calloc(1, sizeof *rq);
    if (!rq)
        return NULL;
    rq->srv = s;
    rq->conn = conn;
    rq->t0 = monotonic_ns();
    rq->model_index = -1;
    rq->state = REQUEST_RECEIVING;
    rq->arrived_ready = atomic_load(&s->ready);
    snprintf(rq->method, sizeof rq->method, "%s", method);
    snprintf(rq->path, sizeof rq->path, "%s", url);
    atomic_fetch_add(&s->inflight, 1);
    metrics_inflight(s->metrics, 1);
    return rq;
}

void request_destroy(request *rq)
{
    if (!rq)
        return;
    server *s = rq->srv;
    repository_release(rq->model);
    infer_request_free(&rq->q);
    free(rq->in);
    free(rq->out);
    free(rq->body);
    free(rq);
    metrics_inflight(s->metrics, -1);
    atomic_fetch_sub(&s->inflight, 1);
}

bool request_body_append(request *rq, const char *data, size_t n)
{
    size_t limit = (size_t)rq->srv->cfg.max_body_bytes;
    if (rq->too_large)
        return true;
    if (n > limit - rq->len) {
        rq->too_large = true;
        free(rq->body);
        rq->body = NULL;
        rq->len = rq->cap = 0;
        return true;
    }
    if (rq->len + n + 1 > rq->cap) {
        size_t cap = rq->cap ? rq->cap : REQUEST_BODY_INITIAL;
        while (cap < rq->len + n + 1)
            cap *= 2;
        if (cap > limit + 1)
            cap = limit + 1;
        char *nb = realloc(rq->body, cap);
        if (!nb)
            return false;
        rq->body = nb;
        rq->cap = cap;
    }
    memcpy(rq->body + rq->len, data, n);
    rq->len += n;
    return true;
}

static void job_done(batch_job *job, void *ctx)
{
    request *rq = ctx;
    (void)job;
    /* Runs on the worker thread; the result fields are written before resuming, and MHD's resume
     * takes a mutex that the connection's thread takes again before calling the handler. */
    rq->state = REQUEST_DONE;
    MHD_resume_connection(rq->conn);
}

void request_submit(request *rq)
{
    rq->job.done = job_done;
    rq->job.ctx = rq;
    rq->state = REQUEST_QUEUED;
    /* Suspend before submitting: the worker may finish and resume before this thread returns. A
     * refused job (queue full, shutting down) completes the same way, through a resume. */
    MHD_suspend_connection(rq->conn);
    srv_status s = batcher_submit(rq->model->batcher, &rq->job, rq->job.err, sizeof rq->job.err);
    if (s != SRV_OK) {
        rq->job.status = s;
        rq->state = REQUEST_DONE;
        MHD_resume_connection(rq->conn);
    }
}

void request_park(request *rq)
{
    rq->state = REQUEST_QUEUED;
    MHD_suspend_connection(rq->conn);
}

void request_wake(request *rq, srv_status status, const char *msg)
{
    rq->job.status = status;
    snprintf(rq->job.err, sizeof rq->job.err, "%s", msg);
    rq->state = REQUEST_DONE;
    MHD_resume_connection(rq->conn);
}
