//! Token buckets for per-client publish rate limits (and the IO layer's accept
//! rate limit). Time is an argument, in
//! milliseconds of the shard's monotonic clock.

/// A bucket of `rate` tokens per second, holding at most one second's worth.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    pub(crate) fn new(rate_per_sec: u64, now_ms: u64) -> Self {
        let rate = rate_per_sec as f64;
        TokenBucket { rate, tokens: rate, last_ms: now_ms }
    }

    /// Takes `cost` tokens. Returns `None` when they were there, or how many
    /// milliseconds to wait before the debt is paid back.
    pub(crate) fn take(&mut self, cost: u64, now_ms: u64) -> Option<u64> {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.tokens -= cost as f64;
        if self.tokens >= 0.0 {
            None
        } else {
            Some(((-self.tokens / self.rate) * 1000.0).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_of_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(10, 0);
        for _ in 0..10 {
            assert_eq!(bucket.take(1, 0), None);
        }
        assert_eq!(bucket.take(1, 0), Some(100), "one token owed: 100 ms at 10/s");
        assert_eq!(bucket.take(0, 100), None);
        for _ in 0..10 {
            assert_eq!(bucket.take(1, 60_000), None);
        }
        assert!(bucket.take(1, 60_000).is_some());
    }
}
