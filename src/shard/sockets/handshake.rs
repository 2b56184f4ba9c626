//! The handshake of a client connection, on the shard that accepted it: CONNECT
//! read and checked, the connection handed to the shard owning its client id,
//! enhanced authentication and the password check there, and CONNECT given to
//! the core.

use super::*;

impl Shard {
    /// Reads CONNECT, then serves the connection here or hands it to the shard that
    /// owns its client id.
    pub(super) fn process_handshake(&mut self, id: LinkId) {
        let limits = self.core.limits(ProtocolVersion::V311);
        let link = self.sockets.link(id).expect("queued link is live");
        if link.awaiting_proxy {
            match proxy::parse(link.tail.bytes()) {
                ProxyHeader::Incomplete => {
                    self.sockets.await_more(id);
                    return;
                }
                ProxyHeader::Invalid(reason) => {
                    warn!(peer = ?peer(&link.fd), "closing connection: {reason}");
                    if let Some(stats) = self.sockets.listener_stats_mut(id) {
                        stats.proxy_refused += 1;
                    }
                    self.sockets.close_link(id, None);
                    return;
                }
                ProxyHeader::Done { len, source } => {
                    bytes::Buf::advance(link.tail.bytes(), len);
                    link.proxied = source.map(Box::new);
                    link.awaiting_proxy = false;
                    if link.stack.is_some() {
                        // What followed the header is TLS or WebSocket: through the
                        // layers with it.
                        let rest = std::mem::take(link.tail.bytes());
                        link.tail.settle();
                        if !rest.is_empty() {
                            self.feed(id, rest);
                        }
                    }
                }
            }
        }
        let link = self.sockets.link(id).expect("queued link is live");
        let decoded = codec::decode(link.tail.bytes(), &limits);
        let who = || client_addr(link);
        let connect = match decoded {
            Ok(Some(Packet::Connect(connect))) => connect,
            Ok(None) => {
                self.sockets.await_more(id);
                return;
            }
            Ok(Some(other)) => {
                warn!(peer = ?who(), "closing connection: [MQTT-3.1.0-1] first packet is {}", kind(&other));
                self.early_protocol_errors += 1;
                self.sockets.close_link(id, None);
                return;
            }
            Err(DecodeError::UnsupportedProtocolLevel(level)) => {
                info!(peer = ?who(), "refusing connection: [MQTT-3.1.2-2] protocol level {level}");
                // The 3.1.1 layout (return code 0x01): the client's level is unknown.
                let refusal =
                    connack(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, ProtocolVersion::V311);
                self.sockets.close_link(id, Some(refusal));
                return;
            }
            Err(e) => {
                warn!(peer = ?who(), "closing connection before CONNECT: {e}");
                self.early_protocol_errors += 1;
                self.sockets.close_link(id, None);
                return;
            }
        };
        link.tail.settle();
        let (me, shards) = (self.core.id, self.core.shards);
        let owner = if connect.client_id.is_empty() {
            me
        } else {
            owner_shard(connect.client_id.as_bytes(), shards)
        };
        if owner == me {
            self.connect_here(id, connect);
            return;
        }
        let link = self.sockets.link(id).expect("queued link is live");
        if link.sending {
            // What the layers said last (TLS 1.3 session tickets, sent as the
            // handshake ends) must reach the client before anything the owner says:
            // the socket moves once that send completes.
            link.phase = Phase::HandingOff(Box::new((owner, connect)));
            return;
        }
        self.hand_off(id, owner, connect);
    }

    /// Moves the socket to `owner`, the shard of its session, with the bytes read
    /// after CONNECT and its layers. No receive is armed (one completion at a time)
    /// and no send is in flight, so no byte is read or written out of order.
    pub(super) fn hand_off(&mut self, id: LinkId, owner: usize, connect: Connect) {
        let link = self.sockets.remove_link(id.slot as usize);
        debug_assert!(link.recv == Recv::Idle && !link.sending);
        let handoff = Handoff {
            fd: link.fd,
            connect,
            buffered: link.tail.into_bytes().freeze(),
            listener: link.listener,
            proxied: link.proxied.map(|addr| *addr),
            stack: link.stack,
        };
        self.handoffs_out += 1;
        self.core.push_ctrl(owner, CtrlMsg::Io(Box::new(IoMsg::Handoff(handoff))));
        self.schedule_pass();
    }

