//! Persistent sessions as emqttd defined them: the offline mqueue (bounded,
//! drop-oldest, QoS 0 optional), the inflight window, redelivery on reconnect,
//! takeover, ordering across shards and reconnects, retries. Session expiry is
//! checked in virtual time by the simulation in `shard::core::sim`.
//!
//! Subscribers whose session matters live on shard 1 and publishers on shard 0, so
//! every message crosses a ring between shards.

mod common;

use std::num::{NonZeroU16, NonZeroUsize};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    addr, client_id_on_shard, connect_packet, probe, publish_packet, seq, start, text, Raw,
    RecvError, SHARDS, WAIT,
};
use shardmq::protocol::{
    Ack, Connect, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode,
};
use shardmq::Config;

fn payloads(publishes: &[Publish]) -> Vec<String> {
    publishes.iter().map(|p| text(&p.payload)).collect()
}

/// A persistent subscriber on shard 1 goes offline; 1,000 QoS 1 messages are
/// published from shard 0; it comes back. Returns the sequence numbers it gets.
fn offline_then_back(mqueue_len_max: usize, expected: usize) -> Vec<u32> {
    let broker = start(Config {
        mqueue_len_max: mqueue_len_max.try_into().expect("a positive length"),
        ..Config::test()
    });
    let addr = addr(&broker);
    let sub_id = client_id_on_shard("offline-sub", 1, SHARDS);
    let (mut sub, connack) = Raw::connect(addr, &sub_id, false);
    // [MQTT-3.2.2-3]: no session was stored for this id.
    assert!(!connack.session_present);
    assert_eq!(
        sub.subscribe(&[("offline/t", QoS::AtLeastOnce)]),
        [ReasonCode::granted(QoS::AtLeastOnce)]
    );
    sub.disconnect();

    let mut probe = probe(addr, 1, "offline-probe", "offline/t");
    let (mut publisher, _) =
        Raw::connect(addr, &client_id_on_shard("offline-pub", 0, SHARDS), true);
    for i in 0..1000 {
        publisher.publish("offline/t", format!("m{i}").as_bytes(), QoS::AtLeastOnce);
    }
    // Every message has reached shard 1, so the offline session has queued it.
    assert_eq!(probe.receive_until_payload(b"m999").len(), 1000);

    let (mut sub, connack) = Raw::connect(addr, &sub_id, false);
    // [MQTT-3.2.2-2]: the session was resumed.
    assert!(connack.session_present);
    let got = sub.receive_acking(expected);
    assert!(got.iter().all(|p| p.qos.qos() == QoS::AtLeastOnce && !p.dup));
    // Nothing else is pending: the acks above were processed before the PINGREQ.
    assert_eq!(sub.sync(), []);
    got.iter().map(|p| seq(&p.payload, "m")).collect()
}

#[test]
fn offline_session_gets_all_1000_queued_messages_in_order() {
    let got = offline_then_back(1000, 1000);
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
}

#[test]
fn full_mqueue_drops_the_oldest() {
    // emqttd's mqueue: bounded, drop-oldest; the newest 100 remain, in order.
    let got = offline_then_back(100, 100);
    assert_eq!(got, (900..1000).collect::<Vec<_>>());
}

/// QoS 0 messages published while a QoS 1 subscriber is offline, then a QoS 1 marker.
fn offline_qos0(store_qos0: bool) -> Vec<Publish> {
    let broker = start(Config { mqueue_store_qos0: store_qos0, ..Config::test() });
    let addr = addr(&broker);
    let sub_id = client_id_on_shard("q0-sub", 1, SHARDS);
    let (mut sub, _) = Raw::connect(addr, &sub_id, false);
    sub.subscribe(&[("q0/t", QoS::AtLeastOnce)]);
    sub.disconnect();

    let mut probe = probe(addr, 1, "q0-probe", "q0/t");
    let (mut publisher, _) = Raw::connect(addr, &client_id_on_shard("q0-pub", 0, SHARDS), true);
    for i in 0..10 {
        publisher.publish("q0/t", format!("zero{i}").as_bytes(), QoS::AtMostOnce);
    }
    publisher.publish("q0/t", b"end", QoS::AtLeastOnce);
    probe.receive_until_payload(b"end");

    let (mut sub, connack) = Raw::connect(addr, &sub_id, false);
    assert!(connack.session_present);
    let got = sub.receive_until_payload(b"end");
    assert_eq!(sub.sync(), []);
    got
}

