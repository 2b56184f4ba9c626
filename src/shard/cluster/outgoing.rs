//! The links this node opens to the others, which it writes: a writer task per
//! other up node connects (again and again while that node is up), over TLS with
//! `cluster_tls_*`, proves the cluster secret if there is one, says who this node
//! is and what it subscribes to, sends the claims still waiting for that node, then
//! writes what the passes append to the link's buffer.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use tracing::{debug, warn};

use crate::cluster::auth::NONCE_LEN;
use crate::cluster::frame::{self, Hello};
use crate::shard::core::RouteChange;
use crate::shard::notify::Notify;
use crate::shard::{until_stopped, ShardRc};

use super::{CONNECT_TIMEOUT, LINK_SOCKET_BUFFER, RECONNECT_DELAY};

/// Writes one node's link: connects (again and again while the node is up), says
/// who this node is and what it subscribes to, then writes what the passes append.
pub(super) async fn write_link(shard: ShardRc, slot: usize, addr: SocketAddr, wake: Rc<Notify>) {
    let wanted = |shard: &ShardRc| {
        let s = shard.borrow();
        let link = s.cluster.as_ref().and_then(|c| c.links.get(slot)).and_then(Option::as_ref);
        // The same link, not a later one for the same slot.
        link.is_some_and(|l| l.wanted && Rc::ptr_eq(&l.wake, &wake))
    };
    let work = async {
        while wanted(&shard) {
            let stream = match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).await {
                Ok(stream) => stream,
                Err(e) => {
                    debug!(%addr, "cluster: link not connected: {e}");
                    glommio::timer::sleep(RECONNECT_DELAY).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            limit_send_buffer(&stream);
            // This side reads only the other node's nonce and its TLS handshake.
            let _ = stream.set_read_timeout(Some(CONNECT_TIMEOUT));
            let tls = shard.borrow().cluster.as_ref().and_then(|c| c.tls.clone());
            let result = match tls {
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                    match futures_rustls::TlsConnector::from(tls.client).connect(name, stream).await
                    {
                        Ok(stream) => run_link(&shard, slot, stream, &wake, &wanted).await,
                        Err(e) => {
                            warn!(%addr, "cluster: TLS handshake with the node failed: {e}");
                            Err(e)
                        }
                    }
                }
                None => run_link(&shard, slot, stream, &wake, &wanted).await,
            };
            if let Err(e) = result {
                debug!(%addr, "cluster: link lost: {e}");
                glommio::timer::sleep(RECONNECT_DELAY).await;
            }
            set_connected(&shard, slot, &wake, false);
        }
    };
    until_stopped(&shard.clone(), work).await;
}

fn limit_send_buffer(stream: &TcpStream) {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the stream owns the descriptor and outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    if let Err(e) = socket2::SockRef::from(&fd).set_send_buffer_size(LINK_SOCKET_BUFFER) {
        debug!("cluster: link send buffer not set: {e}");
    }
}

fn set_connected(shard: &ShardRc, slot: usize, wake: &Rc<Notify>, connected: bool) {
    let mut s = shard.borrow_mut();
    let link = s.cluster.as_mut().and_then(|c| c.links.get_mut(slot)).and_then(Option::as_mut);
    if let Some(link) = link.filter(|l| Rc::ptr_eq(&l.wake, wake)) {
        link.connected = connected;
    }
}

async fn run_link<S>(
    shard: &ShardRc,
    slot: usize,
    mut stream: S,
    wake: &Rc<Notify>,
    wanted: &impl Fn(&ShardRc) -> bool,
) -> std::io::Result<()>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    // With a cluster secret, the other node speaks first: the nonce our Hello
    // proves the secret over.
    let secret = shard.borrow().cluster.as_ref().is_some_and(|c| c.key.is_some());
    let nonce = if secret {
        let mut nonce = [0u8; NONCE_LEN];
        stream.read_exact(&mut nonce).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("no challenge from the node (does it have the cluster secret?): {e}"),
            )
        })?;
        Some(nonce)
    } else {
        None
    };
    let head = {
        let s = shard.borrow();
        let Some(cluster) = s.cluster.as_ref() else { return Ok(()) };
        let mut hello = Hello {
            version: frame::VERSION,
            node_id: cluster.me.node_id,
            boot: cluster.me.boot,
            addr: cluster.me.addr.to_string(),
            name: cluster.me.name.clone(),
            proof: Vec::new(),
        };
        if let (Some(key), Some(nonce)) = (&cluster.key, &nonce) {
            hello.proof = key.link_proof(nonce, &hello.signed_bytes()).to_vec();
        }
        let mut head = BytesMut::new();
        frame::put_hello(&mut head, &hello);
        frame::put_reset(&mut head);
        for change in s.core.node_summary() {
            put_change(&mut head, &change);
        }
        // Claims still waiting for this node, again: a connection that broke may
        // have taken them with it. One that reaches the node twice is answered
        // twice, the second time with nothing (the session left with the first),
        // and this node takes only the first answer.
        for out in cluster.claims_out.values().filter(|out| out.nodes.contains(slot)) {
            head.extend_from_slice(&out.frame);
        }
        head
    };
    stream.write_all(&head).await?;
    // Through TLS, what is written may wait in the session until flushed.
    stream.flush().await?;
    set_connected(shard, slot, wake, true);
    loop {
        if !wanted(shard) {
            return Ok(());
        }
        let batch = {
            let mut s = shard.borrow_mut();
            let link =
                s.cluster.as_mut().and_then(|c| c.links.get_mut(slot)).and_then(Option::as_mut);
            link.map(|l| {
                l.messages = 0;
                l.buf.split()
            })
            .unwrap_or_default()
        };
        if batch.is_empty() {
            wake.notified().await;
            continue;
        }
        stream.write_all(&batch).await?;
        stream.flush().await?;
        // The next pass sees the room this made (publishers paused for a full link).
        shard.borrow_mut().schedule_pass();
    }
}

/// Writes a change of this node's route summary.
pub(super) fn put_change(buf: &mut BytesMut, change: &RouteChange) {
    match change {
        RouteChange::Filter(filter, present) => frame::put_route(buf, filter.as_str(), *present),
        RouteChange::Shared(filter, members) => {
            frame::put_shared_route(buf, filter.as_str(), *members);
        }
        RouteChange::Will(client_id, will) => {
            frame::put_will(buf, client_id, will.as_deref());
        }
    }
}
