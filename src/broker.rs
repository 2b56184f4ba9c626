//! The embedding API: start a broker inside any program, publish into it, register
//! hooks, stop it cleanly.
//!
//! ```no_run
//! use std::num::NonZeroUsize;
//!
//! use shardmq::protocol::QoS;
//!
//! let broker = shardmq::Broker::builder()
//!     .listen(["127.0.0.1:1883".parse().unwrap()])
//!     .cores(NonZeroUsize::new(2).unwrap())
//!     .hooks(|hooks| hooks.on_client_connected(|c| println!("{} connected", c.client_id)))
//!     .start()
//!     .unwrap();
//! broker.publish("greetings", "hello", QoS::AtLeastOnce, false).unwrap();
//! broker.shutdown().unwrap(); // closes connections, joins the shard threads
//! ```

use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{
    CpuSet, LocalExecutorBuilder, LocalExecutorPoolBuilder, Placement, PoolPlacement,
    PoolThreadHandles,
};
use tracing::info;

use crate::cluster::auth::ClusterKey;
use crate::config::{Config, ConfigError, ListenerConfig, SharedStrategy, SyncMode};
use crate::hooks::Hooks;
use crate::net;
use crate::protocol::{ProtocolViolation, QoS, TopicName};
use crate::router::owner_shard;
use crate::shard::{self, ApiPublish, ShardContext};

/// Where to read how to fix the host.
const TUNING_HINT: &str = "see tuning/README.md";

/// Why a broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The locked-memory limit is too low for io_uring.
    #[error(
        "the locked-memory limit (ulimit -l) is {limit_kib} KiB; io_uring needs at least \
         {needed_kib} KiB for {shards} shard(s). Raise it (ulimit -l, LimitMEMLOCK= in systemd, \
         --ulimit memlock= in docker) or run fewer shards; {TUNING_HINT}"
    )]
    Memlock {
        /// Current locked-memory limit, in KiB.
        limit_kib: u64,
        /// Locked memory the shards need, in KiB.
        needed_kib: u64,
        /// Number of shards configured.
        shards: usize,
    },
    /// io_uring cannot be set up on this host.
    #[error("io_uring is unavailable: {reason}. shardmq needs Linux 6.0+ with io_uring enabled; {TUNING_HINT}")]
    IoUring {
        /// Why the io_uring setup failed.
        reason: String,
    },
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address that could not be bound.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// The password file, the ACL file or a certificate could not be read.
    #[error("{0}")]
    Security(String),
    /// The data directory could not be read or written; holds the reason.
    #[error("durable sessions: {0}")]
    Data(String),
    /// A shard thread could not be spawned; holds the reason.
    #[error("cannot start the shard threads: {0}")]
    Threads(String),
}

/// A configured broker, not yet running.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    hooks: Hooks,
}

/// Builds a [`Broker`] step by step; every setting not given keeps its default.
/// There is one setter per setting of [`Config`], with the same name and type.
#[derive(Debug, Default)]
pub struct BrokerBuilder {
    config: Config,
    hooks: Hooks,
}

/// Declares the setters from the table of settings in `config.rs`.
macro_rules! builder_setters {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty = $default:expr
            => $key:ident: $written:ty, { $($arg:tt)* } $($unset:literal)?;
    )*) => {
        impl BrokerBuilder {
            $(
                $(#[doc = $doc])*
                pub fn $field(mut self, value: impl Into<$ty>) -> Self {
                    self.config.$field = value.into();
                    self
                }
            )*
        }
    };
}

crate::config::for_each_setting!(builder_setters);

impl BrokerBuilder {
    /// Starts from `config` instead of the defaults.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Adds a listener, as a `[[listener]]` block of the file does (beside those of
    /// `listen`).
    pub fn listener(mut self, listener: ListenerConfig) -> Self {
        self.config.listeners.push(listener);
        self
    }

