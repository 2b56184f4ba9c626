//! The MQTT 3.1 / 3.1.1 / 5.0 wire format: [`decode`] bytes into [`Packet`]s and
//! [`encode`] them back.
//!
//! # Framing
//!
//! Every control packet starts with a fixed header [MQTT-2.2] (MQTT 5: [MQTT-2.1]):
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
//! Type 15 is reserved in MQTT 3 and AUTH in MQTT 5.
//! ```
//!
//! ## MQTT 5
//!
//! MQTT 5 keeps the fixed header and adds, to most variable headers, a reason code
//! and a property block [MQTT-2.2.2]: a Property Length (a Variable Byte Integer, the
//! same 1-to-4-byte encoding as the remaining length) followed by that many bytes of
//! properties, each an identifier byte and a value whose type the identifier fixes
//! (byte, two- or four-byte integer, Variable Byte Integer, string, binary data,
//! string pair). Where the properties go:
//!
//! ```text
//! CONNECT     name "MQTT", level 5, flags, keep-alive, PROPERTIES | client id,
//!             [will PROPERTIES, will topic, will payload], [user name], [password]
//! CONNACK     ack flags, reason, PROPERTIES
//! PUBLISH     topic, [packet id], PROPERTIES | payload
//! PUBACK..    packet id, [reason, [PROPERTIES]]   (remaining length 2 / 3 / more)
//! SUBSCRIBE   packet id, PROPERTIES | (filter, options byte)+
//! SUBACK      packet id, PROPERTIES | reason+
//! UNSUBSCRIBE packet id, PROPERTIES | filter+
//! UNSUBACK    packet id, PROPERTIES | reason+
//! DISCONNECT  [reason, [PROPERTIES]]              (remaining length 0 / 1 / more)
//! AUTH        [reason, PROPERTIES]                (remaining length 0 / more)
//! ```
//!
//! Which layout applies is [`Limits::protocol`], which the connection sets once its
//! CONNECT is decoded; CONNECT itself is laid out by its own protocol level, so it is
//! decoded whatever `Limits::protocol` says. Encoding takes the protocol as an
//! argument, and writes an MQTT 3 peer only what MQTT 3 has: no reason codes on the
//! acknowledgements, no properties, and CONNACK and SUBACK codes mapped back to
//! 3.1.1 return codes (see [`encode`]).
//!
//! # Decoding
//!
//! [`decode`] is incremental and zero-copy. It looks at the fixed header first and
//! rejects a bad first byte, a remaining length longer than four bytes, or a packet
//! larger than [`Limits::packet_size_max`] as soon as those bytes are buffered, before
//! any of the body arrives, so a peer cannot make the broker buffer a body it will
//! refuse. Once the whole packet is buffered it is split off the read buffer as one
//! [`Bytes`], and topics, payloads, client identifiers, passwords and the string and
//! binary properties are slices of it: no byte is copied. The flip side: a decoded
//! PUBLISH keeps the read buffer's chunk alive until its payload is dropped.
//!
//! Every rule of the wire format is enforced; the error names the rule it breaks:
//! `ProtocolViolation::clause` is the normative statement (`MQTT-3.3.1-4`), or, where
//! the specification states a rule without numbering it (e.g. the fixed remaining
//! length of PUBACK), the section that states it (`MQTT-3.4.1`). One statement is
//! numbered `MQTT-3-8.3-4` in the 3.1.1 specification itself, and is cited so. An
//! MQTT 5 packet's errors cite the MQTT 5.0 numbering (e.g. `MQTT-1.5.4-1` for
//! ill-formed UTF-8, where 3.1.1 says `MQTT-1.5.3-1`); an MQTT 3 packet's, the 3.1.1
//! numbering.
//!
//! `ProtocolViolation::code` is the reason code of the DISCONNECT (or CONNACK) that
//! answers the error in MQTT 5: 0x81 Malformed Packet when the bytes cannot be parsed
//! as the specification lays them out (a truncated field, a reserved bit set, a
//! property not allowed in that packet, a property value overrunning its block), 0x82
//! Protocol Error when they parse but carry what the specification forbids (a
//! property given twice, a Receive Maximum of 0, a reason code the packet type does
//! not allow, No Local on a shared subscription), and 0x94 Topic Alias invalid for a
//! Topic Alias of 0, as the specification says of each [MQTT-1.2], [MQTT-3.3.4].
//!
//! After any error the connection must be closed (after a CONNACK 0x01, or 0x84 in
//! MQTT 5, for [`DecodeError::UnsupportedProtocolLevel`]); what is left in the buffer
//! is then irrelevant.
//!
//! Enforced for MQTT 5 only, since MQTT 3 has no such rule or no such field:
//! * a Variable Byte Integer (remaining length, Property Length, Subscription
//!   Identifier) in the minimum number of bytes [MQTT-1.5.5-1];
//! * the property rules of [MQTT-2.2.2]: an identifier the packet type allows
//!   (Table 2-4), no identifier twice except User Property (and Subscription
//!   Identifier in PUBLISH), the value checks each property's section states;
//! * the reason codes each packet type allows;
//! * the subscription options byte [MQTT-3.8.3.1].
//!
//! Deliberately lenient, as the specification allows:
//! * a remaining length in more bytes than needed (`80 00` for 0) in MQTT 3: MQTT
//!   3.1.1 does not forbid it (MQTT 5 does, and it is refused there);
//! * control characters and non-characters in strings (see [`super::topic`]);
//! * the payload of a PUBLISH or a will with Payload Format Indicator 1 is not checked
//!   for UTF-8: the receiver MAY check it [MQTT-3.3.2.3.2], and doing so would cost a
//!   scan of every payload;
//! * rules that depend on the direction of the packet or on the connection's state
//!   are the connection's business, not the codec's: a Subscription Identifier in a
//!   PUBLISH from a client [MQTT-3.3.4-6], a Topic Alias above the maximum, a Session
//!   Expiry Interval on a DISCONNECT from the server [MQTT-3.14.2-2], an AUTH without
//!   Authentication Method, packet ids in use.
//!
//! MQTT 3.1 (`MQIsdp`, level 3) is decoded with the 3.1.1 rules (the two share the
//! layout) except where 3.1 says otherwise: a retried PUBREL, SUBSCRIBE or
//! UNSUBSCRIBE may set DUP (3.1 section 2.1: flags `1010` as well as `0010`, where
//! 3.1.1 fixes them [MQTT-3.6.1-1]). It is encoded with the 3.1.1 rules except that
//! CONNACK's byte 1 stays 0: 3.1 reserves it, and the Session Present flag is 3.1.1's
//! [MQTT-3.2.2-2]. (Mosquitto is laxer with 3.1 clients, e.g. about CONNECT's
//! reserved bit; no client is known to need it.)
//!
//! # Encoding
//!
//! [`encode`] writes what it is given and never fails. The field types make most
//! invalid packets unrepresentable; what they cannot express is listed under
//! [`encode`]'s "Panics": such a packet cannot be framed at all, and writing it
//! truncated would desynchronise the peer, so encoding it is a bug in the caller.
//! An MQTT 5 acknowledgement, DISCONNECT or AUTH with reason Success and no
//! properties takes its shortest form (no reason, no Property Length); with another
//! reason it keeps an empty Property Length, which the spec lets it drop but some
//! clients (rumqttc 0.24) cannot parse.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PacketId, Properties, Props,
    ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeFilter,
    TopicFilter, TopicName, UnsubAck, Unsubscribe,
};
use super::{DecodeError, ProtocolViolation};

/// The largest remaining length that four bytes can carry [MQTT-2.2.3].
pub const REMAINING_LEN_MAX: usize = 268_435_455;

/// The largest packet the protocol can frame: first byte, four length bytes and the
/// largest remaining length.
pub const PACKET_SIZE_MAX: usize = 1 + 4 + REMAINING_LEN_MAX;

/// The largest value of a Variable Byte Integer [MQTT-1.5.5], as a `u32`.
const VBI_MAX: u32 = 268_435_455;

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
/// MQTT 5 only; reserved in MQTT 3.
const AUTH: u8 = 15;

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

// MQTT 5 subscription options byte [MQTT-3.8.3.1].
const OPTION_QOS: u8 = 0x03;
const OPTION_NO_LOCAL: u8 = 0x04;
const OPTION_RETAIN_AS_PUBLISHED: u8 = 0x08;
const OPTION_RETAIN_HANDLING_SHIFT: u8 = 4;
const OPTION_RESERVED: u8 = 0xC0;

/// The prefix of a shared subscription's filter [MQTT-4.8.2].
const SHARED_PREFIX: &str = "$share/";

/// The return code of a failed subscription [MQTT-3.9.3].
const SUBACK_FAILURE: u8 = 0x80;

const PROTOCOL_NAME_V311: &[u8] = b"MQTT";
const PROTOCOL_NAME_V31: &[u8] = b"MQIsdp";

/// Limits the decoder enforces, and the protocol it decodes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest packet accepted, in bytes, fixed header included. A larger one is
    /// refused with [`DecodeError::PacketTooLarge`] as soon as its fixed header is
    /// buffered. Values above [`PACKET_SIZE_MAX`] change nothing.
    ///
    /// A PUBLISH accepted at this size may grow when re-encoded for a subscriber (a
    /// packet id at QoS 1 or 2, an MQTT 5 property block): the session drops a copy
    /// that would no longer fit 4 length bytes, so a limit at [`PACKET_SIZE_MAX`]
    /// loses those messages for those subscribers (counted) rather than failing.
    pub packet_size_max: usize,
    /// The layout of every packet but CONNECT, which is decoded by its own protocol
    /// level: the connection sets this once its CONNECT is decoded.
    pub protocol: ProtocolVersion,
}

impl Default for Limits {
    /// 1 MiB, MQTT 3.1.1.
    fn default() -> Self {
        Limits { packet_size_max: 1 << 20, protocol: ProtocolVersion::V311 }
    }
}

/// Decodes one packet from the front of `buf`, in the layout of `limits.protocol`
/// (CONNECT in the layout of its own protocol level).
///
/// Returns `Ok(None)`, consuming nothing, while `buf` does not hold a whole packet;
/// call again when more bytes have arrived. On success exactly the packet's bytes are
/// consumed. Errors in the fixed header (reserved packet type or flags, a remaining
/// length longer than four bytes, or not minimal in MQTT 5, a packet larger than
/// `limits.packet_size_max`, a wrong remaining length for a fixed-size packet) are
/// returned as soon as the offending bytes are buffered, without waiting for the
/// body.
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
    let r = Reader { buf: body, v5: limits.protocol.is_v5() };
    // PUBLISH, the packet that matters for throughput, skips decode_body: its frame
    // is large (it inlines every other packet's decoder), and setting it up costs
    // more than decoding a small PUBLISH.
    if header.first >> 4 == PUBLISH {
        return if r.v5 {
            decode_publish_v5(header.first, r)
        } else {
            decode_publish(header.first, r)
        };
    }
    decode_body(header.first, header.minimal, r)
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
    /// Whether the remaining length is in the minimum number of bytes. Already
    /// checked in MQTT 5; CONNECT, whose level tells only once it is decoded, checks
    /// it then.
    minimal: bool,
}

impl FixedHeader {
    /// Parses and checks the fixed header at the front of `buf`; `Ok(None)` while it
    /// is incomplete.
    fn parse(buf: &[u8], limits: &Limits) -> Result<Option<FixedHeader>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let v5 = limits.protocol.is_v5();
        check_first_byte(first, limits.protocol)?;
        let mut remaining = 0usize;
        for i in 0..4 {
            let Some(&digit) = buf.get(1 + i) else {
                return Ok(None);
            };
            remaining |= usize::from(digit & 0x7F) << (7 * i);
            if digit & 0x80 == 0 {
                // A last byte of 0 after a first one is a group of leading zeros.
                let minimal = i == 0 || digit != 0;
                if v5 && !minimal {
                    return Err(NON_MINIMAL_VBI.into());
                }
                check_remaining_len(first >> 4, remaining, v5)?;
                let len = 2 + i;
                let size = len + remaining;
                if size > limits.packet_size_max {
                    return Err(DecodeError::PacketTooLarge { size, max: limits.packet_size_max });
                }
                return Ok(Some(FixedHeader { first, len, remaining, minimal }));
            }
        }
        // The fourth length byte announced a fifth: reject it without waiting for it.
        Err(if v5 { VBI_TOO_LONG } else { REMAINING_LEN_TOO_LONG }.into())
    }
}

/// Checks the packet type and the flags of byte 1.
fn check_first_byte(first: u8, protocol: ProtocolVersion) -> Result<(), ProtocolViolation> {
    let v5 = protocol.is_v5();
    let mut flags = first & 0x0F;
    if protocol == ProtocolVersion::V31 && matches!(first >> 4, PUBREL | SUBSCRIBE | UNSUBSCRIBE) {
        // MQTT 3.1 sets DUP on these when they are retried (3.1 section 2.1).
        flags &= !PUBLISH_DUP;
    }
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
        AUTH if v5 && flags != 0 => {
            Err(violation("MQTT-3.15.1-1", "AUTH fixed header flags must be 0000"))
        }
        AUTH if v5 => Ok(()),
        CONNECT..=DISCONNECT if flags != 0 => Err(if v5 {
            violation("MQTT-2.1.3-1", "reserved fixed header flags must be 0000")
        } else {
            violation("MQTT-2.2.2-1", "reserved fixed header flags must be 0000")
        }),
        CONNECT..=DISCONNECT => Ok(()),
        // 0 is forbidden, and 15 reserved in 3.1.1 (MQTT 5's AUTH).
        _ if v5 => Err(violation("MQTT-2.1.2", "reserved control packet type")),
        _ => Err(violation("MQTT-2.2.1", "reserved control packet type")),
    }
}

