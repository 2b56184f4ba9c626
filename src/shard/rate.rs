//! Token buckets for rate limits (per-client publish rates, per-shard accept rate).
//! Time is passed in.

use std::time::{Duration, Instant};

/// A bucket of `rate` tokens per second holding at most one second's worth.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u64, now: Instant) -> Self {
        let rate = rate_per_sec as f64;
        TokenBucket { rate, tokens: rate, last: now }
    }

    /// Takes `cost` tokens (the balance may go negative: the cost is paid by
    /// waiting). Returns how long to wait until the balance is positive again, if
    /// it is not now.
    pub fn take(&mut self, cost: u64, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.tokens -= cost as f64;
        if self.tokens >= 0.0 {
            None
        } else {
            Some(Duration::from_secs_f64(-self.tokens / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_of_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, start);
        for _ in 0..10 {
            assert_eq!(bucket.take(1, start), None);
        }
        let wait = bucket.take(1, start).expect("the burst is spent");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9);
        // After the wait, one more token is there.
        assert_eq!(bucket.take(0, start + Duration::from_millis(100)), None);
        // Idle time refills at most one second's worth.
        let later = start + Duration::from_secs(60);
        for _ in 0..10 {
            assert_eq!(bucket.take(1, later), None);
        }
        assert!(bucket.take(1, later).is_some());
    }
}
