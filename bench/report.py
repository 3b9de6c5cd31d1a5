#!/usr/bin/python3
"""report.py - the benchmark's markdown report (bench/results.md) from the figures bench/run.py
measured, with every target of issues 4, 9 and 11 checked.

    /usr/bin/python3 bench/report.py [RESULTS_JSON]   (default: build/bench/results.json)
        prints the report again from a run's figures, e.g. after changing this file.
"""

import json
import os
import sys

# The targets, as the issues state them.
BG_LIMIT = 20                # % of all CPUs used by others that marks a figure as disturbed
SERVER_SHARE = 0.8           # issue 11: server req/s >= 80% of the engine alone at 16 and 64 conns
ONE_CLIENT_SLACK_MS = 0.15   # issue 11: one client's p50 <= engine batch-1 time + 0.15 ms
DECODE_SPEEDUP = 3.0         # issue 11: scaled JPEG decoding >= 3x stb_image's full decode
HEALTH_P99_MS = 1.0          # issue 11: health stays sub-millisecond under image load
KUBELET_TIMEOUT_MS = 1000.0  # Kubernetes' default liveness probe timeout
ZOO_VS_TORCH = {1: 1.4, 16: 1.1}  # issue 9: convserve against PyTorch at batch 1 and 16
ZOO_PEAK_SHARE = 0.75        # issue 9: resnet18 at batch 16 against the FMA peak
ZOO_HTTP_SHARE = 0.9         # issue 9: through HTTP at batch 16 against the engine alone
PEER_RATIO_NOW = "10.7x"     # issue 11: convserve against the FastAPI peer at 64 connections, then


def fmt(x, digits=None):
    if x is None:
        return "-"
    if digits is not None:
        return f"{x:.{digits}f}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"


def ratio(a, b):
    return f"{a / b:.1f}x" if a and b else "-"


def pct(a, b):
    return f"{100 * a / b:.0f}%" if a and b else "-"


def met(ok):
    return "report" if ok is None else ("yes" if ok else "**no**")


def errs(r):
    return ", ".join(f"{v} {k}" for k, v in r["errors"].items()) or "0"


