//! The MQTT 3.1 / 3.1.1 wire format: [`decode`] bytes into [`Packet`]s and [`encode`]
//! them back.
//!
//! # Framing
//!
//! Every control packet starts with a fixed header [MQTT-2.2]:
//!
//! ```text
//!  bit      7     6     5     4     3     2     1     0
//!        +-----------------------+-----------------------+
//! byte 1 |  control packet type  |  flags (per type)     |
//!        +-----------------------+-----------------------+
//! byte 2 |  remaining length: 1 to 4 bytes, 7 bits each, |
//!  ...   |  least significant group first; bit 7 set     |
//! byte 5 |  means "another byte follows" (max 268435455) |
//!        +-----------------------------------------------+
//!        |  variable header and payload: exactly         |
//!        |  `remaining length` bytes                     |
//!        +-----------------------------------------------+
//!
//! PUBLISH flags:  DUP (bit 3) | QoS (bits 2-1) | RETAIN (bit 0)
//! PUBREL, SUBSCRIBE, UNSUBSCRIBE flags: 0010; all other types: 0000
//! ```
//!
//! # Decoding
//!
//! [`decode`] is incremental and zero-copy. It looks at the fixed header first and
//! rejects a bad first byte, a remaining length longer than four bytes, or a packet
//! larger than [`Limits::packet_size_max`] as soon as those bytes are buffered, before
//! any of the body arrives, so a peer cannot make the broker buffer a body it will
//! refuse. Once the whole packet is buffered it is split off the read buffer as one
//! [`Bytes`], and topics, payloads, client identifiers and passwords are slices of it:
//! no byte is copied. The flip side: a decoded PUBLISH keeps the read buffer's chunk
//! alive until its payload is dropped.
//!
//! Every rule of the wire format is enforced; the error names the rule it breaks:
//! `ProtocolViolation::clause` is the normative statement (`MQTT-3.3.1-4`), or, where
//! the specification states a rule without numbering it (e.g. the fixed remaining
//! length of PUBACK), the section that states it (`MQTT-3.4.1`). One statement is
//! numbered `MQTT-3-8.3-4` in the specification itself, and is cited so.
//!
//! After any error the connection must be closed (after a CONNACK 0x01 for
//! [`DecodeError::UnsupportedProtocolLevel`]); what is left in the buffer is then
//! irrelevant.
//!
//! Deliberately lenient, as the specification allows:
//! * a remaining length in more bytes than needed (`80 00` for 0): MQTT 3.1.1 does not
//!   forbid it (MQTT 5 does);
//! * control characters and non-characters in strings (see [`super::topic`]).
//!
//! MQTT 3.1 (`MQIsdp`, level 3) is decoded with the 3.1.1 rules: the two share the
//! layout, and the bits 3.1.1 reserves are unused in 3.1. (Mosquitto is laxer with
//! 3.1 clients, e.g. about CONNECT's reserved bit; no client is known to need it.)
//!
//! # Encoding
//!
//! [`encode`] writes what it is given and never fails. The field types make most
//! invalid packets unrepresentable; what they cannot express is listed under
//! [`encode`]'s "Panics": such a packet cannot be framed at all, and writing it
//! truncated would desynchronise the peer, so encoding it is a bug in the caller.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::packet::{
    Ack, ConnAck, Connect, ConnectReturnCode, LastWill, Packet, PacketId, ProtocolVersion, Publish,
    QoS, SubAck, SubAckCode, Subscribe, SubscribeFilter, TopicFilter, TopicName, Unsubscribe,
};
use super::{DecodeError, ProtocolViolation};

/// The largest remaining length that four bytes can carry [MQTT-2.2.3].
pub const REMAINING_LEN_MAX: usize = 268_435_455;

/// The largest packet the protocol can frame: first byte, four length bytes and the
/// largest remaining length.
pub const PACKET_SIZE_MAX: usize = 1 + 4 + REMAINING_LEN_MAX;

// Control packet types, byte 1 bits 7-4 [MQTT-2.2.1].
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

/// The fixed flags of PUBREL, SUBSCRIBE and UNSUBSCRIBE [MQTT-2.2.2-1].
const FLAGS_0010: u8 = 0b0010;

// CONNECT flags byte [MQTT-3.1.2.3].
const CONNECT_RESERVED: u8 = 0x01;
const CONNECT_CLEAN_SESSION: u8 = 0x02;
const CONNECT_WILL: u8 = 0x04;
const CONNECT_WILL_QOS_SHIFT: u8 = 3;
const CONNECT_WILL_QOS: u8 = 0x03 << CONNECT_WILL_QOS_SHIFT;
const CONNECT_WILL_RETAIN: u8 = 0x20;
const CONNECT_PASSWORD: u8 = 0x40;
const CONNECT_USERNAME: u8 = 0x80;

// PUBLISH flags, byte 1 bits 3-0 [MQTT-3.3.1].
const PUBLISH_DUP: u8 = 0x08;
const PUBLISH_QOS_SHIFT: u8 = 1;
const PUBLISH_RETAIN: u8 = 0x01;

/// The return code of a failed subscription [MQTT-3.9.3].
const SUBACK_FAILURE: u8 = 0x80;

const PROTOCOL_NAME_V311: &[u8] = b"MQTT";
const PROTOCOL_NAME_V31: &[u8] = b"MQIsdp";

/// Limits the decoder enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest packet accepted, in bytes, fixed header included. A larger one is
    /// refused with [`DecodeError::PacketTooLarge`] as soon as its fixed header is
    /// buffered. Values above [`PACKET_SIZE_MAX`] change nothing.
    ///
    /// Keep it a few bytes below [`PACKET_SIZE_MAX`]: the broker re-encodes a PUBLISH
    /// received at QoS 0 with a packet id when it delivers it at QoS 1 or 2, which
    /// adds two bytes, and a packet that no longer fits 4 length bytes cannot be
    /// encoded.
    pub packet_size_max: usize,
}

