//! One client's session: the MQTT state that outlives a connection when the client
//! asked for a persistent session (CleanSession = 0, or an MQTT 5 Session Expiry
//! Interval above 0), as emqttd defined it.
//!
//! Sans-IO: no sockets, no executor, no clock. Output packets are encoded into the
//! connection's output buffer handed in by the caller (`out`); an offline session
//! gets no buffer and queues instead. The caller passes the time (`now_us`, Unix
//! microseconds) where MQTT 5 message expiry needs it.
//!
//! What the session writes depends on the connection it is attached to ([`Link`]):
//! MQTT 3 clients get plain PUBLISH packets; MQTT 5 clients get the message's
//! properties, the matching Subscription Identifiers, the remaining Message Expiry
//! Interval and, when they allow it, outgoing topic aliases, and never a packet
//! larger than their Maximum Packet Size.
//!
//! Owner: the shard that owns the client id. A `Session` never crosses a ring.
//!
//! # Invariants
//! - At most `inflight_max` unacknowledged QoS 1/2 messages, and at most
//!   `min(inflight_max, client's Receive Maximum)` of them sent on the current
//!   connection [MQTT-3.3.4-9], [MQTT-4.9.0-1]: a client that comes back with a
//!   smaller Receive Maximum gets the rest as it acknowledges.
//! - Timed resends (`retry`) only over MQTT 3; MQTT 5 resends only when a session
//!   resumes [MQTT-4.4.0-1].
//! - Every acknowledgement matches the exchange of its packet id; any other pair is
//!   a protocol violation [MQTT-4.8.0-1].
//! - No PUBLISH that cannot be framed reaches the codec: a message that grew past
//!   the protocol maximum on re-encoding is dropped for this client and counted.
//! - Messages reach the client in the order they reached the session, across the
//!   window, the mqueue and reconnects [MQTT-4.6.0-1]: nothing overtakes a queued
//!   message.
//! - A QoS 2 message from the client is routed once, however often it is resent
//!   before its PUBREL [MQTT-4.3.3-2].

mod image;
mod inflight;
mod journal;
mod mqueue;
#[cfg(any(test, feature = "fuzzing"))]
pub mod script;

use bytes::BytesMut;
use bytestring::ByteString;
use hashbrown::{HashMap, HashSet};

use crate::small_map::SmallMap;

use crate::message::Message;
use crate::protocol::{
    codec, Ack, Connect, MeasuredPublish, Packet, PacketId, ProtocolVersion, ProtocolViolation,
    PublishProperties, PublishView, QoS, ReasonCode, TopicFilter, TopicName,
};

pub use image::SessionImage;
pub use inflight::{AckKind, Acked, Entry, Inflight, Stage};
pub use journal::Change;
pub use mqueue::{Delivery, DropReason, Mqueue};

/// How a PUBLISH names its topic to the client (MQTT 5 outgoing topic aliases).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AliasOut {
    /// The full topic, no alias.
    None,
    /// An alias the client knows: an empty topic.
    Known(u16),
    /// The full topic with a new alias, which the client learns from it.
    New(u16),
}

/// The limits one session enforces. Every session holds a copy, so 32 bits each
/// where `usize` would double it: beyond four billion messages or bytes, a limit
/// is as good as none.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// Unacknowledged QoS 1/2 messages toward the client.
    pub inflight_max: u16,
    /// Messages waiting in the mqueue.
    pub mqueue_len_max: u32,
    /// Whether QoS 0 messages wait in the mqueue too.
    pub mqueue_store_qos0: bool,
    /// Bytes pending in the connection's output buffer beyond which QoS 0 messages
    /// go to the mqueue instead (a slow reader must not grow the buffer forever).
    pub out_buffer_max: u32,
}

/// What the session needs to know of the connection it writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// The protocol level of the connection.
    pub protocol: ProtocolVersion,
    /// The client's Maximum Packet Size: larger PUBLISHes are not sent to it
    /// [MQTT-3.1.2-24] (named so in MQTT 5; MQTT 3 has no limit).
    pub packet_size_max: usize,
    /// The client's Topic Alias Maximum: how many outgoing aliases it accepts.
    pub topic_alias_max: u16,
    /// The client's Receive Maximum: how many unacknowledged QoS 1/2 PUBLISHes it
    /// accepts at once [MQTT-3.3.4-9].
    pub receive_max: u16,
    /// Bytes taken off the front of every topic sent: its listener's mount point,
    /// which every topic it can receive starts with.
    pub topic_strip: u16,
}

