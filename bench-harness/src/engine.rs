//! The run: plan, generator executors (one pinned glommio executor per core),
//! and the main-thread monitor that keeps time, samples the broker and draws
//! the progress line.

use anyhow::{anyhow, bail, Context as _};
use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::io::{IsTerminal, Write as _};
use std::rc::Rc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::{Common, Fleet, WriteMode};
use crate::client::{self, PubResult, PubSpec};
use crate::hosts::{self, Client, Feeds, Host, Placement};
use crate::net::{with_timeout, Conn, ConnectOpts, Events};
use crate::payload::HEADER_LEN;
use crate::schedule::Schedule;
use crate::stats::{new_histogram, Tally};
use crate::sys::{self, mono_ns};
use crate::transport::Transport;

/// The scenario being run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    FanIn,
    FanOut,
    Pairs,
    Conn,
    Idle,
    Connections,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::FanIn => "fan-in",
            Kind::FanOut => "fan-out",
            Kind::Pairs => "pairs",
            Kind::Conn => "conn",
            Kind::Idle => "idle",
            Kind::Connections => "connections",
        }
    }
    pub fn is_pubsub(self) -> bool {
        matches!(self, Kind::FanIn | Kind::FanOut | Kind::Pairs)
    }
}

/// Everything decided before the run starts. Immutable, shared by all cores.
#[derive(Debug)]
pub struct Plan {
    pub kind: Kind,
    pub wildcard: bool,
    pub hold: bool,
    /// conn: attempts in flight per core.
    pub concurrency: usize,
    pub c: Common,
    /// connections: trickle, reconnect storm.
    pub fleet: Fleet,
    pub publishers: u32,
    pub subscribers: u32,
    pub topics: u32,
    /// conn: cap on attempts (0 = none); idle, connections: connections to hold.
    pub connections: u32,
    /// The brokers, in `--host` order, each with its TLS and WebSocket
    /// settings, loaded once (certificates, keys).
    pub hosts: Vec<(Host, Arc<Transport>)>,
    /// Which host each client connects to.
    pub placement: Placement,
    pub cpus: Vec<usize>,
    pub run_id: String,
    pub topic_names: Vec<String>,
    pub case: String,
    pub warmup_ns: u64,
    pub duration_ns: u64,
    pub drain_ns: u64,
    /// connections with a reconnect storm: from the storm's end to the last
    /// RSS sample.
    pub settle_ns: u64,
}

fn secs_ns(s: f64, what: &str) -> anyhow::Result<u64> {
    if !(s.is_finite() && s >= 0.0) {
        bail!("--{what} must be a non-negative number of seconds");
    }
    Ok((s * 1e9) as u64)
}

impl Plan {
    pub fn new(
        kind: Kind,
        c: Common,
        wildcard: bool,
        hold: bool,
        concurrency: usize,
        fleet: Fleet,
    ) -> anyhow::Result<Plan> {
        if c.payload < HEADER_LEN {
            bail!("--payload must be at least {HEADER_LEN} bytes (the message header)");
        }
        if c.payload > 64 << 20 {
            bail!("--payload above 64 MiB is not supported");
        }
        if c.inflight == 0 || c.inflight > 65_535 {
            bail!("--inflight must be 1..=65535");
        }
        let (publishers, subscribers, topics, connections) = match kind {
            Kind::FanIn => {
                let p = c.clients.unwrap_or(8);
                (p, c.subscribers.unwrap_or(1), c.topics.unwrap_or(p), 0)
            }
            Kind::FanOut => {
                (c.clients.unwrap_or(1), c.subscribers.unwrap_or(64), c.topics.unwrap_or(1), 0)
            }
            Kind::Pairs => {
                let p = c.clients.unwrap_or(8);
                if c.subscribers.is_some_and(|s| s != p) || c.topics.is_some_and(|t| t != p) {
                    bail!("pairs: --subscribers and --topics are always equal to --clients");
                }
                (p, p, p, 0)
            }
            Kind::Conn => (0, 0, 0, c.clients.unwrap_or(0)),
            Kind::Idle | Kind::Connections => (0, 0, 0, c.clients.unwrap_or(1000)),
        };
        if kind.is_pubsub() && (publishers == 0 || subscribers == 0 || topics == 0) {
            bail!("--clients, --subscribers and --topics must be at least 1");
        }
        if matches!(kind, Kind::Idle | Kind::Connections) && connections == 0 {
            bail!("{}: --clients must be at least 1", kind.name());
        }
        if !(fleet.trickle_per_min.is_finite() && fleet.trickle_per_min >= 0.0) {
            bail!("--trickle-per-min must be a non-negative number");
        }
        if kind == Kind::Conn && concurrency == 0 {
            bail!("conn: --concurrency must be at least 1");
        }
        if c.connect_concurrency == 0 {
            bail!("--connect-concurrency must be at least 1");
        }
        let hosts = hosts::resolve(&c.host, c.port)?
            .into_iter()
            .map(|h| Ok((h.clone(), Arc::new(Transport::from_flags(&c, &h)?))))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let placement = Placement {
            hosts: hosts.len(),
            subscribers,
            feeds: if kind == Kind::Pairs { Feeds::OwnPair } else { Feeds::Every },
        };
        let transport = hosts[0].1.name();
        let cpus = choose_cpus(c.cores, c.cpus.as_deref())?;
        let run_id =
            format!("{:x}", (mono_ns() ^ (std::process::id() as u64) << 40) & 0xff_ffff_ffff);
        let base = format!("{}/{}", c.topic_prefix, run_id);
        let topic_names = (0..topics).map(|t| format!("{base}/{t}")).collect();
        let case = c.case_name.clone().unwrap_or_else(|| {
            let mut s = match kind {
                Kind::Conn => "conn".to_string(),
                Kind::Idle => format!("idle {connections}"),
                Kind::Connections => {
                    let mut s = format!("connections {connections} qos{}", c.qos);
                    if fleet.trickle_per_min > 0.0 {
                        s.push_str(&format!(" {}/min", fleet.trickle_per_min));
                    }
                    if fleet.reconnect_storm {
                        s.push_str(" storm");
                    }
                    s
                }
                _ => format!("{} qos{} {}B", kind.name(), c.qos, c.payload),
            };
            if kind == Kind::FanIn && wildcard {
                s.push_str(" wildcard");
            }
            if kind.is_pubsub() && c.write_mode == WriteMode::Coalesced {
                s.push_str(" coalesced");
            }
            if transport != "tcp" {
                s.push(' ');
                s.push_str(transport);
            }
            if matches!(kind, Kind::Conn) || kind.is_pubsub() {
                if c.rate > 0 {
                    s.push_str(&format!(" @{}/s", c.rate));
                } else if kind == Kind::Conn {
                    s.push_str(" max");
                }
            }
            s
        });
        Ok(Plan {
            kind,
            wildcard,
            hold,
            concurrency,
            warmup_ns: secs_ns(c.warmup, "warmup")?,
            settle_ns: secs_ns(fleet.settle, "settle")?,
            fleet,
            duration_ns: secs_ns(c.duration, "duration")?.max(1_000_000),
            drain_ns: secs_ns(c.drain, "drain")?,
            c,
            publishers,
            subscribers,
            topics,
            connections,
            hosts,
            placement,
            cpus,
            run_id,
            topic_names,
            case,
        })
    }

