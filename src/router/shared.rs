//! Shared subscriptions `$share/{group}/{filter}` [MQTT-4.8.2]: which shard gets a
//! message for a group.
//!
//! Every shard keeps a replica of [`SharedRoutes`]: per group and filter, how many
//! connected members each shard has. The shard a message enters picks one shard by
//! the configured strategy, weighted by those counts (round robin walks the member
//! slots in turn, random picks a slot, sticky keeps a shard while it has members);
//! that shard then picks one of its own members the same way. So each message goes
//! to exactly one member, and the load spreads in proportion to where members are.
//!
//! In a cluster, the other nodes are origins too, after the shards (origin
//! `shards + slot`), with their whole member count: a message that enters this
//! node goes to one member in the cluster, the node picked by its members like a
//! shard.
//!
//! Pure data: no executor, no clock. Randomness is handed in.

use std::cell::Cell;

use bytestring::ByteString;
use hashbrown::HashMap;

use super::SubTrie;
use crate::protocol::{Filter, TopicFilter};

/// How a shared subscription group picks the shard, then the member, that gets a
/// message. The router's own type: settings convert into it, so matching does not
/// depend on how the broker is configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SharedStrategy {
    /// Each member slot in turn.
    #[default]
    RoundRobin,
    /// A member slot at random.
    Random,
    /// The same shard (and member) while it keeps members.
    Sticky,
}

/// One group's members, shard by shard.
#[derive(Debug)]
struct GroupRoute {
    /// The whole `$share/{group}/{filter}` filter, as subscribed.
    full: TopicFilter,
    /// Connected members per shard.
    counts: Vec<u32>,
    /// Round robin position, over member slots.
    next: Cell<u64>,
    /// The shard a sticky group sends to while it has members.
    sticky: Cell<Option<usize>>,
}

impl GroupRoute {
    fn total(&self) -> u64 {
        self.counts.iter().map(|c| u64::from(*c)).sum()
    }

    /// The shard holding member slot `slot` (< total).
    fn shard_of_slot(&self, mut slot: u64) -> usize {
        for (shard, count) in self.counts.iter().enumerate() {
            if slot < u64::from(*count) {
                return shard;
            }
            slot -= u64::from(*count);
        }
        unreachable!("slot < total")
    }

    fn pick(&self, strategy: SharedStrategy, random: u64) -> Option<usize> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        Some(match strategy {
            SharedStrategy::RoundRobin => {
                let slot = self.next.get();
                self.next.set(slot.wrapping_add(1));
                self.shard_of_slot(slot % total)
            }
            SharedStrategy::Random => self.shard_of_slot(random % total),
            SharedStrategy::Sticky => match self.sticky.get() {
                Some(shard) if self.counts[shard] > 0 => shard,
                _ => {
                    let shard = self.shard_of_slot(random % total);
                    self.sticky.set(Some(shard));
                    shard
                }
            },
        })
    }
}

/// A shard's replica of the shared groups: filter -> group -> members per shard.
/// Entries exist while some shard has a member.
#[derive(Debug)]
pub struct SharedRoutes {
    shards: usize,
    trie: SubTrie<HashMap<ByteString, GroupRoute>>,
    groups: usize,
}

impl SharedRoutes {
    /// An empty replica for `shards` shards.
    pub fn new(shards: usize) -> Self {
        SharedRoutes { shards, trie: SubTrie::new(), groups: 0 }
    }

    /// Number of groups with members anywhere.
    pub fn len(&self) -> usize {
        self.groups
    }

    /// Whether no group has members.
    pub fn is_empty(&self) -> bool {
        self.groups == 0
    }

