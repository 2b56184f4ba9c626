//! The embedding API: start a broker inside any program, stop it cleanly.
//!
//! ```no_run
//! let mut config = shardmq::Config::default();
//! config.listen = vec!["127.0.0.1:1883".parse().unwrap()];
//! let broker = shardmq::Broker::new(config).unwrap().start().unwrap();
//! println!("listening on {:?}", broker.local_addrs());
//! broker.shutdown();
//! ```

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{
    CpuSet, LocalExecutorBuilder, LocalExecutorPoolBuilder, Placement, PoolPlacement,
    PoolThreadHandles,
};
use tracing::info;

use crate::config::{Config, ConfigError};
use crate::net;
use crate::shard::{self, ShardContext};

/// Where to read how to fix the host.
const TUNING_HINT: &str = "see tuning/README.md";

/// Why a broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "the locked-memory limit (ulimit -l) is {limit_kib} KiB; io_uring needs at least \
         {needed_kib} KiB for {shards} shard(s). Raise it (ulimit -l, LimitMEMLOCK= in systemd, \
         --ulimit memlock= in docker) or run fewer shards; {TUNING_HINT}"
    )]
    Memlock { limit_kib: u64, needed_kib: u64, shards: usize },
    #[error("io_uring is unavailable: {reason}. shardmq needs Linux 5.8+ with io_uring enabled; {TUNING_HINT}")]
    IoUring { reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the shard threads: {0}")]
    Threads(String),
}

/// A configured broker, not yet running.
#[derive(Debug)]
pub struct Broker {
    config: Config,
}

/// The smallest io_uring memory a shard can work with.
const IO_MEMORY_MIN: usize = 256 * 1024;
/// What a network-only shard needs; glommio's default (10 MiB) is for file I/O.
const IO_MEMORY_MAX: usize = 1024 * 1024;

impl Broker {
    /// Validates `config`.
    pub fn new(config: Config) -> Result<Broker, StartError> {
        config.validate()?;
        Ok(Broker { config })
    }

    /// Binds the listeners and starts one pinned shard per configured CPU.
    pub fn start(self) -> Result<BrokerHandle, StartError> {
        let config = Arc::new(self.config);
        let cpus = config.shard_cpus()?;
        let shards = cpus.len();
        let io_memory = io_memory_per_shard(shards)?;
        check_io_uring(io_memory)?;

        let (listeners, local_addrs) = bind_all(&config, shards)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = ShardContext {
            config: Arc::clone(&config),
            data_mesh: MeshBuilder::full(shards, config.ring_capacity),
            ctrl_mesh: MeshBuilder::full(shards, config.ring_capacity),
            listeners: Arc::new(Mutex::new(listeners)),
            stop: Arc::clone(&stop),
        };
        let online = CpuSet::online().map_err(|e| StartError::Threads(e.to_string()))?;
        let placement = cpus
            .iter()
            .map(|cpu| {
                let set = online.clone().filter(|l| l.cpu == *cpu);
                if set.is_empty() {
                    return Err(StartError::Config(ConfigError::Invalid {
                        name: "cpus",
                        reason: format!("CPU {cpu} is not online"),
                    }));
                }
                Ok(set)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let threads = LocalExecutorPoolBuilder::new(PoolPlacement::Custom(placement))
            .name("shardmq-shard")
            .io_memory(io_memory)
            .spin_before_park(config.spin_before_park())
            .on_all_shards(move || shard::run(ctx.clone()))
            .map_err(|e| StartError::Threads(e.to_string()))?;
        info!(
            shards,
            ?cpus,
            io_memory_kib = io_memory / 1024,
            listen = ?local_addrs,
            "shardmq started"
        );
        Ok(BrokerHandle { local_addrs, stop, threads: Some(threads) })
    }
}

/// A running broker. Dropping it stops the broker too.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Option<PoolThreadHandles<()>>,
}

impl BrokerHandle {
    /// The addresses the broker listens on (ports resolved when 0 was asked).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// A flag that stops the broker when set (e.g. from a signal handler).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Stops accepting, closes every connection, and joins the shard threads.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        self.join_threads();
    }

    /// Blocks until the broker stops (its stop flag is set).
    pub fn wait(mut self) {
        self.join_threads();
    }

    fn join_threads(&mut self) {
        if let Some(threads) = self.threads.take() {
            for result in threads.join_all() {
                if let Err(e) = result {
                    tracing::error!("shard thread failed: {e}");
                }
            }
        }
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.join_threads();
    }
}

fn bind_all(
    config: &Config,
    shards: usize,
) -> Result<(Vec<Vec<OwnedFd>>, Vec<SocketAddr>), StartError> {
    let mut per_shard: Vec<Vec<OwnedFd>> = (0..shards).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    for requested in &config.listen {
        // The first bind resolves port 0; the other shards bind the same port.
        let mut addr = *requested;
        for fds in per_shard.iter_mut() {
            let fd = net::bind_listener(addr, config.listen_backlog)
                .map_err(|source| StartError::Bind { addr, source })?;
            if addr.port() == 0 {
                addr = net::local_addr(&fd).map_err(|source| StartError::Bind { addr, source })?;
            }
            fds.push(fd);
        }
        addrs.push(addr);
    }
    Ok((per_shard, addrs))
}

/// The locked-memory soft limit in bytes, `None` when unlimited.
fn memlock_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max locked memory"))?;
    let soft = line.split_whitespace().nth(3)?;
    soft.parse().ok()
}

/// io_uring memory per shard: up to 1 MiB, less when the memlock limit is tight.
fn io_memory_per_shard(shards: usize) -> Result<usize, StartError> {
    let Some(limit) = memlock_limit() else { return Ok(IO_MEMORY_MAX) };
    // Half the limit for the shards' rings; the rest for glommio's own rings.
    let share = usize::try_from(limit / 2).unwrap_or(usize::MAX) / shards;
    if share < IO_MEMORY_MIN {
        return Err(StartError::Memlock {
            limit_kib: limit / 1024,
            needed_kib: (IO_MEMORY_MIN * shards * 2 / 1024) as u64,
            shards,
        });
    }
    Ok(share.min(IO_MEMORY_MAX))
}

/// Creates (and drops) one executor, so a host without io_uring fails here with a
/// clear message instead of inside a shard thread.
fn check_io_uring(io_memory: usize) -> Result<(), StartError> {
    if let Ok(disabled) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if disabled.trim() == "2" {
            return Err(StartError::IoUring {
                reason: "disabled by sysctl kernel.io_uring_disabled=2".to_owned(),
            });
        }
    }
    let probe = std::thread::spawn(move || {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(io_memory)
            .make()
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    match probe.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(StartError::IoUring { reason }),
        Err(_) => Err(StartError::IoUring { reason: "the probe thread panicked".to_owned() }),
    }
}
