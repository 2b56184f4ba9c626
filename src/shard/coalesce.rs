//! Receive coalescing: under a flood, arrivals are taken once per wait instead of
//! as they come, the way a network card moderates its interrupts.
//!
//! Why: a client that writes one packet per write, as devices do, costs the shard
//! a receive and, every second segment, a TCP acknowledgement per arrival, and on
//! loopback the kernel also charges the shard for the client's side of that
//! acknowledgement. Measured with `nanomq_cli bench` (20 publishers, QoS 0 flood,
//! broker on one core): 81% of the shard's CPU was kernel time, a third of it the
//! acknowledgements; the shard sent one per 2 segments where Mosquitto, busier and
//! so later to read, sent one per 5. Taking arrivals at most once per 2 ms lets
//! every receive gather several packets: 6.01 -> 1.51 CPU-us per delivered message
//! (Mosquitto 8.15), 95,000 -> 120,000 delivered msgs/s with the generator's core
//! saturated (`bench-harness/results/2026-12-07-coalesce/`).
//!
//! When: only while most arrivals come from connections that sent something else
//! less than a quarter of a wait before (each of them would bring four or more
//! packets per wait), and only while a wait does gather three or more QoS 0 PUBLISH
//! packets per arrival. So a connection must send more than 2,000 packets a
//! second (with the default 2 ms wait) to be held at all: 16 connections at 1,250
//! msgs/s each (`make bench`'s latency case) turned it on with a bound of half a
//! wait, and their p99 latency went from 360 us to 2.4 ms. A connection sending
//! 100 messages a second never turns it on, so neither does a fleet of them at
//! any total rate: what a wait would save there is the shard's wake-ups, and a
//! timer per wait costs about as much on this VM (10k msgs/s from 100
//! publishers, runs minutes apart: 15.8 CPU-us per message without, 14.9 with 1
//! ms waits and a p99 of 2 ms against 1).
//!
//! Only QoS 0 counts: a QoS 1 or 2 publisher waits for its acknowledgements, and
//! a client that keeps few in flight would slow down to a few messages per wait
//! (nanomq_cli's QoS 1 flood from 20 publishers: 36,000 delivered msgs/s without,
//! 19,700 with 2 ms waits).
//!
//! Cost: while on, an arrival waits up to the wait (`recv_coalesce_us`) before it
//! is read, and so does anything else the shard waits for in its park (timers,
//! wake-ups from other shards).
//!
//! Sans-IO: time is an argument; the shard's park hook and reaper act on it.

use std::time::Duration;

/// How long the arrivals are watched before on or off is decided again.
const WINDOW_US: u64 = 16_000;
/// Arrivals a window needs before coalescing can be worth its timer.
const ARRIVALS_MIN: u32 = 32;

/// The shard's receive coalescing state.
#[derive(Debug)]
pub(crate) struct Coalesce {
    /// The longest an arrival waits; zero: never coalesce.
    wait_us: u32,
    on: bool,
    /// When arrivals were last taken, while on.
    taken_us: u64,
    window_start_us: u64,
    /// Arrivals (receive completions with data) in this window.
    arrivals: u32,
    /// ... of which came less than a quarter of a wait after their connection's
    /// previous one.
    near: u32,
    /// QoS 0 PUBLISH packets received when the window started.
    publishes_at_start: u64,
    pub stats: CoalesceStats,
}

/// Figures for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CoalesceStats {
    /// Times coalescing was turned on.
    pub switched_on: u64,
    /// Parks that waited for arrivals to gather.
    pub waits: u64,
}

