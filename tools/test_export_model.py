"""Unit tests of the exporter, its graph reader and the safetensors reader/writer (no C engine
needed): chains, every graph op in module and functional form, where "inputs" and "id" are written,
the refusals with their messages, the reader's checks of malformed graphs, and round trips.

    /usr/bin/python3 tools/test_export_model.py        # exits 77 (skip) when torch is missing
"""

import json
import os
import sys
import tempfile
import unittest

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision
except ImportError:
    print("torch or torchvision is not importable by this interpreter: run with /usr/bin/python3 "
          "(apt-get install python3-torch python3-torchvision); skipping")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from export_model import (ExportError, export, format_model_json, load_model,  # noqa: E402
                          resolve_inputs)
from notebook_models import CNNBN, CNNBasic  # noqa: E402


class Functional(nn.Module):
    """Every functional form the exporter maps, in one chain."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding="same")
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 6)
        self.fc2 = nn.Linear(6, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = F.max_pool2d(x, 2, padding=1, ceil_mode=True)
        x = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        x = F.adaptive_avg_pool2d(x, 4)
        x = torch.sigmoid(F.leaky_relu(x, 0.2))
        x = F.dropout2d(x, 0.3, training=self.training)
        x = torch.softmax(x, 1).contiguous()
        x = x.view(x.size(0), -1)
        x = x.reshape(x.shape[0], -1)
        x = torch.flatten(x, 1)
        x = self.fc(x).tanh()
        x = F.gelu(x, approximate="tanh")
        x = F.log_softmax(self.fc2(x), dim=-1)
        return x.relu()


class ExportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        torch.manual_seed(0)

    def tearDown(self):
        self.tmp.cleanup()

    def doc(self):
        with open(os.path.join(self.dir, "model.json")) as f:
            return json.load(f)

    def test_cnn_basic_forward_order(self):
        export(CNNBasic(widths=(4, 8, 16), image=10), self.dir, "cnn_basic", [3, 10, 10])
        layers = [(entry["op"], entry.get("name")) for entry in self.doc()["layers"]]
        self.assertEqual(layers, [("Conv2d", "conv_1"), ("ReLU", "act"), ("Conv2d", "conv_2"),
                                  ("Flatten", "flatten"), ("Linear", "layer_1"), ("ReLU", "act"),
                                  ("Linear", "layer_2")])

    def test_cnn_bn_tensors_and_fields(self):
        result = export(CNNBN(widths=(4, 8, 16), image=10), self.dir, "cnn_bn", [3, 10, 10],
                        labels=list("abcdefghij"), max_batch_size=8, precision="bf16",
                        extra={"dynamic_batching": {"max_queue_delay_us": 100}})
        doc = self.doc()
        self.assertEqual(doc["output"]["labels"], list("abcdefghij"))
        self.assertEqual(doc["precision"], "bf16")
        self.assertEqual(doc["layers"][0]["bias"], False)
        self.assertEqual(doc["layers"][9], {"op": "Dropout", "name": "fc.2", "p": 0.5})
        tensors, meta = safetensors_io.load(os.path.join(self.dir, "model.safetensors"))
        self.assertEqual(sorted(tensors), result.tensors)
        self.assertIn("conv.1.running_var", tensors)
        self.assertNotIn("conv.1.num_batches_tracked", tensors)
        self.assertEqual(tensors["fc.0.weight"].shape, (16, 8 * 6 * 6))
        self.assertEqual(meta, {"format": "pt"})

    def test_functional_forms(self):
        export(Functional(), self.dir, "f", [3, 8, 8])  # export() verifies the outputs itself
        ops = [entry["op"] for entry in self.doc()["layers"]]
        self.assertEqual(ops, ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "AvgPool2d",
                               "AdaptiveAvgPool2d", "LeakyReLU", "Sigmoid", "Dropout2d", "Softmax",
                               "Flatten", "Flatten", "Flatten", "Linear", "Tanh", "GELU",
                               "Linear", "LogSoftmax", "ReLU"])
        self.assertEqual(self.doc()["layers"][0]["padding"], "same")

    def test_free_input_size(self):
        export(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), self.dir, "s", [3, -1, -1])
        self.assertEqual(self.doc()["input"]["shape"], [3, -1, -1])

    def test_no_weights(self):
        open(os.path.join(self.dir, "model.safetensors"), "wb").close()
        export(nn.Sequential(nn.Flatten(), nn.Linear(9, 2)), self.dir, "n", [1, 3, 3],
               weights=False)
        self.assertNotIn("weights", self.doc())
        self.assertFalse(os.path.exists(os.path.join(self.dir, "model.safetensors")))

    def test_rank1_input(self):
        export(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)), self.dir, "m", [5])
        self.assertEqual(load_model(self.dir)(torch.zeros(3, 5)).shape, (3, 2))

    def assertFails(self, module, shape, *fragments):
        with self.assertRaises(ExportError) as cm:
            export(module, self.dir, "x", shape)
        for fragment in fragments:
            self.assertIn(fragment, str(cm.exception))

    def test_errors(self):
        self.assertFails(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")),
                         [3, 8, 8], "padding_mode='reflect'")
        self.assertFails(nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False)), [3, 8, 8],
                         "running statistics")
        self.assertFails(nn.Sequential(nn.Conv2d(3, 3, 3), nn.ELU()), [3, 8, 8], "ELU")
        self.assertFails(nn.Sequential(nn.Flatten(2)), [3, 8, 8], "rank-3")
        self.assertFails(nn.Sequential(nn.Softmax(dim=2)), [3, 8, 8], "dim=2")
        self.assertFails(nn.Sequential(nn.Flatten(), nn.Linear(5, 2)), [1, 3, 3], "does not run")
        self.assertFails(nn.Sequential(nn.Conv2d(3, 3, 3)), [3, 0, 8], "input shape")

    def test_format_is_stable(self):
        doc = {"name": "m", "layers": [{"op": "ReLU"}, {"op": "Identity"}]}
        self.assertEqual(format_model_json(doc),
                         '{\n  "name": "m",\n  "layers": [\n    {"op": "ReLU"},\n'
                         '    {"op": "Identity"}\n  ]\n}\n')


# --- graphs --------------------------------------------------------------------------------------

def conv(cin, cout, k=3, **kw):
    return nn.Conv2d(cin, cout, k, padding=k // 2, **kw)


class Block(nn.Module):
    """A ResNet basic block: conv-bn-relu-conv-bn, += shortcut (1x1 projection when proj), relu."""

    def __init__(self, cin=4, cout=4, stride=1, proj=False):
        super().__init__()
        self.conv1 = conv(cin, cout, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(cout, cout, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                  nn.BatchNorm2d(cout)) if proj else None

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Sums(nn.Module):
    """x + y, torch.add and x.add: a sum of sums read once becomes one Add."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = conv(3, 4), conv(3, 4), conv(3, 4)

    def forward(self, x):
        a, b, c = self.a(x), self.b(x), self.c(x)
        return torch.add(a + b + c, a).add(b)


