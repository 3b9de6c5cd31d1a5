#!/usr/bin/python3
"""charts.py - draws the benchmark's PNG charts from the figures bench/run.py wrote.

    /usr/bin/python3 bench/charts.py [RESULTS_JSON] [OUT_DIR]
        (default: build/bench/results.json and bench/charts)

engine.png (engine alone against PyTorch), batches.png (ms per batch against N, before and after),
latency.png (throughput against p50 and p99 latency for every server configuration and the peer),
efficiency.png (the server's req/s as a share of the engine alone at the same batch), decode.png
(photo decoding) and health.png (health-probe latency under image load); each only when its
section was measured. Needs python3-matplotlib.
"""

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OURS = "#1f6fb4"
THEIRS = "#9a9a9a"
OTHER = "#e08a2c"
# One colour per server configuration, in SERVER_CONFIGS order.
PALETTE = ["#1f6fb4", "#2ca25f", "#d95f0e", "#7570b3", "#e7298a", "#66a61e", "#a6761d"]
DPI = 110
BUSY_PCT = 20  # as bench/report.py's BG_LIMIT
KUBELET_TIMEOUT_MS = 1000
CLIP_PCT = 200  # bars above this (a disturbed engine figure) are cut; their label tells the value


def _figure(w=7.2, h=3.8, cols=1):
    fig, ax = plt.subplots(1, cols, figsize=(w, h), dpi=DPI)
    return fig, ax


def _save(fig, folder, name, paths):
    fig.tight_layout()
    path = os.path.join(folder, name)
    fig.savefig(path)
    plt.close(fig)
    paths.append(path)


def _subtitle(R):
    m = R["meta"]
    s = f"{m['cpu']}, {m['cpus']} CPUs, {m['date']}"
    if m.get("quick"):
        s += ", --quick"
    if R.get("bg_max", 0) >= BUSY_PCT:
        s += f"\nbusy machine: other programs used up to {R['bg_max']}% of the CPUs"
    return s


def _grouped_barh(ax, rows, bars):
    """Horizontal bars, one group per row (label, record) from top to bottom, one bar per
    (value of a record, colour, legend label) in `bars`."""
    h = 0.27
    for k, (value, color, name) in enumerate(bars):
        ax.barh([i + (k - 1) * h for i in range(len(rows))], [value(r) for _, r in rows], h,
                color=color, label=name)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([n for n, _ in rows], fontsize=8)
    ax.invert_yaxis()


def _legend_below(ax, ncol=2):
    ax.legend(frameon=False, fontsize=7, ncol=ncol, loc="upper center",
              bbox_to_anchor=(0.5, -0.16))


