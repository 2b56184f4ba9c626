//! End-to-end properties of the node, checked on the simulation in virtual time:
//! `delivery` (per QoS and in order under random traffic, takeover, retained
//! last-writer-wins across shards) and `clock` (what waits for the broker's
//! clock: session expiry, wills with Will Delay, keep-alive, message expiry).
//! The helpers here build clients and packets for both.

mod clock;
mod cluster;
mod delivery;
mod durable;

use crate::config::Config;
use crate::protocol::{
    ConnAck, Connect, LastWill, Packet, Properties, ProtocolVersion, Publish, QoS, TopicName,
};

use super::{connect_packet, Sim};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Every (publisher shard, subscriber shard) pair of a two-shard node.
const PAIRS: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];

fn sim(shards: usize) -> Sim {
    Sim::new(shards, &Config::test(), 0)
}

fn qos(n: u8) -> QoS {
    QoS::from_bits(n % 3).expect("0..=2")
}

fn text(p: &Publish) -> String {
    String::from_utf8(p.payload.to_vec()).expect("text payload")
}

fn payloads(publishes: &[Publish]) -> Vec<String> {
    publishes.iter().map(text).collect()
}

/// A persistent session's CONNECT: Clean Start 0 and, in MQTT 5, a Session
/// Expiry Interval of `expiry_secs`.
fn persistent(client_id: &str, protocol: ProtocolVersion, expiry_secs: u32) -> Connect {
    let mut connect = connect_packet(client_id, protocol);
    connect.clean_session = false;
    if protocol.is_v5() {
        connect.properties.session_expiry_interval = Some(expiry_secs);
    }
    connect
}

fn will(topic: &str, payload: &str, delay_secs: Option<u32>) -> LastWill {
    let properties = Properties { will_delay_interval: delay_secs, ..Properties::default() };
    LastWill {
        topic: TopicName::try_from(topic).expect("valid"),
        payload: payload.as_bytes().to_vec().into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: properties.into(),
    }
}

/// A connected client on `shard`, subscribed to `filter` at QoS 1.
fn subscriber(sim: &mut Sim, prefix: &str, shard: usize, filter: &str) -> usize {
    let id = sim.id_on_shard(prefix, shard);
    let c = sim.client(&id, V5);
    sim.connect(c, connect_packet(&id, V5));
    sim.subscribe(c, &[(filter, QoS::AtLeastOnce)]);
    sim.settle();
    let packets = sim.take(c);
    connack(&packets);
    assert!(matches!(packets.last(), Some(Packet::SubAck(_))), "{packets:?}");
    c
}

/// A connected client on `shard` that only publishes.
fn publisher(sim: &mut Sim, prefix: &str, shard: usize, protocol: ProtocolVersion) -> usize {
    let id = sim.id_on_shard(prefix, shard);
    let c = sim.client(&id, protocol);
    sim.connect(c, connect_packet(&id, protocol));
    sim.settle();
    c
}

fn connack(packets: &[Packet]) -> &ConnAck {
    match packets.first() {
        Some(Packet::ConnAck(connack)) => connack,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}
