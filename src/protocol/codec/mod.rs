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

mod encode;
mod header;
mod properties;
#[cfg(test)]
mod tests;
mod v3;
mod v5;

pub use self::encode::{encode, encoded_len, MeasuredPublish, PublishView};
pub use self::properties::PublishProperties;
use self::{header::*, properties::*, v3::*, v5::*};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PacketId, Properties, Props,
    ProtocolVersion, Publish, PublishQoS, PublishTopic, QoS, ReasonCode, RetainHandling, SubAck,
    Subscribe, SubscribeFilter, TopicFilter, TopicName, UnsubAck, Unsubscribe,
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

/// A topic name; in MQTT 5 the error cites the 5.0 numbering of section 4.7.
#[inline]
fn topic_name(s: ByteString, v5: bool) -> Result<TopicName, ProtocolViolation> {
    TopicName::try_from(s).map_err(|e| if v5 { topic_clause_v5(e) } else { e })
}

/// A topic filter; in MQTT 5 the error cites the 5.0 numbering of section 4.7.
#[inline]
fn topic_filter(s: ByteString, v5: bool) -> Result<TopicFilter, ProtocolViolation> {
    TopicFilter::try_from(s).map_err(|e| if v5 { topic_clause_v5(e) } else { e })
}

/// Renumbers a topic validation error (which [`super::topic`] raises with the 3.1.1
/// numbers) to MQTT 5.0's numbers: 5.0 moved the wildcard rules of section 4.7.1 by
/// one statement; those of 4.7.3 kept their numbers.
#[inline]
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
