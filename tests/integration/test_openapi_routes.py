#!/usr/bin/env python3
"""test_openapi_routes.py - openapi.yaml against the real server and server/api.c.

  test_openapi_routes.py --binary build/convserve --models config/models --spec openapi.yaml

Starts the server (--port 0, with an API key, a CORS origin and --model-control explicit so that
every documented behaviour is reachable; {model} is digits and {version} 1), then checks:

  1. every path + method of openapi.yaml, sent a valid request (model=digits), is routed (not the
     server's "no route for ..." 404), answers a status code documented for that operation, and
     succeeds (2xx); JSON answers parse;
  2. without the API key, operations marked `security: []` do not answer 401 and all others answer
     a documented 401 with WWW-Authenticate: Bearer;
  3. an undocumented method (DELETE) on every path answers 405 with an Allow header naming exactly
     the documented methods (besides OPTIONS), so no method goes undocumented;
  4. every route string that api_route() (and the route_* helpers it calls) in server/api.c
     matches appears in openapi.yaml, so an undocumented route fails here;
  5. every metric family the server's /metrics declares (`# TYPE name ...`) is named in
     openapi.yaml, so an undocumented metric fails here.

Paths are visited in sorted order, so /v2/repository/models/{model}/unload comes after every
other route of the model.

Python standard library only. openapi.yaml is read with a line reader that relies on its layout:
`paths:` at column 0, path keys at 2 spaces, methods at 4, `responses:` / `security: []` at 6,
response codes as quoted keys at 8. Prints one line per check and `N passed, M failed`; exits 1
on any failure.
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
API_KEY = "openapi-test-key"
ORIGIN = "http://openapi-test.example"


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print("PASS %s" % what)
        else:
            self.failed += 1
            print("FAIL %s%s" % (what, (": " + detail) if detail else ""))
        sys.stdout.flush()
        return ok


# ---- openapi.yaml --------------------------------------------------------------------------

def read_paths(spec_path):
    """Returns {path: {method: {"codes": set, "open": bool}}} from the `paths:` section."""
    paths = {}
    in_paths = False
    path = op = None
    in_responses = False
    with open(spec_path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            indent = len(line) - len(line.lstrip(" "))
            if indent == 0:
                in_paths = line.startswith("paths:")
                path = op = None
                in_responses = False
                continue
            if not in_paths:
                continue
            m = re.match(r"^  (/\S*):\s*$", line)
            if m:
                path, op, in_responses = m.group(1), None, False
                paths[path] = {}
                continue
            m = re.match(r"^    ([a-z]+):\s*$", line)
            if m and path is not None:
                in_responses = False
                op = m.group(1) if m.group(1) in METHODS else None
                if op:
                    paths[path][op] = {"codes": set(), "open": False}
                continue
            if op is None:
                continue
            if indent == 6:
                in_responses = bool(re.match(r"^      responses:\s*$", line))
                if re.match(r"^      security:\s*\[\]\s*$", line):
                    paths[path][op]["open"] = True
                continue
            m = re.match(r"""^        ['"]?(\d{3})['"]?:""", line)
            if m and in_responses:
                paths[path][op]["codes"].add(int(m.group(1)))
    return paths


# ---- the server ----------------------------------------------------------------------------

