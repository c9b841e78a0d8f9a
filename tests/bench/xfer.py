#!/usr/bin/env python3
"""Traffic for the benchmark, run inside the testbed's namespaces.

  xfer.py serve --bind ADDR --port P
  xfer.py get|put|rr --to ADDR --port P --size BYTES [--timeout S]
  xfer.py web --to ADDR --port P --flows N --size BYTES [--op get|put] [--timeout S]
              [--stagger MS --seed N]

Protocol: the client sends one byte of operation ('D' download, 'U'
upload) and the size as 8 bytes big-endian. For a download the server
sends that many bytes and closes; for a request ('R', rr) the client
sends 300 bytes in all and the server answers with SIZE bytes (rr's time
is to the answer's first byte); for an upload it reads them, answers
one byte, then sends its receive trace as JSON and closes.

Clients print one JSON object: times are CLOCK_MONOTONIC seconds, which
all namespaces share, and a trace of (time, bytes delivered) sampled
every 20 ms at the receiving end. Sockets use cubic: the end hosts are
plain hosts, whatever the namespace default is.
"""

import argparse
import fcntl
import json
import random
import socket
import struct
import sys
import termios
import threading
import time

CHUNK = 64 * 1024
# A small request (rr): what a browser's GET with its headers is like.
REQUEST = 300
SAMPLE_S = 0.02


def cubic(sock):
    # Root may select any available algorithm per socket.
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
    except OSError:
        pass


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


class Trace:
    """Delivered bytes over time, one sample per SAMPLE_S at most."""

    def __init__(self):
        self.total = 0
        self.points = []
        self.last = 0.0

    def add(self, n):
        self.total += n
        now = time.monotonic()
        if now - self.last >= SAMPLE_S:
            self.points.append((round(now, 4), self.total))
            self.last = now

    def close(self):
        self.points.append((round(time.monotonic(), 4), self.total))


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        got = sock.recv(n - len(buf))
        if not got:
            raise ConnectionError("peer closed early")
        buf += got
    return buf


def serve_one(conn):
    with conn:
        cubic(conn)
        conn.settimeout(300)
        op, size = struct.unpack("!cQ", read_exact(conn, 9))
        if op == b"D":
            block = bytes(CHUNK)
            left = size
            while left > 0:
                n = conn.send(block[: min(left, CHUNK)])
                left -= n
            conn.shutdown(socket.SHUT_WR)
            # Wait for the client's close so the last bytes are not reset.
            while conn.recv(CHUNK):
                pass
        elif op == b"R":
            # A request of REQUEST bytes in all, answered with `size`.
            read_exact(conn, REQUEST - 9)
            conn.sendall(bytes(size))
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(CHUNK):
                pass
        elif op == b"U":
            trace = Trace()
            buf = bytearray(CHUNK)
            while trace.total < size:
                n = conn.recv_into(buf, min(CHUNK, size - trace.total))
                if n == 0:
                    break
                trace.add(n)
            trace.close()
            conn.sendall(b"K")
            conn.sendall(json.dumps(trace.points).encode())
            conn.shutdown(socket.SHUT_WR)


def serve(args):
    ls = socket.socket(family(args.bind), socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    cubic(ls)
    ls.bind((args.bind, args.port))
    ls.listen(512)
    print("listening", flush=True)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=serve_one_safely, args=(conn,), daemon=True).start()


def serve_one_safely(conn):
    try:
        serve_one(conn)
    except OSError:
        pass


def connect(args, timeout):
    s = socket.socket(family(args.to), socket.SOCK_STREAM)
    cubic(s)
    s.settimeout(timeout)
    s.connect((args.to, args.port))
    return s


def unacked(sock):
    """Bytes in the socket's send queue, not yet acknowledged."""
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


def receive(s, size, deadline, trace, res):
    """Reads `size` bytes into `trace`, noting the first byte's and, when
    all came, the last byte's time in `res`."""
    buf = bytearray(CHUNK)
    while trace.total < size:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        n = s.recv_into(buf)
        if n == 0:
            break
        if trace.total == 0:
            res["first_byte"] = time.monotonic()
        trace.add(n)
    trace.close()
    res["points"] = trace.points
    if trace.total >= size:
        res["done"] = time.monotonic()


