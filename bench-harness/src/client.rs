//! The client tasks that run on a generator core: publishers, subscribers,
//! idle connections, and connection-storm attempts.

use anyhow::{bail, Context as _};
use futures_lite::{AsyncWriteExt, FutureExt};
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::cli::WriteMode;
use crate::engine::ShardCtx;
use crate::mqtt::{self, Packet};
use crate::net::{Conn, Notify, ReadBuf, Shared};
use crate::payload::{Header, HEADER_LEN};
use crate::schedule::Schedule;
use crate::stats::SubscriberStats;
use crate::sys::mono_ns;

/// Coalescing publishers stop adding PUBLISH packets to one write at this size.
const BATCH_BYTES: usize = 64 * 1024;
/// Open loop: how long after the window a publisher that fell behind its
/// schedule keeps sending the window's messages (the rest count as unsent).
const BACKLOG_GRACE_NS: u64 = 1_000_000_000;
/// How long to wait for the broker to close after DISCONNECT.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Whether one more packet may join a write that already holds `len` bytes.
pub fn write_has_room(mode: WriteMode, len: usize) -> bool {
    match mode {
        WriteMode::Packet => len == 0,
        WriteMode::Coalesced => len < BATCH_BYTES,
    }
}

/// Length of the whole packet at the front of `buf`, which holds packets we
/// encoded ourselves (so it is complete and well formed).
fn first_packet_len(buf: &[u8]) -> usize {
    let (_, len, hdr) = mqtt::decode_fixed_header(buf)
        .ok()
        .flatten()
        .expect("our own encoded packets have a complete fixed header");
    hdr + len
}

/// Moves to the end of `to` the packets at the front of `from` that may share
/// a write with what `to` holds; returns how many moved.
pub fn move_packets(mode: WriteMode, from: &mut Vec<u8>, to: &mut Vec<u8>) -> u64 {
    let mut moved = 0;
    let mut used = 0;
    while used < from.len() && write_has_room(mode, to.len() + used) {
        used += first_packet_len(&from[used..]);
        moved += 1;
    }
    to.extend(from.drain(..used));
    moved
}

/// Writes the packets in `buf` as the mode says (packet: one write each) and
/// clears it. Returns the number of writes.
async fn write_packets<W: futures_lite::AsyncWrite + Unpin>(
    mode: WriteMode,
    w: &mut W,
    buf: &mut Vec<u8>,
) -> io::Result<u64> {
    let mut writes = 0;
    let mut at = 0;
    while at < buf.len() {
        let end = match mode {
            WriteMode::Packet => at + first_packet_len(&buf[at..]),
            WriteMode::Coalesced => buf.len(),
        };
        w.write_all(&buf[at..end]).await?;
        writes += 1;
        at = end;
    }
    buf.clear();
    Ok(writes)
}

/// What one publisher does.
#[derive(Debug, Clone)]
pub struct PubSpec {
    pub id: u32,
    pub topic: Vec<u8>,
    /// Subscribers that receive each of its messages.
    pub fanout: u64,
}

/// Per-publisher results.
#[derive(Debug, Default, Clone, Copy)]
pub struct PubResult {
    pub sent_w: u64,
    pub sent_total: u64,
    /// Open loop only: messages whose intended time fell in the window.
    pub scheduled_w: u64,
    /// QoS 1/2 publishes never completed (no PUBACK / PUBCOMP) at the end.
    pub unacked: u64,
    /// Writes, and the packets in them (PUBLISH and acknowledgements), over
    /// the whole run.
    pub writes: u64,
    pub packets_written: u64,
    /// Publishers whose last write was still pending at stop (given up).
    pub stalled: u64,
}

/// State shared by a publisher's writer (driver) and its reader task.
#[derive(Debug)]
struct PubState {
    /// QoS 1/2 slot per packet id: 0 free, 1 awaiting PUBACK/PUBREC,
    /// 2 awaiting PUBCOMP.
    slots: RefCell<Vec<u8>>,
    inflight: Cell<u32>,
    /// Packets the reader wants written (PUBREL, acks of stray publishes).
    ctrl: RefCell<Vec<u8>>,
    notify: Notify,
    error: RefCell<Option<anyhow::Error>>,
    closing: Cell<bool>,
    protocol_errors: Cell<u64>,
}

