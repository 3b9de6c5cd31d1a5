/* api.c - the endpoints: KServe v2 (health, metadata, infer), shapes, TorchServe-style images,
 * metrics. */
#include "api.h"
#include "image.h"
#include "multipart.h"
#include "query.h"
#include "reply.h"
#include "ui.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
    API_DEFAULT_TOP = 5,
    API_REPO_MAX_BODY = 64 * 1024, /* bytes of a repository request's JSON body */
    API_MAX_LIVE = 4096,           /* loaded versions /metrics reports on */
    API_SHAPE_TEXT = 128,          /* room for a formatted shape ("[64,3,1024,1024]") */
    /* Answer bytes held beside the output: the piece of a streamed answer being sent. */
    API_ANSWER_OVERHEAD = 128 * 1024,
    API_STEP_VALUES = 4096, /* values per piece of a streamed answer (about 64 KB of text) */
    API_VALUE_BYTES = 16,   /* an estimate of one value's text: "-1.23456789e-05," */
    API_HEAD_BYTES = 1024,  /* of an answer's JSON around its values */
    API_TOP_BYTES = 64,     /* of one entry of "top" */
    /* An /infer body from this size on is parsed and converted on a decode thread (about 0.3 ms
     * of work at this size); a smaller one on the HTTP thread. */
    API_DECODE_MIN_BYTES = 64 * 1024,
};

/* The KServe v2 extensions, and Triton's model_repository when models can change. */
static const char *const server_extensions =
    "[\"binary_tensor_data\",\"model_shapes\",\"image_predictions\"]";
static const char *const server_extensions_repository =
    "[\"binary_tensor_data\",\"model_shapes\",\"image_predictions\",\"model_repository\"]";

/* ---- routing ------------------------------------------------------------------------------ */

static srv_status bad_version(request *rq, const char *v, size_t len)
{
    return srv_fail(
        rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
        "version '%.*s' is not a version number: 1 to %d digits, without a leading zero",
        (int)(len > 64 ? 64 : len), v, REPO_MAX_VERSION_DIGITS);
}

/* /v2/repository/models/{name}/load and .../unload; `name` is what follows the prefix. */
static srv_status route_repository_model(request *rq, const char *name)
{
    const char *slash = strchr(name, '/');
    if (!slash || (strcmp(slash, "/load") && strcmp(slash, "/unload")))
        return SRV_NOT_FOUND;
    size_t nlen = (size_t)(slash - name);
    rq->route = !strcmp(slash, "/load") ? ROUTE_REPO_LOAD : ROUTE_REPO_UNLOAD;
    if (nlen >= sizeof rq->repo_name)
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                        "model name '%.64s...' is longer than %zu bytes", name,
                        sizeof rq->repo_name - 1);
    memcpy(rq->repo_name, name, nlen);
    rq->repo_name[nlen] = 0;
    return SRV_OK;
}

srv_status api_route(request *rq, const char *url, const char *method)
{
    server *s = rq->srv;
    const char *allow = "GET";
    static const char models_prefix[] = "/v2/models/", predict_prefix[] = "/predictions/",
                      repo_models_prefix[] = "/v2/repository/models/", versions[] = "/versions/";

    /* With CORS on, OPTIONS gets one answer whatever the path: a model name asked about in a
     * preflight must not tell whether it exists. */
    if (!strcmp(method, "OPTIONS") && s->cfg.cors_origin[0]) {
        rq->route = ROUTE_OPTIONS;
        return SRV_OK;
    }
    if (!strcmp(url, "/v2/health/live") || !strcmp(url, "/v2/health/ready")) {
        rq->route = ROUTE_HEALTH;
        rq->live = !strcmp(url, "/v2/health/live");
    } else if (!strcmp(url, "/v2") || !strcmp(url, "/v2/")) {
        rq->route = ROUTE_SERVER;
    } else if (!strcmp(url, "/metrics")) {
        rq->route = ROUTE_METRICS;
    } else if (s->control != REPO_CONTROL_NONE && !strcmp(url, "/v2/repository/index")) {
        rq->route = ROUTE_REPO_INDEX; /* Triton's model_repository extension: off with none */
        allow = "POST";
    } else if (s->control != REPO_CONTROL_NONE &&
               !strncmp(url, repo_models_prefix, sizeof repo_models_prefix - 1)) {
        srv_status st = route_repository_model(rq, url + sizeof repo_models_prefix - 1);
        if (st == SRV_NOT_FOUND)
            goto no_route;
        if (st != SRV_OK)
            return st;
        allow = "POST";
    } else if (!strncmp(url, models_prefix, sizeof models_prefix - 1) ||
               !strncmp(url, predict_prefix, sizeof predict_prefix - 1)) {
        bool predict = url[1] == 'p';
        const char *name = url + (predict ? sizeof predict_prefix : sizeof models_prefix) - 1;
        const char *slash = strchr(name, '/');
        size_t nlen = slash ? (size_t)(slash - name) : strlen(name);
        const char *rest = slash ? slash : "";
        /* A version: /predictions/{m}/{v} as TorchServe, /v2/models/{m}/versions/{v}/... as the
         * Open Inference Protocol. 0 = the newest ready version. */
        const char *vtext = NULL;
        size_t vlen = 0;
        int64_t version = 0;
        if (predict && *rest) {
            vtext = rest + 1;
            if (strchr(vtext, '/'))
                goto no_route;
            vlen = strlen(vtext);
            rest = "";
        } else if (!predict && !strncmp(rest, versions, sizeof versions - 1)) {
            vtext = rest + sizeof versions - 1;
            const char *vslash = strchr(vtext, '/');
            vlen = vslash ? (size_t)(vslash - vtext) : strlen(vtext);
            rest = vslash ? vslash : "";
        }
        if (predict) {
            rq->route = ROUTE_PREDICT;
            allow = "POST, PUT";
        } else if (!*rest) {
            rq->route = ROUTE_MODEL;
        } else if (!strcmp(rest, "/ready")) {
            rq->route = ROUTE_READY;
        } else if (!strcmp(rest, "/infer")) {
            rq->route = ROUTE_INFER;
            allow = "POST";
        } else if (!strcmp(rest, "/shapes")) {
            rq->route = ROUTE_SHAPES;
        } else {
            goto no_route;
        }
        if (vtext && !repo_version_parse(vtext, vlen, &version))
            return bad_version(rq, vtext, vlen);
        /* The one seam to a model: a counted reference to the version that will answer. */
        srv_status st = repository_acquire(s->repo, name, nlen, version, &rq->model, rq->errbuf,
                                           sizeof rq->errbuf);
        if (st != SRV_OK)
            return st;
        rq->model_index = rq->model->index;
    } else if (ui_find(&s->cfg, url)) {
        rq->route = ROUTE_UI;
        rq->asset = ui_find(&s->cfg, url);
    } else {
        goto no_route;
    }

    rq->allow = allow;
    /* Whole-word match against the Allow list ("POST, PUT"). */
    bool ok = false;
    size_t ml = strlen(method);
    for (const char *a = allow; *a && !ok;) {
        size_t wl = strcspn(a, ", ");
        ok = wl == ml && !memcmp(a, method, ml);
        a += wl;
        a += strspn(a, ", ");
    }
    if (!strcmp(method, "HEAD") && !strcmp(allow, "GET"))
        ok = true; /* MHD sends the headers of the GET answer without its body */
    if (!ok)
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_METHOD,
                        "method %s is not allowed on %s; use %s", method, rq->path, allow);
    rq->has_body = rq->route == ROUTE_INFER || rq->route == ROUTE_PREDICT ||
                   rq->route == ROUTE_REPO_INDEX || rq->route == ROUTE_REPO_LOAD ||
                   rq->route == ROUTE_REPO_UNLOAD;
    return SRV_OK;
