//! The node links other nodes open to this one, which it reads: each begins with
//! `Hello` (who the node is), then frames that go to the core as they decode, with a
//! look at the gates every few frames (a link waits while this node's subscribers
//! cannot take more).

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::BytesMut;
use bytestring::ByteString;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::spawn_local;
use tracing::{debug, warn};

use crate::cluster::auth::NONCE_LEN;
use crate::cluster::frame::{self, Answer, Frame, Hello};
use crate::cluster::membership::Peer;
use crate::router::owner_shard;
use crate::shard::core::{NodeMsg, Now};
use crate::shard::sockets::ClaimMsg;
use crate::shard::{until_stopped, Shard, ShardRc};

use super::{ClusterIo, READ_CHUNK, RECONNECT_DELAY};

/// How long a node that opens a link has for its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Accepts the links other nodes open to this one.
pub(super) async fn accept_links(shard: ShardRc, listener: TcpListener) {
    until_stopped(&shard.clone(), async move {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    spawn_local(read_link(Rc::clone(&shard), stream)).detach();
                }
                Err(e) => {
                    debug!("cluster: accept: {e}");
                    glommio::timer::sleep(RECONNECT_DELAY).await;
                }
            }
        }
    })
    .await;
}

async fn read_link(shard: ShardRc, stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    let tls = shard.borrow().cluster.as_ref().and_then(|c| c.tls.clone());
    let read = async {
        match tls {
            Some(tls) => {
                // The handshake is bounded; the link then may be quiet for long.
                stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(|e| e.to_string())?;
                let acceptor = futures_rustls::TlsAcceptor::from(tls.server);
                let stream = acceptor
                    .accept(stream)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                stream.get_ref().0.set_read_timeout(None).map_err(|e| e.to_string())?;
                read_frames(&shard, stream).await
            }
            None => read_frames(&shard, stream).await,
        }
    };
    if let Err(reason) = until_stopped_result(&shard, read).await {
        warn!(?peer, "cluster: incoming link closed: {reason}");
        if let Some(cluster) = shard.borrow_mut().cluster.as_mut() {
            cluster.links_refused += 1;
        }
    }
}

async fn until_stopped_result(
    shard: &ShardRc,
    work: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    let stopped = Rc::clone(&shard.borrow().stopped);
    futures_lite::future::or(work, async move {
        stopped.wait().await;
        Ok(())
    })
    .await
}

