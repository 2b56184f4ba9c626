//! Every setting of the broker, declared once, with its built-in default, validated
//! once at start-up.
//!
//! `for_each_setting!` is the one declaration: a row per setting gives the field of
//! [`Config`] (its typed value and default) and how the setting is written, in
//! `shardmq.toml` and as a flag (the key and the written type). From that table come
//! [`Config`] and its `Default`, [`ConfigLayer`] (what one file or one command line
//! sets: serde reads the file, clap the flags, `--help` shows the real defaults) and
//! the [`BrokerBuilder`](crate::BrokerBuilder) setters. Settings resolve as defaults,
//! then the file, then the flags ([`Config::resolve`]); [`Config::validate`] then checks
//! each value and the relations between values, so a broker never starts on settings
//! that cannot work together.
//!
//! Names put the noun first and the unit last (`inflight_max`, `keep_alive_max_secs`).
//! A `Duration` field drops the unit, its key keeps it (`connect_timeout` is written
//! `connect_timeout_secs`). "Off" is `None`, written 0: the keys, flags and zeros are
//! those users' files already hold.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZero, NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize, ParseIntError};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::router::{self, SHARDS_MAX};
use crate::session::SessionLimits;

mod listener;
pub use listener::{ListenerConfig, ListenerKind};

/// A setting that cannot work, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting has a value that cannot work.
    #[error("invalid setting `{name}`: {reason}")]
    Invalid {
        /// Name of the setting.
        name: &'static str,
        /// Why the value cannot work.
        reason: String,
    },
    /// Two settings that cannot work together.
    #[error("settings `{first}` and `{second}` conflict: {reason}")]
    Conflict {
        /// Name of one setting.
        first: &'static str,
        /// Name of the other.
        second: &'static str,
        /// Why they cannot work together.
        reason: String,
    },
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path of the config file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("cannot parse config file {path}: {source}")]
    Parse {
        /// Path of the config file.
        path: String,
        /// The TOML error.
        source: Box<toml::de::Error>,
    },
}

/// When a durable record reaches the disk (`--sync`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Group commit: the records of one pass share one fdatasync, and the
    /// acknowledgements of that pass wait for it.
    Always,
    /// fdatasync every `sync_interval_ms`; acknowledgements at once.
    #[default]
    Interval,
    /// Left to the operating system.
    Never,
}

impl fmt::Display for SyncMode {
    /// The flag's spelling, for `--help`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = clap::ValueEnum::to_possible_value(self).expect("no variant is skipped");
        f.write_str(value.get_name())
    }
}

/// How a shared subscription group picks the member that gets a message, as the
/// setting is written (`round_robin` in the file, `round-robin` as a flag).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SharedStrategy {
    /// Each member in turn.
    #[default]
    RoundRobin,
    /// A member at random.
    Random,
    /// The same member while it stays subscribed and connected.
    Sticky,
}

impl From<SharedStrategy> for router::SharedStrategy {
    fn from(strategy: SharedStrategy) -> Self {
        match strategy {
            SharedStrategy::RoundRobin => router::SharedStrategy::RoundRobin,
            SharedStrategy::Random => router::SharedStrategy::Random,
            SharedStrategy::Sticky => router::SharedStrategy::Sticky,
        }
    }
}

impl fmt::Display for SharedStrategy {
    /// The flag's spelling, for `--help`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = clap::ValueEnum::to_possible_value(self).expect("no variant is skipped");
        f.write_str(value.get_name())
    }
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name, reason: reason.into() }
}

fn conflict(first: &'static str, second: &'static str, reason: String) -> ConfigError {
    ConfigError::Conflict { first, second, reason }
}

/// A non-zero constant, checked at compile time.
macro_rules! nz {
    ($n:expr) => {
        const {
            match NonZero::new($n) {
                Some(n) => n,
                None => panic!("zero"),
            }
        }
    };
}

