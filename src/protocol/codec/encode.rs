//! Encoding: [`encode`] and [`encoded_len`] for every packet in either layout, and
//! the fan-out's PUBLISH encoders, which write one message for many subscribers.

use super::*;

/// The number of bytes [`encode`] writes for `packet` in `protocol` (0 for an AUTH
/// in MQTT 3, which is not written).
pub fn encoded_len(packet: &Packet, protocol: ProtocolVersion) -> usize {
    if let Packet::Auth(_) = packet {
        if !protocol.is_v5() {
            // Not written at all: see encode.
            return 0;
        }
    }
    let remaining = remaining_len(packet, protocol);
    1 + vbi_len(remaining) + remaining
}

/// Appends `packet` to `buf`, in the layout of `protocol` (CONNECT in the layout of
/// its own `protocol` field).
///
/// In MQTT 3 the parts MQTT 3 does not have are not written: properties, the reason
/// codes of PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK and DISCONNECT, and the
/// subscription options beyond the QoS. CONNACK's reason code is written as the 3.1.1
/// return code (0x00 -> 0, 0x84 -> 1, 0x85 -> 2, 0x86 -> 4, 0x87 -> 5, any other
/// failure -> 3 Server unavailable), and a SUBACK failure code as 0x80. AUTH does not
/// exist in MQTT 3: nothing is written (and debug builds panic).
///
/// In MQTT 5 an acknowledgement of a PUBLISH with reason Success and no properties is
/// 2 bytes of remaining length [MQTT-3.4.2.1], with another reason and no properties
/// 4 (an empty Property Length kept for clients that need it); a DISCONNECT or AUTH
/// with reason Success and no properties has remaining length 0, with another reason
/// and no properties 2.
///
/// Writes the packet as it is: keeping the sender's MUSTs that the field types cannot
/// express is the caller's business (at least one filter in SUBSCRIBE and UNSUBSCRIBE,
/// at least one code in SUBACK and in an MQTT 5 UNSUBACK, DUP clear at QoS 0, a
/// password only with a user name in MQTT 3, session present only with reason code
/// Success, reason codes the packet type allows, property values the specification
/// allows); debug builds assert some of them. A PUBLISH's packet id and alias are
/// part of its types ([`PublishQoS`], [`PublishTopic`]): a wrong pair cannot be built.
///
/// # Panics
///
/// If the packet cannot be framed, which no packet built by [`decode`] does:
/// * a string or binary field (client identifier, will payload, user name, password,
///   string and binary properties) longer than 65535 bytes: its length prefix is 16
///   bits [MQTT-1.5.3];
/// * a remaining length, or a Subscription Identifier, above [`REMAINING_LEN_MAX`].
pub fn encode(packet: &Packet, protocol: ProtocolVersion, buf: &mut BytesMut) {
    let v5 = protocol.is_v5();
    match packet {
        Packet::Publish(p) => PublishView::of(p).measure(protocol).encode(buf),
        Packet::Connect(c) => {
            put_fixed_header(buf, CONNECT << 4, remaining_len(packet, protocol));
            put_connect(buf, c);
        }
        Packet::ConnAck(a) => {
            debug_assert!(!a.session_present || a.reason == ReasonCode::SUCCESS, "[MQTT-3.2.2-6]");
            if v5 {
                let props = properties_len(&a.properties);
                put_fixed_header(buf, CONNACK << 4, 2 + property_block_len(props));
                buf.put_u8(u8::from(a.session_present));
                buf.put_u8(a.reason.0);
                put_properties(buf, &a.properties, props);
            } else {
                put_fixed_header(buf, CONNACK << 4, 2);
                // MQTT 3.1 reserves byte 1; Session Present is 3.1.1's [MQTT-3.2.2-2].
                let session_present = a.session_present && protocol != ProtocolVersion::V31;
                buf.put_u8(u8::from(session_present));
                buf.put_u8(connack_return_code(a.reason));
            }
        }
        Packet::PubAck(a) => put_ack(buf, PUBACK << 4, a, v5),
        Packet::PubRec(a) => put_ack(buf, PUBREC << 4, a, v5),
        Packet::PubRel(a) => put_ack(buf, (PUBREL << 4) | FLAGS_0010, a, v5),
        Packet::PubComp(a) => put_ack(buf, PUBCOMP << 4, a, v5),
        Packet::Subscribe(s) => {
            debug_assert!(!s.filters.is_empty(), "[MQTT-3.8.3-3]");
            let props = v5.then(|| properties_len(&s.properties));
            put_fixed_header(buf, (SUBSCRIBE << 4) | FLAGS_0010, subscribe_len(s, props));
            buf.put_u16(s.packet_id.get());
            if let Some(props) = props {
                put_properties(buf, &s.properties, props);
            }
            for f in &s.filters {
                put_binary(buf, f.filter.as_str().as_bytes());
                let mut options = f.qos as u8;
                if v5 {
                    if f.no_local {
                        options |= OPTION_NO_LOCAL;
                    }
                    if f.retain_as_published {
                        options |= OPTION_RETAIN_AS_PUBLISHED;
                    }
                    options |= (f.retain_handling as u8) << OPTION_RETAIN_HANDLING_SHIFT;
                }
                buf.put_u8(options);
            }
        }
        Packet::SubAck(s) => {
            debug_assert!(!s.codes.is_empty(), "[MQTT-3.9.3-1]");
            let props = v5.then(|| properties_len(&s.properties));
            put_fixed_header(buf, SUBACK << 4, codes_len(&s.codes, props));
            buf.put_u16(s.packet_id.get());
            if let Some(props) = props {
                put_properties(buf, &s.properties, props);
                buf.extend(s.codes.iter().map(|code| code.0));
            } else {
                buf.extend(s.codes.iter().map(|code| suback_return_code(*code)));
            }
        }
        Packet::Unsubscribe(u) => {
            debug_assert!(!u.filters.is_empty(), "[MQTT-3.10.3-2]");
            let props = v5.then(|| properties_len(&u.properties));
            put_fixed_header(buf, (UNSUBSCRIBE << 4) | FLAGS_0010, unsubscribe_len(u, props));
            buf.put_u16(u.packet_id.get());
            if let Some(props) = props {
                put_properties(buf, &u.properties, props);
            }
            for f in &u.filters {
                put_binary(buf, f.as_str().as_bytes());
            }
        }
        Packet::UnsubAck(u) => {
            if v5 {
                debug_assert!(!u.codes.is_empty(), "[MQTT-3.11.3-1]");
                let props = properties_len(&u.properties);
                put_fixed_header(buf, UNSUBACK << 4, codes_len(&u.codes, Some(props)));
                buf.put_u16(u.packet_id.get());
                put_properties(buf, &u.properties, props);
                buf.extend(u.codes.iter().map(|code| code.0));
            } else {
                put_fixed_header(buf, UNSUBACK << 4, 2);
                buf.put_u16(u.packet_id.get());
            }
        }
        Packet::PingReq => put_fixed_header(buf, PINGREQ << 4, 0),
        Packet::PingResp => put_fixed_header(buf, PINGRESP << 4, 0),
        Packet::Disconnect(d) => {
            if v5 {
                put_reason_and_properties(buf, DISCONNECT << 4, d.reason, &d.properties);
            } else {
                put_fixed_header(buf, DISCONNECT << 4, 0);
            }
        }
        Packet::Auth(a) => {
            debug_assert!(v5, "AUTH does not exist in MQTT 3");
            if v5 {
                put_reason_and_properties(buf, AUTH << 4, a.reason, &a.properties);
            }
        }
    }
}

