"""Protocol violations and malformed input, sent as raw bytes.

After every bad connection the test asserts that the broker is still healthy:
fresh paho clients on shard 0 and shard 1 round-trip a QoS 1 message
(``roundtrip_check``). The broker fixture additionally fails the test if the
broker process died or printed ``panicked``.
"""

import random
import struct

import pytest

from mqtt_helpers import (
    IS_MOSQUITTO,
    CONNACK,
    PUBACK,
    PUBLISH,
    SUBACK,
    connect_packet,
    enc_str,
    packet,
    publish_packet,
    roundtrip_check,
    subscribe_packet,
)

pytestmark = pytest.mark.timeout(30)

T = "perr"  # topic root used by the bad packets (a subscriber watches T/#)


def _publish_raw_topic(topic: bytes, qos=0, pid=None) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if pid is not None:
        body += struct.pack("!H", pid)
    return packet(0x30 | (qos << 1), body + b"payload")


_MOSQ_LAX_PINGREQ = pytest.mark.skipif(
    IS_MOSQUITTO, reason="mosquitto 2.0.11 answers a PINGREQ with non-zero flags or a non-empty "
    "body with PINGRESP instead of closing the connection")

# (id, clause, bytes) -- sent after a successful CONNECT; the server must
# close the connection without answering the offending packet.
AFTER_CONNECT = [
    ("subscribe-flags-0x80", "[MQTT-3.8.1-1] [MQTT-2.2.2-2]", subscribe_packet(1, [(f"{T}/a", 0)], flags=0x0)),
    ("subscribe-flags-0x83", "[MQTT-3.8.1-1] [MQTT-2.2.2-2]", subscribe_packet(1, [(f"{T}/a", 0)], flags=0x3)),
    ("unsubscribe-flags-0xa0", "[MQTT-3.10.1-1] [MQTT-2.2.2-2]", packet(0xA0, b"\x00\x01" + enc_str(f"{T}/a"))),
    ("pubrel-flags-0x60", "[MQTT-3.6.1-1] [MQTT-2.2.2-2]", packet(0x60, b"\x00\x01")),
    pytest.param("pingreq-flags-0xc1", "[MQTT-2.2.2-2]", b"\xc1\x00", marks=_MOSQ_LAX_PINGREQ),
    ("publish-qos3", "[MQTT-3.3.1-4]", publish_packet(f"{T}/q3", b"x", flags=0x06)),
    ("publish-qos3-with-pid", "[MQTT-3.3.1-4]", publish_packet(f"{T}/q3", b"x", flags=0x06, pid=5)),
    ("publish-qos1-pid0", "[MQTT-2.3.1-1]", publish_packet(f"{T}/pid0", b"x", qos=1, pid=0)),
    ("publish-qos2-pid0", "[MQTT-2.3.1-1]", publish_packet(f"{T}/pid0", b"x", qos=2, pid=0)),
    ("publish-topic-invalid-utf8", "[MQTT-1.5.3-1]", _publish_raw_topic(T.encode() + b"/\xff\xfe")),
    ("publish-topic-surrogate", "[MQTT-1.5.3-1]", _publish_raw_topic(T.encode() + b"/\xed\xa0\x80")),
    ("publish-topic-overlong-utf8", "[MQTT-1.5.3-1]", _publish_raw_topic(T.encode() + b"/\xc0\xaf")),
    ("publish-topic-nul", "[MQTT-1.5.3-2]", _publish_raw_topic(T.encode() + b"/a\x00b")),
    ("publish-topic-plus", "[MQTT-3.3.2-2]", publish_packet(f"{T}/+/x", b"x")),
    ("publish-topic-hash", "[MQTT-3.3.2-2]", publish_packet(f"{T}/#", b"x")),
    ("publish-topic-empty", "[MQTT-4.7.3-1]", publish_packet("", b"x")),
    ("publish-topic-longer-than-packet", "[MQTT-4.8.0-1] malformed", packet(0x30, b"\x00\x40" + T.encode())),
    ("publish-qos1-no-room-for-pid", "[MQTT-4.8.0-1] malformed", packet(0x32, enc_str(T) + b"\x00")),
    ("subscribe-no-filters", "[MQTT-3.8.3-3]", packet(0x82, b"\x00\x01")),
    ("subscribe-qos3", "[MQTT-3.8.3-4]", subscribe_packet(1, [(f"{T}/a", 3)])),
    ("subscribe-reserved-option-bits", "[MQTT-3.8.3-4]", subscribe_packet(1, [(f"{T}/a", 0x04)])),
    ("subscribe-missing-qos-byte", "[MQTT-4.8.0-1] malformed", packet(0x82, b"\x00\x01" + enc_str(f"{T}/a"))),
    ("subscribe-filter-invalid-utf8", "[MQTT-1.5.3-1]",
     packet(0x82, b"\x00\x01" + struct.pack("!H", 3) + b"a\xff\xfe" + b"\x00")),
    ("subscribe-filter-nul", "[MQTT-1.5.3-2]", subscribe_packet(1, [(f"{T}/a\x00", 0)])),
    ("unsubscribe-no-filters", "[MQTT-3.10.3-2]", packet(0xA2, b"\x00\x01")),
    ("reserved-type-0", "[MQTT-2.2.1 reserved] [MQTT-4.8.0-1]", b"\x00\x00"),
    ("reserved-type-15", "[MQTT-2.2.1 reserved] [MQTT-4.8.0-1]", b"\xf0\x00"),
    pytest.param("pingreq-nonzero-length", "[MQTT-4.8.0-1] malformed", b"\xc0\x01\x00",
                 marks=_MOSQ_LAX_PINGREQ),
    ("remaining-length-5-bytes", "[MQTT-2.2.3 max 4 bytes] [MQTT-4.8.0-1]", b"\x30\xff\xff\xff\xff\x7f"),
    ("remaining-length-5-bytes-subscribe", "[MQTT-2.2.3 max 4 bytes] [MQTT-4.8.0-1]", b"\x82\x80\x80\x80\x80\x01"),
]


