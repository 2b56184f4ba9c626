//! Property tests: every generated packet survives encode -> decode, however the
//! bytes are cut.

use proptest::prelude::*;

use super::*;

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(pid)
}

/// Any UTF-8 without U+0000, up to `max` chars.
fn text(max: usize) -> impl Strategy<Value = ByteString> {
    proptest::collection::vec(any::<char>().prop_filter("no U+0000", |c| *c != '\0'), 0..max)
        .prop_map(|chars| ByteString::from(chars.into_iter().collect::<String>()))
}

fn binary(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Chars biased towards the ones topics care about.
fn topic_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => Just('/'),
        3 => proptest::char::range('a', 'c'),
        1 => Just('$'),
        2 => any::<char>(),
    ]
}

fn topic_name() -> BoxedStrategy<TopicName> {
    proptest::collection::vec(topic_char(), 1..12)
        .prop_filter_map("not a topic name", |chars| {
            TopicName::try_from(chars.into_iter().collect::<String>().as_str()).ok()
        })
        .boxed()
}

fn topic_filter() -> BoxedStrategy<TopicFilter> {
    let level = prop_oneof![
        1 => Just("+".to_owned()),
        4 => proptest::collection::vec(topic_char(), 0..4).prop_map(|chars| {
            chars.into_iter().filter(|c| *c != '/').collect::<String>()
        }),
    ];
    (proptest::collection::vec(level, 1..5), any::<bool>(), any::<bool>())
        .prop_filter_map("not a topic filter", |(levels, hash, shared)| {
            let mut s = levels.join("/");
            if hash {
                s.push_str("/#");
            }
            if shared {
                s = format!("$share/g/{s}");
            }
            TopicFilter::try_from(s.as_str()).ok()
        })
        .boxed()
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    proptest::option::of(0..=1u8)
}

/// Every property with a valid value, each present or not (the codec and Table
/// 2-4 decide which a packet keeps: see [`only`]).
fn any_properties() -> BoxedStrategy<Properties> {
    use proptest::collection::vec;
    use proptest::option::of;
    let message = (
        flag(),
        of(any::<u32>()),
        of(text(8)),
        of(topic_name()),
        of(binary(8)),
        vec(1..=VBI_MAX, 0..3),
        of(1..=u16::MAX),
        vec((text(6), text(6)), 0..3),
        of(any::<u32>()),
    );
    let connection = (
        of(any::<u32>()),
        of(text(8)),
        of(any::<u16>()),
        of(text(8)),
        of(binary(8)),
        flag(),
        flag(),
        of(text(8)),
        of(text(8)),
    );
    let limits = (
        of(text(8)),
        of(1..=u16::MAX),
        of(any::<u16>()),
        flag(),
        flag(),
        of(1..=u32::MAX),
        flag(),
        flag(),
        flag(),
    );
    (message, connection, limits)
        .prop_map(|(message, connection, limits)| {
            let (pfi, mei, ct, rt, cd, sub_ids, alias, user_properties, will_delay) = message;
            let (sei, aci, ska, am, ad, rpi, rri, ri, sr) = connection;
            let (rs, rm, tam, mq, ra, mps, wsa, sia, ssa) = limits;
            Properties {
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                subscription_identifiers: sub_ids,
                session_expiry_interval: sei,
                assigned_client_identifier: aci,
                server_keep_alive: ska,
                authentication_method: am,
                authentication_data: ad,
                request_problem_information: rpi,
                will_delay_interval: will_delay,
                request_response_information: rri,
                response_information: ri,
                server_reference: sr,
                reason_string: rs,
                receive_maximum: rm,
                topic_alias_maximum: tam,
                topic_alias: alias,
                maximum_qos: mq,
                retain_available: ra,
                user_properties,
                maximum_packet_size: mps,
                wildcard_subscription_available: wsa,
                subscription_identifier_available: sia,
                shared_subscription_available: ssa,
            }
        })
        .boxed()
}

