//! Decoders of the MQTT 3.1 / 3.1.1 layouts, and of CONNECT at every level (its
//! own protocol level decides its layout). Where a packet type has an MQTT 5
//! layout, its decoder hands over to the one in [`super::v5`].

use super::*;

#[inline]
pub(super) fn decode_connect(
    mut r: Reader,
    minimal_len: bool,
) -> Result<Option<Packet>, DecodeError> {
    const TRUNCATED: ProtocolViolation =
        violation("MQTT-3.1.4-1", "CONNECT variable header truncated");

    // The protocol name is compared as bytes: anything but the two known names is
    // refused, so there is no need to check it as UTF-8 first.
    let name = r.binary(violation("MQTT-3.1.2-1", "protocol name missing"))?;
    let level = r.u8(TRUNCATED)?;
    let protocol = match (&name[..], level) {
        (PROTOCOL_NAME_V311, 4) => ProtocolVersion::V311,
        (PROTOCOL_NAME_V311, 5) => ProtocolVersion::V5,
        (PROTOCOL_NAME_V31, 3) => ProtocolVersion::V31,
        // A known name at another level (e.g. MQTT 6): answer CONNACK 0x01 (0x84).
        // The rest is not parsed: its layout depends on the level.
        (PROTOCOL_NAME_V311 | PROTOCOL_NAME_V31, _) => {
            return Err(DecodeError::UnsupportedProtocolLevel(level))
        }
        _ => return Err(violation("MQTT-3.1.2-1", "unknown protocol name").into()),
    };
    // CONNECT's own level decides its layout and the numbering its errors cite,
    // whatever the connection's limits say.
    let v5 = protocol.is_v5();
    r.v5 = v5;
    // Limits::protocol was not MQTT 5 (a first CONNECT), so the fixed header could
    // not refuse this.
    if v5 && !minimal_len {
        return Err(NON_MINIMAL_VBI.into());
    }

    // The flag rules below have the same numbers in 3.1.1 and 5.0.
    let flags = r.u8(TRUNCATED)?;
    if flags & CONNECT_RESERVED != 0 {
        return Err(violation("MQTT-3.1.2-3", "CONNECT reserved flag must be 0").into());
    }
    let will_flag = flags & CONNECT_WILL != 0;
    let will_qos_bits = (flags & CONNECT_WILL_QOS) >> CONNECT_WILL_QOS_SHIFT;
    let will_retain = flags & CONNECT_WILL_RETAIN != 0;
    let username_flag = flags & CONNECT_USERNAME != 0;
    let password_flag = flags & CONNECT_PASSWORD != 0;
    // Without a will, its QoS and retain bits must be 0 [MQTT-3.1.2-11]; the two
    // bits have their own, more specific statements.
    if !will_flag && will_qos_bits != 0 {
        return Err(violation("MQTT-3.1.2-13", "will QoS set without the will flag").into());
    }
    if !will_flag && will_retain {
        return Err(violation("MQTT-3.1.2-15", "will retain set without the will flag").into());
    }
    let Some(will_qos) = QoS::from_bits(will_qos_bits) else {
        return Err(violation("MQTT-3.1.2-14", "will QoS 3").into());
    };
    // MQTT 5 allows a password without a user name (section 3.1.2.9).
    if !v5 && password_flag && !username_flag {
        return Err(violation("MQTT-3.1.2-22", "password flag set without user name flag").into());
    }
    let keep_alive_secs = r.u16(TRUNCATED)?;
    let properties: Props = if v5 {
        let properties = decode_properties(&mut r, &CONNECT_PROPERTIES)?;
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(protocol_error(
                "MQTT-3.1.2.11.10",
                "Authentication Data without Authentication Method",
            )
            .into());
        }
        properties.into()
    } else {
        Props::default()
    };

    // The payload: fields in this order, each present exactly when its flag says so
    // [MQTT-3.1.3-1].
    let client_id = r.string(violation("MQTT-3.1.3-3", "client identifier missing"))?;
    let will = if will_flag {
        const MISSING: ProtocolViolation =
            violation("MQTT-3.1.2-9", "will flag set but will topic or message missing");
        let properties =
            if v5 { decode_properties(&mut r, &WILL_PROPERTIES)?.into() } else { Props::default() };
        let topic = topic_name(r.utf8(MISSING)?, v5)?;
        let payload = r.binary(MISSING)?;
        Some(LastWill { topic, payload, qos: will_qos, retain: will_retain, properties })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string(violation("MQTT-3.1.2-19", "user name flag set but user name missing"))?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary(violation("MQTT-3.1.2-21", "password flag set but password missing"))?)
    } else {
        None
    };
    // Whatever is left is a field whose flag is 0 [MQTT-3.1.2-11], [MQTT-3.1.2-18],
    // [MQTT-3.1.2-20], or garbage; which one cannot be told apart.
    r.finish(violation("MQTT-3.1.4-1", "bytes left over after the CONNECT payload"))?;
    Ok(Some(Packet::Connect(Connect {
        protocol,
        clean_session: flags & CONNECT_CLEAN_SESSION != 0,
        keep_alive_secs,
        client_id,
        will,
        username,
        password,
        properties,
    })))
}

