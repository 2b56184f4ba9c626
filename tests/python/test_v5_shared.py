"""Shared subscriptions ``$share/{group}/{filter}`` (MQTT 5.0 section 4.8.2),
for v5 and v3.1.1 members on both shards.
"""

import time
from collections import Counter

import paho.mqtt.client as mqtt
import pytest

from mqtt_helpers import IS_MOSQUITTO, SHARD_PAIRS, unique_topic_root
from mqtt5_helpers import (  # noqa: F401  (fixtures)
    RC_PROTOCOL_ERROR,
    Bystander,
    MqttClient5,
    assert_disconnect_reason,
    mqtt5_client,
    raw5,
    sub_opts,
    subscribe5,
    v5_broker,
)

pytestmark = pytest.mark.timeout(30)

N = 20


def _member(kind, shard, prefix, mqtt_client, mqtt5_client):
    if kind == "v5":
        return mqtt5_client(shard=shard, prefix=prefix)
    return mqtt_client(shard=shard, prefix=prefix, protocol=mqtt.MQTTv311)


def _collect_all(members, n, timeout=5.0):
    """Gather messages from all members until ``n`` in total arrived."""
    got = {i: [] for i in range(len(members))}
    deadline = time.monotonic() + timeout
    while sum(len(v) for v in got.values()) < n:
        assert time.monotonic() < deadline, f"only {sum(map(len, got.values()))}/{n} messages arrived"
        for i, m in enumerate(members):
            got[i] += m.collect(0.05)
    for i, m in enumerate(members):
        got[i] += m.collect(0.3)  # nothing more may come
    return got


@pytest.mark.parametrize("pub_shard", [0, 1])
@pytest.mark.parametrize("kinds", [("v5", "v5"), ("v311", "v5"), ("v311", "v311")],
                         ids=["v5+v5", "v311+v5", "v311+v311"])
def test_each_message_to_exactly_one_member(mqtt_client, mqtt5_client, topic_root, pub_shard, kinds):
    """4.8.2: each message matching a shared subscription goes to exactly one
    member of the group. Members on shard 0 and shard 1 (v5 and v3.1.1 mixed):
    of 20 QoS 1 messages every one arrives exactly once in total, and the
    spread is not all-to-one (round robin by default)."""
    t = f"{topic_root}/jobs"
    members = [_member(k, i, f"m{i}", mqtt_client, mqtt5_client) for i, k in enumerate(kinds)]
    for m in members:
        assert m.subscribe(f"$share/grp/{t}", 1) == [1]
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    for i in range(N):
        pub.publish(t, b"%d" % i, qos=1)
    got = _collect_all(members, N)
    payloads = Counter(m.payload for v in got.values() for m in v)
    assert payloads == Counter(b"%d" % i for i in range(N)), payloads
    assert all(len(v) > 0 for v in got.values()), {i: len(v) for i, v in got.items()}


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_groups_and_non_shared_each_get_everything(mqtt5_client, topic_root, pub_shard, sub_shard):
    """4.8.2: each group gets its own copy of every message, and a non-shared
    subscription of the same filter (here by a client that is also a member
    of a group) receives every message too."""
    t = f"{topic_root}/x"
    g1 = [mqtt5_client(shard=s, prefix=f"a{s}") for s in (0, 1)]
    g2 = mqtt5_client(shard=sub_shard, prefix="b")
    plain = mqtt5_client(shard=sub_shard, prefix="c")
    for c in g1:
        assert c.subscribe(f"$share/g1/{t}", 1) == [1]
    assert g2.subscribe(f"$share/g2/{topic_root}/+", 1) == [1]
    assert plain.subscribe(t, 1) == [1]
    assert g1[sub_shard].subscribe(t, 1) == [1]  # member of g1 and non-shared subscriber
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    n = 10
    for i in range(n):
        pub.publish(t, b"%d" % i, qos=1)
    want = [b"%d" % i for i in range(n)]
    assert [m.payload for m in g2.expect(n)] == want
    assert [m.payload for m in plain.expect(n)] == want
    got = _collect_all(g1, 2 * n)  # g1's share of n, plus g1[sub_shard]'s non-shared n
    assert Counter(m.payload for v in got.values() for m in v) == Counter(want * 2)


