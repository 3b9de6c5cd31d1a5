"""Export a PyTorch nn.Module to a convserve model folder: model.json + model.safetensors.

The forward pass is traced with torch.fx, so layers come out in execution order (a module used
twice is listed twice, attribute order does not matter) and nn.Sequential containers are flattened
into their state_dict prefixes ("conv.0", "fc.3"). The traced graph must be a simple chain: each
step takes the previous step's output. Supported steps:

    modules    Conv2d (padding_mode='zeros'), BatchNorm2d (with running stats), Linear, Flatten,
               ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax, LogSoftmax, MaxPool2d, AvgPool2d,
               AdaptiveAvgPool2d, Dropout, Dropout2d, Identity
    functions  torch.flatten(x, 1), x.flatten(1), x.view(x.size(0), -1), x.reshape(x.shape[0], -1),
               x.view(-1, C*H*W), F.relu / torch.relu / x.relu(), torch.sigmoid, torch.tanh,
               F.leaky_relu, F.gelu, F.softmax / F.log_softmax (with dim), F.max_pool2d,
               F.avg_pool2d, F.adaptive_avg_pool2d, F.dropout / F.dropout2d (training=False),
               x.contiguous()

Anything else (residual adds, concatenation, unknown modules or functions) raises ExportError naming
the node. Each layer becomes {"op": <class name>, "name": <module path>, <constructor kwargs>},
the format of DESIGN.md section 2. After writing, the folder is read back (load_model) and run
against the original module on a sample input, so a wrong export fails here, not in the server.

Library use (run with /usr/bin/python3, which has Debian's python3-torch):

    from export_model import export
    export(net, "config/models/digits", "digits", [1, 28, 28], labels=[str(i) for i in range(10)])

Command line:

    /usr/bin/python3 tools/export_model.py --module mypkg.nets:make_net --name digits \
        --input-shape 1,28,28 --out config/models/digits [--state-dict trained.pt] [--no-weights]
"""

import argparse
import importlib
import importlib.util
import json
import math
import operator
import os
import sys
from dataclasses import dataclass, field

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


class ExportError(ValueError):
    """The module cannot be exported; the message names the node and says what is supported."""


SUPPORTED_HELP = (
    "convserve exports a chain of Conv2d, BatchNorm2d, Linear, Flatten, ReLU, LeakyReLU, Sigmoid, "
    "Tanh, GELU, Softmax, LogSoftmax, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Dropout, Dropout2d "
    "and Identity (modules, or their torch / torch.nn.functional forms), plus flattening with "
    "torch.flatten(x, 1) or x.view(x.size(0), -1); each step must take the previous step's output")


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


_MODULES = {
    nn.Conv2d: _conv2d,
    nn.BatchNorm2d: _batchnorm2d,
    nn.Linear: _linear,
    nn.Flatten: lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim},
    nn.ReLU: lambda m: {},
    nn.LeakyReLU: lambda m: {"negative_slope": m.negative_slope},
    nn.Sigmoid: lambda m: {},
    nn.Tanh: lambda m: {},
    nn.GELU: lambda m: {"approximate": m.approximate},
    nn.Softmax: _softmax,
    nn.LogSoftmax: _softmax,
    nn.MaxPool2d: _maxpool2d,
    nn.AvgPool2d: _avgpool2d,
    nn.AdaptiveAvgPool2d: _adaptiveavgpool2d,
    nn.Dropout: lambda m: {"p": m.p},
    nn.Dropout2d: lambda m: {"p": m.p},
    nn.Identity: lambda m: {},
}
# Layers whose tensors are stored under "<name>.<tensor>".
_WITH_TENSORS = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


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


