//! MQTT control packets as plain data.
//!
//! One struct per packet, gathered in [`Packet`]. Every field that the wire format
//! constrains is a type that can only be built valid ([`PacketId`], [`TopicName`],
//! [`TopicFilter`], [`QoS`]), so the encoder never re-checks and the router never
//! re-validates.
//!
//! One set of structs serves MQTT 3.1, 3.1.1 and 5.0: the MQTT 5 fields (reason
//! codes, [`Properties`], subscription options) take their defaults in MQTT 3, and
//! the codec writes each packet in the layout of the connection's protocol level.
//!
//! `Debug` of a PUBLISH shows the payload length, never its bytes.

use std::fmt;
use std::num::NonZeroU16;

use bytes::Bytes;
use bytestring::ByteString;

use super::topic;
use super::ProtocolViolation;

/// The protocol level a client speaks, from CONNECT's protocol name and level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V311,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The version whose CONNECT carries protocol level `level`, if any.
    pub fn from_level(level: u8) -> Option<ProtocolVersion> {
        match level {
            3 => Some(ProtocolVersion::V31),
            4 => Some(ProtocolVersion::V311),
            5 => Some(ProtocolVersion::V5),
            _ => None,
        }
    }

    /// Whether packets carry reason codes and properties (MQTT 5).
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// An MQTT 5 reason code [MQTT-2.4]: the outcome of an operation. Values below 0x80
/// mean success; 0x80 and above mean failure. MQTT 3.1.1 return codes are mapped
/// onto these (CONNACK, SUBACK) by the codec.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReasonCode(pub u8);

macro_rules! reason_codes {
    ($($name:ident = $value:expr, $text:expr;)*) => {
        impl ReasonCode {
            $(
                #[doc = $text]
                pub const $name: ReasonCode = ReasonCode($value);
            )*

            /// The specification's name of the code, for logs.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $($value => $text,)*
                    _ => "Unknown reason code",
                }
            }
        }
    };
}

reason_codes! {
    SUCCESS = 0x00, "Success";
    GRANTED_QOS_1 = 0x01, "Granted QoS 1";
    GRANTED_QOS_2 = 0x02, "Granted QoS 2";
    DISCONNECT_WITH_WILL = 0x04, "Disconnect with Will Message";
    NO_MATCHING_SUBSCRIBERS = 0x10, "No matching subscribers";
    NO_SUBSCRIPTION_EXISTED = 0x11, "No subscription existed";
    CONTINUE_AUTHENTICATION = 0x18, "Continue authentication";
    RE_AUTHENTICATE = 0x19, "Re-authenticate";
    UNSPECIFIED_ERROR = 0x80, "Unspecified error";
    MALFORMED_PACKET = 0x81, "Malformed Packet";
    PROTOCOL_ERROR = 0x82, "Protocol Error";
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83, "Implementation specific error";
    UNSUPPORTED_PROTOCOL_VERSION = 0x84, "Unsupported Protocol Version";
    CLIENT_IDENTIFIER_NOT_VALID = 0x85, "Client Identifier not valid";
    BAD_USER_NAME_OR_PASSWORD = 0x86, "Bad User Name or Password";
    NOT_AUTHORIZED = 0x87, "Not authorized";
    SERVER_UNAVAILABLE = 0x88, "Server unavailable";
    SERVER_BUSY = 0x89, "Server busy";
    BANNED = 0x8A, "Banned";
    SERVER_SHUTTING_DOWN = 0x8B, "Server shutting down";
    BAD_AUTHENTICATION_METHOD = 0x8C, "Bad authentication method";
    KEEP_ALIVE_TIMEOUT = 0x8D, "Keep Alive timeout";
    SESSION_TAKEN_OVER = 0x8E, "Session taken over";
    TOPIC_FILTER_INVALID = 0x8F, "Topic Filter invalid";
    TOPIC_NAME_INVALID = 0x90, "Topic Name invalid";
    PACKET_IDENTIFIER_IN_USE = 0x91, "Packet Identifier in use";
    PACKET_IDENTIFIER_NOT_FOUND = 0x92, "Packet Identifier not found";
    RECEIVE_MAXIMUM_EXCEEDED = 0x93, "Receive Maximum exceeded";
    TOPIC_ALIAS_INVALID = 0x94, "Topic Alias invalid";
    PACKET_TOO_LARGE = 0x95, "Packet too large";
    MESSAGE_RATE_TOO_HIGH = 0x96, "Message rate too high";
    QUOTA_EXCEEDED = 0x97, "Quota exceeded";
    ADMINISTRATIVE_ACTION = 0x98, "Administrative action";
    PAYLOAD_FORMAT_INVALID = 0x99, "Payload format invalid";
    RETAIN_NOT_SUPPORTED = 0x9A, "Retain not supported";
    QOS_NOT_SUPPORTED = 0x9B, "QoS not supported";
    USE_ANOTHER_SERVER = 0x9C, "Use another server";
    SERVER_MOVED = 0x9D, "Server moved";
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E, "Shared Subscriptions not supported";
    CONNECTION_RATE_EXCEEDED = 0x9F, "Connection rate exceeded";
    MAXIMUM_CONNECT_TIME = 0xA0, "Maximum connect time";
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1, "Subscription Identifiers not supported";
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2, "Wildcard Subscriptions not supported";
}

