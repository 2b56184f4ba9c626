//! A real MQTT 5 client library (rumqttc 0.24, `rumqttc::v5`) against the broker:
//! CONNACK properties, PUBLISH properties at every QoS, request/response, message
//! expiry, subscription identifiers and options (No Local, Retain As Published,
//! Retain Handling), topic aliases both ways, MQTT 3.1.1 and 5 clients together,
//! session expiry, a shared subscription across shards, and takeover.
//!
//! Publisher and subscriber sit on different shards and on the same shard
//! (`client_id_on_shard`). Every wait is bounded by [`WAIT`]; where a test must show
//! that something did NOT arrive, it uses an ordering barrier (a later message on a
//! path that cannot overtake the one that must not come) instead of a delay.

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{addr, client_id_on_shard, probe, start, topic_on_shard, SHARDS, WAIT};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectProperties, ConnectReturnCode, DisconnectReasonCode, Filter, Packet, Publish,
    PublishProperties, RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, ConnectionError, Event, MqttOptions, StateError};
use shardmq::Config;

fn options(addr: SocketAddr, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// `options` for a persistent session: Clean Start 0 and a Session Expiry Interval.
fn persistent_options(addr: SocketAddr, client_id: &str, expiry_secs: u32) -> MqttOptions {
    let mut options = options(addr, client_id);
    let mut properties = ConnectProperties::new();
    properties.session_expiry_interval = Some(expiry_secs);
    options.set_clean_start(false).set_connect_properties(properties);
    options
}

type Item = Result<Event, ConnectionError>;

/// A sync rumqttc v5 client whose connection is driven by its own thread; every
/// event (and the error that ends the connection) comes out of `events`. PUBLISHes
/// that arrive while a test waits for something else are kept for `next_publish`.
struct Peer {
    id: String,
    client: Client,
    events: mpsc::Receiver<Item>,
    stash: RefCell<VecDeque<Publish>>,
}

impl Peer {
    fn connect(addr: SocketAddr, client_id: &str) -> (Peer, ConnAck) {
        Peer::connect_with(options(addr, client_id))
    }

    /// Connects; asserts that the CONNACK accepts.
    fn connect_with(options: MqttOptions) -> (Peer, ConnAck) {
        let id = options.client_id();
        let (client, mut connection) = Client::new(options, 64);
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for event in connection.iter() {
                let failed = event.is_err();
                // Stop at the first error: the event loop would reconnect otherwise.
                if tx.send(event).is_err() || failed {
                    return;
                }
            }
        });
        let peer = Peer { id, client, events, stash: RefCell::new(VecDeque::new()) };
        let connack = peer.wait_for(|e| match e {
            Event::Incoming(Packet::ConnAck(c)) => Some(c.clone()),
            _ => None,
        });
        assert_eq!(connack.code, ConnectReturnCode::Success, "CONNACK of {}", peer.id);
        (peer, connack)
    }

    fn next_item(&self, deadline: Instant) -> Item {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(left) {
            Ok(item) => item,
            Err(e) => panic!("{}: nothing expected came within {WAIT:?}: {e}", self.id),
        }
    }

    /// The first event `f` accepts; PUBLISHes it skips are kept. Panics if the
    /// connection fails or after [`WAIT`].
    fn wait_for<T>(&self, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_item(deadline) {
                Ok(event) => {
                    if let Some(t) = f(&event) {
                        return t;
                    }
                    if let Event::Incoming(Packet::Publish(p)) = event {
                        self.stash.borrow_mut().push_back(p);
                    }
                }
                Err(e) => panic!("{}: connection failed: {e:?}", self.id),
            }
        }
    }

    fn next_publish(&self) -> Publish {
        let stashed = self.stash.borrow_mut().pop_front();
        if let Some(p) = stashed {
            return p;
        }
        self.wait_for(|e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
    }

    /// PUBLISHes up to and including the first with `payload`.
    fn publishes_until(&self, payload: &str) -> Vec<Publish> {
        let mut got = Vec::new();
        loop {
            let p = self.next_publish();
            let last = p.payload == payload.as_bytes();
            got.push(p);
            if last {
                return got;
            }
        }
    }

    /// The error that ends the connection (events before it are skipped, PUBLISHes
    /// kept); panics if the connection is still up after [`WAIT`].
    fn connection_end(&self) -> ConnectionError {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_item(deadline) {
                Ok(Event::Incoming(Packet::Publish(p))) => self.stash.borrow_mut().push_back(p),
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    }

    /// SUBSCRIBE with an optional Subscription Identifier; the SUBACK's codes.
    fn subscribe(&self, filters: Vec<Filter>, id: Option<usize>) -> Vec<SubscribeReasonCode> {
        let properties = SubscribeProperties { id, user_properties: Vec::new() };
        self.client.subscribe_many_with_properties(filters, properties).expect("subscribe request");
        self.wait_for(|e| match e {
            Event::Incoming(Packet::SubAck(s)) => Some(s.return_codes.clone()),
            _ => None,
        })
    }

    /// Subscribes to one filter with default options; asserts it is granted.
    fn sub(&self, filter: &str, qos: QoS) {
        assert_eq!(
            self.subscribe(vec![Filter::new(filter, qos)], None),
            [SubscribeReasonCode::Success(qos)]
        );
    }

    /// Sends a PUBLISH without waiting for its acknowledgement.
    fn send(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
        properties: Option<PublishProperties>,
    ) {
        match properties {
            Some(p) => self.client.publish_with_properties(topic, qos, retain, payload, p),
            None => self.client.publish(topic, qos, retain, payload),
        }
        .expect("publish request");
    }

    /// Waits for the end of one outgoing QoS 1 (PUBACK) or QoS 2 (PUBCOMP) exchange.
    fn wait_ack(&self, qos: QoS) {
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_for(|e| matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(()))
            }
            QoS::ExactlyOnce => {
                self.wait_for(|e| matches!(e, Event::Incoming(Packet::PubComp(_))).then_some(()))
            }
        }
    }

    /// Publishes and, at QoS 1 and 2, waits until the exchange completes.
    fn publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
        properties: Option<PublishProperties>,
    ) {
        self.send(topic, qos, retain, payload, properties);
        self.wait_ack(qos);
    }
}

