"""MQTT 5.0 PUBLISH: application properties passed through, Message Expiry,
Topic Aliases (client to server, and whatever the server sends), PUBACK /
PUBREC reason codes, Subscription Identifiers, the client's Maximum Packet
Size and Receive Maximum (flow control toward the client).
"""

import time

import pytest

from mqtt_helpers import IS_MOSQUITTO, PINGRESP, SHARD_PAIRS
from mqtt5_helpers import (  # noqa: F401  (fixtures)
    MAXIMUM_PACKET_SIZE,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    RC_NO_MATCHING_SUBSCRIBERS,
    RC_PROTOCOL_ERROR,
    RC_TOPIC_ALIAS_INVALID,
    RECEIVE_MAXIMUM,
    TOPIC_ALIAS,
    TOPIC_ALIAS_MAXIMUM,
    Bystander,
    assert_disconnect_reason,
    mqtt5_client,
    parse_ack5,
    parse_publish5,
    pingreq5,
    puback5,
    pubcomp5,
    publish5,
    pubrec5,
    pubrel5,
    raw5,
    sub_opts,
)

pytestmark = pytest.mark.timeout(30)

APP_PROPS = {
    "PayloadFormatIndicator": 1,
    "ContentType": "application/json; charset=utf-8",
    "CorrelationData": b"\x00corr\xff",
    "UserProperty": [("region", "eu"), ("trace", "1"), ("region", "us"), ("", "empty-key"), ("k", "")],
}


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_application_properties_forwarded(mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17]
    [MQTT-3.3.2-18] [MQTT-3.3.2-20] Payload Format Indicator, Content Type,
    Response Topic, Correlation Data and user properties (order kept,
    repeated keys, empty key and value) reach a v5 subscriber unaltered, at
    QoS 0, 1 and 2; the Message Expiry Interval arrives non-zero and at most
    the value sent [MQTT-3.3.2-6]; no Topic Alias is sent to a client that
    did not allow one [MQTT-3.1.2-27]."""
    t = f"{topic_root}/props"
    sub = mqtt5_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(t, 2) == [2]
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    props = dict(APP_PROPS, ResponseTopic=f"{topic_root}/reply", MessageExpiryInterval=300)
    for qos in (0, 1, 2):
        pub.publish(t, b'{"v":%d}' % qos, qos=qos, props=props)
    for qos in (0, 1, 2):
        m = sub.get()
        assert (m.topic, m.payload, m.qos) == (t, b'{"v":%d}' % qos, qos)
        assert m.props.get("PayloadFormatIndicator") == 1
        assert m.props.get("ContentType") == APP_PROPS["ContentType"]
        assert m.props.get("ResponseTopic") == f"{topic_root}/reply"
        assert m.props.get("CorrelationData") == b"\x00corr\xff"
        assert m.user_properties == APP_PROPS["UserProperty"]
        assert 0 < m.props.get("MessageExpiryInterval", 0) <= 300
        assert "TopicAlias" not in m.props


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_request_response(mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.2-15] [MQTT-3.3.2-16] Request/response (4.10): a responder
    answers on the request's Response Topic with its Correlation Data; the
    requester matches the reply by the correlation data."""
    req_t, resp_t = f"{topic_root}/req", f"{topic_root}/resp/me"
    responder = mqtt5_client(shard=sub_shard, prefix="r")
    assert responder.subscribe(req_t, 1) == [1]
    requester = mqtt5_client(shard=pub_shard, prefix="q")
    assert requester.subscribe(resp_t, 1) == [1]
    for n in range(3):
        requester.publish(req_t, b"ping%d" % n, qos=1,
                          props={"ResponseTopic": resp_t, "CorrelationData": b"id-%d" % n})
    for _ in range(3):
        m = responder.get()
        responder.publish(m.props["ResponseTopic"], m.payload.replace(b"ping", b"pong"), qos=1,
                          props={"CorrelationData": m.props["CorrelationData"]})
    got = {m.props.get("CorrelationData"): m.payload for m in requester.expect(3)}
    assert got == {b"id-%d" % n: b"pong%d" % n for n in range(3)}


