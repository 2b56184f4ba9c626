//! The node link's wire format: what one node sends another over TCP.
//!
//! A link carries one direction: the node that opened it sends, the node that
//! accepted it reads. Every frame is
//!
//! ```text
//! length: u32 (big endian, the bytes after it) | kind: u8 | body
//! ```
//!
//! - `Hello` (first, once): protocol version, node id, boot, cluster address, name;
//! - `Reset`: "forget every route of mine": the sender's routes follow in full;
//! - `Route`: the sender has (or no longer has) subscribers for a filter;
//! - `Publish`: a message for the receiver's subscribers (and, when it is
//!   retained, for its retained store): its 128-bit id, then the message as an
//!   MQTT 5 PUBLISH packet, written and read by the broker's own codec, so topics,
//!   payloads and MQTT 5 properties cross the link as clients send them;
//! - `SharedRoute`: the sender has this many connected members of a shared
//!   subscription (`$share/{group}/{filter}`);
//! - `SharedPublish`: a message for one member of a shared subscription on the
//!   receiver, which the group picked;
//! - `Retain`: a retained message for the receiver's store only (the sender's
//!   retained messages, when the receiver comes up);
//! - `Will`: a client connected to the sender has this will (as a message), or
//!   none any more; the receiver keeps it, to publish should the sender die;
//! - `Claim`: a client connected to the sender; the receiver ends its connection
//!   and answers with
//! - `Handover`: the session, if the receiver held one (subscriptions, window,
//!   queue, QoS 2 state, each message as in `Publish`), or a refusal when the
//!   receiver claimed the same client id later.
//!
//! A node that restarted with sessions from its data directory claims each of
//! them too (`ClaimKind::Recovered`), but takes nothing: the receiver answers
//! whether it holds a session for the id (the client moved while the sender was
//! down) or published the will the sender recovered (as a dead node's will).
//!
//! # Invariants
//! - Sans-IO: bytes in, frames out; a frame is never partly consumed.
//! - A frame over [`Limits::frame_max`] or one that does not decode is an error that
//!   ends the link, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use std::sync::Arc;

use crate::message::{Message, MessageId};
use crate::protocol::codec::{self, PublishProperties, PublishView};
use crate::protocol::{
    Limits as CodecLimits, Packet, PacketId, ProtocolVersion, PublishTopic, QoS, TopicFilter,
};
use crate::session::{Delivery, Entry, SessionImage, Stage, SubOptions};

/// The version of this format; a link from a node speaking another is refused.
pub const VERSION: u8 = 3;

const HELLO: u8 = 1;
const RESET: u8 = 2;
const ROUTE: u8 = 3;
const PUBLISH: u8 = 4;
const CLAIM: u8 = 5;
const HANDOVER: u8 = 6;
const SHARED_ROUTE: u8 = 7;
const SHARED_PUBLISH: u8 = 8;
const RETAIN: u8 = 9;
const WILL: u8 = 10;

/// The largest session image written: beyond, the oldest queued messages stay
/// behind (counted by the sender).
pub const IMAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The length prefix and the kind byte.
const HEAD: usize = 5;

/// What one node says to another.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// Who is sending, first on every link.
    Hello(Hello),
    /// The sender's routes are replaced by those that follow.
    Reset,
    /// The sender has (or no longer has) subscribers for a filter.
    Route {
        /// The filter, never a `$share/` one.
        filter: TopicFilter,
        /// Whether the sender has subscribers for it now.
        present: bool,
    },
    /// A message for the receiver's subscribers (and retained store).
    Publish(Message),
    /// A retained message for the receiver's store, not its subscribers.
    Retain(Message),
    /// The will of a client connected to the sender.
    Will {
        /// The client.
        client_id: String,
        /// Its will as a message; `None`: it has none now.
        will: Option<Message>,
    },
    /// The sender's member count of a shared subscription.
    SharedRoute {
        /// The `$share/{group}/{filter}` filter.
        filter: TopicFilter,
        /// Connected members on the sender.
        members: u32,
    },
    /// A message for one member of a shared subscription on the receiver.
    SharedPublish {
        /// The `$share/{group}/{filter}` filter whose group picked the receiver.
        filter: TopicFilter,
        /// The message.
        message: Message,
    },
    /// A client connected to the sender: the receiver ends its own connection for
    /// the id and answers with `Handover`.
    Claim {
        /// Names the claim in the answer.
        claim: u64,
        /// When the client connected (unix microseconds): the later claim wins.
        stamp: u64,
        /// The client.
        client_id: String,
        /// What the sender wants.
        kind: ClaimKind,
    },
    /// The answer to one of the receiver's claims.
    Handover {
        /// The claim answered.
        claim: u64,
        /// Its client.
        client_id: String,
        /// What the sender had.
        answer: Answer,
    },
}

