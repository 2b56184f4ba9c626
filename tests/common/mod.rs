//! Shared helpers of the integration tests: a broker per test, client ids placed on a
//! chosen shard, and a small blocking MQTT client over a raw `TcpStream`.
//!
//! Every wait is bounded by [`WAIT`]; nothing here sleeps to wait for a condition.
//! Where a test must know that the broker has processed something, it uses a
//! barrier instead of a delay:
//! - [`Raw::sync`]: PINGREQ -> PINGRESP on one connection. The broker answers a
//!   connection's packets in order and writes its output in order, so everything it
//!   queued for this client before the PINGREQ arrives before the PINGRESP.
//! - a probe subscriber on the same shard as the client under test: a message reaches
//!   every subscriber of a shard in the same pass, so once the probe has it, so has
//!   the (possibly offline) session under test.
//! - [`Raw::disconnect`] / [`Raw::drop_connection`] wait until the broker closes the
//!   socket, which it does after it has taken the session offline.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::sync::Once;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use shardmq::protocol::codec::{self, PACKET_SIZE_MAX};
use shardmq::protocol::{
    Ack, ConnAck, Connect, DecodeError, Disconnect, Limits, Packet, PacketId, Properties,
    ProtocolVersion, Publish, PublishQoS, PublishTopic, QoS, ReasonCode, Subscribe,
    SubscribeFilter, TopicFilter, TopicName, Unsubscribe,
};
use shardmq::router::owner_shard;
use shardmq::{Broker, BrokerHandle, Config};

/// The longest any test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long a test listens to be sure that something does NOT arrive, where no
/// barrier can tell (e.g. a connection that is expected to stay silent).
pub const QUIET: Duration = Duration::from_millis(300);

/// Shards of every test broker.
pub const SHARDS: usize = 2;

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// Starts a broker with `config` on 2 shards, listening on `127.0.0.1:0`.
pub fn start(config: Config) -> BrokerHandle {
    init_logging();
    let config = Config {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        cores: NonZeroUsize::new(SHARDS),
        cpus: None,
        ..config
    };
    Broker::new(config).expect("valid config").start().expect("broker starts")
}

/// The address a test broker listens on.
pub fn addr(broker: &BrokerHandle) -> SocketAddr {
    broker.local_addrs()[0]
}

/// A client id starting with `prefix` whose session lives on `shard`.
pub fn client_id_on_shard(prefix: &str, shard: usize, shards: usize) -> String {
    (0u32..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| owner_shard(id.as_bytes(), shards) == shard)
        .expect("some id lands on every shard")
}

/// A topic starting with `prefix` whose retained messages live on `shard`.
pub fn topic_on_shard(prefix: &str, shard: usize, shards: usize) -> String {
    (0u32..)
        .map(|i| format!("{prefix}/{i}"))
        .find(|t| owner_shard(t.as_bytes(), shards) == shard)
        .expect("some topic lands on every shard")
}

pub fn topic(name: &str) -> TopicName {
    TopicName::try_from(name).expect("valid topic name")
}

pub fn filter(name: &str) -> TopicFilter {
    TopicFilter::try_from(name).expect("valid topic filter")
}

pub fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("non-zero packet id")
}

/// A PUBLISH packet.
pub fn publish_packet(
    topic_name: &str,
    payload: &[u8],
    qos: QoS,
    packet_id: Option<u16>,
    dup: bool,
    retain: bool,
) -> Packet {
    let qos = match packet_id {
        Some(id) => PublishQoS::new(qos, pid(id)),
        None => {
            assert_eq!(qos, QoS::AtMostOnce, "a packet id above QoS 0");
            PublishQoS::AtMostOnce
        }
    };
    Packet::Publish(Publish {
        dup,
        qos,
        retain,
        topic: PublishTopic::Name(topic(topic_name)),
        payload: Bytes::copy_from_slice(payload),
        properties: None,
    })
}

/// A 3.1.1 CONNECT without will or credentials, keep-alive off.
pub fn connect_packet(client_id: &str, clean_session: bool) -> Connect {
    Connect {
        protocol: ProtocolVersion::V311,
        clean_session,
        keep_alive_secs: 0,
        client_id: ByteString::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default().into(),
    }
}