    /// CONNECT on the owner shard: enhanced authentication first where the client
    /// asked for it, then the core.
    pub(super) fn connect_here(&mut self, id: LinkId, connect: Connect) {
        match connect.properties.authentication_method.clone() {
            Some(method) if connect.protocol.is_v5() => {
                let data = connect.properties.authentication_data.clone();
                let state = AuthState { connect, method, round: 0, deadline_ms: 0 };
                self.authenticate(id, Box::new(state), data);
            }
            _ => self.login(id, connect),
        }
    }

    /// The password check [MQTT-3.1.4-2]: inline for fast hashes, off the shard's
    /// thread for slow ones (an argon2 verification takes tens of milliseconds,
    /// which would stall every client of the shard).
    pub(super) fn login(&mut self, id: LinkId, connect: Connect) {
        let now = self.now();
        let link = self.sockets.links.get(id.slot as usize).expect("live link");
        let listener = usize::from(link.listener);
        let peer = client_addr(link);
        let spec = self.sockets.listeners.get(listener).map(|l| &l.spec);
        let anonymous = spec.is_some_and(|s| s.anonymous);
        let identity = match (spec.is_some_and(|s| s.use_identity), &link.stack) {
            (true, Some(stack)) => stack.peer_identity(),
            _ => None,
        };
        let context = LoginContext { listener, anonymous, identity: identity.as_deref(), peer };
        let mut connect = connect;
        match self.core.login(now, &connect, context) {
            Login::Allowed => {
                if let Some(identity) = identity {
                    connect.username = Some(identity.into());
                }
                self.claim_or_connect(id, connect, None);
            }
            Login::Refused(reason) => self.refuse_login(id, &connect, reason),
            Login::Verify(hash, password) => {
                if self.verifying >= VERIFY_PENDING_MAX {
                    self.refuse_login(id, &connect, ReasonCode::SERVER_BUSY);
                    return;
                }
                self.verifying += 1;
                if let Some(link) = self.sockets.link(id) {
                    link.phase = Phase::Verifying;
                }
                let me = self.me.clone();
                glommio::spawn_local(async move {
                    let ok =
                        glommio::executor().spawn_blocking(move || hash.verify(&password)).await;
                    let Some(shard) = me.upgrade() else { return };
                    let mut s = shard.borrow_mut();
                    s.verifying -= 1;
                    s.verified(id, connect, peer, ok);
                    s.schedule_pass();
                })
                .detach();
            }
        }
    }

