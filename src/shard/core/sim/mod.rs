//! A deterministic simulation of one node: N [`Core`]s wired in memory, a virtual
//! clock, and scripted clients that speak MQTT bytes through the codec (quinn's
//! `Pair` idea, with shards). The harness plays the IO layer's part as
//! `shard::run` and `shard::conn` do:
//!
//! - a client connects to the core that owns its id (`owner_shard`), as a
//!   hand-off would deliver it there; its bytes go in with `handle_input`, and
//!   input the core held back (SUBACK wait, backpressure) is offered again later;
//! - a pass is `end_pass`, then every ring batch leaves, then every woken
//!   connection's output is taken, decoded by its client and reported written;
//!   a close decision gets the last words, then `handle_closed`;
//! - ring batches travel FIFO per (source, destination) pair, and the harness
//!   picks which pair moves next at random (seeded), so interleavings across
//!   pairs vary as they do between real shards; data batches wait while the
//!   destination's rings gate is closed;
//! - time moves only when a test says so; every core gets `handle_tick` every
//!   100 virtual ms.
//!
//! Every core's `check_invariants()` is asserted after every step.

mod tests;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use hashbrown::HashMap;

use crate::config::Config;
use crate::hooks::Hooks;
use crate::protocol::{
    codec, Ack, Connect, Disconnect, Limits, Packet, PacketId, Properties, ProtocolVersion,
    Publish, PublishQoS, PublishTopic, QoS, ReasonCode, Subscribe, SubscribeFilter, TopicFilter,
    TopicName,
};
use crate::router::owner_shard;

use super::messages::Batch;
use super::timers::TICK_MS;
use super::{Close, ConnId, Core, Now};

/// The Unix time at virtual millisecond 0 (any value does; message ids and
/// expiry read it).
const EPOCH_US: u64 = 1_700_000_000_000_000;

/// How many rounds `settle` may take before the node is declared livelocked.
const ROUNDS_MAX: usize = 100_000;

/// A client as the tests drive it: one MQTT endpoint that may connect several
/// times (resuming its session), with the client-side state the protocol needs.
#[derive(Debug)]
pub(super) struct Client {
    pub client_id: ByteString,
    pub protocol: ProtocolVersion,
    /// The shard and connection the client uses now.
    conn: Option<(usize, ConnId)>,
    /// Bytes sent and not yet processed by the core (part of a packet, or held).
    input: BytesMut,
    /// Every packet the broker sent, in order, until the test takes them.
    packets: Vec<Packet>,
    /// Application messages: a QoS 2 message once per exchange, a QoS 1 one each
    /// time it arrives (a resend may repeat it), QoS 0 as it comes.
    delivered: Vec<Publish>,
    /// Acknowledge incoming messages as soon as they arrive.
    auto_ack: bool,
    /// Messages from the broker the client has not completed: (id, QoS, stage).
    unacked: VecDeque<(PacketId, QoS, Stage)>,
    /// QoS 2 ids received and not completed: a PUBLISH with one of them is a
    /// resend of a message already delivered [MQTT-4.3.3-2].
    qos2_received: HashSet<PacketId>,
    /// The client's own QoS 1/2 messages not completed, and whether PUBREC came.
    outgoing: Vec<(Publish, bool)>,
    next_packet_id: u16,
    /// Why the broker closed the client's last connection.
    pub closed: Option<Close>,
}

impl Client {
    fn new(client_id: &str, protocol: ProtocolVersion) -> Self {
        Client {
            client_id: ByteString::from(client_id),
            protocol,
            conn: None,
            input: BytesMut::new(),
            packets: Vec::new(),
            delivered: Vec::new(),
            auto_ack: true,
            unacked: VecDeque::new(),
            qos2_received: HashSet::new(),
            outgoing: Vec::new(),
            next_packet_id: 0,
            closed: None,
        }
    }