impl ReasonCode {
    /// Whether the code reports a failure (0x80 and above) [MQTT-2.4].
    pub fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// The granted-QoS code of a SUBACK.
    pub fn granted(qos: QoS) -> ReasonCode {
        ReasonCode(qos as u8)
    }
}

impl fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02X} ({})", self.0, self.name())
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02X} {}", self.0, self.name())
    }
}

/// Generates [`Properties`] (one field per row of the property table), what an empty
/// one reads as, and [`Properties::detached`].
macro_rules! properties_struct {
    ($(
        $(#[$doc:meta])*
        $id:literal $name:ident $field:ident: $kind:ident $($check:ident)? $text:literal,
        [$($carrier:ident $section:literal),* $(,)?];
    )*) => {
        /// The properties of an MQTT 5 packet [MQTT-2.2.2], one field per property
        /// identifier, as `super::property_table` declares them. Which identifiers a
        /// packet may carry is the codec's business: it refuses any other, and any
        /// duplicate except User Property (and Subscription Identifier in a
        /// server-to-client PUBLISH). An MQTT 3 packet has none: every field is empty.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Properties {
            $($(#[$doc])* pub $field: property_type!($kind),)*
        }

        /// What an empty [`Props`] reads as.
        static EMPTY_PROPERTIES: Properties = Properties {
            $($field: property_empty!($kind),)*
        };

        impl Properties {
            /// A copy whose strings and binary data have their own allocations. Decoded
            /// properties are slices of the read buffer and keep all of it alive; what
            /// is kept for long (retained messages, wills) detaches first.
            pub fn detached(&self) -> Properties {
                Properties { $($field: property_detached!($kind, &self.$field),)* }
            }
        }
    };
}

/// The empty value of a property field, by value type.
macro_rules! property_empty {
    (vbi_list) => {
        Vec::new()
    };
    (pair_list) => {
        Vec::new()
    };
    ($kind:ident) => {
        None
    };
}

/// A copy of a property field with its own allocations, by value type.
macro_rules! property_detached {
    (string, $v:expr) => {
        $v.as_deref().map(ByteString::from)
    };
    (binary, $v:expr) => {
        $v.as_deref().map(Bytes::copy_from_slice)
    };
    (topic, $v:expr) => {
        $v.as_ref().map(TopicName::detached)
    };
    (vbi_list, $v:expr) => {
        $v.clone()
    };
    (pair_list, $v:expr) => {
        $v.iter().map(|(k, v)| (ByteString::from(&**k), ByteString::from(&**v))).collect()
    };
    ($kind:ident, $v:expr) => {
        *$v
    };
}

mqtt5_properties!(properties_struct);

impl Properties {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        *self == EMPTY_PROPERTIES
    }
}

/// A packet's MQTT 5 properties behind one pointer. Empty (every MQTT 3 packet,
/// most MQTT 5 ones) it allocates nothing and keeps [`Packet`] small: a
/// [`Properties`] is some 400 bytes, and every decoded packet would carry (and
/// copy) that much. Reads go through `Deref` to [`Properties`]; the first write
/// through `DerefMut` allocates.
#[derive(Clone, Default)]
pub struct Props(Option<Box<Properties>>);

impl Props {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(Properties::is_empty)
    }

    /// The properties by value.
    pub fn into_inner(self) -> Properties {
        self.0.map_or_else(Properties::default, |p| *p)
    }
}

