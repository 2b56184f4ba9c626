//! The report: figures derived from a run, the end-of-run table, the JSON
//! file and the HdrHistogram log.

use anyhow::{anyhow, Context as _};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cli::{Fleet, WriteMode};
use crate::engine::{Kind, Outcome, Plan};
use crate::hosts::Client;
use crate::stats::LatencySummary;
use crate::sys::Machine;

/// Above this share of a core, the generator is said to be saturated.
pub const SATURATION: f64 = 0.90;

/// Everything one run measured. Written by `--json`, read by `compare`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub label: String,
    pub case: String,
    pub scenario: Kind,
    pub timestamp_unix_s: u64,
    pub command_line: Vec<String>,
    pub git_commit: Option<String>,
    pub machine: Machine,
    pub config: Config,
    pub results: Results,
    pub broker: Option<Broker>,
    pub generator: Generator,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Every broker address, comma-separated, in `--host` order.
    pub broker_addr: String,
    /// The clients each broker got, in `--host` order (absent in reports
    /// written before several hosts).
    #[serde(default)]
    pub hosts: Vec<HostClients>,
    pub qos: u8,
    pub payload_bytes: usize,
    pub publishers: u32,
    pub subscribers: u32,
    pub topics: u32,
    pub connections: u32,
    /// Messages/s (conn: connections/s); 0 = as fast as possible (closed loop).
    pub rate: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub drain_s: f64,
    pub clean_session: bool,
    pub keepalive_s: u16,
    pub inflight: u32,
    /// Absent in reports written before write modes existed: those coalesced.
    #[serde(default = "coalesced")]
    pub write_mode: WriteMode,
    pub wildcard: bool,
    /// connections: trickle and reconnect storm.
    #[serde(default)]
    pub fleet: Fleet,
    pub hold: bool,
    pub concurrency: usize,
    pub source_addrs: Vec<String>,
    pub run_id: String,
    /// `tcp`, `tls`, `ws` or `wss` (absent in reports written before TLS: tcp).
    #[serde(default = "tcp")]
    pub transport: String,
    /// TLS: the version and cipher suite agreed on.
    #[serde(default)]
    pub tls_session: Option<String>,
}

/// The clients placed on one broker (see `hosts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostClients {
    pub addr: String,
    pub subscribers: u32,
    pub publishers: u32,
    /// idle and connections clients; conn spreads its attempts the same
    /// way but counts none here.
    pub connections: u32,
}

