//! Byte fixtures of the MQTT 5 layouts.

use super::*;

/// `first` and `body` (hex) framed with the remaining length `body` takes, so that
/// the long fixtures below need no hand-counted lengths.
fn framed(first: &str, body: &str) -> String {
    let mut len = BytesMut::new();
    put_vbi(&mut len, hex(body).len());
    let len: String = len.iter().map(|b| format!("{b:02X}")).collect();
    format!("{first} {len} | {body}")
}

const MALFORMED: ReasonCode = ReasonCode::MALFORMED_PACKET;
const PROTOCOL: ReasonCode = ReasonCode::PROTOCOL_ERROR;

fn connect_v5_min() -> Connect {
    Connect { protocol: V5, ..connect_v311_min() }
}

fn user(name: &str, value: &str) -> (ByteString, ByteString) {
    (name.into(), value.into())
}

/// The CONNECT head `0004 4D515454 05 | flags | 003C`, then `rest`.
fn connect5(flags: &str, rest: &str) -> String {
    framed("10", &format!("0004 4D515454 05 | {flags} | 003C | {rest}"))
}

#[test]
fn connect_v5_fixtures() {
    let full = Connect {
        protocol: V5,
        clean_session: true,
        keep_alive_secs: 60,
        client_id: "c1".into(),
        will: Some(LastWill {
            topic: name("w/t"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                content_type: Some("json".into()),
                response_topic: Some(name("r/t")),
                correlation_data: Some(Bytes::from_static(b"\xCA\xFE")),
                will_delay_interval: Some(10),
                user_properties: vec![user("k", "v")],
                ..Properties::default()
            }
            .into(),
        }),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        properties: Properties {
            session_expiry_interval: Some(3600),
            authentication_method: Some("SCRAM".into()),
            authentication_data: Some(Bytes::from_static(b"\x01\x02\x03")),
            request_problem_information: Some(0),
            request_response_information: Some(1),
            receive_maximum: Some(10),
            topic_alias_maximum: Some(5),
            user_properties: vec![user("k", "v")],
            maximum_packet_size: Some(4096),
            ..Properties::default()
        }
        .into(),
    };
    let full_hex = connect5(
        "EE",
        "29 | 11 00000E10 | 15 0005 534352414D | 16 0003 010203 | 17 00 | 19 01 | 21 000A \
         | 22 0005 | 26 0001 6B 0001 76 | 27 00001000 \
         | 0002 6331 \
         | 25 | 01 01 | 02 0000003C | 03 0004 6A736F6E | 08 0003 722F74 | 09 0002 CAFE \
         | 18 0000000A | 26 0001 6B 0001 76 \
         | 0003 772F74 | 0003 627965 | 0001 75 | 0001 70",
    );
    // MQTT 5 allows a password without a user name (section 3.1.2.9).
    let password_only = Connect { password: Some(Bytes::from_static(b"p")), ..connect_v5_min() };
    let min = "10 0D | 0004 4D515454 05 | 02 | 003C | 00 | 0000";
    // CONNECT is decoded by its own level, whatever the limits say.
    check! {
        min => Decodes(Packet::Connect(connect_v5_min())),
        full_hex => Decodes(Packet::Connect(full.clone())),
    }
    check5! {
        min => Decodes(Packet::Connect(connect_v5_min())),
        full_hex => Decodes(Packet::Connect(full)),
        connect5("42", "00 | 0000 | 0001 70") => Decodes(Packet::Connect(password_only)),
        // An MQTT 3.1.1 CONNECT on an MQTT 5 connection keeps its own layout.
        "10 0C | 0004 4D515454 04 | 02 | 003C | 0000" => Decodes(Packet::Connect(connect_v311_min())),
        // Property rules: one of each, values in range [MQTT-3.1.2.11].
        connect5("02", "0A | 11 00000000 | 11 00000001 | 0000") => Fails("MQTT-3.1.2.11.2", PROTOCOL),
        connect5("02", "03 | 21 0000 | 0000") => Fails("MQTT-3.1.2.11.3", PROTOCOL),
        connect5("02", "05 | 27 00000000 | 0000") => Fails("MQTT-3.1.2.11.4", PROTOCOL),
        connect5("02", "06 | 22 0001 | 22 0001 | 0000") => Fails("MQTT-3.1.2.11.5", PROTOCOL),
        connect5("02", "02 | 19 02 | 0000") => Fails("MQTT-3.1.2.11.6", PROTOCOL),
        connect5("02", "02 | 17 02 | 0000") => Fails("MQTT-3.1.2.11.7", PROTOCOL),
        connect5("02", "06 | 16 0003 010203 | 0000") => Fails("MQTT-3.1.2.11.10", PROTOCOL),
        // User Property may repeat; the pair's strings are UTF-8 [MQTT-1.5.7-1].
        connect5("02", "0E | 26 0001 6B 0001 76 | 26 0001 6B 0001 76 | 0000") => Decodes(Packet::Connect(Connect {
            properties: Properties { user_properties: vec![user("k", "v"), user("k", "v")], ..Properties::default() }.into(),
            ..connect_v5_min()
        })),
        connect5("02", "07 | 26 0001 FF 0001 76 | 0000") => Fails("MQTT-1.5.4-1", MALFORMED),
        connect5("02", "07 | 26 0001 6B 0001 00 | 0000") => Fails("MQTT-1.5.4-2", MALFORMED),
        // Identifiers not allowed in CONNECT, unknown, or longer than a byte.
        connect5("02", "02 | 01 01 | 0000") => Fails("MQTT-2.2.2.2", MALFORMED),
        connect5("02", "02 | 00 00 | 0000") => Fails("MQTT-2.2.2.2", MALFORMED),
        connect5("02", "02 | 7F 00 | 0000") => Fails("MQTT-2.2.2.2", MALFORMED),
        connect5("02", "02 | 91 00 | 0000") => Fails("MQTT-2.2.2.2", MALFORMED),
        // The Property Length: present, within the packet, minimal, 4 bytes at most.
        connect5("02", "") => Fails("MQTT-2.2.2-1", MALFORMED),
        connect5("02", "05 | 0000") => Fails("MQTT-2.2.2.1", MALFORMED),
        connect5("02", "02 | 11 00 | 0000") => Fails("MQTT-2.2.2.2", MALFORMED),
        connect5("02", "80 00 | 0000") => Fails("MQTT-1.5.5-1", MALFORMED),
        connect5("02", "80 80 80 80 01 | 0000") => Fails("MQTT-1.5.5", MALFORMED),
        // Will properties: their own set, and a Response Topic is a topic name.
        connect5("06", "00 | 0000 | 05 | 11 00000000 | 0001 74 | 0000") => Fails("MQTT-2.2.2.2", MALFORMED),
        connect5("06", "00 | 0000 | 06 | 08 0003 612F23 | 0001 74 | 0000") => Fails("MQTT-3.3.2-14", MALFORMED),
        connect5("06", "00 | 0000 | 03 | 08 0000 | 0001 74 | 0000") => Fails("MQTT-4.7.3-1", MALFORMED),
        connect5("06", "00 | 0000 | 0A | 18 00000001 | 18 00000001 | 0001 74 | 0000") => Fails("MQTT-3.1.3.2.2", PROTOCOL),
        connect5("06", "00 | 0000 | 02 | 01 02 | 0001 74 | 0000") => Fails("MQTT-3.1.3.2.3", PROTOCOL),
        connect5("06", "00 | 0000") => Fails("MQTT-2.2.2-1", MALFORMED),
        connect5("06", "00 | 0000 | 00 | 0001 74") => Fails("MQTT-3.1.2-9", MALFORMED),
        // Errors of an MQTT 5 CONNECT cite MQTT 5.0's numbering.
        connect5("06", "00 | 0000 | 00 | 0001 23 | 0000") => Fails("MQTT-4.7.0-1", MALFORMED),
        connect5("02", "00 | 0002 C328") => Fails("MQTT-1.5.4-1", MALFORMED),
        connect5("02", "00 | 0001 00") => Fails("MQTT-1.5.4-2", MALFORMED),
        connect5("03", "00 | 0000") => Fails("MQTT-3.1.2-3", MALFORMED),
        connect5("0A", "00 | 0000") => Fails("MQTT-3.1.2-13", MALFORMED),
        connect5("1E", "00 | 0000 | 00 | 0001 74 | 0000") => Fails("MQTT-3.1.2-14", MALFORMED),
        connect5("82", "00 | 0000") => Fails("MQTT-3.1.2-19", MALFORMED),
        connect5("02", "00 | 0000 | 00") => Fails("MQTT-3.1.4-1", MALFORMED),
        connect5("02", "00") => Fails("MQTT-3.1.3-3", MALFORMED),
        "10 0D | 0004 4D515454 06 | 02 | 003C | 00 | 0000" => UnsupportedLevel(6),
    }
    // A first CONNECT is decoded under MQTT 3 limits, so its remaining length is
    // checked for the minimum number of bytes once its level is known.
    check! {
        "10 8D 00 | 0004 4D515454 05 | 02 | 003C | 00 | 0000" => Fails("MQTT-1.5.5-1", MALFORMED),
        "10 8C 00 | 0004 4D515454 04 | 02 | 003C | 0000" => NonCanonical(Packet::Connect(connect_v311_min())),
    }
}

