#!/usr/bin/env python3
"""test_repository.py - model versions, the repository API and reloads without downtime, against
the real convserve binary on free ports.

    /usr/bin/python3 tests/integration/test_repository.py --binary build/convserve \\
        --models config/models [--keep] [--only NAME,...]

Each part starts its own server on a repository made in a temporary folder from the shipped
digits model (weights A) and a copy whose last Linear bias is one higher (weights B: every logit
one higher, so that an answer tells which weights made it):

  versions    --model-control none: numbered version folders beside a flat model.json, the
              policies latest N / all / specific and the default, versioned routes (ready,
              metadata, infer, shapes, /predictions/{m}/{v}), answers naming their version,
              metrics and the access log by version, SIGHUP ignored, the API off (404).
  refusals    --model-control none refuses at startup, with the reason, a bad config.json, a
              folder with both model.json and 1/, a policy that matches nothing, a broken version.
  explicit    --model-control explicit: the exact index, load (unchanged, new version, broken
              new versions: truncated safetensors and a Linear mismatch keep the old one
              serving, a broken reload of a serving version), unload while requests are queued
              (they finish; the unload answers after them; the version is freed), load again,
              SIGHUP rescan, the hostile table tests/integration/cases-repository/*.cases.
  poll        --model-control poll: added, changed, broken and removed versions and models,
              and a Kubernetes ConfigMap-style volume whose ..data symlink is swapped.
  reload      under wrk with 32 connections, the weights of digits replaced 20 times (poll,
              then explicit load): no answer but 200, every answer equal to weights A or B
              (within 1e-4 of the output's scale), never anything else.
  memory      a large model exported with tools/export_model.py at test time (PyTorch), loaded
              and unloaded 20 times: RSS back near its level after the first cycle. Under ASan
              the server's quarantine is capped so that RSS means the same, and LeakSanitizer
              checks the exit.

Prints one line per check and "N passed, M failed"; exits 1 on any failure.
"""
import argparse
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import casefile  # noqa: E402
import test_server as ts  # noqa: E402 - the runner, server and HTTP helpers
from test_server import expect, expect_eq, short  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REPO_CASES = os.path.join(HERE, "cases-repository")
RELOADS = 20             # weight replacements under load, per mode
WRK_CONNECTIONS = 32
POLL_SECONDS = 1
MEMORY_CYCLES = 20
TOL = 1e-4               # relative to the output's scale
ASAN_QUARANTINE_MB = 16  # a server under ASan keeps at most this much freed memory back
# Load failures are logged as errors on purpose here; anything else at error level is not.
EXPECTED_ERROR_RE = re.compile(r" error model \S+ (version \d+ failed to load: |cannot be loaded: )")

INFER_3 = json.load(open(os.path.join(ROOT, "examples", "infer_3.json")))
EXPECTED = json.load(open(os.path.join(ROOT, "examples", "expected.json")))
LOGITS_A = EXPECTED["3.png"]["logits"]          # PyTorch's logits of the digit 3, weights A
LOGITS_B = [x + 1.0 for x in LOGITS_A]          # weights B: the last bias one higher


# ---- model folders ------------------------------------------------------------------------------

