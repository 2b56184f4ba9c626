//! Byte fixtures of the MQTT 3.1 / 3.1.1 layouts.

use super::*;

#[test]
fn connect_fixtures() {
    let full = Connect {
        protocol: ProtocolVersion::V311,
        clean_session: true,
        keep_alive_secs: 10,
        client_id: "c1".into(),
        will: Some(LastWill {
            topic: name("w/t"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default().into(),
        }),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p\0\xff")),
        properties: Properties::default().into(),
    };
    let v31 = Connect {
        protocol: ProtocolVersion::V31,
        clean_session: false,
        keep_alive_secs: 0xFFFF,
        client_id: "a".into(),
        ..connect_v311_min()
    };
    let with_username = Connect { username: Some("\u{e9}".into()), ..connect_v311_min() };
    let will_qos2 = Connect {
        will: Some(LastWill {
            topic: name("t"),
            payload: Bytes::new(),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: Properties::default().into(),
        }),
        ..connect_v311_min()
    };
    check! {
        "10 0C | 0004 4D515454 04 | 02 | 003C | 0000" => Decodes(Packet::Connect(connect_v311_min())),
        "10 20 | 0004 4D515454 04 | EE | 000A | 0002 6331 | 0003 772F74 | 0003 627965 \
             | 0001 75 | 0003 7000FF" => Decodes(Packet::Connect(full)),
        "10 0F | 0006 4D5149736470 03 | 00 | FFFF | 0001 61" => Decodes(Packet::Connect(v31)),
        "10 10 | 0004 4D515454 04 | 82 | 003C | 0000 | 0002 C3A9" => Decodes(Packet::Connect(with_username)),
        "10 11 | 0004 4D515454 04 | 16 | 003C | 0000 | 0001 74 | 0000" => Decodes(Packet::Connect(will_qos2)),
        // Fixed header flags of CONNECT are reserved.
        "11 0C | 0004 4D515454 04 | 02 | 003C | 0000" => Violation("MQTT-2.2.2-1"),
        // Protocol name and level [MQTT-3.1.2-1], [MQTT-3.1.2-2].
        "10 0C | 0004 4D515458 04 | 02 | 003C | 0000" => Violation("MQTT-3.1.2-1"),
        "10 0C | 0004 6D717474 04 | 02 | 003C | 0000" => Violation("MQTT-3.1.2-1"),
        "10 0B | 0003 4D5154 04 | 02 | 003C | 0000" => Violation("MQTT-3.1.2-1"),
        "10 00" => Violation("MQTT-3.1.2-1"),
        "10 01 00" => Violation("MQTT-3.1.2-1"),
        "10 04 | 0004 4D51" => Violation("MQTT-3.1.2-1"),
        // Level 5 is MQTT 5, whatever the limits say (see connect_v5_fixtures).
        "10 0D | 0004 4D515454 06 | 02 | 003C | 00 | 0000" => UnsupportedLevel(6),
        "10 0F | 0006 4D5149736470 05 | 02 | 003C | 00 | 0000" => UnsupportedLevel(5),
        "10 0C | 0004 4D515454 03 | 02 | 003C | 0000" => UnsupportedLevel(3),
        "10 0E | 0006 4D5149736470 04 | 02 | 003C | 0000" => UnsupportedLevel(4),
        // Only the name and level are needed to answer CONNACK 0x01.
        "10 07 | 0004 4D515454 FF" => UnsupportedLevel(0xFF),
        // Truncated variable header.
        "10 06 | 0004 4D515454" => Violation("MQTT-3.1.4-1"),
        "10 07 | 0004 4D515454 04" => Violation("MQTT-3.1.4-1"),
        "10 09 | 0004 4D515454 04 | 02 | 00" => Violation("MQTT-3.1.4-1"),
        // Connect flags.
        "10 0C | 0004 4D515454 04 | 03 | 003C | 0000" => Violation("MQTT-3.1.2-3"),
        "10 0C | 0004 4D515454 04 | 0A | 003C | 0000" => Violation("MQTT-3.1.2-13"),
        "10 0C | 0004 4D515454 04 | 12 | 003C | 0000" => Violation("MQTT-3.1.2-13"),
        "10 0C | 0004 4D515454 04 | 22 | 003C | 0000" => Violation("MQTT-3.1.2-15"),
        "10 11 | 0004 4D515454 04 | 1E | 003C | 0000 | 0001 74 | 0000" => Violation("MQTT-3.1.2-14"),
        "10 0F | 0004 4D515454 04 | 42 | 003C | 0000 | 0001 70" => Violation("MQTT-3.1.2-22"),
        // Payload fields present exactly as the flags say.
        "10 0A | 0004 4D515454 04 | 02 | 003C" => Violation("MQTT-3.1.3-3"),
        "10 0B | 0004 4D515454 04 | 02 | 003C | 00" => Violation("MQTT-3.1.3-3"),
        "10 0D | 0004 4D515454 04 | 02 | 003C | 0005 61" => Violation("MQTT-3.1.3-3"),
        "10 0C | 0004 4D515454 04 | 06 | 003C | 0000" => Violation("MQTT-3.1.2-9"),
        "10 0F | 0004 4D515454 04 | 06 | 003C | 0000 | 0001 74" => Violation("MQTT-3.1.2-9"),
        "10 11 | 0004 4D515454 04 | 06 | 003C | 0000 | 0001 74 | 0005" => Violation("MQTT-3.1.2-9"),
        "10 0C | 0004 4D515454 04 | 82 | 003C | 0000" => Violation("MQTT-3.1.2-19"),
        "10 0F | 0004 4D515454 04 | C2 | 003C | 0000 | 0001 75" => Violation("MQTT-3.1.2-21"),
        "10 12 | 0004 4D515454 04 | C2 | 003C | 0000 | 0001 75 | 0002 70" => Violation("MQTT-3.1.2-21"),
        // A user name with the flag clear, and plain garbage, are left over.
        "10 0F | 0004 4D515454 04 | 02 | 003C | 0000 | 0001 75" => Violation("MQTT-3.1.4-1"),
        "10 0D | 0004 4D515454 04 | 02 | 003C | 0000 | 00" => Violation("MQTT-3.1.4-1"),
        // Strings: UTF-8 without U+0000 [MQTT-1.5.3-1], [MQTT-1.5.3-2].
        "10 0E | 0004 4D515454 04 | 02 | 003C | 0002 C328" => Violation("MQTT-1.5.3-1"),
        // An encoded surrogate (U+D800) and an overlong '/' are ill-formed.
        "10 0F | 0004 4D515454 04 | 02 | 003C | 0003 EDA080" => Violation("MQTT-1.5.3-1"),
        "10 0E | 0004 4D515454 04 | 02 | 003C | 0002 C0AF" => Violation("MQTT-1.5.3-1"),
        "10 0D | 0004 4D515454 04 | 02 | 003C | 0001 00" => Violation("MQTT-1.5.3-2"),
        "10 0F | 0004 4D515454 04 | 82 | 003C | 0000 | 0001 00" => Violation("MQTT-1.5.3-2"),
        "10 10 | 0004 4D515454 04 | 82 | 003C | 0000 | 0002 FFFE" => Violation("MQTT-1.5.3-1"),
        // The will topic is a topic name.
        "10 11 | 0004 4D515454 04 | 06 | 003C | 0000 | 0001 23 | 0000" => Violation("MQTT-4.7.1-1"),
        "10 10 | 0004 4D515454 04 | 06 | 003C | 0000 | 0000 | 0000" => Violation("MQTT-4.7.3-1"),
        "10 11 | 0004 4D515454 04 | 06 | 003C | 0000 | 0001 FF | 0000" => Violation("MQTT-1.5.3-1"),
    }
}

#[test]
fn mqtt31_rules_where_they_differ() {
    let v31 = Limits { protocol: ProtocolVersion::V31, ..Limits::default() };
    // 3.1 section 2.1: a retried PUBREL, SUBSCRIBE or UNSUBSCRIBE may set DUP,
    // which 3.1.1 forbids [MQTT-3.6.1-1].
    let rel = Packet::PubRel(Ack::new(pid(7)));
    check_decode_with("6A 02 00 07", NonCanonical(rel.clone()), &v31);
    check_decode_with("62 02 00 07", Decodes(rel), &v31);
    check_decode("6A 02 00 07", Violation("MQTT-3.6.1-1"));
    let unsubscribe = Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(2),
        filters: vec![filter("a")],
        properties: Properties::default().into(),
    });
    check_decode_with("AA 05 0002 0001 61", NonCanonical(unsubscribe), &v31);
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        filters: vec![SubscribeFilter::new(filter("a"), QoS::AtLeastOnce)],
        properties: Properties::default().into(),
    });
    check_decode_with("8A 06 0001 0001 61 01", NonCanonical(subscribe), &v31);
    check_decode_with("63 02 00 07", Violation("MQTT-3.6.1-1"), &v31);
    // 3.1 reserves CONNACK's byte 1; Session Present is 3.1.1's [MQTT-3.2.2-2].
    let resumed = Packet::ConnAck(ConnAck {
        session_present: true,
        reason: ReasonCode::SUCCESS,
        properties: Properties::default().into(),
    });
    assert_eq!(encoded_in(&resumed, ProtocolVersion::V31), hex("20 02 00 00"));
    assert_eq!(encoded_in(&resumed, V3), hex("20 02 01 00"));
}

