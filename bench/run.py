#!/usr/bin/python3
"""run.py - convserve's benchmark, every figure side by side in one run (bench/run.sh calls it).

    /usr/bin/python3 bench/run.py [--quick] [--only SECTIONS] [--configs 'NAME;NAME'] [--out FILE]

The sections, in the order they run (--only picks some; the report then goes to
BUILD/bench/results-partial.md, not bench/results.md):
  engine   `convserve-engine bench` against PyTorch 1.13 (frozen + optimize_for_inference, the
           same weights and threads) for cnn_bn and digits at batch 1, 16 and 64, f32 and bf16.
  zoo      bench/zoo.py: resnet18 and mobilenet_v2 at 224x224, batch 1 and 16, against PyTorch
           and the FMA peak (build/bench_fma); then the same folders through HTTP, batch 16 with
           the Triton binary tensor extension, against the engine alone.
  batches  ms per batch for every N (bench/batches.py's measurement): this engine against the one
           before cost-based batch planning (built once from git into BUILD/bench/before-REV).
  server   cnn_bn batch-1 v2 JSON through wrk at CONNECTIONS, for every server configuration of
           SERVER_CONFIGS: req/s, p50/p99, the mean executed batch (/metrics), and the engine
           alone at that batch with the server's workers and threads (concurrent
           `convserve-engine bench` processes, summed); one client against the engine's batch-1
           time; one client in binary tensors, batch-64 binary and PNG loads; RSS and idle CPU.
  peers    bench/peer_fastapi.py (FastAPI + uvicorn + PyTorch) under the same load, "tuned"
           (BENCH_PEER_WORKERS x BENCH_PEER_THREADS) and "plain" (1 worker, torch on every CPU).
  decode   bench/decode.py: 3 MP and 12 MP JPEGs, stb_image full vs libjpeg-turbo scaled vs PIL.
  health   GET /v2/health/live latency while 8-16 clients upload heavy JPEGs (HEALTH_LOADS).
A section that fails is reported as not measured and the others still run (exit status 1).
The report (bench/report.py) is printed and written to bench/results.md with the machine and the
exact commands; every figure goes to BUILD/bench/results.json; the charts (bench/charts.py) to
bench/charts/. Both scripts can redraw from results.json alone.

Other programs on the machine disturb the figures: the CPU they used during each measurement is
recorded ("bg", % of all CPUs), and a measurement they disturbed by >= 20% is done once more
(BENCH_RETRIES times in all), keeping the quieter one. Every process started here is stopped on
exit, also on Ctrl-C or SIGTERM.

Environment (or the flags of --help): BENCH_BUILD_DIR (build), BENCH_SECONDS (each HTTP load, 10;
--quick 2), BENCH_ENGINE_SECONDS (1), BENCH_REPEATS (engine figures: best of 3; --quick 1),
BENCH_RETRIES (8; --quick 2), BENCH_PEER_WORKERS and BENCH_PEER_THREADS (1 and 1), BENCH_OUT.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import batches  # noqa: E402  (its per-N measurement, its "before" revision and tolerance)
import report  # noqa: E402

PY = "/usr/bin/python3"  # Debian's python3-torch lives only here

# The server configurations measured side by side, so that defaults are chosen from figures.
# (name, flags, environment); "{cpus}" is the machine's CPU count. A configuration that resolves
# to the same workers, threads, flags and environment as an earlier one (the server logs what it
# chose) is reported as such and not measured twice: on 2 CPUs the default is 1x2.
# "default" is convserve as tools/serve.sh, the image and the manifests run it: the shipped
# models' batching (no delay) and OMP_WAIT_POLICY=passive. The others change one thing each.
PASSIVE = {"OMP_WAIT_POLICY": "passive"}
SERVER_CONFIGS = [
    ("default", [], PASSIVE),
    ("1x{cpus}", ["--instances", "1", "--infer-threads", "{cpus}"], PASSIVE),
    ("{cpus}x1", ["--instances", "{cpus}", "--infer-threads", "1"], PASSIVE),
    ("default, libgomp's own wait policy", [], {"OMP_WAIT_POLICY": None}),
    ("default, 500 us batching delay", ["--max-queue-delay-us", "500"], PASSIVE),
    ("{cpus}x1, libgomp's own wait policy", ["--instances", "{cpus}", "--infer-threads", "1"],
     {"OMP_WAIT_POLICY": None}),
]
CONNECTIONS = (1, 4, 16, 64, 128)
INFER = "/v2/models/cnn_bn/infer"  # the batch-1 JSON loads' route, on convserve and the peer
# Health under image load: (short name, description, file, connections). The progressive JPEG is
# the fuzz regression input without its 3 setting bytes (tests/fuzz/README.md).
PROGRESSIVE = "tests/fuzz/image/regressions/jpeg_progressive_16m_pixels_64_eob_scans"
FUZZ_SETTING_BYTES = 3
HEALTH_LOADS = [
    ("12 MP photo JPEG", "12 MP photo JPEG (bench/decode.py's)", "photos/photo_12MP.jpg", 8),
    ("64-scan progressive JPEG", "progressive JPEG of 4096x4088 pixels in 64 scans (the fuzz "
     "regression input)", "photos/progressive_64_scans.jpg", 16),
]
HEALTH_INTERVAL = 0.02  # seconds between probes; each probe opens a new connection, as kubelet does
HEALTH_TIMEOUT = 10.0
ZOO_HTTP_BATCH = 16
ZOO_HTTP_CONNECTIONS = 2
B64_CONNECTIONS = 2
IMG_CONNECTIONS = 16
ERROR_CHARS = 240  # of a failed command's last line in the report; the log file has all of it
BG_LIMIT = report.BG_LIMIT  # % of all CPUs used by others that makes a measurement run again
SECTIONS = ("engine", "zoo", "batches", "server", "peers", "decode", "health")
QUICK_BATCHES = (1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 33, 40, 48, 56, 63, 64)
CHECK_TOLERANCE = 1e-4  # relative to the largest logit, at least 1


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


def rel(path):
    """Paths as the project speaks of them: relative to its root (others stay as they are)."""
    path = str(path)
    if os.path.isabs(path) and path.startswith(ROOT + os.sep):
        return os.path.relpath(path, ROOT)
    return path


def environment(env):
    """This process's environment with `env` applied: a value of None removes the variable."""
    out = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def shell_line(cmd, env=None):
    """The command as one would type it, with its environment settings first."""
    pre = " ".join(f"{k}={v}" if v is not None else f"-u {k}" for k, v in (env or {}).items())
    pre = ("env " + pre) if any(v is None for v in (env or {}).values()) else pre
    return (pre + " " if pre else "") + " ".join(str(c) for c in cmd)


