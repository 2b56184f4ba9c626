//! Wills [MQTT-3.1.2-8]: published when a connection ends without DISCONNECT, at
//! once or, with an MQTT 5 Will Delay Interval, at the earlier of the delay and
//! the end of the session [MQTT-3.1.3-9].
//!
//! # Invariants
//! - A session holds at most one pending (delayed) will, only while offline, and
//!   the wheel has an entry at its due tick.
//! - A pending will is published exactly once: when due, or when its session
//!   ends, whichever is first; a reconnection in time drops it.

use bytestring::ByteString;

use crate::hooks::{ClientInfo, Origin};
use crate::protocol::LastWill;

use super::timers::{secs_to_ticks, ticks, Timer};
use super::Core;

/// The Will Delay Interval of a will, in seconds (0 without one).
pub(super) fn will_delay(will: &LastWill) -> u32 {
    will.properties.will_delay_interval.unwrap_or(0)
}

impl Core {
    /// Publishes a client's will message, with its MQTT 5 properties (less the
    /// Will Delay Interval, which is the broker's business).
    pub(super) fn publish_will(&mut self, will: LastWill, info: &ClientInfo) {
        self.stats.wills_published += 1;
        let mut properties = will.properties.into_inner();
        properties.will_delay_interval = None;
        let properties = (!properties.is_empty()).then(|| Box::new(properties));
        let message =
            self.new_message(will.topic, will.payload, will.qos, will.retain, None, properties);
        self.ingress(Origin::Will(info), message);
    }

    /// The connection of a persistent session ended without DISCONNECT: its will
    /// goes out at the earlier of its delay and the end of the session.
    pub(super) fn defer_will(
        &mut self,
        will: LastWill,
        info: ClientInfo,
        expiry_secs: Option<u64>,
    ) {
        let delay = u64::from(will_delay(&will));
        let delay = expiry_secs.map_or(delay, |secs| delay.min(secs));
        if delay == 0 {
            self.publish_will(will, &info);
            return;
        }
        let at = ticks(self.now) + secs_to_ticks(delay);
        let client_id = info.client_id.clone();
        let Some(entry) = self.sessions.get_mut(&client_id) else { return };
        entry.pending_will = Some(Box::new((will, info, at)));
        self.wheel.schedule(at, Timer::Will(Box::new(client_id)));
    }

    /// A delayed will may be due.
    pub(super) fn will_due(&mut self, client_id: &ByteString, tick: u64) {
        let Some(entry) = self.sessions.get_mut(client_id) else { return };
        let due = entry.pending_will.as_ref().is_some_and(|pending| pending.2 <= tick);
        if due && entry.conn.is_none() {
            let (will, info, _) = *entry.pending_will.take().expect("due");
            self.publish_will(will, &info);
        }
    }
}
