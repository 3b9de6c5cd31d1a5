/* metrics.h - Prometheus counters and histograms for /metrics, safe to update from any thread. */
#ifndef CONVSERVE_METRICS_H
#define CONVSERVE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decode_pool.h"

typedef struct metrics metrics;

/* Series are labelled by model and version. A series is made the first time a version of a model
 * is loaded and kept for the life of the process, so that counters carry on across reloads of
 * the same version; index -1 is "no model" (health, an unknown model, /metrics itself). */
metrics *metrics_create(void);
void metrics_destroy(metrics *m);

/* The series of (model, version), made if new. -1 when the table of series is full. */
int metrics_series(metrics *m, const char *model, const char *version);

void metrics_request(metrics *m, int series, int http_code, int64_t duration_ns);
/* One executed batch: its size, and the queue wait of one of its requests. */
void metrics_batch(metrics *m, int series, int samples, int64_t run_ns);
void metrics_queue_wait(metrics *m, int series, int64_t wait_ns);
void metrics_inflight(metrics *m, int delta);
/* One attempt to load (and warm up) a version: whether it succeeded, and how long it took. */
void metrics_model_load(metrics *m, int series, bool ok, int64_t duration_ns);

/* What the caller knows now of a series: requests waiting, and whether it serves. Several entries
 * may name one series (a version being replaced); their queues add up. */
typedef struct {
    int series;
    int queued;
    bool ready;
} metrics_live;

/* The memory budgets, read at render time. */
typedef struct {
    int64_t request_used, request_limit;
    int64_t answer_used, answer_limit;
} metrics_budgets;

/* Renders the Prometheus text format into a malloc'd string, with the budgets and the decode
 * pool as they stand. */
char *metrics_render(metrics *m, const metrics_live *live, int nlive, const metrics_budgets *b,
                     const decode_pool_stats *d, size_t *len);

#endif