# ------------------------------------------------------------------------------------------------
# CPU accounting: what this run used and what everything else on the machine used meanwhile.

HZ = os.sysconf("SC_CLK_TCK")


def machine_ticks():
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def proc_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def descendants(pid):
    """pid and every process below it."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += [c for c, pp in parent.items() if pp == p]
    return out


def own_ticks(pids):
    """This process (the health poller runs here), its finished children (wrk, engine runs) and
    the running servers in `pids`."""
    t = os.times()
    ticks = (t.user + t.system + t.children_user + t.children_system) * HZ
    for p in pids:
        ticks += sum(proc_ticks(q) for q in descendants(p))
    return ticks


def tree_ticks(pid):
    return sum(proc_ticks(q) for q in descendants(pid))


def rss_kb(pid):
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")),
                              0)
        except OSError:
            pass
    return total


def busy_processes():
    """Other programs using >= 5% of a CPU now (top's second sample, over 1 s)."""
    out = subprocess.run(["top", "-b", "-n2", "-d1", "-w", "200"], capture_output=True,
                         text=True).stdout
    frames = out.split("\ntop -")
    rows = []
    for line in frames[-1].splitlines():
        f = line.split()
        if len(f) >= 12 and f[0].isdigit():
            try:
                cpu = float(f[8])
            except ValueError:
                continue
            if cpu >= 5 and int(f[0]) != os.getpid():
                rows.append(f"{f[11]} (pid {f[0]}, {cpu:.0f}%)")
    return ", ".join(rows) or "none"


# ------------------------------------------------------------------------------------------------
# Processes this run starts.

class Proc:
    """A server started in its own process group, so that stopping it stops its workers too."""

    def __init__(self, bench, name, cmd, env, log_path):
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self.log = open(log_path, "w")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
                                  env=environment(env), start_new_session=True)
        bench.procs.append(self)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def tail(self, n=5):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:]).strip()
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                m = re.search(pattern, f.read())
            if m:
                return m
            if not self.alive():
                raise BenchError(f"{self.name} exited during startup: {self.tail()}")
            time.sleep(0.1)
        raise BenchError(f"{self.name} did not log /{pattern}/ within {timeout} s: {self.tail()}")

    def wait_ready(self, url, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise BenchError(f"{self.name} exited during startup: {self.tail()}")
            try:
                with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.name} not ready after {timeout} s: {self.tail()}")

    def stop(self):
        """SIGTERM to the group, SIGKILL after 15 s."""
        if self.p.returncode is None:
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.p.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    self.p.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # workers left behind by a leader that died first
            os.killpg(self.p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_request(url, data=None, headers=None, method=None, timeout=60):
    """(status, body bytes); HTTP errors are answers too."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# A per-model series: {model="m"} or {model="m",version="v"}; versions are summed.
METRIC = re.compile(r'^(\w+)\{model="([^"]*)"(?:,version="[^"]*")?\} (\S+)$')


def scrape(url, model):
    """The per-model sums and counts of /metrics, by name."""
    status, body = http_request(url + "/metrics")
    if status != 200:
        raise BenchError(f"GET /metrics answered {status}")
    out = {}
    for line in body.decode().splitlines():
        m = METRIC.match(line)
        if m and m.group(2) == model:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def server_view(before, after):
    """The server's own view of a load from /metrics deltas: mean executed batch, mean time in
    the server and in the batching queue per request (ms), mean inference time per batch (ms)."""
    def mean(name, scale):
        dc = after.get(name + "_count", 0) - before.get(name + "_count", 0)
        ds = after.get(name + "_sum", 0) - before.get(name + "_sum", 0)
        return scale * ds / dc if dc > 0 else None
    return {"batch": mean("convserve_batch_size", 1),
            "server_ms": mean("convserve_request_duration_seconds", 1e3),
            "queue_ms": mean("convserve_queue_duration_seconds", 1e3),
            "inference_ms": mean("convserve_inference_duration_seconds", 1e3)}


class HealthPoller(threading.Thread):
    """GET /v2/health/live every HEALTH_INTERVAL on a new connection; latencies in ms."""

    def __init__(self, host, port):
        super().__init__(daemon=True)
        self.host, self.port = host, port
        self.ms, self.failures = [], 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            t0 = time.perf_counter()
            conn = http.client.HTTPConnection(self.host, self.port, timeout=HEALTH_TIMEOUT)
            try:
                conn.request("GET", "/v2/health/live")
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
            finally:
                conn.close()
            dt = time.perf_counter() - t0
            if ok:
                self.ms.append(dt * 1e3)
            else:
                self.failures += 1
            self.done.wait(max(0.0, HEALTH_INTERVAL - dt))

    def stats(self):
        v = sorted(self.ms)
        if not v:
            return {"n": 0, "failures": self.failures}
        pick = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
        return {"n": len(v), "p50": pick(0.5), "p99": pick(0.99), "max": v[-1],
                "over_1s": sum(1 for x in v if x >= 1000), "failures": self.failures}


# ------------------------------------------------------------------------------------------------

ENGINE_LINE = re.compile(r"precision (\w+): ([0-9.]+) img/s, ([0-9.]+) ms per batch")
WRK_LINE = re.compile(r"^BENCH (.*)$", re.M)


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.build = os.path.join(ROOT, args.build)
        self.work = os.path.join(self.build, "bench")
        self.logs = os.path.join(self.work, "logs")
        self.models = os.path.join(self.work, "models")
        self.bf16 = os.path.join(self.work, "models-bf16")
        self.bodies = os.path.join(self.work, "bodies")
        self.engine = os.path.join(self.build, "convserve-engine")
        self.server = os.path.join(self.build, "convserve")
        self.cpus = os.cpu_count() or 1
        self.dur = args.seconds
        self.esec = args.engine_seconds
        self.reps = args.repeats
        self.retries = args.retries
        self.idle = 2 if self.quick else 5
        self.procs = []
        self.commands = []
        self.bg_max = 0
        self.R = {"meta": {}, "commands": self.commands}
        self.comparators = {}
        self.failures = 0

    # -- bookkeeping -----------------------------------------------------------------------------
    def note(self, line):
        if line not in self.commands:
            self.commands.append(line)

    def run(self, cmd, env=None, note=True, check=True):
        """Runs a command to completion; its stdout."""
        if note:
            self.note(shell_line([rel(c) for c in cmd], env))
        r = subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True,
                           env=environment(env))
        if check and r.returncode != 0:
            self.failures += 1
            path = os.path.join(self.logs, f"failed-{self.failures}.txt")
            with open(path, "w") as f:
                f.write(f"{shell_line(cmd, env)}\nexit status {r.returncode}\n\n"
                        f"{r.stdout}\n{r.stderr}")
            last = (r.stderr.strip() or r.stdout.strip() or "no output").splitlines()[-1]
            if len(last) > ERROR_CHARS:
                last = last[:ERROR_CHARS] + "..."
            raise BenchError(f"`{shell_line([rel(c) for c in cmd])}` failed: {last} (all of it in "
                             f"{rel(path)})")
        return r.stdout

    def measure(self, label, fn, pids=()):
        """fn() with the background others put on the machine meanwhile; once more if they used
        >= BG_LIMIT % of the CPUs (while retries last), keeping the quieter run."""
        best = None
        for attempt in (1, 2):
            m0, o0 = machine_ticks(), own_ticks(pids)
            result = fn()
            m1, o1 = machine_ticks(), own_ticks(pids)
            total = m1[1] - m0[1]
            bg = max(0.0, 100.0 * (m1[0] - m0[0] - (o1 - o0)) / total) if total > 0 else 0.0
            bg = round(bg)
            if best is None or bg < best[1]:
                best = (result, bg)
            if bg < BG_LIMIT or attempt == 2 or self.retries <= 0:
                break
            self.retries -= 1
            log(f"other programs used {bg}% of the CPUs during {label}: once more")
        self.bg_max = max(self.bg_max, best[1])
        return best

    # -- engine runs -----------------------------------------------------------------------------
    def engine_once(self, model, batch, threads, seconds, env=None, engine=None, note=True):
        cmd = [engine or self.engine, "bench", model, "--batch", batch, "--seconds",
               f"{seconds:g}", "--threads", threads]
        out = self.run(cmd, env, note=note)
        m = ENGINE_LINE.search(out)
        if not m:
            raise BenchError(f"no figure in: {out.strip()}")
        return {"precision": m.group(1), "img_s": float(m.group(2)), "ms": float(m.group(3))}

    def engine_best(self, model, batch, threads, seconds, repeats, env=None):
        runs = [self.engine_once(model, batch, threads, seconds, env) for _ in range(repeats)]
        return max(runs, key=lambda r: r["img_s"])

    def engine_concurrent(self, model, batch, threads, procs, seconds, env):
        """`procs` engine processes at once, like the server's instances; img/s summed."""
        cmd = [self.engine, "bench", model, "--batch", str(batch), "--seconds", str(seconds),
               "--threads", str(threads)]
        self.note(f"{shell_line([rel(c) for c in cmd], env)}"
                  + (f"   # {procs} at once, img/s summed" if procs > 1 else ""))
        ps = []
        try:
            for _ in range(procs):
                ps.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True,
                                           env=environment(env)))
            outs = [p.communicate() for p in ps]
        finally:  # interrupted: the others stop too
            for p in ps:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        total, ms = 0.0, []
        for p, (out, err) in zip(ps, outs):
            m = ENGINE_LINE.search(out)
            if p.returncode != 0 or not m:
                raise BenchError(f"`{shell_line([rel(c) for c in cmd])}` failed: "
                                 f"{err.strip()[-500:]}")
            total += float(m.group(2))
            ms.append(float(m.group(3)))
        return {"img_s": total, "ms": sum(ms) / len(ms)}

    # -- HTTP loads ------------------------------------------------------------------------------
    def wrk(self, url, conns, body, method="POST", ctype="application/json", hdrlen=None,
            seconds=None):
        env = {"BENCH_BODY": rel(body)}
        if method != "POST":
            env["BENCH_METHOD"] = method
        if ctype != "application/json":
            env["BENCH_CONTENT_TYPE"] = ctype
        if hdrlen is not None:
            env["BENCH_HEADER_LENGTH"] = str(hdrlen)
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds or self.dur}s", "--timeout", "10s",
               "--latency", "-s", "bench/post.lua", url]
        out = self.run(cmd, env)
        m = WRK_LINE.search(out)
        if not m:
            raise BenchError(f"no result from wrk: {out.strip()[-500:]}")
        v = {k: float(x) for k, x in (kv.split("=") for kv in m.group(1).split())}
        errors = {k: int(v[k]) for k in ("non2xx", "connect", "read", "write", "timeout") if v[k]}
        done = v["requests"] > 0  # no latency figures when nothing was answered
        ms = lambda k: v[k] / 1e3 if done else None  # noqa: E731
        return {"rps": v["requests"] / (v["duration_us"] / 1e6), "requests": int(v["requests"]),
                "p50": ms("p50_us"), "p90": ms("p90_us"), "p99": ms("p99_us"), "max": ms("max_us"),
                "errors": errors}

    def load(self, label, proc, url, path, conns, body, model=None, **kw):
        """One wrk load on url + path against `proc`, with its CPU per request, the background,
        and (for convserve, when `model` is given) the server's view from /metrics."""
        def once():
            before = scrape(url, model) if model else None
            t0 = tree_ticks(proc.pid)
            r = self.wrk(url + path, conns, body, **kw)
            t1 = tree_ticks(proc.pid)
            r["cpu_ms"] = 1e3 * (t1 - t0) / HZ / r["requests"] if r["requests"] else None
            if model:
                r.update(server_view(before, scrape(url, model)))
            return r
        log(f"{label}: {conns} connection(s), {self.dur} s")
        r, bg = self.measure(label, once, pids=[proc.pid])
        r["bg"] = bg
        if r["errors"]:
            log(f"ERRORS in {label}: {r['errors']}")
        if not proc.alive():
            raise BenchError(f"{proc.name} died under load: {proc.tail()}")
        return r

    def idle_window(self, proc):
        """The process's CPU over self.idle idle seconds (% of one CPU), and everything else's
        (% of all CPUs)."""
        a, ma = tree_ticks(proc.pid), machine_ticks()
        time.sleep(self.idle)
        b, mb = tree_ticks(proc.pid), machine_ticks()
        mine = 100.0 * (b - a) / HZ / self.idle
        total = mb[1] - ma[1]
        others = 100.0 * (mb[0] - ma[0] - (b - a)) / total if total > 0 else 0.0
        return round(mine, 1), max(0, round(others))

    def start_convserve(self, key, models, flags, env):
        cmd = [self.server, "--models", models, "--port", "0"] + flags
        self.note(shell_line([rel(c) for c in cmd], env))
        log(f"starting {shell_line([rel(c) for c in cmd], env)}")
        p = Proc(self, f"convserve ({key})", cmd, env,
                 os.path.join(self.logs, f"convserve-{key}.log"))
        url = p.wait_log(r"listening on (http://[0-9.]+:[0-9]+)").group(1)
        p.wait_ready(url)
        return p, url

    def check(self, url):
        """The same batch-1 input through the server against PyTorch's logits (the test of
        `bench_torch.py check`, here without loading torch); raises if they differ."""
        with open(os.path.join(self.bodies, "expected_b1.json")) as f:
            want = json.load(f)
        with open(os.path.join(self.bodies, "infer_b1.json"), "rb") as f:
            status, body = http_request(url + INFER, data=f.read(),
                                        headers={"Content-Type": "application/json"})
        if status != 200:
            raise BenchError(f"{url}: the check request answered {status}: {body[:200]!r}")
        got = json.loads(body)["outputs"][0]["data"]
        err = (max(abs(a - b) for a, b in zip(got, want)) if len(got) == len(want)
               else float("inf"))
        scale = max(1.0, max(abs(w) for w in want))
        if err > CHECK_TOLERANCE * scale:
            raise BenchError(f"{url}: the answer differs from PyTorch's by {err:.2e} "
                             f"(scale {scale:.3g})")
        self.note(f"POST {rel(os.path.join(self.bodies, 'infer_b1.json'))} to each server once, "
                  f"logits compared with {rel(os.path.join(self.bodies, 'expected_b1.json'))} "
                  "(PyTorch's)")
        return f"max |difference| {err:.2e}"

    # -- sections --------------------------------------------------------------------------------
    def setup(self):
        os.makedirs(self.logs, exist_ok=True)
        for f in os.listdir(self.logs):
            os.remove(os.path.join(self.logs, f))
        cnn = os.path.join(self.models, "cnn_bn")
        stamp = os.path.join(cnn, "model.json")
        sources = ["tools/notebook_models.py", "tools/export_model.py", "bench/bench_torch.py",
                   "config/models/cnn_bn/model.json"]
        if (not os.path.exists(os.path.join(cnn, "model.safetensors"))
                or any(os.path.getmtime(stamp) < os.path.getmtime(os.path.join(ROOT, s))
                       for s in sources)):
            log(f"exporting cnn_bn with weights to {rel(cnn)}")
            subprocess.run(["rm", "-rf", cnn], check=True)
        if not os.path.exists(os.path.join(cnn, "model.safetensors")):
            self.run([PY, "bench/bench_torch.py", "export-cnnbn", rel(cnn)])
        self.note(f"{PY} bench/bench_torch.py export-cnnbn {rel(cnn)}")
        subprocess.run(["rm", "-rf", os.path.join(self.models, "digits"), self.bf16], check=True)
        subprocess.run(["cp", "-r", os.path.join(ROOT, "config/models/digits"),
                        os.path.join(self.models, "digits")], check=True)
        for m in ("cnn_bn", "digits"):
            dst = os.path.join(self.bf16, m)
            os.makedirs(dst)
            for f in os.listdir(os.path.join(self.models, m)):
                subprocess.run(["cp", os.path.join(self.models, m, f), dst], check=True)
            with open(os.path.join(dst, "model.json")) as f:
                doc = json.load(f)
            doc["precision"] = "bf16"
            with open(os.path.join(dst, "model.json"), "w") as f:
                json.dump(doc, f, indent=1)
        self.run([PY, "bench/bench_torch.py", "bodies", rel(cnn), rel(self.bodies)])
        photos = os.path.join(self.work, "photos")
        os.makedirs(photos, exist_ok=True)
        with open(os.path.join(ROOT, PROGRESSIVE), "rb") as f:
            data = f.read()[FUZZ_SETTING_BYTES:]
        with open(os.path.join(photos, "progressive_64_scans.jpg"), "wb") as f:
            f.write(data)
        self.note(f"tail -c +{FUZZ_SETTING_BYTES + 1} {PROGRESSIVE} > "
                  f"{rel(os.path.join(photos, 'progressive_64_scans.jpg'))}")

    def machine(self):
        meta = self.R["meta"]
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        meta["cpu"] = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                            if line.startswith("Model name")), "?")
        flags = open("/proc/cpuinfo").read()
        meta["isa"] = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
                               if re.search(rf"\b{f}\b", flags))
        meta["cpus"] = self.cpus
        meta["versions"] = subprocess.run(
            [PY, "-c", "import torch, torchvision, fastapi, uvicorn; print(f'torch "
             "{torch.__version__}, torchvision {torchvision.__version__}, fastapi "
             "{fastapi.__version__}, uvicorn {uvicorn.__version__}')"],
            capture_output=True, text=True).stdout.strip()
        dpkg = lambda p: subprocess.run(["dpkg-query", "-W", "-f=${Version}", p],  # noqa: E731
                                        capture_output=True, text=True).stdout or "?"
        meta["onednn"] = dpkg("libdnnl-dev")
        meta["wrk"] = dpkg("wrk")
        meta["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        meta["load_start"] = open("/proc/loadavg").read().split()[:3]
        meta["busy_start"] = busy_processes()
        meta["quick"] = self.quick
        meta["seconds"], meta["engine_seconds"], meta["repeats"] = self.dur, self.esec, self.reps
        log(f"machine: {meta['cpu']}, {self.cpus} CPUs, load {' '.join(meta['load_start'])}; "
            f"busy: {meta['busy_start']}")

    def section_engine(self):
        E = self.R["engine"] = {"rows": [], "torch": []}
        for prec, folder in (("f32", self.models), ("bf16", self.bf16)):
            for m in ("cnn_bn", "digits"):
                for b in (1, 16, 64):
                    label = f"engine {m} {prec} batch {b}"
                    log(f"{label} (best of {self.reps})")
                    r, bg = self.measure(label, lambda: self.engine_best(
                        os.path.join(folder, m), b, self.cpus, self.esec, self.reps))
                    E["rows"].append({"model": m, "prec": prec, "batch": b, "bg": bg, **r})
        cmd = [PY, "bench/bench_torch.py", "engine", "--threads", self.cpus, "--seconds",
               f"{self.esec:g}", "--repeats", self.reps, "--batches", "1,16,64",
               rel(os.path.join(self.models, "cnn_bn")), rel(os.path.join(self.models, "digits"))]
        log("PyTorch, frozen + optimize_for_inference")
        out, E["torch_bg"] = self.measure("PyTorch", lambda: self.run(cmd))
        for line in out.splitlines():
            m = re.match(r"torch (\S+) batch (\d+): ([0-9.]+) img/s, ([0-9.]+) ms per batch", line)
            if m:
                E["torch"].append({"model": m.group(1), "batch": int(m.group(2)),
                                   "img_s": float(m.group(3)), "ms": float(m.group(4))})

    def section_zoo(self):
        zjson = os.path.join(self.work, "zoo.json")
        seconds, repeats = (0.5, 1) if self.quick else (2, 3)
        cmd = [PY, "bench/zoo.py", "--seconds", seconds, "--repeats", repeats, "--threads",
               self.cpus, "--build", rel(self.build), "--out", rel(os.path.join(self.work, "zoo")),
               "--json", rel(zjson)]
        log("graph networks: bench/zoo.py (export, engine, PyTorch, FMA peak)")
        _, bg = self.measure("bench/zoo.py", lambda: self.run(cmd))
        with open(zjson) as f:
            Z = self.R["zoo"] = json.load(f)
        Z["bg"] = bg
        Z["http_batch"], Z["http_conns"] = ZOO_HTTP_BATCH, ZOO_HTTP_CONNECTIONS
        # Through HTTP: the same folders served, batch-16 binary tensors, against the engine alone.
        zoo = os.path.join(self.work, "zoo")
        p, url = self.start_convserve("zoo", zoo, ["--instances", "1", "--infer-threads",
                                                   str(self.cpus)], {})
        try:
            rng = np.random.default_rng(2)
            Z["http_rows"] = {}
            for net in sorted({r["net"] for r in Z["rows"]}):
                with open(os.path.join(zoo, net, "model.json")) as f:
                    doc = json.load(f)
                shape = [ZOO_HTTP_BATCH] + doc["input"]["shape"]
                raw = rng.standard_normal(shape).astype("<f4").tobytes()
                header = json.dumps({"inputs": [{"name": doc["input"]["name"], "shape": shape,
                                                 "datatype": "FP32",
                                                 "parameters": {"binary_data_size": len(raw)}}],
                                     "outputs": [{"name": doc["output"]["name"],
                                                  "parameters": {"binary_data": True}}]},
                                    separators=(",", ":")).encode()
                body = os.path.join(self.bodies, f"zoo_{net}_b{ZOO_HTTP_BATCH}.bin")
                with open(body, "wb") as f:
                    f.write(header + raw)
                r = self.load(f"{net} batch {ZOO_HTTP_BATCH} binary", p, url,
                              f"/v2/models/{net}/infer", ZOO_HTTP_CONNECTIONS, body, model=net,
                              ctype="application/octet-stream", hdrlen=len(header))
                r["img_s"] = r["rps"] * ZOO_HTTP_BATCH
                Z["http_rows"][net] = r
        finally:
            p.stop()

    def before_engine(self):
        """convserve-engine of batches.BEFORE_REV, built once into BUILD/bench/before-REV (from
        `git archive`, so the repository's worktrees are left alone); None without git."""
        rev = batches.BEFORE_REV
        top = os.path.join(self.work, f"before-{rev}")
        exe = os.path.join(top, "build", "convserve-engine")
        if os.access(exe, os.X_OK):
            return exe
        log(f"building convserve-engine at {rev} (the engine before cost-based batch planning)")
        src = os.path.join(top, "src")
        subprocess.run(["rm", "-rf", top], check=True)
        os.makedirs(src)
        arch = subprocess.run(f"git archive {rev} | tar -x -C '{src}'", shell=True, cwd=ROOT,
                              capture_output=True, text=True)
        if arch.returncode != 0:
            log(f"cannot get revision {rev} ({arch.stderr.strip()}): no 'before' column")
            return None
        try:
            self.run(["cmake", "-S", src, "-B", os.path.join(top, "build"),
                      "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_TESTING=OFF"], note=False)
            self.run(["cmake", "--build", os.path.join(top, "build"), "-j", self.cpus,
                      "--target", "convserve-engine"], note=False)
        except BenchError as e:
            log(f"cannot build revision {rev} ({e}): no 'before' column")
            return None
        return exe

    def section_batches(self):
        before = self.before_engine()
        model = os.path.join(self.models, "cnn_bn")
        seconds = 0.1 if self.quick else 0.15
        rounds = 1 if self.quick else batches.ROUNDS
        ns = QUICK_BATCHES if self.quick else range(1, 65)
        rows = []
        log(f"ms per batch for N in {ns[0]}..{ns[-1]} ({len(ns)} sizes), before and after")
        for n in ns:
            def one():
                b = (batches.time_median(before, rel(model), n, seconds, self.cpus, False, rounds)
                     if before else None)
                a = batches.time_median(self.engine, rel(model), n, seconds, self.cpus, True,
                                        rounds)
                return b, a
            (b, a), bg = self.measure(f"batch {n}", one)
            rows.append({"n": n, "before": b, "after": a, "bg": bg})
        if before:
            self.note(f"{rel(before)} bench {rel(model)} --batch N --seconds {seconds} --threads "
                      f"{self.cpus}   # N = {ns[0]}..{ns[-1]}; built from git revision "
                      f"{batches.BEFORE_REV}; the median of {rounds} processes")
        self.note(f"{rel(self.engine)} bench {rel(model)} --sweep N-N --seconds {seconds} "
                  f"--threads {self.cpus}   # interleaved with the line above; the median of "
                  f"{rounds} processes")

        def inversions(col):
            return [rows[i]["n"] for i in range(len(rows) - 1)
                    if rows[i][col] is not None and rows[i + 1][col] is not None
                    and rows[i][col] > rows[i + 1][col] * (1 + batches.TOLERANCE)]
        self.R["batches"] = {"model": "cnn_bn", "threads": self.cpus, "seconds": seconds,
                             "rounds": rounds,
                             "before_rev": batches.BEFORE_REV if before else None, "rows": rows,
                             "bad_before": inversions("before") if before else None,
                             "bad_after": inversions("after"), "tolerance": batches.TOLERANCE}

    def section_server(self):
        S = self.R["server"] = {"configs": [], "connections": list(CONNECTIONS),
                                "b64_conns": B64_CONNECTIONS, "img_conns": IMG_CONNECTIONS}
        seen = {}
        cnn = os.path.join(self.models, "cnn_bn")
        body = os.path.join(self.bodies, "infer_b1.json")
        wanted = [c.strip() for c in self.args.configs.split(";")] if self.args.configs else None
        for name, flags, env in SERVER_CONFIGS:
            name = name.format(cpus=self.cpus)
            if wanted and name not in wanted:
                continue
            flags = [f.format(cpus=self.cpus) for f in flags]
            C = {"name": name, "flags": flags, "env": env, "loads": {}, "engine": {}}
            S["configs"].append(C)
            key = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
            p, url = self.start_convserve(key, self.models, flags, env)
            try:
                m = p.wait_log(r"model cnn_bn (?:version \S+ )?loaded .*?(\d+) instances? of "
                               r"(\d+) threads?")
                C["instances"], C["threads"] = int(m.group(1)), int(m.group(2))
                shape_flags = ("--instances", "--infer-threads")
                rest = [f for i, f in enumerate(flags) if f not in shape_flags
                        and (i == 0 or flags[i - 1] not in shape_flags)]
                sig = (C["instances"], C["threads"], tuple(rest), tuple(sorted(env.items())))
                if sig in seen:
                    C["same_as"] = seen[sig]
                    log(f"{name} resolves to {C['instances']}x{C['threads']}, as {seen[sig]}: "
                        "not measured again")
                    continue
                seen[sig] = name
                C["check"] = self.check(url)
                default = name == "default"
                if default:
                    time.sleep(1)
                    S["rss_idle_kb"] = rss_kb(p.pid)
                    S["cpu_idle"], S["bg_idle"] = self.idle_window(p)
                for c in CONNECTIONS:
                    C["loads"][str(c)] = self.load(f"{name}, batch-1 JSON", p, url, INFER, c,
                                                   body, model="cnn_bn")
                if default:
                    for key, n, conns in (("b1", 1, 1), ("b64", 64, B64_CONNECTIONS)):
                        hdr = int(open(os.path.join(self.bodies, f"infer_b{n}.hdrlen")).read())
                        S[key] = self.load(f"batch {n} binary", p, url, INFER, conns,
                                           os.path.join(self.bodies, f"infer_b{n}.bin"),
                                           model="cnn_bn", ctype="application/octet-stream",
                                           hdrlen=hdr)
                    S["img"] = self.load("PNG images", p, url, "/predictions/digits",
                                         IMG_CONNECTIONS, os.path.join(ROOT, "examples/3.png"),
                                         model="digits", method="PUT", ctype="image/png")
                    S["rss_load_kb"] = rss_kb(p.pid)
                    S["cpu_after"], S["bg_after"] = self.idle_window(p)
            finally:
                p.stop()
            # The engine alone at each load's mean executed batch, with the server's workers and
            # threads: as many concurrent processes as batches could run at once (the instances,
            # but no more than the connections: one client never keeps two workers busy).
            seconds = 1 if self.quick else 2
            for c in CONNECTIONS:
                L = C["loads"][str(c)]
                batch = max(1, round(L["batch"] or 1))
                procs = min(C["instances"], c)
                ck = (procs, C["threads"], batch, tuple(sorted(env.items())))
                if ck not in self.comparators:
                    label = f"engine alone, {procs} x {C['threads']} thread(s), batch {batch}"
                    log(label)
                    runs = [self.measure(label, lambda: self.engine_concurrent(
                        cnn, batch, C["threads"], procs, seconds, env))
                        for _ in range(max(1, self.reps - 1))]
                    best = max(runs, key=lambda rb: rb[0]["img_s"])
                    self.comparators[ck] = dict(best[0], bg=best[1], batch=batch, procs=procs)
                C["engine"][str(c)] = self.comparators[ck]

    def section_peers(self):
        P = self.R["peers"] = []
        body = os.path.join(self.bodies, "infer_b1.json")
        for key, workers, threads in (("tuned", self.args.peer_workers, self.args.peer_threads),
                                      ("plain", 1, self.cpus)):
            port = free_port()
            cmd = [PY, "bench/peer_fastapi.py", rel(os.path.join(self.models, "cnn_bn")), "--port",
                   str(port), "--workers", str(workers), "--threads", str(threads)]
            self.note(shell_line(cmd))
            log(f"starting the {key} peer: {shell_line(cmd)}")
            p = Proc(self, f"peer ({key})", cmd, {}, os.path.join(self.logs, f"peer-{key}.log"))
            url = f"http://127.0.0.1:{port}"
            D = {"name": key, "workers": workers, "threads": threads, "loads": {}}
            P.append(D)
            try:
                p.wait_ready(url)
                time.sleep(1)
                D["rss_idle_kb"] = rss_kb(p.pid)
                D["cpu_idle"], D["bg_idle"] = self.idle_window(p)
                D["check"] = self.check(url)
                for c in CONNECTIONS:
                    D["loads"][str(c)] = self.load(f"{key} peer, batch-1 JSON", p, url, INFER, c,
                                                   body)
                D["rss_load_kb"] = rss_kb(p.pid)
            finally:
                p.stop()

    def section_decode(self):
        djson = os.path.join(self.work, "decode.json")
        cmd = [PY, "bench/decode.py", "--build", rel(self.build), "--out",
               rel(os.path.join(self.work, "photos")), "--json", rel(djson)]
        log("photo decoding: bench/decode.py")
        out, bg = self.measure("bench/decode.py", lambda: self.run(cmd))
        with open(djson) as f:
            self.R["decode"] = json.load(f)
        self.R["decode"]["bg"] = bg

    def section_health(self):
        H = self.R["health"] = {"loads": [], "interval_ms": HEALTH_INTERVAL * 1e3}
        photo = os.path.join(self.work, "photos", "photo_12MP.jpg")
        if not os.path.exists(photo):  # the decode section makes it
            self.run([PY, "-c", "import sys; sys.path.insert(0, 'bench'); import decode; "
                      f"decode.photo(*decode.SIZES['12MP'], 1).save('{rel(photo)}', 'JPEG', "
                      "quality=90)"])
        p, url = self.start_convserve("health", self.models, [], {})
        host, port = url.split("//")[1].split(":")
        try:
            poller = HealthPoller(host, int(port))
            poller.start()
            time.sleep(min(self.dur, 3))
            poller.done.set()
            poller.join()
            H["idle"] = poller.stats()
            for short, label, f, conns in HEALTH_LOADS:
                path = os.path.join(self.work, f)
                with open(path, "rb") as fh:
                    status, answer = http_request(url + "/predictions/digits", data=fh.read(),
                                                  headers={"Content-Type": "image/jpeg"},
                                                  method="PUT")
                answer = answer.decode(errors="replace")
                D = {"short": short, "label": label, "file": rel(path),
                     "bytes": os.path.getsize(path),
                     "conns": conns, "status": status,
                     "answer": (answer[:157] + "...") if len(answer) > 160 else answer}

                def once():
                    poll = HealthPoller(host, int(port))
                    poll.start()
                    try:
                        r = self.wrk(url + "/predictions/digits", conns, path, method="PUT",
                                     ctype="image/jpeg")
                    finally:
                        poll.done.set()
                        poll.join()
                    r["probe"] = poll.stats()
                    return r
                log(f"health probes while {conns} clients upload {label}")
                r, bg = self.measure(f"health under {label}", once, pids=[p.pid])
                D.update(r, bg=bg)
                H["loads"].append(D)
                if not p.alive():
                    raise BenchError(f"convserve died under image load: {p.tail()}")
            H["rss_after_kb"] = rss_kb(p.pid)
            self.note(f"GET {url}/v2/health/live every {HEALTH_INTERVAL * 1e3:.0f} ms on a new "
                      "connection (Python http.client, in bench/run.py) during each load above")
        finally:
            p.stop()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    os.chdir(ROOT)  # every command and path below is relative to the project's root
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short loads, one engine run each (~5 min)")
    p.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    p.add_argument("--configs", help="server configuration names separated by ';' (names hold "
                   "commas; default: all)")
    p.add_argument("--build", default=env("BENCH_BUILD_DIR", "build"))
    p.add_argument("--seconds", type=int, default=None, help="each HTTP load (10; --quick 2)")
    p.add_argument("--engine-seconds", type=float, default=float(env("BENCH_ENGINE_SECONDS", "1")))
    p.add_argument("--repeats", type=int, default=None,
                   help="engine figures: best of (3; --quick 1)")
    p.add_argument("--retries", type=int, default=None,
                   help="reruns of disturbed measurements in all (8; --quick 2)")
    p.add_argument("--peer-workers", type=int, default=int(env("BENCH_PEER_WORKERS", "1")))
    p.add_argument("--peer-threads", type=int, default=int(env("BENCH_PEER_THREADS", "1")))
    p.add_argument("--out", default=env("BENCH_OUT"),
                   help="the report (bench/results.md; partial: BUILD/bench/results-partial.md)")
    p.add_argument("--charts", default=None,
                   help="chart folder (bench/charts; partial: BUILD/bench/charts)")
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = int(env("BENCH_SECONDS", "2" if args.quick else "10"))
    if args.retries is None:
        args.retries = int(env("BENCH_RETRIES", "2" if args.quick else "8"))
    if args.repeats is None:
        args.repeats = int(env("BENCH_REPEATS", "1" if args.quick else "3"))
    only = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    partial = len(only) < len(SECTIONS) or bool(args.configs)
    b = Bench(args)
    out = args.out or (os.path.join(b.work, "results-partial.md") if partial
                       else os.path.join(HERE, "results.md"))
    charts = args.charts or (os.path.join(b.work, "charts") if partial
                             else os.path.join(HERE, "charts"))

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C stops the run even when it was started with SIGINT ignored (e.g. `cmd &` in a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    t_start = time.monotonic()
    section_s = {}
    failed = b.R["failed"] = {}
    try:
        b.setup()
        b.machine()
        for s in SECTIONS:
            if s in only:
                t0 = time.monotonic()
                try:
                    getattr(b, f"section_{s}")()
                except BenchError as e:  # the other sections still run; the report says so
                    log(f"error in {s}: {e}")
                    failed[s] = str(e)
                    b.R.pop(s, None)
                section_s[s] = time.monotonic() - t0
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted: stopping every process this run started")
        return 130
    except SystemExit:
        log("terminated: stopping every process this run started")
        raise
    finally:
        for proc in b.procs:
            proc.stop()
    R = b.R
    meta = R["meta"]
    meta["load_end"] = open("/proc/loadavg").read().split()[:3]
    meta["busy_end"] = busy_processes()
    meta["wall_s"] = time.monotonic() - t_start
    meta["section_s"] = section_s
    meta["retries_used"] = args.retries - b.retries
    meta["only"] = only if partial else None
    R["bg_max"] = b.bg_max
    with open(os.path.join(b.work, "results.json"), "w") as f:
        json.dump(R, f, indent=1)
    meta["argv"] = argv
    meta["check_tolerance"] = CHECK_TOLERANCE
    text = report.render(R)
    print(text)
    with open(out, "w") as f:
        f.write(text)
    status = 1 if failed else 0
    log(f"report written to {rel(out)}; figures in {rel(os.path.join(b.work, 'results.json'))}; "
        f"logs in {rel(b.logs)}")
    try:
        import charts as charts_mod
        for path in charts_mod.draw(R, charts):
            log(f"chart {rel(path)}")
    except ImportError as e:
        log(f"no charts ({e}): install python3-matplotlib")
    return status


if __name__ == "__main__":
    sys.exit(main())
