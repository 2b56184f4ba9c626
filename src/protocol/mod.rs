//! MQTT bytes <-> [`Packet`]s.
//!
//! Sans-IO: no sockets, no executor, no clock, no logging. The codec is incremental
//! (`decode` returns `Ok(None)` until a whole packet is buffered) and zero-copy
//! (payloads and topics are slices of the read buffer).
//!
//! Spec: MQTT Version 5.0, OASIS Standard, 7 March 2019; MQTT 3.1.1, OASIS Standard,
//! 29 October 2014; and MQTT 3.1 (IBM, 2010).

#[macro_use]
mod property_table;
pub mod codec;
mod error;
pub mod packet;
pub mod topic;

pub use codec::{
    decode, encode, encoded_len, Limits, MeasuredPublish, PublishProperties, PublishView,
};
pub use error::{DecodeError, ProtocolViolation};
pub use packet::*;
