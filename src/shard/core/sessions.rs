//! The shard's session table: client id -> session, and the key that names a
//! session inside the shard.
//!
//! A session's client id is stored once, in the session. Everything else that
//! names a session on this shard (its connection, the local subscription index)
//! holds its [`SessionKey`], 4 bytes, rather than another handle to the id (32
//! bytes each, where a subscription index entry was 56). The id index keys each
//! entry by the id its session holds: a bucket is one key.
//!
//! Owner: one shard.
//!
//! # Invariants
//! - At most one session per client id; `by_client_id` holds exactly the key of
//!   every session, found by the id that session holds.
//! - A key names one session for that session's life; the slot may serve a later
//!   session. Whoever keeps a key past the session's end must check it: a
//!   connection checks that the session still names it (`conn`); `local_subs`
//!   drops a session's keys when it ends.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use slab::Slab;

use crate::hooks::ClientInfo;
use crate::protocol::LastWill;
use crate::session::Session;

use super::ConnId;

/// A session and what ties it to a connection.
#[derive(Debug)]
pub(super) struct SessionEntry {
    pub(super) session: Session,
    /// This shard's serial number of the session, for [`crate::message::Publisher`].
    pub(super) serial: u64,
    pub(super) conn: Option<ConnId>,
    /// The will of the current connection (boxed: most clients have none, and
    /// every idle session pays for the space).
    pub(super) will: Option<Box<LastWill>>,
    /// A will waiting for its Will Delay Interval (MQTT 5) while the session is
    /// offline, and the tick it is due at [MQTT-3.1.3-9].
    pub(super) pending_will: Option<Box<(LastWill, ClientInfo, u64)>>,
    /// Seconds the session outlives its connection: `None` forever, `Some(0)` not
    /// at all (a clean session).
    pub(super) expiry_secs: Option<u64>,
    /// Shard clock tick at which an offline persistent session is removed.
    pub(super) expires_at: Option<u64>,
    /// The user name of its last connection: what the ACL checks deliveries
    /// against while it is offline too.
    pub(super) username: Option<Box<str>>,
}

impl SessionEntry {
    /// Whether the session outlives its connection.
    pub(super) fn persistent(&self) -> bool {
        self.expiry_secs != Some(0)
    }
}

/// A session's slot in the shard's session table (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct SessionKey(u32);

/// The sessions whose client id this shard owns. Entries are boxed: growing the
/// slab moves pointers, not sessions, and its slack costs a pointer per slot.
#[derive(Default)]
pub(super) struct Sessions {
    entries: Slab<Box<SessionEntry>>,
    by_client_id: HashTable<SessionKey>,
    hasher: DefaultHashBuilder,
}

impl Sessions {
    fn hash(hasher: &DefaultHashBuilder, client_id: &str) -> u64 {
        hasher.hash_one(client_id)
    }

    /// The key of the session of `client_id`.
    pub(super) fn key(&self, client_id: &str) -> Option<SessionKey> {
        let hash = Self::hash(&self.hasher, client_id);
        let entries = &self.entries;
        let is_it = |key: &SessionKey| **entries[key.0 as usize].session.client_id() == *client_id;
        self.by_client_id.find(hash, is_it).copied()
    }

    pub(super) fn get(&self, client_id: &str) -> Option<&SessionEntry> {
        self.key(client_id).map(|key| &*self.entries[key.0 as usize])
    }

    pub(super) fn get_mut(&mut self, client_id: &str) -> Option<&mut SessionEntry> {
        let key = self.key(client_id)?;
        Some(&mut self.entries[key.0 as usize])
    }

    /// The session `key` names now, if any (a kept key may name a later session).
    pub(super) fn by_key(&self, key: SessionKey) -> Option<&SessionEntry> {
        self.entries.get(key.0 as usize).map(|e| &**e)
    }

    pub(super) fn by_key_mut(&mut self, key: SessionKey) -> Option<&mut SessionEntry> {
        self.entries.get_mut(key.0 as usize).map(|e| &mut **e)
    }

    /// Adds a session for a client id that has none; returns its key.
    pub(super) fn insert(&mut self, entry: Box<SessionEntry>) -> SessionKey {
        assert!(self.key(entry.session.client_id()).is_none(), "one session per client id");
        let hash = Self::hash(&self.hasher, entry.session.client_id());
        let slot = self.entries.insert(entry);
        let key = SessionKey(u32::try_from(slot).expect("fewer than 2^32 sessions"));
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.by_client_id.insert_unique(hash, key, |key| {
            Self::hash(hasher, entries[key.0 as usize].session.client_id())
        });
        key
    }

    /// Removes the session of `client_id`; returns it with the key it had.
    pub(super) fn remove(&mut self, client_id: &str) -> Option<(SessionKey, Box<SessionEntry>)> {
        let hash = Self::hash(&self.hasher, client_id);
        let entries = &self.entries;
        let is_it = |key: &SessionKey| **entries[key.0 as usize].session.client_id() == *client_id;
        let (key, _) = self.by_client_id.find_entry(hash, is_it).ok()?.remove();
        Some((key, self.entries.remove(key.0 as usize)))
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &SessionEntry> {
        self.entries.iter().map(|(_, e)| &**e)
    }

    /// The sessions with their keys.
    pub(super) fn iter(&self) -> impl Iterator<Item = (SessionKey, &SessionEntry)> {
        self.entries.iter().map(|(slot, e)| (SessionKey(slot as u32), &**e))
    }

    /// Whether the invariants of the module docs hold; O(sessions).
    pub(super) fn check_invariants(&self) -> bool {
        self.by_client_id.len() == self.entries.len()
            && self.iter().all(|(key, e)| self.key(e.session.client_id()) == Some(key))
    }
}