class Server:
    def __init__(self, binary, models):
        self.log = []
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--models", models, "--api-key", API_KEY,
             "--cors-origin", ORIGIN, "--log-level", "info", "--model-control", "explicit"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = None
        found = threading.Event()

        def drain():  # keeps the pipe from filling with access-log lines
            for line in self.proc.stderr:
                self.log.append(line.rstrip("\n"))
                m = re.search(r"listening on http://\S+:(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    found.set()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        found.wait(120)
        if self.port is None:
            self.stop()
            raise RuntimeError("the server did not start:\n" + "\n".join(self.log[-20:]))

    def request(self, method, path, body=None, headers=None):
        """Returns (status, headers dict with lower-case names, body bytes)."""
        rq = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), data=body,
                                    method=method.upper(), headers=headers or {})
        try:
            with urllib.request.urlopen(rq, timeout=60) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def tiny_png(width, height):
    """A gray PNG, for /predictions."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + bytes((x * 255 // max(width - 1, 1)) for x in range(width))
                    for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def build_request(server, path, method, model, auth):
    """The concrete URL, body and headers of a valid request for a documented operation."""
    url = path.replace("{model}", model).replace("{version}", "1")
    headers = {"Authorization": "Bearer " + API_KEY} if auth else {}
    body = None
    if method == "options":
        headers.update({"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
        return url, body, headers
    st, _, meta = server.request("get", "/v2/models/" + model,
                                 headers={"Authorization": "Bearer " + API_KEY})
    shape = [1, 1, 8, 8]
    if st == 200:
        dims = json.loads(meta)["inputs"][0]["shape"]
        shape = [1 if i == 0 else (8 if d < 0 else d) for i, d in enumerate(dims)]
    if url.endswith("/shapes"):
        url += "?input=" + ",".join(str(d) for d in shape)
    elif url.endswith("/infer"):
        count = 1
        for d in shape:
            count *= d
        body = json.dumps({"id": "openapi", "inputs": [{"name": "input", "shape": shape,
                                                        "datatype": "FP32",
                                                        "data": [0.0] * count}]}).encode()
        headers["Content-Type"] = "application/json"
    elif url.startswith("/predictions/"):
        body = tiny_png(8, 8)
        headers["Content-Type"] = "image/png"
    elif method in ("post", "put", "patch"):
        body = b""
    return url, body, headers


# ---- server/api.c --------------------------------------------------------------------------

def route_strings(api_c):
    """(literal, how it is matched) for every "/..." string literal in api_route() and the
    route_* functions it calls."""
    src = open(api_c, encoding="utf-8").read()
    start = src.find("srv_status api_route(")
    if start < 0:
        raise RuntimeError("api_route() not found in " + api_c)
    body = src[start:src.find("\n}\n", start)]
    for m in re.finditer(r"^static srv_status route_\w+\(", src, re.M):
        body += src[m.start():src.find("\n}\n", m.start())]
    # The prefixes are declared as char arrays and used by name.
    arrays = dict(re.findall(r'(\w+)\[\]\s*=\s*"(/[^"]*)"', body))
    found = []
    for m in re.finditer(r'"(/[^"\\]*)"', body):
        lit = m.group(1)
        if any(lit == f[0] for f in found):
            continue
        before = body[max(0, m.start() - 40):m.start()]
        if lit in arrays.values():
            found.append((lit, "prefix"))
        elif re.search(r"strn?cmp\(\s*url\s*,\s*$", before):
            found.append((lit, "path"))
        elif re.search(r"strn?cmp\(\s*rest\s*,\s*$", before):
            found.append((lit, "suffix"))
        else:
            found.append((lit, "other"))
    return found


def documented(lit, how, paths):
    keys = list(paths)
    if how == "path":
        norm = lit.rstrip("/") or "/"  # "/v2/" is answered as "/v2"
        return norm in keys
    if how == "prefix":  # followed by a {parameter}, at the start or after one
        return any((k.startswith(lit) and k[len(lit):].startswith("{")) or "}" + lit + "{" in k
                   for k in keys)
    if how == "suffix":
        return any(re.search(r"\}" + re.escape(lit) + r"$", k) for k in keys)
    return any(lit in k for k in keys)


# ---- main ----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--api-c", help="server/api.c (default: next to the spec)")
    ap.add_argument("--model", default="digits")
    a = ap.parse_args()
    api_c = a.api_c or os.path.join(os.path.dirname(os.path.abspath(a.spec)), "server", "api.c")
    c = Checks()

    paths = read_paths(a.spec)
    nops = sum(len(ops) for ops in paths.values())
    c.check(len(paths) > 0 and nops > 0, "spec: read %d paths, %d operations" % (len(paths), nops))
    for path, ops in sorted(paths.items()):
        for method, op in sorted(ops.items()):
            if not op["codes"]:
                c.check(False, "spec: %s %s lists response codes" % (method.upper(), path))

    # 4. route strings of api.c
    for lit, how in route_strings(api_c):
        c.check(documented(lit, how, paths),
                "api.c route string \"%s\" (%s) is in openapi.yaml" % (lit, how),
                "undocumented route")

    server = Server(a.binary, a.models)
    try:
        for path, ops in sorted(paths.items()):
            for method, op in sorted(ops.items()):
                name = "%s %s" % (method.upper(), path)
                codes = op["codes"]
                # 1. a valid, authorized request
                url, body, headers = build_request(server, path, method, a.model, auth=True)
                st, hdrs, resp = server.request(method, url, body, headers)
                text = resp.decode("utf-8", "replace")
                routed = not (st == 404 and "no route for" in text)
                ok = routed and st in codes and 200 <= st < 300
                detail = "status %d (documented: %s): %s" % (
                    st, ",".join(str(x) for x in sorted(codes)), text[:200])
                if ok and hdrs.get("content-type", "").startswith("application/json"):
                    try:
                        json.loads(resp)
                    except ValueError as e:
                        ok, detail = False, "answer is not JSON: %s" % e
                c.check(ok, "%s -> %d, routed and documented" % (name.replace(path, url), st), detail)

                # 2. the same without the API key
                url, body, headers = build_request(server, path, method, a.model, auth=False)
                st, hdrs, resp = server.request(method, url, body, headers)
                if op["open"]:
                    c.check(st != 401, "%s without API key -> %d (open: security [])" % (name, st),
                            resp.decode("utf-8", "replace")[:200])
                else:
                    c.check(st == 401 and 401 in codes and hdrs.get("www-authenticate") == "Bearer",
                            "%s without API key -> %d, documented 401 with WWW-Authenticate"
                            % (name, st),
                            "status %d, 401 documented: %s, WWW-Authenticate: %r"
                            % (st, 401 in codes, hdrs.get("www-authenticate")))

            # 3. an undocumented method: 405, and Allow names exactly the documented methods
            url = path.replace("{model}", a.model).replace("{version}", "1")
            st, hdrs, resp = server.request("delete", url,
                                            headers={"Authorization": "Bearer " + API_KEY})
            allow = {m.strip().lower() for m in hdrs.get("allow", "").split(",") if m.strip()}
            want = {m for m in ops if m not in ("options", "head")}
            c.check(st == 405 and allow == want,
                    "DELETE %s -> %d, Allow %s matches the documented methods %s"
                    % (url, st, ",".join(sorted(allow)) or "-", ",".join(sorted(want))),
                    resp.decode("utf-8", "replace")[:200])

        # 5. the metric families of /metrics
        st, _, resp = server.request("get", "/metrics",
                                     headers={"Authorization": "Bearer " + API_KEY})
        families = re.findall(r"^# TYPE (\S+) ", resp.decode("utf-8", "replace"), re.M)
        c.check(st == 200 and len(families) > 0, "/metrics -> %d, %d metric families" % (
            st, len(families)))
        spec_text = open(a.spec, encoding="utf-8").read()
        for name in families:
            c.check(re.search(r"`%s`" % re.escape(name), spec_text) is not None,
                    "metric %s is named in openapi.yaml (as `%s`)" % (name, name),
                    "undocumented metric")
    finally:
        server.stop()

    print("%d passed, %d failed" % (c.passed, c.failed))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
