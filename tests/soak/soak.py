#!/usr/bin/env python3
"""soak.py - the load and slow-client soak test of convserve, against the real binary on loopback.

Python 3 standard library, plus wrk. Reuses the server and HTTP helpers of
tests/integration/test_server.py. Run by tools/ci/soak.sh; by hand:

    python3 tests/soak/soak.py --binary build/convserve --seconds 120

1. Starts the server (all of --models, --connection-timeout 5), warms it up with wrk, and records
   its RSS (VmRSS), threads and open descriptors while idle.
2. For --seconds, all at once:
   - wrk, 64 connections of good batch-1 KServe v2 JSON requests to digits (tests/soak/infer.lua
     checks every answer);
   - 300 slow connections that never finish a request and 20 clients a second that disconnect
     mid-request (tests/soak/slow_clients.py: one process, one selector);
   - a probe every second: a good request on a new connection, whose answer must be right and
     whose latency is measured.
3. Stops the slow clients, waits past the connection timeout, and measures again: RSS flat
   (end <= start x 1.5 + 20 MB), no thread or descriptor growth, nothing in flight or queued.
4. A second server (--queue-timeout-ms 50 --max-queue-delay-us 10000 --infer-threads 1
   --max-batch-size 1024; digits and cnn_bn): requests queued behind a long batch get 503 "request
   waited N ms in the queue; the limit is 50 ms", in a small deterministic scenario and under a
   flood.
5. SIGTERM to both servers: exit 0, and logs without errors.

Prints a summary table and exits 1 if any criterion fails.
"""
import argparse
import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import test_server as ts  # noqa: E402 - the integration suite's server and HTTP helpers

INFER = "/v2/models/digits/infer"
JSON_HDR = {"Content-Type": "application/json"}
QUEUE_503_RE = re.compile(r"^request waited (\d+) ms in the queue; the limit is 50 ms$")
# What libmicrohttpd prints by itself (MHD_USE_ERROR_LOG, not through the server's logger) when a
# client goes away mid-request or before reading its answer, as the disconnecting clients do.
MHD_CLIENT_NOISE_RE = re.compile(
    r"^(Connection was closed by remote side with incomplete request\.|"
    r"Socket has been disconnected when reading request\.|"
    r"The connection was forcibly closed by remote peer|"
    r"Connection socket is closed when reading request due to the error: .*|"
    r"Failed to send data in request for .*|"
    r"Failed to send the response (headers|body) for the request for `.*'\. Error: .*)$")


