//! Decoders of the MQTT 5 layouts [MQTT-2.2.2]: reason codes and the reason codes
//! each packet type may carry, and the acknowledgements of a PUBLISH (whose MQTT 3
//! form is the MQTT 5 one without reason and properties).

use super::*;

#[inline]
pub(super) fn decode_connack_v5(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    const SHORT: ProtocolViolation = violation("MQTT-3.2.2", "CONNACK variable header truncated");
    let ack_flags = r.u8(SHORT)?;
    if ack_flags & 0xFE != 0 {
        return Err(violation("MQTT-3.2.2-1", "CONNACK reserved flags must be 0").into());
    }
    let session_present = ack_flags & 0x01 != 0;
    const BAD_REASON: ProtocolViolation =
        protocol_error("MQTT-3.2.2-8", "reason code not allowed in CONNACK");
    let reason = r.reason(SHORT, &CONNACK_REASONS, &BAD_REASON)?;
    if session_present && reason != ReasonCode::SUCCESS {
        return Err(protocol_error(
            "MQTT-3.2.2-6",
            "CONNACK refuses the connection but sets session present",
        )
        .into());
    }
    let properties = decode_properties(&mut r, &CONNACK_PROPERTIES)?;
    r.finish(violation("MQTT-3.2.3", "CONNACK has no payload"))?;
    Ok(Some(Packet::ConnAck(ConnAck { session_present, reason, properties: properties.into() })))
}

/// MQTT 5 PUBLISH, built in place in the return value (see [`decode_body`]).
#[inline]
pub(super) fn decode_publish_v5(first: u8, mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    let Some(qos) = QoS::from_bits((first >> PUBLISH_QOS_SHIFT) & 0x03) else {
        return Err(violation("MQTT-3.3.1-4", "PUBLISH with QoS 3").into());
    };
    let topic = r.utf8(violation("MQTT-3.3.2-1", "PUBLISH topic name missing"))?;
    // An empty topic is valid only with a Topic Alias, which the properties after the
    // packet id tell.
    let topic = if topic.is_empty() { None } else { Some(topic_name(topic, true)?) };
    let qos = match qos {
        QoS::AtMostOnce => PublishQoS::AtMostOnce,
        qos => PublishQoS::new(qos, r.packet_id()?),
    };
    let mut properties = decode_optional_properties(&mut r, &PUBLISH_PROPERTIES)?;
    let topic = match topic {
        Some(topic) => PublishTopic::Name(topic),
        None => {
            // The alias moves from the properties into the topic, so that one place
            // says it.
            let Some(alias) = properties.as_mut().and_then(|p| p.topic_alias.take()) else {
                return Err(protocol_error(
                    "MQTT-3.3.2.1",
                    "PUBLISH with an empty topic name and no Topic Alias",
                )
                .into());
            };
            if properties.as_ref().is_some_and(|p| p.is_empty()) {
                properties = None;
            }
            PublishTopic::Alias(alias)
        }
    };
    Ok(Some(Packet::Publish(Publish {
        dup: first & PUBLISH_DUP != 0,
        qos,
        retain: first & PUBLISH_RETAIN != 0,
        topic,
        payload: r.buf,
        properties,
    })))
}

/// What tells the four acknowledgements of a PUBLISH apart in MQTT 5.
pub(super) struct AckRules {
    pub(super) reasons: ReasonSet,
    pub(super) bad_reason: ProtocolViolation,
    pub(super) properties: PropertySet,
    pub(super) leftover: ProtocolViolation,
}

