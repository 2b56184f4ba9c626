"""Slow consumers: a subscriber that stops reading must cost the broker a
bounded amount of memory (its output buffer, its inflight window and its share
of the queued-bytes budget), must not slow down or starve other subscribers,
and what it loses must be counted.

Raw sockets throughout: paho would read (and acknowledge) on its own.
Environment: SLOW_CONSUMER_MIB (default 256) -- MiB published per test.

shardmq only: the limits, /metrics and the memory bounds are shardmq's own.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from conftest import BROKER_KIND
from hardening import MIB, Healthy, rss_bytes, scrape, start_with_metrics, wait_metrics
from mqtt_helpers import (
    PUBACK,
    PUBLISH,
    SUBACK,
    ConnectionClosed,
    RawClient,
    enc_str,
    packet,
    puback_packet,
    publish_packet,
    subscribe_packet,
    unique_topic_root,
)

pytestmark = [
    pytest.mark.skipif(BROKER_KIND != "shardmq", reason="shardmq's own limits, metrics and memory bounds"),
    pytest.mark.timeout(60),
]

DROPPED = "shardmq_messages_dropped_total"
PAYLOAD = 64 * 1024
TOTAL_MIB = int(os.environ.get("SLOW_CONSUMER_MIB", "256"))
QUEUED_BYTES_MAX = 8 * MIB
OUT_BUFFER_MAX = 1 * MIB
RSS_GROWTH_MAX = 64 * MIB
#: messages the publisher may be ahead of the healthy subscriber: 12 x 64 KiB
#: stays below --out-buffer-max-bytes, so the healthy subscriber never has to
#: queue (the slow one shares its shard's queued-bytes budget).
WINDOW = 12

ARGS = ["--queued-bytes-max", str(QUEUED_BYTES_MAX), "--out-buffer-max-bytes", str(OUT_BUFFER_MAX),
        "--sys-interval-secs", "0"]


def connect_raw(b, shard: int, prefix: str, rcvbuf: int | None = None) -> RawClient:
    r = RawClient(b.host, b.port, timeout=10)
    if rcvbuf is not None:
        r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    assert r.connect(b.client_id(prefix, shard)) == (0, 0)
    return r


def subscribe(r: RawClient, flt: str, qos: int) -> None:
    r.send(subscribe_packet(1, [(flt, qos)]))
    p, _ = r.recv_until(SUBACK)
    assert p.suback() == (1, [qos])


def fast_publish_packet(topic_enc: bytes, payload: bytes, qos: int, pid: int | None) -> bytes:
    body = topic_enc + (struct.pack("!H", pid) if pid is not None else b"") + payload
    return packet(0x30 | (qos << 1), body)


class Reader(threading.Thread):
    """Reads a raw connection: counts the PUBLISHes (checking their sequence
    numbers are 0, 1, 2, ... with none missing), acknowledges QoS 1, counts
    PUBACKs; records the first error."""

    def __init__(self, r: RawClient, name: str, pause_every: int = 0):
        super().__init__(name=name, daemon=True)
        self.r = r
        #: a reader slower than the publisher: a 10 ms pause every this many messages
        self.pause_every = pause_every
        self.cond = threading.Condition()
        self.count = 0
        self.pubacks = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self):
        try:
            while not self.stop.is_set():
                try:
                    p = self.r.recv_packet(0.2)
                except TimeoutError:
                    continue
                if p.type == PUBLISH:
                    msg = p.publish()
                    seq = int.from_bytes(msg.payload[:8], "big")
                    if seq != self.count:
                        raise AssertionError(f"{self.name}: got seq {seq}, expected {self.count}")
                    if msg.qos == 1:
                        self.r.send(puback_packet(msg.pid))
                    with self.cond:
                        self.count += 1
                        self.cond.notify_all()
                    if self.pause_every and self.count % self.pause_every == 0:
                        time.sleep(0.01)  # the pace of a slow reader
                elif p.type == PUBACK:
                    with self.cond:
                        self.pubacks += 1
                        self.cond.notify_all()
                else:
                    raise AssertionError(f"{self.name}: unexpected {p}")
        except BaseException as e:  # surfaced by the test
            self.error = e
            with self.cond:
                self.cond.notify_all()

    def wait(self, pred, timeout: float, what: str):
        with self.cond:
            ok = self.cond.wait_for(lambda: pred(self) or self.error is not None, timeout)
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}")
        assert ok, f"{self.name}: timed out after {timeout}s waiting for {what} (count={self.count})"


class RssSampler(threading.Thread):
    def __init__(self, broker, period: float = 0.02):
        super().__init__(daemon=True)
        self.broker, self.period = broker, period
        self.peak = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.broker))
            except (OSError, AssertionError):
                return
            self.stop.wait(self.period)  # sampling period


def drain_count(r: RawClient, idle: float = 1.0, ack: bool = False, limit_s: float = 20) -> list[int]:
    """Reads until nothing arrives for ``idle`` seconds; returns the sequence numbers."""
    seqs = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            p = r.recv_packet(idle)
        except (TimeoutError, ConnectionClosed):
            break
        if p.type == PUBLISH:
            msg = p.publish()
            seqs.append(int.from_bytes(msg.payload[:8], "big"))
            if ack and msg.qos == 1:
                r.send(puback_packet(msg.pid))
    return seqs


@pytest.mark.parametrize("qos", [0, 1])
def test_slow_consumer_memory_is_bounded(start_broker, qos):
    """A subscriber on each shard that never reads while a publisher pushes
    SLOW_CONSUMER_MIB (256) MiB of 64 KiB messages at QoS ``qos`` across
    shards, with --queued-bytes-max 8 MiB and --out-buffer-max-bytes 1 MiB:
    the broker's RSS grows by less than 64 MiB over its baseline; a healthy
    subscriber (raw, reading and acknowledging) receives every message in
    order [MQTT-4.6.0-6]; what the slow subscribers lose is dropped and counted
    (messages_dropped_total on their shards). At QoS 0 the output buffer bounds
    the slow subscriber, at QoS 1 the inflight window (section 4.3.2); the rest is
    queued until the budget is spent. Once they read again they get exactly
    the messages that were not counted as dropped, in order, and the queues
    empty."""
    b, port = start_with_metrics(start_broker, ARGS)
    root = unique_topic_root(f"slow{qos}")
    healthy_clients = [Healthy(b, shard=0), Healthy(b, shard=1)]
    slow = {s: connect_raw(b, s, f"slow{qos}-", rcvbuf=64 * 1024) for s in (0, 1)}
    for r in slow.values():
        subscribe(r, f"{root}/#", qos)
    good_raw = connect_raw(b, 1, f"good{qos}-")
    subscribe(good_raw, f"{root}/#", qos)
    good = Reader(good_raw, "healthy-subscriber")
    pub_raw = connect_raw(b, 0, f"pub{qos}-")
    pub_acks = Reader(pub_raw, "publisher-acks")
    good.start()
    pub_acks.start()

    n = TOTAL_MIB * MIB // PAYLOAD
    topic_enc = enc_str(f"{root}/data")
    filler = b"\xab" * (PAYLOAD - 8)
    baseline = rss_bytes(b)
    sampler = RssSampler(b)
    sampler.start()
    t0 = time.monotonic()
    try:
        for i in range(n):
            if i >= WINDOW:
                if good.count < i - WINDOW:
                    good.wait(lambda g: g.count >= i - WINDOW, 10, f"message {i - WINDOW}")
            pid = (i % 65535) + 1 if qos else None
            pub_raw.send(fast_publish_packet(topic_enc, i.to_bytes(8, "big") + filler, qos, pid))
        good.wait(lambda g: g.count >= n, 15, "every message")
        if qos:
            pub_acks.wait(lambda p: p.pubacks >= n, 10, "every PUBACK")
        elapsed = time.monotonic() - t0
        # Healthy clients on both shards still round-trip promptly.
        for h in healthy_clients:
            assert h.roundtrip() < 5
    finally:
        sampler.stop.set()
        sampler.join()
        good.stop.set()
        pub_acks.stop.set()
    growth = sampler.peak - baseline
    print(f"\nslow consumer qos{qos}: {n} x 64 KiB = {n * PAYLOAD // MIB} MiB in {elapsed:.1f}s; "
          f"RSS baseline {baseline / MIB:.1f} MiB, peak {sampler.peak / MIB:.1f} MiB "
          f"(+{growth / MIB:.1f} MiB)")
    assert good.error is None, good.error
    assert good.count == n
    assert growth < RSS_GROWTH_MAX, f"RSS grew by {growth / MIB:.1f} MiB"

    def dropped(m, s):
        return m.get(DROPPED, shard=s, reason="queued_bytes_budget") + m.get(DROPPED, shard=s, reason="mqueue_full")

    m = wait_metrics(port, lambda m: all(dropped(m, s) > 0 for s in (0, 1)), what="drops on both shards")
    for s in (0, 1):
        assert m.get("shardmq_queued_bytes", shard=s) <= QUEUED_BYTES_MAX // 2 + PAYLOAD + 1024, m.text
    print(f"dropped: shard0 {dropped(m, 0):.0f}, shard1 {dropped(m, 1):.0f}")

    # The slow subscribers read again: they get what their socket, output
    # buffer, inflight window and queue held, in order, and exactly what was
    # not counted as dropped.
    got = {s: drain_count(slow[s], ack=True) for s in (0, 1)}
    m = wait_metrics(port, lambda m: all(len(got[s]) + dropped(m, s) == n for s in (0, 1)),
                     what=f"received + dropped == {n} per slow subscriber "
                          f"(received {[len(got[s]) for s in (0, 1)]})")
    for s in (0, 1):
        assert got[s] == sorted(set(got[s])), f"shard {s}: out of order or duplicated"
    wait_metrics(port, lambda m: m.sum("shardmq_queued_bytes") == 0, what="queues empty")
    for h in healthy_clients:
        h.close()
    for r in (*slow.values(), good_raw, pub_raw):
        r.close()


def test_a_slower_qos1_subscriber_pauses_the_publisher_instead_of_dropping(start_broker):
    """A QoS 1 subscriber that keeps reading, but slower than a publisher on the
    other shard floods: the broker stops reading the publisher while the
    subscriber is behind (TCP backpressure) rather than overflowing its session
    queue (1,000): every message arrives, in order, and nothing is dropped."""
    b, port = start_with_metrics(start_broker, ["--sys-interval-secs", "0"])
    root = unique_topic_root("pace")
    sub = connect_raw(b, 1, "pace-sub")
    subscribe(sub, f"{root}/#", 1)
    reader = Reader(sub, "paced-subscriber", pause_every=50)
    pub = connect_raw(b, 0, "pace-pub")
    acks = Reader(pub, "publisher-acks")
    reader.start()
    acks.start()
    n = 5000
    topic_enc = enc_str(f"{root}/data")
    try:
        # Pipelined, as fast as the socket takes them: the broker's pause is what
        # slows this loop down.
        for i in range(n):
            pub.send(fast_publish_packet(topic_enc, i.to_bytes(8, "big") + b"p" * 56, 1, (i % 65535) + 1))
        reader.wait(lambda r: r.count >= n, 30, "every message")
        acks.wait(lambda a: a.pubacks >= n, 10, "every PUBACK")
    finally:
        reader.stop.set()
        acks.stop.set()
    m = scrape(port)
    for s in (0, 1):
        for reason in ("mqueue_full", "queued_bytes_budget"):
            assert m.get(DROPPED, shard=s, reason=reason) == 0, f"shard {s} dropped ({reason})"
    assert reader.count == n


def test_slow_qos0_consumer_recovers_when_it_reads_again(start_broker):
    """A QoS 0 subscriber that stopped reading long enough for messages to be
    queued (--out-buffer-max-bytes 65536) and then reads again receives the
    queued messages, in order, and then new messages: a subscriber that was
    slow for a while is not cut off for the rest of its connection."""
    b, port = start_with_metrics(start_broker, ["--out-buffer-max-bytes", "65536", "--sys-interval-secs", "0"])
    root = unique_topic_root("rec")
    slow = connect_raw(b, 1, "recs", rcvbuf=16 * 1024)
    subscribe(slow, f"{root}/#", 0)
    pub = connect_raw(b, 0, "recp")
    topic_enc = enc_str(f"{root}/data")
    # 800 x 16 KiB: more than the output buffer and the kernel's socket buffers hold
    # (loopback send buffers autotune up to tcp_wmem's 4 MiB).
    n = 800
    for i in range(n):
        pub.send(fast_publish_packet(topic_enc, i.to_bytes(8, "big") + b"r" * (16 * 1024 - 8), 0, None))
    wait_metrics(port, lambda m: m.get("shardmq_queued_bytes", shard=1) > 0, what="messages queued on shard 1")
    # A generous idle window: with a receive buffer smaller than loopback's MSS the
    # kernel stops sending window updates, and the broker's socket then waits for
    # TCP's zero-window probe timer (measured: gaps of ~1.4 s between messages).
    got = drain_count(slow, idle=5.0)
    m = scrape(port)
    lost = m.get(DROPPED, shard=1, reason="mqueue_full") + m.get(DROPPED, shard=1, reason="queued_bytes_budget")
    assert got == sorted(set(got))
    # Everything not counted as dropped arrives, and the queue is empty afterwards.
    assert len(got) + lost == n, f"received {len(got)}, dropped {lost:.0f}, of {n}"
    pub.send(publish_packet(f"{root}/live", b"after", qos=0))
    p, _ = slow.recv_until(PUBLISH, timeout=5)
    assert p.publish().payload == b"after"