    /// Makes the broker a node of a cluster: `listen` is its cluster address (UDP
    /// membership and TCP node links; port 0 picks one, see
    /// [`BrokerHandle::cluster_addr`]), `seeds` the cluster addresses of nodes to
    /// join through (none: the first node).
    pub fn cluster(mut self, listen: SocketAddr, seeds: &[SocketAddr]) -> Self {
        self.config.cluster_listen = Some(listen);
        self.config.cluster_seeds = Some(seeds.iter().map(ToString::to_string).collect())
            .filter(|s: &Vec<_>| !s.is_empty());
        self
    }

    /// Registers hooks (see [`crate::hooks`]).
    pub fn hooks(mut self, register: impl FnOnce(&mut Hooks)) -> Self {
        register(&mut self.hooks);
        self
    }

    /// Validates the settings into a [`Broker`].
    pub fn build(self) -> Result<Broker, StartError> {
        let mut broker = Broker::new(self.config)?;
        broker.hooks = self.hooks;
        Ok(broker)
    }

    /// Builds and starts the broker.
    pub fn start(self) -> Result<BrokerHandle, StartError> {
        self.build()?.start()
    }
}

/// Why [`BrokerHandle::publish`] refused a message.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The topic name is not valid.
    #[error("invalid topic: {0}")]
    Topic(#[from] ProtocolViolation),
    /// The broker has been stopped.
    #[error("the broker is stopped")]
    Stopped,
}

/// The smallest io_uring memory a shard can work with.
const IO_MEMORY_MIN: usize = 256 * 1024;
/// What a network-only shard needs; glommio's default (10 MiB) is for file I/O.
const IO_MEMORY_MAX: usize = 1024 * 1024;

impl Broker {
    /// Validates `config`.
    pub fn new(config: Config) -> Result<Broker, StartError> {
        config.validate()?;
        Ok(Broker { config, hooks: Hooks::default() })
    }

