//! SUBSCRIBE and UNSUBSCRIBE: the session's subscriptions, this shard's local
//! subscription trie, route replication to the other shards, and SUBACKs held
//! until the routes are visible everywhere and retained answers arrived.
//!
//! # Invariants
//! - A 0 <-> 1 transition of local subscribers for a filter is announced to every
//!   shard with this shard's next route revision; nothing else is.
//! - A SUBACK leaves only after every other shard acknowledged the route updates
//!   issued before it and every asked shard answered its retained query, so a
//!   message published anywhere after the client saw the SUBACK reaches the new
//!   subscription, and a stale retained value never lands after a live one.
//! - While a connection has a held SUBACK it processes no further packet.

use bytestring::ByteString;

use crate::protocol::{
    Filter, Packet, Props, ProtocolViolation, ReasonCode, RetainHandling, SubAck, Subscribe,
    TopicFilter, UnsubAck, Unsubscribe,
};
use crate::session::SubOptions;
use crate::small_map::SmallMap;

use super::messages::CtrlMsg;
use super::{Close, ConnId, Core, SessionKey};

/// A SUBACK held until other shards acknowledge route revision `rev`.
#[derive(Debug)]
pub(super) struct PendingSubAck {
    pub(super) rev: u64,
    /// The retained query of this SUBSCRIBE, and how many shards have not answered
    /// it yet.
    pub(super) query: u64,
    pub(super) answers_due: u32,
    pub(super) conn: ConnId,
    suback: SubAck,
}

/// `filter` under a listener's mount point (for a shared filter, the filter after
/// `$share/{group}/`); `None` when the result is not a valid filter.
fn mounted_filter(mount: &str, filter: &TopicFilter) -> Option<TopicFilter> {
    let mounted = match filter.kind() {
        Filter::Plain(f) => format!("{mount}{f}"),
        Filter::Shared { group, filter } => format!("$share/{group}/{mount}{filter}"),
        Filter::BadShare(_) => return Some(filter.clone()),
    };
    TopicFilter::try_from(mounted.as_str()).ok()
}

