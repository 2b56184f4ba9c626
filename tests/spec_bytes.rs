//! Hand-written bytes from the examples of the MQTT 3.1.1 and 5.0 specifications,
//! which the codec must encode and decode exactly, and which the broker must read
//! and answer exactly on the wire.
//!
//! The raw client of the other integration tests speaks through the broker's own
//! codec, so a mistake made the same way in the encoder and the decoder passes them
//! all; these bytes are written independently of the codec, field by field, from:
//! - 3.1.1 Figure 1.3 (UTF-8 string "A𪛔"), Table 2.4 (remaining length 128 = 80 01),
//!   Figures 3.6/3.7 (CONNECT flags 0xCE, keep-alive 10), 3.11 (PUBLISH "a/b", id 10),
//!   3.21/3.22 (SUBSCRIBE id 10, "a/b" QoS 1, "c/d" QoS 2), 3.26 (SUBACK codes 0, 2,
//!   0x80), 3.30 (UNSUBSCRIBE "a/b", "c/d");
//! - 5.0 Figure 3-7 (CONNECT with Session Expiry Interval 10), 3-9 (PUBLISH "a/b",
//!   id 10, no properties), 3-21/3-22 (SUBSCRIBE with options 1 and 2).

mod common;

use bytes::{Bytes, BytesMut};
use common::{addr, start, Raw};
use shardmq::protocol::{
    codec, Ack, ConnAck, Connect, LastWill, Limits, Packet, PacketId, Properties, ProtocolVersion,
    Publish, PublishQoS, PublishTopic, QoS, ReasonCode, SubAck, Subscribe, SubscribeFilter,
    TopicFilter, TopicName, Unsubscribe,
};
use shardmq::Config;

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Parses hex, ignoring whitespace and `|` (field boundaries).
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b'|').collect();
    digits
        .chunks(2)
        .map(|pair| {
            u8::from_str_radix(std::str::from_utf8(pair).expect("ASCII"), 16).expect("hex digit")
        })
        .collect()
}

fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("fixture ids are non-zero")
}

/// 3.1.1 CONNECT, flags 0xCE (user name, password, will QoS 1, will, clean session),
/// keep-alive 10; client id "c", will "w" / "x", user "u", password "p".
const CONNECT_V3: &str = "10 19 | 0004 4D515454 | 04 | CE | 000A \
                          | 0001 63 | 0001 77 | 0001 78 | 0001 75 | 0001 70";
/// The same in MQTT 5, with Session Expiry Interval 10 and an empty will property
/// block.
const CONNECT_V5: &str = "10 20 | 0004 4D515454 | 05 | CE | 000A | 05 11 0000000A \
                          | 0001 63 | 00 | 0001 77 | 0001 78 | 0001 75 | 0001 70";
/// A minimal 3.1.1 CONNECT: client id "p", clean session, keep-alive 60.
const CONNECT_P_V3: &str = "10 0D | 0004 4D515454 | 04 | 02 | 003C | 0001 70";
/// A minimal MQTT 5 CONNECT: client id "p", clean start, keep-alive 60, no properties.
const CONNECT_P_V5: &str = "10 0E | 0004 4D515454 | 05 | 02 | 003C | 00 | 0001 70";

fn connect(protocol: ProtocolVersion) -> Packet {
    let mut properties = Properties::default();
    if protocol == V5 {
        properties.session_expiry_interval = Some(10);
    }
    Packet::Connect(Connect {
        protocol,
        clean_session: true,
        keep_alive_secs: 10,
        client_id: "c".into(),
        will: Some(LastWill {
            topic: TopicName::try_from("w").expect("valid topic"),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default().into(),
        }),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        properties: properties.into(),
    })
}

fn publish(topic: &str, qos: PublishQoS, payload: &[u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: PublishTopic::Name(TopicName::try_from(topic).expect("valid topic")),
        payload: Bytes::copy_from_slice(payload),
        properties: None,
    })
}

fn subscribe() -> Packet {
    let filter =
        |f: &str, qos| SubscribeFilter::new(TopicFilter::try_from(f).expect("valid filter"), qos);
    Packet::Subscribe(Subscribe {
        packet_id: pid(10),
        filters: vec![filter("a/b", QoS::AtLeastOnce), filter("c/d", QoS::ExactlyOnce)],
        properties: Properties::default().into(),
    })
}

