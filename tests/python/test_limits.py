"""Resource limits: exceeding each one gets the answer MQTT 3.1.1 defines (or,
where MQTT defines none, a closed connection), the matching counter in
/metrics moves, and a healthy client on the *other* shard is undisturbed (it
was connected before the limit was hit and completes a QoS 1 round trip right
after).

Each test starts a private broker with the limit set low and ``--metrics``.
Counters reach /metrics with the shards' once-a-second snapshot, so metric
checks poll (bounded). Timing assertions are generous upper bounds only.

shardmq only: the flags and the metrics are shardmq's own.
"""

from __future__ import annotations

import threading
import time

import pytest

from conftest import BROKER_KIND
from hardening import Healthy, start_with_metrics, scrape, wait_metrics
from mqtt_helpers import (
    PUBACK,
    PUBLISH,
    SUBACK,
    UNSUBACK,
    RawClient,
    connect_packet,
    disconnect_packet,
    enc_rl,
    fnv1a_64,
    puback_packet,
    publish_packet,
    subscribe_packet,
    unique_topic_root,
    unsubscribe_packet,
)

pytestmark = [
    pytest.mark.skipif(BROKER_KIND != "shardmq", reason="shardmq's own limits and metrics"),
    pytest.mark.timeout(30),
]

LIMIT_HITS = "shardmq_limit_hits_total"
DROPPED = "shardmq_messages_dropped_total"
PROTOCOL_ERRORS = "shardmq_protocol_errors_total"


def raw_on_shard(b, shard: int, prefix: str, clean: bool = True, timeout: float = 5.0) -> RawClient:
    """A raw client connected (CONNACK 0) with a client id owned by ``shard``."""
    r = RawClient(b.host, b.port, timeout=timeout)
    sp, rc = r.connect(b.client_id(prefix, shard), clean=clean)
    assert rc == 0, f"CONNACK rc={rc}"
    return r


def raw_subscribe(r: RawClient, pid: int, filters, timeout: float = 5.0) -> list[int]:
    r.send(subscribe_packet(pid, filters))
    p, _ = r.recv_until(SUBACK, timeout)
    got_pid, codes = p.suback()
    assert got_pid == pid
    return codes


def topic_on_shard(root: str, shard: int, shards: int, tag: str = "r", start: int = 0) -> tuple[str, int]:
    """``(topic, next index)``: the first ``root/<tag><i>`` (i >= start) whose
    retained partition is ``shard`` (FNV-1a 64 of the topic modulo shards)."""
    i = start
    while True:
        t = f"{root}/{tag}{i}"
        if fnv1a_64(t.encode()) % shards == shard:
            return t, i + 1
        i += 1


def node_name_with_alarm_topic_on(shard: int, shards: int) -> str:
    """A ``--node-name`` whose retained ``$SYS/brokers/<node>/alarms/active``
    topic lives on ``shard``; the retained tests use the other shard so that
    the broker's own retained message cannot take one of the slots under test."""
    for i in range(1000):
        node = f"lim{i}"
        if fnv1a_64(f"$SYS/brokers/{node}/alarms/active".encode()) % shards == shard:
            return node
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------
# connections_max
# --------------------------------------------------------------------------

