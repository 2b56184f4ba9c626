"""MQTT 5.0 DISCONNECT, both directions.

Server-initiated: 0x8E session taken over, 0x8D keep-alive timeout, 0x93
Receive Maximum exceeded, 0x95 packet too large. After the DISCONNECT the
connection is closed and nothing follows it [MQTT-3.14.4-1] [MQTT-3.14.4-2];
other clients are unaffected.

Client-initiated: reason 0x04 publishes the will, 0x00 does not; a
DISCONNECT may change the Session Expiry Interval, but not from 0 to
non-zero. (That a raised interval outlives the one of CONNECT needs time to
pass: the core's simulation shows it in virtual time, `shard::core::sim`.)
"""

import time

import pytest

from mqtt_helpers import IS_MOSQUITTO, SHARD_PAIRS
from mqtt5_helpers import (  # noqa: F401  (fixtures)
    MAXIMUM_PACKET_SIZE,
    PUBACK,
    PUBREC,
    RC_DISCONNECT_WITH_WILL,
    RC_KEEP_ALIVE_TIMEOUT,
    RC_PACKET_TOO_LARGE,
    RC_PROTOCOL_ERROR,
    RC_RECEIVE_MAXIMUM_EXCEEDED,
    RC_SESSION_TAKEN_OVER,
    RECEIVE_MAXIMUM,
    SESSION_EXPIRY_INTERVAL,
    Bystander,
    RawClient5,
    Will,
    assert_disconnect_reason,
    disconnect5,
    mqtt5_client,
    parse_ack5,
    publish5,
    pubrel5,
    raw5,
    sub_opts,
    v5_broker,
)

pytestmark = pytest.mark.timeout(30)

TAKEOVER_WHY = "[MQTT-3.1.4-3]: the server sends DISCONNECT 0x8E to the existing client"


# --------------------------------------------------------------------------
# Session taken over (0x8E)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shard", [0, 1])
def test_takeover_sends_0x8e_to_old_connection(broker, raw5, mqtt5_client, topic_root, shard):
    """[MQTT-3.1.4-3] A CONNECT with the client id of a connected client makes
    the server send DISCONNECT 0x8E (Session taken over) to the existing
    connection and close it. With Clean Start=0 the new connection resumes
    the session: Session Present=1 [MQTT-3.2.2-3] and the subscription made
    by the old connection delivers to the new one [MQTT-3.1.2-5]."""
    cid = broker.client_id("to", shard)
    old = raw5()
    assert old.connect5(cid, props=[(SESSION_EXPIRY_INTERVAL, 60)]).reason_code == 0
    assert old.subscribe5(1, [(f"{topic_root}/x", sub_opts(1))]) == [1]
    new = raw5()
    ca = new.connect5(cid, clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 0)])
    assert (ca.reason_code, ca.session_present) == (0, 1)
    rc = old.expect_disconnect()
    pub = mqtt5_client(shard=1 - shard, prefix="tp")
    pub.publish(f"{topic_root}/x", b"to-new", qos=1)
    m = new.recv_publish5()
    assert (m.topic, m.payload) == (f"{topic_root}/x", b"to-new")
    assert_disconnect_reason(rc, RC_SESSION_TAKEN_OVER, "to the taken-over connection", TAKEOVER_WHY)


def test_takeover_seen_by_paho_client(broker, mqtt5_client):
    """[MQTT-3.1.4-3] A paho v5 client whose client id is reused by a new
    connection receives DISCONNECT with reason 0x8E; the new one stays up."""
    cid = broker.client_id("tq", 1)
    old = mqtt5_client(client_id=cid)
    new = mqtt5_client(client_id=cid)
    assert old.wait_disconnected(5), "old connection not closed"
    assert not new.disconnected.is_set()
    assert_disconnect_reason(old.disconnect_rc, RC_SESSION_TAKEN_OVER, "to the taken-over paho client",
                             TAKEOVER_WHY)


# --------------------------------------------------------------------------
# Keep-alive timeout (0x8D)
# --------------------------------------------------------------------------

@pytest.mark.skipif(IS_MOSQUITTO, reason="mosquitto enforces keep-alive on a coarse timer (~5 s for 1 s) "
                                         "and closes without a DISCONNECT 0x8D")