@pytest.mark.parametrize("shard", [0, 1])
@pytest.mark.parametrize("name,clause,data", AFTER_CONNECT, ids=[c.values[0] if hasattr(c, "values") else c[0] for c in AFTER_CONNECT])
def test_violation_after_connect_closes(broker, raw_client, mqtt_client, shard, name, clause, data):
    """Each protocol violation after CONNECT makes the server close the
    connection without answering it (no SUBACK/PUBACK/...), without
    delivering anything, and without harming other clients. Clause: see the
    case table (e.g. [MQTT-3.8.1-1], [MQTT-3.3.1-4], [MQTT-2.3.1-1],
    [MQTT-1.5.3-1], [MQTT-1.5.3-2], [MQTT-3.3.2-2], [MQTT-3.8.3-3])."""
    watcher = mqtt_client(shard=1 - shard, prefix="watch")
    assert watcher.subscribe(f"{T}/#", 0) == [0]
    raw = raw_client()
    assert raw.connect(broker.client_id("bad", shard)) == (0, 0)
    raw.send(data)
    got = raw.wait_closed()
    assert got == [], f"{clause}: broker answered the offending packet: {got}"
    roundtrip_check(broker)
    leaked = watcher.drain()
    assert leaked == [], f"{clause}: invalid PUBLISH was delivered: {leaked}"


