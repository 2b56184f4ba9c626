//! Session state machine tests: a scripted client drives a `Session` through
//! deliveries, acknowledgements, disconnects and reconnects, decoding everything the
//! session encodes, and checks the invariants after every step.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::message::{Message, MessageId};
use crate::protocol::{codec, Limits, Packet, QoS, TopicName};

fn limits(inflight_max: u16, mqueue_len_max: usize, store_qos0: bool) -> SessionLimits {
    SessionLimits {
        inflight_max,
        mqueue_len_max,
        mqueue_store_qos0: store_qos0,
        out_buffer_max: 1 << 20,
    }
}

fn delivery(seq: u64, qos: QoS) -> Delivery {
    let message = Message {
        id: MessageId(u128::from(seq)),
        topic: TopicName::try_from("t").expect("valid topic"),
        payload: Bytes::copy_from_slice(&seq.to_be_bytes()),
        qos,
        retain: false,
    };
    Delivery { message: Arc::new(message), qos, retain: false }
}

fn seq_of(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload.try_into().expect("8-byte payload"))
}

#[derive(Clone, Debug)]
enum Op {
    Deliver(QoS),
    /// Acknowledge the n-th (modulo) unacknowledged packet the client holds.
    Ack(usize),
    Disconnect,
    Reconnect,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
            .prop_map(Op::Deliver),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::Disconnect),
        1 => Just(Op::Reconnect),
    ]
}

/// What the client saw, and what it still has to acknowledge.
#[derive(Default)]
struct Client {
    /// Sequence numbers of first transmissions (DUP = 0), in arrival order.
    first_sent: Vec<u64>,
    /// Packets awaiting the client's PUBACK / PUBREC / PUBCOMP, by packet id.
    unacked: VecDeque<(PacketId, QoS, bool)>,
    /// QoS 2 messages the client has taken (exactly once) by sequence.
    qos2_taken: BTreeSet<u64>,
}

impl Client {
    fn read(&mut self, out: &mut BytesMut) {
        let limits = Limits { packet_size_max: 1 << 20 };
        while let Some(packet) = codec::decode(out, &limits).expect("session encodes valid packets")
        {
            match packet {
                Packet::Publish(publish) => {
                    let seq = seq_of(&publish.payload);
                    if !publish.dup {
                        self.first_sent.push(seq);
                    }
                    if publish.qos == QoS::ExactlyOnce {
                        self.qos2_taken.insert(seq);
                    }
                    if let Some(id) = publish.packet_id {
                        if !self.unacked.iter().any(|(known, _, _)| *known == id) {
                            self.unacked.push_back((id, publish.qos, false));
                        }
                    }
                }
                Packet::PubRel(ack) => {
                    let entry = self.unacked.iter_mut().find(|(id, _, _)| *id == ack.packet_id);
                    entry.expect("PUBREL only for a PUBREC'd id").2 = true;
                }
                other => panic!("unexpected packet toward the client: {other:?}"),
            }
        }
    }
}

