//! What changed in a durable session's messages, for its shard's log
//! (`crate::persist`): the session notes each change as it makes it, in order, and
//! its owner takes them after every call ([`Session::take_changes`]).
//!
//! Only a durable session notes anything ([`Session::set_durable`]): a broker
//! without a data directory pays one branch per change.
//!
//! # Invariants
//! - Replaying a session's changes in order on its last checkpoint gives its
//!   pending messages (window and queue, in order, with packet ids and stages)
//!   and its QoS 2 ids awaiting PUBREL (`persist::replay`).

use crate::message::MessageId;
use crate::protocol::{PacketId, TopicFilter};

use super::{Delivery, Session, SubOptions};

/// One change of a durable session.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A message joined the end of the session's pending messages: sent under
    /// this packet id, or queued (`None`).
    Pending(Delivery, Option<PacketId>),
    /// The first queued pending message with this id went out under a packet id.
    Sent(MessageId, PacketId),
    /// PUBREC came for this packet id: PUBREL is due.
    Released(PacketId),
    /// The first pending message with this id left: acknowledged, dropped or
    /// expired.
    Done(MessageId),
    /// A QoS 2 message from the client was routed; its PUBREL has not come.
    AwaitRel(PacketId),
    /// Its PUBREL came.
    Rel(PacketId),
    /// A subscription made or replaced.
    Subscribe(TopicFilter, SubOptions),
    /// A subscription removed.
    Unsubscribe(TopicFilter),
}

impl Session {
    /// Makes the session note its changes (its shard keeps a log and the session
    /// outlives its connection), or stop.
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
        if !durable {
            if let Some(traffic) = self.traffic.as_deref_mut() {
                traffic.changes = Vec::new();
            }
        }
    }

    /// Whether the session notes its changes.
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// The changes noted since they were last taken, oldest first.
    pub fn take_changes(&mut self) -> Vec<Change> {
        match self.traffic.as_deref_mut() {
            Some(traffic) if !traffic.changes.is_empty() => std::mem::take(&mut traffic.changes),
            _ => Vec::new(),
        }
    }

    /// Notes the change `change` makes, if the session is durable.
    pub(super) fn note(&mut self, change: impl FnOnce() -> Change) {
        if self.durable {
            let change = change();
            self.traffic_mut().changes.push(change);
        }
    }
}