/// The table of settings, the one place each is declared. A row reads
///
/// ```text
/// /// Doc: the Config field's, the flag's --help and the builder setter's.
/// field: Type = default => key: Written, { clap attributes beyond `long` } "unset";
/// ```
///
/// `key` names the setting in the file and, in kebab case, as a flag; `Written` is
/// what the file and the flag hold, converted into `Type` by [`Written`]; "unset" is
/// what `--help` says when the default is `None` with no written form.
/// `$callback! { rows }` hands the table to each consumer (this module, `broker.rs`).
macro_rules! for_each_setting {
    ($callback:ident) => {
        $callback! {
            /// Addresses to accept MQTT connections on; repeat the flag for several. Every
            /// shard listens on each (SO_REUSEPORT) and the kernel spreads connections.
            listen: Vec<SocketAddr> = vec![SocketAddr::from(([0, 0, 0, 0], 1883))]
                => listen: Vec<SocketAddr>, { value_name = "ADDR" };
            /// Number of shards, one pinned thread each.
            cores: Option<NonZeroUsize> = None
                => cores: NonZeroUsize, { value_name = "N" } "one per CPU the process may run on";
            /// CPUs to pin shards to, one shard each, e.g. `0,2,4`; a flag `--cores` alone
            /// drops the file's list.
            cpus: Option<Vec<usize>> = None
                => cpus: Vec<usize>, { value_name = "LIST", value_delimiter = ',' } "none";
            /// This node's id, part of every message id.
            node_id: u16 = 0 => node_id: u16, {};
            /// How long an idle shard spins before it sleeps, in microseconds. Spinning cuts
            /// cross-shard wake-up latency on VMs (about 100 us to 11 us) at the cost of CPU.
            spin_before_park: Duration = Duration::ZERO
                => spin_before_park_us: Micros, { value_name = "MICROS" };
            /// Slots per cross-shard ring; each slot carries one batch.
            ring_capacity: NonZeroUsize = nz!(256) => ring_capacity: NonZeroUsize, {};
            /// Most items per cross-shard batch.
            ring_batch_max: NonZeroUsize = nz!(64) => ring_batch_max: NonZeroUsize, {};
            /// Batches that may wait per destination while its ring is full, before the
            /// readers feeding it are paused.
            ring_overflow_max: NonZeroUsize = nz!(1024) => ring_overflow_max: NonZeroUsize, {};
            /// Listen backlog of each listener socket.
            listen_backlog: NonZeroU32 = nz!(4096) => listen_backlog: NonZeroU32, {};
            /// Size of each shard's read chunk, which the bytes every connection of the
            /// shard receives are gathered into (no read buffer per connection).
            read_buffer_bytes: NonZeroUsize = nz!(64 * 1024)
                => read_buffer_bytes: NonZeroUsize, {};
            /// Provided receive buffers per shard, 4 KiB each, shared by every connection of
            /// the shard (a power of two, at most 32768). What arrives while all are in use
            /// waits in the kernel's socket buffers until the shard takes what it has.
            recv_buffers: NonZeroU16 = nz!(1024) => recv_buffers: NonZeroU16, {};
            /// Receive coalescing: while most arrivals come from connections that each
            /// send more than one packet per quarter of this time (a flood of one packet
            /// per write), the shard takes arrivals at most once per this many
            /// microseconds, so each receive gathers several packets and far fewer TCP
            /// acknowledgements are sent. Adds up to this much latency while on; 0 is
            /// off; at most 10000.
            recv_coalesce: Option<Duration> = Some(Duration::from_micros(2000))
                => recv_coalesce_us: Micros, { value_name = "MICROS" };
            /// Bytes pending toward one client beyond which QoS 0 messages are queued (or
            /// dropped) instead of buffered.
            out_buffer_max_bytes: NonZeroUsize = nz!(1024 * 1024)
                => out_buffer_max_bytes: NonZeroUsize, {};
            /// Largest packet accepted, in bytes, fixed header included (64 to 268435460).
            packet_size_max: usize = 1024 * 1024 => packet_size_max: usize, {};
            /// Seconds a new connection has to send CONNECT (and finish MQTT 5 enhanced
            /// authentication).
            connect_timeout: Duration = Duration::from_secs(10)
                => connect_timeout_secs: Secs, { value_name = "SECS" };
            /// Password file (`user:hash` lines; `shardmq passwd` writes it, Mosquitto's
            /// `mosquitto_passwd` files read as they are). Reloaded on SIGHUP.
            password_file: Option<PathBuf> = None
                => password_file: PathBuf, { value_name = "FILE" } "none";
            /// ACL file in Mosquitto's `acl_file` syntax; with one, a client may use only
            /// the topics it grants. Reloaded on SIGHUP.
            acl_file: Option<PathBuf> = None
                => acl_file: PathBuf, { value_name = "FILE" } "none";
            /// Whether clients without a user name may connect, on listeners that do not
            /// say otherwise.
            allow_anonymous: Option<bool> = None
                => allow_anonymous: bool, { value_name = "BOOL" }
                "true without a password_file, false with one";
            /// Failed logins per minute from one address (per shard) after which its
            /// further CONNECTs are refused until the minute passes; 0: no limit.
            login_failures_max: u32 = 10 => login_failures_max: u32, {};
            /// Seconds an offline persistent MQTT 3 session is kept, and the cap on an
            /// MQTT 5 client's Session Expiry Interval; 0 keeps sessions forever.
            session_expiry: Option<Duration> = Some(Duration::from_secs(2 * 60 * 60))
                => session_expiry_secs: Secs, { value_name = "SECS" };
            /// MQTT 5: the broker's Receive Maximum, the QoS 2 PUBLISHes a client may have
            /// awaiting PUBREL; one more is answered with DISCONNECT 0x93 [MQTT-3.3.4-8].
            receive_maximum: NonZeroU16 = nz!(1024) => receive_maximum: NonZeroU16, {};
            /// MQTT 5: topic aliases a client may set toward the broker (Topic Alias
            /// Maximum in CONNACK); 0 allows none.
            topic_alias_max: u16 = 64 => topic_alias_max: u16, {};
            /// MQTT 5: the longest keep-alive granted, in seconds; a client asking for more
            /// (or for none) gets this in CONNACK's Server Keep Alive; 0: no cap.
            keep_alive_max_secs: Option<NonZeroU16> = None
                => keep_alive_max_secs: u16,
                { long = "keep-alive-max", alias = "keep-alive-max-secs", value_name = "SECS" };
            /// How a shared subscription picks the member that gets a message.
            shared_subscription_strategy: SharedStrategy = SharedStrategy::RoundRobin
                => shared_subscription_strategy: SharedStrategy, {};
            /// Messages waiting per session (offline, or its window full).
            mqueue_len_max: NonZeroUsize = nz!(1000) => mqueue_len_max: NonZeroUsize, {};
            /// Whether QoS 0 messages wait in the mqueue too.
            mqueue_store_qos0: bool = true
                => mqueue_store_qos0: bool, { value_name = "BOOL" };
            /// Unacknowledged QoS 1/2 messages per client.
            inflight_max: NonZeroU16 = nz!(32) => inflight_max: NonZeroU16, {};
            /// MQTT 3.1/3.1.1 only: seconds between resends of unacknowledged messages to a
            /// connected client; 0 resends only on reconnect, as 3.1.1 asks. MQTT 5
            /// clients get resends only on reconnect whatever this says [MQTT-4.4.0-1].
            retry_interval: Option<Duration> = None
                => retry_interval_secs: Secs, { value_name = "SECS" };
            /// Log filter (tracing `EnvFilter` syntax: error, warn, info, debug, trace, or
            /// per module) when `RUST_LOG` is unset.
            log_level: String = "info".to_owned()
                => log_level: String, { value_name = "FILTER" };
            /// This node's name in `$SYS/brokers/<node>/`.
            node_name: Option<String> = None => node_name: String, {} "shardmq@<hostname>";
            /// Address for node-to-node traffic: membership gossip over UDP and node links
            /// over TCP, on the same port. Unset: a single node, no cluster.
            cluster_listen: Option<SocketAddr> = None
                => cluster_listen: SocketAddr, { value_name = "ADDR" } "off (one node)";
            /// Cluster addresses (`host:port`) of nodes to join through, comma separated;
            /// a node that lists none starts a cluster of its own for others to join.
            cluster_seeds: Option<Vec<String>> = None
                => cluster_seeds: Vec<String>, { value_name = "ADDRS", value_delimiter = ',' } "none";
            /// File holding the secret every node of the cluster shares (at least 16
            /// bytes): membership datagrams carry its MAC and node links prove it, so
            /// that a process without it can neither join nor feed a node. It does not
            /// encrypt: keep the cluster port on a private network.
            cluster_secret_file: Option<PathBuf> = None
                => cluster_secret_file: PathBuf, { value_name = "FILE" } "none";
            /// PEM certificate chain this node presents on its node links, both ways
            /// (TLS 1.3, mutual): it must name the node's cluster address (an IP
            /// SAN). Needs `cluster_tls_key_file` and `cluster_tls_ca_file`.
            cluster_tls_cert_file: Option<PathBuf> = None
                => cluster_tls_cert_file: PathBuf, { value_name = "FILE" } "none (plain TCP)";
            /// PEM private key of `cluster_tls_cert_file`.
            cluster_tls_key_file: Option<PathBuf> = None
                => cluster_tls_key_file: PathBuf, { value_name = "FILE" } "none";
            /// PEM CA certificates every other node's link certificate must chain to.
            cluster_tls_ca_file: Option<PathBuf> = None
                => cluster_tls_ca_file: PathBuf, { value_name = "FILE" } "none";
            /// How long a node may stop answering membership probes before the others
            /// declare it down and drop its routes, in milliseconds.
            cluster_failure_timeout: Duration = Duration::from_secs(3)
                => cluster_failure_timeout_ms: Millis, { value_name = "MILLIS" };
            /// Nodes (this one included) a node must see up to serve clients: with
            /// fewer, it closes its client connections (MQTT 5: DISCONNECT 0x9C, Use
            /// another server) and refuses new ones until it sees enough again, so
            /// that during a partition only the side with a quorum accepts messages.
            /// Set it to a majority of the cluster (2 of 3, 3 of 5); 0: off.
            cluster_quorum: Option<NonZeroU16> = None
                => cluster_quorum: u16, { value_name = "NODES" } "off";
            /// Bytes that may wait toward one node while its link is slow or down; beyond,
            /// messages for it are dropped and counted (but for QoS 1/2 messages of one
            /// pass while the link is connected: their publishers are acknowledged).
            cluster_link_buffer_bytes: NonZeroUsize = nz!(16 * 1024 * 1024)
                => cluster_link_buffer_bytes: NonZeroUsize, {};
            /// Directory of the durable sessions and retained messages: each shard keeps
            /// its log there. Unset: nothing survives a restart.
            data_dir: Option<PathBuf> = None
                => data_dir: PathBuf, { value_name = "DIR" } "off (in memory)";
            /// When log records reach the disk: `always` (acknowledgements wait for
            /// them), `interval` (every `sync_interval_ms`) or `never` (the OS decides).
            sync: SyncMode = SyncMode::Interval => sync: SyncMode, {};
            /// Milliseconds between fdatasyncs under `sync = interval`.
            sync_interval: Duration = Duration::from_millis(10)
                => sync_interval_ms: Millis, { value_name = "MILLIS" };
            /// Bytes of one log segment before the next starts.
            data_segment_bytes: NonZeroU64 = nz!(64 * 1024 * 1024)
                => data_segment_bytes: NonZeroU64, {};
            /// Bytes of log records one shard may hold in memory while its disk is
            /// behind; beyond, the shard stops reading its publishers (and taking
            /// messages from the other shards) until its writer caught up.
            log_buffer_bytes: NonZeroUsize = nz!(16 * 1024 * 1024)
                => log_buffer_bytes: NonZeroUsize, {};
            /// Bytes the logs may take on disk, all shards together (each shard an equal
            /// share): at the limit new durable state is refused (MQTT 5: 0x97). 0: no
            /// limit.
            data_max_bytes: Option<NonZeroU64> = None => data_max_bytes: u64, {};
            /// Seconds between `$SYS` publications; 0 turns `$SYS` off.
            sys_interval: Option<Duration> = Some(Duration::from_secs(10))
                => sys_interval_secs: Secs, { value_name = "SECS" };
            /// Address of the Prometheus endpoint (`GET /metrics`).
            metrics_listen: Option<SocketAddr> = None
                => metrics_listen: SocketAddr,
                { long = "metrics", alias = "metrics-listen", value_name = "ADDR" } "off";
            /// Most client connections, each shard an equal share (rounded up); 0
            /// sizes it from the open-files limit.
            connections_max: Option<NonZeroUsize> = None => connections_max: usize, {};
            /// Longest topic name or filter accepted, in bytes.
            topic_length_max: NonZeroUsize = nz!(65_535) => topic_length_max: NonZeroUsize, {};
            /// Most levels (`/`-separated parts) in a topic name or filter.
            topic_levels_max: NonZeroUsize = nz!(128) => topic_levels_max: NonZeroUsize, {};
            /// Most subscriptions per client; beyond, SUBACK answers 0x80.
            subscriptions_max: NonZeroUsize = nz!(10_000)
                => subscriptions_max: NonZeroUsize, {};
            /// Most retained messages, node-wide (each shard an equal share).
            retained_max: NonZeroUsize = nz!(1_000_000) => retained_max: NonZeroUsize, {};
            /// Most bytes of retained messages, node-wide (each shard an equal share);
            /// 0: 10% of RAM.
            retained_bytes_max: Option<NonZeroU64> = None => retained_bytes_max: u64, {};
            /// PUBLISH packets per second one client may send; 0: no limit. Beyond,
            /// the broker stops reading that client (TCP backpressure), as a token bucket
            /// with one second of burst.
            publish_rate_max: Option<NonZeroU64> = None => publish_rate_max: u64, {};
            /// PUBLISH payload bytes per second one client may send; 0: no limit.
            publish_bytes_rate_max: Option<NonZeroU64> = None
                => publish_bytes_rate_max: u64, {};
            /// New connections per second, node-wide (each shard an equal share); 0:
            /// no limit. Beyond, connections wait in the listen backlog.
            accept_rate_max: Option<NonZeroU64> = None => accept_rate_max: u64, {};
            /// Bytes all session queues may hold, node-wide (each shard an equal share);
            /// 0: 25% of RAM. Beyond, messages that would be queued are dropped
            /// and counted.
            queued_bytes_max: Option<NonZeroU64> = None => queued_bytes_max: u64, {};
            /// Resident memory above which the `memory_high` alarm starts; 0: 80%
            /// of RAM.
            alarm_memory_high_bytes: Option<NonZeroU64> = None
                => alarm_memory_high_bytes: u64, {};
            /// Share of `connections_max` at which the `connections_high` alarm starts, in
            /// (0, 1].
            alarm_connections_ratio: f64 = 0.9 => alarm_connections_ratio: f64, {};
            /// Messages per second dropped from full session queues that start the
            /// `mqueue_drops` alarm.
            alarm_mqueue_drops_per_sec: u64 = 1000 => alarm_mqueue_drops_per_sec: u64, {};
            /// Event-loop lag, in milliseconds, that starts the `event_loop_lag` alarm.
            alarm_lag: Duration = Duration::from_millis(250)
                => alarm_lag_ms: Millis, { value_name = "MILLIS" };
        }
    };
}
pub(crate) use for_each_setting;