/// Checks the remaining length of the packets whose size is fixed, so that, say, a
/// PINGREQ announcing a megabyte is refused before the megabyte arrives. In MQTT 5
/// only PINGREQ and PINGRESP are fixed: the others carry optional reason codes and
/// properties.
fn check_remaining_len(kind: u8, remaining: usize, v5: bool) -> Result<(), ProtocolViolation> {
    let (expected, fail) = match kind {
        PINGREQ => (0, violation("MQTT-3.12.1", "PINGREQ remaining length must be 0")),
        PINGRESP => (0, violation("MQTT-3.13.1", "PINGRESP remaining length must be 0")),
        _ if v5 => return Ok(()),
        CONNACK => (2, violation("MQTT-3.2.1", "CONNACK remaining length must be 2")),
        PUBACK => (2, violation("MQTT-3.4.1", "PUBACK remaining length must be 2")),
        PUBREC => (2, violation("MQTT-3.5.1", "PUBREC remaining length must be 2")),
        PUBREL => (2, violation("MQTT-3.6.1", "PUBREL remaining length must be 2")),
        PUBCOMP => (2, violation("MQTT-3.7.1", "PUBCOMP remaining length must be 2")),
        UNSUBACK => (2, violation("MQTT-3.11.1", "UNSUBACK remaining length must be 2")),
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

const fn protocol_error(clause: &'static str, reason: &'static str) -> ProtocolViolation {
    ProtocolViolation::protocol_error(clause, reason)
}

const REMAINING_LEN_TOO_LONG: ProtocolViolation =
    violation("MQTT-2.2.3", "remaining length longer than 4 bytes");
const VBI_TOO_LONG: ProtocolViolation =
    violation("MQTT-1.5.5", "Variable Byte Integer longer than 4 bytes");
const NON_MINIMAL_VBI: ProtocolViolation =
    violation("MQTT-1.5.5-1", "Variable Byte Integer not in the minimum number of bytes");
const NO_PACKET_ID: ProtocolViolation =
    violation("MQTT-2.3.1-1", "packet identifier missing or zero");
const NO_PACKET_ID_V5: ProtocolViolation = violation("MQTT-2.2.1", "packet identifier missing");
const ZERO_PACKET_ID_V5: ProtocolViolation =
    protocol_error("MQTT-2.2.1-3", "packet identifier is zero");
const NOT_UTF8: ProtocolViolation = violation("MQTT-1.5.3-1", "string is not well-formed UTF-8");
const HAS_NUL: ProtocolViolation = violation("MQTT-1.5.3-2", "string contains U+0000");
const NOT_UTF8_V5: ProtocolViolation = violation("MQTT-1.5.4-1", "string is not well-formed UTF-8");
const HAS_NUL_V5: ProtocolViolation = violation("MQTT-1.5.4-2", "string contains U+0000");

/// Decodes the body of a packet whose fixed header (byte 1 `first`) is checked.
///
/// Every decoder builds its packet in place in the return value: a [`Packet`] is
/// large (the MQTT 5 properties are inline), and moving a decoded struct into it
/// copies all of it, with a store-forwarding stall on the way (the struct's small
/// fields are written byte by byte, then read back 16 bytes at a time), which costs
/// more than the rest of a small PUBLISH's decoding.
///
/// `minimal` tells whether the remaining length was in the minimum number of bytes,
/// which an MQTT 5 CONNECT must be [MQTT-1.5.5-1].
// Never inlined into decode, whose PUBLISH path must stay small (see decode).
#[inline(never)]
fn decode_body(first: u8, minimal: bool, r: Reader) -> Result<Option<Packet>, DecodeError> {
    let v5 = r.v5;
    match first >> 4 {
        // decode takes PUBLISH itself; this is for completeness.
        PUBLISH if v5 => decode_publish_v5(first, r),
        PUBLISH => decode_publish(first, r),
        PUBACK => decode_ack(r, &PUBACK_RULES, Packet::PubAck),
        PUBREC => decode_ack(r, &PUBREC_RULES, Packet::PubRec),
        PUBREL => decode_ack(r, &PUBREL_RULES, Packet::PubRel),
        PUBCOMP => decode_ack(r, &PUBCOMP_RULES, Packet::PubComp),
        CONNECT => decode_connect(r, minimal),
        CONNACK if v5 => decode_connack_v5(r),
        CONNACK => decode_connack(r),
        SUBSCRIBE => decode_subscribe(r),
        SUBACK => decode_suback(r),
        UNSUBSCRIBE => decode_unsubscribe(r),
        UNSUBACK => decode_unsuback(r),
        // The fixed header checked that the remaining length is 0.
        PINGREQ => Ok(Some(Packet::PingReq)),
        PINGRESP => Ok(Some(Packet::PingResp)),
        DISCONNECT if v5 => decode_disconnect_v5(r),
        // The fixed header checked that the remaining length is 0.
        DISCONNECT => Ok(Some(Packet::Disconnect(Disconnect::default()))),
        AUTH if v5 => decode_auth(r),
        // check_first_byte refused every other type; answer as it does rather than
        // panic.
        _ => Err(violation("MQTT-2.2.1", "reserved control packet type").into()),
    }
}

fn decode_connect(mut r: Reader, minimal_len: bool) -> Result<Option<Packet>, DecodeError> {
    const TRUNCATED: ProtocolViolation =
        violation("MQTT-3.1.4-1", "CONNECT variable header truncated");

    // The protocol name is compared as bytes: anything but the two known names is
    // refused, so there is no need to check it as UTF-8 first.
    let name = r.binary(violation("MQTT-3.1.2-1", "protocol name missing"))?;
    let level = r.u8(TRUNCATED)?;
    let protocol = match (&name[..], level) {
        (PROTOCOL_NAME_V311, 4) => ProtocolVersion::V311,
        (PROTOCOL_NAME_V311, 5) => ProtocolVersion::V5,
        (PROTOCOL_NAME_V31, 3) => ProtocolVersion::V31,
        // A known name at another level (e.g. MQTT 6): answer CONNACK 0x01 (0x84).
        // The rest is not parsed: its layout depends on the level.
        (PROTOCOL_NAME_V311 | PROTOCOL_NAME_V31, _) => {
            return Err(DecodeError::UnsupportedProtocolLevel(level))
        }
        _ => return Err(violation("MQTT-3.1.2-1", "unknown protocol name").into()),
    };
    // CONNECT's own level decides its layout and the numbering its errors cite,
    // whatever the connection's limits say.
    let v5 = protocol.is_v5();
    r.v5 = v5;
    // Limits::protocol was not MQTT 5 (a first CONNECT), so the fixed header could
    // not refuse this.
    if v5 && !minimal_len {
        return Err(NON_MINIMAL_VBI.into());
    }

    // The flag rules below have the same numbers in 3.1.1 and 5.0.
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
    // MQTT 5 allows a password without a user name (section 3.1.2.9).
    if !v5 && password_flag && !username_flag {
        return Err(violation("MQTT-3.1.2-22", "password flag set without user name flag").into());
    }
    let keep_alive_secs = r.u16(TRUNCATED)?;
    let properties: Props = if v5 {
        let properties = decode_properties(&mut r, &CONNECT_PROPERTIES)?;
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(protocol_error(
                "MQTT-3.1.2.11.10",
                "Authentication Data without Authentication Method",
            )
            .into());
        }
        properties.into()
    } else {
        Props::default()
    };

    // The payload: fields in this order, each present exactly when its flag says so
    // [MQTT-3.1.3-1].
    let client_id = r.string(violation("MQTT-3.1.3-3", "client identifier missing"))?;
    let will = if will_flag {
        const MISSING: ProtocolViolation =
            violation("MQTT-3.1.2-9", "will flag set but will topic or message missing");
        let properties =
            if v5 { decode_properties(&mut r, &WILL_PROPERTIES)?.into() } else { Props::default() };
        let topic = topic_name(r.utf8(MISSING)?, v5)?;
        let payload = r.binary(MISSING)?;
        Some(LastWill { topic, payload, qos: will_qos, retain: will_retain, properties })
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
    Ok(Some(Packet::Connect(Connect {
        protocol,
        clean_session: flags & CONNECT_CLEAN_SESSION != 0,
        keep_alive_secs,
        client_id,
        will,
        username,
        password,
        properties,
    })))
}

/// MQTT 3 CONNACK: the return code is mapped to its MQTT 5 reason code.
fn decode_connack(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    // The fixed header checked that the remaining length is 2.
    const SHORT: ProtocolViolation = violation("MQTT-3.2.1", "CONNACK remaining length must be 2");
    let ack_flags = r.u8(SHORT)?;
    if ack_flags & 0xFE != 0 {
        return Err(violation("MQTT-3.2.2.1", "CONNACK reserved flags must be 0").into());
    }
    let session_present = ack_flags & 0x01 != 0;
    let reason = match r.u8(SHORT)? {
        0 => ReasonCode::SUCCESS,
        1 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        2 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        3 => ReasonCode::SERVER_UNAVAILABLE,
        4 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        5 => ReasonCode::NOT_AUTHORIZED,
        _ => return Err(violation("MQTT-3.2.2.3", "reserved CONNACK return code").into()),
    };
    if session_present && reason != ReasonCode::SUCCESS {
        return Err(violation(
            "MQTT-3.2.2-4",
            "CONNACK refuses the connection but sets session present",
        )
        .into());
    }
    Ok(Some(Packet::ConnAck(ConnAck { session_present, reason, properties: Props::default() })))
}

fn decode_connack_v5(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    const SHORT: ProtocolViolation = violation("MQTT-3.2.2", "CONNACK variable header truncated");
    let ack_flags = r.u8(SHORT)?;
    if ack_flags & 0xFE != 0 {
        return Err(violation("MQTT-3.2.2-1", "CONNACK reserved flags must be 0").into());
    }
    let session_present = ack_flags & 0x01 != 0;
    const BAD_REASON: ProtocolViolation =
        protocol_error("MQTT-3.2.2-8", "reason code not allowed in CONNACK");
    let reason = r.reason(SHORT, &CONNACK_REASONS, &BAD_REASON)?;
    if session_present && reason != ReasonCode::SUCCESS {
        return Err(protocol_error(
            "MQTT-3.2.2-6",
            "CONNACK refuses the connection but sets session present",
        )
        .into());
    }
    let properties = decode_properties(&mut r, &CONNACK_PROPERTIES)?;
    r.finish(violation("MQTT-3.2.3", "CONNACK has no payload"))?;
    Ok(Some(Packet::ConnAck(ConnAck { session_present, reason, properties: properties.into() })))
}

/// MQTT 3 PUBLISH, built in place in the return value (see [`decode_body`]).
fn decode_publish(first: u8, mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    let Some(qos) = QoS::from_bits((first >> PUBLISH_QOS_SHIFT) & 0x03) else {
        // check_first_byte refused QoS 3 already; answer as it does rather than panic.
        return Err(violation("MQTT-3.3.1-4", "PUBLISH with QoS 3").into());
    };
    let topic = r.binary(violation("MQTT-3.3.2-1", "PUBLISH topic name missing"))?;
    // The packet id is read before the topic is checked, and its error raised after
    // the topic's, as if read in order. The reason is speed: the reader's last write
    // (consuming the packet id) then has the topic check's time to reach the cache
    // before the payload is read back from the reader; read back at once, it stalls
    // store forwarding, which costs a QoS 1 PUBLISH a few percent.
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(r.packet_id()),
    };
    // Topic names skip `Reader::string`'s U+0000 scan: the topic validator scans for
    // it along with the wildcards.
    let topic = ByteString::try_from(topic).map_err(|_| NOT_UTF8)?;
    let topic = TopicName::try_from(topic)?;
    let packet_id = packet_id.transpose()?;
    Ok(Some(Packet::Publish(Publish {
        dup: first & PUBLISH_DUP != 0,
        qos,
        retain: first & PUBLISH_RETAIN != 0,
        topic,
        packet_id,
        // The payload is whatever follows, possibly nothing [MQTT-3.3.3].
        payload: r.buf,
        properties: None,
    })))
}

/// MQTT 5 PUBLISH, built in place in the return value (see [`decode_body`]).
fn decode_publish_v5(first: u8, mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    let Some(qos) = QoS::from_bits((first >> PUBLISH_QOS_SHIFT) & 0x03) else {
        return Err(violation("MQTT-3.3.1-4", "PUBLISH with QoS 3").into());
    };
    let topic = r.utf8(violation("MQTT-3.3.2-1", "PUBLISH topic name missing"))?;
    // An empty topic is valid only with a Topic Alias, which the properties after the
    // packet id tell.
    let topic = if topic.is_empty() { None } else { Some(topic_name(topic, true)?) };
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(r.packet_id()?),
    };
    let properties = decode_optional_properties(&mut r, &PUBLISH_PROPERTIES)?;
    let topic = match topic {
        Some(topic) => topic,
        None if properties.as_ref().is_some_and(|p| p.topic_alias.is_some()) => TopicName::empty(),
        None => {
            return Err(protocol_error(
                "MQTT-3.3.2.1",
                "PUBLISH with an empty topic name and no Topic Alias",
            )
            .into())
        }
    };
    Ok(Some(Packet::Publish(Publish {
        dup: first & PUBLISH_DUP != 0,
        qos,
        retain: first & PUBLISH_RETAIN != 0,
        topic,
        packet_id,
        payload: r.buf,
        properties,
    })))
}

/// What tells the four acknowledgements of a PUBLISH apart in MQTT 5.
struct AckRules {
    reasons: ReasonSet,
    bad_reason: ProtocolViolation,
    properties: PropertySet,
    leftover: ProtocolViolation,
}

