//! A shard's log on disk (`--data-dir`): the records its core appends
//! (`persist::journal`) written on the shard's own io_uring ring through glommio's
//! `BufferedFile` (no thread per write, no blocking syscall on the executor), in
//! segments of `data_segment_bytes`, synced as `--sync` says.
//!
//! One writer task per shard: it takes everything the passes appended since its
//! last write, writes it with one `write_at`, and under `--sync always` syncs it
//! with one fdatasync (group commit) before the output of those passes is
//! released (`Core::log_durable`).
//!
//! Start-up (`start`): the shard takes what the data directory held for it
//! (`persist::open`, on the main thread), restores it in its core, writes it as
//! the first records of the new generation, syncs them, and waits until every
//! shard did (the new generation is then made current) before it accepts
//! clients.
//!
//! # Invariants
//! - Bytes reach the file in the order the core appended them; a segment holds
//!   whole records only.
//! - A failed write stops the log for good (logged, counted, alarm): the broker
//!   goes on without durability rather than acknowledge what it did not store.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use glommio::io::BufferedFile;
use glommio::spawn_local;
use hdrhistogram::Histogram;
use tracing::{error, info};

use crate::config::SyncMode;
use crate::persist::{self, RecoveryStats, ShardRecovery};

use super::notify::Notify;
use super::Shard;

/// What the broker hands its shards when it keeps a data directory.
#[derive(Debug)]
pub(crate) struct Durable {
    /// Per shard, what it starts with (taken once).
    pub recovered: Mutex<Vec<Option<ShardRecovery>>>,
    /// Each shard reports here once its first records are synced (or failed).
    pub ready: crossbeam_channel::Sender<Result<usize, String>>,
    /// Set once the new generation is current: the shards may accept clients.
    pub committed: AtomicBool,
    pub recovery: RecoveryStats,
}

/// The log figures of one shard, for metrics and `$SYS`.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogFigures {
    pub bytes_written: u64,
    pub writes: u64,
    pub syncs: u64,
    pub segments: u64,
    pub segment_bytes: u64,
    /// Checkpoints completed (each lets the segments before it go).
    pub checkpoints: u64,
    /// Times the shard paused its publishers because more than `log_buffer_bytes`
    /// waited for the disk.
    pub pauses: u64,
    /// Bytes of the segments before the open one.
    pub closed_bytes: u64,
    pub errors: u64,
    /// fdatasync latency, microseconds.
    pub sync_us: Option<Histogram<u64>>,
}

/// The shard's side of its log: bytes waiting for the writer task.
#[derive(Debug)]
pub(crate) struct LogState {
    waiting: Vec<BytesMut>,
    /// Bytes in `waiting`: beyond `log_buffer_bytes` the core pauses its
    /// publishers (`Core::set_log_behind`) until the writer took them.
    waiting_bytes: usize,
    waiting_max: usize,
    /// The core's log position after the bytes waiting.
    position: u64,
    writer: Rc<Notify>,
    pub figures: LogFigures,
    failed: bool,
    /// The writer task, which the shard waits for when it stops (everything
    /// appended is written, and synced unless `--sync never`).
    writer_task: Option<glommio::Task<()>>,
    /// The start-up replay's figures (shard 0 reports them).
    recovery: Option<RecoveryStats>,
    /// The checkpoint under way: the first segment it writes to, and the log
    /// position it ends at once the core wrote all of it.
    walk: Option<(u64, Option<u64>)>,
}

impl LogState {
    /// The figures for the shard's snapshot.
    pub fn snapshot(
        &self,
        journal: crate::persist::journal::JournalStats,
        full: bool,
    ) -> crate::metrics::LogSnapshot {
        let f = &self.figures;
        let quantile = |q: f64| f.sync_us.as_ref().map_or(0, |h| h.value_at_quantile(q));
        let recovery = self.recovery.unwrap_or_default();
        crate::metrics::LogSnapshot {
            bytes_written: f.bytes_written,
            records: journal.records,
            messages: journal.messages,
            records_too_large: journal.too_large,
            writes: f.writes,
            syncs: f.syncs,
            sync_p50_us: quantile(0.5),
            sync_p99_us: quantile(0.99),
            sync_max_us: f.sync_us.as_ref().map_or(0, Histogram::max),
            segments: f.segments,
            disk_bytes: f.closed_bytes + f.segment_bytes,
            checkpoints: f.checkpoints,
            checkpointing: self.walk.is_some(),
            waiting_bytes: self.waiting_bytes as u64,
            pauses: f.pauses,
            full,
            errors: f.errors,
            recovery_ms: recovery.millis,
            recovery_records: recovery.records,
            recovery_torn: recovery.torn,
            recovery_corrupt: recovery.corrupt,
        }
    }