def test_connections_max_refused_with_connack_3(start_broker, raw_client):
    """Over --connections-max (4 node-wide = 2 per shard), a CONNECT owned by
    the full shard is answered CONNACK 0x03 "Server unavailable" with Session
    Present 0 and the connection is closed [MQTT-3.2.2-4] [MQTT-3.2.2-5];
    limit_hits{limit="connections_max"} moves on that shard only; a client on
    the other shard is unaffected; a freed slot can be used again."""
    b, port = start_with_metrics(start_broker, ["--connections-max", "4", "--sys-interval-secs", "0"])
    healthy = Healthy(b, shard=1)  # one of shard 1's two slots
    held = []
    for _ in range(2):
        r = raw_client(broker_=b)
        assert r.connect(b.client_id("cm", 0)) == (0, 0)
        held.append(r)
    over = raw_client(broker_=b)
    assert over.connect(b.client_id("cm", 0)) == (0, 3)
    assert over.wait_closed(5) == []
    # Still refused while the shard is full; the existing connections still work.
    over2 = raw_client(broker_=b)
    assert over2.connect(b.client_id("cm", 0)) == (0, 3)
    assert all(r.is_open() for r in held)

    m = wait_metrics(port, lambda m: m.get(LIMIT_HITS, shard=0, limit="connections_max") >= 2,
                     what="limit_hits{connections_max} on shard 0")
    assert m.get(LIMIT_HITS, shard=1, limit="connections_max") == 0
    assert m.get("shardmq_connects_refused_total", shard=0) >= 2
    healthy.roundtrip()

    # Freeing a slot lets the next client in (the close is noticed asynchronously).
    held[0].send(disconnect_packet())
    held[0].close()
    deadline = time.monotonic() + 5
    while True:
        r = raw_client(broker_=b)
        sp, rc = r.connect(b.client_id("cm", 0))
        if rc == 0:
            break
        assert rc == 3 and time.monotonic() < deadline, f"slot never freed (rc={rc})"
        time.sleep(0.05)  # pacing the retry; the condition is the CONNACK code
    healthy.roundtrip()
    healthy.close()


# --------------------------------------------------------------------------
# packet_size_max
# --------------------------------------------------------------------------

def test_packet_size_max_closes_connection(start_broker, raw_client, mqtt_client):
    """--packet-size-max 1024: a PUBLISH of exactly 1024 bytes (fixed header
    included) is accepted; one of 1025 bytes closes the connection without a
    PUBACK and is not delivered; a fixed header claiming 256 MB closes the
    connection at once, before any body arrives. MQTT 3.1.1 has no way to
    report this but closing [MQTT-4.8.0-1]; protocol_errors moves on the
    client's shard; a client on the other shard is unaffected."""
    b, port = start_with_metrics(start_broker, ["--packet-size-max", "1024", "--sys-interval-secs", "0"])
    root = unique_topic_root("psz")
    healthy = Healthy(b, shard=1)
    watcher = mqtt_client(shard=1, prefix="pw", broker_=b)
    watcher.subscribe(f"{root}/#", 1)
    before = scrape(port).get(PROTOCOL_ERRORS, shard=0)

    topic = f"{root}/x"
    fits = publish_packet(topic, b"a" * (1021 - 2 - len(topic) - 2), qos=1, pid=1)
    assert len(fits) == 1024
    too_big = publish_packet(topic, b"b" * (1022 - 2 - len(topic) - 2), qos=1, pid=2)
    assert len(too_big) == 1025

    r = raw_on_shard(b, 0, "ps")
    r.send(fits)
    ack, _ = r.recv_until(PUBACK)
    assert ack.pid() == 1
    m = watcher.get()
    assert m.payload == b"a" * (1021 - 2 - len(topic) - 2)
    r.send(too_big)
    got = r.wait_closed(5)
    assert not any(p.type == PUBACK for p in got), got

    huge = raw_on_shard(b, 0, "ps")
    huge.send(bytes([0x32]) + enc_rl(268_435_455) + b"\x00\x01x")  # claims ~256 MB
    t0 = time.monotonic()
    assert huge.wait_closed(5) == []
    assert time.monotonic() - t0 < 5

    watcher.expect_none(0.3)
    wait_metrics(port, lambda m: m.get(PROTOCOL_ERRORS, shard=0) >= before + 2,
                 what="protocol_errors on shard 0")
    healthy.roundtrip()
    healthy.close()


# --------------------------------------------------------------------------
# topic_length_max / topic_levels_max
# --------------------------------------------------------------------------

