//! Hedged requests: when a request is slower than most, send a backup and take whichever
//! **succeeds** first.
//!
//! # What it guarantees
//!
//! - The backup goes out only after the request has been pending for the observed
//!   [`percentile`](HedgeConfig::percentile) of recent latencies (a rolling histogram of two
//!   windows), and only once [`min_samples`](HedgeConfig::min_samples) latencies were seen.
//! - **The first success wins.** A fast error does not beat a slower success: when one
//!   attempt fails, the hedge waits for the other, and returns an error only if both fail (the
//!   primary's). tower's hedge returns whichever finishes first, errors included.
//! - **The loser is cancelled**: its future is dropped as soon as a winner is known.
//! - **Bounded extra load.** Each request deposits into a [`Budget`] (default: backups ≤ 10%
//!   of requests, plus a small reserve per second) and each backup withdraws; a shared retry
//!   budget, if given, must allow it too — hedges and retries draw on one pool, so together
//!   they cannot multiply load in an outage.
//! - A backup needs capacity **now**: it takes the inner service's `try_ready` and is skipped
//!   when that says busy. Requests must be `Clone` (the backup is a clone).
//!
//! Behind a balancer the backup usually lands on another endpoint (p2c picks afresh).
//!
//! ```
//! use sheave_middleware::hedge::{Hedge, HedgeConfig};
//! use sheave_service::{service_fn, Error, ServiceExt};
//! use std::time::Duration;
//!
//! let rt = sheave_core::Runtime::builder().paused_clock().build().unwrap();
//! rt.block_on(async {
//!     let backend = service_fn(|n: u32| async move {
//!         sheave_core::time::sleep(Duration::from_millis(if n == 0 { 500 } else { 10 })).await;
//!         Ok::<_, Error>(n)
//!     });
//!     let hedged = Hedge::new(backend, HedgeConfig::default().min_samples(10));
//!     for n in 1..=20 {
//!         hedged.oneshot(n).await.unwrap(); // learn that 10 ms is normal
//!     }
//!     assert_eq!(hedged.oneshot(0).await.unwrap(), 0);
//! });
//! ```

use crate::retry::{Budget, BudgetConfig};
use futures::future::{Either, select};
use hdrhistogram::Histogram;
use sheave_core::time;
use sheave_service::{Error, Layer, Service, TryReady};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The parameters of a [`Hedge`]. Defaults are stable within a minor version.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeConfig {
    /// Send the backup after this percentile of recent latencies (default 0.95).
    pub percentile: f64,
    /// Latencies to observe before hedging at all (default 100).
    pub min_samples: u64,
    /// The length of one histogram window; the estimate uses the last full window (default
    /// 10 s).
    pub window: Duration,
    /// The backup budget (default: ratio 0.1, ttl 10 s, 1 per second reserve).
    pub budget: BudgetConfig,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            percentile: 0.95,
            min_samples: 100,
            window: Duration::from_secs(10),
            budget: BudgetConfig::new().ratio(0.1).min_per_second(1),
        }
    }
}

impl HedgeConfig {
    /// Hedge after percentile `p` (within 0..1).
    pub fn percentile(mut self, p: f64) -> Self {
        self.percentile = p.clamp(0.0, 1.0);
        self
    }

    /// Latencies to observe before hedging.
    pub fn min_samples(mut self, n: u64) -> Self {
        self.min_samples = n;
        self
    }

    /// The backup budget.
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.budget = budget;
        self
    }
}

/// Latencies of the current and the last window, in microseconds.
struct Rolling {
    current: Histogram<u64>,
    last: Histogram<u64>,
    rotate_at: Instant,
}

impl Rolling {
    fn new(window: Duration) -> Self {
        let hist =
            || Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds");
        Rolling {
            current: hist(),
            last: hist(),
            rotate_at: time::saturating_add(time::now_cached(), window),
        }
    }

