//! The shard's socket ring: an io_uring instance of the shard's own, beside
//! glommio's, that every client socket and listener of the shard goes through.
//!
//! Why not glommio's sockets: glommio 0.9 reads a socket with a poll and a `recv`
//! per readiness, and every connection is a task with a poll source. Measured with
//! an external generator (one packet per write, 100 publishers at 100 msgs/s), that
//! read path was 35% of the broker's CPU and the task wake-ups around it 29%, while
//! the MQTT work was 3% (bench-harness/results/2026-12-07-core-rebuild/).
//!
//! - Reads are multishot receives (`IORING_RECV_MULTISHOT`) into one ring of
//!   provided buffers per shard: one receive stays armed per connection, each
//!   arrival is one completion, and no connection holds a read buffer. The bytes
//!   are copied into the shard's read chunk and the buffer goes straight back.
//! - Writes are sends queued during a pass and submitted together: one
//!   `io_uring_enter` per pass for every connection with output.
//! - Listeners use multishot accept.
//! - An arrival's work is deferred task work (`IORING_SETUP_DEFER_TASKRUN`): it
//!   neither interrupts nor wakes the shard, and runs when the shard enters the
//!   ring with `GETEVENTS`, so a busy shard takes arrivals in batches. The ring
//!   flags pending work (`IORING_SQ_TASKRUN`), and reaping runs it when set.
//! - The kernel wakes only a thread that waits in this ring, so an idle shard
//!   sleeps here ([`Ring::park`], called by the executor through the shard's park
//!   hook), with a poll armed on each of glommio's rings: whatever glommio waits
//!   for (timers, wake-ups from other shards) also ends the park.
//! - Completions are reaped from shared memory, without a syscall.
//! - Under a QoS 0 flood the shard holds arrivals ([`Ring::hold_arrivals`]): their
//!   task work waits, and a park waits out the rest of the coalescing wait, so
//!   each receive takes several packets (`super::coalesce` says when and why).
//!
//! Measured alternatives (10k msgs/s from 100 one-packet-per-write clients, broker
//! on one core, same run against the glommio-socket build and Mosquitto): the
//! ring's default task work (an interrupt per arrival) cost as much CPU per message
//! as glommio's sockets; cooperative task work (`COOP_TASKRUN`) with an eventfd
//! that a glommio task read, the previous design, cost a wake-up of glommio's
//! ring and a re-armed read per message (1k msgs/s: 55.8 CPU-us per message
//! against 40.4 now, same run); a deferred ring's eventfd signal is deferred by
//! the kernel (6.18) through RCU, 15-26 ms measured, too late for an idle
//! shard; polling the deferred ring on a timer costs a wake-up per period even
//! when idle (48 us of CPU per wake-up on this VM: 9.6% of a core at 500 us).
//!
//! Owner: one shard; nothing here is `Send`.
//!
//! # Invariants
//! - A provided buffer the kernel filled is copied out and handed back before its
//!   completion is returned ([`Ring::next`]): the buffer ring refills as fast as it
//!   is consumed, and no message pins memory the kernel writes into.
//! - A send's buffer belongs to the ring from [`Ring::send`] until its completion.
//! - `in_flight` counts operations whose last completion has not been reaped; the
//!   ring is torn down only after cancelling them and reaping to zero, so the
//!   kernel never writes into freed buffers.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use io_uring::types::{BufRingEntry, CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use slab::Slab;

use super::pool::ReadPool;

/// The buffer group of the shard's provided buffers (one group per ring).
const BUF_GROUP: u16 = 0;

/// What an operation is, in the top bits of its user data.
const TAG_SHIFT: u32 = 62;
const TAG_ACCEPT: u64 = 0;
const TAG_RECV: u64 = 1;
const TAG_SEND: u64 = 2;
/// Cancellations (key 0) and the polls of the executor's rings (key 1 + index).
const TAG_CANCEL: u64 = 3;
/// The most rings [`Ring::park`] watches.
const WATCHED_MAX: usize = 2;
/// Arrivals that end a coalescing park before its time: each takes a provided
/// buffer when it is received, and a quarter of the default 1,024 leaves room.
const WAIT_COMPLETIONS: usize = 256;
const KEY_MASK: u64 = (1 << TAG_SHIFT) - 1;

