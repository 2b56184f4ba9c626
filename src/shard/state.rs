//! The state of one shard and everything that happens to it synchronously: packets
//! from its connections, items from other shards, timer ticks.
//!
//! Owner: one shard. Reached through `Rc<RefCell<ShardState>>` by the shard's tasks,
//! which borrow it only between awaits, never across one.
//!
//! # Invariants
//! - A session lives in `sessions` of exactly one shard: `owner_shard(client_id)`.
//! - `local_subs` holds exactly the subscriptions of this shard's sessions, and this
//!   shard's bit in every replica's route table is set for a filter iff `local_subs`
//!   has it.
//! - A SUBACK leaves only after every other shard acknowledged the route updates
//!   issued before it, so a message published anywhere after the SUBACK reaches the
//!   new subscription.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use glommio::channels::channel_mesh::Senders;
use hashbrown::HashMap;

use crate::config::Config;
use crate::hooks::{AuthRequest, AuthStep, ClientInfo, Hooks, Origin};
use crate::message::{Message, MessageId, MessageIdGen, Publisher};
use crate::protocol::{
    codec, Ack, Auth, ConnAck, Connect, DecodeError, Disconnect, LastWill, Packet, Properties,
    Props, ProtocolVersion, ProtocolViolation, Publish, QoS, ReasonCode, RetainHandling, SubAck,
    Subscribe, TopicFilter, TopicName, UnsubAck, Unsubscribe,
};
use crate::router::{
    owner_shard, parse_shared, topic_matches, LocalGroup, RouteTable, SharedRoutes, SubTrie,
};
use crate::session::{
    remaining_expiry, Delivery, DropReason, Link, Session, SessionStats, SubOptions,
};

use super::mesh::{CtrlMsg, DataMsg, Outbox};
use super::notify::{Gate, Latch, Notify};
use super::observe::SysState;
use super::rate::TokenBucket;
use super::wheel::Wheel;
use crate::metrics::{ShardSnapshot, ShardStats};

/// A message published by the embedding program.
#[derive(Debug)]
pub(crate) struct ApiPublish {
    pub topic: TopicName,
    pub payload: bytes::Bytes,
    pub qos: QoS,
    pub retain: bool,
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
        }
    }

    /// Whether the will message is published [MQTT-3.1.2-8]: on every close the
    /// client did not ask for with DISCONNECT. Takeover and shutdown keep the will
    /// unpublished, as the client is (or may soon be) back.
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
        }
    }
}

/// The part of a connection that the shard touches: its output buffer and how to
/// wake its task. The socket itself stays with the task.
#[derive(Debug)]
pub(crate) struct ConnIo {
    /// Unique on this shard; tells an old connection from its replacement.
    pub id: u64,
    pub client_id: ByteString,
    /// What hooks are told about the client.
    pub info: ClientInfo,
    /// The protocol level: decides the layout of every packet after CONNECT.
    pub protocol: ProtocolVersion,
    /// The session the connection's messages come from (No Local); set once the
    /// session is found or created.
    pub source: Cell<Publisher>,
    /// Topic aliases the client set (MQTT 5), at most `topic_alias_max`; they live
    /// as long as the connection [MQTT-3.3.2-7].
    pub aliases_in: RefCell<HashMap<u16, TopicName>>,
    /// The Authentication Method of CONNECT, for re-authentication (MQTT 5).
    pub auth_method: Option<ByteString>,
    /// Rounds of the current re-authentication exchange.
    pub auth_round: Cell<u32>,
    /// Whether CONNECT's Session Expiry Interval was 0: a DISCONNECT may then not
    /// set another [MQTT-3.14.2-2].
    pub expiry_was_zero: bool,
    /// Packets encoded for the client, written by the connection's task.
    pub out: RefCell<BytesMut>,
    pub wake: Notify,
    /// Set when the broker ends the connection; the task closes the socket.
    pub close: RefCell<Option<Close>>,
    /// Shard clock tick of the last packet received.
    pub last_seen: Cell<u64>,
    pub keep_alive_secs: u16,
    /// SUBACKs of this connection held for route acknowledgements. While any is
    /// pending the connection processes no further packet, so the client's own
    /// packets keep their order relative to the SUBACK.
    pub subacks_pending: Cell<u32>,
    /// Whether the connection is in `to_wake` already.
    dirty: Cell<bool>,
    /// Whether the connection is in `backlogged`.
    in_backlog: Cell<bool>,
    /// When a write to the client last completed: tells a busy subscriber from a
    /// stuck one.
    pub last_progress: Cell<Instant>,
    /// Whether the client has published: only publishers pause for backpressure,
    /// so a subscriber's acknowledgements are always read.
    pub publisher: Cell<bool>,
    /// Publish rate limits (messages, payload bytes), when configured.
    pub rates: RefCell<(Option<TokenBucket>, Option<TokenBucket>)>,
    /// Set when a rate limit is exceeded: no reading before then.
    pub paused_until: Cell<Option<Instant>>,
}

impl ConnIo {
    /// Whether backpressure stops reading this connection: it published, and is not
    /// itself a backlogged subscriber, whose acknowledgements are what drains it.
    pub fn pauses_for_backpressure(&self) -> bool {
        self.publisher.get() && !self.in_backlog.get()
    }

    pub fn end(&self, reason: Close) {
        self.close.borrow_mut().get_or_insert(reason);
        self.wake.notify();
    }
}

/// A session and what ties it to a connection.
#[derive(Debug)]
struct SessionEntry {
    session: Session,
    /// This shard's serial number of the session, for [`Publisher`].
    serial: u64,
    conn: Option<Rc<ConnIo>>,
    /// The will of the current connection.
    will: Option<LastWill>,
    /// A will waiting for its Will Delay Interval (MQTT 5) while the session is
    /// offline, and the tick it is due at [MQTT-3.1.3-9].
    pending_will: Option<(LastWill, ClientInfo, u64)>,
    /// Seconds the session outlives its connection: `None` forever, `Some(0)` not
    /// at all (a clean session).
    expiry_secs: Option<u64>,
    /// Shard clock tick at which an offline persistent session is removed.
    expires_at: Option<u64>,
}

/// One local subscription: its options and the serial of its session.
#[derive(Clone, Copy, Debug)]
struct LocalSub {
    options: SubOptions,
    session: u64,
}

impl SessionEntry {
    /// Whether the session outlives its connection.
    fn persistent(&self) -> bool {
        self.expiry_secs != Some(0)
    }
}

/// A SUBACK held until other shards acknowledge route revision `rev`.
#[derive(Debug)]
struct PendingSubAck {
    rev: u64,
    /// The retained query of this SUBSCRIBE, and how many shards have not answered
    /// it yet: its retained messages go out before the SUBACK, so before any
    /// message published after the client saw the SUBACK.
    query: u64,
    answers_due: u32,
    conn: Weak<ConnIo>,
    suback: SubAck,
}

/// Timer wheel keys.
#[derive(Debug)]
pub(crate) enum Timer {
    KeepAlive(Weak<ConnIo>),
    SessionExpiry(ByteString),
    Retry(Weak<ConnIo>),
    /// A delayed will may be due.
    Will(ByteString),
}

/// The outcome of an enhanced authentication exchange, for CONNACK.
#[derive(Clone, Debug)]
pub(crate) struct AuthOutcome {
    pub method: ByteString,
    pub data: Option<Bytes>,
}

