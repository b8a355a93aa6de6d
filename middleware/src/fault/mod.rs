//! [`Fault`]: faults on purpose — delay or abort a share of requests, to test how a stack
//! (yours, or the services behind it) behaves when things go wrong. Envoy's HTTP fault
//! filter, for any protocol.
//!
//! # What it does
//!
//! * **Which requests.** Every request is eligible, or only those a predicate selects
//!   ([`Fault::with_predicate`]: a path, a key prefix, a header).
//! * **Delay** ([`FaultConfig::delay`]): a `share` (0.0–1.0) of the eligible requests wait
//!   for a [`Latency`] — fixed, uniform or exponential — before they go on to the inner
//!   service. The inner permit is held meanwhile, as a slow server would hold its capacity.
//! * **Abort** ([`FaultConfig::abort`]): a `share` of the eligible requests fail with an
//!   error of the chosen [`ErrorKind`] instead of reaching the inner service (after their
//!   delay, when both apply, as Envoy orders them). The error says "fault injected", carries
//!   no retry flag, and is classified by its kind like any other.
//! * **A bound on faults at once** ([`FaultConfig::max_active`]): past it, requests pass
//!   untouched, so a test's delays cannot pile up without limit.
//! * **Replays exactly.** The draws come from a seeded RNG ([`FaultConfig::seed`]): the same
//!   seed and the same sequence of requests fault the same requests. Each service a
//!   [`FaultLayer`] wraps starts from the same seed.
//! * **Counts** what it did: [`Fault::stats`].
//!
//! # Example
//!
//! ```
//! use sheave_middleware::fault::{Fault, FaultConfig, Latency};
//! use sheave_service::{service_fn, Error, ErrorKind, ServiceExt};
//! use std::time::Duration;
//!
//! let echo = service_fn(|n: u32| async move { Ok::<_, Error>(n) });
//! let config = FaultConfig::new()
//!     .delay(0.5, Latency::Fixed(Duration::from_millis(100)))
//!     .abort(0.1, ErrorKind::Unavailable)
//!     .seed(7);
//! let svc = Fault::new(echo, config);
//!
//! let rt = sheave_core::Runtime::builder().paused_clock().build().unwrap();
//! rt.block_on(async {
//!     let mut aborted = 0;
//!     for n in 0..1_000 {
//!         if svc.oneshot(n).await.is_err() {
//!             aborted += 1;
//!         }
//!     }
//!     let stats = svc.stats();
//!     assert_eq!(stats.aborted, aborted);
//!     assert!((450..=550).contains(&stats.delayed), "{stats:?}");
//!     assert!((60..=140).contains(&stats.aborted), "{stats:?}");
//! });
//! ```

mod layer;

pub use layer::FaultLayer;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sheave_core::time::sleep;
use sheave_service::{Error, ErrorKind, Service, TryReady};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

/// How long a delayed request waits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Always this long.
    Fixed(Duration),
    /// Uniformly between the two (inclusive of `min`).
    Uniform {
        /// The shortest delay.
        min: Duration,
        /// The longest delay.
        max: Duration,
    },
    /// Exponentially distributed with this mean (a long tail, like real queueing), capped at
    /// 20× the mean.
    Exponential {
        /// The mean delay.
        mean: Duration,
    },
}

impl Latency {
    fn draw(&self, rng: &mut SmallRng) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } if max > min => {
                let span = (max - min).as_nanos() as u64;
                min + Duration::from_nanos(rng.random_range(0..=span))
            }
            Latency::Uniform { min, .. } => min,
            Latency::Exponential { mean } => {
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                mean.mul_f64((-u.ln()).min(20.0))
            }
        }
    }
}

/// What a [`Fault`] injects; see the [module docs](self). Nothing by default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    delay: Option<(f64, Latency)>,
    abort: Option<(f64, ErrorKind)>,
    max_active: Option<usize>,
    seed: Option<u64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig::new()
    }
}

impl FaultConfig {
    /// No fault at all (add some with the setters).
    pub fn new() -> Self {
        FaultConfig {
            delay: None,
            abort: None,
            max_active: None,
            seed: None,
        }
    }

    /// Delays `share` (clamped to 0.0–1.0) of the eligible requests by `latency`.
    pub fn delay(mut self, share: f64, latency: Latency) -> Self {
        self.delay = Some((clamp_share(share), latency));
        self
    }

