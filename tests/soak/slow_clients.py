#!/usr/bin/env python3
"""slow_clients.py - the hostile clients of the soak test, in one cheap process (no threads: one
selector over non-blocking sockets, so that hundreds of connections cost almost no CPU on a small
machine). Started and stopped (SIGTERM) by tests/soak/soak.py; prints its statistics as one JSON
line on stdout when it stops, and a progress line on stderr every --progress seconds.

Slow connections (slowloris): --conns of them, open at all times; none ever finishes its request.
Four kinds, in turn:
  stall-headers  request line and a few header bytes, one byte per --interval, then silence;
  stall-body     complete headers (Content-Length), a few body bytes one at a time, then silence;
  trickle-headers  header bytes one per --interval for as long as the connection is open;
  trickle-body     complete headers, then body bytes one per --interval, for as long as it is open.
The stalling kinds go idle, so the server's connection timeout must close them; the trickling
kinds are never idle, so only a limit on the time a request may take (which --connection-timeout
promises: "seconds an idle or slow connection may stay open") closes them. Each connection the
server closes is replaced at once (recycled), and its age and idle time are recorded.

Disconnecting clients: --disconnect-rate per second, each sends part of a request (or all of it)
and closes without reading the answer, half of them with a reset (SO_LINGER 0): half a JSON body,
half a PNG body, half a header block, or a whole request closed before its answer (the server has
queued it and answers a closed connection).

Usage (normally through soak.py):
    slow_clients.py --port P --conns 300 --body examples/infer_3.json --png examples/3.png
"""
import argparse
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time

SLOW_KINDS = ("stall-headers", "stall-body", "trickle-headers", "trickle-body")
STOP = False


def on_term(signum, frame):
    global STOP
    STOP = True


class Slow:
    __slots__ = ("sock", "kind", "data", "pos", "burst", "opened", "last_send", "next_send",
                 "connected", "got")

    def __init__(self, sock, kind, data, burst, now):
        self.sock, self.kind, self.data, self.burst = sock, kind, data, burst
        self.pos = 0
        self.opened = self.last_send = self.next_send = now
        self.connected = False
        self.got = b""


class Gone:
    """A disconnecting client: sends `data` once connected, closes `delay` s later."""
    __slots__ = ("sock", "kind", "data", "rst", "delay", "close_at", "connected")

    def __init__(self, sock, kind, data, rst, delay):
        self.sock, self.kind, self.data, self.rst, self.delay = sock, kind, data, rst, delay
        self.close_at = None
        self.connected = False


