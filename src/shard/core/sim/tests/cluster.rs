//! A session handed from one node to another: two simulated nodes of two shards,
//! the session leaving one core (`hand_over_session`) and entering the other
//! (`import_session`) as the cluster's claim does, with the client's connection
//! taken over.

use bytestring::ByteString;

use crate::protocol::{Packet, QoS, ReasonCode};
use crate::router::owner_shard;
use crate::shard::core::{Close, Reconciled};

use super::*;

#[test]
fn a_session_moves_to_another_node_and_resumes_there_in_order() {
    for protocol in [V3, V5] {
        for from_shard in 0..2 {
            let mut a = sim(2);
            let mut b = sim(2);
            let id = a.id_on_shard("dev", from_shard);
            let old = a.manual_client(&id, protocol);
            a.connect(old, persistent(&id, protocol, 600));
            a.subscribe(old, &[("cmd/#", QoS::ExactlyOnce)]);
            a.settle();
            let sender = publisher(&mut a, "pub", 1 - from_shard, protocol);
            for n in 0..3 {
                a.publish(
                    sender,
                    &format!("cmd/{n}"),
                    n.to_string().as_bytes(),
                    QoS::ExactlyOnce,
                    false,
                );
            }
            a.settle();
            // Sent, not acknowledged: the window travels with its packet ids.
            let first = a.take_delivered(old);
            assert_eq!(payloads(&first), ["0", "1", "2"]);

            let owner = owner_shard(id.as_bytes(), 2);
            let now = a.now();
            let client_id = ByteString::from(id.as_str());
            let image =
                a.cores[owner].hand_over_session(now, &client_id, false).expect("a session");
            a.settle();
            assert_eq!(a.client_ref(old).closed, Some(Close::TakenOver), "{protocol:?}");
            if protocol.is_v5() {
                let last = a.take(old).pop();
                let Some(Packet::Disconnect(d)) = last else { panic!("{last:?}") };
                assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER);
            }
            // Gone from this node: its route too, so a publish here reaches nobody.
            a.publish(sender, "cmd/late", b"x", QoS::AtLeastOnce, false);
            a.settle();
            assert!(a.cores.iter().all(|c| c.sessions.get(&client_id).is_none()));
            assert!(a.cores.iter().all(|c| c.routes.is_empty()));

            // The same client id on node b (its owner there is whatever b's hash
            // says); a publisher on b's other shard.
            let owner_b = owner_shard(id.as_bytes(), 2);
            let now = b.now();
            b.cores[owner_b].import_session(now, client_id.clone(), image);
            b.settle();
            let new = b.client(&id, protocol);
            b.connect(new, persistent(&id, protocol, 600));
            b.settle();
            let packets = b.take(new);
            assert!(connack(&packets).session_present, "{protocol:?}");
            let again = b.take_delivered(new);
            assert_eq!(payloads(&again), ["0", "1", "2"]);
            for (sent, resent) in first.iter().zip(&again) {
                assert!(resent.dup, "[MQTT-4.4.0-1]");
                assert_eq!(resent.qos.packet_id(), sent.qos.packet_id());
            }
            // The subscription came along: a publish on b reaches the client.
            let local = publisher(&mut b, "pub-b", 1 - owner_b, protocol);
            b.publish(local, "cmd/next", b"3", QoS::AtLeastOnce, false);
            b.settle();
            assert_eq!(payloads(&b.take_delivered(new)), ["3"]);
        }
    }
}

#[test]
fn a_clean_start_elsewhere_ends_the_session_here() {
    let mut a = sim(2);
    let id = a.id_on_shard("gone", 1);
    let c = a.client(&id, V5);
    a.connect(c, persistent(&id, V5, 600));
    a.subscribe(c, &[("x", QoS::AtLeastOnce)]);
    a.settle();
    let now = a.now();
    let client_id = ByteString::from(id.as_str());
    assert!(a.cores[1].hand_over_session(now, &client_id, true).is_none());
    a.settle();
    assert!(!a.is_connected(c));
    assert!(a.cores.iter().all(|core| core.sessions.get(&client_id).is_none()));
    assert!(a.cores.iter().all(|core| core.routes.is_empty()));
}

