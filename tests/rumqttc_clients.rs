//! A real client library (rumqttc 0.24, sync `Client` and `AsyncClient`) against the
//! broker: every QoS across shards and within one, wildcards, retained messages.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{addr, client_id_on_shard, start, topic_on_shard, SHARDS, WAIT};
use rumqttc::{
    AsyncClient, Client, ConnAck, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet,
    Publish, QoS, SubscribeReasonCode,
};
use shardmq::Config;

const N: usize = 1000;

fn options(addr: SocketAddr, client_id: &str, clean_session: bool) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_clean_session(clean_session).set_keep_alive(Duration::from_secs(30));
    options
}

/// A sync rumqttc client whose connection is driven by its own thread; every event
/// comes out of `events`.
struct Peer {
    client: Client,
    events: mpsc::Receiver<Result<Event, String>>,
}

impl Peer {
    fn connect(addr: SocketAddr, client_id: &str, clean_session: bool) -> (Peer, ConnAck) {
        let (client, mut connection) = Client::new(options(addr, client_id, clean_session), 16);
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for event in connection.iter() {
                let failed = event.is_err();
                if tx.send(event.map_err(|e| e.to_string())).is_err() || failed {
                    return;
                }
            }
        });
        let peer = Peer { client, events };
        let connack = peer.wait_for(|e| match e {
            Event::Incoming(Packet::ConnAck(c)) => Some(c.clone()),
            _ => None,
        });
        assert_eq!(connack.code, ConnectReturnCode::Success);
        (peer, connack)
    }

    /// The first event `f` accepts, skipping others; panics after [`WAIT`].
    fn wait_for<T>(&self, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(event)) => {
                    if let Some(t) = f(&event) {
                        return t;
                    }
                }
                Ok(Err(e)) => panic!("connection failed: {e}"),
                Err(e) => panic!("no expected event within {WAIT:?}: {e}"),
            }
        }
    }

    fn next_publish(&self) -> Publish {
        self.wait_for(|e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
    }

    fn subscribe(&self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).expect("subscribe request");
        let codes = self.wait_for(|e| match e {
            Event::Incoming(Packet::SubAck(s)) => Some(s.return_codes.clone()),
            _ => None,
        });
        assert_eq!(codes, [SubscribeReasonCode::Success(qos)]);
    }
}

/// 1,000 messages plus an end marker from a publisher on `pub_shard` to a subscriber
/// on `sub_shard`, both at `qos`: all arrive, in order, once, and the publisher sees
/// every exchange complete.
fn pubsub(qos: QoS, pub_shard: usize, sub_shard: usize) {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let q = qos as u8;
    let (sub, _) =
        Peer::connect(addr, &client_id_on_shard(&format!("sub{q}"), sub_shard, SHARDS), true);
    sub.subscribe("pubsub/t", qos);
    let (publisher, _) =
        Peer::connect(addr, &client_id_on_shard(&format!("pub{q}"), pub_shard, SHARDS), true);
    for i in 0..N {
        publisher.client.publish("pubsub/t", qos, false, i.to_string()).expect("publish request");
    }
    publisher.client.publish("pubsub/t", qos, false, "end").expect("publish request");

    let mut got = Vec::with_capacity(N);
    loop {
        let p = sub.next_publish();
        assert_eq!(p.qos, qos, "delivered at the subscribed QoS");
        assert!(!p.dup);
        if &p.payload[..] == b"end" {
            break;
        }
        got.push(std::str::from_utf8(&p.payload).expect("utf-8").parse::<usize>().expect("n"));
    }
    // In order [MQTT-4.6.0-5] and complete; at QoS 2 exactly once [MQTT-4.3.3].
    assert_eq!(got, (0..N).collect::<Vec<_>>());

    let acks = match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce | QoS::ExactlyOnce => N + 1,
    };
    for _ in 0..acks {
        publisher.wait_for(|e| match (qos, e) {
            (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_)))
            | (QoS::ExactlyOnce, Event::Incoming(Packet::PubComp(_))) => Some(()),
            _ => None,
        });
    }
}