/// What a caller names an operation by: at most 62 bits.
pub(crate) type Token = u64;

/// One reaped completion, owned: the received bytes are already copied out.
#[derive(Debug)]
pub(crate) enum Completion {
    /// A listener (by index) accepted a connection. `more == false`: the multishot
    /// accept ended and must be armed again.
    Accepted { listener: usize, result: io::Result<OwnedFd>, more: bool },
    /// Bytes arrived (empty: end of stream). `more == false`: the receive ended
    /// (end of stream, error, cancel, or no buffer was free) and must be armed
    /// again to read more.
    Received { token: Token, result: io::Result<BytesMut>, more: bool },
    /// A send completed, `result` bytes of `buf` went out; `buf` comes back.
    Sent { token: Token, result: io::Result<usize>, buf: BytesMut },
}

/// Figures of the ring, for `/metrics` and the closing notes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RingStats {
    /// `io_uring_enter` calls (submissions and task work).
    pub enters: u64,
    /// Times the shard slept in this ring ([`Ring::park`]).
    pub parks: u64,
    pub recv_completions: u64,
    /// Receives that ended because every provided buffer was in use.
    pub buffers_exhausted: u64,
}

/// The shard's socket ring and its provided buffers.
pub(crate) struct Ring {
    // Declared first: dropped before the memory the kernel writes into.
    ring: IoUring,
    buffers: BufRing,
    /// Send buffers in flight, and the token of their sender.
    sends: Slab<(Token, BytesMut)>,
    /// Which of the executor's rings have a poll armed here ([`Ring::park`]).
    watching: [bool; WATCHED_MAX],
    /// Arrivals' task work is left for later ([`Ring::hold_arrivals`]).
    hold_arrivals: bool,
    in_flight: usize,
    pub stats: RingStats,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("in_flight", &self.in_flight).finish()
    }
}

