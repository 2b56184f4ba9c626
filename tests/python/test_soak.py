"""A bounded soak: publishers on both shards at QoS 0, 1 and 2 with a
sequence number in every payload, and persistent subscribers on both shards
that keep dropping their TCP connections (RST, no DISCONNECT) and coming back.
At the end the subscribers reconnect and drain, and the ledger must balance.

Environment:
  SOAK_SECS     seconds of publishing (default 20)
  SOAK_CLIENTS  publishers and subscribers per shard (default 2)
  SOAK_RATE     messages per second per publisher (default 150)

The subscribers are raw sockets with their own QoS 2 receiver state (packet
ids awaiting PUBREL survive reconnects, as the session does), so that what the
broker sends is observed exactly, duplicates included.

shardmq only: /metrics and /proc of the broker process.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import defaultdict

import pytest

from conftest import BROKER_KIND
from hardening import MIB, fd_count, rss_bytes, start_with_metrics, wait_fds_at_most, wait_metrics
from mqtt_helpers import (
    PUBLISH,
    PUBREL,
    SUBACK,
    ConnectionClosed,
    MqttClient,
    RawClient,
    disconnect_packet,
    puback_packet,
    pubcomp_packet,
    pubrec_packet,
    subscribe_packet,
    unique_topic_root,
)

SOAK_SECS = float(os.environ.get("SOAK_SECS", "20"))
SOAK_CLIENTS = int(os.environ.get("SOAK_CLIENTS", "2"))
SOAK_RATE = float(os.environ.get("SOAK_RATE", "150"))
#: the subscribers must have caught up this long after the publishers stop
DRAIN_BOUND = 30.0 + SOAK_SECS

pytestmark = [
    pytest.mark.skipif(BROKER_KIND != "shardmq", reason="reads shardmq's /metrics and /proc"),
    pytest.mark.timeout(int(SOAK_SECS + DRAIN_BOUND + 60)),
    pytest.mark.slow,
]


class Publisher(threading.Thread):
    """paho publisher (unlimited client-side inflight, so that paho never holds
    a QoS 1/2 message back while a later QoS 0 one goes out: the order on the
    wire is the sequence order). Cycles QoS 0, 1, 2; paces to SOAK_RATE."""

    def __init__(self, broker, shard: int, idx: int, topic: str, stop: threading.Event):
        super().__init__(name=f"pub{idx}", daemon=True)
        self.idx, self.topic, self.stop_ev = idx, topic, stop
        self.client = MqttClient(broker.host, broker.port, broker.client_id(f"spub{idx}-", shard))
        self.client.c.max_inflight_messages_set(0)
        self.client.c.max_queued_messages_set(0)
        self.sent: dict[int, list[int]] = {0: [], 1: [], 2: []}
        self.infos = []
        self.error: BaseException | None = None

    def run(self):
        try:
            period = 1.0 / SOAK_RATE
            next_at = time.monotonic()
            seq = 0
            while not self.stop_ev.is_set():
                qos = seq % 3
                info = self.client.publish(self.topic, f"{self.idx}:{seq}:{qos}".encode(), qos=qos, wait=False)
                self.sent[qos].append(seq)
                if qos:
                    self.infos.append(info)
                seq += 1
                # keep the client-side window bounded
                while len(self.infos) > 200:
                    self.client.wait_published(self.infos.pop(0), timeout=10)
                next_at += period
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.stop_ev.wait(delay)  # pacing to SOAK_RATE
            for info in self.infos:
                self.client.wait_published(info, timeout=10)
            self.infos.clear()
        except BaseException as e:  # surfaced by the test
            self.error = e


class Subscriber(threading.Thread):
    """Persistent (CleanSession 0) raw subscriber to ``flt`` at QoS 2 that
    drops its connection at random moments, sometimes in the middle of a QoS
    1/2 flow, and reconnects after a random pause -- until ``final`` is set,
    after which it stays connected and reads until ``stop``."""

    def __init__(self, broker, shard: int, idx: int, flt: str, seed: int):
        super().__init__(name=f"sub{idx}", daemon=True)
        self.b = broker
        self.cid = broker.client_id(f"ssub{idx}-", shard)
        self.flt = flt
        self.rnd = random.Random(seed)
        self.log: list[tuple[int, int, int, bool]] = []  # (publisher, seq, qos, dup) in arrival order
        self.lock = threading.Lock()
        self.awaiting_rel: set[int] = set()
        self.reconnects = 0
        self.ready = threading.Event()
        self.final = threading.Event()
        self.stop_ev = threading.Event()
        self.error: BaseException | None = None

    def _record(self, msg):
        pub, seq, qos = (int(x) for x in msg.payload.decode().split(":"))
        if qos != msg.qos:
            raise AssertionError(f"{self.cid}: message {pub}:{seq} published at QoS {qos} arrived at QoS {msg.qos}")
        with self.lock:
            self.log.append((pub, seq, qos, msg.dup))

    def _session(self) -> None:
        r = RawClient(self.b.host, self.b.port, timeout=10)
        try:
            sp, rc = r.connect(self.cid, clean=False, keepalive=60)
            if rc != 0:
                raise AssertionError(f"{self.cid}: CONNACK rc={rc}")
            if self.ready.is_set() and sp != 1:
                raise AssertionError(f"{self.cid}: session lost on reconnect [MQTT-3.2.2-2]")
            if not self.ready.is_set():
                r.send(subscribe_packet(1, [(self.flt, 2)]))
                p, early = r.recv_until(SUBACK)
                if p.suback() != (1, [2]) or early:
                    raise AssertionError(f"{self.cid}: SUBACK {p} / {early}")
                self.ready.set()
            final = self.final.is_set()
            online_until = time.monotonic() + self.rnd.uniform(0.2, 1.5)
            while not self.stop_ev.is_set():
                if not final and time.monotonic() > online_until:
                    return
                if not final and self.final.is_set():
                    return  # reconnect once more, then stay
                try:
                    p = r.recv_packet(0.1)
                except TimeoutError:
                    continue
                # A drop in the middle of a flow: the broker must resend.
                cut = not final and self.rnd.random() < 0.01
                if p.type == PUBLISH:
                    msg = p.publish()
                    if msg.qos == 2:
                        if msg.pid not in self.awaiting_rel:  # [MQTT-4.3.3-2] receiver, method A
                            self._record(msg)
                            self.awaiting_rel.add(msg.pid)
                        if cut:
                            return
                        r.send(pubrec_packet(msg.pid))
                    else:
                        self._record(msg)
                        if cut:
                            return
                        if msg.qos == 1:
                            r.send(puback_packet(msg.pid))
                elif p.type == PUBREL:
                    self.awaiting_rel.discard(p.pid())
                    if cut:
                        return
                    r.send(pubcomp_packet(p.pid()))
                else:
                    raise AssertionError(f"{self.cid}: unexpected {p}")
            r.send(disconnect_packet())
            r.wait_closed(5)
        finally:
            if self.stop_ev.is_set():
                r.close()
            else:
                r.abort()  # RST, no DISCONNECT

    def run(self):
        try:
            while not self.stop_ev.is_set():
                try:
                    self._session()
                except (ConnectionClosed, OSError):
                    pass  # our own abort raced the broker; reconnect
                if self.stop_ev.is_set():
                    return
                self.reconnects += 1
                if not self.final.is_set():
                    self.stop_ev.wait(self.rnd.uniform(0.05, 0.8))  # offline for a while
        except BaseException as e:  # surfaced by the test
            self.error = e
            self.ready.set()

    def snapshot(self):
        with self.lock:
            return list(self.log)


def test_soak_ledger_balances(start_broker):
    """SOAK_SECS of traffic at QoS 0/1/2 from publishers on both shards to
    persistent subscribers on both shards that keep dropping their connections
    (RST) and reconnecting. Afterwards every QoS 1 message was received at
    least once (section 4.3.2), every QoS 2 message exactly once (4.3.3),
    every QoS 0 message at most once (4.3.1), each at its published QoS;
    per publisher the first-seen sequence numbers are increasing (ordered
    topics across reconnects [MQTT-4.6.0-6]); the session survives every
    reconnect [MQTT-3.2.2-2] and unacknowledged messages are resent
    [MQTT-4.4.0-1]; the broker's drop counters did not move (the
    mqueue is large enough), and its fd count and RSS are back near the
    baseline."""
    b, port = start_with_metrics(start_broker, ["--mqueue-len-max", "1000000", "--sys-interval-secs", "0",
                                                "--inflight-max", "32"])
    fds_baseline = fd_count(b)
    rss_baseline = rss_bytes(b)
    # Broker-made $SYS messages (alarms) get a subscriber, so that
    # messages_dropped_total{reason="no_subscribers"} only counts our traffic.
    sys_watch = MqttClient(b.host, b.port, b.client_id("ssys", 0))
    sys_watch.connect()
    sys_watch.subscribe("$SYS/#", 0)
    root = unique_topic_root("soak")
    shards = (0, 1)
    subs = [Subscriber(b, s, i * 2 + s, f"{root}/#", seed=100 + i * 2 + s)
            for i in range(SOAK_CLIENTS) for s in shards]
    for s in subs:
        s.start()
    for s in subs:
        assert s.ready.wait(10), f"{s.cid} never subscribed"
        assert s.error is None, s.error
    # A snapshot taken after every subscription exists (and after anything the
    # broker published itself at start) is the reference for the drop counters.
    # (uptime >= 3 s: the alarm list published once at second 1 is in the snapshot)
    drops_before = wait_metrics(port, lambda m: m.sum("shardmq_subscriptions") == len(subs) + 1
                                and m.get("shardmq_uptime_seconds") >= 3,
                                what="every subscription in /metrics")

    stop_pub = threading.Event()
    pubs = [Publisher(b, s, i * 2 + s, f"{root}/p{i * 2 + s}", stop_pub)
            for i in range(SOAK_CLIENTS) for s in shards]
    for p in pubs:
        p.client.connect()
    t0 = time.monotonic()
    for p in pubs:
        p.start()
    stop_pub.wait(SOAK_SECS)  # the soak itself
    stop_pub.set()
    for p in pubs:
        p.join(15)
        assert not p.is_alive(), f"{p.name} did not finish"
        assert p.error is None, f"{p.name}: {p.error!r}"
    duration = time.monotonic() - t0
    peak_rss = rss_bytes(b)

    # Final phase: every subscriber reconnects, stays, and drains.
    for s in subs:
        s.final.set()
    must = {(p.idx, seq) for p in pubs for q in (1, 2) for seq in p.sent[q]}
    deadline = time.monotonic() + DRAIN_BOUND
    for s in subs:
        while True:
            assert s.error is None, f"{s.cid}: {s.error!r}"
            missing = must - {(pub, seq) for pub, seq, _, _ in s.snapshot()}
            if not missing:
                break
            assert time.monotonic() < deadline, (
                f"{s.cid}: {len(missing)} QoS 1/2 messages never arrived, e.g. {sorted(missing)[:10]}")
            time.sleep(0.1)  # polling the subscriber's ledger
    # Anything still in flight (duplicates) arrives within a short idle window.
    last = [len(s.snapshot()) for s in subs]
    while True:
        time.sleep(0.5)  # idle window: the ledgers must stop growing
        now = [len(s.snapshot()) for s in subs]
        if now == last:
            break
        last = now
    for s in subs:
        s.stop_ev.set()
    for s in subs:
        s.join(10)
        assert s.error is None, f"{s.cid}: {s.error!r}"
    for p in pubs:
        p.client.disconnect()
    alarms = defaultdict(int)
    for m in sys_watch.drain():
        if m.topic.endswith("/alarms/activate"):
            alarms[json.loads(m.payload).get("name")] += 1
    alarms = dict(alarms)
    sys_watch.disconnect()

    # The ledger.
    published = {q: sum(len(p.sent[q]) for p in pubs) for q in (0, 1, 2)}
    qos_of = {(p.idx, seq): q for p in pubs for q in (0, 1, 2) for seq in p.sent[q]}
    received = {0: 0, 1: 0, 2: 0}
    dups = 0
    for s in subs:
        counts = defaultdict(int)
        last_seq: dict[int, int] = {}
        for pub, seq, qos, _dup in s.snapshot():
            key = (pub, seq)
            assert qos_of.get(key) == qos, f"{s.cid}: unknown or mislabelled message {key} q{qos}"
            counts[key] += 1
            if counts[key] == 1:
                assert seq > last_seq.get(pub, -1), (
                    f"{s.cid}: publisher {pub} seq {seq} first seen after seq {last_seq[pub]}")
                last_seq[pub] = seq
                received[qos] += 1
            else:
                dups += 1
        for key, q in qos_of.items():
            c = counts.get(key, 0)
            if q == 1:
                assert c >= 1, f"{s.cid}: QoS 1 message {key} lost"
            elif q == 2:
                assert c == 1, f"{s.cid}: QoS 2 message {key} received {c} times"
            else:
                assert c <= 1, f"{s.cid}: QoS 0 message {key} received {c} times"

    m = wait_metrics(port, lambda m: m.sum("shardmq_connections") == 0, timeout=5, what="all connections closed")
    for reason in ("mqueue_full", "queued_bytes_budget", "hook", "no_subscribers"):
        delta = m.sum("shardmq_messages_dropped_total", reason=reason) - drops_before.sum(
            "shardmq_messages_dropped_total", reason=reason)
        assert delta == 0, f"{delta:.0f} messages dropped ({reason})"
    fds = wait_fds_at_most(b, fds_baseline + 2)
    rss = rss_bytes(b)
    reconnects = sum(s.reconnects for s in subs)
    print(f"\nsoak: {duration:.1f}s, {len(pubs)} publishers -> {len(subs)} persistent subscribers; "
          f"published q0={published[0]} q1={published[1]} q2={published[2]}; "
          f"delivered (first copies) q0={received[0]} q1={received[1]} q2={received[2]}, "
          f"QoS 1 duplicates {dups}; reconnects {reconnects}; fds {fds_baseline}->{fds}; "
          f"RSS {rss_baseline / MIB:.1f}->{peak_rss / MIB:.1f}->{rss / MIB:.1f} MiB; alarms {alarms}")
    assert reconnects >= len(subs) * 2, "the subscribers hardly reconnected"
    assert received[1] == published[1] * len(subs) and received[2] == published[2] * len(subs)
    assert fds <= fds_baseline + 2, f"fd count {fds}, baseline {fds_baseline}"
    assert rss - rss_baseline < 48 * MIB, f"RSS {rss_baseline / MIB:.1f} -> {rss / MIB:.1f} MiB"
