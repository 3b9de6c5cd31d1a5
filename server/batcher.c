/* batcher.c - the per-model queue and its inference workers: dynamic batching over the engine. */
#include "batcher.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PER_US INT64_C(1000)
#define NS_PER_MS INT64_C(1000000)
#define NS_PER_S  INT64_C(1000000000)
/* A worker keeps its buffer for concatenating a batch's inputs up to this size between batches. */
#define BATCH_IN_KEEP_BYTES ((size_t)64 << 20)
/* Weight of the newest gap in the moving average of request arrival gaps. */
#define GAP_EMA_WEIGHT 0.2

typedef struct worker {
    struct batcher *b;
    int index;
    pthread_t thread;
    bool started;
    batch_job **jobs;
    float *batch_in; /* concatenated inputs of a multi-job batch */
    size_t batch_in_cap;
} worker;

struct batcher {
    const engine_model *m;
    batcher_options o;
    worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* jobs arrived, or stop */
    pthread_cond_t started; /* a worker finished warming up (or failed) */
    batch_job *head, *tail;
    int queued;
    bool stopping;
    int warmed; /* workers that finished warming up, well or not */
    int start_failed;
    char start_err[512];
    batcher_info info;
    int64_t last_arrival_ns;
    double gap_ns; /* moving average of the time between arrivals; 0 until two arrived */
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
static void run_batch(worker *w, engine_runner *r, batch_job **jobs, int njobs, int64_t samples)
{
    batcher *b = w->b;
    char err[512];
    const batch_job *first = jobs[0];
    size_t per = sample_count(first);
    const float *in = first->in;
    int64_t t0 = monotonic_ns();
    for (int k = 0; k < njobs; k++) {
        jobs[k]->started_ns = t0;
        jobs[k]->batch_size = (int)samples;
        jobs[k]->instance = w->index;
    }
    if (njobs > 1) {
        size_t need = per * (size_t)samples;
        if (need > w->batch_in_cap) {
            float *nb = realloc(w->batch_in, need * sizeof *nb);
            if (!nb) {
                for (int k = 0; k < njobs; k++) {
                    snprintf(jobs[k]->err, sizeof jobs[k]->err, "out of memory for a batch");
                    jobs[k]->engine = ENGINE_E_NOMEM;
                    finish(jobs[k], SRV_UNAVAILABLE);
                }
                return;
            }
            w->batch_in = nb;
            w->batch_in_cap = need;
        }
        size_t off = 0;
        for (int k = 0; k < njobs; k++) {
            size_t c = per * (size_t)jobs[k]->dims[0];
            memcpy(w->batch_in + off, jobs[k]->in, c * sizeof *w->batch_in);
            off += c;
        }
        in = w->batch_in;
    }
    int64_t dims[SPEC_MAX_RANK];
    memcpy(dims, first->dims, sizeof dims);
    dims[0] = samples;
    engine_tensor out;
    /* A lone job gets its output written in place: no copy, and nothing of its size kept. */
    engine_status st = njobs == 1
                           ? engine_runner_run_into(r, in, dims, first->rank, jobs[0]->out,
                                                    jobs[0]->out_count, &out, err, sizeof err)
                           : engine_runner_run(r, in, dims, first->rank, &out, err, sizeof err);
    if (b->o.on_batch)
        b->o.on_batch(b->o.on_batch_ctx, (int)samples, njobs, monotonic_ns() - t0);
    size_t off = 0;
    for (int k = 0; k < njobs; k++) {
        batch_job *j = jobs[k];
        j->engine = st;
        if (st != ENGINE_OK) {
            snprintf(j->err, sizeof j->err, "inference failed: %s", err);
            finish(j, srv_status_from_engine(st));
            continue;
        }
        if (off + j->out_count > out.count) {
            snprintf(j->err, sizeof j->err, "inference produced %zu values; expected more",
                     out.count);
            finish(j, SRV_INTERNAL);
            continue;
        }
        if (out.data + off != j->out)
            memcpy(j->out, out.data + off, j->out_count * sizeof *j->out);
        off += j->out_count;
        finish(j, SRV_OK);
    }
    /* A batch of large free-size inputs needed a large copy: do not keep it. */
    if (w->batch_in_cap * sizeof *w->batch_in > BATCH_IN_KEEP_BYTES) {
        free(w->batch_in);
        w->batch_in = NULL;
        w->batch_in_cap = 0;
    }
}

/* Whether to wait for more requests before running what is queued: only while the batch is not
 * full, the oldest request's delay is not used up, and requests have recently been arriving faster
 * than the time left, so that another one is expected to join. A lone client's request runs at
 * once (nothing else can arrive while it waits), and a steady stream fills batches. */
static bool worth_waiting(const batcher *b, const batch_job *first, int64_t now, int64_t deadline)
{
    if (b->stopping || now >= deadline || compatible_samples(b, first) >= b->o.max_batch)
        return false;
    return b->gap_ns > 0 && b->gap_ns < (double)(deadline - now) &&
           now - b->last_arrival_ns < (int64_t)(2 * b->gap_ns) + NS_PER_US;
}

static void timed_wait(batcher *b, int64_t until_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(until_ns / NS_PER_S),
                          .tv_nsec = (long)(until_ns % NS_PER_S)};
    pthread_cond_timedwait(&b->cv, &b->mu,
                           &ts); /* the condition variable runs on CLOCK_MONOTONIC */
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    batcher *b = w->b;
    engine_runner *r = NULL;
    char err[512];
    bool ok = false;
    w->jobs = calloc((size_t)b->o.max_batch, sizeof *w->jobs);
    engine_runner_options ro = {
        .threads = b->o.threads, .max_batch = b->o.max_batch, .cache_bytes = b->o.cache_bytes};
    if (!w->jobs)
        snprintf(err, sizeof err, "out of memory");
    else if (engine_runner_create(b->m, &ro, &r, err, sizeof err) == ENGINE_OK &&
             engine_runner_warmup(r, err, sizeof err) == ENGINE_OK)
        ok = true;
    pthread_mutex_lock(&b->mu);
    if (!ok) {
        b->start_failed++;
        snprintf(b->start_err, sizeof b->start_err, "%s", err);
    } else if (w->index == 0) {
        b->info.precision = engine_runner_precision(r);
        b->info.reference = engine_runner_uses_reference(r);
        engine_runner_kernels(r, b->info.kernels, sizeof b->info.kernels);
        engine_runner_usage_info u;
        engine_runner_usage(r, &u);
        b->info.weight_bytes = u.weight_bytes;
    }
    b->warmed++;
    pthread_cond_broadcast(&b->started);
    if (!ok) {
        pthread_mutex_unlock(&b->mu);
        engine_runner_destroy(r);
        return NULL;
    }