def test_retained_message_expiry(mqtt5_client, topic_root):
    """[MQTT-3.3.2-5] [MQTT-3.3.2-6] A retained message whose Message Expiry
    Interval (1 s) has passed is not sent to a new subscriber; one with 60 s
    is, with RETAIN=1, its properties, and the interval minus the time it
    was stored (at most 59 after 2.2 s, non-zero).

    The one real-socket check of retained expiry (it has to sleep); every
    shard pair is covered in virtual time by the core's simulation
    (`shard::core::sim`, `retained_message_expires`)."""
    pub_shard, sub_shard = 0, 1
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    pub.publish(f"{topic_root}/short", b"gone", qos=1, retain=True, props={"MessageExpiryInterval": 1})
    pub.publish(f"{topic_root}/long", b"kept", qos=1, retain=True,
                props={"MessageExpiryInterval": 60, "ContentType": "text/plain"})
    time.sleep(2.2)  # the 1 s interval must pass (slack for brokers with 1-second clocks)
    sub = mqtt5_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(f"{topic_root}/#", 1) == [1]
    m = sub.get()
    assert (m.topic, m.payload, m.retain) == (f"{topic_root}/long", b"kept", True)
    assert m.props.get("ContentType") == "text/plain"
    assert 0 < m.props.get("MessageExpiryInterval", 0) <= 59, m.props
    sub.expect_none(0.3)


# --------------------------------------------------------------------------
# Topic aliases
# --------------------------------------------------------------------------

