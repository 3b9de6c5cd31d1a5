"""Train convserve's shipped demo model, config/models/digits, and write its example requests.

    /usr/bin/python3 tools/train_digits.py            (Debian's python3-torch and python3-sklearn)

Data: scikit-learn's copy of the UCI optical digits (load_digits: 1797 images, 8x8, 16 gray levels,
light digit on a dark background), split 80/20, stratified, with a fixed seed. The network is trained
on CPU, deterministically, on X = digits / 16 normalised with the training set's mean and std, which
is exactly what the server computes from an uploaded image: bilinear resize to 8x8, then
x = (p * 1/255 - mean) / std for pixels p in 0..255 (p = 255 is 16/16). It is exported with
tools/export_model.py to config/models/digits (model.json, model.safetensors, README.md).

Then it writes examples/: held-out digits upscaled to 64x64 8-bit grayscale PNGs (0.png, 3.png,
7.png), a tinted RGB JPEG (5.jpg, written and decoded with the stb library the server links, when
libstb.so.0 is present), infer_3.json (a KServe v2 request holding the tensor the server computes from
3.png) and expected.json (the label, logits and probabilities PyTorch gives for each image, computed
from the pixels the server decodes).
"""

import argparse
import ctypes
import ctypes.util
import json
import os
import struct
import sys
import time
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
from export_model import export  # noqa: E402  (tools/ sibling module)

SEED = 0
TEST_SIZE = 0.2
EPOCHS = 40
BATCH = 64
LR = 2e-3
WEIGHT_DECAY = 1e-4
SHIFT = 1  # random shifts of up to this many pixels in each direction (0 disables augmentation)
LABELS = [str(i) for i in range(10)]
SCALE = 1.0 / 255.0
EXAMPLE_SIZE = 64  # example images are the 8x8 digits upscaled (nearest) to this size
PNG_DIGITS = (0, 3, 7)
JPEG_DIGIT = 5
# 5.jpg: the digit in a warm white on a dark blue-gray background, quality 95.
JPEG_INK = np.array([255, 235, 190], dtype=np.float64)
JPEG_PAPER = np.array([6, 8, 18], dtype=np.float64)
JPEG_QUALITY = 95


class DigitsNet(nn.Module):
    """Conv-BN-ReLU x2, max-pool, dropout, then a two-layer classifier: [N,1,8,8] -> [N,10]."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(0.25))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(64, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


# ---------------------------------------------------------------------------------------------------
# Training

def random_shift(x, generator, shift):
    """Moves each image of x [N,1,H,W] (0..1, background 0) by up to `shift` pixels in H and W."""
    if shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, 1, h, w + 2 * shift)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, 1, h, w)
    return out.gather(3, cols)


def evaluate(model, x, y):
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    return (pred == y).float().mean().item(), pred


def train(x_train, y_train, mean, std, epochs, log=print, make_model=DigitsNet):
    """Trains make_model() (DigitsNet) on x_train (0..1) normalised with mean/std; returns the
    model in eval mode."""
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = epochs * ((len(x_train) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            xb = (random_shift(x_train[idx], gen, SHIFT) - mean) / std
            yb = y_train[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == yb).sum().item()
            total += len(idx)
        if (epoch + 1) % 10 == 0 or epoch == 0:
            log(f"  epoch {epoch + 1:3d}/{epochs}: loss {loss_sum / total:.4f}, "
                f"train accuracy (augmented, dropout on) {correct / total:.4f}")
    return model.eval()


# ---------------------------------------------------------------------------------------------------
# What the server does with an image, and images it can read

def server_tensor(pixels, mean, std, size=(8, 8)):
    """The server's preprocessing of one decoded gray image (H x W uint8): bilinear resize with
    half-pixel centres and no antialiasing, then x = (p * scale - mean) / std, in float32.
    Returns [1, 1, 8, 8]."""
    p = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    if tuple(p.shape[2:]) != tuple(size):
        p = F.interpolate(p, size=size, mode="bilinear", align_corners=False, antialias=False)
    scale = torch.tensor(SCALE, dtype=torch.float32)
    return (p * scale - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(std,
                                                                               dtype=torch.float32)


def to_pixels(digit16):
    """An 8x8 digit with values 0..16 -> uint8 0..255 (16 -> 255), upscaled by nearest neighbour.
    The server's bilinear 64 -> 8 resize samples between two pixels of the same 8x8 block, so it
    gives back these 8x8 values exactly."""
    small = np.rint(np.asarray(digit16, dtype=np.float64) * 255.0 / 16.0).astype(np.uint8)
    k = EXAMPLE_SIZE // small.shape[0]
    return np.kron(small, np.ones((k, k), dtype=np.uint8))


def png_bytes(pixels):
    """An 8-bit grayscale (pixels 2-D) or RGB (H x W x 3) PNG: signature, IHDR, one IDAT, IEND."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = pixels.shape[:2]
    color = 0 if pixels.ndim == 2 else 2

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = pixels.reshape(h, -1)
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))  # filter type 0 on every row
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


