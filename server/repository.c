/* repository.c - scans the model repository, applies version policies, loads, swaps and retires
 * versions while serving, and counts the references that requests hold. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "repository.h"
#include "server.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum {
    REPO_MAX_MODELS = 256,         /* model folders in one repository */
    REPO_MAX_VERSIONS = 256,       /* version folders of one model */
    REPO_MAX_COMMANDS = 64,        /* load and unload requests waiting for the manager */
    REPO_PATH_MAX = 4096,          /* bytes of a file path */
    REPO_ERR_MAX = 2048,           /* bytes of a load error */
    REPO_REASON_MAX = 768,         /* bytes of a reason in the index */
    REPO_CONFIG_MAX = 64 * 1024,   /* bytes of a model's config.json */
    REPO_LOAD_ATTEMPTS = 3,        /* loads of one version whose files changed while it loaded */
    REPO_UNLOAD_MARGIN_MS = 1000,  /* an unload waits the queue timeout and this for the drain */
    DEFAULT_CPUS_PER_INSTANCE = 2, /* measured: see README, "Instances, threads and batching" */
};

#define REPO_NS_PER_MS INT64_C(1000000)
#define REPO_NS_PER_S  INT64_C(1000000000)
#define FNV_OFFSET     UINT64_C(14695981039346656037)
#define FNV_PRIME      UINT64_C(1099511628211)

static const char *const control_names[] = {
#define REPO_CONTROL_NAME(e, name) name,
    REPO_CONTROL_MAP(REPO_CONTROL_NAME)
#undef REPO_CONTROL_NAME
};
enum { REPO_CONTROLS = sizeof control_names / sizeof control_names[0] };

/* The files a version was read from: model.json and its .safetensors files, by name, device,
 * inode, size and times. A rename over a file, an edit in place, and the symlink swap of a
 * Kubernetes ConfigMap volume all change it. */
typedef struct {
    uint64_t hash;
    int files;
} file_sig;

/* One loaded version: the part requests see first, so that a model_entry * is an instance *. */
typedef struct instance {
    model_entry e;
    atomic_int refs; /* requests holding it, plus one while it serves */
    file_sig sig;    /* the files it was loaded from */
    struct instance *next;
} instance;

typedef struct {
    int64_t number;
    bool on_disk; /* found by the last scan */
    bool flat;    /* the model folder's own model.json (version 1) */
    file_sig sig; /* its files at the last scan */
    instance *serving;
    bool loading;
    bool shown; /* listed in the index: a load was tried */
    bool failed;
    file_sig failed_sig; /* the files the last failed load read; not tried again unchanged */
    char reason[REPO_REASON_MAX];
} repo_version;

typedef enum { POLICY_LATEST, POLICY_ALL, POLICY_SPECIFIC } policy_kind;

typedef struct {
    policy_kind kind;
    int64_t latest;
    int64_t specific[REPO_MAX_VERSIONS];
    int nspecific;
} version_policy;

typedef struct {
    char name[SPEC_MAX_NAME];
    bool wanted; /* explicit mode: false once unloaded through the API */
    repo_version *versions;
    int nversions, cap;
    char problem[REPO_REASON_MAX]; /* why the folder as a whole cannot be used */
} repo_model;

typedef struct command {
    repo_command kind;
    char name[SPEC_MAX_NAME];
    repo_done_fn done;
    void *ctx;
    int64_t deadline_ns; /* an unload waiting for its versions' last requests */
    struct command *next;
} command;

struct repository {
    server *srv;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* commands, a rescan, a freed instance, or stop */
    repo_model *models[REPO_MAX_MODELS];
    int nmodels;
    instance *draining; /* retired, still held by requests */
    instance *released; /* retired, no longer held: the manager frees them */
    command *head, *tail, *waiting;
    int ncommands;
    bool rescan, stopping;
    pthread_t thread;
    bool thread_started;
    int cpus;
};

/* What one scan of a model folder found. */
typedef struct {
    bool is_model;   /* a folder with a model.json, a version folder or a config.json */
    bool unreadable; /* a folder that could not be listed (problem says why) */
    int64_t numbers[REPO_MAX_VERSIONS];
    file_sig sigs[REPO_MAX_VERSIONS];
    bool flat[REPO_MAX_VERSIONS];
    int n;
    version_policy policy;
    char problem[REPO_REASON_MAX];
} model_scan;

/* ---- names, numbers, small helpers ------------------------------------------------------- */

bool repo_control_parse(const char *name, repo_control *out)
{
    for (int i = 0; i < REPO_CONTROLS; i++) {
        if (!strcmp(name, control_names[i])) {
            *out = (repo_control)i;
            return true;
        }
    }
    return false;
}

bool repo_version_parse(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > REPO_MAX_VERSION_DIGITS || s[0] == '0')
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0'); /* at most 18 digits: no overflow */
    }
    *out = v;
    return true;
}

/* A name that may be joined to the repository path: one path component, not hidden. */
static bool folder_name_ok(const char *name, size_t len)
{
    if (len == 0 || len >= SPEC_MAX_NAME || name[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++)
        if (name[i] == '/' || name[i] == 0)
            return false;
    return true;
}

static int64_t now_ns(void)
{
    return monotonic_ns();
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

static bool is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * FNV_PRIME;
    return h;
}

/* The signature of a version folder's model.json and .safetensors files (symlinks followed). */
static file_sig version_sig(const char *dir)
{
    file_sig sig = {0};
    DIR *d = opendir(dir);
    if (!d)
        return sig;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' ||
            (strcmp(e->d_name, "model.json") && !ends_with(e->d_name, ".safetensors")))
            continue;
        char path[REPO_PATH_MAX];
        struct stat sb;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path ||
            stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        uint64_t h = fnv(FNV_OFFSET, e->d_name, strlen(e->d_name));
        int64_t fields[] = {(int64_t)sb.st_dev,          (int64_t)sb.st_ino,
                            (int64_t)sb.st_size,         (int64_t)sb.st_mtim.tv_sec,
                            (int64_t)sb.st_mtim.tv_nsec, (int64_t)sb.st_ctim.tv_sec,
                            (int64_t)sb.st_ctim.tv_nsec};
        h = fnv(h, fields, sizeof fields);
        sig.hash += h; /* a sum: the order readdir gives does not matter */
        sig.files++;
    }
    closedir(d);
    return sig;
}

/* prefix + text into dst, cut to its size: messages nest other messages, and a reason in the
 * index need not hold all of a long one. */
