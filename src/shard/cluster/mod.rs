//! The cluster's IO, on shard 0: the membership socket and its timers, the node
//! links (one TCP connection to every other up node, which this node writes:
//! [`outgoing`]), and
//! the links other nodes opened to this one (which it reads: [`incoming`]).
//!
//! Membership ([`Membership`]) and the link format ([`frame`]) are sans-IO; here
//! they meet glommio: a UDP socket, a task per timer foca asks for, a writer task
//! per outgoing link, a reader task per incoming link. What they learn goes to the
//! core ([`Core::handle_node`], [`Core::handle_remote_publish`]); what the core
//! forwards leaves in [`Shard::end_pass_cluster`], encoded once per message and
//! appended to the buffer of each link it goes to.
//!
//! # Invariants
//! - A link's buffer holds at most `cluster_link_buffer_bytes` of messages; a
//!   message beyond is dropped and counted. Only a connected link's buffer pauses
//!   shard 0's publishers (past its high mark): a node that stopped answering
//!   must not stall this one until it is declared down. What its buffer holds
//!   then is discarded and counted (`cluster_messages_discarded`). Route changes are never dropped: a
//!   link that reconnects starts over with `Hello`, `Reset` and the whole summary,
//!   then what its buffer still holds, so the receiver ends on the current summary.
//! - Frames are written whole or the link is dropped and reconnected: a reader
//!   never sees half a frame followed by another.
//! - A message is at most once on a link: one that was in the socket when the
//!   link broke is lost (counted by the sender as sent).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use glommio::net::{TcpListener, UdpSocket};
use glommio::spawn_local;
use tracing::{debug, info, warn};

use bytestring::ByteString;
use hashbrown::HashMap;

use crate::cluster::auth::ClusterKey;
use crate::cluster::frame::{self, Answer, ClaimKind};
use crate::cluster::membership::{Event, Membership, Peer};
use crate::cluster::{ClusterStatus, MemberStatus};
use crate::config::Config;
use crate::net::tls::NodeTls;
use crate::protocol::QoS;
use crate::router::ShardSet;

use super::core::{NodeMsg, NodeOut, RouteChange};
use super::notify::Notify;
use super::sockets::ClaimMsg;
use super::{until_stopped, Shard, ShardRc};

mod incoming;
mod outgoing;

use outgoing::{put_change, write_link};

/// What `Broker::start` binds for the cluster, taken by shard 0.
#[derive(Debug)]
pub(crate) struct ClusterSockets {
    pub udp: OwnedFd,
    pub tcp: OwnedFd,
    /// The bound address (its port resolved).
    pub addr: SocketAddr,
    /// The seeds, resolved.
    pub seeds: Vec<SocketAddr>,
    /// The key of `cluster_secret_file`, read at start.
    pub key: Option<ClusterKey>,
    /// `cluster_tls_*`, read at start.
    pub tls: Option<NodeTls>,
}

/// How long a link waits to connect, and then before trying again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RECONNECT_DELAY: Duration = Duration::from_millis(200);
/// Bytes waiting for a node link beyond which shard 0 pauses its publishers (or
/// half of `cluster_link_buffer_bytes`, if less): enough for a write to keep the
/// link busy, little enough that a message waits milliseconds, not seconds.
/// Under a QoS 1 flood the subscriber's node is the bottleneck and every link
/// stands at this mark, so it is latency: 3 one-shard nodes on one core, 8
/// publishers on two nodes to a subscriber on the third, `--inflight 64`: at 512
/// KiB, 83-88k msgs/s with a p50 of 161-165 ms; at 64 KiB, 87-100k msgs/s and
/// 85-99 ms (the rest is the kernel's buffers: at 64 KiB those stalled a link
/// for 3 s, waiting for a window probe).
const LINK_HIGH_MARK: usize = 64 * 1024;
/// The kernel's buffer for a node link, each way: the link's own buffer already
/// batches, and what the kernel holds is latency once the receiver slows down (on
/// loopback, autotuning grows it to megabytes: seconds of messages).
pub(crate) const LINK_SOCKET_BUFFER: usize = 256 * 1024;

/// Claim answers kept for a node whose link does not exist yet.
const UNSENT_ANSWERS_MAX: usize = 4096;
/// Client ids whose wills this node saw published as a dead node's, kept for
/// that node's restart: beyond, one is not kept (counted).
const WILLS_PUBLISHED_MAX: usize = 65_536;
/// What one read of an incoming link takes at most.
const READ_CHUNK: usize = 64 * 1024;
/// How long a claim waits for a node's answer before going on without it (a
/// frame lost with a broken link, a node that does not see this one up).
const CLAIM_TIMEOUT_MS: u64 = 5_000;

