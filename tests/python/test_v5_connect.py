"""MQTT 5.0 CONNECT / CONNACK: protocol level 5, CONNACK properties, the
Assigned Client Identifier, Server Keep Alive, enhanced authentication
without a configured method, malformed CONNECT packets, and interoperation
of v3.1.1 and v5 clients on the same topics.

Clause ids are those of the MQTT Version 5.0 OASIS Standard (7 March 2019).
"""

import time

import pytest

from mqtt_helpers import (
    CONNACK,
    IS_MOSQUITTO,
    SHARD_PAIRS,
    puback_packet,
    publish_packet,
    subscribe_packet,
)
from mqtt5_helpers import (  # noqa: F401  (fixtures)
    ASSIGNED_CLIENT_IDENTIFIER,
    AUTHENTICATION_DATA,
    AUTHENTICATION_METHOD,
    CONTENT_TYPE,
    CORRELATION_DATA,
    MAXIMUM_PACKET_SIZE,
    MAXIMUM_QOS,
    MESSAGE_EXPIRY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR,
    RC_BAD_AUTH_METHOD,
    RC_MALFORMED,
    RC_PROTOCOL_ERROR,
    RECEIVE_MAXIMUM,
    REQUEST_PROBLEM_INFORMATION,
    RESPONSE_TOPIC,
    RETAIN_AVAILABLE,
    SERVER_KEEP_ALIVE,
    SESSION_EXPIRY_INTERVAL,
    SHARED_SUBSCRIPTION_AVAILABLE,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    TOPIC_ALIAS,
    TOPIC_ALIAS_MAXIMUM,
    USER_PROPERTY,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
    Bystander,
    RawClient5,
    Will,
    assert_disconnect_reason,
    bystander_roundtrip,
    auth5,
    connect5,
    mqtt5_client,
    parse_connack5,
    puback5,
    raw5,
    sub_opts,
    v5_broker,
)

pytestmark = pytest.mark.timeout(30)

#: shardmq's defaults, and the mosquitto.conf lines that make Mosquitto
#: advertise the same values (its own defaults are 20 and 10, no packet limit)
SHARDMQ_DEFAULTS = {RECEIVE_MAXIMUM: 1024, MAXIMUM_PACKET_SIZE: 1048576, TOPIC_ALIAS_MAXIMUM: 64}
MOSQUITTO_DEFAULTS_CONF = ["max_inflight_messages 1024", "max_topic_alias 64", "max_packet_size 1048576"]


def _defaults_broker(broker, v5_broker):
    """The module broker for shardmq (started without flags, so with its
    defaults); for Mosquitto a private one configured to the same values."""
    if IS_MOSQUITTO:
        return v5_broker(mosquitto_conf=MOSQUITTO_DEFAULTS_CONF)
    return broker


@pytest.mark.parametrize("shard", [0, 1])
def test_connack_default_properties(broker, v5_broker, shard):
    """[MQTT-3.1.4-5] [MQTT-3.2.2-2] A level-5 CONNECT with Clean Start=1 is
    accepted with reason 0x00 and Session Present 0; the CONNACK carries
    Receive Maximum 1024 (3.2.2.3.3), Maximum Packet Size 1048576 (3.2.2.3.6)
    and Topic Alias Maximum 64 (3.2.2.3.8); no Server Keep Alive when the
    client's keep-alive is used as is [MQTT-3.2.2-22]; no Maximum QoS and no
    Retain Available, as QoS 2 and retain are supported [MQTT-3.2.2-9];
    Wildcard / Subscription Identifier / Shared Subscription Available are
    absent or 1; no Assigned Client Identifier for a non-empty client id."""
    b = _defaults_broker(broker, v5_broker)
    r = RawClient5(b.host, b.port)
    try:
        ca = r.connect5(b.client_id("cd", shard), keepalive=60)
        assert (ca.session_present, ca.reason_code) == (0, 0)
        for pid, want in SHARDMQ_DEFAULTS.items():
            assert ca.props.get(pid) == want, f"property {pid:#x}: {ca.props}"
        for pid in (SERVER_KEEP_ALIVE, MAXIMUM_QOS, RETAIN_AVAILABLE, ASSIGNED_CLIENT_IDENTIFIER):
            assert pid not in ca.props, f"unexpected property {pid:#x}: {ca.props}"
        for pid in (WILDCARD_SUBSCRIPTION_AVAILABLE, SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                    SHARED_SUBSCRIPTION_AVAILABLE):
            assert ca.props.get(pid, 1) == 1, f"feature {pid:#x} advertised as unavailable: {ca.props}"
        for pid in SHARDMQ_DEFAULTS:
            assert len(ca.props.get_all(pid)) == 1, f"property {pid:#x} repeated: {ca.props}"
        assert r.is_open()
    finally:
        r.close()


