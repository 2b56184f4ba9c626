//! Application messages as they travel through the broker, and their 128-bit ids.
//!
//! Sans-IO: the id generator is handed the time; it never reads a clock.

use std::fmt;

use bytes::Bytes;

use crate::protocol::{Properties, QoS, TopicName};

/// A globally unique, per-shard increasing message id [DESIGN §7]:
///
/// ```text
/// 127            64 63      48 47            16 15      0
/// +----------------+----------+----------------+---------+
/// | timestamp (us) | node id  |   shard tag    | sequence|
/// +----------------+----------+----------------+---------+
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub u128);

impl MessageId {
    /// The microsecond timestamp part (logical: it can run ahead of the clock, never behind).
    pub fn timestamp_us(self) -> u64 {
        (self.0 >> 64) as u64
    }

    /// The node id part.
    pub fn node(self) -> u16 {
        (self.0 >> 48) as u16
    }

    /// The shard tag part.
    pub fn shard(self) -> u32 {
        (self.0 >> 16) as u32
    }

    /// The per-tick sequence part.
    pub fn sequence(self) -> u16 {
        self.0 as u16
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({:032x})", self.0)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Hands out [`MessageId`]s for one shard.
///
/// # Invariants
/// Every id is greater than the one before: a clock that steps back is ignored (the
/// last timestamp is kept) and a sequence that wraps within one microsecond advances
/// the timestamp logically instead of waiting for the clock.
#[derive(Debug)]
pub struct MessageIdGen {
    tag: u64,
    last_us: u64,
    sequence: u16,
}

impl MessageIdGen {
    /// A generator for shard `shard` of node `node`.
    pub fn new(node: u16, shard: u32) -> Self {
        MessageIdGen { tag: (u64::from(node) << 32) | u64::from(shard), last_us: 0, sequence: 0 }
    }

    /// The next id, given the wall clock in microseconds since the Unix epoch.
    pub fn next(&mut self, now_us: u64) -> MessageId {
        if now_us > self.last_us {
            self.last_us = now_us;
            self.sequence = 0;
        } else if self.sequence == u16::MAX {
            // 65,536 ids in one microsecond (or a clock that went back): borrow from
            // the future rather than repeat an id.
            self.last_us += 1;
            self.sequence = 0;
        } else {
            self.sequence += 1;
        }
        MessageId(
            (u128::from(self.last_us) << 64)
                | (u128::from(self.tag) << 16)
                | u128::from(self.sequence),
        )
    }
}

/// The session a message came from: its shard and that shard's serial number for
/// it. A client's subscriptions live on the same shard as its publishing session
/// (both are the client id's owner), so comparing these two numbers is comparing
/// client ids, without cloning one into every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Publisher {
    /// The shard that owns the session.
    pub shard: u32,
    /// The session's serial number on that shard, never reused.
    pub session: u64,
}

/// One application message, shared by every subscriber that receives it: cloning the
/// `Arc` around it is the only per-subscriber cost, the payload is never copied.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Assigned at ingress.
    pub id: MessageId,
    /// Topic the message was published to.
    pub topic: TopicName,
    /// Application payload bytes.
    pub payload: Bytes,
    /// The QoS the publisher sent it with; each subscriber gets at most its own
    /// subscription's QoS.
    pub qos: QoS,
    /// The RETAIN flag as published.
    pub retain: bool,
    /// The session of the client that published it; `None` for wills, the
    /// broker's and the embedding program's messages. Subscriptions with No Local
    /// skip their own session's messages [MQTT-3.8.3-3].
    pub publisher: Option<Publisher>,
    /// MQTT 5 PUBLISH properties that travel with the message (Payload Format
    /// Indicator, Message Expiry Interval, Content Type, Response Topic,
    /// Correlation Data, User Properties) [MQTT-3.3.2-15..20]; `None` when there are
    /// none. The expiry interval counts from the time in `id`.
    pub properties: Option<Box<Properties>>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("publisher", &self.publisher)
            .field("payload_len", &self.payload.len())
            .field("properties", &self.properties)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields_round_trip() {
        let mut ids = MessageIdGen::new(0xBEEF, 0x0102_0304);
        let id = ids.next(1_700_000_000_000_000);
        assert_eq!(id.timestamp_us(), 1_700_000_000_000_000);
        assert_eq!(id.node(), 0xBEEF);
        assert_eq!(id.shard(), 0x0102_0304);
        assert_eq!(id.sequence(), 0);
    }

    #[test]
    fn more_than_a_sequence_per_tick_stays_increasing() {
        let mut ids = MessageIdGen::new(1, 1);
        let mut last = ids.next(10);
        for _ in 0..200_000 {
            let id = ids.next(10);
            assert!(id > last);
            last = id;
        }
        assert!(last.timestamp_us() > 10, "the timestamp advanced logically");
    }

    proptest! {
        /// Ids increase per shard whatever the clock does, and two shards or two nodes
        /// never produce the same id.
        #[test]
        fn increasing_and_unique(clock in proptest::collection::vec(0u64..50, 1..2000)) {
            let mut a = MessageIdGen::new(1, 0);
            let mut b = MessageIdGen::new(1, 1);
            let mut c = MessageIdGen::new(2, 0);
            let mut seen = std::collections::HashSet::new();
            let (mut la, mut lb) = (MessageId(0), MessageId(0));
            for now in clock {
                let (ia, ib, ic) = (a.next(now), b.next(now), c.next(now));
                prop_assert!(ia > la && ib > lb);
                la = ia;
                lb = ib;
                prop_assert!(seen.insert(ia) && seen.insert(ib) && seen.insert(ic));
            }
        }
    }
}
