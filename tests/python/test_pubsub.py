"""Publish/subscribe routing: topic matching, wildcards, ordering, payloads.

Every test places publisher and subscriber on different shards (both
directions) and, where cheap, on the same shard (see SHARD_PAIRS).
"""

import os

import pytest

from mqtt_helpers import IS_MOSQUITTO, SHARD_PAIRS, SHARD_PAIRS_2, SUBACK, UNSUBACK, subscribe_packet, unsubscribe_packet

pytestmark = pytest.mark.timeout(30)


def _collect_until_sentinel(sub, sentinel_topic, timeout=5.0):
    """Messages received before the sentinel (the publisher sends the
    sentinel last, on a topic the subscriber matches)."""
    _, before = sub.get_until(lambda m: m.topic == sentinel_topic, timeout)
    return before


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_qos0_exact_topic(mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.2-3] [MQTT-4.7.1-1 exact match] A QoS 0 message on an exactly
    subscribed topic arrives with the same topic and payload, retain=0;
    a sibling topic is not delivered."""
    sub = mqtt_client(shard=sub_shard, prefix="s")
    pub = mqtt_client(shard=pub_shard, prefix="p")
    assert sub.subscribe(f"{topic_root}/a/b", 0) == [0]
    pub.publish(f"{topic_root}/a/c", b"not-me")
    pub.publish(f"{topic_root}/a/b", b"hello")
    m = sub.get()
    assert (m.topic, m.payload, m.qos, m.retain) == (f"{topic_root}/a/b", b"hello", 0, False)
    sub.expect_none(0.3)


MATCH_CASES = [
    # filter suffix, [(topic suffix, should match)]
    ("+/c", [("a/c", True), ("b/c", True), ("/c", True), ("a/b/c", False), ("c", False),
             ("a/d", False), ("a/c/", False)]),
    ("a/+", [("a/x", True), ("a/", True), ("a", False), ("a/x/y", False)]),
    ("a/+/+", [("a/x/y", True), ("a//", True), ("a/x", False), ("a/x/y/z", False)]),
    ("#", [("a", True), ("a/b/c/d", True), ("x/", True)]),
    ("a/#", [("a", True), ("a/b", True), ("a/b/c", True), ("a/", True), ("ab", False),
             ("b/a", False)]),
    ("+/+/#", [("a/b", True), ("a/b/c", True), ("a", False)]),
    ("a//b", [("a//b", True), ("a/b", False), ("a/x/b", False)]),
]


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
@pytest.mark.parametrize("flt,cases", MATCH_CASES, ids=[c[0] for c in MATCH_CASES])
def test_wildcard_matching(mqtt_client, topic_root, pub_shard, sub_shard, flt, cases):
    """[MQTT-4.7.1-2] [MQTT-4.7.1-3] '#' matches the parent and any number of
    levels ("sport/#" matches "sport"), '+' matches exactly one (possibly
    empty) level. Topics are prefixed with a per-test root level."""
    sub = mqtt_client(shard=sub_shard, prefix="s")
    pub = mqtt_client(shard=pub_shard, prefix="p")
    assert sub.subscribe([(f"{topic_root}/{flt}", 0), (f"{topic_root}-end", 0)]) == [0, 0]
    for suffix, _ in cases:
        pub.publish(f"{topic_root}/{suffix}", suffix.encode() or b"<empty>", qos=1)
    pub.publish(f"{topic_root}-end", b"end", qos=1)
    before = _collect_until_sentinel(sub, f"{topic_root}-end")
    before += [m for m in sub.drain() if m.topic != f"{topic_root}-end"]
    got = sorted(m.topic for m in before)
    want = sorted(f"{topic_root}/{s}" for s, match in cases if match)
    assert got == want, f"filter {topic_root}/{flt}: delivered {got}, expected {want}"


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_sport_hash_matches_parent(mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-4.7.1-2] "sport/#" also matches the parent level "sport"."""
    sub = mqtt_client(shard=sub_shard, prefix="s")
    pub = mqtt_client(shard=pub_shard, prefix="p")
    sport = f"{topic_root}sport"
    assert sub.subscribe(f"{sport}/#", 1) == [1]
    pub.publish(sport, b"parent", qos=1)
    pub.publish(f"{sport}/tennis/player1", b"child", qos=1)
    got = sorted((m.topic, m.payload) for m in sub.expect(2))
    assert got == [(sport, b"parent"), (f"{sport}/tennis/player1", b"child")]


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_dollar_topics_not_matched_by_leading_wildcards(mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-4.7.2-1] Topics starting with '$' are not matched by filters
    starting with a wildcard ('#', '+/x'), but are matched by '$test/#' and
    '$test/+'."""
    dollar_root = f"$test{topic_root}"
    hash_sub = mqtt_client(shard=sub_shard, prefix="sh")
    plus_sub = mqtt_client(shard=sub_shard, prefix="sp")
    dollar_sub = mqtt_client(shard=sub_shard, prefix="sd")
    pub = mqtt_client(shard=pub_shard, prefix="p")
    assert hash_sub.subscribe("#", 0) == [0]
    assert plus_sub.subscribe("+/x", 0) == [0]
    assert dollar_sub.subscribe([(f"{dollar_root}/#", 0), (f"{dollar_root}/+", 0)]) == [0, 0]

    pub.publish(f"{dollar_root}/x", b"dollar", qos=1)
    sentinel = f"{topic_root}/x"  # matched by both '#' and '+/x'
    pub.publish(sentinel, b"sentinel", qos=1)

    m = dollar_sub.get()
    assert (m.topic, m.payload) == (f"{dollar_root}/x", b"dollar")
    for s in (hash_sub, plus_sub):
        _, before = s.get_until(lambda m: m.topic == sentinel)
        late = s.collect(0.3)
        leaked = [x for x in before + late if x.topic.startswith("$")]
        assert leaked == [], f"{s.client_id}: '$' topic delivered to a wildcard filter: {leaked}"


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_overlapping_subscriptions(mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.3.5-1] With overlapping subscriptions ("root/#" and
    "root/+/c") the server delivers the message at least once and at most
    once per matching subscription (1 or 2 copies)."""
    sub = mqtt_client(shard=sub_shard, prefix="s")
    pub = mqtt_client(shard=pub_shard, prefix="p")
    assert sub.subscribe([(f"{topic_root}/#", 1), (f"{topic_root}/+/c", 1)]) == [1, 1]
    pub.publish(f"{topic_root}/b/c", b"overlap", qos=1)
    pub.publish(f"{topic_root}/end", b"end", qos=1)  # matches only root/#
    _, before = sub.get_until(lambda m: m.payload == b"end")
    sub.expect_none(0.3)
    copies = [m for m in before + sub.drain() if m.payload == b"overlap"]
    assert 1 <= len(copies) <= 2, f"got {len(copies)} copies"
    assert all(m.topic == f"{topic_root}/b/c" and m.qos == 1 for m in copies)


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_resubscribe_same_filter_replaces(mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.8.4-3] Subscribing again to an identical filter replaces the
    subscription (new QoS), it does not add a second one: exactly one copy,
    at the new QoS."""
    sub = mqtt_client(shard=sub_shard, prefix="s")
    pub = mqtt_client(shard=pub_shard, prefix="p")
    t = f"{topic_root}/same"
    assert sub.subscribe(t, 0) == [0]
    assert sub.subscribe(t, 1) == [1]
    pub.publish(t, b"once", qos=1)
    pub.publish(t, b"end", qos=1)
    _, before = sub.get_until(lambda m: m.payload == b"end")
    sub.expect_none(0.3)
    copies = [m for m in before + sub.drain() if m.payload == b"once"]
    assert len(copies) == 1, f"expected exactly one copy, got {copies}"
    assert copies[0].qos == 1


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_unsubscribe_stops_delivery(mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-3.10.4-1] [MQTT-3.10.4-2] After UNSUBACK the server stops
    delivering messages for the removed filter; other subscriptions of the
    same client keep working."""
    sub = mqtt_client(shard=sub_shard, prefix="s")
    pub = mqtt_client(shard=pub_shard, prefix="p")
    gone, kept = f"{topic_root}/gone", f"{topic_root}/kept"
    assert sub.subscribe([(gone, 1), (kept, 1)]) == [1, 1]
    pub.publish(gone, b"before", qos=1)
    assert sub.get().payload == b"before"
    sub.unsubscribe(gone)
    pub.publish(gone, b"after", qos=1)
    pub.publish(kept, b"sentinel", qos=1)
    _, before = sub.get_until(lambda m: m.payload == b"sentinel")
    sub.expect_none(0.3)
    assert [m for m in before + sub.drain() if m.topic == gone] == []