static void join_text(char *dst, size_t len, const char *prefix, const char *tail)
{
    size_t a = strlen(prefix), b = strlen(tail);
    a = a < len ? a : len - 1;
    b = b < len - a ? b : len - a - 1;
    memcpy(dst, prefix, a);
    memcpy(dst + a, tail, b);
    dst[a + b] = 0;
}

static bool sig_equal(file_sig a, file_sig b)
{
    return a.hash == b.hash && a.files == b.files;
}

/* ---- config.json: the version policy ------------------------------------------------------ */

static bool json_positive_int(const json_t *v, int64_t max, int64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max)
        return false;
    *out = json_integer_value(v);
    return true;
}

/* Reads {"version_policy": {"latest": {"num_versions": N}} | {"all": {}} |
 * {"specific": {"versions": [...]}}}. False with a reason in problem. */
static bool parse_policy(const char *bytes, size_t len, version_policy *p, char *problem,
                         size_t plen)
{
    static const int64_t max_version = INT64_C(999999999999999999);
    json_error_t jerr;
    json_t *root = json_loadb(bytes, len, JSON_REJECT_DUPLICATES, &jerr);
    bool ok = false;
    const char *key;
    json_t *v;
    if (!root) {
        snprintf(problem, plen, "config.json: invalid JSON at line %d, column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        return false;
    }
    if (!json_is_object(root)) {
        snprintf(problem, plen, "config.json must hold a JSON object");
        goto done;
    }
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "version_policy")) {
            snprintf(problem, plen,
                     "config.json: unknown key '%.64s'; it holds only "
                     "\"version_policy\"",
                     key);
            goto done;
        }
    }
    json_t *vp = json_object_get(root, "version_policy");
    if (!vp) {
        ok = true; /* the default: the latest version */
        goto done;
    }
    if (!json_is_object(vp) || json_object_size(vp) != 1) {
        snprintf(problem, plen,
                 "config.json: version_policy must be one of {\"latest\": {\"num_versions\": N}}, "
                 "{\"all\": {}} or {\"specific\": {\"versions\": [...]}}");
        goto done;
    }
    json_t *latest = json_object_get(vp, "latest"), *all = json_object_get(vp, "all");
    json_t *specific = json_object_get(vp, "specific");
    if (latest) {
        json_t *n = json_is_object(latest) && json_object_size(latest) == 1
                        ? json_object_get(latest, "num_versions")
                        : NULL;
        if (!n || !json_positive_int(n, REPO_MAX_VERSIONS, &p->latest)) {
            snprintf(problem, plen,
                     "config.json: version_policy.latest must be {\"num_versions\": N} with N "
                     "from 1 to %d",
                     REPO_MAX_VERSIONS);
            goto done;
        }
        p->kind = POLICY_LATEST;
    } else if (all) {
        if (!json_is_object(all) || json_object_size(all) != 0) {
            snprintf(problem, plen, "config.json: version_policy.all must be {}");
            goto done;
        }
        p->kind = POLICY_ALL;
    } else if (specific) {
        json_t *list = json_is_object(specific) && json_object_size(specific) == 1
                           ? json_object_get(specific, "versions")
                           : NULL;
        size_t n = json_is_array(list) ? json_array_size(list) : 0;
        if (n == 0 || n > REPO_MAX_VERSIONS) {
            snprintf(problem, plen,
                     "config.json: version_policy.specific must be {\"versions\": [...]} with 1 "
                     "to %d version numbers",
                     REPO_MAX_VERSIONS);
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            if (!json_positive_int(json_array_get(list, i), max_version, &p->specific[i])) {
                snprintf(problem, plen,
                         "config.json: version_policy.specific.versions[%zu] is not a version "
                         "number (1 to %lld)",
                         i, (long long)max_version);
                goto done;
            }
        }
        p->nspecific = (int)n;
        p->kind = POLICY_SPECIFIC;
    } else {
        snprintf(problem, plen,
                 "config.json: version_policy must be one of {\"latest\": {\"num_versions\": N}}, "
                 "{\"all\": {}} or {\"specific\": {\"versions\": [...]}}");
        goto done;
    }
    ok = true;
done:
    json_decref(root);
    return ok;
}

/* Reads the version policy from dir/config.json; the default (latest 1) when there is none. */
static bool read_policy(const char *dir, version_policy *p, char *problem, size_t plen)
{
    char path[REPO_PATH_MAX];
    struct stat sb;
    p->kind = POLICY_LATEST;
    p->latest = 1;
    p->nspecific = 0;
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path ||
        stat(path, &sb) != 0)
        return true;
    if (!S_ISREG(sb.st_mode) || sb.st_size > REPO_CONFIG_MAX) {
        snprintf(problem, plen, "config.json is not a file of at most %d bytes", REPO_CONFIG_MAX);
        return false;
    }
    char *buf = malloc((size_t)sb.st_size + 1);
    FILE *f = buf ? fopen(path, "rb") : NULL;
    size_t n = f ? fread(buf, 1, (size_t)sb.st_size + 1, f) : 0;
    bool ok = false;
    if (!buf)
        snprintf(problem, plen, "out of memory reading config.json");
    else if (!f)
        snprintf(problem, plen, "cannot read config.json: %s", strerror(errno));
    else if (n > (size_t)REPO_CONFIG_MAX)
        snprintf(problem, plen, "config.json is larger than %d bytes", REPO_CONFIG_MAX);
    else
        ok = parse_policy(buf, n, p, problem, plen);
    if (f)
        fclose(f);
    free(buf);
    return ok;
}

/* ---- scanning ------------------------------------------------------------------------------ */

static int compare_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* What the folder root/name holds now: its versions (sorted), their signatures and its policy;
 * quick: only whether it is a model folder. */
