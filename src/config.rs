//! Every setting of the broker, with its built-in default, validated once at start-up.
//!
//! Names put the noun first and the unit last (`inflight_max`, `keep_alive_secs`).
//! The same struct is read from `shardmq.toml` (all keys optional) and overridden by
//! command-line flags in `bin/shardmq.rs`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::router::SHARDS_MAX;
use crate::session::SessionLimits;

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

/// How a shared subscription group picks the member that gets a message.
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

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name, reason: reason.into() }
}

/// Broker settings. `Config::default()` serves on `0.0.0.0:1883` with one shard per
/// online CPU.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Addresses to accept MQTT connections on; every shard listens on each
    /// (SO_REUSEPORT) and the kernel spreads connections over them.
    pub listen: Vec<SocketAddr>,
    /// Number of shards (one pinned thread each). `None`: one per online CPU.
    pub cores: Option<usize>,
    /// CPUs to pin shards to, one shard each; overrides `cores`.
    pub cpus: Option<Vec<usize>>,
    /// This node's id, part of every message id.
    pub node_id: u16,
    /// How long an idle shard spins before it sleeps, in microseconds. Spinning cuts
    /// cross-shard wake-up latency on VMs (about 100 us to about 11 us) at the cost
    /// of CPU.
    pub spin_before_park_us: u64,
    /// Slots per cross-shard ring; each slot carries a batch.
    pub ring_capacity: usize,
    /// Most items per cross-shard batch.
    pub ring_batch_max: usize,
    /// Batches that may wait per destination when its ring is full, before readers
    /// feeding it are paused.
    pub ring_overflow_max: usize,
    /// Listen backlog of each listener socket.
    pub listen_backlog: u32,
    /// Bytes read from a socket at once.
    pub read_buffer_bytes: usize,
    /// Bytes pending toward one client beyond which QoS 0 messages are queued (or
    /// dropped) instead of buffered.
    pub out_buffer_max_bytes: usize,
    /// Largest packet accepted, in bytes, fixed header included.
    pub packet_size_max: usize,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Seconds an offline persistent MQTT 3 session is kept; 0 keeps it forever.
    /// Also the cap on an MQTT 5 client's Session Expiry Interval (when above 0).
    pub session_expiry_secs: u64,
    /// The broker's Receive Maximum: QoS 2 PUBLISHes an MQTT 5 client may have
    /// awaiting PUBREL; one more is answered with DISCONNECT 0x93 [MQTT-3.3.4-8].
    pub receive_maximum: u16,
    /// Topic aliases an MQTT 5 client may set toward the broker (Topic Alias
    /// Maximum in CONNACK); 0 = none.
    pub topic_alias_max: u16,
    /// Longest keep-alive an MQTT 5 client gets, in seconds; a client asking for
    /// more (or for none) gets this in CONNACK's Server Keep Alive; 0 = no cap.
    pub keep_alive_max_secs: u16,
    /// How a shared subscription picks the member that gets a message.
    pub shared_subscription_strategy: SharedStrategy,
    /// Messages waiting per session (offline, or window full).
    pub mqueue_len_max: usize,
    /// Whether QoS 0 messages wait in the mqueue too.
    pub mqueue_store_qos0: bool,
    /// Unacknowledged QoS 1/2 messages per client.
    pub inflight_max: u16,
    /// Seconds between resends of unacknowledged messages to a connected MQTT
    /// 3.1/3.1.1 client; 0 resends only on reconnect, as MQTT 3.1.1 asks. Never
    /// applies to MQTT 5 clients, which may only get resends on reconnect
    /// [MQTT-4.4.0-1].
    pub retry_interval_secs: u64,
    /// Log filter (tracing `EnvFilter` syntax) when `RUST_LOG` is unset.
    pub log_level: String,
    /// This node's name in `$SYS/brokers/<node>/`. Empty: `shardmq@<hostname>`.
    pub node_name: String,
    /// Seconds between `$SYS` publications; 0 turns `$SYS` off.
    pub sys_interval_secs: u64,
    /// Address of the Prometheus endpoint (`GET /metrics`); none by default.
    pub metrics_listen: Option<SocketAddr>,
    /// Most client connections; 0 sizes it from the open-files limit. Each shard
    /// takes an equal share (`connections_max / shards`, rounded up).
    pub connections_max: usize,
    /// Longest topic name or filter accepted, in bytes.
    pub topic_length_max: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter.
    pub topic_levels_max: usize,
    /// Most subscriptions per client; beyond, SUBACK answers 0x80.
    pub subscriptions_max: usize,
    /// Most retained messages (node-wide; each shard holds an equal share).
    pub retained_max: usize,
    /// Most bytes of retained messages (node-wide; each shard an equal share);
    /// 0: 10% of RAM.
    pub retained_bytes_max: u64,
    /// PUBLISH packets per second one client may send; 0 = no limit. Beyond, the
    /// broker stops reading that client's socket until the rate is back (TCP
    /// backpressure), as a token bucket with one second of burst.
    pub publish_rate_max: u64,
    /// PUBLISH payload bytes per second one client may send; 0 = no limit.
    pub publish_bytes_rate_max: u64,
    /// New connections per second accepted (node-wide, shared equally by the
    /// shards); 0 = no limit. Beyond, connections wait in the listen backlog.
    pub accept_rate_max: u64,
    /// Bytes all session queues may hold (node-wide, shared equally by the shards);
    /// 0: 25% of RAM. Beyond, messages that would be queued are dropped and counted.
    pub queued_bytes_max: u64,
    /// Resident memory above which the `memory_high` alarm starts; 0: 80% of RAM.
    pub alarm_memory_high_bytes: u64,
    /// Share of `connections_max` at which the `connections_high` alarm starts.
    pub alarm_connections_ratio: f64,
    /// Messages per second dropped from full session queues that start the
    /// `mqueue_drops` alarm.
    pub alarm_mqueue_drops_per_sec: u64,
    /// Event-loop lag (milliseconds) that starts the `event_loop_lag` alarm.
    pub alarm_lag_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 1883))],
            cores: None,
            cpus: None,
            node_id: 0,
            spin_before_park_us: 0,
            ring_capacity: 256,
            ring_batch_max: 64,
            ring_overflow_max: 1024,
            listen_backlog: 4096,
            read_buffer_bytes: 64 * 1024,
            out_buffer_max_bytes: 1024 * 1024,
            packet_size_max: 1024 * 1024,
            connect_timeout_secs: 10,
            session_expiry_secs: 2 * 60 * 60,
            receive_maximum: 1024,
            topic_alias_max: 64,
            keep_alive_max_secs: 0,
            shared_subscription_strategy: SharedStrategy::RoundRobin,
            mqueue_len_max: 1000,
            mqueue_store_qos0: true,
            inflight_max: 32,
            retry_interval_secs: 0,
            log_level: "info".to_owned(),
            node_name: String::new(),
            sys_interval_secs: 10,
            metrics_listen: None,
            connections_max: 0,
            topic_length_max: 65_535,
            topic_levels_max: 128,
            subscriptions_max: 10_000,
            retained_max: 1_000_000,
            retained_bytes_max: 0,
            publish_rate_max: 0,
            publish_bytes_rate_max: 0,
            accept_rate_max: 0,
            queued_bytes_max: 0,
            alarm_memory_high_bytes: 0,
            alarm_connections_ratio: 0.9,
            alarm_mqueue_drops_per_sec: 1000,
            alarm_lag_ms: 250,
        }
    }
}

