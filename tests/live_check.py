"""Live cross-check of the C engine against PyTorch on freshly generated random networks.

    /usr/bin/python3 tests/live_check.py --runner build/tests/test_networks [--seed S] [--count N]

Generates N small random networks (default 64, one per feature) that together cover every layer
option the engine supports: Conv2d with stride, numeric / 'same' / 'valid' padding, dilation,
groups and depthwise, rectangular kernels, with and without bias; BatchNorm2d folded after a conv and
standalone after an activation (affine or not); ReLU, LeakyReLU, Sigmoid, Tanh, GELU (erf and tanh),
ReLU6, Hardswish, Hardsigmoid, SiLU (after a conv or a Linear, and standalone); Softmax and
LogSoftmax on 2-D and 4-D tensors; MaxPool2d (padding, dilation, ceil_mode); AvgPool2d
(count_include_pad both ways, ceil_mode with count_include_pad=False); AdaptiveAvgPool2d (global,
divisible and non-dividing sizes); Dropout, Dropout2d, Identity, StochasticDepth; Flatten + Linear,
Linear -> Linear, conv-only nets with 4-D output (some with a free input H and W), MLPs on [N, F]
input; module and functional forms (torch.flatten, x.view(x.size(0), -1), F.relu, F.max_pool2d,
...). And graphs: residual blocks (conv-bn-add-relu with the conv's operand first or second, 1x1
projection shortcuts, Adds of three terms, an Add of two convs, spelled +, += and torch.add),
concatenations (Inception-like branches, SqueezeNet's Fire, DenseNet's growing cats, a conv read
by a Cat and by another layer), squeeze-excitation (AdaptiveAvgPool2d or Mean, conv, act, conv,
Sigmoid or Hardsigmoid, Mul in every order; and on [N, C] features with Linear layers), Mean with and
without keepdim. Network i is built around one "focus" feature (round robin), plus random layers
and blocks, so N >= the number of features covers them all.

Each network gets He-uniform weights and random BatchNorm statistics, is exported with
tools/export_model.py into a temporary folder with cases.safetensors (batch sizes 1, 3 and 8), and
the runner is called once on all folders; it must exit 0. Every network's seed is printed: replay a
failure with --seed S (all of them) or --net-seed N --focus F (one). Failed folders are kept.
Exits 77 (CTest's skip code) when /usr/bin/python3 cannot import torch.
"""

import argparse
import functools
import os
import random
import shutil
import subprocess
import sys
import tempfile
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision
except ImportError:
    print("live_check: torch or torchvision is not importable by this Python; run it with "
          "/usr/bin/python3 and install Debian's python3-torch and python3-torchvision. Skipping.")
    sys.exit(77)

from cases import (check_folder, make_cases, randomize_batchnorm,  # noqa: E402
                   randomize_weights, write_cases)
from export_model import export, module_fields  # noqa: E402

# PyTorch warns that padding='same' with an even kernel copies the input; that is what we test.
warnings.filterwarnings("ignore", message="Using padding='same'")

BATCHES = (1, 3, 8)
MAX_FEATURES = 2048  # flattened features fed to a Linear
MAX_ACTIVATION = 16 * 32 * 32  # elements of one sample's activation
ATTEMPTS = 50  # tries to build a network that includes its focus feature

ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh", "gelu_none", "gelu_tanh", "relu6",
               "hardswish", "hardsigmoid", "silu"]
BODY_FEATURES = [
    "conv", "conv_stride", "conv_pad_numbers", "conv_same", "conv_valid", "conv_dilation",
    "conv_groups", "conv_depthwise", "conv_rect_kernel", "conv_nobias", "bn_folded",
    "bn_standalone", "bn_noaffine", "relu", "leaky_relu", "sigmoid", "tanh", "gelu_none",
    "gelu_tanh", "softmax_4d", "logsoftmax_4d", "maxpool", "maxpool_pad", "maxpool_dilation",
    "maxpool_ceil", "avgpool_include", "avgpool_exclude", "avgpool_ceil_exclude", "adaptive_global",
    "adaptive_divisible", "dropout", "dropout2d", "identity", "functional_4d",
]
# Graphs: residual adds (the conv-bn-add-relu pattern with the conv's operand first or second, a
# projection shortcut, three terms, two convs), concatenations (Inception, Fire, DenseNet, a conv
# read by a Cat and another layer), squeeze-excitation, Mean, the new activations after a conv
# and standalone, StochasticDepth, AdaptiveAvgPool2d sizes that do not divide the input.
GRAPH_FEATURES = [
    "res_identity_left", "res_identity_right", "res_projection", "res_three", "add_two_convs",
    "stochastic_depth", "cat_inception", "cat_fire", "cat_dense", "cat_shared", "se_pool",
    "se_mean", "mean_keepdim", "relu6", "hardswish", "hardsigmoid", "silu", "act_standalone",
    "adaptive_nondividing",
]
HEAD_FEATURES = [
    "conv_only", "free_size", "flatten_linear", "flatten_functional", "linear_linear",
    "softmax_2d", "logsoftmax_2d", "gap_linear", "mlp_input", "mean_head", "se_linear_head",
]
FEATURES = BODY_FEATURES + GRAPH_FEATURES + HEAD_FEATURES


