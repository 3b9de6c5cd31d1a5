/* main.c - convserve: load the model repository, warm it up, serve HTTP until SIGTERM or SIGINT. */
#include "server.h"

#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum {
    MAIN_ERR = 2048,
    MAIN_MAX_MODELS = 256,
    MAIN_BUDGET_SHARE = 8,            /* each budget defaults to 1/8 of the memory */
    MAIN_MMAP_THRESHOLD = 256 * 1024, /* bytes from which malloc maps blocks of their own */
};

static void engine_warning(void *ctx, const char *message)
{
    const server *s = ctx;
    server_log(s, LOG_WARN, "%s", message);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void on_batch(void *ctx, int samples, int jobs, int64_t run_ns)
{
    model_entry *me = ctx;
    (void)jobs;
    metrics_batch(me->srv->metrics, me->index, samples, run_ns);
}

bool server_load_models(server *s, char *err, size_t errlen)
{
    char *names[MAIN_MAX_MODELS];
    int n = 0;
    DIR *d = opendir(s->cfg.models);
    if (!d) {
        snprintf(err, errlen, "cannot open the model repository '%s': %s", s->cfg.models,
                 strerror(errno));
        return false;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s/model.json", s->cfg.models, e->d_name);
        if (stat(path, &sb) != 0)
            continue; /* not a model folder */
        if (n == MAIN_MAX_MODELS) {
            closedir(d);
            snprintf(err, errlen, "more than %d models in '%s'", MAIN_MAX_MODELS, s->cfg.models);
            goto fail_names;
        }
        names[n] = strdup(e->d_name);
        if (!names[n]) {
            closedir(d);
            snprintf(err, errlen, "out of memory listing the model repository '%s'", s->cfg.models);
            goto fail_names;
        }
        n++;
    }
    closedir(d);
    if (n == 0) {
        snprintf(err, errlen, "no model folders (with a model.json) in '%s'", s->cfg.models);
        return false;
    }
    qsort(names, (size_t)n, sizeof *names, compare_names);

    /* Entries never move once allocated: each batcher keeps a pointer to its own. */
    s->model_names = calloc((size_t)n, sizeof *s->model_names);
    s->models = calloc((size_t)n, sizeof *s->models);
    if (!s->models || !s->model_names) {
        snprintf(err, errlen, "out of memory");
        goto fail_models;
    }
    for (int i = 0; i < n; i++) {
        char dir[4096], msg[MAIN_ERR];
        snprintf(dir, sizeof dir, "%s/%s", s->cfg.models, names[i]);
        engine_load_options opts = {.warn = engine_warning, .warn_ctx = s};
        model_entry *me = &s->models[i];
        me->srv = s;
        me->index = i;
        int64_t t0 = monotonic_ns();
        if (engine_model_load(dir, &opts, &me->model, msg, sizeof msg) != ENGINE_OK) {
            snprintf(err, errlen, "%s", msg);
            s->nmodels = i;
            goto fail_models;
        }
        const spec_model *sp = engine_model_spec(me->model);
        if (strcmp(sp->name, names[i])) {
            snprintf(err, errlen, "model folder '%s' holds model.json named '%s'; they must match",
                     dir, sp->name);
            engine_model_destroy(me->model);
            s->nmodels = i;
            goto fail_models;
        }
        me->name = sp->name;
        me->max_batch = s->cfg.max_batch_size > 0 ? (int)s->cfg.max_batch_size : sp->max_batch_size;
        batcher_options bo = {
            .max_batch = me->max_batch,
            .max_delay_us =
                s->cfg.max_queue_delay_us >= 0 ? s->cfg.max_queue_delay_us : sp->max_queue_delay_us,
            .max_queue = (int)s->cfg.max_queue,
            .queue_timeout_ms = s->cfg.queue_timeout_ms,
            .threads = (int)s->cfg.infer_threads,
            .on_batch = on_batch,
            .on_batch_ctx = me,
        };
        if (bo.queue_timeout_ms * 1000 <= bo.max_delay_us) {
            snprintf(
                err, errlen,
                "model '%s': --queue-timeout-ms %lld must exceed its batching delay of %lld us, "
                "or every request would time out while it waits for its batch",
                sp->name, (long long)bo.queue_timeout_ms, (long long)bo.max_delay_us);
            engine_model_destroy(me->model);
            s->nmodels = i;
            goto fail_models;
        }
        if (batcher_create(me->model, &bo, &me->batcher, msg, sizeof msg) != SRV_OK) {
            snprintf(err, errlen, "model '%s': warm-up failed: %s", sp->name, msg);
            engine_model_destroy(me->model);
            s->nmodels = i;
            goto fail_models;
        }
        char desc[1024];
        server_log(s, LOG_INFO, "model %s loaded and warmed up in %.0f ms: %lld parameters%s, %s",
                   sp->name, (double)(monotonic_ns() - t0) / 1e6,
                   (long long)engine_model_params(me->model),
                   engine_model_random_weights(me->model) ? " (random weights)" : "",
                   batcher_describe(me->batcher, desc, sizeof desc));
        if (sp->precision == SPEC_BF16 && strstr(desc, "precision f32"))
            server_log(s, LOG_WARN, "model %s asks for bf16, which this CPU cannot run; using f32",
                       sp->name);
        if (strstr(desc, "ref:"))
            server_log(s, LOG_WARN, "model %s uses a reference (slow) oneDNN kernel", sp->name);
        s->nmodels = i + 1;
    }
    for (int i = 0; i < n; i++) {
        s->model_names[i] = s->models[i].name;
        free(names[i]);
    }
    return true;

fail_models:
    for (int i = 0; i < s->nmodels; i++) {
        batcher_destroy(s->models[i].batcher);
        engine_model_destroy(s->models[i].model);
    }
    s->nmodels = 0;
    free(s->models);
    s->models = NULL;
fail_names:
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(s->model_names);
    s->model_names = NULL;
    return false;
}

void server_unload_models(server *s)
{
    for (int i = 0; i < s->nmodels; i++) {
        batcher_destroy(s->models[i].batcher);
        engine_model_destroy(s->models[i].model);
    }
    free(s->models);
    free(s->model_names);
    s->models = NULL;
    s->nmodels = 0;
}

/* The two memory budgets: as set, or an eighth each of the memory the process may use (but never
 * less than one largest body, or no request could arrive). */
static bool set_budgets(server *s, char *err, size_t errlen)
{
    const char *source;
    int64_t mem = budget_memory(&source);
    int64_t share = mem / MAIN_BUDGET_SHARE;
    int64_t req = s->cfg.request_budget_bytes, ans = s->cfg.answer_budget_bytes;
    if (req == 0)
        req = share > s->cfg.max_body_bytes ? share : s->cfg.max_body_bytes;
    if (ans == 0)
        ans = share > s->cfg.max_output_bytes ? share : s->cfg.max_output_bytes;
    if (req < s->cfg.max_body_bytes) {
        snprintf(err, errlen,
                 "--request-budget-bytes %lld is below --max-body-bytes %lld: a largest body "
                 "could never be received",
                 (long long)req, (long long)s->cfg.max_body_bytes);
        return false;
    }
    if (ans < s->cfg.max_output_bytes) {
        snprintf(err, errlen,
                 "--answer-budget-bytes %lld is below --max-output-bytes %lld: a largest answer "
                 "could never be sent",
                 (long long)ans, (long long)s->cfg.max_output_bytes);
        return false;
    }
    budget_init(&s->request_budget, req);
    budget_init(&s->answer_budget, ans);
    server_log(s, LOG_INFO,
               "memory budgets: %lld bytes of requests, %lld bytes of answers (the %s is %lld "
               "bytes)",
               (long long)req, (long long)ans, source, (long long)mem);
    return true;
}

int main(int argc, char **argv)
{
    server s = {0};
    char err[MAIN_ERR];
    switch (config_parse(&s.cfg, argc, argv, err, sizeof err)) {
    case CONFIG_HELP:
        config_print_help(argv[0]);
        return 0;
    case CONFIG_VERSION:
        printf("convserve %s\n", CONVSERVE_VERSION);
        return 0;
    case CONFIG_ERROR:
        fprintf(stderr, "convserve: %s\n", err);
        return 2;
    case CONFIG_RUN:
        break;
    }
    log_level_parse(s.cfg.log_level, &s.level); /* checked by config_parse */
#ifdef M_MMAP_THRESHOLD
    /* Bodies, tensors and outputs come and go with requests. glibc serves large blocks with mmap
     * (returned to the system on free) only below a threshold it raises after each such free, up
     * to 32 MB; blocks under it come from the heap and stay there after a burst. A fixed
     * threshold keeps every large buffer mapped, so that RSS comes back once requests end. */
    mallopt(M_MMAP_THRESHOLD, MAIN_MMAP_THRESHOLD);
#endif
    if (!set_budgets(&s, err, sizeof err)) {
        fprintf(stderr, "convserve: %s\n", err);
        return 2;
    }

    /* Block the shutdown signals in every thread (threads inherit the mask) and take them with
     * sigwait in main: no async-signal-safety puzzles, and no global flag. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int64_t t0 = monotonic_ns();
    if (!server_load_models(&s, err, sizeof err)) {
        server_log(&s, LOG_ERROR, "%s", err);
        return 1;
    }
    s.metrics = metrics_create(s.model_names, s.nmodels);
    if (!s.metrics || !http_start(&s, err, sizeof err)) {
        server_log(&s, LOG_ERROR, "%s", s.metrics ? err : "out of memory");
        server_unload_models(&s);
        metrics_destroy(s.metrics);
        return 1;
    }
    atomic_store(&s.ready, true);
    server_log(&s, LOG_INFO, "convserve %s ready in %.0f ms: %d models, listening on http://%s:%u",
               CONVSERVE_VERSION, (double)(monotonic_ns() - t0) / 1e6, s.nmodels, s.cfg.host,
               (unsigned)s.port);

    int sig = 0;
    sigwait(&sigs, &sig);
    server_log(&s, LOG_INFO, "%s received: finishing in-flight requests, then exiting",
               sig == SIGTERM ? "SIGTERM" : "SIGINT");
    http_shutdown(&s);
    server_unload_models(&s);
    metrics_destroy(s.metrics);
    server_log(&s, LOG_INFO, "stopped");
    return 0;
}
