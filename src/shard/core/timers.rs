//! Time in the core: the shard clock in ticks of [`TICK_MS`], the timer wheel's
//! keys, and what happens when they come due (keep-alive, retry, session expiry,
//! delayed wills, the retained tombstone sweep).
//!
//! # Invariants
//! - A connection with a keep-alive has one keep-alive entry in the wheel (two
//!   at most for one turn, after a reschedule); a due entry re-checks the real
//!   state, so a busy connection costs no wheel work per packet.
//! - An offline persistent session with an expiry has an entry at `expires_at`,
//!   and that is the only session-expiry entry of its key: a session that comes
//!   back online or ends has its entry cancelled, so stale entries do not pile up
//!   in the wheel (a reconnect storm would leave one per client for two hours).
//! - A pending (delayed) will has an entry at its due tick, cancelled if the
//!   client is back in time.

use bytes::BytesMut;

use super::{Close, ConnId, Core, Now, SessionKey};

pub(super) use super::wheel::Wheel;

/// The resolution of the shard clock and its timer wheel.
pub(crate) const TICK_MS: u64 = 100;

/// The shard clock: ticks of [`TICK_MS`] since the shard started.
pub(super) fn ticks(now: Now) -> u64 {
    now.ms / TICK_MS
}

pub(super) fn secs_to_ticks(secs: u64) -> u64 {
    secs.saturating_mul(1000 / TICK_MS)
}

/// The keep-alive deadline: one and a half times the interval [MQTT-3.1.2-24].
pub(super) fn keep_alive_grace(keep_alive_secs: u16) -> u64 {
    secs_to_ticks(u64::from(keep_alive_secs)) * 3 / 2
}

/// Timer wheel keys: 12 bytes, no allocation. Every connection with a keep-alive
/// holds one in the wheel, and every offline persistent session one more. A
/// session's keys name its slot, which a later session may take: a due entry
/// checks the session's own deadline, so a stale key does nothing.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Timer {
    KeepAlive(ConnId),
    /// At the session's `expires_at`; cancelled when it ends or comes back online.
    SessionExpiry(SessionKey),
    Retry(ConnId),
    /// A delayed will may be due; cancelled when the client is back in time.
    Will(SessionKey),
}

impl Core {
    /// Advances the timer wheel to `now`: keep-alive timeouts, retries, expiries.
    pub fn handle_tick(&mut self, now: Now) {
        self.now = now;
        let tick = ticks(now);
        self.retained.sweep(now);
        if tick.is_multiple_of(secs_to_ticks(60)) {
            self.sweep_login_failures(now.ms);
        }
        let mut due = Vec::new();
        self.wheel.advance(tick, &mut due);
        for timer in due {
            match timer {
                Timer::KeepAlive(id) => self.keep_alive_due(id, now),
                Timer::Retry(id) => {
                    if !self.is_live(id) {
                        continue;
                    }
                    let now_us = now.unix_us;
                    self.with_session(id, |s, out| s.retry(out, now_us));
                    if let Some(secs) = self.config.retry_interval_secs {
                        self.wheel.schedule(tick + secs_to_ticks(secs), Timer::Retry(id));
                    }
                }
                Timer::SessionExpiry(key) => self.expiry_due(key, tick),
                Timer::Will(key) => self.will_due(key, tick),
            }
        }
    }

    fn expiry_due(&mut self, key: SessionKey, tick: u64) {
        let Some(entry) = self.sessions.by_key_mut(key) else { return };
        if entry.conn.is_some() || entry.expires_at.is_none_or(|at| at > tick) {
            return;
        }
        // The entry has just left the wheel: nothing to cancel.
        entry.expires_at = None;
        let client_id = entry.session.client_id().clone();
        self.stats.sessions_expired += 1;
        self.remove_session(&client_id);
    }

    /// Takes the session's expiry out of the wheel: it came back online or ends
    /// now. Without this the entry would stay for the whole expiry delay (two hours
    /// by default), one per client after a reconnect storm.
    pub(super) fn cancel_expiry(&mut self, key: SessionKey) {
        let Some(entry) = self.sessions.by_key_mut(key) else { return };
        if let Some(at) = entry.expires_at.take() {
            // Not found when the entry came due in this very tick and waits, taken
            // out of the wheel, behind the timer that ends the session.
            self.wheel.cancel(at, |t| *t == Timer::SessionExpiry(key));
        }
    }

    fn keep_alive_due(&mut self, id: ConnId, now: Now) {
        let tick = ticks(now);
        let paused = self.readers_paused;
        let Some(conn) = self.conn_mut(id) else { return };
        if conn.publisher && paused {
            // We stopped reading this client; its silence is ours.
            conn.last_seen_ms = now.ms;
        }
        let deadline = conn.last_seen_ms / TICK_MS + keep_alive_grace(conn.info.keep_alive_secs);
        if deadline <= tick {
            self.stats.keep_alive_timeouts += 1;
            self.close(id, Close::KeepAliveTimeout);
        } else {
            self.wheel.schedule(deadline, Timer::KeepAlive(id));
            self.release_room(id);
        }
    }

    /// Once per keep-alive period of a connection, not per message: what its last
    /// burst of messages left allocated goes back, so an idle client holds no
    /// message buffers.
    fn release_room(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id.slot()).filter(|c| c.serial == id.serial) else {
            return;
        };
        if conn.out.is_empty() {
            conn.out = BytesMut::new();
        }
        let session = self.sessions.by_key_mut(conn.session).filter(|e| e.conn == Some(id));
        if let Some(entry) = session {
            entry.session.release_room();
        }
    }
}