const PUBACK_RULES: AckRules = AckRules {
    reasons: PUBACK_REASONS,
    bad_reason: protocol_error("MQTT-3.4.2-1", "reason code not allowed in PUBACK"),
    properties: PropertySet::new(
        "property not allowed in PUBACK",
        false,
        &[(REASON_STRING, "MQTT-3.4.2.2.2"), (USER_PROPERTY, "MQTT-3.4.2.2.3")],
    ),
    leftover: violation("MQTT-3.4.3", "PUBACK has no payload"),
};
const PUBREC_RULES: AckRules = AckRules {
    // PUBREC allows the same codes as PUBACK (section 3.5.2.1).
    reasons: PUBACK_REASONS,
    bad_reason: protocol_error("MQTT-3.5.2-1", "reason code not allowed in PUBREC"),
    properties: PropertySet::new(
        "property not allowed in PUBREC",
        false,
        &[(REASON_STRING, "MQTT-3.5.2.2.2"), (USER_PROPERTY, "MQTT-3.5.2.2.3")],
    ),
    leftover: violation("MQTT-3.5.3", "PUBREC has no payload"),
};
const PUBREL_RULES: AckRules = AckRules {
    reasons: PUBREL_REASONS,
    bad_reason: protocol_error("MQTT-3.6.2-1", "reason code not allowed in PUBREL"),
    properties: PropertySet::new(
        "property not allowed in PUBREL",
        false,
        &[(REASON_STRING, "MQTT-3.6.2.2.2"), (USER_PROPERTY, "MQTT-3.6.2.2.3")],
    ),
    leftover: violation("MQTT-3.6.3", "PUBREL has no payload"),
};
const PUBCOMP_RULES: AckRules = AckRules {
    // PUBCOMP allows the same codes as PUBREL (section 3.7.2.1).
    reasons: PUBREL_REASONS,
    bad_reason: protocol_error("MQTT-3.7.2-1", "reason code not allowed in PUBCOMP"),
    properties: PropertySet::new(
        "property not allowed in PUBCOMP",
        false,
        &[(REASON_STRING, "MQTT-3.7.2.2.2"), (USER_PROPERTY, "MQTT-3.7.2.2.3")],
    ),
    leftover: violation("MQTT-3.7.3", "PUBCOMP has no payload"),
};

/// PUBACK, PUBREC, PUBREL, PUBCOMP, built in place as `packet` (see
/// [`decode_body`]). In MQTT 5 the reason code and the properties are optional: a
/// remaining length of 2 means Success without properties, 3 a reason code without
/// properties [MQTT-3.4.2.1], [MQTT-3.4.2.2.1].
fn decode_ack(
    mut r: Reader,
    rules: &AckRules,
    packet: fn(Ack) -> Packet,
) -> Result<Option<Packet>, DecodeError> {
    // In MQTT 3 the fixed header checked that the remaining length is 2: nothing is
    // left over.
    let packet_id = r.packet_id()?;
    if r.buf.is_empty() {
        return Ok(Some(packet(Ack::new(packet_id))));
    }
    // Not empty, so this is MQTT 5: MQTT 3 acks are 2 bytes exactly.
    let reason = r.reason(NOT_REACHED, &rules.reasons, &rules.bad_reason)?;
    let properties = if r.buf.is_empty() {
        Properties::default()
    } else {
        decode_properties(&mut r, &rules.properties)?
    };
    if !r.buf.is_empty() {
        return Err(rules.leftover.clone().into());
    }
    Ok(Some(packet(Ack { packet_id, reason, properties: properties.into() })))
}

/// Never raised: the caller checked that the byte is there.
const NOT_REACHED: ProtocolViolation = violation("MQTT-2.2", "truncated");

fn decode_subscribe(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    if r.v5 {
        return decode_subscribe_v5(r);
    }
    const TRUNCATED: ProtocolViolation =
        violation("MQTT-3.8.3", "SUBSCRIBE topic filter or requested QoS truncated");
    let packet_id = r.packet_id()?;
    let mut filters = Vec::new();
    while !r.buf.is_empty() {
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
        filters.push(SubscribeFilter::new(filter, qos));
    }
    if filters.is_empty() {
        return Err(violation("MQTT-3.8.3-3", "SUBSCRIBE without a topic filter").into());
    }
    Ok(Some(Packet::Subscribe(Subscribe { packet_id, filters, properties: Props::default() })))
}

fn decode_subscribe_v5(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    const TRUNCATED: ProtocolViolation =
        violation("MQTT-3.8.3", "SUBSCRIBE topic filter or subscription options truncated");
    let packet_id = r.packet_id()?;
    let properties = decode_properties(&mut r, &SUBSCRIBE_PROPERTIES)?;
    let mut filters = Vec::new();
    while !r.buf.is_empty() {
        let filter = topic_filter(r.utf8(TRUNCATED)?, true)?;
        let options = r.u8(TRUNCATED)?;
        if options & OPTION_RESERVED != 0 {
            return Err(violation(
                "MQTT-3.8.3-5",
                "SUBSCRIBE subscription options reserved bits must be 0",
            )
            .into());
        }
        let Some(qos) = QoS::from_bits(options & OPTION_QOS) else {
            return Err(protocol_error("MQTT-3.8.3.1", "SUBSCRIBE Maximum QoS 3").into());
        };
        let retain_handling = match options >> OPTION_RETAIN_HANDLING_SHIFT {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(protocol_error("MQTT-3.8.3.1", "SUBSCRIBE Retain Handling 3").into()),
        };
        let no_local = options & OPTION_NO_LOCAL != 0;
        // The filter shows whether the subscription is shared, so the codec can check
        // this rule rather than leave it to the connection.
        if no_local && filter.as_str().starts_with(SHARED_PREFIX) {
            return Err(
                protocol_error("MQTT-3.8.3-4", "No Local set on a shared subscription").into()
            );
        }
        filters.push(SubscribeFilter {
            filter,
            qos,
            no_local,
            retain_as_published: options & OPTION_RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        });
    }
    if filters.is_empty() {
        return Err(protocol_error("MQTT-3.8.3-2", "SUBSCRIBE without a topic filter").into());
    }
    Ok(Some(Packet::Subscribe(Subscribe { packet_id, filters, properties: properties.into() })))
}

