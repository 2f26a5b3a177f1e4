#!/usr/bin/env python3
"""Client side of scripts/bench that wrk and curl cannot do (standard library only).

  bench_clients.py sse --port P --clients N --events E --interval-ms M
                       [--batch B] [--sample NAME=PID ...]
      N concurrent HTTP/1.1 clients, one connection each, on
      GET /stream/sse?n=E&interval_ms=M, opened in batches of B (the next
      batch starts once the previous one has its response headers, so the
      listen backlog is never overrun). Each connection counts the
      occurrences of "data: " it receives (no chunked decoding). While the
      streams are open, /proc/PID/status of every --sample process is read:
      before the first client, once all are connected, halfway through the
      streams, 1 s after the last one ended, and every 0.5 s for the peak.

  bench_clients.py crash --port P [--rounds R] [--backoff-ms B]
      Crash timings against a gateway with the chaos module enabled. Per
      round: GET /chaos/slow?ms=10000 in flight, 300 ms later GET
      /chaos/crash; (a) time from sending the crash to the in-flight
      request's completion, and its status; (b) time from sending the crash
      until GET /chaos/slow?ms=0 (polled every 5 ms) answers 200, minus B.

Output: one "key value" line per figure on stdout (read by scripts/bench);
progress and problems on stderr. Exit status 0 unless the run itself could
not be done (bad arguments, nothing could connect).
"""

import argparse
import asyncio
import collections
import os
import resource
import socket
import statistics
import sys
import threading
import time

HOST = "127.0.0.1"


def log(msg):
    print(f"bench_clients: {msg}", file=sys.stderr, flush=True)


def emit(key, value):
    print(f"{key} {value}", flush=True)


# ----------------------------------------------------------------- /proc --

def proc_status(pid):
    """(VmRSS KiB, Threads) of PID, or (None, None) if it is gone."""
    rss = threads = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, threads


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Sampler:
    def __init__(self, specs):
        self.procs = []                       # [(name, pid)]
        for spec in specs:
            name, _, pid = spec.partition("=")
            self.procs.append((name, int(pid)))
        self.peak_rss = collections.defaultdict(int)
        self.peak_threads = collections.defaultdict(int)

    def sample(self, label):
        for name, pid in self.procs:
            rss, threads = proc_status(pid)
            fds = fd_count(pid)
            emit(f"{name}_{label}_rss_kb", rss if rss is not None else "-")
            emit(f"{name}_{label}_threads", threads if threads is not None else "-")
            emit(f"{name}_{label}_fds", fds if fds is not None else "-")
            self.track(name, rss, threads)

    def track(self, name, rss, threads):
        if rss is not None:
            self.peak_rss[name] = max(self.peak_rss[name], rss)
        if threads is not None:
            self.peak_threads[name] = max(self.peak_threads[name], threads)

    def poll(self):
        for name, pid in self.procs:
            self.track(name, *proc_status(pid))

    def emit_peaks(self):
        for name, _ in self.procs:
            emit(f"{name}_peak_rss_kb", self.peak_rss.get(name) or "-")
            emit(f"{name}_peak_threads", self.peak_threads.get(name) or "-")


# ------------------------------------------------------------------- sse --

PATTERN = b"data: "
TERMINATOR = b"\r\n0\r\n\r\n"


class Client:
    __slots__ = ("status", "events", "error", "headers_done", "ended", "body")

    def __init__(self):
        self.status = None
        self.events = 0
        self.error = None
        self.headers_done = asyncio.Event()
        self.ended = False
        self.body = None


async def sse_client(c, port, request, deadline_s, read_timeout_s):
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port), timeout=read_timeout_s)
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=read_timeout_s)
        status_line = head.split(b"\r\n", 1)[0].split()
        c.status = int(status_line[1]) if len(status_line) > 1 else -1
        c.headers_done.set()
        if c.status != 200:
            # What the gateway said: X-Modgate-Error groups alike failures,
            # the start of the body is kept for one example.
            cause = ""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"x-modgate-error":
                    cause = " (" + value.strip().decode(errors="replace") + ")"
            c.error = f"status {c.status}{cause}"
            try:
                c.body = await asyncio.wait_for(reader.read(300), timeout=2)
            except (asyncio.TimeoutError, OSError):
                pass
            return
        tail = b""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while True:
            left = end - loop.time()
            if left <= 0:
                c.error = "deadline"
                return
            data = await asyncio.wait_for(reader.read(65536), timeout=min(left, read_timeout_s))
            if not data:
                c.ended = True            # EOF (we asked for Connection: close)
                return
            buf = tail + data
            c.events += buf.count(PATTERN)
            # keep less than a whole pattern, so no occurrence is counted twice
            tail = buf[-(len(PATTERN) - 1):]
            if buf.endswith(TERMINATOR):
                c.ended = True            # last chunk seen; no need to wait for EOF
                return
    except asyncio.TimeoutError:
        c.error = "timeout" if c.headers_done.is_set() else "timeout before headers"
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
        c.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    finally:
        c.headers_done.set()
        if writer is not None:
            writer.close()


