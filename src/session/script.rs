//! A scripted client for property tests and fuzzing of [`Session`]: it drives a
//! session through deliveries, acknowledgements, disconnects and reconnects, decodes
//! everything the session encodes, and panics when an invariant breaks:
//!
//! - no more unacknowledged PUBLISHes reach the client on one connection than its
//!   window (`min(inflight_max, Receive Maximum)`, which a reconnect may change), and
//!   `check_invariants` holds after every step;
//! - first transmissions (DUP = 0) come in delivery order, each message once;
//! - every QoS 1/2 message is delivered or dropped by the counted mqueue policy;
//! - after the client returns and acknowledges everything, nothing is pending;
//! - the session is durable, and after every step its log (`persist::journal`),
//!   replayed, gives its window (packet ids, stages), queue and QoS 2 ids.
//!
//! Built for tests and for the fuzz crate (feature `fuzzing`), never into the broker.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{Delivery, Link, Session, SessionLimits};
use crate::message::{Message, MessageId};
use crate::protocol::{codec, Ack, Limits, Packet, PacketId, ProtocolVersion, QoS, TopicName};

/// Session limits for a script.
pub fn limits(inflight_max: u16, mqueue_len_max: usize, store_qos0: bool) -> SessionLimits {
    SessionLimits {
        inflight_max,
        mqueue_len_max: u32::try_from(mqueue_len_max).expect("a test's small queue"),
        mqueue_store_qos0: store_qos0,
        out_buffer_max: 1 << 20,
    }
}

/// Message number `seq` at `qos`; the payload carries `seq`.
pub fn delivery(seq: u64, qos: QoS) -> Delivery {
    let message = Message {
        id: MessageId(u128::from(seq)),
        topic: TopicName::try_from("t").expect("valid topic"),
        payload: Bytes::copy_from_slice(&seq.to_be_bytes()),
        qos,
        retain: false,
        publisher: None,
        properties: None,
    };
    Delivery::new(Arc::new(message), qos, false)
}

/// The client acknowledges each packet id as its exchange expects.
const BY_THE_RULES: &str = "the scripted client acknowledges by the rules";

/// The time a script runs at: messages carry no expiry, so any value does.
const NOW_US: u64 = 0;

fn seq_of(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload.try_into().expect("8-byte payload"))
}

/// The session's log: what its journal appended, replayed at every check.
struct Log {
    journal: crate::persist::Journal,
    bytes: Vec<u8>,
}

impl Default for Log {
    fn default() -> Self {
        let mut journal = crate::persist::Journal::default();
        journal.session(1, true, "c", None, 0, None);
        Log { journal, bytes: Vec::new() }
    }
}

impl Log {
    /// Takes the session's changes; the log replayed must give the session's
    /// state.
    fn check(&mut self, session: &mut Session) {
        use crate::persist::record::{decode, Decoded};
        self.journal.absorb(1, session);
        if let Some(bytes) = self.journal.take() {
            self.bytes.extend_from_slice(&bytes);
        }
        let mut replay = crate::persist::Replay::default();
        let mut at = 0;
        while let Decoded::Record(record, used) = decode(&self.bytes[at..]) {
            replay.apply(record);
            at += used;
        }
        assert_eq!(at, self.bytes.len(), "the whole log decodes");
        let (sessions, _) = replay.finish();
        let replayed = &sessions[0].image;
        let live = session.image();
        let view = |i: &super::SessionImage| {
            let window: Vec<_> = i
                .inflight
                .iter()
                .map(|e| (e.packet_id, e.stage, e.delivery.message.id, e.delivery.qos))
                .collect();
            let queue: Vec<_> = i.mqueue.iter().map(|d| (d.message.id, d.qos)).collect();
            let mut rel = i.awaiting_rel.clone();
            rel.sort_by_key(|p| p.get());
            (window, queue, rel)
        };
        assert_eq!(view(replayed), view(&live), "the log replayed differs from the session");
    }
}

/// One step of a script.
#[derive(Clone, Debug)]
pub enum Op {
    /// Deliver the next numbered message to the session at this QoS.
    Deliver(QoS),
    /// Acknowledge the n-th (modulo) unacknowledged packet the client holds.
    Ack(usize),
    /// Drop the client's connection; the session goes offline.
    Disconnect,
    /// Reconnect the client, with this Receive Maximum over MQTT 5 (ignored over
    /// MQTT 3); the session resumes and resends what is pending.
    Reconnect(u16),
}

impl Op {
    /// Maps a byte to a step (for fuzzers): mostly deliveries and acks.
    pub fn from_byte(b: u8) -> Op {
        match b % 9 {
            0 => Op::Deliver(QoS::AtMostOnce),
            1 => Op::Deliver(QoS::AtLeastOnce),
            2 | 3 => Op::Deliver(QoS::ExactlyOnce),
            4..=6 => Op::Ack(usize::from(b / 9)),
            7 => Op::Disconnect,
            _ => Op::Reconnect(u16::from(b / 9 % 6) + 1),
        }
    }
}

/// What the client saw, and what it still has to acknowledge.
#[derive(Debug)]
pub struct Client {
    /// The protocol the client decodes with.
    pub protocol: ProtocolVersion,
    /// Sequence numbers of first transmissions (DUP = 0), in arrival order.
    pub first_sent: Vec<u64>,
    /// Packets awaiting the client's PUBACK / PUBREC / PUBCOMP: (id, QoS, PUBREL seen).
    pub unacked: VecDeque<(PacketId, QoS, bool)>,
    /// Ids of the QoS 1/2 PUBLISHes received on the current connection and not yet
    /// completed (PUBACK, PUBCOMP): what counts against its Receive Maximum.
    on_link: BTreeSet<PacketId>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new(ProtocolVersion::V311)
    }
}