no_route:
    return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_NOT_FOUND, "no route for %s %s", method,
                    rq->path);
}

static const char *header(request *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

/* "application/json; charset=utf-8" has media type "application/json". */
static bool media_type_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    return ct && !strncasecmp(ct, type, n) && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

srv_status api_check_headers(request *rq)
{
    const char *ct = header(rq, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (rq->route == ROUTE_REPO_INDEX || rq->route == ROUTE_REPO_LOAD ||
        rq->route == ROUTE_REPO_UNLOAD) {
        const char *cl = header(rq, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > API_REPO_MAX_BODY)
            return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_TOO_LARGE,
                            "a repository request's body is at most %d bytes of JSON",
                            API_REPO_MAX_BODY);
        if (ct && !media_type_is(ct, "application/json") &&
            !media_type_is(ct, "application/x-www-form-urlencoded"))
            return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_MEDIA_TYPE,
                            "Content-Type '%.64s' is not supported here; send application/json",
                            ct);
        return SRV_OK;
    }
    if (rq->route == ROUTE_INFER) {
        const char *ihcl = header(rq, "Inference-Header-Content-Length");
        if (ihcl) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(ihcl, &end, 10);
            if (errno || end == ihcl || *end || ihcl[0] == '-' ||
                v > (unsigned long long)rq->srv->cfg.max_body_bytes)
                return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                                "Inference-Header-Content-Length '%.32s' is not a byte count "
                                "within the body limit",
                                ihcl);
            rq->header_len = (size_t)v;
        }
        /* curl -d sends application/x-www-form-urlencoded unless told otherwise; the body is
         * the same JSON, so take it rather than make every first try fail. */
        if (ct && !media_type_is(ct, "application/json") &&
            !media_type_is(ct, "application/octet-stream") &&
            !media_type_is(ct, "application/x-www-form-urlencoded"))
            return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_MEDIA_TYPE,
                            "Content-Type '%.64s' is not supported here; send application/json "
                            "(or application/octet-stream with Inference-Header-Content-Length)",
                            ct);
        return SRV_OK;
    }
    /* /predictions: one raw image, or multipart/form-data with one image per part. */
    if (ct && !strncasecmp(ct, "multipart/", 10)) {
        rq->multipart = true;
        return SRV_OK;
    }
    if (ct && strncasecmp(ct, "image/", 6) && !media_type_is(ct, "application/octet-stream") &&
        !media_type_is(ct, "application/x-www-form-urlencoded")) /* curl -T / --data-binary */
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_MEDIA_TYPE,
                        "Content-Type '%.64s' is not an image; send an image (PNG, JPEG, BMP, GIF, "
                        "PNM) or multipart/form-data",
                        ct);
    return SRV_OK;
}

/* ---- shapes ------------------------------------------------------------------------------- */

static void put_dims(text *t, const int64_t *d, int rank)
{
    text_put(t, "[");
    for (int i = 0; i < rank; i++)
        text_put(t, "%s%lld", i ? "," : "", (long long)d[i]);
    text_put(t, "]");
}

/* The model's input as a client sees it, batch first: [-1, 3, 28, 28]. */
static int model_input_dims(const spec_model *sp, int64_t *d)
{
    d[0] = -1;
    for (int i = 0; i < sp->input_rank; i++)
        d[i + 1] = sp->input_dims[i];
    return sp->input_rank + 1;
}

static void put_layers(text *t, const spec_model *sp, const spec_shape *shapes, bool params)
{
    text_put(t, "[");
    for (size_t i = 0; i < sp->n_layers; i++) {
        const spec_layer *l = &sp->layers[i];
        text_put(t, "%s{\"index\":%zu,\"op\":\"%s\",\"name\":", i ? "," : "", i,
                 spec_op_name(l->op));
        text_json_string(t, l->name, strlen(l->name));
        text_put(t, ",\"output_shape\":");
        put_dims(t, shapes[i].d, shapes[i].rank);
        if (params)
            text_put(t, ",\"parameters\":%lld", (long long)spec_layer_params(l));
        text_put(t, "}");
    }
    text_put(t, "]");
}

/* Checks an input shape against the model before anything is allocated from it, and gives the
 * output shape. Used by infer, predictions and shapes alike. */