/// One shard's sessions, subscriptions, routes and retained partition.
pub(crate) struct ShardState {
    pub id: usize,
    pub shards: usize,
    pub config: Arc<Config>,
    hooks: Arc<Hooks>,
    sessions: HashMap<ByteString, SessionEntry>,
    /// Filter -> this shard's subscribed clients, their options and session serial.
    local_subs: SubTrie<HashMap<ByteString, LocalSub>>,
    /// The serial number of the last session created.
    session_serial: u64,
    routes: RouteTable,
    /// Shared subscription groups with members anywhere, and where.
    shared_routes: SharedRoutes,
    /// `$share/{group}/{filter}` -> this shard's connected members.
    shared_local: HashMap<TopicFilter, LocalGroup>,
    /// Scratch for shared picks, reused across publishes.
    shared_scratch: Vec<(usize, TopicFilter)>,
    rng: fastrand::Rng,
    /// The last route revision this shard issued.
    route_rev: u64,
    /// Per shard, the highest of our revisions it has acknowledged.
    route_acked: Vec<u64>,
    pending_subacks: Vec<PendingSubAck>,
    /// The id of the last retained query this shard sent.
    retained_query: u64,
    /// This shard's partition of the clients' retained messages, by topic.
    retained: HashMap<ByteString, Arc<Message>>,
    /// The broker's own retained messages (`$SYS`), outside the clients' limits.
    retained_own: HashMap<ByteString, Arc<Message>>,
    /// Recently cleared retained topics and the id of the clearing message: a set
    /// that was published before the clear but arrives after it (over another
    /// shard's ring) must not bring the topic back. Swept after
    /// [`RETAINED_TOMBSTONE_SECS`]; at most `retained_max` entries.
    retained_cleared: HashMap<ByteString, MessageId>,
    /// Tick of the next sweep of `retained_cleared`.
    tombstone_sweep_at: u64,
    /// Unix microseconds, read at every tick and every end of pass: the clock of
    /// MQTT 5 message expiry, whose unit is the second, so a reading a pass old is
    /// exact enough and saves a clock read per message.
    now_us: u64,
    /// [`ShardState::now_ticks`] as of the last tick or end of pass: the clock of
    /// `last_seen`, read once per pass rather than once per packet.
    ticks: u64,
    pub data_out: Outbox<DataMsg>,
    pub ctrl_out: Outbox<CtrlMsg>,
    /// Connections with new output since the end of the last pass.
    to_wake: Vec<Rc<ConnIo>>,
    ids: MessageIdGen,
    wheel: Wheel<Timer>,
    started: Instant,
    next_conn_id: u64,
    next_assigned_id: u64,
    /// Scratch for matching: (client id, options), reused across publishes.
    scratch: Vec<(ByteString, SubOptions)>,
    pub readers_gate: Rc<Gate>,
    /// Closed while a local subscriber that is still reading is backlogged: the
    /// shard stops taking messages from the data rings, so the shards feeding it
    /// back up and pause their publishers in turn.
    pub backlog_gate: Rc<Gate>,
    /// Online connections whose session queued messages (or whose buffer is over
    /// its bound) since they last caught up.
    backlogged: Vec<Rc<ConnIo>>,
    /// Set at shutdown; long-lived tasks end when it is.
    pub stopped: Rc<Latch>,
    pub stats: ShardStats,
    /// `$SYS`, alarms and metrics: shard 0 only.
    pub sys: Option<SysState>,
    /// This shard's share of `connections_max`.
    connections_max: u64,
    /// This shard's shares of `retained_max`, `retained_bytes_max`, `queued_bytes_max`.
    retained_max: usize,
    retained_bytes_max: u64,
    queued_bytes_max: u64,
    /// Bytes held by this shard's retained messages.
    retained_bytes: u64,
    /// Tick of the last "limit reached" log line, to log at most once a second.
    last_limit_log: u64,
    /// Worst tick lateness since the last snapshot, in microseconds.
    pub lag_max_us: u64,
    pub stopping: bool,
}

