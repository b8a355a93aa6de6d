//! Limits: [`ConcurrencyLimit`] (at most n in flight), [`RateLimit`] (a token bucket) and
//! [`AdaptiveLimit`] (a concurrency limit sized by measured latency, AIMD).
//!
//! # Guarantees
//!
//! * **Concurrency**: at most `max` requests hold a slot at once. A slot is taken by
//!   `ready`/`try_ready`, held by the permit and then by the call, and released when the call
//!   finishes, its future is dropped, or the permit is dropped unused.
//! * **Rate**: at most `burst + ⌊t × tokens / period⌋` requests pass in any stretch of time
//!   `t`; see [`RateConfig`]. A token is taken by `ready`/`try_ready` and spent by `call`; an
//!   unused permit gives it back, unless a token has arrived since it was taken (the bucket may
//!   have refilled around it: giving it back then could let more than `burst` pass at once).
//! * **FIFO**: `ready()` callers are served in arrival order. Released capacity is *handed*
//!   to the first waiter, so a later `try_ready` cannot overtake the queue.
//! * **Every queue has a bound**: at most 1,024 `ready()` callers wait by default
//!   ([`ConcurrencyLimit::with_max_waiters`], [`RateConfig::max_waiters`]); past it `ready()`
//!   fails at once with a retryable `Overloaded` error, so an overloaded client spends its
//!   memory on at most that many queued requests, never on an unbounded queue. (A queued
//!   request costs its caller's future plus a 24-byte queue entry; the stacks we document put
//!   a [`LoadShed`](crate::LoadShed) over the limit, so callers never queue at all.)
//! * **`try_ready` never queues**: it answers `Busy` when nothing is free (or others are
//!   waiting), which is what [`LoadShed`](crate::LoadShed) relies on.
//! * **Cancel safety**: a dropped `ready()` future leaves the queue, and capacity it had been
//!   handed passes to the next waiter — a release never wakes a dead waiter while a live one
//!   sleeps. The rate limiter keeps one timer, owned by the first waiter; if that waiter goes,
//!   the next one takes the timer over.
//!
//! State is per wrapped service (a layer gives each service its own limit) and shared by
//! clones of it; it is `Rc`/`Cell`, with no atomics: a limit belongs to one thread.
//!
//! # Example
//!
//! ```
//! use sheave_middleware::limit::{ConcurrencyLimit, RateConfig, RateLimit};
//! use sheave_service::{service_fn, Error, Service, ServiceExt};
//! use std::time::Duration;
//!
//! let echo = service_fn(|n: u32| async move { Ok::<_, Error>(n) });
//! let svc = ConcurrencyLimit::new(RateLimit::new(echo, RateConfig::new(2, Duration::from_secs(1))), 1);
//!
//! let rt = sheave_core::Runtime::builder().paused_clock().build().unwrap();
//! rt.block_on(async {
//!     let permit = svc.try_ready().ready().unwrap();
//!     assert!(svc.try_ready().is_busy(), "one in flight at most");
//!     assert_eq!(svc.call(permit, 1).await.unwrap(), 1);
//!     assert_eq!(svc.oneshot(2).await.unwrap(), 2);
//!     // The bucket (2 per second) is empty: the next request waits for a token.
//!     let start = sheave_core::time::now();
//!     assert_eq!(svc.oneshot(3).await.unwrap(), 3);
//!     assert_eq!(sheave_core::time::now() - start, Duration::from_millis(500));
//! });
//! ```

mod adaptive;
mod concurrency;
mod rate;
mod semaphore;
mod waiters;

pub use adaptive::{AdaptiveConfig, AdaptiveLimit, AdaptiveLimitLayer, AdaptivePermit};
pub use concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer, ConcurrencyPermit, Slot};
pub use rate::{RateConfig, RateLimit, RateLimitLayer, RatePermit, Token};