def transfer(args, op, size, deadline):
    """One transfer; returns a result dict (complete or timed out)."""
    res = {"op": op, "size": size, "start": time.monotonic()}
    trace = Trace()
    try:
        s = connect(args, max(1.0, deadline - time.monotonic()))
        res["connected"] = time.monotonic()
        with s:
            if op == "rr":
                # Client speaks first: the whole request in one write
                # right after connect; time to the response's first byte.
                s.sendall(struct.pack("!cQ", b"R", size) + bytes(REQUEST - 9))
                receive(s, size, deadline, trace, res)
                if "done" in res:
                    res["delivered_at"] = res["first_byte"]
            elif op == "get":
                s.sendall(struct.pack("!cQ", b"D", size))
                receive(s, size, deadline, trace, res)
            else:
                # Upload: the server's ack marks completion; its trace
                # says when the bytes were delivered.
                s.sendall(struct.pack("!cQ", b"U", size))
                block = bytes(CHUNK)
                left = size
                try:
                    while left > 0:
                        s.settimeout(max(0.1, deadline - time.monotonic()))
                        left -= s.send(block[: min(left, CHUNK)])
                    s.settimeout(max(0.1, deadline - time.monotonic()))
                    ack = s.recv(1)
                except socket.timeout:
                    # Only the server knows what arrived; what the next
                    # hop acknowledged (sent minus still queued) is the
                    # best estimate from here.
                    trace.total = max(0, size - left - unacked(s))
                    raise
                if ack == b"K":
                    res["done"] = time.monotonic()
                    s.settimeout(30)
                    body = b""
                    while True:
                        got = s.recv(CHUNK)
                        if not got:
                            break
                        body += got
                    res["points"] = json.loads(body)
    except (OSError, ValueError) as e:
        res["error"] = str(e)
    res["delivered"] = res["points"][-1][1] if res.get("points") else trace.total
    if "done" in res and "delivered_at" not in res:
        # When the last byte arrived: for uploads the server's trace says.
        res["delivered_at"] = res["points"][-1][0] if res.get("points") else res["done"]
    res["end"] = time.monotonic()
    return res


def web(args):
    """Many parallel short downloads, like a page with its objects (or,
    with --op put, parallel uploads sharing the link)."""
    deadline = time.monotonic() + args.timeout
    results = [None] * args.flows
    start = time.monotonic()

    # Flows that start within a few ms of each other meet the link in a
    # fixed order, and a deterministic link then gives the same winner
    # every run (two cubic flows: which one's slow start ends early
    # decides the total). A seeded random start offset per flow samples
    # that instead; the same seed gives every setup the same offsets.
    rng = random.Random(args.seed)
    offsets = [rng.uniform(0, args.stagger / 1000) for _ in range(args.flows)]

    def one(i):
        time.sleep(offsets[i])
        results[i] = transfer(args, args.op, args.size, deadline)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.flows)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.timeout + 5)
    ok = [r for r in results if r and "done" in r]
    out = {"op": "web" if args.op == "get" else "shared", "size": args.size * args.flows, "start": start, "flows": args.flows, "completed": len(ok)}
    out["delivered"] = sum(r["delivered"] for r in results if r)
    if len(ok) == args.flows:
        out["done"] = max(r["done"] for r in ok)
        # When the last byte of all arrived (uploads: at the server).
        out["delivered_at"] = max(r["points"][-1][0] if r.get("points") else r["done"] for r in ok)
    out["end"] = time.monotonic()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["serve", "get", "put", "rr", "web"])
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--to")
    p.add_argument("--port", type=int, default=5201)
    p.add_argument("--size", type=int, default=1 << 20)
    p.add_argument("--flows", type=int, default=32)
    p.add_argument("--op", choices=["get", "put"], default="get", help="web: what each flow does")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--stagger", type=float, default=0, help="web: start each flow after a random 0..MS ms")
    p.add_argument("--seed", type=int, default=1, help="web: seed of those start offsets")
    args = p.parse_args()
    if args.mode == "serve":
        serve(args)
    elif args.mode == "web":
        print(json.dumps(web(args)))
    else:
        print(json.dumps(transfer(args, args.mode, args.size, time.monotonic() + args.timeout)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
