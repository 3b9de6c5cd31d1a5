"""PyTorch side of the benchmark (run with /usr/bin/python3, which has Debian's python3-torch).

    bench_torch.py export-cnnbn OUT_DIR
        Writes a cnn_bn model folder with real weights: the notebook's CNNBN (tools/notebook_models.py)
        built with torch.manual_seed(0), BatchNorm running statistics randomised so the folded
        layers are not identities, exported by tools/export_model.py's export() with the serving
        fields (labels, max_batch_size, dynamic_batching, preprocess) of config/models/cnn_bn.
        convserve and PyTorch then run the very same weights.

    bench_torch.py engine --threads T --seconds S --repeats R --batches 1,16,64 MODEL_DIR...
        For each folder: load_model() (same weights), torch.jit.freeze(torch.jit.script(...)),
        torch.jit.optimize_for_inference, torch.set_num_threads(T), then times forward passes at
        each batch size, R repetitions of S seconds, and keeps the best. Prints one line per run:
            torch MODEL batch N: R img/s, M ms per batch

    bench_torch.py bodies MODEL_DIR OUT_DIR
        Writes the request bodies wrk posts (random inputs, seed 1): infer_b1.json (batch-1 KServe
        v2 JSON), infer_b1.bin and infer_b64.bin with their .hdrlen (the same batch-1 input, and a
        batch of 64, in Triton's binary tensor extension: JSON header then raw little-endian
        float32, binary outputs), and expected_b1.json (PyTorch's logits for the batch-1 input, to
        check every server answers the same).

    bench_torch.py check URL MODEL EXPECTED_JSON BODY
        POSTs BODY to URL/v2/models/MODEL/infer once and checks the logits match EXPECTED_JSON
        within 1e-4 relative; exits 1 otherwise.
"""

import argparse
import json
import os
import sys
import time
import urllib.request

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
from export_model import export, load_model  # noqa: E402
from notebook_models import CNNBN  # noqa: E402

def export_cnnbn(out_dir):
    with open(os.path.join(ROOT, "config", "models", "cnn_bn", "model.json")) as f:
        ref = json.load(f)
    torch.manual_seed(0)
    net = CNNBN()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    net.eval()
    extra = {"dynamic_batching": ref["dynamic_batching"]} if "dynamic_batching" in ref else None
    export(net, out_dir, "cnn_bn", ref["input"]["shape"], labels=ref["output"].get("labels"),
           max_batch_size=ref.get("max_batch_size"), preprocess=ref.get("preprocess"),
           weights=True, extra=extra)
    print(f"exported cnn_bn with weights to {out_dir}")


def frozen(folder, batch):
    with open(os.path.join(folder, "model.json")) as f:
        shape = json.load(f)["input"]["shape"]
    model = load_model(folder).eval()
    x = torch.randn([batch] + list(shape))
    with torch.no_grad():
        scripted = torch.jit.script(model)
        fm = torch.jit.optimize_for_inference(torch.jit.freeze(scripted))
    return fm, x


def engine(args):
    torch.set_num_threads(args.threads)
    for folder in args.models:
        with open(os.path.join(folder, "model.json")) as f:
            name = json.load(f)["name"]
        for batch in args.batches:
            fm, x = frozen(folder, batch)
            best = None
            with torch.no_grad():
                # warm-up: the first calls run the profiling executor's passes
                warm = time.perf_counter() + min(0.5, args.seconds / 4)
                for i in range(1000000):
                    fm(x)
                    if i >= 4 and time.perf_counter() >= warm:
                        break
                for _ in range(args.repeats):
                    n = 0
                    start = time.perf_counter()
                    deadline = start + args.seconds
                    while True:
                        fm(x)
                        n += 1
                        now = time.perf_counter()
                        if now >= deadline:
                            break
                    if best is None or (now - start) / n < best[0] / best[1]:
                        best = (now - start, n)
            elapsed, n = best
            print(f"torch {name} batch {batch}: {n * batch / elapsed:.1f} img/s, "
                  f"{1e3 * elapsed / n:.3f} ms per batch ({n} batches, best of {args.repeats})",
                  flush=True)


def bodies(folder, out_dir):
    with open(os.path.join(folder, "model.json")) as f:
        doc = json.load(f)
    shape = doc["input"]["shape"]
    name = doc["input"]["name"]
    rng = np.random.default_rng(1)
    x1 = rng.standard_normal([1] + shape).astype(np.float32)
    x64 = rng.standard_normal([64] + shape).astype(np.float32)
    os.makedirs(out_dir, exist_ok=True)
    body = {"inputs": [{"name": name, "shape": [1] + shape, "datatype": "FP32",
                        "data": [float(v) for v in x1.ravel()]}]}
    with open(os.path.join(out_dir, "infer_b1.json"), "w") as f:
        json.dump(body, f, separators=(",", ":"))
    for n, x in ((1, x1), (64, x64)):
        raw = x.astype("<f4").tobytes()
        header = json.dumps({"inputs": [{"name": name, "shape": [n] + shape, "datatype": "FP32",
                                         "parameters": {"binary_data_size": len(raw)}}],
                             "outputs": [{"name": doc["output"]["name"],
                                          "parameters": {"binary_data": True}}]},
                            separators=(",", ":")).encode()
        with open(os.path.join(out_dir, f"infer_b{n}.bin"), "wb") as f:
            f.write(header + raw)
        with open(os.path.join(out_dir, f"infer_b{n}.hdrlen"), "w") as f:
            f.write(str(len(header)))
    model = load_model(folder).eval()
    with torch.no_grad():
        y = model(torch.from_numpy(x1))
    with open(os.path.join(out_dir, "expected_b1.json"), "w") as f:
        json.dump(y.ravel().tolist(), f)


def check(url, model, expected_path, body_path):
    with open(expected_path) as f:
        want = np.array(json.load(f), dtype=np.float64)
    with open(body_path, "rb") as f:
        data = f.read()
    req = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=data,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        doc = json.load(r)
    got = np.array(doc["outputs"][0]["data"], dtype=np.float64).ravel()
    err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    scale = max(1.0, float(np.abs(want).max()))
    ok = err <= 1e-4 * scale
    print(f"{url} {model}: max |difference| from PyTorch {err:.2e} (scale {scale:.3g}): "
          f"{'ok' if ok else 'MISMATCH'}")
    return 0 if ok else 1


def main(argv=None):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export-cnnbn")
    e.add_argument("out")
    g = sub.add_parser("engine")
    g.add_argument("--threads", type=int, required=True)
    g.add_argument("--seconds", type=float, default=1.0, help="per repetition")
    g.add_argument("--repeats", type=int, default=3, help="report the best repetition")
    g.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 16, 64])
    g.add_argument("models", nargs="+")
    b = sub.add_parser("bodies")
    b.add_argument("model")
    b.add_argument("out")
    c = sub.add_parser("check")
    c.add_argument("url")
    c.add_argument("model")
    c.add_argument("expected")
    c.add_argument("body")
    args = p.parse_args(argv)
    if args.cmd == "export-cnnbn":
        export_cnnbn(args.out)
    elif args.cmd == "engine":
        engine(args)
    elif args.cmd == "bodies":
        bodies(args.model, args.out)
    else:
        return check(args.url, args.model, args.expected, args.body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
