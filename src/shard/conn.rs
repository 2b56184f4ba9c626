//! The task of one client connection: read, decode, hand packets to the shard, write
//! what the shard encoded for the client.
//!
//! Owner: the shard that owns the client id. A connection accepted elsewhere reads
//! its CONNECT there, then moves here (`handshake` -> hand-off -> `serve`).

use std::cell::RefCell;
use std::os::fd::IntoRawFd;
use std::os::unix::io::FromRawFd;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::future::or;
use futures_lite::{AsyncBufReadExt, AsyncWriteExt};
use glommio::net::{Preallocated, TcpStream};
use tracing::{debug, info, warn};

use crate::hooks::{AuthRequest, AuthStep};
use crate::net;
use crate::protocol::{
    codec, Auth, ConnAck, Connect, DecodeError, Disconnect, Limits, Packet, Properties, Props,
    ProtocolVersion, ReasonCode,
};
use crate::router::owner_shard;

use super::mesh::{CtrlMsg, Handoff};
use super::state::{AuthOutcome, Close, ConnIo, ShardState};

type Stream = TcpStream<Preallocated>;
type Shard = Rc<RefCell<ShardState>>;

fn limits(shard: &Shard, protocol: ProtocolVersion) -> Limits {
    Limits { packet_size_max: shard.borrow().config.packet_size_max, protocol }
}

/// Reads more bytes into `buf`. Returns 0 at end of stream.
///
/// Readiness-based (glommio polls, then `recv`s), so dropping this future when another
/// event wins a race loses no data.
async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> std::io::Result<usize> {
    let chunk = stream.fill_buf().await?;
    let n = chunk.len();
    buf.extend_from_slice(chunk);
    stream.consume(n);
    Ok(n)
}

