//! Connection plumbing: connecting from a chosen source address, a read
//! buffer that survives partial packets, a single-waiter notification, a
//! shared-stream wrapper for one reader + one writer task, and timeouts.
//! What runs above the socket (TLS, WebSocket) is `transport`'s.

use anyhow::{bail, Context as _};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::FromRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::mqtt::{self, Packet};
use crate::transport::{Stream, Transport};

/// Runs `fut`, failing with a timeout error after `dur`.
pub async fn with_timeout<T>(
    dur: Duration,
    what: &str,
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    futures_lite::future::or(fut, async {
        glommio::timer::sleep(dur).await;
        bail!("{what}: timed out after {:.1}s", dur.as_secs_f64())
    })
    .await
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(ss).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(ss).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Starts a non-blocking TCP connect to `dst`, optionally from source address
/// `src` (port chosen by the kernel at connect time, thanks to
/// IP_BIND_ADDRESS_NO_PORT, so each source address has its own ~28k ports per
/// destination). The connection completes in the background: the first write
/// waits for it (and reports a refused connection).
pub fn start_connect(dst: SocketAddr, src: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let family = if dst.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("socket()");
    }
    // From here on the fd is owned by the glommio stream (closed on drop).
    // SAFETY: `fd` is a freshly created, owned socket.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let setopt = |level, name| {
        // SAFETY: `one` outlives the call; the option takes a c_int.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                std::ptr::addr_of!(one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    setopt(libc::IPPROTO_TCP, libc::TCP_NODELAY);
    if let Some(src) = src {
        if src.is_ipv4() != dst.is_ipv4() {
            bail!("source address {src} and broker address {dst} are not the same IP version");
        }
        setopt(libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT);
        let (ss, len) = sockaddr(&SocketAddr::new(src, 0));
        // SAFETY: `ss` holds a valid sockaddr of length `len`.
        if unsafe { libc::bind(fd, std::ptr::addr_of!(ss).cast(), len) } != 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("bind({src})"));
        }
    }
    let (ss, len) = sockaddr(&dst);
    // SAFETY: `ss` holds a valid sockaddr of length `len`.
    if unsafe { libc::connect(fd, std::ptr::addr_of!(ss).cast(), len) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e).with_context(|| format!("connect({dst})"));
        }
    }
    Ok(stream)
}

/// A growable read buffer holding bytes not yet decoded.
#[derive(Debug)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub fn new(capacity: usize) -> ReadBuf {
        ReadBuf { buf: vec![0; capacity.max(64)], start: 0, end: 0 }
    }

    /// The bytes received and not yet consumed.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes. Makes room first (moving a partial packet to the
    /// front, growing when one packet is bigger than the buffer). Returns 0 at
    /// end of stream.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
        }
        let n = r.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// One task waits, others wake it. Wake-ups are not lost: a notification
