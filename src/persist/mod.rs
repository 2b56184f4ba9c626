//! Durable sessions and retained messages: one log per shard (`--data-dir`).
//!
//! Each shard appends the changes of its persistent sessions and of its retained
//! partition to its own log, on its own io_uring ring (`shard::log`): no lock, no
//! thread per write, no snapshot of the whole broker. The pieces:
//! - `record`: the records and their frame (length, CRC32C);
//! - `journal`: what a shard's core appends in one pass (sans-IO);
//! - `replay`: the state a log describes;
//! - this module: the data directory, read at start-up before any shard runs.
//!
//! ```text
//! <data-dir>/CURRENT                  the generation in use, "<n>\n"
//! <data-dir>/gen-<n>/shard-<i>/<seq>.log
//! ```
//!
//! At start-up every log of the current generation is replayed (so a change of
//! `--cores` re-homes every session to its new owner shard), the shards write what
//! they were given as the first records of a new generation and sync it, and only
//! then does `CURRENT` name the new generation and the old one go. A crash at any
//! point leaves one complete generation.
//!
//! # Invariants
//! - `CURRENT` names a generation whose logs hold every acknowledged durable change
//!   (under `--sync always`), or there is no `CURRENT` and no state.
//! - Replay stops at a torn tail or a corrupt record of a segment: what follows in
//!   that segment is not trusted (logged and counted), the next segment is read.

pub mod journal;
pub mod record;
pub mod replay;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::message::Message;
use crate::router::owner_shard;

pub use journal::Journal;
pub use replay::{RecoveredSession, Replay};

/// What one shard starts with.
#[derive(Debug, Default)]
pub struct ShardRecovery {
    pub sessions: Vec<RecoveredSession>,
    pub retained: Vec<Arc<Message>>,
    /// The directory of the shard's log in the new generation.
    pub dir: PathBuf,
}

/// Figures of the start-up replay.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecoveryStats {
    pub generation: u64,
    pub segments: u64,
    pub bytes: u64,
    pub records: u64,
    pub orphans: u64,
    /// Segments whose replay ended at a corrupt record.
    pub corrupt: u64,
    /// Segments that ended inside a record (a crash during a write).
    pub torn: u64,
    pub sessions: u64,
    pub expired: u64,
    pub retained: u64,
    pub millis: u64,
}

/// The data directory, opened: the state it held, split by owner shard.
#[derive(Debug)]
pub struct Recovered {
    /// The generation the shards write.
    pub generation: u64,
    pub shards: Vec<ShardRecovery>,
    pub stats: RecoveryStats,
}

fn generation_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("gen-{generation}"))
}

/// The segments of one shard's log, in order.
pub fn segments(shard_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(shard_dir)? {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            files.push((seq, path));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// The file name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:016}.log")
}

/// Opens `dir` for `shards` shards at `now_unix_s`: replays the current
/// generation and prepares the next. Blocking file IO: call it before the shards
/// run.
pub fn open(dir: &Path, shards: usize) -> io::Result<Recovered> {
    let started = std::time::Instant::now();
    fs::create_dir_all(dir)?;
    let current = match fs::read_to_string(dir.join("CURRENT")) {
        Ok(text) => Some(text.trim().parse::<u64>().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: bad CURRENT", dir.display()))
        })?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    // A generation other than the current one is what a crash left of a start.
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let generation = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("gen-"))
            .and_then(|n| n.parse::<u64>().ok());
        if generation.is_some() && generation != current {
            fs::remove_dir_all(&path)?;
        }
    }
    let mut stats = RecoveryStats::default();
    let mut replay = Replay::default();
    if let Some(current) = current {
        let gen_dir = generation_dir(dir, current);
        let mut shard_dirs: Vec<PathBuf> = match fs::read_dir(&gen_dir) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        shard_dirs.sort();
        for shard_dir in shard_dirs {
            replay.next_log();
            for segment in segments(&shard_dir)? {
                replay_segment(&segment, &mut replay, &mut stats)?;
            }
        }
    }
    stats.records = replay.stats.records;
    stats.orphans = replay.stats.orphans;
    let (sessions, retained) = replay.finish();
    let generation = current.map_or(1, |g| g + 1);
    let gen_dir = generation_dir(dir, generation);
    let mut per_shard: Vec<ShardRecovery> = (0..shards)
        .map(|i| ShardRecovery { dir: gen_dir.join(format!("shard-{i}")), ..Default::default() })
        .collect();
    for shard in &per_shard {
        fs::create_dir_all(&shard.dir)?;
    }
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for session in sessions {
        let expired = match (session.expiry_secs, session.offline_since_s) {
            (Some(0), _) => true,
            (Some(secs), since) if since > 0 => since.saturating_add(secs) <= now_s,
            _ => false,
        };
        if expired {
            stats.expired += 1;
            continue;
        }
        stats.sessions += 1;
        let owner = owner_shard(session.client_id.as_bytes(), shards);
        per_shard[owner].sessions.push(session);
    }
    for message in retained {
        stats.retained += 1;
        let owner = owner_shard(message.topic.as_str().as_bytes(), shards);
        per_shard[owner].retained.push(message);
    }
    stats.generation = generation;
    stats.millis = started.elapsed().as_millis() as u64;
    Ok(Recovered { generation, shards: per_shard, stats })
}

fn replay_segment(path: &Path, replay: &mut Replay, stats: &mut RecoveryStats) -> io::Result<()> {
    let bytes = fs::read(path)?;
    stats.segments += 1;
    stats.bytes += bytes.len() as u64;
    let mut at = 0;
    while at < bytes.len() {
        match record::decode(&bytes[at..]) {
            record::Decoded::Record(r, used) => {
                replay.apply(r);
                at += used;
            }
            record::Decoded::Torn => {
                stats.torn += 1;
                tracing::warn!(
                    segment = %path.display(),
                    offset = at,
                    "log ends inside a record (torn by a crash): the rest is dropped"
                );
                break;
            }
            record::Decoded::Corrupt(what) => {
                stats.corrupt += 1;
                tracing::error!(
                    segment = %path.display(),
                    offset = at,
                    "corrupt log record ({what}): the rest of this segment is skipped"
                );
                break;
            }
        }
    }
    Ok(())
}

/// Makes `generation` the current one, once every shard synced its first records
/// there, and removes the one before.
pub fn commit(dir: &Path, generation: u64) -> io::Result<()> {
    let tmp = dir.join("CURRENT.tmp");
    let mut file = fs::File::create(&tmp)?;
    writeln!(file, "{generation}")?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join("CURRENT"))?;
    fs::File::open(dir)?.sync_all()?;
    if generation > 1 {
        let old = generation_dir(dir, generation - 1);
        if old.exists() {
            fs::remove_dir_all(old)?;
        }
    }
    Ok(())
}
