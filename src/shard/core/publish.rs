//! Inbound PUBLISH: the rules a client's message must pass (topic aliases,
//! Subscription Identifiers, the broker's Receive Maximum, topic limits, rate
//! limits), its acknowledgement, and ingress: ids, `$SYS` protection, the
//! `message.publish` hooks, then routing to every shard with subscribers.
//!
//! # Invariants
//! - A message is matched once, on the shard it entered; each other shard with
//!   subscribers gets one ring item, never one per subscriber.
//! - A QoS 2 message is routed once, however often the client resends it before
//!   PUBREL [MQTT-4.3.3-2].
//! - Every message gets the next id of this shard: ids increase per shard.

use std::sync::Arc;

use bytes::Bytes;

use crate::hooks::Origin;
use crate::message::{Message, Publisher};
use crate::protocol::{
    Ack, Packet, Properties, ProtocolViolation, Publish, PublishQoS, PublishTopic, QoS, ReasonCode,
    TopicName,
};
use crate::router::owner_shard;

use super::messages::{ApiPublish, DataMsg};
use super::retained::is_sys_topic;
use super::{Close, ConnId, Core, Now};

impl Core {
    pub(super) fn on_publish(&mut self, id: ConnId, mut publish: Publish) -> Result<(), Close> {
        let conn = &mut self.conns[id.slot()];
        conn.publisher = true;
        let v5 = conn.info.protocol.is_v5();
        self.stats.messages_in[publish.qos.qos() as usize] += 1;
        self.stats.bytes_in += publish.payload.len() as u64;
        let topic = self.resolve_topic(id, &mut publish, v5)?;
        // Under a mount point: too long to mount is over the same limit.
        let topic = match self.mount_point(id) {
            None => Some(topic),
            Some(mount) => super::clients::mounted_topic(&mount, &topic),
        };
        let Some(topic) = topic.filter(|t| self.topic_within_limits(t.as_str())) else {
            self.stats.limit_topic += 1;
            self.log_limit("topic_length_max/topic_levels_max");
            return Err(Close::Limit("topic_length_max/topic_levels_max"));
        };
        self.charge_publish_rate(id, publish.payload.len());
        // A denied message is dropped; an MQTT 5 client is told so in its PUBACK or
        // PUBREC, an MQTT 3 one is acknowledged as if it went through (its protocol
        // has no way to say no, and a client that is never answered resends).
        let allowed = self.may_publish(id, topic.as_str());
        if publish.qos.qos() != QoS::AtMostOnce && self.durable_refused() {
            // No room left for durable state: an MQTT 5 client is told with 0x97
            // (PUBACK/PUBREC Reason Code, MQTT 5 3.4.2.1, 3.5.2.1); an MQTT 3 one
            // cannot be, and an acknowledgement would promise what was not stored:
            // it is closed.
            if !v5 {
                return Err(Close::Limit("data_max_bytes"));
            }
            let packet_id = match publish.qos {
                PublishQoS::AtLeastOnce(p) | PublishQoS::ExactlyOnce(p) => p,
                PublishQoS::AtMostOnce => unreachable!("checked above"),
            };
            let ack = Ack { reason: ReasonCode::QUOTA_EXCEEDED, ..Ack::new(packet_id) };
            match publish.qos {
                PublishQoS::ExactlyOnce(_) => self.send(id, &Packet::PubRec(ack)),
                _ => self.send(id, &Packet::PubAck(ack)),
            }
            return Ok(());
        }
        let receive_maximum = usize::from(self.config.receive_maximum);
        let route = match publish.qos {
            PublishQoS::AtMostOnce => allowed,
            PublishQoS::AtLeastOnce(packet_id) => {
                self.send(id, &Packet::PubAck(refused_if(!allowed && v5, packet_id)));
                allowed
            }
            PublishQoS::ExactlyOnce(packet_id) if !allowed && v5 => {
                // A PUBREC with a failure code ends the exchange: no PUBREL follows.
                self.send(id, &Packet::PubRec(refused_if(true, packet_id)));
                false
            }
            PublishQoS::ExactlyOnce(packet_id) => {
                let first = self.with_session(id, |s, out| {
                    // QoS 2 messages awaiting PUBREL are the only ones the broker
                    // holds unacknowledged (QoS 1 is answered at once): they count
                    // against its Receive Maximum [MQTT-3.3.4-8].
                    if v5
                        && !s.is_awaiting_rel(packet_id)
                        && s.awaiting_rel_len() >= receive_maximum
                    {
                        return Err(Close::Violation(ProtocolViolation::with_code(
                            "MQTT-3.3.4-8",
                            "more QoS 2 PUBLISHes awaiting PUBREL than the Receive Maximum",
                            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                        )));
                    }
                    let first = s.on_incoming_qos2(packet_id);
                    let protocol = s.link().protocol;
                    crate::protocol::codec::encode(
                        &Packet::PubRec(Ack::new(packet_id)),
                        protocol,
                        out,
                    );
                    Ok(first)
                });
                match first {
                    Some(first) => first? && allowed,
                    None => false,
                }
            }
        };
        if route {
            // The session the connection owns (a connection taken over reads no
            // more packets, so it always owns one here).
            let conn = &self.conns[id.slot()];
            let serial = self.sessions.by_key(conn.session).filter(|e| e.conn == Some(id));
            let source = serial.map(|e| Publisher { shard: self.id as u32, session: e.serial });
            let message = self.new_message(
                topic,
                publish.payload,
                publish.qos.qos(),
                publish.retain,
                source,
                publish.properties,
            );
            // The hooks see the connection's client info; cloned only when a hook
            // is registered, so the common path takes no copy.
            if self.hooks.has_message_publish() {
                let info = self.conns[id.slot()].info.clone();
                self.ingress(Origin::Client(&info), message);
            } else {
                self.ingress(Origin::Api, message);
            }
        }
        Ok(())
    }