def test_unsuback_for_unknown_filter(broker, raw_client, topic_root):
    """[MQTT-3.10.4-4] [MQTT-3.10.4-5] UNSUBSCRIBE is answered with UNSUBACK
    carrying the same packet id, even if no subscription matched."""
    raw = raw_client()
    assert raw.connect(broker.client_id("unsub", 1)) == (0, 0)
    raw.send(unsubscribe_packet(0x4242, [f"{topic_root}/never"]))
    p = raw.recv_packet()
    assert (p.type, p.flags, p.body) == (UNSUBACK, 0, b"\x42\x42")


# End-to-end flow-control window: the publisher never runs more than WINDOW
# messages ahead of what the subscriber has received. A broker may bound its
# per-client queue (mosquitto: max_queued_messages 1000); within that bound
# nothing may be lost or reordered.
WINDOW = 400


def _publish_windowed(sub, pubs_and_payloads, topic, qos, timeout=20):
    received = []
    last = None
    for i, (pub, payload) in enumerate(pubs_and_payloads):
        while i - len(received) >= WINDOW:
            received.append(sub.get(timeout))
        last = (pub, pub.publish(topic, payload, qos=qos, wait=False))
    last[0].wait_published(last[1], timeout)
    received += sub.expect(len(pubs_and_payloads) - len(received), timeout)
    return received


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS_2)
@pytest.mark.parametrize("qos", [0, 1])
def test_many_messages_in_order(mqtt_client, topic_root, pub_shard, sub_shard, qos):
    """[MQTT-4.6.0-5] [MQTT-4.6.0-6] 2,000 messages from one publisher on one
    topic arrive complete, without duplicates, in publish order."""
    n = 2000
    sub = mqtt_client(shard=sub_shard, prefix="s")
    pub = mqtt_client(shard=pub_shard, prefix="p")
    t = f"{topic_root}/seq"
    assert sub.subscribe(t, qos) == [qos]
    msgs = _publish_windowed(sub, [(pub, b"%06d" % i) for i in range(n)], t, qos)
    sub.expect_none(0.2)
    seq = [int(m.payload) for m in msgs]
    if seq != list(range(n)):
        bad = next(i for i, v in enumerate(seq) if v != i)
        pytest.fail(f"out of order / missing at index {bad}: {seq[max(0, bad - 3):bad + 4]}")
    assert all(m.qos == qos for m in msgs)