def log(msg):
    print("[soak %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def snapshot(pid):
    """VmRSS (kB), Threads and the number of open descriptors of a process."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_kb"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    return out


def percentile(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    return v[max(0, math.ceil(p / 100.0 * len(v)) - 1)]


def mb(kb):
    return "%.1f MB" % (kb / 1024.0)


class Soak:
    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.results = []  # (criterion, value, ok)
        self.figures = {}
        self.procs = []    # helper processes to kill on the way out
        with open(os.path.join(ts.EXAMPLES, "expected.json")) as f:
            self.want3 = json.load(f)["3.png"]["logits"]
        with open(os.path.join(ts.EXAMPLES, "infer_3.json"), "rb") as f:
            self.body = f.read()

    def criterion(self, name, value, ok):
        self.results.append((name, value, bool(ok)))
        log("%s  %s: %s" % ("ok  " if ok else "FAIL", name, value))

    # ---- clients ----------------------------------------------------------------------------

    def probe(self, port):
        """One good request on a new connection: (seconds, error or None)."""
        t0 = time.monotonic()
        try:
            st, h, b = ts.request(port, "POST", INFER, self.body, JSON_HDR, timeout=10)
            dt = time.monotonic() - t0
            if st != 200:
                return dt, "status %d: %s" % (st, ts.short(b))
            ts.close_to(json.loads(b)["outputs"][0]["data"], self.want3, 1e-4, "probe logits")
            return dt, None
        except (OSError, AssertionError, ValueError, KeyError) as e:
            return time.monotonic() - t0, "%s: %s" % (type(e).__name__, e)

    def start_wrk(self, port, seconds, conns):
        env = dict(os.environ, SOAK_BODY=os.path.join(ts.EXAMPLES, "infer_3.json"),
                   SOAK_MODEL="digits")
        cmd = [self.args.wrk, "-t2", "-c%d" % conns, "-d%ds" % seconds, "--timeout", "2s",
               "-s", os.path.join(HERE, "infer.lua"), "http://127.0.0.1:%d%s" % (port, INFER)]
        p = subprocess.Popen(cmd, env=env, cwd=self.workdir, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    @staticmethod
    def wrk_result(p, timeout):
        out = p.communicate(timeout=timeout)[0].decode("utf-8", "replace")
        m = re.search(r"^SOAK_WRK (.*)$", out, re.M)
        if not m:
            raise AssertionError("wrk printed no SOAK_WRK line (exit %s):\n%s" % (p.returncode, out))
        r = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
        bad = re.search(r"^SOAK_WRK_FIRST_BAD (.*)$", out, re.M)
        r["first_bad"] = bad.group(1) if bad else ""
        return r

    def start_slow(self, port):
        cmd = [sys.executable, os.path.join(HERE, "slow_clients.py"), "--port", str(port),
               "--conns", str(self.args.slow_conns), "--disconnect-rate",
               str(self.args.disconnect_rate), "--body", os.path.join(ts.EXAMPLES, "infer_3.json"),
               "--png", os.path.join(ts.EXAMPLES, "3.png"),
               "--max-seconds", str(self.args.seconds + 120)]
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        self.procs.append(p)
        return p

    # ---- phases -----------------------------------------------------------------------------

    def wait_idle_fds(self, pid, want, timeout):
        """Waits until the server has at most `want` descriptors open; returns its snapshot."""
        deadline = time.monotonic() + timeout
        while True:
            snap = snapshot(pid)
            if snap["fds"] <= want or time.monotonic() > deadline:
                return snap
            time.sleep(0.25)

    def main_server(self):
        a = self.args
        srv = ts.Server(a.binary, a.models, self.workdir, "soak",
                        ["--connection-timeout", str(a.connection_timeout)])
        self.servers.append(srv)
        port = srv.wait_ready()
        pid = srv.proc.pid
        log("server pid %d on port %d (connection timeout %d s); warming up %d s" % (
            pid, port, a.connection_timeout, a.warmup))
        idle = snapshot(pid)
        w = self.start_wrk(port, a.warmup, a.wrk_conns)
        warm = self.wrk_result(w, a.warmup + 30)
        expected_fds = idle["fds"]
        start = self.wait_idle_fds(pid, expected_fds, a.connection_timeout + 5)
        time.sleep(1.0)
        start = snapshot(pid)
        log("warm-up: %d requests; at start: RSS %s, %d threads, %d descriptors" % (
            warm["requests"], mb(start["rss_kb"]), start["threads"], start["fds"]))

        # The load: wrk, the slow clients and the probes, all at once.
        slow = self.start_slow(port)
        time.sleep(0.5)
        t0 = time.monotonic()
        w = self.start_wrk(port, a.seconds, a.wrk_conns)
        probes, probe_errors, peak = [], [], dict(start)
        next_probe = next_sample = t0
        next_report = t0 + 15
        while w.poll() is None:
            now = time.monotonic()
            if now >= next_probe:
                dt, err = self.probe(port)
                probes.append(dt)
                if err:
                    probe_errors.append(err)
                    log("probe error: %s" % err)
                next_probe += a.probe_interval
            if now >= next_sample:
                s = snapshot(pid)
                for k in peak:
                    peak[k] = max(peak[k], s[k])
                next_sample += 2.0
            if now >= next_report:
                next_report += 15
                log("%4.0f s: RSS %s, %d threads, %d descriptors, %d probes (last %.1f ms)" % (
                    now - t0, mb(s["rss_kb"]), s["threads"], s["fds"], len(probes),
                    probes[-1] * 1e3 if probes else 0))
            if slow.poll() is not None:
                raise AssertionError("the slow-client process died (exit %s)" % slow.returncode)
            time.sleep(max(0.0, min(next_probe, next_sample) - time.monotonic()))
        load_s = time.monotonic() - t0
        wr = self.wrk_result(w, 30)
        slow.send_signal(signal.SIGTERM)
        sl_out = slow.communicate(timeout=30)[0].decode()
        sl = json.loads(sl_out.strip().splitlines()[-1])
        t_slow_gone = time.monotonic()
        log("load done (%.0f s); slow clients stopped; waiting %d s past the connection timeout" %
            (load_s, a.connection_timeout + 2))
        time.sleep(a.connection_timeout + 2)
        end = self.wait_idle_fds(pid, start["fds"] + a.fd_slack, 5)
        log("at end (%.0f s after the slow clients stopped): RSS %s, %d threads, %d descriptors" %
            (time.monotonic() - t_slow_gone, mb(end["rss_kb"]), end["threads"], end["fds"]))

        # ---- criteria of the main server
        errors = wr["connect"] + wr["read"] + wr["write"] + wr["timeout"]
        self.figures.update(wrk=wr, start=start, end=end, peak=peak, slow=sl, load_s=load_s,
                            probes=probes, warm=warm)
        self.criterion("good clients (wrk, %d connections): every answer 200 and right" %
                       a.wrk_conns,
                       "%d requests (%.0f/s), %d non-2xx, %d wrong bodies, %d socket errors "
                       "(connect %d, read %d, write %d, timeout %d)%s" % (
                           wr["requests"], wr["requests"] / max(load_s, 1e-9), wr["non2xx"],
                           wr["bad"], errors, wr["connect"], wr["read"], wr["write"],
                           wr["timeout"],
                           "; first bad: " + wr["first_bad"] if wr["first_bad"] else ""),
                       wr["requests"] > 0 and wr["non2xx"] == 0 and wr["bad"] == 0 and errors == 0)
        p50 = percentile(probes, 50) * 1e3 if probes else float("nan")
        p99 = percentile(probes, 99) * 1e3 if probes else float("nan")
        self.criterion("probes: right answers, p99 < %d ms" % a.probe_p99_ms,
                       "%d probes, %d errors, p50 %.1f ms, p99 %.1f ms, max %.1f ms%s" % (
                           len(probes), len(probe_errors), p50, p99,
                           max(probes) * 1e3 if probes else float("nan"),
                           "; first error: " + probe_errors[0] if probe_errors else ""),
                       probes and not probe_errors and p99 < a.probe_p99_ms)
        limit = start["rss_kb"] * 1.5 + 20 * 1024
        self.criterion("RSS flat: end <= start x 1.5 + 20 MB",
                       "start %s, end %s (peak %s, limit %s)" % (
                           mb(start["rss_kb"]), mb(end["rss_kb"]), mb(peak["rss_kb"]), mb(limit)),
                       end["rss_kb"] <= limit)
        self.criterion("threads: no growth (slack %d)" % a.thread_slack,
                       "start %d, end %d, peak %d" % (start["threads"], end["threads"],
                                                      peak["threads"]),
                       end["threads"] <= start["threads"] + a.thread_slack)
        self.criterion("descriptors: no growth once the slow clients are gone (slack %d)" %
                       a.fd_slack,
                       "start %d, end %d, peak %d" % (start["fds"], end["fds"], peak["fds"]),
                       end["fds"] <= start["fds"] + a.fd_slack)
        text = ts.metrics_text(port)
        inflight = ts.metric(text, "convserve_inflight_requests")
        queued = sum(float(l.split()[-1]) for l in text.splitlines()
                     if l.startswith("convserve_queue_length{"))
        self.criterion("idle at the end: only the /metrics request in flight, queues empty",
                       "in flight %g, queued %g" % (inflight, queued), (inflight, queued) == (1, 0))

        tmo = a.connection_timeout
        closed = sl["slow_closed_by_server"]
        stalled = closed["stall-headers"] + closed["stall-body"]
        idle_close = sl["stall_idle_at_close"]
        idle_open = sl["stall_idle_open_at_end"]
        worst_idle = max(idle_close.get("max", 0), idle_open.get("max", 0))
        self.criterion("slow connections gone idle are closed by the server and recycled "
                       "(idle <= %d s + 3 s)" % tmo,
                       "%d opened in all; %d stalled ones closed by the server (idle at close: "
                       "%s); longest idle of one still open at the end %.1f s; %d closed within "
                       "1 s of opening; answers seen %s; connect errors %d" % (
                           sl["slow_opened"], stalled, fmt_summary(idle_close),
                           idle_open.get("max", 0), sl["early_closes"], sl["slow_answers"] or "none",
                           sl["slow_connect_errors"]),
                       stalled > 0 and worst_idle <= tmo + 3 and sl["slow_connect_errors"] == 0)
        ages_close = sl["trickle_age_at_close"]
        ages_open = [sl["open_at_end"][k] for k in ("trickle-headers", "trickle-body")]
        worst_age = max([ages_close.get("max", 0)] + [x.get("max", 0) for x in ages_open])
        self.criterion("slow connections that keep trickling are closed within the connection "
                       "timeout (%d s + 3 s): README, --connection-timeout" % tmo,
                       "%d closed by the server (age at close: %s); still open at the end: "
                       "%d, oldest %.1f s" % (
                           closed["trickle-headers"] + closed["trickle-body"],
                           fmt_summary(ages_close), sum(x["n"] for x in ages_open),
                           max(x.get("max", 0) for x in ages_open)),
                       worst_age <= tmo + 3)
        self.criterion("clients disconnecting mid-request",
                       "%d (%s), %d failed to connect" % (
                           sum(sl["disconnects"].values()),
                           ", ".join("%s %d" % kv for kv in sl["disconnects"].items()),
                           sl["disconnect_errors"]),
                       sum(sl["disconnects"].values()) > 0 and sl["disconnect_errors"] == 0)
        self.main = (srv, port)

    def queue_timeout(self):
        """A second server with a 50 ms queue limit: requests queued behind a long batch get 503
        with the exact message; the others are answered."""
        repo = os.path.join(self.workdir, "queue-models")
        os.makedirs(repo)
        for m in ("digits", "cnn_bn"):
            shutil.copytree(os.path.join(self.args.models, m), os.path.join(repo, m))
        srv = ts.Server(self.args.binary, repo, self.workdir, "queue",
                        ["--queue-timeout-ms", "50", "--max-queue-delay-us", "10000",
                         "--infer-threads", "1", "--max-batch-size", "1024"])
        self.servers.append(srv)
        port = srv.wait_ready()
        log("queue server pid %d on port %d (--queue-timeout-ms 50 --max-queue-delay-us 10000 "
            "--infer-threads 1 --max-batch-size 1024)" % (srv.proc.pid, port))

        def binary_req(model, n, c, h, w):
            count = n * c * h * w
            head = {"inputs": [{"name": "input", "shape": [n, c, h, w], "datatype": "FP32",
                                "parameters": {"binary_data_size": 4 * count}}],
                    "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
            body, hdrs = ts.binary_body(head, b"\x00\x00\x00\x3f" * count)  # 0.5
            return model, body, hdrs

        def send(req, out, i, sent=None):
            """One request; sets the event `sent` once the whole body is written."""
            model, body, hdrs = req
            t0 = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("POST", "/v2/models/%s/infer" % model, body, hdrs)
                if sent:
                    sent.set()
                r = conn.getresponse()
                b = r.read()
                st = r.status
                h = {k.lower(): v for k, v in r.getheaders()}
                msg = ts.error_of(st, h, b) if st >= 400 else None
            except (OSError, AssertionError, http.client.HTTPException) as e:
                st, msg = -1, "%s: %s" % (type(e).__name__, e)
            finally:
                conn.close()
                if sent:
                    sent.set()
            out[i] = (st, msg, time.monotonic() - t0)

        # (a) The small scenario, 5 times: a full batch of 1024 samples to cnn_bn (150 to 300 ms
        # on one thread; full, so it starts at once) and, 50 ms after its body is sent, three
        # requests of one sample, which queue behind it and must get 503 when it ends.
        long_req, small_req = binary_req("cnn_bn", 1024, 3, 28, 28), binary_req("cnn_bn", 1, 3, 28, 28)
        scenario_bad, waited, long_ms = [], [], []
        for rnd in range(5):
            out = [None] * 4
            sent = threading.Event()
            ths = [threading.Thread(target=send, args=(long_req, out, 0, sent))]
            ths[0].start()
            sent.wait(30)
            time.sleep(0.05)
            for i in (1, 2, 3):
                ths.append(threading.Thread(target=send, args=(small_req, out, i)))
                ths[-1].start()
            for t in ths:
                t.join(60)
            st0, msg0, dt0 = out[0]
            long_ms.append(dt0 * 1e3)
            if st0 != 200:
                scenario_bad.append("round %d: the long request got %d %s" % (rnd, st0, msg0))
            for st, msg, _ in out[1:]:
                m = QUEUE_503_RE.match(msg or "")
                if st == 503 and m and int(m.group(1)) >= 50:
                    waited.append(int(m.group(1)))
                else:
                    scenario_bad.append("round %d: a queued request got %d %r" % (rnd, st, msg))
        self.criterion("queue timeout: requests queued behind a long batch (cnn_bn) get 503 'request "
                       "waited N ms in the queue; the limit is 50 ms'",
                       "%d of 15 got it (N = %s ms); long requests took %s ms%s" % (
                           len(waited), sorted(waited), [round(x) for x in long_ms],
                           "; " + "; ".join(scenario_bad[:3]) if scenario_bad else ""),
                       not scenario_bad and len(waited) == 15)

        # (b) A flood: 6 clients in a loop for 4 s, each sending 128 to 288 samples to cnn_bn;
        # every answer is 200 or the queue-timeout 503, and both happen.
        stop = time.monotonic() + 4
        counts, odd, lock = {}, [], threading.Lock()

        def flooder(n):
            flood = binary_req("cnn_bn", n, 3, 28, 28)
            out = [None]
            while time.monotonic() < stop:
                send(flood, out, 0)
                st, msg, _ = out[0]
                with lock:
                    if st == 200:
                        counts["200"] = counts.get("200", 0) + 1
                    elif st == 503 and QUEUE_503_RE.match(msg or ""):
                        counts["503 queue timeout"] = counts.get("503 queue timeout", 0) + 1
                    else:
                        odd.append("%d %r" % (st, msg))
        ths = [threading.Thread(target=flooder, args=(n,)) for n in range(128, 289, 32)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(60)
        self.criterion("queue timeout under a flood (6 clients, cnn_bn [128..288,3,28,28]): only 200 "
                       "or that 503, both seen",
                       "%s%s" % (counts, "; other: %s" % odd[:3] if odd else ""),
                       not odd and counts.get("200", 0) > 0 and counts.get("503 queue timeout", 0) > 0)
        dt, err = self.probe(port)
        self.criterion("queue server: digits still answers right after the flood",
                       "%.1f ms%s" % (dt * 1e3, "; " + err if err else ""), err is None)
        self.stop_server(srv, "queue server")

    def stop_server(self, srv, what):
        rc, dt = srv.stop()
        self.criterion("%s: SIGTERM -> exit 0" % what, "exit %r after %.1f s" % (rc, dt), rc == 0)
        n, bad, foreign, noise = scan_log(srv.log_path)
        self.criterion("%s: log has no errors and only the server's own lines" % what,
                       "%d lines, %d error lines%s, %d unknown lines%s, %d libmicrohttpd notes of "
                       "clients going away" % (
                           n, len(bad), " (first: %s)" % bad[0] if bad else "",
                           len(foreign), " (first: %s)" % foreign[0] if foreign else "", noise),
                       not bad and not foreign)

    def run(self):
        self.servers = []
        try:
            phases = self.args.phases.split(",")
            if "main" in phases:
                self.main_server()
            if "queue" in phases:
                self.queue_timeout()
            if "main" in phases:
                self.stop_server(self.main[0], "main server")
        except Exception as e:  # noqa: BLE001 - reported as a failed criterion, with the table
            import traceback
            self.criterion("the soak harness ran to the end", "%s: %s\n%s" % (
                type(e).__name__, e, traceback.format_exc()), False)
        finally:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for s in self.servers:
                s.kill()

    def summary(self):
        f = self.figures
        print("\n==== soak summary (%d s of load, %d wrk connections, %d slow connections, "
              "%g disconnects/s) ====" % (self.args.seconds, self.args.wrk_conns,
                                           self.args.slow_conns, self.args.disconnect_rate))
        if "wrk" in f:
            wr, st, en, pk, sl = f["wrk"], f["start"], f["end"], f["peak"], f["slow"]
            pr = f["probes"]
            rows = [
                ("good requests (wrk)", "%d (%.0f/s)" % (wr["requests"],
                                                         wr["requests"] / max(f["load_s"], 1e-9))),
                ("good-client errors", "%d non-2xx, %d wrong bodies, %d socket errors" % (
                    wr["non2xx"], wr["bad"],
                    wr["connect"] + wr["read"] + wr["write"] + wr["timeout"])),
                ("wrk latency p50 / p99 / max", "%.1f / %.1f / %.1f ms" % (
                    wr["p50_us"] / 1e3, wr["p99_us"] / 1e3, wr["max_us"] / 1e3)),
                ("probes", "%d, p50 %.1f ms, p99 %.1f ms" % (
                    len(pr), percentile(pr, 50) * 1e3 if pr else float("nan"),
                    percentile(pr, 99) * 1e3 if pr else float("nan"))),
                ("RSS start / end (peak)", "%s / %s (%s)" % (mb(st["rss_kb"]), mb(en["rss_kb"]),
                                                            mb(pk["rss_kb"]))),
                ("threads start / end (peak)", "%d / %d (%d)" % (st["threads"], en["threads"],
                                                                pk["threads"])),
                ("descriptors start / end (peak)", "%d / %d (%d)" % (st["fds"], en["fds"],
                                                                    pk["fds"])),
                ("slow connections opened / closed by server", "%d / %d" % (
                    sl["slow_opened"], sum(sl["slow_closed_by_server"].values()))),
                ("mid-request disconnects", "%d" % sum(sl["disconnects"].values())),
            ]
            for k, v in rows:
                print("  %-44s %s" % (k, v))
        print()
        for name, value, ok in self.results:
            print("  %-4s %s" % ("ok" if ok else "FAIL", name))
        failed = [r for r in self.results if not r[2]]
        print("\n%d criteria, %d failed" % (len(self.results), len(failed)))
        return 1 if failed or not self.results else 0


def scan_log(path):
    """Streams a server log (millions of access lines after a soak): (lines, error lines, lines
    not from the server's logger, libmicrohttpd notes of clients going away)."""
    n, bad, foreign, noise = 0, [], [], 0
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            n += 1
            if ts.BAD_LOG_RE.search(line):
                bad.append(line)
            if MHD_CLIENT_NOISE_RE.match(line):
                noise += 1
            elif line and not ts.LOG_LINE_RE.match(line):
                foreign.append(line)
    return n, bad, foreign, noise


def tail(path, n=10):
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 16384))
        return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])