    /// Fails `share` (clamped to 0.0–1.0) of the eligible requests with an error of `kind`.
    pub fn abort(mut self, share: f64, kind: ErrorKind) -> Self {
        self.abort = Some((clamp_share(share), kind));
        self
    }

    /// At most `n` requests are being faulted at once (delayed, or aborted); others pass.
    pub fn max_active(mut self, n: usize) -> Self {
        self.max_active = Some(n);
        self
    }

    /// Seeds the draws, so a run replays exactly (default: a seed from the OS).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The delay's share and latency, if any.
    pub fn get_delay(&self) -> Option<(f64, Latency)> {
        self.delay
    }

    /// The abort's share and kind, if any.
    pub fn get_abort(&self) -> Option<(f64, ErrorKind)> {
        self.abort
    }

    fn rng(&self) -> SmallRng {
        match self.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        }
    }
}

fn clamp_share(share: f64) -> f64 {
    if share.is_nan() {
        0.0
    } else {
        share.clamp(0.0, 1.0)
    }
}

/// What a [`Fault`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Requests that were delayed.
    pub delayed: u64,
    /// Requests that were aborted.
    pub aborted: u64,
    /// Requests that passed untouched (not eligible, not drawn, or past `max_active`).
    pub passed: u64,
    /// Requests being faulted now.
    pub active: usize,
}

#[derive(Debug, Default)]
struct Counters {
    delayed: Cell<u64>,
    aborted: Cell<u64>,
    passed: Cell<u64>,
    active: Cell<usize>,
}

/// Every request is eligible: the default predicate.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllRequests;

/// Which requests a [`Fault`] may touch.
pub trait Select<Req> {
    /// Whether `req` is eligible for faults.
    fn select(&self, req: &Req) -> bool;
}

impl<Req> Select<Req> for AllRequests {
    fn select(&self, _: &Req) -> bool {
        true
    }
}

impl<Req, F: Fn(&Req) -> bool> Select<Req> for F {
    fn select(&self, req: &Req) -> bool {
        self(req)
    }
}

/// Delays or aborts a share of requests; see the [module docs](self).
pub struct Fault<S, P = AllRequests> {
    inner: S,
    config: FaultConfig,
    predicate: P,
    rng: RefCell<SmallRng>,
    counters: Rc<Counters>,
}

impl<S> Fault<S> {
    /// Wraps `inner`; every request is eligible.
    pub fn new(inner: S, config: FaultConfig) -> Self {
        Fault::with_predicate(inner, config, AllRequests)
    }
}

impl<S, P> Fault<S, P> {
    /// Wraps `inner`; only requests `predicate` selects are eligible.
    pub fn with_predicate(inner: S, config: FaultConfig, predicate: P) -> Self {
        Fault {
            inner,
            rng: RefCell::new(config.rng()),
            config,
            predicate,
            counters: Rc::default(),
        }
    }

    /// What it has done so far.
    pub fn stats(&self) -> FaultStats {
        let c = &self.counters;
        FaultStats {
            delayed: c.delayed.get(),
            aborted: c.aborted.get(),
            passed: c.passed.get(),
            active: c.active.get(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Draws this request's fate: a delay, an abort, both or neither.
    fn plan(&self) -> (Option<Duration>, Option<ErrorKind>) {
        let mut rng = self.rng.borrow_mut();
        let delay = self
            .config
            .delay
            .filter(|(share, _)| rng.random_bool(*share))
            .map(|(_, latency)| latency.draw(&mut rng));
        let abort = self
            .config
            .abort
            .filter(|(share, _)| rng.random_bool(*share))
            .map(|(_, kind)| kind);
        (delay, abort)
    }
}

impl<S: fmt::Debug, P> fmt::Debug for Fault<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fault")
            .field("config", &self.config)
            .field("predicate", &std::any::type_name::<P>())
            .field("stats", &self.stats())
            .field("inner", &self.inner)
            .finish()
    }
}

/// Counts a request as being faulted until dropped (a delayed call given up included).
struct Active<'a>(&'a Counters);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
    }
}

