#!/usr/bin/env python3
"""test_memory.py - issue 10's battery against the real binary: memory stays bounded under hostile
load, with or without the API key, and the server stays responsive.

Python 3 standard library only. Starts convserve with small, known budgets (--request-budget-bytes
and --answer-budget-bytes), an API key and a CORS origin, then runs one hostile load after
another. During each load a sampler reads the server's VmRSS every 20 ms and a prober asks
GET /v2/health/live on a new connection every 25 ms. Each load checks:

- every answer is the exact one expected (status and message);
- RSS never passes its baseline (models loaded and warmed up) + both budgets + what libmicrohttpd
  may hold per connection + a margin for the allocator;
- GET /v2/health/live answers within 100 ms, every time (400 ms under a sanitizer);
- after the load RSS comes back within a margin of the baseline, and a good request is right.

The loads, each a finding of issue 10:
1. bodies without the key, and bodies on routes that take none (health, OPTIONS): refused unread;
2. bodies with the key past the request budget: refused with 503 and Retry-After, unread;
3. a small request with a huge output: refused before it runs (--max-output-bytes), and large
   outputs that fit, streamed, two at once;
4. 64 MB JSON bodies whose element count does not fit the model (flat and nested): refused after
   the scanner has counted past the model's largest input, without a tree;
5. the framing cases (cases/05-framing.cases), against this server too.

6. seq_basic at [1,3,1024,1019..1024] (binary outputs of 266 MB each, on a second server with
   budgets that admit them): every answer 200, and RSS back within 64 MiB of its baseline when
   idle. Each shape needs its own plan and 400 MB of activations; the engine gives the arena and
   the output buffer back after a run larger than its warm shapes need, so a burst of large free
   sizes does not pin memory (it pinned 2.8 GB before).

    python3 tests/integration/test_memory.py --binary build/convserve --models config/models
"""
import argparse
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import casefile  # noqa: E402
import test_server as ts  # noqa: E402 - the server, HTTP helpers and case runner

MIB = 1 << 20
REQUEST_BUDGET = 192 * MIB
ANSWER_BUDGET = 160 * MIB
MAX_OUTPUT = 64 * MIB
MAX_BODY = 64 * MIB
CONNECTIONS = 256
API_KEY = "memory-battery-key"
AUTH = [("Authorization", "Bearer " + API_KEY)]
ORIGIN = "https://battery.test"
MHD_PER_CONNECTION = 64 * 1024     # libmicrohttpd's pool per connection (server/http.c)
ALLOCATOR_MARGIN = 96 * MIB         # fragmentation, thread stacks and arenas of a busy process
BACK_MARGIN = 48 * MIB              # how near the baseline RSS must come back after a load
# Under a sanitizer (ASAN_OPTIONS or TSAN_OPTIONS set, tools/ci/sanitize.sh) every allocation and
# memory access is instrumented, and the probe measures the instrumentation on a 2-vCPU machine as
# much as the server: the limit there only catches a probe stuck behind the load.
SANITIZED = "ASAN_OPTIONS" in os.environ or "TSAN_OPTIONS" in os.environ
HEALTH_LIMIT_MS = 400.0 if SANITIZED else 100.0
UNAUTHORIZED = "missing or wrong API key; send 'Authorization: Bearer <key>'"


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0




class Watch:
    """RSS sampling (a thread here) and health probing (another process, so that the load's
    threads in this one cannot delay it) while a load runs."""

    def __init__(self, pid, port):
        self.pid, self.port = pid, port
        self.stop = threading.Event()
        self.rss_peak = 0.0
        self.health_ms = []
        self.health_bad = []

    def _sample(self):
        while not self.stop.is_set():
            self.rss_peak = max(self.rss_peak, rss_mib(self.pid))
            time.sleep(0.02)

    def __enter__(self):
        self.prober = ts.start_probe(self.port, 0.025, "/v2/health/live")
        self.sampler = threading.Thread(target=self._sample)
        self.sampler.start()
        time.sleep(0.1)  # a probe or two before the load starts
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.sampler.join(10)
        for ms, status, text in ts.probe_results(self.prober):
            self.health_ms.append(ms)
            if status != 200 or not text.endswith('{"live":true}'):
                self.health_bad.append("%d %s" % (status, text[:120]))


