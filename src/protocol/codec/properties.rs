//! MQTT 5 properties [MQTT-2.2.2]: which packet may carry which (Table 2-4),
//! their decoding with the checks each property's section states, their length
//! and their encoding.

use super::*;

/// Declares the property identifiers (Table 2-4), and for each a static "included
/// more than once" message, since a [`ProtocolViolation`]'s reason is `&'static str`.
macro_rules! property_ids {
    ($($name:ident = $id:expr, $text:expr;)*) => {
        $(pub(super) const $name: u8 = $id;)*

        /// The error message for an identifier given twice.
        fn duplicate_reason(id: u8) -> &'static str {
            match id {
                $($id => concat!($text, " included more than once"),)*
                _ => "property included more than once",
            }
        }
    };
}

property_ids! {
    PAYLOAD_FORMAT_INDICATOR = 0x01, "Payload Format Indicator";
    MESSAGE_EXPIRY_INTERVAL = 0x02, "Message Expiry Interval";
    CONTENT_TYPE = 0x03, "Content Type";
    RESPONSE_TOPIC = 0x08, "Response Topic";
    CORRELATION_DATA = 0x09, "Correlation Data";
    SUBSCRIPTION_IDENTIFIER = 0x0B, "Subscription Identifier";
    SESSION_EXPIRY_INTERVAL = 0x11, "Session Expiry Interval";
    ASSIGNED_CLIENT_IDENTIFIER = 0x12, "Assigned Client Identifier";
    SERVER_KEEP_ALIVE = 0x13, "Server Keep Alive";
    AUTHENTICATION_METHOD = 0x15, "Authentication Method";
    AUTHENTICATION_DATA = 0x16, "Authentication Data";
    REQUEST_PROBLEM_INFORMATION = 0x17, "Request Problem Information";
    WILL_DELAY_INTERVAL = 0x18, "Will Delay Interval";
    REQUEST_RESPONSE_INFORMATION = 0x19, "Request Response Information";
    RESPONSE_INFORMATION = 0x1A, "Response Information";
    SERVER_REFERENCE = 0x1C, "Server Reference";
    REASON_STRING = 0x1F, "Reason String";
    RECEIVE_MAXIMUM = 0x21, "Receive Maximum";
    TOPIC_ALIAS_MAXIMUM = 0x22, "Topic Alias Maximum";
    TOPIC_ALIAS = 0x23, "Topic Alias";
    MAXIMUM_QOS = 0x24, "Maximum QoS";
    RETAIN_AVAILABLE = 0x25, "Retain Available";
    USER_PROPERTY = 0x26, "User Property";
    MAXIMUM_PACKET_SIZE = 0x27, "Maximum Packet Size";
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28, "Wildcard Subscription Available";
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29, "Subscription Identifier Available";
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A, "Shared Subscription Available";
}

/// The property identifiers one packet type allows (a column of Table 2-4), each with
/// the section that describes it in that packet: the clause its errors cite.
pub(super) struct PropertySet {
    /// Bit `id` set for each allowed identifier (all are below 64).
    pub(super) allowed: u64,
    /// Whether Subscription Identifier may repeat (PUBLISH only [MQTT-3.3.4-4]).
    pub(super) many_subscription_ids: bool,
    pub(super) sections: &'static [(u8, &'static str)],
    /// Raised for an identifier the packet does not allow.
    pub(super) not_allowed: ProtocolViolation,
}

impl PropertySet {
    pub(super) const fn new(
        not_allowed: &'static str,
        many_subscription_ids: bool,
        sections: &'static [(u8, &'static str)],
    ) -> PropertySet {
        let mut allowed = 0u64;
        let mut i = 0;
        while i < sections.len() {
            allowed |= 1 << sections[i].0;
            i += 1;
        }
        PropertySet {
            allowed,
            many_subscription_ids,
            sections,
            // "A Control Packet which contains an Identifier which is not valid for its
            // packet type ... is a Malformed Packet" (section 2.2.2.2).
            not_allowed: violation("MQTT-2.2.2.2", not_allowed),
        }
    }

    pub(super) fn allows(&self, id: u8) -> bool {
        id < 64 && self.allowed & (1 << id) != 0
    }

    /// The section that describes property `id` in this packet type.
    pub(super) fn section(&self, id: u8) -> &'static str {
        self.sections.iter().find(|(i, _)| *i == id).map_or("MQTT-2.2.2.2", |(_, s)| s)
    }

    /// A value the section of property `id` calls a Protocol Error.
    pub(super) fn bad_value(&self, id: u8, reason: &'static str) -> ProtocolViolation {
        protocol_error(self.section(id), reason)
    }
}

