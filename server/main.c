/* main.c - convserve: load the model repository, warm it up, serve HTTP until SIGTERM or SIGINT. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "server.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum {
    MAIN_ERR = 2048,
    MAIN_MAX_MODELS = 256,
    DEFAULT_CPUS_PER_INSTANCE = 2, /* measured: see README, "Instances and threads" */
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

/* CPUs this process may really use: the ones it may run on, and no more than a container's CPU
 * quota (cgroup v2 cpu.max, or v1 cfs quota/period), which limits time, not CPUs, so that a
 * 2-CPU container on a 64-core node does not start 64 threads and get throttled. */
static int usable_cpus(void)
{
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    double quota = 0, period = 0;
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (f) {
        char q[32] = "";
        if (fscanf(f, "%31s %lf", q, &period) != 2 || strcmp(q, "max") == 0)
            period = 0;
        else
            quota = strtod(q, NULL);
        fclose(f);
    } else if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "r"))) {
        if (fscanf(f, "%lf", &quota) != 1)
            quota = 0;
        fclose(f);
        if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "r"))) {
            if (fscanf(f, "%lf", &period) != 1)
                period = 0;
            fclose(f);
        }
    }
    if (quota > 0 && period > 0) {
        int limit = (int)ceil(quota / period);
        if (limit >= 1 && limit < n)
            n = limit;
    }
    return n > 0 ? n : 1;
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
        /* Workers and threads: model.json, else the settings, else from the CPUs. */
        int cpus = usable_cpus();
        int instances = sp->instances ? sp->instances
                        : s->cfg.instances
                            ? (int)s->cfg.instances
                            : (cpus + DEFAULT_CPUS_PER_INSTANCE - 1) / DEFAULT_CPUS_PER_INSTANCE;
        int threads = sp->threads            ? sp->threads
                      : s->cfg.infer_threads ? (int)s->cfg.infer_threads
                                             : (cpus / instances > 0 ? cpus / instances : 1);
        batcher_options bo = {
            .max_batch = me->max_batch,
            .max_delay_us =
                s->cfg.max_queue_delay_us >= 0 ? s->cfg.max_queue_delay_us : sp->max_queue_delay_us,
            .max_queue = (int)s->cfg.max_queue,
            .queue_timeout_ms = s->cfg.queue_timeout_ms,
            .instances = instances,
            .threads = threads,
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
        batcher_info info;
        batcher_get_info(me->batcher, &info);
        server_log(s, LOG_INFO,
                   "model %s loaded and warmed up in %.0f ms: %lld parameters%s, %d instance%s of "
                   "%d thread%s, precision %s, kernels %s",
                   sp->name, (double)(monotonic_ns() - t0) / 1e6,
                   (long long)engine_model_params(me->model),
                   engine_model_random_weights(me->model) ? " (random weights)" : "", instances,
                   instances == 1 ? "" : "s", threads, threads == 1 ? "" : "s",
                   info.precision == SPEC_BF16 ? "bf16" : "f32", info.kernels);
        if (sp->precision == SPEC_BF16 && info.precision != SPEC_BF16)
            server_log(s, LOG_WARN, "model %s asks for bf16, which this CPU cannot run; using f32",
                       sp->name);
        if (info.reference)
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