impl Link {
    /// An MQTT 3.1.1 connection: no limits of its own, no aliases.
    pub fn v3(protocol: ProtocolVersion) -> Link {
        Link {
            protocol,
            packet_size_max: usize::MAX,
            topic_alias_max: 0,
            receive_max: u16::MAX,
            topic_strip: 0,
        }
    }

    /// The link a CONNECT asks for: MQTT 5 clients state their limits in its
    /// properties; MQTT 3 clients have none.
    pub fn of(connect: &Connect) -> Link {
        if !connect.protocol.is_v5() {
            return Link::v3(connect.protocol);
        }
        let p = &connect.properties;
        Link {
            protocol: connect.protocol,
            packet_size_max: p.maximum_packet_size.map_or(usize::MAX, |m| m as usize),
            topic_alias_max: p.topic_alias_maximum.unwrap_or(0),
            receive_max: p.receive_maximum.unwrap_or(u16::MAX),
            topic_strip: 0,
        }
    }
}

/// The options of one subscription [MQTT-3.8.3.1].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubOptions {
    /// The maximum QoS granted.
    pub qos: QoS,
    /// Do not send the client its own messages [MQTT-3.8.3-3].
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded messages [MQTT-3.3.1-12].
    pub retain_as_published: bool,
    /// The Subscription Identifier the client gave it [MQTT-3.8.2.1.2].
    pub id: Option<u32>,
    /// The ACL denies some topics the filter matches: each delivery is checked.
    pub acl_check: bool,
}

impl SubOptions {
    /// MQTT 3's only option: the QoS.
    pub fn qos(qos: QoS) -> SubOptions {
        SubOptions { qos, no_local: false, retain_as_published: false, id: None, acl_check: false }
    }

    /// Appends the options as node links and the durable log write them: the QoS,
    /// a byte of flags, the Subscription Identifier (0: none); 6 bytes.
    pub fn put(&self, buf: &mut impl bytes::BufMut) {
        buf.put_u8(self.qos as u8);
        buf.put_u8(
            u8::from(self.no_local)
                | u8::from(self.retain_as_published) << 1
                | u8::from(self.acl_check) << 2,
        );
        buf.put_u32(self.id.unwrap_or(0));
    }

    /// The options [`SubOptions::put`] wrote, from its three fields.
    pub fn from_wire(qos: QoS, flags: u8, id: u32) -> SubOptions {
        SubOptions {
            qos,
            no_local: flags & 1 != 0,
            retain_as_published: flags & 2 != 0,
            acl_check: flags & 4 != 0,
            id: (id != 0).then_some(id),
        }
    }
}

/// Counters of one session, since the owner last took them
/// ([`Session::take_stats`]): the shard adds them to its own after every call, so
/// 32 bits never run out and every idle session keeps 20 bytes, not 64. Messages
/// [`Session::deliver`] drops are not counted here: it returns them, with why.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionStats {
    /// Messages encoded toward the client (first transmissions only), by QoS.
    pub sent: [u32; 3],
    /// Messages dropped because their Message Expiry Interval passed before they
    /// could be sent [MQTT-3.3.2-5].
    pub dropped_expired: u32,
    /// Messages not sent because they exceed the client's Maximum Packet Size
    /// [MQTT-3.1.2-25], or the largest packet the protocol can frame (a message
    /// grows when re-encoded: a packet id, MQTT 5 properties) [MQTT-2.2.3].
    pub dropped_too_large: u32,
}

/// What a session holds for its messages: the window, the mqueue, the QoS 2 ids
/// awaiting PUBREL and the outgoing aliases. A session with none of these (an idle
/// device between commands) has no `Traffic`: the first message allocates it, and
/// an idle moment that finds it all empty releases it ([`Session::release_room`]).
#[derive(Debug)]
struct Traffic {
    inflight: Inflight,
    mqueue: Mqueue,
    /// Ids of QoS 2 messages received from the client and routed, whose PUBREL has
    /// not arrived. Bounded by the 65,535 possible packet ids.
    awaiting_rel: HashSet<PacketId>,
    /// Outgoing topic aliases of the current connection: topic -> alias. Bounded by
    /// the client's Topic Alias Maximum; reset at every connection [MQTT-3.3.2-7].
    aliases_out: HashMap<ByteString, u16>,
    /// Changes not yet taken for the log (a durable session only).
    changes: Vec<Change>,
}

