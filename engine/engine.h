/* engine.h - convserve's inference engine: load a model folder, check it, run batches on oneDNN.
 *
 * A model is loaded once and is read-only afterwards, so any thread may query it. Running it needs
 * a runner, which holds the oneDNN primitives, reordered weights and activation buffers. oneDNN's
 * Debian build keeps scratchpads in thread-local storage, so a primitive must run on the thread
 * that created it: a runner belongs to the thread that created it, and the engine checks that it is
 * only used there (using it from another thread is a bug and aborts).
 *
 *     char err[512];
 *     engine_model *m;
 *     if (engine_model_load("config/models/cnn_bn", NULL, &m, err, sizeof err) != ENGINE_OK)
 *         die(err);                  // names the model, the layer and what was wrong
 *
 *     // on the inference thread:
 *     engine_runner *r;
 *     engine_runner_options o = {.threads = 2};
 *     engine_runner_create(m, &o, &r, err, sizeof err);
 *     engine_runner_warmup(r, err, sizeof err);  // plans and times every batch size
 *     int64_t in_dims[4] = {16, 3, 28, 28};
 *     engine_tensor out;
 *     engine_runner_run(r, input, in_dims, 4, &out, err, sizeof err);  // out.data: [16, 10]
 *     engine_runner_destroy(r);
 *     engine_model_destroy(m);
 *
 * Nothing here prints, and nothing a model file or an input can contain makes it abort.
 */
#ifndef CONVSERVE_ENGINE_H
#define CONVSERVE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spec.h"
#include "status.h"

typedef struct engine_model engine_model;
typedef struct engine_runner engine_runner;

typedef struct {
    /* Warnings found while loading (an unused tensor in the weights file, a reference kernel) are
     * passed here, one sentence each; NULL drops them. The engine never prints. */
    void (*warn)(void *ctx, const char *message);
    void *warn_ctx;
} engine_load_options;

/* Reads <dir>/model.json and its weights, checks every tensor and the layer graph against the
 * configured input, folds BatchNorm into the convolution before it, and keeps float32 weights. */
engine_status engine_model_load(const char *dir, const engine_load_options *opts,
                                engine_model **out, char *err, size_t errlen);
/* The same from bytes in memory (model.json and the safetensors file, which may be NULL when the
 * model has no "weights"); the weights buffer need not outlive the call. */
engine_status engine_model_load_mem(const char *json, size_t json_len, const uint8_t *weights,
                                    size_t weights_len, const engine_load_options *opts,
                                    engine_model **out, char *err, size_t errlen);
void engine_model_destroy(engine_model *m);

const spec_model *engine_model_spec(const engine_model *m);
/* True when the weights were initialised at random (no "weights" in model.json). */
bool engine_model_random_weights(const engine_model *m);
/* Total parameter count, as sum(p.numel() for p in model.parameters()). */
int64_t engine_model_params(const engine_model *m);

/* Shape inference for an input of `rank` dims, batch first (see spec_infer). */
engine_status engine_model_shapes(const engine_model *m, const int64_t *in, int rank,
                                  spec_shape *per_layer, int *bad_layer, char *err, size_t errlen);

typedef struct {
    float *data; /* owned by the runner, valid until its next run */
    int rank;
    int64_t dims[SPEC_MAX_RANK];
    size_t count;
} engine_tensor;

/* The plans of a runner (their primitives, and the activations and scratch space of the largest)
 * stay within this many bytes unless its options say otherwise. */
#define ENGINE_DEFAULT_CACHE_BYTES ((size_t)2 << 30)

typedef struct {
    int threads;        /* OpenMP team size of its primitives; 0 = OMP_NUM_THREADS or one per CPU */
    int max_batch;      /* the largest batch it plans for; 0 = the model's max_batch_size */
    size_t cache_bytes; /* budget of its plans; 0 = ENGINE_DEFAULT_CACHE_BYTES. An input whose
                           plan alone exceeds it is refused with ENGINE_E_LIMIT. */
} engine_runner_options;

/* Creates a runner owned by the calling thread; `o` may be NULL for the defaults. */
engine_status engine_runner_create(const engine_model *m, const engine_runner_options *o,
                                   engine_runner **out, char *err, size_t errlen);
void engine_runner_destroy(engine_runner *r);

/* Builds the plans for the configured input shape at every batch size it keeps plans for (1, 2, 3,
 * 4, 6, 8, 12, ... up to max_batch_size) and times each, so the first request pays no JIT cost and
 * batches are split by measured cost. A model whose H or W is free warms up the preprocess resize
 * size if it has one, and otherwise nothing. */
engine_status engine_runner_warmup(engine_runner *r, char *err, size_t errlen);

/* Runs a batch: `in` is float32 row-major [N, C, H, W] (or [N, F]). Any N >= 1 works: it runs as
 * the cheapest cover of N by the planned batch sizes (splitting, or padding the last one). Returns
 * ENGINE_E_INPUT with a precise message when the shape does not fit the model, ENGINE_E_LIMIT when
 * it needs more memory than the runner's budget. */
engine_status engine_runner_run(engine_runner *r, const float *in, const int64_t *dims, int rank,
                                engine_tensor *out, char *err, size_t errlen);
/* The same, writing the output into the caller's `dst` of `capacity` floats (out->data is dst):
 * no copy, and no buffer of the output's size left in the runner. */
engine_status engine_runner_run_into(engine_runner *r, const float *in, const int64_t *dims,
                                     int rank, float *dst, size_t capacity, engine_tensor *out,
                                     char *err, size_t errlen);

/* The expected time in nanoseconds of a batch of n at input height h and width w (0 for [N, F]
 * inputs), from the run times measured so far (the warm-up's for the configured shape). */
double engine_runner_batch_ns(engine_runner *r, int64_t n, int64_t h, int64_t w);

typedef struct {
    size_t weight_bytes;     /* reordered weights */
    size_t arena_bytes;      /* activations and scratch space held now */
    size_t primitive_bytes;  /* what the cached plans' primitives hold */
    size_t plans;            /* cached plans */
    size_t last_arena_bytes; /* the last plan run: activations with buffers reused by lifetime */
    size_t last_unplanned_bytes; /* ... and what they would take without reuse */
} engine_runner_usage_info;

/* Memory the runner holds, for logs, metrics and benchmarks. */
void engine_runner_usage(const engine_runner *r, engine_runner_usage_info *u);

/* Whether oneDNN runs bf16 convolutions on this CPU (AVX-512 or better; natively with
 * AVX512-BF16 or AMX). Without it a bf16 model falls back to f32. */
bool engine_bf16_supported(void);

/* The precision actually used: SPEC_BF16 only when the model asks for it and the CPU runs it. */
spec_precision engine_runner_precision(const engine_runner *r);

/* True when some primitive of the plans built so far runs oneDNN's reference (slow, "ref:") code:
 * a lowering bug or an unsupported combination, which the server reports at load time. */
bool engine_runner_uses_reference(const engine_runner *r);

/* The oneDNN implementation of each primitive in the most recent plan, e.g. "brgconv:avx512_core",
 * joined by commas into buf (for logs and the load-time check that no reference kernel is used). */
const char *engine_runner_kernels(const engine_runner *r, char *buf, size_t len);

#endif
