//! shardmq-bench: a thread-per-core (glommio, io_uring) load generator for any
//! MQTT 3.1.1 broker, with its own small MQTT client codec. The binary is
//! `src/main.rs`; this library holds everything so the parts can be tested.

pub mod cli;
pub mod client;
pub mod compare;
pub mod engine;
pub mod hosts;
pub mod mqtt;
pub mod net;
pub mod payload;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod sys;
pub mod transport;
pub mod ws;