def engine_chart(R, folder, paths):
    E, Z = R.get("engine"), R.get("zoo")
    rows = []
    if E:
        for m in ("cnn_bn", "digits"):
            for b in (1, 16, 64):
                f = next(r for r in E["rows"]
                         if (r["model"], r["prec"], r["batch"]) == (m, "f32", b))
                t = next((r for r in E["torch"] if (r["model"], r["batch"]) == (m, b)), None)
                rows.append((f"{m}, batch {b}", f["img_s"], t and t["img_s"]))
    if Z:
        for r in Z["rows"]:
            rows.append((f"{r['net']}, batch {r['batch']}", r["engine"], r["torch"]))
    if not rows:
        return
    fig, ax = _figure(h=0.42 * len(rows) + 1.9)
    y = range(len(rows))
    ax.barh([i - 0.2 for i in y], [r[1] for r in rows], 0.4, color=OURS, label="convserve engine")
    ax.barh([i + 0.2 for i in y], [r[2] or 0 for r in rows], 0.4, color=THEIRS,
            label="PyTorch 1.13 frozen")
    for i, (_, a, b) in enumerate(rows):
        if a and b:
            ax.text(a * 1.08, i - 0.2, f"{a / b:.1f}x", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_yticks(list(y))
    ax.set_yticklabels([r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("images per second (log scale), fp32, same threads")
    ax.set_title(f"Engine alone against PyTorch\n{_subtitle(R)}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    _legend_below(ax)
    xmax = max(max(r[1], r[2] or 0) for r in rows)
    ax.set_xlim(right=xmax * 3)
    _save(fig, folder, "engine.png", paths)


def batches_chart(R, folder, paths):
    B = R.get("batches")
    if not B:
        return
    rows = B["rows"]
    fig, ax = _figure()
    ns = [r["n"] for r in rows]
    if B["before_rev"]:
        ax.plot(ns, [r["before"] for r in rows], color=THEIRS, marker=".",
                label=f"before ({B['before_rev']}): power-of-two splits")
    ax.plot(ns, [r["after"] for r in rows], color=OURS, marker=".",
            label="after: cheapest measured cover")
    ax.set_xlabel("batch size N")
    ax.set_ylabel("ms per batch")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{B['model']}: time per batch, engine alone, {B['threads']} threads\n"
                 f"{_subtitle(R)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    _save(fig, folder, "batches.png", paths)


def _measured(R):
    return [(i, C) for i, C in enumerate(R.get("server", {}).get("configs", []))
            if not C.get("same_as")]


def latency_chart(R, folder, paths):
    configs = _measured(R)
    if not configs:
        return
    fig, axes = _figure(w=9.6, h=4.4, cols=2)
    for ax, q in zip(axes, ("p50", "p99")):
        for i, C in configs:
            conns = sorted(C["loads"], key=int)
            x = [C["loads"][c]["rps"] for c in conns]
            y = [C["loads"][c][q] for c in conns]
            ax.plot(x, y, marker="o", ms=3, color=PALETTE[i % len(PALETTE)],
                    label=f"{C['name']} ({C['instances']}x{C['threads']})")
            if i == configs[0][0]:
                for c, xv, yv in zip(conns, x, y):
                    ax.annotate(c, (xv, yv), textcoords="offset points", xytext=(4, -9),
                                fontsize=7, color=PALETTE[i % len(PALETTE)])
        for k, P in enumerate(R.get("peers", [])):
            conns = sorted(P["loads"], key=int)
            ax.plot([P["loads"][c]["rps"] for c in conns], [P["loads"][c][q] for c in conns],
                    marker="s", ms=3, ls="--", color=THEIRS if k == 0 else OTHER,
                    label=f"FastAPI + PyTorch, {P['name']} ({P['workers']}x{P['threads']})")
        ax.set_yscale("log")
        ax.set_xlabel("requests per second")
        ax.set_ylabel(f"{q} latency, ms (log scale)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("p50 (numbers: connections)", fontsize=9)
    axes[1].set_title("p99", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False, fontsize=7)
    conns = R["server"]["connections"]
    fig.suptitle(f"cnn_bn, batch-1 v2 JSON, wrk at {', '.join(map(str, conns))} connections\n"
                 f"{_subtitle(R)}", fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path = os.path.join(folder, "latency.png")
    fig.savefig(path)
    plt.close(fig)
    paths.append(path)


def efficiency_chart(R, folder, paths):
    configs = _measured(R)
    if not configs:
        return
    conns = [str(c) for c in R["server"]["connections"]]
    fig, ax = _figure(h=4.4)
    width = 0.8 / len(configs)
    top = 0
    for k, (i, C) in enumerate(configs):
        vals = [100 * C["loads"][c]["rps"] / C["engine"][c]["img_s"] for c in conns]
        xs = [j + (k - (len(configs) - 1) / 2) * width for j in range(len(conns))]
        shown = [min(v, CLIP_PCT) for v in vals]
        ax.bar(xs, shown, width, color=PALETTE[i % len(PALETTE)],
               label=f"{C['name']} ({C['instances']}x{C['threads']})")
        for x, v, h in zip(xs, vals, shown):
            ax.text(x, h + 1, f"{v:.0f}", ha="center", va="bottom", fontsize=6,
                    rotation=90 if len(configs) > 3 else 0)
        top = max(top, max(shown))
    ax.axhline(80, color="#c0392b", lw=1, ls="--")
    ax.text(len(conns) - 0.5, 81, "target 80%", ha="right", va="bottom", fontsize=7,
            color="#c0392b")
    ax.set_ylim(0, max(110, top * 1.18))
    ax.set_xticks(range(len(conns)))
    ax.set_xticklabels([f"{c} conn." for c in conns])
    ax.set_ylabel("server req/s as % of the engine\nalone at the same mean batch")
    ax.set_title(f"Server against the engine alone, cnn_bn batch-1 JSON\n{_subtitle(R)}",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    _legend_below(ax, ncol=3)
    _save(fig, folder, "efficiency.png", paths)


def decode_chart(R, folder, paths):
    D = R.get("decode")
    if not D:
        return
    rows = [(f"{r['image']} JPEG to {r['side']}x{r['side']}", r) for r in D["jpeg"]]
    rows += [(f"{r['image']} PNG to {r['side']}x{r['side']}", r) for r in D["png"]]
    fig, ax = _figure(h=0.5 * len(rows) + 1.9)
    _grouped_barh(ax, rows, [(lambda r: r["stb"], THEIRS, "stb_image full decode"),
                             (lambda r: r["convserve"], OURS, "convserve (turbo scaled / libspng)"),
                             (lambda r: r["pil"], OTHER, "PIL (draft) + resize")])
    ax.set_xlabel("ms per image to the model input (lower is better)")
    ax.set_title(f"Photo decoding\n{_subtitle(R)}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    _legend_below(ax, ncol=3)
    _save(fig, folder, "decode.png", paths)


def health_chart(R, folder, paths):
    H = R.get("health")
    if not H:
        return
    rows = [("no load", H["idle"])] + [(f"{L['short']},\n{L['conns']} clients", L["probe"])
                                       for L in H["loads"]]
    fig, ax = _figure(h=0.6 * len(rows) + 2.0)
    _grouped_barh(ax, rows, [(lambda r, k=k: r.get(k) or 0, c, k)
                             for k, c in (("p50", OURS), ("p99", OTHER), ("max", "#c0392b"))])
    ax.axvline(KUBELET_TIMEOUT_MS, color="#c0392b", lw=1, ls="--")
    ax.text(KUBELET_TIMEOUT_MS * 0.95, -0.45, "kubelet's timeout, 1 s", fontsize=7,
            color="#c0392b", ha="right")
    low = min((r.get(k) for _, r in rows for k in ("p50", "p99", "max") if r.get(k)), default=1)
    ax.set_xlim(min(0.1, low / 2), 3 * KUBELET_TIMEOUT_MS)
    ax.set_xscale("log")
    ax.set_xlabel("GET /v2/health/live latency, ms (log scale)")
    ax.set_title(f"Health probes under image uploads\n{_subtitle(R)}", fontsize=9)
    ax.grid(axis="x", alpha=0.3, which="both")
    _legend_below(ax, ncol=3)
    _save(fig, folder, "health.png", paths)


def draw(R, folder):
    """Every chart whose figures R holds; returns the files written."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for chart in (engine_chart, batches_chart, latency_chart, efficiency_chart, decode_chart,
                  health_chart):
        chart(R, folder, paths)
    return paths


def main(argv):
    import json
    here = os.path.dirname(os.path.abspath(__file__))
    src = argv[0] if argv else os.path.join(os.path.dirname(here), "build", "bench",
                                            "results.json")
    out = argv[1] if len(argv) > 1 else os.path.join(here, "charts")
    with open(src) as f:
        R = json.load(f)
    for path in draw(R, out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
