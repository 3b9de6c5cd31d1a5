"""Export a PyTorch nn.Module to a convserve model folder: model.json + model.safetensors.

The forward pass is traced with torch.fx, so layers come out in execution order (a module used
twice is listed twice, attribute order does not matter) and nn.Sequential containers are flattened
into their state_dict prefixes ("conv.0", "fc.3"). The traced graph may branch and join: a layer
takes the previous layer's output unless it names its inputs (README "Serving your own model",
DESIGN.md section 2b). Supported steps:

    modules    Conv2d (padding_mode='zeros'), BatchNorm2d (with running stats), Linear, Flatten,
               ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, GELU, SiLU, Hardswish, Hardsigmoid,
               Softmax, LogSoftmax, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Dropout, Dropout2d,
               Identity, torchvision.ops.StochasticDepth
    functions  torch.flatten(x, 1), x.flatten(1), x.view(x.size(0), -1), x.reshape(x.shape[0], -1),
               x.view(-1, C*H*W), F.relu / torch.relu / x.relu(), F.relu6, F.hardswish,
               F.hardsigmoid, F.silu, torch.sigmoid, torch.tanh, F.leaky_relu, F.gelu,
               F.softmax / F.log_softmax (with dim), F.max_pool2d, F.avg_pool2d,
               F.adaptive_avg_pool2d, F.dropout / F.dropout2d (training=False),
               torchvision.ops.stochastic_depth (training=False), x.contiguous()
    graph      x + y, x += y, torch.add(x, y), x.add(y) (tensors of one shape; a chain of sums
               becomes one Add); x * y, torch.mul(x, y) ([N,C,H,W] times [N,C,H,W] or
               [N,C,1,1]); torch.cat([...], dim=1); torch.mean(x, (2, 3)) / x.mean([2, 3],
               keepdim)

Anything else (an unknown module or function, a scalar in an add or a product, a parameter read in
forward, reshapes other than flattening, in-place changes that fx cannot see) raises ExportError
naming the node and the reason. Dead code is dropped. Each layer becomes {"op": <class name>,
"name": <module path>, <constructor kwargs>}, plus "inputs" where it does not simply take the
previous layer's output and "id" where such a reference needs one. After writing, the folder is read
back (load_model, a small graph interpreter) and run against the original module on a sample input,
so a wrong export fails here, not in the server.

Library use (run with /usr/bin/python3, which has Debian's python3-torch):

    from export_model import export
    export(net, "config/models/digits", "digits", [1, 28, 28], labels=[str(i) for i in range(10)])

Command line:

    /usr/bin/python3 tools/export_model.py --module mypkg.nets:make_net --name digits \
        --input-shape 1,28,28 --out config/models/digits [--state-dict trained.pt] [--no-weights]
    /usr/bin/python3 tools/export_model.py --module torchvision.models:resnet18 --name resnet18 \
        --input-shape 3,224,224 --out config/models/resnet18 --preprocess imagenet
"""

import argparse
import importlib
import importlib.util
import json
import math
import operator
import os
import re
import sys
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import List

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402  (tools/ sibling module)

MODEL_JSON = "model.json"
WEIGHTS_FILE = "model.safetensors"
# Sizes tried for a free H or W when running the module once to learn every layer's shape.
SAMPLE_SIZES = (32, 64, 128, 224, 16, 8)
SAMPLE_BATCH = 2
# Exported and re-imported outputs must agree to this (relative to max(1, max |output|)).
VERIFY_TOL = 1e-5
# The reference to the model's input in "inputs", and the rules for explicit ids.
INPUT_REF = "input"
ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,127}$")
MAX_ID = 127
# ImageNet normalisation (torchvision's classification weights) for --preprocess imagenet.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class ExportError(ValueError):
    """The module cannot be exported; the message names the node and says what is supported."""


SUPPORTED_HELP = (
    "convserve exports graphs of Conv2d, BatchNorm2d, Linear, Flatten, ReLU, ReLU6, LeakyReLU, "
    "Sigmoid, Tanh, GELU, SiLU, Hardswish, Hardsigmoid, Softmax, LogSoftmax, MaxPool2d, AvgPool2d, "
    "AdaptiveAvgPool2d, Dropout, Dropout2d, Identity and StochasticDepth (modules, or their "
    "torch / torch.nn.functional forms), flattening with torch.flatten(x, 1) or "
    "x.view(x.size(0), -1), and the graph ops x + y (one shape), x * y ([N,C,H,W] by "
    "[N,C,H,W] or [N,C,1,1]), "
    "torch.cat(..., dim=1) and x.mean((2, 3))")


# -----------------------------------------------------------------------------------------------
# The graph ops as modules. load_model builds them, and their checks are the engine's: the same
# message whether export finds the problem on the traced shapes or load_model on a real input.

def _shapes_text(shapes):
    return ", ".join(str(list(s)) for s in shapes)


class Add(nn.Module):
    """x0 + x1 + ...: two or more tensors of one shape, summed left to right. Takes the list of
    tensors (so that TorchScript can compile it)."""

    @staticmethod
    def check(shapes):
        if len(shapes) < 2:
            return f"Add takes 2 or more inputs, got {len(shapes)}"
        if any(list(s) != list(shapes[0]) for s in shapes):
            return f"Add needs inputs of one shape (no broadcasting), got {_shapes_text(shapes)}"
        return None

    def forward(self, xs: List[torch.Tensor]):
        if not torch.jit.is_scripting():
            _raise_if(self.check([x.shape for x in xs]))
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Mul(nn.Module):
    """x * y: one shape, or [N,C,H,W] and [N,C,1,1] in either order (squeeze-excitation)."""

    @staticmethod
    def check(shapes):
        if len(shapes) != 2:
            return f"Mul takes exactly 2 inputs, got {len(shapes)}"
        a, b = (list(s) for s in shapes)
        if a == b:
            return None
        if len(a) == 4 and len(b) == 4 and a[:2] == b[:2] and (a[2:] == [1, 1] or b[2:] == [1, 1]):
            return None
        return (f"Mul needs inputs of one shape or [N,C,H,W] and [N,C,1,1], got "
                f"{_shapes_text(shapes)}")

    def forward(self, x, y):
        if not torch.jit.is_scripting():
            _raise_if(self.check([x.shape, y.shape]))
        return x * y


def _channel_dims(rank):
    """The values of dim that name the channel (rank 4) or feature (rank 2) dimension."""
    return (1, 1 - rank)


class Cat(nn.Module):
    """torch.cat(xs, dim) along the channel dim; the other dims must agree. Takes the list."""

    def __init__(self, dim=0):
        super().__init__()
        self.dim = dim

    def check(self, shapes):
        if not shapes:
            return "Cat takes 1 or more inputs, got 0"
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes) or rank not in (2, 4):
            return f"Cat needs inputs of one rank, 2 or 4, got {_shapes_text(shapes)}"
        if self.dim not in _channel_dims(rank):
            return (f"Cat(dim={self.dim}) on rank-{rank} tensors is not supported; only the "
                    f"channel dim ({' or '.join(map(str, _channel_dims(rank)))}) is")
        rest = [[d for i, d in enumerate(s) if i != 1] for s in shapes]
        if any(r != rest[0] for r in rest):
            return (f"Cat(dim={self.dim}) needs equal sizes outside the channel dim, got "
                    f"{_shapes_text(shapes)}")
        return None

    def forward(self, xs: List[torch.Tensor]):
        if not torch.jit.is_scripting():
            _raise_if(self.check([x.shape for x in xs]))
        return torch.cat(xs, self.dim)