#[test]
fn connack_v5_fixtures() {
    let ack = |session_present, reason| {
        Decodes(Packet::ConnAck(ConnAck {
            session_present,
            reason,
            properties: Properties::default().into(),
        }))
    };
    let full = ConnAck {
        session_present: true,
        reason: ReasonCode::SUCCESS,
        properties: Properties {
            session_expiry_interval: Some(3600),
            assigned_client_identifier: Some("id".into()),
            server_keep_alive: Some(60),
            authentication_method: Some("SCRAM".into()),
            authentication_data: Some(Bytes::from_static(b"\x01\x02\x03")),
            response_information: Some("ri".into()),
            server_reference: Some("sr".into()),
            reason_string: Some("ok".into()),
            receive_maximum: Some(10),
            topic_alias_maximum: Some(5),
            maximum_qos: Some(1),
            retain_available: Some(0),
            user_properties: vec![user("k", "v")],
            maximum_packet_size: Some(4096),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(0),
            shared_subscription_available: Some(1),
            ..Properties::default()
        }
        .into(),
    };
    let connack = |props: &str| framed("20", &format!("00 00 | {props}"));
    check5! {
        "20 03 | 00 00 | 00" => ack(false, ReasonCode::SUCCESS),
        "20 03 | 01 00 | 00" => ack(true, ReasonCode::SUCCESS),
        "20 03 | 00 87 | 00" => ack(false, ReasonCode::NOT_AUTHORIZED),
        "20 03 | 00 9F | 00" => ack(false, ReasonCode::CONNECTION_RATE_EXCEEDED),
        framed("20", "01 00 | 46 | 11 00000E10 | 12 0002 6964 | 13 003C | 15 0005 534352414D \
            | 16 0003 010203 | 1A 0002 7269 | 1C 0002 7372 | 1F 0002 6F6B | 21 000A | 22 0005 \
            | 24 01 | 25 00 | 26 0001 6B 0001 76 | 27 00001000 | 28 01 | 29 00 | 2A 01") => Decodes(Packet::ConnAck(full)),
        "20 03 | 02 00 | 00" => Fails("MQTT-3.2.2-1", MALFORMED),
        "20 03 | 80 00 | 00" => Fails("MQTT-3.2.2-1", MALFORMED),
        // Reason codes CONNACK does not allow.
        "20 03 | 00 01 | 00" => Fails("MQTT-3.2.2-8", PROTOCOL),
        "20 03 | 00 04 | 00" => Fails("MQTT-3.2.2-8", PROTOCOL),
        "20 03 | 00 8B | 00" => Fails("MQTT-3.2.2-8", PROTOCOL),
        "20 03 | 01 80 | 00" => Fails("MQTT-3.2.2-6", PROTOCOL),
        // The Property Length is not optional in CONNACK [MQTT-2.2.2-1].
        "20 02 | 00 00" => Fails("MQTT-2.2.2-1", MALFORMED),
        "20 01 | 00" => Fails("MQTT-3.2.2", MALFORMED),
        "20 00" => Fails("MQTT-3.2.2", MALFORMED),
        "20 04 | 00 00 | 00 | 00" => Fails("MQTT-3.2.3", MALFORMED),
        connack("02 | 24 02") => Fails("MQTT-3.2.2.3.4", PROTOCOL),
        connack("02 | 25 02") => Fails("MQTT-3.2.2.3.5", PROTOCOL),
        connack("02 | 28 02") => Fails("MQTT-3.2.2.3.11", PROTOCOL),
        connack("02 | 29 FF") => Fails("MQTT-3.2.2.3.12", PROTOCOL),
        connack("02 | 2A 02") => Fails("MQTT-3.2.2.3.13", PROTOCOL),
        connack("03 | 21 0000") => Fails("MQTT-3.2.2.3.3", PROTOCOL),
        connack("05 | 27 00000000") => Fails("MQTT-3.2.2.3.6", PROTOCOL),
        connack("0A | 12 0002 6964 | 12 0002 6964") => Fails("MQTT-3.2.2.3.7", PROTOCOL),
        connack("06 | 13 0001 | 13 0001") => Fails("MQTT-3.2.2.3.14", PROTOCOL),
        connack("03 | 23 0001") => Fails("MQTT-2.2.2.2", MALFORMED),
        connack("02 | 17 01") => Fails("MQTT-2.2.2.2", MALFORMED),
        connack("04 | 1F 0001 FF") => Fails("MQTT-1.5.4-1", MALFORMED),
    }
}

