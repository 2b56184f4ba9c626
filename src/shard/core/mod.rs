//! The shard core: everything MQTT a shard does, as plain data driven by
//! `handle_*(now, input)` calls, in the spirit of quinn-proto's `Connection`.
//!
//! The core never reads a clock, never touches the executor or a socket, and holds
//! no shared pointer to a connection. The IO layer (`shard::io`, `shard::conn`)
//! owns sockets and buffers and drives the core:
//! - inputs: [`Core::handle_connect`], [`Core::handle_input`] (bytes read from a
//!   client), [`Core::handle_written`], [`Core::handle_closed`],
//!   [`Core::handle_data`] / [`Core::handle_ctrl`] (batches from other shards),
//!   [`Core::handle_tick`], [`Core::handle_api_publish`], [`Core::publish_sys`];
//! - outputs: [`Core::poll_wake`] (connections with new output or a close
//!   decision), [`Core::take_output`] (encoded bytes for one connection),
//!   [`Core::close_reason`], [`Core::poll_batch`] (ring batches for other shards),
//!   and the gates ([`Core::readers_paused`], [`Core::rings_paused`]).
//!
//! A pass is one executor turn: the IO layer feeds every ready input, then calls
//! [`Core::end_pass`] once, sends every batch and wakes every connection with
//! output once.
//!
//! Split by concern: `clients` (CONNECT, takeover, authentication, disconnect),
//! `publish` (inbound PUBLISH rules, ingress, routing), `fanout` (local delivery,
//! backlog), `subscriptions` (SUBSCRIBE/UNSUBSCRIBE, route replication, held
//! SUBACKs), `retained`, `shared`, `wills`, `timers`, `outbox` (ring batches).
//!
//! Owner: one shard. The core is `!Send` in spirit only: it holds no `Rc`, so a
//! simulation can drive several in one thread.
//!
//! # Invariants (checked by [`Core::check_invariants`])
//! - A session lives in exactly one shard's `sessions`: `owner_shard(client_id)`
//!   (or this shard, for an assigned id).
//! - A connection belongs to at most one session, and a session's `conn` names a
//!   live connection whose client id is the session's and whose `session` key
//!   names it back.
//! - Subscriptions are held in three places that agree: a session's own
//!   subscriptions; `local_subs` (non-shared filters -> sessions); `shared_local`
//!   (shared filters -> online members). This shard's bit in its own route replica
//!   is set for a filter iff `local_subs` has it.
//! - A connection's `subacks_pending` equals the number of held SUBACKs of it.
//! - A connection is in `to_wake` iff its `dirty` flag is set.

mod clients;
mod durable;
mod fanout;
mod inbox;
mod invariants;
pub(crate) mod messages;
mod nodes;
mod outbox;
mod publish;
pub(crate) mod rate;
mod retained;
mod security;
mod sessions;
mod shared;
#[cfg(test)]
mod sim;
mod subscriptions;
pub(crate) mod timers;
mod wheel;
mod wills;

pub use durable::Reconciled;

use std::sync::Arc;

use bytes::BytesMut;
use bytestring::ByteString;
use hashbrown::HashMap;
use slab::Slab;

use crate::hooks::{ClientInfo, Hooks};
use crate::message::MessageIdGen;
use crate::metrics::{ShardSnapshot, ShardStats};
use crate::protocol::{codec, DecodeError, Limits, ProtocolVersion, ProtocolViolation, ReasonCode};
use crate::protocol::{Disconnect, Packet, TopicName};
use crate::router::{LocalGroup, RouteTable, SharedRoutes, SharedStrategy, SubTrie};
use crate::session::{SessionLimits, SubOptions};
use crate::small_map::SmallMap;

pub(crate) use clients::AuthOutcome;
pub(crate) use messages::{ApiPublish, CtrlMsg, DataMsg, NodeMsg, NodeOut, RouteChange};
use nodes::Nodes;
use outbox::Batches;
use rate::TokenBucket;
use retained::Retained;
use security::Security;
pub(crate) use security::{Login, LoginContext};
use sessions::{SessionEntry, SessionKey, Sessions};
use timers::{Timer, Wheel};

