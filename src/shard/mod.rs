//! Shards: one pinned glommio executor per core, each owning a disjoint set of client
//! sessions, a replica of the route table and a partition of the retained messages.
//!
//! This module and `net` are the only places that know glommio. Shards share nothing
//! mutable: they talk over two meshes of lock-free SPSC rings (`mesh`), in batches.
//!
//! Tasks of one shard: an accept loop per listener, a task per connection (`conn`),
//! a receiver per peer and mesh, a drain task per mesh for overflowed batches, and a
//! tick that drives the timer wheel and watches for shutdown.

mod conn;
mod mesh;
mod notify;
mod observe;
mod rate;
mod state;
mod wheel;

use std::cell::RefCell;
use std::num::NonZeroU64;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::os::unix::io::FromRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::net::TcpListener;
use glommio::{spawn_local, yield_if_needed};
use tracing::{error, warn};

use crate::config::Config;
use crate::hooks::Hooks;
pub use crate::metrics::ShardStats;

use mesh::Outbox;
pub(crate) use mesh::{CtrlMsg, DataMsg};
pub(crate) use state::ApiPublish;
use state::{ShardState, TICK_MS};

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
    let data_tx: Rc<Senders<Vec<DataMsg>>> = Rc::new(data_tx);
    let ctrl_tx: Rc<Senders<Vec<CtrlMsg>>> = Rc::new(ctrl_tx);
    let shard = Rc::new(RefCell::new(ShardState::new(
        id,
        shards,
        Arc::clone(&ctx.config),
        Arc::clone(&ctx.hooks),
        Rc::clone(&data_tx),
        Rc::clone(&ctrl_tx),
    )));

    for (_, receiver) in data_rx.streams() {
        spawn_local(receive_data(Rc::clone(&shard), receiver)).detach();
    }
    for (_, receiver) in ctrl_rx.streams() {
        spawn_local(receive_ctrl(Rc::clone(&shard), receiver)).detach();
    }
    spawn_local(drain_data(Rc::clone(&shard))).detach();
    spawn_local(drain_ctrl(Rc::clone(&shard))).detach();

    let fds = {
        let mut all = ctx.listeners.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::take(&mut all[id])
    };
    for fd in fds {
        // SAFETY: a listening TCP socket that this shard alone owns from here on.
        let listener = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
        spawn_local(accept_loop(Rc::clone(&shard), listener)).detach();
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

    tick_until_stopped(&shard, &ctx.stop).await;
    data_tx.close();
    ctrl_tx.close();
}

/// Runs `work` until it ends or the shard stops, whichever comes first.
async fn until_stopped(
    shard: &Rc<RefCell<ShardState>>,
    work: impl std::future::Future<Output = ()>,
) {
    let stopped = Rc::clone(&shard.borrow().stopped);
    futures_lite::future::or(work, stopped.wait()).await;
}

async fn accept_loop(shard: Rc<RefCell<ShardState>>, listener: TcpListener) {
    // Dropping the listener when the shard stops closes the port.
    until_stopped(&shard.clone(), accept_forever(shard, listener)).await;
}