TOPIC_ARGS = ["--topic-length-max", "32", "--topic-levels-max", "4", "--sys-interval-secs", "0"]


@pytest.mark.parametrize("case", ["length", "levels"])
def test_topic_limits_on_publish_disconnect_publisher(start_broker, mqtt_client, case):
    """--topic-length-max 32 / --topic-levels-max 4: a PUBLISH whose topic is
    at the limits (32 bytes, 4 levels) is acknowledged and delivered; one over
    a limit is not delivered and its publisher is disconnected, which is one of
    the two answers MQTT allows for a refused PUBLISH [MQTT-3.3.5-2];
    limit_hits{limit="topic"} moves on the publisher's shard; a client on the
    other shard is unaffected."""
    b, port = start_with_metrics(start_broker, TOPIC_ARGS)
    healthy = Healthy(b, shard=1)
    watcher = mqtt_client(shard=1, prefix="tw", broker_=b)
    watcher.subscribe("#", 1)
    at_limit = "aaaaaaa/bbbbbbb/ccccccc/dddddddd"  # 32 bytes, 4 levels
    assert len(at_limit) == 32 and at_limit.count("/") == 3
    over = {"length": "a" * 33, "levels": "a/b/c/d/e"}[case]

    r = raw_on_shard(b, 0, "tp")
    r.send(publish_packet(at_limit, b"ok", qos=1, pid=1))
    assert r.recv_until(PUBACK)[0].pid() == 1
    m, _ = watcher.get_until(lambda m: m.topic == at_limit)
    assert m.payload == b"ok"

    r.send(publish_packet(over, b"refused", qos=1, pid=2))
    got = r.wait_closed(5)
    assert not any(p.type == PUBACK for p in got), got
    assert not [m for m in watcher.collect(0.3) if m.payload == b"refused"]

    wait_metrics(port, lambda m: m.get(LIMIT_HITS, shard=0, limit="topic") >= 1,
                 what='limit_hits{limit="topic"} on shard 0')
    assert scrape(port).get(LIMIT_HITS, shard=1, limit="topic") == 0
    healthy.roundtrip()
    healthy.close()


def test_topic_limits_on_subscribe_fail_only_that_filter(start_broker, raw_client):
    """--topic-length-max 32 / --topic-levels-max 4 on SUBSCRIBE: one SUBACK
    carries a code per filter, in order [MQTT-3.8.4-5]: the over-long and the
    too-deep filters get 0x80 (Failure, section 3.9.3), the others (one exactly
    at both limits) are granted; the connection stays open and the granted
    filters work; limit_hits{limit="topic"} moves; the other shard is
    unaffected."""
    b, port = start_with_metrics(start_broker, TOPIC_ARGS)
    healthy = Healthy(b, shard=1)
    root = unique_topic_root("ts")
    ok1 = f"{root}/ok/+"
    at_limit = "zz/+/" + "y" * 25 + "/#"  # exactly 32 bytes and 4 levels
    assert len(at_limit) == 32 and at_limit.count("/") == 3
    too_long = root + "/" + "l" * 40
    too_deep = f"{root}/a/b/c/d"

    r = raw_on_shard(b, 0, "tsub")
    codes = raw_subscribe(r, 7, [(ok1, 1), (too_long, 1), (too_deep, 0), (at_limit, 0)])
    assert codes == [1, 0x80, 0x80, 0]
    assert r.is_open()

    pub = raw_on_shard(b, 1, "tpub")
    pub.send(publish_packet(f"{root}/ok/1", b"granted", qos=1, pid=1))
    assert pub.recv_until(PUBACK)[0].pid() == 1
    p, _ = r.recv_until(PUBLISH)
    msg = p.publish()
    assert (msg.topic, msg.payload, msg.qos) == (f"{root}/ok/1", b"granted", 1)
    r.send(puback_packet(msg.pid))

    wait_metrics(port, lambda m: m.get(LIMIT_HITS, shard=0, limit="topic") >= 2,
                 what='limit_hits{limit="topic"} on shard 0')
    healthy.roundtrip()
    healthy.close()


