//! The records a shard's core appends to its log in one pass, sans-IO: the IO
//! layer takes them at the end of the pass ([`Journal::take`]) and writes them to
//! the shard's log (`shard::log`).
//!
//! # Invariants
//! - A [`Record::Message`] precedes, in the log, every record that names its id
//!   since the log's last checkpoint started ([`Journal::forget_messages`]).
//! - `appended` counts every byte ever taken or waiting: the log position a pass's
//!   output waits for under `--sync always`.

use bytes::BytesMut;
use hashbrown::HashSet;

use crate::message::{Message, MessageId};
use crate::protocol::{LastWill, PacketId, ProtocolVersion, TopicFilter};
use crate::session::{Change, Delivery, Session, SessionImage, SubOptions};

use super::record::{self, Record};

/// Message ids remembered as written, beyond which the set starts over: a
/// message named again after that is written again (correct, a few bytes more).
const WRITTEN_MAX: usize = 1 << 20;

/// Counters of the journal, since the shard started.
#[derive(Clone, Copy, Debug, Default)]
pub struct JournalStats {
    pub records: u64,
    /// Messages written (once per log since its last checkpoint).
    pub messages: u64,
    /// Records larger than a record may be: not written, their state not durable.
    pub too_large: u64,
}

/// One shard's records not yet taken by its log.
#[derive(Debug, Default)]
pub struct Journal {
    buf: BytesMut,
    /// Ids of the messages the log holds since its last checkpoint.
    written: HashSet<MessageId>,
    appended: u64,
    /// Set when the log failed: records are dropped from then on.
    discard: bool,
    pub stats: JournalStats,
}

impl Journal {
    /// The log position after everything appended so far.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// The records appended since the last call, if any.
    pub fn take(&mut self) -> Option<BytesMut> {
        (!self.buf.is_empty()).then(|| self.buf.split())
    }

    /// The log cannot be written: nothing is appended from now on.
    pub fn discard(&mut self) {
        self.discard = true;
        self.buf = BytesMut::new();
        self.written = HashSet::new();
    }

    fn put(&mut self, record: &Record) {
        if self.discard {
            return;
        }
        let before = self.buf.len();
        if record::put(&mut self.buf, record) {
            self.stats.records += 1;
            self.appended += (self.buf.len() - before) as u64;
        } else {
            self.stats.too_large += 1;
        }
    }

    /// A checkpoint starts: messages are written again before their next mention.
    pub fn forget_messages(&mut self) {
        self.written = HashSet::new();
    }

    fn message(&mut self, message: &Message) {
        if self.written.contains(&message.id) {
            return;
        }
        if self.written.len() >= WRITTEN_MAX {
            self.written.clear();
        }
        self.written.insert(message.id);
        self.stats.messages += 1;
        self.put(&Record::Message(message.clone()));
    }

    /// A persistent session's terms; `fresh`: it starts (over) here.
    pub fn session(
        &mut self,
        serial: u64,
        fresh: bool,
        client_id: &str,
        expiry_secs: Option<u64>,
        offline_since_s: u64,
        username: Option<&str>,
    ) {
        self.put(&Record::Session {
            serial,
            fresh,
            client_id: client_id.to_owned(),
            expiry_secs,
            offline_since_s,
            username: username.map(str::to_owned),
        });
    }

    pub fn session_end(&mut self, serial: u64) {
        self.put(&Record::SessionEnd { serial });
    }

    fn subscribe(&mut self, serial: u64, filter: &TopicFilter, options: SubOptions) {
        self.put(&Record::Subscribe { serial, filter: filter.clone(), options });
    }

    /// The changes `session` noted, as records.
    pub fn absorb(&mut self, serial: u64, session: &mut Session) {
        for change in session.take_changes() {
            self.change(serial, change);
        }
    }

    fn change(&mut self, serial: u64, change: Change) {
        let record = match change {
            Change::Pending(delivery, packet_id) => {
                self.pending(serial, &delivery, packet_id, false);
                return;
            }
            Change::Sent(message, packet_id) => Record::Sent { serial, message, packet_id },
            Change::Released(packet_id) => Record::Released { serial, packet_id },
            Change::Done(message) => Record::Done { serial, message },
            Change::AwaitRel(packet_id) => Record::AwaitRel { serial, packet_id },
            Change::Rel(packet_id) => Record::Rel { serial, packet_id },
            Change::Subscribe(filter, options) => Record::Subscribe { serial, filter, options },
            Change::Unsubscribe(filter) => Record::Unsubscribe { serial, filter },
        };
        self.put(&record);
    }

    fn pending(
        &mut self,
        serial: u64,
        delivery: &Delivery,
        packet_id: Option<PacketId>,
        released: bool,
    ) {
        self.message(&delivery.message);
        self.put(&Record::Pending {
            serial,
            message: delivery.message.id,
            qos: delivery.qos,
            retain: delivery.retain,
            sub_ids: delivery.sub_ids.clone(),
            packet_id,
            released,
        });
    }