#[test]
fn qos0_is_not_queued_offline_when_mqueue_store_qos0_is_off() {
    let got = offline_qos0(false);
    assert_eq!(payloads(&got), ["end"]);
}

#[test]
fn qos0_is_queued_offline_when_mqueue_store_qos0_is_on() {
    let got = offline_qos0(true);
    let mut expected: Vec<String> = (0..10).map(|i| format!("zero{i}")).collect();
    expected.push("end".to_owned());
    assert_eq!(payloads(&got), expected);
    // Each message goes out at min(published QoS, granted QoS) [MQTT-3.8.4-6].
    assert!(got[..10].iter().all(|p| p.qos.qos() == QoS::AtMostOnce));
    assert_eq!(got[10].qos.qos(), QoS::AtLeastOnce);
}

#[test]
fn inflight_window_holds_back_messages_until_acked() {
    let broker = start(Config { inflight_max: NonZeroU16::new(5).unwrap(), ..Config::test() });
    let addr = addr(&broker);
    let (mut sub, _) = Raw::connect(addr, &client_id_on_shard("win-sub", 1, SHARDS), true);
    sub.subscribe(&[("win/t", QoS::AtLeastOnce)]);
    let mut probe = probe(addr, 1, "win-probe", "win/t");
    let (mut publisher, _) = Raw::connect(addr, &client_id_on_shard("win-pub", 0, SHARDS), true);
    for i in 0..20 {
        publisher.publish("win/t", format!("w{i}").as_bytes(), QoS::AtLeastOnce);
    }
    probe.receive_until_payload(b"w19");

    // All 20 reached the session; only the window (5) went out.
    let first: Vec<Publish> = sub
        .sync()
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        })
        .collect();
    assert_eq!(payloads(&first), ["w0", "w1", "w2", "w3", "w4"]);

    // One PUBACK opens one slot: exactly one more message.
    sub.send(&Packet::PubAck(Ack::new(first[0].qos.packet_id().expect("QoS 1 id"))));
    match &sub.sync()[..] {
        [Packet::Publish(p)] => assert_eq!(text(&p.payload), "w5"),
        other => panic!("expected exactly w5, got {other:?}"),
    }
    // Acking the rest drains the queue in order.
    for p in &first[1..] {
        sub.send(&Packet::PubAck(Ack::new(p.qos.packet_id().expect("QoS 1 id"))));
    }
    let rest = sub.receive_acking(14);
    assert_eq!(payloads(&rest), (6..20).map(|i| format!("w{i}")).collect::<Vec<_>>());
}

