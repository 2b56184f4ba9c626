//! Errors of the wire format. A decode error ends the offending connection only.

use super::packet::ReasonCode;

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
    /// The MQTT 5 reason code of the DISCONNECT that closes the connection:
    /// MALFORMED_PACKET (0x81) unless the specification calls the breach a Protocol
    /// Error (0x82) or names another code (e.g. 0x94 Topic Alias invalid).
    pub code: ReasonCode,
}

impl ProtocolViolation {
    /// A malformed packet breaking `clause` (without brackets).
    pub const fn new(clause: &'static str, reason: &'static str) -> Self {
        ProtocolViolation { clause, reason, code: ReasonCode::MALFORMED_PACKET }
    }

    /// A breach the specification calls a Protocol Error (0x82).
    pub const fn protocol_error(clause: &'static str, reason: &'static str) -> Self {
        ProtocolViolation { clause, reason, code: ReasonCode::PROTOCOL_ERROR }
    }

    /// A breach answered with a specific reason code.
    pub const fn with_code(clause: &'static str, reason: &'static str, code: ReasonCode) -> Self {
        ProtocolViolation { clause, reason, code }
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
    /// level this broker does not speak (e.g. 6). Not a malformed packet: the server
    /// MUST answer CONNACK 0x01 (0x84 in MQTT 5) and then disconnect [MQTT-3.1.2-2].
    /// The rest of the CONNECT is not parsed, since its layout depends on the level.
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
}

impl DecodeError {
    /// The MQTT 5 reason code of the DISCONNECT (or CONNACK) that answers the error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::Violation(v) => v.code,
            DecodeError::UnsupportedProtocolLevel(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }
}
