//! The embedding API: `Broker::builder()`, the six hooks, `BrokerHandle::publish`
//! and `shutdown`, checked with real clients.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{client_id_on_shard, init_logging, seq, text, topic_on_shard, Raw, SHARDS, WAIT};
use shardmq::hooks::{Fold, Origin};
use shardmq::protocol::{QoS, ReasonCode};
use shardmq::router::owner_shard;
use shardmq::{Broker, BrokerHandle};

/// What the hooks saw.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Connected { client_id: String, shard: usize },
    Disconnected { client_id: String, shard: usize, reason: String },
    Subscribe { client_id: String, filter: String },
    Unsubscribe { client_id: String, filter: String },
    Acked { client_id: String, topic: String, payload: String },
}

/// A broker on 2 shards with every hook registered; the hooks report on `Seen`.
///
/// - `client.subscribe`: refuses `secret/#`, caps `capped/#` at QoS 1.
/// - `client.unsubscribe`: ignores unsubscribing `sticky/#`.
/// - `message.publish`: drops `drop/...`, upper-cases payloads on `upper/...`.
struct Hooked {
    broker: BrokerHandle,
    addr: SocketAddr,
    seen: mpsc::Receiver<Seen>,
    /// Messages that entered through `BrokerHandle::publish`, as the hook saw them.
    api_publishes: Arc<AtomicUsize>,
}

fn start_hooked() -> Hooked {
    init_logging();
    let (tx, seen) = mpsc::channel();
    let api_publishes = Arc::new(AtomicUsize::new(0));
    let api = Arc::clone(&api_publishes);
    let broker = Broker::builder()
        .listen(["127.0.0.1:0".parse().expect("address")])
        .cores(NonZeroUsize::new(SHARDS))
        .hooks(move |hooks| {
            let t = tx.clone();
            hooks.on_client_connected(move |c| {
                let _ =
                    t.send(Seen::Connected { client_id: c.client_id.to_string(), shard: c.shard });
            });
            let t = tx.clone();
            hooks.on_client_disconnected(move |c, reason| {
                let _ = t.send(Seen::Disconnected {
                    client_id: c.client_id.to_string(),
                    shard: c.shard,
                    reason: reason.to_owned(),
                });
            });
            let t = tx.clone();
            hooks.on_client_subscribe(move |c, request| {
                let Some(mut request) = request else { return Fold::Next(None) };
                let _ = t.send(Seen::Subscribe {
                    client_id: c.client_id.to_string(),
                    filter: request.filter.to_string(),
                });
                if request.filter.as_str() == "secret/#" {
                    return Fold::Stop(None);
                }
                if request.filter.as_str().starts_with("capped/") {
                    request.qos = request.qos.min(QoS::AtLeastOnce);
                }
                Fold::Next(Some(request))
            });
            let t = tx.clone();
            hooks.on_client_unsubscribe(move |c, filter| {
                let Some(filter) = filter else { return Fold::Next(None) };
                let _ = t.send(Seen::Unsubscribe {
                    client_id: c.client_id.to_string(),
                    filter: filter.to_string(),
                });
                if filter.as_str() == "sticky/#" {
                    Fold::Stop(None)
                } else {
                    Fold::Next(Some(filter))
                }
            });
            hooks.on_message_publish(move |origin, message| {
                if origin == Origin::Api {
                    api.fetch_add(1, Ordering::Relaxed);
                }
                match message {
                    Some(m) if m.topic.as_str().starts_with("drop/") => Fold::Stop(None),
                    Some(mut m) if m.topic.as_str().starts_with("upper/") => {
                        m.payload = m.payload.to_ascii_uppercase().into();
                        Fold::Next(Some(m))
                    }
                    other => Fold::Next(other),
                }
            });
            let t = tx;
            hooks.on_message_acked(move |c, m| {
                let _ = t.send(Seen::Acked {
                    client_id: c.client_id.to_string(),
                    topic: m.topic.to_string(),
                    payload: text(&m.payload),
                });
                Fold::Next(())
            });
        })
        .start()
        .expect("broker starts");
    let addr = broker.local_addrs()[0];
    assert_ne!(addr.port(), 0, "port 0 is resolved");
    Hooked { broker, addr, seen, api_publishes }
}