    fn rotate(&mut self, now: Instant, window: Duration) {
        if now >= self.rotate_at {
            std::mem::swap(&mut self.current, &mut self.last);
            self.current.reset();
            self.rotate_at = time::saturating_add(now, window);
        }
    }

    fn record(&mut self, latency: Duration) {
        self.current
            .saturating_record((latency.as_micros() as u64).max(1));
    }

    /// The delay before a backup, from the last full window (or the current one while the
    /// first window fills).
    fn hedge_delay(&self, config: &HedgeConfig) -> Option<Duration> {
        let hist = if self.last.len() >= config.min_samples {
            &self.last
        } else {
            &self.current
        };
        (hist.len() >= config.min_samples.max(1))
            .then(|| Duration::from_micros(hist.value_at_quantile(config.percentile)))
    }
}

/// Sends a backup for slow requests; see the [module docs](self).
pub struct Hedge<S> {
    inner: S,
    config: HedgeConfig,
    latencies: RefCell<Rolling>,
    budget: Budget,
    retry_budget: Option<Rc<Budget>>,
    hedges: Cell<u64>,
}

impl<S: fmt::Debug> fmt::Debug for Hedge<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("config", &self.config)
            .field("hedges", &self.hedges.get())
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S> Hedge<S> {
    /// Hedges requests to `inner`.
    pub fn new(inner: S, config: HedgeConfig) -> Self {
        Hedge {
            inner,
            latencies: RefCell::new(Rolling::new(config.window)),
            budget: Budget::new(config.budget),
            retry_budget: None,
            config,
            hedges: Cell::new(0),
        }
    }

    /// Backups must also withdraw from `budget` — pass the budget of the retry layer
    /// ([`Retry::budget`](crate::Retry::budget)) so hedges and retries share one pool.
    pub fn with_retry_budget(mut self, budget: Rc<Budget>) -> Self {
        self.retry_budget = Some(budget);
        self
    }

    /// Backups sent so far.
    pub fn hedges(&self) -> u64 {
        self.hedges.get()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Whether a backup may go: both budgets agree (the hedge budget is checked first so a
    /// refusal there costs the retry budget nothing).
    fn may_hedge(&self) -> bool {
        if !self.budget.can_withdraw() {
            return false;
        }
        if let Some(retry) = &self.retry_budget
            && !retry.try_withdraw()
        {
            return false;
        }
        self.budget.try_withdraw()
    }

    fn record(&self, start: Instant) {
        let now = time::now();
        let mut latencies = self.latencies.borrow_mut();
        latencies.rotate(now, self.config.window);
        latencies.record(now.saturating_duration_since(start));
    }
}

impl<S, Req> Service<Req> for Hedge<S>
where
    S: Service<Req>,
    S::Error: Into<Error>,
    Req: Clone,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = S::Permit;

    async fn ready(&self) -> Result<S::Permit, Error> {
        self.inner.ready().await.map_err(Into::into)
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    fn try_ready(&self) -> TryReady<S::Permit, Error> {
        self.inner.try_ready().map_err(Into::into)
    }

    async fn call(&self, permit: S::Permit, req: Req) -> Result<S::Response, Error> {
        self.budget.deposit();
        let start = time::now();
        let delay = self.latencies.borrow().hedge_delay(&self.config);
        let Some(delay) = delay else {
            let out = self.inner.call(permit, req).await.map_err(Into::into);
            self.record(start);
            return out;
        };
        let mut primary = pin!(self.inner.call(permit, req.clone()));
        let timer = pin!(time::sleep_until(start + delay));
        let primary_first = match select(primary.as_mut(), timer).await {
            Either::Left((out, _)) => Some(out.map_err(Into::into)),
            Either::Right(((), _)) => None,
        };
        if let Some(out) = primary_first {
            self.record(start);
            return out;
        }
        // Slow: a backup, if the budgets and the service's capacity allow one now.
        // A permit the budget refuses is dropped here, not kept (as a `match` scrutinee's
        // temporary would be) while the primary runs out its time.
        let backup_permit = match self.inner.try_ready() {
            TryReady::Ready(p) => Some(p),
            _ => None,
        }
        .filter(|_| self.may_hedge());
        let backup_permit = match backup_permit {
            Some(p) => p,
            None => {
                let out = primary.await.map_err(Into::into);
                self.record(start);
                return out;
            }
        };
        self.hedges.set(self.hedges.get() + 1);
        let backup = pin!(self.inner.call(backup_permit, req));
        let out = match select(primary, backup).await {
            // The winner's result; the loser is dropped (cancelled) with the `select`.
            Either::Left((Ok(res), _)) => Ok(res),
            Either::Right((Ok(res), _)) => Ok(res),
            // One failed: the other may still succeed.
            Either::Left((Err(primary_err), backup)) => {
                backup.await.map_err(|_| primary_err.into())
            }
            Either::Right((Err(_), primary)) => primary.await.map_err(Into::into),
        };
        self.record(start);
        out
    }
}

/// A [`Layer`] of [`Hedge`]s.
#[derive(Debug, Clone, Copy)]
pub struct HedgeLayer {
    config: HedgeConfig,
}

impl HedgeLayer {
    /// Hedges with `config`.
    pub fn new(config: HedgeConfig) -> Self {
        HedgeLayer { config }
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;
    fn layer(&self, inner: S) -> Hedge<S> {
        Hedge::new(inner, self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheave_core::Runtime;
    use sheave_service::{ErrorKind, ServiceExt};

    /// A backend whose attempts take the next latency from a script and count cancellations.
    #[derive(Default)]
    struct Script {
        plan: RefCell<Vec<(Duration, bool)>>,
        started: Cell<u32>,
        cancelled: Rc<Cell<u32>>,
        /// When set, the first attempt of every request `n` with `n % 10 < 4` takes 1 s.
        slow_first: Cell<bool>,
        seen: RefCell<std::collections::HashSet<u32>>,
    }

    struct CancelCount(Rc<Cell<u32>>, bool);
    impl Drop for CancelCount {
        fn drop(&mut self) {
            if !self.1 {
                self.0.set(self.0.get() + 1);
            }
        }
    }

    impl Service<u32> for Script {
        type Response = u32;
        type Error = Error;
        type Permit = ();
        async fn ready(&self) -> Result<(), Error> {
            Ok(())
        }
        fn try_ready(&self) -> TryReady<(), Error> {
            TryReady::Ready(())
        }
        async fn call(&self, _: (), req: u32) -> Result<u32, Error> {
            self.started.set(self.started.get() + 1);
            let first = self.seen.borrow_mut().insert(req);
            let (delay, ok) = if self.slow_first.get() {
                let slow = first && req % 10 < 4;
                (Duration::from_millis(if slow { 1000 } else { 10 }), true)
            } else {
                self.plan
                    .borrow_mut()
                    .pop()
                    .unwrap_or((Duration::from_millis(10), true))
            };
            let mut guard = CancelCount(self.cancelled.clone(), false);
            time::sleep(delay).await;
            guard.1 = true;
            if ok {
                Ok(req)
            } else {
                Err(Error::msg(ErrorKind::Io, "reset"))
            }
        }
    }

    async fn warm(h: &Hedge<Script>) {
        for i in 0..20 {
            h.oneshot(i).await.unwrap();
        }
    }

    #[test]
    fn a_slow_request_gets_a_backup_at_the_percentile_and_the_loser_is_cancelled() {
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let h = Hedge::new(Script::default(), HedgeConfig::default().min_samples(20));
            warm(&h).await;
            // The primary would take 1 s; the backup 10 ms.
            h.get_ref().plan.borrow_mut().extend([
                (Duration::from_millis(10), true),
                (Duration::from_secs(1), true),
            ]);
            let start = time::now();
            assert_eq!(h.oneshot(7).await.unwrap(), 7);
            let took = time::now() - start;
            assert_eq!(h.hedges(), 1);
            // Hedged at p95 of 10 ms (the histogram's precision rounds it a little up).
            assert!(
                took >= Duration::from_millis(20) && took < Duration::from_millis(25),
                "{took:?}"
            );
            assert_eq!(
                h.get_ref().cancelled.get(),
                1,
                "the slow primary was dropped"
            );
        });
    }

    #[test]
    fn a_fast_error_does_not_beat_a_slower_success() {
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let h = Hedge::new(Script::default(), HedgeConfig::default().min_samples(20));
            warm(&h).await;
            // Primary: fails after 30 ms. Backup (sent at ~10 ms): succeeds after 50 ms.
            h.get_ref().plan.borrow_mut().extend([
                (Duration::from_millis(50), true),
                (Duration::from_millis(30), false),
            ]);
            assert_eq!(h.oneshot(9).await.unwrap(), 9);
        });
    }

    #[test]
    fn when_both_attempts_fail_the_primary_error_is_returned() {
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let h = Hedge::new(Script::default(), HedgeConfig::default().min_samples(20));
            warm(&h).await;
            h.get_ref().plan.borrow_mut().extend([
                (Duration::from_millis(50), false),
                (Duration::from_millis(30), false),
            ]);
            assert!(h.oneshot(9).await.unwrap_err().is_io());
        });
    }

    #[test]
    fn backups_stay_within_the_budget_when_many_requests_are_slow() {
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let budget = BudgetConfig::new().ratio(0.1).min_per_second(0);
            let config = HedgeConfig::default()
                .percentile(0.5)
                .min_samples(20)
                .budget(budget);
            let h = Hedge::new(Script::default(), config);
            warm(&h).await;
            // 40% of requests are slow on their first attempt: each would like a backup.
            h.get_ref().slow_first.set(true);
            let before = h.hedges();
            for i in 1_000..2_000 {
                h.oneshot(i).await.unwrap();
            }
            let backups = h.hedges() - before;
            assert!(
                backups <= 102,
                "{backups} backups for 1,000 requests (budget 10%)"
            );
            assert!(backups >= 80, "the budget was used: {backups}");
        });
    }

    #[test]
    fn a_shared_retry_budget_that_is_empty_stops_backups() {
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let empty = Rc::new(Budget::new(
                BudgetConfig::new().ratio(0.0).min_per_second(0),
            ));
            let h = Hedge::new(Script::default(), HedgeConfig::default().min_samples(20))
                .with_retry_budget(empty);
            warm(&h).await;
            h.get_ref()
                .plan
                .borrow_mut()
                .push((Duration::from_secs(1), true));
            h.oneshot(1).await.unwrap();
            assert_eq!(h.hedges(), 0);
        });
    }

    #[test]
    fn a_backup_permit_the_budget_refuses_is_released_at_once() {
        // Regression (review): the refused permit lived on as the `match` scrutinee's
        // temporary for the whole slow primary, halving capacity during an outage.
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let latency = Rc::new(Cell::new(Duration::from_millis(10)));
            let l = latency.clone();
            let backend = sheave_service::service_fn(move |n: u32| {
                let d = l.get();
                async move {
                    time::sleep(d).await;
                    Ok::<_, Error>(n)
                }
            });
            let config = HedgeConfig::default()
                .min_samples(20)
                .budget(BudgetConfig::new().ratio(0.0).min_per_second(0));
            let h = Rc::new(Hedge::new(crate::ConcurrencyLimit::new(backend, 4), config));
            for i in 0..20 {
                h.oneshot(i).await.unwrap();
            }
            latency.set(Duration::from_secs(1));
            let slow = sheave_core::spawn({
                let h = h.clone();
                async move { h.oneshot(99).await }
            });
            time::sleep(Duration::from_millis(200)).await; // past the hedge delay
            assert_eq!(h.get_ref().available(), 3, "only the primary holds a slot");
            slow.await.unwrap().unwrap();
            assert_eq!(h.hedges(), 0);
        });
    }
}
