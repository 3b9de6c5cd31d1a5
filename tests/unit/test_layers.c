/* test_layers.c - each layer option run through the real engine and checked against reference.c. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "engine.h"
#include "reference.h"
#include "safetensors.h"
#include "spec.h"

/* Each case is a tiny model: a name, the shape of one sample and the "layers" array of model.json.
 * The JSON is written with single quotes so that the table stays readable; case_json() turns them
 * into double quotes. Every case runs at each batch size below, with fresh random inputs. */
typedef struct {
    const char *name;
    const char *input;  /* input.shape of model.json, e.g. "[3,9,10]" */
    const char *layers; /* the layers array */
    double input_scale; /* inputs are uniform in [-scale, scale]; 0 means 1 */
    bool may_reject;    /* an option beyond DESIGN.md's minimum: a clear load error is acceptable */
} layer_case;

enum {
    MAX_TENSORS = 4 * SPEC_MAX_LAYERS, /* a BatchNorm2d has four */
    TENSOR_NAME = SPEC_MAX_NAME + 16,  /* a layer name plus ".running_mean" */
    ERR_LEN = 1024,
};

static const int64_t BATCH_SIZES[] = {1, 3, 8};
static const uint64_t SEED = 0x9e3779b97f4a7c15u;
/* DESIGN.md section 5: PyTorch's outputs within 1e-4, relative to the output's scale. */
static const double REL_TOL = 1e-4;

/* The activations are each tested standalone, right after a conv and right after a Linear (where
 * the engine fuses them as post-ops). */
#define CONV_BEFORE "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3},"
#define LINEAR_BEFORE                                                                              \
    "[{'op':'Flatten'},{'op':'Linear','name':'fc','in_features':48,'out_features':10},"
/* clang-format cannot lay out a macro that expands to several initialisers. */
/* clang-format off */
#define ACT_CASES(tag, act)                                                                        \
    {"act_" tag, "[3,6,7]", "[" act "]", 3.0, false},                                              \
    {"conv_" tag, "[3,6,7]", CONV_BEFORE act "]", 0, false},                                       \
    {"linear_" tag, "[3,4,4]", LINEAR_BEFORE act "]", 0, false}
/* clang-format on */