impl Hooked {
    /// The next event `f` accepts, skipping others; panics after [`WAIT`].
    fn wait_for<T>(&self, mut f: impl FnMut(Seen) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok(seen) => {
                    if let Some(t) = f(seen) {
                        return t;
                    }
                }
                Err(e) => panic!("no expected hook event within {WAIT:?}: {e}"),
            }
        }
    }

    /// Events already reported, without waiting.
    fn drain(&self) -> Vec<Seen> {
        self.seen.try_iter().collect()
    }
}

#[test]
fn connected_and_disconnected_hooks_run_on_the_owner_shard() {
    let h = start_hooked();
    let ids: Vec<String> =
        (0..6).map(|i| client_id_on_shard(&format!("hk{i}"), i % SHARDS, SHARDS)).collect();
    let mut clients = Vec::new();
    for id in &ids {
        let (raw, _) = Raw::connect(h.addr, id, true);
        clients.push(raw);
    }
    let mut connected: Vec<(String, usize)> = (0..ids.len())
        .map(|_| {
            h.wait_for(|s| match s {
                Seen::Connected { client_id, shard } => Some((client_id, shard)),
                _ => None,
            })
        })
        .collect();
    connected.sort();
    let mut expected: Vec<(String, usize)> =
        ids.iter().map(|id| (id.clone(), owner_shard(id.as_bytes(), SHARDS))).collect();
    expected.sort();
    assert_eq!(connected, expected, "each client runs on owner_shard(client id)");
    assert!(expected.iter().any(|(_, s)| *s == 0) && expected.iter().any(|(_, s)| *s == 1));

    // DISCONNECT, a dropped connection: both reported, with the reason.
    let mut clients = clients.into_iter();
    clients.next().expect("client").disconnect();
    clients.next().expect("client").drop_connection();
    let mut gone: Vec<(String, usize, String)> = (0..2)
        .map(|_| {
            h.wait_for(|s| match s {
                Seen::Disconnected { client_id, shard, reason } => Some((client_id, shard, reason)),
                _ => None,
            })
        })
        .collect();
    gone.sort();
    let mut expected = vec![
        (ids[0].clone(), owner_shard(ids[0].as_bytes(), SHARDS), "disconnect".to_owned()),
        (ids[1].clone(), owner_shard(ids[1].as_bytes(), SHARDS), "connection lost".to_owned()),
    ];
    expected.sort();
    assert_eq!(gone, expected);
}

#[test]
fn subscribe_hook_refuses_and_rewrites_filters() {
    let h = start_hooked();
    let (mut sub, _) = Raw::connect(h.addr, &client_id_on_shard("sub", 1, SHARDS), true);
    let codes = sub.subscribe(&[
        ("secret/#", QoS::AtLeastOnce),
        ("capped/#", QoS::ExactlyOnce),
        ("open/#", QoS::ExactlyOnce),
    ]);
    // Refused: 0x80 for that filter only [MQTT-3.9.3-1]; the others granted, one at
    // the QoS the hook chose.
    assert_eq!(
        codes,
        [
            ReasonCode::UNSPECIFIED_ERROR,
            ReasonCode::granted(QoS::AtLeastOnce),
            ReasonCode::granted(QoS::ExactlyOnce)
        ]
    );
    let filters: Vec<String> = (0..3)
        .map(|_| {
            h.wait_for(|s| match s {
                Seen::Subscribe { filter, .. } => Some(filter),
                _ => None,
            })
        })
        .collect();
    assert_eq!(filters, ["secret/#", "capped/#", "open/#"]);

    let (mut publisher, _) = Raw::connect(h.addr, &client_id_on_shard("pub", 0, SHARDS), true);
    publisher.publish("secret/x", b"hidden", QoS::ExactlyOnce);
    publisher.publish("capped/x", b"capped", QoS::ExactlyOnce);
    publisher.publish("open/x", b"open", QoS::ExactlyOnce);
    let got: Vec<(String, QoS)> = sub
        .receive_until_payload(b"open")
        .iter()
        .map(|p| (text(&p.payload), p.qos.qos()))
        .collect();
    assert_eq!(
        got,
        [("capped".to_owned(), QoS::AtLeastOnce), ("open".to_owned(), QoS::ExactlyOnce)]
    );
}

