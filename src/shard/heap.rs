//! Giving freed heap memory back to the kernel once a storm of closed connections
//! has passed.
//!
//! The broker allocates through Rust's `System` allocator, glibc's malloc, which
//! gives each shard thread an arena of its own. glibc returns memory to the kernel
//! only from the top of an arena: what is freed in the middle stays resident,
//! ready for reuse. A reconnect storm frees one generation of connection state
//! while the next is allocated around it. Measured with 19,000 persistent-session
//! clients reconnecting at once to one shard (`bench-harness connections
//! --reconnect-storm`): 2.9 MiB of the shard's arena was free and resident after
//! the storm (`mallinfo2`), while the live heap was back to its size before the
//! storm; one `malloc_trim(0)` gives 1.3-1.5 MiB back, and RSS a minute after the
//! storm went from +6.5% of its value before the storm to +2.7-4.8% (of which
//! about 2.6% the same fleet gains in that minute without a storm, as its
//! keep-alive entries first go round the timer wheel).
//!
//! When ([`TrimWatch`], on shard 0, once a second, from the node's figures): after
//! at least [`CLOSES_MIN`] closed connections, and an eighth of those still open,
//! since the last trim, once [`CALM_SECS`] seconds passed with no more than a
//! trickle of closes (the larger of [`TRICKLE_CLOSES_MAX`] and 1/256 of the
//! connections per second). By then what the storm leaves to free later is freed
//! too: the closed connections' keep-alive entries (due within 1.5 keep-alive
//! intervals) and handshake deadlines (`connect_timeout`). At most one trim per
//! [`TRIM_INTERVAL_MIN_SECS`]: closes that go on at a steady rate need none, as the
//! next connections reuse what the last ones freed. A fleet connecting does not
//! trim: a growing heap has nothing free to give back.
//!
//! Cost: `malloc_trim` walks the free chunks of each arena in turn, holding that
//! arena's lock, and gives back every whole free page with `madvise`; a shard
//! that allocates meanwhile waits for the walk of its own arena. Measured on the
//! storm above: 0.3-0.45 ms (1.3-1.5 MiB given back) on shard 0's thread, once
//! per storm, never on a per-message path. A page given back costs a page fault
//! when it is reused.
//! Counted on shard 0: `heap_trims`, `heap_trimmed_bytes` (the RSS it gave back),
//! `heap_trim_us`. A broker embedded in another program trims that program's
//! arenas too, which only gives back pages that hold no allocation.

use std::time::Instant;

/// Closes since the last trim below which a trim is not worth its walk.
pub(crate) const CLOSES_MIN: u64 = 1024;
/// Seconds without a storm of closes before the trim.
pub(crate) const CALM_SECS: u32 = 20;
/// Closes per second that are a trickle, not a storm, whatever the connections.
pub(crate) const TRICKLE_CLOSES_MAX: u64 = 64;
/// The fewest seconds between two trims.
pub(crate) const TRIM_INTERVAL_MIN_SECS: u32 = 60;

/// Decides when the heap is trimmed, from the node's connection figures.
#[derive(Debug)]
pub(crate) struct TrimWatch {
    /// Connections closed since the last trim.
    closes: u64,
    /// Consecutive seconds with at most a trickle of closes.
    calm_secs: u32,
    /// Seconds since the last trim (saturating; starts as if long ago).
    since_trim_secs: u32,
}

impl Default for TrimWatch {
    fn default() -> Self {
        TrimWatch { closes: 0, calm_secs: 0, since_trim_secs: u32::MAX }
    }
}

impl TrimWatch {
    /// One second of the node: `closes` connections closed during it (taken over
    /// ones included), `connections` open now. Returns whether to trim now.
    pub fn second(&mut self, closes: u64, connections: u64) -> bool {
        self.closes = self.closes.saturating_add(closes);
        self.since_trim_secs = self.since_trim_secs.saturating_add(1);
        let storm = closes > TRICKLE_CLOSES_MAX.max(connections / 256);
        self.calm_secs = if storm { 0 } else { self.calm_secs.saturating_add(1) };
        let due = self.closes >= CLOSES_MIN.max(connections / 8)
            && self.calm_secs >= CALM_SECS
            && self.since_trim_secs >= TRIM_INTERVAL_MIN_SECS;
        if due {
            self.closes = 0;
            self.since_trim_secs = 0;
        }
        due
    }
}

/// Connections closed between two readings of (connects so far, connections
/// open): the connects minus the change in open connections, so taken over
/// connections count.
pub(crate) fn closes(before: (u64, u64), now: (u64, u64)) -> u64 {
    let opened = now.0.saturating_sub(before.0);
    (before.1 + opened).saturating_sub(now.1)
}