async fn accept_forever(shard: Rc<RefCell<ShardState>>, listener: TcpListener) {
    let (rate, shards) = {
        let s = shard.borrow();
        (s.config.accept_rate_max.map_or(0, NonZeroU64::get), s.shards as u64)
    };
    let mut bucket =
        (rate > 0).then(|| rate::TokenBucket::new(rate.div_ceil(shards), Instant::now()));
    loop {
        if let Some(wait) = bucket.as_mut().and_then(|b| b.take(1, Instant::now())) {
            // Over accept_rate_max: leave connections in the listen backlog a while.
            shard.borrow_mut().stats.limit_accept_rate += 1;
            glommio::timer::sleep(wait).await;
        }
        match listener.accept().await {
            Ok(stream) => {
                spawn_local(conn::handshake(Rc::clone(&shard), stream)).detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error.
                warn!("accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn receive_data(shard: Rc<RefCell<ShardState>>, receiver: ConnectedReceiver<Vec<DataMsg>>) {
    until_stopped(&shard.clone(), receive_data_forever(shard, receiver)).await;
}

async fn receive_data_forever(
    shard: Rc<RefCell<ShardState>>,
    receiver: ConnectedReceiver<Vec<DataMsg>>,
) {
    let backlog = Rc::clone(&shard.borrow().backlog_gate);
    loop {
        // A local subscriber is behind: leave the messages in the ring, so that the
        // shards publishing them feel it (their overflow grows and pauses their
        // publishers) instead of this shard queueing and dropping.
        backlog.wait_open().await;
        let Some(batch) = receiver.recv().await else { return };
        {
            let mut s = shard.borrow_mut();
            for msg in batch {
                s.on_data(msg);
            }
            s.end_of_pass();
        }
        yield_if_needed().await;
    }
}

async fn receive_ctrl(shard: Rc<RefCell<ShardState>>, receiver: ConnectedReceiver<Vec<CtrlMsg>>) {
    until_stopped(&shard.clone(), receive_ctrl_forever(shard, receiver)).await;
}

async fn receive_ctrl_forever(
    shard: Rc<RefCell<ShardState>>,
    receiver: ConnectedReceiver<Vec<CtrlMsg>>,
) {
    while let Some(batch) = receiver.recv().await {
        let mut handoffs = Vec::new();
        {
            let mut s = shard.borrow_mut();
            for msg in batch {
                if let Some(handoff) = s.on_ctrl(msg) {
                    handoffs.push(handoff);
                }
            }
            s.end_of_pass();
        }
        for handoff in handoffs {
            spawn_local(conn::serve_handoff(Rc::clone(&shard), *handoff)).detach();
        }
        yield_if_needed().await;
    }
}

/// Messages published by the embedding program. Waiting on a blocking channel
/// happens on glommio's blocking-thread pool, never on the shard's thread.
async fn receive_api(
    shard: Rc<RefCell<ShardState>>,
    receiver: crossbeam_channel::Receiver<ApiPublish>,
) {
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
        for publish in batch {
            s.publish_api(publish);
        }
        s.end_of_pass();
    }
}

/// Sends overflowed data batches as ring slots free up, in order.
async fn drain_data(shard: Rc<RefCell<ShardState>>) {
    let signal = Rc::clone(&shard.borrow().data_out.overflow_signal);
    until_stopped(&shard.clone(), async move {
        loop {
            signal.notified().await;
            drain(&shard, |s| &mut s.data_out).await;
        }
    })
    .await;
}

async fn drain_ctrl(shard: Rc<RefCell<ShardState>>) {
    let signal = Rc::clone(&shard.borrow().ctrl_out.overflow_signal);
    until_stopped(&shard.clone(), async move {
        loop {
            signal.notified().await;
            drain(&shard, |s| &mut s.ctrl_out).await;
        }
    })
    .await;
}

async fn drain<T: Send + 'static>(
    shard: &Rc<RefCell<ShardState>>,
    outbox: impl Fn(&mut ShardState) -> &mut Outbox<T>,
) {
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
        s.end_of_pass();
    }
}

async fn tick_until_stopped(shard: &Rc<RefCell<ShardState>>, stop: &AtomicBool) {
    let period = Duration::from_millis(TICK_MS);
    let mut ticks: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        let asleep = Instant::now();
        glommio::timer::sleep(period).await;
        // How late the timer fired: the time ready work waits for this event loop.
        let late = asleep.elapsed().saturating_sub(period);
        let mut s = shard.borrow_mut();
        s.lag_max_us = s.lag_max_us.max(late.as_micros() as u64);
        s.tick();
        ticks += 1;
        if ticks % (1000 / TICK_MS) == 0 {
            observe::every_second(&mut s);
        }
        s.end_of_pass();
    }
    shard.borrow_mut().close_all();
    // Give connections a moment to flush and close before the executor drops them.
    for _ in 0..50 {
        if shard.borrow().stats.connections == 0 {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // End the long-lived tasks: listeners close, rings are released.
    let stopped = Rc::clone(&shard.borrow().stopped);
    stopped.set();
    glommio::timer::sleep(Duration::from_millis(10)).await;
}