fn decode_suback(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties =
        if r.v5 { decode_properties(&mut r, &SUBACK_PROPERTIES)? } else { Properties::default() };
    let v5 = r.v5;
    let codes = r
        .buf
        .iter()
        .map(|&code| {
            if v5 {
                if SUBACK_REASONS.contains(code) {
                    Ok(ReasonCode(code))
                } else {
                    Err(protocol_error("MQTT-3.9.3-2", "reason code not allowed in SUBACK"))
                }
            } else if code == SUBACK_FAILURE || QoS::from_bits(code).is_some() {
                // 3.1.1's return codes are MQTT 5's reason codes of the same value.
                Ok(ReasonCode(code))
            } else {
                Err(violation("MQTT-3.9.3-2", "reserved SUBACK return code"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One code per filter of the SUBSCRIBE, which has at least one.
    if codes.is_empty() {
        return Err(violation("MQTT-3.9.3", "SUBACK without a return code").into());
    }
    Ok(Some(Packet::SubAck(SubAck { packet_id, codes, properties: properties.into() })))
}

fn decode_unsubscribe(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    const TRUNCATED: ProtocolViolation =
        violation("MQTT-3.10.3", "UNSUBSCRIBE topic filter truncated");
    let packet_id = r.packet_id()?;
    let v5 = r.v5;
    let properties: Props = if v5 {
        decode_properties(&mut r, &UNSUBSCRIBE_PROPERTIES)?.into()
    } else {
        Props::default()
    };
    let mut filters = Vec::new();
    while !r.buf.is_empty() {
        filters.push(topic_filter(r.utf8(TRUNCATED)?, v5)?);
    }
    if filters.is_empty() {
        return Err(if v5 {
            protocol_error("MQTT-3.10.3-2", "UNSUBSCRIBE without a topic filter")
        } else {
            violation("MQTT-3.10.3-2", "UNSUBSCRIBE without a topic filter")
        }
        .into());
    }
    Ok(Some(Packet::Unsubscribe(Unsubscribe { packet_id, filters, properties })))
}

/// UNSUBACK: the packet id alone in MQTT 3 (the fixed header checked the length);
/// properties and one reason code per filter in MQTT 5.
fn decode_unsuback(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    let packet_id = r.packet_id()?;
    if !r.v5 {
        return Ok(Some(Packet::UnsubAck(UnsubAck {
            packet_id,
            codes: Vec::new(),
            properties: Props::default(),
        })));
    }
    let properties = decode_properties(&mut r, &UNSUBACK_PROPERTIES)?;
    let codes = r
        .buf
        .iter()
        .map(|&code| {
            if UNSUBACK_REASONS.contains(code) {
                Ok(ReasonCode(code))
            } else {
                Err(protocol_error("MQTT-3.11.3-2", "reason code not allowed in UNSUBACK"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One code per filter of the UNSUBSCRIBE, which has at least one.
    if codes.is_empty() {
        return Err(violation("MQTT-3.11.3", "UNSUBACK without a reason code").into());
    }
    Ok(Some(Packet::UnsubAck(UnsubAck { packet_id, codes, properties: properties.into() })))
}

/// MQTT 5 DISCONNECT: remaining length 0 means Normal disconnection (0x00) without
/// properties, 1 a reason code without properties [MQTT-3.14.2.1], [MQTT-3.14.2.2.1].
fn decode_disconnect_v5(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    if r.buf.is_empty() {
        return Ok(Some(Packet::Disconnect(Disconnect::default())));
    }
    const BAD_REASON: ProtocolViolation =
        protocol_error("MQTT-3.14.2-1", "reason code not allowed in DISCONNECT");
    let reason = r.reason(NOT_REACHED, &DISCONNECT_REASONS, &BAD_REASON)?;
    let properties = if r.buf.is_empty() {
        Properties::default()
    } else {
        decode_properties(&mut r, &DISCONNECT_PROPERTIES)?
    };
    r.finish(violation("MQTT-3.14.3", "DISCONNECT has no payload"))?;
    Ok(Some(Packet::Disconnect(Disconnect { reason, properties: properties.into() })))
}

/// AUTH: remaining length 0 means Success without properties [MQTT-3.15.2.1]; else a
/// reason code and the properties. Unlike DISCONNECT's, AUTH's Property Length may
/// only be omitted together with the reason code (section 3.15.2.2.1).
fn decode_auth(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    if r.buf.is_empty() {
        return Ok(Some(Packet::Auth(Auth {
            reason: ReasonCode::SUCCESS,
            properties: Props::default(),
        })));
    }
    const BAD_REASON: ProtocolViolation =
        protocol_error("MQTT-3.15.2-1", "reason code not allowed in AUTH");
    let reason = r.reason(NOT_REACHED, &AUTH_REASONS, &BAD_REASON)?;
    let properties = decode_properties(&mut r, &AUTH_PROPERTIES)?;
    r.finish(violation("MQTT-3.15.3", "AUTH has no payload"))?;
    Ok(Some(Packet::Auth(Auth { reason, properties: properties.into() })))
}

/// A topic name; in MQTT 5 the error cites the 5.0 numbering of section 4.7.
fn topic_name(s: ByteString, v5: bool) -> Result<TopicName, ProtocolViolation> {
    TopicName::try_from(s).map_err(|e| if v5 { topic_clause_v5(e) } else { e })
}

/// A topic filter; in MQTT 5 the error cites the 5.0 numbering of section 4.7.
fn topic_filter(s: ByteString, v5: bool) -> Result<TopicFilter, ProtocolViolation> {
    TopicFilter::try_from(s).map_err(|e| if v5 { topic_clause_v5(e) } else { e })
}

/// Renumbers a topic validation error (which [`super::topic`] raises with the 3.1.1
/// numbers) to MQTT 5.0's numbers: 5.0 moved the wildcard rules of section 4.7.1 by
/// one statement; those of 4.7.3 kept their numbers.
fn topic_clause_v5(v: ProtocolViolation) -> ProtocolViolation {
    let clause = match v.clause {
        // Wildcards in a topic name.
        "MQTT-4.7.1-1" => "MQTT-4.7.0-1",
        // `#` not alone in the last level.
        "MQTT-4.7.1-2" => "MQTT-4.7.1-1",
        // `+` not alone in its level.
        "MQTT-4.7.1-3" => "MQTT-4.7.1-2",
        other => other,
    };
    ProtocolViolation { clause, ..v }
}

/// Reads fields off the front of a packet body. Every read that runs past the end
/// fails with the violation the caller names: the field it wanted is missing, or a
/// length prefix overruns the remaining length.
#[derive(Debug)]
struct Reader {
    buf: Bytes,
    /// MQTT 5: string errors cite the 5.0 numbering, packet ids of 0 are a Protocol
    /// Error.
    v5: bool,
}

impl Reader {
    fn u8(&mut self, missing: ProtocolViolation) -> Result<u8, ProtocolViolation> {
        if self.buf.is_empty() {
            return Err(missing);
        }
        Ok(self.buf.get_u8())
    }

    fn u16(&mut self, missing: ProtocolViolation) -> Result<u16, ProtocolViolation> {
        if self.buf.len() < 2 {
            return Err(missing);
        }
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self, missing: ProtocolViolation) -> Result<u32, ProtocolViolation> {
        if self.buf.len() < 4 {
            return Err(missing);
        }
        Ok(self.buf.get_u32())
    }

    /// A Variable Byte Integer in at most 4 bytes and in the minimum number of bytes
    /// [MQTT-1.5.5-1] (only MQTT 5 has them outside the fixed header).
    fn vbi(&mut self, missing: ProtocolViolation) -> Result<u32, ProtocolViolation> {
        let mut value = 0u32;
        for i in 0..4 {
            let Some(&digit) = self.buf.get(i) else {
                return Err(missing);
            };
            value |= u32::from(digit & 0x7F) << (7 * i);
            if digit & 0x80 == 0 {
                if i > 0 && digit == 0 {
                    return Err(NON_MINIMAL_VBI);
                }
                self.buf.advance(i + 1);
                return Ok(value);
            }
        }
        Err(VBI_TOO_LONG)
    }

    fn packet_id(&mut self) -> Result<PacketId, ProtocolViolation> {
        if self.v5 {
            PacketId::new(self.u16(NO_PACKET_ID_V5)?).ok_or(ZERO_PACKET_ID_V5)
        } else {
            PacketId::new(self.u16(NO_PACKET_ID)?).ok_or(NO_PACKET_ID)
        }
    }

    /// A reason code byte, which must be one of `allowed`.
    fn reason(
        &mut self,
        missing: ProtocolViolation,
        allowed: &ReasonSet,
        refused: &ProtocolViolation,
    ) -> Result<ReasonCode, ProtocolViolation> {
        let code = self.u8(missing)?;
        if allowed.contains(code) {
            Ok(ReasonCode(code))
        } else {
            Err(refused.clone())
        }
    }

    /// Two length bytes, then that many bytes [MQTT-1.5.3].
    fn binary(&mut self, missing: ProtocolViolation) -> Result<Bytes, ProtocolViolation> {
        let len = usize::from(self.u16(missing.clone())?);
        if self.buf.len() < len {
            return Err(missing);
        }
        Ok(self.buf.split_to(len))
    }

    /// A string checked for UTF-8 only [MQTT-1.5.3-1]; the caller checks for U+0000.
    fn utf8(&mut self, missing: ProtocolViolation) -> Result<ByteString, ProtocolViolation> {
        let v5 = self.v5;
        ByteString::try_from(self.binary(missing)?)
            .map_err(|_| if v5 { NOT_UTF8_V5 } else { NOT_UTF8 })
    }

    /// A UTF-8 string without U+0000 [MQTT-1.5.3-1], [MQTT-1.5.3-2].
    fn string(&mut self, missing: ProtocolViolation) -> Result<ByteString, ProtocolViolation> {
        let s = self.utf8(missing)?;
        // A 0 byte in UTF-8 can only be U+0000.
        if s.as_bytes().contains(&0) {
            return Err(if self.v5 { HAS_NUL_V5 } else { HAS_NUL });
        }
        Ok(s)
    }

    /// Fails with `leftover` unless every byte was read.
    fn finish(self, leftover: ProtocolViolation) -> Result<(), ProtocolViolation> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(leftover)
        }
    }
}

/// A set of reason codes, one bit per value.
struct ReasonSet([u64; 4]);

impl ReasonSet {
    const fn of(codes: &[u8]) -> ReasonSet {
        let mut bits = [0u64; 4];
        let mut i = 0;
        while i < codes.len() {
            let code = codes[i];
            bits[(code >> 6) as usize] |= 1 << (code & 63);
            i += 1;
        }
        ReasonSet(bits)
    }

    fn contains(&self, code: u8) -> bool {
        self.0[usize::from(code >> 6)] & (1 << (code & 63)) != 0
    }
}

// The reason codes each packet type may carry: Tables 3-1, 3-4 (PUBACK and PUBREC),
// 3-6 (PUBREL and PUBCOMP), 3-8, 3-9, 3-10 and 3-11 of MQTT 5.0.
const CONNACK_REASONS: ReasonSet = ReasonSet::of(&[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
]);
const PUBACK_REASONS: ReasonSet =
    ReasonSet::of(&[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]);
const PUBREL_REASONS: ReasonSet = ReasonSet::of(&[0x00, 0x92]);
const SUBACK_REASONS: ReasonSet =
    ReasonSet::of(&[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2]);
const UNSUBACK_REASONS: ReasonSet = ReasonSet::of(&[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]);
const DISCONNECT_REASONS: ReasonSet = ReasonSet::of(&[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
]);
const AUTH_REASONS: ReasonSet = ReasonSet::of(&[0x00, 0x18, 0x19]);

// ---- MQTT 5 properties [MQTT-2.2.2] ---------------------------------------------

/// Declares the property identifiers (Table 2-4), and for each a static "included
/// more than once" message, since a [`ProtocolViolation`]'s reason is `&'static str`.
macro_rules! property_ids {
    ($($name:ident = $id:expr, $text:expr;)*) => {
        $(const $name: u8 = $id;)*

        /// The error message for an identifier given twice.
        fn duplicate_reason(id: u8) -> &'static str {
            match id {
                $($id => concat!($text, " included more than once"),)*
                _ => "property included more than once",
            }
        }
    };
}

property_ids! {
    PAYLOAD_FORMAT_INDICATOR = 0x01, "Payload Format Indicator";
    MESSAGE_EXPIRY_INTERVAL = 0x02, "Message Expiry Interval";
    CONTENT_TYPE = 0x03, "Content Type";
    RESPONSE_TOPIC = 0x08, "Response Topic";
    CORRELATION_DATA = 0x09, "Correlation Data";
    SUBSCRIPTION_IDENTIFIER = 0x0B, "Subscription Identifier";
    SESSION_EXPIRY_INTERVAL = 0x11, "Session Expiry Interval";
    ASSIGNED_CLIENT_IDENTIFIER = 0x12, "Assigned Client Identifier";
    SERVER_KEEP_ALIVE = 0x13, "Server Keep Alive";
    AUTHENTICATION_METHOD = 0x15, "Authentication Method";
    AUTHENTICATION_DATA = 0x16, "Authentication Data";
    REQUEST_PROBLEM_INFORMATION = 0x17, "Request Problem Information";
    WILL_DELAY_INTERVAL = 0x18, "Will Delay Interval";
    REQUEST_RESPONSE_INFORMATION = 0x19, "Request Response Information";
    RESPONSE_INFORMATION = 0x1A, "Response Information";
    SERVER_REFERENCE = 0x1C, "Server Reference";
    REASON_STRING = 0x1F, "Reason String";
    RECEIVE_MAXIMUM = 0x21, "Receive Maximum";
    TOPIC_ALIAS_MAXIMUM = 0x22, "Topic Alias Maximum";
    TOPIC_ALIAS = 0x23, "Topic Alias";
    MAXIMUM_QOS = 0x24, "Maximum QoS";
    RETAIN_AVAILABLE = 0x25, "Retain Available";
    USER_PROPERTY = 0x26, "User Property";
    MAXIMUM_PACKET_SIZE = 0x27, "Maximum Packet Size";
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28, "Wildcard Subscription Available";
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29, "Subscription Identifier Available";
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A, "Shared Subscription Available";
}

/// The property identifiers one packet type allows (a column of Table 2-4), each with
/// the section that describes it in that packet: the clause its errors cite.
struct PropertySet {
    /// Bit `id` set for each allowed identifier (all are below 64).
    allowed: u64,
    /// Whether Subscription Identifier may repeat (PUBLISH only [MQTT-3.3.4-4]).
    many_subscription_ids: bool,
    sections: &'static [(u8, &'static str)],
    /// Raised for an identifier the packet does not allow.
    not_allowed: ProtocolViolation,
}

impl PropertySet {
    const fn new(
        not_allowed: &'static str,
        many_subscription_ids: bool,
        sections: &'static [(u8, &'static str)],
    ) -> PropertySet {
        let mut allowed = 0u64;
        let mut i = 0;
        while i < sections.len() {
            allowed |= 1 << sections[i].0;
            i += 1;
        }
        PropertySet {
            allowed,
            many_subscription_ids,
            sections,
            // "A Control Packet which contains an Identifier which is not valid for its
            // packet type ... is a Malformed Packet" (section 2.2.2.2).
            not_allowed: violation("MQTT-2.2.2.2", not_allowed),
        }
    }

    fn allows(&self, id: u8) -> bool {
        id < 64 && self.allowed & (1 << id) != 0
    }

    /// The section that describes property `id` in this packet type.
    fn section(&self, id: u8) -> &'static str {
        self.sections.iter().find(|(i, _)| *i == id).map_or("MQTT-2.2.2.2", |(_, s)| s)
    }

    /// A value the section of property `id` calls a Protocol Error.
    fn bad_value(&self, id: u8, reason: &'static str) -> ProtocolViolation {
        protocol_error(self.section(id), reason)
    }
}

const CONNECT_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in CONNECT",
    false,
    &[
        (SESSION_EXPIRY_INTERVAL, "MQTT-3.1.2.11.2"),
        (RECEIVE_MAXIMUM, "MQTT-3.1.2.11.3"),
        (MAXIMUM_PACKET_SIZE, "MQTT-3.1.2.11.4"),
        (TOPIC_ALIAS_MAXIMUM, "MQTT-3.1.2.11.5"),
        (REQUEST_RESPONSE_INFORMATION, "MQTT-3.1.2.11.6"),
        (REQUEST_PROBLEM_INFORMATION, "MQTT-3.1.2.11.7"),
        (USER_PROPERTY, "MQTT-3.1.2.11.8"),
        (AUTHENTICATION_METHOD, "MQTT-3.1.2.11.9"),
        (AUTHENTICATION_DATA, "MQTT-3.1.2.11.10"),
    ],
);
const WILL_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in a will",
    false,
    &[
        (WILL_DELAY_INTERVAL, "MQTT-3.1.3.2.2"),
        (PAYLOAD_FORMAT_INDICATOR, "MQTT-3.1.3.2.3"),
        (MESSAGE_EXPIRY_INTERVAL, "MQTT-3.1.3.2.4"),
        (CONTENT_TYPE, "MQTT-3.1.3.2.5"),
        (RESPONSE_TOPIC, "MQTT-3.1.3.2.6"),
        (CORRELATION_DATA, "MQTT-3.1.3.2.7"),
        (USER_PROPERTY, "MQTT-3.1.3.2.8"),
    ],
);
const CONNACK_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in CONNACK",
    false,
    &[
        (SESSION_EXPIRY_INTERVAL, "MQTT-3.2.2.3.2"),
        (RECEIVE_MAXIMUM, "MQTT-3.2.2.3.3"),
        (MAXIMUM_QOS, "MQTT-3.2.2.3.4"),
        (RETAIN_AVAILABLE, "MQTT-3.2.2.3.5"),
        (MAXIMUM_PACKET_SIZE, "MQTT-3.2.2.3.6"),
        (ASSIGNED_CLIENT_IDENTIFIER, "MQTT-3.2.2.3.7"),
        (TOPIC_ALIAS_MAXIMUM, "MQTT-3.2.2.3.8"),
        (REASON_STRING, "MQTT-3.2.2.3.9"),
        (USER_PROPERTY, "MQTT-3.2.2.3.10"),
        (WILDCARD_SUBSCRIPTION_AVAILABLE, "MQTT-3.2.2.3.11"),
        (SUBSCRIPTION_IDENTIFIER_AVAILABLE, "MQTT-3.2.2.3.12"),
        (SHARED_SUBSCRIPTION_AVAILABLE, "MQTT-3.2.2.3.13"),
        (SERVER_KEEP_ALIVE, "MQTT-3.2.2.3.14"),
        (RESPONSE_INFORMATION, "MQTT-3.2.2.3.15"),
        (SERVER_REFERENCE, "MQTT-3.2.2.3.16"),
        (AUTHENTICATION_METHOD, "MQTT-3.2.2.3.17"),
        (AUTHENTICATION_DATA, "MQTT-3.2.2.3.18"),
    ],
);
const PUBLISH_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in PUBLISH",
    true,
    &[
        (PAYLOAD_FORMAT_INDICATOR, "MQTT-3.3.2.3.2"),
        (MESSAGE_EXPIRY_INTERVAL, "MQTT-3.3.2.3.3"),
        (TOPIC_ALIAS, "MQTT-3.3.2.3.4"),
        (RESPONSE_TOPIC, "MQTT-3.3.2.3.5"),
        (CORRELATION_DATA, "MQTT-3.3.2.3.6"),
        (USER_PROPERTY, "MQTT-3.3.2.3.7"),
        (SUBSCRIPTION_IDENTIFIER, "MQTT-3.3.2.3.8"),
        (CONTENT_TYPE, "MQTT-3.3.2.3.9"),
    ],
);
const SUBSCRIBE_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in SUBSCRIBE",
    false,
    &[(SUBSCRIPTION_IDENTIFIER, "MQTT-3.8.2.1.2"), (USER_PROPERTY, "MQTT-3.8.2.1.3")],
);
const SUBACK_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in SUBACK",
    false,
    &[(REASON_STRING, "MQTT-3.9.2.1.2"), (USER_PROPERTY, "MQTT-3.9.2.1.3")],
);
const UNSUBSCRIBE_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in UNSUBSCRIBE",
    false,
    &[(USER_PROPERTY, "MQTT-3.10.2.1.2")],
);
const UNSUBACK_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in UNSUBACK",
    false,
    &[(REASON_STRING, "MQTT-3.11.2.1.2"), (USER_PROPERTY, "MQTT-3.11.2.1.3")],
);
const DISCONNECT_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in DISCONNECT",
    false,
    &[
        (SESSION_EXPIRY_INTERVAL, "MQTT-3.14.2.2.2"),
        (REASON_STRING, "MQTT-3.14.2.2.3"),
        (USER_PROPERTY, "MQTT-3.14.2.2.4"),
        (SERVER_REFERENCE, "MQTT-3.14.2.2.5"),
    ],
);
const AUTH_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in AUTH",
    false,
    &[
        (AUTHENTICATION_METHOD, "MQTT-3.15.2.2.2"),
        (AUTHENTICATION_DATA, "MQTT-3.15.2.2.3"),
        (REASON_STRING, "MQTT-3.15.2.2.4"),
        (USER_PROPERTY, "MQTT-3.15.2.2.5"),
    ],
);

const PROPERTY_LENGTH_MISSING: ProtocolViolation =
    violation("MQTT-2.2.2-1", "Property Length missing");
const PROPERTY_LENGTH_OVERRUN: ProtocolViolation =
    violation("MQTT-2.2.2.1", "Property Length overruns the packet");
const PROPERTY_VALUE_TRUNCATED: ProtocolViolation =
    violation("MQTT-2.2.2.2", "property value overruns the Property Length");

/// Reads a Property Length and the properties it spans, which must all be allowed by
/// `set` [MQTT-2.2.2].
fn decode_properties(r: &mut Reader, set: &PropertySet) -> Result<Properties, ProtocolViolation> {
    let mut properties = Properties::default();
    let mut block = property_block(r)?;
    decode_properties_into(&mut block, set, &mut properties)?;
    Ok(properties)
}

