//! Clients: CONNECT (limits, client ids, session expiry, keep-alive, takeover,
//! resume), packets from a connected client, MQTT 5 re-authentication, and the
//! end of a connection.
//!
//! # Invariants
//! - A client id has at most one connection: a new one takes the old one over
//!   [MQTT-3.1.4-2] before its CONNACK is encoded.
//! - A session is removed when its connection ends unless it is persistent; an
//!   offline persistent session has an expiry entry in the wheel unless it never
//!   expires.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::hooks::{AuthRequest, AuthStep, ClientInfo};
use crate::protocol::{
    codec, Auth, ConnAck, Connect, Disconnect, LastWill, Packet, Properties, Props,
    ProtocolVersion, ProtocolViolation, ReasonCode, TopicName,
};
use crate::router::owner_shard;
use crate::session::{Link, Session};

use super::rate::TokenBucket;
use super::timers::{keep_alive_grace, secs_to_ticks, ticks, Timer};
use super::wills::will_delay;
use super::{out_buffer, Close, Conn, ConnId, Core, Now, Rates, ReAuth, SessionEntry, SessionKey};

/// The outcome of an enhanced authentication exchange, for CONNACK.
#[derive(Clone, Debug)]
pub(crate) struct AuthOutcome {
    pub method: ByteString,
    pub data: Option<Bytes>,
}

/// The session a CONNECT asks for, resolved against the broker's caps.
struct Terms {
    /// Seconds the session outlives the connection (see `SessionEntry`).
    expiry_secs: Option<u64>,
    /// The expiry to tell an MQTT 5 client when the broker capped it.
    expiry_capped: Option<u32>,
    keep_alive_secs: u16,
    /// The keep-alive to tell an MQTT 5 client when the broker capped it.
    server_keep_alive: Option<u16>,
}

/// `topic` under a listener's mount point; `None` when the result is not a valid
/// topic name (too long).
pub(super) fn mounted_topic(mount: &str, topic: &TopicName) -> Option<TopicName> {
    TopicName::try_from(format!("{mount}{topic}").as_str()).ok()
}

impl Core {
    /// The mount point of connection `id`'s listener, if it has one.
    pub(super) fn mount_point(&self, id: ConnId) -> Option<ByteString> {
        let conn = self.conn(id)?;
        self.config.mount_points.get(usize::from(conn.info.listener))?.clone()
    }

    /// A client id for a client that sent an empty one: unique in the cluster (given
    /// distinct node ids), and owned by this shard, so a later client choosing the
    /// same id lands here too.
    fn assign_client_id(&mut self) -> ByteString {
        loop {
            self.next_assigned_id += 1;
            // The node id too: in a cluster, ids are assigned on every node, and a
            // client that comes back with its assigned id to another node must not
            // find someone else's session under it.
            let id =
                format!("shardmq-{}-{}-{}", self.config.node_id, self.id, self.next_assigned_id);
            if owner_shard(id.as_bytes(), self.shards) == self.id {
                return ByteString::from(id);
            }
        }
    }

    /// One round of enhanced authentication before CONNACK.
    pub fn authenticate(&self, request: &AuthRequest<'_>) -> AuthStep {
        self.hooks.client_authenticate(request)
    }

