//! The records of a shard's log, and their frame.
//!
//! ```text
//! +-----------+------------+-----------------------------+
//! | len (u32) | CRC32C u32 | body: kind (u8), fields ... |
//! +-----------+------------+-----------------------------+
//! ```
//!
//! Integers are big-endian, as in MQTT; strings are a u16 length and UTF-8 bytes.
//! The CRC covers the body. A message is written as it crosses a node link: its
//! 128-bit id, then its MQTT 5 PUBLISH (`cluster::frame`).
//!
//! # Invariants
//! - [`decode`] never panics and never reads past a record: a partial record is
//!   [`Decoded::Torn`], a record whose CRC or fields do not check is
//!   [`Decoded::Corrupt`]; nothing after either is trusted.
//! - Every record [`put`] writes decodes to itself (property-tested).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::cluster::frame;
use crate::message::{Message, MessageId};
use crate::protocol::{PacketId, QoS, TopicFilter};
use crate::session::SubOptions;

/// Bytes before a record's body: its length and CRC.
pub const HEAD: usize = 8;

/// The largest body a record may have: a message at the protocol's limit, its id
/// and some room. A length beyond it is corruption, not a record to wait for.
pub const BODY_MAX: usize = crate::protocol::codec::PACKET_SIZE_MAX + 1024;

const SESSION: u8 = 1;
const SESSION_END: u8 = 2;
const SUBSCRIBE: u8 = 3;
const UNSUBSCRIBE: u8 = 4;
const MESSAGE: u8 = 5;
const PENDING: u8 = 6;
const SENT: u8 = 7;
const RELEASED: u8 = 8;
const DONE: u8 = 9;
const AWAIT_REL: u8 = 10;
const REL: u8 = 11;
const RETAIN: u8 = 12;
const RETAIN_CLEAR: u8 = 13;
const WILL: u8 = 14;

/// One change of a shard's durable state. Sessions are named by their serial in
/// the log (`serial`), given by the [`Record::Session`] that starts them.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A persistent session: its terms. `fresh` starts it over (a new session, or
    /// a checkpoint that the records after it complete); otherwise only its terms
    /// change.
    Session {
        serial: u64,
        fresh: bool,
        client_id: String,
        /// Seconds it outlives its connection; `None`: forever.
        expiry_secs: Option<u64>,
        /// Unix seconds since which it is offline; 0: online (or not known).
        offline_since_s: u64,
        username: Option<String>,
    },
    /// The session ended (expired, a clean start, handed to another node).
    SessionEnd {
        serial: u64,
    },
    Subscribe {
        serial: u64,
        filter: TopicFilter,
        options: SubOptions,
    },
    Unsubscribe {
        serial: u64,
        filter: TopicFilter,
    },
    /// A message, written once before the first record that names it.
    Message(Message),
    /// A message reached the session: it joins the end of its pending messages,
    /// sent under `packet_id` (in the window) or not yet (queued). `released`: its
    /// PUBREC came, PUBREL is due.
    Pending {
        serial: u64,
        message: MessageId,
        qos: QoS,
        retain: bool,
        sub_ids: Vec<u32>,
        packet_id: Option<PacketId>,
        released: bool,
    },
    /// The first queued pending `message` went out under `packet_id`.
    Sent {
        serial: u64,
        message: MessageId,
        packet_id: PacketId,
    },
    /// PUBREC came for `packet_id`: PUBREL is due.
    Released {
        serial: u64,
        packet_id: PacketId,
    },
    /// The first pending `message` is no longer pending: acknowledged, dropped or
    /// expired.
    Done {
        serial: u64,
        message: MessageId,
    },
    /// A QoS 2 message from the client, routed; its PUBREL has not come.
    AwaitRel {
        serial: u64,
        packet_id: PacketId,
    },
    /// Its PUBREL came.
    Rel {
        serial: u64,
        packet_id: PacketId,
    },
    /// A retained message set (it carries its topic).
    Retain(Message),
    /// A retained topic cleared.
    RetainClear {
        topic: String,
    },
    /// The session's will: of its connection while connected, or waiting for
    /// its Will Delay Interval (`delay_secs`) while offline; `None`: none. The
    /// will is written as a message (its id means nothing); `protocol` is its
    /// client's protocol level.
    Will {
        serial: u64,
        will: Option<(Message, u32)>,
        protocol: u8,
    },
}

