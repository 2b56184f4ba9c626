//! Wills [MQTT-3.1.2-8]: published when a connection ends without DISCONNECT, at
//! once or, with an MQTT 5 Will Delay Interval, at the earlier of the delay and
//! the end of the session [MQTT-3.1.3-9].
//!
//! # Invariants
//! - A session holds at most one pending (delayed) will, only while offline, and
//!   the wheel has an entry at its due tick, and none once the will is gone.
//! - A pending will is published exactly once: when due, or when its session
//!   ends, whichever is first; a reconnection in time drops it.

use std::sync::Arc;

use bytestring::ByteString;

use crate::hooks::{ClientInfo, Origin};
use crate::protocol::LastWill;

use super::messages::CtrlMsg;
use super::timers::{secs_to_ticks, ticks, Timer};
use super::{Core, SessionKey};

/// The Will Delay Interval of a will, in seconds (0 without one).
pub(super) fn will_delay(will: &LastWill) -> u32 {
    will.properties.will_delay_interval.unwrap_or(0)
}

impl Core {
    /// Publishes a client's will message, with its MQTT 5 properties (less the
    /// Will Delay Interval, which is the broker's business).
    /// A connected client's will changed: in a cluster, the other nodes keep a copy,
    /// to publish it should this node die (see `nodes`).
    pub(super) fn will_changed(&mut self, client_id: &ByteString, will: Option<LastWill>) {
        if !self.cluster_enabled() {
            return;
        }
        let will = will.map(|will| {
            let mut properties = will.properties.into_inner();
            properties.will_delay_interval = None;
            let properties = (!properties.is_empty()).then(|| Box::new(properties));
            // The id is this node's: the node that publishes it gives it a new one.
            let message =
                self.new_message(will.topic, will.payload, will.qos, will.retain, None, properties);
            Arc::new(message)
        });
        if self.id == 0 {
            self.note_will(client_id.clone(), will);
        } else {
            self.ctrl_out.push(0, CtrlMsg::Will { client_id: client_id.clone(), will });
        }
    }

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
        let Some(key) = self.sessions.key(&info.client_id) else { return };
        let at = self.wheel.schedule(at, Timer::Will(key));
        let entry = self.sessions.by_key_mut(key).expect("found above");
        entry.pending_will = Some(Box::new((will, info, at)));
    }

    /// The session's delayed will leaves the wheel: the client is back in time, or
    /// the session ends (and the caller publishes the will). Returns the will.
    pub(super) fn cancel_pending_will(
        &mut self,
        key: SessionKey,
    ) -> Option<(LastWill, ClientInfo)> {
        let entry = self.sessions.by_key_mut(key)?;
        let (will, info, at) = *entry.pending_will.take()?;
        // Not found when the entry came due in this very tick and waits, taken out
        // of the wheel, behind the timer that ends the session: it finds no will.
        self.wheel.cancel(at, |t| *t == Timer::Will(key));
        Some((will, info))
    }

    /// A delayed will may be due.
    pub(super) fn will_due(&mut self, key: SessionKey, tick: u64) {
        let unreconciled = self.is_unreconciled(key);
        let Some(entry) = self.sessions.by_key_mut(key) else { return };
        let due = entry.pending_will.as_ref().is_some_and(|pending| pending.2 <= tick);
        if due && unreconciled {
            // Recovered, and another node may have published it already (see
            // `durable`): it waits for their answer.
            let at = self.wheel.schedule(tick + secs_to_ticks(1), Timer::Will(key));
            entry.pending_will.as_mut().expect("due").2 = at;
            return;
        }
        if due && entry.conn.is_none() {
            let (will, info, _) = *entry.pending_will.take().expect("due");
            let client_id = info.client_id.clone();
            self.publish_will(will, &info);
            self.journal_will(&client_id, info.protocol);
        }
    }
}
