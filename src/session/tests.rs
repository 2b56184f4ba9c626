//! Session state machine tests: property tests through the scripted client of
//! `script`, and targeted cases for the spec's rules.

use bytes::BytesMut;
use proptest::prelude::*;

use std::sync::Arc;

use super::script::{delivery, limits, run, run_on, Client, Op};
use super::*;
use crate::protocol::{codec, Limits, Packet, Properties, PublishTopic, QoS, TopicName};

/// An MQTT 5 connection with its own Receive Maximum and topic aliases.
fn v5_link(receive_max: u16, topic_alias_max: u16) -> Link {
    Link {
        protocol: ProtocolVersion::V5,
        packet_size_max: 1 << 20,
        topic_alias_max,
        receive_max,
        topic_strip: 0,
    }
}

fn decode_all(out: &mut BytesMut, protocol: ProtocolVersion) -> Vec<Packet> {
    let limits = Limits { packet_size_max: 1 << 20, protocol };
    std::iter::from_fn(|| codec::decode(out, &limits).expect("valid packets")).collect()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
            .prop_map(Op::Deliver),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::Disconnect),
        1 => (1u16..6).prop_map(Op::Reconnect),
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

    /// The same over MQTT 5: the client's Receive Maximum bounds the window
    /// [MQTT-3.3.4-9] and outgoing aliases never confuse the client.
    #[test]
    fn random_scripts_keep_invariants_over_v5(
        ops in proptest::collection::vec(op(), 0..200),
        inflight_max in 1u16..6,
        receive_max in 1u16..6,
        topic_alias_max in 0u16..3,
        mqueue_len_max in 1usize..12,
    ) {
        run_on(&ops, inflight_max, mqueue_len_max, true, v5_link(receive_max, topic_alias_max));
    }
}

#[test]
fn v5_publish_carries_properties_sub_ids_and_aliases() {
    // [MQTT-3.3.4-3], [MQTT-3.3.2-12], [MQTT-3.3.2-6]
    let mut session = Session::new("c".into(), limits(4, 10, true));
    session.attach(v5_link(10, 1));
    let mut d = delivery(1, QoS::AtLeastOnce);
    let mut message = (*d.message).clone();
    message.properties = Some(Box::new(Properties {
        message_expiry_interval: Some(60),
        content_type: Some("text/plain".into()),
        user_properties: vec![("k".into(), "v1".into()), ("k".into(), "v2".into())],
        ..Properties::default()
    }));
    // The message waited 5 s in the broker.
    let now_us = message.id.timestamp_us() + 5_000_000;
    d.message = Arc::new(message);
    d.sub_ids = vec![3, 9];
    let mut out = BytesMut::new();
    session.deliver(d.clone(), Some(&mut out), true, now_us);
    session.deliver(d, Some(&mut out), true, now_us);
    let packets = decode_all(&mut out, ProtocolVersion::V5);
    let [Packet::Publish(first), Packet::Publish(second)] = &packets[..] else {
        panic!("two PUBLISHes: {packets:?}");
    };
    let props = first.properties.as_deref().expect("properties");
    assert_eq!(first.topic.name().map(TopicName::as_str), Some("t"));
    assert_eq!(props.topic_alias, Some(1), "alias set with the topic");
    assert_eq!(props.message_expiry_interval, Some(55), "60 s less 5 s waited");
    assert_eq!(props.subscription_identifiers, vec![3, 9]);
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.user_properties.len(), 2);
    assert_eq!(second.topic, PublishTopic::Alias(1), "then the alias alone");
    assert_eq!(second.properties.as_deref().unwrap().topic_alias, None, "in the topic");
}

