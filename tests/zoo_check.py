"""Cross-check of the C engine against PyTorch on torchvision's classification networks.

    /usr/bin/python3 tests/zoo_check.py --runner build/tests/test_networks [--nets a,b,c | --all]

Each network is built by torchvision 0.14 with random weights (no download), given random BatchNorm
running statistics and affine parameters around the real activation scale (tools/cases.py
calibrate_batchnorm) and a final layer scaled so that the logits are of order 1 (scale_output),
exported by tools/export_model.py with input shape [3, -1, -1] (any H and W) into a temporary
folder, and given cases at batch 1, 2 and 3 at two input sizes (64x64 and 80x96; larger where a
network needs it, e.g. inception_v3). The folder is read back with the Python reader (load_model),
which must reproduce PyTorch's float32 outputs within 1e-4; the cases' outputs are then replaced by
the float64 result, and the C runner is called once per ISA setting over all folders (by default
oneDNN's own choice, then ONEDNN_MAX_CPU_ISA=AVX2). The engine must be within 1e-4 of the exact
result, relative to the output's scale, or within 3 times PyTorch's own float32 error where that is
larger (deep residual networks). A table gives, per network: exported or refused (with the
exporter's reason), parameters, layers, the Python reader's error, PyTorch's float32 error and the
engine's error per ISA.

The default set is what CI runs (DEFAULT_NETS). --all takes every classification network of
torchvision (torchvision.models.list_models(module=torchvision.models)) except the HEAVY one,
regnet_y_128gf, which needs more time and memory than a 2-vCPU test machine should spend (--heavy
includes it); it keeps about 12 GB of weights in the temporary folder until the runner is done. Networks
that torch.fx cannot trace or that use ops the engine does not run (shufflenet_v2's channel shuffle,
convnext's LayerNorm and permutes, the transformers) must be refused with a reason
(EXPECTED_REFUSED); any other refusal, and any export of those, fails the check, so the list stays
true. Seeds are fixed (printed); --seed changes them. Exits 77 (CTest's skip code) when
/usr/bin/python3 cannot import torch or torchvision.
"""

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))

try:
    import torch
    import torchvision
except ImportError:
    print("zoo_check: torch or torchvision is not importable by this Python; run it with "
          "/usr/bin/python3 and install Debian's python3-torch and python3-torchvision. Skipping.")
    sys.exit(77)

from cases import (calibrate_batchnorm, check_folder, folder_size, make_cases,  # noqa: E402
                   scale_output, write_cases)
from export_model import SUPPORTED_HELP, ExportError, export, trace_layers  # noqa: E402

DEFAULT_NETS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "squeezenet1_1",
                "densenet121", "efficientnet_b0", "googlenet", "mnasnet0_5", "regnet_y_400mf"]
BATCHES = (1, 2, 3)
# Two input sizes per network (H, W), the second not square; larger ones where a network's
# strides and kernels need them.
SIZES = ((64, 64), (80, 96))
LARGER_SIZES = {"inception_v3": ((80, 80), (96, 112))}
CALIBRATION_BATCH = 16
# Networks torch.fx cannot trace, or whose graphs use ops the engine does not run.
EXPECTED_REFUSED = re.compile(r"^(shufflenet_v2_.*|convnext_.*|vit_.*|swin_.*|maxvit_.*)$")
# Too heavy for --all on a 2-vCPU machine (parameters in millions, and why). The 130-145 M
# networks (vgg, regnet_y_32gf, wide_resnet101_2) take 20 to 70 s each and stay in.
HEAVY = {
    "regnet_y_128gf": (645, "2.6 GB of weights; its export and Python check alone took 117 s and "
                            "10.4 GB of memory on a 2-vCPU machine, before the engine loads it"),
}
ISAS = ("default", "AVX2")
RUNNER_LINE = re.compile(r"^(ok  |FAIL) (\S+) case (\d+) \S+: max error (\S+) \(scale (\S+)\)")