def test_assigned_client_identifier(broker, raw5, mqtt5_client, topic_root):
    """[MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.2.2-16] A zero-length client id
    is accepted; the CONNACK carries an Assigned Client Identifier, a new one
    per connection; the connection then works like any other (it subscribes
    and receives a QoS 1 message)."""
    a, b = raw5(), raw5()
    ca_a = a.connect5("")
    ca_b = b.connect5("")
    assert ca_a.reason_code == 0 and ca_b.reason_code == 0
    id_a = ca_a.props.get(ASSIGNED_CLIENT_IDENTIFIER)
    id_b = ca_b.props.get(ASSIGNED_CLIENT_IDENTIFIER)
    assert id_a and id_b, (ca_a.props, ca_b.props)
    assert id_a != id_b
    assert a.subscribe5(1, [(f"{topic_root}/x", 1)]) == [1]
    pub = mqtt5_client(shard=1, prefix="ap")
    pub.publish(f"{topic_root}/x", b"to-anon", qos=1)
    m = a.recv_publish5()
    assert (m.topic, m.payload, m.qos) == (f"{topic_root}/x", b"to-anon", 1)
    a.send(puback5(m.pid))
    assert b.is_open()


def test_server_keep_alive_when_capped(v5_broker):
    """[MQTT-3.2.2-21] [MQTT-3.2.2-22] With the broker's keep-alive capped at
    10 s (``--keep-alive-max 10``): a client asking for more (60) or for none
    (0) gets Server Keep Alive 10 in the CONNACK; a client asking for 5 or
    exactly 10 gets no Server Keep Alive, its own value applies."""
    b = v5_broker(["--keep-alive-max", "10"], mosquitto_conf=["max_keepalive 10"])
    for i, (asked, expect) in enumerate([(60, 10), (0, 10), (5, None), (10, None)]):
        r = RawClient5(b.host, b.port)
        try:
            ca = r.connect5(b.client_id(f"ka{i}-", i % 2), keepalive=asked)
            assert ca.reason_code == 0
            assert ca.props.get(SERVER_KEEP_ALIVE) == expect, f"keepalive {asked}: {ca.props}"
        finally:
            r.close()


@pytest.mark.skipif(IS_MOSQUITTO, reason="mosquitto 2.0.11 always caps keep-alive (max_keepalive 0 is "
                                         "rejected) and answers keep-alive 0 with Server Keep Alive 65535")
def test_no_server_keep_alive_without_cap(broker, raw5):
    """[MQTT-3.2.2-22] Without a keep-alive cap (the default), a client asking
    for keep-alive 0 gets no Server Keep Alive: its value (no keep-alive)
    applies."""
    r = raw5()
    ca = r.connect5(broker.client_id("nk", 0), keepalive=0)
    assert ca.reason_code == 0
    assert SERVER_KEEP_ALIVE not in ca.props, ca.props


@pytest.mark.skipif(IS_MOSQUITTO, reason="mosquitto enforces keep-alive on a coarse timer (~5 s for 1 s) "
                                         "and closes without a DISCONNECT 0x8D")
def test_server_keep_alive_is_enforced(v5_broker):
    """[MQTT-3.2.2-21] [MQTT-3.1.2-22] The Server Keep Alive is the one the
    server enforces: a client that asked for 60 s under ``--keep-alive-max 1``
    and then stays silent is disconnected with 0x8D (Keep Alive timeout)
    within 1.5 x 1 s plus slack, not before 0.9 s; the broker then still
    serves other clients (a fresh pair round-trips a message: a long-lived
    bystander would itself be held to the 1 s cap)."""
    b = v5_broker(["--keep-alive-max", "1"], mosquitto_conf=None)
    r = RawClient5(b.host, b.port, timeout=10)
    try:
        ca = r.connect5(b.client_id("ke", 0), keepalive=60)
        assert ca.props.get(SERVER_KEEP_ALIVE) == 1
        t0 = time.monotonic()
        rc = r.expect_disconnect(timeout=4.0)
        elapsed = time.monotonic() - t0
        assert 0.9 <= elapsed <= 3.0, f"closed after {elapsed:.2f}s"
        assert_disconnect_reason(rc, 0x8D, "for a keep-alive timeout")
        bystander_roundtrip(b)
    finally:
        r.close()