def test_keep_alive_timeout_0x8d(broker, raw5):
    """[MQTT-3.1.2-22] A v5 client with keep-alive 1 s that stays silent is
    disconnected after 1.5 x keep-alive (not before 0.9 s, within 3 s) with
    DISCONNECT 0x8D (Keep Alive timeout); a bystander is unaffected."""
    by = Bystander(broker)
    r = raw5(timeout=10)
    assert r.connect5(broker.client_id("kt", 0), keepalive=1).reason_code == 0
    t0 = time.monotonic()
    rc = r.expect_disconnect(timeout=4.0)
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed <= 3.0, f"closed after {elapsed:.2f}s"
    assert_disconnect_reason(rc, RC_KEEP_ALIVE_TIMEOUT, "for a keep-alive timeout")
    by.check()
    by.close()


# --------------------------------------------------------------------------
# Receive Maximum exceeded (0x93)
# --------------------------------------------------------------------------

@pytest.mark.skipif(IS_MOSQUITTO, reason="mosquitto answers a PUBLISH beyond its Receive Maximum with "
                                         "PUBREC/PUBACK 0x97 (Quota exceeded) instead of DISCONNECT 0x93")
@pytest.mark.parametrize("shard", [0, 1])
def test_receive_maximum_exceeded_0x93(v5_broker, shard):
    """Section 3.3.4 / [MQTT-3.3.4-7]: ``--receive-maximum 2`` is advertised as
    Receive Maximum 2 (3.2.2.3.3). QoS 2 PUBLISHes stay unacknowledged until
    PUBCOMP: two are answered with PUBREC; completing one (PUBREL/PUBCOMP)
    frees its slot for another; a PUBLISH beyond two outstanding gets
    DISCONNECT 0x93 (Receive Maximum exceeded) and the connection is closed.
    A bystander is unaffected."""
    b = v5_broker(["--receive-maximum", "2"], mosquitto_conf=["max_inflight_messages 2"])
    by = Bystander(b)
    r = RawClient5(b.host, b.port)
    try:
        ca = r.connect5(b.client_id("rm", shard))
        assert ca.props.get(RECEIVE_MAXIMUM) == 2, ca.props
        t = f"{by.root}/rm"
        for pid in (1, 2):
            r.send(publish5(t, b"q2-%d" % pid, qos=2, pid=pid))
            p, _ = r.recv_until(PUBREC)
            assert parse_ack5(p)[:2] == (pid, 0)
        r.send(pubrel5(1))
        p = r.recv_packet()
        assert (p.type, parse_ack5(p)[0]) == (7, 1), p  # PUBCOMP 1
        r.send(publish5(t, b"q2-3", qos=2, pid=3))  # outstanding: 2, 3
        p, _ = r.recv_until(PUBREC)
        assert parse_ack5(p)[:2] == (3, 0)
        r.send(publish5(t, b"q2-4", qos=2, pid=4))  # a third one outstanding
        rc = r.expect_disconnect()
        assert_disconnect_reason(rc, RC_RECEIVE_MAXIMUM_EXCEEDED, "for exceeding Receive Maximum")
        by.check()
    finally:
        r.close()
        by.close()


# --------------------------------------------------------------------------
# Packet too large (0x95)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("size", [
    pytest.param(1001, marks=pytest.mark.skipif(
        IS_MOSQUITTO, reason="mosquitto 2.0.11 does not count the fixed header against max_packet_size "
                             "and accepts packets of up to 1002 bytes under max_packet_size 1000")),
    1200,
])
def test_packet_too_large_0x95(v5_broker, mqtt5_client, size):
    """3.2.2.3.6 [MQTT-3.2.2-15]: ``--packet-size-max 1000`` is advertised as
    Maximum Packet Size 1000. A PUBLISH of exactly 1000 bytes (the whole
    packet) is accepted and delivered; one of ``size`` bytes gets DISCONNECT
    0x95 (Packet too large), no PUBACK, is not delivered, and the connection
    is closed. A bystander on the other shard is unaffected."""
    b = v5_broker(["--packet-size-max", "1000"], mosquitto_conf=["max_packet_size 1000"])
    by = Bystander(b)
    t = f"{by.root}/big"
    overhead = len(publish5(t, b"", qos=1, pid=1))
    fits = publish5(t, b"a" * (1000 - overhead - 1), qos=1, pid=1)  # RL grows to 2 bytes
    assert len(fits) == 1000
    too_big = publish5(t, b"b" * (size - overhead - 1), qos=1, pid=2)
    assert len(too_big) == size
    r = RawClient5(b.host, b.port)
    try:
        ca = r.connect5(b.client_id("pt", 0))
        assert ca.props.get(MAXIMUM_PACKET_SIZE) == 1000, ca.props
        r.send(fits)
        p, _ = r.recv_until(PUBACK)
        assert parse_ack5(p)[0] == 1
        m = by.sub.get()
        assert len(m.payload) == 1000 - overhead - 1
        r.send(too_big)
        rc = r.expect_disconnect()
        assert not any(p.type == PUBACK for p in r.packets_before_close), r.packets_before_close
        by.sub.expect_none(0.3)
        by.check()
        assert_disconnect_reason(rc, RC_PACKET_TOO_LARGE, "for a packet over Maximum Packet Size")
    finally:
        r.close()
        by.close()


