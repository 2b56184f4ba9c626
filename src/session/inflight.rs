//! The outgoing inflight window: QoS 1 and 2 messages sent to the client and not yet
//! acknowledged, in send order, with their packet ids and the acknowledgement each
//! one waits for.
//!
//! # Invariants
//! 1. At most `capacity` entries (`inflight_max`); packet ids are unique among them.
//! 2. At most `len_max` entries (the current connection's window, `min(inflight_max,
//!    Receive Maximum)`) went out on the current connection: a connection with a
//!    smaller Receive Maximum than the last one gets the rest as acknowledgements
//!    free its window [MQTT-4.9.0-1].
//! 3. Entries stay in the order they were first sent, which is the order they are
//!    resent in [MQTT-4.6.0-1]; the ones not yet resent on this connection come after
//!    the ones that were.

use std::collections::VecDeque;

use crate::protocol::{PacketId, ProtocolViolation, QoS};

use super::mqueue::Delivery;

/// Which acknowledgement an outgoing exchange waits for. The QoS of the message
/// decides the first stage, so a QoS 1 exchange can never be taken for a QoS 2 one:
/// each acknowledgement is valid in exactly the stages listed in [`Inflight::ack`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// QoS 1 PUBLISH sent; waiting for PUBACK.
    PubAckDue,
    /// QoS 2 PUBLISH sent; waiting for PUBREC.
    PubRecDue,
    /// QoS 2 PUBREL sent; waiting for PUBCOMP.
    PubCompDue,
}

impl Stage {
    /// The first stage of a message sent at `qos`, `None` at QoS 0 (no exchange).
    fn first(qos: QoS) -> Option<Stage> {
        match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Stage::PubAckDue),
            QoS::ExactlyOnce => Some(Stage::PubRecDue),
        }
    }
}

/// An acknowledgement of an outgoing PUBLISH, as the client sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckKind {
    /// PUBACK.
    PubAck,
    /// PUBREC with a success reason: PUBREL follows.
    PubRec,
    /// PUBREC with a failure reason (MQTT 5): the exchange ends [MQTT-4.3.3-4].
    PubRecFailed,
    /// PUBCOMP.
    PubComp,
}

/// What an acknowledgement did to its exchange.
#[derive(Debug)]
pub enum Acked {
    /// The exchange is over: the message left the window.
    Completed(Entry),
    /// PUBREC of a QoS 2 exchange (first or resent): PUBREL is due.
    Released,
    /// No exchange under this id: a duplicate acknowledgement after a resend.
    Unknown,
}

/// One unacknowledged message.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Identifier the message was sent under.
    pub packet_id: PacketId,
    /// The message and the QoS it went out with.
    pub delivery: Delivery,
    /// Which acknowledgement the entry waits for.
    pub stage: Stage,
    /// Whether the entry's last packet (PUBLISH, or PUBREL once released) went out
    /// on the current connection; if not, it is resent when the window allows.
    pub sent: bool,
}

/// The window itself. Acknowledgements usually come in send order, so lookups start
/// at the front; the window is small (`inflight_max`, default 32).
#[derive(Debug)]
pub struct Inflight {
    entries: VecDeque<Entry>,
    /// `inflight_max`: entries the session holds, whatever the connection.
    capacity: u16,
    /// The current connection's window: entries sent on it, at most.
    len_max: u16,
    next_id: u16,
}

impl Inflight {
    /// An empty window holding at most `capacity` entries (at least one).
    pub fn new(capacity: u16) -> Self {
        assert!(capacity > 0, "config validation rejects an empty window");
        Inflight { entries: VecDeque::new(), capacity, len_max: capacity, next_id: 0 }
    }

    /// Whether no new message may be sent: the window holds `len_max` entries (or
    /// more, kept from a connection with a larger window).
    pub fn is_full(&self) -> bool {
        self.entries.len() >= usize::from(self.len_max)
    }

    /// Number of unacknowledged messages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no message is unacknowledged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of entries that went out on the current connection.
    fn sent_len(&self) -> usize {
        self.entries.iter().filter(|e| e.sent).count()
    }