/// How many clients of each role `plan` places on each of its hosts.
fn host_clients(plan: &Plan) -> Vec<HostClients> {
    let mut hosts: Vec<HostClients> = plan
        .hosts
        .iter()
        .map(|(h, _)| HostClients { addr: h.addr.to_string(), ..HostClients::default() })
        .collect();
    let placement = plan.placement;
    for j in 0..plan.subscribers {
        hosts[placement.host(Client::Subscriber(j))].subscribers += 1;
    }
    for i in 0..plan.publishers {
        hosts[placement.host(Client::Publisher(i))].publishers += 1;
    }
    if plan.kind != Kind::Conn {
        for k in 0..plan.connections {
            hosts[placement.host(Client::Other(u64::from(k)))].connections += 1;
        }
    }
    hosts
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// Length of the measured window, seconds.
    pub window_s: f64,
    /// Connecting (and subscribing) every client before the run, seconds.
    pub setup_s: f64,
    /// Time spent after the window waiting for messages in flight, seconds.
    pub drain_s: f64,
    pub drain_timed_out: bool,
    /// PUBLISH packets whose intended send time lies in the window.
    pub sent: u64,
    pub sent_per_s: f64,
    /// Open loop: messages the schedule put in the window (sent + unsent).
    pub scheduled: u64,
    /// Open loop: scheduled in the window but never sent (generator behind).
    pub unsent: u64,
    /// Deliveries expected for `sent` (sent x subscribers per message).
    pub expected: u64,
    /// PUBLISH packets that reached a subscriber during the window (wall
    /// clock, duplicates included), per second: delivered throughput.
    pub received_per_s: f64,
    /// First copies received of messages sent in the window (whenever they arrived).
    pub received_unique: u64,
    /// expected - received_unique.
    pub lost: u64,
    pub loss_pct: f64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub corrupt: u64,
    pub protocol_errors: u64,
    /// QoS 1/2 publishes never acknowledged by the end.
    pub unacked: u64,
    pub sent_total: u64,
    /// Publishers' writes over the whole run, and packets per write (1 in
    /// packet mode).
    #[serde(default)]
    pub publisher_writes: u64,
    #[serde(default)]
    pub packets_per_write: f64,
    pub received_total: u64,
    pub duplicates_total: u64,
    /// End-to-end latency from intended send time to receipt, microseconds.
    pub latency_us: LatencySummary,
    pub connections: Option<ConnResults>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnResults {
    /// conn: attempts whose intended start lies in the window; idle: connections made.
    pub attempts: u64,
    pub ok: u64,
    pub failed: u64,
    /// conn: successful CONNACKs per second of window.
    pub per_s: f64,
    /// From intended start (conn, open loop) or connect start to CONNACK.
    pub connack_us: LatencySummary,
    pub errors: Vec<String>,
    /// connections: trickle publishes sent, and received back by the devices.
    #[serde(default)]
    pub trickle_sent: u64,
    #[serde(default)]
    pub trickle_received: u64,
    #[serde(default)]
    pub storm: Option<StormResults>,
}

/// connections: every device dropped at once and reconnected.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StormResults {
    pub reconnected: u64,
    /// Reconnects whose CONNACK said the broker kept the session.
    pub session_present: u64,
    /// From the drop to the last CONNACK.
    pub seconds: f64,
    /// reconnected / seconds.
    pub per_s: f64,
    pub timed_out: bool,
    /// From connect start to CONNACK, per reconnect.
    pub connack_us: LatencySummary,
    /// Broker RSS before the drop, right after the storm, and `settle_s` later.
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub rss_settled_kib: Option<u64>,
    pub settle_s: f64,
    /// (settled - before) / before, percent.
    pub rss_settled_growth_pct: Option<f64>,
    /// Broker CPU microseconds per reconnect, from the drop to the last CONNACK
    /// (absent in reports written before it was measured).
    #[serde(default)]
    pub broker_cpu_us_per_reconnect: Option<f64>,
    /// The generator's CPU over the storm, in cores: at its core count it, not
    /// the broker, bounds the rate (absent in older reports).
    #[serde(default)]
    pub generator_cores: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Broker {
    pub pid: u32,
    /// utime + stime during the window, seconds.
    pub cpu_s: Option<f64>,
    /// cpu_s / window_s.
    pub cpu_cores: Option<f64>,
    /// Broker CPU microseconds per PUBLISH delivered to a subscriber in the window.
    pub cpu_us_per_msg: Option<f64>,
    pub rss_before_kib: Option<u64>,
    pub rss_start_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    /// idle, connections: (RSS at window start - RSS before connecting) / connections.
    pub rss_per_conn_bytes: Option<f64>,
    /// connections: broker CPU microseconds per held connection per second
    /// of window.
    #[serde(default)]
    pub cpu_us_per_conn_s: Option<f64>,
    pub exited: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Generator {
    pub cores: usize,
    pub cpus: Vec<usize>,
    /// Whole process, during the window.
    pub cpu_s: f64,
    /// Busy share of each generator core during the window (1.0 = saturated;
    /// null: unknown).
    pub core_util: Vec<Option<f64>>,
    pub max_core_util: f64,
    pub saturated: bool,
}

fn coalesced() -> WriteMode {
    WriteMode::Coalesced
}

fn per_s(n: u64, s: f64) -> f64 {
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

impl Report {
    pub fn build(plan: &Plan, o: &Outcome) -> Report {
        let ob = &o.observed;
        let w = ob.window_s;
        let mut warnings = Vec::new();
        let lost = o.expected_w.saturating_sub(o.tally.unique_w);
        let mut results = Results {
            window_s: w,
            setup_s: ob.setup_s,
            drain_s: ob.drain_s,
            drain_timed_out: ob.drain_timed_out,
            sent: o.pubs.sent_w,
            sent_per_s: per_s(o.pubs.sent_w, w),
            scheduled: o.pubs.scheduled_w,
            unsent: o.pubs.scheduled_w.saturating_sub(o.pubs.sent_w),
            expected: o.expected_w,
            received_per_s: per_s(o.arrived_w, w),
            received_unique: o.tally.unique_w,
            lost,
            loss_pct: if o.expected_w > 0 {
                100.0 * lost as f64 / o.expected_w as f64
            } else {
                0.0
            },
            duplicates: o.tally.dup_w,
            out_of_order: o.tally.ooo_w,
            corrupt: o.tally.corrupt,
            protocol_errors: o.protocol_errors,
            unacked: o.pubs.unacked,
            sent_total: o.pubs.sent_total,
            publisher_writes: o.pubs.writes,
            packets_per_write: if o.pubs.writes > 0 {
                o.pubs.packets_written as f64 / o.pubs.writes as f64
            } else {
                0.0
            },
            received_total: o.tally.received_total,
            duplicates_total: o.tally.dup_total,
            latency_us: LatencySummary::of(&o.hist),
            connections: None,
        };
        if matches!(plan.kind, Kind::Conn | Kind::Idle | Kind::Connections) {
            let storm = ob.storm.as_ref().map(|st| StormResults {
                reconnected: st.reconnected,
                session_present: o.session_present,
                seconds: st.seconds,
                per_s: per_s(st.reconnected, st.seconds),
                timed_out: st.timed_out,
                connack_us: LatencySummary::of(&o.storm_connack),
                rss_before_kib: st.rss_before_kib,
                rss_after_kib: st.rss_after_kib,
                rss_settled_kib: st.rss_settled_kib,
                settle_s: st.settle_s,
                rss_settled_growth_pct: match (st.rss_before_kib, st.rss_settled_kib) {
                    (Some(b), Some(a)) if b > 0 => Some(100.0 * (a as f64 - b as f64) / b as f64),
                    _ => None,
                },
                broker_cpu_us_per_reconnect: st
                    .broker_cpu_s
                    .filter(|_| st.reconnected > 0)
                    .map(|s| s * 1e6 / st.reconnected as f64),
                generator_cores: if st.seconds > 0.0 {
                    st.generator_cpu_s / st.seconds
                } else {
                    0.0
                },
            });
            if let Some(st) = &storm {
                if st.timed_out {
                    warnings.push(format!(
                        "reconnect storm: only {} of {} devices were back after {:.0} s",
                        st.reconnected, plan.connections, st.seconds
                    ));
                }
            }
            results.connections = Some(ConnResults {
                attempts: o.conn_attempts_w,
                ok: o.conn_ok_w,
                failed: o.conn_failures,
                per_s: match plan.kind {
                    Kind::Conn => per_s(o.conn_ok_w, w),
                    // The connect phase: every device connects and subscribes.
                    Kind::Connections => per_s(o.conn_ok_w, ob.setup_s),
                    _ => 0.0,
                },
                connack_us: LatencySummary::of(&o.connack),
                errors: o.conn_errors.clone(),
                trickle_sent: o.trickle_sent,
                trickle_received: o.trickle_received,
                storm,
            });
            if o.conn_failures > 0 {
                warnings.push(format!(
                    "{} connection attempts failed; first: {}",
                    o.conn_failures,
                    o.conn_errors.first().map_or("?", String::as_str)
                ));
            }
        }
        if o.tally.unique_w > o.expected_w {
            warnings.push(format!(
                "received {} distinct messages but expected {}: the broker delivered to more subscribers than subscribed",
                o.tally.unique_w, o.expected_w
            ));
        }
        if results.unsent > 0 && results.unsent * 1000 > results.scheduled {
            warnings.push(format!(
                "the generator fell behind --rate: {} of {} scheduled messages were not sent in time ({:.1}%); \
                 latency still counts from the intended times",
                results.unsent,
                results.scheduled,
                100.0 * results.unsent as f64 / results.scheduled.max(1) as f64
            ));
        }
        if ob.drain_timed_out {
            warnings.push(format!(
                "messages were still arriving {:.1}s after the window (--drain); the rest count as lost",
                plan.c.drain
            ));
        }
        if results.corrupt > 0 {
            warnings.push(format!("{} payloads had no valid header", results.corrupt));
        }
        if results.protocol_errors > 0 {
            warnings.push(format!(
                "{} acknowledgements for unknown packet ids",
                results.protocol_errors
            ));
        }
        if o.pubs.stalled > 0 {
            warnings.push(format!(
                "{} publishers still had a write pending at the end of the drain (the broker had \
                 stopped reading them); it was given up",
                o.pubs.stalled
            ));
        }
        if results.unacked > 0 {
            warnings.push(format!(
                "{} QoS {} publishes were never acknowledged",
                results.unacked, plan.c.qos
            ));
        }

        let broker = plan.c.broker_pid.map(|pid| {
            let delivered = (results.received_per_s * w).round();
            let rss_per_conn =
                match (plan.kind, ob.broker_rss_start_kib, ob.broker_rss_baseline_kib) {
                    (Kind::Idle | Kind::Connections, Some(a), Some(b)) if o.conn_ok_w > 0 => {
                        Some((a as f64 - b as f64) * 1024.0 / o.conn_ok_w as f64)
                    }
                    _ => None,
                };
            if ob.broker_gone {
                warnings.push(format!("broker process {pid} disappeared during the run"));
            }
            Broker {
                pid,
                cpu_s: ob.broker_cpu_s,
                cpu_cores: ob.broker_cpu_s.map(|c| c / w.max(1e-9)),
                cpu_us_per_msg: ob
                    .broker_cpu_s
                    .filter(|_| delivered > 0.0)
                    .map(|c| c * 1e6 / delivered),
                rss_before_kib: ob.broker_rss_baseline_kib,
                rss_start_kib: ob.broker_rss_start_kib,
                rss_end_kib: ob.broker_rss_end_kib,
                rss_peak_kib: ob.broker_rss_peak_kib,
                rss_per_conn_bytes: rss_per_conn,
                cpu_us_per_conn_s: ob
                    .broker_cpu_s
                    .filter(|_| plan.kind == Kind::Connections && o.conn_ok_w > 0 && w > 0.0)
                    .map(|c| c * 1e6 / o.conn_ok_w as f64 / w),
                exited: ob.broker_gone,
            }
        });

        // NaN (thread gone before the end sample) becomes null: unknown.
        let core_util: Vec<Option<f64>> =
            ob.thread_cpu_s.iter().map(|c| (c.is_finite() && w > 0.0).then(|| c / w)).collect();
        let max_core_util = core_util.iter().flatten().copied().fold(0.0, f64::max);
        let saturated = max_core_util > SATURATION;
        if saturated {
            warnings.push(format!(
                "generator saturated: a generator core was {:.0}% busy; the figures may measure the \
                 generator, not the broker (add --cores, or move the broker to other CPUs)",
                max_core_util * 100.0
            ));
        }
        let generator = Generator {
            cores: plan.cpus.len(),
            cpus: plan.cpus.clone(),
            cpu_s: ob.self_cpu_s,
            core_util,
            max_core_util,
            saturated,
        };
        let c = &plan.c;
        Report {
            tool: format!("shardmq-bench {}", env!("CARGO_PKG_VERSION")),
            label: c.label.clone(),
            case: plan.case.clone(),
            scenario: plan.kind,
            timestamp_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            command_line: std::env::args().collect(),
            git_commit: crate::sys::git_commit(),
            machine: Machine::detect(),
            config: Config {
                broker_addr: plan
                    .hosts
                    .iter()
                    .map(|(h, _)| h.addr.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                hosts: host_clients(plan),
                qos: c.qos,
                payload_bytes: c.payload,
                publishers: plan.publishers,
                subscribers: plan.subscribers,
                topics: plan.topics,
                connections: plan.connections,
                rate: c.rate,
                duration_s: c.duration,
                warmup_s: c.warmup,
                drain_s: c.drain,
                clean_session: c.clean_session,
                keepalive_s: c.keepalive,
                inflight: c.inflight,
                write_mode: c.write_mode,
                wildcard: plan.wildcard,
                fleet: plan.fleet,
                hold: plan.hold,
                concurrency: plan.concurrency,
                source_addrs: c.source_addrs.iter().map(ToString::to_string).collect(),
                run_id: plan.run_id.clone(),
                transport: plan.transport_name().to_string(),
                tls_session: o.tls_session.clone(),
            },
            results,
            broker,
            generator,
            warnings,
        }
    }

    /// The human-readable table printed at the end.
    pub fn table(&self) -> String {
        let mut t = Table::default();
        let r = &self.results;
        let c = &self.config;
        t.row("case", format!("{}  [{}]", self.case, self.label));
        t.row(
            "broker",
            match (c.transport.as_str(), &c.tls_session) {
                ("tcp", _) => c.broker_addr.clone(),
                (name, Some(session)) => format!("{} ({name}, {session})", c.broker_addr),
                (name, None) => format!("{} ({name})", c.broker_addr),
            },
        );
        if c.hosts.len() > 1 {
            let per_host: Vec<String> = c
                .hosts
                .iter()
                .map(|h| {
                    let roles =
                        [(h.subscribers, "sub"), (h.publishers, "pub"), (h.connections, "conn")];
                    let roles: Vec<String> = roles
                        .iter()
                        .filter(|(n, _)| *n > 0)
                        .map(|(n, role)| format!("{n} {role}"))
                        .collect();
                    if roles.is_empty() {
                        format!("{} none", h.addr)
                    } else {
                        format!("{} {}", h.addr, roles.join(" + "))
                    }
                })
                .collect();
            t.row("placement", per_host.join("; "));
        }
        match self.scenario {
            Kind::Conn => {
                let cap = match c.connections {
                    0 => "no cap".to_string(),
                    n => format!("at most {n}"),
                };
                let rate = match c.rate {
                    0 => format!("as fast as possible, {} in flight per core", c.concurrency),
                    r => format!("{} connections/s open loop", fmt_n(r as f64)),
                };
                t.row(
                    "connections",
                    format!("{rate}, {cap}{}", if c.hold { ", held open" } else { "" }),
                );
            }
            Kind::Idle => {
                t.row("connections", format!("{} idle", c.connections));
            }
            Kind::Connections => {
                let f = &c.fleet;
                t.row(
                    "devices",
                    format!(
                        "{}, QoS {} subscription each, keep-alive {} s, clean session {}, {}{}",
                        c.connections,
                        c.qos,
                        c.keepalive_s,
                        c.clean_session,
                        if f.trickle_per_min > 0.0 {
                            format!("{} publishes/min each", f.trickle_per_min)
                        } else {
                            "idle".into()
                        },
                        if f.reconnect_storm { ", then a reconnect storm" } else { "" }
                    ),
                );
            }
            _ => {
                t.row(
                    "clients",
                    format!(
                        "{} publishers, {} subscribers, {} topics{}",
                        c.publishers,
                        c.subscribers,
                        c.topics,
                        if c.wildcard { " (wildcard filters)" } else { "" }
                    ),
                );
                t.row(
                    "load",
                    format!(
                        "QoS {}, {} B payload, {}{}",
                        c.qos,
                        c.payload_bytes,
                        if c.rate > 0 {
                            format!("{} msgs/s open loop", fmt_n(c.rate as f64))
                        } else {
                            "as fast as possible".into()
                        },
                        if c.qos > 0 { format!(", window {}", c.inflight) } else { String::new() }
                    ),
                );
                t.row(
                    "writes",
                    match c.write_mode {
                        WriteMode::Packet => "one packet per write".to_string(),
                        WriteMode::Coalesced => {
                            format!("coalesced, {:.1} packets per write", r.packets_per_write)
                        }
                    },
                );
            }
        }
        t.row(
            "window",
            format!(
                "{:.1} s after {:.1} s warmup (setup {:.2} s, drain {:.2} s)",
                r.window_s, c.warmup_s, r.setup_s, r.drain_s
            ),
        );
        t.sep();
        if self.scenario.is_pubsub() {
            t.row(
                "sent",
                format!("{} msgs/s  ({} msgs)", fmt_n(r.sent_per_s), fmt_n(r.sent as f64)),
            );
            if r.scheduled > 0 {
                t.row(
                    "scheduled",
                    format!(
                        "{} msgs, {} not sent in time",
                        fmt_n(r.scheduled as f64),
                        fmt_n(r.unsent as f64)
                    ),
                );
            }
            t.row("received", format!("{} msgs/s", fmt_n(r.received_per_s)));
            t.row(
                "delivery",
                format!(
                    "expected {}, got {}, lost {} ({:.3}%), duplicates {}, out of order {}",
                    fmt_n(r.expected as f64),
                    fmt_n(r.received_unique as f64),
                    fmt_n(r.lost as f64),
                    r.loss_pct,
                    r.duplicates,
                    r.out_of_order
                ),
            );
            t.row("latency (us)", fmt_lat(&r.latency_us));
        }
        if let Some(cr) = &r.connections {
            if self.scenario == Kind::Conn {
                t.row(
                    "connections",
                    format!(
                        "{} CONNACKs/s  ({} ok of {} attempts, {} failed)",
                        fmt_n(cr.per_s),
                        cr.ok,
                        cr.attempts,
                        cr.failed
                    ),
                );
            } else if self.scenario == Kind::Connections {
                t.row(
                    "connections",
                    format!(
                        "{} held ({} failed), connected at {}/s",
                        cr.ok,
                        cr.failed,
                        fmt_n(cr.per_s)
                    ),
                );
            } else {
                t.row("connections", format!("{} held ({} failed)", cr.ok, cr.failed));
            }
            t.row("CONNACK (us)", fmt_lat(&cr.connack_us));
            if cr.trickle_sent > 0 {
                t.row(
                    "trickle",
                    format!("sent {}, received {}", cr.trickle_sent, cr.trickle_received),
                );
                t.row("latency (us)", fmt_lat(&r.latency_us));
            }
            if let Some(st) = &cr.storm {
                t.row(
                    "storm",
                    format!(
                        "{} reconnected in {:.2} s ({}/s), {} with session present",
                        st.reconnected,
                        st.seconds,
                        fmt_n(st.per_s),
                        st.session_present
                    ),
                );
                t.row("storm CONNACK (us)", fmt_lat(&st.connack_us));
                t.row(
                    "storm CPU",
                    format!(
                        "broker {} us per reconnect; generator {:.2} cores",
                        st.broker_cpu_us_per_reconnect
                            .map_or("n/a".into(), |us| format!("{us:.1}")),
                        st.generator_cores
                    ),
                );
                let mib = |k: Option<u64>| {
                    k.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
                };
                t.row(
                    "storm RSS",
                    format!(
                        "before {}, after {}, {:.0} s later {} ({})",
                        mib(st.rss_before_kib),
                        mib(st.rss_after_kib),
                        st.settle_s,
                        mib(st.rss_settled_kib),
                        st.rss_settled_growth_pct.map_or("n/a".into(), |p| format!("{p:+.1}%"))
                    ),
                );
            }
        }
        t.sep();
        if let Some(b) = &self.broker {
            let mut s = match (b.cpu_s, b.cpu_cores) {
                (Some(cpu), Some(cores)) => format!("CPU {cpu:.2} s ({cores:.2} cores)"),
                _ => "CPU n/a".into(),
            };
            if let Some(us) = b.cpu_us_per_msg {
                let _ = write!(s, ", {us:.2} us/msg delivered");
            }
            if let Some(us) = b.cpu_us_per_conn_s {
                let _ = write!(s, ", {us:.3} us per connection per s");
            }
            t.row(format!("broker pid {}", b.pid), s);
            let mib = |k: Option<u64>| {
                k.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
            };
            let mut s = format!(
                "peak {}, before {}, start {}, end {}",
                mib(b.rss_peak_kib),
                mib(b.rss_before_kib),
                mib(b.rss_start_kib),
                mib(b.rss_end_kib)
            );
            if let Some(per) = b.rss_per_conn_bytes {
                let _ = write!(s, "; {} B per connection", fmt_n(per));
            }
            t.row("broker RSS", s);
        }
        let g = &self.generator;
        t.row(
            "generator",
            format!(
                "{} core(s) {:?}, busiest {:.0}%{}",
                g.cores,
                g.cpus,
                g.max_core_util * 100.0,
                if g.saturated { "  SATURATED" } else { "" }
            ),
        );
        let mut out = t.render();
        for w in &self.warnings {
            let _ = writeln!(out, "WARNING: {w}");
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let s = serde_json::to_string_pretty(self)?;
        std::fs::write(path, s + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

fn fmt_lat(l: &LatencySummary) -> String {
    if l.count == 0 {
        return "no samples".into();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {}, n={})",
        fmt_n(l.p50_us),
        fmt_n(l.p90_us),
        fmt_n(l.p99_us),
        fmt_n(l.p999_us),
        fmt_n(l.max_us),
        fmt_n(l.mean_us),
        l.count
    )
}

/// Formats a number with thousands separators (1 decimal below 100).
pub fn fmt_n(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v.abs() < 100.0 && v.fract() != 0.0 {
        return format!("{v:.1}");
    }
    let n = v.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

#[derive(Default)]
struct Table {
    rows: Vec<Option<(String, String)>>,
}

impl Table {
    fn row(&mut self, k: impl Into<String>, v: impl Into<String>) {
        self.rows.push(Some((k.into(), v.into())));
    }
    fn sep(&mut self) {
        self.rows.push(None);
    }
    fn render(&self) -> String {
        let w = self.rows.iter().flatten().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for r in &self.rows {
            match r {
                Some((k, v)) => {
                    let _ = writeln!(out, "  {k:<w$}  {v}");
                }
                None => {
                    let _ = writeln!(out, "  {}", "-".repeat(w + 50));
                }
            }
        }
        out
    }
}

/// Writes the histogram as an HdrHistogram interval log (one interval: the
/// measured window), V2 deflate-compressed encoding, values in nanoseconds.
pub fn write_hdr_log(
    path: &Path,
    hist: &hdrhistogram::Histogram<u64>,
    tag: &str,
    window_s: f64,
    report: &Report,
) -> anyhow::Result<()> {
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    use hdrhistogram::serialization::V2DeflateSerializer;
    let mut buf = Vec::new();
    let start = SystemTime::now() - Duration::from_secs_f64(window_s);
    let mut ser = V2DeflateSerializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "shardmq-bench {} [{}]: {} latency, values in nanoseconds",
                report.case, report.label, tag
            ))
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(1e6)
            .begin_log_with(&mut buf, &mut ser)?;
        w.write_histogram(hist, Duration::ZERO, Duration::from_secs_f64(window_s), Tag::new(tag))
            .map_err(|e| anyhow!("writing histogram log: {e:?}"))?;
    }
    std::fs::write(path, buf).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(fmt_n(1234567.0), "1,234,567");
        assert_eq!(fmt_n(999.0), "999");
        assert_eq!(fmt_n(12.34), "12.3");
        assert_eq!(fmt_n(-1000.0), "-1,000");
        assert_eq!(fmt_n(0.0), "0");
    }

    #[test]
    fn hdr_log_round_trips() {
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        use hdrhistogram::serialization::Deserializer;
        let mut h = crate::stats::new_histogram();
        for v in [1_000u64, 2_000, 50_000] {
            h.record(v).unwrap();
        }
        let dir = std::env::temp_dir().join(format!("shardmq-bench-hdr-{}", std::process::id()));
        let report: Report = serde_json::from_value(serde_json::json!({
            "tool": "t", "label": "l", "case": "c", "scenario": "pairs", "timestamp_unix_s": 0,
            "command_line": [], "git_commit": null, "machine": Machine::default(),
            "config": {"broker_addr": "x", "qos": 0, "payload_bytes": 64, "publishers": 1,
              "subscribers": 1, "topics": 1, "connections": 0, "rate": 0, "duration_s": 1.0,
              "warmup_s": 0.0, "drain_s": 0.0, "clean_session": true, "keepalive_s": 60,
              "inflight": 1, "wildcard": false, "hold": false, "concurrency": 1,
              "source_addrs": [], "run_id": "r"},
            "results": Results::default(), "broker": null, "generator": Generator::default(),
            "warnings": []
        }))
        .unwrap();
        write_hdr_log(&dir, &h, "e2e", 1.0, &report).unwrap();
        let text = std::fs::read(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let mut found = 0;
        for e in IntervalLogIterator::new(&text) {
            if let Ok(LogEntry::Interval(i)) = e {
                assert_eq!(i.tag().map(|t| t.as_str().to_string()), Some("e2e".into()));
                let bytes = base64_decode(i.encoded_histogram());
                let back: hdrhistogram::Histogram<u64> =
                    Deserializer::new().deserialize(&mut bytes.as_slice()).unwrap();
                assert_eq!(back.len(), 3);
                assert_eq!(back.max(), h.max());
                found += 1;
            }
        }
        assert_eq!(found, 1);
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let mut acc = 0u32;
        let mut bits = 0;
        for c in s.bytes().filter(|&c| c != b'=') {
            let v = A.iter().position(|&a| a == c).unwrap() as u32;
            acc = acc << 6 | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }
}
