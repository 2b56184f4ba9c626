//! A small MQTT 3.1.1 codec: just the packets a load generator needs.
//!
//! Encoders append to a `Vec<u8>` so that many packets can be coalesced into
//! one write. The decoder works on a byte slice and returns `Ok(None)` when
//! the slice does not yet hold a whole packet (partial read), so the caller
//! keeps the bytes and reads more.

use std::fmt;

/// Packet type numbers (high nibble of the first byte).
pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const PINGREQ: u8 = 12;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

/// Largest value the variable-length "remaining length" can carry.
pub const MAX_REMAINING: usize = 268_435_455;

/// A decoding failure: the stream is not valid MQTT 3.1.1 (as far as this
/// client understands it) and the connection should be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed MQTT packet: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// The fields of a CONNECT packet that this client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect<'a> {
    pub client_id: &'a str,
    pub clean_session: bool,
    pub keepalive: u16,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
}

/// A PUBLISH packet, borrowing topic and payload from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: &'a [u8],
    /// Present iff `qos > 0`.
    pub pid: Option<u16>,
    pub payload: &'a [u8],
}

/// A decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Connect(Connect<'a>),
    ConnAck { session_present: bool, code: u8 },
    Publish(Publish<'a>),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe { pid: u16, filters: Vec<(&'a str, u8)> },
    SubAck { pid: u16, codes: &'a [u8] },
    PingReq,
    PingResp,
    Disconnect,
}

/// Human-readable text for a CONNACK return code.
pub fn connack_reason(code: u8) -> &'static str {
    match code {
        0 => "accepted",
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown return code",
    }
}

// ---------------------------------------------------------------- encoding

/// Appends the variable-length encoding of `len` (1..=4 bytes).
pub fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    debug_assert!(len <= MAX_REMAINING);
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Appends a CONNECT packet.
pub fn encode_connect(out: &mut Vec<u8>, c: &Connect<'_>) {
    let mut len = 10 + 2 + c.client_id.len();
    let mut flags = 0u8;
    if c.clean_session {
        flags |= 0x02;
    }
    if let Some(u) = c.username {
        flags |= 0x80;
        len += 2 + u.len();
    }
    if let Some(p) = c.password {
        flags |= 0x40;
        len += 2 + p.len();
    }
    out.push(CONNECT << 4);
    put_remaining_length(out, len);
    put_str(out, b"MQTT");
    out.push(4); // protocol level 3.1.1
    out.push(flags);
    out.extend_from_slice(&c.keepalive.to_be_bytes());
    put_str(out, c.client_id.as_bytes());
    if let Some(u) = c.username {
        put_str(out, u.as_bytes());
    }
    if let Some(p) = c.password {
        put_str(out, p);
    }
}

/// Appends a CONNACK packet (used by tests; a client never sends one).
pub fn encode_connack(out: &mut Vec<u8>, session_present: bool, code: u8) {
    out.extend_from_slice(&[CONNACK << 4, 2, u8::from(session_present), code]);
}

/// Appends the fixed header, topic and packet id of a PUBLISH whose payload
/// (of `payload_len` bytes) the caller appends right after. This is the hot
/// path of the publishers: no intermediate payload buffer.
#[inline]
pub fn encode_publish_header(
    out: &mut Vec<u8>,
    dup: bool,
    qos: u8,
    retain: bool,
    topic: &[u8],
    pid: u16,
    payload_len: usize,
) {
    let mut first = PUBLISH << 4 | (qos & 3) << 1;
    if dup {
        first |= 0x08;
    }
    if retain {
        first |= 0x01;
    }
    let len = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload_len;
    out.push(first);
    put_remaining_length(out, len);
    put_str(out, topic);
    if qos > 0 {
        out.extend_from_slice(&pid.to_be_bytes());
    }
}

/// Appends a whole PUBLISH packet.
pub fn encode_publish(out: &mut Vec<u8>, p: &Publish<'_>) {
    encode_publish_header(
        out,
        p.dup,
        p.qos,
        p.retain,
        p.topic,
        p.pid.unwrap_or(0),
        p.payload.len(),
    );
    out.extend_from_slice(p.payload);
}

/// Appends one of the 4-byte acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP).
#[inline]
pub fn encode_ack(out: &mut Vec<u8>, kind: u8, pid: u16) {
    let flags = if kind == PUBREL { 0x02 } else { 0 };
    let [hi, lo] = pid.to_be_bytes();
    out.extend_from_slice(&[kind << 4 | flags, 2, hi, lo]);
}

/// Appends a SUBSCRIBE packet.
pub fn encode_subscribe(out: &mut Vec<u8>, pid: u16, filters: &[(&str, u8)]) {
    let len = 2 + filters.iter().map(|(f, _)| 2 + f.len() + 1).sum::<usize>();
    out.push(SUBSCRIBE << 4 | 0x02);
    put_remaining_length(out, len);
    out.extend_from_slice(&pid.to_be_bytes());
    for (f, qos) in filters {
        put_str(out, f.as_bytes());
        out.push(*qos);
    }
}

