"""Unit tests of the exporter and the safetensors reader/writer (no C engine needed).

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
except ImportError:
    print("torch is not importable by this interpreter: run with /usr/bin/python3 "
          "(apt-get install python3-torch); skipping")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from export_model import ExportError, export, format_model_json, load_model  # noqa: E402
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


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + x


class Branch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3)
        self.b = nn.Conv2d(3, 3, 3)

    def forward(self, x):
        self.a(x)
        return self.b(x)


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
