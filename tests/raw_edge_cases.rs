//! Raw bytes on the wire, each answered exactly as MQTT 3.1.1 says.

mod common;

use std::time::{Duration, Instant};

use common::{
    addr, client_id_on_shard, connect_packet, encode, publish_packet, start, text, Raw, SHARDS,
};
use shardmq::protocol::{Ack, ConnAck, Packet, Properties, QoS, ReasonCode};
use shardmq::Config;

/// CONNACK bytes: session present flag, return code.
fn connack(session_present: bool, code: u8) -> [u8; 4] {
    [0x20, 0x02, u8::from(session_present), code]
}

#[test]
fn protocol_level_6_is_refused_with_connack_0x01_then_closed() {
    let broker = start(Config::test());
    let mut raw = Raw::open(addr(&broker));
    // A CONNECT with name "MQTT" and a level no version has (6), clean start,
    // keep-alive 60, then what would be MQTT 5 properties and client id "v6".
    raw.send_bytes(&[
        0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x02,
        b'v', b'6',
    ]);
    // [MQTT-3.1.2-2]: CONNACK 0x01 (unacceptable protocol level), then
    // [MQTT-3.2.2-5]: the connection is closed.
    assert_eq!(raw.recv_bytes(4), connack(false, 0x01));
    raw.expect_closed();
}

#[test]
fn empty_client_id_with_clean_session_0_is_refused_with_connack_0x02() {
    let broker = start(Config::test());
    let mut raw = Raw::open(addr(&broker));
    // Level 4, flags 0x00 (CleanSession = 0), keep-alive 60, client id "".
    raw.send_bytes(&[
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x3C, 0x00, 0x00,
    ]);
    // [MQTT-3.1.3-8]: CONNACK 0x02 (identifier rejected), then closed [MQTT-3.2.2-5].
    assert_eq!(raw.recv_bytes(4), connack(false, 0x02));
    raw.expect_closed();
}

#[test]
fn empty_client_id_with_clean_session_1_is_accepted() {
    let broker = start(Config::test());
    let mut raw = Raw::open(addr(&broker));
    raw.send_bytes(&[
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
    ]);
    // [MQTT-3.1.3-6]: the server assigns an id; [MQTT-3.2.2-1]: session present 0.
    assert_eq!(raw.recv_bytes(4), connack(false, 0x00));
    assert_eq!(raw.sync(), []);
}

#[test]
fn session_present_flag_follows_clean_session_and_stored_state() {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let id = client_id_on_shard("sp", 1, SHARDS);
    let connect = |clean: bool| {
        let mut raw = Raw::open(addr);
        raw.send(&Packet::Connect(connect_packet(&id, clean)));
        let bytes = raw.recv_bytes(4);
        (raw, bytes)
    };

    // [MQTT-3.2.2-3]: CleanSession = 0 and no stored session: session present 0.
    let (mut raw, bytes) = connect(false);
    assert_eq!(bytes, connack(false, 0));
    raw.subscribe(&[("sp/t", QoS::AtLeastOnce)]);
    raw.disconnect();
    // [MQTT-3.2.2-2]: CleanSession = 0 and a stored session: session present 1.
    let (raw, bytes) = connect(false);
    assert_eq!(bytes, connack(true, 0));
    raw.disconnect();
    // [MQTT-3.2.2-1]: CleanSession = 1: session present 0, and the stored session is
    // discarded [MQTT-3.1.2-6] ...
    let (raw, bytes) = connect(true);
    assert_eq!(bytes, connack(false, 0));
    raw.disconnect();
    // ... so it is not there afterwards, nor is any session a clean one had.
    let (raw, bytes) = connect(false);
    assert_eq!(bytes, connack(false, 0));
    raw.disconnect();
}

