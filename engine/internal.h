/* internal.h - the checked, lowered model that engine/model.c hands to the plan builder. */
#ifndef CONVSERVE_ENGINE_INTERNAL_H
#define CONVSERVE_ENGINE_INTERNAL_H

#include "engine.h"

/* One layer's float32 tensors in PyTorch's layout, after BatchNorm folding. */
typedef struct {
    float *weight; /* Conv2d [OC, IC/G, KH, KW] (a following BatchNorm2d folded in); Linear [OUT,
                      IN] */
    float *bias;   /* [OC]; NULL when the layer has no bias and no BatchNorm was folded into it */
    float *mean, *var, *scale, *shift; /* a BatchNorm2d that runs as its own primitive, [C] each */
} model_layer;

/* What a node computes. Every layer that computes something becomes a node, unless it is folded
 * or fused into the node of the layer it reads: a BatchNorm2d into the convolution before it, an
 * activation into the convolution, linear or binary op before it (an oneDNN post-op), a residual
 * Add into the convolution that produces one of its operands (a sum post-op). */
#define NODE_KIND_MAP(XX)                                                                          \
    XX(NODE_CONV)                                                                                  \
    XX(NODE_LINEAR)                                                                                \
    XX(NODE_BNORM)                                                                                 \
    XX(NODE_ELTWISE)                                                                               \
    XX(NODE_POOL)                                                                                  \
    XX(NODE_ADAPTIVE)                                                                              \
    XX(NODE_MEAN)                                                                                  \
    XX(NODE_SOFTMAX)                                                                               \
    XX(NODE_FLATTEN)                                                                               \
    XX(NODE_ADD)                                                                                   \
    XX(NODE_MUL)                                                                                   \
    XX(NODE_CAT)

typedef enum {
#define NODE_KIND_ENUM(k) k,
    NODE_KIND_MAP(NODE_KIND_ENUM)
#undef NODE_KIND_ENUM
} node_kind;

enum {
    NODE_MAX_POST = 4, /* activations fused after one node */
    NODE_NO_SUM = -2,  /* sum_input when no residual Add is fused */
};

/* Values are node indices; SPEC_INPUT is the model input. Nodes are in execution order. */
typedef struct {
    node_kind kind;
    int layer;     /* the layer it computes */
    int out_layer; /* the last layer folded or fused into it: its output is that layer's */
    int *inputs;   /* values read (a Cat reads many) */
    int n_inputs;
    int sum_input; /* a value added to the output before the activations, or NODE_NO_SUM */
    int post[NODE_MAX_POST]; /* activation layers applied to the output, in order */
    int n_post;
    int last_use; /* the last node that reads the output; n_nodes for the model's output */
} node;

/* The reordered weights of a model, shared by all its runners (plan.c). */
typedef struct weight_store weight_store;
weight_store *weight_store_create(size_t n_layers);
void weight_store_destroy(weight_store *w);

struct engine_model {
    spec_model *spec;
    weight_store *store;
    model_layer *layers; /* spec->n_layers entries */
    bool random_weights;
    int64_t params;
    node *nodes;
    int n_nodes;
    int *layer_value; /* per layer: the value that holds its output */
};

/* Node kind names, for messages and the engine's check command. */
const char *model_node_kind_name(node_kind k);

#endif
