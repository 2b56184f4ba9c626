//! A session as it leaves one node for another: its client reconnected to a node
//! of the cluster that does not hold it. Plain data; the cluster's link format
//! (`cluster::frame`) writes and reads it.
//!
//! # Invariants
//! - Exporting then importing keeps the subscriptions, the unacknowledged messages
//!   with their packet ids and stages in send order, the queued messages in order,
//!   and the QoS 2 ids awaiting PUBREL: the client resumes as if it had come back
//!   to the same node [MQTT-4.4.0-1], [MQTT-4.6.0-1].

use bytestring::ByteString;

use crate::protocol::{PacketId, QoS, TopicFilter};

use super::{Delivery, Entry, Session, SessionLimits, SubOptions};

/// Everything of a session that outlives its connection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionImage {
    /// Filters with their options, shared ones included.
    pub subscriptions: Vec<(TopicFilter, SubOptions)>,
    /// Unacknowledged messages in send order.
    pub inflight: Vec<Entry>,
    /// Queued messages, oldest first.
    pub mqueue: Vec<Delivery>,
    /// QoS 2 messages from the client, routed, whose PUBREL has not come.
    pub awaiting_rel: Vec<PacketId>,
}

impl Session {
    /// The session's state, for another node; the session is gone from here.
    pub fn export(self) -> SessionImage {
        self.image()
    }

    /// The session's state as it is now: for another node, or a checkpoint of its
    /// shard's log. Messages are shared, not copied.
    pub fn image(&self) -> SessionImage {
        let subscriptions = self.subscriptions.iter().map(|(f, o)| (f.clone(), *o)).collect();
        let Some(traffic) = self.traffic.as_deref() else {
            return SessionImage { subscriptions, ..SessionImage::default() };
        };
        SessionImage {
            subscriptions,
            inflight: traffic.inflight.iter().cloned().collect(),
            mqueue: traffic.mqueue.iter().cloned().collect(),
            awaiting_rel: traffic.awaiting_rel.iter().copied().collect(),
        }
    }

    /// An offline session from another node's image. Returns it with the messages
    /// this node's limits could not hold (its mqueue full), to be counted.
    pub fn import(
        client_id: ByteString,
        limits: SessionLimits,
        image: SessionImage,
    ) -> (Session, usize) {
        let mut session = Session::new(client_id, limits);
        session.online = false;
        for (filter, options) in image.subscriptions {
            session.subscriptions.insert(filter, options);
        }
        let mut dropped = 0;
        if !(image.inflight.is_empty() && image.mqueue.is_empty() && image.awaiting_rel.is_empty())
        {
            let traffic = session.traffic_mut();
            let mut overflow = Vec::new();
            for entry in image.inflight {
                // A window smaller here than there: the rest waits in the queue and
                // goes out under new ids (QoS 1 and unreleased QoS 2 only; a QoS 2
                // exchange past PUBREC keeps its id or is lost, counted).
                if !traffic.inflight.restore(entry.clone()) {
                    if entry.delivery.qos == QoS::ExactlyOnce
                        && entry.stage == super::Stage::PubCompDue
                    {
                        dropped += 1;
                    } else {
                        overflow.push(entry.delivery);
                    }
                }
            }
            for delivery in overflow.into_iter().chain(image.mqueue) {
                if traffic.mqueue.push(delivery).is_some() {
                    dropped += 1;
                }
            }
            traffic.awaiting_rel.extend(image.awaiting_rel);
        }
        (session, dropped)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::message::{Message, MessageId};
    use crate::protocol::{ProtocolVersion, TopicName};
    use crate::session::{AckKind, Link, Stage};

    fn limits() -> SessionLimits {
        SessionLimits {
            inflight_max: 2,
            mqueue_len_max: 10,
            mqueue_store_qos0: true,
            out_buffer_max: 1 << 20,
        }
    }

    fn message(n: u8) -> Arc<Message> {
        Arc::new(Message {
            id: MessageId(u128::from(n)),
            topic: TopicName::try_from("t").unwrap(),
            payload: Bytes::from(vec![n]),
            qos: QoS::ExactlyOnce,
            retain: false,
            publisher: None,
            properties: None,
        })
    }

    #[test]
    fn a_session_moves_with_its_window_queue_and_qos2_state() {
        let mut session = Session::new("c".into(), limits());
        session.attach(Link::v3(ProtocolVersion::V311));
        let filter = TopicFilter::try_from("t").unwrap();
        session.subscribe(filter.clone(), SubOptions::qos(QoS::ExactlyOnce));
        let mut out = BytesMut::new();
        for n in 0..4 {
            session.deliver(
                Delivery::new(message(n), QoS::ExactlyOnce, false),
                Some(&mut out),
                true,
                0,
            );
        }
        // The first exchange got its PUBREC: PUBREL is due, PUBCOMP awaited.
        let first = session.traffic.as_ref().unwrap().inflight.iter().next().unwrap().packet_id;
        session.traffic.as_mut().unwrap().inflight.ack(first, AckKind::PubRec).unwrap();
        assert!(session.on_incoming_qos2(PacketId::new(7).unwrap()));
        session.go_offline();

        let image = session.export();
        assert_eq!(image.inflight.len(), 2);
        assert_eq!(image.mqueue.len(), 2);
        let (mut moved, dropped) = Session::import("c".into(), limits(), image);
        assert_eq!(dropped, 0);
        assert!(moved.is_subscribed(&filter));
        assert!(
            moved.is_awaiting_rel(PacketId::new(7).unwrap()),
            "QoS 2 from the client stays once"
        );
        let entries: Vec<(u16, Stage)> = moved
            .traffic
            .as_ref()
            .unwrap()
            .inflight
            .iter()
            .map(|e| (e.packet_id.get(), e.stage))
            .collect();
        assert_eq!(
            entries,
            vec![(first.get(), Stage::PubCompDue), (first.get() + 1, Stage::PubRecDue)]
        );
        // Resumed on the new node: PUBREL for the first, the second resent with DUP
        // under its id, then the queue in order under new ids.
        moved.attach(Link::v3(ProtocolVersion::V311));
        let mut out = BytesMut::new();
        moved.resume(&mut out, 0);
        let limits = crate::protocol::Limits::default();
        let mut packets = Vec::new();
        while let Some(p) = crate::protocol::codec::decode(&mut out, &limits).unwrap() {
            packets.push(p);
        }
        assert!(matches!(&packets[0], crate::protocol::Packet::PubRel(a) if a.packet_id == first));
        let publishes: Vec<(bool, u8)> = packets[1..]
            .iter()
            .filter_map(|p| match p {
                crate::protocol::Packet::Publish(p) => Some((p.dup, p.payload[0])),
                _ => None,
            })
            .collect();
        assert_eq!(
            publishes,
            vec![(true, 1)],
            "the window of 2 holds the PUBREL'd one and one more"
        );
        assert_eq!(moved.mqueue_len(), 2);
        assert!(moved.check_invariants());
    }
}