#[test]
fn connack_v3_return_codes() {
    for (reason, code) in [
        (0x00, 0),
        (0x84, 1),
        (0x85, 2),
        (0x86, 4),
        (0x87, 5),
        (0x88, 3),
        (0x89, 3),
        (0x80, 3),
        (0x8A, 3),
        (0x9F, 3),
    ] {
        let ack = ConnAck {
            session_present: false,
            reason: ReasonCode(reason),
            // MQTT 3 has no properties: they are dropped.
            properties: Properties { reason_string: Some("x".into()), ..Properties::default() }
                .into(),
        };
        assert_eq!(encoded(&Packet::ConnAck(ack)), [0x20, 0x02, 0x00, code], "{reason:#x}");
    }
}

/// A PUBLISH of `topic`, properties from `props`, payload `x`.
fn publish5(first: &str, topic: &str, props: &str) -> String {
    framed(first, &format!("{topic} | {props} | 78"))
}

#[test]
fn publish_v5_fixtures() {
    let publish = |qos, topic: PublishTopic, id: Option<u16>, properties, payload| {
        Packet::Publish(Publish {
            dup: false,
            qos: qos_with(qos, id),
            retain: false,
            topic,
            payload: Bytes::from_static(payload),
            properties,
        })
    };
    let all = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("json".into()),
        response_topic: Some(name("r/t")),
        correlation_data: Some(Bytes::from_static(b"\xCA\xFE")),
        subscription_identifiers: vec![1, 268_435_455],
        topic_alias: Some(1),
        user_properties: vec![user("k", "v"), user("k", "w")],
        ..Properties::default()
    };
    let sub_id_128 = Properties { subscription_identifiers: vec![128], ..Properties::default() };
    check5! {
        "30 0B | 0003 612F62 | 00 | 68656C6C6F" => Decodes(publish(QoS::AtMostOnce, PublishTopic::Name(name("a/b")), None, None, b"hello")),
        "32 06 | 0001 74 | 0001 | 00" => Decodes(publish(QoS::AtLeastOnce, PublishTopic::Name(name("t")), Some(1), None, b"")),
        framed("32", "0003 612F62 | 000A | 31 | 01 01 | 02 0000003C | 03 0004 6A736F6E \
            | 08 0003 722F74 | 09 0002 CAFE | 0B 01 | 0B FFFFFF7F | 23 0001 \
            | 26 0001 6B 0001 76 | 26 0001 6B 0001 77 | 6869") => Decodes(publish(QoS::AtLeastOnce, PublishTopic::Name(name("a/b")), Some(10), Some(Box::new(all)), b"hi")),
        // An empty topic names the topic by its alias [MQTT-3.3.2.3.4].
        "30 07 | 0000 | 03 | 23 0005 | 78" => Decodes(publish(QoS::AtMostOnce, PublishTopic::Alias(5), None, None, b"x")),
        publish5("30", "0001 74", "03 | 0B 8001") => Decodes(publish(QoS::AtMostOnce, PublishTopic::Name(name("t")), None, Some(Box::new(sub_id_128)), b"x")),
        "30 04 | 0000 | 00 | 78" => Fails("MQTT-3.3.2.1", PROTOCOL),
        publish5("30", "0000", "02 | 01 01") => Fails("MQTT-3.3.2.1", PROTOCOL),
        publish5("30", "0001 74", "03 | 23 0000") => Fails("MQTT-3.3.2-8", ReasonCode::TOPIC_ALIAS_INVALID),
        publish5("30", "0001 74", "06 | 23 0001 | 23 0001") => Fails("MQTT-3.3.2.3.4", PROTOCOL),
        // Subscription Identifier: 1..=268435455, a minimal Variable Byte Integer.
        publish5("30", "0001 74", "02 | 0B 00") => Fails("MQTT-3.3.2.3.8", PROTOCOL),
        publish5("30", "0001 74", "03 | 0B 8100") => Fails("MQTT-1.5.5-1", MALFORMED),
        publish5("30", "0001 74", "06 | 0B FFFFFFFF01") => Fails("MQTT-1.5.5", MALFORMED),
        publish5("30", "0001 74", "02 | 0B 80") => Fails("MQTT-2.2.2.2", MALFORMED),
        // Value checks and duplicates.
        publish5("30", "0001 74", "02 | 01 02") => Fails("MQTT-3.3.2.3.2", PROTOCOL),
        publish5("30", "0001 74", "0A | 02 00000001 | 02 00000002") => Fails("MQTT-3.3.2.3.3", PROTOCOL),
        publish5("30", "0001 74", "08 | 09 0001 00 | 09 0001 00") => Fails("MQTT-3.3.2.3.6", PROTOCOL),
        publish5("30", "0001 74", "0E | 03 0004 6A736F6E | 03 0004 6A736F6E") => Fails("MQTT-3.3.2.3.9", PROTOCOL),
        publish5("30", "0001 74", "06 | 08 0003 612F2B") => Fails("MQTT-3.3.2-14", MALFORMED),
        publish5("30", "0001 74", "03 | 08 0000") => Fails("MQTT-4.7.3-1", MALFORMED),
        publish5("30", "0001 74", "04 | 08 0001 00") => Fails("MQTT-4.7.3-2", MALFORMED),
        publish5("30", "0001 74", "04 | 03 0001 FF") => Fails("MQTT-1.5.4-1", MALFORMED),
        publish5("30", "0001 74", "04 | 03 0001 00") => Fails("MQTT-1.5.4-2", MALFORMED),
        // Identifiers PUBLISH does not allow.
        publish5("30", "0001 74", "05 | 11 00000000") => Fails("MQTT-2.2.2.2", MALFORMED),
        publish5("30", "0001 74", "03 | 21 0001") => Fails("MQTT-2.2.2.2", MALFORMED),
        publish5("30", "0001 74", "05 | 18 00000000") => Fails("MQTT-2.2.2.2", MALFORMED),
        // The Property Length: present, within the packet.
        "30 05 | 0001 74 | 05 | 01" => Fails("MQTT-2.2.2.1", MALFORMED),
        "30 03 | 0001 74" => Fails("MQTT-2.2.2-1", MALFORMED),
        "32 05 | 0001 74 | 0001" => Fails("MQTT-2.2.2-1", MALFORMED),
        // Packet identifier: present, non-zero [MQTT-2.2.1-3].
        "32 06 | 0001 74 | 0000 | 00" => Fails("MQTT-2.2.1-3", PROTOCOL),
        "32 04 | 0001 74 | 00" => Fails("MQTT-2.2.1", MALFORMED),
        // The topic name, with MQTT 5.0's clause numbers.
        "30 04 | 0001 23 | 00" => Fails("MQTT-4.7.0-1", MALFORMED),
        "30 06 | 0003 612B62 | 00" => Fails("MQTT-4.7.0-1", MALFORMED),
        "30 04 | 0001 FF | 00" => Fails("MQTT-1.5.4-1", MALFORMED),
        "30 04 | 0001 00 | 00" => Fails("MQTT-4.7.3-2", MALFORMED),
        "30 00" => Fails("MQTT-3.3.2-1", MALFORMED),
        "36" => Fails("MQTT-3.3.1-4", MALFORMED),
        "38" => Fails("MQTT-3.3.1-2", MALFORMED),
    }
}