#[test]
fn v5_expired_and_too_large_messages_are_not_sent() {
    // [MQTT-3.3.2-5], [MQTT-3.1.2-25]
    let mut session = Session::new("c".into(), limits(4, 10, true));
    let mut link = v5_link(10, 0);
    link.packet_size_max = 40;
    session.attach(link);
    let mut expiring = delivery(1, QoS::AtLeastOnce);
    let mut message = (*expiring.message).clone();
    message.properties =
        Some(Box::new(Properties { message_expiry_interval: Some(2), ..Properties::default() }));
    let later_us = message.id.timestamp_us() + 2_000_000;
    expiring.message = Arc::new(message);
    let mut big = delivery(2, QoS::AtLeastOnce);
    let mut message = (*big.message).clone();
    message.payload = bytes::Bytes::from(vec![0u8; 64]);
    big.message = Arc::new(message);
    let mut out = BytesMut::new();
    session.go_offline();
    session.deliver(expiring, None, true, 0);
    session.deliver(big, None, true, 0);
    session.deliver(delivery(3, QoS::AtLeastOnce), None, true, 0);
    session.resume(&mut out, later_us);
    let mut client = Client::new(ProtocolVersion::V5);
    client.read(&mut out);
    assert_eq!(client.first_sent, vec![3], "only the message that fits and lives");
    assert_eq!(session.stats().dropped_expired, 1);
    assert_eq!(session.stats().dropped_too_large, 1);
    assert_eq!(session.inflight_len(), 1, "dropped messages take no window slot");
}

#[test]
fn shared_deliveries_are_taken_back_unless_acknowledged() {
    // [MQTT-4.8.2-5]: a leaving member's unacknowledged shared messages move on.
    let mut session = Session::new("c".into(), limits(1, 10, true));
    let filter = TopicFilter::try_from("$share/g/t").unwrap();
    let mut out = BytesMut::new();
    for seq in 1..=3 {
        let mut d = delivery(seq, QoS::AtLeastOnce);
        d.shared = Some(filter.clone());
        session.deliver(d, Some(&mut out), true, 0);
    }
    session.deliver(delivery(4, QoS::AtLeastOnce), Some(&mut out), true, 0);
    let taken: Vec<u64> = session
        .take_shared()
        .iter()
        .map(|d| u64::from_be_bytes(d.message.payload[..].try_into().unwrap()))
        .collect();
    assert_eq!(taken, vec![1, 2, 3], "the sent one and the queued ones");
    assert_eq!(session.inflight_len(), 0);
    assert_eq!(session.mqueue_len(), 1, "the plain message stays");
}

#[test]
fn offline_messages_come_back_in_order_with_session_present_state() {
    let mut session = Session::new("c".into(), limits(2, 1000, true));
    session.go_offline();
    for seq in 1..=5 {
        assert!(session.deliver(delivery(seq, QoS::AtLeastOnce), None, true, 0).is_none());
    }
    assert_eq!(session.mqueue_len(), 5);
    let mut out = BytesMut::new();
    session.resume(&mut out, 0);
    let mut client = Client::default();
    client.read(&mut out);
    assert_eq!(client.first_sent, vec![1, 2], "window of 2");
    let first = client.unacked[0].0;
    session.on_puback(first, &mut out, 0).unwrap();
    client.read(&mut out);
    assert_eq!(client.first_sent, vec![1, 2, 3]);
}

#[test]
fn unacknowledged_messages_are_resent_with_dup_and_same_id() {
    // [MQTT-4.4.0-1]
    let mut session = Session::new("c".into(), limits(4, 10, true));
    let mut out = BytesMut::new();
    session.deliver(delivery(1, QoS::AtLeastOnce), Some(&mut out), true, 0);
    session.deliver(delivery(2, QoS::ExactlyOnce), Some(&mut out), true, 0);
    let limits = Limits { packet_size_max: 1 << 20, protocol: ProtocolVersion::V311 };
    let mut ids = Vec::new();
    while let Some(Packet::Publish(p)) = codec::decode(&mut out, &limits).unwrap() {
        assert!(!p.dup);
        ids.push(p.qos.packet_id().unwrap());
    }
    session.on_pubrec(&Ack::new(ids[1]), &mut out, 0).unwrap();
    out.clear();
    session.go_offline();
    session.resume(&mut out, 0);
    match codec::decode(&mut out, &limits).unwrap() {
        Some(Packet::Publish(p)) => {
            assert!(p.dup);
            assert_eq!(p.qos.packet_id(), Some(ids[0]));
        }
        other => panic!("expected the QoS 1 resend, got {other:?}"),
    }
    assert_eq!(codec::decode(&mut out, &limits).unwrap(), Some(Packet::PubRel(Ack::new(ids[1]))));
}