/// The 3.1.1 CONNACK return code for an MQTT 5 reason code.
#[inline]
pub(super) fn connack_return_code(reason: ReasonCode) -> u8 {
    debug_assert!(
        reason == ReasonCode::SUCCESS || reason.is_error(),
        "CONNACK reason {reason:?} is neither success nor failure"
    );
    match reason {
        ReasonCode::SUCCESS => 0,
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => 1,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => 2,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => 4,
        ReasonCode::NOT_AUTHORIZED => 5,
        // Server unavailable: 3.1.1's catch-all refusal (0x88, 0x89 and the rest).
        _ => 3,
    }
}

/// The 3.1.1 SUBACK return code for an MQTT 5 reason code: the granted QoS, or 0x80.
#[inline]
pub(super) fn suback_return_code(code: ReasonCode) -> u8 {
    if code.is_error() {
        SUBACK_FAILURE
    } else {
        debug_assert!(code.0 <= 2, "SUBACK reason {code:?} is not a granted QoS");
        code.0
    }
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP.
#[inline]
pub(super) fn put_ack(buf: &mut BytesMut, first: u8, a: &Ack, v5: bool) {
    let has_properties = v5 && !a.properties.is_empty();
    if !v5 || (a.reason == ReasonCode::SUCCESS && !has_properties) {
        put_fixed_header(buf, first, 2);
        buf.put_u16(a.packet_id.get());
    } else if !has_properties {
        // The reason and an empty Property Length: the spec allows dropping the
        // latter, but clients exist (rumqttc 0.24) that cannot parse that form.
        put_fixed_header(buf, first, 4);
        buf.put_u16(a.packet_id.get());
        buf.put_u8(a.reason.0);
        buf.put_u8(0);
    } else {
        let props = properties_len(&a.properties);
        put_fixed_header(buf, first, 3 + property_block_len(props));
        buf.put_u16(a.packet_id.get());
        buf.put_u8(a.reason.0);
        put_properties(buf, &a.properties, props);
    }
}

/// The remaining length of an MQTT 5 ack of a PUBLISH, as [`put_ack`] writes it.
#[inline]
pub(super) fn ack_len_v5(a: &Ack) -> usize {
    if a.properties.is_empty() {
        if a.reason == ReasonCode::SUCCESS {
            2
        } else {
            4
        }
    } else {
        3 + property_block_len(properties_len(&a.properties))
    }
}

/// MQTT 5 DISCONNECT and AUTH: nothing for Success without properties; else the
/// reason and the properties (an empty Property Length included: the spec lets a
/// DISCONNECT drop it, but clients exist, rumqttc 0.24 among them, that cannot parse
/// that form and lose the reason).
#[inline]
pub(super) fn put_reason_and_properties(
    buf: &mut BytesMut,
    first: u8,
    reason: ReasonCode,
    properties: &Properties,
) {
    match reason_and_properties_len(reason, properties) {
        0 => put_fixed_header(buf, first, 0),
        remaining => {
            put_fixed_header(buf, first, remaining);
            buf.put_u8(reason.0);
            put_properties(buf, properties, remaining - 1 - vbi_len(remaining - 1));
        }
    }
}

#[inline]
pub(super) fn reason_and_properties_len(reason: ReasonCode, properties: &Properties) -> usize {
    if !properties.is_empty() {
        1 + property_block_len(properties_len(properties))
    } else if reason == ReasonCode::SUCCESS {
        0
    } else {
        // The reason and an empty property block.
        2
    }
}

/// A PUBLISH borrowed from its parts, without a [`Packet`]: the broker's fan-out
/// writes one message for many subscribers, each with its own QoS, packet id,
/// subscription identifiers, expiry and alias. [`PublishView::measure`] computes the
/// lengths once; the [`MeasuredPublish`] it returns tells the size (what a client's
/// Maximum Packet Size is compared with [MQTT-3.1.2-24]) and writes the packet from
/// the same data. [`encode`] of a [`Publish`] writes the same bytes.
#[derive(Clone, Copy, Debug)]
pub struct PublishView<'a> {
    /// A valid topic name ([`TopicName::as_str`]), or empty when the properties carry
    /// a Topic Alias the receiver knows (MQTT 5) [MQTT-3.3.2.3.4]. Not checked here.
    pub topic: &'a str,
    /// The application message.
    pub payload: &'a [u8],
    /// The QoS the PUBLISH goes out with.
    pub qos: QoS,
    /// Written at QoS 1 and 2 only; must be set by then [MQTT-2.3.1-5].
    pub packet_id: Option<PacketId>,
    /// The RETAIN flag.
    pub retain: bool,
    /// Never set at QoS 0 [MQTT-3.3.1-2].
    pub dup: bool,
    /// Written in MQTT 5 only.
    pub properties: PublishProperties<'a>,
}

