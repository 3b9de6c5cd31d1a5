#!/usr/bin/env python3
"""test_server.py - integration tests: the real convserve binary, over HTTP, on a free port.

Python 3 standard library only. Starts the server from --binary on the repository of --models,
checks every endpoint (metadata, correctness against the PyTorch logits of examples/expected.json,
the Triton binary extension, other networks, concurrent batching, metrics), runs the hostile
requests of tests/integration/cases/ twice (each with its exact answer; format: casefile.py) and
every byte value in path, query and headers, and stops it with SIGTERM under load, expecting
in-flight requests to finish, exit 0 and a log without errors or sanitizer reports. A second
server runs with a small body limit, a queue of one, an API key and CORS. Then broken model
repositories must be refused at start, and a hostile environment (tests/integration/fault_shim.c:
a failing strdup, the wall clock a day ahead) must be survived.

Prints one line per check and ends with "N passed, M failed"; exits 1 on any failure.

    python3 tests/integration/test_server.py --binary build/convserve --models config/models
"""
import argparse
import base64
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import casefile  # noqa: E402 - the case files of the hostile table

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLES = os.path.join(ROOT, "examples")

DEFAULT_MAX_BODY = 64 * 1024 * 1024
DEFAULT_MAX_PIXELS = 16777216
DEFAULT_MAX_INPUT_PIXELS = 1048576
SHUTDOWN_TIMEOUT = 5  # --shutdown-timeout given to the servers, seconds
# The models the server loads, as its 404 message lists them (set from --models in main()).
LOADED = "cnn_basic, cnn_bn, digits, flatten_linear, mymodel, seq_basic, seq_named"
LISTEN_RE = re.compile(r"listening on http://[^:\s]+:(\d+)")
LOG_LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn|info|debug) ")
BAD_LOG_RE = re.compile(r"ERROR|AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error|"
                        r"^\S+ error |internal error|Assertion|Segmentation|core dumped")


# ---- a tiny runner ----------------------------------------------------------------------------

class Runner:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def check(self, name, fn, *args):
        """Runs fn(*args); an exception or AssertionError is a failure. Returns fn's value."""
        t0 = time.monotonic()
        try:
            value = fn(*args)
        except Exception as e:  # noqa: BLE001 - every failure is reported the same way
            self.failed += 1
            detail = str(e) if isinstance(e, AssertionError) else "%s: %s" % (type(e).__name__, e)
            if not isinstance(e, AssertionError):
                detail += "\n" + "".join(traceback.format_exc().splitlines(True)[-4:])
            self.failures.append((name, detail))
            print("FAIL  %s: %s" % (name, detail.strip()), flush=True)
            return None
        self.passed += 1
        note = " - %s" % value if isinstance(value, str) else ""
        print("ok    %s (%.0f ms)%s" % (name, (time.monotonic() - t0) * 1e3, note), flush=True)
        return value


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def expect_eq(got, want, what):
    if got != want:
        raise AssertionError("%s: expected %r, got %r" % (what, want, got))


def short(b, n=300):
    s = b.decode("utf-8", "replace") if isinstance(b, (bytes, bytearray)) else str(b)
    return s if len(s) <= n else s[:n] + "..."


# ---- the server process -----------------------------------------------------------------------

class Server:
    def __init__(self, binary, models, workdir, tag, extra=(), env=None):
        self.log_path = os.path.join(workdir, "server-%s.log" % tag)
        self.log = open(self.log_path, "wb")
        args = [binary, "--models", models, "--port", "0", "--host", "127.0.0.1",
                "--shutdown-timeout", str(SHUTDOWN_TIMEOUT)] + list(extra)
        self.proc = subprocess.Popen(args, cwd=workdir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        self.port = None

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("server exited with %s before listening:\n%s" %
                                     (self.proc.returncode, self.text()[-3000:]))
            m = LISTEN_RE.search(self.text())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.02)
        expect(self.port, "no 'listening on' line within %ds" % timeout)
        while time.monotonic() < deadline:
            try:
                st, _, _ = request(self.port, "GET", "/v2/health/ready", timeout=2)
                if st == 200:
                    return self.port
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError("/v2/health/ready did not answer 200 within %ds" % timeout)

    def stop(self, signalled=False):
        """SIGTERM (unless the caller has sent it); returns (exit code or None on timeout,
        seconds taken)."""
        t0 = time.monotonic()
        if not signalled and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=SHUTDOWN_TIMEOUT + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.log.close()
        return rc, time.monotonic() - t0

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.log.closed:
            self.log.close()


# ---- HTTP helpers -----------------------------------------------------------------------------

def request(port, method, path, body=None, headers=None, timeout=20):
    """One request on a fresh connection: (status, {lowercase header: value}, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def get_json(port, path, status=200):
    st, h, b = request(port, "GET", path)
    expect(st == status, "GET %s: expected %d, got %d: %s" % (path, status, st, short(b)))
    expect(h.get("content-type", "").startswith("application/json"),
           "GET %s: Content-Type %r" % (path, h.get("content-type")))
    return json.loads(b)


def post_json(port, path, obj, status=200, headers=None):
    body = obj if isinstance(obj, (bytes, bytearray)) else json.dumps(obj).encode()
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    st, h, b = request(port, "POST", path, body, hdrs)
    expect(st == status, "POST %s: expected %d, got %d: %s" % (path, status, st, short(b)))
    return json.loads(b)


def raw_request(port, method, path, headers=(), body=b"", send_body=True, timeout=15):
    """Writes the request bytes itself (any method, any header, a Content-Length that lies) and
    reads one answer: (status, {lowercase header: value}, body bytes). The answer's body is read by
    its Content-Length, so an answer sent before the request body arrives is seen."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1:%d" % port,
                 "Connection: close"]
        names = {k.lower() for k, _ in headers}
        for k, v in headers:
            lines.append("%s: %s" % (k, v))
        if "content-length" not in names and "transfer-encoding" not in names and (
                body or method in ("POST", "PUT")):
            lines.append("Content-Length: %d" % len(body))
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if send_body and body:
            try:
                s.sendall(body)
            except OSError:
                pass  # the server may answer and close before taking all of it
        status, hdrs, body, _ = read_answer(s, method)
        return status, hdrs, body
    finally:
        s.close()


def error_of(status, hdrs, body):
    """The message of a {"error": "..."} answer (checking its shape)."""
    expect(hdrs.get("content-type", "").startswith("application/json"),
           "error Content-Type is %r (status %d, body %s)" % (hdrs.get("content-type"), status,
                                                              short(body)))
    try:
        obj = json.loads(body)
    except ValueError:
        raise AssertionError("error body is not JSON: %s" % short(body))
    expect(isinstance(obj, dict) and list(obj) == ["error"] and isinstance(obj["error"], str),
           "error body is not {\"error\": \"...\"}: %s" % short(body))
    return obj["error"]


def metrics_text(port):
    st, h, b = request(port, "GET", "/metrics")
    expect(st == 200, "/metrics: %d" % st)
    expect(h.get("content-type", "").startswith("text/plain"), "/metrics Content-Type %r" %
           h.get("content-type"))
    return b.decode()


SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric(text, name, **labels):
    """The sum of the samples of `name` whose labels include `labels` (a model's series of every
    version, say), or 0 if there is none."""
    total = 0.0
    for line in text.splitlines():
        m = SAMPLE_RE.match(line)
        if not m or m.group(1) != name:
            continue
        have = dict(LABEL_RE.findall(m.group(2) or ""))
        if all(have.get(k) == str(v) for k, v in labels.items()):
            total += float(m.group(3))
    return total


# ---- numbers ----------------------------------------------------------------------------------

def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def close_to(got, want, tol_scale, what):
    expect(len(got) == len(want), "%s: %d values, expected %d" % (what, len(got), len(want)))
    tol = tol_scale * max(1.0, max(abs(v) for v in want))
    worst = max(abs(g - w) for g, w in zip(got, want))
    expect(worst <= tol, "%s: max |diff| %.3g > %.3g\n  got  %s\n  want %s" %
           (what, worst, tol, got, want))
    return worst


def flat(x):
    if isinstance(x, list):
        out = []
        for v in x:
            out.extend(flat(v))
        return out
    return [x]