# --------------------------------------------------------------------------
# subscriptions_max
# --------------------------------------------------------------------------

def test_subscriptions_max_fails_extra_filter(start_broker):
    """--subscriptions-max 3: the fourth distinct filter gets 0x80 while the
    others in the same SUBSCRIBE are still answered in order [MQTT-3.8.4-5];
    re-subscribing an existing filter replaces it and is not refused
    [MQTT-3.8.4-3]; after UNSUBSCRIBE a new filter fits again;
    limit_hits{limit="subscriptions_max"} moves; the other shard is
    unaffected."""
    b, port = start_with_metrics(start_broker, ["--subscriptions-max", "3", "--sys-interval-secs", "0"])
    healthy = Healthy(b, shard=1)
    root = unique_topic_root("sm")
    r = raw_on_shard(b, 0, "smax")
    assert raw_subscribe(r, 1, [(f"{root}/a", 0), (f"{root}/b", 0), (f"{root}/c", 0)]) == [0, 0, 0]
    assert raw_subscribe(r, 2, [(f"{root}/d", 1)]) == [0x80]
    assert raw_subscribe(r, 3, [(f"{root}/a", 1)]) == [1]
    assert raw_subscribe(r, 4, [(f"{root}/e", 0), (f"{root}/b", 2)]) == [0x80, 2]
    r.send(unsubscribe_packet(5, [f"{root}/c"]))
    assert r.recv_until(UNSUBACK)[0].pid() == 5
    assert raw_subscribe(r, 6, [(f"{root}/d", 1)]) == [1]
    assert r.is_open()

    wait_metrics(port, lambda m: m.get(LIMIT_HITS, shard=0, limit="subscriptions_max") >= 2,
                 what='limit_hits{limit="subscriptions_max"} on shard 0')
    assert scrape(port).get(LIMIT_HITS, shard=1, limit="subscriptions_max") == 0
    healthy.roundtrip()
    healthy.close()


# --------------------------------------------------------------------------
# retained_max / retained_bytes_max
# --------------------------------------------------------------------------

