//! This shard's partition of the retained messages (by FNV-1a of the topic), and
//! the queries of new subscriptions.
//!
//! # Invariants
//! - `bytes` is the sum of topic and payload lengths of `store`; `store` holds at
//!   most `count_max` messages and `bytes_max` bytes.
//! - A topic is never both in `store` and in `cleared`.
//! - Last writer wins [MQTT-3.3.1-5]: a message replaces the stored one (or a
//!   remembered clear) only if its id is higher; ids start with the timestamp, so
//!   a set that crossed a ring late cannot replace a newer one.
//! - Stored messages own their bytes (detached from any read buffer).

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use hashbrown::HashMap;

use crate::message::{Message, MessageId};
use crate::protocol::{QoS, TopicFilter};
use crate::router::{owner_shard, topic_matches};
use crate::session::{remaining_expiry, Delivery};

use super::messages::CtrlMsg;
use super::{Core, Now};

/// How long a cleared retained topic remembers its clear: far longer than a
/// message spends on a ring between shards.
const TOMBSTONE_SECS: u64 = 10;

/// What storing a retained message did, for the shard's counters.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stored {
    Yes,
    /// A newer message (or clear) is already there [MQTT-3.3.1-5].
    Superseded,
    /// Cleared, but the clear could not be remembered (tombstones full).
    ClearedUnguarded,
    /// Over `retained_max` or `retained_bytes_max`: not stored.
    OverLimit,
}

/// The retained partition of one shard.
#[derive(Debug)]
pub(super) struct Retained {
    /// The clients' retained messages, by topic.
    store: HashMap<ByteString, Arc<Message>>,
    /// The broker's own retained messages (`$SYS`), outside the clients' limits.
    own: HashMap<ByteString, Arc<Message>>,
    /// Recently cleared topics and the id of the clearing message. Swept after
    /// [`TOMBSTONE_SECS`]; at most `count_max` entries.
    cleared: HashMap<ByteString, MessageId>,
    /// Milliseconds of the next sweep of `cleared`.
    sweep_at_ms: u64,
    bytes: u64,
    count_max: usize,
    bytes_max: u64,
}

fn size(m: &Message) -> u64 {
    (m.topic.as_str().len() + m.payload.len()) as u64
}

/// Whether `topic` is in the broker's own `$SYS` tree.
pub(super) fn is_sys_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

impl Retained {
    pub(super) fn new(count_max: usize, bytes_max: u64) -> Self {
        Retained {
            store: HashMap::new(),
            own: HashMap::new(),
            cleared: HashMap::new(),
            sweep_at_ms: 0,
            bytes: 0,
            count_max,
            bytes_max,
        }
    }

    /// How many client retained messages are stored.
    pub(super) fn len(&self) -> usize {
        self.store.len()
    }

    /// The client retained messages stored (not the broker's own `$SYS` ones).
    pub(super) fn messages(&self) -> impl Iterator<Item = &Arc<Message>> {
        self.store.values()
    }

    /// Forgets clears older than [`TOMBSTONE_SECS`].
    pub(super) fn sweep(&mut self, now: Now) {
        if now.ms < self.sweep_at_ms {
            return;
        }
        self.sweep_at_ms = now.ms + TOMBSTONE_SECS * 1000;
        let horizon = now.unix_us.saturating_sub(TOMBSTONE_SECS * 1_000_000);
        self.cleared.retain(|_, id| id.timestamp_us() >= horizon);
    }

    /// Stores (or, with an empty payload, clears) the retained message of its topic.
    pub(super) fn store(&mut self, message: Arc<Message>) -> Stored {
        let topic = message.topic.as_byte_string().clone();
        // Only the broker publishes to `$SYS` (clients' attempts are dropped at
        // ingress); its own retained messages live apart, outside the clients'
        // limits and count.
        if is_sys_topic(&topic) {
            if message.payload.is_empty() {
                self.own.remove(&topic);
            } else {
                self.own.insert(topic, message);
            }
            return Stored::Yes;
        }
        let newest = self.store.get(&topic).map(|m| m.id).max(self.cleared.get(&topic).copied());
        if newest.is_some_and(|newest| newest > message.id) {
            return Stored::Superseded;
        }
        // [MQTT-3.3.1-10], [MQTT-3.3.1-11]: an empty retained message clears the
        // topic and is not stored.
        if message.payload.is_empty() {
            if let Some(old) = self.store.remove(&topic) {
                self.bytes -= size(&old);
            }
            if self.cleared.len() < self.count_max {
                self.cleared.insert(topic, message.id);
                return Stored::Yes;
            }
            // The clear applies; only its guard against a late older set is not kept.
            return Stored::ClearedUnguarded;
        }
        self.cleared.remove(&topic);
        let (count_after, bytes_after) = match self.store.get(&topic) {
            Some(old) => (self.store.len(), self.bytes - size(old) + size(&message)),
            None => (self.store.len() + 1, self.bytes + size(&message)),
        };
        if count_after > self.count_max || bytes_after > self.bytes_max {
            return Stored::OverLimit;
        }
        self.bytes = bytes_after;
        // Kept until replaced: detach it from the publisher's read buffer.
        let message = Arc::new(Message {
            topic: message.topic.detached(),
            payload: Bytes::copy_from_slice(&message.payload),
            properties: message.properties.as_deref().map(|p| Box::new(p.detached())),
            ..(*message).clone()
        });
        self.store.insert(topic, message);
        Stored::Yes
    }

