//! [`Budget`]: Finagle's RetryBudget, in exact fixed-point arithmetic.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

use sheave_core::time::now_cached;

/// Units per request at a ratio of 1.0: ratios are exact to one part per million.
const SCALE: i64 = 1_000_000;

/// Slots of the sliding window.
const SLOTS: usize = 10;

/// The configuration of a retry [`Budget`].
///
/// Within any window of `ttl`, the budget allows `min_per_second × ttl` retries plus `ratio`
/// retries per request. Defaults (Finagle's, and stable): `ttl` 10 s, 10 retries per second,
/// ratio 0.2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    ttl: Duration,
    min_per_second: u32,
    ratio: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ttl: Duration::from_secs(10),
            min_per_second: 10,
            ratio: 0.2,
        }
    }
}

impl BudgetConfig {
    /// The defaults: `ttl` 10 s, 10 retries per second, ratio 0.2.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a deposit (a request) or a withdrawal (a retry) counts.
    ///
    /// # Panics
    ///
    /// If `ttl` is under 10 ns (it is cut into ten slots) or over a year.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        assert!(
            ttl >= Duration::from_nanos(SLOTS as u64) && ttl <= Duration::from_secs(366 * 86_400),
            "the budget's ttl must be between 10 ns and a year"
        );
        self.ttl = ttl;
        self
    }

    /// Retries allowed per second even without traffic (so a quiet client can still retry).
    pub fn min_per_second(mut self, n: u32) -> Self {
        self.min_per_second = n;
        self
    }

    /// Retries allowed per request, e.g. `0.4`: 4 retries per 10 requests. Exact to one part
    /// per million (the ratio is rounded to the nearest millionth once, here); no other
    /// rounding happens.
    ///
    /// # Panics
    ///
    /// If `ratio` is negative, not finite, or above 1,000.
    pub fn ratio(mut self, ratio: f64) -> Self {
        assert!(
            ratio.is_finite() && (0.0..=1000.0).contains(&ratio),
            "the retry ratio must be within 0..=1000"
        );
        self.ratio = ratio;
        self
    }

    /// The configured window.
    pub fn get_ttl(&self) -> Duration {
        self.ttl
    }

    /// The configured minimum.
    pub fn get_min_per_second(&self) -> u32 {
        self.min_per_second
    }

    /// The configured ratio.
    pub fn get_ratio(&self) -> f64 {
        self.ratio
    }
}

/// A retry budget (Finagle's `RetryBudget`): each request deposits, each retry withdraws, so
/// retries never exceed a ratio of the traffic — in an outage, retries cannot multiply load.
///
/// # Arithmetic
///
/// Amounts are integers in millionths of a retry: a request deposits `ratio × 1,000,000`
/// units, a retry withdraws `1,000,000`, and the balance is the sum over the last `ttl` plus
/// a reserve of `min_per_second × ttl` retries. A ratio of 0.4 therefore allows exactly 4
/// retries per 10 requests (tower's `TpsBudget` turns 0.4 into one retry per 2 requests: its
/// #857). The window slides in ten slots of `ttl / 10`, so an amount expires between 0.9 and
/// 1.0 `ttl` after it was counted.
///
/// The clock is [`now_cached`]: the loop's wake-up time.
pub struct Budget {
    config: BudgetConfig,
    deposit: i64,
    reserve: i64,
    slot_len: Duration,
    slots: [Cell<i64>; SLOTS],
    current: Cell<usize>,
    slot_end: Cell<Instant>,
    /// The sum of `slots`.
    sum: Cell<i64>,
}