    /// A builder starting from the defaults.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// Binds the listeners and starts one pinned shard per configured CPU.
    pub fn start(self) -> Result<BrokerHandle, StartError> {
        let config = Arc::new(self.config);
        let cpus = config.shard_cpus()?;
        let shards = cpus.len();
        let io_memory = io_memory_per_shard(shards)?;
        check_io_uring(io_memory)?;

        let loaded = shard::Reload::load(&config).map_err(StartError::Security)?;
        let (listeners, local_addrs) = bind_all(&config, shards)?;
        let (metrics, metrics_addr) = match config.metrics_listen {
            Some(addr) => {
                let fd = net::bind_listener(addr, 128)
                    .map_err(|source| StartError::Bind { addr, source })?;
                let bound =
                    net::local_addr(&fd).map_err(|source| StartError::Bind { addr, source })?;
                (Some(fd), Some(bound))
            }
            None => (None, None),
        };
        let cluster = match config.cluster_listen {
            Some(addr) => {
                let (udp, tcp, bound) =
                    net::bind_cluster(addr).map_err(|source| StartError::Bind { addr, source })?;
                let seeds = resolve_seeds(config.cluster_seeds.as_deref().unwrap_or_default());
                let key =
                    config.cluster_secret_file.as_deref().map(read_cluster_key).transpose()?;
                let tls = match (
                    &config.cluster_tls_cert_file,
                    &config.cluster_tls_key_file,
                    &config.cluster_tls_ca_file,
                ) {
                    (Some(cert), Some(key), Some(ca)) => Some(
                        net::tls::NodeTls::load(cert, key, ca)
                            .map_err(|e| StartError::Security(format!("cluster TLS: {e}")))?,
                    ),
                    _ => None,
                };
                Some(shard::ClusterSockets { udp, tcp, addr: bound, seeds, key, tls })
            }
            None => None,
        };
        let cluster_addr = cluster.as_ref().map(|c| c.addr);
        let stop = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        // Bounded: a program that publishes faster than the broker routes blocks in
        // `publish` instead of growing a queue.
        let (api_tx, api_rx): (Vec<_>, Vec<_>) = (0..shards)
            .map(|_| {
                let (tx, rx) = crossbeam_channel::bounded(config.ring_batch_max.get() * 16);
                (tx, Some(rx))
            })
            .unzip();
        let (durable, durable_ready) = match &config.data_dir {
            Some(dir) => {
                let recovered = crate::persist::open(dir, shards).map_err(|e| {
                    StartError::Data(format!("data directory {}: {e}", dir.display()))
                })?;
                let stats = recovered.stats;
                info!(
                    dir = %dir.display(),
                    generation = stats.generation,
                    segments = stats.segments,
                    bytes = stats.bytes,
                    records = stats.records,
                    sessions = stats.sessions,
                    expired = stats.expired,
                    retained = stats.retained,
                    torn = stats.torn,
                    corrupt = stats.corrupt,
                    millis = stats.millis,
                    "data directory replayed"
                );
                let (tx, rx) = crossbeam_channel::unbounded();
                let durable = shard::log::Durable {
                    recovered: Mutex::new(recovered.shards.into_iter().map(Some).collect()),
                    ready: tx,
                    committed: std::sync::atomic::AtomicBool::new(false),
                    recovery: stats,
                };
                (Some(Arc::new(durable)), Some((rx, dir.clone(), recovered.generation)))
            }
            None => (None, None),
        };
        let ctx = ShardContext {
            config: Arc::clone(&config),
            hooks: Arc::new(self.hooks),
            api: Arc::new(Mutex::new(api_rx)),
            data_mesh: MeshBuilder::full(shards, config.ring_capacity.get()),
            ctrl_mesh: MeshBuilder::full(shards, config.ring_capacity.get()),
            listeners: Arc::new(Mutex::new(listeners)),
            metrics: Arc::new(Mutex::new(metrics)),
            stop: Arc::clone(&stop),
            reload: Arc::clone(&reload),
            loaded: Arc::new(loaded),
            cluster: Arc::new(Mutex::new(cluster)),
            durable: durable.clone(),
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
            .spin_before_park(config.spin_before_park)
            // `ctx` moves into each thread's copy of the closure, copied here on the calling
            // thread: cloning it inside the shard threads would race on the `Rc` that
            // glommio's MeshBuilder holds (a heap-corruption abort at shutdown, 1 in 6).
            .on_all_shards(move || shard::run(ctx))
            .map_err(|e| StartError::Threads(e.to_string()))?;
        if let (Some(durable), Some((ready, dir, generation))) = (&durable, durable_ready) {
            if let Err(e) = shard::log::commit(&dir, generation, shards, &ready) {
                stop.store(true, Ordering::Release);
                let _ = threads.join_all();
                return Err(StartError::Data(e));
            }
            durable.committed.store(true, Ordering::Release);
        }
        info!(
            shards,
            ?cpus,
            io_memory_kib = io_memory / 1024,
            listen = ?local_addrs,
            metrics = ?metrics_addr,
            cluster = ?cluster_addr,
            "shardmq started"
        );
        info!(
            "sizing: {}; io_uring memory {} KiB per shard ({})",
            config.sizing_report(),
            io_memory / 1024,
            match memlock_limit() {
                Some(limit) =>
                    format!("half the {} KiB memlock limit, at most 1024 KiB", limit / 1024),
                None => "memlock unlimited".to_owned(),
            }
        );
        Ok(BrokerHandle {
            local_addrs,
            metrics_addr,
            cluster_addr,
            stop,
            reload,
            api: api_tx,
            threads: Some(threads),
        })
    }
}

/// A running broker. Dropping it stops the broker too.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    cluster_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    /// Per shard, the way in for [`BrokerHandle::publish`].
    api: Vec<crossbeam_channel::Sender<ApiPublish>>,
    threads: Option<PoolThreadHandles<()>>,
}

