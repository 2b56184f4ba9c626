//! The open-loop schedule.
//!
//! With `--rate R` and `P` publishers, the whole run is one evenly spaced
//! sequence of intended send times, `start + g * 1e9 / R` for the global
//! message index `g`; publisher `i` owns the indices `g = k * P + i`, so its
//! `k`-th message is due at `start + (k * P + i) * 1e9 / R`. Intended times
//! are computed from the index alone and never from when a send happened, so
//! a stalled broker (or generator) cannot make the schedule wait: latency is
//! measured from the intended time and the stall shows up in it
//! (no coordinated omission).

/// The intended send times of one publisher (or one connection-storm shard).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start_ns: u64,
    /// Total rate over all streams, per second; 0 = as fast as possible.
    rate: u64,
    streams: u64,
    index: u64,
}

impl Schedule {
    /// Stream `index` of `streams` sharing a total `rate` per second.
    pub fn new(start_ns: u64, rate: u64, streams: u64, index: u64) -> Schedule {
        assert!(streams > 0 && index < streams, "bad schedule stream");
        Schedule { start_ns, rate, streams, index }
    }

    /// True when the schedule is open-loop (a fixed rate).
    pub fn is_open_loop(&self) -> bool {
        self.rate > 0
    }

    /// Intended send time of message `k` of this stream. For a closed-loop
    /// schedule (rate 0) there is no intended time; this returns `start`.
    #[inline]
    pub fn intended(&self, k: u64) -> u64 {
        if self.rate == 0 {
            return self.start_ns;
        }
        let g = k as u128 * self.streams as u128 + self.index as u128;
        self.start_ns + (g * 1_000_000_000 / self.rate as u128) as u64
    }

    /// Number of messages of this stream due at time `now` (those with an
    /// intended time `<= now`), i.e. the index of the first message not yet due.
    pub fn due_count(&self, now_ns: u64) -> u64 {
        if self.rate == 0 || now_ns < self.intended(0) {
            return 0;
        }
        // Solve (k*P + i) * 1e9 / R <= now - start for the largest k, then
        // correct for integer rounding.
        let elapsed = (now_ns - self.start_ns) as u128;
        let g = elapsed * self.rate as u128 / 1_000_000_000;
        let mut k = if g >= self.index as u128 {
            ((g - self.index as u128) / self.streams as u128) as u64 + 1
        } else {
            0
        };
        while k > 0 && self.intended(k - 1) > now_ns {
            k -= 1;
        }
        while self.intended(k) <= now_ns {
            k += 1;
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_evenly_spaced() {
        let s = Schedule::new(1_000, 1_000, 1, 0); // 1000/s: every 1 ms
        for k in 0..100 {
            assert_eq!(s.intended(k), 1_000 + k * 1_000_000);
        }
    }

    #[test]
    fn streams_interleave_into_one_even_sequence() {
        // 4 publishers sharing 4000 msgs/s: together one message every 250 us.
        let scheds: Vec<Schedule> = (0..4).map(|i| Schedule::new(0, 4_000, 4, i)).collect();
        let mut all: Vec<u64> =
            scheds.iter().flat_map(|s| (0..50).map(move |k| s.intended(k))).collect();
        all.sort_unstable();
        for (g, t) in all.iter().enumerate() {
            assert_eq!(*t, g as u64 * 250_000);
        }
        // Each publisher on its own is evenly spaced at 1000/s.
        for s in &scheds {
            for k in 1..50 {
                assert_eq!(s.intended(k) - s.intended(k - 1), 1_000_000);
            }
        }
    }

    #[test]
    fn intended_times_do_not_depend_on_when_sends_happen() {
        // Asking late, early, repeatedly or out of order gives the same times:
        // the schedule has no state that a slow send could shift.
        let s = Schedule::new(5_000_000, 3_000, 3, 2);
        let first: Vec<u64> = (0..1000).map(|k| s.intended(k)).collect();
        let _ = s.due_count(u64::MAX / 4); // a "very late" caller
        let again: Vec<u64> = (0..1000).rev().map(|k| s.intended(k)).collect();
        assert!(first.iter().eq(again.iter().rev()));
        // Non-integral spacing (3 msgs/s over 7 streams) stays exact: no drift.
        let s = Schedule::new(0, 3, 7, 0);
        assert_eq!(s.intended(3_000), 7_000_000_000_000);
    }

    #[test]
    fn due_count_matches_intended() {
        let s = Schedule::new(1_000_000, 7_777, 5, 3);
        let mut now = 0;
        while now < 20_000_000 {
            let n = s.due_count(now);
            if n > 0 {
                assert!(s.intended(n - 1) <= now);
            }
            assert!(s.intended(n) > now);
            now += 12_345;
        }
        assert_eq!(Schedule::new(0, 0, 1, 0).due_count(1_000), 0);
        assert!(!Schedule::new(0, 0, 1, 0).is_open_loop());
    }
}