    pub fn shards(&self) -> usize {
        self.cpus.len()
    }

    /// The measured window `[start + warmup, start + warmup + duration)`.
    pub fn window(&self, start_ns: u64) -> (u64, u64) {
        let ws = start_ns + self.warmup_ns;
        (ws, ws + self.duration_ns)
    }

    pub fn pub_topic(&self, i: u32) -> u32 {
        i % self.topics
    }

    /// The topic filters of subscriber `j`.
    pub fn sub_filters(&self, j: u32) -> Vec<String> {
        let base = format!("{}/{}", self.c.topic_prefix, self.run_id);
        match self.kind {
            Kind::Pairs => vec![self.topic_names[j as usize].clone()],
            Kind::FanIn if self.wildcard => {
                if j.is_multiple_of(2) {
                    vec![format!("{base}/+")]
                } else {
                    vec![format!("{base}/#")]
                }
            }
            _ => self.topic_names.clone(),
        }
    }

    /// Subscribers that receive what publisher `i` sends.
    pub fn fanout(&self, _i: u32) -> u64 {
        match self.kind {
            // Subscriber i subscribes to exactly topic i, publisher i's topic.
            Kind::Pairs => 1,
            // Every subscriber subscribes to every topic.
            _ => self.subscribers as u64,
        }
    }

    /// The command topic of device `idx` (connections): it subscribes to it,
    /// and its trickle goes there.
    pub fn device_topic(&self, idx: u32) -> String {
        format!("{}/{}/d/{idx}", self.c.topic_prefix, self.run_id)
    }

    pub fn client_id(&self, role: char, idx: u32) -> String {
        format!("{}-{}{}", self.c.client_id_prefix, role, idx)
    }

    /// `tcp`, `tls`, `ws` or `wss`, the same for every host.
    pub fn transport_name(&self) -> &'static str {
        self.hosts[0].1.name()
    }

    pub fn connect_opts(&self, client: Client) -> ConnectOpts {
        // Subscribers first (0..S), then publishers (S..S+P).
        let conn_index = match client {
            Client::Subscriber(j) => u64::from(j),
            Client::Publisher(i) => u64::from(self.subscribers) + u64::from(i),
            Client::Other(k) => k,
        };
        let (host, transport) = &self.hosts[self.placement.host(client)];
        let source = if self.c.source_addrs.is_empty() {
            None
        } else {
            Some(self.c.source_addrs[(conn_index % self.c.source_addrs.len() as u64) as usize])
        };
        ConnectOpts {
            broker: host.addr,
            source,
            clean_session: self.c.clean_session,
            keepalive: self.c.keepalive,
            username: self.c.username.clone(),
            password: self.c.password.clone(),
            transport: transport.clone(),
            read_buf: if self.kind.is_pubsub() {
                (256 * 1024).max(2 * self.c.payload + 1024)
            } else {
                512.max(2 * self.c.payload + 64)
            },
        }
    }
}

/// The generator CPUs: `--cpus`, or the `--cores` highest-numbered online
/// CPUs (default half of them, at least one).
fn choose_cpus(cores: Option<usize>, list: Option<&str>) -> anyhow::Result<Vec<usize>> {
    let online: Vec<usize> = CpuSet::online()
        .map_err(|e| anyhow!("listing online CPUs: {e}"))?
        .iter()
        .map(|l| l.cpu)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if let Some(list) = list {
        let cpus = sys::parse_cpu_list(list)?;
        for c in &cpus {
            if !online.contains(c) {
                bail!("--cpus: CPU {c} is not online (online: {online:?})");
            }
        }
        return Ok(cpus);
    }
    let n = cores.unwrap_or((online.len() / 2).max(1));
    if n == 0 || n > online.len() {
        bail!("--cores must be 1..={}", online.len());
    }
    Ok(online[online.len() - n..].to_vec())
}

/// Counters one core publishes for the monitor (its own cache line).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardCounters {
    pub tid: AtomicI32,
    pub sent: AtomicU64,
    /// Deliveries expected for what was sent (sent x fan-out).
    pub expected: AtomicU64,
    pub received: AtomicU64,
    /// PUBLISH packets that arrived inside the window (wall clock).
    pub arrived_w: AtomicU64,
    pub connected: AtomicU64,
    /// connections: devices connected again after the storm.
    pub reconnected: AtomicU64,
    pub conn_fail: AtomicU64,
    /// A copy of the core's latency histogram for the progress line.
    pub hist: Mutex<Option<Histogram<u64>>>,
}