/// before the wait makes the wait return at once.
#[derive(Debug, Default)]
pub struct Notify {
    flag: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// Shard-wide events (a periodic tick and the stop signal) that many tasks
/// wait on without each arming a timer: every waiter owns a slot, and
/// `fire` wakes all of them. Waiting is cancellation-safe.
#[derive(Debug, Default)]
pub struct Events {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Option<Waker>>>,
}

impl Events {
    /// A new waiter slot.
    pub fn register(&self) -> usize {
        let mut w = self.wakers.borrow_mut();
        w.push(None);
        w.len() - 1
    }

    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    pub fn fire(&self) {
        self.generation.set(self.generation.get() + 1);
        let wakers: Vec<Waker> =
            self.wakers.borrow_mut().iter_mut().filter_map(Option::take).collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Completes once an event fired after generation `seen`.
    pub fn wait(&self, slot: usize, seen: u64) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.generation.get() != seen {
                return Poll::Ready(());
            }
            let mut w = self.wakers.borrow_mut();
            match &mut w[slot] {
                Some(old) if old.will_wake(cx.waker()) => {}
                other => *other = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }
}

/// A stream shared by one reading and one writing task on the same executor.
/// Each poll borrows the stream only for its own duration.
#[derive(Debug, Clone)]
pub struct Shared(pub Rc<RefCell<Stream>>);

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// An MQTT client connection after a successful CONNACK.
#[derive(Debug)]
pub struct Conn {
    pub stream: Stream,
    pub rbuf: ReadBuf,
    /// Scratch for outgoing packets.
    pub out: Vec<u8>,
    /// The CONNACK's session-present flag: the broker kept this client's
    /// session (and its subscriptions) from an earlier connection.
    pub session_present: bool,
}

/// What the CONNECT of one client looks like.
#[derive(Debug, Clone)]
pub struct ConnectOpts {
    pub broker: SocketAddr,
    pub source: Option<IpAddr>,
    pub clean_session: bool,
    pub keepalive: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub read_buf: usize,
    /// TLS and WebSocket, or plain TCP.
    pub transport: Arc<Transport>,
}

impl Conn {
    /// Connects, sends CONNECT and waits for an accepting CONNACK.
    pub async fn connect(opts: &ConnectOpts, client_id: &str) -> anyhow::Result<Conn> {
        let tcp = start_connect(opts.broker, opts.source)?;
        let mut stream = opts
            .transport
            .open(tcp)
            .await
            .with_context(|| format!("connecting to {}", opts.broker))?;
        let mut out = Vec::with_capacity(256);
        mqtt::encode_connect(
            &mut out,
            &mqtt::Connect {
                client_id,
                clean_session: opts.clean_session,
                keepalive: opts.keepalive,
                username: opts.username.as_deref(),
                password: opts.password.as_deref().map(str::as_bytes),
            },
        );
        stream.write_all(&out).await.with_context(|| format!("connecting to {}", opts.broker))?;
        out.clear();
        let mut conn =
            Conn { stream, rbuf: ReadBuf::new(opts.read_buf), out, session_present: false };
        loop {
            let mut present = false;
            let done = conn.on_setup_packets(|p| match p {
                Packet::ConnAck { code: 0, session_present } => {
                    present = *session_present;
                    Ok(true)
                }
                Packet::ConnAck { code, .. } => bail!(
                    "broker refused client {client_id}: CONNACK code {code} ({})",
                    mqtt::connack_reason(*code)
                ),
                other => bail!("expected CONNACK, got {other:?}"),
            })?;
            conn.session_present = present;
            conn.flush_out().await?;
            if done {
                return Ok(conn);
            }
            conn.read_more("waiting for CONNACK").await?;
        }
    }

    /// Subscribes to `filters` (in packets of at most 64 filters) and waits
    /// for every SUBACK; fails if the broker refuses a filter.
    pub async fn subscribe(&mut self, filters: &[String], qos: u8) -> anyhow::Result<()> {
        for (n, chunk) in filters.chunks(64).enumerate() {
            let pid = n as u16 + 1;
            let f: Vec<(&str, u8)> = chunk.iter().map(|s| (s.as_str(), qos)).collect();
            mqtt::encode_subscribe(&mut self.out, pid, &f);
            self.flush_out().await?;
            loop {
                let done = self.on_setup_packets(|p| match p {
                    Packet::SubAck { pid: got, codes } if *got == pid => {
                        if let Some(i) = codes.iter().position(|&c| c == 0x80) {
                            bail!(
                                "broker refused subscription to {}",
                                chunk[i.min(chunk.len() - 1)]
                            );
                        }
                        if codes.len() != chunk.len() {
                            bail!("SUBACK has {} codes for {} filters", codes.len(), chunk.len());
                        }
                        Ok(true)
                    }
                    other => bail!("expected SUBACK {pid}, got {other:?}"),
                })?;
                self.flush_out().await?;
                if done {
                    break;
                }
                self.read_more("waiting for SUBACK").await?;
            }
        }
        Ok(())
    }