    /// Processes CONNECT on the owner shard (after any enhanced authentication).
    /// Returns the new connection, or the refusing CONNACK to write before closing.
    pub fn handle_connect(
        &mut self,
        now: Now,
        mut connect: Connect,
        auth: Option<AuthOutcome>,
        listener: u16,
    ) -> Result<ConnId, BytesMut> {
        self.now = now;
        let mount = self.config.mount_points.get(usize::from(listener)).cloned().flatten();
        let protocol = connect.protocol;
        let refuse = |reason| {
            let mut out = BytesMut::new();
            let connack = ConnAck { session_present: false, reason, properties: Props::default() };
            codec::encode(&Packet::ConnAck(connack), protocol, &mut out);
            Err(out)
        };
        if self.stopping {
            return refuse(ReasonCode::SERVER_UNAVAILABLE);
        }
        if self.stats.connections >= self.config.connections_max {
            // A takeover would free a slot, but refusing keeps the rule simple and
            // the count an upper bound.
            self.stats.connects_refused += 1;
            self.stats.limit_connections += 1;
            self.log_limit("connections_max");
            // MQTT 3 clients read it as 3, Server unavailable (the codec maps
            // reason codes to 3.1.1 return codes in one place).
            return refuse(ReasonCode::QUOTA_EXCEEDED);
        }
        let assigned = connect.client_id.is_empty();
        let client_id = if assigned {
            // [MQTT-3.1.3-8]: in 3.1.1 an empty id needs CleanSession = 1; MQTT 3.1
            // has no empty ids at all. MQTT 5 allows one either way and is told the
            // id assigned [MQTT-3.1.3-7], [MQTT-3.2.2-16].
            let allowed = match protocol {
                ProtocolVersion::V31 => false,
                ProtocolVersion::V311 => connect.clean_session,
                ProtocolVersion::V5 => true,
            };
            if !allowed {
                self.stats.connects_refused += 1;
                return refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            }
            self.assign_client_id()
        } else if let Some(entry) = self.sessions.get(&connect.client_id) {
            // A client with a session here: its connection shares the session's id,
            // one allocation per client however often it reconnects (a copy per
            // connection kept 19,000 more after a reconnect storm).
            entry.session.client_id().clone()
        } else {
            // Its own allocation: a decoded id is a slice of a read buffer, which a
            // long-lived session must not keep alive.
            ByteString::from(&*connect.client_id)
        };
        debug_assert!(assigned || owner_shard(client_id.as_bytes(), self.shards) == self.id);
        let terms = self.terms(&connect);
        let info = ClientInfo {
            client_id: client_id.clone(),
            username: connect.username.clone(),
            protocol,
            clean_session: connect.clean_session,
            keep_alive_secs: terms.keep_alive_secs,
            shard: self.id,
            listener,
        };
        if let (Some(mount), Some(will)) = (&mount, connect.will.as_mut()) {
            match mounted_topic(mount, &will.topic) {
                Some(topic) => will.topic = topic,
                None => {
                    self.stats.connects_refused += 1;
                    return refuse(ReasonCode::TOPIC_NAME_INVALID);
                }
            }
        }
        if let Some(will) = &connect.will {
            if !self.may_publish_will(&info, will.topic.as_str()) {
                self.stats.connects_refused += 1;
                tracing::info!(client_id = %client_id, topic = %will.topic, "refusing connection: the ACL denies its will topic");
                return refuse(ReasonCode::NOT_AUTHORIZED);
            }
        }
        let new_durable = self.journal.is_some()
            && terms.expiry_secs != Some(0)
            && (connect.clean_session || self.sessions.get(&client_id).is_none());
        if new_durable && self.durable_refused() {
            // A new persistent session is durable state: none while a log is full
            // (`data_max_bytes`). MQTT 3 clients read 0x97 as 3, Server unavailable.
            self.stats.connects_refused += 1;
            return refuse(ReasonCode::QUOTA_EXCEEDED);
        }
        let session_present = self.take_over(&client_id, connect.clean_session);
        let key = if session_present {
            self.sessions.key(&client_id).expect("resumed")
        } else {
            let session = Session::new(client_id.clone(), self.config.session);
            self.session_serial += 1;
            self.sessions.insert(Box::new(SessionEntry {
                session,
                serial: self.session_serial,
                conn: None,
                will: None,
                pending_will: None,
                expiry_secs: terms.expiry_secs,
                expires_at: None,
                username: None,
            }))
        };
        // Back online: its expiry leaves the wheel now, not in two hours.
        self.cancel_expiry(key);
        let id = self.new_conn(now, info, key, &terms, auth.as_ref());
        let mut link = Link::of(&connect);
        // Checked at start-up: a mount point is at most 65535 bytes.
        link.topic_strip = mount.map_or(0, |m| m.len() as u16);
        let properties = self.connack_properties(assigned.then(|| client_id.clone()), &terms, auth);
        let entry = self.sessions.by_key_mut(key).expect("inserted or present above");
        let conn = &mut self.conns[id.slot()];
        entry.conn = Some(id);
        entry.session.attach(link);
        entry.expiry_secs = terms.expiry_secs;
        entry.will = connect.will.map(|will| {
            Box::new(LastWill {
                topic: will.topic.detached(),
                payload: Bytes::copy_from_slice(&will.payload),
                properties: will.properties.detached().into(),
                ..will
            })
        });
        entry.username = connect.username.as_deref().map(Box::from);
        if let Some(journal) = self.journal.as_deref_mut() {
            if entry.persistent() || entry.session.is_durable() {
                entry.session.set_durable(true);
                journal.session(
                    entry.serial,
                    !session_present,
                    &client_id,
                    entry.expiry_secs,
                    0,
                    entry.username.as_deref(),
                );
                journal.will(entry.serial, entry.will.as_deref(), protocol);
            }
        }
        let will = entry.will.as_deref().cloned();
        let connack =
            ConnAck { session_present, reason: ReasonCode::SUCCESS, properties: properties.into() };
        codec::encode(&Packet::ConnAck(connack), protocol, out_buffer(conn, &mut self.spare_out));
        if let Some(will) = will {
            self.will_changed(&client_id, Some(will));
        }
        let now_us = now.unix_us;
        self.with_session(id, |s, out| s.resume(out, now_us));
        self.stats.connections += 1;
        self.stats.connects += 1;
        self.set_shared_online(&client_id, true);
        self.hooks.client_connected(&self.conns[id.slot()].info);
        let tick = ticks(now);
        if terms.keep_alive_secs > 0 {
            let deadline = tick + keep_alive_grace(terms.keep_alive_secs);
            self.wheel.schedule(deadline, Timer::KeepAlive(id));
        }
        // Timed resend is emqttd's retry for MQTT 3.1/3.1.1 only: MQTT 5 forbids
        // resending while the client is connected [MQTT-4.4.0-1].
        if let Some(secs) = self.config.retry_interval_secs.filter(|_| !protocol.is_v5()) {
            self.wheel.schedule(tick + secs_to_ticks(secs), Timer::Retry(id));
        }
        self.mark_dirty(id);
        Ok(id)
    }