/// Runs `ops`, then reconnects and acknowledges everything, checking invariants.
fn run(ops: &[Op], inflight_max: u16, mqueue_len_max: usize, store_qos0: bool) {
    let mut session =
        Session::new("c".into(), true, limits(inflight_max, mqueue_len_max, store_qos0));
    let mut client = Client::default();
    let mut out = BytesMut::new();
    let mut delivered_qos12 = Vec::new();
    let mut dropped = BTreeSet::new();
    let mut online = true;
    let mut seq = 0;
    let ack = |session: &mut Session, client: &mut Client, out: &mut BytesMut, n: usize| {
        if client.unacked.is_empty() {
            return;
        }
        let at = n % client.unacked.len();
        let (id, qos, released) = client.unacked[at];
        match (qos, released) {
            (QoS::AtLeastOnce, _) => {
                session.on_puback(id, out);
                client.unacked.remove(at);
            }
            (QoS::ExactlyOnce, false) => session.on_pubrec(id, out),
            (QoS::ExactlyOnce, true) => {
                session.on_pubcomp(id, out);
                client.unacked.remove(at);
            }
            (QoS::AtMostOnce, _) => unreachable!("QoS 0 has no packet id"),
        }
    };
    for op in ops {
        match op {
            Op::Deliver(qos) => {
                seq += 1;
                if *qos != QoS::AtMostOnce {
                    delivered_qos12.push(seq);
                }
                let target = if online { Some(&mut out) } else { None };
                if let Some((gone, _)) = session.deliver(delivery(seq, *qos), target, true) {
                    dropped.insert(seq_of(&gone.message.payload));
                }
            }
            Op::Ack(n) if online => ack(&mut session, &mut client, &mut out, *n),
            Op::Ack(_) => {}
            Op::Disconnect => {
                session.go_offline();
                online = false;
            }
            Op::Reconnect => {
                session.resume(&mut out);
                online = true;
            }
        }
        if online {
            client.read(&mut out);
        }
        assert!(session.check_invariants());
        assert!(session.inflight_len() <= usize::from(inflight_max), "window exceeded");
    }
    // Drain: the client comes back and acknowledges until nothing is left.
    session.resume(&mut out);
    client.read(&mut out);
    for _ in 0..(4 * ops.len() + 8) {
        ack(&mut session, &mut client, &mut out, 0);
        client.read(&mut out);
    }
    assert!(!session.has_pending(), "everything delivered or dropped");
    // First transmissions come in delivery order, each message once.
    assert!(client.first_sent.windows(2).all(|w| w[0] < w[1]), "order: {:?}", client.first_sent);
    // Every QoS 1/2 message was delivered or dropped by the counted mqueue policy.
    let seen: BTreeSet<u64> = client.first_sent.iter().copied().collect();
    for seq in delivered_qos12 {
        assert!(seen.contains(&seq) || dropped.contains(&seq), "message {seq} lost");
    }
    let stats = session.stats();
    assert_eq!(stats.dropped_queue_full + stats.dropped_qos0, dropped.len() as u64);
    assert_eq!(stats.dropped_budget, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_scripts_keep_invariants(
        ops in proptest::collection::vec(op(), 0..200),
        inflight_max in 1u16..6,
        mqueue_len_max in 1usize..12,
        store_qos0 in any::<bool>(),
    ) {
        run(&ops, inflight_max, mqueue_len_max, store_qos0);
    }
}

#[test]
fn offline_messages_come_back_in_order_with_session_present_state() {
    let mut session = Session::new("c".into(), true, limits(2, 1000, true));
    session.go_offline();
    for seq in 1..=5 {
        assert!(session.deliver(delivery(seq, QoS::AtLeastOnce), None, true).is_none());
    }
    assert_eq!(session.mqueue_len(), 5);
    let mut out = BytesMut::new();
    session.resume(&mut out);
    let mut client = Client::default();
    client.read(&mut out);
    assert_eq!(client.first_sent, vec![1, 2], "window of 2");
    let first = client.unacked[0].0;
    session.on_puback(first, &mut out);
    client.read(&mut out);
    assert_eq!(client.first_sent, vec![1, 2, 3]);
}

#[test]
fn unacknowledged_messages_are_resent_with_dup_and_same_id() {
    // [MQTT-4.4.0-1]
    let mut session = Session::new("c".into(), true, limits(4, 10, true));
    let mut out = BytesMut::new();
    session.deliver(delivery(1, QoS::AtLeastOnce), Some(&mut out), true);
    session.deliver(delivery(2, QoS::ExactlyOnce), Some(&mut out), true);
    let limits = Limits { packet_size_max: 1 << 20 };
    let mut ids = Vec::new();
    while let Some(Packet::Publish(p)) = codec::decode(&mut out, &limits).unwrap() {
        assert!(!p.dup);
        ids.push(p.packet_id.unwrap());
    }
    session.on_pubrec(ids[1], &mut out);
    out.clear();
    session.go_offline();
    session.resume(&mut out);
    match codec::decode(&mut out, &limits).unwrap() {
        Some(Packet::Publish(p)) => {
            assert!(p.dup);
            assert_eq!(p.packet_id, Some(ids[0]));
        }
        other => panic!("expected the QoS 1 resend, got {other:?}"),
    }
    assert_eq!(
        codec::decode(&mut out, &limits).unwrap(),
        Some(Packet::PubRel(Ack { packet_id: ids[1] }))
    );
}

#[test]
fn full_mqueue_drops_oldest_and_counts() {
    let mut session = Session::new("c".into(), true, limits(1, 3, true));
    session.go_offline();
    for seq in 1..=5 {
        session.deliver(delivery(seq, QoS::AtLeastOnce), None, true);
    }
    assert_eq!(session.stats().dropped_queue_full, 2);
    let mut out = BytesMut::new();
    session.resume(&mut out);
    let mut client = Client::default();
    client.read(&mut out);
    assert_eq!(client.first_sent, vec![3], "1 and 2 were the oldest");
}

#[test]
fn qos0_not_stored_is_dropped_when_it_cannot_go_at_once() {
    let mut session = Session::new("c".into(), true, limits(1, 3, false));
    session.go_offline();
    let dropped = session.deliver(delivery(1, QoS::AtMostOnce), None, true);
    assert_eq!(dropped.map(|(_, reason)| reason), Some(DropReason::Qos0NotStored));
    assert_eq!(session.stats().dropped_qos0, 1);
}

#[test]
fn incoming_qos2_is_routed_once_until_pubrel() {
    // [MQTT-4.3.3-2]
    let mut session = Session::new("c".into(), false, limits(1, 3, false));
    let id = PacketId::new(7).unwrap();
    assert!(session.on_incoming_qos2(id));
    assert!(!session.on_incoming_qos2(id), "a resend before PUBREL is not routed again");
    let mut out = BytesMut::new();
    session.on_pubrel(id, &mut out);
    assert!(session.on_incoming_qos2(id), "after PUBREL the id is free again");
}
