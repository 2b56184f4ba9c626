//! The `shardmq` command: flags and an optional TOML file -> `Config` -> `Broker`.
//! Nothing else lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shardmq::config::SharedStrategy;
use shardmq::{Broker, Config};
use tracing_subscriber::EnvFilter;

/// A thread-per-core MQTT 3.1/3.1.1 broker. Every setting has a built-in default;
/// flags override the config file.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// TOML file with any of the settings below (snake_case keys, e.g. `inflight_max = 64`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to accept MQTT connections on; repeat for several [default: 0.0.0.0:1883].
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Number of shards, one pinned thread each [default: every online CPU].
    #[arg(long, value_name = "N")]
    cores: Option<usize>,
    /// CPUs to pin shards to, e.g. `0,2,4` (one shard each; overrides --cores).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    /// This node's id, part of every message id [default: 0].
    #[arg(long)]
    node_id: Option<u16>,
    /// Microseconds an idle shard spins before sleeping; cuts cross-core wake-up
    /// latency on VMs at the cost of CPU [default: 0].
    #[arg(long, value_name = "MICROS")]
    spin_before_park_us: Option<u64>,
    /// Slots per cross-shard ring (each slot carries one batch) [default: 256].
    #[arg(long)]
    ring_capacity: Option<usize>,
    /// Most items per cross-shard batch [default: 64].
    #[arg(long)]
    ring_batch_max: Option<usize>,
    /// Overflowed batches a shard holds before it pauses its readers [default: 1024].
    #[arg(long)]
    ring_overflow_max: Option<usize>,
    /// Listen backlog per listener socket [default: 4096].
    #[arg(long)]
    listen_backlog: Option<u32>,
    /// Bytes read from a socket at once [default: 65536].
    #[arg(long)]
    read_buffer_bytes: Option<usize>,
    /// Bytes pending toward one client before QoS 0 messages are queued or dropped
    /// [default: 1048576].
    #[arg(long)]
    out_buffer_max_bytes: Option<usize>,
    /// Largest packet accepted, fixed header included [default: 1048576].
    #[arg(long)]
    packet_size_max: Option<usize>,
    /// Seconds a new connection has to send CONNECT [default: 10].
    #[arg(long)]
    connect_timeout_secs: Option<u64>,
    /// Seconds an offline persistent session is kept; 0 = forever [default: 7200].
    #[arg(long)]
    session_expiry_secs: Option<u64>,
    /// Messages queued per session while offline or while its window is full [default: 1000].
    #[arg(long)]
    mqueue_len_max: Option<usize>,
    /// Whether QoS 0 messages are queued too [default: true].
    #[arg(long, value_name = "BOOL")]
    mqueue_store_qos0: Option<bool>,
    /// Unacknowledged QoS 1/2 messages per client [default: 32].
    #[arg(long)]
    inflight_max: Option<u16>,
    /// Seconds between resends to a connected MQTT 3.1/3.1.1 client (never MQTT 5,
    /// which forbids it); 0 = only on reconnect [default: 0].
    #[arg(long)]
    retry_interval_secs: Option<u64>,
    /// Node name in $SYS topics [default: shardmq@<hostname>].
    #[arg(long)]
    node_name: Option<String>,
    /// Seconds between $SYS publications; 0 = off [default: 10].
    #[arg(long)]
    sys_interval_secs: Option<u64>,
    /// Serve Prometheus metrics (GET /metrics) on this address [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Most client connections, shared equally by the shards; 0 = sized from the
    /// open-files limit [default: 0].
    #[arg(long)]
    connections_max: Option<usize>,
    /// Longest topic name or filter, in bytes [default: 65535].
    #[arg(long)]
    topic_length_max: Option<usize>,
    /// Most levels in a topic name or filter [default: 128].
    #[arg(long)]
    topic_levels_max: Option<usize>,
    /// Most subscriptions per client [default: 10000].
    #[arg(long)]
    subscriptions_max: Option<usize>,
    /// Most retained messages, node-wide [default: 1000000].
    #[arg(long)]
    retained_max: Option<usize>,
    /// Most bytes of retained messages, node-wide; 0 = 10% of RAM [default: 0].
    #[arg(long)]
    retained_bytes_max: Option<u64>,
    /// PUBLISH packets per second per client; 0 = no limit (reads pause beyond) [default: 0].
    #[arg(long)]
    publish_rate_max: Option<u64>,
    /// PUBLISH payload bytes per second per client; 0 = no limit [default: 0].
    #[arg(long)]
    publish_bytes_rate_max: Option<u64>,
    /// New connections per second, node-wide; 0 = no limit [default: 0].
    #[arg(long)]
    accept_rate_max: Option<u64>,
    /// Bytes all session queues may hold, node-wide; 0 = 25% of RAM [default: 0].
    #[arg(long)]
    queued_bytes_max: Option<u64>,
    /// Resident bytes that raise the memory_high alarm; 0 = 80% of RAM [default: 0].
    #[arg(long)]
    alarm_memory_high_bytes: Option<u64>,
    /// Share of connections_max that raises the connections_high alarm [default: 0.9].
    #[arg(long)]
    alarm_connections_ratio: Option<f64>,
    /// Queue drops per second that raise the mqueue_drops alarm [default: 1000].
    #[arg(long)]
    alarm_mqueue_drops_per_sec: Option<u64>,
    /// Event-loop lag in milliseconds that raises the event_loop_lag alarm [default: 250].
    #[arg(long)]
    alarm_lag_ms: Option<u64>,
    /// MQTT 5: QoS 2 messages a client may have awaiting PUBREL [default: 1024].
    #[arg(long)]
    receive_maximum: Option<u16>,
    /// MQTT 5: topic aliases a client may set; 0 = none [default: 64].
    #[arg(long)]
    topic_alias_max: Option<u16>,
    /// MQTT 5: longest keep-alive granted, in seconds; 0 = no cap [default: 0].
    #[arg(long)]
    keep_alive_max: Option<u16>,
    /// How a shared subscription picks a member [default: round-robin].
    #[arg(long, value_enum)]
    shared_subscription_strategy: Option<SharedStrategy>,
    /// Log filter when RUST_LOG is unset: error, warn, info, debug, trace [default: info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

