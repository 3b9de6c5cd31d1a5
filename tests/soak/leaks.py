#!/usr/bin/env python3
"""leaks.py - thousands of mixed requests against convserve under valgrind memcheck (or an ASan
build's LeakSanitizer), then SIGTERM: the server must exit 0 with no definite or indirect leak and
no memory error reported. Run by tools/ci/leaks.sh; by hand:

    python3 tests/soak/leaks.py --binary build-leaks/convserve --mode valgrind

Python 3 standard library; the checks are those of tests/integration/test_server.py (its Suite
methods and its table of hostile requests), run here many times and concurrently:

1. A model repository of three small models copied from --models (digits, flatten_linear and
   mymodel: valgrind runs oneDNN some 50 times slower, so the large networks stay out).
2. The server under valgrind (--leak-check=full, definite and indirect leaks are errors,
   --error-exitcode=99, tests/valgrind.supp) with --connection-timeout 3 and --max-queue 8.
3. About --requests requests from --clients threads in a shuffled (--seed) order, within
   --seconds: good ones (KServe v2 JSON flat and nested, binary tensors both ways, FP64 and
   integer inputs, BYTES images, chunked bodies, keep-alive; PNG, JPEG, PGM, BMP, multipart
   batches; metadata, health, shapes, metrics), every row of the hostile table (400, 404, 405,
   413 before the body, 415; garbage, truncated and bomb images, bad multipart), bursts that
   overflow the queue (503), clients that disconnect mid-request or before reading the answer
   (half a body, a reset, half the headers), and connections left idle for the server to time
   out. Every answer is checked as the integration suite checks it.
4. Alone: metric counters, concurrency with cross-talk checks, and idle at the end (nothing in
   flight, queues empty).
5. SIGTERM with requests in flight and a half-sent body; the server must answer them and exit 0.
6. The valgrind log: "ERROR SUMMARY: 0 errors", definitely and indirectly lost 0 bytes.

Prints one line per failure, a summary, and exits 1 on any failure.
"""
import argparse
import json
import os
import queue
import random
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)
import test_server as ts  # noqa: E402 - the integration suite's checks
from soak import MHD_CLIENT_NOISE_RE  # noqa: E402

MODELS = ("digits", "flatten_linear", "mymodel")
INFER = "/v2/models/digits/infer"
MAX_QUEUE = 8
QUEUE_FULL = "the queue of this model is full (%d requests waiting)" % MAX_QUEUE
VALGRIND_OPTS = ["--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
                 "--show-leak-kinds=definite,indirect", "--error-exitcode=99", "--num-callers=40",
                 "--gen-suppressions=all", "--track-fds=yes", "-s"]


