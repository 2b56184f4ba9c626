//! `$SYS` topics and alarms, computed on shard 0 from the shards' snapshots.
//!
//! Sans-IO: everything here takes the time and the figures as arguments and returns
//! `(topic, payload)` pairs, which the shard publishes as retained messages.
//!
//! # Alarm documents
//! Published to `$SYS/brokers/<node>/alarms/activate` when a condition starts and to
//! `.../alarms/deactivate` when it ends; `.../alarms/active` holds (retained) the JSON
//! array of the active ones. Each is one JSON object:
//!
//! ```json
//! {"name": "connections_high", "message": "...", "severity": "warning",
//!  "node": "shardmq@host", "shard": null, "activated_at": "2026-11-27T17:00:00.000000Z",
//!  "deactivated_at": null, "details": {"connections": 95, "connections_max": 100}}
//! ```
//!
//! | name | per | starts when | severity |
//! |---|---|---|---|
//! | `memory_high` | node | RSS > `alarm_memory_high_bytes` | critical |
//! | `connections_high` | node | connections >= `alarm_connections_ratio` x `connections_max` | warning |
//! | `mqueue_drops` | node | mqueue drops/s > `alarm_mqueue_drops_per_sec` | warning |
//! | `ring_overflow` | shard | a batch found a ring full during the last second | warning |
//! | `event_loop_lag` | shard | tick lateness > `alarm_lag_ms` | warning |
//! | `log_failed` | shard | its durable log could not be written (`--data-dir`) | critical |
//! | `log_full` | shard | its durable log is at its share of `data_max_bytes` | critical |

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde_json::json;

use crate::metrics::{totals, ShardSnapshot};

/// Thresholds of the alarms (from `Config`).
#[derive(Clone, Copy, Debug)]
pub struct AlarmThresholds {
    /// Resident memory above which `memory_high` is active, in bytes.
    pub memory_high_bytes: u64,
    /// The configured connection limit (`connections_max`).
    pub connections_max: u64,
    /// Fraction of `connections_max` at which `connections_high` activates.
    pub connections_ratio: f64,
    /// Rate of mqueue drops above which `mqueue_drops` is active, per second.
    pub mqueue_drops_per_sec: u64,
    /// Tick lateness above which `event_loop_lag` is active, in milliseconds.
    pub lag_ms: u64,
}

/// What the alarms are evaluated on.
#[derive(Clone, Copy, Debug)]
pub struct AlarmInput<'a> {
    /// Name of this broker node.
    pub node: &'a str,
    /// Current time, in microseconds since the Unix epoch.
    pub now_us: u64,
    /// Resident memory of the process, in bytes.
    pub rss_bytes: u64,
    /// Seconds between `previous` and `snapshots`, for rates.
    pub interval_secs: f64,
    /// Latest snapshot of every shard.
    pub snapshots: &'a [ShardSnapshot],
    /// Snapshots of the previous evaluation, to compute rates against.
    pub previous: &'a [ShardSnapshot],
}

/// One alarm, as published.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alarm {
    /// Alarm name, such as `memory_high` (see the module docs).
    pub name: &'static str,
    /// Human-readable description of the condition.
    pub message: String,
    /// `"warning"` or `"critical"`.
    pub severity: &'static str,
    /// Name of the node that raised the alarm.
    pub node: String,
    /// Shard index for per-shard alarms; `None` for node-wide ones.
    pub shard: Option<usize>,
    /// When the alarm started, as an RFC 3339 UTC timestamp.
    pub activated_at: String,
    /// When the alarm ended, as an RFC 3339 UTC timestamp; `None` while active.
    pub deactivated_at: Option<String>,
    /// Figures that the condition was evaluated on, as a JSON object.
    pub details: serde_json::Value,
}

/// A start or an end of an alarm.
#[derive(Clone, Debug, PartialEq)]
pub enum AlarmEvent {
    /// The alarm's condition started.
    Activate(Alarm),
    /// The alarm's condition ended.
    Deactivate(Alarm),
}

/// The alarms in force, keyed by name and shard.
#[derive(Debug, Default)]
pub struct Alarms {
    active: BTreeMap<(&'static str, Option<usize>), Alarm>,
}

/// RFC 3339 with microseconds, UTC.
pub fn rfc3339(unix_us: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(unix_us)).to_string()
}

/// A condition as measured now: `Some(details)` while it holds.
struct Check {
    name: &'static str,
    shard: Option<usize>,
    severity: &'static str,
    message: String,
    holds: bool,
    details: serde_json::Value,
}