async fn publisher_reader(stream: Shared, mut rbuf: ReadBuf, st: Rc<PubState>) {
    let mut stream = stream;
    let res: anyhow::Result<()> = async {
        loop {
            let n = rbuf.fill(&mut stream).await?;
            if n == 0 {
                if st.closing.get() {
                    return Ok(());
                }
                bail!("broker closed a publisher connection");
            }
            let mut used = 0;
            {
                let mut slots = st.slots.borrow_mut();
                let mut ctrl = st.ctrl.borrow_mut();
                while let Some((p, len)) = mqtt::decode(&rbuf.data()[used..])? {
                    used += len;
                    match p {
                        Packet::PubAck(pid) | Packet::PubComp(pid) => {
                            let want = if matches!(p, Packet::PubAck(_)) { 1 } else { 2 };
                            let s = &mut slots[pid as usize];
                            if *s == want {
                                *s = 0;
                                st.inflight.set(st.inflight.get() - 1);
                            } else {
                                st.protocol_errors.set(st.protocol_errors.get() + 1);
                            }
                        }
                        Packet::PubRec(pid) => {
                            let s = &mut slots[pid as usize];
                            if *s == 1 || *s == 2 {
                                *s = 2;
                                mqtt::encode_ack(&mut ctrl, mqtt::PUBREL, pid);
                            } else {
                                st.protocol_errors.set(st.protocol_errors.get() + 1);
                            }
                        }
                        Packet::PingResp => {}
                        Packet::Publish(p) => match (p.qos, p.pid) {
                            (1, Some(pid)) => mqtt::encode_ack(&mut ctrl, mqtt::PUBACK, pid),
                            (2, Some(pid)) => mqtt::encode_ack(&mut ctrl, mqtt::PUBREC, pid),
                            _ => {}
                        },
                        Packet::PubRel(pid) => mqtt::encode_ack(&mut ctrl, mqtt::PUBCOMP, pid),
                        other => bail!("publisher got an unexpected {other:?}"),
                    }
                }
            }
            rbuf.consume(used);
            st.notify.notify();
        }
    }
    .await;
    if let Err(e) = res {
        if !st.closing.get() {
            *st.error.borrow_mut() = Some(e);
        }
    }
    st.notify.notify();
}

/// Completes once the engine says stop (after the drain) or the run failed.
async fn stopped(ctx: &ShardCtx, slot: usize) {
    loop {
        let seen = ctx.events.generation();
        if ctx.shared.stop.load(Relaxed) || ctx.shared.failed.load(Relaxed) {
            return;
        }
        ctx.events.wait(slot, seen).await;
    }
}

/// Sleeps until the monotonic time `t_ns` (returns at once if it is past).
pub async fn sleep_until(t_ns: u64) {
    let now = mono_ns();
    if t_ns > now {
        glommio::timer::sleep(Duration::from_nanos(t_ns - now)).await;
    }
}

