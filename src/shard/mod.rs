//! Shards: one pinned glommio executor per core, each owning a disjoint set of client
//! sessions, a replica of the route table and a partition of the retained messages.
//!
//! The MQTT behaviour of a shard is its [`core::Core`], a sans-IO state machine.
//! Everything here is the IO layer around it, and (with `net`) the only code that
//! knows glommio: sockets, rings, timers, tasks.
//!
//! Client sockets and listeners go through the shard's own io_uring ring
//! (`uring`), not through glommio: one multishot receive per connection into a
//! shared ring of provided buffers, sends submitted together once per pass. A
//! connection is a `Link` in `sockets`, not a task.
//!
//! Tasks of one shard: the reaper (woken by the park hook when the socket ring has
//! completions, feeds what arrived to the core), a receiver per peer and mesh, a
//! drain task per mesh for overflowed batches, the pass task, and a tick that drives
//! the core's timer wheel and watches for shutdown. The shard sleeps in its socket
//! ring: glommio calls the park hook (`Park`) instead of sleeping in its own.
//!
//! A pass is one executor turn: tasks feed the core and ask for the pass
//! ([`Shard::schedule_pass`]); the pass task, queued behind every task already
//! runnable in this turn, runs once: it cuts and sends every ring batch, queues a
//! send for every connection with output, submits them with one `io_uring_enter`,
//! and sets the gates.

mod cluster;
mod coalesce;
pub(crate) mod core;
mod heap;
pub(crate) mod log;
mod mesh;
mod notify;
mod observe;
mod pool;
mod reload;
mod sockets;
mod uring;

use std::cell::RefCell;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::os::unix::io::FromRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytestring::ByteString;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::net::TcpListener;
use glommio::{spawn_local, yield_if_needed};
use tracing::error;

use crate::config::Config;
use crate::hooks::Hooks;
pub use crate::metrics::ShardStats;
pub(crate) use reload::Reload;

use self::core::rate::TokenBucket;
use self::core::timers::TICK_MS;
pub(crate) use self::core::{ApiPublish, CtrlMsg, DataMsg};
use self::core::{Core, CoreConfig, Now};
pub(crate) use cluster::{ClusterSockets, LINK_SOCKET_BUFFER};
use mesh::Outbox;
use notify::{Gate, Latch, Notify};
use observe::SysState;
use sockets::{ListenerSpec, Sockets};
use uring::Ring;

/// Creates (and drops) a socket ring as the shards make them, to fail at start-up
/// with the reason when the kernel cannot.
pub(crate) fn probe_socket_ring() -> std::io::Result<()> {
    Ring::new(8, 8, 64).map(drop)
}

/// The listening sockets of every shard, taken by each shard at start-up.
pub(crate) type ListenerFds = Arc<Mutex<Vec<Vec<OwnedFd>>>>;

/// Messages from the embedding program, per shard (taken at start-up).
pub(crate) type ApiReceivers = Arc<Mutex<Vec<Option<crossbeam_channel::Receiver<ApiPublish>>>>>;

/// Everything a shard needs to start; cloned into every executor.
#[derive(Clone, Debug)]
pub(crate) struct ShardContext {
    pub config: Arc<Config>,
    pub hooks: Arc<Hooks>,
    pub api: ApiReceivers,
    pub data_mesh: MeshBuilder<Vec<DataMsg>, Full>,
    pub ctrl_mesh: MeshBuilder<Vec<CtrlMsg>, Full>,
    pub listeners: ListenerFds,
    /// The Prometheus listener, for shard 0.
    pub metrics: Arc<Mutex<Option<OwnedFd>>>,
    pub stop: Arc<AtomicBool>,
    /// Set to reload the password file, the ACL and the certificates (shard 0
    /// watches it).
    pub reload: Arc<AtomicBool>,
    /// What the files held at start-up, each shard taking its own copy.
    pub loaded: Arc<Reload>,
    /// The cluster's sockets, for shard 0 (`None`: a single node).
    pub cluster: Arc<Mutex<Option<ClusterSockets>>>,
    /// The data directory's state and the start-up handshake (`None`: nothing
    /// durable).
    pub durable: Option<Arc<log::Durable>>,
}

