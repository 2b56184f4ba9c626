//! MQTT control packets as plain data.
//!
//! One struct per packet, gathered in [`Packet`]. Every field that the wire format
//! constrains is a type that can only be built valid ([`PacketId`], [`TopicName`],
//! [`TopicFilter`], [`QoS`]), so the encoder never re-checks and the router never
//! re-validates.
//!
//! The structs are shaped for MQTT 5: acknowledgements are structs (a reason code and
//! properties join them later), SUBSCRIBE carries per-filter options, and the
//! protocol level travels with CONNECT.
//!
//! `Debug` of a PUBLISH shows the payload length, never its bytes.

use std::fmt;
use std::num::NonZeroU16;

use bytes::Bytes;
use bytestring::ByteString;

use super::topic;
use super::ProtocolViolation;

/// The protocol level a client speaks, from CONNECT's protocol name and level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V311,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
        }
    }
}

/// Quality of service of a message or a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// Fire and forget.
    AtMostOnce = 0,
    /// Acknowledged delivery; duplicates possible.
    AtLeastOnce = 1,
    /// Exactly-once delivery through the PUBREC/PUBREL/PUBCOMP handshake.
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two QoS bits; 3 is malformed [MQTT-3.3.1-4].
    pub fn from_bits(bits: u8) -> Option<QoS> {
        match bits {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A packet identifier: never zero [MQTT-2.3.1-1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId(pub NonZeroU16);

impl PacketId {
    /// Builds an id; `None` for zero.
    pub fn new(value: u16) -> Option<PacketId> {
        NonZeroU16::new(value).map(PacketId)
    }

    /// The id as it goes on the wire.
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

/// A validated topic name: UTF-8 without U+0000, 1..=65535 bytes, no wildcards
/// [MQTT-4.7.3-1], [MQTT-1.5.3-2], [MQTT-3.3.2-2].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(ByteString);

impl TopicName {
    /// The topic as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared bytes behind the topic (cloning is a refcount bump).
    pub fn as_byte_string(&self) -> &ByteString {
        &self.0
    }

    /// A copy in its own allocation. A decoded topic is a slice of the read buffer
    /// and keeps all of it alive; what is kept for long (retained messages, wills)
    /// detaches first.
    pub fn detached(&self) -> TopicName {
        TopicName(ByteString::from(&*self.0))
    }
}

impl TryFrom<ByteString> for TopicName {
    type Error = ProtocolViolation;
    fn try_from(value: ByteString) -> Result<Self, Self::Error> {
        topic::validate_topic_name(&value)?;
        Ok(TopicName(value))
    }
}

impl TryFrom<&str> for TopicName {
    type Error = ProtocolViolation;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        TopicName::try_from(ByteString::from(value))
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated topic filter: a topic name that may hold `+` levels and a final `#`
/// level [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(ByteString);

impl TopicFilter {
    /// The filter as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the filter holds `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.0.bytes().any(|b| b == b'+' || b == b'#')
    }

    /// A copy in its own allocation (see [`TopicName::detached`]): subscriptions
    /// live as long as their session.
    pub fn detached(&self) -> TopicFilter {
        TopicFilter(ByteString::from(&*self.0))
    }
}

impl TryFrom<ByteString> for TopicFilter {
    type Error = ProtocolViolation;
    fn try_from(value: ByteString) -> Result<Self, Self::Error> {
        topic::validate_topic_filter(&value)?;
        Ok(TopicFilter(value))
    }
}

impl TryFrom<&str> for TopicFilter {
    type Error = ProtocolViolation;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        TopicFilter::try_from(ByteString::from(value))
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every MQTT 3.1/3.1.1 control packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// Client request to connect to the server [MQTT-3.1].
    Connect(Connect),
    /// Server answer to a CONNECT [MQTT-3.2].
    ConnAck(ConnAck),
    /// An application message, in either direction [MQTT-3.3].
    Publish(Publish),
    /// Acknowledgement of a QoS 1 PUBLISH [MQTT-3.4].
    PubAck(Ack),
    /// First acknowledgement of a QoS 2 PUBLISH [MQTT-3.5].
    PubRec(Ack),
    /// Second step of the QoS 2 handshake, answering PUBREC [MQTT-3.6].
    PubRel(Ack),
    /// Last step of the QoS 2 handshake, answering PUBREL [MQTT-3.7].
    PubComp(Ack),
    /// Client request to subscribe to one or more filters [MQTT-3.8].
    Subscribe(Subscribe),
    /// Server answer to a SUBSCRIBE [MQTT-3.9].
    SubAck(SubAck),
    /// Client request to remove one or more subscriptions [MQTT-3.10].
    Unsubscribe(Unsubscribe),
    /// Server answer to an UNSUBSCRIBE [MQTT-3.11].
    UnsubAck(Ack),
    /// Client keep-alive probe [MQTT-3.12].
    PingReq,
    /// Server answer to a PINGREQ [MQTT-3.13].
    PingResp,
    /// Client notice that it is closing the connection cleanly [MQTT-3.14].
    Disconnect,
}

/// CONNECT [MQTT-3.1].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version, from the protocol name and level [MQTT-3.1.2.1], [MQTT-3.1.2.2].
    pub protocol: ProtocolVersion,
    /// CleanSession flag [MQTT-3.1.2-4..6].
    pub clean_session: bool,
    /// Keep-alive in seconds; 0 turns keep-alive off [MQTT-3.1.2-24].
    pub keep_alive_secs: u16,
    /// Client identifier; may be empty in 3.1.1 [MQTT-3.1.3-6].
    pub client_id: ByteString,
    /// The will message, present when the Will Flag is set [MQTT-3.1.2.5].
    pub will: Option<LastWill>,
    /// User name, present when the User Name Flag is set [MQTT-3.1.2.8].
    pub username: Option<ByteString>,
    /// Binary data, not necessarily UTF-8.
    pub password: Option<Bytes>,
}

/// The will message carried by CONNECT [MQTT-3.1.2-8].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastWill {
    /// Topic the will is published to [MQTT-3.1.3.2].
    pub topic: TopicName,
    /// Application message of the will [MQTT-3.1.3.3].
    pub payload: Bytes,
    /// QoS the will is published with [MQTT-3.1.2.6].
    pub qos: QoS,
    /// Whether the will is published as a retained message [MQTT-3.1.2.7].
    pub retain: bool,
}

/// CONNACK return codes of 3.1.1 [MQTT-3.2.2.3].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectReturnCode {
    /// Connection accepted.
    Accepted = 0,
    /// The server does not support the requested protocol level.
    UnacceptableProtocolVersion = 1,
    /// The client identifier is valid UTF-8 but not allowed by the server.
    IdentifierRejected = 2,
    /// The network connection works but the MQTT service is unavailable.
    ServerUnavailable = 3,
    /// The user name or password is malformed or wrong.
    BadUsernameOrPassword = 4,
    /// The client is not authorized to connect.
    NotAuthorized = 5,
}

/// CONNACK [MQTT-3.2].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server already held a session for the client [MQTT-3.2.2.2].
    pub session_present: bool,
    /// Whether the connection is accepted, and if not why [MQTT-3.2.2.3].
    pub code: ConnectReturnCode,
}