    /// The retained messages matching `filter`, less those whose Message Expiry
    /// Interval passed [MQTT-3.3.2-5].
    pub(super) fn matching(&self, filter: &TopicFilter, now_us: u64) -> Vec<Arc<Message>> {
        let live = |m: &&Arc<Message>| remaining_expiry(m, now_us).is_some();
        if filter.has_wildcards() {
            self.store
                .iter()
                .chain(self.own.iter())
                .filter(|(topic, _)| topic_matches(filter.as_str(), topic))
                .map(|(_, m)| m)
                .filter(live)
                .map(Arc::clone)
                .collect()
        } else {
            let store = if is_sys_topic(filter.as_str()) { &self.own } else { &self.store };
            store.get(filter.as_str()).filter(live).map(Arc::clone).into_iter().collect()
        }
    }

    pub(super) fn check_invariants(&self) -> bool {
        let bytes: u64 = self.store.values().map(|m| size(m)).sum();
        bytes == self.bytes
            && self.store.len() <= self.count_max
            && self.bytes <= self.bytes_max
            && self.store.keys().all(|t| !self.cleared.contains_key(t))
    }
}

impl Core {
    /// Stores a retained message in this shard's partition, counting the outcome.
    pub(super) fn store_retained(&mut self, message: Arc<Message>) {
        let logged = self.journal.is_some() && !is_sys_topic(message.topic.as_str());
        let noted = logged.then(|| Arc::clone(&message));
        let stored = self.retained.store(message);
        if let (Some(journal), Some(message)) = (self.journal.as_deref_mut(), noted) {
            if matches!(stored, Stored::Yes | Stored::ClearedUnguarded) {
                let set = (!message.payload.is_empty()).then_some(&*message);
                journal.retain(message.topic.as_str(), set);
            }
        }
        match stored {
            Stored::Yes => {}
            Stored::Superseded => self.stats.retained_superseded += 1,
            Stored::ClearedUnguarded => self.stats.limit_retained += 1,
            Stored::OverLimit => {
                // The message was still routed to subscribers; only the store
                // refuses it.
                self.stats.limit_retained += 1;
                self.log_limit("retained_max/retained_bytes_max");
            }
        }
    }

    /// Asks the shards holding retained messages that may match `filter`; returns
    /// how many other shards will answer query `query`.
    pub(super) fn query_retained(
        &mut self,
        client_id: &ByteString,
        filter: &TopicFilter,
        qos: QoS,
        sub_id: Option<u32>,
        query: u64,
    ) -> u32 {
        let targets: Vec<usize> = if filter.has_wildcards() {
            (0..self.shards).collect()
        } else {
            vec![owner_shard(filter.as_str().as_bytes(), self.shards)]
        };
        let mut remote = 0;
        for shard in targets {
            if shard == self.id {
                let messages = self.retained.matching(filter, self.now.unix_us);
                self.deliver_retained(client_id, qos, sub_id, messages);
            } else {
                remote += 1;
                let msg = CtrlMsg::RetainedQuery {
                    origin: self.id,
                    client_id: client_id.clone(),
                    filter: filter.clone(),
                    qos,
                    sub_id,
                    query,
                };
                self.ctrl_out.push(shard, msg);
            }
        }
        remote
    }

    pub(super) fn deliver_retained(
        &mut self,
        client_id: &ByteString,
        qos: QoS,
        sub_id: Option<u32>,
        messages: Vec<Arc<Message>>,
    ) {
        let Some(session) = self.sessions.key(client_id) else { return };
        for message in messages {
            if !self.may_read(session, message.topic.as_str()) {
                continue;
            }
            let qos = message.qos.min(qos);
            // [MQTT-3.3.1-8]: sent because of a new subscription, so RETAIN is set.
            let mut delivery = Delivery::new(message, qos, true);
            delivery.sub_ids.extend(sub_id);
            self.deliver_to(session, delivery);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageId;
    use crate::protocol::TopicName;

    fn message(id: u128, topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message {
            id: MessageId(id),
            topic: TopicName::try_from(topic).expect("valid"),
            payload: Bytes::from_static(payload),
            qos: QoS::AtMostOnce,
            retain: true,
            publisher: None,
            properties: None,
        })
    }

    #[test]
    fn last_writer_wins_and_a_clear_is_remembered() {
        let mut retained = Retained::new(10, 1000);
        assert_eq!(retained.store(message(5, "a", b"new")), Stored::Yes);
        assert_eq!(retained.store(message(3, "a", b"old")), Stored::Superseded);
        assert_eq!(retained.store(message(7, "a", b"")), Stored::Yes);
        assert_eq!(retained.len(), 0);
        assert_eq!(retained.store(message(6, "a", b"late")), Stored::Superseded);
        assert!(retained.check_invariants());
    }

    #[test]
    fn limits_refuse_and_count_bytes() {
        let mut retained = Retained::new(1, 1000);
        assert_eq!(retained.store(message(1, "a", b"x")), Stored::Yes);
        assert_eq!(retained.store(message(2, "b", b"y")), Stored::OverLimit);
        assert_eq!(retained.store(message(3, "a", b"xyz")), Stored::Yes, "a replacement fits");
        assert!(retained.check_invariants());
    }
}
