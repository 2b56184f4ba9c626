//! Fan-out: handing a message to this shard's sessions, and the backlog of
//! subscribers that fall behind (the source of backpressure).
//!
//! # Invariants
//! - One copy per session, at the highest QoS among its matching subscriptions,
//!   with all their subscription identifiers [MQTT-3.3.5-1], [MQTT-3.3.4-3].
//! - The shard's `queued_bytes` is the sum of its sessions' queued bytes.
//! - A connection is in `backlogged` iff its `in_backlog` flag is set.

use std::sync::Arc;

use bytes::BytesMut;

use crate::message::Message;
use crate::metrics::ShardStats;
use crate::session::{Delivery, DropReason, Session};

use super::{out_buffer, ConnId, Core, Now, SessionKey};

/// How long a backlogged subscriber may go without completing a write before it
/// counts as stuck rather than busy.
const SLOW_CONSUMER_MS: u64 = 1000;

impl Core {
    /// Hands a message to every local session subscribed to its topic.
    pub(super) fn deliver_local(&mut self, message: &Arc<Message>) {
        let mut targets = std::mem::take(&mut self.scratch);
        let mut filters = 0;
        // The publishing session, if it is one of this shard's.
        let shard = self.id as u32;
        let publisher = message.publisher.filter(|p| p.shard == shard).map(|p| p.session);
        let sessions = &self.sessions;
        let is_publisher = |key: SessionKey| {
            publisher.is_some_and(|serial| sessions.by_key(key).is_some_and(|e| e.serial == serial))
        };
        self.local_subs.for_each_match(message.topic.as_str(), |_, subscribers| {
            filters += 1;
            targets.extend(
                subscribers
                    .iter()
                    // No Local: not back to the publishing client [MQTT-3.8.3-3].
                    .filter(|(key, options)| !(options.no_local && is_publisher(**key)))
                    .map(|(key, options)| (*key, *options)),
            );
        });
        if filters > 1 {
            targets.sort_unstable_by_key(|(key, _)| *key);
        }
        let mut targets_iter = targets.drain(..).peekable();
        while let Some((key, first)) = targets_iter.next() {
            let mut qos = first.qos;
            let mut retain = first.retain_as_published;
            let mut sub_ids: Vec<u32> = first.id.into_iter().collect();
            // A subscription the ACL covers whole grants the topic on its own.
            let mut acl_check = first.acl_check;
            // Overlapping subscriptions of one client: one copy [MQTT-3.3.5-1].
            while let Some((_, more)) = targets_iter.next_if(|(next, _)| *next == key) {
                qos = qos.max(more.qos);
                retain |= more.retain_as_published;
                sub_ids.extend(more.id);
                acl_check &= more.acl_check;
            }
            if acl_check && !self.may_read(key, message.topic.as_str()) {
                continue;
            }
            let delivery = Delivery {
                message: Arc::clone(message),
                qos: message.qos.min(qos),
                // Retain As Published keeps the flag; otherwise it is cleared on
                // forwarding [MQTT-3.3.1-12], [MQTT-3.3.1-13].
                retain: retain && message.retain,
                sub_ids,
                shared: None,
            };
            self.deliver_to(key, delivery);
        }
        drop(targets_iter);
        self.scratch = targets;
    }