static const layer_case CASES[] = {
    /* Conv2d: kernel sizes, strides, paddings, dilations, groups, bias. */
    {"conv_k1", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':1}]", 0, false},
    {"conv_k3", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':5,'kernel_size':3}]", 0, false},
    {"conv_k5", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':5}]", 0, false},
    {"conv_k3x5", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':[3,5]}]", 0, false},
    {"conv_stride2", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':3,'stride':2}]", 0,
     false},
    {"conv_stride_2_1", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':3,"
     "'stride':[2,1]}]",
     0, false},
    {"conv_pad1", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':3,'padding':1}]", 0,
     false},
    {"conv_pad_1_2", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':[3,5],"
     "'padding':[1,2]}]",
     0, false},
    {"conv_pad0_explicit", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':[3,3],"
     "'stride':[1,1],'padding':[0,0],'dilation':[1,1],'groups':1,'bias':true}]",
     0, false},
    {"conv_same_k3", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':3,"
     "'padding':'same'}]",
     0, false},
    {"conv_same_k4_even", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':4,"
     "'padding':'same'}]",
     0, false},
    {"conv_same_k2x4_dil_1_2", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':[2,4],"
     "'padding':'same','dilation':[1,2]}]",
     0, false},
    {"conv_same_k3_dil2", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':3,"
     "'padding':'same','dilation':2}]",
     0, false},
    {"conv_valid", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':3,"
     "'padding':'valid'}]",
     0, false},
    {"conv_dil2", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':3,'dilation':2}]",
     0, false},
    {"conv_dil_2_1_pad_2_1", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':3,"
     "'dilation':[2,1],'padding':[2,1]}]",
     0, false},
    {"conv_groups2", "[4,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':4,'out_channels':6,'kernel_size':3,'padding':1,"
     "'groups':2}]",
     0, false},
    {"conv_depthwise", "[8,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':8,'out_channels':8,'kernel_size':3,'padding':1,"
     "'groups':8}]",
     0, false},
    {"conv_depthwise_x2", "[4,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':4,'out_channels':8,'kernel_size':3,'groups':4}]", 0,
     false},
    {"conv_depthwise_16_s2", "[16,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':16,'out_channels':16,'kernel_size':3,'stride':2,"
     "'padding':1,'groups':16,'bias':false}]",
     0, false},
    {"conv_nobias", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':3,'bias':false}]",
     0, false},
    {"conv_everything", "[4,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':4,'out_channels':6,'kernel_size':[3,5],"
     "'stride':[2,1],'padding':[1,2],'dilation':[1,2],'groups':2,'bias':false}]",
     0, false},
    {"conv_16_to_32", "[16,8,8]",
     "[{'op':'Conv2d','name':'c','in_channels':16,'out_channels':32,'kernel_size':3,'padding':1}]",
     0, false},
    {"conv_chain", "[3,9,9]",
     "[{'op':'Conv2d','name':'c1','in_channels':3,'out_channels':16,'kernel_size':3,'padding':1},"
     "{'op':'ReLU'},"
     "{'op':'Conv2d','name':'c2','in_channels':16,'out_channels':32,'kernel_size':3,'stride':2},"
     "{'op':'ReLU'},"
     "{'op':'Conv2d','name':'c3','in_channels':32,'out_channels':8,'kernel_size':1}]",
     0, false},
    {"conv_notebook_1x3x3", "[1,3,3]",
     "[{'op':'Conv2d','name':'c','in_channels':1,'out_channels':3,'kernel_size':3}]", 0, false},

    /* BatchNorm2d: folded into the conv before it, or run as its own primitive. */
    {"conv_bn", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3,'bias':false},"
     "{'op':'BatchNorm2d','name':'bn','num_features':8}]",
     0, false},
    {"conv_bias_bn_eps", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3},"
     "{'op':'BatchNorm2d','name':'bn','num_features':8,'eps':0.001}]",
     0, false},
    {"conv_bn_noaffine", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3,'bias':false},"
     "{'op':'BatchNorm2d','name':'bn','num_features':8,'affine':false}]",
     0, false},
    {"conv_bn_relu", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3,'bias':false},"
     "{'op':'BatchNorm2d','name':'bn','num_features':8},{'op':'ReLU'}]",
     0, false},
    {"conv_bn_relu_16_to_32", "[16,8,8]",
     "[{'op':'Conv2d','name':'c','in_channels':16,'out_channels':32,'kernel_size':3,'padding':1,"
     "'bias':false},{'op':'BatchNorm2d','name':'bn','num_features':32},{'op':'ReLU'}]",
     0, false},
    {"depthwise_bn", "[8,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':8,'out_channels':8,'kernel_size':3,'groups':8},"
     "{'op':'BatchNorm2d','name':'bn','num_features':8}]",
     0, false},
    {"conv_bn_leakyrelu", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3,'bias':false},"
     "{'op':'BatchNorm2d','name':'bn','num_features':8},"
     "{'op':'LeakyReLU','negative_slope':0.1}]",
     0, false},
    {"conv_relu_bn", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3},"
     "{'op':'ReLU'},{'op':'BatchNorm2d','name':'bn','num_features':8}]",
     0, false},
    {"conv_relu_bn_relu", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':16,'kernel_size':3},"
     "{'op':'ReLU'},{'op':'BatchNorm2d','name':'bn','num_features':16,'eps':0.01},"
     "{'op':'ReLU'}]",
     0, false},
    {"conv_relu_bn_noaffine", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3},"
     "{'op':'ReLU'},{'op':'BatchNorm2d','name':'bn','num_features':8,'affine':false}]",
     0, false},
    {"bn_on_input", "[3,5,6]", "[{'op':'BatchNorm2d','name':'bn','num_features':3}]", 2.0, false},
    {"bn_noaffine_on_input", "[3,5,6]",
     "[{'op':'BatchNorm2d','name':'bn','num_features':3,'affine':false}]", 2.0, false},
    {"maxpool_bn", "[3,8,8]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3,'padding':1},"
     "{'op':'MaxPool2d','kernel_size':2},"
     "{'op':'BatchNorm2d','name':'bn','num_features':8}]",
     0, false},
    {"conv_dropout_bn", "[3,9,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3,'bias':false},"
     "{'op':'Dropout','p':0.5},{'op':'BatchNorm2d','name':'bn','num_features':8},"
     "{'op':'ReLU'}]",
     0, false},

    /* Activations standalone, fused after a conv, and fused after a Linear. */
    ACT_CASES("relu", "{'op':'ReLU'}"),
    ACT_CASES("leakyrelu_default", "{'op':'LeakyReLU'}"),
    ACT_CASES("leakyrelu_0.2", "{'op':'LeakyReLU','negative_slope':0.2}"),
    ACT_CASES("leakyrelu_neg0.3", "{'op':'LeakyReLU','negative_slope':-0.3}"),
    ACT_CASES("sigmoid", "{'op':'Sigmoid'}"),
    ACT_CASES("tanh", "{'op':'Tanh'}"),
    ACT_CASES("gelu", "{'op':'GELU'}"),
    ACT_CASES("gelu_none", "{'op':'GELU','approximate':'none'}"),
    ACT_CASES("gelu_tanh", "{'op':'GELU','approximate':'tanh'}"),
    ACT_CASES("relu6", "{'op':'ReLU6'}"),
    ACT_CASES("hardswish", "{'op':'Hardswish'}"),
    ACT_CASES("hardsigmoid", "{'op':'Hardsigmoid'}"),
    ACT_CASES("silu", "{'op':'SiLU','inplace':true}"),
    {"tanh_on_2d_input", "[10]", "[{'op':'Tanh'}]", 3.0, false},
    {"conv_relu_sigmoid", "[3,6,7]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3},"
     "{'op':'ReLU'},{'op':'Sigmoid'}]",
     0, false},
    {"conv_gelu_tanh_act", "[3,6,7]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3},"
     "{'op':'GELU'},{'op':'Tanh'}]",
     0, false},

    /* Softmax and LogSoftmax over dim 1: features of a 2-D tensor, channels of a 4-D one. */
    {"linear_softmax", "[3,4,4]",
     "[{'op':'Flatten'},{'op':'Linear','name':'fc','in_features':48,'out_features':10},"
     "{'op':'Softmax','dim':1}]",
     3.0, false},
    {"linear_logsoftmax", "[3,4,4]",
     "[{'op':'Flatten'},{'op':'Linear','name':'fc','in_features':48,'out_features':10},"
     "{'op':'LogSoftmax','dim':1}]",
     3.0, false},
    {"softmax_2d_input_dim_minus1", "[10]", "[{'op':'Softmax','dim':-1}]", 20.0, false},
    {"logsoftmax_2d_input", "[10]", "[{'op':'LogSoftmax','dim':1}]", 20.0, false},
    {"softmax_4d_input", "[5,4,6]", "[{'op':'Softmax','dim':1}]", 20.0, false},
    {"logsoftmax_4d_input", "[5,4,6]", "[{'op':'LogSoftmax','dim':1}]", 20.0, false},
    {"conv_softmax", "[3,6,7]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':16,'kernel_size':3},"
     "{'op':'Softmax','dim':1}]",
     0, false},
    {"conv_logsoftmax", "[3,6,7]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':16,'kernel_size':3},"
     "{'op':'LogSoftmax','dim':1}]",
     0, false},

    /* Pooling. */
    {"maxpool_k2", "[3,8,8]", "[{'op':'MaxPool2d','kernel_size':2}]", 0, false},
    {"maxpool_k3_s2_p1", "[3,8,9]", "[{'op':'MaxPool2d','kernel_size':3,'stride':2,'padding':1}]",
     0, false},
    {"maxpool_k2x3_s21_p1", "[3,8,9]",
     "[{'op':'MaxPool2d','kernel_size':[2,3],'stride':[2,1],'padding':1}]", 0, false},
    {"maxpool_dil2_p1", "[3,9,9]",
     "[{'op':'MaxPool2d','kernel_size':3,'stride':1,'padding':1,'dilation':2}]", 0, false},
    {"maxpool_ceil", "[3,8,8]", "[{'op':'MaxPool2d','kernel_size':3,'stride':2,'ceil_mode':true}]",
     0, false},
    {"maxpool_ceil_p1", "[3,8,7]",
     "[{'op':'MaxPool2d','kernel_size':3,'stride':2,'padding':1,'ceil_mode':true}]", 0, false},
    {"maxpool_dil2_ceil", "[3,10,9]",
     "[{'op':'MaxPool2d','kernel_size':3,'stride':2,'padding':1,'dilation':2,'ceil_mode':true}]", 0,
     false},
    {"conv_relu_maxpool_16", "[3,8,8]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':16,'kernel_size':3,'padding':1},"
     "{'op':'ReLU'},{'op':'MaxPool2d','kernel_size':2}]",
     0, false},
    {"avgpool_k2", "[3,8,8]", "[{'op':'AvgPool2d','kernel_size':2}]", 0, false},
    {"avgpool_p1_include", "[3,8,8]", "[{'op':'AvgPool2d','kernel_size':3,'stride':2,'padding':1}]",
     0, false},
    {"avgpool_p1_exclude", "[3,8,8]",
     "[{'op':'AvgPool2d','kernel_size':3,'stride':2,'padding':1,'count_include_pad':false}]", 0,
     false},
    {"avgpool_rect_include", "[3,7,10]",
     "[{'op':'AvgPool2d','kernel_size':[2,4],'stride':[3,2],'padding':[1,2],"
     "'count_include_pad':true}]",
     0, false},
    {"avgpool_rect_exclude", "[3,7,10]",
     "[{'op':'AvgPool2d','kernel_size':[2,4],'stride':[3,2],'padding':[1,2],"
     "'count_include_pad':false}]",
     0, false},
    {"avgpool_ceil_exclude", "[3,8,8]",
     "[{'op':'AvgPool2d','kernel_size':3,'stride':2,'padding':1,'ceil_mode':true,"
     "'count_include_pad':false}]",
     0, false},
    {"avgpool_ceil_include", "[3,8,8]",
     "[{'op':'AvgPool2d','kernel_size':3,'stride':2,'padding':1,'ceil_mode':true,"
     "'count_include_pad':true}]",
     0, false},
    {"avgpool_ceil_include_pad_rect", "[3,7,10]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':16,'kernel_size':1},"
     "{'op':'AvgPool2d','kernel_size':[3,4],'stride':[2,3],'padding':[1,2],'ceil_mode':true}]",
     0, false},
    {"avgpool_ceil_include_p0", "[3,8,9]",
     "[{'op':'AvgPool2d','kernel_size':3,'stride':2,'ceil_mode':true}]", 0, false},
    {"conv_avgpool_16", "[3,8,8]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':16,'kernel_size':3,'padding':1},"
     "{'op':'AvgPool2d','kernel_size':3,'stride':2,'padding':1}]",
     0, false},
    {"adaptive_global", "[4,7,9]", "[{'op':'AdaptiveAvgPool2d','output_size':1}]", 0, false},
    {"adaptive_2x2_on_8x8", "[3,8,8]", "[{'op':'AdaptiveAvgPool2d','output_size':2}]", 0, false},
    {"adaptive_2x4_on_8x8", "[3,8,8]", "[{'op':'AdaptiveAvgPool2d','output_size':[2,4]}]", 0,
     false},
    {"adaptive_3x3_on_8x8", "[3,8,8]", "[{'op':'AdaptiveAvgPool2d','output_size':3}]", 0, false},
    {"adaptive_5x3_on_7x11", "[3,7,11]", "[{'op':'AdaptiveAvgPool2d','output_size':[5,3]}]", 0,
     false},
    {"adaptive_7x7_on_3x2_upsampling", "[4,3,2]", "[{'op':'AdaptiveAvgPool2d','output_size':7}]", 0,
     false},
    {"conv_adaptive_uneven_linear", "[3,9,9]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':16,'kernel_size':3},"
     "{'op':'AdaptiveAvgPool2d','output_size':[4,5]},{'op':'Flatten'},"
     "{'op':'Linear','name':'fc','in_features':320,'out_features':6}]",
     0, false},
    {"conv_adaptive_global_16", "[3,8,8]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':16,'kernel_size':3},"
     "{'op':'AdaptiveAvgPool2d','output_size':[1,1]}]",
     0, false},

    /* Flatten and Linear: the 4-D inner product after a conv is the weight layout trap. */
    {"flatten_linear_notebook", "[1,3,3]",
     "[{'op':'Flatten'},{'op':'Linear','name':'fc','in_features':9,'out_features':10}]", 0, false},
    {"conv_flatten_linear", "[3,6,6]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':32,'kernel_size':3},"
     "{'op':'ReLU'},{'op':'Flatten','start_dim':1,'end_dim':-1},"
     "{'op':'Linear','name':'fc','in_features':512,'out_features':10}]",
     0, false},
    {"conv_flatten_linear_nobias", "[3,7,5]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':16,'kernel_size':3},"
     "{'op':'Flatten'},"
     "{'op':'Linear','name':'fc','in_features':240,'out_features':7,'bias':false}]",
     0, false},
    {"conv_bn_flatten_linear", "[3,6,6]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':32,'kernel_size':3,'bias':false},"
     "{'op':'BatchNorm2d','name':'bn','num_features':32},{'op':'Flatten'},"
     "{'op':'Linear','name':'fc','in_features':512,'out_features':10}]",
     0, false},
    {"maxpool_flatten_linear", "[3,6,6]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':16,'kernel_size':3,'padding':1},"
     "{'op':'MaxPool2d','kernel_size':2},{'op':'Flatten'},"
     "{'op':'Linear','name':'fc','in_features':144,'out_features':10}]",
     0, false},
    {"adaptive_flatten_linear", "[3,8,8]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':32,'kernel_size':3},"
     "{'op':'ReLU'},{'op':'AdaptiveAvgPool2d','output_size':1},{'op':'Flatten'},"
     "{'op':'Linear','name':'fc','in_features':32,'out_features':10}]",
     0, false},
    {"linear_linear", "[12]",
     "[{'op':'Linear','name':'fc1','in_features':12,'out_features':16},"
     "{'op':'Linear','name':'fc2','in_features':16,'out_features':5}]",
     0, false},
    {"linear_relu_linear_nobias", "[12]",
     "[{'op':'Linear','name':'fc1','in_features':12,'out_features':16,'bias':false},"
     "{'op':'ReLU'},"
     "{'op':'Linear','name':'fc2','in_features':16,'out_features':5,'bias':false}]",
     0, false},
    {"flatten_linear_linear", "[4,3,3]",
     "[{'op':'Flatten'},"
     "{'op':'Linear','name':'fc1','in_features':36,'out_features':20},"
     "{'op':'Linear','name':'fc2','in_features':20,'out_features':3}]",
     0, false},
    {"flatten_last", "[3,6,6]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':16,'kernel_size':3},"
     "{'op':'Flatten'}]",
     0, false},
    {"flatten_only", "[3,4,5]", "[{'op':'Flatten'}]", 0, false},
    {"flatten_relu_linear", "[3,6,6]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3},"
     "{'op':'Flatten'},{'op':'ReLU'},"
     "{'op':'Linear','name':'fc','in_features':128,'out_features':6}]",
     0, false},
    {"flatten_on_2d_input", "[12]",
     "[{'op':'Flatten'},{'op':'Linear','name':'fc','in_features':12,'out_features':4}]", 0, false},

    /* Dropout, Dropout2d and Identity are the identity in eval mode, wherever they sit. */
    {"identity_only", "[3,4,5]", "[{'op':'Identity'}]", 0, false},
    {"dropout_only", "[3,4,5]", "[{'op':'Dropout','p':0.5}]", 0, false},
    {"conv_identity_relu", "[3,6,7]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3},"
     "{'op':'Identity'},{'op':'ReLU'}]",
     0, false},
    {"dropouts_between", "[3,6,6]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3},"
     "{'op':'Dropout'},{'op':'ReLU'},{'op':'Dropout2d','p':0.2},{'op':'Identity'},"
     "{'op':'Flatten'},"
     "{'op':'Linear','name':'fc1','in_features':128,'out_features':16},"
     "{'op':'Dropout','p':0.5},"
     "{'op':'Linear','name':'fc2','in_features':16,'out_features':5},{'op':'Identity'}]",
     0, false},

    /* Graphs. Residual adds: fused into the convolution producing one operand (a sum post-op),
     * into either operand, with the other operand still needed later or not, from the model
     * input, from pooling, from another convolution (a projection shortcut); and unfused. */
    {"residual_conv_bn_add_relu", "[8,6,6]",
     "[{'op':'Conv2d','name':'c','in_channels':8,'out_channels':8,'kernel_size':3,'padding':1,"
     "'bias':false},{'op':'BatchNorm2d','name':'bn','num_features':8},"
     "{'op':'Add','inputs':['bn','input']},{'op':'ReLU'}]",
     0, false},
    {"residual_x_plus_conv_x", "[8,6,6]",
     "[{'op':'MaxPool2d','id':'p','kernel_size':3,'stride':1,'padding':1},"
     "{'op':'Conv2d','name':'c','in_channels':8,'out_channels':8,'kernel_size':3,'padding':1},"
     "{'op':'Add','inputs':['p','c']}]",
     0, false},
    {"residual_operand_used_later", "[8,6,6]",
     "[{'op':'ReLU','id':'r'},"
     "{'op':'Conv2d','name':'c','in_channels':8,'out_channels':8,'kernel_size':1},"
     "{'op':'Add','id':'a','inputs':['c','r']},"
     "{'op':'Add','inputs':['a','r']}]",
     0, false},
    {"residual_projection_shortcut", "[4,8,8]",
     "[{'op':'Conv2d','name':'c1','in_channels':4,'out_channels':8,'kernel_size':3,'stride':2,"
     "'padding':1,'bias':false},{'op':'BatchNorm2d','name':'bn1','num_features':8},"
     "{'op':'ReLU'},"
     "{'op':'Conv2d','name':'c2','in_channels':8,'out_channels':8,'kernel_size':3,'padding':1,"
     "'bias':false},{'op':'BatchNorm2d','name':'bn2','num_features':8},"
     "{'op':'Conv2d','name':'down','in_channels':4,'out_channels':8,'kernel_size':1,'stride':2,"
     "'bias':false,'inputs':['input']},{'op':'BatchNorm2d','name':'dbn','num_features':8},"
     "{'op':'Add','inputs':['bn2','dbn']},{'op':'ReLU'}]",
     0, false},
    {"residual_conv_used_twice_unfused", "[8,6,6]",
     "[{'op':'Conv2d','name':'c','in_channels':8,'out_channels':8,'kernel_size':3,'padding':1},"
     "{'op':'Add','id':'a','inputs':['c','input']},{'op':'Sigmoid','id':'s','inputs':['c']},"
     "{'op':'Add','inputs':['a','s']}]",
     0, false},
    {"add_three_then_relu", "[8,5,7]",
     "[{'op':'ReLU','id':'r'},{'op':'Tanh','id':'t','inputs':['input']},"
     "{'op':'Add','inputs':['r','t','input']},{'op':'ReLU'}]",
     3.0, false},
    /* Channels that do not fill the last block of a blocked layout (aBcd8b with C = 6 on AVX2):
     * oneDNN 2.6's binary kernel gets activation post-ops wrong there (found by live_check). */
    {"add_three_convs_channel_tail_relu6", "[3,16,14]",
     "[{'op':'Conv2d','name':'c0','in_channels':3,'out_channels':6,'kernel_size':[3,1],"
     "'padding':'same'},"
     "{'op':'Conv2d','name':'c1','in_channels':6,'out_channels':6,'kernel_size':1},"
     "{'op':'Conv2d','name':'c2','in_channels':6,'out_channels':6,'kernel_size':3,'padding':1,"
     "'inputs':['c0']},"
     "{'op':'Add','inputs':['c1','c0','c2']},{'op':'ReLU6'}]",
     3.0, false},
    {"se_mul_channel_tail_relu", "[6,9,9]",
     "[{'op':'Conv2d','name':'c','in_channels':6,'out_channels':6,'kernel_size':3,'padding':1,"
     "'id':'x'},{'op':'AdaptiveAvgPool2d','output_size':1},"
     "{'op':'Conv2d','name':'fc','in_channels':6,'out_channels':6,'kernel_size':1},"
     "{'op':'Sigmoid','id':'g'},{'op':'Mul','inputs':['x','g']},{'op':'ReLU'}]",
     3.0, false},
    /* One channel in a blocked layout: oneDNN 2.6's AVX2 broadcasting mul gets [N,1,H,W] in
     * aBcd8b times [N,1,1,1] wrong (found by live_check), so it runs channels-last. */
    {"se_mul_one_channel", "[1,12,9]",
     "[{'op':'Conv2d','name':'c','in_channels':1,'out_channels':1,'kernel_size':3,'padding':1,"
     "'id':'x'},{'op':'AdaptiveAvgPool2d','output_size':1},"
     "{'op':'Conv2d','name':'fc','in_channels':1,'out_channels':1,'kernel_size':1},"
     "{'op':'Hardsigmoid','id':'g'},{'op':'Mul','inputs':['g','x']}]",
     3.0, false},
    {"add_same_tensor_twice", "[6,4,4]",
     "[{'op':'Sigmoid','id':'s'},{'op':'Add','inputs':['s','s']}]", 0, false},
    {"add_linear_branches", "[12]",
     "[{'op':'Linear','name':'a','in_features':12,'out_features':7},"
     "{'op':'Linear','name':'b','in_features':12,'out_features':7,'inputs':['input']},"
     "{'op':'Add','inputs':['a','b']},{'op':'ReLU6'}]",
     0, false},
    /* Squeeze-excitation: global pooling or Mean, two 1x1 convolutions (or Linears), a gate, and
     * the broadcasting Mul, either way round. */
    {"se_hardsigmoid_mul", "[16,7,7]",
     "[{'op':'Conv2d','name':'c','in_channels':16,'out_channels':16,'kernel_size':3,'padding':1},"
     "{'op':'Hardswish','id':'x'},"
     "{'op':'AdaptiveAvgPool2d','output_size':1},"
     "{'op':'Conv2d','name':'fc1','in_channels':16,'out_channels':8,'kernel_size':1},"
     "{'op':'ReLU'},"
     "{'op':'Conv2d','name':'fc2','in_channels':8,'out_channels':16,'kernel_size':1},"
     "{'op':'Hardsigmoid','id':'g'},{'op':'Mul','inputs':['g','x']}]",
     0, false},
    {"se_mean_linear_sigmoid_mul", "[12,5,6]",
     "[{'op':'SiLU','id':'x'},{'op':'Mean','dim':[2,3],'keepdim':false},"
     "{'op':'Linear','name':'fc1','in_features':12,'out_features':4},{'op':'SiLU'},"
     "{'op':'Linear','name':'fc2','in_features':4,'out_features':12},{'op':'Sigmoid','id':'g'},"
     "{'op':'Mean','id':'k','dim':[2,3],'keepdim':true,'inputs':['x']},"
     "{'op':'Mul','id':'m','inputs':['x','k']},{'op':'Mean','id':'mm','dim':[-1,-2],"
     "'inputs':['m']},{'op':'Mul','inputs':['g','mm']}]",
     0, false},
    {"mul_same_shape", "[6,4,5]",
     "[{'op':'Tanh','id':'t'},{'op':'Sigmoid','id':'s','inputs':['input']},"
     "{'op':'Mul','inputs':['t','s']}]",
     0, false},
    /* Concatenation: conv branches (Inception, SqueezeNet), the input itself, growing cats
     * (DenseNet), a Cat of a single tensor, Cat on [N, F]. */
    {"cat_fire", "[8,6,6]",
     "[{'op':'Conv2d','name':'sq','in_channels':8,'out_channels':4,'kernel_size':1},"
     "{'op':'ReLU','id':'s'},"
     "{'op':'Conv2d','name':'e1','in_channels':4,'out_channels':8,'kernel_size':1},"
     "{'op':'ReLU','id':'a'},"
     "{'op':'Conv2d','name':'e3','in_channels':4,'out_channels':8,'kernel_size':3,'padding':1,"
     "'inputs':['s']},"
     "{'op':'ReLU','id':'b'},{'op':'Cat','dim':1,'inputs':['a','b']},"
     "{'op':'MaxPool2d','kernel_size':3,'stride':2,'ceil_mode':true}]",
     0, false},
    {"cat_dense_growth", "[4,5,5]",
     "[{'op':'BatchNorm2d','name':'bn0','num_features':4},{'op':'ReLU'},"
     "{'op':'Conv2d','name':'c0','in_channels':4,'out_channels':3,'kernel_size':3,'padding':1},"
     "{'op':'Cat','id':'f1','dim':1,'inputs':['input','c0']},"
     "{'op':'BatchNorm2d','name':'bn1','num_features':7},{'op':'ReLU'},"
     "{'op':'Conv2d','name':'c1','in_channels':7,'out_channels':3,'kernel_size':3,'padding':1},"
     "{'op':'Cat','dim':1,'inputs':['input','c0','c1']},"
     "{'op':'AvgPool2d','kernel_size':2}]",
     0, false},
    {"cat_with_input_and_pool", "[3,8,8]",
     "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':16,'kernel_size':3,'padding':1},"
     "{'op':'MaxPool2d','id':'p','kernel_size':3,'stride':1,'padding':1,'inputs':['input']},"
     "{'op':'Cat','dim':-3,'inputs':['c','input','p']},{'op':'ReLU'}]",
     0, false},
    {"cat_single_and_2d", "[10]",
     "[{'op':'Linear','name':'a','in_features':10,'out_features':3},"
     "{'op':'Cat','id':'one','dim':1,'inputs':['a']},"
     "{'op':'Cat','dim':-1,'inputs':['one','input','one']}]",
     0, false},
    /* StochasticDepth is the identity in eval, wherever it sits. */
    {"stochastic_depth_residual", "[8,6,6]",
     "[{'op':'Conv2d','name':'c','in_channels':8,'out_channels':8,'kernel_size':3,'padding':1},"
     "{'op':'StochasticDepth','id':'sd','p':0.2,'mode':'row'},"
     "{'op':'Add','inputs':['sd','input']}]",
     0, false},
    /* An activation whose input has two readers is not fused, and a conv output read twice. */
    {"conv_relu_two_readers", "[4,6,6]",
     "[{'op':'Conv2d','name':'c','in_channels':4,'out_channels':8,'kernel_size':3,'padding':1},"
     "{'op':'ReLU','id':'r'},{'op':'Tanh','id':'t','inputs':['c']},"
     "{'op':'Cat','dim':1,'inputs':['r','t']}]",
     0, false},
    /* A residual sum followed by several activations: one convolution with the post-ops sum,
     * clip (ReLU6), linear and clip (Hardsigmoid). */
    {"residual_sum_then_two_activations", "[16,9,7]",
     "[{'op':'Conv2d','name':'a','in_channels':16,'out_channels':4,'kernel_size':1,'bias':false},"
     "{'op':'Conv2d','name':'b','in_channels':16,'out_channels':4,'kernel_size':5,'padding':2,"
     "'bias':false,'inputs':['input']},"
     "{'op':'Add','inputs':['a','b']},{'op':'ReLU6'},{'op':'Hardsigmoid'}]",
     3.0, false},
    /* The same activation kind twice with different bounds in one chain (ReLU6's clip to 6,
     * Hardsigmoid's clip to 1): oneDNN 2.6's 1x1 and summing convolutions apply the first bounds
     * to both, so the engine runs the second one apart. */
    {"conv1x1_relu6_hardsigmoid", "[16,9,7]",
     "[{'op':'Conv2d','name':'b','in_channels':16,'out_channels':4,'kernel_size':1},"
     "{'op':'ReLU6'},{'op':'Hardsigmoid'}]",
     3.0, false},
    {"linear_leaky_leaky", "[16]",
     "[{'op':'Linear','name':'b','in_features':16,'out_features':8},"
     "{'op':'LeakyReLU','negative_slope':0.1},{'op':'LeakyReLU','negative_slope':0.5}]",
     3.0, false},
    /* A Flatten is a view of its input's buffer: an op writing in place over the view must not
     * destroy the input while another layer still reads it. */
    {"flatten_view_not_overwritten_2d", "[12]",
     "[{'op':'Linear','name':'a','in_features':12,'out_features':8},"
     "{'op':'Flatten','id':'f'},{'op':'ReLU','id':'r','inputs':['f']},"
     "{'op':'Add','inputs':['r','a']}]",
     0, false},
    {"flatten_view_not_overwritten_4d", "[4,3,3]",
     "[{'op':'Conv2d','name':'c','in_channels':4,'out_channels':4,'kernel_size':1},"
     "{'op':'Flatten','id':'f'},{'op':'Tanh','id':'t','inputs':['f']},"
     "{'op':'Flatten','id':'g','inputs':['c']},{'op':'Add','inputs':['t','g']}]",
     0, false},
    /* A shared conv (weights used twice) and a graph whose output is a Flatten of a pool. */
    {"mean_keepdim_flatten_linear", "[6,5,5]",
     "[{'op':'Mean','dim':[2,3],'keepdim':true},{'op':'Flatten'},"
     "{'op':'Linear','name':'fc','in_features':6,'out_features':4}]",
     0, false},

    /* The notebook's networks, shrunk to small inputs. */
    {"seq_basic", "[3,10,10]",
     "[{'op':'Conv2d','name':'0','in_channels':3,'out_channels':32,'kernel_size':3},"
     "{'op':'ReLU'},"
     "{'op':'Conv2d','name':'2','in_channels':32,'out_channels':64,'kernel_size':3}]",
     0, false},
    {"cnn_basic", "[3,8,8]",
     "[{'op':'Conv2d','name':'conv_1','in_channels':3,'out_channels':32,'kernel_size':3},"
     "{'op':'ReLU'},"
     "{'op':'Conv2d','name':'conv_2','in_channels':32,'out_channels':64,'kernel_size':3},"
     "{'op':'Flatten'},"
     "{'op':'Linear','name':'layer_1','in_features':1024,'out_features':128},"
     "{'op':'ReLU'},"
     "{'op':'Linear','name':'layer_2','in_features':128,'out_features':5}]",
     0, false},
    {"cnn_bn", "[3,8,8]",
     "[{'op':'Conv2d','name':'conv.0','in_channels':3,'out_channels':32,'kernel_size':3,"
     "'bias':false},{'op':'BatchNorm2d','name':'conv.1','num_features':32,'eps':1e-05},"
     "{'op':'ReLU'},"
     "{'op':'Conv2d','name':'conv.3','in_channels':32,'out_channels':64,'kernel_size':[3,3],"
     "'stride':[1,1],'padding':[0,0],'dilation':[1,1],'groups':1,'bias':false},"
     "{'op':'BatchNorm2d','name':'conv.4','num_features':64},{'op':'ReLU'},"
     "{'op':'Flatten','start_dim':1,'end_dim':-1},"
     "{'op':'Linear','name':'fc.0','in_features':1024,'out_features':128},"
     "{'op':'ReLU'},{'op':'Dropout','p':0.5},"
     "{'op':'Linear','name':'fc.3','in_features':128,'out_features':10}]",
     0, false},
};