def table(head, align, rows):
    return (["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""])


class Report:
    def __init__(self, R):
        self.R = R
        self.out = []
        self.targets = []  # (issue, target, measured, met or None for "report")

    def target(self, issue, what, measured, ok):
        self.targets.append((issue, what, measured, ok))

    # -- sections --------------------------------------------------------------------------------
    def engine(self):
        E, m = self.R["engine"], self.R["meta"]

        def get(model, prec, b):
            return next(r for r in E["rows"]
                        if (r["model"], r["prec"], r["batch"]) == (model, prec, b))

        def torch(model, b):
            return next((r for r in E["torch"] if (r["model"], r["batch"]) == (model, b)), None)
        rows = []
        for model in ("cnn_bn", "digits"):
            for b in (1, 16, 64):
                f, h, t = get(model, "f32", b), get(model, "bf16", b), torch(model, b)
                tr = t and t["img_s"]
                hs = fmt(h["img_s"])
                if h["precision"] != "bf16":  # the CPU cannot, and the engine said so
                    hs += f" (ran {h['precision']})"
                rows.append([model, b, fmt(f["img_s"]), f"{f['ms']:.3f}", hs, f"{h['ms']:.3f}",
                             fmt(tr), fmt(t and t["ms"], 3), ratio(f["img_s"], tr),
                             ratio(h["img_s"], tr)])
        self.out += ["## 1. Engine alone against PyTorch", "",
                     "![engine against PyTorch](charts/engine.png)", "",
                     f"Images/s; PyTorch 1.13 frozen + optimize_for_inference, fp32, {m['cpus']} "
                     f"threads, same weights; bg: convserve up to "
                     f"{max(r['bg'] for r in E['rows'])}%, PyTorch {E['torch_bg']}%.", ""]
        self.out += table(["model", "batch", "convserve f32", "ms/batch", "convserve bf16",
                           "ms/batch", "PyTorch f32", "ms/batch", "f32 / PyTorch",
                           "bf16 / PyTorch"], ["---"] + ["---:"] * 9, rows)
        e64, e1 = get("cnn_bn", "f32", 64), get("cnn_bn", "f32", 1)
        self.target("4", "engine cnn_bn f32 batch 64 >= 5,500 img/s", fmt(e64["img_s"]),
                    e64["img_s"] >= 5500)
        self.target("4", "engine cnn_bn f32 batch 1 <= 0.8 ms", f"{e1['ms']:.3f} ms",
                    e1["ms"] <= 0.8)

    def zoo(self):
        Z = self.R["zoo"]
        peak = Z["peak_gflops"]
        rows = []
        for r in Z["rows"]:
            share = r["gflops"] / peak
            rows.append([r["net"], f"{Z['flops'][r['net']] / 1e9:.2f}", r["batch"],
                         fmt(r["engine"]), fmt(r["torch"]), f"{r['engine'] / r['torch']:.2f}x",
                         f"{r['gflops']:.1f}", f"{100 * share:.0f}%"])
            want = ZOO_VS_TORCH.get(r["batch"])
            if want:
                self.target("9", f"{r['net']} batch {r['batch']}: engine >= {want}x PyTorch",
                            f"{r['engine'] / r['torch']:.2f}x", r["engine"] >= want * r["torch"])
            if r["net"] == "resnet18" and r["batch"] == 16:
                self.target("9", f"resnet18 batch 16 >= {ZOO_PEAK_SHARE:.0%} of the FMA peak",
                            f"{100 * share:.0f}%", share >= ZOO_PEAK_SHARE)
        self.out += [f"Graph networks (bench/zoo.py): torchvision, random weights, "
                     f"{Z['size']}x{Z['size']}, {Z['threads']} threads, best of {Z['repeats']} "
                     f"run(s) of {Z['seconds']:g} s; {Z['fma']}; bg {Z['bg']}%.", ""]
        self.out += table(["network", "GFLOP per image", "batch", "convserve img/s",
                           "PyTorch img/s", "convserve / PyTorch", "GFLOP/s", "% of FMA peak"],
                          ["---"] + ["---:"] * 7, rows)
        if not Z.get("http_rows"):
            return
        b = Z["http_batch"]
        rows = []
        for net, h in Z["http_rows"].items():
            eng = next((r["engine"] for r in Z["rows"] if r["net"] == net and r["batch"] == b),
                       None)
            rows.append([net, fmt(h["img_s"]), fmt(h["p50"]), fmt(eng), pct(h["img_s"], eng),
                         fmt(h["inference_ms"]), errs(h), f"{h['bg']}%"])
            self.target("9", f"{net} through HTTP at batch {b} >= {ZOO_HTTP_SHARE:.0%} of the "
                        "engine, 0 errors", pct(h["img_s"], eng),
                        bool(eng) and h["img_s"] >= ZOO_HTTP_SHARE * eng and not h["errors"])
        self.out += [f"Through HTTP: batch {b} with the Triton binary tensor extension, "
                     f"{Z['http_conns']} connections, the server with 1 worker of {Z['threads']} "
                     f"threads, against the engine alone at batch {b}:", ""]
        self.out += table(["network", "HTTP img/s", "p50 ms", "engine img/s", "HTTP / engine",
                           "inference ms per batch", "errors", "bg"],
                          ["---"] + ["---:"] * 7, rows)

    def batches(self):
        B = self.R["batches"]
        rows, tol = B["rows"], f"{B['tolerance']:.0%}"
        self.out += ["## 2. Time per batch for every batch size", "",
                     "![ms per batch against N](charts/batches.png)", "",
                     f"{B['model']}, engine alone, {B['threads']} threads; each figure the median of "
                     f"{B.get('rounds', 1)} processes of {B['seconds']} s (each with its own "
                     f"warm-up and covers); before: revision {B['before_rev'] or '(not available)'} (power-of-two "
                     "splits), after: this tree (the cheapest measured cover); bg up to "
                     f"{max(r['bg'] for r in rows)}%.", ""]
        per = 16 if len(rows) > 24 else len(rows)
        groups = [rows[i:i + per] for i in range(0, len(rows), per)]
        cells = []
        for i in range(per):
            line = []
            for g in groups:
                r = g[i] if i < len(g) else None
                line += ([r["n"], fmt(r["before"], 3), fmt(r["after"], 3)] if r else ["", "", ""])
            cells.append(line)
        self.out += table(["N", "before ms", "after ms"] * len(groups),
                          ["---:"] * 3 * len(groups), cells)
        listed = lambda v: "-" if v is None else (", ".join(map(str, v)) or "none")  # noqa: E731
        self.out += [f"N slower than the next N measured by more than {tol}: before "
                     f"{listed(B['bad_before'])}; after {listed(B['bad_after'])}.", ""]
        self.target("11", f"no batch size slower than the next by more than {tol}",
                    listed(B["bad_after"]), not B["bad_after"])

    def server(self):
        S = self.R["server"]
        self.out += ["## 3. The server against the engine alone", "",
                     "![throughput against latency](charts/latency.png)", "",
                     "![the server as a share of the engine alone](charts/efficiency.png)", "",
                     "cnn_bn, batch-1 KServe v2 JSON (2,352 floats, a 46 kB body), wrk. \"Engine "
                     "alone\" is `convserve-engine bench` at the load's mean executed batch (from "
                     "/metrics, rounded) with the server's threads per worker and environment, as "
                     "many processes at once as the server has workers but no more than the "
                     "connections (one client never keeps two workers busy), img/s summed. Queue "
                     "ms per request and inference ms per batch are the server's own (/metrics).",
                     ""]
        for C in S["configs"]:
            shape = f"{C['instances']} worker(s) x {C['threads']} thread(s)"
            if C.get("same_as"):
                self.out += [f"**{C['name']}**: {shape}, the same as {C['same_as']}; not "
                             "measured again.", ""]
                continue
            extra = [f"{k}={v}" for k, v in C["env"].items()] + ([" ".join(C["flags"])]
                                                                  if C["flags"] else [])
            self.out += [f"**{C['name']}**: {shape}{''.join('; ' + e for e in extra)}.", ""]
            rows = []
            for c in S["connections"]:
                L, G = C["loads"][str(c)], C["engine"][str(c)]
                rows.append([c, fmt(L["rps"]), fmt(L["p50"], 2), fmt(L["p99"], 2), fmt(L["batch"]),
                             f"{fmt(G['img_s'])} ({G['procs']} x batch {G['batch']})",
                             pct(L["rps"], G["img_s"]), fmt(L["queue_ms"], 2),
                             fmt(L["inference_ms"], 2), fmt(L["cpu_ms"], 2), errs(L),
                             f"{L['bg']}%, {G['bg']}%"])
            self.out += table(["connections", "req/s", "p50 ms", "p99 ms", "mean executed batch",
                               "engine alone img/s", "server / engine", "queue ms",
                               "inference ms per batch", "CPU ms per request", "errors",
                               "bg (server, engine)"], ["---:"] * 10 + ["---", "---"], rows)
        measured = [C for C in S["configs"] if not C.get("same_as")]
        for C in measured:
            for c in (16, 64):
                L, G = C["loads"].get(str(c)), C["engine"].get(str(c))
                if L and G:
                    self.target("11", f"{C['name']}: {c} connections >= {SERVER_SHARE:.0%} of the "
                                "engine alone, 0 errors", pct(L["rps"], G["img_s"]),
                                L["rps"] >= SERVER_SHARE * G["img_s"] and not L["errors"])
        rows = []
        for C in measured:
            L, G = C["loads"]["1"], C["engine"]["1"]
            ok = L["p50"] is not None and L["p50"] <= G["ms"] + ONE_CLIENT_SLACK_MS
            diff = f"{L['p50'] - G['ms']:+.2f}" if L["p50"] is not None else "-"
            rows.append([C["name"], fmt(L["p50"], 2), f"{G['ms']:.3f}", diff, met(ok)])
            self.target("11", f"{C['name']}: one client's p50 <= the engine's batch-1 time + "
                        f"{ONE_CLIENT_SLACK_MS} ms", f"{fmt(L['p50'], 2)} vs {G['ms']:.3f} ms", ok)
        self.out += ["One client (1 connection): p50 against the engine's batch-1 time with the "
                     f"same threads (target: at most {ONE_CLIENT_SLACK_MS} ms more).", ""]
        self.out += table(["configuration", "p50 ms", "engine batch 1 ms", "difference ms", "met"],
                          ["---", "---:", "---:", "---:", "---"], rows)
        b1, d = S.get("b1"), next((C for C in measured if C["name"] == "default"), None)
        if b1 and b1["p50"] is not None and d:
            self.out += [f"The same input from one client in the binary tensor extension (no JSON "
                         f"to parse), default configuration: p50 {b1['p50']:.2f} ms against "
                         f"{d['loads']['1']['p50']:.2f} ms as JSON; the engine's batch-1 time "
                         f"{d['engine']['1']['ms']:.3f} ms, the server's inference per batch "
                         f"{fmt(b1['inference_ms'], 2)} ms (JSON: "
                         f"{fmt(d['loads']['1']['inference_ms'], 2)} ms).", ""]
        if "b64" in S:
            e64 = next((r for r in self.R.get("engine", {}).get("rows", [])
                        if (r["model"], r["prec"], r["batch"]) == ("cnn_bn", "f32", 64)), None)
            rows = []
            for label, L, conns, per in (
                    ("cnn_bn batch 1, binary tensor extension", S.get("b1"), 1, 1),
                    ("cnn_bn batch 64, binary tensor extension", S["b64"], S["b64_conns"], 64),
                    ("PNG, PUT /predictions/digits (examples/3.png)", S["img"], S["img_conns"], 1)):
                if L is None:  # a run from before the batch-1 binary load
                    continue
                rows.append([label, conns, fmt(L["rps"]), fmt(L["rps"] * per), fmt(L["p50"], 2),
                             fmt(L["p99"], 2), fmt(L["batch"]), fmt(L["inference_ms"], 2),
                             fmt(L["cpu_ms"], 2), errs(L), f"{L['bg']}%"])
            self.out += ["Other loads on the default configuration:", ""]
            self.out += table(["load", "connections", "req/s", "img/s", "p50 ms", "p99 ms",
                               "mean executed batch", "inference ms per batch",
                               "CPU ms per request", "errors", "bg"],
                              ["---"] + ["---:"] * 8 + ["---", "---:"], rows)
            if e64:
                h64 = S["b64"]["rps"] * 64
                self.target("4", "HTTP binary batch 64 >= 80% of the engine at batch 64",
                            pct(h64, e64["img_s"]), h64 >= 0.8 * e64["img_s"])
        if measured and "16" in measured[0]["loads"]:
            mb = measured[0]["loads"]["16"]["batch"]
            self.target("4", f"{measured[0]['name']}: mean executed batch at 16 connections >= 8",
                        fmt(mb), mb is not None and mb >= 8)

    def peers(self):
        P = self.R["peers"]
        S = self.R.get("server")
        d = next((C for C in S["configs"] if not C.get("same_as")), None) if S else None
        conns = sorted({int(c) for p in P for c in p["loads"]})
        head, align = ["connections"], ["---:"]
        if d:
            head.append(f"convserve ({d['name']}) req/s")
            align.append("---:")
        for p in P:
            head += [f"{p['name']} peer ({p['workers']}x{p['threads']}) req/s", "p50 ms", "p99 ms",
                     "errors", "bg"] + ([f"convserve / {p['name']}"] if d else [])
            align += ["---:", "---:", "---:", "---", "---:"] + (["---:"] if d else [])
        rows = []
        for c in conns:
            cs = d["loads"].get(str(c), {}).get("rps") if d else None
            row = [c] + ([fmt(cs)] if d else [])
            for p in P:
                L = p["loads"][str(c)]
                row += [fmt(L["rps"]), fmt(L["p50"], 2), fmt(L["p99"], 2), errs(L), f"{L['bg']}%"]
                row += [ratio(cs, L["rps"])] if d else []
            rows.append(row)
        self.out += ["The peer, bench/peer_fastapi.py: FastAPI + uvicorn + PyTorch (frozen), the "
                     "same weights and route, under the same load; \"tuned\" runs workers x torch "
                     "threads so that inference cannot starve the event loop, \"plain\" one worker "
                     "with torch on every CPU.", ""]
        self.out += table(head, align, rows)
        if d:
            for p in P:
                if "64" in p["loads"] and "64" in d["loads"]:
                    self.target("11", f"{d['name']} against the {p['name']} peer at 64 "
                                f"connections ({PEER_RATIO_NOW} when the issue was filed)",
                                ratio(d["loads"]["64"]["rps"], p["loads"]["64"]["rps"]), None)
            if "16" in P[0]["loads"] and "16" in d["loads"]:
                a, b = d["loads"]["16"]["rps"], P[0]["loads"]["16"]["rps"]
                self.target("4", f"{d['name']} at 16 connections >= 20x the {P[0]['name']} peer",
                            ratio(a, b), a >= 20 * b)

    def decode(self):
        D = self.R["decode"]
        rows = []
        for kind, name in (("jpeg", "JPEG"), ("png", "PNG")):
            for r in D[kind]:
                speedup = r["stb"] / r["convserve"]
                ours = f"{r['convserve']:.1f}" + (" (libspng)" if kind == "png" else "")
                rows.append([f"{r['image']} {name} ({r['bytes'] // 1024} kB)",
                             f"{r['side']}x{r['side']}", f"{r['stb']:.1f}", ours,
                             f"{r['pil']:.1f}", f"{speedup:.1f}x",
                             f"{r['pil'] / r['convserve']:.2f}x"])
                if kind == "jpeg" and r["side"] == 28:
                    self.target("11", f"{r['image']} JPEG to 28x28 >= {DECODE_SPEEDUP:g}x faster "
                                "than stb_image's full decode", f"{speedup:.1f}x",
                                speedup >= DECODE_SPEEDUP)
        self.out += ["## 4. Photo decoding", "", "![photo decoding](charts/decode.png)", "",
                     "Milliseconds per image to a model input (bench/decode.py; lower is better; "
                     f"photo-like images made by the script); bg {D['bg']}%.", ""]
        self.out += table(["image", "input", "stb_image full decode",
                           "convserve (libjpeg-turbo scaled)", "PIL draft + resize",
                           "stb / convserve", "PIL / convserve"],
                          ["---", "---"] + ["---:"] * 5, rows)
        self.out += ["cnn_bn's logits, scaled against full-resolution JPEG decoding: " + "; ".join(
            f"{g['file']} max |diff| {g['max_abs_diff']:.4f} over a logit range of "
            f"{g['logit_range']:.4f}, same top-1: {g['same_top1']}" for g in D["logits"]) + ".",
            ""]

    def health(self):
        H = self.R["health"]
        idle = H["idle"]
        rows = [["none", 0, "-", "-", idle["n"], fmt(idle.get("p50"), 2),
                 fmt(idle.get("p99"), 2), fmt(idle.get("max"), 2), idle.get("over_1s", 0),
                 idle["failures"], "-"]]
        for L in H["loads"]:
            pr = L["probe"]
            answer = f"{L['status']}" + ("" if L["status"] == 200 else f" ({errs(L)})")
            rows.append([L["label"], L["conns"], fmt(L["rps"]), answer, pr["n"],
                         fmt(pr.get("p50"), 2), fmt(pr.get("p99"), 2), fmt(pr.get("max"), 2),
                         pr.get("over_1s", 0), pr["failures"], f"{L['bg']}%"])
            self.target("11", f"health p99 while {L['conns']} clients upload the {L['short']} < "
                        f"{HEALTH_P99_MS:g} ms", f"{fmt(pr.get('p99'), 2)} ms",
                        pr.get("p99") is not None and pr["p99"] < HEALTH_P99_MS
                        and not pr["failures"])
            self.target("11", f"every health probe then < {KUBELET_TIMEOUT_MS / 1e3:g} s "
                        "(kubelet's timeout)", f"max {fmt(pr.get('max'), 1)} ms",
                        pr.get("max") is not None and pr["max"] < KUBELET_TIMEOUT_MS
                        and not pr["failures"])
        self.out += ["## 5. Health probes under image load", "",
                     "![health-probe latency](charts/health.png)", "",
                     f"`GET /v2/health/live` every {H['interval_ms']:.0f} ms on a new connection "
                     "(as a kubelet probes; Python's http.client, whose own cost shows in the "
                     "first row) while wrk uploads JPEGs to `PUT /predictions/digits`, default "
                     "configuration.", ""]
        self.out += table(["load", "clients", "uploads/s", "upload answer", "probes", "p50 ms",
                           "p99 ms", "max ms", "probes >= 1 s", "failed probes", "bg"],
                          ["---", "---:", "---:", "---"] + ["---:"] * 7, rows)
        for L in H["loads"]:
            self.out.append(f"- `{L['file']}` ({L['bytes']:,} bytes): one upload answered "
                            f"{L['status']}: `{L['answer']}`")
        self.out.append("")

    def resources(self):
        S, P, H = self.R.get("server", {}), self.R.get("peers", []), self.R.get("health")
        mb = lambda k: f"{k / 1024:.0f} MB" if k else "-"  # noqa: E731
        rows = [["RSS idle after startup (all processes)", mb(S.get("rss_idle_kb"))]
                + [mb(p.get("rss_idle_kb")) for p in P],
                ["RSS after the loads", mb(S.get("rss_load_kb"))]
                + [mb(p.get("rss_load_kb")) for p in P]]
        if H:
            rows.append(["RSS after the image uploads of section 5", mb(H.get("rss_after_kb"))]
                        + ["-"] * len(P))
        rows += [["CPU at idle after startup (% of one CPU)", f"{fmt(S.get('cpu_idle'))}%"]
                 + [f"{fmt(p.get('cpu_idle'))}%" for p in P],
                 ["CPU at idle right after the loads", f"{fmt(S.get('cpu_after'))}%"]
                 + ["-"] * len(P)]
        self.out += ["## 6. Resources", ""]
        self.out += table(["", "convserve (default)"] + [f"{p['name']} peer" for p in P],
                          ["---"] + ["---:"] * (1 + len(P)), rows)
        checks = ([f"convserve {C['name']}: {C['check']}" for C in S.get("configs", [])
                   if C.get("check")] + [f"{p['name']} peer: {p['check']}" for p in P
                                         if p.get("check")])
        if checks:
            self.out += ["Answers checked against PyTorch's logits before the loads (the same "
                         f"batch-1 input, within {self.R['meta']['check_tolerance']:g} relative): "
                         + "; ".join(checks) + ".", ""]

    def summary(self):
        """The headline figures, one table, as the README's Performance section shows them."""
        R, rows = self.R, []
        if "engine" in R:
            E = R["engine"]
            f = {r["batch"]: r for r in E["rows"] if (r["model"], r["prec"]) == ("cnn_bn", "f32")}
            t = {r["batch"]: r for r in E["torch"] if r["model"] == "cnn_bn"}
            rows.append(["engine alone, cnn_bn f32, img/s at batch 1 / 16 / 64",
                         f"{fmt(f[1]['img_s'])} ({f[1]['ms']:.3f} ms) / {fmt(f[16]['img_s'])} / "
                         f"{fmt(f[64]['img_s'])}"])
            if t:
                rows.append(["... against PyTorch 1.13 frozen, batch 1 / 64",
                             f"{ratio(f[1]['img_s'], t[1]['img_s'])} / "
                             f"{ratio(f[64]['img_s'], t[64]['img_s'])}"])
        if "zoo" in R:
            Z = R["zoo"]
            for net in dict.fromkeys(r["net"] for r in Z["rows"]):
                rs = [r for r in Z["rows"] if r["net"] == net]
                rows.append([f"{net} 224x224, img/s at batch "
                             + " / ".join(str(r["batch"]) for r in rs) + " (against PyTorch)",
                             " / ".join(f"{fmt(r['engine'])} ({r['engine'] / r['torch']:.2f}x)"
                                        for r in rs)])
            r16 = next((r for r in Z["rows"] if (r["net"], r["batch"]) == ("resnet18", 16)), None)
            if r16:
                rows.append(["resnet18 batch 16, share of the FMA peak",
                             f"{100 * r16['gflops'] / Z['peak_gflops']:.0f}% of "
                             f"{Z['peak_gflops']:.0f} GFLOP/s"])
            for net, h in (Z.get("http_rows") or {}).items():
                eng = next((r["engine"] for r in Z["rows"]
                            if r["net"] == net and r["batch"] == Z["http_batch"]), None)
                rows.append([f"{net} through HTTP, batch {Z['http_batch']} binary, against the "
                             "engine", pct(h["img_s"], eng)])
        if "batches" in R:
            B = R["batches"]
            rows.append([f"batch sizes N slower than N+1 by more than {B['tolerance']:.0%} "
                         "(before / after)",
                         f"{'-' if B['bad_before'] is None else len(B['bad_before'])} / "
                         f"{len(B['bad_after'])} of {len(B['rows'])}"])
        S = R.get("server")
        d = next((C for C in S["configs"] if not C.get("same_as")), None) if S else None
        if d:
            L = d["loads"]
            conns = [c for c in ("1", "16", "64") if c in L]
            rows.append([f"server ({d['name']}, {d['instances']}x{d['threads']}), cnn_bn batch-1 "
                         f"JSON req/s at {' / '.join(conns)} connections",
                         " / ".join(fmt(L[c]["rps"]) for c in conns)])
            rows.append(["... p50 (p99) ms", " / ".join(f"{fmt(L[c]['p50'], 2)} "
                                                     f"({fmt(L[c]['p99'], 2)})" for c in conns)])
            rows.append(["... as a share of the engine alone at the same mean batch",
                         " / ".join(f"{pct(L[c]['rps'], d['engine'][c]['img_s'])} (batch "
                                    f"{fmt(L[c]['batch'])})" for c in conns)])
            rows.append(["one client: p50 against the engine's batch-1 time",
                         f"{fmt(L['1']['p50'], 2)} against {d['engine']['1']['ms']:.3f} ms"])
            best = max((C for C in S["configs"] if not C.get("same_as")),
                       key=lambda C: C["loads"].get("64", {}).get("rps", 0))
            rows.append(["the fastest configuration at 64 connections",
                         f"{best['name']}: {fmt(best['loads']['64']['rps'])} req/s"
                         if "64" in best["loads"] else "-"])
        if d and R.get("peers") and "64" in d["loads"]:
            rows.append(["against the FastAPI + PyTorch peer at 64 connections",
                         " / ".join(f"{ratio(d['loads']['64']['rps'], p['loads']['64']['rps'])} "
                                    f"({p['name']})" for p in R["peers"] if "64" in p["loads"])])
        if "decode" in R:
            r = next((r for r in R["decode"]["jpeg"] if (r["image"], r["side"]) == ("12MP", 28)),
                     None)
            if r:
                rows.append(["12 MP JPEG to 28x28, ms: stb_image full / convserve / PIL draft",
                             f"{r['stb']:.0f} / {r['convserve']:.0f} / {r['pil']:.0f}"])
        if "health" in R:
            for L in R["health"]["loads"]:
                pr = L["probe"]
                rows.append([f"health probe while {L['conns']} clients upload the {L['short']}: "
                             "p50 / p99 / max ms",
                             f"{fmt(pr.get('p50'), 2)} / {fmt(pr.get('p99'), 2)} / "
                             f"{fmt(pr.get('max'), 1)}"])
        if S and S.get("rss_idle_kb"):
            rows.append(["RSS idle / after the loads",
                         f"{S['rss_idle_kb'] / 1024:.0f} / "
                         f"{S.get('rss_load_kb', 0) / 1024:.0f} MB"])
        if not rows:
            return []
        return ["## Summary", ""] + table(["figure", "measured"], ["---", "---:"], rows)

    # -- the whole -------------------------------------------------------------------------------
    def text(self):
        R, m = self.R, self.R["meta"]
        for section in ("engine", "zoo", "batches", "server", "peers", "decode", "health"):
            if section in R:
                getattr(self, section)()
        if "server" in R or "peers" in R:
            self.resources()
        body = self.out
        head = ["# convserve benchmark", "",
                f"{m['date']} · {m['cpu']} · {m['cpus']} CPUs · ISA: {m['isa']} · oneDNN "
                f"(libdnnl-dev) {m['onednn']} · {m['versions']} · wrk {m['wrk']}", "",
                f"{'`--quick`: ' if m['quick'] else ''}HTTP loads of {m['seconds']} s (wrk, one "
                f"thread, loopback); engine figures best of {m['repeats']} run(s) of "
                f"{m['engine_seconds']:g} s. The whole run took {m['wall_s'] / 60:.1f} min ("
                + ", ".join(f"{k} {v:.0f} s" for k, v in m["section_s"].items()) + ")."]
        if m.get("only"):
            head.append(f"Partial run: only {', '.join(m['only'])}.")
        head += ["", f"Background: \"bg\" is the CPU other programs used during a measurement (% "
                 f"of all CPUs); one disturbed by >= {BG_LIMIT}% ran once more and the quieter run "
                 f"was kept ({m['retries_used']} reruns). Load average at the start "
                 f"{' '.join(m['load_start'])}, at the end {' '.join(m['load_end'])}. Busy "
                 f"processes at the start: {m['busy_start']}; at the end: {m['busy_end']}.", ""]
        if R.get("bg_max", 0) >= BG_LIMIT:
            head += [f"**Other programs used up to {R['bg_max']}% of the CPUs during some "
                     "measurements (\"bg\"): those figures are disturbed. Rerun on a quiet machine "
                     "for figures to quote.**", ""]
        for section, why in R.get("failed", {}).items():
            head += [f"**Not measured: {section}: {why}**", ""]
        head += self.summary()
        if self.targets:
            head += ["## Targets", ""]
            head += table(["issue", "target", "measured", "met"], ["---", "---", "---:", "---"],
                          [[i, t, v, met(ok)] for i, t, v, ok in self.targets])
        tail = ["## Commands", "", "```", " ".join(["bench/run.sh"] + m["argv"])]
        tail += R["commands"] + ["```", ""]
        return "\n".join(head + body + tail)


def render(R):
    return Report(R).text()


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    src = argv[0] if argv else os.path.join(os.path.dirname(here), "build", "bench",
                                            "results.json")
    with open(src) as f:
        print(render(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