/// The properties of a received PUBLISH (all empty when it carried none).
fn props(p: &Publish) -> PublishProperties {
    p.properties.clone().unwrap_or_default()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn user(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

// ---- CONNACK ---------------------------------------------------------------------

/// The CONNACK tells a v5 client the broker's limits and features
/// [MQTT-3.2.2.3]: Receive Maximum 1024 (3.2.2.3.3), Maximum Packet Size
/// (3.2.2.3.6), Topic Alias Maximum 64 (3.2.2.3.8), Wildcard, Subscription
/// Identifier and Shared Subscription Available = 1 (3.2.2.3.11-13); Maximum QoS and
/// Retain Available are absent because both are fully supported. Clean Start 1
/// means Session Present 0 [MQTT-3.2.2-2].
#[test]
fn connack_states_limits_and_features() {
    let broker = start(Config::test());
    let addr = addr(&broker);
    for shard in 0..SHARDS {
        let (_peer, connack) = Peer::connect(addr, &client_id_on_shard("connack", shard, SHARDS));
        assert!(!connack.session_present);
        let p = connack.properties.expect("CONNACK properties");
        assert_eq!(p.receive_max, Some(1024), "Receive Maximum");
        assert_eq!(p.max_packet_size, Some(1024 * 1024), "Maximum Packet Size");
        assert_eq!(p.topic_alias_max, Some(64), "Topic Alias Maximum");
        assert_eq!(p.wildcard_subscription_available, Some(1));
        assert_eq!(p.subscription_identifiers_available, Some(1));
        assert_eq!(p.shared_subscription_available, Some(1));
        assert_eq!((p.max_qos, p.retain_available), (None, None), "both fully supported");
        assert_eq!(p.server_keep_alive, None, "no keep-alive cap configured");
        assert_eq!(p.assigned_client_identifier, None, "the client chose its id");
        assert_eq!(p.authentication_method, None, "[MQTT-4.12.0-6]");
    }
}

/// A Session Expiry Interval above the broker's cap (`session_expiry_secs`) is
/// answered with the cap in CONNACK [MQTT-3.2.2.3.2]; a keep-alive above
/// `keep_alive_max_secs` with Server Keep Alive [MQTT-3.2.2-21], which the client
/// then uses.
#[test]
fn connack_tells_the_capped_session_expiry_and_keep_alive() {
    let broker = start(Config {
        session_expiry: Some(Duration::from_secs(600)),
        keep_alive_max_secs: NonZeroU16::new(10),
        ..Config::test()
    });
    let addr = addr(&broker);
    let options = persistent_options(addr, &client_id_on_shard("capped", 1, SHARDS), u32::MAX);
    let (_peer, connack) = Peer::connect_with(options);
    let p = connack.properties.expect("CONNACK properties");
    assert_eq!(p.session_expiry_interval, Some(600));
    assert_eq!(p.server_keep_alive, Some(10), "client asked for 30 s");
}

// ---- PUBLISH properties --------------------------------------------------------

const ROUND_TRIPS: usize = 50;

/// `ROUND_TRIPS` messages at `qos` from a publisher on `pub_shard` to a subscriber
/// on `sub_shard`, each with every application property, then one without any. The
/// subscriber gets them in order [MQTT-4.6.0-5], at `qos`, with the Payload Format
/// Indicator [MQTT-3.3.2-4], Content Type [MQTT-3.3.2-20], Response Topic
/// [MQTT-3.3.2-15], Correlation Data [MQTT-3.3.2-16] and User Properties, repeats
/// and order included [MQTT-3.3.2-17] [MQTT-3.3.2-18], unaltered; the Message
/// Expiry Interval is the one sent less the time the message waited, so equal or a
/// little lower [MQTT-3.3.2-6]. No Topic Alias goes to a client that allowed none
/// [MQTT-3.1.2-27], and no Subscription Identifier where the subscription had none.
/// The message without properties comes without any: nothing leaks from the one
/// before.
fn properties_round_trip(qos: QoS, pub_shard: usize, sub_shard: usize) {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let q = qos as u8;
    let (sub, _) =
        Peer::connect(addr, &client_id_on_shard(&format!("prop-sub{q}"), sub_shard, SHARDS));
    sub.sub("props/t", QoS::ExactlyOnce);
    let (publisher, _) =
        Peer::connect(addr, &client_id_on_shard(&format!("prop-pub{q}"), pub_shard, SHARDS));
    let started = Instant::now();
    let sent = |i: usize| PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(3600),
        content_type: Some("text/plain; charset=utf-8".into()),
        response_topic: Some(format!("props/reply/{i}")),
        correlation_data: Some(Bytes::from(vec![0, 0xFF, i as u8])),
        user_properties: user(&[("k", "1"), ("seq", &i.to_string()), ("k", "2"), ("a", "")]),
        ..PublishProperties::default()
    };
    for i in 0..ROUND_TRIPS {
        publisher.send("props/t", qos, false, format!("m{i}"), Some(sent(i)));
    }
    publisher.send("props/t", qos, false, "plain", None);
    for _ in 0..=ROUND_TRIPS {
        publisher.wait_ack(qos);
    }

    for i in 0..ROUND_TRIPS {
        let p = sub.next_publish();
        assert_eq!(
            (text(&p.payload), p.qos, &p.topic[..]),
            (format!("m{i}"), qos, &b"props/t"[..])
        );
        let mut got = props(&p);
        let expiry = got.message_expiry_interval.take().expect("Message Expiry Interval");
        let waited = started.elapsed().as_secs() as u32 + 1;
        assert!((3600 - waited..=3600).contains(&expiry), "expiry {expiry} after {waited} s");
        assert_eq!(got, PublishProperties { message_expiry_interval: None, ..sent(i) });
    }
    let p = sub.next_publish();
    assert_eq!((&p.payload[..], p.qos), (&b"plain"[..], qos));
    assert_eq!(props(&p), PublishProperties::default(), "no properties: {:?}", p.properties);
}

#[test]
fn properties_qos0_across_shards() {
    properties_round_trip(QoS::AtMostOnce, 0, 1);
}

#[test]
fn properties_qos0_on_one_shard() {
    properties_round_trip(QoS::AtMostOnce, 1, 1);
}

#[test]
fn properties_qos1_across_shards() {
    properties_round_trip(QoS::AtLeastOnce, 1, 0);
}

#[test]
fn properties_qos1_on_one_shard() {
    properties_round_trip(QoS::AtLeastOnce, 0, 0);
}

#[test]
fn properties_qos2_across_shards() {
    properties_round_trip(QoS::ExactlyOnce, 0, 1);
}

#[test]
fn properties_qos2_on_one_shard() {
    properties_round_trip(QoS::ExactlyOnce, 1, 1);
}

/// Request/response [MQTT-4.10]: a requester names its reply topic in Response
/// Topic and tags each request with Correlation Data; the responder answers on that
/// topic with the same Correlation Data. Both properties reach the responder
/// unaltered [MQTT-3.3.2-15] [MQTT-3.3.2-16], so each response matches its request.
fn request_response(requester_shard: usize, responder_shard: usize) {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let requester_id = client_id_on_shard("requester", requester_shard, SHARDS);
    let (requester, _) = Peer::connect(addr, &requester_id);
    let reply_topic = format!("rr/reply/{requester_id}");
    requester.sub(&reply_topic, QoS::AtLeastOnce);
    let (responder, _) =
        Peer::connect(addr, &client_id_on_shard("responder", responder_shard, SHARDS));
    responder.sub("rr/service/+", QoS::AtLeastOnce);

    let requests =
        [("rr/service/double", "21", b"c-1".to_vec()), ("rr/service/double", "5", vec![0, 1, 2])];
    for (topic, arg, correlation) in &requests {
        let properties = PublishProperties {
            response_topic: Some(reply_topic.clone()),
            correlation_data: Some(Bytes::from(correlation.clone())),
            ..PublishProperties::default()
        };
        requester.publish(topic, QoS::AtLeastOnce, false, arg.to_string(), Some(properties));
    }
    // The responder serves both requests, answering where each asks.
    for _ in &requests {
        let request = responder.next_publish();
        let asked = props(&request);
        let n: u32 = text(&request.payload).parse().expect("a number");
        let reply_to = asked.response_topic.expect("Response Topic");
        let answer = PublishProperties {
            correlation_data: asked.correlation_data,
            ..PublishProperties::default()
        };
        responder.publish(&reply_to, QoS::AtLeastOnce, false, (2 * n).to_string(), Some(answer));
    }
    let mut answers: Vec<(Vec<u8>, String)> = (0..requests.len())
        .map(|_| {
            let p = requester.next_publish();
            assert_eq!(&p.topic[..], reply_topic.as_bytes());
            (props(&p).correlation_data.expect("Correlation Data").to_vec(), text(&p.payload))
        })
        .collect();
    answers.sort();
    assert_eq!(answers, [(vec![0, 1, 2], "10".to_owned()), (b"c-1".to_vec(), "42".to_owned())]);
}

#[test]
fn request_response_across_shards() {
    request_response(0, 1);
}

#[test]
fn request_response_on_one_shard() {
    request_response(1, 1);
}

// ---- Subscription identifiers and options ----------------------------------------

/// Overlapping subscriptions give one copy carrying the identifier of each matching
/// subscription that has one [MQTT-3.3.4-3] [MQTT-3.3.4-4], at the highest QoS of
/// them [MQTT-3.3.4-2]; a multi-byte identifier (300) survives; a subscription
/// without one adds none. SUBSCRIBE is replaced by one with the same filter
/// [MQTT-3.8.4-3], and its identifier with it.
fn subscription_identifiers(pub_shard: usize, sub_shard: usize) {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let (sub, _) = Peer::connect(addr, &client_id_on_shard("sid-sub", sub_shard, SHARDS));
    assert_eq!(
        sub.subscribe(vec![Filter::new("sid/+/t", QoS::AtLeastOnce)], Some(7)),
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    assert_eq!(
        sub.subscribe(vec![Filter::new("sid/a/#", QoS::ExactlyOnce)], Some(300)),
        [SubscribeReasonCode::Success(QoS::ExactlyOnce)]
    );
    sub.sub("sid/plain/+", QoS::AtLeastOnce);
    let (publisher, _) = Peer::connect(addr, &client_id_on_shard("sid-pub", pub_shard, SHARDS));
    for topic in ["sid/a/t", "sid/b/t", "sid/a/x", "sid/plain/x"] {
        publisher.publish(topic, QoS::ExactlyOnce, false, topic, None);
    }
    // Once they arrived (so none is matched against the replaced subscriptions),
    // replace `sid/+/t` with identifier 8 and `sid/a/#` with none.
    let mut got = sub.publishes_until("sid/plain/x");
    sub.subscribe(vec![Filter::new("sid/+/t", QoS::AtLeastOnce)], Some(8));
    sub.subscribe(vec![Filter::new("sid/a/#", QoS::AtLeastOnce)], None);
    publisher.publish("sid/a/t", QoS::ExactlyOnce, false, "replaced", None);
    publisher.publish("sid/b/t", QoS::ExactlyOnce, false, "end", None);
    got.extend(sub.publishes_until("end"));

    let got: Vec<(String, String, QoS, Vec<usize>)> = got
        .into_iter()
        .map(|p| {
            let mut ids = props(&p).subscription_identifiers;
            ids.sort_unstable(); // their order is not significant [MQTT-3.3.4-4]
            (text(&p.topic), text(&p.payload), p.qos, ids)
        })
        .collect();
    let row = |topic: &str, payload: &str, qos, ids: &[usize]| {
        (topic.to_owned(), payload.to_owned(), qos, ids.to_vec())
    };
    assert_eq!(
        got,
        [
            row("sid/a/t", "sid/a/t", QoS::ExactlyOnce, &[7, 300]),
            row("sid/b/t", "sid/b/t", QoS::AtLeastOnce, &[7]),
            row("sid/a/x", "sid/a/x", QoS::ExactlyOnce, &[300]),
            row("sid/plain/x", "sid/plain/x", QoS::AtLeastOnce, &[]),
            row("sid/a/t", "replaced", QoS::AtLeastOnce, &[8]),
            row("sid/b/t", "end", QoS::AtLeastOnce, &[8]),
        ]
    );
}

#[test]
fn subscription_identifiers_across_shards() {
    subscription_identifiers(1, 0);
}

#[test]
fn subscription_identifiers_on_one_shard() {
    subscription_identifiers(0, 0);
}

/// No Local [MQTT-3.8.3-3]: a client's own messages are not forwarded to it on a
/// subscription with No Local, but others' messages are, and other clients still
/// get its messages. The barrier: the client's own message on a topic without No
/// Local, published after the one that must not come back, cannot overtake it.
fn no_local(own_shard: usize, other_shard: usize) {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let (me, _) = Peer::connect(addr, &client_id_on_shard("nl-me", own_shard, SHARDS));
    let mut filter = Filter::new("nl/t", QoS::AtLeastOnce);
    filter.nolocal = true;
    assert_eq!(me.subscribe(vec![filter], None), [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    me.sub("nl/barrier", QoS::AtLeastOnce);
    let (other, _) = Peer::connect(addr, &client_id_on_shard("nl-other", other_shard, SHARDS));
    other.sub("nl/t", QoS::AtLeastOnce);

    me.publish("nl/t", QoS::AtLeastOnce, false, "mine", None);
    me.publish("nl/barrier", QoS::AtLeastOnce, false, "barrier", None);
    let got: Vec<String> = me.publishes_until("barrier").iter().map(|p| text(&p.payload)).collect();
    assert_eq!(got, ["barrier"], "its own message came back");

    other.publish("nl/t", QoS::AtLeastOnce, false, "theirs", None);
    assert_eq!(text(&me.next_publish().payload), "theirs");
    // Two publishers: no order between them.
    let mut got: Vec<String> = (0..2).map(|_| text(&other.next_publish().payload)).collect();
    got.sort();
    assert_eq!(got, ["mine", "theirs"], "No Local is the subscriber's option only");
}

#[test]
fn no_local_across_shards() {
    no_local(0, 1);
}

#[test]
fn no_local_on_one_shard() {
    no_local(1, 1);
}

/// Retain As Published: with 1 the RETAIN flag is forwarded as published
/// [MQTT-3.3.1-13], with 0 it is cleared [MQTT-3.3.1-12]. A retained message sent
/// because of a new subscription has RETAIN 1 either way (section 3.3.1.3).
fn retain_as_published(pub_shard: usize, sub_shard: usize) {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let topic = topic_on_shard("rap", 1 - sub_shard, SHARDS);
    let (publisher, _) = Peer::connect(addr, &client_id_on_shard("rap-pub", pub_shard, SHARDS));
    publisher.publish(&topic, QoS::AtLeastOnce, true, "stored", None);

    let (keep, _) = Peer::connect(addr, &client_id_on_shard("rap-keep", sub_shard, SHARDS));
    let mut filter = Filter::new(topic.as_str(), QoS::AtLeastOnce);
    filter.preserve_retain = true;
    assert_eq!(
        keep.subscribe(vec![filter], None),
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let (clear, _) = Peer::connect(addr, &client_id_on_shard("rap-clear", sub_shard, SHARDS));
    clear.sub(&topic, QoS::AtLeastOnce);
    for sub in [&keep, &clear] {
        let p = sub.next_publish();
        assert_eq!((text(&p.payload), p.retain), ("stored".to_owned(), true), "{}", sub.id);
    }

    publisher.publish(&topic, QoS::AtLeastOnce, true, "live-retained", None);
    publisher.publish(&topic, QoS::AtLeastOnce, false, "live", None);
    for (sub, flags) in [(&keep, [true, false]), (&clear, [false, false])] {
        let got: Vec<(String, bool)> =
            sub.publishes_until("live").iter().map(|p| (text(&p.payload), p.retain)).collect();
        assert_eq!(
            got,
            [("live-retained".to_owned(), flags[0]), ("live".to_owned(), flags[1])],
            "{}",
            sub.id
        );
    }
}

#[test]
fn retain_as_published_across_shards() {
    retain_as_published(0, 1);
}

#[test]
fn retain_as_published_on_one_shard() {
    retain_as_published(1, 1);
}

/// Retain Handling: 2 sends no retained message [MQTT-3.3.1-11]; 1 sends them only
/// for a subscription that did not exist [MQTT-3.3.1-10]; 0 at every subscribe
/// [MQTT-3.3.1-9]. One client subscribes to the same filter with 2, then 1 (it
/// exists now), then 0: exactly one retained copy must come, that of the last
/// SUBSCRIBE. Every answer comes from the topic's retained partition over the same
/// path, in order, so a copy sent for an earlier SUBSCRIBE would come first; a live
/// message published after that copy arrived closes the list. A second client's new
/// subscription with 1 gets the message.
fn retain_handling(topic_shard: usize, sub_shard: usize) {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let topic = topic_on_shard("rh", topic_shard, SHARDS);
    let (publisher, _) = Peer::connect(addr, &client_id_on_shard("rh-pub", 1 - sub_shard, SHARDS));
    publisher.publish(&topic, QoS::AtLeastOnce, true, "stored", None);

    let (sub, _) = Peer::connect(addr, &client_id_on_shard("rh-sub", sub_shard, SHARDS));
    for rule in [
        RetainForwardRule::Never,
        RetainForwardRule::OnNewSubscribe,
        RetainForwardRule::OnEverySubscribe,
    ] {
        let mut filter = Filter::new(topic.as_str(), QoS::AtLeastOnce);
        filter.retain_forward_rule = rule;
        assert_eq!(
            sub.subscribe(vec![filter], None),
            [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        );
    }
    let p = sub.next_publish();
    assert_eq!((text(&p.payload), p.retain), ("stored".to_owned(), true));
    publisher.publish(&topic, QoS::AtLeastOnce, false, "live", None);
    let got: Vec<(String, bool)> =
        sub.publishes_until("live").iter().map(|p| (text(&p.payload), p.retain)).collect();
    assert_eq!(got, [("live".to_owned(), false)], "one retained copy only");

    let (fresh, _) = Peer::connect(addr, &client_id_on_shard("rh-fresh", sub_shard, SHARDS));
    let mut filter = Filter::new(topic.as_str(), QoS::AtLeastOnce);
    filter.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
    assert_eq!(
        fresh.subscribe(vec![filter], None),
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let p = fresh.next_publish();
    assert_eq!((text(&p.payload), p.retain), ("stored".to_owned(), true));
}

#[test]
fn retain_handling_across_shards() {
    retain_handling(0, 1);
}

#[test]
fn retain_handling_on_one_shard() {
    retain_handling(1, 1);
}

// ---- Topic aliases ---------------------------------------------------------------

/// Topic aliases from the client [MQTT-3.3.2.3.4]: a PUBLISH with a topic and an
/// alias sets the mapping, one with an empty topic and the alias uses it, a new
/// topic with the same alias replaces it; every value up to the CONNACK's Topic
/// Alias Maximum is accepted [MQTT-3.3.2-12]. Subscribers get the full topic names
/// and no alias of the publisher's connection.
fn client_topic_aliases(pub_shard: usize, sub_shard: usize) {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let (sub, _) = Peer::connect(addr, &client_id_on_shard("ta-sub", sub_shard, SHARDS));
    sub.sub("ta/#", QoS::AtLeastOnce);
    let (publisher, connack) =
        Peer::connect(addr, &client_id_on_shard("ta-pub", pub_shard, SHARDS));
    let max = connack.properties.and_then(|p| p.topic_alias_max).expect("Topic Alias Maximum");
    let alias = |a: u16| PublishProperties { topic_alias: Some(a), ..PublishProperties::default() };
    let sends = [
        ("ta/one", 1, "a"),
        ("", 1, "b"),
        ("ta/two", max, "c"),
        ("", max, "d"),
        ("", 1, "e"),
        ("ta/three", 1, "f"),
        ("", 1, "g"),
        ("", max, "h"),
    ];
    for (topic, a, payload) in sends {
        publisher.publish(topic, QoS::AtLeastOnce, false, payload, Some(alias(a)));
    }
    let got: Vec<(String, String, Option<u16>)> = sub
        .publishes_until("h")
        .iter()
        .map(|p| (text(&p.topic), text(&p.payload), props(p).topic_alias))
        .collect();
    let expected: Vec<(String, String, Option<u16>)> = [
        ("ta/one", "a"),
        ("ta/one", "b"),
        ("ta/two", "c"),
        ("ta/two", "d"),
        ("ta/one", "e"),
        ("ta/three", "f"),
        ("ta/three", "g"),
        ("ta/two", "h"),
    ]
    .iter()
    .map(|(t, p)| (t.to_string(), p.to_string(), None))
    .collect();
    assert_eq!(got, expected);
}

#[test]
fn client_topic_aliases_across_shards() {
    client_topic_aliases(0, 1);
}

#[test]
fn client_topic_aliases_on_one_shard() {
    client_topic_aliases(1, 1);
}

/// Topic aliases toward a client that allows 2 (rumqttc resolves them): every alias
/// is within 1..=2 [MQTT-3.3.2-11], one alias names one topic on the connection, and
/// each message reaches the client under its own topic. The broker aliases the first
/// two topics it sends (ARCHITECTURE.md, "Decisions"), so repeats of those come
/// aliased and the third topic never is.
#[test]
fn server_topic_aliases_resolve_in_rumqttc() {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let mut opts = options(addr, &client_id_on_shard("sa-sub", 0, SHARDS));
    opts.set_topic_alias_max(Some(2));
    let (sub, _) = Peer::connect_with(opts);
    sub.sub("sa/+", QoS::AtLeastOnce);
    let (publisher, _) = Peer::connect(addr, &client_id_on_shard("sa-pub", 1, SHARDS));
    let topics = ["sa/1", "sa/2", "sa/3", "sa/1", "sa/2", "sa/3", "sa/1"];
    for (i, topic) in topics.iter().enumerate() {
        publisher.publish(topic, QoS::AtLeastOnce, false, i.to_string(), None);
    }
    let mut aliases = std::collections::HashMap::new();
    for (i, topic) in topics.iter().enumerate() {
        let p = sub.next_publish();
        assert_eq!((text(&p.topic), text(&p.payload)), (topic.to_string(), i.to_string()));
        let alias = props(&p).topic_alias;
        if let Some(a) = alias {
            assert!((1..=2).contains(&a), "alias {a} over the client's maximum");
            assert_eq!(*aliases.entry(a).or_insert(*topic), *topic, "alias {a} reused");
        }
        assert_eq!(alias.is_some(), *topic != "sa/3", "{topic} (message {i})");
    }
}

// ---- MQTT 3.1.1 and MQTT 5 together ----------------------------------------------

/// A sync rumqttc MQTT 3.1.1 client, driven by its own thread.
struct Peer3 {
    client: rumqttc::Client,
    events: mpsc::Receiver<Result<rumqttc::Event, String>>,
}

impl Peer3 {
    fn connect(addr: SocketAddr, client_id: &str) -> Peer3 {
        let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut connection) = rumqttc::Client::new(options, 16);
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for event in connection.iter() {
                let failed = event.is_err();
                if tx.send(event.map_err(|e| e.to_string())).is_err() || failed {
                    return;
                }
            }
        });
        let peer = Peer3 { client, events };
        let code = peer.wait_for(|e| match e {
            rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c)) => Some(c.code),
            _ => None,
        });
        assert_eq!(code, rumqttc::ConnectReturnCode::Success);
        peer
    }

    fn wait_for<T>(&self, mut f: impl FnMut(&rumqttc::Event) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(event)) => {
                    if let Some(t) = f(&event) {
                        return t;
                    }
                }
                Ok(Err(e)) => panic!("v3 connection failed: {e}"),
                Err(e) => panic!("v3: nothing expected came within {WAIT:?}: {e}"),
            }
        }
    }

    fn next_publish(&self) -> rumqttc::Publish {
        self.wait_for(|e| match e {
            rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
    }
}

/// An MQTT 3.1.1 client and an MQTT 5 client exchange messages both ways on one
/// broker. The 3.1.1 subscriber gets the v5 publisher's message without its
/// properties (3.1.1 has none); the v5 subscriber gets the 3.1.1 publisher's message
/// with no application properties, and its own Subscription Identifier on both
/// [MQTT-3.3.4-3]. QoS is the minimum of published and granted [MQTT-3.8.4-8].
fn v3_and_v5(v3_shard: usize, v5_shard: usize) {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let sub3 = Peer3::connect(addr, &client_id_on_shard("mix-sub3", v3_shard, SHARDS));
    sub3.client.subscribe("mix/t", rumqttc::QoS::ExactlyOnce).expect("subscribe request");
    let codes = sub3.wait_for(|e| match e {
        rumqttc::Event::Incoming(rumqttc::Packet::SubAck(s)) => Some(s.return_codes.clone()),
        _ => None,
    });
    assert_eq!(codes, [rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::ExactlyOnce)]);
    let (sub5, _) = Peer::connect(addr, &client_id_on_shard("mix-sub5", v5_shard, SHARDS));
    assert_eq!(
        sub5.subscribe(vec![Filter::new("mix/t", QoS::AtLeastOnce)], Some(9)),
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    // v5 -> both.
    let (pub5, _) = Peer::connect(addr, &client_id_on_shard("mix-pub5", v5_shard, SHARDS));
    let properties = PublishProperties {
        content_type: Some("application/json".into()),
        user_properties: user(&[("from", "v5")]),
        ..PublishProperties::default()
    };
    pub5.publish("mix/t", QoS::ExactlyOnce, false, "{\"v\":5}", Some(properties.clone()));
    let p = sub3.next_publish();
    assert_eq!(
        (&p.topic[..], &p.payload[..], p.qos),
        ("mix/t", &b"{\"v\":5}"[..], rumqttc::QoS::ExactlyOnce)
    );
    let p = sub5.next_publish();
    assert_eq!((&p.payload[..], p.qos), (&b"{\"v\":5}"[..], QoS::AtLeastOnce));
    assert_eq!(props(&p), PublishProperties { subscription_identifiers: vec![9], ..properties });

    // v3 -> both.
    let pub3 = Peer3::connect(addr, &client_id_on_shard("mix-pub3", v3_shard, SHARDS));
    pub3.client.publish("mix/t", rumqttc::QoS::AtLeastOnce, false, "from v3").expect("publish");
    pub3.wait_for(|e| {
        matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))).then_some(())
    });
    let p = sub5.next_publish();
    assert_eq!(
        (&p.topic[..], &p.payload[..], p.qos),
        (&b"mix/t"[..], &b"from v3"[..], QoS::AtLeastOnce)
    );
    assert_eq!(
        props(&p),
        PublishProperties { subscription_identifiers: vec![9], ..PublishProperties::default() }
    );
    let p = sub3.next_publish();
    assert_eq!((&p.payload[..], p.qos), (&b"from v3"[..], rumqttc::QoS::AtLeastOnce));
}