#[test]
fn ack_v5_fixtures() {
    let ack = |id, reason| Ack::with_reason(pid(id), ReasonCode(reason));
    let with_properties = Ack {
        packet_id: pid(1),
        reason: ReasonCode::NOT_AUTHORIZED,
        properties: Properties {
            reason_string: Some("no".into()),
            user_properties: vec![user("k", "v")],
            ..Properties::default()
        }
        .into(),
    };
    check5! {
        // Remaining length 2: Success without properties [MQTT-3.4.2.1].
        "40 02 | 0001" => Decodes(Packet::PubAck(Ack::new(pid(1)))),
        "50 02 | 0102" => Decodes(Packet::PubRec(Ack::new(pid(0x0102)))),
        "62 02 | FFFF" => Decodes(Packet::PubRel(Ack::new(pid(0xFFFF)))),
        "70 02 | 0004" => Decodes(Packet::PubComp(Ack::new(pid(4)))),
        // 3: a reason without properties (the broker writes 4: it keeps the
        // empty Property Length).
        "40 03 | 0001 | 10" => NonCanonical(Packet::PubAck(ack(1, 0x10))),
        "50 03 | 0001 | 99" => NonCanonical(Packet::PubRec(ack(1, 0x99))),
        "62 03 | 0001 | 92" => NonCanonical(Packet::PubRel(ack(1, 0x92))),
        "70 03 | 0001 | 92" => NonCanonical(Packet::PubComp(ack(1, 0x92))),
        "40 04 | 0001 | 10 | 00" => Decodes(Packet::PubAck(ack(1, 0x10))),
        "70 04 | 0001 | 92 | 00" => Decodes(Packet::PubComp(ack(1, 0x92))),
        // Longer forms of Success.
        "40 03 | 0001 | 00" => NonCanonical(Packet::PubAck(Ack::new(pid(1)))),
        "40 04 | 0001 | 00 | 00" => NonCanonical(Packet::PubAck(Ack::new(pid(1)))),
        "40 10 | 0001 | 87 | 0C | 1F 0002 6E6F | 26 0001 6B 0001 76" => Decodes(Packet::PubAck(with_properties.clone())),
        "50 10 | 0001 | 87 | 0C | 1F 0002 6E6F | 26 0001 6B 0001 76" => Decodes(Packet::PubRec(with_properties)),
        // Reason codes each type does not allow [MQTT-3.4.2-1] ...
        "40 03 | 0001 | 92" => Fails("MQTT-3.4.2-1", PROTOCOL),
        "40 03 | 0001 | 01" => Fails("MQTT-3.4.2-1", PROTOCOL),
        "50 03 | 0001 | 04" => Fails("MQTT-3.5.2-1", PROTOCOL),
        "62 03 | 0001 | 10" => Fails("MQTT-3.6.2-1", PROTOCOL),
        "70 03 | 0001 | 80" => Fails("MQTT-3.7.2-1", PROTOCOL),
        // Properties: Reason String and User Property only, each once.
        "40 06 | 0001 | 00 | 02 | 01 01" => Fails("MQTT-2.2.2.2", MALFORMED),
        "62 08 | 0001 | 00 | 04 | 11 000000" => Fails("MQTT-2.2.2.2", MALFORMED),
        "40 0E | 0001 | 00 | 0A | 1F 0002 6E6F | 1F 0002 6E6F" => Fails("MQTT-3.4.2.2.2", PROTOCOL),
        "50 0E | 0001 | 00 | 0A | 1F 0002 6E6F | 1F 0002 6E6F" => Fails("MQTT-3.5.2.2.2", PROTOCOL),
        "62 0E | 0001 | 00 | 0A | 1F 0002 6E6F | 1F 0002 6E6F" => Fails("MQTT-3.6.2.2.2", PROTOCOL),
        "70 0E | 0001 | 00 | 0A | 1F 0002 6E6F | 1F 0002 6E6F" => Fails("MQTT-3.7.2.2.2", PROTOCOL),
        "40 07 | 0001 | 00 | 03 | 1F 0002" => Fails("MQTT-2.2.2.2", MALFORMED),
        "40 05 | 0001 | 00 | 02 | 1F" => Fails("MQTT-2.2.2.1", MALFORMED),
        "40 05 | 0001 | 00 | 00 | FF" => Fails("MQTT-3.4.3", MALFORMED),
        "70 05 | 0001 | 00 | 00 | FF" => Fails("MQTT-3.7.3", MALFORMED),
        "40 01 | 00" => Fails("MQTT-2.2.1", MALFORMED),
        "40 00" => Fails("MQTT-2.2.1", MALFORMED),
        "40 02 | 0000" => Fails("MQTT-2.2.1-3", PROTOCOL),
        "60 02 | 0001" => Fails("MQTT-3.6.1-1", MALFORMED),
        "41 02 | 0001" => Fails("MQTT-2.1.3-1", MALFORMED),
    }
    // The MQTT 3 layout is 2 bytes exactly, as before.
    check! {
        "40 03 | 0001 | 10" => Violation("MQTT-3.4.1"),
        "62 04 | 0001 | 92 | 00" => Violation("MQTT-3.6.1"),
    }
}

