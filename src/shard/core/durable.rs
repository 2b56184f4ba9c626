//! The core's side of durable sessions (`--data-dir`): what it appends to its
//! shard's log ([`crate::persist::Journal`]), and the state recovered at start-up.
//!
//! Which changes are logged, and where:
//! - a persistent session's start and terms: `clients` (CONNECT, and its close,
//!   with the time it went offline), its end: `remove_session` and the cluster's
//!   hand-over (`nodes`);
//! - its subscriptions and messages: noted by the session itself
//!   (`session::journal`), taken after every call on it (`fanout`);
//! - its will: `clients` (the connection's at CONNECT, the delayed one at its
//!   close) and `wills` (none once published);
//! - retained messages: `retained`;
//! - under `--sync always`, what output waits for ([`Hold`]), and the
//!   checkpoints ([`Walk`]) that let old segments go.
//!
//! In a cluster, a recovered session may be stale: its client connected to
//! another node while this one was down, or another node published its will
//! when this one died. Recovered sessions stay unreconciled until the IO layer
//! asked the other nodes ([`Core::recovered_sessions`], [`Core::reconcile`]);
//! until then their wills wait, and a session handed over from another node
//! replaces them.
//!
//! # Invariants
//! - A session is durable (notes its changes) iff the shard keeps a log and the
//!   session is persistent or was when its last record was written.
//! - An unreconciled session is offline and was recovered at start-up: its client
//!   coming back (or being claimed) reconciles it.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use hashbrown::HashMap;

use bytestring::ByteString;

use crate::hooks::ClientInfo;
use crate::message::Message;
use crate::persist::{Journal, ShardRecovery};
use crate::protocol::{LastWill, Properties, ProtocolVersion};
use crate::session::Session;

use super::messages::CtrlMsg;
use super::sessions::{SessionEntry, SessionKey};
use super::timers::{secs_to_ticks, ticks, Timer, TICK_MS};
use super::{ConnId, Core, Now};

impl Core {
    /// The shard keeps a log: from now on persistent sessions note their changes.
    pub fn enable_journal(&mut self) {
        self.journal = Some(Box::default());
    }

    /// The records appended since the last call.
    pub fn take_journal(&mut self) -> Option<BytesMut> {
        self.journal.as_deref_mut().and_then(Journal::take)
    }

    /// Logs the will a durable offline session waits to publish (its delay
    /// running), or that it has none.
    pub(super) fn journal_will(&mut self, client_id: &str, protocol: ProtocolVersion) {
        let Some(journal) = self.journal.as_deref_mut() else { return };
        let Some(entry) = self.sessions.get(client_id).filter(|e| e.session.is_durable()) else {
            return;
        };
        journal.will(entry.serial, entry.pending_will.as_ref().map(|p| &p.0), protocol);
    }

    /// A recovered session's will: of a connection the crash ended (due its delay
    /// after the restart), or one that waited offline (due its delay after the
    /// session went offline); never sooner than a second after the start, so
    /// that every shard's routes are back (`WILL_AFTER_START_SECS`), and never
    /// after the session ends.
    fn restore_will(
        &mut self,
        key: SessionKey,
        message: Message,
        delay: u32,
        level: u8,
        offline_since_s: u64,
        crashed: bool,
    ) -> ProtocolVersion {
        let now_s = self.now.unix_us / 1_000_000;
        let protocol = ProtocolVersion::from_level(level).unwrap_or(ProtocolVersion::V311);
        let Some(entry) = self.sessions.by_key(key) else { return protocol };
        let info = ClientInfo {
            client_id: entry.session.client_id().clone(),
            username: entry.username.as_deref().map(ByteString::from),
            protocol,
            clean_session: false,
            keep_alive_secs: 0,
            shard: self.id,
            listener: 0,
        };
        let mut properties = message.properties.map_or_else(Properties::default, |p| *p);
        properties.will_delay_interval = (delay > 0).then_some(delay);
        let will = LastWill {
            topic: message.topic,
            payload: message.payload,
            qos: message.qos,
            retain: message.retain,
            properties: properties.into(),
        };
        let due_s =
            if crashed { now_s + u64::from(delay) } else { offline_since_s + u64::from(delay) };
        let mut left = due_s.saturating_sub(now_s).max(WILL_AFTER_START_SECS);
        if let Some(secs) = entry.expiry_secs {
            left =
                left.min((offline_since_s + secs).saturating_sub(now_s).max(WILL_AFTER_START_SECS));
        }
        let at = self.wheel.schedule(ticks(self.now) + secs_to_ticks(left), Timer::Will(key));
        let entry = self.sessions.by_key_mut(key).expect("found above");
        entry.pending_will = Some(Box::new((will, info, at)));
        protocol
    }