#[test]
fn unacknowledged_messages_are_resent_with_dup_and_the_same_ids_on_reconnect() {
    let broker = start(Config::test());
    let addr = addr(&broker);
    let sub_id = client_id_on_shard("redo-sub", 1, SHARDS);
    let (mut sub, _) = Raw::connect(addr, &sub_id, false);
    sub.subscribe(&[("redo/t", QoS::ExactlyOnce)]);
    let (mut publisher, _) = Raw::connect(addr, &client_id_on_shard("redo-pub", 0, SHARDS), true);
    publisher.publish("redo/t", b"a", QoS::AtLeastOnce);
    publisher.publish("redo/t", b"b", QoS::ExactlyOnce);
    publisher.publish("redo/t", b"c", QoS::ExactlyOnce);

    let a = sub.recv_publish();
    let b = sub.recv_publish();
    let c = sub.recv_publish();
    assert_eq!(payloads(&[a.clone(), b.clone(), c.clone()]), ["a", "b", "c"]);
    assert_eq!(
        (a.qos.qos(), b.qos.qos(), c.qos.qos()),
        (QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::ExactlyOnce)
    );
    assert!(!a.dup && !b.dup && !c.dup, "first transmissions [MQTT-3.3.1-3]");
    let id = |p: &Publish| p.qos.packet_id().expect("QoS > 0 has an id");
    // c is received (PUBREC), so the broker moves on to PUBREL.
    sub.send(&Packet::PubRec(Ack::new(id(&c))));
    assert_eq!(sub.recv(), Packet::PubRel(Ack::new(id(&c))));
    assert_eq!(sub.drop_connection(), []);

    // [MQTT-4.4.0-1]: on reconnect with CleanSession = 0 the server re-sends the
    // unacknowledged PUBLISHes (DUP = 1 [MQTT-3.3.1-1]) and PUBRELs with their
    // original packet ids, in the original order [MQTT-4.6.0-2], [MQTT-4.6.0-3].
    let (mut sub, connack) = Raw::connect(addr, &sub_id, false);
    assert!(connack.session_present);
    let resent = sub.sync();
    let expect_dup = |p: &Publish| Packet::Publish(Publish { dup: true, ..p.clone() });
    assert_eq!(resent, [expect_dup(&a), expect_dup(&b), Packet::PubRel(Ack::new(id(&c)))]);

    // Completing every exchange leaves nothing to resend.
    sub.send(&Packet::PubAck(Ack::new(id(&a))));
    sub.send(&Packet::PubRec(Ack::new(id(&b))));
    assert_eq!(sub.recv(), Packet::PubRel(Ack::new(id(&b))));
    sub.send(&Packet::PubComp(Ack::new(id(&b))));
    sub.send(&Packet::PubComp(Ack::new(id(&c))));
    assert_eq!(sub.sync(), []);
    sub.drop_connection();
    let (mut sub, connack) = Raw::connect(addr, &sub_id, false);
    assert!(connack.session_present);
    assert_eq!(sub.sync(), []);
}

#[test]
fn takeover_closes_the_old_connection_and_keeps_queued_messages() {
    let broker = start(Config { inflight_max: NonZeroU16::new(2).unwrap(), ..Config::test() });
    let addr = addr(&broker);
    let sub_id = client_id_on_shard("take-sub", 1, SHARDS);
    let (mut first, _) = Raw::connect(addr, &sub_id, false);
    first.subscribe(&[("take/t", QoS::AtLeastOnce)]);
    let mut probe = probe(addr, 1, "take-probe", "take/t");
    let (mut publisher, _) = Raw::connect(addr, &client_id_on_shard("take-pub", 0, SHARDS), true);
    for i in 0..5 {
        publisher.publish("take/t", format!("t{i}").as_bytes(), QoS::AtLeastOnce);
    }
    probe.receive_until_payload(b"t4");
    // The window (2) is full and unacknowledged; t2..t4 wait in the mqueue.
    let sent: Vec<Publish> = first
        .sync()
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        })
        .collect();
    assert_eq!(payloads(&sent), ["t0", "t1"]);

    let (mut second, connack) = Raw::connect(addr, &sub_id, false);
    assert!(connack.session_present);
    // [MQTT-3.1.4-2]: the server disconnects the existing client.
    assert_eq!(first.packets_until_closed(), []);

    let got = second.receive_acking(5);
    assert_eq!(payloads(&got), ["t0", "t1", "t2", "t3", "t4"]);
    for (resent, original) in got[..2].iter().zip(&sent) {
        assert!(resent.dup, "[MQTT-3.3.1-1]");
        assert_eq!(resent.qos, original.qos, "[MQTT-4.4.0-1] same QoS, same packet id");
    }
    assert!(got[2..].iter().all(|p| !p.dup));
    assert_eq!(second.sync(), []);
}

