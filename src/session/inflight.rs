//! The outgoing inflight window: QoS 1 and 2 messages sent to the client and not yet
//! acknowledged, in send order, with their packet ids.
//!
//! # Invariants
//! At most `len_max` entries; packet ids are unique among them; entries stay in the
//! order they were first sent, which is the order they are resent in [MQTT-4.6.0-1].

use std::collections::VecDeque;

use crate::protocol::PacketId;

use super::mqueue::Delivery;

/// Where an outgoing QoS 1/2 exchange stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// PUBLISH sent (QoS 1 or 2); waiting for PUBACK or PUBREC.
    Published,
    /// PUBREL sent (QoS 2); waiting for PUBCOMP.
    Released,
}

/// One unacknowledged message.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Identifier the message was sent under.
    pub packet_id: PacketId,
    /// The message and the QoS it went out with.
    pub delivery: Delivery,
    /// Which acknowledgement the entry waits for.
    pub stage: Stage,
}

/// The window itself. Acknowledgements usually come in send order, so lookups start
/// at the front; the window is small (`inflight_max`, default 32).
#[derive(Debug)]
pub struct Inflight {
    entries: VecDeque<Entry>,
    len_max: usize,
    next_id: u16,
}

impl Inflight {
    /// An empty window holding at most `len_max` entries (at least one).
    pub fn new(len_max: u16) -> Self {
        assert!(len_max > 0, "config validation rejects an empty window");
        Inflight { entries: VecDeque::new(), len_max: usize::from(len_max), next_id: 0 }
    }

    /// Whether the window holds `inflight_max` entries.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.len_max
    }

    /// Number of unacknowledged messages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no message is unacknowledged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `delivery` under a fresh packet id and returns the id.
    ///
    /// Panics if the window is full: callers check `is_full` first.
    pub fn insert(&mut self, delivery: Delivery) -> PacketId {
        assert!(!self.is_full(), "caller checks the window");
        let packet_id = self.free_id();
        self.entries.push_back(Entry { packet_id, delivery, stage: Stage::Published });
        debug_assert!(self.check_invariants());
        packet_id
    }

    /// The next id not in use. The window holds at most 65,535 entries, so one is free.
    fn free_id(&mut self) -> PacketId {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            let Some(id) = PacketId::new(self.next_id) else { continue };
            if !self.entries.iter().any(|e| e.packet_id == id) {
                return id;
            }
        }
    }

    fn position(&self, id: PacketId) -> Option<usize> {
        self.entries.iter().position(|e| e.packet_id == id)
    }

    /// Removes the entry acknowledged by PUBACK (QoS 1) or PUBCOMP (QoS 2).
    /// `expected` is the stage the ack belongs to; an ack for another stage or an
    /// unknown id returns `None` and changes nothing.
    pub fn complete(&mut self, id: PacketId, expected: Stage) -> Option<Entry> {
        let at = self.position(id)?;
        if self.entries[at].stage != expected {
            return None;
        }
        self.entries.remove(at)
    }

    /// PUBREC received: the message moves to the PUBREL stage. Returns whether the id
    /// was waiting for a PUBREC (a repeated PUBREC for a released id is answered again).
    pub fn release(&mut self, id: PacketId) -> bool {
        match self.position(id) {
            Some(at) => {
                self.entries[at].stage = Stage::Released;
                true
            }
            None => false,
        }
    }

    /// Entries in send order, for resending on reconnect.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Changes the window's size (the client's Receive Maximum may differ from one
    /// connection to the next). A smaller window keeps what it holds; nothing new is
    /// sent until acknowledgements bring it under the new size.
    pub fn set_len_max(&mut self, len_max: u16) {
        self.len_max = usize::from(len_max.max(1));
    }

    /// Removes and returns the entries not yet acknowledged at all that were
    /// dispatched to a shared subscription (their member is leaving).
    pub fn take_shared(&mut self) -> Vec<Entry> {
        let (shared, kept): (Vec<_>, Vec<_>) = self
            .entries
            .drain(..)
            .partition(|e| e.stage == Stage::Published && e.delivery.shared.is_some());
        self.entries = kept.into();
        shared
    }

    /// Removes the entry sent under `id`, whatever its stage.
    pub fn remove(&mut self, id: PacketId) -> Option<Entry> {
        let at = self.position(id)?;
        self.entries.remove(at)
    }

    /// Whether the internal invariants hold (bounded and ids unique).
    pub fn check_invariants(&self) -> bool {
        let mut ids: Vec<u16> = self.entries.iter().map(|e| e.packet_id.get()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len() == self.entries.len()
    }
}
