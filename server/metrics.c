/* metrics.c - request, latency, batch and model-load statistics in Prometheus' text format. */
#include "metrics.h"
#include "spec.h"
#include "text.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    METRICS_MAX_CODES = 16,
    METRICS_MAX_SERIES = 4096, /* (model, version) pairs over the life of the process */
    METRICS_INITIAL_SERIES = 16,
    METRICS_VERSION_MAX = 24, /* bytes of a version label, NUL included */
};

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
    char model[SPEC_MAX_NAME];
    char version[METRICS_VERSION_MAX];
    int codes[METRICS_MAX_CODES];
    uint64_t code_counts[METRICS_MAX_CODES];
    int ncodes;
    histogram request, queue, batch, run;
    uint64_t inferences;
    uint64_t loads_ok, loads_failed;
    double last_load_s;
} series_stats;

struct metrics {
    pthread_mutex_t mu;
    series_stats none; /* requests that reached no model */
    series_stats *series;
    int nseries, cap;
    int64_t inflight;
};

metrics *metrics_create(void)
{
    metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->series = calloc(METRICS_INITIAL_SERIES, sizeof *m->series);
    if (!m->series) {
        free(m);
        return NULL;
    }
    m->cap = METRICS_INITIAL_SERIES;
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void metrics_destroy(metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m->series);
    free(m);
}

int metrics_series(metrics *m, const char *model, const char *version)
{
    int found = -1;
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->nseries && found < 0; i++)
        if (!strcmp(m->series[i].model, model) && !strcmp(m->series[i].version, version))
            found = i;
    if (found < 0 && m->nseries < METRICS_MAX_SERIES) {
        if (m->nseries == m->cap) {
            int cap = m->cap * 2;
            series_stats *ns = realloc(m->series, (size_t)cap * sizeof *ns);
            if (ns) {
                m->series = ns;
                m->cap = cap;
            }
        }
        if (m->nseries < m->cap) {
            series_stats *s = &m->series[m->nseries];
            memset(s, 0, sizeof *s);
            snprintf(s->model, sizeof s->model, "%s", model);
            snprintf(s->version, sizeof s->version, "%s", version);
            found = m->nseries++;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return found;
}

static series_stats *stats_of(metrics *m, int series)
{
    return series >= 0 && series < m->nseries ? &m->series[series] : &m->none;
}

static void observe(histogram *h, const double *bounds, size_t nb, double v)
{
    for (size_t i = 0; i < nb; i++)
        if (v <= bounds[i])
            h->counts[i]++;
    h->n++;
    h->sum += v;
}

void metrics_request(metrics *m, int series, int http_code, int64_t duration_ns)
{
    pthread_mutex_lock(&m->mu);
    series_stats *s = stats_of(m, series);
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

void metrics_batch(metrics *m, int series, int samples, int64_t run_ns)
{
    pthread_mutex_lock(&m->mu);
    series_stats *s = stats_of(m, series);
    observe(&s->batch, batch_buckets, BATCH_BUCKETS, samples);
    observe(&s->run, latency_buckets, LATENCY_BUCKETS, (double)run_ns * 1e-9);
    s->inferences += (uint64_t)samples;
    pthread_mutex_unlock(&m->mu);
}

void metrics_queue_wait(metrics *m, int series, int64_t wait_ns)
{
    pthread_mutex_lock(&m->mu);
    observe(&stats_of(m, series)->queue, latency_buckets, LATENCY_BUCKETS, (double)wait_ns * 1e-9);
    pthread_mutex_unlock(&m->mu);
}

void metrics_inflight(metrics *m, int delta)
{
    pthread_mutex_lock(&m->mu);
    m->inflight += delta;
    pthread_mutex_unlock(&m->mu);
}

void metrics_model_load(metrics *m, int series, bool ok, int64_t duration_ns)
{
    pthread_mutex_lock(&m->mu);
    series_stats *s = stats_of(m, series);
    if (ok)
        s->loads_ok++;
    else
        s->loads_failed++;
    s->last_load_s = (double)duration_ns * 1e-9;
    pthread_mutex_unlock(&m->mu);
}

/* A label value as Prometheus' text format wants it: backslash, quote and newline escaped. */
static void put_label_value(text *t, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '"')
            text_put(t, "\\%c", *p);
        else if (*p == '\n')
            text_put(t, "\\n");
        else
            text_append(t, p, 1);
    }
}