class Mean(nn.Module):
    """x.mean(dim, keepdim) over the two spatial dims of a rank-4 tensor."""

    def __init__(self, dim, keepdim=False):
        super().__init__()
        self.dim = dim
        self.keepdim = keepdim

    def check(self, shapes):
        dims = self.dim if isinstance(self.dim, (list, tuple)) else [self.dim]
        if len(shapes) != 1 or len(shapes[0]) != 4:
            return f"Mean takes one rank-4 tensor, got {_shapes_text(shapes)}"
        if (len(dims) != 2 or not all(type(d) is int and -4 <= d < 4 for d in dims)
                or sorted(d % 4 for d in dims) != [2, 3]):
            return (f"Mean(dim={self.dim}) is not supported; only the spatial dims [2, 3] (or "
                    "[-2, -1]) are")
        if not isinstance(self.keepdim, bool):
            return f"Mean keepdim must be true or false, got {self.keepdim!r}"
        return None

    def forward(self, x):
        if not torch.jit.is_scripting():
            _raise_if(self.check([x.shape]))
        return x.mean(self.dim, keepdim=self.keepdim)


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth in eval: the identity (load_model builds eval models)."""

    def __init__(self, p, mode):
        super().__init__()
        if mode not in ("row", "batch"):
            raise ValueError(f"mode must be 'row' or 'batch', got {mode!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        self.p, self.mode = p, mode

    def forward(self, x):
        if self.training and self.p > 0:
            raise RuntimeError("StochasticDepth is exported for inference only (eval mode)")
        return x


def _raise_if(message):
    if message:
        raise ExportError(message)


# -----------------------------------------------------------------------------------------------
# Module -> model.json fields. Each function checks what the engine cannot run and returns the
# constructor keyword arguments with their actual values.

def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else v


def _conv2d(m):
    if m.padding_mode != "zeros":
        raise ExportError(f"padding_mode={m.padding_mode!r} is not supported (only 'zeros')")
    return {"in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel_size": list(m.kernel_size), "stride": list(m.stride),
            "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
            "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None}


def _batchnorm2d(m):
    if not m.track_running_stats or m.running_mean is None or m.running_var is None:
        raise ExportError("BatchNorm2d without running statistics normalises with batch statistics "
                          "at inference; only track_running_stats=True is supported")
    return {"num_features": m.num_features, "eps": m.eps, "momentum": m.momentum,
            "affine": m.affine, "track_running_stats": m.track_running_stats}


def _linear(m):
    return {"in_features": m.in_features, "out_features": m.out_features,
            "bias": m.bias is not None}


def _softmax(m):
    if m.dim is None:
        raise ExportError(f"{type(m).__name__} with an implicit dim is ambiguous; pass dim=1")
    return {"dim": m.dim}


def _maxpool2d(m):
    if m.return_indices:
        raise ExportError("MaxPool2d(return_indices=True) is not supported")
    return {"kernel_size": _pair(m.kernel_size), "stride": _pair(m.stride),
            "padding": _pair(m.padding), "dilation": _pair(m.dilation), "ceil_mode": m.ceil_mode}


def _avgpool2d(m):
    if m.divisor_override is not None:
        raise ExportError("AvgPool2d(divisor_override=...) is not supported")
    return {"kernel_size": _pair(m.kernel_size), "stride": _pair(m.stride),
            "padding": _pair(m.padding), "ceil_mode": m.ceil_mode,
            "count_include_pad": m.count_include_pad}


def _adaptiveavgpool2d(m):
    size = m.output_size
    if size is None or (isinstance(size, (tuple, list)) and None in size):
        raise ExportError("AdaptiveAvgPool2d with a None output size is not supported")
    return {"output_size": _pair(size)}


def _stochastic_depth(m):
    if m.mode not in ("row", "batch"):
        raise ExportError(f"StochasticDepth(mode={m.mode!r}) is not supported")
    return {"p": m.p, "mode": m.mode}


def _no_fields(m):
    return {}


_MODULES = {
    nn.Conv2d: _conv2d,
    nn.BatchNorm2d: _batchnorm2d,
    nn.Linear: _linear,
    nn.Flatten: lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim},
    nn.ReLU: _no_fields,
    nn.ReLU6: _no_fields,
    nn.LeakyReLU: lambda m: {"negative_slope": m.negative_slope},
    nn.Sigmoid: _no_fields,
    nn.Tanh: _no_fields,
    nn.GELU: lambda m: {"approximate": m.approximate},
    nn.SiLU: _no_fields,
    nn.Hardswish: _no_fields,
    nn.Hardsigmoid: _no_fields,
    nn.Softmax: _softmax,
    nn.LogSoftmax: _softmax,
    nn.MaxPool2d: _maxpool2d,
    nn.AvgPool2d: _avgpool2d,
    nn.AdaptiveAvgPool2d: _adaptiveavgpool2d,
    nn.Dropout: lambda m: {"p": m.p},
    nn.Dropout2d: lambda m: {"p": m.p},
    nn.Identity: _no_fields,
    StochasticDepth: _stochastic_depth,
}
# Modules of other packages, by qualified class name, so that torchvision need not be imported.
_FOREIGN_MODULES = {
    "torchvision.ops.stochastic_depth.StochasticDepth": ("StochasticDepth", _stochastic_depth),
}
# Layers whose tensors are stored under "<name>.<tensor>".
_WITH_TENSORS = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
# op -> the class load_model builds; its constructor takes the model.json fields.
_OP_CLASSES = {cls.__name__: cls for cls in _MODULES}
_OP_CLASSES.update({"Add": Add, "Mul": Mul, "Cat": Cat, "Mean": Mean})
# op -> (fewest, most) inputs; None is no limit. Other ops take exactly one.
_ARITY = {"Add": (2, None), "Mul": (2, 2), "Cat": (1, None)}


def _qualname(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _module_spec(module):
    """(op, fields function) for a supported module, else None."""
    if type(module) in _MODULES:
        return type(module).__name__, _MODULES[type(module)]
    return _FOREIGN_MODULES.get(_qualname(type(module)))


# -----------------------------------------------------------------------------------------------
# Functions and tensor methods -> the equivalent module, so one code path describes both forms.

_REQUIRED = object()


def _no_dropout(cls):
    def make(p, training, inplace):
        if training:
            raise ExportError(f"functional {cls.__name__.lower()} with training=True drops values "
                              "at inference; pass training=self.training or use nn."
                              f"{cls.__name__}")
        return cls(p)
    return make


def _stochastic_depth_fn(p, mode, training):
    if training:
        raise ExportError("stochastic_depth with training=True drops rows at inference; pass "
                          "training=self.training or use torchvision.ops.StochasticDepth")
    try:
        return StochasticDepth(p, mode)
    except ValueError as e:
        raise ExportError(str(e)) from None


def _activation(cls):
    return ((("inplace", False),), lambda inplace: cls())


# target -> (parameters after the input tensor as (name, default), factory taking them by name)
_FUNCTIONS = {
    torch.flatten: ((("start_dim", 0), ("end_dim", -1)), nn.Flatten),
    F.relu: _activation(nn.ReLU),
    torch.relu: ((), nn.ReLU),
    torch.relu_: ((), nn.ReLU),
    F.relu6: _activation(nn.ReLU6),
    F.hardswish: _activation(nn.Hardswish),
    F.hardsigmoid: _activation(nn.Hardsigmoid),
    F.silu: _activation(nn.SiLU),
    torch.sigmoid: ((), nn.Sigmoid),
    F.sigmoid: ((), nn.Sigmoid),
    torch.tanh: ((), nn.Tanh),
    F.tanh: ((), nn.Tanh),
    F.leaky_relu: ((("negative_slope", 0.01), ("inplace", False)),
                   lambda negative_slope, inplace: nn.LeakyReLU(negative_slope)),
    F.gelu: ((("approximate", "none"),), nn.GELU),
    F.softmax: ((("dim", None), ("_stacklevel", 3), ("dtype", None)),
                lambda dim, _stacklevel, dtype: nn.Softmax(dim)),
    torch.softmax: ((("dim", _REQUIRED), ("dtype", None)), lambda dim, dtype: nn.Softmax(dim)),
    F.log_softmax: ((("dim", None), ("_stacklevel", 3), ("dtype", None)),
                    lambda dim, _stacklevel, dtype: nn.LogSoftmax(dim)),
    torch.log_softmax: ((("dim", _REQUIRED), ("dtype", None)),
                        lambda dim, dtype: nn.LogSoftmax(dim)),
    F.max_pool2d: ((("kernel_size", _REQUIRED), ("stride", None), ("padding", 0), ("dilation", 1),
                    ("ceil_mode", False), ("return_indices", False)), nn.MaxPool2d),
    F.avg_pool2d: ((("kernel_size", _REQUIRED), ("stride", None), ("padding", 0),
                    ("ceil_mode", False), ("count_include_pad", True), ("divisor_override", None)),
                   nn.AvgPool2d),
    F.adaptive_avg_pool2d: ((("output_size", _REQUIRED),), nn.AdaptiveAvgPool2d),
    F.dropout: ((("p", 0.5), ("training", True), ("inplace", False)), _no_dropout(nn.Dropout)),
    F.dropout2d: ((("p", 0.5), ("training", True), ("inplace", False)), _no_dropout(nn.Dropout2d)),
}
_FOREIGN_FUNCTIONS = {
    "torchvision.ops.stochastic_depth.stochastic_depth":
        ((("p", _REQUIRED), ("mode", _REQUIRED), ("training", True)), _stochastic_depth_fn),
}
_METHODS = {
    "relu": ((), nn.ReLU),
    "relu_": ((), nn.ReLU),
    "sigmoid": ((), nn.Sigmoid),
    "sigmoid_": ((), nn.Sigmoid),
    "tanh": ((), nn.Tanh),
    "tanh_": ((), nn.Tanh),
    "flatten": ((("start_dim", 0), ("end_dim", -1)), nn.Flatten),
    "softmax": ((("dim", _REQUIRED), ("dtype", None)), lambda dim, dtype: nn.Softmax(dim)),
    "log_softmax": ((("dim", _REQUIRED), ("dtype", None)), lambda dim, dtype: nn.LogSoftmax(dim)),
}
_RESHAPES = {"view", "reshape"}  # methods; torch.reshape is handled as a function
_NO_OPS = {"contiguous"}
# The graph ops: fx targets of sums, products, concatenations and means.
_ADDS = {operator.add, operator.iadd, torch.add, "add", "add_"}
_MULS = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
_CATS = {torch.cat} | ({torch.concat} if hasattr(torch, "concat") else set())
_MEANS = {torch.mean, "mean"}
# Targets that modify their first argument (besides inplace=True and modules with inplace set).
_IN_PLACE = {operator.iadd, operator.imul, torch.relu_, "add_", "mul_", "relu_", "sigmoid_",
             "tanh_"}
# Targets whose output may share memory with their input, so an in-place change shows through.
_ALIASING_METHODS = {"contiguous", "view", "reshape", "flatten"}
_ALIASING_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten)


def _bind(params, args, kwargs):
    """Maps a call's arguments after the input tensor onto `params`; returns {name: value}."""
    names = [n for n, _ in params]
    if len(args) > len(names):
        raise ExportError(f"too many arguments ({len(args)}, expected at most {len(names)})")
    bound = dict(zip(names, args))
    for k, v in kwargs.items():
        if k not in names or k in bound:
            raise ExportError(f"unexpected argument {k}={v!r}")
        bound[k] = v
    for name, default in params:
        if name not in bound:
            if default is _REQUIRED:
                raise ExportError(f"missing argument '{name}'")
            bound[name] = default
    return bound


