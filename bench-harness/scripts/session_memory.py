#!/usr/bin/env python3
"""Measures the broker's memory per idle persistent session and per queued message.

Starts the broker binary, creates N persistent sessions (CONNECT with CleanSession=0,
SUBSCRIBE at QoS 1, DISCONNECT), then publishes K QoS 1 messages that every offline
session must queue. Reports the broker's RSS growth per session and per queued
message (VmRSS from /proc/<pid>/status, after the broker's own $SYS counters say the
work is done).

    python3 bench-harness/scripts/session_memory.py [--bin target/release/shardmq] [--sessions 5000] [--messages 20]
"""

import argparse
import os
import socket
import struct
import subprocess
import sys
import time


def enc_str(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def packet(first: int, body: bytes) -> bytes:
    n, out = len(body), bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes([first]) + bytes(out) + body


def connect(cid: bytes, clean: bool) -> bytes:
    flags = 0x02 if clean else 0x00
    return packet(0x10, enc_str(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 0) + enc_str(cid))


def read_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def read_packet(s: socket.socket) -> tuple[int, bytes]:
    first = read_exact(s, 1)[0]
    mult, length = 1, 0
    while True:
        b = read_exact(s, 1)[0]
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    return first, read_exact(s, length)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle(pid: int) -> int:
    """RSS once it stops moving (allocator and the 1 s stats tick settle)."""
    last = rss_kib(pid)
    for _ in range(20):
        time.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - last) < 64:
            return now
        last = now
    return last


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/shardmq")
    ap.add_argument("--sessions", type=int, default=5000)
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--payload", type=int, default=64)
    ap.add_argument("--port", type=int, default=18899)
    args = ap.parse_args()

    proc = subprocess.Popen([args.bin, "--listen", f"127.0.0.1:{args.port}", "--cores", "2",
                             "--mqueue-len-max", str(max(1000, args.messages)), "--log-level", "warn"],
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        base = settle(proc.pid)
        for i in range(args.sessions):
            s = socket.create_connection(("127.0.0.1", args.port))
            s.sendall(connect(b"mem-%d" % i, clean=False))
            assert read_packet(s)[0] == 0x20
            s.sendall(packet(0x82, struct.pack("!H", 1) + enc_str(b"mem/all") + b"\x01"))
            assert read_packet(s)[0] == 0x90
            s.sendall(b"\xe0\x00")
            s.close()
        sessions = settle(proc.pid)
        pub = socket.create_connection(("127.0.0.1", args.port))
        pub.sendall(connect(b"mem-publisher", clean=True))
        read_packet(pub)
        payload = b"x" * args.payload
        for i in range(args.messages):
            pub.sendall(packet(0x32, enc_str(b"mem/all") + struct.pack("!H", i + 1) + payload))
            assert read_packet(pub)[0] == 0x40
        queued = settle(proc.pid)
        n_queued = args.sessions * args.messages
        print(f"baseline RSS {base} KiB; {args.sessions} idle persistent sessions: +{sessions - base} KiB "
              f"= {(sessions - base) * 1024 / args.sessions:.0f} B/session")
        print(f"{n_queued} queued deliveries ({args.messages} x {args.payload} B messages to each session): "
              f"+{queued - sessions} KiB = {(queued - sessions) * 1024 / n_queued:.1f} B/queued message")
        return 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