pub(super) const CONNECT_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in CONNECT",
    false,
    &[
        (SESSION_EXPIRY_INTERVAL, "MQTT-3.1.2.11.2"),
        (RECEIVE_MAXIMUM, "MQTT-3.1.2.11.3"),
        (MAXIMUM_PACKET_SIZE, "MQTT-3.1.2.11.4"),
        (TOPIC_ALIAS_MAXIMUM, "MQTT-3.1.2.11.5"),
        (REQUEST_RESPONSE_INFORMATION, "MQTT-3.1.2.11.6"),
        (REQUEST_PROBLEM_INFORMATION, "MQTT-3.1.2.11.7"),
        (USER_PROPERTY, "MQTT-3.1.2.11.8"),
        (AUTHENTICATION_METHOD, "MQTT-3.1.2.11.9"),
        (AUTHENTICATION_DATA, "MQTT-3.1.2.11.10"),
    ],
);
pub(super) const WILL_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in a will",
    false,
    &[
        (WILL_DELAY_INTERVAL, "MQTT-3.1.3.2.2"),
        (PAYLOAD_FORMAT_INDICATOR, "MQTT-3.1.3.2.3"),
        (MESSAGE_EXPIRY_INTERVAL, "MQTT-3.1.3.2.4"),
        (CONTENT_TYPE, "MQTT-3.1.3.2.5"),
        (RESPONSE_TOPIC, "MQTT-3.1.3.2.6"),
        (CORRELATION_DATA, "MQTT-3.1.3.2.7"),
        (USER_PROPERTY, "MQTT-3.1.3.2.8"),
    ],
);
pub(super) const CONNACK_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in CONNACK",
    false,
    &[
        (SESSION_EXPIRY_INTERVAL, "MQTT-3.2.2.3.2"),
        (RECEIVE_MAXIMUM, "MQTT-3.2.2.3.3"),
        (MAXIMUM_QOS, "MQTT-3.2.2.3.4"),
        (RETAIN_AVAILABLE, "MQTT-3.2.2.3.5"),
        (MAXIMUM_PACKET_SIZE, "MQTT-3.2.2.3.6"),
        (ASSIGNED_CLIENT_IDENTIFIER, "MQTT-3.2.2.3.7"),
        (TOPIC_ALIAS_MAXIMUM, "MQTT-3.2.2.3.8"),
        (REASON_STRING, "MQTT-3.2.2.3.9"),
        (USER_PROPERTY, "MQTT-3.2.2.3.10"),
        (WILDCARD_SUBSCRIPTION_AVAILABLE, "MQTT-3.2.2.3.11"),
        (SUBSCRIPTION_IDENTIFIER_AVAILABLE, "MQTT-3.2.2.3.12"),
        (SHARED_SUBSCRIPTION_AVAILABLE, "MQTT-3.2.2.3.13"),
        (SERVER_KEEP_ALIVE, "MQTT-3.2.2.3.14"),
        (RESPONSE_INFORMATION, "MQTT-3.2.2.3.15"),
        (SERVER_REFERENCE, "MQTT-3.2.2.3.16"),
        (AUTHENTICATION_METHOD, "MQTT-3.2.2.3.17"),
        (AUTHENTICATION_DATA, "MQTT-3.2.2.3.18"),
    ],
);
pub(super) const PUBLISH_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in PUBLISH",
    true,
    &[
        (PAYLOAD_FORMAT_INDICATOR, "MQTT-3.3.2.3.2"),
        (MESSAGE_EXPIRY_INTERVAL, "MQTT-3.3.2.3.3"),
        (TOPIC_ALIAS, "MQTT-3.3.2.3.4"),
        (RESPONSE_TOPIC, "MQTT-3.3.2.3.5"),
        (CORRELATION_DATA, "MQTT-3.3.2.3.6"),
        (USER_PROPERTY, "MQTT-3.3.2.3.7"),
        (SUBSCRIPTION_IDENTIFIER, "MQTT-3.3.2.3.8"),
        (CONTENT_TYPE, "MQTT-3.3.2.3.9"),
    ],
);
pub(super) const SUBSCRIBE_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in SUBSCRIBE",
    false,
    &[(SUBSCRIPTION_IDENTIFIER, "MQTT-3.8.2.1.2"), (USER_PROPERTY, "MQTT-3.8.2.1.3")],
);
pub(super) const SUBACK_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in SUBACK",
    false,
    &[(REASON_STRING, "MQTT-3.9.2.1.2"), (USER_PROPERTY, "MQTT-3.9.2.1.3")],
);
pub(super) const UNSUBSCRIBE_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in UNSUBSCRIBE",
    false,
    &[(USER_PROPERTY, "MQTT-3.10.2.1.2")],
);
pub(super) const UNSUBACK_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in UNSUBACK",
    false,
    &[(REASON_STRING, "MQTT-3.11.2.1.2"), (USER_PROPERTY, "MQTT-3.11.2.1.3")],
);
pub(super) const DISCONNECT_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in DISCONNECT",
    false,
    &[
        (SESSION_EXPIRY_INTERVAL, "MQTT-3.14.2.2.2"),
        (REASON_STRING, "MQTT-3.14.2.2.3"),
        (USER_PROPERTY, "MQTT-3.14.2.2.4"),
        (SERVER_REFERENCE, "MQTT-3.14.2.2.5"),
    ],
);
pub(super) const AUTH_PROPERTIES: PropertySet = PropertySet::new(
    "property not allowed in AUTH",
    false,
    &[
        (AUTHENTICATION_METHOD, "MQTT-3.15.2.2.2"),
        (AUTHENTICATION_DATA, "MQTT-3.15.2.2.3"),
        (REASON_STRING, "MQTT-3.15.2.2.4"),
        (USER_PROPERTY, "MQTT-3.15.2.2.5"),
    ],
);

