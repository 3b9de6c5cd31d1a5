/* repository.h - the model repository while serving: model folders and their numbered versions,
 * each model's version policy, loading and unloading without downtime, and counted references.
 *
 * Layout (the flat folder of earlier releases is version 1 of its model):
 *
 *     models/digits/model.json, model.safetensors          version 1
 *     models/digits/2/model.json, 2/model.safetensors      version 2
 *     models/digits/config.json                            optional: {"version_policy": ...}
 *
 * A version folder is named by a positive decimal number without leading zeros (as Triton's) and
 * holds a model.json; other folders are ignored. config.json holds the version policy in Triton's
 * and OpenVINO Model Server's spelling: {"latest": {"num_versions": N}} (the default, N = 1),
 * {"all": {}} or {"specific": {"versions": [1, 3]}}.
 *
 * Every version is served by an instance: the engine model and its batcher (queue and warmed-up
 * workers). Only the manager thread (or main() before the daemon starts) loads and retires
 * instances; HTTP threads look them up. A request takes a reference on the instance it runs on
 * (repository_acquire) and gives it back when it is freed (repository_release). Replacing a version
 * loads and warms up the new instance first, then swaps it in under the lock: requests that hold
 * the old one finish on it, and the old one is freed, on the manager thread, when its last
 * reference goes. A load that fails leaves whatever was serving in place.
 *
 *     repository *r;
 *     repository_create(s, &r, err, sizeof err);
 *     repository_start(r, err, sizeof err);        // loads everything; poll / explicit: a thread
 *     model_entry *me;
 *     repository_acquire(r, "digits", 6, 0, &me, err, sizeof err);   // 0 = newest ready version
 *     ... batcher_submit(me->batcher, ...) ...
 *     repository_release(me);
 *     repository_stop(r);                          // shutdown: stops the thread, drains batchers
 *     repository_destroy(r);
 */
#ifndef CONVSERVE_REPOSITORY_H
#define CONVSERVE_REPOSITORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "status.h"
#include "text.h"

struct server;
struct model_entry;
typedef struct repository repository;

/* --model-control: none (the models found at startup, fixed; any failure stops the server),
 * poll (the repository is rescanned every --poll-seconds and on SIGHUP) or explicit (the
 * repository API loads and unloads; SIGHUP rescans). */
#define REPO_CONTROL_MAP(XX)                                                                       \
    XX(REPO_CONTROL_NONE, "none")                                                                  \
    XX(REPO_CONTROL_POLL, "poll")                                                                  \
    XX(REPO_CONTROL_EXPLICIT, "explicit")

typedef enum {
#define REPO_CONTROL_ENUM(e, name) e,
    REPO_CONTROL_MAP(REPO_CONTROL_ENUM)
#undef REPO_CONTROL_ENUM
} repo_control;

/* "poll" -> REPO_CONTROL_POLL; false for a name not in the table. */
bool repo_control_parse(const char *name, repo_control *out);

enum {
    REPO_MAX_VERSION_DIGITS = 18, /* versions are 1 .. 10^18 - 1: they fit an int64 */
    REPO_VERSION_STR = REPO_MAX_VERSION_DIGITS + 1,
};

/* A version number from a URL or a folder name: decimal digits without a leading zero, at most
 * REPO_MAX_VERSION_DIGITS. False for anything else. */
bool repo_version_parse(const char *s, size_t len, int64_t *out);

srv_status repository_create(struct server *s, repository **out, char *err, size_t errlen);
/* Scans the repository and loads every model its policy asks for. With --model-control none any
 * failure is returned (the server must not start); otherwise failures are logged and shown in the
 * index, and the manager thread starts. */
srv_status repository_start(repository *r, char *err, size_t errlen);
/* Stops the manager thread (answering commands still queued with 503), then stops the batchers
 * of every instance, so that what is queued runs and nothing stays suspended. */
void repository_stop(repository *r);
/* Frees everything; every reference must have been released. Safe on NULL. */
void repository_destroy(repository *r);

/* A counted reference to model name[0..len) at `version` (0: its newest ready version). 404 when
 * the model or version is not loaded, 503 while it is still loading, with err saying which. */
srv_status repository_acquire(repository *r, const char *name, size_t len, int64_t version,
                              struct model_entry **out, char *err, size_t errlen);
/* Gives back a reference from repository_acquire. Safe on NULL; never blocks on a load. */
void repository_release(struct model_entry *me);

typedef enum { REPO_LOAD, REPO_UNLOAD } repo_command;
/* Called once when a command has finished, on the manager thread: status and a message for an
 * error answer. */
typedef void (*repo_done_fn)(void *ctx, srv_status status, const char *msg);
/* Queues a load (rescan the model's folder, load what is new or changed) or an unload (retire
 * every version, then wait until their last requests are done, at most --queue-timeout-ms). The
 * name must be a model folder of the repository: 404 otherwise, 400 for a name that is not a
 * folder name. Returns an error without calling done when the command cannot be queued. */
srv_status repository_command(repository *r, repo_command kind, const char *name, size_t len,
                              repo_done_fn done, void *ctx, char *err, size_t errlen);
/* Asks the manager for a rescan of the whole repository (SIGHUP); returns at once. */
void repository_rescan(repository *r);

/* Triton's repository index: [{"name", "version", "state", "reason"}, ...], every model folder
 * found (ready_only: only READY versions); `only` (len > 0) limits it to one model. */
void repository_index(repository *r, bool ready_only, const char *only, size_t len, text *t);
/* The model's ready versions as a JSON array of strings, newest first: ["2","1"]. */
void repository_ready_versions(repository *r, const struct model_entry *me, text *t);
/* The CPUs this process may use (its affinity, capped by a container's CPU quota): what the
 * default worker and thread counts are made from, and the default decode pool size. */
int repository_cpus(const repository *r);
/* "a, b, c": the models with a ready version, for messages. */
void repository_loaded_names(repository *r, char *buf, size_t len);
/* What /metrics shows of the live instances: queue lengths and readiness by series. Returns how
 * many entries were written (at most max). */
int repository_live(repository *r, metrics_live *out, int max);

#endif