/// Declares [`Config`], its defaults and [`ConfigLayer`] from the table.
macro_rules! declare_settings {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty = $default:expr
            => $key:ident: $written:ty, { $($arg:tt)* } $($unset:literal)?;
    )*) => {
        /// Broker settings. `Config::default()` serves on `0.0.0.0:1883` with one shard
        /// per CPU the process may run on.
        #[derive(Clone, Debug, PartialEq)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            /// Listeners of the file's `[[listener]]` blocks, beside those of `listen`.
            pub listeners: Vec<ListenerConfig>,
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $field: $default, )* listeners: Vec::new() }
            }
        }

        /// The settings one source sets, as written: a TOML file (snake_case keys) or
        /// the command line (the same names in kebab case). Unset ones are `None`.
        #[derive(Clone, Debug, Default, Deserialize, clap::Args)]
        #[serde(default, deny_unknown_fields)]
        pub struct ConfigLayer {
            $( $(#[doc = $doc])* #[arg(long, $($arg)*)] $key: Option<$written>, )*
            /// `[[listener]]` blocks: the file only, a flag cannot hold one.
            #[arg(skip)]
            listener: Option<Vec<ListenerConfig>>,
        }

        impl Config {
            /// Overrides every setting `layer` sets.
            fn apply_each(&mut self, layer: ConfigLayer) {
                if let Some(listeners) = layer.listener {
                    self.listeners = listeners;
                }
                $(
                    if let Some(written) = layer.$key {
                        self.$field = <$written as Written<$ty>>::value(written);
                    }
                )*
            }

            /// Each flag's id, its default as written (`None` when the default has no
            /// written form) and what the flag being unset means.
            fn written_defaults() -> Vec<(&'static str, Option<String>, Option<&'static str>)> {
                let defaults = Config::default();
                vec![$(
                    (
                        stringify!($key),
                        <$written as Written<$ty>>::written(&defaults.$field),
                        None $(.or(Some($unset)))?,
                    ),
                )*]
            }
        }
    };
}