/// What [`decode`] found at the front of a buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// A record, and the bytes it took.
    Record(Record, usize),
    /// The buffer ends inside a record (or is empty): the log's torn tail when
    /// nothing follows.
    Torn,
    /// A record that does not check: its CRC, its length or its fields.
    Corrupt(&'static str),
}

/// Appends `record`, framed. `false` (nothing written) when it cannot be: a
/// message larger than the protocol allows.
pub fn put(buf: &mut BytesMut, record: &Record) -> bool {
    let start = buf.len();
    buf.put_u64(0);
    if !put_body(buf, record) {
        buf.truncate(start);
        return false;
    }
    let body = &buf[start + HEAD..];
    let (len, crc) = (body.len() as u32, crc32c::crc32c(body));
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    true
}

fn put_body(buf: &mut BytesMut, record: &Record) -> bool {
    match record {
        Record::Session { serial, fresh, client_id, expiry_secs, offline_since_s, username } => {
            buf.put_u8(SESSION);
            buf.put_u64(*serial);
            buf.put_u8(u8::from(*fresh));
            put_str(buf, client_id);
            buf.put_u64(expiry_secs.unwrap_or(u64::MAX));
            buf.put_u64(*offline_since_s);
            buf.put_u8(u8::from(username.is_some()));
            put_str(buf, username.as_deref().unwrap_or(""));
        }
        Record::SessionEnd { serial } => {
            buf.put_u8(SESSION_END);
            buf.put_u64(*serial);
        }
        Record::Subscribe { serial, filter, options } => {
            buf.put_u8(SUBSCRIBE);
            buf.put_u64(*serial);
            put_str(buf, filter.as_str());
            options.put(buf);
        }
        Record::Unsubscribe { serial, filter } => {
            buf.put_u8(UNSUBSCRIBE);
            buf.put_u64(*serial);
            put_str(buf, filter.as_str());
        }
        Record::Message(message) => {
            buf.put_u8(MESSAGE);
            return frame::put_message(buf, message);
        }
        Record::Pending { serial, message, qos, retain, sub_ids, packet_id, released } => {
            buf.put_u8(PENDING);
            buf.put_u64(*serial);
            buf.put_u128(message.0);
            buf.put_u8(*qos as u8);
            buf.put_u8(u8::from(*retain) | u8::from(*released) << 1);
            buf.put_u16(packet_id.map_or(0, PacketId::get));
            buf.put_u16(sub_ids.len().min(usize::from(u16::MAX)) as u16);
            for id in sub_ids.iter().take(usize::from(u16::MAX)) {
                buf.put_u32(*id);
            }
        }
        Record::Sent { serial, message, packet_id } => {
            buf.put_u8(SENT);
            buf.put_u64(*serial);
            buf.put_u128(message.0);
            buf.put_u16(packet_id.get());
        }
        Record::Released { serial, packet_id } => put_packet_id(buf, RELEASED, *serial, *packet_id),
        Record::Done { serial, message } => {
            buf.put_u8(DONE);
            buf.put_u64(*serial);
            buf.put_u128(message.0);
        }
        Record::AwaitRel { serial, packet_id } => {
            put_packet_id(buf, AWAIT_REL, *serial, *packet_id);
        }
        Record::Rel { serial, packet_id } => put_packet_id(buf, REL, *serial, *packet_id),
        Record::Retain(message) => {
            buf.put_u8(RETAIN);
            return frame::put_message(buf, message);
        }
        Record::RetainClear { topic } => {
            buf.put_u8(RETAIN_CLEAR);
            put_str(buf, topic);
        }
        Record::Will { serial, will, protocol } => {
            buf.put_u8(WILL);
            buf.put_u64(*serial);
            buf.put_u8(*protocol);
            match will {
                None => buf.put_u8(0),
                Some((message, delay_secs)) => {
                    buf.put_u8(1);
                    buf.put_u32(*delay_secs);
                    return frame::put_message(buf, message);
                }
            }
        }
    }
    true
}