static srv_status check_input(request *rq, const int64_t *dims, int rank, spec_shape *shapes,
                              bool check_batch)
{
    model_entry *me = rq->model;
    const spec_model *sp = engine_model_spec(me->model);
    char *err = rq->errbuf;
    size_t errlen = sizeof rq->errbuf;
    int64_t want[SPEC_MAX_RANK];
    int wrank = model_input_dims(sp, want);
    if (rank != wrank) {
        char a[API_SHAPE_TEXT] = "", b[API_SHAPE_TEXT] = "";
        spec_shape sa = {.rank = rank > SPEC_MAX_RANK ? SPEC_MAX_RANK : rank};
        spec_shape sb = {.rank = wrank};
        memcpy(sa.d, dims, (size_t)sa.rank * sizeof *dims);
        memcpy(sb.d, want, sizeof sb.d);
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "input shape %s has %d dimensions; model '%s' takes %s (-1: any size)",
                        spec_shape_format(&sa, a, sizeof a), rank, me->name,
                        spec_shape_format(&sb, b, sizeof b));
    }
    if (check_batch && dims[0] > me->max_batch)
        return srv_fail(
            err, errlen, SRV_BAD_REQUEST,
            "batch size %lld exceeds max_batch_size %d of model '%s'; split the request",
            (long long)dims[0], me->max_batch, me->name);
    if (rank == 4 && (sp->input_dims[1] < 0 || sp->input_dims[2] < 0) && dims[2] > 0 &&
        dims[3] > 0 && dims[2] > rq->srv->cfg.max_input_pixels / dims[3])
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "input height x width %lld x %lld exceeds the limit of %lld values "
                        "(--max-input-pixels)",
                        (long long)dims[2], (long long)dims[3],
                        (long long)rq->srv->cfg.max_input_pixels);
    int bad;
    return srv_status_from_engine(
        engine_model_shapes(me->model, dims, rank, shapes, &bad, err, errlen));
}

static enum MHD_Result handle_shapes(request *rq)
{
    const spec_model *sp = engine_model_spec(rq->model->model);
    const char *q = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "input");
    int64_t dims[QUERY_MAX_DIMS];
    int rank = 0;
    if (!q || !*q)
        return reply_error(rq, SRV_BAD_REQUEST,
                           "query parameter 'input' is missing; e.g. ?input=1,3,28,28");
    if (query_parse_dims(q, strlen(q), dims, QUERY_MAX_DIMS, &rank, rq->errbuf,
                         sizeof rq->errbuf) != SRV_OK)
        return reply_error(rq, SRV_BAD_REQUEST, "%s", rq->errbuf);
    spec_shape *shapes = calloc(sp->n_layers, sizeof *shapes);
    if (!shapes)
        return reply_error(rq, SRV_UNAVAILABLE, "out of memory");
    srv_status st = check_input(rq, dims, rank, shapes, false);
    if (st != SRV_OK) {
        free(shapes);
        return reply_error(rq, st, "%s", rq->errbuf);
    }
    text t = {0};
    text_put(&t, "{\"model_name\":");
    text_json_string(&t, rq->model->name, strlen(rq->model->name));
    text_put(&t, ",\"input\":");
    put_dims(&t, dims, rank);
    text_put(&t, ",\"output\":");
    put_dims(&t, shapes[sp->n_layers - 1].d, shapes[sp->n_layers - 1].rank);
    text_put(&t, ",\"layers\":");
    put_layers(&t, sp, shapes, false);
    text_put(&t, "}");
    free(shapes);
    return reply_json(rq, 200, &t);
}

/* ---- metadata ----------------------------------------------------------------------------- */

static void put_strings(text *t, char *const *v, size_t n)
{
    text_put(t, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            text_put(t, ",");
        text_json_string(t, v[i], strlen(v[i]));
    }
    text_put(t, "]");
}

static enum MHD_Result handle_model(request *rq)
{
    model_entry *me = rq->model;
    const spec_model *sp = engine_model_spec(me->model);
    int64_t in[SPEC_MAX_RANK];
    int rank = model_input_dims(sp, in);
    spec_shape *shapes = calloc(sp->n_layers, sizeof *shapes);
    if (!shapes)
        return reply_error(rq, SRV_UNAVAILABLE, "out of memory describing model '%s'", me->name);
    int bad;
    char err[256];
    srv_status st = srv_status_from_engine(
        engine_model_shapes(me->model, in, rank, shapes, &bad, err, sizeof err));
    if (st != SRV_OK) {
        free(shapes);
        /* The configured input passed every layer at load time: any failure now is ours. */
        return reply_error(rq, st == SRV_BAD_REQUEST ? SRV_INTERNAL : st,
                           "cannot describe model '%s': %s", me->name, err);
    }
    const spec_shape *out = &shapes[sp->n_layers - 1];
    text t = {0};
    text_put(&t, "{\"name\":");
    text_json_string(&t, me->name, strlen(me->name));
    text_put(&t, ",\"version\":\"%s\",\"versions\":", me->version_str);
    repository_ready_versions(rq->srv->repo, me, &t);
    text_put(&t, ",\"platform\":\"convserve_onednn\",\"inputs\":[{\"name\":");
    text_json_string(&t, sp->input_name, strlen(sp->input_name));
    text_put(&t, ",\"datatype\":\"FP32\",\"shape\":");
    put_dims(&t, in, rank);
    text_put(&t, "}],\"outputs\":[{\"name\":");
    text_json_string(&t, sp->output_name, strlen(sp->output_name));
    text_put(&t, ",\"datatype\":\"FP32\",\"shape\":");
    put_dims(&t, out->d, out->rank);
    text_put(&t, "}],\"max_batch_size\":%d,\"dynamic_batching\":{\"max_queue_delay_us\":%lld}",
             me->max_batch,
             (long long)(rq->srv->cfg.max_queue_delay_us >= 0 ? rq->srv->cfg.max_queue_delay_us
                                                              : sp->max_queue_delay_us));
    text_put(&t, ",\"precision\":\"%s\",\"parameters\":%lld,\"random_weights\":%s",
             sp->precision == SPEC_BF16 ? "bf16" : "f32", (long long)engine_model_params(me->model),
             engine_model_random_weights(me->model) ? "true" : "false");
    if (sp->labels) {
        text_put(&t, ",\"labels\":");
        put_strings(&t, sp->labels, sp->n_labels);
    }
    if (sp->preprocess.present) {
        const spec_preprocess *pp = &sp->preprocess;
        int c = (int)sp->input_dims[0] == 3 ? 3 : 1;
        text_put(&t, ",\"preprocess\":{\"color\":\"%s\",\"resize\":[%lld,%lld],\"scale\":%.9g",
                 pp->color == SPEC_COLOR_RGB ? "rgb" : "gray", (long long)pp->resize[0],
                 (long long)pp->resize[1], pp->scale);
        text_put(&t, ",\"mean\":[");
        for (int i = 0; i < c; i++)
            text_put(&t, "%s%.9g", i ? "," : "", pp->mean[i]);
        text_put(&t, "],\"std\":[");
        for (int i = 0; i < c; i++)
            text_put(&t, "%s%.9g", i ? "," : "", pp->std[i]);
        text_put(&t, "],\"invert\":%s}", pp->invert ? "true" : "false");
    }
    text_put(&t, ",\"layers\":");
    put_layers(&t, sp, shapes, true);
    text_put(&t, "}");
    free(shapes);
    return reply_json(rq, 200, &t);
}

