/* batcher.h - one model's request queue and the inference workers ("instances") that run it in
 * batches.
 *
 * Usage:
 *     batcher *b;
 *     batcher_options o = {.max_batch = 64, .max_delay_us = 500, .max_queue = 256,
 *                          .instances = 2, .threads = 1, ...};
 *     if (batcher_create(model, &o, &b, err, sizeof err) != SRV_OK) ...  // warms up, then returns
 *     job->in = x; job->n = 4; ... job->done = on_done;
 *     if (batcher_submit(b, job, err, sizeof err) != SRV_OK) ...        // 503 when full
 *     ... on_done(job) runs on a worker thread with job->status and job->out filled in ...
 *     batcher_stop(b);      // finishes everything queued, then joins the workers
 *     batcher_destroy(b);
 *
 * Each worker thread owns an engine runner (oneDNN primitives must run on the thread that made
 * them) with `threads` OpenMP threads. A free worker takes what is waiting, up to max_batch
 * samples of the same input shape. It waits for more only while requests arrive fast enough that
 * another is expected before max_delay_us after the oldest one: a lone request runs at once, and
 * under load batches fill up. Every request gets its own slice of the output.
 */
#ifndef CONVSERVE_BATCHER_H
#define CONVSERVE_BATCHER_H

#include <stdbool.h>
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
    engine_status engine; /* what the engine said, when status is not SRV_OK */
    char err[600];
    int batch_size;      /* samples in the batch this job ran in */
    int instance;        /* the worker that ran it */
    int64_t enqueued_ns; /* monotonic clock */
    int64_t started_ns;  /* when its batch started running */
    int64_t finished_ns;

    batch_job *next; /* queue link, private */
};

typedef struct {
    int max_batch;
    int64_t max_delay_us; /* the longest a request waits for others to join its batch */
    int max_queue;        /* jobs waiting; more are refused */
    int64_t queue_timeout_ms;
    int instances;      /* workers, each with its own runner; at least 1 */
    int threads;        /* OpenMP team size of each worker; 0 = default */
    size_t cache_bytes; /* each runner's plan budget; 0 = the engine's default */
    /* Called on the worker thread after each batch: samples, jobs, and run time. */
    void (*on_batch)(void *ctx, int samples, int jobs, int64_t run_ns);
    void *on_batch_ctx;
} batcher_options;

/* What the workers run, from the first one that warmed up (all run the same model). */
typedef struct {
    spec_precision precision; /* bf16 only when asked for and the CPU runs it */
    bool reference;           /* some primitive runs oneDNN's slow reference code */
    char kernels[1024];       /* the oneDNN implementations, for the startup log */
    size_t weight_bytes;      /* reordered weights of one worker */
} batcher_info;

typedef struct batcher batcher;

srv_status batcher_create(const engine_model *m, const batcher_options *o, batcher **out, char *err,
                          size_t errlen);
/* Queues a job; SRV_UNAVAILABLE when the queue is full or the batcher is stopping. On success
 * done() will be called exactly once. */
srv_status batcher_submit(batcher *b, batch_job *job, char *err, size_t errlen);
/* Jobs waiting now (a gauge for /metrics). */
int batcher_queued(batcher *b);
void batcher_get_info(batcher *b, batcher_info *info);
void batcher_stop(batcher *b);
void batcher_destroy(batcher *b);

int64_t monotonic_ns(void);

#endif