/* One tensor of a test model, in PyTorch's layout. */
typedef struct {
    char name[TENSOR_NAME];
    int rank;
    int64_t shape[4];
    float *data;
} test_tensor;

/* The weights of a test model: the tensors to write, and per layer what ref_layer needs. */
typedef struct {
    test_tensor t[MAX_TENSORS];
    size_t n;
    ref_params *params; /* one per layer, pointing into t[].data */
    size_t n_layers;
} test_weights;

/* xorshift64: deterministic, so a failure reproduces exactly. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static float rng_uniform(uint64_t *s, double lo, double hi)
{
    const double unit = (double)(rng_next(s) >> 11) / 9007199254740992.0; /* 53 bits -> [0, 1) */
    return (float)(lo + (hi - lo) * unit);
}

static void rng_fill(uint64_t *s, float *v, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        v[i] = rng_uniform(s, lo, hi);
}

static size_t shape_count(const spec_shape *s)
{
    size_t n = 1;
    for (int i = 0; i < s->rank; i++)
        n *= (size_t)s->d[i];
    return n;
}

static void weights_destroy(test_weights *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++)
        free(w->t[i].data);
    free(w->params);
    free(w);
}

/* Adds "<layer>.<suffix>" with the given shape, filled uniformly from [lo, hi]; NULL when full. */
static float *weights_add(test_weights *w, const char *layer, const char *suffix, int rank,
                          const int64_t *shape, uint64_t *rng, double lo, double hi)
{
    if (w->n >= MAX_TENSORS)
        return NULL;
    test_tensor *t = &w->t[w->n];
    size_t count = 1;
    snprintf(t->name, sizeof t->name, "%s.%s", layer, suffix);
    t->rank = rank;
    for (int i = 0; i < rank; i++) {
        t->shape[i] = shape[i];
        count *= (size_t)shape[i];
    }
    t->data = malloc(count * sizeof *t->data);
    if (!t->data)
        return NULL;
    rng_fill(rng, t->data, count, lo, hi);
    w->n++;
    return t->data;
}