    /// This shard's log reached its share of `data_max_bytes` (`full`), or went
    /// back under it: every shard is told.
    pub fn set_log_full(&mut self, full: bool) {
        if self.logs_full.contains(&self.id) == full {
            return;
        }
        self.note_log_full(self.id, full);
        for shard in (0..self.shards).filter(|s| *s != self.id) {
            self.ctrl_out.push(shard, CtrlMsg::LogFull { from: self.id, full });
        }
    }

    /// This shard's log holds more than `log_buffer_bytes` waiting for the disk
    /// (`behind`), or caught up: while it is behind the shard reads no publisher
    /// and takes no ring batch.
    pub fn set_log_behind(&mut self, now: Now, behind: bool) {
        if behind != self.log_behind {
            self.log_behind = behind;
            self.refresh_gates(now);
        }
    }

    /// Whether this shard's log is at its share of `data_max_bytes`.
    pub fn log_is_full(&self) -> bool {
        self.logs_full.contains(&self.id)
    }

    pub(super) fn note_log_full(&mut self, shard: usize, full: bool) {
        self.logs_full.retain(|s| *s != shard);
        if full {
            self.logs_full.push(shard);
        }
    }

    /// Whether new durable state is refused: a log is at its share of
    /// `data_max_bytes`. Counted (and logged once a second) by the caller.
    pub(super) fn durable_refused(&mut self) -> bool {
        if self.logs_full.is_empty() {
            return false;
        }
        self.stats.refused_log_full += 1;
        self.log_limit("data_max_bytes");
        true
    }

    /// The journal's counters, if the shard keeps a log.
    pub fn journal_stats(&self) -> Option<crate::persist::journal::JournalStats> {
        self.journal.as_deref().map(|j| j.stats)
    }

    /// Adds an offline session from its image (recovered here, or handed over by
    /// another node): the session is durable and checkpointed when the shard keeps
    /// a log, its plain filters are routed. The caller checked that the client id
    /// has no session here.
    pub(super) fn insert_offline_session(
        &mut self,
        client_id: bytestring::ByteString,
        image: crate::session::SessionImage,
        expiry_secs: Option<u64>,
        offline_since_s: u64,
        username: Option<String>,
    ) -> SessionKey {
        self.session_serial += 1;
        let serial = self.session_serial;
        if let Some(journal) = self.journal.as_deref_mut() {
            let user = username.as_deref();
            journal.checkpoint(serial, &client_id, expiry_secs, offline_since_s, user, &image);
        }
        let subscriptions = image.subscriptions.clone();
        let (mut session, dropped) = Session::import(client_id, self.config.session, image);
        session.set_durable(self.journal.is_some());
        self.stats.dropped_mqueue += dropped as u64;
        self.stats.queued_bytes += session.queued_bytes() as u64;
        let key = self.sessions.insert(Box::new(SessionEntry {
            session,
            serial,
            conn: None,
            will: None,
            pending_will: None,
            expiry_secs,
            expires_at: None,
            username: username.map(Box::from),
        }));
        for (filter, options) in subscriptions {
            if !filter.is_shared() {
                self.add_local_sub(&filter, key, options);
            }
        }
        key
    }

