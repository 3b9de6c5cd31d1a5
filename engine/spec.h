/* spec.h - model.json in memory: the architecture (a graph of layers in execution order) and the
 * serving settings of one model, and the shape inference that runs the notebook's output-size
 * formula through its layers. No weights, no oneDNN. spec.c reads model.json; shapes.c infers.
 *
 * Usage:
 *     spec_model *m;
 *     char err[512];
 *     if (spec_parse(json_bytes, json_len, &m, err, sizeof err) != ENGINE_OK) { report(err); }
 *     spec_shape shapes[m->n_layers];
 *     int64_t in[4] = {16, 3, 28, 28};
 *     int bad = -1;
 *     if (spec_infer(m, in, 4, shapes, &bad, err, sizeof err) != ENGINE_OK) { ...layer `bad`... }
 *     spec_destroy(m);
 *
 * spec_parse() takes a byte view (no NUL terminator needed) and never reads past it; it is a fuzz
 * target. Every field of DESIGN.md section 2 is accepted; PyTorch's defaults fill what is omitted.
 */
#ifndef CONVSERVE_SPEC_H
#define CONVSERVE_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Bounds on what a model.json may declare. They keep every later size computation far from
 * overflow and every allocation small; real small CNNs are orders of magnitude inside them. */
enum {
    SPEC_MAX_LAYERS = 4096, /* densenet201 lowers to about 1,400 */
    SPEC_MAX_INPUTS = 1024, /* references of one layer (a DenseNet Cat reads every earlier block) */
    SPEC_MAX_REFS = 1 << 16,  /* references of all layers together */
    SPEC_MAX_NAME = 128,      /* bytes of a layer or model name, NUL included */
    SPEC_MAX_LABELS = 100000, /* entries of output.labels */
    SPEC_MAX_LABEL_LEN = 256, /* bytes of one label, NUL included */
    SPEC_MAX_DIM = 1 << 20,   /* any channel, feature, kernel, stride, padding or dilation value */
    SPEC_MAX_BATCH = 4096,    /* max_batch_size */
    SPEC_MAX_JSON = 4 << 20,  /* bytes of model.json */
    SPEC_MAX_INSTANCES = 64,  /* inference workers of one model */
    SPEC_MAX_THREADS = 1024,  /* OpenMP threads of one worker */
    SPEC_MAX_RANK = 4,        /* tensors are [N, C, H, W] or [N, F] */
};

/* The PyTorch class names this engine knows, in one table: enum value and model.json "op". */
#define SPEC_OP_MAP(XX)                                                                            \
    XX(SPEC_CONV2D, "Conv2d")                                                                      \
    XX(SPEC_BATCHNORM2D, "BatchNorm2d")                                                            \
    XX(SPEC_LINEAR, "Linear")                                                                      \
    XX(SPEC_FLATTEN, "Flatten")                                                                    \
    XX(SPEC_RELU, "ReLU")                                                                          \
    XX(SPEC_LEAKYRELU, "LeakyReLU")                                                                \
    XX(SPEC_SIGMOID, "Sigmoid")                                                                    \
    XX(SPEC_TANH, "Tanh")                                                                          \
    XX(SPEC_GELU, "GELU")                                                                          \
    XX(SPEC_SOFTMAX, "Softmax")                                                                    \
    XX(SPEC_LOGSOFTMAX, "LogSoftmax")                                                              \
    XX(SPEC_MAXPOOL2D, "MaxPool2d")                                                                \
    XX(SPEC_AVGPOOL2D, "AvgPool2d")                                                                \
    XX(SPEC_ADAPTIVEAVGPOOL2D, "AdaptiveAvgPool2d")                                                \
    XX(SPEC_DROPOUT, "Dropout")                                                                    \
    XX(SPEC_DROPOUT2D, "Dropout2d")                                                                \
    XX(SPEC_IDENTITY, "Identity")                                                                  \
    XX(SPEC_RELU6, "ReLU6")                                                                        \
    XX(SPEC_HARDSWISH, "Hardswish")                                                                \
    XX(SPEC_HARDSIGMOID, "Hardsigmoid")                                                            \
    XX(SPEC_SILU, "SiLU")                                                                          \
    XX(SPEC_STOCHASTICDEPTH, "StochasticDepth")                                                    \
    XX(SPEC_ADD, "Add")                                                                            \
    XX(SPEC_MUL, "Mul")                                                                            \
    XX(SPEC_CAT, "Cat")                                                                            \
    XX(SPEC_MEAN, "Mean")

typedef enum {
#define SPEC_OP_ENUM(e, s) e,
    SPEC_OP_MAP(SPEC_OP_ENUM)
#undef SPEC_OP_ENUM
        SPEC_OP_COUNT
} spec_op;

const char *spec_op_name(spec_op op);
/* What an op is, in one place: layers with state_dict tensors; layers that compute nothing at
 * inference (Dropout, Dropout2d, Identity, StochasticDepth); element-wise activations; how many
 * inputs it takes. */
bool spec_op_has_weights(spec_op op);
bool spec_op_is_noop(spec_op op);
bool spec_op_is_activation(spec_op op);
int spec_op_min_inputs(spec_op op);
int spec_op_max_inputs(spec_op op);

typedef enum { SPEC_PAD_NUMBERS, SPEC_PAD_SAME, SPEC_PAD_VALID } spec_pad_mode;
typedef enum { SPEC_F32, SPEC_BF16 } spec_precision;
typedef enum { SPEC_COLOR_NONE, SPEC_COLOR_GRAY, SPEC_COLOR_RGB } spec_color;

/* The model input, where a layer's input index would name a layer. */
#define SPEC_INPUT (-1)