/// State shared between the monitor thread and all cores.
#[derive(Debug)]
pub struct SharedState {
    pub plan: Arc<Plan>,
    next_shard: AtomicUsize,
    ready: AtomicUsize,
    pub failed: AtomicBool,
    error: Mutex<Option<String>>,
    start_ns: AtomicU64,
    /// Set at the end of the drain: subscribers and idle connections leave.
    pub stop: AtomicBool,
    /// Set when the reconnect storm starts: devices drop their connections.
    pub storm: AtomicBool,
    pub pubs_done: AtomicUsize,
    pub progress: bool,
    pub shards: Vec<ShardCounters>,
    /// TLS: the version and cipher suite of the first connection made.
    tls_session: Mutex<Option<String>>,
    tls_noted: AtomicBool,
}

impl SharedState {
    /// Keeps the TLS version and cipher suite of the first TLS connection.
    fn note_tls(&self, conn: &Conn) {
        if self.plan.hosts[0].1.tls.is_none() || self.tls_noted.swap(true, Relaxed) {
            return;
        }
        if let Ok(mut slot) = self.tls_session.lock() {
            *slot = conn.stream.tls_session();
        }
    }

    fn fail(&self, e: &anyhow::Error) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(format!("{e:#}"));
        }
        self.failed.store(true, SeqCst);
    }
}

/// Per-core state, owned by that core's executor.
#[derive(Debug)]
pub struct ShardCtx {
    pub shared: Arc<SharedState>,
    pub shard: usize,
    pub hist: RefCell<Histogram<u64>>,
    pub connack: RefCell<Histogram<u64>>,
    /// connections: CONNACK latency of the reconnects after the storm.
    pub storm_connack: RefCell<Histogram<u64>>,
    /// connections: reconnects whose CONNACK said the session was kept.
    pub session_present: Cell<u64>,
    pub tally: RefCell<Tally>,
    pub protocol_errors: Cell<u64>,
    pub conn_ok_w: Cell<u64>,
    pub conn_attempts_w: Cell<u64>,
    pub conn_errors: RefCell<Vec<String>>,
    pub held: RefCell<Vec<Conn>>,
    /// Fired every second (keep-alive checks) and at stop.
    pub events: Events,
    pub ticker_done: Cell<bool>,
}

impl ShardCtx {
    fn conn_error(&self, e: &anyhow::Error) {
        self.shared.shards[self.shard].conn_fail.fetch_add(1, Relaxed);
        let mut errs = self.conn_errors.borrow_mut();
        if errs.len() < 5 {
            errs.push(format!("{e:#}"));
        }
    }
}

/// What one core hands back at the end.
#[derive(Debug)]
pub struct ShardResult {
    pub tally: Tally,
    pub hist: Histogram<u64>,
    pub connack: Histogram<u64>,
    pub storm_connack: Histogram<u64>,
    pub session_present: u64,
    pub pubs: PubResult,
    pub expected_w: u64,
    pub protocol_errors: u64,
    pub conn_ok_w: u64,
    pub conn_attempts_w: u64,
    pub conn_errors: Vec<String>,
}