    /// Takes the state the data directory held for this shard, before any client
    /// connects: sessions come back offline, their subscriptions routed and
    /// their expiry counting from when they went offline; retained messages are
    /// stored. Everything is appended again as the first records of the new
    /// log.
    pub fn restore(&mut self, now: Now, recovery: ShardRecovery) {
        self.now = now;
        let now_s = now.unix_us / 1_000_000;
        for recovered in recovery.sessions {
            let client_id = bytestring::ByteString::from(recovered.client_id);
            if self.sessions.get(&client_id).is_some() {
                continue;
            }
            let offline_since_s =
                if recovered.offline_since_s == 0 { now_s } else { recovered.offline_since_s };
            let key = self.insert_offline_session(
                client_id.clone(),
                recovered.image,
                recovered.expiry_secs,
                offline_since_s,
                recovered.username,
            );
            if let Some(secs) = recovered.expiry_secs {
                let left = (offline_since_s + secs).saturating_sub(now_s);
                let at = ticks(now) + secs_to_ticks(left);
                let entry = self.sessions.by_key_mut(key).expect("inserted above");
                entry.expires_at = Some(self.wheel.schedule(at, Timer::SessionExpiry(key)));
            }
            if let Some((message, delay, level)) = recovered.will {
                let crashed = recovered.offline_since_s == 0;
                let protocol =
                    self.restore_will(key, message, delay, level, offline_since_s, crashed);
                self.journal_will(&client_id, protocol);
            }
            if self.cluster_enabled() {
                let serial = self.sessions.by_key(key).expect("inserted above").serial;
                self.unreconciled.insert(key, serial);
            }
            self.stats.sessions_restored += 1;
        }
        for message in recovery.retained {
            self.store_retained(message);
        }
    }

    /// Whether the session in `key` was recovered and is not reconciled yet.
    pub(super) fn is_unreconciled(&self, key: SessionKey) -> bool {
        let serial = self.unreconciled.get(&key);
        serial.is_some_and(|s| self.sessions.by_key(key).is_some_and(|e| e.serial == *s))
    }

    /// The session in `key` is reconciled: its client came back, or it ends (every
    /// way a session leaves the shard passes here, so no stale key stays).
    pub(super) fn settle_recovered(&mut self, key: SessionKey) {
        if !self.unreconciled.is_empty() {
            self.unreconciled.remove(&key);
        }
    }

    /// The client ids of the sessions recovered and not reconciled yet, for the
    /// IO layer to ask the other nodes about.
    pub fn recovered_sessions(&self) -> Vec<ByteString> {
        self.unreconciled
            .keys()
            .filter(|key| self.is_unreconciled(**key))
            .filter_map(|key| self.sessions.by_key(*key))
            .map(|entry| entry.session.client_id().clone())
            .collect()
    }

    /// What the other nodes said of a recovered session: kept as it is; dropped
    /// (not its will either) because its client moved; or kept without its will,
    /// which another node published. A session reconciled meanwhile is left as it
    /// is.
    pub fn reconcile(&mut self, now: Now, client_id: &ByteString, outcome: Reconciled) {
        self.now = now;
        let Some(key) = self.sessions.key(client_id) else { return };
        if !self.is_unreconciled(key) {
            return;
        }
        self.settle_recovered(key);
        match outcome {
            Reconciled::Keep => {}
            Reconciled::Moved => self.drop_recovered(key, client_id),
            Reconciled::WillPublished => {
                if let Some((_, info)) = self.cancel_pending_will(key) {
                    self.stats.recovered_wills_dropped += 1;
                    self.journal_will(client_id, info.protocol);
                }
            }
        }
    }

    /// Drops a recovered session that is stale: its client has a newer session on
    /// another node. Its will goes with it, unpublished: the will belonged to the
    /// connection the crash ended, and the client has connected since.
    pub(super) fn drop_recovered(&mut self, key: SessionKey, client_id: &ByteString) {
        self.settle_recovered(key);
        self.cancel_pending_will(key);
        self.remove_session(client_id);
        self.stats.recovered_sessions_dropped += 1;
    }
}