/// Appends a SUBACK packet (used by tests).
pub fn encode_suback(out: &mut Vec<u8>, pid: u16, codes: &[u8]) {
    out.push(SUBACK << 4);
    put_remaining_length(out, 2 + codes.len());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(codes);
}

/// Appends a packet that has no variable header: PINGREQ, PINGRESP, DISCONNECT.
pub fn encode_empty(out: &mut Vec<u8>, kind: u8) {
    out.extend_from_slice(&[kind << 4, 0]);
}

/// Encodes any packet (used by tests and the setup phase; the hot paths call
/// the specialised encoders above).
pub fn encode(out: &mut Vec<u8>, p: &Packet<'_>) {
    match p {
        Packet::Connect(c) => encode_connect(out, c),
        Packet::ConnAck { session_present, code } => encode_connack(out, *session_present, *code),
        Packet::Publish(p) => encode_publish(out, p),
        Packet::PubAck(pid) => encode_ack(out, PUBACK, *pid),
        Packet::PubRec(pid) => encode_ack(out, PUBREC, *pid),
        Packet::PubRel(pid) => encode_ack(out, PUBREL, *pid),
        Packet::PubComp(pid) => encode_ack(out, PUBCOMP, *pid),
        Packet::Subscribe { pid, filters } => encode_subscribe(out, *pid, filters),
        Packet::SubAck { pid, codes } => encode_suback(out, *pid, codes),
        Packet::PingReq => encode_empty(out, PINGREQ),
        Packet::PingResp => encode_empty(out, PINGRESP),
        Packet::Disconnect => encode_empty(out, DISCONNECT),
    }
}

// ---------------------------------------------------------------- decoding

/// Parses the fixed header. Returns `(first byte, remaining length, header
/// length)` or `None` if more bytes are needed.
pub fn decode_fixed_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut mult = 1usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        len += (b & 0x7f) as usize * mult;
        if b & 0x80 == 0 {
            return Ok(Some((first, len, 2 + i)));
        }
        mult *= 128;
    }
    err("remaining length longer than 4 bytes")
}

/// A cursor over the body of one packet.
struct Body<'a> {
    b: &'a [u8],
}

impl<'a> Body<'a> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&v, rest) =
            self.b.split_first().ok_or_else(|| DecodeError("packet too short".into()))?;
        self.b = rest;
        Ok(v)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        if self.b.len() < n {
            return err("string longer than packet");
        }
        let (s, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(s)
    }
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError("string is not UTF-8".into()))
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            err("trailing bytes in packet")
        }
    }
}

