//! One client's session: the MQTT state that outlives a connection when the client
//! asked for a persistent session (CleanSession = 0), as emqttd defined it.
//!
//! Sans-IO: no sockets, no executor, no clock. Output packets are encoded into the
//! connection's output buffer handed in by the caller (`out`); an offline session
//! gets no buffer and queues instead.
//!
//! Owner: the shard that owns the client id. A `Session` never crosses a ring.
//!
//! # Invariants
//! - At most `inflight_max` unacknowledged QoS 1/2 messages toward the client.
//! - Messages reach the client in the order they reached the session, across the
//!   window, the mqueue and reconnects [MQTT-4.6.0-1]: nothing overtakes a queued
//!   message.
//! - A QoS 2 message from the client is routed once, however often it is resent
//!   before its PUBREL [MQTT-4.3.3-2].

mod inflight;
mod mqueue;
#[cfg(any(test, feature = "fuzzing"))]
pub mod script;

use bytes::BytesMut;
use bytestring::ByteString;
use hashbrown::{HashMap, HashSet};

use crate::protocol::{codec, Ack, Packet, PacketId, QoS, TopicFilter};

pub use inflight::{Entry, Inflight, Stage};
pub use mqueue::{Delivery, DropReason, Mqueue};

/// The limits one session enforces.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// Unacknowledged QoS 1/2 messages toward the client.
    pub inflight_max: u16,
    /// Messages waiting in the mqueue.
    pub mqueue_len_max: usize,
    /// Whether QoS 0 messages wait in the mqueue too.
    pub mqueue_store_qos0: bool,
    /// Bytes pending in the connection's output buffer beyond which QoS 0 messages
    /// go to the mqueue instead (a slow reader must not grow the buffer forever).
    pub out_buffer_max: usize,
}

/// Counters of one session.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionStats {
    /// Messages encoded toward the client (first transmissions only), by QoS.
    pub sent: [u64; 3],
    /// Messages dropped because the mqueue was full.
    pub dropped_queue_full: u64,
    /// QoS 0 messages dropped because QoS 0 is not queued.
    pub dropped_qos0: u64,
    /// Messages dropped because the shard's queued-bytes budget was spent.
    pub dropped_budget: u64,
}

/// Protocol state of one (connected or persisted) client.
#[derive(Debug)]
pub struct Session {
    client_id: ByteString,
    persistent: bool,
    limits: SessionLimits,
    subscriptions: HashMap<TopicFilter, QoS>,
    inflight: Inflight,
    mqueue: Mqueue,
    /// Ids of QoS 2 messages received from the client and routed, whose PUBREL has
    /// not arrived. Bounded by the 65,535 possible packet ids.
    awaiting_rel: HashSet<PacketId>,
    online: bool,
    stats: SessionStats,
}

impl Session {
    /// A fresh, online session.
    pub fn new(client_id: ByteString, persistent: bool, limits: SessionLimits) -> Self {
        Session {
            client_id,
            persistent,
            limits,
            subscriptions: HashMap::new(),
            inflight: Inflight::new(limits.inflight_max),
            mqueue: Mqueue::new(limits.mqueue_len_max, limits.mqueue_store_qos0),
            awaiting_rel: HashSet::new(),
            online: true,
            stats: SessionStats::default(),
        }
    }

    /// Client identifier the session belongs to.
    pub fn client_id(&self) -> &ByteString {
        &self.client_id
    }

    /// Whether the session outlives its connection (CleanSession = 0).
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// Whether a connection is attached.
    pub fn is_online(&self) -> bool {
        self.online
    }

    /// A copy of the session's counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Number of messages waiting in the mqueue.
    pub fn mqueue_len(&self) -> usize {
        self.mqueue.len()
    }

    /// Bytes held by queued messages.
    pub fn queued_bytes(&self) -> usize {
        self.mqueue.bytes()
    }