def summary(values):
    if not values:
        return {"n": 0}
    v = sorted(values)
    return {"n": len(v), "min": round(v[0], 2), "p50": round(v[len(v) // 2], 2),
            "max": round(v[-1], 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=300)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between trickled bytes")
    ap.add_argument("--disconnect-rate", type=float, default=20.0)
    ap.add_argument("--body", required=True, help="a good KServe v2 JSON body")
    ap.add_argument("--png", required=True, help="a good PNG")
    ap.add_argument("--model", default="digits")
    ap.add_argument("--progress", type=float, default=15.0)
    ap.add_argument("--max-seconds", type=float, default=3600.0, help="stop by itself after this")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    with open(args.body, "rb") as f:
        body = f.read()
    with open(args.png, "rb") as f:
        png = f.read()
    addr = ("127.0.0.1", args.port)
    infer = "/v2/models/%s/infer" % args.model
    host = "Host: 127.0.0.1:%d\r\n" % args.port

    def head(method, path, ctype, length):
        return ("%s %s HTTP/1.1\r\n%sContent-Type: %s\r\nContent-Length: %d\r\n\r\n" %
                (method, path, host, ctype, length)).encode()

    json_head = head("POST", infer, "application/json", len(body))
    png_head = head("PUT", "/predictions/%s" % args.model, "image/png", len(png))
    gone_kinds = [
        ("json-half-body", json_head + body[:len(body) // 2]),
        ("png-half-body", png_head + png[:len(png) // 2]),
        ("half-headers", json_head[:len(json_head) // 2]),
        ("whole-request-unread", json_head + body),
    ]
    # The slow scripts: what a slow connection sends, one byte at a time after `first` bytes.
    big = 1000000  # announced body length: never reached
    slow_scripts = {
        "stall-headers": (b"", ("POST %s HTTP/1.1\r\n%sContent-Type: application/json\r\n"
                                "X-Slow: " % (infer, host)).encode() + b"z" * 60000),
        "stall-body": (head("POST", infer, "application/json", big), b"[" * 60000),
        "trickle-headers": (b"", ("POST %s HTTP/1.1\r\n%sContent-Type: application/json\r\n"
                                  "X-Slow: " % (infer, host)).encode() + b"z" * 60000),
        "trickle-body": (head("POST", infer, "application/json", big), b"[" * 60000),
    }

    sel = selectors.DefaultSelector()
    rnd = random.Random(int(os.environ.get("SOAK_SEED", "1")))
    t_start = time.monotonic()
    st = {
        "slow_opened": 0, "slow_closed_by_server": {k: 0 for k in SLOW_KINDS},
        "slow_connect_errors": 0, "slow_answers": {},
        "stall_idle_at_close": [], "trickle_age_at_close": [], "early_closes": 0,
        "disconnects": {k: 0 for k, _ in gone_kinds}, "disconnect_errors": 0,
    }
    slows = {}
    gones = {}
    # How many connections of each kind to keep open: the kinds in turn.
    target = {k: args.conns // len(SLOW_KINDS) + (i < args.conns % len(SLOW_KINDS))
              for i, k in enumerate(SLOW_KINDS)}

    def open_slow(kind):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(addr)
        except BlockingIOError:
            pass
        except OSError:
            st["slow_connect_errors"] += 1
            s.close()
            return
        burst = rnd.randint(2, 6) if kind.startswith("stall") else None
        c = Slow(s, kind, slow_scripts[kind], burst, time.monotonic())
        slows[s.fileno()] = c
        sel.register(s, selectors.EVENT_WRITE, c)
        st["slow_opened"] += 1

    def close_slow(c, by_server, now):
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        slows.pop(c.sock.fileno(), None)
        c.sock.close()
        if not by_server:
            return
        st["slow_closed_by_server"][c.kind] += 1
        if c.got:
            line = c.got.split(b"\r\n", 1)[0].decode("latin-1")[:60]
            st["slow_answers"][line] = st["slow_answers"].get(line, 0) + 1
        if now - c.opened < 1.0 and not c.got:
            st["early_closes"] += 1
        if c.kind.startswith("stall"):
            st["stall_idle_at_close"].append(now - c.last_send)
        else:
            st["trickle_age_at_close"].append(now - c.opened)

    def send_slow(c, now):
        first, rest = c.data
        try:
            if c.pos == 0 and first:
                c.sock.sendall(first)  # small: fits the socket buffer
            c.sock.send(rest[c.pos:c.pos + 1])
        except BlockingIOError:
            return True
        except OSError:
            return False
        c.pos += 1
        c.last_send = now
        if c.burst is not None and c.pos >= c.burst:
            c.next_send = float("inf")  # stall from now on
        else:
            c.next_send = now + args.interval * rnd.uniform(0.7, 1.3)
        return True

    def open_gone():
        kind, data = gone_kinds[rnd.randrange(len(gone_kinds))]
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rst = rnd.random() < 0.5
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            s.connect(addr)
        except BlockingIOError:
            pass
        except OSError:
            st["disconnect_errors"] += 1
            s.close()
            return
        # The unread whole request closes fast, before the answer; the others linger a little.
        delay = rnd.uniform(0, 0.005) if kind == "whole-request-unread" else rnd.uniform(0, 0.1)
        g = Gone(s, kind, data, rst, delay)
        gones[s.fileno()] = g
        sel.register(s, selectors.EVENT_WRITE, g)

    def close_gone(g, counted):
        try:
            sel.unregister(g.sock)
        except (KeyError, ValueError):
            pass
        gones.pop(g.sock.fileno(), None)
        g.sock.close()
        if counted:
            st["disconnects"][g.kind] += 1
        else:
            st["disconnect_errors"] += 1

    def refill():
        have = {k: 0 for k in SLOW_KINDS}
        for c in slows.values():
            have[c.kind] += 1
        for k in SLOW_KINDS:
            for _ in range(target[k] - have[k]):
                open_slow(k)

    refill()
    next_gone = time.monotonic()
    next_progress = time.monotonic() + args.progress
    ppid = os.getppid()
    while not STOP:
        now = time.monotonic()
        if now - t_start > args.max_seconds or os.getppid() != ppid:
            break
        for key, mask in sel.select(timeout=0.02):
            obj = key.data
            now = time.monotonic()
            if isinstance(obj, Slow):
                if mask & selectors.EVENT_WRITE and not obj.connected:
                    err = obj.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        st["slow_connect_errors"] += 1
                        close_slow(obj, False, now)
                        continue
                    obj.connected = True
                    sel.modify(obj.sock, selectors.EVENT_READ, obj)
                    if not send_slow(obj, now):
                        close_slow(obj, True, now)
                    continue
                try:
                    data = obj.sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    obj.got += data[:200]
                else:
                    close_slow(obj, True, now)
            else:
                if mask & selectors.EVENT_WRITE and not obj.connected:
                    err = obj.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        close_gone(obj, False)
                        continue
                    obj.connected = True
                    try:
                        obj.sock.sendall(obj.data)
                    except OSError:
                        pass  # the server may already have answered and closed
                    obj.close_at = now + obj.delay
                    sel.modify(obj.sock, selectors.EVENT_READ, obj)
                else:
                    try:
                        data = obj.sock.recv(65536)  # an early answer: drained, not read
                    except OSError:
                        data = b""
                    if not data:
                        close_gone(obj, True)
        now = time.monotonic()
        for c in list(slows.values()):
            if c.connected and c.next_send <= now and not send_slow(c, now):
                close_slow(c, True, now)
        for g in list(gones.values()):
            if g.close_at is not None and g.close_at <= now:
                close_gone(g, True)
        if len(slows) < args.conns:
            refill()
        while next_gone <= now and args.disconnect_rate > 0:
            open_gone()
            next_gone += 1.0 / args.disconnect_rate
        if now >= next_progress:
            next_progress += args.progress
            print("slow clients at %4.0fs: %d open, %d recycled, %d disconnects" % (
                now - t_start, len(slows), sum(st["slow_closed_by_server"].values()),
                sum(st["disconnects"].values())), file=sys.stderr, flush=True)

    now = time.monotonic()
    open_ages = {k: [now - c.opened for c in slows.values() if c.kind == k] for k in SLOW_KINDS}
    stall_idle_open = [now - c.last_send for c in slows.values() if c.kind.startswith("stall")]
    for c in list(slows.values()):
        close_slow(c, False, now)
    for g in list(gones.values()):
        close_gone(g, True)
    out = dict(st)
    out["seconds"] = round(now - t_start, 1)
    out["stall_idle_at_close"] = summary(st["stall_idle_at_close"])
    out["trickle_age_at_close"] = summary(st["trickle_age_at_close"])
    out["open_at_end"] = {k: summary(v) for k, v in open_ages.items()}
    out["stall_idle_open_at_end"] = summary(stall_idle_open)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
