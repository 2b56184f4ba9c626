//! Per-shard counters, their periodic snapshots, and the Prometheus exposition.
//!
//! Counters are plain `u64`s owned by one shard: no atomics and no sharing on the
//! data path. Once a second every shard sends a [`ShardSnapshot`] to shard 0 over the
//! control ring; shard 0 merges them for `$SYS`, alarms and `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Counters of one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Connections currently open on this shard.
    pub connections: u64,
    /// CONNECTs accepted.
    pub connects: u64,
    /// CONNECTs answered with a refusal code.
    pub connects_refused: u64,
    /// Sockets closed for not sending CONNECT in time.
    pub connect_timeouts: u64,
    /// Connections closed because a new connection took over their client id.
    pub takeovers: u64,
    /// Connections closed because the keep-alive time passed without a packet.
    pub keep_alive_timeouts: u64,
    /// Connections closed for a protocol violation or a malformed packet.
    pub protocol_errors: u64,
    /// Connections handed over to the shard that owns their session.
    pub handoffs_out: u64,
    /// Connections received from another shard that handed them over.
    pub handoffs_in: u64,
    /// PUBLISH packets received from clients, by QoS.
    pub messages_in: [u64; 3],
    /// Payload bytes received in PUBLISH packets.
    pub bytes_in: u64,
    /// PUBLISH packets encoded toward clients (first transmissions), by QoS.
    pub messages_out: [u64; 3],
    /// Bytes written to client sockets.
    pub bytes_out: u64,
    /// Messages dropped because no shard had a matching subscription.
    pub dropped_no_subscribers: u64,
    /// Messages dropped by session mqueues (queue full or QoS 0 not stored).
    pub dropped_mqueue: u64,
    /// Messages dropped by a `message.publish` hook.
    pub dropped_by_hook: u64,
    /// Messages whose MQTT 5 Message Expiry Interval passed before delivery.
    pub dropped_expired: u64,
    /// Messages not sent to a client because they exceed its Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Shared-subscription messages passed to another member because theirs left.
    pub shared_redispatched: u64,
    /// Will messages published.
    pub wills_published: u64,
    /// Persistent sessions removed because they expired while offline.
    pub sessions_expired: u64,
    /// Sessions handed to another node of the cluster (their client connected there).
    pub sessions_handed_over: u64,
    /// Persistent sessions read back from the data directory at start-up.
    pub sessions_restored: u64,
    /// QoS 1/2 publishes, persistent sessions and their subscriptions refused
    /// because a durable log was at its share of `data_max_bytes`.
    pub refused_log_full: u64,
    /// Sessions taken from another node of the cluster.
    pub sessions_taken_over: u64,
    /// Sessions recovered from the data directory and dropped because their
    /// client had connected to another node of the cluster while this one was
    /// down.
    pub recovered_sessions_dropped: u64,
    /// Wills recovered from the data directory and dropped because another node
    /// of the cluster published them when this one died.
    pub recovered_wills_dropped: u64,
    /// Connections refused because another node of the cluster claimed their
    /// client id later (the later connection wins).
    pub claims_refused: u64,
    /// Connections refused because this node saw fewer nodes up than
    /// `cluster_quorum`.
    pub refused_no_quorum: u64,
    /// Route changes this shard broadcast to the other shards.
    pub route_updates_sent: u64,
    /// Route updates dropped as stale (taken from the route table at snapshot time).
    pub route_updates_stale: u64,
    /// Times publishers' reads were paused (rings overflowing or subscribers behind).
    pub reader_pauses: u64,
    /// Times the shard stopped taking ring messages because a subscriber was behind.
    pub backlog_pauses: u64,
    /// Messages dropped because the queued-bytes budget was spent.
    pub dropped_budget: u64,
    /// Messages from clients (or wills, or the API) to `$SYS` topics, dropped.
    pub dropped_reserved_topic: u64,
    /// CONNECTs refused for `connections_max`.
    pub limit_connections: u64,
    /// Topics or filters refused for `topic_length_max` / `topic_levels_max`.
    pub limit_topic: u64,
    /// Subscriptions refused for `subscriptions_max`.
    pub limit_subscriptions: u64,
    /// Retained messages not stored for `retained_max` / `retained_bytes_max`, and
    /// clears not remembered because `retained_max` tombstones were held.
    pub limit_retained: u64,
    /// Retained messages (or clears) that reached their partition after a newer one
    /// for the same topic, and were not stored.
    pub retained_superseded: u64,
    /// Times a client's reads were paused by its publish rate limits.
    pub limit_publish_rate: u64,
    /// Times accepting paused for `accept_rate_max`.
    pub limit_accept_rate: u64,
    /// Bytes held by session queues now.
    pub queued_bytes: u64,
    /// CONNECTs refused for their credentials (or lack of them).
    pub login_failures: u64,
    /// CONNECTs refused because their address failed `login_failures_max` times
    /// within a minute.
    pub logins_rate_limited: u64,
    /// Failed logins not counted against their address: the table was full.
    pub login_failures_untracked: u64,
    /// PUBLISHes (wills included) the ACL or `client.authorize` denied.
    pub acl_denied_publish: u64,
    /// SUBSCRIBE filters the ACL or `client.authorize` denied.
    pub acl_denied_subscribe: u64,
    /// Deliveries the ACL withheld from a subscriber (wildcard subscriptions that
    /// match denied topics, retained messages).
    pub acl_denied_delivery: u64,
}