#[test]
fn unsubscribe_hook_can_keep_a_subscription() {
    let h = start_hooked();
    let (mut sub, _) = Raw::connect(h.addr, &client_id_on_shard("sub", 1, SHARDS), true);
    sub.subscribe(&[("sticky/#", QoS::AtLeastOnce), ("loose/#", QoS::AtLeastOnce)]);
    // UNSUBACK comes either way [MQTT-3.10.4-4].
    sub.unsubscribe(&["sticky/#", "loose/#"]);
    let filters: Vec<String> = (0..2)
        .map(|_| {
            h.wait_for(|s| match s {
                Seen::Unsubscribe { filter, .. } => Some(filter),
                _ => None,
            })
        })
        .collect();
    assert_eq!(filters, ["sticky/#", "loose/#"]);

    let (mut publisher, _) = Raw::connect(h.addr, &client_id_on_shard("pub", 0, SHARDS), true);
    publisher.publish("loose/x", b"loose", QoS::AtLeastOnce);
    publisher.publish("sticky/x", b"sticky", QoS::AtLeastOnce);
    let got = sub.receive_until_payload(b"sticky");
    assert_eq!(got.iter().map(|p| text(&p.payload)).collect::<Vec<_>>(), ["sticky"]);
}

#[test]
fn publish_hook_drops_and_rewrites_messages() {
    let h = start_hooked();
    let (mut sub, _) = Raw::connect(h.addr, &client_id_on_shard("sub", 1, SHARDS), true);
    sub.subscribe(&[
        ("drop/#", QoS::AtLeastOnce),
        ("upper/#", QoS::AtLeastOnce),
        ("plain/#", QoS::AtLeastOnce),
    ]);
    let (mut publisher, _) = Raw::connect(h.addr, &client_id_on_shard("pub", 0, SHARDS), true);
    // The publisher still gets its PUBACK / PUBCOMP for a dropped message (asserted
    // by `publish`).
    publisher.publish("drop/x", b"gone", QoS::AtLeastOnce);
    publisher.publish("drop/y", b"gone too", QoS::ExactlyOnce);
    publisher.publish("upper/x", b"hello", QoS::AtLeastOnce);
    publisher.publish("plain/x", b"as is", QoS::AtLeastOnce);
    // Messages from the embedding program pass through the hook too. They enter
    // through the shard owning their topic: these three all enter through shard 0,
    // so they keep their order.
    let upper_api = topic_on_shard("upper/api", 0, SHARDS);
    let drop_api = topic_on_shard("drop/api", 0, SHARDS);
    let plain_api = topic_on_shard("plain/api", 0, SHARDS);
    h.broker.publish(&upper_api, "from the api", QoS::AtLeastOnce, false).expect("publish");
    h.broker.publish(&drop_api, "dropped", QoS::AtLeastOnce, false).expect("publish");
    h.broker.publish(&plain_api, "end", QoS::AtLeastOnce, false).expect("publish");

    // The client's and the program's messages come by different ways, so only the
    // order within each is fixed: read until the last of both.
    let mut got: Vec<(String, String)> = Vec::new();
    while !(got.iter().any(|(_, p)| p == "as is") && got.iter().any(|(_, p)| p == "end")) {
        let packet = sub.recv();
        if let Some(p) = sub.ack(packet) {
            got.push((p.topic.name().expect("named").to_string(), text(&p.payload)));
        }
    }
    let (from_api, from_client): (Vec<_>, Vec<_>) =
        got.into_iter().partition(|(t, _)| t.contains("/api/"));
    assert_eq!(
        from_client,
        [("upper/x".to_owned(), "HELLO".to_owned()), ("plain/x".to_owned(), "as is".to_owned())]
    );
    assert_eq!(from_api, [(upper_api, "FROM THE API".to_owned()), (plain_api, "end".to_owned())]);
    assert_eq!(h.api_publishes.load(Ordering::Relaxed), 3);
}

