//! Shared subscriptions [MQTT-4.8.2]: this shard's connected members per
//! `$share/{group}/{filter}`, member counts announced to every shard, and the
//! dispatch of one message to one member.
//!
//! # Invariants
//! - `shared_local` holds exactly the online sessions subscribed to each shared
//!   filter; an empty group is removed.
//! - Every change of a group's member count on this shard is announced (and
//!   acknowledged like a route update).
//! - A message passes between shards at most `shards` times looking for a member.

use std::sync::Arc;

use bytestring::ByteString;

use crate::message::Message;
use crate::protocol::TopicFilter;
use crate::session::Delivery;

use super::messages::{CtrlMsg, DataMsg};
use super::Core;

impl Core {
    /// A connected member joins the shared subscription `filter` on this shard.
    pub(super) fn join_shared(&mut self, filter: &TopicFilter, client_id: &ByteString) {
        let group = self.shared_local.entry(filter.clone()).or_default();
        if group.members.contains(client_id) {
            return;
        }
        group.members.push(client_id.clone());
        let members = group.members.len() as u32;
        self.announce_shared(filter, members);
    }

    /// A member leaves (unsubscribed, or disconnected) the shared subscription.
    pub(super) fn leave_shared(&mut self, filter: &TopicFilter, client_id: &ByteString) {
        let Some(group) = self.shared_local.get_mut(filter) else { return };
        let before = group.members.len();
        group.members.retain(|c| c != client_id);
        if group.members.len() == before {
            return;
        }
        let members = group.members.len() as u32;
        if members == 0 {
            self.shared_local.remove(filter);
        }
        self.announce_shared(filter, members);
    }

    /// Joins or leaves every shared group of a session as its client connects or
    /// disconnects: only connected members get messages.
    pub(super) fn set_shared_online(&mut self, client_id: &ByteString, online: bool) {
        let Some(entry) = self.sessions.get(client_id) else { return };
        let filters: Vec<TopicFilter> = entry
            .session
            .subscriptions()
            .filter(|(f, _)| f.is_shared())
            .map(|(f, _)| f.clone())
            .collect();
        for filter in filters {
            if online {
                self.join_shared(&filter, client_id);
            } else {
                self.leave_shared(&filter, client_id);
            }
        }
    }

    /// Tells every shard (this one too) how many members of `filter` are here.
    fn announce_shared(&mut self, filter: &TopicFilter, members: u32) {
        self.route_rev += 1;
        let rev = self.route_rev;
        self.shared_routes.set(filter, self.id, members);
        self.note_shared(filter);
        for shard in (0..self.shards).filter(|s| *s != self.id) {
            let msg =
                CtrlMsg::SharedRoute { origin: self.id, rev, filter: filter.clone(), members };
            self.ctrl_out.push(shard, msg);
        }
        self.stats.route_updates_sent += 1;
    }

    /// Gives a message to one member of the shared subscription `filter` on this
    /// shard, never `exclude` (a member that just left); without an eligible member
    /// here, passes it to another shard that has one.
    pub(super) fn dispatch_shared(
        &mut self,
        filter: &TopicFilter,
        message: Arc<Message>,
        hops: u8,
        exclude: Option<&ByteString>,
    ) {
        let strategy = self.config.shared_strategy;
        let random = self.rng.u64(..);
        let member =
            self.shared_local.get_mut(filter).and_then(|g| g.pick(strategy, random, exclude));
        let Some(member) = member else {
            let random = self.rng.u64(..);
            let other = self.shared_routes.pick_other(filter, Some(self.id), self.shards, random);
            match other {
                Some(shard) if usize::from(hops) < self.shards => {
                    let msg = DataMsg::Shared {
                        filter: filter.clone(),
                        message,
                        hops: hops + 1,
                        exclude: exclude.cloned(),
                    };
                    self.data_out.push(shard, msg);
                }
                _ => self.stats.dropped_no_subscribers += 1,
            }
            return;
        };
        let session = self.sessions.key(&member);
        let options =
            session.and_then(|key| self.sessions.by_key(key)?.session.subscription(filter));
        let (Some(session), Some(options)) = (session, options) else {
            debug_assert!(false, "a group member without its subscription: {member}");
            self.stats.dropped_no_subscribers += 1;
            return;
        };
        let delivery = Delivery {
            qos: message.qos.min(options.qos),
            retain: options.retain_as_published && message.retain,
            sub_ids: options.id.into_iter().collect(),
            shared: Some(filter.clone()),
            message,
        };
        self.deliver_to(session, delivery);
    }

    /// What shared subscriptions dispatched to a member that left, and it did not
    /// take, goes to another member [MQTT-4.8.2-4..6].
    pub(super) fn redispatch(&mut self, orphans: Vec<Delivery>, left: &ByteString) {
        for delivery in orphans {
            let Some(filter) = delivery.shared else { continue };
            self.stats.shared_redispatched += 1;
            self.dispatch_shared(&filter, delivery.message, 0, Some(left));
        }
    }
}
