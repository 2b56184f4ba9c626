//! End-to-end properties of the node, checked on the simulation in virtual time:
//! delivery per QoS and ordering under random traffic, retained last-writer-wins
//! across shards, session expiry, wills (with Will Delay), takeover, keep-alive
//! and message expiry.

#![cfg(test)]

use std::collections::HashMap;

use proptest::prelude::*;

use crate::config::Config;
use crate::protocol::{
    Connect, LastWill, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, TopicName,
};
use crate::router::topic_matches;

use super::super::Close;
use super::{connect_packet, Sim};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Every (publisher shard, subscriber shard) pair of a two-shard node.
const PAIRS: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];

fn sim(shards: usize) -> Sim {
    Sim::new(shards, &Config::test(), 0)
}

fn qos(n: u8) -> QoS {
    QoS::from_bits(n % 3).expect("0..=2")
}

fn text(p: &Publish) -> String {
    String::from_utf8(p.payload.to_vec()).expect("text payload")
}

fn payloads(publishes: &[Publish]) -> Vec<String> {
    publishes.iter().map(text).collect()
}

/// A persistent session's CONNECT: Clean Start 0 and, in MQTT 5, a Session
/// Expiry Interval of `expiry_secs`.
fn persistent(client_id: &str, protocol: ProtocolVersion, expiry_secs: u32) -> Connect {
    let mut connect = connect_packet(client_id, protocol);
    connect.clean_session = false;
    if protocol.is_v5() {
        connect.properties.session_expiry_interval = Some(expiry_secs);
    }
    connect
}

fn will(topic: &str, payload: &str, delay_secs: Option<u32>) -> LastWill {
    let properties = Properties { will_delay_interval: delay_secs, ..Properties::default() };
    LastWill {
        topic: TopicName::try_from(topic).expect("valid"),
        payload: payload.as_bytes().to_vec().into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: properties.into(),
    }
}

/// A connected client on `shard`, subscribed to `filter` at QoS 1.
fn subscriber(sim: &mut Sim, prefix: &str, shard: usize, filter: &str) -> usize {
    let id = sim.id_on_shard(prefix, shard);
    let c = sim.client(&id, V5);
    sim.connect(c, connect_packet(&id, V5));
    sim.subscribe(c, &[(filter, QoS::AtLeastOnce)]);
    sim.settle();
    let packets = sim.take(c);
    connack(&packets);
    assert!(matches!(packets.last(), Some(Packet::SubAck(_))), "{packets:?}");
    c
}

/// A connected client on `shard` that only publishes.
fn publisher(sim: &mut Sim, prefix: &str, shard: usize, protocol: ProtocolVersion) -> usize {
    let id = sim.id_on_shard(prefix, shard);
    let c = sim.client(&id, protocol);
    sim.connect(c, connect_packet(&id, protocol));
    sim.settle();
    c
}

fn connack(packets: &[Packet]) -> &crate::protocol::ConnAck {
    match packets.first() {
        Some(Packet::ConnAck(connack)) => connack,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

// ---- delivery and ordering under random traffic ----------------------------------

const TOPICS: [&str; 3] = ["t/0", "t/1", "u"];
const FILTERS: [&str; 5] = ["t/0", "t/1", "t/+", "#", "u"];

#[derive(Clone, Debug)]
enum Op {
    /// Publisher `who` publishes its next message to `TOPICS[topic]`.
    Publish {
        who: usize,
        topic: usize,
        qos: u8,
    },
    /// Subscriber `who` acknowledges the n-th message waiting for it.
    Ack {
        who: usize,
        n: usize,
    },
    /// Up to this many ring batches move (random pairs).
    Deliver(usize),
    Settle,
    /// The network drops client `who` (subscribers first, then publishers).
    Drop(usize),
    /// Client `who` connects again, resuming its session; if still connected,
    /// the new connection takes the old one over.
    Reconnect(usize),
    /// A publisher resends its unacknowledged messages with DUP.
    Resend(usize),
    Advance(u64),
    /// Time passes, the rings still holding what they hold.
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..8usize, 0..TOPICS.len(), 0..3u8)
            .prop_map(|(who, topic, qos)| Op::Publish { who, topic, qos }),
        4 => (0..8usize, 0..8usize).prop_map(|(who, n)| Op::Ack { who, n }),
        3 => (0..6usize).prop_map(Op::Deliver),
        1 => Just(Op::Settle),
        1 => (0..8usize).prop_map(Op::Drop),
        1 => (0..8usize).prop_map(Op::Reconnect),
        1 => (0..8usize).prop_map(Op::Resend),
        1 => (1..400u64).prop_map(Op::Advance),
        1 => (1..400u64).prop_map(Op::Wait),
    ]
}

