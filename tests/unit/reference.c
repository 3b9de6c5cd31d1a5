/* reference.c - every layer the engine knows, as plain loops with PyTorch semantics, for tests. */
#include "reference.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* pi to double precision; M_PI is not part of C11. */
static const double REF_PI = 3.14159265358979323846;

/* Number of elements of a shape. */
static size_t ref_count(const spec_shape *s)
{
    size_t n = 1;
    for (int i = 0; i < s->rank; i++)
        n *= (size_t)s->d[i];
    return n;
}

/* Product of the dims in [from, to) of a shape; 1 for an empty range. */
static size_t ref_span(const spec_shape *s, int from, int to)
{
    size_t n = 1;
    for (int i = from; i < to; i++)
        n *= (size_t)s->d[i];
    return n;
}

/* The padding a layer actually applies: spec_infer's resolved pads when given, otherwise the
 * symmetric numbers of the layer itself. */
static void ref_pads(const spec_layer *l, const spec_padding *pad, int64_t pl[2], int64_t pr[2])
{
    for (int k = 0; k < 2; k++) {
        pl[k] = pad ? pad->pad_l[k] : l->padding[k];
        pr[k] = pad ? pad->pad_r[k] : l->padding[k];
    }
}

/* Conv2d: cross-correlation with zero padding, stride, dilation and groups (F.conv2d). */
static int ref_conv2d(const spec_layer *l, const spec_padding *pad, const ref_params *p,
                      const spec_shape *in, const float *x, const spec_shape *out, float *y)
{
    if (in->rank != 4 || out->rank != 4 || !p->weight || l->groups < 1)
        return -1;
    int64_t pl[2], pr[2];
    ref_pads(l, pad, pl, pr);
    const int64_t n_batch = in->d[0], ic = in->d[1], ih = in->d[2], iw = in->d[3];
    const int64_t oc = out->d[1], oh = out->d[2], ow = out->d[3];
    const int64_t kh = l->kernel[0], kw = l->kernel[1];
    const int64_t g = l->groups, icg = ic / g, ocg = oc / g;
    for (int64_t n = 0; n < n_batch; n++)
        for (int64_t o = 0; o < oc; o++) {
            const int64_t grp = o / ocg;
            for (int64_t r = 0; r < oh; r++)
                for (int64_t c = 0; c < ow; c++) {
                    double acc = p->bias ? p->bias[o] : 0.0;
                    for (int64_t i = 0; i < icg; i++) {
                        const float *xc = x + ((n * ic + grp * icg + i) * ih) * iw;
                        const float *wc = p->weight + ((o * icg + i) * kh) * kw;
                        for (int64_t a = 0; a < kh; a++) {
                            const int64_t hh = r * l->stride[0] - pl[0] + a * l->dilation[0];
                            if (hh < 0 || hh >= ih)
                                continue;
                            for (int64_t b = 0; b < kw; b++) {
                                const int64_t ww = c * l->stride[1] - pl[1] + b * l->dilation[1];
                                if (ww < 0 || ww >= iw)
                                    continue;
                                acc += (double)xc[hh * iw + ww] * (double)wc[a * kw + b];
                            }
                        }
                    }
                    y[((n * oc + o) * oh + r) * ow + c] = (float)acc;
                }
        }
    return 0;
}

/* BatchNorm2d in eval mode: running statistics, and weight 1, bias 0 when affine is false. */
static int ref_batchnorm(const spec_layer *l, const ref_params *p, const spec_shape *in,
                         const float *x, float *y)
{
    if (in->rank < 2 || !p->running_mean || !p->running_var)
        return -1;
    const size_t outer = (size_t)in->d[0], ch = (size_t)in->d[1], inner = ref_span(in, 2, in->rank);
    for (size_t n = 0; n < outer; n++)
        for (size_t c = 0; c < ch; c++) {
            const double w = p->weight ? p->weight[c] : 1.0, b = p->bias ? p->bias[c] : 0.0;
            const double s = w / sqrt((double)p->running_var[c] + l->eps);
            const size_t base = (n * ch + c) * inner;
            for (size_t i = 0; i < inner; i++)
                y[base + i] = (float)(((double)x[base + i] - p->running_mean[c]) * s + b);
        }
    return 0;
}

