//! The route table: which shards have at least one subscriber for a filter.
//!
//! Owner: every shard keeps its own replica, updated by route messages from every
//! shard (its own included, applied directly). A shard announces a filter only on its
//! 0 -> 1 and 1 -> 0 subscriber transitions, so the table changes far less often
//! than subscriptions do.
//!
//! # Invariants
//! - Updates from one origin are applied in revision order; an update whose revision
//!   is not newer than the last applied one from that origin is stale, dropped and
//!   counted.
//! - No filter maps to an empty shard set (it is removed instead).

use super::SubTrie;

/// The most shards a broker runs (one bit each in [`ShardSet`]).
pub const SHARDS_MAX: usize = 128;

/// A set of shard indexes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardSet(u128);

impl ShardSet {
    /// Adds `shard` to the set.
    pub fn insert(&mut self, shard: usize) {
        debug_assert!(shard < SHARDS_MAX);
        self.0 |= 1u128 << shard;
    }

    /// Removes `shard` from the set.
    pub fn remove(&mut self, shard: usize) {
        self.0 &= !(1u128 << shard);
    }

    /// Whether `shard` is in the set.
    pub fn contains(self, shard: usize) -> bool {
        self.0 & (1u128 << shard) != 0
    }

    /// Whether the set holds no shard.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The shards in either set.
    pub fn union(self, other: ShardSet) -> ShardSet {
        ShardSet(self.0 | other.0)
    }

    /// The shards in both sets.
    pub fn intersection(self, other: ShardSet) -> ShardSet {
        ShardSet(self.0 & other.0)
    }

    /// The shard indexes, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let shard = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(shard)
        })
    }
}

/// One replica of the route table.
#[derive(Debug)]
pub struct RouteTable {
    trie: SubTrie<ShardSet>,
    /// Last revision applied, per origin shard.
    applied: Vec<u64>,
    stale: u64,
}

impl RouteTable {
    /// An empty table for `shards` origin shards.
    pub fn new(shards: usize) -> Self {
        assert!(shards <= SHARDS_MAX, "config validation caps the shard count");
        RouteTable { trie: SubTrie::new(), applied: vec![0; shards], stale: 0 }
    }

    /// Applies "`origin` has (or no longer has) subscribers for `filter`" at revision
    /// `rev`. Returns `false` for a stale update, which changes nothing.
    pub fn apply(&mut self, origin: usize, rev: u64, filter: &str, present: bool) -> bool {
        if rev <= self.applied[origin] {
            self.stale += 1;
            return false;
        }
        self.applied[origin] = rev;
        if present {
            self.trie.get_or_insert_with(filter, ShardSet::default).insert(origin);
        } else if let Some(set) = self.trie.get_mut(filter) {
            set.remove(origin);
            if set.is_empty() {
                self.trie.remove(filter);
            }
        }
        true
    }

    /// Forgets every filter of `origin` (a node that restarted or went down); its
    /// revisions go on where they were.
    pub fn clear_origin(&mut self, origin: usize) {
        let filters: Vec<String> = self
            .trie
            .iter()
            .filter(|(_, set)| set.contains(origin))
            .map(|(filter, _)| filter.to_owned())
            .collect();
        for filter in filters {
            if let Some(set) = self.trie.get_mut(&filter) {
                set.remove(origin);
                if set.is_empty() {
                    self.trie.remove(&filter);
                }
            }
        }
    }

    /// Every filter routed, with the origins that have it.
    pub fn iter(&self) -> impl Iterator<Item = (&str, ShardSet)> {
        self.trie.iter().map(|(filter, set)| (filter, *set))
    }

    /// Every shard with a subscription matching `topic`.
    pub fn matching_shards(&self, topic: &str) -> ShardSet {
        let mut shards = ShardSet::default();
        self.trie.for_each_match(topic, |_, set| shards = shards.union(*set));
        shards
    }

    /// The shards with subscribers for exactly `filter`.
    pub fn shards_of(&self, filter: &str) -> ShardSet {
        self.trie.get(filter).copied().unwrap_or_default()
    }

    /// How many filters `shard` has subscribers for.
    pub fn filters_of(&self, shard: usize) -> usize {
        self.trie.iter().filter(|(_, set)| set.contains(shard)).count()
    }

    /// Stale updates dropped so far.
    pub fn stale_count(&self) -> u64 {
        self.stale
    }

    /// Distinct filters routed.
    pub fn len(&self) -> usize {
        self.trie.len()
    }

    /// Whether no filter is routed.
    pub fn is_empty(&self) -> bool {
        self.trie.is_empty()
    }

    /// Whether the internal invariants hold (no empty shard set is stored).
    pub fn check_invariants(&self) -> bool {
        self.trie.check_invariants() && self.trie.iter().all(|(_, set)| !set.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_of_origins_and_stale_updates() {
        let mut routes = RouteTable::new(3);
        assert!(routes.apply(0, 1, "a/+", true));
        assert!(routes.apply(2, 1, "a/b", true));
        assert_eq!(routes.matching_shards("a/b").iter().collect::<Vec<_>>(), vec![0, 2]);
        assert!(!routes.apply(2, 1, "a/b", false), "same revision again is stale");
        assert_eq!(routes.stale_count(), 1);
        assert!(routes.apply(2, 2, "a/b", false));
        assert_eq!(routes.matching_shards("a/b").iter().collect::<Vec<_>>(), vec![0]);
        assert!(routes.apply(0, 2, "a/+", false));
        assert!(routes.matching_shards("a/b").is_empty());
        assert!(routes.is_empty());
        assert!(routes.check_invariants());
    }

    #[test]
    fn clearing_an_origin_leaves_the_others() {
        let mut routes = RouteTable::new(3);
        routes.apply(1, 1, "a/#", true);
        routes.apply(1, 2, "b", true);
        routes.apply(2, 1, "b", true);
        routes.clear_origin(1);
        assert!(routes.matching_shards("a/x").is_empty());
        assert_eq!(routes.matching_shards("b").iter().collect::<Vec<_>>(), vec![2]);
        assert!(!routes.apply(1, 2, "c", true), "revisions go on where they were");
        assert!(routes.apply(1, 3, "c", true));
        assert_eq!(routes.iter().count(), 2);
        assert!(routes.check_invariants());
    }
}