impl Traffic {
    fn new(limits: SessionLimits, link: Link) -> Traffic {
        let mut inflight = Inflight::new(limits.inflight_max);
        // Capped by `inflight_max`, the window's capacity.
        inflight.set_len_max(link.receive_max);
        Traffic {
            inflight,
            mqueue: Mqueue::new(limits.mqueue_len_max as usize, limits.mqueue_store_qos0),
            awaiting_rel: HashSet::new(),
            aliases_out: HashMap::new(),
            changes: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.inflight.is_empty()
            && self.mqueue.is_empty()
            && self.awaiting_rel.is_empty()
            && self.aliases_out.is_empty()
            && self.changes.is_empty()
    }
}

/// Protocol state of one (connected or persisted) client.
///
/// Every idle client holds one, so what it holds only while messages pass is
/// boxed and allocated when they do ([`Traffic`]).
#[derive(Debug)]
pub struct Session {
    client_id: ByteString,
    limits: SessionLimits,
    link: Link,
    /// Usually one to three: inline or a vector until it holds many.
    subscriptions: SmallMap<TopicFilter, SubOptions>,
    /// `None` while it would be empty.
    traffic: Option<Box<Traffic>>,
    online: bool,
    /// Whether it notes its changes for its shard's log (see `journal`).
    durable: bool,
    stats: SessionStats,
}

impl Session {
    /// A fresh, online session.
    pub fn new(client_id: ByteString, limits: SessionLimits) -> Self {
        Session {
            client_id,
            limits,
            link: Link::v3(ProtocolVersion::V311),
            subscriptions: SmallMap::new(),
            traffic: None,
            online: true,
            durable: false,
            stats: SessionStats::default(),
        }
    }

    /// The session's traffic state, allocated by its first use.
    fn traffic_mut(&mut self) -> &mut Traffic {
        let (limits, link) = (self.limits, self.link);
        self.traffic.get_or_insert_with(|| Box::new(Traffic::new(limits, link)))
    }

    /// Client identifier the session belongs to.
    pub fn client_id(&self) -> &ByteString {
        &self.client_id
    }

    /// Attaches the session to a new connection: its limits and aliases apply from
    /// now on. Call before [`Session::resume`].
    pub fn attach(&mut self, link: Link) {
        self.link = link;
        if let Some(traffic) = self.traffic.as_deref_mut() {
            traffic.aliases_out.clear();
            // Capped by `inflight_max`, the window's capacity.
            traffic.inflight.set_len_max(link.receive_max);
        }
    }

    /// The connection parameters in force.
    pub fn link(&self) -> Link {
        self.link
    }

    /// Whether a connection is attached.
    pub fn is_online(&self) -> bool {
        self.online
    }

    /// A copy of the session's counters since they were last taken.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The session's counters since they were last taken, which restart at zero.
    pub fn take_stats(&mut self) -> SessionStats {
        std::mem::take(&mut self.stats)
    }

    /// Number of messages waiting in the mqueue.
    pub fn mqueue_len(&self) -> usize {
        self.traffic.as_ref().map_or(0, |t| t.mqueue.len())
    }

    /// Bytes held by queued messages.
    pub fn queued_bytes(&self) -> usize {
        self.traffic.as_ref().map_or(0, |t| t.mqueue.bytes())
    }

    /// Number of unacknowledged QoS 1/2 messages.
    pub fn inflight_len(&self) -> usize {
        self.traffic.as_ref().map_or(0, |t| t.inflight.len())
    }

    /// The subscriptions with their options, in no particular order.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&TopicFilter, &SubOptions)> {
        self.subscriptions.iter()
    }

    /// The options of the subscription with exactly this filter.
    pub fn subscription(&self, filter: &TopicFilter) -> Option<SubOptions> {
        self.subscriptions.get(filter).copied()
    }

    /// Records a subscription; returns the options it replaced, if any
    /// [MQTT-3.8.4-3].
    pub fn subscribe(&mut self, filter: TopicFilter, options: SubOptions) -> Option<SubOptions> {
        self.note(|| Change::Subscribe(filter.clone(), options));
        self.subscriptions.insert(filter, options)
    }