/// The encoded bytes of `packet`, in the MQTT 3.1.1 layout.
pub fn encode(packet: &Packet) -> Vec<u8> {
    encode_as(packet, ProtocolVersion::V311)
}

/// The encoded bytes of `packet` in the layout of `protocol`.
pub fn encode_as(packet: &Packet, protocol: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    codec::encode(packet, protocol, &mut buf);
    buf.to_vec()
}

/// Why no packet came back.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing complete arrived in time.
    Timeout,
    /// The broker closed the connection (or reset it).
    Closed,
    /// The broker sent bytes that do not decode.
    Decode(DecodeError),
}

/// A blocking MQTT client over a raw TCP connection: sends exactly what it is told
/// and shows exactly what comes back.
#[derive(Debug)]
pub struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    /// Packets received while waiting for another (a PUBLISH that came before the
    /// SUBACK), returned first by the next receive.
    early: VecDeque<Packet>,
    next_id: u16,
    /// The protocol of the CONNECT sent (3.1.1 until one is): the layout of
    /// everything after it.
    protocol: ProtocolVersion,
}

impl Raw {
    /// Opens a TCP connection; sends nothing.
    pub fn open(addr: SocketAddr) -> Raw {
        Raw::from_stream(TcpStream::connect(addr).expect("connect to the broker"))
    }

    /// A client on a connection opened elsewhere (e.g. with small socket buffers).
    pub fn from_stream(stream: TcpStream) -> Raw {
        stream.set_nodelay(true).expect("set_nodelay");
        Raw {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            early: VecDeque::new(),
            next_id: 0,
            protocol: ProtocolVersion::V311,
        }
    }

