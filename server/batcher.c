/* batcher.c - the per-model queue and inference worker: dynamic batching over the engine. */
#include "batcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PER_US INT64_C(1000)
#define NS_PER_MS INT64_C(1000000)
#define NS_PER_S  INT64_C(1000000000)

struct batcher {
    const engine_model *m;
    batcher_options o;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* jobs arrived, or stop */
    pthread_cond_t started; /* the worker finished warming up (or failed) */
    batch_job *head, *tail;
    int queued;
    bool stopping, ready;
    srv_status start_status;
    char start_err[512];
    char describe[1024];
    float *batch_in; /* concatenated inputs of a multi-job batch */
    size_t batch_in_cap;
};

int64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static size_t sample_count(const batch_job *j)
{
    size_t c = 1;
    for (int i = 1; i < j->rank; i++)
        c *= (size_t)j->dims[i];
    return c;
}

static bool same_sample_shape(const batch_job *a, const batch_job *b)
{
    if (a->rank != b->rank)
        return false;
    for (int i = 1; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return true;
}

/* Samples waiting that could join a batch led by `first`. Caller holds the lock. */
static int64_t compatible_samples(const batcher *b, const batch_job *first)
{
    int64_t n = 0;
    for (const batch_job *j = b->head; j; j = j->next)
        if (same_sample_shape(first, j))
            n += j->dims[0];
    return n;
}

static void finish(batch_job *j, srv_status s)
{
    j->status = s;
    j->finished_ns = monotonic_ns();
    j->done(j, j->ctx);
}

/* Runs the jobs of one batch: in place for a single job, concatenated otherwise. */
static void run_batch(batcher *b, engine_runner *r, batch_job **jobs, int njobs, int64_t samples)
{
    char err[512];
    const batch_job *first = jobs[0];
    size_t per = sample_count(first);
    const float *in = first->in;
    int64_t t0 = monotonic_ns();
    for (int k = 0; k < njobs; k++) {
        jobs[k]->started_ns = t0;
        jobs[k]->batch_size = (int)samples;
    }
    if (njobs > 1) {
        size_t need = per * (size_t)samples;
        if (need > b->batch_in_cap) {
            float *nb = realloc(b->batch_in, need * sizeof *nb);
            if (!nb) {
                for (int k = 0; k < njobs; k++) {
                    snprintf(jobs[k]->err, sizeof jobs[k]->err, "out of memory for a batch");
                    finish(jobs[k], SRV_UNAVAILABLE);
                }
                return;
            }
            b->batch_in = nb;
            b->batch_in_cap = need;
        }
        size_t off = 0;
        for (int k = 0; k < njobs; k++) {
            size_t c = per * (size_t)jobs[k]->dims[0];
            memcpy(b->batch_in + off, jobs[k]->in, c * sizeof *b->batch_in);
            off += c;
        }
        in = b->batch_in;
    }
    int64_t dims[SPEC_MAX_RANK];
    memcpy(dims, first->dims, sizeof dims);
    dims[0] = samples;
    engine_tensor out;
    engine_status st = engine_runner_run(r, in, dims, first->rank, &out, err, sizeof err);
    if (b->o.on_batch)
        b->o.on_batch(b->o.on_batch_ctx, (int)samples, njobs, monotonic_ns() - t0);
    size_t off = 0;
    for (int k = 0; k < njobs; k++) {
        batch_job *j = jobs[k];
        if (st != ENGINE_OK) {
            /* Inputs were validated before queueing, so a failure here is the server's fault. */
            snprintf(j->err, sizeof j->err, "inference failed: %s", err);
            finish(j, SRV_INTERNAL);
            continue;
        }
        if (off + j->out_count > out.count) {
            snprintf(j->err, sizeof j->err, "inference produced %zu values; expected more",
                     out.count);
            finish(j, SRV_INTERNAL);
            continue;
        }
        memcpy(j->out, out.data + off, j->out_count * sizeof *j->out);
        off += j->out_count;
        finish(j, SRV_OK);
    }
}

static void *worker_main(void *arg)
{
    batcher *b = arg;
    engine_runner *r = NULL;
    char err[512];
    batch_job **jobs = calloc((size_t)b->o.max_batch, sizeof *jobs);
    srv_status s = SRV_OK;
    if (!jobs) {
        s = srv_fail(err, sizeof err, SRV_INTERNAL, "out of memory");
    } else if (engine_runner_create(b->m, b->o.threads, &r, err, sizeof err) != ENGINE_OK ||
               engine_runner_warmup(r, err, sizeof err) != ENGINE_OK) {
        s = SRV_INTERNAL;
    }
    pthread_mutex_lock(&b->mu);
    b->start_status = s;
    if (s != SRV_OK) {
        snprintf(b->start_err, sizeof b->start_err, "%s", err);
    } else {
        char kernels[768];
        snprintf(b->describe, sizeof b->describe, "precision %s, kernels %s",
                 engine_runner_precision(r) == SPEC_BF16 ? "bf16" : "f32",
                 engine_runner_kernels(r, kernels, sizeof kernels));
    }
    b->ready = true;
    pthread_cond_broadcast(&b->started);
    if (s != SRV_OK) {
        pthread_mutex_unlock(&b->mu);
        free(jobs);
        engine_runner_destroy(r);
        return NULL;
    }

    for (;;) {
        while (!b->head && !b->stopping)
            pthread_cond_wait(&b->cv, &b->mu);
        if (!b->head)
            break; /* stopping and drained */
        batch_job *first = b->head;

        /* Wait for a full batch, but never longer than max_delay after the oldest arrival. */
        int64_t deadline = first->enqueued_ns + b->o.max_delay_us * NS_PER_US;
        while (!b->stopping && compatible_samples(b, first) < b->o.max_batch &&
               monotonic_ns() < deadline) {
            /* b->cv waits on the monotonic clock (batcher_create), so a step of the wall clock
             * neither stalls the batch nor makes this loop spin. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t wait = deadline - monotonic_ns();
            if (wait <= 0)
                break;
            int64_t abs_ns = (int64_t)ts.tv_nsec + wait;
            ts.tv_sec += (time_t)(abs_ns / NS_PER_S);
            ts.tv_nsec = (long)(abs_ns % NS_PER_S);
            pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        }

        /* Take compatible jobs in arrival order while they fit; expire the ones that waited too
         * long. Jobs of another shape stay queued for the next round. */
        int njobs = 0;
        int64_t samples = 0, now = monotonic_ns();
        batch_job **link = &b->head, *expired = NULL;
        b->tail = NULL;
        while (*link) {
            batch_job *j = *link;
            bool take = false, expire = false;
            if (now - j->enqueued_ns > b->o.queue_timeout_ms * NS_PER_MS)
                expire = true;
            else if (same_sample_shape(first, j) && njobs < b->o.max_batch &&
                     (samples == 0 || samples + j->dims[0] <= b->o.max_batch))
                take = true;
            if (take || expire) {
                *link = j->next;
                j->next = NULL;
                b->queued--;
                if (take) {
                    jobs[njobs++] = j;
                    samples += j->dims[0];
                } else {
                    j->next = expired;
                    expired = j;
                }
            } else {
                b->tail = j;
                link = &j->next;
            }
        }
        pthread_mutex_unlock(&b->mu);

        while (expired) {
            batch_job *j = expired;
            expired = j->next;
            snprintf(
                j->err, sizeof j->err, "request waited %lld ms in the queue; the limit is %lld ms",
                (long long)((now - j->enqueued_ns) / NS_PER_MS), (long long)b->o.queue_timeout_ms);
            finish(j, SRV_UNAVAILABLE);
        }
        if (njobs > 0)
            run_batch(b, r, jobs, njobs, samples);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    free(jobs);
    engine_runner_destroy(r);
    return NULL;
}

srv_status batcher_create(const engine_model *m, const batcher_options *o, batcher **out, char *err,
                          size_t errlen)
{
    *out = NULL;
    batcher *b = calloc(1, sizeof *b);
    if (!b)
        return srv_fail(err, errlen, SRV_INTERNAL, "out of memory");
    b->m = m;
    b->o = *o;
    if (b->o.max_batch < 1)
        b->o.max_batch = 1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, &ca);
    pthread_cond_init(&b->started, NULL);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&b->thread, NULL, worker_main, b) != 0) {
        batcher_destroy(b);
        return srv_fail(err, errlen, SRV_INTERNAL, "cannot start the inference thread");
    }
    b->thread_started = true;
    pthread_mutex_lock(&b->mu);
    while (!b->ready)
        pthread_cond_wait(&b->started, &b->mu);
    srv_status s = b->start_status;
    if (s != SRV_OK)
        srv_fail(err, errlen, s, "%s", b->start_err);
    pthread_mutex_unlock(&b->mu);
    if (s != SRV_OK) {
        batcher_destroy(b);
        return s;
    }
    *out = b;
    return SRV_OK;
}

