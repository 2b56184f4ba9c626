//! The shard's sockets as the ring sees them: one `Link` per socket, from accept
//! to close, with no task and no buffer of its own.
//!
//! A link goes through phases:
//! - `Handshake`: reads until CONNECT, one receive at a time, within
//!   `connect_timeout`. Then the socket moves to the shard that owns the client id
//!   (hand-off), or stays;
//! - `Auth`: MQTT 5 enhanced authentication rounds before CONNACK [MQTT-4.12];
//! - `Connected`: a connection of the core, a multishot receive armed;
//! - `Closing`: its last words sent, its receive cancelled, waiting for the kernel
//!   to let go of both before the descriptor is closed.
//!
//! The pass ([`Shard::end_pass`]) drives the output side: every connection the core
//! woke gets one send, and the pass submits them all with one `io_uring_enter`.
//!
//! # Invariants
//! - A link's slot is reused only after its last completion (no receive armed, no
//!   send in flight): a completion always finds the link it was for, or none (the
//!   serial in its token tells a later link in the same slot).
//! - At most one send per link is in flight; the core keeps what is encoded
//!   meanwhile, bounded by `out_buffer_max_bytes`.
//! - A link whose input is held (SUBACK pending, rate limit, backpressure) has its
//!   receive cancelled: what the client sends next waits in the kernel's socket
//!   buffer, and TCP backpressure reaches the client.
//! - A closing link waits at most `connect_timeout` for its last operations; then
//!   its socket is shut down, which ends them.
//! - A hand-off moves a socket with no receive armed (the handshake reads one
//!   completion at a time), so no byte is read by the shard that gives it away.
//! - The handshake deadlines of a connection storm do not keep their room: once
//!   past, the queue shrinks back (`give_back_room`).

mod claims;
mod handshake;
mod output;

pub(crate) use claims::{ClaimMsg, Claims};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use slab::Slab;
use tracing::{debug, info, warn};

use crate::config::{Config, ListenerConfig, ListenerKind};
use crate::hooks::{AuthRequest, AuthStep};
use crate::metrics::ListenerStats;
use crate::net::layer::{Layer, LayerError, Stack};
use crate::net::proxy::{self, ProxyHeader};
use crate::net::tls::TlsAcceptor;
use crate::net::ws::{ws_layer, WsSettings};
use crate::protocol::{
    codec, Auth, ConnAck, Connect, DecodeError, Packet, Properties, Props, ProtocolVersion,
    ReasonCode,
};
use crate::router::owner_shard;

use super::core::rate::TokenBucket;
use super::core::{AuthOutcome, Close, ConnId, CtrlMsg, Held, Login, LoginContext};
use super::pool::Tail;
use super::uring::{Completion, Ring, Token};
use super::IoMsg;
use super::Shard;

/// The size of a provided buffer (their number is `recv_buffers`): a receive
/// completion carries at most one buffer, and every buffer is copied out and handed
/// back as its completion is reaped, so the ring needs only as many as completions
/// arrive between two reaps. 4 MiB per shard by default, whatever the number of
/// connections.
pub(crate) const RECV_BUFFER_BYTES: u32 = 4096;
/// Completions one reap takes before it lets the pass run.
const REAP_SLICE: usize = 256;

/// Submission slots of the socket ring: sends and re-armed receives of one pass.
pub(crate) const RING_ENTRIES: u32 = 1024;

/// Slow password verifications (argon2) in flight per shard; beyond, CONNECTs
/// that need one are refused with Server busy rather than queued without bound.
const VERIFY_PENDING_MAX: usize = 64;

/// How long a listener waits after an accept error (EMFILE and the like) before it
/// accepts again, instead of spinning on the error.
const ACCEPT_BACKOFF_MS: u64 = 100;

const NO_LINK: u32 = u32::MAX;

/// Handshake deadlines (16 bytes each) a shard keeps room for once they are
/// past: below this, giving room back would cost more allocations than it frees.
const DEADLINES_SPARE_MIN: usize = 1024;

/// Every handshake has a deadline, so a connection storm grows `deadlines` to its
/// peak (a 19,000-client reconnect storm: 1 MiB) for good. Once they are past and
/// the queue is under a quarter full, the room goes back, halving (the copies are
/// amortised O(1) per deadline, and at most a quarter of the room each).
fn give_back_room<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() > DEADLINES_SPARE_MIN && queue.len() < queue.capacity() / 4 {
        queue.shrink_to((queue.len() * 2).max(DEADLINES_SPARE_MIN));
    }
}