impl Coalesce {
    /// `wait`: the longest an arrival may wait; `None` turns coalescing off.
    pub fn new(wait: Option<Duration>) -> Coalesce {
        let wait_us = wait.map_or(0, |d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
        Coalesce {
            wait_us,
            on: false,
            taken_us: 0,
            window_start_us: 0,
            arrivals: 0,
            near: 0,
            publishes_at_start: 0,
            stats: CoalesceStats::default(),
        }
    }

    /// Whether coalescing may ever turn on: only then does the shard keep time for it.
    pub fn enabled(&self) -> bool {
        self.wait_us > 0
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// An arrival at `now_us` on a connection whose previous one was at `*last`
    /// (microseconds, wrapping; updated).
    pub fn arrival(&mut self, now_us: u64, last: &mut u32) {
        let now = now_us as u32;
        if *last != 0 && now.wrapping_sub(*last) < self.wait_us / 4 {
            self.near += 1;
        }
        self.arrivals += 1;
        // Zero means "none yet".
        *last = now.max(1);
    }

    /// Decides, once a window has passed, whether the next waits coalesce;
    /// `publishes` is the shard's count of QoS 0 PUBLISH packets received so far.
    pub fn review(&mut self, now_us: u64, publishes: u64) {
        if now_us.saturating_sub(self.window_start_us) < WINDOW_US {
            return;
        }
        let gathered = publishes.saturating_sub(self.publishes_at_start);
        let arrivals = u64::from(self.arrivals);
        let busy = self.arrivals >= ARRIVALS_MIN;
        let next = if self.on {
            // A wait that brings fewer than three per arrival saves too little
            // for the latency it adds.
            busy && gathered >= 3 * arrivals
        } else {
            busy && 2 * self.near >= self.arrivals && gathered >= arrivals
        };
        if next && !self.on {
            self.stats.switched_on += 1;
            self.taken_us = now_us;
        }
        self.on = next;
        self.window_start_us = now_us;
        self.arrivals = 0;
        self.near = 0;
        self.publishes_at_start = publishes;
    }

    /// How long arrivals are still held at `now_us`: `None` when they are to be
    /// taken now (coalescing off, or the wait is over).
    pub fn hold_for(&self, now_us: u64) -> Option<Duration> {
        if !self.on {
            return None;
        }
        let due = self.taken_us + u64::from(self.wait_us);
        (due > now_us).then(|| Duration::from_micros(due - now_us))
    }

    /// The shard takes the arrivals at `now_us`; the next wait starts.
    pub fn taken(&mut self, now_us: u64) {
        self.taken_us = now_us;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: u64 = 2_000;

    fn coalesce() -> Coalesce {
        Coalesce::new(Some(Duration::from_micros(WAIT)))
    }

    /// `conns` connections each arriving every `gap_us` with `publishes_each` QoS 0
    /// PUBLISH packets,
    /// for `windows` windows from `*now`; returns whether it was on at the end.
    fn drive(
        c: &mut Coalesce,
        now: &mut u64,
        publishes: &mut u64,
        conns: usize,
        gap_us: u64,
        publishes_each: u64,
        windows: u64,
    ) -> bool {
        let mut last = vec![0u32; conns];
        let end = *now + windows * WINDOW_US;
        while *now < end {
            for l in &mut last {
                c.arrival(*now, l);
                *publishes += publishes_each;
            }
            *now += gap_us;
            c.review(*now, *publishes);
        }
        c.is_on()
    }

    #[test]
    fn a_flood_from_few_connections_turns_it_on_and_a_trickle_off() {
        let (mut c, mut now, mut publishes) = (coalesce(), 1_000, 0);
        // 20 publishers, one packet every 200 us each: on after a window.
        assert!(drive(&mut c, &mut now, &mut publishes, 20, 200, 1, 1));
        assert_eq!(c.stats.switched_on, 1);
        // Held: each arrival now brings about ten publishes; it stays on.
        assert!(drive(&mut c, &mut now, &mut publishes, 20, WAIT, 10, 3));
        // The flood thins out: two per arrival, and it turns off.
        assert!(!drive(&mut c, &mut now, &mut publishes, 20, WAIT, 2, 2));
    }

    #[test]
    fn connections_at_a_few_packets_per_wait_are_not_held() {
        let (mut c, mut now, mut publishes) = (coalesce(), 1_000, 0);
        // 16 connections at 1,250 msgs/s each: 2.5 packets per wait, and a wait
        // would add its whole length to their latency.
        assert!(!drive(&mut c, &mut now, &mut publishes, 16, 800, 1, 4));
        assert_eq!(c.stats.switched_on, 0);
    }

    #[test]
    fn many_slow_connections_never_turn_it_on() {
        let (mut c, mut now, mut publishes) = (coalesce(), 1_000, 0);
        // 10k msgs/s from 100 publishers: each sends every 10 ms.
        let mut last = vec![0u32; 100];
        for round in 0..200u64 {
            for (i, l) in last.iter_mut().enumerate() {
                let at = now + round * 10_000 + i as u64 * 100;
                c.arrival(at, l);
                publishes += 1;
                c.review(at, publishes);
            }
        }
        assert!(!c.is_on());
        assert_eq!(c.stats.switched_on, 0);
        now += 200 * 10_000;
        // And a lone fast connection is too few arrivals to pay for the timer.
        assert!(!drive(&mut c, &mut now, &mut publishes, 1, 1_000, 1, 3));
    }

    #[test]
    fn acknowledged_publishes_never_turn_it_on() {
        let (mut c, mut now, mut publishes) = (coalesce(), 1_000, 0);
        // A QoS 1 flood: arrivals as fast as QoS 0's, no QoS 0 publish among them.
        assert!(!drive(&mut c, &mut now, &mut publishes, 20, 200, 0, 4));
        assert_eq!(c.stats.switched_on, 0);
    }

    #[test]
    fn holds_arrivals_for_at_most_the_wait() {
        let (mut c, mut now, mut publishes) = (coalesce(), 1_000, 0);
        assert_eq!(c.hold_for(now), None, "off: taken at once");
        assert!(drive(&mut c, &mut now, &mut publishes, 20, 100, 1, 1));
        c.taken(now);
        assert_eq!(c.hold_for(now), Some(Duration::from_micros(WAIT)));
        assert_eq!(c.hold_for(now + 500), Some(Duration::from_micros(WAIT - 500)));
        assert_eq!(c.hold_for(now + WAIT), None, "due");
    }

    #[test]
    fn off_without_a_wait() {
        let mut c = Coalesce::new(None);
        assert!(!c.enabled());
        let (mut now, mut publishes) = (1_000, 0);
        assert!(!drive(&mut c, &mut now, &mut publishes, 20, 10, 1, 3));
        assert_eq!(c.hold_for(now), None);
    }
}