/// What a claim asks of the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimKind {
    /// A CONNECT that resumes any session: the receiver hands its session over.
    Resume,
    /// A CONNECT with Clean Start (CleanSession): the receiver ends its session.
    CleanStart,
    /// The sender restarted with a session for the id from its data directory:
    /// the receiver keeps what it has, and says what it holds.
    Recovered,
}

impl ClaimKind {
    /// The claim of a CONNECT.
    pub fn of_connect(clean_start: bool) -> Self {
        if clean_start {
            ClaimKind::CleanStart
        } else {
            ClaimKind::Resume
        }
    }

    fn code(self) -> u8 {
        match self {
            ClaimKind::Resume => 0,
            ClaimKind::CleanStart => 1,
            ClaimKind::Recovered => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => ClaimKind::Resume,
            1 => ClaimKind::CleanStart,
            2 => ClaimKind::Recovered,
            _ => return None,
        })
    }
}

/// What a node answers a claim.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// No session here (or one that ended: a clean start, a non-persistent one).
    Nothing,
    /// This node claimed the same client id later: the claimer gives up.
    Refused,
    /// The session, which left this node.
    Session(Box<SessionImage>),
    /// To a `Recovered` claim: this node holds a session for the id, newer than
    /// the recovered one, which the claimer drops.
    Held,
    /// To a `Recovered` claim: this node holds no session for the id, but knows
    /// that the claimer's will for it was published when the claimer died.
    WillPublished,
}

/// The sender of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The link format it speaks ([`VERSION`]).
    pub version: u8,
    /// Its `node_id`, part of its message ids.
    pub node_id: u16,
    /// When it started (unix microseconds): tells a restarted node from the last.
    pub boot: u64,
    /// Its cluster address, as membership names it.
    pub addr: String,
    /// Its node name.
    pub name: String,
    /// With a cluster secret, its proof ([`crate::cluster::auth`]): the MAC of
    /// the accepting node's nonce and of this `Hello` without the proof. Empty
    /// without one.
    pub proof: Vec<u8>,
}

impl Hello {
    /// The bytes a link proof covers: this `Hello`'s frame without its proof.
    pub fn signed_bytes(&self) -> BytesMut {
        let mut buf = BytesMut::new();
        put_hello(&mut buf, &Hello { proof: Vec::new(), ..self.clone() });
        buf
    }
}

/// Why a link's bytes were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Longer than [`Limits::frame_max`].
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// A kind this version does not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The body does not read as its kind.
    #[error("malformed {0} frame")]
    Malformed(&'static str),
}

/// What the decoder accepts.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest frame, length prefix excluded.
    pub frame_max: usize,
}

impl Limits {
    /// Frames large enough for any packet the broker accepts from a client.
    pub fn for_packets(packet_size_max: usize) -> Self {
        Limits { frame_max: packet_size_max + 64 * 1024 }
    }
}

/// Appends a `Hello`.
pub fn put_hello(buf: &mut BytesMut, hello: &Hello) {
    let proof = &hello.proof[..hello.proof.len().min(usize::from(u8::MAX))];
    let body = 1 + 2 + 8 + 2 + hello.addr.len() + 2 + hello.name.len() + 1 + proof.len();
    put_head(buf, HELLO, body);
    buf.put_u8(hello.version);
    buf.put_u16(hello.node_id);
    buf.put_u64(hello.boot);
    put_str(buf, &hello.addr);
    put_str(buf, &hello.name);
    buf.put_u8(proof.len() as u8);
    buf.put_slice(proof);
}

/// Appends a `Reset`.
pub fn put_reset(buf: &mut BytesMut) {
    put_head(buf, RESET, 0);
}