    /// Gives one delivery to one session: into its connection's output, or its
    /// queue.
    pub(super) fn deliver_to(&mut self, key: SessionKey, delivery: Delivery) {
        let Some(entry) = self.sessions.by_key_mut(key) else { return };
        let before = SentSnapshot::of(&entry.session);
        let may_queue = self.stats.queued_bytes < self.config.queued_bytes_max;
        let now_us = self.now.unix_us;
        let conn = entry.conn.and_then(|id| self.conns.get_mut(id.slot()).map(|c| (id, c)));
        let dropped = match conn {
            Some((id, conn)) => {
                let dropped = entry.session.deliver(
                    delivery,
                    Some(out_buffer(conn, &mut self.spare_out)),
                    may_queue,
                    now_us,
                );
                let behind = entry.session.mqueue_len() > 0
                    || conn.out.len() > self.config.out_buffer_max_bytes;
                let newly_behind = behind && !conn.in_backlog;
                if newly_behind {
                    conn.in_backlog = true;
                }
                if !conn.dirty {
                    conn.dirty = true;
                    self.to_wake.push(id);
                }
                if newly_behind {
                    self.backlogged.push(id);
                    // Pause publishers now, not at the end of the pass: one pass can
                    // hold hundreds of buffered PUBLISH packets, enough to overflow
                    // the queue. The end of the pass decides again (a stuck
                    // subscriber reopens it).
                    self.set_readers_paused(true);
                }
                dropped
            }
            None => entry.session.deliver(delivery, None, may_queue, now_us),
        };
        let entry = self.sessions.by_key_mut(key).expect("present above");
        before.count(&mut self.stats, &mut entry.session);
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.absorb(entry.serial, &mut entry.session);
        }
        match dropped.map(|(_, reason)| reason) {
            Some(DropReason::Budget) => self.stats.dropped_budget += 1,
            Some(DropReason::QueueFull | DropReason::Qos0NotStored) => {
                self.stats.dropped_mqueue += 1
            }
            None => {}
        }
    }

    /// Runs `f` on connection `id`'s session with its output buffer, if `id` still
    /// owns the session; marks the connection for a write.
    pub(super) fn with_session<R>(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut Session, &mut BytesMut) -> R,
    ) -> Option<R> {
        let conn = self.conns.get_mut(id.slot()).filter(|c| c.serial == id.serial)?;
        let entry = self.sessions.by_key_mut(conn.session).filter(|e| e.conn == Some(id))?;
        let before = SentSnapshot::of(&entry.session);
        let result = f(&mut entry.session, out_buffer(conn, &mut self.spare_out));
        before.count(&mut self.stats, &mut entry.session);
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.absorb(entry.serial, &mut entry.session);
        }
        self.mark_dirty(id);
        Some(result)
    }

    /// After a write emptied `id`'s buffer: moves what its session queued for want
    /// of buffer room into it.
    pub(super) fn refill(&mut self, id: ConnId) {
        let Some(conn) = self.conn(id) else { return };
        let queued = self
            .sessions
            .by_key(conn.session)
            .is_some_and(|e| e.session.mqueue_len() > 0 && e.conn == Some(id));
        if queued {
            let now_us = self.now.unix_us;
            self.with_session(id, |s, out| s.drain(out, now_us));
        }
    }

    /// Whether a backlogged subscriber is still making progress: then publishers
    /// wait for it (TCP backpressure) rather than have its queue drop messages. A
    /// subscriber that has written nothing for a second is slow, not busy: nobody
    /// waits for it and its queue's drop policy applies.
    pub(super) fn active_backlog(&mut self, now: Now) -> bool {
        if self.backlogged.is_empty() {
            return false;
        }
        let out_max = self.config.out_buffer_max_bytes;
        let (conns, sessions) = (&mut self.conns, &self.sessions);
        self.backlogged.retain(|id| {
            let Some(conn) = conns.get_mut(id.slot()).filter(|c| c.serial == id.serial) else {
                return false;
            };
            let open = conn.close.is_none();
            let queued = sessions
                .by_key(conn.session)
                .is_some_and(|e| e.conn == Some(*id) && e.session.mqueue_len() > 0);
            let keep = open && (queued || conn.out.len() > out_max);
            conn.in_backlog = keep;
            keep
        });
        self.backlogged.iter().any(|id| {
            let conn = &self.conns[id.slot()];
            now.ms.saturating_sub(conn.last_progress_ms) < SLOW_CONSUMER_MS
        })
    }
}

/// A session's queued bytes before a call, to add what the call sent, queued and
/// dropped to the shard's counters.
pub(super) struct SentSnapshot {
    queued_bytes: usize,
}

impl SentSnapshot {
    pub(super) fn of(session: &Session) -> SentSnapshot {
        SentSnapshot { queued_bytes: session.queued_bytes() }
    }

    pub(super) fn count(self, stats: &mut ShardStats, session: &mut Session) {
        let taken = session.take_stats();
        for (out, sent) in stats.messages_out.iter_mut().zip(taken.sent) {
            *out += u64::from(sent);
        }
        stats.dropped_expired += u64::from(taken.dropped_expired);
        stats.dropped_too_large += u64::from(taken.dropped_too_large);
        stats.queued_bytes =
            stats.queued_bytes + session.queued_bytes() as u64 - self.queued_bytes as u64;
    }
}