#[test]
fn subscribe_v5_fixtures() {
    let sub = |filters: Vec<SubscribeFilter>, properties| {
        Decodes(Packet::Subscribe(Subscribe { packet_id: pid(1), filters, properties }))
    };
    let options = |f: &str, qos, no_local, retain_as_published, retain_handling| SubscribeFilter {
        filter: filter(f),
        qos,
        no_local,
        retain_as_published,
        retain_handling,
    };
    let plain = || vec![SubscribeFilter::new(filter("a/b"), QoS::AtLeastOnce)];
    let with_properties = Properties {
        subscription_identifiers: vec![127],
        user_properties: vec![user("k", "v")],
        ..Properties::default()
    };
    let shared = "000C 2473686172652F672F612F62";
    let subscribe =
        |props: &str, payload: &str| framed("82", &format!("0001 | {props} | {payload}"));
    check5! {
        "82 09 | 0001 | 00 | 0003 612F62 | 01" => sub(plain(), Properties::default().into()),
        // Options: QoS bits 0-1, No Local bit 2, Retain As Published bit 3, Retain
        // Handling bits 4-5 [MQTT-3.8.3.1].
        "82 09 | 0001 | 00 | 0003 612F62 | 2E" => sub(vec![options("a/b", QoS::ExactlyOnce, true, true, RetainHandling::DoNotSend)], Properties::default().into()),
        "82 09 | 0001 | 00 | 0003 612F62 | 15" => sub(vec![options("a/b", QoS::AtLeastOnce, true, false, RetainHandling::SendIfNew)], Properties::default().into()),
        "82 09 | 0001 | 00 | 0003 612F62 | 08" => sub(vec![options("a/b", QoS::AtMostOnce, false, true, RetainHandling::SendAtSubscribe)], Properties::default().into()),
        "82 12 | 0001 | 09 | 0B 7F | 26 0001 6B 0001 76 | 0003 612F62 | 01" => sub(plain(), with_properties.into()),
        // A shared subscription without No Local is fine.
        subscribe("00", &format!("{shared} | 01")) => sub(vec![SubscribeFilter::new(filter("$share/g/a/b"), QoS::AtLeastOnce)], Properties::default().into()),
        subscribe("00", &format!("{shared} | 05")) => Fails("MQTT-3.8.3-4", PROTOCOL),
        subscribe("00", "0003 612F62 | 40") => Fails("MQTT-3.8.3-5", MALFORMED),
        subscribe("00", "0003 612F62 | 80") => Fails("MQTT-3.8.3-5", MALFORMED),
        subscribe("00", "0003 612F62 | 03") => Fails("MQTT-3.8.3.1", PROTOCOL),
        subscribe("00", "0003 612F62 | 30") => Fails("MQTT-3.8.3.1", PROTOCOL),
        subscribe("00", "0003 612F62 | 01 | 0001 62 | 3C") => Fails("MQTT-3.8.3.1", PROTOCOL),
        "82 03 | 0001 | 00" => Fails("MQTT-3.8.3-2", PROTOCOL),
        // At most one Subscription Identifier, not 0 [MQTT-3.8.2.1.2].
        subscribe("04 | 0B 01 | 0B 02", "0003 612F62 | 00") => Fails("MQTT-3.8.2.1.2", PROTOCOL),
        subscribe("02 | 0B 00", "0003 612F62 | 00") => Fails("MQTT-3.8.2.1.2", PROTOCOL),
        subscribe("05 | 1F 0002 6F6B", "0003 612F62 | 00") => Fails("MQTT-2.2.2.2", MALFORMED),
        subscribe("02 | 01 00", "0003 612F62 | 00") => Fails("MQTT-2.2.2.2", MALFORMED),
        // Filters, with MQTT 5.0's clause numbers.
        subscribe("00", "0002 6123 | 00") => Fails("MQTT-4.7.1-1", MALFORMED),
        subscribe("00", "0002 612B | 00") => Fails("MQTT-4.7.1-2", MALFORMED),
        subscribe("00", "0000 | 00") => Fails("MQTT-4.7.3-1", MALFORMED),
        subscribe("00", "0002 C328 | 00") => Fails("MQTT-1.5.4-1", MALFORMED),
        subscribe("00", "0003 612F") => Fails("MQTT-3.8.3", MALFORMED),
        subscribe("00", "0003 612F62") => Fails("MQTT-3.8.3", MALFORMED),
        "82 02 | 0001" => Fails("MQTT-2.2.2-1", MALFORMED),
        "82 03 | 0000 | 00" => Fails("MQTT-2.2.1-3", PROTOCOL),
        "80 03 | 0001 | 00" => Fails("MQTT-3.8.1-1", MALFORMED),
    }
}