/// An outgoing link: what waits to be written to one node.
#[derive(Debug)]
struct LinkOut {
    buf: BytesMut,
    /// Messages in `buf` (route frames are not counted).
    messages: u64,
    /// Only a connected link pauses publishers when its buffer fills: one to a
    /// node that stopped answering drops (counted) once full instead, or the whole
    /// node would stall until the failure detector declares that node down.
    connected: bool,
    /// Cleared when the node goes down: the writer ends.
    wanted: bool,
    wake: Rc<Notify>,
}

/// Figures per node slot.
#[derive(Clone, Copy, Debug, Default)]
struct LinkFigures {
    messages_out: u64,
    messages_in: u64,
    messages_dropped: u64,
    /// Messages still in the link's buffer when its node was declared down.
    messages_discarded: u64,
}

/// Shard 0's cluster state.
pub(crate) struct ClusterIo {
    me: Peer,
    membership: Membership,
    /// Per node slot, its outgoing link while it is up.
    links: Vec<Option<LinkOut>>,
    figures: Vec<LinkFigures>,
    link_bytes_max: usize,
    frame_limits: frame::Limits,
    /// Datagrams to send, for the membership socket's sender.
    datagrams: Vec<(SocketAddr, bytes::Bytes)>,
    send_wake: Rc<Notify>,
    /// Scratch for the end of a pass.
    out: Vec<NodeOut>,
    changes: Vec<RouteChange>,
    encoded: BytesMut,
    /// Incoming links refused (bad hello, bad frame).
    pub links_refused: u64,
    /// The cluster secret's key: datagrams are sealed and opened with it, links
    /// prove it.
    pub key: Option<ClusterKey>,
    /// Datagrams dropped and links refused because they did not prove the
    /// cluster secret.
    pub auth_failures: u64,
    /// Node links over TLS (`cluster_tls_*`).
    tls: Option<NodeTls>,
    /// Claim answers dropped while waiting for a link (over `UNSENT_ANSWERS_MAX`).
    answers_dropped: u64,
    /// Claims this node sent: the nodes that have not answered, and until when
    /// they may.
    claims_out: HashMap<u64, ClaimOut>,
    /// Claims that went on without a node that was up but did not answer in time.
    claims_timed_out: u64,
    /// Answers to claims of nodes this one has not seen up yet: (slot, claim, answer).
    unsent_answers: Vec<(usize, u64, ByteString, Answer)>,
    /// Per node slot, the wills of its connected clients (as messages).
    remote_wills: Vec<RemoteWills>,
    /// Bytes of wills kept per other node (4 x `cluster_link_buffer_bytes`):
    /// beyond, a will is not kept, and not published should its node die.
    wills_bytes_max: usize,
    /// Wills of other nodes' clients not kept (over `wills_bytes_max`).
    wills_dropped: u64,
    /// The client ids whose wills the survivors published when their node died:
    /// that node, restarted with its data directory, drops them
    /// (`ClaimKind::Recovered`). Forgotten once asked, or once the client's new
    /// node sends its will.
    wills_published: hashbrown::HashSet<ByteString>,
    /// Published wills not kept in `wills_published` (over `WILLS_PUBLISHED_MAX`).
    wills_published_forgotten: u64,
    /// `cluster_quorum`, when over 1: the nodes (this one included) this node
    /// must see up to serve clients.
    quorum: Option<usize>,
    /// This node sees fewer nodes up than `quorum`.
    fenced: bool,
    /// Times it lost its quorum.
    fences: u64,
}

/// A claim this node sent, until every node it went to answered.
#[derive(Debug)]
struct ClaimOut {
    /// The nodes that have not answered.
    nodes: ShardSet,
    /// When it goes on without the up nodes among them.
    deadline: u64,
    /// The frame, written again on every new connection of a link to one of
    /// `nodes`: what a broken connection held is lost with it.
    frame: bytes::Bytes,
}

/// The wills one other node's connected clients left with this one.
#[derive(Default)]
struct RemoteWills {
    wills: HashMap<ByteString, crate::message::Message>,
    /// Topic and payload bytes of `wills`.
    bytes: usize,
}

