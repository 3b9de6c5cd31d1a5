/* metrics.c - request, latency and batch statistics in Prometheus' text exposition format. */
#include "metrics.h"
#include "text.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { METRICS_MAX_CODES = 16 };

static const double latency_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                         0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
#define LATENCY_BUCKETS (sizeof latency_buckets / sizeof latency_buckets[0])
static const double batch_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
#define BATCH_BUCKETS (sizeof batch_buckets / sizeof batch_buckets[0])

typedef struct {
    uint64_t counts[LATENCY_BUCKETS > BATCH_BUCKETS ? LATENCY_BUCKETS : BATCH_BUCKETS];
    uint64_t n;
    double sum;
} histogram;

typedef struct {
    int codes[METRICS_MAX_CODES];
    uint64_t code_counts[METRICS_MAX_CODES];
    int ncodes;
    histogram request, queue, batch, run;
    uint64_t inferences;
} model_stats;

struct metrics {
    pthread_mutex_t mu;
    int nmodels;
    const char *const *names;
    model_stats *stats; /* nmodels + 1; the last is "no model" */
    int64_t inflight;
};

metrics *metrics_create(const char *const *names, int nmodels)
{
    metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->stats = calloc((size_t)nmodels + 1, sizeof *m->stats);
    if (!m->stats) {
        free(m);
        return NULL;
    }
    m->nmodels = nmodels;
    m->names = names;
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void metrics_destroy(metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m->stats);
    free(m);
}

static model_stats *stats_of(metrics *m, int model)
{
    return &m->stats[model >= 0 && model < m->nmodels ? model : m->nmodels];
}

static void observe(histogram *h, const double *bounds, size_t nb, double v)
{
    for (size_t i = 0; i < nb; i++)
        if (v <= bounds[i])
            h->counts[i]++;
    h->n++;
    h->sum += v;
}

void metrics_request(metrics *m, int model, int http_code, int64_t duration_ns)
{
    pthread_mutex_lock(&m->mu);
    model_stats *s = stats_of(m, model);
    int i;
    for (i = 0; i < s->ncodes && s->codes[i] != http_code; i++)
        ;
    if (i == s->ncodes && s->ncodes < METRICS_MAX_CODES) {
        s->codes[i] = http_code;
        s->ncodes++;
    }
    if (i < s->ncodes)
        s->code_counts[i]++;
    observe(&s->request, latency_buckets, LATENCY_BUCKETS, (double)duration_ns * 1e-9);
    pthread_mutex_unlock(&m->mu);
}

void metrics_batch(metrics *m, int model, int samples, int64_t run_ns)
{
    pthread_mutex_lock(&m->mu);
    model_stats *s = stats_of(m, model);
    observe(&s->batch, batch_buckets, BATCH_BUCKETS, samples);
    observe(&s->run, latency_buckets, LATENCY_BUCKETS, (double)run_ns * 1e-9);
    s->inferences += (uint64_t)samples;
    pthread_mutex_unlock(&m->mu);
}

void metrics_queue_wait(metrics *m, int model, int64_t wait_ns)
{
    pthread_mutex_lock(&m->mu);
    observe(&stats_of(m, model)->queue, latency_buckets, LATENCY_BUCKETS, (double)wait_ns * 1e-9);
    pthread_mutex_unlock(&m->mu);
}

void metrics_inflight(metrics *m, int delta)
{
    pthread_mutex_lock(&m->mu);
    m->inflight += delta;
    pthread_mutex_unlock(&m->mu);
}

static void put_histogram(text *t, const char *name, const char *model, const histogram *h,
                          const double *bounds, size_t nb)
{
    for (size_t i = 0; i < nb; i++)
        text_put(t, "%s_bucket{model=\"%s\",le=\"%g\"} %llu\n", name, model, bounds[i],
                 (unsigned long long)h->counts[i]);
    text_put(t, "%s_bucket{model=\"%s\",le=\"+Inf\"} %llu\n", name, model,
             (unsigned long long)h->n);
    text_put(t, "%s_sum{model=\"%s\"} %.9g\n", name, model, h->sum);
    text_put(t, "%s_count{model=\"%s\"} %llu\n", name, model, (unsigned long long)h->n);
}

