//! `SmallMap`: a map that is inline or a vector while it holds few entries, for
//! the maps every client has one of (a session's subscriptions, a filter's
//! subscribers).
//!
//! Most such maps hold one to three entries, where an empty `HashMap` already
//! takes 40 bytes and its first entry allocates a table for four (about 250 bytes
//! for a subscription). One entry lives inline, allocating nothing; up to
//! [`FEW_MAX`] live in a vector of exactly their number, searched linearly; beyond,
//! in a boxed `HashMap`, so a map with thousands of entries (a topic every device
//! subscribes to) keeps O(1) lookups.
//!
//! Sans-IO: a plain data structure.
//!
//! # Invariants
//! 1. Keys are unique.
//! 2. Each size has one form: none, one inline, two to `FEW_MAX` in a vector whose
//!    capacity is its length, or more than `FEW_MAX / 2` in the map (it turns back
//!    into a vector below that, so a map shrinking after a burst frees its table).

use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;

use hashbrown::HashMap;

/// Most entries kept in the vector form: a linear search of eight keys costs
/// about what hashing one does.
pub(crate) const FEW_MAX: usize = 8;

/// A map from `K` to `V` that stays inline or a vector while small. See the
/// module docs.
pub(crate) struct SmallMap<K, V> {
    repr: Repr<K, V>,
}

enum Repr<K, V> {
    Empty,
    One(K, V),
    Few(Vec<(K, V)>),
    /// Boxed so the small forms pay one pointer for it.
    Many(Box<HashMap<K, V>>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap { repr: Repr::Empty }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for SmallMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K, V> SmallMap<K, V> {
    /// An empty map; it allocates nothing until its second entry.
    pub(crate) fn new() -> Self {
        SmallMap::default()
    }

    pub(crate) fn len(&self) -> usize {
        match &self.repr {
            Repr::Empty => 0,
            Repr::One(..) => 1,
            Repr::Few(entries) => entries.len(),
            Repr::Many(map) => map.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self.repr, Repr::Empty)
    }

    /// The entries, in no particular order.
    pub(crate) fn iter(&self) -> Iter<'_, K, V> {
        match &self.repr {
            Repr::Empty => Iter::One(None),
            Repr::One(k, v) => Iter::One(Some((k, v))),
            Repr::Few(entries) => Iter::Few(entries.iter()),
            Repr::Many(map) => Iter::Many(map.iter()),
        }
    }
}

impl<K: Eq + Hash, V> SmallMap<K, V> {
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match &self.repr {
            Repr::Empty => None,
            Repr::One(k, v) => (k.borrow() == key).then_some(v),
            Repr::Few(entries) => entries.iter().find(|(k, _)| k.borrow() == key).map(|(_, v)| v),
            Repr::Many(map) => map.get(key),
        }
    }

    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Inserts `value` under `key`; returns the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match &mut self.repr {
            Repr::Empty => {
                self.repr = Repr::One(key, value);
                None
            }
            Repr::One(k, v) if *k == key => Some(std::mem::replace(v, value)),
            Repr::One(..) => {
                let Repr::One(first_key, first_value) =
                    std::mem::replace(&mut self.repr, Repr::Empty)
                else {
                    unreachable!("matched One above")
                };
                // Exactly as many as it holds: a vector's doubling would round
                // two entries up to four.
                let mut entries = Vec::with_capacity(2);
                entries.extend([(first_key, first_value), (key, value)]);
                self.repr = Repr::Few(entries);
                None
            }
            Repr::Few(entries) => {
                if let Some((_, old)) = entries.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(old, value));
                }
                if entries.len() < FEW_MAX {
                    entries.reserve_exact(1);
                    entries.push((key, value));
                } else {
                    let mut map = HashMap::with_capacity(FEW_MAX * 2);
                    map.extend(entries.drain(..));
                    map.insert(key, value);
                    self.repr = Repr::Many(Box::new(map));
                }
                None
            }
            Repr::Many(map) => map.insert(key, value),
        }
    }

    /// Removes `key`; returns its value.
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match &mut self.repr {
            Repr::Empty => None,
            Repr::One(k, _) if (*k).borrow() == key => {
                let Repr::One(_, value) = std::mem::replace(&mut self.repr, Repr::Empty) else {
                    unreachable!("matched One above")
                };
                Some(value)
            }
            Repr::One(..) => None,
            Repr::Few(entries) => {
                let at = entries.iter().position(|(k, _)| k.borrow() == key)?;
                let (_, value) = entries.swap_remove(at);
                if entries.len() == 1 {
                    let (k, v) = entries.pop().expect("one left");
                    self.repr = Repr::One(k, v);
                } else {
                    entries.shrink_to_fit();
                }
                Some(value)
            }
            Repr::Many(map) => {
                let value = map.remove(key)?;
                if map.len() <= FEW_MAX / 2 {
                    let mut entries = Vec::with_capacity(map.len());
                    entries.extend(map.drain());
                    self.repr = Repr::Few(entries);
                }
                Some(value)
            }
        }
    }

    /// Whether the invariants of the module docs hold.
    pub(crate) fn check_invariants(&self) -> bool {
        match &self.repr {
            Repr::Empty | Repr::One(..) => true,
            Repr::Few(entries) => {
                (2..=FEW_MAX).contains(&entries.len())
                    && entries.capacity() == entries.len()
                    && entries
                        .iter()
                        .enumerate()
                        .all(|(i, (k, _))| entries[..i].iter().all(|(other, _)| other != k))
            }
            Repr::Many(map) => map.len() > FEW_MAX / 2,
        }
    }
}