/// A client of the random test: where it lives and how it speaks.
#[derive(Clone, Debug)]
struct Spec {
    shard: usize,
    v5: bool,
}

fn spec(shards: usize) -> impl Strategy<Value = Spec> {
    (0..shards, any::<bool>()).prop_map(|(shard, v5)| Spec { shard, v5 })
}

/// The node, subscribers with their filters, publishers and a script.
#[derive(Clone, Debug)]
struct Traffic {
    shards: usize,
    /// Small windows and batches: messages queue, backpressure starts, and a
    /// pass cuts several batches per ring.
    inflight_max: u16,
    ring_batch_max: usize,
    subs: Vec<(Spec, Vec<usize>)>,
    pubs: Vec<Spec>,
    ops: Vec<Op>,
    seed: u64,
}

fn traffic() -> impl Strategy<Value = Traffic> {
    (2..4usize).prop_flat_map(|shards| {
        let filters = proptest::collection::vec(0..FILTERS.len(), 1..3);
        (
            (Just(shards), 1..8u16, 1..4usize),
            proptest::collection::vec((spec(shards), filters), 1..4),
            proptest::collection::vec(spec(shards), 1..4),
            proptest::collection::vec(op(), 0..120),
            any::<u64>(),
        )
            .prop_map(|((shards, inflight_max, ring_batch_max), subs, pubs, ops, seed)| {
                Traffic { shards, inflight_max, ring_batch_max, subs, pubs, ops, seed }
            })
    })
}