fn put_packet_id(buf: &mut BytesMut, kind: u8, serial: u64, packet_id: PacketId) {
    buf.put_u8(kind);
    buf.put_u64(serial);
    buf.put_u16(packet_id.get());
}

fn put_str(buf: &mut BytesMut, s: &str) {
    // Client ids, user names, filters and topics are MQTT strings: they fit.
    let len = s.len().min(usize::from(u16::MAX));
    buf.put_u16(len as u16);
    buf.put_slice(&s.as_bytes()[..len]);
}

/// Decodes the record at the front of `buf` (see [`Decoded`]).
pub fn decode(buf: &[u8]) -> Decoded {
    if buf.len() < HEAD {
        return Decoded::Torn;
    }
    let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > BODY_MAX {
        return Decoded::Corrupt("record length");
    }
    let Some(body) = buf.get(HEAD..HEAD + len) else { return Decoded::Torn };
    if crc32c::crc32c(body) != crc {
        return Decoded::Corrupt("record CRC");
    }
    match decode_body(Bytes::copy_from_slice(body)) {
        Some(record) => Decoded::Record(record, HEAD + len),
        None => Decoded::Corrupt("record fields"),
    }
}

fn decode_body(mut b: Bytes) -> Option<Record> {
    let kind = get_u8(&mut b)?;
    let record = match kind {
        SESSION => {
            let serial = get_u64(&mut b)?;
            let fresh = get_u8(&mut b)? != 0;
            let client_id = get_str(&mut b)?;
            let expiry = get_u64(&mut b)?;
            let offline_since_s = get_u64(&mut b)?;
            let has_username = get_u8(&mut b)? != 0;
            let username = get_str(&mut b)?;
            Record::Session {
                serial,
                fresh,
                client_id,
                expiry_secs: (expiry != u64::MAX).then_some(expiry),
                offline_since_s,
                username: has_username.then_some(username),
            }
        }
        SESSION_END => Record::SessionEnd { serial: get_u64(&mut b)? },
        SUBSCRIBE => {
            let serial = get_u64(&mut b)?;
            let filter = TopicFilter::try_from(get_str(&mut b)?.as_str()).ok()?;
            let qos = QoS::from_bits(get_u8(&mut b)?)?;
            let options = SubOptions::from_wire(qos, get_u8(&mut b)?, get_u32(&mut b)?);
            Record::Subscribe { serial, filter, options }
        }
        UNSUBSCRIBE => {
            let serial = get_u64(&mut b)?;
            let filter = TopicFilter::try_from(get_str(&mut b)?.as_str()).ok()?;
            Record::Unsubscribe { serial, filter }
        }
        MESSAGE | RETAIN => {
            let message = frame::get_message(BytesMut::from(&b[..])).ok()?;
            b.clear();
            if kind == MESSAGE {
                Record::Message(message)
            } else {
                Record::Retain(message)
            }
        }
        PENDING => {
            let serial = get_u64(&mut b)?;
            let message = MessageId(get_u128(&mut b)?);
            let qos = QoS::from_bits(get_u8(&mut b)?)?;
            let flags = get_u8(&mut b)?;
            let packet_id = PacketId::new(get_u16(&mut b)?);
            let count = usize::from(get_u16(&mut b)?);
            let sub_ids = (0..count).map(|_| get_u32(&mut b)).collect::<Option<Vec<u32>>>()?;
            let released = flags & 2 != 0;
            if released && packet_id.is_none() || packet_id.is_some() && qos == QoS::AtMostOnce {
                return None;
            }
            Record::Pending {
                serial,
                message,
                qos,
                retain: flags & 1 != 0,
                sub_ids,
                packet_id,
                released,
            }
        }
        SENT => {
            let serial = get_u64(&mut b)?;
            let message = MessageId(get_u128(&mut b)?);
            Record::Sent { serial, message, packet_id: PacketId::new(get_u16(&mut b)?)? }
        }
        RELEASED | AWAIT_REL | REL => {
            let serial = get_u64(&mut b)?;
            let packet_id = PacketId::new(get_u16(&mut b)?)?;
            match kind {
                RELEASED => Record::Released { serial, packet_id },
                AWAIT_REL => Record::AwaitRel { serial, packet_id },
                _ => Record::Rel { serial, packet_id },
            }
        }
        DONE => {
            let serial = get_u64(&mut b)?;
            Record::Done { serial, message: MessageId(get_u128(&mut b)?) }
        }
        RETAIN_CLEAR => Record::RetainClear { topic: get_str(&mut b)? },
        WILL => {
            let serial = get_u64(&mut b)?;
            let protocol = get_u8(&mut b)?;
            let will = match get_u8(&mut b)? {
                0 => None,
                1 => {
                    let delay_secs = get_u32(&mut b)?;
                    let message = frame::get_message(BytesMut::from(&b[..])).ok()?;
                    b.clear();
                    Some((message, delay_secs))
                }
                _ => return None,
            };
            Record::Will { serial, will, protocol }
        }
        _ => return None,
    };
    // Trailing bytes are not a record of this version.
    b.is_empty().then_some(record)
}

