"""MQTT 5.0 SUBSCRIBE options (No Local, Retain As Published, Retain
Handling), SUBACK and UNSUBACK reason codes.
"""

import pytest

from mqtt_helpers import IS_MOSQUITTO, SHARD_PAIRS
from mqtt5_helpers import (  # noqa: F401  (fixtures)
    RC_MALFORMED,
    RC_NO_SUBSCRIPTION_EXISTED,
    RC_TOPIC_FILTER_INVALID,
    UNSUBACK,
    assert_disconnect_reason,
    mqtt5_client,
    parse_unsuback5,
    raw5,
    sub_opts,
    subscribe5,
    unsubscribe5,
)

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("no_local", [True, False], ids=["no-local", "local"])
@pytest.mark.parametrize("shard", [0, 1])
def test_no_local(mqtt5_client, topic_root, shard, no_local):
    """[MQTT-3.8.3-3] With No Local=1 a client's own publications are not
    forwarded to it, while another client's (on the other shard) are; with
    No Local=0 it receives both."""
    t = f"{topic_root}/nl"
    me = mqtt5_client(shard=shard, prefix="me")
    assert me.subscribe(t, 1, no_local=no_local) == [1]
    other = mqtt5_client(shard=1 - shard, prefix="ot")
    me.publish(t, b"mine", qos=1)
    other.publish(t, b"theirs", qos=1)
    m, before = me.get_until(lambda m: m.payload == b"theirs")
    got = [x.payload for x in before] + [m.payload] + [x.payload for x in me.collect(0.3)]
    assert got == ([b"theirs"] if no_local else [b"mine", b"theirs"])


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_retain_as_published(mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.1-12] [MQTT-3.3.1-13] Retain As Published: a retained PUBLISH
    forwarded to an existing subscription keeps RETAIN=1 with RAP=1 and gets
    RETAIN=0 with RAP=0; a non-retained one has RETAIN=0 either way. The
    retained message sent because of the subscription itself has RETAIN=1
    whatever RAP says (3.3.1.3)."""
    t = f"{topic_root}/rap"
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    pub.publish(t, b"stored", qos=1, retain=True)
    subs = {}
    for rap in (True, False):
        subs[rap] = mqtt5_client(shard=sub_shard, prefix="s")
        assert subs[rap].subscribe(t, 1, rap=rap) == [1]
        m = subs[rap].get()
        assert (m.payload, m.retain) == (b"stored", True)
    pub.publish(t, b"live-retained", qos=1, retain=True)
    pub.publish(t, b"live-plain", qos=1)
    for rap, sub in subs.items():
        m1, m2 = sub.expect(2)
        assert (m1.payload, m1.retain) == (b"live-retained", rap), f"RAP={rap}"
        assert (m2.payload, m2.retain) == (b"live-plain", False), f"RAP={rap}"


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_retain_handling(mqtt5_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11] [MQTT-3.8.4-4] Retain
    Handling 0 sends the retained messages at every subscribe, re-subscribes
    included; 1 only when the subscription did not exist yet; 2 never. Live
    messages flow in every case (a sentinel after each subscribe)."""
    t = f"{topic_root}/rh"
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    pub.publish(t, b"stored", qos=1, retain=True)
    for rh in (0, 1, 2):
        sub = mqtt5_client(shard=sub_shard, prefix="s")
        expect_first = {0: [b"stored"], 1: [b"stored"], 2: []}[rh]
        expect_again = {0: [b"stored"], 1: [], 2: []}[rh]
        for round_, expect in enumerate([expect_first, expect_again]):
            assert sub.subscribe(t, 1, rh=rh) == [1]
            sentinel = b"sentinel-%d-%d" % (rh, round_)
            pub.publish(t, sentinel, qos=1)
            m, before = sub.get_until(lambda m: m.payload == sentinel)
            assert [x.payload for x in before] == expect, f"Retain Handling {rh}, subscribe #{round_ + 1}"
            assert all(x.retain for x in before) and not m.retain
    sub.expect_none(0.2)


@pytest.mark.parametrize("shard", [0, 1])
def test_suback_granted_qos_in_order(raw5, broker, shard, topic_root):
    """[MQTT-3.8.4-5] [MQTT-3.8.4-6] [MQTT-3.8.4-7] [MQTT-3.9.3-1] One SUBSCRIBE
    with several filters gets one SUBACK with a reason code per filter, in
    order: the granted QoS (2, 0, 1; QoS 2 is supported)."""
    r = raw5()
    assert r.connect5(broker.client_id("sq", shard)).reason_code == 0
    codes = r.subscribe5(5, [(f"{topic_root}/a", sub_opts(2)), (f"{topic_root}/+/b", sub_opts(0)),
                             (f"{topic_root}/#", sub_opts(1, no_local=True, rap=True, rh=2))])
    assert codes == [2, 0, 1]