impl Default for Limits {
    /// 1 MiB.
    fn default() -> Self {
        Limits { packet_size_max: 1 << 20 }
    }
}

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)`, consuming nothing, while `buf` does not hold a whole packet;
/// call again when more bytes have arrived. On success exactly the packet's bytes are
/// consumed. Errors in the fixed header (reserved packet type or flags, a remaining
/// length longer than four bytes, a packet larger than `limits.packet_size_max`, a
/// wrong remaining length for a fixed-size packet) are returned as soon as the
/// offending bytes are buffered, without waiting for the body.
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = FixedHeader::parse(buf, limits)? else {
        return Ok(None);
    };
    if buf.len() < header.len + header.remaining {
        return Ok(None);
    }
    // Zero copy: the body becomes a `Bytes` that shares `buf`'s allocation, and every
    // field of the packet is a slice of it.
    buf.advance(header.len);
    let body = buf.split_to(header.remaining).freeze();
    decode_body(header.first, body)
}

/// What the fixed header says.
#[derive(Debug)]
struct FixedHeader {
    /// Byte 1: packet type and flags, already checked.
    first: u8,
    /// Length of the fixed header itself: 2 to 5 bytes.
    len: usize,
    /// The remaining length: bytes of variable header and payload.
    remaining: usize,
}

impl FixedHeader {
    /// Parses and checks the fixed header at the front of `buf`; `Ok(None)` while it
    /// is incomplete.
    fn parse(buf: &[u8], limits: &Limits) -> Result<Option<FixedHeader>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        check_first_byte(first)?;
        let mut remaining = 0usize;
        for i in 0..4 {
            let Some(&digit) = buf.get(1 + i) else {
                return Ok(None);
            };
            remaining |= usize::from(digit & 0x7F) << (7 * i);
            if digit & 0x80 == 0 {
                check_remaining_len(first >> 4, remaining)?;
                let len = 2 + i;
                let size = len + remaining;
                if size > limits.packet_size_max {
                    return Err(DecodeError::PacketTooLarge { size, max: limits.packet_size_max });
                }
                return Ok(Some(FixedHeader { first, len, remaining }));
            }
        }
        // The fourth length byte announced a fifth: reject it without waiting for it.
        Err(violation("MQTT-2.2.3", "remaining length longer than 4 bytes").into())
    }
}

/// Checks the packet type and the flags of byte 1.
fn check_first_byte(first: u8) -> Result<(), ProtocolViolation> {
    let flags = first & 0x0F;
    match first >> 4 {
        PUBLISH => {
            let qos = (flags >> PUBLISH_QOS_SHIFT) & 0x03;
            if qos == 3 {
                return Err(violation("MQTT-3.3.1-4", "PUBLISH with QoS 3"));
            }
            if qos == 0 && flags & PUBLISH_DUP != 0 {
                return Err(violation("MQTT-3.3.1-2", "PUBLISH with QoS 0 and DUP set"));
            }
            Ok(())
        }
        PUBREL if flags != FLAGS_0010 => {
            Err(violation("MQTT-3.6.1-1", "PUBREL fixed header flags must be 0010"))
        }
        SUBSCRIBE if flags != FLAGS_0010 => {
            Err(violation("MQTT-3.8.1-1", "SUBSCRIBE fixed header flags must be 0010"))
        }
        UNSUBSCRIBE if flags != FLAGS_0010 => {
            Err(violation("MQTT-3.10.1-1", "UNSUBSCRIBE fixed header flags must be 0010"))
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => Ok(()),
        DISCONNECT if flags != 0 => {
            Err(violation("MQTT-3.14.1-1", "DISCONNECT fixed header flags must be 0000"))
        }
        CONNECT..=DISCONNECT if flags != 0 => {
            Err(violation("MQTT-2.2.2-1", "reserved fixed header flags must be 0000"))
        }
        CONNECT..=DISCONNECT => Ok(()),
        // 0 is forbidden and 15 reserved in 3.1.1 (MQTT 5's AUTH).
        _ => Err(violation("MQTT-2.2.1", "reserved control packet type")),
    }
}

/// Checks the remaining length of the packets whose size is fixed, so that, say, a
/// PINGREQ announcing a megabyte is refused before the megabyte arrives.
fn check_remaining_len(kind: u8, remaining: usize) -> Result<(), ProtocolViolation> {
    let (expected, fail) = match kind {
        CONNACK => (2, violation("MQTT-3.2.1", "CONNACK remaining length must be 2")),
        PUBACK => (2, violation("MQTT-3.4.1", "PUBACK remaining length must be 2")),
        PUBREC => (2, violation("MQTT-3.5.1", "PUBREC remaining length must be 2")),
        PUBREL => (2, violation("MQTT-3.6.1", "PUBREL remaining length must be 2")),
        PUBCOMP => (2, violation("MQTT-3.7.1", "PUBCOMP remaining length must be 2")),
        UNSUBACK => (2, violation("MQTT-3.11.1", "UNSUBACK remaining length must be 2")),
        PINGREQ => (0, violation("MQTT-3.12.1", "PINGREQ remaining length must be 0")),
        PINGRESP => (0, violation("MQTT-3.13.1", "PINGRESP remaining length must be 0")),
        DISCONNECT => (0, violation("MQTT-3.14.1", "DISCONNECT remaining length must be 0")),
        _ => return Ok(()),
    };
    if remaining == expected {
        Ok(())
    } else {
        Err(fail)
    }
}

const fn violation(clause: &'static str, reason: &'static str) -> ProtocolViolation {
    ProtocolViolation::new(clause, reason)
}

const NO_PACKET_ID: ProtocolViolation =
    violation("MQTT-2.3.1-1", "packet identifier missing or zero");
const NOT_UTF8: ProtocolViolation = violation("MQTT-1.5.3-1", "string is not well-formed UTF-8");
const HAS_NUL: ProtocolViolation = violation("MQTT-1.5.3-2", "string contains U+0000");

/// Decodes the body of a packet whose fixed header (byte 1 `first`) is checked.
fn decode_body(first: u8, body: Bytes) -> Result<Option<Packet>, DecodeError> {
    let r = Reader(body);
    let packet = match first >> 4 {
        CONNECT => Packet::Connect(decode_connect(r)?),
        CONNACK => Packet::ConnAck(decode_connack(r)?),
        PUBLISH => Packet::Publish(decode_publish(first, r)?),
        PUBACK => Packet::PubAck(decode_ack(r)?),
        PUBREC => Packet::PubRec(decode_ack(r)?),
        PUBREL => Packet::PubRel(decode_ack(r)?),
        PUBCOMP => Packet::PubComp(decode_ack(r)?),
        SUBSCRIBE => Packet::Subscribe(decode_subscribe(r)?),
        SUBACK => Packet::SubAck(decode_suback(r)?),
        UNSUBSCRIBE => Packet::Unsubscribe(decode_unsubscribe(r)?),
        UNSUBACK => Packet::UnsubAck(decode_ack(r)?),
        // The fixed header checked that the remaining length is 0.
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => Packet::Disconnect,
        _ => {
            // check_first_byte refused every other type; answer as it does rather
            // than panic.
            return Err(violation("MQTT-2.2.1", "reserved control packet type").into());
        }
    };
    Ok(Some(packet))
}

fn decode_connect(mut r: Reader) -> Result<Connect, DecodeError> {
    const TRUNCATED: ProtocolViolation =
        violation("MQTT-3.1.4-1", "CONNECT variable header truncated");

    // The protocol name is compared as bytes: anything but the two known names is
    // refused, so there is no need to check it as UTF-8 first.
    let name = r.binary(violation("MQTT-3.1.2-1", "protocol name missing"))?;
    let level = r.u8(TRUNCATED)?;
    let protocol = match (&name[..], level) {
        (PROTOCOL_NAME_V311, 4) => ProtocolVersion::V311,
        (PROTOCOL_NAME_V31, 3) => ProtocolVersion::V31,
        // A known name at another level (e.g. MQTT 5): answer CONNACK 0x01. The rest
        // is not parsed: its layout depends on the level.
        (PROTOCOL_NAME_V311 | PROTOCOL_NAME_V31, _) => {
            return Err(DecodeError::UnsupportedProtocolLevel(level))
        }
        _ => return Err(violation("MQTT-3.1.2-1", "unknown protocol name").into()),
    };

    let flags = r.u8(TRUNCATED)?;
    if flags & CONNECT_RESERVED != 0 {
        return Err(violation("MQTT-3.1.2-3", "CONNECT reserved flag must be 0").into());
    }
    let will_flag = flags & CONNECT_WILL != 0;
    let will_qos_bits = (flags & CONNECT_WILL_QOS) >> CONNECT_WILL_QOS_SHIFT;
    let will_retain = flags & CONNECT_WILL_RETAIN != 0;
    let username_flag = flags & CONNECT_USERNAME != 0;
    let password_flag = flags & CONNECT_PASSWORD != 0;
    // Without a will, its QoS and retain bits must be 0 [MQTT-3.1.2-11]; the two
    // bits have their own, more specific statements.
    if !will_flag && will_qos_bits != 0 {
        return Err(violation("MQTT-3.1.2-13", "will QoS set without the will flag").into());
    }
    if !will_flag && will_retain {
        return Err(violation("MQTT-3.1.2-15", "will retain set without the will flag").into());
    }
    let Some(will_qos) = QoS::from_bits(will_qos_bits) else {
        return Err(violation("MQTT-3.1.2-14", "will QoS 3").into());
    };
    if password_flag && !username_flag {
        return Err(violation("MQTT-3.1.2-22", "password flag set without user name flag").into());
    }
    let keep_alive_secs = r.u16(TRUNCATED)?;

    // The payload: fields in this order, each present exactly when its flag says so
    // [MQTT-3.1.3-1].
    let client_id = r.string(violation("MQTT-3.1.3-3", "client identifier missing"))?;
    let will = if will_flag {
        const MISSING: ProtocolViolation =
            violation("MQTT-3.1.2-9", "will flag set but will topic or message missing");
        let topic = TopicName::try_from(r.utf8(MISSING)?)?;
        let payload = r.binary(MISSING)?;
        Some(LastWill { topic, payload, qos: will_qos, retain: will_retain })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string(violation("MQTT-3.1.2-19", "user name flag set but user name missing"))?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary(violation("MQTT-3.1.2-21", "password flag set but password missing"))?)
    } else {
        None
    };
    // Whatever is left is a field whose flag is 0 [MQTT-3.1.2-11], [MQTT-3.1.2-18],
    // [MQTT-3.1.2-20], or garbage; which one cannot be told apart.
    r.finish(violation("MQTT-3.1.4-1", "bytes left over after the CONNECT payload"))?;
    Ok(Connect {
        protocol,
        clean_session: flags & CONNECT_CLEAN_SESSION != 0,
        keep_alive_secs,
        client_id,
        will,
        username,
        password,
    })
}

fn decode_connack(mut r: Reader) -> Result<ConnAck, DecodeError> {
    // The fixed header checked that the remaining length is 2.
    const SHORT: ProtocolViolation = violation("MQTT-3.2.1", "CONNACK remaining length must be 2");
    let ack_flags = r.u8(SHORT)?;
    if ack_flags & 0xFE != 0 {
        return Err(violation("MQTT-3.2.2.1", "CONNACK reserved flags must be 0").into());
    }
    let session_present = ack_flags & 0x01 != 0;
    let code = match r.u8(SHORT)? {
        0 => ConnectReturnCode::Accepted,
        1 => ConnectReturnCode::UnacceptableProtocolVersion,
        2 => ConnectReturnCode::IdentifierRejected,
        3 => ConnectReturnCode::ServerUnavailable,
        4 => ConnectReturnCode::BadUsernameOrPassword,
        5 => ConnectReturnCode::NotAuthorized,
        _ => return Err(violation("MQTT-3.2.2.3", "reserved CONNACK return code").into()),
    };
    if session_present && code != ConnectReturnCode::Accepted {
        return Err(violation(
            "MQTT-3.2.2-4",
            "CONNACK refuses the connection but sets session present",
        )
        .into());
    }
    Ok(ConnAck { session_present, code })
}

fn decode_publish(first: u8, mut r: Reader) -> Result<Publish, DecodeError> {
    let Some(qos) = QoS::from_bits((first >> PUBLISH_QOS_SHIFT) & 0x03) else {
        // check_first_byte refused QoS 3 already; answer as it does rather than panic.
        return Err(violation("MQTT-3.3.1-4", "PUBLISH with QoS 3").into());
    };
    // Topic names skip `Reader::string`'s U+0000 scan: the topic validator scans for
    // it along with the wildcards.
    let topic = r.utf8(violation("MQTT-3.3.2-1", "PUBLISH topic name missing"))?;
    let topic = TopicName::try_from(topic)?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(r.packet_id()?),
    };
    Ok(Publish {
        dup: first & PUBLISH_DUP != 0,
        qos,
        retain: first & PUBLISH_RETAIN != 0,
        topic,
        packet_id,
        // The payload is whatever follows, possibly nothing [MQTT-3.3.3].
        payload: r.0,
    })
}

fn decode_ack(mut r: Reader) -> Result<Ack, DecodeError> {
    // The fixed header checked that the remaining length is 2: nothing is left over.
    Ok(Ack { packet_id: r.packet_id()? })
}

fn decode_subscribe(mut r: Reader) -> Result<Subscribe, DecodeError> {
    const TRUNCATED: ProtocolViolation =
        violation("MQTT-3.8.3", "SUBSCRIBE topic filter or requested QoS truncated");
    let packet_id = r.packet_id()?;
    let mut filters = Vec::new();
    while !r.0.is_empty() {
        let filter = TopicFilter::try_from(r.utf8(TRUNCATED)?)?;
        let options = r.u8(TRUNCATED)?;
        // Bits 7-2 are reserved and QoS 3 does not exist.
        let qos = match QoS::from_bits(options) {
            Some(qos) => qos,
            // The specification numbers this statement "3-8.3-4", sic.
            None => {
                return Err(violation(
                    "MQTT-3-8.3-4",
                    "SUBSCRIBE requested QoS byte must be 0, 1 or 2",
                )
                .into())
            }
        };
        filters.push(SubscribeFilter { filter, qos });
    }
    if filters.is_empty() {
        return Err(violation("MQTT-3.8.3-3", "SUBSCRIBE without a topic filter").into());
    }
    Ok(Subscribe { packet_id, filters })
}

fn decode_suback(mut r: Reader) -> Result<SubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let codes =
        r.0.iter()
            .map(|&code| match code {
                SUBACK_FAILURE => Ok(SubAckCode::Failure),
                _ => QoS::from_bits(code)
                    .map(SubAckCode::Granted)
                    .ok_or(violation("MQTT-3.9.3-2", "reserved SUBACK return code")),
            })
            .collect::<Result<Vec<_>, _>>()?;
    // One code per filter of the SUBSCRIBE, which has at least one.
    if codes.is_empty() {
        return Err(violation("MQTT-3.9.3", "SUBACK without a return code").into());
    }
    Ok(SubAck { packet_id, codes })
}

fn decode_unsubscribe(mut r: Reader) -> Result<Unsubscribe, DecodeError> {
    const TRUNCATED: ProtocolViolation =
        violation("MQTT-3.10.3", "UNSUBSCRIBE topic filter truncated");
    let packet_id = r.packet_id()?;
    let mut filters = Vec::new();
    while !r.0.is_empty() {
        filters.push(TopicFilter::try_from(r.utf8(TRUNCATED)?)?);
    }
    if filters.is_empty() {
        return Err(violation("MQTT-3.10.3-2", "UNSUBSCRIBE without a topic filter").into());
    }
    Ok(Unsubscribe { packet_id, filters })
}

/// Reads fields off the front of a packet body. Every read that runs past the end
/// fails with the violation the caller names: the field it wanted is missing, or a
/// length prefix overruns the remaining length.
#[derive(Debug)]
struct Reader(Bytes);

impl Reader {
    fn u8(&mut self, missing: ProtocolViolation) -> Result<u8, ProtocolViolation> {
        if self.0.is_empty() {
            return Err(missing);
        }
        Ok(self.0.get_u8())
    }

    fn u16(&mut self, missing: ProtocolViolation) -> Result<u16, ProtocolViolation> {
        if self.0.len() < 2 {
            return Err(missing);
        }
        Ok(self.0.get_u16())
    }

    fn packet_id(&mut self) -> Result<PacketId, ProtocolViolation> {
        PacketId::new(self.u16(NO_PACKET_ID)?).ok_or(NO_PACKET_ID)
    }

    /// Two length bytes, then that many bytes [MQTT-1.5.3].
    fn binary(&mut self, missing: ProtocolViolation) -> Result<Bytes, ProtocolViolation> {
        let len = usize::from(self.u16(missing.clone())?);
        if self.0.len() < len {
            return Err(missing);
        }
        Ok(self.0.split_to(len))
    }

    /// A string checked for UTF-8 only [MQTT-1.5.3-1]; the caller checks for U+0000.
    fn utf8(&mut self, missing: ProtocolViolation) -> Result<ByteString, ProtocolViolation> {
        ByteString::try_from(self.binary(missing)?).map_err(|_| NOT_UTF8)
    }

    /// A UTF-8 string without U+0000 [MQTT-1.5.3-1], [MQTT-1.5.3-2].
    fn string(&mut self, missing: ProtocolViolation) -> Result<ByteString, ProtocolViolation> {
        let s = self.utf8(missing)?;
        // A 0 byte in UTF-8 can only be U+0000.
        if s.as_bytes().contains(&0) {
            return Err(HAS_NUL);
        }
        Ok(s)
    }

    /// Fails with `leftover` unless every byte was read.
    fn finish(self, leftover: ProtocolViolation) -> Result<(), ProtocolViolation> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(leftover)
        }
    }
}

/// The number of bytes [`encode`] writes for `packet`.
pub fn encoded_len(packet: &Packet) -> usize {
    let remaining = remaining_len(packet);
    1 + remaining_len_len(remaining) + remaining
}

/// Appends `packet` to `buf`.
///
/// Writes the packet as it is: keeping the sender's MUSTs that the field types cannot
/// express is the caller's business (at least one filter in SUBSCRIBE and UNSUBSCRIBE,
/// at least one code in SUBACK, DUP clear at QoS 0, a password only with a user name,
/// session present only with return code 0); debug builds assert them. At QoS 0 a
/// PUBLISH's `packet_id` is not written (there is no field for it).
///
/// # Panics
///
/// If the packet cannot be framed, which no packet built by [`decode`] does:
/// * a string or binary field (client identifier, will payload, user name, password)
///   longer than 65535 bytes: its length prefix is 16 bits [MQTT-1.5.3];
/// * a remaining length above [`REMAINING_LEN_MAX`];
/// * a PUBLISH at QoS 1 or 2 without a packet id [MQTT-2.3.1-5].
pub fn encode(packet: &Packet, buf: &mut BytesMut) {
    let (first, remaining) = match packet {
        Packet::Publish(p) => {
            debug_assert!(!(p.dup && p.qos == QoS::AtMostOnce), "[MQTT-3.3.1-2]");
            return encode_publish(
                buf,
                p.topic.as_str(),
                &p.payload,
                p.qos,
                p.retain,
                p.dup,
                p.packet_id,
            );
        }
        Packet::Connect(_) => (CONNECT << 4, remaining_len(packet)),
        Packet::ConnAck(_) => (CONNACK << 4, 2),
        Packet::PubAck(_) => (PUBACK << 4, 2),
        Packet::PubRec(_) => (PUBREC << 4, 2),
        Packet::PubRel(_) => ((PUBREL << 4) | FLAGS_0010, 2),
        Packet::PubComp(_) => (PUBCOMP << 4, 2),
        Packet::Subscribe(_) => ((SUBSCRIBE << 4) | FLAGS_0010, remaining_len(packet)),
        Packet::SubAck(_) => (SUBACK << 4, remaining_len(packet)),
        Packet::Unsubscribe(_) => ((UNSUBSCRIBE << 4) | FLAGS_0010, remaining_len(packet)),
        Packet::UnsubAck(_) => (UNSUBACK << 4, 2),
        Packet::PingReq => (PINGREQ << 4, 0),
        Packet::PingResp => (PINGRESP << 4, 0),
        Packet::Disconnect => (DISCONNECT << 4, 0),
    };
    put_fixed_header(buf, first, remaining);
    match packet {
        Packet::Connect(c) => put_connect(buf, c),
        Packet::ConnAck(a) => {
            debug_assert!(
                !a.session_present || a.code == ConnectReturnCode::Accepted,
                "[MQTT-3.2.2-4]"
            );
            buf.put_u8(u8::from(a.session_present));
            buf.put_u8(a.code as u8);
        }
        Packet::PubAck(a)
        | Packet::PubRec(a)
        | Packet::PubRel(a)
        | Packet::PubComp(a)
        | Packet::UnsubAck(a) => buf.put_u16(a.packet_id.get()),
        Packet::Subscribe(s) => {
            debug_assert!(!s.filters.is_empty(), "[MQTT-3.8.3-3]");
            buf.put_u16(s.packet_id.get());
            for f in &s.filters {
                put_binary(buf, f.filter.as_str().as_bytes());
                buf.put_u8(f.qos as u8);
            }
        }
        Packet::SubAck(s) => {
            debug_assert!(!s.codes.is_empty(), "[MQTT-3.9.3-1]");
            buf.put_u16(s.packet_id.get());
            for code in &s.codes {
                buf.put_u8(match code {
                    SubAckCode::Granted(qos) => *qos as u8,
                    SubAckCode::Failure => SUBACK_FAILURE,
                });
            }
        }
        Packet::Unsubscribe(u) => {
            debug_assert!(!u.filters.is_empty(), "[MQTT-3.10.3-2]");
            buf.put_u16(u.packet_id.get());
            for f in &u.filters {
                put_binary(buf, f.as_str().as_bytes());
            }
        }
        Packet::Publish(_) | Packet::PingReq | Packet::PingResp | Packet::Disconnect => {}
    }
}

/// Appends a PUBLISH built from its parts, without a [`Packet`]: the broker's fan-out
/// encodes one message for many subscribers, each with its own QoS and packet id.
/// Writes the same bytes as [`encode`] of the equivalent [`Publish`].
///
/// `topic` must be a valid topic name (e.g. [`TopicName::as_str`]); it is not checked
/// again here. `packet_id` is written only at QoS 1 and 2.
///
/// # Panics
///
/// If `topic` is longer than 65535 bytes, if the remaining length exceeds
/// [`REMAINING_LEN_MAX`], or if `qos` is 1 or 2 and `packet_id` is `None`
/// [MQTT-2.3.1-5].
pub fn encode_publish(
    buf: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    dup: bool,
    packet_id: Option<PacketId>,
) {
    let mut first = (PUBLISH << 4) | ((qos as u8) << PUBLISH_QOS_SHIFT);
    if dup {
        first |= PUBLISH_DUP;
    }
    if retain {
        first |= PUBLISH_RETAIN;
    }
    put_fixed_header(buf, first, publish_remaining_len(topic, payload, qos));
    put_binary(buf, topic.as_bytes());
    if qos != QoS::AtMostOnce {
        let id = packet_id.expect("a PUBLISH at QoS 1 or 2 needs a packet id [MQTT-2.3.1-5]");
        buf.put_u16(id.get());
    }
    buf.put_slice(payload);
}

/// Reserves room for the whole packet, then writes byte 1 and the remaining length.
fn put_fixed_header(buf: &mut BytesMut, first: u8, remaining: usize) {
    assert!(
        remaining <= REMAINING_LEN_MAX,
        "remaining length {remaining} exceeds the protocol maximum {REMAINING_LEN_MAX} [MQTT-2.2.3]"
    );
    buf.reserve(1 + remaining_len_len(remaining) + remaining);
    buf.put_u8(first);
    let mut rest = remaining;
    loop {
        // Seven bits per byte, least significant first; bit 7 flags a next byte.
        let digit = (rest & 0x7F) as u8;
        rest >>= 7;
        if rest == 0 {
            buf.put_u8(digit);
            break;
        }
        buf.put_u8(digit | 0x80);
    }
}

/// Writes a 16-bit length and the bytes [MQTT-1.5.3].
fn put_binary(buf: &mut BytesMut, bytes: &[u8]) {
    let len = u16::try_from(bytes.len())
        .expect("a string or binary field is at most 65535 bytes: see encode's # Panics");
    buf.put_u16(len);
    buf.put_slice(bytes);
}

fn put_connect(buf: &mut BytesMut, c: &Connect) {
    debug_assert!(c.password.is_none() || c.username.is_some(), "[MQTT-3.1.2-22]");
    let (name, level) = match c.protocol {
        ProtocolVersion::V31 => (PROTOCOL_NAME_V31, 3),
        ProtocolVersion::V311 => (PROTOCOL_NAME_V311, 4),
    };
    put_binary(buf, name);
    buf.put_u8(level);
    let mut flags = 0;
    if c.clean_session {
        flags |= CONNECT_CLEAN_SESSION;
    }
    if let Some(will) = &c.will {
        flags |= CONNECT_WILL | ((will.qos as u8) << CONNECT_WILL_QOS_SHIFT);
        if will.retain {
            flags |= CONNECT_WILL_RETAIN;
        }
    }
    if c.username.is_some() {
        flags |= CONNECT_USERNAME;
    }
    if c.password.is_some() {
        flags |= CONNECT_PASSWORD;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive_secs);
    put_binary(buf, c.client_id.as_bytes());
    if let Some(will) = &c.will {
        put_binary(buf, will.topic.as_str().as_bytes());
        put_binary(buf, &will.payload);
    }
    if let Some(username) = &c.username {
        put_binary(buf, username.as_bytes());
    }
    if let Some(password) = &c.password {
        put_binary(buf, password);
    }
}

/// Bytes of variable header and payload.
fn remaining_len(packet: &Packet) -> usize {
    // A length-prefixed field.
    fn field(len: usize) -> usize {
        2 + len
    }
    match packet {
        Packet::Connect(c) => {
            let name = match c.protocol {
                ProtocolVersion::V31 => PROTOCOL_NAME_V31.len(),
                ProtocolVersion::V311 => PROTOCOL_NAME_V311.len(),
            };
            // name, level, flags, keep-alive, client id
            field(name)
                + 1
                + 1
                + 2
                + field(c.client_id.len())
                + c.will
                    .as_ref()
                    .map_or(0, |w| field(w.topic.as_str().len()) + field(w.payload.len()))
                + c.username.as_ref().map_or(0, |u| field(u.len()))
                + c.password.as_ref().map_or(0, |p| field(p.len()))
        }
        Packet::Publish(p) => publish_remaining_len(p.topic.as_str(), &p.payload, p.qos),
        Packet::Subscribe(s) => {
            2 + s.filters.iter().map(|f| field(f.filter.as_str().len()) + 1).sum::<usize>()
        }
        Packet::SubAck(s) => 2 + s.codes.len(),
        Packet::Unsubscribe(u) => {
            2 + u.filters.iter().map(|f| field(f.as_str().len())).sum::<usize>()
        }
        Packet::ConnAck(_)
        | Packet::PubAck(_)
        | Packet::PubRec(_)
        | Packet::PubRel(_)
        | Packet::PubComp(_)
        | Packet::UnsubAck(_) => 2,
        Packet::PingReq | Packet::PingResp | Packet::Disconnect => 0,
    }
}

fn publish_remaining_len(topic: &str, payload: &[u8], qos: QoS) -> usize {
    let packet_id = if qos == QoS::AtMostOnce { 0 } else { 2 };
    2 + topic.len() + packet_id + payload.len()
}

/// Bytes the remaining length takes on the wire.
fn remaining_len_len(remaining: usize) -> usize {
    match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Parses hex, ignoring whitespace and `|` (used to mark field boundaries).
    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> =
            s.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b'|').collect();
        assert!(digits.len() % 2 == 0, "odd number of hex digits in {s:?}");
        digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).expect("ASCII");
                u8::from_str_radix(pair, 16).expect("hex digit")
            })
            .collect()
    }

    fn encoded(packet: &Packet) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode(packet, &mut buf);
        buf.to_vec()
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
                assert_eq!(encoded(&packet), input, "{ctx}: re-encoding differs");
                assert_eq!(encoded_len(&packet), input.len(), "{ctx}");
                // Every strict prefix is incomplete and consumes nothing.
                for cut in 0..input.len() {
                    let mut prefix = BytesMut::from(&input[..cut]);
                    assert_eq!(decode(&mut prefix, limits), Ok(None), "{ctx}: prefix {cut}");
                    assert_eq!(prefix.len(), cut, "{ctx}: prefix {cut} consumed");
                }
            }
            NonCanonical(packet) => {
                assert_eq!(result, Ok(Some(packet)), "{ctx}");
                assert!(buf.is_empty(), "{ctx}: bytes left over");
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

    fn connect_v311_min() -> Connect {
        Connect {
            protocol: ProtocolVersion::V311,
            clean_session: true,
            keep_alive_secs: 60,
            client_id: ByteString::new(),
            will: None,
            username: None,
            password: None,
        }
    }

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
            }),
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"p\0\xff")),
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
            "10 0D | 0004 4D515454 05 | 02 | 003C | 00 | 0000" => UnsupportedLevel(5),
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
    fn connack_fixtures() {
        let ack =
            |session_present, code| Decodes(Packet::ConnAck(ConnAck { session_present, code }));
        check! {
            "20 02 00 00" => ack(false, ConnectReturnCode::Accepted),
            "20 02 01 00" => ack(true, ConnectReturnCode::Accepted),
            "20 02 00 01" => ack(false, ConnectReturnCode::UnacceptableProtocolVersion),
            "20 02 00 02" => ack(false, ConnectReturnCode::IdentifierRejected),
            "20 02 00 03" => ack(false, ConnectReturnCode::ServerUnavailable),
            "20 02 00 04" => ack(false, ConnectReturnCode::BadUsernameOrPassword),
            "20 02 00 05" => ack(false, ConnectReturnCode::NotAuthorized),
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
                qos,
                retain,
                topic: name(topic),
                packet_id: id.map(pid),
                payload: Bytes::from_static(payload),
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
        }
    }

    #[test]
    fn ack_fixtures() {
        let ack = |id| Ack { packet_id: pid(id) };
        check! {
            "40 02 0001" => Decodes(Packet::PubAck(ack(1))),
            "50 02 0102" => Decodes(Packet::PubRec(ack(0x0102))),
            "62 02 FFFF" => Decodes(Packet::PubRel(ack(0xFFFF))),
            "70 02 0004" => Decodes(Packet::PubComp(ack(4))),
            "B0 02 0005" => Decodes(Packet::UnsubAck(ack(5))),
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
                filters: filters
                    .iter()
                    .map(|&(f, qos)| SubscribeFilter { filter: filter(f), qos })
                    .collect(),
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
        let suback = |id, codes: Vec<SubAckCode>| {
            Decodes(Packet::SubAck(SubAck { packet_id: pid(id), codes }))
        };
        check! {
            "90 06 | 000A | 00 01 02 80" => suback(10, vec![SubAckCode::Granted(QoS::AtMostOnce), SubAckCode::Granted(QoS::AtLeastOnce), SubAckCode::Granted(QoS::ExactlyOnce), SubAckCode::Failure]),
            "90 03 | 0001 | 80" => suback(1, vec![SubAckCode::Failure]),
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
            "E0 00" => Decodes(Packet::Disconnect),
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
            "40 82 00 | 0007" => NonCanonical(Packet::PubAck(Ack { packet_id: pid(7) })),
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
        let limits = |packet_size_max| Limits { packet_size_max };
        let ok = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: name("a/b"),
            packet_id: None,
            payload: Bytes::from_static(b"hello"),
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
        assert_eq!(decode(&mut buf, &limits), Ok(Some(Packet::PubAck(Ack { packet_id: pid(1) }))));
        assert_eq!(decode(&mut buf, &limits), Ok(Some(Packet::Disconnect)));
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
        assert_eq!(p.topic.as_str().as_ptr() as usize, start + 4);
        assert_eq!(p.payload.as_ptr() as usize, start + 7);
    }

    #[test]
    fn remaining_length_boundaries() {
        // Payload sizes around each change in the number of length bytes.
        let limits = Limits { packet_size_max: PACKET_SIZE_MAX };
        for (remaining, len_bytes) in
            [(127, 1), (128, 2), (16_383, 2), (16_384, 3), (2_097_151, 3), (2_097_152, 4)]
        {
            // Topic "t" takes 3 bytes of the remaining length.
            let payload = Bytes::from(vec![0x5A; remaining - 3]);
            let packet = Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: name("t"),
                packet_id: None,
                payload,
            });
            let bytes = encoded(&packet);
            assert_eq!(bytes.len(), 1 + len_bytes + remaining);
            assert_eq!(encoded_len(&packet), bytes.len());
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(decode(&mut buf, &limits), Ok(Some(packet)));
        }
        let mut max = BytesMut::new();
        put_fixed_header(&mut max, PUBLISH << 4, REMAINING_LEN_MAX);
        assert_eq!(&max[..], &hex("30 FF FF FF 7F")[..]);
    }

    #[test]
    #[should_panic(expected = "packet id")]
    fn encoding_qos1_without_packet_id_panics() {
        encode_publish(&mut BytesMut::new(), "t", b"", QoS::AtLeastOnce, false, false, None);
    }

    #[test]
    #[should_panic(expected = "65535")]
    fn encoding_an_overlong_string_panics() {
        let connect = Connect { client_id: "x".repeat(65_536).into(), ..connect_v311_min() };
        encode(&Packet::Connect(connect), &mut BytesMut::new());
    }

    #[test]
    fn qos0_publish_drops_its_packet_id() {
        let mut with_id = BytesMut::new();
        encode_publish(&mut with_id, "t", b"x", QoS::AtMostOnce, false, false, Some(pid(9)));
        assert_eq!(&with_id[..], &hex("30 04 | 0001 74 | 78")[..]);
    }

    // ---- property tests ------------------------------------------------------

    fn qos() -> impl Strategy<Value = QoS> {
        prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
    }

    fn packet_id() -> impl Strategy<Value = PacketId> {
        (1..=u16::MAX).prop_map(pid)
    }

    /// Any UTF-8 without U+0000, up to `max` chars.
    fn text(max: usize) -> impl Strategy<Value = ByteString> {
        proptest::collection::vec(any::<char>().prop_filter("no U+0000", |c| *c != '\0'), 0..max)
            .prop_map(|chars| ByteString::from(chars.into_iter().collect::<String>()))
    }

    fn binary(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    /// Chars biased towards the ones topics care about.
    fn topic_char() -> impl Strategy<Value = char> {
        prop_oneof![
            3 => Just('/'),
            3 => proptest::char::range('a', 'c'),
            1 => Just('$'),
            2 => any::<char>(),
        ]
    }

    fn topic_name() -> BoxedStrategy<TopicName> {
        proptest::collection::vec(topic_char(), 1..12)
            .prop_filter_map("not a topic name", |chars| {
                TopicName::try_from(chars.into_iter().collect::<String>().as_str()).ok()
            })
            .boxed()
    }

    fn topic_filter() -> BoxedStrategy<TopicFilter> {
        let level = prop_oneof![
            1 => Just("+".to_owned()),
            4 => proptest::collection::vec(topic_char(), 0..4).prop_map(|chars| {
                chars.into_iter().filter(|c| *c != '/').collect::<String>()
            }),
        ];
        (proptest::collection::vec(level, 1..5), any::<bool>())
            .prop_filter_map("not a topic filter", |(levels, hash)| {
                let mut s = levels.join("/");
                if hash {
                    s.push_str("/#");
                }
                TopicFilter::try_from(s.as_str()).ok()
            })
            .boxed()
    }

    fn connect() -> impl Strategy<Value = Connect> {
        let will = (topic_name(), binary(20), qos(), any::<bool>())
            .prop_map(|(topic, payload, qos, retain)| LastWill { topic, payload, qos, retain });
        (
            prop_oneof![Just(ProtocolVersion::V31), Just(ProtocolVersion::V311)],
            any::<bool>(),
            any::<u16>(),
            text(24),
            proptest::option::of(will),
            // A password only with a user name [MQTT-3.1.2-22].
            proptest::option::of((text(12), proptest::option::of(binary(12)))),
        )
            .prop_map(
                |(protocol, clean_session, keep_alive_secs, client_id, will, credentials)| {
                    let (username, password) = match credentials {
                        Some((user, password)) => (Some(user), password),
                        None => (None, None),
                    };
                    Connect {
                        protocol,
                        clean_session,
                        keep_alive_secs,
                        client_id,
                        will,
                        username,
                        password,
                    }
                },
            )
    }

    fn publish() -> impl Strategy<Value = Publish> {
        let payload = prop_oneof![4 => binary(80), 1 => binary(400)];
        (qos(), any::<bool>(), any::<bool>(), topic_name(), packet_id(), payload).prop_map(
            |(qos, dup, retain, topic, id, payload)| {
                let at_most_once = qos == QoS::AtMostOnce;
                Publish {
                    // DUP only above QoS 0 [MQTT-3.3.1-2]; an id exactly above QoS 0.
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id: (!at_most_once).then_some(id),
                    payload,
                }
            },
        )
    }

    fn connack() -> impl Strategy<Value = ConnAck> {
        let code = prop_oneof![
            Just(ConnectReturnCode::Accepted),
            Just(ConnectReturnCode::UnacceptableProtocolVersion),
            Just(ConnectReturnCode::IdentifierRejected),
            Just(ConnectReturnCode::ServerUnavailable),
            Just(ConnectReturnCode::BadUsernameOrPassword),
            Just(ConnectReturnCode::NotAuthorized),
        ];
        (any::<bool>(), code).prop_map(|(session_present, code)| ConnAck {
            // Session present only with return code 0 [MQTT-3.2.2-4].
            session_present: session_present && code == ConnectReturnCode::Accepted,
            code,
        })
    }

    fn packet() -> impl Strategy<Value = Packet> {
        let ack = || packet_id().prop_map(|packet_id| Ack { packet_id });
        let subscribe = (
            packet_id(),
            proptest::collection::vec(
                (topic_filter(), qos()).prop_map(|(filter, qos)| SubscribeFilter { filter, qos }),
                1..5,
            ),
        )
            .prop_map(|(packet_id, filters)| Subscribe { packet_id, filters });
        let suback_code =
            prop_oneof![qos().prop_map(SubAckCode::Granted), Just(SubAckCode::Failure)];
        let suback = (packet_id(), proptest::collection::vec(suback_code, 1..8))
            .prop_map(|(packet_id, codes)| SubAck { packet_id, codes });
        let unsubscribe = (packet_id(), proptest::collection::vec(topic_filter(), 1..5))
            .prop_map(|(packet_id, filters)| Unsubscribe { packet_id, filters });
        prop_oneof![
            2 => connect().prop_map(Packet::Connect),
            1 => connack().prop_map(Packet::ConnAck),
            4 => publish().prop_map(Packet::Publish),
            1 => ack().prop_map(Packet::PubAck),
            1 => ack().prop_map(Packet::PubRec),
            1 => ack().prop_map(Packet::PubRel),
            1 => ack().prop_map(Packet::PubComp),
            2 => subscribe.prop_map(Packet::Subscribe),
            1 => suback.prop_map(Packet::SubAck),
            2 => unsubscribe.prop_map(Packet::Unsubscribe),
            1 => ack().prop_map(Packet::UnsubAck),
            1 => Just(Packet::PingReq),
            1 => Just(Packet::PingResp),
            1 => Just(Packet::Disconnect),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn round_trip(packet in packet()) {
            let mut buf = BytesMut::new();
            encode(&packet, &mut buf);
            prop_assert_eq!(encoded_len(&packet), buf.len());
            let decoded = decode(&mut buf, &Limits::default());
            prop_assert_eq!(decoded, Ok(Some(packet)));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn every_strict_prefix_is_incomplete(packet in packet()) {
            let bytes = encoded(&packet);
            for cut in 0..bytes.len() {
                let mut buf = BytesMut::from(&bytes[..cut]);
                prop_assert_eq!(decode(&mut buf, &Limits::default()), Ok(None));
                prop_assert_eq!(buf.len(), cut);
            }
        }

        #[test]
        fn split_invariance(
            packets in proptest::collection::vec(packet(), 1..8),
            chunks in proptest::collection::vec(1..40usize, 1..20),
        ) {
            let mut stream = BytesMut::new();
            for p in &packets {
                encode(p, &mut stream);
            }
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            let mut sizes = chunks.iter().cycle();
            while !stream.is_empty() {
                let size = (*sizes.next().expect("cycle of a non-empty vec")).min(stream.len());
                buf.extend_from_slice(&stream.split_to(size));
                while let Some(p) = decode(&mut buf, &Limits::default())
                    .expect("a stream of valid packets decodes")
                {
                    decoded.push(p);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(decoded, packets);
        }

        #[test]
        fn encode_publish_matches_encode(p in publish()) {
            let mut fast = BytesMut::new();
            encode_publish(&mut fast, p.topic.as_str(), &p.payload, p.qos, p.retain, p.dup, p.packet_id);
            prop_assert_eq!(&fast[..], &encoded(&Packet::Publish(p))[..]);
        }

        /// Garbage never panics the decoder, and whatever it accepts re-encodes to a
        /// packet that decodes the same.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let limits = Limits::default();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(packet)) = decode(&mut buf, &limits) {
                let mut again = BytesMut::new();
                encode(&packet, &mut again);
                prop_assert_eq!(again.len(), encoded_len(&packet));
                prop_assert_eq!(decode(&mut again, &limits), Ok(Some(packet)));
            }
        }
    }
}