def log(msg):
    print("[leaks %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {}       # name -> [passed, failed]
        self.failures = []  # (name, detail)
        self.extra = {}     # counters of outcomes that may vary (burst answers)

    def run(self, name, fn):
        try:
            fn()
            ok = True
        except Exception as e:  # noqa: BLE001 - every failure is reported the same way
            ok = False
            detail = str(e) if isinstance(e, AssertionError) else "%s: %s\n%s" % (
                type(e).__name__, e, "".join(traceback.format_exc().splitlines(True)[-3:]))
        with self.lock:
            self.ops.setdefault(name, [0, 0])[0 if ok else 1] += 1
            if not ok:
                self.failures.append((name, detail))
        if not ok:
            print("FAIL  %s: %s" % (name, detail.strip()[:800]), flush=True)
        return ok

    def count(self, key, n=1):
        with self.lock:
            self.extra[key] = self.extra.get(key, 0) + n


class Exclusive:
    """Shared and exclusive turns (a readers-writer lock, writers first): most operations run
    side by side; those that compare answers exactly (a sample's result may differ in its last
    bits with the batch it shares), that count on the queue being theirs, or that fill it, run
    alone."""
    def __init__(self):
        self.cv = threading.Condition()
        self.shared = 0
        self.alone = False
        self.waiting = 0

    def run(self, exclusive, fn):
        with self.cv:
            if exclusive:
                self.waiting += 1
                self.cv.wait_for(lambda: not self.alone and self.shared == 0)
                self.waiting -= 1
                self.alone = True
            else:
                self.cv.wait_for(lambda: not self.alone and self.waiting == 0)
                self.shared += 1
        try:
            return fn()
        finally:
            with self.cv:
                if exclusive:
                    self.alone = False
                else:
                    self.shared -= 1
                self.cv.notify_all()


# ---- requests that the integration suite does not make -----------------------------------------

def disconnect(port, data, rst, wait=0.0):
    """Sends `data` (part or all of a request) and closes without reading, with a reset (SO_LINGER
    0) or a normal close."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if data:
            s.sendall(data)
        if wait:
            time.sleep(wait)
    finally:
        s.close()


def disconnect_ops(port, rnd):
    body = ts.read_example("infer_3.json")
    png = ts.read_example("3.png")
    head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n" % (INFER, len(body))).encode()
    put = ("PUT /predictions/digits HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" %
           len(png)).encode()
    mp, mp_hdr = ts.multipart([png, png])
    mp_head = ("POST /predictions/digits HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
               "Content-Length: %d\r\n\r\n" % (mp_hdr["Content-Type"], len(mp))).encode()
    cases = [
        ("json half body", head + body[:len(body) // 2]),
        ("json whole, answer unread", head + body),
        ("png half body", put + png[:len(png) // 2]),
        ("png whole, answer unread", put + png),
        ("multipart half body", mp_head + mp[:len(mp) // 2]),
        ("half the headers", head[:len(head) // 2]),
        ("connect and close", b""),
    ]
    ops = []
    for name, data in cases:
        for rst in (False, True):
            wait = 0.05 if "unread" in name else 0.0
            ops.append(("disconnect: %s%s" % (name, ", reset" if rst else ""),
                        lambda d=data, r=rst, w=wait: disconnect(port, d, r, w)))
    return ops


def left_idle(port, held):
    """A connection that sends half its headers and stays open: the server times it out (or
    closes it at shutdown). Kept in `held` so that it is not closed by the client."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Le")
    held.append(s)


def burst(port, tally, n=20):
    """n requests at once to digits, whose queue holds MAX_QUEUE: each answer is right or 503
    'queue full'."""
    body = ts.read_example("infer_3.json")
    barrier = threading.Barrier(n)
    out = []
    lock = threading.Lock()

    def one():
        try:
            barrier.wait(timeout=30)
            st, h, b = ts.request(port, "POST", INFER, body,
                                  {"Content-Type": "application/json"}, timeout=60)
            res = (st, h, b)
        except Exception as e:  # noqa: BLE001
            res = (-1, {}, ("%s: %s" % (type(e).__name__, e)).encode())
        with lock:
            out.append(res)
    th = [threading.Thread(target=one) for _ in range(n)]
    for t in th:
        t.start()
    for t in th:
        t.join(120)
    codes = {}
    for st, h, b in out:
        if st == 200:
            ts.close_to(json.loads(b)["outputs"][0]["data"], EXPECTED["3.png"]["logits"], 1e-4,
                        "burst answer")
        elif st == 503:
            ts.expect_eq(ts.error_of(st, h, b), QUEUE_FULL, "burst 503 message")
        else:
            raise AssertionError("burst answer %d: %s" % (st, ts.short(b)))
        codes[st] = codes.get(st, 0) + 1
    ts.expect_eq(len(out), n, "answers")
    for st, c in codes.items():
        tally.count("burst %d" % st, c)