# -----------------------------------------------------------------------------------------------
# Tracing

@dataclass(eq=False)
class Layer:
    """One exported layer: its model.json entry, the module that computes it, its output shape,
    and its inputs (Layer objects, or INPUT for the model's input). Compared by identity."""
    op: str
    name: str  # module path for call_module layers, "" for functional ones
    fields: dict
    module: nn.Module
    node: str  # the fx node it came from, for messages and ids
    shape: list = field(default_factory=list)  # output shape for the sample input, batch first
    inputs: list = field(default_factory=list)
    id: str = ""  # set by _assign_keys where an explicit reference needs one
    refs: list = None  # the "inputs" written to model.json, None when implicit

    def key(self):
        return self.id or self.name

    def json(self):
        entry = {"op": self.op}
        if self.id:
            entry["id"] = self.id
        if self.name:
            entry["name"] = self.name
        if self.refs is not None:
            entry["inputs"] = list(self.refs)
        entry.update(self.fields)
        return entry


INPUT = "<model input>"  # the source of the model's input among Layer.inputs


def module_fields(module):
    """The model.json fields of a supported module (its constructor kwargs), or ExportError."""
    spec = _module_spec(module)
    if spec is None:
        raise ExportError(f"{type(module).__name__} is not supported. {SUPPORTED_HELP}")
    return spec[1](module)


def _module_layer(module, name, node):
    try:
        fields = module_fields(module)
    except ExportError as e:
        where = f"{type(module).__name__} '{name}'" if name else type(module).__name__
        raise ExportError(f"node '{node.name}' ({where}): {e}") from None
    return Layer(_module_spec(module)[0], name, fields, module, node.name)


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, keeping the supported modules of other packages (StochasticDepth) whole
    so that they keep their names."""

    def is_leaf_module(self, m, qualname):
        return _qualname(type(m)) in _FOREIGN_MODULES or super().is_leaf_module(m, qualname)


def _trace(module):
    try:
        tracer = _Tracer()
        graph = tracer.trace(module)
        return torch.fx.GraphModule(tracer.root, graph, type(module).__name__)
    except Exception as e:  # TraceError, TypeError from data-dependent control flow, ...
        first = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0].rstrip(".")
        raise ExportError(f"torch.fx could not trace {type(module).__name__}.forward: {first}"
                          f"{_user_frame(e)}. The exporter needs a forward without data-dependent "
                          f"control flow or iteration over tensors. {SUPPORTED_HELP}") from None


def _user_frame(exc):
    """' (at file.py:line in f: code)': the innermost frame outside torch, where tracing broke."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f"{os.sep}torch{os.sep}" not in f.filename and f.filename != __file__]
    if not frames:
        return ""
    f = frames[-1]
    where = os.path.join(*f.filename.split(os.sep)[-2:])
    return f" (at {where}:{f.lineno} in {f.name}: {(f.line or '').strip()})"


def _sample_shapes(input_shape):
    """Concrete sample input shapes to try, batch first: free H/W take each of SAMPLE_SIZES."""
    if all(d > 0 for d in input_shape):
        return [[SAMPLE_BATCH] + list(input_shape)]
    return [[SAMPLE_BATCH] + [d if d > 0 else s for d in input_shape] for s in SAMPLE_SIZES]


