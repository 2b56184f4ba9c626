//! Codec tests: byte fixtures of the MQTT 3 layouts (`v3`) and of MQTT 5 (`v5`),
//! each decoded, re-encoded and cut at every byte, and property tests (`proptests`):
//! round trip and split invariance over generated packets. The helpers here are
//! the only code that touches the codec's API.

use super::*;

/// Parses hex, ignoring whitespace and `|` (used to mark field boundaries).
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b'|').collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits in {s:?}");
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ASCII");
            u8::from_str_radix(pair, 16).expect("hex digit")
        })
        .collect()
}

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// The MQTT 3.1.1 encoding.
fn encoded(packet: &Packet) -> Vec<u8> {
    encoded_in(packet, V3)
}

fn encoded_in(packet: &Packet, protocol: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(packet, protocol, &mut buf);
    assert_eq!(buf.len(), encoded_len(packet, protocol), "encoded_len of {packet:?}");
    buf.to_vec()
}

fn limits_v5() -> Limits {
    Limits { protocol: V5, ..Limits::default() }
}

fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("test packet ids are non-zero")
}

fn name(s: &str) -> TopicName {
    TopicName::try_from(s).expect("test topic names are valid")
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::try_from(s).expect("test topic filters are valid")
}

#[derive(Debug)]
enum Expect {
    /// Decodes to this packet, and encoding it gives back the same bytes.
    Decodes(Packet),
    /// Decodes to this packet, but the bytes are not the canonical encoding.
    NonCanonical(Packet),
    /// Needs more bytes; nothing consumed.
    Incomplete,
    /// Fails with a violation of this clause.
    Violation(&'static str),
    /// Fails with a violation of this clause, answered with this reason code.
    Fails(&'static str, ReasonCode),
    TooLarge,
    UnsupportedLevel(u8),
}
use Expect::*;

fn check_decode(hex_bytes: &str, expected: Expect) {
    check_decode_with(hex_bytes, expected, &Limits::default());
}

fn check_decode_with(hex_bytes: &str, expected: Expect, limits: &Limits) {
    let input = hex(hex_bytes);
    let mut buf = BytesMut::from(&input[..]);
    let result = decode(&mut buf, limits);
    let ctx = format!("input {hex_bytes:?}: got {result:?}");
    match expected {
        Decodes(packet) => {
            assert_eq!(result, Ok(Some(packet.clone())), "{ctx}");
            assert!(buf.is_empty(), "{ctx}: bytes left over");
            assert_eq!(encoded_in(&packet, limits.protocol), input, "{ctx}: re-encoding differs");
            // Every strict prefix is incomplete and consumes nothing.
            for cut in 0..input.len() {
                let mut prefix = BytesMut::from(&input[..cut]);
                assert_eq!(decode(&mut prefix, limits), Ok(None), "{ctx}: prefix {cut}");
                assert_eq!(prefix.len(), cut, "{ctx}: prefix {cut} consumed");
            }
        }
        NonCanonical(packet) => {
            assert_eq!(result, Ok(Some(packet.clone())), "{ctx}");
            assert!(buf.is_empty(), "{ctx}: bytes left over");
            assert_ne!(encoded_in(&packet, limits.protocol), input, "{ctx}: canonical after all");
        }
        Incomplete => {
            assert_eq!(result, Ok(None), "{ctx}");
            assert_eq!(&buf[..], &input[..], "{ctx}: consumed bytes");
        }
        Violation(clause) => match result {
            Err(DecodeError::Violation(v)) => {
                assert_eq!(v.clause, clause, "{ctx}");
                assert!(v.to_string().starts_with(&format!("[{clause}] ")), "{ctx}");
            }
            _ => panic!("{ctx}: expected a violation of {clause}"),
        },
        Fails(clause, code) => match result {
            Err(DecodeError::Violation(v)) => {
                assert_eq!((v.clause, v.code), (clause, code), "{ctx}");
                assert!(v.to_string().starts_with(&format!("[{clause}] ")), "{ctx}");
            }
            _ => panic!("{ctx}: expected a violation of {clause}"),
        },
        TooLarge => assert!(matches!(result, Err(DecodeError::PacketTooLarge { .. })), "{ctx}"),
        UnsupportedLevel(level) => {
            assert_eq!(result, Err(DecodeError::UnsupportedProtocolLevel(level)), "{ctx}")
        }
    }
}

/// `check! { "hex" => expected, ... }`: one `check_decode` per line (a macro so
/// that rustfmt leaves the table one fixture per line).
macro_rules! check {
    ($($input:expr => $expected:expr,)*) => {
        $(check_decode(&$input, $expected);)*
    };
}

/// `check!` with [`Limits::protocol`] MQTT 5.
macro_rules! check5 {
    ($($input:expr => $expected:expr,)*) => {
        $(check_decode_with(&$input, $expected, &limits_v5());)*
    };
}

fn connect_v311_min() -> Connect {
    Connect {
        protocol: ProtocolVersion::V311,
        clean_session: true,
        keep_alive_secs: 60,
        client_id: ByteString::new(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default().into(),
    }
}

/// The identifiers each packet allows: Table 2-4 of MQTT 5.0, written out here
/// independently of the codec's tables.
const TABLE_2_4: &[(&str, &[u8])] = &[
    ("CONNECT", &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27]),
    ("will", &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26]),
    (
        "CONNACK",
        &[
            0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27,
            0x28, 0x29, 0x2A,
        ],
    ),
    ("PUBLISH", &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26]),
    ("PUBACK", &[0x1F, 0x26]),
    ("PUBREC", &[0x1F, 0x26]),
    ("PUBREL", &[0x1F, 0x26]),
    ("PUBCOMP", &[0x1F, 0x26]),
    ("SUBSCRIBE", &[0x0B, 0x26]),
    ("SUBACK", &[0x1F, 0x26]),
    ("UNSUBSCRIBE", &[0x26]),
    ("UNSUBACK", &[0x1F, 0x26]),
    ("DISCONNECT", &[0x11, 0x1C, 0x1F, 0x26]),
    ("AUTH", &[0x15, 0x16, 0x1F, 0x26]),
];

/// The QoS of a PUBLISH fixture with its packet id (`None` exactly at QoS 0).
fn qos_with(qos: QoS, id: Option<u16>) -> PublishQoS {
    match (qos, id) {
        (QoS::AtMostOnce, None) => PublishQoS::AtMostOnce,
        (qos, Some(id)) if qos != QoS::AtMostOnce => PublishQoS::new(qos, pid(id)),
        _ => panic!("a packet id exactly above QoS 0"),
    }
}

/// A PUBLISH view at `qos` without packet id, flags or properties.
fn view<'a>(topic: &'a str, payload: &'a [u8], qos: QoS) -> PublishView<'a> {
    PublishView {
        topic,
        payload,
        qos,
        packet_id: None,
        retain: false,
        dup: false,
        properties: PublishProperties::default(),
    }
}

mod proptests;
mod v3;
mod v5;
