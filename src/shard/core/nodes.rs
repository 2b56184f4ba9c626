//! The other nodes of a cluster, as the core sees them: which are up, which filters
//! each has subscribers for (its route summary), and which messages go to them.
//!
//! Shard 0 hears of nodes (from membership and the node links) and tells every
//! other shard over the control ring, in order, so every shard matches a message
//! against the same summaries. A message that entered this node is matched on the
//! shard it entered; the nodes it goes to travel with it to shard 0
//! (`DataMsg::Forward`), whose IO layer writes it once per node link. A message
//! from another node is delivered here only: never forwarded again.
//!
//! Shared subscriptions span the cluster: each node announces how many connected
//! members it has per group, every shard keeps them in its `SharedRoutes` as
//! origins after its own shards, and a message that enters here goes to one
//! member in the cluster: picked here when the group picks this node's shard,
//! else sent to the node picked, whose shard 0 picks one of its members.
//! `$SYS/brokers/<node>/` is each node's own, never forwarded.
//!
//! # Invariants
//! - A message goes to a node at most once, and only to a node that is up.
//! - Shard 0's list of route changes holds this node's 0 <-> 1 transitions
//!   (any shard having a filter), in the order its route replica saw them.

use std::sync::Arc;

use bytestring::ByteString;

use crate::message::Message;
use crate::protocol::TopicFilter;
use crate::router::{RouteTable, ShardSet, SHARDS_MAX};
use crate::session::SessionImage;

use super::messages::{CtrlMsg, DataMsg, NodeMsg, NodeOut, RouteChange};
use super::retained::is_sys_topic;
use super::{Close, Core, Now};

/// The core's view of the other nodes.
#[derive(Debug)]
pub(super) struct Nodes {
    /// Whether this node is in a cluster at all.
    enabled: bool,
    /// Every other node's filters, by node slot.
    routes: RouteTable,
    /// The revision applied last per node slot: updates come in order, so each
    /// simply takes the next.
    revs: Vec<u64>,
    up: ShardSet,
    /// Shard 0: messages for the node links.
    out: Vec<NodeOut>,
    /// Shard 0: this node's route summary changes, for the node links.
    changes: Vec<RouteChange>,
    /// Shard 0: the member counts of shared subscriptions this node announced.
    shared: hashbrown::HashMap<TopicFilter, u32>,
    /// Shard 0: a node link holds more than its high mark: publishers pause.
    links_full: bool,
    /// Shard 0: the wills of this node's connected clients, which every other
    /// node keeps a copy of.
    wills: hashbrown::HashMap<ByteString, Arc<Message>>,
    /// This node sees fewer nodes up than `cluster_quorum`: it serves no client.
    fenced: bool,
}

impl Nodes {
    pub(super) fn new(enabled: bool, quorum: bool) -> Self {
        Nodes {
            enabled,
            routes: RouteTable::new(SHARDS_MAX),
            revs: vec![0; SHARDS_MAX],
            up: ShardSet::default(),
            out: Vec::new(),
            changes: Vec::new(),
            shared: hashbrown::HashMap::new(),
            links_full: false,
            wills: hashbrown::HashMap::new(),
            fenced: quorum,
        }
    }

    /// The nodes a message entering here goes to: those with a matching filter, and
    /// every node for a retained message (each node keeps every retained message).
    fn destinations(&self, message: &Message) -> ShardSet {
        if !self.enabled || self.up.is_empty() || is_sys_topic(message.topic.as_str()) {
            return ShardSet::default();
        }
        let wanted = if message.retain {
            self.up
        } else {
            self.routes.matching_shards(message.topic.as_str())
        };
        wanted.intersection(self.up)
    }

