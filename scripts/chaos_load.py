#!/usr/bin/env python3
"""Load client of scripts/chaos (Python 3 standard library only).

  chaos_load.py --port P [--duration S] [--connections K] [--timeout T]
                [--crash-interval-ms M] [--sample-pid PID] [--max-events N]

K keep-alive HTTP/1.1 connections to 127.0.0.1:P for S seconds, the first
half (rounded up) looping on GET /hello/x, the others on
GET /chaos/slow?ms=20, plus a crasher that sends GET /chaos/crash (one new
connection each, Connection: close) every M ms. Every request, connecting
included when a connection has to be (re)opened, has T seconds to complete;
one that has not completed by then is counted as hung and its connection
dropped. A connection error (refused, reset, closed before or in the middle
of a response, unparsable response) is counted under its kind and the
connection is reopened.

A response counts as ok when its status is 200 and its body is the one the
module answers (hello: "hello x\\n", chaos: "slept 20\\n"); a 200 with any
other body is counted as bad_body.

Every request carries X-Request-Id: chaos-TARGET-CONN-N (crasher:
chaos-crash-N), which the gateway keeps, so a hung or failed request can be
found in access.log and gateway.log.

The first answers from hello or chaos that took 250 ms or more are listed
too (slow), with their request ids.

With --sample-pid, the descriptor count and VmRSS of that process are
sampled every 5 s (a leak shows as a trend, a pool as a step).

Output: "key value" lines on stdout (read by scripts/chaos); progress and
problems on stderr. Exit status 0 unless the run could not be done.
"""

import argparse
import asyncio
import collections
import os
import sys
import time

HOST = "127.0.0.1"
SLOW_S = 0.25          # a hello or chaos answer this late is listed as slow

EXPECTED_BODY = {
    "hello": b"hello x\n",
    "chaos": b"slept 20\n",
}
PATHS = {
    "hello": "/hello/x",
    "chaos": "/chaos/slow?ms=20",
}


def log(msg):
    print(f"chaos_load: {msg}", file=sys.stderr, flush=True)


def emit(key, value):
    print(f"{key} {value}", flush=True)


class ProtocolError(Exception):
    pass


class ClosedEarly(Exception):
    """The server closed the connection before (phase 'before_response') or
    during ('mid_response') a response."""

    def __init__(self, phase):
        super().__init__(phase)
        self.phase = phase


# ------------------------------------------------------------------ HTTP --