srv_status batcher_submit(batcher *b, batch_job *job, char *err, size_t errlen)
{
    srv_status s = SRV_OK;
    job->next = NULL;
    job->enqueued_ns = monotonic_ns();
    pthread_mutex_lock(&b->mu);
    if (b->stopping) {
        s = srv_fail(err, errlen, SRV_UNAVAILABLE, "the server is shutting down");
    } else if (b->queued >= b->o.max_queue) {
        s = srv_fail(err, errlen, SRV_UNAVAILABLE,
                     "the queue of this model is full (%d requests waiting)", b->queued);
    } else {
        if (b->tail)
            b->tail->next = job;
        else
            b->head = job;
        b->tail = job;
        b->queued++;
        pthread_cond_signal(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    return s;
}

int batcher_queued(batcher *b)
{
    pthread_mutex_lock(&b->mu);
    int n = b->queued;
    pthread_mutex_unlock(&b->mu);
    return n;
}

const char *batcher_describe(batcher *b, char *buf, size_t len)
{
    snprintf(buf, len, "%s", b->describe);
    return buf;
}

void batcher_stop(batcher *b)
{
    if (!b || !b->thread_started)
        return;
    pthread_mutex_lock(&b->mu);
    b->stopping = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    b->thread_started = false;
}

void batcher_destroy(batcher *b)
{
    if (!b)
        return;
    batcher_stop(b);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    pthread_cond_destroy(&b->started);
    free(b->batch_in);
    free(b);
}
