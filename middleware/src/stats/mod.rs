//! [`Stats`]: counters and a latency histogram per service, read through a [`StatsHandle`]
//! handle while the service runs.
//!
//! # Guarantees
//!
//! * **Counters**: requests started, successes, errors by [`ErrorKind`], requests in flight.
//!   A call whose future is dropped before it finished counts as
//!   [`ErrorKind::Canceled`]. Readiness is not counted: a request is counted when it is
//!   called.
//! * **Latency**: every finished call (success or error) is recorded in an HDR histogram with
//!   fixed bounds — microsecond resolution up to [`StatsConfig::max_latency`], at
//!   [`StatsConfig::precision`] significant digits — which never resizes: its memory is fixed
//!   when the service is built. Latencies above the bound are recorded as the bound.
//! * **Readable while running**: [`StatsHandle`] is an `Rc` handle; [`StatsHandle::snapshot`] copies the
//!   counters and the p50/p90/p99/p99.9/max latencies. Everything is `Cell`/`RefCell`: a
//!   stats service belongs to one thread (build one per thread and add the snapshots).
//!
//! Latency is measured with [`sheave_core::time::now`] (two clock reads per call).
//!
//! # Example
//!
//! ```
//! use sheave_middleware::Stats;
//! use sheave_middleware::stats::StatsConfig;
//! use sheave_service::{service_fn, Error, ServiceExt};
//! use std::time::Duration;
//!
//! let svc = Stats::new(
//!     service_fn(|n: u64| async move {
//!         sheave_core::time::sleep(Duration::from_millis(n)).await;
//!         if n < 100 { Ok(n) } else { Err(Error::unavailable()) }
//!     }),
//!     StatsConfig::default(),
//! );
//! let stats = svc.stats();
//! let rt = sheave_core::Runtime::builder().paused_clock().build().unwrap();
//! rt.block_on(async {
//!     for n in [10, 20, 30, 200] {
//!         let _ = svc.oneshot(n).await;
//!     }
//! });
//! let snap = stats.snapshot();
//! assert_eq!((snap.requests, snap.successes, snap.in_flight), (4, 3, 0));
//! assert_eq!(snap.errors(sheave_service::ErrorKind::Unavailable), 1);
//! assert_eq!(snap.latency.max, Duration::from_millis(200));
//! ```

mod layer;

pub use layer::StatsLayer;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sheave_core::time::now;
use sheave_service::{Error, ErrorKind, Service, TryReady};

/// The configuration of a [`StatsHandle`] histogram. Defaults (stable): up to 60 s, 2 significant
/// digits (1% resolution, about 27 KiB per service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsConfig {
    max_latency: Duration,
    precision: u8,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            max_latency: Duration::from_secs(60),
            precision: 2,
        }
    }
}

impl StatsConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest latency the histogram tells apart (higher ones count as this).
    ///
    /// # Panics
    ///
    /// If `max` is under 2 µs.
    pub fn max_latency(mut self, max: Duration) -> Self {
        assert!(
            max >= Duration::from_micros(2),
            "max_latency must be at least 2 µs"
        );
        self.max_latency = max;
        self
    }

    /// Significant decimal digits kept, 1 to 5 (memory grows ~10× per digit).
    ///
    /// # Panics
    ///
    /// If `digits` is outside `1..=5`.
    pub fn precision(mut self, digits: u8) -> Self {
        assert!((1..=5).contains(&digits), "precision must be 1..=5 digits");
        self.precision = digits;
        self
    }
}

/// Error kinds counted apart; the last slot counts kinds added later.
const KINDS: [ErrorKind; 9] = [
    ErrorKind::Timeout,
    ErrorKind::Overloaded,
    ErrorKind::Unavailable,
    ErrorKind::Closed,
    ErrorKind::Canceled,
    ErrorKind::Protocol,
    ErrorKind::Io,
    ErrorKind::Service,
    ErrorKind::InvalidRequest,
];

fn kind_index(kind: ErrorKind) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(KINDS.len())
}

struct Inner {
    config: StatsConfig,
    requests: Cell<u64>,
    successes: Cell<u64>,
    errors: [Cell<u64>; KINDS.len() + 1],
    in_flight: Cell<u64>,
    latency: RefCell<Histogram<u64>>,
    /// The exact largest latency recorded (the histogram's is rounded to its resolution).
    max: Cell<Duration>,
}

/// A handle to a [`Stats`]'s numbers; cheap to clone, readable while it runs.
#[derive(Clone)]
pub struct StatsHandle {
    inner: Rc<Inner>,
}