/// Keeps the properties Table 2-4 allows in `packet` (see [`TABLE_2_4`]).
fn only(packet: &str, p: Properties) -> Properties {
    let allowed = TABLE_2_4.iter().find(|(name, _)| *name == packet).expect("a packet").1;
    let keep = |id: u8| allowed.contains(&id);
    fn keep_if<T>(keep: bool, value: Option<T>) -> Option<T> {
        value.filter(|_| keep)
    }
    // In CONNECT only with an Authentication Method [MQTT-3.1.2.11.10].
    let has_method = keep(0x15) && p.authentication_method.is_some();
    let mut subscription_identifiers =
        if keep(0x0B) { p.subscription_identifiers } else { Vec::new() };
    if packet == "SUBSCRIBE" {
        subscription_identifiers.truncate(1);
    }
    Properties {
        payload_format_indicator: keep_if(keep(0x01), p.payload_format_indicator),
        message_expiry_interval: keep_if(keep(0x02), p.message_expiry_interval),
        content_type: keep_if(keep(0x03), p.content_type),
        response_topic: keep_if(keep(0x08), p.response_topic),
        correlation_data: keep_if(keep(0x09), p.correlation_data),
        subscription_identifiers,
        session_expiry_interval: keep_if(keep(0x11), p.session_expiry_interval),
        assigned_client_identifier: keep_if(keep(0x12), p.assigned_client_identifier),
        server_keep_alive: keep_if(keep(0x13), p.server_keep_alive),
        authentication_method: keep_if(keep(0x15), p.authentication_method),
        authentication_data: keep_if(
            keep(0x16) && (packet != "CONNECT" || has_method),
            p.authentication_data,
        ),
        request_problem_information: keep_if(keep(0x17), p.request_problem_information),
        will_delay_interval: keep_if(keep(0x18), p.will_delay_interval),
        request_response_information: keep_if(keep(0x19), p.request_response_information),
        response_information: keep_if(keep(0x1A), p.response_information),
        server_reference: keep_if(keep(0x1C), p.server_reference),
        reason_string: keep_if(keep(0x1F), p.reason_string),
        receive_maximum: keep_if(keep(0x21), p.receive_maximum),
        topic_alias_maximum: keep_if(keep(0x22), p.topic_alias_maximum),
        topic_alias: keep_if(keep(0x23), p.topic_alias),
        maximum_qos: keep_if(keep(0x24), p.maximum_qos),
        retain_available: keep_if(keep(0x25), p.retain_available),
        user_properties: if keep(0x26) { p.user_properties } else { Vec::new() },
        maximum_packet_size: keep_if(keep(0x27), p.maximum_packet_size),
        wildcard_subscription_available: keep_if(keep(0x28), p.wildcard_subscription_available),
        subscription_identifier_available: keep_if(keep(0x29), p.subscription_identifier_available),
        shared_subscription_available: keep_if(keep(0x2A), p.shared_subscription_available),
    }
}

/// Valid properties for `packet`, often none at all.
fn properties(packet: &'static str) -> BoxedStrategy<Properties> {
    prop_oneof![
        1 => Just(Properties::default()),
        2 => any_properties().prop_map(move |p| only(packet, p)),
    ]
    .boxed()
}

/// Reason codes from `allowed`.
fn reason(allowed: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(allowed).prop_map(ReasonCode)
}

const CONNACK_CODES_V3: &[u8] = &[0x00, 0x84, 0x85, 0x86, 0x87, 0x88];
const SUBACK_CODES_V3: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_CODES: &[u8] =
    &[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

fn connect(protocol: ProtocolVersion) -> impl Strategy<Value = Connect> {
    let v5 = protocol == V5;
    let props =
        move |packet| if v5 { properties(packet) } else { Just(Properties::default()).boxed() };
    let will = (topic_name(), binary(20), qos(), any::<bool>(), props("will")).prop_map(
        |(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties: properties.into(),
        },
    );
    let protocol = if v5 {
        Just(V5).boxed()
    } else {
        prop_oneof![Just(ProtocolVersion::V31), Just(V3)].boxed()
    };
    (
        protocol,
        any::<bool>(),
        any::<u16>(),
        text(24),
        proptest::option::of(will),
        proptest::option::of(text(12)),
        proptest::option::of(binary(12)),
        props("CONNECT"),
    )
        .prop_map(
            |(
                protocol,
                clean_session,
                keep_alive_secs,
                client_id,
                will,
                username,
                password,
                properties,
            )| {
                // MQTT 3: a password only with a user name [MQTT-3.1.2-22].
                let password = password.filter(|_| protocol == V5 || username.is_some());
                Connect {
                    protocol,
                    clean_session,
                    keep_alive_secs,
                    client_id,
                    will,
                    username,
                    password,
                    properties: properties.into(),
                }
            },
        )
}

fn publish(protocol: ProtocolVersion) -> impl Strategy<Value = Publish> {
    let v5 = protocol == V5;
    let payload = prop_oneof![4 => binary(80), 1 => binary(400)];
    let props = if v5 { properties("PUBLISH") } else { Just(Properties::default()).boxed() };
    (qos(), any::<bool>(), any::<bool>(), topic_name(), packet_id(), payload, props, any::<bool>())
        .prop_map(move |(qos, dup, retain, topic, id, payload, mut properties, aliased)| {
            let at_most_once = qos == QoS::AtMostOnce;
            // An alias alone, without the topic name [MQTT-3.3.2.3.4]: the alias is
            // the topic's, not among the properties.
            let topic = match properties.topic_alias {
                Some(alias) if v5 && aliased => {
                    properties.topic_alias = None;
                    PublishTopic::Alias(alias)
                }
                _ => PublishTopic::Name(topic),
            };
            Publish {
                // DUP only above QoS 0 [MQTT-3.3.1-2].
                dup: dup && !at_most_once,
                qos: PublishQoS::new(qos, id),
                retain,
                topic,
                payload,
                // None, not Some(empty): what decode gives back.
                properties: (!properties.is_empty()).then(|| Box::new(properties)),
            }
        })
}

fn connack(protocol: ProtocolVersion) -> impl Strategy<Value = ConnAck> {
    let v5 = protocol == V5;
    let codes = if v5 { CONNACK_CODES } else { CONNACK_CODES_V3 };
    let props = if v5 { properties("CONNACK") } else { Just(Properties::default()).boxed() };
    (any::<bool>(), reason(codes), props).prop_map(|(session_present, reason, properties)| {
        ConnAck {
            // Session present only with Success [MQTT-3.2.2-6].
            session_present: session_present && reason == ReasonCode::SUCCESS,
            reason,
            properties: properties.into(),
        }
    })
}

fn subscribe_filter(v5: bool) -> impl Strategy<Value = SubscribeFilter> {
    let retain_handling = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend),
    ];
    (topic_filter(), qos(), any::<bool>(), any::<bool>(), retain_handling).prop_map(
        move |(filter, qos, no_local, retain_as_published, retain_handling)| {
            if !v5 {
                return SubscribeFilter::new(filter, qos);
            }
            // No No Local on a shared subscription [MQTT-3.8.3-4].
            let no_local = no_local && !filter.as_str().starts_with("$share/");
            SubscribeFilter { filter, qos, no_local, retain_as_published, retain_handling }
        },
    )
}

