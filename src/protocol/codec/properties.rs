//! MQTT 5 properties [MQTT-2.2.2]: which packet may carry which (Table 2-4),
//! their decoding with the checks each property's section states, their length
//! and their encoding.

use super::*;

/// The packets that carry properties, and the will: the columns of Table 2-4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Carrier {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// One row of Table 2-4: a property and where it may appear.
struct Row {
    id: u8,
    /// The packets that may carry it, each with the section describing it there.
    carriers: &'static [(Carrier, &'static str)],
}

/// Generates from the property table: the identifiers, the table of carriers, the
/// "included more than once" messages (a [`ProtocolViolation`]'s reason is
/// `&'static str`), the decoder of one property, the length and the encoder.
macro_rules! properties_codec {
    ($(
        $(#[$doc:meta])*
        $id:literal $name:ident $field:ident: $kind:ident $($check:ident)? $text:literal,
        [$($carrier:ident $section:literal),* $(,)?];
    )*) => {
        $(pub(super) const $name: u8 = $id;)*

        const TABLE: &[Row] = &[$(Row { id: $id, carriers: &[$((Carrier::$carrier, $section)),*] },)*];

        /// The error message for an identifier given twice.
        fn duplicate_reason(id: u8) -> &'static str {
            match id {
                $($id => concat!($text, " included more than once"),)*
                _ => "property included more than once",
            }
        }

        /// Reads the value of property `id` (allowed by `set`, seen for the first time
        /// unless repeatable) into `out`.
        // Inlined into its one caller's loop, as the match was before it was generated.
        #[inline(always)]
        fn decode_property(
            p: &mut Reader,
            set: &PropertySet,
            id: u8,
            out: &mut Properties,
        ) -> Result<(), ProtocolViolation> {
            match id {
                $($id => {
                    let value = read_property!($kind, p, set, id, $text);
                    $(check_property!($check, value, set, id, $text);)?
                    store_property!($kind, out.$field, value);
                })*
                // `set.allows` refused every other identifier; answer as it does
                // rather than panic.
                _ => return Err(set.not_allowed.clone()),
            }
            Ok(())
        }

        /// The bytes of the properties, Property Length excluded.
        pub(super) fn properties_len(p: &Properties) -> usize {
            0 $(+ property_len!($kind, &p.$field))*
        }

        /// Writes the properties of `p` whose identifiers are in `from..to`, in the
        /// order of their identifiers; the order of User Properties is kept
        /// [MQTT-3.3.2-18]. Inlined: with constant bounds only their fields remain.
        #[inline(always)]
        fn put_properties_between(buf: &mut BytesMut, p: &Properties, from: u8, to: u8) {
            $(if (from..to).contains(&$name) {
                put_property!($kind, buf, $name, &p.$field);
            })*
        }
    };
}

/// Reads one value of a property, by value type; a flag other than 0 or 1 is a
/// Protocol Error in each flag's section.
macro_rules! read_property {
    (flag, $p:ident, $set:ident, $id:ident, $text:literal) => {
        match $p.u8(PROPERTY_VALUE_TRUNCATED)? {
            v @ (0 | 1) => v,
            _ => return Err($set.bad_value($id, concat!($text, " not 0 or 1"))),
        }
    };
    (u16, $p:ident, $set:ident, $id:ident, $text:literal) => {
        $p.u16(PROPERTY_VALUE_TRUNCATED)?
    };
    (u32, $p:ident, $set:ident, $id:ident, $text:literal) => {
        $p.u32(PROPERTY_VALUE_TRUNCATED)?
    };
    (string, $p:ident, $set:ident, $id:ident, $text:literal) => {
        $p.string(PROPERTY_VALUE_TRUNCATED)?
    };
    (binary, $p:ident, $set:ident, $id:ident, $text:literal) => {
        $p.binary(PROPERTY_VALUE_TRUNCATED)?
    };
    (topic, $p:ident, $set:ident, $id:ident, $text:literal) => {
        TopicName::try_from($p.utf8(PROPERTY_VALUE_TRUNCATED)?).map_err(|e| {
            if e.clause == "MQTT-4.7.1-1" {
                violation("MQTT-3.3.2-14", "wildcard character in a Response Topic")
            } else {
                topic_clause_v5(e)
            }
        })?
    };
    (vbi_list, $p:ident, $set:ident, $id:ident, $text:literal) => {
        $p.vbi(PROPERTY_VALUE_TRUNCATED)?
    };
    // Both strings of the pair are UTF-8 strings [MQTT-1.5.7-1].
    (pair_list, $p:ident, $set:ident, $id:ident, $text:literal) => {
        ($p.string(PROPERTY_VALUE_TRUNCATED)?, $p.string(PROPERTY_VALUE_TRUNCATED)?)
    };
}

