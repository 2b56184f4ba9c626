#!/usr/bin/env python3
"""Restart time of a broker with durable sessions (`--data-dir`).

Fills a data directory with SESSIONS persistent sessions (MQTT 3.1.1,
CleanSession 0), each subscribed at QoS 1 to its own topic, and MESSAGES
queued QoS 1 messages of PAYLOAD bytes spread over them (published while they
are offline), stops the broker (SIGTERM, or SIGKILL with --kill), starts it
again on the same directory and reports, as one JSON line:

  replay_ms     the broker's own figure (its "data directory replayed" line)
  ready_ms      from the second start to the first CONNACK
  disk_bytes    the logs on disk before the restart
  sessions / records / retained as the replay counted them
  resumed_ok    a sample of sessions reconnected with Session Present 1 and
                got their first queued message

Usage: recovery.py --bin target/release/shardmq [--sessions 10000]
       [--messages 100000] [--payload 64] [--cores 1] [--sync interval] [--kill]
"""

import argparse
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def enc_str(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def enc_len(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + enc_len(len(body)) + body


def connect(client_id: str, clean: bool) -> bytes:
    flags = 0x02 if clean else 0
    return packet(0x10, enc_str(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 600)
                  + enc_str(client_id.encode()))


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf
    first = exactly(1)[0]
    mult, length = 1, 0
    while True:
        b = exactly(1)[0]
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    return first, exactly(length)


def start(args, port: int, data: str, log) -> subprocess.Popen:
    cmd = [args.bin, "--listen", f"127.0.0.1:{port}", "--cores", str(args.cores), "--data-dir", data,
           "--sync", args.sync, "--mqueue-len-max", str(max(1000, args.messages // args.sessions * 2)),
           "--sys-interval-secs", "0"]
    return subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)


def wait_ready(port: int, timeout: float = 300.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(connect(f"probe-{time.time_ns()}", True))
                if read_packet(s)[0] >> 4 == 2:
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.01)
    raise SystemExit("broker not ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--payload", type=int, default=64)
    ap.add_argument("--cores", type=int, default=1)
    ap.add_argument("--sync", default="interval")
    ap.add_argument("--kill", action="store_true")
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="recovery-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = Path(data) / "broker.log"
    log = open(log_path, "ab")
    broker = start(args, port, data + "/d", log)
    wait_ready(port)

    # Sessions, each on its own topic, connected in batches of pipelined CONNECTs.
    batch = 500
    for first in range(0, args.sessions, batch):
        socks = []
        for i in range(first, min(first + batch, args.sessions)):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(connect(f"rec-{i}", False)
                      + packet(0x82, struct.pack("!H", 1) + enc_str(f"rec/{i}".encode()) + b"\x01"))
            socks.append(s)
        for s in socks:
            read_packet(s)  # CONNACK
            read_packet(s)  # SUBACK
            s.sendall(b"\xe0\x00")
            s.close()

    # Messages, QoS 1, pipelined with a window of 500 unacknowledged.
    pub = socket.create_connection(("127.0.0.1", port))
    pub.sendall(connect("rec-publisher", True))
    read_packet(pub)
    payload = b"p" * args.payload
    window, sent, acked = 500, 0, 0
    while acked < args.messages:
        out = bytearray()
        while sent < args.messages and sent - acked < window:
            pid = sent % 65535 + 1
            topic = f"rec/{sent % args.sessions}".encode()
            out += packet(0x32, enc_str(topic) + struct.pack("!H", pid) + payload)
            sent += 1
        if out:
            pub.sendall(out)
        read_packet(pub)
        acked += 1
    pub.sendall(b"\xe0\x00")
    pub.close()
    time.sleep(1)

    disk = sum(p.stat().st_size for p in Path(data, "d").rglob("*.log"))
    broker.send_signal(signal.SIGKILL if args.kill else signal.SIGTERM)
    broker.wait(60)

    log_offset = log_path.stat().st_size
    restarted = time.monotonic()
    broker = start(args, port, data + "/d", log)
    ready_s = wait_ready(port)
    ready_ms = (time.monotonic() - restarted) * 1000
    text = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace")[log_offset:])
    m = re.search(r"data directory replayed(.*)", text)
    fields = dict(re.findall(r"(\w+)=(\d+)", m.group(1))) if m else {}

    # A sample of sessions resume with Session Present 1 and get a message.
    ok = 0
    sample = range(0, args.sessions, max(1, args.sessions // 20))
    for i in sample:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(connect(f"rec-{i}", False))
            kind, body = read_packet(s)
            kind2, _ = read_packet(s)
            if kind >> 4 == 2 and body[0] & 1 and kind2 >> 4 == 3:
                ok += 1
    broker.send_signal(signal.SIGTERM)
    broker.wait(60)
    print(json.dumps({
        "sessions": args.sessions, "messages": args.messages, "payload": args.payload,
        "cores": args.cores, "sync": args.sync, "stop": "SIGKILL" if args.kill else "SIGTERM",
        "disk_bytes": disk, "replay_ms": int(fields.get("millis", -1)), "ready_ms": round(ready_ms),
        "replayed_sessions": int(fields.get("sessions", -1)), "records": int(fields.get("records", -1)),
        "resumed_ok": f"{ok}/{len(sample)}", "ready_s": round(ready_s, 3),
    }))


if __name__ == "__main__":
    sys.exit(main())