def nest(values, shape):
    if len(shape) == 1:
        return list(values)
    step = len(values) // shape[0]
    return [nest(values[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def infer_body(data, shape, datatype="FP32", name="input", **extra):
    body = {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}
    body.update(extra)
    return body


def binary_body(header_obj, payload):
    """A Triton binary-extension body: (bytes, headers)."""
    head = json.dumps(header_obj).encode()
    return head + payload, {"Inference-Header-Content-Length": str(len(head)),
                            "Content-Type": "application/octet-stream"}


# ---- images -----------------------------------------------------------------------------------

def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_gray(w, h, pixels=None, declared=None):
    """An 8-bit gray PNG; `declared` = (w, h) written into IHDR instead of the real size."""
    dw, dh = declared or (w, h)
    pixels = pixels or [[(x * 37 + y * 11) % 256 for x in range(w)] for y in range(h)]
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", dw, dh, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def bmp24(pix):
    """A 24-bit BMP of gray pixels (R = G = B, so any luma conversion gives them back)."""
    h, w = len(pix), len(pix[0])
    rowlen = (w * 3 + 3) // 4 * 4
    data = b"".join(bytes(c for v in row for c in (v, v, v)).ljust(rowlen, b"\0")
                    for row in reversed(pix))
    return (b"BM" + struct.pack("<IHHI", 54 + len(data), 0, 0, 54) +
            struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(data), 2835, 2835, 0, 0) + data)


def multipart(files, boundary="convserveBoundary7MA4YWxk"):
    out = b""
    for i, data in enumerate(files):
        out += ("--%s\r\nContent-Disposition: form-data; name=\"data\"; filename=\"f%d.png\"\r\n"
                "Content-Type: image/png\r\n\r\n" % (boundary, i)).encode() + data + b"\r\n"
    out += ("--%s--\r\n" % boundary).encode()
    return out, {"Content-Type": "multipart/form-data; boundary=%s" % boundary}


def read_example(name):
    with open(os.path.join(EXAMPLES, name), "rb") as f:
        return f.read()


# ---- a pure-Python reference for the small networks -------------------------------------------

def read_safetensors(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32"
        s, e = v["data_offsets"]
        out[k] = (v["shape"], list(struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])))
    return out


def ref_conv2d(x, c, h, w, weight, bias, oc, k):
    """Valid 3x3 (k x k) convolution, stride 1, of one CHW sample given as a flat list."""
    oh, ow = h - k + 1, w - k + 1
    out = []
    for o in range(oc):
        for y in range(oh):
            for xx in range(ow):
                acc = bias[o]
                for i in range(c):
                    for ky in range(k):
                        row = (i * h + y + ky) * w + xx
                        wrow = ((o * c + i) * k + ky) * k
                        for kx in range(k):
                            acc += weight[wrow + kx] * x[row + kx]
                out.append(acc)
    return out, oh, ow


# ---- the checks -------------------------------------------------------------------------------

class Suite:
    def __init__(self, run, port, models, expected):
        self.run = run
        self.port = port
        self.models = models
        self.expected = expected

    # 1. metadata, health, metrics

    def health(self):
        st, h, b = request(self.port, "GET", "/v2/health/live")
        expect_eq(st, 200, "live status")
        expect_eq(json.loads(b), {"live": True}, "live body")
        expect_eq(get_json(self.port, "/v2/health/ready"), {"ready": True}, "ready body")

    def server_meta(self):
        m = get_json(self.port, "/v2")
        expect_eq(m.get("name"), "convserve", "name")
        expect(isinstance(m.get("version"), str) and re.match(r"^\d+\.\d+\.\d+", m["version"]),
               "version %r" % m.get("version"))
        expect("binary_tensor_data" in m.get("extensions", []), "extensions %r" % m.get("extensions"))
        expect_eq(get_json(self.port, "/v2/"), m, "/v2/ (trailing slash)")

    def model_meta(self):
        m = get_json(self.port, "/v2/models/digits")
        expect_eq(m["name"], "digits", "name")
        expect(isinstance(m.get("platform"), str) and m["platform"], "platform %r" % m.get("platform"))
        expect_eq(m["inputs"], [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
                  "inputs")
        expect_eq(m["outputs"], [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
                  "outputs")
        expect_eq(m["labels"], [str(i) for i in range(10)], "labels")
        pp = m["preprocess"]
        expect_eq((pp["color"], pp["resize"], pp["invert"]), ("gray", [8, 8], False), "preprocess")
        expect(abs(pp["mean"][0] - 0.3054) < 1e-6 and abs(pp["std"][0] - 0.3761) < 1e-6,
               "preprocess mean/std %r" % pp)
        layers = m["layers"]
        want = [("Conv2d", "features.0", [-1, 16, 8, 8], 160),
                ("BatchNorm2d", "features.1", [-1, 16, 8, 8], 32),
                ("ReLU", "features.2", [-1, 16, 8, 8], 0),
                ("Conv2d", "features.3", [-1, 32, 8, 8], 4640),
                ("BatchNorm2d", "features.4", [-1, 32, 8, 8], 64),
                ("ReLU", "features.5", [-1, 32, 8, 8], 0),
                ("MaxPool2d", "features.6", [-1, 32, 4, 4], 0),
                ("Dropout", "features.7", [-1, 32, 4, 4], 0),
                ("Flatten", "classifier.0", [-1, 512], 0),
                ("Linear", "classifier.1", [-1, 64], 32832),
                ("ReLU", "classifier.2", [-1, 64], 0),
                ("Dropout", "classifier.3", [-1, 64], 0),
                ("Linear", "classifier.4", [-1, 10], 650)]
        got = [(l["op"], l["name"], l["output_shape"], l["parameters"]) for l in layers]
        expect_eq(got, want, "layers")
        expect_eq(m["parameters"], sum(w[3] for w in want), "parameters")
        expect_eq(m.get("max_batch_size"), 64, "max_batch_size")
        expect_eq(m.get("random_weights"), False, "random_weights")
        # every model describes itself
        for name in LOADED.split(", "):
            mm = get_json(self.port, "/v2/models/" + name)
            expect_eq(mm["name"], name, "name of " + name)
            expect(mm["layers"] and mm["inputs"][0]["shape"][0] == -1, "metadata of " + name)
        expect_eq(get_json(self.port, "/v2/models/mymodel")["inputs"][0]["shape"],
                  [-1, 3, -1, -1], "mymodel input shape")

    def model_ready(self):
        expect_eq(get_json(self.port, "/v2/models/digits/ready"),
                  {"name": "digits", "version": "1", "ready": True}, "ready body")

    def metrics_basic(self):
        text = metrics_text(self.port)
        for name in ("convserve_requests_total", "convserve_request_duration_seconds",
                     "convserve_queue_duration_seconds", "convserve_inference_duration_seconds",
                     "convserve_batch_size", "convserve_inferences_total",
                     "convserve_queue_length", "convserve_inflight_requests"):
            expect("# TYPE %s " % name in text, "no # TYPE line for %s" % name)
        expect("# TYPE convserve_requests_total counter" in text, "requests_total is no counter")
        expect("# TYPE convserve_batch_size histogram" in text, "batch_size is no histogram")
        expect(re.search(r"^convserve_inflight_requests \d+$", text, re.M), "inflight gauge")
        for budget in ("request", "answer"):
            expect(re.search(r'^convserve_budget_bytes\{budget="%s",kind="limit"\} [1-9]\d*$' %
                             budget, text, re.M), "%s budget limit gauge" % budget)
        expect(re.search(r'^convserve_queue_length\{model="digits",version="1"\} \d+$', text,
                         re.M), "queue_length of digits")
        for line in text.splitlines():
            expect(line.startswith("#") or re.match(r'^[a-z_]+(\{[^}]*\})? [-+0-9.eE]+$', line),
                   "malformed metrics line %r" % line)

    def metrics_counts(self):
        """Three sequential batch-2 requests and one 400: the counters move by exactly that."""
        def snapshot():
            t = metrics_text(self.port)
            return {
                "ok": metric(t, "convserve_requests_total", model="digits", code="200"),
                "bad": metric(t, "convserve_requests_total", model="digits", code="400"),
                "inf": metric(t, "convserve_inferences_total", model="digits"),
                "batches": metric(t, "convserve_batch_size_count", model="digits"),
                "le1": metric(t, "convserve_batch_size_bucket", model="digits", le="1"),
                "le2": metric(t, "convserve_batch_size_bucket", model="digits", le="2"),
                "sum": metric(t, "convserve_batch_size_sum", model="digits"),
                "req": metric(t, "convserve_request_duration_seconds_count", model="digits"),
            }
        before = snapshot()
        data = [0.1 * (i % 13) for i in range(128)]
        for _ in range(3):
            post_json(self.port, "/v2/models/digits/infer", infer_body(data, [2, 1, 8, 8]))
        post_json(self.port, "/v2/models/digits/infer", infer_body(data[:5], [1, 1, 8, 8]), 400)
        want = {"ok": 3, "bad": 1, "inf": 6, "batches": 3, "le1": 0, "le2": 3, "sum": 6, "req": 4}
        # A request is counted when its connection completes, which may be just after the
        # client has read the answer: allow a moment.
        deadline = time.monotonic() + 3
        while True:
            after = snapshot()
            diff = {k: after[k] - before[k] for k in want}
            if diff == want or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        expect_eq(diff, want, "metric increments")

    # 2. correctness against PyTorch

    def predict_put(self, name):
        exp = self.expected[name]
        st, h, b = request(self.port, "PUT", "/predictions/digits", read_example(name))
        expect(st == 200, "status %d: %s" % (st, short(b)))
        r = json.loads(b)
        expect_eq(r["model_name"], "digits", "model_name")
        expect_eq(r["input_shape"], [1, 1, 8, 8], "input_shape")
        expect_eq(r["output_shape"], [1, 10], "output_shape")
        expect_eq(len(r["predictions"]), 1, "predictions")
        p = r["predictions"][0]
        tol = 0.1 if name.endswith(".jpg") else 1e-4
        worst = close_to(p["logits"], exp["logits"], tol, "logits of " + name)
        expect_eq(p["top"][0]["label"], exp["label"], "top label")
        expect_eq(p["top"][0]["index"], exp["index"], "top index")
        expect(abs(sum(p["probabilities"]) - 1) < 1e-5, "probabilities sum %r" %
               sum(p["probabilities"]))
        expect_eq(len(p["top"]), 5, "default top count")
        if not name.endswith(".jpg"):
            close_to(p["probabilities"], exp["probabilities"], 1e-4, "probabilities")
        return "max |logit diff| %.2g" % worst

    def predict_post_raw(self):
        """POST of a raw image with an image/* type is the same as PUT."""
        st, h, b = request(self.port, "POST", "/predictions/digits", read_example("7.png"),
                           {"Content-Type": "image/png"})
        expect(st == 200, "status %d: %s" % (st, short(b)))
        close_to(json.loads(b)["predictions"][0]["logits"], self.expected["7.png"]["logits"], 1e-4,
                 "7.png logits")

    def predict_multipart(self):
        names = ["7.png", "0.png", "5.jpg", "3.png", "0.png"]
        body, hdrs = multipart([read_example(n) for n in names])
        st, h, b = request(self.port, "POST", "/predictions/digits", body, hdrs)
        expect(st == 200, "status %d: %s" % (st, short(b)))
        r = json.loads(b)
        expect_eq(r["input_shape"], [5, 1, 8, 8], "input_shape")
        expect_eq(r["output_shape"], [5, 10], "output_shape")
        expect_eq(len(r["predictions"]), 5, "number of predictions")
        for n, p in zip(names, r["predictions"]):
            close_to(p["logits"], self.expected[n]["logits"], 0.1 if n.endswith("jpg") else 1e-4,
                     "logits of " + n)
            expect_eq(p["top"][0]["label"], self.expected[n]["label"], "label of " + n)

    def predict_top(self):
        st, h, b = request(self.port, "PUT", "/predictions/digits?top=3", read_example("3.png"))
        expect(st == 200, "status %d: %s" % (st, short(b)))
        top = json.loads(b)["predictions"][0]["top"]
        expect_eq(len(top), 3, "top entries")
        probs = [t["probability"] for t in top]
        expect(probs == sorted(probs, reverse=True), "top not sorted: %r" % probs)
        exp = self.expected["3.png"]["probabilities"]
        want = sorted(range(10), key=lambda i: -exp[i])[:3]
        expect_eq([t["index"] for t in top], want, "top indices")
        expect_eq([t["label"] for t in top], [str(i) for i in want], "top labels")
        st, h, b = request(self.port, "PUT", "/predictions/digits?top=50", read_example("3.png"))
        expect_eq(len(json.loads(b)["predictions"][0]["top"]), 10, "top=50 gives all 10 classes")

    def infer_example(self):
        with open(os.path.join(EXAMPLES, "infer_3.json"), "rb") as f:
            body = f.read()
        r = post_json(self.port, "/v2/models/digits/infer", body)
        expect_eq(r["model_name"], "digits", "model_name")
        expect("id" not in r, "id without one sent: %r" % r.get("id"))
        out = r["outputs"]
        expect_eq(len(out), 1, "outputs")
        expect_eq((out[0]["name"], out[0]["datatype"], out[0]["shape"]),
                  ("logits", "FP32", [1, 10]), "output header")
        close_to(out[0]["data"], self.expected["3.png"]["logits"], 1e-4, "logits of infer_3.json")
        return out[0]["data"]

    def infer_variants(self):
        base = json.loads(read_example("infer_3.json"))
        data = base["inputs"][0]["data"]
        ref = post_json(self.port, "/v2/models/digits/infer", base)["outputs"][0]["data"]
        # nested data
        nested = infer_body(nest(data, [1, 1, 8, 8]), [1, 1, 8, 8])
        expect_eq(post_json(self.port, "/v2/models/digits/infer", nested)["outputs"][0]["data"],
                  ref, "nested data")
        # id echoed, including one that needs escaping
        for rid in ("req-42", "quote\" and \\ and \u00e9"):
            r = post_json(self.port, "/v2/models/digits/infer", infer_body(data, [1, 1, 8, 8], id=rid))
            expect_eq(r.get("id"), rid, "echoed id")
        # layer_shapes
        r = post_json(self.port, "/v2/models/digits/infer",
                      infer_body(data * 3, [3, 1, 8, 8], parameters={"layer_shapes": True}))
        ls = r["layer_shapes"]
        expect_eq([l["output_shape"] for l in ls],
                  [[3, 16, 8, 8]] * 3 + [[3, 32, 8, 8]] * 3 + [[3, 32, 4, 4]] * 2 + [[3, 512]] +
                  [[3, 64]] * 3 + [[3, 10]], "layer_shapes")
        expect_eq([l["name"] for l in ls][:2], ["features.0", "features.1"], "layer_shapes names")
        expect_eq(r["outputs"][0]["shape"], [3, 10], "batch-3 output shape")
        for i in range(3):
            close_to(r["outputs"][0]["data"][i * 10:(i + 1) * 10], ref, 1e-5, "sample %d" % i)
        r = post_json(self.port, "/v2/models/digits/infer",
                      infer_body(data, [1, 1, 8, 8], parameters={"layer_shapes": False}))
        expect("layer_shapes" not in r, "layer_shapes false still answered them")
        # outputs by name
        r = post_json(self.port, "/v2/models/digits/infer",
                      infer_body(data, [1, 1, 8, 8], outputs=[{"name": "logits"}]))
        expect_eq(r["outputs"][0]["name"], "logits", "named output")
        expect_eq(r["outputs"][0]["data"], ref, "named output data")
        # application/x-www-form-urlencoded (curl -d) and no Content-Type are taken as JSON
        for hdrs in ({"Content-Type": "application/x-www-form-urlencoded"}, {}):
            st, h, b = request(self.port, "POST", "/v2/models/digits/infer", json.dumps(base), hdrs)
            expect(st == 200, "Content-Type %r: %d %s" % (hdrs, st, short(b)))
            expect_eq(json.loads(b)["outputs"][0]["data"], ref, "data with %r" % hdrs)
        return ref

    def binary_in(self, ref):
        data = json.loads(read_example("infer_3.json"))["inputs"][0]["data"]
        payload = struct.pack("<64f", *data)
        head = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                            "parameters": {"binary_data_size": len(payload)}}]}
        body, hdrs = binary_body(head, payload)
        st, h, b = request(self.port, "POST", "/v2/models/digits/infer", body, hdrs)
        expect(st == 200, "status %d: %s" % (st, short(b)))
        expect(h.get("content-type", "").startswith("application/json"), "JSON answer expected")
        expect_eq(json.loads(b)["outputs"][0]["data"], ref, "binary-in logits")
        # the same with a JSON Content-Type
        hdrs["Content-Type"] = "application/json"
        st, h, b = request(self.port, "POST", "/v2/models/digits/infer", body, hdrs)
        expect_eq(json.loads(b)["outputs"][0]["data"], ref, "binary-in logits (JSON type)")

    def _binary_answer(self, h, b, count):
        expect("inference-header-content-length" in h, "no Inference-Header-Content-Length header")
        hl = int(h["inference-header-content-length"])
        expect(h.get("content-type", "").startswith("application/octet-stream"),
               "Content-Type %r" % h.get("content-type"))
        head = json.loads(b[:hl])
        out = head["outputs"][0]
        expect("data" not in out, "binary output also has JSON data")
        expect_eq(out["parameters"]["binary_data_size"], 4 * count, "binary_data_size")
        expect_eq(len(b) - hl, 4 * count, "binary part length")
        return head, list(struct.unpack("<%df" % count, b[hl:]))

    def binary_out(self, ref):
        data = json.loads(read_example("infer_3.json"))["inputs"][0]["data"]
        want = [f32(v) for v in ref]
        for extra in ({"parameters": {"binary_data_output": True}},
                      {"outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}):
            body = infer_body(data, [1, 1, 8, 8], id="bin", **extra)
            st, h, b = request(self.port, "POST", "/v2/models/digits/infer", json.dumps(body),
                               {"Content-Type": "application/json"})
            expect(st == 200, "status %d: %s" % (st, short(b)))
            head, vals = self._binary_answer(h, b, 10)
            expect_eq(head.get("id"), "bin", "id in binary answer")
            expect_eq(head["outputs"][0]["shape"], [1, 10], "shape")
            expect_eq(vals, want, "raw floats vs JSON answer (%r)" % list(extra))
        # binary both ways, batch 2
        payload = struct.pack("<128f", *(data + data))
        head = {"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32",
                            "parameters": {"binary_data_size": len(payload)}}],
                "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
        body, hdrs = binary_body(head, payload)
        st, h, b = request(self.port, "POST", "/v2/models/digits/infer", body, hdrs)
        expect(st == 200, "status %d: %s" % (st, short(b)))
        head, vals = self._binary_answer(h, b, 20)
        close_to(vals[:10], want, 1e-5, "binary both ways, sample 0")
        close_to(vals[10:], want, 1e-5, "binary both ways, sample 1")
        # binary_data false keeps JSON
        body = infer_body(data, [1, 1, 8, 8],
                          outputs=[{"name": "logits", "parameters": {"binary_data": False}}])
        r = post_json(self.port, "/v2/models/digits/infer", body)
        expect_eq(r["outputs"][0]["data"], ref, "binary_data false")

    def bytes_input(self):
        names = ["0.png", "3.png", "7.png", "5.jpg"]
        imgs = [read_example(n) for n in names]
        body, hdrs = multipart(imgs)
        st, h, b = request(self.port, "POST", "/predictions/digits", body, hdrs)
        expect(st == 200, "predictions: %d %s" % (st, short(b)))
        want = flat([p["logits"] for p in json.loads(b)["predictions"]])
        for shape in ([4], [4, 1]):
            r = post_json(self.port, "/v2/models/digits/infer",
                          infer_body([base64.b64encode(i).decode() for i in imgs], shape, "BYTES"))
            expect_eq(r["outputs"][0]["shape"], [4, 10], "BYTES output shape")
            close_to(r["outputs"][0]["data"], want, 1e-5, "BYTES %r vs /predictions" % shape)
        # unpadded base64 is accepted too
        r = post_json(self.port, "/v2/models/digits/infer",
                      infer_body([base64.b64encode(imgs[1]).decode().rstrip("=")], [1], "BYTES"))
        close_to(r["outputs"][0]["data"], want[10:20], 1e-5, "unpadded base64")
        # raw images through the binary extension: 4-byte length, then the bytes
        payload = b"".join(struct.pack("<I", len(i)) + i for i in imgs)
        head = {"inputs": [{"name": "input", "shape": [4], "datatype": "BYTES",
                            "parameters": {"binary_data_size": len(payload)}}]}
        body, hdrs = binary_body(head, payload)
        st, h, b = request(self.port, "POST", "/v2/models/digits/infer", body, hdrs)
        expect(st == 200, "binary BYTES: %d %s" % (st, short(b)))
        close_to(json.loads(b)["outputs"][0]["data"], want, 1e-5, "binary BYTES vs /predictions")

    def dtypes(self, ref):
        data = json.loads(read_example("infer_3.json"))["inputs"][0]["data"]
        r = post_json(self.port, "/v2/models/digits/infer", infer_body(data, [1, 1, 8, 8], "FP64"))
        expect_eq(r["outputs"][0]["data"], ref, "FP64 JSON")
        payload = struct.pack("<64d", *data)
        head = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP64",
                            "parameters": {"binary_data_size": len(payload)}}]}
        body, hdrs = binary_body(head, payload)
        st, h, b = request(self.port, "POST", "/v2/models/digits/infer", body, hdrs)
        expect(st == 200, "FP64 binary: %d %s" % (st, short(b)))
        expect_eq(json.loads(b)["outputs"][0]["data"], ref, "FP64 binary")
        # integers: the same values as FP32 give the same answer
        ints = [(i * 7) % 5 - 2 for i in range(64)]
        want = post_json(self.port, "/v2/models/digits/infer",
                         infer_body([float(v) for v in ints], [1, 1, 8, 8]))["outputs"][0]["data"]
        for dt in ("INT32", "INT64", "INT8", "INT16"):
            r = post_json(self.port, "/v2/models/digits/infer", infer_body(ints, [1, 1, 8, 8], dt))
            expect_eq(r["outputs"][0]["data"], want, dt + " JSON")
        for dt, fmt in (("INT32", "i"), ("INT8", "b"), ("INT64", "q")):
            payload = struct.pack("<64" + fmt, *ints)
            head = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": dt,
                                "parameters": {"binary_data_size": len(payload)}}]}
            body, hdrs = binary_body(head, payload)
            st, h, b = request(self.port, "POST", "/v2/models/digits/infer", body, hdrs)
            expect(st == 200, "%s binary: %d %s" % (dt, st, short(b)))
            expect_eq(json.loads(b)["outputs"][0]["data"], want, dt + " binary")
        uints = [v + 2 for v in ints]
        want_u = post_json(self.port, "/v2/models/digits/infer",
                           infer_body([float(v) for v in uints], [1, 1, 8, 8]))["outputs"][0]["data"]
        r = post_json(self.port, "/v2/models/digits/infer", infer_body(uints, [1, 1, 8, 8], "UINT8"))
        expect_eq(r["outputs"][0]["data"], want_u, "UINT8 JSON")

    # 3. other networks

    def conv_models_vs_python(self):
        """mymodel, seq_basic and seq_named (Conv2d-ReLU-Conv2d, any H and W) against a plain
        Python convolution of their safetensors weights; mymodel at [2,3,10,12] -> [2,64,6,8]."""
        rng = random.Random(7)
        cases = (("mymodel", "conv_1", "conv_2", [2, 3, 10, 12], [2, 64, 6, 8]),
                 ("seq_basic", "0", "2", [1, 3, 5, 7], [1, 64, 1, 3]),
                 ("seq_named", "layer_1", "layer_2", [1, 3, 6, 5], [1, 64, 2, 1]))
        worst = 0.0
        for model, l1, l2, (n, c, h, w), oshape in cases:
            x = [round(rng.uniform(-1, 1), 6) for _ in range(n * c * h * w)]
            r = post_json(self.port, "/v2/models/%s/infer" % model, infer_body(x, [n, c, h, w]))
            out = r["outputs"][0]
            expect_eq(out["shape"], oshape, model + " output shape")
            per_in, per_out = c * h * w, oshape[1] * oshape[2] * oshape[3]
            expect_eq(len(out["data"]), n * per_out, model + " output length")
            wts = read_safetensors(os.path.join(self.models, model, "model.safetensors"))
            for s in range(n):
                x0 = x[s * per_in:(s + 1) * per_in]
                y1, oh, ow = ref_conv2d(x0, 3, h, w, wts[l1 + ".weight"][1], wts[l1 + ".bias"][1],
                                        32, 3)
                y1 = [max(0.0, v) for v in y1]
                y2, _, _ = ref_conv2d(y1, 32, oh, ow, wts[l2 + ".weight"][1],
                                      wts[l2 + ".bias"][1], 64, 3)
                worst = max(worst, close_to(out["data"][s * per_out:(s + 1) * per_out], y2, 1e-4,
                                            "%s sample %d" % (model, s)))
        return "max |diff| %.2g" % worst

    def multipart_part_numbers(self):
        """The same (second) part is named by the same number in every "multipart part N"
        message, whichever layer finds the problem."""
        b = "convserveBoundary7MA4YWxk"
        first = ("--%s\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n" % b).encode() + \
            read_example("3.png") + b"\r\n"
        empty = first + ("--%s\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n\r\n"
                         "--%s--\r\n" % (b, b)).encode()
        no_blank = first + ("--%s\r\nContent-Type: image/png\r\n--%s--\r\n" % (b, b)).encode()
        hdrs = {"Content-Type": "multipart/form-data; boundary=" + b}
        numbers = []
        for body, pattern in ((empty, r"^multipart part (\d+) is empty"),
                              (no_blank, r"^multipart part (\d+) has no blank line")):
            st, h, raw = request(self.port, "POST", "/predictions/digits", body, hdrs)
            expect_eq(st, 400, "status")
            msg = error_of(st, h, raw)
            m = re.match(pattern, msg)
            expect(m, "message %r does not match %r" % (msg, pattern))
            numbers.append(int(m.group(1)))
        expect(numbers[0] == numbers[1], "the second part is 'multipart part %d' when empty but "
               "'multipart part %d' when its headers lack the blank line" % tuple(numbers))

    def image_without_preprocess(self):
        """flatten_linear has no preprocess block: a 3x3 gray image is fed as pixels / 255."""
        pix = [[0, 128, 255], [17, 34, 51], [200, 100, 50]]
        x = [v / 255.0 for row in pix for v in row]
        want = post_json(self.port, "/v2/models/flatten_linear/infer",
                         infer_body(x, [1, 1, 3, 3]))["outputs"][0]["data"]
        st, h, b = request(self.port, "PUT", "/predictions/flatten_linear?top=10", png_gray(3, 3, pix))
        expect(st == 200, "status %d: %s" % (st, short(b)))
        p = json.loads(b)["predictions"][0]
        close_to(p["logits"], want, 1e-5, "flatten_linear logits")
        expect_eq(len(p["top"]), 10, "top entries")
        for t in p["top"]:
            expect_eq(t["label"], str(t["index"]), "label of a model without labels")

    def flatten_linear_infer(self):
        wts = read_safetensors(os.path.join(self.models, "flatten_linear", "model.safetensors"))
        x = [0.5 * i - 2 for i in range(9)]
        r = post_json(self.port, "/v2/models/flatten_linear/infer", infer_body(x, [1, 1, 3, 3]))
        wgt, bias = wts["1.weight"][1], wts["1.bias"][1]
        want = [bias[o] + sum(wgt[o * 9 + i] * x[i] for i in range(9)) for o in range(10)]
        expect_eq(r["outputs"][0]["shape"], [1, 10], "shape")
        close_to(r["outputs"][0]["data"], want, 1e-5, "flatten_linear")

    def other_models_run(self):
        x = [((i * 31) % 17) / 17.0 for i in range(3 * 28 * 28)]
        for name, k in (("cnn_bn", 10), ("cnn_basic", 5)):
            r = post_json(self.port, "/v2/models/%s/infer" % name, infer_body(x, [1, 3, 28, 28]))
            expect_eq(r["outputs"][0]["shape"], [1, k], name + " shape")
            expect(all(isinstance(v, float) and math.isfinite(v) for v in r["outputs"][0]["data"]),
                   name + " output not finite")
        # images into an RGB model; labels come from model.json
        st, h, b = request(self.port, "PUT", "/predictions/cnn_bn?top=2", read_example("5.jpg"))
        expect(st == 200, "cnn_bn image: %d %s" % (st, short(b)))
        r = json.loads(b)
        expect_eq(r["input_shape"], [1, 3, 28, 28], "cnn_bn input_shape")
        labels = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                  "truck"]
        for t in r["predictions"][0]["top"]:
            expect_eq(t["label"], labels[t["index"]], "cnn_bn label")

    def shapes_cnn_bn(self):
        st, h, b = request(self.port, "GET", "/v2/models/cnn_bn/shapes?input=1,3,30,30")
        expect_eq(st, 400, "status")
        expect_eq(error_of(st, h, b),
                  "layer 7 Linear 'fc.0' expects 36864 features, input [1,3,30,30] gives 43264",
                  "message")
        r = get_json(self.port, "/v2/models/cnn_bn/shapes?input=4,3,28,28")
        expect_eq(r["output"], [4, 10], "cnn_bn 28x28 output")

    def shapes_mymodel(self):
        r = get_json(self.port, "/v2/models/mymodel/shapes?input=16,3,50,50")
        expect_eq(r["model_name"], "mymodel", "model_name")
        expect_eq(r["input"], [16, 3, 50, 50], "input")
        expect_eq(r["output"], [16, 64, 46, 46], "output")
        expect_eq([(l["op"], l["name"], l["output_shape"]) for l in r["layers"]],
                  [("Conv2d", "conv_1", [16, 32, 48, 48]), ("ReLU", "act", [16, 32, 48, 48]),
                   ("Conv2d", "conv_2", [16, 64, 46, 46])], "layers")

    # 4. concurrency

    def hammer(self, jobs, rounds):
        """Sends every job (path, body, id, expected data) at once from its own thread, `rounds`
        times, and compares each answer with the expected one. Returns the worst difference."""
        barrier = threading.Barrier(len(jobs))
        errors = []
        worst = [0.0]
        lock = threading.Lock()

        def worker(path, body, rid, want):
            tol = 1e-4 * max(1.0, max(abs(v) for v in want))
            for rnd in range(rounds):
                try:
                    barrier.wait(timeout=30)
                    st, h, b = request(self.port, "POST", path, body,
                                       {"Content-Type": "application/json"})
                    if st != 200:
                        raise AssertionError("status %d: %s" % (st, short(b)))
                    r = json.loads(b)
                    if r.get("id") != rid:
                        raise AssertionError("id %r, expected %r" % (r.get("id"), rid))
                    got = r["outputs"][0]["data"]
                    if len(got) != len(want):
                        raise AssertionError("%s: %d values, expected %d" % (rid, len(got),
                                                                              len(want)))
                    d = max(abs(g - w) for g, w in zip(got, want))
                    with lock:
                        worst[0] = max(worst[0], d)
                    if d > tol:
                        raise AssertionError("%s round %d: |diff| %.3g (cross-talk?)" %
                                             (rid, rnd, d))
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append("%s: %s" % (type(e).__name__, e))
                    barrier.abort()
                    return

        ts = [threading.Thread(target=worker, args=j) for j in jobs]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        real = [e for e in errors if not e.startswith("BrokenBarrierError")] or errors
        expect(not errors, "%d errors, first: %s" % (len(errors), real[:3]))
        return worst[0]

    def sequential_answers(self, path, inputs, shapes, prefix):
        jobs = []
        for i, (x, shape) in enumerate(zip(inputs, shapes)):
            rid = "%s%d" % (prefix, i)
            body = json.dumps(infer_body(x, shape, id=rid)).encode()
            want = post_json(self.port, path, body)["outputs"][0]["data"]
            jobs.append((path, body, rid, want))
        expect(len({tuple(j[3]) for j in jobs}) == len(jobs),
               "sequential answers are not distinct, so cross-talk could go unseen")
        return jobs

    def concurrency(self, threads=32, rounds=10):
        rng = random.Random(1234)
        inputs = [[round(rng.uniform(-1.5, 2.5), 5) for _ in range(64)] for _ in range(threads)]
        jobs = self.sequential_answers(INFER, inputs, [[1, 1, 8, 8]] * threads, "t")
        before = metrics_text(self.port)
        worst = self.hammer(jobs, rounds)
        after = metrics_text(self.port)

        def delta(name, **labels):
            return metric(after, name, **labels) - metric(before, name, **labels)
        batches = delta("convserve_batch_size_count", model="digits")
        singles = delta("convserve_batch_size_bucket", model="digits", le="1")
        expect_eq(delta("convserve_batch_size_sum", model="digits"), threads * rounds,
                  "samples in the batch-size histogram")
        expect_eq(delta("convserve_inferences_total", model="digits"), threads * rounds,
                  "inferences_total")
        expect(batches - singles > 0, "no batch larger than 1 among %d batches" % batches)
        return "worst |diff| %.2g, %d batches for %d requests" % (worst, batches,
                                                                 threads * rounds)

    def concurrency_multi_sample(self, threads=24, rounds=3):
        """Requests of 1 to 7 samples at once: batches are split at max_batch_size 64 and every
        request gets back its own rows."""
        rng = random.Random(99)
        shapes = [[1 + i % 7, 1, 8, 8] for i in range(threads)]
        inputs = [[round(rng.uniform(-1.5, 2.5), 5) for _ in range(64 * s[0])] for s in shapes]
        return "worst |diff| %.2g" % self.hammer(
            self.sequential_answers(INFER, inputs, shapes, "m"), rounds)

    def concurrency_mixed_shapes(self, threads=12, rounds=3):
        """A free-size model: requests of different H x W must never share a batch."""
        rng = random.Random(5)
        shapes = [[1, 3, 5 + i % 3, 6 + i % 2] for i in range(threads)]
        inputs = [[round(rng.uniform(-1, 1), 5) for _ in range(3 * s[2] * s[3])] for s in shapes]
        return "worst |diff| %.2g" % self.hammer(
            self.sequential_answers("/v2/models/mymodel/infer", inputs, shapes, "s"), rounds)

    # 5. more of the protocol

    def keep_alive(self):
        """Answers and errors one after another on one connection leave no state behind."""
        good = json.dumps(infer_body(GOOD, [1, 1, 8, 8])).encode()
        seq = [("POST", INFER, good, {"Content-Type": "application/json"}, 200),
               ("POST", INFER, b"{", {"Content-Type": "application/json"}, 400),
               ("PUT", "/predictions/digits", b"not an image", {}, 400),
               ("GET", "/v2/models/digits", None, {}, 200),
               ("POST", INFER, good[:-5], {"Content-Type": "application/json"}, 400),
               ("PUT", "/predictions/digits", read_example("3.png"), {}, 200),
               ("POST", INFER, good, {"Content-Type": "application/json"}, 200)]
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        answers = []
        try:
            for method, path, body, hdrs, status in seq:
                conn.request(method, path, body=body, headers=hdrs)
                r = conn.getresponse()
                b = r.read()
                expect(r.status == status, "%s %s: %d, expected %d: %s" %
                       (method, path, r.status, status, short(b)))
                answers.append(json.loads(b))
        finally:
            conn.close()
        expect_eq(answers[-1]["outputs"], answers[0]["outputs"], "first and last answer")
        close_to(answers[5]["predictions"][0]["logits"], self.expected["3.png"]["logits"], 1e-4,
                 "3.png on a reused connection")

    def chunked_body(self, ref):
        data = json.loads(read_example("infer_3.json"))["inputs"][0]["data"]
        body = json.dumps(infer_body(data, [1, 1, 8, 8])).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request("POST", INFER, body=iter([body[:10], body[10:500], body[500:]]),
                         headers={"Content-Type": "application/json",
                                  "Transfer-Encoding": "chunked"}, encode_chunked=True)
            r = conn.getresponse()
            b = r.read()
        finally:
            conn.close()
        expect(r.status == 200, "status %d: %s" % (r.status, short(b)))
        expect_eq(json.loads(b)["outputs"][0]["data"], ref, "chunked infer")

    def full_batches(self, ref):
        data = json.loads(read_example("infer_3.json"))["inputs"][0]["data"]
        r = post_json(self.port, INFER, infer_body(data * 64, [64, 1, 8, 8]))
        expect_eq(r["outputs"][0]["shape"], [64, 10], "batch 64 shape")
        out = r["outputs"][0]["data"]
        for i in range(64):
            close_to(out[i * 10:(i + 1) * 10], ref, 1e-5, "batch 64 row %d" % i)
        names = ["0.png", "3.png", "7.png", "5.jpg"] * 16
        body, hdrs = multipart([read_example(n) for n in names])
        st, h, b = request(self.port, "POST", "/predictions/digits", body, hdrs)
        expect(st == 200, "64 images: %d %s" % (st, short(b)))
        preds = json.loads(b)["predictions"]
        expect_eq(len(preds), 64, "predictions for 64 images")
        for n, p in zip(names, preds):
            expect_eq(p["top"][0]["label"], self.expected[n]["label"], "label of " + n)

    def image_formats(self):
        """The same 8x8 pixels as PNG, binary and ASCII PGM and BMP give what the normalised
        tensor gives through infer (no resize at 8x8: this checks decoding and normalisation)."""
        pix = [[(x * 29 + y * 53 + x * y * 7) % 256 for x in range(8)] for y in range(8)]
        scale, mean, std = 0.00392156862745098, 0.3054, 0.3761
        x = [(v * scale - mean) / std for row in pix for v in row]
        want = post_json(self.port, INFER, infer_body(x, [1, 1, 8, 8]))["outputs"][0]["data"]
        flat_pix = bytes(v for row in pix for v in row)
        images = {
            "PNG": png_gray(8, 8, pix),
            "PGM (P5)": b"P5\n# a comment\n8 8\n255\n" + flat_pix,
            "BMP": bmp24(pix),
        }
        for name, img in images.items():
            st, h, b = request(self.port, "PUT", "/predictions/digits", img)
            expect(st == 200, "%s: %d %s" % (name, st, short(b)))
            close_to(json.loads(b)["predictions"][0]["logits"], want, 1e-5, name)

    def every_byte(self):
        """Every byte value in the path (percent-encoded and raw), the query and a header value
        comes back, where a message quotes it, in a body that is strict UTF-8 JSON: bytes that are
        not UTF-8 are replaced (U+FFFD), control bytes escaped. Raw bytes that would end or split
        the request line or a header line (NUL, CR, LF, space, tab) are left to the framing cases."""
        framing = {0x00, 0x09, 0x0a, 0x0d, 0x20}
        sent = 0
        for b in range(256):
            pct = "%%%02X" % b
            reqs = [("GET", "/v2/models/x%sy/ready" % pct, [], 404),
                    ("GET", "/v2/models/digits/shapes?input=1,1,8,x%s" % pct, [], 400),
                    ("POST", INFER, [("Content-Type", "application/x" + chr(b) + "y")], 415)]
            if b not in framing and b != ord("?") and b != ord("%") and b != ord("/") and b != ord("#"):
                reqs.append(("GET", "/v2/models/x" + chr(b) + "y/ready", [], 404))
                reqs.append(("GET", "/v2/models/digits/shapes?input=1,1,8,x" + chr(b), [], 400))
            for method, path, hdrs, want in reqs:
                if any(c in v for _, v in hdrs for c in "\x00\r\n"):
                    continue
                st, h, body = raw_request(self.port, method, path, hdrs, b"{}" if method == "POST"
                                          else b"")
                sent += 1
                where = "%s %r (byte 0x%02x)" % (method, path if not hdrs else hdrs, b)
                try:
                    text = body.decode("utf-8", "strict")
                except UnicodeDecodeError as e:
                    raise AssertionError("%s: the answer is not UTF-8 (%s): %r" % (where, e, body[:120]))
                expect(h.get("content-type", "").startswith("application/json"),
                       "%s: Content-Type %r" % (where, h.get("content-type")))
                obj = json.loads(text)
                expect(isinstance(obj, dict) and isinstance(obj.get("error"), str),
                       "%s: not {\"error\": ...}: %s" % (where, short(body)))
                expect(st == want, "%s: status %d, expected %d (%s)" % (where, st, want, obj["error"]))
        return "%d requests" % sent

    def alive_and_right(self):
        st, h, b = request(self.port, "GET", "/v2/health/ready")
        expect_eq(st, 200, "ready after the table")
        st, h, b = request(self.port, "PUT", "/predictions/digits", read_example("3.png"))
        expect(st == 200, "status %d: %s" % (st, short(b)))
        close_to(json.loads(b)["predictions"][0]["logits"], self.expected["3.png"]["logits"], 1e-4,
                 "3.png after the table")
        self.expect_idle()

    def expect_idle(self):
        """Only the /metrics request itself is in flight and every queue is empty."""
        deadline = time.monotonic() + 3
        while True:
            text = metrics_text(self.port)
            inflight = metric(text, "convserve_inflight_requests")
            queued = sum(metric(text, "convserve_queue_length", model=m) for m in LOADED.split(", "))
            if (inflight, queued) == (1, 0) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        expect_eq((inflight, queued), (1, 0), "(in-flight requests, queued requests) when idle")

    def hang_ups(self):
        """Clients that send a request and close at once, connect and close, or stop within the
        headers: the server stays healthy and the in-flight count returns to idle."""
        x = [0.5] * (8 * 3 * 28 * 28)
        body = json.dumps(infer_body(x, [8, 3, 28, 28])).encode()
        head = ("POST /v2/models/cnn_basic/infer HTTP/1.1\r\nHost: x\r\nContent-Type: "
                "application/json\r\nContent-Length: %d\r\n\r\n" % len(body)).encode()
        png3 = read_example("3.png")
        put = ("PUT /predictions/digits HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" %
               len(png3)).encode() + png3
        for i in range(10):
            for data in (head + body, put, b"", b"GET /v2/health/li", head[:30]):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                if data:
                    sock.sendall(data)
                sock.close()
        self.alive_and_right_quick()
        self.expect_idle()

    def alive_and_right_quick(self):
        st, h, b = request(self.port, "PUT", "/predictions/digits", read_example("0.png"))
        expect(st == 200, "status %d: %s" % (st, short(b)))
        close_to(json.loads(b)["predictions"][0]["logits"], self.expected["0.png"]["logits"], 1e-4,
                 "0.png")

    def multipart_variants(self):
        """Quoted boundary with a space and a colon, LF-only line ends, a preamble, an epilogue,
        unknown part headers, a lowercase header name, a Windows file name, a charset parameter."""
        png3, png7 = read_example("3.png"), read_example("7.png")
        body = (b"preamble text\r\n--a b:c\nContent-Disposition: form-data; name=\"x\"\n\n" + png3 +
                b"\n--a b:c\r\ncontent-disposition: form-data; name=y; "
                b"filename=\"C:\\dir\\f.png\"\r\nX-Other: 1\r\n\r\n" + png7 +
                b"\r\n--a b:c--\r\nepilogue")
        for ct in ('multipart/form-data; boundary="a b:c"',
                   'Multipart/Form-Data; charset=utf-8; boundary="a b:c"'):
            st, h, b = request(self.port, "POST", "/predictions/digits", body, {"Content-Type": ct})
            expect(st == 200, "%s: %d %s" % (ct, st, short(b)))
            preds = json.loads(b)["predictions"]
            expect_eq([p["top"][0]["label"] for p in preds], ["3", "7"], "labels")
            close_to(preds[1]["logits"], self.expected["7.png"]["logits"], 1e-4, "7.png")