async def read_response(reader, method="GET"):
    """Reads one HTTP/1.1 response: (status, body, close). close is True when
    the connection cannot be reused (Connection: close, or a body delimited
    by the end of the connection)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise ClosedEarly("before_response" if not e.partial else "mid_response") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("response head over 64 KiB") from None
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    http10 = parts[0] == b"HTTP/1.0"
    length = None
    chunked = False
    conn_tokens = set()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise ProtocolError(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif name == b"transfer-encoding":
            codings = [c.strip().lower() for c in value.split(b",")]
            if codings and codings[-1] == b"chunked":
                chunked = True
        elif name == b"connection":
            conn_tokens.update(c.strip().lower() for c in value.split(b","))
    close = b"close" in conn_tokens or (http10 and b"keep-alive" not in conn_tokens)

    try:
        if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
            body = b""
        elif chunked:
            pieces = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size_field = size_line[:-2].split(b";", 1)[0].strip()
                try:
                    size = int(size_field, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass                   # trailers
                    break
                chunk = await reader.readexactly(size + 2)
                if chunk[-2:] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                pieces.append(chunk[:-2])
            body = b"".join(pieces)
        elif length is not None:
            body = await reader.readexactly(length)
        else:
            body = await reader.read()        # delimited by the end of the connection
            close = True
    except asyncio.IncompleteReadError:
        raise ClosedEarly("mid_response") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("chunk size line over 64 KiB") from None
    return status, body, close


def error_kind(exc):
    if isinstance(exc, ClosedEarly):
        return f"closed_{exc.phase}"
    if isinstance(exc, ProtocolError):
        return "protocol"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, BrokenPipeError):
        return "broken_pipe"
    if isinstance(exc, OSError):
        return f"oserror_{exc.errno}"
    return type(exc).__name__


# --------------------------------------------------------------- figures --

class Stats:
    def __init__(self):
        self.requests = 0                     # every attempt
        self.status = collections.Counter()   # responses by status
        self.ok = 0                           # 200 with the expected body
        self.bad_body = 0
        self.errors = collections.Counter()   # connection errors by kind
        self.hung = collections.Counter()     # hung requests by phase
        self.reused_errors = 0                # errors on a reused connection
        self.connects = 0
        self.latencies = []                   # seconds, completed responses


class Events:
    """The first few notable events (hung, errors, bad bodies, non-200 from
    hello), at most per_kind of each target and kind, with their time since
    the start and the request id."""

    def __init__(self, limit, t0, per_kind=8):
        self.limit = limit
        self.per_kind = per_kind
        self.t0 = t0
        self.lines = []
        self.shown = collections.Counter()
        self.dropped = collections.Counter()

    def add(self, kind, target, rid, detail=""):
        key = f"{target} {kind}"
        if len(self.lines) < self.limit and self.shown[key] < self.per_kind:
            self.shown[key] += 1
            t = time.monotonic() - self.t0
            self.lines.append(f"t={t:.3f}s {target} {kind} id={rid} {detail}".rstrip())
        else:
            self.dropped[key] += 1


# ---------------------------------------------------------------- client --

class Conn:
    def __init__(self):
        self.reader = None
        self.writer = None
        self.used = 0                         # responses read on this connection
        self.phase = "connect"                # where a request is: connect, response

    def close(self):
        if self.writer is not None:
            try:
                self.writer.transport.abort()
            except Exception:
                pass
        self.reader = self.writer = None
        self.used = 0


async def one_request(conn, st, request):
    """Connects if needed, sends, reads the response: (status, body, close).
    conn.phase says where it was if it fails or times out."""
    if conn.writer is None:
        conn.phase = "connect"
        st.connects += 1
        conn.reader, conn.writer = await asyncio.open_connection(HOST, PORT)
    conn.phase = "response"
    conn.writer.write(request)
    status, body, close = await read_response(conn.reader)
    return status, body, close


async def worker(target, idx, deadline, timeout, st, events, slow):
    path = PATHS[target]
    expected = EXPECTED_BODY[target]
    conn = Conn()
    n = 0
    failures_in_row = 0
    while time.monotonic() < deadline:
        n += 1
        rid = f"chaos-{target}-{idx}-{n}"
        request = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n"
                   f"X-Request-Id: {rid}\r\n\r\n").encode()
        st.requests += 1
        reused = conn.writer is not None and conn.used > 0
        t = time.monotonic()
        try:
            status, body, close = await asyncio.wait_for(one_request(conn, st, request), timeout)
        except asyncio.TimeoutError:
            st.hung[conn.phase] += 1
            events.add("hung", target, rid, f"phase={conn.phase} reused={int(reused)}")
            conn.close()
            continue
        except (OSError, ClosedEarly, ProtocolError) as e:
            kind = error_kind(e)
            st.errors[kind] += 1
            if reused:
                st.reused_errors += 1
            events.add("error", target, rid, f"{kind} reused={int(reused)} "
                       f"after={1000 * (time.monotonic() - t):.1f}ms")
            conn.close()
            failures_in_row += 1
            if failures_in_row > 1:           # do not spin if the port is gone
                await asyncio.sleep(min(0.01 * failures_in_row, 0.2))
            continue
        failures_in_row = 0
        took = time.monotonic() - t
        st.latencies.append(took)
        if took >= SLOW_S:
            slow.add("slow", target, rid, f"{1000 * took:.0f}ms status={status}")
        st.status[status] += 1
        conn.used += 1
        if status == 200:
            if body == expected:
                st.ok += 1
            else:
                st.bad_body += 1
                events.add("bad_body", target, rid, f"body={body[:60]!r}")
        elif target == "hello":
            events.add(f"status_{status}", target, rid, f"body={body[:120]!r}")
        if close:
            conn.close()
    conn.close()


async def crash_one(n, timeout, st, events):
    rid = f"chaos-crash-{n}"
    request = (f"GET /chaos/crash HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n"
               f"X-Request-Id: {rid}\r\nConnection: close\r\n\r\n").encode()
    conn = Conn()
    st.requests += 1
    t = time.monotonic()
    try:
        status, _body, _close = await asyncio.wait_for(one_request(conn, st, request), timeout)
    except asyncio.TimeoutError:
        st.hung[conn.phase] += 1
        events.add("hung", "crash", rid, f"phase={conn.phase}")
    except (OSError, ClosedEarly, ProtocolError) as e:
        st.errors[error_kind(e)] += 1
        events.add("error", "crash", rid, error_kind(e))
    else:
        st.latencies.append(time.monotonic() - t)
        st.status[status] += 1
    finally:
        conn.close()


async def crasher(deadline, interval, timeout, st, events):
    tasks = []
    t0 = time.monotonic()
    k = 0
    while True:
        at = t0 + k * interval
        if at >= deadline:
            break
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        k += 1
        tasks.append(asyncio.create_task(crash_one(k, timeout, st, events)))
        tasks = [x for x in tasks if not x.done()]
    if tasks:
        await asyncio.gather(*tasks)
    return k


def read_sample(pid):
    fds = rss = None
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return fds, rss


async def sampler(pid, t0, stop, samples):
    while True:
        fds, rss = read_sample(pid)
        samples.append((time.monotonic() - t0, fds, rss))
        try:
            await asyncio.wait_for(stop.wait(), 5.0)
            return
        except asyncio.TimeoutError:
            pass


def percentile(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals))) - 1))
    return sorted_vals[i]


def emit_stats(name, st):
    emit(f"{name}_requests", st.requests)
    emit(f"{name}_status", " ".join(f"{s}={n}" for s, n in sorted(st.status.items())) or "-")
    emit(f"{name}_ok", st.ok)
    emit(f"{name}_bad_body", st.bad_body)
    emit(f"{name}_errors", sum(st.errors.values()))
    emit(f"{name}_error_kinds",
         " ".join(f"{k}={n}" for k, n in st.errors.most_common()) or "-")
    emit(f"{name}_reused_errors", st.reused_errors)
    emit(f"{name}_hung", sum(st.hung.values()))
    emit(f"{name}_hung_phases", " ".join(f"{k}={n}" for k, n in st.hung.items()) or "-")
    emit(f"{name}_connects", st.connects)
    lat = sorted(st.latencies)
    emit(f"{name}_latency_ms", f"{1000 * percentile(lat, 50):.2f} {1000 * percentile(lat, 99):.2f} "
                               f"{1000 * percentile(lat, 99.9):.2f} {1000 * (lat[-1] if lat else float('nan')):.2f}")
    # success rate, truncated (never rounded up to 100.000)
    if st.requests:
        emit(f"{name}_success_pct", f"{(st.ok * 100000 // st.requests) / 1000:.3f}")
    else:
        emit(f"{name}_success_pct", "-")


async def main_async(a):
    global PORT
    PORT = a.port
    t0 = time.monotonic()
    deadline = t0 + a.duration
    emit("start_utc", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
         + f".{int(time.time() * 1000) % 1000:03d}Z")
    events = Events(a.max_events, t0)
    slow = Events(a.max_events, t0)     # answered, but after SLOW_S or more
    stats = {"hello": Stats(), "chaos": Stats(), "crash": Stats()}
    n_hello = (a.connections + 1) // 2
    n_chaos = a.connections - n_hello
    emit("connections_hello", n_hello)
    emit("connections_chaos", n_chaos)
    samples = []
    stop = asyncio.Event()
    sample_task = (asyncio.create_task(sampler(a.sample_pid, t0, stop, samples))
                   if a.sample_pid else None)
    workers = []
    for i in range(a.connections):
        target = "hello" if i < n_hello else "chaos"
        workers.append(asyncio.create_task(
            worker(target, i, deadline, a.timeout, stats[target], events, slow)))
    crashes = 0
    if a.crash_interval_ms > 0:
        crashes = await crasher(deadline, a.crash_interval_ms / 1000.0, a.timeout,
                                stats["crash"], events)
    await asyncio.gather(*workers)
    elapsed = time.monotonic() - t0
    if sample_task:
        stop.set()
        await sample_task
    emit("elapsed_s", f"{elapsed:.2f}")
    emit("crashes_sent", crashes)
    for name, st in stats.items():
        emit_stats(name, st)
    for t, fds, rss in samples:
        emit("sample", f"t={t:.0f}s fds={fds if fds is not None else '?'} "
                       f"rss_kb={rss if rss is not None else '?'}")
    for line in events.lines:
        emit("event", line)
    if events.dropped:
        emit("events_not_shown",
             ", ".join(f"{k} {n}" for k, n in events.dropped.most_common()))
    for line in slow.lines:
        emit("slow", line)
    emit("slow_count", len(slow.lines) + sum(slow.dropped.values()))
    total = sum(st.requests for st in stats.values())
    answered = sum(sum(st.status.values()) for st in stats.values())
    log(f"{total} requests in {elapsed:.1f} s, {answered} answered")
    return 0 if answered > 0 else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--crash-interval-ms", type=int, default=200)
    p.add_argument("--sample-pid", type=int, default=0)
    p.add_argument("--max-events", type=int, default=30)
    a = p.parse_args()
    if a.connections < 2:
        p.error("--connections must be at least 2 (half hello, half chaos)")
    if a.duration <= 0 or a.timeout <= 0:
        p.error("--duration and --timeout must be positive")
    return asyncio.run(main_async(a))


PORT = 0

if __name__ == "__main__":
    sys.exit(main())