/// The value checks of the table's check column.
macro_rules! check_property {
    (nonzero, $value:ident, $set:ident, $id:ident, $text:literal) => {
        if $value == 0 {
            return Err($set.bad_value($id, concat!($text, " of 0")));
        }
    };
    (alias, $value:ident, $set:ident, $id:ident, $text:literal) => {
        if $value == 0 {
            // "A Topic Alias value of 0 ... is a Protocol Error, the receiver uses
            // DISCONNECT with Reason Code of 0x94" (section 3.3.4).
            return Err(ProtocolViolation::with_code(
                "MQTT-3.3.2-8",
                "Topic Alias of 0",
                ReasonCode::TOPIC_ALIAS_INVALID,
            ));
        }
    };
}

/// Stores a decoded value: lists take every occurrence, the others one.
macro_rules! store_property {
    (vbi_list, $field:expr, $value:ident) => {
        $field.push($value)
    };
    (pair_list, $field:expr, $value:ident) => {
        $field.push($value)
    };
    ($kind:ident, $field:expr, $value:ident) => {
        $field = Some($value)
    };
}

/// The encoded bytes of a property field: identifier byte plus value, per occurrence.
macro_rules! property_len {
    (flag, $v:expr) => {
        $v.map_or(0, |_| 1 + 1)
    };
    (u16, $v:expr) => {
        $v.map_or(0, |_| 1 + 2)
    };
    (u32, $v:expr) => {
        $v.map_or(0, |_| 1 + 4)
    };
    (string, $v:expr) => {
        $v.as_ref().map_or(0, |s| 1 + 2 + s.len())
    };
    (binary, $v:expr) => {
        $v.as_ref().map_or(0, |b| 1 + 2 + b.len())
    };
    (topic, $v:expr) => {
        $v.as_ref().map_or(0, |t| 1 + 2 + t.as_str().len())
    };
    (vbi_list, $v:expr) => {
        $v.iter().map(|&id| 1 + vbi_len(id as usize)).sum::<usize>()
    };
    (pair_list, $v:expr) => {
        $v.iter().map(|(k, v)| 1 + 2 + k.len() + 2 + v.len()).sum::<usize>()
    };
}

/// Writes a property field: identifier byte and value, per occurrence.
macro_rules! put_property {
    (flag, $buf:ident, $id:ident, $v:expr) => {
        if let Some(v) = *$v {
            $buf.put_u8($id);
            $buf.put_u8(v);
        }
    };
    (u16, $buf:ident, $id:ident, $v:expr) => {
        if let Some(v) = *$v {
            $buf.put_u8($id);
            $buf.put_u16(v);
        }
    };
    (u32, $buf:ident, $id:ident, $v:expr) => {
        if let Some(v) = *$v {
            $buf.put_u8($id);
            $buf.put_u32(v);
        }
    };
    (string, $buf:ident, $id:ident, $v:expr) => {
        if let Some(v) = $v {
            $buf.put_u8($id);
            put_binary($buf, v.as_bytes());
        }
    };
    (binary, $buf:ident, $id:ident, $v:expr) => {
        if let Some(v) = $v {
            $buf.put_u8($id);
            put_binary($buf, v);
        }
    };
    (topic, $buf:ident, $id:ident, $v:expr) => {
        if let Some(v) = $v {
            $buf.put_u8($id);
            put_binary($buf, v.as_str().as_bytes());
        }
    };
    (vbi_list, $buf:ident, $id:ident, $v:expr) => {
        for &v in $v {
            debug_assert!(v != 0, "[MQTT-3.3.2.3.8] Subscription Identifier of 0");
            $buf.put_u8($id);
            put_vbi($buf, v as usize);
        }
    };
    (pair_list, $buf:ident, $id:ident, $v:expr) => {
        for (name, value) in $v {
            $buf.put_u8($id);
            put_binary($buf, name.as_bytes());
            put_binary($buf, value.as_bytes());
        }
    };
}