# ---- the hostile table ------------------------------------------------------------------------

INFER = "/v2/models/digits/infer"
JSON_CT = [("Content-Type", "application/json")]
GOOD = [0.1] * 64
CASES = os.path.join(HERE, "cases")


def J(obj):
    return json.dumps(obj).encode()


def case_variables():
    """What ${NAME} stands for in the case files: the models loaded and the main server's limits."""
    return {"LOADED": LOADED, "MAX_BODY": DEFAULT_MAX_BODY, "MAX_PIXELS": DEFAULT_MAX_PIXELS,
            "MAX_INPUT_PIXELS": DEFAULT_MAX_INPUT_PIXELS}


def hostile_rows():
    """The hostile requests of tests/integration/cases/*.cases (format: casefile.py), each with
    the exact answer the main server must give."""
    return casefile.load(CASES, case_variables())


def read_answer(sock, method):
    """One answer from a socket: (status, {lowercase header: value}, body, bytes read past it).
    The body is read by its Content-Length, or chunked, or to the end of the connection."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed before an answer: %r" % buf[:200])
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    hl = head.decode("latin-1").split("\r\n")
    status = int(hl[0].split()[1])
    hdrs = {}
    for line in hl[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()

    def more():
        try:
            return sock.recv(65536)
        except OSError:
            return b""
    if method == "HEAD" or status in (204, 304):
        return status, hdrs, b"", rest
    if "content-length" in hdrs:
        n = int(hdrs["content-length"])
        while len(rest) < n:
            chunk = more()
            if not chunk:
                break
            rest += chunk
        return status, hdrs, rest[:n], rest[n:]
    while True:
        chunk = more()
        if not chunk:
            return status, hdrs, rest, b""
        rest += chunk


def run_raw(port, r, timeout=5):
    """A raw case: the request bytes as written; then, for `closed`, nothing more but the end."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(r["raw"] if r["send_body"] else r["raw"][:r["raw"].index(b"\r\n\r\n") + 4])
        except OSError:
            pass  # the server may answer and close before taking all of it
        st, hdrs, body, extra = read_answer(s, r["method"])
        if r["closed"]:
            s.settimeout(3)
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    extra += chunk
            except socket.timeout:
                raise AssertionError("the connection stayed open after the answer")
            except OSError:
                pass
            expect(not extra, "more was sent after the answer: %r" % extra[:200])
        return st, hdrs, body
    finally:
        s.close()


