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
//! A node that restarted with sessions from its data directory claims each of
//! them once (`ClaimKind::Recovered`), when membership had the failure timeout
//! to find the other nodes: a node that holds a session for the id, or published
//! its will when this one died, says so, and the core drops the stale session or
//! will (`Core::reconcile`).
//!
//! # Invariants
//! - A parked connection reads nothing; its handshake deadline still runs.
//! - A session handed over is imported even when its connection is gone meanwhile,
//!   so that it is never lost between two nodes.

use hashbrown::HashMap;

use crate::cluster::frame::{Answer, ClaimKind};
use crate::shard::core::Reconciled;

use super::*;

/// What the shards of one node say to each other about claims.
#[derive(Debug)]
pub(crate) enum ClaimMsg {
    /// Owner shard -> shard 0: claim `client_id` from every other node.
    Claim { claim: u64, stamp: u64, client_id: ByteString, kind: ClaimKind },
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
        kind: ClaimKind,
        /// Shard 0 published the will of `client_id` as a dead node's.
        will_published: bool,
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

/// A recovered session's claim, until every node answered.
#[derive(Debug)]
struct Recovering {
    client_id: ByteString,
    /// Nodes the claim went to, once shard 0 said.
    due: Option<usize>,
    answered: usize,
    outcome: Reconciled,
}

/// This shard's claims in flight.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    parked: HashMap<u64, Parked>,
    recovering: HashMap<u64, Recovering>,
    next: u64,
    /// The recovered sessions were claimed (once, after the start).
    reconciling: bool,
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
        let claim = self.next_claim();
        let stamp = self.now().unix_us;
        let client_id = ByteString::from(&*connect.client_id);
        let kind = ClaimKind::of_connect(connect.clean_session);
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
        self.send_claim_msg(0, ClaimMsg::Claim { claim, stamp, client_id, kind });
    }

    /// A claim id: the shard in its top 16 bits, where answers go back to.
    fn next_claim(&mut self) -> u64 {
        self.claims.next += 1;
        ((self.core.id as u64) << 48) | (self.claims.next & ((1 << 48) - 1))
    }

    /// Every tick: once the failure timeout has passed since the start (time
    /// for membership to find the other nodes) and the node has its quorum, the
    /// sessions recovered from the data directory are claimed from every node up,
    /// which says what it holds (`ClaimKind::Recovered`).
    pub(in crate::shard) fn reconcile_recovered(&mut self) {
        if self.claims.reconciling || !self.core.cluster_enabled() {
            return;
        }
        let now = self.now();
        if now.ms < self.config.cluster_failure_timeout.as_millis() as u64
            || self.core.cluster_fenced()
        {
            return;
        }
        self.claims.reconciling = true;
        let recovered = self.core.recovered_sessions();
        if !recovered.is_empty() {
            info!(
                sessions = recovered.len(),
                "cluster: asking the other nodes about the recovered sessions"
            );
        }
        for client_id in recovered {
            let claim = self.next_claim();
            let recovering = Recovering {
                client_id: client_id.clone(),
                due: None,
                answered: 0,
                outcome: Reconciled::Keep,
            };
            self.claims.recovering.insert(claim, recovering);
            let kind = ClaimKind::Recovered;
            self.send_claim_msg(0, ClaimMsg::Claim { claim, stamp: now.unix_us, client_id, kind });
        }
    }

    /// A claim message from another shard of this node (or this one).
    pub(in crate::shard) fn handle_claim_msg(&mut self, msg: ClaimMsg) {
        match msg {
            ClaimMsg::Claim { claim, stamp, client_id, kind } => {
                let nodes = self.cluster_send_claim(claim, stamp, &client_id, kind);
                let origin = (claim >> 48) as usize;
                self.send_claim_msg(origin, ClaimMsg::Sent { claim, nodes });
            }
            ClaimMsg::Sent { claim, nodes } => {
                if let Some(parked) = self.claims.parked.get_mut(&claim) {
                    parked.due = Some(nodes);
                }
                if let Some(recovering) = self.claims.recovering.get_mut(&claim) {
                    recovering.due = Some(nodes);
                }
                self.claim_done(claim);
            }
            ClaimMsg::Answered { claim, answer } if self.claims.recovering.contains_key(&claim) => {
                let now = self.now();
                let recovering = self.claims.recovering.get_mut(&claim).expect("checked");
                recovering.answered += 1;
                match answer {
                    Answer::Held => recovering.outcome = Reconciled::Moved,
                    Answer::WillPublished if recovering.outcome == Reconciled::Keep => {
                        recovering.outcome = Reconciled::WillPublished;
                    }
                    // Not an answer to this kind of claim; a session is never lost.
                    Answer::Session(image) => {
                        let client_id = recovering.client_id.clone();
                        self.core.import_session(now, client_id, *image);
                    }
                    Answer::WillPublished | Answer::Nothing | Answer::Refused => {}
                }
                self.claim_done(claim);
            }
            ClaimMsg::Answered { claim, answer } => {
                if let Some(parked) = self.claims.parked.get_mut(&claim) {
                    parked.answered += 1;
                    match answer {
                        // `Held` and `WillPublished` answer recovered sessions only.
                        Answer::Nothing | Answer::Held | Answer::WillPublished => {}
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
            ClaimMsg::Remote {
                node,
                claim,
                client_id,
                kind: ClaimKind::Recovered,
                will_published,
                ..
            } => {
                let answer = if self.core.holds_session(&client_id) {
                    Answer::Held
                } else if will_published {
                    Answer::WillPublished
                } else {
                    Answer::Nothing
                };
                self.send_claim_msg(0, ClaimMsg::Reply { node, claim, client_id, answer });
            }
            ClaimMsg::Remote { node, node_id, claim, stamp, client_id, kind, .. } => {
                let clean_start = kind == ClaimKind::CleanStart;
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
        let recovered = self.claims.recovering.get(&claim);
        if recovered.is_some_and(|r| r.due.is_some_and(|d| r.answered >= d)) {
            let recovering = self.claims.recovering.remove(&claim).expect("checked");
            let now = self.now();
            self.core.reconcile(now, &recovering.client_id, recovering.outcome);
            self.schedule_pass();
            return;
        }
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