/* Random weights for every layer of a parsed model, scaled like PyTorch's default init
 * (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) so activations stay of order one through a chain, and
 * BatchNorm statistics that move the values visibly (positive variances). */
static test_weights *weights_create(const spec_model *sm, uint64_t *rng)
{
    test_weights *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->n_layers = sm->n_layers;
    w->params = calloc(sm->n_layers ? sm->n_layers : 1, sizeof *w->params);
    if (!w->params)
        goto error;
    for (size_t i = 0; i < sm->n_layers; i++) {
        const spec_layer *l = &sm->layers[i];
        ref_params *p = &w->params[i];
        if (l->op == SPEC_CONV2D) {
            const int64_t shape[4] = {l->out_channels, l->in_channels / l->groups, l->kernel[0],
                                      l->kernel[1]};
            const double bound = 1.0 / sqrt((double)(shape[1] * shape[2] * shape[3]));
            if (!(p->weight = weights_add(w, l->name, "weight", 4, shape, rng, -bound, bound)))
                goto error;
            if (l->bias &&
                !(p->bias = weights_add(w, l->name, "bias", 1, shape, rng, -bound, bound)))
                goto error;
        } else if (l->op == SPEC_LINEAR) {
            const int64_t shape[2] = {l->out_features, l->in_features};
            const double bound = 1.0 / sqrt((double)l->in_features);
            if (!(p->weight = weights_add(w, l->name, "weight", 2, shape, rng, -bound, bound)))
                goto error;
            if (l->bias &&
                !(p->bias = weights_add(w, l->name, "bias", 1, shape, rng, -bound, bound)))
                goto error;
        } else if (l->op == SPEC_BATCHNORM2D) {
            const int64_t shape[1] = {l->num_features};
            if (l->affine) {
                if (!(p->weight = weights_add(w, l->name, "weight", 1, shape, rng, -1.5, 1.5)) ||
                    !(p->bias = weights_add(w, l->name, "bias", 1, shape, rng, -0.5, 0.5)))
                    goto error;
            }
            if (!(p->running_mean =
                      weights_add(w, l->name, "running_mean", 1, shape, rng, -0.5, 0.5)) ||
                !(p->running_var = weights_add(w, l->name, "running_var", 1, shape, rng, 0.3, 2.0)))
                goto error;
        }
    }
    return w;
error:
    weights_destroy(w);
    return NULL;
}