impl<'a> PublishView<'a> {
    /// The view of a decoded (or built) PUBLISH.
    #[inline]
    pub fn of(p: &'a Publish) -> Self {
        let mut properties =
            p.properties.as_deref().map_or_else(PublishProperties::default, PublishProperties::of);
        let topic = match &p.topic {
            PublishTopic::Name(topic) => topic.as_str(),
            PublishTopic::Alias(alias) => {
                properties.topic_alias = Some(*alias);
                ""
            }
        };
        PublishView {
            topic,
            payload: &p.payload,
            qos: p.qos.qos(),
            packet_id: p.qos.packet_id(),
            retain: p.retain,
            dup: p.dup,
            properties,
        }
    }

    /// Computes the lengths of the packet in `protocol`'s layout.
    // Borrows rather than moves the view: copying it back (its flags were just
    // written byte by byte) stalls store forwarding, 8 ns per PUBLISH.
    #[inline]
    pub fn measure(&self, protocol: ProtocolVersion) -> MeasuredPublish<'_, 'a> {
        let properties_len = protocol.is_v5().then(|| self.properties.len());
        let remaining = publish_remaining_len(self.topic, self.payload.len(), self.qos)
            + properties_len.map_or(0, property_block_len);
        MeasuredPublish { view: self, packet_id: self.packet_id, properties_len, remaining }
    }
}