impl RemoteWills {
    fn size(will: &crate::message::Message) -> usize {
        will.topic.as_str().len() + will.payload.len()
    }

    /// Keeps (or forgets, `None`) a client's will; `false` when it is over
    /// `bytes_max` and not kept.
    fn set(
        &mut self,
        client_id: ByteString,
        will: Option<crate::message::Message>,
        bytes_max: usize,
    ) -> bool {
        if let Some(old) = self.wills.remove(&client_id) {
            self.bytes -= Self::size(&old);
        }
        let Some(will) = will else { return true };
        let size = Self::size(&will);
        if self.bytes + size > bytes_max {
            return false;
        }
        self.bytes += size;
        self.wills.insert(client_id, will);
        true
    }

    fn take(&mut self) -> Vec<(ByteString, crate::message::Message)> {
        self.bytes = 0;
        self.wills.drain().collect()
    }
}

impl std::fmt::Debug for ClusterIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIo").field("me", &self.me).finish_non_exhaustive()
    }
}

impl ClusterIo {
    pub fn new(config: &Config, sockets: &ClusterSockets, boot: u64) -> Self {
        let me = Peer { addr: sockets.addr, boot, node_id: config.node_id, name: config.node() };
        let membership =
            Membership::new(me.clone(), config.cluster_failure_timeout, &sockets.seeds, boot);
        let quorum = config.cluster_quorum.map(|q| usize::from(q.get())).filter(|&q| q > 1);
        ClusterIo {
            me,
            membership,
            links: Vec::new(),
            figures: Vec::new(),
            link_bytes_max: config.cluster_link_buffer_bytes.get(),
            frame_limits: frame::Limits::for_packets(config.packet_size_max),
            datagrams: Vec::new(),
            send_wake: Rc::new(Notify::default()),
            out: Vec::new(),
            changes: Vec::new(),
            encoded: BytesMut::new(),
            links_refused: 0,
            key: sockets.key.clone(),
            auth_failures: 0,
            tls: sockets.tls.clone(),
            answers_dropped: 0,
            claims_out: HashMap::new(),
            claims_timed_out: 0,
            remote_wills: Vec::new(),
            wills_bytes_max: config.cluster_link_buffer_bytes.get().saturating_mul(4),
            wills_dropped: 0,
            wills_published: hashbrown::HashSet::new(),
            wills_published_forgotten: 0,
            unsent_answers: Vec::new(),
            quorum,
            // As every shard's core: fenced until enough nodes are seen up.
            fenced: quorum.is_some(),
            fences: 0,
        }
    }

    /// How long after a node went down its client ids still count as held there:
    /// with a quorum, the fencing margin (`Membership::fence_margin`), so that a
    /// node cut off from the quorum has closed its clients before any of them is
    /// taken over here; without, none.
    fn fence_margin_ms(&self) -> u64 {
        match self.quorum {
            Some(_) => self.membership.fence_margin().as_millis() as u64,
            None => 0,
        }
    }

    fn wills_mut(&mut self, slot: usize) -> &mut RemoteWills {
        if self.remote_wills.len() <= slot {
            self.remote_wills.resize_with(slot + 1, RemoteWills::default);
        }
        &mut self.remote_wills[slot]
    }

    /// Whether this node publishes the wills of the node in `dead`: the survivor
    /// with the lowest cluster address does (every survivor holds a copy; one
    /// publishes).
    fn publishes_wills_of(&self, dead: usize) -> bool {
        self.membership
            .nodes()
            .iter()
            .enumerate()
            .filter(|(slot, node)| *slot != dead && node.up)
            .all(|(_, node)| node.peer.addr > self.me.addr)
    }

    /// The wills of a dead node's clients were published (by this node or
    /// another survivor): kept in mind for that node's restart.
    fn remember_published(&mut self, wills: &[(ByteString, crate::message::Message)]) {
        for (client_id, _) in wills {
            if self.wills_published.len() < WILLS_PUBLISHED_MAX {
                self.wills_published.insert(client_id.clone());
            } else if !self.wills_published.contains(client_id) {
                self.wills_published_forgotten += 1;
            }
        }
    }

    fn figures_mut(&mut self, slot: usize) -> &mut LinkFigures {
        if self.figures.len() <= slot {
            self.figures.resize(slot + 1, LinkFigures::default());
        }
        &mut self.figures[slot]
    }

