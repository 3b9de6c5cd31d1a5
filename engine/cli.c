/* cli.c - convserve-engine: check model folders and measure the engine without any HTTP. */
#include "engine.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLI_ERR     1024
#define MB          (1024.0 * 1024.0)
#define MAX_SECONDS 3600.0

static void usage(FILE *to)
{
    fprintf(to,
            "usage: convserve-engine check MODEL_DIR...\n"
            "       convserve-engine bench MODEL_DIR [--batch N | --sweep A-B] [--seconds S]\n"
            "                              [--threads T] [--size H,W]\n"
            "\n"
            "check  loads each model folder with every load-time check, prints its layers with\n"
            "       their inputs, output shapes and parameter counts, builds and runs its plans,\n"
            "       and prints the oneDNN kernels chosen and the memory the plans use. Exits 1 if\n"
            "       any model fails.\n"
            "bench  runs the model's configured input (or H x W) at batch N for S seconds\n"
            "       (default 64, 3) and prints images per second and milliseconds per batch;\n"
            "       with --sweep, every batch size from A to B, one line each.\n");
}

static void warn_to_stderr(void *ctx, const char *message)
{
    (void)ctx;
    fprintf(stderr, "warning: %s\n", message);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A whole decimal number within [lo, hi], or false. */
static bool parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* The configured input at batch n; a free H or W takes `size`, else the preprocess size, or 28. */
static int configured_input(const spec_model *s, int64_t n, const int64_t size[2], int64_t *dims)
{
    enum { DEFAULT_FREE_SIZE = 28 };
    dims[0] = n;
    for (int i = 0; i < s->input_rank; i++) {
        int64_t d = s->input_dims[i];
        if (i > 0 && size[i - 1] > 0)
            d = size[i - 1];
        else if (d < 0)
            d = s->preprocess.present && s->preprocess.resize[i - 1] > 0
                    ? s->preprocess.resize[i - 1]
                    : DEFAULT_FREE_SIZE;
        dims[i + 1] = d;
    }
    return s->input_rank + 1;
}

/* "3, 6" or "input": what a layer reads, for the layer table. */
static const char *inputs_text(const spec_layer *l, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int k = 0; k < l->n_inputs && o < len; k++) {
        int n = l->inputs[k] == SPEC_INPUT
                    ? snprintf(buf + o, len - o, "%sinput", k ? "," : "")
                    : snprintf(buf + o, len - o, "%s%d", k ? "," : "", l->inputs[k]);
        if (n < 0)
            break;
        o += (size_t)n;
    }
    if (o >= len && len > 4)
        memcpy(buf + len - 4, "...", 4);
    return buf;
}

static int check_one(const char *dir)
{
    char err[CLI_ERR], buf[64], from[48], kernels[4096];
    engine_load_options opts = {.warn = warn_to_stderr};
    engine_model *m = NULL;
    engine_runner *r = NULL;
    float *x = NULL;
    int rc = 1;
    if (engine_model_load(dir, &opts, &m, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "%s: %s\n", dir, err);
        return 1;
    }
    const spec_model *s = engine_model_spec(m);
    int64_t dims[SPEC_MAX_RANK], none[2] = {0, 0};
    int rank = configured_input(s, 1, none, dims);
    spec_shape *shapes = calloc(s->n_layers, sizeof *shapes);
    int bad;
    if (!shapes || engine_model_shapes(m, dims, rank, shapes, &bad, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "%s: %s\n", dir, err);
        goto done;
    }
    printf("model %s (%s): %" PRId64 " parameters%s, input %s\n", s->name, dir,
           engine_model_params(m), engine_model_random_weights(m) ? " (random weights)" : "",
           spec_dims_format(dims, rank, buf, sizeof buf));
    for (size_t i = 0; i < s->n_layers; i++) {
        const spec_layer *l = &s->layers[i];
        const char *who = l->name[0] ? l->name : l->id;
        printf("  %4zu %-18s %-22s %-12s %-20s %12" PRId64 "\n", i, spec_op_name(l->op), who,
               inputs_text(l, from, sizeof from), spec_shape_format(&shapes[i], buf, sizeof buf),
               spec_layer_params(l));
    }
    if (engine_runner_create(m, NULL, &r, err, sizeof err) != ENGINE_OK ||
        engine_runner_warmup(r, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "%s: %s\n", dir, err);
        goto done;
    }
    /* Run the configured shape once, so that free-size models are exercised too. */
    size_t count = 1;
    for (int i = 1; i < rank; i++)
        count *= (size_t)dims[i];
    x = calloc(count, sizeof *x);
    engine_tensor out;
    if (!x || engine_runner_run(r, x, dims, rank, &out, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "%s: %s\n", dir, err);
        goto done;
    }
    engine_runner_usage_info u;
    engine_runner_usage(r, &u);
    double outputs = 0; /* every layer's output at batch 1, float32: memory without any reuse */
    for (size_t i = 0; i < s->n_layers; i++) {
        double e = 4;
        for (int k = 0; k < shapes[i].rank; k++)
            e *= (double)shapes[i].d[k];
        outputs += e;
    }
    printf("  precision %s; kernels %s\n", engine_runner_precision(r) == SPEC_BF16 ? "bf16" : "f32",
           engine_runner_kernels(r, kernels, sizeof kernels));
    printf("  memory at batch 1: activations and scratch %.2f MB, buffers planned by lifetime "
           "(%.2f MB without reuse; every layer's output together %.2f MB); weights %.2f MB; "
           "%zu plans\n",
           (double)u.last_arena_bytes / MB, (double)u.last_unplanned_bytes / MB, outputs / MB,
           (double)u.weight_bytes / MB, u.plans);
    if (engine_runner_uses_reference(r))
        printf("  warning: a primitive runs oneDNN's reference (slow) code\n");
    rc = 0;
done:
    free(x);
    free(shapes);
    engine_runner_destroy(r);
    engine_model_destroy(m);
    return rc;
}