class _ShapeRecorder(torch.fx.Interpreter):
    """Runs the traced graph once and stores each tensor node's output shape in node.meta."""

    def run_node(self, n):
        try:
            result = super().run_node(n)
        except Exception as e:  # noqa: BLE001 - torch's own message says what did not fit
            raise _SampleError(f"node '{n.name}' ({n.op} {_target_name(n.target)}): "
                               f"{type(e).__name__}: {str(e).splitlines()[0]}") from None
        if isinstance(result, torch.Tensor):
            n.meta["convserve_shape"] = list(result.shape)
        return result


class _SampleError(Exception):
    """A node failed on the sample input. fx appends its own text to args, so keep ours apart."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def _propagate(gm, input_shape):
    """Runs the traced module once to record every node's output shape; returns the sample input."""
    errors = []
    for shape in _sample_shapes(input_shape):
        sample = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                _ShapeRecorder(gm).run(sample.clone())
            return sample
        except _SampleError as e:
            errors.append(f"input {shape}: {e.message}")
    raise ExportError(f"the module does not run on a sample input ({errors[0]})")


def _shape(node):
    return node.meta.get("convserve_shape")


def _describe(node):
    return f"node '{node.name}' ({node.op} {_target_name(node.target)})"


def _fail(node, why):
    raise ExportError(f"{_describe(node)}: {why}")


# --- in-place operations ------------------------------------------------------------------------

def _modules(gm):
    return dict(gm.named_modules())


def _is_in_place(node, modules):
    """True when the node overwrites its first argument (x += y, F.relu(x, inplace=True), ...)."""
    if node.op in ("call_function", "call_method") and node.target in _IN_PLACE:
        return True
    if node.op in ("call_function", "call_method") and node.kwargs.get("inplace") is True:
        return True
    if node.op == "call_function" and node.target in _FUNCTIONS:
        params = [n for n, _ in _FUNCTIONS[node.target][0]]
        if "inplace" in params and len(node.args) > 1 + params.index("inplace"):
            return node.args[1 + params.index("inplace")] is True
    if node.op == "call_module":
        return getattr(modules.get(node.target), "inplace", False) is True
    return False


def _aliases(node, modules):
    """True when the node's output may be its first argument's memory (a view or the identity)."""
    if node.op == "call_method" and node.target in _ALIASING_METHODS:
        return True
    if node.op == "call_function" and node.target in (torch.flatten, torch.reshape):
        return True
    if node.op == "call_function" and _target_name(node.target) in _FOREIGN_FUNCTIONS:
        return True  # stochastic_depth returns its input in eval
    if node.op == "call_module":
        m = modules.get(node.target)
        return isinstance(m, _ALIASING_MODULES) or _qualname(type(m)) in _FOREIGN_MODULES
    return False


def _check_in_place_used(gm):
    """Dead code elimination would drop an in-place change whose result is never read (x.relu_()
    as a statement), although it changes x: refuse it before."""
    modules = _modules(gm)
    for n in gm.graph.nodes:
        if n.args and isinstance(n.args[0], torch.fx.Node) and _is_in_place(n, modules) \
                and not n.users:
            _fail(n, "the result of this in-place operation is never used; write x = f(x) "
                     "(torch.fx only follows values that are used)")


def _check_in_place_reads(gm):
    """fx records x += y as a new value, but the old x is overwritten: refuse when the old value
    (or a view of it) is read after the change."""
    modules = _modules(gm)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    root = {}
    for n in gm.graph.nodes:
        first = n.args[0] if n.args and isinstance(n.args[0], torch.fx.Node) else None
        shares = first is not None and (_aliases(n, modules) or _is_in_place(n, modules))
        root[n] = root[first] if shares else n
        if not (first is not None and _is_in_place(n, modules)):
            continue
        for old in (m for m in root if root[m] is root[n] and order[m] < order[n]):
            for u in old.users:
                if u is not n and order[u] > order[n] and not _is_shape_query(u):
                    _fail(n, f"modifies '{first.name}' in place, and '{u.name}' reads "
                             f"'{old.name}' afterwards; torch.fx does not see in-place changes, "
                             "so write this operation out of place")


# --- the graph walk -----------------------------------------------------------------------------