impl BrokerHandle {
    /// The addresses the broker listens on (ports resolved when 0 was asked).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The cluster address (port resolved), when the broker is a cluster node.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster_addr
    }

    /// Publishes a message as if a client had, from this program. Messages to one
    /// topic keep their order (they enter through the shard owning the topic).
    /// Blocks while that shard is behind; call it from outside the broker's threads.
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), PublishError> {
        let topic = TopicName::try_from(topic)?;
        let shard = owner_shard(topic.as_str().as_bytes(), self.api.len());
        let publish = ApiPublish { topic, payload: payload.into(), qos, retain };
        self.api[shard].send(publish).map_err(|_| PublishError::Stopped)
    }

    /// The address of the Prometheus endpoint, if `metrics_listen` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// A flag that stops the broker when set (e.g. from a signal handler).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Rereads the password file, the ACL file and the listeners' certificates
    /// within a tick, without dropping a connection. A file that does not read is
    /// logged and everything stays as it was.
    pub fn reload(&self) {
        self.reload.store(true, Ordering::Release);
    }

    /// A flag that reloads the files when set (e.g. from a SIGHUP handler); see
    /// [`BrokerHandle::reload`].
    pub fn reload_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.reload)
    }

    /// Stops accepting, closes every connection, and joins the shard threads.
    /// Returns an error if a shard thread failed.
    pub fn shutdown(mut self) -> Result<(), ShardFailed> {
        self.stop.store(true, Ordering::Release);
        self.join_threads()
    }

    /// Blocks until the broker stops (its stop flag is set, or every shard thread
    /// ended). Returns an error if a shard thread failed.
    pub fn wait(mut self) -> Result<(), ShardFailed> {
        self.join_threads()
    }

    fn join_threads(&mut self) -> Result<(), ShardFailed> {
        // Wakes the shards' API receivers, which wait on these channels.
        self.api.clear();
        let Some(threads) = self.threads.take() else { return Ok(()) };
        let mut failures = Vec::new();
        for result in threads.join_all() {
            if let Err(e) = result {
                tracing::error!("shard thread failed: {e}");
                failures.push(e.to_string());
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ShardFailed(failures.join("; ")))
        }
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Failures were logged by join_threads; a destructor cannot return them.
        let _ = self.join_threads();
    }
}

/// A shard thread ended with an error (e.g. it could not be pinned to its CPU).
#[derive(Debug, thiserror::Error)]
#[error("shard thread failed: {0}")]
pub struct ShardFailed(String);

fn bind_all(
    config: &Config,
    shards: usize,
) -> Result<(Vec<Vec<OwnedFd>>, Vec<SocketAddr>), StartError> {
    let mut per_shard: Vec<Vec<OwnedFd>> = (0..shards).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    for listener in config.listeners_effective() {
        // The first bind resolves port 0; the other shards bind the same port.
        let mut addr = listener.bind;
        if addr.port() != 0 {
            net::ensure_port_free(addr).map_err(|source| StartError::Bind { addr, source })?;
        }
        for fds in per_shard.iter_mut() {
            let fd = net::bind_listener(addr, config.listen_backlog.get())
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
    crate::config::proc_limit("Max locked memory")
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
            .map_err(|e| e.to_string())?;
        // The shards' socket rings: multishot receive into a ring of provided buffers.
        shard::probe_socket_ring().map_err(|e| format!("socket ring: {e}"))
    });
    match probe.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(StartError::IoUring { reason }),
        Err(_) => Err(StartError::IoUring { reason: "the probe thread panicked".to_owned() }),
    }
}

/// The key of the cluster secret in `path`; an error names the file, never the
/// secret.
fn read_cluster_key(path: &std::path::Path) -> Result<ClusterKey, StartError> {
    let contents = std::fs::read(path).map_err(|e| {
        StartError::Security(format!("cannot read the cluster secret file {}: {e}", path.display()))
    })?;
    ClusterKey::from_secret(&contents)
        .map_err(|e| StartError::Security(format!("{}: {e}", path.display())))
}

/// The cluster seeds as addresses; a seed that does not resolve is logged and
/// skipped (the node still joins through the others, or is joined by them).
fn resolve_seeds(seeds: &[String]) -> Vec<SocketAddr> {
    use std::net::ToSocketAddrs;
    let mut resolved = Vec::new();
    for seed in seeds {
        match seed.to_socket_addrs() {
            Ok(addrs) => resolved.extend(addrs),
            Err(e) => tracing::warn!(seed = %seed, "cluster seed does not resolve: {e}"),
        }
    }
    resolved
}