static enum MHD_Result handle_metrics(request *rq)
{
    server *s = rq->srv;
    metrics_live *live = malloc(API_MAX_LIVE * sizeof *live);
    if (!live)
        return reply_error(rq, SRV_UNAVAILABLE, "out of memory rendering metrics");
    int nlive = repository_live(s->repo, live, API_MAX_LIVE);
    size_t len;
    metrics_budgets g = {.request_used = budget_used(&s->request_budget),
                         .request_limit = s->request_budget.limit,
                         .answer_used = budget_used(&s->answer_budget),
                         .answer_limit = s->answer_budget.limit};
    decode_pool_stats d = decode_pool_get_stats(s->decode);
    char *body = metrics_render(s->metrics, live, nlive, &g, &d, &len);
    free(live);
    if (!body)
        return reply_error(rq, SRV_UNAVAILABLE, "out of memory rendering metrics");
    return reply_raw(rq, 200, "text/plain; version=0.0.4", body, len, NULL);
}

/* ---- the repository API (Triton's model_repository extension) ----------------------------- */

/* The optional JSON body of a repository request: nothing, or an object (*out, or NULL). */
static srv_status repo_body(request *rq, json_t **out)
{
    *out = NULL;
    size_t i = 0;
    while (i < rq->len && strchr(" \t\r\n", rq->body[i]))
        i++;
    if (i == rq->len)
        return SRV_OK;
    if (rq->len > API_REPO_MAX_BODY)
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_TOO_LARGE,
                        "a repository request's body is at most %d bytes of JSON",
                        API_REPO_MAX_BODY);
    json_error_t e;
    json_t *root = json_loadb(rq->body, rq->len, JSON_REJECT_DUPLICATES, &e);
    if (!root)
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                        "invalid JSON at line %d, column %d: %s", e.line, e.column, e.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                        "the request body must be a JSON object");
    }
    *out = root;
    return SRV_OK;
}

/* {"parameters": {...}} of load and unload: convserve reads each model from its folder, so the
 * only parameter taken is unload's unload_dependents (there are no dependents to unload). */
static srv_status repo_parameters(request *rq, const json_t *body)
{
    const char *key;
    json_t *v;
    json_t *params = json_object_get(body, "parameters");
    if (!params)
        return SRV_OK;
    if (!json_is_object(params))
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                        "\"parameters\" must be an object");
    json_object_foreach(params, key, v)
    {
        if (rq->route == ROUTE_REPO_UNLOAD && !strcmp(key, "unload_dependents") &&
            json_is_boolean(v))
            continue;
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                        "parameter '%.64s' is not supported: convserve %s", key,
                        rq->route == ROUTE_REPO_LOAD
                            ? "loads model.json and its weights from the model's folder"
                            : "takes only unload_dependents (a boolean) on unload");
    }
    return SRV_OK;
}

static enum MHD_Result handle_repo_index(request *rq)
{
    json_t *body;
    srv_status st = repo_body(rq, &body);
    if (st != SRV_OK)
        return reply_error(rq, st, "%s", rq->errbuf);
    json_t *ready = body ? json_object_get(body, "ready") : NULL;
    if (ready && !json_is_boolean(ready)) {
        json_decref(body);
        return reply_error(rq, SRV_BAD_REQUEST, "\"ready\" must be true or false");
    }
    bool ready_only = ready && json_is_true(ready);
    json_decref(body);
    text t = {0};
    repository_index(rq->srv->repo, ready_only, NULL, 0, &t);
    return reply_json(rq, 200, &t);
}

/* Runs on the repository's thread when a load or unload has finished. */
static void repo_done(void *ctx, srv_status status, const char *msg)
{
    request_wake(ctx, status, msg);
}

static enum MHD_Result handle_repo_command(request *rq)
{
    json_t *body;
    srv_status st = repo_body(rq, &body);
    if (st == SRV_OK && body)
        st = repo_parameters(rq, body);
    json_decref(body);
    if (st != SRV_OK)
        return reply_error(rq, st, "%s", rq->errbuf);
    request_park(rq);
    st = repository_command(rq->srv->repo, rq->route == ROUTE_REPO_LOAD ? REPO_LOAD : REPO_UNLOAD,
                            rq->repo_name, strlen(rq->repo_name), repo_done, rq, rq->errbuf,
                            sizeof rq->errbuf);
    if (st != SRV_OK)
        request_wake(rq, st, rq->errbuf);
    return MHD_YES;
}

/* ---- inference ---------------------------------------------------------------------------- */

/* The H and W images are resized to: the model's own, or preprocess.resize for free sizes. */
static srv_status image_size(request *rq, int64_t *c, int64_t *h, int64_t *w)
{
    const spec_model *sp = engine_model_spec(rq->model->model);
    if (sp->input_rank != 3)
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                        "model '%s' takes [N,%lld] vectors, not images", rq->model->name,
                        (long long)sp->input_dims[0]);
    *c = sp->input_dims[0];
    if (*c != 1 && *c != 3)
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                        "model '%s' takes %lld channels; images give 1 (gray) or 3 (RGB)",
                        rq->model->name, (long long)*c);
    *h = sp->preprocess.present && sp->preprocess.resize[0] > 0 ? sp->preprocess.resize[0]
                                                                : sp->input_dims[1];
    *w = sp->preprocess.present && sp->preprocess.resize[1] > 0 ? sp->preprocess.resize[1]
                                                                : sp->input_dims[2];
    if (*h < 1 || *w < 1)
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                        "model '%s' accepts any height and width and has no preprocess.resize, "
                        "so images cannot be sized for it; send a tensor",
                        rq->model->name);
    return SRV_OK;
}

/* The most elements one input to the model may have: max_batch samples of its largest shape (free
 * H and W count as --max-input-pixels together). Request data past it is refused unread. */