/// MQTT 3 CONNACK: the return code is mapped to its MQTT 5 reason code.
#[inline]
pub(super) fn decode_connack(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    // The fixed header checked that the remaining length is 2.
    const SHORT: ProtocolViolation = violation("MQTT-3.2.1", "CONNACK remaining length must be 2");
    let ack_flags = r.u8(SHORT)?;
    if ack_flags & 0xFE != 0 {
        return Err(violation("MQTT-3.2.2.1", "CONNACK reserved flags must be 0").into());
    }
    let session_present = ack_flags & 0x01 != 0;
    let reason = match r.u8(SHORT)? {
        0 => ReasonCode::SUCCESS,
        1 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        2 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        3 => ReasonCode::SERVER_UNAVAILABLE,
        4 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        5 => ReasonCode::NOT_AUTHORIZED,
        _ => return Err(violation("MQTT-3.2.2.3", "reserved CONNACK return code").into()),
    };
    if session_present && reason != ReasonCode::SUCCESS {
        return Err(violation(
            "MQTT-3.2.2-4",
            "CONNACK refuses the connection but sets session present",
        )
        .into());
    }
    Ok(Some(Packet::ConnAck(ConnAck { session_present, reason, properties: Props::default() })))
}

/// MQTT 3 PUBLISH, built in place in the return value (see [`decode_body`]).
#[inline]
pub(super) fn decode_publish(first: u8, mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    let Some(qos) = QoS::from_bits((first >> PUBLISH_QOS_SHIFT) & 0x03) else {
        // check_first_byte refused QoS 3 already; answer as it does rather than panic.
        return Err(violation("MQTT-3.3.1-4", "PUBLISH with QoS 3").into());
    };
    let topic = r.binary(violation("MQTT-3.3.2-1", "PUBLISH topic name missing"))?;
    // The packet id is read before the topic is checked, and its error raised after
    // the topic's, as if read in order. The reason is speed: the reader's last write
    // (consuming the packet id) then has the topic check's time to reach the cache
    // before the payload is read back from the reader; read back at once, it stalls
    // store forwarding, which costs a QoS 1 PUBLISH a few percent.
    let qos = match qos {
        QoS::AtMostOnce => Ok(PublishQoS::AtMostOnce),
        qos => r.packet_id().map(|id| PublishQoS::new(qos, id)),
    };
    // Topic names skip `Reader::string`'s U+0000 scan: the topic validator scans for
    // it along with the wildcards.
    let topic = ByteString::try_from(topic).map_err(|_| NOT_UTF8)?;
    let topic = TopicName::try_from(topic)?;
    let qos = qos?;
    Ok(Some(Packet::Publish(Publish {
        dup: first & PUBLISH_DUP != 0,
        qos,
        retain: first & PUBLISH_RETAIN != 0,
        topic: PublishTopic::Name(topic),
        // The payload is whatever follows, possibly nothing [MQTT-3.3.3].
        payload: r.buf,
        properties: None,
    })))
}