def mymodel_shapes(port, rnd):
    """mymodel at a few sizes (one oneDNN plan per input shape, kept until exit)."""
    h, w = rnd.choice([(5, 5), (6, 9), (8, 7), (10, 12), (16, 16), (24, 20)])
    x = [((i * 7) % 11) / 11.0 for i in range(3 * h * w)]
    r = ts.post_json(port, "/v2/models/mymodel/infer", ts.infer_body(x, [1, 3, h, w]))
    ts.expect_eq(r["outputs"][0]["shape"], [1, 64, h - 4, w - 4], "mymodel output shape")


# ---- the leak checkers ------------------------------------------------------------------------

def check_valgrind_log(path):
    """(ok, summary lines): zero errors and nothing definitely or indirectly lost."""
    with open(path, errors="replace") as f:
        text = f.read()
    lines = [re.sub(r"^==\d+== ?", "", l) for l in text.splitlines()]
    m = re.search(r"ERROR SUMMARY: ([\d,]+) errors from ([\d,]+) contexts \(suppressed: ([\d,]+)",
                  text)
    if not m:
        return False, ["no ERROR SUMMARY in %s (did valgrind finish?)" % path]
    errors = int(m.group(1).replace(",", ""))
    lost = {}
    for kind in ("definitely lost", "indirectly lost", "possibly lost", "still reachable",
                 "suppressed"):
        mm = re.search(r"%s: ([\d,]+) bytes in ([\d,]+) blocks" % kind, text)
        lost[kind] = (int(mm.group(1).replace(",", "")), int(mm.group(2).replace(",", ""))) \
            if mm else (0, 0)
    summary = [l.strip() for l in lines if re.search(
        r"ERROR SUMMARY|definitely lost:|indirectly lost:|possibly lost:|still reachable:|"
        r"suppressed:|in use at exit|total heap usage|FILE DESCRIPTORS|no leaks are possible", l)]
    used = [l.strip() for l in lines if re.match(r"\s*used_suppression:", l)]
    ok = errors == 0 and lost["definitely lost"][0] == 0 and lost["indirectly lost"][0] == 0
    if not ok:  # the first three error or leak records with their stacks
        for block in re.findall(r"(==\d+== (?:Invalid|Conditional|Use of|Syscall|Mismatched|"
                                r"Source and|Argument|.*bytes in [\d,]+ blocks are (?:definitely|"
                                r"indirectly) lost).*(?:\n==\d+== +(?:at|by) .*){1,25})",
                                text)[:3]:
            summary.append("----\n" + re.sub(r"^==\d+== ?", "", block, flags=re.M))
    return ok, summary + ["used suppressions: %s" % (used or "none")] + (
        [] if ok else ["(log: %s)" % path])


def check_lsan_reports(folder):
    files = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    if not files:
        return True, ["no sanitizer reports"]
    out = []
    for name in files:
        with open(os.path.join(folder, name), errors="replace") as f:
            out.append("---- %s\n%s" % (name, "".join(f.readlines()[:60])))
    return False, out