/// What one trim did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Trimmed {
    /// Resident bytes before minus after (0 if RSS grew meanwhile).
    pub bytes: u64,
    pub micros: u64,
}

/// Gives every arena's free pages back to the kernel; `resident` reads the
/// process's RSS. `None` where the allocator is not glibc's.
pub(crate) fn trim(resident: impl Fn() -> u64) -> Option<Trimmed> {
    let before = resident();
    let started = Instant::now();
    if !malloc_trim() {
        return None;
    }
    let micros = started.elapsed().as_micros() as u64;
    Some(Trimmed { bytes: before.saturating_sub(resident()), micros })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_trim() -> bool {
    // SAFETY: glibc's malloc_trim takes the arenas' own locks; it only gives back
    // pages that hold no allocation. Padding 0: keep nothing spare at the top.
    unsafe { libc::malloc_trim(0) };
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `seconds` of (closes, connections) and returns the seconds (from 1)
    /// at which the watch trimmed.
    fn check(watch: &mut TrimWatch, seconds: impl IntoIterator<Item = (u64, u64)>) -> Vec<usize> {
        seconds
            .into_iter()
            .enumerate()
            .filter_map(|(i, (closes, connections))| {
                watch.second(closes, connections).then_some(i + 1)
            })
            .collect()
    }

    fn calm(secs: usize, connections: u64) -> impl Iterator<Item = (u64, u64)> {
        std::iter::repeat_n((0, connections), secs)
    }

    #[test]
    fn a_storm_trims_once_when_calm_has_lasted() {
        let mut watch = TrimWatch::default();
        // 19,000 clients drop and reconnect within three seconds.
        let storm = [(8_000, 19_000), (8_000, 19_000), (3_000, 19_000)];
        let trims = check(&mut watch, storm.into_iter().chain(calm(100, 19_000)));
        assert_eq!(trims, vec![3 + CALM_SECS as usize], "once, after the calm seconds");
    }

    #[test]
    fn a_fleet_connecting_does_not_trim() {
        let mut watch = TrimWatch::default();
        assert!(check(&mut watch, calm(200, 100_000)).is_empty());
    }

    #[test]
    fn few_closes_are_not_worth_a_trim() {
        let mut watch = TrimWatch::default();
        // 1,000 of 19,000: under CLOSES_MIN and an eighth of the connections.
        let trims = check(&mut watch, [(1_000, 19_000)].into_iter().chain(calm(100, 19_000)));
        assert!(trims.is_empty());
        // A mass disconnect: few left open, the closes count.
        let mut watch = TrimWatch::default();
        let trims = check(&mut watch, [(18_000, 1_000)].into_iter().chain(calm(100, 1_000)));
        assert_eq!(trims, vec![1 + CALM_SECS as usize]);
    }

    #[test]
    fn a_steady_trickle_trims_at_most_once_per_interval() {
        let mut watch = TrimWatch::default();
        // 70 closes a second among 100,000 connections: a trickle (under 1/256).
        let trims = check(&mut watch, std::iter::repeat_n((70, 100_000), 600));
        assert!(!trims.is_empty());
        assert!(trims.windows(2).all(|w| w[1] - w[0] >= TRIM_INTERVAL_MIN_SECS as usize));
        // The same rate among 10,000 connections is a storm that never calms.
        let mut watch = TrimWatch::default();
        assert!(check(&mut watch, std::iter::repeat_n((70, 10_000), 600)).is_empty());
    }

    #[test]
    fn storms_closer_than_the_interval_wait_for_it() {
        let mut watch = TrimWatch::default();
        let storm = || std::iter::once((19_000, 19_000));
        let seconds =
            storm().chain(calm(CALM_SECS as usize, 19_000)).chain(storm()).chain(calm(100, 19_000));
        let trims = check(&mut watch, seconds);
        let first = 1 + CALM_SECS as usize;
        assert_eq!(trims, vec![first, first + TRIM_INTERVAL_MIN_SECS as usize]);
    }

    #[test]
    fn closes_are_connects_less_the_change_in_connections() {
        assert_eq!(closes((0, 0), (19_000, 19_000)), 0, "a fleet connecting");
        assert_eq!(closes((19_000, 19_000), (38_000, 19_000)), 19_000, "a reconnect storm");
        assert_eq!(closes((19_000, 19_000), (19_000, 1_000)), 18_000, "a mass disconnect");
        assert_eq!(closes((19_000, 19_000), (19_500, 18_000)), 1_500);
    }

    #[test]
    fn trimming_reports_what_it_gave_back() {
        let rss = std::cell::Cell::new(10_000_000);
        let trimmed = trim(|| rss.replace(9_000_000));
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(trimmed.map(|t| t.bytes), Some(1_000_000));
        } else {
            assert!(trimmed.is_none());
        }
    }
}
