//! The cross-structure invariants of the core (see the module docs of `core`),
//! checked in O(sessions + subscriptions) by debug builds after every pass and by
//! the simulation tests after every step.

use hashbrown::{HashMap, HashSet};

use super::timers::Timer;
use super::{ConnId, Core, SessionKey};

pub(super) fn check(core: &Core) -> bool {
    sessions_and_conns(core)
        && subscriptions_agree(core)
        && held_subacks(core)
        && wake_list(core)
        && session_timers(core)
        && core.retained.check_invariants()
        && core.local_subs.check_invariants()
        && core.routes.check_invariants()
        && core.sessions.values().all(|e| e.session.check_invariants())
}

/// The session table is consistent; a session's `conn` names a live connection
/// of the same client id that names the session back; a live connection is named
/// by at most one session.
fn sessions_and_conns(core: &Core) -> bool {
    if !core.sessions.check_invariants() {
        return false;
    }
    let mut owned = 0;
    for (key, entry) in core.sessions.iter() {
        let client_id = entry.session.client_id();
        if let Some(id) = entry.conn {
            match core.conn(id) {
                Some(conn) if conn.info.client_id == *client_id && conn.session == key => {
                    owned += 1
                }
                _ => return false,
            }
            if entry.pending_will.is_some() {
                return false;
            }
        }
    }
    owned <= core.conns.len()
}

/// The three places subscriptions are held agree, and so does our route bit.
fn subscriptions_agree(core: &Core) -> bool {
    let mut local = 0;
    let mut shared_online = 0;
    for (key, entry) in core.sessions.iter() {
        let client_id = entry.session.client_id();
        for (filter, _) in entry.session.subscriptions() {
            if filter.is_shared() {
                let member =
                    core.shared_local.get(filter).is_some_and(|g| g.members.contains(client_id));
                if member != entry.conn.is_some() {
                    return false;
                }
                shared_online += usize::from(member);
            } else {
                let held = core
                    .local_subs
                    .get(filter.as_str())
                    .is_some_and(|subscribers| subscribers.contains_key(&key));
                if !held {
                    return false;
                }
                local += 1;
            }
        }
    }
    // With the count, every key in the index is a live session's.
    let trie_count: usize = core.local_subs.iter().map(|(_, subscribers)| subscribers.len()).sum();
    let members: usize = core.shared_local.values().map(|g| g.members.len()).sum();
    let no_empty = core.local_subs.iter().all(|(_, c)| !c.is_empty() && c.check_invariants())
        && core.shared_local.values().all(|g| !g.members.is_empty());
    let own_routes =
        core.local_subs.iter().all(|(f, _)| core.routes.shards_of(f).contains(core.id))
            && core.routes.filters_of(core.id) == core.local_subs.len();
    trie_count == local && members == shared_online && no_empty && own_routes
}

/// A connection's `subacks_pending` counts its held SUBACKs.
fn held_subacks(core: &Core) -> bool {
    let mut held: HashMap<ConnId, u32> = HashMap::new();
    for pending in &core.pending_subacks {
        *held.entry(pending.conn).or_default() += 1;
    }
    core.conns.iter().all(|(slot, conn)| {
        let id = ConnId { slot: slot as u32, serial: conn.serial };
        held.get(&id).copied().unwrap_or(0) == conn.subacks_pending
    })
}

/// Every connection flagged dirty is in the wake list, every connection flagged
/// backlogged in the backlog list, and no more than its encoded output is released.
/// Sets, not scans: this runs after every pass in debug builds.
fn wake_list(core: &Core) -> bool {
    let to_wake: HashSet<ConnId> = core.to_wake.iter().copied().collect();
    let backlogged: HashSet<ConnId> = core.backlogged.iter().copied().collect();
    core.conns.iter().all(|(slot, conn)| {
        let id = ConnId { slot: slot as u32, serial: conn.serial };
        conn.ready <= conn.out.len()
            && (!conn.dirty || to_wake.contains(&id))
            && (!conn.in_backlog || backlogged.contains(&id))
    })
}

/// The wheel holds exactly one entry per session expiry and pending will, at its
/// tick, and no other: what ends early is cancelled, not left behind.
fn session_timers(core: &Core) -> bool {
    let mut expected: HashSet<(u64, bool, SessionKey)> = HashSet::new();
    for (key, entry) in core.sessions.iter() {
        if let Some(at) = entry.expires_at {
            if entry.conn.is_some() || !expected.insert((at, true, key)) {
                return false;
            }
        }
        if let Some(pending) = &entry.pending_will {
            expected.insert((pending.2, false, key));
        }
    }
    let mut found = 0;
    for (at, timer) in core.wheel.iter() {
        let session = match timer {
            Timer::SessionExpiry(key) => (*at, true, *key),
            Timer::Will(key) => (*at, false, *key),
            Timer::KeepAlive(_) | Timer::Retry(_) => continue,
        };
        if !expected.contains(&session) {
            return false;
        }
        found += 1;
    }
    found == expected.len()
}