impl Core {
    pub(super) fn on_subscribe(&mut self, id: ConnId, subscribe: Subscribe) -> Result<(), Close> {
        let conn = &self.conns[id.slot()];
        let (client_id, session) = (conn.info.client_id.clone(), conn.session);
        // One identifier for every filter of the SUBSCRIBE [MQTT-3.8.2.1.2].
        let sub_id = subscribe.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        self.retained_query += 1;
        let query = self.retained_query;
        let mut answers_due = 0;
        let mount = self.mount_point(id);
        for mut request in subscribe.filters {
            if let Some(mount) = &mount {
                let Some(filter) = mounted_filter(mount, &request.filter) else {
                    codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                    continue;
                };
                request.filter = filter;
            }
            let Some(request) = self.hooks.client_subscribe(&self.conns[id.slot()].info, request)
            else {
                // MQTT 3 clients read every refusal as 0x80 (mapped by the codec).
                codes.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            };
            let shared = match request.filter.kind() {
                Filter::Plain(_) => false,
                Filter::Shared { .. } => true,
                Filter::BadShare(reason) => {
                    tracing::debug!(client_id = %client_id, "refusing filter: {reason}");
                    codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                    continue;
                }
            };
            let inner = match request.filter.kind() {
                Filter::Shared { filter, .. } => filter,
                _ => request.filter.as_str(),
            };
            let Some(acl_check) = self.may_subscribe(id, inner, shared) else {
                tracing::debug!(client_id = %client_id, filter = %request.filter, "the ACL denies the filter");
                codes.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            };
            if shared && request.no_local {
                return Err(Close::Violation(ProtocolViolation::protocol_error(
                    "MQTT-3.8.3-4",
                    "No Local on a shared subscription",
                )));
            }
            if !self.topic_within_limits(request.filter.as_str()) {
                self.stats.limit_topic += 1;
                codes.push(ReasonCode::UNSPECIFIED_ERROR);
                continue;
            }
            let subscriptions_max = self.config.subscriptions_max;
            let full = self.with_session(id, |s, _| {
                s.subscription_count() >= subscriptions_max && !s.is_subscribed(&request.filter)
            });
            if full == Some(true) {
                self.stats.limit_subscriptions += 1;
                self.log_limit("subscriptions_max");
                codes.push(ReasonCode::QUOTA_EXCEEDED);
                continue;
            }
            // A durable session's subscription is durable state: none while a log
            // is full (`data_max_bytes`).
            let durable = self.with_session(id, |s, _| s.is_durable()) == Some(true);
            if durable && self.durable_refused() {
                codes.push(ReasonCode::QUOTA_EXCEEDED);
                continue;
            }
            let options = SubOptions {
                qos: request.qos,
                no_local: request.no_local,
                retain_as_published: request.retain_as_published,
                id: sub_id,
                acl_check,
            };
            // Kept as long as the session: detach it from the read buffer.
            let filter = request.filter.detached();
            let Some(previous) = self.with_session(id, |s, _| s.subscription(&filter)) else {
                return Ok(());
            };
            codes.push(ReasonCode::granted(request.qos));
            if shared {
                // Retained messages are not sent on a shared subscription
                // [MQTT-4.8.2]; the member joins its group's rotation.
                if previous.is_none() {
                    self.join_shared(&filter, &client_id);
                }
            } else {
                self.add_local_sub(&filter, session, options);
                let send_retained = match request.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => previous.is_none(),
                    RetainHandling::DoNotSend => false,
                };
                if send_retained {
                    answers_due +=
                        self.query_retained(&client_id, &filter, request.qos, sub_id, query);
                }
            }
            // The session takes the filter last, by move: a clone would give its
            // bytes a shared header for as long as the subscription lives.
            self.with_session(id, |s, _| s.subscribe(filter, options));
        }
        let suback = SubAck { packet_id: subscribe.packet_id, codes, properties: Props::default() };
        if self.route_rev_acked() && answers_due == 0 {
            self.send(id, &Packet::SubAck(suback));
        } else {
            self.conns[id.slot()].subacks_pending += 1;
            self.pending_subacks.push(PendingSubAck {
                rev: self.route_rev,
                query,
                answers_due,
                conn: id,
                suback,
            });
        }
        Ok(())
    }

    pub(super) fn on_unsubscribe(&mut self, id: ConnId, unsubscribe: Unsubscribe) {
        let conn = &self.conns[id.slot()];
        let (client_id, session) = (conn.info.client_id.clone(), conn.session);
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        let mount = self.mount_point(id);
        for filter in unsubscribe.filters {
            let filter = match &mount {
                // Nothing can be subscribed under a filter that cannot be mounted.
                Some(mount) => mounted_filter(mount, &filter).unwrap_or(filter),
                None => filter,
            };
            let Some(filter) = self.hooks.client_unsubscribe(&self.conns[id.slot()].info, filter)
            else {
                codes.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            };
            let existed = self.with_session(id, |s, _| s.unsubscribe(&filter));
            if existed == Some(true) {
                self.remove_local_sub(&filter, session, &client_id);
                codes.push(ReasonCode::SUCCESS);
            } else {
                codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        let unsuback =
            UnsubAck { packet_id: unsubscribe.packet_id, codes, properties: Props::default() };
        self.send(id, &Packet::UnsubAck(unsuback));
    }

    pub(super) fn add_local_sub(
        &mut self,
        filter: &TopicFilter,
        session: SessionKey,
        options: SubOptions,
    ) {
        let subscribers = self.local_subs.get_or_insert_with(filter.as_str(), SmallMap::new);
        let first = subscribers.is_empty();
        subscribers.insert(session, options);
        if first {
            self.announce_route(filter, true);
        }
    }

    /// Removes the subscription of `session` (of `client_id`) to `filter` from
    /// this shard's index or its shared group.
    pub(super) fn remove_local_sub(
        &mut self,
        filter: &TopicFilter,
        session: SessionKey,
        client_id: &ByteString,
    ) {
        if filter.is_shared() {
            self.leave_shared(filter, client_id);
            return;
        }
        let Some(subscribers) = self.local_subs.get_mut(filter.as_str()) else { return };
        subscribers.remove(&session);
        if subscribers.is_empty() {
            self.local_subs.remove(filter.as_str());
            self.announce_route(filter, false);
        }
    }

    /// A 0 <-> 1 transition of local subscribers for `filter`: apply it to our own
    /// replica and tell every other shard.
    fn announce_route(&mut self, filter: &TopicFilter, present: bool) {
        self.route_rev += 1;
        let rev = self.route_rev;
        self.apply_route(self.id, rev, filter, present);
        for shard in (0..self.shards).filter(|s| *s != self.id) {
            let msg = CtrlMsg::Route { origin: self.id, rev, filter: filter.clone(), present };
            self.ctrl_out.push(shard, msg);
        }
        self.stats.route_updates_sent += 1;
    }

    fn route_rev_acked(&self) -> bool {
        (0..self.shards).filter(|s| *s != self.id).all(|s| self.route_acked[s] >= self.route_rev)
    }

    /// Another shard applied our route updates up to `rev`.
    pub(super) fn route_ack(&mut self, from: usize, rev: u64) {
        self.route_acked[from] = self.route_acked[from].max(rev);
        self.release_subacks();
    }

    /// Another shard answered retained query `query`.
    pub(super) fn retained_answered(&mut self, query: u64) {
        if let Some(pending) = self.pending_subacks.iter_mut().find(|p| p.query == query) {
            pending.answers_due -= 1;
        }
        self.release_subacks();
    }

    fn release_subacks(&mut self) {
        let acked = (0..self.shards)
            .filter(|s| *s != self.id)
            .map(|s| self.route_acked[s])
            .min()
            .unwrap_or(u64::MAX);
        let mut i = 0;
        while i < self.pending_subacks.len() {
            let pending = &self.pending_subacks[i];
            if pending.rev <= acked && pending.answers_due == 0 {
                let pending = self.pending_subacks.remove(i);
                if let Some(conn) = self.conn_mut(pending.conn) {
                    conn.subacks_pending -= 1;
                    self.send(pending.conn, &Packet::SubAck(pending.suback));
                }
            } else {
                i += 1;
            }
        }
    }
}
