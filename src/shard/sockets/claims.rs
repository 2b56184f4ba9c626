//! One client id, one session in the whole cluster: a client that connects to this
//! node is claimed from every other up node before its CONNECT reaches the core.
//!
//! The owner shard of the client id (here) parks the connection and sends the
//! claim through shard 0, which writes it to every node link and says how many
//! nodes it went to. On each other node, the owner shard of the client id ends the
//! connection it has for it (a takeover: MQTT 5 DISCONNECT 0x8E) and hands the
//! session over when the client resumes it; shard 0 writes the answer back. When
//! every node answered (a node that goes down answers nothing), the session, if
//! one came, is imported into the core and CONNECT is processed as if the client
//! had come back to the same node: Session Present, and the window, queue and QoS
//! 2 state resume.
//!
//! Two connections racing on two nodes: each node's claim reaches the other while
//! its own waits; the later claim (by time, then node id) wins, and the earlier
//! connection is refused (CONNACK 0x89 Server busy, 3 in MQTT 3), so one of them
//! connects.
//!
//! # Invariants
//! - A parked connection reads nothing; its handshake deadline still runs.
//! - A session handed over is imported even when its connection is gone meanwhile,
//!   so that it is never lost between two nodes.

use hashbrown::HashMap;

use crate::cluster::frame::Answer;

use super::*;

/// What the shards of one node say to each other about claims.
#[derive(Debug)]
pub(crate) enum ClaimMsg {
    /// Owner shard -> shard 0: claim `client_id` from every other node.
    Claim { claim: u64, stamp: u64, client_id: ByteString, clean_start: bool },
    /// Shard 0 -> owner shard: the claim went to this many nodes.
    Sent { claim: u64, nodes: usize },
    /// Shard 0 -> owner shard: one node's answer.
    Answered { claim: u64, answer: Answer },
    /// Shard 0 -> owner shard: node `node` (slot; its `node_id`) claims `client_id`.
    Remote {
        node: usize,
        node_id: u16,
        claim: u64,
        stamp: u64,
        client_id: ByteString,
        clean_start: bool,
    },
    /// Owner shard -> shard 0: the answer to node `node`'s claim.
    Reply { node: usize, claim: u64, client_id: ByteString, answer: Answer },
    /// Shard 0 -> owner shard: a session that came after its claim gave up on it.
    Late { client_id: ByteString, image: Box<crate::session::SessionImage> },
}

/// A connection parked until every other node answered its claim.
#[derive(Debug)]
struct Parked {
    link: LinkId,
    connect: Connect,
    auth: Option<AuthOutcome>,
    stamp: u64,
    /// Nodes the claim went to, once shard 0 said.
    due: Option<usize>,
    answered: usize,
    image: Option<Box<crate::session::SessionImage>>,
    /// Another node claimed the same client id later: this connection loses.
    lost: bool,
}

/// This shard's claims in flight.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    parked: HashMap<u64, Parked>,
    next: u64,
}

impl Shard {
    /// Sends a claim message to `dest`, or handles it here when `dest` is this shard.
    pub(in crate::shard) fn send_claim_msg(&mut self, dest: usize, msg: ClaimMsg) {
        if dest == self.core.id {
            self.handle_claim_msg(msg);
        } else {
            self.core.push_ctrl(dest, CtrlMsg::Io(Box::new(IoMsg::Claim(msg))));
            self.schedule_pass();
        }
    }

    /// CONNECT accepted by the checks: claimed from the other nodes first when
    /// there are any, else given to the core now.
    pub(super) fn claim_or_connect(
        &mut self,
        id: LinkId,
        connect: Connect,
        auth: Option<AuthOutcome>,
    ) {
        if self.core.cluster_fenced() {
            self.refuse_no_quorum(id, connect.protocol);
            return;
        }
        // An assigned client id is this node's own: no other node can hold it.
        if !self.core.cluster_peers_up() || connect.client_id.is_empty() {
            self.connect_now(id, connect, auth);
            return;
        }
        self.claims.next += 1;
        let claim = ((self.core.id as u64) << 48) | (self.claims.next & ((1 << 48) - 1));
        let stamp = self.now().unix_us;
        let client_id = ByteString::from(&*connect.client_id);
        let clean_start = connect.clean_session;
        if let Some(link) = self.sockets.link(id) {
            link.phase = Phase::Claiming(claim);
        }
        let parked = Parked {
            link: id,
            connect,
            auth,
            stamp,
            due: None,
            answered: 0,
            image: None,
            lost: false,
        };
        self.claims.parked.insert(claim, parked);
        self.send_claim_msg(0, ClaimMsg::Claim { claim, stamp, client_id, clean_start });
    }