/* Parameter count of a weights set as PyTorch counts it: everything but the running statistics. */
static int64_t weights_params(const test_weights *w)
{
    int64_t total = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (strstr(w->t[i].name, ".running_"))
            continue;
        int64_t count = 1;
        for (int d = 0; d < w->t[i].rank; d++)
            count *= w->t[i].shape[d];
        total += count;
    }
    return total;
}

/* Drops the tensor with the given name, as if the exporter had forgotten it. */
static void weights_remove(test_weights *w, const char *name)
{
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0) {
            free(w->t[i].data);
            memmove(&w->t[i], &w->t[i + 1], (w->n - i - 1) * sizeof w->t[0]);
            w->n--;
            return;
        }
}

/* model.json for a case; `with_weights` adds "weights": "model.safetensors". Caller frees. */
static char *case_json(const char *name, const char *input, const char *layers, bool with_weights)
{
#define CASE_JSON_FORMAT "{'name':'%s',%s'input':{'shape':%s},'layers':%s}"
    const char *weights = with_weights ? "'weights':'model.safetensors'," : "";
    const int len = snprintf(NULL, 0, CASE_JSON_FORMAT, name, weights, input, layers);
    char *json = malloc((size_t)len + 1);
    if (!json)
        return NULL;
    snprintf(json, (size_t)len + 1, CASE_JSON_FORMAT, name, weights, input, layers);
#undef CASE_JSON_FORMAT
    for (char *c = json; *c; c++)
        if (*c == '\'')
            *c = '"';
    return json;
}

static bool spec_has_weights(const spec_model *sm)
{
    for (size_t i = 0; i < sm->n_layers; i++) {
        const spec_op op = sm->layers[i].op;
        if (op == SPEC_CONV2D || op == SPEC_LINEAR || op == SPEC_BATCHNORM2D)
            return true;
    }
    return false;
}

static char *path_join(char *buf, size_t len, const char *dir, const char *file)
{
    snprintf(buf, len, "%s/%s", dir, file);
    return buf;
}

/* Writes model.json and, when w is not NULL, model.safetensors into dir; removes a stale
 * safetensors file otherwise. Returns false (after printing why) on failure. */
static bool write_model(const char *dir, const char *json, const test_weights *w)
{
    char path[4096], err[ERR_LEN];
    FILE *f = fopen(path_join(path, sizeof path, dir, "model.json"), "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        return false;
    }
    const size_t len = strlen(json);
    const bool ok = fwrite(json, 1, len, f) == len;
    if (fclose(f) != 0 || !ok) {
        fprintf(stderr, "cannot write %s\n", path);
        return false;
    }
    path_join(path, sizeof path, dir, "model.safetensors");
    if (!w) {
        unlink(path);
        return true;
    }
    const char *names[MAX_TENSORS];
    int ranks[MAX_TENSORS];
    const int64_t *shapes[MAX_TENSORS];
    const float *data[MAX_TENSORS];
    for (size_t i = 0; i < w->n; i++) {
        names[i] = w->t[i].name;
        ranks[i] = w->t[i].rank;
        shapes[i] = w->t[i].shape;
        data[i] = w->t[i].data;
    }
    if (st_write_f32(path, w->n, names, ranks, shapes, data, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "st_write_f32 %s: %s\n", path, err);
        return false;
    }
    return true;
}

/* Runs the reference through every layer for an input of `rank` dims. Returns the malloc'd
 * output and its shape, or NULL (after printing why). */
static float *ref_forward(const char *name, const spec_model *sm, const test_weights *w,
                          const int64_t *dims, int rank, const float *x, spec_shape *out_shape)
{
    char err[ERR_LEN];
    int bad = -1;
    spec_shape *shapes = calloc(sm->n_layers + 1, sizeof *shapes);
    spec_padding *pads = calloc(sm->n_layers + 1, sizeof *pads);
    float *cur = NULL, **outs = NULL;
    spec_shape *ins = NULL;
    const float **xs = NULL;
    if (!shapes || !pads)
        goto done;
    if (spec_infer(sm, dims, rank, shapes, pads, &bad, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "case %s: spec_infer failed at layer %d: %s\n", name, bad, err);
        goto done;
    }
    /* Every layer's output is kept, since a later layer may read any earlier one. */
    spec_shape in = {.rank = rank};
    memcpy(in.d, dims, (size_t)rank * sizeof *dims);
    outs = calloc(sm->n_layers, sizeof *outs);
    ins = calloc(SPEC_MAX_INPUTS, sizeof *ins);
    xs = calloc(SPEC_MAX_INPUTS, sizeof *xs);
    if (!outs || !ins || !xs)
        goto done;
    for (size_t i = 0; i < sm->n_layers; i++) {
        const spec_layer *l = &sm->layers[i];
        for (int k = 0; k < l->n_inputs; k++) {
            int src = l->inputs[k];
            ins[k] = src == SPEC_INPUT ? in : shapes[src];
            xs[k] = src == SPEC_INPUT ? x : outs[src];
        }
        outs[i] = malloc((shape_count(&shapes[i]) + 1) * sizeof *outs[i]);
        if (!outs[i] || ref_layer(l, &pads[i], &w->params[i], ins, xs, &shapes[i], outs[i]) != 0) {
            fprintf(stderr, "case %s: ref_layer failed at layer %zu (%s)\n", name, i,
                    spec_op_name(l->op));
            goto done;
        }
    }
    cur = outs[sm->n_layers - 1];
    outs[sm->n_layers - 1] = NULL;
    *out_shape = shapes[sm->n_layers - 1];
done:
    for (size_t i = 0; outs && i < sm->n_layers; i++)
        free(outs[i]);
    free(outs);
    free(ins);
    free(xs);
    free(shapes);
    free(pads);
    return cur;
}

/* Runs one batch through the engine and the reference and compares them. */
static void check_batch(const char *name, const spec_model *sm, const test_weights *w,
                        engine_runner *r, const int64_t *dims, int rank, double scale,
                        uint64_t *rng)
{
    char err[ERR_LEN] = "", shape_buf[64];
    spec_shape in = {.rank = rank}, ref_shape = {0};
    memcpy(in.d, dims, (size_t)rank * sizeof *dims);
    const size_t n = shape_count(&in);
    float *x = malloc(n * sizeof *x);
    float *ref = NULL;
    if (!x) {
        CHECK(x != NULL);
        return;
    }
    rng_fill(rng, x, n, -scale, scale);
    ref = ref_forward(name, sm, w, dims, rank, x, &ref_shape);
    CHECK(ref != NULL);
    engine_tensor out = {0};
    const engine_status st = engine_runner_run(r, x, dims, rank, &out, err, sizeof err);
    if (st != ENGINE_OK)
        fprintf(stderr, "case %s: engine_runner_run %s: %s\n", name,
                spec_shape_format(&in, shape_buf, sizeof shape_buf), err);
    CHECK_INT(st, ENGINE_OK);
    if (st != ENGINE_OK || !ref)
        goto done;

    bool same_shape = out.rank == ref_shape.rank && out.count == shape_count(&ref_shape);
    for (int i = 0; same_shape && i < out.rank; i++)
        same_shape = out.dims[i] == ref_shape.d[i];
    if (!same_shape) {
        spec_shape got = {.rank = out.rank};
        memcpy(got.d, out.dims, sizeof got.d);
        char ref_buf[64];
        fprintf(stderr, "case %s: output shape %s, reference %s\n", name,
                spec_shape_format(&got, shape_buf, sizeof shape_buf),
                spec_shape_format(&ref_shape, ref_buf, sizeof ref_buf));
        CHECK(same_shape);
        goto done;
    }
    double max_err = 0.0, max_ref = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < out.count; i++) {
        double e = fabs((double)out.data[i] - (double)ref[i]);
        if (isnan(e))
            e = INFINITY; /* a NaN from the engine must fail, not compare as small */
        if (e > max_err) {
            max_err = e;
            worst = i;
        }
        max_ref = fmax(max_ref, fabs((double)ref[i]));
    }
    const double tol = REL_TOL * fmax(1.0, max_ref);
    if (!(max_err <= tol))
        fprintf(stderr,
                "case %s: input %s: max abs error %.3g at flat index %zu (expected %.9g, got "
                "%.9g), tolerance %.3g\n",
                name, spec_shape_format(&in, shape_buf, sizeof shape_buf), max_err, worst,
                (double)ref[worst], (double)out.data[worst], tol);
    CHECK(max_err <= tol);