impl<S, P, Req> Service<Req> for Fault<S, P>
where
    S: Service<Req>,
    S::Error: Into<Error>,
    P: Select<Req>,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = S::Permit;

    async fn ready(&self) -> Result<S::Permit, Error> {
        self.inner.ready().await.map_err(Into::into)
    }

    fn try_ready(&self) -> TryReady<S::Permit, Error> {
        self.inner.try_ready().map_err(Into::into)
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    async fn call(&self, permit: S::Permit, req: Req) -> Result<S::Response, Error> {
        let c = &*self.counters;
        let room = self
            .config
            .max_active
            .is_none_or(|max| c.active.get() < max);
        let (delay, abort) = if room && self.predicate.select(&req) {
            self.plan()
        } else {
            (None, None)
        };
        if delay.is_none() && abort.is_none() {
            c.passed.set(c.passed.get() + 1);
            return self.inner.call(permit, req).await.map_err(Into::into);
        }
        c.active.set(c.active.get() + 1);
        let _active = Active(c);
        if let Some(d) = delay {
            c.delayed.set(c.delayed.get() + 1);
            sleep(d).await;
        }
        if let Some(kind) = abort {
            c.aborted.set(c.aborted.get() + 1);
            drop(permit);
            return Err(Error::msg(kind, "fault injected"));
        }
        self.inner.call(permit, req).await.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheave_core::Runtime;
    use sheave_core::time::{now, timeout};
    use sheave_service::{ServiceExt, service_fn};

    fn echo() -> impl Service<u32, Response = u32, Error = Error> {
        service_fn(|n: u32| async move { Ok::<_, Error>(n) })
    }

    fn paused() -> Runtime {
        Runtime::builder().paused_clock().build().unwrap()
    }

    #[test]
    fn the_same_seed_faults_the_same_requests() {
        let run = || {
            let config = FaultConfig::new()
                .abort(0.3, ErrorKind::Unavailable)
                .seed(42);
            let svc = Fault::new(echo(), config);
            paused().block_on(async {
                let mut failed = Vec::new();
                for n in 0..200 {
                    if svc.oneshot(n).await.is_err() {
                        failed.push(n);
                    }
                }
                failed
            })
        };
        let first = run();
        assert!(!first.is_empty());
        assert_eq!(first, run(), "a seeded run replays exactly");
    }

    #[test]
    fn a_fixed_delay_is_exact_and_an_abort_carries_the_kind() {
        let config = FaultConfig::new()
            .delay(1.0, Latency::Fixed(Duration::from_millis(25)))
            .abort(1.0, ErrorKind::Overloaded);
        let svc = Fault::new(echo(), config);
        paused().block_on(async {
            let start = now();
            let err = svc.oneshot(1).await.unwrap_err();
            assert_eq!(
                now() - start,
                Duration::from_millis(25),
                "delay, then abort"
            );
            assert_eq!(err.kind(), ErrorKind::Overloaded);
            assert!(
                !err.is_retryable(),
                "no flag: the classifier decides by kind"
            );
        });
    }

    #[test]
    fn only_selected_requests_are_faulted() {
        let config = FaultConfig::new().abort(1.0, ErrorKind::Unavailable);
        let svc = Fault::with_predicate(echo(), config, |n: &u32| n.is_multiple_of(2));
        paused().block_on(async {
            for n in 0..10 {
                assert_eq!(svc.oneshot(n).await.is_err(), n.is_multiple_of(2));
            }
        });
        assert_eq!(svc.stats().aborted, 5);
        assert_eq!(svc.stats().passed, 5);
    }

    #[test]
    fn past_max_active_requests_pass_and_a_given_up_delay_frees_its_place() {
        let config = FaultConfig::new()
            .delay(1.0, Latency::Fixed(Duration::from_secs(10)))
            .max_active(1);
        let svc = Rc::new(Fault::new(echo(), config));
        paused().block_on(async {
            let held = sheave_core::spawn({
                let svc = svc.clone();
                async move { timeout(Duration::from_secs(1), svc.oneshot(1)).await }
            });
            sheave_core::yield_now().await;
            assert_eq!(svc.stats().active, 1);
            let start = now();
            assert_eq!(
                svc.oneshot(2).await.unwrap(),
                2,
                "past the bound: untouched"
            );
            assert_eq!(now(), start);
            assert!(held.await.unwrap().is_err(), "the delayed one was given up");
            assert_eq!(svc.stats().active, 0, "and its place is free");
        });
    }

    #[test]
    fn uniform_and_exponential_delays_stay_in_their_ranges() {
        let mut rng = SmallRng::seed_from_u64(1);
        let (min, max) = (Duration::from_millis(5), Duration::from_millis(10));
        let mean = Duration::from_millis(2);
        for _ in 0..1_000 {
            let d = Latency::Uniform { min, max }.draw(&mut rng);
            assert!(d >= min && d <= max, "{d:?}");
            let e = Latency::Exponential { mean }.draw(&mut rng);
            assert!(e <= mean * 20, "{e:?}");
        }
    }
}