def all_networks():
    models = torchvision.models
    if hasattr(models, "list_models"):
        return sorted(models.list_models(module=models))
    return sorted(n for n in dir(models) if n[0].islower() and callable(getattr(models, n))
                  and not n.startswith("get"))


def construct(name, seed):
    """The network with torchvision's random initialisation."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # googlenet / inception_v3 warn about their init
        return torchvision.models.get_model(name).eval()


def calibrate(net, name, seed):
    """Calibrated random BatchNorm statistics and output scale; returns the generator to go on
    with (for the cases)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = LARGER_SIZES.get(name, SIZES)[1]
    calibration = torch.randn(CALIBRATION_BATCH, 3, h, w, generator=gen)
    calibrate_batchnorm(net, calibration, gen)
    scale_output(net, calibration)
    return gen


# The engine is judged against the exact result, not against PyTorch's float32: every case's output
# is recomputed in float64 and stored as the reference (rounded to float32) once the Python reader
# has reproduced PyTorch's float32 outputs. PyTorch's own float32 error against it (its "noise")
# says how well float32 can do on this random network: well under 1e-5 of the output's scale for
# most, up to 1.3e-4 for resnet152, whose residual stream grows through 50 blocks. The engine
# passes when its error is within ENGINE_TOL of the scale, or within ENGINE_NOISE_FACTOR times
# PyTorch's noise where that is larger: as close to the exact answer as PyTorch's float32, give or
# take the rounding of its folded BatchNorm and its own summation order.
ENGINE_TOL = 1e-4
ENGINE_NOISE_FACTOR = 3.0
# A fixture whose float32 noise is above this (a random network that amplifies rounding) could not
# tell a correct engine from a wrong one: it fails as a fixture.
FLOAT64_NOISE_MAX = 1e-3
# The runner's own tolerance: it only has to report every case (errors are judged here), so NaN,
# a wrong shape, a failed run or a crash still fail it.
RUNNER_TOL = 1e6


def exact_outputs(net, cases):
    """Each case's output in float64 (rounded to float32 for the file) and PyTorch's float32
    error against it, relative to the output's scale, as the C runner measures it."""
    exact_net = copy.deepcopy(net).double()
    exact, noise = {}, 0.0
    with torch.no_grad():
        for key in sorted(k for k in cases if k.startswith("input.")):
            out = "output." + key.split(".", 1)[1]
            y = exact_net(cases[key].double())
            noise = max(noise, float((cases[out].double() - y).abs().max()) /
                        max(1.0, float(y.abs().max())))
            exact[out] = y.to(torch.float32).contiguous()
    return exact, noise


def engine_bound(r):
    return max(ENGINE_TOL, ENGINE_NOISE_FACTOR * r.fp64_err)


def net_seed(base, name):
    return base * 1_000_003 + zlib.crc32(name.encode()) % 1_000_000


class Result:
    def __init__(self, name, seed):
        self.name, self.seed = name, seed
        self.status = "?"  # exported, refused, skipped, ERROR
        self.reason = ""
        self.params = 0
        self.layers = 0
        self.size = 0
        self.python_err = None
        self.fp64_err = None  # PyTorch float32 against float64, relative: the fixture's own noise
        self.engine_err = {}  # ISA -> max relative error over the cases, against float64
        self.engine_cases = {}  # ISA -> cases the runner reported
        self.cases = 0
        self.seconds = 0.0
        self.path = None