/// How many written output buffers a shard keeps for reuse, and the largest it
/// keeps: a few hundred KiB per shard, whatever the number of connections.
const SPARE_OUT_MAX: usize = 32;
const SPARE_OUT_BYTES_MAX: usize = 64 * 1024;

/// `conn`'s output buffer, taken from the shard's spare buffers when it has none.
fn out_buffer<'a>(conn: &'a mut Conn, spare: &mut Vec<BytesMut>) -> &'a mut BytesMut {
    if conn.out.capacity() == 0 {
        if let Some(buffer) = spare.pop() {
            conn.out = buffer;
        }
    }
    &mut conn.out
}

/// The time, as the IO layer read it: the core never reads a clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Now {
    /// Milliseconds of a monotonic clock since the shard started: keep-alive,
    /// retries, expiry, rate limits.
    pub ms: u64,
    /// Unix microseconds: message ids and MQTT 5 message expiry.
    pub unix_us: u64,
}

/// A connection as the core knows it: its slot and a serial that tells it from a
/// later connection in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConnId {
    slot: u32,
    serial: u32,
}

impl ConnId {
    /// The slot, dense from 0: lets the IO layer keep per-connection data in a
    /// vector.
    pub fn slot(self) -> usize {
        self.slot as usize
    }
}

/// Why the broker ends a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Close {
    /// The client sent DISCONNECT: no will.
    Normal,
    /// An MQTT 5 client sent DISCONNECT 0x04: publish the will [MQTT-3.14.2.1].
    NormalWithWill,
    /// Enhanced re-authentication failed with this reason code.
    AuthFailed(ReasonCode),
    /// A new connection took the client id over [MQTT-3.1.4-2].
    TakenOver,
    /// Nothing received for 1.5 times the keep-alive [MQTT-3.1.2-24].
    KeepAliveTimeout,
    /// The peer broke the protocol; the message names the clause.
    Violation(ProtocolViolation),
    /// The peer sent bytes that do not decode (or a packet over the size limit).
    Malformed(DecodeError),
    /// The peer went over a configured limit that has no gentler answer.
    Limit(&'static str),
    /// The socket failed or the peer closed it.
    Io,
    /// The broker is shutting down.
    Shutdown,
    /// This node lost its quorum of cluster nodes (`cluster_quorum`): the other
    /// side of a partition may take the client over.
    Fenced,
}

impl Close {
    /// A short text for logs and the `client.disconnected` hook.
    pub fn describe(&self) -> &'static str {
        match self {
            Close::Normal => "disconnect",
            Close::NormalWithWill => "disconnect with will",
            Close::AuthFailed(_) => "authentication failed",
            Close::TakenOver => "taken over",
            Close::KeepAliveTimeout => "keep-alive timeout",
            Close::Violation(_) => "protocol violation",
            Close::Malformed(_) => "malformed packet",
            Close::Limit(_) => "limit exceeded",
            Close::Io => "connection lost",
            Close::Shutdown => "shutdown",
            Close::Fenced => "cluster quorum lost",
        }
    }

    /// Whether the will message is published [MQTT-3.1.2-8]: on every close the
    /// client did not ask for with DISCONNECT. Takeover and shutdown keep the will
    /// unpublished, as the client is (or may soon be) back; so does losing the
    /// quorum, as the nodes that have it publish the wills of this node's clients.
    fn publishes_will(&self) -> bool {
        matches!(
            self,
            Close::NormalWithWill
                | Close::AuthFailed(_)
                | Close::KeepAliveTimeout
                | Close::Violation(_)
                | Close::Malformed(_)
                | Close::Limit(_)
                | Close::Io
        )
    }

    /// The reason code of the DISCONNECT the broker sends an MQTT 5 client before
    /// closing [MQTT-4.13.2]; `None` when the client closed (or the socket failed).
    pub fn reason_code(&self) -> Option<ReasonCode> {
        match self {
            Close::Normal | Close::NormalWithWill | Close::Io => None,
            Close::AuthFailed(code) => Some(*code),
            Close::TakenOver => Some(ReasonCode::SESSION_TAKEN_OVER),
            Close::KeepAliveTimeout => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            Close::Violation(v) => Some(v.code),
            Close::Malformed(e) => Some(e.reason_code()),
            Close::Limit(_) => Some(ReasonCode::QUOTA_EXCEEDED),
            Close::Shutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
            Close::Fenced => Some(ReasonCode::USE_ANOTHER_SERVER),
        }
    }
}