/// `cluster_quorum`: a node that loses its quorum closes every client on every
/// shard (MQTT 5: DISCONNECT 0x9C, Use another server) and publishes none of
/// their wills (the nodes that keep the quorum do, once they declare it down);
/// a persistent session stays, offline, for its client's return.
#[test]
fn losing_the_quorum_closes_every_client_without_publishing_its_will() {
    use crate::shard::core::messages::NodeMsg;
    for protocol in [V3, V5] {
        let mut a = sim(2);
        let mut clients = Vec::new();
        for shard in 0..2 {
            let id = a.id_on_shard("fenced", shard);
            let c = a.client(&id, protocol);
            let mut connect = persistent(&id, protocol, 600);
            connect.will = Some(will("will/x", "gone", None));
            a.connect(c, connect);
            clients.push((c, id));
        }
        a.settle();
        let now = a.now();
        a.cores[0].handle_node(now, NodeMsg::Fenced(true));
        a.settle();
        assert!(a.cores.iter().all(|core| core.cluster_fenced()), "{protocol:?}");
        for (c, id) in &clients {
            assert_eq!(a.client_ref(*c).closed, Some(Close::Fenced), "{protocol:?}");
            if protocol.is_v5() {
                let last = a.take(*c).pop();
                let Some(Packet::Disconnect(d)) = last else { panic!("{last:?}") };
                assert_eq!(d.reason, ReasonCode::USE_ANOTHER_SERVER);
            }
            let client_id = ByteString::from(id.as_str());
            assert!(a.cores.iter().any(|core| core.sessions.get(&client_id).is_some()));
        }
        let wills: u64 = a.cores.iter().map(|core| core.stats.wills_published).sum();
        assert_eq!(wills, 0, "{protocol:?}: no will published by the fenced node");

        a.cores[0].handle_node(now, NodeMsg::Fenced(false));
        a.settle();
        assert!(a.cores.iter().all(|core| !core.cluster_fenced()));
        let (_, id) = &clients[1];
        let back = a.client(id, protocol);
        a.connect(back, persistent(id, protocol, 600));
        a.settle();
        assert!(connack(&a.take(back)).session_present, "{protocol:?}");
    }
}

// -- a node restarted with its data directory ------------------------------------

/// A session image subscribed to `filter` at QoS 1, with nothing queued.
fn subscribed_image(filter: &str) -> crate::session::SessionImage {
    use crate::protocol::TopicFilter;
    use crate::session::{SessionImage, SubOptions};
    SessionImage {
        subscriptions: vec![(
            TopicFilter::try_from(filter).expect("valid"),
            SubOptions::qos(QoS::AtLeastOnce),
        )],
        inflight: Vec::new(),
        mqueue: Vec::new(),
        awaiting_rel: Vec::new(),
    }
}

/// A two-shard node of a cluster, restarted: the session of `id` comes back from
/// the data directory, subscribed to `cmd/#`, with the will of the connection the
/// crash ended (on `will/{id}`); a watcher on the other shard subscribes to
/// `will/#`.
fn restarted_with(id_prefix: &str) -> (Sim, ByteString, usize) {
    use crate::message::{Message, MessageId};
    use crate::persist::{RecoveredSession, ShardRecovery};
    use crate::protocol::TopicName;

    let mut config = crate::config::Config::test();
    config.cluster_listen = Some("127.0.0.1:7946".parse().expect("an address"));
    let mut sim = Sim::new(2, &config, 0);
    let id = sim.id_on_shard(id_prefix, 1);
    let will = Message {
        id: MessageId(1),
        topic: TopicName::try_from(format!("will/{id}").as_str()).expect("valid"),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        publisher: None,
        properties: None,
    };
    let image = subscribed_image("cmd/#");
    let session = RecoveredSession {
        client_id: id.clone(),
        expiry_secs: Some(600),
        offline_since_s: 0,
        username: None,
        image,
        will: Some((will, 0, 5)),
    };
    let now = sim.now();
    let recovery = ShardRecovery { sessions: vec![session], ..ShardRecovery::default() };
    sim.cores[1].restore(now, recovery);
    sim.settle();
    let watcher = subscriber(&mut sim, "watch", 0, "will/#");
    (sim, ByteString::from(id), watcher)
}