/* name{model="...",version="..."<extra>} */
static void put_series(text *t, const char *name, const series_stats *s, const char *extra)
{
    text_put(t, "%s{model=\"", name);
    put_label_value(t, s->model);
    text_put(t, "\",version=\"");
    put_label_value(t, s->version);
    text_put(t, "\"%s}", extra);
}

static void put_histogram(text *t, const char *name, const series_stats *s, const histogram *h,
                          const double *bounds, size_t nb)
{
    char metric[128], extra[64];
    snprintf(metric, sizeof metric, "%s_bucket", name);
    for (size_t i = 0; i < nb; i++) {
        snprintf(extra, sizeof extra, ",le=\"%g\"", bounds[i]);
        put_series(t, metric, s, extra);
        text_put(t, " %llu\n", (unsigned long long)h->counts[i]);
    }
    put_series(t, metric, s, ",le=\"+Inf\"");
    text_put(t, " %llu\n", (unsigned long long)h->n);
    snprintf(metric, sizeof metric, "%s_sum", name);
    put_series(t, metric, s, "");
    text_put(t, " %.9g\n", h->sum);
    snprintf(metric, sizeof metric, "%s_count", name);
    put_series(t, metric, s, "");
    text_put(t, " %llu\n", (unsigned long long)h->n);
}

/* The live entries of one series: summed queue lengths, and whether any of them serves. */
static void live_of(const metrics_live *live, int nlive, int series, int *queued, bool *ready)
{
    *queued = 0;
    *ready = false;
    for (int i = 0; i < nlive; i++) {
        if (live[i].series == series) {
            *queued += live[i].queued;
            *ready = *ready || live[i].ready;
        }
    }
}

