/* batcher.h - one model's request queue and the inference worker that runs it in batches.
 *
 * Usage:
 *     batcher *b;
 *     batcher_options o = {.max_batch = 64, .max_delay_us = 500, .max_queue = 256, ...};
 *     if (batcher_create(model, &o, &b, err, sizeof err) != SRV_OK) ...  // warms up, then returns
 *     job->in = x; job->n = 4; ... job->done = on_done;
 *     if (batcher_submit(b, job, err, sizeof err) != SRV_OK) ...        // 503 when full
 *     ... on_done(job) runs on the worker thread with job->status and job->out filled in ...
 *     batcher_stop(b);      // finishes everything queued, then joins the worker
 *     batcher_destroy(b);
 *
 * The worker thread owns the engine runner (oneDNN primitives must run on the thread that made
 * them). It takes what is waiting, up to max_batch samples of the same input shape, waits at most
 * max_delay_us after the oldest request arrived for more, runs one batch and gives every request
 * its own slice of the output.
 */
#ifndef CONVSERVE_BATCHER_H
#define CONVSERVE_BATCHER_H

#include <stdint.h>

#include "engine.h"
#include "status.h"

typedef struct batch_job batch_job;
struct batch_job {
    /* Set by the submitter. The buffers stay owned by the submitter and must live until done(). */
    const float *in; /* [n, ...sample dims] row-major float32 */
    int rank;
    int64_t dims[SPEC_MAX_RANK]; /* dims[0] = n */
    float *out;                  /* out_count floats, sized from shape inference */
    size_t out_count;
    void (*done)(batch_job *job, void *ctx);
    void *ctx;

    /* Set by the worker before done(). */
    srv_status status;
    char err[600];
    int batch_size;      /* samples in the batch this job ran in */
    int64_t enqueued_ns; /* monotonic clock */
    int64_t started_ns;  /* when its batch started running */
    int64_t finished_ns;

    batch_job *next; /* queue link, private */
};

typedef struct {
    int max_batch;
    int64_t max_delay_us;
    int max_queue; /* jobs waiting; more are refused */
    int64_t queue_timeout_ms;
    int threads; /* OpenMP team size of the worker; 0 = default */
    /* Called on the worker thread after each batch: samples, jobs, and run time. */
    void (*on_batch)(void *ctx, int samples, int jobs, int64_t run_ns);
    void *on_batch_ctx;
} batcher_options;

typedef struct batcher batcher;

srv_status batcher_create(const engine_model *m, const batcher_options *o, batcher **out, char *err,
                          size_t errlen);
/* Queues a job; SRV_UNAVAILABLE when the queue is full or the batcher is stopping. On success
 * done() will be called exactly once. */
srv_status batcher_submit(batcher *b, batch_job *job, char *err, size_t errlen);
/* Jobs waiting now (a gauge for /metrics). */
int batcher_queued(batcher *b);
/* The precision the worker runs at and the oneDNN kernels it uses, for the startup log. */
const char *batcher_describe(batcher *b, char *buf, size_t len);
void batcher_stop(batcher *b);
void batcher_destroy(batcher *b);

int64_t monotonic_ns(void);

#endif