impl ShardStats {
    /// PUBLISH packets received from clients, all QoS levels together.
    pub fn messages_in_total(&self) -> u64 {
        self.messages_in.iter().sum()
    }

    /// PUBLISH packets encoded toward clients, all QoS levels together.
    pub fn messages_out_total(&self) -> u64 {
        self.messages_out.iter().sum()
    }

    /// Messages dropped, by reason: the one list `$SYS` and `/metrics` both report,
    /// so a new reason cannot reach one and miss the other.
    pub fn dropped_by_reason(&self) -> [(&'static str, u64); 7] {
        [
            ("no_subscribers", self.dropped_no_subscribers),
            ("mqueue_full", self.dropped_mqueue),
            ("hook", self.dropped_by_hook),
            ("queued_bytes_budget", self.dropped_budget),
            ("reserved_topic", self.dropped_reserved_topic),
            ("expired", self.dropped_expired),
            ("too_large_for_client", self.dropped_too_large),
        ]
    }
}

/// What one listener of one shard counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Open connections it accepted (or that were handed over to this shard).
    pub links: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed at accept: over the listener's `max_connections`.
    pub refused_full: u64,
    /// Connections closed for lack of a valid PROXY header.
    pub proxy_refused: u64,
    /// TLS or WebSocket handshakes that failed.
    pub handshake_failures: u64,
    /// CONNECTs refused for their credentials.
    pub auth_failures: u64,
}