/// The settings of the core, resolved from the broker's: this shard's shares of
/// the node-wide limits, typed options for the 0-means-off settings.
fn core_config(config: &Config, shards: usize) -> CoreConfig {
    let per_shard = |total: u64| total.div_ceil(shards as u64);
    CoreConfig {
        node_id: config.node_id,
        ring_batch_max: config.ring_batch_max.get(),
        ring_overflow_max: config.ring_overflow_max.get(),
        out_buffer_max_bytes: config.out_buffer_max_bytes.get(),
        packet_size_max: config.packet_size_max,
        session_expiry_max_secs: config.session_expiry.map(|d| d.as_secs()),
        receive_maximum: config.receive_maximum.get(),
        topic_alias_max: config.topic_alias_max,
        keep_alive_max_secs: config.keep_alive_max_secs.map(std::num::NonZeroU16::get),
        shared_strategy: config.shared_subscription_strategy.into(),
        retry_interval_secs: config.retry_interval.map(|d| d.as_secs().max(1)),
        topic_length_max: config.topic_length_max.get(),
        topic_levels_max: config.topic_levels_max.get(),
        subscriptions_max: config.subscriptions_max.get(),
        publish_rate_max: config.publish_rate_max.map(std::num::NonZeroU64::get),
        publish_bytes_rate_max: config.publish_bytes_rate_max.map(std::num::NonZeroU64::get),
        connections_max: per_shard(config.connections_max_effective() as u64),
        retained_max: config.retained_max.get().div_ceil(shards),
        retained_bytes_max: per_shard(config.retained_bytes_max_effective()),
        queued_bytes_max: per_shard(config.queued_bytes_max_effective()),
        session: config.session_limits(),
        login_failures_max: config.login_failures_max,
        mount_points: config
            .listeners_effective()
            .into_iter()
            .map(|listener| listener.mount_point.map(ByteString::from))
            .collect(),
        cluster: config.cluster_listen.is_some(),
        quorum: config.cluster_quorum.is_some_and(|q| q.get() > 1),
    }
}

/// One shard: its core and the IO state around it. Reached through
/// `Rc<RefCell<Shard>>` by the shard's tasks, which borrow it only between awaits,
/// never across one.
pub(crate) struct Shard {
    pub core: Core,
    pub config: Arc<Config>,
    /// The origin of [`Now::ms`].
    started: Instant,
    data_out: Outbox<DataMsg>,
    ctrl_out: Outbox<CtrlMsg>,
    /// Every client socket and listener of the shard, and their ring.
    sockets: Sockets,
    /// Closed while the core stops taking data batches (mirrors
    /// [`Core::rings_paused`]).
    pub rings_gate: Rc<Gate>,
    /// Closed while the node links this shard reads must wait (mirrors
    /// [`Core::links_paused`]).
    links_gate: Rc<Gate>,
    /// Wakes the pass task.
    pass: Rc<Notify>,
    /// Wakes the reaper: the socket ring has something to reap.
    reaper: Rc<Notify>,
    pass_scheduled: bool,
    /// Where received bytes are gathered.
    pool: pool::ReadPool,
    /// Set at shutdown; long-lived tasks end when it is.
    pub stopped: Rc<Latch>,
    /// `$SYS`, alarms and metrics: shard 0 only.
    pub sys: Option<SysState>,
    /// Worst tick lateness since the last snapshot, in microseconds.
    lag_max_us: u64,
    /// Connection hand-offs sent and received (the core never sees them).
    pub handoffs_out: u64,
    pub handoffs_in: u64,
    /// Handshakes that did not send CONNECT in time, or broke the protocol
    /// before it.
    pub connect_timeouts: u64,
    pub early_protocol_errors: u64,
    pub accept_rate_limited: u64,
    /// Slow password verifications in flight on the blocking pool.
    verifying: usize,
    /// The shard itself, for tasks a synchronous path spawns (a verification).
    me: std::rc::Weak<RefCell<Shard>>,
    /// Shard 0 of a cluster node: membership and node links.
    cluster: Option<cluster::ClusterIo>,
    /// Connections whose client id is being claimed from the other nodes.
    claims: sockets::Claims,
    /// The shard's log, when it keeps one (`--data-dir`).
    log: Option<log::LogState>,
    /// Data batches taken from the rings (a stopping shard waits for quiet).
    data_batches_taken: u64,
    /// Whether arrivals are taken once per `recv_coalesce_us` (under a flood).
    coalesce: coalesce::Coalesce,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("core", &self.core).finish()
    }
}