# CONNECT-level violations: close, optionally after a CONNACK with a non-zero code.
BAD_CONNECTS = [
    ("reserved-flag-set", "[MQTT-3.1.2-3]", connect_packet("bc1", flags=0x03)),
    ("will-qos-3", "[MQTT-3.1.2-14]", connect_packet("bc2", flags=0x02 | 0x04 | 0x18)),
    ("will-qos-without-will-flag", "[MQTT-3.1.2-13]", connect_packet("bc3", flags=0x02 | 0x08)),
    ("will-retain-without-will-flag", "[MQTT-3.1.2-15]", connect_packet("bc4", flags=0x02 | 0x20)),
    ("password-without-username", "[MQTT-3.1.2-22]",
     packet(0x10, enc_str("MQTT") + bytes([4, 0x42]) + b"\x00\x3c" + enc_str("bc5") + enc_str("pw"))),
    ("client-id-invalid-utf8", "[MQTT-1.5.3-1]",
     packet(0x10, enc_str("MQTT") + bytes([4, 0x02]) + b"\x00\x3c" + b"\x00\x02\xff\xfe")),
    ("will-topic-wildcard", "[MQTT-3.1.2-9] [MQTT-3.3.2-2]",
     connect_packet("bc6", will=(f"{T}/+", b"w", 0, False))),
    ("missing-client-id", "[MQTT-3.1.3-3] malformed",
     packet(0x10, enc_str("MQTT") + bytes([4, 0x02]) + b"\x00\x3c")),
    ("flags-announce-will-but-payload-ends", "[MQTT-3.1.2-9] malformed",
     packet(0x10, enc_str("MQTT") + bytes([4, 0x06]) + b"\x00\x3c" + enc_str("bc7"))),
    ("remaining-length-5-bytes", "[MQTT-2.2.3 max 4 bytes] [MQTT-4.8.0-1]", b"\x10\xff\xff\xff\xff\x7f"),
]


@pytest.mark.parametrize("name,clause,data", BAD_CONNECTS, ids=[c[0] for c in BAD_CONNECTS])
def test_bad_connect_closes(broker, raw_client, name, clause, data):
    """An invalid CONNECT is refused: the connection is closed, at most after a
    CONNACK with a non-zero return code. Clause: see the case table (e.g.
    [MQTT-3.1.2-3], [MQTT-3.1.2-13], [MQTT-3.1.2-14], [MQTT-3.1.2-22])."""
    raw = raw_client()
    raw.send(data)
    got = raw.wait_closed()
    assert len(got) <= 1, f"{clause}: {got}"
    for p in got:
        assert p.type == CONNACK and p.connack()[1] != 0, f"{clause}: CONNECT accepted: {p}"
    roundtrip_check(broker)


@pytest.mark.parametrize("first_byte,after_connect", [
    pytest.param(0x10, False, id="connect"),
    pytest.param(0x30, False, id="publish-before-connect"),
    pytest.param(0x30, True, id="publish"),
    pytest.param(0x82, True, id="subscribe"),
])
def test_remaining_length_256mb_then_close(broker, raw_client, first_byte, after_connect):
    """[MQTT-2.2.3] A fixed header claiming the maximum remaining length
    (268,435,455 bytes), followed by a few KB and then a close, must not hurt
    the broker (no crash, no stall; a broker may also refuse early)."""
    raw = raw_client()
    if after_connect:
        assert raw.connect(broker.client_id("huge", 1)) == (0, 0)
    raw.send(bytes([first_byte]) + b"\xff\xff\xff\x7f")
    try:
        raw.send(b"\x00\x04" + T.encode() + b"A" * 8192)
    except OSError:
        pass  # already refused and closed
    # ARCHITECTURE.md: the maximum packet size is checked from the fixed header,
    # before the body is buffered, so the refusal does not wait for 256 MB.
    assert raw.wait_closed() == []
    raw.close()
    roundtrip_check(broker)


def test_many_huge_headers_held_open(broker, raw_client):
    """[MQTT-2.2.3] Several connections each announcing a 256 MB PUBLISH and
    then stalling must not block other clients (no head-of-line blocking on
    any shard)."""
    for i in range(6):
        raw = raw_client()
        assert raw.connect(broker.client_id("stall", i % 2)) == (0, 0)
        raw.send(b"\x30\xff\xff\xff\x7f" + b"\x00\x04perr" + b"x" * 1024)
    roundtrip_check(broker)


TRUNCATED = [
    ("connect-half", False, connect_packet("trunc1")[:9]),
    ("connect-header-only", False, b"\x10"),
    ("connect-rl-only", False, b"\x10\x20"),
    ("publish-header-only", True, b"\x30"),
    ("publish-half-rl", True, b"\x30\x80"),
    ("publish-body-cut", True, publish_packet(f"{T}/cut", b"y" * 100, qos=1, pid=3)[:20]),
    ("subscribe-body-cut", True, subscribe_packet(4, [(f"{T}/cut", 1)])[:6]),
]