/* Runs batch n repeatedly for `seconds`; returns seconds per batch, or a negative value. */
static double time_batch(engine_runner *r, const spec_model *s, int64_t n, const int64_t size[2],
                         double seconds, const float *x, char *err, size_t errlen)
{
    int64_t dims[SPEC_MAX_RANK];
    int rank = configured_input(s, n, size, dims);
    engine_tensor out;
    /* Warm: build the plans and touch every buffer before timing. */
    for (int i = 0; i < 3; i++)
        if (engine_runner_run(r, x, dims, rank, &out, err, errlen) != ENGINE_OK)
            return -1;
    long iters = 0;
    double t0 = now_seconds(), t;
    do {
        if (engine_runner_run(r, x, dims, rank, &out, err, errlen) != ENGINE_OK)
            return -1;
        iters++;
        t = now_seconds() - t0;
    } while (t < seconds);
    return t / (double)iters;
}

static int bench(int argc, char **argv)
{
    const char *dir = argv[0];
    long long batch = 64, from = 0, to = 0, threads = 0;
    int64_t size[2] = {0, 0};
    double seconds = 3.0;
    for (int i = 1; i < argc; i += 2) {
        const char *flag = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (ok && !strcmp(flag, "--batch")) {
            ok = parse_int(v, 1, SPEC_MAX_BATCH, &batch);
        } else if (ok && !strcmp(flag, "--sweep")) {
            char a[24] = "", b[24] = "";
            ok = sscanf(v, "%23[0-9]-%23[0-9]", a, b) == 2 &&
                 parse_int(a, 1, SPEC_MAX_BATCH, &from) && parse_int(b, from, SPEC_MAX_BATCH, &to);
        } else if (ok && !strcmp(flag, "--seconds")) {
            char *end;
            seconds = strtod(v, &end);
            ok = end != v && !*end && seconds > 0 && seconds <= MAX_SECONDS;
        } else if (ok && !strcmp(flag, "--threads")) {
            ok = parse_int(v, 0, 1024, &threads);
        } else if (ok && !strcmp(flag, "--size")) {
            long long h, w;
            char a[24] = "", b[24] = "";
            ok = sscanf(v, "%23[0-9],%23[0-9]", a, b) == 2 && parse_int(a, 1, SPEC_MAX_DIM, &h) &&
                 parse_int(b, 1, SPEC_MAX_DIM, &w);
            size[0] = ok ? h : 0;
            size[1] = ok ? w : 0;
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "convserve-engine bench: bad or missing value for %s\n", flag);
            usage(stderr);
            return 2;
        }
    }
    char err[CLI_ERR];
    engine_model *m = NULL;
    engine_runner *r = NULL;
    float *x = NULL;
    int rc = 1;
    engine_runner_options o = {.threads = (int)threads};
    if (engine_model_load(dir, NULL, &m, err, sizeof err) != ENGINE_OK ||
        engine_runner_create(m, &o, &r, err, sizeof err) != ENGINE_OK ||
        engine_runner_warmup(r, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "%s: %s\n", dir, err);
        goto done;
    }
    const spec_model *s = engine_model_spec(m);
    int64_t most = to > batch ? to : batch, dims[SPEC_MAX_RANK];
    int rank = configured_input(s, most, size, dims);
    size_t count = 1;
    for (int i = 0; i < rank; i++)
        count *= (size_t)dims[i];
    x = malloc(count * sizeof *x);
    if (!x)
        goto done;
    for (size_t i = 0; i < count; i++)
        x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;
    const char *prec = engine_runner_precision(r) == SPEC_BF16 ? "bf16" : "f32";
    if (from > 0) {
        printf("model %s precision %s: batch, ms per batch, img/s\n", s->name, prec);
        for (long long n = from; n <= to; n++) {
            double t = time_batch(r, s, n, size, seconds, x, err, sizeof err);
            if (t < 0) {
                fprintf(stderr, "%s: %s\n", dir, err);
                goto done;
            }
            printf("%lld %.3f %.1f\n", n, t * 1e3, (double)n / t);
            fflush(stdout);
        }
        rc = 0;
        goto done;
    }
    double t = time_batch(r, s, batch, size, seconds, x, err, sizeof err);
    if (t < 0) {
        fprintf(stderr, "%s: %s\n", dir, err);
        goto done;
    }
    printf("model %s batch %lld precision %s: %.1f img/s, %.3f ms per batch\n", s->name, batch,
           prec, (double)batch / t, t * 1e3);
    rc = 0;
done:
    free(x);
    engine_runner_destroy(r);
    engine_model_destroy(m);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "check")) {
        int rc = 0;
        for (int i = 2; i < argc; i++)
            rc |= check_one(argv[i]);
        return rc;
    }
    if (argc >= 3 && !strcmp(argv[1], "bench"))
        return bench(argc - 2, argv + 2);
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