    /// The next packet id not in use by the client's own messages.
    fn packet_id(&mut self) -> PacketId {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            let Some(id) = PacketId::new(self.next_packet_id) else { continue };
            if !self.outgoing.iter().any(|(p, _)| p.qos.packet_id() == Some(id)) {
                return id;
            }
        }
    }

    fn write(&mut self, packet: &Packet) {
        codec::encode(packet, self.protocol, &mut self.input);
    }

    /// Takes what the broker sent: records it, and answers what the protocol
    /// answers by itself (PUBREL to PUBREC; with `auto_ack`, every acknowledgement).
    fn read(&mut self, mut bytes: BytesMut) {
        let limits = Limits { packet_size_max: usize::MAX, protocol: self.protocol };
        while let Some(packet) = codec::decode(&mut bytes, &limits).expect("the core encodes") {
            self.on_packet(&packet);
            self.packets.push(packet);
        }
        assert!(bytes.is_empty(), "the core releases whole packets only");
    }

    fn on_packet(&mut self, packet: &Packet) {
        match packet {
            Packet::Publish(publish) => {
                let fresh = match publish.qos {
                    PublishQoS::ExactlyOnce(id) => self.qos2_received.insert(id),
                    _ => true,
                };
                if fresh {
                    self.delivered.push(publish.clone());
                }
                if let Some(id) = publish.qos.packet_id() {
                    match self.unacked.iter_mut().find(|(known, _, _)| *known == id) {
                        // A resend of a message the client has answered: answer again.
                        Some(entry) => entry.2 = Stage::Received,
                        None => self.unacked.push_back((id, publish.qos.qos(), Stage::Received)),
                    }
                }
            }
            Packet::PubRel(ack) => {
                match self.unacked.iter_mut().find(|(id, _, _)| *id == ack.packet_id) {
                    Some(entry) => entry.2 = Stage::Released,
                    // Resent after a reconnection: the PUBREC went on the old one.
                    None => {
                        self.unacked.push_back((ack.packet_id, QoS::ExactlyOnce, Stage::Released));
                    }
                }
            }
            Packet::PubAck(ack) | Packet::PubComp(ack) => {
                self.outgoing.retain(|(p, _)| p.qos.packet_id() != Some(ack.packet_id));
            }
            Packet::PubRec(ack) => {
                let entry = self
                    .outgoing
                    .iter_mut()
                    .find(|(p, _)| p.qos.packet_id() == Some(ack.packet_id));
                if let Some(entry) = entry {
                    entry.1 = true;
                }
                self.write(&Packet::PubRel(Ack::new(ack.packet_id)));
            }
            _ => {}
        }
        if self.auto_ack {
            while self.waits() {
                self.ack(0);
            }
        }
    }

    /// Acknowledges the n-th (modulo) message that waits for the client: PUBACK,
    /// PUBREC, or PUBCOMP once PUBREL came.
    fn ack(&mut self, n: usize) {
        let waiting: Vec<usize> =
            (0..self.unacked.len()).filter(|&i| self.unacked[i].2 != Stage::Recd).collect();
        if waiting.is_empty() {
            return;
        }
        let at = waiting[n % waiting.len()];
        let (id, qos, stage) = self.unacked[at];
        match (qos, stage) {
            (QoS::AtLeastOnce, _) => {
                self.unacked.remove(at);
                self.write(&Packet::PubAck(Ack::new(id)));
            }
            (QoS::ExactlyOnce, Stage::Received) => {
                self.unacked[at].2 = Stage::Recd;
                self.write(&Packet::PubRec(Ack::new(id)));
            }
            (QoS::ExactlyOnce, _) => {
                self.unacked.remove(at);
                self.qos2_received.remove(&id);
                self.write(&Packet::PubComp(Ack::new(id)));
            }
            (QoS::AtMostOnce, _) => unreachable!("QoS 0 has no packet id"),
        }
    }

    /// Whether a message waits for the client's acknowledgement.
    fn waits(&self) -> bool {
        self.unacked.iter().any(|(_, _, stage)| *stage != Stage::Recd)
    }
}

/// Where an incoming QoS 1/2 message stands on the client's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Received,
    /// PUBREC sent; PUBREL awaited.
    Recd,
    Released,
}

/// A CONNECT for `client_id`: Clean Start, no keep-alive, no will, no properties.
pub(super) fn connect_packet(client_id: &str, protocol: ProtocolVersion) -> Connect {
    Connect {
        protocol,
        clean_session: true,
        keep_alive_secs: 0,
        client_id: ByteString::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default().into(),
    }
}

/// N cores, their rings, their clients and the virtual clock.
pub(super) struct Sim {
    cores: Vec<Core>,
    now: Now,
    /// The next tick, in virtual ms.
    next_tick_ms: u64,
    /// Batches in flight, per `source * shards + destination`: FIFO, as a ring.
    rings: Vec<VecDeque<Batch>>,
    clients: Vec<Client>,
    /// Which client a connection belongs to; `None` once the client left it
    /// (taken over: the client reconnected on another socket).
    conns: HashMap<(usize, ConnId), Option<usize>>,
    /// Picks the ring that moves next.
    rng: fastrand::Rng,
}