/// The durable log of one shard (`--data-dir`), as its snapshot reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSnapshot {
    /// Bytes written to the log since start.
    pub bytes_written: u64,
    /// Records appended since start.
    pub records: u64,
    /// Messages written since start (once per log, whatever the sessions
    /// holding them).
    pub messages: u64,
    /// Records too large to be written (their state is not durable).
    pub records_too_large: u64,
    /// Writes (one per pass with records) since start.
    pub writes: u64,
    /// fdatasyncs since start.
    pub syncs: u64,
    /// fdatasync latency since start, median, microseconds.
    pub sync_p50_us: u64,
    /// fdatasync latency since start, 99th percentile, microseconds.
    pub sync_p99_us: u64,
    /// fdatasync latency since start, worst, microseconds.
    pub sync_max_us: u64,
    /// Segments on disk now.
    pub segments: u64,
    /// Bytes of the segments on disk now.
    pub disk_bytes: u64,
    /// Checkpoints completed (each lets the older segments go).
    pub checkpoints: u64,
    /// Whether a checkpoint is under way.
    pub checkpointing: bool,
    /// Bytes of records waiting in memory for the disk.
    pub waiting_bytes: u64,
    /// Times publishers paused because more than `log_buffer_bytes` waited.
    pub pauses: u64,
    /// Whether the log is at its share of `data_max_bytes` (new durable state
    /// refused).
    pub full: bool,
    /// Write or sync failures (the log stops at the first).
    pub errors: u64,
    /// Shard 0 only: milliseconds the start-up replay took.
    pub recovery_ms: u64,
    /// Shard 0 only: records the start-up replay read.
    pub recovery_records: u64,
    /// Shard 0 only: segments that ended inside a record at start-up.
    pub recovery_torn: u64,
    /// Shard 0 only: segments whose replay ended at a corrupt record.
    pub recovery_corrupt: u64,
}

/// What one shard reports once a second.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardSnapshot {
    /// Index of the shard that took the snapshot.
    pub shard: usize,
    /// The shard's counters at snapshot time.
    pub stats: ShardStats,
    /// Sessions, connected or not.
    pub sessions: u64,
    /// Persistent sessions without a connection.
    pub sessions_offline: u64,
    /// Subscriptions of this shard's sessions.
    pub subscriptions: u64,
    /// Retained messages in this shard's partition (`$`-topics excluded).
    pub retained: u64,
    /// Distinct filters in this shard's route table replica.
    pub routes: u64,
    /// Batches sent to other shards over the rings.
    pub ring_batches_sent: u64,
    /// Batches that found a ring full.
    pub ring_batches_overflowed: u64,
    /// Batches waiting in the overflow right now.
    pub ring_overflow_now: u64,
    /// `io_uring_enter` calls on the shard's socket ring (submissions, task work).
    pub socket_enters: u64,
    /// Times the shard slept in its socket ring (one wake-up each).
    pub socket_parks: u64,
    /// Receive completions on the socket ring (one per arrival, or per buffer).
    pub socket_receives: u64,
    /// Receives that ended because every provided buffer was in use (re-armed).
    pub socket_buffers_exhausted: u64,
    /// Times receive coalescing turned on (`recv_coalesce_us`).
    pub socket_coalesce_on: u64,
    /// Parks that waited for arrivals to gather.
    pub socket_coalesced_waits: u64,
    /// 1 while the shard coalesces its receives, else 0.
    pub socket_coalescing: u64,
    /// Closing sockets shut down because their last send did not end within
    /// `connect_timeout` (a peer that stopped reading).
    pub socket_closes_forced: u64,
    /// Times freed heap memory was given back to the kernel (`malloc_trim`, after
    /// many connections closed). Shard 0 trims for the whole process.
    pub heap_trims: u64,
    /// Resident bytes those trims gave back.
    pub heap_trimmed_bytes: u64,
    /// Microseconds those trims took.
    pub heap_trim_us: u64,
    /// The worst lateness of the shard's tick during the last second, in
    /// microseconds: how long ready work waited for the event loop.
    pub lag_max_us: u64,
    /// Per listener (`kind address`), in listener order.
    pub listeners: Vec<(String, ListenerStats)>,
    /// The shard's durable log, when it keeps one.
    pub log: Option<LogSnapshot>,
}

