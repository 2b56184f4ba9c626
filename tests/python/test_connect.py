"""CONNECT / CONNACK / session takeover / keep-alive / PINGREQ."""

import time

import paho.mqtt.client as mqtt
import pytest

from mqtt_helpers import (
    IS_MOSQUITTO,
    CONNACK,
    PINGRESP,
    SHARD_PAIRS,
    SUBACK,
    connect_packet,
    pingreq_packet,
    publish_packet,
    subscribe_packet,
)

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("shard", [0, 1])
def test_connect_mqtt311_accepted(broker, mqtt_client, raw_client, shard):
    """[MQTT-3.2.2-4] [MQTT-3.2.2-1] MQTT 3.1.1 CONNECT (level 4) is accepted
    with return code 0; CleanSession=1 gives Session Present 0; CONNACK is
    exactly 0x20 0x02 0x00 0x00."""
    c = mqtt_client(shard=shard, prefix="c311-")
    assert c.connack_rc.value == 0
    raw = raw_client()
    raw.send(connect_packet(broker.client_id("r311-", shard), clean=True))
    p = raw.recv_packet()
    assert (p.type, p.flags, p.body) == (CONNACK, 0, b"\x00\x00")


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_connect_mqtt31_accepted_and_works(broker, mqtt_client, raw_client, topic_root,
                                           pub_shard, sub_shard):
    """MQTT 3.1 ("MQIsdp", level 3) CONNECT is accepted [MQTT-3.2.2-4]; a 3.1
    subscriber receives from a 3.1.1 publisher and vice versa."""
    raw = raw_client()
    sp, rc = raw.connect(broker.client_id("r31-", sub_shard), proto_name="MQIsdp", proto_level=3)
    assert (sp, rc) == (0, 0)

    sub31 = mqtt_client(shard=sub_shard, prefix="s31-", protocol=mqtt.MQTTv31)
    assert sub31.connack_rc.value == 0
    pub311 = mqtt_client(shard=pub_shard, prefix="p311-")
    assert sub31.subscribe(f"{topic_root}/v31", 1) == [1]
    pub311.publish(f"{topic_root}/v31", b"to-3.1", qos=1)
    m = sub31.get()
    assert (m.topic, m.payload, m.qos) == (f"{topic_root}/v31", b"to-3.1", 1)

    pub31 = mqtt_client(shard=pub_shard, prefix="p31-", protocol=mqtt.MQTTv31)
    sub311 = mqtt_client(shard=sub_shard, prefix="s311-")
    assert sub311.subscribe(f"{topic_root}/v311", 2) == [2]
    pub31.publish(f"{topic_root}/v311", b"from-3.1", qos=2)
    m = sub311.get()
    assert (m.topic, m.payload, m.qos) == (f"{topic_root}/v311", b"from-3.1", 2)


@pytest.mark.parametrize("level", [0, 2, 6, 7, 255])
def test_unacceptable_protocol_level(broker, raw_client, level):
    """[MQTT-3.1.2-2] An unsupported protocol level gets CONNACK return code
    0x01 (unacceptable protocol version) and the connection is closed."""
    raw = raw_client()
    raw.send(connect_packet(broker.client_id("lvl", 0), proto_level=level))
    got = raw.wait_closed()
    assert got, "expected a CONNACK before the close"
    assert got[0].connack() == (0, 0x01)
    assert len(got) == 1, f"nothing may follow the refusing CONNACK: {got}"


def test_wrong_protocol_name_closes(broker, raw_client):
    """[MQTT-3.1.2-1] A CONNECT whose protocol name is not "MQTT" must not be
    accepted: the server closes the connection (a refusing CONNACK may precede
    the close, an accepting one must not)."""
    raw = raw_client()
    raw.send(connect_packet(broker.client_id("pname", 0), proto_name="MQTX", proto_level=4))
    got = raw.wait_closed()
    for p in got:
        assert p.type == CONNACK and p.connack()[1] != 0, f"unexpected packet {p}"