    /// How long the session outlives the connection (CleanSession in MQTT 3, the
    /// Session Expiry Interval in MQTT 5 [MQTT-3.1.2-23]) and the keep-alive the
    /// broker enforces, both capped by the broker's settings.
    fn terms(&self, connect: &Connect) -> Terms {
        let v5 = connect.protocol.is_v5();
        let cap = self.config.session_expiry_max_secs;
        let (expiry_secs, expiry_capped) = if v5 {
            let requested = connect.properties.session_expiry_interval.unwrap_or(0);
            match (requested, cap) {
                (0, _) => (Some(0), None),
                (u32::MAX, None) => (None, None),
                (_, Some(cap)) if u64::from(requested) > cap => {
                    (Some(cap), Some(u32::try_from(cap).unwrap_or(u32::MAX)))
                }
                _ => (Some(u64::from(requested)), None),
            }
        } else if connect.clean_session {
            (Some(0), None)
        } else {
            (cap, None)
        };
        // MQTT 5 clients are capped and told so [MQTT-3.2.2-21].
        let (keep_alive_secs, server_keep_alive) = match self.config.keep_alive_max_secs {
            Some(max) if v5 && (connect.keep_alive_secs == 0 || connect.keep_alive_secs > max) => {
                (max, Some(max))
            }
            _ => (connect.keep_alive_secs, None),
        };
        Terms { expiry_secs, expiry_capped, keep_alive_secs, server_keep_alive }
    }

    fn new_conn(
        &mut self,
        now: Now,
        info: ClientInfo,
        session: SessionKey,
        terms: &Terms,
        auth: Option<&AuthOutcome>,
    ) -> ConnId {
        self.next_conn_serial = self.next_conn_serial.wrapping_add(1);
        let serial = self.next_conn_serial;
        let rates = (self.config.publish_rate_max.is_some()
            || self.config.publish_bytes_rate_max.is_some())
        .then(|| {
            Box::new(Rates {
                messages: self.config.publish_rate_max.map(|rate| TokenBucket::new(rate, now.ms)),
                payload_bytes: self
                    .config
                    .publish_bytes_rate_max
                    .map(|rate| TokenBucket::new(rate, now.ms)),
                paused_until_ms: None,
            })
        });
        let auth = auth.map(|a| Box::new(ReAuth { method: a.method.clone(), round: 0 }));
        let slot = self.conns.insert(Conn {
            serial,
            subacks_pending: 0,
            info,
            session,
            aliases_in: None,
            auth,
            rates,
            out: BytesMut::new(),
            ready: 0,
            close: None,
            last_seen_ms: now.ms,
            last_progress_ms: now.ms,
            expiry_was_zero: terms.expiry_secs == Some(0),
            dirty: false,
            in_backlog: false,
            publisher: false,
        });
        ConnId { slot: u32::try_from(slot).expect("fewer than 2^32 connections"), serial }
    }

