"""Will messages (last will and testament)."""

import time

import pytest

from mqtt_helpers import SHARD_PAIRS, connect_packet, disconnect_packet, publish_packet

pytestmark = pytest.mark.timeout(30)


def _raw_with_will(broker, raw_client, shard, topic, payload, qos=0, retain=False, keepalive=60):
    raw = raw_client(timeout=10)
    assert raw.connect(broker.client_id("w", shard), keepalive=keepalive,
                       will=(topic, payload, qos, retain)) == (0, 0)
    return raw


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
@pytest.mark.parametrize("how", ["fin", "rst", "paho"])
def test_will_on_socket_drop(broker, raw_client, mqtt_client, topic_root, pub_shard, sub_shard, how):
    """[MQTT-3.1.2-8] When the network connection closes without DISCONNECT
    (FIN, RST, or a paho client whose socket is shut down) the server
    publishes the will message, non-retained [MQTT-3.1.2-16]."""
    t = f"{topic_root}/will"
    sub = mqtt_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    if how == "paho":
        c = mqtt_client(shard=pub_shard, prefix="wp", will=(t, b"gone", 1, False))
        c.drop()
    else:
        raw = _raw_with_will(broker, raw_client, pub_shard, t, b"gone", qos=1)
        raw.abort() if how == "rst" else raw.close()
    m = sub.get()
    assert (m.topic, m.payload, m.qos, m.retain) == (t, b"gone", 1, False)
    sub.expect_none(0.3)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_no_will_after_clean_disconnect(broker, raw_client, mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.1.2-10] [MQTT-3.14.4-3] After a DISCONNECT packet the will is
    discarded. Control: a second client with a will that drops its socket
    does get its will published, so the subscription demonstrably works."""
    t = f"{topic_root}/will"
    sub = mqtt_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    clean = _raw_with_will(broker, raw_client, pub_shard, t, b"clean-will", qos=1)
    clean.send(disconnect_packet())
    clean.wait_closed()
    paho_clean = mqtt_client(shard=pub_shard, prefix="wc", will=(t, b"paho-clean-will", 1, False))
    paho_clean.disconnect()
    control = _raw_with_will(broker, raw_client, 1 - pub_shard, t, b"control-will", qos=1)
    control.close()
    _, before = sub.get_until(lambda m: m.payload == b"control-will")
    late = sub.collect(0.5)
    assert [m.payload for m in before + late] == [], "will published after a clean DISCONNECT"


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_will_retain_honoured(broker, raw_client, mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.1.2-17] A will with Will Retain=1 is published as a retained
    message: a subscriber arriving later gets it with RETAIN=1 (while an
    already-connected subscriber gets it with RETAIN=0 [MQTT-3.3.1-9])."""
    t = f"{topic_root}/will"
    existing = mqtt_client(shard=sub_shard, prefix="e")
    assert existing.subscribe(t, 1) == [1]
    raw = _raw_with_will(broker, raw_client, pub_shard, t, b"retained-will", qos=1, retain=True)
    raw.close()
    m = existing.get()
    assert (m.payload, m.retain) == (b"retained-will", False)
    late = mqtt_client(shard=sub_shard, prefix="l")
    assert late.subscribe(t, 1) == [1]
    m = late.get()
    assert (m.topic, m.payload, m.retain, m.qos) == (t, b"retained-will", True, 1)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_will_without_retain_not_stored(broker, raw_client, mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.1.2-16] A will with Will Retain=0 is published non-retained:
    a later subscriber does not get it."""
    t = f"{topic_root}/will"
    existing = mqtt_client(shard=sub_shard, prefix="e")
    assert existing.subscribe(t, 1) == [1]
    raw = _raw_with_will(broker, raw_client, pub_shard, t, b"plain-will", qos=1, retain=False)
    raw.close()
    assert existing.get().payload == b"plain-will"
    late = mqtt_client(shard=sub_shard, prefix="l")
    assert late.subscribe(t, 1) == [1]
    late.expect_none(0.5)


@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_qos(broker, raw_client, mqtt_client, topic_root, will_qos):
    """[MQTT-3.1.2-14] [MQTT-3.8.4-6] The will is published with its Will QoS
    (delivered to a QoS 2 subscriber on the other shard at that QoS)."""
    t = f"{topic_root}/will"
    sub = mqtt_client(shard=1, prefix="s")
    assert sub.subscribe(t, 2) == [2]
    raw = _raw_with_will(broker, raw_client, 0, t, b"q%d" % will_qos, qos=will_qos)
    raw.close()
    m = sub.get()
    assert (m.payload, m.qos) == (b"q%d" % will_qos, will_qos)


def test_will_on_keepalive_expiry(broker, raw_client, mqtt_client, topic_root):
    """[MQTT-3.1.2-8] [MQTT-3.1.2-24] A client that stops talking (keep-alive
    1 s, socket left open) is disconnected and its will published (bounded at
    10 s to tolerate coarse broker timers)."""
    t = f"{topic_root}/will"
    sub = mqtt_client(shard=1, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    raw = _raw_with_will(broker, raw_client, 0, t, b"silent", qos=1, keepalive=1)
    t0 = time.monotonic()
    m = sub.get(timeout=10)
    assert m.payload == b"silent"
    assert time.monotonic() - t0 >= 0.9, "will published before the keep-alive period elapsed"
    raw.wait_closed(timeout=5)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_will_on_protocol_error(broker, raw_client, mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.1.2-8] The server closing the connection because of a protocol
    error (PUBLISH with QoS 3) publishes the will."""
    t = f"{topic_root}/will"
    sub = mqtt_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    raw = _raw_with_will(broker, raw_client, pub_shard, t, b"violated", qos=1)
    raw.send(publish_packet(f"{topic_root}/x", b"bad", flags=0x06))
    raw.wait_closed()
    assert sub.get().payload == b"violated"


def test_will_from_mqtt31_client(broker, raw_client, mqtt_client, topic_root):
    """[MQTT-3.1.2-8] Wills also work for MQTT 3.1 ("MQIsdp") connections."""
    t = f"{topic_root}/will"
    sub = mqtt_client(shard=1, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    raw = raw_client()
    raw.send(connect_packet(broker.client_id("w31-", 0), proto_name="MQIsdp", proto_level=3,
                            will=(t, b"v31-will", 1, False)))
    assert raw.recv_packet().connack() == (0, 0)
    raw.close()
    m = sub.get()
    assert (m.payload, m.qos) == (b"v31-will", 1)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
@pytest.mark.parametrize("clean", [True, False])
def test_will_published_on_takeover(broker, raw_client, mqtt_client, topic_root, pub_shard, sub_shard, clean):
    """[MQTT-3.1.2-8] A takeover closes the old network connection without a
    DISCONNECT from its client, so the old connection's will is published (as
    Mosquitto does), whether the new connection resumes the session or not. The
    new connection's own will is not."""
    t = f"{topic_root}/will"
    sub = mqtt_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    client_id = broker.client_id("w", pub_shard)
    old = raw_client(timeout=10)
    assert old.connect(client_id, clean=clean, will=(t, b"old-will", 1, False)) == (0, 0)
    new = raw_client(timeout=10)
    session_present, rc = new.connect(client_id, clean=clean, will=(t, b"new-will", 1, False))
    assert (session_present, rc) == (int(not clean), 0)
    old.wait_closed()
    m = sub.get()
    assert (m.topic, m.payload, m.qos) == (t, b"old-will", 1)
    sub.expect_none(0.3)