impl Budget {
    /// A fresh budget (the reserve is available at once).
    pub fn new(config: BudgetConfig) -> Self {
        let deposit = (config.ratio * SCALE as f64).round() as i64;
        let ttl_ns = config.ttl.as_nanos();
        // min_per_second × ttl retries, in units; ttl is whole nanoseconds, so this is exact
        // whenever min_per_second × ttl is a whole number of retries.
        let reserve = u128::from(config.min_per_second) * ttl_ns * SCALE as u128 / 1_000_000_000;
        let slot_len = config.ttl / SLOTS as u32;
        Budget {
            config,
            deposit,
            reserve: i64::try_from(reserve).unwrap_or(i64::MAX / 2),
            slot_len,
            slots: Default::default(),
            current: Cell::new(0),
            slot_end: Cell::new(now_cached() + slot_len),
            sum: Cell::new(0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> BudgetConfig {
        self.config
    }

    /// Expires the slots that ended by `now`.
    fn advance(&self, now: Instant) {
        let end = self.slot_end.get();
        if now < end {
            return;
        }
        let slot_ns = self.slot_len.as_nanos();
        let behind = 1 + (now - end).as_nanos() / slot_ns;
        for _ in 0..behind.min(SLOTS as u128) {
            let next = (self.current.get() + 1) % SLOTS;
            self.current.set(next);
            self.sum.set(self.sum.get() - self.slots[next].replace(0));
        }
        let step = u64::try_from(behind * slot_ns).unwrap_or(u64::MAX);
        self.slot_end.set(end + Duration::from_nanos(step));
    }

    fn add(&self, amount: i64) {
        let slot = &self.slots[self.current.get()];
        slot.set(slot.get() + amount);
        self.sum.set(self.sum.get() + amount);
    }

    fn balance_at(&self, now: Instant) -> i64 {
        self.advance(now);
        self.sum.get() + self.reserve
    }

    /// Records a request.
    pub fn deposit(&self) {
        self.advance(now_cached());
        self.add(self.deposit);
    }

    /// Records a request; true if a retry would be allowed now. One clock read for both.
    pub(crate) fn deposit_and_check(&self) -> bool {
        self.advance(now_cached());
        self.add(self.deposit);
        self.sum.get() + self.reserve >= SCALE
    }

    /// True if a retry would be allowed now (without taking it).
    pub fn can_withdraw(&self) -> bool {
        self.balance_at(now_cached()) >= SCALE
    }

    /// Takes one retry from the budget, if the balance allows it.
    pub fn try_withdraw(&self) -> bool {
        if self.balance_at(now_cached()) < SCALE {
            return false;
        }
        self.add(-SCALE);
        true
    }

    /// Whole retries available now.
    pub fn available(&self) -> u64 {
        u64::try_from(self.balance_at(now_cached()) / SCALE).unwrap_or(0)
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("config", &self.config)
            .field(
                "balance",
                &((self.sum.get() + self.reserve) as f64 / SCALE as f64),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::paused;
    use sheave_core::time::sleep;

    #[test]
    fn forty_percent_allows_exactly_forty_percent() {
        // Pins tower #857: its TpsBudget allows 50% here.
        paused().block_on(async {
            let b = Budget::new(BudgetConfig::new().ratio(0.4).min_per_second(0));
            let mut retries = 0;
            for _ in 0..10_000 {
                b.deposit();
                while b.try_withdraw() {
                    retries += 1;
                }
            }
            assert_eq!(retries, 4_000);
        });
    }

    #[test]
    fn the_reserve_allows_min_per_second_times_ttl_and_refills_after_the_ttl() {
        paused().block_on(async {
            let config = BudgetConfig::new()
                .ratio(0.0)
                .min_per_second(3)
                .ttl(Duration::from_secs(2));
            let b = Budget::new(config);
            assert_eq!(b.available(), 6);
            let mut n = 0;
            while b.try_withdraw() {
                n += 1;
            }
            assert_eq!(n, 6);
            sleep(Duration::from_millis(1_999)).await;
            assert!(!b.can_withdraw(), "withdrawals still count");
            sleep(Duration::from_millis(1)).await;
            assert_eq!(b.available(), 6, "the window slid past them");
        });
    }

    #[test]
    fn deposits_expire_with_the_window() {
        paused().block_on(async {
            let config = BudgetConfig::new().ratio(1.0).min_per_second(0);
            let b = Budget::new(config);
            b.deposit();
            b.deposit();
            assert_eq!(b.available(), 2);
            sleep(Duration::from_secs(10)).await;
            assert_eq!(b.available(), 0);
        });
    }
}
