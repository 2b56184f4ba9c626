"""Malformed MQTT 5 packets and Protocol Errors after a successful CONNECT.

Each case: a bystander (v5, shard 1) is connected first; a raw v5 client
(shard 0) sends one bad packet; the server must send DISCONNECT with a
reason code of 0x80 or more and close the connection [MQTT-4.13.1-1]
[MQTT-4.13.2-1]; nothing follows the DISCONNECT [MQTT-3.14.4-1]; the
bystander is still connected and still receives. Where the standard names
the reason (Malformed Packet 0x81, Protocol Error 0x82, ...), that one is
asserted; where it does not, any of the plausible ones is accepted.

CONNECT-time errors are in test_v5_connect.py (before CONNACK the server
may only answer with a CONNACK [MQTT-3.14.0-1]).
"""

import pytest

from mqtt_helpers import IS_MOSQUITTO
from mqtt5_helpers import (  # noqa: F401  (fixtures)
    MESSAGE_EXPIRY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR,
    PUBACK,
    RC_MALFORMED,
    RC_PROTOCOL_ERROR,
    RC_TOPIC_ALIAS_INVALID,
    RC_TOPIC_NAME_INVALID,
    SESSION_EXPIRY_INTERVAL,
    SUBSCRIPTION_IDENTIFIER,
    TOPIC_ALIAS,
    Bystander,
    assert_disconnect_reason,
    packet5,
    publish5,
    raw5,
    sub_opts,
    subscribe5,
    unsubscribe5,
)

pytestmark = pytest.mark.timeout(30)

MALFORMED = {RC_MALFORMED}
PROTOCOL = {RC_PROTOCOL_ERROR}
EITHER = {RC_MALFORMED, RC_PROTOCOL_ERROR}


def _skip_mosq(reason):
    return pytest.mark.skipif(IS_MOSQUITTO, reason=reason)