@pytest.mark.parametrize("shard", [0, 1])
def test_authentication_method_not_supported(broker, raw5, shard):
    """[MQTT-4.12.0-1] With no authentication method configured, a CONNECT
    carrying an Authentication Method is answered with CONNACK 0x8C (Bad
    authentication method), Session Present 0 [MQTT-3.2.2-6], and the
    connection is closed [MQTT-3.2.2-7]; no AUTH is sent; nothing follows the
    CONNACK."""
    by = Bystander(broker)
    r = raw5()
    r.send(connect5(broker.client_id("am", shard),
                    props=[(AUTHENTICATION_METHOD, "SCRAM-SHA-1"), (AUTHENTICATION_DATA, b"client-first")]))
    got = r.wait_closed()
    assert got, "expected a CONNACK before the close"
    ca = parse_connack5(got[0])
    assert (ca.session_present, ca.reason_code) == (0, RC_BAD_AUTH_METHOD), ca
    assert AUTHENTICATION_METHOD not in ca.props
    assert len(got) == 1, f"nothing may follow a refusing CONNACK: {got}"
    by.check()
    by.close()


def test_auth_packet_without_authentication_method(broker, raw5):
    """[MQTT-4.12.0-7] A client that connected without an Authentication
    Method must not send AUTH; doing so is a Protocol Error: DISCONNECT 0x82
    and close [MQTT-4.13.1-1]."""
    by = Bystander(broker)
    r = raw5()
    assert r.connect5(broker.client_id("au", 0)).reason_code == 0
    r.send(auth5(0x19, [(AUTHENTICATION_METHOD, "SCRAM-SHA-1")]))
    rc = r.expect_disconnect()
    by.check()
    by.close()
    assert_disconnect_reason(rc, RC_PROTOCOL_ERROR, "for AUTH without an authentication method")


def test_second_connect_is_protocol_error(broker, raw5):
    """[MQTT-3.1.0-2] A second CONNECT on a connection is a Protocol Error:
    the server sends DISCONNECT 0x82 and closes; the first CONNACK was the
    only one [MQTT-3.2.0-2]."""
    by = Bystander(broker)
    r = raw5()
    cid = broker.client_id("sc", 1)
    assert r.connect5(cid).reason_code == 0
    r.send(connect5(cid))
    rc = r.expect_disconnect()
    by.check()
    by.close()
    assert_disconnect_reason(rc, RC_PROTOCOL_ERROR, "for a second CONNECT")


#: CONNECT packets that are Malformed or a Protocol Error (sections 3.1.2.11, 3.1.3.2)
BAD_CONNECTS = [
    pytest.param(dict(props=[(RECEIVE_MAXIMUM, 0)]), id="receive-maximum-0"),
    pytest.param(dict(props=[(MAXIMUM_PACKET_SIZE, 0)]), id="maximum-packet-size-0"),
    pytest.param(dict(props=[(SESSION_EXPIRY_INTERVAL, 5), (SESSION_EXPIRY_INTERVAL, 5)]),
                 id="session-expiry-twice"),
    pytest.param(dict(props=[(TOPIC_ALIAS, 1)]), id="topic-alias-not-allowed-in-connect"),
    pytest.param(dict(props=[(REQUEST_PROBLEM_INFORMATION, 2)]), id="request-problem-information-2"),
    pytest.param(dict(raw_props=b"\x7f\x11\x00"), id="property-length-overruns"),
    pytest.param(dict(raw_props=b"\x80\x80\x80\x80\x01"), id="property-length-5-byte-vbi"),
    pytest.param(dict(will=Will("w/t", b"x", props=[(SESSION_EXPIRY_INTERVAL, 3)])),
                 id="will-property-not-allowed"),
    pytest.param(dict(props=[(AUTHENTICATION_DATA, b"x")]), id="auth-data-without-method",
                 marks=pytest.mark.skipif(IS_MOSQUITTO, reason="mosquitto accepts Authentication Data "
                                                               "without an Authentication Method")),
]