#[test]
fn acknowledgements_carry_the_packet_ids_they_acknowledge() {
    let broker = start(Config::test());
    let (mut raw, _) = Raw::connect(addr(&broker), "acks", true);
    // QoS 1 PUBLISH "a/b" id 0x1234 -> PUBACK 0x1234 [MQTT-4.3.2-2].
    raw.send_bytes(&[0x32, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x12, 0x34, b'x']);
    assert_eq!(raw.recv_bytes(4), [0x40, 0x02, 0x12, 0x34]);
    // QoS 2 PUBLISH id 0xBEEF -> PUBREC 0xBEEF [MQTT-4.3.3-2] ...
    raw.send_bytes(&[0x34, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0xBE, 0xEF, b'y']);
    assert_eq!(raw.recv_bytes(4), [0x50, 0x02, 0xBE, 0xEF]);
    // ... PUBREL 0xBEEF -> PUBCOMP 0xBEEF.
    raw.send_bytes(&[0x62, 0x02, 0xBE, 0xEF]);
    assert_eq!(raw.recv_bytes(4), [0x70, 0x02, 0xBE, 0xEF]);
    // A PUBREL for an id not (or no longer) in use is still answered, so a client
    // resending it after a reconnect completes.
    raw.send_bytes(&[0x62, 0x02, 0x00, 0x07]);
    assert_eq!(raw.recv_bytes(4), [0x70, 0x02, 0x00, 0x07]);
    // SUBSCRIBE id 0x0A0B "a/#" QoS 2 -> SUBACK 0x0A0B granted 2 [MQTT-3.8.4-2].
    raw.send_bytes(&[0x82, 0x08, 0x0A, 0x0B, 0x00, 0x03, b'a', b'/', b'#', 0x02]);
    assert_eq!(raw.recv_bytes(5), [0x90, 0x03, 0x0A, 0x0B, 0x02]);
    // UNSUBSCRIBE id 0x0C0D "a/#" -> UNSUBACK 0x0C0D [MQTT-3.10.4-4].
    raw.send_bytes(&[0xA2, 0x07, 0x0C, 0x0D, 0x00, 0x03, b'a', b'/', b'#']);
    assert_eq!(raw.recv_bytes(4), [0xB0, 0x02, 0x0C, 0x0D]);
    // PINGREQ -> PINGRESP [MQTT-3.12.4-1].
    raw.send_bytes(&[0xC0, 0x00]);
    assert_eq!(raw.recv_bytes(2), [0xD0, 0x00]);
}

#[test]
fn qos2_publish_resent_before_pubrel_is_delivered_once() {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let (mut sub, _) = Raw::connect(addr, &client_id_on_shard("once-sub", 1, SHARDS), true);
    sub.subscribe(&[("once/t", QoS::ExactlyOnce)]);
    let (mut publisher, _) = Raw::connect(addr, &client_id_on_shard("once-pub", 0, SHARDS), true);
    let first = publish_packet("once/t", b"once", QoS::ExactlyOnce, Some(7), false, false);
    let resend = publish_packet("once/t", b"once", QoS::ExactlyOnce, Some(7), true, false);
    let id = common::pid(7);
    publisher.send(&first);
    assert_eq!(publisher.recv(), Packet::PubRec(Ack::new(id)));
    // The PUBREC "got lost": the client resends the PUBLISH with DUP set.
    publisher.send(&resend);
    assert_eq!(publisher.recv(), Packet::PubRec(Ack::new(id)));
    publisher.send(&Packet::PubRel(Ack::new(id)));
    assert_eq!(publisher.recv(), Packet::PubComp(Ack::new(id)));
    // A marker behind it: everything delivered before it has arrived by then.
    publisher.publish_retain("once/t", b"end", QoS::AtMostOnce, false);

    // [MQTT-4.3.3-2]: the receiver must not cause duplicate delivery onward.
    let got = sub.receive_until_payload(b"end");
    assert_eq!(got.iter().map(|p| text(&p.payload)).collect::<Vec<_>>(), ["once", "end"]);
}

#[test]
fn packet_over_packet_size_max_closes_only_that_connection() {
    let broker = start(Config { packet_size_max: 1024, ..Config::test() });
    let addr = addr(&broker);
    // Both on the same shard.
    let (mut bad, _) = Raw::connect(addr, &client_id_on_shard("big", 0, SHARDS), true);
    let (mut good, _) = Raw::connect(addr, &client_id_on_shard("small", 0, SHARDS), true);
    good.subscribe(&[("size/t", QoS::AtMostOnce)]);

    // A QoS 0 PUBLISH to "size/t" of exactly 1024 bytes: 1 + 2 length bytes + 1021
    // (2 + 6 topic bytes, 1013 payload bytes) is accepted ...
    let at_limit =
        encode(&publish_packet("size/t", &[b'x'; 1013], QoS::AtMostOnce, None, false, false));
    assert_eq!(at_limit.len(), 1024);
    good.send_bytes(&at_limit);
    let p = good.recv_publish();
    assert_eq!(p.payload.len(), 1013);

    // ... one byte more is not: the connection is closed without an answer.
    let over =
        encode(&publish_packet("size/t", &[b'x'; 1014], QoS::AtMostOnce, None, false, false));
    assert_eq!(over.len(), 1025);
    bad.send_bytes(&over);
    bad.expect_closed();

    // The other client on that shard keeps working.
    assert_eq!(good.sync(), []);
    good.publish("size/t", b"still here", QoS::AtMostOnce);
    assert_eq!(text(&good.recv_publish().payload), "still here");
}

#[test]
fn oversized_fixed_header_is_refused_before_the_body_arrives() {
    let broker = start(Config { packet_size_max: 1024, ..Config::test() });
    let (mut raw, _) = Raw::connect(addr(&broker), "header-only", true);
    // A PUBLISH announcing 100,000 bytes; none of the body is sent.
    raw.send_bytes(&[0x30, 0xA0, 0x8D, 0x06]);
    raw.expect_closed();
}