    /// Adds `delivery` (QoS 1 or 2), sent now, under a fresh packet id and returns
    /// the id.
    ///
    /// Panics if the window is full or the delivery is at QoS 0: callers check both.
    pub fn insert(&mut self, delivery: Delivery) -> PacketId {
        assert!(!self.is_full(), "caller checks the window");
        let stage = Stage::first(delivery.qos).expect("caller sends QoS 0 outside the window");
        let packet_id = self.free_id();
        self.entries.push_back(Entry { packet_id, delivery, stage, sent: true });
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

    /// Applies the client's acknowledgement `kind` of `id`. The transitions:
    ///
    /// ```text
    /// PubAckDue  --PUBACK-->        done
    /// PubRecDue  --PUBREC-->        PubCompDue (PUBREL due)
    /// PubRecDue  --PUBREC failed--> done [MQTT-4.3.3-4]
    /// PubCompDue --PUBREC-->        PubCompDue (a resent PUBREC: PUBREL again)
    /// PubCompDue --PUBCOMP-->       done
    /// ```
    ///
    /// An id not in the window is [`Acked::Unknown`]: a duplicate after a resend is
    /// legitimate. Any other pair (PUBCOMP for a QoS 1 message, PUBACK for a QoS 2
    /// one, PUBREC for a QoS 1 one, PUBCOMP before PUBREL) mixes the two flows up:
    /// a protocol violation, which closes the connection [MQTT-4.8.0-1].
    pub fn ack(&mut self, id: PacketId, kind: AckKind) -> Result<Acked, ProtocolViolation> {
        let Some(at) = self.position(id) else {
            return Ok(Acked::Unknown);
        };
        let entry = &mut self.entries[at];
        let acked = match (entry.stage, kind) {
            (Stage::PubAckDue, AckKind::PubAck)
            | (Stage::PubRecDue, AckKind::PubRecFailed)
            | (Stage::PubCompDue, AckKind::PubComp) => {
                Acked::Completed(self.entries.remove(at).expect("position() found it"))
            }
            (Stage::PubRecDue | Stage::PubCompDue, AckKind::PubRec) => {
                entry.stage = Stage::PubCompDue;
                Acked::Released
            }
            (Stage::PubAckDue, _) => return Err(WRONG_ACK_QOS1),
            (Stage::PubRecDue | Stage::PubCompDue, _) => return Err(WRONG_ACK_QOS2),
        };
        debug_assert!(self.check_invariants());
        Ok(acked)
    }

    /// Entries in send order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Changes the window of the current connection (the client's Receive Maximum
    /// may differ from one connection to the next), capped by the capacity.
    pub fn set_len_max(&mut self, len_max: u16) {
        self.len_max = len_max.clamp(1, self.capacity);
    }

    /// A new connection: nothing has been sent on it yet.
    pub fn unsend_all(&mut self) {
        for entry in &mut self.entries {
            entry.sent = false;
        }
    }

    /// The oldest entry not yet sent on this connection, marked sent, if the
    /// connection's window has room for it. The caller resends it.
    pub fn next_resend(&mut self) -> Option<Entry> {
        if self.sent_len() >= usize::from(self.len_max) {
            return None;
        }
        let entry = self.entries.iter_mut().find(|e| !e.sent)?;
        entry.sent = true;
        Some(entry.clone())
    }

    /// Removes and returns the entries not yet acknowledged at all that were
    /// dispatched to a shared subscription (their member is leaving).
    pub fn take_shared(&mut self) -> Vec<Entry> {
        let (shared, kept): (Vec<_>, Vec<_>) = self
            .entries
            .drain(..)
            .partition(|e| e.stage != Stage::PubCompDue && e.delivery.shared.is_some());
        self.entries = kept.into();
        shared
    }

    /// Gives back the room the vector keeps beyond its entries (all of it when
    /// empty): it keeps the capacity of its largest burst otherwise.
    pub fn release_room(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// Takes an entry of a session that comes from another node, as the last one:
    /// unsent on this connection, under its own packet id (the client knows the
    /// exchange by it). `false` when the window is at its capacity or the id is
    /// taken: the caller queues the message instead.
    pub fn restore(&mut self, mut entry: Entry) -> bool {
        if self.entries.len() >= usize::from(self.capacity)
            || self.position(entry.packet_id).is_some()
        {
            return false;
        }
        entry.sent = false;
        self.next_id = self.next_id.max(entry.packet_id.get());
        self.entries.push_back(entry);
        debug_assert!(self.check_invariants());
        true
    }

    /// Removes the entry sent under `id`, whatever its stage.
    pub fn remove(&mut self, id: PacketId) -> Option<Entry> {
        let at = self.position(id)?;
        self.entries.remove(at)
    }

    /// Whether the invariants hold: bounded (by the capacity, and what went out on
    /// this connection by its window), ids unique, sent entries before unsent ones,
    /// each stage the one its QoS allows.
    pub fn check_invariants(&self) -> bool {
        let mut ids: Vec<u16> = self.entries.iter().map(|e| e.packet_id.get()).collect();
        ids.sort_unstable();
        ids.dedup();
        let sent_first = self.entries.iter().skip_while(|e| e.sent).all(|e| !e.sent);
        let stages_match_qos = self.entries.iter().all(|e| match e.stage {
            Stage::PubAckDue => e.delivery.qos == QoS::AtLeastOnce,
            Stage::PubRecDue | Stage::PubCompDue => e.delivery.qos == QoS::ExactlyOnce,
        });
        ids.len() == self.entries.len()
            && self.entries.len() <= usize::from(self.capacity)
            && self.len_max <= self.capacity
            && self.sent_len() <= usize::from(self.len_max)
            && sent_first
            && stages_match_qos
    }
}

const WRONG_ACK_QOS1: ProtocolViolation = ProtocolViolation::protocol_error(
    "MQTT-4.8.0-1",
    "PUBREC or PUBCOMP for a QoS 1 message (PUBACK expected)",
);
const WRONG_ACK_QOS2: ProtocolViolation = ProtocolViolation::protocol_error(
    "MQTT-4.8.0-1",
    "PUBACK for a QoS 2 message, or PUBCOMP before PUBREL",
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::script::delivery;

    #[test]
    fn check_invariants_checks_the_bound() {
        let mut inflight = Inflight::new(1);
        inflight.insert(delivery(1, QoS::AtLeastOnce));
        assert!(inflight.check_invariants());
        // Past the capacity with unique ids: only the bound is broken.
        let mut extra = inflight.entries[0].clone();
        extra.packet_id = PacketId::new(99).expect("non-zero");
        inflight.entries.push_back(extra);
        assert!(!inflight.check_invariants(), "two entries in a window of one");
    }

    #[test]
    fn an_empty_window_gives_its_room_back() {
        let mut inflight = Inflight::new(4);
        let id = inflight.insert(delivery(1, QoS::AtLeastOnce));
        assert!(matches!(inflight.ack(id, AckKind::PubAck), Ok(Acked::Completed(_))));
        assert!(inflight.entries.capacity() > 0);
        inflight.release_room();
        assert_eq!(inflight.entries.capacity(), 0);
    }

    #[test]
    fn wrong_acknowledgements_are_violations() {
        // [MQTT-4.8.0-1]
        let mut inflight = Inflight::new(4);
        let qos1 = inflight.insert(delivery(1, QoS::AtLeastOnce));
        let qos2 = inflight.insert(delivery(2, QoS::ExactlyOnce));
        assert_eq!(inflight.ack(qos1, AckKind::PubComp).unwrap_err(), WRONG_ACK_QOS1);
        assert_eq!(inflight.ack(qos1, AckKind::PubRec).unwrap_err(), WRONG_ACK_QOS1);
        assert_eq!(inflight.ack(qos2, AckKind::PubAck).unwrap_err(), WRONG_ACK_QOS2);
        assert_eq!(inflight.ack(qos2, AckKind::PubComp).unwrap_err(), WRONG_ACK_QOS2);
        assert!(matches!(inflight.ack(qos2, AckKind::PubRec), Ok(Acked::Released)));
        assert!(matches!(inflight.ack(qos2, AckKind::PubRec), Ok(Acked::Released)));
        assert_eq!(inflight.ack(qos2, AckKind::PubAck).unwrap_err(), WRONG_ACK_QOS2);
        assert!(matches!(inflight.ack(qos2, AckKind::PubComp), Ok(Acked::Completed(_))));
        assert!(matches!(inflight.ack(qos2, AckKind::PubComp), Ok(Acked::Unknown)));
        assert!(matches!(inflight.ack(qos1, AckKind::PubAck), Ok(Acked::Completed(_))));
        assert!(inflight.is_empty());
    }
}