@pytest.mark.parametrize("name,after_connect,data", TRUNCATED, ids=[c[0] for c in TRUNCATED])
def test_truncated_packet_then_close(broker, raw_client, mqtt_client, name, after_connect, data):
    """[MQTT-4.8.0-1] A packet cut short by the client closing the connection
    is discarded: nothing is answered or delivered, the broker stays healthy."""
    watcher = mqtt_client(shard=0, prefix="watch")
    assert watcher.subscribe(f"{T}/#", 0) == [0]
    raw = raw_client()
    if after_connect:
        assert raw.connect(broker.client_id("trunc", 1)) == (0, 0)
    raw.send(data)
    raw.expect_no_packet(0.2)
    raw.close()
    roundtrip_check(broker)
    assert watcher.drain() == []


@pytest.mark.parametrize("after_connect", [False, True], ids=["before-connect", "after-connect"])
@pytest.mark.parametrize("seed", range(6))
def test_random_garbage(broker, raw_client, after_connect, seed):
    """[MQTT-4.8.0-1] [MQTT-3.1.0-1] Random bytes (a 4 KB burst, not starting
    with a CONNECT header) must never crash or stall the broker, and the
    broker closes the connection at once: with these seeds the bytes break
    a rule (or announce a packet over the size limit) within the burst."""
    rnd = random.Random(seed)
    data = bytearray(rnd.randbytes(4096))
    if not after_connect and data[0] >> 4 == 1:
        data[0] = 0x50
    raw = raw_client()
    if after_connect:
        assert raw.connect(broker.client_id("junk", seed % 2)) == (0, 0)
    try:
        raw.send(bytes(data))
    except OSError:
        pass  # already refused and closed
    raw.wait_closed(timeout=0.5)
    raw.close()
    roundtrip_check(broker)


def test_packets_one_byte_at_a_time(broker, raw_client):
    """[MQTT-3.1.0-1] (MQTT 3.1.1 section 4.2: a byte stream) CONNECT,
    SUBSCRIBE, PUBLISH (QoS 1, 300-byte payload so the remaining length is
    two bytes) and PINGREQ sent one byte per TCP segment still work, across
    shards."""
    sub = raw_client(timeout=10)
    sub.send_slowly(connect_packet(broker.client_id("slow-s", 1)))
    assert sub.recv_packet().connack() == (0, 0)
    sub.send_slowly(subscribe_packet(11, [(f"{T}/slow", 1)]))
    assert sub.recv_packet().suback() == (11, [1])

    pub = raw_client(timeout=10)
    pub.send_slowly(connect_packet(broker.client_id("slow-p", 0)))
    assert pub.recv_packet().connack() == (0, 0)
    payload = bytes(range(256)) + b"z" * 44
    pub.send_slowly(publish_packet(f"{T}/slow", payload, qos=1, pid=77))
    p = pub.recv_packet()
    assert (p.type, p.pid()) == (PUBACK, 77)
    pub.send_slowly(b"\xc0\x00")
    assert pub.recv_packet().type == 13  # PINGRESP

    m = sub.recv_until(PUBLISH)[0].publish()
    assert (m.topic, m.payload, m.qos) == (f"{T}/slow", payload, 1)
    roundtrip_check(broker)


@pytest.mark.parametrize("shard", [0, 1])
def test_connack_from_client_closes(broker, raw_client, shard):
    """[MQTT-4.8.0-1] A client sending CONNACK (a server-to-client packet)
    after its CONNECT commits a protocol violation: the server closes the
    connection."""
    data = b"\x20\x02\x00\x00"
    raw = raw_client()
    assert raw.connect(broker.client_id("srvpkt", shard)) == (0, 0)
    raw.send(data)
    got = raw.wait_closed()
    assert got == [], f"{data!r}: {got}"
    roundtrip_check(broker)
