//! Membership: which nodes form the cluster and which of them are up, by SWIM
//! failure detection and gossip ([`foca`]).
//!
//! Sans-IO, like foca itself: datagrams and timer events in; datagrams to send,
//! timers to set and [`Event`]s out. Shard 0's IO layer drives it over one UDP
//! socket (`shard::cluster`).
//!
//! A node joins through seeds, addresses whose identity it does not know yet: each
//! is entered as a down member with boot 0, which every real identity at that
//! address replaces (the higher boot wins an address), and announced to at once and
//! then periodically until it answers: by foca once this node has a member, and by
//! [`Membership::rejoin`] while it has none (foca does not retry then, so a node
//! whose seeds were all down when it started would wait forever).
//!
//! # Invariants
//! - A node keeps its slot (its index in [`Membership::nodes`], the bit it has in
//!   every shard's node route table) for the life of this process, whatever its
//!   restarts: slots are per cluster address.
//! - At most [`NODES_MAX`] other nodes; one more is ignored and counted.
//! - An `Up` event is followed by at most one `Down` for the same slot before the
//!   next `Up`.

use std::collections::VecDeque;
// An address is plain data (`core::net`): membership never opens a socket.
use core::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use bytes::Bytes;
use foca::{
    AccumulatingRuntime, Config, Foca, Identity, Member, NoCustomBroadcast, OwnedNotification,
    PeriodicParams, PostcardCodec, Timer,
};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::router::SHARDS_MAX;

/// The most other nodes a node knows: one bit each in the node route tables.
pub const NODES_MAX: usize = SHARDS_MAX;

/// A node as the cluster names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Its cluster address (UDP membership, TCP node links).
    pub addr: SocketAddr,
    /// Its start time in unix microseconds (bumped on rejoin): a restarted node
    /// wins its address over its former self.
    pub boot: u64,
    /// Its `node_id`, part of its message ids.
    pub node_id: u16,
    /// Its node name.
    pub name: String,
}

impl Identity for Peer {
    type Addr = SocketAddr;

    /// A node declared down (a pause, a partition) rejoins under a new identity at
    /// once instead of waiting to be forgotten.
    fn renew(&self) -> Option<Self> {
        Some(Peer { boot: self.boot + 1, ..self.clone() })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.boot > adversary.boot
    }
}

/// A change the rest of the broker acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The node in this slot is up (first seen, or back).
    Up(usize),
    /// The node in this slot was declared down (or left).
    Down(usize),
}

/// Another node, by slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub peer: Peer,
    pub up: bool,
    /// When it last went up or down, on the caller's millisecond clock.
    pub since_ms: u64,
}

/// How often a member is probed, from the failure timeout.
fn probe_period(failure_timeout: Duration) -> Duration {
    (failure_timeout / 4).max(Duration::from_millis(50))
}

/// Timing derived from the failure timeout.
fn config(failure_timeout: Duration) -> Config {
    // A member is probed once per period (foca probes members in a shuffled round),
    // answers within `probe_rtt` or is probed indirectly, and stays suspect for
    // `suspect_to_down_after`: in a small cluster it is declared down about one
    // failure timeout after it stopped.
    let period = probe_period(failure_timeout);
    Config {
        probe_period: period,
        probe_rtt: period / 2,
        num_indirect_probes: NonZeroUsize::new(3).expect("non-zero"),
        max_transmissions: NonZeroU8::new(6).expect("non-zero"),
        suspect_to_down_after: failure_timeout / 2,
        // Forgotten after a while, so that the set of down members stays bounded.
        remove_down_after: Some(Duration::from_secs(60).max(failure_timeout * 10)),
        max_packet_size: NonZeroUsize::new(1400).expect("non-zero"),
        notify_down_members: true,
        periodic_announce: Some(PeriodicParams {
            frequency: Duration::from_secs(10),
            num_members: NonZeroUsize::new(1).expect("non-zero"),
        }),
        // Seeds that are not up yet are down members: asked again until they answer.
        periodic_announce_to_down_members: Some(PeriodicParams {
            frequency: period * 2,
            num_members: NonZeroUsize::new(2).expect("non-zero"),
        }),
        periodic_gossip: Some(PeriodicParams {
            frequency: period / 2,
            num_members: NonZeroUsize::new(3).expect("non-zero"),
        }),
    }
}