static size_t model_max_elems(const request *rq)
{
    const spec_model *sp = engine_model_spec(rq->model->model);
    size_t per = 1;
    bool free_hw = false;
    for (int i = 0; i < sp->input_rank; i++) {
        if (sp->input_dims[i] < 0)
            free_hw = true;
        else
            per *= (size_t)sp->input_dims[i]; /* bounded by SPEC_MAX_DIM */
    }
    if (free_hw)
        per *= (size_t)rq->srv->cfg.max_input_pixels;
    return per * (size_t)rq->model->max_batch;
}

/* Checks n images against the model: how many, and the [n, C, H, W] they become. */
static srv_status images_dims(request *rq, size_t n, int64_t *dims)
{
    int64_t c = 0, h = 0, w = 0;
    srv_status st = image_size(rq, &c, &h, &w);
    if (st != SRV_OK)
        return st;
    if ((int64_t)n > rq->model->max_batch)
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                        "%zu images exceed max_batch_size %d of model '%s'; split the request", n,
                        rq->model->max_batch, rq->model->name);
    dims[0] = (int64_t)n;
    dims[1] = c;
    dims[2] = h;
    dims[3] = w;
    return SRV_OK;
}

/* Reserves n bytes of decoded input from the request budget. */
static srv_status reserve_input(request *rq, size_t n)
{
    if (request_reserve_input(rq, n))
        return SRV_OK;
    return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_UNAVAILABLE,
                    "the server holds %lld bytes of requests and this input needs %zu more than "
                    "--request-budget-bytes %lld allows; retry later",
                    (long long)budget_used(&rq->srv->request_budget), n,
                    (long long)rq->srv->request_budget.limit);
}

/* Decodes n images into rq->in as dims ([n, C, H, W], from images_dims). */
static srv_status images_to_input(request *rq, const tensor_bytes *imgs, size_t n,
                                  const int64_t *dims)
{
    size_t per = (size_t)(dims[1] * dims[2] * dims[3]);
    srv_status st = reserve_input(rq, n * per * sizeof *rq->in);
    if (st != SRV_OK)
        return st;
    rq->in = malloc(n * per * sizeof *rq->in);
    if (!rq->in)
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_UNAVAILABLE, "out of memory");
    const spec_model *sp = engine_model_spec(rq->model->model);
    for (size_t i = 0; i < n; i++) {
        char err[512];
        st = image_to_tensor(imgs[i].data, imgs[i].len, &sp->preprocess, (int)dims[1], dims[2],
                             dims[3], rq->srv->cfg.max_image_pixels, rq->in + i * per, err,
                             sizeof err);
        if (st != SRV_OK) {
            if (n > 1)
                return srv_fail(rq->errbuf, sizeof rq->errbuf, st, "image %zu of %zu: %s", i + 1, n,
                                err);
            return srv_fail(rq->errbuf, sizeof rq->errbuf, st, "%s", err);
        }
    }
    return SRV_OK;
}

/* Checks dims against the model and sizes the answer, before the input is built: the output's
 * shape and its buffer. */
static srv_status prepare(request *rq, const int64_t *dims, int rank)
{
    const spec_model *sp = engine_model_spec(rq->model->model);
    spec_shape *shapes = calloc(sp->n_layers, sizeof *shapes);
    if (!shapes)
        return srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_UNAVAILABLE, "out of memory");
    srv_status st = check_input(rq, dims, rank, shapes, true);
    if (st == SRV_OK) {
        rq->out_shape = shapes[sp->n_layers - 1];
        size_t count = 1;
        for (int i = 0; i < rq->out_shape.rank; i++)
            count *= (size_t)rq->out_shape.d[i]; /* bounded by spec_infer */
        size_t bytes = count * sizeof *rq->out;
        /* /predictions also holds one sample's probabilities and top indices while answering. */
        size_t extra = rq->route == ROUTE_PREDICT
                           ? count / (size_t)dims[0] * (sizeof *rq->prob + sizeof *rq->top_idx)
                           : 0;
        char shape[API_SHAPE_TEXT];
        /* The answer is sized before anything runs: past the limit it is refused outright, and
         * otherwise it waits its turn in the answer budget (it holds the output until it is
         * sent, and a buffer while it is serialised). */
        if (bytes > (size_t)rq->srv->cfg.max_output_bytes)
            st = srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                          "the output %s would be %zu bytes (%zu FP32 values); the limit is %lld "
                          "(--max-output-bytes)",
                          spec_shape_format(&rq->out_shape, shape, sizeof shape), bytes, count,
                          (long long)rq->srv->cfg.max_output_bytes);
        else if (!request_reserve_answer(rq, bytes + extra + API_ANSWER_OVERHEAD))
            st = srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_UNAVAILABLE,
                          "answers in flight hold %lld bytes and this one needs %zu more than "
                          "--answer-budget-bytes %lld allows; retry later",
                          (long long)budget_used(&rq->srv->answer_budget),
                          bytes + extra + API_ANSWER_OVERHEAD,
                          (long long)rq->srv->answer_budget.limit);
        else if (!(rq->out = malloc(bytes)))
            st = srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_UNAVAILABLE, "out of memory");
        rq->job.out = rq->out;
        rq->job.out_count = count;
    }
    free(shapes);
    rq->job.rank = rank;
    memcpy(rq->job.dims, dims, (size_t)rank * sizeof *dims);
    return st;
}

/* Queues the prepared job with its input (rq->job.in), which no longer needs the body. */
static enum MHD_Result queue_job(request *rq)
{
    request_drop_body(rq);
    request_submit(rq);
    return MHD_YES;
}

/* The outcome of work done on a decode thread, where request_decode() reads it. */
static void work_result(request *rq, srv_status st)
{
    if (st != SRV_OK) {
        rq->job.status = st;
        /* The answer's message is job.err; a longer one is cut (the JSON stays valid). */
        snprintf(rq->job.err, sizeof rq->job.err, "%.*s", (int)sizeof rq->job.err - 1, rq->errbuf);
    }
}

/* Parses an /infer body and checks it against the model: the input and output names, the
 * datatype, the shape (for BYTES, the images' [N, C, H, W]), and sizes the answer (prepare).
 * Everything before the data is converted. Makes no libmicrohttpd call, so that it can run on a
 * decode thread for a large body. */
