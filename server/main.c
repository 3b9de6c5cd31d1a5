/* main.c - convserve: load the model repository, warm it up, serve HTTP until SIGTERM or SIGINT
 * (SIGHUP rescans the repository). */
#include "server.h"

#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    MAIN_ERR = 2048,
    MAIN_BUDGET_SHARE = 8,            /* each budget defaults to 1/8 of the memory */
    MAIN_MMAP_THRESHOLD = 256 * 1024, /* bytes from which malloc maps blocks of their own */
};

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
    log_level_parse(s.cfg.log_level, &s.level);          /* checked by config_parse */
    repo_control_parse(s.cfg.model_control, &s.control); /* likewise */
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

    /* Block the signals in every thread (threads inherit the mask) and take them with sigwait in
     * main: no async-signal-safety puzzles, and no global flag. SIGHUP asks for a rescan. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int64_t t0 = monotonic_ns();
    s.metrics = metrics_create();
    if (!s.metrics || repository_create(&s, &s.repo, err, sizeof err) != SRV_OK) {
        server_log(&s, LOG_ERROR, "%s", s.metrics ? err : "out of memory");
        metrics_destroy(s.metrics);
        return 1;
    }
    /* The decode pool exists before the daemon starts and outlives it (http_shutdown stops it
     * before the batchers, so that every decode it has accepted reaches its batch). */
    decode_pool_config dc = {.threads = s.cfg.decode_threads ? (int)s.cfg.decode_threads
                                                             : repository_cpus(s.repo),
                             .queue_size = (int)s.cfg.decode_queue};
    if (decode_pool_create(&dc, &s.decode, err, sizeof err) != SRV_OK ||
        repository_start(s.repo, err, sizeof err) != SRV_OK || !http_start(&s, err, sizeof err)) {
        server_log(&s, LOG_ERROR, "%s", err);
        decode_pool_destroy(s.decode);
        repository_destroy(s.repo);
        metrics_destroy(s.metrics);
        return 1;
    }
    atomic_store(&s.ready, true);
    char names[1024];
    repository_loaded_names(s.repo, names, sizeof names);
    server_log(&s, LOG_INFO,
               "convserve %s ready in %.0f ms: models %s, --model-control %s, %d decode threads, "
               "listening on http://%s:%u",
               CONVSERVE_VERSION, (double)(monotonic_ns() - t0) / 1e6, names[0] ? names : "(none)",
               s.cfg.model_control, dc.threads, s.cfg.host, (unsigned)s.port);

    int sig = 0;
    for (;;) {
        sigwait(&sigs, &sig);
        if (sig != SIGHUP)
            break;
        if (s.control == REPO_CONTROL_NONE)
            server_log(&s, LOG_INFO,
                       "SIGHUP received: ignored, the models are fixed (--model-control none)");
        else
            repository_rescan(s.repo);
    }
    server_log(&s, LOG_INFO, "%s received: finishing in-flight requests, then exiting",
               sig == SIGTERM ? "SIGTERM" : "SIGINT");
    http_shutdown(&s);
    decode_pool_destroy(s.decode);
    repository_destroy(s.repo);
    metrics_destroy(s.metrics);
    server_log(&s, LOG_INFO, "stopped");
    return 0;
}