def test_empty_client_id_clean_session_accepted(broker, raw_client):
    """[MQTT-3.1.3-6] [MQTT-3.1.3-7] A zero-length client id with
    CleanSession=1 is accepted and gets a unique id: two such connections
    coexist (neither takes the other over)."""
    a = raw_client()
    assert a.connect("", clean=True) == (0, 0)
    b = raw_client()
    assert b.connect("", clean=True) == (0, 0)
    assert a.is_open(), "first empty-id connection was closed by the second one"
    assert b.is_open()


def test_empty_client_id_persistent_session_rejected(broker, raw_client):
    """[MQTT-3.1.3-8] A zero-length client id with CleanSession=0 gets CONNACK
    0x02 (identifier rejected) and the connection is closed."""
    raw = raw_client()
    raw.send(connect_packet("", clean=False))
    got = raw.wait_closed()
    assert got, "expected CONNACK 0x02 before the close"
    assert got[0].connack() == (0, 0x02)


@pytest.mark.parametrize("shard", [0, 1])
def test_second_connect_closes_connection(broker, raw_client, shard):
    """[MQTT-3.1.0-2] A second CONNECT on the same connection is a protocol
    violation: the server closes the connection (no second CONNACK)."""
    raw = raw_client()
    cid = broker.client_id("twice", shard)
    assert raw.connect(cid) == (0, 0)
    raw.send(connect_packet(cid))
    got = raw.wait_closed()
    assert all(p.type != CONNACK for p in got), f"second CONNACK sent: {got}"


@pytest.mark.parametrize("first", [
    pytest.param(pingreq_packet(), id="pingreq"),
    pytest.param(publish_packet("a/b", b"x"), id="publish"),
    pytest.param(subscribe_packet(1, [("a/b", 0)]), id="subscribe"),
    pytest.param(b"\xe0\x00", id="disconnect"),
])
def test_first_packet_not_connect_closes(broker, raw_client, first):
    """[MQTT-3.1.0-1] The first packet from the client must be CONNECT;
    otherwise the server closes the connection without answering."""
    raw = raw_client()
    raw.send(first)
    got = raw.wait_closed()
    assert got == [], f"broker answered a pre-CONNECT packet: {got}"


@pytest.mark.parametrize("shard", [0, 1])
def test_client_id_takeover(broker, mqtt_client, topic_root, shard):
    """[MQTT-3.1.4-2] A second connection with the same client id makes the
    server disconnect the existing one. Repeated several times so that the
    TCP connections are accepted on different shards; the newest connection
    must stay connected and working, the older ones must be disconnected."""
    cid = broker.client_id("take", shard)
    other = 1 - shard
    pub = mqtt_client(shard=other, prefix="takep")
    previous = None
    for i in range(4):
        cur = mqtt_client(client_id=cid, connect=True)
        if previous is not None:
            assert previous.wait_disconnected(5), f"round {i}: old connection not disconnected"
        assert not cur.disconnected.is_set(), f"round {i}: new connection was disconnected"
        topic = f"{topic_root}/r{i}"
        assert cur.subscribe(topic, 1) == [1]
        pub.publish(topic, f"round{i}".encode(), qos=1)
        m = cur.get()
        assert m.payload == f"round{i}".encode()
        previous = cur
    assert not previous.disconnected.is_set()


@pytest.mark.parametrize("shard", [0, 1])
def test_client_id_takeover_raw(broker, raw_client, shard):
    """[MQTT-3.1.4-2] Takeover observed on the wire: the first socket is
    closed by the server once the second CONNECT with the same id arrives;
    the second socket gets CONNACK 0 and stays usable."""
    cid = broker.client_id("takeraw", shard)
    first = raw_client()
    assert first.connect(cid) == (0, 0)
    second = raw_client()
    assert second.connect(cid) == (0, 0)
    first.wait_closed()
    assert second.is_open()


@pytest.mark.skipif(
    IS_MOSQUITTO,
    reason="mosquitto 2.0 checks keep-alives on a coarse (~5 s) timer, so a 1 s "
           "keep-alive is enforced only after ~5 s; the lenient variant is "
           "test_will.py::test_will_on_keepalive_expiry")