static srv_status infer_check(request *rq)
{
    model_entry *me = rq->model;
    const spec_model *sp = engine_model_spec(me->model);
    infer_request *q = &rq->q;
    char *err = rq->errbuf;
    size_t errlen = sizeof rq->errbuf;
    srv_status st = infer_request_parse(rq->body ? rq->body : "", rq->len, rq->header_len,
                                        model_max_elems(rq), q, err, errlen);
    if (st != SRV_OK)
        return st;
    if (strcmp(q->input_name, sp->input_name))
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "unknown input '%s' for model '%s'; its input is '%s'", q->input_name,
                        me->name, sp->input_name);
    for (int i = 0; i < q->noutputs; i++)
        if (strcmp(q->output_names[i], sp->output_name))
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "unknown output '%s' for model '%s'; its output is '%s'",
                            q->output_names[i], me->name, sp->output_name);
    if (q->dtype == TENSOR_BYTES) {
        if (!(q->rank == 1 || (q->rank == 2 && q->shape[1] == 1)))
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "a BYTES input of images has shape [N] or [N,1]; got %d dimensions",
                            q->rank);
        int64_t dims[SPEC_MAX_RANK];
        if ((st = images_dims(rq, q->count, dims)) != SRV_OK)
            return st;
        return prepare(rq, dims, 4);
    }
    if (q->dtype == TENSOR_BOOL || q->dtype == TENSOR_FP16)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "datatype %s is not supported; send FP32 (FP64 and integer types are "
                        "converted)",
                        tensor_dtype_name(q->dtype));
    return prepare(rq, q->shape, q->rank);
}

/* Converts the checked data into the model input (rq->job.in): numbers to float32, or BYTES
 * elements decoded from base64 and then as images, each reserved from the request budget first. */
static srv_status infer_load(request *rq)
{
    infer_request *q = &rq->q;
    srv_status st;
    if ((st = reserve_input(rq, infer_request_load_bytes(q))) != SRV_OK ||
        (st = infer_request_load(q, rq->errbuf, sizeof rq->errbuf)) != SRV_OK)
        return st;
    if (q->dtype != TENSOR_BYTES) {
        rq->job.in = q->data;
        return SRV_OK;
    }
    /* prepare() kept the images' [N, C, H, W] in the job. */
    if ((st = images_to_input(rq, q->elems, q->nelems, rq->job.dims)) != SRV_OK)
        return st;
    rq->job.in = rq->in;
    return SRV_OK;
}

/* On a decode thread: a large /infer body, parsed, checked and converted there. */
static void infer_work(void *arg)
{
    request *rq = arg;
    srv_status st = infer_check(rq);
    if (st == SRV_OK)
        st = infer_load(rq);
    work_result(rq, st);
}

/* On a decode thread: a checked BYTES input, decoded there. */
static void infer_load_work(void *arg)
{
    request *rq = arg;
    work_result(rq, infer_load(rq));
}

static enum MHD_Result handle_infer(request *rq)
{
    /* Scanning and converting JSON costs about 5 us per KB: a large body is read on a decode
     * thread, and a small one here, where the thread hop would cost more than the work. */
    if (rq->len >= API_DECODE_MIN_BYTES) {
        request_decode(rq, infer_work);
        return MHD_YES;
    }
    srv_status st = infer_check(rq);
    if (st != SRV_OK)
        return reply_error(rq, st, "%s", rq->errbuf);
    /* Images cost what their pixels cost, whatever their size in bytes. */
    if (rq->q.dtype == TENSOR_BYTES) {
        request_decode(rq, infer_load_work);
        return MHD_YES;
    }
    if ((st = infer_load(rq)) != SRV_OK)
        return reply_error(rq, st, "%s", rq->errbuf);
    return queue_job(rq);
}

/* On a decode thread: the images of a /predictions request. */
static void predict_work(void *arg)
{
    request *rq = arg;
    srv_status st = images_to_input(rq, rq->imgs, rq->nimgs, rq->job.dims);
    free(rq->imgs);
    rq->imgs = NULL;
    if (st == SRV_OK)
        rq->job.in = rq->in;
    work_result(rq, st);
}

static enum MHD_Result handle_predict(request *rq)
{
    const char *top = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "top");
    rq->top = API_DEFAULT_TOP;
    if (top) {
        char *end;
        long v = strtol(top, &end, 10);
        if (end == top || *end || v < 1 || v > SPEC_MAX_LABELS)
            return reply_error(rq, SRV_BAD_REQUEST, "top '%.32s' must be a positive integer", top);
        rq->top = (int)v;
    }
    size_t max = (size_t)rq->srv->cfg.max_images;
    tensor_bytes *imgs = calloc(max, sizeof *imgs);
    if (!imgs)
        return reply_error(rq, SRV_UNAVAILABLE, "out of memory");
    size_t n = 0;
    srv_status st = SRV_OK;
    const uint8_t *body = (const uint8_t *)(rq->body ? rq->body : "");
    if (rq->multipart) {
        char boundary[MULTIPART_MAX_BOUNDARY + 1];
        multipart_part *parts = calloc(max, sizeof *parts);
        if (!parts) {
            st = srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_UNAVAILABLE, "out of memory");
        } else {
            st = multipart_boundary(header(rq, MHD_HTTP_HEADER_CONTENT_TYPE), boundary,
                                    sizeof boundary, rq->errbuf, sizeof rq->errbuf);
            if (st == SRV_OK)
                st = multipart_parse(body, rq->len, boundary, parts, max, &n, rq->errbuf,
                                     sizeof rq->errbuf);
            for (size_t i = 0; st == SRV_OK && i < n; i++) {
                if (parts[i].len == 0)
                    st = srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                                  "multipart part %zu is empty; each part must hold an image",
                                  i + 1);
                imgs[i].data = parts[i].data;
                imgs[i].len = parts[i].len;
            }
            free(parts);
        }
    } else if (rq->len == 0) {
        st = srv_fail(rq->errbuf, sizeof rq->errbuf, SRV_BAD_REQUEST,
                      "the body is empty; send an image (curl -T digit.png ...)");
    } else {
        imgs[0].data = body;
        imgs[0].len = rq->len;
        n = 1;
    }
    int64_t dims[SPEC_MAX_RANK];
    if (st == SRV_OK)
        st = images_dims(rq, n, dims);
    if (st == SRV_OK)
        st = prepare(rq, dims, 4);
    if (st != SRV_OK) {
        free(imgs);
        return reply_error(rq, st, "%s", rq->errbuf);
    }
    /* Checked and sized: the pixels are decoded on a decode thread (the images point into the
     * body, which the request keeps until then). */
    rq->imgs = imgs;
    rq->nimgs = n;
    request_decode(rq, predict_work);
    return MHD_YES;
}

