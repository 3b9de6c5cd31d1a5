/* metrics.h - Prometheus counters and histograms for /metrics, safe to update from any thread. */
#ifndef CONVSERVE_METRICS_H
#define CONVSERVE_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct metrics metrics;

/* Model index i in 0..nmodels-1 names model names[i]; index -1 is "no model" (health, metadata of
 * an unknown model, /metrics itself). */
metrics *metrics_create(const char *const *names, int nmodels);
void metrics_destroy(metrics *m);

void metrics_request(metrics *m, int model, int http_code, int64_t duration_ns);
/* One executed batch: its size, and the queue wait of one of its requests. */
void metrics_batch(metrics *m, int model, int samples, int64_t run_ns);
void metrics_queue_wait(metrics *m, int model, int64_t wait_ns);
void metrics_inflight(metrics *m, int delta);

/* Gauges the caller reads at render time. */
typedef struct {
    const int *queue_lengths; /* one per model */
    int64_t request_budget_used, request_budget_limit;
    int64_t answer_budget_used, answer_budget_limit;
} metrics_gauges;

/* Renders the Prometheus text format into a malloc'd string. */
char *metrics_render(metrics *m, const metrics_gauges *g, size_t *len);

#endif
