/* main.c - convserve: load the model repository, warm it up, serve HTTP until SIGTERM or SIGINT
 * (SIGHUP rescans the repository). */
#include "server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    MAIN_ERR = 2048,
};

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
    if (repository_start(s.repo, err, sizeof err) != SRV_OK || !http_start(&s, err, sizeof err)) {
        server_log(&s, LOG_ERROR, "%s", err);
        repository_destroy(s.repo);
        metrics_destroy(s.metrics);
        return 1;
    }
    atomic_store(&s.ready, true);
    char names[1024];
    repository_loaded_names(s.repo, names, sizeof names);
    server_log(&s, LOG_INFO,
               "convserve %s ready in %.0f ms: models %s, --model-control %s, listening on "
               "http://%s:%u",
               CONVSERVE_VERSION, (double)(monotonic_ns() - t0) / 1e6, names[0] ? names : "(none)",
               s.cfg.model_control, s.cfg.host, (unsigned)s.port);

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
    repository_destroy(s.repo);
    metrics_destroy(s.metrics);
    server_log(&s, LOG_INFO, "stopped");
    return 0;
}
