//! The shard's session table: client id -> session.
//!
//! The table keys each entry by the client id its session already holds, so the id
//! is not stored a second time as a key: a bucket is one pointer (a `HashMap` keyed
//! by the id spent 40 bytes per bucket, with its load-factor slack).
//!
//! Owner: one shard.
//!
//! # Invariants
//! - At most one entry per client id, found by the id its session holds.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

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
}

impl SessionEntry {
    /// Whether the session outlives its connection.
    pub(super) fn persistent(&self) -> bool {
        self.expiry_secs != Some(0)
    }
}

/// The sessions whose client id this shard owns. Entries are boxed: growing the
/// table moves pointers, not sessions, and its slack costs a pointer per bucket.
#[derive(Default)]
pub(super) struct Sessions {
    table: HashTable<Box<SessionEntry>>,
    hasher: DefaultHashBuilder,
}

impl Sessions {
    fn hash(hasher: &DefaultHashBuilder, client_id: &str) -> u64 {
        hasher.hash_one(client_id)
    }

    pub(super) fn get(&self, client_id: &str) -> Option<&SessionEntry> {
        let hash = Self::hash(&self.hasher, client_id);
        self.table.find(hash, |e| **e.session.client_id() == *client_id).map(|e| &**e)
    }

    pub(super) fn get_mut(&mut self, client_id: &str) -> Option<&mut SessionEntry> {
        let hash = Self::hash(&self.hasher, client_id);
        self.table.find_mut(hash, |e| **e.session.client_id() == *client_id).map(|e| &mut **e)
    }

    /// Adds a session for a client id that has none.
    pub(super) fn insert(&mut self, entry: Box<SessionEntry>) {
        assert!(self.get(entry.session.client_id()).is_none(), "one session per client id");
        let hasher = &self.hasher;
        let hash = Self::hash(hasher, entry.session.client_id());
        self.table.insert_unique(hash, entry, |e| Self::hash(hasher, e.session.client_id()));
    }

    pub(super) fn remove(&mut self, client_id: &str) -> Option<Box<SessionEntry>> {
        let hash = Self::hash(&self.hasher, client_id);
        let found = self.table.find_entry(hash, |e| **e.session.client_id() == *client_id);
        found.ok().map(|entry| entry.remove().0)
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &SessionEntry> {
        self.table.iter().map(|e| &**e)
    }
}