    /// A claim message from another shard of this node (or this one).
    pub(in crate::shard) fn handle_claim_msg(&mut self, msg: ClaimMsg) {
        match msg {
            ClaimMsg::Claim { claim, stamp, client_id, clean_start } => {
                let nodes = self.cluster_send_claim(claim, stamp, &client_id, clean_start);
                let origin = (claim >> 48) as usize;
                self.send_claim_msg(origin, ClaimMsg::Sent { claim, nodes });
            }
            ClaimMsg::Sent { claim, nodes } => {
                if let Some(parked) = self.claims.parked.get_mut(&claim) {
                    parked.due = Some(nodes);
                }
                self.claim_done(claim);
            }
            ClaimMsg::Answered { claim, answer } => {
                if let Some(parked) = self.claims.parked.get_mut(&claim) {
                    parked.answered += 1;
                    match answer {
                        Answer::Nothing => {}
                        Answer::Refused => parked.lost = true,
                        // Two nodes with a session for one id (a healed partition):
                        // the first answer wins, the other is dropped.
                        Answer::Session(image) => {
                            parked.image.get_or_insert(image);
                        }
                    }
                }
                self.claim_done(claim);
            }
            ClaimMsg::Remote { node, node_id, claim, stamp, client_id, clean_start } => {
                let answer = self.answer_claim(node_id, stamp, &client_id, clean_start);
                self.send_claim_msg(0, ClaimMsg::Reply { node, claim, client_id, answer });
            }
            ClaimMsg::Reply { node, claim, client_id, answer } => {
                self.cluster_send_answer(node, claim, client_id, answer);
            }
            ClaimMsg::Late { client_id, image } => {
                // Offline here, resumed by its client's next connection; dropped
                // (counted) if the client has a session here already.
                let now = self.now();
                self.core.import_session(now, client_id, *image);
            }
        }
    }

    /// Refuses a connection while this node has no quorum (`cluster_quorum`): the
    /// client is to use another node (CONNACK 0x9C, Use another server, MQTT 5
    /// section 3.2.2.2; return code 3, Server unavailable, in MQTT 3).
    fn refuse_no_quorum(&mut self, id: LinkId, protocol: ProtocolVersion) {
        self.core.stats.refused_no_quorum += 1;
        info!("refusing connection: this node has no quorum of cluster nodes");
        let refusal = connack(ReasonCode::USE_ANOTHER_SERVER, protocol);
        self.sockets.close_link(id, Some(refusal));
        self.schedule_pass();
    }

    /// Another node claims `client_id`: the later of two racing claims wins.
    fn answer_claim(
        &mut self,
        node_id: u16,
        stamp: u64,
        client_id: &ByteString,
        clean_start: bool,
    ) -> Answer {
        let me = self.config.node_id;
        for parked in self.claims.parked.values_mut() {
            if *parked.connect.client_id == **client_id {
                if (parked.stamp, me) > (stamp, node_id) {
                    return Answer::Refused;
                }
                parked.lost = true;
            }
        }
        let now = self.now();
        match self.core.hand_over_session(now, client_id, clean_start) {
            Some(image) => Answer::Session(Box::new(image)),
            None => Answer::Nothing,
        }
    }

    /// Ends a claim once every node answered: imports what came, then connects (or
    /// refuses the connection that lost a race).
    fn claim_done(&mut self, claim: u64) {
        let done =
            self.claims.parked.get(&claim).is_some_and(|p| p.due.is_some_and(|d| p.answered >= d));
        if !done {
            return;
        }
        let Some(parked) = self.claims.parked.remove(&claim) else { return };
        let now = self.now();
        if let Some(image) = parked.image {
            self.core.import_session(now, ByteString::from(&*parked.connect.client_id), *image);
        }
        let waiting = self
            .sockets
            .link(parked.link)
            .is_some_and(|l| matches!(l.phase, Phase::Claiming(c) if c == claim));
        if !waiting {
            return;
        }
        if self.core.cluster_fenced() {
            self.refuse_no_quorum(parked.link, parked.connect.protocol);
            return;
        }
        if parked.lost {
            self.core.stats.claims_refused += 1;
            info!(client_id = %parked.connect.client_id, "refusing connection: the client id connected to another node meanwhile");
            let refusal = connack(ReasonCode::SERVER_BUSY, parked.connect.protocol);
            self.sockets.close_link(parked.link, Some(refusal));
            self.schedule_pass();
            return;
        }
        if let Some(link) = self.sockets.link(parked.link) {
            link.phase = Phase::Handshake;
        }
        self.connect_now(parked.link, parked.connect, parked.auth);
    }
}
