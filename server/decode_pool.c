/* decode_pool.c - the image decoding thread pool: a ring of waiting jobs under one mutex, and
 * workers that take them in order. */
#include "decode_pool.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

enum {
    DECODE_POOL_MAX_THREADS = 1024,
    DECODE_POOL_MAX_QUEUE = 1 << 20,
};

struct decode_pool {
    pthread_mutex_t lock;
    pthread_cond_t work; /* a job was queued, or the pool is stopping */
    decode_job *ring;    /* queue_size slots; jobs [head, head + count) mod queue_size */
    size_t queue_size, head;
    /* Changed under the lock; atomic so that /metrics reads them without it, and never waits
     * behind a decode thread that was preempted while holding it. */
    _Atomic size_t count, running;
    _Atomic uint64_t completed, rejected;
    bool stopping, stopped;
    int threads;
    int started; /* threads actually created, for the join */
    pthread_t *tids;
};

/* Takes jobs until the pool is stopping and none is left: stopping drains the queue. */
static void *decode_pool_worker(void *arg)
{
    decode_pool *p = arg;
    /* Signals belong to the thread that waits for them (main's sigwait), never to a worker. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);

    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->count == 0 && !p->stopping)
            pthread_cond_wait(&p->work, &p->lock);
        if (p->count == 0)
            break; /* stopping, and nothing left */
        decode_job job = p->ring[p->head];
        p->head = (p->head + 1) % p->queue_size;
        p->count--;
        p->running++;
        pthread_mutex_unlock(&p->lock);

        job.run(job.arg);
        job.done(job.arg, SRV_OK);

        pthread_mutex_lock(&p->lock);
        p->running--;
        p->completed++;
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > DECODE_POOL_MAX_THREADS ? DECODE_POOL_MAX_THREADS : (int)n;
}

srv_status decode_pool_create(const decode_pool_config *cfg, decode_pool **out, char *err,
                              size_t errlen)
{
    *out = NULL;
    if (!cfg || cfg->threads < 0 || cfg->threads > DECODE_POOL_MAX_THREADS || cfg->queue_size < 1 ||
        cfg->queue_size > DECODE_POOL_MAX_QUEUE)
        return srv_fail(err, errlen, SRV_INTERNAL,
                        "decode pool: threads must be 0..%d and the queue 1..%d, got %d and %d",
                        DECODE_POOL_MAX_THREADS, DECODE_POOL_MAX_QUEUE, cfg ? cfg->threads : -1,
                        cfg ? cfg->queue_size : -1);
    decode_pool *p = calloc(1, sizeof *p);
    if (!p)
        return srv_fail(err, errlen, SRV_INTERNAL, "decode pool: out of memory");
    p->threads = cfg->threads ? cfg->threads : online_cpus();
    p->queue_size = (size_t)cfg->queue_size;
    p->ring = calloc(p->queue_size, sizeof *p->ring);
    p->tids = calloc((size_t)p->threads, sizeof *p->tids);
    bool sync = false;
    srv_status st = SRV_OK;
    if (!p->ring || !p->tids) {
        st = srv_fail(err, errlen, SRV_INTERNAL, "decode pool: out of memory");
        goto fail;
    }
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        st = srv_fail(err, errlen, SRV_INTERNAL, "decode pool: cannot create its mutex");
        goto fail;
    }
    if (pthread_cond_init(&p->work, NULL) != 0) {
        pthread_mutex_destroy(&p->lock);
        st = srv_fail(err, errlen, SRV_INTERNAL, "decode pool: cannot create its condition");
        goto fail;
    }
    sync = true;
    for (; p->started < p->threads; p->started++) {
        if (pthread_create(&p->tids[p->started], NULL, decode_pool_worker, p) != 0) {
            st = srv_fail(err, errlen, SRV_INTERNAL, "decode pool: cannot start thread %d of %d",
                          p->started + 1, p->threads);
            goto fail;
        }
    }
    *out = p;
    return SRV_OK;

fail:
    if (sync)
        decode_pool_destroy(p); /* joins the threads that did start */
    else {
        free(p->ring);
        free(p->tids);
        free(p);
    }
    return st;
}

srv_status decode_pool_submit(decode_pool *p, const decode_job *job, char *err, size_t errlen)
{
    srv_status st = SRV_OK;
    pthread_mutex_lock(&p->lock);
    if (p->stopping) {
        p->rejected++;
        st = srv_fail(err, errlen, SRV_UNAVAILABLE, "the server is shutting down");
    } else if (p->count == p->queue_size) {
        p->rejected++;
        st =
            srv_fail(err, errlen, SRV_UNAVAILABLE,
                     "the decode queue is full (%zu requests waiting); retry later", p->queue_size);
    } else {
        p->ring[(p->head + p->count) % p->queue_size] = *job;
        p->count++;
        pthread_cond_signal(&p->work);
    }
    pthread_mutex_unlock(&p->lock);
    return st;
}

void decode_pool_stop(decode_pool *p)
{
    pthread_mutex_lock(&p->lock);
    bool join = !p->stopped;
    p->stopping = true;
    p->stopped = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    if (!join)
        return;
    for (int i = 0; i < p->started; i++)
        pthread_join(p->tids[i], NULL);
}

void decode_pool_destroy(decode_pool *p)
{
    if (!p)
        return;
    decode_pool_stop(p);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
    free(p->ring);
    free(p->tids);
    free(p);
}

decode_pool_stats decode_pool_get_stats(decode_pool *p)
{
    decode_pool_stats s = {
        .threads = p->threads,
        .queued = atomic_load(&p->count),
        .running = atomic_load(&p->running),
        .completed = atomic_load(&p->completed),
        .rejected = atomic_load(&p->rejected),
    };
    return s;
}