class _Graph:
    """Walks the fx graph in order (a topological order), maps each node to a Layer and records
    which layers feed which."""

    def __init__(self, gm):
        self.gm = gm
        self.modules = _modules(gm)
        self.source = {}  # node -> INPUT or the Layer computing its value
        self.helpers = set()  # x.size(), x.shape and x.size(0) nodes
        self.batch = set()  # nodes whose value is the batch size
        self.reshapes = set()  # view/reshape nodes that consumed helpers
        self.layers = []
        self.node_of = {}  # id(layer) -> the fx node that computed it
        self.output = None

    def run(self):
        for node in self.gm.graph.nodes:
            getattr(self, "_" + node.op, self._other)(node)
        self._check_helpers()
        return self.layers, self.output

    def _placeholder(self, node):
        if INPUT in self.source.values():
            if node.users:
                _fail(node, "forward must take exactly one tensor argument")
            return
        self.source[node] = INPUT

    def _output(self, node):
        result = node.args[0]
        if not isinstance(result, torch.fx.Node) or result not in self.source:
            _fail(node, "forward must return a single tensor computed by the layers")
        if self.source[result] is INPUT:
            _fail(node, f"forward returns its input unchanged: there are no layers. "
                        f"{SUPPORTED_HELP}")
        self.output = self.source[result]

    def _call_module(self, node):
        module = self.modules[node.target]
        if len(node.args) != 1 or node.kwargs:
            _fail(node, "a module must be called with one tensor only")
        layer = _module_layer(module, node.target, node)
        self._add(node, layer, [self._tensor(node, node.args[0])])

    def _call_function(self, node):
        if self._helper(node):
            return
        target = node.target
        if target in _ADDS:
            self._add_op(node)
        elif target in _MULS:
            self._mul_op(node)
        elif target in _CATS:
            self._cat_op(node)
        elif target in _MEANS:
            self._mean_op(node)
        elif target is torch.reshape:
            self._reshape(node, node.args[1:], node.kwargs.get("shape"))
        elif target in _FUNCTIONS:
            self._functional(node, _FUNCTIONS[target])
        elif _target_name(target) in _FOREIGN_FUNCTIONS:
            self._functional(node, _FOREIGN_FUNCTIONS[_target_name(target)])
        else:
            _fail(node, f"function {_target_name(target)} is not supported. {SUPPORTED_HELP}")

    def _call_method(self, node):
        if self._helper(node):
            return
        target = node.target
        if target in _NO_OPS:
            self.source[node] = self._tensor(node, node.args[0])
        elif target in _ADDS:
            self._add_op(node)
        elif target in _MULS:
            self._mul_op(node)
        elif target in _MEANS:
            self._mean_op(node)
        elif target in _RESHAPES:
            self._reshape(node, node.args[1:], node.kwargs.get("shape") or node.kwargs.get("size"))
        elif target in _METHODS:
            self._functional(node, _METHODS[target])
        else:
            _fail(node, f"tensor method .{target}() is not supported. {SUPPORTED_HELP}")

    def _other(self, node):  # get_attr and anything newer
        _fail(node, f"'{node.op}' nodes (a parameter or buffer used directly in forward, not "
                    f"through a module) are not supported. {SUPPORTED_HELP}")

    # --- graph ops ------------------------------------------------------------------------------

    def _two_tensors(self, node, what, example):
        args = list(node.args)
        kwargs = dict(node.kwargs)
        if "other" in kwargs and len(args) == 1:
            args.append(kwargs.pop("other"))
        if "input" in kwargs and not args:
            args.append(kwargs.pop("input"))
        if len(args) != 2:
            _fail(node, f"{what} needs two tensors")
        alpha = kwargs.pop("alpha", 1)
        if alpha != 1:
            _fail(node, f"{what} with alpha={alpha!r} is not supported; the engine's {what} "
                        "takes plain tensors")
        if kwargs:
            _fail(node, f"{what} with {', '.join(sorted(kwargs))}= is not supported")
        for a in args:
            if not isinstance(a, torch.fx.Node) or a not in self.source:
                _fail(node, f"{what} of a tensor and a constant ({example}) is not supported; "
                            f"the engine's {what} takes two tensors computed by the layers")
        return [self._tensor(node, a) for a in args]

    def _add_op(self, node):
        sources = self._two_tensors(node, "Add", "x + 1")
        _check(node, Add.check([_shape(a) for a in node.args[:2]]))
        merged = []
        for a, src in zip(node.args[:2], sources):
            # A sum of sums is one Add: (a + b) + c becomes Add(a, b, c) when nothing else reads
            # a + b. The summation order is kept.
            if (isinstance(src, Layer) and src.op == "Add" and self.node_of[id(src)] is a
                    and list(a.users) == [node] and sum(x is a for x in node.args[:2]) == 1):
                merged.extend(src.inputs)
                self.layers.remove(src)
            else:
                merged.append(src)
        self._add(node, Layer("Add", "", {}, Add(), node.name), merged)

    def _mul_op(self, node):
        sources = self._two_tensors(node, "Mul", "x * 0.5")
        _check(node, Mul.check([_shape(a) for a in node.args[:2]]))
        self._add(node, Layer("Mul", "", {}, Mul(), node.name), sources)

    def _cat_op(self, node):
        try:
            bound = _bind((("tensors", _REQUIRED), ("dim", 0)), node.args, node.kwargs)
        except ExportError as e:
            _fail(node, str(e))
        tensors, dim = bound["tensors"], bound["dim"]
        if not isinstance(tensors, (list, tuple)):
            _fail(node, "torch.cat needs a list or tuple of tensors written in forward")
        if not isinstance(dim, int):
            _fail(node, f"torch.cat dim must be a constant integer, got {dim!r}")
        sources = [self._tensor(node, t) for t in tensors]
        module = Cat(dim)
        _check(node, module.check([_shape(t) for t in tensors]))
        self._add(node, Layer("Cat", "", {"dim": dim}, module, node.name), sources)

    def _mean_op(self, node):
        try:
            bound = _bind((("input", _REQUIRED), ("dim", None), ("keepdim", False),
                           ("dtype", None)), node.args, node.kwargs)
        except ExportError as e:
            _fail(node, str(e))
        if bound["dim"] is None:
            _fail(node, "a mean over every dim is not supported; only x.mean((2, 3)) over H and W "
                        "is")
        if bound["dtype"] is not None:
            _fail(node, "mean with a dtype is not supported")
        dim = list(bound["dim"]) if isinstance(bound["dim"], (list, tuple)) else bound["dim"]
        module = Mean(dim, bound["keepdim"])
        source = self._tensor(node, bound["input"])
        _check(node, module.check([_shape(bound["input"])]))
        self._add(node, Layer("Mean", "", {"dim": dim, "keepdim": bound["keepdim"]}, module,
                              node.name), [source])

    # --- single-input functions -----------------------------------------------------------------

    def _functional(self, node, spec):
        params, factory = spec
        if not node.args:
            _fail(node, "expects the input tensor as its first argument")
        source = self._tensor(node, node.args[0])
        self._no_tensor_args(node)
        try:
            module = factory(**_bind(params, node.args[1:], node.kwargs))
        except ExportError as e:
            _fail(node, str(e))
        except (TypeError, ValueError) as e:
            _fail(node, f"unsupported arguments: {e}")
        self._add(node, _module_layer(module, "", node), [source])

    def _reshape(self, node, dims, dims_kw):
        source = self._tensor(node, node.args[0])
        if dims_kw is not None:
            dims = dims_kw
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = dims[0]
        dims = list(dims)
        in_shape, out_shape = _shape(node.args[0]), _shape(node)
        flat = in_shape and [in_shape[0], math.prod(in_shape[1:])]
        ok = (len(dims) == 2 and (dims[0] in self.batch or dims[0] == -1)
              and (dims[1] == -1 or isinstance(dims[1], int)) and out_shape == flat)
        if not ok:
            shown = ", ".join("x.size(0)" if d in self.batch else repr(d) for d in dims)
            _fail(node, f"{node.target}({shown}) is not supported: only flattening reshapes, "
                        "x.view(x.size(0), -1) or x.view(-1, C*H*W), are")
        self.reshapes.add(node)
        self._add(node, _module_layer(nn.Flatten(), "", node), [source])

    # --- helpers --------------------------------------------------------------------------------

    def _tensor(self, node, arg):
        """The source (INPUT or a Layer) of a tensor argument, or ExportError."""
        if not isinstance(arg, torch.fx.Node) or arg not in self.source:
            shown = arg.name if isinstance(arg, torch.fx.Node) else repr(arg)
            _fail(node, f"expects a tensor computed by the layers, got {shown}")
        return self.source[arg]

    def _no_tensor_args(self, node):
        for arg in list(node.args[1:]) + list(node.kwargs.values()):
            for inner in _flat(arg):
                if isinstance(inner, torch.fx.Node) and inner not in self.batch:
                    _fail(node, f"takes a second computed input '{inner.name}'; this function "
                                f"takes one tensor. {SUPPORTED_HELP}")

    def _helper(self, node):
        """Recognises x.size(), x.size(0), x.shape and size[0]; returns True for those nodes."""
        args = node.args
        is_tensor = bool(args) and isinstance(args[0], torch.fx.Node) and args[0] in self.source
        if node.op == "call_method" and node.target == "size" and is_tensor:
            dim = args[1] if len(args) > 1 else node.kwargs.get("dim")
            if dim is None:
                self.helpers.add(node)
                return True
            if dim == 0:
                self.helpers.add(node)
                self.batch.add(node)
                return True
            _fail(node, "only x.size(0) (the batch size) may be used to reshape")
        if node.op == "call_function" and node.target is getattr and is_tensor \
                and args[1] == "shape":
            self.helpers.add(node)
            return True
        if node.op == "call_function" and node.target is operator.getitem \
                and isinstance(args[0], torch.fx.Node) and args[0] in self.helpers:
            if args[1] != 0:
                _fail(node, "only x.shape[0] / x.size(0) (the batch size) may be used to "
                            "reshape")
            self.helpers.add(node)
            self.batch.add(node)
            return True
        return False

    def _check_helpers(self):
        for h in self.helpers:
            for u in h.users:
                if u not in self.helpers and u not in self.reshapes:
                    _fail(u, f"uses the shape value '{h.name}' outside a flattening "
                             f"view/reshape. {SUPPORTED_HELP}")

    def _add(self, node, layer, inputs):
        layer.shape = _shape(node)
        layer.inputs = inputs
        if layer.shape is None:
            _fail(node, "does not produce a tensor")
        if len(layer.shape) not in (2, 4):
            _fail(node, f"outputs a rank-{len(layer.shape)} tensor {layer.shape}; the engine "
                        "runs [N, C, H, W] and [N, F] tensors only")
        channel_dims = _channel_dims(len(layer.shape))
        if layer.op in ("Softmax", "LogSoftmax") and layer.fields["dim"] not in channel_dims:
            _fail(node, f"{layer.op}(dim={layer.fields['dim']}) on a rank-{len(layer.shape)} "
                        "tensor is not supported; only the channel/feature dim 1 is")
        self.layers.append(layer)
        self.source[node] = layer
        self.node_of[id(layer)] = node