#[test]
fn v3_and_v5_across_shards() {
    v3_and_v5(0, 1);
}

#[test]
fn v3_and_v5_on_one_shard() {
    v3_and_v5(1, 1);
}

// ---- Sessions --------------------------------------------------------------------

/// A v5 session with a Session Expiry Interval outlives its connection
/// [MQTT-3.1.2-23]: while offline it collects QoS 1 messages; reconnecting with
/// Clean Start 0 gives Session Present 1 [MQTT-3.2.2-3] and the messages, each
/// with its Message Expiry Interval less the time it waited [MQTT-3.3.2-6]. A
/// session without an interval (0) ends with its connection: Session Present 0.
/// (A message that outlives its interval while it waits is not sent
/// [MQTT-3.3.2-5]: the simulation in `shard::core::sim` shows it in virtual time.)
fn persistent_session(pub_shard: usize, session_shard: usize) {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let id = client_id_on_shard("persist", session_shard, SHARDS);
    let (session, connack) = Peer::connect_with(persistent_options(addr, &id, 60));
    assert!(!connack.session_present, "a new session");
    session.sub("persist/t", QoS::AtLeastOnce);
    session.client.disconnect().expect("disconnect request");
    // The broker closes the socket once the session is offline.
    let end = session.connection_end();
    assert!(
        !matches!(end, ConnectionError::MqttState(StateError::ServerDisconnect { .. })),
        "the server sends no DISCONNECT back: {end:?}"
    );
    drop(session);

    let mut barrier = probe(addr, session_shard, "persist-probe", "persist/t");
    let (publisher, _) = Peer::connect(addr, &client_id_on_shard("persist-pub", pub_shard, SHARDS));
    let expiring = |secs| PublishProperties {
        message_expiry_interval: Some(secs),
        ..PublishProperties::default()
    };
    publisher.publish("persist/t", QoS::AtLeastOnce, false, "long", Some(expiring(3600)));
    publisher.publish("persist/t", QoS::AtLeastOnce, false, "plain", None);
    // Once the probe on the session's shard has them, so has the offline session.
    let seen: Vec<String> =
        barrier.receive_until_payload(b"plain").iter().map(|p| text(&p.payload)).collect();
    assert_eq!(seen, ["long", "plain"]);

    let (session, connack) = Peer::connect_with(persistent_options(addr, &id, 60));
    assert!(connack.session_present, "[MQTT-3.2.2-3]");
    let got = session.publishes_until("plain");
    let got: Vec<(String, QoS, Option<u32>)> =
        got.iter().map(|p| (text(&p.payload), p.qos, props(p).message_expiry_interval)).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((&got[0].0[..], got[0].1), ("long", QoS::AtLeastOnce));
    let left = got[0].2.expect("Message Expiry Interval");
    assert!((3590..=3600).contains(&left), "{left} s left");
    assert_eq!(got[1], ("plain".to_owned(), QoS::AtLeastOnce, None));

    // Session Expiry Interval 0: the session ends with the connection.
    let brief_id = client_id_on_shard("brief", session_shard, SHARDS);
    let (brief, _) = Peer::connect_with(persistent_options(addr, &brief_id, 0));
    brief.sub("persist/t", QoS::AtLeastOnce);
    brief.client.disconnect().expect("disconnect request");
    brief.connection_end();
    let (_brief, connack) = Peer::connect_with(persistent_options(addr, &brief_id, 0));
    assert!(!connack.session_present, "[MQTT-3.1.2.11.2]: interval 0 ends the session");
}

