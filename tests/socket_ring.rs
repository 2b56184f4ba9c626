//! The shard's socket ring at its edges: more simultaneous arrivals than provided
//! buffers, packets larger than a buffer, and a publisher held by backpressure
//! whose receive is cancelled and armed again. Publisher and subscriber on
//! different shards throughout.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use common::{
    addr, client_id_on_shard, encode, publish_packet, start, topic_on_shard, Raw, SHARDS,
};
use shardmq::protocol::{Packet, QoS};
use shardmq::Config;

/// One counter of shard `shard` from `/metrics`.
fn metric(metrics: SocketAddr, name: &str, shard: usize) -> u64 {
    let mut stream = TcpStream::connect(metrics).expect("metrics endpoint");
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    let prefix = format!("shardmq_{name}{{shard=\"{shard}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} not in /metrics"))
        .parse()
        .expect("a number")
}

/// Polls `metric` until it reaches `at_least` (the snapshot is once a second).
fn metric_reaches(metrics: SocketAddr, name: &str, shard: usize, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = metric(metrics, name, shard);
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn more_simultaneous_senders_than_receive_buffers_lose_nothing() {
    // Four provided buffers per shard for 64 publishers that all send at once:
    // receives run out of buffers, end, and are armed again.
    let broker = start(Config {
        recv_buffers: NonZeroU16::new(4).unwrap(),
        metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Config::test()
    });
    let addr = addr(&broker);
    let (mut sub, _) = Raw::connect(addr, &client_id_on_shard("ring-sub", 1, SHARDS), true);
    sub.subscribe(&[("ring/#", QoS::AtLeastOnce)]);
    const PUBLISHERS: usize = 64;
    let mut publishers: Vec<(Raw, Vec<u8>)> = (0..PUBLISHERS)
        .map(|i| {
            let (raw, _) =
                Raw::connect(addr, &client_id_on_shard(&format!("ring-pub{i}"), 0, SHARDS), true);
            // 3 KiB each: most of a buffer per arrival.
            let payload = vec![i as u8; 3 * 1024];
            let packet = publish_packet(
                &format!("ring/{i}"),
                &payload,
                QoS::AtLeastOnce,
                Some(1),
                false,
                false,
            );
            (raw, encode(&packet))
        })
        .collect();
    for (raw, bytes) in &mut publishers {
        raw.send_bytes(bytes);
    }
    for (raw, _) in &mut publishers {
        assert!(matches!(raw.recv(), Packet::PubAck(_)), "PUBACK");
    }
    let mut seen = HashSet::new();
    while seen.len() < PUBLISHERS {
        let publish = sub.recv_publish();
        assert_eq!(publish.payload.len(), 3 * 1024);
        assert!(publish.payload.iter().all(|&b| b == publish.payload[0]), "payload intact");
        assert!(seen.insert(publish.payload[0]), "each message once");
        if let Some(id) = publish.qos.packet_id() {
            sub.send(&Packet::PubAck(shardmq::protocol::Ack::new(id)));
        }
    }
    let metrics = broker.metrics_addr().expect("metrics listener");
    assert!(
        metric_reaches(metrics, "socket_receives_total", 0, PUBLISHERS as u64) >= PUBLISHERS as u64
    );
    assert!(
        metric_reaches(metrics, "socket_buffers_exhausted_total", 0, 1) >= 1,
        "64 simultaneous arrivals into 4 buffers never ran out"
    );
}

#[test]
fn a_packet_many_buffers_long_arrives_whole() {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let topic = topic_on_shard("ring-big", 1, SHARDS);
    let (mut sub, _) = Raw::connect(addr, &client_id_on_shard("big-sub", 1, SHARDS), true);
    sub.subscribe(&[(&topic, QoS::AtMostOnce)]);
    let (mut publisher, _) = Raw::connect(addr, &client_id_on_shard("big-pub", 0, SHARDS), true);
    // 300 KiB: 75 provided buffers, and many receives, for one PUBLISH.
    let payload: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    publisher.send(&publish_packet(&topic, &payload, QoS::AtMostOnce, None, false, false));
    let publish = sub.recv_publish();
    assert_eq!(&publish.payload[..], &payload[..]);
}

#[test]
fn a_publisher_paused_by_a_slow_subscriber_resumes_and_loses_nothing() {
    // A small output bound so that the subscriber (shard 1) falls behind at once,
    // and rings so short that its shard's refusal to take more fills them: the
    // publisher's shard (0) stops reading it (its receive is cancelled) and reads
    // it again when the subscriber drains.
    let broker = start(Config {
        out_buffer_max_bytes: std::num::NonZeroUsize::new(16 * 1024).unwrap(),
        ring_capacity: std::num::NonZeroUsize::new(2).unwrap(),
        ring_overflow_max: std::num::NonZeroUsize::new(1).unwrap(),
        metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Config::test()
    });
    let addr = addr(&broker);
    let topic = topic_on_shard("ring-slow", 1, SHARDS);
    // A subscriber with a small receive buffer, so the broker's writes stop
    // completing as soon as it reads slowly.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut sub = Raw::from_stream(socket.into());
    sub.send(&Packet::Connect(common::connect_packet(
        &client_id_on_shard("slow-sub", 1, SHARDS),
        false,
    )));
    assert!(matches!(sub.recv(), Packet::ConnAck(_)));
    sub.subscribe(&[(&topic, QoS::AtLeastOnce)]);
    let (mut publisher, _) = Raw::connect(addr, &client_id_on_shard("fast-pub", 0, SHARDS), true);
    const MESSAGES: u16 = 2000;
    let payload = vec![7u8; 1024];
    let mut all = Vec::new();
    for id in 1..=MESSAGES {
        all.extend(encode(&publish_packet(
            &topic,
            &payload,
            QoS::AtLeastOnce,
            Some(id),
            false,
            false,
        )));
    }
    // One write of 2 MB: far more than the subscriber's bound.
    let writer = std::thread::spawn(move || {
        publisher.send_bytes(&all);
        let mut acks = 0;
        while acks < MESSAGES {
            if let Packet::PubAck(_) = publisher.recv() {
                acks += 1;
            }
        }
        acks
    });
    // Read slowly, so the backlog builds while the subscriber still makes
    // progress (a subscriber that reads nothing is not waited for).
    let mut received = 0u16;
    while received < MESSAGES {
        if received < 200 && received.is_multiple_of(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let publish = sub.recv_publish();
        assert_eq!(publish.payload.len(), 1024);
        if let Some(id) = publish.qos.packet_id() {
            sub.send(&Packet::PubAck(shardmq::protocol::Ack::new(id)));
        }
        received += 1;
    }
    assert_eq!(writer.join().expect("publisher thread"), MESSAGES);
    let metrics = broker.metrics_addr().expect("metrics listener");
    assert!(
        metric_reaches(metrics, "reader_pauses_total", 0, 1) >= 1,
        "the publisher was never paused: the test did not test backpressure"
    );
}

#[test]
fn a_taken_over_subscriber_that_stopped_reading_is_shut_down_in_time() {
    // The old connection of a takeover has a send in flight that never ends: its
    // client reads nothing. Within `connect_timeout` the broker shuts its socket
    // down instead of keeping the descriptor and the send for ever.
    let broker = start(Config {
        connect_timeout: Duration::from_secs(1),
        metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Config::test()
    });
    let addr = addr(&broker);
    let id = client_id_on_shard("mute-sub", 1, SHARDS);
    let topic = topic_on_shard("ring-mute", 1, SHARDS);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut mute = Raw::from_stream(socket.into());
    mute.send(&Packet::Connect(common::connect_packet(&id, true)));
    assert!(matches!(mute.recv(), Packet::ConnAck(_)));
    mute.subscribe(&[(&topic, QoS::AtMostOnce)]);
    // 16 MB of QoS 0 toward it: far more than its socket buffers take.
    let (mut publisher, _) = Raw::connect(addr, &client_id_on_shard("mute-pub", 0, SHARDS), true);
    let packet =
        encode(&publish_packet(&topic, &[1u8; 16 * 1024], QoS::AtMostOnce, None, false, false));
    for _ in 0..1024 {
        publisher.send_bytes(&packet);
    }
    publisher.sync();
    let metrics = broker.metrics_addr().expect("metrics listener");
    let before = metric(metrics, "socket_closes_forced_total", 1);
    // The takeover closes the old connection while its send is stuck.
    let (_new, _) = Raw::connect(addr, &id, true);
    let forced = metric_reaches(metrics, "socket_closes_forced_total", 1, before + 1);
    assert!(forced > before, "the stuck connection was never shut down");
    drop(mute);
}