/// Reads an incoming link until the other node closes it; an error is a reason to
/// close it.
async fn read_frames<S>(shard: &ShardRc, mut stream: S) -> Result<(), String>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    let limits = match shard.borrow().cluster.as_ref() {
        Some(cluster) => cluster.frame_limits,
        None => return Ok(()),
    };
    // With a cluster secret, the link starts with a fresh nonce, which the other
    // node's Hello must prove the secret over.
    let nonce = if shard.borrow().cluster.as_ref().is_some_and(|c| c.key.is_some()) {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| format!("no random nonce: {e}"))?;
        stream.write_all(&nonce).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        Some(nonce)
    } else {
        None
    };
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut slot: Option<usize> = None;
    let gate = Rc::clone(&shard.borrow().links_gate);
    loop {
        // A subscriber here is behind: what was read waits, and so does the socket,
        // so the other node's link fills and pauses the publishers there, as a ring
        // does between shards.
        gate.wait_open().await;
        if take_frames(shard, &mut buf, limits, &mut slot, nonce.as_ref())? {
            continue;
        }
        glommio::yield_if_needed().await;
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Frames handed to the core between two looks at the gates.
const FRAMES_PER_CHECK: usize = 32;

/// Hands the whole frames in `buf` to the core, until a subscriber here falls
/// behind; whether frames were left for when it caught up.
fn take_frames(
    shard: &ShardRc,
    buf: &mut BytesMut,
    limits: frame::Limits,
    slot: &mut Option<usize>,
    nonce: Option<&[u8; NONCE_LEN]>,
) -> Result<bool, String> {
    let mut guard = shard.borrow_mut();
    let now = guard.now();
    let s = &mut *guard;
    let mut claims = Vec::new();
    let result = take_frames_into(s, now, buf, limits, slot, nonce, &mut claims);
    for (dest, msg) in claims {
        s.send_claim_msg(dest, msg);
    }
    // Close the gate now if these frames backed a subscriber up, not at the end
    // of the pass: this task would read on until then.
    s.core.refresh_gates(now);
    s.sync_gates();
    s.schedule_pass();
    result
}

fn take_frames_into(
    s: &mut Shard,
    now: Now,
    buf: &mut BytesMut,
    limits: frame::Limits,
    slot: &mut Option<usize>,
    nonce: Option<&[u8; NONCE_LEN]>,
    claims: &mut Vec<(usize, ClaimMsg)>,
) -> Result<bool, String> {
    let mut taken = 0;
    loop {
        taken += 1;
        if taken % FRAMES_PER_CHECK == 0 {
            s.core.refresh_gates(now);
            if s.core.links_paused() {
                return Ok(true);
            }
        }
        let Some(cluster) = s.cluster.as_mut() else { return Ok(false) };
        let frame = match frame::decode(buf, limits) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        };
        match (frame, *slot) {
            (Frame::Hello(hello), None) => {
                *slot = Some(accept_hello(cluster, &hello, nonce)?);
            }
            (Frame::Hello(_), Some(_)) => return Err("a second hello".to_owned()),
            (_, None) => return Err("no hello first".to_owned()),
            (Frame::Reset, Some(node)) => {
                cluster.wills_mut(node).take();
                s.core.handle_node(now, NodeMsg::Reset(node));
            }
            (Frame::Will { client_id, will }, Some(node)) => {
                let bytes_max = cluster.wills_bytes_max;
                let client_id = ByteString::from(client_id);
                // The client is connected again: a will published before is no
                // longer the one its old node may recover.
                cluster.wills_published.remove(&client_id);
                if !cluster.wills_mut(node).set(client_id, will, bytes_max) {
                    cluster.wills_dropped += 1;
                }
            }
            (Frame::Route { filter, present }, Some(node)) => {
                s.core.handle_node(now, NodeMsg::Route { node, filter, present });
            }
            (Frame::SharedRoute { filter, members }, Some(node)) => {
                s.core.handle_node(now, NodeMsg::Shared { node, filter, members });
            }
            (Frame::Retain(message), Some(_)) => s.core.handle_remote_retain(now, message),
            (Frame::SharedPublish { filter, message }, Some(node)) => {
                cluster.figures_mut(node).messages_in += 1;
                s.core.handle_remote_shared(now, filter, message);
            }
            (Frame::Publish(message), Some(node)) => {
                cluster.figures_mut(node).messages_in += 1;
                s.core.handle_remote_publish(now, message);
            }
            (Frame::Claim { claim, stamp, client_id, kind }, Some(node)) => {
                let node_id = cluster.membership.nodes().get(node).map_or(0, |n| n.peer.node_id);
                let client_id = ByteString::from(client_id);
                let owner = owner_shard(client_id.as_bytes(), s.core.shards);
                let will_published = cluster.wills_published.contains(&client_id);
                let msg = ClaimMsg::Remote {
                    node,
                    node_id,
                    claim,
                    stamp,
                    client_id,
                    kind,
                    will_published,
                };
                claims.push((owner, msg));
            }
            (Frame::Handover { claim, client_id, answer }, Some(node)) => {
                let waiting =
                    cluster.claims_out.get(&claim).is_some_and(|c| c.nodes.contains(node));
                if !waiting {
                    // Too late for its claim (given up on): a session in it is kept
                    // here as an offline one rather than lost.
                    if let Answer::Session(image) = answer {
                        let client_id = ByteString::from(client_id);
                        let owner = owner_shard(client_id.as_bytes(), s.core.shards);
                        claims.push((owner, ClaimMsg::Late { client_id, image }));
                    }
                    continue;
                }
                let Some(out) = cluster.claims_out.get_mut(&claim) else { continue };
                out.nodes.remove(node);
                if out.nodes.is_empty() {
                    cluster.claims_out.remove(&claim);
                }
                claims.push(((claim >> 48) as usize, ClaimMsg::Answered { claim, answer }));
            }
        }
    }
    Ok(false)
}

/// The slot of the node a link says it comes from.
fn accept_hello(
    cluster: &mut ClusterIo,
    hello: &Hello,
    nonce: Option<&[u8; NONCE_LEN]>,
) -> Result<usize, String> {
    if hello.version != frame::VERSION {
        return Err(format!(
            "link protocol version {} (this node speaks {})",
            hello.version,
            frame::VERSION
        ));
    }
    if let Some(key) = &cluster.key {
        let proven =
            nonce.is_some_and(|n| key.check_link_proof(n, &hello.signed_bytes(), &hello.proof));
        if !proven {
            cluster.auth_failures += 1;
            return Err(format!(
                "node {:?} at {} does not prove the cluster secret (cluster_secret_file)",
                hello.name, hello.addr
            ));
        }
    }
    let addr: SocketAddr =
        hello.addr.parse().map_err(|_| format!("bad cluster address {:?}", hello.addr))?;
    if addr == cluster.me.addr {
        return Err("a link from this node's own address".to_owned());
    }
    if hello.node_id == cluster.me.node_id {
        warn!(
            node = %hello.name,
            node_id = hello.node_id,
            "cluster: another node has this node's node_id: message ids may repeat; give each node its own"
        );
    }
    let peer = Peer { addr, boot: hello.boot, node_id: hello.node_id, name: hello.name.clone() };
    cluster.membership.slot_of(&peer).ok_or_else(|| "too many nodes".to_owned())
}