def export_net(name, folder, base_seed):
    r = Result(name, net_seed(base_seed, name))
    start = time.time()
    try:
        net = construct(name, r.seed)
        r.params = sum(p.numel() for p in net.parameters())
        trace_layers(net, [3, -1, -1])  # a refusal costs no calibration
        gen = calibrate(net, name, r.seed)
        result = export(net, os.path.join(folder, name), name, [3, -1, -1])
    except ExportError as e:
        r.status, r.reason = "refused", str(e)
        r.seconds = time.time() - start
        return r
    r.path = os.path.join(folder, name)
    r.layers = len(result.layers)
    shapes = [[n, 3, h, w] for h, w in LARGER_SIZES.get(name, SIZES) for n in BATCHES]
    cases = make_cases(net, shapes, gen)
    metadata = {"seed": str(r.seed), "network": name}
    write_cases(r.path, cases, metadata)
    r.python_err = check_folder(r.path)
    exact, r.fp64_err = exact_outputs(net, cases)
    cases.update(exact)
    write_cases(r.path, cases, dict(metadata, reference="float64"))
    r.cases = len(shapes)
    r.size = folder_size(r.path)
    r.status = "exported"
    r.seconds = time.time() - start
    return r


def run_runner(runner, results, isa):
    """One call of the C runner over every exported folder; returns its exit code and fills each
    result's engine error for this ISA from the runner's lines."""
    by_path = {r.path: r for r in results if r.path}
    env = dict(os.environ)
    if isa != "default":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    print(f"zoo_check: {runner} over {len(by_path)} folders, ISA {isa}", flush=True)
    proc = subprocess.Popen([runner, "--no-reference", "--tol", f"{RUNNER_TOL:g}"] + list(by_path),
                            stdout=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        sys.stdout.write(line)
        m = RUNNER_LINE.match(line)
        if m and m.group(2) in by_path:
            r = by_path[m.group(2)]
            err = float(m.group(4)) / max(1.0, float(m.group(5)))
            r.engine_err[isa] = max(r.engine_err.get(isa, 0.0), err)
            r.engine_cases[isa] = r.engine_cases.get(isa, 0) + 1
    sys.stdout.flush()
    return proc.wait()


def table(results, isas):
    head = ["network", "result", "params", "layers", "python err", "PyTorch fp32 err"] + \
        [f"engine {i}" for i in isas]
    rows = []
    for r in results:
        engine = [f"{r.engine_err[i]:.1e}" if i in r.engine_err else "-" for i in isas]
        py = f"{r.python_err:.1e}" if r.python_err is not None else "-"
        params = f"{r.params / 1e6:.1f} M" if r.params else (f"{HEAVY[r.name][0]} M"
                                                              if r.name in HEAVY else "-")
        f64 = f"{r.fp64_err:.1e}" if r.fp64_err is not None else "-"
        rows.append([r.name, r.status, params, str(r.layers or "-"), py, f64] + engine)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(head, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    notes = [f"- {r.name}: {r.status}: {r.reason.replace(SUPPORTED_HELP, '').rstrip('. ')}"
             for r in results if r.reason]
    return "\n".join(lines + [""] + notes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runner", help="the C test binary (build/tests/test_networks)")
    p.add_argument("--nets", help=f"comma-separated networks (default: {','.join(DEFAULT_NETS)})")
    p.add_argument("--all", action="store_true",
                   help="every classification network of torchvision but the heavy ones")
    p.add_argument("--heavy", action="store_true", help="with --all: the heavy ones too")
    p.add_argument("--isa", default=",".join(ISAS),
                   help="ISA settings to run the engine under: 'default' (oneDNN's choice) and/or "
                        "ONEDNN_MAX_CPU_ISA values (default: default,AVX2)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--out", help="write the folders here and keep them (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder even on success")
    args = p.parse_args(argv)
    if not args.runner and not args.out:
        p.error("give --runner (and/or --out to only export and check in Python)")
    if args.runner and not os.access(args.runner, os.X_OK):
        print(f"zoo_check: runner {args.runner} is not an executable file; build it first "
              "(cmake --build build)", file=sys.stderr)
        return 2
    known = all_networks()
    if args.all:
        names = known
    else:
        names = args.nets.split(",") if args.nets else DEFAULT_NETS
        unknown = [n for n in names if n not in known]
        if unknown:
            p.error(f"unknown networks {', '.join(unknown)}; torchvision has {', '.join(known)}")
    isas = [i for i in args.isa.split(",") if i]

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    folder = args.out or tempfile.mkdtemp(prefix="convserve-zoo-")
    os.makedirs(folder, exist_ok=True)
    print(f"zoo_check: {len(names)} networks, seed {args.seed}, folders in {folder}", flush=True)
    results, problems = [], []
    for name in names:
        if args.all and not args.heavy and name in HEAVY:
            r = Result(name, net_seed(args.seed, name))
            r.status = "skipped"
            r.reason = (f"heavy: {HEAVY[name][0]} M parameters, {HEAVY[name][1]}; run with "
                        "--all --heavy or --nets")
            results.append(r)
            print(f"  {name:<22} skipped (heavy)", flush=True)
            continue
        try:
            r = export_net(name, folder, args.seed)
        except Exception as e:  # noqa: BLE001 - a bug in the exporter or reader: report, go on
            r = Result(name, net_seed(args.seed, name))
            r.status, r.reason = "ERROR", f"{type(e).__name__}: {e}"
        results.append(r)
        expected_refusal = bool(EXPECTED_REFUSED.match(name))
        if r.status == "ERROR":
            problems.append(f"{name}: {r.reason}")
        elif r.status == "refused" and not expected_refusal:
            problems.append(f"{name} was refused, and should export: {r.reason}")
        elif r.status == "exported" and r.fp64_err > FLOAT64_NOISE_MAX:
            problems.append(f"{name}: PyTorch's float32 output is {r.fp64_err:.1e} (relative) from "
                            f"float64, more than {FLOAT64_NOISE_MAX:g}: the random network is too "
                            "ill-conditioned to tell a correct float32 engine from a wrong one")
        elif r.status == "exported" and expected_refusal:
            problems.append(f"{name} exported, but is listed as refused (EXPECTED_REFUSED): "
                            "check it, then update the list")
        detail = (f"{r.layers} layers, {r.params / 1e6:.1f} M params, {r.size / 1e6:.0f} MB, "
                  f"python max error {r.python_err:.1e}, PyTorch float32 against float64 "
                  f"{r.fp64_err:.1e}"
                  if r.status == "exported"
                  else r.reason.split(". ")[0])
        print(f"  {name:<22} {r.status} in {r.seconds:.1f} s (seed {r.seed}): {detail}",
              flush=True)

    exported = [r for r in results if r.status == "exported"]
    runner_failed = []
    if args.runner and exported:
        for isa in isas:
            rc = run_runner(args.runner, results, isa)
            if rc != 0:
                runner_failed.append(f"runner exit {rc} under ISA {isa}")
            for r in exported:
                if r.engine_cases.get(isa, 0) != r.cases:
                    runner_failed.append(f"{r.name}: the runner reported {r.engine_cases.get(isa, 0)}"
                                         f" of {r.cases} cases under ISA {isa}")
                elif not r.engine_err[isa] <= engine_bound(r):
                    runner_failed.append(f"{r.name}: the engine is {r.engine_err[isa]:.1e} "
                                         f"(relative) from float64 under ISA {isa}, more than "
                                         f"{engine_bound(r):.1e} (max of {ENGINE_TOL:g} and "
                                         f"{ENGINE_NOISE_FACTOR:g} x PyTorch's float32 error "
                                         f"{r.fp64_err:.1e})")
    print()
    print(table(results, isas if args.runner else []))
    print()
    if problems or runner_failed:
        for line in problems + runner_failed:
            print(f"zoo_check: FAILED: {line}", file=sys.stderr)
        print(f"zoo_check: folders kept in {folder}; replay one network with --nets NAME "
              f"--seed {args.seed}", file=sys.stderr)
        return 1
    print(f"zoo_check: {len(exported)} networks exported and match PyTorch"
          + (" in the engine" if args.runner else " in the Python reader"))
    if not args.out and not args.keep:
        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
