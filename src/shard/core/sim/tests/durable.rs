//! `--sync always` across shards: an acknowledgement leaves only once every log
//! that holds what it acknowledges is on disk (`durable::Hold`).

use crate::protocol::{Packet, QoS};

use super::super::Sim;
use super::{payloads, persistent, publisher, sim, V5};

/// Every core keeps a log whose syncs the test decides, with output held for it.
fn durable_sim() -> Sim {
    let mut sim = sim(2);
    for core in &mut sim.cores {
        core.enable_journal();
        core.hold_output_for_log();
    }
    sim
}

/// Every log is on disk up to what it holds now.
fn sync_all(sim: &mut Sim) {
    for core in &mut sim.cores {
        let appended = core.log_appended();
        core.log_durable(appended);
    }
    sim.settle();
}

/// A persistent session on shard 1, subscribed to `t` at QoS 1; its CONNACK
/// and SUBACK not yet released (its records not synced).
fn persistent_subscriber(sim: &mut Sim) -> usize {
    let id = sim.id_on_shard("sub", 1);
    let sub = sim.client(&id, V5);
    sim.connect(sub, persistent(&id, V5, 3600));
    sim.subscribe(sub, &[("t", QoS::AtLeastOnce)]);
    sim.settle();
    sub
}

#[test]
fn a_puback_waits_for_the_log_of_the_subscribers_shard() {
    let mut sim = durable_sim();
    let sub = persistent_subscriber(&mut sim);
    assert!(sim.take(sub).is_empty(), "CONNACK and SUBACK wait for the session's records");
    sync_all(&mut sim);
    let packets = sim.take(sub);
    assert!(matches!(packets.last(), Some(Packet::SubAck(_))), "{packets:?}");

    // The publisher's shard writes nothing (a clean session), but its PUBACK
    // waits for the subscriber's shard to have the message on disk.
    let publisher = publisher(&mut sim, "pub", 0, V5);
    sync_all(&mut sim);
    sim.take(publisher);
    sim.publish(publisher, "t", b"m", QoS::AtLeastOnce, false);
    sim.settle();
    assert!(sim.take(publisher).is_empty(), "no PUBACK before shard 1's log has the message");
    assert!(sim.take_delivered(sub).is_empty(), "nor the delivery");

    let appended = sim.cores[1].log_appended();
    sim.cores[1].log_durable(appended);
    sim.settle();
    let acks = sim.take(publisher);
    assert!(matches!(acks.as_slice(), [Packet::PubAck(_)]), "{acks:?}");
    assert_eq!(sim.take_delivered(sub).len(), 1);
}

#[test]
fn a_connection_closed_while_its_puback_waits_for_the_log_does_not_get_it() {
    let mut sim = durable_sim();
    persistent_subscriber(&mut sim);
    sync_all(&mut sim);
    let pub_id = sim.id_on_shard("pub", 0);
    let first = sim.client(&pub_id, V5);
    sim.connect(first, super::super::connect_packet(&pub_id, V5));
    sim.settle();
    sync_all(&mut sim);
    sim.take(first);
    sim.publish(first, "t", b"m", QoS::AtLeastOnce, false);
    sim.settle();
    // A new connection takes the client id over while the PUBACK waits for
    // shard 1's log: the old connection's last words are its DISCONNECT only.
    let second = sim.client(&pub_id, V5);
    sim.connect(second, super::super::connect_packet(&pub_id, V5));
    sim.settle();
    let last = sim.take(first);
    assert!(!last.iter().any(|p| matches!(p, Packet::PubAck(_))), "{last:?}");
    assert!(matches!(last.last(), Some(Packet::Disconnect(_))), "{last:?}");
}

#[test]
fn a_shard_whose_log_is_behind_reads_no_publisher_and_takes_no_ring_batch() {
    let mut sim = durable_sim();
    let sub = persistent_subscriber(&mut sim);
    let publisher = publisher(&mut sim, "pub", 0, V5);
    sync_all(&mut sim);
    sim.take(sub);
    sim.take(publisher);

    // Shard 1's disk falls behind: it pauses its own publishers and leaves the
    // batches of the other shards in their rings.
    let now = sim.now();
    sim.cores[1].set_log_behind(now, true);
    assert!(sim.cores[1].readers_paused() && sim.cores[1].rings_paused());
    assert!(!sim.cores[0].readers_paused(), "only the shard that is behind pauses");
    sim.publish(publisher, "t", b"m", QoS::AtLeastOnce, false);
    sim.settle();
    sync_all(&mut sim);
    assert!(sim.take_delivered(sub).is_empty(), "the message waits in the ring");
    assert!(sim.take(publisher).is_empty(), "and so does its PUBACK");

    // Its writer caught up: the batch is taken, logged, delivered, acknowledged.
    let now = sim.now();
    sim.cores[1].set_log_behind(now, false);
    assert!(!sim.cores[1].readers_paused() && !sim.cores[1].rings_paused());
    sim.settle();
    sync_all(&mut sim);
    assert_eq!(payloads(&sim.take_delivered(sub)), ["m"]);
    let acks = sim.take(publisher);
    assert!(matches!(acks.as_slice(), [Packet::PubAck(_)]), "{acks:?}");
}