/// Appends a `Route`.
pub fn put_route(buf: &mut BytesMut, filter: &str, present: bool) {
    put_head(buf, ROUTE, 1 + 2 + filter.len());
    buf.put_u8(u8::from(present));
    put_str(buf, filter);
}

/// Appends a `Publish`; `false` (nothing written) when the message cannot be
/// framed as an MQTT 5 PUBLISH (larger than the protocol allows).
pub fn put_publish(buf: &mut BytesMut, message: &Message) -> bool {
    put_message_frame(buf, PUBLISH, message)
}

/// Appends a `Retain`; `false` (nothing written) when the message cannot be framed.
pub fn put_retain(buf: &mut BytesMut, message: &Message) -> bool {
    put_message_frame(buf, RETAIN, message)
}

fn put_message_frame(buf: &mut BytesMut, kind: u8, message: &Message) -> bool {
    put_framed(buf, kind, |buf| put_message(buf, message))
}

/// Appends a frame whose body `body` writes, its length known only after; nothing
/// when `body` says the frame cannot be written.
fn put_framed(buf: &mut BytesMut, kind: u8, body: impl FnOnce(&mut BytesMut) -> bool) -> bool {
    let start = buf.len();
    put_head(buf, kind, 0);
    if !body(buf) {
        buf.truncate(start);
        return false;
    }
    let len = (buf.len() - start - 4) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    true
}

/// A message: its id, then its MQTT 5 PUBLISH (also the message of a durable log
/// record, `persist::record`).
pub(crate) fn put_message(buf: &mut BytesMut, message: &Message) -> bool {
    let view = PublishView {
        topic: message.topic.as_str(),
        payload: &message.payload,
        qos: message.qos,
        // Any id: the link is not an MQTT session, the receiver never answers it.
        packet_id: (message.qos != QoS::AtMostOnce).then(|| PacketId::new(1).expect("non-zero")),
        retain: message.retain,
        dup: false,
        properties: message
            .properties
            .as_deref()
            .map_or_else(PublishProperties::default, PublishProperties::of),
    };
    let measured = view.measure(ProtocolVersion::V5);
    if measured.size() > codec::PACKET_SIZE_MAX {
        return false;
    }
    buf.reserve(16 + measured.size());
    buf.put_u128(message.id.0);
    measured.encode(buf);
    true
}

/// Appends a `SharedRoute`.
pub fn put_shared_route(buf: &mut BytesMut, filter: &str, members: u32) {
    put_head(buf, SHARED_ROUTE, 4 + 2 + filter.len());
    buf.put_u32(members);
    put_str(buf, filter);
}

/// Appends a `SharedPublish`; `false` (nothing written) when the message cannot be
/// framed.
pub fn put_shared_publish(buf: &mut BytesMut, filter: &str, message: &Message) -> bool {
    put_framed(buf, SHARED_PUBLISH, |buf| {
        put_str(buf, filter);
        put_message(buf, message)
    })
}

/// Appends a `Will`; `false` (nothing written) when the will cannot be framed.
pub fn put_will(buf: &mut BytesMut, client_id: &str, will: Option<&Message>) -> bool {
    put_framed(buf, WILL, |buf| {
        put_str(buf, client_id);
        buf.put_u8(u8::from(will.is_some()));
        will.is_none_or(|will| put_message(buf, will))
    })
}

/// Appends a `Claim`.
pub fn put_claim(buf: &mut BytesMut, claim: u64, stamp: u64, client_id: &str, kind: ClaimKind) {
    put_head(buf, CLAIM, 8 + 8 + 1 + 2 + client_id.len());
    buf.put_u64(claim);
    buf.put_u64(stamp);
    buf.put_u8(kind.code());
    put_str(buf, client_id);
}