#: (id, packet builder taking the test's topic root, allowed DISCONNECT reason codes)
CASES = [
    # --- property encoding (2.2.2, 1.5.5)
    pytest.param(lambda t: publish5(f"{t}/x", b"p", raw_props=b"\x20\x01\x00"), MALFORMED,
                 id="publish-property-length-overruns-packet"),
    pytest.param(lambda t: publish5(f"{t}/x", b"p", qos=1, pid=1, raw_props=b"\xff\xff\xff\xff\x01"), MALFORMED,
                 id="publish-property-length-5-byte-vbi"),
    pytest.param(lambda t: subscribe5(1, [(f"{t}/x", 0)], raw_props=b"\x06\x0b\xff\xff\xff\xff\x7f"), MALFORMED,
                 id="subscription-identifier-5-byte-vbi"),
    pytest.param(lambda t: publish5(f"{t}/x", b"p", raw_props=b"\x02\x7f\x00"), MALFORMED,
                 id="publish-unknown-property-id"),
    pytest.param(lambda t: publish5(f"{t}/x", b"p", props=[(SESSION_EXPIRY_INTERVAL, 5)]), MALFORMED,
                 id="publish-property-not-allowed"),
    pytest.param(lambda t: unsubscribe5(1, [f"{t}/x"], props=[(SUBSCRIPTION_IDENTIFIER, 3)]), MALFORMED,
                 id="unsubscribe-property-not-allowed"),
    pytest.param(lambda t: publish5(f"{t}/x", b"p", raw_props=b"\x04\x26\x00\x01k"), MALFORMED,
                 id="user-property-truncated"),
    pytest.param(lambda t: publish5(f"{t}/x", b"p", raw_props=b"\x04\x03\x00\x01\xff"), MALFORMED,
                 id="content-type-invalid-utf8"),
    # --- duplicated properties: "It is a Protocol Error to include ... more than once"
    pytest.param(lambda t: publish5(f"{t}/x", b"p", props=[(PAYLOAD_FORMAT_INDICATOR, 0)] * 2), PROTOCOL,
                 id="publish-payload-format-indicator-twice"),
    pytest.param(lambda t: publish5(f"{t}/x", b"p", props=[(MESSAGE_EXPIRY_INTERVAL, 9)] * 2), PROTOCOL,
                 id="publish-message-expiry-twice"),
    pytest.param(lambda t: publish5(f"{t}/x", b"p", props=[(TOPIC_ALIAS, 1)] * 2), PROTOCOL,
                 id="publish-topic-alias-twice"),
    pytest.param(lambda t: subscribe5(1, [(f"{t}/x", 0)], props=[(SUBSCRIPTION_IDENTIFIER, 1)] * 2), PROTOCOL,
                 id="subscribe-subscription-identifier-twice"),
    # --- property values
    pytest.param(lambda t: publish5(f"{t}/x", b"p", props=[(PAYLOAD_FORMAT_INDICATOR, 2)]), EITHER,
                 id="payload-format-indicator-2",
                 marks=_skip_mosq("mosquitto accepts Payload Format Indicator 2")),
    pytest.param(lambda t: subscribe5(1, [(f"{t}/x", 0)], props=[(SUBSCRIPTION_IDENTIFIER, 0)]), PROTOCOL,
                 id="subscription-identifier-0",
                 marks=_skip_mosq("mosquitto answers 0x81 Malformed; 3.8.2.1.2 calls it a Protocol Error")),
    pytest.param(lambda t: publish5(f"{t}/x", b"p", props=[(SUBSCRIPTION_IDENTIFIER, 4)]), EITHER,
                 id="subscription-identifier-in-client-publish",
                 marks=_skip_mosq("mosquitto ignores a Subscription Identifier in a client's PUBLISH "
                                  "([MQTT-3.3.4-6])")),
    # --- topic names and aliases (3.3.2.1, 3.3.2.3.4)
    pytest.param(lambda t: publish5(f"{t}/x", b"p", props=[(TOPIC_ALIAS, 0)]),
                 {RC_MALFORMED, RC_PROTOCOL_ERROR, RC_TOPIC_ALIAS_INVALID}, id="topic-alias-0"),
    pytest.param(lambda t: publish5("", b"p"), PROTOCOL, id="empty-topic-without-alias"),
    pytest.param(lambda t: publish5("", b"p", qos=1, pid=3, props=[(TOPIC_ALIAS, 1)]), PROTOCOL,
                 id="empty-topic-with-unmapped-alias"),
    pytest.param(lambda t: publish5(f"{t}/+", b"p"), {RC_MALFORMED, RC_PROTOCOL_ERROR, RC_TOPIC_NAME_INVALID},
                 id="wildcard-in-topic-name"),
    # --- fixed header and SUBSCRIBE payload
    pytest.param(lambda t: packet5(0x36, b"\x00\x01a\x00\x01\x00"), MALFORMED, id="publish-qos-3"),
    pytest.param(lambda t: b"\xe1\x00", MALFORMED, id="disconnect-reserved-flags"),
    pytest.param(lambda t: subscribe5(1, [(f"{t}/x", sub_opts(1) | 0xC0)]), MALFORMED,
                 id="subscription-options-reserved-bits"),
    pytest.param(lambda t: subscribe5(1, [(f"{t}/x", 0x30)]), PROTOCOL, id="retain-handling-3",
                 marks=_skip_mosq("mosquitto answers 0x81 Malformed; 3.8.3.1 calls Retain Handling 3 "
                                  "a Protocol Error")),
    pytest.param(lambda t: subscribe5(1, [(f"{t}/x", 3)]), PROTOCOL, id="subscription-qos-3",
                 marks=_skip_mosq("mosquitto answers 0x81 Malformed; 3.8.3.1 calls Maximum QoS 3 "
                                  "a Protocol Error")),
    pytest.param(lambda t: packet5(0x82, b"\x00\x01\x00"), PROTOCOL, id="subscribe-without-filters",
                 marks=_skip_mosq("mosquitto answers 0x81 Malformed; 3.8.3 calls an empty SUBSCRIBE "
                                  "payload a Protocol Error")),
]


@pytest.mark.parametrize("build,allowed", CASES)
def test_bad_packet_gets_disconnect(request, broker, raw5, topic_root, build, allowed):
    """[MQTT-4.13.1-1] [MQTT-4.13.2-1] [MQTT-3.14.4-1] A Malformed Packet or
    Protocol Error after CONNECT: DISCONNECT with the reason the standard
    gives (section 2.2.2.2 for property encoding, "It is a Protocol Error to
    include ... more than once" for duplicates, [MQTT-3.3.1-4] QoS 3,
    [MQTT-3.14.1-1] reserved flags, [MQTT-3.8.3-5] reserved option bits,
    3.3.2.3.4 topic aliases), then the close; no acknowledgement of the bad
    packet; the bystander is unaffected."""
    by = Bystander(broker)
    r = raw5()
    assert r.connect5(broker.client_id("mf", 0)).reason_code == 0
    r.send(build(topic_root))
    rc = r.expect_disconnect()
    assert not any(p.type in (PUBACK, 5, 9, 11) for p in r.packets_before_close), r.packets_before_close
    by.check()
    by.close()
    assert_disconnect_reason(rc, allowed, f"for case {request.node.callspec.id}")