# target -> (parameters after the input tensor as (name, default), factory taking them by name)
_FUNCTIONS = {
    torch.flatten: ((("start_dim", 0), ("end_dim", -1)), nn.Flatten),
    F.relu: ((("inplace", False),), lambda inplace: nn.ReLU()),
    torch.relu: ((), nn.ReLU),
    torch.relu_: ((), nn.ReLU),
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
_METHODS = {
    "relu": ((), nn.ReLU),
    "relu_": ((), nn.ReLU),
    "sigmoid": ((), nn.Sigmoid),
    "tanh": ((), nn.Tanh),
    "flatten": ((("start_dim", 0), ("end_dim", -1)), nn.Flatten),
    "softmax": ((("dim", _REQUIRED), ("dtype", None)), lambda dim, dtype: nn.Softmax(dim)),
    "log_softmax": ((("dim", _REQUIRED), ("dtype", None)), lambda dim, dtype: nn.LogSoftmax(dim)),
}
_RESHAPES = {"view", "reshape"}  # methods; torch.reshape is handled as a function
_NO_OPS = {"contiguous"}


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

@dataclass
class Layer:
    """One exported layer: its model.json entry, the module that computes it, its output shape."""
    op: str
    name: str  # module path for call_module layers, "" for functional ones
    fields: dict
    module: nn.Module
    node: str  # the fx node it came from, for messages
    shape: list = field(default_factory=list)  # output shape for the sample input, batch first

    def json(self):
        entry = {"op": self.op}
        if self.name:
            entry["name"] = self.name
        entry.update(self.fields)
        return entry


def module_fields(module):
    """The model.json fields of a supported module (its constructor kwargs), or ExportError."""
    if type(module) not in _MODULES:
        raise ExportError(f"{type(module).__name__} is not supported. {SUPPORTED_HELP}")
    return _MODULES[type(module)](module)


def _module_layer(module, name, node):
    try:
        fields = module_fields(module)
    except ExportError as e:
        where = f"{type(module).__name__} '{name}'" if name else type(module).__name__
        raise ExportError(f"node '{node.name}' ({where}): {e}") from None
    return Layer(type(module).__name__, name, fields, module, node.name)


def _trace(module):
    try:
        return torch.fx.symbolic_trace(module)
    except Exception as e:  # TraceError, TypeError from data-dependent control flow, ...
        raise ExportError(f"torch.fx could not trace {type(module).__name__}.forward: {e}. The "
                          "exporter needs a forward without data-dependent control flow. "
                          f"{SUPPORTED_HELP}") from None


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
                _ShapeRecorder(gm).run(sample)
            return sample
        except _SampleError as e:
            errors.append(f"input {shape}: {e.message}")
    raise ExportError(f"the module does not run on a sample input ({errors[0]})")


def _shape(node):
    return node.meta.get("convserve_shape")


class _Chain:
    """Walks the fx graph, checks that it is a chain and collects the layers."""

    def __init__(self, gm):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.current = None  # the node holding the running tensor
        self.tensors = []  # every node that held the running tensor, in order
        self.helpers = set()  # x.size(), x.shape and x.size(0) nodes
        self.batch = set()  # nodes whose value is the batch size
        self.reshapes = set()  # view/reshape nodes that consumed helpers
        self.layers = []

    def fail(self, node, why):
        raise ExportError(f"node '{node.name}' ({node.op} {_target_name(node.target)}): {why}")

    def run(self):
        for node in self.gm.graph.nodes:
            getattr(self, "_" + node.op, self._other)(node)
        self._check_helpers()
        return self.layers

    def _placeholder(self, node):
        if self.current is not None:
            self.fail(node, "forward must take exactly one tensor argument")
        self._advance(node)

    def _output(self, node):
        if node.args[0] is not self.current:
            self.fail(node, "forward must return the output of the last layer (a single tensor)")

    def _call_module(self, node):
        self._takes_current(node)
        if len(node.args) != 1 or node.kwargs:
            self.fail(node, "a module must be called with the previous tensor only")
        layer = _module_layer(self.modules[node.target], node.target, node)
        self._add(node, layer)

    def _call_function(self, node):
        if self._helper(node):
            return
        self._takes_current(node)
        if node.target is torch.reshape:
            self._reshape(node, node.args[1:], node.kwargs.get("shape"))
        elif node.target in _FUNCTIONS:
            self._functional(node, _FUNCTIONS[node.target])
        else:
            self.fail(node, f"function {_target_name(node.target)} is not supported. "
                            f"{SUPPORTED_HELP}")

    def _call_method(self, node):
        if self._helper(node):
            return
        self._takes_current(node)
        if node.target in _NO_OPS:
            self._advance(node)
        elif node.target in _RESHAPES:
            self._reshape(node, node.args[1:], node.kwargs.get("shape") or node.kwargs.get("size"))
        elif node.target in _METHODS:
            self._functional(node, _METHODS[node.target])
        else:
            self.fail(node, f"tensor method .{node.target}() is not supported. {SUPPORTED_HELP}")

    def _other(self, node):  # get_attr and anything newer
        self.fail(node, f"'{node.op}' nodes (a parameter used directly in forward) are not "
                        f"supported. {SUPPORTED_HELP}")

    # --- helpers --------------------------------------------------------------------------------

    def _advance(self, node):
        self.current = node
        self.tensors.append(node)

    def _takes_current(self, node):
        if not node.args or node.args[0] is not self.current:
            self.fail(node, "the graph is not a simple chain: this step does not take the previous "
                            f"step's output '{self.current.name}' as its input. {SUPPORTED_HELP}")
        users = [u for u in self.current.users if not _is_shape_query(u)]
        if len(users) > 1:
            names = ", ".join(sorted(u.name for u in users))
            self.fail(node, f"the output of '{self.current.name}' feeds several nodes ({names}); "
                            "residual connections and branches are not supported. "
                            f"{SUPPORTED_HELP}")
        for arg in list(node.args[1:]) + list(node.kwargs.values()):
            for inner in _flat(arg):
                if isinstance(inner, torch.fx.Node) and inner not in self.batch:
                    self.fail(node, f"takes a second computed input '{inner.name}'. "
                                    f"{SUPPORTED_HELP}")

    def _helper(self, node):
        """Recognises x.size(), x.size(0), x.shape and size[0]; returns True for those nodes."""
        args = node.args
        is_tensor = bool(args) and args[0] in self.tensors
        if node.op == "call_method" and node.target == "size" and is_tensor:
            dim = args[1] if len(args) > 1 else node.kwargs.get("dim")
            if dim is None:
                self.helpers.add(node)
                return True
            if dim == 0:
                self.helpers.add(node)
                self.batch.add(node)
                return True
            self.fail(node, "only x.size(0) (the batch size) may be used to reshape")
        if node.op == "call_function" and node.target is getattr and is_tensor \
                and args[1] == "shape":
            self.helpers.add(node)
            return True
        if node.op == "call_function" and node.target is operator.getitem \
                and args[0] in self.helpers:
            if args[1] != 0:
                self.fail(node, "only x.shape[0] / x.size(0) (the batch size) may be used to "
                                "reshape")
            self.helpers.add(node)
            self.batch.add(node)
            return True
        return False

    def _check_helpers(self):
        for h in self.helpers:
            for u in h.users:
                if u not in self.helpers and u not in self.reshapes:
                    self.fail(u, f"uses the shape value '{h.name}' outside a flattening "
                                 f"view/reshape. {SUPPORTED_HELP}")

    def _functional(self, node, spec):
        params, factory = spec
        try:
            module = factory(**_bind(params, node.args[1:], node.kwargs))
        except ExportError as e:
            self.fail(node, str(e))
        except TypeError as e:
            self.fail(node, f"unsupported arguments: {e}")
        self._add(node, _module_layer(module, "", node))

    def _reshape(self, node, dims, dims_kw):
        if dims_kw is not None:
            dims = dims_kw
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = dims[0]
        dims = list(dims)
        in_shape, out_shape = _shape(self.current), _shape(node)
        flat = in_shape and [in_shape[0], math.prod(in_shape[1:])]
        ok = (len(dims) == 2 and (dims[0] in self.batch or dims[0] == -1)
              and (dims[1] == -1 or isinstance(dims[1], int)) and out_shape == flat)
        if not ok:
            shown = ", ".join("x.size(0)" if d in self.batch else repr(d) for d in dims)
            self.fail(node, f"{node.target}({shown}) is not supported: only flattening reshapes, "
                            "x.view(x.size(0), -1) or x.view(-1, C*H*W), are")
        self.reshapes.add(node)
        self._add(node, _module_layer(nn.Flatten(), "", node))

    def _add(self, node, layer):
        layer.shape = _shape(node)
        if layer.shape is None:
            self.fail(node, "does not produce a tensor")
        if len(layer.shape) not in (2, 4):
            self.fail(node, f"outputs a rank-{len(layer.shape)} tensor {layer.shape}; the engine "
                            "runs [N, C, H, W] and [N, F] tensors only")
        channel_dims = (1, 1 - len(layer.shape))
        if layer.op in ("Softmax", "LogSoftmax") and layer.fields["dim"] not in channel_dims:
            self.fail(node, f"{layer.op}(dim={layer.fields['dim']}) on a rank-{len(layer.shape)} "
                            "tensor is not supported; only the channel/feature dim 1 is")
        self.layers.append(layer)
        self._advance(node)


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


def trace_layers(module, input_shape):
    """Traces `module` (put in eval mode) and returns (layers, sample input) in execution order."""
    input_shape = _check_input_shape(input_shape)
    module.eval()
    gm = _trace(module)
    sample = _propagate(gm, input_shape)
    layers = _Chain(gm).run()
    if not layers:
        raise ExportError(f"the module has no layers. {SUPPORTED_HELP}")
    return layers, sample


def _check_input_shape(shape):
    dims = [-1 if d is None else int(d) for d in shape]
    if len(dims) not in (1, 3) or dims[0] <= 0 or any(d == 0 or d < -1 for d in dims):
        raise ExportError(f"input shape must be [C, H, W] (H and W may be -1 for any size) or [F], "
                          f"got {list(shape)}")
    return dims


# -----------------------------------------------------------------------------------------------
# Writing and reading back

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


def _tuples(value):
    return tuple(value) if isinstance(value, list) else value


def build_layer(entry):
    """The nn.Module for one model.json layer entry (its fields are the constructor's kwargs)."""
    cls = getattr(nn, entry["op"], None)
    if cls not in _MODULES:
        raise ExportError(f"unknown op {entry['op']!r}")
    kwargs = {k: _tuples(v) for k, v in entry.items() if k not in ("op", "name")}
    return cls(**kwargs)


def load_model(folder):
    """Rebuilds a model folder as an nn.Sequential in eval mode: the inverse of export().

    Layers with tensors take them from the weights file (every tensor must be used); without a
    weights file they keep PyTorch's default initialisation.
    """
    with open(os.path.join(folder, MODEL_JSON)) as f:
        doc = json.load(f)
    tensors = {}
    if doc.get("weights"):
        tensors, _ = safetensors_io.load(os.path.join(folder, doc["weights"]))
    used = set()
    modules = []
    for i, entry in enumerate(doc["layers"]):
        module = build_layer(entry)
        if tensors and isinstance(module, _WITH_TENSORS):
            state = {}
            for key in module.state_dict():
                full = f"{entry['name']}.{key}"
                if full in tensors:
                    state[key] = torch.from_numpy(tensors[full])
                    used.add(full)
                elif key != "num_batches_tracked":
                    raise ExportError(f"layer {i} {entry['op']} '{entry['name']}': tensor '{full}' "
                                      "missing from the weights file")
            module.load_state_dict(state, strict=False)
        modules.append(module)
    left = sorted(set(tensors) - used)
    if left:
        raise ExportError(f"tensors not used by any layer: {', '.join(left)}")
    return nn.Sequential(*modules).eval()


def _verify(module, folder, sample, weights):
    """Reads the folder back and checks it computes what the module computes."""
    reloaded = load_model(folder)
    with torch.no_grad():
        want = module(sample)
        got = reloaded(sample)
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


def main(argv=None):
    p = argparse.ArgumentParser(description="Export a PyTorch nn.Module to a convserve model "
                                            "folder.")
    p.add_argument("--module", required=True,
                   help="pkg.mod:factory or file.py:factory; the factory (a function or class) "
                        "returns the nn.Module")
    p.add_argument("--name", required=True, help="model name (the folder name under config/models)")
    p.add_argument("--input-shape", required=True, type=_parse_shape,
                   help="one sample's shape, e.g. 3,28,28 or 3,-1,-1 for any H and W")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--state-dict", help="load these trained weights (torch.save of a state_dict)")
    p.add_argument("--seed", type=int, default=0, help="torch seed before calling the factory (0)")
    p.add_argument("--no-weights", action="store_true",
                   help="write no weights file: the engine initialises random weights")
    p.add_argument("--labels", help="comma-separated class labels, or @file with one per line")
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--precision", choices=("f32", "bf16"))
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    module = _import_factory(args.module)()
    if args.state_dict:
        module.load_state_dict(torch.load(args.state_dict, map_location="cpu"))
    labels = None
    if args.labels:
        if args.labels.startswith("@"):
            with open(args.labels[1:]) as f:
                labels = [line.strip() for line in f if line.strip()]
        else:
            labels = args.labels.split(",")
    try:
        result = export(module, args.out, args.name, args.input_shape, labels=labels,
                        max_batch_size=args.max_batch_size, precision=args.precision,
                        weights=not args.no_weights)
    except ExportError as e:
        print(f"export_model: {e}", file=sys.stderr)
        return 1
    sample = _sample_shapes(_check_input_shape(args.input_shape))[0]
    print(f"layer output shapes for an input [N, {', '.join(map(str, sample[1:]))}]:")
    for layer in result.layers:
        shape = ", ".join(["N"] + [str(d) for d in layer.shape[1:]])
        print(f"  {layer.op:<18} {layer.name or '-':<12} [{shape}]")
    if result.unused:
        print(f"note: not exported (no layer uses them): {', '.join(result.unused)}",
              file=sys.stderr)
    what = f"{len(result.tensors)} tensors" if not args.no_weights else "no weights (random init)"
    print(f"wrote {args.out}/{MODEL_JSON} ({len(result.layers)} layers, {what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