    fn apply(&mut self, msg: &NodeMsg) {
        match msg {
            NodeMsg::Up(node) => self.up.insert(*node),
            NodeMsg::Down(node) => {
                self.up.remove(*node);
                self.routes.clear_origin(*node);
            }
            NodeMsg::Reset(node) => self.routes.clear_origin(*node),
            NodeMsg::Route { node, filter, present } => {
                self.revs[*node] += 1;
                self.routes.apply(*node, self.revs[*node], filter.as_str(), *present);
            }
            // Kept in the core's `SharedRoutes` (see `Core::apply_node`).
            NodeMsg::Shared { .. } => {}
            NodeMsg::Fenced(fenced) => self.fenced = *fenced,
        }
    }
}

impl Core {
    /// Shard 0: a change of the other nodes (membership, or a node link's route
    /// summary), applied here and passed to every other shard.
    pub fn handle_node(&mut self, now: Now, msg: NodeMsg) {
        self.now = now;
        debug_assert_eq!(self.id, 0, "shard 0 hears of nodes");
        let node = match &msg {
            NodeMsg::Up(node) | NodeMsg::Down(node) | NodeMsg::Reset(node) => Some(*node),
            NodeMsg::Route { node, .. } | NodeMsg::Shared { node, .. } => Some(*node),
            NodeMsg::Fenced(_) => None,
        };
        if node.is_some_and(|node| node >= SHARDS_MAX) {
            return;
        }
        self.apply_node(&msg);
        for shard in 1..self.shards {
            self.ctrl_out.push(shard, CtrlMsg::Node(msg.clone()));
        }
    }

    /// A node change, on every shard.
    pub(super) fn apply_node(&mut self, msg: &NodeMsg) {
        match msg {
            NodeMsg::Down(node) | NodeMsg::Reset(node) => {
                self.shared_routes.clear_origin(self.shards + node);
            }
            NodeMsg::Shared { node, filter, members } => {
                self.shared_routes.set(filter, self.shards + node, *members);
            }
            NodeMsg::Up(node) if self.nodes.enabled => {
                // A node that comes up gets this shard's retained partition: each
                // node keeps every retained message (the newest by id wins).
                let messages: Vec<Arc<Message>> = self.retained.messages().cloned().collect();
                for message in messages {
                    self.forward_retain(*node, message);
                }
            }
            NodeMsg::Fenced(true) if !self.nodes.fenced => {
                // Whatever this node's clients send now could also be accepted on
                // the other side of a partition, where their ids may be claimed.
                self.close_every_connection(Close::Fenced);
            }
            NodeMsg::Up(_) | NodeMsg::Route { .. } | NodeMsg::Fenced(_) => {}
        }
        self.nodes.apply(msg);
    }

    /// Sends a retained message to node `node`'s store.
    pub(super) fn forward_retain(&mut self, node: usize, message: Arc<Message>) {
        if self.id == 0 {
            self.nodes.out.push(NodeOut::Retain(node, message));
        } else {
            self.data_out.push(0, DataMsg::ForwardRetain { node, message });
        }
    }

    /// Shard 0: a retained message from another node, for the store only.
    pub fn handle_remote_retain(&mut self, now: Now, message: Message) {
        self.now = now;
        let owner = crate::router::owner_shard(message.topic.as_str().as_bytes(), self.shards);
        if owner == self.id {
            self.store_retained(Arc::new(message));
        } else {
            self.data_out.push(owner, DataMsg::Retain(Arc::new(message)));
        }
    }

    /// Shard 0, after a shard's member count of `filter` changed: notes a change
    /// of this node's count for the node links.
    pub(super) fn note_shared(&mut self, filter: &TopicFilter) {
        if self.id != 0 || !self.nodes.enabled {
            return;
        }
        let members = self.shared_routes.members_below(filter, self.shards);
        let before = self.nodes.shared.get(filter).copied().unwrap_or(0);
        if members == before {
            return;
        }
        if members == 0 {
            self.nodes.shared.remove(filter);
        } else {
            self.nodes.shared.insert(filter.clone(), members);
        }
        self.nodes.changes.push(RouteChange::Shared(filter.clone(), members));
    }