char *metrics_render(metrics *m, const metrics_gauges *g, size_t *len)
{
    text t = {0};
    pthread_mutex_lock(&m->mu);
    int n = m->nmodels;

    text_put(&t,
             "# HELP convserve_requests_total HTTP requests answered, by model and status code.\n"
             "# TYPE convserve_requests_total counter\n");
    for (int i = 0; i <= n; i++) {
        const model_stats *s = &m->stats[i];
        for (int c = 0; c < s->ncodes; c++)
            text_put(&t, "convserve_requests_total{model=\"%s\",code=\"%d\"} %llu\n",
                     i < n ? m->names[i] : "", s->codes[c], (unsigned long long)s->code_counts[c]);
    }
    text_put(&t, "# HELP convserve_request_duration_seconds Time from request headers to answer.\n"
                 "# TYPE convserve_request_duration_seconds histogram\n");
    for (int i = 0; i <= n; i++)
        put_histogram(&t, "convserve_request_duration_seconds", i < n ? m->names[i] : "",
                      &m->stats[i].request, latency_buckets, LATENCY_BUCKETS);
    text_put(&t, "# HELP convserve_queue_duration_seconds Time a request waited for its batch.\n"
                 "# TYPE convserve_queue_duration_seconds histogram\n");
    for (int i = 0; i < n; i++)
        put_histogram(&t, "convserve_queue_duration_seconds", m->names[i], &m->stats[i].queue,
                      latency_buckets, LATENCY_BUCKETS);
    text_put(&t, "# HELP convserve_inference_duration_seconds Time the engine took per batch.\n"
                 "# TYPE convserve_inference_duration_seconds histogram\n");
    for (int i = 0; i < n; i++)
        put_histogram(&t, "convserve_inference_duration_seconds", m->names[i], &m->stats[i].run,
                      latency_buckets, LATENCY_BUCKETS);
    text_put(&t, "# HELP convserve_batch_size Samples per executed batch.\n"
                 "# TYPE convserve_batch_size histogram\n");
    for (int i = 0; i < n; i++)
        put_histogram(&t, "convserve_batch_size", m->names[i], &m->stats[i].batch, batch_buckets,
                      BATCH_BUCKETS);
    text_put(&t, "# HELP convserve_inferences_total Samples run through each model.\n"
                 "# TYPE convserve_inferences_total counter\n");
    for (int i = 0; i < n; i++)
        text_put(&t, "convserve_inferences_total{model=\"%s\"} %llu\n", m->names[i],
                 (unsigned long long)m->stats[i].inferences);
    text_put(&t, "# HELP convserve_queue_length Requests waiting in each model's queue.\n"
                 "# TYPE convserve_queue_length gauge\n");
    for (int i = 0; i < n; i++)
        text_put(&t, "convserve_queue_length{model=\"%s\"} %d\n", m->names[i],
                 g->queue_lengths ? g->queue_lengths[i] : 0);
    text_put(&t,
             "# HELP convserve_budget_bytes Memory held against each budget, and its limit.\n"
             "# TYPE convserve_budget_bytes gauge\n"
             "convserve_budget_bytes{budget=\"request\",kind=\"used\"} %lld\n"
             "convserve_budget_bytes{budget=\"request\",kind=\"limit\"} %lld\n"
             "convserve_budget_bytes{budget=\"answer\",kind=\"used\"} %lld\n"
             "convserve_budget_bytes{budget=\"answer\",kind=\"limit\"} %lld\n",
             (long long)g->request_budget_used, (long long)g->request_budget_limit,
             (long long)g->answer_budget_used, (long long)g->answer_budget_limit);
    text_put(&t,
             "# HELP convserve_inflight_requests Requests received and not yet answered.\n"
             "# TYPE convserve_inflight_requests gauge\n"
             "convserve_inflight_requests %lld\n",
             (long long)m->inflight);
    pthread_mutex_unlock(&m->mu);
    return text_take(&t, len);
}