def digits_bytes(shift=0.0, truncate=None):
    """The digits weights, with `shift` added to the last Linear's bias, or cut to `truncate`."""
    with open(os.path.join(MODELS, "digits", "model.safetensors"), "rb") as f:
        b = bytearray(f.read())
    if shift:
        n = struct.unpack("<Q", b[:8])[0]
        s, e = json.loads(b[8:8 + n])["classifier.4.bias"]["data_offsets"]
        at = 8 + n + s
        vals = struct.unpack("<%df" % ((e - s) // 4), b[at:8 + n + e])
        b[at:8 + n + e] = struct.pack("<%df" % len(vals), *[v + shift for v in vals])
    return bytes(b[:truncate] if truncate else b)


def digits_json(name="digits", **change):
    with open(os.path.join(MODELS, "digits", "model.json")) as f:
        spec = json.load(f)
    spec["name"] = name
    if "in_features" in change:
        spec["layers"][9]["in_features"] = change["in_features"]
    return spec


def write_atomic(path, data):
    """Writes a file as an operator should: beside it, then renamed over it."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def put_version(folder, spec, weights):
    """A version folder made beside its place and moved in, so that a scan never sees half of it."""
    parent, leaf = os.path.split(folder)
    tmp = os.path.join(parent, "." + leaf + ".new")
    os.makedirs(tmp)
    with open(os.path.join(tmp, "model.json"), "w") as f:
        json.dump(spec, f)
    with open(os.path.join(tmp, "model.safetensors"), "wb") as f:
        f.write(weights)
    os.rename(tmp, folder)


def put_config(model_dir, policy):
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump({"version_policy": policy}, f)


# ---- requests -----------------------------------------------------------------------------------

def infer(port, path, status=200):
    return ts.post_json(port, path, INFER_3, status)


def close_to(got, want, what):
    scale = max(abs(x) for x in want)
    expect(len(got) == len(want) and all(abs(g - w) <= TOL * scale for g, w in zip(got, want)),
           "%s: %s, expected %s" % (what, got, want))


def logits(port, path):
    return infer(port, path)["outputs"][0]["data"]


def error(port, method, path, status, body=None):
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    st, h, b = ts.request(port, method, path, body, hdrs)
    expect(st == status, "%s %s: expected %d, got %d: %s" % (method, path, status, st, short(b)))
    return ts.error_of(st, h, b)


def index(port, body=b""):
    st, h, b = ts.request(port, "POST", "/v2/repository/index", body,
                          {"Content-Type": "application/json"})
    expect(st == 200, "index: %d %s" % (st, short(b)))
    return json.loads(b)


def model_index(port, name):
    return [e for e in index(port) if e["name"] == name]


def load(port, name, status=200, body=b""):
    st, h, b = ts.request(port, "POST", "/v2/repository/models/%s/load" % name, body,
                          {"Content-Type": "application/json"}, timeout=120)
    expect(st == status, "load %s: expected %d, got %d: %s" % (name, status, st, short(b)))
    return json.loads(b)


def unload(port, name, status=200):
    st, h, b = ts.request(port, "POST", "/v2/repository/models/%s/unload" % name, b"",
                          {"Content-Type": "application/json"}, timeout=120)
    expect(st == status, "unload %s: expected %d, got %d: %s" % (name, status, st, short(b)))
    return json.loads(b)


def loads_ok(port, model, version):
    return ts.metric(ts.metrics_text(port), "convserve_model_loads_total", model=model,
                     version=version, result="success")


def wait_for(what, fn, timeout=15, step=0.05):
    """Polls fn() until it returns a true value; that value, or an AssertionError."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (AssertionError, OSError) as e:
            last = e
        time.sleep(step)
    raise AssertionError("%s: not within %.0f s (last: %r)" % (what, timeout, last))


def check_log(text):
    """ts.check_log, but the load failures the test provokes are expected errors."""
    ts.check_log("\n".join(l for l in text.splitlines() if not EXPECTED_ERROR_RE.search(l)))


def start(run, tag, repo, extra=(), env=None):
    srv = ts.Server(BINARY, repo, WORKDIR, tag, list(extra), env=env)
    SERVERS.append(srv)
    port = run.check("%s server (%s) starts" % (tag, " ".join(extra) or "defaults"),
                     srv.wait_ready)
    if port is None:
        print(srv.text()[-3000:])
    return srv, port


def stop(run, tag, srv):
    def stopped():
        rc, dt = srv.stop()
        expect(rc == 0, "exit code %r after SIGTERM (%.1f s)" % (rc, dt))
        check_log(srv.text())
    run.check("%s server: SIGTERM -> exit 0, log without unexpected errors" % tag, stopped)


# ---- versions: --model-control none -------------------------------------------------------------

def versions_part(run):
    repo = os.path.join(WORKDIR, "versions")
    os.makedirs(repo)
    d = os.path.join(repo, "digits")
    os.makedirs(d)
    put_version(os.path.join(d, "1"), digits_json(), digits_bytes())
    put_version(os.path.join(d, "2"), digits_json(), digits_bytes(1.0))
    put_config(d, {"all": {}})
    for name, policy in (("latest2", {"latest": {"num_versions": 2}}),
                         ("specific", {"specific": {"versions": [1, 3]}}), ("default", None)):
        md = os.path.join(repo, name)
        os.makedirs(md)
        for v in (1, 2, 3) if policy else (1, 2):
            put_version(os.path.join(md, str(v)), digits_json(name), digits_bytes())
        if policy:
            put_config(md, policy)
    # The flat layout is version 1; a folder 2/ beside it is the next version.
    shutil.copytree(os.path.join(MODELS, "flatten_linear"), os.path.join(repo, "flatten_linear"))
    shutil.copytree(os.path.join(MODELS, "flatten_linear"), os.path.join(repo, "flat.tmp"))
    os.remove(os.path.join(repo, "flat.tmp", "README.md"))
    os.rename(os.path.join(repo, "flat.tmp"), os.path.join(repo, "flatten_linear", "2"))
    srv, port = start(run, "versions", repo)
    if port is None:
        return

    def routes():
        close_to(logits(port, "/v2/models/digits/versions/1/infer"), LOGITS_A, "version 1")
        close_to(logits(port, "/v2/models/digits/versions/2/infer"), LOGITS_B, "version 2")
        a = infer(port, "/v2/models/digits/infer")
        expect_eq(a["model_version"], "2", "unversioned infer answered by")
        close_to(a["outputs"][0]["data"], LOGITS_B, "unversioned: the newest version")
        expect_eq(infer(port, "/v2/models/digits/versions/1/infer")["model_version"], "1",
                  "versioned infer answered by")
        png = ts.read_example("3.png")
        for v, want in (("1", LOGITS_A), ("2", LOGITS_B)):
            st, h, b = ts.request(port, "PUT", "/predictions/digits/" + v, png)
            expect(st == 200, "PUT /predictions/digits/%s: %d %s" % (v, st, short(b)))
            p = json.loads(b)
            expect_eq(p["model_version"], v, "predictions answered by")
            close_to(p["predictions"][0]["logits"], want, "/predictions/digits/" + v)
        meta = ts.get_json(port, "/v2/models/digits")
        expect_eq((meta["version"], meta["versions"]), ("2", ["2", "1"]), "metadata versions")
        meta1 = ts.get_json(port, "/v2/models/digits/versions/1")
        expect_eq((meta1["name"], meta1["version"], meta1["versions"]), ("digits", "1", ["2", "1"]),
                  "version 1 metadata")
        expect_eq(ts.get_json(port, "/v2/models/digits/versions/1/ready"),
                  {"name": "digits", "version": "1", "ready": True}, "version 1 ready")
        sh = ts.get_json(port, "/v2/models/digits/versions/2/shapes?input=3,1,8,8")
        expect_eq(sh["output"], [3, 10], "versioned shapes")
    run.check("versions: versioned ready, metadata, infer, shapes, predictions; newest by default",
              routes)

    def policies():
        for name, want in (("latest2", ["3", "2"]), ("specific", ["3", "1"]), ("default", ["2"]),
                           ("flatten_linear", ["2"])):
            expect_eq(ts.get_json(port, "/v2/models/%s" % name)["versions"], want,
                      "%s ready versions" % name)
        for name, v, ready in (("latest2", 1, "3, 2"), ("specific", 2, "3, 1"),
                               ("default", 1, "2"), ("flatten_linear", 1, "2")):
            msg = error(port, "GET", "/v2/models/%s/versions/%d/ready" % (name, v), 404)
            expect_eq(msg, "model '%s' has no version %d ready (ready versions: %s)" %
                      (name, v, ready), "%s version %d" % (name, v))
    run.check("versions: policies latest 2, specific [1,3], the default (newest), flat + 2/",
              policies)

    def observability():
        text = ts.metrics_text(port)
        for v in ("1", "2"):
            expect(ts.metric(text, "convserve_requests_total", model="digits", version=v,
                             code="200") >= 2, "no 200s counted for digits version %s" % v)
            expect_eq(ts.metric(text, "convserve_model_ready", model="digits", version=v), 1,
                      "digits version %s ready gauge" % v)
            expect_eq(ts.metric(text, "convserve_model_loads_total", model="digits", version=v,
                                result="success"), 1, "digits version %s loads" % v)
        log = srv.text()
        expect(re.search(r'"POST /v2/models/digits/versions/1/infer" 200 .* version=1$', log, re.M),
               "no access-log line naming version 1")
        expect(re.search(r'"POST /v2/models/digits/infer" 200 .* version=2$', log, re.M),
               "no access-log line naming version 2 for the unversioned route")
        expect("model_repository" not in ts.get_json(port, "/v2")["extensions"],
               "/v2 announces model_repository with --model-control none")
        expect_eq(error(port, "POST", "/v2/repository/index", 404, b""),
                  "no route for POST /v2/repository/index", "index with --model-control none")
    run.check("versions: metrics and the access log by version; no repository API", observability)

    def sighup_ignored():
        srv.proc.send_signal(signal.SIGHUP)
        wait_for("the SIGHUP log line", lambda: "SIGHUP received: ignored" in srv.text(), 5)
        close_to(logits(port, "/v2/models/digits/infer"), LOGITS_B, "after SIGHUP")
    run.check("versions: SIGHUP with --model-control none is logged and ignored", sighup_ignored)
    stop(run, "versions", srv)


def refusals_part(run):
    def refuse(tag, build, want):
        repo = os.path.join(WORKDIR, "refuse-" + tag)
        d = os.path.join(repo, "digits")
        os.makedirs(d)
        build(d)
        p = subprocess.run([BINARY, "--models", repo, "--port", "0"], cwd=WORKDIR,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        err = p.stderr.decode("utf-8", "replace")
        expect_eq(p.returncode, 1, "exit code (stderr: %s)" % short(err, 600))
        expect(re.search(want, err), "stderr %r does not match %r" % (short(err, 600), want))
        expect("listening on" not in err, "it listened")
        expect(not re.search(r"AddressSanitizer|LeakSanitizer|runtime error", err),
               "sanitizer report: %s" % short(err, 2000))

    def bad_config(d):
        put_version(os.path.join(d, "1"), digits_json(), digits_bytes())
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write('{"version_policy": {"latest": {"num_versions": 0}}}')

    def both(d):
        put_version(os.path.join(d, "1"), digits_json(), digits_bytes())
        with open(os.path.join(d, "model.json"), "w") as f:
            json.dump(digits_json(), f)

    def no_match(d):
        put_version(os.path.join(d, "1"), digits_json(), digits_bytes())
        put_config(d, {"specific": {"versions": [5]}})

    def broken(d):
        put_version(os.path.join(d, "1"), digits_json(), digits_bytes())
        put_version(os.path.join(d, "2"), digits_json(in_features=500), digits_bytes())

    run.check("refusals: a bad config.json", refuse, "config", bad_config,
              r" error model 'digits': config\.json: version_policy\.latest must be "
              r"\{\"num_versions\": N\} with N from 1 to 256")
    run.check("refusals: model.json and 1/ in one folder", refuse, "both", both,
              r" error model 'digits': version 1 is both the folder's own model\.json and the "
              r"folder 1/; keep one")
    run.check("refusals: a policy that matches no version", refuse, "nomatch", no_match,
              r" error model 'digits': no version folder matches its version policy")
    run.check("refusals: a broken newest version", refuse, "broken", broken,
              r" error model 'digits': layer 9 Linear 'classifier\.1' expects 500 features, "
              r"input \[1,1,8,8\] gives 512")


# ---- explicit -----------------------------------------------------------------------------------

def binary_batch(shape):
    count = 1
    for x in shape:
        count *= x
    head = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                        "parameters": {"binary_data_size": 4 * count}}]}
    return ts.binary_body(head, bytes(4 * count))