/// Decodes one packet from the front of `buf`. Returns the packet and the
/// number of bytes it took, or `Ok(None)` when `buf` holds only part of it.
#[inline]
pub fn decode(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, DecodeError> {
    let Some((first, len, hdr)) = decode_fixed_header(buf)? else {
        return Ok(None);
    };
    let total = hdr + len;
    if buf.len() < total {
        return Ok(None);
    }
    let kind = first >> 4;
    let flags = first & 0x0f;
    let mut body = Body { b: &buf[hdr..total] };
    let expect_flags = |want: u8| {
        if flags == want {
            Ok(())
        } else {
            err(format!("bad fixed-header flags {flags:#x} for packet type {kind}"))
        }
    };
    let pkt = match kind {
        PUBLISH => {
            let qos = (flags >> 1) & 3;
            if qos == 3 {
                return err("PUBLISH with QoS 3");
            }
            let topic = body.bytes()?;
            let pid = if qos > 0 { Some(body.u16()?) } else { None };
            Packet::Publish(Publish {
                dup: flags & 0x08 != 0,
                qos,
                retain: flags & 0x01 != 0,
                topic,
                pid,
                payload: body.b,
            })
        }
        PUBACK | PUBREC | PUBREL | PUBCOMP => {
            expect_flags(if kind == PUBREL { 0x02 } else { 0 })?;
            let pid = body.u16()?;
            body.end()?;
            match kind {
                PUBACK => Packet::PubAck(pid),
                PUBREC => Packet::PubRec(pid),
                PUBREL => Packet::PubRel(pid),
                _ => Packet::PubComp(pid),
            }
        }
        CONNACK => {
            expect_flags(0)?;
            let sp = body.u8()?;
            let code = body.u8()?;
            body.end()?;
            Packet::ConnAck { session_present: sp & 1 != 0, code }
        }
        SUBACK => {
            expect_flags(0)?;
            let pid = body.u16()?;
            Packet::SubAck { pid, codes: body.b }
        }
        PINGREQ | PINGRESP | DISCONNECT => {
            expect_flags(0)?;
            body.end()?;
            match kind {
                PINGREQ => Packet::PingReq,
                PINGRESP => Packet::PingResp,
                _ => Packet::Disconnect,
            }
        }
        CONNECT => {
            expect_flags(0)?;
            if body.bytes()? != b"MQTT" {
                return err("CONNECT protocol name is not MQTT");
            }
            if body.u8()? != 4 {
                return err("CONNECT protocol level is not 4");
            }
            let cf = body.u8()?;
            let keepalive = body.u16()?;
            let client_id = body.str()?;
            if cf & 0x04 != 0 {
                return err("CONNECT with a will is not supported");
            }
            let username = if cf & 0x80 != 0 { Some(body.str()?) } else { None };
            let password = if cf & 0x40 != 0 { Some(body.bytes()?) } else { None };
            body.end()?;
            Packet::Connect(Connect {
                client_id,
                clean_session: cf & 0x02 != 0,
                keepalive,
                username,
                password,
            })
        }
        SUBSCRIBE => {
            expect_flags(0x02)?;
            let pid = body.u16()?;
            let mut filters = Vec::new();
            while !body.b.is_empty() {
                let f = body.str()?;
                let q = body.u8()?;
                filters.push((f, q));
            }
            if filters.is_empty() {
                return err("SUBSCRIBE without topic filters");
            }
            Packet::Subscribe { pid, filters }
        }
        other => return err(format!("unsupported packet type {other}")),
    };
    Ok(Some((pkt, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Packet<'static>> {
        vec![
            Packet::Connect(Connect {
                client_id: "bench-p0",
                clean_session: true,
                keepalive: 60,
                username: None,
                password: None,
            }),
            Packet::Connect(Connect {
                client_id: "",
                clean_session: false,
                keepalive: 0,
                username: Some("user"),
                password: Some(b"secret\0bytes"),
            }),
            Packet::ConnAck { session_present: true, code: 0 },
            Packet::ConnAck { session_present: false, code: 5 },
            Packet::Publish(Publish {
                dup: false,
                qos: 0,
                retain: false,
                topic: b"bench/t/0",
                pid: None,
                payload: b"hello",
            }),
            Packet::Publish(Publish {
                dup: true,
                qos: 1,
                retain: true,
                topic: b"a/b",
                pid: Some(7),
                payload: &[],
            }),
            Packet::Publish(Publish {
                dup: false,
                qos: 2,
                retain: false,
                topic: b"x",
                pid: Some(65535),
                payload: &[0xAB; 300], // 2-byte remaining length
            }),
            Packet::PubAck(1),
            Packet::PubRec(2),
            Packet::PubRel(3),
            Packet::PubComp(65535),
            Packet::Subscribe { pid: 9, filters: vec![("bench/+", 0), ("bench/#", 2)] },
            Packet::SubAck { pid: 9, codes: &[0, 2, 0x80] },
            Packet::PingReq,
            Packet::PingResp,
            Packet::Disconnect,
        ]
    }

    #[test]
    fn round_trip_each_packet() {
        for p in samples() {
            let mut buf = Vec::new();
            encode(&mut buf, &p);
            let (q, n) = decode(&buf).unwrap().unwrap();
            assert_eq!(n, buf.len(), "{p:?}");
            assert_eq!(q, p);
        }
    }

    #[test]
    fn partial_reads_yield_none_until_complete() {
        let mut stream = Vec::new();
        for p in samples() {
            encode(&mut stream, &p);
        }
        // Feed the stream one byte at a time, as the worst possible reader.
        let mut got = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        for &b in &stream {
            buf.push(b);
            while let Some((p, n)) = decode(&buf).unwrap() {
                got.push(format!("{p:?}"));
                buf.drain(..n);
            }
        }
        assert!(buf.is_empty());
        let want: Vec<String> = samples().iter().map(|p| format!("{p:?}")).collect();
        assert_eq!(got, want);
        // And every strict prefix of one packet is incomplete.
        let mut one = Vec::new();
        encode(&mut one, &samples()[6]);
        for i in 0..one.len() {
            assert_eq!(decode(&one[..i]).unwrap(), None, "prefix {i}");
        }
    }

    #[test]
    fn remaining_length_boundaries() {
        for len in [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_REMAINING] {
            let mut buf = vec![PUBLISH << 4];
            put_remaining_length(&mut buf, len);
            let (_, l, h) = decode_fixed_header(&buf).unwrap().unwrap();
            assert_eq!((l, h), (len, buf.len()));
        }
        assert!(decode_fixed_header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert!(decode(&[PUBLISH << 4 | 0x06, 2, 0, 0]).is_err()); // QoS 3
        assert!(decode(&[PUBREL << 4, 2, 0, 1]).is_err()); // PUBREL flags must be 2
        assert!(decode(&[PUBACK << 4, 3, 0, 1, 9]).is_err()); // trailing byte
        assert!(decode(&[PUBLISH << 4, 2, 0, 5]).is_err()); // topic overruns packet
        assert!(decode(&[0xF0, 0]).is_err()); // AUTH is not MQTT 3.1.1
    }
}