static void scan_model(const repository *r, const char *name, bool quick, model_scan *sc)
{
    char dir[REPO_PATH_MAX], path[REPO_PATH_MAX];
    memset(sc, 0, sizeof *sc);
    if (snprintf(dir, sizeof dir, "%s/%s", r->srv->cfg.models, name) >= (int)sizeof dir ||
        !is_dir(dir))
        return;
    bool flat =
        snprintf(path, sizeof path, "%s/model.json", dir) < (int)sizeof path && is_file(path);
    bool has_config =
        snprintf(path, sizeof path, "%s/config.json", dir) < (int)sizeof path && is_file(path);
    bool has_one = false, too_many = false;
    DIR *d = opendir(dir);
    if (!d) {
        /* Unreadable now (permissions, a storage hiccup; or a root-only lost+found): the
         * caller decides whether that is a model it serves. */
        sc->unreadable = true;
        snprintf(sc->problem, sizeof sc->problem, "cannot list the folder: %s", strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t v;
        if (!repo_version_parse(e->d_name, strlen(e->d_name), &v))
            continue;
        if (snprintf(path, sizeof path, "%s/%s/model.json", dir, e->d_name) >= (int)sizeof path ||
            !is_file(path))
            continue; /* not a version yet: no model.json */
        if (sc->n == REPO_MAX_VERSIONS) {
            too_many = true;
            break;
        }
        has_one = has_one || v == 1;
        sc->numbers[sc->n++] = v;
    }
    closedir(d);
    sc->is_model = flat || has_config || sc->n > 0;
    if (!sc->is_model || quick)
        return;
    if (flat && has_one) {
        snprintf(sc->problem, sizeof sc->problem,
                 "version 1 is both the folder's own model.json and the folder 1/; keep one");
        return;
    }
    if (too_many) {
        snprintf(sc->problem, sizeof sc->problem, "more than %d version folders",
                 REPO_MAX_VERSIONS);
        return;
    }
    if (flat)
        sc->numbers[sc->n++] = 1;
    qsort(sc->numbers, (size_t)sc->n, sizeof *sc->numbers, compare_int64);
    for (int i = 0; i < sc->n; i++) {
        sc->flat[i] = flat && sc->numbers[i] == 1;
        if (sc->flat[i])
            sc->sigs[i] = version_sig(dir);
        else if (snprintf(path, sizeof path, "%s/%lld", dir, (long long)sc->numbers[i]) <
                 (int)sizeof path)
            sc->sigs[i] = version_sig(path);
    }
    if (!read_policy(dir, &sc->policy, sc->problem, sizeof sc->problem))
        return;
    if (sc->n == 0)
        snprintf(sc->problem, sizeof sc->problem,
                 "no model.json, and no version folder (1/, 2/, ...) with one");
}

/* The versions the policy serves, out of the scanned ones: wanted[i] for sc->numbers[i]. */
static int apply_policy(const model_scan *sc, bool *wanted)
{
    int n = 0;
    for (int i = 0; i < sc->n; i++) {
        bool w = false;
        switch (sc->policy.kind) {
        case POLICY_LATEST:
            w = i >= sc->n - sc->policy.latest;
            break;
        case POLICY_ALL:
            w = true;
            break;
        case POLICY_SPECIFIC:
            for (int k = 0; k < sc->policy.nspecific && !w; k++)
                w = sc->policy.specific[k] == sc->numbers[i];
            break;
        }
        wanted[i] = w;
        n += w;
    }
    return n;
}

/* The record of a model. Caller holds the lock (or is the manager, which alone changes them). */
static repo_model *find_model(const repository *r, const char *name, size_t len)
{
    for (int i = 0; i < r->nmodels; i++)
        if (strlen(r->models[i]->name) == len && !memcmp(r->models[i]->name, name, len))
            return r->models[i];
    return NULL;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
}

/* The model folders of the repository, sorted; each name strdup'd into names (at most
 * REPO_MAX_MODELS). */
static srv_status list_models(repository *r, char **names, int *count, char *err, size_t errlen)
{
    const char *root = r->srv->cfg.models;
    int n = 0;
    srv_status st = SRV_OK;
    DIR *d = opendir(root);
    if (!d)
        return srv_fail(err, errlen, SRV_INTERNAL, "cannot open the model repository '%s': %s",
                        root, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strlen(e->d_name) >= SPEC_MAX_NAME)
            continue; /* hidden (a ConfigMap's ..data), or not a model name */
        char path[REPO_PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", root, e->d_name) >= (int)sizeof path ||
            !is_dir(path))
            continue;
        model_scan *sc = malloc(sizeof *sc);
        if (!sc) {
            st = srv_fail(err, errlen, SRV_UNAVAILABLE,
                          "out of memory listing the model repository '%s'", root);
            break;
        }
        scan_model(r, e->d_name, true, sc);
        bool is_model = sc->is_model;
        if (sc->unreadable) { /* a model it serves, or a folder it cannot use (lost+found) */
            pthread_mutex_lock(&r->mu);
            is_model = find_model(r, e->d_name, strlen(e->d_name)) != NULL;
            pthread_mutex_unlock(&r->mu);
        }
        free(sc);
        if (!is_model)
            continue; /* not a model folder (lost+found, notes, ...) */
        if (n == REPO_MAX_MODELS) {
            st = srv_fail(err, errlen, SRV_INTERNAL, "more than %d models in '%s'", REPO_MAX_MODELS,
                          root);
            break;
        }
        names[n] = strdup(e->d_name);
        if (!names[n]) {
            st = srv_fail(err, errlen, SRV_UNAVAILABLE,
                          "out of memory listing the model repository '%s'", root);
            break;
        }
        n++;
    }
    closedir(d);
    if (st != SRV_OK) {
        free_names(names, n);
        return st;
    }
    qsort(names, (size_t)n, sizeof *names, compare_names);
    *count = n;
    return SRV_OK;
}

/* ---- instances: one loaded version ---------------------------------------------------------- */

static void on_batch(void *ctx, int samples, int jobs, int64_t run_ns)
{
    model_entry *me = ctx;
    (void)jobs;
    metrics_batch(me->srv->metrics, me->index, samples, run_ns);
}

static void engine_warning(void *ctx, const char *message)
{
    const server *s = ctx;
    server_log(s, LOG_WARN, "%s", message);
}

static void instance_free(instance *in)
{
    if (!in)
        return;
    batcher_destroy(in->e.batcher);
    engine_model_destroy(in->e.model);
    free(in);
}

/* Loads dir as version `version` of model `name` and warms it up on its own workers. The
 * messages are the engine's (they name the model and the layer). */