    /// The topic of an MQTT 5 client's PUBLISH, through its topic alias: a Topic
    /// Alias with a topic name sets the alias; an alias alone stands for the topic it
    /// was set to [MQTT-3.3.2-12]. Also refuses a Subscription Identifier from a
    /// client [MQTT-3.3.4-6]. The decoder took care of the rest (an MQTT 3 PUBLISH
    /// always names its topic, an empty name comes with an alias).
    fn resolve_topic(
        &mut self,
        id: ConnId,
        publish: &mut Publish,
        v5: bool,
    ) -> Result<TopicName, Close> {
        let alias_valid = |alias: u16, max: u16| {
            if alias == 0 || alias > max {
                return Err(Close::Violation(ProtocolViolation::with_code(
                    "MQTT-3.3.2-9",
                    "topic alias 0 or above the broker's Topic Alias Maximum",
                    ReasonCode::TOPIC_ALIAS_INVALID,
                )));
            }
            Ok(())
        };
        let max = self.config.topic_alias_max;
        let set_alias = match publish.properties.as_deref_mut() {
            Some(properties) if v5 => {
                if !properties.subscription_identifiers.is_empty() {
                    return Err(Close::Violation(ProtocolViolation::protocol_error(
                        "MQTT-3.3.4-6",
                        "a PUBLISH from a client carries a Subscription Identifier",
                    )));
                }
                properties.topic_alias.take()
            }
            _ => None,
        };
        if publish.properties.as_deref().is_some_and(Properties::is_empty) {
            publish.properties = None;
        }
        let aliases = &mut self.conns[id.slot()].aliases_in;
        match &publish.topic {
            PublishTopic::Name(topic) => {
                if let Some(alias) = set_alias {
                    alias_valid(alias, max)?;
                    aliases.get_or_insert_with(Box::default).insert(alias, topic.detached());
                }
                Ok(topic.clone())
            }
            PublishTopic::Alias(alias) => {
                alias_valid(*alias, max)?;
                aliases.as_ref().and_then(|a| a.get(alias)).cloned().ok_or(Close::Violation(
                    ProtocolViolation::protocol_error(
                        "MQTT-3.3.2-12",
                        "an empty topic name with a topic alias that was never set",
                    ),
                ))
            }
        }
    }

    pub(super) fn topic_within_limits(&self, topic: &str) -> bool {
        topic.len() <= self.config.topic_length_max
            && topic.bytes().filter(|b| *b == b'/').count() < self.config.topic_levels_max
    }

    /// Charges one PUBLISH to the client's rate limits; over them, the connection
    /// stops reading until the buckets refill.
    fn charge_publish_rate(&mut self, id: ConnId, payload_len: usize) {
        let now_ms = self.now.ms;
        let conn = &mut self.conns[id.slot()];
        let Some(rates) = conn.rates.as_mut() else { return };
        let wait_msgs = rates.messages.as_mut().and_then(|b| b.take(1, now_ms));
        let wait_bytes =
            rates.payload_bytes.as_mut().and_then(|b| b.take(payload_len as u64, now_ms));
        if let Some(wait) = wait_msgs.max(wait_bytes) {
            if rates.paused_until_ms.is_none() {
                self.stats.limit_publish_rate += 1;
            }
            rates.paused_until_ms = Some(now_ms + wait.max(1));
        }
    }