#[test]
fn qos0_across_shards() {
    pubsub(QoS::AtMostOnce, 0, 1);
}

#[test]
fn qos0_on_one_shard() {
    pubsub(QoS::AtMostOnce, 1, 1);
}

#[test]
fn qos1_across_shards() {
    pubsub(QoS::AtLeastOnce, 0, 1);
}

#[test]
fn qos1_on_one_shard() {
    pubsub(QoS::AtLeastOnce, 0, 0);
}

#[test]
fn qos2_across_shards() {
    pubsub(QoS::ExactlyOnce, 1, 0);
}

#[test]
fn qos2_on_one_shard() {
    pubsub(QoS::ExactlyOnce, 1, 1);
}

#[test]
fn subscriber_gets_min_of_published_and_granted_qos() {
    // [MQTT-3.8.4-6]: delivered at min(published QoS, granted QoS).
    let broker = start(Config::test());
    let addr = addr(&broker);
    let (sub, _) = Peer::connect(addr, &client_id_on_shard("minq-sub", 1, SHARDS), true);
    sub.subscribe("minq/t", QoS::AtLeastOnce);
    let (publisher, _) = Peer::connect(addr, &client_id_on_shard("minq-pub", 0, SHARDS), true);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher.client.publish("minq/t", qos, false, format!("{}", qos as u8)).expect("publish");
    }
    let got: Vec<(String, QoS)> = (0..3)
        .map(|_| {
            let p = sub.next_publish();
            (String::from_utf8_lossy(&p.payload).into_owned(), p.qos)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("0".to_owned(), QoS::AtMostOnce),
            ("1".to_owned(), QoS::AtLeastOnce),
            ("2".to_owned(), QoS::AtLeastOnce)
        ]
    );
}

// ---- AsyncClient on a tokio current-thread runtime ---------------------------------

/// Polls `eventloop` until `f` accepts an event; panics after [`WAIT`].
async fn poll_for<T>(eventloop: &mut EventLoop, mut f: impl FnMut(&Event) -> Option<T>) -> T {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let event = eventloop.poll().await.expect("connection");
            if let Some(t) = f(&event) {
                return t;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no expected event within {WAIT:?}"))
}

async fn async_connect(addr: SocketAddr, client_id: &str) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(options(addr, client_id, true), 16);
    let code = poll_for(&mut eventloop, |e| match e {
        Event::Incoming(Packet::ConnAck(c)) => Some(c.code),
        _ => None,
    })
    .await;
    assert_eq!(code, ConnectReturnCode::Success);
    (client, eventloop)
}

/// Subscribes; returns the SUBACK's codes and the PUBLISHes that came before it (the
/// server may send matching messages, e.g. retained ones, before the SUBACK: MQTT
/// 3.1.1 section 3.8.4).
async fn async_subscribe(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    filters: &[(&str, QoS)],
) -> (Vec<SubscribeReasonCode>, Vec<Publish>) {
    let filters = filters.iter().map(|(f, qos)| rumqttc::SubscribeFilter::new(f.to_string(), *qos));
    client.subscribe_many(filters).await.expect("subscribe request");
    let mut early = Vec::new();
    let codes = poll_for(eventloop, |e| match e {
        Event::Incoming(Packet::SubAck(s)) => Some(s.return_codes.clone()),
        Event::Incoming(Packet::Publish(p)) => {
            early.push(p.clone());
            None
        }
        _ => None,
    })
    .await;
    (codes, early)
}

async fn async_publish(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    topic: &str,
    payload: &str,
    retain: bool,
) {
    client.publish(topic, QoS::AtLeastOnce, retain, payload).await.expect("publish request");
    poll_for(eventloop, |e| matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())).await;
}