pub(super) const PROPERTY_LENGTH_MISSING: ProtocolViolation =
    violation("MQTT-2.2.2-1", "Property Length missing");
pub(super) const PROPERTY_LENGTH_OVERRUN: ProtocolViolation =
    violation("MQTT-2.2.2.1", "Property Length overruns the packet");
pub(super) const PROPERTY_VALUE_TRUNCATED: ProtocolViolation =
    violation("MQTT-2.2.2.2", "property value overruns the Property Length");

/// Reads a Property Length and the properties it spans, which must all be allowed by
/// `set` [MQTT-2.2.2].
pub(super) fn decode_properties(
    r: &mut Reader,
    set: &PropertySet,
) -> Result<Properties, ProtocolViolation> {
    let mut properties = Properties::default();
    let mut block = property_block(r)?;
    decode_properties_into(&mut block, set, &mut properties)?;
    Ok(properties)
}

/// Like [`decode_properties`], for PUBLISH: `None` when the Property Length is 0, so
/// a message without properties costs no allocation.
// Inlined, with property_block, so that the PUBLISH decoder keeps its reader in
// registers: otherwise the reader goes through memory, and reading its payload back
// after these 8-byte writes stalls store forwarding (20 ns per PUBLISH).
#[inline(always)]
pub(super) fn decode_optional_properties(
    r: &mut Reader,
    set: &PropertySet,
) -> Result<Option<Box<Properties>>, ProtocolViolation> {
    let mut block = property_block(r)?;
    if block.buf.is_empty() {
        return Ok(None);
    }
    let mut properties = Box::<Properties>::default();
    decode_properties_into(&mut block, set, &mut properties)?;
    Ok(Some(properties))
}

/// Splits the property block, Property Length included, off the front of `r`.
// Inlined: see decode_optional_properties.
#[inline(always)]
pub(super) fn property_block(r: &mut Reader) -> Result<Reader, ProtocolViolation> {
    // A Variable Byte Integer is at most 268435455, which fits a usize.
    let len = r.vbi(PROPERTY_LENGTH_MISSING)? as usize;
    if len > r.buf.len() {
        return Err(PROPERTY_LENGTH_OVERRUN);
    }
    // Most blocks are empty: a static empty `Bytes` spares the two atomic refcount
    // updates of a split.
    let buf = if len == 0 { Bytes::new() } else { r.buf.split_to(len) };
    Ok(Reader { buf, v5: true })
}