def test_two_publishers_on_different_shards_keep_order(mqtt_client, topic_root):
    """[MQTT-4.6.0-5] Publishers on shard 0 and shard 1 interleave 500 QoS 1
    messages each on one topic; a subscriber (shard 1) receives all 1,000
    and each publisher's messages in its publish order."""
    n = 500
    sub = mqtt_client(shard=1, prefix="s")
    pubs = [mqtt_client(shard=0, prefix="pa"), mqtt_client(shard=1, prefix="pb")]
    t = f"{topic_root}/mix"
    assert sub.subscribe(t, 1) == [1]
    plan = [(p, b"%d:%06d" % (k, i)) for i in range(n) for k, p in enumerate(pubs)]
    msgs = _publish_windowed(sub, plan, t, 1)
    # make sure both publishers' last messages were acknowledged
    for p in pubs:
        p.publish(f"{t}/done", b"", qos=1)
    for k in (0, 1):
        seq = [int(m.payload.split(b":")[1]) for m in msgs if m.payload.startswith(b"%d:" % k)]
        assert seq == list(range(n)), f"publisher {k} out of order or incomplete"


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_payload_100kb(mqtt_client, topic_root, pub_shard, sub_shard, qos):
    """[MQTT-3.3.3 payload] A 100 KB binary payload (all byte values, multi-
    byte remaining length) round-trips unchanged."""
    payload = bytes(range(256)) * 400  # 102,400 bytes
    sub = mqtt_client(shard=sub_shard, prefix="s")
    pub = mqtt_client(shard=pub_shard, prefix="p")
    assert sub.subscribe(f"{topic_root}/big", qos) == [qos]
    pub.publish(f"{topic_root}/big", payload, qos=qos)
    m = sub.get()
    assert len(m.payload) == len(payload)
    assert m.payload == payload


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_empty_payload(mqtt_client, topic_root, pub_shard, sub_shard, qos):
    """[MQTT-3.3.3 payload] A zero-length (non-retained) payload is a valid
    message and is delivered as such."""
    sub = mqtt_client(shard=sub_shard, prefix="s")
    pub = mqtt_client(shard=pub_shard, prefix="p")
    assert sub.subscribe(f"{topic_root}/empty", qos) == [qos]
    pub.publish(f"{topic_root}/empty", b"", qos=qos)
    m = sub.get()
    assert (m.topic, m.payload, m.qos, m.retain) == (f"{topic_root}/empty", b"", qos, False)