    /// Number of subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Whether the session has a subscription with exactly this filter.
    pub fn is_subscribed(&self, filter: &TopicFilter) -> bool {
        self.subscriptions.contains_key(filter)
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unsubscribe(&mut self, filter: &TopicFilter) -> bool {
        let existed = self.subscriptions.remove(filter).is_some();
        if existed {
            self.note(|| Change::Unsubscribe(filter.clone()));
        }
        existed
    }

    /// Hands a message to the session. Online, it is encoded into `out` unless
    /// something queued is ahead of it, the window is full, or (QoS 0) `out` is over
    /// its bound; otherwise it waits in the mqueue, if `may_queue` (the shard's
    /// memory budget allows it). Returns what was dropped.
    pub fn deliver(
        &mut self,
        delivery: Delivery,
        out: Option<&mut BytesMut>,
        may_queue: bool,
        now_us: u64,
    ) -> Option<(Delivery, DropReason)> {
        if let Some(out) = out {
            if self.online && self.mqueue_len() == 0 && self.can_send_now(&delivery, out) {
                self.transmit(delivery, out, now_us, false);
                return None;
            }
        }
        if !may_queue {
            return Some((delivery, DropReason::Budget));
        }
        let noted = self.durable.then(|| delivery.clone());
        let traffic = self.traffic_mut();
        let dropped = traffic.mqueue.push(delivery);
        if let Some(delivery) = noted {
            match &dropped {
                Some((_, DropReason::Qos0NotStored)) => {}
                Some((oldest, _)) => {
                    let id = oldest.message.id;
                    self.note(|| Change::Done(id));
                    self.note(|| Change::Pending(delivery, None));
                }
                None => self.note(|| Change::Pending(delivery, None)),
            }
        }
        let traffic = self.traffic_mut();
        if traffic.is_empty() {
            // Nothing was queued (a QoS 0 message not stored): no empty state kept.
            self.traffic = None;
        }
        dropped
    }

    fn can_send_now(&self, delivery: &Delivery, out: &BytesMut) -> bool {
        match delivery.qos {
            QoS::AtMostOnce => out.len() < self.limits.out_buffer_max as usize,
            QoS::AtLeastOnce | QoS::ExactlyOnce => {
                !self.traffic.as_ref().is_some_and(|t| t.inflight.is_full())
            }
        }
    }

    /// Sends a delivery for the first time (`queued`: from the mqueue); drops it
    /// instead when it expired or is too large for the client.
    fn transmit(&mut self, delivery: Delivery, out: &mut BytesMut, now_us: u64, queued: bool) {
        let id = delivery.message.id;
        let Some(expiry) = remaining_expiry(&delivery.message, now_us) else {
            self.stats.dropped_expired += 1;
            if queued {
                self.note(|| Change::Done(id));
            }
            return;
        };
        let mut views = [None, None];
        let Some((mut publish, alias)) = self.measure(&delivery, expiry, false, &mut views) else {
            self.stats.dropped_too_large += 1;
            if queued {
                self.note(|| Change::Done(id));
            }
            return;
        };
        if delivery.qos != QoS::AtMostOnce {
            let packet_id = self.traffic_mut().inflight.insert(delivery.clone());
            publish.set_packet_id(packet_id);
            if queued {
                self.note(|| Change::Sent(id, packet_id));
            } else {
                self.note(|| Change::Pending(delivery.clone(), Some(packet_id)));
            }
        } else if queued {
            self.note(|| Change::Done(id));
        }
        publish.encode(out);
        self.alias_sent(&delivery.message.topic, alias);
        self.stats.sent[delivery.qos as usize] += 1;
    }

    /// The PUBLISH of `delivery` for the attached connection, measured once: the
    /// message's properties with the Message Expiry Interval left [MQTT-3.3.2-6], the
    /// matching Subscription Identifiers [MQTT-3.3.4-3] and the outgoing alias
    /// [MQTT-3.3.2-17] (MQTT 5). `None` when it exceeds the client's Maximum Packet
    /// Size [MQTT-3.1.2-25] or the largest packet the protocol can frame (a message
    /// grows when re-encoded: a packet id, a property block) [MQTT-2.2.3]. A new
    /// alias costs 3 bytes: a packet that fits only without it goes without it.
    /// `views` holds the views measured (the caller's, so the result can borrow one).
    fn measure<'v, 'd>(
        &self,
        delivery: &'d Delivery,
        expiry: Option<u32>,
        dup: bool,
        views: &'v mut [Option<PublishView<'d>>; 2],
    ) -> Option<(MeasuredPublish<'v, 'd>, AliasOut)> {
        let limit = self.link.packet_size_max.min(codec::PACKET_SIZE_MAX);
        let alias = self.alias_out(&delivery.message.topic);
        let [first, second] = views;
        let publish =
            first.insert(self.view(delivery, expiry, alias, dup)).measure(self.link.protocol);
        if publish.size() <= limit {
            return Some((publish, alias));
        }
        if !matches!(alias, AliasOut::New(_)) {
            return None;
        }
        let view = second.insert(self.view(delivery, expiry, AliasOut::None, dup));
        let publish = view.measure(self.link.protocol);
        (publish.size() <= limit).then_some((publish, AliasOut::None))
    }