def send_headers_then_body(port, head, body_len, chunk=1 << 20, timeout=30):
    """Sends a request head, then up to body_len zero bytes while the server takes them, and
    reads one answer: (status, headers, body, bytes of body the server took)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sent = 0
    try:
        s.sendall(head)
        block = b"\0" * chunk
        try:
            while sent < body_len:
                n = min(chunk, body_len - sent)
                s.sendall(block[:n])
                sent += n
        except OSError:
            pass  # the server answered and closed before taking the body: as it should
        st, h, b, _ = ts.read_answer(s, "POST")
        return st, h, b, sent
    finally:
        s.close()


def head_for(method, path, length, extra=()):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: x", "Content-Length: %d" % length]
    lines += ["%s: %s" % kv for kv in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def run_parallel(n, fn):
    out, lock = [], threading.Lock()

    def one(i):
        try:
            r = fn(i)
        except Exception as e:  # noqa: BLE001 - recorded and judged by the caller
            r = ("exception", "%s: %s" % (type(e).__name__, e))
        with lock:
            out.append(r)
    th = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in th:
        t.start()
    for t in th:
        t.join(120)
    return out


class Battery:
    def __init__(self, run, srv, port, baseline):
        self.run, self.srv, self.port, self.baseline = run, srv, port, baseline
        self.ceiling = (baseline + (REQUEST_BUDGET + ANSWER_BUDGET + CONNECTIONS *
                                    MHD_PER_CONNECTION + ALLOCATOR_MARGIN) / MIB)
        self.figures = []

    def load(self, name, fn):
        """Runs fn under the watch; judges RSS, health and the way back."""
        def check():
            with Watch(self.srv.proc.pid, self.port) as w:
                detail = fn()
            ts.expect(not w.health_bad, "health answered wrong: %s" % w.health_bad[:3])
            worst = max(w.health_ms) if w.health_ms else 0.0
            ts.expect(w.health_ms, "no health probe ran")
            ts.expect(worst < HEALTH_LIMIT_MS, "GET /v2/health/live took %.0f ms (of %d probes)"
                      % (worst, len(w.health_ms)))
            ts.expect(w.rss_peak <= self.ceiling, "RSS peaked at %.0f MiB; the bound is %.0f MiB"
                      % (w.rss_peak, self.ceiling))
            deadline = time.monotonic() + 10
            while rss_mib(self.srv.proc.pid) > self.baseline + BACK_MARGIN / MIB and \
                    time.monotonic() < deadline:
                time.sleep(0.1)
            after = rss_mib(self.srv.proc.pid)
            ts.expect(after <= self.baseline + BACK_MARGIN / MIB,
                      "RSS stayed at %.0f MiB after the load (baseline %.0f MiB)" %
                      (after, self.baseline))
            good_request(self.port)
            # Every byte a request took from a budget was given back (a request gives its bytes
            # back when its connection completes, which may be just after its client has read
            # the answer: allow a moment).
            deadline = time.monotonic() + 3
            while True:
                st, _, raw = ts.request(self.port, "GET", "/metrics", None, dict(AUTH))
                ts.expect(st == 200, "/metrics: %d" % st)
                used = {b: ts.metric(raw.decode(), "convserve_budget_bytes", budget=b, kind="used")
                        for b in ("request", "answer")}
                if not any(used.values()) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            ts.expect(not any(used.values()), "bytes still held after the load: %s" % used)
            fig = "RSS peak %.0f MiB (bound %.0f), after %.0f MiB; health worst %.1f ms of %d" % (
                w.rss_peak, self.ceiling, after, worst, len(w.health_ms))
            self.figures.append((name, fig, detail))
            return "%s; %s" % (fig, detail) if detail else fig
        self.run.check(name, check)


def good_request(port):
    st, h, b = ts.request(port, "PUT", "/predictions/digits", ts.read_example("3.png"),
                          dict(AUTH))
    ts.expect(st == 200, "a good request after the load: %d %s" % (st, ts.short(b)))
    ts.expect_eq(json.loads(b)["predictions"][0]["top"][0]["label"], "3", "label of 3.png")


def expect_error(st, h, b, status, message):
    ts.expect(st == status, "status %d, expected %d: %s" % (st, status, ts.short(b)))
    ts.expect_eq(ts.error_of(st, h, b), message, "message")


# ---- the loads ---------------------------------------------------------------------------------

def unauthenticated_bodies(port):
    """Finding 1: 30 clients send 63 MB to GET /v2/health/live and OPTIONS, and 40 more PUT 63 MB
    to /predictions without the key: each is answered from its headers and nothing is read."""
    size = 63 * MIB

    def one(i):
        if i < 15:
            head, want = head_for("GET", "/v2/health/live", size), (
                413, "GET /v2/health/live takes no request body")
        elif i < 30:
            head, want = head_for("OPTIONS", "/v2/models/digits", size), (401, UNAUTHORIZED)
        else:
            head, want = head_for("PUT", "/predictions/digits", size), (401, UNAUTHORIZED)
        st, h, b, sent = send_headers_then_body(port, head, size)
        expect_error(st, h, b, *want)
        return sent
    out = run_parallel(70, one)
    bad = [r for r in out if isinstance(r, tuple)]
    ts.expect(not bad, "%d failed, first: %s" % (len(bad), bad[:2]))
    return "70 clients, %.1f MiB sent before the server closed (of %d MiB offered)" % (
        sum(out) / MIB, 70 * 63)


def over_request_budget(port):
    """Finding 1 with the key: 12 clients PUT 60 MB to /predictions at once; the request budget
    (192 MiB) takes 3 of them, the others get 503 from their Content-Length, unread."""
    size = 60 * MIB
    msg_start = "the server holds "

    def one(i):
        st, h, b, sent = send_headers_then_body(
            port, head_for("PUT", "/predictions/digits", size, AUTH), size)
        if st == 503:
            ts.expect(ts.error_of(st, h, b).startswith(msg_start) and
                      "--request-budget-bytes %d" % REQUEST_BUDGET in ts.error_of(st, h, b),
                      "503 message %s" % ts.short(b))
            ts.expect_eq(h.get("retry-after"), "1", "Retry-After")
        else:
            expect_error(st, h, b, 400, "cannot decode image: unsupported image type; send PNG, "
                         "JPEG, BMP, GIF or PNM")
        return st
    out = run_parallel(12, one)
    bad = [r for r in out if isinstance(r, tuple)]
    ts.expect(not bad, "%d failed, first: %s" % (len(bad), bad[:2]))
    ts.expect(out.count(503) >= 8 and out.count(400) >= 1, "answers %s" % sorted(out))
    return "answers: %d x 400 (received, not an image), %d x 503 (over budget)" % (
        out.count(400), out.count(503))


def binary_uint8(h, w, n=1):
    payload = bytes((i * 7) % 256 for i in range(n * 3 * h * w))
    head = json.dumps({"inputs": [{"name": "input", "shape": [n, 3, h, w], "datatype": "UINT8",
                                   "parameters": {"binary_data_size": len(payload)}}]}).encode()
    return head + payload, len(head)


def huge_outputs(port):
    """Finding 2: 3.1 MB of UINT8 to seq_basic at [1,3,1024,1024] asks for a 266 MB output: refused
    before it runs. Then two [1,3,256,256] requests at once, 16 MB of output each, answered as
    streamed JSON of about 60 MB while health stays fast."""
    body, hl = binary_uint8(1024, 1024)
    hdrs = dict(AUTH, **{"Inference-Header-Content-Length": str(hl),
                          "Content-Type": "application/octet-stream"})
    st, h, b = ts.request(port, "POST", "/v2/models/seq_basic/infer", body, hdrs)
    expect_error(st, h, b, 400, "the output [1,64,1020,1020] would be 266342400 bytes (66585600 "
                 "FP32 values); the limit is %d (--max-output-bytes)" % MAX_OUTPUT)
    body, hl = binary_uint8(256, 256)
    hdrs["Inference-Header-Content-Length"] = str(hl)

    def one(i):
        st, h, b = ts.request(port, "POST", "/v2/models/seq_basic/infer", body, hdrs, timeout=120)
        ts.expect(st == 200, "status %d: %s" % (st, ts.short(b)))
        ts.expect_eq(h.get("transfer-encoding"), "chunked", "a large answer is streamed")
        out = json.loads(b)["outputs"][0]
        ts.expect_eq(out["shape"], [1, 64, 252, 252], "shape")
        ts.expect_eq(len(out["data"]), 64 * 252 * 252, "values")
        return len(b)
    out = run_parallel(2, one)
    bad = [r for r in out if isinstance(r, tuple)]
    ts.expect(not bad, "%d failed, first: %s" % (len(bad), bad[:2]))
    return "refused [1,3,1024,1024] before running; streamed 2 x %.0f MB of JSON" % (
        out[0] / 1e6)


def huge_wrong_json(port):
    """Finding 3: six 64 MB JSON bodies of "data":[0,0,...] (flat, and nested) for digits
    [1,1,8,8]: the scanner stops past twice the model's largest input (64 x 64 values), so each
    is refused without a tree; the request budget takes three bodies at a time, the others get 503
    from their Content-Length."""
    def body(nested):
        head = b'{"inputs":[{"name":"input","shape":[1,1,8,8],"datatype":"FP32","data":['
        tail = b']}]}'
        unit = b"[0,0,0,0,0,0,0,0]," if nested else b"0,"
        n = (64 * MIB - len(head) - len(tail)) // len(unit)
        return head + unit * (n - 1) + unit[:-1] + tail
    bodies = [body(False), body(True)]
    msg = "inputs[0].data has more than 8208 values, more than the model takes"

    def one(i):
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        try:
            try:
                s.sendall(head_for("POST", "/v2/models/digits/infer", len(bodies[i % 2]),
                                   AUTH + [("Content-Type", "application/json")]) + bodies[i % 2])
            except OSError:
                pass  # refused from its headers (503) and closed: the rest is not read
            st, h, b, _ = ts.read_answer(s, "POST")
        finally:
            s.close()
        if st == 503:
            ts.expect_eq(h.get("retry-after"), "1", "Retry-After")
            return 503
        expect_error(st, h, b, 400, msg)
        return time.monotonic() - t0
    out = run_parallel(6, one)
    bad = [r for r in out if isinstance(r, tuple)]
    ts.expect(not bad, "%d failed, first: %s" % (len(bad), bad[:2]))
    times = [r for r in out if isinstance(r, float)]
    ts.expect(times, "no body was received: %s" % out)
    return "%d refused with 400 (slowest %.2f s, upload included), %d with 503" % (
        len(times), max(times), out.count(503))


def framing_cases(port):
    """Finding 4: the framing cases, against this server too, with the key added (framing is
    judged before the key; the cases about Authorization itself run in test_server.py)."""
    cases = casefile.parse(os.path.join(HERE, "cases", "05-framing.cases"),
                           ts.case_variables())
    auth = ("\r\n%s: %s" % AUTH[0]).encode()
    ran = 0
    for c in cases:
        if b"Authorization" in c["raw"]:
            continue
        line_end = c["raw"].index(b"\r\n")
        c["raw"] = c["raw"][:line_end] + auth + c["raw"][line_end:]
        m = re.match(r"^the request line and headers are (\d+) bytes(.*)$", c["error"] or "")
        if m:
            c["error"] = "the request line and headers are %d bytes%s" % (
                int(m.group(1)) + len(auth), m.group(2))
        ts.run_row(port, c)
        ran += 1
    return "%d framing cases" % ran


FREE_SIZE_SLACK_MIB = 64


def free_size(srv, port):
    """seq_basic at [1,3,1024,1019..1024], binary output: RSS after each new shape, back near the
    baseline when idle."""
    baseline = rss_mib(srv.proc.pid)
    lines = ["baseline: RSS %.0f MiB" % baseline]
    for w in range(1019, 1025):
        hdrs = dict(AUTH, **{"Content-Type": "application/octet-stream"})
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 1024, w],
                                       "datatype": "UINT8", "parameters": {
                                           "binary_data_size": 3 * 1024 * w}}],
                           "parameters": {"binary_data_output": True}}).encode()
        hdrs["Inference-Header-Content-Length"] = str(len(body))
        body += bytes((i * 7) % 256 for i in range(3 * 1024 * w))
        st, h, b = ts.request(port, "POST", "/v2/models/seq_basic/infer", body, hdrs,
                              timeout=300)
        ts.expect(st == 200, "[1,3,1024,%d]: %d %s" % (w, st, ts.short(b)))
        lines.append("[1,3,1024,%d] -> %d, RSS %.0f MiB" % (w, st, rss_mib(srv.proc.pid)))
    time.sleep(2)
    idle = rss_mib(srv.proc.pid)
    lines.append("idle after: RSS %.0f MiB" % idle)
    ts.expect(idle <= baseline + FREE_SIZE_SLACK_MIB,
              "RSS %.0f MiB when idle after the burst; baseline %.0f MiB + %d" % (
                  idle, baseline, FREE_SIZE_SLACK_MIB))
    return "; ".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=os.path.join(ts.ROOT, "build", "convserve"))
    ap.add_argument("--models", default=os.path.join(ts.ROOT, "config", "models"))

    args = ap.parse_args()
    binary, models = os.path.abspath(args.binary), os.path.abspath(args.models)
    ts.LOADED = ", ".join(sorted(d for d in os.listdir(models)
                                 if os.path.isfile(os.path.join(models, d, "model.json"))))
    run = ts.Runner()
    workdir = tempfile.mkdtemp(prefix="convserve-memory-")
    t0 = time.monotonic()
    extra = ["--request-budget-bytes", str(REQUEST_BUDGET), "--answer-budget-bytes",
             str(ANSWER_BUDGET), "--max-output-bytes", str(MAX_OUTPUT), "--max-body-bytes",
             str(MAX_BODY), "--max-connections", str(CONNECTIONS), "--api-key", API_KEY,
             "--cors-origin", ORIGIN]
    # Under AddressSanitizer (tools/ci/sanitize.sh) freed memory waits in a quarantine on purpose,
    # so RSS would not come back: this server runs without one. What it measures is what the
    # server holds; every other test keeps the quarantine and its use-after-free checks.
    env = None
    if "ASAN_OPTIONS" in os.environ:
        env = dict(os.environ)
        env["ASAN_OPTIONS"] += ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
    srv = ts.Server(binary, models, workdir, "memory", extra, env=env)
    try:
        port = run.check("server starts", srv.wait_ready)
        if port is not None:
            # The baseline has the models loaded and warmed up, and the engine's plans for the
            # one new input shape the loads run (seq_basic at 256 x 256, alone or two
            # requests batched together): plans are the engine's to keep (and bound), not
            # request memory.
            for n in (1, 2):
                body, hl = binary_uint8(256, 256, n)
                st, h, b = ts.request(port, "POST", "/v2/models/seq_basic/infer", body, dict(
                    AUTH, **{"Inference-Header-Content-Length": str(hl),
                             "Content-Type": "application/octet-stream"}), timeout=120)
                ts.expect(st == 200, "seq_basic at %d x 3 x 256 x 256: %d %s" % (
                    n, st, ts.short(b)))
            good_request(port)
            time.sleep(0.5)
            baseline = rss_mib(srv.proc.pid)
            print("baseline RSS %.0f MiB (models loaded and warmed up)" % baseline)
            b = Battery(run, srv, port, baseline)
            b.load("finding 1: 63 MB bodies without the key or to routes without bodies",
                   lambda: unauthenticated_bodies(port))
            b.load("finding 1: 60 MB bodies past the request budget -> 503 unread",
                   lambda: over_request_budget(port))
            b.load("finding 2: huge outputs refused before running; large ones streamed",
                   lambda: huge_outputs(port))
            b.load("finding 3: 64 MB JSON of the wrong count refused without a tree",
                   lambda: huge_wrong_json(port))
            b.load("finding 4: framing", lambda: framing_cases(port))

        def stop():
            rc, dt = srv.stop()
            ts.expect(rc == 0, "exit code %r after SIGTERM" % rc)
        run.check("server stops with exit 0", stop)
        run.check("log has no errors or sanitizer reports", ts.check_log, srv.text())
    finally:
        srv.kill()
    # Finding 2's second half: a free-size model's burst of large shapes, on a server whose budgets
    # admit 266 MB answers.
    big = ["--max-output-bytes", str(300 * MIB), "--answer-budget-bytes", str(600 * MIB),
           "--api-key", API_KEY]
    srv = ts.Server(binary, models, workdir, "memory-free-size", big, env=env)
    try:
        port = run.check("free-size server starts", srv.wait_ready)
        if port is not None:
            run.check("finding 2: six large free sizes, RSS back near its baseline after",
                      free_size, srv, port)
        run.check("free-size server stops with exit 0", lambda: ts.expect(
            srv.stop()[0] == 0, "exit code after SIGTERM"))
    finally:
        srv.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    print("(%.1f s)" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (run.passed, run.failed))
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