impl std::ops::Deref for Props {
    type Target = Properties;

    fn deref(&self) -> &Properties {
        self.0.as_deref().unwrap_or(&EMPTY_PROPERTIES)
    }
}

impl std::ops::DerefMut for Props {
    fn deref_mut(&mut self) -> &mut Properties {
        self.0.get_or_insert_with(Box::default)
    }
}

impl From<Properties> for Props {
    fn from(properties: Properties) -> Props {
        Props((!properties.is_empty()).then(|| Box::new(properties)))
    }
}

impl PartialEq for Props {
    fn eq(&self, other: &Props) -> bool {
        **self == **other
    }
}

impl Eq for Props {}

impl fmt::Debug for Props {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// The QoS of a PUBLISH with the packet id that QoS 1 and 2 need [MQTT-2.3.1-5]: a
/// QoS 0 PUBLISH has no packet id, and a QoS 1 or 2 one cannot lack it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PublishQoS {
    /// QoS 0: fire and forget, no packet id [MQTT-2.3.1-6].
    AtMostOnce,
    /// QoS 1, acknowledged by PUBACK.
    AtLeastOnce(PacketId),
    /// QoS 2, through PUBREC/PUBREL/PUBCOMP.
    ExactlyOnce(PacketId),
}

impl PublishQoS {
    /// `qos` with `packet_id`, which QoS 0 does not carry.
    pub fn new(qos: QoS, packet_id: PacketId) -> PublishQoS {
        match qos {
            QoS::AtMostOnce => PublishQoS::AtMostOnce,
            QoS::AtLeastOnce => PublishQoS::AtLeastOnce(packet_id),
            QoS::ExactlyOnce => PublishQoS::ExactlyOnce(packet_id),
        }
    }

    /// The QoS level.
    pub fn qos(self) -> QoS {
        match self {
            PublishQoS::AtMostOnce => QoS::AtMostOnce,
            PublishQoS::AtLeastOnce(_) => QoS::AtLeastOnce,
            PublishQoS::ExactlyOnce(_) => QoS::ExactlyOnce,
        }
    }

    /// The packet id, at QoS 1 and 2.
    pub fn packet_id(self) -> Option<PacketId> {
        match self {
            PublishQoS::AtMostOnce => None,
            PublishQoS::AtLeastOnce(id) | PublishQoS::ExactlyOnce(id) => Some(id),
        }
    }
}

/// The topic of a PUBLISH: its name, or (MQTT 5) a Topic Alias the sender set
/// earlier on the connection, with an empty topic name on the wire [MQTT-3.3.2-12].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PublishTopic {
    /// The topic name; a Topic Alias property with it sets that alias.
    Name(TopicName),
    /// The alias alone: the receiver resolves it before using the message. The
    /// PUBLISH's properties carry no other Topic Alias.
    Alias(u16),
}

impl PublishTopic {
    /// The topic name, unless the PUBLISH names its topic by alias alone.
    pub fn name(&self) -> Option<&TopicName> {
        match self {
            PublishTopic::Name(name) => Some(name),
            PublishTopic::Alias(_) => None,
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
/// level [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1]. Whether it is a shared
/// subscription's `$share/{group}/{filter}` [MQTT-4.8.2] is parsed once, when it is
/// validated (at decode): [`TopicFilter::kind`] tells it without parsing again.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter {
    text: ByteString,
    /// What `text` is, a function of it (so the derived traits agree with `text`).
    share: Share,
}

/// The shared-subscription part of a filter, as parsed: 4 bytes beside the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Share {
    /// Not a `$share/` filter.
    None,
    /// `$share/{group}/{filter}`: the group is `text[SHARE_PREFIX.len()..end]` (a
    /// filter is at most 65,535 bytes [MQTT-1.5.3]).
    Group { end: u16 },
    /// A `$share/` filter that breaks [MQTT-4.8.2-1] or [MQTT-4.8.2-2].
    Bad(BadShare),
}

/// How a `$share/` filter breaks its form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum BadShare {
    /// No `/` after the share name [MQTT-4.8.2-2].
    NoFilter,
    /// An empty share name, or one with `+` or `#` [MQTT-4.8.2-1].
    BadName,
    /// Nothing after the share name's `/` [MQTT-4.8.2-2].
    EmptyFilter,
}

