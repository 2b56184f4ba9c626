"""MQTT 5.0 sessions: Clean Start and Session Expiry Interval (which replace
CleanSession), queued messages while offline, resending unacknowledged
messages, and Message Expiry of queued messages.

Intervals are short (1-2 s). Where a test must let an interval pass there
is nothing else to wait on, so it sleeps for the interval plus a margin; one
such test is kept per behaviour (session expiry, queued message expiry), and
the variants run in virtual time in the core's simulation (`shard::core::sim`).
"""

import time

import pytest

from mqtt_helpers import SHARD_PAIRS
from mqtt5_helpers import (  # noqa: F401  (fixtures)
    MESSAGE_EXPIRY_INTERVAL,
    SESSION_EXPIRY_INTERVAL,
    disconnect5,
    mqtt5_client,
    puback5,
    pubcomp5,
    pubrec5,
    raw5,
    sub_opts,
)

pytestmark = pytest.mark.timeout(30)


def _offline_subscriber(broker, raw5, shard, prefix, filters, expiry=None, how="disconnect"):
    """Connect (Clean Start 1, optional Session Expiry), subscribe, go away.
    Returns the client id."""
    cid = broker.client_id(prefix, shard)
    r = raw5()
    props = [(SESSION_EXPIRY_INTERVAL, expiry)] if expiry is not None else []
    assert r.connect5(cid, props=props).reason_code == 0
    assert r.subscribe5(1, filters) == [f[1] & 3 for f in filters]
    if how == "disconnect":
        r.send(disconnect5())
        assert r.wait_closed() == []
    else:
        r.abort()
    return cid


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_session_kept_within_expiry(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.1.2-23] [MQTT-3.1.2-5] [MQTT-3.2.2-3] With Session Expiry 2 s
    the session outlives the connection: messages published while the client
    is offline (QoS 1 and QoS 2, with user properties) are queued; a
    reconnect with Clean Start=0 within the interval gets Session Present 1
    and receives them in order [MQTT-4.6.0-5], QoS and properties intact."""
    t = f"{topic_root}/q"
    cid = _offline_subscriber(broker, raw5, sub_shard, "sk", [(t, sub_opts(2))], expiry=2)
    pub = mqtt5_client(shard=pub_shard, prefix="pk")
    sent = [(b"m0", 1), (b"m1", 2), (b"m2", 1)]
    for payload, q in sent:
        pub.publish(t, payload, qos=q, props={"UserProperty": [("n", payload.decode())]})
    r = raw5()
    ca = r.connect5(cid, clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 2)])
    assert (ca.reason_code, ca.session_present) == (0, 1)
    for payload, q in sent:
        m = r.recv_publish5()
        assert (m.topic, m.payload, m.qos) == (t, payload, q)
        assert m.props.user_properties == [("n", payload.decode())]
        r.send(puback5(m.pid) if q == 1 else pubrec5(m.pid))
        if q == 2:
            p, _ = r.recv_until(6)  # PUBREL
            r.send(pubcomp5(p.pid()))
    r.expect_no_packet(0.3)


def test_session_discarded_after_expiry(broker, raw5, mqtt5_client, topic_root):
    """[MQTT-4.1.0-2] The server discards the session once the Session Expiry
    Interval (1 s) has passed after the close: a reconnect with Clean Start=0
    after 2 s gets Session Present 0 [MQTT-3.2.2-3], no queued message, and
    the old subscription is gone (a new publication is not delivered)."""
    shard = 1
    t = f"{topic_root}/q"
    cid = _offline_subscriber(broker, raw5, shard, "se", [(t, sub_opts(1))], expiry=1)
    pub = mqtt5_client(shard=1 - shard, prefix="pe")
    pub.publish(t, b"queued", qos=1)
    time.sleep(2.0)  # the 1 s interval must pass
    r = raw5()
    ca = r.connect5(cid, clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 0)])
    assert (ca.reason_code, ca.session_present) == (0, 0)
    pub.publish(t, b"after", qos=1)
    r.expect_no_packet(0.4)


@pytest.mark.parametrize("shard,how", [(0, "disconnect"), (1, "network-drop")])
def test_session_expiry_absent_ends_session_at_close(broker, raw5, mqtt5_client, topic_root, shard, how):
    """[MQTT-3.1.2-23] 3.1.2.11.2: an absent Session Expiry Interval means 0:
    the session ends when the connection closes (by DISCONNECT or by a
    network drop). Clean Start=0 then gets Session Present 0 and nothing
    published meanwhile."""
    t = f"{topic_root}/q"
    cid = _offline_subscriber(broker, raw5, shard, "sa", [(t, sub_opts(1))], how=how)
    pub = mqtt5_client(shard=1 - shard, prefix="pa")
    pub.publish(t, b"lost", qos=1)
    r = raw5()
    ca = r.connect5(cid, clean_start=False)
    assert (ca.reason_code, ca.session_present) == (0, 0)
    r.expect_no_packet(0.3)


@pytest.mark.parametrize("shard", [0, 1])
def test_session_survives_network_drop(broker, raw5, mqtt5_client, topic_root, shard):
    """[MQTT-3.1.2-23] A session with Session Expiry 10 s survives a TCP reset:
    the message published meanwhile is delivered after a Clean Start=0
    reconnect with Session Present 1."""
    t = f"{topic_root}/q"
    cid = _offline_subscriber(broker, raw5, shard, "sd", [(t, sub_opts(1))], expiry=10, how="rst")
    pub = mqtt5_client(shard=1 - shard, prefix="pd")
    pub.publish(t, b"kept", qos=1)
    r = raw5()
    ca = r.connect5(cid, clean_start=False)
    assert (ca.reason_code, ca.session_present) == (0, 1)
    m = r.recv_publish5()
    assert (m.topic, m.payload, m.qos) == (t, b"kept", 1)
    r.send(puback5(m.pid))
    r.send(disconnect5())


@pytest.mark.parametrize("shard", [0, 1])
def test_clean_start_discards_existing_session(broker, raw5, mqtt5_client, topic_root, shard):
    """[MQTT-3.1.2-4] [MQTT-3.2.2-2] Clean Start=1 discards an existing session
    (Session Expiry 60): Session Present 0, no queued message, and the old
    subscription no longer delivers."""
    t = f"{topic_root}/q"
    cid = _offline_subscriber(broker, raw5, shard, "sc", [(t, sub_opts(1))], expiry=60)
    pub = mqtt5_client(shard=1 - shard, prefix="pc")
    pub.publish(t, b"old", qos=1)
    r = raw5()
    ca = r.connect5(cid, clean_start=True)
    assert (ca.reason_code, ca.session_present) == (0, 0)
    pub.publish(t, b"new", qos=1)
    r.expect_no_packet(0.4)


def test_first_connect_with_clean_start_0_has_no_session(broker, raw5):
    """[MQTT-3.1.2-6] [MQTT-3.2.2-3] Clean Start=0 for a client id without a
    session creates a new one: Session Present 0."""
    r = raw5()
    ca = r.connect5(broker.client_id("nf", 1), clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 5)])
    assert (ca.reason_code, ca.session_present) == (0, 0)
    r.send(disconnect5(0, [(SESSION_EXPIRY_INTERVAL, 0)]))


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_unacked_qos1_resent_on_resume(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-4.4.0-1] [MQTT-3.3.1-1] A QoS 1 message sent to a v5 client that
    never acknowledged it is re-sent after a Clean Start=0 reconnect, with
    DUP=1, the same packet id, and its properties."""
    t = f"{topic_root}/q"
    cid = broker.client_id("ru", sub_shard)
    r = raw5()
    assert r.connect5(cid, props=[(SESSION_EXPIRY_INTERVAL, 10)]).reason_code == 0
    assert r.subscribe5(1, [(t, sub_opts(1))]) == [1]
    pub = mqtt5_client(shard=pub_shard, prefix="pu")
    pub.publish(t, b"unacked", qos=1, props={"ContentType": "x/y"})
    first = r.recv_publish5()
    assert (first.payload, first.dup) == (b"unacked", False)
    r.close()
    r2 = raw5()
    ca = r2.connect5(cid, clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 0)])
    assert (ca.reason_code, ca.session_present) == (0, 1)
    again = r2.recv_publish5()
    assert (again.payload, again.dup, again.pid, again.qos) == (b"unacked", True, first.pid, 1)
    assert again.props.get(0x03) == "x/y"
    r2.send(puback5(again.pid))
    r2.expect_no_packet(0.3)