/// A [`PublishView`] with its lengths computed for one protocol layout. The lengths
/// depend on the QoS, not on the packet id, so the id may be set after measuring.
#[derive(Clone, Copy, Debug)]
pub struct MeasuredPublish<'v, 'a> {
    view: &'v PublishView<'a>,
    /// The view's packet id, or the one set since.
    packet_id: Option<PacketId>,
    /// The bytes of the properties (MQTT 5), Property Length excluded.
    properties_len: Option<usize>,
    remaining: usize,
}

impl MeasuredPublish<'_, '_> {
    /// The size of the packet, fixed header included. Above [`PACKET_SIZE_MAX`], the
    /// packet cannot be framed and must not be encoded.
    #[inline]
    pub fn size(&self) -> usize {
        1 + vbi_len(self.remaining) + self.remaining
    }

    /// Sets the packet id of a QoS 1 or 2 PUBLISH.
    #[inline]
    pub fn set_packet_id(&mut self, id: PacketId) {
        debug_assert!(self.view.qos != QoS::AtMostOnce, "QoS 0 has no packet id");
        self.packet_id = Some(id);
    }

    /// Appends the packet to `buf`.
    ///
    /// # Panics
    ///
    /// If the packet cannot be framed ([`MeasuredPublish::size`] above
    /// [`PACKET_SIZE_MAX`], a topic or string property longer than 65535 bytes) or
    /// is at QoS 1 or 2 without a packet id [MQTT-2.3.1-5].
    // Inlined: `encode` of a Packet and the fan-out call it once per PUBLISH.
    #[inline(always)]
    pub fn encode(&self, buf: &mut BytesMut) {
        let v = self.view;
        debug_assert!(!(v.dup && v.qos == QoS::AtMostOnce), "[MQTT-3.3.1-2]");
        debug_assert!(
            !v.topic.is_empty() || self.properties_len.is_some(),
            "an aliased topic in MQTT 3"
        );
        put_fixed_header(buf, publish_first_byte(v.qos, v.retain, v.dup), self.remaining);
        put_binary(buf, v.topic.as_bytes());
        if v.qos != QoS::AtMostOnce {
            let id =
                self.packet_id.expect("a PUBLISH at QoS 1 or 2 needs a packet id [MQTT-2.3.1-5]");
            buf.put_u16(id.get());
        }
        if let Some(len) = self.properties_len {
            v.properties.put(buf, len);
        }
        buf.put_slice(v.payload);
    }
}

#[inline]
pub(super) fn publish_first_byte(qos: QoS, retain: bool, dup: bool) -> u8 {
    let mut first = (PUBLISH << 4) | ((qos as u8) << PUBLISH_QOS_SHIFT);
    if dup {
        first |= PUBLISH_DUP;
    }
    if retain {
        first |= PUBLISH_RETAIN;
    }
    first
}