# --- functional steps (named, so the printed description is readable) --------------------------

def view_flatten(x):
    return x.view(x.size(0), -1)


def reshape_flatten(x):
    return x.reshape(x.shape[0], -1)


def torch_flatten(x):
    return torch.flatten(x, 1)


def method_flatten(x):
    return x.flatten(1)


def fn(f, *args, **kwargs):
    """A functional step with its arguments bound, printed as f(args)."""
    step = functools.partial(f, *args, **kwargs)
    shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
    step.desc = f"{getattr(f, '__name__', f)}({shown})"
    return step


class Chain(nn.Module):
    """Runs its steps (modules or functions) in order; torch.fx unrolls the loop."""

    def __init__(self, steps):
        super().__init__()
        self.layers = nn.ModuleList([s for s in steps if isinstance(s, nn.Module)])
        self.steps = list(steps)

    def forward(self, x):
        for step in self.steps:
            x = step(x)
        return x


def describe(step):
    """Module steps as Op(field=value, ...) with every model.json field; graph blocks and functions
    by their description."""
    if isinstance(step, nn.Module) and not hasattr(step, "desc"):
        fields = ", ".join(f"{k}={v!r}" for k, v in module_fields(step).items())
        return f"{type(step).__name__}({fields})"
    return getattr(step, "desc", getattr(step, "__name__", repr(step)))


# --- graph blocks: composite steps that torch.fx traces into branches, sums and concatenations ---

def _short(m):
    """A compact description of a sub-module: Sequential as [a, b], others as describe()."""
    if isinstance(m, nn.Sequential):
        return "[" + ", ".join(_short(s) for s in m) + "]"
    return describe(m)


class Residual(nn.Module):
    """The sum of its terms, in order: "x" (the block's input) or a path module; then `post`.
    Written as a + b (+ c), or with +=, or torch.add, so that every spelling is exported."""

    def __init__(self, terms, post=None, spelling="+"):
        super().__init__()
        self.kinds = ["x" if t is None else "path" for t in terms]
        self.paths = nn.ModuleList([t for t in terms if t is not None])
        self.post = post
        self.spelling = spelling
        shown = ", ".join("x" if t is None else _short(t) for t in terms)
        self.desc = f"Residual({spelling}: {shown}" + (f"; then {_short(post)})" if post else ")")

    def forward(self, x):
        paths = iter(self.paths)
        terms = [x if k == "x" else next(paths)(x) for k in self.kinds]
        out = terms[0]
        for t in terms[1:]:
            if self.spelling == "+=":
                out += t
            elif self.spelling == "torch.add":
                out = torch.add(out, t)
            else:
                out = out + t
        return self.post(out) if self.post is not None else out


class Concat(nn.Module):
    """torch.cat of its terms ("x" or a path module) along dim 1 or -3, as a list or a tuple."""

    def __init__(self, terms, dim=1, as_tuple=False, post=None):
        super().__init__()
        self.kinds = ["x" if t is None else "path" for t in terms]
        self.paths = nn.ModuleList([t for t in terms if t is not None])
        self.dim, self.as_tuple, self.post = dim, as_tuple, post
        shown = ", ".join("x" if t is None else _short(t) for t in terms)
        self.desc = f"Concat(dim={dim}: {shown}" + (f"; then {_short(post)})" if post else ")")

    def forward(self, x):
        paths = iter(self.paths)
        terms = [x if k == "x" else next(paths)(x) for k in self.kinds]
        out = torch.cat(tuple(terms) if self.as_tuple else terms, self.dim)
        return self.post(out) if self.post is not None else out


class Fire(nn.Module):
    """SqueezeNet's Fire: squeeze 1x1 + ReLU feeding two expands whose outputs are concatenated."""

    def __init__(self, cin, squeeze, e1, e3):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, e1, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, e3, 3, padding=1), nn.ReLU())
        self.desc = f"Fire({cin} -> {squeeze} -> {e1} + {e3})"

    def forward(self, x):
        s = self.squeeze(x)
        return torch.cat([self.e1(s), self.e3(s)], 1)