impl Shard {
    /// The time, for the core: read at every input, so a pass never runs on a
    /// stale clock (a vDSO read, tens of nanoseconds).
    /// Microseconds since the shard started: receive coalescing's clock, read
    /// only when `recv_coalesce_us` is set.
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Receive coalescing decides on or off from what the shard received (its QoS 0
    /// PUBLISH packets), once a window has passed.
    fn review_coalescing(&mut self, now_us: u64) {
        self.coalesce.review(now_us, self.core.stats.messages_in[0]);
    }

    /// Holds the socket ring's arrivals while receive coalescing is on and its wait
    /// is not over; returns how long they are still held. Once it is over, the
    /// arrivals are let through and the next wait starts.
    fn hold_arrivals(&mut self) -> Option<Duration> {
        if !self.coalesce.is_on() {
            self.sockets.ring.hold_arrivals(false);
            return None;
        }
        let now = self.now_us();
        let wait = self.coalesce.hold_for(now);
        if wait.is_none() {
            self.coalesce.taken(now);
        }
        self.sockets.ring.hold_arrivals(wait.is_some());
        wait
    }

    pub fn now(&self) -> Now {
        let unix_us =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        Now { ms: self.started.elapsed().as_millis() as u64, unix_us }
    }

    /// Asks for the end of the pass: once per executor turn, after every task
    /// already runnable.
    pub fn schedule_pass(&mut self) {
        if !self.pass_scheduled {
            self.pass_scheduled = true;
            self.pass.notify();
        }
    }

    /// The end of a pass: send every ring batch, send every connection's output,
    /// set the gates.
    fn end_pass(&mut self) {
        self.pass_scheduled = false;
        let now = self.now();
        self.core.end_pass(now);
        while let Some(batch) = self.core.poll_batch() {
            match batch {
                core::messages::Batch::Data(dest, batch) => self.data_out.send(dest, batch),
                core::messages::Batch::Ctrl(dest, batch) => self.ctrl_out.send(dest, batch),
            }
        }
        self.core.set_ring_overflow(self.data_out.overflow_len() + self.ctrl_out.overflow_len());
        self.end_pass_cluster();
        self.end_pass_log();
        self.end_pass_sockets();
        self.sync_gates();
    }

    /// Mirrors the core's ring gate into the one the ring receivers wait on.
    fn sync_gates(&self) {
        set_gate(&self.rings_gate, self.core.rings_paused());
        set_gate(&self.links_gate, self.core.links_paused());
    }

    /// Takes the reloaded credentials (and certificates) for new connections.
    fn apply_reload(&mut self, reload: Reload) {
        self.core.set_security(reload.passwords, reload.acl);
        self.sockets.set_tls(reload.tls);
    }

    /// This shard's figures, with the IO layer's own.
    fn snapshot(&mut self) -> crate::metrics::ShardSnapshot {
        let mut snapshot = self.core.snapshot();
        snapshot.stats.handoffs_out += self.handoffs_out;
        snapshot.stats.handoffs_in += self.handoffs_in;
        snapshot.stats.connect_timeouts += self.connect_timeouts;
        snapshot.stats.protocol_errors += self.early_protocol_errors;
        snapshot.stats.limit_accept_rate += self.accept_rate_limited;
        snapshot.ring_batches_sent = self.data_out.batches_sent + self.ctrl_out.batches_sent;
        snapshot.ring_batches_overflowed =
            self.data_out.batches_overflowed + self.ctrl_out.batches_overflowed;
        snapshot.ring_overflow_now =
            (self.data_out.overflow_len() + self.ctrl_out.overflow_len()) as u64;
        let ring = self.sockets.ring.stats;
        snapshot.socket_enters = ring.enters;
        snapshot.socket_parks = ring.parks;
        snapshot.socket_receives = ring.recv_completions;
        snapshot.socket_buffers_exhausted = ring.buffers_exhausted;
        snapshot.socket_coalesce_on = self.coalesce.stats.switched_on;
        snapshot.socket_coalesced_waits = self.coalesce.stats.waits;
        snapshot.socket_coalescing = u64::from(self.coalesce.is_on());
        snapshot.socket_closes_forced = self.sockets.closes_forced;
        snapshot.listeners = self.sockets.listener_stats();
        snapshot.lag_max_us = self.lag_max_us;
        self.lag_max_us = 0;
        snapshot.log = self.log.as_ref().map(|log| {
            let journal = self.core.journal_stats().unwrap_or_default();
            log.snapshot(journal, self.core.log_is_full())
        });
        snapshot
    }
}

fn set_gate(gate: &Gate, closed: bool) {
    if closed && !gate.is_closed() {
        gate.close();
    } else if !closed && gate.is_closed() {
        gate.open();
    }
}

type ShardRc = Rc<RefCell<Shard>>;

/// What one shard's IO layer sends another's, through the core's control ring.
#[derive(Debug)]
enum IoMsg {
    /// A connection whose CONNECT arrived here, for the shard owning its client id.
    Handoff(sockets::Handoff),
    /// Reloaded credentials and certificates, from shard 0.
    Reload(Reload),
    /// A claim of a client id across the cluster, or its answer.
    Claim(sockets::ClaimMsg),
}

/// Runs one shard until the broker stops.
pub(crate) async fn run(ctx: ShardContext) {
    let shards = ctx.data_mesh.nr_peers();
    let Ok((data_tx, mut data_rx)) = ctx.data_mesh.join().await else {
        error!("cannot join the data mesh");
        return;
    };
    let Ok((ctrl_tx, mut ctrl_rx)) = ctx.ctrl_mesh.join().await else {
        error!("cannot join the control mesh");
        return;
    };
    let id = data_tx.peer_id();
    assert_eq!(id, ctrl_tx.peer_id(), "both meshes are joined in the same order");
    let started = Instant::now();
    let ring = match Ring::new(
        sockets::RING_ENTRIES,
        ctx.config.recv_buffers.get(),
        sockets::RECV_BUFFER_BYTES,
    ) {
        Ok(ring) => ring,
        Err(e) => {
            // The start-up probe made one: only a resource limit gets here.
            error!("shard {id}: cannot create its socket ring: {e}");
            ctx.stop.store(true, Ordering::Release);
            return;
        }
    };
    let listeners = {
        let mut all = ctx.listeners.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::take(&mut all[id])
    };
    let accept_bucket = ctx.config.accept_rate_max.map(|rate| {
        // `accept_rate_max` per shard, on the shard's clock (which starts at 0).
        TokenBucket::new(rate.get().div_ceil(shards as u64), 0)
    });
    let specs = ctx.config.listeners_effective();
    let listeners = listeners
        .into_iter()
        .zip(&specs)
        .map(|(fd, listener)| (fd, ListenerSpec::new(&ctx.config, listener, shards)))
        .collect();
    let sockets = Sockets::new(ring, listeners, accept_bucket);
    let mut shard = Shard {
        core: Core::new(
            id,
            shards,
            core_config(&ctx.config, shards),
            Arc::clone(&ctx.hooks),
            Now::default(),
        ),
        config: Arc::clone(&ctx.config),
        started,
        data_out: Outbox::new(Rc::new(data_tx)),
        ctrl_out: Outbox::new(Rc::new(ctrl_tx)),
        sockets,
        rings_gate: Rc::new(Gate::default()),
        links_gate: Rc::new(Gate::default()),
        pass: Rc::new(Notify::default()),
        reaper: Rc::new(Notify::default()),
        pass_scheduled: false,
        pool: pool::ReadPool::new(ctx.config.read_buffer_bytes.get()),
        stopped: Rc::new(Latch::default()),
        sys: (id == 0).then(|| SysState::new(&ctx.config, shards)),
        lag_max_us: 0,
        handoffs_out: 0,
        handoffs_in: 0,
        connect_timeouts: 0,
        early_protocol_errors: 0,
        accept_rate_limited: 0,
        verifying: 0,
        me: std::rc::Weak::new(),
        cluster: None,
        claims: sockets::Claims::default(),
        log: None,
        data_batches_taken: 0,
        coalesce: coalesce::Coalesce::new(ctx.config.recv_coalesce),
    };
    let cluster_sockets = match id {
        0 => ctx.cluster.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take(),
        _ => None,
    };
    if let Some(sockets) = &cluster_sockets {
        let boot = shard.now().unix_us;
        shard.cluster = Some(cluster::ClusterIo::new(&ctx.config, sockets, boot));
    }
    shard.apply_reload(Reload::clone(&ctx.loaded));
    // The core starts on the same clock the shard reads from now on.
    let now = shard.now();
    shard.core.handle_tick(now);
    let shard = Rc::new(RefCell::new(shard));
    shard.borrow_mut().me = Rc::downgrade(&shard);

    spawn_local(passes(Rc::clone(&shard))).detach();
    for (from, receiver) in data_rx.streams() {
        spawn_local(receive_data(Rc::clone(&shard), from, receiver)).detach();
    }
    for (_, receiver) in ctrl_rx.streams() {
        spawn_local(receive_ctrl(Rc::clone(&shard), receiver)).detach();
    }
    spawn_local(drain_data(Rc::clone(&shard))).detach();
    spawn_local(drain_ctrl(Rc::clone(&shard))).detach();
    spawn_local(reap(Rc::clone(&shard))).detach();
    let reaper = Rc::clone(&shard.borrow().reaper);
    glommio::park::set_park_hook(Some(Rc::new(Park { shard: Rc::downgrade(&shard), reaper })));
    if let Some(durable) = &ctx.durable {
        if !log::start(&shard, durable).await {
            error!("shard {id}: cannot start its durable log; stopping");
            ctx.stop.store(true, Ordering::Release);
        }
    }
    shard.borrow_mut().start_sockets();
    if let Some(sockets) = cluster_sockets {
        cluster::start(&shard, sockets);
    }

    if id == 0 {
        let metrics = ctx.metrics.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(fd) = metrics {
            // SAFETY: a listening TCP socket that shard 0 alone owns from here on.
            let listener = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
            let shard = Rc::clone(&shard);
            spawn_local(async move {
                let metrics = observe::serve_metrics(Rc::clone(&shard), listener);
                until_stopped(&shard, metrics).await;
            })
            .detach();
        }
    }
    let api = ctx.api.lock().unwrap_or_else(|poisoned| poisoned.into_inner())[id].take();
    if let Some(api) = api {
        spawn_local(receive_api(Rc::clone(&shard), api)).detach();
    }

    tick_until_stopped(&shard, &ctx.stop, &ctx.reload).await;
    log::finish(&shard).await;
    glommio::park::set_park_hook(None);
    let s = shard.borrow();
    s.data_out.close();
    s.ctrl_out.close();
}

/// The pass task: one end of pass per executor turn in which anything happened.
async fn passes(shard: ShardRc) {
    let (pass, stopped) = {
        let s = shard.borrow();
        (Rc::clone(&s.pass), Rc::clone(&s.stopped))
    };
    let work = async {
        loop {
            pass.notified().await;
            shard.borrow_mut().end_pass();
        }
    };
    futures_lite::future::or(work, stopped.wait()).await;
}

/// Runs `work` until it ends or the shard stops, whichever comes first.
async fn until_stopped(shard: &ShardRc, work: impl std::future::Future<Output = ()>) {
    let stopped = Rc::clone(&shard.borrow().stopped);
    futures_lite::future::or(work, stopped.wait()).await;
}

/// The shard's park hook: the executor sleeps in the socket ring, which is the
/// only place an arrival wakes a shard (`uring`: the ring defers its task work),
/// and glommio's own rings are watched from there.
struct Park {
    shard: std::rc::Weak<RefCell<Shard>>,
    reaper: Rc<Notify>,
}

impl Park {
    /// Wakes the reaper if the ring has anything; whether it did.
    fn wake_reaper(&self, shard: &mut Shard) -> bool {
        let ready = shard.sockets.ring.ready();
        if ready {
            self.reaper.notify();
        }
        ready
    }
}

impl glommio::park::ParkHook for Park {
    fn poll(&self) -> usize {
        let Some(shard) = self.shard.upgrade() else { return 0 };
        // The executor polls between tasks, never inside one: a borrow that fails
        // means nothing to do here.
        let Ok(mut shard) = shard.try_borrow_mut() else { return 0 };
        shard.hold_arrivals();
        usize::from(self.wake_reaper(&mut shard))
    }