def run_row(port, r):
    if r.get("raw") is not None:
        try:
            st, hdrs, body = run_raw(port, r)
        except socket.timeout:
            raise AssertionError("no answer within 5 s (expected %d)" % r["status"])
        if r["mhd_answer"]:
            expect(st == r["status"], "status %d, expected %d (%s)" % (st, r["status"], short(body)))
            return
        msg = error_of(st, hdrs, body) if st >= 400 else None
        expect(st == r["status"], "status %d, expected %d (%s)" % (st, r["status"],
                                                                    msg if msg else short(body)))
        if r["error"] is not None:
            expect(msg == r["error"], "error %r, expected %r" % (msg, r["error"]))
        if r["error_re"] is not None:
            expect(re.search(r["error_re"], msg), "error %r does not match %r" % (msg, r["error_re"]))
        for k, v in r["expect_headers"].items():
            expect(hdrs.get(k) == v, "header %s: %r, expected %r" % (k, hdrs.get(k), v))
        return
    wait = 15 if r["send_body"] else 5
    try:
        st, hdrs, body = raw_request(port, r["method"], r["path"], r["headers"], r["body"],
                                     r["send_body"], timeout=wait)
    except socket.timeout:
        raise AssertionError("no answer within %d s%s (expected %d)" % (
            wait, "" if r["send_body"] else " with the body not sent", r["status"]))
    if r["method"] == "HEAD":  # the headers of the answer, never a body
        expect(st == r["status"] and not body, "HEAD: status %d, body %r" % (st, body[:80]))
        for k, v in r["expect_headers"].items():
            expect(hdrs.get(k) == v, "header %s: %r, expected %r" % (k, hdrs.get(k), v))
        return
    msg = error_of(st, hdrs, body) if st >= 400 else None
    expect(st == r["status"], "status %d, expected %d (%s)" % (st, r["status"],
                                                                msg if msg else short(body)))
    if r["error"] is not None:
        expect(msg == r["error"], "error %r, expected %r" % (msg, r["error"]))
    if r["error_re"] is not None:
        expect(re.search(r["error_re"], msg), "error %r does not match %r" % (msg, r["error_re"]))
    for k, v in r["expect_headers"].items():
        expect(hdrs.get(k) == v, "header %s: %r, expected %r" % (k, hdrs.get(k), v))


