//! Shard 0's view of the whole node: the shards' snapshots, `$SYS`, alarms, the
//! Prometheus endpoint, and when the heap is trimmed (`heap`).
//!
//! Owner: shard 0. Other shards only send it a snapshot once a second over the
//! control ring; nothing here is shared or locked.

use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::spawn_local;
use tracing::debug;

use crate::config::Config;
use crate::metrics::{prometheus_text, totals, ShardSnapshot};
use crate::sys::{sys_topics, AlarmEvent, AlarmInput, AlarmThresholds, Alarms, NodeFigures};

use super::heap::{self, TrimWatch};
use super::CtrlMsg;
use super::{Shard, ShardRc};

/// Node-wide figures kept by shard 0.
#[derive(Debug)]
pub(crate) struct SysState {
    node: String,
    latest: Vec<ShardSnapshot>,
    /// `latest` one second ago, for rates.
    previous: Vec<ShardSnapshot>,
    alarms: Alarms,
    thresholds: AlarmThresholds,
    connections_max_seen: u64,
    started: Instant,
    sys_interval_secs: u64,
    seconds: u64,
    /// When to give freed heap memory back (see `heap`), and what it gave.
    heap: TrimWatch,
    heap_trims: u64,
    heap_trimmed_bytes: u64,
    heap_trim_us: u64,
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl SysState {
    pub fn new(config: &Config, shards: usize) -> Self {
        let latest: Vec<ShardSnapshot> =
            (0..shards).map(|shard| ShardSnapshot { shard, ..Default::default() }).collect();
        SysState {
            node: config.node(),
            previous: latest.clone(),
            latest,
            alarms: Alarms::default(),
            thresholds: AlarmThresholds {
                memory_high_bytes: config.alarm_memory_high_effective(),
                connections_max: config.connections_max_effective() as u64,
                connections_ratio: config.alarm_connections_ratio,
                mqueue_drops_per_sec: config.alarm_mqueue_drops_per_sec,
                lag_ms: u64::try_from(config.alarm_lag.as_millis()).unwrap_or(u64::MAX),
            },
            connections_max_seen: 0,
            started: Instant::now(),
            sys_interval_secs: config.sys_interval.map_or(0, |d| d.as_secs()),
            seconds: 0,
            heap: TrimWatch::default(),
            heap_trims: 0,
            heap_trimmed_bytes: 0,
            heap_trim_us: 0,
        }
    }

    /// Once a second, before [`SysState::step`]: feeds the node's closes to the
    /// heap's watch, and trims when it says so.
    fn watch_heap(&mut self) {
        let (now, before) = (totals(&self.latest).stats, totals(&self.previous).stats);
        let closes =
            heap::closes((before.connects, before.connections), (now.connects, now.connections));
        if !self.heap.second(closes, now.connections) {
            return;
        }
        let Some(trimmed) = heap::trim(resident_bytes) else { return };
        self.heap_trims += 1;
        self.heap_trimmed_bytes += trimmed.bytes;
        self.heap_trim_us += trimmed.micros;
        tracing::info!(
            kib = trimmed.bytes / 1024,
            us = trimmed.micros,
            "gave freed heap memory back to the kernel after connections closed"
        );
    }

    /// The heap figures go with shard 0's own.
    fn add_heap_figures(&self, snapshot: &mut ShardSnapshot) {
        snapshot.heap_trims = self.heap_trims;
        snapshot.heap_trimmed_bytes = self.heap_trimmed_bytes;
        snapshot.heap_trim_us = self.heap_trim_us;
    }

    pub fn record(&mut self, snapshot: ShardSnapshot) {
        if let Some(slot) = self.latest.get_mut(snapshot.shard) {
            *slot = snapshot;
        }
    }

    pub fn metrics_text(&self) -> String {
        prometheus_text(&self.latest, self.started.elapsed().as_secs(), self.alarms.len())
    }

    /// Once a second: alarms, and `$SYS` every `sys_interval_secs`. Returns the
    /// `(topic, payload)` pairs to publish.
    fn step(&mut self) -> Vec<(String, String)> {
        self.seconds += 1;
        let now_us = unix_micros();
        let connections = totals(&self.latest).stats.connections;
        self.connections_max_seen = self.connections_max_seen.max(connections);
        let mut out = Vec::new();
        let input = AlarmInput {
            node: &self.node,
            now_us,
            rss_bytes: resident_bytes(),
            interval_secs: 1.0,
            snapshots: &self.latest,
            previous: &self.previous,
        };
        let events = self.alarms.evaluate(&input, &self.thresholds);
        let root = format!("$SYS/brokers/{}/alarms", self.node);
        for event in &events {
            let (topic, alarm) = match event {
                AlarmEvent::Activate(a) => (format!("{root}/activate"), a),
                AlarmEvent::Deactivate(a) => (format!("{root}/deactivate"), a),
            };
            tracing::warn!(alarm = alarm.name, shard = ?alarm.shard, "{}: {}", topic, alarm.message);
            out.push((topic, serde_json::to_string(alarm).expect("alarms serialize")));
        }
        if !events.is_empty() || self.seconds == 1 {
            let active: Vec<_> = self.alarms.active().collect();
            out.push((
                format!("{root}/active"),
                serde_json::to_string(&active).expect("serializes"),
            ));
        }
        if self.sys_interval_secs > 0 && (self.seconds - 1).is_multiple_of(self.sys_interval_secs) {
            let figures = NodeFigures {
                uptime_secs: self.started.elapsed().as_secs(),
                now_us,
                connections_max_seen: self.connections_max_seen,
            };
            out.extend(sys_topics(&self.node, &figures, &self.latest));
            out.push(("$SYS/brokers".to_owned(), self.node.clone()));
        }
        self.previous.clone_from(&self.latest);
        out
    }
}

/// The process's resident set size, from `/proc/self/statm`.
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0);
    pages * 4096
}