/// Node-wide sums of the snapshots.
pub fn totals(snapshots: &[ShardSnapshot]) -> ShardSnapshot {
    let mut t = ShardSnapshot::default();
    for s in snapshots {
        let (a, b) = (&mut t.stats, &s.stats);
        a.connections += b.connections;
        a.connects += b.connects;
        a.connects_refused += b.connects_refused;
        a.connect_timeouts += b.connect_timeouts;
        a.takeovers += b.takeovers;
        a.keep_alive_timeouts += b.keep_alive_timeouts;
        a.protocol_errors += b.protocol_errors;
        a.handoffs_out += b.handoffs_out;
        a.handoffs_in += b.handoffs_in;
        for q in 0..3 {
            a.messages_in[q] += b.messages_in[q];
            a.messages_out[q] += b.messages_out[q];
        }
        a.bytes_in += b.bytes_in;
        a.bytes_out += b.bytes_out;
        a.dropped_no_subscribers += b.dropped_no_subscribers;
        a.dropped_mqueue += b.dropped_mqueue;
        a.dropped_by_hook += b.dropped_by_hook;
        a.dropped_expired += b.dropped_expired;
        a.dropped_too_large += b.dropped_too_large;
        a.shared_redispatched += b.shared_redispatched;
        a.wills_published += b.wills_published;
        a.sessions_expired += b.sessions_expired;
        a.route_updates_sent += b.route_updates_sent;
        a.sessions_handed_over += b.sessions_handed_over;
        a.sessions_restored += b.sessions_restored;
        a.refused_log_full += b.refused_log_full;
        a.sessions_taken_over += b.sessions_taken_over;
        a.recovered_sessions_dropped += b.recovered_sessions_dropped;
        a.recovered_wills_dropped += b.recovered_wills_dropped;
        a.claims_refused += b.claims_refused;
        a.refused_no_quorum += b.refused_no_quorum;
        a.route_updates_stale += b.route_updates_stale;
        a.reader_pauses += b.reader_pauses;
        a.backlog_pauses += b.backlog_pauses;
        a.dropped_budget += b.dropped_budget;
        a.limit_connections += b.limit_connections;
        a.dropped_reserved_topic += b.dropped_reserved_topic;
        a.limit_topic += b.limit_topic;
        a.limit_subscriptions += b.limit_subscriptions;
        a.limit_retained += b.limit_retained;
        a.retained_superseded += b.retained_superseded;
        a.limit_publish_rate += b.limit_publish_rate;
        a.limit_accept_rate += b.limit_accept_rate;
        a.queued_bytes += b.queued_bytes;
        a.login_failures += b.login_failures;
        a.logins_rate_limited += b.logins_rate_limited;
        a.login_failures_untracked += b.login_failures_untracked;
        a.acl_denied_publish += b.acl_denied_publish;
        a.acl_denied_subscribe += b.acl_denied_subscribe;
        a.acl_denied_delivery += b.acl_denied_delivery;
        t.sessions += s.sessions;
        t.sessions_offline += s.sessions_offline;
        t.subscriptions += s.subscriptions;
        t.retained += s.retained;
        t.routes = t.routes.max(s.routes);
        t.ring_batches_sent += s.ring_batches_sent;
        t.ring_batches_overflowed += s.ring_batches_overflowed;
        t.ring_overflow_now += s.ring_overflow_now;
        t.socket_enters += s.socket_enters;
        t.socket_parks += s.socket_parks;
        t.socket_receives += s.socket_receives;
        t.socket_buffers_exhausted += s.socket_buffers_exhausted;
        t.socket_coalesce_on += s.socket_coalesce_on;
        t.socket_coalesced_waits += s.socket_coalesced_waits;
        t.socket_coalescing += s.socket_coalescing;
        t.socket_closes_forced += s.socket_closes_forced;
        t.heap_trims += s.heap_trims;
        t.heap_trimmed_bytes += s.heap_trimmed_bytes;
        t.heap_trim_us += s.heap_trim_us;
        t.lag_max_us = t.lag_max_us.max(s.lag_max_us);
        if t.listeners.len() < s.listeners.len() {
            t.listeners.resize(s.listeners.len(), Default::default());
        }
        for ((name, a), (other, b)) in t.listeners.iter_mut().zip(&s.listeners) {
            name.clone_from(other);
            a.links += b.links;
            a.accepted += b.accepted;
            a.refused_full += b.refused_full;
            a.proxy_refused += b.proxy_refused;
            a.handshake_failures += b.handshake_failures;
            a.auth_failures += b.auth_failures;
        }
    }
    t
}