async def sse_main(a):
    sampler = Sampler(a.sample)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    emit("fd_limit", soft)
    if soft != resource.RLIM_INFINITY and soft < a.clients + 64:
        log(f"warning: descriptor limit {soft} is below {a.clients} clients")

    path = f"/stream/sse?n={a.events}&interval_ms={a.interval_ms}"
    request = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{a.port}\r\n"
               f"Accept: text/event-stream\r\nConnection: close\r\n\r\n").encode()
    stream_s = max(a.events - 1, 0) * a.interval_ms / 1000.0
    deadline_s = stream_s + 60.0

    sampler.sample("before")
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    clients, tasks = [], []
    stop_polling = asyncio.Event()
    peak_open = [0, 0.0]                      # most streams open at once, when

    def open_streams():
        return sum(1 for c, t in zip(clients, tasks) if c.status == 200 and not t.done())

    async def poller():
        while not stop_polling.is_set():
            sampler.poll()
            n = open_streams()
            if n > peak_open[0]:
                peak_open[:] = [n, loop.time() - t_start]
            try:
                await asyncio.wait_for(stop_polling.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    poll_task = asyncio.create_task(poller())

    # Ramp up: one batch at a time, each waiting for its response headers.
    batch_times = []                          # (seconds, clients started after it)
    for first in range(0, a.clients, a.batch):
        batch = []
        for _ in range(first, min(first + a.batch, a.clients)):
            c = Client()
            clients.append(c)
            batch.append(c)
            tasks.append(asyncio.create_task(
                sse_client(c, a.port, request, deadline_s, a.read_timeout)))
        t_batch = loop.time()
        await asyncio.gather(*(c.headers_done.wait() for c in batch))
        batch_times.append((loop.time() - t_batch, len(clients)))
        if a.verbose:
            log(f"batch {first // a.batch + 1}: {len(batch)} clients in "
                f"{loop.time() - t_batch:.2f} s, {len(clients)} started")
    t_connected = loop.time()
    ramp_s = t_connected - t_start
    emit("ramp_s", f"{ramp_s:.2f}")
    emit("batch_size", a.batch)
    emit("slowest_batches", " ".join(f"{t:.2f}s@{n}" for t, n in sorted(batch_times)[::-1][:3]))
    open_now = open_streams()
    emit("open_after_ramp", open_now)
    log(f"{len(clients)} clients started in {ramp_s:.1f} s, {open_now} streams open")
    sampler.sample("connected")

    # Halfway through the streams: the first ones started at t_start, the
    # last ones at t_connected; take the middle of their common open span.
    half_at = t_start + stream_s / 2 + ramp_s / 2
    if half_at > loop.time():
        await asyncio.sleep(half_at - loop.time())
    emit("open_at_half", open_streams())
    sampler.sample("half")

    await asyncio.gather(*tasks)
    stop_polling.set()
    await poll_task
    emit("elapsed_s", f"{loop.time() - t_start:.2f}")
    await asyncio.sleep(1)
    sampler.sample("after")
    emit("peak_open", peak_open[0])
    emit("peak_open_at_s", f"{peak_open[1]:.1f}")

    complete = sum(1 for c in clients if c.status == 200 and c.events == a.events)
    emit("started", len(clients))
    emit("got_headers", sum(1 for c in clients if c.status is not None))
    emit("status_200", sum(1 for c in clients if c.status == 200))
    emit("complete", complete)
    emit("events_total", sum(c.events for c in clients))
    short = [c.events for c in clients if c.status == 200 and c.events != a.events]
    if short:
        emit("incomplete_event_counts",
             ",".join(f"{k}x{v}" for k, v in sorted(collections.Counter(short).items())))
    errors = collections.Counter(c.error for c in clients if c.error)
    if errors:
        emit("errors", "; ".join(f"{n}x {e}" for e, n in errors.most_common(8)))
    example = next((c.body for c in clients if c.body), None)
    if example:
        emit("error_body_example", example.decode(errors="replace").replace("\r", "")
             .replace("\n", " ")[:200])
    sampler.emit_peaks()
    return 0 if any(c.status is not None for c in clients) else 1


# ----------------------------------------------------------------- crash --

def http_get(port, path, timeout):
    """One request on a fresh connection: (status, completion time)."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        t = time.monotonic()
        line = data.split(b"\r\n", 1)[0].split()
        return (int(line[1]) if len(line) > 1 else -1), t
    finally:
        s.close()


def crash_round(port, backoff_ms, in_flight_ms=10000):
    result = {}

    def in_flight():
        try:
            result["status"], result["t"] = http_get(
                port, f"/chaos/slow?ms={in_flight_ms}", in_flight_ms / 1000 + 10)
        except OSError as e:
            result["status"], result["t"] = f"{type(e).__name__}", time.monotonic()

    th = threading.Thread(target=in_flight)
    th.start()
    time.sleep(0.3)
    # The crash request: its send is the moment of the crash.
    cs = socket.create_connection((HOST, port), timeout=10)
    cs.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.monotonic()
    cs.sendall(f"GET /chaos/crash HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    # Its answer (a 502 once the gateway noticed the death) comes first:
    # a poll sent before it could still reach the dying incarnation.
    try:
        crash_reply = cs.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
    except OSError as e:
        crash_reply = type(e).__name__
    cs.close()
    # (b) poll every 5 ms until the module serves again
    deadline = t0 + 30
    serving = None
    polls = 0
    while time.monotonic() < deadline:
        tick = time.monotonic()
        polls += 1
        try:
            status, t = http_get(port, "/chaos/slow?ms=0", 5)
        except OSError:
            status, t = None, time.monotonic()
        if status == 200:
            serving = t - t0
            break
        time.sleep(max(0.0, tick + 0.005 - time.monotonic()))
    th.join()
    return {
        "inflight_ms": (result["t"] - t0) * 1000,
        "inflight_status": result["status"],
        "serving_ms": None if serving is None else serving * 1000 - backoff_ms,
        "polls": polls,
        "crash_reply": crash_reply,
    }


def crash_main(a):
    rows = []
    for r in range(a.rounds):
        row = crash_round(a.port, a.backoff_ms)
        rows.append(row)
        serving = "-" if row["serving_ms"] is None else f"{row['serving_ms']:.1f}"
        log(f"crash round {r + 1}: in-flight {row['inflight_status']} after "
            f"{row['inflight_ms']:.1f} ms, serving again after {serving} ms "
            f"(minus backoff, {row['polls']} polls), crash request: '{row['crash_reply']}'")
        time.sleep(0.2)

    def stats(key, vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            emit(key, "- - -")
        else:
            emit(key, f"{min(vals):.1f} {statistics.median(vals):.1f} {max(vals):.1f}")

    emit("rounds", len(rows))
    stats("inflight_ms", [r["inflight_ms"] for r in rows])
    emit("inflight_statuses", ",".join(str(r["inflight_status"]) for r in rows))
    emit("inflight_ms_each", ",".join(f"{r['inflight_ms']:.1f}" for r in rows))
    stats("serving_ms", [r["serving_ms"] for r in rows])
    emit("serving_ms_each", ",".join("-" if r["serving_ms"] is None else f"{r['serving_ms']:.1f}"
                                     for r in rows))
    emit("serving_failed", sum(1 for r in rows if r["serving_ms"] is None))
    emit("crash_replies", ",".join(sorted(set(r["crash_reply"] for r in rows))))
    return 0


# ------------------------------------------------------------------ main --

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sse")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--clients", type=int, required=True)
    s.add_argument("--events", type=int, default=20)
    s.add_argument("--interval-ms", type=int, default=1000)
    s.add_argument("--batch", type=int, default=250)
    s.add_argument("--read-timeout", type=float, default=30.0)
    s.add_argument("--sample", action="append", default=[], metavar="NAME=PID")
    s.add_argument("--verbose", action="store_true", help="log every batch on stderr")
    c = sub.add_parser("crash")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--rounds", type=int, default=5)
    c.add_argument("--backoff-ms", type=float, default=100)
    a = p.parse_args()
    if a.cmd == "sse":
        return asyncio.run(sse_main(a))
    return crash_main(a)


if __name__ == "__main__":
    sys.exit(main())