    fn new(waiting_max: usize) -> Self {
        LogState {
            waiting: Vec::new(),
            waiting_bytes: 0,
            waiting_max,
            position: 0,
            writer: Rc::new(Notify::default()),
            figures: LogFigures {
                sync_us: Histogram::new_with_bounds(1, 60_000_000, 2).ok(),
                ..LogFigures::default()
            },
            failed: false,
            recovery: None,
            writer_task: None,
            walk: None,
        }
    }
}

/// Waits for the writer task of a stopping shard: everything appended is
/// written (and synced unless `--sync never`).
pub(super) async fn finish(shard: &Rc<RefCell<Shard>>) {
    let task = shard.borrow_mut().log.as_mut().and_then(|log| log.writer_task.take());
    if let Some(task) = task {
        task.await;
    }
}

impl Shard {
    /// The end of a pass: what the core appended goes to the writer task.
    pub(super) fn end_pass_log(&mut self) {
        if let Some(log) = self.log.as_mut() {
            if let Some((_, end @ None)) = log.walk.as_mut() {
                if self.core.checkpoint_step() {
                    *end = Some(self.core.log_appended());
                }
                // The next slice in the next pass, idle or not.
                log.writer.notify();
            }
        }
        let Some(bytes) = self.core.take_journal() else { return };
        let position = self.core.log_appended();
        let Some(log) = self.log.as_mut() else { return };
        if log.failed {
            return;
        }
        let was_behind = log.waiting_bytes > log.waiting_max;
        log.waiting_bytes += bytes.len();
        log.waiting.push(bytes);
        log.position = position;
        log.writer.notify();
        if !was_behind && log.waiting_bytes > log.waiting_max {
            log.figures.pauses += 1;
            let now = self.now();
            self.core.set_log_behind(now, true);
        }
    }
}

/// The shard's open segment.
struct Segment {
    dir: PathBuf,
    seq: u64,
    file: BufferedFile,
    len: u64,
}

impl Segment {
    async fn create(dir: PathBuf, seq: u64) -> std::io::Result<Segment> {
        let file = BufferedFile::create(dir.join(persist::segment_name(seq))).await?;
        Ok(Segment { dir, seq, file, len: 0 })
    }

    /// Appends `bytes`. A short write (the disk full) is an error: what it left
    /// is a torn tail, which replay drops.
    async fn write(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        let len = bytes.len();
        if len == 0 {
            return Ok(());
        }
        let n = self.file.write_at(bytes, self.len).await?;
        self.len += n as u64;
        if n < len {
            return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "short write"));
        }
        Ok(())
    }
}