    /// Sends `message` to node `node` for one member of the shared subscription
    /// `filter` there.
    pub(super) fn forward_shared(
        &mut self,
        node: usize,
        filter: TopicFilter,
        message: Arc<Message>,
    ) {
        if self.id == 0 {
            if self.nodes.up.contains(node) {
                self.nodes.out.push(NodeOut::Shared(node, filter, message));
            } else {
                self.stats.dropped_no_subscribers += 1;
            }
        } else {
            self.data_out.push(0, DataMsg::ForwardShared { node, filter, message });
        }
    }

    /// Shard 0: a message from another node for one member of the shared
    /// subscription `filter` here.
    pub fn handle_remote_shared(&mut self, now: Now, filter: TopicFilter, message: Message) {
        self.now = now;
        let random = self.rng.u64(..);
        let message = Arc::new(message);
        match self.shared_routes.pick_other(&filter, None, self.shards, random) {
            Some(shard) if shard == self.id => self.dispatch_shared(&filter, message, 0, None),
            Some(shard) => {
                let msg = DataMsg::Shared { filter, message, hops: 0, exclude: None };
                self.data_out.push(shard, msg);
            }
            // Its members left meanwhile.
            None => self.stats.dropped_no_subscribers += 1,
        }
    }

    /// Shard 0: a message from another node, for this node's subscribers only.
    pub fn handle_remote_publish(&mut self, now: Now, message: Message) {
        self.now = now;
        self.route_here(Arc::new(message), false);
    }

    /// Sends `message` to the other nodes that want it (see [`Nodes::destinations`]);
    /// whether any does.
    pub(super) fn forward(&mut self, message: &Arc<Message>) -> bool {
        let nodes = self.nodes.destinations(message);
        if nodes.is_empty() {
            return false;
        }
        if self.id == 0 {
            self.nodes.out.push(NodeOut::Publish(nodes, Arc::clone(message)));
        } else {
            self.data_out.push(0, DataMsg::Forward { nodes, message: Arc::clone(message) });
        }
        true
    }

    /// Shard 0: a message another shard forwards to other nodes.
    pub(super) fn forward_from_shard(&mut self, nodes: ShardSet, message: Arc<Message>) {
        // A node that went down since the other shard matched gets nothing.
        let nodes = nodes.intersection(self.nodes.up);
        if !nodes.is_empty() {
            self.nodes.out.push(NodeOut::Publish(nodes, message));
        }
    }

    /// Shard 0: the messages for the node links since the last call.
    pub fn take_node_out(&mut self, into: &mut Vec<NodeOut>) {
        into.append(&mut self.nodes.out);
    }

    /// Shard 0: this node's route summary changes since the last call.
    pub fn take_route_changes(&mut self, into: &mut Vec<RouteChange>) {
        into.append(&mut self.nodes.changes);
    }

    /// Shard 0: every filter this node has subscribers for (a node link's summary
    /// after it connects).
    pub fn node_summary(&self) -> Vec<RouteChange> {
        let filters =
            self.routes.iter().filter_map(|(filter, _)| TopicFilter::try_from(filter).ok());
        let shared = self.nodes.shared.iter().map(|(f, n)| RouteChange::Shared(f.clone(), *n));
        let wills =
            self.nodes.wills.iter().map(|(c, w)| RouteChange::Will(c.clone(), Some(Arc::clone(w))));
        filters.map(|f| RouteChange::Filter(f, true)).chain(shared).chain(wills).collect()
    }

    /// Filters the node in `slot` has subscribers for, as its summary says; `None`:
    /// this node's own.
    pub fn node_filter_count(&self, slot: Option<usize>) -> u64 {
        match slot {
            Some(slot) => self.nodes.routes.filters_of(slot) as u64,
            None => self.routes.len() as u64,
        }
    }

    /// Shard 0: whether a node link is over its high mark; while it is, this shard
    /// stops reading publishers and taking ring batches (see `refresh_gates`).
    pub fn set_links_full(&mut self, now: Now, full: bool) {
        if full != self.nodes.links_full {
            if full {
                self.stats.reader_pauses += 1;
            }
            self.nodes.links_full = full;
            self.refresh_gates(now);
        }
    }