for_each_setting!(declare_settings);

/// How a setting of type `T` is written in the file and as a flag.
trait Written<T> {
    /// The setting's value.
    fn value(self) -> T;
    /// `value` as written, for `--help`; `None` when it has no written form.
    fn written(value: &T) -> Option<String>;
}

/// Settings written as their own type.
macro_rules! written_as_is {
    ($($t:ty),*) => {$(
        impl Written<$t> for $t {
            fn value(self) -> $t {
                self
            }
            fn written(value: &$t) -> Option<String> {
                Some(value.to_string())
            }
        }
    )*};
}
written_as_is!(u16, u32, u64, usize, f64, bool, String, SocketAddr, SharedStrategy, SyncMode);
written_as_is!(NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize);

/// Optional settings written as their value when set, absent when not.
macro_rules! written_when_set {
    ($($t:ty),*) => {$(
        impl Written<Option<$t>> for $t {
            fn value(self) -> Option<$t> {
                Some(self)
            }
            fn written(value: &Option<$t>) -> Option<String> {
                value.as_ref().map(ToString::to_string)
            }
        }
    )*};
}
written_when_set!(NonZeroUsize, SocketAddr, bool);

/// Optional settings written as a count, 0 for `None`.
macro_rules! written_zero_is_none {
    ($($t:ty => $nonzero:ty),*) => {$(
        impl Written<Option<$nonzero>> for $t {
            fn value(self) -> Option<$nonzero> {
                <$nonzero>::new(self)
            }
            fn written(value: &Option<$nonzero>) -> Option<String> {
                Some(value.map_or(0, <$nonzero>::get).to_string())
            }
        }
    )*};
}
written_zero_is_none!(u16 => NonZeroU16, u64 => NonZeroU64, usize => NonZeroUsize);