char *metrics_render(metrics *m, const metrics_live *live, int nlive, const metrics_budgets *b,
                     const decode_pool_stats *d, size_t *len)
{
    /* Render from a copy taken under the lock (a few KB, microseconds), not under the lock itself:
     * every request takes it when it starts and ends, and must not wait for a render that its
     * thread was preempted in the middle of. */
    pthread_mutex_lock(&m->mu);
    int n = m->nseries;
    int64_t inflight = m->inflight;
    series_stats none = m->none;
    series_stats *series = malloc(((size_t)n + 1) * sizeof *series); /* + 1: never malloc(0) */
    if (series)
        memcpy(series, m->series, (size_t)n * sizeof *series);
    pthread_mutex_unlock(&m->mu);
    if (!series)
        return NULL;
    text t = {0};
    /* Requests that reached no model come last (i == n), under empty labels. */
    text_put(&t, "# HELP convserve_requests_total HTTP requests answered, by model, version and "
                 "status code.\n"
                 "# TYPE convserve_requests_total counter\n");
    for (int i = 0; i <= n; i++) {
        const series_stats *s = i < n ? &series[i] : &none;
        for (int c = 0; c < s->ncodes; c++) {
            char extra[32];
            snprintf(extra, sizeof extra, ",code=\"%d\"", s->codes[c]);
            put_series(&t, "convserve_requests_total", s, extra);
            text_put(&t, " %llu\n", (unsigned long long)s->code_counts[c]);
        }
    }
    text_put(&t, "# HELP convserve_request_duration_seconds Time from request headers to answer.\n"
                 "# TYPE convserve_request_duration_seconds histogram\n");
    for (int i = 0; i <= n; i++) {
        const series_stats *s = i < n ? &series[i] : &none;
        put_histogram(&t, "convserve_request_duration_seconds", s, &s->request, latency_buckets,
                      LATENCY_BUCKETS);
    }
    text_put(&t, "# HELP convserve_queue_duration_seconds Time a request waited for its batch.\n"
                 "# TYPE convserve_queue_duration_seconds histogram\n");
    for (int i = 0; i < n; i++)
        put_histogram(&t, "convserve_queue_duration_seconds", &series[i], &series[i].queue,
                      latency_buckets, LATENCY_BUCKETS);
    text_put(&t, "# HELP convserve_inference_duration_seconds Time the engine took per batch.\n"
                 "# TYPE convserve_inference_duration_seconds histogram\n");
    for (int i = 0; i < n; i++)
        put_histogram(&t, "convserve_inference_duration_seconds", &series[i], &series[i].run,
                      latency_buckets, LATENCY_BUCKETS);
    text_put(&t, "# HELP convserve_batch_size Samples per executed batch.\n"
                 "# TYPE convserve_batch_size histogram\n");
    for (int i = 0; i < n; i++)
        put_histogram(&t, "convserve_batch_size", &series[i], &series[i].batch, batch_buckets,
                      BATCH_BUCKETS);
    text_put(&t, "# HELP convserve_inferences_total Samples run through each model version.\n"
                 "# TYPE convserve_inferences_total counter\n");
    for (int i = 0; i < n; i++) {
        put_series(&t, "convserve_inferences_total", &series[i], "");
        text_put(&t, " %llu\n", (unsigned long long)series[i].inferences);
    }
    text_put(&t, "# HELP convserve_queue_length Requests waiting in each model version's queue.\n"
                 "# TYPE convserve_queue_length gauge\n");
    for (int i = 0; i < n; i++) {
        int queued;
        bool ready;
        live_of(live, nlive, i, &queued, &ready);
        put_series(&t, "convserve_queue_length", &series[i], "");
        text_put(&t, " %d\n", queued);
    }
    text_put(&t, "# HELP convserve_model_ready 1 while the version serves, 0 once it is unloaded "
                 "or failed to load.\n"
                 "# TYPE convserve_model_ready gauge\n");
    for (int i = 0; i < n; i++) {
        int queued;
        bool ready;
        live_of(live, nlive, i, &queued, &ready);
        put_series(&t, "convserve_model_ready", &series[i], "");
        text_put(&t, " %d\n", ready ? 1 : 0);
    }
    text_put(&t, "# HELP convserve_model_loads_total Attempts to load and warm up a version, by "
                 "result.\n"
                 "# TYPE convserve_model_loads_total counter\n");
    for (int i = 0; i < n; i++) {
        put_series(&t, "convserve_model_loads_total", &series[i], ",result=\"success\"");
        text_put(&t, " %llu\n", (unsigned long long)series[i].loads_ok);
        put_series(&t, "convserve_model_loads_total", &series[i], ",result=\"failure\"");
        text_put(&t, " %llu\n", (unsigned long long)series[i].loads_failed);
    }
    text_put(&t, "# HELP convserve_model_load_seconds How long the last load and warm-up of the "
                 "version took.\n"
                 "# TYPE convserve_model_load_seconds gauge\n");
    for (int i = 0; i < n; i++) {
        put_series(&t, "convserve_model_load_seconds", &series[i], "");
        text_put(&t, " %.6f\n", series[i].last_load_s);
    }
    text_put(&t,
             "# HELP convserve_budget_bytes Memory held against each budget, and its limit.\n"
             "# TYPE convserve_budget_bytes gauge\n"
             "convserve_budget_bytes{budget=\"request\",kind=\"used\"} %lld\n"
             "convserve_budget_bytes{budget=\"request\",kind=\"limit\"} %lld\n"
             "convserve_budget_bytes{budget=\"answer\",kind=\"used\"} %lld\n"
             "convserve_budget_bytes{budget=\"answer\",kind=\"limit\"} %lld\n",
             (long long)b->request_used, (long long)b->request_limit, (long long)b->answer_used,
             (long long)b->answer_limit);
    text_put(&t,
             "# HELP convserve_decode_threads Threads that decode images and large JSON tensors "
             "off the HTTP threads.\n"
             "# TYPE convserve_decode_threads gauge\n"
             "convserve_decode_threads %d\n"
             "# HELP convserve_decode_queue_length Requests waiting for a decode thread.\n"
             "# TYPE convserve_decode_queue_length gauge\n"
             "convserve_decode_queue_length %zu\n"
             "# HELP convserve_decode_running Requests being decoded now.\n"
             "# TYPE convserve_decode_running gauge\n"
             "convserve_decode_running %zu\n"
             "# HELP convserve_decode_completed_total Requests the decode threads have finished "
             "(decoded, or refused as undecodable).\n"
             "# TYPE convserve_decode_completed_total counter\n"
             "convserve_decode_completed_total %llu\n"
             "# HELP convserve_decode_rejected_total Requests refused with 503 because the decode "
             "queue was full or the server was stopping.\n"
             "# TYPE convserve_decode_rejected_total counter\n"
             "convserve_decode_rejected_total %llu\n",
             d->threads, d->queued, d->running, (unsigned long long)d->completed,
             (unsigned long long)d->rejected);
    text_put(&t,
             "# HELP convserve_inflight_requests Requests received and not yet answered.\n"
             "# TYPE convserve_inflight_requests gauge\n"
             "convserve_inflight_requests %lld\n",
             (long long)inflight);
    free(series);
    return text_take(&t, len);
}
