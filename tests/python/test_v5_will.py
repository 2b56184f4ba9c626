"""MQTT 5.0 will messages: Will Delay Interval, the session end as the
latest moment for the will, cancelling the will by reconnecting in time,
and will properties.

Wills here are triggered by closing the socket without DISCONNECT. Timing
bounds are generous: a 1 s delay must not fire before 0.9 s and must fire
within 3 s.
"""

import time

import pytest

from mqtt_helpers import SHARD_PAIRS
from mqtt5_helpers import (  # noqa: F401  (fixtures)
    CONTENT_TYPE,
    CORRELATION_DATA,
    MESSAGE_EXPIRY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR,
    RESPONSE_TOPIC,
    SESSION_EXPIRY_INTERVAL,
    USER_PROPERTY,
    WILL_DELAY_INTERVAL,
    TOPIC_ALIAS,
    Will,
    disconnect5,
    mqtt5_client,
    publish5,
    raw5,
)

pytestmark = pytest.mark.timeout(30)


def _will_client(broker, raw5, shard, topic, payload, delay=None, expiry=None, props=(), prefix="w"):
    wprops = list(props)
    if delay is not None:
        wprops.append((WILL_DELAY_INTERVAL, delay))
    cprops = [(SESSION_EXPIRY_INTERVAL, expiry)] if expiry is not None else []
    cid = broker.client_id(prefix, shard)
    r = raw5(timeout=10)
    ca = r.connect5(cid, props=cprops, will=Will(topic, payload, qos=1, props=wprops))
    assert ca.reason_code == 0
    return r, cid


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_will_sent_after_will_delay(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.1.2-8] 3.1.3.2.2: with Will Delay Interval 1 s (and a session
    that outlives it, Session Expiry 10 s) the will is published after the
    delay: not before 0.9 s after the socket closed, and within 3 s."""
    t = f"{topic_root}/will"
    sub = mqtt5_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    r, _ = _will_client(broker, raw5, pub_shard, t, b"late", delay=1, expiry=10)
    r.close()
    t0 = time.monotonic()
    m = sub.get(timeout=3.0)
    elapsed = time.monotonic() - t0
    assert (m.topic, m.payload, m.qos) == (t, b"late", 1)
    assert elapsed >= 0.9, f"will published {elapsed:.2f}s after the close, before its 1 s delay"


@pytest.mark.parametrize("shard", [0, 1])
def test_will_sent_at_session_end_when_earlier(broker, raw5, mqtt5_client, topic_root, shard):
    """[MQTT-3.1.2-8] 3.1.3.2.2: the will is published when the Will Delay
    Interval passes or the session ends, whichever is first: with delay 30 s
    and Session Expiry 1 s it comes at the session end (0.9-3 s)."""
    t = f"{topic_root}/will"
    sub = mqtt5_client(shard=1 - shard, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    r, _ = _will_client(broker, raw5, shard, t, b"session-over", delay=30, expiry=1)
    r.close()
    t0 = time.monotonic()
    m = sub.get(timeout=3.5)
    elapsed = time.monotonic() - t0
    assert m.payload == b"session-over"
    assert elapsed >= 0.9, f"will published after {elapsed:.2f}s, before the session ended"


@pytest.mark.parametrize("shard", [1])
def test_will_without_delay_and_session_expiry_is_immediate(broker, raw5, mqtt5_client, topic_root, shard):
    """[MQTT-3.1.2-8] Without a Will Delay Interval the will is published as
    soon as the connection is lost, even though the session (Session Expiry
    10 s) lives on: well under the 1 s a delay would take."""
    t = f"{topic_root}/will"
    sub = mqtt5_client(shard=1 - shard, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    r, _ = _will_client(broker, raw5, shard, t, b"now", expiry=10)
    r.abort()
    t0 = time.monotonic()
    m = sub.get(timeout=3.0)
    assert m.payload == b"now"
    assert time.monotonic() - t0 < 0.9


@pytest.mark.parametrize("shard", [0, 1])
def test_will_cancelled_by_reconnect_within_delay(broker, raw5, mqtt5_client, topic_root, shard):
    """[MQTT-3.1.3-9] If a new connection to the session is made before the
    Will Delay Interval (1 s) has passed, the will is not sent: the client
    reconnects with Clean Start=0 right away (Session Present 1) and no will
    arrives in the following 1.6 s (a sentinel published after that
    window arrives alone)."""
    t = f"{topic_root}/will"
    sub = mqtt5_client(shard=1 - shard, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    r, cid = _will_client(broker, raw5, shard, t, b"must-not-appear", delay=1, expiry=10)
    r.close()
    r2 = raw5()
    ca = r2.connect5(cid, clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 10)])
    assert (ca.reason_code, ca.session_present) == (0, 1)
    early = sub.collect(1.6)
    pub = mqtt5_client(shard=shard, prefix="p")
    pub.publish(t, b"sentinel", qos=1)
    _, before = sub.get_until(lambda m: m.payload == b"sentinel")
    assert [m.payload for m in early + before] == [], "will published although the client came back in time"
    r2.send(disconnect5(0, [(SESSION_EXPIRY_INTERVAL, 0)]))
    r2.wait_closed()
    assert sub.collect(0.3) == [], "will published at a normal DISCONNECT of the new connection"


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_will_properties_forwarded(broker, raw5, mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.1.3-10] [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16]
    [MQTT-3.3.2-20] The will's properties reach a v5 subscriber unaltered:
    Payload Format Indicator, Content Type, Response Topic, Correlation Data,
    and user properties in their order, repeated keys included; Message
    Expiry Interval is forwarded (at most the value sent, and non-zero)."""
    t = f"{topic_root}/will"
    sub = mqtt5_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(t, 2) == [2]
    users = [("z", "1"), ("a", "2"), ("z", "3")]
    props = [(PAYLOAD_FORMAT_INDICATOR, 1), (CONTENT_TYPE, "application/json"),
             (RESPONSE_TOPIC, f"{topic_root}/reply"), (CORRELATION_DATA, b"\x00\x01\xff"),
             (MESSAGE_EXPIRY_INTERVAL, 120)] + [(USER_PROPERTY, u) for u in users]
    r, _ = _will_client(broker, raw5, pub_shard, t, b'{"gone":true}', props=props)
    r.abort()
    m = sub.get()
    assert (m.topic, m.payload, m.qos) == (t, b'{"gone":true}', 1)
    assert m.props.get("PayloadFormatIndicator") == 1
    assert m.props.get("ContentType") == "application/json"
    assert m.props.get("ResponseTopic") == f"{topic_root}/reply"
    assert m.props.get("CorrelationData") == b"\x00\x01\xff"
    assert m.user_properties == users
    assert 0 < m.props.get("MessageExpiryInterval", 0) <= 120