    pub(super) fn links_full(&self) -> bool {
        self.nodes.links_full
    }

    /// Whether this node is in a cluster.
    pub fn cluster_enabled(&self) -> bool {
        self.nodes.enabled
    }

    /// Shard 0: a connected client's will changed, for the node links.
    pub(super) fn note_will(&mut self, client_id: ByteString, will: Option<Arc<Message>>) {
        match &will {
            Some(will) => self.nodes.wills.insert(client_id.clone(), Arc::clone(will)),
            None => self.nodes.wills.remove(&client_id),
        };
        self.nodes.changes.push(RouteChange::Will(client_id, will));
    }

    /// Shard 0: a node died; this node publishes the wills of its clients (every
    /// survivor keeps a copy, one of them publishes: see `shard::cluster`).
    pub fn publish_dead_node_wills(&mut self, now: Now, wills: Vec<Message>) {
        self.now = now;
        for will in wills {
            self.stats.wills_published += 1;
            let message = self.new_message(
                will.topic,
                will.payload,
                will.qos,
                will.retain,
                None,
                will.properties,
            );
            self.ingress(crate::hooks::Origin::Api, message);
        }
    }

    /// Whether this node lacks its quorum of cluster nodes (`cluster_quorum`): it
    /// refuses clients (CONNACK 0x9C, Use another server; 3 in MQTT 3).
    pub fn cluster_fenced(&self) -> bool {
        self.nodes.fenced
    }

    /// Whether another node is up: a client that connects here is claimed from
    /// the others first.
    pub fn cluster_peers_up(&self) -> bool {
        self.nodes.enabled && !self.nodes.up.is_empty()
    }

    /// Another node claims `client_id` (its client connected there): ends the
    /// connection here (MQTT 5: DISCONNECT 0x8E) as a takeover does, and hands the
    /// session over when the client resumes it. `None`: no session to resume (none
    /// here, a clean start, or one that ended with its connection).
    pub fn hand_over_session(
        &mut self,
        now: Now,
        client_id: &ByteString,
        clean_start: bool,
    ) -> Option<SessionImage> {
        self.now = now;
        self.sessions.get(client_id)?;
        if !self.take_over(client_id, clean_start) {
            return None;
        }
        // Its expiry timer (an offline session) leaves with it.
        if let Some(key) = self.sessions.key(client_id) {
            self.cancel_expiry(key);
        }
        let (key, entry) = self.sessions.remove(client_id)?;
        if let Some(journal) = self.journal.as_deref_mut().filter(|_| entry.session.is_durable()) {
            journal.session_end(entry.serial);
        }
        self.stats.queued_bytes -= entry.session.queued_bytes() as u64;
        for (filter, _) in entry.session.subscriptions() {
            // Shared memberships ended with the connection; plain filters leave
            // this shard's index (and its route, if it was the last).
            if !filter.is_shared() {
                self.remove_local_sub(&filter.clone(), key, client_id);
            }
        }
        self.stats.sessions_handed_over += 1;
        Some(entry.session.export())
    }

    /// Whether a session here for `client_id` stands against another node's
    /// recovered one (a `Recovered` claim): any but one recovered here and not
    /// reconciled either. Two nodes that restarted with one id keep theirs, and
    /// the client's next CONNECT keeps the one it is handed.
    pub fn holds_session(&self, client_id: &ByteString) -> bool {
        self.sessions.key(client_id).is_some_and(|key| !self.is_unreconciled(key))
    }