#[test]
fn a_recovered_will_waits_for_the_other_nodes_and_goes_out_when_none_published_it() {
    let (mut sim, id, watcher) = restarted_with("dev");
    assert_eq!(sim.cores[1].recovered_sessions(), vec![id.clone()]);
    sim.advance(10_000);
    assert!(sim.take_delivered(watcher).is_empty(), "published before the cluster answered");
    let now = sim.now();
    sim.cores[1].reconcile(now, &id, Reconciled::Keep);
    sim.advance(1_500);
    assert_eq!(payloads(&sim.take_delivered(watcher)), ["gone"]);
    assert!(sim.cores[1].recovered_sessions().is_empty());
    assert!(sim.cores[1].sessions.get(&id).is_some(), "the session stays");
}

#[test]
fn a_recovered_will_another_node_published_is_dropped_and_the_session_kept() {
    let (mut sim, id, watcher) = restarted_with("dev");
    sim.advance(2_000);
    let now = sim.now();
    sim.cores[1].reconcile(now, &id, Reconciled::WillPublished);
    sim.advance(10_000);
    assert!(sim.take_delivered(watcher).is_empty(), "the will went out twice");
    assert_eq!(sim.cores[1].stats.recovered_wills_dropped, 1);
    // The session is still routed: a message for it is queued.
    let sender = publisher(&mut sim, "pub", 0, V5);
    sim.publish(sender, "cmd/1", b"queued", QoS::AtLeastOnce, false);
    sim.settle();
    let back = sim.client(&id, V5);
    sim.connect(back, persistent(&id, V5, 600));
    sim.settle();
    assert!(connack(&sim.take(back)).session_present);
    assert_eq!(payloads(&sim.take_delivered(back)), ["queued"]);
}

#[test]
fn a_recovered_session_whose_client_moved_is_dropped_with_its_will() {
    let (mut sim, id, watcher) = restarted_with("dev");
    let now = sim.now();
    sim.cores[1].reconcile(now, &id, Reconciled::Moved);
    sim.settle();
    sim.advance(5_000);
    assert!(sim.take_delivered(watcher).is_empty(), "the stale session's will went out");
    assert!(sim.cores.iter().all(|core| core.sessions.get(&id).is_none()));
    assert!(sim.cores.iter().all(|core| !core.routes.iter().any(|(f, _)| f == "cmd/#")));
    assert_eq!(sim.cores[1].stats.recovered_sessions_dropped, 1);
}

/// The client connects here and its claim brings its newer session from the node
/// it moved to: that one replaces the recovered one (which would win otherwise,
/// as a session already here does after a healed partition).
#[test]
fn a_session_handed_over_replaces_a_recovered_one() {
    let (mut sim, id, watcher) = restarted_with("dev");
    let image = subscribed_image("new/#");
    let now = sim.now();
    sim.cores[1].import_session(now, id.clone(), image);
    sim.settle();
    let back = sim.client(&id, V5);
    sim.connect(back, persistent(&id, V5, 600));
    sim.settle();
    assert!(connack(&sim.take(back)).session_present);
    let sender = publisher(&mut sim, "pub", 0, V5);
    sim.publish(sender, "cmd/1", b"old", QoS::AtLeastOnce, false);
    sim.publish(sender, "new/1", b"new", QoS::AtLeastOnce, false);
    sim.settle();
    assert_eq!(payloads(&sim.take_delivered(back)), ["new"], "the handed-over session");
    sim.advance(5_000);
    assert!(sim.take_delivered(watcher).is_empty(), "the stale session's will went out");
    assert_eq!(sim.cores[1].stats.recovered_sessions_dropped, 1);
}

/// Its client comes back here first: the session is its own again, whatever the
/// other nodes answer later.
#[test]
fn a_recovered_session_its_client_resumed_is_not_dropped_by_a_late_answer() {
    let (mut sim, id, watcher) = restarted_with("dev");
    let back = sim.client(&id, V5);
    sim.connect(back, persistent(&id, V5, 600));
    sim.settle();
    assert!(connack(&sim.take(back)).session_present);
    assert!(sim.cores[1].recovered_sessions().is_empty());
    let now = sim.now();
    sim.cores[1].reconcile(now, &id, Reconciled::Moved);
    sim.settle();
    assert!(sim.is_connected(back));
    let sender = publisher(&mut sim, "pub", 0, V5);
    sim.publish(sender, "cmd/1", b"still", QoS::AtLeastOnce, false);
    sim.settle();
    assert_eq!(payloads(&sim.take_delivered(back)), ["still"]);
    // Back in time: the crashed connection's will is not published [MQTT-3.1.3-9].
    sim.advance(5_000);
    assert!(sim.take_delivered(watcher).is_empty());
}