/// This node's membership state.
pub struct Membership {
    foca: Foca<Peer, PostcardCodec, SmallRng, NoCustomBroadcast>,
    runtime: AccumulatingRuntime<Peer>,
    nodes: Vec<Node>,
    events: VecDeque<Event>,
    /// Nodes ignored for want of a slot.
    pub over_limit: u64,
    /// Datagrams that did not decode (or came from a foreign cluster).
    pub bad_datagrams: u64,
    now_ms: u64,
    /// The seeds' placeholders, announced to again while this node has no member.
    seeds: Vec<Peer>,
    /// How often, and when last.
    rejoin_ms: u64,
    announced_ms: u64,
    /// foca's probe period (one member probed per period).
    probe_period: Duration,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").field("nodes", &self.nodes).finish_non_exhaustive()
    }
}

impl Membership {
    /// Starts as `me`, joining through `seeds` (none: a cluster of one, for others
    /// to join).
    pub fn new(me: Peer, failure_timeout: Duration, seeds: &[SocketAddr], rng_seed: u64) -> Self {
        let own = me.addr;
        let mut membership = Membership {
            foca: Foca::new(
                me,
                config(failure_timeout),
                SmallRng::seed_from_u64(rng_seed),
                PostcardCodec,
            ),
            runtime: AccumulatingRuntime::new(),
            nodes: Vec::new(),
            events: VecDeque::new(),
            over_limit: 0,
            bad_datagrams: 0,
            now_ms: 0,
            seeds: Vec::new(),
            // As often as foca announces to down members once it has a member.
            rejoin_ms: probe_period(failure_timeout).as_millis() as u64 * 2,
            announced_ms: 0,
            probe_period: probe_period(failure_timeout),
        };
        let placeholders: Vec<Peer> = seeds
            .iter()
            .filter(|seed| **seed != own)
            .map(|&addr| Peer { addr, boot: 0, node_id: 0, name: String::new() })
            .collect();
        let down = placeholders.iter().cloned().map(Member::down);
        // Neither call fails: the members are valid and nothing is encoded yet.
        let _ = membership.foca.apply_many(down, false, &mut membership.runtime);
        for seed in &placeholders {
            let _ = membership.foca.announce(seed.clone(), &mut membership.runtime);
        }
        membership.seeds = placeholders;
        membership.take_notifications();
        membership
    }

    /// Called every tick: while this node has no member (its seeds were down when
    /// it announced, or every node it knew went), announces to the seeds again
    /// once per `rejoin_ms`. Whether it did (there are datagrams to send).
    pub fn rejoin(&mut self, now_ms: u64) -> bool {
        if self.seeds.is_empty()
            || self.foca.num_members() > 0
            || now_ms.saturating_sub(self.announced_ms) < self.rejoin_ms
        {
            return false;
        }
        self.now_ms = now_ms;
        self.announced_ms = now_ms;
        for seed in &self.seeds {
            // Fails only for this node's own identity, which is never a seed.
            let _ = self.foca.announce(seed.clone(), &mut self.runtime);
        }
        self.take_notifications();
        true
    }

    /// A datagram from the membership socket.
    pub fn handle_datagram(&mut self, now_ms: u64, data: &[u8]) {
        self.now_ms = now_ms;
        if self.foca.handle_data(data, &mut self.runtime).is_err() {
            self.bad_datagrams += 1;
        }
        self.take_notifications();
    }

    /// A timer that [`Membership::poll_timer`] asked for, when it fires.
    pub fn handle_timer(&mut self, now_ms: u64, timer: Timer<Peer>) {
        self.now_ms = now_ms;
        // An error here is a timer of an identity since changed: nothing to do.
        let _ = self.foca.handle_timer(timer, &mut self.runtime);
        self.take_notifications();
    }

    /// Tells the others this node leaves (shutdown), so they need not detect it.
    pub fn leave(&mut self) {
        let _ = self.foca.leave_cluster(&mut self.runtime);
    }

