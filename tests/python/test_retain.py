"""Retained messages.

Retained messages are published at QoS 1 and the PUBACK is awaited before the
subscriber (on another shard) subscribes: once the broker acknowledged a
retained PUBLISH, a SUBSCRIBE that is issued afterwards must see it.
"""

import pytest

from mqtt_helpers import SHARD_PAIRS

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_retained_delivered_on_subscribe(mqtt_client, topic_root, pub_shard, sub_shard, sub_qos):
    """[MQTT-3.3.1-5] [MQTT-3.3.1-6] A retained message is stored and sent to
    a later subscriber with RETAIN=1, at min(message QoS 1, subscription QoS)
    [MQTT-3.8.4-6]."""
    pub = mqtt_client(shard=pub_shard, prefix="p")
    t = f"{topic_root}/r"
    pub.publish(t, b"kept", qos=1, retain=True)
    sub = mqtt_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(t, sub_qos) == [sub_qos]
    m = sub.get()
    assert (m.topic, m.payload, m.retain, m.qos) == (t, b"kept", True, min(1, sub_qos))
    sub.expect_none(0.3)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_retained_replaced_by_newer(mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.1-5] A new retained message on a topic replaces the previous
    one; publishers on two different shards take turns."""
    pubs = [mqtt_client(shard=pub_shard, prefix="p"), mqtt_client(shard=1 - pub_shard, prefix="q")]
    t = f"{topic_root}/r"
    for i in range(6):
        pubs[i % 2].publish(t, b"v%d" % i, qos=1, retain=True)
    sub = mqtt_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    m = sub.get()
    assert (m.payload, m.retain) == (b"v5", True)
    sub.expect_none(0.3)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_retained_last_acknowledged_wins(mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.1-5] [MQTT-3.3.1-10] Publishers on two shards alternate sets
    and clears of the same topics, each waiting for its PUBACK: whatever order
    the messages reach the topic's partition in, the last acknowledged one
    decides what is retained."""
    pubs = [mqtt_client(shard=pub_shard, prefix="p"), mqtt_client(shard=1 - pub_shard, prefix="q")]
    topics = [f"{topic_root}/r{k}" for k in range(4)]
    last = {}
    for i in range(40):
        t = topics[i % len(topics)]
        payload = b"" if i % 7 == 3 else b"v%d" % i
        pubs[(i // len(topics)) % 2].publish(t, payload, qos=1, retain=True)
        pubs[(i // len(topics) + 1) % 2].publish(t, b"w%d" % i, qos=1, retain=True)
        last[t] = b"w%d" % i
        if i % 5 == 4:
            pubs[i % 2].publish(t, b"", qos=1, retain=True)
            last[t] = None
    sub = mqtt_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(f"{topic_root}/#", 1) == [1]
    expected = {t: p for t, p in last.items() if p is not None}
    got = {}
    for _ in expected:
        m = sub.get()
        assert m.retain
        got[m.topic] = m.payload
    assert got == expected
    sub.expect_none(0.3)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_retained_cleared_by_empty_payload(mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.1-10] [MQTT-3.3.1-11] A retained PUBLISH with an empty
    payload clears the retained message (and is not itself stored), while it
    is still forwarded to existing subscribers as a normal message."""
    t = f"{topic_root}/r"
    existing = mqtt_client(shard=sub_shard, prefix="e")
    assert existing.subscribe(t, 1) == [1]
    pub = mqtt_client(shard=pub_shard, prefix="p")
    pub.publish(t, b"to-be-cleared", qos=1, retain=True)
    assert existing.get().payload == b"to-be-cleared"
    pub.publish(t, b"", qos=1, retain=True)
    m = existing.get()
    assert (m.topic, m.payload, m.retain) == (t, b"", False)

    late = mqtt_client(shard=sub_shard, prefix="l")
    assert late.subscribe(t, 1) == [1]
    pub.publish(t, b"live", qos=1)
    first, before = late.get_until(lambda m: m.payload == b"live")
    assert before == [], f"cleared retained message still delivered: {before}"
    assert first.retain is False
    late.expect_none(0.3)


@pytest.mark.parametrize("sub_shard", [0, 1])
def test_wildcard_subscribe_gets_all_retained(mqtt_client, topic_root, sub_shard):
    """[MQTT-3.3.1-6] [MQTT-3.8.4-3] A wildcard subscription receives the
    retained messages of all matching topics: 20 topics retained by
    publishers on shard 0 and shard 1; a non-matching one is excluded."""
    pubs = [mqtt_client(shard=0, prefix="p"), mqtt_client(shard=1, prefix="q")]
    expected = {}
    for i in range(20):
        t = f"{topic_root}/many/{i % 4}/t{i}"
        expected[t] = b"val%d" % i
        pubs[i % 2].publish(t, expected[t], qos=1, retain=True)
    pubs[0].publish(f"{topic_root}/other/x", b"nope", qos=1, retain=True)
    sub = mqtt_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(f"{topic_root}/many/#", 1) == [1]
    msgs = sub.expect(20)
    sub.expect_none(0.3)
    assert {m.topic: m.payload for m in msgs} == expected
    assert all(m.retain for m in msgs)
    # '+' in the middle also selects from the retained store
    sub2 = mqtt_client(shard=1 - sub_shard, prefix="s")
    assert sub2.subscribe(f"{topic_root}/many/+/t5", 0) == [0]
    m = sub2.get()
    assert (m.topic, m.payload, m.retain) == (f"{topic_root}/many/1/t5", b"val5", True)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_live_forward_has_retain_zero(mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.1-9] A retained PUBLISH forwarded to an already-established
    subscription is sent with RETAIN=0; a new subscription gets it with
    RETAIN=1 [MQTT-3.3.1-8]."""
    t = f"{topic_root}/live"
    sub = mqtt_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    pub = mqtt_client(shard=pub_shard, prefix="p")
    pub.publish(t, b"r1", qos=1, retain=True)
    m = sub.get()
    assert (m.payload, m.retain) == (b"r1", False)
    late = mqtt_client(shard=pub_shard, prefix="l")
    assert late.subscribe(t, 1) == [1]
    m = late.get()
    assert (m.payload, m.retain) == (b"r1", True)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_resubscribe_resends_retained(mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.8.4-3] Re-subscribing with an identical filter re-sends the
    matching retained messages."""
    t = f"{topic_root}/again"
    pub = mqtt_client(shard=pub_shard, prefix="p")
    pub.publish(t, b"again", qos=1, retain=True)
    sub = mqtt_client(shard=sub_shard, prefix="s")
    for _ in range(2):
        assert sub.subscribe(t, 1) == [1]
        m = sub.get()
        assert (m.payload, m.retain) == (b"again", True)
    sub.expect_none(0.3)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_retained_qos2(mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.1-5] [MQTT-3.8.4-6] A retained QoS 2 message is delivered to a
    QoS 2 subscriber at QoS 2 and to a QoS 1 subscriber at QoS 1."""
    t = f"{topic_root}/q2"
    pub = mqtt_client(shard=pub_shard, prefix="p")
    pub.publish(t, b"two", qos=2, retain=True)
    for q in (2, 1):
        sub = mqtt_client(shard=sub_shard, prefix="s")
        assert sub.subscribe(t, q) == [q]
        m = sub.get()
        assert (m.payload, m.retain, m.qos) == (b"two", True, q)