    /// The cluster as this node sees it.
    pub fn status(&self, now_ms: u64, core: &super::core::Core) -> ClusterStatus {
        let mut members = vec![MemberStatus {
            name: self.me.name.clone(),
            addr: self.me.addr.to_string(),
            node_id: self.me.node_id,
            state: "self".to_owned(),
            since_secs: 0,
            link: "none".to_owned(),
            messages_out: 0,
            messages_in: 0,
            messages_dropped: 0,
            queued_bytes: 0,
            filters: core.node_filter_count(None),
        }];
        for (slot, node) in self.membership.nodes().iter().enumerate() {
            let figures = self.figures.get(slot).copied().unwrap_or_default();
            let link = self.links.get(slot).and_then(Option::as_ref);
            members.push(MemberStatus {
                name: node.peer.name.clone(),
                addr: node.peer.addr.to_string(),
                node_id: node.peer.node_id,
                state: if node.up { "up" } else { "down" }.to_owned(),
                since_secs: now_ms.saturating_sub(node.since_ms) / 1000,
                link: match link {
                    Some(l) if l.connected => "connected",
                    Some(_) => "connecting",
                    None => "none",
                }
                .to_owned(),
                messages_out: figures.messages_out,
                messages_in: figures.messages_in,
                messages_dropped: figures.messages_dropped,
                queued_bytes: link.map_or(0, |l| l.buf.len() as u64),
                filters: core.node_filter_count(Some(slot)),
            });
        }
        ClusterStatus {
            node: self.me.name.clone(),
            members,
            quorum: self.quorum.map_or(0, |q| q as u16),
            fenced: self.fenced,
        }
    }

    /// Node-wide figures for `/metrics`, in the OpenMetrics text format.
    pub fn metrics_text(&self, stats: &crate::metrics::ShardStats) -> String {
        let up = self.membership.nodes().iter().filter(|n| n.up).count();
        let sum = |f: fn(&LinkFigures) -> u64| self.figures.iter().map(f).sum::<u64>();
        let queued: usize = self.links.iter().flatten().map(|l| l.buf.len()).sum();
        let rows = [
            ("cluster_nodes_up", "gauge", "Other nodes up.", up as u64),
            (
                "cluster_fenced",
                "gauge",
                "1 while this node sees fewer nodes up than cluster_quorum and serves no client.",
                u64::from(self.fenced),
            ),
            ("cluster_fences", "counter", "Times this node lost its quorum.", self.fences),
            (
                "cluster_refused_no_quorum",
                "counter",
                "Connections refused (CONNACK 0x9C) while this node had no quorum.",
                stats.refused_no_quorum,
            ),
            (
                "cluster_messages_forwarded",
                "counter",
                "Messages written to node links.",
                sum(|f| f.messages_out),
            ),
            (
                "cluster_messages_received",
                "counter",
                "Messages received from node links.",
                sum(|f| f.messages_in),
            ),
            (
                "cluster_messages_dropped",
                "counter",
                "Messages dropped because a node link's buffer was full.",
                sum(|f| f.messages_dropped),
            ),
            (
                "cluster_messages_discarded",
                "counter",
                "Messages left in the link of a node declared down.",
                sum(|f| f.messages_discarded),
            ),
            ("cluster_link_queued_bytes", "gauge", "Bytes waiting for node links.", queued as u64),
            (
                "cluster_links_refused",
                "counter",
                "Incoming node links refused (bad hello or frame).",
                self.links_refused,
            ),
            (
                "cluster_auth_failures",
                "counter",
                "Membership datagrams dropped and node links refused for not proving the cluster secret.",
                self.auth_failures,
            ),
            (
                "cluster_sessions_handed_over",
                "counter",
                "Sessions handed to another node (their client connected there).",
                stats.sessions_handed_over,
            ),
            (
                "cluster_sessions_taken_over",
                "counter",
                "Sessions taken from another node.",
                stats.sessions_taken_over,
            ),
            (
                "cluster_recovered_sessions_dropped",
                "counter",
                "Sessions recovered from the data directory and dropped: their client had moved to another node.",
                stats.recovered_sessions_dropped,
            ),
            (
                "cluster_recovered_wills_dropped",
                "counter",
                "Wills recovered from the data directory and dropped: another node published them.",
                stats.recovered_wills_dropped,
            ),
            (
                "cluster_claims_refused",
                "counter",
                "Connections refused because another node claimed the client id later.",
                stats.claims_refused,
            ),
            (
                "cluster_claims_timed_out",
                "counter",
                "Claims that went on without an up node's answer (none within 5 s).",
                self.claims_timed_out,
            ),
            (
                "cluster_claim_answers_dropped",
                "counter",
                "Claim answers dropped while waiting for a link to a node not yet seen up.",
                self.answers_dropped,
            ),
            (
                "cluster_remote_wills_dropped",
                "counter",
                "Wills of other nodes' clients not kept (over 4 x cluster_link_buffer_bytes per node).",
                self.wills_dropped,
            ),
            (
                "cluster_published_wills_forgotten",
                "counter",
                "Client ids of a dead node's published wills not kept for its restart (over 65,536).",
                self.wills_published_forgotten,
            ),
            (
                "cluster_bad_datagrams",
                "counter",
                "Membership datagrams that did not decode.",
                self.membership.bad_datagrams,
            ),
        ];
        let mut text = String::new();
        for (name, kind, help, value) in rows {
            let sample = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
            text.push_str(&format!(
                "# HELP shardmq_{name} {help}\n# TYPE shardmq_{name} {kind}\nshardmq_{sample} {value}\n"
            ));
        }
        text
    }
}