done:
    free(x);
    free(ref);
}

/* Fills dims with [n, sample...] for a parsed model's configured input; returns the rank. */
static int batch_dims(const spec_model *sm, int64_t n, int64_t *dims)
{
    dims[0] = n;
    for (int i = 0; i < sm->input_rank; i++)
        dims[1 + i] = sm->input_dims[i];
    return 1 + sm->input_rank;
}

/* A case the engine may refuse (see layer_case.may_reject) and model.json already refuses: the
 * engine must refuse it too, with ENGINE_E_MODEL and a message, rather than run it wrongly. */
static void check_rejected(const char *dir, const layer_case *c)
{
    char err[ERR_LEN] = "";
    char *json = case_json(c->name, c->input, c->layers, false);
    if (!json || !write_model(dir, json, NULL)) {
        CHECK(!"cannot write the model");
        free(json);
        return;
    }
    engine_model *m = NULL;
    const engine_status st = engine_model_load(dir, NULL, &m, err, sizeof err);
    engine_model_destroy(m);
    CHECK_INT(st, ENGINE_E_MODEL);
    CHECK(err[0] != '\0');
    printf("case %s: rejected at load (allowed): %s\n", c->name, err);
    free(json);
}

/* Builds, loads and runs one table case at every batch size. */
static void run_case(const char *dir, const layer_case *c, uint64_t *rng)
{
    char err[ERR_LEN] = "";
    spec_model *sm = NULL;
    test_weights *w = NULL;
    engine_model *m = NULL;
    engine_runner *r = NULL;
    char *json = case_json(c->name, c->input, c->layers, true);
    if (!json) {
        CHECK(json != NULL);
        goto done;
    }
    if (spec_parse(json, strlen(json), &sm, err, sizeof err) != ENGINE_OK) {
        if (c->may_reject) {
            check_rejected(dir, c);
            goto done;
        }
        fprintf(stderr, "case %s: spec_parse: %s\n", c->name, err);
        CHECK(sm != NULL);
        goto done;
    }
    if (!spec_has_weights(sm)) {
        /* A parameterless model needs no weights file at all. */
        free(json);
        json = case_json(c->name, c->input, c->layers, false);
    }
    w = weights_create(sm, rng);
    CHECK(w != NULL);
    if (!json || !w || !write_model(dir, json, spec_has_weights(sm) ? w : NULL)) {
        CHECK(!"cannot write the model");
        goto done;
    }
    const engine_status st = engine_model_load(dir, NULL, &m, err, sizeof err);
    if (st == ENGINE_E_MODEL && c->may_reject && err[0]) {
        printf("case %s: rejected at load (allowed): %s\n", c->name, err);
        goto done;
    }
    if (st != ENGINE_OK)
        fprintf(stderr, "case %s: engine_model_load: %s\n", c->name, err);
    CHECK_INT(st, ENGINE_OK);
    if (st != ENGINE_OK)
        goto done;
    /* A parameterless model has no weights file, which the engine calls random weights. */
    CHECK(engine_model_random_weights(m) == !spec_has_weights(sm));
    CHECK_INT(engine_model_params(m), weights_params(w));
    if (engine_runner_create(m, NULL, &r, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "case %s: engine_runner_create: %s\n", c->name, err);
        CHECK(r != NULL);
        goto done;
    }
    for (size_t b = 0; b < sizeof BATCH_SIZES / sizeof BATCH_SIZES[0]; b++) {
        int64_t dims[SPEC_MAX_RANK];
        const int rank = batch_dims(sm, BATCH_SIZES[b], dims);
        check_batch(c->name, sm, w, r, dims, rank, c->input_scale > 0 ? c->input_scale : 1.0, rng);
    }
done:
    engine_runner_destroy(r);
    engine_model_destroy(m);
    weights_destroy(w);
    spec_destroy(sm);
    free(json);
}

/* Loads a model whose files were written by the caller; returns the status and fills err. */
static engine_status load_only(const char *dir, char *err, size_t errlen)
{
    engine_model *m = NULL;
    err[0] = '\0';
    const engine_status st = engine_model_load(dir, NULL, &m, err, errlen);
    engine_model_destroy(m);
    return st;
}

/* Parses `json` and writes it with weights generated from `weights_json` (the same model unless
 * a test wants the files to disagree). Returns the weights (caller destroys) or NULL. */
static test_weights *write_pair(const char *dir, const char *json, const char *weights_json,
                                uint64_t *rng)
{
    char err[ERR_LEN] = "";
    spec_model *sm = NULL;
    test_weights *w = NULL;
    if (spec_parse(weights_json, strlen(weights_json), &sm, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "write_pair: spec_parse: %s\n", err);
        CHECK(sm != NULL);
        return NULL;
    }
    w = weights_create(sm, rng);
    spec_destroy(sm);
    if (!w || !write_model(dir, json, w)) {
        CHECK(!"cannot write the model");
        weights_destroy(w);
        return NULL;
    }
    return w;
}

/* The message with spaces removed and parentheses turned into brackets, so that "(4, 3, 5, 5)"
 * and "[4,3,5,5]" both match "[4,3,5,5]". */
static void squash(const char *in, char *out, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; in[i] && j + 1 < len; i++) {
        if (in[i] == ' ')
            continue;
        out[j++] = in[i] == '(' ? '[' : in[i] == ')' ? ']' : in[i];
    }
    out[j] = '\0';
}

/* Inputs that do not fit the model are refused with ENGINE_E_INPUT and a message, and the runner
 * still works afterwards. */
static void test_wrong_input(const char *dir, uint64_t *rng)
{
    static const char *const layers =
        "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':3}]";
    char err[ERR_LEN];
    char *json = case_json("wrong_input", "[3,8,8]", layers, true);
    spec_model *sm = NULL;
    engine_model *m = NULL;
    engine_runner *r = NULL;
    test_weights *w = json ? write_pair(dir, json, json, rng) : NULL;
    if (!w || spec_parse(json, strlen(json), &sm, err, sizeof err) != ENGINE_OK ||
        engine_model_load(dir, NULL, &m, err, sizeof err) != ENGINE_OK ||
        engine_runner_create(m, NULL, &r, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "wrong_input: setup failed: %s\n", err);
        CHECK(!"wrong_input setup");
        goto done;
    }
    static const struct {
        const char *what;
        int rank;
        int64_t dims[4];
    } bad[] = {
        {"channels 4 instead of 3", 4, {1, 4, 8, 8}},
        {"height 9 instead of 8", 4, {2, 3, 9, 8}},
        {"rank 3", 3, {1, 3, 8, 0}},
        {"rank 2", 2, {1, 192, 0, 0}},
        {"batch 0", 4, {0, 3, 8, 8}},
    };
    static const float zeros[2 * 4 * 9 * 8];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        engine_tensor out = {0};
        err[0] = '\0';
        const engine_status st =
            engine_runner_run(r, zeros, bad[i].dims, bad[i].rank, &out, err, sizeof err);
        if (st != ENGINE_E_INPUT || !err[0])
            fprintf(stderr, "wrong_input %s: status %d, message \"%s\"\n", bad[i].what, (int)st,
                    err);
        CHECK_INT(st, ENGINE_E_INPUT);
        CHECK(err[0] != '\0');
    }
    const int64_t good[4] = {2, 3, 8, 8};
    check_batch("wrong_input_then_good", sm, w, r, good, 4, 1.0, rng);
done:
    engine_runner_destroy(r);
    engine_model_destroy(m);
    spec_destroy(sm);
    weights_destroy(w);
    free(json);
}

/* A layer chain that does not fit fails at load, naming the layer and both sizes. */
static void test_chain_mismatch(const char *dir, uint64_t *rng)
{
    static const struct {
        const char *what, *input, *layers;
        const char *expect[4]; /* fragments of the message, spaces removed */
    } cases[] = {
        {"linear_in_features",
         "[3,2,2]",
         "[{'op':'Flatten'},{'op':'Linear','name':'fc','in_features':10,'out_features':5}]",
         {"Linear", "'fc'", "10", "12"}},
        {"conv_in_channels",
         "[3,8,8]",
         "[{'op':'Conv2d','name':'c1','in_channels':3,'out_channels':8,'kernel_size':3},"
         "{'op':'Conv2d','name':'c2','in_channels':4,'out_channels':8,'kernel_size':3}]",
         {"Conv2d", "'c2'", "4", "8"}},
        {"linear_after_linear",
         "[6]",
         "[{'op':'Linear','name':'fc1','in_features':6,'out_features':7},"
         "{'op':'Linear','name':'fc2','in_features':8,'out_features':2}]",
         {"Linear", "'fc2'", "8", "7"}},
    };
    char err[ERR_LEN], flat[ERR_LEN];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *json = case_json(cases[i].what, cases[i].input, cases[i].layers, true);
        test_weights *w = json ? write_pair(dir, json, json, rng) : NULL;
        if (w) {
            const engine_status st = load_only(dir, err, sizeof err);
            squash(err, flat, sizeof flat);
            if (st != ENGINE_E_MODEL)
                fprintf(stderr, "chain %s: status %d, message \"%s\"\n", cases[i].what, (int)st,
                        err);
            CHECK_INT(st, ENGINE_E_MODEL);
            for (int k = 0; k < 4 && cases[i].expect[k]; k++)
                CHECK_CONTAINS(flat, cases[i].expect[k]);
        }
        weights_destroy(w);
        free(json);
    }
}