    /// A datagram to send.
    pub fn poll_send(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.runtime.to_send().map(|(peer, data)| (peer.addr, data))
    }

    /// A timer to set: hand it back to [`Membership::handle_timer`] after the delay.
    pub fn poll_timer(&mut self) -> Option<(Duration, Timer<Peer>)> {
        self.runtime.to_schedule()
    }

    /// The next membership change.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Every other node this node has seen up, by slot.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The nodes up, this one included: what a quorum counts.
    pub fn nodes_up(&self) -> usize {
        1 + self.nodes.iter().filter(|n| n.up).count()
    }

    /// How long a node that keeps its quorum waits, after it declared another
    /// node down, before it takes that node's client ids over: long enough for
    /// the node that was cut off to have declared the others down too, and so to
    /// have fenced itself. Both sides declare a member down
    /// `suspect_to_down_after` after their own probe of it failed, and foca
    /// probes its members in shuffled rounds of one member per period: the cut-off
    /// node's last probe of the members it needs can come up to two rounds after
    /// the first probe of it. Two rounds of the members seen so far.
    pub fn fence_margin(&self) -> Duration {
        self.probe_period * 2 * self.nodes.len().max(1) as u32
    }

    /// The slot of the node at `addr`, given one if it has none.
    pub fn slot_of(&mut self, peer: &Peer) -> Option<usize> {
        if let Some(slot) = self.nodes.iter().position(|n| n.peer.addr == peer.addr) {
            return Some(slot);
        }
        if self.nodes.len() >= NODES_MAX {
            self.over_limit += 1;
            return None;
        }
        self.nodes.push(Node { peer: peer.clone(), up: false, since_ms: self.now_ms });
        Some(self.nodes.len() - 1)
    }