type Labels = Vec<(String, String)>;

fn shard_label(shard: usize) -> Labels {
    vec![("shard".to_owned(), shard.to_string())]
}

/// Registers one per-shard counter family and fills it.
fn counter(
    registry: &mut Registry,
    name: &str,
    help: &str,
    snapshots: &[ShardSnapshot],
    value: impl Fn(&ShardSnapshot) -> u64,
) {
    let family = Family::<Labels, Counter>::default();
    for s in snapshots {
        family.get_or_create(&shard_label(s.shard)).inc_by(value(s));
    }
    registry.register(name, help, family);
}

/// Registers one counter family with a `shard` label and a second label whose values
/// and counts `values` gives per snapshot.
fn labelled(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &str,
    snapshots: &[ShardSnapshot],
    values: impl Fn(&ShardSnapshot) -> Vec<(&'static str, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for s in snapshots {
        for (value_label, value) in values(s) {
            let labels = vec![
                ("shard".to_owned(), s.shard.to_string()),
                (label.to_owned(), value_label.to_owned()),
            ];
            family.get_or_create(&labels).inc_by(value);
        }
    }
    registry.register(name, help, family);
}

fn gauge(
    registry: &mut Registry,
    name: &str,
    help: &str,
    snapshots: &[ShardSnapshot],
    value: impl Fn(&ShardSnapshot) -> u64,
) {
    let family = Family::<Labels, Gauge>::default();
    for s in snapshots {
        family
            .get_or_create(&shard_label(s.shard))
            .set(i64::try_from(value(s)).unwrap_or(i64::MAX));
    }
    registry.register(name, help, family);
}

/// Per-listener series, labelled by shard and listener (`kind address`).
fn listener_families(registry: &mut Registry, snapshots: &[ShardSnapshot]) {
    type Value = fn(&ListenerStats) -> u64;
    let counters: [(&str, &str, Value); 5] = [
        ("listener_accepted", "Connections accepted", |l| l.accepted),
        ("listener_refused_full", "Connections over max_connections", |l| l.refused_full),
        ("listener_proxy_refused", "Connections without a valid PROXY header", |l| l.proxy_refused),
        ("listener_handshake_failures", "TLS or WebSocket handshakes that failed", |l| {
            l.handshake_failures
        }),
        ("listener_auth_failures", "CONNECTs refused for their credentials", |l| l.auth_failures),
    ];
    let labels = |shard: usize, name: &str| {
        vec![("shard".to_owned(), shard.to_string()), ("listener".to_owned(), name.to_owned())]
    };
    let open = Family::<Labels, Gauge>::default();
    for s in snapshots {
        for (name, l) in &s.listeners {
            open.get_or_create(&labels(s.shard, name))
                .set(i64::try_from(l.links).unwrap_or(i64::MAX));
        }
    }
    registry.register("listener_connections", "Open connections per listener", open);
    for (metric, help, value) in counters {
        let family = Family::<Labels, Counter>::default();
        for s in snapshots {
            for (name, l) in &s.listeners {
                family.get_or_create(&labels(s.shard, name)).inc_by(value(l));
            }
        }
        registry.register(metric, help, family);
    }
}

