/* decode_pool.h - a bounded pool of threads with a bounded queue, where image decoding runs instead
 * of on libmicrohttpd's threads, so that a burst of costly images delays other images only and
 * never health, metadata or metrics.
 *
 * Usage:
 *     decode_pool *pool;
 *     decode_pool_config cfg = {.threads = 0, .queue_size = 64};   // 0: one thread per CPU
 *     if (decode_pool_create(&cfg, &pool, err, sizeof err) != SRV_OK) die(err);
 *
 *     // on an HTTP thread, with the connection suspended:
 *     decode_job job = {.run = decode_images, .done = images_decoded, .arg = rq};
 *     if (decode_pool_submit(pool, &job, err, sizeof err) != SRV_OK)
 *         reply 503 with err;                  // the queue is full, or the pool is stopping
 *
 *     decode_pool_destroy(pool);               // at shutdown: finishes every queued job first
 *
 * run(arg) and then done(arg, SRV_OK) are called on one pool thread, in that order, exactly once
 * for each accepted job; done may hand the result on (resume the connection, queue the batch).
 * Submitting never blocks and never allocates: a job is copied into a ring preallocated for
 * queue_size jobs. Jobs start in the order they were accepted.
 */
#ifndef CONVSERVE_DECODE_POOL_H
#define CONVSERVE_DECODE_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct decode_pool decode_pool;

typedef struct {
    int threads;    /* worker threads; 0 = one per online CPU */
    int queue_size; /* jobs that may wait for a thread; a submit beyond it gets SRV_UNAVAILABLE */
} decode_pool_config;

typedef struct {
    void (*run)(void *arg);                 /* the work, on a pool thread */
    void (*done)(void *arg, srv_status st); /* then this, on the same thread (st is SRV_OK) */
    void *arg;
} decode_job;

/* What the pool has done so far, for /metrics. */
typedef struct {
    int threads;
    size_t queued;  /* waiting for a thread now */
    size_t running; /* being run now */
    uint64_t completed;
    uint64_t rejected; /* refused because the queue was full or the pool stopping */
} decode_pool_stats;

/* Starts the threads. A configuration out of range (threads < 0 or more than 1024, queue_size < 1
 * or more than 1 << 20) is SRV_INTERNAL, as it comes from the server's own settings. The threads
 * run at the creator's priority: see README, "Images", for why not lower. */
srv_status decode_pool_create(const decode_pool_config *cfg, decode_pool **out, char *err,
                              size_t errlen);

/* Queues a copy of *job. SRV_UNAVAILABLE (503) when queue_size jobs are already waiting or the
 * pool is stopping; then neither run nor done is ever called and the caller keeps arg. */
srv_status decode_pool_submit(decode_pool *p, const decode_job *job, char *err, size_t errlen);

/* Refuses new jobs, lets the running and queued ones finish (each gets its done call), and joins
 * the threads. Idempotent; must not be called from a pool thread (a done callback). */
void decode_pool_stop(decode_pool *p);

/* Stops the pool if it is running and frees it; NULL does nothing. */
void decode_pool_destroy(decode_pool *p);

/* Read without the pool's lock: each figure is exact, the set of them a moment's snapshot. */
decode_pool_stats decode_pool_get_stats(decode_pool *p);

#endif
