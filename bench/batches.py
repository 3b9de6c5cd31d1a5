"""Milliseconds per batch for every batch size, before and after cost-based batch planning.

    /usr/bin/python3 bench/batches.py [--model DIR] [--from 1] [--to 64] [--seconds 0.15]
                                      [--rounds 3] [--before REV] [--build build]
                                      [--out bench/batches]

Runs `convserve-engine bench --sweep A-B` (this tree's engine) and, for comparison, the engine of
git revision REV (default: the last revision that split batches into power-of-two buckets), built
in a temporary worktree, measuring each batch size with `bench --batch N`. Both measure the same
model folder (default: cnn_bn with the shipped random weights, the notebook's network) with the
same threads, interleaved per batch size so that both see the same machine; each figure is the
median of ROUNDS processes (each with its own warm-up, as a server start has). Prints a table, checks
that no batch size costs more than 5% above the next larger one (the engine's promise), and writes
OUT.md and OUT.png (ms per batch against N, both engines).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The engine before cost-based batch planning: main as it was when this benchmark was written.
BEFORE_REV = "5b808c1"
TOLERANCE = 0.05
ROUNDS = 3  # processes per batch size and engine; the median is the figure


def build_before(rev, where):
    """Builds convserve-engine at `rev` in a temporary worktree; returns the binary's path."""
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", where, rev], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    build = os.path.join(where, "build")
    subprocess.run(["cmake", "-S", where, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
                    "-DBUILD_TESTING=OFF"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build, "-j", str(os.cpu_count() or 2), "--target",
                    "convserve-engine"], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(build, "convserve-engine")


def time_one(engine, model, n, seconds, threads, sweep):
    """ms per batch of n; `sweep` engines take --sweep n-n, older ones --batch n."""
    args = [engine, "bench", model, "--seconds", str(seconds), "--threads", str(threads)]
    args += ["--sweep", f"{n}-{n}"] if sweep else ["--batch", str(n)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    if sweep:
        return float(out.strip().splitlines()[-1].split()[1])
    return float(re.search(r"([0-9.]+) ms per batch", out).group(1))


def time_median(engine, model, n, seconds, threads, sweep, rounds=ROUNDS):
    """The median of `rounds` runs of time_one, each a process of its own: every process measures
    its own warm-up and picks its own covers, so a choice that one disturbed warm-up spoiled and a
    run that another program preempted count once, not as the figure."""
    ts = sorted(time_one(engine, model, n, seconds, threads, sweep) for _ in range(rounds))
    return ts[len(ts) // 2]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.path.join(ROOT, "config", "models", "cnn_bn"))
    p.add_argument("--from", dest="lo", type=int, default=1)
    p.add_argument("--to", dest="hi", type=int, default=64)
    p.add_argument("--seconds", type=float, default=0.15, help="per round")
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--before", default=BEFORE_REV)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--out", default=os.path.join(HERE, "batches"))
    args = p.parse_args(argv)

    after = os.path.join(args.build, "convserve-engine")
    if not os.path.exists(after):
        sys.exit(f"batches: build {after} first (cmake --build {args.build})")
    tmp = tempfile.mkdtemp(prefix="convserve-before-")
    try:
        before = build_before(args.before, os.path.join(tmp, "tree"))
        rows = []
        for n in range(args.lo, args.hi + 1):
            b = time_median(before, args.model, n, args.seconds, args.threads, False, args.rounds)
            a = time_median(after, args.model, n, args.seconds, args.threads, True, args.rounds)
            rows.append((n, b, a))
            print(f"{n:3d}  before {b:8.3f} ms  after {a:8.3f} ms", flush=True)
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force",
                        os.path.join(tmp, "tree")], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)

    def inversions(col):
        return [(rows[i][0], rows[i][col], rows[i + 1][col]) for i in range(len(rows) - 1)
                if rows[i][col] > rows[i + 1][col] * (1 + TOLERANCE)]

    bad_before, bad_after = inversions(1), inversions(2)
    model = os.path.basename(os.path.normpath(args.model))
    lines = [f"# ms per batch, {model}, {args.threads} threads: before ({args.before}, power-of-two "
             f"splits) and after (cost-based cover)", "",
             "| N | before ms | after ms | after / before |", "|---:|---:|---:|---:|"]
    lines += [f"| {n} | {b:.3f} | {a:.3f} | {a / b:.2f} |" for n, b, a in rows]
    lines += ["", f"N slower than N+1 by more than {TOLERANCE:.0%}: before {len(bad_before)} "
              f"({', '.join(str(n) for n, _, _ in bad_before) or 'none'}), after "
              f"{len(bad_after)} ({', '.join(str(n) for n, _, _ in bad_after) or 'none'})"]
    text = "\n".join(lines) + "\n"
    with open(args.out + ".md", "w") as f:
        f.write(text)
    print(lines[-1])
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
        ns = [r[0] for r in rows]
        ax.plot(ns, [r[1] for r in rows], label=f"before ({args.before}): power-of-two splits",
                color="#b0b0b0", marker=".")
        ax.plot(ns, [r[2] for r in rows], label="after: cheapest measured cover", color="#1f6fb4",
                marker=".")
        ax.set_xlabel("batch size N")
        ax.set_ylabel("ms per batch")
        ax.set_title(f"{model}: time per batch, engine only, {args.threads} threads")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
        fig.tight_layout()
        fig.savefig(args.out + ".png")
    except ImportError:
        print("batches: python3-matplotlib is missing; no chart", file=sys.stderr)
    print(f"wrote {args.out}.md and {args.out}.png")
    return 1 if bad_after else 0


if __name__ == "__main__":
    sys.exit(main())
