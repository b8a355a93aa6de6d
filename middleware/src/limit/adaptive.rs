//! [`AdaptiveLimit`]: a concurrency limit sized by latency (AIMD).
use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sheave_core::time;
use sheave_service::classify::{Class, Classify, DefaultClassifier};
use sheave_service::{Error, ErrorKind, Layer, Service, TryReady};

use super::semaphore::{Semaphore, Slot};

/// The parameters of an [`AdaptiveLimit`]. Defaults are stable within a minor version.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// Latency at or under which the backend counts as healthy.
    pub target: Duration,
    /// The starting limit (default 10).
    pub initial: usize,
    /// The floor (default 1).
    pub min: usize,
    /// The ceiling (default 1,000).
    pub max: usize,
    /// The factor of a decrease (default 0.9).
    pub backoff: f64,
    /// The least time between two decreases (default: the target).
    pub cooldown: Duration,
    /// At most this many `ready()` calls wait for a slot (default 1,024); the next fails at
    /// once with a retryable `Overloaded` error.
    pub max_waiters: usize,
}

impl AdaptiveConfig {
    /// A limit aiming at `target` latency, with the defaults otherwise.
    pub fn new(target: Duration) -> Self {
        AdaptiveConfig {
            target,
            initial: 10,
            min: 1,
            max: 1000,
            backoff: 0.9,
            cooldown: target,
            max_waiters: super::semaphore::DEFAULT_MAX_WAITERS,
        }
    }

    /// The bound on waiters.
    pub fn max_waiters(mut self, n: usize) -> Self {
        self.max_waiters = n;
        self
    }

    /// The starting limit.
    pub fn initial(mut self, n: usize) -> Self {
        self.initial = n;
        self
    }

    /// The floor and ceiling.
    pub fn bounds(mut self, min: usize, max: usize) -> Self {
        self.min = min.max(1);
        self.max = max.max(self.min);
        self
    }
}

/// The adaptive state shared by the service and its permits.
struct Control {
    config: AdaptiveConfig,
    sem: Rc<Semaphore>,
    /// The limit with its fraction (the semaphore holds the whole part).
    limit: Cell<f64>,
    last_decrease: Cell<Option<Instant>>,
}

impl Control {
    fn set(&self, limit: f64) {
        let c = &self.config;
        let limit = limit.clamp(c.min as f64, c.max as f64);
        self.limit.set(limit);
        let whole = limit as usize;
        if whole != self.sem.max() {
            self.sem.resize(whole);
        }
    }

    fn record(&self, rtt: Duration, class: Class, overload: bool, in_use: usize, now: Instant) {
        let limit = self.limit.get();
        let slow = rtt > self.config.target;
        if overload || (slow && class != Class::Ignorable) {
            let cooled = self
                .last_decrease
                .get()
                .is_none_or(|at| now.saturating_duration_since(at) >= self.config.cooldown);
            if cooled {
                self.last_decrease.set(Some(now));
                self.set(limit * self.config.backoff);
            }
        } else if class == Class::Success && in_use as f64 * 2.0 >= limit {
            self.set(limit + 1.0 / limit);
        }
    }
}

/// A concurrency limit that finds its own size from measured latency.
///
/// # The algorithm: AIMD, and why
///
/// Additive increase, multiplicative decrease — TCP's congestion control applied to requests
/// in flight:
/// - a request that succeeds within the latency target while the limit was at least half used
///   adds `1 / limit` (so one full window of successes adds one slot);
/// - a request slower than the target, one the classifier calls an overload (`Overloaded`
///   or `Timeout`), or one dropped unfinished after the target (an outer timeout), multiplies the limit by [`backoff`](AdaptiveConfig::backoff) (0.9) — at
///   most once per [`cooldown`](AdaptiveConfig::cooldown), so one burst of slow answers is one
///   signal, not fifty.
///
/// The gradient alternative (Netflix's concurrency-limits: compare the latest RTT with the
/// minimum seen and scale the limit by the ratio) reacts faster but needs a clean
/// no-load baseline; on a shared machine the minimum RTT drifts and one noisy sample moves the
/// limit a lot. AIMD needs only a target, is stable under noise, and — like TCP — converges
/// to a fair share when many clients protect one backend.
///
/// ```
/// use sheave_middleware::limit::{AdaptiveConfig, AdaptiveLimit};
/// use sheave_service::{service_fn, Error, ServiceExt};
/// use std::time::Duration;
///
/// let rt = sheave_core::Runtime::builder().paused_clock().build().unwrap();
/// rt.block_on(async {
///     let backend = service_fn(|n: u32| async move {
///         sheave_core::time::sleep(Duration::from_millis(5)).await;
///         Ok::<_, Error>(n)
///     });
///     let config = AdaptiveConfig::new(Duration::from_millis(50)).initial(4);
///     let limited = AdaptiveLimit::new(backend, config);
///     assert_eq!(limited.oneshot(7).await.unwrap(), 7);
///     assert_eq!(limited.limit(), 4, "one request at a time never uses half the limit");
/// });
/// ```
pub struct AdaptiveLimit<S, C = DefaultClassifier> {
    inner: S,
    control: Rc<Control>,
    classifier: C,
}