    fn sleep(&self, rings: &[std::os::fd::RawFd]) {
        let Some(shard) = self.shard.upgrade() else { return };
        let Ok(mut shard) = shard.try_borrow_mut() else { return };
        let wait = shard.hold_arrivals();
        if !self.wake_reaper(&mut shard) {
            if wait.is_some() {
                shard.coalesce.stats.waits += 1;
            }
            shard.sockets.ring.park(rings, wait);
            if wait.is_some() {
                let now = shard.now_us();
                shard.coalesce.taken(now);
            }
            self.wake_reaper(&mut shard);
        }
    }
}

/// The reaper: woken by the park hook when the socket ring has completions, feeds
/// them to the core.
async fn reap(shard: ShardRc) {
    let reaper = Rc::clone(&shard.borrow().reaper);
    until_stopped(&shard.clone(), async move {
        loop {
            reaper.notified().await;
            // A flood leaves completions after every slice: let the pass send what
            // the slice produced, then take the next.
            while shard.borrow_mut().reap() {
                futures_lite::future::yield_now().await;
            }
        }
    })
    .await;
}

async fn receive_data(shard: ShardRc, from: usize, receiver: ConnectedReceiver<Vec<DataMsg>>) {
    until_stopped(&shard.clone(), receive_data_forever(shard, from, receiver)).await;
}

async fn receive_data_forever(
    shard: ShardRc,
    from: usize,
    receiver: ConnectedReceiver<Vec<DataMsg>>,
) {
    let gate = Rc::clone(&shard.borrow().rings_gate);
    loop {
        // A local subscriber is behind: leave the messages in the ring, so that the
        // shards publishing them feel it (their overflow grows and pauses their
        // publishers) instead of this shard queueing and dropping.
        gate.wait_open().await;
        let Some(batch) = receiver.recv().await else { return };
        {
            let mut s = shard.borrow_mut();
            let now = s.now();
            for msg in batch {
                s.core.handle_data(now, msg);
            }
            s.core.data_batch_taken(from);
            s.data_batches_taken += 1;
            // Close the gate before the next batch if this one backed a
            // subscriber up, not at the end of the pass.
            s.core.refresh_gates(now);
            s.sync_gates();
            s.schedule_pass();
        }
        yield_if_needed().await;
    }
}

async fn receive_ctrl(shard: ShardRc, receiver: ConnectedReceiver<Vec<CtrlMsg>>) {
    until_stopped(&shard.clone(), receive_ctrl_forever(shard, receiver)).await;
}

async fn receive_ctrl_forever(shard: ShardRc, receiver: ConnectedReceiver<Vec<CtrlMsg>>) {
    while let Some(batch) = receiver.recv().await {
        {
            let mut s = shard.borrow_mut();
            let now = s.now();
            for msg in batch {
                match msg {
                    CtrlMsg::Io(payload) => match payload.downcast::<IoMsg>().map(|m| *m) {
                        Ok(IoMsg::Handoff(handoff)) => s.adopt(handoff),
                        Ok(IoMsg::Reload(reload)) => s.apply_reload(reload),
                        Ok(IoMsg::Claim(msg)) => s.handle_claim_msg(msg),
                        Err(_) => debug_assert!(false, "a control message of another layer"),
                    },
                    CtrlMsg::Stats(snapshot) => {
                        if let Some(sys) = s.sys.as_mut() {
                            sys.record(*snapshot);
                        }
                    }
                    other => s.core.handle_ctrl(now, other),
                }
            }
            s.schedule_pass();
        }
        yield_if_needed().await;
    }
}

/// Messages published by the embedding program. Waiting on a blocking channel
/// happens on glommio's blocking-thread pool, never on the shard's thread.
async fn receive_api(shard: ShardRc, receiver: crossbeam_channel::Receiver<ApiPublish>) {
    let batch_max = shard.borrow().config.ring_batch_max.get();
    loop {
        let rx = receiver.clone();
        let batch = glommio::executor()
            .spawn_blocking(move || {
                let first = rx.recv().ok()?;
                let mut batch = vec![first];
                batch.extend(rx.try_iter().take(batch_max - 1));
                Some(batch)
            })
            .await;
        // `None`: the broker handle is gone or shutting down.
        let Some(batch) = batch else { return };
        let mut s = shard.borrow_mut();
        let now = s.now();
        for publish in batch {
            s.core.handle_api_publish(now, publish);
        }
        s.schedule_pass();
    }
}

/// Sends overflowed data batches as ring slots free up, in order.
async fn drain_data(shard: ShardRc) {
    let signal = Rc::clone(&shard.borrow().data_out.overflow_signal);
    until_stopped(&shard.clone(), async move {
        loop {
            signal.notified().await;
            drain(&shard, |s| &mut s.data_out).await;
        }
    })
    .await;
}

async fn drain_ctrl(shard: ShardRc) {
    let signal = Rc::clone(&shard.borrow().ctrl_out.overflow_signal);
    until_stopped(&shard.clone(), async move {
        loop {
            signal.notified().await;
            drain(&shard, |s| &mut s.ctrl_out).await;
        }
    })
    .await;
}

async fn drain<T: Send + 'static>(shard: &ShardRc, outbox: impl Fn(&mut Shard) -> &mut Outbox<T>) {
    loop {
        let next = {
            let mut s = shard.borrow_mut();
            let out = outbox(&mut s);
            out.take_overflow().map(|(dest, batch)| (dest, batch, out.senders()))
        };
        let Some((dest, batch, senders)) = next else { return };
        // Waits for room; an error means the destination shut down.
        let _ = senders.send_to(dest, batch).await;
        let mut s = shard.borrow_mut();
        outbox(&mut s).drained(dest);
        s.schedule_pass();
    }
}