/// Runs one publisher from the start time to the end of the window, then
/// waits for its QoS 1/2 acknowledgements (until the drain ends).
pub async fn run_publisher(
    ctx: Rc<ShardCtx>,
    spec: PubSpec,
    conn: Conn,
    start_ns: u64,
) -> anyhow::Result<PubResult> {
    let plan = &ctx.shared.plan;
    let counters = &ctx.shared.shards[ctx.shard];
    let qos = plan.c.qos;
    let (ws, we) = plan.window(start_ns);
    let window = plan.c.inflight.clamp(1, 65_535);
    let sched = Schedule::new(start_ns, plan.c.rate, plan.publishers as u64, spec.id as u64);
    let keepalive_ns = plan.c.keepalive as u64 * 500_000_000; // half of it
    let mode = plan.c.write_mode;
    let pad = vec![0x5au8; plan.c.payload - HEADER_LEN];

    let Conn { stream, rbuf, .. } = conn;
    let mut stream = Shared(Rc::new(RefCell::new(stream)));
    let st = Rc::new(PubState {
        slots: RefCell::new(vec![0u8; 65_536]),
        inflight: Cell::new(0),
        ctrl: RefCell::new(Vec::new()),
        notify: Notify::default(),
        error: RefCell::new(None),
        closing: Cell::new(false),
        protocol_errors: Cell::new(0),
    });
    let reader = glommio::spawn_local(publisher_reader(stream.clone(), rbuf, st.clone()));

    let mut res = PubResult::default();
    let mut out: Vec<u8> = Vec::with_capacity(BATCH_BYTES + plan.c.payload + 1024);
    let mut seq = 0u64;
    let mut next_pid = 0u16;
    let mut last_write = mono_ns();
    let slot = ctx.events.register();
    sleep_until(start_ns).await;
    loop {
        if let Some(e) = st.error.borrow_mut().take() {
            return Err(e);
        }
        if ctx.shared.failed.load(Relaxed) {
            bail!("aborted");
        }
        out.clear();
        let ctrl_packets = move_packets(mode, &mut st.ctrl.borrow_mut(), &mut out);
        let now = mono_ns();
        // Open loop: every message intended inside the window is sent, late if
        // need be (the lateness shows in its latency), unless more than
        // BACKLOG_GRACE after the window; closed loop: until the window ends.
        let sending = if sched.is_open_loop() {
            sched.intended(seq) < we && now < we + BACKLOG_GRACE_NS
        } else {
            now < we
        };
        let mut n = 0u64;
        let mut n_w = 0u64;
        if sending {
            let mut slots = st.slots.borrow_mut();
            while write_has_room(mode, out.len()) {
                if qos > 0 && st.inflight.get() >= window {
                    break;
                }
                let t = if sched.is_open_loop() {
                    let t = sched.intended(seq);
                    if t > now || t >= we {
                        break;
                    }
                    t
                } else {
                    now
                };
                let pid = if qos > 0 {
                    loop {
                        next_pid = next_pid.wrapping_add(1).max(1);
                        if slots[next_pid as usize] == 0 {
                            break;
                        }
                    }
                    slots[next_pid as usize] = 1;
                    st.inflight.set(st.inflight.get() + 1);
                    next_pid
                } else {
                    0
                };
                mqtt::encode_publish_header(
                    &mut out,
                    false,
                    qos,
                    false,
                    &spec.topic,
                    pid,
                    plan.c.payload,
                );
                Header { publisher: spec.id, seq, intended_ns: t }.append(&mut out);
                out.extend_from_slice(&pad);
                seq += 1;
                n += 1;
                if t >= ws && t < we {
                    n_w += 1;
                }
            }
        }
        if !out.is_empty() {
            // A broker that stops reading its publishers (Mosquitto working off a
            // backlog) can leave this write pending past the drain: give it up at
            // stop rather than hang the whole run.
            let written = async { Some(stream.write_all(&out).await) }
                .or(async {
                    stopped(&ctx, slot).await;
                    None
                })
                .await;
            let Some(written) = written else {
                res.stalled = 1;
                break;
            };
            written.context("publisher write")?;
            res.sent_total += n;
            res.sent_w += n_w;
            res.writes += 1;
            res.packets_written += n + ctrl_packets;
            counters.sent.fetch_add(n, Relaxed);
            counters.expected.fetch_add(n * spec.fanout, Relaxed);
            last_write = now;
            // Packet mode: this yield makes every write a wake-up of its own.
            futures_lite::future::yield_now().await;
            continue;
        }
        if !sending && (qos == 0 || st.inflight.get() == 0 || ctx.shared.stop.load(Relaxed)) {
            break;
        }
        if keepalive_ns > 0 && now - last_write >= keepalive_ns {
            mqtt::encode_empty(&mut st.ctrl.borrow_mut(), mqtt::PINGREQ);
            continue;
        }
        // Nothing to write: wait for an ack, the shard tick (stop flag,
        // keep-alive) or, open loop, the next intended time / end of window.
        let seen = ctx.events.generation();
        let wake = (sending && sched.is_open_loop() && (qos == 0 || st.inflight.get() < window))
            .then(|| sched.intended(seq).min(we))
            .or(sending.then_some(we).filter(|_| qos == 0));
        let woken = st.notify.wait().or(ctx.events.wait(slot, seen));
        match wake {
            Some(t) => woken.or(sleep_until(t)).await,
            None => woken.await,
        }
    }
    ctx.shared.pubs_done.fetch_add(1, Relaxed);
    if sched.is_open_loop() {
        let before = |t: u64| sched.due_count(t.saturating_sub(1));
        res.scheduled_w = before(we) - before(ws);
    }
    res.unacked = st.inflight.get() as u64;
    ctx.protocol_errors.set(ctx.protocol_errors.get() + st.protocol_errors.get());

    if res.stalled > 0 {
        // Part of a packet may be on the wire: nothing more can be said on it.
        return Ok(res);
    }
    // Orderly goodbye: DISCONNECT, then give the reader a moment to see EOF.
    st.closing.set(true);
    let mut bye = std::mem::take(&mut *st.ctrl.borrow_mut());
    mqtt::encode_empty(&mut bye, mqtt::DISCONNECT);
    if stream.write_all(&bye).await.is_ok() {
        let _ = reader
            .or(async {
                glommio::timer::sleep(CLOSE_WAIT).await;
            })
            .await;
    }
    Ok(res)
}