/// PUBLISH [MQTT-3.3]. The payload is a `Bytes` slice of the read buffer: cloning it
/// for every subscriber bumps a refcount and copies nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag: set when this may be a re-delivery of an earlier attempt [MQTT-3.3.1.1].
    pub dup: bool,
    /// Delivery QoS [MQTT-3.3.1.2]; bits value 3 is malformed [MQTT-3.3.1-4].
    pub qos: QoS,
    /// RETAIN flag: whether the server keeps the message for future subscribers [MQTT-3.3.1.3].
    pub retain: bool,
    /// Topic the message is published to [MQTT-3.3.2.1].
    pub topic: TopicName,
    /// Present exactly when `qos > 0` [MQTT-2.3.1-5].
    pub packet_id: Option<PacketId>,
    /// Application message bytes, possibly empty [MQTT-3.3.3].
    pub payload: Bytes,
}

impl fmt::Debug for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publish")
            .field("dup", &self.dup)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("topic", &self.topic)
            .field("packet_id", &self.packet_id)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP and UNSUBACK: a packet id (and, in MQTT 5, a
/// reason code and properties).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// Identifier of the packet being acknowledged.
    pub packet_id: PacketId,
}

/// SUBSCRIBE [MQTT-3.8]: at least one filter [MQTT-3.8.3-3].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Identifier echoed back by the SUBACK [MQTT-3.8.4-2].
    pub packet_id: PacketId,
    /// Requested filters with their QoS, in packet order.
    pub filters: Vec<SubscribeFilter>,
}

/// One filter of a SUBSCRIBE with its requested options (MQTT 5 adds more options).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Filter to subscribe to.
    pub filter: TopicFilter,
    /// Maximum QoS requested for messages matching the filter.
    pub qos: QoS,
}

/// One return code of a SUBACK [MQTT-3.9.3].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubAckCode {
    /// Subscription accepted with this maximum QoS.
    Granted(QoS),
    /// Subscription refused (return code 0x80).
    Failure,
}

/// SUBACK [MQTT-3.9]: one code per filter, in order [MQTT-3.9.3-1].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    /// Identifier of the SUBSCRIBE being acknowledged.
    pub packet_id: PacketId,
    /// One return code per requested filter, in the SUBSCRIBE's order.
    pub codes: Vec<SubAckCode>,
}

/// UNSUBSCRIBE [MQTT-3.10]: at least one filter [MQTT-3.10.3-2].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Identifier echoed back by the UNSUBACK.
    pub packet_id: PacketId,
    /// Filters to remove, in packet order.
    pub filters: Vec<TopicFilter>,
}