/// A link's name in tokens: its slot and a serial that tells it from later links in
/// the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LinkId {
    slot: u32,
    serial: u32,
}

impl LinkId {
    fn token(self) -> Token {
        u64::from(self.slot) << 32 | u64::from(self.serial)
    }

    fn from_token(token: Token) -> Self {
        LinkId { slot: (token >> 32) as u32, serial: token as u32 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recv {
    /// Nothing armed.
    Idle,
    /// A receive armed (one completion in the handshake, multishot after).
    Armed,
    /// Cancelled, or the socket's read side shut: its last completion is on the way.
    Cancelling,
}

#[derive(Debug)]
enum Phase {
    Handshake,
    /// Its password is being verified off the shard's thread (a slow hash).
    Verifying,
    /// Its client id is being claimed from the other nodes of the cluster.
    Claiming(u64),
    /// CONNECT read, for another shard; waiting for its last send to complete.
    HandingOff(Box<(usize, Connect)>),
    Auth(Box<AuthState>),
    Connected(ConnId),
    Closing,
}

/// An MQTT 5 enhanced authentication exchange in progress.
#[derive(Debug)]
struct AuthState {
    connect: Connect,
    method: ByteString,
    round: u32,
    /// When this round times out (ms): each round has `connect_timeout`.
    deadline_ms: u64,
}

/// One socket of the shard.
#[derive(Debug)]
struct Link {
    fd: OwnedFd,
    serial: u32,
    /// Bytes received and not yet processed (a partial packet, or input held).
    tail: Tail,
    phase: Phase,
    recv: Recv,
    sending: bool,
    /// Bytes the IO layer itself has for the client (handshake answers, last
    /// words) while a send is in flight. Empty, without an allocation, otherwise.
    extra: BytesMut,
    /// Whether the link is in `pending`.
    queued: bool,
    /// The client closed its side (or the socket failed).
    ended: bool,
    /// Input is held: no receive is armed until it is processed again.
    held: bool,
    /// A PROXY listener's link whose header has not been read yet.
    awaiting_proxy: bool,
    /// The listener that accepted it (an index into `Sockets::listeners`, the
    /// same on every shard).
    listener: u16,
    /// When its last bytes arrived, in the shard's microseconds (wrapping; 0:
    /// none yet), kept only for receive coalescing (`recv_coalesce_us`).
    last_rx_us: u32,
    /// The client's address as a PROXY header gave it; otherwise the socket's
    /// peer is the client.
    proxied: Option<Box<SocketAddr>>,
    /// TLS and WebSocket between the socket and MQTT; `None` for plain TCP, whose
    /// bytes go straight through.
    stack: Option<Box<Stack>>,
}

#[derive(Debug)]
struct Listener {
    /// `None` once stopped.
    fd: Option<OwnedFd>,
    armed: bool,
    /// No accepting before this time (ms): over `accept_rate_max`, or backing off
    /// from an error.
    paused_until_ms: Option<u64>,
    spec: ListenerSpec,
    stats: ListenerStats,
}

/// A connection moving to the shard that owns its client id.
#[derive(Debug)]
pub(super) struct Handoff {
    /// The accepted socket, which the accepting shard no longer reads.
    pub fd: OwnedFd,
    pub connect: Connect,
    /// Bytes read after the CONNECT packet.
    pub buffered: Bytes,
    /// The listener that accepted it (the same index on every shard).
    pub listener: u16,
    /// The client's address from a PROXY header.
    pub proxied: Option<SocketAddr>,
    /// Its TLS and WebSocket state, mid-stream.
    pub stack: Option<Box<Stack>>,
}

/// What a listener does with its connections.
#[derive(Debug)]
pub(crate) struct ListenerSpec {
    /// `kind address`, for logs and metric labels.
    pub name: String,
    pub kind: ListenerKind,
    pub proxy_protocol: bool,
    /// Whether clients without a user name may connect.
    pub anonymous: bool,
    /// This shard's share of the listener's `max_connections`.
    pub links_max: Option<usize>,
    /// The client certificate's identity is the user name.
    pub use_identity: bool,
    /// The TLS configuration of a TLS listener (replaced on reload).
    pub tls: Option<TlsAcceptor>,
    /// The WebSocket settings of a WebSocket listener.
    pub ws: Option<WsSettings>,
    /// The largest WebSocket frame accepted: a packet and its frame header.
    pub ws_frame_max: usize,
}

impl ListenerSpec {
    pub fn new(config: &Config, listener: &ListenerConfig, shards: usize) -> ListenerSpec {
        ListenerSpec {
            name: format!("{} {}", listener.kind, listener.bind),
            kind: listener.kind,
            proxy_protocol: listener.proxy_protocol,
            anonymous: config.anonymous_allowed(listener),
            links_max: listener.max_connections.map(|max| max.get().div_ceil(shards)),
            use_identity: listener.use_identity_as_username,
            tls: None,
            ws: listener
                .kind
                .websocket()
                .then(|| WsSettings { path: listener.ws_path().to_owned() }),
            ws_frame_max: config.packet_size_max + 14,
        }
    }

    /// The layers of a new connection, socket first.
    fn stack(&self) -> Result<Option<Box<Stack>>, LayerError> {
        let mut layers: Vec<Box<dyn Layer>> = Vec::new();
        if self.kind.tls() {
            let tls = self.tls.as_ref().ok_or_else(|| {
                LayerError::Handshake("the listener has no certificate loaded".to_owned())
            })?;
            layers.push(tls.layer()?);
        }
        if let Some(ws) = &self.ws {
            layers.push(ws_layer(ws, self.ws_frame_max));
        }
        Ok((!layers.is_empty()).then(|| Box::new(Stack::new(layers))))
    }
}

/// Every socket of one shard and the ring they go through.
#[derive(Debug)]
pub(crate) struct Sockets {
    pub ring: Ring,
    links: Slab<Link>,
    next_serial: u32,
    /// The core's connection slot -> link slot.
    by_conn: Vec<u32>,
    /// Links with input to process (each at most once: `Link::queued`).
    pending: Vec<LinkId>,
    /// Links held by backpressure, resumed when the readers' gate opens.
    paused: Vec<LinkId>,
    /// Links held by a publish rate limit, and until when (ms).
    rate_paused: Vec<(u64, LinkId)>,
    /// Links in handshake or authentication, by deadline: every deadline is now +
    /// `connect_timeout`, so appending keeps the queue sorted.
    deadlines: VecDeque<(u64, LinkId)>,
    listeners: Vec<Listener>,
    /// `accept_rate_max` per shard, on the shard's clock.
    accept_bucket: Option<TokenBucket>,
    /// Set at shutdown: no more accepting.
    stopped: bool,
    /// Closing links still waiting for the kernel (a last send to a peer that does
    /// not read), and the ticks they have waited.
    lingering: Vec<(LinkId, u32)>,
    /// Closing links shut down because their last operations did not end in time.
    pub closes_forced: u64,
}

impl Sockets {
    pub fn new(
        ring: Ring,
        listeners: Vec<(OwnedFd, ListenerSpec)>,
        accept_bucket: Option<TokenBucket>,
    ) -> Self {
        Sockets {
            ring,
            links: Slab::new(),
            next_serial: 0,
            by_conn: Vec::new(),
            pending: Vec::new(),
            paused: Vec::new(),
            rate_paused: Vec::new(),
            deadlines: VecDeque::new(),
            listeners: listeners
                .into_iter()
                .map(|(fd, spec)| Listener {
                    fd: Some(fd),
                    armed: false,
                    paused_until_ms: None,
                    spec,
                    stats: ListenerStats::default(),
                })
                .collect(),
            accept_bucket,
            stopped: false,
            lingering: Vec::new(),
            closes_forced: 0,
        }
    }

    /// Open links (handshakes, connections and closing ones).
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// The listeners' TLS configurations, in listener order: new connections
    /// use them, established ones keep theirs.
    pub fn set_tls(&mut self, tls: Vec<Option<TlsAcceptor>>) {
        for (listener, acceptor) in self.listeners.iter_mut().zip(tls) {
            listener.spec.tls = acceptor;
        }
    }

    /// Each listener's name and figures, in listener order.
    pub fn listener_stats(&self) -> Vec<(String, ListenerStats)> {
        self.listeners.iter().map(|l| (l.spec.name.clone(), l.stats)).collect()
    }

    fn listener_stats_mut(&mut self, id: LinkId) -> Option<&mut ListenerStats> {
        let index = self.links.get(id.slot as usize)?.listener;
        self.listeners.get_mut(usize::from(index)).map(|l| &mut l.stats)
    }

    /// Forgets link `slot` (its descriptor closes with it, unless moved out).
    fn remove_link(&mut self, slot: usize) -> Link {
        let link = self.links.remove(slot);
        if let Some(listener) = self.listeners.get_mut(usize::from(link.listener)) {
            listener.stats.links -= 1;
        }
        link
    }

    fn link(&mut self, id: LinkId) -> Option<&mut Link> {
        self.links.get_mut(id.slot as usize).filter(|l| l.serial == id.serial)
    }

    fn id_of(&self, slot: usize) -> LinkId {
        LinkId { slot: slot as u32, serial: self.links[slot].serial }
    }

    fn link_of_conn(&self, id: ConnId) -> Option<LinkId> {
        let slot = *self.by_conn.get(id.slot())?;
        (slot != NO_LINK).then(|| self.id_of(slot as usize))
    }

    fn queue(&mut self, id: LinkId) {
        if let Some(link) = self.link(id) {
            if !link.queued {
                link.queued = true;
                self.pending.push(id);
            }
        }
    }

    /// Arms the accept of every listener that is not paused.
    fn arm_listeners(&mut self, now_ms: u64) {
        if self.stopped {
            return;
        }
        for (index, listener) in self.listeners.iter_mut().enumerate() {
            let Some(fd) = &listener.fd else { continue };
            if listener.armed || listener.paused_until_ms.is_some_and(|until| until > now_ms) {
                continue;
            }
            listener.paused_until_ms = None;
            listener.armed = true;
            self.ring.accept(fd.as_raw_fd(), index);
        }
    }

    /// Sends `bytes` that the IO layer itself has for link `id`, after whatever is
    /// in flight.
    fn send_extra(&mut self, id: LinkId, bytes: BytesMut) {
        let Some(link) = self.link(id) else { return };
        if link.sending {
            link.extra.extend_from_slice(&bytes);
            return;
        }
        link.sending = true;
        let fd = link.fd.as_raw_fd();
        self.ring.send(fd, id.token(), bytes);
    }

    /// Sends MQTT bytes the IO layer itself has for link `id` (a refusing CONNACK,
    /// an AUTH, last words): through the link's layers.
    fn send_mqtt(&mut self, id: LinkId, bytes: BytesMut) {
        let Some(link) = self.link(id) else { return };
        let wire = match link.stack.as_mut() {
            None => bytes,
            Some(stack) => {
                let mut wire = BytesMut::with_capacity(bytes.len() + 64);
                if let Err(e) = stack.output(&bytes, &mut wire) {
                    debug!("closing connection: {e}");
                    link.ended = true;
                    return;
                }
                wire
            }
        };
        self.send_extra(id, wire);
    }

    /// Arms the link's receive if nothing is armed: multishot once connected.
    fn read(&mut self, id: LinkId) {
        let Some(link) = self.link(id) else { return };
        if link.recv != Recv::Idle || link.ended || matches!(link.phase, Phase::Closing) {
            return;
        }
        link.recv = Recv::Armed;
        let once = !matches!(link.phase, Phase::Connected(_));
        let fd = link.fd.as_raw_fd();
        self.ring.recv(fd, id.token(), once);
    }

    /// Before CONNACK, a packet is still partial: read the rest, or close the link
    /// if the client ended its side.
    fn await_more(&mut self, id: LinkId) {
        let Some(link) = self.link(id) else { return };
        link.tail.settle();
        if link.ended {
            self.close_link(id, None);
        } else {
            self.read(id);
        }
    }

    /// Stops the link's multishot receive while its input is held.
    fn stop_reading(&mut self, id: LinkId) {
        let Some(link) = self.link(id) else { return };
        if link.recv == Recv::Armed {
            link.recv = Recv::Cancelling;
            self.ring.cancel_recv(id.token());
        }
    }

    /// Ends the link's receive for good: it closes.
    ///
    /// Not a cancel: the kernel finds the receive to cancel by walking one bucket
    /// of its table of armed polls, and with every connection's receive armed
    /// that bucket is long (at most 256 buckets: 19,000 connections put 74 in
    /// each). In a reconnect storm, where every takeover closes a link, that walk
    /// was 10% of the broker's CPU. Shutting the socket's read side wakes the
    /// receive instead, which ends with the end of stream; nothing is sent to the
    /// peer, and what the link still sends goes out.
    fn end_reading(&mut self, id: LinkId) {
        let Some(link) = self.link(id) else { return };
        if link.recv == Recv::Armed {
            link.recv = Recv::Cancelling;
            if let Err(e) = socket2::SockRef::from(&link.fd).shutdown(std::net::Shutdown::Read) {
                // Not connected any more: the receive has ended or is ending anyway.
                debug!("shutdown(SHUT_RD): {e}");
            }
        }
    }

    /// Closes the descriptor of a closing link once the kernel let go of it.
    fn free_if_done(&mut self, id: LinkId) {
        let Some(link) = self.link(id) else { return };
        if matches!(link.phase, Phase::Closing) && link.recv == Recv::Idle && !link.sending {
            self.remove_link(id.slot as usize);
        }
    }

    /// Ends a link that is not (or no longer) a connection of the core, after
    /// `last` is sent.
    fn close_link(&mut self, id: LinkId, last: Option<BytesMut>) {
        let Some(link) = self.link(id) else { return };
        let already = matches!(link.phase, Phase::Closing);
        link.phase = Phase::Closing;
        if let Some(last) = last {
            self.send_mqtt(id, last);
        }
        // TLS close_notify, a WebSocket Close: the client learns the end was meant.
        let goodbye =
            self.link(id).and_then(|l| l.stack.as_mut()).filter(|s| !already && s.ready());
        if let Some(stack) = goodbye {
            let mut bye = BytesMut::new();
            stack.close(&mut bye);
            if !bye.is_empty() {
                self.send_extra(id, bye);
            }
        }
        self.end_reading(id);
        self.free_if_done(id);
        if !already && self.link(id).is_some() {
            self.lingering.push((id, 0));
        }
    }

    /// Shuts down closing links that waited `limit` ticks: a peer that stopped
    /// reading would otherwise hold its descriptor and last send for ever. The
    /// shutdown ends their operations (EPIPE), and their completions free them.
    fn shut_lingering(&mut self, limit: u32) {
        for (id, ticks) in std::mem::take(&mut self.lingering) {
            let Some(link) = self.link(id) else { continue };
            if ticks + 1 < limit {
                self.lingering.push((id, ticks + 1));
                continue;
            }
            let _ = socket2::SockRef::from(&link.fd).shutdown(std::net::Shutdown::Both);
            self.closes_forced += 1;
        }
    }
}

impl Shard {
    /// Takes every completion the ring has and processes the input it brought.
    ///
    /// At most [`REAP_SLICE`] completions at a time: under a flood the ring always
    /// has more, and a reaper that never stops starves the pass, so output waits
    /// and input piles up (measured: 145 ms p99 latency and 5x the RSS in a QoS 0
    /// fan-in). Returns whether it stopped with completions left.
    pub(super) fn reap(&mut self) -> bool {
        let mut any = false;
        let mut left = REAP_SLICE;
        // One clock read per slice, and none unless coalescing may turn on.
        let now_us = self.coalesce.enabled().then(|| self.now_us());
        while left > 0 {
            let Some(completion) = self.sockets.ring.next(&mut self.pool) else { break };
            left -= 1;
            any = true;
            match completion {
                Completion::Accepted { listener, result, more } => {
                    self.accepted(listener, result, more);
                }
                Completion::Received { token, result, more } => {
                    let id = LinkId::from_token(token);
                    let arrived = matches!(&result, Ok(bytes) if !bytes.is_empty());
                    if let (Some(now), true) = (now_us, arrived) {
                        if let Some(link) = self.sockets.link(id) {
                            self.coalesce.arrival(now, &mut link.last_rx_us);
                        }
                    }
                    self.received(id, result, more);
                }
                Completion::Sent { token, result, buf } => {
                    self.sent(LinkId::from_token(token), result, buf);
                }
            }
        }
        self.process_pending();
        if any {
            self.schedule_pass();
        }
        if let Some(now) = now_us {
            self.review_coalescing(now);
        }
        left == 0
    }

    /// The socket side of the end of a pass, after the ring batches left: every
    /// connection the core woke gets its output sent (or its close), held links
    /// whose wait ended read again, and everything goes to the kernel at once.
    pub(super) fn end_pass_sockets(&mut self) {
        while let Some(id) = self.core.poll_wake() {
            self.woken(id);
        }
        if !self.core.readers_paused() && !self.sockets.paused.is_empty() {
            for id in std::mem::take(&mut self.sockets.paused) {
                self.sockets.queue(id);
            }
        }
        if !self.sockets.pending.is_empty() {
            self.schedule_pass();
        }
        if let Err(e) = self.sockets.ring.submit() {
            warn!("socket ring: submit failed: {e}");
        }
        // Sends usually complete within the submission: take them now, so their
        // buffers come back and the next pass can refill the connections. What is
        // left, the reaper takes.
        if self.reap() {
            self.reaper.notify();
        }
    }

    /// The timers of the sockets, at every tick: handshakes past their deadline,
    /// rate-limited links whose time came, paused listeners.
    pub(super) fn tick_sockets(&mut self) {
        if self.coalesce.enabled() {
            // Arrivals review it as they come; once they stop, this turns it off.
            self.review_coalescing(self.now_us());
        }
        let now_ms = self.now().ms;
        while let Some(&(deadline, id)) = self.sockets.deadlines.front() {
            if deadline > now_ms {
                break;
            }
            self.sockets.deadlines.pop_front();
            let Some(link) = self.sockets.link(id) else { continue };
            match link.phase {
                Phase::Handshake | Phase::Verifying | Phase::Claiming(_) | Phase::HandingOff(_) => {
                    self.connect_timeouts += 1;
                    debug!(peer = ?peer(&link.fd), "closing connection: no CONNECT in time");
                    self.sockets.close_link(id, None);
                }
                Phase::Auth(ref state) if state.deadline_ms == deadline => {
                    debug!(peer = ?peer(&link.fd), "closing connection: authentication took too long");
                    self.sockets.close_link(id, None);
                }
                Phase::Auth(_) | Phase::Connected(_) | Phase::Closing => {}
            }
        }
        give_back_room(&mut self.sockets.deadlines);
        let due: Vec<LinkId> = {
            let rate_paused = &mut self.sockets.rate_paused;
            let mut due = Vec::new();
            rate_paused.retain(|&(until, id)| {
                let ready = until <= now_ms;
                if ready {
                    due.push(id);
                }
                !ready
            });
            due
        };
        for id in due {
            self.sockets.queue(id);
        }
        let limit = (self.config.connect_timeout.as_millis() as u64).div_ceil(super::TICK_MS);
        self.sockets.shut_lingering(u32::try_from(limit).unwrap_or(u32::MAX));
        self.sockets.arm_listeners(now_ms);
        self.process_pending();
        self.schedule_pass();
    }

    /// Starts the shard's listeners.
    pub(super) fn start_sockets(&mut self) {
        let now_ms = self.now().ms;
        self.sockets.arm_listeners(now_ms);
        self.schedule_pass();
    }

    /// Shutdown: stop accepting, end every handshake. Connections of the core
    /// close through [`Core::close_all`](super::core::Core::close_all).
    pub(super) fn stop_sockets(&mut self) {
        self.sockets.stopped = true;
        for (index, listener) in self.sockets.listeners.iter_mut().enumerate() {
            // Closed now: the port is free as soon as every shard stopped.
            listener.fd = None;
            if listener.armed {
                self.sockets.ring.cancel_accept(index);
            }
        }
        let handshakes: Vec<LinkId> = self
            .sockets
            .links
            .iter()
            .filter(|(_, l)| {
                matches!(
                    l.phase,
                    Phase::Handshake
                        | Phase::Verifying
                        | Phase::Claiming(_)
                        | Phase::HandingOff(_)
                        | Phase::Auth(_)
                )
            })
            .map(|(slot, l)| LinkId { slot: slot as u32, serial: l.serial })
            .collect();
        for id in handshakes {
            self.sockets.close_link(id, None);
        }
        self.schedule_pass();
    }

    /// A connection handed over by the shard that accepted it.
    pub(super) fn adopt(&mut self, handoff: Handoff) {
        self.handoffs_in += 1;
        let Handoff { fd, connect, buffered, listener, proxied, stack } = handoff;
        let id = self.new_link(fd, listener);
        if let Some(link) = self.sockets.link(id) {
            link.tail = Tail::from_owned(BytesMut::from(&buffered[..]));
            link.proxied = proxied.map(Box::new);
            link.stack = stack;
        }
        self.connect_here(id, connect);
        self.schedule_pass();
    }

    fn new_link(&mut self, fd: OwnedFd, listener: u16) -> LinkId {
        if let Some(entry) = self.sockets.listeners.get_mut(usize::from(listener)) {
            entry.stats.links += 1;
        }
        let serial = self.sockets.next_serial;
        self.sockets.next_serial = serial.wrapping_add(1);
        let slot = self.sockets.links.insert(Link {
            fd,
            serial,
            tail: Tail::default(),
            phase: Phase::Handshake,
            recv: Recv::Idle,
            sending: false,
            extra: BytesMut::new(),
            queued: false,
            ended: false,
            held: false,
            awaiting_proxy: false,
            listener,
            last_rx_us: 0,
            proxied: None,
            stack: None,
        });
        LinkId { slot: slot as u32, serial }
    }

    fn accepted(&mut self, listener: usize, result: std::io::Result<OwnedFd>, more: bool) {
        let now_ms = self.now().ms;
        let Some(entry) = self.sockets.listeners.get_mut(listener).filter(|l| l.fd.is_some())
        else {
            // Stopped: the listener is gone, and so is what it accepted last.
            return;
        };
        if !more {
            entry.armed = false;
        }
        match result {
            Ok(fd) if entry.spec.links_max.is_some_and(|max| entry.stats.links >= max as u64) => {
                // Over the listener's max_connections: closed at once, as Mosquitto
                // does; the client sees the connection end before CONNACK.
                entry.stats.refused_full += 1;
                drop(fd);
            }
            Ok(fd) => {
                entry.stats.accepted += 1;
                let awaiting_proxy = entry.spec.proxy_protocol;
                let stack = match entry.spec.stack() {
                    Ok(stack) => stack,
                    Err(e) => {
                        warn!(listener = %entry.spec.name, "closing connection: {e}");
                        entry.stats.handshake_failures += 1;
                        return;
                    }
                };
                // MQTT traffic is small packets whose latency matters; Nagle only
                // delays them.
                if let Err(e) = socket2::SockRef::from(&fd).set_nodelay(true) {
                    debug!("set_nodelay: {e}");
                }
                let id = self.new_link(fd, listener as u16);
                if let Some(link) = self.sockets.link(id) {
                    link.awaiting_proxy = awaiting_proxy;
                    link.stack = stack;
                }
                let deadline = now_ms + self.config.connect_timeout.as_millis() as u64;
                self.sockets.deadlines.push_back((deadline, id));
                self.sockets.read(id);
            }
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {}
            Err(e) => {
                warn!("accept failed: {e}");
                entry.paused_until_ms = Some(now_ms + ACCEPT_BACKOFF_MS);
            }
        }
        // Over accept_rate_max: leave connections in the listen backlog a while.
        let wait = self.sockets.accept_bucket.as_mut().and_then(|b| b.take(1, now_ms));
        if let Some(wait) = wait {
            self.accept_rate_limited += 1;
            for (index, listener) in self.sockets.listeners.iter_mut().enumerate() {
                listener.paused_until_ms = Some(now_ms + wait);
                if listener.armed {
                    listener.armed = false;
                    self.sockets.ring.cancel_accept(index);
                }
            }
        }
        self.sockets.arm_listeners(now_ms);
    }

    fn received(&mut self, id: LinkId, result: std::io::Result<BytesMut>, more: bool) {
        let Some(link) = self.sockets.link(id) else { return };
        if !more {
            link.recv = Recv::Idle;
        }
        match result {
            Ok(bytes) if bytes.is_empty() => link.ended = true,
            Ok(bytes) => self.feed(id, bytes),
            Err(e) => match e.raw_os_error() {
                // Cancelled by us, or no provided buffer was free: read again once the
                // link is processed (and not held).
                Some(libc::ECANCELED) | Some(libc::ENOBUFS) => {}
                _ => link.ended = true,
            },
        }
        self.sockets.queue(id);
    }

    /// Bytes from the socket into the link's tail: through its layers, if any
    /// (not before a PROXY header, which precedes TLS). What the layers answer
    /// themselves (handshakes, pongs) goes out at once.
    fn feed(&mut self, id: LinkId, bytes: BytesMut) {
        let Some(link) = self.sockets.link(id) else { return };
        if link.awaiting_proxy || link.stack.is_none() {
            link.tail.push(bytes);
            return;
        }
        let stack = link.stack.as_mut().expect("checked above");
        let (mut app, mut wire) = (BytesMut::new(), BytesMut::new());
        let result = stack.input(&bytes, &mut app, &mut wire);
        let (closed, ready) = (stack.peer_closed(), stack.ready());
        if !app.is_empty() {
            link.tail.push(app);
        }
        if closed {
            link.ended = true;
        }
        if let Err(e) = result {
            debug!(peer = ?client_addr(link), "closing connection: {e}");
            link.ended = true;
            if !ready {
                if let Some(stats) = self.sockets.listener_stats_mut(id) {
                    stats.handshake_failures += 1;
                }
            }
        }
        if !wire.is_empty() {
            self.sockets.send_extra(id, wire);
        }
    }

    /// Processes the input of every queued link.
    fn process_pending(&mut self) {
        // One clock read for the batch: it is processed within one turn.
        let now = self.now();
        while let Some(id) = self.sockets.pending.pop() {
            let Some(link) = self.sockets.link(id) else { continue };
            link.queued = false;
            match link.phase {
                Phase::Handshake => self.process_handshake(id),
                // Input waits for the verdict, or for the owner shard.
                Phase::Verifying | Phase::Claiming(_) | Phase::HandingOff(_) => {}
                Phase::Auth(_) => self.process_auth(id),
                Phase::Connected(conn) => self.process_connected(now, id, conn),
                Phase::Closing => self.sockets.free_if_done(id),
            }
        }
    }

    fn process_connected(&mut self, now: super::core::Now, id: LinkId, conn: ConnId) {
        let link = self.sockets.link(id).expect("queued link is live");
        let held = if link.tail.is_empty() {
            Held::No
        } else {
            self.core.handle_input(now, conn, link.tail.bytes())
        };
        self.schedule_pass();
        let link = self.sockets.link(id).expect("queued link is live");
        link.held = !matches!(held, Held::No | Held::Closing);
        match held {
            Held::No => {
                link.tail.settle();
                if link.ended {
                    self.core.close(conn, Close::Io);
                } else {
                    self.sockets.read(id);
                }
            }
            // Released (and woken) when the other shards acknowledge the routes.
            Held::SubAck => self.sockets.stop_reading(id),
            Held::RateLimited(until_ms) => {
                self.sockets.stop_reading(id);
                self.sockets.rate_paused.push((until_ms, id));
            }
            // A ring is full or a subscriber is behind: read nothing more from this
            // publisher until the gate opens. Output still flows.
            Held::Backpressure => {
                self.sockets.stop_reading(id);
                self.sockets.paused.push(id);
            }
            // The core decided to close: the pass wakes it and closes it then.
            Held::Closing => {}
        }
    }
}

fn connack(reason: ReasonCode, protocol: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    let connack = ConnAck { session_present: false, reason, properties: Props::default() };
    codec::encode(&Packet::ConnAck(connack), protocol, &mut out);
    out
}

/// The socket's peer address, for a log line.
fn peer(fd: &OwnedFd) -> Option<SocketAddr> {
    socket2::SockRef::from(fd).peer_addr().ok().and_then(|a| a.as_socket())
}

/// The client's address: the one a PROXY header named, else the socket's peer.
fn client_addr(link: &Link) -> Option<SocketAddr> {
    link.proxied.as_deref().copied().or_else(|| peer(&link.fd))
}

fn log_close(client_id: &str, close: &Close) {
    match close {
        Close::Violation(v) => warn!(client_id, "closing connection: {v}"),
        Close::Malformed(e) => warn!(client_id, "closing connection: {e}"),
        Close::Limit(limit) => warn!(client_id, "closing connection: over {limit}"),
        Close::KeepAliveTimeout => {
            info!(client_id, "closing connection: keep-alive timeout [MQTT-3.1.2-24]");
        }
        other => debug!(client_id, reason = ?other, "disconnected"),
    }
}

fn kind(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}

#[cfg(test)]
mod tests {
    use super::{give_back_room, VecDeque, DEADLINES_SPARE_MIN};

    #[test]
    fn deadlines_give_back_the_room_of_a_storm() {
        let mut queue: VecDeque<u64> = (0..40_000).collect();
        give_back_room(&mut queue);
        assert!(queue.capacity() >= 40_000, "full: kept");
        queue.drain(..30_000);
        give_back_room(&mut queue);
        assert!(queue.capacity() >= 40_000, "over a quarter full: kept");
        queue.drain(..2_000);
        give_back_room(&mut queue);
        assert!(queue.capacity() < 40_000 / 2, "under a quarter full: halved at least");
        assert!(queue.iter().copied().eq(32_000..40_000), "nothing lost, order kept");
        queue.clear();
        give_back_room(&mut queue);
        assert!(queue.capacity() >= DEADLINES_SPARE_MIN, "room kept for the next handshakes");
        assert!(queue.capacity() < 2 * DEADLINES_SPARE_MIN);
    }
}