impl<T: fmt::Display> Written<Vec<T>> for Vec<T> {
    fn value(self) -> Vec<T> {
        self
    }
    fn written(value: &Vec<T>) -> Option<String> {
        Some(value.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
    }
}

impl Written<Option<Vec<usize>>> for Vec<usize> {
    fn value(self) -> Option<Vec<usize>> {
        Some(self)
    }
    fn written(value: &Option<Vec<usize>>) -> Option<String> {
        value.as_ref().and_then(<Vec<usize> as Written<Vec<usize>>>::written)
    }
}

/// An empty list is no list.
impl Written<Option<Vec<String>>> for Vec<String> {
    fn value(self) -> Option<Vec<String>> {
        Some(self).filter(|list| list.iter().any(|s| !s.is_empty()))
    }
    fn written(value: &Option<Vec<String>>) -> Option<String> {
        value.as_ref().and_then(<Vec<String> as Written<Vec<String>>>::written)
    }
}

/// The empty name is no name (files written before `None` existed hold `""`).
impl Written<Option<String>> for String {
    fn value(self) -> Option<String> {
        Some(self).filter(|name| !name.is_empty())
    }
    fn written(value: &Option<String>) -> Option<String> {
        value.clone()
    }
}

impl Written<Option<PathBuf>> for PathBuf {
    fn value(self) -> Option<PathBuf> {
        Some(self).filter(|path| !path.as_os_str().is_empty())
    }
    fn written(value: &Option<PathBuf>) -> Option<String> {
        value.as_ref().map(|path| path.display().to_string())
    }
}

/// A duration written as a whole number of `UNIT`s.
macro_rules! written_duration {
    ($($name:ident: $from:ident, $as:ident, $doc:literal;)*) => {$(
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, Deserialize)]
        #[serde(transparent)]
        struct $name(u64);

        impl FromStr for $name {
            type Err = ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }

        impl Written<Duration> for $name {
            fn value(self) -> Duration {
                Duration::$from(self.0)
            }
            fn written(value: &Duration) -> Option<String> {
                Some(value.$as().to_string())
            }
        }
    )*};
}
written_duration! {
    Secs: from_secs, as_secs, "A duration written in seconds.";
    Millis: from_millis, as_millis, "A duration written in milliseconds.";
    Micros: from_micros, as_micros, "A duration written in microseconds.";
}

