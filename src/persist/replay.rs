//! Rebuilding durable state from log records, in log order.
//!
//! Sans-IO: [`Replay::apply`] takes records as the log holds them; [`Replay::finish`]
//! gives the sessions as [`SessionImage`]s, ready for their owner shards, and the
//! retained messages.
//!
//! # Invariants
//! - A record about a session the replay does not know (its start was compacted
//!   away after it ended) changes nothing.
//! - A session's pending messages keep their log order: the window's entries
//!   (with a packet id) first as sent, then the queue [MQTT-4.6.0-1].

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::message::{Message, MessageId};
use crate::protocol::{PacketId, QoS, TopicFilter};
use crate::session::{Delivery, Entry, SessionImage, Stage, SubOptions};

use super::record::Record;

/// A session as the log left it.
#[derive(Debug)]
pub struct RecoveredSession {
    pub client_id: String,
    pub expiry_secs: Option<u64>,
    /// Unix seconds since which it is offline; 0: it was online at the end.
    pub offline_since_s: u64,
    pub username: Option<String>,
    pub image: SessionImage,
    /// Its will (as a message), its Will Delay Interval, and its client's protocol
    /// level: of the connection the crash ended, or waiting while offline.
    pub will: Option<(Message, u32, u8)>,
}

/// A pending message of a session under replay.
#[derive(Debug)]
struct Pending {
    message: MessageId,
    qos: QoS,
    retain: bool,
    sub_ids: Vec<u32>,
    packet_id: Option<PacketId>,
    released: bool,
}

#[derive(Debug, Default)]
struct Replayed {
    client_id: String,
    expiry_secs: Option<u64>,
    offline_since_s: u64,
    username: Option<String>,
    subscriptions: Vec<(TopicFilter, SubOptions)>,
    pending: VecDeque<Pending>,
    awaiting_rel: Vec<PacketId>,
    will: Option<(Message, u32, u8)>,
}

/// What [`Replay`] could not use, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub records: u64,
    /// Records about a session or a message the log no longer holds.
    pub orphans: u64,
}

/// The state of one log (or several: a change of `--cores`) under replay.
#[derive(Debug, Default)]
pub struct Replay {
    /// By log (the shard's, in replay order) and serial in that log.
    sessions: HashMap<(u64, u64), Replayed>,
    /// The log under replay.
    log: u64,
    messages: HashMap<MessageId, Arc<Message>>,
    retained: HashMap<String, Arc<Message>>,
    pub stats: ReplayStats,
}

impl Replay {
    /// Applies the next record of the log. Serials name sessions within one log:
    /// replaying another log needs [`Replay::next_log`] first.
    pub fn apply(&mut self, record: Record) {
        self.stats.records += 1;
        let orphan = match record {
            Record::Session {
                serial,
                fresh,
                client_id,
                expiry_secs,
                offline_since_s,
                username,
            } => {
                let session = self.sessions.entry((self.log, serial)).or_default();
                if fresh {
                    *session = Replayed::default();
                }
                session.client_id = client_id;
                session.expiry_secs = expiry_secs;
                session.offline_since_s = offline_since_s;
                session.username = username;
                false
            }
            Record::SessionEnd { serial } => self.sessions.remove(&(self.log, serial)).is_none(),
            Record::Subscribe { serial, filter, options } => self.with(serial, |s| {
                match s.subscriptions.iter_mut().find(|(f, _)| *f == filter) {
                    Some((_, o)) => *o = options,
                    None => s.subscriptions.push((filter, options)),
                }
                true
            }),
            Record::Unsubscribe { serial, filter } => self.with(serial, |s| {
                s.subscriptions.retain(|(f, _)| *f != filter);
                true
            }),
            Record::Message(message) => {
                self.messages.insert(message.id, Arc::new(message));
                false
            }
            Record::Pending { serial, message, qos, retain, sub_ids, packet_id, released } => {
                !self.messages.contains_key(&message)
                    || self.with(serial, |s| {
                        let pending =
                            Pending { message, qos, retain, sub_ids, packet_id, released };
                        s.pending.push_back(pending);
                        true
                    })
            }
            Record::Sent { serial, message, packet_id } => self.with(serial, |s| {
                let first =
                    s.pending.iter_mut().find(|p| p.message == message && p.packet_id.is_none());
                first.map(|p| p.packet_id = Some(packet_id)).is_some()
            }),
            Record::Released { serial, packet_id } => self.with(serial, |s| {
                let entry = s.pending.iter_mut().find(|p| p.packet_id == Some(packet_id));
                entry.map(|p| p.released = true).is_some()
            }),
            Record::Done { serial, message } => self.with(serial, |s| {
                let at = s.pending.iter().position(|p| p.message == message);
                at.and_then(|at| s.pending.remove(at)).is_some()
            }),
            Record::AwaitRel { serial, packet_id } => self.with(serial, |s| {
                if !s.awaiting_rel.contains(&packet_id) {
                    s.awaiting_rel.push(packet_id);
                }
                true
            }),
            Record::Rel { serial, packet_id } => self.with(serial, |s| {
                s.awaiting_rel.retain(|id| *id != packet_id);
                true
            }),
            Record::Retain(message) => {
                let newer = self
                    .retained
                    .get(message.topic.as_str())
                    .is_none_or(|old| old.id <= message.id);
                if newer {
                    self.retained.insert(message.topic.to_string(), Arc::new(message));
                }
                false
            }
            Record::RetainClear { topic } => {
                self.retained.remove(&topic);
                false
            }
            Record::Will { serial, will, protocol } => self.with(serial, |s| {
                s.will = will.map(|(message, delay)| (message, delay, protocol));
                true
            }),
        };
        if orphan {
            self.stats.orphans += 1;
        }
    }

