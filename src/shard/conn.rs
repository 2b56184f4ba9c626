//! The task of one client connection: it owns the socket and the tail of a
//! partial packet; the core owns everything MQTT about the connection.
//!
//! Reads land in the shard's read chunk (`pool`), are handed to the core as bytes
//! ([`Core::handle_input`]), and what the core encoded for the client is written
//! when the pass wakes the task (or at once after the task's own input).
//!
//! Owner: the shard that owns the client id. A connection accepted elsewhere reads
//! its CONNECT there, then moves here (`handshake` -> hand-off -> `serve`).
//!
//! [`Core::handle_input`]: super::core::Core::handle_input

use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::future::or;
use futures_lite::{AsyncRead, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::spawn_local;
use tracing::{debug, info, warn};

use crate::hooks::{AuthRequest, AuthStep};
use crate::net;
use crate::protocol::{
    codec, Auth, ConnAck, Connect, DecodeError, Limits, Packet, Properties, Props, ProtocolVersion,
    ReasonCode,
};
use crate::router::owner_shard;

use super::core::{AuthOutcome, Close, ConnId, CtrlMsg, Handoff, Held};
use super::notify::Notify;
use super::pool::Tail;
use super::ShardRc;

/// Reads what the socket has into the shard's chunk and appends it to `tail`.
/// Returns 0 at end of stream.
///
/// Readiness-based (glommio polls, then `recv`s), so dropping this future when
/// another event wins a race loses no data.
async fn read_more(
    shard: &ShardRc,
    stream: &mut TcpStream,
    tail: &mut Tail,
) -> std::io::Result<usize> {
    poll_fn(|cx| {
        let mut s = shard.borrow_mut();
        match Pin::new(&mut *stream).poll_read(cx, s.pool.room()) {
            Poll::Ready(Ok(n)) => {
                tail.push(s.pool.take(n));
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    })
    .await
}

/// Reads until a whole packet is decoded; `None` at end of stream or on error
/// (`Some(Err)` for a decode error).
async fn read_packet(
    shard: &ShardRc,
    stream: &mut TcpStream,
    tail: &mut Tail,
    limits: &Limits,
) -> Option<Result<Packet, DecodeError>> {
    loop {
        match codec::decode(tail.bytes(), limits) {
            Ok(Some(packet)) => return Some(Ok(packet)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        tail.settle();
        match read_more(shard, stream, tail).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A freshly accepted connection: read CONNECT (within `connect_timeout_secs`), then
/// serve it here or hand it to the shard that owns its client id.
pub(crate) async fn handshake(shard: ShardRc, mut stream: TcpStream) {
    // MQTT traffic is small packets whose latency matters; Nagle only delays them.
    if let Err(e) = stream.set_nodelay(true) {
        debug!("set_nodelay: {e}");
    }
    let (timeout, limits, stopped) = {
        let s = shard.borrow();
        (s.config.connect_timeout, s.core.limits(ProtocolVersion::V311), Rc::clone(&s.stopped))
    };
    let peer = stream.peer_addr().ok();
    let mut tail = Tail::default();
    let first = or(
        async { read_packet(&shard, &mut stream, &mut tail, &limits).await.ok_or(()) },
        or(
            async {
                glommio::timer::sleep(timeout).await;
                shard.borrow_mut().connect_timeouts += 1;
                Err(())
            },
            async {
                stopped.wait().await;
                Err(())
            },
        ),
    )
    .await;
    let connect = match first {
        Ok(Ok(Packet::Connect(connect))) => connect,
        Ok(Ok(other)) => {
            warn!(?peer, "closing connection: [MQTT-3.1.0-1] first packet is {:?}", kind(&other));
            shard.borrow_mut().early_protocol_errors += 1;
            return;
        }
        Ok(Err(DecodeError::UnsupportedProtocolLevel(level))) => {
            info!(?peer, "refusing connection: [MQTT-3.1.2-2] protocol level {level}");
            // The 3.1.1 layout (return code 0x01): the client's level is unknown.
            let mut out = BytesMut::new();
            let connack = ConnAck {
                session_present: false,
                reason: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                properties: Props::default(),
            };
            codec::encode(&Packet::ConnAck(connack), ProtocolVersion::V311, &mut out);
            let _ = stream.write_all(&out).await;
            return;
        }
        Ok(Err(e)) => {
            warn!(?peer, "closing connection before CONNECT: {e}");
            shard.borrow_mut().early_protocol_errors += 1;
            return;
        }
        Err(_) => return,
    };
    tail.settle();
    let (me, shards) = {
        let s = shard.borrow();
        (s.core.id, s.core.shards)
    };
    let owner = if connect.client_id.is_empty() {
        me
    } else {
        owner_shard(connect.client_id.as_bytes(), shards)
    };
    if owner == me {
        // Boxed: the handshake's own state (the read, the timers) is not kept
        // beside the CONNECT processing.
        Box::pin(serve(shard, stream, connect, tail)).await;
        return;
    }
    // The session lives on `owner`: move the socket there with the bytes already read.
    match net::dup_socket(&stream) {
        Ok(fd) => {
            drop(stream);
            let handoff = Handoff { fd, connect, buffered: tail.into_bytes().freeze() };
            let mut s = shard.borrow_mut();
            s.handoffs_out += 1;
            s.core.push_ctrl(owner, CtrlMsg::Handoff(Box::new(handoff)));
            s.schedule_pass();
        }
        Err(e) => warn!(?peer, "cannot hand the connection to shard {owner}: {e}"),
    }
}

/// Serves a connection handed over by another shard.
pub(crate) async fn serve_handoff(shard: ShardRc, handoff: Handoff) {
    use std::os::fd::IntoRawFd;
    use std::os::unix::io::FromRawFd;
    // SAFETY: the descriptor is an open TCP socket that this hand-off owned alone.
    let stream = unsafe { TcpStream::from_raw_fd(handoff.fd.into_raw_fd()) };
    shard.borrow_mut().handoffs_in += 1;
    let tail = Tail::from_owned(BytesMut::from(&handoff.buffered[..]));
    serve(shard, stream, handoff.connect, tail).await;
}

/// Runs CONNECT on the owner shard (after any enhanced authentication), then
/// hands the connection to its own task: the long-lived future holds the socket,
/// the tail and two pointers, not the CONNECT packet or the handshake's state.
async fn serve(shard: ShardRc, mut stream: TcpStream, connect: Connect, mut tail: Tail) {
    let auth = match connect.properties.authentication_method.clone() {
        Some(method) if connect.protocol.is_v5() => {
            let exchange = authenticate(&shard, &mut stream, &connect, method, &mut tail);
            // Boxed: the exchange is rare, and its state must not grow the future
            // of every handshake.
            match Box::pin(exchange).await {
                Some(outcome) => Some(outcome),
                None => return,
            }
        }
        _ => None,
    };
    let connected = {
        let mut s = shard.borrow_mut();
        let now = s.now();
        let result = s.core.handle_connect(now, connect, auth);
        s.schedule_pass();
        result
    };
    match connected {
        Ok(id) => {
            let wake = Rc::new(Notify::default());
            shard.borrow_mut().register(id, Rc::clone(&wake));
            spawn_local(connection(shard, stream, id, tail, wake)).detach();
        }
        Err(refusal) => {
            let _ = stream.write_all(&refusal).await;
        }
    }
}

/// The task of a connected client, from CONNACK to close.
///
/// A plain function returning an `async move` block: an `async fn` keeps its
/// arguments twice in its state (as arguments and as moved-in locals), and this
/// future lives as long as the connection.
#[allow(clippy::manual_async_fn)] // measured: 180 bytes less per idle connection
fn connection(
    shard: ShardRc,
    mut stream: TcpStream,
    id: ConnId,
    mut tail: Tail,
    wake: Rc<Notify>,
) -> impl std::future::Future<Output = ()> {
    async move {
        let close = drive(&shard, &mut stream, id, &mut tail, &wake).await;
        // Whatever was encoded before the close (e.g. a PUBACK) still goes out,
        // then the DISCONNECT that tells an MQTT 5 client why.
        let last = {
            // The pass first: the batches of what this connection sent leave
            // before the client reads its last acknowledgements.
            let mut s = shard.borrow_mut();
            s.end_pass();
            s.core.take_last_words(id)
        };
        if let Some(last) = last {
            let _ = stream.write_all(&last).await;
        }
        let client_id = {
            let mut s = shard.borrow_mut();
            let client_id = s.core.client_id(id);
            let now = s.now();
            s.core.handle_closed(now, id, close.clone());
            s.unregister(id);
            s.schedule_pass();
            client_id
        };
        log_close(&client_id, &close);
    }
}

fn log_close(client_id: &str, close: &Close) {
    match close {
        Close::Violation(v) => warn!(client_id, "closing connection: {v}"),
        Close::Malformed(e) => warn!(client_id, "closing connection: {e}"),
        Close::Limit(limit) => warn!(client_id, "closing connection: over {limit}"),
        Close::KeepAliveTimeout => {
            info!(client_id, "closing connection: keep-alive timeout [MQTT-3.1.2-24]");
        }
        other => debug!(client_id, reason = ?other, "disconnected"),
    }
}

/// Carries an MQTT 5 enhanced authentication exchange to its end before CONNACK
/// [MQTT-4.12]: CONNECT, then AUTH 0x18 both ways until the authenticator accepts.
/// Returns `None` when the connection was refused (CONNACK sent) or lost.
async fn authenticate(
    shard: &ShardRc,
    stream: &mut TcpStream,
    connect: &Connect,
    method: bytestring::ByteString,
    tail: &mut Tail,
) -> Option<AuthOutcome> {
    let (limits, timeout) = {
        let s = shard.borrow();
        (s.core.limits(ProtocolVersion::V5), s.config.connect_timeout)
    };
    let mut data = connect.properties.authentication_data.clone();
    let mut round = 0;
    loop {
        let step = shard.borrow().core.authenticate(&AuthRequest {
            client_id: &connect.client_id,
            username: connect.username.as_deref(),
            method: &method,
            data: data.as_deref(),
            round,
            reauthenticate: false,
        });
        let mut out = BytesMut::new();
        let challenge = match step {
            AuthStep::Success(data) => return Some(AuthOutcome { method, data }),
            AuthStep::Fail(reason) => {
                info!(client_id = %connect.client_id, "authentication failed: {reason}");
                let connack =
                    ConnAck { session_present: false, reason, properties: Props::default() };
                codec::encode(&Packet::ConnAck(connack), ProtocolVersion::V5, &mut out);
                let _ = stream.write_all(&out).await;
                return None;
            }
            AuthStep::Continue(challenge) => challenge,
        };
        let properties = Properties {
            authentication_method: Some(method.clone()),
            authentication_data: Some(challenge),
            ..Properties::default()
        };
        let auth = Packet::Auth(Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: properties.into(),
        });
        codec::encode(&auth, ProtocolVersion::V5, &mut out);
        stream.write_all(&out).await.ok()?;
        let next = or(
            async { read_packet(shard, stream, tail, &limits).await.and_then(Result::ok) },
            async {
                glommio::timer::sleep(timeout).await;
                None
            },
        )
        .await;
        match next {
            Some(Packet::Auth(auth))
                if auth.reason == ReasonCode::CONTINUE_AUTHENTICATION
                    && auth.properties.authentication_method.as_ref() == Some(&method) =>
            {
                data = auth.properties.into_inner().authentication_data;
                round += 1;
            }
            other => {
                // Anything else in the middle of the exchange breaks it
                // [MQTT-4.12.0-4].
                let kind = other.as_ref().map(kind);
                warn!(client_id = %connect.client_id, "closing connection: [MQTT-4.12.0-4] {kind:?} during authentication");
                shard.borrow_mut().early_protocol_errors += 1;
                return None;
            }
        }
    }
}

enum Event {
    Read(std::io::Result<usize>),
    Woken,
}

/// The read-process-write loop. Returns why the connection ends.
async fn drive(
    shard: &ShardRc,
    stream: &mut TcpStream,
    id: ConnId,
    tail: &mut Tail,
    wake: &Notify,
) -> Close {
    let gate = Rc::clone(&shard.borrow().readers_gate);
    loop {
        let held = {
            let mut s = shard.borrow_mut();
            let now = s.now();
            let held =
                if tail.is_empty() { Held::No } else { s.core.handle_input(now, id, tail.bytes()) };
            s.schedule_pass();
            held
        };
        if held == Held::No {
            tail.settle();
        }
        let output = {
            let mut s = shard.borrow_mut();
            if let Some(close) = s.core.close_reason(id) {
                return close.clone();
            }
            s.core.take_output(id)
        };
        if let Some(output) = output {
            if stream.write_all(&output).await.is_err() {
                return Close::Io;
            }
            let mut s = shard.borrow_mut();
            let now = s.now();
            s.core.handle_written(now, id, output);
            s.schedule_pass();
            continue;
        }
        match held {
            Held::Closing => return Close::Io,
            Held::SubAck => {
                // Released (and woken) when the other shards acknowledge the routes.
                wake.notified().await;
                continue;
            }
            Held::RateLimited(until_ms) => {
                // Over a publish rate limit: read nothing until the bucket refills.
                let now_ms = shard.borrow().now().ms;
                let wait = Duration::from_millis(until_ms.saturating_sub(now_ms));
                or(glommio::timer::sleep(wait), wake.notified()).await;
                continue;
            }
            Held::Backpressure => {
                // A ring is full or a subscriber is behind, so stop reading this
                // publisher until it drains (TCP backpressure reaches the client).
                // Output still flows (woken); clients that only subscribe keep being
                // read, so their acknowledgements free their windows.
                shard.borrow().sync_gates();
                or(gate.wait_open(), wake.notified()).await;
                continue;
            }
            Held::No => {}
        }
        // Let the shard's other tasks run before reading more: under a flood the
        // socket is always readable, and a reader that never yields starves the
        // writers of the connections it fills (measured: 100% QoS 0 loss in fan-in).
        futures_lite::future::yield_now().await;
        let event = or(async { Event::Read(read_more(shard, stream, tail).await) }, async {
            wake.notified().await;
            Event::Woken
        })
        .await;
        match event {
            Event::Read(Ok(0)) | Event::Read(Err(_)) => return Close::Io,
            Event::Read(Ok(_)) | Event::Woken => {}
        }
    }
}

fn kind(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}