def test_keepalive_timeout_disconnects(broker, raw_client):
    """[MQTT-3.1.2-24] With Keep Alive 1 s and no traffic at all, the server
    disconnects the client after 1.5 x keep-alive (allowing 1.5 s slack for
    timer granularity), and not before the keep-alive period itself."""
    raw = raw_client(timeout=10)
    assert raw.connect(broker.client_id("ka", 1), keepalive=1) == (0, 0)
    t0 = time.monotonic()
    got = raw.wait_closed(timeout=6)
    elapsed = time.monotonic() - t0
    assert got == [], f"unexpected packets: {got}"
    assert elapsed >= 0.9, f"disconnected too early ({elapsed:.2f}s < keep-alive 1s)"
    assert elapsed <= 3.0, f"disconnected too late ({elapsed:.2f}s, limit 1.5s + 1.5s slack)"


def test_keepalive_kept_by_pingreq(broker, raw_client):
    """[MQTT-3.1.2-23] [MQTT-3.12.4-1] A client with Keep Alive 1 s that sends
    PINGREQ every 0.5 s stays connected for 3 s and gets every PINGRESP."""
    raw = raw_client(timeout=10)
    assert raw.connect(broker.client_id("kaping", 0), keepalive=1) == (0, 0)
    t_end = time.monotonic() + 3.0
    n = 0
    while time.monotonic() < t_end:
        raw.send(pingreq_packet())
        p = raw.recv_packet(timeout=2)
        assert p.type == PINGRESP, p
        n += 1
        time.sleep(0.5)  # pacing of the client's keep-alive traffic (not a wait for the broker)
    assert n >= 5
    assert raw.is_open()


@pytest.mark.parametrize("shard", [0, 1])
def test_pingreq_pingresp(broker, raw_client, shard):
    """[MQTT-3.12.4-1] PINGREQ is answered with PINGRESP (0xD0 0x00)."""
    raw = raw_client()
    assert raw.connect(broker.client_id("ping", shard)) == (0, 0)
    for _ in range(3):
        raw.send(pingreq_packet())
        p = raw.recv_packet()
        assert (p.type, p.flags, p.body) == (PINGRESP, 0, b"")


def test_pipelined_packets_in_one_segment(broker, raw_client, topic_root):
    """(MQTT 3.1.1 section 4.2: the connection is a byte stream) CONNECT, SUBSCRIBE, PUBLISH (to itself) and
    PINGREQ written in one TCP segment are all processed, in order."""
    raw = raw_client()
    topic = f"{topic_root}/pipe"
    raw.send(connect_packet(broker.client_id("pipe", 1))
             + subscribe_packet(9, [(topic, 0)])
             + publish_packet(topic, b"self", qos=0)
             + pingreq_packet())
    assert raw.recv_packet().connack() == (0, 0)
    suback = raw.recv_packet()
    assert suback.suback() == (9, [0])
    rest = [raw.recv_packet(), raw.recv_packet()]
    types = sorted(p.type for p in rest)
    assert types == sorted([PINGRESP, 3]), rest
    pub = next(p for p in rest if p.type == 3).publish()
    assert (pub.topic, pub.payload) == (topic, b"self")


@pytest.mark.parametrize("shard", [0, 1])
def test_mqtt31_connack_byte_1_reserved(broker, raw_client, shard):
    """MQTT 3.1 (level 3) CONNACK: byte 1 is reserved (3.1 has no Session
    Present flag; 3.1.1 added it in [MQTT-3.2.2-2]), so a resumed
    persistent session still gets 0x20 0x02 0x00 0x00."""
    cid = broker.client_id("r31sp-", shard)
    for _ in range(2):
        raw = raw_client()
        raw.send(connect_packet(cid, clean=False, proto_name="MQIsdp", proto_level=3))
        p = raw.recv_packet()
        assert (p.type, p.flags, p.body) == (CONNACK, 0, b"\x00\x00")
        raw.close()