#[test]
fn persistent_session_keeps_queued_messages_across_shards() {
    persistent_session(0, 1);
}

#[test]
fn persistent_session_keeps_queued_messages_on_one_shard() {
    persistent_session(0, 0);
}

// ---- Shared subscriptions --------------------------------------------------------

/// A shared subscription `$share/g/...` with one member on each shard [MQTT-4.8.2]:
/// each of 20 messages goes to exactly one member, and both members get some (round
/// robin by default). A non-shared end marker, published after the 20 and on the
/// same path to each member, shows nothing more is coming.
fn shared_subscription(pub_shard: usize) {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let members: Vec<Peer> = (0..SHARDS)
        .map(|shard| {
            let (member, _) = Peer::connect(addr, &client_id_on_shard("member", shard, SHARDS));
            member.sub("$share/g/shared/t", QoS::AtLeastOnce);
            member.sub("shared/end", QoS::AtLeastOnce);
            member
        })
        .collect();
    let (publisher, _) = Peer::connect(addr, &client_id_on_shard("shared-pub", pub_shard, SHARDS));
    for i in 0..20 {
        publisher.publish("shared/t", QoS::AtLeastOnce, false, i.to_string(), None);
    }
    publisher.publish("shared/end", QoS::AtLeastOnce, false, "end", None);

    let mut all = Vec::new();
    for member in &members {
        let got: Vec<u32> = member
            .publishes_until("end")
            .iter()
            .filter(|p| p.topic != "shared/end".as_bytes())
            .map(|p| {
                assert_eq!(&p.topic[..], b"shared/t", "topic of the message, not the filter");
                text(&p.payload).parse().expect("a number")
            })
            .collect();
        assert!(!got.is_empty(), "{} got none of the 20", member.id);
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (0..20).collect::<Vec<_>>(), "each message exactly once");
}