#[test]
fn full_mqueue_drops_oldest_and_counts() {
    let mut session = Session::new("c".into(), limits(1, 3, true));
    session.go_offline();
    let dropped: Vec<_> = (1..=5)
        .filter_map(|seq| session.deliver(delivery(seq, QoS::AtLeastOnce), None, true, 0))
        .map(|(d, reason)| (d.message.id.0, reason))
        .collect();
    assert_eq!(dropped, vec![(1, DropReason::QueueFull), (2, DropReason::QueueFull)]);
    let mut out = BytesMut::new();
    session.resume(&mut out, 0);
    let mut client = Client::default();
    client.read(&mut out);
    assert_eq!(client.first_sent, vec![3], "1 and 2 were the oldest");
}

#[test]
fn qos0_not_stored_is_dropped_when_it_cannot_go_at_once() {
    let mut session = Session::new("c".into(), limits(1, 3, false));
    session.go_offline();
    let dropped = session.deliver(delivery(1, QoS::AtMostOnce), None, true, 0);
    assert_eq!(dropped.map(|(_, reason)| reason), Some(DropReason::Qos0NotStored));
}

#[test]
fn incoming_qos2_is_routed_once_until_pubrel() {
    // [MQTT-4.3.3-2]
    let mut session = Session::new("c".into(), limits(1, 3, false));
    let id = PacketId::new(7).unwrap();
    assert!(session.on_incoming_qos2(id));
    assert!(!session.on_incoming_qos2(id), "a resend before PUBREL is not routed again");
    let mut out = BytesMut::new();
    session.on_pubrel(id, &mut out);
    assert!(session.on_incoming_qos2(id), "after PUBREL the id is free again");
}

/// Decodes the PUBLISHes in `out` and returns their packet ids.
fn publish_ids(out: &mut BytesMut, protocol: ProtocolVersion) -> Vec<PacketId> {
    decode_all(out, protocol)
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => p.qos.packet_id().expect("QoS 1"),
            other => panic!("expected PUBLISH, got {other:?}"),
        })
        .collect()
}

#[test]
fn smaller_receive_maximum_after_reconnect_is_kept() {
    // [MQTT-4.9.0-1], [MQTT-3.3.4-9]: the client's new limit, not the old window.
    let mut session = Session::new("c".into(), limits(4, 10, true));
    session.attach(v5_link(4, 0));
    let mut out = BytesMut::new();
    for seq in 1..=4 {
        session.deliver(delivery(seq, QoS::AtLeastOnce), Some(&mut out), true, 0);
    }
    let ids = publish_ids(&mut out, ProtocolVersion::V5);
    assert_eq!(ids.len(), 4);
    session.go_offline();
    session.attach(v5_link(2, 0));
    session.resume(&mut out, 0);
    assert_eq!(publish_ids(&mut out, ProtocolVersion::V5), ids[..2], "two resent, in order");
    session.on_puback(ids[0], &mut out, 0).unwrap();
    assert_eq!(publish_ids(&mut out, ProtocolVersion::V5), ids[2..3], "the third as one is freed");
}