async fn tick_until_stopped(shard: &ShardRc, stop: &AtomicBool, reload: &AtomicBool) {
    let period = Duration::from_millis(TICK_MS);
    let mut ticks: u64 = 0;
    let reloads = shard.borrow().core.id == 0;
    while !stop.load(Ordering::Acquire) {
        if reloads && reload.swap(false, Ordering::AcqRel) {
            reload::start(shard);
        }
        let asleep = Instant::now();
        glommio::timer::sleep(period).await;
        // How late the timer fired: the time ready work waits for this event loop.
        let late = asleep.elapsed().saturating_sub(period);
        let mut s = shard.borrow_mut();
        s.lag_max_us = s.lag_max_us.max(late.as_micros() as u64);
        let now = s.now();
        s.core.handle_tick(now);
        s.tick_sockets();
        s.reconcile_recovered();
        let rejoined = s.tick_cluster();
        ticks += 1;
        if ticks.is_multiple_of(1000 / TICK_MS) {
            observe::every_second(&mut s);
        }
        s.schedule_pass();
        drop(s);
        if rejoined {
            cluster::drive(shard);
        }
    }
    cluster::leave(shard);
    {
        let mut s = shard.borrow_mut();
        s.core.close_all();
        s.stop_sockets();
        s.end_pass();
    }
    // Give connections a moment to flush and close before the executor drops them.
    for _ in 0..50 {
        if shard.borrow().sockets.links() == 0 {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // With a log, what other shards acknowledged and sent here must reach it:
    // take ring batches until none came for a while (every shard stopped its
    // clients within a tick), at most a few seconds.
    if shard.borrow().log.is_some() {
        let started = Instant::now();
        let mut seen = shard.borrow().data_batches_taken;
        while started.elapsed() < Duration::from_secs(5) {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            let (taken, overflow) = {
                let s = shard.borrow();
                (s.data_batches_taken, s.data_out.overflow_len())
            };
            if taken == seen && overflow == 0 {
                break;
            }
            seen = taken;
        }
        shard.borrow_mut().end_pass();
    }
    // End the long-lived tasks: listeners close, rings are released.
    let stopped = Rc::clone(&shard.borrow().stopped);
    stopped.set();
    glommio::timer::sleep(Duration::from_millis(10)).await;
}