/// The settings the core runs by, resolved once from the broker's configuration
/// (per-shard shares already divided).
#[derive(Clone, Debug)]
pub(crate) struct CoreConfig {
    pub node_id: u16,
    pub ring_batch_max: usize,
    /// Overflowed ring batches beyond which the shard stops reading publishers.
    pub ring_overflow_max: usize,
    pub out_buffer_max_bytes: usize,
    pub packet_size_max: usize,
    /// The cap on session expiry; `None`: uncapped.
    pub session_expiry_max_secs: Option<u64>,
    pub receive_maximum: u16,
    pub topic_alias_max: u16,
    /// The cap on keep-alive for MQTT 5 clients; `None`: uncapped.
    pub keep_alive_max_secs: Option<u16>,
    pub shared_strategy: SharedStrategy,
    /// Timed resend of unacknowledged messages; `None`: only on reconnect.
    pub retry_interval_secs: Option<u64>,
    pub topic_length_max: usize,
    pub topic_levels_max: usize,
    pub subscriptions_max: usize,
    pub publish_rate_max: Option<u64>,
    pub publish_bytes_rate_max: Option<u64>,
    /// This shard's shares of the node-wide limits.
    pub connections_max: u64,
    pub retained_max: usize,
    pub retained_bytes_max: u64,
    pub queued_bytes_max: u64,
    pub session: SessionLimits,
    /// Failed logins per minute from one address before its CONNECTs are refused;
    /// 0: no limit.
    pub login_failures_max: u32,
    /// Per listener (in listener order), its mount point.
    pub mount_points: Vec<Option<ByteString>>,
    /// Whether this node is in a cluster (forwards to other nodes).
    pub cluster: bool,
    /// Whether the node serves clients only while it sees a quorum of nodes up
    /// (`cluster_quorum` over 1): it starts fenced, until shard 0 says otherwise.
    pub quorum: bool,
}

/// The MQTT state of one connection. The socket and its read state stay with the
/// IO layer; output is encoded into `out` and taken by the IO layer.
///
/// Every idle connection pays for each field here: what few connections use (MQTT
/// 5 topic aliases, re-authentication, rate limits, a close decision) is boxed,
/// and what the session or `info` already knows is not stored again.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Tells this connection from a later one in the same slot.
    serial: u32,
    /// SUBACKs of this connection held for route acknowledgements. While any is
    /// pending the connection processes no further packet, so the client's own
    /// packets keep their order relative to the SUBACK.
    subacks_pending: u32,
    /// What hooks are told about the client; also the connection's client id,
    /// protocol level (the layout of every packet after CONNECT) and keep-alive.
    pub info: ClientInfo,
    /// The session the connection is attached to: its messages come from it (No
    /// Local). The connection owns it while the session's `conn` names it.
    session: SessionKey,
    /// Topic aliases the client set (MQTT 5), at most `topic_alias_max`; they live
    /// as long as the connection [MQTT-3.3.2-7]. Allocated by the first alias.
    aliases_in: Option<Box<HashMap<u16, TopicName>>>,
    /// The Authentication Method of CONNECT, for re-authentication (MQTT 5).
    auth: Option<Box<ReAuth>>,
    /// Publish rate limits, when configured.
    rates: Option<Box<Rates>>,
    /// Packets encoded for the client, not yet taken by the IO layer. Empty and
    /// without an allocation while there is nothing to send.
    out: BytesMut,
    /// How many bytes at the front of `out` a pass released: the IO layer writes
    /// only those, so nothing reaches the client before the ring batches of the
    /// pass that produced it left (a client that saw its PUBACK can rely on the
    /// message having left this shard).
    ready: usize,
    /// Set when the broker ends the connection; the IO layer closes the socket.
    close: Option<Box<Close>>,
    /// Milliseconds (of [`Now::ms`]) of the last packet received.
    last_seen_ms: u64,
    /// When a write to the client last completed: tells a busy subscriber from a
    /// stuck one.
    last_progress_ms: u64,
    /// Whether CONNECT's Session Expiry Interval was 0: a DISCONNECT may then not
    /// set another [MQTT-3.14.2-2].
    expiry_was_zero: bool,
    /// Whether the connection is in `to_wake`.
    dirty: bool,
    /// Whether the connection is in `backlogged`.
    in_backlog: bool,
    /// Whether the client has published: only publishers pause for backpressure,
    /// so a subscriber's acknowledgements are always read.
    publisher: bool,
}

