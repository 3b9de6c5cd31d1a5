"""The six networks of the source notebook (DESIGN.md section 1), and their export to config/models.

Each definition is written the way the notebook writes it: nn.Sequential for seq_basic, add_module
for seq_named, nn.Module classes whose attribute order differs from the forward order for cnn_basic
(one ReLU used twice), and conv / fc Sequential blocks for cnn_bn. The notebook's sizes are the
defaults; CNNBasic and CNNBN also take smaller widths and image sizes for the test fixtures.

    /usr/bin/python3 tools/notebook_models.py [--out config/models]

writes config/models/<id>/{model.json, model.safetensors, README.md}. The output is deterministic
(torch.manual_seed(0) before each model), so re-running it changes nothing. cnn_basic and cnn_bn are
exported without weights (their 64*24*24 -> 128 Linear alone is 19 MB): the engine initialises them
PyTorch-style from "seed".
"""

import argparse
import inspect
import os
import sys
from dataclasses import dataclass, field

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_model import export  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                  "truck"]
IMAGENET_PREPROCESS = {"color": "rgb", "resize": [28, 28], "scale": 1 / 255,
                       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "invert": False}


def seq_basic():
    """Sequential(Conv2d(3,32,3), ReLU(), Conv2d(32,64,3)): any H, W >= 5."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3),
    )


def seq_named():
    """The same network built with add_module: state_dict keys layer_1.weight, layer_2.weight..."""
    model = nn.Sequential()
    model.add_module('layer_1', nn.Conv2d(3, 32, 3))
    model.add_module('ReLU', nn.ReLU())
    model.add_module('layer_2', nn.Conv2d(32, 64, 3))
    return model


class MyModel(nn.Module):
    """conv_1, act, conv_2 as attributes, run in that order: any H and W."""

    def __init__(self, in_channels=3, out_channels=64):
        super().__init__()
        self.conv_1 = nn.Conv2d(in_channels, 32, 3)
        self.act = nn.ReLU()
        self.conv_2 = nn.Conv2d(32, out_channels, 3)

    def forward(self, x):
        x = self.conv_1(x)
        x = self.act(x)
        x = self.conv_2(x)
        return x


def flatten_linear():
    """Flatten a [N, 1, 3, 3] tensor to [N, 9] and feed it to Linear(9, 10)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(9, 10),
    )


class CNNBasic(nn.Module):
    """conv_1, conv_2, flatten, act (shared), layer_1, layer_2; forward order differs.

    The notebook's sizes: Conv2d(3,32,3), Conv2d(32,64,3), Linear(64*24*24, 128), Linear(128, out)
    on 3x28x28 images; `widths` and `image` shrink it for test fixtures.
    """

    def __init__(self, in_channels=3, out=5, *, widths=(32, 64, 128), image=28):
        super().__init__()
        c1, c2, hidden = widths
        self.conv_1 = nn.Conv2d(in_channels, c1, 3)
        self.conv_2 = nn.Conv2d(c1, c2, 3)
        self.flatten = nn.Flatten()
        self.act = nn.ReLU()
        self.layer_1 = nn.Linear(c2 * (image - 4) * (image - 4), hidden)
        self.layer_2 = nn.Linear(hidden, out)

    def forward(self, x):
        x = self.conv_1(x)
        x = self.act(x)
        x = self.conv_2(x)
        x = self.flatten(x)
        x = self.layer_1(x)
        x = self.act(x)
        x = self.layer_2(x)
        return x


class CNNBN(nn.Module):
    """conv = Sequential(Conv-BN-ReLU x2, no conv bias), flatten, fc = Sequential(Linear, ReLU,
    Dropout(0.5), Linear). The notebook's sizes: 32 and 64 channels, Linear(64*24*24, 128) on
    3x28x28 images; `widths` and `image` shrink it for test fixtures.
    """

    def __init__(self, in_channels=3, out=10, *, widths=(32, 64, 128), image=28):
        super().__init__()
        c1, c2, hidden = widths
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
        )
        self.flatten = nn.Flatten()
        self.fc = nn.Sequential(
            nn.Linear(c2 * (image - 4) * (image - 4), hidden),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(hidden, out),
        )

    def forward(self, x):
        x = self.conv(x)
        x = self.flatten(x)
        x = self.fc(x)
        return x


@dataclass
class NotebookModel:
    """How one notebook network is exported to config/models/<id>."""
    id: str
    make: object  # a function or class returning the nn.Module
    input_shape: list
    example: list  # DESIGN.md's example input, batch first
    summary: str
    weights: bool = True
    export_kwargs: dict = field(default_factory=dict)