impl<S: fmt::Debug, C> fmt::Debug for AdaptiveLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("config", &self.control.config)
            .field("limit", &self.control.limit.get())
            .field("in_flight", &self.control.sem.in_use())
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S> AdaptiveLimit<S> {
    /// Limits `inner` adaptively.
    pub fn new(inner: S, config: AdaptiveConfig) -> Self {
        AdaptiveLimit::with_classifier(inner, config, DefaultClassifier)
    }
}

impl<S, C> AdaptiveLimit<S, C> {
    /// Limits `inner` adaptively, judging outcomes with `classifier`.
    pub fn with_classifier(inner: S, config: AdaptiveConfig, classifier: C) -> Self {
        // The fields are public: normalize them once, so the limit never reaches zero (which
        // would admit nothing, for good) and `clamp` never sees min > max.
        let mut config = config;
        config.min = config.min.max(1);
        config.max = config.max.max(config.min);
        if !(config.backoff > 0.0 && config.backoff < 1.0) {
            config.backoff = 0.9;
        }
        let initial = config.initial.clamp(config.min, config.max);
        let sem = Rc::new(Semaphore::new(initial));
        sem.set_max_waiters(config.max_waiters);
        AdaptiveLimit {
            inner,
            control: Rc::new(Control {
                config,
                sem,
                limit: Cell::new(initial as f64),
                last_decrease: Cell::new(None),
            }),
            classifier,
        }
    }

    /// The current limit (whole requests).
    pub fn limit(&self) -> usize {
        self.control.sem.max()
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.control.sem.in_use()
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
}

/// The permit of an [`AdaptiveLimit`]: a slot and the inner permit.
#[derive(Debug)]
pub struct AdaptivePermit<P> {
    inner: P,
    slot: Slot,
}

impl<S, C, Req> Service<Req> for AdaptiveLimit<S, C>
where
    S: Service<Req>,
    S::Error: Into<Error>,
    C: Classify<S::Response, Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = AdaptivePermit<S::Permit>;

    async fn ready(&self) -> Result<Self::Permit, Error> {
        let slot = Semaphore::acquire(&self.control.sem).await?;
        let inner = self.inner.ready().await.map_err(Into::into)?;
        Ok(AdaptivePermit { inner, slot })
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    fn try_ready(&self) -> TryReady<Self::Permit, Error> {
        let Some(slot) = Semaphore::try_slot(&self.control.sem) else {
            return TryReady::Busy;
        };
        match self.inner.try_ready() {
            TryReady::Ready(inner) => TryReady::Ready(AdaptivePermit { inner, slot }),
            TryReady::Busy => TryReady::Busy,
            TryReady::Closed(e) => TryReady::Closed(e.into()),
        }
    }

    async fn call(&self, permit: Self::Permit, req: Req) -> Result<S::Response, Error> {
        let AdaptivePermit { inner, slot } = permit;
        let in_use = self.control.sem.in_use();
        let start = time::now();
        let mut watch = Unfinished {
            control: &self.control,
            start,
            in_use,
            armed: true,
        };
        let result = self.inner.call(inner, req).await.map_err(Into::into);
        watch.armed = false;
        let now = time::now();
        let class = self.classifier.classify(result.as_ref());
        let overload = matches!(
            &result,
            Err(e) if matches!(e.kind(), ErrorKind::Overloaded | ErrorKind::Timeout)
        );
        drop(slot);
        self.control.record(
            now.saturating_duration_since(start),
            class,
            overload,
            in_use,
            now,
        );
        result
    }
}

/// Watches a call in flight: dropped before it finished — an outer timeout gave up on it,
/// the usual fate of a call to an overloaded or black-holed backend — a call that had
/// already run past the target counts as an overload. Without this, a limit with the
/// timeout outside it (the usual stack) would never see a timeout, and never shrink.
struct Unfinished<'a> {
    control: &'a Control,
    start: Instant,
    in_use: usize,
    armed: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let now = time::now_cached();
        let rtt = now.saturating_duration_since(self.start);
        if rtt > self.control.config.target {
            self.control
                .record(rtt, Class::Ignorable, true, self.in_use, now);
        }
    }
}