impl Ring {
    /// A ring with `entries` submission slots and `buffers` provided buffers of
    /// `buffer_bytes` each (`buffers`: a power of two, at most 32,768).
    pub fn new(entries: u32, buffers: u16, buffer_bytes: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            // Multishot receives complete far more often than sends are submitted:
            // a completion queue of its own size keeps overflows rare (and the kernel
            // keeps what overflows, so nothing is lost when one happens).
            .setup_cqsize(entries * 8)
            .setup_single_issuer()
            // An arrival neither interrupts nor wakes the shard unless it sleeps
            // in this ring ([`Ring::park`]): a busy shard takes arrivals at its
            // next enter, a batch at a time.
            .setup_defer_taskrun()
            // ... and the ring says when such work waits, so reaping runs it.
            .setup_taskrun_flag()
            .build(entries)?;
        let buffers = BufRing::new(buffers, buffer_bytes)?;
        // SAFETY: the entries stay valid until the ring is destroyed: `ring` is
        // dropped before `buffers` (field order), after every operation ended.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buffers.entries.as_ptr() as u64,
                buffers.count,
                BUF_GROUP,
                0,
            )?;
        }
        Ok(Ring {
            ring,
            buffers,
            sends: Slab::new(),
            watching: [false; WATCHED_MAX],
            hold_arrivals: false,
            in_flight: 0,
            stats: RingStats::default(),
        })
    }

    /// Whether reaping would find anything: a completion, an arrival's task work
    /// (unless arrivals are held), or completions the kernel kept aside for lack
    /// of room. Shared memory only.
    pub fn ready(&mut self) -> bool {
        let (taskrun, overflow) = {
            let sq = self.ring.submission();
            (sq.taskrun() && !self.hold_arrivals, sq.cq_overflow())
        };
        taskrun || overflow || !self.ring.completion().is_empty()
    }

    /// Holds arrivals (`true`): their task work is left for later, so that each
    /// receive takes more at once (receive coalescing, `super::coalesce`).
    /// Completions already posted are still reaped. A park lifts the hold.
    pub fn hold_arrivals(&mut self, hold: bool) {
        self.hold_arrivals = hold;
    }

    /// Sleeps in this ring until a completion arrives here or in one of `rings`
    /// (io_uring descriptors of the executor, watched with a poll apiece), after
    /// handing every queued operation to the kernel.
    ///
    /// Without `wait` it waits for one completion. With one, it waits that long
    /// for arrivals to gather (receive coalescing), or until `WAIT_COMPLETIONS`
    /// of them did; glommio's rings wait as long. That costs a timer per park,
    /// which is why it is only done under a flood: on this VM a timer costs more
    /// than the wake-ups it saves (10k msgs/s from 100 publishers: 12.4 CPU-us
    /// per message without, 23.9 with a 100 us wait, 14.8 with 300 us, 11.0
    /// with 1 ms but twice the p99 latency).
    pub fn park(&mut self, rings: &[RawFd], wait: Option<Duration>) {
        for (index, &fd) in rings.iter().enumerate().take(WATCHED_MAX) {
            if !self.watching[index] {
                self.watching[index] = true;
                let entry = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
                    .build()
                    .user_data(TAG_CANCEL << TAG_SHIFT | (1 + index as u64));
                self.push(entry);
            }
        }
        self.stats.enters += 1;
        self.stats.parks += 1;
        let result = match wait {
            Some(wait) => {
                let ts = Timespec::from(wait);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(WAIT_COMPLETIONS, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match result {
            Ok(_) => {}
            // The wait ended by its timeout; a signal, or a full completion queue:
            // the caller reaps and parks again.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {
            }
            Err(e) => tracing::error!("socket ring: park failed: {e}"),
        }
        self.hold_arrivals = false;
    }

    /// Arms a multishot accept on listener `fd` (index `listener`).
    pub fn accept(&mut self, fd: RawFd, listener: usize) {
        let entry = opcode::AcceptMulti::new(Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(TAG_ACCEPT << TAG_SHIFT | listener as u64);
        self.push(entry);
    }

    /// Arms a receive on `fd`: multishot, or one completion only (`once`).
    pub fn recv(&mut self, fd: RawFd, token: Token, once: bool) {
        let user_data = TAG_RECV << TAG_SHIFT | (token & KEY_MASK);
        let entry = if once {
            opcode::Recv::new(Fd(fd), std::ptr::null_mut(), 0)
                .buf_group(BUF_GROUP)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        } else {
            opcode::RecvMulti::new(Fd(fd), BUF_GROUP).build()
        };
        self.push(entry.user_data(user_data));
    }

    /// Cancels the multishot accept of listener `listener`.
    pub fn cancel_accept(&mut self, listener: usize) {
        let target = TAG_ACCEPT << TAG_SHIFT | listener as u64;
        let entry = opcode::AsyncCancel::new(target).build().user_data(TAG_CANCEL << TAG_SHIFT);
        self.push(entry);
    }

    /// Cancels the receive of `token` (its last completion says so).
    pub fn cancel_recv(&mut self, token: Token) {
        let target = TAG_RECV << TAG_SHIFT | (token & KEY_MASK);
        let entry = opcode::AsyncCancel::new(target).build().user_data(TAG_CANCEL << TAG_SHIFT);
        self.push(entry);
    }

    /// Sends `buf` on `fd`; the ring holds `buf` until the completion.
    pub fn send(&mut self, fd: RawFd, token: Token, buf: BytesMut) {
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let ptr = buf.as_ptr();
        let key = self.sends.insert((token, buf));
        let entry = opcode::Send::new(Fd(fd), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(TAG_SEND << TAG_SHIFT | key as u64);
        self.push(entry);
    }

    fn push(&mut self, entry: squeue::Entry) {
        if entry.get_user_data() >> TAG_SHIFT != TAG_CANCEL {
            self.in_flight += 1;
        }
        loop {
            // SAFETY: what an entry points at outlives the operation: send buffers
            // are held in `sends`, provided buffers in `buffers`, until the last
            // completion is reaped.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // The queue is full: hand it to the kernel to make room.
            if let Err(e) = self.submit() {
                tracing::error!("io_uring submit failed: {e}");
                std::thread::yield_now();
            }
        }
    }

    /// Hands every queued operation to the kernel and runs the task work that
    /// arrivals left (unless they are held): one `io_uring_enter`, none when there
    /// is neither (and no overflowed completion waits to be flushed).
    pub fn submit(&mut self) -> io::Result<()> {
        let (queued, overflow, taskrun) = {
            let sq = self.ring.submission();
            (sq.len(), sq.cq_overflow(), sq.taskrun())
        };
        if queued == 0 && !overflow && (!taskrun || self.hold_arrivals) {
            return Ok(());
        }
        self.stats.enters += 1;
        let result = if self.hold_arrivals && !overflow {
            // Without GETEVENTS: deferred task work runs only with it, so the
            // arrivals stay held (`IoUring::submit` adds it whenever task work waits).
            // SAFETY: what the queued entries point at outlives them, as in `push`.
            unsafe { self.ring.submitter().enter::<libc::sigset_t>(queued as u32, 0, 0, None) }
        } else {
            self.ring.submit()
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The next completion, if one is ready; received bytes are copied into `pool`
    /// and their provided buffer handed back.
    pub fn next(&mut self, pool: &mut ReadPool) -> Option<Completion> {
        loop {
            let mut cqe = self.ring.completion().next();
            let waiting = {
                let sq = self.ring.submission();
                (sq.taskrun() && !self.hold_arrivals) || sq.cq_overflow()
            };
            if cqe.is_none() && waiting {
                // Task work waits (data arrived while the shard was busy), or
                // completions the kernel kept aside for lack of room: run it, or
                // flush them, which posts the completions. (`ready` reports both,
                // so leaving either would wake the reaper for nothing, again.)
                if let Err(e) = self.submit() {
                    tracing::error!("io_uring enter failed: {e}");
                    return None;
                }
                cqe = self.ring.completion().next();
            }
            let cqe = cqe?;
            let (tag, key) = (cqe.user_data() >> TAG_SHIFT, cqe.user_data() & KEY_MASK);
            let (res, flags) = (cqe.result(), cqe.flags());
            let more = cqueue::more(flags);
            if tag != TAG_CANCEL && !more {
                self.in_flight -= 1;
            }
            let result = |res: i32| {
                if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(res as usize)
                }
            };
            match tag {
                TAG_ACCEPT => {
                    // SAFETY: a successful accept returns a new descriptor, ours alone.
                    let result = result(res).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
                    return Some(Completion::Accepted { listener: key as usize, result, more });
                }
                TAG_RECV => {
                    self.stats.recv_completions += 1;
                    let mut bytes = BytesMut::new();
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        if res > 0 {
                            bytes = pool.copy_in(self.buffers.filled(bid, res as usize));
                        }
                        self.buffers.recycle(bid);
                    }
                    if res == -libc::ENOBUFS {
                        self.stats.buffers_exhausted += 1;
                    }
                    let result = result(res).map(|_| bytes);
                    return Some(Completion::Received { token: key, result, more });
                }
                TAG_SEND => {
                    let (token, buf) = self.sends.remove(key as usize);
                    return Some(Completion::Sent { token, result: result(res), buf });
                }
                _ => {
                    // One of the executor's rings has completions: its poll is
                    // spent (the executor reaps them itself).
                    if let Some(watched) = (key as usize).checked_sub(1) {
                        self.watching[watched] = false;
                    }
                }
            }
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Cancel whatever is still armed and wait for the kernel to let go of the
        // buffers, bounded: a ring torn down with receives armed could otherwise
        // still be writing into `buffers` after they are freed.
        let cancel = opcode::AsyncCancel2::new(CancelBuilder::any())
            .build()
            .user_data(TAG_CANCEL << TAG_SHIFT);
        // SAFETY: the entry points at nothing.
        if unsafe { self.ring.submission().push(&cancel) }.is_err() {
            let _ = self.ring.submit();
        }
        let timeout = Timespec::from(Duration::from_millis(10));
        let args = SubmitArgs::new().timespec(&timeout);
        for _ in 0..100 {
            while self.ring.completion().next().is_some_and(|cqe| {
                let tag = cqe.user_data() >> TAG_SHIFT;
                if tag != TAG_CANCEL && !cqueue::more(cqe.flags()) {
                    self.in_flight -= 1;
                }
                true
            }) {}
            if self.in_flight == 0 {
                return;
            }
            let _ = self.ring.submitter().submit_with_args(1, &args);
        }
        // The kernel kept operations past a second: leak the buffers rather than
        // free memory it may still write into.
        tracing::error!(in_flight = self.in_flight, "socket ring torn down with operations left");
        std::mem::forget(std::mem::replace(&mut self.buffers, BufRing::empty()));
    }
}

/// A registered ring of provided buffers: `count` entries (page-aligned, shared
/// with the kernel) and one block of `count * size` bytes they point into.
struct BufRing {
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    memory: NonNull<u8>,
    memory_layout: Layout,
    count: u16,
    size: u32,
    /// Our copy of the tail the kernel reads.
    tail: u16,
}

impl BufRing {
    fn new(count: u16, size: u32) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 1 << 15 || size == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad provided-buffer sizes"));
        }
        let entries_layout =
            Layout::from_size_align(usize::from(count) * std::mem::size_of::<BufRingEntry>(), 4096)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let memory_layout = Layout::from_size_align(usize::from(count) * size as usize, 64)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: both layouts have a non-zero size.
        let (entries, memory) =
            unsafe { (alloc_zeroed(entries_layout), alloc_zeroed(memory_layout)) };
        let (Some(entries), Some(memory)) =
            (NonNull::new(entries.cast::<BufRingEntry>()), NonNull::new(memory))
        else {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        };
        let mut ring =
            BufRing { entries, entries_layout, memory, memory_layout, count, size, tail: 0 };
        for bid in 0..count {
            ring.recycle(bid);
        }
        Ok(ring)
    }

    /// A ring that owns no memory (what a leaked ring is replaced with).
    fn empty() -> BufRing {
        BufRing {
            entries: NonNull::dangling(),
            entries_layout: Layout::new::<()>(),
            memory: NonNull::dangling(),
            memory_layout: Layout::new::<()>(),
            count: 0,
            size: 0,
            tail: 0,
        }
    }

    /// The `len` bytes the kernel received into buffer `bid`.
    fn filled(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count && len <= self.size as usize, "completion out of the buffer ring");
        // SAFETY: in bounds (checked); the kernel finished writing before it posted
        // the completion, and does not write into this buffer until it is recycled.
        unsafe {
            std::slice::from_raw_parts(
                self.memory.as_ptr().add(usize::from(bid) * self.size as usize),
                len,
            )
        }
    }

    /// Hands buffer `bid` back to the kernel.
    fn recycle(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot < count`, inside the entries allocation; the kernel reads an
        // entry only once the tail published below covers it.
        unsafe {
            let entry = &mut *self.entries.as_ptr().add(slot);
            entry.set_addr(self.memory.as_ptr() as u64 + u64::from(bid) * u64::from(self.size));
            entry.set_len(self.size);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the `resv` field of the first entry, a u16 the
        // kernel reads concurrently: written atomically, after the entry.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.count == 0 {
            return;
        }
        // SAFETY: allocated in `new` with these layouts, freed once.
        unsafe {
            dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            dealloc(self.memory.as_ptr(), self.memory_layout);
        }
    }
}
