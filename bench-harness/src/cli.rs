//! Command line.

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;

/// Load generator for MQTT 3.1.1 brokers (shardmq, Mosquitto, anything).
#[derive(Debug, Parser)]
#[command(name = "shardmq-bench", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Many publishers, few subscribers (each subscriber gets every topic).
    FanIn(FanInArgs),
    /// Few publishers (default 1), many subscribers on the same topic(s).
    FanOut(ScenarioArgs),
    /// N publisher/subscriber pairs, each pair on its own topic.
    Pairs(ScenarioArgs),
    /// Connection storm at a target rate (--rate = connections/s): CONNACK latency.
    Conn(ConnArgs),
    /// Hold N idle connections (with --broker-pid: broker RSS per connection).
    Idle(ScenarioArgs),
    /// A device fleet: N connections, each subscribed to its own command
    /// topic, held with keep-alive, with an optional trickle of publishes and
    /// a reconnect storm (with --broker-pid: RSS per connection, CPU per idle
    /// connection).
    Connections(ConnectionsArgs),
    /// Compare several --json reports: a Markdown table and an SVG chart.
    Compare(CompareArgs),
}

#[derive(Debug, Args)]
pub struct FanInArgs {
    /// Subscribe with wildcard filters (`+` and `#`, alternating between
    /// subscribers) instead of one filter per topic.
    #[arg(long)]
    pub wildcard: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct ScenarioArgs {
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct ConnArgs {
    /// Keep every connection open until the end instead of disconnecting right
    /// after its CONNACK.
    #[arg(long)]
    pub hold: bool,
    /// Most connection attempts in flight at once, per generator core.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub fleet: Fleet,
    #[command(flatten)]
    pub common: Common,
}

/// What the devices of the `connections` scenario do besides staying connected.
#[derive(Debug, Args, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    /// Publishes per device per minute during the window: each device
    /// publishes (at --qos) to its own command topic and receives it back.
    /// 0 = idle devices.
    #[arg(long, default_value_t = 0.0)]
    pub trickle_per_min: f64,
    /// After the window, every device drops its connection (no DISCONNECT,
    /// as in a network outage) and reconnects at once with the same client
    /// id; the broker's session-present flag says whether it kept the
    /// session. Use with --clean-session false.
    #[arg(long)]
    pub reconnect_storm: bool,
    /// Seconds after the storm before broker RSS is sampled again.
    #[arg(long, default_value_t = 60.0)]
    pub settle: f64,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// JSON reports written by --json.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// Write the Markdown table here (default: stdout).
    #[arg(long)]
    pub md: Option<PathBuf>,
    /// Write an SVG bar chart (msgs/s and p99 per case per broker label).
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// Flags shared by every load scenario.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Broker host (name or address), or HOST:PORT ([V6]:PORT). Repeat the flag
    /// or give a comma list for several brokers, such as the nodes of a
    /// cluster: subscriber j connects to host j mod H; publisher i to a host
    /// where none of the subscribers it feeds is, when there is one (pairs:
    /// host (i + 1) mod H; fan-in and fan-out with S subscribers, S < H: host
    /// S + (i mod (H - S)), else (i + 1) mod H); other connections k to host
    /// k mod H.
    #[arg(long, default_value = "127.0.0.1", value_delimiter = ',')]
    pub host: Vec<String>,
    /// Broker port, for --host entries without one.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// QoS of publishes and subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size in bytes (at least the 20-byte header).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Publishers (pairs: number of pairs; conn: total connections, 0 = as
    /// many as the duration allows; idle: connections to hold).
    #[arg(long)]
    pub clients: Option<u32>,
    /// Subscribers.
    #[arg(long)]
    pub subscribers: Option<u32>,
    /// Topics; publisher i publishes on topic i mod N.
    #[arg(long)]
    pub topics: Option<u32>,
    /// Total messages/s over all publishers on an open-loop schedule (conn:
    /// connections/s); 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Load before the measured window, seconds (not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// After the window, how long at most to wait for messages still in flight.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// MQTT clean-session flag.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub clean_session: bool,
    /// MQTT keep-alive, seconds (PINGREQ after half of it without traffic).
    #[arg(long, default_value_t = 60)]
    pub keepalive: u16,
    /// Source addresses to spread connections over (each gives ~28k more
    /// ephemeral ports), e.g. 127.0.0.1,127.0.0.2.
    #[arg(long, value_delimiter = ',')]
    pub source_addrs: Vec<IpAddr>,
    /// QoS 1/2 window: unacknowledged publishes per publisher.
    #[arg(long, default_value_t = 64)]
    pub inflight: u32,
    /// How clients write: `packet` sends one MQTT packet per write and per
    /// client wake-up, as devices and client libraries do; `coalesced` packs
    /// every packet due into one write of up to 64 KiB.
    #[arg(long, value_enum, default_value_t = WriteMode::Packet)]
    pub write_mode: WriteMode,
    /// Client identifiers are PREFIX-p<i> (publishers), -s<i>, -c<i>, -i<i>.
    #[arg(long, default_value = "shardmq-bench")]
    pub client_id_prefix: String,
    /// Topics are PREFIX/<run id>/<i>.
    #[arg(long, default_value = "bench")]
    pub topic_prefix: String,
    /// Generator cores (pinned executors). Default: half of the CPUs, the
    /// highest-numbered ones, leaving the low ones to the broker.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Exact CPUs for the generator executors, e.g. 2-3 or 1,3 (overrides --cores).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Broker process id: sample its CPU time and RSS.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Broker label in reports and comparisons.
    #[arg(long, default_value = "broker")]
    pub label: String,
    /// Case name in reports (default: derived from scenario and flags).
    #[arg(long = "case")]
    pub case_name: Option<String>,
    /// Write every figure as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the raw end-to-end (conn/idle: CONNACK) latency histogram as an
    /// HdrHistogram interval log (V2, deflate-compressed, base64).
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
    /// Connections set up concurrently, per generator core, before the run.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Seconds to wait for one connection's CONNACK (or SUBACK).
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// MQTT user name.
    #[arg(long)]
    pub username: Option<String>,
    /// MQTT password.
    #[arg(long)]
    pub password: Option<String>,
    /// Connect with TLS (mqtts; with --ws, wss). Every connection makes a full
    /// handshake (no session resumption).
    #[arg(long)]
    pub tls: bool,
    /// --tls: the CA certificates (PEM) the broker's certificate must chain to.
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,
    /// --tls: the name the broker's certificate must be valid for, a DNS name or
    /// an IP address. Default: the broker's IP address (an IP SAN).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// --tls: a client certificate chain (PEM), with --key.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// --tls: the client certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// MQTT over WebSocket at this HTTP path (default /mqtt): one binary frame
    /// per write. With --tls, over wss.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "/mqtt")]
    pub ws: Option<String>,
    /// Never draw the live progress line.
    #[arg(long)]
    pub no_progress: bool,
}

/// How a client turns its outgoing packets into writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteMode {
    /// One packet per write, and a publisher yields to the executor after
    /// each write: the per-message cost a broker sees from real clients.
    Packet,
    /// Every packet due goes into one write (up to 64 KiB): the least
    /// generator CPU per message, and the fewest reads for the broker.
    Coalesced,
}