    /// Decodes the buffered packets while setting up. Stray PUBLISH/PUBREL
    /// packets (e.g. queued for a persistent session) are acknowledged and
    /// otherwise ignored; PINGRESP is ignored; anything else goes to `f`,
    /// which returns true when the awaited packet came. Stops after it.
    fn on_setup_packets(
        &mut self,
        mut f: impl FnMut(&Packet<'_>) -> anyhow::Result<bool>,
    ) -> anyhow::Result<bool> {
        let mut used = 0;
        let mut done = false;
        while let Some((p, n)) = mqtt::decode(&self.rbuf.data()[used..])? {
            used += n;
            match p {
                Packet::Publish(p) => match (p.qos, p.pid) {
                    (1, Some(pid)) => mqtt::encode_ack(&mut self.out, mqtt::PUBACK, pid),
                    (2, Some(pid)) => mqtt::encode_ack(&mut self.out, mqtt::PUBREC, pid),
                    _ => {}
                },
                Packet::PubRel(pid) => mqtt::encode_ack(&mut self.out, mqtt::PUBCOMP, pid),
                Packet::PingResp => {}
                other => {
                    if f(&other)? {
                        done = true;
                        break;
                    }
                }
            }
        }
        self.rbuf.consume(used);
        Ok(done)
    }

    async fn read_more(&mut self, what: &str) -> anyhow::Result<()> {
        let n = self.rbuf.fill(&mut self.stream).await.context(what.to_string())?;
        if n == 0 {
            bail!("broker closed the connection while {what}");
        }
        Ok(())
    }

    /// Writes and clears `self.out`.
    pub async fn flush_out(&mut self) -> anyhow::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends DISCONNECT and waits (briefly) for the broker to close, so that
    /// the TIME_WAIT state lands on the broker's side of the connection.
    pub async fn disconnect(mut self, wait: Duration) {
        self.out.clear();
        mqtt::encode_empty(&mut self.out, mqtt::DISCONNECT);
        if self.flush_out().await.is_err() {
            return;
        }
        let _ = with_timeout(wait, "waiting for the broker to close", async {
            let mut sink = [0u8; 4096];
            while self.stream.read(&mut sink).await? > 0 {}
            Ok(())
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its bytes in fixed-size pieces.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        piece: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = self.piece.min(buf.len()).min(self.data.len() - self.pos);
            let pos = self.pos;
            buf[..n].copy_from_slice(&self.data[pos..pos + n]);
            self.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn read_buffer_reassembles_packets_across_reads() {
        let mut wire = Vec::new();
        let payload = vec![7u8; 1000]; // bigger than the initial buffer
        for i in 0..50u16 {
            mqtt::encode_publish(
                &mut wire,
                &mqtt::Publish {
                    dup: false,
                    qos: 1,
                    retain: false,
                    topic: b"t/x",
                    pid: Some(i + 1),
                    payload: &payload[..(i as usize * 20)],
                },
            );
        }
        for piece in [1, 3, 7, 64, 333, 4096] {
            let mut r = Trickle { data: wire.clone(), pos: 0, piece };
            let mut rb = ReadBuf::new(64);
            let mut pids = Vec::new();
            futures_lite::future::block_on(async {
                while rb.fill(&mut r).await.unwrap() > 0 {
                    let mut used = 0;
                    while let Some((p, n)) = mqtt::decode(&rb.data()[used..]).unwrap() {
                        if let Packet::Publish(p) = p {
                            assert_eq!(p.payload.len(), (p.pid.unwrap() as usize - 1) * 20);
                            pids.push(p.pid.unwrap());
                        }
                        used += n;
                    }
                    rb.consume(used);
                }
            });
            assert_eq!(pids, (1..=50).collect::<Vec<u16>>(), "piece {piece}");
            assert!(rb.data().is_empty());
        }
    }

    #[test]
    fn events_wake_every_waiter_once_per_fire() {
        let ev = Events::default();
        let a = ev.register();
        let b = ev.register();
        let g = ev.generation();
        let mut fa = Box::pin(ev.wait(a, g));
        let mut fb = Box::pin(ev.wait(b, g));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(fa.as_mut().poll(&mut cx).is_pending());
        assert!(fb.as_mut().poll(&mut cx).is_pending());
        ev.fire();
        assert!(fa.as_mut().poll(&mut cx).is_ready());
        assert!(fb.as_mut().poll(&mut cx).is_ready());
        // A waiter that saw the new generation waits again.
        let mut fc = Box::pin(ev.wait(a, ev.generation()));
        assert!(fc.as_mut().poll(&mut cx).is_pending());
    }

    #[test]
    fn notify_is_not_lost() {
        let n = Notify::default();
        n.notify();
        futures_lite::future::block_on(n.wait()); // returns at once
    }
}