mqtt5_properties!(properties_codec);

/// The property identifiers one packet type allows (a column of Table 2-4).
pub(super) struct PropertySet {
    carrier: Carrier,
    /// Bit `id` set for each allowed identifier (all are below 64).
    allowed: u64,
    /// Whether Subscription Identifier may repeat (PUBLISH only [MQTT-3.3.4-4]).
    pub(super) many_subscription_ids: bool,
    /// Raised for an identifier the packet does not allow.
    pub(super) not_allowed: ProtocolViolation,
}

impl PropertySet {
    /// The column of `carrier`; `not_allowed` is the message for the identifiers it
    /// does not allow.
    pub(super) const fn of(carrier: Carrier, not_allowed: &'static str) -> PropertySet {
        let mut allowed = 0u64;
        let mut row = 0;
        while row < TABLE.len() {
            let mut i = 0;
            while i < TABLE[row].carriers.len() {
                if TABLE[row].carriers[i].0 as u8 == carrier as u8 {
                    allowed |= 1 << TABLE[row].id;
                }
                i += 1;
            }
            row += 1;
        }
        PropertySet {
            carrier,
            allowed,
            many_subscription_ids: carrier as u8 == Carrier::Publish as u8,
            // "A Control Packet which contains an Identifier which is not valid for its
            // packet type ... is a Malformed Packet" (section 2.2.2.2).
            not_allowed: violation("MQTT-2.2.2.2", not_allowed),
        }
    }

    #[inline]
    pub(super) fn allows(&self, id: u8) -> bool {
        id < 64 && self.allowed & (1 << id) != 0
    }

    /// The section that describes property `id` in this packet type.
    #[inline]
    pub(super) fn section(&self, id: u8) -> &'static str {
        TABLE
            .iter()
            .filter(|row| row.id == id)
            .flat_map(|row| row.carriers.iter())
            .find(|(carrier, _)| *carrier == self.carrier)
            .map_or("MQTT-2.2.2.2", |(_, section)| section)
    }

    /// A value the section of property `id` calls a Protocol Error.
    #[inline]
    pub(super) fn bad_value(&self, id: u8, reason: &'static str) -> ProtocolViolation {
        protocol_error(self.section(id), reason)
    }
}

// Every identifier is below 64, so one bit each fits the sets' `u64`s.
const _: () = {
    let mut row = 0;
    while row < TABLE.len() {
        assert!(TABLE[row].id < 64);
        row += 1;
    }
};

pub(super) const CONNECT_PROPERTIES: PropertySet =
    PropertySet::of(Carrier::Connect, "property not allowed in CONNECT");
pub(super) const WILL_PROPERTIES: PropertySet =
    PropertySet::of(Carrier::Will, "property not allowed in a will");
pub(super) const CONNACK_PROPERTIES: PropertySet =
    PropertySet::of(Carrier::ConnAck, "property not allowed in CONNACK");
pub(super) const PUBLISH_PROPERTIES: PropertySet =
    PropertySet::of(Carrier::Publish, "property not allowed in PUBLISH");
pub(super) const SUBSCRIBE_PROPERTIES: PropertySet =
    PropertySet::of(Carrier::Subscribe, "property not allowed in SUBSCRIBE");
pub(super) const SUBACK_PROPERTIES: PropertySet =
    PropertySet::of(Carrier::SubAck, "property not allowed in SUBACK");
pub(super) const UNSUBSCRIBE_PROPERTIES: PropertySet =
    PropertySet::of(Carrier::Unsubscribe, "property not allowed in UNSUBSCRIBE");
pub(super) const UNSUBACK_PROPERTIES: PropertySet =
    PropertySet::of(Carrier::UnsubAck, "property not allowed in UNSUBACK");
pub(super) const DISCONNECT_PROPERTIES: PropertySet =
    PropertySet::of(Carrier::Disconnect, "property not allowed in DISCONNECT");
pub(super) const AUTH_PROPERTIES: PropertySet =
    PropertySet::of(Carrier::Auth, "property not allowed in AUTH");

pub(super) const PROPERTY_LENGTH_MISSING: ProtocolViolation =
    violation("MQTT-2.2.2-1", "Property Length missing");
pub(super) const PROPERTY_LENGTH_OVERRUN: ProtocolViolation =
    violation("MQTT-2.2.2.1", "Property Length overruns the packet");