static srv_status instance_load(repository *r, const char *name, int64_t version, const char *dir,
                                int series, instance **out, char *err, size_t errlen)
{
    server *s = r->srv;
    char msg[REPO_ERR_MAX];
    *out = NULL;
    instance *in = calloc(1, sizeof *in);
    if (!in)
        return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
    model_entry *me = &in->e;
    me->srv = s;
    me->version = version;
    snprintf(me->version_str, sizeof me->version_str, "%lld", (long long)version);
    me->index = series;
    atomic_init(&in->refs, 1);
    in->sig = version_sig(dir);
    int64_t t0 = now_ns();
    engine_load_options opts = {.warn = engine_warning, .warn_ctx = s};
    engine_status es = engine_model_load(dir, &opts, &me->model, msg, sizeof msg);
    if (es != ENGINE_OK) {
        free(in);
        return srv_fail(err, errlen, es == ENGINE_E_NOMEM ? SRV_UNAVAILABLE : SRV_BAD_REQUEST, "%s",
                        msg);
    }
    const spec_model *sp = engine_model_spec(me->model);
    srv_status st = SRV_OK;
    if (strcmp(sp->name, name)) {
        st = srv_fail(err, errlen, SRV_BAD_REQUEST,
                      "model folder '%s' holds model.json named '%s'; they must match", dir,
                      sp->name);
        goto fail;
    }
    me->name = sp->name;
    me->max_batch = s->cfg.max_batch_size > 0 ? (int)s->cfg.max_batch_size : sp->max_batch_size;
    /* Workers and threads: model.json, else the settings, else from the CPUs. */
    int instances = sp->instances ? sp->instances
                    : s->cfg.instances
                        ? (int)s->cfg.instances
                        : (r->cpus + DEFAULT_CPUS_PER_INSTANCE - 1) / DEFAULT_CPUS_PER_INSTANCE;
    int threads = sp->threads            ? sp->threads
                  : s->cfg.infer_threads ? (int)s->cfg.infer_threads
                                         : (r->cpus / instances > 0 ? r->cpus / instances : 1);
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
        st = srv_fail(err, errlen, SRV_BAD_REQUEST,
                      "model '%s': --queue-timeout-ms %lld must exceed its batching delay of %lld "
                      "us, or every request would time out while it waits for its batch",
                      sp->name, (long long)bo.queue_timeout_ms, (long long)bo.max_delay_us);
        goto fail;
    }
    if (batcher_create(me->model, &bo, &me->batcher, msg, sizeof msg) != SRV_OK) {
        st =
            srv_fail(err, errlen, SRV_BAD_REQUEST, "model '%s': warm-up failed: %s", sp->name, msg);
        goto fail;
    }
    batcher_info info;
    batcher_get_info(me->batcher, &info);
    server_log(s, LOG_INFO,
               "model %s version %s loaded and warmed up in %.0f ms: %lld parameters%s, %d "
               "instance%s of %d thread%s, precision %s, kernels %s",
               sp->name, me->version_str, (double)(now_ns() - t0) / 1e6,
               (long long)engine_model_params(me->model),
               engine_model_random_weights(me->model) ? " (random weights)" : "", instances,
               instances == 1 ? "" : "s", threads, threads == 1 ? "" : "s",
               info.precision == SPEC_BF16 ? "bf16" : "f32", info.kernels);
    if (sp->precision == SPEC_BF16 && info.precision != SPEC_BF16)
        server_log(s, LOG_WARN, "model %s asks for bf16, which this CPU cannot run; using f32",
                   sp->name);
    if (info.reference)
        server_log(s, LOG_WARN, "model %s uses a reference (slow) oneDNN kernel", sp->name);
    *out = in;
    return SRV_OK;
fail:
    engine_model_destroy(me->model);
    free(in);
    return st;
}

/* Takes the repository's own reference away from an instance that stops serving. Requests that
 * hold it finish on it; the last one hands it to the manager. Caller holds the lock. */
static void retire_locked(repository *r, instance *in)
{
    if (atomic_fetch_sub(&in->refs, 1) == 1) {
        in->next = r->released;
        r->released = in;
        pthread_cond_signal(&r->cv);
    } else {
        in->next = r->draining;
        r->draining = in;
    }
}