/* One layer. Only the fields of its op are meaningful; the rest stay zero. Pairs are {H, W}. */
typedef struct {
    spec_op op;
    char name[SPEC_MAX_NAME]; /* state_dict prefix ("conv.0"); "" for parameterless layers */
    char id[SPEC_MAX_NAME];   /* "id" in model.json, or "" */

    /* What the layer reads, resolved: SPEC_INPUT or the index of an earlier layer. Without
     * "inputs" in model.json this is the previous layer (the model input for layer 0). */
    int *inputs;
    int n_inputs;
    bool inputs_given; /* "inputs" was written in model.json */

    /* Conv2d */
    int64_t in_channels, out_channels;
    int64_t kernel[2], stride[2], padding[2], dilation[2];
    spec_pad_mode pad_mode; /* "same" / "valid" strings, or numbers in padding[] */
    int64_t groups;
    bool bias; /* Conv2d and Linear */

    /* BatchNorm2d */
    int64_t num_features;
    double eps;
    bool affine;

    /* Linear */
    int64_t in_features, out_features;

    /* Flatten: stored normalised; only start_dim 1 through the last dim is supported */
    int start_dim, end_dim;

    /* LeakyReLU */
    double negative_slope;
    /* GELU: approximate "none" (erf) or "tanh" */
    bool gelu_tanh;
    /* Softmax / LogSoftmax / Cat: stored as given (normalised by shape inference) */
    int dim;
    /* Mean: the two reduced dims as given (spatial, checked by shape inference), keepdim */
    int mean_dims[2];
    bool keepdim;

    /* MaxPool2d / AvgPool2d (kernel, stride, padding, dilation above); stride defaults to kernel */
    bool ceil_mode, count_include_pad;
    /* AdaptiveAvgPool2d */
    int64_t output_size[2];
} spec_layer;

typedef struct {
    bool present;
    spec_color color;
    int64_t resize[2]; /* {H, W}; {0, 0} = the model's input H and W */
    double scale;      /* applied to 0..255 pixel values first */
    double mean[3], std[3];
    bool invert; /* x -> 255 - x before scaling, for dark-on-light digits */
} spec_preprocess;

typedef struct {
    char name[SPEC_MAX_NAME];
    char *weights; /* file name relative to the model folder; NULL = PyTorch-style random init */
    uint64_t seed; /* for random init; "seed" in model.json, default 0 */

    char input_name[SPEC_MAX_NAME];
    int input_rank;        /* rank of one sample: 3 (C, H, W) or 1 (F) */
    int64_t input_dims[3]; /* -1 = any size (only H and W may be free) */

    char output_name[SPEC_MAX_NAME];
    char **labels; /* n_labels strings, or NULL */
    size_t n_labels;

    int max_batch_size;         /* default 32 */
    int64_t max_queue_delay_us; /* default 0: run what is waiting at once */
    spec_preprocess preprocess;
    spec_precision precision;
    int instances; /* inference workers; 0 = the server's default */
    int threads;   /* OpenMP threads of each; 0 = the server's default */

    spec_layer *layers;
    size_t n_layers;
    /* How many later layers read each layer's output (the last layer's count includes the model
     * output); spec_parse refuses a model where a layer other than the last has none. */
    int *consumers;
} spec_model;

/* Parses model.json from a byte view. On error *out is NULL and err says which field is wrong,
 * e.g. "layer 3 Conv2d 'conv.3': kernel_size must be a positive integer or a pair, got -1", or
 * which reference of the graph is wrong ("layer 9 Add 'add': input 'pool2' names no layer"). */
engine_status spec_parse(const char *json, size_t len, spec_model **out, char *err, size_t errlen);
void spec_destroy(spec_model *m);

/* A tensor shape, batch first: rank 4 [N, C, H, W] or rank 2 [N, F]. A -1 means "not known yet"
 * (a free H or W at load time); it propagates through the formula. */
typedef struct {
    int rank;
    int64_t d[SPEC_MAX_RANK];
} spec_shape;

/* Per-layer padding actually applied, after resolving "same"/"valid" and ceil_mode. */
typedef struct {
    int64_t pad_l[2], pad_r[2];
} spec_padding;

/* Runs shape inference for an input of `rank` dims (batch first). Fills out[i] with layer i's
 * output shape (and pads[i], if pads is not NULL); `out` may be NULL when only the verdict is
 * wanted. On failure returns ENGINE_E_INPUT (the input
 * does not fit) and sets *bad_layer to the index of the first layer that breaks (-1 if the input
 * itself is wrong), with a message such as "layer 7 Linear 'fc.0' expects 36864 features, input
 * [1,3,30,30] gives 43264". Dims of -1 in `in` are treated as unknown: checks that depend on them
 * are skipped, so the load-time check of a model with a free H or W covers what does not depend on
 * H and W. */
engine_status spec_infer(const spec_model *m, const int64_t *in, int rank, spec_shape *out,
                         spec_padding *pads, int *bad_layer, char *err, size_t errlen);

/* Formats a shape as "[1,3,28,28]" into buf; returns buf. */
char *spec_shape_format(const spec_shape *s, char *buf, size_t len);
/* The same for plain dims. */
char *spec_dims_format(const int64_t *d, int rank, char *buf, size_t len);

/* Bytes of a label: "layer 4095 AdaptiveAvgPool2d '<127-byte name>'" and a NUL. */
enum { SPEC_LABEL_LEN = 192 };
/* How every message names a layer: "layer 7 Linear 'fc.0'", "layer 9 Add 'add_1'" (its name, else
 * its id), "layer 2 ReLU". Returns buf. */
char *spec_layer_label(const spec_model *m, size_t i, char *buf, size_t len);

/* Parameter count of a layer as PyTorch counts it (weights + biases + BN affine; not running
 * stats). */
int64_t spec_layer_params(const spec_layer *l);

#endif