    /// The client id is back: close its old connection, and end the old session
    /// unless the client resumes it. Returns whether a session is resumed.
    pub(super) fn take_over(&mut self, client_id: &ByteString, clean_start: bool) -> bool {
        let mut ended_wills = Vec::new();
        let mut orphans = Vec::new();
        let Some(old) = self.sessions.get_mut(client_id) else { return false };
        let mut session_present = false;
        let ends = clean_start || !old.persistent();
        if let Some(old_conn) = old.conn.take() {
            self.stats.takeovers += 1;
            let will = old.will.take();
            if will.is_some() {
                self.will_changed(client_id, None);
            }
            if let (Some(will), Some(conn)) = (will, self.conn(old_conn)) {
                // The old network connection closes without DISCONNECT, so its will
                // is published [MQTT-3.1.2-8], in MQTT 3 as in MQTT 5, unless it has
                // a Will Delay that the reconnection beats: the session continues
                // [MQTT-3.1.3-9]. If the session ends now, the will is due now.
                if will_delay(&will) == 0 || ends {
                    ended_wills.push((*will, conn.info.clone()));
                }
            }
            // [MQTT-3.1.4-2]: the new connection wins; the old one is closed
            // (MQTT 5: with DISCONNECT 0x8E).
            self.close(old_conn, Close::TakenOver);
            self.set_shared_online(client_id, false);
        }
        let key = self.sessions.key(client_id).expect("still present");
        // Its client is back (here, or claiming it from another node).
        self.settle_recovered(key);
        if let Some((will, info)) = self.cancel_pending_will(key) {
            // Back in time: a delayed will is not sent [MQTT-3.1.3-9], unless the
            // session ends now (clean start), which is when it is due.
            if ends {
                ended_wills.push((will, info));
            }
        }
        if ends {
            // The old session ends: what shared subscriptions dispatched to it and
            // it did not take goes to another member.
            orphans = self.sessions.by_key_mut(key).expect("still present").session.take_shared();
            self.remove_session(client_id);
        } else {
            session_present = true;
        }
        self.redispatch(orphans, client_id);
        for (will, info) in ended_wills {
            self.publish_will(will, &info);
        }
        session_present
    }

    /// What an MQTT 5 CONNACK tells the client (the codec writes no properties for
    /// MQTT 3).
    fn connack_properties(
        &self,
        assigned: Option<ByteString>,
        terms: &Terms,
        auth: Option<AuthOutcome>,
    ) -> Properties {
        let (authentication_method, authentication_data) =
            auth.map_or((None, None), |auth| (Some(auth.method), auth.data));
        Properties {
            assigned_client_identifier: assigned,
            session_expiry_interval: terms.expiry_capped,
            receive_maximum: Some(self.config.receive_maximum),
            maximum_packet_size: Some(
                u32::try_from(self.config.packet_size_max).unwrap_or(u32::MAX),
            ),
            topic_alias_maximum: (self.config.topic_alias_max > 0)
                .then_some(self.config.topic_alias_max),
            server_keep_alive: terms.server_keep_alive,
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(1),
            shared_subscription_available: Some(1),
            authentication_method,
            authentication_data,
            ..Properties::default()
        }
    }