NOTEBOOK = [
    NotebookModel("seq_basic", seq_basic, [3, -1, -1], [16, 3, 28, 28],
                  "Two 3x3 convolutions with a ReLU between them, as an nn.Sequential. It takes "
                  "any H and W >= 5."),
    NotebookModel("seq_named", seq_named, [3, -1, -1], [16, 3, 28, 28],
                  "seq_basic built with add_module, so its state_dict keys are layer_1.* and "
                  "layer_2.*. It takes any H and W >= 5."),
    NotebookModel("mymodel", MyModel, [3, -1, -1], [16, 3, 50, 50],
                  "An nn.Module subclass with conv_1, act and conv_2. It takes any H and W >= 5."),
    NotebookModel("flatten_linear", flatten_linear, [1, 3, 3], [2, 1, 3, 3],
                  "Flatten then Linear(9, 10), the notebook's flatten example. (The notebook also "
                  "shows Conv2d(1, 3, 3) taking the same [2, 1, 3, 3] tensor to [2, 3, 1, 1].)"),
    NotebookModel("cnn_basic", CNNBasic, [3, 28, 28], [16, 3, 28, 28],
                  "Two convolutions and two Linear layers. The attributes are declared in a "
                  "different order from the forward pass, and one ReLU module is used twice.",
                  weights=False),
    NotebookModel("cnn_bn", CNNBN, [3, 28, 28], [16, 3, 28, 28],
                  "Conv-BatchNorm-ReLU twice, then Linear-ReLU-Dropout-Linear, in eval mode. "
                  "It answers with the ten CIFAR-10 classes.",
                  weights=False,
                  export_kwargs={"labels": CIFAR10_LABELS, "max_batch_size": 64,
                                 "preprocess": IMAGENET_PREPROCESS,
                                 "extra": {"dynamic_batching": {"max_queue_delay_us": 0}}}),
]


def build(entry):
    """The module for a NOTEBOOK entry, with PyTorch's default init after torch.manual_seed(0)."""
    torch.manual_seed(0)
    return entry.make().eval()


def _sample_shape_text(shape):
    """[N, 3, H, W] for a sample shape [3, -1, -1]."""
    names = ["C", "H", "W"][-len(shape):]
    return "[" + ", ".join(["N"] + [str(d) if d > 0 else n for d, n in zip(shape, names)]) + "]"


def _infer_command(entry):
    """A curl command posting a KServe v2 JSON request for a small input of this model."""
    shape = [1] + [5 if d == -1 else d for d in entry.input_shape]
    count = 1
    for d in shape:
        count *= d
    if count <= 16:
        data = ", ".join(str(i + 1) for i in range(count))
        body = (f'{{"inputs": [{{"name": "input", "shape": {shape}, "datatype": "FP32", '
                f'"data": [{data}]}}]}}')
        return (f"curl -s localhost:8080/v2/models/{entry.id}/infer -H 'Content-Type: "
                f"application/json' \\\n  -d '{body}'")
    return ("python3 -c 'import json; print(json.dumps({\"inputs\": [{\"name\": \"input\", "
            f"\"shape\": {shape}, \"datatype\": \"FP32\", \"data\": [0.5] * {count}}}]}}))' \\\n"
            f"  | curl -s localhost:8080/v2/models/{entry.id}/infer "
            "-H 'Content-Type: application/json' -d @-")


def readme(entry, module):
    """README.md text for a model folder: definition, shapes, weights, how to try it."""
    with torch.no_grad():
        out = list(module(torch.zeros(entry.example)).shape)
    params = sum(p.numel() for p in module.parameters())
    source = inspect.getsource(entry.make).rstrip()
    if entry.weights:
        weights = ("`model.safetensors` holds PyTorch's default initialisation after "
                   "`torch.manual_seed(0)` (untrained), exported by `tools/notebook_models.py`.")
    else:
        weights = (f"none (the file would take {params * 4 / 1e6:.0f} MB): `model.json` has "
                   "no `\"weights\"`, so the engine initialises PyTorch-style random weights from "
                   "`\"seed\"`. Export trained weights with `tools/export_model.py` to replace "
                   "them.")
    free = any(d == -1 for d in entry.input_shape)
    lines = [
        f"# {entry.id}", "",
        entry.summary, "",
        "The definition, from the source notebook (`tools/notebook_models.py`):", "",
        "```python", source, "```", "",
        f"- Input `input`: FP32 `{_sample_shape_text(entry.input_shape)}`"
        + (" (any H and W)" if free else ""),
        f"- Output `logits`: for `{entry.example}` it is `{out}`",
        f"- Parameters: {params:,}",
        f"- Weights: {weights}", "",
        "Regenerate this folder with `/usr/bin/python3 tools/notebook_models.py`.", "",
        "## Try it", "",
        "```sh",
        f"curl -s localhost:8080/v2/models/{entry.id}",
        f"curl -s 'localhost:8080/v2/models/{entry.id}/shapes?input="
        f"{','.join(map(str, entry.example))}'",
        _infer_command(entry),
    ]
    if "preprocess" in entry.export_kwargs:
        lines.append(f"curl -s -T picture.png localhost:8080/predictions/{entry.id}")
    lines += ["```", ""]
    return "\n".join(lines)


def export_all(root):
    """Exports every NOTEBOOK model into root/<id>/ with its README."""
    for entry in NOTEBOOK:
        module = build(entry)
        folder = os.path.join(root, entry.id)
        result = export(module, folder, entry.id, entry.input_shape, weights=entry.weights,
                        **entry.export_kwargs)
        with open(os.path.join(folder, "README.md"), "w") as f:
            f.write(readme(entry, module))
        size = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
        print(f"{entry.id:<15} {len(result.layers)} layers, {len(result.tensors)} tensors, "
              f"{size / 1024:.0f} KiB -> {folder}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(REPO, "config", "models"),
                   help="model repository to write into (default: config/models)")
    args = p.parse_args(argv)
    export_all(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
