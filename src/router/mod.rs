//! Subscription matching: which filters, which shards, which sessions a topic reaches.
//!
//! Pure data structures: no executor, no sockets, no clock, no logging.
//!
//! - [`SubTrie`]: filter -> value, answering "which filters match this topic".
//! - [`RouteTable`]: a shard's replica of filter -> shards with subscribers.
//! - [`SharedRoutes`], [`LocalGroup`]: which shard and which member get a message of
//!   a shared subscription.
//! - [`owner_shard`]: the one placement function every shard computes alike.

mod routes;
mod shared;
mod trie;

pub use routes::{RouteTable, ShardSet, SHARDS_MAX};
pub use shared::{LocalGroup, SharedRoutes, SharedStrategy};
pub use trie::{topic_matches, SubTrie};

/// The shard that owns `key` (a client id for sessions, a topic for retained
/// messages): FNV-1a 64 of its bytes, modulo the shard count.
///
/// Fixed and documented, so that every shard (and a test, or a load generator that
/// wants to place clients) computes the same answer without any shared state.
pub fn owner_shard(key: &[u8], shards: usize) -> usize {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = key.iter().fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME));
    (hash % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::owner_shard;

    #[test]
    fn owner_is_fnv1a_modulo_shards() {
        // FNV-1a 64 of "" is the offset basis; of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(owner_shard(b"", 7), (0xcbf2_9ce4_8422_2325u64 % 7) as usize);
        assert_eq!(owner_shard(b"a", 1000), (0xaf63_dc4c_8601_ec8cu64 % 1000) as usize);
        assert_eq!(owner_shard(b"anything", 1), 0);
    }
}