/// 0 microseconds is `None`: off.
impl Written<Option<Duration>> for Micros {
    fn value(self) -> Option<Duration> {
        Some(Duration::from_micros(self.0)).filter(|d| !d.is_zero())
    }
    fn written(value: &Option<Duration>) -> Option<String> {
        Some(value.map_or(0, |d| d.as_micros() as u64).to_string())
    }
}

/// 0 seconds is `None`: off.
impl Written<Option<Duration>> for Secs {
    fn value(self) -> Option<Duration> {
        Some(Duration::from_secs(self.0)).filter(|d| !d.is_zero())
    }
    fn written(value: &Option<Duration>) -> Option<String> {
        Some(value.map_or(0, |d| d.as_secs()).to_string())
    }
}

impl ConfigLayer {
    /// Reads the settings a TOML file sets.
    pub fn from_toml_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        })
    }

    /// Appends each flag's default to its help, so `--help` shows the values
    /// `Config::default()` really holds. For a command that flattens [`ConfigLayer`].
    pub fn show_defaults(mut command: clap::Command) -> clap::Command {
        for (id, written, unset) in Config::written_defaults() {
            let Some(default) = written.or(unset.map(str::to_owned)) else { continue };
            command = command.mut_arg(id, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {default}]"))
            });
        }
        command
    }
}