#[test]
fn suback_unsubscribe_unsuback_v5_fixtures() {
    let codes = |c: &[u8]| c.iter().map(|&c| ReasonCode(c)).collect::<Vec<_>>();
    let suback = |c: &[u8], properties| {
        Decodes(Packet::SubAck(SubAck { packet_id: pid(10), codes: codes(c), properties }))
    };
    let unsuback = |c: &[u8], properties| {
        Decodes(Packet::UnsubAck(UnsubAck { packet_id: pid(5), codes: codes(c), properties }))
    };
    let unsubscribe = |filters: &[&str], properties| {
        Decodes(Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(11),
            filters: filters.iter().map(|f| filter(f)).collect(),
            properties,
        }))
    };
    let reason = || Properties { reason_string: Some("ok".into()), ..Properties::default() };
    let user_kv = || Properties { user_properties: vec![user("k", "v")], ..Properties::default() };
    check5! {
        "90 04 | 000A | 00 | 00" => suback(&[0], Properties::default().into()),
        "90 14 | 000A | 05 | 1F 0002 6F6B | 00 01 02 80 83 87 8F 91 97 9E A1 A2" => suback(&[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2], reason().into()),
        "90 04 | 000A | 00 | 03" => Fails("MQTT-3.9.3-2", PROTOCOL),
        "90 05 | 000A | 00 | 00 11" => Fails("MQTT-3.9.3-2", PROTOCOL),
        "90 03 | 000A | 00" => Fails("MQTT-3.9.3", MALFORMED),
        "90 02 | 000A" => Fails("MQTT-2.2.2-1", MALFORMED),
        "90 06 | 000A | 02 | 0B 01 | 00" => Fails("MQTT-2.2.2.2", MALFORMED),
        "90 0E | 000A | 0A | 1F 0002 6F6B | 1F 0002 6F6B | 00" => Fails("MQTT-3.9.2.1.2", PROTOCOL),

        "A2 07 | 000B | 00 | 0002 2B2F" => unsubscribe(&["+/"], Properties::default().into()),
        "A2 0D | 000B | 07 | 26 0001 6B 0001 76 | 0001 61" => unsubscribe(&["a"], user_kv().into()),
        "A2 03 | 000B | 00" => Fails("MQTT-3.10.3-2", PROTOCOL),
        "A2 0B | 000B | 05 | 1F 0002 6F6B | 0001 61" => Fails("MQTT-2.2.2.2", MALFORMED),
        "A2 07 | 000B | 00 | 0002 2361" => Fails("MQTT-4.7.1-1", MALFORMED),
        "A2 06 | 000B | 00 | 0003 61" => Fails("MQTT-3.10.3", MALFORMED),
        "A2 02 | 000B" => Fails("MQTT-2.2.2-1", MALFORMED),

        "B0 04 | 0005 | 00 | 00" => unsuback(&[0], Properties::default().into()),
        "B0 0A | 0005 | 00 | 00 11 80 83 87 8F 91" => unsuback(&[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91], Properties::default().into()),
        "B0 09 | 0005 | 05 | 1F 0002 6F6B | 11" => unsuback(&[0x11], reason().into()),
        "B0 04 | 0005 | 00 | 01" => Fails("MQTT-3.11.3-2", PROTOCOL),
        "B0 04 | 0005 | 00 | A2" => Fails("MQTT-3.11.3-2", PROTOCOL),
        "B0 03 | 0005 | 00" => Fails("MQTT-3.11.3", MALFORMED),
        "B0 02 | 0005" => Fails("MQTT-2.2.2-1", MALFORMED),
        "B0 0A | 0005 | 06 | 23 0001 | 23 0001 | 00" => Fails("MQTT-2.2.2.2", MALFORMED),
    }
}

#[test]
fn disconnect_auth_ping_v5_fixtures() {
    let disconnect = |reason| Packet::Disconnect(Disconnect::new(ReasonCode(reason)));
    let with_properties = Disconnect {
        reason: ReasonCode::USE_ANOTHER_SERVER,
        properties: Properties {
            session_expiry_interval: Some(0),
            server_reference: Some("sr".into()),
            reason_string: Some("ok".into()),
            user_properties: vec![user("k", "v")],
            ..Properties::default()
        }
        .into(),
    };
    let auth = |reason, properties| Packet::Auth(Auth { reason: ReasonCode(reason), properties });
    let scram = Properties {
        authentication_method: Some("SCRAM".into()),
        authentication_data: Some(Bytes::from_static(b"\x01\x02\x03")),
        ..Properties::default()
    };
    check5! {
        // Remaining length 0: Normal disconnection; 1: a reason without properties
        // (the broker writes 2: it keeps the empty Property Length).
        "E0 00" => Decodes(disconnect(0x00)),
        "E0 01 | 04" => NonCanonical(disconnect(0x04)),
        "E0 01 | A2" => NonCanonical(disconnect(0xA2)),
        "E0 01 | 00" => NonCanonical(disconnect(0x00)),
        "E0 02 | 00 | 00" => NonCanonical(disconnect(0x00)),
        "E0 02 | 8E | 00" => Decodes(disconnect(0x8E)),
        "E0 18 | 9C | 16 | 11 00000000 | 1C 0002 7372 | 1F 0002 6F6B | 26 0001 6B 0001 76" => Decodes(Packet::Disconnect(with_properties)),
        "E0 01 | 01" => Fails("MQTT-3.14.2-1", PROTOCOL),
        "E0 01 | 84" => Fails("MQTT-3.14.2-1", PROTOCOL),
        "E0 07 | 00 | 05 | 12 0002 6964" => Fails("MQTT-2.2.2.2", MALFORMED),
        "E0 0C | 00 | 0A | 11 00000000 | 11 00000000" => Fails("MQTT-3.14.2.2.2", PROTOCOL),
        "E0 03 | 00 | 00 | 00" => Fails("MQTT-3.14.3", MALFORMED),
        "E2 00" => Fails("MQTT-3.14.1-1", MALFORMED),

        // AUTH: remaining length 0 is Success without properties [MQTT-3.15.2.1].
        "F0 00" => Decodes(auth(0x00, Properties::default().into())),
        "F0 02 | 19 | 00" => Decodes(auth(0x19, Properties::default().into())),
        "F0 02 | 00 | 00" => NonCanonical(auth(0x00, Properties::default().into())),
        "F0 10 | 18 | 0E | 15 0005 534352414D | 16 0003 010203" => Decodes(auth(0x18, scram.into())),
        // Unlike DISCONNECT's, AUTH's Property Length goes only with the reason.
        "F0 01 | 18" => Fails("MQTT-2.2.2-1", MALFORMED),
        "F0 02 | 80 | 00" => Fails("MQTT-3.15.2-1", PROTOCOL),
        "F0 02 | 04 | 00" => Fails("MQTT-3.15.2-1", PROTOCOL),
        "F0 07 | 18 | 05 | 11 00000000" => Fails("MQTT-2.2.2.2", MALFORMED),
        "F0 0A | 18 | 08 | 15 0001 61 | 15 0001 61" => Fails("MQTT-3.15.2.2.2", PROTOCOL),
        "F0 03 | 18 | 00 | 00" => Fails("MQTT-3.15.3", MALFORMED),
        "F1 00" => Fails("MQTT-3.15.1-1", MALFORMED),
        "F8 00" => Fails("MQTT-3.15.1-1", MALFORMED),

        "C0 00" => Decodes(Packet::PingReq),
        "D0 00" => Decodes(Packet::PingResp),
        "C0 01 | 00" => Fails("MQTT-3.12.1", MALFORMED),
        "D0 02 | 0000" => Fails("MQTT-3.13.1", MALFORMED),
        "C1 00" => Fails("MQTT-2.1.3-1", MALFORMED),
        "00 00" => Fails("MQTT-2.1.2", MALFORMED),
    }
    // In MQTT 3 type 15 is reserved and DISCONNECT has no body.
    check! {
        "F0 00" => Violation("MQTT-2.2.1"),
        "E0 01 | 00" => Violation("MQTT-3.14.1"),
    }
}

