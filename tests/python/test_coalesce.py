"""Receive coalescing (``--recv-coalesce-us``): a QoS 0 flood of one packet per
write turns it on, nothing is lost or reordered while it is on, a trickle turns it
off again, and QoS 1 publishers never turn it on. Publishers and the subscriber are
on different shards, so the data ring is crossed while arrivals are held.

CPU figures are measured by ``make bench`` (external generators), not here."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import BROKER_KIND
from hardening import start_with_metrics, wait_metrics
from mqtt_helpers import RawClient, RawDrain, client_id_on_shard, publish_packet, subscribe_packet

pytestmark = pytest.mark.skipif(BROKER_KIND != "shardmq", reason="shardmq's own metrics")

SHARDS = 2
PUBLISHERS = 6


def drain_all(drain: RawDrain, n: int, timeout: float) -> list[bytes]:
    """Waits until the subscriber has ``n`` messages, then stops it; every payload."""
    deadline = time.monotonic() + timeout
    while drain.total < n and time.monotonic() < deadline and drain.error is None:
        time.sleep(0.05)  # pacing; the count is re-checked each time
    drain.stop.set()
    drain.join(5)
    assert drain.error is None, f"subscriber failed: {drain.error!r}"
    return [p for payloads in drain.got.values() for p in payloads]


def connect_all(port: int, root: str, qos: int):
    sub = RawClient("127.0.0.1", port)
    assert sub.connect(client_id_on_shard("coal-sub", 0, SHARDS))[1] == 0
    sub.send(subscribe_packet(1, [(f"{root}/#", qos)]))
    sub.recv_until(9)
    pubs = []
    for i in range(PUBLISHERS):
        p = RawClient("127.0.0.1", port)
        assert p.connect(client_id_on_shard(f"coal-pub{i}", 1, SHARDS))[1] == 0
        pubs.append(p)
    return sub, pubs


def flood(pubs, root: str, seconds: float, qos: int) -> list[int]:
    """Round robin over the publishers, one PUBLISH per send, for `seconds`."""
    sent = [0] * len(pubs)
    pid = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for i, p in enumerate(pubs):
            payload = f"{i}:{sent[i]}".encode()
            if qos:
                pid = pid % 65535 + 1
            p.send(publish_packet(f"{root}/{i}", payload, qos=qos, pid=pid if qos else None))
            sent[i] += 1
    return sent


def check_complete_and_in_order(got: list[bytes], sent: list[int]) -> None:
    seen = [[] for _ in sent]
    for payload in got:
        i, n = payload.decode().split(":")
        seen[int(i)].append(int(n))
    for i, n in enumerate(sent):
        assert seen[i] == list(range(n)), \
            f"publisher {i}: {len(seen[i])} of {n} received, or out of order [MQTT-4.6.0-6]"


def test_a_qos0_flood_turns_coalescing_on_loses_nothing_and_a_trickle_turns_it_off(
        start_broker, topic_root):
    # A 10 ms wait: a connection counts as flooding below 2.5 ms between arrivals,
    # which a debug build on a loaded machine still sees (the default's 0.5 ms it
    # may not: a slow shard reads each connection less often).
    broker, port = start_with_metrics(start_broker, ["--recv-coalesce-us", "10000"], cores=SHARDS)
    sub, pubs = connect_all(broker.port, topic_root, qos=0)
    drain = RawDrain(sub)
    sent = flood(pubs, topic_root, seconds=2.0, qos=0)
    check_complete_and_in_order(drain_all(drain, sum(sent), timeout=30), sent)
    m = wait_metrics(port, lambda m: m.sum("shardmq_socket_coalesce_on_total") >= 1,
                     what="coalescing turned on by the flood")
    assert m.get("shardmq_socket_coalesce_on_total", shard=1) >= 1, "the publishers' shard"
    assert m.sum("shardmq_socket_coalesced_waits_total") >= 1

    # A trickle: a message every 50 ms is far slower than half a wait per connection.
    for n in range(20):
        pubs[0].send(publish_packet(f"{topic_root}/trickle", str(n).encode()))
        time.sleep(0.05)  # the trickle's pace, not a wait for a condition
    wait_metrics(port, lambda m: m.sum("shardmq_socket_coalescing") == 0,
                 what="coalescing off after the flood")
    for c in pubs + [sub]:
        c.close()


def test_qos1_publishers_never_turn_coalescing_on(start_broker, topic_root):
    # The same 10 ms wait as above, so that only the QoS keeps it off.
    broker, port = start_with_metrics(start_broker, ["--recv-coalesce-us", "10000"], cores=SHARDS)
    sub, pubs = connect_all(broker.port, topic_root, qos=1)
    drain = RawDrain(sub)
    acks = [threading.Thread(target=_swallow_pubacks, args=(p,), daemon=True) for p in pubs]
    for t in acks:
        t.start()
    sent = flood(pubs, topic_root, seconds=1.5, qos=1)
    check_complete_and_in_order(drain_all(drain, sum(sent), timeout=30), sent)
    m = wait_metrics(port, lambda m: m.sum("shardmq_messages_received_total", qos="1") >= sum(sent),
                     what="the flood's figures reported")
    assert m.sum("shardmq_socket_coalesce_on_total") == 0, \
        "a QoS 1 publisher waits for its PUBACKs: holding its arrivals would slow it"
    for c in pubs + [sub]:
        c.close()


def _swallow_pubacks(p: RawClient) -> None:
    """Reads a publisher's PUBACKs so its socket never fills; ends when it closes."""
    try:
        while True:
            p.recv_packet(timeout=10)
    except Exception:
        return