/// Like [`decode_properties`], for PUBLISH: `None` when the Property Length is 0, so
/// a message without properties costs no allocation.
// Inlined, with property_block, so that the PUBLISH decoder keeps its reader in
// registers: otherwise the reader goes through memory, and reading its payload back
// after these 8-byte writes stalls store forwarding (20 ns per PUBLISH).
#[inline(always)]
fn decode_optional_properties(
    r: &mut Reader,
    set: &PropertySet,
) -> Result<Option<Box<Properties>>, ProtocolViolation> {
    let mut block = property_block(r)?;
    if block.buf.is_empty() {
        return Ok(None);
    }
    let mut properties = Box::<Properties>::default();
    decode_properties_into(&mut block, set, &mut properties)?;
    Ok(Some(properties))
}

/// Splits the property block, Property Length included, off the front of `r`.
// Inlined: see decode_optional_properties.
#[inline(always)]
fn property_block(r: &mut Reader) -> Result<Reader, ProtocolViolation> {
    // A Variable Byte Integer is at most 268435455, which fits a usize.
    let len = r.vbi(PROPERTY_LENGTH_MISSING)? as usize;
    if len > r.buf.len() {
        return Err(PROPERTY_LENGTH_OVERRUN);
    }
    // Most blocks are empty: a static empty `Bytes` spares the two atomic refcount
    // updates of a split.
    let buf = if len == 0 { Bytes::new() } else { r.buf.split_to(len) };
    Ok(Reader { buf, v5: true })
}

fn decode_properties_into(
    p: &mut Reader,
    set: &PropertySet,
    out: &mut Properties,
) -> Result<(), ProtocolViolation> {
    const TRUNCATED: ProtocolViolation = PROPERTY_VALUE_TRUNCATED;
    // Identifiers seen so far, one bit each (all allowed ones are below 64).
    let mut seen = 0u64;
    while !p.buf.is_empty() {
        // The identifier is a Variable Byte Integer, but every defined one is below
        // 128: a first byte with bit 7 set starts an identifier that is unknown or not
        // minimal, malformed either way, so one byte is all there is to read.
        let id = p.buf.get_u8();
        if !set.allows(id) {
            return Err(set.not_allowed.clone());
        }
        let bit = 1u64 << id;
        let repeatable =
            id == USER_PROPERTY || (id == SUBSCRIPTION_IDENTIFIER && set.many_subscription_ids);
        if seen & bit != 0 && !repeatable {
            // "It is a Protocol Error to include ... more than once", in the section
            // of every property but User Property and PUBLISH's Subscription Identifier.
            return Err(protocol_error(set.section(id), duplicate_reason(id)));
        }
        seen |= bit;
        // A byte property that says yes or no: "a Protocol Error ... to have a value
        // other than 0 or 1", in each one's section.
        let flag = |p: &mut Reader, reason| match p.u8(TRUNCATED)? {
            v @ (0 | 1) => Ok(v),
            _ => Err(set.bad_value(id, reason)),
        };
        match id {
            PAYLOAD_FORMAT_INDICATOR => {
                out.payload_format_indicator =
                    Some(flag(p, "Payload Format Indicator not 0 or 1")?);
            }
            MESSAGE_EXPIRY_INTERVAL => out.message_expiry_interval = Some(p.u32(TRUNCATED)?),
            CONTENT_TYPE => out.content_type = Some(p.string(TRUNCATED)?),
            RESPONSE_TOPIC => {
                let topic = p.utf8(TRUNCATED)?;
                out.response_topic = Some(TopicName::try_from(topic).map_err(|e| {
                    if e.clause == "MQTT-4.7.1-1" {
                        violation("MQTT-3.3.2-14", "wildcard character in a Response Topic")
                    } else {
                        topic_clause_v5(e)
                    }
                })?);
            }
            CORRELATION_DATA => out.correlation_data = Some(p.binary(TRUNCATED)?),
            SUBSCRIPTION_IDENTIFIER => {
                let value = p.vbi(TRUNCATED)?;
                if value == 0 {
                    return Err(set.bad_value(id, "Subscription Identifier of 0"));
                }
                out.subscription_identifiers.push(value);
            }
            SESSION_EXPIRY_INTERVAL => out.session_expiry_interval = Some(p.u32(TRUNCATED)?),
            ASSIGNED_CLIENT_IDENTIFIER => {
                out.assigned_client_identifier = Some(p.string(TRUNCATED)?);
            }
            SERVER_KEEP_ALIVE => out.server_keep_alive = Some(p.u16(TRUNCATED)?),
            AUTHENTICATION_METHOD => out.authentication_method = Some(p.string(TRUNCATED)?),
            AUTHENTICATION_DATA => out.authentication_data = Some(p.binary(TRUNCATED)?),
            REQUEST_PROBLEM_INFORMATION => {
                out.request_problem_information =
                    Some(flag(p, "Request Problem Information not 0 or 1")?);
            }
            WILL_DELAY_INTERVAL => out.will_delay_interval = Some(p.u32(TRUNCATED)?),
            REQUEST_RESPONSE_INFORMATION => {
                out.request_response_information =
                    Some(flag(p, "Request Response Information not 0 or 1")?);
            }
            RESPONSE_INFORMATION => out.response_information = Some(p.string(TRUNCATED)?),
            SERVER_REFERENCE => out.server_reference = Some(p.string(TRUNCATED)?),
            REASON_STRING => out.reason_string = Some(p.string(TRUNCATED)?),
            RECEIVE_MAXIMUM => {
                let value = p.u16(TRUNCATED)?;
                if value == 0 {
                    return Err(set.bad_value(id, "Receive Maximum of 0"));
                }
                out.receive_maximum = Some(value);
            }
            TOPIC_ALIAS_MAXIMUM => out.topic_alias_maximum = Some(p.u16(TRUNCATED)?),
            TOPIC_ALIAS => {
                let value = p.u16(TRUNCATED)?;
                if value == 0 {
                    // "A Topic Alias value of 0 ... is a Protocol Error, the receiver
                    // uses DISCONNECT with Reason Code of 0x94" (section 3.3.4).
                    return Err(ProtocolViolation::with_code(
                        "MQTT-3.3.2-8",
                        "Topic Alias of 0",
                        ReasonCode::TOPIC_ALIAS_INVALID,
                    ));
                }
                out.topic_alias = Some(value);
            }
            MAXIMUM_QOS => out.maximum_qos = Some(flag(p, "Maximum QoS not 0 or 1")?),
            RETAIN_AVAILABLE => {
                out.retain_available = Some(flag(p, "Retain Available not 0 or 1")?);
            }
            USER_PROPERTY => {
                // Both strings of the pair are UTF-8 strings [MQTT-1.5.7-1].
                let name = p.string(TRUNCATED)?;
                let value = p.string(TRUNCATED)?;
                out.user_properties.push((name, value));
            }
            MAXIMUM_PACKET_SIZE => {
                let value = p.u32(TRUNCATED)?;
                if value == 0 {
                    return Err(set.bad_value(id, "Maximum Packet Size of 0"));
                }
                out.maximum_packet_size = Some(value);
            }
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                out.wildcard_subscription_available =
                    Some(flag(p, "Wildcard Subscription Available not 0 or 1")?);
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                out.subscription_identifier_available =
                    Some(flag(p, "Subscription Identifier Available not 0 or 1")?);
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                out.shared_subscription_available =
                    Some(flag(p, "Shared Subscription Available not 0 or 1")?);
            }
            // `set.allows` refused every other identifier; answer as it does rather
            // than panic.
            _ => return Err(set.not_allowed.clone()),
        }
    }
    Ok(())
}

/// The bytes of the properties, Property Length excluded.
fn properties_len(p: &Properties) -> usize {
    // Identifier byte plus value.
    fn opt<T>(value: &Option<T>, size: impl Fn(&T) -> usize) -> usize {
        value.as_ref().map_or(0, |v| 1 + size(v))
    }
    let byte = |_: &u8| 1;
    let two = |_: &u16| 2;
    let four = |_: &u32| 4;
    let string = |s: &ByteString| 2 + s.len();
    let binary = |b: &Bytes| 2 + b.len();
    opt(&p.payload_format_indicator, byte)
        + opt(&p.message_expiry_interval, four)
        + opt(&p.content_type, string)
        + opt(&p.response_topic, |t| 2 + t.as_str().len())
        + opt(&p.correlation_data, binary)
        + p.subscription_identifiers.iter().map(|&id| 1 + vbi_len(id as usize)).sum::<usize>()
        + opt(&p.session_expiry_interval, four)
        + opt(&p.assigned_client_identifier, string)
        + opt(&p.server_keep_alive, two)
        + opt(&p.authentication_method, string)
        + opt(&p.authentication_data, binary)
        + opt(&p.request_problem_information, byte)
        + opt(&p.will_delay_interval, four)
        + opt(&p.request_response_information, byte)
        + opt(&p.response_information, string)
        + opt(&p.server_reference, string)
        + opt(&p.reason_string, string)
        + opt(&p.receive_maximum, two)
        + opt(&p.topic_alias_maximum, two)
        + opt(&p.topic_alias, two)
        + opt(&p.maximum_qos, byte)
        + opt(&p.retain_available, byte)
        + p.user_properties.iter().map(|(k, v)| 1 + 2 + k.len() + 2 + v.len()).sum::<usize>()
        + opt(&p.maximum_packet_size, four)
        + opt(&p.wildcard_subscription_available, byte)
        + opt(&p.subscription_identifier_available, byte)
        + opt(&p.shared_subscription_available, byte)
}

/// The bytes of a property block: Property Length and properties.
fn property_block_len(properties_len: usize) -> usize {
    vbi_len(properties_len) + properties_len
}

/// Writes the Property Length `len` (from [`properties_len`]) and the properties, in
/// the order of their identifiers; the order of User Properties is kept
/// [MQTT-3.3.2-18].
fn put_properties(buf: &mut BytesMut, p: &Properties, len: usize) {
    put_vbi(buf, len);
    let put = |buf: &mut BytesMut, id: u8| buf.put_u8(id);
    if let Some(v) = p.payload_format_indicator {
        put(buf, PAYLOAD_FORMAT_INDICATOR);
        buf.put_u8(v);
    }
    if let Some(v) = p.message_expiry_interval {
        put(buf, MESSAGE_EXPIRY_INTERVAL);
        buf.put_u32(v);
    }
    if let Some(v) = &p.content_type {
        put(buf, CONTENT_TYPE);
        put_binary(buf, v.as_bytes());
    }
    if let Some(v) = &p.response_topic {
        put(buf, RESPONSE_TOPIC);
        put_binary(buf, v.as_str().as_bytes());
    }
    if let Some(v) = &p.correlation_data {
        put(buf, CORRELATION_DATA);
        put_binary(buf, v);
    }
    for &id in &p.subscription_identifiers {
        debug_assert!(id != 0, "[MQTT-3.3.2.3.8] Subscription Identifier of 0");
        put(buf, SUBSCRIPTION_IDENTIFIER);
        put_vbi(buf, id as usize);
    }
    if let Some(v) = p.session_expiry_interval {
        put(buf, SESSION_EXPIRY_INTERVAL);
        buf.put_u32(v);
    }
    if let Some(v) = &p.assigned_client_identifier {
        put(buf, ASSIGNED_CLIENT_IDENTIFIER);
        put_binary(buf, v.as_bytes());
    }
    if let Some(v) = p.server_keep_alive {
        put(buf, SERVER_KEEP_ALIVE);
        buf.put_u16(v);
    }
    if let Some(v) = &p.authentication_method {
        put(buf, AUTHENTICATION_METHOD);
        put_binary(buf, v.as_bytes());
    }
    if let Some(v) = &p.authentication_data {
        put(buf, AUTHENTICATION_DATA);
        put_binary(buf, v);
    }
    if let Some(v) = p.request_problem_information {
        put(buf, REQUEST_PROBLEM_INFORMATION);
        buf.put_u8(v);
    }
    if let Some(v) = p.will_delay_interval {
        put(buf, WILL_DELAY_INTERVAL);
        buf.put_u32(v);
    }
    if let Some(v) = p.request_response_information {
        put(buf, REQUEST_RESPONSE_INFORMATION);
        buf.put_u8(v);
    }
    if let Some(v) = &p.response_information {
        put(buf, RESPONSE_INFORMATION);
        put_binary(buf, v.as_bytes());
    }
    if let Some(v) = &p.server_reference {
        put(buf, SERVER_REFERENCE);
        put_binary(buf, v.as_bytes());
    }
    if let Some(v) = &p.reason_string {
        put(buf, REASON_STRING);
        put_binary(buf, v.as_bytes());
    }
    if let Some(v) = p.receive_maximum {
        put(buf, RECEIVE_MAXIMUM);
        buf.put_u16(v);
    }
    if let Some(v) = p.topic_alias_maximum {
        put(buf, TOPIC_ALIAS_MAXIMUM);
        buf.put_u16(v);
    }
    if let Some(v) = p.topic_alias {
        put(buf, TOPIC_ALIAS);
        buf.put_u16(v);
    }
    if let Some(v) = p.maximum_qos {
        put(buf, MAXIMUM_QOS);
        buf.put_u8(v);
    }
    if let Some(v) = p.retain_available {
        put(buf, RETAIN_AVAILABLE);
        buf.put_u8(v);
    }
    for (name, value) in &p.user_properties {
        put(buf, USER_PROPERTY);
        put_binary(buf, name.as_bytes());
        put_binary(buf, value.as_bytes());
    }
    if let Some(v) = p.maximum_packet_size {
        put(buf, MAXIMUM_PACKET_SIZE);
        buf.put_u32(v);
    }
    if let Some(v) = p.wildcard_subscription_available {
        put(buf, WILDCARD_SUBSCRIPTION_AVAILABLE);
        buf.put_u8(v);
    }
    if let Some(v) = p.subscription_identifier_available {
        put(buf, SUBSCRIPTION_IDENTIFIER_AVAILABLE);
        buf.put_u8(v);
    }
    if let Some(v) = p.shared_subscription_available {
        put(buf, SHARED_SUBSCRIPTION_AVAILABLE);
        buf.put_u8(v);
    }
}

// ---- encoding ---------------------------------------------------------------