macro_rules! overlay {
    ($config:ident, $cli:ident, $($field:ident),*) => {
        $(if let Some(value) = $cli.$field { $config.$field = value; })*
    };
}

fn config_from(cli: Cli) -> Result<Config, String> {
    let mut config = match &cli.config {
        Some(path) => Config::from_toml_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if !cli.listen.is_empty() {
        config.listen = cli.listen;
    }
    if cli.cores.is_some() {
        config.cores = cli.cores;
        config.cpus = None;
    }
    if cli.metrics.is_some() {
        config.metrics_listen = cli.metrics;
    }
    if cli.cpus.is_some() {
        config.cpus = cli.cpus;
    }
    overlay!(
        config,
        cli,
        node_id,
        spin_before_park_us,
        ring_capacity,
        ring_batch_max,
        ring_overflow_max,
        listen_backlog,
        read_buffer_bytes,
        out_buffer_max_bytes,
        packet_size_max,
        connect_timeout_secs,
        session_expiry_secs,
        mqueue_len_max,
        mqueue_store_qos0,
        inflight_max,
        retry_interval_secs,
        log_level,
        node_name,
        sys_interval_secs,
        connections_max,
        alarm_memory_high_bytes,
        alarm_connections_ratio,
        alarm_mqueue_drops_per_sec,
        alarm_lag_ms,
        topic_length_max,
        topic_levels_max,
        subscriptions_max,
        retained_max,
        retained_bytes_max,
        publish_rate_max,
        publish_bytes_rate_max,
        accept_rate_max,
        queued_bytes_max,
        receive_maximum,
        topic_alias_max,
        shared_subscription_strategy
    );
    if let Some(secs) = cli.keep_alive_max {
        config.keep_alive_max_secs = secs;
    }
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config_from(cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("shardmq: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let broker = match Broker::new(config).and_then(Broker::start) {
        Ok(broker) => broker,
        Err(e) => {
            eprintln!("shardmq: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = broker.stop_flag();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, std::sync::Arc::clone(&stop)) {
            eprintln!("shardmq: cannot install a handler for signal {signal}: {e}");
            return ExitCode::from(1);
        }
    }
    match broker.wait() {
        Ok(()) => {
            tracing::info!("shardmq stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shardmq: {e}");
            ExitCode::from(1)
        }
    }
}