/// Connects (and subscribes) a list of clients, `concurrency` at a time.
/// Returns each connection with its CONNACK latency (from connect start).
async fn connect_all(
    ctx: &Rc<ShardCtx>,
    clients: Vec<(Client, String, Option<Vec<String>>)>,
    concurrency: usize,
    resume: bool,
) -> anyhow::Result<Vec<(Conn, u64)>> {
    let sem = Rc::new(glommio::sync::Semaphore::new(concurrency as u64));
    let timeout = Duration::from_secs_f64(ctx.shared.plan.c.connect_timeout.max(0.001));
    let mut tasks = Vec::with_capacity(clients.len());
    for (client, id, filters) in clients {
        let ctx = ctx.clone();
        let sem = sem.clone();
        tasks.push(glommio::spawn_local(async move {
            let _permit = sem.acquire_permit(1).await.map_err(|e| anyhow!("semaphore: {e}"))?;
            if ctx.shared.failed.load(Relaxed) {
                bail!("aborted");
            }
            let plan = &ctx.shared.plan;
            let t0 = mono_ns();
            let opts = plan.connect_opts(client);
            let what = format!("client {id}");
            let mut conn = with_timeout(timeout, &what, Conn::connect(&opts, &id))
                .await
                .with_context(|| format!("{what} connecting to {}", opts.broker))?;
            let lat = mono_ns() - t0;
            ctx.shared.note_tls(&conn);
            if let Some(f) = filters {
                // A resumed session keeps its subscriptions: a device does not
                // subscribe again.
                if !(resume && conn.session_present) {
                    with_timeout(timeout, &what, conn.subscribe(&f, plan.c.qos)).await?;
                }
            }
            ctx.shared.shards[ctx.shard].connected.fetch_add(1, Relaxed);
            Ok((conn, lat))
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(c) => out.push(c),
            Err(e) => {
                if first_err.is_none() {
                    ctx.shared.fail(&e);
                    first_err = Some(e);
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Marks this core ready and waits for the monitor's start time.
async fn barrier(ctx: &ShardCtx) -> anyhow::Result<u64> {
    ctx.shared.ready.fetch_add(1, SeqCst);
    loop {
        let s = ctx.shared.start_ns.load(SeqCst);
        if s != 0 {
            return Ok(s);
        }
        if ctx.shared.failed.load(Relaxed) {
            bail!("aborted");
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// Fires the shard events every second, and as soon as the monitor says stop.
async fn ticker(ctx: Rc<ShardCtx>) {
    let mut last = mono_ns();
    let mut storm_seen = false;
    loop {
        glommio::timer::sleep(Duration::from_millis(20)).await;
        let stop = ctx.shared.stop.load(Relaxed) || ctx.shared.failed.load(Relaxed);
        let storm = !storm_seen && ctx.shared.storm.load(Relaxed);
        storm_seen |= storm;
        let now = mono_ns();
        // After stop, keep firing (every 20 ms) until the shard is done, so
        // that no waiter can miss it.
        if stop || storm || now - last >= 1_000_000_000 {
            last = now;
            ctx.events.fire();
        }
        if ctx.ticker_done.get() {
            return;
        }
    }
}

/// Copies this core's histogram for the progress line every 250 ms.
async fn progress_copier(ctx: Rc<ShardCtx>, done: Rc<Cell<bool>>) {
    while !done.get() {
        glommio::timer::sleep(Duration::from_millis(250)).await;
        let h = ctx.hist.borrow();
        if let Ok(mut slot) = ctx.shared.shards[ctx.shard].hist.lock() {
            match slot.as_mut() {
                Some(s) => {
                    s.reset();
                    let _ = s.add(&*h);
                }
                None => *slot = Some(h.clone()),
            }
        }
    }
}

/// Returns the publishers' totals and the deliveries expected in the window.
async fn pubsub_shard(ctx: Rc<ShardCtx>) -> anyhow::Result<(PubResult, u64)> {
    let plan = &ctx.shared.plan;
    let shards = plan.shards() as u32;
    let me = ctx.shard as u32;
    let subs: Vec<u32> = (0..plan.subscribers).filter(|j| j % shards == me).collect();
    let pubs: Vec<u32> = (0..plan.publishers).filter(|i| i % shards == me).collect();
    let mut list: Vec<(Client, String, Option<Vec<String>>)> = subs
        .iter()
        .map(|&j| (Client::Subscriber(j), plan.client_id('s', j), Some(plan.sub_filters(j))))
        .collect();
    list.extend(pubs.iter().map(|&i| (Client::Publisher(i), plan.client_id('p', i), None)));
    let mut conns = connect_all(&ctx, list, plan.c.connect_concurrency, false).await?;
    let pub_conns = conns.split_off(subs.len());
    let start = barrier(&ctx).await?;

    let done = Rc::new(Cell::new(false));
    let copier = ctx
        .shared
        .progress
        .then(|| glommio::spawn_local(progress_copier(ctx.clone(), done.clone())));
    let sub_tasks: Vec<_> = subs
        .iter()
        .zip(conns)
        .map(|(&j, (c, _))| glommio::spawn_local(client::run_subscriber(ctx.clone(), j, c, start)))
        .collect();
    let pub_tasks: Vec<_> = pubs
        .iter()
        .zip(pub_conns)
        .map(|(&i, (c, _))| {
            let spec = PubSpec {
                id: i,
                topic: plan.topic_names[plan.pub_topic(i) as usize].as_bytes().to_vec(),
                fanout: plan.fanout(i),
            };
            glommio::spawn_local(client::run_publisher(ctx.clone(), spec, c, start))
        })
        .collect();
    let mut total = PubResult::default();
    let mut first_err: Option<anyhow::Error> = None;
    let mut expected_w = 0;
    for (t, &i) in pub_tasks.into_iter().zip(&pubs) {
        match t.await {
            Ok(r) => {
                total.sent_w += r.sent_w;
                total.sent_total += r.sent_total;
                total.scheduled_w += r.scheduled_w;
                total.unacked += r.unacked;
                total.writes += r.writes;
                total.packets_written += r.packets_written;
                total.stalled += r.stalled;
                expected_w += r.sent_w * plan.fanout(i);
            }
            Err(e) => {
                ctx.shared.pubs_done.fetch_add(1, Relaxed);
                ctx.shared.fail(&e);
                first_err.get_or_insert(e);
            }
        }
    }
    for t in sub_tasks {
        if let Err(e) = t.await {
            ctx.shared.fail(&e);
            first_err.get_or_insert(e);
        }
    }
    done.set(true);
    if let Some(c) = copier {
        c.await;
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok((total, expected_w))
}

/// One connection-storm attempt: connect, CONNACK, then DISCONNECT (or hold).
async fn conn_attempt(ctx: Rc<ShardCtx>, idx: u64, intended: u64, ws: u64, we: u64) {
    let plan = &ctx.shared.plan;
    let timeout = Duration::from_secs_f64(plan.c.connect_timeout.max(0.001));
    let id = plan.client_id('c', idx as u32);
    let opts = plan.connect_opts(Client::Other(idx));
    let in_w = intended >= ws && intended < we;
    if in_w {
        ctx.conn_attempts_w.set(ctx.conn_attempts_w.get() + 1);
    }
    match with_timeout(timeout, "connect", Conn::connect(&opts, &id)).await {
        Ok(conn) => {
            let lat = mono_ns().saturating_sub(intended).max(1);
            ctx.shared.note_tls(&conn);
            if in_w {
                ctx.conn_ok_w.set(ctx.conn_ok_w.get() + 1);
                let _ = ctx.connack.borrow_mut().record(lat);
            }
            ctx.shared.shards[ctx.shard].connected.fetch_add(1, Relaxed);
            if plan.hold {
                ctx.held.borrow_mut().push(conn);
            } else {
                conn.disconnect(Duration::from_secs(1)).await;
            }
        }
        Err(e) => ctx.conn_error(&e),
    }
}

async fn conn_shard(ctx: Rc<ShardCtx>) -> anyhow::Result<()> {
    let plan = &ctx.shared.plan;
    let shards = plan.shards() as u64;
    let me = ctx.shard as u64;
    let cap = plan.connections as u64;
    let start = barrier(&ctx).await?;
    let (ws, we) = plan.window(start);
    let concurrency = plan.concurrency as u64;
    let sem = Rc::new(glommio::sync::Semaphore::new(concurrency));
    if plan.c.rate > 0 {
        // Open loop: attempt k of this core is due at its schedule slot; the
        // latency counts from there, so a slow accept queue shows up in it.
        let sched = Schedule::new(start, plan.c.rate, shards, me);
        for k in 0u64.. {
            let idx = k * shards + me;
            let t = sched.intended(k);
            // Late attempts still start (their latency counts from `t`), but
            // not more than a second after the window.
            let late = mono_ns() >= we + 1_000_000_000;
            if t >= we || late || (cap > 0 && idx >= cap) || ctx.shared.failed.load(Relaxed) {
                break;
            }
            client::sleep_until(t).await;
            let permit =
                sem.acquire_static_permit(1).await.map_err(|e| anyhow!("semaphore: {e}"))?;
            let ctx = ctx.clone();
            glommio::spawn_local(async move {
                conn_attempt(ctx, idx, t, ws, we).await;
                drop(permit);
            })
            .detach();
        }
    } else {
        // Closed loop: `concurrency` workers connect back to back.
        let next = Rc::new(Cell::new(0u64));
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let ctx = ctx.clone();
            let next = next.clone();
            workers.push(glommio::spawn_local(async move {
                client::sleep_until(start).await;
                loop {
                    let k = next.get();
                    next.set(k + 1);
                    let idx = k * shards + me;
                    let now = mono_ns();
                    if now >= we || (cap > 0 && idx >= cap) || ctx.shared.failed.load(Relaxed) {
                        break;
                    }
                    conn_attempt(ctx.clone(), idx, now, ws, we).await;
                }
            }));
        }
        for w in workers {
            w.await;
        }
    }
    // Wait for the attempts still in flight.
    sem.acquire(concurrency).await.map_err(|e| anyhow!("semaphore: {e}"))?;
    if plan.hold {
        while !ctx.shared.stop.load(Relaxed) && !ctx.shared.failed.load(Relaxed) {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        let held = std::mem::take(&mut *ctx.held.borrow_mut());
        let closes: Vec<_> = held
            .into_iter()
            .map(|c| glommio::spawn_local(c.disconnect(Duration::from_secs(1))))
            .collect();
        for c in closes {
            c.await;
        }
    }
    Ok(())
}

async fn idle_shard(ctx: Rc<ShardCtx>) -> anyhow::Result<()> {
    let plan = &ctx.shared.plan;
    let shards = plan.shards() as u32;
    let me = ctx.shard as u32;
    let list = (0..plan.connections)
        .filter(|i| i % shards == me)
        .map(|i| (Client::Other(u64::from(i)), plan.client_id('i', i), None))
        .collect();
    let conns = connect_all(&ctx, list, plan.c.connect_concurrency, false).await?;
    {
        let mut h = ctx.connack.borrow_mut();
        for (_, lat) in &conns {
            let _ = h.record((*lat).max(1));
        }
    }
    ctx.conn_ok_w.set(conns.len() as u64);
    ctx.conn_attempts_w.set(conns.len() as u64);
    barrier(&ctx).await?;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|(c, _)| glommio::spawn_local(client::run_idle(ctx.clone(), c)))
        .collect();
    let mut first_err = None;
    for t in tasks {
        if let Err(e) = t.await {
            ctx.shared.fail(&e);
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// connections: connects this core's devices, holds them through the window
/// and, with a reconnect storm, drops and reconnects them all.
async fn connections_shard(ctx: Rc<ShardCtx>) -> anyhow::Result<()> {
    let plan = &ctx.shared.plan;
    let shards = plan.shards() as u32;
    let me = ctx.shard as u32;
    let devices: Vec<u32> = (0..plan.connections).filter(|i| i % shards == me).collect();
    let list = || -> Vec<(Client, String, Option<Vec<String>>)> {
        devices
            .iter()
            .map(|&i| {
                (
                    Client::Other(u64::from(i)),
                    plan.client_id('d', i),
                    Some(vec![plan.device_topic(i)]),
                )
            })
            .collect()
    };
    let conns = connect_all(&ctx, list(), plan.c.connect_concurrency, false).await?;
    {
        let mut h = ctx.connack.borrow_mut();
        for (_, lat) in &conns {
            let _ = h.record((*lat).max(1));
        }
    }
    ctx.conn_ok_w.set(conns.len() as u64);
    ctx.conn_attempts_w.set(conns.len() as u64);
    let start = barrier(&ctx).await?;
    let storm = plan.fleet.reconnect_storm;
    hold_devices(&ctx, conns, &devices, start, storm).await?;
    if !storm || ctx.shared.stop.load(SeqCst) || ctx.shared.failed.load(SeqCst) {
        return Ok(());
    }
    let conns = connect_all(&ctx, list(), plan.c.connect_concurrency, true).await?;
    {
        let mut h = ctx.storm_connack.borrow_mut();
        for (c, lat) in &conns {
            let _ = h.record((*lat).max(1));
            ctx.session_present.set(ctx.session_present.get() + c.session_present as u64);
        }
    }
    ctx.shared.shards[ctx.shard].reconnected.fetch_add(conns.len() as u64, SeqCst);
    hold_devices(&ctx, conns, &devices, start, false).await
}

/// Runs one device task per connection until they all end (at stop, or at
/// the storm when `drop_at_storm`).
async fn hold_devices(
    ctx: &Rc<ShardCtx>,
    conns: Vec<(Conn, u64)>,
    devices: &[u32],
    start: u64,
    drop_at_storm: bool,
) -> anyhow::Result<()> {
    let plan = &ctx.shared.plan;
    let period_ns = (plan.fleet.trickle_per_min > 0.0)
        .then(|| (60e9 / plan.fleet.trickle_per_min) as u64)
        .map(|p| p.max(1));
    let n = plan.connections as u64;
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(devices)
        .map(|((c, _), &i)| {
            let dev = client::Device {
                idx: i,
                topic: plan.device_topic(i).into_bytes(),
                // Spread the devices' publishes evenly over one period.
                trickle: period_ns.map(|p| (start + p * i as u64 / n, p)),
            };
            glommio::spawn_local(client::run_device(ctx.clone(), c, dev, drop_at_storm))
        })
        .collect();
    let mut first_err = None;
    for t in tasks {
        if let Err(e) = t.await {
            ctx.shared.fail(&e);
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// The future each generator core runs.
async fn shard_main(shared: Arc<SharedState>) -> anyhow::Result<ShardResult> {
    let shard = shared.next_shard.fetch_add(1, SeqCst);
    shared.shards[shard].tid.store(sys::gettid(), SeqCst);
    let ctx = Rc::new(ShardCtx {
        shared: shared.clone(),
        shard,
        hist: RefCell::new(new_histogram()),
        connack: RefCell::new(new_histogram()),
        storm_connack: RefCell::new(new_histogram()),
        session_present: Cell::new(0),
        tally: RefCell::new(Tally::default()),
        protocol_errors: Cell::new(0),
        conn_ok_w: Cell::new(0),
        conn_attempts_w: Cell::new(0),
        conn_errors: RefCell::new(Vec::new()),
        held: RefCell::new(Vec::new()),
        events: Events::default(),
        ticker_done: Cell::new(false),
    });
    let ticker = glommio::spawn_local(ticker(ctx.clone()));
    let res = match shared.plan.kind {
        Kind::FanIn | Kind::FanOut | Kind::Pairs => pubsub_shard(ctx.clone()).await,
        Kind::Conn => conn_shard(ctx.clone()).await.map(|_| Default::default()),
        Kind::Idle => idle_shard(ctx.clone()).await.map(|_| Default::default()),
        Kind::Connections => connections_shard(ctx.clone()).await.map(|_| Default::default()),
    };
    // Stay alive until the monitor has sampled this thread's CPU time at the
    // end of the window (a conn storm can finish before that).
    while !shared.stop.load(SeqCst) && !shared.failed.load(SeqCst) {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    ctx.ticker_done.set(true);
    ticker.await;
    let (pubs, expected_w) = match res {
        Ok(p) => p,
        Err(e) => {
            shared.fail(&e);
            return Err(e);
        }
    };
    let hist = ctx.hist.replace(new_histogram());
    let connack = ctx.connack.replace(new_histogram());
    let storm_connack = ctx.storm_connack.replace(new_histogram());
    let tally = *ctx.tally.borrow();
    let conn_errors = ctx.conn_errors.take();
    Ok(ShardResult {
        tally,
        hist,
        connack,
        storm_connack,
        session_present: ctx.session_present.get(),
        pubs,
        expected_w,
        protocol_errors: ctx.protocol_errors.get(),
        conn_ok_w: ctx.conn_ok_w.get(),
        conn_attempts_w: ctx.conn_attempts_w.get(),
        conn_errors,
    })
}

/// What the monitor thread saw.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub start_ns: u64,
    pub window_s: f64,
    pub setup_s: f64,
    pub drain_s: f64,
    pub drain_timed_out: bool,
    pub broker_cpu_s: Option<f64>,
    pub broker_rss_baseline_kib: Option<u64>,
    pub broker_rss_start_kib: Option<u64>,
    pub broker_rss_end_kib: Option<u64>,
    pub broker_rss_peak_kib: Option<u64>,
    pub broker_gone: bool,
    pub self_cpu_s: f64,
    pub thread_cpu_s: Vec<f64>,
    pub connected: u64,
    pub storm: Option<StormObserved>,
}

/// What the monitor saw of a reconnect storm.
#[derive(Debug, Default, Clone)]
pub struct StormObserved {
    /// From the drop to the last reconnect's CONNACK (or the give-up time).
    pub seconds: f64,
    pub reconnected: u64,
    /// The give-up time passed before every device was back.
    pub timed_out: bool,
    /// Broker RSS just before the drop, right after the storm, and
    /// `settle_s` later.
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub rss_settled_kib: Option<u64>,
    pub settle_s: f64,
    /// Broker CPU seconds from the drop to the last reconnect (with --broker-pid).
    pub broker_cpu_s: Option<f64>,
    /// This process's CPU seconds over the same time: a generator near
    /// `seconds` x its cores bounds the storm's rate, not the broker.
    pub generator_cpu_s: f64,
}

/// The merged outcome of a run.
#[derive(Debug)]
pub struct Outcome {
    pub observed: Observed,
    pub tally: Tally,
    pub hist: Histogram<u64>,
    pub connack: Histogram<u64>,
    pub storm_connack: Histogram<u64>,
    pub session_present: u64,
    /// connections: trickle publishes sent and received back.
    pub trickle_sent: u64,
    pub trickle_received: u64,
    pub pubs: PubResult,
    pub expected_w: u64,
    pub arrived_w: u64,
    pub protocol_errors: u64,
    pub conn_ok_w: u64,
    pub conn_attempts_w: u64,
    pub conn_failures: u64,
    pub conn_errors: Vec<String>,
    /// TLS: the version and cipher suite agreed on.
    pub tls_session: Option<String>,
}

struct Progress {
    enabled: bool,
    last_ns: u64,
    last_sent: u64,
    last_recv: u64,
    last_conn: u64,
    drawn: bool,
}

impl Progress {
    fn draw(&mut self, shared: &SharedState, phase: &str, left_s: f64) {
        if !self.enabled {
            return;
        }
        let now = mono_ns();
        if now - self.last_ns < 500_000_000 && self.drawn {
            return;
        }
        let dt = (now - self.last_ns) as f64 / 1e9;
        let sum = |f: fn(&ShardCounters) -> u64| shared.shards.iter().map(f).sum::<u64>();
        let sent = sum(|s| s.sent.load(Relaxed));
        let recv = sum(|s| s.received.load(Relaxed));
        let conn = sum(|s| s.connected.load(Relaxed));
        let mut line = format!("[{}] {phase:<9}", shared.plan.kind.name());
        if shared.plan.kind.is_pubsub() {
            let mut h = new_histogram();
            for s in &shared.shards {
                if let Ok(g) = s.hist.lock() {
                    if let Some(x) = g.as_ref() {
                        let _ = h.add(x);
                    }
                }
            }
            let p99 = if h.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}us", h.value_at_quantile(0.99) as f64 / 1e3)
            };
            line.push_str(&format!(
                " sent {:>11.0}/s  recv {:>11.0}/s  p99 {p99:>8}",
                (sent - self.last_sent) as f64 / dt,
                (recv - self.last_recv) as f64 / dt
            ));
        } else {
            line.push_str(&format!(
                " connections {conn:>8}  {:>9.0}/s",
                (conn - self.last_conn) as f64 / dt
            ));
        }
        line.push_str(&format!("  {left_s:>5.1}s left"));
        eprint!("\r\x1b[2K{line}");
        let _ = std::io::stderr().flush();
        self.drawn = true;
        self.last_ns = now;
        self.last_sent = sent;
        self.last_recv = recv;
        self.last_conn = conn;
    }

    fn clear(&mut self) {
        if self.enabled && self.drawn {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

fn sleep_until(t_ns: u64) {
    let now = mono_ns();
    if t_ns > now {
        std::thread::sleep(Duration::from_nanos(t_ns - now));
    }
}

/// Starts the reconnect storm and watches it: waits until every device is
/// back (or a minute plus the connect timeout passed), then for the settle
/// time, sampling the broker's RSS after each.
fn reconnect_storm(
    shared: &SharedState,
    prog: &mut Progress,
    sample_rss: &mut dyn FnMut() -> Option<u64>,
) -> StormObserved {
    let plan = &shared.plan;
    let n = plan.connections as u64;
    let t0 = mono_ns();
    let give_up = t0 + 60_000_000_000 + secs_ns(plan.c.connect_timeout, "").unwrap_or(0);
    let broker_cpu = || plan.c.broker_pid.and_then(sys::proc_cpu_s);
    let (broker0, self0) = (broker_cpu(), sys::self_cpu_s());
    shared.storm.store(true, SeqCst);
    let mut st = StormObserved::default();
    loop {
        st.reconnected = shared.shards.iter().map(|s| s.reconnected.load(SeqCst)).sum();
        let now = mono_ns();
        if st.reconnected >= n || shared.failed.load(SeqCst) || now >= give_up {
            st.timed_out = st.reconnected < n && now >= give_up;
            break;
        }
        prog.draw(shared, "storm", give_up.saturating_sub(now) as f64 / 1e9);
        std::thread::sleep(Duration::from_millis(5));
    }
    let t1 = mono_ns();
    st.seconds = (t1 - t0) as f64 / 1e9;
    st.broker_cpu_s = broker0.zip(broker_cpu()).map(|(a, b)| b - a);
    st.generator_cpu_s = sys::self_cpu_s() - self0;
    st.rss_after_kib = sample_rss();
    let settled = t1 + plan.settle_ns;
    while !shared.failed.load(SeqCst) && mono_ns() < settled {
        std::thread::sleep(Duration::from_millis(100));
        prog.draw(shared, "settle", settled.saturating_sub(mono_ns()) as f64 / 1e9);
    }
    st.settle_s = (mono_ns() - t1) as f64 / 1e9;
    st.rss_settled_kib = sample_rss();
    st
}

/// Runs the plan: starts the generator cores and monitors them.
pub fn execute(plan: Arc<Plan>) -> anyhow::Result<Outcome> {
    let nofile = sys::raise_nofile();
    let needed = match plan.kind {
        Kind::Idle | Kind::Connections => plan.connections as u64,
        Kind::Conn if plan.hold => plan.connections as u64,
        _ => (plan.publishers + plan.subscribers) as u64,
    };
    if needed + 64 > nofile {
        bail!("{needed} connections need more open files than the limit ({nofile}); raise `ulimit -n`");
    }
    let shards = plan.shards();
    let progress = !plan.c.no_progress && std::io::stderr().is_terminal();
    let broker_pid = plan.c.broker_pid;
    let shared = Arc::new(SharedState {
        plan,
        next_shard: AtomicUsize::new(0),
        ready: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
        start_ns: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        storm: AtomicBool::new(false),
        pubs_done: AtomicUsize::new(0),
        progress,
        shards: (0..shards).map(|_| ShardCounters::default()).collect(),
        tls_session: Mutex::new(None),
        tls_noted: AtomicBool::new(false),
    });
    let plan = &shared.plan;
    let mut obs = Observed {
        broker_rss_baseline_kib: broker_pid.and_then(sys::proc_rss_kib),
        ..Observed::default()
    };
    if let Some(pid) = broker_pid {
        if sys::proc_cpu_s(pid).is_none() {
            bail!("--broker-pid {pid}: no such process (or /proc/{pid}/stat is unreadable)");
        }
    }

    let cpusets: Vec<CpuSet> = plan
        .cpus
        .iter()
        .map(|&c| {
            CpuSet::online().map(|s| s.filter(|l| l.cpu == c)).map_err(|e| anyhow!("CPU set: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let handles = LocalExecutorPoolBuilder::new(PoolPlacement::Custom(cpusets))
        .name("bench")
        .io_memory(1 << 20)
        // Tasks yield after every batch; the preempt timer bounds how long
        // always-runnable publishers can delay polling for I/O completions
        // (i.e. delay subscribers). Shorter costs CPU at moderate rates.
        .preempt_timer(Duration::from_millis(2))
        .on_all_shards({
            let shared = shared.clone();
            move || shard_main(shared)
        })
        .map_err(|e| anyhow!("starting the generator executors: {e}"))?;

    let mut prog = Progress {
        enabled: progress,
        last_ns: mono_ns(),
        last_sent: 0,
        last_recv: 0,
        last_conn: 0,
        drawn: false,
    };
    let t_setup = mono_ns();
    // Setup: wait for every core to connect its clients.
    while shared.ready.load(SeqCst) < shards && !shared.failed.load(SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
        prog.draw(&shared, "connect", 0.0);
        if handles.handles().iter().any(|h| h.is_finished()) {
            // An executor could not start (io_uring unavailable, memlock
            // too low, ...) or panicked: its error comes out of join_all.
            shared.failed.store(true, SeqCst);
        }
    }
    let start = mono_ns() + 20_000_000;
    obs.setup_s = (start - t_setup) as f64 / 1e9;
    obs.start_ns = start;
    shared.start_ns.store(start, SeqCst);
    let (ws, we) = plan.window(start);
    let tids: Vec<i32> = shared.shards.iter().map(|s| s.tid.load(SeqCst)).collect();
    let thread_cpu =
        || -> Vec<Option<f64>> { tids.iter().map(|&t| sys::thread_cpu_s(t)).collect() };
    // Samples the broker's RSS, keeping the peak in `obs`.
    let sample_rss = |obs: &mut Observed| -> Option<u64> {
        let r = broker_pid.and_then(sys::proc_rss_kib);
        if broker_pid.is_some() && r.is_none() {
            obs.broker_gone = true;
        }
        if let Some(r) = r {
            obs.broker_rss_peak_kib = Some(obs.broker_rss_peak_kib.map_or(r, |p| p.max(r)));
        }
        r
    };

    let mut at_ws: Option<(Option<f64>, f64, Vec<Option<f64>>)> = None;
    if !shared.failed.load(SeqCst) {
        // Warmup and measured window.
        loop {
            let now = mono_ns();
            if shared.failed.load(SeqCst) || now >= we {
                break;
            }
            let mut next = now + 100_000_000;
            if at_ws.is_none() {
                next = next.min(ws);
            }
            next = next.min(we);
            sleep_until(next);
            let now = mono_ns();
            if at_ws.is_none() && now >= ws {
                obs.broker_rss_peak_kib = None; // the peak counts from the window start
                obs.broker_rss_start_kib = sample_rss(&mut obs);
                at_ws =
                    Some((broker_pid.and_then(sys::proc_cpu_s), sys::self_cpu_s(), thread_cpu()));
            } else if at_ws.is_some() {
                sample_rss(&mut obs);
            }
            let (phase, left) = if now < ws {
                ("warmup", (we - now) as f64 / 1e9)
            } else {
                ("measure", we.saturating_sub(now) as f64 / 1e9)
            };
            prog.draw(&shared, phase, left);
        }
        if let Some((bcpu0, scpu0, tcpu0)) = &at_ws {
            obs.window_s = (mono_ns().min(we) - ws) as f64 / 1e9;
            obs.broker_cpu_s = match (bcpu0, broker_pid.and_then(sys::proc_cpu_s)) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            obs.self_cpu_s = sys::self_cpu_s() - scpu0;
            obs.thread_cpu_s = thread_cpu()
                .iter()
                .zip(tcpu0)
                .map(|(b, a)| match (*a, *b) {
                    (Some(a), Some(b)) => (b - a).max(0.0),
                    _ => f64::NAN, // the thread was gone: unknown
                })
                .collect();
            obs.broker_rss_end_kib = sample_rss(&mut obs);
        }
        // Drain: publishers finish their acks, subscribers receive what is
        // still in flight. Done when everything expected arrived, when nothing
        // arrived for a second, or after --drain seconds.
        if plan.kind.is_pubsub() {
            let deadline = we + plan.drain_ns;
            let quiet_ns = plan.drain_ns.min(1_000_000_000);
            let mut last_recv = u64::MAX;
            let mut last_change = mono_ns();
            loop {
                let now = mono_ns();
                let recv: u64 = shared.shards.iter().map(|s| s.received.load(Relaxed)).sum();
                let exp: u64 = shared.shards.iter().map(|s| s.expected.load(Relaxed)).sum();
                let pubs_done = shared.pubs_done.load(Relaxed) >= plan.publishers as usize;
                if shared.failed.load(SeqCst) || (pubs_done && recv >= exp) {
                    break;
                }
                if recv != last_recv {
                    last_recv = recv;
                    last_change = now;
                } else if pubs_done && now - last_change >= quiet_ns {
                    break;
                }
                if now >= deadline {
                    obs.drain_timed_out = true;
                    break;
                }
                prog.draw(&shared, "drain", deadline.saturating_sub(now) as f64 / 1e9);
                std::thread::sleep(Duration::from_millis(10));
            }
            obs.drain_s = (mono_ns().saturating_sub(we)) as f64 / 1e9;
        }
        if plan.kind == Kind::Connections && plan.fleet.reconnect_storm {
            let before = obs.broker_rss_end_kib;
            let mut st = reconnect_storm(&shared, &mut prog, &mut || sample_rss(&mut obs));
            st.rss_before_kib = before;
            obs.storm = Some(st);
        }
    }
    shared.stop.store(true, SeqCst);
    obs.connected = shared.shards.iter().map(|s| s.connected.load(Relaxed)).sum();
    let results = handles.join_all();
    prog.clear();
    if shared.failed.load(SeqCst) {
        let msg = shared.error.lock().map(|e| e.clone()).unwrap_or(None).or_else(|| {
            results.iter().find_map(|r| match r {
                Err(e) => Some(format!(
                    "a generator executor failed: {e} (glommio needs io_uring and about 1 MiB \
                     of locked memory per core: check `ulimit -l`)"
                )),
                Ok(Err(e)) => Some(format!("{e:#}")),
                Ok(Ok(_)) => None,
            })
        });
        bail!("{}", msg.unwrap_or_else(|| "a generator core failed".into()));
    }
    let mut out = Outcome {
        observed: obs,
        tally: Tally::default(),
        hist: new_histogram(),
        connack: new_histogram(),
        storm_connack: new_histogram(),
        session_present: 0,
        trickle_sent: shared.shards.iter().map(|s| s.sent.load(Relaxed)).sum(),
        trickle_received: shared.shards.iter().map(|s| s.received.load(Relaxed)).sum(),
        pubs: PubResult::default(),
        expected_w: 0,
        arrived_w: shared.shards.iter().map(|s| s.arrived_w.load(Relaxed)).sum(),
        protocol_errors: 0,
        conn_ok_w: 0,
        conn_attempts_w: 0,
        conn_failures: shared.shards.iter().map(|s| s.conn_fail.load(Relaxed)).sum(),
        conn_errors: Vec::new(),
        tls_session: shared.tls_session.lock().ok().and_then(|s| s.clone()),
    };
    for r in results {
        let r =
            r.map_err(|e| anyhow!("generator executor failed: {e}"))?.context("generator core")?;
        out.tally.add(&r.tally);
        out.hist.add(&r.hist).map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        out.connack.add(&r.connack).map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        out.storm_connack
            .add(&r.storm_connack)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        out.session_present += r.session_present;
        out.pubs.sent_w += r.pubs.sent_w;
        out.pubs.sent_total += r.pubs.sent_total;
        out.pubs.scheduled_w += r.pubs.scheduled_w;
        out.pubs.unacked += r.pubs.unacked;
        out.pubs.writes += r.pubs.writes;
        out.pubs.packets_written += r.pubs.packets_written;
        out.pubs.stalled += r.pubs.stalled;
        out.expected_w += r.expected_w;
        out.protocol_errors += r.protocol_errors;
        out.conn_ok_w += r.conn_ok_w;
        out.conn_attempts_w += r.conn_attempts_w;
        for e in r.conn_errors {
            if out.conn_errors.len() < 5 {
                out.conn_errors.push(e);
            }
        }
    }
    Ok(out)
}