#[test]
fn order_per_qos_holds_across_shards_and_a_reconnect() {
    const N: u32 = 500;
    let broker =
        start(Config { mqueue_len_max: NonZeroUsize::new(10_000).unwrap(), ..Config::test() });
    let addr = addr(&broker);
    let sub_id = client_id_on_shard("order-sub", 1, SHARDS);
    let (mut sub, _) = Raw::connect(addr, &sub_id, false);
    sub.subscribe(&[("order/t", QoS::ExactlyOnce)]);

    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (half_tx, half_rx) = mpsc::channel::<()>();
    let pub_id = client_id_on_shard("order-pub", 0, SHARDS);
    let publisher = thread::spawn(move || {
        let (mut publisher, _) = Raw::connect(addr, &pub_id, true);
        for i in 0..N {
            if i == N / 2 {
                // Wait until the subscriber is offline ...
                go_rx.recv_timeout(WAIT).expect("subscriber dropped its connection");
            }
            if i == N * 3 / 4 {
                // ... and let it reconnect while the rest is being published.
                half_tx.send(()).expect("subscriber waits");
            }
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                publisher.publish("order/t", format!("{}-{i}", qos as u8).as_bytes(), qos);
            }
        }
        publisher.disconnect();
    });

    // Per QoS, the sequence numbers seen.
    let mut seen: [Vec<u32>; 3] = Default::default();

    // First connection: until a hundred QoS 1 messages, then drop it unannounced,
    // leaving some messages unacknowledged.
    let mut qos1 = 0;
    while qos1 < 100 {
        let packet = sub.recv();
        if let Some(p) = sub.ack(packet) {
            qos1 += usize::from(p.qos.qos() == QoS::AtLeastOnce);
            record(&mut seen, &p);
        }
    }
    sub.drop_connection();
    go_tx.send(()).expect("publisher waits");
    half_rx.recv_timeout(WAIT).expect("publisher reached three quarters");

    let (mut sub, connack) = Raw::connect(addr, &sub_id, false);
    assert!(connack.session_present);
    let deadline = Instant::now() + WAIT * 4;
    while seen[1].len() < N as usize || seen[2].len() < N as usize {
        assert!(Instant::now() < deadline, "incomplete: {:?}", seen.each_ref().map(Vec::len));
        let packet = sub.recv();
        if let Some(p) = sub.ack(packet) {
            record(&mut seen, &p);
        }
    }
    publisher.join().expect("publisher thread");
    // The PUBREL of the last QoS 2 message may still be on its way.
    for packet in sub.sync() {
        assert!(matches!(packet, Packet::PubRel(_)), "nothing else is pending: {packet:?}");
        sub.ack(packet);
    }
    assert_eq!(sub.sync(), []);

    for (qos, seqs) in seen.iter().enumerate() {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "QoS {qos}: not increasing [MQTT-4.6.0-5]: {seqs:?}"
        );
    }
    let all: Vec<u32> = (0..N).collect();
    assert_eq!(seen[1], all, "QoS 1: every message");
    assert_eq!(seen[2], all, "QoS 2: every message, once");
    // QoS 0 messages published while the session was offline were queued
    // (mqueue_store_qos0 defaults to true).
    let offline = N / 2..N * 3 / 4;
    assert!(
        offline.clone().all(|n| seen[0].contains(&n)),
        "QoS 0 published offline: {:?}",
        seen[0]
    );
}

/// Records a message of the ordering test under its QoS; a DUP resend of one already
/// seen is skipped.
fn record(seen: &mut [Vec<u32>; 3], p: &Publish) {
    let text = text(&p.payload);
    let (qos, n) = text.split_once('-').expect("<qos>-<n>");
    let qos: usize = qos.parse().expect("qos");
    assert_eq!(qos, p.qos.qos() as usize, "delivered at the published QoS");
    let n: u32 = n.parse().expect("sequence");
    if p.dup && seen[qos].last().is_some_and(|last| n <= *last) {
        return;
    }
    seen[qos].push(n);
}