async fn next_async_publish(eventloop: &mut EventLoop) -> Publish {
    poll_for(eventloop, |e| match e {
        Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn wildcard_subscriptions_match_as_the_spec_says() {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let (sub, mut sub_loop) = async_connect(addr, &client_id_on_shard("wild-sub", 1, SHARDS)).await;
    let (codes, _) = async_subscribe(
        &sub,
        &mut sub_loop,
        &[
            ("wild/+/temp", QoS::AtLeastOnce),
            ("wild/b/#", QoS::AtLeastOnce),
            ("wild/end", QoS::AtLeastOnce),
        ],
    )
    .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce); 3]);
    let (publisher, mut pub_loop) =
        async_connect(addr, &client_id_on_shard("wild-pub", 0, SHARDS)).await;
    for topic in [
        "wild/a/temp",       // + matches one level
        "wild/a/b/temp",     // + does not match two
        "wild/b/x/y",        // # matches any number of levels
        "wild/b",            // # matches the parent level too [MQTT-4.7.1-2]
        "wild/c/humidity",   // no filter
        "wild/a/temp/extra", // + then an exact level: no
        "wild/b/temp",       // both filters: one copy [MQTT-3.3.5-1]
        "wild/end",
    ] {
        async_publish(&publisher, &mut pub_loop, topic, topic, false).await;
    }
    let mut got = Vec::new();
    loop {
        let p = next_async_publish(&mut sub_loop).await;
        got.push(p.topic.clone());
        if p.topic == "wild/end" {
            break;
        }
    }
    assert_eq!(got, ["wild/a/temp", "wild/b/x/y", "wild/b", "wild/b/temp", "wild/end"]);
}

#[tokio::test(flavor = "current_thread")]
async fn retained_message_reaches_a_later_subscriber_on_the_other_shard() {
    let broker = start(Config::test());
    let addr = addr(&broker);
    // The publisher, the topic's retained partition and the subscriber: shard 0, 0, 1.
    let topic = topic_on_shard("retained", 0, SHARDS);
    let (publisher, mut pub_loop) =
        async_connect(addr, &client_id_on_shard("ret-pub", 0, SHARDS)).await;
    async_publish(&publisher, &mut pub_loop, &topic, "first", true).await;
    async_publish(&publisher, &mut pub_loop, &topic, "latest", true).await;

    let (sub, mut sub_loop) = async_connect(addr, &client_id_on_shard("ret-sub", 1, SHARDS)).await;
    let (codes, early) = async_subscribe(&sub, &mut sub_loop, &[(&topic, QoS::AtLeastOnce)]).await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    let p = match early.into_iter().next() {
        Some(p) => p,
        None => next_async_publish(&mut sub_loop).await,
    };
    // [MQTT-3.3.1-6]: the last retained message; [MQTT-3.3.1-8]: with RETAIN set.
    assert_eq!((&p.topic[..], &p.payload[..], p.retain), (&topic[..], &b"latest"[..], true));

    // A wildcard subscription asks every shard, and gets it too.
    let (wild, mut wild_loop) =
        async_connect(addr, &client_id_on_shard("ret-wild", 1, SHARDS)).await;
    let (_, early) =
        async_subscribe(&wild, &mut wild_loop, &[("retained/+", QoS::AtLeastOnce)]).await;
    let p = match early.into_iter().next() {
        Some(p) => p,
        None => next_async_publish(&mut wild_loop).await,
    };
    assert_eq!((&p.topic[..], &p.payload[..], p.retain), (&topic[..], &b"latest"[..], true));

    // A live message to an existing subscription goes out with RETAIN clear
    // [MQTT-3.3.1-9].
    async_publish(&publisher, &mut pub_loop, &topic, "live", true).await;
    let p = next_async_publish(&mut sub_loop).await;
    assert_eq!((&p.payload[..], p.retain), (&b"live"[..], false));

    // An empty retained message clears it [MQTT-3.3.1-10]: a new subscriber gets
    // nothing but what follows.
    async_publish(&publisher, &mut pub_loop, &topic, "", true).await;
    let (late, mut late_loop) =
        async_connect(addr, &client_id_on_shard("ret-late", 1, SHARDS)).await;
    let (_, early) = async_subscribe(&late, &mut late_loop, &[(&topic, QoS::AtLeastOnce)]).await;
    assert_eq!(early, []);
    async_publish(&publisher, &mut pub_loop, &topic, "after", false).await;
    let p = next_async_publish(&mut late_loop).await;
    assert_eq!((&p.payload[..], p.retain), (&b"after"[..], false));
}
