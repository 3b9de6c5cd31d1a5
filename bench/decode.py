#!/usr/bin/python3
"""decode.py - photo decoding to a model's input, in one run: 3 MP and 12 MP JPEGs to 28x28 and
224x224 with stb_image's full decode (what the server did before), convserve's libjpeg-turbo
DCT-scaled decode, and PIL (Image.draft + resize, the same libjpeg-turbo scaling); PNG with
stb_image against libspng; and how far cnn_bn's logits move between scaled and full JPEG decoding.

Usage: /usr/bin/python3 bench/decode.py [--build build] [--out DIR] [--json FILE]
Needs Debian's python3-pil and python3-numpy, and build/bench_decode (cmake --build build).
The images are made here (no downloads): smooth photo-like shapes with grain, written by PIL.
Prints milliseconds per image (lower is better); run on an idle machine for figures to quote.
"""
import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

SIZES = {"3MP": (2048, 1536), "12MP": (4000, 3000)}
SIDES = (28, 224)
MIN_SECONDS = 0.5
MIN_RUNS = 3


def photo(w, h, seed):
    """A photo-like RGB image: sky-to-ground gradient, broad light and shade, colour drifting
    across the frame, edges of a few shapes, and per-pixel grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    fx, fy = x / w, y / h
    shade = 50 * np.sin(2 * np.pi * (1.5 * fx + 0.3)) * np.cos(2 * np.pi * 1.2 * fy)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        img[..., c] = (60 + 120 * (1 - fy) * (1.0 if c == 2 else 0.6) + shade
                       + 30 * np.sin(2 * np.pi * (fx + fy + c / 3.0)))
    # A few hard-edged shapes, as objects give.
    for k in range(6):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.2, 0.9), rng.uniform(0.03, 0.15)
        mask = (fx - cx) ** 2 + ((fy - cy) * h / w) ** 2 < r * r
        img[mask] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def pil_ms(data, side):
    """PIL's fast path for a model input: draft (libjpeg-turbo DCT scaling), then resize."""
    runs, t0 = 0, time.perf_counter()
    while True:
        im = Image.open(io.BytesIO(data))
        if im.format == "JPEG":
            im.draft("RGB", (side, side))
        im.convert("RGB").resize((side, side), Image.BILINEAR)
        runs += 1
        t = time.perf_counter() - t0
        if runs >= MIN_RUNS and t >= MIN_SECONDS:
            return t * 1e3 / runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--out", help="keep the generated images in this folder")
    ap.add_argument("--json", help="also write the figures to this file (for bench/run.py)")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tool = os.path.join(args.build, "bench_decode")
    if not os.access(tool, os.X_OK):
        sys.exit(f"decode.py: {tool} is missing; build it with cmake --build {args.build}")
    out = args.out or tempfile.mkdtemp(prefix="convserve-decode-")
    os.makedirs(out, exist_ok=True)
    files = []
    for i, (name, (w, h)) in enumerate(SIZES.items()):
        im = photo(w, h, i)
        jpg = os.path.join(out, f"photo_{name}.jpg")
        im.save(jpg, "JPEG", quality=90)
        png = os.path.join(out, f"photo_{name}.png")
        im.save(png, "PNG", compress_level=6)
        files += [(name, "JPEG", jpg), (name, "PNG", png)]

    cmd = [tool] + sum((["--side", str(s)] for s in SIDES), [])
    cmd += ["--model", os.path.join(root, "config", "models", "cnn_bn")] + [f for _, _, f in files]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"decode.py: bench_decode failed:\n{res.stderr}")
    ms, logits = {}, []
    for line in res.stdout.splitlines():
        parts = line.split()
        if parts[0] == "logits":
            logits.append(parts[1:])
        else:
            ms[(parts[0], int(parts[1]), parts[2])] = float(parts[3])

    print("ms per image to a model input (lower is better); one run, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    print()
    print("| image | input | stb_image full decode | convserve (turbo scaled) | PIL draft + resize "
          "| stb / convserve |")
    print("|---|---|---:|---:|---:|---:|")
    figures = {"jpeg": [], "png": [], "logits": []}
    for name, fmt, path in files:
        if fmt != "JPEG":
            continue
        data = open(path, "rb").read()
        for s in SIDES:
            stb, ours, pil = ms[(path, s, "stb_full")], ms[(path, s, "convserve")], pil_ms(data, s)
            print(f"| {name} JPEG ({len(data) // 1024} kB) | {s}x{s} | {stb:.1f} | {ours:.1f} | "
                  f"{pil:.1f} | {stb / ours:.1f}x |")
            figures["jpeg"].append({"image": name, "bytes": len(data), "side": s, "stb": stb,
                                    "convserve": ours, "pil": pil})
    print()
    print("| image | stb_image | convserve (libspng, to 28x28) | PIL |")
    print("|---|---:|---:|---:|")
    for name, fmt, path in files:
        if fmt != "PNG":
            continue
        data = open(path, "rb").read()
        stb, ours, pil = ms[(path, 28, "stb_full")], ms[(path, 28, "convserve")], pil_ms(data, 28)
        print(f"| {name} PNG ({len(data) // 1024} kB) | {stb:.1f} | {ours:.1f} | {pil:.1f} |")
        figures["png"].append({"image": name, "bytes": len(data), "side": 28, "stb": stb,
                               "convserve": ours, "pil": pil})
    print()
    print("cnn_bn logits, DCT-scaled against full-resolution JPEG decoding (same bilinear resize):")
    for path, diff, rng, same in logits:
        print(f"  {os.path.basename(path)}: max |diff| {float(diff):.4f} over a logit range of "
              f"{float(rng):.4f}; same top-1 class: {same}")
        figures["logits"].append({"file": os.path.basename(path), "max_abs_diff": float(diff),
                                  "logit_range": float(rng), "same_top1": same})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    if not args.out:
        for _, _, f in files:
            os.remove(f)
        os.rmdir(out)


if __name__ == "__main__":
    main()