/// The durable logs' series (`--data-dir`).
fn log_families(r: &mut Registry, snapshots: &[ShardSnapshot]) {
    fn of(f: fn(&LogSnapshot) -> u64) -> impl Fn(&ShardSnapshot) -> u64 {
        move |s| s.log.as_ref().map_or(0, f)
    }
    counter(
        r,
        "log_bytes_written",
        "Bytes written to the durable log",
        snapshots,
        of(|l| l.bytes_written),
    );
    counter(r, "log_records", "Records appended to the durable log", snapshots, of(|l| l.records));
    counter(r, "log_writes", "Writes to the durable log", snapshots, of(|l| l.writes));
    counter(r, "log_syncs", "fdatasyncs of the durable log", snapshots, of(|l| l.syncs));
    counter(
        r,
        "log_errors",
        "Failed writes or syncs of the durable log",
        snapshots,
        of(|l| l.errors),
    );
    counter(
        r,
        "log_checkpoints",
        "Checkpoints of the durable log completed",
        snapshots,
        of(|l| l.checkpoints),
    );
    counter(
        r,
        "log_messages",
        "Messages written to the durable log",
        snapshots,
        of(|l| l.messages),
    );
    counter(
        r,
        "log_records_too_large",
        "Records too large for the durable log (not durable)",
        snapshots,
        of(|l| l.records_too_large),
    );
    gauge(
        r,
        "log_full",
        "Whether the log is at its share of data_max_bytes",
        snapshots,
        of(|l| u64::from(l.full)),
    );
    counter(
        r,
        "refused_log_full",
        "Publishes, sessions and subscriptions refused for a full log",
        snapshots,
        |s| s.stats.refused_log_full,
    );
    gauge(
        r,
        "log_checkpointing",
        "Whether a checkpoint is under way",
        snapshots,
        of(|l| u64::from(l.checkpointing)),
    );
    gauge(
        r,
        "log_waiting_bytes",
        "Bytes of log records waiting in memory for the disk",
        snapshots,
        of(|l| l.waiting_bytes),
    );
    counter(
        r,
        "log_pauses",
        "Times publishers paused because more than log_buffer_bytes waited for the disk",
        snapshots,
        of(|l| l.pauses),
    );
    gauge(r, "log_segments", "Segments of the durable log on disk", snapshots, of(|l| l.segments));
    gauge(r, "log_disk_bytes", "Bytes of the durable log on disk", snapshots, of(|l| l.disk_bytes));
    gauge(
        r,
        "log_sync_p50_us",
        "fdatasync latency, median, microseconds",
        snapshots,
        of(|l| l.sync_p50_us),
    );
    gauge(
        r,
        "log_sync_p99_us",
        "fdatasync latency, 99th percentile, microseconds",
        snapshots,
        of(|l| l.sync_p99_us),
    );
    gauge(
        r,
        "log_sync_max_us",
        "fdatasync latency, maximum, microseconds",
        snapshots,
        of(|l| l.sync_max_us),
    );
    gauge(
        r,
        "recovery_ms",
        "Milliseconds the start-up replay took (shard 0)",
        snapshots,
        of(|l| l.recovery_ms),
    );
    gauge(
        r,
        "recovery_records",
        "Log records replayed at start-up (shard 0)",
        snapshots,
        of(|l| l.recovery_records),
    );
    gauge(
        r,
        "recovery_segments_torn",
        "Segments that ended inside a record at start-up (shard 0)",
        snapshots,
        of(|l| l.recovery_torn),
    );
    gauge(
        r,
        "recovery_segments_corrupt",
        "Segments whose replay ended at a corrupt record (shard 0)",
        snapshots,
        of(|l| l.recovery_corrupt),
    );
}