def fmt_summary(s):
    if not s.get("n"):
        return "none"
    return "n %d, min %.1f s, median %.1f s, max %.1f s" % (s["n"], s["min"], s["p50"], s["max"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "convserve"))
    ap.add_argument("--models", default=os.path.join(ROOT, "config", "models"))
    ap.add_argument("--wrk", default="wrk")
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", "120")))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--wrk-conns", type=int, default=64)
    ap.add_argument("--slow-conns", type=int, default=300)
    ap.add_argument("--disconnect-rate", type=float, default=20)
    ap.add_argument("--connection-timeout", type=int, default=5)
    ap.add_argument("--probe-interval", type=float, default=1.0)
    ap.add_argument("--probe-p99-ms", type=float, default=250)
    ap.add_argument("--thread-slack", type=int, default=0)
    ap.add_argument("--fd-slack", type=int, default=2)
    ap.add_argument("--phases", default="main,queue",
                    help="main (load, slow clients, resources), queue (the 503 server) or both")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder and logs")
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)
    args.models = os.path.abspath(args.models)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    workdir = tempfile.mkdtemp(prefix="convserve-soak-")
    soak = Soak(args, workdir)
    try:
        soak.run()
        rc = soak.summary()
    finally:
        if rc_failed_or_keep(soak, args):
            for s in getattr(soak, "servers", []):
                print("---- last lines of %s" % s.log_path)
                print(tail(s.log_path))
        if args.keep:
            print("kept %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rc


def rc_failed_or_keep(soak, args):
    return args.keep or any(not ok for _, _, ok in soak.results)


if __name__ == "__main__":
    sys.exit(main())