/// What the other nodes of the cluster said of a session recovered from the data
/// directory (see [`Core::reconcile`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reconciled {
    /// None holds a session for its client id, or knows of its will: kept.
    Keep,
    /// One holds a session for its client id: the client moved there while this
    /// node was down.
    Moved,
    /// None holds its session, but one published its will when this node died.
    WillPublished,
}

/// Output that waits for the log (`--sync always`): a pass's acknowledgements go
/// out only once its records are on disk, here and on every shard it sent
/// messages to.
///
/// A connection's output is sealed at the end of every pass that wrote to it
/// while something waits: the seal is the length of its buffer then. A pass is
/// released once this shard's log is durable up to the records the pass
/// appended, and every shard it sent data batches to acknowledged them as durable
/// there (`CtrlMsg::LogAck`): each shard counts the data batches it sent to and
/// took from every other one, and the rings keep them in order.
#[derive(Debug)]
pub(super) struct Hold {
    /// Per held pass, oldest first: the log position it waits for, the data
    /// batches it waits to be acknowledged (per shard, counted from the start),
    /// and the connections it sealed.
    passes: VecDeque<(u64, Vec<u64>, Vec<ConnId>)>,
    /// The connections sealed in the pass under way.
    sealing: Vec<ConnId>,
    /// Per connection, the lengths of its buffer its held passes sealed, oldest
    /// first.
    seals: HashMap<ConnId, VecDeque<usize>>,
    /// The log position known to be on disk.
    durable: u64,
    /// Per shard, data batches sent to it, and those it acknowledged as durable.
    sent: Vec<u64>,
    acked: Vec<u64>,
    /// Per shard, data batches taken from it.
    received: Vec<u64>,
    /// Whether a batch was taken since the last end of pass.
    received_new: bool,
    /// Acknowledgements due once the log is durable up to a position: per shard,
    /// the batches taken from it by then.
    acks_due: VecDeque<(u64, Vec<u64>)>,
    /// Per shard, the batches last acknowledged to it.
    acks_sent: Vec<u64>,
}

impl Hold {
    fn new(shards: usize) -> Self {
        Hold {
            passes: VecDeque::new(),
            sealing: Vec::new(),
            seals: HashMap::new(),
            durable: 0,
            sent: vec![0; shards],
            acked: vec![0; shards],
            received: vec![0; shards],
            received_new: false,
            acks_due: VecDeque::new(),
            acks_sent: vec![0; shards],
        }
    }

    /// Whether data batches sent wait for their acknowledgement.
    fn remote_pending(&self) -> bool {
        self.sent.iter().zip(&self.acked).any(|(sent, acked)| sent > acked)
    }
}

impl Core {
    /// Makes acknowledgements wait for the logs (`--sync always`).
    pub fn hold_output_for_log(&mut self) {
        self.hold = Some(Box::new(Hold::new(self.shards)));
    }

    /// The log position the records so far end at.
    pub fn log_appended(&self) -> u64 {
        self.journal.as_deref().map_or(0, Journal::appended)
    }

    /// Whether output of connection `id` is sealed instead of released: records
    /// here or batches sent elsewhere wait for their sync.
    pub(super) fn seal(&mut self, id: ConnId, len: usize) -> bool {
        let appended = self.log_appended();
        let Some(hold) = self.hold.as_deref_mut() else { return false };
        let waiting = appended > hold.durable || hold.remote_pending();
        if !waiting && !hold.seals.contains_key(&id) {
            return false;
        }
        hold.seals.entry(id).or_default().push_back(len);
        hold.sealing.push(id);
        true
    }

    /// The end of the pass's wake-ups: what it sealed waits for the log's
    /// position now and for the batches sent so far.
    pub(super) fn seal_pass(&mut self) {
        let appended = self.log_appended();
        let Some(hold) = self.hold.as_deref_mut() else { return };
        if !hold.sealing.is_empty() {
            let sealed = std::mem::take(&mut hold.sealing);
            hold.passes.push_back((appended, hold.sent.clone(), sealed));
        }
    }