    /// The PUBLISH of `delivery` with the given alias, without packet id.
    fn view<'d>(
        &self,
        delivery: &'d Delivery,
        expiry: Option<u32>,
        alias: AliasOut,
        dup: bool,
    ) -> PublishView<'d> {
        let message = &delivery.message;
        let full = message.topic.as_str();
        let topic = full.get(usize::from(self.link.topic_strip)..).unwrap_or(full);
        let (topic, topic_alias) = match alias {
            AliasOut::None => (topic, None),
            AliasOut::Known(alias) => ("", Some(alias)),
            AliasOut::New(alias) => (topic, Some(alias)),
        };
        PublishView {
            topic,
            payload: &message.payload,
            qos: delivery.qos,
            packet_id: None,
            retain: delivery.retain,
            dup,
            properties: PublishProperties {
                message: message.properties.as_deref(),
                message_expiry_interval: expiry,
                subscription_identifiers: &delivery.sub_ids,
                topic_alias,
            },
        }
    }

    /// The alias to send `topic` with: a known one goes with an empty topic; a new
    /// one (while the client's maximum allows) with the topic, which sets it
    /// [MQTT-3.3.2-12]. Nothing changes until [`Session::alias_sent`]: a PUBLISH
    /// dropped for its size sets no alias.
    fn alias_out(&self, topic: &TopicName) -> AliasOut {
        if self.link.topic_alias_max == 0 {
            return AliasOut::None;
        }
        let aliases = self.traffic.as_ref().map(|t| &t.aliases_out);
        if let Some(alias) = aliases.and_then(|a| a.get(topic.as_byte_string())) {
            return AliasOut::Known(*alias);
        }
        let known = aliases.map_or(0, HashMap::len);
        if known < usize::from(self.link.topic_alias_max) {
            let next = u16::try_from(known + 1).expect("below topic_alias_max");
            return AliasOut::New(next);
        }
        AliasOut::None
    }

    /// Records an alias the client now knows.
    fn alias_sent(&mut self, topic: &TopicName, alias: AliasOut) {
        if let AliasOut::New(alias) = alias {
            self.traffic_mut().aliases_out.insert(topic.as_byte_string().clone(), alias);
        }
    }

    /// Resends what the window holds and the current connection has not seen yet,
    /// then moves queued messages into `out`, while the window and the buffer allow.
    pub fn drain(&mut self, out: &mut BytesMut, now_us: u64) {
        if !self.online {
            return;
        }
        self.resend(out, now_us);
        while let Some(front) = self.traffic.as_ref().and_then(|t| t.mqueue.front()) {
            if !self.can_send_now(front, out) {
                break;
            }
            let delivery = self.traffic_mut().mqueue.pop_front().expect("front() was Some");
            self.transmit(delivery, out, now_us, true);
        }
    }

    /// PUBACK from the client. Returns the acknowledged delivery (`None` for an
    /// unknown id: a duplicate ack after a resend is legitimate), or the violation
    /// when the id's exchange is a QoS 2 one [MQTT-4.8.0-1].
    pub fn on_puback(
        &mut self,
        id: PacketId,
        out: &mut BytesMut,
        now_us: u64,
    ) -> Result<Option<Delivery>, ProtocolViolation> {
        self.on_ack(id, AckKind::PubAck, out, now_us)
    }

    /// PUBREC from the client: answer PUBREL [MQTT-4.3.3-1], also for an id already
    /// released (a resent PUBREC). An MQTT 5 PUBREC with a failure reason ends the
    /// exchange: no PUBREL, the message counts as acknowledged [MQTT-4.3.3-4]. A
    /// PUBREC for a QoS 1 message is a violation [MQTT-4.8.0-1].
    pub fn on_pubrec(
        &mut self,
        ack: &Ack,
        out: &mut BytesMut,
        now_us: u64,
    ) -> Result<Option<Delivery>, ProtocolViolation> {
        let kind = if ack.reason.is_error() { AckKind::PubRecFailed } else { AckKind::PubRec };
        self.on_ack(ack.packet_id, kind, out, now_us)
    }

    /// PUBCOMP from the client: the QoS 2 exchange is over. A PUBCOMP for a QoS 1
    /// message, or before PUBREL, is a violation [MQTT-4.8.0-1].
    pub fn on_pubcomp(
        &mut self,
        id: PacketId,
        out: &mut BytesMut,
        now_us: u64,
    ) -> Result<Option<Delivery>, ProtocolViolation> {
        self.on_ack(id, AckKind::PubComp, out, now_us)
    }

    fn on_ack(
        &mut self,
        id: PacketId,
        kind: AckKind,
        out: &mut BytesMut,
        now_us: u64,
    ) -> Result<Option<Delivery>, ProtocolViolation> {
        let acked = match self.traffic.as_deref_mut() {
            Some(traffic) => traffic.inflight.ack(id, kind)?,
            None => Acked::Unknown,
        };
        match acked {
            Acked::Completed(entry) => {
                self.note(|| Change::Done(entry.delivery.message.id));
                self.drain(out, now_us);
                Ok(Some(entry.delivery))
            }
            Acked::Released => {
                self.note(|| Change::Released(id));
                codec::encode(&Packet::PubRel(Ack::new(id)), self.link.protocol, out);
                Ok(None)
            }
            Acked::Unknown => {
                if kind == AckKind::PubRec && self.link.protocol.is_v5() {
                    // An id no longer held: PUBREL 0x92 lets the client finish
                    // [MQTT-3.6.2.1].
                    let rel = Ack::with_reason(id, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
                    codec::encode(&Packet::PubRel(rel), self.link.protocol, out);
                }
                Ok(None)
            }
        }
    }

    /// A QoS 2 PUBLISH from the client. Returns `true` when it is new and must be
    /// routed, `false` for a resend of one already routed [MQTT-4.3.3-2]. PUBREC is
    /// sent either way (by the caller, who also answers QoS 1).
    pub fn on_incoming_qos2(&mut self, id: PacketId) -> bool {
        let first = self.traffic_mut().awaiting_rel.insert(id);
        if first {
            self.note(|| Change::AwaitRel(id));
        }
        first
    }

    /// Number of QoS 2 messages from the client waiting for their PUBREL: what
    /// counts against the broker's Receive Maximum [MQTT-3.3.4-7].
    pub fn awaiting_rel_len(&self) -> usize {
        self.traffic.as_ref().map_or(0, |t| t.awaiting_rel.len())
    }

    /// Whether a QoS 2 message with this id from the client awaits its PUBREL.
    pub fn is_awaiting_rel(&self, id: PacketId) -> bool {
        self.traffic.as_ref().is_some_and(|t| t.awaiting_rel.contains(&id))
    }

    /// PUBREL from the client: forget the id and answer PUBCOMP, also for an unknown
    /// id, so that a client resending PUBREL after a reconnect completes [MQTT-4.3.3-2].
    pub fn on_pubrel(&mut self, id: PacketId, out: &mut BytesMut) {
        let held = self.traffic.as_deref_mut().is_some_and(|t| t.awaiting_rel.remove(&id));
        if held {
            self.note(|| Change::Rel(id));
        }
        codec::encode(&Packet::PubComp(Ack::new(id)), self.link.protocol, out);
    }

    /// The client (re)connected to this session: resend the unacknowledged
    /// PUBLISHes with DUP set and the pending PUBRELs, in their original order and
    /// with their original packet ids [MQTT-4.4.0-1], as many as the connection's
    /// window takes (the rest follow as acknowledgements free it [MQTT-4.9.0-1]),
    /// then what the mqueue holds. A message whose delivery started is resent even
    /// if it expired meanwhile (with an expiry of 0) [MQTT-3.3.2-5 applies before
    /// delivery starts only]; one that no longer fits the client's Maximum Packet
    /// Size is dropped from the window.
    pub fn resume(&mut self, out: &mut BytesMut, now_us: u64) {
        self.online = true;
        if let Some(traffic) = self.traffic.as_deref_mut() {
            traffic.inflight.unsend_all();
        }
        self.drain(out, now_us);
    }

    /// Resends, in order, the window's entries not yet sent on this connection, as
    /// long as its window has room.
    fn resend(&mut self, out: &mut BytesMut, now_us: u64) {
        while let Some(entry) = self.traffic.as_deref_mut().and_then(|t| t.inflight.next_resend()) {
            let packet_id = entry.packet_id;
            if entry.stage == Stage::PubCompDue {
                codec::encode(&Packet::PubRel(Ack::new(packet_id)), self.link.protocol, out);
                continue;
            }
            let delivery = entry.delivery;
            let expiry = remaining_expiry(&delivery.message, now_us).unwrap_or(Some(0));
            let mut views = [None, None];
            let Some((mut publish, alias)) = self.measure(&delivery, expiry, true, &mut views)
            else {
                self.traffic_mut().inflight.remove(packet_id);
                self.stats.dropped_too_large += 1;
                let id = delivery.message.id;
                self.note(|| Change::Done(id));
                continue;
            };
            publish.set_packet_id(packet_id);
            publish.encode(out);
            self.alias_sent(&delivery.message.topic, alias);
        }
    }

    /// Resends unacknowledged messages while connected (`retry_interval`), over MQTT
    /// 3 only: MQTT 5 forbids resending other than when a session resumes
    /// [MQTT-4.4.0-1].
    pub fn retry(&mut self, out: &mut BytesMut, now_us: u64) {
        if self.online && !self.link.protocol.is_v5() {
            self.resume(out, now_us);
        }
    }

    /// Removes what was dispatched to this session through shared subscriptions
    /// and not yet acknowledged (queued, or sent without any acknowledgement): the
    /// client is leaving, so another member of the group gets it.
    pub fn take_shared(&mut self) -> Vec<Delivery> {
        let Some(traffic) = self.traffic.as_deref_mut() else { return Vec::new() };
        let mut taken: Vec<Delivery> =
            traffic.inflight.take_shared().into_iter().map(|e| e.delivery).collect();
        taken.extend(traffic.mqueue.take_shared());
        for delivery in &taken {
            let id = delivery.message.id;
            self.note(|| Change::Done(id));
        }
        taken
    }

    /// The connection is gone. A persistent session keeps everything but the
    /// connection's aliases, and gives back the room it does not use.
    pub fn go_offline(&mut self) {
        self.online = false;
        if let Some(traffic) = self.traffic.as_deref_mut() {
            traffic.aliases_out.clear();
        }
        self.release_room();
    }

    /// Gives back what the traffic state keeps allocated beyond what it holds, all
    /// of it when empty: after one message, an idle client would otherwise keep a
    /// window of four entries for good. For an idle moment, not after every
    /// message, so a busy subscriber does not allocate per message.
    pub fn release_room(&mut self) {
        if self.traffic.as_deref().is_some_and(Traffic::is_empty) {
            self.traffic = None;
        } else if let Some(traffic) = self.traffic.as_deref_mut() {
            traffic.inflight.release_room();
            traffic.mqueue.release_room();
        }
    }

    /// Whether a message waits (queued or unacknowledged).
    pub fn has_pending(&self) -> bool {
        self.traffic.as_ref().is_some_and(|t| !t.mqueue.is_empty() || !t.inflight.is_empty())
    }

    /// Whether the internal invariants of the session and its queues hold.
    pub fn check_invariants(&self) -> bool {
        let traffic = self
            .traffic
            .as_deref()
            .is_none_or(|t| t.inflight.check_invariants() && t.mqueue.check_invariants());
        traffic && self.subscriptions.check_invariants()
    }
}

/// The Message Expiry Interval left for `message` at `now_us`: `Some(None)` when it
/// has none, `None` when it has expired [MQTT-3.3.2-5], [MQTT-3.3.2-6].
pub fn remaining_expiry(message: &Message, now_us: u64) -> Option<Option<u32>> {
    let Some(interval) = message.properties.as_ref().and_then(|p| p.message_expiry_interval) else {
        return Some(None);
    };
    let waited_secs = now_us.saturating_sub(message.id.timestamp_us()) / 1_000_000;
    let waited = u32::try_from(waited_secs).unwrap_or(u32::MAX);
    if waited >= interval {
        None
    } else {
        Some(Some(interval - waited))
    }
}

#[cfg(test)]
mod tests;