    for (;;) {
        while (!b->head && !b->stopping)
            pthread_cond_wait(&b->cv, &b->mu);
        if (!b->head)
            break; /* stopping and drained */
        batch_job *first = b->head;
        int64_t deadline = first->enqueued_ns + b->o.max_delay_us * NS_PER_US;
        while (worth_waiting(b, first, monotonic_ns(), deadline)) {
            timed_wait(b, deadline);
            if (b->head != first)
                break; /* another worker took it */
        }
        if (!b->head)
            continue;
        first = b->head;

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
                    w->jobs[njobs++] = j;
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
        /* Others may still be waiting: let another worker look at them. */
        if (b->head)
            pthread_cond_signal(&b->cv);
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
            run_batch(w, r, w->jobs, njobs, samples);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
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
    if (b->o.instances < 1)
        b->o.instances = 1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, &ca);
    pthread_cond_init(&b->started, NULL);
    pthread_condattr_destroy(&ca);
    b->workers = calloc((size_t)b->o.instances, sizeof *b->workers);
    if (!b->workers) {
        batcher_destroy(b);
        return srv_fail(err, errlen, SRV_INTERNAL, "out of memory");
    }
    int started = 0;
    for (int i = 0; i < b->o.instances; i++) {
        worker *w = &b->workers[i];
        w->b = b;
        w->index = i;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            break;
        w->started = true;
        started++;
    }
    pthread_mutex_lock(&b->mu);
    while (b->warmed < started)
        pthread_cond_wait(&b->started, &b->mu);
    srv_status s = SRV_OK;
    if (started < b->o.instances)
        s = srv_fail(err, errlen, SRV_INTERNAL, "cannot start %d inference threads",
                     b->o.instances);
    else if (b->start_failed)
        s = srv_fail(err, errlen, SRV_INTERNAL, "%s", b->start_err);
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
        if (b->last_arrival_ns) {
            double gap = (double)(job->enqueued_ns - b->last_arrival_ns);
            b->gap_ns =
                b->gap_ns > 0 ? (1 - GAP_EMA_WEIGHT) * b->gap_ns + GAP_EMA_WEIGHT * gap : gap;
        }
        b->last_arrival_ns = job->enqueued_ns;
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

void batcher_get_info(batcher *b, batcher_info *info)
{
    pthread_mutex_lock(&b->mu);
    *info = b->info;
    pthread_mutex_unlock(&b->mu);
}

void batcher_stop(batcher *b)
{
    if (!b || !b->workers)
        return;
    pthread_mutex_lock(&b->mu);
    b->stopping = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < b->o.instances; i++) {
        if (b->workers[i].started) {
            pthread_join(b->workers[i].thread, NULL);
            b->workers[i].started = false;
        }
    }
}

void batcher_destroy(batcher *b)
{
    if (!b)
        return;
    batcher_stop(b);
    for (int i = 0; b->workers && i < b->o.instances; i++) {
        free(b->workers[i].jobs);
        free(b->workers[i].batch_in);
    }
    free(b->workers);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    pthread_cond_destroy(&b->started);
    free(b);
}