@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_topic_alias_from_client(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.2-12] 3.3.2.3.4: the server accepts Topic Aliases from 1 to
    its Topic Alias Maximum: a PUBLISH with topic + alias sets the mapping,
    later ones with an empty topic + alias use it, a PUBLISH with a new topic
    and the same alias replaces the mapping. Subscribers get full topic
    names; the alias itself is not forwarded (the subscriber allowed none)."""
    sub = mqtt5_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(f"{topic_root}/#", 1) == [1]
    r = raw5()
    ca = r.connect5(broker.client_id("ta", pub_shard))
    top = ca.props.get(TOPIC_ALIAS_MAXIMUM, 0)
    assert top >= 2, f"server allows {top} topic aliases; the test needs 2"
    a, b = f"{topic_root}/alpha", f"{topic_root}/beta"
    steps = [(a, 1, b"1"), ("", 1, b"2"), (b, top, b"3"), ("", top, b"4"), ("", 1, b"5"),
             (b, 1, b"6"), ("", 1, b"7")]
    expect = [(a, b"1"), (a, b"2"), (b, b"3"), (b, b"4"), (a, b"5"), (b, b"6"), (b, b"7")]
    for i, (topic, alias, payload) in enumerate(steps, start=1):
        r.send(publish5(topic, payload, qos=1, pid=i, props=[(TOPIC_ALIAS, alias)]))
        p, _ = r.recv_until(PUBACK)
        assert parse_ack5(p)[:2] in ((i, 0), (i, RC_NO_MATCHING_SUBSCRIBERS))
    got = [(m.topic, m.payload) for m in sub.expect(len(expect))]
    assert got == expect
    assert r.is_open()


@pytest.mark.parametrize("shard", [0, 1])
def test_topic_alias_not_carried_to_new_connection(broker, raw5, topic_root, shard):
    """[MQTT-3.3.2-7] Topic Alias mappings do not survive the connection: a
    new connection of the same client (session resumed) that sends an empty
    topic with an alias it has not mapped commits a Protocol Error: DISCONNECT
    0x82 and close."""
    cid = broker.client_id("tn", shard)
    r = raw5()
    assert r.connect5(cid, props=[(0x11, 30)]).reason_code == 0
    r.send(publish5(f"{topic_root}/x", b"map", qos=1, pid=1, props=[(TOPIC_ALIAS, 1)]))
    r.recv_until(PUBACK)
    r.close()
    by = Bystander(broker)
    r2 = raw5()
    assert r2.connect5(cid, clean_start=False).session_present == 1
    r2.send(publish5("", b"unmapped", qos=1, pid=2, props=[(TOPIC_ALIAS, 1)]))
    rc = r2.expect_disconnect()
    assert not any(p.type == PUBACK for p in r2.packets_before_close)
    by.check()
    by.close()
    assert_disconnect_reason(rc, RC_PROTOCOL_ERROR, "for an unmapped Topic Alias")


@pytest.mark.parametrize("shard", [0, 1])
def test_topic_alias_above_maximum_0x94(broker, raw5, topic_root, shard):
    """[MQTT-3.2.2-17] [MQTT-3.3.2-9] A Topic Alias greater than the Topic Alias
    Maximum in the CONNACK gets DISCONNECT 0x94 (Topic Alias invalid) and the
    connection is closed; the message is not acknowledged."""
    by = Bystander(broker)
    r = raw5()
    ca = r.connect5(broker.client_id("tx", shard))
    top = ca.props.get(TOPIC_ALIAS_MAXIMUM, 0)
    r.send(publish5(f"{by.root}/x", b"over", qos=1, pid=1, props=[(TOPIC_ALIAS, top + 1)]))
    rc = r.expect_disconnect()
    assert not any(p.type == PUBACK for p in r.packets_before_close)
    by.sub.expect_none(0.2)
    by.check()
    by.close()
    assert_disconnect_reason(rc, RC_TOPIC_ALIAS_INVALID, "for a Topic Alias above the maximum")


def _drain_publishes(r, n, timeout=5.0, ack=True):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        p = parse_publish5(r.recv_until(PUBLISH, max(0.0, deadline - time.monotonic()))[0])
        if ack and p.qos == 1:
            r.send(puback5(p.pid))
        out.append(p)
    return out


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_no_topic_alias_to_client_without_maximum(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.1.2-27] A client that sent no Topic Alias Maximum (so 0) never
    receives a Topic Alias: every PUBLISH, including repeats of the same
    topic, carries the full topic name and no alias."""
    r = raw5()
    assert r.connect5(broker.client_id("na", sub_shard)).reason_code == 0
    assert r.subscribe5(1, [(f"{topic_root}/#", sub_opts(1))]) == [1]
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    topics = [f"{topic_root}/t{i % 2}" for i in range(8)]
    for i, t in enumerate(topics):
        pub.publish(t, b"%d" % i, qos=i % 2)
    got = _drain_publishes(r, len(topics))
    assert [(p.topic, p.payload) for p in got] == [(t, b"%d" % i) for i, t in enumerate(topics)]
    assert all(TOPIC_ALIAS not in p.props for p in got), [p.props for p in got]


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_topic_aliases_sent_by_server_are_resolvable(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.1.2-26] [MQTT-3.3.2-8] [MQTT-3.3.2-11] A client allowing 2 Topic
    Aliases may receive aliases from the server (the server chooses): any
    alias is between 1 and 2; an empty topic name only comes with an alias
    the server mapped earlier on this connection; every message resolves to
    its real topic (4 topics x 3 rounds). A paho client with Topic Alias
    Maximum 2 (aliases resolved by the suite's wrapper, paho does not) gets
    the right topics too, and any alias it saw is within 1..2."""
    r = raw5()
    ca = r.connect5(broker.client_id("ra", sub_shard), props=[(TOPIC_ALIAS_MAXIMUM, 2)])
    assert ca.reason_code == 0
    assert r.subscribe5(1, [(f"{topic_root}/#", sub_opts(1))]) == [1]
    paho = mqtt5_client(shard=sub_shard, prefix="rp", connect_props={"TopicAliasMaximum": 2})
    assert paho.subscribe(f"{topic_root}/#", 1) == [1]
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    topics = [f"{topic_root}/topic-{i % 4}" for i in range(12)]
    for i, t in enumerate(topics):
        pub.publish(t, b"%d" % i, qos=1)
    mapping = {}
    resolved = []
    for p in _drain_publishes(r, len(topics)):
        alias = p.props.get(TOPIC_ALIAS)
        if alias is not None:
            assert 1 <= alias <= 2, f"alias {alias} outside 1..2"
            if p.topic:
                mapping[alias] = p.topic
            else:
                assert alias in mapping, f"empty topic with unmapped alias {alias}"
        else:
            assert p.topic, "empty topic name without a Topic Alias"
        resolved.append((p.topic or mapping[alias], p.payload))
    assert resolved == [(t, b"%d" % i) for i, t in enumerate(topics)]
    msgs = paho.expect(len(topics))
    assert [(m.topic, m.payload) for m in msgs] == [(t, b"%d" % i) for i, t in enumerate(topics)]
    assert all(1 <= m.props.get("TopicAlias", 1) <= 2 for m in msgs)


# --------------------------------------------------------------------------
# PUBACK / PUBREC reason codes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shard", [0, 1])
def test_puback_pubrec_reason_codes(broker, raw5, mqtt5_client, topic_root, shard):
    """[MQTT-3.4.2-1] [MQTT-3.5.2-1] With no matching subscriber a QoS 1 PUBLISH
    is answered PUBACK 0x00 or 0x10 (No matching subscribers) and a QoS 2
    one PUBREC 0x00 or 0x10, then PUBCOMP 0x00; with a subscriber the reason
    code is 0x00 (Success)."""
    r = raw5()
    assert r.connect5(broker.client_id("rc", shard)).reason_code == 0
    t = f"{topic_root}/nobody"
    r.send(publish5(t, b"x", qos=1, pid=1))
    assert parse_ack5(r.recv_until(PUBACK)[0])[:2] in ((1, 0x00), (1, RC_NO_MATCHING_SUBSCRIBERS))
    r.send(publish5(t, b"x", qos=2, pid=2))
    assert parse_ack5(r.recv_until(PUBREC)[0])[:2] in ((2, 0x00), (2, RC_NO_MATCHING_SUBSCRIBERS))
    r.send(pubrel5(2))
    assert parse_ack5(r.recv_until(PUBCOMP)[0])[:2] == (2, 0x00)
    sub = mqtt5_client(shard=1 - shard, prefix="s")
    assert sub.subscribe(f"{topic_root}/some", 2) == [2]
    r.send(publish5(f"{topic_root}/some", b"y", qos=1, pid=3))
    assert parse_ack5(r.recv_until(PUBACK)[0])[:2] == (3, 0x00)
    r.send(publish5(f"{topic_root}/some", b"z", qos=2, pid=4))
    assert parse_ack5(r.recv_until(PUBREC)[0])[:2] == (4, 0x00)
    r.send(pubrel5(4))
    assert parse_ack5(r.recv_until(PUBCOMP)[0])[:2] == (4, 0x00)
    assert [m.payload for m in sub.expect(2)] == [b"y", b"z"]


# --------------------------------------------------------------------------
# Subscription Identifiers
# --------------------------------------------------------------------------

@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_subscription_identifier_on_delivery(mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.4-3] A message delivered through a subscription that has a
    Subscription Identifier carries it (live and retained deliveries, the
    largest value 268435455 too); through a subscription without one it
    carries none."""
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    pub.publish(f"{topic_root}/ret/x", b"retained", qos=1, retain=True)
    with_id = mqtt5_client(shard=sub_shard, prefix="s")
    assert with_id.subscribe(f"{topic_root}/ret/#", 1, sub_id=42) == [1]
    m = with_id.get()
    assert (m.payload, m.retain, m.sub_ids) == (b"retained", True, [42])
    assert with_id.subscribe(f"{topic_root}/big", 1, sub_id=268435455) == [1]
    without = mqtt5_client(shard=sub_shard, prefix="n")
    assert without.subscribe(f"{topic_root}/ret/#", 1) == [1]
    assert without.get().payload == b"retained"
    pub.publish(f"{topic_root}/ret/x", b"live", qos=1)
    pub.publish(f"{topic_root}/big", b"max-id", qos=1)
    m1, m2 = with_id.expect(2)
    assert (m1.payload, m1.sub_ids) == (b"live", [42])
    assert (m2.payload, m2.sub_ids) == (b"max-id", [268435455])
    m = without.get()
    assert m.payload == b"live" and "SubscriptionIdentifier" not in m.props, m.props


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_overlapping_subscriptions_carry_their_identifiers(mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.4-3] [MQTT-3.3.4-4] [MQTT-3.3.4-5] One client, two matching
    subscriptions with identifiers 7 and 9: whether the server sends one copy
    or two, every identifier reaches the client, each copy carries only
    identifiers of matching subscriptions, and no copy lacks one."""
    sub = mqtt5_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(f"{topic_root}/#", 1, sub_id=7) == [1]
    assert sub.subscribe(f"{topic_root}/+/x", 1, sub_id=9) == [1]
    assert sub.subscribe(f"{topic_root}/other", 1, sub_id=11) == [1]
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    pub.publish(f"{topic_root}/a/x", b"both", qos=1)
    pub.publish(f"{topic_root}/sentinel", b"end", qos=1)
    sentinel, copies = sub.get_until(lambda m: m.payload == b"end")
    assert sentinel.sub_ids == [7]
    assert 1 <= len(copies) <= 2 and all(m.payload == b"both" for m in copies), copies
    ids = [i for m in copies for i in m.sub_ids]
    assert sorted(ids) == [7, 9], ids
    assert all(m.sub_ids for m in copies)


@pytest.mark.skipif(IS_MOSQUITTO, reason="mosquitto sends one copy per matching subscription (allowed "
                                         "by [MQTT-3.3.4-5]); shardmq sends a single copy")
@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_overlapping_subscriptions_single_copy(mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.4-2] [MQTT-3.3.4-4] shardmq delivers one copy for
    overlapping subscriptions of one client, at the maximum QoS of the
    matching subscriptions, carrying the identifiers of both (in any order)."""
    sub = mqtt5_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(f"{topic_root}/#", 0, sub_id=7) == [0]
    assert sub.subscribe(f"{topic_root}/+/x", 2, sub_id=9) == [2]
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    pub.publish(f"{topic_root}/a/x", b"once", qos=2)
    pub.publish(f"{topic_root}/sentinel", b"end", qos=1)
    # paho hands a QoS 2 message over at PUBREL, after the QoS 0 sentinel may have
    # been handed over: gather both, then make sure no second copy follows.
    m = sub.get()
    got = [m] + ([] if m.payload != b"end" else [sub.get()]) + sub.collect(0.3)
    copies = [m for m in got if m.payload == b"once"]
    assert len(copies) == 1 and len(got) == 2, got
    assert (copies[0].payload, copies[0].qos) == (b"once", 2)
    assert sorted(copies[0].sub_ids) == [7, 9]


@pytest.mark.parametrize("shard", [0, 1])
def test_resubscribe_replaces_subscription_identifier(mqtt5_client, topic_root, shard):
    """[MQTT-3.8.4-3] Subscribing again to the same filter replaces the
    subscription, its Subscription Identifier included: id 3, then id 4,
    then none."""
    t = f"{topic_root}/x"
    sub = mqtt5_client(shard=shard, prefix="s")
    pub = mqtt5_client(shard=1 - shard, prefix="p")
    for sid, want in [(3, [3]), (4, [4]), (None, [])]:
        assert sub.subscribe(t, 1, sub_id=sid) == [1]
        pub.publish(t, b"id%s" % str(sid).encode(), qos=1)
        m = sub.get()
        assert (m.payload, m.sub_ids if "SubscriptionIdentifier" in m.props else []) == \
            (b"id%s" % str(sid).encode(), want)
    sub.expect_none(0.2)


# --------------------------------------------------------------------------
# Client's Maximum Packet Size and Receive Maximum
# --------------------------------------------------------------------------

@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_client_maximum_packet_size(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.1.2-24] [MQTT-3.1.2-25] A client with Maximum Packet Size 200
    never gets a larger packet: a 500-byte message is skipped for it (and
    treated as sent: the next message still arrives), other subscribers get
    it; small messages before and after arrive in order."""
    t = f"{topic_root}/m"
    r = raw5()
    assert r.connect5(broker.client_id("mp", sub_shard), props=[(MAXIMUM_PACKET_SIZE, 200)]).reason_code == 0
    assert r.subscribe5(1, [(t, sub_opts(1))]) == [1]
    other = mqtt5_client(shard=sub_shard, prefix="o")
    assert other.subscribe(t, 1) == [1]
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    for payload in (b"small-1", b"B" * 500, b"small-2"):
        pub.publish(t, payload, qos=1)
    assert [m.payload for m in other.expect(3)] == [b"small-1", b"B" * 500, b"small-2"]
    got = []
    while len(got) < 2:
        p, _ = r.recv_until(PUBLISH)
        assert len(p.body) + 2 <= 200, f"packet of {len(p.body) + 2}+ bytes sent to a 200-byte client"
        m = parse_publish5(p)
        r.send(puback5(m.pid))
        got.append(m.payload)
    assert got == [b"small-1", b"small-2"]
    r.expect_no_packet(0.3)


def _flow_setup(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard, n):
    t = f"{topic_root}/fc"
    r = raw5()
    assert r.connect5(broker.client_id("fc", sub_shard), props=[(RECEIVE_MAXIMUM, 2)]).reason_code == 0
    assert r.subscribe5(1, [(t, sub_opts(2))]) == [2]
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    for i in range(n):
        pub.publish(t, b"%d" % i, qos=1 + i % 2)
    return r


def _recv_window(r, quiet=0.4):
    """PUBLISHes that arrive before ``quiet`` seconds of silence."""
    out = []
    while True:
        try:
            p = r.recv_packet(quiet)
        except TimeoutError:
            return out
        assert p.type == PUBLISH, f"unexpected {p}"
        out.append(parse_publish5(p))


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_receive_maximum_first_window(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.4-9] [MQTT-4.9.0-2] A client with Receive Maximum 2 that
    acknowledges nothing gets exactly 2 of 6 pending QoS 1/2 messages; the
    server still answers PINGREQ meanwhile [MQTT-3.3.4-10] [MQTT-4.9.0-3]."""
    r = _flow_setup(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard, 6)
    first = _recv_window(r)
    assert [m.payload for m in first] == [b"0", b"1"]
    r.send(pingreq5())
    assert r.recv_packet().type == PINGRESP


@pytest.mark.skipif(IS_MOSQUITTO, reason="mosquitto 2.0.11 sends two new PUBLISHes per acknowledgement, "
                                         "exceeding the client's Receive Maximum ([MQTT-3.3.4-9])")
@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_receive_maximum_never_exceeded(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.4-9] [MQTT-4.9.0-2] With Receive Maximum 2 the server never
    has more than 2 unacknowledged QoS 1/2 PUBLISHes toward the client: a
    QoS 1 slot frees at PUBACK, a QoS 2 slot at PUBCOMP (not at PUBREC).
    Completing one message at a time, all 8 arrive in order, with never
    more than 2 outstanding."""
    r = _flow_setup(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard, 8)
    outstanding = _recv_window(r)
    assert len(outstanding) == 2
    delivered = [m.payload for m in outstanding]
    while outstanding:
        m = outstanding.pop(0)
        if m.qos == 1:
            r.send(puback5(m.pid))
        else:
            r.send(pubrec5(m.pid))
            p, _ = r.recv_until(PUBREL)
            assert p.pid() == m.pid
            extra = [parse_publish5(x) for x in r.pending if x.type == PUBLISH]
            r.pending.clear()
            # m's slot is still taken until PUBCOMP
            assert len(outstanding) + 1 + len(extra) <= 2, \
                f"a QoS 2 slot was freed at PUBREC: {len(outstanding) + 1 + len(extra)} outstanding"
            outstanding += extra
            delivered += [x.payload for x in extra]
            r.send(pubcomp5(m.pid))
        new = _recv_window(r, quiet=0.3)
        outstanding += new
        delivered += [x.payload for x in new]
        assert len(outstanding) <= 2, f"{len(outstanding)} unacknowledged PUBLISHes outstanding"
    assert delivered == [b"%d" % i for i in range(8)]


@pytest.mark.parametrize("shard", [0, 1])
def test_receive_maximum_slot_freed_for_own_messages(broker, raw5, shard, topic_root):
    """[MQTT-4.9.0-1] [MQTT-3.3.4-9] The Eclipse Paho interoperability suite's
    test_flow_control1: a client with Receive Maximum 2, subscribed at QoS 2,
    publishes three QoS 1 messages to its own topic. It gets two; once it
    acknowledges the first, the third arrives."""
    t = f"{topic_root}/own"
    r = raw5()
    assert r.connect5(broker.client_id("fc1", shard), props=[(RECEIVE_MAXIMUM, 2)]).reason_code == 0
    assert r.subscribe5(1, [(t, sub_opts(2))]) == [2]
    for i in range(3):
        r.send(publish5(t, b"%d" % i, qos=1, pid=10 + i))
    first = [r.recv_publish5() for _ in range(2)]
    assert [m.payload for m in first] == [b"0", b"1"]
    for i in range(3):
        assert parse_ack5(r.recv_until(PUBACK)[0])[0] == 10 + i
    r.expect_no_packet(0.3)
    r.send(puback5(first[0].pid))
    # At once: not after the shard's one-second backlog rule lets the PUBACK in.
    third = r.recv_publish5(timeout=0.5)
    assert third.payload == b"2"


@pytest.mark.parametrize("sent_qos,ack", [(1, "pubrec"), (1, "pubcomp"), (2, "puback"), (2, "pubcomp")])
def test_wrong_ack_kind_is_protocol_error(broker, raw5, mqtt5_client, topic_root, sent_qos, ack):
    """[MQTT-4.8.0-1] An acknowledgement the packet id's exchange does not
    expect (PUBREC or PUBCOMP for QoS 1; PUBACK, or PUBCOMP before PUBREL,
    for QoS 2) is a Protocol Error: DISCONNECT 0x82, then the close."""
    t = f"{topic_root}/wrong"
    r = raw5()
    assert r.connect5(broker.client_id("wa", 1)).reason_code == 0
    assert r.subscribe5(1, [(t, sub_opts(2))]) == [2]
    mqtt5_client(shard=0, prefix="p").publish(t, b"m", qos=sent_qos)
    m = r.recv_publish5()
    assert m.qos == sent_qos
    r.send({"puback": puback5, "pubrec": pubrec5, "pubcomp": pubcomp5}[ack](m.pid))
    assert_disconnect_reason(r.expect_disconnect(), {RC_PROTOCOL_ERROR}, ack)