/// Reads more bytes, or returns `None` when a shard event (tick, stop) fires
/// first. Dropping the pending read is safe: glommio only consumes bytes in
/// the read call itself.
async fn read_or_event(ctx: &ShardCtx, slot: usize, conn: &mut Conn) -> Option<io::Result<usize>> {
    let seen = ctx.events.generation();
    let Conn { stream, rbuf, .. } = conn;
    async { Some(rbuf.fill(stream).await) }
        .or(async {
            ctx.events.wait(slot, seen).await;
            None
        })
        .await
}

/// Runs one subscriber until the engine says stop (after the drain).
pub async fn run_subscriber(
    ctx: Rc<ShardCtx>,
    idx: u32,
    mut conn: Conn,
    start_ns: u64,
) -> anyhow::Result<()> {
    let plan = &ctx.shared.plan;
    let counters = &ctx.shared.shards[ctx.shard];
    let (ws, we) = plan.window(start_ns);
    let publishers = plan.publishers;
    let keepalive_ns = plan.c.keepalive as u64 * 500_000_000;
    let mut stats = SubscriberStats::default();
    let slot = ctx.events.register();
    let mut last_write = mono_ns();
    let mut acks: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        if ctx.shared.stop.load(Relaxed) || ctx.shared.failed.load(Relaxed) {
            break;
        }
        match read_or_event(&ctx, slot, &mut conn).await {
            None => {}
            Some(Ok(0)) => bail!("broker closed the connection of subscriber {idx}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context(format!("subscriber {idx} read")),
        }
        let now = mono_ns();
        let mut used = 0;
        let mut n = 0u64;
        {
            let mut hist = ctx.hist.borrow_mut();
            while let Some((p, len)) = mqtt::decode(&conn.rbuf.data()[used..])? {
                used += len;
                match p {
                    Packet::Publish(p) => {
                        n += 1;
                        match Header::parse(p.payload) {
                            Some(h) if h.publisher < publishers => {
                                let t = h.intended_ns;
                                let in_w = t >= ws && t < we;
                                if stats.on_message(h.publisher, h.seq, in_w) {
                                    // A clock read per batch: messages decoded from one read
                                    // all arrived by `now`.
                                    let _ = hist.record(now.saturating_sub(t).max(1));
                                }
                            }
                            _ => stats.tally.corrupt += 1,
                        }
                        match (p.qos, p.pid) {
                            (1, Some(pid)) => mqtt::encode_ack(&mut acks, mqtt::PUBACK, pid),
                            (2, Some(pid)) => mqtt::encode_ack(&mut acks, mqtt::PUBREC, pid),
                            _ => {}
                        }
                    }
                    Packet::PubRel(pid) => mqtt::encode_ack(&mut acks, mqtt::PUBCOMP, pid),
                    Packet::PingResp => {}
                    other => bail!("subscriber {idx} got an unexpected {other:?}"),
                }
            }
        }
        conn.rbuf.consume(used);
        if n > 0 {
            counters.received.fetch_add(n, Relaxed);
            if now >= ws && now < we {
                counters.arrived_w.fetch_add(n, Relaxed);
            }
        }
        if keepalive_ns > 0 && now - last_write >= keepalive_ns {
            mqtt::encode_empty(&mut acks, mqtt::PINGREQ);
        }
        if !acks.is_empty() {
            write_packets(plan.c.write_mode, &mut conn.stream, &mut acks)
                .await
                .context("subscriber ack write")?;
            last_write = now;
        }
        futures_lite::future::yield_now().await;
    }
    ctx.tally.borrow_mut().add(&stats.tally);
    conn.disconnect(CLOSE_WAIT).await;
    Ok(())
}