/// A freshly accepted connection: read CONNECT (within `connect_timeout_secs`), then
/// serve it here or hand it to the shard that owns its client id.
pub(crate) async fn handshake(shard: Shard, stream: TcpStream) {
    // MQTT traffic is small packets whose latency matters; Nagle only delays them.
    if let Err(e) = stream.set_nodelay(true) {
        debug!("set_nodelay: {e}");
    }
    let (read_buffer, timeout) = {
        let s = shard.borrow();
        (s.config.read_buffer_bytes, Duration::from_secs(s.config.connect_timeout_secs))
    };
    let peer = stream.peer_addr().ok();
    let mut stream = stream.buffered_with(Preallocated::new(read_buffer));
    let mut buf = BytesMut::with_capacity(1024);
    let limits = limits(&shard, ProtocolVersion::V311);
    let stopped = Rc::clone(&shard.borrow().stopped);
    let first = or(
        async {
            loop {
                match codec::decode(&mut buf, &limits) {
                    Ok(Some(packet)) => return Ok(packet),
                    Ok(None) => {}
                    Err(e) => return Err(Some(e)),
                }
                match read_more(&mut stream, &mut buf).await {
                    Ok(0) | Err(_) => return Err(None),
                    Ok(_) => {}
                }
            }
        },
        or(
            async {
                glommio::timer::sleep(timeout).await;
                shard.borrow_mut().stats.connect_timeouts += 1;
                Err(None)
            },
            async {
                stopped.wait().await;
                Err(None)
            },
        ),
    )
    .await;
    let connect = match first {
        Ok(Packet::Connect(connect)) => connect,
        Ok(other) => {
            warn!(?peer, "closing connection: [MQTT-3.1.0-1] first packet is {:?}", kind(&other));
            shard.borrow_mut().stats.protocol_errors += 1;
            return;
        }
        Err(Some(DecodeError::UnsupportedProtocolLevel(level))) => {
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
        Err(Some(e)) => {
            warn!(?peer, "closing connection before CONNECT: {e}");
            shard.borrow_mut().stats.protocol_errors += 1;
            return;
        }
        Err(None) => return,
    };
    let (me, shards) = {
        let s = shard.borrow();
        (s.id, s.shards)
    };
    let owner = if connect.client_id.is_empty() {
        me
    } else {
        owner_shard(connect.client_id.as_bytes(), shards)
    };
    if owner == me {
        serve(shard, stream, connect, buf).await;
        return;
    }
    // The session lives on `owner`: move the socket there with the bytes already read.
    match net::dup_socket(&stream) {
        Ok(fd) => {
            drop(stream);
            let handoff = Handoff { fd, connect, buffered: buf.freeze() };
            let mut s = shard.borrow_mut();
            s.stats.handoffs_out += 1;
            s.ctrl_out.push(owner, CtrlMsg::Handoff(Box::new(handoff)));
            s.end_of_pass();
        }
        Err(e) => warn!(?peer, "cannot hand the connection to shard {owner}: {e}"),
    }
}

/// Serves a connection handed over by another shard.
pub(crate) async fn serve_handoff(shard: Shard, handoff: Handoff) {
    let read_buffer = shard.borrow().config.read_buffer_bytes;
    // SAFETY: the descriptor is an open TCP socket that this hand-off owned alone.
    let stream = unsafe { TcpStream::from_raw_fd(handoff.fd.into_raw_fd()) };
    let stream = stream.buffered_with(Preallocated::new(read_buffer));
    shard.borrow_mut().stats.handoffs_in += 1;
    serve(shard, stream, handoff.connect, BytesMut::from(&handoff.buffered[..])).await;
}

/// Runs an MQTT connection on its owner shard, from CONNECT to close.
async fn serve(shard: Shard, mut stream: Stream, connect: Connect, mut buf: BytesMut) {
    let auth = match connect.properties.authentication_method.clone() {
        Some(method) if connect.protocol.is_v5() => {
            match authenticate(&shard, &mut stream, &connect, method, &mut buf).await {
                Some(outcome) => Some(outcome),
                None => return,
            }
        }
        _ => None,
    };
    let mut refusal = BytesMut::new();
    let conn = shard.borrow_mut().connect(connect, auth, &mut refusal);
    let Some(conn) = conn else {
        let _ = stream.write_all(&refusal).await;
        return;
    };
    debug!(client_id = %conn.client_id, "connected");
    let close = drive(&shard, &mut stream, &conn, buf).await;
    if conn.protocol.is_v5() {
        // The broker says why it closes an MQTT 5 connection [MQTT-4.13.2-1].
        if let Some(reason) = close.reason_code() {
            let packet = Packet::Disconnect(Disconnect::new(reason));
            codec::encode(&packet, conn.protocol, &mut conn.out.borrow_mut());
        }
    }
    // Whatever was encoded before the close (e.g. a PUBACK) still goes out.
    let _ = write_out(&shard, &mut stream, &conn).await;
    {
        let mut s = shard.borrow_mut();
        s.disconnect(&conn, &close);
        s.end_of_pass();
    }
    match &close {
        Close::Violation(v) => warn!(client_id = %conn.client_id, "closing connection: {v}"),
        Close::Malformed(e) => warn!(client_id = %conn.client_id, "closing connection: {e}"),
        Close::Limit(limit) => {
            warn!(client_id = %conn.client_id, "closing connection: over {limit}")
        }
        Close::KeepAliveTimeout => {
            info!(client_id = %conn.client_id, "closing connection: keep-alive timeout [MQTT-3.1.2-24]");
        }
        other => debug!(client_id = %conn.client_id, reason = ?other, "disconnected"),
    }
}

/// Carries an MQTT 5 enhanced authentication exchange to its end before CONNACK
/// [MQTT-4.12]: CONNECT, then AUTH 0x18 both ways until the authenticator accepts.
/// Returns `None` when the connection was refused (CONNACK sent) or lost.
async fn authenticate(
    shard: &Shard,
    stream: &mut Stream,
    connect: &Connect,
    method: bytestring::ByteString,
    buf: &mut BytesMut,
) -> Option<AuthOutcome> {
    let limits = limits(shard, ProtocolVersion::V5);
    let timeout = Duration::from_secs(shard.borrow().config.connect_timeout_secs);
    let mut data = connect.properties.authentication_data.clone();
    let mut round = 0;
    loop {
        let step = shard.borrow().authenticate(&AuthRequest {
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
            async {
                loop {
                    match codec::decode(buf, &limits) {
                        Ok(Some(packet)) => return Some(packet),
                        Ok(None) => {}
                        Err(_) => return None,
                    }
                    match read_more(stream, buf).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                }
            },
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
                shard.borrow_mut().stats.protocol_errors += 1;
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
async fn drive(shard: &Shard, stream: &mut Stream, conn: &Rc<ConnIo>, mut buf: BytesMut) -> Close {
    let limits = limits(shard, conn.protocol);
    let gate = Rc::clone(&shard.borrow().readers_gate);
    loop {
        // Whether whole packets are left in `buf` (processing paused mid-buffer):
        // then nothing more is read until they are processed, so `buf` stays bounded.
        let mut pending = true;
        {
            let mut s = shard.borrow_mut();
            // A publisher stops mid-buffer when backpressure starts; the rest of its
            // buffer waits for the gate (`pending`), so nothing more is read meanwhile.
            while conn.subacks_pending.get() == 0
                && conn.paused_until.get().is_none()
                && !(gate.is_closed() && conn.pauses_for_backpressure())
            {
                match codec::decode(&mut buf, &limits) {
                    Ok(Some(packet)) => {
                        if let Err(close) = s.handle_packet(conn, packet) {
                            s.end_of_pass();
                            return close;
                        }
                    }
                    Ok(None) => {
                        pending = false;
                        break;
                    }
                    Err(e) => {
                        s.end_of_pass();
                        return Close::Malformed(e);
                    }
                }
            }
            s.end_of_pass();
        }
        if let Some(close) = conn.close.borrow().clone() {
            return close;
        }
        if write_out(shard, stream, conn).await.is_err() {
            return Close::Io;
        }
        if let Some(until) = conn.paused_until.get() {
            // Over a publish rate limit: read nothing until the bucket refills.
            let now = std::time::Instant::now();
            if until <= now {
                conn.paused_until.set(None);
            } else {
                or(glommio::timer::sleep(until - now), conn.wake.notified()).await;
            }
            continue;
        }
        if conn.subacks_pending.get() > 0 {
            // Released (and woken) when the other shards acknowledge the routes.
            conn.wake.notified().await;
            continue;
        }
        if gate.is_closed() && conn.pauses_for_backpressure() {
            // Backpressure: a ring is full or a subscriber is behind, so stop reading
            // this publisher until it drains (TCP backpressure reaches the client).
            // Output still flows (woken below); clients that only subscribe keep
            // being read, so their acknowledgements free their windows.
            or(gate.wait_open(), conn.wake.notified()).await;
            continue;
        }
        // Let the shard's other tasks run before reading more: under a flood the
        // socket is always readable, and a reader that never yields starves the
        // writers of the connections it fills (measured: 100% QoS 0 loss in fan-in).
        futures_lite::future::yield_now().await;
        if pending {
            continue;
        }
        let event = or(async { Event::Read(read_more(stream, &mut buf).await) }, async {
            conn.wake.notified().await;
            Event::Woken
        })
        .await;
        match event {
            Event::Read(Ok(0)) | Event::Read(Err(_)) => return Close::Io,
            Event::Read(Ok(_)) | Event::Woken => {}
        }
    }
}

/// Writes everything the shard encoded for this client, in one write per batch.
async fn write_out(shard: &Shard, stream: &mut Stream, conn: &Rc<ConnIo>) -> std::io::Result<()> {
    loop {
        let mut pending = std::mem::take(&mut *conn.out.borrow_mut());
        if pending.is_empty() {
            *conn.out.borrow_mut() = pending;
            return Ok(());
        }
        stream.write_all(&pending).await?;
        conn.last_progress.set(std::time::Instant::now());
        let mut s = shard.borrow_mut();
        s.stats.bytes_out += pending.len() as u64;
        pending.clear();
        {
            let mut out = conn.out.borrow_mut();
            if out.is_empty() {
                // Keep the allocation for the next batch.
                *out = pending;
            }
        }
        // The buffer has room again: messages queued because it was full (QoS 0
        // over out_buffer_max_bytes) move into it. If that caught the client up,
        // end_of_pass lets paused publishers and rings go again.
        s.refill(conn);
        s.end_of_pass();
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