# --------------------------------------------------------------------------
# Client DISCONNECT
# --------------------------------------------------------------------------

@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
@pytest.mark.parametrize("rc", [0x00, RC_DISCONNECT_WITH_WILL], ids=["normal-0x00", "with-will-0x04"])
def test_client_disconnect_reason_and_will(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard, rc):
    """[MQTT-3.14.4-3] [MQTT-3.1.2-10] DISCONNECT 0x00 (Normal disconnection)
    discards the will; DISCONNECT 0x04 (Disconnect with Will Message)
    closes the connection and publishes the will [MQTT-3.1.2-8], with its
    will properties (user properties in order [MQTT-3.1.3-10])."""
    t = f"{topic_root}/will"
    sub = mqtt5_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    r = raw5()
    will = Will(t, b"bye", qos=1, props=[(0x26, ("k1", "v1")), (0x26, ("k0", "v0")), (0x03, "text/plain")])
    assert r.connect5(broker.client_id("wd", pub_shard), will=will).reason_code == 0
    r.send(disconnect5(rc))
    assert r.wait_closed() == []
    if rc == RC_DISCONNECT_WITH_WILL:
        m = sub.get()
        assert (m.topic, m.payload, m.qos, m.retain) == (t, b"bye", 1, False)
        assert m.user_properties == [("k1", "v1"), ("k0", "v0")]
        assert m.props.get("ContentType") == "text/plain"
    else:
        pub = mqtt5_client(shard=pub_shard, prefix="sn")
        pub.publish(t, b"sentinel", qos=1)
        _, before = sub.get_until(lambda m: m.payload == b"sentinel")
        assert before == [] and sub.collect(0.3) == [], "will published after DISCONNECT 0x00"


def test_disconnect_session_expiry_from_zero_is_protocol_error(broker, raw5):
    """3.14.2.2.2: if the CONNECT's Session Expiry Interval was 0 (absent), a
    non-zero Session Expiry Interval on the client's DISCONNECT is a Protocol
    Error: the server answers DISCONNECT 0x82 and closes [MQTT-4.13.1-1]."""
    by = Bystander(broker)
    r = raw5()
    assert r.connect5(broker.client_id("dz", 0)).reason_code == 0
    r.send(disconnect5(0, [(SESSION_EXPIRY_INTERVAL, 30)]))
    rc = r.expect_disconnect()
    by.check()
    by.close()
    assert_disconnect_reason(rc, RC_PROTOCOL_ERROR, "for a DISCONNECT that sets Session Expiry from 0")


@pytest.mark.parametrize("shard", [0, 1])
def test_disconnect_sets_session_expiry_to_zero(broker, raw5, mqtt5_client, topic_root, shard):
    """3.14.2.2.2 [MQTT-4.1.0-2]: a session created with Session Expiry 60
    ends at once when the DISCONNECT carries Session Expiry Interval 0: a
    reconnect with Clean Start=0 gets Session Present 0 and none of the
    messages published meanwhile. Control: without the override (next
    client) the session survives."""
    t = f"{topic_root}/x"
    cids = [broker.client_id("dx", shard), broker.client_id("dk", shard)]
    for cid, override in zip(cids, [True, False]):
        r = raw5()
        assert r.connect5(cid, props=[(SESSION_EXPIRY_INTERVAL, 60)]).reason_code == 0
        assert r.subscribe5(1, [(t, sub_opts(1))]) == [1]
        r.send(disconnect5(0, [(SESSION_EXPIRY_INTERVAL, 0)]) if override else disconnect5())
        assert r.wait_closed() == []
    pub = mqtt5_client(shard=1 - shard, prefix="dp")
    pub.publish(t, b"while-away", qos=1)
    for cid, override in zip(cids, [True, False]):
        r = raw5()
        ca = r.connect5(cid, clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 0)])
        assert (ca.reason_code, ca.session_present) == (0, 0 if override else 1), cid
        if override:
            r.expect_no_packet(0.3)
        else:
            m = r.recv_publish5()
            assert (m.topic, m.payload) == (t, b"while-away")