impl BadShare {
    fn reason(self) -> &'static str {
        match self {
            BadShare::NoFilter => {
                "[MQTT-4.8.2-2] a shared subscription needs a filter after the share name"
            }
            BadShare::BadName => "[MQTT-4.8.2-1] the share name must be non-empty without + or #",
            BadShare::EmptyFilter => {
                "[MQTT-4.8.2-2] a shared subscription needs a non-empty filter"
            }
        }
    }
}

/// What a topic filter subscribes to [MQTT-4.8.2].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter<'a> {
    /// An ordinary filter: every matching message.
    Plain(&'a str),
    /// `$share/{group}/{filter}`: one member of the group gets each message that
    /// matches `filter`.
    Shared {
        /// The share name: at least one character, no `/`, `+` or `#` [MQTT-4.8.2-1].
        group: &'a str,
        /// The filter the group subscribes to.
        filter: &'a str,
    },
    /// A `$share/` filter that breaks [MQTT-4.8.2-1] or [MQTT-4.8.2-2], with the
    /// reason. Not malformed: a SUBSCRIBE refuses it with 0x8F (0x80 in MQTT 3).
    BadShare(&'static str),
}

impl TopicFilter {
    /// The filter as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What the filter subscribes to, as parsed when it was validated.
    pub fn kind(&self) -> Filter<'_> {
        match self.share {
            Share::None => Filter::Plain(&self.text),
            Share::Group { end } => {
                let end = usize::from(end);
                Filter::Shared {
                    group: &self.text[topic::SHARE_PREFIX.len()..end],
                    filter: &self.text[end + 1..],
                }
            }
            Share::Bad(bad) => Filter::BadShare(bad.reason()),
        }
    }

    /// Whether this is a `$share/` filter (valid or not).
    pub fn is_shared(&self) -> bool {
        self.share != Share::None
    }

    /// Whether the filter holds `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.text.bytes().any(|b| b == b'+' || b == b'#')
    }

    /// A copy in its own allocation (see [`TopicName::detached`]): subscriptions
    /// live as long as their session.
    pub fn detached(&self) -> TopicFilter {
        TopicFilter { text: ByteString::from(&*self.text), share: self.share }
    }
}

impl TryFrom<ByteString> for TopicFilter {
    type Error = ProtocolViolation;
    // Built in place in the decoders (another module): returned through memory, its
    // share's bytes, written one by one, are read back 16 at a time and stall store
    // forwarding (14% of decoding a SUBSCRIBE).
    #[inline(always)]
    fn try_from(value: ByteString) -> Result<Self, Self::Error> {
        topic::validate_topic_filter(&value)?;
        let share = topic::parse_share(&value);
        Ok(TopicFilter { text: value, share })
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
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Every MQTT 3.1, 3.1.1 and 5.0 control packet.
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
    UnsubAck(UnsubAck),
    /// Client keep-alive probe [MQTT-3.12].
    PingReq,
    /// Server answer to a PINGREQ [MQTT-3.13].
    PingResp,
    /// Notice that the sender is closing the connection [MQTT-3.14]; in MQTT 5
    /// either side sends it, with a reason code.
    Disconnect(Disconnect),
    /// MQTT 5 enhanced authentication exchange [MQTT-3.15].
    Auth(Auth),
}

/// CONNECT [MQTT-3.1].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version, from the protocol name and level [MQTT-3.1.2.1], [MQTT-3.1.2.2].
    pub protocol: ProtocolVersion,
    /// CleanSession flag [MQTT-3.1.2-4..6]; Clean Start in MQTT 5 [MQTT-3.1.2-4].
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
    /// MQTT 5 CONNECT properties [MQTT-3.1.2.11].
    pub properties: Props,
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
    /// MQTT 5 will properties [MQTT-3.1.3.2].
    pub properties: Props,
}

