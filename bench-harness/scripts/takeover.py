#!/usr/bin/env python3
"""Session takeover across nodes: how long a client waits for its CONNACK when it
resumes, on another node, a persistent session with messages queued in it.

    takeover.py --hosts 127.0.0.1:1883,127.0.0.1:1884,127.0.0.1:1885 [--rounds 50]
                [--queued 1000] [--json FILE] [--label NAME]

Each round:
  1. the device's session is on host i (it subscribed there at QoS 1, then said
     DISCONNECT);
  2. a publisher on host i publishes --queued QoS 1 messages to it, pipelined, and
     waits for every PUBACK (then 0.2 s, for the messages to reach the session's
     shard);
  3. the device sends CONNECT (CleanSession 0) to host i+1: the time from that
     send to its CONNACK is the figure (on a cluster, it includes the claim, the
     session's hand-over from host i, and its import);
  4. it takes every queued message (PUBACK each) and checks that all --queued came,
     in order, then says DISCONNECT; the next round starts from host i+1.
With one host, the session is resumed where it is: the same scenario on one node.

MQTT 3.1.1 over raw sockets, one packet per write but for the pipelined publishes.
Prints a JSON report (p50/p99/max of CONNECT -> CONNACK and of CONNECT -> last
message, in ms); exits 1 if a round lost or reordered a message.
"""
import argparse
import json
import socket
import struct
import sys
import time

# The MQTT 3.1.1 encoders of the restart benchmark, in this directory.
from recovery import connect, enc_str, packet


def publish1(topic: str, pid: int, payload: bytes) -> bytes:
    return packet(0x32, enc_str(topic.encode()) + struct.pack(">H", pid) + payload)


def puback(pid: int) -> bytes:
    return packet(0x40, struct.pack(">H", pid))


DISCONNECT = packet(0xE0, b"")


class Conn:
    def __init__(self, host: str):
        addr, port = host.rsplit(":", 1)
        self.s = socket.create_connection((addr, int(port)), timeout=30)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.s.sendall(data)

    def packet(self, before_wait=None) -> tuple[int, bytes]:
        """The next packet; `before_wait` is called before blocking for more bytes."""
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(self.buf):
                    b = self.buf[i]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        if len(self.buf) >= i + n:
                            first, body = self.buf[0], self.buf[i:i + n]
                            self.buf = self.buf[i + n:]
                            return first, body
                        break
            if before_wait:
                before_wait()
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the broker")
            self.buf += chunk

    def close(self) -> None:
        self.s.close()


def connack(conn: Conn) -> bool:
    first, body = conn.packet()
    if first >> 4 != 2 or body[1] != 0:
        raise RuntimeError(f"CONNACK refused: {first:#x} {body!r}")
    return bool(body[0] & 1)


def publish_all(host: str, topic: str, n: int, round_no: int) -> None:
    pub = Conn(host)
    pub.send(connect(f"tk-pub-{round_no}-{time.monotonic_ns()}", True))
    connack(pub)
    pub.send(b"".join(publish1(topic, i % 65535 + 1, f"{round_no}:{i}".encode())
                      for i in range(n)))
    acked = 0
    while acked < n:
        first, _ = pub.packet()
        if first >> 4 == 4:
            acked += 1
    pub.send(DISCONNECT)
    pub.close()


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", required=True, help="host:port,... (one: resume in place)")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--queued", type=int, default=1000)
    ap.add_argument("--json")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    hosts = args.hosts.split(",")
    client_id = f"tk-dev-{time.monotonic_ns()}"
    topic = f"tk/{client_id}/m"

    dev = Conn(hosts[0])
    dev.send(connect(client_id, False))
    connack(dev)
    dev.send(packet(0x82, struct.pack(">H", 1) + enc_str(f"tk/{client_id}/#".encode()) + b"\x01"))
    first, _ = dev.packet()
    assert first >> 4 == 9, "SUBACK"
    dev.send(DISCONNECT)
    dev.close()
    time.sleep(0.5)  # the route reaches the other nodes

    to_connack, to_last, bad = [], [], 0
    for r in range(args.rounds):
        here = hosts[r % len(hosts)]
        there = hosts[(r + 1) % len(hosts)]
        publish_all(here, topic, args.queued, r)
        time.sleep(0.2)
        dev = Conn(there)
        t0 = time.perf_counter()
        dev.send(connect(client_id, False))
        present = connack(dev)
        t1 = time.perf_counter()
        got = []
        acks = bytearray()

        def flush_acks():
            # The broker's window: what was received is acknowledged before waiting.
            if acks:
                dev.send(bytes(acks))
                acks.clear()

        while len(got) < args.queued:
            first, body = dev.packet(flush_acks)
            if first >> 4 != 3:
                continue
            tlen = struct.unpack(">H", body[:2])[0]
            pid = struct.unpack(">H", body[2 + tlen:4 + tlen])[0]
            got.append(body[4 + tlen:].decode())
            acks += puback(pid)
        t2 = time.perf_counter()
        flush_acks()
        dev.send(DISCONNECT)
        dev.close()
        if not present or got != [f"{r}:{i}" for i in range(args.queued)]:
            bad += 1
            print(f"round {r}: session present {present}, {len(got)} messages, "
                  f"{'in order' if got == sorted(got, key=lambda g: int(g.split(':')[1])) else 'reordered'}",
                  file=sys.stderr)
        to_connack.append((t1 - t0) * 1000)
        to_last.append((t2 - t0) * 1000)

    report = {
        "label": args.label,
        "hosts": len(hosts),
        "rounds": args.rounds,
        "queued": args.queued,
        "bad_rounds": bad,
        "connack_ms": {"p50": pct(to_connack, 50), "p99": pct(to_connack, 99),
                       "max": max(to_connack)},
        "all_messages_ms": {"p50": pct(to_last, 50), "p99": pct(to_last, 99),
                            "max": max(to_last)},
    }
    text = json.dumps(report)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