/// Every shard, once a second: report figures to shard 0; on shard 0, run the
/// node-wide step and publish what it produced.
pub(crate) fn every_second(s: &mut Shard) {
    let snapshot = s.snapshot();
    if s.core.id != 0 {
        s.core.push_ctrl(0, CtrlMsg::Stats(Box::new(snapshot)));
        return;
    }
    let Some(mut sys) = s.sys.take() else { return };
    let mut snapshot = snapshot;
    sys.add_heap_figures(&mut snapshot);
    sys.record(snapshot);
    sys.watch_heap();
    let mut messages = sys.step();
    let sys_tick = messages.iter().any(|(topic, _)| topic == "$SYS/brokers");
    if let Some(cluster) = s.cluster.as_ref().filter(|_| sys_tick) {
        let status = cluster.status(s.now().ms, &s.core);
        messages.push((
            format!("$SYS/brokers/{}/cluster/members", sys.node),
            serde_json::to_string(&status.members).expect("serializes"),
        ));
    }
    s.sys = Some(sys);
    let now = s.now();
    for (topic, payload) in messages {
        s.core.publish_sys(now, &topic, payload);
    }
}

/// Serves `GET /metrics` in the Prometheus text format (OpenMetrics flavour).
pub(crate) async fn serve_metrics(shard: ShardRc, listener: TcpListener) {
    loop {
        let Ok(stream) = listener.accept().await else { continue };
        spawn_local(answer(Rc::clone(&shard), stream)).detach();
    }
}

async fn answer(shard: ShardRc, mut stream: TcpStream) {
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // Read the request head only; a scraper sends no body. 8 KiB is plenty.
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    }
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let (status, content_type, body) = if line.starts_with(b"GET /metrics ") {
        let s = shard.borrow();
        let mut text = s.sys.as_ref().map(SysState::metrics_text).unwrap_or_default();
        if let Some(cluster) = &s.cluster {
            // The cluster's figures go before the exposition's closing `# EOF`.
            let end = text.rfind("# EOF").unwrap_or(text.len());
            let stats = s.sys.as_ref().map(|sys| totals(&sys.latest).stats).unwrap_or_default();
            text.insert_str(end, &cluster.metrics_text(&stats));
        }
        ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", text)
    } else if line.starts_with(b"GET /cluster ") {
        match super::cluster::status(&shard) {
            Some(status) => (
                "200 OK",
                "application/json",
                serde_json::to_string_pretty(&status).expect("serializes") + "\n",
            ),
            None => ("404 Not Found", "text/plain", "this node is not in a cluster\n".to_owned()),
        }
    } else {
        ("404 Not Found", "text/plain", "try GET /metrics or GET /cluster\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = stream.write_all(response.as_bytes()).await {
        debug!("metrics response: {e}");
    }
}