impl Client {
    /// A client speaking `protocol`.
    pub fn new(protocol: ProtocolVersion) -> Self {
        Client {
            protocol,
            first_sent: Vec::new(),
            unacked: VecDeque::new(),
            on_link: BTreeSet::new(),
        }
    }

    /// A new connection: the Receive Maximum counts from zero again [MQTT-4.9.0-1].
    fn reconnect(&mut self) {
        self.on_link.clear();
    }

    /// QoS 1/2 PUBLISHes received on this connection and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.on_link.len()
    }

    /// Decodes and records everything in `out`.
    pub fn read(&mut self, out: &mut BytesMut) {
        let limits = Limits { packet_size_max: 1 << 20, protocol: self.protocol };
        while let Some(packet) = codec::decode(out, &limits).expect("session encodes valid packets")
        {
            match packet {
                Packet::Publish(publish) => {
                    if !publish.dup {
                        self.first_sent.push(seq_of(&publish.payload));
                    }
                    if let Some(id) = publish.qos.packet_id() {
                        self.on_link.insert(id);
                        if !self.unacked.iter().any(|(known, _, _)| *known == id) {
                            self.unacked.push_back((id, publish.qos.qos(), false));
                        }
                    }
                }
                Packet::PubRel(ack) => {
                    let entry = self.unacked.iter_mut().find(|(id, _, _)| *id == ack.packet_id);
                    entry.expect("PUBREL only for a PUBREC'd id").2 = true;
                }
                other => panic!("unexpected packet toward the client: {other:?}"),
            }
        }
    }

    /// Acknowledges the n-th (modulo) outstanding packet.
    fn ack(&mut self, session: &mut Session, out: &mut BytesMut, n: usize) {
        if self.unacked.is_empty() {
            return;
        }
        let at = n % self.unacked.len();
        let (id, qos, released) = self.unacked[at];
        match (qos, released) {
            (QoS::AtLeastOnce, _) => {
                session.on_puback(id, out, NOW_US).expect(BY_THE_RULES);
                self.unacked.remove(at);
                self.on_link.remove(&id);
            }
            (QoS::ExactlyOnce, false) => {
                session.on_pubrec(&Ack::new(id), out, NOW_US).expect(BY_THE_RULES);
            }
            (QoS::ExactlyOnce, true) => {
                session.on_pubcomp(id, out, NOW_US).expect(BY_THE_RULES);
                self.unacked.remove(at);
                self.on_link.remove(&id);
            }
            (QoS::AtMostOnce, _) => unreachable!("QoS 0 has no packet id"),
        }
    }
}

/// Runs `ops` over an MQTT 3.1.1 connection, then reconnects and acknowledges
/// everything, checking the invariants. Panics on the first one broken.
pub fn run(ops: &[Op], inflight_max: u16, mqueue_len_max: usize, store_qos0: bool) {
    run_on(ops, inflight_max, mqueue_len_max, store_qos0, Link::v3(ProtocolVersion::V311));
}

/// [`run`] over a connection with the given parameters (e.g. an MQTT 5 client with
/// a Receive Maximum below `inflight_max` and outgoing topic aliases).
pub fn run_on(ops: &[Op], inflight_max: u16, mqueue_len_max: usize, store_qos0: bool, link: Link) {
    let mut session = Session::new("c".into(), limits(inflight_max, mqueue_len_max, store_qos0));
    session.attach(link);
    session.set_durable(true);
    let mut log = Log::default();
    let mut link = link;
    let mut client = Client::new(link.protocol);
    let mut out = BytesMut::new();
    let mut delivered_qos12 = Vec::new();
    let mut dropped = BTreeSet::new();
    let mut online = true;
    let mut seq = 0;
    for op in ops {
        match op {
            Op::Deliver(qos) => {
                seq += 1;
                if *qos != QoS::AtMostOnce {
                    delivered_qos12.push(seq);
                }
                let target = if online { Some(&mut out) } else { None };
                if let Some((gone, _)) = session.deliver(delivery(seq, *qos), target, true, NOW_US)
                {
                    dropped.insert(seq_of(&gone.message.payload));
                }
            }
            Op::Ack(n) if online => client.ack(&mut session, &mut out, *n),
            Op::Ack(_) => {}
            Op::Disconnect => {
                session.go_offline();
                online = false;
            }
            Op::Reconnect(receive_max) => {
                if link.protocol.is_v5() {
                    link.receive_max = *receive_max;
                }
                session.attach(link);
                client.reconnect();
                session.resume(&mut out, NOW_US);
                online = true;
            }
        }
        if online {
            client.read(&mut out);
        }
        log.check(&mut session);
        assert!(session.check_invariants());
        assert!(session.inflight_len() <= usize::from(inflight_max), "inflight_max exceeded");
        let window = usize::from(inflight_max.min(link.receive_max));
        assert!(client.in_flight() <= window, "window of this connection exceeded");
    }
    // Drain: the client comes back and acknowledges until nothing is left.
    session.attach(link);
    client.reconnect();
    session.resume(&mut out, NOW_US);
    client.read(&mut out);
    for _ in 0..(4 * ops.len() + 8) {
        client.ack(&mut session, &mut out, 0);
        client.read(&mut out);
    }
    log.check(&mut session);
    assert!(!session.has_pending(), "everything delivered or dropped");
    assert!(client.first_sent.windows(2).all(|w| w[0] < w[1]), "order: {:?}", client.first_sent);
    let seen: BTreeSet<u64> = client.first_sent.iter().copied().collect();
    for seq in delivered_qos12 {
        assert!(seen.contains(&seq) || dropped.contains(&seq), "message {seq} lost");
    }
}