/// Appends a `Handover`; returns the queued messages left out to keep the frame
/// within [`IMAGE_BYTES_MAX`].
pub fn put_handover(buf: &mut BytesMut, claim: u64, client_id: &str, answer: &Answer) -> usize {
    let mut left_out = 0;
    put_framed(buf, HANDOVER, |buf| {
        let start = buf.len();
        buf.put_u64(claim);
        put_str(buf, client_id);
        match answer {
            Answer::Nothing => buf.put_u8(0),
            Answer::Refused => buf.put_u8(1),
            Answer::Held => buf.put_u8(3),
            Answer::WillPublished => buf.put_u8(4),
            Answer::Session(image) => {
                buf.put_u8(2);
                buf.put_u32(image.subscriptions.len() as u32);
                for (filter, options) in &image.subscriptions {
                    put_str(buf, filter.as_str());
                    options.put(buf);
                }
                buf.put_u32(image.inflight.len() as u32);
                for entry in &image.inflight {
                    buf.put_u16(entry.packet_id.get());
                    buf.put_u8(match entry.stage {
                        Stage::PubAckDue => 0,
                        Stage::PubRecDue => 1,
                        Stage::PubCompDue => 2,
                    });
                    put_delivery(buf, &entry.delivery);
                }
                let count_at = buf.len();
                buf.put_u32(0);
                let mut count = 0u32;
                for delivery in &image.mqueue {
                    if buf.len() - start > IMAGE_BYTES_MAX {
                        left_out += 1;
                        continue;
                    }
                    if put_delivery(buf, delivery) {
                        count += 1;
                    }
                }
                buf[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
                buf.put_u32(image.awaiting_rel.len() as u32);
                for id in &image.awaiting_rel {
                    buf.put_u16(id.get());
                }
            }
        }
        true
    });
    left_out
}

/// A delivery: its QoS, flags, subscription ids, shared filter and message.
fn put_delivery(buf: &mut BytesMut, delivery: &Delivery) -> bool {
    let mut message = BytesMut::new();
    if !put_message(&mut message, &delivery.message) {
        return false;
    }
    buf.put_u8(delivery.qos as u8);
    buf.put_u8(u8::from(delivery.retain));
    buf.put_u16(delivery.sub_ids.len() as u16);
    for id in &delivery.sub_ids {
        buf.put_u32(*id);
    }
    put_str(buf, delivery.shared.as_ref().map_or("", TopicFilter::as_str));
    buf.put_u32(message.len() as u32);
    buf.put_slice(&message);
    true
}

fn put_head(buf: &mut BytesMut, kind: u8, body: usize) {
    buf.reserve(HEAD + body);
    buf.put_u32((1 + body) as u32);
    buf.put_u8(kind);
}

fn put_str(buf: &mut BytesMut, s: &str) {
    debug_assert!(s.len() <= usize::from(u16::MAX), "names and filters fit a u16");
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

/// Decodes one frame from the front of `buf`: `Ok(None)`, consuming nothing, while
/// it holds no whole frame.
pub fn decode(buf: &mut BytesMut, limits: Limits) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > limits.frame_max {
        return Err(FrameError::TooLarge(len));
    }
    if len == 0 {
        return Err(FrameError::Malformed("empty"));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(4);
    let mut body = buf.split_to(len);
    let kind = body.get_u8();
    match kind {
        HELLO => decode_hello(body.freeze()).map(|h| Some(Frame::Hello(h))),
        RESET if body.is_empty() => Ok(Some(Frame::Reset)),
        RESET => Err(FrameError::Malformed("reset")),
        ROUTE => decode_route(body.freeze()).map(Some),
        PUBLISH => get_message(body).map(|m| Some(Frame::Publish(m))),
        RETAIN => get_message(body).map(|m| Some(Frame::Retain(m))),
        WILL => {
            let client_id = get_str_mut(&mut body, "will")?;
            need(&body, 1, "will")?;
            let will = match body.get_u8() {
                0 if body.is_empty() => None,
                1 => Some(get_message(body)?),
                _ => return Err(FrameError::Malformed("will")),
            };
            Ok(Some(Frame::Will { client_id, will }))
        }
        CLAIM => decode_claim(body.freeze()).map(Some),
        SHARED_ROUTE => {
            need(&body, 4, "shared route")?;
            let members = body.get_u32();
            let filter = get_shared_filter(&mut body, "shared route")?;
            if body.has_remaining() {
                return Err(FrameError::Malformed("shared route"));
            }
            Ok(Some(Frame::SharedRoute { filter, members }))
        }
        SHARED_PUBLISH => {
            let filter = get_shared_filter(&mut body, "shared publish")?;
            let message = get_message(body)?;
            Ok(Some(Frame::SharedPublish { filter, message }))
        }
        HANDOVER => decode_handover(body).map(Some),
        other => Err(FrameError::UnknownKind(other)),
    }
}

fn get_str(body: &mut Bytes, what: &'static str) -> Result<String, FrameError> {
    if body.remaining() < 2 {
        return Err(FrameError::Malformed(what));
    }
    let len = usize::from(body.get_u16());
    if body.remaining() < len {
        return Err(FrameError::Malformed(what));
    }
    String::from_utf8(body.split_to(len).to_vec()).map_err(|_| FrameError::Malformed(what))
}

fn decode_hello(mut body: Bytes) -> Result<Hello, FrameError> {
    if body.remaining() < 1 + 2 + 8 {
        return Err(FrameError::Malformed("hello"));
    }
    let version = body.get_u8();
    let node_id = body.get_u16();
    let boot = body.get_u64();
    let addr = get_str(&mut body, "hello")?;
    let name = get_str(&mut body, "hello")?;
    if body.remaining() < 1 {
        return Err(FrameError::Malformed("hello"));
    }
    let proof_len = usize::from(body.get_u8());
    if body.remaining() != proof_len {
        return Err(FrameError::Malformed("hello"));
    }
    let proof = body.to_vec();
    Ok(Hello { version, node_id, boot, addr, name, proof })
}

fn decode_route(mut body: Bytes) -> Result<Frame, FrameError> {
    if body.remaining() < 1 {
        return Err(FrameError::Malformed("route"));
    }
    let present = match body.get_u8() {
        0 => false,
        1 => true,
        _ => return Err(FrameError::Malformed("route")),
    };
    let filter = get_str(&mut body, "route")?;
    if body.has_remaining() {
        return Err(FrameError::Malformed("route"));
    }
    let filter =
        TopicFilter::try_from(filter.as_str()).map_err(|_| FrameError::Malformed("route"))?;
    Ok(Frame::Route { filter, present })
}

fn decode_claim(mut body: Bytes) -> Result<Frame, FrameError> {
    if body.remaining() < 8 + 8 + 1 {
        return Err(FrameError::Malformed("claim"));
    }
    let claim = body.get_u64();
    let stamp = body.get_u64();
    let kind = ClaimKind::from_code(body.get_u8()).ok_or(FrameError::Malformed("claim"))?;
    let client_id = get_str(&mut body, "claim")?;
    if body.has_remaining() {
        return Err(FrameError::Malformed("claim"));
    }
    Ok(Frame::Claim { claim, stamp, client_id, kind })
}

/// Reads `n` bytes of `body` as a `T`, or fails as a malformed `what`.
fn need(body: &BytesMut, n: usize, what: &'static str) -> Result<(), FrameError> {
    if body.remaining() < n {
        return Err(FrameError::Malformed(what));
    }
    Ok(())
}

fn decode_handover(mut body: BytesMut) -> Result<Frame, FrameError> {
    const WHAT: &str = "handover";
    need(&body, 8, WHAT)?;
    let claim = body.get_u64();
    let client_id = get_str_mut(&mut body, WHAT)?;
    need(&body, 1, WHAT)?;
    let answer = match body.get_u8() {
        0 => Answer::Nothing,
        1 => Answer::Refused,
        2 => Answer::Session(Box::new(decode_image(&mut body)?)),
        3 => Answer::Held,
        4 => Answer::WillPublished,
        _ => return Err(FrameError::Malformed(WHAT)),
    };
    if body.has_remaining() {
        return Err(FrameError::Malformed(WHAT));
    }
    Ok(Frame::Handover { claim, client_id, answer })
}

fn get_str_mut(body: &mut BytesMut, what: &'static str) -> Result<String, FrameError> {
    need(body, 2, what)?;
    let len = usize::from(body.get_u16());
    need(body, len, what)?;
    String::from_utf8(body.split_to(len).to_vec()).map_err(|_| FrameError::Malformed(what))
}

/// A `$share/{group}/{filter}` filter.
fn get_shared_filter(body: &mut BytesMut, what: &'static str) -> Result<TopicFilter, FrameError> {
    let filter = get_str_mut(body, what)?;
    match TopicFilter::try_from(filter.as_str()) {
        Ok(filter) if filter.is_shared() => Ok(filter),
        _ => Err(FrameError::Malformed(what)),
    }
}

fn get_filter(body: &mut BytesMut) -> Result<TopicFilter, FrameError> {
    let filter = get_str_mut(body, "handover")?;
    TopicFilter::try_from(filter.as_str()).map_err(|_| FrameError::Malformed("handover"))
}

fn get_qos(body: &mut BytesMut) -> Result<QoS, FrameError> {
    need(body, 1, "handover")?;
    QoS::from_bits(body.get_u8()).ok_or(FrameError::Malformed("handover"))
}

fn decode_image(body: &mut BytesMut) -> Result<SessionImage, FrameError> {
    const WHAT: &str = "handover";
    let mut image = SessionImage::default();
    need(body, 4, WHAT)?;
    for _ in 0..body.get_u32() {
        let filter = get_filter(body)?;
        let qos = get_qos(body)?;
        need(body, 5, WHAT)?;
        let options = SubOptions::from_wire(qos, body.get_u8(), body.get_u32());
        image.subscriptions.push((filter, options));
    }
    need(body, 4, WHAT)?;
    for _ in 0..body.get_u32() {
        need(body, 3, WHAT)?;
        let packet_id = PacketId::new(body.get_u16()).ok_or(FrameError::Malformed(WHAT))?;
        let stage = match body.get_u8() {
            0 => Stage::PubAckDue,
            1 => Stage::PubRecDue,
            2 => Stage::PubCompDue,
            _ => return Err(FrameError::Malformed(WHAT)),
        };
        let delivery = get_delivery(body)?;
        let qos_fits = match stage {
            Stage::PubAckDue => delivery.qos == QoS::AtLeastOnce,
            _ => delivery.qos == QoS::ExactlyOnce,
        };
        if !qos_fits {
            return Err(FrameError::Malformed(WHAT));
        }
        image.inflight.push(Entry { packet_id, delivery, stage, sent: false });
    }
    need(body, 4, WHAT)?;
    for _ in 0..body.get_u32() {
        image.mqueue.push(get_delivery(body)?);
    }
    need(body, 4, WHAT)?;
    for _ in 0..body.get_u32() {
        need(body, 2, WHAT)?;
        image.awaiting_rel.push(PacketId::new(body.get_u16()).ok_or(FrameError::Malformed(WHAT))?);
    }
    Ok(image)
}

fn get_delivery(body: &mut BytesMut) -> Result<Delivery, FrameError> {
    const WHAT: &str = "handover";
    let qos = get_qos(body)?;
    need(body, 3, WHAT)?;
    let retain = body.get_u8() != 0;
    let ids = usize::from(body.get_u16());
    need(body, ids * 4, WHAT)?;
    let sub_ids = (0..ids).map(|_| body.get_u32()).collect();
    let shared = get_str_mut(body, WHAT)?;
    let shared = match shared.as_str() {
        "" => None,
        filter => Some(TopicFilter::try_from(filter).map_err(|_| FrameError::Malformed(WHAT))?),
    };
    need(body, 4, WHAT)?;
    let len = body.get_u32() as usize;
    need(body, len, WHAT)?;
    let message = get_message(body.split_to(len))?;
    Ok(Delivery { message: Arc::new(message), qos, retain, sub_ids, shared })
}

pub(crate) fn get_message(mut body: BytesMut) -> Result<Message, FrameError> {
    if body.len() < 16 {
        return Err(FrameError::Malformed("publish"));
    }
    let id = MessageId(body.get_u128());
    let limits =
        CodecLimits { packet_size_max: codec::PACKET_SIZE_MAX, protocol: ProtocolVersion::V5 };
    let whole = body.len();
    let publish = match codec::decode(&mut body, &limits) {
        Ok(Some(Packet::Publish(publish))) if body.is_empty() && whole > 0 => publish,
        _ => return Err(FrameError::Malformed("publish")),
    };
    let PublishTopic::Name(topic) = publish.topic else {
        return Err(FrameError::Malformed("publish"));
    };
    Ok(Message {
        id,
        topic,
        payload: publish.payload,
        qos: publish.qos.qos(),
        retain: publish.retain,
        // A remote publisher is no local session: No Local never matches it.
        publisher: None,
        properties: publish.properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Properties, TopicName};
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits::for_packets(1 << 20)
    }

    fn message(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Message {
        Message {
            id: MessageId(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            topic: TopicName::try_from(topic).unwrap(),
            payload: Bytes::copy_from_slice(payload),
            qos,
            retain,
            publisher: None,
            properties: None,
        }
    }

    #[test]
    fn every_kind_round_trips_and_partial_frames_wait() {
        let hello = Hello {
            version: VERSION,
            node_id: 7,
            boot: 42,
            addr: "127.0.0.1:4370".into(),
            name: "a".into(),
            proof: vec![9; 32],
        };
        let props = Properties {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        };
        let mut with_props = message("t/1", b"hi", QoS::ExactlyOnce, true);
        with_props.properties = Some(Box::new(props));
        let mut buf = BytesMut::new();
        put_hello(&mut buf, &hello);
        put_reset(&mut buf);
        put_route(&mut buf, "a/+/c", true);
        put_route(&mut buf, "#", false);
        assert!(put_publish(&mut buf, &message("x", b"", QoS::AtMostOnce, false)));
        assert!(put_publish(&mut buf, &with_props));
        put_shared_route(&mut buf, "$share/g/a/#", 3);
        assert!(put_shared_publish(
            &mut buf,
            "$share/g/a/#",
            &message("a/b", b"s", QoS::AtLeastOnce, false)
        ));
        put_claim(&mut buf, 7 << 48 | 9, 1234, "dev-1", ClaimKind::Resume);
        put_claim(&mut buf, 3, 99, "dev-2", ClaimKind::Recovered);
        assert!(put_retain(&mut buf, &message("r", b"kept", QoS::AtMostOnce, true)));
        assert!(put_will(&mut buf, "dev", Some(&message("w", b"gone", QoS::AtLeastOnce, true))));
        assert!(put_will(&mut buf, "dev", None));
        put_handover(&mut buf, 5, "dev-1", &Answer::Refused);
        put_handover(&mut buf, 6, "dev-2", &Answer::Held);
        put_handover(&mut buf, 7, "dev-3", &Answer::WillPublished);
        let whole = buf.clone();
        // Byte by byte: nothing decodes before its last byte arrives.
        let mut fed = BytesMut::new();
        let mut frames = Vec::new();
        for b in whole.iter() {
            fed.put_u8(*b);
            while let Some(frame) = decode(&mut fed, limits()).unwrap() {
                frames.push(frame);
            }
        }
        assert!(fed.is_empty());
        assert_eq!(
            frames,
            vec![
                Frame::Hello(hello),
                Frame::Reset,
                Frame::Route { filter: TopicFilter::try_from("a/+/c").unwrap(), present: true },
                Frame::Route { filter: TopicFilter::try_from("#").unwrap(), present: false },
                Frame::Publish(message("x", b"", QoS::AtMostOnce, false)),
                Frame::Publish(with_props),
                Frame::SharedRoute {
                    filter: TopicFilter::try_from("$share/g/a/#").unwrap(),
                    members: 3
                },
                Frame::SharedPublish {
                    filter: TopicFilter::try_from("$share/g/a/#").unwrap(),
                    message: message("a/b", b"s", QoS::AtLeastOnce, false),
                },
                Frame::Claim {
                    claim: 7 << 48 | 9,
                    stamp: 1234,
                    client_id: "dev-1".into(),
                    kind: ClaimKind::Resume
                },
                Frame::Claim {
                    claim: 3,
                    stamp: 99,
                    client_id: "dev-2".into(),
                    kind: ClaimKind::Recovered
                },
                Frame::Retain(message("r", b"kept", QoS::AtMostOnce, true)),
                Frame::Will {
                    client_id: "dev".into(),
                    will: Some(message("w", b"gone", QoS::AtLeastOnce, true)),
                },
                Frame::Will { client_id: "dev".into(), will: None },
                Frame::Handover { claim: 5, client_id: "dev-1".into(), answer: Answer::Refused },
                Frame::Handover { claim: 6, client_id: "dev-2".into(), answer: Answer::Held },
                Frame::Handover {
                    claim: 7,
                    client_id: "dev-3".into(),
                    answer: Answer::WillPublished
                },
            ]
        );
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 2, 99, 0][..]);
        assert_eq!(decode(&mut buf, limits()), Err(FrameError::UnknownKind(99)));
        let mut buf = BytesMut::from(&[0xffu8, 0, 0, 0][..]);
        assert!(matches!(decode(&mut buf, limits()), Err(FrameError::TooLarge(_))));
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(decode(&mut buf, limits()), Err(FrameError::Malformed("empty")));
        // A route whose filter is not a valid filter [MQTT-4.7.1-1].
        let mut buf = BytesMut::new();
        put_route(&mut buf, "a/#/b", true);
        assert_eq!(decode(&mut buf, limits()), Err(FrameError::Malformed("route")));
        // A publish whose packet is cut short inside its frame.
        let mut buf = BytesMut::new();
        put_publish(&mut buf, &message("t", b"payload", QoS::AtLeastOnce, false));
        let len = buf.len();
        buf[3] -= 3;
        buf.truncate(len - 3);
        assert_eq!(decode(&mut buf, limits()), Err(FrameError::Malformed("publish")));
        // A claim of a kind this version does not know.
        let mut buf = BytesMut::new();
        put_claim(&mut buf, 1, 2, "c", ClaimKind::Resume);
        buf[HEAD + 16] = 3;
        assert_eq!(decode(&mut buf, limits()), Err(FrameError::Malformed("claim")));
    }

    #[test]
    fn a_session_image_round_trips() {
        use crate::session::{Delivery, Entry, SessionImage, Stage, SubOptions};
        let m = |n: u8| Arc::new(message("t/x", &[n], QoS::ExactlyOnce, false));
        let image = SessionImage {
            subscriptions: vec![
                (
                    TopicFilter::try_from("t/+").unwrap(),
                    SubOptions { id: Some(9), no_local: true, ..SubOptions::qos(QoS::ExactlyOnce) },
                ),
                (TopicFilter::try_from("$share/g/t/#").unwrap(), SubOptions::qos(QoS::AtLeastOnce)),
            ],
            inflight: vec![
                Entry {
                    packet_id: PacketId::new(3).unwrap(),
                    delivery: Delivery::new(m(1), QoS::ExactlyOnce, false),
                    stage: Stage::PubCompDue,
                    sent: false,
                },
                Entry {
                    packet_id: PacketId::new(4).unwrap(),
                    delivery: Delivery {
                        sub_ids: vec![9],
                        ..Delivery::new(m(2), QoS::AtLeastOnce, true)
                    },
                    stage: Stage::PubAckDue,
                    sent: false,
                },
            ],
            mqueue: vec![Delivery {
                shared: Some(TopicFilter::try_from("$share/g/t/#").unwrap()),
                ..Delivery::new(m(3), QoS::AtLeastOnce, false)
            }],
            awaiting_rel: vec![PacketId::new(11).unwrap()],
        };
        let mut buf = BytesMut::new();
        assert_eq!(put_handover(&mut buf, 42, "c", &Answer::Session(Box::new(image.clone()))), 0);
        let decoded = decode(&mut buf, limits()).unwrap().unwrap();
        assert_eq!(
            decoded,
            Frame::Handover {
                claim: 42,
                client_id: "c".into(),
                answer: Answer::Session(Box::new(image))
            }
        );
        // A stage that its QoS cannot have is refused.
        let bad = SessionImage {
            inflight: vec![Entry {
                packet_id: PacketId::new(1).unwrap(),
                delivery: Delivery::new(m(1), QoS::AtLeastOnce, false),
                stage: Stage::PubRecDue,
                sent: false,
            }],
            ..SessionImage::default()
        };
        let mut buf = BytesMut::new();
        put_handover(&mut buf, 1, "c", &Answer::Session(Box::new(bad)));
        assert_eq!(decode(&mut buf, limits()), Err(FrameError::Malformed("handover")));
    }

    proptest! {
        /// Any message survives the link as it was sent.
        #[test]
        fn publish_round_trips(
            topic in "[a-z]{1,8}(/[a-z0-9]{1,8}){0,4}",
            payload in proptest::collection::vec(any::<u8>(), 0..2000),
            qos in 0u8..3,
            retain in any::<bool>(),
            id in any::<u128>(),
        ) {
            let mut m = message(&topic, &payload, QoS::from_bits(qos).unwrap(), retain);
            m.id = MessageId(id);
            let mut buf = BytesMut::new();
            prop_assert!(put_publish(&mut buf, &m));
            prop_assert_eq!(decode(&mut buf, limits()).unwrap(), Some(Frame::Publish(m)));
            prop_assert!(buf.is_empty());
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut buf, limits()) {}
        }
    }
}