impl ClusterIo {
    /// Claims go on without the nodes that will not answer, as if they had
    /// nothing: a node declared down (once the fencing margin passed), or any
    /// node once the claim is overdue.
    fn give_up(&mut self, now_ms: u64) -> Vec<(usize, ClaimMsg)> {
        let margin = self.fence_margin_ms();
        let members = self.membership.nodes();
        let mut answers = Vec::new();
        let mut timed_out = 0;
        self.claims_out.retain(|&claim, out| {
            let gone: Vec<usize> = out
                .nodes
                .iter()
                .filter(|&n| match members.get(n) {
                    Some(node) if !node.up => node.since_ms + margin <= now_ms,
                    Some(_) => out.deadline <= now_ms,
                    None => true,
                })
                .collect();
            for node in gone {
                if members.get(node).is_some_and(|n| n.up) {
                    timed_out += 1;
                }
                out.nodes.remove(node);
                let msg = ClaimMsg::Answered { claim, answer: Answer::Nothing };
                answers.push(((claim >> 48) as usize, msg));
            }
            !out.nodes.is_empty()
        });
        self.claims_timed_out += timed_out;
        answers
    }
}

impl Shard {
    /// Shard 0: writes a claim to every other up node; how many it went to.
    pub(super) fn cluster_send_claim(
        &mut self,
        claim: u64,
        stamp: u64,
        client_id: &str,
        kind: ClaimKind,
    ) -> usize {
        let now_ms = self.now().ms;
        let Some(cluster) = self.cluster.as_mut() else { return 0 };
        let mut encoded = BytesMut::new();
        frame::put_claim(&mut encoded, claim, stamp, client_id, kind);
        let frame = encoded.freeze();
        let mut nodes = ShardSet::default();
        for (slot, link) in cluster.links.iter_mut().enumerate() {
            if let Some(link) = link {
                link.buf.extend_from_slice(&frame);
                link.wake.notify();
                nodes.insert(slot);
            }
        }
        // A node declared down within the fencing margin may still serve the
        // client (it has not fenced itself yet): the claim waits it out.
        let margin = cluster.fence_margin_ms();
        for (slot, node) in cluster.membership.nodes().iter().enumerate() {
            if !node.up && now_ms < node.since_ms + margin {
                nodes.insert(slot);
            }
        }
        if !nodes.is_empty() {
            let out = ClaimOut { nodes, deadline: now_ms + CLAIM_TIMEOUT_MS, frame };
            cluster.claims_out.insert(claim, out);
        }
        nodes.iter().count()
    }