def _check(node, message):
    if message:
        _fail(node, message)


def _is_shape_query(node):
    """x.size(...) or x.shape: reads the tensor's shape, not its values."""
    return ((node.op == "call_method" and node.target == "size")
            or (node.op == "call_function" and node.target is getattr
                and node.args[1:2] == ("shape",)))


def _flat(value):
    if isinstance(value, (tuple, list)):
        for v in value:
            yield from _flat(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flat(v)
    else:
        yield value


def _target_name(target):
    if isinstance(target, str):
        return target
    mod = getattr(target, "__module__", None) or ""
    return f"{mod}.{getattr(target, '__name__', repr(target))}".lstrip(".")


def _prune(layers, output):
    """Drops layers whose output only the shape of was read (x.size(0) of a branch): they compute
    nothing the output needs. Returns the layers that feed the output, in order."""
    needed = {id(output)}
    for layer in reversed(layers):
        if id(layer) in needed:
            needed |= {id(s) for s in layer.inputs if s is not INPUT}
    return [layer for layer in layers if id(layer) in needed]


def _assign_keys(layers):
    """Decides which layers carry "inputs" and which need an "id" (DESIGN.md section 2b):
    "inputs" only where they are not exactly [the previous layer] (["input"] for layer 0), an id
    only for a referenced layer whose name is missing, shared with another layer, or "input"."""
    prev = INPUT
    for layer in layers:
        layer.refs = [] if layer.inputs != [prev] else None
        prev = layer
    referenced = {id(s) for layer in layers if layer.refs is not None for s in layer.inputs
                  if s is not INPUT}
    names = Counter(layer.name for layer in layers if layer.name)
    # An id never equals a name (even a shared one) or another node's natural id, so that every
    # reference reads the same whichever way a reader matches it.
    taken = set(names) | {layer.node for layer in layers} | {INPUT_REF}
    for layer in layers:
        if id(layer) in referenced and (not layer.name or names[layer.name] > 1
                                        or layer.name == INPUT_REF):
            base = re.sub(r"[^A-Za-z0-9_.-]", "_", layer.node)[:MAX_ID - 8] or "layer"
            candidate, k = base, 1
            while candidate in taken and not (candidate == layer.node and candidate not in names):
                candidate, k = f"{base}_{k}", k + 1
            layer.id = candidate
            taken.add(candidate)
    for layer in layers:
        if layer.refs is not None:
            layer.refs = [INPUT_REF if s is INPUT else s.key() for s in layer.inputs]


def _check_placeholders(gm):
    """forward(self, x) only: further arguments must have defaults (and then they are constants)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for n in placeholders[1:]:
        if not n.args:  # fx keeps a default value in args
            _fail(n, "forward must take exactly one tensor argument")


def trace_layers(module, input_shape):
    """Traces `module` (put in eval mode) and returns (layers, sample input) in execution order,
    the output last, with their references assigned."""
    input_shape = _check_input_shape(input_shape)
    module.eval()
    gm = _trace(module)
    _check_placeholders(gm)
    sample = _propagate(gm, input_shape)
    _check_in_place_used(gm)
    gm.graph.eliminate_dead_code()
    _check_in_place_reads(gm)
    layers, output = _Graph(gm).run()
    if output is None or not layers:
        raise ExportError(f"the module has no layers. {SUPPORTED_HELP}")
    layers = _prune(layers, output)
    if layers[-1] is not output:
        raise ExportError(f"bug: the output layer '{output.node}' is not the last one")
    if not any(INPUT in layer.inputs for layer in layers):
        raise ExportError(f"the output does not depend on the input. {SUPPORTED_HELP}")
    _assign_keys(layers)
    return layers, sample


def _check_input_shape(shape):
    dims = [-1 if d is None else int(d) for d in shape]
    if len(dims) not in (1, 3) or dims[0] <= 0 or any(d == 0 or d < -1 for d in dims):
        raise ExportError(f"input shape must be [C, H, W] (H and W may be -1 for any size) or [F], "
                          f"got {list(shape)}")
    return dims


# -----------------------------------------------------------------------------------------------
# Writing

def _weights(module, layers):
    """state_dict tensors of the exported layers as float32 copies, and the names left out."""
    tensors = {}
    for layer in layers:
        if isinstance(layer.module, _WITH_TENSORS):
            for key, t in layer.module.state_dict().items():
                if key != "num_batches_tracked":
                    tensors[f"{layer.name}.{key}"] = t.detach().to(torch.float32).clone()
    unused = sorted(k for k in module.state_dict()
                    if k not in tensors and not k.endswith("num_batches_tracked"))
    return tensors, unused


def format_model_json(doc):
    """model.json text: 2-space indent, one layer per line, trailing newline."""
    lines = []
    for key, value in doc.items():
        if key == "layers":
            body = ",\n".join("    " + json.dumps(layer) for layer in value)
            lines.append(f'  "layers": [\n{body}\n  ]')
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _model_doc(name, input_shape, layers, weights, labels, max_batch_size, preprocess, precision,
               extra):
    doc = {"name": name}
    if weights:
        doc["weights"] = WEIGHTS_FILE
    doc["seed"] = 0
    doc["input"] = {"name": "input", "shape": list(input_shape)}
    doc["output"] = {"name": "logits"}
    if labels is not None:
        doc["output"]["labels"] = [str(label) for label in labels]
    if max_batch_size is not None:
        doc["max_batch_size"] = int(max_batch_size)
    for key, value in (extra or {}).items():
        if key in doc or key in ("layers", "preprocess", "precision"):
            raise ExportError(f"extra key '{key}' collides with a field the exporter writes")
        doc[key] = value
    if preprocess is not None:
        doc["preprocess"] = dict(preprocess)
    if precision is not None:
        doc["precision"] = precision
    doc["layers"] = [layer.json() for layer in layers]
    return doc


# -----------------------------------------------------------------------------------------------
# Reading back: a small graph interpreter, the inverse of export()

_LAYER_KEYS = ("op", "name", "id", "inputs")


def _tuples(value):
    return tuple(value) if isinstance(value, list) else value


def build_layer(entry):
    """The nn.Module for one model.json layer entry (its fields are the constructor's kwargs)."""
    cls = _OP_CLASSES.get(entry.get("op")) if isinstance(entry.get("op"), str) else None
    if cls is None:
        raise ExportError(f"unknown op {entry.get('op')!r}")
    kwargs = {k: _tuples(v) for k, v in entry.items() if k not in _LAYER_KEYS}
    if cls is Mean and "dim" in kwargs:
        kwargs["dim"] = list(kwargs["dim"]) if isinstance(kwargs["dim"], tuple) else kwargs["dim"]
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ExportError(f"bad fields for {entry['op']}: {e}") from None


def _where(i, entry):
    op = entry.get("op") if isinstance(entry, dict) else None
    name = entry.get("id") or entry.get("name") if isinstance(entry, dict) else None
    return f"layer {i} {op}" + (f" '{name}'" if name else "")


def _layer_key(entry):
    return entry.get("id") or entry.get("name") or None


def resolve_inputs(entries):
    """Checks the graph fields of a model.json "layers" list and returns, per layer, the indices
    of its inputs (-1 for the model's input). Raises ExportError naming the layer."""
    if not isinstance(entries, list) or not entries:
        raise ExportError("'layers' must be a non-empty list")
    keys = {}
    ids = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("op"), str):
            raise ExportError(f"layer {i}: expected an object with an 'op' string")
        for k in ("id", "name"):
            if k in entry and not isinstance(entry[k], str):
                raise ExportError(f"{_where(i, entry)}: '{k}' must be a string")
        if "id" in entry:
            lid = entry["id"]
            if not ID_RE.match(lid) or lid == INPUT_REF:
                raise ExportError(f"{_where(i, entry)}: id {lid!r} must be 1 to {MAX_ID} of "
                                  f"[A-Za-z0-9_.-] and not '{INPUT_REF}'")
            if lid in ids:
                raise ExportError(f"{_where(i, entry)}: id '{lid}' is used by an earlier layer")
            ids.add(lid)
        key = _layer_key(entry)
        if key:
            keys.setdefault(key, []).append(i)
    for lid in ids:
        if len(keys[lid]) > 1:
            i = keys[lid][1]
            raise ExportError(f"{_where(i, entries[i])}: '{lid}' is the id of another layer and "
                              "the key of this one; explicit ids must differ from every other "
                              "layer's key")
    sources = []
    for i, entry in enumerate(entries):
        lo, hi = _ARITY.get(entry["op"], (1, 1))
        if "inputs" not in entry:
            if lo > 1:
                raise ExportError(f"{_where(i, entry)}: {entry['op']} needs 'inputs' (at least "
                                  f"{lo})")
            sources.append([i - 1])
            continue
        refs = entry["inputs"]
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise ExportError(f"{_where(i, entry)}: 'inputs' must be a non-empty list of strings")
        if len(refs) < lo or (hi is not None and len(refs) > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else \
                f"{lo} to {hi}"
            noun = "input" if lo == hi == 1 else "inputs"
            raise ExportError(f"{_where(i, entry)}: {entry['op']} takes {want} {noun}, got "
                              f"{len(refs)}")
        indices = []
        for ref in refs:
            if ref == INPUT_REF:
                indices.append(-1)
                continue
            found = keys.get(ref, [])
            if not found:
                raise ExportError(f"{_where(i, entry)}: input '{ref}' names no layer")
            if len(found) > 1:
                shown = ", ".join(str(j) for j in found)
                raise ExportError(f"{_where(i, entry)}: input '{ref}' names several layers "
                                  f"({shown}); give them distinct ids")
            if found[0] >= i:
                what = "the layer itself" if found[0] == i else f"a later layer ({found[0]})"
                raise ExportError(f"{_where(i, entry)}: input '{ref}' names {what}; inputs "
                                  "must be earlier layers")
            indices.append(found[0])
        sources.append(indices)
    # Layer 0 can only read the model input (its references must be earlier), so the input is
    # always used; every other output must be.
    used = {s for srcs in sources for s in srcs}
    for i in range(len(entries) - 1):
        if i not in used:
            raise ExportError(f"{_where(i, entries[i])}: its output is not used by any later "
                              "layer (only the last layer is the model's output)")
    return sources


_LIST_OPS = (Add, Cat)  # graph ops that take their inputs as one list


def _call(layer, args):
    return layer(args) if isinstance(layer, _LIST_OPS) else layer(*args)


class GraphModel(nn.Module):
    """Runs model.json layers in order, each on its inputs; the last layer is the output. Errors
    name the layer. torch.jit.script compiles its to_fx() form, a straight-line fx GraphModule
    with the same modules."""

    def __init__(self, modules, sources, names):
        super().__init__()
        self.layers = nn.ModuleList(modules)
        self.sources = sources
        self.names = names  # "layer i Op 'name'" per layer, for messages
        last_use = {}
        for i, srcs in enumerate(sources):
            for s in srcs:
                last_use[s] = i
        self.free_after = [[s for s in set(srcs) if last_use[s] == i and s >= 0]
                           for i, srcs in enumerate(sources)]

    def forward(self, x):
        values = [None] * len(self.layers)
        for i, layer in enumerate(self.layers):
            args = [x if s < 0 else values[s] for s in self.sources[i]]
            try:
                values[i] = _call(layer, args)
            except ExportError as e:
                raise ExportError(f"{self.names[i]}: {e}") from None
            except RuntimeError as e:
                raise ExportError(f"{self.names[i]}: {str(e).splitlines()[0]} (inputs "
                                  f"{_shapes_text([a.shape for a in args])})") from None
            for s in self.free_after[i]:
                values[s] = None  # keep peak memory near what the engine needs
        return values[-1]

    def to_fx(self):
        """The same graph as a torch.fx GraphModule: one call per layer, no interpreter loop."""
        graph = torch.fx.Graph()
        x = graph.placeholder("x")
        values = []
        for i, layer in enumerate(self.layers):
            args = [x if s < 0 else values[s] for s in self.sources[i]]
            call_args = (args,) if isinstance(layer, _LIST_OPS) else tuple(args)
            values.append(graph.call_module(f"layers.{i}", call_args))
        graph.output(values[-1])
        return torch.fx.GraphModule(self, graph, "GraphModel").train(self.training)

    def __prepare_scriptable__(self):
        return self.to_fx()


def load_model(folder):
    """Rebuilds a model folder as a GraphModel in eval mode: the inverse of export().

    The graph is checked as the engine checks it (references, arity, every output used). Layers
    with tensors take them from the weights file (every tensor must be used); without a weights
    file they keep PyTorch's default initialisation.
    """
    with open(os.path.join(folder, MODEL_JSON)) as f:
        doc = json.load(f)
    entries = doc.get("layers")
    sources = resolve_inputs(entries)
    tensors = {}
    if doc.get("weights"):
        tensors, _ = safetensors_io.load(os.path.join(folder, doc["weights"]))
    used = set()
    modules = []
    for i, entry in enumerate(entries):
        try:
            module = build_layer(entry)
        except ExportError as e:
            raise ExportError(f"{_where(i, entry)}: {e}") from None
        if isinstance(module, _WITH_TENSORS):
            if not isinstance(entry.get("name"), str):
                raise ExportError(f"{_where(i, entry)}: a layer with weights needs a 'name'")
            if tensors:
                state = {}
                for key in module.state_dict():
                    full = f"{entry['name']}.{key}"
                    if full in tensors:
                        state[key] = torch.from_numpy(tensors[full])
                        used.add(full)
                    elif key != "num_batches_tracked":
                        raise ExportError(f"{_where(i, entry)}: tensor '{full}' missing from the "
                                          "weights file")
                try:
                    module.load_state_dict(state, strict=False)
                except RuntimeError as e:
                    raise ExportError(f"{_where(i, entry)}: {str(e).splitlines()[-1].strip()}") \
                        from None
        modules.append(module)
    left = sorted(set(tensors) - used)
    if left:
        raise ExportError(f"tensors not used by any layer: {', '.join(left)}")
    names = [_where(i, entry) for i, entry in enumerate(entries)]
    return GraphModel(modules, sources, names).eval()


def _verify(module, folder, sample, weights):
    """Reads the folder back and checks it computes what the module computes."""
    reloaded = load_model(folder)
    with torch.no_grad():
        want = module(sample.clone())
        got = reloaded(sample.clone())
    if got.shape != want.shape:
        raise ExportError(f"bug: exported model gives shape {list(got.shape)}, module gives "
                          f"{list(want.shape)}")
    if weights:
        err = (got - want).abs().max().item()
        scale = max(1.0, want.abs().max().item())
        if not err <= VERIFY_TOL * scale:
            raise ExportError(f"bug: exported model differs from the module by {err:g}")


@dataclass
class ExportResult:
    """What export() wrote: the model.json document, tensor names, shapes and dropped tensors."""
    doc: dict
    tensors: list
    layers: list
    unused: list


def export(module, folder, name, input_shape, *, labels=None, max_batch_size=None, preprocess=None,
           precision=None, weights=True, extra=None):
    """Writes `folder`/model.json (and model.safetensors unless weights=False) for `module`.

    input_shape is one sample's shape, [C, H, W] with -1 for a free H or W, or [F]. `extra` adds
    top-level keys such as {"dynamic_batching": {"max_queue_delay_us": 500}}. With weights=False no
    weights file is written and the engine initialises PyTorch-style random weights from "seed".
    Returns an ExportResult; raises ExportError when the module cannot be served.
    """
    input_shape = _check_input_shape(input_shape)
    layers, sample = trace_layers(module, input_shape)
    out_shape = layers[-1].shape
    if labels is not None and (len(out_shape) != 2 or len(labels) != out_shape[1]):
        raise ExportError(f"{len(labels)} labels given for an output of shape {out_shape}")
    tensors, unused = _weights(module, layers)
    doc = _model_doc(name, input_shape, layers, weights, labels, max_batch_size, preprocess,
                     precision, extra)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, MODEL_JSON), "w") as f:
        f.write(format_model_json(doc))
    weights_path = os.path.join(folder, WEIGHTS_FILE)
    if weights:
        safetensors_io.save(weights_path, tensors, {"format": "pt"})
    elif os.path.exists(weights_path):
        os.remove(weights_path)  # a stale file from an earlier export with weights
    _verify(module, folder, sample, weights)
    return ExportResult(doc, sorted(tensors), layers, unused)