#[test]
fn connack_fixtures() {
    let ack = |session_present, reason| {
        Decodes(Packet::ConnAck(ConnAck {
            session_present,
            reason,
            properties: Properties::default().into(),
        }))
    };
    // 3.1.1's return codes decode to MQTT 5's reason codes.
    check! {
        "20 02 00 00" => ack(false, ReasonCode::SUCCESS),
        "20 02 01 00" => ack(true, ReasonCode::SUCCESS),
        "20 02 00 01" => ack(false, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        "20 02 00 02" => ack(false, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        "20 02 00 03" => ack(false, ReasonCode::SERVER_UNAVAILABLE),
        "20 02 00 04" => ack(false, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        "20 02 00 05" => ack(false, ReasonCode::NOT_AUTHORIZED),
        "21 02 00 00" => Violation("MQTT-2.2.2-1"),
        "20 02 02 00" => Violation("MQTT-3.2.2.1"),
        "20 02 80 00" => Violation("MQTT-3.2.2.1"),
        "20 02 00 06" => Violation("MQTT-3.2.2.3"),
        "20 02 00 FF" => Violation("MQTT-3.2.2.3"),
        "20 02 01 05" => Violation("MQTT-3.2.2-4"),
        "20 03 00 00 00" => Violation("MQTT-3.2.1"),
        "20 01 00" => Violation("MQTT-3.2.1"),
        // The wrong length is refused before the body arrives.
        "20 00" => Violation("MQTT-3.2.1"),
        "20 7F" => Violation("MQTT-3.2.1"),
    }
}

#[test]
fn publish_fixtures() {
    let publish = |dup, qos, retain, topic: &str, id: Option<u16>, payload: &'static [u8]| {
        Packet::Publish(Publish {
            dup,
            qos: qos_with(qos, id),
            retain,
            topic: PublishTopic::Name(name(topic)),
            payload: Bytes::from_static(payload),
            properties: None,
        })
    };
    let big_payload = "AB".repeat(400);
    let big = format!("30 93 03 | 0001 74 | {big_payload}");
    check! {
        "30 0A | 0003 612F62 | 68656C6C6F" => Decodes(publish(false, QoS::AtMostOnce, false, "a/b", None, b"hello")),
        "31 03 | 0001 74" => Decodes(publish(false, QoS::AtMostOnce, true, "t", None, b"")),
        "3B 07 | 0001 74 | 002A | 6869" => Decodes(publish(true, QoS::AtLeastOnce, true, "t", Some(42), b"hi")),
        "34 05 | 0001 74 | FFFF" => Decodes(publish(false, QoS::ExactlyOnce, false, "t", Some(0xFFFF), b"")),
        "3C 06 | 0002 C3A9 | 0001" => Decodes(publish(true, QoS::ExactlyOnce, false, "\u{e9}", Some(1), b"")),
        // The payload is binary and may look like anything.
        "30 06 | 0001 2F | 00FF23" => Decodes(publish(false, QoS::AtMostOnce, false, "/", None, b"\0\xff#")),
        // Two length bytes: 0x93 0x03 = 19 + 3 * 128 = 403.
        big.as_str() => Decodes(publish(false, QoS::AtMostOnce, false, "t", None, &[0xAB; 400])),
        "36 03 | 0001 74" => Violation("MQTT-3.3.1-4"),
        "37 05 | 0001 74 | 0001" => Violation("MQTT-3.3.1-4"),
        "3E 05 | 0001 74 | 0001" => Violation("MQTT-3.3.1-4"),
        "38 03 | 0001 74" => Violation("MQTT-3.3.1-2"),
        "39 03 | 0001 74" => Violation("MQTT-3.3.1-2"),
        // Flags are refused as soon as the first byte arrives.
        "36" => Violation("MQTT-3.3.1-4"),
        "38" => Violation("MQTT-3.3.1-2"),
        "30 03 | 0001 23" => Violation("MQTT-4.7.1-1"),
        "30 05 | 0003 612F2B" => Violation("MQTT-4.7.1-1"),
        "30 02 | 0000" => Violation("MQTT-4.7.3-1"),
        "30 03 | 0001 00" => Violation("MQTT-4.7.3-2"),
        "30 03 | 0001 FF" => Violation("MQTT-1.5.3-1"),
        "30 05 | 0003 EDBFBF" => Violation("MQTT-1.5.3-1"),
        "30 00" => Violation("MQTT-3.3.2-1"),
        "30 01 | 00" => Violation("MQTT-3.3.2-1"),
        "30 03 | 0005 74" => Violation("MQTT-3.3.2-1"),
        "32 05 | 0001 74 | 0000" => Violation("MQTT-2.3.1-1"),
        "32 03 | 0001 74" => Violation("MQTT-2.3.1-1"),
        "34 04 | 0001 74 | 01" => Violation("MQTT-2.3.1-1"),
        // A bad topic is reported before a missing packet id, as read in order.
        "32 03 | 0001 23" => Violation("MQTT-4.7.1-1"),
        "32 04 | 0001 FF | 00" => Violation("MQTT-1.5.3-1"),
        "34 02 | 0000" => Violation("MQTT-4.7.3-1"),
    }
}

#[test]
fn ack_fixtures() {
    let ack = |id| Ack::new(pid(id));
    let unsuback = |id| UnsubAck {
        packet_id: pid(id),
        codes: Vec::new(),
        properties: Properties::default().into(),
    };
    check! {
        "40 02 0001" => Decodes(Packet::PubAck(ack(1))),
        "50 02 0102" => Decodes(Packet::PubRec(ack(0x0102))),
        "62 02 FFFF" => Decodes(Packet::PubRel(ack(0xFFFF))),
        "70 02 0004" => Decodes(Packet::PubComp(ack(4))),
        "B0 02 0005" => Decodes(Packet::UnsubAck(unsuback(5))),
        "41 02 0001" => Violation("MQTT-2.2.2-1"),
        "58 02 0001" => Violation("MQTT-2.2.2-1"),
        "60 02 0001" => Violation("MQTT-3.6.1-1"),
        "63 02 0001" => Violation("MQTT-3.6.1-1"),
        "6A 02 0001" => Violation("MQTT-3.6.1-1"),
        "72 02 0001" => Violation("MQTT-2.2.2-1"),
        "B2 02 0001" => Violation("MQTT-2.2.2-1"),
        "40 02 0000" => Violation("MQTT-2.3.1-1"),
        "50 02 0000" => Violation("MQTT-2.3.1-1"),
        "62 02 0000" => Violation("MQTT-2.3.1-1"),
        "70 02 0000" => Violation("MQTT-2.3.1-1"),
        "B0 02 0000" => Violation("MQTT-2.3.1-1"),
        "40 03 0001 00" => Violation("MQTT-3.4.1"),
        "40 01 00" => Violation("MQTT-3.4.1"),
        "50 00" => Violation("MQTT-3.5.1"),
        "62 03" => Violation("MQTT-3.6.1"),
        "70 04" => Violation("MQTT-3.7.1"),
        "B0 01" => Violation("MQTT-3.11.1"),
    }
}

#[test]
fn subscribe_fixtures() {
    let sub = |id, filters: &[(&str, QoS)]| {
        Packet::Subscribe(Subscribe {
            packet_id: pid(id),
            filters: filters.iter().map(|&(f, qos)| SubscribeFilter::new(filter(f), qos)).collect(),
            properties: Properties::default().into(),
        })
    };
    check! {
        "82 0E | 000A | 0003 612F62 01 | 0003 632F23 02" => Decodes(sub(10, &[("a/b", QoS::AtLeastOnce), ("c/#", QoS::ExactlyOnce)])),
        "82 06 | 0001 | 0001 2B 00" => Decodes(sub(1, &[("+", QoS::AtMostOnce)])),
        // The same filter twice is the client's business [MQTT-3.8.4-3].
        "82 0A | 0001 | 0001 23 00 | 0001 23 01" => Decodes(sub(1, &[("#", QoS::AtMostOnce), ("#", QoS::AtLeastOnce)])),
        "80 06 | 0001 | 0001 61 00" => Violation("MQTT-3.8.1-1"),
        "83 06 | 0001 | 0001 61 00" => Violation("MQTT-3.8.1-1"),
        "8A 06 | 0001 | 0001 61 00" => Violation("MQTT-3.8.1-1"),
        "82 02 | 000A" => Violation("MQTT-3.8.3-3"),
        "82 06 | 0000 | 0001 61 00" => Violation("MQTT-2.3.1-1"),
        "82 00" => Violation("MQTT-2.3.1-1"),
        "82 01 | 00" => Violation("MQTT-2.3.1-1"),
        "82 06 | 0001 | 0001 61 03" => Violation("MQTT-3-8.3-4"),
        "82 06 | 0001 | 0001 61 04" => Violation("MQTT-3-8.3-4"),
        "82 06 | 0001 | 0001 61 81" => Violation("MQTT-3-8.3-4"),
        "82 06 | 0001 | 0001 61 FC" => Violation("MQTT-3-8.3-4"),
        // A filter without its QoS byte, a filter overrunning the packet.
        "82 05 | 0001 | 0001 61" => Violation("MQTT-3.8.3"),
        "82 05 | 0001 | 0009 61" => Violation("MQTT-3.8.3"),
        "82 09 | 0001 | 0001 61 00 | 0001 62" => Violation("MQTT-3.8.3"),
        "82 03 | 0001 | 00" => Violation("MQTT-3.8.3"),
        "82 05 | 0001 | 0000 00" => Violation("MQTT-4.7.3-1"),
        "82 07 | 0001 | 0002 6123 00" => Violation("MQTT-4.7.1-2"),
        "82 08 | 0001 | 0003 232F61 00" => Violation("MQTT-4.7.1-2"),
        "82 07 | 0001 | 0002 612B 00" => Violation("MQTT-4.7.1-3"),
        "82 06 | 0001 | 0001 00 00" => Violation("MQTT-4.7.3-2"),
        "82 06 | 0001 | 0001 80 00" => Violation("MQTT-1.5.3-1"),
    }
}

#[test]
fn suback_fixtures() {
    let suback = |id, codes: &[u8]| {
        Decodes(Packet::SubAck(SubAck {
            packet_id: pid(id),
            codes: codes.iter().map(|&c| ReasonCode(c)).collect(),
            properties: Properties::default().into(),
        }))
    };
    check! {
        "90 06 | 000A | 00 01 02 80" => suback(10, &[0, 1, 2, 0x80]),
        "90 03 | 0001 | 80" => suback(1, &[0x80]),
        "91 03 | 0001 | 00" => Violation("MQTT-2.2.2-1"),
        "92 03 | 0001 | 00" => Violation("MQTT-2.2.2-1"),
        "90 03 | 0000 | 00" => Violation("MQTT-2.3.1-1"),
        "90 02 | 0001" => Violation("MQTT-3.9.3"),
        "90 03 | 0001 | 03" => Violation("MQTT-3.9.3-2"),
        "90 03 | 0001 | 81" => Violation("MQTT-3.9.3-2"),
        "90 04 | 0001 | 00 FF" => Violation("MQTT-3.9.3-2"),
    }
}

#[test]
fn unsubscribe_fixtures() {
    let unsub = |id, filters: &[&str]| {
        Decodes(Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(id),
            filters: filters.iter().map(|f| filter(f)).collect(),
            properties: Properties::default().into(),
        }))
    };
    check! {
        "A2 09 | 000B | 0001 61 | 0002 2B2F" => unsub(11, &["a", "+/"]),
        "A2 05 | 0001 | 0001 23" => unsub(1, &["#"]),
        "A0 05 | 0001 | 0001 23" => Violation("MQTT-3.10.1-1"),
        "A3 05 | 0001 | 0001 23" => Violation("MQTT-3.10.1-1"),
        "A2 02 | 000B" => Violation("MQTT-3.10.3-2"),
        "A2 05 | 0000 | 0001 23" => Violation("MQTT-2.3.1-1"),
        "A2 05 | 000B | 0003 61" => Violation("MQTT-3.10.3"),
        "A2 03 | 000B | 00" => Violation("MQTT-3.10.3"),
        "A2 06 | 000B | 0002 612B" => Violation("MQTT-4.7.1-3"),
        "A2 06 | 000B | 0002 2361" => Violation("MQTT-4.7.1-2"),
        "A2 04 | 000B | 0000" => Violation("MQTT-4.7.3-1"),
        "A2 05 | 000B | 0001 00" => Violation("MQTT-4.7.3-2"),
        "A2 06 | 000B | 0002 C328" => Violation("MQTT-1.5.3-1"),
    }
}