/* A weights file that does not match model.json fails at load, naming the tensor and, for a
 * wrong shape, both shapes. */
static void test_bad_tensors(const char *dir, uint64_t *rng)
{
    static const char *const conv_bn =
        "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':3,'bias':false},"
        "{'op':'BatchNorm2d','name':'bn','num_features':4}]";
    static const char *const conv_bias =
        "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':3,'bias':true},"
        "{'op':'BatchNorm2d','name':'bn','num_features':4}]";
    static const char *const conv_k5 =
        "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':4,'kernel_size':5,'bias':false},"
        "{'op':'BatchNorm2d','name':'bn','num_features':4}]";
    static const char *const linear =
        "[{'op':'Linear','name':'fc','in_features':12,'out_features':5}]";
    char err[ERR_LEN], flat[ERR_LEN];
    char *base = case_json("bad_tensors", "[3,8,8]", conv_bn, true);
    char *with_bias = case_json("bad_tensors", "[3,8,8]", conv_bias, true);
    char *k5 = case_json("bad_tensors", "[3,8,8]", conv_k5, true);
    char *lin = case_json("bad_tensors", "[12]", linear, true);
    test_weights *w = NULL;
    if (!base || !with_bias || !k5 || !lin) {
        CHECK(!"out of memory");
        goto done;
    }

    /* model.json asks for c.bias; the file has none. */
    if ((w = write_pair(dir, with_bias, base, rng))) {
        CHECK_INT(load_only(dir, err, sizeof err), ENGINE_E_MODEL);
        CHECK_CONTAINS(err, "c.bias");
    }
    weights_destroy(w);

    /* The running variance of the BatchNorm is missing. */
    if ((w = write_pair(dir, base, base, rng))) {
        weights_remove(w, "bn.running_var");
        if (write_model(dir, base, w)) {
            CHECK_INT(load_only(dir, err, sizeof err), ENGINE_E_MODEL);
            CHECK_CONTAINS(err, "bn.running_var");
        }
    }
    weights_destroy(w);

    /* A 3x3 kernel in the file, 5x5 in model.json. */
    if ((w = write_pair(dir, k5, base, rng))) {
        CHECK_INT(load_only(dir, err, sizeof err), ENGINE_E_MODEL);
        squash(err, flat, sizeof flat);
        CHECK_CONTAINS(flat, "c.weight");
        CHECK_CONTAINS(flat, "[4,3,5,5]");
        CHECK_CONTAINS(flat, "[4,3,3,3]");
    }
    weights_destroy(w);

    /* A Linear weight stored transposed ([in, out] instead of PyTorch's [out, in]). */
    if ((w = write_pair(dir, lin, lin, rng))) {
        for (size_t i = 0; i < w->n; i++)
            if (strcmp(w->t[i].name, "fc.weight") == 0) {
                w->t[i].shape[0] = 12;
                w->t[i].shape[1] = 5;
            }
        if (write_model(dir, lin, w)) {
            CHECK_INT(load_only(dir, err, sizeof err), ENGINE_E_MODEL);
            squash(err, flat, sizeof flat);
            CHECK_CONTAINS(flat, "fc.weight");
            CHECK_CONTAINS(flat, "[5,12]");
            CHECK_CONTAINS(flat, "[12,5]");
        }
    }
    weights_destroy(w);
done:
    free(base);
    free(with_bias);
    free(k5);
    free(lin);
}

/* No "weights" key: PyTorch-style random initialisation, finite outputs, PyTorch's parameter
 * count. */
static void test_random_weights(const char *dir)
{
    static const char *const layers =
        "[{'op':'Conv2d','name':'c','in_channels':3,'out_channels':8,'kernel_size':3},"
        "{'op':'BatchNorm2d','name':'bn','num_features':8},{'op':'ReLU'},{'op':'Flatten'},"
        "{'op':'Linear','name':'fc','in_features':288,'out_features':10}]";
    /* conv 8*3*3*3 + 8, BN weight and bias 2*8, Linear 288*10 + 10. */
    const int64_t expected_params = 8 * 3 * 3 * 3 + 8 + 2 * 8 + 288 * 10 + 10;
    char err[ERR_LEN] = "";
    char *json = case_json("random", "[3,8,8]", layers, false);
    engine_model *m = NULL;
    engine_runner *r = NULL;
    float *x = NULL;
    if (!json || !write_model(dir, json, NULL) ||
        engine_model_load(dir, NULL, &m, err, sizeof err) != ENGINE_OK ||
        engine_runner_create(m, NULL, &r, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "random weights: setup failed: %s\n", err);
        CHECK(!"random weights setup");
        goto done;
    }
    CHECK(engine_model_random_weights(m));
    CHECK_INT(engine_model_params(m), expected_params);
    const int64_t dims[4] = {3, 3, 8, 8};
    const size_t n = 3 * 3 * 8 * 8;
    uint64_t rng = SEED;
    x = malloc(n * sizeof *x);
    if (!x)
        goto done;
    rng_fill(&rng, x, n, -1.0, 1.0);
    engine_tensor out = {0};
    const engine_status st = engine_runner_run(r, x, dims, 4, &out, err, sizeof err);
    if (st != ENGINE_OK)
        fprintf(stderr, "random weights: run: %s\n", err);
    CHECK_INT(st, ENGINE_OK);
    if (st == ENGINE_OK) {
        CHECK_INT(out.count, 3 * 10);
        bool finite = true, nonzero = false;
        for (size_t i = 0; i < out.count; i++) {
            finite = finite && isfinite(out.data[i]);
            nonzero = nonzero || out.data[i] != 0.0f;
        }
        CHECK(finite);
        CHECK(nonzero);
    }
done:
    free(x);
    engine_runner_destroy(r);
    engine_model_destroy(m);
    free(json);
}

