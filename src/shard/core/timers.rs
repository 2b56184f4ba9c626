//! Time in the core: the shard clock in ticks of [`TICK_MS`], the timer wheel's
//! keys, and what happens when they come due (keep-alive, retry, session expiry,
//! delayed wills, the retained tombstone sweep).
//!
//! # Invariants
//! - A connection with a keep-alive has one keep-alive entry in the wheel (two
//!   at most for one turn, after a reschedule); a due entry re-checks the real
//!   state, so a busy connection costs no wheel work per packet.
//! - An offline persistent session with an expiry has an entry at `expires_at`.

use bytes::BytesMut;
use bytestring::ByteString;

use super::{Close, ConnId, Core, Now};

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

/// Timer wheel keys. Every connection with a keep-alive holds one in the wheel,
/// so the rare keys box their client id: 16 bytes a key, not 40.
#[derive(Debug)]
pub(super) enum Timer {
    KeepAlive(ConnId),
    SessionExpiry(Box<ByteString>),
    Retry(ConnId),
    /// A delayed will may be due.
    Will(Box<ByteString>),
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
                Timer::SessionExpiry(client_id) => {
                    let expired = self.sessions.get(&client_id).is_some_and(|e| {
                        e.conn.is_none() && e.expires_at.is_some_and(|at| at <= tick)
                    });
                    if expired {
                        self.stats.sessions_expired += 1;
                        self.remove_session(&client_id);
                    }
                }
                Timer::Will(client_id) => self.will_due(&client_id, tick),
            }
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