#[test]
fn shared_subscription_spreads_over_members_on_both_shards() {
    shared_subscription(0);
}

#[test]
fn shared_subscription_from_the_other_shard() {
    shared_subscription(1);
}

// ---- Takeover --------------------------------------------------------------------

/// A second connection with the same client id takes the session over: the first
/// gets DISCONNECT 0x8E (Session taken over) and is closed [MQTT-3.1.4-3]
/// [MQTT-4.13.2-1]; the new connection works.
///
/// rumqttc 0.24 cannot parse a DISCONNECT whose Remaining Length is 1 (reason code,
/// no Property Length), which section 3.14.2.2.1 allows; the broker keeps the empty
/// Property Length, so rumqttc surfaces the reason as `StateError::ServerDisconnect`.
/// A raw MQTT 5 connection taken over by a rumqttc client shows the bytes.
#[test]
fn takeover_sends_disconnect_0x8e() {
    let broker = start(Config::test());
    let addr = addr(&broker);
    for shard in 0..SHARDS {
        let id = client_id_on_shard("taken", shard, SHARDS);
        let (first, _) = Peer::connect(addr, &id);
        first.sub("taken/t", QoS::AtLeastOnce);
        let (second, _) = Peer::connect(addr, &id);
        match first.connection_end() {
            ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => {
                assert_eq!(reason_code, DisconnectReasonCode::SessionTakenOver)
            }
            other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
        }
        second.sub("taken/t", QoS::AtLeastOnce);
        second.publish("taken/t", QoS::AtLeastOnce, false, "still here", None);
        assert_eq!(&second.next_publish().payload[..], b"still here");

        // The same takeover seen from a raw MQTT 5 connection.
        let raw_id = client_id_on_shard("taken-raw", shard, SHARDS);
        let mut connect = common::connect_packet(&raw_id, true);
        connect.protocol = shardmq::protocol::ProtocolVersion::V5;
        let (mut raw, connack) = common::Raw::connect_with(addr, connect);
        assert_eq!(connack.reason, shardmq::protocol::ReasonCode::SUCCESS);
        let (_taker, _) = Peer::connect(addr, &raw_id);
        assert_eq!(
            raw.packets_until_closed(),
            [shardmq::protocol::Packet::Disconnect(shardmq::protocol::Disconnect::new(
                shardmq::protocol::ReasonCode::SESSION_TAKEN_OVER
            ))]
        );
    }
}