/* Linear: y = x W^T + b over the last dim, as torch.nn.functional.linear does for any rank. */
static int ref_linear(const spec_layer *l, const ref_params *p, const spec_shape *in,
                      const float *x, float *y)
{
    const int64_t fin = l->in_features, fout = l->out_features;
    if (!p->weight || in->rank < 1 || in->d[in->rank - 1] != fin)
        return -1;
    const size_t rows = ref_count(in) / (size_t)fin;
    for (size_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < fout; o++) {
            double acc = p->bias ? p->bias[o] : 0.0;
            const float *xr = x + r * (size_t)fin, *wr = p->weight + (size_t)o * (size_t)fin;
            for (int64_t i = 0; i < fin; i++)
                acc += (double)xr[i] * (double)wr[i];
            y[r * (size_t)fout + (size_t)o] = (float)acc;
        }
    return 0;
}

/* One activation on one value, in double. */
static double ref_eltwise(const spec_layer *l, double v)
{
    switch (l->op) {
    case SPEC_RELU:
        return v > 0.0 ? v : 0.0;
    case SPEC_LEAKYRELU:
        return v > 0.0 ? v : v * l->negative_slope;
    case SPEC_SIGMOID:
        return 1.0 / (1.0 + exp(-v));
    case SPEC_TANH:
        return tanh(v);
    case SPEC_GELU:
        if (l->gelu_tanh) {
            const double k = sqrt(2.0 / REF_PI);
            return 0.5 * v * (1.0 + tanh(k * (v + 0.044715 * v * v * v)));
        }
        return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    case SPEC_RELU6:
        return fmin(fmax(v, 0.0), 6.0);
    case SPEC_HARDSWISH:
        return v * fmin(fmax(v + 3.0, 0.0), 6.0) / 6.0;
    case SPEC_HARDSIGMOID:
        return fmin(fmax(v + 3.0, 0.0), 6.0) / 6.0;
    case SPEC_SILU:
        return v / (1.0 + exp(-v));
    default:
        return v;
    }
}

/* Softmax or LogSoftmax over one dim (1 unless the layer names another), max-subtracted. */
static int ref_softmax(const spec_layer *l, bool log_form, const spec_shape *in, const float *x,
                       float *y)
{
    int dim = l->dim < 0 ? l->dim + in->rank : l->dim;
    if (dim < 1 || dim >= in->rank)
        dim = 1; /* dim 0 would mix samples of a batch; the engine only normalises over dim 1 */
    const size_t outer = ref_span(in, 0, dim), axis = (size_t)in->d[dim];
    const size_t inner = ref_span(in, dim + 1, in->rank);
    for (size_t o = 0; o < outer; o++)
        for (size_t i = 0; i < inner; i++) {
            const float *xs = x + o * axis * inner + i;
            float *ys = y + o * axis * inner + i;
            double mx = -INFINITY, sum = 0.0;
            for (size_t a = 0; a < axis; a++)
                mx = fmax(mx, (double)xs[a * inner]);
            for (size_t a = 0; a < axis; a++)
                sum += exp((double)xs[a * inner] - mx);
            for (size_t a = 0; a < axis; a++) {
                const double d = (double)xs[a * inner] - mx;
                ys[a * inner] = (float)(log_form ? d - log(sum) : exp(d) / sum);
            }
        }
    return 0;
}

/* MaxPool2d: padding counts as -inf, so padded cells are never picked. */
static int ref_maxpool(const spec_layer *l, const spec_padding *pad, const spec_shape *in,
                       const float *x, const spec_shape *out, float *y)
{
    if (in->rank != 4 || out->rank != 4)
        return -1;
    int64_t pl[2], pr[2];
    ref_pads(l, pad, pl, pr);
    const int64_t planes = in->d[0] * in->d[1], ih = in->d[2], iw = in->d[3];
    const int64_t oh = out->d[2], ow = out->d[3];
    for (int64_t pc = 0; pc < planes; pc++)
        for (int64_t r = 0; r < oh; r++)
            for (int64_t c = 0; c < ow; c++) {
                double mx = -INFINITY;
                for (int64_t a = 0; a < l->kernel[0]; a++) {
                    const int64_t hh = r * l->stride[0] - pl[0] + a * l->dilation[0];
                    if (hh < 0 || hh >= ih)
                        continue;
                    for (int64_t b = 0; b < l->kernel[1]; b++) {
                        const int64_t ww = c * l->stride[1] - pl[1] + b * l->dilation[1];
                        if (ww >= 0 && ww < iw)
                            mx = fmax(mx, (double)x[(pc * ih + hh) * iw + ww]);
                    }
                }
                y[(pc * oh + r) * ow + c] = (float)mx;
            }
    return 0;
}

