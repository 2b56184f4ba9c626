//! Session state machine tests: property tests through the scripted client of
//! `script`, and targeted cases for the spec's rules.

use bytes::BytesMut;
use proptest::prelude::*;

use super::script::{delivery, limits, run, Client, Op};
use super::*;
use crate::protocol::{codec, Limits, Packet, QoS};

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
            .prop_map(Op::Deliver),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::Disconnect),
        1 => Just(Op::Reconnect),
    ]
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