pub(super) const PUBACK_RULES: AckRules = AckRules {
    reasons: PUBACK_REASONS,
    bad_reason: protocol_error("MQTT-3.4.2-1", "reason code not allowed in PUBACK"),
    properties: PropertySet::of(Carrier::PubAck, "property not allowed in PUBACK"),
    leftover: violation("MQTT-3.4.3", "PUBACK has no payload"),
};
pub(super) const PUBREC_RULES: AckRules = AckRules {
    // PUBREC allows the same codes as PUBACK (section 3.5.2.1).
    reasons: PUBACK_REASONS,
    bad_reason: protocol_error("MQTT-3.5.2-1", "reason code not allowed in PUBREC"),
    properties: PropertySet::of(Carrier::PubRec, "property not allowed in PUBREC"),
    leftover: violation("MQTT-3.5.3", "PUBREC has no payload"),
};
pub(super) const PUBREL_RULES: AckRules = AckRules {
    reasons: PUBREL_REASONS,
    bad_reason: protocol_error("MQTT-3.6.2-1", "reason code not allowed in PUBREL"),
    properties: PropertySet::of(Carrier::PubRel, "property not allowed in PUBREL"),
    leftover: violation("MQTT-3.6.3", "PUBREL has no payload"),
};
pub(super) const PUBCOMP_RULES: AckRules = AckRules {
    // PUBCOMP allows the same codes as PUBREL (section 3.7.2.1).
    reasons: PUBREL_REASONS,
    bad_reason: protocol_error("MQTT-3.7.2-1", "reason code not allowed in PUBCOMP"),
    properties: PropertySet::of(Carrier::PubComp, "property not allowed in PUBCOMP"),
    leftover: violation("MQTT-3.7.3", "PUBCOMP has no payload"),
};

/// PUBACK, PUBREC, PUBREL, PUBCOMP, built in place as `packet` (see
/// [`decode_body`]). In MQTT 5 the reason code and the properties are optional: a
/// remaining length of 2 means Success without properties, 3 a reason code without
/// properties [MQTT-3.4.2.1], [MQTT-3.4.2.2.1].
#[inline]
pub(super) fn decode_ack(
    mut r: Reader,
    rules: &AckRules,
    packet: fn(Ack) -> Packet,
) -> Result<Option<Packet>, DecodeError> {
    // In MQTT 3 the fixed header checked that the remaining length is 2: nothing is
    // left over.
    let packet_id = r.packet_id()?;
    if r.buf.is_empty() {
        return Ok(Some(packet(Ack::new(packet_id))));
    }
    // Not empty, so this is MQTT 5: MQTT 3 acks are 2 bytes exactly.
    let reason = r.reason(NOT_REACHED, &rules.reasons, &rules.bad_reason)?;
    let properties = if r.buf.is_empty() {
        Properties::default()
    } else {
        decode_properties(&mut r, &rules.properties)?
    };
    if !r.buf.is_empty() {
        return Err(rules.leftover.clone().into());
    }
    Ok(Some(packet(Ack { packet_id, reason, properties: properties.into() })))
}

/// Never raised: the caller checked that the byte is there.
pub(super) const NOT_REACHED: ProtocolViolation = violation("MQTT-2.2", "truncated");

#[inline]
pub(super) fn decode_subscribe_v5(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    const TRUNCATED: ProtocolViolation =
        violation("MQTT-3.8.3", "SUBSCRIBE topic filter or subscription options truncated");
    let packet_id = r.packet_id()?;
    let properties = decode_properties(&mut r, &SUBSCRIBE_PROPERTIES)?;
    let mut filters = Vec::new();
    while !r.buf.is_empty() {
        let filter = topic_filter(r.utf8(TRUNCATED)?, true)?;
        let options = r.u8(TRUNCATED)?;
        if options & OPTION_RESERVED != 0 {
            return Err(violation(
                "MQTT-3.8.3-5",
                "SUBSCRIBE subscription options reserved bits must be 0",
            )
            .into());
        }
        let Some(qos) = QoS::from_bits(options & OPTION_QOS) else {
            return Err(protocol_error("MQTT-3.8.3.1", "SUBSCRIBE Maximum QoS 3").into());
        };
        let retain_handling = match options >> OPTION_RETAIN_HANDLING_SHIFT {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(protocol_error("MQTT-3.8.3.1", "SUBSCRIBE Retain Handling 3").into()),
        };
        let no_local = options & OPTION_NO_LOCAL != 0;
        // The filter shows whether the subscription is shared, so the codec can check
        // this rule rather than leave it to the connection.
        if no_local && filter.is_shared() {
            return Err(
                protocol_error("MQTT-3.8.3-4", "No Local set on a shared subscription").into()
            );
        }
        filters.push(SubscribeFilter {
            filter,
            qos,
            no_local,
            retain_as_published: options & OPTION_RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        });
    }
    if filters.is_empty() {
        return Err(protocol_error("MQTT-3.8.3-2", "SUBSCRIBE without a topic filter").into());
    }
    Ok(Some(Packet::Subscribe(Subscribe { packet_id, filters, properties: properties.into() })))
}