/* AvgPool2d exactly as PyTorch's CPU kernel (aten/src/ATen/native/cpu/AvgPoolKernel.cpp): the
 * window is first clipped to the padded input (H + pad on each side, using the symmetric padding
 * PyTorch knows, i.e. pad_l), which gives the count_include_pad divisor; then clipped to the real
 * input, which gives the summed cells and the count_include_pad=False divisor. */
static int ref_avgpool(const spec_layer *l, const spec_padding *pad, const spec_shape *in,
                       const float *x, const spec_shape *out, float *y)
{
    if (in->rank != 4 || out->rank != 4)
        return -1;
    int64_t pl[2], pr[2];
    ref_pads(l, pad, pl, pr);
    const int64_t planes = in->d[0] * in->d[1], ih = in->d[2], iw = in->d[3];
    const int64_t oh = out->d[2], ow = out->d[3];
    for (int64_t pc = 0; pc < planes; pc++)
        for (int64_t r = 0; r < oh; r++)
            for (int64_t c = 0; c < ow; c++) {
                int64_t h0 = r * l->stride[0] - pl[0], w0 = c * l->stride[1] - pl[1];
                int64_t h1 = h0 + l->kernel[0], w1 = w0 + l->kernel[1];
                if (h1 > ih + pl[0])
                    h1 = ih + pl[0];
                if (w1 > iw + pl[1])
                    w1 = iw + pl[1];
                const int64_t padded_size = (h1 - h0) * (w1 - w0);
                h0 = h0 < 0 ? 0 : h0;
                w0 = w0 < 0 ? 0 : w0;
                h1 = h1 > ih ? ih : h1;
                w1 = w1 > iw ? iw : w1;
                float *dst = y + (pc * oh + r) * ow + c;
                if (h0 >= h1 || w0 >= w1) {
                    *dst = 0.0f;
                    continue;
                }
                double sum = 0.0;
                for (int64_t hh = h0; hh < h1; hh++)
                    for (int64_t ww = w0; ww < w1; ww++)
                        sum += (double)x[(pc * ih + hh) * iw + ww];
                const int64_t divisor = l->count_include_pad ? padded_size : (h1 - h0) * (w1 - w0);
                *dst = (float)(sum / (double)divisor);
            }
    return 0;
}

/* AdaptiveAvgPool2d: output cell i averages input rows floor(i*H/o) to ceil((i+1)*H/o). The
 * output size comes from `out`, which shape inference resolved. */
static int ref_adaptive_avgpool(const spec_shape *in, const float *x, const spec_shape *out,
                                float *y)
{
    if (in->rank != 4 || out->rank != 4)
        return -1;
    const int64_t planes = in->d[0] * in->d[1], ih = in->d[2], iw = in->d[3];
    const int64_t oh = out->d[2], ow = out->d[3];
    for (int64_t pc = 0; pc < planes; pc++)
        for (int64_t r = 0; r < oh; r++)
            for (int64_t c = 0; c < ow; c++) {
                const int64_t h0 = (r * ih) / oh, h1 = ((r + 1) * ih + oh - 1) / oh;
                const int64_t w0 = (c * iw) / ow, w1 = ((c + 1) * iw + ow - 1) / ow;
                double sum = 0.0;
                for (int64_t hh = h0; hh < h1; hh++)
                    for (int64_t ww = w0; ww < w1; ww++)
                        sum += (double)x[(pc * ih + hh) * iw + ww];
                y[(pc * oh + r) * ow + c] = (float)(sum / (double)((h1 - h0) * (w1 - w0)));
            }
    return 0;
}

/* Add: the sum of every input (all of one shape), in double. */
static int ref_add(const spec_layer *l, const spec_shape *in, const float *const *x, float *y)
{
    const size_t n = ref_count(&in[0]);
    for (int k = 1; k < l->n_inputs; k++)
        if (ref_count(&in[k]) != n)
            return -1;
    for (size_t i = 0; i < n; i++) {
        double acc = 0.0;
        for (int k = 0; k < l->n_inputs; k++)
            acc += (double)x[k][i];
        y[i] = (float)acc;
    }
    return 0;
}

