//! Delivery per QoS and ordering under random traffic, takeover, and retained
//! last-writer-wins across shards.

use std::collections::HashMap;
use std::num::{NonZeroU16, NonZeroUsize};

use proptest::prelude::*;

use crate::config::Config;
use crate::protocol::{Packet, QoS, ReasonCode, TopicName};
use crate::router::topic_matches;

use super::super::super::Close;
use super::super::{connect_packet, Sim};
use super::{
    connack, payloads, persistent, publisher, qos, sim, subscriber, text, will, PAIRS, V3, V5,
};

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
    let config = Config {
        inflight_max: NonZeroU16::new(inflight_max).expect("at least 1"),
        ring_batch_max: NonZeroUsize::new(ring_batch_max).expect("at least 1"),
        ..Config::test()
    };
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
            assert_eq!(publish.topic.name().map(TopicName::as_str), Some(TOPICS[topic]));
            assert_eq!(publish.qos.qos(), q, "delivered at the published QoS [MQTT-3.8.4-6]");
            let seen = count.entry((p, s)).or_default();
            *seen += 1;
            if *seen == 1 {
                let previous = last.insert((p, topic, q), s);
                assert!(
                    previous.is_none_or(|prev| prev < s),
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

// ---- takeover -------------------------------------------------------------------

/// [MQTT-3.1.4-2]: a second connection with the same client id (on its owner
/// shard) closes the first, MQTT 5 with DISCONNECT 0x8E [MQTT-4.13.2-1]; a
/// persistent session continues on the new one (Session Present 1, messages
/// unacknowledged on the old one resent with DUP [MQTT-4.4.0-1]). The old
/// connection closed without DISCONNECT, so its will (without a delay) is
/// published, in MQTT 3 as in MQTT 5 [MQTT-3.1.2-8].
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
            assert!(again[0].dup && again[0].qos.packet_id() == first[0].qos.packet_id());
            assert_eq!(payloads(&sim.take_delivered(watcher)), ["old"], "{protocol:?}");
        }
    }
}