    /// Records that `shard` has `members` connected members of `full`, a valid
    /// `$share/` filter (anything else is ignored).
    pub fn set(&mut self, full: &TopicFilter, shard: usize, members: u32) {
        let Filter::Shared { group, filter } = full.kind() else { return };
        let group = ByteString::from(group);
        if members == 0 {
            let Some(groups) = self.trie.get_mut(filter) else { return };
            let Some(route) = groups.get_mut(&group) else { return };
            route.counts[shard] = 0;
            if route.total() == 0 {
                groups.remove(&group);
                self.groups -= 1;
                if groups.is_empty() {
                    self.trie.remove(filter);
                }
            }
            return;
        }
        let shards = self.shards;
        let groups = self.trie.get_or_insert_with(filter, HashMap::new);
        let route = groups.entry(group).or_insert_with(|| {
            self.groups += 1;
            GroupRoute {
                full: full.clone(),
                counts: vec![0; shards],
                next: Cell::new(0),
                sticky: Cell::new(None),
            }
        });
        route.counts[shard] = members;
    }

    /// For each group whose filter matches `topic`, the shard that gets the message
    /// and the group's full filter, appended to `out`. `random` is called once per
    /// group that needs a random number.
    pub fn pick(
        &self,
        topic: &str,
        strategy: SharedStrategy,
        mut random: impl FnMut() -> u64,
        out: &mut Vec<(usize, TopicFilter)>,
    ) {
        if self.groups == 0 {
            return;
        }
        self.trie.for_each_match(topic, |_, groups| {
            for route in groups.values() {
                let r = if strategy == SharedStrategy::RoundRobin { 0 } else { random() };
                if let Some(shard) = route.pick(strategy, r) {
                    out.push((shard, route.full.clone()));
                }
            }
        });
    }

    /// An origin below `local` other than `not` with members of `full`, weighted
    /// like [`pick`]: another shard of this node, never another node.
    ///
    /// [`pick`]: SharedRoutes::pick
    pub fn pick_other(
        &self,
        full: &TopicFilter,
        not: Option<usize>,
        local: usize,
        random: u64,
    ) -> Option<usize> {
        let Filter::Shared { group, filter } = full.kind() else { return None };
        let route = self.trie.get(filter)?.get(group)?;
        let eligible = |shard: usize| shard < local && Some(shard) != not;
        let others: u64 = route
            .counts
            .iter()
            .enumerate()
            .filter(|(shard, _)| eligible(*shard))
            .map(|(_, c)| u64::from(*c))
            .sum();
        if others == 0 {
            return None;
        }
        let mut slot = random % others;
        for (shard, count) in route.counts.iter().enumerate().filter(|(s, _)| eligible(*s)) {
            if slot < u64::from(*count) {
                return Some(shard);
            }
            slot -= u64::from(*count);
        }
        None
    }
}

impl SharedRoutes {
    /// Members of `full` on origins below `local` (this node's shards).
    pub fn members_below(&self, full: &TopicFilter, local: usize) -> u32 {
        let Filter::Shared { group, filter } = full.kind() else { return 0 };
        self.trie
            .get(filter)
            .and_then(|groups| groups.get(group))
            .map_or(0, |route| route.counts.iter().take(local).sum())
    }

    /// Forgets every member count of `origin` (a node that went down or restarts).
    pub fn clear_origin(&mut self, origin: usize) {
        let fulls: Vec<TopicFilter> = self
            .trie
            .iter()
            .flat_map(|(_, groups)| groups.values())
            .filter(|route| route.counts.get(origin).is_some_and(|c| *c > 0))
            .map(|route| route.full.clone())
            .collect();
        for full in fulls {
            self.set(&full, origin, 0);
        }
    }
}

/// The members of one shared subscription on one shard, and whose turn it is.
#[derive(Debug, Default)]
pub struct LocalGroup {
    /// Connected members, in the order they joined.
    pub members: Vec<ByteString>,
    next: usize,
    sticky: Option<ByteString>,
}

