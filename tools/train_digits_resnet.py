"""Train config/models/digits_resnet, a small ResNet on scikit-learn's digits: the shipped graph model.

    /usr/bin/python3 tools/train_digits_resnet.py      (Debian's python3-torch and python3-sklearn)

Same data, split, augmentation, normalisation and training recipe as tools/train_digits.py (its
functions are reused), so the server's /predictions path and the example images of examples/ work
for both models alike. The network is a conv stem, three basic blocks with BatchNorm (identity
shortcuts, and one block with stride 2 and a 1x1 projection shortcut), global average pooling and a
Linear layer: its model.json is a graph (Add layers with "inputs"). It is exported with
tools/export_model.py (which checks the export against the module), and what PyTorch answers for
the example images is written to examples/expected_digits_resnet.json.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
from export_model import export  # noqa: E402
from train_digits import (BATCH, EPOCHS, LABELS, LR, SEED, SHIFT, WEIGHT_DECAY,  # noqa: E402
                          evaluate, expected_entry, format_expected, load_data, load_stb,
                          preprocess_block, server_tensor, train)

NAME = "digits_resnet"
WIDTHS = (16, 32)  # channels of the stem and first block, then of the strided block
EXAMPLE_IMAGES = ("0.png", "3.png", "5.jpg", "7.png")
EXPECTED_FILE = "expected_digits_resnet.json"


class BasicBlock(nn.Module):
    """ResNet's basic block: conv-bn-relu-conv-bn, plus the shortcut (a 1x1 conv and BatchNorm
    when the shape changes), then ReLU."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class DigitsResNet(nn.Module):
    """[N,1,8,8] -> stem 16 -> block 16 -> block 32 (stride 2, projection) -> block 32 -> GAP ->
    Linear(32, 10)."""

    def __init__(self, num_classes=10):
        super().__init__()
        a, b = WIDTHS
        self.stem = nn.Sequential(nn.Conv2d(1, a, 3, padding=1, bias=False), nn.BatchNorm2d(a),
                                  nn.ReLU())
        self.layer1 = BasicBlock(a, a)
        self.layer2 = BasicBlock(a, b, stride=2)
        self.layer3 = BasicBlock(b, b)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(b, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


README = """\
# digits_resnet: a small ResNet on the handwritten digits (a graph model)

The same task as `digits` (an 8x8 gray image of a light digit on a dark background -> 10 logits for
"0" to "9"), with residual connections: its `model.json` is a graph, where `Add` layers name their
inputs. It shows a graph served by convserve, trained for real.

## Data and preprocessing

Exactly those of `digits` (`tools/train_digits.py`, whose functions `tools/train_digits_resnet.py`
reuses): scikit-learn's 1797 8x8 digits, split 80/20 stratified with `random_state={seed}`
({n_train} training images, {n_test} held out, the same held-out images as `digits`), inputs
`digits / 16` normalised with the training set's mean {mean} and std {std}, random shifts of up to
{shift} pixel for augmentation. `model.json`'s `preprocess` is the same as `digits`':

```json
"preprocess": {preprocess}
```

## Architecture

`DigitsResNet` in `tools/train_digits_resnet.py`:

| layers | module | output for [N,1,8,8] |
|---|---|---|
| stem | Conv2d(1, 16, 3, padding=1), BatchNorm2d, ReLU | [N,16,8,8] |
| layer1 | basic block: conv-bn-relu-conv-bn + identity, ReLU | [N,16,8,8] |
| layer2 | basic block, stride 2: conv-bn-relu-conv-bn + 1x1 conv-bn projection, ReLU | [N,32,4,4] |
| layer3 | basic block: conv-bn-relu-conv-bn + identity, ReLU | [N,32,4,4] |
| pool, fc | AdaptiveAvgPool2d(1), flatten, Linear(32, 10) | [N,10] |

{n_params} parameters (`model.safetensors`: {weights_size} bytes, float32); {n_layers} layers in
`model.json`, {n_adds} of them `Add`.

## Training

Adam, learning rate {lr} with a one-cycle schedule, weight decay {wd}, batch {batch}, {epochs}
epochs, cross-entropy loss; deterministic (`torch.manual_seed({seed})`, one CPU thread,
deterministic algorithms); training takes under a minute on one CPU core.

**Held-out accuracy: {accuracy:.2%}** ({n_correct}/{n_test} of the 20% test split, eval mode;
`digits` has 99.72% on the same split).

`examples/{expected_file}` holds what PyTorch answers for the example images of `examples/`
(decoded as the server decodes them): {examples}.

## Retraining

```sh
/usr/bin/python3 tools/train_digits_resnet.py
```

It trains, prints the held-out accuracy, exports this folder with `tools/export_model.py` (which
checks the export against the PyTorch module) and rewrites this README and
`examples/{expected_file}`. The run is deterministic on a given machine and PyTorch version.
"""


def write_expected(model, mean, std, examples_dir):
    """What the model answers for each example image, decoded as the server decodes it."""
    stb = load_stb()
    if stb is None:
        raise SystemExit("libstb is needed to decode the example images as the server does")
    expected = {}
    for name in EXAMPLE_IMAGES:
        path = os.path.join(examples_dir, name)
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            pixels = stb.decode(f.read(), 1)
        expected[name] = expected_entry(model, server_tensor(pixels, mean, std))
    with open(os.path.join(examples_dir, EXPECTED_FILE), "w") as f:
        f.write(format_expected(expected))
    return expected


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--out", default=os.path.join(REPO, "config", "models", NAME),
                    help=f"model folder to write (config/models/{NAME})")
    ap.add_argument("--examples", default=os.path.join(REPO, "examples"),
                    help="folder of the example images; its expected file is rewritten ('' to "
                         "skip)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)  # reproducible float sums
    torch.use_deterministic_algorithms(True)
    data = load_data()
    print(f"digits: {len(data.train_ids)} train, {len(data.test_ids)} held out; mean {data.mean}, "
          f"std {data.std}")
    start = time.time()
    model = train(data.x_train, data.y_train, data.mean, data.std, args.epochs,
                  make_model=DigitsResNet)
    seconds = time.time() - start
    accuracy, pred = evaluate(model, (data.x_test - data.mean) / data.std, data.y_test)
    n_correct = int((pred == data.y_test).sum())
    print(f"held-out accuracy: {accuracy:.4f} ({n_correct}/{len(data.test_ids)}), trained in "
          f"{seconds:.1f} s")

    preprocess = preprocess_block(data.mean, data.std)
    result = export(model, args.out, NAME, [1, 8, 8], labels=LABELS, max_batch_size=64,
                    preprocess=preprocess, extra={"dynamic_batching": {"max_queue_delay_us": 0}})
    expected = {}
    if args.examples:
        expected = write_expected(model, data.mean, data.std, args.examples)
        for name, entry in expected.items():
            print(f"  {name:6}: {entry['label']} p={entry['probability']:.4f}")
    shown = ", ".join(f"`{n}` -> \"{e['label']}\" (p = {e['probability']:.4f})"
                      for n, e in expected.items()) or "none written"
    weights_size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(README.format(
            seed=SEED, n_train=len(data.train_ids), n_test=len(data.test_ids), mean=data.mean,
            std=data.std, shift=SHIFT, preprocess=json.dumps(preprocess),
            n_params=sum(p.numel() for p in model.parameters()), weights_size=weights_size,
            n_layers=len(result.layers), n_adds=sum(1 for la in result.layers if la.op == "Add"),
            lr=LR, wd=WEIGHT_DECAY, batch=BATCH, epochs=args.epochs,
            accuracy=accuracy, n_correct=n_correct, expected_file=EXPECTED_FILE, examples=shown))
    print(f"wrote {args.out}: {len(result.layers)} layers, {len(result.tensors)} tensors, "
          f"{weights_size} bytes of weights")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