/// MQTT 5 DISCONNECT: remaining length 0 means Normal disconnection (0x00) without
/// properties, 1 a reason code without properties [MQTT-3.14.2.1], [MQTT-3.14.2.2.1].
#[inline]
pub(super) fn decode_disconnect_v5(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    if r.buf.is_empty() {
        return Ok(Some(Packet::Disconnect(Disconnect::default())));
    }
    const BAD_REASON: ProtocolViolation =
        protocol_error("MQTT-3.14.2-1", "reason code not allowed in DISCONNECT");
    let reason = r.reason(NOT_REACHED, &DISCONNECT_REASONS, &BAD_REASON)?;
    let properties = if r.buf.is_empty() {
        Properties::default()
    } else {
        decode_properties(&mut r, &DISCONNECT_PROPERTIES)?
    };
    r.finish(violation("MQTT-3.14.3", "DISCONNECT has no payload"))?;
    Ok(Some(Packet::Disconnect(Disconnect { reason, properties: properties.into() })))
}

/// AUTH: remaining length 0 means Success without properties [MQTT-3.15.2.1]; else a
/// reason code and the properties. Unlike DISCONNECT's, AUTH's Property Length may
/// only be omitted together with the reason code (section 3.15.2.2.1).
#[inline]
pub(super) fn decode_auth(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    if r.buf.is_empty() {
        return Ok(Some(Packet::Auth(Auth {
            reason: ReasonCode::SUCCESS,
            properties: Props::default(),
        })));
    }
    const BAD_REASON: ProtocolViolation =
        protocol_error("MQTT-3.15.2-1", "reason code not allowed in AUTH");
    let reason = r.reason(NOT_REACHED, &AUTH_REASONS, &BAD_REASON)?;
    let properties = decode_properties(&mut r, &AUTH_PROPERTIES)?;
    r.finish(violation("MQTT-3.15.3", "AUTH has no payload"))?;
    Ok(Some(Packet::Auth(Auth { reason, properties: properties.into() })))
}

/// A set of reason codes, one bit per value.
pub(super) struct ReasonSet([u64; 4]);

impl ReasonSet {
    pub(super) const fn of(codes: &[u8]) -> ReasonSet {
        let mut bits = [0u64; 4];
        let mut i = 0;
        while i < codes.len() {
            let code = codes[i];
            bits[(code >> 6) as usize] |= 1 << (code & 63);
            i += 1;
        }
        ReasonSet(bits)
    }

    #[inline]
    pub(super) fn contains(&self, code: u8) -> bool {
        self.0[usize::from(code >> 6)] & (1 << (code & 63)) != 0
    }
}

// The reason codes each packet type may carry: Tables 3-1, 3-4 (PUBACK and PUBREC),
// 3-6 (PUBREL and PUBCOMP), 3-8, 3-9, 3-10 and 3-11 of MQTT 5.0.
pub(super) const CONNACK_REASONS: ReasonSet = ReasonSet::of(&[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
]);
pub(super) const PUBACK_REASONS: ReasonSet =
    ReasonSet::of(&[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]);
pub(super) const PUBREL_REASONS: ReasonSet = ReasonSet::of(&[0x00, 0x92]);
pub(super) const SUBACK_REASONS: ReasonSet =
    ReasonSet::of(&[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2]);
pub(super) const UNSUBACK_REASONS: ReasonSet =
    ReasonSet::of(&[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]);
pub(super) const DISCONNECT_REASONS: ReasonSet = ReasonSet::of(&[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
]);
pub(super) const AUTH_REASONS: ReasonSet = ReasonSet::of(&[0x00, 0x18, 0x19]);