#[test]
fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let (mut sub, _) = Raw::connect(addr, &client_id_on_shard("ov-sub", 1, SHARDS), true);
    let codes = sub.subscribe(&[
        ("ov/#", QoS::AtLeastOnce),
        ("ov/+/x", QoS::ExactlyOnce),
        ("ov/a/x", QoS::AtMostOnce),
    ]);
    assert_eq!(
        codes,
        [
            ReasonCode::granted(QoS::AtLeastOnce),
            ReasonCode::granted(QoS::ExactlyOnce),
            ReasonCode::granted(QoS::AtMostOnce)
        ]
    );
    let (mut publisher, _) = Raw::connect(addr, &client_id_on_shard("ov-pub", 0, SHARDS), true);
    publisher.publish("ov/a/x", b"three filters, QoS 2", QoS::ExactlyOnce);
    publisher.publish("ov/a/x", b"three filters, QoS 1", QoS::AtLeastOnce);
    publisher.publish("ov/b/y", b"one filter, QoS 2", QoS::ExactlyOnce);
    publisher.publish("ov/end", b"end", QoS::AtMostOnce);

    // [MQTT-3.3.5-1]: one copy per matching client, at the maximum QoS of its
    // matching subscriptions (capped by the published QoS).
    let got: Vec<(String, QoS)> =
        sub.receive_until_payload(b"end").iter().map(|p| (text(&p.payload), p.qos.qos())).collect();
    assert_eq!(
        got,
        [
            ("three filters, QoS 2".to_owned(), QoS::ExactlyOnce),
            ("three filters, QoS 1".to_owned(), QoS::AtLeastOnce),
            ("one filter, QoS 2".to_owned(), QoS::AtLeastOnce),
            ("end".to_owned(), QoS::AtMostOnce),
        ]
    );
}

#[test]
fn resubscribing_replaces_the_subscription_qos() {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let (mut sub, _) = Raw::connect(addr, &client_id_on_shard("re-sub", 1, SHARDS), true);
    sub.subscribe(&[("re/t", QoS::ExactlyOnce)]);
    // [MQTT-3.8.4-3]: an identical filter replaces the existing subscription.
    assert_eq!(sub.subscribe(&[("re/t", QoS::AtMostOnce)]), [ReasonCode::granted(QoS::AtMostOnce)]);
    let (mut publisher, _) = Raw::connect(addr, &client_id_on_shard("re-pub", 0, SHARDS), true);
    publisher.publish("re/t", b"one", QoS::ExactlyOnce);
    publisher.publish("re/t", b"end", QoS::AtMostOnce);
    let got = sub.receive_until_payload(b"end");
    assert_eq!(got.len(), 2, "one copy");
    assert_eq!(got[0].qos.qos(), QoS::AtMostOnce);
}

#[test]
fn first_packet_other_than_connect_closes_the_connection() {
    let broker = start(Config::test());
    let mut raw = Raw::open(addr(&broker));
    // [MQTT-3.1.0-1]: PINGREQ before CONNECT.
    raw.send_bytes(&[0xC0, 0x00]);
    raw.expect_closed();
}

#[test]
fn second_connect_closes_the_connection() {
    let broker = start(Config::test());
    let (mut raw, _) = Raw::connect(addr(&broker), "twice", true);
    // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation.
    raw.send(&Packet::Connect(connect_packet("twice", true)));
    raw.expect_closed();
}

#[test]
fn connack_is_the_first_packet_and_matches_the_encoder() {
    let broker = start(Config::test());
    let (_, ack) = Raw::connect(addr(&broker), "first", true);
    assert_eq!(
        ack,
        ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default().into()
        }
    );
}

#[test]
fn silent_client_is_closed_after_one_and_a_half_keep_alives() {
    let broker = start(Config::test());
    let mut connect = connect_packet("sleepy", true);
    connect.keep_alive_secs = 1;
    let (mut raw, _) = Raw::connect_with(addr(&broker), connect);
    let connected = Instant::now();
    // [MQTT-3.1.2-24]: nothing received within 1.5 x keep-alive: disconnect.
    raw.expect_closed();
    let after = connected.elapsed();
    // The broker's clock ticks every 100 ms.
    assert!(after >= Duration::from_millis(1300), "closed too early: {after:?}");
}

#[test]
fn qos0_publish_is_not_given_dup_or_a_packet_id() {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let (mut sub, _) = Raw::connect(addr, &client_id_on_shard("q0-sub", 0, SHARDS), true);
    sub.subscribe(&[("q0/t", QoS::AtMostOnce)]);
    let (mut publisher, _) = Raw::connect(addr, &client_id_on_shard("q0-pub", 1, SHARDS), true);
    publisher.publish("q0/t", b"zero", QoS::AtLeastOnce);
    // QoS 0 PUBLISH "q0/t" "zero": no packet id [MQTT-2.3.1-5], DUP 0 [MQTT-3.3.1-2].
    assert_eq!(sub.recv_bytes(10), [0x30, 0x0A, 0x00, 0x04, b'q', b'0', b'/', b't', b'z', b'e'],);
    assert_eq!(sub.recv_bytes(2), *b"ro");
}
