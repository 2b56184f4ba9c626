//! The bounded queue of messages waiting for a client: while it is offline, while its
//! inflight window is full, or while its connection's output buffer is full.
//!
//! # Invariants
//! `len() <= len_max`; `bytes()` is the sum of `Delivery::size` over the queue. A message leaves only by `pop_front` (delivered, in order) or
//! as the returned drop of `push` (counted by the caller).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::message::Message;
use crate::protocol::{QoS, TopicFilter};

/// A message due to one subscriber, with the QoS and RETAIN flag it goes out with.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The shared message being delivered.
    pub message: Arc<Message>,
    /// `min(published QoS, subscription QoS)`.
    pub qos: QoS,
    /// Set for retained messages sent because of a new subscription [MQTT-3.3.1-8],
    /// and for forwarded ones under Retain As Published [MQTT-3.3.1-12].
    pub retain: bool,
    /// MQTT 5 Subscription Identifiers of the matching subscriptions [MQTT-3.3.4-3].
    pub sub_ids: Vec<u32>,
    /// The `$share/{group}/{filter}` subscription this copy was dispatched to; such a
    /// copy goes to another member if this client leaves before acknowledging it.
    pub shared: Option<TopicFilter>,
}

impl Delivery {
    /// A plain delivery: no subscription identifier, not shared.
    pub fn new(message: Arc<Message>, qos: QoS, retain: bool) -> Delivery {
        Delivery { message, qos, retain, sub_ids: Vec::new(), shared: None }
    }
}

impl Delivery {
    /// Bytes this delivery holds on to while queued (topic and payload; shared with
    /// other sessions, so a sum over sessions is an upper bound).
    pub fn size(&self) -> usize {
        self.message.topic.as_str().len() + self.message.payload.len()
    }
}

/// Why a message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// QoS 0 while `mqueue_store_qos0` is off and it could not be sent at once.
    Qos0NotStored,
    /// The queue was full; this was the oldest pending message.
    QueueFull,
    /// The shard's budget for queued bytes was spent.
    Budget,
}

/// The emqttd mqueue: bounded FIFO, drop-oldest when full.
#[derive(Debug)]
pub struct Mqueue {
    items: VecDeque<Delivery>,
    bytes: usize,
    len_max: usize,
    store_qos0: bool,
}

impl Mqueue {
    /// A queue holding at most `len_max` messages (at least one).
    pub fn new(len_max: usize, store_qos0: bool) -> Self {
        assert!(len_max > 0, "config validation rejects an unbounded mqueue");
        Mqueue { items: VecDeque::new(), bytes: 0, len_max, store_qos0 }
    }

    /// Queues `delivery`. Returns the message that had to be dropped, if any: the
    /// incoming QoS 0 message when QoS 0 is not stored, otherwise the oldest one when
    /// the queue is full.
    pub fn push(&mut self, delivery: Delivery) -> Option<(Delivery, DropReason)> {
        if delivery.qos == QoS::AtMostOnce && !self.store_qos0 {
            return Some((delivery, DropReason::Qos0NotStored));
        }
        let dropped = if self.items.len() == self.len_max {
            self.pop_front().map(|d| (d, DropReason::QueueFull))
        } else {
            None
        };
        self.bytes += delivery.size();
        self.items.push_back(delivery);
        debug_assert!(self.check_invariants());
        dropped
    }

    /// The queued messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Delivery> {
        self.items.iter()
    }

    /// The oldest queued message, without removing it.
    pub fn front(&self) -> Option<&Delivery> {
        self.items.front()
    }

    /// Removes and returns the oldest queued message.
    pub fn pop_front(&mut self) -> Option<Delivery> {
        let delivery = self.items.pop_front()?;
        self.bytes -= delivery.size();
        Some(delivery)
    }

    /// Bytes held by the queued messages.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Gives back the room the queue keeps beyond its messages (all of it when
    /// empty): it keeps the capacity of its largest backlog otherwise.
    pub fn release_room(&mut self) {
        self.items.shrink_to_fit();
    }

    /// Removes and returns the queued copies of shared subscriptions (their member
    /// is leaving: another member gets them).
    pub fn take_shared(&mut self) -> Vec<Delivery> {
        let (shared, kept): (Vec<_>, Vec<_>) =
            self.items.drain(..).partition(|d| d.shared.is_some());
        self.items = kept.into();
        self.bytes = self.items.iter().map(Delivery::size).sum();
        shared
    }

    /// Whether the internal invariants hold (bounds, byte count and QoS 0 policy).
    pub fn check_invariants(&self) -> bool {
        self.items.len() <= self.len_max
            && self.bytes == self.items.iter().map(Delivery::size).sum::<usize>()
            && (self.store_qos0 || self.items.iter().all(|d| d.qos != QoS::AtMostOnce))
    }
}