    /// Number of unacknowledged QoS 1/2 messages.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// The subscriptions with their granted QoS, in no particular order.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&TopicFilter, &QoS)> {
        self.subscriptions.iter()
    }

    /// Records a subscription; returns the QoS it replaced, if any [MQTT-3.8.4-3].
    pub fn subscribe(&mut self, filter: TopicFilter, qos: QoS) -> Option<QoS> {
        self.subscriptions.insert(filter, qos)
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
        self.subscriptions.remove(filter).is_some()
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
    ) -> Option<(Delivery, DropReason)> {
        if let Some(out) = out {
            if self.online && self.mqueue.is_empty() && self.can_send_now(&delivery, out) {
                self.transmit(delivery, out);
                return None;
            }
        }
        if !may_queue {
            self.stats.dropped_budget += 1;
            return Some((delivery, DropReason::Budget));
        }
        let dropped = self.mqueue.push(delivery);
        if let Some((_, reason)) = &dropped {
            match reason {
                DropReason::QueueFull => self.stats.dropped_queue_full += 1,
                DropReason::Qos0NotStored => self.stats.dropped_qos0 += 1,
                DropReason::Budget => self.stats.dropped_budget += 1,
            }
        }
        dropped
    }

    fn can_send_now(&self, delivery: &Delivery, out: &BytesMut) -> bool {
        match delivery.qos {
            QoS::AtMostOnce => out.len() < self.limits.out_buffer_max,
            QoS::AtLeastOnce | QoS::ExactlyOnce => !self.inflight.is_full(),
        }
    }

    fn transmit(&mut self, delivery: Delivery, out: &mut BytesMut) {
        let packet_id = match delivery.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce | QoS::ExactlyOnce => Some(self.inflight.insert(delivery.clone())),
        };
        let message = &delivery.message;
        codec::encode_publish(
            out,
            message.topic.as_str(),
            &message.payload,
            delivery.qos,
            delivery.retain,
            false,
            packet_id,
        );
        self.stats.sent[delivery.qos as usize] += 1;
    }

    /// Moves queued messages into `out` while the window and the buffer allow.
    pub fn drain(&mut self, out: &mut BytesMut) {
        if !self.online {
            return;
        }
        while let Some(front) = self.mqueue.front() {
            if !self.can_send_now(front, out) {
                break;
            }
            let delivery = self.mqueue.pop_front().expect("front() was Some");
            self.transmit(delivery, out);
        }
    }

    /// PUBACK from the client. Returns the acknowledged delivery (unknown ids are
    /// ignored, as a duplicate ack after a resend is legitimate).
    pub fn on_puback(&mut self, id: PacketId, out: &mut BytesMut) -> Option<Delivery> {
        let entry = self.inflight.complete(id, Stage::Published)?;
        debug_assert_eq!(entry.packet_id, id);
        self.drain(out);
        Some(entry.delivery)
    }

    /// PUBREC from the client: answer PUBREL [MQTT-4.3.3-1], also for an id already
    /// released (a resent PUBREC).
    pub fn on_pubrec(&mut self, id: PacketId, out: &mut BytesMut) {
        if self.inflight.release(id) {
            codec::encode(&Packet::PubRel(Ack { packet_id: id }), out);
        }
    }

    /// PUBCOMP from the client: the QoS 2 exchange is over.
    pub fn on_pubcomp(&mut self, id: PacketId, out: &mut BytesMut) -> Option<Delivery> {
        let entry = self.inflight.complete(id, Stage::Released)?;
        self.drain(out);
        Some(entry.delivery)
    }

    /// A QoS 2 PUBLISH from the client. Returns `true` when it is new and must be
    /// routed, `false` for a resend of one already routed [MQTT-4.3.3-2]. PUBREC is
    /// sent either way (by the caller, who also answers QoS 1).
    pub fn on_incoming_qos2(&mut self, id: PacketId) -> bool {
        self.awaiting_rel.insert(id)
    }

    /// PUBREL from the client: forget the id and answer PUBCOMP, also for an unknown
    /// id, so that a client resending PUBREL after a reconnect completes [MQTT-4.3.3-2].
    pub fn on_pubrel(&mut self, id: PacketId, out: &mut BytesMut) {
        self.awaiting_rel.remove(&id);
        codec::encode(&Packet::PubComp(Ack { packet_id: id }), out);
    }

    /// The client (re)connected to this session: resend every unacknowledged PUBLISH
    /// with DUP set and every pending PUBREL, in their original order and with their
    /// original packet ids [MQTT-4.4.0-1], then what the mqueue holds.
    pub fn resume(&mut self, out: &mut BytesMut) {
        self.online = true;
        for entry in self.inflight.iter() {
            match entry.stage {
                Stage::Published => {
                    let message = &entry.delivery.message;
                    codec::encode_publish(
                        out,
                        message.topic.as_str(),
                        &message.payload,
                        entry.delivery.qos,
                        entry.delivery.retain,
                        true,
                        Some(entry.packet_id),
                    );
                }
                Stage::Released => {
                    codec::encode(&Packet::PubRel(Ack { packet_id: entry.packet_id }), out);
                }
            }
        }
        self.drain(out);
    }

    /// Resends unacknowledged messages while connected (`retry_interval`).
    pub fn retry(&mut self, out: &mut BytesMut) {
        if self.online {
            self.resume(out);
        }
    }

    /// The connection is gone. A persistent session keeps everything.
    pub fn go_offline(&mut self) {
        self.online = false;
    }

    /// Whether a message waits (queued or unacknowledged).
    pub fn has_pending(&self) -> bool {
        !self.mqueue.is_empty() || !self.inflight.is_empty()
    }

    /// Whether the internal invariants of the session and its queues hold.
    pub fn check_invariants(&self) -> bool {
        self.inflight.check_invariants()
            && self.mqueue.check_invariants()
            && self.inflight.len() <= usize::from(self.limits.inflight_max)
    }
}

#[cfg(test)]
mod tests;
