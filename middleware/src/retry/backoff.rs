//! [`Backoff`]: exponential, capped, with jitter.

use std::time::Duration;

use rand::Rng;

/// How long to wait before each retry: exponential, capped, with jitter.
///
/// Before retry `k` (1 for the first retry) the nominal delay is `base × 2^(k-1)`, capped at
/// `max`; the actual delay is drawn uniformly from `[nominal × (1 − jitter), nominal]`. The
/// default jitter is 0.5 ("equal jitter": at least half the nominal delay, so retries still
/// back off, and spread over the other half, so clients that failed together do not retry
/// together). A jitter of 1.0 is "full jitter", 0.0 none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: f64,
}

impl Default for Backoff {
    /// 10 ms doubling up to 1 s, jitter 0.5.
    fn default() -> Self {
        Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1))
    }
}

impl Backoff {
    /// Exponential from `base`, capped at `max`, jitter 0.5.
    pub fn exponential(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            jitter: 0.5,
        }
    }

    /// Retry at once (no timer).
    pub fn none() -> Self {
        Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
            jitter: 0.0,
        }
    }

    /// The fraction of the nominal delay that is random, within `0.0..=1.0`.
    ///
    /// # Panics
    ///
    /// If `jitter` is outside `0.0..=1.0`.
    pub fn jitter(mut self, jitter: f64) -> Self {
        assert!((0.0..=1.0).contains(&jitter), "jitter must be within 0..=1");
        self.jitter = jitter;
        self
    }

    /// The nominal (un-jittered) delay before retry `retry` (1-based); never more than
    /// `u64::MAX` nanoseconds (≈ 584 years), so `Duration::MAX` works as "no cap".
    pub fn nominal(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base
            .saturating_mul(factor)
            .min(self.max)
            .min(Duration::from_nanos(u64::MAX))
    }

    /// The window `[low, high]` the delay before retry `retry` is drawn from.
    pub fn window(&self, retry: u32) -> (Duration, Duration) {
        let high = self.nominal(retry);
        (high.mul_f64(1.0 - self.jitter), high)
    }

    /// The delay before retry `retry`, drawn from [`window`](Backoff::window) with `rng`.
    pub fn delay_with(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let (low, high) = self.window(retry);
        if low == high {
            return high;
        }
        let ns = rng.random_range(low.as_nanos() as u64..=high.as_nanos() as u64);
        Duration::from_nanos(ns)
    }

    /// The delay before retry `retry`, drawn with the thread's generator.
    pub fn delay(&self, retry: u32) -> Duration {
        if self.jitter == 0.0 || self.max.is_zero() {
            return self.nominal(retry);
        }
        self.delay_with(retry, &mut rand::rng())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_fall_in_their_jitter_windows() {
        let b = Backoff::exponential(Duration::from_millis(10), Duration::from_millis(100));
        let nominal: Vec<u128> = (1..=6).map(|k| b.nominal(k).as_millis()).collect();
        assert_eq!(nominal, [10, 20, 40, 80, 100, 100]);
        assert_eq!(b.nominal(u32::MAX), Duration::from_millis(100));
        // Regression (review): past u64::MAX ns the jitter window's bounds truncated, and
        // drawing from the (empty) range panicked.
        let uncapped = Backoff::exponential(Duration::from_secs(3600), Duration::MAX);
        for k in 1..=64 {
            let (low, high) = uncapped.window(k);
            let d = uncapped.delay(k);
            assert!(
                low <= d && d <= high,
                "{k}: {d:?} outside {low:?}..={high:?}"
            );
        }
        for k in 1..=6 {
            let (low, high) = b.window(k);
            assert_eq!(low, high / 2);
            for _ in 0..1_000 {
                let d = b.delay(k);
                assert!(low <= d && d <= high, "{d:?} outside {low:?}..={high:?}");
            }
        }
    }

    #[test]
    fn none_waits_nothing() {
        assert_eq!(Backoff::none().delay(5), Duration::ZERO);
    }
}