# ---- main -------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "build-leaks", "convserve"))
    ap.add_argument("--models", default=os.path.join(ROOT, "config", "models"))
    ap.add_argument("--mode", choices=("valgrind", "lsan", "none"), default="valgrind",
                    help="valgrind: run the binary under memcheck; lsan: the binary is an ASan "
                         "build, LeakSanitizer reports at exit; none: no leak checker (quick run)")
    ap.add_argument("--valgrind", default="valgrind")
    ap.add_argument("--suppressions", default=os.path.join(ROOT, "tests", "valgrind.supp"))
    ap.add_argument("--requests", type=int, default=3000, help="about this many requests")
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("LEAKS_SECONDS", 150)),
                    help="time budget of the mixed phase; what is left is skipped (and reported)")
    ap.add_argument("--min-requests", type=int, default=2000,
                    help="fewer requests answered than this (time budget too short) is a failure")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("LEAKS_SEED", 1)))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder and logs")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    global EXPECTED
    with open(os.path.join(ts.EXAMPLES, "expected.json")) as f:
        EXPECTED = json.load(f)
    workdir = tempfile.mkdtemp(prefix="convserve-leaks-")
    repo = os.path.join(workdir, "models")
    for m in MODELS:
        shutil.copytree(os.path.join(args.models, m), os.path.join(repo, m))
    ts.LOADED = ", ".join(sorted(MODELS))  # the 404 messages of the hostile table name them
    ts.SHUTDOWN_TIMEOUT = 60               # valgrind: slow requests, and the leak check at exit

    # The command: a wrapper script that execs the leak checker around the binary (the pid stays
    # the server's, so SIGTERM reaches it).
    vg_log = os.path.join(workdir, "valgrind.log")
    reports = os.path.join(workdir, "sanitizer-reports")
    os.makedirs(reports)
    cmd = binary
    if args.mode == "valgrind":
        cmd = os.path.join(workdir, "convserve-under-valgrind")
        opts = VALGRIND_OPTS + ["--log-file=" + vg_log]
        if args.suppressions:
            opts.append("--suppressions=" + os.path.abspath(args.suppressions))
        with open(cmd, "w") as f:
            f.write("#!/bin/sh\nexec %s %s %s \"$@\"\n" % (
                args.valgrind, " ".join("'%s'" % o for o in opts), binary))
        os.chmod(cmd, 0o755)
    elif args.mode == "lsan":
        os.environ["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1:log_path=%s/asan" % reports
        lsan = os.path.join(ROOT, "tests", "lsan.supp")
        if os.path.exists(lsan):
            os.environ["LSAN_OPTIONS"] = "suppressions=%s:print_suppressions=0" % lsan
    extra = ["--connection-timeout", "3", "--max-queue", str(MAX_QUEUE), "--infer-threads", "1"]
    log("mode %s, binary %s, models %s, seed %d" % (args.mode, binary, ", ".join(MODELS),
                                                     args.seed))

    tally = Tally()
    srv = None
    rc = None
    held = []
    t_start = time.monotonic()
    figures = {}
    try:
        srv = ts.Server(cmd, repo, workdir, "leaks", extra)
        port = srv.wait_ready(timeout=300)
        log("server ready on port %d after %.0f s" % (port, time.monotonic() - t_start))
        s = ts.Suite(None, port, repo, EXPECTED)
        ref = s.infer_example()
        rnd = random.Random(args.seed)

        # The mix: (name, function, exclusive) times its repeats; about --requests requests.
        shared_ops = [
            ("health", s.health), ("GET /v2", s.server_meta), ("model metadata", s.model_meta),
            ("model ready", s.model_ready), ("metrics format", s.metrics_basic),
            ("BYTES images", s.bytes_input), ("POST image/png", s.predict_post_raw),
            ("multipart", s.predict_multipart), ("?top=3", s.predict_top),
            ("multipart variants", s.multipart_variants),
            ("multipart part numbers", s.multipart_part_numbers),
            ("flatten_linear", s.flatten_linear_infer),
            ("image without preprocess", s.image_without_preprocess),
            ("shapes mymodel", s.shapes_mymodel),
            ("mymodel sizes", lambda: mymodel_shapes(port, rnd)),
        ] + [("PUT " + n, lambda n=n: s.predict_put(n)) for n in ("0.png", "3.png", "7.png",
                                                                   "5.jpg")]
        exact_ops = [  # compare with an answer exactly, or hammer the queue
            ("infer_3.json", s.infer_example), ("infer variants", s.infer_variants),
            ("binary input", lambda: s.binary_in(ref)), ("binary output", lambda: s.binary_out(ref)),
            ("FP64 and integer inputs", lambda: s.dtypes(ref)),
            ("chunked body", lambda: s.chunked_body(ref)), ("keep-alive", s.keep_alive),
            ("PNG PGM BMP", s.image_formats),
        ]
        rows = ts.hostile_rows()
        loaded = set(MODELS)
        for r in rows:  # rows for models left out of the repository: now a 404 naming them
            m = re.match(r"^/(?:v2/models|predictions)/([^/?]+)", r["path"])
            if m and m.group(1) not in loaded and m.group(1) != "nope" and r["status"] != 404:
                r.update(status=404, error_re=None, expect_headers={},
                         error="model '%s' is not loaded (loaded: %s)" % (m.group(1), ts.LOADED))
        scale = max(1, round(args.requests / 3000.0))
        ops = []
        ops += [(n, f, False) for n, f in shared_ops] * (10 * scale)
        ops += [(n, f, True) for n, f in exact_ops] * (10 * scale)
        ops += [("hostile: " + r["name"], lambda r=r: ts.run_row(port, r), False)
                for r in rows] * (16 * scale)
        ops += [(n, f, False) for n, f in disconnect_ops(port, rnd)] * (16 * scale)
        ops += [("burst of 20 over a queue of %d" % MAX_QUEUE, lambda: burst(port, tally),
                 True)] * (8 * scale)
        ops += [("left idle for the timeout", lambda: left_idle(port, held), False)] * (
            10 * scale)
        ops += [("full batches (64)", lambda: s.full_batches(ref), True),
                ("concurrency of 1-7 samples", lambda: s.concurrency_multi_sample(8, 2), True),
                ("concurrency of mixed shapes", lambda: s.concurrency_mixed_shapes(6, 2), True)
                ] * (3 * scale)
        rnd.shuffle(ops)
        log("mixed phase: %d operations from %d clients, at most %.0f s" % (
            len(ops), args.clients, args.seconds))
        work = queue.Queue()
        for op in ops:
            work.put(op)
        deadline = time.monotonic() + args.seconds
        skipped = [0]
        turns = Exclusive()

        def client():
            while True:
                try:
                    name, fn, exclusive = work.get_nowait()
                except queue.Empty:
                    return
                if time.monotonic() > deadline:
                    skipped[0] += 1
                    continue
                turns.run(exclusive, lambda: tally.run(name, fn))
        t0 = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        last = t0
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)
            if time.monotonic() - last >= 15:
                last = time.monotonic()
                done = sum(a + b for a, b in tally.ops.values())
                log("%4.0f s: %d of %d operations done, %d failed" % (
                    last - t0, done, len(ops), len(tally.failures)))
        figures["mixed_s"] = time.monotonic() - t0
        figures["skipped"] = skipped[0]
        log("mixed phase done in %.0f s (%d operations skipped for time)" % (
            figures["mixed_s"], skipped[0]))

        # Alone: checks that need the server to themselves.
        tally.run("metrics counters", s.metrics_counts)
        tally.run("concurrency, cross-talk", lambda: s.concurrency(MAX_QUEUE, 3))
        tally.run("idle connections timed out", lambda: expect_closed(held, 8))
        tally.run("alive, right and idle at the end", s.alive_and_right)
        text = ts.metrics_text(port)
        codes = {}
        for line in text.splitlines():
            m = re.match(r'^convserve_requests_total\{model="[^"]*",version="[^"]*",code="(\d+)"\} (\d+)', line)
            if m:
                codes[m.group(1)] = codes.get(m.group(1), 0) + int(m.group(2))
        figures["codes"] = codes
        figures["requests"] = sum(codes.values())
        # A few idle connections stay open at SIGTERM, for the shutdown path.
        for _ in range(3):
            left_idle(port, held)

        def shutdown():
            def check(answer):
                ts.close_to(answer["outputs"][0]["data"], EXPECTED["3.png"]["logits"], 1e-4,
                            "answer during shutdown")
            figures["stop"] = ts.stop_under_load(srv, port, INFER, ts.read_example("infer_3.json"),
                                                 check, loops=3, warm=3, warm_timeout=30)
        tally.run("SIGTERM with requests in flight", shutdown)
        rc = figures["stop"]["rc"] if "stop" in figures else srv.proc.poll()
    except Exception as e:  # noqa: BLE001 - the harness itself: still report
        tally.failures.append(("the harness", "%s: %s\n%s" % (type(e).__name__, e,
                                                            traceback.format_exc())))
        print("FAIL  the harness: %s" % traceback.format_exc(), flush=True)
    finally:
        for sk in held:
            sk.close()
        if srv is not None:
            if srv.proc.poll() is None:
                rc, _ = srv.stop()
            else:
                rc = srv.proc.returncode if rc is None else rc
                srv.kill()

    # ---- verdict
    print()
    results = []
    results.append(("server exit code after SIGTERM is 0", "exit %r%s" % (
        rc, " (valgrind's --error-exitcode)" if rc == 99 else ""), rc == 0))
    if args.mode == "valgrind":
        ok, lines = check_valgrind_log(vg_log)
        results.append(("valgrind: 0 errors, 0 bytes definitely / indirectly lost",
                        "\n      ".join(lines), ok))
    elif args.mode == "lsan":
        ok, lines = check_lsan_reports(reports)
        results.append(("LeakSanitizer / ASan: no reports", "\n      ".join(lines), ok))
    lines = srv.text().splitlines() if srv else []
    bad = [l for l in lines if ts.BAD_LOG_RE.search(l)]
    foreign = [l for l in lines if l and not ts.LOG_LINE_RE.match(l) and
               not MHD_CLIENT_NOISE_RE.match(l)]
    results.append(("server log: no errors, only the server's own lines",
                    "%d lines, %d errors%s, %d unknown%s" % (
                        len(lines), len(bad), " (first: %s)" % bad[0] if bad else "",
                        len(foreign), " (first: %s)" % foreign[0] if foreign else ""),
                    not bad and not foreign))
    nops = sum(a + b for a, b in tally.ops.values())
    results.append(("every operation answered as expected",
                    "%d operations, %d failed%s" % (nops, len(tally.failures), "; first: %s: %s" % (
                        tally.failures[0][0], tally.failures[0][1][:300])
                        if tally.failures else ""),
                    not tally.failures))
    req = figures.get("requests", 0)
    results.append(("requests answered >= %d" % args.min_requests,
                    "%d requests answered (by status: %s), %d more connections closed by "
                    "clients; %d operations skipped for time; bursts: %s; then %d requests "
                    "around SIGTERM, stopped in %.1f s" % (
                        req - figures.get("codes", {}).get("0", 0),
                        {k: v for k, v in sorted(figures.get("codes", {}).items()) if k != "0"},
                        figures.get("codes", {}).get("0", 0), figures.get("skipped", 0),
                        {k: v for k, v in sorted(tally.extra.items())},
                        figures.get("stop", {}).get("answered", 0),
                        figures.get("stop", {}).get("seconds", 0)),
                    req - figures.get("codes", {}).get("0", 0) >= args.min_requests))
    print("==== leaks summary (%s, %.0f s in all) ====" % (args.mode,
                                                          time.monotonic() - t_start))
    for name, value, ok in results:
        print("  %-4s %s\n      %s" % ("ok" if ok else "FAIL", name, value))
    failed = [r for r in results if not r[2]]
    print("\n%d criteria, %d failed" % (len(results), len(failed)))
    if failed or args.keep:
        print("---- last lines of %s" % (srv.log_path if srv else "(no server)"))
        print("\n".join(lines[-10:]))
        print("kept %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def expect_closed(held, timeout):
    """The idle connections opened so far have been closed by the server (connection timeout)."""
    deadline = time.monotonic() + timeout
    still = []
    for s in held:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            data = s.recv(100)
        except socket.timeout:
            still.append(s)
            continue
        except OSError:
            data = b""
        ts.expect(data == b"", "an idle connection got an answer: %r" % data[:100])
    ts.expect(not still, "%d of %d idle connections still open after the timeout" % (
        len(still), len(held)))


EXPECTED = None

if __name__ == "__main__":
    sys.exit(main())
