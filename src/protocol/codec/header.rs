//! The fixed header [MQTT-2.2] (MQTT 5: [MQTT-2.1]) read and written, the field
//! reader of packet bodies, and the primitives every layout shares: Variable Byte
//! Integers, length-prefixed strings and binary data.

use super::*;

/// The largest value of a Variable Byte Integer [MQTT-1.5.5], as a `u32`.
pub(super) const VBI_MAX: u32 = 268_435_455;

/// What the fixed header says.
#[derive(Debug)]
pub(super) struct FixedHeader {
    /// Byte 1: packet type and flags, already checked.
    pub(super) first: u8,
    /// Length of the fixed header itself: 2 to 5 bytes.
    pub(super) len: usize,
    /// The remaining length: bytes of variable header and payload.
    pub(super) remaining: usize,
    /// Whether the remaining length is in the minimum number of bytes. Already
    /// checked in MQTT 5; CONNECT, whose level tells only once it is decoded, checks
    /// it then.
    pub(super) minimal: bool,
}

impl FixedHeader {
    /// Parses and checks the fixed header at the front of `buf`; `Ok(None)` while it
    /// is incomplete.
    #[inline]
    pub(super) fn parse(buf: &[u8], limits: &Limits) -> Result<Option<FixedHeader>, DecodeError> {
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
#[inline]
pub(super) fn check_first_byte(
    first: u8,
    protocol: ProtocolVersion,
) -> Result<(), ProtocolViolation> {
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
#[inline]
pub(super) fn check_remaining_len(
    kind: u8,
    remaining: usize,
    v5: bool,
) -> Result<(), ProtocolViolation> {
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

pub(super) const fn violation(clause: &'static str, reason: &'static str) -> ProtocolViolation {
    ProtocolViolation::new(clause, reason)
}

pub(super) const fn protocol_error(
    clause: &'static str,
    reason: &'static str,
) -> ProtocolViolation {
    ProtocolViolation::protocol_error(clause, reason)
}

pub(super) const REMAINING_LEN_TOO_LONG: ProtocolViolation =
    violation("MQTT-2.2.3", "remaining length longer than 4 bytes");
pub(super) const VBI_TOO_LONG: ProtocolViolation =
    violation("MQTT-1.5.5", "Variable Byte Integer longer than 4 bytes");
pub(super) const NON_MINIMAL_VBI: ProtocolViolation =
    violation("MQTT-1.5.5-1", "Variable Byte Integer not in the minimum number of bytes");
pub(super) const NO_PACKET_ID: ProtocolViolation =
    violation("MQTT-2.3.1-1", "packet identifier missing or zero");
pub(super) const NO_PACKET_ID_V5: ProtocolViolation =
    violation("MQTT-2.2.1", "packet identifier missing");
pub(super) const ZERO_PACKET_ID_V5: ProtocolViolation =
    protocol_error("MQTT-2.2.1-3", "packet identifier is zero");
pub(super) const NOT_UTF8: ProtocolViolation =
    violation("MQTT-1.5.3-1", "string is not well-formed UTF-8");
pub(super) const HAS_NUL: ProtocolViolation = violation("MQTT-1.5.3-2", "string contains U+0000");
pub(super) const NOT_UTF8_V5: ProtocolViolation =
    violation("MQTT-1.5.4-1", "string is not well-formed UTF-8");
pub(super) const HAS_NUL_V5: ProtocolViolation =
    violation("MQTT-1.5.4-2", "string contains U+0000");

/// Reads fields off the front of a packet body. Every read that runs past the end
/// fails with the violation the caller names: the field it wanted is missing, or a
/// length prefix overruns the remaining length.
#[derive(Debug)]
pub(super) struct Reader {
    pub(super) buf: Bytes,
    /// MQTT 5: string errors cite the 5.0 numbering, packet ids of 0 are a Protocol
    /// Error.
    pub(super) v5: bool,
}

impl Reader {
    #[inline]
    pub(super) fn u8(&mut self, missing: ProtocolViolation) -> Result<u8, ProtocolViolation> {
        if self.buf.is_empty() {
            return Err(missing);
        }
        Ok(self.buf.get_u8())
    }

    #[inline]
    pub(super) fn u16(&mut self, missing: ProtocolViolation) -> Result<u16, ProtocolViolation> {
        if self.buf.len() < 2 {
            return Err(missing);
        }
        Ok(self.buf.get_u16())
    }

    #[inline]
    pub(super) fn u32(&mut self, missing: ProtocolViolation) -> Result<u32, ProtocolViolation> {
        if self.buf.len() < 4 {
            return Err(missing);
        }
        Ok(self.buf.get_u32())
    }

    /// A Variable Byte Integer in at most 4 bytes and in the minimum number of bytes
    /// [MQTT-1.5.5-1] (only MQTT 5 has them outside the fixed header).
    #[inline]
    pub(super) fn vbi(&mut self, missing: ProtocolViolation) -> Result<u32, ProtocolViolation> {
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

    #[inline]
    pub(super) fn packet_id(&mut self) -> Result<PacketId, ProtocolViolation> {
        if self.v5 {
            PacketId::new(self.u16(NO_PACKET_ID_V5)?).ok_or(ZERO_PACKET_ID_V5)
        } else {
            PacketId::new(self.u16(NO_PACKET_ID)?).ok_or(NO_PACKET_ID)
        }
    }

    /// A reason code byte, which must be one of `allowed`.
    #[inline]
    pub(super) fn reason(
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
    #[inline]
    pub(super) fn binary(
        &mut self,
        missing: ProtocolViolation,
    ) -> Result<Bytes, ProtocolViolation> {
        let len = usize::from(self.u16(missing.clone())?);
        if self.buf.len() < len {
            return Err(missing);
        }
        Ok(self.buf.split_to(len))
    }

    /// A string checked for UTF-8 only [MQTT-1.5.3-1]; the caller checks for U+0000.
    #[inline]
    pub(super) fn utf8(
        &mut self,
        missing: ProtocolViolation,
    ) -> Result<ByteString, ProtocolViolation> {
        let v5 = self.v5;
        ByteString::try_from(self.binary(missing)?)
            .map_err(|_| if v5 { NOT_UTF8_V5 } else { NOT_UTF8 })
    }

    /// A UTF-8 string without U+0000 [MQTT-1.5.3-1], [MQTT-1.5.3-2].
    #[inline]
    pub(super) fn string(
        &mut self,
        missing: ProtocolViolation,
    ) -> Result<ByteString, ProtocolViolation> {
        let s = self.utf8(missing)?;
        // A 0 byte in UTF-8 can only be U+0000.
        if s.as_bytes().contains(&0) {
            return Err(if self.v5 { HAS_NUL_V5 } else { HAS_NUL });
        }
        Ok(s)
    }

    /// Fails with `leftover` unless every byte was read.
    #[inline]
    pub(super) fn finish(self, leftover: ProtocolViolation) -> Result<(), ProtocolViolation> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(leftover)
        }
    }
}

/// Reserves room for the whole packet, then writes byte 1 and the remaining length.
#[inline]
pub(super) fn put_fixed_header(buf: &mut BytesMut, first: u8, remaining: usize) {
    assert!(
        remaining <= REMAINING_LEN_MAX,
        "remaining length {remaining} exceeds the protocol maximum {REMAINING_LEN_MAX} [MQTT-2.2.3]"
    );
    buf.reserve(1 + vbi_len(remaining) + remaining);
    buf.put_u8(first);
    put_vbi_digits(buf, remaining);
}

/// Writes a Variable Byte Integer [MQTT-1.5.5].
#[inline]
pub(super) fn put_vbi(buf: &mut BytesMut, value: usize) {
    assert!(
        value <= VBI_MAX as usize,
        "Variable Byte Integer {value} exceeds the protocol maximum {VBI_MAX} [MQTT-1.5.5]"
    );
    put_vbi_digits(buf, value);
}

/// Writes `value`, at most [`VBI_MAX`], as a Variable Byte Integer: seven bits per
/// byte, least significant first; bit 7 flags a next byte [MQTT-1.5.5].
#[inline]
pub(super) fn put_vbi_digits(buf: &mut BytesMut, value: usize) {
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
#[inline]
pub(super) fn put_binary(buf: &mut BytesMut, bytes: &[u8]) {
    let len = u16::try_from(bytes.len())
        .expect("a string or binary field is at most 65535 bytes: see encode's # Panics");
    buf.put_u16(len);
    buf.put_slice(bytes);
}

/// A length-prefixed field.
#[inline]
pub(super) fn field(len: usize) -> usize {
    2 + len
}

/// Bytes a Variable Byte Integer takes on the wire.
#[inline]
pub(super) fn vbi_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}