/// An MQTT 5 subscriber beside it never gets a timed resend while connected
/// [MQTT-4.4.0-1], however long its message stays unacknowledged.
#[test]
fn retry_interval_resends_unacknowledged_message_to_a_connected_client() {
    let broker = start(Config { retry_interval: Some(Duration::from_secs(1)), ..Config::test() });
    let addr = addr(&broker);
    let (mut sub, _) = Raw::connect(addr, &client_id_on_shard("retry-sub", 1, SHARDS), true);
    sub.subscribe(&[("retry/t", QoS::AtLeastOnce)]);
    let v5_id = client_id_on_shard("retry-sub-v5", 1, SHARDS);
    let v5_connect = Connect { protocol: ProtocolVersion::V5, ..connect_packet(&v5_id, true) };
    let (mut v5_sub, _) = Raw::connect_with(addr, v5_connect);
    v5_sub.subscribe(&[("retry/t", QoS::AtLeastOnce)]);
    let (mut publisher, _) = Raw::connect(addr, &client_id_on_shard("retry-pub", 0, SHARDS), true);
    publisher.publish("retry/t", b"r", QoS::AtLeastOnce);

    let first = sub.recv_publish();
    assert!(!first.dup);
    let sent_at = Instant::now();
    match sub.recv_within(Duration::from_secs(3)) {
        Ok(Packet::Publish(again)) => {
            assert_eq!(again, Publish { dup: true, ..first.clone() }, "same id, DUP set");
        }
        other => panic!("expected a resend within 3 s, got {other:?}"),
    }
    assert!(sent_at.elapsed() < Duration::from_secs(3));

    // Once acknowledged, it is not resent any more.
    sub.send(&Packet::PubAck(Ack::new(first.qos.packet_id().expect("QoS 1 id"))));
    for packet in sub.sync() {
        // A resend may have crossed the PUBACK.
        assert_eq!(packet, Packet::Publish(Publish { dup: true, ..first.clone() }));
    }
    // Time has to pass to see that no further retry comes (interval: 1 s).
    match sub.recv_within(Duration::from_millis(2500)) {
        Err(RecvError::Timeout) => {}
        other => panic!("expected no resend after PUBACK, got {other:?}"),
    }
    // More than three retry intervals passed: the MQTT 5 subscriber got its message
    // once, and nothing since.
    assert!(!v5_sub.recv_publish().dup);
    assert_eq!(v5_sub.sync(), Vec::new(), "no timed resend to an MQTT 5 client");
}

#[test]
fn publisher_may_reuse_a_packet_id_once_acknowledged() {
    // A client's own ids and the broker's ids are separate spaces [MQTT-2.3.1-3]:
    // a publisher reusing id 1 for every message after its ack must be served.
    let broker = start(Config::test());
    let addr = addr(&broker);
    let (mut sub, _) = Raw::connect(addr, &client_id_on_shard("ids-sub", 1, SHARDS), true);
    sub.subscribe(&[("ids/t", QoS::AtLeastOnce)]);
    let (mut publisher, _) = Raw::connect(addr, &client_id_on_shard("ids-pub", 0, SHARDS), true);
    for i in 0..3u8 {
        publisher.send(&publish_packet(
            "ids/t",
            &[b'0' + i],
            QoS::AtLeastOnce,
            Some(1),
            false,
            false,
        ));
        assert_eq!(publisher.recv(), Packet::PubAck(Ack::new(PacketId::new(1).expect("1"))));
    }
    let got = sub.receive_acking(3);
    assert_eq!(payloads(&got), ["0", "1", "2"]);
}

#[test]
fn qos2_publish_resent_after_a_reconnect_is_routed_once() {
    // The server's half of an incoming QoS 2 exchange is session state: a PUBLISH
    // resent (DUP = 1) on a new connection, before the PUBREL, is not a new message
    // [MQTT-4.3.3-2], [MQTT-4.4.0-1].
    let broker = start(Config::test());
    let addr = addr(&broker);
    let (mut sub, _) = Raw::connect(addr, &client_id_on_shard("in2-sub", 1, SHARDS), true);
    sub.subscribe(&[("in2/t", QoS::ExactlyOnce)]);
    let pub_id = client_id_on_shard("in2-pub", 0, SHARDS);
    let (mut publisher, _) = Raw::connect(addr, &pub_id, false);
    let id = PacketId::new(9).expect("9");
    publisher.send(&publish_packet("in2/t", b"once", QoS::ExactlyOnce, Some(9), false, false));
    assert_eq!(publisher.recv(), Packet::PubRec(Ack::new(id)));
    publisher.drop_connection();

    let (mut publisher, connack) = Raw::connect(addr, &pub_id, false);
    assert!(connack.session_present);
    publisher.send(&publish_packet("in2/t", b"once", QoS::ExactlyOnce, Some(9), true, false));
    assert_eq!(publisher.recv(), Packet::PubRec(Ack::new(id)));
    publisher.send(&Packet::PubRel(Ack::new(id)));
    assert_eq!(publisher.recv(), Packet::PubComp(Ack::new(id)));
    publisher.publish("in2/t", b"end", QoS::AtMostOnce);

    let got = sub.receive_until_payload(b"end");
    assert_eq!(payloads(&got), ["once", "end"]);
}
