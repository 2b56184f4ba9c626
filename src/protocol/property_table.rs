//! The MQTT 5 properties [MQTT-2.2.2.2], declared once: Table 2-4 of MQTT 5.0, with
//! each property's identifier, field, value type, name, and the packets (and the
//! will) that may carry it, each with the section that describes it there (the
//! clause its errors cite).
//!
//! `mqtt5_properties!(generator)` hands the table to `generator!`, which expands it
//! into code: [`super::packet`] generates the `Properties` struct from it, and the
//! codec the identifiers, the decoder, the length, the encoder and which property
//! each packet allows. A property is added here, or nowhere.
//!
//! Value types: `flag` (a byte that must be 0 or 1), `u16`, `u32`, `string` (UTF-8
//! string), `binary` (binary data), `topic` (a UTF-8 string that must be a topic
//! name), `vbi_list` (Variable Byte Integers, one per occurrence) and `pair_list`
//! (UTF-8 string pairs, one per occurrence). `nonzero` marks a value the property's
//! section calls a Protocol Error at 0; `alias` the Topic Alias, whose 0 is answered
//! with 0x94 [MQTT-3.3.2-8].

/// Expands `$generator! { rows }` with one row per property, in identifier order
/// (the order the encoder writes them in):
/// `docs id CONST field: type [check] "Name", [Carrier "section", ...];`
macro_rules! mqtt5_properties {
    ($generator:ident) => {
        $generator! {
            /// 0x01, PUBLISH and will: 0 unspecified bytes, 1 UTF-8 [MQTT-3.3.2.3.2].
            0x01 PAYLOAD_FORMAT_INDICATOR payload_format_indicator: flag "Payload Format Indicator",
                [Will "MQTT-3.1.3.2.3", Publish "MQTT-3.3.2.3.2"];
            /// 0x02, PUBLISH and will: seconds the message lives [MQTT-3.3.2.3.3].
            0x02 MESSAGE_EXPIRY_INTERVAL message_expiry_interval: u32 "Message Expiry Interval",
                [Will "MQTT-3.1.3.2.4", Publish "MQTT-3.3.2.3.3"];
            /// 0x03, PUBLISH and will: MIME-like description of the payload.
            0x03 CONTENT_TYPE content_type: string "Content Type",
                [Will "MQTT-3.1.3.2.5", Publish "MQTT-3.3.2.3.9"];
            /// 0x08, PUBLISH and will: topic for a response; no wildcards [MQTT-3.3.2-14].
            0x08 RESPONSE_TOPIC response_topic: topic "Response Topic",
                [Will "MQTT-3.1.3.2.6", Publish "MQTT-3.3.2.3.5"];
            /// 0x09, PUBLISH and will: binary data matching a response to its request.
            0x09 CORRELATION_DATA correlation_data: binary "Correlation Data",
                [Will "MQTT-3.1.3.2.7", Publish "MQTT-3.3.2.3.6"];
            /// 0x0B, PUBLISH (server to client, any number) and SUBSCRIBE (at most one):
            /// 1..=268435455 [MQTT-3.8.2.1.2].
            0x0B SUBSCRIPTION_IDENTIFIER subscription_identifiers: vbi_list nonzero "Subscription Identifier",
                [Publish "MQTT-3.3.2.3.8", Subscribe "MQTT-3.8.2.1.2"];
            /// 0x11, CONNECT, CONNACK, DISCONNECT: seconds the session outlives the network
            /// connection; 0xFFFFFFFF never expires [MQTT-3.1.2.11.2].
            0x11 SESSION_EXPIRY_INTERVAL session_expiry_interval: u32 "Session Expiry Interval",
                [Connect "MQTT-3.1.2.11.2", ConnAck "MQTT-3.2.2.3.2", Disconnect "MQTT-3.14.2.2.2"];
            /// 0x12, CONNACK: the client id the server assigned [MQTT-3.2.2.3.7].
            0x12 ASSIGNED_CLIENT_IDENTIFIER assigned_client_identifier: string "Assigned Client Identifier",
                [ConnAck "MQTT-3.2.2.3.7"];
            /// 0x13, CONNACK: the keep-alive the server imposes [MQTT-3.2.2.3.14].
            0x13 SERVER_KEEP_ALIVE server_keep_alive: u16 "Server Keep Alive",
                [ConnAck "MQTT-3.2.2.3.14"];
            /// 0x15, CONNECT, CONNACK, AUTH: name of the enhanced authentication method.
            0x15 AUTHENTICATION_METHOD authentication_method: string "Authentication Method",
                [Connect "MQTT-3.1.2.11.9", ConnAck "MQTT-3.2.2.3.17", Auth "MQTT-3.15.2.2.2"];
            /// 0x16, CONNECT, CONNACK, AUTH: data of the enhanced authentication exchange.
            0x16 AUTHENTICATION_DATA authentication_data: binary "Authentication Data",
                [Connect "MQTT-3.1.2.11.10", ConnAck "MQTT-3.2.2.3.18", Auth "MQTT-3.15.2.2.3"];
            /// 0x17, CONNECT: 0 or 1 [MQTT-3.1.2.11.7].
            0x17 REQUEST_PROBLEM_INFORMATION request_problem_information: flag "Request Problem Information",
                [Connect "MQTT-3.1.2.11.7"];
            /// 0x18, will: seconds between the end of the connection and the will
            /// [MQTT-3.1.3.2.2].
            0x18 WILL_DELAY_INTERVAL will_delay_interval: u32 "Will Delay Interval",
                [Will "MQTT-3.1.3.2.2"];
            /// 0x19, CONNECT: 0 or 1 [MQTT-3.1.2.11.6].
            0x19 REQUEST_RESPONSE_INFORMATION request_response_information: flag "Request Response Information",
                [Connect "MQTT-3.1.2.11.6"];
            /// 0x1A, CONNACK: basis for response topics.
            0x1A RESPONSE_INFORMATION response_information: string "Response Information",
                [ConnAck "MQTT-3.2.2.3.15"];
            /// 0x1C, CONNACK, DISCONNECT: another server to use.
            0x1C SERVER_REFERENCE server_reference: string "Server Reference",
                [ConnAck "MQTT-3.2.2.3.16", Disconnect "MQTT-3.14.2.2.5"];
            /// 0x1F, acknowledgements, DISCONNECT, AUTH: human-readable diagnostics.
            0x1F REASON_STRING reason_string: string "Reason String",
                [ConnAck "MQTT-3.2.2.3.9", PubAck "MQTT-3.4.2.2.2", PubRec "MQTT-3.5.2.2.2",
                 PubRel "MQTT-3.6.2.2.2", PubComp "MQTT-3.7.2.2.2", SubAck "MQTT-3.9.2.1.2",
                 UnsubAck "MQTT-3.11.2.1.2", Disconnect "MQTT-3.14.2.2.3", Auth "MQTT-3.15.2.2.4"];
            /// 0x21, CONNECT, CONNACK: 1..=65535 unacknowledged QoS 1/2 PUBLISHes the
            /// sender accepts [MQTT-3.1.2.11.3].
            0x21 RECEIVE_MAXIMUM receive_maximum: u16 nonzero "Receive Maximum",
                [Connect "MQTT-3.1.2.11.3", ConnAck "MQTT-3.2.2.3.3"];
            /// 0x22, CONNECT, CONNACK: highest topic alias the sender accepts.
            0x22 TOPIC_ALIAS_MAXIMUM topic_alias_maximum: u16 "Topic Alias Maximum",
                [Connect "MQTT-3.1.2.11.5", ConnAck "MQTT-3.2.2.3.8"];
            /// 0x23, PUBLISH: 1..=Topic Alias Maximum [MQTT-3.3.2-8].
            0x23 TOPIC_ALIAS topic_alias: u16 alias "Topic Alias",
                [Publish "MQTT-3.3.2.3.4"];
            /// 0x24, CONNACK: 0 or 1, the highest QoS the server supports.
            0x24 MAXIMUM_QOS maximum_qos: flag "Maximum QoS",
                [ConnAck "MQTT-3.2.2.3.4"];
            /// 0x25, CONNACK: 0 or 1.
            0x25 RETAIN_AVAILABLE retain_available: flag "Retain Available",
                [ConnAck "MQTT-3.2.2.3.5"];
            /// 0x26, every packet with properties: name-value pairs, order preserved,
            /// repeats allowed [MQTT-3.3.2-18].
            0x26 USER_PROPERTY user_properties: pair_list "User Property",
                [Connect "MQTT-3.1.2.11.8", Will "MQTT-3.1.3.2.8", ConnAck "MQTT-3.2.2.3.10",
                 Publish "MQTT-3.3.2.3.7", PubAck "MQTT-3.4.2.2.3", PubRec "MQTT-3.5.2.2.3",
                 PubRel "MQTT-3.6.2.2.3", PubComp "MQTT-3.7.2.2.3", Subscribe "MQTT-3.8.2.1.3",
                 SubAck "MQTT-3.9.2.1.3", Unsubscribe "MQTT-3.10.2.1.2",
                 UnsubAck "MQTT-3.11.2.1.3", Disconnect "MQTT-3.14.2.2.4", Auth "MQTT-3.15.2.2.5"];
            /// 0x27, CONNECT, CONNACK: largest packet the sender accepts, > 0.
            0x27 MAXIMUM_PACKET_SIZE maximum_packet_size: u32 nonzero "Maximum Packet Size",
                [Connect "MQTT-3.1.2.11.4", ConnAck "MQTT-3.2.2.3.6"];
            /// 0x28, CONNACK: 0 or 1.
            0x28 WILDCARD_SUBSCRIPTION_AVAILABLE wildcard_subscription_available: flag "Wildcard Subscription Available",
                [ConnAck "MQTT-3.2.2.3.11"];
            /// 0x29, CONNACK: 0 or 1.
            0x29 SUBSCRIPTION_IDENTIFIER_AVAILABLE subscription_identifier_available: flag "Subscription Identifier Available",
                [ConnAck "MQTT-3.2.2.3.12"];
            /// 0x2A, CONNACK: 0 or 1.
            0x2A SHARED_SUBSCRIPTION_AVAILABLE shared_subscription_available: flag "Shared Subscription Available",
                [ConnAck "MQTT-3.2.2.3.13"];
        }
    };
}

/// The Rust type of a property's field, by value type.
macro_rules! property_type {
    (flag) => { Option<u8> };
    (u16) => { Option<u16> };
    (u32) => { Option<u32> };
    (string) => { Option<bytestring::ByteString> };
    (binary) => { Option<bytes::Bytes> };
    (topic) => { Option<$crate::protocol::TopicName> };
    (vbi_list) => { Vec<u32> };
    (pair_list) => { Vec<(bytestring::ByteString, bytestring::ByteString)> };
}