/// The number of bytes [`encode`] writes for `packet` in `protocol` (0 for an AUTH
/// in MQTT 3, which is not written).
pub fn encoded_len(packet: &Packet, protocol: ProtocolVersion) -> usize {
    if let Packet::Auth(_) = packet {
        if !protocol.is_v5() {
            // Not written at all: see encode.
            return 0;
        }
    }
    let remaining = remaining_len(packet, protocol);
    1 + vbi_len(remaining) + remaining
}

/// Appends `packet` to `buf`, in the layout of `protocol` (CONNECT in the layout of
/// its own `protocol` field).
///
/// In MQTT 3 the parts MQTT 3 does not have are not written: properties, the reason
/// codes of PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK and DISCONNECT, and the
/// subscription options beyond the QoS. CONNACK's reason code is written as the 3.1.1
/// return code (0x00 -> 0, 0x84 -> 1, 0x85 -> 2, 0x86 -> 4, 0x87 -> 5, any other
/// failure -> 3 Server unavailable), and a SUBACK failure code as 0x80. AUTH does not
/// exist in MQTT 3: nothing is written (and debug builds panic).
///
/// In MQTT 5 an acknowledgement of a PUBLISH with reason Success and no properties is
/// 2 bytes of remaining length [MQTT-3.4.2.1], with another reason and no properties
/// 4 (an empty Property Length kept for clients that need it); a DISCONNECT or AUTH
/// with reason Success and no properties has remaining length 0, with another reason
/// and no properties 2.
///
/// Writes the packet as it is: keeping the sender's MUSTs that the field types cannot
/// express is the caller's business (at least one filter in SUBSCRIBE and UNSUBSCRIBE,
/// at least one code in SUBACK and in an MQTT 5 UNSUBACK, DUP clear at QoS 0, a
/// password only with a user name in MQTT 3, session present only with reason code
/// Success, reason codes the packet type allows, property values the specification
/// allows); debug builds assert some of them. At QoS 0 a PUBLISH's `packet_id` is not
/// written (there is no field for it).
///
/// # Panics
///
/// If the packet cannot be framed, which no packet built by [`decode`] does:
/// * a string or binary field (client identifier, will payload, user name, password,
///   string and binary properties) longer than 65535 bytes: its length prefix is 16
///   bits [MQTT-1.5.3];
/// * a remaining length, or a Subscription Identifier, above [`REMAINING_LEN_MAX`];
/// * a PUBLISH at QoS 1 or 2 without a packet id [MQTT-2.3.1-5].
pub fn encode(packet: &Packet, protocol: ProtocolVersion, buf: &mut BytesMut) {
    let v5 = protocol.is_v5();
    match packet {
        Packet::Publish(p) => {
            debug_assert!(!(p.dup && p.qos == QoS::AtMostOnce), "[MQTT-3.3.1-2]");
            if v5 {
                encode_publish_v5(
                    buf,
                    p.topic.as_str(),
                    &p.payload,
                    p.qos,
                    p.retain,
                    p.dup,
                    p.packet_id,
                    p.properties.as_deref(),
                );
            } else {
                debug_assert!(!p.topic.is_empty(), "an aliased topic in MQTT 3");
                encode_publish(
                    buf,
                    p.topic.as_str(),
                    &p.payload,
                    p.qos,
                    p.retain,
                    p.dup,
                    p.packet_id,
                );
            }
        }
        Packet::Connect(c) => {
            put_fixed_header(buf, CONNECT << 4, remaining_len(packet, protocol));
            put_connect(buf, c);
        }
        Packet::ConnAck(a) => {
            debug_assert!(!a.session_present || a.reason == ReasonCode::SUCCESS, "[MQTT-3.2.2-6]");
            if v5 {
                let props = properties_len(&a.properties);
                put_fixed_header(buf, CONNACK << 4, 2 + property_block_len(props));
                buf.put_u8(u8::from(a.session_present));
                buf.put_u8(a.reason.0);
                put_properties(buf, &a.properties, props);
            } else {
                put_fixed_header(buf, CONNACK << 4, 2);
                // MQTT 3.1 reserves byte 1; Session Present is 3.1.1's [MQTT-3.2.2-2].
                let session_present = a.session_present && protocol != ProtocolVersion::V31;
                buf.put_u8(u8::from(session_present));
                buf.put_u8(connack_return_code(a.reason));
            }
        }
        Packet::PubAck(a) => put_ack(buf, PUBACK << 4, a, v5),
        Packet::PubRec(a) => put_ack(buf, PUBREC << 4, a, v5),
        Packet::PubRel(a) => put_ack(buf, (PUBREL << 4) | FLAGS_0010, a, v5),
        Packet::PubComp(a) => put_ack(buf, PUBCOMP << 4, a, v5),
        Packet::Subscribe(s) => {
            debug_assert!(!s.filters.is_empty(), "[MQTT-3.8.3-3]");
            let props = v5.then(|| properties_len(&s.properties));
            put_fixed_header(buf, (SUBSCRIBE << 4) | FLAGS_0010, subscribe_len(s, props));
            buf.put_u16(s.packet_id.get());
            if let Some(props) = props {
                put_properties(buf, &s.properties, props);
            }
            for f in &s.filters {
                put_binary(buf, f.filter.as_str().as_bytes());
                let mut options = f.qos as u8;
                if v5 {
                    if f.no_local {
                        options |= OPTION_NO_LOCAL;
                    }
                    if f.retain_as_published {
                        options |= OPTION_RETAIN_AS_PUBLISHED;
                    }
                    options |= (f.retain_handling as u8) << OPTION_RETAIN_HANDLING_SHIFT;
                }
                buf.put_u8(options);
            }
        }
        Packet::SubAck(s) => {
            debug_assert!(!s.codes.is_empty(), "[MQTT-3.9.3-1]");
            let props = v5.then(|| properties_len(&s.properties));
            put_fixed_header(buf, SUBACK << 4, codes_len(&s.codes, props));
            buf.put_u16(s.packet_id.get());
            if let Some(props) = props {
                put_properties(buf, &s.properties, props);
                buf.extend(s.codes.iter().map(|code| code.0));
            } else {
                buf.extend(s.codes.iter().map(|code| suback_return_code(*code)));
            }
        }
        Packet::Unsubscribe(u) => {
            debug_assert!(!u.filters.is_empty(), "[MQTT-3.10.3-2]");
            let props = v5.then(|| properties_len(&u.properties));
            put_fixed_header(buf, (UNSUBSCRIBE << 4) | FLAGS_0010, unsubscribe_len(u, props));
            buf.put_u16(u.packet_id.get());
            if let Some(props) = props {
                put_properties(buf, &u.properties, props);
            }
            for f in &u.filters {
                put_binary(buf, f.as_str().as_bytes());
            }
        }
        Packet::UnsubAck(u) => {
            if v5 {
                debug_assert!(!u.codes.is_empty(), "[MQTT-3.11.3-1]");
                let props = properties_len(&u.properties);
                put_fixed_header(buf, UNSUBACK << 4, codes_len(&u.codes, Some(props)));
                buf.put_u16(u.packet_id.get());
                put_properties(buf, &u.properties, props);
                buf.extend(u.codes.iter().map(|code| code.0));
            } else {
                put_fixed_header(buf, UNSUBACK << 4, 2);
                buf.put_u16(u.packet_id.get());
            }
        }
        Packet::PingReq => put_fixed_header(buf, PINGREQ << 4, 0),
        Packet::PingResp => put_fixed_header(buf, PINGRESP << 4, 0),
        Packet::Disconnect(d) => {
            if v5 {
                put_reason_and_properties(buf, DISCONNECT << 4, d.reason, &d.properties);
            } else {
                put_fixed_header(buf, DISCONNECT << 4, 0);
            }
        }
        Packet::Auth(a) => {
            debug_assert!(v5, "AUTH does not exist in MQTT 3");
            if v5 {
                put_reason_and_properties(buf, AUTH << 4, a.reason, &a.properties);
            }
        }
    }
}

/// The 3.1.1 CONNACK return code for an MQTT 5 reason code.
fn connack_return_code(reason: ReasonCode) -> u8 {
    debug_assert!(
        reason == ReasonCode::SUCCESS || reason.is_error(),
        "CONNACK reason {reason:?} is neither success nor failure"
    );
    match reason {
        ReasonCode::SUCCESS => 0,
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => 1,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => 2,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => 4,
        ReasonCode::NOT_AUTHORIZED => 5,
        // Server unavailable: 3.1.1's catch-all refusal (0x88, 0x89 and the rest).
        _ => 3,
    }
}

/// The 3.1.1 SUBACK return code for an MQTT 5 reason code: the granted QoS, or 0x80.
fn suback_return_code(code: ReasonCode) -> u8 {
    if code.is_error() {
        SUBACK_FAILURE
    } else {
        debug_assert!(code.0 <= 2, "SUBACK reason {code:?} is not a granted QoS");
        code.0
    }
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP.
fn put_ack(buf: &mut BytesMut, first: u8, a: &Ack, v5: bool) {
    let has_properties = v5 && !a.properties.is_empty();
    if !v5 || (a.reason == ReasonCode::SUCCESS && !has_properties) {
        put_fixed_header(buf, first, 2);
        buf.put_u16(a.packet_id.get());
    } else if !has_properties {
        // The reason and an empty Property Length: the spec allows dropping the
        // latter, but clients exist (rumqttc 0.24) that cannot parse that form.
        put_fixed_header(buf, first, 4);
        buf.put_u16(a.packet_id.get());
        buf.put_u8(a.reason.0);
        buf.put_u8(0);
    } else {
        let props = properties_len(&a.properties);
        put_fixed_header(buf, first, 3 + property_block_len(props));
        buf.put_u16(a.packet_id.get());
        buf.put_u8(a.reason.0);
        put_properties(buf, &a.properties, props);
    }
}

/// The remaining length of an MQTT 5 ack of a PUBLISH, as [`put_ack`] writes it.
fn ack_len_v5(a: &Ack) -> usize {
    if a.properties.is_empty() {
        if a.reason == ReasonCode::SUCCESS {
            2
        } else {
            4
        }
    } else {
        3 + property_block_len(properties_len(&a.properties))
    }
}

/// MQTT 5 DISCONNECT and AUTH: nothing for Success without properties; else the
/// reason and the properties (an empty Property Length included: the spec lets a
/// DISCONNECT drop it, but clients exist, rumqttc 0.24 among them, that cannot parse
/// that form and lose the reason).
fn put_reason_and_properties(
    buf: &mut BytesMut,
    first: u8,
    reason: ReasonCode,
    properties: &Properties,
) {
    match reason_and_properties_len(reason, properties) {
        0 => put_fixed_header(buf, first, 0),
        remaining => {
            put_fixed_header(buf, first, remaining);
            buf.put_u8(reason.0);
            put_properties(buf, properties, remaining - 1 - vbi_len(remaining - 1));
        }
    }
}

fn reason_and_properties_len(reason: ReasonCode, properties: &Properties) -> usize {
    if !properties.is_empty() {
        1 + property_block_len(properties_len(properties))
    } else if reason == ReasonCode::SUCCESS {
        0
    } else {
        // The reason and an empty property block.
        2
    }
}

/// Appends a PUBLISH built from its parts, without a [`Packet`]: the broker's fan-out
/// encodes one message for many subscribers, each with its own QoS and packet id.
/// Writes the same bytes as [`encode`] of the equivalent [`Publish`] in MQTT 3.
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
    put_fixed_header(
        buf,
        publish_first_byte(qos, retain, dup),
        publish_remaining_len(topic, payload.len(), qos),
    );
    put_binary(buf, topic.as_bytes());
    if qos != QoS::AtMostOnce {
        let id = packet_id.expect("a PUBLISH at QoS 1 or 2 needs a packet id [MQTT-2.3.1-5]");
        buf.put_u16(id.get());
    }
    buf.put_slice(payload);
}

/// Appends an MQTT 5 PUBLISH built from its parts: [`encode_publish`] with the
/// properties after the packet id (an empty block for `None` or no properties).
/// Writes the same bytes as [`encode`] of the equivalent [`Publish`] in MQTT 5.
///
/// `topic` may be empty when `properties` carry a Topic Alias the receiver knows
/// [MQTT-3.3.2.3.4]; otherwise it must be a valid topic name. Neither is checked here.
///
/// # Panics
///
/// As [`encode_publish`], and if a string or binary property is longer than 65535
/// bytes.
// The fan-out passes the parts of one message for each subscriber, not a Publish:
// one more part than encode_publish, the properties.
#[allow(clippy::too_many_arguments)]
pub fn encode_publish_v5(
    buf: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    dup: bool,
    packet_id: Option<PacketId>,
    properties: Option<&Properties>,
) {
    let props = properties.map_or(0, properties_len);
    let remaining = publish_remaining_len(topic, payload.len(), qos) + property_block_len(props);
    put_fixed_header(buf, publish_first_byte(qos, retain, dup), remaining);
    put_binary(buf, topic.as_bytes());
    if qos != QoS::AtMostOnce {
        let id = packet_id.expect("a PUBLISH at QoS 1 or 2 needs a packet id [MQTT-2.3.1-5]");
        buf.put_u16(id.get());
    }
    match properties {
        Some(p) => put_properties(buf, p, props),
        None => buf.put_u8(0),
    }
    buf.put_slice(payload);
}

/// The size in bytes of the PUBLISH that [`encode_publish`] (MQTT 3) or
/// [`encode_publish_v5`] (MQTT 5) writes, fixed header included: what a client's
/// Maximum Packet Size is compared with [MQTT-3.1.2-27]. `properties` is ignored in
/// MQTT 3.
pub fn publish_encoded_len(
    topic: &str,
    payload_len: usize,
    qos: QoS,
    properties: Option<&Properties>,
    protocol: ProtocolVersion,
) -> usize {
    let mut remaining = publish_remaining_len(topic, payload_len, qos);
    if protocol.is_v5() {
        remaining += property_block_len(properties.map_or(0, properties_len));
    }
    1 + vbi_len(remaining) + remaining
}