def test_queued_message_expiry(broker, raw5, mqtt5_client, topic_root):
    """[MQTT-3.3.2-5] A queued message whose Message Expiry Interval (1 s)
    passed while the subscriber was offline is not delivered; one with 60 s
    is, carrying the interval minus the time it waited [MQTT-3.3.2-6]
    (at most 59 after waiting 2.2 s, and more than 0)."""
    pub_shard, sub_shard = 0, 1
    t = f"{topic_root}/q"
    cid = _offline_subscriber(broker, raw5, sub_shard, "mx", [(t, sub_opts(1))], expiry=30)
    pub = mqtt5_client(shard=pub_shard, prefix="px")
    pub.publish(t, b"short", qos=1, props={"MessageExpiryInterval": 1})
    pub.publish(t, b"long", qos=1, props={"MessageExpiryInterval": 60})
    time.sleep(2.2)  # the short interval must pass (with slack for 1-second clocks)
    r = raw5()
    ca = r.connect5(cid, clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 0)])
    assert (ca.reason_code, ca.session_present) == (0, 1)
    m = r.recv_publish5()
    assert m.payload == b"long", f"expired message delivered: {m}"
    assert 0 < m.props.get(MESSAGE_EXPIRY_INTERVAL, 0) <= 59, m.props
    r.send(puback5(m.pid))
    r.expect_no_packet(0.3)