enum MHD_Result api_handle(request *rq)
{
    server *s = rq->srv;
    switch (rq->route) {
    case ROUTE_HEALTH: {
        text t = {0};
        if (rq->live) {
            text_put(&t, "{\"live\":true}");
            return reply_json(rq, 200, &t);
        }
        if (!atomic_load(&s->ready))
            return reply_error(rq, SRV_UNAVAILABLE, "the server is not ready");
        text_put(&t, "{\"ready\":true}");
        return reply_json(rq, 200, &t);
    }
    case ROUTE_SERVER: {
        text t = {0};
        text_put(
            &t, "{\"name\":\"convserve\",\"version\":\"%s\",\"extensions\":%s}", CONVSERVE_VERSION,
            s->control == REPO_CONTROL_NONE ? server_extensions : server_extensions_repository);
        return reply_json(rq, 200, &t);
    }
    case ROUTE_MODEL:
        return handle_model(rq);
    case ROUTE_READY: {
        if (!atomic_load(&s->ready))
            return reply_error(rq, SRV_UNAVAILABLE, "model '%s' is not ready", rq->model->name);
        text t = {0};
        text_put(&t, "{\"name\":");
        text_json_string(&t, rq->model->name, strlen(rq->model->name));
        text_put(&t, ",\"version\":\"%s\",\"ready\":true}", rq->model->version_str);
        return reply_json(rq, 200, &t);
    }
    case ROUTE_SHAPES:
        return handle_shapes(rq);
    case ROUTE_METRICS:
        return handle_metrics(rq);
    case ROUTE_UI:
        return ui_reply(rq);
    case ROUTE_OPTIONS: {
        static const char *const cors[] = {
            "Access-Control-Allow-Methods",
            "GET, POST, PUT, OPTIONS",
            "Access-Control-Allow-Headers",
            "Content-Type, Authorization, Inference-Header-Content-Length",
            "Access-Control-Max-Age",
            "600",
            NULL};
        return reply_raw(rq, 204, NULL, NULL, 0, cors);
    }
    case ROUTE_INFER:
        /* A request that arrived before SIGTERM is in flight and is served, even if its body
         * finished arriving after it; only requests that arrive later are turned away. */
        if (!rq->arrived_ready)
            return reply_error(rq, SRV_UNAVAILABLE, "the server is not ready");
        return handle_infer(rq);
    case ROUTE_PREDICT:
        if (!rq->arrived_ready)
            return reply_error(rq, SRV_UNAVAILABLE, "the server is not ready");
        return handle_predict(rq);
    case ROUTE_REPO_INDEX:
        return handle_repo_index(rq);
    case ROUTE_REPO_LOAD:
    case ROUTE_REPO_UNLOAD:
        if (!rq->arrived_ready)
            return reply_error(rq, SRV_UNAVAILABLE, "the server is not ready");
        return handle_repo_command(rq);
    }
    return reply_error(rq, SRV_INTERNAL, "unhandled route");
}

/* ---- answers ------------------------------------------------------------------------------ */

/* Appends up to API_STEP_VALUES of the n values at v, from rq->at on, comma-separated; true when
 * the run is complete (rq->at is then back to 0). */
static bool put_values(request *rq, text *t, const float *v, size_t n)
{
    size_t stop = rq->at + API_STEP_VALUES < n ? rq->at + API_STEP_VALUES : n;
    for (size_t i = rq->at; i < stop; i++) {
        if (i)
            text_append(t, ",", 1);
        text_json_float(t, v[i]);
    }
    rq->at = stop;
    if (stop < n)
        return false;
    rq->at = 0;
    return true;
}

/* The head of an /infer answer, up to the output's data (or its binary size). */
static void put_infer_head(request *rq, text *t)
{
    model_entry *me = rq->model;
    const spec_model *sp = engine_model_spec(me->model);
    const infer_request *q = &rq->q;
    text_put(t, "{\"model_name\":");
    text_json_string(t, me->name, strlen(me->name));
    text_put(t, ",\"model_version\":\"%s\"", me->version_str);
    if (q->has_id) {
        text_put(t, ",\"id\":");
        text_json_string(t, q->id, strlen(q->id));
    }
    text_put(t, ",\"outputs\":[{\"name\":");
    text_json_string(t, sp->output_name, strlen(sp->output_name));
    text_put(t, ",\"datatype\":\"FP32\",\"shape\":");
    put_dims(t, rq->out_shape.d, rq->out_shape.rank);
    if (q->binary_output)
        text_put(t, ",\"parameters\":{\"binary_data_size\":%zu}}]",
                 rq->job.out_count * sizeof(float));
    else
        text_put(t, ",\"data\":[");
}

/* The end of an /infer answer: layer_shapes if asked for. */
static void put_infer_tail(request *rq, text *t)
{
    model_entry *me = rq->model;
    const spec_model *sp = engine_model_spec(me->model);
    if (rq->q.layer_shapes) {
        spec_shape *shapes = calloc(sp->n_layers, sizeof *shapes);
        int bad;
        char err[256];
        if (shapes && engine_model_shapes(me->model, rq->job.dims, rq->job.rank, shapes, &bad, err,
                                          sizeof err) == ENGINE_OK) {
            text_put(t, ",\"layer_shapes\":");
            put_layers(t, sp, shapes, false);
        }
        free(shapes);
    }
    text_put(t, "}");
}

enum { INFER_HEAD, INFER_VALUES, INFER_TAIL };

/* The /infer answer in JSON, a piece at a time (reply_writer). */
static bool write_infer(request *rq, text *t)
{
    switch (rq->phase) {
    case INFER_HEAD:
        put_infer_head(rq, t);
        rq->phase = INFER_VALUES;
        return true;
    case INFER_VALUES:
        if (put_values(rq, t, rq->out, rq->job.out_count)) {
            text_put(t, "]}]");
            rq->phase = INFER_TAIL;
        }
        return true;
    default:
        put_infer_tail(rq, t);
        return false;
    }
}