/// The entries of a [`SmallMap`].
pub(crate) enum Iter<'a, K, V> {
    One(Option<(&'a K, &'a V)>),
    Few(std::slice::Iter<'a, (K, V)>),
    Many(hashbrown::hash_map::Iter<'a, K, V>),
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::One(entry) => entry.take(),
            Iter::Few(entries) => entries.next().map(|(k, v)| (k, v)),
            Iter::Many(entries) => entries.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::One(entry) => (usize::from(entry.is_some()), Some(usize::from(entry.is_some()))),
            Iter::Few(entries) => entries.size_hint(),
            Iter::Many(entries) => entries.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn one_entry_is_inline_and_two_take_two_slots() {
        let mut map = SmallMap::new();
        map.insert(1u32, 10u32);
        assert!(matches!(map.repr, Repr::One(1, 10)), "one entry allocates nothing");
        map.insert(2, 20);
        match &map.repr {
            Repr::Few(entries) => assert_eq!(entries.capacity(), 2),
            _ => panic!("two entries are few"),
        }
        assert_eq!(std::mem::size_of::<SmallMap<u32, u32>>(), 24, "a Vec's size, no more");
    }

    proptest! {
        /// Any sequence of inserts and removes agrees with a BTreeMap, across the
        /// change of form both ways.
        #[test]
        fn agrees_with_a_btree_map(ops in prop::collection::vec((any::<bool>(), 0u8..24, any::<u8>()), 0..200)) {
            let mut map = SmallMap::new();
            let mut oracle = BTreeMap::new();
            for (insert, key, value) in ops {
                if insert {
                    prop_assert_eq!(map.insert(key, value), oracle.insert(key, value));
                } else {
                    prop_assert_eq!(map.remove(&key), oracle.remove(&key));
                }
                prop_assert!(map.check_invariants());
                prop_assert_eq!(map.len(), oracle.len());
                let mut entries: Vec<(u8, u8)> = map.iter().map(|(k, v)| (*k, *v)).collect();
                entries.sort_unstable();
                let expected: Vec<(u8, u8)> = oracle.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(entries, expected);
                for key in 0..24 {
                    prop_assert_eq!(map.get(&key), oracle.get(&key));
                }
            }
        }
    }
}
