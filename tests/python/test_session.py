"""Persistent (CleanSession=0) and clean sessions."""

import pytest

from mqtt_helpers import PUBLISH, SHARD_PAIRS, puback_packet, subscribe_packet

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
@pytest.mark.parametrize("qos", [1, 2])
def test_offline_messages_delivered_on_reconnect(broker, mqtt_client, topic_root, pub_shard, sub_shard, qos):
    """[MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-3.2.2-2] A CleanSession=0 client
    that disconnects keeps its subscriptions; QoS 1/2 messages published
    while it is offline are delivered, in order, when it reconnects, and the
    CONNACK has Session Present=1. The first CONNECT had Session Present=0
    [MQTT-3.2.2-3]."""
    cid = broker.client_id("ps", sub_shard)
    t = f"{topic_root}/offline"
    sub = mqtt_client(client_id=cid, clean_session=False, connect=False)
    assert sub.connect() is False, "fresh persistent session must have Session Present=0"
    assert sub.subscribe(t, qos) == [qos]
    sub.disconnect()

    pub = mqtt_client(shard=pub_shard, prefix="p")
    for i in range(10):
        pub.publish(t, b"off%d" % i, qos=qos)

    sub2 = mqtt_client(client_id=cid, clean_session=False, connect=False)
    assert sub2.connect() is True, "CONNACK Session Present must be 1"
    msgs = sub2.expect(10)
    assert [m.payload for m in msgs] == [b"off%d" % i for i in range(10)]
    assert all(m.qos == qos and m.topic == t for m in msgs)
    # the stored subscription is live again without re-subscribing
    pub.publish(t, b"online", qos=qos)
    m = sub2.get()
    assert m.payload == b"online"


@pytest.mark.parametrize("shard", [0, 1])
def test_clean_session_discards_state(broker, mqtt_client, topic_root, shard):
    """[MQTT-3.1.2-6] [MQTT-3.2.2-1] Connecting with CleanSession=1 discards
    a previous persistent session: Session Present=0 and the old
    subscription is gone; a later CleanSession=0 connect starts fresh
    (Session Present=0)."""
    cid = broker.client_id("cs", shard)
    t = f"{topic_root}/old"
    c = mqtt_client(client_id=cid, clean_session=False, connect=False)
    c.connect()
    assert c.subscribe(t, 1) == [1]
    c.disconnect()

    c2 = mqtt_client(client_id=cid, clean_session=True, connect=False)
    assert c2.connect() is False, "CleanSession=1 must get Session Present=0"
    assert c2.subscribe(f"{topic_root}/sentinel", 1) == [1]
    pub = mqtt_client(shard=1 - shard, prefix="p")
    pub.publish(t, b"old-subscription", qos=1)
    pub.publish(f"{topic_root}/sentinel", b"sentinel", qos=1)
    _, before = c2.get_until(lambda m: m.payload == b"sentinel")
    assert before == [] and c2.collect(0.3) == [], "subscription of the discarded session still active"
    c2.disconnect()

    c3 = mqtt_client(client_id=cid, clean_session=False, connect=False)
    assert c3.connect() is False, "session ended with the CleanSession=1 connection"


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_unacked_qos1_redelivered_with_dup(broker, raw_client, mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-4.4.0-1] [MQTT-3.3.1-1] A QoS 1 message delivered to a
    CleanSession=0 client that never acknowledged it is re-sent on reconnect,
    with DUP=1 and the original packet id."""
    cid = broker.client_id("re", sub_shard)
    t = f"{topic_root}/redeliver"
    raw = raw_client()
    assert raw.connect(cid, clean=False) == (0, 0)
    raw.send(subscribe_packet(1, [(t, 1)]))
    assert raw.recv_packet().suback() == (1, [1])
    pub = mqtt_client(shard=pub_shard, prefix="p")
    pub.publish(t, b"unacked", qos=1)
    first = raw.recv_until(PUBLISH)[0].publish()
    assert (first.payload, first.qos, first.dup) == (b"unacked", 1, False)
    raw.close()  # no PUBACK

    raw2 = raw_client()
    assert raw2.connect(cid, clean=False) == (1, 0)
    again = raw2.recv_until(PUBLISH)[0].publish()
    assert (again.topic, again.payload, again.qos) == (t, b"unacked", 1)
    assert again.dup is True, "re-delivery must set DUP=1"
    assert again.pid == first.pid, "re-delivery must reuse the original packet id"
    raw2.send(puback_packet(again.pid))
    assert raw2.is_open()


@pytest.mark.parametrize("shard", [0, 1])
def test_takeover_keeps_persistent_session(broker, mqtt_client, topic_root, shard):
    """[MQTT-3.1.4-2] [MQTT-3.2.2-2] A CleanSession=0 takeover (second
    connection with the same id while the first is still connected) resumes
    the session: Session Present=1 and the subscription keeps delivering."""
    cid = broker.client_id("tk", shard)
    t = f"{topic_root}/tk"
    a = mqtt_client(client_id=cid, clean_session=False, connect=False)
    a.connect()
    assert a.subscribe(t, 1) == [1]
    b = mqtt_client(client_id=cid, clean_session=False, connect=False)
    assert b.connect() is True
    assert a.wait_disconnected(5), "old connection not disconnected by takeover"
    pub = mqtt_client(shard=1 - shard, prefix="p")
    pub.publish(t, b"after-takeover", qos=1)
    assert b.get().payload == b"after-takeover"


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_offline_wildcard_subscription(broker, mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.1.2-5] Stored wildcard subscriptions also queue messages while
    offline (several topics, order kept per topic)."""
    cid = broker.client_id("pw", sub_shard)
    sub = mqtt_client(client_id=cid, clean_session=False, connect=False)
    sub.connect()
    assert sub.subscribe(f"{topic_root}/+/w", 1) == [1]
    sub.disconnect()
    pub = mqtt_client(shard=pub_shard, prefix="p")
    for i in range(6):
        pub.publish(f"{topic_root}/{i % 3}/w", b"%d" % i, qos=1)
    sub2 = mqtt_client(client_id=cid, clean_session=False, connect=False)
    assert sub2.connect() is True
    msgs = sub2.expect(6)
    for k in range(3):
        assert [m.payload for m in msgs if m.topic == f"{topic_root}/{k}/w"] == [b"%d" % k, b"%d" % (k + 3)]