#[inline]
pub(super) fn decode_subscribe(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    if r.v5 {
        return decode_subscribe_v5(r);
    }
    const TRUNCATED: ProtocolViolation =
        violation("MQTT-3.8.3", "SUBSCRIBE topic filter or requested QoS truncated");
    let packet_id = r.packet_id()?;
    let mut filters = Vec::new();
    while !r.buf.is_empty() {
        let filter = TopicFilter::try_from(r.utf8(TRUNCATED)?)?;
        let options = r.u8(TRUNCATED)?;
        // Bits 7-2 are reserved and QoS 3 does not exist.
        let qos = match QoS::from_bits(options) {
            Some(qos) => qos,
            // The specification numbers this statement "3-8.3-4", sic.
            None => {
                return Err(violation(
                    "MQTT-3-8.3-4",
                    "SUBSCRIBE requested QoS byte must be 0, 1 or 2",
                )
                .into())
            }
        };
        filters.push(SubscribeFilter::new(filter, qos));
    }
    if filters.is_empty() {
        return Err(violation("MQTT-3.8.3-3", "SUBSCRIBE without a topic filter").into());
    }
    Ok(Some(Packet::Subscribe(Subscribe { packet_id, filters, properties: Props::default() })))
}

#[inline]
pub(super) fn decode_suback(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties =
        if r.v5 { decode_properties(&mut r, &SUBACK_PROPERTIES)? } else { Properties::default() };
    let v5 = r.v5;
    let codes = r
        .buf
        .iter()
        .map(|&code| {
            if v5 {
                if SUBACK_REASONS.contains(code) {
                    Ok(ReasonCode(code))
                } else {
                    Err(protocol_error("MQTT-3.9.3-2", "reason code not allowed in SUBACK"))
                }
            } else if code == SUBACK_FAILURE || QoS::from_bits(code).is_some() {
                // 3.1.1's return codes are MQTT 5's reason codes of the same value.
                Ok(ReasonCode(code))
            } else {
                Err(violation("MQTT-3.9.3-2", "reserved SUBACK return code"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One code per filter of the SUBSCRIBE, which has at least one.
    if codes.is_empty() {
        return Err(violation("MQTT-3.9.3", "SUBACK without a return code").into());
    }
    Ok(Some(Packet::SubAck(SubAck { packet_id, codes, properties: properties.into() })))
}

#[inline]
pub(super) fn decode_unsubscribe(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    const TRUNCATED: ProtocolViolation =
        violation("MQTT-3.10.3", "UNSUBSCRIBE topic filter truncated");
    let packet_id = r.packet_id()?;
    let v5 = r.v5;
    let properties: Props = if v5 {
        decode_properties(&mut r, &UNSUBSCRIBE_PROPERTIES)?.into()
    } else {
        Props::default()
    };
    let mut filters = Vec::new();
    while !r.buf.is_empty() {
        filters.push(topic_filter(r.utf8(TRUNCATED)?, v5)?);
    }
    if filters.is_empty() {
        return Err(if v5 {
            protocol_error("MQTT-3.10.3-2", "UNSUBSCRIBE without a topic filter")
        } else {
            violation("MQTT-3.10.3-2", "UNSUBSCRIBE without a topic filter")
        }
        .into());
    }
    Ok(Some(Packet::Unsubscribe(Unsubscribe { packet_id, filters, properties })))
}

/// UNSUBACK: the packet id alone in MQTT 3 (the fixed header checked the length);
/// properties and one reason code per filter in MQTT 5.
#[inline]
pub(super) fn decode_unsuback(mut r: Reader) -> Result<Option<Packet>, DecodeError> {
    let packet_id = r.packet_id()?;
    if !r.v5 {
        return Ok(Some(Packet::UnsubAck(UnsubAck {
            packet_id,
            codes: Vec::new(),
            properties: Props::default(),
        })));
    }
    let properties = decode_properties(&mut r, &UNSUBACK_PROPERTIES)?;
    let codes = r
        .buf
        .iter()
        .map(|&code| {
            if UNSUBACK_REASONS.contains(code) {
                Ok(ReasonCode(code))
            } else {
                Err(protocol_error("MQTT-3.11.3-2", "reason code not allowed in UNSUBACK"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One code per filter of the UNSUBSCRIBE, which has at least one.
    if codes.is_empty() {
        return Err(violation("MQTT-3.11.3", "UNSUBACK without a reason code").into());
    }
    Ok(Some(Packet::UnsubAck(UnsubAck { packet_id, codes, properties: properties.into() })))
}