void repository_release(model_entry *me)
{
    if (!me)
        return;
    instance *in = (instance *)me;
    if (atomic_fetch_sub(&in->refs, 1) != 1)
        return;
    /* The last reference of a retired instance: move it from draining to released. */
    repository *r = me->srv->repo;
    pthread_mutex_lock(&r->mu);
    for (instance **p = &r->draining; *p; p = &(*p)->next) {
        if (*p == in) {
            *p = in->next;
            break;
        }
    }
    in->next = r->released;
    r->released = in;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* ---- the records of models and versions (changed by the manager, under the lock) ------------ */

static repo_version *find_version(const repo_model *m, int64_t number)
{
    for (int i = 0; i < m->nversions; i++)
        if (m->versions[i].number == number)
            return &m->versions[i];
    return NULL;
}

/* A new record, kept in name order. NULL when out of memory or the table is full. */
static repo_model *add_model_locked(repository *r, const char *name)
{
    if (r->nmodels == REPO_MAX_MODELS)
        return NULL;
    repo_model *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    snprintf(m->name, sizeof m->name, "%s", name);
    m->wanted = true;
    int at = 0;
    while (at < r->nmodels && strcmp(r->models[at]->name, name) < 0)
        at++;
    memmove(&r->models[at + 1], &r->models[at], (size_t)(r->nmodels - at) * sizeof *r->models);
    r->models[at] = m;
    r->nmodels++;
    return m;
}

/* A version record, kept in number order; NULL when out of memory. */
static repo_version *add_version_locked(repo_model *m, int64_t number)
{
    if (m->nversions == m->cap) {
        int cap = m->cap ? m->cap * 2 : 4;
        repo_version *nv = realloc(m->versions, (size_t)cap * sizeof *nv);
        if (!nv)
            return NULL;
        m->versions = nv;
        m->cap = cap;
    }
    int at = 0;
    while (at < m->nversions && m->versions[at].number < number)
        at++;
    memmove(&m->versions[at + 1], &m->versions[at],
            (size_t)(m->nversions - at) * sizeof *m->versions);
    repo_version *v = &m->versions[at];
    memset(v, 0, sizeof *v);
    v->number = number;
    m->nversions++;
    return v;
}

/* Retires every serving version of m, marking them unloaded. */
static void unload_all_locked(repository *r, repo_model *m)
{
    for (int i = 0; i < m->nversions; i++) {
        repo_version *v = &m->versions[i];
        if (v->serving) {
            retire_locked(r, v->serving);
            v->serving = NULL;
            snprintf(v->reason, sizeof v->reason, "unloaded");
        }
        v->failed = false;
    }
}

static void remove_model_locked(repository *r, repo_model *m)
{
    unload_all_locked(r, m);
    for (int i = 0; i < r->nmodels; i++) {
        if (r->models[i] == m) {
            memmove(&r->models[i], &r->models[i + 1],
                    (size_t)(r->nmodels - i - 1) * sizeof *r->models);
            r->nmodels--;
            break;
        }
    }
    free(m->versions);
    free(m);
}

/* "2, 1": the serving versions of m, newest first. Caller holds the lock. */
static void serving_list(const repo_model *m, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = 0;
    for (int i = m->nversions - 1; i >= 0 && o < len; i--)
        if (m->versions[i].serving)
            o += (size_t)snprintf(buf + o, len - o, "%s%lld", o ? ", " : "",
                                  (long long)m->versions[i].number);
}

/* ---- bringing one model in line with its folder (manager thread) --------------------------- */

/* Loads version v of m (the manager's only blocking work), retrying while its files change under
 * it, then swaps it in. On failure whatever served keeps serving. */
static srv_status load_version(repository *r, repo_model *m, repo_version *v, char *err,
                               size_t errlen)
{
    server *s = r->srv;
    char dir[REPO_PATH_MAX], msg[REPO_ERR_MAX] = "";
    if (v->flat)
        snprintf(dir, sizeof dir, "%s/%s", s->cfg.models, m->name);
    else
        snprintf(dir, sizeof dir, "%s/%s/%lld", s->cfg.models, m->name, (long long)v->number);
    char vstr[REPO_VERSION_STR];
    snprintf(vstr, sizeof vstr, "%lld", (long long)v->number);
    int series = metrics_series(s->metrics, m->name, vstr);
    pthread_mutex_lock(&r->mu);
    v->loading = true;
    v->shown = true;
    v->reason[0] = 0; /* the last attempt's outcome no longer stands */
    pthread_mutex_unlock(&r->mu);

    instance *in = NULL;
    srv_status st = SRV_OK;
    int64_t t0 = now_ns();
    for (int attempt = 0; attempt < REPO_LOAD_ATTEMPTS; attempt++) {
        st = instance_load(r, m->name, v->number, dir, series, &in, msg, sizeof msg);
        if (st != SRV_OK || sig_equal(in->sig, version_sig(dir)))
            break;
        /* The files changed while they were read: what was loaded may mix two versions. */
        server_log(s, LOG_INFO, "model %s version %s changed while it loaded; loading it again",
                   m->name, vstr);
        instance_free(in);
        in = NULL;
        st = srv_fail(msg, sizeof msg, SRV_UNAVAILABLE,
                      "its files kept changing while they were read (%d attempts)",
                      REPO_LOAD_ATTEMPTS);
    }
    metrics_model_load(s->metrics, series, st == SRV_OK, now_ns() - t0);

    char serving[REPO_REASON_MAX];
    bool reload;
    pthread_mutex_lock(&r->mu);
    v->loading = false;
    reload = v->serving != NULL;
    if (st == SRV_OK) {
        instance *old = v->serving;
        v->serving = in;
        v->sig = in->sig;
        v->failed = false;
        v->reason[0] = 0;
        if (old)
            retire_locked(r, old);
    } else {
        v->failed = true;
        v->failed_sig = v->sig;
        join_text(v->reason, sizeof v->reason, reload ? "reload failed: " : "", msg);
    }
    serving_list(m, serving, sizeof serving);
    pthread_mutex_unlock(&r->mu);
    if (st == SRV_OK) {
        if (reload)
            server_log(s, LOG_INFO, "model %s version %s replaced by its new files", m->name, vstr);
        return SRV_OK;
    }
    server_log(s, LOG_ERROR, "model %s version %s failed to load: %s; %s%s", m->name, vstr, msg,
               serving[0] ? "serving versions: " : "no version of it serves",
               serving[0] ? serving : "");
    return srv_fail(err, errlen, st, "%s", msg);
}

/* Rescans the folder of model `name` and loads what its policy asks for and is new or changed
 * (force: also what failed before with the same files). Versions the policy no longer asks for
 * are retired once one it asks for serves. Returns the first failure. */
static srv_status sync_model(repository *r, const char *name, bool force, char *err, size_t errlen)
{
    server *s = r->srv;
    model_scan *sc = malloc(sizeof *sc);
    bool *wanted = malloc(REPO_MAX_VERSIONS * sizeof *wanted);
    srv_status st = SRV_OK;
    if (!sc || !wanted) {
        st = srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory scanning model '%s'", name);
        goto done;
    }
    scan_model(r, name, false, sc);
    if (sc->is_model && !sc->problem[0] && apply_policy(sc, wanted) == 0)
        snprintf(sc->problem, sizeof sc->problem,
                 "no version folder matches its version policy (config.json)");

    pthread_mutex_lock(&r->mu);
    repo_model *m = find_model(r, name, strlen(name));
    /* A model whose folder cannot be listed now keeps serving; the index says why. */
    if (sc->unreadable && m)
        sc->is_model = true;
    if (!sc->is_model) {
        if (m) {
            server_log(s, LOG_INFO, "model %s is gone from the repository: unloading it", name);
            remove_model_locked(r, m);
        }
        pthread_mutex_unlock(&r->mu);
        st = srv_fail(err, errlen, SRV_NOT_FOUND, "no model folder '%s' in the repository", name);
        goto done;
    }
    if (!m)
        m = add_model_locked(r, name);
    if (!m) {
        pthread_mutex_unlock(&r->mu);
        st = srv_fail(err, errlen, SRV_UNAVAILABLE, "cannot add model '%s': %d models at most",
                      name, REPO_MAX_MODELS);
        goto done;
    }
    bool changed_problem = strcmp(m->problem, sc->problem) != 0;
    snprintf(m->problem, sizeof m->problem, "%s", sc->problem);
    for (int i = 0; i < m->nversions; i++)
        m->versions[i].on_disk = false;
    for (int i = 0; i < sc->n && !sc->problem[0]; i++) {
        repo_version *v = find_version(m, sc->numbers[i]);
        if (!v)
            v = add_version_locked(m, sc->numbers[i]);
        if (!v) {
            snprintf(m->problem, sizeof m->problem, "out of memory");
            break;
        }
        v->on_disk = true;
        v->flat = sc->flat[i];
        v->sig = sc->sigs[i];
    }
    bool model_wanted = m->wanted;
    char problem[REPO_REASON_MAX], serving[REPO_REASON_MAX];
    snprintf(problem, sizeof problem, "%s", m->problem);
    serving_list(m, serving, sizeof serving);
    pthread_mutex_unlock(&r->mu);

    if (problem[0]) {
        if (changed_problem)
            server_log(s, LOG_ERROR, "model %s cannot be loaded: %s; %s%s", name, problem,
                       serving[0] ? "serving versions: " : "no version of it serves",
                       serving[0] ? serving : "");
        st = srv_fail(err, errlen, SRV_BAD_REQUEST, "model '%s': %s", name, problem);
        goto done;
    }
    if (!model_wanted)
        goto done;
    /* Newest first, so that the version unversioned requests go to is ready soonest. */
    for (int i = sc->n - 1; i >= 0; i--) {
        if (!wanted[i])
            continue;
        repo_version *v = find_version(m, sc->numbers[i]);
        if (v->serving && sig_equal(v->serving->sig, v->sig))
            continue; /* unchanged */
        if (!force && v->failed && sig_equal(v->failed_sig, v->sig)) {
            if (st == SRV_OK)
                st = srv_fail(err, errlen, SRV_BAD_REQUEST, "%s", v->reason);
            continue; /* failed with these very files: wait for them to change */
        }
        char msg[REPO_ERR_MAX];
        srv_status ls = load_version(r, m, v, msg, sizeof msg);
        if (ls != SRV_OK && st == SRV_OK)
            st = srv_fail(err, errlen, ls, "%s", msg);
    }
    /* Retire what the policy no longer asks for (or what left the disk), but only once a version
     * it asks for serves: a failed load never leaves the model with nothing. */
    pthread_mutex_lock(&r->mu);
    bool any_wanted_serving = false;
    for (int i = 0; i < sc->n; i++)
        any_wanted_serving =
            any_wanted_serving || (wanted[i] && find_version(m, sc->numbers[i])->serving);
    for (int i = 0; i < m->nversions; i++) {
        repo_version *v = &m->versions[i];
        bool keep = false;
        for (int k = 0; k < sc->n && !keep; k++)
            keep = wanted[k] && sc->numbers[k] == v->number;
        if (v->serving && !keep && any_wanted_serving) {
            server_log(s, LOG_INFO, "model %s version %lld: unloading (%s)", name,
                       (long long)v->number,
                       v->on_disk ? "no longer in the version policy" : "its folder is gone");
            retire_locked(r, v->serving);
            v->serving = NULL;
            v->failed = false;
            snprintf(v->reason, sizeof v->reason, "unloaded");
        }
    }
    /* Forget versions that left the disk and serve nothing. */
    for (int i = 0; i < m->nversions;) {
        repo_version *v = &m->versions[i];
        if (!v->on_disk && !v->serving && !v->loading) {
            memmove(v, v + 1, (size_t)(m->nversions - i - 1) * sizeof *v);
            m->nversions--;
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&r->mu);
done:
    free(sc);
    free(wanted);
    return st;
}

/* Brings every model in line with the repository folder: new folders load, changed versions
 * reload, removed folders unload. */
static void scan_all(repository *r)
{
    char *names[REPO_MAX_MODELS];
    int n = 0;
    char err[REPO_ERR_MAX];
    if (list_models(r, names, &n, err, sizeof err) != SRV_OK) {
        server_log(r->srv, LOG_ERROR, "rescan: %s; the models keep serving as they are", err);
        return;
    }
    for (int i = 0; i < n; i++)
        sync_model(r, names[i], false, err, sizeof err);
    /* Models whose folder is gone. */
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->nmodels;) {
        bool found = false;
        for (int k = 0; k < n && !found; k++)
            found = !strcmp(names[k], r->models[i]->name);
        if (found) {
            i++;
            continue;
        }
        server_log(r->srv, LOG_INFO, "model %s is gone from the repository: unloading it",
                   r->models[i]->name);
        remove_model_locked(r, r->models[i]);
    }
    pthread_mutex_unlock(&r->mu);
    free_names(names, n);
}

/* ---- the manager thread ------------------------------------------------------------------- */

/* True while a retired instance of model `name` is still held or not yet freed. */
static bool draining_locked(const repository *r, const char *name)
{
    for (const instance *in = r->draining; in; in = in->next)
        if (!strcmp(in->e.name, name))
            return true;
    for (const instance *in = r->released; in; in = in->next)
        if (!strcmp(in->e.name, name))
            return true;
    return false;
}

static void run_command(repository *r, command *c)
{
    server *s = r->srv;
    char err[REPO_ERR_MAX] = "";
    srv_status st = SRV_OK;
    if (c->kind == REPO_LOAD) {
        pthread_mutex_lock(&r->mu);
        repo_model *m = find_model(r, c->name, strlen(c->name));
        if (m)
            m->wanted = true;
        pthread_mutex_unlock(&r->mu);
        server_log(s, LOG_INFO, "model %s: load requested", c->name);
        st = sync_model(r, c->name, true, err, sizeof err);
        if (st == SRV_OK) {
            /* A model added by this load starts out wanted; one with nothing serving failed. */
            pthread_mutex_lock(&r->mu);
            m = find_model(r, c->name, strlen(c->name));
            char serving[REPO_REASON_MAX] = "";
            if (m)
                serving_list(m, serving, sizeof serving);
            pthread_mutex_unlock(&r->mu);
            if (!serving[0])
                st = srv_fail(err, sizeof err, SRV_BAD_REQUEST, "model '%s' has no version to load",
                              c->name);
        } else if (st != SRV_NOT_FOUND) {
            char prefix[SPEC_MAX_NAME + 32], cause[REPO_ERR_MAX];
            snprintf(prefix, sizeof prefix, "failed to load model '%s': ", c->name);
            snprintf(cause, sizeof cause, "%s", err);
            join_text(err, sizeof err, prefix, cause);
        }
        c->done(c->ctx, st, err);
        free(c);
        return;
    }
    /* Unload: retire every version now, answer once their last requests are done. */
    pthread_mutex_lock(&r->mu);
    repo_model *m = find_model(r, c->name, strlen(c->name));
    if (m) {
        m->wanted = false;
        unload_all_locked(r, m);
        c->deadline_ns =
            now_ns() + (s->cfg.queue_timeout_ms + REPO_UNLOAD_MARGIN_MS) * REPO_NS_PER_MS;
        c->next = r->waiting;
        r->waiting = c;
    }
    pthread_mutex_unlock(&r->mu);
    if (!m) {
        c->done(c->ctx,
                srv_fail(err, sizeof err, SRV_NOT_FOUND, "no model folder '%s' in the repository",
                         c->name),
                err);
        free(c);
        return;
    }
    server_log(s, LOG_INFO, "model %s: unload requested; requests already queued finish on it",
               c->name);
}

/* Answers the unloads whose versions are freed (or whose wait is over). */
static void finish_waiters(repository *r, bool all)
{
    command *done = NULL;
    int64_t now = now_ns();
    pthread_mutex_lock(&r->mu);
    for (command **p = &r->waiting; *p;) {
        command *c = *p;
        if (all || !draining_locked(r, c->name) || now >= c->deadline_ns) {
            *p = c->next;
            c->next = done;
            done = c;
        } else {
            p = &c->next;
        }
    }
    pthread_mutex_unlock(&r->mu);
    while (done) {
        command *c = done;
        done = c->next;
        if (!all && now >= c->deadline_ns)
            server_log(r->srv, LOG_WARN,
                       "model %s: unloaded; requests that still hold it free it when they end",
                       c->name);
        c->done(c->ctx, SRV_OK, "");
        free(c);
    }
}

static void timed_wait(repository *r, int64_t until_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(until_ns / REPO_NS_PER_S),
                          .tv_nsec = (long)(until_ns % REPO_NS_PER_S)};
    pthread_cond_timedwait(&r->cv, &r->mu, &ts); /* on CLOCK_MONOTONIC */
}