impl LocalGroup {
    /// The member that gets the next message, never `exclude`.
    pub fn pick(
        &mut self,
        strategy: SharedStrategy,
        random: u64,
        exclude: Option<&ByteString>,
    ) -> Option<ByteString> {
        let eligible = |c: &&ByteString| Some(*c) != exclude;
        let count = self.members.iter().filter(eligible).count();
        if count == 0 {
            return None;
        }
        let nth = match strategy {
            SharedStrategy::RoundRobin => {
                self.next = self.next.wrapping_add(1);
                self.next % count
            }
            SharedStrategy::Random => (random % count as u64) as usize,
            SharedStrategy::Sticky => {
                if let Some(sticky) = &self.sticky {
                    if self.members.contains(sticky) && Some(sticky) != exclude {
                        return Some(sticky.clone());
                    }
                }
                (random % count as u64) as usize
            }
        };
        let chosen = self.members.iter().filter(eligible).nth(nth).cloned();
        if strategy == SharedStrategy::Sticky {
            self.sticky.clone_from(&chosen);
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::try_from(s).unwrap()
    }

    #[test]
    fn round_robin_walks_member_slots_across_shards() {
        let mut routes = SharedRoutes::new(3);
        let full = filter("$share/g/t/#");
        routes.set(&full, 0, 1);
        routes.set(&full, 2, 2);
        let mut out = Vec::new();
        for _ in 0..6 {
            routes.pick("t/x", SharedStrategy::RoundRobin, || 0, &mut out);
        }
        let shards: Vec<usize> = out.iter().map(|(s, _)| *s).collect();
        assert_eq!(shards, vec![0, 2, 2, 0, 2, 2]);
        assert!(out.iter().all(|(_, f)| *f == full));
        out.clear();
        routes.pick("other", SharedStrategy::RoundRobin, || 0, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn groups_leave_with_their_last_member() {
        let mut routes = SharedRoutes::new(2);
        let a = filter("$share/a/t");
        let b = filter("$share/b/t");
        routes.set(&a, 0, 1);
        routes.set(&b, 1, 1);
        assert_eq!(routes.len(), 2);
        let mut out = Vec::new();
        routes.pick("t", SharedStrategy::Random, || 7, &mut out);
        assert_eq!(out.len(), 2, "one pick per group");
        routes.set(&a, 0, 0);
        routes.set(&b, 1, 0);
        assert!(routes.is_empty());
        assert_eq!(routes.pick_other(&a, Some(1), 2, 0), None);
    }

    #[test]
    fn pick_other_avoids_the_given_shard() {
        let mut routes = SharedRoutes::new(3);
        let full = filter("$share/g/t");
        routes.set(&full, 0, 5);
        routes.set(&full, 1, 1);
        for r in 0..20 {
            assert_eq!(routes.pick_other(&full, Some(0), 3, r), Some(1));
        }
    }

    #[test]
    fn other_nodes_are_origins_after_the_shards() {
        // Two shards, then two nodes (origins 2 and 3).
        let mut routes = SharedRoutes::new(4);
        let full = filter("$share/g/t");
        routes.set(&full, 1, 1);
        routes.set(&full, 3, 3);
        let mut out = Vec::new();
        for _ in 0..8 {
            routes.pick("t", SharedStrategy::RoundRobin, || 0, &mut out);
        }
        let picked: Vec<usize> = out.iter().map(|(o, _)| *o).collect();
        assert_eq!(picked, vec![1, 3, 3, 3, 1, 3, 3, 3], "weighted by members, nodes too");
        assert_eq!(routes.members_below(&full, 2), 1, "this node's own members");
        for r in 0..10 {
            assert_eq!(routes.pick_other(&full, None, 2, r), Some(1), "never another node");
        }
        routes.clear_origin(3);
        out.clear();
        routes.pick("t", SharedStrategy::RoundRobin, || 0, &mut out);
        assert_eq!(out[0].0, 1);
        routes.clear_origin(1);
        assert!(routes.is_empty());
    }

    #[test]
    fn local_group_skips_the_excluded_member_and_sticks() {
        let mut group = LocalGroup { members: vec!["a".into(), "b".into()], ..Default::default() };
        let a = ByteString::from("a");
        for _ in 0..4 {
            assert_eq!(
                group.pick(SharedStrategy::RoundRobin, 0, Some(&a)),
                Some(ByteString::from("b"))
            );
        }
        let first = group.pick(SharedStrategy::Sticky, 1, None);
        for r in 0..5 {
            assert_eq!(group.pick(SharedStrategy::Sticky, r, None), first);
        }
        group.members.clear();
        assert_eq!(group.pick(SharedStrategy::RoundRobin, 0, None), None);
    }
}