#[test]
fn empty_packet_fixtures() {
    check! {
        "C0 00" => Decodes(Packet::PingReq),
        "D0 00" => Decodes(Packet::PingResp),
        "E0 00" => Decodes(Packet::Disconnect(Disconnect::default())),
        "C1 00" => Violation("MQTT-2.2.2-1"),
        "D8 00" => Violation("MQTT-2.2.2-1"),
        "E1 00" => Violation("MQTT-3.14.1-1"),
        "E2 00" => Violation("MQTT-3.14.1-1"),
        "C0 01 00" => Violation("MQTT-3.12.1"),
        "D0 02 0000" => Violation("MQTT-3.13.1"),
        "E0 01 00" => Violation("MQTT-3.14.1"),
        // Refused from the header alone, without waiting for the 1 MB body.
        "C0 80 80 40" => Violation("MQTT-3.12.1"),
    }
}

#[test]
fn fixed_header_fixtures() {
    check! {
        // Reserved packet types [MQTT-2.2.1].
        "00 00" => Violation("MQTT-2.2.1"),
        "00" => Violation("MQTT-2.2.1"),
        "F0 00" => Violation("MQTT-2.2.1"),
        "FF" => Violation("MQTT-2.2.1"),
        // Remaining length: at most 4 bytes, refused as soon as the 4th byte
        // announces a 5th [MQTT-2.2.3].
        "30 FF FF FF FF" => Violation("MQTT-2.2.3"),
        "30 80 80 80 80" => Violation("MQTT-2.2.3"),
        "30 80 80 80 80 01" => Violation("MQTT-2.2.3"),
        "C0 80 80 80 80" => Violation("MQTT-2.2.3"),
        // Incomplete headers and bodies consume nothing.
        "" => Incomplete,
        "30" => Incomplete,
        "30 80" => Incomplete,
        "30 FF FF FF" => Incomplete,
        "30 0A" => Incomplete,
        "30 0A 0003 61" => Incomplete,
        "82 0E | 000A | 0003 612F62" => Incomplete,
        // A remaining length in more bytes than needed is accepted (3.1.1 does
        // not forbid it; MQTT 5 does).
        "C0 80 00" => NonCanonical(Packet::PingReq),
        "C0 80 80 80 00" => NonCanonical(Packet::PingReq),
        "40 82 00 | 0007" => NonCanonical(Packet::PubAck(Ack::new(pid(7)))),
        // 256 MB announced, 5 bytes buffered: refused at once.
        "30 FF FF FF 7F" => TooLarge,
        "30 FF FF FF 7F 00 01" => TooLarge,
    }
}