class Stb:
    """stb_image / stb_image_write from Debian's libstb0: the decoder the server links."""

    def __init__(self):
        path = ctypes.util.find_library("stb") or "libstb.so.0"
        self.lib = ctypes.CDLL(path)
        self.lib.stbi_load_from_memory.restype = ctypes.POINTER(ctypes.c_ubyte)
        self.lib.stbi_load_from_memory.argtypes = [
            ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self.lib.stbi_image_free.argtypes = [ctypes.c_void_p]
        self.lib.stbi_failure_reason.restype = ctypes.c_char_p
        self.lib.stbi_write_jpg.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                            ctypes.c_int, ctypes.c_void_p, ctypes.c_int]

    def decode(self, data, channels):
        """Decodes `data` converted to `channels` (stbi_load_from_memory's req_comp)."""
        w, h, n = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        ptr = self.lib.stbi_load_from_memory(data, len(data), ctypes.byref(w), ctypes.byref(h),
                                             ctypes.byref(n), channels)
        if not ptr:
            raise RuntimeError(f"stb cannot decode: {self.lib.stbi_failure_reason().decode()}")
        try:
            arr = np.ctypeslib.as_array(ptr, shape=(h.value * w.value * channels,)).copy()
        finally:
            self.lib.stbi_image_free(ptr)
        return arr.reshape(h.value, w.value) if channels == 1 else arr.reshape(h.value, w.value,
                                                                               channels)

    def write_jpg(self, path, rgb, quality):
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w, c = rgb.shape
        if not self.lib.stbi_write_jpg(path.encode(), w, h, c, rgb.ctypes.data, quality):
            raise RuntimeError(f"stbi_write_jpg failed for {path}")


def load_stb():
    try:
        return Stb()
    except (OSError, AttributeError) as e:
        print(f"note: libstb not available ({e}); PNGs are checked with numpy only and no JPEG "
              "example is written", file=sys.stderr)
        return None


def decode_png_gray8(data):
    """Reads back a PNG written by png_bytes (8-bit gray, filter 0): for when libstb is missing."""
    w, h = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        if data[pos + 4:pos + 8] == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, w + 1)
    return raw[:, 1:].copy()


# ---------------------------------------------------------------------------------------------------
# Examples

def predict(model, x):
    with torch.no_grad():
        logits = model(x)[0]
    probs = torch.softmax(logits, 0)
    return logits, probs


def expected_entry(model, x):
    logits, probs = predict(model, x)
    top = int(logits.argmax())
    return {"label": LABELS[top], "index": top,
            "probability": float(probs[top]),
            "logits": [float(v) for v in logits],
            "probabilities": [float(v) for v in probs]}


def candidates(model, images, labels, digit, mean, std):
    """Held-out samples of `digit`, most confident first, among those the model gets right."""
    rows = []
    for i in np.flatnonzero(labels == digit):
        logits, probs = predict(model, server_tensor(to_pixels(images[i]), mean, std))
        if int(logits.argmax()) == digit:
            rows.append((-float(probs[digit]), int(i)))
    return [i for _, i in sorted(rows)]


def format_expected(expected):
    """expected.json text: one image per entry, one key per line, lists kept on one line."""
    images = []
    for name, entry in expected.items():
        keys = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in entry.items())
        images.append(f"  {json.dumps(name)}: {{\n{keys}\n  }}")
    return "{\n" + ",\n".join(images) + "\n}\n"