#[test]
fn no_timed_retry_on_mqtt5() {
    // [MQTT-4.4.0-1]: MQTT 5 resends only when the session resumes.
    let mut session = Session::new("c".into(), limits(4, 10, true));
    session.attach(v5_link(4, 0));
    let mut out = BytesMut::new();
    session.deliver(delivery(1, QoS::AtLeastOnce), Some(&mut out), true, 0);
    out.clear();
    session.retry(&mut out, 0);
    assert!(
        out.is_empty(),
        "resent while connected: {:?}",
        decode_all(&mut out, ProtocolVersion::V5)
    );
    session.attach(Link::v3(ProtocolVersion::V311));
    session.retry(&mut out, 0);
    assert_eq!(publish_ids(&mut out, ProtocolVersion::V311).len(), 1, "3.1.1 keeps its retry");
}

#[test]
fn a_message_that_outgrows_the_protocol_maximum_is_dropped() {
    // A QoS 0 PUBLISH of exactly the protocol maximum gains a packet id at QoS 1
    // (and a property length in MQTT 5): it cannot be framed for this subscriber.
    let topic_and_len = 3;
    let payload = bytes::Bytes::from(vec![0u8; codec::REMAINING_LEN_MAX - topic_and_len]);
    for link in [Link::v3(ProtocolVersion::V311), v5_link(4, 0)] {
        let mut link = link;
        link.packet_size_max = usize::MAX;
        let mut session = Session::new("c".into(), limits(4, 10, true));
        session.attach(link);
        let mut d = delivery(1, QoS::AtLeastOnce);
        let mut message = (*d.message).clone();
        message.payload = payload.clone();
        d.message = Arc::new(message);
        let mut out = BytesMut::new();
        session.deliver(d, Some(&mut out), true, 0);
        assert!(out.is_empty());
        assert_eq!(session.stats().dropped_too_large, 1);
        assert_eq!(session.inflight_len(), 0);
    }
}

#[test]
fn a_new_alias_never_takes_a_publish_over_the_client_maximum() {
    // [MQTT-3.1.2-24]: 16 bytes without an alias, 19 with one; the client takes 16.
    let mut session = Session::new("c".into(), limits(4, 10, true));
    let mut link = v5_link(10, 1);
    link.packet_size_max = 16;
    session.attach(link);
    let mut out = BytesMut::new();
    session.deliver(delivery(1, QoS::AtLeastOnce), Some(&mut out), true, 0);
    assert_eq!(out.len(), 16, "sent, and within the client's maximum");
    let packets = decode_all(&mut out, ProtocolVersion::V5);
    let [Packet::Publish(p)] = &packets[..] else { panic!("one PUBLISH: {packets:?}") };
    assert_eq!(p.topic.name().map(TopicName::as_str), Some("t"));
    assert!(p.properties.as_deref().is_none_or(|p| p.topic_alias.is_none()), "no alias");
    assert_eq!(session.stats().dropped_too_large, 0);
}

/// An idle session holds no traffic state: the first message allocates it, and an
/// idle moment after the acknowledgement releases it; a QoS 0 message that is not
/// stored allocates none.
#[test]
fn traffic_state_lives_only_while_messages_pass() {
    let mut session = Session::new("c".into(), limits(4, 10, false));
    assert!(session.traffic.is_none(), "a new session");
    session.go_offline();
    assert!(session.deliver(delivery(1, QoS::AtMostOnce), None, true, 0).is_some());
    assert!(session.traffic.is_none(), "QoS 0 not stored for an offline session");
    session.attach(Link::v3(ProtocolVersion::V311));
    let mut out = BytesMut::new();
    session.resume(&mut out, 0);
    session.deliver(delivery(2, QoS::AtLeastOnce), Some(&mut out), true, 0);
    assert!(session.traffic.is_some(), "one message in flight");
    let [Packet::Publish(publish)] = &decode_all(&mut out, ProtocolVersion::V311)[..] else {
        panic!("one PUBLISH");
    };
    let id = publish.qos.packet_id().expect("QoS 1");
    session.release_room();
    assert!(session.traffic.is_some(), "kept while the message is unacknowledged");
    assert!(session.on_puback(id, &mut out, 0).expect("its own id").is_some());
    session.release_room();
    assert!(session.traffic.is_none(), "released once idle");
    assert!(session.check_invariants());
}