/// Any packet valid in `protocol`.
fn packet(protocol: ProtocolVersion) -> BoxedStrategy<Packet> {
    use proptest::collection::vec;
    let v5 = protocol == V5;
    let props =
        move |packet| if v5 { properties(packet) } else { Just(Properties::default()).boxed() };
    let ack = move |packet, codes: &'static [u8]| {
        let reason = if v5 { reason(codes).boxed() } else { Just(ReasonCode::SUCCESS).boxed() };
        (packet_id(), reason, props(packet)).prop_map(|(packet_id, reason, properties)| Ack {
            packet_id,
            reason,
            properties: properties.into(),
        })
    };
    let subscribe = (packet_id(), vec(subscribe_filter(v5), 1..5), props("SUBSCRIBE")).prop_map(
        |(packet_id, filters, properties)| Subscribe {
            packet_id,
            filters,
            properties: properties.into(),
        },
    );
    let suback_codes = if v5 { SUBACK_CODES } else { SUBACK_CODES_V3 };
    let suback = (packet_id(), vec(reason(suback_codes), 1..8), props("SUBACK")).prop_map(
        |(packet_id, codes, properties)| SubAck { packet_id, codes, properties: properties.into() },
    );
    let unsubscribe = (packet_id(), vec(topic_filter(), 1..5), props("UNSUBSCRIBE")).prop_map(
        |(packet_id, filters, properties)| Unsubscribe {
            packet_id,
            filters,
            properties: properties.into(),
        },
    );
    // MQTT 3's UNSUBACK has no codes.
    let unsuback_codes =
        if v5 { vec(reason(UNSUBACK_CODES), 1..8).boxed() } else { Just(Vec::new()).boxed() };
    let unsuback = (packet_id(), unsuback_codes, props("UNSUBACK")).prop_map(
        |(packet_id, codes, properties)| UnsubAck {
            packet_id,
            codes,
            properties: properties.into(),
        },
    );
    let disconnect_reason =
        if v5 { reason(DISCONNECT_CODES).boxed() } else { Just(ReasonCode::SUCCESS).boxed() };
    let disconnect = (disconnect_reason, props("DISCONNECT"))
        .prop_map(|(reason, properties)| Disconnect { reason, properties: properties.into() });
    let auth = (reason(AUTH_CODES), properties("AUTH"))
        .prop_map(|(reason, properties)| Auth { reason, properties: properties.into() });
    prop_oneof![
        2 => connect(protocol).prop_map(Packet::Connect),
        1 => connack(protocol).prop_map(Packet::ConnAck),
        4 => publish(protocol).prop_map(Packet::Publish),
        1 => ack("PUBACK", PUBACK_CODES).prop_map(Packet::PubAck),
        1 => ack("PUBREC", PUBACK_CODES).prop_map(Packet::PubRec),
        1 => ack("PUBREL", PUBREL_CODES).prop_map(Packet::PubRel),
        1 => ack("PUBCOMP", PUBREL_CODES).prop_map(Packet::PubComp),
        2 => subscribe.prop_map(Packet::Subscribe),
        1 => suback.prop_map(Packet::SubAck),
        2 => unsubscribe.prop_map(Packet::Unsubscribe),
        1 => unsuback.prop_map(Packet::UnsubAck),
        1 => Just(Packet::PingReq),
        1 => Just(Packet::PingResp),
        1 => disconnect.prop_map(Packet::Disconnect),
        // AUTH exists in MQTT 5 only.
        1 => auth.prop_map(move |a| if v5 { Packet::Auth(a) } else { Packet::PingResp }),
    ]
    .boxed()
}