fn get_u8(b: &mut Bytes) -> Option<u8> {
    (b.remaining() >= 1).then(|| b.get_u8())
}

fn get_u16(b: &mut Bytes) -> Option<u16> {
    (b.remaining() >= 2).then(|| b.get_u16())
}

fn get_u32(b: &mut Bytes) -> Option<u32> {
    (b.remaining() >= 4).then(|| b.get_u32())
}

fn get_u64(b: &mut Bytes) -> Option<u64> {
    (b.remaining() >= 8).then(|| b.get_u64())
}

fn get_u128(b: &mut Bytes) -> Option<u128> {
    (b.remaining() >= 16).then(|| b.get_u128())
}

fn get_str(b: &mut Bytes) -> Option<String> {
    let len = usize::from(get_u16(b)?);
    if b.remaining() < len {
        return None;
    }
    String::from_utf8(b.split_to(len).to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::TopicName;

    fn message(id: u128, topic: &str, payload: Vec<u8>, qos: QoS, retain: bool) -> Message {
        Message {
            id: MessageId(id),
            topic: TopicName::try_from(topic).unwrap(),
            payload: payload.into(),
            qos,
            retain,
            publisher: None,
            properties: None,
        }
    }

    fn qos() -> impl Strategy<Value = QoS> {
        prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
    }

    fn record() -> impl Strategy<Value = Record> {
        let name = "[a-z0-9/]{1,20}";
        prop_oneof![
            (
                any::<u64>(),
                any::<bool>(),
                "[a-z0-9]{0,30}",
                any::<Option<u64>>(),
                any::<u64>(),
                any::<Option<String>>()
            )
                .prop_map(
                    |(serial, fresh, client_id, expiry, offline_since_s, username)| {
                        Record::Session {
                            serial,
                            fresh,
                            client_id,
                            expiry_secs: expiry.filter(|e| *e != u64::MAX),
                            offline_since_s,
                            username,
                        }
                    }
                ),
            any::<u64>().prop_map(|serial| Record::SessionEnd { serial }),
            (any::<u64>(), name, qos(), any::<[bool; 3]>(), 0u32..1000).prop_map(
                |(serial, filter, qos, [a, b, c], id)| Record::Subscribe {
                    serial,
                    filter: TopicFilter::try_from(filter.as_str()).unwrap(),
                    options: SubOptions {
                        qos,
                        no_local: a,
                        retain_as_published: b,
                        acl_check: c,
                        id: (id != 0).then_some(id),
                    },
                }
            ),
            (any::<u64>(), name).prop_map(|(serial, filter)| Record::Unsubscribe {
                serial,
                filter: TopicFilter::try_from(filter.as_str()).unwrap(),
            }),
            (
                any::<u128>(),
                name,
                proptest::collection::vec(any::<u8>(), 0..200),
                qos(),
                any::<bool>()
            )
                .prop_map(|(id, topic, payload, qos, retain)| Record::Message(
                    message(id, &topic, payload, qos, retain)
                )),
            (any::<u64>(), any::<u128>(), qos(), any::<bool>(), any::<Vec<u32>>(), 1u16..)
                .prop_map(|(serial, id, qos, retain, sub_ids, packet)| {
                    let packet_id =
                        (qos != QoS::AtMostOnce).then(|| PacketId::new(packet).unwrap());
                    Record::Pending {
                        serial,
                        message: MessageId(id),
                        qos,
                        retain,
                        sub_ids,
                        packet_id,
                        released: qos == QoS::ExactlyOnce && packet % 2 == 0,
                    }
                }),
            (any::<u64>(), any::<u128>(), 1u16..).prop_map(|(serial, id, p)| Record::Sent {
                serial,
                message: MessageId(id),
                packet_id: PacketId::new(p).unwrap(),
            }),
            (any::<u64>(), 1u16..).prop_map(|(serial, p)| Record::Released {
                serial,
                packet_id: PacketId::new(p).unwrap()
            }),
            (any::<u64>(), any::<u128>())
                .prop_map(|(serial, id)| Record::Done { serial, message: MessageId(id) }),
            (any::<u64>(), 1u16..).prop_map(|(serial, p)| Record::AwaitRel {
                serial,
                packet_id: PacketId::new(p).unwrap()
            }),
            (any::<u64>(), 1u16..).prop_map(|(serial, p)| Record::Rel {
                serial,
                packet_id: PacketId::new(p).unwrap()
            }),
            (any::<u128>(), name, proptest::collection::vec(any::<u8>(), 1..50)).prop_map(
                |(id, topic, payload)| Record::Retain(message(
                    id,
                    &topic,
                    payload,
                    QoS::AtLeastOnce,
                    true
                ))
            ),
            name.prop_map(|topic| Record::RetainClear { topic }),
            (any::<u64>(), name, any::<u32>(), any::<bool>(), 3u8..6).prop_map(
                |(serial, topic, delay, some, protocol)| Record::Will {
                    serial,
                    will: some.then(|| {
                        (message(0, &topic, b"gone".to_vec(), QoS::AtLeastOnce, false), delay)
                    }),
                    protocol,
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip_in_sequence(records in proptest::collection::vec(record(), 1..20)) {
            let mut buf = BytesMut::new();
            for r in &records {
                prop_assert!(put(&mut buf, r));
            }
            let mut at = 0;
            for r in &records {
                match decode(&buf[at..]) {
                    Decoded::Record(got, used) => {
                        prop_assert_eq!(&got, r);
                        at += used;
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
            prop_assert_eq!(decode(&buf[at..]), Decoded::Torn);
        }

        #[test]
        fn a_cut_record_is_torn_and_a_flipped_byte_is_caught(
            r in record(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut buf = BytesMut::new();
            prop_assert!(put(&mut buf, &r));
            let cut = cut.index(buf.len());
            prop_assert_eq!(decode(&buf[..cut]), Decoded::Torn);
            let mut flipped = buf.to_vec();
            let at = flip.index(flipped.len());
            flipped[at] ^= 1 << bit;
            // A flip in the length field may make the record look longer (torn)
            // or impossible; anywhere else the CRC catches it.
            match decode(&flipped) {
                Decoded::Record(..) => prop_assert!(false, "a flipped record decoded"),
                Decoded::Torn => prop_assert!(at < 4),
                Decoded::Corrupt(_) => {}
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }
    }
}