impl Config {
    /// The settings in effect: the defaults, overridden by `file` when given, then
    /// by `flags`; validated.
    pub fn resolve(file: Option<&Path>, flags: ConfigLayer) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(path) = file {
            config.apply(ConfigLayer::from_toml_file(path)?);
        }
        config.apply(flags);
        config.validate()?;
        Ok(config)
    }

    /// Overrides the settings `layer` sets. A layer setting `cores` without `cpus`
    /// also drops the `cpus` below it: `--cores 4` wins over a file's CPU list. A
    /// layer with `[[listener]]` blocks and no `listen` drops the `listen` below it:
    /// a file that declares its listeners gets those, not 1883 as well.
    pub fn apply(&mut self, layer: ConfigLayer) {
        let cores_alone = layer.cores.is_some() && layer.cpus.is_none();
        let listeners_alone = layer.listener.is_some() && layer.listen.is_none();
        self.apply_each(layer);
        if cores_alone {
            self.cpus = None;
        }
        if listeners_alone {
            self.listen.clear();
        }
    }

    /// Settings for tests: 2 shards on `127.0.0.1:0`, small limits.
    pub fn test() -> Config {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            cores: Some(nz!(2)),
            read_buffer_bytes: nz!(16 * 1024),
            ..Config::default()
        }
    }

    /// The CPUs shards run on, one shard per entry. Without `cpus`, the CPUs this
    /// process may run on (its affinity mask, as set by `taskset` or systemd's
    /// `CPUAffinity=`), in order, reused round-robin when `cores` asks for more.
    pub fn shard_cpus(&self) -> Result<Vec<usize>, ConfigError> {
        let allowed: Vec<usize> = core_affinity::get_core_ids()
            .map(|ids| ids.into_iter().map(|id| id.id).collect())
            .filter(|ids: &Vec<usize>| !ids.is_empty())
            .unwrap_or_else(|| {
                let online = std::thread::available_parallelism().map_or(1, |n| n.get());
                (0..online).collect()
            });
        let cpus = match (&self.cpus, self.cores) {
            (Some(cpus), _) => cpus.clone(),
            (None, Some(cores)) => (0..cores.get()).map(|i| allowed[i % allowed.len()]).collect(),
            (None, None) => allowed,
        };
        if cpus.is_empty() {
            return Err(invalid("cpus", "at least one CPU is needed"));
        }
        if cpus.len() > SHARDS_MAX {
            return Err(invalid("cores", format!("at most {SHARDS_MAX} shards")));
        }
        Ok(cpus)
    }

    /// Checks every setting and the relations between them; the broker refuses to
    /// start on the first bad one. (Counts that must be positive are `NonZero*`, so
    /// they were refused when read.)
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_addresses()?;
        if let (Some(cores), Some(cpus)) = (self.cores, &self.cpus) {
            if cores.get() != cpus.len() {
                return Err(conflict(
                    "cores",
                    "cpus",
                    format!("{cores} shards asked, {} CPUs listed; set one of them", cpus.len()),
                ));
            }
        }
        self.shard_cpus()?;
        if !(64..=PACKET_SIZE_MAX).contains(&self.packet_size_max) {
            return Err(invalid(
                "packet_size_max",
                format!("must be 64 to {PACKET_SIZE_MAX} bytes, the largest MQTT packet"),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout_secs", "must be longer than 0"));
        }
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers.get() > 1 << 15 {
            return Err(invalid("recv_buffers", "must be a power of two, at most 32768"));
        }
        if self.recv_coalesce.is_some_and(|d| d > Duration::from_micros(10_000)) {
            return Err(invalid("recv_coalesce_us", "must be at most 10000"));
        }
        // The shards count these in whole seconds, and read 0 as off.
        let in_seconds = [
            ("session_expiry_secs", self.session_expiry),
            ("retry_interval_secs", self.retry_interval),
            ("sys_interval_secs", self.sys_interval),
        ];
        for (name, interval) in in_seconds {
            if interval.is_some_and(|d| d < Duration::from_secs(1)) {
                return Err(invalid(name, "must be at least 1 second (or off)"));
            }
        }
        if !(self.alarm_connections_ratio > 0.0 && self.alarm_connections_ratio <= 1.0) {
            return Err(invalid("alarm_connections_ratio", "must be in (0, 1]"));
        }
        Ok(())
    }

    /// Every listener gets its own address: the same one twice cannot be bound.
    fn validate_addresses(&self) -> Result<(), ConfigError> {
        let listeners = self.listeners_effective();
        if listeners.is_empty() {
            return Err(invalid("listen", "at least one address (or [[listener]]) is needed"));
        }
        for listener in &self.listeners {
            listener.validate()?;
        }
        let binds: Vec<SocketAddr> = listeners.iter().map(|l| l.bind).collect();
        // Port 0 binds a fresh port each time, so it may repeat.
        let fixed = |addr: &&SocketAddr| addr.port() != 0;
        for (i, addr) in binds.iter().enumerate().filter(|(_, a)| fixed(a)) {
            if binds[..i].contains(addr) {
                return Err(invalid("listen", format!("{addr} is listed twice")));
            }
        }
        if let Some(metrics) = self.metrics_listen.as_ref().filter(fixed) {
            if binds.contains(metrics) {
                return Err(conflict(
                    "metrics_listen",
                    "listen",
                    format!("{metrics} cannot serve both MQTT and metrics"),
                ));
            }
        }
        let seeds = self.cluster_seeds.as_deref().unwrap_or_default();
        let tls = [
            ("cluster_tls_cert_file", self.cluster_tls_cert_file.is_some()),
            ("cluster_tls_key_file", self.cluster_tls_key_file.is_some()),
            ("cluster_tls_ca_file", self.cluster_tls_ca_file.is_some()),
        ];
        if let (Some(set), Some(unset)) =
            (tls.iter().find(|(_, set)| *set), tls.iter().find(|(_, set)| !*set))
        {
            return Err(conflict(
                set.0,
                unset.0,
                "node links use TLS with a certificate, its key and the cluster's CA: set all three"
                    .to_owned(),
            ));
        }
        // Settings of a cluster node, meaningless without its cluster address.
        let cluster_only = [
            (
                "cluster_seeds",
                !seeds.is_empty(),
                "a node joins a cluster on its own cluster address",
            ),
            (
                "cluster_secret_file",
                self.cluster_secret_file.is_some(),
                "the secret is for node-to-node traffic",
            ),
            ("cluster_tls_cert_file", tls[0].1, "TLS is for node-to-node links"),
            (
                "cluster_quorum",
                self.cluster_quorum.is_some(),
                "a quorum counts the nodes of a cluster",
            ),
        ];
        if self.cluster_listen.is_none() {
            if let Some((name, _, why)) = cluster_only.iter().find(|(_, set, _)| *set) {
                return Err(conflict(name, "cluster_listen", format!("{why}: set cluster_listen")));
            }
        }
        if let Some(seed) = seeds.iter().find(|seed| !seed.contains(':')) {
            return Err(invalid("cluster_seeds", format!("{seed:?} is not host:port")));
        }
        if self.cluster_listen.is_some_and(|addr| addr.ip().is_unspecified()) {
            return Err(invalid(
                "cluster_listen",
                "other nodes reach this one at this address: give a specific IP, not 0.0.0.0 or ::",
            ));
        }
        // This node and the others it can know.
        let nodes_max = crate::cluster::membership::NODES_MAX + 1;
        if self.cluster_quorum.is_some_and(|q| usize::from(q.get()) > nodes_max) {
            return Err(invalid(
                "cluster_quorum",
                format!("a cluster has at most {nodes_max} nodes"),
            ));
        }
        if self.cluster_failure_timeout < Duration::from_millis(200) {
            return Err(invalid("cluster_failure_timeout_ms", "must be at least 200 ms"));
        }
        Ok(())
    }

    /// Every listener: one plain MQTT listener per `listen` address, then the
    /// `[[listener]]` blocks, in that order (the order of
    /// [`BrokerHandle::local_addrs`](crate::BrokerHandle::local_addrs)).
    pub fn listeners_effective(&self) -> Vec<ListenerConfig> {
        let plain = self.listen.iter().map(|addr| ListenerConfig::mqtt(*addr));
        plain.chain(self.listeners.iter().cloned()).collect()
    }

    /// Whether `listener` admits clients without a user name: its own setting, else
    /// `allow_anonymous`, else only when there is no password file.
    pub fn anonymous_allowed(&self, listener: &ListenerConfig) -> bool {
        listener.allow_anonymous.or(self.allow_anonymous).unwrap_or(self.password_file.is_none())
    }

    pub(crate) fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            inflight_max: self.inflight_max.get(),
            // Beyond four billion, a limit is as good as none.
            mqueue_len_max: u32::try_from(self.mqueue_len_max.get()).unwrap_or(u32::MAX),
            mqueue_store_qos0: self.mqueue_store_qos0,
            out_buffer_max: u32::try_from(self.out_buffer_max_bytes.get()).unwrap_or(u32::MAX),
        }
    }

    /// The node name, `shardmq@<hostname>` unless set.
    pub fn node(&self) -> String {
        if let Some(name) = &self.node_name {
            return name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned());
        format!("shardmq@{host}")
    }

    /// `connections_max`, sized from the open-files limit when unset: every
    /// connection is a descriptor, and some are kept for listeners, rings and logs.
    pub fn connections_max_effective(&self) -> usize {
        if let Some(max) = self.connections_max {
            return max.get();
        }
        let nofile = proc_limit("Max open files").unwrap_or(1024);
        usize::try_from(nofile.saturating_sub(256).max(64)).unwrap_or(usize::MAX)
    }

    /// The `memory_high` threshold in bytes.
    pub fn alarm_memory_high_effective(&self) -> u64 {
        or_ram_share(self.alarm_memory_high_bytes, 80)
    }

    /// `queued_bytes_max`, 25% of RAM when unset.
    pub fn queued_bytes_max_effective(&self) -> u64 {
        or_ram_share(self.queued_bytes_max, 25)
    }

    /// `retained_bytes_max`, 10% of RAM when unset.
    pub fn retained_bytes_max_effective(&self) -> u64 {
        or_ram_share(self.retained_bytes_max, 10)
    }

    /// What the broker sized from the machine, and why, for the start-up log.
    pub fn sizing_report(&self) -> String {
        let cpus = self.shard_cpus().map(|c| c.len()).unwrap_or(0);
        let why_shards = match (&self.cpus, self.cores) {
            (Some(_), _) => "--cpus",
            (None, Some(_)) => "--cores",
            (None, None) => "one per CPU the process may run on",
        };
        let mib = |b: u64| b / (1024 * 1024);
        let ram = mib(ram_bytes().unwrap_or(0));
        let why = |set: bool, percent: u64| {
            if set {
                "set".to_owned()
            } else {
                format!("{percent}% of {ram} MiB RAM")
            }
        };
        format!(
            "{cpus} shards ({why_shards}); connections_max {} ({}); queued_bytes_max {} MiB ({}); \
             retained_bytes_max {} MiB ({}); memory_high alarm at {} MiB ({})",
            self.connections_max_effective(),
            if self.connections_max.is_some() { "set" } else { "open-files limit minus 256" },
            mib(self.queued_bytes_max_effective()),
            why(self.queued_bytes_max.is_some(), 25),
            mib(self.retained_bytes_max_effective()),
            why(self.retained_bytes_max.is_some(), 10),
            mib(self.alarm_memory_high_effective()),
            why(self.alarm_memory_high_bytes.is_some(), 80),
        )
    }
}

/// The largest MQTT packet: 1 byte of fixed header, 4 of remaining length, and the
/// largest remaining length, 268,435,455.
const PACKET_SIZE_MAX: usize = 268_435_460;

/// Total RAM from `/proc/meminfo`.
fn ram_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `value`, or `percent`% of RAM when unset (1 GiB if RAM is unknown).
fn or_ram_share(value: Option<NonZeroU64>, percent: u64) -> u64 {
    if let Some(value) = value {
        return value.get();
    }
    ram_bytes().map_or(1 << 30, |ram| ram / 100 * percent)
}

/// A soft limit from `/proc/self/limits` (`None` when unlimited or unreadable).
pub(crate) fn proc_limit(name: &str) -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let soft = line[name.len()..].split_whitespace().next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests;
