"""Graph networks side by side: convserve's engine against PyTorch and against the FMA peak.

    /usr/bin/python3 bench/zoo.py [--nets resnet18,mobilenet_v2] [--batches 1,16] [--size 224]
                                  [--seconds 2] [--repeats 3] [--threads T] [--build build]
                                  [--http] [--out bench/zoo] [--json FILE]

For each torchvision network (random weights, seed 0, exported by tools/export_model.py into
BUILD/bench/zoo/NAME, so both run the same weights) and batch size, measures in one run,
interleaved: `convserve-engine bench` (img/s, best of R runs of S seconds) and PyTorch 1.13 on the
same module (torch.jit.freeze + optimize_for_inference, torch.set_num_threads(T), best of R). Also
measures the machine's FMA peak (build/bench_fma), counts each network's FLOPs (2 per
multiply-add of its convolutions and linears) and prints the fraction of the peak reached. With
--http it also serves the networks with the real server and posts batch-16 requests with the
Triton binary tensor extension through wrk, against the engine alone at batch 16. Writes OUT.md,
and with --json the same figures for bench/run.py.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import torch  # noqa: E402
import torchvision  # noqa: E402

from export_model import export  # noqa: E402

HTTP_BATCH = 16


def make_net(name):
    torch.manual_seed(0)
    return getattr(torchvision.models, name)().eval()


def flops(net, size):
    """2 x multiply-adds of every Conv2d and Linear for one [1, 3, size, size] image."""
    total = [0]

    def conv(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total[0] += 2 * out.numel() * k

    def linear(m, inp, out):
        total[0] += 2 * out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in net.modules()
              if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total[0]


def torch_rate(net, batch, size, seconds, repeats):
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        f = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(net)))
        for _ in range(3):
            f(x)
        best = 0.0
        for _ in range(repeats):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                f(x)
                n += 1
            best = max(best, n * batch / (time.perf_counter() - t0))
    return best


def engine_rate(engine, folder, batch, seconds, repeats, threads):
    best = 0.0
    for _ in range(repeats):
        out = subprocess.run([engine, "bench", folder, "--batch", str(batch), "--seconds",
                              str(seconds), "--threads", str(threads)],
                             check=True, capture_output=True, text=True).stdout
        best = max(best, float(re.search(r"([0-9.]+) img/s", out).group(1)))
    return best


def fma_peak(build, threads):
    out = subprocess.run([os.path.join(build, "bench_fma"), "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"peak ([0-9.]+) GFLOP/s", out).group(1)), out.strip()


def http_rate(build, zoo, nets, size, seconds, threads, work):
    """img/s of batch-16 binary-tensor requests through the server, per network."""
    port = 18000 + os.getpid() % 1000
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen([os.path.join(build, "convserve"), "--models", zoo, "--port",
                               str(port), "--instances", "1", "--infer-threads", str(threads),
                               "--max-body-bytes", str(256 << 20), "--log-level", "warn"],
                              stderr=log)
    rates = {}
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.5)
        for name in nets:
            x = torch.randn(HTTP_BATCH, 3, size, size).numpy().astype("<f4").tobytes()
            header = json.dumps({"inputs": [{"name": "input", "shape": [HTTP_BATCH, 3, size, size],
                                             "datatype": "FP32",
                                             "parameters": {"binary_data_size": len(x)}}],
                                 "outputs": [{"name": "logits",
                                              "parameters": {"binary_data": True}}]},
                                separators=(",", ":")).encode()
            body = os.path.join(work, f"{name}.bin")
            with open(body, "wb") as f:
                f.write(header + x)
            env = dict(os.environ, BENCH_BODY=body, BENCH_CONTENT_TYPE="application/octet-stream",
                       BENCH_HEADER_LENGTH=str(len(header)))
            url = f"http://127.0.0.1:{port}/v2/models/{name}/infer"
            out = subprocess.run(["wrk", "-t1", "-c2", f"-d{seconds}s", "--timeout", "30s",
                                  "--latency", "-s", os.path.join(HERE, "post.lua"), url],
                                 env=env, check=True, capture_output=True, text=True).stdout
            m = re.search(r"BENCH requests=(\d+) duration_us=(\d+).*non2xx=(\d+)", out)
            req, dur, bad = int(m.group(1)), int(m.group(2)), int(m.group(3))
            rates[name] = (req * HTTP_BATCH / (dur / 1e6), bad)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    return rates


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", default="resnet18,mobilenet_v2")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--http", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "zoo"))
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    nets = args.nets.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    engine = os.path.join(args.build, "convserve-engine")
    zoo = os.path.join(args.build, "bench", "zoo")
    os.makedirs(zoo, exist_ok=True)

    peak, fma_line = fma_peak(args.build, args.threads)
    print(fma_line, flush=True)
    rows, net_flops = [], {}
    for name in nets:
        net = make_net(name)
        folder = os.path.join(zoo, name)
        export(net, folder, name, [3, args.size, args.size], max_batch_size=max(batches + [16]))
        net_flops[name] = flops(net, args.size)
        for b in batches:
            e = engine_rate(engine, folder, b, args.seconds, args.repeats, args.threads)
            t = torch_rate(net, b, args.size, args.seconds, args.repeats)
            gflops = e * net_flops[name] / 1e9
            rows.append((name, b, e, t, gflops))
            print(f"{name} batch {b}: convserve {e:.1f} img/s, PyTorch {t:.1f} img/s "
                  f"({e / t:.2f}x); {gflops:.1f} GFLOP/s = {100 * gflops / peak:.0f}% of the "
                  f"{peak:.1f} GFLOP/s FMA peak", flush=True)
    http = {}
    if args.http:
        with tempfile.TemporaryDirectory() as work:
            http = http_rate(args.build, zoo, nets, args.size, max(args.seconds * 5, 10),
                             args.threads, work)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    flags = open("/proc/cpuinfo").read()
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile")
                    if f" {f}" in flags)
    lines = [f"# Graph networks: convserve engine vs PyTorch 1.13 vs the FMA peak", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu} ({isa}), "
             f"{args.threads} threads, {args.size}x{args.size} input, best of {args.repeats} runs "
             f"of {args.seconds:g} s. {fma_line}.", "",
             "| network | GFLOP per image | batch | convserve img/s | PyTorch img/s | ratio | "
             "% of FMA peak |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, b, e, t, g in rows:
        lines.append(f"| {name} | {net_flops[name] / 1e9:.2f} | {b} | {e:.1f} | {t:.1f} | "
                     f"{e / t:.2f}x | {100 * g / peak:.0f}% |")
    if http:
        lines += ["", f"Through HTTP (batch {HTTP_BATCH}, Triton binary tensor extension, 2 "
                  "connections, wrk):", "", "| network | HTTP img/s | engine img/s at batch 16 | "
                  "HTTP / engine | non-2xx |", "|---|---:|---:|---:|---:|"]
        for name in nets:
            eng = next((e for n, b, e, _, _ in rows if n == name and b == HTTP_BATCH), None)
            rate, bad = http[name]
            ratio = f"{rate / eng:.0%}" if eng else "-"
            lines.append(f"| {name} | {rate:.1f} | {eng or 0:.1f} | {ratio} | {bad} |")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "size": args.size, "seconds": args.seconds,
                       "repeats": args.repeats, "peak_gflops": peak, "fma": fma_line,
                       "flops": net_flops,
                       "rows": [{"net": n, "batch": b, "engine": e, "torch": t, "gflops": g}
                                for n, b, e, t, g in rows],
                       "http": {n: {"img_s": r, "non2xx": bad} for n, (r, bad) in http.items()}},
                      f, indent=1)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
