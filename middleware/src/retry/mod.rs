//! [`Retry`]: retries what a [`Policy`] allows, within a [`Budget`] and the request's deadline,
//! after an exponential [`Backoff`].
//!
//! # Guarantees
//!
//! * **Only what the policy allows.** The default, [`RetryableFailures`], retries only what
//!   the classifier calls retryable — with the default classifier, errors that surely were not
//!   processed. Timeouts, application errors and every `Ok` response pass through untouched.
//! * **Never more than the budget.** Each request deposits into a [`Budget`], each retry
//!   withdraws; in an outage the retries stay within `ratio` of the traffic plus a small
//!   reserve, so they cannot multiply the load. When the budget refuses, the caller gets the
//!   original error flagged [`non_retryable`](sheave_service::Error::non_retryable), so an
//!   outer retry layer does not retry it either.
//! * **At most `max_attempts` attempts** (the first included). When the last attempt failed
//!   retryably, its error is flagged `non_retryable` too: this layer already spent the retries
//!   the request was allowed, and nested retry layers would multiply them (3 × 3 × 3 = 27).
//! * **Within the deadline.** A retry whose backoff would end at or past the current
//!   [deadline] is skipped, and the last outcome returned (as is):
//!   under a [`Timeout`](crate::Timeout) the whole retried call never outlives the deadline,
//!   and no attempt starts that could not finish.
//! * **Clones only when a retry is possible**; see [`Policy`] for why the copy is made up
//!   front and how requests that are not `Clone` are handled.
//!
//! Each retry waits for readiness again (`ready()`), so a retry respects the limits below it.
//! Readiness errors are not retried: they mean the service below cannot take requests at all
//! (closed), and reach the caller as they are. Only call outcomes are retried — including a
//! [`LoadShed`](crate::LoadShed) below, which reports a shed as a retryable call error.
//!
//! # Example
//!
//! ```
//! use sheave_middleware::retry::{Backoff, Retry, RetryConfig};
//! use sheave_service::{service_fn, Error, ServiceExt};
//! use std::cell::Cell;
//! use std::time::Duration;
//!
//! let calls = Cell::new(0);
//! let flaky = service_fn(|n: u32| {
//!     calls.set(calls.get() + 1);
//!     let first = calls.get() == 1;
//!     async move {
//!         if first {
//!             Err(Error::unavailable()) // never reached a server: retryable
//!         } else {
//!             Ok(n)
//!         }
//!     }
//! });
//! let config = RetryConfig::new()
//!     .backoff(Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1)));
//! let svc = Retry::new(&flaky, config);
//!
//! let rt = sheave_core::Runtime::builder().paused_clock().build().unwrap();
//! rt.block_on(async {
//!     assert_eq!(svc.oneshot(7).await.unwrap(), 7);
//! });
//! assert_eq!(calls.get(), 2);
//! ```

mod backoff;
mod budget;
mod layer;
mod policy;

pub use backoff::Backoff;
pub use budget::{Budget, BudgetConfig};
pub use layer::{RetryConfig, RetryLayer};
pub use policy::{NeverRetry, Policy, RetryableFailures};

use std::fmt;
use std::rc::Rc;

use sheave_core::time::{now_cached, sleep};
use sheave_service::{Error, Service, TryReady, deadline};

use crate::future::CallFuture;

/// Retries failed calls; see the [module docs](self).
pub struct Retry<S, P = RetryableFailures> {
    inner: S,
    policy: P,
    config: RetryConfig,
    budget: Rc<Budget>,
}

impl<S> Retry<S> {
    /// Wraps `inner` with the default policy ([`RetryableFailures`]) and a fresh budget.
    pub fn new(inner: S, config: RetryConfig) -> Self {
        Retry::with_policy(inner, RetryableFailures::new(), config)
    }
}

impl<S, P> Retry<S, P> {
    /// Wraps `inner` with `policy` and a fresh budget.
    pub fn with_policy(inner: S, policy: P, config: RetryConfig) -> Self {
        let budget = Rc::new(Budget::new(config.get_budget()));
        Retry::with_budget(inner, policy, config, budget)
    }

    /// Wraps `inner` with `policy`, drawing on `budget` (which other services may share;
    /// `config`'s budget settings are ignored).
    pub fn with_budget(inner: S, policy: P, config: RetryConfig, budget: Rc<Budget>) -> Self {
        Retry {
            inner,
            policy,
            config,
            budget,
        }
    }

    /// The budget.
    pub fn budget(&self) -> &Rc<Budget> {
        &self.budget
    }

    /// The policy.
    pub fn get_policy(&self) -> &P {
        &self.policy
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
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
}

impl<S: Clone, P: Clone> Clone for Retry<S, P> {
    /// The clone shares the budget.
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            config: self.config,
            budget: Rc::clone(&self.budget),
        }
    }
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for Retry<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("policy", &self.policy)
            .field("config", &self.config)
            .field("budget", &self.budget)
            .field("inner", &self.inner)
            .finish()
    }
}

