/* reference.h - plain C reference implementations of every layer, to check the oneDNN engine
 * against. */
#ifndef CONVSERVE_REFERENCE_H
#define CONVSERVE_REFERENCE_H

#include "spec.h"

/* A layer's tensors as PyTorch stores them (state_dict layout, unfolded): Conv2d weight
 * [out, in/groups, kh, kw] and bias [out]; Linear weight [out, in] and bias [out]; BatchNorm2d
 * weight, bias, running_mean, running_var [C]. Unused pointers are NULL. */
typedef struct {
    const float *weight, *bias, *running_mean, *running_var;
} ref_params;

/* Computes one layer the slow, obvious way, in double accumulators, on row-major NCHW (or [N, F])
 * float tensors: the layer's l->n_inputs inputs x[k] have shapes in[k], y gets shape `out` (all
 * from spec_infer, pads from spec_infer too). Returns 0, or -1 for an op it does not know. */
int ref_layer(const spec_layer *l, const spec_padding *pad, const ref_params *p,
              const spec_shape *in, const float *const *x, const spec_shape *out, float *y);

#endif