/// The Prometheus text exposition of the latest snapshots (one series per shard).
pub fn prometheus_text(
    snapshots: &[ShardSnapshot],
    uptime_secs: u64,
    alarms_active: usize,
) -> String {
    let mut r = Registry::with_prefix("shardmq");
    gauge(&mut r, "connections", "Open client connections", snapshots, |s| s.stats.connections);
    counter(&mut r, "connects", "CONNECTs accepted", snapshots, |s| s.stats.connects);
    counter(&mut r, "connects_refused", "CONNECTs refused", snapshots, |s| {
        s.stats.connects_refused
    });
    counter(&mut r, "protocol_errors", "Connections closed for bad input", snapshots, |s| {
        s.stats.protocol_errors
    });
    counter(&mut r, "keep_alive_timeouts", "Keep-alive timeouts", snapshots, |s| {
        s.stats.keep_alive_timeouts
    });
    gauge(&mut r, "sessions", "Sessions, connected or not", snapshots, |s| s.sessions);
    gauge(&mut r, "sessions_offline", "Persistent sessions without a connection", snapshots, |s| {
        s.sessions_offline
    });
    gauge(&mut r, "subscriptions", "Subscriptions", snapshots, |s| s.subscriptions);
    gauge(&mut r, "retained_messages", "Retained messages", snapshots, |s| s.retained);
    gauge(&mut r, "routes", "Filters in the route table replica", snapshots, |s| s.routes);

    let by_qos = Family::<Labels, Counter>::default();
    let out_qos = Family::<Labels, Counter>::default();
    for s in snapshots {
        for q in 0..3 {
            let labels =
                vec![("shard".to_owned(), s.shard.to_string()), ("qos".to_owned(), q.to_string())];
            by_qos.get_or_create(&labels).inc_by(s.stats.messages_in[q]);
            out_qos.get_or_create(&labels).inc_by(s.stats.messages_out[q]);
        }
    }
    r.register("messages_received", "PUBLISH packets received from clients", by_qos);
    r.register("messages_sent", "PUBLISH packets sent to clients", out_qos);
    counter(&mut r, "bytes_received", "Payload bytes received", snapshots, |s| s.stats.bytes_in);
    counter(&mut r, "bytes_sent", "Bytes written to clients", snapshots, |s| s.stats.bytes_out);

    labelled(&mut r, "messages_dropped", "Messages dropped, by reason", "reason", snapshots, |s| {
        s.stats.dropped_by_reason().to_vec()
    });
    counter(
        &mut r,
        "shared_redispatched",
        "Shared-subscription messages passed to another member",
        snapshots,
        |s| s.stats.shared_redispatched,
    );
    counter(&mut r, "ring_batches_sent", "Batches sent to other shards", snapshots, |s| {
        s.ring_batches_sent
    });
    counter(&mut r, "ring_batches_overflowed", "Batches that found a ring full", snapshots, |s| {
        s.ring_batches_overflowed
    });
    counter(&mut r, "socket_enters", "io_uring_enter calls on the socket rings", snapshots, |s| {
        s.socket_enters
    });
    counter(&mut r, "socket_parks", "Sleeps of the shards in their socket rings", snapshots, |s| {
        s.socket_parks
    });
    counter(&mut r, "socket_receives", "Receive completions on the socket rings", snapshots, |s| {
        s.socket_receives
    });
    counter(
        &mut r,
        "socket_buffers_exhausted",
        "Receives ended because every provided buffer was in use",
        snapshots,
        |s| s.socket_buffers_exhausted,
    );
    counter(
        &mut r,
        "socket_coalesce_on",
        "Times a shard started taking arrivals once per recv_coalesce_us",
        snapshots,
        |s| s.socket_coalesce_on,
    );
    gauge(
        &mut r,
        "socket_coalescing",
        "1 while the shard coalesces its receives",
        snapshots,
        |s| s.socket_coalescing,
    );
    counter(
        &mut r,
        "socket_coalesced_waits",
        "Parks that waited for arrivals to gather",
        snapshots,
        |s| s.socket_coalesced_waits,
    );
    counter(
        &mut r,
        "socket_closes_forced",
        "Closing sockets shut down because their last send did not end in time",
        snapshots,
        |s| s.socket_closes_forced,
    );
    counter(
        &mut r,
        "heap_trims",
        "Times freed heap memory was given back to the kernel after connections closed",
        snapshots,
        |s| s.heap_trims,
    );
    counter(
        &mut r,
        "heap_trimmed_bytes",
        "Resident bytes the heap trims gave back",
        snapshots,
        |s| s.heap_trimmed_bytes,
    );
    counter(&mut r, "heap_trim_us", "Microseconds spent trimming the heap", snapshots, |s| {
        s.heap_trim_us
    });
    counter(
        &mut r,
        "reader_pauses",
        "Times publishers' reads paused for backpressure",
        snapshots,
        |s| s.stats.reader_pauses,
    );
    counter(
        &mut r,
        "backlog_pauses",
        "Times ring intake paused for a backlogged subscriber",
        snapshots,
        |s| s.stats.backlog_pauses,
    );
    gauge(
        &mut r,
        "event_loop_lag_microseconds",
        "Worst tick lateness in the last second",
        snapshots,
        |s| s.lag_max_us,
    );
    labelled(
        &mut r,
        "limit_hits",
        "Times a limit refused or paused something",
        "limit",
        snapshots,
        |s| {
            vec![
                ("connections_max", s.stats.limit_connections),
                ("connect_timeout", s.stats.connect_timeouts),
                ("topic", s.stats.limit_topic),
                ("subscriptions_max", s.stats.limit_subscriptions),
                ("retained", s.stats.limit_retained),
                ("publish_rate", s.stats.limit_publish_rate),
                ("accept_rate", s.stats.limit_accept_rate),
            ]
        },
    );
    counter(
        &mut r,
        "retained_superseded",
        "Retained messages that arrived after a newer one for their topic",
        snapshots,
        |s| s.stats.retained_superseded,
    );
    counter(&mut r, "login_failures", "CONNECTs refused for their credentials", snapshots, |s| {
        s.stats.login_failures
    });
    counter(
        &mut r,
        "logins_rate_limited",
        "CONNECTs refused after too many failed logins from their address",
        snapshots,
        |s| s.stats.logins_rate_limited,
    );
    labelled(&mut r, "acl_denied", "Actions the ACL denied, by action", "action", snapshots, |s| {
        vec![
            ("publish", s.stats.acl_denied_publish),
            ("subscribe", s.stats.acl_denied_subscribe),
            ("deliver", s.stats.acl_denied_delivery),
        ]
    });
    gauge(&mut r, "queued_bytes", "Bytes held by session queues", snapshots, |s| {
        s.stats.queued_bytes
    });
    listener_families(&mut r, snapshots);
    if snapshots.iter().any(|s| s.log.is_some()) {
        log_families(&mut r, snapshots);
    }
    let uptime = Gauge::<i64>::default();
    uptime.set(i64::try_from(uptime_secs).unwrap_or(i64::MAX));
    r.register("uptime_seconds", "Seconds since start", uptime);
    let alarms = Gauge::<i64>::default();
    alarms.set(alarms_active as i64);
    r.register("alarms_active", "Active alarms", alarms);

    let mut text = String::new();
    encode(&mut text, &r).expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_one_series_per_shard_and_sums_are_right() {
        let mut a = ShardSnapshot { shard: 0, ..Default::default() };
        a.stats.connections = 3;
        a.stats.messages_in = [5, 1, 0];
        let mut b = ShardSnapshot { shard: 1, ..Default::default() };
        b.stats.connections = 4;
        b.stats.messages_in = [0, 2, 7];
        let both = [a, b];
        let total = totals(&both);
        assert_eq!(total.stats.connections, 7);
        assert_eq!(total.stats.messages_in_total(), 15);
        let text = prometheus_text(&both, 12, 1);
        assert!(text.contains("shardmq_connections{shard=\"0\"} 3"), "{text}");
        assert!(text.contains("shardmq_connections{shard=\"1\"} 4"));
        assert!(text.contains("shardmq_messages_received_total{shard=\"1\",qos=\"2\"} 7"));
        assert!(text.contains("shardmq_uptime_seconds 12"));
        assert!(text.ends_with("# EOF\n"));
    }
}