    /// Shard 0: writes this node's answer to node `node`'s claim.
    pub(super) fn cluster_send_answer(
        &mut self,
        node: usize,
        claim: u64,
        client_id: ByteString,
        answer: Answer,
    ) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        if matches!(answer, Answer::Held | Answer::WillPublished) {
            // The restarted node drops the will: asked once.
            cluster.wills_published.remove(&client_id);
        }
        match cluster.links.get_mut(node) {
            Some(Some(link)) => {
                let left_out = frame::put_handover(&mut link.buf, claim, &client_id, &answer);
                self.core.stats.dropped_mqueue += left_out as u64;
                link.wake.notify();
            }
            // A node that joins claims before this one has seen it up (gossip is
            // not instant): the answer waits for its link, and carries a session
            // that must not be lost. Bounded: the oldest goes past the limit.
            _ => {
                if cluster.unsent_answers.len() >= UNSENT_ANSWERS_MAX {
                    cluster.unsent_answers.remove(0);
                    cluster.answers_dropped += 1;
                }
                cluster.unsent_answers.push((node, claim, client_id, answer));
            }
        }
    }

    /// Shard 0, every tick: claims whose answers are overdue go on without them.
    /// At every tick: claims whose nodes did not answer in time, and a node alone
    /// announces to its seeds again. Whether membership has datagrams to send
    /// (the caller then drives it).
    pub(super) fn tick_cluster(&mut self) -> bool {
        let now_ms = self.now().ms;
        let Some(cluster) = self.cluster.as_mut() else { return false };
        let rejoined = cluster.membership.rejoin(now_ms);
        for (dest, msg) in cluster.give_up(now_ms) {
            self.send_claim_msg(dest, msg);
        }
        rejoined
    }

    /// The end of a pass on shard 0 of a cluster node: route changes and messages
    /// for the node links.
    pub(super) fn end_pass_cluster(&mut self) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        self.core.take_route_changes(&mut cluster.changes);
        self.core.take_node_out(&mut cluster.out);
        if cluster.changes.is_empty() && cluster.out.is_empty() {
            self.update_links_full();
            return;
        }
        let mut woken = ShardSet::default();
        for change in cluster.changes.drain(..) {
            for (slot, link) in cluster.links.iter_mut().enumerate() {
                if let Some(link) = link {
                    put_change(&mut link.buf, &change);
                    woken.insert(slot);
                }
            }
        }
        let mut out = std::mem::take(&mut cluster.out);
        for item in out.drain(..) {
            cluster.encoded.clear();
            let (nodes, framed, qos) = match &item {
                NodeOut::Publish(nodes, message) => {
                    (*nodes, frame::put_publish(&mut cluster.encoded, message), message.qos)
                }
                NodeOut::Shared(node, filter, message) => {
                    let mut nodes = ShardSet::default();
                    nodes.insert(*node);
                    let framed =
                        frame::put_shared_publish(&mut cluster.encoded, filter.as_str(), message);
                    (nodes, framed, message.qos)
                }
                NodeOut::Retain(node, message) => {
                    let mut nodes = ShardSet::default();
                    nodes.insert(*node);
                    (nodes, frame::put_retain(&mut cluster.encoded, message), message.qos)
                }
            };
            if !framed {
                continue;
            }
            for slot in nodes.iter() {
                let max = cluster.link_bytes_max;
                let Some(Some(link)) = cluster.links.get_mut(slot) else { continue };
                // A connected link takes a QoS 1 or 2 message over its bound: its
                // publisher is acknowledged in this pass, and the high mark pauses
                // the publishers only at the pass's end, so one pass can bring more
                // than the room left. It overshoots by at most what one pass reads.
                // A link that is not connected drops it (counted): its node may be
                // dead, and the others must not wait for the failure detector.
                let fits = link.buf.len() + cluster.encoded.len() <= max
                    || (link.connected && qos != QoS::AtMostOnce);
                if fits {
                    link.buf.extend_from_slice(&cluster.encoded);
                    link.messages += 1;
                    woken.insert(slot);
                }
                let figures = cluster.figures_mut(slot);
                if fits {
                    figures.messages_out += 1;
                } else {
                    figures.messages_dropped += 1;
                }
            }
        }
        cluster.out = out;
        for slot in woken.iter() {
            if let Some(Some(link)) = cluster.links.get(slot) {
                link.wake.notify();
            }
        }
        self.update_links_full();
    }

    /// Pauses this shard's publishers (and the rings feeding it) while a node link
    /// holds more than its high mark, and lets them go once it drained.
    fn update_links_full(&mut self) {
        let Some(cluster) = self.cluster.as_ref() else { return };
        let high = (cluster.link_bytes_max / 2).min(LINK_HIGH_MARK);
        let full = cluster.links.iter().flatten().any(|l| l.connected && l.buf.len() > high);
        let now = self.now();
        self.core.set_links_full(now, full);
    }
}