@pytest.mark.parametrize("shard", [0])
def test_will_on_server_detected_protocol_error(broker, raw5, mqtt5_client, topic_root, shard):
    """[MQTT-3.1.2-8] 3.1.2.5: the server closing the connection for a
    Protocol Error (here a Topic Alias of 0) is a close without a DISCONNECT
    0x00 from the client: the will is published."""
    t = f"{topic_root}/will"
    sub = mqtt5_client(shard=1 - shard, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    r, _ = _will_client(broker, raw5, shard, t, b"broke-protocol")
    r.send(publish5(f"{topic_root}/x", b"bad", props=[(TOPIC_ALIAS, 0)]))
    r.wait_closed()
    m = sub.get()
    assert m.payload == b"broke-protocol"


@pytest.mark.parametrize("shard", [0, 1])
@pytest.mark.parametrize("how", ["clean-start", "expiry-0"])
def test_delayed_will_due_when_takeover_ends_session(broker, raw5, mqtt5_client, topic_root, shard, how):
    """[MQTT-3.1.3-9] A will with a Will Delay Interval is published when
    the session ends, if that comes first. A takeover ends the session when
    the new connection has Clean Start 1, or the old one had Session Expiry
    0: the will is due at once, not lost."""
    t = f"{topic_root}/will"
    sub = mqtt5_client(shard=shard, prefix="s")
    assert sub.subscribe(t, 1) == [1]
    expiry = 0 if how == "expiry-0" else 60
    r, cid = _will_client(broker, raw5, shard, t, b"ended", delay=30, expiry=expiry)
    new = raw5(timeout=10)
    clean = how == "clean-start"
    assert new.connect5(cid, clean_start=clean, props=[(SESSION_EXPIRY_INTERVAL, 60)]).reason_code == 0
    m = sub.get(timeout=3.0)
    assert (m.topic, m.payload) == (t, b"ended")
