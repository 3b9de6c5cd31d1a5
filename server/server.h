/* server.h - the state of one convserve process: settings, models, metrics, the HTTP daemon. */
#ifndef CONVSERVE_SERVER_H
#define CONVSERVE_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "batcher.h"
#include "budget.h"
#include "config.h"
#include "decode_pool.h"
#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "repository.h"

#define CONVSERVE_VERSION "0.1.0"

struct server;

/* One version of a model as requests see it: its engine model and batcher, for as long as the
 * request holds its reference (repository.h). Read-only once published. */
typedef struct model_entry {
    struct server *srv;
    const char *name; /* = spec name = folder name */
    int64_t version;
    char version_str[REPO_VERSION_STR]; /* "2" */
    engine_model *model;
    batcher *batcher;
    int index;     /* its metrics series (model and version) */
    int max_batch; /* after the --max-batch-size override */
} model_entry;

typedef struct server {
    config cfg;
    log_level level;
    repo_control control;
    repository *repo;
    metrics *metrics;
    struct MHD_Daemon *daemon;
    struct guard *guard; /* closes connections that take too long to send a request */
    decode_pool *decode; /* decodes images and large tensors off the HTTP threads */
    uint16_t port;
    atomic_bool ready;
    atomic_int inflight;
    budget request_budget; /* bodies being received or held, and the tensors made from them */
    budget answer_budget;  /* outputs being computed and answers being sent */
} server;

/* One line to stderr with a UTC timestamp, if `level` is enabled for the server (log.h). */
#define server_log(s, lvl, ...) log_write((s)->level, (lvl), __VA_ARGS__)

/* Starts the HTTP daemon on cfg.host:cfg.port and records the bound port in s->port. */
bool http_start(server *s, char *err, size_t errlen);
/* Stops accepting connections, lets in-flight requests finish (up to the shutdown timeout),
 * drains the decode pool, then the model queues, and stops the daemon. The pool is stopped, not
 * freed: main frees it after this. */
void http_shutdown(server *s);

#endif