impl Config {
    /// Reads a TOML file; missing keys keep their defaults.
    pub fn from_toml_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        })
    }

    /// Settings for tests: 2 shards on `127.0.0.1:0`, small limits.
    pub fn test() -> Config {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            cores: Some(2),
            read_buffer_bytes: 16 * 1024,
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
            (None, Some(cores)) => (0..cores).map(|i| allowed[i % allowed.len()]).collect(),
            (None, None) => allowed,
        };
        if cpus.is_empty() {
            return Err(invalid("cores", "at least one shard is needed"));
        }
        if cpus.len() > SHARDS_MAX {
            return Err(invalid("cores", format!("at most {SHARDS_MAX} shards")));
        }
        Ok(cpus)
    }

    /// Checks every setting; the broker refuses to start on the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(invalid("listen", "at least one address is needed"));
        }
        self.shard_cpus()?;
        let positive: [(&'static str, usize); 12] = [
            ("topic_length_max", self.topic_length_max),
            ("topic_levels_max", self.topic_levels_max),
            ("subscriptions_max", self.subscriptions_max),
            ("retained_max", self.retained_max),
            ("ring_capacity", self.ring_capacity),
            ("ring_batch_max", self.ring_batch_max),
            ("ring_overflow_max", self.ring_overflow_max),
            ("read_buffer_bytes", self.read_buffer_bytes),
            ("out_buffer_max_bytes", self.out_buffer_max_bytes),
            ("mqueue_len_max", self.mqueue_len_max),
            ("inflight_max", usize::from(self.inflight_max)),
            ("receive_maximum", usize::from(self.receive_maximum)),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        if self.packet_size_max < 64 {
            return Err(invalid("packet_size_max", "must be at least 64 bytes"));
        }
        if self.packet_size_max > 268_435_460 {
            return Err(invalid("packet_size_max", "MQTT packets are at most 268,435,460 bytes"));
        }
        if self.connect_timeout_secs == 0 {
            return Err(invalid("connect_timeout_secs", "must be at least 1"));
        }
        if !(self.alarm_connections_ratio > 0.0 && self.alarm_connections_ratio <= 1.0) {
            return Err(invalid("alarm_connections_ratio", "must be in (0, 1]"));
        }
        if self.listen_backlog == 0 {
            return Err(invalid("listen_backlog", "must be at least 1"));
        }
        Ok(())
    }

    pub(crate) fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            inflight_max: self.inflight_max,
            mqueue_len_max: self.mqueue_len_max,
            mqueue_store_qos0: self.mqueue_store_qos0,
            out_buffer_max: self.out_buffer_max_bytes,
        }
    }

    /// The node name, `shardmq@<hostname>` unless set.
    pub fn node(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned());
        format!("shardmq@{host}")
    }

    /// `connections_max`, sized from the open-files limit when 0: every connection
    /// is a descriptor, and some are kept for listeners, rings and logs.
    pub fn connections_max_effective(&self) -> usize {
        if self.connections_max > 0 {
            return self.connections_max;
        }
        let nofile = proc_limit("Max open files").unwrap_or(1024);
        usize::try_from(nofile.saturating_sub(256).max(64)).unwrap_or(usize::MAX)
    }

    /// The `memory_high` threshold in bytes.
    pub fn alarm_memory_high_effective(&self) -> u64 {
        or_ram_share(self.alarm_memory_high_bytes, 80)
    }

    /// `queued_bytes_max`, 25% of RAM when 0.
    pub fn queued_bytes_max_effective(&self) -> u64 {
        or_ram_share(self.queued_bytes_max, 25)
    }

    /// `retained_bytes_max`, 10% of RAM when 0.
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
        format!(
            "{cpus} shards ({why_shards}); connections_max {} ({}); queued_bytes_max {} MiB ({}); \
             retained_bytes_max {} MiB ({}); memory_high alarm at {} MiB ({})",
            self.connections_max_effective(),
            if self.connections_max > 0 { "set" } else { "open-files limit minus 256" },
            mib(self.queued_bytes_max_effective()),
            if self.queued_bytes_max > 0 {
                "set".to_owned()
            } else {
                format!("25% of {ram} MiB RAM")
            },
            mib(self.retained_bytes_max_effective()),
            if self.retained_bytes_max > 0 {
                "set".to_owned()
            } else {
                format!("10% of {ram} MiB RAM")
            },
            mib(self.alarm_memory_high_effective()),
            if self.alarm_memory_high_bytes > 0 {
                "set".to_owned()
            } else {
                format!("80% of {ram} MiB RAM")
            },
        )
    }

    pub(crate) fn spin_before_park(&self) -> Duration {
        Duration::from_micros(self.spin_before_park_us)
    }
}

/// Total RAM from `/proc/meminfo`.
fn ram_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `value`, or `percent`% of RAM when `value` is 0 (1 GiB if RAM is unknown).
fn or_ram_share(value: u64, percent: u64) -> u64 {
    if value > 0 {
        return value;
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
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_a_file_overrides_some() {
        Config::default().validate().expect("defaults are valid");
        let config: Config =
            toml::from_str("inflight_max = 8\nlisten = [\"127.0.0.1:1999\"]").expect("parses");
        assert_eq!(config.inflight_max, 8);
        assert_eq!(config.listen, vec!["127.0.0.1:1999".parse().expect("addr")]);
        assert_eq!(config.mqueue_len_max, 1000);
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let bad = Config { mqueue_len_max: 0, ..Config::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("mqueue_len_max"));
        let unknown = toml::from_str::<Config>("no_such_key = 1");
        assert!(unknown.is_err());
    }
}