    /// A session handed over by another node, before its client's CONNECT is
    /// processed here (which resumes it: Session Present). A session already here
    /// for the same client id wins (two nodes held one: a partition healed), and
    /// the image is dropped, counted; unless that one was recovered from the data
    /// directory and not reconciled yet: the client moved while this node was
    /// down, and the image is newer.
    pub fn import_session(&mut self, now: Now, client_id: ByteString, image: SessionImage) {
        self.now = now;
        if let Some(key) = self.sessions.key(&client_id).filter(|k| self.is_unreconciled(*k)) {
            self.drop_recovered(key, &client_id);
        }
        if self.sessions.get(&client_id).is_some() {
            self.stats.dropped_mqueue += (image.inflight.len() + image.mqueue.len()) as u64;
            return;
        }
        // Persistent until the CONNECT that resumes it sets its terms.
        self.insert_offline_session(client_id, image, None, now.unix_us / 1_000_000, None);
        self.stats.sessions_taken_over += 1;
    }

    /// Applies a shard's route update to this shard's replica; on shard 0 of a
    /// cluster node, notes the node-wide transitions for the node links.
    pub(super) fn apply_route(
        &mut self,
        origin: usize,
        rev: u64,
        filter: &TopicFilter,
        present: bool,
    ) {
        let watch = self.id == 0 && self.nodes.enabled;
        let before = watch && !self.routes.shards_of(filter.as_str()).is_empty();
        // A stale update is dropped and counted by the table itself.
        self.routes.apply(origin, rev, filter.as_str(), present);
        if watch {
            let after = !self.routes.shards_of(filter.as_str()).is_empty();
            if before != after {
                self.nodes.changes.push(RouteChange::Filter(filter.clone(), after));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    use crate::message::MessageId;
    use crate::protocol::{QoS, TopicName};

    fn message(topic: &str, retain: bool) -> Message {
        Message {
            id: MessageId(1),
            topic: TopicName::try_from(topic).unwrap(),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain,
            publisher: None,
            properties: None,
        }
    }

    fn route(node: usize, filter: &str, present: bool) -> NodeMsg {
        NodeMsg::Route { node, filter: TopicFilter::try_from(filter).unwrap(), present }
    }

    fn set(nodes: &[usize]) -> ShardSet {
        let mut set = ShardSet::default();
        nodes.iter().for_each(|n| set.insert(*n));
        set
    }

    #[test]
    fn destinations_follow_routes_of_up_nodes_and_retained_goes_everywhere() {
        let mut nodes = Nodes::new(true, false);
        for msg in [NodeMsg::Up(0), NodeMsg::Up(1), NodeMsg::Up(2), route(0, "a/+", true)] {
            nodes.apply(&msg);
        }
        nodes.apply(&route(2, "a/b", true));
        assert_eq!(nodes.destinations(&message("a/b", false)), set(&[0, 2]));
        assert_eq!(nodes.destinations(&message("a/c", false)), set(&[0]));
        assert_eq!(nodes.destinations(&message("z", false)), set(&[]));
        assert_eq!(nodes.destinations(&message("z", true)), set(&[0, 1, 2]), "retained");
        assert_eq!(nodes.destinations(&message("$SYS/x", true)), set(&[]), "$SYS stays");
        // A node down loses its routes; back up, it has none until it says so.
        nodes.apply(&NodeMsg::Down(0));
        assert_eq!(nodes.destinations(&message("a/b", false)), set(&[2]));
        assert_eq!(nodes.destinations(&message("z", true)), set(&[1, 2]));
        nodes.apply(&NodeMsg::Up(0));
        assert_eq!(nodes.destinations(&message("a/c", false)), set(&[]));
        // A reset forgets a node's routes, and its next summary applies.
        nodes.apply(&NodeMsg::Reset(2));
        nodes.apply(&route(2, "a/c", true));
        nodes.apply(&route(2, "a/c", false));
        nodes.apply(&route(2, "a/#", true));
        assert_eq!(nodes.destinations(&message("a/b", false)), set(&[2]));
        assert_eq!(nodes.destinations(&message("a/c/d", false)), set(&[2]));
    }

    #[test]
    fn a_single_node_forwards_nothing() {
        let mut nodes = Nodes::new(false, false);
        nodes.apply(&NodeMsg::Up(0));
        nodes.apply(&route(0, "#", true));
        assert!(nodes.destinations(&message("a", true)).is_empty());
    }
}