#[test]
fn fixed_header_v5_fixtures() {
    check5! {
        // The remaining length in the minimum number of bytes [MQTT-1.5.5-1],
        // refused as soon as the last length byte arrives.
        "C0 80 00" => Fails("MQTT-1.5.5-1", MALFORMED),
        "30 80 00" => Fails("MQTT-1.5.5-1", MALFORMED),
        "30 FF 00" => Fails("MQTT-1.5.5-1", MALFORMED),
        "30 80 80 00" => Fails("MQTT-1.5.5-1", MALFORMED),
        "40 82 00 | 0007" => Fails("MQTT-1.5.5-1", MALFORMED),
        "30 80 80 80 80" => Fails("MQTT-1.5.5", MALFORMED),
        "30 80 01" => Incomplete,
        "30 FF FF FF 7F" => TooLarge,
    }
    // The same bytes in MQTT 3 are merely longer than needed.
    check! {
        "C0 80 00" => NonCanonical(Packet::PingReq),
    }
}

#[test]
fn v3_layout_drops_the_mqtt5_parts() {
    let properties = Properties {
        reason_string: Some("why".into()),
        user_properties: vec![user("k", "v")],
        ..Properties::default()
    };
    let ack =
        Ack { packet_id: pid(1), reason: ReasonCode(0x10), properties: properties.clone().into() };
    let suback = SubAck {
        packet_id: pid(1),
        codes: [0x00, 0x01, 0x02, 0x80, 0x87, 0x97, 0xA2].map(ReasonCode).to_vec(),
        properties: properties.clone().into(),
    };
    let unsuback = UnsubAck {
        packet_id: pid(1),
        codes: vec![ReasonCode::NO_SUBSCRIPTION_EXISTED],
        properties: properties.clone().into(),
    };
    let subscribe = Subscribe {
        packet_id: pid(1),
        filters: vec![SubscribeFilter {
            filter: filter("a"),
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        }],
        properties: Properties { subscription_identifiers: vec![5], ..Properties::default() }
            .into(),
    };
    let publish = Publish {
        dup: false,
        qos: PublishQoS::AtMostOnce,
        retain: false,
        topic: PublishTopic::Name(name("t")),
        payload: Bytes::from_static(b"x"),
        properties: Some(Box::new(properties.clone())),
    };
    let disconnect = Disconnect { reason: ReasonCode(0x8E), properties: properties.into() };
    for (packet, bytes) in [
        (Packet::PubAck(ack.clone()), "40 02 0001"),
        (Packet::PubRel(ack), "62 02 0001"),
        (Packet::SubAck(suback), "90 09 0001 | 00 01 02 80 80 80 80"),
        (Packet::UnsubAck(unsuback), "B0 02 0001"),
        (Packet::Subscribe(subscribe), "82 06 0001 | 0001 61 01"),
        (Packet::Publish(publish), "30 04 | 0001 74 | 78"),
        (Packet::Disconnect(disconnect), "E0 00"),
    ] {
        assert_eq!(encoded(&packet), hex(bytes), "{packet:?}");
    }
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "AUTH does not exist in MQTT 3")]
fn encoding_auth_for_mqtt3_is_a_bug() {
    let auth = Auth { reason: ReasonCode::SUCCESS, properties: Properties::default().into() };
    encode(&Packet::Auth(auth), V3, &mut BytesMut::new());
}

#[test]
fn v5_encoding_takes_the_shortest_form() {
    let reason_only = Properties::default();
    let reasoned =
        |reason| Ack { packet_id: pid(1), reason, properties: reason_only.clone().into() };
    for (packet, bytes) in [
        (Packet::PubAck(Ack::new(pid(1))), "40 02 0001"),
        (Packet::PubComp(reasoned(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)), "70 04 0001 92 00"),
        (Packet::Disconnect(Disconnect::default()), "E0 00"),
        (Packet::Disconnect(Disconnect::new(ReasonCode::SERVER_BUSY)), "E0 02 89 00"),
        (
            Packet::Auth(Auth {
                reason: ReasonCode::SUCCESS,
                properties: Properties::default().into(),
            }),
            "F0 00",
        ),
        (
            Packet::Auth(Auth {
                reason: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: Properties::default().into(),
            }),
            "F0 02 18 00",
        ),
    ] {
        assert_eq!(encoded_in(&packet, V5), hex(bytes), "{packet:?}");
    }
}

/// One property with a valid value, for each identifier Table 2-4 defines.
fn sample_property(id: u8) -> Option<&'static str> {
    Some(match id {
        0x01 => "01 01",
        0x02 => "02 0000003C",
        0x03 => "03 0001 61",
        0x08 => "08 0001 61",
        0x09 => "09 0001 00",
        0x0B => "0B 01",
        0x11 => "11 00000001",
        0x12 => "12 0001 61",
        0x13 => "13 0001",
        0x15 => "15 0001 61",
        0x16 => "16 0001 00",
        0x17 => "17 01",
        0x18 => "18 00000001",
        0x19 => "19 01",
        0x1A => "1A 0001 61",
        0x1C => "1C 0001 61",
        0x1F => "1F 0001 61",
        0x21 => "21 0001",
        0x22 => "22 0001",
        0x23 => "23 0001",
        0x24 => "24 00",
        0x25 => "25 01",
        0x26 => "26 0001 61 0001 62",
        0x27 => "27 00000001",
        0x28 => "28 01",
        0x29 => "29 01",
        0x2A => "2A 01",
        _ => return None,
    })
}

