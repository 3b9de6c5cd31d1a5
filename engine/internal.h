/* internal.h - what engine/model.c hands to engine/runner.c: the checked model and its weights. */
#ifndef CONVSERVE_ENGINE_INTERNAL_H
#define CONVSERVE_ENGINE_INTERNAL_H

#include "engine.h"

/* One layer's float32 tensors in PyTorch's layout, after BatchNorm folding. */
typedef struct {
    float *weight; /* Conv2d [OC, IC/G, KH, KW] (a following BatchNorm2d folded in); Linear [OUT,
                      IN] */
    float *bias;   /* [OC]; NULL when the layer has no bias and no BatchNorm was folded into it */
    float *mean, *var, *scale, *shift; /* a BatchNorm2d that runs as its own primitive, [C] each */
    bool folded;                       /* a BatchNorm2d folded into the convolution before it */
} model_layer;

struct engine_model {
    spec_model *spec;
    model_layer *layers; /* spec->n_layers entries */
    bool random_weights;
    int64_t params;
};

/* True for the layers that compute nothing at inference (Dropout, Dropout2d, Identity). */
bool model_layer_is_noop(const spec_layer *l);
/* True for the activations oneDNN can run as an eltwise primitive or a post-op. */
bool model_layer_is_eltwise(const spec_layer *l);
/* Index of the next layer after i that computes something (skips no-ops and folded BatchNorms),
 * or n_layers. */
size_t model_next_layer(const engine_model *m, size_t i);

#endif