    /// Applies `f` to the session `serial`; whether the record was an orphan (no
    /// such session, or `f` found nothing to change).
    fn with(&mut self, serial: u64, f: impl FnOnce(&mut Replayed) -> bool) -> bool {
        !self.sessions.get_mut(&(self.log, serial)).is_some_and(f)
    }

    /// The next records come from another shard's log, whose serials are its own.
    pub fn next_log(&mut self) {
        self.log += 1;
    }

    /// The sessions and retained messages the log describes. A client id found in
    /// two logs (a crash during a change of `--cores`) keeps the later session.
    pub fn finish(self) -> (Vec<RecoveredSession>, Vec<Arc<Message>>) {
        let messages = self.messages;
        let mut by_client: HashMap<String, RecoveredSession> = HashMap::new();
        let mut sessions: Vec<((u64, u64), Replayed)> = self.sessions.into_iter().collect();
        sessions.sort_by_key(|(key, _)| *key);
        for (_, s) in sessions {
            let mut image = SessionImage {
                subscriptions: s.subscriptions,
                awaiting_rel: s.awaiting_rel,
                ..SessionImage::default()
            };
            for p in s.pending {
                let Some(message) = messages.get(&p.message) else { continue };
                let delivery = Delivery {
                    message: Arc::clone(message),
                    qos: p.qos,
                    retain: p.retain,
                    sub_ids: p.sub_ids,
                    shared: None,
                };
                match p.packet_id {
                    Some(packet_id) => {
                        let stage = match (p.qos, p.released) {
                            (QoS::ExactlyOnce, true) => Stage::PubCompDue,
                            (QoS::ExactlyOnce, false) => Stage::PubRecDue,
                            _ => Stage::PubAckDue,
                        };
                        image.inflight.push(Entry { packet_id, delivery, stage, sent: false });
                    }
                    None => image.mqueue.push(delivery),
                }
            }
            by_client.insert(
                s.client_id.clone(),
                RecoveredSession {
                    client_id: s.client_id,
                    expiry_secs: s.expiry_secs,
                    offline_since_s: s.offline_since_s,
                    username: s.username,
                    image,
                    will: s.will,
                },
            );
        }
        let mut retained: Vec<Arc<Message>> = self.retained.into_values().collect();
        retained.sort_by_key(|m| m.id);
        (by_client.into_values().collect(), retained)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TopicName;

    fn message(id: u128) -> Message {
        Message {
            id: MessageId(id),
            topic: TopicName::try_from("t").unwrap(),
            payload: vec![id as u8].into(),
            qos: QoS::ExactlyOnce,
            retain: false,
            publisher: None,
            properties: None,
        }
    }

    fn pending(serial: u64, id: u128, qos: QoS) -> Record {
        Record::Pending {
            serial,
            message: MessageId(id),
            qos,
            retain: false,
            sub_ids: vec![],
            packet_id: None,
            released: false,
        }
    }

    fn session(serial: u64, client_id: &str) -> Record {
        Record::Session {
            serial,
            fresh: true,
            client_id: client_id.into(),
            expiry_secs: None,
            offline_since_s: 0,
            username: None,
        }
    }

    #[test]
    fn a_session_comes_back_with_its_window_queue_and_subscriptions() {
        let mut replay = Replay::default();
        let pid = |n| PacketId::new(n).unwrap();
        let filter = TopicFilter::try_from("t/#").unwrap();
        let records = vec![
            session(1, "a"),
            Record::Subscribe {
                serial: 1,
                filter: filter.clone(),
                options: SubOptions::qos(QoS::ExactlyOnce),
            },
            Record::Message(message(10)),
            Record::Message(message(11)),
            Record::Message(message(12)),
            Record::Message(message(13)),
            pending(1, 10, QoS::ExactlyOnce),
            pending(1, 11, QoS::ExactlyOnce),
            pending(1, 12, QoS::AtLeastOnce),
            pending(1, 13, QoS::AtLeastOnce),
            Record::Sent { serial: 1, message: MessageId(10), packet_id: pid(1) },
            Record::Sent { serial: 1, message: MessageId(11), packet_id: pid(2) },
            Record::Sent { serial: 1, message: MessageId(12), packet_id: pid(3) },
            Record::Released { serial: 1, packet_id: pid(1) },
            Record::Done { serial: 1, message: MessageId(12) },
            Record::AwaitRel { serial: 1, packet_id: pid(9) },
            Record::AwaitRel { serial: 1, packet_id: pid(8) },
            Record::Rel { serial: 1, packet_id: pid(9) },
            // A session that ended leaves nothing.
            session(2, "b"),
            pending(2, 13, QoS::AtLeastOnce),
            Record::SessionEnd { serial: 2 },
            // Names a message the log no longer holds: ignored, counted.
            pending(1, 99, QoS::AtLeastOnce),
        ];
        for r in records {
            replay.apply(r);
        }
        assert_eq!(replay.stats.orphans, 1);
        let (sessions, retained) = replay.finish();
        assert!(retained.is_empty());
        assert_eq!(sessions.len(), 1);
        let s = &sessions[0];
        assert_eq!(s.client_id, "a");
        assert_eq!(s.image.subscriptions, vec![(filter, SubOptions::qos(QoS::ExactlyOnce))]);
        let window: Vec<(u16, Stage, u128)> = s
            .image
            .inflight
            .iter()
            .map(|e| (e.packet_id.get(), e.stage, e.delivery.message.id.0))
            .collect();
        assert_eq!(window, vec![(1, Stage::PubCompDue, 10), (2, Stage::PubRecDue, 11)]);
        let queue: Vec<u128> = s.image.mqueue.iter().map(|d| d.message.id.0).collect();
        assert_eq!(queue, vec![13]);
        assert_eq!(s.image.awaiting_rel, vec![pid(8)]);
    }

    #[test]
    fn a_fresh_record_starts_over_and_retained_keeps_the_newest() {
        let mut replay = Replay::default();
        replay.apply(session(1, "a"));
        replay.apply(Record::Message(message(1)));
        replay.apply(pending(1, 1, QoS::AtLeastOnce));
        // A checkpoint of the same session: what came before it is replaced.
        replay.apply(session(1, "a"));
        let mut newer = message(5);
        newer.retain = true;
        let mut older = message(4);
        older.retain = true;
        replay.apply(Record::Retain(newer));
        replay.apply(Record::Retain(older));
        let (sessions, retained) = replay.finish();
        assert!(sessions[0].image.mqueue.is_empty());
        assert_eq!(retained.len(), 1);
        assert_eq!(retained[0].id, MessageId(5));
    }

    #[test]
    fn logs_of_several_shards_keep_their_sessions_apart() {
        let mut replay = Replay::default();
        replay.apply(session(1, "a"));
        replay.next_log();
        replay.apply(session(1, "b"));
        replay.apply(Record::SessionEnd { serial: 1 });
        replay.apply(session(1, "c"));
        let (sessions, _) = replay.finish();
        let mut ids: Vec<&str> = sessions.iter().map(|s| s.client_id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec!["a", "c"]);
    }
}