def write_examples(model, images, labels, test_ids, mean, std, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    stb = load_stb()
    expected, tensors, chosen = {}, {}, {}
    for digit in PNG_DIGITS:
        i = candidates(model, images, labels, digit, mean, std)[0]
        data = png_bytes(to_pixels(images[i]))
        name = f"{digit}.png"
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        pixels = stb.decode(data, 1) if stb else decode_png_gray8(data)
        if not np.array_equal(pixels, to_pixels(images[i])):
            raise SystemExit(f"bug: {name} does not decode to the pixels written")
        x = server_tensor(pixels, mean, std)
        expected[name], tensors[name], chosen[name] = expected_entry(model, x), x, int(test_ids[i])
    if stb:
        for i in candidates(model, images, labels, JPEG_DIGIT, mean, std):
            gray = to_pixels(images[i]).astype(np.float64) / 255.0
            rgb = np.rint(JPEG_PAPER + gray[..., None] * (JPEG_INK - JPEG_PAPER)).astype(np.uint8)
            name = f"{JPEG_DIGIT}.jpg"
            path = os.path.join(out_dir, name)
            stb.write_jpg(path, rgb, JPEG_QUALITY)
            with open(path, "rb") as f:
                pixels = stb.decode(f.read(), 1)  # what the server decodes for a gray model
            x = server_tensor(pixels, mean, std)
            entry = expected_entry(model, x)
            if entry["index"] == JPEG_DIGIT:
                expected[name], chosen[name] = entry, int(test_ids[i])
                break
        else:
            print(f"note: no held-out {JPEG_DIGIT} survives the JPEG path; {JPEG_DIGIT}.jpg not "
                  "written", file=sys.stderr)
    x3 = tensors["3.png"]
    request = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                           "data": [float(v) for v in x3.flatten()]}]}
    with open(os.path.join(out_dir, "infer_3.json"), "w") as f:
        json.dump(request, f)
        f.write("\n")
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        f.write(format_expected(expected))
    return expected, chosen


# ---------------------------------------------------------------------------------------------------

README = """\
# digits: handwritten digit classifier (convserve's demo model)

A small CNN that reads an 8x8 gray image of a handwritten digit, a light digit on a dark background,
and answers 10 logits for the labels "0" to "9". It is the model the server starts with, small enough
to train on a CPU in seconds.

## Data

scikit-learn's copy of the UCI ML hand-written digits data set (Optical Recognition of Handwritten
Digits, `sklearn.datasets.load_digits`, shipped inside Debian's python3-sklearn; it is the UCI test
set): {n_total} images of 8x8 pixels, each pixel a count 0..16 of the 4x4 block it summarises, the
digit light (16) on a dark background (0). Split 80/20, stratified by class, with `train_test_split(random_state={seed})`:
{n_train} training images, {n_test} held out.

## Architecture

`tools/train_digits.py`, class `DigitsNet` (an `nn.Module` with two `nn.Sequential` blocks):

| layer | module | output for [N,1,8,8] |
|---|---|---|
| features.0 | Conv2d(1, 16, 3, padding=1) | [N,16,8,8] |
| features.1 | BatchNorm2d(16) | [N,16,8,8] |
| features.2 | ReLU | [N,16,8,8] |
| features.3 | Conv2d(16, 32, 3, padding=1) | [N,32,8,8] |
| features.4 | BatchNorm2d(32) | [N,32,8,8] |
| features.5 | ReLU | [N,32,8,8] |
| features.6 | MaxPool2d(2) | [N,32,4,4] |
| features.7 | Dropout(0.25) | [N,32,4,4] |
| classifier.0 | Flatten | [N,512] |
| classifier.1 | Linear(512, 64) | [N,64] |
| classifier.2 | ReLU | [N,64] |
| classifier.3 | Dropout(0.5) | [N,64] |
| classifier.4 | Linear(64, 10) | [N,10] |

{n_params} parameters (`model.safetensors`: {weights_size} bytes, float32).

## Training

- input: `X = digits / 16` (0..1), normalised with the training set's mean {mean} and std {std}
  (rounded to 4 decimals, and the same values are in `model.json`'s `preprocess`)
- augmentation: each training image moved by a random shift of -{shift}..{shift} pixels in each
  direction (zero fill), so digits that are not centred the way the UCI forms centred them still work
- Adam, learning rate {lr} with a one-cycle schedule, weight decay {wd}, batch {batch}, {epochs} epochs,
  cross-entropy loss
- deterministic: `torch.manual_seed({seed})`, one CPU thread, deterministic algorithms; training
  takes a few seconds on one CPU core

**Held-out accuracy: {accuracy:.2%}** ({n_correct}/{n_test} of the 20% test split, eval mode).

## Serving

`model.json` sets `"max_batch_size": 64`, `"dynamic_batching": {{"max_queue_delay_us": 0}}` and

```json
"preprocess": {preprocess}
```

so an uploaded image (`curl -T examples/3.png http://127.0.0.1:8080/predictions/digits`) of a light
digit on a dark background, of any size and in any format the server reads, is converted to gray,
resized to 8x8 (bilinear, half-pixel centres, no antialiasing, as PyTorch's `F.interpolate`) and
normalised as `x = (p / 255 - {mean}) / {std}` for pixels `p` in 0..255: a pixel of 255 becomes
16/16, exactly the training input. The 8x8 resize has no antialiasing, so a large image with thin
strokes loses them: draw thick strokes, or send an image close to 8x8 (a dark digit on a light
background needs `"invert": true`). `examples/` holds held-out digits as 64x64 images and what PyTorch
answers for them (`examples/expected.json`).

## Retraining

```sh
/usr/bin/python3 tools/train_digits.py
```

(Debian's `python3-torch` and `python3-sklearn`, no network). It trains, prints the held-out
accuracy, exports this folder with `tools/export_model.py` (which checks the export against the
PyTorch module) and rewrites this README and `examples/`. The run is deterministic on a given
machine and PyTorch version.
"""