/// Restores the shard's share of the data directory and starts its log: the
/// first records (everything restored) are synced, and every shard waits until
/// all did and the new generation is current. `false`: the shard cannot keep its
/// log (the broker stops).
pub(super) async fn start(shard: &Rc<RefCell<Shard>>, durable: &Arc<Durable>) -> bool {
    let (id, config) = {
        let s = shard.borrow();
        (s.core.id, Arc::clone(&s.config))
    };
    let recovery = durable.recovered.lock().unwrap_or_else(|p| p.into_inner())[id].take();
    let Some(recovery) = recovery else { return false };
    let dir = recovery.dir.clone();
    {
        let mut s = shard.borrow_mut();
        let now = s.now();
        s.core.enable_journal();
        if config.sync == SyncMode::Always {
            s.core.hold_output_for_log();
        }
        s.core.restore(now, recovery);
        // The restored sessions' routes reach the other shards while the logs
        // are written, before any shard accepts a client.
        s.schedule_pass();
        let mut log = LogState::new(s.config.log_buffer_bytes.get());
        log.recovery = (id == 0).then_some(durable.recovery);
        s.log = Some(log);
    }
    let first = shard.borrow_mut().core.take_journal().unwrap_or_default();
    let result = async {
        let mut segment = Segment::create(dir, 0).await?;
        segment.write(first.to_vec()).await?;
        segment.file.fdatasync().await?;
        Ok::<Segment, std::io::Error>(segment)
    }
    .await;
    let segment = match result {
        Ok(segment) => segment,
        Err(e) => {
            let _ = durable.ready.send(Err(format!("shard {id}: cannot write its log: {e}")));
            return false;
        }
    };
    {
        let mut s = shard.borrow_mut();
        let position = s.core.log_appended();
        s.core.log_durable(position);
        let log = s.log.as_mut().expect("set above");
        log.figures.segments = 1;
        log.figures.segment_bytes = segment.len;
        log.figures.bytes_written = segment.len;
    }
    let _ = durable.ready.send(Ok(id));
    while !durable.committed.load(Ordering::Acquire) {
        if shard.borrow().stopped.is_set() {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    let position = shard.borrow().core.log_appended();
    let writer = spawn_local(write_log(Rc::clone(shard), segment, position));
    shard.borrow_mut().log.as_mut().expect("set above").writer_task = Some(writer);
    // Routes of the restored sessions go to the other shards now.
    shard.borrow_mut().schedule_pass();
    true
}

/// The writer task: writes what the passes appended, syncs as `--sync` says,
/// rolls segments.
async fn write_log(shard: Rc<RefCell<Shard>>, mut segment: Segment, mut written: u64) {
    let (config, writer, stopped) = {
        let s = shard.borrow();
        let log = s.log.as_ref().expect("started");
        (Arc::clone(&s.config), Rc::clone(&log.writer), Rc::clone(&s.stopped))
    };
    let interval = config.sync_interval;
    let segment_max = config.data_segment_bytes.get();
    let mut synced = written;
    let mut last_sync = Instant::now();
    // Segments before the open one: (sequence, bytes).
    let mut closed: Vec<(u64, u64)> = Vec::new();
    // The share of `data_max_bytes` of this shard, and what the last checkpoint
    // wrote (the live state, roughly).
    let shards = shard.borrow().core.shards as u64;
    let share = config.data_max_bytes.map(|max| max.get().div_ceil(shards));
    let mut last_walk_bytes = 0u64;
    let mut walk_started_at = 0u64;
    // A write is never cancelled (its bytes would be lost): the loop looks at the
    // stop between writes, and at the stop writes what is left and syncs it.
    let work = async {
        loop {
            let unsynced = written > synced && config.sync == SyncMode::Interval;
            let stop = async {
                stopped.wait().await;
            };
            if unsynced {
                let left = interval.saturating_sub(last_sync.elapsed());
                let wake = futures_lite::future::or(writer.notified(), glommio::timer::sleep(left));
                futures_lite::future::or(wake, stop).await;
            } else {
                futures_lite::future::or(writer.notified(), stop).await;
            }
            let stopping = stopped.is_set();
            let (bytes, position) = {
                let mut s = shard.borrow_mut();
                if stopping {
                    // What the core appended after the last pass goes too.
                    s.end_pass_log();
                }
                let log = s.log.as_mut().expect("started");
                let waiting = std::mem::take(&mut log.waiting);
                let position = log.position;
                if std::mem::take(&mut log.waiting_bytes) > log.waiting_max {
                    // Taken: the publishers read again from the next pass on.
                    let now = s.now();
                    s.core.set_log_behind(now, false);
                    s.schedule_pass();
                }
                (waiting, position)
            };
            if !bytes.is_empty() {
                let mut all = Vec::with_capacity(bytes.iter().map(BytesMut::len).sum());
                for b in &bytes {
                    all.extend_from_slice(b);
                }
                let n = all.len() as u64;
                if let Err(e) = segment.write(all).await {
                    fail(&shard, &format!("writing segment {}: {e}", segment.seq));
                    return;
                }
                written = position;
                let mut s = shard.borrow_mut();
                let log = s.log.as_mut().expect("started");
                log.figures.bytes_written += n;
                log.figures.writes += 1;
                log.figures.segment_bytes = segment.len;
            }
            if stopping {
                if written > synced && config.sync != SyncMode::Never {
                    if let Err(e) = segment.file.fdatasync().await {
                        fail(&shard, &format!("syncing segment {}: {e}", segment.seq));
                    }
                }
                return;
            }
            let due = match config.sync {
                SyncMode::Always => written > synced,
                SyncMode::Interval => written > synced && last_sync.elapsed() >= interval,
                SyncMode::Never => false,
            };
            if due {
                let started = Instant::now();
                if let Err(e) = segment.file.fdatasync().await {
                    fail(&shard, &format!("syncing segment {}: {e}", segment.seq));
                    return;
                }
                synced = written;
                last_sync = Instant::now();
                let mut s = shard.borrow_mut();
                let log = s.log.as_mut().expect("started");
                log.figures.syncs += 1;
                if let Some(h) = log.figures.sync_us.as_mut() {
                    let _ = h.record(started.elapsed().as_micros().max(1) as u64);
                }
                s.core.log_durable(synced);
                // The pass writes what that released and sends the acknowledgements.
                s.schedule_pass();
            }
            // At its share of `data_max_bytes`, the shard refuses new durable state
            // (every shard is told) and checkpoints early if that frees anything:
            // more than half again what the last checkpoint wrote lies on disk.
            let usage = closed.iter().map(|(_, len)| len).sum::<u64>() + segment.len;
            let full = update_full(&shard, share, usage);
            let idle_walker = shard.borrow().log.as_ref().is_some_and(|l| l.walk.is_none());
            let reclaim = full && idle_walker && usage > last_walk_bytes + last_walk_bytes / 2;
            if segment.len >= segment_max || (reclaim && segment.len > 0) {
                if config.sync != SyncMode::Never {
                    if let Err(e) = segment.file.fdatasync().await {
                        fail(&shard, &format!("syncing segment {}: {e}", segment.seq));
                        return;
                    }
                }
                let next = match Segment::create(segment.dir.clone(), segment.seq + 1).await {
                    Ok(next) => next,
                    Err(e) => {
                        fail(&shard, &format!("creating segment {}: {e}", segment.seq + 1));
                        return;
                    }
                };
                let old = std::mem::replace(&mut segment, next);
                closed.push((old.seq, old.len));
                let _ = old.file.close().await;
                let closed_bytes: u64 = closed.iter().map(|(_, len)| len).sum();
                let mut s = shard.borrow_mut();
                let log = s.log.as_mut().expect("started");
                log.figures.segments = closed.len() as u64 + 1;
                log.figures.segment_bytes = 0;
                log.figures.closed_bytes = closed_bytes;
                // Two segments' worth behind the open one (or the disk share
                // reached): write the live state again from here, so they can go.
                if log.walk.is_none() && (closed_bytes >= 2 * segment_max || reclaim) {
                    log.walk = Some((segment.seq, None));
                    walk_started_at = written;
                    s.core.begin_checkpoint();
                    s.schedule_pass();
                }
            }
            let walked = {
                let s = shard.borrow();
                match s.log.as_ref().and_then(|l| l.walk) {
                    Some((from, Some(end))) if written >= end => Some(from),
                    Some((_, None)) => {
                        drop(s);
                        shard.borrow_mut().schedule_pass();
                        None
                    }
                    _ => None,
                }
            };
            if let Some(from) = walked {
                // The checkpoint must be on disk before what it replaces goes.
                if synced < written {
                    if let Err(e) = segment.file.fdatasync().await {
                        fail(&shard, &format!("syncing segment {}: {e}", segment.seq));
                        return;
                    }
                    synced = written;
                    last_sync = Instant::now();
                }
                for (seq, _) in closed.iter().filter(|(seq, _)| *seq < from) {
                    let path = segment.dir.join(persist::segment_name(*seq));
                    if let Err(e) = glommio::io::remove(&path).await {
                        error!("cannot remove log segment {}: {e}", path.display());
                    }
                }
                closed.retain(|(seq, _)| *seq >= from);
                last_walk_bytes = written.saturating_sub(walk_started_at);
                let usage = closed.iter().map(|(_, len)| len).sum::<u64>() + segment.len;
                update_full(&shard, share, usage);
                let mut s = shard.borrow_mut();
                let log = s.log.as_mut().expect("started");
                log.walk = None;
                log.figures.checkpoints += 1;
                log.figures.segments = closed.len() as u64 + 1;
                log.figures.closed_bytes = closed.iter().map(|(_, len)| len).sum();
            }
        }
    };
    work.await;
}

/// Whether the shard's log, `usage` bytes on disk, is at its `share` of
/// `data_max_bytes` (back under it only below 90%, so that it does not flap);
/// the core, and through it every shard, is told of a change.
fn update_full(shard: &Rc<RefCell<Shard>>, share: Option<u64>, usage: u64) -> bool {
    let mut s = shard.borrow_mut();
    let was = s.core.log_is_full();
    let full = share.is_some_and(|share| usage >= if was { share / 10 * 9 } else { share });
    if full != was {
        s.core.set_log_full(full);
        // The other shards learn it at the end of the pass.
        s.schedule_pass();
    }
    full
}

/// The log cannot be written: say so, count it (the `log_failed` alarm), stop
/// logging. Output held for it stays held: nothing unstored is acknowledged.
fn fail(shard: &Rc<RefCell<Shard>>, what: &str) {
    error!("durable log failed, durability is off from now on: {what}");
    let mut s = shard.borrow_mut();
    s.core.log_failed();
    if let Some(log) = s.log.as_mut() {
        log.failed = true;
        log.figures.errors += 1;
        log.waiting.clear();
        log.waiting_bytes = 0;
    }
    // Nothing waits for the disk any more.
    let now = s.now();
    s.core.set_log_behind(now, false);
    s.schedule_pass();
}

/// Waits for every shard's first records, then makes the new generation current.
pub(crate) fn commit(
    dir: &std::path::Path,
    generation: u64,
    shards: usize,
    ready: &crossbeam_channel::Receiver<Result<usize, String>>,
) -> Result<(), String> {
    for _ in 0..shards {
        match ready.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a shard did not write its log in time".to_owned()),
        }
    }
    persist::commit(dir, generation).map_err(|e| format!("{}: {e}", dir.display()))?;
    info!(generation, dir = %dir.display(), "data directory ready");
    Ok(())
}