/// Flags an error so no outer layer retries it.
fn refused<T>(outcome: Result<T, Error>) -> Result<T, Error> {
    outcome.map_err(Error::non_retryable)
}

impl<S, P, Req> Service<Req> for Retry<S, P>
where
    S: Service<Req>,
    S::Error: Into<Error>,
    P: Policy<Req, S::Response>,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = S::Permit;

    fn ready(&self) -> impl Future<Output = Result<S::Permit, Error>> {
        CallFuture::new(self.inner.ready())
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    fn try_ready(&self) -> TryReady<S::Permit, Error> {
        self.inner.try_ready().map_err(Into::into)
    }

    async fn call(&self, permit: S::Permit, req: Req) -> Result<S::Response, Error> {
        let max_attempts = self.config.get_max_attempts();
        let mut spare = if self.budget.deposit_and_check() && max_attempts > 1 {
            self.policy.clone_request(&req)
        } else {
            None
        };
        let mut outcome = self.inner.call(permit, req).await.map_err(Into::into);
        let mut attempts = 1;
        loop {
            if !self.policy.should_retry(outcome.as_ref()) {
                return outcome;
            }
            let Some(next) = spare.take() else {
                // Wanted, but not allowed: say so to outer layers. (A policy that declined
                // to copy this request leaves the outcome as it is.)
                return if attempts >= max_attempts || !self.budget.can_withdraw() {
                    refused(outcome)
                } else {
                    outcome
                };
            };
            let delay = self.config.get_backoff().delay(attempts);
            if let Some(deadline) = deadline::current()
                && now_cached()
                    .checked_add(delay)
                    .is_none_or(|end| end >= deadline)
            {
                // This attempt could not finish in time.
                return outcome;
            }
            if !self.budget.try_withdraw() {
                return refused(outcome);
            }
            if !delay.is_zero() {
                sleep(delay).await;
            }
            attempts += 1;
            if attempts < max_attempts {
                spare = self.policy.clone_request(&next);
            }
            outcome = match self.inner.ready().await {
                Ok(permit) => self.inner.call(permit, next).await.map_err(Into::into),
                Err(err) => Err(err.into()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::paused;
    use sheave_core::time::now;
    use sheave_service::{ServiceExt, service_fn};
    use std::cell::Cell;
    use std::time::Duration;

    /// A service that fails every call with a clone of `err`, counting calls.
    fn failing(err: Error, calls: &Cell<u32>) -> impl Service<u32, Response = u32, Error = Error> {
        service_fn(move |_: u32| {
            calls.set(calls.get() + 1);
            let err = err.clone();
            async move { Err(err) }
        })
    }

    #[test]
    fn application_errors_and_timeouts_are_not_retried() {
        for err in [
            Error::service(std::io::Error::other("app")),
            Error::timeout(),
        ] {
            let calls = Cell::new(0);
            let svc = Retry::new(failing(err, &calls), RetryConfig::new());
            let out = paused().block_on(svc.oneshot(1)).unwrap_err();
            assert!(!out.is_non_retryable(), "passed through untouched");
            assert_eq!(calls.get(), 1);
        }
    }

    #[test]
    fn max_attempts_bounds_the_attempts_and_flags_the_last_error() {
        let calls = Cell::new(0);
        let config = RetryConfig::new().max_attempts(3).backoff(Backoff::none());
        let svc = Retry::new(failing(Error::unavailable(), &calls), config);
        let err = paused().block_on(svc.oneshot(1)).unwrap_err();
        assert_eq!(calls.get(), 3);
        assert!(err.is_unavailable() && err.is_non_retryable());
    }

    #[test]
    fn a_retry_whose_backoff_ends_past_the_deadline_is_skipped() {
        let calls = Cell::new(0);
        let backoff =
            Backoff::exponential(Duration::from_millis(40), Duration::from_secs(1)).jitter(0.0);
        let config = RetryConfig::new().max_attempts(10).backoff(backoff);
        let svc = Retry::new(failing(Error::unavailable(), &calls), config);
        paused().block_on(async {
            let start = now();
            let deadline = start + Duration::from_millis(100);
            let err = deadline::with_deadline(deadline, svc.oneshot(1))
                .await
                .unwrap_err();
            // Attempts at 0 and 40 ms; the next would wait until 120 ms.
            assert_eq!(calls.get(), 2);
            assert_eq!(now() - start, Duration::from_millis(40));
            assert!(!err.is_non_retryable());
        });
    }

    #[test]
    fn never_retry_needs_no_clone() {
        struct NotClone(u32);
        let svc = Retry::with_policy(
            service_fn(|r: NotClone| async move { Ok::<_, Error>(r.0) }),
            NeverRetry,
            RetryConfig::new(),
        );
        assert_eq!(paused().block_on(svc.oneshot(NotClone(3))).unwrap(), 3);
    }
}
