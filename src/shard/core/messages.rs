//! What shards say to each other: the items of the data and control rings, and what
//! the embedding program publishes. Plain data: `Send`, cheap to move (`Arc`,
//! `Bytes`, ids).

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;

use crate::message::Message;
use crate::metrics::ShardSnapshot;
use crate::protocol::{QoS, TopicFilter, TopicName};
use crate::router::ShardSet;

/// A message published by the embedding program.
#[derive(Debug)]
pub(crate) struct ApiPublish {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// A batch for another shard, on the mesh it travels.
#[derive(Debug)]
pub(crate) enum Batch {
    Data(usize, Vec<DataMsg>),
    Ctrl(usize, Vec<CtrlMsg>),
}

/// Messages on the data mesh.
#[derive(Debug)]
pub(crate) enum DataMsg {
    /// A PUBLISH for the destination's local subscribers.
    Publish(Arc<Message>),
    /// A retained message (or its removal, with an empty payload) for the
    /// destination's retained partition.
    Retain(Arc<Message>),
    /// The answer to a `RetainedQuery` (possibly empty): messages for one client's
    /// new subscription.
    Retained {
        client_id: ByteString,
        qos: QoS,
        sub_id: Option<u32>,
        messages: Vec<Arc<Message>>,
        query: u64,
    },
    /// A message for one member of the shared subscription `filter`
    /// (`$share/{group}/{filter}`) on the destination. `hops` counts how often it
    /// was passed on because the chosen shard had no member left.
    Shared { filter: TopicFilter, message: Arc<Message>, hops: u8, exclude: Option<ByteString> },
    /// For shard 0: a message that entered here, for the node links of `nodes`
    /// (node slots).
    Forward { nodes: ShardSet, message: Arc<Message> },
    /// For shard 0: a message for the members of the shared subscription `filter`
    /// on node `node` (slot), which the group picked.
    ForwardShared { node: usize, filter: TopicFilter, message: Arc<Message> },
    /// For shard 0: a retained message for node `node`'s store only (a node that
    /// came up gets every retained message).
    ForwardRetain { node: usize, message: Arc<Message> },
}

/// What leaves for the other nodes, from shard 0's core to its node links.
#[derive(Debug)]
pub(crate) enum NodeOut {
    /// A message for the subscribers of every node in the set.
    Publish(ShardSet, Arc<Message>),
    /// A message for one member of the shared subscription on one node.
    Shared(usize, TopicFilter, Arc<Message>),
    /// A retained message for one node's store, not its subscribers.
    Retain(usize, Arc<Message>),
}

/// A change of this node's route summary, from shard 0's core to its node links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RouteChange {
    /// The node has (or no longer has) subscribers for a filter.
    Filter(TopicFilter, bool),
    /// The node has this many connected members of a shared subscription.
    Shared(TopicFilter, u32),
    /// A connected client's will (as a message), or `None`: it has none any more.
    Will(ByteString, Option<Arc<Message>>),
}

/// A change of the other nodes of the cluster, from shard 0 to every shard.
#[derive(Clone, Debug)]
pub(crate) enum NodeMsg {
    /// The node in this slot is up.
    Up(usize),
    /// The node in this slot is down: its routes are gone.
    Down(usize),
    /// The node's route summary follows in full: forget what it had.
    Reset(usize),
    /// The node has (or no longer has) subscribers for `filter`.
    Route { node: usize, filter: TopicFilter, present: bool },
    /// The node has `members` connected members of the shared subscription `filter`.
    Shared { node: usize, filter: TopicFilter, members: u32 },
    /// With `cluster_quorum`: this node sees fewer nodes up than the quorum (`true`),
    /// or enough again (`false`).
    Fenced(bool),
}

/// Messages on the control mesh.
#[derive(Debug)]
pub(crate) enum CtrlMsg {
    /// `origin` has (or no longer has) local subscribers for `filter`.
    Route { origin: usize, rev: u64, filter: TopicFilter, present: bool },
    /// `from` has applied every route update of the receiver up to `rev`.
    RouteAck { from: usize, rev: u64 },
    /// `--sync always`: shard `from` has the first `batches` data batches this
    /// shard sent it on disk (what they made it write is durable).
    LogAck { from: usize, batches: u64 },
    /// Shard `from`'s log reached its share of `data_max_bytes` (or went back
    /// under it): while any log is full, new durable state is refused.
    LogFull { from: usize, full: bool },
    /// What the IO layers of two shards pass between them (a connection moving to
    /// the shard that owns its client id, reloaded credentials): the core carries
    /// it without looking inside.
    Io(Box<dyn std::any::Any + Send>),
    /// "Send the retained messages matching `filter` to `client_id` on `origin`."
    RetainedQuery {
        origin: usize,
        client_id: ByteString,
        filter: TopicFilter,
        qos: QoS,
        sub_id: Option<u32>,
        /// Identifies the SUBSCRIBE on `origin`, whose SUBACK waits for the answer.
        query: u64,
    },
    /// `origin` has `members` connected members of the shared subscription `filter`
    /// (`$share/{group}/{filter}`). Acknowledged like `Route`.
    SharedRoute { origin: usize, rev: u64, filter: TopicFilter, members: u32 },
    /// A shard's figures, once a second, for shard 0.
    Stats(Box<ShardSnapshot>),
    /// A change of the other nodes, from shard 0.
    Node(NodeMsg),
    /// For shard 0 of a cluster node: a connected client's will is now `will`
    /// (as a message; `None`: it has none any more), for the other nodes to
    /// publish should this node die.
    Will { client_id: ByteString, will: Option<Arc<Message>> },
}