    /// A message from the embedding program (`BrokerHandle::publish`).
    pub fn handle_api_publish(&mut self, now: Now, publish: ApiPublish) {
        self.now = now;
        let message = self.new_message(
            publish.topic,
            publish.payload,
            publish.qos,
            publish.retain,
            None,
            None,
        );
        self.ingress(Origin::Api, message);
    }

    /// Publishes a broker-generated message (`$SYS`, alarms): retained, QoS 0, no
    /// hooks.
    pub fn publish_sys(&mut self, now: Now, topic: &str, payload: String) {
        self.now = now;
        let Ok(topic) = TopicName::try_from(topic) else {
            debug_assert!(false, "broker-made topics are valid: {topic}");
            return;
        };
        let message =
            self.new_message(topic, Bytes::from(payload), QoS::AtMostOnce, true, None, None);
        self.route(Arc::new(message));
    }

    /// A message entering the broker now, with the next id of this shard.
    pub(super) fn new_message(
        &mut self,
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        publisher: Option<Publisher>,
        properties: Option<Box<Properties>>,
    ) -> Message {
        let id = self.ids.next(self.now.unix_us);
        Message { id, topic, payload, qos, retain, publisher, properties }
    }

    /// Every message enters here: the `message.publish` hooks, then routing.
    pub(super) fn ingress(&mut self, origin: Origin<'_>, message: Message) {
        if is_sys_topic(message.topic.as_str()) {
            // `$SYS` is the broker's (MQTT 3.1.1 section 4.7.2): clients' and wills'
            // messages to it are acknowledged and dropped, as Mosquitto does.
            self.stats.dropped_reserved_topic += 1;
            return;
        }
        let message = if self.hooks.has_message_publish() {
            match self.hooks.message_publish(origin, message) {
                Some(message) => message,
                None => {
                    self.stats.dropped_by_hook += 1;
                    return;
                }
            }
        } else {
            message
        };
        self.route(Arc::new(message));
    }

    /// Sends a message everywhere it has subscribers (other nodes included), and to
    /// its retained partition.
    pub(super) fn route(&mut self, message: Arc<Message>) {
        self.route_here(message, true);
    }

    /// Sends a message to this node's subscribers and retained partition; one that
    /// `entered` here also to the other nodes that want it, and to its shared
    /// subscriptions (which stay within a node).
    pub(super) fn route_here(&mut self, message: Arc<Message>, entered: bool) {
        if message.retain {
            let owner = owner_shard(message.topic.as_str().as_bytes(), self.shards);
            if owner == self.id {
                self.store_retained(Arc::clone(&message));
            } else {
                self.data_out.push(owner, DataMsg::Retain(Arc::clone(&message)));
            }
        }
        let shards = self.routes.matching_shards(message.topic.as_str());
        let mut picks = std::mem::take(&mut self.shared_scratch);
        let remote = entered && self.forward(&message);
        if entered && !self.shared_routes.is_empty() {
            let rng = &mut self.rng;
            self.shared_routes.pick(
                message.topic.as_str(),
                self.config.shared_strategy,
                || rng.u64(..),
                &mut picks,
            );
        }
        if shards.is_empty() && picks.is_empty() && !remote {
            self.stats.dropped_no_subscribers += 1;
        }
        for shard in shards.iter() {
            if shard == self.id {
                self.deliver_local(&message);
            } else {
                self.data_out.push(shard, DataMsg::Publish(Arc::clone(&message)));
            }
        }
        for (shard, filter) in picks.drain(..) {
            if shard >= self.shards {
                // The group picked a member on another node.
                self.forward_shared(shard - self.shards, filter, Arc::clone(&message));
            } else if shard == self.id {
                self.dispatch_shared(&filter, Arc::clone(&message), 0, None);
            } else {
                let msg = DataMsg::Shared {
                    filter,
                    message: Arc::clone(&message),
                    hops: 0,
                    exclude: None,
                };
                self.data_out.push(shard, msg);
            }
        }
        self.shared_scratch = picks;
    }
}

/// An acknowledgement: 0x87 Not authorized when `refused`, else success.
fn refused_if(refused: bool, packet_id: crate::protocol::PacketId) -> Ack {
    if refused {
        Ack { reason: ReasonCode::NOT_AUTHORIZED, ..Ack::new(packet_id) }
    } else {
        Ack::new(packet_id)
    }
}