@pytest.mark.parametrize("shard", [0, 1])
def test_granted_qos_equals_requested(mqtt_client, topic_root, shard):
    """[MQTT-3.8.4-5] [MQTT-3.9.3-1] SUBACK has one return code per filter,
    in order; a server supporting QoS 2 grants exactly the requested QoS."""
    sub = mqtt_client(shard=shard, prefix="s")
    for q in (0, 1, 2):
        assert sub.subscribe(f"{topic_root}/single{q}", q) == [q]
    granted = sub.subscribe([(f"{topic_root}/m2", 2), (f"{topic_root}/m0", 0),
                             (f"{topic_root}/+/m1", 1), (f"{topic_root}/#", 2)])
    assert granted == [2, 0, 1, 2]


def test_suback_raw_same_packet_id(broker, raw_client, topic_root):
    """[MQTT-3.8.4-1] [MQTT-3.8.4-2] SUBACK carries the SUBSCRIBE's packet id,
    fixed-header flags 0."""
    raw = raw_client()
    assert raw.connect(broker.client_id("subraw", 0)) == (0, 0)
    raw.send(subscribe_packet(0xBEEF, [(f"{topic_root}/a", 2), (f"{topic_root}/b", 0)]))
    p = raw.recv_packet()
    assert p.type == SUBACK and p.flags == 0
    assert p.suback() == (0xBEEF, [2, 0])


@pytest.mark.parametrize("pub_shard", [0, 1])
def test_fanout_to_subscribers_on_all_shards(mqtt_client, topic_root, pub_shard):
    """[MQTT-3.3.5 fan-out] One message reaches every matching subscriber,
    whichever shard it lives on (6 subscribers, exact and wildcard filters)."""
    subs = [mqtt_client(shard=i % 2, prefix=f"f{i}-") for i in range(6)]
    filters = [f"{topic_root}/fan", f"{topic_root}/+", f"{topic_root}/#"]
    for i, s in enumerate(subs):
        assert s.subscribe(filters[i % 3], 1) == [1]
    pub = mqtt_client(shard=pub_shard, prefix="p")
    pub.publish(f"{topic_root}/fan", b"all", qos=1)
    for s in subs:
        m = s.get()
        assert (m.topic, m.payload) == (f"{topic_root}/fan", b"all")


@pytest.mark.parametrize("pub_shard,sub_shard", SHARD_PAIRS)
def test_unicode_topic(mqtt_client, topic_root, pub_shard, sub_shard):
    """[MQTT-1.5.3 UTF-8] [MQTT-4.7.3-4] Topics are UTF-8 and compared
    byte-for-byte (case-sensitive, spaces allowed)."""
    sub = mqtt_client(shard=sub_shard, prefix="s")
    pub = mqtt_client(shard=pub_shard, prefix="p")
    t = f"{topic_root}/Grüße/ 日本 /\U0001F600"
    other = t.replace("Grüße", "GRÜSSE")
    assert sub.subscribe([(t, 1), (f"{topic_root}/end", 1)]) == [1, 1]
    wild = mqtt_client(shard=sub_shard, prefix="w")
    assert wild.subscribe(f"{topic_root}/+/ 日本 /#", 1) == [1]
    pub.publish(other, b"other-case", qos=1)
    pub.publish(t, b"unicode", qos=1)
    pub.publish(f"{topic_root}/end", b"end", qos=1)
    _, before = sub.get_until(lambda m: m.payload == b"end")
    assert [(m.topic, m.payload) for m in before] == [(t, b"unicode")]
    got = sorted((m.topic, m.payload) for m in wild.expect(2))
    assert got == sorted([(other, b"other-case"), (t, b"unicode")])


@pytest.mark.parametrize("cores", [
    1,
    pytest.param(4, marks=pytest.mark.skipif(
        not IS_MOSQUITTO and (os.cpu_count() or 1) < 4, reason="--cores 4 needs >= 4 CPUs")),
])
def test_other_shard_counts(start_broker, mqtt_client, cores):
    """[MQTT-3.3.5 routing] With --cores 1 and --cores 4, a publisher on the
    last shard reaches subscribers on every shard."""
    b = start_broker(cores=cores)
    subs = [mqtt_client(shard=i, prefix=f"k{i}-", broker_=b) for i in range(b.shards)]
    for s in subs:
        assert s.subscribe("cores/#", 1) == [1]
    pub = mqtt_client(shard=b.shards - 1, prefix="kp", broker_=b)
    pub.publish("cores/x", b"hi", qos=1)
    for s in subs:
        assert s.get().payload == b"hi"