static enum MHD_Result finish_infer(request *rq)
{
    if (!rq->q.binary_output)
        return reply_write(rq, 200, "application/json", write_infer,
                           API_HEAD_BYTES + rq->job.out_count * API_VALUE_BYTES);
    /* Binary output: the JSON header, then the raw little-endian floats, read in place. */
    put_infer_head(rq, &rq->piece);
    put_infer_tail(rq, &rq->piece);
    if (rq->piece.failed)
        return reply_error(rq, SRV_UNAVAILABLE, "out of memory building the answer");
    char hlen[32];
    snprintf(hlen, sizeof hlen, "%zu", rq->piece.len);
    const char *headers[] = {"Inference-Header-Content-Length", hlen, NULL};
    return reply_with_output(rq, 200, "application/octet-stream", headers);
}

static int compare_desc(const void *a, const void *b, void *probs)
{
    const float *p = probs;
    float x = p[*(const int *)a], y = p[*(const int *)b];
    return x < y ? 1 : x > y ? -1 : (*(const int *)a - *(const int *)b);
}

/* Insertion of the top-k indices by probability (k is small; classes are few). */
static void top_indices(const float *p, int k, int n, int *idx)
{
    int have = 0;
    for (int i = 0; i < n; i++) {
        int pos = have < k ? have++ : k;
        if (pos == k && compare_desc(&i, &idx[k - 1], (void *)p) >= 0)
            continue;
        if (pos == k)
            pos = k - 1;
        while (pos > 0 && compare_desc(&i, &idx[pos - 1], (void *)p) < 0) {
            idx[pos] = idx[pos - 1];
            pos--;
        }
        idx[pos] = i;
    }
}

enum { PREDICT_HEAD, PREDICT_LOGITS, PREDICT_PROBS, PREDICT_TOP, PREDICT_END };

/* The /predictions answer, a piece at a time (reply_writer): per sample its logits, its
 * probabilities (softmax in double with the maximum subtracted, as torch.softmax does) and its top
 * classes. */
static bool write_predict(request *rq, text *t)
{
    model_entry *me = rq->model;
    const spec_model *sp = engine_model_spec(me->model);
    int64_t n = rq->out_shape.d[0];
    size_t per = rq->job.out_count / (size_t)n;
    const float *lg = rq->out + (size_t)rq->sample * per;
    switch (rq->phase) {
    case PREDICT_HEAD:
        text_put(t, "{\"model_name\":");
        text_json_string(t, me->name, strlen(me->name));
        text_put(t, ",\"model_version\":\"%s\"", me->version_str);
        text_put(t, ",\"input_shape\":");
        put_dims(t, rq->job.dims, rq->job.rank);
        text_put(t, ",\"output_shape\":");
        put_dims(t, rq->out_shape.d, rq->out_shape.rank);
        text_put(t, ",\"predictions\":[{\"logits\":[");
        rq->phase = PREDICT_LOGITS;
        return true;
    case PREDICT_LOGITS:
        if (!put_values(rq, t, lg, per))
            return true;
        double mx = -INFINITY, sum = 0;
        for (size_t j = 0; j < per; j++)
            mx = lg[j] > mx ? lg[j] : mx;
        for (size_t j = 0; j < per; j++)
            sum += exp((double)lg[j] - mx);
        for (size_t j = 0; j < per; j++)
            rq->prob[j] = (float)(exp((double)lg[j] - mx) / sum);
        text_put(t, "],\"probabilities\":[");
        rq->phase = PREDICT_PROBS;
        return true;
    case PREDICT_PROBS:
        if (put_values(rq, t, rq->prob, per)) {
            text_put(t, "],\"top\":[");
            rq->phase = PREDICT_TOP;
        }
        return true;
    case PREDICT_TOP: {
        int k = per < (size_t)rq->top ? (int)per : rq->top;
        int *idx = rq->top_idx;
        top_indices(rq->prob, k, (int)per, idx);
        for (int j = 0; j < k; j++) {
            text_put(t, "%s{\"index\":%d,\"label\":", j ? "," : "", idx[j]);
            if (sp->labels && (size_t)idx[j] < sp->n_labels) {
                const char *lab = sp->labels[idx[j]];
                text_json_string(t, lab, strlen(lab));
            } else {
                text_put(t, "\"%d\"", idx[j]);
            }
            text_put(t, ",\"probability\":");
            text_json_float(t, rq->prob[idx[j]]);
            text_put(t, "}");
        }
        if (++rq->sample < n) {
            text_put(t, "]},{\"logits\":[");
            rq->phase = PREDICT_LOGITS;
            return true;
        }
        text_put(t, "]}]}");
        rq->phase = PREDICT_END;
        return false;
    }
    default:
        return false;
    }
}

static enum MHD_Result finish_predict(request *rq)
{
    size_t per = rq->job.out_count / (size_t)rq->out_shape.d[0];
    /* Reserved with the answer (prepare). */
    rq->prob = malloc(per * sizeof *rq->prob);
    rq->top_idx = malloc(per * sizeof *rq->top_idx);
    if (!rq->prob || !rq->top_idx)
        return reply_error(rq, SRV_UNAVAILABLE, "out of memory");
    return reply_write(rq, 200, "application/json", write_predict,
                       API_HEAD_BYTES + rq->job.out_count * 2 * API_VALUE_BYTES +
                           (size_t)rq->out_shape.d[0] * (size_t)rq->top * API_TOP_BYTES);
}

enum MHD_Result api_finish(request *rq)
{
    if (rq->job.status != SRV_OK)
        return reply_error(rq, rq->job.status, "%s", rq->job.err);
    if (rq->route == ROUTE_REPO_LOAD || rq->route == ROUTE_REPO_UNLOAD) {
        /* The model's lines of the index, as they stand now. */
        text t = {0};
        repository_index(rq->srv->repo, false, rq->repo_name, strlen(rq->repo_name), &t);
        return reply_json(rq, 200, &t);
    }
    metrics_queue_wait(rq->srv->metrics, rq->model_index, rq->job.started_ns - rq->job.enqueued_ns);
    if (rq->route == ROUTE_INFER)
        return finish_infer(rq);
    return finish_predict(rq);
}