/// A packet of type `packet` whose property block is `block` (hex).
fn with_property_block(packet: &str, block: &str) -> String {
    match packet {
        "CONNECT" => connect5("02", &format!("{block} | 0000")),
        "will" => connect5("06", &format!("00 | 0000 | {block} | 0001 74 | 0000")),
        "CONNACK" => framed("20", &format!("00 00 | {block}")),
        "PUBLISH" => framed("30", &format!("0001 74 | {block}")),
        "PUBACK" => framed("40", &format!("0001 00 | {block}")),
        "PUBREC" => framed("50", &format!("0001 00 | {block}")),
        "PUBREL" => framed("62", &format!("0001 00 | {block}")),
        "PUBCOMP" => framed("70", &format!("0001 00 | {block}")),
        "SUBSCRIBE" => framed("82", &format!("0001 | {block} | 0001 61 00")),
        "SUBACK" => framed("90", &format!("0001 | {block} | 00")),
        "UNSUBSCRIBE" => framed("A2", &format!("0001 | {block} | 0001 61")),
        "UNSUBACK" => framed("B0", &format!("0001 | {block} | 00")),
        "DISCONNECT" => framed("E0", &format!("00 | {block}")),
        "AUTH" => framed("F0", &format!("18 | {block}")),
        _ => unreachable!("{packet}"),
    }
}

/// Every identifier in every packet type: accepted exactly where Table 2-4 allows
/// it, refused as malformed elsewhere [MQTT-2.2.2.2].
#[test]
fn property_identifiers_follow_table_2_4() {
    for &(packet, allowed) in TABLE_2_4 {
        for id in 0..=u8::MAX {
            let property =
                sample_property(id).map_or_else(|| format!("{id:02X} 00"), str::to_owned);
            let block = format!("{:02X} | {property}", hex(&property).len());
            let input = with_property_block(packet, &block);
            let mut buf = BytesMut::from(&hex(&input)[..]);
            let result = decode(&mut buf, &limits_v5());
            let ctx = format!("{packet}, identifier {id:#04x}: {input} gives {result:?}");
            if allowed.contains(&id) {
                assert!(sample_property(id).is_some(), "{ctx}");
                match result {
                    Ok(Some(_)) => {}
                    // Authentication Data needs an Authentication Method in CONNECT.
                    Err(DecodeError::Violation(v))
                        if packet == "CONNECT" && v.clause == "MQTT-3.1.2.11.10" => {}
                    _ => panic!("{ctx}: refused"),
                }
            } else {
                match result {
                    Err(DecodeError::Violation(v)) => {
                        assert_eq!((v.clause, v.code), ("MQTT-2.2.2.2", MALFORMED), "{ctx}")
                    }
                    _ => panic!("{ctx}: accepted"),
                }
            }
        }
    }
}

#[test]
fn v5_errors_carry_their_reason_code() {
    let mut buf = BytesMut::from(&hex("30 08 | 0001 74 | 03 | 23 0000 | 78")[..]);
    let err = decode(&mut buf, &limits_v5()).expect_err("Topic Alias 0");
    assert_eq!(err.reason_code(), ReasonCode::TOPIC_ALIAS_INVALID);
    let mut buf = BytesMut::from(&hex("E0 01 | 01")[..]);
    let err = decode(&mut buf, &limits_v5()).expect_err("bad reason");
    assert_eq!(err.reason_code(), ReasonCode::PROTOCOL_ERROR);
    let mut buf = BytesMut::from(&hex("10 0D | 0004 4D515454 06 | 02 | 003C | 00 | 0000")[..]);
    let err = decode(&mut buf, &limits_v5()).expect_err("level 6");
    assert_eq!(err.reason_code(), ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
}

#[test]
fn decoded_v5_fields_share_the_read_buffer() {
    let input = framed("30", "0003 612F62 | 07 | 03 0004 6A736F6E | 68656C6C6F");
    let mut buf = BytesMut::from(&hex(&input)[..]);
    let start = buf.as_ptr() as usize;
    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, &limits_v5()) else {
        panic!("expected a PUBLISH");
    };
    let content_type = p.properties.as_ref().and_then(|p| p.content_type.clone());
    assert_eq!(content_type.expect("content type").as_ptr() as usize, start + 11);
    assert_eq!(p.payload.as_ptr() as usize, start + 15);
}

#[test]
fn publish_view_counts_and_writes_the_properties() {
    let props = Properties { topic_alias: Some(1), ..Properties::default() };
    let with_alias = PublishView {
        properties: PublishProperties::of(&props),
        packet_id: Some(pid(1)),
        ..view("", b"hello", QoS::AtLeastOnce)
    };
    // 1 + 1 + (2 + 0 + 2 + (1 + 3) + 5)
    assert_eq!(with_alias.measure(V5).size(), 15);
    assert_eq!(PublishView { topic: "t", ..with_alias }.measure(V5).size(), 16);
    let without = PublishView { properties: PublishProperties::default(), ..with_alias };
    assert_eq!(PublishView { topic: "t", ..without }.measure(V5).size(), 13);
    assert_eq!(PublishView { topic: "t", ..with_alias }.measure(V3).size(), 12);
    let mut buf = BytesMut::new();
    with_alias.measure(V5).encode(&mut buf);
    assert_eq!(&buf[..], &hex("32 0D | 0000 | 0001 | 03 | 23 0001 | 68656C6C6F")[..]);
}

#[test]
fn publish_view_writes_the_delivery_properties_in_place_of_the_message_ones() {
    // The message's own expiry, identifiers and alias are replaced, not repeated;
    // every property stays in identifier order.
    let message = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("a".into()),
        subscription_identifiers: vec![7],
        topic_alias: Some(9),
        user_properties: vec![("k".into(), "v".into())],
        ..Properties::default()
    };
    let delivery = PublishProperties {
        message: Some(&message),
        message_expiry_interval: Some(55),
        subscription_identifiers: &[3, 200],
        topic_alias: None,
    };
    let publish = PublishView { properties: delivery, ..view("t", b"", QoS::AtMostOnce) };
    let measured = publish.measure(V5);
    let mut buf = BytesMut::new();
    measured.encode(&mut buf);
    let block = "01 01 | 02 00000037 | 03 0001 61 | 0B 03 | 0B C801 | 26 0001 6B 0001 76";
    assert_eq!(&buf[..], &hex(&format!("30 1B | 0001 74 | 17 | {block}"))[..]);
    assert_eq!(measured.size(), buf.len());
}