    /// A data batch left for shard `dest`.
    pub(super) fn count_sent(&mut self, dest: usize) {
        if let Some(hold) = self.hold.as_deref_mut() {
            hold.sent[dest] += 1;
        }
    }

    /// A data batch from shard `from` was taken: once what it made this shard
    /// write is durable, `from` is told.
    pub fn data_batch_taken(&mut self, from: usize) {
        if let Some(hold) = self.hold.as_deref_mut() {
            hold.received[from] += 1;
            hold.received_new = true;
        }
    }

    /// The end of a pass (before its ring batches leave): the batches it took
    /// are acknowledged once its records are durable; those already are, now.
    pub(super) fn note_taken_batches(&mut self) {
        let appended = self.log_appended();
        let Some(hold) = self.hold.as_deref_mut() else { return };
        if hold.received_new {
            hold.received_new = false;
            hold.acks_due.push_back((appended, hold.received.clone()));
        }
        self.send_log_acks();
    }

    /// Sends the acknowledgements whose records are on disk.
    fn send_log_acks(&mut self) {
        let Some(hold) = self.hold.as_deref_mut() else { return };
        let mut latest = None;
        while hold.acks_due.front().is_some_and(|(at, _)| *at <= hold.durable) {
            latest = hold.acks_due.pop_front().map(|(_, counts)| counts);
        }
        let Some(counts) = latest else { return };
        for (shard, batches) in counts.into_iter().enumerate() {
            if batches > hold.acks_sent[shard] {
                hold.acks_sent[shard] = batches;
                self.ctrl_out.push(shard, CtrlMsg::LogAck { from: self.id, batches });
            }
        }
    }

    /// Shard `from` has the first `batches` data batches of this shard on disk.
    pub(super) fn log_acked(&mut self, from: usize, batches: u64) {
        if let Some(hold) = self.hold.as_deref_mut() {
            hold.acked[from] = hold.acked[from].max(batches);
        }
        self.release_held();
    }

    /// `taken` bytes left the front of `id`'s buffer: its seals move with it.
    pub(super) fn unseal_taken(&mut self, id: ConnId, taken: usize) {
        let Some(hold) = self.hold.as_deref_mut() else { return };
        if let Some(seals) = hold.seals.get_mut(&id) {
            for seal in seals.iter_mut() {
                *seal = seal.saturating_sub(taken);
            }
        }
    }

    /// Whether connection `id` has output waiting for the log.
    pub(super) fn has_seals(&self, id: ConnId) -> bool {
        self.hold.as_deref().is_some_and(|hold| hold.seals.contains_key(&id))
    }

    /// Connection `id` ended: nothing of it waits any more.
    pub(super) fn forget_seals(&mut self, id: ConnId) {
        if let Some(hold) = self.hold.as_deref_mut() {
            hold.seals.remove(&id);
        }
    }

    /// The log cannot be written: nothing more is appended. The output that
    /// waited for the lost records is never released (its connections stay
    /// sealed until they end: nothing unstored is acknowledged); the rest flows
    /// again.
    pub fn log_failed(&mut self) {
        let appended = self.log_appended();
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.discard();
        }
        if let Some(hold) = self.hold.as_deref_mut() {
            let durable = hold.durable;
            hold.passes.retain(|(at, _, _)| *at <= durable);
            hold.durable = appended;
        }
        self.send_log_acks();
    }

    /// The log is on disk up to `position`: the acknowledgements it allows go to
    /// the other shards, and the connections whose output it releases are woken
    /// (the IO layer runs a pass).
    pub fn log_durable(&mut self, position: u64) {
        if let Some(hold) = self.hold.as_deref_mut() {
            hold.durable = hold.durable.max(position);
        }
        self.send_log_acks();
        self.release_held();
    }

    /// Releases every held pass whose records are durable here and whose batches
    /// are durable where they went.
    fn release_held(&mut self) {
        let Some(hold) = self.hold.as_deref_mut() else { return };
        let mut released = Vec::new();
        while let Some((at, needs, _)) = hold.passes.front() {
            let remote = needs.iter().zip(&hold.acked).all(|(need, acked)| need <= acked);
            if *at > hold.durable || !remote {
                break;
            }
            let (_, _, ids) = hold.passes.pop_front().expect("front() was Some");
            for id in ids {
                let Some(seals) = hold.seals.get_mut(&id) else { continue };
                let Some(len) = seals.pop_front() else { continue };
                if seals.is_empty() {
                    hold.seals.remove(&id);
                }
                released.push((id, len));
            }
        }
        for (id, len) in released {
            if let Some(conn) = self.conns.get_mut(id.slot()).filter(|c| c.serial == id.serial) {
                conn.ready = conn.ready.max(len.min(conn.out.len()));
                self.mark_dirty(id);
            }
        }
    }
}