impl Conn {
    /// The time before which the connection is not read (over a rate limit).
    fn paused_until_ms(&self) -> Option<u64> {
        self.rates.as_ref().and_then(|r| r.paused_until_ms)
    }
}

/// A connection's MQTT 5 re-authentication state [MQTT-4.12.1].
#[derive(Debug)]
struct ReAuth {
    /// The Authentication Method of CONNECT: re-authentication must use it.
    method: ByteString,
    /// Rounds of the current re-authentication exchange.
    round: u32,
}

/// A connection's publish rate limits.
#[derive(Debug)]
struct Rates {
    messages: Option<TokenBucket>,
    payload_bytes: Option<TokenBucket>,
    /// Set when a limit is exceeded: no reading before then (ms).
    paused_until_ms: Option<u64>,
}

/// Why [`Core::handle_input`] stopped before the end of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// Everything whole was processed; what is left is part of a packet.
    No,
    /// SUBACKs wait for other shards: read nothing until woken.
    SubAck,
    /// Over a publish rate limit until this time (ms): read nothing until then.
    RateLimited(u64),
    /// Backpressure: the shard stopped reading publishers until the gate opens.
    Backpressure,
    /// The connection is closing.
    Closing,
}

/// One shard's sessions, subscriptions, routes and retained partition.
pub(crate) struct Core {
    pub id: usize,
    pub shards: usize,
    config: CoreConfig,
    hooks: Arc<Hooks>,
    conns: Slab<Conn>,
    next_conn_serial: u32,
    sessions: Sessions,
    /// Filter -> this shard's subscribed sessions and their options (most filters
    /// have one subscriber: inline, or a vector until they have many).
    local_subs: SubTrie<SmallMap<SessionKey, SubOptions>>,
    /// The serial number of the last session created.
    session_serial: u64,
    routes: RouteTable,
    /// Shared subscription groups with members anywhere, and where.
    shared_routes: SharedRoutes,
    /// `$share/{group}/{filter}` -> this shard's connected members.
    shared_local: HashMap<crate::protocol::TopicFilter, LocalGroup>,
    /// Scratch for shared picks, reused across publishes.
    shared_scratch: Vec<(usize, crate::protocol::TopicFilter)>,
    rng: fastrand::Rng,
    /// The last route revision this shard issued.
    route_rev: u64,
    /// Per shard, the highest of our revisions it has acknowledged.
    route_acked: Vec<u64>,
    pending_subacks: Vec<subscriptions::PendingSubAck>,
    /// The id of the last retained query this shard sent.
    retained_query: u64,
    retained: Retained,
    /// The time of the last input.
    now: Now,
    data_out: Batches<DataMsg>,
    ctrl_out: Batches<CtrlMsg>,
    /// Connections with new output or a close decision since the last pass.
    to_wake: Vec<ConnId>,
    /// Output buffers written and cleared, for the next connection with output.
    spare_out: Vec<BytesMut>,
    ids: MessageIdGen,
    wheel: Wheel<Timer>,
    next_assigned_id: u64,
    /// Scratch for matching: (session, options), reused across publishes.
    scratch: Vec<(SessionKey, SubOptions)>,
    /// Closed while a local subscriber that is still reading is backlogged, or
    /// too many ring batches overflowed: the shard stops reading publishers.
    readers_paused: bool,
    /// Closed while a local subscriber that is still reading is backlogged: the
    /// shard stops taking messages from the data rings, so the shards feeding it
    /// back up and pause their publishers in turn.
    rings_paused: bool,
    /// Whether a local subscriber's backlog (alone) pauses the rings: what the
    /// node links this shard reads wait for, while a full outgoing node link does
    /// not stop them (two nodes sending to each other would wait for each other).
    backlog_paused: bool,
    /// Ring batches the IO layer could not send yet, as last reported.
    ring_overflow: usize,
    /// Online connections whose session queued messages (or whose buffer is over
    /// its bound) since they last caught up.
    backlogged: Vec<ConnId>,
    pub stats: ShardStats,
    /// Milliseconds of the last "limit reached" log line, to log at most once a
    /// second.
    last_limit_log_ms: Option<u64>,
    stopping: bool,
    /// Credentials, ACL and failed logins (see `security`).
    security: Security,
    /// The other nodes of the cluster (see `nodes`).
    nodes: Nodes,
    /// Records for the shard's log, when it keeps one (see `durable`).
    journal: Option<Box<crate::persist::Journal>>,
    /// Output waiting for the log (`--sync always`, see `durable`).
    hold: Option<Box<durable::Hold>>,
    /// A checkpoint of the log under way (see `durable`).
    walk: Option<Box<durable::Walk>>,
    /// Sessions recovered from the data directory that the other nodes of the
    /// cluster have not confirmed yet, by key and serial (see `durable`).
    unreconciled: hashbrown::HashMap<SessionKey, u64>,
    /// The shards whose log is at its share of `data_max_bytes`.
    logs_full: Vec<usize>,
    /// This shard's log holds more than `log_buffer_bytes` waiting for the disk.
    log_behind: bool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("id", &self.id)
            .field("conns", &self.conns.len())
            .field("sessions", &self.sessions.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Core {
    pub fn new(id: usize, shards: usize, config: CoreConfig, hooks: Arc<Hooks>, now: Now) -> Self {
        let batch = config.ring_batch_max;
        Core {
            id,
            shards,
            hooks,
            conns: Slab::new(),
            next_conn_serial: 0,
            sessions: Sessions::default(),
            local_subs: SubTrie::new(),
            session_serial: 0,
            routes: RouteTable::new(shards),
            // The other nodes are origins after the shards (see `nodes`).
            shared_routes: SharedRoutes::new(
                shards + if config.cluster { crate::router::SHARDS_MAX } else { 0 },
            ),
            shared_local: HashMap::new(),
            shared_scratch: Vec::new(),
            rng: fastrand::Rng::with_seed(0x5EED ^ id as u64),
            route_rev: 0,
            route_acked: vec![0; shards],
            pending_subacks: Vec::new(),
            retained_query: 0,
            retained: Retained::new(config.retained_max, config.retained_bytes_max),
            now,
            data_out: Batches::new(shards, batch),
            ctrl_out: Batches::new(shards, batch),
            to_wake: Vec::new(),
            spare_out: Vec::new(),
            ids: MessageIdGen::new(config.node_id, id as u32),
            wheel: Wheel::new(timers::ticks(now)),
            next_assigned_id: 0,
            scratch: Vec::new(),
            readers_paused: false,
            rings_paused: false,
            backlog_paused: false,
            ring_overflow: 0,
            backlogged: Vec::new(),
            stats: ShardStats::default(),
            last_limit_log_ms: None,
            stopping: false,
            security: Security::default(),
            nodes: Nodes::new(config.cluster, config.quorum),
            journal: None,
            hold: None,
            walk: None,
            unreconciled: hashbrown::HashMap::new(),
            logs_full: Vec::new(),
            log_behind: false,
            config,
        }
    }

    /// The decoder limits of a connection speaking `protocol`.
    pub fn limits(&self, protocol: ProtocolVersion) -> Limits {
        Limits { packet_size_max: self.config.packet_size_max, protocol }
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(id.slot as usize).filter(|_| self.is_live(id))
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        if !self.is_live(id) {
            return None;
        }
        self.conns.get_mut(id.slot as usize)
    }

    fn is_live(&self, id: ConnId) -> bool {
        self.conns.get(id.slot as usize).is_some_and(|c| c.serial == id.serial)
    }

    /// Remembers to wake `id` at the end of the pass (once, however many packets
    /// were encoded for it).
    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(id.slot as usize) {
            if !conn.dirty {
                conn.dirty = true;
                self.to_wake.push(id);
            }
        }
    }

    /// Encodes `packet` for connection `id` and marks it for a write.
    fn send(&mut self, id: ConnId, packet: &Packet) {
        let Some(conn) = self.conns.get_mut(id.slot()).filter(|c| c.serial == id.serial) else {
            return;
        };
        codec::encode(packet, conn.info.protocol, out_buffer(conn, &mut self.spare_out));
        self.mark_dirty(id);
    }

    /// Ends connection `id` for `reason` (the first reason wins); the IO layer
    /// closes the socket when it sees it.
    pub fn close(&mut self, id: ConnId, reason: Close) {
        let Some(conn) = self.conn_mut(id) else { return };
        conn.close.get_or_insert_with(|| Box::new(reason));
        self.mark_dirty(id);
    }

    // ---- outputs -----------------------------------------------------------------

    /// The next connection with new output or a close decision; what was encoded
    /// for it so far is released for writing. Call after the pass's batches were
    /// sent.
    pub fn poll_wake(&mut self) -> Option<ConnId> {
        while let Some(id) = self.to_wake.pop() {
            // A connection that ended since it was marked is skipped.
            let Some(conn) = self.conn_mut(id) else { continue };
            conn.dirty = false;
            let len = conn.out.len();
            if !self.seal(id, len) {
                self.conns[id.slot()].ready = len;
            }
            return Some(id);
        }
        self.seal_pass();
        None
    }

    /// The bytes encoded for `id` that a pass released (see [`Core::poll_wake`]),
    /// if any. The IO layer writes them, then reports it with
    /// [`Core::handle_written`].
    pub fn take_output(&mut self, id: ConnId) -> Option<BytesMut> {
        let conn = self.conn_mut(id)?;
        let ready = std::mem::take(&mut conn.ready);
        if ready == 0 {
            return None;
        }
        let out = if ready == conn.out.len() {
            std::mem::take(&mut conn.out)
        } else {
            conn.out.split_to(ready)
        };
        self.unseal_taken(id, ready);
        Some(out)
    }

    /// Why the broker ends `id`, once it decided to.
    pub fn close_reason(&self, id: ConnId) -> Option<&Close> {
        self.conn(id).and_then(|c| c.close.as_deref())
    }

    /// The next ring batch for another shard: control batches first, as route
    /// updates must not wait behind a data flood.
    pub fn poll_batch(&mut self) -> Option<messages::Batch> {
        if let Some((dest, batch)) = self.ctrl_out.pop() {
            return Some(messages::Batch::Ctrl(dest, batch));
        }
        let (dest, batch) = self.data_out.pop()?;
        self.count_sent(dest);
        Some(messages::Batch::Data(dest, batch))
    }

    /// Whether the shard stops reading clients that publish (backpressure).
    pub fn readers_paused(&self) -> bool {
        self.readers_paused
    }

    /// Whether the shard stops taking batches from the data rings.
    pub fn rings_paused(&self) -> bool {
        self.rings_paused
    }

    /// Whether the node links this shard reads wait: a local subscriber is behind,
    /// or too many ring batches wait for room.
    pub fn links_paused(&self) -> bool {
        self.backlog_paused || self.ring_overflow > self.config.ring_overflow_max
    }

    /// The client id of connection `id` (empty once it ended), for logs.
    pub fn client_id(&self, id: ConnId) -> ByteString {
        self.conn(id).map(|c| c.info.client_id.clone()).unwrap_or_default()
    }

    /// End of a processing pass: cut the batches filled during it and decide the
    /// gates. Then the IO layer sends the batches ([`Core::poll_batch`]) and
    /// reports what overflowed ([`Core::set_ring_overflow`]).
    pub fn end_pass(&mut self, now: Now) {
        self.now = now;
        self.note_taken_batches();
        self.data_out.flush();
        self.ctrl_out.flush();
        self.refresh_gates(now);
        debug_assert!(self.check_invariants());
    }

    /// Decides the gates now: whether a subscriber's backlog pauses the data rings,
    /// and whether that or the ring overflow pauses the publishers. The IO layer
    /// calls it after every ring batch too, so a flood from the rings stops within
    /// one batch of a subscriber falling behind.
    pub fn refresh_gates(&mut self, now: Now) {
        let backlog = self.active_backlog(now);
        if backlog && !self.backlog_paused {
            self.stats.backlog_pauses += 1;
        }
        self.backlog_paused = backlog;
        // Shard 0 of a cluster node also stops taking messages while a node link
        // is full, so that the shards forwarding to it pause their publishers.
        // And any shard whose log's disk is behind: what it reads would pile up
        // in memory (its publishers pause, and, through the rings, the others').
        let backlog = backlog || self.links_full() || self.log_behind;
        self.rings_paused = backlog;
        let pause = backlog || self.ring_overflow > self.config.ring_overflow_max;
        self.set_readers_paused(pause);
    }

    /// `batches` ring batches wait for room: beyond `ring_overflow_max` the shard
    /// stops reading publishers, as it does while a subscriber's backlog pauses
    /// the rings.
    pub fn set_ring_overflow(&mut self, batches: usize) {
        self.ring_overflow = batches;
        let pause = self.rings_paused || batches > self.config.ring_overflow_max;
        self.set_readers_paused(pause);
    }

    fn set_readers_paused(&mut self, paused: bool) {
        if paused && !self.readers_paused {
            self.stats.reader_pauses += 1;
        }
        self.readers_paused = paused;
    }

    // ---- inputs from a connection ------------------------------------------------

    /// Processes the whole packets at the front of `buf` from connection `id`,
    /// until `buf` holds only part of a packet or processing must wait. A decode
    /// error or a protocol violation closes the connection (see
    /// [`Core::close_reason`]).
    pub fn handle_input(&mut self, now: Now, id: ConnId, buf: &mut BytesMut) -> Held {
        self.now = now;
        let Some(conn) = self.conn(id) else { return Held::Closing };
        let limits = self.limits(conn.info.protocol);
        loop {
            let Some(conn) = self.conn(id) else { return Held::Closing };
            if conn.close.is_some() {
                return Held::Closing;
            }
            if conn.subacks_pending > 0 {
                return Held::SubAck;
            }
            // A backlogged subscriber is not paused even if it publishes: its
            // acknowledgements are what drains it.
            let (paused_until, pausable) =
                (conn.paused_until_ms(), conn.publisher && !conn.in_backlog);
            if let Some(until) = paused_until {
                if until > now.ms {
                    return Held::RateLimited(until);
                }
                let rates = self.conn_mut(id).and_then(|c| c.rates.as_mut());
                rates.expect("paused by a rate limit").paused_until_ms = None;
            }
            // A publisher stops mid-buffer when backpressure starts; the rest of its
            // buffer waits for the gate, so nothing more is read meanwhile.
            if self.readers_paused && pausable {
                return Held::Backpressure;
            }
            match codec::decode(buf, &limits) {
                Ok(Some(packet)) => {
                    if let Err(close) = self.handle_packet(now, id, packet) {
                        self.close(id, close);
                        return Held::Closing;
                    }
                }
                Ok(None) => return Held::No,
                Err(e) => {
                    self.close(id, Close::Malformed(e));
                    return Held::Closing;
                }
            }
        }
    }

    /// A write of what [`Core::take_output`] gave completed; `written` comes back
    /// for reuse. The buffer has room again, so messages queued for want of room
    /// move into it.
    pub fn handle_written(&mut self, now: Now, id: ConnId, mut written: BytesMut) {
        self.now = now;
        self.stats.bytes_out += written.len() as u64;
        // Kept for the next connection with output: a buffer that starts empty
        // grows by doubling and copying, once per pass and subscriber (measured:
        // fan-out to 64 subscribers lost a third of its rate to it). The pool is
        // the shard's, so an idle connection keeps no buffer.
        if self.spare_out.len() < SPARE_OUT_MAX && written.capacity() <= SPARE_OUT_BYTES_MAX {
            written.clear();
            self.spare_out.push(written);
        }
        let Some(conn) = self.conn_mut(id) else { return };
        conn.last_progress_ms = now.ms;
        if conn.close.is_some() {
            return;
        }
        self.refill(id);
    }

    /// The broker's last words to a closing connection: an MQTT 5 client is told
    /// why [MQTT-4.13.2-1]. Returns what is left to write.
    pub fn take_last_words(&mut self, id: ConnId) -> Option<BytesMut> {
        let sealed = self.has_seals(id);
        let conn = self.conn_mut(id)?;
        if sealed {
            // Output still waiting for the log (`--sync always`) is not sent: an
            // acknowledgement that left now could promise what a crash loses. The
            // client resends what it was not acknowledged.
            conn.out.truncate(conn.ready);
        }
        if conn.info.protocol.is_v5() {
            if let Some(reason) = conn.close.as_deref().and_then(Close::reason_code) {
                let packet = Packet::Disconnect(Disconnect::new(reason));
                codec::encode(&packet, conn.info.protocol, &mut conn.out);
            }
        }
        conn.ready = 0;
        (!conn.out.is_empty()).then(|| std::mem::take(&mut conn.out))
    }

    /// Logs that a limit was hit, at most once a second per shard.
    fn log_limit(&mut self, name: &str) {
        let now = self.now.ms;
        if self.last_limit_log_ms.is_none_or(|last| now >= last + 1000) {
            self.last_limit_log_ms = Some(now);
            tracing::warn!(
                shard = self.id,
                "limit {name} reached; refusing (logged once a second)"
            );
        }
    }

    /// This shard's figures for `$SYS`, alarms and `/metrics` (the ring and lag
    /// figures are the IO layer's to fill in).
    pub fn snapshot(&self) -> ShardSnapshot {
        let sessions = self.sessions.len() as u64;
        let offline = self.sessions.values().filter(|e| e.conn.is_none()).count() as u64;
        let subscriptions = self.local_subs.iter().map(|(_, clients)| clients.len() as u64).sum();
        ShardSnapshot {
            shard: self.id,
            stats: ShardStats { route_updates_stale: self.routes.stale_count(), ..self.stats },
            sessions,
            sessions_offline: offline,
            subscriptions,
            retained: self.retained.len() as u64,
            routes: self.routes.len() as u64,
            ..ShardSnapshot::default()
        }
    }

    /// Asks every connection to close (shutdown); new connections are refused.
    pub fn close_all(&mut self) {
        self.stopping = true;
        self.close_every_connection(Close::Shutdown);
    }

    fn close_every_connection(&mut self, reason: Close) {
        let ids: Vec<ConnId> = self.sessions.values().filter_map(|e| e.conn).collect();
        for id in ids {
            self.close(id, reason.clone());
        }
    }

    /// Checks the invariants of the module docs; O(sessions + subscriptions).
    pub fn check_invariants(&self) -> bool {
        invariants::check(self)
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::{SessionKey, SmallMap, SubOptions};

    /// Every idle connection holds one `Conn`, one `SessionEntry` and, per
    /// subscription, an entry of each of its subscription maps: these bounds keep
    /// them from growing back unnoticed (issue 19: memory per idle connection).
    #[test]
    fn per_connection_state_stays_small() {
        let sizes = [
            ("Conn", size_of::<super::Conn>(), 184),
            // 224 + the user name the ACL checks offline deliveries against.
            ("SessionEntry", size_of::<super::SessionEntry>(), 240),
            ("Session", size_of::<crate::session::Session>(), 152),
            ("local_subs value", size_of::<SmallMap<SessionKey, SubOptions>>(), 24),
            ("wheel entry", size_of::<(u64, super::Timer)>(), 24),
        ];
        for (name, size, max) in sizes {
            assert!(size <= max, "{name} grew to {size} bytes (at most {max})");
        }
    }
}