    /// A whole session, which the records after it complete: a checkpoint, a
    /// session recovered at start-up or handed over by another node.
    pub fn checkpoint(
        &mut self,
        serial: u64,
        client_id: &str,
        expiry_secs: Option<u64>,
        offline_since_s: u64,
        username: Option<&str>,
        image: &SessionImage,
    ) {
        self.session(serial, true, client_id, expiry_secs, offline_since_s, username);
        for (filter, options) in &image.subscriptions {
            self.subscribe(serial, filter, *options);
        }
        for entry in &image.inflight {
            let released = entry.stage == crate::session::Stage::PubCompDue;
            self.pending(serial, &entry.delivery, Some(entry.packet_id), released);
        }
        for delivery in &image.mqueue {
            self.pending(serial, delivery, None, false);
        }
        for packet_id in &image.awaiting_rel {
            self.put(&Record::AwaitRel { serial, packet_id: *packet_id });
        }
    }

    /// The session's will (its connection's, or one waiting for its delay), or
    /// none.
    pub fn will(&mut self, serial: u64, will: Option<&LastWill>, protocol: ProtocolVersion) {
        let will = will.map(|will| {
            let mut properties = will.properties.clone().into_inner();
            let delay = properties.will_delay_interval.take().unwrap_or(0);
            let message = Message {
                id: MessageId(0),
                topic: will.topic.clone(),
                payload: will.payload.clone(),
                qos: will.qos,
                retain: will.retain,
                publisher: None,
                properties: (!properties.is_empty()).then(|| Box::new(properties)),
            };
            (message, delay)
        });
        self.put(&Record::Will { serial, will, protocol: protocol.level() });
    }

    /// A retained message set (`None`: its topic cleared).
    pub fn retain(&mut self, topic: &str, message: Option<&Message>) {
        match message {
            Some(message) => self.put(&Record::Retain(message.clone())),
            None => self.put(&Record::RetainClear { topic: topic.to_owned() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::persist::record::{decode, Decoded};
    use crate::persist::replay::Replay;
    use crate::protocol::{ProtocolVersion, QoS, TopicName};
    use crate::session::{Link, SessionLimits};

    fn replay(bytes: &[u8]) -> Replay {
        let mut replay = Replay::default();
        let mut at = 0;
        while let Decoded::Record(r, used) = decode(&bytes[at..]) {
            replay.apply(r);
            at += used;
        }
        assert_eq!(at, bytes.len(), "every record decodes");
        replay
    }

    fn message(n: u8, qos: QoS) -> Arc<Message> {
        Arc::new(Message {
            id: MessageId(u128::from(n)),
            topic: TopicName::try_from("t").unwrap(),
            payload: vec![n].into(),
            qos,
            retain: false,
            publisher: None,
            properties: None,
        })
    }

    /// A session's changes, replayed, give the session the live one has: its
    /// window with ids and stages, its queue, its QoS 2 ids.
    #[test]
    fn a_replayed_journal_matches_the_live_session() {
        let limits = SessionLimits {
            inflight_max: 2,
            mqueue_len_max: 3,
            mqueue_store_qos0: false,
            out_buffer_max: 1 << 20,
        };
        let mut journal = Journal::default();
        let mut session = Session::new("c".into(), limits);
        session.set_durable(true);
        session.attach(Link::v3(ProtocolVersion::V311));
        journal.session(1, true, "c", None, 0, None);
        let mut out = BytesMut::new();
        for n in 0..7 {
            let qos = if n % 2 == 0 { QoS::ExactlyOnce } else { QoS::AtLeastOnce };
            session.deliver(Delivery::new(message(n, qos), qos, false), Some(&mut out), true, 0);
            journal.absorb(1, &mut session);
        }
        // 0 and 1 in the window, 2..6 queued: the queue of 3 dropped 2 and 3.
        let first = PacketId::new(1).unwrap();
        let ack = crate::protocol::Ack::new(first);
        session.on_pubrec(&ack, &mut out, 0).unwrap();
        let second = PacketId::new(2).unwrap();
        session.on_puback(second, &mut out, 0).unwrap();
        assert!(session.on_incoming_qos2(PacketId::new(9).unwrap()));
        journal.absorb(1, &mut session);
        session.go_offline();
        let live = session.export();

        let bytes = journal.take().unwrap();
        let (sessions, _) = replay(&bytes).finish();
        let got = &sessions[0].image;
        let view = |i: &SessionImage| {
            let window: Vec<_> =
                i.inflight.iter().map(|e| (e.packet_id, e.stage, e.delivery.message.id)).collect();
            let queue: Vec<_> = i.mqueue.iter().map(|d| d.message.id).collect();
            (window, queue, i.awaiting_rel.clone())
        };
        assert_eq!(view(got), view(&live));
        assert_eq!(view(got).0.len(), 2, "the window refilled from the queue");
    }
}