#[test]
fn announcing_256_mb_is_refused_at_once() {
    let mut buf = BytesMut::from(&hex("30 FF FF FF 7F")[..]);
    assert_eq!(
        decode(&mut buf, &Limits::default()),
        Err(DecodeError::PacketTooLarge { size: PACKET_SIZE_MAX, max: 1 << 20 })
    );
}

#[test]
fn packet_size_limit_counts_the_fixed_header() {
    // "30 0A ..." is a 12-byte packet.
    let input = "30 0A | 0003 612F62 | 68656C6C6F";
    let limits = |packet_size_max| Limits { packet_size_max, ..Limits::default() };
    let ok = Packet::Publish(Publish {
        dup: false,
        qos: PublishQoS::AtMostOnce,
        retain: false,
        topic: PublishTopic::Name(name("a/b")),
        payload: Bytes::from_static(b"hello"),
        properties: None,
    });
    check_decode_with(input, Decodes(ok), &limits(12));
    let mut buf = BytesMut::from(&hex("30 0A")[..]);
    assert_eq!(
        decode(&mut buf, &limits(11)),
        Err(DecodeError::PacketTooLarge { size: 12, max: 11 })
    );
    // With no limit at all, the protocol's own maximum is merely incomplete.
    check_decode_with("30 FF FF FF 7F", Incomplete, &limits(usize::MAX));
}