/* Mul: equal shapes, or [N,C,H,W] * [N,C,1,1] in either order (PyTorch broadcasting). */
static int ref_mul(const spec_shape *in, const float *const *x, const spec_shape *out, float *y)
{
    const size_t n = ref_count(out);
    const size_t n0 = ref_count(&in[0]), n1 = ref_count(&in[1]);
    if (n0 == n && n1 == n) {
        for (size_t i = 0; i < n; i++)
            y[i] = x[0][i] * x[1][i];
        return 0;
    }
    if (out->rank != 4)
        return -1;
    const int big = n0 == n ? 0 : 1;
    const size_t planes = (size_t)(out->d[0] * out->d[1]), hw = n / planes;
    if (ref_count(&in[1 - big]) != planes)
        return -1;
    for (size_t p = 0; p < planes; p++)
        for (size_t i = 0; i < hw; i++)
            y[p * hw + i] = x[big][p * hw + i] * x[1 - big][p];
    return 0;
}

/* Cat along dim 1: per sample, each input's channels (or features) in turn. */
static int ref_cat(const spec_layer *l, const spec_shape *in, const float *const *x,
                   const spec_shape *out, float *y)
{
    const size_t inner = ref_span(out, 2, out->rank);
    size_t o = 0;
    for (int64_t n = 0; n < out->d[0]; n++)
        for (int k = 0; k < l->n_inputs; k++) {
            const size_t chunk = (size_t)in[k].d[1] * inner;
            memcpy(y + o, x[k] + (size_t)n * chunk, chunk * sizeof *y);
            o += chunk;
        }
    return o == ref_count(out) ? 0 : -1;
}

/* Mean over height and width of [N, C, H, W]; the output is [N, C] or [N, C, 1, 1]. */
static int ref_mean(const spec_shape *in, const float *x, float *y)
{
    if (in->rank != 4)
        return -1;
    const size_t planes = (size_t)(in->d[0] * in->d[1]), hw = ref_span(in, 2, 4);
    for (size_t p = 0; p < planes; p++) {
        double acc = 0.0;
        for (size_t i = 0; i < hw; i++)
            acc += (double)x[p * hw + i];
        y[p] = (float)(acc / (double)hw);
    }
    return 0;
}

int ref_layer(const spec_layer *l, const spec_padding *pad, const ref_params *p,
              const spec_shape *ins, const float *const *xs, const spec_shape *out, float *y)
{
    static const ref_params none = {0};
    if (!p)
        p = &none;
    const spec_shape *in = &ins[0];
    const float *x = xs[0];
    const size_t n = ref_count(in);
    switch (l->op) {
    case SPEC_CONV2D:
        return ref_conv2d(l, pad, p, in, x, out, y);
    case SPEC_BATCHNORM2D:
        return ref_batchnorm(l, p, in, x, y);
    case SPEC_LINEAR:
        return ref_linear(l, p, in, x, y);
    case SPEC_RELU:
    case SPEC_LEAKYRELU:
    case SPEC_SIGMOID:
    case SPEC_TANH:
    case SPEC_GELU:
    case SPEC_RELU6:
    case SPEC_HARDSWISH:
    case SPEC_HARDSIGMOID:
    case SPEC_SILU:
        for (size_t i = 0; i < n; i++)
            y[i] = (float)ref_eltwise(l, (double)x[i]);
        return 0;
    case SPEC_SOFTMAX:
        return ref_softmax(l, false, in, x, y);
    case SPEC_LOGSOFTMAX:
        return ref_softmax(l, true, in, x, y);
    case SPEC_MAXPOOL2D:
        return ref_maxpool(l, pad, in, x, out, y);
    case SPEC_AVGPOOL2D:
        return ref_avgpool(l, pad, in, x, out, y);
    case SPEC_ADAPTIVEAVGPOOL2D:
        return ref_adaptive_avgpool(in, x, out, y);
    case SPEC_ADD:
        return ref_add(l, ins, xs, y);
    case SPEC_MUL:
        return ref_mul(ins, xs, out, y);
    case SPEC_CAT:
        return ref_cat(l, ins, xs, out, y);
    case SPEC_MEAN:
        return ref_mean(in, x, y);
    case SPEC_FLATTEN:
    case SPEC_DROPOUT:
    case SPEC_DROPOUT2D:
    case SPEC_IDENTITY:
    case SPEC_STOCHASTICDEPTH:
        /* A row-major reshape (Flatten) or the identity in eval mode: the same bytes. */
        if (ref_count(out) != n)
            return -1;
        memmove(y, x, n * sizeof *y);
        return 0;
    case SPEC_OP_COUNT:
        break;
    }
    return -1;
}