/// Shard 0 of a cluster node: starts membership, the listener for incoming links
/// and the membership socket's tasks.
pub(crate) fn start(shard: &ShardRc, sockets: ClusterSockets) {
    // SAFETY: sockets bound by `Broker::start` for shard 0 alone.
    let udp = Rc::new(unsafe { UdpSocket::from_raw_fd(sockets.udp.into_raw_fd()) });
    let listener = unsafe { TcpListener::from_raw_fd(sockets.tcp.into_raw_fd()) };
    info!(addr = %sockets.addr, seeds = ?sockets.seeds, "cluster: joining");
    drive(shard);
    spawn_local(receive_datagrams(Rc::clone(shard), Rc::clone(&udp))).detach();
    spawn_local(send_datagrams(Rc::clone(shard), udp)).detach();
    spawn_local(incoming::accept_links(Rc::clone(shard), listener)).detach();
}

/// Tells the other nodes this one leaves (shutdown), best effort.
pub(crate) fn leave(shard: &ShardRc) {
    if let Some(cluster) = shard.borrow_mut().cluster.as_mut() {
        cluster.membership.leave();
    }
    drive(shard);
}

/// Acts on what membership produced: datagrams to send, timers to set, nodes up
/// and down.
pub(super) fn drive(shard: &ShardRc) {
    let mut timers = Vec::new();
    let mut writers = Vec::new();
    {
        let mut s = shard.borrow_mut();
        drive_membership(&mut s, &mut timers, &mut writers);
    }
    // Spawned with the shard released: glommio may run a new task at once.
    for (after, timer) in timers {
        let shard = Rc::clone(shard);
        spawn_local(async move {
            glommio::timer::sleep(after).await;
            {
                let mut s = shard.borrow_mut();
                let now_ms = s.now().ms;
                if let Some(cluster) = s.cluster.as_mut() {
                    cluster.membership.handle_timer(now_ms, timer);
                }
            }
            drive(&shard);
        })
        .detach();
    }
    for (slot, addr, wake) in writers {
        spawn_local(write_link(Rc::clone(shard), slot, addr, wake)).detach();
    }
}

type Timers = Vec<(Duration, foca::Timer<Peer>)>;
type Writers = Vec<(usize, SocketAddr, Rc<Notify>)>;

fn drive_membership(s: &mut Shard, timers: &mut Timers, writers: &mut Writers) {
    let now = s.now();
    let mut claims = Vec::new();
    drive_events(s, now, timers, writers, &mut claims);
    for (dest, msg) in claims {
        s.send_claim_msg(dest, msg);
    }
}

fn drive_events(
    s: &mut Shard,
    now: super::core::Now,
    timers: &mut Timers,
    writers: &mut Writers,
    claims: &mut Vec<(usize, ClaimMsg)>,
) {
    let Some(cluster) = s.cluster.as_mut() else { return };
    let mut sent = false;
    while let Some(datagram) = cluster.membership.poll_send() {
        cluster.datagrams.push(datagram);
        sent = true;
    }
    if sent {
        cluster.send_wake.notify();
    }
    while let Some(timer) = cluster.membership.poll_timer() {
        timers.push(timer);
    }
    let mut changed = false;
    while let Some(event) = cluster.membership.poll_event() {
        changed = true;
        match event {
            Event::Up(slot) => {
                let peer = cluster.membership.nodes()[slot].peer.clone();
                info!(node = %peer.name, addr = %peer.addr, "cluster: node up");
                if cluster.links.len() <= slot {
                    cluster.links.resize_with(slot + 1, || None);
                }
                // A node that went down and up again before its writer noticed gets
                // a fresh link: the old writer sees it is no longer wanted.
                if let Some(old) = cluster.links[slot].take() {
                    old.wake.notify();
                }
                let wake = Rc::new(Notify::default());
                let mut buf = BytesMut::new();
                let (due, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut cluster.unsent_answers)
                    .into_iter()
                    .partition(|a| a.0 == slot);
                cluster.unsent_answers = kept;
                for (_, claim, client_id, answer) in due {
                    frame::put_handover(&mut buf, claim, &client_id, &answer);
                }
                cluster.links[slot] = Some(LinkOut {
                    buf,
                    messages: 0,
                    connected: false,
                    wanted: true,
                    wake: Rc::clone(&wake),
                });
                s.core.handle_node(now, NodeMsg::Up(slot));
                writers.push((slot, peer.addr, wake));
            }
            Event::Down(slot) => {
                let peer = &cluster.membership.nodes()[slot].peer;
                warn!(node = %peer.name, addr = %peer.addr, "cluster: node down");
                if let Some(Some(link)) = cluster.links.get_mut(slot).map(Option::take) {
                    link.wake.notify();
                    cluster.figures_mut(slot).messages_discarded += link.messages;
                }
                claims.extend(cluster.give_up(now.ms));
                let wills = cluster.wills_mut(slot).take();
                cluster.remember_published(&wills);
                if !wills.is_empty() && cluster.publishes_wills_of(slot) {
                    info!(
                        wills = wills.len(),
                        "cluster: publishing the wills of the node that died"
                    );
                    s.core
                        .publish_dead_node_wills(now, wills.into_iter().map(|(_, w)| w).collect());
                }
                s.core.handle_node(now, NodeMsg::Down(slot));
            }
        }
    }
    if changed {
        let up = cluster.membership.nodes_up();
        let fenced = cluster.quorum.is_some_and(|q| up < q);
        if fenced != cluster.fenced {
            cluster.fenced = fenced;
            if fenced {
                cluster.fences += 1;
                warn!(up, quorum = ?cluster.quorum, "cluster: quorum lost, closing every client");
            } else {
                info!(up, quorum = ?cluster.quorum, "cluster: quorum reached, serving clients");
            }
            s.core.handle_node(now, NodeMsg::Fenced(fenced));
        }
        s.schedule_pass();
    }
}