    /// A slow password verification ended.
    pub(super) fn verified(
        &mut self,
        id: LinkId,
        connect: Connect,
        peer: Option<SocketAddr>,
        ok: bool,
    ) {
        let now = self.now();
        self.core.login_verified(now, peer, ok);
        // Closed meanwhile (timed out, or the broker stops): nothing to answer.
        let Some(link) = self.sockets.link(id).filter(|l| matches!(l.phase, Phase::Verifying))
        else {
            return;
        };
        link.phase = Phase::Handshake;
        if ok {
            self.claim_or_connect(id, connect, None);
        } else {
            self.refuse_login(id, &connect, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        }
    }

    pub(super) fn refuse_login(&mut self, id: LinkId, connect: &Connect, reason: ReasonCode) {
        let peer = self.sockets.link(id).and_then(|l| client_addr(l));
        info!(client_id = %connect.client_id, username = ?connect.username, ?peer, "refusing connection: {reason} [MQTT-3.2.2-8]");
        if let Some(stats) = self.sockets.listener_stats_mut(id) {
            stats.auth_failures += 1;
        }
        self.sockets.close_link(id, Some(connack(reason, connect.protocol)));
    }

    pub(super) fn connect_now(&mut self, id: LinkId, connect: Connect, auth: Option<AuthOutcome>) {
        let now = self.now();
        let listener = self.sockets.link(id).map_or(0, |l| l.listener);
        let result = self.core.handle_connect(now, connect, auth, listener);
        self.schedule_pass();
        match result {
            Ok(conn) => {
                if self.sockets.by_conn.len() <= conn.slot() {
                    self.sockets.by_conn.resize(conn.slot() + 1, NO_LINK);
                }
                self.sockets.by_conn[conn.slot()] = id.slot;
                let link = self.sockets.link(id).expect("live link");
                link.phase = Phase::Connected(conn);
                // Bytes the client sent after CONNECT, then the multishot receive.
                self.sockets.queue(id);
            }
            Err(refusal) => self.sockets.close_link(id, Some(refusal)),
        }
    }

    /// One round of enhanced authentication [MQTT-4.12]: CONNECT, then AUTH 0x18
    /// both ways until the authenticator accepts.
    pub(super) fn authenticate(
        &mut self,
        id: LinkId,
        mut state: Box<AuthState>,
        data: Option<bytes::Bytes>,
    ) {
        let step = self.core.authenticate(&AuthRequest {
            client_id: &state.connect.client_id,
            username: state.connect.username.as_deref(),
            method: &state.method,
            data: data.as_deref(),
            round: state.round,
            reauthenticate: false,
        });
        match step {
            AuthStep::Success(data) => {
                let AuthState { connect, method, .. } = *state;
                self.claim_or_connect(id, connect, Some(AuthOutcome { method, data }));
            }
            AuthStep::Fail(reason) => {
                info!(client_id = %state.connect.client_id, "authentication failed: {reason}");
                self.sockets.close_link(id, Some(connack(reason, ProtocolVersion::V5)));
            }
            AuthStep::Continue(challenge) => {
                let properties = Properties {
                    authentication_method: Some(state.method.clone()),
                    authentication_data: Some(challenge),
                    ..Properties::default()
                };
                let auth = Packet::Auth(Auth {
                    reason: ReasonCode::CONTINUE_AUTHENTICATION,
                    properties: properties.into(),
                });
                let mut out = BytesMut::new();
                codec::encode(&auth, ProtocolVersion::V5, &mut out);
                state.deadline_ms = self.now().ms + self.config.connect_timeout.as_millis() as u64;
                self.sockets.deadlines.push_back((state.deadline_ms, id));
                self.sockets.send_mqtt(id, out);
                let link = self.sockets.link(id).expect("live link");
                link.phase = Phase::Auth(state);
                self.sockets.queue(id);
            }
        }
    }

    pub(super) fn process_auth(&mut self, id: LinkId) {
        let limits = self.core.limits(ProtocolVersion::V5);
        let link = self.sockets.link(id).expect("queued link is live");
        let next = match codec::decode(link.tail.bytes(), &limits) {
            Ok(None) => {
                self.sockets.await_more(id);
                return;
            }
            Ok(Some(packet)) => Some(packet),
            Err(_) => None,
        };
        link.tail.settle();
        let Phase::Auth(state) = std::mem::replace(&mut link.phase, Phase::Handshake) else {
            unreachable!("processed as authenticating");
        };
        match next {
            Some(Packet::Auth(auth))
                if auth.reason == ReasonCode::CONTINUE_AUTHENTICATION
                    && auth.properties.authentication_method.as_ref() == Some(&state.method) =>
            {
                let data = auth.properties.into_inner().authentication_data;
                let state = Box::new(AuthState { round: state.round + 1, ..*state });
                self.authenticate(id, state, data);
            }
            other => {
                // Anything else in the middle of the exchange breaks it
                // [MQTT-4.12.0-4].
                let kind = other.as_ref().map(kind);
                warn!(client_id = %state.connect.client_id, "closing connection: [MQTT-4.12.0-4] {kind:?} during authentication");
                self.early_protocol_errors += 1;
                self.sockets.close_link(id, None);
            }
        }
    }
}