pub(super) fn decode_properties_into(
    p: &mut Reader,
    set: &PropertySet,
    out: &mut Properties,
) -> Result<(), ProtocolViolation> {
    const TRUNCATED: ProtocolViolation = PROPERTY_VALUE_TRUNCATED;
    // Identifiers seen so far, one bit each (all allowed ones are below 64).
    let mut seen = 0u64;
    while !p.buf.is_empty() {
        // The identifier is a Variable Byte Integer, but every defined one is below
        // 128: a first byte with bit 7 set starts an identifier that is unknown or not
        // minimal, malformed either way, so one byte is all there is to read.
        let id = p.buf.get_u8();
        if !set.allows(id) {
            return Err(set.not_allowed.clone());
        }
        let bit = 1u64 << id;
        let repeatable =
            id == USER_PROPERTY || (id == SUBSCRIPTION_IDENTIFIER && set.many_subscription_ids);
        if seen & bit != 0 && !repeatable {
            // "It is a Protocol Error to include ... more than once", in the section
            // of every property but User Property and PUBLISH's Subscription Identifier.
            return Err(protocol_error(set.section(id), duplicate_reason(id)));
        }
        seen |= bit;
        // A byte property that says yes or no: "a Protocol Error ... to have a value
        // other than 0 or 1", in each one's section.
        let flag = |p: &mut Reader, reason| match p.u8(TRUNCATED)? {
            v @ (0 | 1) => Ok(v),
            _ => Err(set.bad_value(id, reason)),
        };
        match id {
            PAYLOAD_FORMAT_INDICATOR => {
                out.payload_format_indicator =
                    Some(flag(p, "Payload Format Indicator not 0 or 1")?);
            }
            MESSAGE_EXPIRY_INTERVAL => out.message_expiry_interval = Some(p.u32(TRUNCATED)?),
            CONTENT_TYPE => out.content_type = Some(p.string(TRUNCATED)?),
            RESPONSE_TOPIC => {
                let topic = p.utf8(TRUNCATED)?;
                out.response_topic = Some(TopicName::try_from(topic).map_err(|e| {
                    if e.clause == "MQTT-4.7.1-1" {
                        violation("MQTT-3.3.2-14", "wildcard character in a Response Topic")
                    } else {
                        topic_clause_v5(e)
                    }
                })?);
            }
            CORRELATION_DATA => out.correlation_data = Some(p.binary(TRUNCATED)?),
            SUBSCRIPTION_IDENTIFIER => {
                let value = p.vbi(TRUNCATED)?;
                if value == 0 {
                    return Err(set.bad_value(id, "Subscription Identifier of 0"));
                }
                out.subscription_identifiers.push(value);
            }
            SESSION_EXPIRY_INTERVAL => out.session_expiry_interval = Some(p.u32(TRUNCATED)?),
            ASSIGNED_CLIENT_IDENTIFIER => {
                out.assigned_client_identifier = Some(p.string(TRUNCATED)?);
            }
            SERVER_KEEP_ALIVE => out.server_keep_alive = Some(p.u16(TRUNCATED)?),
            AUTHENTICATION_METHOD => out.authentication_method = Some(p.string(TRUNCATED)?),
            AUTHENTICATION_DATA => out.authentication_data = Some(p.binary(TRUNCATED)?),
            REQUEST_PROBLEM_INFORMATION => {
                out.request_problem_information =
                    Some(flag(p, "Request Problem Information not 0 or 1")?);
            }
            WILL_DELAY_INTERVAL => out.will_delay_interval = Some(p.u32(TRUNCATED)?),
            REQUEST_RESPONSE_INFORMATION => {
                out.request_response_information =
                    Some(flag(p, "Request Response Information not 0 or 1")?);
            }
            RESPONSE_INFORMATION => out.response_information = Some(p.string(TRUNCATED)?),
            SERVER_REFERENCE => out.server_reference = Some(p.string(TRUNCATED)?),
            REASON_STRING => out.reason_string = Some(p.string(TRUNCATED)?),
            RECEIVE_MAXIMUM => {
                let value = p.u16(TRUNCATED)?;
                if value == 0 {
                    return Err(set.bad_value(id, "Receive Maximum of 0"));
                }
                out.receive_maximum = Some(value);
            }
            TOPIC_ALIAS_MAXIMUM => out.topic_alias_maximum = Some(p.u16(TRUNCATED)?),
            TOPIC_ALIAS => {
                let value = p.u16(TRUNCATED)?;
                if value == 0 {
                    // "A Topic Alias value of 0 ... is a Protocol Error, the receiver
                    // uses DISCONNECT with Reason Code of 0x94" (section 3.3.4).
                    return Err(ProtocolViolation::with_code(
                        "MQTT-3.3.2-8",
                        "Topic Alias of 0",
                        ReasonCode::TOPIC_ALIAS_INVALID,
                    ));
                }
                out.topic_alias = Some(value);
            }
            MAXIMUM_QOS => out.maximum_qos = Some(flag(p, "Maximum QoS not 0 or 1")?),
            RETAIN_AVAILABLE => {
                out.retain_available = Some(flag(p, "Retain Available not 0 or 1")?);
            }
            USER_PROPERTY => {
                // Both strings of the pair are UTF-8 strings [MQTT-1.5.7-1].
                let name = p.string(TRUNCATED)?;
                let value = p.string(TRUNCATED)?;
                out.user_properties.push((name, value));
            }
            MAXIMUM_PACKET_SIZE => {
                let value = p.u32(TRUNCATED)?;
                if value == 0 {
                    return Err(set.bad_value(id, "Maximum Packet Size of 0"));
                }
                out.maximum_packet_size = Some(value);
            }
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                out.wildcard_subscription_available =
                    Some(flag(p, "Wildcard Subscription Available not 0 or 1")?);
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                out.subscription_identifier_available =
                    Some(flag(p, "Subscription Identifier Available not 0 or 1")?);
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                out.shared_subscription_available =
                    Some(flag(p, "Shared Subscription Available not 0 or 1")?);
            }
            // `set.allows` refused every other identifier; answer as it does rather
            // than panic.
            _ => return Err(set.not_allowed.clone()),
        }
    }
    Ok(())
}

