//! Errors of the wire format. A decode error ends the offending connection only.

/// A breach of the MQTT specification by the peer. The message starts with the
/// clause it breaks, e.g. `[MQTT-3.3.2-2] wildcard in a PUBLISH topic name`, so the
/// log line that closes a connection names the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("[{clause}] {reason}")]
pub struct ProtocolViolation {
    /// The normative statement broken, e.g. `MQTT-3.3.2-2`.
    pub clause: &'static str,
    /// What was wrong, in a few words.
    pub reason: &'static str,
}

impl ProtocolViolation {
    /// Builds a violation of `clause` (without brackets).
    pub const fn new(clause: &'static str, reason: &'static str) -> Self {
        ProtocolViolation { clause, reason }
    }
}

/// Why bytes could not be decoded into a packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The fixed header announces more than the configured maximum packet size.
    /// Raised before any of the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Size of the packet announced by its fixed header, in bytes.
        size: usize,
        /// The configured maximum packet size, in bytes.
        max: usize,
    },
    /// The bytes break a rule of the specification.
    #[error(transparent)]
    Violation(#[from] ProtocolViolation),
    /// A CONNECT with a correct protocol name (`MQTT` or `MQIsdp`) but a protocol
    /// level this broker does not speak (e.g. 5). Not a malformed packet: the server
    /// MUST answer CONNACK 0x01 (unacceptable protocol version) and then disconnect
    /// [MQTT-3.1.2-2]. The rest of the CONNECT is not parsed, since its layout
    /// depends on the level.
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
}