/// The spec's examples as whole packets: (protocol, bytes, packet).
fn fixtures() -> Vec<(ProtocolVersion, String, Packet)> {
    let payload_125 = "2E".repeat(125);
    vec![
        (V3, CONNECT_V3.into(), connect(V3)),
        (V5, CONNECT_V5.into(), connect(V5)),
        (
            V3,
            "20 02 | 00 | 00".into(),
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode::SUCCESS,
                properties: Properties::default().into(),
            }),
        ),
        (
            V3,
            "32 09 | 0003 612F62 | 000A | 6869".into(),
            publish("a/b", PublishQoS::AtLeastOnce(pid(10)), b"hi"),
        ),
        (
            V5,
            "32 0A | 0003 612F62 | 000A | 00 | 6869".into(),
            publish("a/b", PublishQoS::AtLeastOnce(pid(10)), b"hi"),
        ),
        (
            V3,
            "30 09 | 0005 41F0AA9B94 | 6869".into(),
            publish("A\u{2A6D4}", PublishQoS::AtMostOnce, b"hi"),
        ),
        (
            V3,
            format!("30 8001 | 0001 74 | {payload_125}"),
            publish("t", PublishQoS::AtMostOnce, &[b'.'; 125]),
        ),
        (V3, "40 02 | 000A".into(), Packet::PubAck(Ack::new(pid(10)))),
        (V3, "82 0E | 000A | 0003 612F62 01 | 0003 632F64 02".into(), subscribe()),
        (V5, "82 0F | 000A | 00 | 0003 612F62 01 | 0003 632F64 02".into(), subscribe()),
        (
            V3,
            "90 05 | 000A | 00 02 80".into(),
            Packet::SubAck(SubAck {
                packet_id: pid(10),
                codes: vec![ReasonCode(0), ReasonCode(2), ReasonCode(0x80)],
                properties: Properties::default().into(),
            }),
        ),
        (
            V3,
            "A2 0C | 000A | 0003 612F62 | 0003 632F64".into(),
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(10),
                filters: vec![
                    TopicFilter::try_from("a/b").expect("valid filter"),
                    TopicFilter::try_from("c/d").expect("valid filter"),
                ],
                properties: Properties::default().into(),
            }),
        ),
        (V3, "C0 00".into(), Packet::PingReq),
        (V3, "D0 00".into(), Packet::PingResp),
    ]
}

#[test]
fn the_codec_writes_and_reads_the_spec_examples() {
    for (protocol, bytes, packet) in fixtures() {
        let bytes = hex(&bytes);
        let mut out = BytesMut::new();
        codec::encode(&packet, protocol, &mut out);
        assert_eq!(&out[..], &bytes[..], "encoding {packet:?}");
        let limits = Limits { protocol, ..Limits::default() };
        let mut input = BytesMut::from(&bytes[..]);
        assert_eq!(codec::decode(&mut input, &limits).unwrap(), Some(packet));
        assert!(input.is_empty());
    }
}

/// The broker reads the example bytes and answers with exactly the bytes the
/// specification lays out: CONNACK, SUBACK, PUBACK, the forwarded PUBLISH,
/// UNSUBACK and PINGRESP, in MQTT 3.1.1.
#[test]
fn the_broker_answers_the_spec_examples_byte_for_byte_v3() {
    let broker = start(Config::test());
    let mut sub = Raw::open(addr(&broker));
    sub.send_bytes(&hex(CONNECT_V3));
    assert_eq!(sub.recv_bytes(4), hex("20 02 00 00"));
    sub.send_bytes(&hex("82 0E | 000A | 0003 612F62 01 | 0003 632F64 02"));
    assert_eq!(sub.recv_bytes(6), hex("90 04 | 000A | 01 02"));
    let mut publisher = Raw::open(addr(&broker));
    publisher.send_bytes(&hex(CONNECT_P_V3));
    assert_eq!(publisher.recv_bytes(4), hex("20 02 00 00"));
    publisher.send_bytes(&hex("32 09 | 0003 612F62 | 000A | 6869"));
    assert_eq!(publisher.recv_bytes(4), hex("40 02 | 000A"));
    // The subscriber's first packet id is 1.
    assert_eq!(sub.recv_bytes(11), hex("32 09 | 0003 612F62 | 0001 | 6869"));
    sub.send_bytes(&hex("40 02 | 0001"));
    sub.send_bytes(&hex("A2 0C | 000A | 0003 612F62 | 0003 632F64"));
    assert_eq!(sub.recv_bytes(4), hex("B0 02 | 000A"));
    sub.send_bytes(&hex("C0 00"));
    assert_eq!(sub.recv_bytes(2), hex("D0 00"));
    sub.send_bytes(&hex("E0 00"));
    sub.expect_closed();
}

/// The same in MQTT 5: SUBACK and the forwarded PUBLISH carry an empty property
/// block. (The CONNACK's properties depend on the configuration; it is decoded.)
#[test]
fn the_broker_answers_the_spec_examples_byte_for_byte_v5() {
    let broker = start(Config::test());
    let (mut sub, mut publisher) = (Raw::open(addr(&broker)), Raw::open(addr(&broker)));
    for (raw, connect) in [(&mut sub, CONNECT_V5), (&mut publisher, CONNECT_P_V5)] {
        raw.send_bytes(&hex(connect));
        raw.set_protocol(V5);
        match raw.recv() {
            Packet::ConnAck(ack) => assert_eq!(ack.reason, ReasonCode::SUCCESS),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
    sub.send_bytes(&hex("82 0F | 000A | 00 | 0003 612F62 01 | 0003 632F64 02"));
    assert_eq!(sub.recv_bytes(7), hex("90 05 | 000A | 00 | 01 02"));
    publisher.send_bytes(&hex("32 0A | 0003 612F62 | 000A | 00 | 6869"));
    assert_eq!(publisher.recv_bytes(4), hex("40 02 | 000A"));
    assert_eq!(sub.recv_bytes(12), hex("32 0A | 0003 612F62 | 0001 | 00 | 6869"));
}