impl Alarms {
    /// Compares the latest figures with the thresholds and returns what started or
    /// ended.
    pub fn evaluate(
        &mut self,
        input: &AlarmInput<'_>,
        limits: &AlarmThresholds,
    ) -> Vec<AlarmEvent> {
        let AlarmInput { node, now_us, rss_bytes, interval_secs, snapshots, previous } = *input;
        let now = totals(snapshots);
        let before = totals(previous);
        let drops = now.stats.dropped_mqueue.saturating_sub(before.stats.dropped_mqueue);
        let drop_rate = drops as f64 / interval_secs.max(0.001);
        let connections_limit = (limits.connections_max as f64 * limits.connections_ratio).ceil();
        let mut checks = vec![
            Check {
                name: "memory_high",
                shard: None,
                severity: "critical",
                message: format!(
                    "resident memory {rss_bytes} bytes above {}",
                    limits.memory_high_bytes
                ),
                holds: limits.memory_high_bytes > 0 && rss_bytes > limits.memory_high_bytes,
                details: json!({"rss_bytes": rss_bytes, "threshold_bytes": limits.memory_high_bytes}),
            },
            Check {
                name: "connections_high",
                shard: None,
                severity: "warning",
                message: format!(
                    "{} connections, limit {}",
                    now.stats.connections, limits.connections_max
                ),
                holds: limits.connections_max > 0
                    && now.stats.connections as f64 >= connections_limit,
                details: json!({
                    "connections": now.stats.connections,
                    "connections_max": limits.connections_max,
                }),
            },
            Check {
                name: "mqueue_drops",
                shard: None,
                severity: "warning",
                message: format!("{drop_rate:.0} messages/s dropped from full session queues"),
                holds: drop_rate > limits.mqueue_drops_per_sec as f64,
                details: json!({"drops_per_sec": drop_rate, "threshold": limits.mqueue_drops_per_sec}),
            },
        ];
        for s in snapshots {
            let overflowed_before = previous
                .iter()
                .find(|p| p.shard == s.shard)
                .map_or(0, |p| p.ring_batches_overflowed);
            let overflowed = s.ring_batches_overflowed.saturating_sub(overflowed_before);
            checks.push(Check {
                name: "ring_overflow",
                shard: Some(s.shard),
                severity: "warning",
                message: format!("shard {} found a ring full {overflowed} times", s.shard),
                holds: overflowed > 0 || s.ring_overflow_now > 0,
                details: json!({"batches_overflowed": overflowed, "waiting": s.ring_overflow_now}),
            });
            checks.push(Check {
                name: "event_loop_lag",
                shard: Some(s.shard),
                severity: "warning",
                message: format!("shard {} event loop {} us late", s.shard, s.lag_max_us),
                holds: s.lag_max_us > limits.lag_ms * 1000,
                details: json!({"lag_us": s.lag_max_us, "threshold_ms": limits.lag_ms}),
            });
            if let Some(log) = &s.log {
                checks.push(Check {
                    name: "log_failed",
                    shard: Some(s.shard),
                    severity: "critical",
                    message: format!(
                        "shard {} cannot write its durable log: nothing new is durable",
                        s.shard
                    ),
                    holds: log.errors > 0,
                    details: json!({"errors": log.errors}),
                });
                checks.push(Check {
                    name: "log_full",
                    shard: Some(s.shard),
                    severity: "critical",
                    message: format!(
                        "shard {} durable log at its share of data_max_bytes: new durable state refused",
                        s.shard
                    ),
                    holds: log.full,
                    details: json!({"disk_bytes": log.disk_bytes}),
                });
            }
        }
        let mut events = Vec::new();
        for check in checks {
            let key = (check.name, check.shard);
            match (check.holds, self.active.contains_key(&key)) {
                (true, false) => {
                    let alarm = Alarm {
                        name: check.name,
                        message: check.message,
                        severity: check.severity,
                        node: node.to_owned(),
                        shard: check.shard,
                        activated_at: rfc3339(now_us),
                        deactivated_at: None,
                        details: check.details,
                    };
                    self.active.insert(key, alarm.clone());
                    events.push(AlarmEvent::Activate(alarm));
                }
                (false, true) => {
                    let mut alarm = self.active.remove(&key).expect("checked present");
                    alarm.deactivated_at = Some(rfc3339(now_us));
                    alarm.message = check.message;
                    alarm.details = check.details;
                    events.push(AlarmEvent::Deactivate(alarm));
                }
                _ => {}
            }
        }
        events
    }

    /// The active alarms, ordered by name and shard.
    pub fn active(&self) -> impl Iterator<Item = &Alarm> {
        self.active.values()
    }

