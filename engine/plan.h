/* plan.h - what the plan builder (plan.c) and the runner (runner.c) share: a plan is everything
 * needed to run one exact input shape (oneDNN primitives, their memories and a buffer plan), and
 * the runner state plans draw on (engine, stream, reordered weights, the activation arena).
 * Engine-private; nothing outside engine/ includes it.
 */
#ifndef CONVSERVE_ENGINE_PLAN_H
#define CONVSERVE_ENGINE_PLAN_H

#include "internal.h"

#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>

enum {
    PLAN_KERNELS = 1024,   /* bytes of the kernel list kept per plan */
    PLAN_KERNEL_DIMS = 14, /* parameters of a plain C kernel step */
    PLAN_SLOT_IN = -1,     /* a memory over the caller's input buffer */
    PLAN_SLOT_OUT = -2,    /* a memory over the caller's output buffer */
    RUNNER_MAX_BUCKETS = 32,
};

typedef struct plan_step plan_step;

/* A step is a oneDNN primitive, or a plain C kernel over float32 NCHW memories (for what oneDNN
 * has no primitive for, such as adaptive pooling with uneven windows). */
struct plan_step {
    dnnl_primitive_t prim;
    void (*kernel)(const plan_step *step);
    dnnl_exec_arg_t *args;
    int nargs;
    int64_t dims[PLAN_KERNEL_DIMS];
};

/* Where a memory object's bytes live: a slot of the arena (at the slot's planned offset plus
 * `offset`, for views), or the caller's input or output buffer. */
typedef struct {
    dnnl_memory_t mem;
    int slot;
    size_t offset;
} plan_binding;

typedef struct plan {
    int64_t n, h, w; /* the exact input shape; h = w = 0 for [N, F] inputs */
    spec_precision precision;
    uint64_t last_used;
    plan_step *steps;
    size_t nsteps;
    plan_binding *binds; /* every memory object the plan owns */
    size_t nbinds;
    size_t *slot_offset; /* planned byte offset of each arena slot */
    size_t nslots;
    size_t arena_bytes;     /* activations and scratchpads, with buffers reused by lifetime */
    size_t unplanned_bytes; /* the same without reuse: the sum of every buffer */
    size_t primitive_bytes; /* what the primitives hold themselves (JIT code, constants) */
    uint64_t arena_gen;     /* the runner arena the handles point into */
    spec_shape out_shape;
    char kernels[PLAN_KERNELS];
    bool reference; /* a primitive runs a "ref:" kernel */
    double cost_ns; /* measured time of one run, 0 until measured */
} plan;

/* One reordered copy of a layer's weights in a layout some primitive asked for. */
typedef struct {
    dnnl_memory_desc_t md;
    dnnl_memory_t mem;
} weight_entry;

typedef struct {
    weight_entry *w;
    size_t nw;
    dnnl_memory_t bias, mean, var, scale, shift; /* f32 [C] views of the model's arrays */
} layer_cache;

/* Weights are read-only once reordered, so every runner of a model shares them (and the oneDNN
 * engine they were made on); the lock covers finding or making one. */
struct weight_store {
    pthread_mutex_t mu;
    dnnl_engine_t eng;
    layer_cache *lc; /* per layer */
    size_t n_layers;
    size_t bytes;
};

/* The store's engine, created on first use. */
dnnl_status_t weight_store_engine(weight_store *w, dnnl_engine_t *out);

struct engine_runner {
    const engine_model *m;
    pthread_t owner;
    dnnl_engine_t eng; /* the store's */
    dnnl_stream_t strm;
    spec_precision precision;
    int threads;
    size_t cache_bytes;  /* budget for the plans: their primitives and the arena */
    weight_store *store; /* the model's, shared */
    plan **plans;
    size_t nplans, capplans;
    uint64_t tick;
    /* The arena holds the activations of whichever plan runs: one plan runs at a time. */
    unsigned char *arena;
    size_t arena_size;
    size_t arena_keep; /* what the warm-up shapes need: kept between runs */
    uint64_t arena_gen;
    int64_t buckets[RUNNER_MAX_BUCKETS];
    int nbuckets;
    /* Padded batches are copied through these. */
    float *pad_in, *pad_out;
    size_t pad_in_cap, pad_out_cap;
    float *out_buf;
    size_t out_cap;
    const plan *last;
    bool reference;
};

/* Builds the plan for input [n, C, h, w] (or [n, F]) at the given precision. */
engine_status plan_build(engine_runner *r, int64_t n, int64_t h, int64_t w, spec_precision prec,
                         plan **out, char *err, size_t errlen);
void plan_destroy(plan *p);

#endif