/// Holds one idle connection until stop, answering keep-alive.
pub async fn run_idle(ctx: Rc<ShardCtx>, mut conn: Conn) -> anyhow::Result<()> {
    let keepalive_ns = ctx.shared.plan.c.keepalive as u64 * 500_000_000;
    let slot = ctx.events.register();
    let mut last_write = mono_ns();
    loop {
        if ctx.shared.stop.load(Relaxed) || ctx.shared.failed.load(Relaxed) {
            break;
        }
        match read_or_event(&ctx, slot, &mut conn).await {
            None => {}
            Some(Ok(0)) => bail!("broker closed an idle connection"),
            Some(Ok(_)) => {
                let mut used = 0;
                while let Some((p, len)) = mqtt::decode(&conn.rbuf.data()[used..])? {
                    used += len;
                    match p {
                        Packet::PingResp => {}
                        Packet::Publish(p) => match (p.qos, p.pid) {
                            (1, Some(pid)) => mqtt::encode_ack(&mut conn.out, mqtt::PUBACK, pid),
                            (2, Some(pid)) => mqtt::encode_ack(&mut conn.out, mqtt::PUBREC, pid),
                            _ => {}
                        },
                        Packet::PubRel(pid) => mqtt::encode_ack(&mut conn.out, mqtt::PUBCOMP, pid),
                        other => bail!("idle connection got an unexpected {other:?}"),
                    }
                }
                conn.rbuf.consume(used);
            }
            Some(Err(e)) => return Err(e).context("idle read"),
        }
        let now = mono_ns();
        if keepalive_ns > 0 && now - last_write >= keepalive_ns {
            mqtt::encode_empty(&mut conn.out, mqtt::PINGREQ);
            last_write = now;
        }
        conn.flush_out().await?;
    }
    conn.disconnect(CLOSE_WAIT).await;
    Ok(())
}

/// One device of the `connections` scenario.
#[derive(Debug, Clone)]
pub struct Device {
    pub idx: u32,
    /// Its command topic: subscribed to, and where its trickle goes.
    pub topic: Vec<u8>,
    /// Trickle: (time of a publish, period), both monotonic ns.
    pub trickle: Option<(u64, u64)>,
}

/// The first point of the grid `first + k * period` at or after `now`.
fn next_on_grid(first: u64, period: u64, now: u64) -> u64 {
    if now <= first {
        first
    } else {
        first + (now - first).div_ceil(period) * period
    }
}