@pytest.mark.parametrize("how", ["unsubscribe", "disconnect"])
@pytest.mark.parametrize("leaver_shard", [0, 1])
def test_member_that_left_gets_no_more(mqtt5_client, topic_root, leaver_shard, how):
    """4.8.2: a member that unsubscribed or disconnected (session ended) is
    no longer chosen: every later message goes to the remaining member."""
    t = f"{topic_root}/x"
    leaver = mqtt5_client(shard=leaver_shard, prefix="l")
    stayer = mqtt5_client(shard=1 - leaver_shard, prefix="s")
    for c in (leaver, stayer):
        assert c.subscribe(f"$share/g/{t}", 1) == [1]
    if how == "unsubscribe":
        assert leaver.unsubscribe(f"$share/g/{t}") == [0]
    else:
        leaver.disconnect()
    pub = mqtt5_client(shard=leaver_shard, prefix="p")
    for i in range(8):
        pub.publish(t, b"%d" % i, qos=1)
    assert [m.payload for m in stayer.expect(8)] == [b"%d" % i for i in range(8)]
    if how == "unsubscribe":
        leaver.expect_none(0.3)


@pytest.mark.skipif(IS_MOSQUITTO, reason="mosquitto 2.0.11 drops the unacknowledged QoS 1 messages of a "
                                         "shared member whose session ends instead of sending them to "
                                         "another member (4.8.2: SHOULD)")
@pytest.mark.parametrize("leaver_shard", [0, 1])
def test_unacked_message_of_lost_member_goes_to_another(broker, raw5, mqtt5_client, topic_root, leaver_shard):
    """4.8.2: a QoS 1 message sent to a member that never acknowledged it and
    whose session then ends (Session Expiry 0, socket closed) is sent to
    another member of the group: in the end every message was delivered to
    the remaining member."""
    t = f"{topic_root}/x"
    lost = raw5()
    assert lost.connect5(broker.client_id("lo", leaver_shard)).reason_code == 0
    assert lost.subscribe5(1, [(f"$share/g/{t}", sub_opts(1))]) == [1]
    other = mqtt5_client(shard=1 - leaver_shard, prefix="ot")
    assert other.subscribe(f"$share/g/{t}", 1) == [1]
    pub = mqtt5_client(shard=leaver_shard, prefix="p")
    for i in range(6):
        pub.publish(t, b"%d" % i, qos=1)
    first = lost.recv_publish5()  # never acknowledged
    lost.close()
    deadline = time.monotonic() + 5
    got = set()
    while got != {b"%d" % i for i in range(6)}:
        assert time.monotonic() < deadline, f"remaining member got only {sorted(got)}; lost member had {first}"
        got |= {m.payload for m in other.collect(0.1)}
    assert first.payload in got


@pytest.mark.skipif(IS_MOSQUITTO, reason="mosquitto 2.0.11 drops the unacknowledged QoS 1 messages of a "
                                         "shared member whose session ends (4.8.2: SHOULD)")
@pytest.mark.parametrize("leaver_shard", [0, 1])
def test_unacked_message_of_taken_over_member_goes_to_another(broker, raw5, mqtt5_client, topic_root,
                                                              leaver_shard):
    """4.8.2: a member that never acknowledged a QoS 1 message is taken over by
    a new connection with Clean Start: its session ends, and the message goes
    to the other member."""
    t = f"{topic_root}/x"
    cid = broker.client_id("to", leaver_shard)
    lost = raw5()
    assert lost.connect5(cid).reason_code == 0
    assert lost.subscribe5(1, [(f"$share/g/{t}", sub_opts(1))]) == [1]
    other = mqtt5_client(shard=1 - leaver_shard, prefix="ot")
    assert other.subscribe(f"$share/g/{t}", 1) == [1]
    pub = mqtt5_client(shard=leaver_shard, prefix="p")
    for i in range(4):
        pub.publish(t, b"%d" % i, qos=1)
    first = lost.recv_publish5()  # never acknowledged
    newcomer = raw5()
    assert newcomer.connect5(cid, clean_start=True).reason_code == 0
    deadline = time.monotonic() + 5
    got = set()
    while got != {b"%d" % i for i in range(4)}:
        assert time.monotonic() < deadline, f"remaining member got only {sorted(got)}; lost member had {first}"
        got |= {m.payload for m in other.collect(0.1)}
    assert first.payload in got