#[test]
fn decodes_back_to_back_packets_and_consumes_exactly_one() {
    let mut buf = BytesMut::from(&hex("C0 00 | 40 02 0001 | E0 00 | 30")[..]);
    let limits = Limits::default();
    assert_eq!(decode(&mut buf, &limits), Ok(Some(Packet::PingReq)));
    assert_eq!(buf.len(), 7);
    assert_eq!(decode(&mut buf, &limits), Ok(Some(Packet::PubAck(Ack::new(pid(1))))));
    assert_eq!(decode(&mut buf, &limits), Ok(Some(Packet::Disconnect(Disconnect::default()))));
    assert_eq!(decode(&mut buf, &limits), Ok(None));
    assert_eq!(&buf[..], &[0x30]);
}

#[test]
fn decoded_fields_share_the_read_buffer() {
    let mut buf = BytesMut::from(&hex("30 0A | 0003 612F62 | 68656C6C6F")[..]);
    let start = buf.as_ptr() as usize;
    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, &Limits::default()) else {
        panic!("expected a PUBLISH");
    };
    assert_eq!(p.topic.name().expect("named").as_str().as_ptr() as usize, start + 4);
    assert_eq!(p.payload.as_ptr() as usize, start + 7);
}

#[test]
fn remaining_length_boundaries() {
    // Payload sizes around each change in the number of length bytes.
    for (remaining, len_bytes) in
        [(127, 1), (128, 2), (16_383, 2), (16_384, 3), (2_097_151, 3), (2_097_152, 4)]
    {
        for protocol in [V3, V5] {
            // Topic "t" takes 3 bytes of the remaining length, MQTT 5's empty
            // property block 1.
            let overhead = 3 + usize::from(protocol == V5);
            let packet = Packet::Publish(Publish {
                dup: false,
                qos: PublishQoS::AtMostOnce,
                retain: false,
                topic: PublishTopic::Name(name("t")),
                payload: Bytes::from(vec![0x5A; remaining - overhead]),
                properties: None,
            });
            let limits = Limits { packet_size_max: PACKET_SIZE_MAX, protocol };
            let bytes = encoded_in(&packet, protocol);
            assert_eq!(bytes.len(), 1 + len_bytes + remaining);
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(decode(&mut buf, &limits), Ok(Some(packet)));
        }
    }
    let mut max = BytesMut::new();
    put_fixed_header(&mut max, PUBLISH << 4, REMAINING_LEN_MAX);
    assert_eq!(&max[..], &hex("30 FF FF FF 7F")[..]);
}

#[test]
#[should_panic(expected = "packet id")]
fn encoding_qos1_without_packet_id_panics() {
    let view = PublishView { packet_id: None, ..view("t", b"", QoS::AtLeastOnce) };
    view.measure(V3).encode(&mut BytesMut::new());
}

#[test]
#[should_panic(expected = "65535")]
fn encoding_an_overlong_string_panics() {
    let connect = Connect { client_id: "x".repeat(65_536).into(), ..connect_v311_min() };
    encode(&Packet::Connect(connect), V3, &mut BytesMut::new());
}

#[test]
fn qos0_publish_drops_its_packet_id() {
    let mut with_id = BytesMut::new();
    let view = PublishView { packet_id: Some(pid(9)), ..view("t", b"x", QoS::AtMostOnce) };
    view.measure(V3).encode(&mut with_id);
    assert_eq!(&with_id[..], &hex("30 04 | 0001 74 | 78")[..]);
}