class SharedSum(nn.Module):
    """a + b is read twice, so it stays a layer of its own."""

    def __init__(self):
        super().__init__()
        self.a, self.b = conv(3, 4), conv(3, 4)

    def forward(self, x):
        s = self.a(x) + self.b(x)
        return s + F.relu(s)


class SE(nn.Module):
    """Squeeze-excitation: pool or mean, conv, act, conv, gate, then the product with x."""

    def __init__(self, act, gate, functional):
        super().__init__()
        self.conv = conv(3, 8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.act, self.gate, self.functional = act, gate, functional

    def forward(self, x):
        x = self.conv(x)
        s = x.mean((2, 3), keepdim=True) if self.functional else self.pool(x)
        s = self.gate(self.fc2(self.act(self.fc1(s))))
        return s * x if self.functional else torch.mul(x, s)


class LinearSE(nn.Module):
    """Squeeze-excitation through Mean without keepdim and Linear layers, on [N, C] features."""

    def __init__(self):
        super().__init__()
        self.conv = conv(3, 8)
        self.fc1, self.fc2 = nn.Linear(8, 4), nn.Linear(4, 8)

    def forward(self, x):
        f = torch.mean(self.conv(x), dim=[-1, -2])
        return f * F.hardsigmoid(self.fc2(F.silu(self.fc1(f))))


class Inception(nn.Module):
    """Branches from one tensor joined by torch.cat of a tuple along dim -3, the input too."""

    def __init__(self):
        super().__init__()
        self.b1 = conv(3, 4, 1)
        self.b3 = nn.Sequential(conv(3, 2, 1), nn.ReLU6(), conv(2, 4, 3))
        self.pool = nn.MaxPool2d(3, 1, 1)

    def forward(self, x):
        return torch.cat((self.b1(x), self.b3(x), self.pool(x), x), dim=-3)


class Dense(nn.Module):
    """DenseNet-like growing concatenations of a list, then a non-dividing adaptive pool."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.BatchNorm2d(3 + 2 * i), nn.ReLU(),
                                                   conv(3 + 2 * i, 2)) for i in range(3)])

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return F.adaptive_avg_pool2d(torch.cat(features, 1), (3, 5))


class Activations(nn.Module):
    """The new activations as modules and functions, and StochasticDepth both ways."""

    def __init__(self):
        super().__init__()
        self.conv = conv(3, 4)
        self.mods = nn.Sequential(nn.ReLU6(inplace=True), nn.Hardswish(), nn.Hardsigmoid(),
                                  nn.SiLU())
        self.sd = torchvision.ops.StochasticDepth(0.3, "batch")

    def forward(self, x):
        x = self.mods(self.conv(x))
        x = F.silu(F.hardsigmoid(F.hardswish(F.relu6(x), inplace=True)))
        x = self.sd(x)
        return torchvision.ops.stochastic_depth(x, 0.2, "row", self.training)


class Heads(nn.Module):
    """Mean without keepdim added to flatten(1) of a pooled branch, then Linear."""

    def __init__(self):
        super().__init__()
        self.conv = conv(3, 6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.conv(x)
        return self.fc(x.mean([2, 3]) + self.pool(x).flatten(1))


class Fn(nn.Module):
    """A one-off graph for a test: forward is fn(self, x), with the given submodules."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for name, m in modules.items():
            self.add_module(name, m)

    def forward(self, x):
        return self.fn(self, x)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = conv(3, 3)

    def forward(self, x, y):
        return self.conv(x) + y


class ReturnsTuple(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = conv(3, 3), conv(3, 3)

    def forward(self, x):
        return self.a(x), self.b(x)


class GraphExportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        torch.manual_seed(0)

    def tearDown(self):
        self.tmp.cleanup()

    def layers(self):
        with open(os.path.join(self.dir, "model.json")) as f:
            return json.load(f)["layers"]

    def graph(self):
        """(op, key, inputs) per layer: key is the id, else the name, else None."""
        return [(e["op"], e.get("id") or e.get("name"), e.get("inputs")) for e in self.layers()]

    def roundtrip(self, module, shape, *inputs):
        """Exports module with random BatchNorm statistics, then checks load_model against the
        module on each input shape (batch first)."""
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for m in module.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.5, generator=gen)
                    m.running_var.uniform_(0.5, 2, generator=gen)
        result = export(module, self.dir, "m", shape)
        reloaded = load_model(self.dir)
        for s in inputs:
            x = torch.randn(s, generator=gen) * 3
            with torch.no_grad():
                want, got = module.eval()(x.clone()), reloaded(x.clone())
            self.assertEqual(got.shape, want.shape)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        return result

    def test_chain_has_no_graph_fields(self):
        self.roundtrip(nn.Sequential(conv(3, 4), nn.ReLU(), conv(4, 4)), [3, -1, -1],
                       [2, 3, 9, 7])
        for entry in self.layers():
            self.assertNotIn("inputs", entry)
            self.assertNotIn("id", entry)

    def test_residual_block_identity(self):
        self.roundtrip(Block(), [4, 6, 6], [1, 4, 6, 6], [3, 4, 6, 6])
        self.assertEqual(self.graph(), [
            ("Conv2d", "conv1", None), ("BatchNorm2d", "bn1", None), ("ReLU", "relu", None),
            ("Conv2d", "conv2", None), ("BatchNorm2d", "bn2", None),
            ("Add", None, ["bn2", "input"]), ("ReLU", "relu", None)])
        self.assertEqual(self.layers()[5], {"op": "Add", "inputs": ["bn2", "input"]})

    def test_residual_block_projection(self):
        self.roundtrip(Block(4, 6, stride=2, proj=True), [4, -1, -1], [2, 4, 8, 8],
                       [1, 4, 7, 9])
        self.assertEqual(self.graph(), [
            ("Conv2d", "down.0", None), ("BatchNorm2d", "down.1", None),
            ("Conv2d", "conv1", ["input"]), ("BatchNorm2d", "bn1", None), ("ReLU", "relu", None),
            ("Conv2d", "conv2", None), ("BatchNorm2d", "bn2", None),
            ("Add", None, ["bn2", "down.1"]), ("ReLU", "relu", None)])

    def test_sum_spellings_merge_into_one_add(self):
        self.roundtrip(Sums(), [3, 5, 5], [2, 3, 5, 5])
        self.assertEqual(self.graph(), [
            ("Conv2d", "a", None), ("Conv2d", "b", ["input"]), ("Conv2d", "c", ["input"]),
            ("Add", None, ["a", "b", "c", "a", "b"])])

    def test_sum_read_twice_stays_a_layer(self):
        self.roundtrip(SharedSum(), [3, 5, 5], [2, 3, 5, 5])
        self.assertEqual(self.graph(), [
            ("Conv2d", "a", None), ("Conv2d", "b", ["input"]), ("Add", "add", ["a", "b"]),
            ("ReLU", "relu", None), ("Add", None, ["add", "relu"])])
        self.assertEqual(self.layers()[3], {"op": "ReLU", "id": "relu"})

    def test_squeeze_excitation_modules(self):
        self.roundtrip(SE(nn.ReLU(), nn.Sigmoid(), False), [3, -1, -1], [2, 3, 6, 6],
                       [3, 3, 5, 9])
        self.assertEqual(self.graph(), [
            ("Conv2d", "conv", None), ("AdaptiveAvgPool2d", "pool", None),
            ("Conv2d", "fc1", None), ("ReLU", "act", None), ("Conv2d", "fc2", None),
            ("Sigmoid", "gate", None), ("Mul", None, ["conv", "gate"])])

    def test_squeeze_excitation_mean(self):
        self.roundtrip(SE(nn.SiLU(), nn.Hardsigmoid(), True), [3, -1, -1], [2, 3, 6, 6],
                       [3, 3, 5, 9])
        self.assertEqual(self.graph(), [
            ("Conv2d", "conv", None), ("Mean", None, None),
            ("Conv2d", "fc1", None), ("SiLU", "act", None), ("Conv2d", "fc2", None),
            ("Hardsigmoid", "gate", None), ("Mul", None, ["gate", "conv"])])
        self.assertEqual(self.layers()[1], {"op": "Mean", "dim": [2, 3], "keepdim": True})

    def test_linear_squeeze_excitation(self):
        self.roundtrip(LinearSE(), [3, 6, 6], [2, 3, 6, 6])
        self.assertEqual(self.graph(), [
            ("Conv2d", "conv", None), ("Mean", "mean", None), ("Linear", "fc1", None),
            ("SiLU", None, None), ("Linear", "fc2", None), ("Hardsigmoid", "hardsigmoid", None),
            ("Mul", None, ["mean", "hardsigmoid"])])
        self.assertEqual(self.layers()[1], {"op": "Mean", "id": "mean", "dim": [-1, -2],
                                            "keepdim": False})

    def test_inception_branches(self):
        self.roundtrip(Inception(), [3, -1, -1], [2, 3, 7, 5])
        self.assertEqual(self.graph(), [
            ("Conv2d", "b1", None), ("Conv2d", "b3.0", ["input"]), ("ReLU6", "b3.1", None),
            ("Conv2d", "b3.2", None), ("MaxPool2d", "pool", ["input"]),
            ("Cat", None, ["b1", "b3.2", "pool", "input"])])
        self.assertEqual(self.layers()[-1]["dim"], -3)

    def test_dense_growing_cats(self):
        self.roundtrip(Dense(), [3, -1, -1], [2, 3, 8, 8], [1, 3, 7, 11])
        cats = [(e.get("inputs"), e["dim"]) for e in self.layers() if e["op"] == "Cat"]
        self.assertEqual(cats, [(None, 1), (["input", "layers.0.2"], 1),
                                (["input", "layers.0.2", "layers.1.2"], 1),
                                (["input", "layers.0.2", "layers.1.2", "layers.2.2"], 1)])
        self.assertEqual(self.layers()[-1], {"op": "AdaptiveAvgPool2d", "output_size": [3, 5]})

    def test_activations_and_stochastic_depth(self):
        self.roundtrip(Activations(), [3, -1, -1], [2, 3, 5, 5])
        self.assertEqual(self.layers()[1:], [
            {"op": "ReLU6", "name": "mods.0"}, {"op": "Hardswish", "name": "mods.1"},
            {"op": "Hardsigmoid", "name": "mods.2"}, {"op": "SiLU", "name": "mods.3"},
            {"op": "ReLU6"}, {"op": "Hardswish"}, {"op": "Hardsigmoid"}, {"op": "SiLU"},
            {"op": "StochasticDepth", "name": "sd", "p": 0.3, "mode": "batch"}])
        # torchvision.ops.stochastic_depth called from user code is not an fx node: in eval it
        # returns its input while tracing, so it leaves no layer (the identity, as it should).

    def test_activation_values(self):
        """Inputs across every kink: ReLU6 clips at 0 and 6, Hardswish and Hardsigmoid bend at
        -3 and 3."""
        self.roundtrip(nn.Sequential(nn.Flatten(), nn.ReLU6(), nn.Hardswish(), nn.Hardsigmoid(),
                                     nn.SiLU()), [7], [64, 7])

    def test_heads(self):
        self.roundtrip(Heads(), [3, -1, -1], [2, 3, 6, 6], [1, 3, 5, 8])
        self.assertEqual(self.graph(), [
            ("Conv2d", "conv", None), ("Mean", "mean", None),
            ("AdaptiveAvgPool2d", "pool", ["conv"]), ("Flatten", "flatten", None),
            ("Add", None, ["mean", "flatten"]), ("Linear", "fc", None)])

    def test_shared_module_gets_ids(self):
        def fwd(m, x):
            a = m.act(m.c1(x))
            return torch.cat([a, m.act(m.c2(a))], 1)
        self.roundtrip(Fn(fwd, c1=conv(3, 4), c2=conv(4, 4), act=nn.ReLU()), [3, 6, 6],
                       [2, 3, 6, 6])
        # Both ReLUs are named "act": references need ids, which differ from every name and
        # from the other node's natural id.
        self.assertEqual(self.graph(), [
            ("Conv2d", "c1", None), ("ReLU", "act_2", None), ("Conv2d", "c2", None),
            ("ReLU", "act_1", None), ("Cat", None, ["act_2", "act_1"])])
        self.assertEqual(self.layers()[1], {"op": "ReLU", "id": "act_2", "name": "act"})

    def test_layer_named_input_gets_an_id(self):
        def fwd(m, x):
            return getattr(m, "input")(x) + m.other(x)
        self.roundtrip(Fn(fwd, input=conv(3, 3), other=conv(3, 3)), [3, 5, 5], [2, 3, 5, 5])
        self.assertEqual(self.graph(), [("Conv2d", "input_1", None), ("Conv2d", "other", ["input"]),
                                        ("Add", None, ["input_1", "other"])])

    def test_dead_code_is_dropped(self):
        def fwd(m, x):
            m.a(x)  # computed and thrown away
            probe = m.p(x)  # only its batch size is read
            return m.b(x).view(probe.size(0), -1)
        result = self.roundtrip(Fn(fwd, a=conv(3, 3), p=conv(3, 3), b=conv(3, 2)), [3, 4, 4],
                                [2, 3, 4, 4])
        self.assertEqual(self.graph(), [("Conv2d", "b", None), ("Flatten", None, None)])
        self.assertEqual(result.unused, ["a.bias", "a.weight", "p.bias", "p.weight"])

    def test_torchscript(self):
        """torch.jit.script compiles load_model's graphs (as a straight-line fx GraphModule), so
        benchmarks can freeze them."""
        for module in (Block(4, 6, stride=2, proj=True), Sums(), Inception(), Dense(),
                       SE(nn.SiLU(), nn.Hardsigmoid(), True), LinearSE(), Activations()):
            with self.subTest(module=type(module).__name__):
                cin = 4 if isinstance(module, Block) else 3
                export(module, self.dir, "m", [cin, -1, -1])
                reloaded = load_model(self.dir)
                scripted = torch.jit.freeze(torch.jit.script(reloaded))
                x = torch.randn(2, cin, 7, 9)
                with torch.no_grad():
                    torch.testing.assert_close(scripted(x), module.eval()(x), rtol=0, atol=1e-5)

    def test_command_line(self):
        """The README's one-command export, with a factory's kwargs, ImageNet labels and
        preprocess; and a refusal, which exits 1 with the reason."""
        import contextlib
        import io

        import export_model

        out = os.path.join(self.dir, "m")
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            rc = export_model.main(["--module", "torchvision.models:squeezenet1_1", "--kwargs",
                                    '{"num_classes": 1000}', "--name", "sq", "--input-shape",
                                    "3,64,64", "--out", out, "--preprocess", "imagenet",
                                    "--labels", "imagenet"])
        self.assertEqual(rc, 0)
        self.assertIn("Cat", stdout.getvalue())
        with open(os.path.join(out, "model.json")) as f:
            doc = json.load(f)
        self.assertEqual(doc["preprocess"], {"color": "rgb", "resize": [64, 64],
                                             "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                                             "std": [0.229, 0.224, 0.225], "invert": False})
        self.assertEqual(len(doc["output"]["labels"]), 1000)
        self.assertEqual(doc["output"]["labels"][:2], ["tench", "goldfish"])
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            rc = export_model.main(["--module", "torchvision.models:convnext_tiny", "--name", "c",
                                    "--input-shape", "3,64,64", "--out", out])
        self.assertEqual(rc, 1)
        self.assertIn("export_model: node 'permute' (call_method permute): tensor method "
                      ".permute() is not supported", stderr.getvalue())

    def test_torchvision_mobilenet_v3_small(self):
        net = torchvision.models.mobilenet_v3_small(num_classes=7)
        self.roundtrip(net, [3, -1, -1], [2, 3, 32, 32], [1, 3, 40, 24])
        ops = {e["op"] for e in self.layers()}
        self.assertLessEqual({"Hardswish", "Hardsigmoid", "Mul", "Add"}, ops)

    def assertRefused(self, module, shape, *fragments):
        with self.assertRaises(ExportError) as cm:
            export(module, self.dir, "x", shape)
        for fragment in fragments:
            self.assertIn(fragment, str(cm.exception))
        return str(cm.exception)

    def test_refused_graph_ops(self):
        c = dict(a=conv(3, 4), b=conv(3, 4))
        cases = [
            (lambda m, x: torch.add(m.a(x), m.b(x), alpha=2),
             "node 'add' (call_function torch.add): Add with alpha=2 is not supported"),
            (lambda m, x: m.a(x) + 1, "Add of a tensor and a constant (x + 1) is not supported"),
            (lambda m, x: m.a(x) * 0.5, "node 'mul' (call_function _operator.mul): Mul of a "
                                        "tensor and a constant (x * 0.5) is not supported"),
            (lambda m, x: m.a(x) + F.adaptive_avg_pool2d(m.b(x), 1),
             "Add needs inputs of one shape (no broadcasting), got [2, 4, 5, 5], [2, 4, 1, 1]"),
            (lambda m, x: m.a(x) * m.b(x)[:, :1],
             "node 'getitem' (call_function _operator.getitem): function _operator.getitem is "
             "not supported"),
            (lambda m, x: m.a(x) * F.adaptive_avg_pool2d(m.b(x), (1, 5)),
             "Mul needs inputs of one shape or [N,C,H,W] and [N,C,1,1], got [2, 4, 5, 5], "
             "[2, 4, 1, 5]"),
            (lambda m, x: torch.cat([m.a(x), m.b(x)]),
             "Cat(dim=0) on rank-4 tensors is not supported; only the channel dim (1 or -3) is"),
            (lambda m, x: torch.cat([m.a(x), m.b(x)], 2), "Cat(dim=2)"),
            (lambda m, x: m.a(x).mean(), "a mean over every dim is not supported"),
            (lambda m, x: m.a(x).mean(1, keepdim=True), "Mean(dim=1) is not supported"),
            (lambda m, x: m.a(x).mean((1, 2)), "Mean(dim=[1, 2]) is not supported"),
            (lambda m, x: torch.mean(torch.flatten(m.a(x), 1), 1),
             "node 'mean' (call_function torch.mean): Mean takes one rank-4 tensor, got [2, 100]"),
            (lambda m, x: m.a(x).view(2, 2, 2, 5, 5).transpose(1, 2).reshape(2, 4, 5, 5),
             "view(2, 2, 2, 5, 5) is not supported: only flattening reshapes"),
            (lambda m, x: m.a(x).permute(0, 2, 3, 1), "tensor method .permute() is not supported"),
        ]
        for fwd, message in cases:
            with self.subTest(message=message):
                self.assertRefused(Fn(fwd, **c), [3, 5, 5], message)

    def test_refused_modules_and_forms(self):
        self.assertRefused(nn.Sequential(conv(3, 4), nn.LayerNorm([4, 5, 5])), [3, 5, 5],
                           "node '_1' (LayerNorm '1'): LayerNorm is not supported")

        def scaled(m, x):
            return m.a(x) * m.scale
        fn = Fn(scaled, a=conv(3, 4))
        fn.scale = nn.Parameter(torch.ones(1, 4, 1, 1))
        self.assertRefused(fn, [3, 5, 5], "'get_attr' nodes (a parameter or buffer used "
                                          "directly in forward, not through a module)")
        self.assertRefused(TwoInputs(), [3, 5, 5], "node 'y' (placeholder y): forward must take "
                                                  "exactly one tensor argument")
        self.assertRefused(ReturnsTuple(), [3, 5, 5], "forward must return a single tensor")
        self.assertRefused(Fn(lambda m, x: x), [3, 5, 5], "forward returns its input unchanged")

    def test_refused_in_place_changes(self):
        def reread(m, x):
            y = m.a(x)
            z = F.relu(y, inplace=True)
            return y + z  # eager: y is z (both ReLU'd); fx would add y before the ReLU
        self.assertRefused(Fn(reread, a=conv(3, 4)), [3, 5, 5],
                           "node 'relu' (call_function torch.nn.functional.relu): modifies 'a' "
                           "in place, and 'add' reads 'a' afterwards")

        def through_view(m, x):
            y = m.a(x)
            w = y.view(y.size(0), -1).relu_()  # changes y too
            return m.fc(y.flatten(1) + w)
        self.assertRefused(Fn(through_view, a=conv(3, 2), fc=nn.Linear(50, 3)), [3, 5, 5],
                           "node 'relu_' (call_method relu_): modifies 'view' in place, and "
                           "'flatten' reads 'a' afterwards")

        def training_drop(m, x):
            return torchvision.ops.stochastic_depth(m.a(x), 0.2, "row", True)
        self.assertRefused(Fn(training_drop, a=conv(3, 3)), [3, 5, 5],
                           "torch.fx could not trace Fn.forward", "in stochastic_depth")

        def dropped(m, x):
            y = m.a(x)
            y.relu_()
            return m.b(y)
        self.assertRefused(Fn(dropped, a=conv(3, 3), b=conv(3, 3)), [3, 5, 5],
                           "the result of this in-place operation is never used")

    def test_refused_torchvision_networks(self):
        self.assertRefused(torchvision.models.shufflenet_v2_x0_5(), [3, 64, 64],
                           "torch.fx could not trace ShuffleNetV2.forward: Proxy object cannot be "
                           "iterated", "in channel_shuffle")
        self.assertRefused(torchvision.models.convnext_tiny(), [3, 64, 64],
                           "(call_method permute): tensor method .permute() is not supported")


class GraphReaderTest(unittest.TestCase):
    """load_model's checks of hand-written graphs, as the engine makes them."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, layers, shape=(3, 6, 6)):
        doc = {"name": "g", "input": {"name": "input", "shape": list(shape)}, "layers": layers}
        with open(os.path.join(self.dir, "model.json"), "w") as f:
            f.write(format_model_json(doc))

    def refused(self, layers, message):
        self.write(layers)
        with self.assertRaises(ExportError) as cm:
            load_model(self.dir)
        self.assertEqual(str(cm.exception), message)

    C = {"op": "Conv2d", "in_channels": 3, "out_channels": 3, "kernel_size": 3, "padding": 1}

    def conv(self, name, **extra):
        return dict(self.C, name=name, **extra)

    def test_valid_graph_runs_like_torch(self):
        torch.manual_seed(0)
        self.write([self.conv("a"), {"op": "ReLU", "id": "r"},
                    self.conv("b", inputs=["input"]), {"op": "Add", "inputs": ["r", "b", "input"]}])
        model = load_model(self.dir)
        a, b = model.layers[0], model.layers[2]
        x = torch.randn(2, 3, 6, 6)
        with torch.no_grad():
            torch.testing.assert_close(model(x), F.relu(a(x)) + b(x) + x, rtol=0, atol=1e-6)

    def test_reference_errors(self):
        relu = {"op": "ReLU"}
        self.refused([self.conv("a"), dict(relu, inputs=["nope"])],
                     "layer 1 ReLU: input 'nope' names no layer")
        self.refused([self.conv("a"), dict(relu, inputs=["b"]), self.conv("b")],
                     "layer 1 ReLU: input 'b' names a later layer (2); inputs must be earlier "
                     "layers")
        self.refused([self.conv("a"), dict(relu, id="r", inputs=["r"])],
                     "layer 1 ReLU 'r': input 'r' names the layer itself; inputs must be earlier "
                     "layers")
        self.refused([self.conv("a"), dict(relu, name="act"), dict(relu, name="act"),
                      {"op": "Add", "inputs": ["act", "a"]}],
                     "layer 3 Add: input 'act' names several layers (1, 2); give them distinct "
                     "ids")
        self.refused([self.conv("a"), self.conv("b", inputs=["input"]), relu],
                     "layer 0 Conv2d 'a': its output is not used by any later layer (only the "
                     "last layer is the model's output)")

    def test_arity_and_field_errors(self):
        self.refused([self.conv("a"), {"op": "Add", "inputs": ["a"]}],
                     "layer 1 Add: Add takes at least 2 inputs, got 1")
        self.refused([self.conv("a"), {"op": "Add"}],
                     "layer 1 Add: Add needs 'inputs' (at least 2)")
        self.refused([self.conv("a"), {"op": "Mul", "inputs": ["a", "a", "a"]}],
                     "layer 1 Mul: Mul takes exactly 2 inputs, got 3")
        self.refused([self.conv("a"), {"op": "ReLU", "inputs": ["a", "input"]}],
                     "layer 1 ReLU: ReLU takes exactly 1 input, got 2")
        self.refused([self.conv("a"), {"op": "ReLU", "inputs": []}],
                     "layer 1 ReLU: 'inputs' must be a non-empty list of strings")
        self.refused([self.conv("a"), {"op": "ReLU", "inputs": "a"}],
                     "layer 1 ReLU: 'inputs' must be a non-empty list of strings")
        self.refused([self.conv("a"), {"op": "ReLU", "id": "a b"}],
                     "layer 1 ReLU 'a b': id 'a b' must be 1 to 127 of [A-Za-z0-9_.-] and not "
                     "'input'")
        self.refused([self.conv("a"), {"op": "ReLU", "id": "input"}],
                     "layer 1 ReLU 'input': id 'input' must be 1 to 127 of [A-Za-z0-9_.-] and "
                     "not 'input'")
        self.refused([self.conv("a"), {"op": "ReLU", "id": "x" * 128}],
                     f"layer 1 ReLU '{'x' * 128}': id '{'x' * 128}' must be 1 to 127 of "
                     "[A-Za-z0-9_.-] and not 'input'")
        self.refused([self.conv("a", id="r"), {"op": "ReLU", "id": "r"}],
                     "layer 1 ReLU 'r': id 'r' is used by an earlier layer")
        self.refused([self.conv("a"), {"op": "ReLU", "id": "a"}],
                     "layer 1 ReLU 'a': 'a' is the id of another layer and the key of this one; "
                     "explicit ids must differ from every other layer's key")
        self.refused([self.conv("a"), {"op": "Cat", "dim": 1, "keepdim": True}],
                     "layer 1 Cat: bad fields for Cat: Cat.__init__() got an unexpected "
                     "keyword argument 'keepdim'")
        self.refused([self.conv("a"), {"op": "StochasticDepth", "p": 0.1, "mode": "col"}],
                     "layer 1 StochasticDepth: bad fields for StochasticDepth: mode must be 'row' "
                     "or 'batch', got 'col'")

    def run_refused(self, layers, message, shape=(2, 3, 6, 6)):
        self.write(layers)
        model = load_model(self.dir)
        with self.assertRaises(ExportError) as cm:
            with torch.no_grad():
                model(torch.randn(shape))
        self.assertEqual(str(cm.exception), message)

    def test_shape_errors_at_run_time(self):
        pool = {"op": "AdaptiveAvgPool2d", "output_size": 1}
        self.run_refused([self.conv("a"), dict(pool, name="p"), {"op": "Add",
                                                                 "inputs": ["a", "p"]}],
                         "layer 2 Add: Add needs inputs of one shape (no broadcasting), got "
                         "[2, 3, 6, 6], [2, 3, 1, 1]")
        self.run_refused([self.conv("a"), {"op": "MaxPool2d", "name": "p", "kernel_size": 2},
                          {"op": "Mul", "inputs": ["a", "p"]}],
                         "layer 2 Mul: Mul needs inputs of one shape or [N,C,H,W] and [N,C,1,1], "
                         "got [2, 3, 6, 6], [2, 3, 3, 3]")
        self.run_refused([self.conv("a"), {"op": "MaxPool2d", "name": "p", "kernel_size": 2},
                          {"op": "Cat", "inputs": ["a", "p"], "dim": 1}],
                         "layer 2 Cat: Cat(dim=1) needs equal sizes outside the channel dim, got "
                         "[2, 3, 6, 6], [2, 3, 3, 3]")
        self.run_refused([self.conv("a"), {"op": "Cat"}],
                         "layer 1 Cat: Cat(dim=0) on rank-4 tensors is not supported; only the "
                         "channel dim (1 or -3) is")
        self.run_refused([self.conv("a"), {"op": "Mean", "dim": [1, 2]}],
                         "layer 1 Mean: Mean(dim=[1, 2]) is not supported; only the spatial dims "
                         "[2, 3] (or [-2, -1]) are")
        self.run_refused([self.conv("a"), {"op": "Flatten"}, {"op": "Mean", "dim": [2, 3]}],
                         "layer 2 Mean: Mean takes one rank-4 tensor, got [2, 108]")

    def test_resolve_inputs_indices(self):
        layers = [self.conv("a"), {"op": "ReLU", "id": "r"}, self.conv("b", inputs=["input"]),
                  {"op": "Add", "inputs": ["r", "b", "r"]}, {"op": "Flatten"}]
        self.assertEqual(resolve_inputs(layers), [[-1], [0], [-1], [1, 2, 1], [3]])


class SafetensorsTest(unittest.TestCase):
    def test_round_trip(self):
        import numpy as np

        tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
                   "b": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
                   "c": np.arange(3, dtype=np.int64), "d": torch.zeros(0, 4)}
        with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
            safetensors_io.save(f.name, tensors, {"k": "v"})
            data = f.read()
        (n,) = __import__("struct").unpack("<Q", data[:8])
        self.assertEqual(n % 8, 0)
        got, meta = safetensors_io.loads(data)
        self.assertEqual(meta, {"k": "v"})
        np.testing.assert_array_equal(got["a"], tensors["a"].numpy())
        np.testing.assert_array_equal(got["b"], [1.5, -2.0])
        np.testing.assert_array_equal(got["c"], [0, 1, 2])
        self.assertEqual(got["d"].shape, (0, 4))
        with self.assertRaises(safetensors_io.SafetensorsError):
            safetensors_io.loads(data + b"\0")  # bytes not covered by any tensor


if __name__ == "__main__":
    unittest.main()