def explicit_part(run):
    repo = os.path.join(WORKDIR, "explicit")
    os.makedirs(repo)
    shutil.copytree(os.path.join(MODELS, "digits"), os.path.join(repo, "digits"))
    shutil.copytree(os.path.join(MODELS, "cnn_bn"), os.path.join(repo, "cnn_bn"))
    os.makedirs(os.path.join(repo, "lost+found"))
    with open(os.path.join(repo, "notes.txt"), "w") as f:
        f.write("not a model\n")
    # One worker of one thread, so that a burst of cnn_bn batches waits in its queue.
    srv, port = start(run, "explicit", repo, ["--model-control", "explicit", "--instances", "1",
                                              "--infer-threads", "1"])
    if port is None:
        return
    d = os.path.join(repo, "digits")

    def first_index():
        expect_eq(index(port), [{"name": "cnn_bn", "version": "1", "state": "READY"},
                                {"name": "digits", "version": "1", "state": "READY"}], "index")
        expect_eq(index(port, b'{"ready": true}'), index(port), "index of ready versions")
        expect("model_repository" in ts.get_json(port, "/v2")["extensions"],
               "/v2 does not announce model_repository")
        before = loads_ok(port, "digits", "1")
        expect_eq(load(port, "digits"), [{"name": "digits", "version": "1", "state": "READY"}],
                  "load of an unchanged model")
        expect_eq(loads_ok(port, "digits", "1"), before, "an unchanged version was reloaded")
    run.check("explicit: index, and load of an unchanged model (nothing reloaded)", first_index)

    def new_version():
        put_version(os.path.join(d, "2"), digits_json(), digits_bytes(1.0))
        close_to(logits(port, "/v2/models/digits/infer"), LOGITS_A, "before the load")
        expect_eq(load(port, "digits"),
                  [{"name": "digits", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"},
                   {"name": "digits", "version": "2", "state": "READY"}], "load answer")
        close_to(logits(port, "/v2/models/digits/infer"), LOGITS_B, "after the load")
        expect_eq(error(port, "GET", "/v2/models/digits/versions/1/ready", 404),
                  "model 'digits' has no version 1 ready (ready versions: 2)", "version 1 after")
        wait_for("version 1 freed",
                 lambda: "model digits version 1 freed: its last request is done" in srv.text(), 5)
    run.check("explicit: a new version loads, replaces version 1, and version 1 is freed",
              new_version)

    def broken_versions():
        failures = ts.metric(ts.metrics_text(port), "convserve_model_loads_total", model="digits",
                             result="failure")
        put_version(os.path.join(d, "3"), digits_json(), digits_bytes(truncate=8 + 400 + 1000))
        msg = error(port, "POST", "/v2/repository/models/digits/load", 400, b"")
        expect(re.match(r"failed to load model 'digits': model 'digits': model\.safetensors: .*"
                        r"(past the end|truncated)", msg), "truncated: %r" % msg)
        close_to(logits(port, "/v2/models/digits/infer"), LOGITS_B, "after the truncated one")
        entry = [e for e in model_index(port, "digits") if e.get("version") == "3"]
        expect(len(entry) == 1 and entry[0]["state"] == "UNAVAILABLE" and
               "model.safetensors" in entry[0]["reason"], "index of version 3: %r" % entry)
        shutil.rmtree(os.path.join(d, "3"))
        put_version(os.path.join(d, "4"), digits_json(in_features=500), digits_bytes())
        msg = error(port, "POST", "/v2/repository/models/digits/load", 400, b"")
        expect_eq(msg, "failed to load model 'digits': model 'digits': layer 9 Linear "
                  "'classifier.1' expects 500 features, input [1,1,8,8] gives 512", "mismatch")
        close_to(logits(port, "/v2/models/digits/infer"), LOGITS_B, "after the mismatch")
        expect_eq(ts.get_json(port, "/v2/models/digits")["versions"], ["2"], "serving versions")
        expect_eq(ts.metric(ts.metrics_text(port), "convserve_model_loads_total", model="digits",
                            result="failure") - failures, 2, "load failures counted")
        log = srv.text()
        expect(re.search(r" error model digits version 4 failed to load: model 'digits': layer 9 "
                         r"Linear .*; serving versions: 2$", log, re.M), "no log line for 4")
        shutil.rmtree(os.path.join(d, "4"))
        # A serving version whose files are replaced by broken ones keeps its old instance.
        write_atomic(os.path.join(d, "2", "model.safetensors"), digits_bytes(truncate=5000))
        load(port, "digits", 400)
        close_to(logits(port, "/v2/models/digits/infer"), LOGITS_B, "after the broken reload")
        e2 = [e for e in model_index(port, "digits") if e.get("version") == "2"][0]
        expect(e2["state"] == "READY" and e2["reason"].startswith("reload failed: model 'digits'"),
               "index of version 2: %r" % e2)
        write_atomic(os.path.join(d, "2", "model.safetensors"), digits_bytes(1.0))
        load(port, "digits")
        e2 = [e for e in model_index(port, "digits") if e.get("version") == "2"][0]
        expect_eq(e2, {"name": "digits", "version": "2", "state": "READY"}, "version 2 reloaded")
    run.check("explicit: broken versions (truncated safetensors, Linear mismatch, broken reload) "
              "are refused with the reason while the old one serves", broken_versions)

    def unload_while_queued():
        body, hdrs = binary_batch([64, 3, 28, 28])
        results = []
        lock = threading.Lock()

        def one():
            try:
                st, _, b = ts.request(port, "POST", "/v2/models/cnn_bn/infer", body, hdrs,
                                      timeout=60)
            except OSError as e:
                st, b = -1, str(e).encode()
            with lock:
                results.append((st, time.monotonic(), b[:200]))
        n = 24
        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()

        def all_routed():
            """The server has made all n requests (those in flight, the /metrics request itself
            aside, and those answered), so each holds its reference; and some are queued: in the
            model's queue, or (a body this large is converted there) in the decode pool."""
            text = ts.metrics_text(port)
            made = (ts.metric(text, "convserve_inflight_requests") - 1 +
                    ts.metric(text, "convserve_requests_total", model="cnn_bn"))
            waiting = (ts.metric(text, "convserve_queue_length", model="cnn_bn") +
                       ts.metric(text, "convserve_decode_queue_length") +
                       ts.metric(text, "convserve_decode_running"))
            return made >= n and waiting >= 4
        wait_for("%d requests made, some queued, for cnn_bn" % n, all_routed, 30, 0.005)
        t_sent = time.monotonic()
        answer = unload(port, "cnn_bn")
        t_unloaded = time.monotonic()
        for t in threads:
            t.join(60)
        expect_eq(answer, [{"name": "cnn_bn", "version": "1", "state": "UNAVAILABLE",
                            "reason": "unloaded"}], "unload answer")
        codes = sorted({r[0] for r in results})
        expect(set(codes) <= {200, 503} and 200 in codes, "codes %s: %s" % (codes, results[:3]))
        late = [r for r in results if r[1] > t_sent]
        expect(late, "no request finished after the unload was sent: nothing was queued")
        last = max(r[1] for r in results)
        expect(t_unloaded >= last - 0.05, "the unload answered %.3f s before the last queued "
               "request" % (last - t_unloaded))
        expect("model cnn_bn version 1 freed: its last request is done" in srv.text(),
               "cnn_bn not freed when the unload answered")
        expect_eq(error(port, "POST", "/v2/models/cnn_bn/infer", 404, body[:10]),
                  "model 'cnn_bn' is not loaded (loaded: digits)", "infer after unload")
        expect_eq(model_index(port, "cnn_bn"), answer, "index after unload")
        expect_eq(ts.metric(ts.metrics_text(port), "convserve_model_ready", model="cnn_bn"), 0,
                  "ready gauge after unload")
        expect_eq(load(port, "cnn_bn"), [{"name": "cnn_bn", "version": "1", "state": "READY"}],
                  "load again")
        st, _, b = ts.request(port, "POST", "/v2/models/cnn_bn/infer", body, hdrs, timeout=60)
        expect(st == 200, "cnn_bn after loading again: %d %s" % (st, short(b)))
        return "%d requests: %s; %d finished after the unload was sent" % (
            len(results), ", ".join("%d x %d" % (sum(1 for r in results if r[0] == c), c)
                                    for c in codes), len(late))
    run.check("explicit: unload while requests are queued (they finish, then it answers and "
              "frees), then load again", unload_while_queued)

    def sighup_rescan():
        shutil.copytree(os.path.join(MODELS, "flatten_linear"), os.path.join(repo, "fl.tmp"))
        os.rename(os.path.join(repo, "fl.tmp"), os.path.join(repo, "flatten_linear"))
        time.sleep(0.3)
        expect_eq(model_index(port, "flatten_linear"), [], "a new folder before SIGHUP")
        srv.proc.send_signal(signal.SIGHUP)
        wait_for("flatten_linear after SIGHUP", lambda: model_index(port, "flatten_linear") ==
                 [{"name": "flatten_linear", "version": "1", "state": "READY"}], 10)
        expect("rescanning the model repository (SIGHUP)" in srv.text(), "no SIGHUP log line")
        # An unloaded model stays unloaded through a rescan.
        unload(port, "flatten_linear")
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        expect_eq(model_index(port, "flatten_linear"),
                  [{"name": "flatten_linear", "version": "1", "state": "UNAVAILABLE",
                    "reason": "unloaded"}], "an unloaded model after SIGHUP")
    run.check("explicit: SIGHUP rescans (a new folder loads; an unloaded model stays unloaded)",
              sighup_rescan)

    loaded = ", ".join(sorted(e["name"] for e in index(port) if e.get("state") == "READY"))
    rows = casefile.load(REPO_CASES, {"LOADED": loaded})
    for r in rows:
        run.check("explicit: hostile %d: %s" % (len(rows), r["name"]), ts.run_row, port, r)
    run.check("explicit: alive and right after the table", lambda: close_to(
        logits(port, "/v2/models/digits/infer"), LOGITS_B, "digits"))
    stop(run, "explicit", srv)


# ---- poll ---------------------------------------------------------------------------------------

def poll_part(run):
    repo = os.path.join(WORKDIR, "poll")
    os.makedirs(repo)
    shutil.copytree(os.path.join(MODELS, "digits"), os.path.join(repo, "digits"))
    srv, port = start(run, "poll", repo, ["--model-control", "poll", "--poll-seconds",
                                          str(POLL_SECONDS)])
    if port is None:
        return
    d = os.path.join(repo, "digits")

    def changes():
        put_version(os.path.join(d, "2"), digits_json(), digits_bytes(1.0))
        wait_for("version 2 serving", lambda: infer(port, "/v2/models/digits/infer")[
            "model_version"] == "2")
        close_to(logits(port, "/v2/models/digits/infer"), LOGITS_B, "version 2")
        put_version(os.path.join(d, "3"), digits_json(), digits_bytes(truncate=3000))
        wait_for("version 3 refused", lambda: any(
            e.get("version") == "3" and e["state"] == "UNAVAILABLE" for e in model_index(
                port, "digits")))
        close_to(logits(port, "/v2/models/digits/infer"), LOGITS_B, "version 2 after 3 failed")
        time.sleep(2 * POLL_SECONDS + 0.2)  # not tried again while its files stay the same
        expect_eq(ts.metric(ts.metrics_text(port), "convserve_model_loads_total", model="digits",
                            version="3", result="failure"), 1, "attempts on broken version 3")
        shutil.rmtree(os.path.join(d, "3"))
        write_atomic(os.path.join(d, "2", "model.safetensors"), digits_bytes())
        wait_for("version 2 with weights A", lambda: abs(
            logits(port, "/v2/models/digits/infer")[3] - LOGITS_A[3]) < 1e-3)
        shutil.rmtree(os.path.join(d, "2"))
        wait_for("version 1 serving again", lambda: infer(port, "/v2/models/digits/infer")[
            "model_version"] == "1")
        expect_eq(model_index(port, "digits"),
                  [{"name": "digits", "version": "1", "state": "READY"}], "index")
        shutil.copytree(os.path.join(MODELS, "flatten_linear"), os.path.join(repo, "fl.tmp"))
        os.rename(os.path.join(repo, "fl.tmp"), os.path.join(repo, "flatten_linear"))
        wait_for("a new model folder", lambda: ts.request(
            port, "GET", "/v2/models/flatten_linear/ready")[0] == 200)
        shutil.rmtree(os.path.join(repo, "flatten_linear"))
        wait_for("a removed model folder", lambda: ts.request(
            port, "GET", "/v2/models/flatten_linear/ready")[0] == 404)
        expect_eq([e["name"] for e in index(port)], ["digits"], "models after the removal")
        expect_eq(error(port, "POST", "/v2/repository/models/digits/unload", 400, b""),
                  "unload is not available with --model-control poll, where the repository "
                  "folder decides what is loaded: remove the model's folder, or run with "
                  "--model-control explicit", "unload in poll mode")
    run.check("poll: a new version, a broken one (tried once), changed weights, a removed "
              "version, a new and a removed model", changes)
    stop(run, "poll", srv)

    # A Kubernetes ConfigMap volume: the files are symlinks through ..data, which the kubelet
    # swaps atomically to a new timestamped folder.
    cm = os.path.join(WORKDIR, "configmap")
    os.makedirs(cm)

    def generation(name, weights):
        g = os.path.join(cm, name, "digits")
        os.makedirs(g)
        with open(os.path.join(g, "model.json"), "w") as f:
            json.dump(digits_json(), f)
        with open(os.path.join(g, "model.safetensors"), "wb") as f:
            f.write(weights)
        os.symlink(name, os.path.join(cm, "..data.tmp"))
        os.replace(os.path.join(cm, "..data.tmp"), os.path.join(cm, "..data"))
    generation("..2026_01_01_00_00_00.000000001", digits_bytes())
    os.symlink("..data/digits", os.path.join(cm, "digits"))
    srv, port = start(run, "configmap", cm, ["--model-control", "poll", "--poll-seconds",
                                             str(POLL_SECONDS)])
    if port is None:
        return

    def swap():
        expect_eq([e["name"] for e in index(port)], ["digits"], "models (..data is hidden)")
        close_to(logits(port, "/v2/models/digits/infer"), LOGITS_A, "first generation")
        generation("..2026_01_01_00_01_00.000000002", digits_bytes(1.0))
        wait_for("the swapped generation", lambda: abs(
            logits(port, "/v2/models/digits/infer")[3] - LOGITS_B[3]) < 1e-3)
        expect_eq(loads_ok(port, "digits", "1"), 2, "loads of digits")
    run.check("poll: the atomic ..data symlink swap of a ConfigMap volume reloads", swap)
    stop(run, "configmap", srv)


# ---- reload under load ----------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- Counts answers equal to weights A, to weights B, anything else, and non-200 statuses.
local A = {%(a)s}
local B = {%(b)s}
local tol = %(tol)s
local threads = {}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%(body)s]==]

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok_a, ok_b, bad, non200, first = 0, 0, 0, 0, ""
end