def _retained_seen(b, shard: int, flt: str, settle: float = 0.7) -> dict[str, bytes]:
    """What a fresh subscriber on ``shard`` receives as retained for ``flt``."""
    r = raw_on_shard(b, shard, "rq")
    try:
        r.send(subscribe_packet(1, [(flt, 0)]))
        # The server may send matching PUBLISHes before the SUBACK (section 3.8.4).
        suback, early = r.recv_until(SUBACK)
        assert suback.suback() == (1, [0])
        out = {}
        for p in early:
            assert p.type == PUBLISH, p
            msg = p.publish()
            assert msg.retain, f"live message on a retained-only topic: {msg}"
            out[msg.topic] = msg.payload
        deadline = time.monotonic() + settle
        while True:
            try:
                p = r.recv_packet(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                return out
            if p.type == PUBLISH:
                msg = p.publish()
                assert msg.retain, f"live message on a retained-only topic: {msg}"
                out[msg.topic] = msg.payload
    finally:
        r.send(disconnect_packet())
        r.close()


def test_retained_max_stores_no_more_but_still_delivers(start_broker, mqtt_client):
    """--retained-max 4 (2 per shard): of three retained messages whose topics
    live on the same shard, the third is still delivered live to subscribers
    but not stored; replacing a stored topic is still allowed (the count does
    not grow); the other shard keeps its own share; a new subscriber receives
    exactly what was stored [MQTT-3.3.1-5]; limit_hits{limit="retained"} moves
    on that shard only."""
    node = node_name_with_alarm_topic_on(1, 2)
    b, port = start_with_metrics(start_broker, ["--retained-max", "4", "--sys-interval-secs", "0",
                                                "--node-name", node])
    healthy = Healthy(b, shard=1)
    root = unique_topic_root("rm")
    t0, i = topic_on_shard(root, 0, 2)
    t1, i = topic_on_shard(root, 0, 2, start=i)
    t2, i = topic_on_shard(root, 0, 2, start=i)
    u0, _ = topic_on_shard(root, 1, 2)
    live = mqtt_client(shard=1, prefix="rlive", broker_=b)
    live.subscribe(f"{root}/#", 1)
    pub = mqtt_client(shard=0, prefix="rpub", broker_=b)
    for t, payload in [(t0, b"v0"), (t1, b"v1"), (t2, b"v2-over"), (t0, b"v0-new"), (u0, b"u0")]:
        pub.publish(t, payload, qos=1, retain=True)
    got = [(m.topic, m.payload) for m in live.expect(5)]
    assert got == [(t0, b"v0"), (t1, b"v1"), (t2, b"v2-over"), (t0, b"v0-new"), (u0, b"u0")]

    assert _retained_seen(b, 1, f"{root}/#") == {t0: b"v0-new", t1: b"v1", u0: b"u0"}
    m = wait_metrics(port, lambda m: m.get(LIMIT_HITS, shard=0, limit="retained") >= 1,
                     what='limit_hits{limit="retained"} on shard 0')
    assert m.get(LIMIT_HITS, shard=1, limit="retained") == 0
    assert m.get(LIMIT_HITS, shard=0, limit="retained") == 1
    wait_metrics(port, lambda m: m.get("shardmq_retained_messages", shard=0) == 2,
                 what="retained_messages on shard 0")
    healthy.roundtrip()
    healthy.close()


def test_retained_bytes_max_stores_no_more_but_still_delivers(start_broker, mqtt_client):
    """--retained-bytes-max 2048 (1024 per shard): a retained message that
    would take its shard past its share is delivered live but not stored, and
    limit_hits{limit="retained"} moves; a smaller one still fits."""
    node = node_name_with_alarm_topic_on(1, 2)
    b, port = start_with_metrics(start_broker, ["--retained-bytes-max", "2048", "--sys-interval-secs", "0",
                                                "--node-name", node])
    healthy = Healthy(b, shard=1)
    root = unique_topic_root("rb")
    t0, i = topic_on_shard(root, 0, 2)
    t1, i = topic_on_shard(root, 0, 2, start=i)
    t2, i = topic_on_shard(root, 0, 2, start=i)
    live = mqtt_client(shard=1, prefix="rblive", broker_=b)
    live.subscribe(f"{root}/#", 1)
    pub = mqtt_client(shard=0, prefix="rbpub", broker_=b)
    big = b"B" * 600
    for t, payload in [(t0, big), (t1, big), (t2, b"small")]:
        pub.publish(t, payload, qos=1, retain=True)
    assert [(m.topic, m.payload) for m in live.expect(3)] == [(t0, big), (t1, big), (t2, b"small")]
    assert _retained_seen(b, 1, f"{root}/#") == {t0: big, t2: b"small"}
    wait_metrics(port, lambda m: m.get(LIMIT_HITS, shard=0, limit="retained") == 1,
                 what='limit_hits{limit="retained"} on shard 0')
    healthy.roundtrip()
    healthy.close()


def test_retained_max_is_not_consumed_by_sys_topics(start_broker, mqtt_client):
    """--retained-max 2 (1 per shard) with $SYS on: the broker's own retained
    $SYS publications must not take the clients' retained slots (they are
    excluded from the retained count the broker reports), so no retained limit
    is hit before any client retains anything and a client's first retained
    message on either shard is stored."""
    b, port = start_with_metrics(start_broker, ["--retained-max", "2", "--sys-interval-secs", "1",
                                                "--node-name", "sysr"])
    sys_sub = mqtt_client(shard=0, prefix="sysw", broker_=b)
    sys_sub.subscribe("$SYS/brokers/sysr/version", 0)
    sys_sub.get(timeout=5)  # the first $SYS round has been published
    m = wait_metrics(port, lambda m: m.get("shardmq_uptime_seconds") >= 1, what="a snapshot")
    assert m.sum("shardmq_retained_messages") == 0
    root = unique_topic_root("rsys")
    t0, _ = topic_on_shard(root, 0, 2)
    u0, _ = topic_on_shard(root, 1, 2)
    pub = mqtt_client(shard=0, prefix="rspub", broker_=b)
    pub.publish(t0, b"mine0", qos=1, retain=True)
    pub.publish(u0, b"mine1", qos=1, retain=True)
    assert _retained_seen(b, 1, f"{root}/#") == {t0: b"mine0", u0: b"mine1"}


# --------------------------------------------------------------------------
# publish_rate_max / publish_bytes_rate_max
# --------------------------------------------------------------------------

@pytest.mark.parametrize("flag,value,payload_len", [
    ("--publish-rate-max", "50", 10),
    ("--publish-bytes-rate-max", "50000", 1000),
], ids=["messages", "bytes"])
def test_publish_rate_max_pauses_without_dropping(start_broker, mqtt_client, flag, value, payload_len):
    """Over a per-client publish rate (--publish-rate-max 50 msg/s, or
    --publish-bytes-rate-max 50000 B/s) the broker stops reading that client
    for a while instead of dropping anything: all 150 messages (3 s of budget)
    sent in one burst arrive, in order [MQTT-4.6.0-6];
    limit_hits{limit="publish_rate"} moves on the publisher's shard; a client
    on the other shard completes a round trip while the publisher is still
    throttled."""
    b, port = start_with_metrics(start_broker, [flag, value, "--sys-interval-secs", "0"])
    healthy = Healthy(b, shard=1)
    root = unique_topic_root("pr")
    sub = mqtt_client(shard=1, prefix="prs", broker_=b)
    sub.subscribe(f"{root}/#", 0)
    r = raw_on_shard(b, 0, "prp")
    n = 150
    burst = b"".join(publish_packet(f"{root}/x", f"{i:06d}".encode().ljust(payload_len, b"."))
                     for i in range(n))
    t0 = time.monotonic()
    r.send(burst)
    assert healthy.roundtrip() < 5
    got = sub.expect(n, timeout=20)
    assert [int(m.payload[:6]) for m in got] == list(range(n))
    assert time.monotonic() - t0 < 20
    assert r.is_open()
    m = wait_metrics(port, lambda m: m.get(LIMIT_HITS, shard=0, limit="publish_rate") > 0,
                     what='limit_hits{limit="publish_rate"} on shard 0')
    assert m.get(LIMIT_HITS, shard=1, limit="publish_rate") == 0
    assert m.sum(DROPPED, reason="mqueue_full") == m.sum(DROPPED, reason="queued_bytes_budget") == 0
    healthy.roundtrip()
    healthy.close()


# --------------------------------------------------------------------------
# accept_rate_max
# --------------------------------------------------------------------------

def test_accept_rate_max_delays_but_accepts_all(start_broker):
    """--accept-rate-max 10: 20 connections opened at once are all accepted
    eventually (left in the listen backlog, not refused): every CONNECT gets
    CONNACK 0 within a generous bound; limit_hits{limit="accept_rate"} moves;
    an already connected client keeps working meanwhile."""
    b, port = start_with_metrics(start_broker, ["--accept-rate-max", "10", "--sys-interval-secs", "0"])
    time.sleep(1.1)  # let the accept buckets refill after the readiness probes (one second's worth)
    healthy = [Healthy(b, shard=0), Healthy(b, shard=1)]
    results: list = [None] * 20
    clients: list = [None] * 20

    def one(i):
        try:
            r = RawClient(b.host, b.port, timeout=15)
            clients[i] = r
            results[i] = r.connect(b.client_id("acc", i % 2), timeout=15)
        except Exception as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for h in healthy:
        assert h.roundtrip() < 5
    for t in threads:
        t.join(20)
    elapsed = time.monotonic() - t0
    try:
        assert results == [(0, 0)] * 20, results
        assert elapsed < 15
        wait_metrics(port, lambda m: m.sum(LIMIT_HITS, limit="accept_rate") > 0,
                     what='limit_hits{limit="accept_rate"}')
        for h in healthy:
            h.roundtrip()
            h.close()
    finally:
        for r in clients:
            if r is not None:
                r.close()


# --------------------------------------------------------------------------
# connect timeout
# --------------------------------------------------------------------------

def test_connect_timeout_closes_silent_sockets(start_broker):
    """--connect-timeout-secs 1: a socket that sends nothing, and one that
    sends half a CONNECT, are closed by the broker (within a generous 5 s)
    without any answer (MQTT 3.1.1 section 3.1: no CONNECT "within a
    reasonable amount of time" -> close); a client
    that did CONNECT stays connected past the timeout; both are counted in
    limit_hits{limit="connect_timeout"}; clients on both shards are
    unaffected."""
    b, port = start_with_metrics(start_broker, ["--connect-timeout-secs", "1", "--sys-interval-secs", "0"])
    healthy = [Healthy(b, shard=0), Healthy(b, shard=1)]
    silent = RawClient(b.host, b.port)
    half = RawClient(b.host, b.port)
    half.send(connect_packet(b.client_id("half", 0))[:7])
    good = raw_on_shard(b, 0, "good")
    t0 = time.monotonic()
    try:
        assert silent.wait_closed(5) == []
        assert half.wait_closed(5) == []
        assert time.monotonic() - t0 < 5
        good.expect_no_packet(max(0.0, 1.5 - (time.monotonic() - t0)))
        assert good.is_open()
        wait_metrics(port, lambda m: m.sum(LIMIT_HITS, limit="connect_timeout") >= 2,
                     what='limit_hits{limit="connect_timeout"} >= 2')
        for h in healthy:
            h.roundtrip()
            h.close()
    finally:
        for r in (silent, half, good):
            r.close()


# --------------------------------------------------------------------------
# queued_bytes_max
# --------------------------------------------------------------------------

def test_queued_bytes_max_drops_and_counts(start_broker):
    """--queued-bytes-max 65536 (32 KiB per shard), --mqueue-len-max 10000:
    offline persistent subscribers on both shards [MQTT-3.1.2-4] queue
    messages only while their shard's budget lasts; beyond it, messages are
    dropped and counted: on return each gets fewer messages than were
    published (in order), and messages_dropped_total{reason="queued_bytes_budget"}
    equals the shortfall on each shard and summed over shards; online clients
    are unaffected while the budget is spent."""
    b, port = start_with_metrics(start_broker, ["--queued-bytes-max", "65536", "--mqueue-len-max", "10000",
                                                "--sys-interval-secs", "0"])
    healthy = [Healthy(b, shard=0), Healthy(b, shard=1)]
    root = unique_topic_root("qb")
    ids = {s: b.client_id("qbs", s) for s in (0, 1)}
    for s, cid in ids.items():
        r = RawClient(b.host, b.port)
        assert r.connect(cid, clean=False) == (0, 0)
        assert raw_subscribe(r, 1, [(f"{root}/#", 1)]) == [1]
        r.send(disconnect_packet())
        r.wait_closed(5)
        r.close()

    n = 200
    pub = raw_on_shard(b, 0, "qbp")
    for i in range(n):
        pub.send(publish_packet(f"{root}/m", f"{i:05d}".encode() + b"q" * 1000, qos=1, pid=i + 1))
    acked = 0
    while acked < n:
        p = pub.recv_packet()
        assert p.type == PUBACK
        acked += 1
    m = wait_metrics(port, lambda m: all(m.get(DROPPED, shard=s, reason="queued_bytes_budget") > 0
                                         for s in (0, 1)),
                     what="budget drops on both shards")
    assert all(0 < m.get("shardmq_queued_bytes", shard=s) <= 65536 // 2 + 2048 for s in (0, 1)), m.text
    for h in healthy:  # the spent budget does not touch online clients
        h.roundtrip()

    received = {}
    for s, cid in ids.items():
        r = RawClient(b.host, b.port)
        assert r.connect(cid, clean=False) == (1, 0)
        seqs = []
        while True:
            try:
                p = r.recv_packet(1.0)
            except TimeoutError:
                break
            assert p.type == PUBLISH, p
            msg = p.publish()
            seqs.append(int(msg.payload[:5]))
            r.send(puback_packet(msg.pid))
        r.send(disconnect_packet())
        r.close()
        assert 0 < len(seqs) < n, f"shard {s}: got {len(seqs)} of {n}"
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
        received[s] = len(seqs)

    shortfall = {s: n - received[s] for s in (0, 1)}
    m = wait_metrics(port, lambda m: all(m.get(DROPPED, shard=s, reason="queued_bytes_budget") == shortfall[s]
                                         for s in (0, 1)),
                     what=f"budget drops == shortfall {shortfall}")
    assert m.sum(DROPPED, reason="queued_bytes_budget") == sum(shortfall.values())
    assert m.sum(DROPPED, reason="mqueue_full") == 0
    for h in healthy:
        h.roundtrip()
        h.close()


def _offline_round(b, cid: str, pub: RawClient, topic: str, n: int, first_pid: int) -> list[int]:
    """Publishes ``n`` QoS 1 messages while ``cid``'s persistent session is
    offline, then reconnects it and returns the sequence numbers it drains."""
    for i in range(n):
        pub.send(publish_packet(topic, f"{i:05d}".encode() + b"q" * 1000, qos=1, pid=first_pid + i))
    for _ in range(n):
        assert pub.recv_packet().type == PUBACK
    r = RawClient(b.host, b.port)
    try:
        assert r.connect(cid, clean=False) == (1, 0)
        seqs = []
        while True:
            try:
                p = r.recv_packet(1.0)
            except TimeoutError:
                break
            msg = p.publish()
            seqs.append(int(msg.payload[:5]))
            r.send(puback_packet(msg.pid))
        r.send(disconnect_packet())
        r.wait_closed(5)
        return seqs
    finally:
        r.close()


def test_queued_bytes_budget_is_released_when_queue_drains(start_broker):
    """--queued-bytes-max 65536 (32 KiB per shard): an offline persistent
    session queues 20 messages (~20 KiB, within the share), reconnects and
    drains them; a second offline period of 20 messages must fit again (the
    drained bytes were given back): nothing is dropped, every message arrives,
    and shardmq_queued_bytes is 0 once the queue is drained."""
    b, port = start_with_metrics(start_broker, ["--queued-bytes-max", "65536", "--sys-interval-secs", "0"])
    root = unique_topic_root("qr")
    cid = b.client_id("qrs", 0)
    r = RawClient(b.host, b.port)
    assert r.connect(cid, clean=False) == (0, 0)
    assert raw_subscribe(r, 1, [(f"{root}/#", 1)]) == [1]
    r.send(disconnect_packet())
    r.wait_closed(5)
    r.close()
    pub = raw_on_shard(b, 1, "qrp")
    first = _offline_round(b, cid, pub, f"{root}/m", 20, 1)
    second = _offline_round(b, cid, pub, f"{root}/m", 20, 101)
    assert (first, second) == (list(range(20)), list(range(20)))
    wait_metrics(port, lambda m: m.get("shardmq_queued_bytes", shard=0) == 0
                 and m.sum(DROPPED, reason="queued_bytes_budget") == 0, timeout=4,
                 what="queued_bytes back to 0, no budget drops")
