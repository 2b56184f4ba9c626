//! shardmq: a thread-per-core, shared-nothing MQTT broker on io_uring.
//!
//! Crate map (the directory tree is the architecture; see ARCHITECTURE.md):
//! - [`protocol`]: MQTT bytes <-> packets. Sans-IO.
//! - [`session`]: one client's session state machine (inflight window, mqueue). Sans-IO.
//! - [`router`]: subscription trie, route table, shard placement. Sans-IO.
//! - [`message`]: messages and their 128-bit ids. Sans-IO.
//! - `small_map`: the map per client that stays a vector while small. Sans-IO.
//! - [`metrics`], [`sys`]: counters, `$SYS` topics, alarms, Prometheus text. Sans-IO.
//! - [`security`]: password files and ACL files (Mosquitto's formats), the ACL
//!   compiled for the data path. Sans-IO apart from reading and writing those files.
//! - `shard`: the pinned executors, their tasks and rings (the only glommio user,
//!   with `net`).
//! - [`broker`]: the embedding API; [`hooks`]: code run at events; [`config`]: every
//!   setting.
//!
//! ```no_run
//! let broker = shardmq::Broker::new(shardmq::Config::default())?.start()?;
//! broker.wait().expect("shards ran to the end");
//! # Ok::<(), shardmq::StartError>(())
//! ```

#![warn(missing_docs)]

pub mod broker;
pub mod cluster;
pub mod config;
pub mod hooks;
pub mod message;
pub mod metrics;
mod net;
// Public for the fuzz targets only (`fuzzing` feature), like `cluster::frame`.
#[cfg(feature = "fuzzing")]
pub mod persist;
#[cfg(not(feature = "fuzzing"))]
mod persist;
pub mod protocol;
pub mod router;
pub mod security;
pub mod session;
mod shard;
mod small_map;
pub mod sys;

pub use broker::{Broker, BrokerBuilder, BrokerHandle, PublishError, ShardFailed, StartError};
pub use config::Config;
pub use shard::ShardStats;