class Dense(nn.Module):
    """DenseNet's growing concatenations: each layer reads the cat of everything before it."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.desc = "Dense(" + ", ".join(_short(m) for m in layers) + ")"

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class CatShared(nn.Module):
    """A conv whose output feeds both a Cat and another consumer (which comes first varies)."""

    def __init__(self, conv, other, other_first):
        super().__init__()
        self.conv, self.other, self.other_first = conv, other, other_first
        self.desc = f"CatShared({_short(conv)} -> cat with {_short(other)}" + \
            (", other first)" if other_first else ")")

    def forward(self, x):
        y = self.conv(x)
        z = self.other(y)
        return torch.cat([z, y] if self.other_first else [y, z], 1)


class SqueezeExcite(nn.Module):
    """x * gate(fc2(act(fc1(squeeze(x))))): squeeze by AdaptiveAvgPool2d(1) or mean keepdim."""

    def __init__(self, c, r, squeeze, act, gate, order):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1) if squeeze == "pool" else None
        self.fc1, self.act, self.fc2, self.gate = nn.Conv2d(c, r, 1), act, nn.Conv2d(r, c, 1), gate
        self.order = order
        self.desc = (f"SqueezeExcite({squeeze}, {c} -> {r} -> {c}, {_short(act)}, {_short(gate)}, "
                     f"{order})")

    def forward(self, x):
        s = self.pool(x) if self.pool is not None else x.mean((2, 3), keepdim=True)
        s = self.gate(self.fc2(self.act(self.fc1(s))))
        if self.order == "x*s":
            return x * s
        if self.order == "s*x":
            return s * x
        return torch.mul(x, s)


class LinearSE(nn.Module):
    """A head: f = x.mean((2, 3)) [N, C], then f * gate(fc2(act(fc1(f))))."""

    def __init__(self, c, r, act, gate):
        super().__init__()
        self.fc1, self.act, self.fc2, self.gate = nn.Linear(c, r), act, nn.Linear(r, c), gate
        self.desc = f"LinearSE(mean, {c} -> {r} -> {c}, {_short(act)}, {_short(gate)})"

    def forward(self, x):
        f = torch.mean(x, dim=(-1, -2))
        return f * self.gate(self.fc2(self.act(self.fc1(f))))


def mean_hw(keepdim, spelling):
    """x.mean over H and W as a functional step, in one of its spellings."""
    dims = {"method": (2, 3), "torch": [2, 3], "negative": (-1, -2)}[spelling]
    if spelling == "torch":
        def step(x):
            return torch.mean(x, dims, keepdim=keepdim)
    else:
        def step(x):
            return x.mean(dims, keepdim=keepdim)
    step.desc = f"mean({list(dims)}, keepdim={keepdim}, {spelling})"
    return step


# --- the generator -----------------------------------------------------------------------------

class Builder:
    """Grows one network step by step; each candidate is run in torch to learn its output shape
    and rejected if it fails or gives a dimension < 1."""

    def __init__(self, rng, shape):
        self.rng = rng
        self.input_shape = list(shape)
        self.shape = tuple(shape)
        self.steps = []
        self.features = set()
        self.last = None  # kind of the last step added: "conv", "linear", ...

    def fits(self, steps):
        x = torch.zeros((2,) + self.shape)
        try:
            with torch.no_grad():
                for s in steps:
                    x = s.eval()(x) if isinstance(s, nn.Module) else s(x)
        except Exception:  # noqa: BLE001 - an invalid combination; try another
            return None
        if x.dim() not in (2, 4) or min(x.shape) < 1 or x[0].numel() > MAX_ACTIVATION:
            return None
        return tuple(x.shape[1:])

    def add(self, steps, features, kind):
        shape = self.fits(steps)
        if shape is None:
            return False
        self.steps += steps
        self.shape = shape
        self.features |= set(features)
        self.last = kind
        return True

    # --- 4-D layers: each returns True when it added something ---

    def conv(self, stride=None, pad=None, dil=None, groups=None, rect=None, bias=None):
        r, c = self.rng, self.shape[0]
        rect = r.random() < 0.25 if rect is None else rect
        kh = r.choice([1, 2, 3, 3, 3, 5])
        kw = r.choice([k for k in (1, 2, 3, 4, 5) if k != kh]) if rect else kh
        dil = dil if dil is not None else r.choice([1, 1, 1, 2, (1, 2)])
        stride = stride if stride is not None else r.choice([1, 1, 1, 2, 3, (2, 1)])
        pad = pad or r.choice(["numbers", "numbers", "same", "valid"])
        if pad == "same" and stride not in (1, (1, 1)):
            pad = "numbers"
        dh, dw = (dil, dil) if isinstance(dil, int) else dil
        if pad == "numbers":
            ph = r.randint(0, max(1, dh * (kh - 1) // 2))
            pw = r.randint(0, max(1, dw * (kw - 1) // 2))
            padding = ph if ph == pw and r.random() < 0.5 else (ph, pw)
        else:
            padding = pad
        groups = groups or r.choice(["one"] * 6 + ["groups", "depthwise"])
        c_out = r.choice([2, 3, 4, 6, 8, 12, 16])
        g = 1
        if groups == "groups":
            choices = [d for d in range(2, c) if c % d == 0]
            if not choices:
                return False
            g = r.choice(choices)
            c_out = g * r.choice([1, 2, 3])
        elif groups == "depthwise":
            if c < 2:
                return False
            g, c_out = c, c * r.choice([1, 1, 2])
        bias = r.random() < 0.7 if bias is None else bias
        module = nn.Conv2d(c, c_out, (kh, kw) if rect else kh, stride, padding, dil, g, bias)
        tags = {"conv"}
        tags |= {"conv_stride"} if module.stride != (1, 1) else set()
        tags |= {"conv_dilation"} if module.dilation != (1, 1) else set()
        tags |= {"conv_rect_kernel"} if kh != kw else set()
        tags |= {"conv_nobias"} if not bias else set()
        tags |= {{"numbers": "conv_pad_numbers", "same": "conv_same", "valid": "conv_valid"}[pad]}
        if pad == "numbers" and module.padding == (0, 0):
            tags.discard("conv_pad_numbers")
        tags |= {"conv_depthwise"} if g == c and g > 1 else {"conv_groups"} if g > 1 else set()
        return self.add([module], tags, "conv")

    def bn_folded(self, affine=None):
        if not self.conv():
            return False
        return self.batchnorm(affine, folded=True)

    def batchnorm(self, affine=None, folded=False):
        affine = self.rng.random() < 0.8 if affine is None else affine
        eps = self.rng.choice([1e-5, 1e-5, 1e-3])
        tags = {"bn_folded" if folded else "bn_standalone"} | (set() if affine else {"bn_noaffine"})
        return self.add([nn.BatchNorm2d(self.shape[0], eps=eps, affine=affine)], tags, "bn")

    def bn_standalone(self, affine=None):
        return self.activation() and self.batchnorm(affine)

    def bn_noaffine(self):
        if self.last == "conv" or self.rng.random() < 0.5:
            return self.bn_folded(affine=False)
        return self.bn_standalone(affine=False)

    def activation(self, name=None, functional=None):
        r = self.rng
        name = name or r.choice(["relu"] + ACTIVATIONS)
        functional = r.random() < 0.3 if functional is None else functional
        slope = r.choice([0.01, 0.1, 0.2, 0.5])
        if functional:
            step = {"relu": fn(F.relu), "leaky_relu": fn(F.leaky_relu, negative_slope=slope),
                    "sigmoid": fn(torch.sigmoid), "tanh": fn(torch.tanh),
                    "gelu_none": fn(F.gelu), "gelu_tanh": fn(F.gelu, approximate="tanh"),
                    "relu6": fn(F.relu6), "hardswish": fn(F.hardswish),
                    "hardsigmoid": fn(F.hardsigmoid), "silu": fn(F.silu)}[name]
        else:
            step = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(slope),
                    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu_none": nn.GELU,
                    "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "relu6": nn.ReLU6,
                    "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid,
                    "silu": nn.SiLU}[name]()
        tags = {name} | ({"functional_4d"} if functional and len(self.shape) == 3 else set())
        return self.add([step], tags, "act")

    def softmax(self, log=False, functional=None):
        if self.shape[0] < 2:
            return False  # over one channel or feature it is constant
        functional = self.rng.random() < 0.3 if functional is None else functional
        dim = 1 if len(self.shape) == 3 else self.rng.choice([1, -1])
        if functional:
            step = fn(F.log_softmax if log else F.softmax, dim=dim)
        else:
            step = (nn.LogSoftmax if log else nn.Softmax)(dim=dim)
        rank = "4d" if len(self.shape) == 3 else "2d"
        return self.add([step], {f"{'log' if log else ''}softmax_{rank}"}, "softmax")

    def _pool_kernel(self):
        return self.rng.choice([2, 2, 3, (2, 3), (3, 2)])

    def maxpool(self, pad=None, dil=None, ceil=None, functional=None):
        r = self.rng
        k = self._pool_kernel()
        kmin = min(k) if isinstance(k, tuple) else k
        stride = r.choice([None, None, 1, 2])
        padding = r.randint(1, kmin // 2) if pad else (r.choice([0, 0, kmin // 2]) if pad is None
                                                        else 0)
        dilation = 2 if dil else (r.choice([1, 1, 1, 2]) if dil is None else 1)
        ceil = r.random() < 0.3 if ceil is None else ceil
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil)
        functional = r.random() < 0.3 if functional is None else functional
        step = fn(F.max_pool2d, k, **kwargs) if functional else nn.MaxPool2d(k, **kwargs)
        tags = {"maxpool"} | ({"maxpool_pad"} if padding else set())
        tags |= ({"maxpool_dilation"} if dilation > 1 else set())
        tags |= ({"maxpool_ceil"} if ceil else set()) | ({"functional_4d"} if functional else set())
        return self.add([step], tags, "pool")

    def avgpool(self, include=None, ceil=None, pad=None, functional=None):
        r = self.rng
        k = self._pool_kernel()
        kmin = min(k) if isinstance(k, tuple) else k
        ceil = r.random() < 0.25 if ceil is None else ceil
        include = (r.random() < 0.5 if include is None else include) and not ceil
        padding = r.randint(1, kmin // 2) if pad or (pad is None and r.random() < 0.5) else 0
        kwargs = dict(stride=r.choice([None, None, 1, 2]), padding=padding, ceil_mode=ceil,
                      count_include_pad=include)
        functional = r.random() < 0.3 if functional is None else functional
        step = fn(F.avg_pool2d, k, **kwargs) if functional else nn.AvgPool2d(k, **kwargs)
        tags = {"avgpool_ceil_exclude"} if ceil else set()
        if padding:
            tags |= {"avgpool_include" if include else "avgpool_exclude"}
        tags |= {"functional_4d"} if functional else set()
        return self.add([step], tags, "pool")

    def adaptive(self, divisible=False, functional=None):
        r = self.rng
        h, w = self.shape[1:]
        if divisible:
            oh = [d for d in range(2, h) if h % d == 0]
            ow = [d for d in range(2, w) if w % d == 0]
            if not oh or not ow:
                return False
            size = (r.choice(oh), r.choice(ow))
            size = size[0] if size[0] == size[1] and r.random() < 0.5 else size
        else:
            size = r.choice([1, (1, 1)])
        functional = r.random() < 0.3 if functional is None else functional
        step = fn(F.adaptive_avg_pool2d, size) if functional else nn.AdaptiveAvgPool2d(size)
        tags = {"adaptive_divisible" if divisible else "adaptive_global"}
        return self.add([step], tags | ({"functional_4d"} if functional else set()), "pool")

    def passthrough(self, name):
        step = {"dropout": lambda: nn.Dropout(self.rng.choice([0.1, 0.5])),
                "dropout2d": lambda: nn.Dropout2d(0.25), "identity": nn.Identity}[name]()
        return self.add([step], {name}, self.last)

    def body_layer(self, feature):
        """Adds one 4-D layer of the given feature; returns False if it does not fit here."""
        f = feature
        table = {
            "conv": self.conv,
            "conv_stride": lambda: self.conv(stride=self.rng.choice([2, 3, (2, 1), (1, 3)])),
            "conv_pad_numbers": lambda: self.conv(pad="numbers"),
            "conv_same": lambda: self.conv(stride=1, pad="same"),
            "conv_valid": lambda: self.conv(pad="valid"),
            "conv_dilation": lambda: self.conv(dil=self.rng.choice([2, (2, 1), 3])),
            "conv_groups": lambda: self.conv(groups="groups"),
            "conv_depthwise": lambda: self.conv(groups="depthwise"),
            "conv_rect_kernel": lambda: self.conv(rect=True),
            "conv_nobias": lambda: self.conv(bias=False),
            "bn_folded": self.bn_folded,
            "bn_standalone": self.bn_standalone,
            "bn_noaffine": self.bn_noaffine,
            "softmax_4d": self.softmax,
            "logsoftmax_4d": lambda: self.softmax(log=True),
            "maxpool": self.maxpool,
            "maxpool_pad": lambda: self.maxpool(pad=True),
            "maxpool_dilation": lambda: self.maxpool(dil=True),
            "maxpool_ceil": lambda: self.maxpool(ceil=True),
            "avgpool_include": lambda: self.avgpool(include=True, ceil=False, pad=True),
            "avgpool_exclude": lambda: self.avgpool(include=False, ceil=False, pad=True),
            "avgpool_ceil_exclude": lambda: self.avgpool(include=False, ceil=True),
            "adaptive_global": self.adaptive,
            "adaptive_divisible": lambda: self.adaptive(divisible=True),
            "functional_4d": lambda: self.activation(functional=True),
            "res_identity_left": lambda: self.res_identity(body_first=True),
            "res_identity_right": lambda: self.res_identity(body_first=False),
            "res_projection": self.res_projection,
            "res_three": self.res_three,
            "add_two_convs": self.add_two_convs,
            "stochastic_depth": self.stochastic_depth,
            "cat_inception": self.cat_inception,
            "cat_fire": self.cat_fire,
            "cat_dense": self.cat_dense,
            "cat_shared": self.cat_shared,
            "se_pool": lambda: self.squeeze_excite("pool"),
            "se_mean": lambda: self.squeeze_excite("mean"),
            "mean_keepdim": self.mean_keepdim,
            "act_standalone": self.act_standalone,
            "adaptive_nondividing": self.adaptive_nondividing,
        }
        if f in table:
            return table[f]()
        if f in ACTIVATIONS:
            return self.activation(f)
        return self.passthrough(f)

    # --- graph blocks ---

    def _conv_same(self, cin, cout, k=3, stride=1, bias=None):
        """A conv that keeps H and W at stride 1 (odd kernel, padding k // 2)."""
        bias = self.rng.random() < 0.5 if bias is None else bias
        return nn.Conv2d(cin, cout, k, stride, k // 2, bias=bias)

    def _act_module(self, names=None):
        name = self.rng.choice(names or ["relu", "relu", "relu6", "hardswish", "silu",
                                         "leaky_relu"])
        return {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish,
                "hardsigmoid": nn.Hardsigmoid, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
                "leaky_relu": lambda: nn.LeakyReLU(0.1)}[name]()

    def _body(self, cin, cout, stride=1):
        """A residual branch: conv-bn, or conv-bn-act-conv-bn (the BasicBlock)."""
        r = self.rng
        layers = [self._conv_same(cin, cout, r.choice([1, 3, 3]), stride), nn.BatchNorm2d(cout)]
        if r.random() < 0.6:
            layers += [self._act_module(), self._conv_same(cout, cout, r.choice([1, 3])),
                       nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers)

    def _post(self, p=0.7):
        return self._act_module(["relu", "relu", "relu6", "silu"]) if self.rng.random() < p \
            else None

    def _residual(self, terms, tags, post=None):
        spellings = ["+", "+", "torch.add"] + (["+="] if terms[0] is not None else [])
        block = Residual(terms, post, self.rng.choice(spellings))
        return self.add([block], tags, "add")

    def res_identity(self, body_first):
        c = self.shape[0]
        body = self._body(c, c)
        terms = [body, None] if body_first else [None, body]
        return self._residual(terms, {"res_identity_left" if body_first else
                                      "res_identity_right"}, self._post(0.8))

    def res_projection(self):
        r, c = self.rng, self.shape[0]
        cout = r.choice([c, c + 2, 2 * c, max(1, c // 2)])
        stride = r.choice([1, 2, 2])
        proj = nn.Conv2d(c, cout, 1, stride, bias=False)
        shortcut = nn.Sequential(proj, nn.BatchNorm2d(cout)) if r.random() < 0.7 else proj
        terms = [self._body(c, cout, stride), shortcut]
        if r.random() < 0.5:
            terms.reverse()
        return self._residual(terms, {"res_projection"}, self._post(0.8))

    def res_three(self):
        r, c = self.rng, self.shape[0]
        terms = [self._body(c, c), r.choice([self._body(c, c), self._conv_same(c, c, 1)]), None]
        r.shuffle(terms)
        return self._residual(terms, {"res_three"}, self._post())

    def add_two_convs(self):
        r, c = self.rng, self.shape[0]
        cout, stride = r.choice([c, 4, 8]), r.choice([1, 1, 2])
        terms = [self._conv_same(c, cout, r.choice([1, 3]), stride),
                 self._conv_same(c, cout, r.choice([1, 3, 5]), stride)]
        return self._residual(terms, {"add_two_convs"}, self._post())

    def stochastic_depth(self):
        r, c = self.rng, self.shape[0]
        body = self._body(c, c)
        body.append(torchvision.ops.StochasticDepth(r.choice([0.0, 0.1, 0.5]),
                                                    r.choice(["row", "batch"])))
        return self._residual([body, None], {"stochastic_depth"}, self._post(0.3))

    def cat_inception(self):
        r, c = self.rng, self.shape[0]
        kinds = r.sample(["1x1", "3x3", "5x5", "pool", "x"], r.randint(2, 4))
        terms = []
        for kind in kinds:
            width = r.choice([2, 3, 4, 6])
            if kind == "1x1":
                terms.append(nn.Sequential(nn.Conv2d(c, width, 1), self._act_module()))
            elif kind in ("3x3", "5x5"):
                mid = r.choice([2, 4])
                terms.append(nn.Sequential(nn.Conv2d(c, mid, 1), self._act_module(),
                                           self._conv_same(mid, width, int(kind[0]))))
            elif kind == "pool":
                pool = r.choice([nn.MaxPool2d(3, 1, 1),
                                 nn.AvgPool2d(3, 1, 1, count_include_pad=False)])
                terms.append(nn.Sequential(pool, nn.Conv2d(c, width, 1)) if r.random() < 0.5
                             else pool)
            else:
                terms.append(None)
        block = Concat(terms, dim=r.choice([1, -3]), as_tuple=r.random() < 0.5,
                       post=self._post(0.4))
        return self.add([block], {"cat_inception"}, "cat")

    def cat_fire(self):
        r, c = self.rng, self.shape[0]
        return self.add([Fire(c, r.choice([2, 3, 4]), r.choice([2, 4, 6]), r.choice([2, 4, 6]))],
                        {"cat_fire"}, "cat")

    def cat_dense(self):
        r, c = self.rng, self.shape[0]
        growth = r.choice([2, 3, 4])
        layers = []
        for i in range(r.randint(2, 3)):
            cin = c + i * growth
            layers.append(nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(),
                                        self._conv_same(cin, growth, 3, bias=False)))
        return self.add([Dense(layers)], {"cat_dense"}, "cat")

    def cat_shared(self):
        r, c = self.rng, self.shape[0]
        width = r.choice([2, 4, 6])
        conv = self._conv_same(c, width, r.choice([1, 3]))
        other = r.choice([nn.ReLU(), nn.Conv2d(width, r.choice([2, 3]), 1),
                          nn.Sequential(nn.Conv2d(width, 4, 3, padding=1), nn.BatchNorm2d(4))])
        return self.add([CatShared(conv, other, r.random() < 0.5)], {"cat_shared"}, "cat")

    def squeeze_excite(self, squeeze):
        r, c = self.rng, self.shape[0]
        block = SqueezeExcite(c, r.choice([1, 2, max(1, c // 4)]), squeeze,
                              self._act_module(["relu", "silu", "hardswish"]),
                              self._act_module(["sigmoid", "hardsigmoid"]),
                              r.choice(["x*s", "s*x", "torch.mul"]))
        return self.add([block], {f"se_{squeeze}"}, "mul")

    def mean_keepdim(self):
        step = mean_hw(True, self.rng.choice(["method", "torch", "negative"]))
        return self.add([step], {"mean_keepdim"}, "mean")

    def act_standalone(self):
        """A new activation after a pooling layer or a standalone BatchNorm: nothing to fuse
        it into."""
        r = self.rng
        before = r.choice([nn.MaxPool2d(2, 1), nn.AvgPool2d(2, 1), nn.BatchNorm2d(self.shape[0])])
        name = r.choice(["relu6", "hardswish", "hardsigmoid", "silu"])
        if not self.add([before], set(), "pool") or not self.activation(name):
            return False
        self.features.add("act_standalone")
        return True

    def adaptive_nondividing(self):
        r = self.rng
        h, w = self.shape[1:]
        sizes = [(oh, ow) for oh in range(1, h + 3) for ow in range(1, w + 3)
                 if (h % oh or w % ow) and oh * ow > 1]
        if not sizes:
            return False
        size = r.choice(sizes)
        functional = r.random() < 0.3
        step = fn(F.adaptive_avg_pool2d, size) if functional else nn.AdaptiveAvgPool2d(size)
        return self.add([step], {"adaptive_nondividing"}, "pool")

    # --- heads ---

    def flatten(self, functional=None):
        if self.shape[0] * self.shape[1] * self.shape[2] > MAX_FEATURES:
            if not self.adaptive(divisible=False):
                return False
        functional = self.rng.random() < 0.5 if functional is None else functional
        if functional:
            step = self.rng.choice([view_flatten, reshape_flatten, torch_flatten, method_flatten])
        else:
            step = nn.Flatten()
        return self.add([step], {"flatten_linear"} | ({"flatten_functional"} if functional else
                                                      set()), "flatten")

    def linear(self, out=None):
        out = out or self.rng.choice([1, 2, 5, 8, 10, 16, 32])
        bias = self.rng.random() < 0.8
        tags = {"linear_linear"} if self.last == "linear" else set()
        return self.add([nn.Linear(self.shape[0], out, bias=bias)], tags, "linear")

    def mlp(self, n_linear=None, adjacent=False, softmax=None):
        """1-3 Linear layers with activations / dropout between them, optionally a softmax."""
        r = self.rng
        n_linear = n_linear or r.randint(1, 3)
        for i in range(n_linear):
            self.linear()
            if i + 1 < n_linear and not (adjacent and i == 0):
                choice = r.choice(["act", "act", "dropout", "identity", "none"])
                if choice == "act":
                    self.activation()
                elif choice != "none":
                    self.passthrough(choice)
        if softmax is None and r.random() < 0.3:
            softmax = r.choice(["softmax_2d", "logsoftmax_2d"])
        if softmax:
            self.softmax(log=softmax == "logsoftmax_2d")

    def head(self, kind):
        """Finishes the network: kind is one of HEAD_FEATURES (mlp_input is built elsewhere)."""
        if kind in ("conv_only", "free_size"):
            if self.rng.random() < 0.3:
                self.body_layer(self.rng.choice(["relu", "softmax_4d", "logsoftmax_4d"]))
            self.features.add("conv_only")
            return True
        if kind == "mean_head":
            spelling = self.rng.choice(["method", "torch", "negative"])
            if not self.add([mean_hw(False, spelling)], {"mean_head"}, "mean"):
                return False
            self.mlp()
            return True
        if kind == "se_linear_head":
            c = self.shape[0]
            block = LinearSE(c, self.rng.choice([1, 2, max(1, c // 2)]),
                             self._act_module(["relu", "silu", "hardswish"]),
                             self._act_module(["sigmoid", "hardsigmoid"]))
            if not self.add([block], {"se_linear_head"}, "mul"):
                return False
            if self.rng.random() < 0.5:
                self.mlp()
            return True
        if kind == "gap_linear":
            if not self.adaptive(divisible=False):
                return False
            self.features.add("gap_linear")
        if not self.flatten(functional=True if kind == "flatten_functional" else None):
            return False
        self.mlp(n_linear=2 if kind == "linear_linear" else None, adjacent=kind == "linear_linear",
                 softmax=kind if kind in ("softmax_2d", "logsoftmax_2d") else None)
        return True


def _body_plan(rng, focus):
    plan = [rng.choice(["conv"] * 6 + BODY_FEATURES + GRAPH_FEATURES)
            for _ in range(rng.randint(1, 4))]
    if focus in BODY_FEATURES + GRAPH_FEATURES:
        plan.insert(rng.randint(0, len(plan)), focus)
    return plan


def _build(rng, focus):
    """One attempt at a network containing `focus`; returns (Builder, free H/W) or None."""
    if focus == "mlp_input":
        b = Builder(rng, (rng.choice([3, 8, 20, 64]),))
        b.mlp(n_linear=rng.randint(1, 3))
        b.features.add("mlp_input")
        return b, False
    b = Builder(rng, (rng.choice([1, 2, 3, 4, 6, 8]), rng.randint(6, 20), rng.randint(6, 20)))
    for feature in _body_plan(rng, focus):
        b.body_layer(feature)
    head = focus if focus in HEAD_FEATURES else rng.choice(
        ["conv_only", "flatten_linear", "flatten_linear", "gap_linear", "mean_head"])
    if not b.head(head) or not b.steps:
        return None
    free = head == "free_size" or (head == "conv_only" and rng.random() < 0.3)
    if free and "adaptive_divisible" in b.features:
        return None  # a divisible adaptive pool only fits some sizes
    if free:
        b.features.add("free_size")
    return (b, free) if focus in b.features else None


def _varies(module, shape, gen):
    """False when the network's output barely depends on its input (a softmax over a single
    feature, a ReLU after a LogSoftmax...): such a case would test nothing."""
    with torch.no_grad():
        y = module(torch.randn([4] + list(shape), generator=gen))
    return bool(torch.isfinite(y).all()) and float(y.std()) > 1e-3


def generate(net_seed, focus):
    """Builds the network for (net_seed, focus); returns (module, export shape, case shapes,
    generator for the cases, features, description)."""
    for attempt in range(ATTEMPTS):
        rng = random.Random(net_seed * 1000 + attempt)
        torch.manual_seed(net_seed)
        built = _build(rng, focus)
        if built is None:
            continue
        b, free = built
        module = Chain(b.steps).eval()
        gen = torch.Generator().manual_seed(net_seed)
        randomize_weights(module, gen)
        randomize_batchnorm(module, gen)
        if _varies(module, b.input_shape, gen):
            break
    else:
        raise RuntimeError(f"could not build a network with {focus} from seed {net_seed}")
    shape = list(b.input_shape)
    cases = [[n] + shape for n in BATCHES]
    export_shape = shape
    if free:
        export_shape = [shape[0], -1, -1]
        other = [shape[0], shape[1] + rng.randint(1, 5), shape[2] + rng.randint(0, 7)]
        if Builder(rng, other).fits(b.steps) is not None:
            cases[1] = [BATCHES[1]] + other
    text = " | ".join(describe(s) for s in b.steps)
    return module, export_shape, cases, gen, b.features, text


def write_net(folder, i, net_seed, focus):
    module, export_shape, case_shapes, gen, features, text = generate(net_seed, focus)
    name = f"net{i:03d}"
    path = os.path.join(folder, name)
    export(module, path, name, export_shape)
    write_cases(path, make_cases(module, case_shapes, gen), {"seed": str(net_seed), "focus": focus})
    check_folder(path)
    with open(os.path.join(path, "net.txt"), "w") as f:
        f.write(f"seed {net_seed} focus {focus}\ninput {export_shape} cases {case_shapes}\n"
                f"{text}\n")
    print(f"{name} --net-seed {net_seed} --focus {focus}: input {export_shape}: {text}")
    return path, features


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runner", help="the C test binary (build/tests/test_networks)")
    p.add_argument("--seed", type=int, help="base seed (default: random, printed)")
    p.add_argument("--count", type=int, default=len(FEATURES),
                   help=f"number of networks (default {len(FEATURES)}: one per feature)")
    p.add_argument("--net-seed", type=int, help="build only the network with this seed")
    p.add_argument("--focus", choices=FEATURES, help="with --net-seed: its focus feature")
    p.add_argument("--out", help="write the folders here and keep them (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder even on success")
    args = p.parse_args(argv)
    if not args.runner and not args.out:
        p.error("give --runner (and/or --out to only generate)")
    if args.runner and not os.access(args.runner, os.X_OK):
        print(f"live_check: runner {args.runner} is not an executable file; build it first "
              "(cmake --build build)", file=sys.stderr)
        return 2

    if args.net_seed is not None:
        nets = [(args.net_seed, args.focus or FEATURES[0])]
        print(f"live_check: one network, --net-seed {args.net_seed} --focus {nets[0][1]}")
    else:
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
        print(f"live_check: seed {seed}, {args.count} networks (replay with --seed {seed})")
        nets = [(seed * 1000 + i, FEATURES[i % len(FEATURES)]) for i in range(args.count)]

    folder = args.out or tempfile.mkdtemp(prefix="convserve-live-")
    os.makedirs(folder, exist_ok=True)
    paths, covered = [], set()
    for i, (net_seed, focus) in enumerate(nets):
        path, features = write_net(folder, i, net_seed, focus)
        paths.append(path)
        covered |= features
    missing = [f for f in FEATURES if f not in covered]
    print(f"live_check: {len(paths)} networks in {folder}; features not covered: "
          f"{', '.join(missing) or 'none'}")
    if not args.runner:
        return 0

    sys.stdout.flush()  # keep our lines before the runner's in a log
    rc = subprocess.run([args.runner] + paths).returncode
    if rc != 0:
        print(f"live_check: FAILED (runner exit {rc}); folders kept in {folder}; replay one "
              "network with the --net-seed/--focus printed above", file=sys.stderr)
        return 1
    print("live_check: all networks match PyTorch")
    if not args.out and not args.keep:
        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