fn protocol() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V3), Just(V5)]
}

/// A protocol and a packet valid in it.
fn any_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    protocol().prop_flat_map(|protocol| (Just(protocol), packet(protocol)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn round_trip((protocol, packet) in any_packet()) {
        let mut buf = BytesMut::new();
        encode(&packet, protocol, &mut buf);
        prop_assert_eq!(encoded_len(&packet, protocol), buf.len());
        let decoded = decode(&mut buf, &Limits { protocol, ..Limits::default() });
        prop_assert_eq!(decoded, Ok(Some(packet)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn every_strict_prefix_is_incomplete((protocol, packet) in any_packet()) {
        let bytes = encoded_in(&packet, protocol);
        let limits = Limits { protocol, ..Limits::default() };
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            prop_assert_eq!(decode(&mut buf, &limits), Ok(None));
            prop_assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn split_invariance(
        // The packets of one connection are all in its protocol.
        (protocol, packets) in protocol().prop_flat_map(|protocol| {
            (Just(protocol), proptest::collection::vec(packet(protocol), 1..8))
        }),
        chunks in proptest::collection::vec(1..40usize, 1..20),
    ) {
        let mut stream = BytesMut::new();
        for p in &packets {
            encode(p, protocol, &mut stream);
        }
        let limits = Limits { protocol, ..Limits::default() };
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut sizes = chunks.iter().cycle();
        while !stream.is_empty() {
            let size = (*sizes.next().expect("cycle of a non-empty vec")).min(stream.len());
            buf.extend_from_slice(&stream.split_to(size));
            while let Some(p) = decode(&mut buf, &limits)
                .expect("a stream of valid packets decodes")
            {
                decoded.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, packets);
    }

    /// A delivery's expiry, subscription identifiers and alias written over a
    /// message's properties give the bytes of the PUBLISH rebuilt with them.
    #[test]
    fn publish_view_overrides_match_the_rebuilt_publish(
        p in publish(V5),
        expiry in proptest::option::of(any::<u32>()),
        sub_ids in proptest::collection::vec(1u32..=268_435_455, 0..3),
        alias in proptest::option::of(1u16..),
    ) {
        // The fan-out sends the topic name, with a new alias or none.
        prop_assume!(matches!(p.topic, PublishTopic::Name(_)));
        let delivery = PublishProperties {
            message: p.properties.as_deref(),
            message_expiry_interval: expiry,
            subscription_identifiers: &sub_ids,
            topic_alias: alias,
        };
        let publish = PublishView { properties: delivery, ..PublishView::of(&p) };
        let measured = publish.measure(V5);
        let mut fast = BytesMut::new();
        measured.encode(&mut fast);
        prop_assert_eq!(fast.len(), measured.size());
        let mut all = p.properties.as_deref().cloned().unwrap_or_default();
        all.message_expiry_interval = expiry;
        all.subscription_identifiers.clone_from(&sub_ids);
        all.topic_alias = alias;
        let rebuilt = Publish { properties: Some(Box::new(all)), ..p.clone() };
        prop_assert_eq!(&fast[..], &encoded_in(&Packet::Publish(rebuilt), V5)[..]);
    }

    /// Garbage never panics the decoder, and whatever it accepts re-encodes to a
    /// packet that decodes the same.
    #[test]
    fn arbitrary_bytes(
        protocol in protocol(),
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let limits = Limits { protocol, ..Limits::default() };
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(packet)) = decode(&mut buf, &limits) {
            let mut again = BytesMut::new();
            encode(&packet, protocol, &mut again);
            prop_assert_eq!(again.len(), encoded_len(&packet, protocol));
            prop_assert_eq!(decode(&mut again, &limits), Ok(Some(packet)));
        }
    }
}