#[test]
fn acked_hook_counts_pubacks_and_pubcomps() {
    let h = start_hooked();
    let sub_id = client_id_on_shard("sub", 1, SHARDS);
    let (mut sub, _) = Raw::connect(h.addr, &sub_id, true);
    sub.subscribe(&[("ack/#", QoS::ExactlyOnce)]);
    let (mut publisher, _) = Raw::connect(h.addr, &client_id_on_shard("pub", 0, SHARDS), true);
    for i in 0..10 {
        publisher.publish("ack/one", format!("a{i}").as_bytes(), QoS::AtLeastOnce);
    }
    for i in 0..5 {
        publisher.publish("ack/two", format!("b{i}").as_bytes(), QoS::ExactlyOnce);
    }
    // QoS 0 is never acknowledged.
    publisher.publish("ack/zero", b"z", QoS::AtMostOnce);
    publisher.publish("ack/one", b"last", QoS::AtLeastOnce);
    sub.receive_until_payload(b"last");
    // The PUBREL of the last QoS 2 message may still be in flight: finish every
    // exchange, then the barrier: the acks above were handled before the PINGRESP.
    for packet in sub.sync() {
        sub.ack(packet);
    }
    assert_eq!(sub.sync(), []);

    // One event per PUBACK and per PUBCOMP, none for QoS 0. (The last QoS 2
    // exchange may complete after the PUBACK of "last", so order is not compared.)
    let mut acked: Vec<(String, String, String)> = h
        .drain()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Acked { client_id, topic, payload } => Some((client_id, topic, payload)),
            _ => None,
        })
        .collect();
    acked.sort();
    let mut expected: Vec<(String, String, String)> = (0..10)
        .map(|i| format!("a{i}"))
        .chain(std::iter::once("last".to_owned()))
        .map(|payload| (sub_id.clone(), "ack/one".to_owned(), payload))
        .chain((0..5).map(|i| (sub_id.clone(), "ack/two".to_owned(), format!("b{i}"))))
        .collect();
    expected.sort();
    assert_eq!(acked, expected);
}

#[test]
fn handle_publish_reaches_subscribers_on_every_shard_in_order() {
    let h = start_hooked();
    let mut subs: Vec<Raw> = (0..SHARDS)
        .map(|shard| {
            let (mut raw, _) =
                Raw::connect(h.addr, &client_id_on_shard("api-sub", shard, SHARDS), true);
            raw.subscribe(&[("api/t", QoS::AtLeastOnce)]);
            raw
        })
        .collect();
    for i in 0..1000 {
        h.broker.publish("api/t", format!("n{i}"), QoS::AtLeastOnce, false).expect("publish");
    }
    for sub in &mut subs {
        let got: Vec<u32> = sub.receive_acking(1000).iter().map(|p| seq(&p.payload, "n")).collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!(sub.sync(), []);
    }
}

#[test]
fn handle_publish_refuses_an_invalid_topic() {
    let h = start_hooked();
    assert!(h.broker.publish("a/+", "x", QoS::AtMostOnce, false).is_err(), "[MQTT-3.3.2-2]");
    assert!(h.broker.publish("", "x", QoS::AtMostOnce, false).is_err(), "[MQTT-4.7.3-1]");
}