/// A [`Layer`] of [`AdaptiveLimit`]s: each service it wraps gets its own limit.
#[derive(Debug, Clone, Copy)]
pub struct AdaptiveLimitLayer {
    config: AdaptiveConfig,
}

impl AdaptiveLimitLayer {
    /// Adaptive limits with `config`.
    pub fn new(config: AdaptiveConfig) -> Self {
        AdaptiveLimitLayer { config }
    }
}

impl<S> Layer<S> for AdaptiveLimitLayer {
    type Service = AdaptiveLimit<S>;
    fn layer(&self, inner: S) -> AdaptiveLimit<S> {
        AdaptiveLimit::new(inner, self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheave_core::{Runtime, spawn};
    use sheave_service::{ServiceExt, service_fn};

    #[test]
    fn a_config_with_a_zero_floor_or_crossed_bounds_is_normalized_not_a_panic() {
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let mut config = AdaptiveConfig::new(Duration::from_millis(1));
            config.min = 0;
            config.max = 0;
            config.initial = 0;
            let backend = service_fn(|n: u32| async move {
                time::sleep(Duration::from_millis(50)).await;
                Ok::<_, Error>(n)
            });
            let limited = AdaptiveLimit::new(backend, config);
            for i in 0..20 {
                // Every answer is slower than the target: the limit shrinks, but never to 0.
                assert_eq!(limited.oneshot(i).await.unwrap(), i);
            }
            assert_eq!(limited.limit(), 1);
        });
    }

    #[test]
    fn calls_an_outer_timeout_gives_up_on_shrink_the_limit() {
        // Regression (review): only finished calls were recorded, so with the timeout
        // outside the limit (the usual stack) a hung backend never shrank it.
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let backend = service_fn(|n: u32| async move {
                time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, Error>(n)
            });
            let config = AdaptiveConfig::new(Duration::from_millis(50)).initial(10);
            let svc = Rc::new(crate::Timeout::new(
                AdaptiveLimit::new(backend, config),
                Duration::from_millis(100),
            ));
            for round in 0..20u32 {
                let calls: Vec<_> = (0..4)
                    .map(|i| {
                        let svc = svc.clone();
                        spawn(async move { svc.oneshot(round * 4 + i).await })
                    })
                    .collect();
                for call in calls {
                    assert!(call.await.unwrap().unwrap_err().is_timeout());
                }
            }
            assert!(svc.get_ref().limit() < 10, "{}", svc.get_ref().limit());
        });
    }

    #[test]
    fn the_limit_grows_under_low_latency_and_shrinks_when_latency_rises() {
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let latency = Rc::new(Cell::new(Duration::from_millis(10)));
            let l = latency.clone();
            let backend = service_fn(move |n: u32| {
                let d = l.get();
                async move {
                    time::sleep(d).await;
                    Ok::<_, Error>(n)
                }
            });
            let config = AdaptiveConfig::new(Duration::from_millis(50))
                .initial(4)
                .bounds(1, 64)
                .max_waiters(4096); // the waves queue up to 2,000 at once
            let limited = Rc::new(AdaptiveLimit::new(backend, config));

            let wave = |n: usize| {
                let tasks: Vec<_> = (0..n)
                    .map(|i| {
                        let limited = limited.clone();
                        spawn(async move { limited.oneshot(i as u32).await })
                    })
                    .collect();
                async move {
                    for t in tasks {
                        t.await.unwrap().unwrap();
                    }
                }
            };

            wave(2_000).await;
            let grown = limited.limit();
            assert!(
                grown >= 32,
                "under low latency the limit climbed from 4 to {grown}"
            );

            latency.set(Duration::from_millis(200));
            wave(2_000).await;
            let shrunk = limited.limit();
            assert!(
                shrunk <= 4,
                "with latency over target it fell from {grown} to {shrunk}"
            );
            assert!(shrunk >= 1);
        });
    }
}