    /// The connection ended (the IO layer closed the socket): the will, the
    /// session's expiry, and the hooks. `reason` is used unless the broker decided
    /// to close it first.
    pub fn handle_closed(&mut self, now: Now, id: ConnId, reason: Close) {
        self.now = now;
        if !self.is_live(id) {
            return;
        }
        let conn = self.conns.remove(id.slot());
        self.forget_seals(id);
        let reason = conn.close.map_or(reason, |close| *close);
        self.stats.connections -= 1;
        self.hooks.client_disconnected(&conn.info, reason.describe());
        if matches!(reason, Close::Violation(_) | Close::Malformed(_)) {
            self.stats.protocol_errors += 1;
        }
        self.pending_subacks.retain(|p| p.conn != id);
        let Some(entry) = self.sessions.get_mut(&conn.info.client_id) else { return };
        if entry.conn != Some(id) {
            // Taken over: the session belongs to the new connection now.
            return;
        }
        entry.conn = None;
        entry.session.go_offline();
        let had_will = entry.will.is_some();
        let will = entry.will.take().filter(|_| reason.publishes_will());
        let expiry_secs = entry.expiry_secs;
        // What shared subscriptions dispatched here and the client did not take
        // goes to another member [MQTT-4.8.2-4..6].
        let orphans = entry.session.take_shared();
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.absorb(entry.serial, &mut entry.session);
            if entry.persistent() && entry.session.is_durable() {
                journal.session(
                    entry.serial,
                    false,
                    &conn.info.client_id,
                    expiry_secs,
                    now.unix_us / 1_000_000,
                    entry.username.as_deref(),
                );
            }
        }
        let client_id = conn.info.client_id.clone();
        if had_will {
            self.will_changed(&client_id, None);
        }
        let Some(entry) = self.sessions.get_mut(&client_id) else { return };
        if entry.persistent() {
            if let Some(secs) = expiry_secs {
                let at = ticks(now) + secs_to_ticks(secs);
                entry.expires_at =
                    Some(self.wheel.schedule(at, Timer::SessionExpiry(conn.session)));
            }
            let protocol = conn.info.protocol;
            if let Some(will) = will {
                self.defer_will(*will, conn.info, expiry_secs);
            }
            // At shutdown the log keeps the connection's will, as a crash would:
            // due after the restart unless the client is back in time.
            if reason != Close::Shutdown {
                self.journal_will(&client_id, protocol);
            }
            self.set_shared_online(&client_id, false);
        } else {
            self.remove_session(&client_id);
            if let Some(will) = will {
                self.publish_will(*will, &conn.info);
            }
        }
        self.redispatch(orphans, &client_id);
    }

    /// Drops a session and its subscriptions.
    pub(super) fn remove_session(&mut self, client_id: &ByteString) {
        let Some(key) = self.sessions.key(client_id) else { return };
        self.settle_recovered(key);
        self.cancel_expiry(key);
        let pending_will = self.cancel_pending_will(key);
        let (_, entry) = self.sessions.remove(client_id).expect("found above");
        if let Some(journal) = self.journal.as_deref_mut().filter(|_| entry.session.is_durable()) {
            journal.session_end(entry.serial);
        }
        self.stats.queued_bytes -= entry.session.queued_bytes() as u64;
        let filters: Vec<_> = entry.session.subscriptions().map(|(f, _)| f.clone()).collect();
        for filter in filters {
            self.remove_local_sub(&filter, key, client_id);
        }
        if let Some((will, info)) = pending_will {
            // The session ends before the will's delay: it is due now [MQTT-3.1.3-9].
            self.publish_will(will, &info);
        }
    }

    // ---- packets from a client ---------------------------------------------------

    /// Handles one packet from connection `id`. An error closes that connection
    /// only.
    pub(super) fn handle_packet(
        &mut self,
        now: Now,
        id: ConnId,
        packet: Packet,
    ) -> Result<(), Close> {
        let Some(conn) = self.conn_mut(id) else { return Err(Close::Io) };
        conn.last_seen_ms = now.ms;
        let now_us = now.unix_us;
        match packet {
            Packet::Publish(publish) => self.on_publish(id, publish)?,
            Packet::PubAck(ack) => {
                let acked = self.with_session(id, |s, out| s.on_puback(ack.packet_id, out, now_us));
                if let Some(Some(delivery)) = acked.transpose().map_err(Close::Violation)? {
                    self.hooks.message_acked(&self.conns[id.slot()].info, &delivery.message);
                }
            }
            Packet::PubRec(ack) => {
                let acked = self.with_session(id, |s, out| s.on_pubrec(&ack, out, now_us));
                acked.transpose().map_err(Close::Violation)?;
            }
            Packet::PubRel(ack) => {
                self.with_session(id, |s, out| s.on_pubrel(ack.packet_id, out));
            }
            Packet::PubComp(ack) => {
                let acked =
                    self.with_session(id, |s, out| s.on_pubcomp(ack.packet_id, out, now_us));
                if let Some(Some(delivery)) = acked.transpose().map_err(Close::Violation)? {
                    self.hooks.message_acked(&self.conns[id.slot()].info, &delivery.message);
                }
            }
            Packet::Subscribe(subscribe) => self.on_subscribe(id, subscribe)?,
            Packet::Unsubscribe(unsubscribe) => self.on_unsubscribe(id, unsubscribe),
            Packet::PingReq => self.send(id, &Packet::PingResp),
            Packet::Disconnect(disconnect) => return Err(self.on_disconnect(id, &disconnect)),
            Packet::Auth(auth) => self.on_auth(id, &auth)?,
            Packet::Connect(_) => {
                return Err(Close::Violation(ProtocolViolation::protocol_error(
                    "MQTT-3.1.0-2",
                    "a second CONNECT on one connection",
                )));
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(Close::Violation(ProtocolViolation::protocol_error(
                    "MQTT-2.2.1",
                    "a packet only a server may send",
                )));
            }
        }
        Ok(())
    }

    /// DISCONNECT from the client: how the connection ends. In MQTT 5 it may ask
    /// for the will (0x04) and set a new Session Expiry Interval.
    fn on_disconnect(&mut self, id: ConnId, disconnect: &Disconnect) -> Close {
        if let Some(secs) = disconnect.properties.session_expiry_interval {
            let conn = &self.conns[id.slot()];
            if conn.expiry_was_zero && secs != 0 {
                return Close::Violation(ProtocolViolation::protocol_error(
                    "MQTT-3.14.2-2",
                    "DISCONNECT sets a Session Expiry Interval after CONNECT set 0",
                ));
            }
            let expiry = match (secs, self.config.session_expiry_max_secs) {
                (0, _) => Some(0),
                (u32::MAX, None) => None,
                (_, Some(cap)) => Some(u64::from(secs).min(cap)),
                (_, None) => Some(u64::from(secs)),
            };
            if let Some(entry) = self.sessions.get_mut(&conn.info.client_id) {
                if entry.conn == Some(id) {
                    entry.expiry_secs = expiry;
                }
            }
        }
        if disconnect.reason == ReasonCode::DISCONNECT_WITH_WILL {
            Close::NormalWithWill
        } else {
            // [MQTT-3.14.4-3]: the will is discarded.
            Close::Normal
        }
    }

    /// AUTH from a connected MQTT 5 client: re-authentication [MQTT-4.12.1].
    fn on_auth(&mut self, id: ConnId, auth: &Auth) -> Result<(), Close> {
        let conn = &self.conns[id.slot()];
        let Some(reauth) = conn.auth.as_deref() else {
            return Err(Close::Violation(ProtocolViolation::protocol_error(
                "MQTT-4.12.0-6",
                "AUTH from a client that did not authenticate with a method in CONNECT",
            )));
        };
        let (method, conn_round) = (reauth.method.clone(), reauth.round);
        if auth.properties.authentication_method.as_ref() != Some(&method) {
            return Err(Close::Violation(ProtocolViolation::protocol_error(
                "MQTT-4.12.1-1",
                "re-authentication must use the method of CONNECT",
            )));
        }
        let round = match auth.reason {
            ReasonCode::RE_AUTHENTICATE if conn_round == 0 => 0,
            ReasonCode::CONTINUE_AUTHENTICATION if conn_round > 0 => conn_round,
            _ => {
                return Err(Close::Violation(ProtocolViolation::protocol_error(
                    "MQTT-4.12.0-2",
                    "AUTH reason code out of turn",
                )))
            }
        };
        let step = self.hooks.client_authenticate(&AuthRequest {
            client_id: &conn.info.client_id,
            username: conn.info.username.as_deref(),
            method: &method,
            data: auth.properties.authentication_data.as_deref(),
            round,
            reauthenticate: true,
        });
        let (reason, data, next_round) = match step {
            AuthStep::Success(data) => (ReasonCode::SUCCESS, data, 0),
            AuthStep::Continue(data) => {
                (ReasonCode::CONTINUE_AUTHENTICATION, Some(data), round + 1)
            }
            AuthStep::Fail(code) => return Err(Close::AuthFailed(code)),
        };
        self.conns[id.slot()].auth.as_mut().expect("checked above").round = next_round;
        let properties = Properties {
            authentication_method: Some(method),
            authentication_data: data,
            ..Properties::default()
        };
        self.send(id, &Packet::Auth(Auth { reason, properties: properties.into() }));
        Ok(())
    }
}