fn publish_first_byte(qos: QoS, retain: bool, dup: bool) -> u8 {
    let mut first = (PUBLISH << 4) | ((qos as u8) << PUBLISH_QOS_SHIFT);
    if dup {
        first |= PUBLISH_DUP;
    }
    if retain {
        first |= PUBLISH_RETAIN;
    }
    first
}

/// Reserves room for the whole packet, then writes byte 1 and the remaining length.
fn put_fixed_header(buf: &mut BytesMut, first: u8, remaining: usize) {
    assert!(
        remaining <= REMAINING_LEN_MAX,
        "remaining length {remaining} exceeds the protocol maximum {REMAINING_LEN_MAX} [MQTT-2.2.3]"
    );
    buf.reserve(1 + vbi_len(remaining) + remaining);
    buf.put_u8(first);
    put_vbi_digits(buf, remaining);
}

/// Writes a Variable Byte Integer [MQTT-1.5.5].
fn put_vbi(buf: &mut BytesMut, value: usize) {
    assert!(
        value <= VBI_MAX as usize,
        "Variable Byte Integer {value} exceeds the protocol maximum {VBI_MAX} [MQTT-1.5.5]"
    );
    put_vbi_digits(buf, value);
}

/// Writes `value`, at most [`VBI_MAX`], as a Variable Byte Integer: seven bits per
/// byte, least significant first; bit 7 flags a next byte [MQTT-1.5.5].
fn put_vbi_digits(buf: &mut BytesMut, value: usize) {
    let mut rest = value;
    loop {
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
    let v5 = c.protocol.is_v5();
    debug_assert!(v5 || c.password.is_none() || c.username.is_some(), "[MQTT-3.1.2-22]");
    let (name, level) = match c.protocol {
        ProtocolVersion::V31 => (PROTOCOL_NAME_V31, 3),
        ProtocolVersion::V311 => (PROTOCOL_NAME_V311, 4),
        ProtocolVersion::V5 => (PROTOCOL_NAME_V311, 5),
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
    if v5 {
        put_properties(buf, &c.properties, properties_len(&c.properties));
    }
    put_binary(buf, c.client_id.as_bytes());
    if let Some(will) = &c.will {
        if v5 {
            put_properties(buf, &will.properties, properties_len(&will.properties));
        }
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

/// A length-prefixed field.
fn field(len: usize) -> usize {
    2 + len
}

/// Bytes of variable header and payload, as [`encode`] writes them.
fn remaining_len(packet: &Packet, protocol: ProtocolVersion) -> usize {
    let v5 = protocol.is_v5();
    let block = |p: &Properties| property_block_len(properties_len(p));
    match packet {
        Packet::Connect(c) => {
            let v5 = c.protocol.is_v5();
            let name = match c.protocol {
                ProtocolVersion::V31 => PROTOCOL_NAME_V31.len(),
                ProtocolVersion::V311 | ProtocolVersion::V5 => PROTOCOL_NAME_V311.len(),
            };
            // name, level, flags, keep-alive, client id
            field(name)
                + 1
                + 1
                + 2
                + if v5 { block(&c.properties) } else { 0 }
                + field(c.client_id.len())
                + c.will.as_ref().map_or(0, |w| {
                    let properties = if v5 { block(&w.properties) } else { 0 };
                    properties + field(w.topic.as_str().len()) + field(w.payload.len())
                })
                + c.username.as_ref().map_or(0, |u| field(u.len()))
                + c.password.as_ref().map_or(0, |p| field(p.len()))
        }
        Packet::ConnAck(a) => 2 + if v5 { block(&a.properties) } else { 0 },
        Packet::Publish(p) => {
            publish_remaining_len(p.topic.as_str(), p.payload.len(), p.qos)
                + if v5 {
                    property_block_len(p.properties.as_deref().map_or(0, properties_len))
                } else {
                    0
                }
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            if v5 {
                ack_len_v5(a)
            } else {
                2
            }
        }
        Packet::Subscribe(s) => subscribe_len(s, v5.then(|| properties_len(&s.properties))),
        Packet::SubAck(s) => codes_len(&s.codes, v5.then(|| properties_len(&s.properties))),
        Packet::Unsubscribe(u) => unsubscribe_len(u, v5.then(|| properties_len(&u.properties))),
        Packet::UnsubAck(u) => {
            if v5 {
                codes_len(&u.codes, Some(properties_len(&u.properties)))
            } else {
                2
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => {
            if v5 {
                reason_and_properties_len(d.reason, &d.properties)
            } else {
                0
            }
        }
        Packet::Auth(a) => reason_and_properties_len(a.reason, &a.properties),
    }
}

/// SUBSCRIBE: packet id, property block (MQTT 5, `props` bytes of properties),
/// filters with their options byte.
fn subscribe_len(s: &Subscribe, props: Option<usize>) -> usize {
    2 + props.map_or(0, property_block_len)
        + s.filters.iter().map(|f| field(f.filter.as_str().len()) + 1).sum::<usize>()
}

/// UNSUBSCRIBE: packet id, property block (MQTT 5), filters.
fn unsubscribe_len(u: &Unsubscribe, props: Option<usize>) -> usize {
    2 + props.map_or(0, property_block_len)
        + u.filters.iter().map(|f| field(f.as_str().len())).sum::<usize>()
}

/// SUBACK and MQTT 5 UNSUBACK: packet id, property block (MQTT 5), one byte per code.
fn codes_len(codes: &[ReasonCode], props: Option<usize>) -> usize {
    2 + props.map_or(0, property_block_len) + codes.len()
}

fn publish_remaining_len(topic: &str, payload_len: usize, qos: QoS) -> usize {
    let packet_id = if qos == QoS::AtMostOnce { 0 } else { 2 };
    2 + topic.len() + packet_id + payload_len
}

/// Bytes a Variable Byte Integer takes on the wire.
fn vbi_len(value: usize) -> usize {
    match value {
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
                assert_eq!(
                    encoded_in(&packet, limits.protocol),
                    input,
                    "{ctx}: re-encoding differs"
                );
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
                assert_ne!(
                    encoded_in(&packet, limits.protocol),
                    input,
                    "{ctx}: canonical after all"
                );
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
                qos,
                retain,
                topic: name(topic),
                packet_id: id.map(pid),
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
                filters: filters
                    .iter()
                    .map(|&(f, qos)| SubscribeFilter::new(filter(f), qos))
                    .collect(),
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
            qos: QoS::AtMostOnce,
            retain: false,
            topic: name("a/b"),
            packet_id: None,
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
        assert_eq!(p.topic.as_str().as_ptr() as usize, start + 4);
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
                    qos: QoS::AtMostOnce,
                    retain: false,
                    topic: name("t"),
                    packet_id: None,
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
        encode_publish(&mut BytesMut::new(), "t", b"", QoS::AtLeastOnce, false, false, None);
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
        encode_publish(&mut with_id, "t", b"x", QoS::AtMostOnce, false, false, Some(pid(9)));
        assert_eq!(&with_id[..], &hex("30 04 | 0001 74 | 78")[..]);
    }

    // ---- MQTT 5 ---------------------------------------------------------------

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
        let password_only =
            Connect { password: Some(Bytes::from_static(b"p")), ..connect_v5_min() };
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
        let publish = |qos, topic: TopicName, id: Option<u16>, properties, payload| {
            Packet::Publish(Publish {
                dup: false,
                qos,
                retain: false,
                topic,
                packet_id: id.map(pid),
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
        let aliased = Properties { topic_alias: Some(5), ..Properties::default() };
        let sub_id_128 =
            Properties { subscription_identifiers: vec![128], ..Properties::default() };
        check5! {
            "30 0B | 0003 612F62 | 00 | 68656C6C6F" => Decodes(publish(QoS::AtMostOnce, name("a/b"), None, None, b"hello")),
            "32 06 | 0001 74 | 0001 | 00" => Decodes(publish(QoS::AtLeastOnce, name("t"), Some(1), None, b"")),
            framed("32", "0003 612F62 | 000A | 31 | 01 01 | 02 0000003C | 03 0004 6A736F6E \
                | 08 0003 722F74 | 09 0002 CAFE | 0B 01 | 0B FFFFFF7F | 23 0001 \
                | 26 0001 6B 0001 76 | 26 0001 6B 0001 77 | 6869") => Decodes(publish(QoS::AtLeastOnce, name("a/b"), Some(10), Some(Box::new(all)), b"hi")),
            // An empty topic names the topic by its alias [MQTT-3.3.2.3.4].
            "30 07 | 0000 | 03 | 23 0005 | 78" => Decodes(publish(QoS::AtMostOnce, TopicName::empty(), None, Some(Box::new(aliased)), b"x")),
            publish5("30", "0001 74", "03 | 0B 8001") => Decodes(publish(QoS::AtMostOnce, name("t"), None, Some(Box::new(sub_id_128)), b"x")),
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
        let options =
            |f: &str, qos, no_local, retain_as_published, retain_handling| SubscribeFilter {
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
        let user_kv =
            || Properties { user_properties: vec![user("k", "v")], ..Properties::default() };
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
        let auth =
            |reason, properties| Packet::Auth(Auth { reason: ReasonCode(reason), properties });
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
        let ack = Ack {
            packet_id: pid(1),
            reason: ReasonCode(0x10),
            properties: properties.clone().into(),
        };
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
            qos: QoS::AtMostOnce,
            retain: false,
            topic: name("t"),
            packet_id: None,
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
            (
                Packet::PubComp(reasoned(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)),
                "70 04 0001 92 00",
            ),
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
    fn publish_encoded_len_counts_the_properties() {
        let props = Properties { topic_alias: Some(1), ..Properties::default() };
        // 1 + 1 + (2 + 1 + 2 + (1 + 3) + 5)
        assert_eq!(publish_encoded_len("t", 5, QoS::AtLeastOnce, Some(&props), V5), 16);
        assert_eq!(publish_encoded_len("t", 5, QoS::AtLeastOnce, None, V5), 13);
        assert_eq!(publish_encoded_len("t", 5, QoS::AtLeastOnce, Some(&props), V3), 12);
        let mut buf = BytesMut::new();
        encode_publish_v5(
            &mut buf,
            "",
            b"hello",
            QoS::AtLeastOnce,
            false,
            false,
            Some(pid(1)),
            Some(&props),
        );
        assert_eq!(&buf[..], &hex("32 0D | 0000 | 0001 | 03 | 23 0001 | 68656C6C6F")[..]);
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
        (proptest::collection::vec(level, 1..5), any::<bool>(), any::<bool>())
            .prop_filter_map("not a topic filter", |(levels, hash, shared)| {
                let mut s = levels.join("/");
                if hash {
                    s.push_str("/#");
                }
                if shared {
                    s = format!("$share/g/{s}");
                }
                TopicFilter::try_from(s.as_str()).ok()
            })
            .boxed()
    }

    fn flag() -> impl Strategy<Value = Option<u8>> {
        proptest::option::of(0..=1u8)
    }

    /// Every property with a valid value, each present or not (the codec and Table
    /// 2-4 decide which a packet keeps: see [`only`]).
    fn any_properties() -> BoxedStrategy<Properties> {
        use proptest::collection::vec;
        use proptest::option::of;
        let message = (
            flag(),
            of(any::<u32>()),
            of(text(8)),
            of(topic_name()),
            of(binary(8)),
            vec(1..=VBI_MAX, 0..3),
            of(1..=u16::MAX),
            vec((text(6), text(6)), 0..3),
            of(any::<u32>()),
        );
        let connection = (
            of(any::<u32>()),
            of(text(8)),
            of(any::<u16>()),
            of(text(8)),
            of(binary(8)),
            flag(),
            flag(),
            of(text(8)),
            of(text(8)),
        );
        let limits = (
            of(text(8)),
            of(1..=u16::MAX),
            of(any::<u16>()),
            flag(),
            flag(),
            of(1..=u32::MAX),
            flag(),
            flag(),
            flag(),
        );
        (message, connection, limits)
            .prop_map(|(message, connection, limits)| {
                let (pfi, mei, ct, rt, cd, sub_ids, alias, user_properties, will_delay) = message;
                let (sei, aci, ska, am, ad, rpi, rri, ri, sr) = connection;
                let (rs, rm, tam, mq, ra, mps, wsa, sia, ssa) = limits;
                Properties {
                    payload_format_indicator: pfi,
                    message_expiry_interval: mei,
                    content_type: ct,
                    response_topic: rt,
                    correlation_data: cd,
                    subscription_identifiers: sub_ids,
                    session_expiry_interval: sei,
                    assigned_client_identifier: aci,
                    server_keep_alive: ska,
                    authentication_method: am,
                    authentication_data: ad,
                    request_problem_information: rpi,
                    will_delay_interval: will_delay,
                    request_response_information: rri,
                    response_information: ri,
                    server_reference: sr,
                    reason_string: rs,
                    receive_maximum: rm,
                    topic_alias_maximum: tam,
                    topic_alias: alias,
                    maximum_qos: mq,
                    retain_available: ra,
                    user_properties,
                    maximum_packet_size: mps,
                    wildcard_subscription_available: wsa,
                    subscription_identifier_available: sia,
                    shared_subscription_available: ssa,
                }
            })
            .boxed()
    }

    /// Keeps the properties Table 2-4 allows in `packet` (see [`TABLE_2_4`]).
    fn only(packet: &str, p: Properties) -> Properties {
        let allowed = TABLE_2_4.iter().find(|(name, _)| *name == packet).expect("a packet").1;
        let keep = |id: u8| allowed.contains(&id);
        fn keep_if<T>(keep: bool, value: Option<T>) -> Option<T> {
            value.filter(|_| keep)
        }
        // In CONNECT only with an Authentication Method [MQTT-3.1.2.11.10].
        let has_method = keep(0x15) && p.authentication_method.is_some();
        let mut subscription_identifiers =
            if keep(0x0B) { p.subscription_identifiers } else { Vec::new() };
        if packet == "SUBSCRIBE" {
            subscription_identifiers.truncate(1);
        }
        Properties {
            payload_format_indicator: keep_if(keep(0x01), p.payload_format_indicator),
            message_expiry_interval: keep_if(keep(0x02), p.message_expiry_interval),
            content_type: keep_if(keep(0x03), p.content_type),
            response_topic: keep_if(keep(0x08), p.response_topic),
            correlation_data: keep_if(keep(0x09), p.correlation_data),
            subscription_identifiers,
            session_expiry_interval: keep_if(keep(0x11), p.session_expiry_interval),
            assigned_client_identifier: keep_if(keep(0x12), p.assigned_client_identifier),
            server_keep_alive: keep_if(keep(0x13), p.server_keep_alive),
            authentication_method: keep_if(keep(0x15), p.authentication_method),
            authentication_data: keep_if(
                keep(0x16) && (packet != "CONNECT" || has_method),
                p.authentication_data,
            ),
            request_problem_information: keep_if(keep(0x17), p.request_problem_information),
            will_delay_interval: keep_if(keep(0x18), p.will_delay_interval),
            request_response_information: keep_if(keep(0x19), p.request_response_information),
            response_information: keep_if(keep(0x1A), p.response_information),
            server_reference: keep_if(keep(0x1C), p.server_reference),
            reason_string: keep_if(keep(0x1F), p.reason_string),
            receive_maximum: keep_if(keep(0x21), p.receive_maximum),
            topic_alias_maximum: keep_if(keep(0x22), p.topic_alias_maximum),
            topic_alias: keep_if(keep(0x23), p.topic_alias),
            maximum_qos: keep_if(keep(0x24), p.maximum_qos),
            retain_available: keep_if(keep(0x25), p.retain_available),
            user_properties: if keep(0x26) { p.user_properties } else { Vec::new() },
            maximum_packet_size: keep_if(keep(0x27), p.maximum_packet_size),
            wildcard_subscription_available: keep_if(keep(0x28), p.wildcard_subscription_available),
            subscription_identifier_available: keep_if(
                keep(0x29),
                p.subscription_identifier_available,
            ),
            shared_subscription_available: keep_if(keep(0x2A), p.shared_subscription_available),
        }
    }

    /// Valid properties for `packet`, often none at all.
    fn properties(packet: &'static str) -> BoxedStrategy<Properties> {
        prop_oneof![
            1 => Just(Properties::default()),
            2 => any_properties().prop_map(move |p| only(packet, p)),
        ]
        .boxed()
    }

    /// Reason codes from `allowed`.
    fn reason(allowed: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
        proptest::sample::select(allowed).prop_map(ReasonCode)
    }

    const CONNACK_CODES_V3: &[u8] = &[0x00, 0x84, 0x85, 0x86, 0x87, 0x88];
    const SUBACK_CODES_V3: &[u8] = &[0x00, 0x01, 0x02, 0x80];
    const CONNACK_CODES: &[u8] = &[
        0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
        0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
    ];
    const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
    const PUBREL_CODES: &[u8] = &[0x00, 0x92];
    const SUBACK_CODES: &[u8] =
        &[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2];
    const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
    const DISCONNECT_CODES: &[u8] = &[
        0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
        0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    ];
    const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

    fn connect(protocol: ProtocolVersion) -> impl Strategy<Value = Connect> {
        let v5 = protocol == V5;
        let props =
            move |packet| if v5 { properties(packet) } else { Just(Properties::default()).boxed() };
        let will = (topic_name(), binary(20), qos(), any::<bool>(), props("will")).prop_map(
            |(topic, payload, qos, retain, properties)| LastWill {
                topic,
                payload,
                qos,
                retain,
                properties: properties.into(),
            },
        );
        let protocol = if v5 {
            Just(V5).boxed()
        } else {
            prop_oneof![Just(ProtocolVersion::V31), Just(V3)].boxed()
        };
        (
            protocol,
            any::<bool>(),
            any::<u16>(),
            text(24),
            proptest::option::of(will),
            proptest::option::of(text(12)),
            proptest::option::of(binary(12)),
            props("CONNECT"),
        )
            .prop_map(
                |(
                    protocol,
                    clean_session,
                    keep_alive_secs,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                )| {
                    // MQTT 3: a password only with a user name [MQTT-3.1.2-22].
                    let password = password.filter(|_| protocol == V5 || username.is_some());
                    Connect {
                        protocol,
                        clean_session,
                        keep_alive_secs,
                        client_id,
                        will,
                        username,
                        password,
                        properties: properties.into(),
                    }
                },
            )
    }

    fn publish(protocol: ProtocolVersion) -> impl Strategy<Value = Publish> {
        let v5 = protocol == V5;
        let payload = prop_oneof![4 => binary(80), 1 => binary(400)];
        let props = if v5 { properties("PUBLISH") } else { Just(Properties::default()).boxed() };
        (
            qos(),
            any::<bool>(),
            any::<bool>(),
            topic_name(),
            packet_id(),
            payload,
            props,
            any::<bool>(),
        )
            .prop_map(
                move |(qos, dup, retain, topic, id, payload, properties, aliased)| {
                    let at_most_once = qos == QoS::AtMostOnce;
                    // An empty topic only with a Topic Alias [MQTT-3.3.2.3.4].
                    let topic = if v5 && aliased && properties.topic_alias.is_some() {
                        TopicName::empty()
                    } else {
                        topic
                    };
                    Publish {
                        // DUP only above QoS 0 [MQTT-3.3.1-2]; an id exactly above QoS 0.
                        dup: dup && !at_most_once,
                        qos,
                        retain,
                        topic,
                        packet_id: (!at_most_once).then_some(id),
                        payload,
                        // None, not Some(empty): what decode gives back.
                        properties: (!properties.is_empty()).then(|| Box::new(properties)),
                    }
                },
            )
    }

    fn connack(protocol: ProtocolVersion) -> impl Strategy<Value = ConnAck> {
        let v5 = protocol == V5;
        let codes = if v5 { CONNACK_CODES } else { CONNACK_CODES_V3 };
        let props = if v5 { properties("CONNACK") } else { Just(Properties::default()).boxed() };
        (any::<bool>(), reason(codes), props).prop_map(|(session_present, reason, properties)| {
            ConnAck {
                // Session present only with Success [MQTT-3.2.2-6].
                session_present: session_present && reason == ReasonCode::SUCCESS,
                reason,
                properties: properties.into(),
            }
        })
    }

    fn subscribe_filter(v5: bool) -> impl Strategy<Value = SubscribeFilter> {
        let retain_handling = prop_oneof![
            Just(RetainHandling::SendAtSubscribe),
            Just(RetainHandling::SendIfNew),
            Just(RetainHandling::DoNotSend),
        ];
        (topic_filter(), qos(), any::<bool>(), any::<bool>(), retain_handling).prop_map(
            move |(filter, qos, no_local, retain_as_published, retain_handling)| {
                if !v5 {
                    return SubscribeFilter::new(filter, qos);
                }
                // No No Local on a shared subscription [MQTT-3.8.3-4].
                let no_local = no_local && !filter.as_str().starts_with("$share/");
                SubscribeFilter { filter, qos, no_local, retain_as_published, retain_handling }
            },
        )
    }

    /// Any packet valid in `protocol`.
    fn packet(protocol: ProtocolVersion) -> BoxedStrategy<Packet> {
        use proptest::collection::vec;
        let v5 = protocol == V5;
        let props =
            move |packet| if v5 { properties(packet) } else { Just(Properties::default()).boxed() };
        let ack = move |packet, codes: &'static [u8]| {
            let reason = if v5 { reason(codes).boxed() } else { Just(ReasonCode::SUCCESS).boxed() };
            (packet_id(), reason, props(packet)).prop_map(|(packet_id, reason, properties)| Ack {
                packet_id,
                reason,
                properties: properties.into(),
            })
        };
        let subscribe = (packet_id(), vec(subscribe_filter(v5), 1..5), props("SUBSCRIBE"))
            .prop_map(|(packet_id, filters, properties)| Subscribe {
                packet_id,
                filters,
                properties: properties.into(),
            });
        let suback_codes = if v5 { SUBACK_CODES } else { SUBACK_CODES_V3 };
        let suback = (packet_id(), vec(reason(suback_codes), 1..8), props("SUBACK")).prop_map(
            |(packet_id, codes, properties)| SubAck {
                packet_id,
                codes,
                properties: properties.into(),
            },
        );
        let unsubscribe = (packet_id(), vec(topic_filter(), 1..5), props("UNSUBSCRIBE")).prop_map(
            |(packet_id, filters, properties)| Unsubscribe {
                packet_id,
                filters,
                properties: properties.into(),
            },
        );
        // MQTT 3's UNSUBACK has no codes.
        let unsuback_codes =
            if v5 { vec(reason(UNSUBACK_CODES), 1..8).boxed() } else { Just(Vec::new()).boxed() };
        let unsuback = (packet_id(), unsuback_codes, props("UNSUBACK")).prop_map(
            |(packet_id, codes, properties)| UnsubAck {
                packet_id,
                codes,
                properties: properties.into(),
            },
        );
        let disconnect_reason =
            if v5 { reason(DISCONNECT_CODES).boxed() } else { Just(ReasonCode::SUCCESS).boxed() };
        let disconnect = (disconnect_reason, props("DISCONNECT"))
            .prop_map(|(reason, properties)| Disconnect { reason, properties: properties.into() });
        let auth = (reason(AUTH_CODES), properties("AUTH"))
            .prop_map(|(reason, properties)| Auth { reason, properties: properties.into() });
        prop_oneof![
            2 => connect(protocol).prop_map(Packet::Connect),
            1 => connack(protocol).prop_map(Packet::ConnAck),
            4 => publish(protocol).prop_map(Packet::Publish),
            1 => ack("PUBACK", PUBACK_CODES).prop_map(Packet::PubAck),
            1 => ack("PUBREC", PUBACK_CODES).prop_map(Packet::PubRec),
            1 => ack("PUBREL", PUBREL_CODES).prop_map(Packet::PubRel),
            1 => ack("PUBCOMP", PUBREL_CODES).prop_map(Packet::PubComp),
            2 => subscribe.prop_map(Packet::Subscribe),
            1 => suback.prop_map(Packet::SubAck),
            2 => unsubscribe.prop_map(Packet::Unsubscribe),
            1 => unsuback.prop_map(Packet::UnsubAck),
            1 => Just(Packet::PingReq),
            1 => Just(Packet::PingResp),
            1 => disconnect.prop_map(Packet::Disconnect),
            // AUTH exists in MQTT 5 only.
            1 => auth.prop_map(move |a| if v5 { Packet::Auth(a) } else { Packet::PingResp }),
        ]
        .boxed()
    }

    fn protocol() -> impl Strategy<Value = ProtocolVersion> {
        prop_oneof![Just(V3), Just(V5)]
    }

    /// A protocol and a packet valid in it.
    fn any_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
        protocol().prop_flat_map(|protocol| (Just(protocol), packet(protocol)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn round_trip((protocol, packet) in any_packet()) {
            let mut buf = BytesMut::new();
            encode(&packet, protocol, &mut buf);
            prop_assert_eq!(encoded_len(&packet, protocol), buf.len());
            let decoded = decode(&mut buf, &Limits { protocol, ..Limits::default() });
            prop_assert_eq!(decoded, Ok(Some(packet)));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn every_strict_prefix_is_incomplete((protocol, packet) in any_packet()) {
            let bytes = encoded_in(&packet, protocol);
            let limits = Limits { protocol, ..Limits::default() };
            for cut in 0..bytes.len() {
                let mut buf = BytesMut::from(&bytes[..cut]);
                prop_assert_eq!(decode(&mut buf, &limits), Ok(None));
                prop_assert_eq!(buf.len(), cut);
            }
        }

        #[test]
        fn split_invariance(
            // The packets of one connection are all in its protocol.
            (protocol, packets) in protocol().prop_flat_map(|protocol| {
                (Just(protocol), proptest::collection::vec(packet(protocol), 1..8))
            }),
            chunks in proptest::collection::vec(1..40usize, 1..20),
        ) {
            let mut stream = BytesMut::new();
            for p in &packets {
                encode(p, protocol, &mut stream);
            }
            let limits = Limits { protocol, ..Limits::default() };
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            let mut sizes = chunks.iter().cycle();
            while !stream.is_empty() {
                let size = (*sizes.next().expect("cycle of a non-empty vec")).min(stream.len());
                buf.extend_from_slice(&stream.split_to(size));
                while let Some(p) = decode(&mut buf, &limits)
                    .expect("a stream of valid packets decodes")
                {
                    decoded.push(p);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(decoded, packets);
        }

        #[test]
        fn encode_publish_matches_encode(p in publish(V3)) {
            let mut fast = BytesMut::new();
            encode_publish(&mut fast, p.topic.as_str(), &p.payload, p.qos, p.retain, p.dup, p.packet_id);
            prop_assert_eq!(fast.len(), publish_encoded_len(p.topic.as_str(), p.payload.len(), p.qos, None, V3));
            prop_assert_eq!(&fast[..], &encoded(&Packet::Publish(p))[..]);
        }

        #[test]
        fn encode_publish_v5_matches_encode(p in publish(V5)) {
            let mut fast = BytesMut::new();
            let props = p.properties.as_deref();
            encode_publish_v5(&mut fast, p.topic.as_str(), &p.payload, p.qos, p.retain, p.dup, p.packet_id, props);
            prop_assert_eq!(fast.len(), publish_encoded_len(p.topic.as_str(), p.payload.len(), p.qos, props, V5));
            prop_assert_eq!(&fast[..], &encoded_in(&Packet::Publish(p), V5)[..]);
        }

        /// Garbage never panics the decoder, and whatever it accepts re-encodes to a
        /// packet that decodes the same.
        #[test]
        fn arbitrary_bytes(
            protocol in protocol(),
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let limits = Limits { protocol, ..Limits::default() };
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(packet)) = decode(&mut buf, &limits) {
                let mut again = BytesMut::new();
                encode(&packet, protocol, &mut again);
                prop_assert_eq!(again.len(), encoded_len(&packet, protocol));
                prop_assert_eq!(decode(&mut again, &limits), Ok(Some(packet)));
            }
        }
    }
}