# ---- a second server: small body limit, queue of 1, API key, CORS -----------------------------

API_KEY = "sekret-key-42"
AUTH = [("Authorization", "Bearer " + API_KEY)]
ORIGIN = "https://example.test"
LIMITS_ARGS = ["--max-body-bytes", "1024", "--max-queue", "1", "--max-queue-delay-us", "200000",
               "--api-key", API_KEY, "--cors-origin", ORIGIN]


def limits_checks(run, port, expected):
    png3 = read_example("3.png")
    auth = dict(AUTH)

    def chunked_over():
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(("PUT /predictions/digits HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       "Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n" %
                       API_KEY).encode())
            try:
                for _ in range(3):
                    s.sendall(b"400\r\n" + b"\0" * 1024 + b"\r\n")
                s.sendall(b"0\r\n\r\n")
            except OSError:
                pass
            buf = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
        finally:
            s.close()
        head, _, body = buf.partition(b"\r\n\r\n")
        expect(head.startswith(b"HTTP/1.1 413"), "answer %s" % short(buf))
        expect_eq(json.loads(body)["error"], "request body exceeds the limit of 1024 bytes",
                  "message")

    def length_over():
        st, h, b = raw_request(port, "POST", INFER, JSON_CT + AUTH + [("Content-Length", "5000")],
                               b"{" * 5000, send_body=False)
        expect_eq(st, 413, "status")
        expect_eq(error_of(st, h, b), "request body is 5000 bytes; the limit is 1024", "message")

    def under_limit():
        st, h, b = request(port, "PUT", "/predictions/digits", png3, auth)
        expect(st == 200, "status %d: %s" % (st, short(b)))
        close_to(json.loads(b)["predictions"][0]["logits"], expected["3.png"]["logits"], 1e-4,
                 "3.png")
        expect_eq(h.get("access-control-allow-origin"), ORIGIN, "Access-Control-Allow-Origin")
        expect("Inference-Header-Content-Length" in h.get("access-control-expose-headers", ""),
               "Access-Control-Expose-Headers %r" % h.get("access-control-expose-headers"))

    def api_key():
        msg = "missing or wrong API key; send 'Authorization: Bearer <key>'"
        for hdrs in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + API_KEY},
                     {"Authorization": "Bearer " + API_KEY + "x"},
                     {"Authorization": "Bearer " + API_KEY[:-1]}):
            for method, path, body in (("GET", "/v2/models/digits", None), ("GET", "/metrics", None),
                                       ("PUT", "/predictions/digits", png3)):
                st, h, b = request(port, method, path, body, hdrs)
                expect(st == 401, "%s %s with %r: %d" % (method, path, hdrs, st))
                expect_eq(error_of(st, h, b), msg, "401 message")
                expect_eq(h.get("www-authenticate"), "Bearer", "WWW-Authenticate")
        for path in ("/v2/health/live", "/v2/health/ready"):
            st, h, b = request(port, "GET", path)
            expect(st == 200, "%s without a key: %d" % (path, st))
        st, h, b = request(port, "GET", "/v2/models/digits", None, auth)
        expect(st == 200, "metadata with the key: %d" % st)
        # RFC 9110 11.4: the scheme in any case, one or more spaces, nothing after the key but
        # white space; anything else after the key is another key.
        for value, want in (("bearer " + API_KEY, 200), ("BEARER " + API_KEY, 200),
                            ("Bearer   " + API_KEY, 200), ("Bearer " + API_KEY + "  ", 200),
                            ("Bearer " + API_KEY + " junk", 401), ("Bearer" + API_KEY, 401),
                            ("Bearer\t" + API_KEY, 401), ("Basic " + API_KEY, 401)):
            st, h, b = raw_request(port, "GET", "/v2/models/digits", [("Authorization", value)])
            expect(st == want, "Authorization %r: %d, expected %d" % (value, st, want))
        # OPTIONS needs the key too (unless it is a browser's preflight, see cors_preflight),
        # and says nothing about which models exist.
        for path in ("/v2/models/digits/infer", "/v2/models/nope/infer"):
            st, h, b = raw_request(port, "OPTIONS", path, [])
            expect(st == 401, "OPTIONS %s without a key: %d" % (path, st))
            expect_eq(error_of(st, h, b), msg, "401 message")

    def check_order():
        """The key first (401; server/http.c checks it before the route so that nothing about
        the models can be learnt without it), then the route (404, 405), then Content-Length
        (413), then Content-Type (415), then the body (400). A request announcing a body over
        the limit gets its answer, whichever it is, without sending the body."""
        cases = [
            ("GET", "/v2/models/nope", [], b"", 401),
            ("DELETE", "/predictions/digits", [], b"", 401),
            ("PUT", "/predictions/digits", [], png3, 401),
            ("PUT", "/predictions/digits", AUTH + [("Content-Type", "text/plain")], png3, 415),
            ("PUT", "/predictions/digits", AUTH, b"xx", 400),
            ("GET", "/v2/models/nope", AUTH, b"", 404),
            ("DELETE", "/predictions/digits", AUTH, b"", 405),
            ("PUT", "/predictions/digits", AUTH + [("Content-Length", "5000"),
                                                   ("Content-Type", "text/plain")], None, 413),
            ("PUT", "/predictions/digits", [("Content-Length", "5000")], None, 401),
            ("PUT", "/predictions/nope", AUTH + [("Content-Length", "5000")], None, 404),
        ]
        for method, path, hdrs, body, want in cases:
            try:
                st, h, b = raw_request(port, method, path, hdrs, body or b"",
                                       send_body=body is not None, timeout=5)
            except socket.timeout:
                raise AssertionError("%s %s %r%s: no answer within 5 s (expected %d)" % (
                    method, path, hdrs, "" if body is not None else " (body not sent)", want))
            expect(st == want, "%s %s %r: %d, expected %d (%s)" % (method, path, hdrs, st, want,
                                                                   short(b)))

    def cors_preflight():
        """A preflight (no key: browsers send none) gets one answer whatever the path, so that it
        tells nothing about which models exist; OPTIONS with the key gets the same."""
        answers = []
        for path, hdrs in ((INFER, []), ("/v2/models/nope/infer", []), ("/v3/whatever", []),
                           (INFER, AUTH), ("/v2/models/nope", AUTH)):
            pre = [("Origin", ORIGIN), ("Access-Control-Request-Method", "POST")] if not hdrs \
                else []
            st, h, b = raw_request(port, "OPTIONS", path, pre + hdrs)
            h.pop("date", None)
            answers.append((st, sorted(h.items()), b))
        expect(all(a == answers[0] for a in answers), "OPTIONS answers differ: %s" % answers)
        st, h, b = raw_request(port, "OPTIONS", INFER, [("Origin", ORIGIN),
                                                        ("Access-Control-Request-Method", "POST")])
        expect_eq(st, 204, "preflight status")
        expect_eq(h.get("access-control-allow-origin"), ORIGIN, "Allow-Origin")
        expect("POST" in h.get("access-control-allow-methods", ""), "Allow-Methods %r" %
               h.get("access-control-allow-methods"))
        expect("Inference-Header-Content-Length" in h.get("access-control-allow-headers", ""),
               "Allow-Headers %r" % h.get("access-control-allow-headers"))

    def queue_full(n=8):
        barrier = threading.Barrier(n)
        results = []
        lock = threading.Lock()

        def worker():
            try:
                barrier.wait(timeout=10)
                st, h, b = request(port, "PUT", "/predictions/digits", png3, auth)
            except Exception as e:  # noqa: BLE001
                st, h, b = -1, {}, str(e).encode()
            with lock:
                results.append((st, h, b))
        ts = [threading.Thread(target=worker) for _ in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        codes = sorted(r[0] for r in results)
        for st, h, b in results:
            if st == 200:
                close_to(json.loads(b)["predictions"][0]["logits"], expected["3.png"]["logits"],
                         1e-4, "3.png")
            else:
                expect(st == 503, "status %d: %s" % (st, short(b)))
                expect(re.match(r"^the queue of this model is full \(1 requests waiting\)$",
                                error_of(st, h, b)), "503 message %s" % short(b))
                expect_eq(h.get("retry-after"), "1", "Retry-After of a 503")
        expect(200 in codes and 503 in codes, "expected some 200 and some 503, got %s" % codes)
        return "codes %s" % codes

    run.check("limits server: chunked body over --max-body-bytes -> 413", chunked_over)
    run.check("limits server: Content-Length over --max-body-bytes -> 413 before the body",
              length_over)
    run.check("limits server: a body under the limit works, with CORS headers", under_limit)
    run.check("limits server: --api-key -> 401 without the right bearer key, health open",
              api_key)
    run.check("limits server: CORS preflight -> 204", cors_preflight)
    run.check("limits server: order of checks 401, 404/405, 413, 415, 400", check_order)
    run.check("limits server: --max-queue 1 -> 503 when full, right answers otherwise",
              queue_full)


NOT_READY = {"error": "the server is not ready"}


# A probe process: GETs one path on a new connection every `period` seconds (as a kubelet does)
# and prints one JSON line per probe: [ms, status (-1 when the connection failed), body or error].
# A process of its own, so that load threads in the test's process cannot delay it.
PROBE_SCRIPT = r"""
import json, socket, sys, time
port, period, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
while True:
    t0 = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        buf = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            buf += c
        s.close()
        head, _, body = buf.partition(b"\r\n\r\n")
        status = int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else 0
        text = body[:200].decode("latin-1")
    except (OSError, ValueError, IndexError) as e:
        status, text = -1, str(e)
    print(json.dumps([(time.monotonic() - t0) * 1e3, status, text]), flush=True)
    time.sleep(period)
"""


def start_probe(port, period, path):
    """Starts a probe process (PROBE_SCRIPT) on path; read it with probe_results."""
    return subprocess.Popen([sys.executable, "-c", PROBE_SCRIPT, str(port), str(period), path],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)


def probe_results(proc):
    """Stops a probe process and returns its probes as (ms, status, body or error)."""
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return [tuple(json.loads(line)) for line in out.decode().splitlines()]


def harness_crashed(run):
    """Counts a crash of the test harness itself as a failure and prints where; the summary
    still follows."""
    run.failed += 1
    print("FAIL  the test harness itself:\n%s" % traceback.format_exc(), flush=True)


def finish(run, servers, workdir, keep, t_start):
    """The end of a suite: kills every server still running, prints the last lines of their logs
    when something failed (or with --keep), removes workdir unless kept, prints the summary and
    returns the exit code."""
    for sv in servers:
        sv.kill()
    if run.failed or keep:
        for sv in servers:
            print("---- last lines of %s" % sv.log_path)
            print("\n".join(sv.text().splitlines()[-15:]))
    if keep:
        print("kept %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print("(%.1f s)" % (time.monotonic() - t_start))
    print("%d passed, %d failed" % (run.passed, run.failed))
    return 1 if run.failed else 0


def stop_under_load(srv, port, path, body, check, loops=8, warm=8, warm_timeout=10):
    """SIGTERM while requests are in flight: those the server took finish with 200, and it exits.
    `loops` clients post `body` to `path` in a loop; two more have sent their headers and half
    their body when SIGTERM comes, and the rest 100 ms later: they are in flight for certain and
    must get 200. SIGTERM comes once `warm` answers are in (or after warm_timeout seconds).
    Whether a loop request sent just before the signal counts as taken depends on when the server
    read it, so those may also get 503 "the server is not ready" or find the connection refused,
    but nothing else. Every 200 answer goes through check(answer as JSON). Returns rc (the exit
    code, None on a timeout), seconds (from SIGTERM to exit) and the counts of answers; raises on
    any wrong answer. The caller judges the exit code."""
    head = ("POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (path, len(body))).encode()
    results, slow_results, lock = [], [], threading.Lock()
    stop, termed = threading.Event(), threading.Event()

    def loop():
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                st, h, b = request(port, "POST", path, body,
                                   {"Content-Type": "application/json"}, timeout=60)
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    results.append(("closed", type(e).__name__, t0, termed.is_set()))
                return
            with lock:
                results.append((st, b, t0, termed.is_set()))

    def slow(sock):
        try:
            termed.wait(60)
            time.sleep(0.1)
            sock.sendall(body[len(body) // 2:])
            st, _, b, _ = read_answer(sock, "POST")
        except (OSError, AssertionError, ValueError, IndexError) as e:  # no answer: checked below
            st, b = -1, str(e).encode()
        finally:
            sock.close()
        with lock:
            slow_results.append((st, b))

    socks = []
    for _ in range(2):
        sk = socket.create_connection(("127.0.0.1", port), timeout=60)
        sk.sendall(head + body[:len(body) // 2])
        socks.append(sk)
    ts = [threading.Thread(target=loop) for _ in range(loops)]
    ts += [threading.Thread(target=slow, args=(sk,)) for sk in socks]
    for t in ts:
        t.start()
    deadline = time.monotonic() + warm_timeout
    while time.monotonic() < deadline and sum(1 for r in results if r[0] == 200) < warm:
        time.sleep(0.01)
    t_term = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    termed.set()
    rc, _ = srv.stop(signalled=True)
    dt = time.monotonic() - t_term
    stop.set()
    for t in ts:
        t.join(60)
    expect_eq(len(slow_results), 2, "answers to the two clients with half a body at SIGTERM")
    for st, b in slow_results:
        expect(st == 200, "a client with half its body sent at SIGTERM (the rest 100 ms later) "
               "got %d: %s" % (st, short(b)))
        check(json.loads(b))
    late = closed = 0
    for st, b, t0, after in results:
        if st == "closed":
            expect(after, "a connection failed before SIGTERM: %s" % b)
            closed += 1
        elif st == 503 and json.loads(b) == NOT_READY and t0 > t_term - 1:
            late += 1
        else:
            expect(st == 200, "a request sent %.1f ms before SIGTERM got %d: %s" % (
                (t_term - t0) * 1e3, st, short(b)))
            check(json.loads(b))
    return {"rc": rc, "seconds": dt, "answered": len(results) - closed + len(slow_results),
            "late": late, "closed": closed}


def stop_main_under_load(srv, port):
    """The main server stopped under a load of cnn_basic batches of 8."""
    x = [((i * 31) % 17) / 17.0 for i in range(8 * 3 * 28 * 28)]
    body = json.dumps(infer_body(x, [8, 3, 28, 28])).encode()

    def check(answer):
        expect_eq(answer["outputs"][0]["shape"], [8, 5], "shape during shutdown")
    r = stop_under_load(srv, port, "/v2/models/cnn_basic/infer", body, check)
    expect(r["rc"] == 0, "exit code %r after SIGTERM" % r["rc"])
    expect(r["seconds"] < SHUTDOWN_TIMEOUT + 2, "took %.1fs to stop" % r["seconds"])
    text = srv.text()
    expect("SIGTERM received" in text and "stopped" in text, "no shutdown lines in the log")
    return "%d answered, %d of them 503 as read after the signal, %d refused or closed, " \
        "stopped in %.2fs" % (r["answered"], r["late"], r["closed"], r["seconds"])


# ---- broken model repositories ----------------------------------------------------------------

def broken_repos(run, binary, models, workdir):
    src = os.path.join(models, "digits")
    with open(os.path.join(src, "model.json")) as f:
        spec = json.load(f)
    with open(os.path.join(src, "model.safetensors"), "rb") as f:
        st_bytes = f.read()
    hlen = struct.unpack("<Q", st_bytes[:8])[0]
    header = json.loads(st_bytes[8:8 + hlen])

    def repo(tag, spec_obj, weights, folder="digits"):
        d = os.path.join(workdir, "broken-" + tag, folder)
        os.makedirs(d)
        with open(os.path.join(d, "model.json"), "w") as f:
            json.dump(spec_obj, f)
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(weights)
        return os.path.dirname(d), d

    def refuse(root, want_re):
        t0 = time.monotonic()
        p = subprocess.run([binary, "--models", root, "--port", "0"], cwd=workdir,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        dt = time.monotonic() - t0
        err = p.stderr.decode("utf-8", "replace")
        expect(p.returncode != 0, "exit code 0; stderr: %s" % short(err, 600))
        expect(dt < 10, "took %.1fs to refuse" % dt)
        expect("listening on" not in err, "it listened: %s" % short(err, 600))
        expect(re.search(want_re, err), "stderr %r does not match %r" % (short(err, 600), want_re))
        expect(not re.search(r"AddressSanitizer|LeakSanitizer|runtime error", err),
               "sanitizer report: %s" % short(err, 2000))

    # (a) Linear in_features that the convolutions do not produce
    a = json.loads(json.dumps(spec))
    a["layers"][9]["in_features"] = 500
    root, _ = repo("a", a, st_bytes)
    run.check("refuses a Linear in_features mismatch", refuse, root,
              r"error model 'digits': layer 9 Linear 'classifier\.1' expects 500 features, "
              r"input \[1,1,8,8\] gives 512")

    # (b) a tensor of the wrong shape (same byte count)
    h = json.loads(json.dumps(header))
    h["classifier.4.weight"]["shape"] = [5, 128]
    hb = json.dumps(h).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    root, _ = repo("b", spec, struct.pack("<Q", len(hb)) + hb + st_bytes[8 + hlen:])
    run.check("refuses a safetensors tensor of the wrong shape", refuse, root,
              r"error model 'digits': layer 12 Linear 'classifier\.4': tensor "
              r"'classifier\.4\.weight' has shape \[5,128\]; expected \[10,64\]")

    # (c) a truncated safetensors file: in the data, and in the header
    root, _ = repo("c", spec, st_bytes[:8 + hlen + 1000])
    run.check("refuses a safetensors file truncated in its data", refuse, root,
              r"error model 'digits': model\.safetensors: .*'classifier\.1\.weight'.*"
              r"(past the end|truncated)")
    root, _ = repo("c2", spec, st_bytes[:8 + hlen // 2])
    run.check("refuses a safetensors file truncated in its header", refuse, root,
              r"error model 'digits': model\.safetensors: \S.*")

    # (d) a folder whose name is not the model's
    root, d = repo("d", spec, st_bytes, folder="digitz")
    run.check("refuses a folder named unlike its model.json", refuse, root,
              r"error model folder '%s' holds model\.json named 'digits'; they must match" %
              re.escape(d))


# ---- a hostile environment (tests/integration/fault_shim.c) -----------------------------------

def shim_env(shim, **faults):
    """The environment that preloads the fault shim with the given CONVSERVE_SHIM_* faults. A
    sanitizer build checks that its runtime is loaded first; the shim comes before it on purpose."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = shim
    for k, v in faults.items():
        env["CONVSERVE_SHIM_" + k] = str(v)
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")
    return env


def strdup_fails(binary, models, workdir, shim):
    """Out of memory while listing the model repository: a clear error and exit 1, not a crash."""
    p = subprocess.run([binary, "--models", models, "--port", "0"], cwd=workdir,
                       env=shim_env(shim, STRDUP_FAIL=1), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    err = p.stderr.decode("utf-8", "replace")
    expect_eq(p.returncode, 1, "exit code (stderr: %s)" % short(err, 600))
    expect(re.search(r" error out of memory listing the model repository '[^']+'$", err, re.M),
           "stderr: %s" % short(err, 600))


def clock_step_checks(run, binary, models, workdir, shim):
    """The wall clock a day ahead of the monotonic one, as after a clock step: batching deadlines
    and the slow-client guard run on the monotonic clock, so nothing waits for the wall clock."""
    timeout = 2
    srv = Server(binary, models, workdir, "clock", [
        "--connection-timeout", str(timeout), "--max-queue-delay-us", "20000"],
        env=shim_env(shim, REALTIME_SHIFT_S=86400))
    try:
        port = run.check("clock-step server (wall clock +1 day) starts", srv.wait_ready)
        if port is None:
            return

        def batch_deadline():
            t0 = time.monotonic()
            st, h, b = request(port, "POST", INFER, json.dumps(infer_body(GOOD, [1, 1, 8, 8])),
                               {"Content-Type": "application/json"}, timeout=5)
            dt = time.monotonic() - t0
            expect(st == 200, "status %d: %s" % (st, short(b)))
            expect(dt < 1.0, "a lone request waited %.2f s for its 20 ms batching delay" % dt)
            return "answered in %.0f ms" % (dt * 1e3)

        def slow_client_reaped():
            sk = socket.create_connection(("127.0.0.1", port), timeout=10)
            t0 = time.monotonic()
            head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
            closed_after = None
            try:
                for i in range(len(head)):
                    sk.sendall(head[i:i + 1])
                    time.sleep(0.25)
                    if time.monotonic() - t0 > timeout + 3:
                        break
            except OSError:
                closed_after = time.monotonic() - t0
            if closed_after is None:
                sk.settimeout(timeout + 3)
                try:
                    data = sk.recv(100)
                    expect(data == b"", "the slow client got an answer: %r" % data[:100])
                except OSError:
                    pass
                closed_after = time.monotonic() - t0
            sk.close()
            expect(closed_after < timeout + 2, "a client sending a byte every 250 ms was closed "
                   "after %.1f s; --connection-timeout is %d s" % (closed_after, timeout))
            return "closed after %.1f s" % closed_after
        run.check("clock step: a lone request gets its batch on time", batch_deadline)
        run.check("clock step: the slow-client guard closes a trickling client on time",
                  slow_client_reaped)

        def stop_check():
            rc, dt = srv.stop()
            expect(rc == 0, "exit code %r after SIGTERM (%.1fs)" % (rc, dt))
        run.check("clock-step server: SIGTERM -> exit 0", stop_check)
    finally:
        srv.kill()


# ---- main ---------------------------------------------------------------------------------------

# What libmicrohttpd itself prints (not through the server's logger) when a client hangs up
# mid-request, as the hang-up check makes them do: expected, and not a server error.
MHD_CLIENT_NOISE_RE = re.compile(r"^Connection was closed by remote side with incomplete request\.$")


def check_log(text):
    bad = [l for l in text.splitlines() if BAD_LOG_RE.search(l)]
    expect(not bad, "%d bad log lines, first: %s" % (len(bad), bad[:5]))
    foreign = [l for l in text.splitlines()
               if l and not LOG_LINE_RE.match(l) and not MHD_CLIENT_NOISE_RE.match(l)]
    expect(not foreign, "%d lines not from the server's logger, first: %s" %
           (len(foreign), foreign[:5]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "convserve"))
    ap.add_argument("--models", default=os.path.join(ROOT, "config", "models"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder and logs")
    ap.add_argument("--shim", default=os.path.join(ROOT, "build", "tests", "libfault_shim.so"),
                    help="tests/integration/fault_shim.c built as a shared library")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    models = os.path.abspath(args.models)
    global LOADED
    LOADED = ", ".join(sorted(d for d in os.listdir(models)
                              if os.path.isfile(os.path.join(models, d, "model.json"))))
    with open(os.path.join(EXAMPLES, "expected.json")) as f:
        expected = json.load(f)

    run = Runner()
    workdir = tempfile.mkdtemp(prefix="convserve-it-")
    t_start = time.monotonic()
    servers = []
    try:
        srv = Server(binary, models, workdir, "main")
        servers.append(srv)
        port = run.check("server starts and turns ready", srv.wait_ready)
        if port is None:
            print(srv.text()[-3000:])
        else:
            s = Suite(run, port, models, expected)
            run.check("health live and ready", s.health)
            run.check("GET /v2", s.server_meta)
            run.check("GET /v2/models/digits metadata", s.model_meta)
            run.check("GET /v2/models/digits/ready", s.model_ready)
            run.check("GET /metrics format", s.metrics_basic)
            run.check("/metrics counters follow requests", s.metrics_counts)
            for name in ("0.png", "3.png", "7.png", "5.jpg"):
                run.check("PUT %s to /predictions/digits vs PyTorch" % name, s.predict_put, name)
            run.check("POST image/png to /predictions/digits", s.predict_post_raw)
            run.check("multipart with 5 files, in order", s.predict_multipart)
            run.check("?top=3 sorted", s.predict_top)
            ref = run.check("infer_3.json vs PyTorch", s.infer_example)
            if ref is not None:
                run.check("infer: nested data, id, layer_shapes, named output", s.infer_variants)
                run.check("infer: binary input", s.binary_in, ref)
                run.check("infer: binary output (both switches), binary both ways", s.binary_out,
                          ref)
                run.check("infer: FP64, INT*, UINT8 inputs (JSON and binary)", s.dtypes, ref)
                run.check("infer: chunked request body", s.chunked_body, ref)
                run.check("batch 64 by infer and 64 images by multipart", s.full_batches, ref)
            run.check("infer: BYTES base64 and binary images vs /predictions", s.bytes_input)
            run.check("PNG, PGM and BMP of 8x8 pixels vs the normalised tensor", s.image_formats)
            run.check("keep-alive: answers and errors on one connection", s.keep_alive)
            run.check("multipart: quoted boundary, LF line ends, preamble, epilogue",
                      s.multipart_variants)
            run.check("multipart: one numbering of parts in error messages",
                      s.multipart_part_numbers)
            run.check("mymodel [2,3,10,12] -> [2,64,6,8], seq_basic, seq_named vs Python conv",
                      s.conv_models_vs_python)
            run.check("image into a model without preprocess = pixels / 255",
                      s.image_without_preprocess)
            run.check("flatten_linear vs Python linear", s.flatten_linear_infer)
            run.check("cnn_bn and cnn_basic run; cnn_bn labels on an RGB image", s.other_models_run)
            run.check("shapes cnn_bn 1,3,30,30 -> 400 layer 7", s.shapes_cnn_bn)
            run.check("shapes mymodel 16,3,50,50", s.shapes_mymodel)
            run.check("concurrency: 32 threads x 10 rounds, no cross-talk", s.concurrency)
            run.check("concurrency: requests of 1-7 samples, split at max_batch_size",
                      s.concurrency_multi_sample)
            run.check("concurrency: mymodel at mixed H x W", s.concurrency_mixed_shapes)
            run.check("clients hanging up mid-request leave nothing behind", s.hang_ups)
            rows = hostile_rows()
            for rnd in (1, 2):
                for r in rows:
                    run.check("hostile %d/%d: %s" % (rnd, len(rows), r["name"]), run_row, port, r)
            run.check("every byte value in path, query and headers: strict UTF-8 JSON answers",
                      s.every_byte)
            run.check("alive and right after the hostile table", s.alive_and_right)
            run.check("concurrency again after the table", s.concurrency, 32, 2)

            run.check("main server: SIGTERM under load -> in-flight requests finish, exit 0",
                      stop_main_under_load, srv, port)
        srv.stop()
        run.check("main server: log has no errors or sanitizer reports", check_log, srv.text())

        # Several instances of each model (issue 11): answers right and never crossed when three
        # workers of one model run batches at once.
        inst = Server(binary, models, workdir, "instances",
                      ["--instances", "3", "--infer-threads", "1"])
        servers.append(inst)
        port = run.check("instances server (--instances 3 --infer-threads 1) starts",
                         inst.wait_ready)
        if port is not None:
            si = Suite(run, port, models, expected)
            run.check("instances: every model has 3 workers of 1 thread", lambda: expect(
                inst.text().count("3 instances of 1 thread") == len(LOADED.split(", ")),
                "log: %s" % [ln for ln in inst.text().splitlines() if " loaded " in ln][:2]))
            run.check("instances: 32 threads x 10 rounds, no cross-talk", si.concurrency)
            run.check("instances: requests of 1-7 samples, split at max_batch_size",
                      si.concurrency_multi_sample)
        inst.stop()
        run.check("instances server: log has no errors or sanitizer reports", check_log,
                  inst.text())

        lim = Server(binary, models, workdir, "limits", LIMITS_ARGS)
        servers.append(lim)
        lport = run.check("limits server (%s) starts" % " ".join(LIMITS_ARGS), lim.wait_ready)
        if lport is not None:
            limits_checks(run, lport, expected)

        def stop_check():
            rc, dt = lim.stop()
            expect(rc == 0, "exit code %r after SIGTERM (%.1fs)" % (rc, dt))
            expect(dt < SHUTDOWN_TIMEOUT + 2, "took %.1fs to stop" % dt)
            text = lim.text()
            expect("SIGTERM received" in text and "stopped" in text, "no shutdown lines in the log")
        run.check("limits server: SIGTERM -> exit 0 within the grace period", stop_check)
        run.check("limits server: log has no errors or sanitizer reports", check_log, lim.text())

        broken_repos(run, binary, models, workdir)
        shim = os.path.abspath(args.shim)
        run.check("strdup failing at startup -> 'out of memory', exit 1", strdup_fails, binary,
                  models, workdir, shim)
        clock_step_checks(run, binary, models, workdir, shim)
    except Exception:  # noqa: BLE001 - a crash of the harness itself still ends with the summary
        harness_crashed(run)
    return finish(run, servers, workdir, args.keep, t_start)


if __name__ == "__main__":
    sys.exit(main())