impl StatsHandle {
    /// Empty stats with a histogram sized by `config`.
    pub fn new(config: StatsConfig) -> Self {
        let high = u64::try_from(config.max_latency.as_micros()).unwrap_or(u64::MAX);
        let latency = Histogram::new_with_bounds(1, high, config.precision)
            .expect("bounds checked by StatsConfig");
        StatsHandle {
            inner: Rc::new(Inner {
                config,
                requests: Cell::new(0),
                successes: Cell::new(0),
                errors: Default::default(),
                in_flight: Cell::new(0),
                latency: RefCell::new(latency),
                max: Cell::new(Duration::ZERO),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> StatsConfig {
        self.inner.config
    }

    /// Copies the numbers.
    pub fn snapshot(&self) -> Snapshot {
        let i = &*self.inner;
        let h = i.latency.borrow();
        let at = |q: f64| Duration::from_micros(h.value_at_quantile(q));
        let mut errors = [0; KINDS.len() + 1];
        for (out, c) in errors.iter_mut().zip(&i.errors) {
            *out = c.get();
        }
        Snapshot {
            requests: i.requests.get(),
            successes: i.successes.get(),
            in_flight: i.in_flight.get(),
            errors,
            latency: Latency {
                count: h.len(),
                p50: at(0.5),
                p90: at(0.9),
                p99: at(0.99),
                p999: at(0.999),
                max: i.max.get(),
            },
        }
    }

    /// Clears the counters (not `in_flight`) and the histogram.
    pub fn reset(&self) {
        let i = &*self.inner;
        i.requests.set(0);
        i.successes.set(0);
        i.errors.iter().for_each(|c| c.set(0));
        i.latency.borrow_mut().reset();
        i.max.set(Duration::ZERO);
    }

    fn start(&self) {
        let i = &*self.inner;
        i.requests.set(i.requests.get() + 1);
        i.in_flight.set(i.in_flight.get() + 1);
    }

    fn finish(&self, outcome: Result<(), ErrorKind>, latency: Option<Duration>) {
        let i = &*self.inner;
        i.in_flight.set(i.in_flight.get() - 1);
        match outcome {
            Ok(()) => i.successes.set(i.successes.get() + 1),
            Err(kind) => {
                let c = &i.errors[kind_index(kind)];
                c.set(c.get() + 1);
            }
        }
        if let Some(latency) = latency {
            i.max.set(i.max.get().max(latency));
            let us = u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            i.latency.borrow_mut().saturating_record(us);
        }
    }
}

impl fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsHandle")
            .field("config", &self.inner.config)
            .field("requests", &self.inner.requests.get())
            .field("in_flight", &self.inner.in_flight.get())
            .finish()
    }
}

/// A copy of a [`StatsHandle`]' numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Requests called.
    pub requests: u64,
    /// Calls that returned `Ok`.
    pub successes: u64,
    /// Calls running now.
    pub in_flight: u64,
    errors: [u64; KINDS.len() + 1],
    /// Latencies of finished calls.
    pub latency: Latency,
}

impl Snapshot {
    /// Calls that failed with `kind`.
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind_index(kind)]
    }

    /// Calls that failed, of any kind.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// Latency percentiles, at the histogram's resolution, and the exact maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// Calls recorded.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// The largest recorded, exactly.
    pub max: Duration,
}

/// Counts requests and records latencies; see the [module docs](self).
#[derive(Clone)]
pub struct Stats<S> {
    inner: S,
    stats: StatsHandle,
}

impl<S> Stats<S> {
    /// Wraps `inner` with fresh [`StatsHandle`].
    pub fn new(inner: S, config: StatsConfig) -> Self {
        Stats::with_stats(inner, StatsHandle::new(config))
    }

    /// Wraps `inner`, counting into `stats` (which other services may share).
    pub fn with_stats(inner: S, stats: StatsHandle) -> Self {
        Stats { inner, stats }
    }

    /// A handle to the numbers.
    pub fn stats(&self) -> StatsHandle {
        self.stats.clone()
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
}

impl<S: fmt::Debug> fmt::Debug for Stats<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stats")
            .field("stats", &self.stats)
            .field("inner", &self.inner)
            .finish()
    }
}

/// A call in flight: counted as canceled if dropped before it finished.
struct InFlight<'a> {
    stats: &'a StatsHandle,
    start: Instant,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            let latency = now().saturating_duration_since(self.start);
            self.stats.finish(Err(ErrorKind::Canceled), Some(latency));
        }
    }
}

impl<S, Req> Service<Req> for Stats<S>
where
    S: Service<Req>,
    S::Error: Into<Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = S::Permit;

    fn ready(&self) -> impl Future<Output = Result<S::Permit, Error>> {
        crate::future::CallFuture::new(self.inner.ready())
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    fn try_ready(&self) -> TryReady<S::Permit, Error> {
        self.inner.try_ready().map_err(Into::into)
    }

    async fn call(&self, permit: S::Permit, req: Req) -> Result<S::Response, Error> {
        self.stats.start();
        let mut guard = InFlight {
            stats: &self.stats,
            start: now(),
            done: false,
        };
        let out = self.inner.call(permit, req).await.map_err(Into::into);
        guard.done = true;
        let latency = now().saturating_duration_since(guard.start);
        self.stats
            .finish(out.as_ref().map(|_| ()).map_err(Error::kind), Some(latency));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_never_resizes() {
        let stats = StatsHandle::new(StatsConfig::new().max_latency(Duration::from_millis(10)));
        stats.start();
        stats.finish(Ok(()), Some(Duration::from_secs(3600)));
        let snap = stats.snapshot();
        assert_eq!(snap.latency.count, 1);
        assert!(
            snap.latency.p999 <= Duration::from_millis(11),
            "{:?}",
            snap.latency
        );
        assert!(!stats.inner.latency.borrow().is_auto_resize());
    }

    #[test]
    fn a_kind_counts_in_its_own_slot() {
        let stats = StatsHandle::new(StatsConfig::default());
        for kind in KINDS {
            stats.start();
            stats.finish(Err(kind), None);
        }
        let snap = stats.snapshot();
        assert!(KINDS.iter().all(|k| snap.errors(*k) == 1));
        assert_eq!(snap.total_errors(), KINDS.len() as u64);
    }
}