/// Holds one device connection: answers keep-alive, publishes its trickle,
/// acknowledges what the broker delivers. Leaves at stop with DISCONNECT or,
/// when `drop_at_storm`, at the storm without one (the socket just closes).
pub async fn run_device(
    ctx: Rc<ShardCtx>,
    mut conn: Conn,
    dev: Device,
    drop_at_storm: bool,
) -> anyhow::Result<()> {
    let plan = &ctx.shared.plan;
    let counters = &ctx.shared.shards[ctx.shard];
    let qos = plan.c.qos;
    let keepalive_ns = plan.c.keepalive as u64 * 500_000_000;
    let slot = ctx.events.register();
    let mut last_write = mono_ns();
    let mut next_pub = dev.trickle.map(|(first, period)| next_on_grid(first, period, last_write));
    let mut seq = 0u64;
    let mut pid = 0u16;
    let pad = vec![0x5au8; plan.c.payload - HEADER_LEN];
    loop {
        let shared = &ctx.shared;
        if shared.stop.load(Relaxed) || shared.failed.load(Relaxed) {
            break;
        }
        if drop_at_storm && shared.storm.load(Relaxed) {
            return Ok(());
        }
        let seen = ctx.events.generation();
        let woke = {
            let Conn { stream, rbuf, .. } = &mut conn;
            let read = async { Some(rbuf.fill(stream).await) };
            let event = async {
                ctx.events.wait(slot, seen).await;
                None
            };
            match next_pub {
                Some(t) => {
                    read.or(event)
                        .or(async {
                            sleep_until(t).await;
                            None
                        })
                        .await
                }
                None => read.or(event).await,
            }
        };
        let now = mono_ns();
        match woke {
            None => {}
            Some(Ok(0)) => bail!("broker closed the connection of device {}", dev.idx),
            Some(Err(e)) => return Err(e).context(format!("device {} read", dev.idx)),
            Some(Ok(_)) => {
                let mut used = 0;
                while let Some((p, len)) = mqtt::decode(&conn.rbuf.data()[used..])? {
                    used += len;
                    match p {
                        Packet::PingResp | Packet::PubAck(_) => {}
                        Packet::Publish(p) => {
                            counters.received.fetch_add(1, Relaxed);
                            if let Some(h) = Header::parse(p.payload) {
                                let lat = now.saturating_sub(h.intended_ns).max(1);
                                let _ = ctx.hist.borrow_mut().record(lat);
                            }
                            match (p.qos, p.pid) {
                                (1, Some(id)) => mqtt::encode_ack(&mut conn.out, mqtt::PUBACK, id),
                                (2, Some(id)) => mqtt::encode_ack(&mut conn.out, mqtt::PUBREC, id),
                                _ => {}
                            }
                        }
                        Packet::PubRec(id) => mqtt::encode_ack(&mut conn.out, mqtt::PUBREL, id),
                        Packet::PubRel(id) => mqtt::encode_ack(&mut conn.out, mqtt::PUBCOMP, id),
                        Packet::PubComp(_) => {}
                        other => bail!("device {} got an unexpected {other:?}", dev.idx),
                    }
                }
                conn.rbuf.consume(used);
            }
        }
        if let (Some(t), Some((_, period))) = (next_pub, dev.trickle) {
            if now >= t {
                if qos > 0 {
                    pid = pid.wrapping_add(1).max(1);
                }
                let id = if qos > 0 { pid } else { 0 };
                let out = &mut conn.out;
                mqtt::encode_publish_header(out, false, qos, false, &dev.topic, id, plan.c.payload);
                Header { publisher: dev.idx, seq, intended_ns: t }.append(out);
                out.extend_from_slice(&pad);
                seq += 1;
                counters.sent.fetch_add(1, Relaxed);
                next_pub = Some(next_on_grid(t + period, period, now));
            }
        }
        if keepalive_ns > 0 && now - last_write >= keepalive_ns {
            mqtt::encode_empty(&mut conn.out, mqtt::PINGREQ);
        }
        if !conn.out.is_empty() {
            last_write = now;
        }
        write_packets(plan.c.write_mode, &mut conn.stream, &mut conn.out)
            .await
            .context("device write")?;
    }
    conn.disconnect(CLOSE_WAIT).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A writer that keeps every write call apart.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl futures_lite::AsyncWrite for Writes {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// PUBACK 1, PINGREQ, PUBREL 2: three packets of 4, 2 and 4 bytes.
    fn three_packets() -> Vec<u8> {
        let mut b = Vec::new();
        mqtt::encode_ack(&mut b, mqtt::PUBACK, 1);
        mqtt::encode_empty(&mut b, mqtt::PINGREQ);
        mqtt::encode_ack(&mut b, mqtt::PUBREL, 2);
        b
    }

    #[test]
    fn trickle_grid_is_never_behind_now() {
        assert_eq!(next_on_grid(100, 10, 50), 100);
        assert_eq!(next_on_grid(100, 10, 100), 100);
        assert_eq!(next_on_grid(100, 10, 101), 110);
        assert_eq!(next_on_grid(100, 10, 125), 130);
    }

    #[test]
    fn packet_mode_puts_one_packet_in_a_write() {
        assert!(write_has_room(WriteMode::Packet, 0));
        assert!(!write_has_room(WriteMode::Packet, 1));
        let mut from = three_packets();
        let mut to = Vec::new();
        assert_eq!(move_packets(WriteMode::Packet, &mut from, &mut to), 1);
        assert_eq!(to, three_packets()[..4]);
        assert_eq!(from, three_packets()[4..]);
        // Nothing joins a write that already holds a packet.
        assert_eq!(move_packets(WriteMode::Packet, &mut from, &mut to), 0);
        assert_eq!(from.len(), 6);
    }

    #[test]
    fn coalesced_mode_fills_a_write_up_to_the_batch_size() {
        assert!(write_has_room(WriteMode::Coalesced, BATCH_BYTES - 1));
        assert!(!write_has_room(WriteMode::Coalesced, BATCH_BYTES));
        let mut from = three_packets();
        let mut to = vec![0u8; 7];
        assert_eq!(move_packets(WriteMode::Coalesced, &mut from, &mut to), 3);
        assert!(from.is_empty());
        assert_eq!(to[7..], three_packets());
    }

    #[test]
    fn write_packets_writes_each_packet_apart_in_packet_mode() {
        let mut w = Writes::default();
        let mut buf = three_packets();
        let n = futures_lite::future::block_on(write_packets(WriteMode::Packet, &mut w, &mut buf))
            .unwrap();
        assert_eq!(n, 3);
        assert!(buf.is_empty());
        let lens: Vec<usize> = w.0.iter().map(Vec::len).collect();
        assert_eq!(lens, [4, 2, 4]);
        assert_eq!(w.0.concat(), three_packets());

        let mut w = Writes::default();
        let mut buf = three_packets();
        let n =
            futures_lite::future::block_on(write_packets(WriteMode::Coalesced, &mut w, &mut buf))
                .unwrap();
        assert_eq!((n, w.0.len()), (1, 1));
        assert_eq!(w.0[0], three_packets());
    }
}