    /// Number of active alarms.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether no alarm is active.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

/// Node-level figures that are not in the snapshots.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeFigures {
    /// Seconds since the broker started.
    pub uptime_secs: u64,
    /// Current time, in microseconds since the Unix epoch.
    pub now_us: u64,
    /// Highest connection count seen (sampled once a second).
    pub connections_max_seen: u64,
}

/// The `$SYS/brokers/<node>/...` topics and their payloads.
pub fn sys_topics(
    node: &str,
    figures: &NodeFigures,
    snapshots: &[ShardSnapshot],
) -> Vec<(String, String)> {
    let t = totals(snapshots);
    let s = &t.stats;
    let root = format!("$SYS/brokers/{node}");
    let mut topics: Vec<(String, String)> = vec![
        ("version".into(), format!("shardmq {}", env!("CARGO_PKG_VERSION"))),
        ("uptime".into(), figures.uptime_secs.to_string()),
        ("datetime".into(), rfc3339(figures.now_us)),
        ("clients/connected".into(), s.connections.to_string()),
        ("clients/maximum".into(), figures.connections_max_seen.to_string()),
        ("clients/connects".into(), s.connects.to_string()),
        ("clients/refused".into(), s.connects_refused.to_string()),
        ("clients/protocol_errors".into(), s.protocol_errors.to_string()),
        ("clients/connect_timeouts".into(), s.connect_timeouts.to_string()),
        ("clients/login_failures".into(), s.login_failures.to_string()),
        ("clients/logins_rate_limited".into(), s.logins_rate_limited.to_string()),
        ("acl/denied/publish".into(), s.acl_denied_publish.to_string()),
        ("acl/denied/subscribe".into(), s.acl_denied_subscribe.to_string()),
        ("acl/denied/deliver".into(), s.acl_denied_delivery.to_string()),
        ("sessions/count".into(), t.sessions.to_string()),
        ("sessions/offline".into(), t.sessions_offline.to_string()),
        ("subscriptions/count".into(), t.subscriptions.to_string()),
        ("topics/count".into(), t.routes.to_string()),
        ("retained/count".into(), t.retained.to_string()),
        ("messages/received".into(), s.messages_in_total().to_string()),
        ("messages/sent".into(), s.messages_out_total().to_string()),
        ("bytes/received".into(), s.bytes_in.to_string()),
        ("bytes/sent".into(), s.bytes_out.to_string()),
        (
            "messages/dropped".into(),
            s.dropped_by_reason().iter().map(|(_, n)| n).sum::<u64>().to_string(),
        ),
        ("messages/queued_bytes".into(), s.queued_bytes.to_string()),
        // Full rings apply backpressure instead of dropping: an honest zero.
        ("messages/dropped/ring_overflow".into(), "0".into()),
    ];
    for (reason, n) in s.dropped_by_reason() {
        topics.push((format!("messages/dropped/{reason}"), n.to_string()));
    }
    for q in 0..3 {
        topics.push((format!("messages/qos{q}/received"), s.messages_in[q].to_string()));
        topics.push((format!("messages/qos{q}/sent"), s.messages_out[q].to_string()));
    }
    for (index, (name, l)) in t.listeners.iter().enumerate() {
        let at = format!("listeners/{index}");
        topics.push((format!("{at}/name"), name.clone()));
        topics.push((format!("{at}/connections"), l.links.to_string()));
        topics.push((format!("{at}/accepted"), l.accepted.to_string()));
        topics.push((format!("{at}/handshake_failures"), l.handshake_failures.to_string()));
        topics.push((format!("{at}/auth_failures"), l.auth_failures.to_string()));
        topics.push((format!("{at}/proxy_refused"), l.proxy_refused.to_string()));
    }
    for shard in snapshots {
        let n = shard.shard;
        let st = &shard.stats;
        topics.push((format!("shards/{n}/connections"), st.connections.to_string()));
        topics.push((format!("shards/{n}/messages/in"), st.messages_in_total().to_string()));
        topics.push((format!("shards/{n}/messages/out"), st.messages_out_total().to_string()));
        topics.push((format!("shards/{n}/ring/batches"), shard.ring_batches_sent.to_string()));
        topics
            .push((format!("shards/{n}/ring/overflow"), shard.ring_batches_overflowed.to_string()));
        topics.push((format!("shards/{n}/lag_us"), shard.lag_max_us.to_string()));
        topics.push((format!("shards/{n}/sockets/enters"), shard.socket_enters.to_string()));
        topics.push((format!("shards/{n}/sockets/parks"), shard.socket_parks.to_string()));
        topics.push((format!("shards/{n}/sockets/receives"), shard.socket_receives.to_string()));
        if let Some(log) = &shard.log {
            topics.push((format!("shards/{n}/log/bytes"), log.bytes_written.to_string()));
            topics.push((format!("shards/{n}/log/records"), log.records.to_string()));
            topics.push((format!("shards/{n}/log/syncs"), log.syncs.to_string()));
            topics.push((format!("shards/{n}/log/sync_p99_us"), log.sync_p99_us.to_string()));
            topics.push((format!("shards/{n}/log/segments"), log.segments.to_string()));
            topics.push((format!("shards/{n}/log/disk_bytes"), log.disk_bytes.to_string()));
            topics.push((format!("shards/{n}/log/checkpoints"), log.checkpoints.to_string()));
            topics.push((format!("shards/{n}/log/errors"), log.errors.to_string()));
            if n == 0 {
                topics.push(("log/recovery_ms".to_owned(), log.recovery_ms.to_string()));
                topics.push(("log/recovery_records".to_owned(), log.recovery_records.to_string()));
            }
        }
    }
    topics.into_iter().map(|(suffix, payload)| (format!("{root}/{suffix}"), payload)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> AlarmThresholds {
        AlarmThresholds {
            memory_high_bytes: 1000,
            connections_max: 10,
            connections_ratio: 0.9,
            mqueue_drops_per_sec: 100,
            lag_ms: 100,
        }
    }

    fn input<'a>(
        now_us: u64,
        rss_bytes: u64,
        interval_secs: f64,
        snapshots: &'a [ShardSnapshot],
        previous: &'a [ShardSnapshot],
    ) -> AlarmInput<'a> {
        AlarmInput { node: "n", now_us, rss_bytes, interval_secs, snapshots, previous }
    }

    #[test]
    fn an_alarm_activates_once_and_deactivates_once() {
        let mut alarms = Alarms::default();
        let mut snap = ShardSnapshot::default();
        snap.stats.connections = 9;
        let ev =
            alarms.evaluate(&input(1, 10, 1.0, &[snap.clone()], &[snap.clone()]), &thresholds());
        assert!(matches!(&ev[..], [AlarmEvent::Activate(a)] if a.name == "connections_high"));
        assert!(alarms
            .evaluate(&input(2, 10, 1.0, &[snap.clone()], &[snap.clone()]), &thresholds())
            .is_empty());
        snap.stats.connections = 2;
        let ev =
            alarms.evaluate(&input(3, 10, 1.0, &[snap.clone()], &[snap.clone()]), &thresholds());
        match &ev[..] {
            [AlarmEvent::Deactivate(a)] => {
                assert_eq!(a.name, "connections_high");
                assert_eq!(a.deactivated_at.as_deref(), Some("1970-01-01T00:00:00.000003Z"));
            }
            other => panic!("{other:?}"),
        }
        assert!(alarms.is_empty());
    }

    #[test]
    fn per_shard_and_rate_conditions() {
        let mut alarms = Alarms::default();
        let before = ShardSnapshot { shard: 1, ..Default::default() };
        let mut now = before.clone();
        now.ring_batches_overflowed = 3;
        now.lag_max_us = 500_000;
        now.stats.dropped_mqueue = 1000;
        let ev = alarms.evaluate(&input(1, 2000, 2.0, &[now], &[before]), &thresholds());
        let mut names: Vec<_> = ev
            .iter()
            .map(|e| match e {
                AlarmEvent::Activate(a) => (a.name, a.shard),
                AlarmEvent::Deactivate(a) => panic!("{a:?}"),
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                ("event_loop_lag", Some(1)),
                ("memory_high", None),
                ("mqueue_drops", None),
                ("ring_overflow", Some(1))
            ]
        );
    }

    #[test]
    fn sys_topics_carry_the_totals() {
        let mut a = ShardSnapshot { shard: 0, ..Default::default() };
        a.stats.messages_in = [1, 2, 3];
        let b = ShardSnapshot { shard: 1, sessions: 4, ..Default::default() };
        let topics = sys_topics("n1", &NodeFigures::default(), &[a, b]);
        let get = |t: &str| topics.iter().find(|(k, _)| k == t).map(|(_, v)| v.clone());
        assert_eq!(get("$SYS/brokers/n1/messages/received").as_deref(), Some("6"));
        assert_eq!(get("$SYS/brokers/n1/messages/qos1/received").as_deref(), Some("2"));
        assert_eq!(get("$SYS/brokers/n1/sessions/count").as_deref(), Some("4"));
        assert!(get("$SYS/brokers/n1/shards/1/connections").is_some());
    }
}