/// A checkpoint under way: every durable session and retained message is
/// written again, a slice per pass, so that the log's older segments can go.
#[derive(Debug, Default)]
pub(super) struct Walk {
    sessions: Vec<SessionKey>,
    retained: Vec<Arc<Message>>,
}

/// The least time after a start before a recovered will is published: every
/// shard restored its sessions and announced their routes by then.
const WILL_AFTER_START_SECS: u64 = 1;

/// Sessions (or retained messages) one pass writes at most while checkpointing:
/// a pass stays short whatever the number of sessions.
const WALK_SLICE: usize = 64;

impl Core {
    /// Starts a checkpoint: from here on the log can do without everything
    /// before it once [`Core::checkpoint_step`] reports it done.
    pub fn begin_checkpoint(&mut self) {
        let Some(journal) = self.journal.as_deref_mut() else { return };
        journal.forget_messages();
        let sessions = self
            .sessions
            .iter()
            .filter(|(_, e)| e.session.is_durable())
            .map(|(key, _)| key)
            .collect();
        let retained = self.retained.messages().cloned().collect();
        self.walk = Some(Box::new(Walk { sessions, retained }));
    }

    /// Writes the next slice of the checkpoint; `true` once it is complete (and
    /// when none is under way).
    pub fn checkpoint_step(&mut self) -> bool {
        let Some(walk) = self.walk.as_deref_mut() else { return true };
        let Some(journal) = self.journal.as_deref_mut() else { return true };
        for _ in 0..WALK_SLICE {
            let Some(key) = walk.sessions.pop() else { break };
            let Some(entry) = self.sessions.by_key(key).filter(|e| e.session.is_durable()) else {
                continue;
            };
            // Offline since when: what its expiry timer has left tells.
            let now_s = self.now.unix_us / 1_000_000;
            let offline_since_s = match (entry.conn, entry.expiry_secs, entry.expires_at) {
                (Some(_), _, _) => 0,
                (None, Some(secs), Some(at)) => {
                    let left_s = at.saturating_sub(ticks(self.now)) * TICK_MS / 1000;
                    (now_s + left_s).saturating_sub(secs)
                }
                (None, _, _) => now_s,
            };
            journal.checkpoint(
                entry.serial,
                entry.session.client_id(),
                entry.expiry_secs,
                offline_since_s,
                entry.username.as_deref(),
                &entry.session.image(),
            );
            let conn = entry.conn.and_then(|id| self.conns.get(id.slot()));
            match (conn, entry.pending_will.as_deref()) {
                (Some(conn), _) => {
                    journal.will(entry.serial, entry.will.as_deref(), conn.info.protocol);
                }
                (None, Some((will, info, _))) => {
                    journal.will(entry.serial, Some(will), info.protocol);
                }
                (None, None) => {}
            }
        }
        for _ in 0..WALK_SLICE {
            let Some(message) = walk.retained.pop() else { break };
            journal.retain(message.topic.as_str(), Some(&message));
        }
        let done = walk.sessions.is_empty() && walk.retained.is_empty();
        if done {
            self.walk = None;
        }
        done
    }
}
