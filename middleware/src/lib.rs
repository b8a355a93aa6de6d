//! Middleware for any sheave [`Service`](sheave_service::Service): deadlines, retries with a
//! budget, limits, load shedding, logging and stats — and, for clients, discovery, load
//! balancing, outlier ejection and circuit breaking.
//!
//! Every middleware here is a plain struct with a [`Layer`](sheave_service::Layer) twin
//! (`Timeout`/`TimeoutLayer`, ...), documents what it guarantees in its module, and speaks one
//! error type: it requires `S::Error: Into<sheave_service::Error>` and returns
//! [`sheave_service::Error`], so policies decide by [`ErrorKind`](sheave_service::ErrorKind)
//! and flags, never by downcasting. Application errors (in `Ok` responses, or kind
//! `Service`) pass through untouched.
//!
//! # Thread-per-core
//!
//! A stack lives on one thread and is shared by `&self` among every connection of that
//! thread; the state of a limiter, a budget or a stats counter is `Cell`/`RefCell`/`Rc`, with
//! no atomics or locks on the request path. Permits are owned values that give their capacity
//! back when dropped. Time comes from `sheave-core` (`sleep`, `now_cached`), so the stack must
//! be driven on a sheave runtime thread — and tests use its paused clock.
//!
//! # A stack, in reading order
//!
//! ```
//! use sheave_middleware::ServiceBuilderExt;
//! use sheave_middleware::retry::RetryConfig;
//! use sheave_service::{service_fn, Error, ServiceBuilder, ServiceExt};
//! use std::time::Duration;
//!
//! let svc = ServiceBuilder::new()
//!     .stats(Default::default())              // outermost: sees every outcome, timeouts too
//!     .timeout(Duration::from_millis(200))   // one deadline for readiness, call and retries
//!     .retry(RetryConfig::new())             // retries what failed before being processed
//!     .load_shed()                           // fails fast when the limit below is full
//!     .concurrency_limit(64)
//!     .service(service_fn(|n: u32| async move { Ok::<_, Error>(n * 2) }));
//!
//! let rt = sheave_core::Runtime::new().unwrap();
//! assert_eq!(rt.block_on(svc.oneshot(21)).unwrap(), 42);
//! assert_eq!(svc.stats().snapshot().successes, 1);
//! ```
//!
//! | module | service / layer | guarantees |
//! |---|---|---|
//! | [`timeout`] | [`Timeout`] / [`TimeoutLayer`] | a deadline over readiness *and* the call; inner layers see it |
//! | [`retry`] | [`Retry`] / [`RetryLayer`] | retries only what the policy allows, within a budget and the deadline |
//! | [`limit`] | [`ConcurrencyLimit`], [`RateLimit`] | at most n in flight (FIFO waiters); n per period |
//! | [`shed`] | [`LoadShed`] / [`LoadShedLayer`] | fails at once with `Overloaded` when the inner service is *busy* |
//! | [`log`] | [`Log`] / [`LogLayer`] | one record per request; free when the level is off |
//! | [`stats`] | [`Stats`] / [`StatsLayer`] | counters and a fixed-memory latency histogram |
//! | [`limit`] | [`AdaptiveLimit`](limit::AdaptiveLimit) | a concurrency limit sized by latency (AIMD) |
//! | [`discover`] | [`Change`](discover::Change) streams | endpoints from a list, a channel or DNS, keyed |
//! | [`balance`] | [`Balance`] | p2c (pending, peak-EWMA) or round robin; ejection; reconnect; never stalls |
//! | [`hedge`] | [`Hedge`] / [`HedgeLayer`] | a backup after the p-th percentile; first *success* wins; budgeted |
//! | [`breaker`] | [`CircuitBreaker`] / [`CircuitBreakerLayer`] | fails fast while a service keeps failing; one probe |
//! | [`fault`] | [`Fault`](fault::Fault) / [`FaultLayer`](fault::FaultLayer) | delays or aborts a seeded share of requests, to test what a stack does when things go wrong |
//!
//! Writing your own: [`recipe`] — forward `try_ready` and `in_flight`, keep the permit's
//! meaning, count a cancelled call, follow the readiness rule.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

pub mod balance;
pub mod breaker;
mod builder;
pub mod discover;
pub mod fault;
mod future;
pub mod hedge;
pub mod limit;
pub mod log;
pub mod recipe;
pub mod retry;
pub mod shed;
pub mod stats;
#[cfg(test)]
mod test_support;
pub mod timeout;

pub use balance::Balance;
pub use breaker::{CircuitBreaker, CircuitBreakerLayer};
pub use builder::ServiceBuilderExt;
pub use hedge::{Hedge, HedgeLayer};
pub use limit::{ConcurrencyLimit, ConcurrencyLimitLayer, RateLimit, RateLimitLayer};
pub use log::{Log, LogLayer};
pub use retry::{Retry, RetryLayer};
pub use shed::{LoadShed, LoadShedLayer};
pub use stats::{Stats, StatsHandle, StatsLayer};
pub use timeout::{Timeout, TimeoutLayer};

/// Prints a closure (or any value without a useful `Debug`) as its type name.
pub(crate) struct TypeName<T: ?Sized>(std::marker::PhantomData<T>);

impl<T: ?Sized> TypeName<T> {
    pub(crate) fn of(_: &T) -> Self {
        TypeName(std::marker::PhantomData)
    }
}

impl<T: ?Sized> std::fmt::Debug for TypeName<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::any::type_name::<T>())
    }
}