/// A hooked broker with a persistent client on each shard, shut down; returns its
/// address once `shutdown()` has returned.
fn shut_down_with_clients() -> SocketAddr {
    let h = start_hooked();
    let clients: Vec<(String, Raw)> = (0..SHARDS)
        .map(|shard| {
            let id = client_id_on_shard("stay", shard, SHARDS);
            let (mut raw, _) = Raw::connect(h.addr, &id, false);
            raw.subscribe(&[("stay/t", QoS::AtLeastOnce)]);
            (id, raw)
        })
        .collect();
    let Hooked { broker, addr, seen, .. } = h;

    let began = Instant::now();
    broker.shutdown().expect("every shard thread ends cleanly");
    let took = began.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");

    for (id, mut raw) in clients {
        assert_eq!(raw.packets_until_closed(), [], "{id}: closed without a packet");
    }
    // Every client was reported gone, before shutdown() returned.
    let reasons: Vec<Seen> =
        seen.try_iter().filter(|s| matches!(s, Seen::Disconnected { .. })).collect();
    assert_eq!(reasons.len(), SHARDS, "every client reported: {reasons:?}");
    assert!(reasons
        .iter()
        .all(|s| matches!(s, Seen::Disconnected { reason, .. } if reason == "shutdown")));
    addr
}

#[test]
fn shutdown_returns_promptly_and_closes_connections() {
    shut_down_with_clients();
}

/// Open sockets and io_uring instances of this process.
fn open_sockets_and_rings() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("procfs")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| {
            let target = target.to_string_lossy();
            target.starts_with("socket:") || target.contains("io_uring")
        })
        .count()
}

#[test]
fn port_accepts_no_connection_after_shutdown() {
    let addr = shut_down_with_clients();
    // Once shutdown() has returned nothing listens any more: a connection attempt is
    // refused (this once failed: the accept loops outlived the shards).
    match TcpStream::connect_timeout(&addr, WAIT) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        Ok(_) => panic!("{addr} still accepts connections after shutdown()"),
    }
}

#[test]
fn start_and_shutdown_release_sockets_and_rings() {
    let before = open_sockets_and_rings();
    for _ in 0..3 {
        let _ = shut_down_with_clients();
    }
    let after = open_sockets_and_rings();
    // Other tests of this binary run in parallel threads and open sockets too, so
    // allow a little noise, but not 3 brokers' worth of rings (3 per shard) and
    // listeners. (glommio 0.9 keeps one eventfd per executor; not counted here.)
    assert!(after <= before + 4, "sockets and rings before {before}, after 3 brokers {after}");
}

/// Two embedded brokers form a cluster through `Broker::builder().cluster(...)`,
/// sharing a cluster secret: a message the program publishes into one reaches a
/// subscriber of the other.
#[test]
fn embedded_brokers_form_a_cluster() {
    init_logging();
    let secret = std::env::temp_dir().join(format!("shardmq-secret-{}", std::process::id()));
    std::fs::write(&secret, "a secret shared by both nodes\n").expect("secret file");
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let first = Broker::builder()
        .listen([loopback])
        .cores(NonZeroUsize::new(1))
        .node_name("first".to_owned())
        .node_id(1u16)
        .cluster_secret_file(secret.clone())
        .cluster(loopback, &[])
        .start()
        .expect("first node starts");
    let seed = first.cluster_addr().expect("a cluster node has a cluster address");
    let second = Broker::builder()
        .listen([loopback])
        .cores(NonZeroUsize::new(1))
        .node_name("second".to_owned())
        .node_id(2u16)
        .cluster_secret_file(secret.clone())
        .cluster(loopback, &[seed])
        .start()
        .expect("second node starts");
    let (mut sub, _) = Raw::connect(second.local_addrs()[0], "on-second", true);
    sub.subscribe(&[("cluster/t", QoS::AtLeastOnce)]);
    // The nodes find each other and the route reaches the first node within a
    // bounded time: publish until a message comes through.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    let got = loop {
        assert!(Instant::now() < deadline, "nothing crossed the cluster");
        n += 1;
        first.publish("cluster/t", format!("m{n}"), QoS::AtLeastOnce, false).expect("publish");
        if let Ok(shardmq::protocol::Packet::Publish(p)) =
            sub.recv_within(Duration::from_millis(200))
        {
            break p;
        }
    };
    assert!(text(&got.payload).starts_with('m'));
    first.shutdown().expect("first stops");
    second.shutdown().expect("second stops");
    let _ = std::fs::remove_file(secret);
}
