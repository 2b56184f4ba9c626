//! The cluster: several nodes act as one broker.
//!
//! Each node stays what it is alone (shards, rings, sessions); the cluster adds,
//! on shard 0 of every node:
//! - **membership** ([`membership`]): SWIM failure detection and gossip (foca) over
//!   UDP on the cluster address: which nodes are up, each in a stable slot;
//! - **node links** ([`frame`]): one TCP connection from every node to every other
//!   up node, carrying its route summary (the filters it has subscribers for, in
//!   full after every (re)connect, then as changes) and the messages published on
//!   it that the other node's summary matches, in order.
//!
//! Every shard of a node keeps a replica of the other nodes' route summaries (a
//! `RouteTable` whose origins are node slots), so a message is matched once, on
//! the shard it entered, and forwarded once per node that wants it. The IO half
//! lives in `shard::cluster`; this module is sans-IO.

// Public for the fuzz targets only (`fuzzing` feature), like `session::script`.
pub(crate) mod auth;
#[cfg(feature = "fuzzing")]
pub mod frame;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod frame;
pub(crate) mod membership;

use serde::{Deserialize, Serialize};

/// One node as `shardmq cluster status`, `/cluster` and `$SYS` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its node name.
    pub name: String,
    /// Its cluster address.
    pub addr: String,
    /// Its node id, part of its message ids.
    pub node_id: u16,
    /// `self`, `up` or `down`.
    pub state: String,
    /// Seconds since it went up or down.
    pub since_secs: u64,
    /// The link this node sends to it on: `connected`, `connecting` or `none`.
    pub link: String,
    /// Messages sent to it.
    pub messages_out: u64,
    /// Messages received from it.
    pub messages_in: u64,
    /// Messages for it dropped because its link was full.
    pub messages_dropped: u64,
    /// Bytes waiting for its link now.
    pub queued_bytes: u64,
    /// Filters it has subscribers for, as its route summary says (this node's own
    /// for `self`).
    pub filters: u64,
}

/// The cluster as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node answering.
    pub node: String,
    /// It, then every other node it has seen, by slot.
    pub members: Vec<MemberStatus>,
    /// `cluster_quorum`: the nodes it must see up to serve clients (0: off).
    #[serde(default)]
    pub quorum: u16,
    /// Whether it sees fewer and serves no client.
    #[serde(default)]
    pub fenced: bool,
}