static void *manager_main(void *arg)
{
    repository *r = arg;
    server *s = r->srv;
    int64_t poll_ns = s->cfg.poll_seconds * REPO_NS_PER_S;
    int64_t next_poll = now_ns() + poll_ns;
    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        if (r->released) {
            instance *in = r->released;
            r->released = in->next;
            pthread_mutex_unlock(&r->mu);
            server_log(s, LOG_INFO, "model %s version %s freed: its last request is done",
                       in->e.name, in->e.version_str);
            instance_free(in);
            finish_waiters(r, false);
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (r->head) {
            command *c = r->head;
            r->head = c->next;
            if (!r->head)
                r->tail = NULL;
            r->ncommands--;
            pthread_mutex_unlock(&r->mu);
            run_command(r, c);
            finish_waiters(r, false);
            pthread_mutex_lock(&r->mu);
            continue;
        }
        int64_t now = now_ns();
        if (r->rescan || (s->control == REPO_CONTROL_POLL && now >= next_poll)) {
            if (r->rescan)
                server_log(s, LOG_INFO, "rescanning the model repository (SIGHUP)");
            r->rescan = false;
            pthread_mutex_unlock(&r->mu);
            scan_all(r);
            next_poll = now_ns() + poll_ns;
            pthread_mutex_lock(&r->mu);
            continue;
        }
        int64_t wake = s->control == REPO_CONTROL_POLL ? next_poll : INT64_MAX;
        for (const command *c = r->waiting; c; c = c->next)
            wake = c->deadline_ns < wake ? c->deadline_ns : wake;
        if (r->waiting && now >= wake) {
            pthread_mutex_unlock(&r->mu);
            finish_waiters(r, false);
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (wake == INT64_MAX)
            pthread_cond_wait(&r->cv, &r->mu);
        else
            timed_wait(r, wake);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- the public functions ------------------------------------------------------------------ */

int repository_cpus(const repository *r)
{
    return r->cpus;
}

srv_status repository_create(server *s, repository **out, char *err, size_t errlen)
{
    *out = NULL;
    repository *r = calloc(1, sizeof *r);
    if (!r)
        return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
    r->srv = s;
    r->cpus = usable_cpus();
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    *out = r;
    return SRV_OK;
}

srv_status repository_start(repository *r, char *err, size_t errlen)
{
    server *s = r->srv;
    char *names[REPO_MAX_MODELS];
    int n = 0;
    srv_status st = list_models(r, names, &n, err, errlen);
    if (st != SRV_OK)
        return st;
    if (n == 0 && s->control == REPO_CONTROL_NONE) {
        return srv_fail(err, errlen, SRV_INTERNAL, "no model folders (with a model.json) in '%s'",
                        s->cfg.models);
    }
    for (int i = 0; i < n; i++) {
        char msg[REPO_ERR_MAX];
        if (sync_model(r, names[i], false, msg, sizeof msg) != SRV_OK &&
            s->control == REPO_CONTROL_NONE) {
            st = srv_fail(err, errlen, SRV_INTERNAL, "%s", msg);
            break;
        }
    }
    free_names(names, n);
    if (st != SRV_OK || s->control == REPO_CONTROL_NONE)
        return st;
    if (pthread_create(&r->thread, NULL, manager_main, r) != 0)
        return srv_fail(err, errlen, SRV_INTERNAL, "cannot start the repository thread");
    r->thread_started = true;
    return SRV_OK;
}

void repository_stop(repository *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->thread_started) {
        pthread_join(r->thread, NULL);
        r->thread_started = false;
    }
    /* Commands nobody will run, and unloads nobody will wait for. */
    pthread_mutex_lock(&r->mu);
    command *c = r->head;
    r->head = r->tail = NULL;
    r->ncommands = 0;
    pthread_mutex_unlock(&r->mu);
    while (c) {
        command *next = c->next;
        c->done(c->ctx, SRV_UNAVAILABLE, "the server is shutting down");
        free(c);
        c = next;
    }
    finish_waiters(r, true);
    /* Let what is queued run: no connection may stay suspended. */
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->nmodels; i++)
        for (int k = 0; k < r->models[i]->nversions; k++)
            if (r->models[i]->versions[k].serving)
                batcher_stop(r->models[i]->versions[k].serving->e.batcher);
    for (instance *in = r->draining; in; in = in->next)
        batcher_stop(in->e.batcher);
    pthread_mutex_unlock(&r->mu);
}

void repository_destroy(repository *r)
{
    if (!r)
        return;
    repository_stop(r);
    for (int i = 0; i < r->nmodels; i++) {
        repo_model *m = r->models[i];
        for (int k = 0; k < m->nversions; k++)
            instance_free(m->versions[k].serving);
        free(m->versions);
        free(m);
    }
    while (r->draining) {
        instance *next = r->draining->next;
        instance_free(r->draining);
        r->draining = next;
    }
    while (r->released) {
        instance *next = r->released->next;
        instance_free(r->released);
        r->released = next;
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

srv_status repository_acquire(repository *r, const char *name, size_t len, int64_t version,
                              model_entry **out, char *err, size_t errlen)
{
    char loaded[512];
    int shown = (int)(len > 128 ? 128 : len);
    srv_status st = SRV_OK;
    *out = NULL;
    pthread_mutex_lock(&r->mu);
    repo_model *m = find_model(r, name, len);
    instance *in = NULL;
    bool loading = false;
    for (int i = m ? m->nversions - 1 : -1; i >= 0 && !in; i--) {
        repo_version *v = &m->versions[i];
        if (version && v->number != version)
            continue;
        in = v->serving;
        loading = loading || v->loading;
    }
    if (in) {
        atomic_fetch_add(&in->refs, 1);
        *out = &in->e;
    } else if (loading) {
        st = version ? srv_fail(err, errlen, SRV_UNAVAILABLE,
                                "version %lld of model '%.*s' is loading; try again shortly",
                                (long long)version, shown, name)
                     : srv_fail(err, errlen, SRV_UNAVAILABLE,
                                "model '%.*s' is loading; try again shortly", shown, name);
    } else if (m && version) {
        serving_list(m, loaded, sizeof loaded);
        st = srv_fail(err, errlen, SRV_NOT_FOUND,
                      "model '%.*s' has no version %lld ready (ready versions: %s)", shown, name,
                      (long long)version, loaded[0] ? loaded : "none");
    } else if (m && m->wanted) {
        /* In the repository and meant to serve, but its load failed: say why. */
        const char *why = m->problem;
        for (int i = m->nversions - 1; i >= 0 && !why[0]; i--)
            why = m->versions[i].reason;
        if (why[0])
            st = srv_fail(err, errlen, SRV_UNAVAILABLE, "model '%.*s' is unavailable: %s", shown,
                          name, why);
    }
    pthread_mutex_unlock(&r->mu);
    if (!in && st == SRV_OK) {
        repository_loaded_names(r, loaded, sizeof loaded);
        st = srv_fail(err, errlen, SRV_NOT_FOUND, "model '%.*s' is not loaded (loaded: %s)", shown,
                      name, loaded);
    }
    return st;
}

srv_status repository_command(repository *r, repo_command kind, const char *name, size_t len,
                              repo_done_fn done, void *ctx, char *err, size_t errlen)
{
    if (!folder_name_ok(name, len))
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "'%.*s' is not a model name: a folder of the repository, at most %d bytes, "
                        "not starting with '.'",
                        (int)(len > 128 ? 128 : len), name, SPEC_MAX_NAME - 1);
    if (kind == REPO_UNLOAD && r->srv->control == REPO_CONTROL_POLL)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "unload is not available with --model-control poll, where the repository "
                        "folder decides what is loaded: remove the model's folder, or run with "
                        "--model-control explicit");
    command *c = calloc(1, sizeof *c);
    if (!c)
        return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
    c->kind = kind;
    memcpy(c->name, name, len);
    c->done = done;
    c->ctx = ctx;
    srv_status st = SRV_OK;
    pthread_mutex_lock(&r->mu);
    if (r->stopping || !r->thread_started)
        st = srv_fail(err, errlen, SRV_UNAVAILABLE, "the server is shutting down");
    else if (r->ncommands >= REPO_MAX_COMMANDS)
        st = srv_fail(err, errlen, SRV_UNAVAILABLE,
                      "%d repository requests are waiting; try again shortly", r->ncommands);
    if (st == SRV_OK) {
        if (r->tail)
            r->tail->next = c;
        else
            r->head = c;
        r->tail = c;
        r->ncommands++;
        pthread_cond_signal(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    if (st != SRV_OK)
        free(c);
    return st;
}

void repository_rescan(repository *r)
{
    pthread_mutex_lock(&r->mu);
    r->rescan = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void index_entry(text *t, bool *first, const char *name, const char *version,
                        const char *state, const char *reason)
{
    text_put(t, "%s{\"name\":", *first ? "" : ",");
    *first = false;
    text_json_string(t, name, strlen(name));
    if (version)
        text_put(t, ",\"version\":\"%s\"", version);
    if (state)
        text_put(t, ",\"state\":\"%s\"", state);
    if (reason && reason[0]) {
        text_put(t, ",\"reason\":");
        text_json_string(t, reason, strlen(reason));
    }
    text_put(t, "}");
}

void repository_index(repository *r, bool ready_only, const char *only, size_t len, text *t)
{
    bool first = true;
    text_put(t, "[");
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->nmodels; i++) {
        const repo_model *m = r->models[i];
        if (len && (strlen(m->name) != len || memcmp(m->name, only, len)))
            continue;
        int listed = 0;
        for (int k = 0; k < m->nversions; k++) {
            const repo_version *v = &m->versions[k];
            if (!v->shown && !v->serving)
                continue;
            const char *state = v->serving ? "READY" : v->loading ? "LOADING" : "UNAVAILABLE";
            listed++;
            if (ready_only && !v->serving)
                continue;
            char vs[REPO_VERSION_STR];
            snprintf(vs, sizeof vs, "%lld", (long long)v->number);
            index_entry(t, &first, m->name, vs, state, v->reason);
        }
        /* The folder as a whole cannot be used (its config.json, say): say so once. */
        if (m->problem[0] && !ready_only)
            index_entry(t, &first, m->name, NULL, "UNAVAILABLE", m->problem);
        else if (!listed && !ready_only)
            index_entry(t, &first, m->name, NULL, NULL, NULL); /* found, never loaded */
    }
    pthread_mutex_unlock(&r->mu);
    text_put(t, "]");
}

void repository_ready_versions(repository *r, const model_entry *me, text *t)
{
    bool first = true;
    text_put(t, "[");
    pthread_mutex_lock(&r->mu);
    const repo_model *m = find_model(r, me->name, strlen(me->name));
    for (int i = m ? m->nversions - 1 : -1; i >= 0; i--) {
        if (m->versions[i].serving) {
            text_put(t, "%s\"%lld\"", first ? "" : ",", (long long)m->versions[i].number);
            first = false;
        }
    }
    pthread_mutex_unlock(&r->mu);
    text_put(t, "]");
}

void repository_loaded_names(repository *r, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->nmodels && o < len; i++) {
        bool serving = false;
        for (int k = 0; k < r->models[i]->nversions && !serving; k++)
            serving = r->models[i]->versions[k].serving != NULL;
        if (serving)
            o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? ", " : "", r->models[i]->name);
    }
    pthread_mutex_unlock(&r->mu);
}

int repository_live(repository *r, metrics_live *out, int max)
{
    int n = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->nmodels; i++) {
        for (int k = 0; k < r->models[i]->nversions && n < max; k++) {
            const instance *in = r->models[i]->versions[k].serving;
            if (in)
                out[n++] = (metrics_live){in->e.index, batcher_queued(in->e.batcher), true};
        }
    }
    for (const instance *in = r->draining; in && n < max; in = in->next)
        out[n++] = (metrics_live){in->e.index, batcher_queued(in->e.batcher), false};
    pthread_mutex_unlock(&r->mu);
    return n;
}