#[inline]
pub(super) fn put_connect(buf: &mut BytesMut, c: &Connect) {
    let v5 = c.protocol.is_v5();
    debug_assert!(v5 || c.password.is_none() || c.username.is_some(), "[MQTT-3.1.2-22]");
    let (name, level) = match c.protocol {
        ProtocolVersion::V31 => (PROTOCOL_NAME_V31, 3),
        ProtocolVersion::V311 => (PROTOCOL_NAME_V311, 4),
        ProtocolVersion::V5 => (PROTOCOL_NAME_V311, 5),
    };
    put_binary(buf, name);
    buf.put_u8(level);
    let mut flags = 0;
    if c.clean_session {
        flags |= CONNECT_CLEAN_SESSION;
    }
    if let Some(will) = &c.will {
        flags |= CONNECT_WILL | ((will.qos as u8) << CONNECT_WILL_QOS_SHIFT);
        if will.retain {
            flags |= CONNECT_WILL_RETAIN;
        }
    }
    if c.username.is_some() {
        flags |= CONNECT_USERNAME;
    }
    if c.password.is_some() {
        flags |= CONNECT_PASSWORD;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive_secs);
    if v5 {
        put_properties(buf, &c.properties, properties_len(&c.properties));
    }
    put_binary(buf, c.client_id.as_bytes());
    if let Some(will) = &c.will {
        if v5 {
            put_properties(buf, &will.properties, properties_len(&will.properties));
        }
        put_binary(buf, will.topic.as_str().as_bytes());
        put_binary(buf, &will.payload);
    }
    if let Some(username) = &c.username {
        put_binary(buf, username.as_bytes());
    }
    if let Some(password) = &c.password {
        put_binary(buf, password);
    }
}

/// Bytes of variable header and payload, as [`encode`] writes them.
#[inline]
pub(super) fn remaining_len(packet: &Packet, protocol: ProtocolVersion) -> usize {
    let v5 = protocol.is_v5();
    let block = |p: &Properties| property_block_len(properties_len(p));
    match packet {
        Packet::Connect(c) => {
            let v5 = c.protocol.is_v5();
            let name = match c.protocol {
                ProtocolVersion::V31 => PROTOCOL_NAME_V31.len(),
                ProtocolVersion::V311 | ProtocolVersion::V5 => PROTOCOL_NAME_V311.len(),
            };
            // name, level, flags, keep-alive, client id
            field(name)
                + 1
                + 1
                + 2
                + if v5 { block(&c.properties) } else { 0 }
                + field(c.client_id.len())
                + c.will.as_ref().map_or(0, |w| {
                    let properties = if v5 { block(&w.properties) } else { 0 };
                    properties + field(w.topic.as_str().len()) + field(w.payload.len())
                })
                + c.username.as_ref().map_or(0, |u| field(u.len()))
                + c.password.as_ref().map_or(0, |p| field(p.len()))
        }
        Packet::ConnAck(a) => 2 + if v5 { block(&a.properties) } else { 0 },
        Packet::Publish(p) => PublishView::of(p).measure(protocol).remaining,
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            if v5 {
                ack_len_v5(a)
            } else {
                2
            }
        }
        Packet::Subscribe(s) => subscribe_len(s, v5.then(|| properties_len(&s.properties))),
        Packet::SubAck(s) => codes_len(&s.codes, v5.then(|| properties_len(&s.properties))),
        Packet::Unsubscribe(u) => unsubscribe_len(u, v5.then(|| properties_len(&u.properties))),
        Packet::UnsubAck(u) => {
            if v5 {
                codes_len(&u.codes, Some(properties_len(&u.properties)))
            } else {
                2
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => {
            if v5 {
                reason_and_properties_len(d.reason, &d.properties)
            } else {
                0
            }
        }
        Packet::Auth(a) => reason_and_properties_len(a.reason, &a.properties),
    }
}

/// SUBSCRIBE: packet id, property block (MQTT 5, `props` bytes of properties),
/// filters with their options byte.
#[inline]
pub(super) fn subscribe_len(s: &Subscribe, props: Option<usize>) -> usize {
    2 + props.map_or(0, property_block_len)
        + s.filters.iter().map(|f| field(f.filter.as_str().len()) + 1).sum::<usize>()
}

/// UNSUBSCRIBE: packet id, property block (MQTT 5), filters.
#[inline]
pub(super) fn unsubscribe_len(u: &Unsubscribe, props: Option<usize>) -> usize {
    2 + props.map_or(0, property_block_len)
        + u.filters.iter().map(|f| field(f.as_str().len())).sum::<usize>()
}

/// SUBACK and MQTT 5 UNSUBACK: packet id, property block (MQTT 5), one byte per code.
#[inline]
pub(super) fn codes_len(codes: &[ReasonCode], props: Option<usize>) -> usize {
    2 + props.map_or(0, property_block_len) + codes.len()
}

#[inline]
pub(super) fn publish_remaining_len(topic: &str, payload_len: usize, qos: QoS) -> usize {
    let packet_id = if qos == QoS::AtMostOnce { 0 } else { 2 };
    2 + topic.len() + packet_id + payload_len
}
