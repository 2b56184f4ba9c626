//! Delivery accounting: loss, duplicates and reordering, per (subscriber,
//! publisher) stream, plus latency histogram helpers.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// What one arriving sequence number was, relative to what came before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First copy, and no higher sequence seen before it.
    InOrder,
    /// First copy, but a higher sequence had already arrived.
    OutOfOrder,
    /// A sequence seen before.
    Duplicate,
}

/// Tracks the sequences received from one publisher by one subscriber. Keeps
/// one bit per sequence number (exact duplicate detection over the whole run;
/// 10 million messages cost 1.25 MB).
#[derive(Debug, Default, Clone)]
pub struct StreamTracker {
    seen: Vec<u64>,
    max_seen: Option<u64>,
}

impl StreamTracker {
    /// Records the arrival of `seq` and classifies it.
    #[inline]
    pub fn observe(&mut self, seq: u64) -> Arrival {
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.seen.len() {
            let want = (word + 1).max(self.seen.len() * 2).max(16);
            self.seen.resize(want, 0);
        }
        if self.seen[word] & bit != 0 {
            return Arrival::Duplicate;
        }
        self.seen[word] |= bit;
        match self.max_seen {
            Some(m) if seq < m => Arrival::OutOfOrder,
            _ => {
                self.max_seen = Some(seq);
                Arrival::InOrder
            }
        }
    }
}

/// Counters of one subscriber (or many, once merged). `_w` counts only the
/// messages whose intended send time falls inside the measured window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// First copies (intended in window).
    pub unique_w: u64,
    /// Duplicates (intended in window).
    pub dup_w: u64,
    /// Out-of-order first copies (intended in window).
    pub ooo_w: u64,
    /// Every PUBLISH received, whenever intended, duplicates included.
    pub received_total: u64,
    /// Duplicates over the whole run.
    pub dup_total: u64,
    /// Payloads too short for the header, or from an unknown publisher.
    pub corrupt: u64,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.unique_w += o.unique_w;
        self.dup_w += o.dup_w;
        self.ooo_w += o.ooo_w;
        self.received_total += o.received_total;
        self.dup_total += o.dup_total;
        self.corrupt += o.corrupt;
    }
}

/// A trivial hasher for small integer keys (publisher ids).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The per-subscriber delivery accounting.
#[derive(Debug, Default)]
pub struct SubscriberStats {
    streams: HashMap<u32, StreamTracker, BuildHasherDefault<IdHasher>>,
    pub tally: Tally,
}

impl SubscriberStats {
    /// Accounts one received message. Returns true when it is the first copy
    /// of a message intended inside the window (its latency should be recorded).
    #[inline]
    pub fn on_message(&mut self, publisher: u32, seq: u64, in_window: bool) -> bool {
        self.tally.received_total += 1;
        let arrival = self.streams.entry(publisher).or_default().observe(seq);
        match (arrival, in_window) {
            (Arrival::Duplicate, w) => {
                self.tally.dup_total += 1;
                if w {
                    self.tally.dup_w += 1;
                }
                false
            }
            (_, false) => false,
            (a, true) => {
                self.tally.unique_w += 1;
                if a == Arrival::OutOfOrder {
                    self.tally.ooo_w += 1;
                }
                true
            }
        }
    }
}

/// A latency histogram in nanoseconds, 3 significant digits, auto-resizing.
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant digits is a valid histogram precision");
    h.auto(true);
    h
}

/// The summary of a latency histogram, in microseconds.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        LatencySummary {
            count: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1_000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> Tally {
        let mut s = SubscriberStats::default();
        for &q in seqs {
            s.on_message(1, q, true);
        }
        s.tally
    }

    #[test]
    fn in_order_stream_has_nothing_to_report() {
        let t = run(&(0..1000).collect::<Vec<_>>());
        assert_eq!(t.unique_w, 1000);
        assert_eq!((t.dup_w, t.ooo_w), (0, 0));
    }

    #[test]
    fn duplicates_are_counted_once_each() {
        let t = run(&[0, 1, 1, 2, 2, 2, 3, 0]);
        assert_eq!(t.unique_w, 4);
        assert_eq!(t.dup_w, 4);
        assert_eq!(t.dup_total, 4);
        assert_eq!(t.received_total, 8);
        assert_eq!(t.ooo_w, 0, "a duplicate is not also out of order");
    }

    #[test]
    fn reordering_and_gaps() {
        // 0 1 3 2 5 4 ; 6..9 missing ; 10
        let t = run(&[0, 1, 3, 2, 5, 4, 10]);
        assert_eq!(t.unique_w, 7);
        assert_eq!(t.ooo_w, 2); // 2 after 3, 4 after 5
                                // Loss is the sender's count minus the unique receipts: 11 - 7.
        assert_eq!(11 - t.unique_w, 4);
    }

    #[test]
    fn streams_are_independent_per_publisher() {
        let mut s = SubscriberStats::default();
        assert!(s.on_message(1, 5, true));
        assert!(s.on_message(2, 0, true)); // publisher 2 seq 0 is not "out of order"
        assert!(!s.on_message(2, 0, true));
        assert_eq!(s.tally.ooo_w, 0);
        assert_eq!(s.tally.dup_w, 1);
    }

    #[test]
    fn outside_window_is_tracked_but_not_counted() {
        let mut s = SubscriberStats::default();
        assert!(!s.on_message(1, 0, false)); // warmup
        assert!(s.on_message(1, 1, true));
        assert!(!s.on_message(1, 0, true)); // a duplicate of a warmup message
        assert_eq!(s.tally.unique_w, 1);
        assert_eq!(s.tally.dup_w, 1);
        assert_eq!(s.tally.received_total, 3);
    }

    #[test]
    fn large_and_sparse_sequences() {
        let mut tr = StreamTracker::default();
        assert_eq!(tr.observe(1_000_000), Arrival::InOrder);
        assert_eq!(tr.observe(63), Arrival::OutOfOrder);
        assert_eq!(tr.observe(64), Arrival::OutOfOrder);
        assert_eq!(tr.observe(1_000_000), Arrival::Duplicate);
        assert_eq!(tr.observe(1_000_001), Arrival::InOrder);
    }

    #[test]
    fn tallies_merge() {
        let mut a = run(&[0, 0, 2, 1]);
        a.add(&run(&[0, 1]));
        assert_eq!(a.unique_w, 5);
        assert_eq!(a.dup_w, 1);
        assert_eq!(a.ooo_w, 1);
    }

    #[test]
    fn latency_summary() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1_000).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() < 1.0);
        assert!((s.p99_us - 990.0).abs() < 1.0);
        assert!((s.max_us - 1000.0).abs() < 1.0);
        assert_eq!(LatencySummary::of(&new_histogram()).count, 0);
    }
}
