//! A session handed from one node to another: two simulated nodes of two shards,
//! the session leaving one core (`hand_over_session`) and entering the other
//! (`import_session`) as the cluster's claim does, with the client's connection
//! taken over.

use bytestring::ByteString;

use crate::protocol::{Packet, QoS, ReasonCode};
use crate::router::owner_shard;
use crate::shard::core::Close;

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