/// Runs a random script, then lets every client return and acknowledge
/// everything, and checks what each subscriber got against what was published:
/// QoS 0 at most once, QoS 1 at least once, QoS 2 exactly once [MQTT-4.3], each at
/// the published QoS (subscriptions are at QoS 2), nothing it did not subscribe
/// to, and per publisher and topic the messages of each QoS in publication order
/// [MQTT-4.6.0-5]. Sessions persist, so nothing may be lost on reconnection or
/// takeover [MQTT-4.4.0-1].
fn run_traffic(traffic: &Traffic) {
    let Traffic { shards, inflight_max, ring_batch_max, ref subs, ref pubs, ref ops, seed } =
        *traffic;
    let config = Config { inflight_max, ring_batch_max, ..Config::test() };
    let mut sim = Sim::new(shards, &config, seed);
    let protocol = |s: &Spec| if s.v5 { V5 } else { V3 };
    let mut clients = Vec::new();
    for (n, (s, filters)) in subs.iter().enumerate() {
        let id = sim.id_on_shard(&format!("sub{n}"), s.shard);
        let c = sim.manual_client(&id, protocol(s));
        sim.connect(c, persistent(&id, protocol(s), 3600));
        let filters: Vec<(&str, QoS)> =
            filters.iter().map(|f| (FILTERS[*f], QoS::ExactlyOnce)).collect();
        sim.subscribe(c, &filters);
        clients.push(c);
    }
    for (n, s) in pubs.iter().enumerate() {
        let id = sim.id_on_shard(&format!("pub{n}"), s.shard);
        let c = sim.client(&id, protocol(s));
        sim.connect(c, persistent(&id, protocol(s), 3600));
        clients.push(c);
    }
    // Subscriptions are visible everywhere once SUBACK is seen.
    sim.settle();
    for &c in &clients[..subs.len()] {
        let packets = sim.take(c);
        assert!(matches!(&packets[..], [Packet::ConnAck(_), Packet::SubAck(_)]), "{packets:?}");
    }
    let reconnect = |sim: &mut Sim, who: usize| {
        let (spec, prefix) = if who < subs.len() {
            (&subs[who].0, format!("sub{who}"))
        } else {
            (&pubs[who - subs.len()], format!("pub{}", who - subs.len()))
        };
        let id = sim.id_on_shard(&prefix, spec.shard);
        sim.connect(clients[who], persistent(&id, protocol(spec), 3600));
    };
    // (publisher, seq) -> (topic, QoS).
    let mut published: HashMap<(usize, u32), (usize, QoS)> = HashMap::new();
    let mut seq = 0;
    for op in ops {
        match *op {
            Op::Publish { who, topic, qos: q } => {
                let p = who % pubs.len();
                let c = clients[subs.len() + p];
                if sim.is_connected(c) {
                    seq += 1;
                    published.insert((p, seq), (topic, qos(q)));
                    let payload = format!("{p}:{seq}");
                    sim.publish(c, TOPICS[topic], payload.as_bytes(), qos(q), false);
                }
            }
            Op::Ack { who, n } => sim.ack(clients[who % subs.len()], n),
            Op::Deliver(n) => sim.deliver(n),
            Op::Settle => sim.settle(),
            Op::Drop(who) => sim.drop_conn(clients[who % clients.len()]),
            Op::Reconnect(who) => reconnect(&mut sim, who % clients.len()),
            Op::Resend(who) => sim.resend(clients[subs.len() + who % pubs.len()]),
            Op::Advance(ms) => sim.advance(ms),
            Op::Wait(ms) => sim.advance_held(ms),
        }
    }
    // Everyone comes back and acknowledges until nothing is left.
    for (who, &c) in clients.iter().enumerate() {
        if !sim.is_connected(c) {
            reconnect(&mut sim, who);
        }
    }
    sim.settle();
    for _ in 0..1000 {
        let mut waiting = false;
        for &c in &clients[..subs.len()] {
            while sim.waits_for_ack(c) {
                waiting = true;
                sim.ack(c, 0);
            }
        }
        sim.settle();
        if !waiting {
            break;
        }
    }
    for &c in &clients {
        assert!(
            sim.is_connected(c),
            "nobody is closed by the broker: {:?}",
            sim.client_ref(c).closed
        );
    }
    for &c in &clients[subs.len()..] {
        assert_eq!(sim.outgoing(c), 0, "every publish completed");
    }
    for (n, (_, filters)) in subs.iter().enumerate() {
        let got = sim.take_delivered(clients[n]);
        let mut count: HashMap<(usize, u32), usize> = HashMap::new();
        // (publisher, topic, QoS) -> last sequence number seen first.
        let mut last: HashMap<(usize, usize, QoS), u32> = HashMap::new();
        for publish in &got {
            let (p, s) = text(publish)
                .split_once(':')
                .map(|(p, s)| (p.parse().expect("publisher"), s.parse().expect("seq")))
                .expect("p:seq");
            let (topic, q) = published[&(p, s)];
            assert_eq!(publish.topic.as_str(), TOPICS[topic]);
            assert_eq!(publish.qos, q, "delivered at the published QoS [MQTT-3.8.4-6]");
            let seen = count.entry((p, s)).or_default();
            *seen += 1;
            if *seen == 1 {
                let previous = last.insert((p, topic, q), s);
                assert!(
                    previous.map_or(true, |prev| prev < s),
                    "subscriber {n}: {p}:{s} after {p}:{previous:?} on {} at {q:?} [MQTT-4.6.0-5]",
                    TOPICS[topic]
                );
            }
        }
        for (&(p, s), &(topic, q)) in &published {
            let matched = filters.iter().any(|f| topic_matches(FILTERS[*f], TOPICS[topic]));
            let times = count.get(&(p, s)).copied().unwrap_or(0);
            let ok = match (matched, q) {
                (false, _) => times == 0,
                (true, QoS::AtMostOnce) => times <= 1,
                (true, QoS::AtLeastOnce) => times >= 1,
                (true, QoS::ExactlyOnce) => times == 1,
            };
            assert!(ok, "subscriber {n} got {p}:{s} ({q:?}, matched: {matched}) {times} times");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_message_is_delivered_per_its_qos_and_in_order(traffic in traffic()) {
        run_traffic(&traffic);
    }
}

// ---- retained: last writer wins ---------------------------------------------------

#[derive(Clone, Debug)]
enum RetainOp {
    /// Publisher `who` sets the retained message (or clears it: `None`).
    Set { who: usize, value: Option<u8> },
    /// Up to this many ring batches move.
    Deliver(usize),
    /// Time passes, the rings still holding what they hold.
    Wait(u64),
}

fn retain_op() -> impl Strategy<Value = RetainOp> {
    prop_oneof![
        4 => (0..4usize, proptest::option::weighted(0.8, any::<u8>()))
            .prop_map(|(who, value)| RetainOp::Set { who, value }),
        2 => (0..4usize).prop_map(RetainOp::Deliver),
        1 => (1..200u64).prop_map(RetainOp::Wait),
    ]
}

/// Publishers on every shard set and clear one retained topic while ring
/// batches arrive in random order across shards; once the node settles, a new
/// subscriber (on any shard) gets the value published last, or nothing after a
/// clear [MQTT-3.3.1-5], [MQTT-3.3.1-6].
fn run_retained(shards: usize, topic: &str, ops: &[RetainOp], sub_shard: usize, seed: u64) {
    let mut sim = Sim::new(shards, &Config::test(), seed);
    let pubs: Vec<usize> =
        (0..shards).map(|s| publisher(&mut sim, &format!("rp{s}"), s, V3)).collect();
    let mut last = None;
    for op in ops {
        match *op {
            RetainOp::Set { who, value } => {
                // A writer later in time is a later writer: ids start with the clock.
                sim.advance_held(1);
                let payload = value.map(|v| format!("v{v}")).unwrap_or_default();
                sim.publish(pubs[who % shards], topic, payload.as_bytes(), QoS::AtLeastOnce, true);
                last = value.map(|_| payload);
            }
            RetainOp::Deliver(n) => sim.deliver(n),
            RetainOp::Wait(ms) => sim.advance_held(ms),
        }
    }
    sim.settle();
    let id = sim.id_on_shard("rsub", sub_shard);
    let sub = sim.client(&id, V3);
    sim.connect(sub, connect_packet(&id, V3));
    sim.subscribe(sub, &[(topic, QoS::AtLeastOnce)]);
    sim.settle();
    let got = sim.take_delivered(sub);
    assert!(got.iter().all(|p| p.retain), "sent as retained [MQTT-3.3.1-8]");
    assert_eq!(payloads(&got), last.into_iter().collect::<Vec<_>>());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn retained_last_writer_wins_across_shards(
        shards in 2..5usize,
        topic in prop::sample::select(vec!["r", "r/a", "r/b/c"]),
        ops in proptest::collection::vec(retain_op(), 0..40),
        sub_shard in 0..4usize,
        seed in any::<u64>(),
    ) {
        run_retained(shards, topic, &ops, sub_shard % shards, seed);
    }
}

// ---- session expiry -------------------------------------------------------------

/// An MQTT 5 session with Session Expiry Interval `expiry_secs`, offline with a
/// queued message, after `offline_ms`: (Session Present, what it then gets).
fn v5_session_after(
    pub_shard: usize,
    sub_shard: usize,
    expiry_secs: u32,
    offline_ms: u64,
) -> (bool, Vec<String>) {
    let mut sim = sim(2);
    let id = sim.id_on_shard("exp", sub_shard);
    let sub = sim.client(&id, V5);
    sim.connect(sub, persistent(&id, V5, expiry_secs));
    sim.subscribe(sub, &[("exp/t", QoS::AtLeastOnce)]);
    sim.settle();
    sim.disconnect(sub, ReasonCode::SUCCESS, Properties::default());
    sim.settle();
    let publisher = publisher(&mut sim, "exp-pub", pub_shard, V5);
    sim.publish(publisher, "exp/t", b"queued", QoS::AtLeastOnce, false);
    sim.advance(offline_ms);
    sim.take(sub);
    sim.connect(sub, persistent(&id, V5, expiry_secs));
    sim.settle();
    let present = connack(&sim.take(sub)).session_present;
    sim.publish(publisher, "exp/t", b"after", QoS::AtLeastOnce, false);
    sim.settle();
    (present, payloads(&sim.take_delivered(sub)))
}

/// [MQTT-3.1.2-23] [MQTT-4.1.0-2]: an offline session lives for its Session
/// Expiry Interval (1 s) and no longer: just before it, Session Present 1 and
/// the queued message; after it, Session Present 0 [MQTT-3.2.2-3], nothing
/// queued, and the old subscription gone.
#[test]
fn offline_session_expires_after_its_interval() {
    for (pub_shard, sub_shard) in PAIRS {
        let kept = v5_session_after(pub_shard, sub_shard, 1, 900);
        assert_eq!(kept, (true, vec!["queued".to_owned(), "after".to_owned()]));
        let gone = v5_session_after(pub_shard, sub_shard, 1, 1100);
        assert_eq!(gone, (false, vec![]), "shards {pub_shard} -> {sub_shard}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The same for any interval and any time offline: the session is there
    /// exactly while the interval has not passed (0: it ends with the
    /// connection [MQTT-3.1.2-23]).
    #[test]
    fn offline_session_lives_exactly_its_interval(
        expiry_secs in 0..4u32,
        offline_ms in 0..5000u64,
        (pub_shard, sub_shard) in (0..2usize, 0..2usize),
    ) {
        let present = offline_ms < u64::from(expiry_secs) * 1000;
        let expected: Vec<String> =
            if present { vec!["queued".into(), "after".into()] } else { vec![] };
        let got = v5_session_after(pub_shard, sub_shard, expiry_secs, offline_ms);
        prop_assert_eq!(got, (present, expected));
    }
}

/// An MQTT 3.1.1 persistent session (CleanSession 0) lives for the broker's
/// `session_expiry_secs`; 0 keeps it for ever.
fn v3_session_after(session_expiry_secs: u64, offline_ms: u64) -> (bool, Vec<String>) {
    let mut sim = Sim::new(2, &Config { session_expiry_secs, ..Config::test() }, 0);
    let id = sim.id_on_shard("exp3", 1);
    let sub = sim.client(&id, V3);
    sim.connect(sub, persistent(&id, V3, 0));
    sim.subscribe(sub, &[("exp/t", QoS::AtLeastOnce)]);
    sim.settle();
    sim.disconnect(sub, ReasonCode::SUCCESS, Properties::default());
    let publisher = publisher(&mut sim, "exp3-pub", 0, V3);
    sim.publish(publisher, "exp/t", b"queued", QoS::AtLeastOnce, false);
    sim.advance(offline_ms);
    sim.take(sub);
    sim.connect(sub, persistent(&id, V3, 0));
    sim.settle();
    (connack(&sim.take(sub)).session_present, payloads(&sim.take_delivered(sub)))
}

#[test]
fn v3_session_expires_after_session_expiry_secs() {
    assert_eq!(v3_session_after(1, 900), (true, vec!["queued".to_owned()]));
    assert_eq!(v3_session_after(1, 1100), (false, vec![]), "[MQTT-3.2.2-3]");
    let ten_minutes = 600_000;
    assert_eq!(v3_session_after(0, ten_minutes), (true, vec!["queued".to_owned()]), "uncapped");
}

/// 3.14.2.2.2: a DISCONNECT may change a non-zero Session Expiry Interval: a
/// session connected with 1 s and disconnected with 30 s is there after 1.5 s
/// and gone after 30 s.
#[test]
fn disconnect_changes_session_expiry() {
    for (offline_ms, present) in [(1500, true), (30_100, false)] {
        let mut sim = sim(2);
        let id = sim.id_on_shard("de", 1);
        let sub = sim.client(&id, V5);
        sim.connect(sub, persistent(&id, V5, 1));
        sim.subscribe(sub, &[("de/t", QoS::AtLeastOnce)]);
        let expiry = Properties { session_expiry_interval: Some(30), ..Properties::default() };
        sim.disconnect(sub, ReasonCode::SUCCESS, expiry);
        sim.settle();
        let publisher = publisher(&mut sim, "de-pub", 0, V5);
        sim.publish(publisher, "de/t", b"kept", QoS::AtLeastOnce, false);
        sim.advance(offline_ms);
        sim.take(sub);
        sim.connect(sub, persistent(&id, V5, 0));
        sim.settle();
        assert_eq!(connack(&sim.take(sub)).session_present, present, "after {offline_ms} ms");
        let expected: Vec<String> = if present { vec!["kept".into()] } else { vec![] };
        assert_eq!(payloads(&sim.take_delivered(sub)), expected);
    }
}

// ---- wills ----------------------------------------------------------------------

/// A client on `shard` with `will`, and a subscriber to the will's topic on the
/// other shard.
fn with_will(
    sim: &mut Sim,
    shard: usize,
    protocol: ProtocolVersion,
    mut connect: Connect,
    will: LastWill,
) -> (usize, usize) {
    let watcher = subscriber(sim, "watch", 1 - shard, "will/#");
    let id = sim.id_on_shard("testament", shard);
    let c = sim.client(&id, protocol);
    connect.will = Some(will);
    sim.connect(c, connect);
    sim.settle();
    (c, watcher)
}

/// How a connection ends.
#[derive(Clone, Copy, Debug)]
enum End {
    NetworkDrop,
    Disconnect,
    /// MQTT 5 DISCONNECT 0x04 (to an MQTT 3 client, a plain DISCONNECT).
    DisconnectWithWill,
}

fn end(sim: &mut Sim, c: usize, how: End) {
    match how {
        End::NetworkDrop => sim.drop_conn(c),
        End::Disconnect => sim.disconnect(c, ReasonCode::SUCCESS, Properties::default()),
        End::DisconnectWithWill => {
            sim.disconnect(c, ReasonCode::DISCONNECT_WITH_WILL, Properties::default());
        }
    }
    sim.settle();
}

/// [MQTT-3.1.2-8]: a connection that ends without DISCONNECT publishes its will,
/// to subscribers on any shard, at once; DISCONNECT discards it [MQTT-3.14.4-3];
/// MQTT 5 DISCONNECT 0x04 asks for it [MQTT-3.14.2.1].
#[test]
fn will_is_published_when_the_connection_ends_without_disconnect() {
    for shard in 0..2 {
        for protocol in [V3, V5] {
            for how in [End::NetworkDrop, End::Disconnect, End::DisconnectWithWill] {
                let published = match how {
                    End::NetworkDrop => true,
                    End::Disconnect => false,
                    End::DisconnectWithWill => protocol.is_v5(),
                };
                let mut sim = sim(2);
                let connect = connect_packet("", protocol);
                let (c, watcher) =
                    with_will(&mut sim, shard, protocol, connect, will("will/a", "gone", None));
                end(&mut sim, c, how);
                let expected: Vec<String> = if published { vec!["gone".into()] } else { vec![] };
                let got = payloads(&sim.take_delivered(watcher));
                assert_eq!(got, expected, "{protocol:?} {how:?} on shard {shard}");
            }
        }
    }
}

/// An MQTT 5 will with Will Delay Interval `delay_secs`, of a session with
/// Session Expiry Interval `expiry_secs`, after a network drop (and a
/// reconnection `back_ms` after it, if any): when, in virtual ms after the drop,
/// it was published, if within `horizon_ms`.
fn delayed_will(
    delay_secs: u32,
    expiry_secs: u32,
    back_ms: Option<u64>,
    horizon_ms: u64,
) -> Option<u64> {
    let mut sim = sim(2);
    let connect = persistent("", V5, expiry_secs);
    let (c, watcher) =
        with_will(&mut sim, 0, V5, connect, will("will/d", "late", Some(delay_secs)));
    let dropped_at = sim.now().ms;
    end(&mut sim, c, End::NetworkDrop);
    let mut published = None;
    loop {
        let elapsed = sim.now().ms - dropped_at;
        let got = payloads(&sim.take_delivered(watcher));
        if !got.is_empty() {
            assert_eq!(got, ["late"], "once");
            assert!(published.is_none(), "a will is published once");
            published = Some(elapsed);
        }
        if elapsed >= horizon_ms {
            break;
        }
        if back_ms == Some(elapsed) {
            let id = sim.client_ref(c).client_id.to_string();
            sim.connect(c, persistent(&id, V5, expiry_secs));
        }
        sim.advance(100);
    }
    published
}

/// [MQTT-3.1.3-9]: a will with a Will Delay Interval waits for the earlier of
/// its delay and the end of the session, and is not sent if the client is back
/// in time.
#[test]
fn will_delay_waits_for_the_earlier_of_delay_and_session_end() {
    assert_eq!(delayed_will(2, 60, None, 5000), Some(2000), "after the delay");
    assert_eq!(delayed_will(5, 1, None, 8000), Some(1000), "at the session's end");
    assert_eq!(delayed_will(2, 60, Some(1500), 5000), None, "back in time");
    assert_eq!(delayed_will(2, 0, None, 5000), Some(0), "a session that ends at once");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The same for any delay, session expiry and reconnection time: the will
    /// goes out `min(delay, expiry)` after the drop unless the client was back
    /// before then.
    #[test]
    fn will_delay_for_any_delay_expiry_and_return(
        delay_secs in 0..5u32,
        expiry_secs in 0..5u32,
        back in proptest::option::of(0..60u64),
    ) {
        let due_ms = u64::from(delay_secs.min(expiry_secs)) * 1000;
        let back_ms = back.map(|n| n * 100);
        let expected = match back_ms {
            Some(back_ms) if back_ms < due_ms => None,
            _ => Some(due_ms),
        };
        prop_assert_eq!(delayed_will(delay_secs, expiry_secs, back_ms, 6000), expected);
    }
}

// ---- takeover -------------------------------------------------------------------

/// [MQTT-3.1.4-2]: a second connection with the same client id (on its owner
/// shard) closes the first, MQTT 5 with DISCONNECT 0x8E [MQTT-4.13.2-1]; a
/// persistent session continues on the new one (Session Present 1, messages
/// unacknowledged on the old one resent with DUP [MQTT-4.4.0-1]). The old
/// connection's will is published for MQTT 5 without a delay, not for MQTT 3
/// (the client is back).
#[test]
fn takeover_closes_the_old_connection_and_continues_the_session() {
    for (pub_shard, sub_shard) in PAIRS {
        for protocol in [V3, V5] {
            let mut sim = sim(2);
            let watcher = subscriber(&mut sim, "tw", pub_shard, "will/#");
            let id = sim.id_on_shard("to", sub_shard);
            let old = sim.manual_client(&id, protocol);
            let mut connect = persistent(&id, protocol, 60);
            connect.will = Some(will("will/t", "old", None));
            sim.connect(old, connect);
            sim.subscribe(old, &[("to/t", QoS::AtLeastOnce)]);
            sim.settle();
            let publisher = publisher(&mut sim, "to-pub", pub_shard, protocol);
            sim.publish(publisher, "to/t", b"m", QoS::AtLeastOnce, false);
            sim.settle();
            let first = sim.take_delivered(old);
            assert_eq!(payloads(&first), ["m"]);
            let new = sim.client(&id, protocol);
            sim.connect(new, persistent(&id, protocol, 60));
            sim.settle();
            assert!(!sim.is_connected(old), "old connection closed");
            assert_eq!(sim.client_ref(old).closed, Some(Close::TakenOver));
            let last = sim.take(old).pop();
            if protocol.is_v5() {
                let Some(Packet::Disconnect(d)) = last else { panic!("{last:?}") };
                assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER);
            } else {
                assert!(
                    !matches!(last, Some(Packet::Disconnect(_))),
                    "MQTT 3 has no server DISCONNECT"
                );
            }
            let packets = sim.take(new);
            assert!(connack(&packets).session_present);
            let again = sim.take_delivered(new);
            assert_eq!(payloads(&again), ["m"]);
            assert!(again[0].dup && again[0].packet_id == first[0].packet_id);
            let wills: Vec<String> = if protocol.is_v5() { vec!["old".into()] } else { vec![] };
            assert_eq!(payloads(&sim.take_delivered(watcher)), wills, "{protocol:?}");
        }
    }
}

// ---- keep-alive -----------------------------------------------------------------

/// A client with Keep Alive `keep_alive_secs` and a will, on shard 1 (the will's
/// subscriber on shard 0), that sends PINGREQ at `pings` (virtual ms after
/// CONNECT, multiples of 100) and nothing else. Returns when the broker closed
/// it, if within `horizon_ms`.
fn keep_alive_close(
    protocol: ProtocolVersion,
    keep_alive_secs: u16,
    pings: &[u64],
    horizon_ms: u64,
) -> Option<u64> {
    let mut sim = sim(2);
    let mut connect = connect_packet("", protocol);
    connect.keep_alive_secs = keep_alive_secs;
    let (c, watcher) = with_will(&mut sim, 1, protocol, connect, will("will/k", "silent", None));
    let start = sim.now().ms;
    sim.take(c);
    while sim.now().ms - start < horizon_ms {
        sim.advance(100);
        let elapsed = sim.now().ms - start;
        if !sim.is_connected(c) {
            assert_eq!(sim.client_ref(c).closed, Some(Close::KeepAliveTimeout));
            let packets = sim.take(c);
            if protocol.is_v5() {
                let Some(Packet::Disconnect(d)) = packets.last() else { panic!("{packets:?}") };
                assert_eq!(d.reason, ReasonCode::KEEP_ALIVE_TIMEOUT, "[MQTT-4.13.2-1]");
            }
            assert_eq!(payloads(&sim.take_delivered(watcher)), ["silent"], "will on timeout");
            return Some(elapsed);
        }
        if pings.contains(&elapsed) {
            sim.send(c, &Packet::PingReq);
            sim.settle();
            assert_eq!(sim.take(c), [Packet::PingResp], "[MQTT-3.12.4-1]");
        }
    }
    None
}

/// [MQTT-3.1.2-24]: a client silent for one and a half times its Keep Alive is
/// closed (with its will), not before; PINGREQ keeps it open.
#[test]
fn keep_alive_closes_a_silent_client_after_one_and_a_half_intervals() {
    let every_900_ms: Vec<u64> = (1..=11).map(|n| n * 900).collect();
    for protocol in [V3, V5] {
        assert_eq!(keep_alive_close(protocol, 1, &[], 10_000), Some(1500), "{protocol:?}");
        assert_eq!(keep_alive_close(protocol, 1, &every_900_ms, 10_000), None, "{protocol:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The same for any keep-alive and any pattern of PINGREQs: the client is
    /// closed one and a half keep-alives after the start of its first silence
    /// that long.
    #[test]
    fn keep_alive_closes_at_the_first_silence_of_one_and_a_half_intervals(
        v5 in any::<bool>(),
        keep_alive_secs in 1..3u16,
        gaps in proptest::collection::vec(1..40u64, 0..8),
    ) {
        let grace_ms = u64::from(keep_alive_secs) * 1500;
        let pings: Vec<u64> = gaps
            .iter()
            .scan(0, |at, gap| {
                *at += gap * 100;
                Some(*at)
            })
            .collect();
        let mut last = 0;
        for &ping in &pings {
            if ping - last >= grace_ms {
                break;
            }
            last = ping;
        }
        let protocol = if v5 { V5 } else { V3 };
        let horizon_ms = pings.last().copied().unwrap_or(0) + grace_ms + 100;
        let closed = keep_alive_close(protocol, keep_alive_secs, &pings, horizon_ms);
        prop_assert_eq!(closed, Some(last + grace_ms));
    }
}

// ---- message expiry ---------------------------------------------------------------

fn expiring(secs: u32) -> Option<Properties> {
    Some(Properties { message_expiry_interval: Some(secs), ..Properties::default() })
}

fn expiry_of(p: &Publish) -> Option<u32> {
    p.properties.as_ref().and_then(|p| p.message_expiry_interval)
}

/// [MQTT-3.3.2-5] [MQTT-3.3.2-6]: messages queued for an offline session: one
/// whose Message Expiry Interval (1 s) passed while it waited is not sent; one
/// with 60 s is, with the interval less the 2.2 s it waited (whole seconds).
#[test]
fn queued_message_expires_while_the_session_is_offline() {
    for (pub_shard, sub_shard) in PAIRS {
        let mut sim = sim(2);
        let id = sim.id_on_shard("mx", sub_shard);
        let sub = sim.client(&id, V5);
        sim.connect(sub, persistent(&id, V5, 60));
        sim.subscribe(sub, &[("mx/t", QoS::AtLeastOnce)]);
        sim.disconnect(sub, ReasonCode::SUCCESS, Properties::default());
        sim.settle();
        let publisher = publisher(&mut sim, "mx-pub", pub_shard, V5);
        sim.publish_with(publisher, "mx/t", b"short", QoS::AtLeastOnce, false, expiring(1));
        sim.publish_with(publisher, "mx/t", b"long", QoS::AtLeastOnce, false, expiring(60));
        sim.publish(publisher, "mx/t", b"plain", QoS::AtLeastOnce, false);
        sim.advance(2200);
        sim.connect(sub, persistent(&id, V5, 60));
        sim.settle();
        let got = sim.take_delivered(sub);
        assert_eq!(payloads(&got), ["long", "plain"]);
        assert_eq!(expiry_of(&got[0]), Some(58));
        assert_eq!(expiry_of(&got[1]), None);
    }
}

/// The same for a retained message, stored on its topic's shard: a new
/// subscriber on any shard gets the one with time left, with what is left.
#[test]
fn retained_message_expires() {
    for (pub_shard, sub_shard) in PAIRS {
        let mut sim = sim(2);
        let publisher = publisher(&mut sim, "rx-pub", pub_shard, V5);
        sim.publish_with(publisher, "rx/short", b"gone", QoS::AtLeastOnce, true, expiring(1));
        sim.publish_with(publisher, "rx/long", b"kept", QoS::AtLeastOnce, true, expiring(60));
        sim.advance(2200);
        let sub = subscriber(&mut sim, "rx-sub", sub_shard, "rx/#");
        let got = sim.take_delivered(sub);
        assert_eq!(payloads(&got), ["kept"]);
        assert!(got[0].retain);
        assert_eq!(expiry_of(&got[0]), Some(58));
    }
}

/// A message with Message Expiry Interval `expiry_secs`, `waited_ms` after it was
/// published: what a subscriber on `sub_shard` gets of it, with the interval
/// left. Retained: the subscriber subscribes then; otherwise its session was
/// offline meanwhile and comes back then.
fn expiring_message_after(
    retained: bool,
    (pub_shard, sub_shard): (usize, usize),
    expiry_secs: u32,
    waited_ms: u64,
) -> Vec<(String, Option<u32>)> {
    let mut sim = sim(2);
    let id = sim.id_on_shard("mxp", sub_shard);
    let sub = sim.client(&id, V5);
    if !retained {
        sim.connect(sub, persistent(&id, V5, 3600));
        sim.subscribe(sub, &[("mxp/t", QoS::AtLeastOnce)]);
        sim.disconnect(sub, ReasonCode::SUCCESS, Properties::default());
        sim.settle();
    }
    let publisher = publisher(&mut sim, "mxp-pub", pub_shard, V5);
    let properties = expiring(expiry_secs);
    sim.publish_with(publisher, "mxp/t", b"m", QoS::AtLeastOnce, retained, properties);
    sim.advance(waited_ms);
    sim.connect(sub, persistent(&id, V5, 3600));
    if retained {
        sim.subscribe(sub, &[("mxp/t", QoS::AtLeastOnce)]);
    }
    sim.settle();
    sim.take_delivered(sub).iter().map(|p| (text(p), expiry_of(p))).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The same for any interval and wait, queued or retained, across shards or
    /// not: sent while whole seconds waited are fewer than the interval, with
    /// the interval less them [MQTT-3.3.2-5], [MQTT-3.3.2-6].
    #[test]
    fn message_expiry_for_any_interval_and_wait(
        retained in any::<bool>(),
        shards in (0..2usize, 0..2usize),
        expiry_secs in 1..4u32,
        waited_ms in 0..5000u64,
    ) {
        let waited_secs = u32::try_from(waited_ms / 1000).expect("small");
        let expected: Vec<(String, Option<u32>)> = if waited_secs < expiry_secs {
            vec![("m".to_owned(), Some(expiry_secs - waited_secs))]
        } else {
            vec![]
        };
        prop_assert_eq!(expiring_message_after(retained, shards, expiry_secs, waited_ms), expected);
    }
}