    fn take_notifications(&mut self) {
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(peer) => {
                    let Some(slot) = self.slot_of(&peer) else { continue };
                    let node = &mut self.nodes[slot];
                    node.peer = peer;
                    if !node.up {
                        node.up = true;
                        node.since_ms = self.now_ms;
                        self.events.push_back(Event::Up(slot));
                    }
                }
                OwnedNotification::MemberDown(peer) => {
                    let Some(slot) = self.nodes.iter().position(|n| n.peer.addr == peer.addr)
                    else {
                        continue;
                    };
                    let node = &mut self.nodes[slot];
                    // A down notice of a former identity says nothing of the new one.
                    if node.up && node.peer.boot <= peer.boot {
                        node.up = false;
                        node.since_ms = self.now_ms;
                        self.events.push_back(Event::Down(slot));
                    }
                }
                OwnedNotification::Rename(_, peer) => {
                    if let Some(slot) = self.nodes.iter().position(|n| n.peer.addr == peer.addr) {
                        self.nodes[slot].peer = peer;
                    }
                }
                // This node's own state: logged by the caller through `nodes`.
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BinaryHeap;

    /// Nodes on a virtual network: every datagram is delivered at once unless a
    /// node is cut off (stopped) or on the other side of a partition; timers fire
    /// on a virtual clock.
    struct Net {
        nodes: Vec<Membership>,
        cut: Vec<bool>,
        /// The side of a partition each node is on: datagrams cross no partition.
        side: Vec<u8>,
        timers: BinaryHeap<std::cmp::Reverse<(u64, u64, usize)>>,
        pending: Vec<Option<Timer<Peer>>>,
        now_ms: u64,
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 4000 + i as u16))
    }

    fn peer(i: usize, boot: u64) -> Peer {
        Peer { addr: addr(i), boot, node_id: i as u16, name: format!("n{i}") }
    }

    impl Net {
        fn new(n: usize, timeout: Duration) -> Net {
            Net::with_cut(vec![false; n], timeout)
        }

        /// Nodes that start cut off (down when the others announce to them).
        fn with_cut(cut: Vec<bool>, timeout: Duration) -> Net {
            let n = cut.len();
            // Every node joins through node 0.
            let nodes = (0..n)
                .map(|i| Membership::new(peer(i, 1), timeout, &[addr(0)], i as u64))
                .collect();
            let side = vec![0; n];
            let mut net =
                Net { nodes, cut, side, timers: BinaryHeap::new(), pending: vec![], now_ms: 0 };
            net.flush();
            net
        }

        /// Delivers every datagram and collects every timer, until quiet.
        fn flush(&mut self) {
            loop {
                let mut sent = Vec::new();
                for i in 0..self.nodes.len() {
                    while let Some((to, data)) = self.nodes[i].poll_send() {
                        sent.push((i, to, data));
                    }
                    while let Some((after, timer)) = self.nodes[i].poll_timer() {
                        let at = self.now_ms + after.as_millis() as u64;
                        self.pending.push(Some(timer));
                        self.timers.push(std::cmp::Reverse((at, self.pending.len() as u64 - 1, i)));
                    }
                }
                if sent.is_empty() {
                    return;
                }
                for (from, to, data) in sent {
                    let to = (to.port() - 4000) as usize;
                    if !self.cut[from] && !self.cut[to] && self.side[from] == self.side[to] {
                        self.nodes[to].handle_datagram(self.now_ms, &data);
                    }
                }
            }
        }

        /// Fires the timers due until `until_ms`, with the shard's tick (every
        /// `TICK_MS`) in between.
        fn run_until(&mut self, until_ms: u64) {
            const TICK_MS: u64 = 10;
            while self.now_ms < until_ms {
                let tick = (self.now_ms / TICK_MS + 1) * TICK_MS;
                self.fire_until(tick.min(until_ms));
                for i in 0..self.nodes.len() {
                    if !self.cut[i] {
                        self.nodes[i].rejoin(self.now_ms);
                    }
                }
                self.flush();
            }
        }

        fn fire_until(&mut self, until_ms: u64) {
            while let Some(std::cmp::Reverse((at, key, i))) = self.timers.peek().copied() {
                if at > until_ms {
                    break;
                }
                self.timers.pop();
                self.now_ms = at;
                let timer = self.pending[key as usize].take().expect("fires once");
                if !self.cut[i] {
                    self.nodes[i].handle_timer(at, timer);
                }
                self.flush();
            }
            self.now_ms = until_ms;
        }

        fn events(&mut self, i: usize) -> Vec<Event> {
            std::iter::from_fn(|| self.nodes[i].poll_event()).collect()
        }

        fn up(&self, i: usize) -> Vec<String> {
            let mut up: Vec<_> = self.nodes[i]
                .nodes()
                .iter()
                .filter(|n| n.up)
                .map(|n| n.peer.name.clone())
                .collect();
            up.sort();
            up
        }
    }

    #[test]
    fn three_nodes_join_through_one_seed() {
        let mut net = Net::new(3, Duration::from_secs(2));
        net.run_until(3_000);
        assert_eq!(net.up(0), vec!["n1", "n2"]);
        assert_eq!(net.up(1), vec!["n0", "n2"]);
        assert_eq!(net.up(2), vec!["n0", "n1"]);
        for i in 0..3 {
            let events = net.events(i);
            assert_eq!(events.len(), 2, "node {i}: one Up per other node: {events:?}");
            assert!(events.iter().all(|e| matches!(e, Event::Up(_))));
        }
    }

    #[test]
    fn nodes_whose_seed_was_down_when_they_started_join_once_it_is_up() {
        // n1 and n2 start while their seed n0 is not there yet: their first
        // announcements are lost, and foca alone never retries.
        let mut net = Net::with_cut(vec![true, false, false], Duration::from_secs(1));
        net.run_until(5_000);
        assert!(net.up(1).is_empty() && net.up(2).is_empty());
        net.cut[0] = false;
        // Within a rejoin period (twice a probe period: 500 ms) and gossip.
        net.run_until(6_000);
        assert_eq!(net.up(0), vec!["n1", "n2"]);
        assert_eq!(net.up(1), vec!["n0", "n2"]);
        assert_eq!(net.up(2), vec!["n0", "n1"]);
    }

    #[test]
    fn a_silent_node_is_declared_down_within_the_bound_and_comes_back() {
        let timeout = Duration::from_secs(2);
        let mut net = Net::new(3, timeout);
        net.run_until(3_000);
        for i in 0..3 {
            net.events(i);
        }
        net.cut[2] = true;
        // Declared down within twice the failure timeout (probe order is random).
        net.run_until(3_000 + 2 * timeout.as_millis() as u64);
        for i in 0..2 {
            assert_eq!(net.up(i).len(), 1, "node {i} still sees n2 up: {:?}", net.up(i));
            let events = net.events(i);
            let slot = net.nodes[i].nodes().iter().position(|n| n.peer.name == "n2").unwrap();
            assert_eq!(events, vec![Event::Down(slot)]);
        }
        // The partition heals: n2 learns it was declared down, rejoins with a new
        // identity, and is up again everywhere, in the same slot.
        net.cut[2] = false;
        net.run_until(3_000 + 8 * timeout.as_millis() as u64);
        for i in 0..2 {
            assert_eq!(net.up(i).len(), 2, "node {i}: {:?}", net.up(i));
            let slot = net.nodes[i].nodes().iter().position(|n| n.peer.name == "n2").unwrap();
            assert_eq!(net.events(i), vec![Event::Up(slot)]);
            assert!(net.nodes[i].nodes()[slot].peer.boot > 1, "renewed identity");
        }
    }

    /// `cluster_quorum`'s timing: nodes cut off from the quorum by a partition
    /// (still running) declare enough of the others down to fence themselves
    /// before any node of the quorum side is past the fencing margin of their
    /// down notice, whatever the probe order; the quorum side never fences.
    #[test]
    fn a_node_cut_off_from_the_quorum_fences_itself_before_the_others_take_over() {
        let timeout = Duration::from_secs(1);
        for (n, minority, quorum) in [(3, vec![2], 2), (5, vec![3, 4], 3)] {
            let majority: Vec<usize> = (0..n).filter(|i| !minority.contains(i)).collect();
            let names: Vec<String> = minority.iter().map(|i| format!("n{i}")).collect();
            // The partition starts at moments spread over several probe rounds.
            for start in 0..16u64 {
                let t0 = 4_000 + start * 61;
                let mut net = Net::new(n, timeout);
                net.run_until(t0);
                assert!((0..n).all(|i| net.nodes[i].nodes_up() == n), "formed by {t0} ms");
                for &i in &minority {
                    net.side[i] = 1;
                }
                let mut fenced_at = vec![None; n];
                let mut takeover_at = u64::MAX;
                while net.now_ms < t0 + 10 * timeout.as_millis() as u64 {
                    let next = net.now_ms + 10;
                    net.run_until(next);
                    for &i in &minority {
                        if fenced_at[i].is_none() && net.nodes[i].nodes_up() < quorum {
                            fenced_at[i] = Some(net.now_ms);
                        }
                    }
                    for &i in &majority {
                        let node = &net.nodes[i];
                        assert!(node.nodes_up() >= quorum, "n{i} of the quorum side fenced");
                        let margin = node.fence_margin().as_millis() as u64;
                        for other in node.nodes().iter().filter(|o| names.contains(&o.peer.name)) {
                            if !other.up {
                                takeover_at = takeover_at.min(other.since_ms + margin);
                            }
                        }
                    }
                }
                assert!(takeover_at < u64::MAX, "the quorum side declared the others down");
                for &i in &minority {
                    let fenced = fenced_at[i].expect("the cut-off node fenced itself");
                    assert!(
                        fenced < takeover_at,
                        "n={n} start {t0}: n{i} fenced at {fenced} ms, takeover from {takeover_at} ms"
                    );
                }
            }
        }
    }

    #[test]
    fn a_restarted_node_keeps_its_slot() {
        let mut net = Net::new(2, Duration::from_secs(2));
        net.run_until(2_000);
        net.events(0);
        // Node 1 restarts under a new boot, at the same address.
        net.nodes[1] = Membership::new(peer(1, 5), Duration::from_secs(2), &[addr(0)], 9);
        net.flush();
        net.run_until(6_000);
        assert_eq!(net.nodes[0].nodes().len(), 1);
        assert_eq!(net.nodes[0].nodes()[0].peer.boot, 5);
        assert!(net.nodes[0].nodes()[0].up);
    }
}