/* A model with free H and W runs any size, each with its own plan, and matches the reference. */
static void test_free_size(const char *dir, uint64_t *rng)
{
    static const char *const layers =
        "[{'op':'Conv2d','name':'c1','in_channels':3,'out_channels':16,'kernel_size':3,'padding':1}"
        ","
        "{'op':'ReLU'},{'op':'MaxPool2d','kernel_size':2},"
        "{'op':'Conv2d','name':'c2','in_channels':16,'out_channels':4,'kernel_size':3}]";
    static const int64_t sizes[][4] = {{2, 3, 8, 8}, {3, 3, 11, 7}, {1, 3, 6, 14}, {2, 3, 8, 8}};
    char err[ERR_LEN] = "";
    char *json = case_json("free_size", "[3,-1,-1]", layers, true);
    spec_model *sm = NULL;
    engine_model *m = NULL;
    engine_runner *r = NULL;
    test_weights *w = json ? write_pair(dir, json, json, rng) : NULL;
    if (!w || spec_parse(json, strlen(json), &sm, err, sizeof err) != ENGINE_OK ||
        engine_model_load(dir, NULL, &m, err, sizeof err) != ENGINE_OK ||
        engine_runner_create(m, NULL, &r, err, sizeof err) != ENGINE_OK) {
        fprintf(stderr, "free_size: setup failed: %s\n", err);
        CHECK(!"free_size setup");
        goto done;
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        check_batch("free_size", sm, w, r, sizes[i], 4, 1.0, rng);
    /* 3x3 input: the pool gives 1x1 and the last 3x3 conv cannot run. */
    const int64_t too_small[4] = {1, 3, 3, 3};
    static const float zeros[27];
    engine_tensor out = {0};
    err[0] = '\0';
    CHECK_INT(engine_runner_run(r, zeros, too_small, 4, &out, err, sizeof err), ENGINE_E_INPUT);
    CHECK(err[0] != '\0');
done:
    engine_runner_destroy(r);
    engine_model_destroy(m);
    spec_destroy(sm);
    weights_destroy(w);
    free(json);
}

static void remove_dir(const char *dir)
{
    char path[4096];
    unlink(path_join(path, sizeof path, dir, "model.json"));
    unlink(path_join(path, sizeof path, dir, "model.safetensors"));
    rmdir(dir);
}

/* ---- random graphs ------------------------------------------------------------------------ */

enum {
    RG_GRAPHS = 60,     /* random graphs per run */
    RG_STEPS = 14,      /* building steps per graph (a step may add several layers) */
    RG_MAX_LAYERS = 96, /* layers of one graph, the closing ones included */
    RG_JSON = 32768,    /* bytes of its layers array */
    RG_CAT_MAX_CH = 16, /* a Cat wider than this is brought back to 8 channels by a 1x1 conv */
};

typedef struct {
    char *json;
    size_t len;
    int n;                     /* layers so far */
    int ch[RG_MAX_LAYERS];     /* channels of each layer's output */
    bool small[RG_MAX_LAYERS]; /* a [N, C, 1, 1] inside squeeze-excitation: not picked again */
    int readers[RG_MAX_LAYERS];
    bool overflow;
} rgraph;

static int rg_pick(uint64_t *rng, int n)
{
    return (int)(rng_next(rng) % (uint64_t)n);
}

/* Appends one layer; `inputs` are layer indices (-1 = the model input). Returns its index. */
static int rg_add(rgraph *g, int ch, const char *fields, const int *inputs, int n_inputs)
{
    char refs[256] = "";
    size_t o = 0;
    for (int k = 0; k < n_inputs; k++) {
        if (inputs[k] >= 0)
            g->readers[inputs[k]]++;
        if (inputs[k] < 0)
            o += (size_t)snprintf(refs + o, sizeof refs - o, "%s'input'", k ? "," : "");
        else
            o += (size_t)snprintf(refs + o, sizeof refs - o, "%s'l%d'", k ? "," : "", inputs[k]);
    }
    int n = snprintf(g->json + g->len, RG_JSON - g->len, "%s{%s,'inputs':[%s]}", g->n ? "," : "",
                     fields, refs);
    if (n < 0 || (size_t)n >= RG_JSON - g->len || g->n >= RG_MAX_LAYERS) {
        g->overflow = true;
        return g->n ? g->n - 1 : 0;
    }
    g->len += (size_t)n;
    g->ch[g->n] = ch;
    return g->n++;
}

/* A layer's key: weighted layers are keyed by name, the rest by id ("l7" either way). */
static void rg_key(char *buf, size_t len, const char *op, bool named, int index)
{
    snprintf(buf, len, "'op':'%s','%s':'l%d'", op, named ? "name" : "id", index);
}

/* An earlier layer (or the input) with `ch` channels, or -2 when there is none. */
static int rg_with_channels(const rgraph *g, uint64_t *rng, int ch)
{
    int found[RG_MAX_LAYERS + 1], n = 0;
    if (ch == 4)
        found[n++] = -1;
    for (int i = 0; i < g->n; i++)
        if (g->ch[i] == ch && !g->small[i])
            found[n++] = i;
    return n ? found[rg_pick(rng, n)] : -2;
}

/* Any earlier full-size layer, or the input. */
static int rg_any(const rgraph *g, uint64_t *rng)
{
    for (;;) {
        int j = rg_pick(rng, g->n + 1) - 1;
        if (j < 0 || !g->small[j])
            return j;
    }
}

static int rg_channels(const rgraph *g, int j)
{
    return j < 0 ? 4 : g->ch[j];
}

/* One random building step: a conv, a BatchNorm, an activation, an Add of same-width tensors,
 * squeeze-excitation, a Cat, pooling, a no-op. */
static void rg_step(rgraph *g, uint64_t *rng)
{
    static const char *const acts[] = {"ReLU",    "ReLU6", "SiLU",        "Hardswish",
                                       "Sigmoid", "Tanh",  "Hardsigmoid", "LeakyReLU"};
    char key[64], f[256];
    int i = g->n, j = rg_any(g, rng), c = rg_channels(g, j);
    switch (rg_pick(rng, 9)) {
    case 0:
    case 1: {
        int oc = rg_pick(rng, 2) ? 8 : 4, k = rg_pick(rng, 2) ? 3 : 1;
        rg_key(key, sizeof key, "Conv2d", true, i);
        snprintf(f, sizeof f,
                 "%s,'in_channels':%d,'out_channels':%d,'kernel_size':%d,'padding':%d,"
                 "'bias':%s",
                 key, c, oc, k, k / 2, rg_pick(rng, 2) ? "true" : "false");
        rg_add(g, oc, f, &j, 1);
        break;
    }
    case 2:
        rg_key(key, sizeof key, "BatchNorm2d", true, i);
        snprintf(f, sizeof f, "%s,'num_features':%d", key, c);
        rg_add(g, c, f, &j, 1);
        break;
    case 3:
        rg_key(key, sizeof key, acts[rg_pick(rng, 8)], false, i);
        rg_add(g, c, key, &j, 1);
        break;
    case 4: {
        int in[3] = {j, rg_with_channels(g, rng, c), rg_with_channels(g, rng, c)};
        rg_key(key, sizeof key, "Add", false, i);
        rg_add(g, c, key, in, 2 + rg_pick(rng, 2));
        break;
    }
    case 5: {
        /* Squeeze-excitation over j: pool, 1x1 conv, gate, Mul (either way round). */
        rg_key(key, sizeof key, "AdaptiveAvgPool2d", false, i);
        snprintf(f, sizeof f, "%s,'output_size':1", key);
        int p = rg_add(g, c, f, &j, 1);
        g->small[p] = true;
        rg_key(key, sizeof key, "Conv2d", true, g->n);
        snprintf(f, sizeof f, "%s,'in_channels':%d,'out_channels':%d,'kernel_size':1", key, c, c);
        int q = rg_add(g, c, f, &p, 1);
        g->small[q] = true;
        rg_key(key, sizeof key, rg_pick(rng, 2) ? "Sigmoid" : "Hardsigmoid", false, g->n);
        int s = rg_add(g, c, key, &q, 1);
        g->small[s] = true;
        int in[2] = {rg_pick(rng, 2) ? s : j, 0};
        in[1] = in[0] == s ? j : s;
        rg_key(key, sizeof key, "Mul", false, g->n);
        rg_add(g, c, key, in, 2);
        break;
    }
    case 6: {
        int in[3] = {j, rg_any(g, rng), rg_any(g, rng)}, n = 2 + rg_pick(rng, 2), sum = 0;
        for (int k = 0; k < n; k++)
            sum += rg_channels(g, in[k]);
        rg_key(key, sizeof key, "Cat", false, i);
        snprintf(f, sizeof f, "%s,'dim':1", key);
        int cat = rg_add(g, sum, f, in, n);
        if (sum > RG_CAT_MAX_CH) {
            rg_key(key, sizeof key, "Conv2d", true, g->n);
            snprintf(f, sizeof f, "%s,'in_channels':%d,'out_channels':8,'kernel_size':1", key, sum);
            rg_add(g, 8, f, &cat, 1);
        }
        break;
    }
    case 7:
        rg_key(key, sizeof key, rg_pick(rng, 2) ? "MaxPool2d" : "AvgPool2d", false, i);
        snprintf(f, sizeof f, "%s,'kernel_size':3,'stride':1,'padding':1", key);
        rg_add(g, c, f, &j, 1);
        break;
    default:
        rg_key(key, sizeof key, rg_pick(rng, 2) ? "Identity" : "Dropout", false, i);
        rg_add(g, c, key, &j, 1);
        break;
    }
}

/* A random graph over [4, 5, 6] inputs; every output that nothing reads joins a final Cat, then a
 * 1x1 conv, Flatten and Linear, so that no branch is unused. */
static bool rg_build(uint64_t *rng, char *json)
{
    rgraph g = {.json = json};
    g.json[0] = '[';
    g.len = 1;
    int first = -1;
    rg_add(&g, 4, "'op':'ReLU','id':'l0'", &first, 1);
    for (int s = 0; s < RG_STEPS && !g.overflow; s++)
        rg_step(&g, rng);
    int loose[RG_MAX_LAYERS] = {0}, n = 0, ch = 0;
    for (int i = 0; i < g.n; i++)
        if (g.readers[i] == 0) {
            loose[n++] = i;
            ch += g.ch[i];
        }
    char key[64], f[256];
    int last = loose[0];
    if (n > 1) {
        rg_key(key, sizeof key, "Cat", false, g.n);
        snprintf(f, sizeof f, "%s,'dim':1", key);
        last = rg_add(&g, ch, f, loose, n > 8 ? 8 : n);
        if (n > 8) /* more loose ends than one Cat takes here: merge the rest in a second Cat */
            return false;
    }
    rg_key(key, sizeof key, "Conv2d", true, g.n);
    snprintf(f, sizeof f, "%s,'in_channels':%d,'out_channels':6,'kernel_size':1", key, g.ch[last]);
    last = rg_add(&g, 6, f, &last, 1);
    rg_key(key, sizeof key, "Flatten", false, g.n);
    last = rg_add(&g, 6, key, &last, 1);
    rg_key(key, sizeof key, "Linear", true, g.n);
    snprintf(f, sizeof f, "%s,'in_features':180,'out_features':10", key);
    rg_add(&g, 10, f, &last, 1);
    if (g.overflow || g.len + 2 > RG_JSON)
        return false;
    g.json[g.len++] = ']';
    g.json[g.len] = '\0';
    return true;
}

/* Random graphs of every op and fusion pattern, each against the reference at every batch size:
 * the lowering and the buffer planner (in-place writes, fused sums, views) see shapes of reuse
 * no hand-written case thought of. */
static void test_random_graphs(const char *dir, uint64_t *rng)
{
    char *json = malloc(RG_JSON);
    char name[32];
    int built = 0;
    for (int k = 0; json && k < RG_GRAPHS; k++) {
        if (!rg_build(rng, json))
            continue;
        snprintf(name, sizeof name, "random_graph_%d", k);
        layer_case c = {name, "[4,5,6]", json, 0, false};
        const int before = check_failures;
        run_case(dir, &c, rng);
        if (check_failures != before)
            fprintf(stderr, "FAILED: %s: %s\n", name, json);
        built++;
    }
    CHECK(built >= RG_GRAPHS / 2);
    printf("%d random graphs at batch sizes 1, 3 and 8\n", built);
    free(json);
}

int main(void)
{
    char dir[] = "/tmp/convserve-test-layers-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    uint64_t rng = SEED;
    const size_t n_cases = sizeof CASES / sizeof CASES[0];
    for (size_t i = 0; i < n_cases; i++) {
        const int before = check_failures;
        run_case(dir, &CASES[i], &rng);
        if (check_failures != before)
            fprintf(stderr, "FAILED: %s\n", CASES[i].name);
    }
    test_free_size(dir, &rng);
    test_wrong_input(dir, &rng);
    test_chain_mismatch(dir, &rng);
    test_bad_tensors(dir, &rng);
    test_random_weights(dir);
    test_random_graphs(dir, &rng);
    remove_dir(dir);
    printf("%zu layer cases at batch sizes 1, 3 and 8\n", n_cases);
    return check_report("layers");
}