@pytest.mark.skipif(IS_MOSQUITTO, reason="mosquitto 2.0.11 sends retained messages on a shared subscribe")
@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_no_retained_message_on_shared_subscribe(mqtt5_client, topic_root, pub_shard, sub_shard):
    """4.8.2: retained messages are not sent when a shared subscription is
    established; live messages flow (the sentinel arrives first)."""
    t = f"{topic_root}/r"
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    pub.publish(t, b"retained", qos=1, retain=True)
    sub = mqtt5_client(shard=sub_shard, prefix="s")
    assert sub.subscribe(f"$share/g/{t}", 1) == [1]
    pub.publish(t, b"live", qos=1)
    m = sub.get()
    assert (m.payload, m.retain) == (b"live", False)
    sub.expect_none(0.3)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_shared_granted_qos_respected(mqtt5_client, mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-4.8.2-3] Each member gets messages at most at the QoS granted to
    its own subscription: QoS 2 publications reach a QoS 0 member at QoS 0
    and a QoS 1 member (v3.1.1) at QoS 1."""
    t = f"{topic_root}/q"
    q0 = mqtt5_client(shard=sub_shard, prefix="z")
    q1 = mqtt_client(shard=1 - sub_shard, prefix="o")
    assert q0.subscribe(f"$share/g/{t}", 0) == [0]
    assert q1.subscribe(f"$share/g/{t}", 1) == [1]
    pub = mqtt5_client(shard=pub_shard, prefix="p")
    for i in range(10):
        pub.publish(t, b"%d" % i, qos=2)
    got = _collect_all([q0, q1], 10)
    assert got[0] and got[1], {i: len(v) for i, v in got.items()}
    assert {m.qos for m in got[0]} == {0}
    assert {m.qos for m in got[1]} == {1}


@pytest.mark.skipif(IS_MOSQUITTO, reason="mosquitto accepts No Local on a shared subscription")
@pytest.mark.parametrize("shard", [0, 1])
def test_no_local_on_shared_subscription_is_protocol_error(broker, raw5, topic_root, shard):
    """[MQTT-3.8.3-4] No Local=1 on a shared subscription is a Protocol Error:
    DISCONNECT 0x82 and close; a bystander is unaffected."""
    by = Bystander(broker)
    r = raw5()
    assert r.connect5(broker.client_id("ns", shard)).reason_code == 0
    r.send(subscribe5(1, [(f"$share/g/{topic_root}/x", sub_opts(1, no_local=True))]))
    rc = r.expect_disconnect()
    by.check()
    by.close()
    assert_disconnect_reason(rc, RC_PROTOCOL_ERROR, "for No Local on a shared subscription")


@pytest.mark.skipif(IS_MOSQUITTO, reason="the strategies are shardmq settings")
@pytest.mark.parametrize("strategy", ["round-robin", "random", "sticky"])
@pytest.mark.parametrize("pub_shard", [0, 1])
def test_strategies_deliver_each_message_once(v5_broker, strategy, pub_shard):
    """4.8.2: whatever ``--shared-subscription-strategy`` picks, each message
    reaches exactly one member. Two members per shard: round robin gives every
    member a turn; sticky keeps the member it chose while it stays; random
    spreads (20 messages to one of 4 members only: 4 * (1/4)^20, never)."""
    b = v5_broker(["--shared-subscription-strategy", strategy])
    t = unique_topic_root("st") + "/jobs"
    members = []
    for i in range(4):
        m = MqttClient5(b.host, b.port, b.client_id(f"m{i}", i % 2))
        m.connect()
        assert m.subscribe(f"$share/grp/{t}", 1) == [1]
        members.append(m)
    pub = MqttClient5(b.host, b.port, b.client_id("p", pub_shard))
    pub.connect()
    try:
        for i in range(N):
            pub.publish(t, b"%d" % i, qos=1)
        got = _collect_all(members, N)
        payloads = Counter(m.payload for v in got.values() for m in v)
        assert payloads == Counter(b"%d" % i for i in range(N)), payloads
        counts = sorted(len(v) for v in got.values())
        if strategy == "round-robin":
            assert counts == [5, 5, 5, 5], counts
        elif strategy == "sticky":
            assert counts == [0, 0, 0, N], counts
        else:
            assert counts[-1] < N, counts
    finally:
        pub.disconnect()
        for m in members:
            m.disconnect()