impl Sim {
    /// `shards` cores configured from `config` as the broker would.
    pub fn new(shards: usize, config: &Config, seed: u64) -> Self {
        let now = Now { ms: 0, unix_us: EPOCH_US };
        let hooks = Arc::new(Hooks::default());
        let cores = (0..shards)
            .map(|id| {
                let core_config = super::super::core_config(config, shards);
                Core::new(id, shards, core_config, Arc::clone(&hooks), now)
            })
            .collect();
        Sim {
            cores,
            now,
            next_tick_ms: TICK_MS,
            rings: (0..shards * shards).map(|_| VecDeque::new()).collect(),
            clients: Vec::new(),
            conns: HashMap::new(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn shards(&self) -> usize {
        self.cores.len()
    }

    pub fn now(&self) -> Now {
        self.now
    }

    /// A client that acknowledges everything as it arrives.
    pub fn client(&mut self, client_id: &str, protocol: ProtocolVersion) -> usize {
        self.clients.push(Client::new(client_id, protocol));
        self.clients.len() - 1
    }

    /// A client whose acknowledgements the test sends ([`Sim::ack`]).
    pub fn manual_client(&mut self, client_id: &str, protocol: ProtocolVersion) -> usize {
        let c = self.client(client_id, protocol);
        self.clients[c].auto_ack = false;
        c
    }

    /// The first client id with `prefix` that `owner_shard` puts on `shard`.
    pub fn id_on_shard(&self, prefix: &str, shard: usize) -> String {
        (0..)
            .map(|n| format!("{prefix}-{n}"))
            .find(|id| owner_shard(id.as_bytes(), self.shards()) == shard)
            .expect("some id hashes to every shard")
    }

    pub fn client_ref(&self, c: usize) -> &Client {
        &self.clients[c]
    }

    pub fn is_connected(&self, c: usize) -> bool {
        self.clients[c].conn.is_some()
    }

    /// Every packet `c` received since the last call.
    pub fn take(&mut self, c: usize) -> Vec<Packet> {
        std::mem::take(&mut self.clients[c].packets)
    }

    /// The application messages `c` received since the last call.
    pub fn take_delivered(&mut self, c: usize) -> Vec<Publish> {
        std::mem::take(&mut self.clients[c].delivered)
    }

    // ---- what clients do -------------------------------------------------------

    /// Connects `c` with `connect` on the shard that owns its id. A connection
    /// the client still had is abandoned (the broker takes it over). The client
    /// resends its unfinished messages at once [MQTT-4.4.0-1]; the CONNACK comes
    /// with the next pass.
    pub fn connect(&mut self, c: usize, mut connect: Connect) {
        let client = &mut self.clients[c];
        connect.client_id = client.client_id.clone();
        connect.protocol = client.protocol;
        // Through the codec, as the IO layer reads it.
        let mut bytes = BytesMut::new();
        codec::encode(&Packet::Connect(connect), client.protocol, &mut bytes);
        let limits = Limits { packet_size_max: usize::MAX, protocol: ProtocolVersion::V311 };
        let Ok(Some(Packet::Connect(connect))) = codec::decode(&mut bytes, &limits) else {
            panic!("a CONNECT the codec reads back");
        };
        let shard = owner_shard(client.client_id.as_bytes(), self.cores.len());
        if let Some(old) = client.conn.take() {
            self.conns.insert(old, None);
        }
        client.input.clear();
        client.unacked.clear();
        client.closed = None;
        if !connect.clean_session {
            // Resent whatever the broker's answer: a session that is gone
            // takes them as new messages.
            let resend: Vec<Packet> = client
                .outgoing
                .iter()
                .map(|(publish, released)| match released {
                    false => Packet::Publish(Publish { dup: true, ..publish.clone() }),
                    true => Packet::PubRel(Ack::new(publish.qos.packet_id().expect("QoS > 0"))),
                })
                .collect();
            for packet in &resend {
                client.write(packet);
            }
        } else {
            client.outgoing.clear();
        }
        if connect.clean_session {
            client.qos2_received.clear();
        }
        match self.cores[shard].handle_connect(self.now, connect, None, 0) {
            Ok(id) => {
                client.conn = Some((shard, id));
                self.conns.insert((shard, id), Some(c));
                self.feed(c);
            }
            Err(refusal) => {
                client.input.clear();
                client.read(refusal);
            }
        }
        self.check();
    }

    /// `c` sends `packet` (processed at once, unless the core holds input back).
    pub fn send(&mut self, c: usize, packet: &Packet) {
        self.clients[c].write(packet);
        self.feed(c);
        self.check();
    }

    /// `c` publishes; a QoS 1/2 message is kept until acknowledged.
    pub fn publish(&mut self, c: usize, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        self.publish_with(c, topic, payload, qos, retain, None);
    }

    pub fn publish_with(
        &mut self,
        c: usize,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        properties: Option<Properties>,
    ) {
        let client = &mut self.clients[c];
        let packet_id = (qos != QoS::AtMostOnce).then(|| client.packet_id());
        let publish = Publish {
            dup: false,
            qos: packet_id.map_or(PublishQoS::AtMostOnce, |id| PublishQoS::new(qos, id)),
            retain,
            topic: PublishTopic::Name(TopicName::try_from(topic).expect("valid topic")),
            payload: Bytes::copy_from_slice(payload),
            properties: properties.map(Box::new),
        };
        if packet_id.is_some() {
            client.outgoing.push((publish.clone(), false));
        }
        self.send(c, &Packet::Publish(publish));
    }

    /// `c` resends its unacknowledged messages with DUP (a client may; a QoS 2
    /// message must still be delivered once [MQTT-4.3.3-2]).
    pub fn resend(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let again: Vec<Publish> = client
            .outgoing
            .iter()
            .filter(|(_, released)| !released)
            .map(|(p, _)| Publish { dup: true, ..p.clone() })
            .collect();
        for publish in again {
            client.write(&Packet::Publish(publish));
        }
        self.feed(c);
        self.check();
    }

    /// `c` subscribes to `filters` (MQTT 3 options).
    pub fn subscribe(&mut self, c: usize, filters: &[(&str, QoS)]) {
        let filters = filters
            .iter()
            .map(|(f, qos)| {
                SubscribeFilter::new(TopicFilter::try_from(*f).expect("valid filter"), *qos)
            })
            .collect();
        let packet_id = self.clients[c].packet_id();
        let subscribe = Subscribe { packet_id, filters, properties: Properties::default().into() };
        self.send(c, &Packet::Subscribe(subscribe));
    }

    /// `c` sends DISCONNECT with `reason` and, for MQTT 5, `properties`.
    pub fn disconnect(&mut self, c: usize, reason: ReasonCode, properties: Properties) {
        let disconnect = Disconnect { reason, properties: properties.into() };
        self.send(c, &Packet::Disconnect(disconnect));
    }

    /// The network drops `c`'s connection: the core hears of it as the IO layer
    /// would tell it (the socket failed).
    pub fn drop_conn(&mut self, c: usize) {
        let Some(key) = self.clients[c].conn.take() else { return };
        self.clients[c].input.clear();
        self.conns.remove(&key);
        self.cores[key.0].handle_closed(self.now, key.1, Close::Io);
        self.check();
    }

    /// `c` acknowledges the n-th (modulo) message it holds.
    pub fn ack(&mut self, c: usize, n: usize) {
        if self.clients[c].conn.is_none() {
            return;
        }
        self.clients[c].ack(n);
        self.feed(c);
        self.check();
    }

    /// Whether a message waits for `c`'s acknowledgement.
    pub fn waits_for_ack(&self, c: usize) -> bool {
        self.clients[c].waits()
    }

    /// How many of its own messages `c` has not seen completed.
    pub fn outgoing(&self, c: usize) -> usize {
        self.clients[c].outgoing.len()
    }

    /// Hands `c`'s pending bytes to its core.
    fn feed(&mut self, c: usize) -> bool {
        let now = self.now;
        let client = &mut self.clients[c];
        let Some((shard, id)) = client.conn else {
            client.input.clear();
            return false;
        };
        if client.input.is_empty() {
            return false;
        }
        let before = client.input.len();
        self.cores[shard].handle_input(now, id, &mut client.input);
        client.input.len() != before
    }

    // ---- the IO layer's part ---------------------------------------------------

    /// One pass on every core: held input offered again, `end_pass`, batches onto
    /// the rings, output to the clients. Returns whether anything moved.
    fn pass(&mut self) -> bool {
        let mut moved = false;
        for c in 0..self.clients.len() {
            moved |= self.feed(c);
        }
        let n = self.cores.len();
        for shard in 0..n {
            self.cores[shard].end_pass(self.now);
            while let Some(batch) = self.cores[shard].poll_batch() {
                let dest = match &batch {
                    Batch::Data(dest, _) | Batch::Ctrl(dest, _) => *dest,
                };
                assert_ne!(dest, shard, "nothing is sent to the own shard");
                self.rings[shard * n + dest].push_back(batch);
                moved = true;
            }
            while let Some(id) = self.cores[shard].poll_wake() {
                moved = true;
                self.wake(shard, id);
            }
        }
        self.check();
        moved
    }

    /// A woken connection: its output goes to its client; a close decision ends it
    /// after its last words.
    fn wake(&mut self, shard: usize, id: ConnId) {
        let now = self.now;
        let owner = *self.conns.get(&(shard, id)).expect("a connection the harness made");
        let core = &mut self.cores[shard];
        if let Some(close) = core.close_reason(id).cloned() {
            let last = core.take_last_words(id);
            core.handle_closed(now, id, close.clone());
            self.conns.remove(&(shard, id));
            if let Some(c) = owner {
                let client = &mut self.clients[c];
                client.conn = None;
                client.input.clear();
                client.closed = Some(close);
                if let Some(last) = last {
                    client.read(last);
                }
            }
            return;
        }
        let Some(output) = core.take_output(id) else { return };
        // A socket the client left is not read, so nothing on it completes.
        if let Some(c) = owner {
            let written = output.clone();
            self.clients[c].read(output);
            self.cores[shard].handle_written(now, id, written);
            self.feed(c);
        }
    }

    /// Moves one batch from a random non-empty ring whose destination takes it.
    fn deliver_one(&mut self) -> bool {
        let n = self.cores.len();
        let ready: Vec<usize> = (0..self.rings.len())
            .filter(|&r| match self.rings[r].front() {
                Some(Batch::Data(..)) => !self.cores[r % n].rings_paused(),
                Some(Batch::Ctrl(..)) => true,
                None => false,
            })
            .collect();
        if ready.is_empty() {
            return false;
        }
        let ring = ready[self.rng.usize(..ready.len())];
        let batch = self.rings[ring].pop_front().expect("non-empty");
        let now = self.now;
        let core = &mut self.cores[ring % n];
        match batch {
            Batch::Data(_, items) => {
                for item in items {
                    core.handle_data(now, item);
                }
                core.data_batch_taken(ring / n);
                core.refresh_gates(now);
            }
            Batch::Ctrl(_, items) => {
                for item in items {
                    core.handle_ctrl(now, item);
                }
            }
        }
        self.check();
        true
    }

    /// Runs passes and moves batches until nothing moves.
    pub fn settle(&mut self) {
        for _ in 0..ROUNDS_MAX {
            let passed = self.pass();
            if !self.deliver_one() && !passed {
                return;
            }
        }
        panic!("the node never settles");
    }

    /// Moves up to `batches` ring batches, a pass after each: the rest stays in
    /// flight.
    pub fn deliver(&mut self, batches: usize) {
        self.pass();
        for _ in 0..batches {
            if !self.deliver_one() {
                break;
            }
            self.pass();
        }
    }

    /// Lets `ms` virtual milliseconds pass, the node keeping up: a tick on every
    /// core each 100 ms, and everything settled after each.
    pub fn advance(&mut self, ms: u64) {
        self.advance_by(ms, true);
    }

    /// Lets `ms` pass with passes and ticks, but leaves ring batches in flight
    /// (shards slow to hear from each other).
    pub fn advance_held(&mut self, ms: u64) {
        self.advance_by(ms, false);
    }

    fn advance_by(&mut self, ms: u64, settle: bool) {
        let target = self.now.ms + ms;
        while self.next_tick_ms <= target {
            self.set_time(self.next_tick_ms);
            for core in &mut self.cores {
                core.handle_tick(self.now);
            }
            self.next_tick_ms += TICK_MS;
            if settle {
                self.settle();
            } else {
                self.pass();
            }
        }
        self.set_time(target);
        if settle {
            self.settle();
        } else {
            self.pass();
        }
    }

    fn set_time(&mut self, ms: u64) {
        self.now = Now { ms, unix_us: EPOCH_US + ms * 1000 };
    }

    fn check(&self) {
        for core in &self.cores {
            assert!(core.check_invariants(), "shard {} broke an invariant", core.id);
        }
    }
}
