/* request.c - creates, fills, suspends, resumes and frees one request. */
#include "request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    REQUEST_BODY_INITIAL = 64 * 1024, /* first allocation of a body; it doubles from there */
};

request *request_create(server *s, struct MHD_Connection *conn)
{
    request *rq = calloc(1, sizeof *rq);
    if (!rq)
        return NULL;
    rq->srv = s;
    rq->conn = conn;
    rq->t0 = monotonic_ns();
    rq->model_index = -1;
    rq->state = REQUEST_LINE;
    rq->arrived_ready = atomic_load(&s->ready);
    snprintf(rq->method, sizeof rq->method, "-");
    return rq;
}

void request_set_line(request *rq, const char *method, const char *url)
{
    snprintf(rq->method, sizeof rq->method, "%s", method);
    snprintf(rq->path, sizeof rq->path, "%s", url);
    /* In flight from here: shutdown waits for requests whose headers are in, not for clients
     * that stopped halfway through theirs (the guard closes those). */
    if (!rq->counted) {
        rq->counted = true;
        atomic_fetch_add(&rq->srv->inflight, 1);
        metrics_inflight(rq->srv->metrics, 1);
    }
}

void request_destroy(request *rq)
{
    if (!rq)
        return;
    server *s = rq->srv;
    repository_release(rq->model);
    infer_request_free(&rq->q);
    free(rq->imgs);
    free(rq->in);
    free(rq->out);
    free(rq->body);
    free(rq->prob);
    free(rq->top_idx);
    text_free(&rq->piece);
    budget_give(&s->request_budget, rq->body_reserved + rq->input_reserved);
    budget_give(&s->answer_budget, rq->answer_reserved);
    bool counted = rq->counted;
    free(rq);
    if (counted) {
        metrics_inflight(s->metrics, -1);
        atomic_fetch_sub(&s->inflight, 1);
    }
}

bool request_body_expect(request *rq, size_t n)
{
    /* One byte more for the NUL that keeps a text body a C string for the parsers. */
    if (!budget_take(&rq->srv->request_budget, (int64_t)n + 1))
        return false;
    rq->body_reserved = (int64_t)n + 1;
    return true;
}

/* Drops the body collected so far; what still arrives is only counted. */
static void drop(request *rq)
{
    free(rq->body);
    rq->body = NULL;
    rq->len = rq->cap = 0;
    budget_give(&rq->srv->request_budget, rq->body_reserved);
    rq->body_reserved = 0;
}

bool request_body_append(request *rq, const char *data, size_t n)
{
    size_t limit = (size_t)rq->srv->cfg.max_body_bytes;
    if (rq->too_large || rq->over_budget) {
        rq->drained += n;
        return true;
    }
    if (n > limit - rq->len) {
        rq->too_large = true;
        rq->drained += n;
        drop(rq);
        return true;
    }
    if (rq->len + n + 1 > rq->cap) {
        size_t cap;
        if (rq->body_reserved > 0 && rq->len + n + 1 <= (size_t)rq->body_reserved) {
            cap = (size_t)rq->body_reserved; /* announced: one allocation of its exact size */
        } else {
            cap = rq->cap ? rq->cap : REQUEST_BODY_INITIAL;
            while (cap < rq->len + n + 1)
                cap *= 2;
            if (cap > limit + 1)
                cap = limit + 1;
            /* A body of unknown length reserves what it grows by. */
            if ((int64_t)cap > rq->body_reserved) {
                if (!budget_take(&rq->srv->request_budget, (int64_t)cap - rq->body_reserved)) {
                    rq->over_budget = true;
                    rq->drained += n;
                    drop(rq);
                    return true;
                }
                rq->body_reserved = (int64_t)cap;
            }
        }
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

void request_drop_body(request *rq)
{
    drop(rq);
}

bool request_reserve_input(request *rq, size_t n)
{
    if (!budget_take(&rq->srv->request_budget, (int64_t)n))
        return false;
    rq->input_reserved += (int64_t)n;
    return true;
}

bool request_reserve_answer(request *rq, size_t n)
{
    if (!budget_take(&rq->srv->answer_budget, (int64_t)n))
        return false;
    rq->answer_reserved += (int64_t)n;
    return true;
}

void request_suspend(request *rq, request_state state)
{
    rq->state = state;
    MHD_suspend_connection(rq->conn);
}

void request_complete(request *rq)
{
    /* Whoever finished writes its results before this; MHD's resume takes a mutex that the
     * connection's thread takes again before it calls the handler, which then sees them. */
    rq->state = REQUEST_DONE;
    MHD_resume_connection(rq->conn);
}

static void job_done(batch_job *job, void *ctx)
{
    (void)job;
    request_complete(ctx); /* on the worker thread */
}

void request_queue(request *rq)
{
    rq->job.done = job_done;
    rq->job.ctx = rq;
    rq->state = REQUEST_QUEUED;
    srv_status s = batcher_submit(rq->model->batcher, &rq->job, rq->job.err, sizeof rq->job.err);
    if (s != SRV_OK) {
        /* Refused (queue full, shutting down): it completes the same way, through a resume. */
        rq->job.status = s;
        request_complete(rq);
    }
}

void request_submit(request *rq)
{
    /* Suspend before submitting: the worker may finish and resume before this thread returns. */
    request_suspend(rq, REQUEST_QUEUED);
    request_queue(rq);
}

/* The pool's done call, on the thread that built the input. */
static void decoded(void *arg, srv_status st)
{
    request *rq = arg;
    (void)st; /* always SRV_OK: the outcome of the work is in rq->job */
    if (rq->job.status != SRV_OK) {
        request_complete(rq);
        return;
    }
    request_drop_body(rq);
    request_queue(rq);
}

void request_decode(request *rq, void (*run)(void *rq))
{
    /* Suspend before submitting: the pool may finish and resume before this thread returns. */
    request_suspend(rq, REQUEST_DECODING);
    decode_job job = {.run = run, .done = decoded, .arg = rq};
    srv_status s = decode_pool_submit(rq->srv->decode, &job, rq->job.err, sizeof rq->job.err);
    if (s != SRV_OK) {
        rq->job.status = s;
        request_complete(rq);
    }
}

void request_park(request *rq)
{
    request_suspend(rq, REQUEST_QUEUED);
}

void request_wake(request *rq, srv_status status, const char *msg)
{
    rq->job.status = status;
    snprintf(rq->job.err, sizeof rq->job.err, "%s", msg);
    request_complete(rq);
}