@pytest.mark.parametrize("kw", BAD_CONNECTS)
def test_malformed_connect_refused(broker, raw5, kw):
    """[MQTT-3.1.4-1] [MQTT-4.13.1-1] A CONNECT that is Malformed or a
    Protocol Error (3.1.2.11: Receive Maximum 0, Maximum Packet Size 0, a
    property twice, a property not allowed in CONNECT or in the will
    properties, a value out of range, a property length overrunning the
    packet or a 5-byte VBI; 3.1.2.11.10: Authentication Data without
    Authentication Method) is not accepted: the connection is closed, at most
    after a CONNACK with reason 0x81 or 0x82 [MQTT-3.2.2-7], and never with a
    DISCONNECT, which may only follow a successful CONNACK [MQTT-3.14.0-1].
    A bystander is unaffected."""
    by = Bystander(broker)
    r = raw5()
    r.send(connect5(broker.client_id("bc", 0), **kw))
    got = r.wait_closed()
    assert all(p.type == CONNACK for p in got), f"only a CONNACK may precede the close: {got}"
    assert len(got) <= 1, got
    if got:
        ca = parse_connack5(got[0])
        assert ca.reason_code in (RC_MALFORMED, RC_PROTOCOL_ERROR), ca
        assert ca.session_present == 0
    by.check()
    by.close()


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_v5_publisher_to_v311_subscriber(broker, raw_client, mqtt5_client, topic_root, pub_shard, sub_shard):
    """v3.1.1 and v5 clients share topics. A v5 PUBLISH carrying properties
    reaches a v3.1.1 subscriber as a plain 3.1.1 PUBLISH: topic and payload
    intact, no properties on the wire (3.1.1 has no property field, so the
    bytes after the packet id are exactly the payload), QoS min(1, granted)
    [MQTT-3.8.4-8]."""
    t = f"{topic_root}/v5to3"
    sub = raw_client()
    assert sub.connect(broker.client_id("s3", sub_shard)) == (0, 0)
    sub.send(subscribe_packet(1, [(t, 1)]))
    p, _ = sub.recv_until(9)
    assert p.suback() == (1, [1])
    pub = mqtt5_client(shard=pub_shard, prefix="p5")
    pub.publish(t, b"plain", qos=1, props={"ContentType": "text/plain", "UserProperty": [("a", "b")],
                                            "ResponseTopic": f"{topic_root}/resp", "CorrelationData": b"c",
                                            "PayloadFormatIndicator": 1, "MessageExpiryInterval": 60})
    m = sub.recv_packet().publish()
    assert (m.topic, m.payload, m.qos) == (t, b"plain", 1)
    sub.send(puback_packet(m.pid))
    assert sub.is_open()


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_v311_publisher_to_v5_subscriber(broker, raw_client, raw5, topic_root, pub_shard, sub_shard):
    """A v3.1.1 PUBLISH (QoS 1 and retained) reaches a v5 subscriber as a
    well-formed v5 PUBLISH with an empty or properties-only block that carries
    none of the application properties (PFI, content type, response topic,
    correlation data, user properties, expiry); the retained copy has RETAIN=1
    on the new subscription."""
    t = f"{topic_root}/v3to5"
    sub = raw5()
    assert sub.connect5(broker.client_id("s5", sub_shard)).reason_code == 0
    assert sub.subscribe5(1, [(f"{topic_root}/#", sub_opts(2))]) == [2]
    pub = raw_client()
    assert pub.connect(broker.client_id("p3", pub_shard)) == (0, 0)
    pub.send(publish_packet(t, b"from-311", qos=1, pid=7))
    ack, _ = pub.recv_until(4)
    assert ack.pid() == 7
    m = sub.recv_publish5()
    assert (m.topic, m.payload, m.qos, m.retain) == (t, b"from-311", 1, False)
    for pid in (PAYLOAD_FORMAT_INDICATOR, CONTENT_TYPE, RESPONSE_TOPIC, CORRELATION_DATA, USER_PROPERTY,
                MESSAGE_EXPIRY_INTERVAL):
        assert pid not in m.props, m.props
    sub.send(puback5(m.pid))

    pub.send(publish_packet(f"{topic_root}/kept", b"ret-311", qos=1, pid=8, retain=True))
    pub.recv_until(4)
    m = sub.recv_publish5()
    sub.send(puback5(m.pid))
    late = raw5()
    assert late.connect5(broker.client_id("l5", sub_shard)).reason_code == 0
    assert late.subscribe5(1, [(f"{topic_root}/kept", sub_opts(1))]) == [1]
    m = late.recv_publish5()
    assert (m.topic, m.payload, m.retain) == (f"{topic_root}/kept", b"ret-311", True)