# -----------------------------------------------------------------------------------------------
# Command line

def _import_factory(spec):
    """'pkg.mod:factory' or 'path/to/file.py:factory' -> the factory callable."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not attr:
        raise SystemExit(f"--module must look like pkg.mod:factory or file.py:factory, "
                         f"got {spec!r}")
    if mod_name.endswith(".py") or os.sep in mod_name:
        path = os.path.abspath(mod_name)
        sys.path.insert(0, os.path.dirname(path))
        loader = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0],
                                                        path)
        mod = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(mod)
    else:
        sys.path.insert(0, os.getcwd())
        mod = importlib.import_module(mod_name)
    return getattr(mod, attr)


def _parse_shape(text):
    try:
        return [int(d) for d in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from None


def _json_arg(text):
    """A JSON value given inline or as @file."""
    try:
        if text.startswith("@"):
            with open(text[1:]) as f:
                return json.load(f)
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as e:
        raise argparse.ArgumentTypeError(f"expected JSON or @file.json: {e}") from None


def _preprocess_arg(text):
    return text if text == "imagenet" else _json_arg(text)


def imagenet_preprocess(input_shape):
    """torchvision's ImageNet normalisation for an RGB input of the given [3, H, W]."""
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise ExportError(f"--preprocess imagenet needs an input shape 3,H,W, got {input_shape}")
    pre = {"color": "rgb", "scale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
           "invert": False}
    if input_shape[1] > 0 and input_shape[2] > 0:
        pre = {"color": "rgb", "resize": list(input_shape[1:]), **pre}
    return pre