/// The bytes of the properties, Property Length excluded.
pub(super) fn properties_len(p: &Properties) -> usize {
    // Identifier byte plus value.
    pub(super) fn opt<T>(value: &Option<T>, size: impl Fn(&T) -> usize) -> usize {
        value.as_ref().map_or(0, |v| 1 + size(v))
    }
    let byte = |_: &u8| 1;
    let two = |_: &u16| 2;
    let four = |_: &u32| 4;
    let string = |s: &ByteString| 2 + s.len();
    let binary = |b: &Bytes| 2 + b.len();
    opt(&p.payload_format_indicator, byte)
        + opt(&p.message_expiry_interval, four)
        + opt(&p.content_type, string)
        + opt(&p.response_topic, |t| 2 + t.as_str().len())
        + opt(&p.correlation_data, binary)
        + p.subscription_identifiers.iter().map(|&id| 1 + vbi_len(id as usize)).sum::<usize>()
        + opt(&p.session_expiry_interval, four)
        + opt(&p.assigned_client_identifier, string)
        + opt(&p.server_keep_alive, two)
        + opt(&p.authentication_method, string)
        + opt(&p.authentication_data, binary)
        + opt(&p.request_problem_information, byte)
        + opt(&p.will_delay_interval, four)
        + opt(&p.request_response_information, byte)
        + opt(&p.response_information, string)
        + opt(&p.server_reference, string)
        + opt(&p.reason_string, string)
        + opt(&p.receive_maximum, two)
        + opt(&p.topic_alias_maximum, two)
        + opt(&p.topic_alias, two)
        + opt(&p.maximum_qos, byte)
        + opt(&p.retain_available, byte)
        + p.user_properties.iter().map(|(k, v)| 1 + 2 + k.len() + 2 + v.len()).sum::<usize>()
        + opt(&p.maximum_packet_size, four)
        + opt(&p.wildcard_subscription_available, byte)
        + opt(&p.subscription_identifier_available, byte)
        + opt(&p.shared_subscription_available, byte)
}

/// The bytes of a property block: Property Length and properties.
pub(super) fn property_block_len(properties_len: usize) -> usize {
    vbi_len(properties_len) + properties_len
}