async fn receive_datagrams(shard: ShardRc, udp: Rc<UdpSocket>) {
    until_stopped(&shard.clone(), async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else { continue };
            {
                let mut s = shard.borrow_mut();
                let now_ms = s.now().ms;
                if let Some(cluster) = s.cluster.as_mut() {
                    let datagram = match &cluster.key {
                        Some(key) => key.open(&buf[..n]),
                        None => Some(&buf[..n]),
                    };
                    match datagram {
                        Some(datagram) => cluster.membership.handle_datagram(now_ms, datagram),
                        None => {
                            cluster.auth_failures += 1;
                            debug!(%from, "cluster: membership datagram without the cluster secret's tag dropped");
                            continue;
                        }
                    }
                }
            }
            drive(&shard);
        }
    })
    .await;
}

async fn send_datagrams(shard: ShardRc, udp: Rc<UdpSocket>) {
    let (wake, key) = match shard.borrow().cluster.as_ref() {
        Some(cluster) => (Rc::clone(&cluster.send_wake), cluster.key.clone()),
        None => return,
    };
    // Not ended by the shard's stop: the leave announcement goes out after it.
    loop {
        let datagrams = match shard.borrow_mut().cluster.as_mut() {
            Some(cluster) => std::mem::take(&mut cluster.datagrams),
            None => return,
        };
        if datagrams.is_empty() {
            if shard.borrow().stopped.is_set() {
                return;
            }
            futures_lite::future::or(wake.notified(), shard_stopped(&shard)).await;
            continue;
        }
        for (to, data) in datagrams {
            let sealed = key.as_ref().map(|key| key.seal(&data));
            if let Err(e) = udp.send_to(sealed.as_deref().unwrap_or(&data), to).await {
                debug!(%to, "cluster: membership datagram not sent: {e}");
            }
        }
    }
}

async fn shard_stopped(shard: &ShardRc) {
    let stopped = Rc::clone(&shard.borrow().stopped);
    stopped.wait().await;
}

/// The cluster's part of shard 0's figures, when in a cluster.
pub(crate) fn status(shard: &RefCell<Shard>) -> Option<ClusterStatus> {
    let s = shard.borrow();
    let now_ms = s.now().ms;
    s.cluster.as_ref().map(|c| c.status(now_ms, &s.core))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, MessageId};
    use crate::protocol::{QoS, TopicName};

    fn will(payload: usize) -> Message {
        Message {
            id: MessageId(1),
            topic: TopicName::try_from("w").expect("topic"),
            payload: vec![0; payload].into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            publisher: None,
            properties: None,
        }
    }

    #[test]
    fn remote_wills_are_bounded_by_bytes_and_counted_back() {
        let mut wills = RemoteWills::default();
        assert!(wills.set("a".into(), Some(will(49)), 100));
        assert!(wills.set("b".into(), Some(will(49)), 100));
        assert!(!wills.set("c".into(), Some(will(10)), 100), "over the bound: not kept");
        // A client's new will replaces its old one within the bound.
        assert!(wills.set("a".into(), Some(will(9)), 100));
        assert!(wills.set("c".into(), Some(will(39)), 100));
        assert!(wills.set("b".into(), None, 100));
        assert_eq!(wills.bytes, 10 + 40);
        assert_eq!(wills.take().len(), 2);
        assert_eq!(wills.bytes, 0);
    }
}