local function same(v, ref)
  if #v ~= #ref then return false end
  for i = 1, #ref do
    if math.abs(v[i] - ref[i]) > tol then return false end
  end
  return true
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    if first == "" then first = status .. " " .. string.sub(body, 1, 200) end
    return
  end
  local v = {}
  local data = string.match(body, '"data":%%[([^%%]]*)%%]')
  if data then
    for num in string.gmatch(data, "[^,]+") do v[#v + 1] = tonumber(num) end
  end
  if same(v, A) then ok_a = ok_a + 1
  elseif same(v, B) then ok_b = ok_b + 1
  else
    bad = bad + 1
    if first == "" then first = string.sub(body, 1, 300) end
  end
end

function done(summary, latency, requests)
  local a, b, x, n, f = 0, 0, 0, 0, ""
  for _, t in ipairs(threads) do
    a = a + t:get("ok_a"); b = b + t:get("ok_b"); x = x + t:get("bad"); n = n + t:get("non200")
    if f == "" then f = t:get("first") end
  end
  local e = summary.errors
  io.write(string.format("RESULT requests=%%d ok_a=%%d ok_b=%%d bad=%%d non200=%%d connect=%%d read=%%d write=%%d timeout=%%d\n",
    summary.requests, a, b, x, n, e.connect, e.read, e.write, e.timeout))
  io.write("FIRST " .. f .. "\n")
end
"""


def reload_under_load(run, mode):
    repo = os.path.join(WORKDIR, "reload-" + mode)
    os.makedirs(repo)
    shutil.copytree(os.path.join(MODELS, "digits"), os.path.join(repo, "digits"))
    extra = ["--model-control", mode] + (["--poll-seconds", str(POLL_SECONDS)] if mode == "poll"
                                         else [])
    srv, port = start(run, "reload-" + mode, repo, extra)
    if port is None:
        return
    weights = os.path.join(repo, "digits", "model.safetensors")
    script = os.path.join(WORKDIR, "reload-%s.lua" % mode)
    with open(script, "w") as f:
        f.write(WRK_SCRIPT % {"a": ",".join("%.9g" % x for x in LOGITS_A),
                              "b": ",".join("%.9g" % x for x in LOGITS_B),
                              "tol": TOL * max(abs(x) for x in LOGITS_B),
                              "body": json.dumps(INFER_3)})

    def replace_20_times():
        # wrk's timeout is the server's queue timeout: a slow answer on a busy machine still counts.
        wrk = subprocess.Popen(["wrk", "-t2", "-c%d" % WRK_CONNECTIONS, "-d600s", "--timeout", "10s",
                                "-s", script,
                                "http://127.0.0.1:%d/v2/models/digits/infer" % port],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        swaps = []
        try:
            time.sleep(0.5)
            for i in range(RELOADS):
                want = LOGITS_B if i % 2 == 0 else LOGITS_A
                before = loads_ok(port, "digits", "1")
                t0 = time.monotonic()
                write_atomic(weights, digits_bytes(1.0 if i % 2 == 0 else 0.0))
                if mode == "explicit":
                    load(port, "digits")
                    # The load answers once the new weights serve: the next request has them.
                    close_to(logits(port, "/v2/models/digits/infer"), want, "right after load")
                wait_for("reload %d" % (i + 1),
                         lambda: loads_ok(port, "digits", "1") == before + 1, 20, 0.02)
                wait_for("reload %d answers" % (i + 1), lambda: abs(
                    logits(port, "/v2/models/digits/infer")[3] - want[3]) < 1e-3, 5, 0.02)
                swaps.append(time.monotonic() - t0)
            time.sleep(0.5)
        finally:
            wrk.send_signal(signal.SIGINT)
            try:
                out, _ = wrk.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                wrk.kill()
                out, _ = wrk.communicate()
        m = re.search(r"RESULT requests=(\d+) ok_a=(\d+) ok_b=(\d+) bad=(\d+) non200=(\d+) "
                      r"connect=(\d+) read=(\d+) write=(\d+) timeout=(\d+)", out)
        expect(m, "no RESULT line from wrk:\n%s" % out[-2000:])
        n, a, b, bad, non200, c, r, w, t = map(int, m.groups())
        first = re.search(r"^FIRST (.*)$", out, re.M).group(1)
        expect(non200 == 0 and bad == 0, "%d answers not 200 and %d matching neither weights; "
               "first: %s" % (non200, bad, first))
        expect(c + r + w + t == 0, "socket errors: connect %d read %d write %d timeout %d" %
               (c, r, w, t))
        expect(a > 0 and b > 0 and a + b == n, "A %d + B %d of %d answers" % (a, b, n))
        expect_eq(loads_ok(port, "digits", "1"), 1 + RELOADS, "loads of digits version 1")
        freed = len(re.findall(r"model digits version 1 freed", srv.text()))
        expect(freed >= RELOADS - 1, "%d old instances freed of %d" % (freed, RELOADS))
        return ("%d answers under %d connections: %d with weights A, %d with B, 0 other, 0 non-200;"
                " %d swaps, %.2f s each on average (longest %.2f s)" % (
                    n, WRK_CONNECTIONS, a, b, RELOADS, sum(swaps) / len(swaps), max(swaps)))
    run.check("reload (%s): weights replaced %d times under wrk, every answer A or B, all 200" %
              (mode, RELOADS), replace_20_times)
    stop(run, "reload-" + mode, srv)


# ---- memory ---------------------------------------------------------------------------------------

BIG_MODULE = '''
import torch.nn as nn


def make_model():
    """About 12.3 M parameters (49 MB of float32 weights), nearly all in one Linear."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(16 * 16 * 16, 3000), nn.ReLU(), nn.Linear(3000, 10))
'''


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))


def under_asan(binary):
    out = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, text=True).stdout
    return "libasan" in out


def memory_part(run):
    repo = os.path.join(WORKDIR, "memory")
    os.makedirs(repo)
    shutil.copytree(os.path.join(MODELS, "digits"), os.path.join(repo, "digits"))
    mod = os.path.join(WORKDIR, "bigmod")
    os.makedirs(mod)
    with open(os.path.join(mod, "bignet.py"), "w") as f:
        f.write(BIG_MODULE)

    def export():
        env = dict(os.environ)
        env["PYTHONPATH"] = mod
        p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "export_model.py"),
                            "--module", "bignet:make_model", "--name", "big", "--input-shape",
                            "3,32,32", "--out", os.path.join(repo, "big")], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=300)
        expect(p.returncode == 0, "export_model.py failed:\n%s" % p.stdout[-2000:])
        return "%.1f MB of weights" % (os.path.getsize(os.path.join(
            repo, "big", "model.safetensors")) / 1e6)
    if run.check("memory: export a 12 M-parameter model with tools/export_model.py", export) is None:
        return
    env = dict(os.environ)
    asan = under_asan(BINARY)
    if asan:
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") +
                               ":quarantine_size_mb=%d" % ASAN_QUARANTINE_MB).lstrip(":")
    srv, port = start(run, "memory", repo, ["--model-control", "explicit"], env=env)
    if port is None:
        return

    def loading_state():
        """While a load runs, the index says LOADING and requests get 503, not a half model. A
        request counts only when the index said LOADING both before and after it."""
        want = [{"name": "big", "version": "1", "state": "LOADING"}]
        for attempt in range(3):
            unload(port, "big")
            done = []
            t = threading.Thread(target=lambda: done.append(load(port, "big")))
            t.start()
            seen = wait_for("big LOADING in the index",
                            lambda: model_index(port, "big") == want or done, 60, 0.005)
            st, h, b = ts.request(port, "POST", "/v2/models/big/infer", b"{}",
                                  {"Content-Type": "application/json"})
            during = model_index(port, "big") == want
            t.join(120)
            expect_eq(done, [[{"name": "big", "version": "1", "state": "READY"}]], "load answer")
            if seen is not done and during:
                expect_eq((st, ts.error_of(st, h, b)),
                          (503, "model 'big' is loading; try again shortly"), "infer while loading")
                return "seen on attempt %d" % (attempt + 1)
        raise AssertionError("no request landed while the load ran, in 3 attempts")
    run.check("memory: a load in progress is LOADING in the index, and its model answers 503",
              loading_state)

    def cycles():
        big_bytes = os.path.getsize(os.path.join(repo, "big", "model.safetensors"))
        unload(port, "big")
        load(port, "big")
        unload(port, "big")
        base = rss_kb(srv.proc.pid)
        peak = base
        t0 = time.monotonic()
        body = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                            "data": [0.5] * (3 * 32 * 32)}]}
        for _ in range(MEMORY_CYCLES):
            load(port, "big")
            ts.post_json(port, "/v2/models/big/infer", body)
            peak = max(peak, rss_kb(srv.proc.pid))
            unload(port, "big")
        dt = time.monotonic() - t0
        end = rss_kb(srv.proc.pid)
        loaded_mb = (peak - base) / 1024
        expect(loaded_mb > big_bytes / 1e6 / 2, "the model did not show in RSS (%.0f MB)" %
               loaded_mb)
        # Back near the base: far less than one model's weights can have stayed behind.
        slack_kb = max(16 * 1024, big_bytes // 1024 // 4)
        expect(end <= base + slack_kb, "RSS %d kB after %d cycles, %d kB after the first (+%d "
               "kB allowed)" % (end, MEMORY_CYCLES, base, slack_kb))
        return ("RSS %.0f MB after one load/unload, %.0f MB with the model loaded, %.0f MB after "
                "%d more cycles (%.1f s)%s" % (base / 1024, peak / 1024, end / 1024,
                                                MEMORY_CYCLES, dt, " under ASan" if asan else ""))
    run.check("memory: %d load/unload cycles of the large model, RSS back near its base" %
              MEMORY_CYCLES, cycles)
    stop(run, "memory", srv)


# ---- main ---------------------------------------------------------------------------------------

PARTS = (("versions", versions_part), ("refusals", refusals_part), ("explicit", explicit_part),
         ("poll", poll_part), ("reload", lambda run: (reload_under_load(run, "poll"),
                                                        reload_under_load(run, "explicit"))),
         ("memory", memory_part))


def main():
    global BINARY, MODELS, WORKDIR, SERVERS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "convserve"))
    ap.add_argument("--models", default=os.path.join(ROOT, "config", "models"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder and logs")
    ap.add_argument("--only", help="comma-separated parts: " + ",".join(p for p, _ in PARTS))
    args = ap.parse_args()
    BINARY = os.path.abspath(args.binary)
    MODELS = os.path.abspath(args.models)
    WORKDIR = tempfile.mkdtemp(prefix="convserve-repo-")
    SERVERS = []
    only = set(args.only.split(",")) if args.only else None
    run = ts.Runner()
    t_start = time.monotonic()
    try:
        for name, part in PARTS:
            if only is None or name in only:
                part(run)
    except Exception:  # noqa: BLE001 - a crash of the harness still ends with the summary
        ts.harness_crashed(run)
    return ts.finish(run, SERVERS, WORKDIR, args.keep, t_start)


BINARY = MODELS = WORKDIR = None
SERVERS = []

if __name__ == "__main__":
    sys.exit(main())
