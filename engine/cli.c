/* cli.c - convserve-engine: check model folders and measure the engine without any HTTP. */
#include "engine.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLI_ERR 1024

static void usage(FILE *to)
{
    fprintf(to,
            "usage: convserve-engine check MODEL_DIR...\n"
            "       convserve-engine bench MODEL_DIR [--batch N] [--seconds S] [--threads T]\n"
            "\n"
            "check  loads each model folder with every load-time check, prints its layers with\n"
            "       output shapes and parameter counts, builds and runs its plans, and prints the\n"
            "       oneDNN kernels chosen. Exits 1 if any model fails.\n"
            "bench  runs the model's configured input at batch N for S seconds (default 64, 3)\n"
            "       and prints images per second and milliseconds per batch.\n");
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

/* The configured input at batch n; a free H or W takes the preprocess size, or 28. */
static int configured_input(const spec_model *s, int64_t n, int64_t *dims)
{
    enum { DEFAULT_FREE_SIZE = 28 };
    dims[0] = n;
    for (int i = 0; i < s->input_rank; i++) {
        int64_t d = s->input_dims[i];
        if (d < 0)
            d = s->preprocess.present && s->preprocess.resize[i - 1] > 0
                    ? s->preprocess.resize[i - 1]
                    : DEFAULT_FREE_SIZE;
        dims[i + 1] = d;
    }
    return s->input_rank + 1;
}

static int check_one(const char *dir)
{
    char err[CLI_ERR], buf[64], kernels[2048];
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
    int64_t dims[SPEC_MAX_RANK];
    int rank = configured_input(s, 1, dims);
    spec_shape *shapes = calloc(s->n_layers, sizeof *shapes);
    int bad;
    if (!shapes || engine_model_shapes(m, dims, rank, shapes, &bad, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "%s: %s\n", dir, err);
        goto done;
    }
    spec_shape in = {.rank = rank};
    memcpy(in.d, dims, sizeof in.d);
    printf("model %s (%s): %" PRId64 " parameters%s, input %s\n", s->name, dir,
           engine_model_params(m), engine_model_random_weights(m) ? " (random weights)" : "",
           spec_shape_format(&in, buf, sizeof buf));
    for (size_t i = 0; i < s->n_layers; i++) {
        const spec_layer *l = &s->layers[i];
        printf("  %3zu %-18s %-14s %-20s %12" PRId64 "\n", i, spec_op_name(l->op), l->name,
               spec_shape_format(&shapes[i], buf, sizeof buf), spec_layer_params(l));
    }
    if (engine_runner_create(m, 0, &r, err, sizeof err) != ENGINE_OK ||
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
    printf("  precision %s; kernels %s\n", engine_runner_precision(r) == SPEC_BF16 ? "bf16" : "f32",
           engine_runner_kernels(r, kernels, sizeof kernels));
    rc = 0;
done:
    free(x);
    free(shapes);
    engine_runner_destroy(r);
    engine_model_destroy(m);
    return rc;
}

static int bench(int argc, char **argv)
{
    const char *dir = argv[0];
    int64_t batch = 64;
    double seconds = 3.0;
    int threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--batch"))
            batch = strtoll(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--seconds"))
            seconds = strtod(argv[i + 1], NULL);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else {
            usage(stderr);
            return 2;
        }
    }
    if (batch < 1 || batch > SPEC_MAX_BATCH || !(seconds > 0)) {
        usage(stderr);
        return 2;
    }
    char err[CLI_ERR];
    engine_model *m = NULL;
    engine_runner *r = NULL;
    float *x = NULL;
    int rc = 1;
    if (engine_model_load(dir, NULL, &m, err, sizeof err) != ENGINE_OK ||
        engine_runner_create(m, threads, &r, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "%s: %s\n", dir, err);
        goto done;
    }
    int64_t dims[SPEC_MAX_RANK];
    int rank = configured_input(engine_model_spec(m), batch, dims);
    size_t count = (size_t)batch;
    for (int i = 1; i < rank; i++)
        count *= (size_t)dims[i];
    x = malloc(count * sizeof *x);
    if (!x)
        goto done;
    for (size_t i = 0; i < count; i++)
        x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;
    engine_tensor out;
    /* Warm: build the plans and touch every buffer before timing. */
    for (int i = 0; i < 3; i++)
        if (engine_runner_run(r, x, dims, rank, &out, err, sizeof err) != ENGINE_OK) {
            fprintf(stderr, "%s: %s\n", dir, err);
            goto done;
        }
    long iters = 0;
    double t0 = now_seconds(), t;
    do {
        if (engine_runner_run(r, x, dims, rank, &out, err, sizeof err) != ENGINE_OK) {
            fprintf(stderr, "%s: %s\n", dir, err);
            goto done;
        }
        iters++;
        t = now_seconds() - t0;
    } while (t < seconds);
    printf("model %s batch %" PRId64 " precision %s: %.1f img/s, %.3f ms per batch (%ld batches)\n",
           engine_model_spec(m)->name, batch,
           engine_runner_precision(r) == SPEC_BF16 ? "bf16" : "f32",
           (double)iters * (double)batch / t, t * 1e3 / (double)iters, iters);
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