/// Writes the Property Length `len` (from [`properties_len`]) and the properties, in
/// the order of their identifiers; the order of User Properties is kept
/// [MQTT-3.3.2-18].
pub(super) fn put_properties(buf: &mut BytesMut, p: &Properties, len: usize) {
    put_vbi(buf, len);
    let put = |buf: &mut BytesMut, id: u8| buf.put_u8(id);
    if let Some(v) = p.payload_format_indicator {
        put(buf, PAYLOAD_FORMAT_INDICATOR);
        buf.put_u8(v);
    }
    if let Some(v) = p.message_expiry_interval {
        put(buf, MESSAGE_EXPIRY_INTERVAL);
        buf.put_u32(v);
    }
    if let Some(v) = &p.content_type {
        put(buf, CONTENT_TYPE);
        put_binary(buf, v.as_bytes());
    }
    if let Some(v) = &p.response_topic {
        put(buf, RESPONSE_TOPIC);
        put_binary(buf, v.as_str().as_bytes());
    }
    if let Some(v) = &p.correlation_data {
        put(buf, CORRELATION_DATA);
        put_binary(buf, v);
    }
    for &id in &p.subscription_identifiers {
        debug_assert!(id != 0, "[MQTT-3.3.2.3.8] Subscription Identifier of 0");
        put(buf, SUBSCRIPTION_IDENTIFIER);
        put_vbi(buf, id as usize);
    }
    if let Some(v) = p.session_expiry_interval {
        put(buf, SESSION_EXPIRY_INTERVAL);
        buf.put_u32(v);
    }
    if let Some(v) = &p.assigned_client_identifier {
        put(buf, ASSIGNED_CLIENT_IDENTIFIER);
        put_binary(buf, v.as_bytes());
    }
    if let Some(v) = p.server_keep_alive {
        put(buf, SERVER_KEEP_ALIVE);
        buf.put_u16(v);
    }
    if let Some(v) = &p.authentication_method {
        put(buf, AUTHENTICATION_METHOD);
        put_binary(buf, v.as_bytes());
    }
    if let Some(v) = &p.authentication_data {
        put(buf, AUTHENTICATION_DATA);
        put_binary(buf, v);
    }
    if let Some(v) = p.request_problem_information {
        put(buf, REQUEST_PROBLEM_INFORMATION);
        buf.put_u8(v);
    }
    if let Some(v) = p.will_delay_interval {
        put(buf, WILL_DELAY_INTERVAL);
        buf.put_u32(v);
    }
    if let Some(v) = p.request_response_information {
        put(buf, REQUEST_RESPONSE_INFORMATION);
        buf.put_u8(v);
    }
    if let Some(v) = &p.response_information {
        put(buf, RESPONSE_INFORMATION);
        put_binary(buf, v.as_bytes());
    }
    if let Some(v) = &p.server_reference {
        put(buf, SERVER_REFERENCE);
        put_binary(buf, v.as_bytes());
    }
    if let Some(v) = &p.reason_string {
        put(buf, REASON_STRING);
        put_binary(buf, v.as_bytes());
    }
    if let Some(v) = p.receive_maximum {
        put(buf, RECEIVE_MAXIMUM);
        buf.put_u16(v);
    }
    if let Some(v) = p.topic_alias_maximum {
        put(buf, TOPIC_ALIAS_MAXIMUM);
        buf.put_u16(v);
    }
    if let Some(v) = p.topic_alias {
        put(buf, TOPIC_ALIAS);
        buf.put_u16(v);
    }
    if let Some(v) = p.maximum_qos {
        put(buf, MAXIMUM_QOS);
        buf.put_u8(v);
    }
    if let Some(v) = p.retain_available {
        put(buf, RETAIN_AVAILABLE);
        buf.put_u8(v);
    }
    for (name, value) in &p.user_properties {
        put(buf, USER_PROPERTY);
        put_binary(buf, name.as_bytes());
        put_binary(buf, value.as_bytes());
    }
    if let Some(v) = p.maximum_packet_size {
        put(buf, MAXIMUM_PACKET_SIZE);
        buf.put_u32(v);
    }
    if let Some(v) = p.wildcard_subscription_available {
        put(buf, WILDCARD_SUBSCRIPTION_AVAILABLE);
        buf.put_u8(v);
    }
    if let Some(v) = p.subscription_identifier_available {
        put(buf, SUBSCRIPTION_IDENTIFIER_AVAILABLE);
        buf.put_u8(v);
    }
    if let Some(v) = p.shared_subscription_available {
        put(buf, SHARED_SUBSCRIPTION_AVAILABLE);
        buf.put_u8(v);
    }
}