def imagenet_labels():
    """The 1000 ImageNet-1k category names, as torchvision's classification weights list them
    (no download: they are part of torchvision's code)."""
    import torchvision.models

    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _layer_line(layer):
    shape = ", ".join(["N"] + [str(d) for d in layer.shape[1:]])
    line = f"  {layer.op:<18} {layer.key() or '-':<28} [{shape}]"
    if layer.refs is not None:
        line += f"  <- {', '.join(layer.refs)}"
    return line


def main(argv=None):
    p = argparse.ArgumentParser(description="Export a PyTorch nn.Module to a convserve model "
                                            "folder.")
    p.add_argument("--module", required=True,
                   help="pkg.mod:factory or file.py:factory; the factory (a function or class) "
                        "returns the nn.Module, e.g. torchvision.models:resnet18")
    p.add_argument("--kwargs", type=_json_arg, default={},
                   help="JSON object of keyword arguments for the factory, e.g. "
                        "'{\"num_classes\": 10}'")
    p.add_argument("--name", required=True, help="model name (the folder name under config/models)")
    p.add_argument("--input-shape", required=True, type=_parse_shape,
                   help="one sample's shape, e.g. 3,28,28 or 3,-1,-1 for any H and W")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--state-dict", help="load these trained weights (torch.save of a state_dict)")
    p.add_argument("--seed", type=int, default=0, help="torch seed before calling the factory (0)")
    p.add_argument("--no-weights", action="store_true",
                   help="write no weights file: the engine initialises random weights")
    p.add_argument("--labels", help="comma-separated class labels, @file with one per line, or "
                                    "'imagenet' for torchvision's 1000 ImageNet categories")
    p.add_argument("--preprocess", type=_preprocess_arg,
                   help="image preprocessing for /predictions: a JSON object (or @file), or "
                        "'imagenet' for torchvision's RGB mean and std")
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--precision", choices=("f32", "bf16"))
    args = p.parse_args(argv)

    if not isinstance(args.kwargs, dict):
        p.error("--kwargs must be a JSON object")
    torch.manual_seed(args.seed)
    module = _import_factory(args.module)(**args.kwargs)
    if args.state_dict:
        module.load_state_dict(torch.load(args.state_dict, map_location="cpu"))
    labels = None
    if args.labels == "imagenet":
        labels = imagenet_labels()
    elif args.labels:
        if args.labels.startswith("@"):
            with open(args.labels[1:]) as f:
                labels = [line.strip() for line in f if line.strip()]
        else:
            labels = args.labels.split(",")
    try:
        preprocess = args.preprocess
        if preprocess == "imagenet":
            preprocess = imagenet_preprocess(args.input_shape)
        if preprocess is not None and not isinstance(preprocess, dict):
            raise ExportError("--preprocess must be a JSON object or 'imagenet'")
        result = export(module, args.out, args.name, args.input_shape, labels=labels,
                        max_batch_size=args.max_batch_size, precision=args.precision,
                        preprocess=preprocess, weights=not args.no_weights)
    except ExportError as e:
        print(f"export_model: {e}", file=sys.stderr)
        return 1
    sample = _sample_shapes(_check_input_shape(args.input_shape))[0]
    print(f"layer output shapes for an input [N, {', '.join(map(str, sample[1:]))}]:")
    for layer in result.layers:
        print(_layer_line(layer))
    if result.unused:
        print(f"note: not exported (no layer uses them): {', '.join(result.unused)}",
              file=sys.stderr)
    what = f"{len(result.tensors)} tensors" if not args.no_weights else "no weights (random init)"
    print(f"wrote {args.out}/{MODEL_JSON} ({len(result.layers)} layers, {what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