@dataclass
class Data:
    """The digits split shared by every model trained on it: 8x8 images (0..16), labels, the
    held-out ids, tensors of digits / 16, and the training set's mean and std (4 decimals)."""
    images: np.ndarray
    labels: np.ndarray
    train_ids: np.ndarray
    test_ids: np.ndarray
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float
    std: float


def load_data():
    """scikit-learn's digits, split 80/20 stratified with SEED, as Data."""
    digits = load_digits()
    images, labels = digits.images, digits.target
    ids = np.arange(len(labels))
    train_ids, test_ids = train_test_split(ids, test_size=TEST_SIZE, stratify=labels,
                                           random_state=SEED)
    x_all = torch.from_numpy(images / 16.0).float().unsqueeze(1)
    y_all = torch.from_numpy(labels).long()
    x_train = x_all[train_ids]
    return Data(images, labels, train_ids, test_ids, x_train, y_all[train_ids], x_all[test_ids],
                y_all[test_ids], round(float(x_train.mean()), 4), round(float(x_train.std()), 4))


def preprocess_block(mean, std):
    """model.json's preprocess: what the server does to an uploaded image for these models."""
    return {"color": "gray", "resize": [8, 8], "scale": SCALE, "mean": [mean], "std": [std],
            "invert": False}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--out", default=os.path.join(REPO, "config", "models", "digits"),
                    help="model folder to write (config/models/digits)")
    ap.add_argument("--examples", default=os.path.join(REPO, "examples"),
                    help="folder for example images and requests (examples/); '' to skip")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)  # reproducible float sums; the model is tiny anyway
    torch.use_deterministic_algorithms(True)

    data = load_data()
    images, labels, train_ids, test_ids = data.images, data.labels, data.train_ids, data.test_ids
    x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    mean, std = data.mean, data.std
    print(f"digits: {len(train_ids)} train, {len(test_ids)} held out; mean {mean}, std {std}")

    start = time.time()
    model = train(x_train, y_train, mean, std, args.epochs)
    seconds = time.time() - start
    accuracy, pred = evaluate(model, (x_test - mean) / std, y_test)
    n_correct = int((pred == y_test).sum())
    print(f"held-out accuracy: {accuracy:.4f} ({n_correct}/{len(test_ids)}), trained in "
          f"{seconds:.1f} s")

    preprocess = preprocess_block(mean, std)
    result = export(model, args.out, "digits", [1, 8, 8], labels=LABELS, max_batch_size=64,
                    preprocess=preprocess,
                    extra={"dynamic_batching": {"max_queue_delay_us": 0}})
    weights_size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    n_params = sum(p.numel() for p in model.parameters())
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(README.format(
            n_total=len(labels), n_train=len(train_ids), n_test=len(test_ids), seed=SEED,
            n_params=n_params, weights_size=weights_size, mean=mean, std=std, shift=SHIFT, lr=LR,
            wd=WEIGHT_DECAY, batch=BATCH, epochs=args.epochs,
            accuracy=accuracy, n_correct=n_correct, preprocess=json.dumps(preprocess)))
    print(f"wrote {args.out}: {len(result.layers)} layers, {len(result.tensors)} tensors")

    if args.examples:
        expected, chosen = write_examples(model, images[test_ids], labels[test_ids], test_ids,
                                          mean, std, args.examples)
        for name, entry in expected.items():
            logits = ", ".join(f"{v:.3f}" for v in entry["logits"])
            print(f"  {name:6} (digit #{chosen[name]}): {entry['label']} "
                  f"p={entry['probability']:.4f} logits [{logits}]")
        print(f"wrote {args.examples}: {', '.join(sorted(expected))}, infer_3.json, expected.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