/// CONNACK [MQTT-3.2].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server already held a session for the client [MQTT-3.2.2.2].
    pub session_present: bool,
    /// Whether the connection is accepted, and if not why [MQTT-3.2.2.2]. To an
    /// MQTT 3.1.1 client the codec writes the matching return code (0x84 -> 1,
    /// 0x85 -> 2, 0x86 -> 4, 0x87 -> 5, any other failure -> 3).
    pub reason: ReasonCode,
    /// MQTT 5 CONNACK properties [MQTT-3.2.2.3].
    pub properties: Props,
}

/// PUBLISH [MQTT-3.3]. The payload is a `Bytes` slice of the read buffer: cloning it
/// for every subscriber bumps a refcount and copies nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag: set when this may be a re-delivery of an earlier attempt [MQTT-3.3.1.1].
    pub dup: bool,
    /// Delivery QoS [MQTT-3.3.1.2] (bits value 3 is malformed [MQTT-3.3.1-4]),
    /// with the packet id of QoS 1 and 2.
    pub qos: PublishQoS,
    /// RETAIN flag: whether the server keeps the message for future subscribers [MQTT-3.3.1.3].
    pub retain: bool,
    /// Topic the message is published to [MQTT-3.3.2.1], or its alias.
    pub topic: PublishTopic,
    /// Application message bytes, possibly empty [MQTT-3.3.3].
    pub payload: Bytes,
    /// MQTT 5 PUBLISH properties [MQTT-3.3.2.3]; `None` when there are none (and
    /// always in MQTT 3), so a plain message costs no allocation.
    pub properties: Option<Box<Properties>>,
}

impl fmt::Debug for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publish")
            .field("dup", &self.dup)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("topic", &self.topic)
            .field("payload_len", &self.payload.len())
            .field("properties", &self.properties)
            .finish()
    }
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP: a packet id and, in MQTT 5, a reason code
/// and properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// Identifier of the packet being acknowledged.
    pub packet_id: PacketId,
    /// The outcome [MQTT-3.4.2.1]; always SUCCESS in MQTT 3.
    pub reason: ReasonCode,
    /// MQTT 5 properties (Reason String, User Property).
    pub properties: Props,
}

impl Ack {
    /// A successful acknowledgement without properties: what MQTT 3 knows.
    pub fn new(packet_id: PacketId) -> Ack {
        Ack { packet_id, reason: ReasonCode::SUCCESS, properties: Props::default() }
    }

    /// An acknowledgement with a reason code and no properties.
    pub fn with_reason(packet_id: PacketId, reason: ReasonCode) -> Ack {
        Ack { packet_id, reason, properties: Props::default() }
    }
}

/// SUBSCRIBE [MQTT-3.8]: at least one filter [MQTT-3.8.3-3].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Identifier echoed back by the SUBACK [MQTT-3.8.4-2].
    pub packet_id: PacketId,
    /// Requested filters with their options, in packet order.
    pub filters: Vec<SubscribeFilter>,
    /// MQTT 5 properties (Subscription Identifier, User Property) [MQTT-3.8.2.1].
    pub properties: Props,
}

/// When the server sends retained messages on a subscribe [MQTT-3.8.3.1].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RetainHandling {
    /// 0: at every subscribe (the only behaviour of MQTT 3).
    #[default]
    SendAtSubscribe = 0,
    /// 1: only if the subscription did not exist before.
    SendIfNew = 1,
    /// 2: never.
    DoNotSend = 2,
}

/// One filter of a SUBSCRIBE with its requested options [MQTT-3.8.3.1]. In MQTT 3
/// only `qos` is on the wire; the other options keep their defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Filter to subscribe to (may be a `$share/{group}/{filter}` shared filter).
    pub filter: TopicFilter,
    /// Maximum QoS requested for messages matching the filter.
    pub qos: QoS,
    /// Do not send the client its own messages [MQTT-3.8.3-3].
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded messages as published [MQTT-3.3.1-12].
    pub retain_as_published: bool,
    /// When retained messages are sent.
    pub retain_handling: RetainHandling,
}

impl SubscribeFilter {
    /// A filter with MQTT 3's options: only the QoS.
    pub fn new(filter: TopicFilter, qos: QoS) -> SubscribeFilter {
        SubscribeFilter {
            filter,
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }
}

/// SUBACK [MQTT-3.9]: one code per filter, in order [MQTT-3.9.3-1]. To an MQTT 3.1.1
/// client the codec writes every failure as 0x80.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    /// Identifier of the SUBSCRIBE being acknowledged.
    pub packet_id: PacketId,
    /// One reason code per requested filter, in the SUBSCRIBE's order.
    pub codes: Vec<ReasonCode>,
    /// MQTT 5 properties (Reason String, User Property).
    pub properties: Props,
}

