#!/usr/bin/env python3
"""Client of scripts/profile: a fixed number of GET /hello/x requests over
keep-alive connections, each connection sending its next request when the
previous answer is in (standard library only). Prints the count and exits 1
if an answer was not a 200."""

import argparse
import selectors
import socket
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--requests", type=int, required=True)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()

    req = b"GET /hello/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    conns = min(a.connections, a.requests)
    # requests left to send per connection, spread evenly
    left = [a.requests // conns + (1 if i < a.requests % conns else 0) for i in range(conns)]
    sel = selectors.DefaultSelector()
    bufs = {}
    for i in range(conns):
        s = socket.create_connection(("127.0.0.1", a.port))
        s.settimeout(a.timeout)
        s.sendall(req)
        left[i] -= 1
        bufs[s] = b""
        sel.register(s, selectors.EVENT_READ, i)
    done = 0
    bad = 0
    while sel.get_map():
        events = sel.select(a.timeout)
        if not events:
            print(f"timed out after {done} answers", file=sys.stderr)
            return 1
        for key, _ in events:
            s, i = key.fileobj, key.data
            data = s.recv(65536)
            if not data:
                print("a connection was closed", file=sys.stderr)
                return 1
            bufs[s] += data
            while True:
                head_end = bufs[s].find(b"\r\n\r\n")
                if head_end < 0:
                    break
                head = bufs[s][:head_end].decode("latin-1")
                length = 0
                closing = False
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value.strip())
                    elif name == "connection" and value.strip().lower() == "close":
                        closing = True
                total = head_end + 4 + length
                if len(bufs[s]) < total:
                    break
                if not head.startswith("HTTP/1.1 200"):
                    bad += 1
                bufs[s] = bufs[s][total:]
                done += 1
                if left[i] > 0 and closing:
                    # The server ends the connection (nginx: keepalive_requests):
                    # go on over a new one.
                    sel.unregister(s)
                    del bufs[s]
                    s.close()
                    s = socket.create_connection(("127.0.0.1", a.port))
                    s.settimeout(a.timeout)
                    bufs[s] = b""
                    sel.register(s, selectors.EVENT_READ, i)
                if left[i] > 0:
                    s.sendall(req)
                    left[i] -= 1
                else:
                    sel.unregister(s)
                    del bufs[s]
                    s.close()
                    break
    print(done)
    if bad:
        print(f"{bad} answers were not 200", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