pub(super) const PROPERTY_VALUE_TRUNCATED: ProtocolViolation =
    violation("MQTT-2.2.2.2", "property value overruns the Property Length");

/// Reads a Property Length and the properties it spans, which must all be allowed by
/// `set` [MQTT-2.2.2].
#[inline]
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

#[inline]
pub(super) fn decode_properties_into(
    p: &mut Reader,
    set: &PropertySet,
    out: &mut Properties,
) -> Result<(), ProtocolViolation> {
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
        decode_property(p, set, id, out)?;
    }
    Ok(())
}

/// The bytes of a property block: Property Length and properties.
#[inline]
pub(super) fn property_block_len(properties_len: usize) -> usize {
    vbi_len(properties_len) + properties_len
}

/// Writes the Property Length `len` (from [`properties_len`]) and the properties, in
/// the order of their identifiers.
#[inline]
pub(super) fn put_properties(buf: &mut BytesMut, p: &Properties, len: usize) {
    put_vbi(buf, len);
    put_properties_between(buf, p, 0, u8::MAX);
}

/// The properties of a PUBLISH to one subscriber, borrowed: the message's own, with
/// the three the broker sets for each delivery in place of the message's: the
/// Message Expiry Interval left [MQTT-3.3.2-6], the matching subscriptions'
/// identifiers [MQTT-3.3.4-3] and the outgoing Topic Alias [MQTT-3.3.2-17]. Nothing
/// is copied to write them.
#[derive(Clone, Copy, Debug, Default)]
pub struct PublishProperties<'a> {
    /// The message's properties; their Message Expiry Interval, Subscription
    /// Identifiers and Topic Alias are not written (the fields below are).
    pub message: Option<&'a Properties>,
    /// 0x02, written in place of the message's.
    pub message_expiry_interval: Option<u32>,
    /// 0x0B, written in place of the message's.
    pub subscription_identifiers: &'a [u32],
    /// 0x23, written in place of the message's.
    pub topic_alias: Option<u16>,
}

impl<'a> PublishProperties<'a> {
    /// Exactly the properties `p` holds.
    pub fn of(p: &'a Properties) -> Self {
        PublishProperties {
            message: Some(p),
            message_expiry_interval: p.message_expiry_interval,
            subscription_identifiers: &p.subscription_identifiers,
            topic_alias: p.topic_alias,
        }
    }

    /// The bytes of the properties, Property Length excluded.
    // Not inlined: the MQTT 3 path of measuring a PUBLISH stays small.
    #[inline(never)]
    pub(super) fn len(&self) -> usize {
        let own = self.message.map_or(0, |p| {
            properties_len(p)
                - property_len!(u32, p.message_expiry_interval)
                - property_len!(vbi_list, p.subscription_identifiers)
                - property_len!(u16, p.topic_alias)
        });
        own + property_len!(u32, self.message_expiry_interval)
            + property_len!(vbi_list, self.subscription_identifiers)
            + property_len!(u16, self.topic_alias)
    }

    /// Writes the Property Length `len` (from [`PublishProperties::len`]) and the
    /// properties, in the order of their identifiers, as [`put_properties`] does.
    // Not inlined: the MQTT 3 path of the PUBLISH encoder stays small.
    #[inline(never)]
    pub(super) fn put(&self, buf: &mut BytesMut, len: usize) {
        put_vbi(buf, len);
        // Constant bounds, so that each inlined segment keeps only its fields.
        if let Some(p) = self.message {
            put_properties_between(buf, p, 0, MESSAGE_EXPIRY_INTERVAL);
        }
        put_property!(u32, buf, MESSAGE_EXPIRY_INTERVAL, &self.message_expiry_interval);
        if let Some(p) = self.message {
            put_properties_between(buf, p, MESSAGE_EXPIRY_INTERVAL + 1, SUBSCRIPTION_IDENTIFIER);
        }
        put_property!(vbi_list, buf, SUBSCRIPTION_IDENTIFIER, self.subscription_identifiers);
        if let Some(p) = self.message {
            put_properties_between(buf, p, SUBSCRIPTION_IDENTIFIER + 1, TOPIC_ALIAS);
        }
        put_property!(u16, buf, TOPIC_ALIAS, &self.topic_alias);
        if let Some(p) = self.message {
            put_properties_between(buf, p, TOPIC_ALIAS + 1, u8::MAX);
        }
    }
}