    /// Connects with `connect` and returns the client with the CONNACK, whatever it
    /// says.
    pub fn connect_with(addr: SocketAddr, connect: Connect) -> (Raw, ConnAck) {
        let mut raw = Raw::open(addr);
        raw.send(&Packet::Connect(connect));
        match raw.recv() {
            Packet::ConnAck(connack) => (raw, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects as `client_id` (3.1.1, keep-alive off); asserts the CONNACK accepts.
    pub fn connect(addr: SocketAddr, client_id: &str, clean_session: bool) -> (Raw, ConnAck) {
        let (raw, connack) = Raw::connect_with(addr, connect_packet(client_id, clean_session));
        assert_eq!(connack.reason, ReasonCode::SUCCESS, "CONNACK of {client_id}");
        (raw, connack)
    }

    /// A fresh packet id (1, 2, 3, ...), skipping 0.
    pub fn next_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1);
        if self.next_id == 0 {
            self.next_id = 1;
        }
        self.next_id
    }

    pub fn send(&mut self, packet: &Packet) {
        if let Packet::Connect(connect) = packet {
            self.protocol = connect.protocol;
        }
        self.send_bytes(&encode_as(packet, self.protocol));
    }

    /// The layout of what follows a CONNECT sent as raw bytes.
    pub fn set_protocol(&mut self, protocol: ProtocolVersion) {
        self.protocol = protocol;
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the broker");
    }

    /// The next packet, waiting at most `timeout`.
    pub fn recv_within(&mut self, timeout: Duration) -> Result<Packet, RecvError> {
        if let Some(packet) = self.early.pop_front() {
            return Ok(packet);
        }
        let deadline = Instant::now() + timeout;
        let limits = Limits { packet_size_max: PACKET_SIZE_MAX, protocol: self.protocol };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match codec::decode(&mut self.buf, &limits) {
                Ok(Some(packet)) => return Ok(packet),
                Ok(None) => {}
                Err(e) => return Err(RecvError::Decode(e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvError::Timeout);
            }
            self.stream.set_read_timeout(Some(left)).expect("set_read_timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Err(RecvError::Closed),
            }
        }
    }

    /// Exactly `n` raw bytes from the broker (for byte-exact assertions), waiting at
    /// most [`WAIT`].
    pub fn recv_bytes(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        let mut chunk = [0u8; 16 * 1024];
        while self.buf.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "expected {n} bytes, got {:02x?}", &self.buf[..]);
            self.stream.set_read_timeout(Some(left)).expect("set_read_timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("closed after {:02x?}, expected {n} bytes", &self.buf[..]),
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("read failed after {:02x?}: {e}", &self.buf[..]),
            }
        }
        self.buf.split_to(n).to_vec()
    }

    /// The next packet; panics if none comes within [`WAIT`].
    pub fn recv(&mut self) -> Packet {
        match self.recv_within(WAIT) {
            Ok(packet) => packet,
            Err(e) => panic!("expected a packet within {WAIT:?}: {e:?}"),
        }
    }

    /// The next packet, which must be a PUBLISH.
    pub fn recv_publish(&mut self) -> Publish {
        match self.recv() {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives for [`QUIET`] (used only where no barrier can
    /// tell, see the module docs).
    pub fn assert_silent(&mut self) {
        match self.recv_within(QUIET) {
            Err(RecvError::Timeout) => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Asserts that the broker closes the connection within [`WAIT`] without sending
    /// another packet.
    pub fn expect_closed(&mut self) {
        match self.recv_within(WAIT) {
            Err(RecvError::Closed) => {}
            other => panic!("expected the broker to close the connection, got {other:?}"),
        }
    }

    /// The packets that arrive until the broker closes the connection (within
    /// [`WAIT`]).
    pub fn packets_until_closed(&mut self) -> Vec<Packet> {
        let deadline = Instant::now() + WAIT;
        let mut packets = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left) {
                Ok(packet) => packets.push(packet),
                Err(RecvError::Closed) => return packets,
                Err(e) => panic!("expected the connection to close; {e:?} after {packets:?}"),
            }
        }
    }

    /// Whether the broker has closed the connection (reads for at most [`WAIT`];
    /// packets that arrive meanwhile are discarded).
    pub fn is_closed_by_broker(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left) {
                Ok(_) => {}
                Err(RecvError::Closed) => return true,
                Err(_) => return false,
            }
        }
    }

    /// PINGREQ, then every packet up to the PINGRESP: everything the broker had
    /// queued for this client before it read the PINGREQ.
    pub fn sync(&mut self) -> Vec<Packet> {
        self.send(&Packet::PingReq);
        let mut before = Vec::new();
        loop {
            match self.recv() {
                Packet::PingResp => return before,
                other => before.push(other),
            }
        }
    }

    /// SUBSCRIBE and its SUBACK's return codes.
    pub fn subscribe(&mut self, filters: &[(&str, QoS)]) -> Vec<ReasonCode> {
        let id = self.next_id();
        let filters =
            filters.iter().map(|(f, qos)| SubscribeFilter::new(filter(f), *qos)).collect();
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: pid(id),
            filters,
            properties: Properties::default().into(),
        }));
        // The server may send matching PUBLISHes (e.g. retained messages) before the
        // SUBACK (MQTT 3.1.1 section 3.8.4); they are kept for the next receive.
        let mut early = Vec::new();
        loop {
            match self.recv() {
                Packet::SubAck(suback) => {
                    assert_eq!(suback.packet_id, pid(id), "SUBACK id [MQTT-3.8.4-2]");
                    self.early.extend(early);
                    return suback.codes;
                }
                packet @ Packet::Publish(_) => early.push(packet),
                other => panic!("expected SUBACK, got {other:?}"),
            }
        }
    }

    /// UNSUBSCRIBE and its UNSUBACK.
    pub fn unsubscribe(&mut self, filters: &[&str]) {
        let id = self.next_id();
        let filters = filters.iter().map(|f| filter(f)).collect();
        self.send(&Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(id),
            filters,
            properties: Properties::default().into(),
        }));
        match self.recv() {
            Packet::UnsubAck(ack) => assert_eq!(ack.packet_id, pid(id), "[MQTT-3.10.4-4]"),
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Sends a PUBLISH (a fresh packet id at QoS 1 and 2) and returns the id.
    pub fn publish_no_wait(&mut self, topic: &str, payload: &[u8], qos: QoS) -> Option<u16> {
        let id = (qos != QoS::AtMostOnce).then(|| self.next_id());
        self.send(&publish_packet(topic, payload, qos, id, false, false));
        id
    }

    /// Publishes and completes the exchange (PUBACK, or PUBREC/PUBREL/PUBCOMP). For a
    /// client that only publishes: any other packet is a failure.
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS) {
        self.publish_retain(topic, payload, qos, false);
    }

    /// [`Raw::publish`] with the RETAIN flag.
    pub fn publish_retain(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let id = (qos != QoS::AtMostOnce).then(|| self.next_id());
        self.send(&publish_packet(topic, payload, qos, id, false, retain));
        let Some(id) = id.map(pid) else { return };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                assert_eq!(self.recv(), Packet::PubAck(Ack::new(id)));
            }
            QoS::ExactlyOnce => {
                assert_eq!(self.recv(), Packet::PubRec(Ack::new(id)));
                self.send(&Packet::PubRel(Ack::new(id)));
                assert_eq!(self.recv(), Packet::PubComp(Ack::new(id)));
            }
        }
    }

    /// Receives `n` PUBLISHes, acknowledging as a well-behaved client does (PUBACK;
    /// PUBREC, then PUBCOMP for each PUBREL).
    pub fn receive_acking(&mut self, n: usize) -> Vec<Publish> {
        let mut received = Vec::with_capacity(n);
        while received.len() < n {
            let packet = self.recv();
            if let Some(p) = self.ack(packet) {
                received.push(p);
            }
        }
        received
    }

    /// Receives and acknowledges PUBLISHes until one carries `payload`; returns them
    /// all, that one included.
    pub fn receive_until_payload(&mut self, payload: &[u8]) -> Vec<Publish> {
        let mut received = Vec::new();
        loop {
            let packet = self.recv();
            if let Some(p) = self.ack(packet) {
                let last = p.payload == payload;
                received.push(p);
                if last {
                    return received;
                }
            }
        }
    }

    /// Acknowledges `packet` as a well-behaved client does; returns it if it is a
    /// PUBLISH. Any other packet than PUBLISH or PUBREL is a failure.
    pub fn ack(&mut self, packet: Packet) -> Option<Publish> {
        match packet {
            Packet::Publish(p) => {
                match p.qos {
                    PublishQoS::AtLeastOnce(id) => self.send(&Packet::PubAck(Ack::new(id))),
                    PublishQoS::ExactlyOnce(id) => self.send(&Packet::PubRec(Ack::new(id))),
                    PublishQoS::AtMostOnce => {}
                }
                Some(p)
            }
            Packet::PubRel(ack) => {
                self.send(&Packet::PubComp(ack));
                None
            }
            other => panic!("expected PUBLISH or PUBREL, got {other:?}"),
        }
    }

    /// DISCONNECT, then waits until the broker closes the socket, which it does after
    /// taking the session offline.
    pub fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Disconnect::default()));
        let _ = self.stream.shutdown(Shutdown::Write);
        let packets = self.packets_until_closed();
        assert!(
            packets.iter().all(|p| matches!(p, Packet::Publish(_) | Packet::PubRel(_))),
            "unexpected packets before the close: {packets:?}"
        );
    }

    /// Ends the connection without DISCONNECT (a network failure, as far as the broker
    /// knows) and waits until the broker has closed it. Returns what arrived
    /// meanwhile, unacknowledged.
    pub fn drop_connection(mut self) -> Vec<Packet> {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.packets_until_closed()
    }
}

/// A clean-session client on `shard` subscribed to `filter` at QoS 0, used as a
/// barrier: once it has a message, every session on that shard has it too.
pub fn probe(addr: SocketAddr, shard: usize, prefix: &str, filter: &str) -> Raw {
    let id = client_id_on_shard(prefix, shard, SHARDS);
    let (mut raw, _) = Raw::connect(addr, &id, true);
    assert_eq!(
        raw.subscribe(&[(filter, QoS::AtMostOnce)]),
        vec![ReasonCode::granted(QoS::AtMostOnce)]
    );
    raw
}

/// The payload as text, for messages.
pub fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

/// Parses a payload written as `<prefix><number>`.
pub fn seq(payload: &[u8], prefix: &str) -> u32 {
    let text = std::str::from_utf8(payload).expect("utf-8 payload");
    text.strip_prefix(prefix)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("payload {text:?} is not {prefix}<number>"))
}