INVALID_SHARED = [
    pytest.param("$share/g/", id="empty-filter"),
    pytest.param("$share//x", id="empty-share-name"),
    pytest.param("$share/g", id="no-slash-after-share-name"),
]


@pytest.mark.skipif(IS_MOSQUITTO, reason="mosquitto grants or disconnects (0x81) instead of SUBACK 0x8F for "
                                         "these invalid shared subscription filters")
@pytest.mark.parametrize("bad", INVALID_SHARED)
def test_invalid_shared_filter_gets_0x8f(raw5, broker, topic_root, bad):
    """[MQTT-4.8.2-1] [MQTT-4.8.2-2] [MQTT-4.7.3-1] A shared subscription filter
    needs a ShareName of at least one character without '/', '+' or '#',
    followed by '/' and a non-empty Topic Filter. An invalid one gets reason
    0x8F (Topic Filter invalid) in its SUBACK slot, while the valid filters
    of the same SUBSCRIBE are granted in order [MQTT-3.9.3-1]; the
    connection stays open."""
    r = raw5()
    assert r.connect5(broker.client_id("sf", 0)).reason_code == 0
    codes = r.subscribe5(9, [(f"{topic_root}/a", sub_opts(1)), (bad, sub_opts(1)),
                             (f"$share/ok/{topic_root}/b", sub_opts(2))])
    assert codes == [1, RC_TOPIC_FILTER_INVALID, 2]
    assert r.is_open()


@pytest.mark.parametrize("bad", ["$share/g#/x", "$share/g+/x"])
def test_wildcard_inside_a_share_name_is_malformed(raw5, broker, topic_root, bad):
    """[MQTT-4.7.1-1] [MQTT-4.7.1-2] A '+' or '#' that is not alone in its level
    makes any topic filter malformed, a shared one too ([MQTT-4.8.2-1] forbids
    them in a ShareName): the SUBSCRIBE is answered with DISCONNECT 0x81 and the
    connection is closed."""
    r = raw5()
    assert r.connect5(broker.client_id("sw", 0)).reason_code == 0
    r.send(subscribe5(9, [(f"{topic_root}/a", sub_opts(1)), (bad, sub_opts(1))]))
    rc = r.expect_disconnect()
    assert_disconnect_reason(rc, {RC_MALFORMED}, f"for {bad}")


@pytest.mark.parametrize("shard", [0, 1])
def test_unsuback_reason_codes(raw5, broker, mqtt5_client, topic_root, shard):
    """[MQTT-3.10.4-1] [MQTT-3.10.4-6] [MQTT-3.11.3-1] [MQTT-3.11.3-2] UNSUBACK
    has one reason code per filter, in order: 0x00 for an existing
    subscription (plain, wildcard and shared), 0x11 (No subscription existed)
    otherwise; the unsubscribed filters no longer deliver, the kept one does."""
    r = raw5()
    assert r.connect5(broker.client_id("us", shard)).reason_code == 0
    keep, wild, shared = f"{topic_root}/keep", f"{topic_root}/w/#", f"$share/g/{topic_root}/s"
    assert r.subscribe5(1, [(keep, sub_opts(1)), (wild, sub_opts(1)), (shared, sub_opts(1))]) == [1, 1, 1]
    r.send(unsubscribe5(2, [wild, f"{topic_root}/never", shared, f"{topic_root}/w/+"]))
    p, _ = r.recv_until(UNSUBACK)
    pid, _props, codes = parse_unsuback5(p)
    assert pid == 2
    assert codes == [0x00, RC_NO_SUBSCRIPTION_EXISTED, 0x00, RC_NO_SUBSCRIPTION_EXISTED]
    pub = mqtt5_client(shard=1 - shard, prefix="up")
    pub.publish(f"{topic_root}/w/x", b"gone", qos=1)
    pub.publish(f"{topic_root}/s", b"gone-too", qos=1)
    pub.publish(keep, b"kept", qos=1)
    m = r.recv_publish5()
    assert m.payload == b"kept", m
    r.expect_no_packet(0.3)