/// UNSUBSCRIBE [MQTT-3.10]: at least one filter [MQTT-3.10.3-2].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Identifier echoed back by the UNSUBACK.
    pub packet_id: PacketId,
    /// Filters to remove, in packet order.
    pub filters: Vec<TopicFilter>,
    /// MQTT 5 properties (User Property).
    pub properties: Props,
}

/// UNSUBACK [MQTT-3.11]. MQTT 3 carries the packet id only; MQTT 5 one reason code
/// per filter [MQTT-3.11.3-1].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    /// Identifier of the UNSUBSCRIBE being acknowledged.
    pub packet_id: PacketId,
    /// One reason code per filter (empty when decoded from MQTT 3).
    pub codes: Vec<ReasonCode>,
    /// MQTT 5 properties (Reason String, User Property).
    pub properties: Props,
}

/// DISCONNECT [MQTT-3.14]. MQTT 3 has no body: reason SUCCESS, no properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disconnect {
    /// Why the connection closes [MQTT-3.14.2.1].
    pub reason: ReasonCode,
    /// MQTT 5 properties (Session Expiry Interval from the client, Reason String,
    /// Server Reference, User Property).
    pub properties: Props,
}

impl Disconnect {
    /// A DISCONNECT with a reason code and no properties.
    pub fn new(reason: ReasonCode) -> Disconnect {
        Disconnect { reason, properties: Props::default() }
    }
}

/// AUTH [MQTT-3.15], MQTT 5 only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    /// SUCCESS, CONTINUE_AUTHENTICATION or RE_AUTHENTICATE [MQTT-3.15.2.1].
    pub reason: ReasonCode,
    /// Authentication Method and Data, Reason String, User Property.
    pub properties: Props,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `part` points into `whole`'s memory.
    fn within(part: &[u8], whole: &[u8]) -> bool {
        let range = whole.as_ptr_range();
        range.contains(&part.as_ptr())
    }

    #[test]
    fn a_protocol_level_names_its_version_and_back() {
        for version in [ProtocolVersion::V31, ProtocolVersion::V311, ProtocolVersion::V5] {
            assert_eq!(ProtocolVersion::from_level(version.level()), Some(version));
        }
        assert_eq!(ProtocolVersion::from_level(6), None);
    }

    #[test]
    fn detached_properties_share_nothing_with_the_read_buffer() {
        let buffer = Bytes::from_static(b"text/plain|reply/to|corr|key|value");
        let slice = |from: usize, to: usize| buffer.slice(from..to);
        let text = |from, to| ByteString::try_from(slice(from, to)).unwrap();
        let decoded = Properties {
            content_type: Some(text(0, 10)),
            response_topic: Some(TopicName::try_from(text(11, 19)).unwrap()),
            correlation_data: Some(slice(20, 24)),
            user_properties: vec![(text(25, 28), text(29, 34))],
            message_expiry_interval: Some(9),
            ..Properties::default()
        };
        let kept = decoded.detached();
        assert_eq!(kept, decoded, "same values");
        let (k, v) = &kept.user_properties[0];
        for part in [
            kept.content_type.as_ref().unwrap().as_bytes(),
            kept.response_topic.as_ref().unwrap().as_str().as_bytes(),
            &kept.correlation_data.as_ref().unwrap()[..],
            k.as_bytes(),
            v.as_bytes(),
        ] {
            assert!(!within(part, &buffer), "{part:?} still points into the read buffer");
        }
    }

    #[test]
    fn empty_props_read_as_empty_and_allocate_on_write() {
        let mut props = Props::default();
        assert!(props.is_empty() && props.reason_string.is_none());
        assert_eq!(props, Props::from(Properties::default()));
        props.reason_string = Some("why".into());
        assert!(!props.is_empty());
        assert_eq!(props.clone().into_inner().reason_string.as_deref(), Some("why"));
        assert_ne!(props, Props::default());
    }
}