impl std::fmt::Debug for ShardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardState")
            .field("id", &self.id)
            .field("sessions", &self.sessions.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// How long a cleared retained topic remembers its clear: far longer than a
/// message spends on a ring between shards.
const RETAINED_TOMBSTONE_SECS: u64 = 10;

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

impl ShardState {
    pub fn new(
        id: usize,
        shards: usize,
        config: Arc<Config>,
        hooks: Arc<Hooks>,
        data: Rc<Senders<Vec<DataMsg>>>,
        ctrl: Rc<Senders<Vec<CtrlMsg>>>,
    ) -> Self {
        let batch = config.ring_batch_max;
        ShardState {
            id,
            shards,
            hooks,
            sessions: HashMap::new(),
            local_subs: SubTrie::new(),
            session_serial: 0,
            routes: RouteTable::new(shards),
            shared_routes: SharedRoutes::new(shards),
            shared_local: HashMap::new(),
            shared_scratch: Vec::new(),
            rng: fastrand::Rng::with_seed(0x5EED ^ id as u64),
            route_rev: 0,
            route_acked: vec![0; shards],
            pending_subacks: Vec::new(),
            retained_query: 0,
            retained: HashMap::new(),
            retained_own: HashMap::new(),
            retained_cleared: HashMap::new(),
            tombstone_sweep_at: 0,
            now_us: unix_micros(),
            ticks: 0,
            data_out: Outbox::new(data, shards, batch),
            ctrl_out: Outbox::new(ctrl, shards, batch),
            to_wake: Vec::new(),
            ids: MessageIdGen::new(config.node_id, id as u32),
            wheel: Wheel::new(0),
            started: Instant::now(),
            next_conn_id: 0,
            next_assigned_id: 0,
            scratch: Vec::new(),
            readers_gate: Rc::new(Gate::default()),
            backlog_gate: Rc::new(Gate::default()),
            backlogged: Vec::new(),
            stopped: Rc::new(Latch::default()),
            stats: ShardStats::default(),
            connections_max: config.connections_max_effective().div_ceil(shards) as u64,
            retained_max: config.retained_max.div_ceil(shards),
            retained_bytes_max: config.retained_bytes_max_effective().div_ceil(shards as u64),
            queued_bytes_max: config.queued_bytes_max_effective().div_ceil(shards as u64),
            retained_bytes: 0,
            sys: (id == 0).then(|| SysState::new(&config, shards)),
            last_limit_log: 0,
            lag_max_us: 0,
            stopping: false,
            config,
        }
    }

    /// Ticks (of [`TICK_MS`]) since the shard started: the clock of keep-alive,
    /// retries and expiry.
    pub fn now_ticks(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 / TICK_MS
    }

    /// Remembers to wake `conn` at the end of the pass (once, however many packets
    /// were encoded for it).
    fn mark_dirty(&mut self, conn: &Rc<ConnIo>) {
        if !conn.dirty.replace(true) {
            self.to_wake.push(Rc::clone(conn));
        }
    }

    /// End of a processing pass: send the batches filled during it, wake the
    /// connections that have output, and apply backpressure if rings overflow.
    pub fn end_of_pass(&mut self) {
        self.now_us = unix_micros();
        self.ticks = self.now_ticks();
        self.data_out.flush();
        self.ctrl_out.flush();
        for conn in self.to_wake.drain(..) {
            conn.dirty.set(false);
            conn.wake.notify();
        }
        let backlog = self.active_backlog();
        set_gate(&self.backlog_gate, backlog, &mut self.stats.backlog_pauses);
        let overflow = self.data_out.overflow_len() + self.ctrl_out.overflow_len();
        let pause = backlog || overflow > self.config.ring_overflow_max;
        set_gate(&self.readers_gate, pause, &mut self.stats.reader_pauses);
    }

    /// Whether a backlogged subscriber is still making progress: then publishers
    /// wait for it (TCP backpressure) rather than have its queue drop messages. A
    /// subscriber that has written nothing for `SLOW_CONSUMER` is slow, not busy:
    /// nobody waits for it and its queue's drop policy applies [issue: slow
    /// consumers must not slow the others].
    fn active_backlog(&mut self) -> bool {
        if self.backlogged.is_empty() {
            return false;
        }
        let out_max = self.config.out_buffer_max_bytes;
        let sessions = &self.sessions;
        self.backlogged.retain(|conn| {
            let open = conn.close.borrow().is_none();
            let queued = sessions.get(&conn.client_id).is_some_and(|e| e.session.mqueue_len() > 0);
            let keep = open && (queued || conn.out.borrow().len() > out_max);
            conn.in_backlog.set(keep);
            keep
        });
        let now = Instant::now();
        self.backlogged.iter().any(|c| now.duration_since(c.last_progress.get()) < SLOW_CONSUMER)
    }

    // ---- connections -------------------------------------------------------------

    /// A client id for a client that sent an empty one: unique on this node, and
    /// owned by this shard, so a later client choosing the same id lands here too.
    pub fn assign_client_id(&mut self) -> ByteString {
        loop {
            self.next_assigned_id += 1;
            let id = format!("shardmq-{}-{}", self.id, self.next_assigned_id);
            if owner_shard(id.as_bytes(), self.shards) == self.id {
                return ByteString::from(id);
            }
        }
    }

    /// Processes CONNECT on the owner shard (after any enhanced authentication).
    /// Returns the connection's handle, or `None` with the refusing CONNACK encoded
    /// into `refusal_out`.
    pub fn connect(
        &mut self,
        connect: Connect,
        auth: Option<AuthOutcome>,
        refusal_out: &mut BytesMut,
    ) -> Option<Rc<ConnIo>> {
        let protocol = connect.protocol;
        let v5 = protocol.is_v5();
        let refuse = |reason, out: &mut BytesMut| {
            let connack = ConnAck { session_present: false, reason, properties: Props::default() };
            codec::encode(&Packet::ConnAck(connack), protocol, out);
            None
        };
        if self.stopping {
            return refuse(ReasonCode::SERVER_UNAVAILABLE, refusal_out);
        }
        if self.stats.connections >= self.connections_max {
            // A takeover would free a slot, but refusing keeps the rule simple and
            // the count an upper bound.
            self.stats.connects_refused += 1;
            self.stats.limit_connections += 1;
            self.log_limit("connections_max");
            let reason =
                if v5 { ReasonCode::QUOTA_EXCEEDED } else { ReasonCode::SERVER_UNAVAILABLE };
            return refuse(reason, refusal_out);
        }
        let assigned = connect.client_id.is_empty();
        let client_id = if assigned {
            // [MQTT-3.1.3-8]: in 3.1.1 an empty id needs CleanSession = 1; MQTT 3.1
            // has no empty ids at all. MQTT 5 allows one either way and is told the
            // id assigned [MQTT-3.1.3-7], [MQTT-3.2.2-16].
            let allowed = match protocol {
                ProtocolVersion::V31 => false,
                ProtocolVersion::V311 => connect.clean_session,
                ProtocolVersion::V5 => true,
            };
            if !allowed {
                self.stats.connects_refused += 1;
                return refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, refusal_out);
            }
            self.assign_client_id()
        } else {
            // Its own allocation: a decoded id is a slice of the handshake's read
            // buffer, which a long-lived session must not keep alive.
            ByteString::from(&*connect.client_id)
        };
        debug_assert!(assigned || owner_shard(client_id.as_bytes(), self.shards) == self.id);

        // How long the session outlives the connection: CleanSession in MQTT 3,
        // the Session Expiry Interval in MQTT 5 [MQTT-3.1.2-23], capped by
        // `session_expiry_secs`.
        let cap = self.config.session_expiry_secs;
        let (expiry_secs, expiry_capped) = if v5 {
            let requested = connect.properties.session_expiry_interval.unwrap_or(0);
            match requested {
                0 => (Some(0), None),
                u32::MAX if cap == 0 => (None, None),
                _ if cap > 0 && u64::from(requested) > cap => {
                    (Some(cap), Some(u32::try_from(cap).unwrap_or(u32::MAX)))
                }
                _ => (Some(u64::from(requested)), None),
            }
        } else if connect.clean_session {
            (Some(0), None)
        } else {
            ((cap > 0).then_some(cap), None)
        };

        // The keep-alive the broker enforces: MQTT 5 clients are capped and told
        // so [MQTT-3.2.2-21].
        let keep_alive_max = self.config.keep_alive_max_secs;
        let (keep_alive_secs, server_keep_alive) = if v5
            && keep_alive_max > 0
            && (connect.keep_alive_secs == 0 || connect.keep_alive_secs > keep_alive_max)
        {
            (keep_alive_max, Some(keep_alive_max))
        } else {
            (connect.keep_alive_secs, None)
        };

        self.next_conn_id += 1;
        let now = self.now_ticks();
        let info = ClientInfo {
            client_id: client_id.clone(),
            username: connect.username.clone(),
            protocol,
            clean_session: connect.clean_session,
            keep_alive_secs,
            shard: self.id,
        };
        let conn = Rc::new(ConnIo {
            id: self.next_conn_id,
            client_id: client_id.clone(),
            info,
            protocol,
            aliases_in: RefCell::new(HashMap::new()),
            auth_method: auth.as_ref().map(|a| a.method.clone()),
            auth_round: Cell::new(0),
            expiry_was_zero: expiry_secs == Some(0),
            out: RefCell::new(BytesMut::with_capacity(4096)),
            wake: Notify::default(),
            close: RefCell::new(None),
            last_seen: Cell::new(now),
            keep_alive_secs,
            subacks_pending: Cell::new(0),
            dirty: Cell::new(false),
            in_backlog: Cell::new(false),
            last_progress: Cell::new(Instant::now()),
            publisher: Cell::new(false),
            source: Cell::new(Publisher { shard: self.id as u32, session: 0 }),
            rates: RefCell::new((
                (self.config.publish_rate_max > 0)
                    .then(|| TokenBucket::new(self.config.publish_rate_max, Instant::now())),
                (self.config.publish_bytes_rate_max > 0)
                    .then(|| TokenBucket::new(self.config.publish_bytes_rate_max, Instant::now())),
            )),
            paused_until: Cell::new(None),
        });

        let mut session_present = false;
        let mut ended_wills = Vec::new();
        let mut orphans = Vec::new();
        if let Some(old) = self.sessions.get_mut(&client_id) {
            if let Some(old_conn) = old.conn.take() {
                // [MQTT-3.1.4-2]: the new connection wins; the old one is closed
                // (MQTT 5: with DISCONNECT 0x8E).
                old_conn.end(Close::TakenOver);
                self.stats.takeovers += 1;
                // MQTT 5 publishes the old connection's will unless it has a delay
                // (the client is back within it) [MQTT-3.1.3-9].
                if let Some(will) = old.will.take() {
                    if old_conn.protocol.is_v5() && will_delay(&will) == 0 {
                        ended_wills.push((will, old_conn.info.clone()));
                    }
                }
                self.set_shared_online(&client_id, false);
            }
            let old = self.sessions.get_mut(&client_id).expect("still present");
            if let Some((will, info, _)) = old.pending_will.take() {
                // Back in time: a delayed will is not sent [MQTT-3.1.3-9], unless
                // the session ends now (clean start), which is when it is due.
                if connect.clean_session || !old.persistent() {
                    ended_wills.push((will, info));
                }
            }
            if connect.clean_session || !old.persistent() {
                // The old session ends: what shared subscriptions dispatched to it
                // and it did not take goes to another member.
                orphans = old.session.take_shared();
                self.remove_session(&client_id);
            } else {
                session_present = true;
            }
        }
        for delivery in orphans {
            let Some(filter) = delivery.shared else { continue };
            self.stats.shared_redispatched += 1;
            self.dispatch_shared(&filter, delivery.message, 0, Some(&client_id));
        }
        for (will, info) in ended_wills {
            self.publish_will(will, &info);
        }
        if !session_present {
            let session = Session::new(client_id.clone(), self.config.session_limits());
            self.session_serial += 1;
            self.sessions.insert(
                client_id.clone(),
                SessionEntry {
                    session,
                    serial: self.session_serial,
                    conn: None,
                    will: None,
                    pending_will: None,
                    expiry_secs,
                    expires_at: None,
                },
            );
        }
        let link = if v5 {
            let p = &connect.properties;
            Link {
                protocol,
                packet_size_max: p.maximum_packet_size.map_or(usize::MAX, |m| m as usize),
                topic_alias_max: p.topic_alias_maximum.unwrap_or(0),
                receive_max: p.receive_maximum.unwrap_or(u16::MAX),
            }
        } else {
            Link::v3(protocol)
        };
        let entry = self.sessions.get_mut(&client_id).expect("inserted or present above");
        conn.source.set(Publisher { shard: self.id as u32, session: entry.serial });
        entry.conn = Some(Rc::clone(&conn));
        entry.session.attach(link);
        entry.expiry_secs = expiry_secs;
        entry.will = connect.will.map(|will| LastWill {
            topic: will.topic.detached(),
            payload: Bytes::copy_from_slice(&will.payload),
            properties: will.properties.detached().into(),
            ..will
        });
        entry.expires_at = None;
        let mut properties = Properties::default();
        if v5 {
            properties.assigned_client_identifier = assigned.then(|| client_id.clone());
            properties.session_expiry_interval = expiry_capped;
            properties.receive_maximum = Some(self.config.receive_maximum);
            properties.maximum_packet_size =
                Some(u32::try_from(self.config.packet_size_max).unwrap_or(u32::MAX));
            properties.topic_alias_maximum =
                (self.config.topic_alias_max > 0).then_some(self.config.topic_alias_max);
            properties.server_keep_alive = server_keep_alive;
            properties.wildcard_subscription_available = Some(1);
            properties.subscription_identifier_available = Some(1);
            properties.shared_subscription_available = Some(1);
            if let Some(auth) = auth {
                properties.authentication_method = Some(auth.method);
                properties.authentication_data = auth.data;
            }
        }
        {
            let mut out = conn.out.borrow_mut();
            let connack = ConnAck {
                session_present,
                reason: ReasonCode::SUCCESS,
                properties: properties.into(),
            };
            codec::encode(&Packet::ConnAck(connack), protocol, &mut out);
            let before = SentSnapshot::of(&entry.session);
            entry.session.resume(&mut out, self.now_us);
            before.count(&mut self.stats, &entry.session);
        }
        self.stats.connections += 1;
        self.stats.connects += 1;
        self.set_shared_online(&client_id, true);
        self.hooks.client_connected(&conn.info);
        if keep_alive_secs > 0 {
            let deadline = now + keep_alive_grace(keep_alive_secs);
            self.wheel.schedule(deadline, Timer::KeepAlive(Rc::downgrade(&conn)));
        }
        if self.config.retry_interval_secs > 0 {
            let deadline = now + secs_to_ticks(self.config.retry_interval_secs);
            self.wheel.schedule(deadline, Timer::Retry(Rc::downgrade(&conn)));
        }
        Some(conn)
    }

    /// One round of enhanced authentication, for the connection task.
    pub fn authenticate(&self, request: &AuthRequest<'_>) -> AuthStep {
        self.hooks.client_authenticate(request)
    }

    /// The connection ended; `reason` decides the will and the log line.
    pub fn disconnect(&mut self, conn: &Rc<ConnIo>, reason: &Close) {
        self.stats.connections -= 1;
        self.hooks.client_disconnected(&conn.info, reason.describe());
        if matches!(reason, Close::Violation(_) | Close::Malformed(_)) {
            self.stats.protocol_errors += 1;
        }
        let now = self.now_ticks();
        let Some(entry) = self.sessions.get_mut(&conn.client_id) else { return };
        let owns = entry.conn.as_ref().is_some_and(|c| c.id == conn.id);
        if !owns {
            // Taken over: the session belongs to the new connection now.
            return;
        }
        entry.conn = None;
        entry.session.go_offline();
        let will = entry.will.take().filter(|_| reason.publishes_will());
        let expiry_secs = entry.expiry_secs;
        // What shared subscriptions dispatched here and the client did not take
        // goes to another member [MQTT-4.8.2-4..6].
        let orphans = entry.session.take_shared();
        if entry.persistent() {
            if let Some(secs) = expiry_secs {
                let at = now + secs_to_ticks(secs);
                entry.expires_at = Some(at);
                self.wheel.schedule(at, Timer::SessionExpiry(conn.client_id.clone()));
            }
            if let Some(will) = will {
                let delay = u64::from(will_delay(&will));
                // The will goes out at the earlier of its delay and the end of the
                // session [MQTT-3.1.3-9].
                let delay = expiry_secs.map_or(delay, |secs| delay.min(secs));
                if delay == 0 {
                    self.publish_will(will, &conn.info);
                } else {
                    let at = now + secs_to_ticks(delay);
                    let entry = self.sessions.get_mut(&conn.client_id).expect("present above");
                    entry.pending_will = Some((will, conn.info.clone(), at));
                    self.wheel.schedule(at, Timer::Will(conn.client_id.clone()));
                }
            }
            self.set_shared_online(&conn.client_id, false);
        } else {
            self.remove_session(&conn.client_id);
            if let Some(will) = will {
                self.publish_will(will, &conn.info);
            }
        }
        for delivery in orphans {
            let Some(filter) = delivery.shared else { continue };
            self.stats.shared_redispatched += 1;
            self.dispatch_shared(&filter, delivery.message, 0, Some(&conn.client_id));
        }
    }

    /// Publishes a client's will message, with its MQTT 5 properties (less the
    /// Will Delay Interval, which is the broker's business).
    fn publish_will(&mut self, will: LastWill, info: &ClientInfo) {
        self.stats.wills_published += 1;
        let mut properties = will.properties.into_inner();
        properties.will_delay_interval = None;
        let properties = (!properties.is_empty()).then(|| Box::new(properties));
        let message =
            self.new_message(will.topic, will.payload, will.qos, will.retain, None, properties);
        self.ingress(Origin::Will(info), message);
    }

    /// Drops a session and its subscriptions.
    fn remove_session(&mut self, client_id: &ByteString) {
        let Some(entry) = self.sessions.remove(client_id) else { return };
        self.stats.queued_bytes -= entry.session.queued_bytes() as u64;
        let filters: Vec<TopicFilter> =
            entry.session.subscriptions().map(|(f, _)| f.clone()).collect();
        for filter in filters {
            self.remove_local_sub(&filter, client_id);
        }
        if let Some((will, info, _)) = entry.pending_will {
            // The session ends before the will's delay: it is due now [MQTT-3.1.3-9].
            self.publish_will(will, &info);
        }
    }

    // ---- packets from a client ---------------------------------------------------

    /// Handles one packet from `conn`'s client. An error closes that connection only.
    pub fn handle_packet(&mut self, conn: &Rc<ConnIo>, packet: Packet) -> Result<(), Close> {
        conn.last_seen.set(self.ticks);
        let now_us = self.now_us;
        match packet {
            Packet::Publish(publish) => self.on_publish(conn, publish)?,
            Packet::PubAck(ack) => {
                let acked =
                    self.with_session(conn, |s, out| s.on_puback(ack.packet_id, out, now_us));
                if let Some(Some(delivery)) = acked.transpose().map_err(Close::Violation)? {
                    self.hooks.message_acked(&conn.info, &delivery.message);
                }
            }
            Packet::PubRec(ack) => {
                let acked = self.with_session(conn, |s, out| s.on_pubrec(&ack, out, now_us));
                acked.transpose().map_err(Close::Violation)?;
            }
            Packet::PubRel(ack) => {
                self.with_session(conn, |s, out| s.on_pubrel(ack.packet_id, out));
            }
            Packet::PubComp(ack) => {
                let acked =
                    self.with_session(conn, |s, out| s.on_pubcomp(ack.packet_id, out, now_us));
                if let Some(Some(delivery)) = acked.transpose().map_err(Close::Violation)? {
                    self.hooks.message_acked(&conn.info, &delivery.message);
                }
            }
            Packet::Subscribe(subscribe) => self.on_subscribe(conn, subscribe)?,
            Packet::Unsubscribe(unsubscribe) => self.on_unsubscribe(conn, unsubscribe),
            Packet::PingReq => {
                codec::encode(&Packet::PingResp, conn.protocol, &mut conn.out.borrow_mut());
                self.mark_dirty(conn);
            }
            Packet::Disconnect(disconnect) => return Err(self.on_disconnect(conn, &disconnect)),
            Packet::Auth(auth) => self.on_auth(conn, &auth)?,
            Packet::Connect(_) => {
                return Err(Close::Violation(ProtocolViolation::protocol_error(
                    "MQTT-3.1.0-2",
                    "a second CONNECT on one connection",
                )));
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(Close::Violation(ProtocolViolation::protocol_error(
                    "MQTT-2.2.1",
                    "a packet only a server may send",
                )));
            }
        }
        Ok(())
    }

    /// DISCONNECT from the client: how the connection ends. In MQTT 5 it may ask for
    /// the will (0x04) and set a new Session Expiry Interval.
    fn on_disconnect(&mut self, conn: &Rc<ConnIo>, disconnect: &Disconnect) -> Close {
        if let Some(secs) = disconnect.properties.session_expiry_interval {
            if conn.expiry_was_zero && secs != 0 {
                return Close::Violation(ProtocolViolation::protocol_error(
                    "MQTT-3.14.2-2",
                    "DISCONNECT sets a Session Expiry Interval after CONNECT set 0",
                ));
            }
            let cap = self.config.session_expiry_secs;
            let expiry = match secs {
                0 => Some(0),
                u32::MAX if cap == 0 => None,
                _ if cap > 0 => Some(u64::from(secs).min(cap)),
                _ => Some(u64::from(secs)),
            };
            if let Some(entry) = self.sessions.get_mut(&conn.client_id) {
                if entry.conn.as_ref().is_some_and(|c| c.id == conn.id) {
                    entry.expiry_secs = expiry;
                }
            }
        }
        if disconnect.reason == ReasonCode::DISCONNECT_WITH_WILL {
            Close::NormalWithWill
        } else {
            // [MQTT-3.14.4-3]: the will is discarded.
            Close::Normal
        }
    }

    /// AUTH from a connected MQTT 5 client: re-authentication [MQTT-4.12.1].
    fn on_auth(&mut self, conn: &Rc<ConnIo>, auth: &Auth) -> Result<(), Close> {
        let Some(method) = &conn.auth_method else {
            return Err(Close::Violation(ProtocolViolation::protocol_error(
                "MQTT-4.12.0-6",
                "AUTH from a client that did not authenticate with a method in CONNECT",
            )));
        };
        if auth.properties.authentication_method.as_ref() != Some(method) {
            return Err(Close::Violation(ProtocolViolation::protocol_error(
                "MQTT-4.12.1-1",
                "re-authentication must use the method of CONNECT",
            )));
        }
        let round = match auth.reason {
            ReasonCode::RE_AUTHENTICATE if conn.auth_round.get() == 0 => 0,
            ReasonCode::CONTINUE_AUTHENTICATION if conn.auth_round.get() > 0 => {
                conn.auth_round.get()
            }
            _ => {
                return Err(Close::Violation(ProtocolViolation::protocol_error(
                    "MQTT-4.12.0-2",
                    "AUTH reason code out of turn",
                )))
            }
        };
        let step = self.hooks.client_authenticate(&AuthRequest {
            client_id: &conn.client_id,
            username: conn.info.username.as_deref(),
            method,
            data: auth.properties.authentication_data.as_deref(),
            round,
            reauthenticate: true,
        });
        let (reason, data) = match step {
            AuthStep::Success(data) => {
                conn.auth_round.set(0);
                (ReasonCode::SUCCESS, data)
            }
            AuthStep::Continue(data) => {
                conn.auth_round.set(round + 1);
                (ReasonCode::CONTINUE_AUTHENTICATION, Some(data))
            }
            AuthStep::Fail(code) => return Err(Close::AuthFailed(code)),
        };
        let properties = Properties {
            authentication_method: Some(method.clone()),
            authentication_data: data,
            ..Properties::default()
        };
        let packet = Packet::Auth(Auth { reason, properties: properties.into() });
        codec::encode(&packet, conn.protocol, &mut conn.out.borrow_mut());
        self.mark_dirty(conn);
        Ok(())
    }

    /// Runs `f` on `conn`'s session with its output buffer, if `conn` still owns it.
    fn with_session<R>(
        &mut self,
        conn: &Rc<ConnIo>,
        f: impl FnOnce(&mut Session, &mut BytesMut) -> R,
    ) -> Option<R> {
        let entry = self.sessions.get_mut(&conn.client_id)?;
        if !entry.conn.as_ref().is_some_and(|c| c.id == conn.id) {
            return None;
        }
        let before = SentSnapshot::of(&entry.session);
        let result = f(&mut entry.session, &mut conn.out.borrow_mut());
        before.count(&mut self.stats, &entry.session);
        self.mark_dirty(conn);
        Some(result)
    }

    fn on_publish(&mut self, conn: &Rc<ConnIo>, mut publish: Publish) -> Result<(), Close> {
        conn.publisher.set(true);
        self.stats.messages_in[publish.qos as usize] += 1;
        self.stats.bytes_in += publish.payload.len() as u64;
        if conn.protocol.is_v5() {
            self.resolve_alias(conn, &mut publish)?;
        }
        if !self.topic_within_limits(publish.topic.as_str()) {
            self.stats.limit_topic += 1;
            self.log_limit("topic_length_max/topic_levels_max");
            return Err(Close::Limit("topic_length_max/topic_levels_max"));
        }
        self.charge_publish_rate(conn, publish.payload.len());
        let receive_maximum = usize::from(self.config.receive_maximum);
        let route = match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => true,
            (QoS::AtLeastOnce, Some(packet_id)) => {
                let ack = Packet::PubAck(Ack::new(packet_id));
                codec::encode(&ack, conn.protocol, &mut conn.out.borrow_mut());
                self.mark_dirty(conn);
                true
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                let v5 = conn.protocol.is_v5();
                let first = self.with_session(conn, |s, out| {
                    // QoS 2 messages awaiting PUBREL are the only ones the broker
                    // holds unacknowledged (QoS 1 is answered at once): they count
                    // against its Receive Maximum [MQTT-3.3.4-8].
                    if v5
                        && !s.is_awaiting_rel(packet_id)
                        && s.awaiting_rel_len() >= receive_maximum
                    {
                        return Err(Close::Violation(ProtocolViolation::with_code(
                            "MQTT-3.3.4-8",
                            "more QoS 2 PUBLISHes awaiting PUBREL than the Receive Maximum",
                            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                        )));
                    }
                    let first = s.on_incoming_qos2(packet_id);
                    codec::encode(&Packet::PubRec(Ack::new(packet_id)), s.link().protocol, out);
                    Ok(first)
                });
                match first {
                    Some(first) => first?,
                    None => false,
                }
            }
            (_, None) => {
                return Err(Close::Violation(ProtocolViolation::new(
                    "MQTT-2.3.1-1",
                    "QoS > 0 PUBLISH without a packet identifier",
                )));
            }
        };
        if route {
            let message = self.new_message(
                publish.topic,
                publish.payload,
                publish.qos,
                publish.retain,
                Some(conn.source.get()),
                publish.properties,
            );
            self.ingress(Origin::Client(&conn.info), message);
        }
        Ok(())
    }

    /// Applies an MQTT 5 client's topic alias: sets it, or replaces the empty topic
    /// with the one it stands for [MQTT-3.3.2-12]. Also refuses a Subscription
    /// Identifier from a client [MQTT-3.3.4-6].
    fn resolve_alias(&mut self, conn: &ConnIo, publish: &mut Publish) -> Result<(), Close> {
        let Some(properties) = publish.properties.as_mut() else {
            return if publish.topic.is_empty() {
                Err(Close::Violation(ProtocolViolation::protocol_error(
                    "MQTT-3.3.2-1",
                    "PUBLISH without a topic name or a topic alias",
                )))
            } else {
                Ok(())
            };
        };
        if !properties.subscription_identifiers.is_empty() {
            return Err(Close::Violation(ProtocolViolation::protocol_error(
                "MQTT-3.3.4-6",
                "a PUBLISH from a client carries a Subscription Identifier",
            )));
        }
        if let Some(alias) = properties.topic_alias.take() {
            if alias == 0 || alias > self.config.topic_alias_max {
                return Err(Close::Violation(ProtocolViolation::with_code(
                    "MQTT-3.3.2-9",
                    "topic alias 0 or above the broker's Topic Alias Maximum",
                    ReasonCode::TOPIC_ALIAS_INVALID,
                )));
            }
            let mut aliases = conn.aliases_in.borrow_mut();
            if publish.topic.is_empty() {
                let Some(topic) = aliases.get(&alias) else {
                    return Err(Close::Violation(ProtocolViolation::protocol_error(
                        "MQTT-3.3.2-12",
                        "an empty topic name with a topic alias that was never set",
                    )));
                };
                publish.topic = topic.clone();
            } else {
                aliases.insert(alias, publish.topic.detached());
            }
        }
        if publish.topic.is_empty() {
            return Err(Close::Violation(ProtocolViolation::protocol_error(
                "MQTT-3.3.2-1",
                "PUBLISH without a topic name or a topic alias",
            )));
        }
        if properties.is_empty() {
            publish.properties = None;
        }
        Ok(())
    }

    fn topic_within_limits(&self, topic: &str) -> bool {
        topic.len() <= self.config.topic_length_max
            && topic.bytes().filter(|b| *b == b'/').count() < self.config.topic_levels_max
    }

    /// Charges one PUBLISH to the client's rate limits; over them, the connection
    /// stops reading until the buckets refill.
    fn charge_publish_rate(&mut self, conn: &ConnIo, payload_len: usize) {
        let mut rates = conn.rates.borrow_mut();
        if rates.0.is_none() && rates.1.is_none() {
            return;
        }
        let now = Instant::now();
        let wait_msgs = rates.0.as_mut().and_then(|b| b.take(1, now));
        let wait_bytes = rates.1.as_mut().and_then(|b| b.take(payload_len as u64, now));
        if let Some(wait) = wait_msgs.max(wait_bytes) {
            if conn.paused_until.get().is_none() {
                self.stats.limit_publish_rate += 1;
            }
            conn.paused_until.set(Some(now + wait));
        }
    }

    /// A message from the embedding program (`BrokerHandle::publish`).
    pub fn publish_api(&mut self, publish: ApiPublish) {
        let message = self.new_message(
            publish.topic,
            publish.payload,
            publish.qos,
            publish.retain,
            None,
            None,
        );
        self.ingress(Origin::Api, message);
    }

    /// A message entering the broker now, with the next id of this shard.
    fn new_message(
        &mut self,
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        publisher: Option<Publisher>,
        properties: Option<Box<Properties>>,
    ) -> Message {
        let id = self.ids.next(unix_micros());
        Message { id, topic, payload, qos, retain, publisher, properties }
    }

    /// Every message enters here: the `message.publish` hooks, then routing.
    fn ingress(&mut self, origin: Origin<'_>, message: Message) {
        if is_sys_topic(message.topic.as_str()) {
            // `$SYS` is the broker's (MQTT 3.1.1 section 4.7.2): clients' and wills'
            // messages to it are acknowledged and dropped, as Mosquitto does.
            self.stats.dropped_reserved_topic += 1;
            return;
        }
        let message = if self.hooks.has_message_publish() {
            match self.hooks.message_publish(origin, message) {
                Some(message) => message,
                None => {
                    self.stats.dropped_by_hook += 1;
                    return;
                }
            }
        } else {
            message
        };
        self.route(Arc::new(message));
    }

    /// Sends a message everywhere it has subscribers, and to its retained partition.
    pub fn route(&mut self, message: Arc<Message>) {
        if message.retain {
            let owner = owner_shard(message.topic.as_str().as_bytes(), self.shards);
            if owner == self.id {
                self.store_retained(Arc::clone(&message));
            } else {
                self.data_out.push(owner, DataMsg::Retain(Arc::clone(&message)));
            }
        }
        let shards = self.routes.matching_shards(message.topic.as_str());
        let mut picks = std::mem::take(&mut self.shared_scratch);
        if !self.shared_routes.is_empty() {
            let rng = &mut self.rng;
            self.shared_routes.pick(
                message.topic.as_str(),
                self.config.shared_subscription_strategy,
                || rng.u64(..),
                &mut picks,
            );
        }
        if shards.is_empty() && picks.is_empty() {
            self.stats.dropped_no_subscribers += 1;
        }
        for shard in shards.iter() {
            if shard == self.id {
                self.deliver_local(&message);
            } else {
                self.data_out.push(shard, DataMsg::Publish(Arc::clone(&message)));
            }
        }
        for (shard, filter) in picks.drain(..) {
            if shard == self.id {
                self.dispatch_shared(&filter, Arc::clone(&message), 0, None);
            } else {
                let msg = DataMsg::Shared {
                    filter,
                    message: Arc::clone(&message),
                    hops: 0,
                    exclude: None,
                };
                self.data_out.push(shard, msg);
            }
        }
        self.shared_scratch = picks;
    }

    /// Hands a message to every local session subscribed to its topic: one copy per
    /// session, at the highest QoS among its matching subscriptions, with all their
    /// subscription identifiers [MQTT-3.3.4-2], [MQTT-3.3.4-3].
    fn deliver_local(&mut self, message: &Arc<Message>) {
        let mut targets = std::mem::take(&mut self.scratch);
        let mut filters = 0;
        let publisher = message.publisher;
        let shard = self.id as u32;
        self.local_subs.for_each_match(message.topic.as_str(), |_, clients| {
            filters += 1;
            targets.extend(
                clients
                    .iter()
                    // No Local: not back to the publishing client [MQTT-3.8.3-3].
                    .filter(|(_, sub)| {
                        let own = Publisher { shard, session: sub.session };
                        !(sub.options.no_local && publisher == Some(own))
                    })
                    .map(|(c, sub)| (c.clone(), sub.options)),
            );
        });
        if filters > 1 {
            targets.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        let mut targets_iter = targets.drain(..).peekable();
        while let Some((client_id, first)) = targets_iter.next() {
            let mut qos = first.qos;
            let mut retain = first.retain_as_published;
            let mut sub_ids: Vec<u32> = first.id.into_iter().collect();
            // Overlapping subscriptions of one client: one copy [MQTT-3.3.5-1].
            while let Some((_, more)) = targets_iter.next_if(|(next, _)| *next == client_id) {
                qos = qos.max(more.qos);
                retain |= more.retain_as_published;
                sub_ids.extend(more.id);
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
            self.deliver_to(&client_id, delivery);
        }
        drop(targets_iter);
        self.scratch = targets;
    }

    /// Gives a message to one member of the shared subscription `filter` on this
    /// shard, never `exclude` (a member that just left); without an eligible member
    /// here, passes it to another shard that has one.
    fn dispatch_shared(
        &mut self,
        filter: &TopicFilter,
        message: Arc<Message>,
        hops: u8,
        exclude: Option<&ByteString>,
    ) {
        let strategy = self.config.shared_subscription_strategy;
        let random = self.rng.u64(..);
        let member =
            self.shared_local.get_mut(filter).and_then(|g| g.pick(strategy, random, exclude));
        let Some(member) = member else {
            let other = self.shared_routes.pick_other(filter, self.id, self.rng.u64(..));
            match other {
                Some(shard) if usize::from(hops) < self.shards => {
                    let msg = DataMsg::Shared {
                        filter: filter.clone(),
                        message,
                        hops: hops + 1,
                        exclude: exclude.cloned(),
                    };
                    self.data_out.push(shard, msg);
                }
                _ => self.stats.dropped_no_subscribers += 1,
            }
            return;
        };
        let Some(options) = self.sessions.get(&member).and_then(|e| e.session.subscription(filter))
        else {
            debug_assert!(false, "a group member without its subscription: {member}");
            self.stats.dropped_no_subscribers += 1;
            return;
        };
        let delivery = Delivery {
            qos: message.qos.min(options.qos),
            retain: options.retain_as_published && message.retain,
            sub_ids: options.id.into_iter().collect(),
            shared: Some(filter.clone()),
            message,
        };
        self.deliver_to(&member, delivery);
    }

    fn deliver_to(&mut self, client_id: &ByteString, delivery: Delivery) {
        let Some(entry) = self.sessions.get_mut(client_id) else { return };
        let before = SentSnapshot::of(&entry.session);
        let may_queue = self.stats.queued_bytes < self.queued_bytes_max;
        let now_us = self.now_us;
        let dropped = match &entry.conn {
            Some(conn) => {
                let out = &mut conn.out.borrow_mut();
                let dropped = entry.session.deliver(delivery, Some(out), may_queue, now_us);
                if !conn.dirty.replace(true) {
                    self.to_wake.push(Rc::clone(conn));
                }
                dropped
            }
            None => entry.session.deliver(delivery, None, may_queue, now_us),
        };
        before.count(&mut self.stats, &entry.session);
        if let Some(conn) = &entry.conn {
            let behind = entry.session.mqueue_len() > 0
                || conn.out.borrow().len() > self.config.out_buffer_max_bytes;
            if behind && !conn.in_backlog.replace(true) {
                self.backlogged.push(Rc::clone(conn));
                // Pause publishers now, not at the end of the pass: one pass can hold
                // hundreds of buffered PUBLISH packets, enough to overflow the queue.
                // The end of the pass decides again (a stuck subscriber reopens it).
                set_gate(&self.readers_gate, true, &mut self.stats.reader_pauses);
            }
        }
        match dropped.map(|(_, reason)| reason) {
            Some(DropReason::Budget) => self.stats.dropped_budget += 1,
            Some(DropReason::QueueFull | DropReason::Qos0NotStored) => {
                self.stats.dropped_mqueue += 1
            }
            None => {}
        }
    }

    fn store_retained(&mut self, message: Arc<Message>) {
        let topic = message.topic.as_byte_string().clone();
        // Only the broker publishes to `$SYS` (clients' attempts are dropped at
        // ingress); its own retained messages live apart, outside the clients' limits
        // and count.
        if is_sys_topic(&topic) {
            if message.payload.is_empty() {
                self.retained_own.remove(&topic);
            } else {
                self.retained_own.insert(topic, message);
            }
            return;
        }
        let size = |m: &Message| (m.topic.as_str().len() + m.payload.len()) as u64;
        // [MQTT-3.3.1-5]: the newest retained message replaces the one before. Two
        // publishers on two shards reach this partition over different rings, so
        // arrival order is not publication order: the message id (timestamp first)
        // decides, last writer wins.
        let newest =
            self.retained.get(&topic).map(|m| m.id).max(self.retained_cleared.get(&topic).copied());
        if newest.is_some_and(|newest| newest > message.id) {
            self.stats.retained_superseded += 1;
            return;
        }
        // [MQTT-3.3.1-10], [MQTT-3.3.1-11]: an empty retained message clears the topic
        // and is not stored.
        if message.payload.is_empty() {
            if let Some(old) = self.retained.remove(&topic) {
                self.retained_bytes -= size(&old);
            }
            if self.retained_cleared.len() < self.retained_max {
                self.retained_cleared.insert(topic, message.id);
            } else {
                // The clear applies; only its guard against a late older set is
                // not kept.
                self.stats.limit_retained += 1;
            }
            return;
        }
        self.retained_cleared.remove(&topic);
        let (count_after, bytes_after) = match self.retained.get(&topic) {
            Some(old) => (self.retained.len(), self.retained_bytes - size(old) + size(&message)),
            None => (self.retained.len() + 1, self.retained_bytes + size(&message)),
        };
        if count_after > self.retained_max || bytes_after > self.retained_bytes_max {
            // The message was still routed to subscribers; only the store refuses it.
            self.stats.limit_retained += 1;
            self.log_limit("retained_max/retained_bytes_max");
            return;
        }
        self.retained_bytes = bytes_after;
        // Kept until replaced: detach it from the publisher's read buffer.
        let message = Arc::new(Message {
            topic: message.topic.detached(),
            payload: Bytes::copy_from_slice(&message.payload),
            properties: message.properties.as_deref().map(|p| Box::new(p.detached())),
            ..(*message).clone()
        });
        self.retained.insert(topic, message);
    }

    fn on_subscribe(&mut self, conn: &Rc<ConnIo>, subscribe: Subscribe) -> Result<(), Close> {
        let v5 = conn.protocol.is_v5();
        // One identifier for every filter of the SUBSCRIBE [MQTT-3.8.2.1.2].
        let sub_id = subscribe.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        self.retained_query += 1;
        let query = self.retained_query;
        let mut answers_due = 0;
        for request in subscribe.filters {
            let Some(request) = self.hooks.client_subscribe(&conn.info, request) else {
                codes.push(if v5 {
                    ReasonCode::NOT_AUTHORIZED
                } else {
                    ReasonCode::UNSPECIFIED_ERROR
                });
                continue;
            };
            let shared = match parse_shared(request.filter.as_str()) {
                None => false,
                Some(Ok(_)) => true,
                Some(Err(reason)) => {
                    tracing::debug!(client_id = %conn.client_id, "refusing filter: {reason}");
                    codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                    continue;
                }
            };
            if shared && request.no_local {
                return Err(Close::Violation(ProtocolViolation::protocol_error(
                    "MQTT-3.8.3-4",
                    "No Local on a shared subscription",
                )));
            }
            if !self.topic_within_limits(request.filter.as_str()) {
                self.stats.limit_topic += 1;
                codes.push(ReasonCode::UNSPECIFIED_ERROR);
                continue;
            }
            let subscriptions_max = self.config.subscriptions_max;
            let full = self.with_session(conn, |s, _| {
                s.subscription_count() >= subscriptions_max && !s.is_subscribed(&request.filter)
            });
            if full == Some(true) {
                self.stats.limit_subscriptions += 1;
                self.log_limit("subscriptions_max");
                codes.push(if v5 {
                    ReasonCode::QUOTA_EXCEEDED
                } else {
                    ReasonCode::UNSPECIFIED_ERROR
                });
                continue;
            }
            let options = SubOptions {
                qos: request.qos,
                no_local: request.no_local,
                retain_as_published: request.retain_as_published,
                id: sub_id,
            };
            // Kept as long as the session: detach it from the read buffer.
            let filter = request.filter.detached();
            let Some(previous) =
                self.with_session(conn, |s, _| s.subscribe(filter.clone(), options))
            else {
                return Ok(());
            };
            codes.push(ReasonCode::granted(request.qos));
            if shared {
                // Retained messages are not sent on a shared subscription
                // [MQTT-4.8.2-?]; the member joins its group's rotation.
                if previous.is_none() {
                    self.join_shared(&filter, &conn.client_id);
                }
                continue;
            }
            self.add_local_sub(&filter, &conn.client_id, options);
            let send_retained = match request.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => previous.is_none(),
                RetainHandling::DoNotSend => false,
            };
            if send_retained {
                answers_due +=
                    self.query_retained(&conn.client_id, filter, request.qos, sub_id, query);
            }
        }
        let suback = SubAck { packet_id: subscribe.packet_id, codes, properties: Props::default() };
        if self.route_rev_acked() && answers_due == 0 {
            codec::encode(&Packet::SubAck(suback), conn.protocol, &mut conn.out.borrow_mut());
            self.mark_dirty(conn);
        } else {
            conn.subacks_pending.set(conn.subacks_pending.get() + 1);
            self.pending_subacks.push(PendingSubAck {
                rev: self.route_rev,
                query,
                answers_due,
                conn: Rc::downgrade(conn),
                suback,
            });
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, conn: &Rc<ConnIo>, unsubscribe: Unsubscribe) {
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        for filter in unsubscribe.filters {
            let Some(filter) = self.hooks.client_unsubscribe(&conn.info, filter) else {
                codes.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            };
            let existed = self.with_session(conn, |s, _| s.unsubscribe(&filter));
            if existed == Some(true) {
                self.remove_local_sub(&filter, &conn.client_id);
                codes.push(ReasonCode::SUCCESS);
            } else {
                codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        let unsuback =
            UnsubAck { packet_id: unsubscribe.packet_id, codes, properties: Props::default() };
        codec::encode(&Packet::UnsubAck(unsuback), conn.protocol, &mut conn.out.borrow_mut());
        self.mark_dirty(conn);
    }

    fn add_local_sub(&mut self, filter: &TopicFilter, client_id: &ByteString, options: SubOptions) {
        let Some(session) = self.sessions.get(client_id).map(|e| e.serial) else { return };
        let clients = self.local_subs.get_or_insert_with(filter.as_str(), HashMap::new);
        let first = clients.is_empty();
        clients.insert(client_id.clone(), LocalSub { options, session });
        if first {
            self.announce_route(filter, true);
        }
    }

    fn remove_local_sub(&mut self, filter: &TopicFilter, client_id: &ByteString) {
        if parse_shared(filter.as_str()).is_some() {
            self.leave_shared(filter, client_id);
            return;
        }
        let Some(clients) = self.local_subs.get_mut(filter.as_str()) else { return };
        clients.remove(client_id);
        if clients.is_empty() {
            self.local_subs.remove(filter.as_str());
            self.announce_route(filter, false);
        }
    }

    /// A connected member joins the shared subscription `filter` on this shard.
    fn join_shared(&mut self, filter: &TopicFilter, client_id: &ByteString) {
        let group = self.shared_local.entry(filter.clone()).or_default();
        if group.members.contains(client_id) {
            return;
        }
        group.members.push(client_id.clone());
        let members = group.members.len() as u32;
        self.announce_shared(filter, members);
    }

    /// A member leaves (unsubscribed, or disconnected) the shared subscription.
    fn leave_shared(&mut self, filter: &TopicFilter, client_id: &ByteString) {
        let Some(group) = self.shared_local.get_mut(filter) else { return };
        let before = group.members.len();
        group.members.retain(|c| c != client_id);
        if group.members.len() == before {
            return;
        }
        let members = group.members.len() as u32;
        if members == 0 {
            self.shared_local.remove(filter);
        }
        self.announce_shared(filter, members);
    }

    /// Joins or leaves every shared group of a session as its client connects or
    /// disconnects: only connected members get messages.
    fn set_shared_online(&mut self, client_id: &ByteString, online: bool) {
        let Some(entry) = self.sessions.get(client_id) else { return };
        let filters: Vec<TopicFilter> = entry
            .session
            .subscriptions()
            .filter(|(f, _)| parse_shared(f.as_str()).is_some())
            .map(|(f, _)| f.clone())
            .collect();
        for filter in filters {
            if online {
                self.join_shared(&filter, client_id);
            } else {
                self.leave_shared(&filter, client_id);
            }
        }
    }

    /// Tells every shard (this one too) how many members of `filter` are here.
    fn announce_shared(&mut self, filter: &TopicFilter, members: u32) {
        self.route_rev += 1;
        let rev = self.route_rev;
        self.shared_routes.set(filter, self.id, members);
        for shard in (0..self.shards).filter(|s| *s != self.id) {
            let msg =
                CtrlMsg::SharedRoute { origin: self.id, rev, filter: filter.clone(), members };
            self.ctrl_out.push(shard, msg);
        }
        self.stats.route_updates_sent += 1;
    }

    /// A 0 <-> 1 transition of local subscribers for `filter`: apply it to our own
    /// replica and tell every other shard.
    fn announce_route(&mut self, filter: &TopicFilter, present: bool) {
        self.route_rev += 1;
        let rev = self.route_rev;
        self.routes.apply(self.id, rev, filter.as_str(), present);
        for shard in (0..self.shards).filter(|s| *s != self.id) {
            let msg = CtrlMsg::Route { origin: self.id, rev, filter: filter.clone(), present };
            self.ctrl_out.push(shard, msg);
        }
        self.stats.route_updates_sent += 1;
    }

    fn route_rev_acked(&self) -> bool {
        (0..self.shards).filter(|s| *s != self.id).all(|s| self.route_acked[s] >= self.route_rev)
    }

    /// Asks the shards holding retained messages that may match `filter`; returns
    /// how many other shards will answer query `query`.
    fn query_retained(
        &mut self,
        client_id: &ByteString,
        filter: TopicFilter,
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
                let messages = self.matching_retained(&filter);
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

    /// The retained messages matching `filter`, less those whose Message Expiry
    /// Interval passed [MQTT-3.3.2-5].
    fn matching_retained(&self, filter: &TopicFilter) -> Vec<Arc<Message>> {
        let now_us = self.now_us;
        let live = |m: &&Arc<Message>| remaining_expiry(m, now_us).is_some();
        if filter.has_wildcards() {
            self.retained
                .iter()
                .chain(self.retained_own.iter())
                .filter(|(topic, _)| topic_matches(filter.as_str(), topic))
                .map(|(_, m)| m)
                .filter(live)
                .map(Arc::clone)
                .collect()
        } else {
            let own = is_sys_topic(filter.as_str());
            let store = if own { &self.retained_own } else { &self.retained };
            store.get(filter.as_str()).filter(live).map(Arc::clone).into_iter().collect()
        }
    }

    fn deliver_retained(
        &mut self,
        client_id: &ByteString,
        qos: QoS,
        sub_id: Option<u32>,
        messages: Vec<Arc<Message>>,
    ) {
        for message in messages {
            let qos = message.qos.min(qos);
            // [MQTT-3.3.1-8]: sent because of a new subscription, so RETAIN is set.
            let mut delivery = Delivery::new(message, qos, true);
            delivery.sub_ids.extend(sub_id);
            self.deliver_to(client_id, delivery);
        }
    }

    // ---- items from other shards -------------------------------------------------

    pub fn on_data(&mut self, msg: DataMsg) {
        match msg {
            DataMsg::Publish(message) => self.deliver_local(&message),
            DataMsg::Retain(message) => self.store_retained(message),
            DataMsg::Retained { client_id, qos, sub_id, messages, query } => {
                self.deliver_retained(&client_id, qos, sub_id, messages);
                if let Some(pending) = self.pending_subacks.iter_mut().find(|p| p.query == query) {
                    pending.answers_due -= 1;
                }
                self.release_subacks();
            }
            DataMsg::Shared { filter, message, hops, exclude } => {
                self.dispatch_shared(&filter, message, hops, exclude.as_ref());
            }
        }
    }

    /// Handles a control item; a hand-off is returned for the caller to serve.
    pub fn on_ctrl(&mut self, msg: CtrlMsg) -> Option<Box<super::mesh::Handoff>> {
        match msg {
            CtrlMsg::Route { origin, rev, filter, present } => {
                // A stale update is dropped and counted by the table itself.
                self.routes.apply(origin, rev, filter.as_str(), present);
                self.ctrl_out.push(origin, CtrlMsg::RouteAck { from: self.id, rev });
            }
            CtrlMsg::RouteAck { from, rev } => {
                self.route_acked[from] = self.route_acked[from].max(rev);
                self.release_subacks();
            }
            CtrlMsg::RetainedQuery { origin, client_id, filter, qos, sub_id, query } => {
                // Answered even when empty: the SUBACK waits for every answer.
                let messages = self.matching_retained(&filter);
                let msg = DataMsg::Retained { client_id, qos, sub_id, messages, query };
                self.data_out.push(origin, msg);
            }
            CtrlMsg::SharedRoute { origin, rev, filter, members } => {
                // One ring per origin keeps its updates in order.
                self.shared_routes.set(&filter, origin, members);
                self.ctrl_out.push(origin, CtrlMsg::RouteAck { from: self.id, rev });
            }
            CtrlMsg::Handoff(handoff) => return Some(handoff),
            CtrlMsg::Stats(snapshot) => {
                if let Some(sys) = self.sys.as_mut() {
                    sys.record(*snapshot);
                }
            }
        }
        None
    }

    fn release_subacks(&mut self) {
        let acked = (0..self.shards)
            .filter(|s| *s != self.id)
            .map(|s| self.route_acked[s])
            .min()
            .unwrap_or(u64::MAX);
        let mut i = 0;
        while i < self.pending_subacks.len() {
            let pending = &self.pending_subacks[i];
            if pending.rev <= acked && pending.answers_due == 0 {
                let pending = self.pending_subacks.remove(i);
                if let Some(conn) = pending.conn.upgrade() {
                    conn.subacks_pending.set(conn.subacks_pending.get() - 1);
                    let packet = Packet::SubAck(pending.suback);
                    codec::encode(&packet, conn.protocol, &mut conn.out.borrow_mut());
                    self.mark_dirty(&conn);
                }
            } else {
                i += 1;
            }
        }
    }

    // ---- time --------------------------------------------------------------------

    /// Advances the timer wheel to now: keep-alive timeouts, retries, expiries.
    pub fn tick(&mut self) {
        let now = self.now_ticks();
        self.now_us = unix_micros();
        self.ticks = now;
        if now >= self.tombstone_sweep_at {
            self.tombstone_sweep_at = now + secs_to_ticks(RETAINED_TOMBSTONE_SECS);
            let horizon = unix_micros().saturating_sub(RETAINED_TOMBSTONE_SECS * 1_000_000);
            self.retained_cleared.retain(|_, id| id.timestamp_us() >= horizon);
        }
        let mut due = Vec::new();
        self.wheel.advance(now, &mut due);
        for timer in due {
            match timer {
                Timer::KeepAlive(conn) => {
                    let Some(conn) = conn.upgrade() else { continue };
                    if conn.publisher.get() && self.readers_gate.is_closed() {
                        // We stopped reading this client; its silence is ours.
                        conn.last_seen.set(now);
                    }
                    let deadline = conn.last_seen.get() + keep_alive_grace(conn.keep_alive_secs);
                    if deadline <= now {
                        self.stats.keep_alive_timeouts += 1;
                        conn.end(Close::KeepAliveTimeout);
                    } else {
                        self.wheel.schedule(deadline, Timer::KeepAlive(Rc::downgrade(&conn)));
                    }
                }
                Timer::Retry(conn) => {
                    let Some(conn) = conn.upgrade() else { continue };
                    let now_us = self.now_us;
                    self.with_session(&conn, |s, out| s.retry(out, now_us));
                    let next = now + secs_to_ticks(self.config.retry_interval_secs);
                    self.wheel.schedule(next, Timer::Retry(Rc::downgrade(&conn)));
                }
                Timer::SessionExpiry(client_id) => {
                    let expired = self.sessions.get(&client_id).is_some_and(|e| {
                        e.conn.is_none() && e.expires_at.is_some_and(|at| at <= now)
                    });
                    if expired {
                        self.stats.sessions_expired += 1;
                        self.remove_session(&client_id);
                    }
                }
                Timer::Will(client_id) => {
                    let Some(entry) = self.sessions.get_mut(&client_id) else { continue };
                    let due = entry.pending_will.as_ref().is_some_and(|(_, _, at)| *at <= now);
                    if due && entry.conn.is_none() {
                        let (will, info, _) = entry.pending_will.take().expect("due");
                        self.publish_will(will, &info);
                    }
                }
            }
        }
    }

    /// After a write emptied `conn`'s buffer: moves what its session queued for want
    /// of buffer room into it.
    pub fn refill(&mut self, conn: &Rc<ConnIo>) {
        let queued = self.sessions.get(&conn.client_id).is_some_and(|e| {
            e.session.mqueue_len() > 0 && e.conn.as_ref().is_some_and(|c| c.id == conn.id)
        });
        if queued {
            let now_us = self.now_us;
            self.with_session(conn, |s, out| s.drain(out, now_us));
        }
    }

    /// Logs that a limit was hit, at most once a second per shard.
    fn log_limit(&mut self, name: &str) {
        let now = self.now_ticks();
        if self.last_limit_log == 0 || now >= self.last_limit_log + 1000 / TICK_MS {
            self.last_limit_log = now.max(1);
            tracing::warn!(
                shard = self.id,
                "limit {name} reached; refusing (logged once a second)"
            );
        }
    }

    /// This shard's figures for `$SYS`, alarms and `/metrics`; resets the lag peak.
    pub fn snapshot(&mut self) -> ShardSnapshot {
        let sessions = self.sessions.len() as u64;
        let offline = self.sessions.values().filter(|e| e.conn.is_none()).count() as u64;
        let subscriptions = self.local_subs.iter().map(|(_, clients)| clients.len() as u64).sum();
        let snapshot = ShardSnapshot {
            shard: self.id,
            stats: ShardStats { route_updates_stale: self.routes.stale_count(), ..self.stats },
            sessions,
            sessions_offline: offline,
            subscriptions,
            // The broker's own retained `$SYS` topics are kept apart, not counted.
            retained: self.retained.len() as u64,
            routes: self.routes.len() as u64,
            ring_batches_sent: self.data_out.batches_sent + self.ctrl_out.batches_sent,
            ring_batches_overflowed: self.data_out.batches_overflowed
                + self.ctrl_out.batches_overflowed,
            ring_overflow_now: (self.data_out.overflow_len() + self.ctrl_out.overflow_len()) as u64,
            lag_max_us: self.lag_max_us,
        };
        self.lag_max_us = 0;
        snapshot
    }

    /// Publishes a broker-generated message (`$SYS`, alarms): retained, QoS 0, no
    /// hooks.
    pub fn publish_sys(&mut self, topic: &str, payload: String) {
        let Ok(topic) = TopicName::try_from(topic) else {
            debug_assert!(false, "broker-made topics are valid: {topic}");
            return;
        };
        let message =
            self.new_message(topic, Bytes::from(payload), QoS::AtMostOnce, true, None, None);
        self.route(Arc::new(message));
    }

    /// Asks every connection to close (shutdown).
    pub fn close_all(&mut self) {
        self.stopping = true;
        for entry in self.sessions.values() {
            if let Some(conn) = &entry.conn {
                conn.end(Close::Shutdown);
            }
        }
    }
}

/// A session's counters before a call, to add what the call sent, queued and
/// dropped to the shard's counters.
struct SentSnapshot {
    stats: SessionStats,
    queued_bytes: usize,
}

impl SentSnapshot {
    fn of(session: &Session) -> SentSnapshot {
        SentSnapshot { stats: session.stats(), queued_bytes: session.queued_bytes() }
    }

    fn count(self, stats: &mut ShardStats, session: &Session) {
        let after = session.stats();
        for ((out, now), then) in stats.messages_out.iter_mut().zip(after.sent).zip(self.stats.sent)
        {
            *out += now - then;
        }
        stats.dropped_expired += after.dropped_expired - self.stats.dropped_expired;
        stats.dropped_too_large += after.dropped_too_large - self.stats.dropped_too_large;
        stats.queued_bytes =
            stats.queued_bytes + session.queued_bytes() as u64 - self.queued_bytes as u64;
    }
}

/// The Will Delay Interval of a will, in seconds (0 without one).
fn will_delay(will: &LastWill) -> u32 {
    will.properties.will_delay_interval.unwrap_or(0)
}

/// Whether `topic` is in the broker's own `$SYS` tree.
fn is_sys_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// How long a backlogged subscriber may go without completing a write before it
/// counts as stuck rather than busy.
const SLOW_CONSUMER: std::time::Duration = std::time::Duration::from_secs(1);

fn set_gate(gate: &Gate, closed: bool, pauses: &mut u64) {
    if closed && !gate.is_closed() {
        *pauses += 1;
        gate.close();
    } else if !closed && gate.is_closed() {
        gate.open();
    }
}

/// The resolution of the shard clock and its timer wheel.
pub(crate) const TICK_MS: u64 = 100;

fn secs_to_ticks(secs: u64) -> u64 {
    secs.saturating_mul(1000 / TICK_MS)
}

/// The keep-alive deadline: one and a half times the interval [MQTT-3.1.2-24].
fn keep_alive_grace(keep_alive_secs: u16) -> u64 {
    secs_to_ticks(u64::from(keep_alive_secs)) * 3 / 2
}
