//! [`Timeout`]: a deadline over waiting for readiness *and* the call.
//!
//! # Guarantees
//!
//! * **One deadline per request**, set when readiness is first asked for
//!   ([`ready`](sheave_service::Service::ready) or
//!   [`try_ready`](sheave_service::Service::try_ready)): `now + timeout`, or the deadline the
//!   caller already runs under if that is earlier ([`sheave_service::deadline`]: the earliest
//!   wins). The permit carries it to [`call`](sheave_service::Service::call), so a request
//!   that waited 80 ms for a permit under a 100 ms timeout has 20 ms left to answer (tower's
//!   timeout starts at `call` only, its #648).
//! * **Inner layers see it**: the inner `ready` and `call` run under
//!   [`with_deadline`], so a
//!   [`Retry`](crate::Retry) below never starts an attempt that cannot finish in time, and
//!   the whole retried call never outlives the deadline.
//! * **On expiry** the inner future is dropped — the inner request is cancelled — and the
//!   caller gets an [`ErrorKind::Timeout`](sheave_service::ErrorKind::Timeout) error.
//!   Expiring while waiting for readiness flags the error
//!   [`retryable`](sheave_service::Error::retryable): the request was never sent. Expiring
//!   during the call does not: the server may have processed it.
//! * **Never early**: the timer fires at the deadline, rounded up to the timer wheel's 1 ms
//!   tick. A future that is ready when polled wins, even at the deadline.
//!
//! # Where each timeout goes
//!
//! A client stack usually wants two, and their places matter:
//!
//! | place | bounds | why there |
//! |---|---|---|
//! | above [`Retry`](crate::Retry) | the whole request, every attempt and backoff | the caller's patience; a retry never starts that could not finish |
//! | below the retry, above a [`Balance`](crate::Balance) | one attempt (Envoy's `per_try_timeout`) | a hung endpoint costs one short attempt, which the retry sends elsewhere; the balancer sees the attempt fail and ejects the endpoint |
//!
//! With the outer one alone, an attempt on a hung endpoint uses up the whole deadline and
//! there is no time left to retry. The inner deadline never outlives the outer one: the
//! earliest wins. `examples/support/cluster.rs` builds that stack, and `tests/faults` runs
//! it against a hung server.
//!
//! # Cost
//!
//! The inner future is polled **first**; the timer is created only if it is pending, so a
//! service that answers at once never touches the timer wheel. The deadline is computed from
//! [`now_cached`] — the time the event loop last woke up, read
//! without a clock read — which lags the real time by at most one loop turn (the time tasks
//! have run since). A deadline computed from it is therefore at most one loop turn *early*
//! relative to `now + timeout`; for millisecond timeouts that is noise, and it never makes the
//! timer fire before the deadline it computed.
//!
//! # Example
//!
//! ```
//! use sheave_middleware::Timeout;
//! use sheave_service::{service_fn, Error, ServiceExt};
//! use std::time::Duration;
//!
//! let slow = service_fn(|_: ()| async {
//!     sheave_core::time::sleep(Duration::from_secs(5)).await;
//!     Ok::<_, Error>("done")
//! });
//! let svc = Timeout::new(slow, Duration::from_millis(100));
//!
//! let rt = sheave_core::Runtime::builder().paused_clock().build().unwrap();
//! rt.block_on(async {
//!     let start = sheave_core::time::now();
//!     let err = svc.oneshot(()).await.unwrap_err();
//!     assert!(err.is_timeout());
//!     assert_eq!(sheave_core::time::now() - start, Duration::from_millis(100));
//! });
//! ```

mod layer;

pub use layer::TimeoutLayer;

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;
use sheave_core::time::{Sleep, now_cached, saturating_add, sleep_until};
use sheave_service::deadline::{self, WithDeadline, with_deadline};
use sheave_service::{Error, Service, TryReady};

/// Bounds readiness and the call by one deadline; see the [module docs](self).
#[derive(Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Timeout<S> {
    /// Wraps `inner`: each request gets at most `timeout`, from readiness to response.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Timeout { inner, timeout }
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
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

    /// The deadline of a request starting now: ours, or the caller's if earlier.
    fn deadline(&self) -> Instant {
        let ours = saturating_add(now_cached(), self.timeout);
        match deadline::current() {
            Some(outer) if outer < ours => outer,
            _ => ours,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Timeout<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("timeout", &self.timeout)
            .field("inner", &self.inner)
            .finish()
    }
}

/// The permit of a [`Timeout`]: the inner permit and the request's deadline.
#[derive(Debug)]
pub struct TimeoutPermit<P> {
    inner: P,
    deadline: Instant,
}

impl<P> TimeoutPermit<P> {
    /// The deadline the call will run under.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The inner permit (dropping the deadline).
    pub fn into_inner(self) -> P {
        self.inner
    }
}

pin_project! {
    /// The future of [`Timeout`]'s `ready` and `call`: the inner future under the deadline.
    ///
    /// Hand-written rather than an `async fn` because it is the hot path: it polls the inner
    /// future first and creates the timer only when that is pending, and it stores the
    /// deadline once (in the [`WithDeadline`]), which keeps a timed call small.
    struct Within<F, M> {
        #[pin]
        fut: WithDeadline<F>,
        sleep: Option<Sleep>,
        // What the inner output becomes: a permit with its deadline, or a response.
        map: M,
    }
}

/// How [`Within`] finishes: a mapping of the inner output, and the error on expiry.
trait Finish<T> {
    type Output;
    fn done(&self, out: T, deadline: Instant) -> Self::Output;
    fn expired(&self) -> Self::Output;
}

/// `ready`: wraps the permit with the deadline; expiry is retryable (nothing was sent).
struct ReadyDone;

impl<P, E: Into<Error>> Finish<Result<P, E>> for ReadyDone {
    type Output = Result<TimeoutPermit<P>, Error>;

    fn done(&self, out: Result<P, E>, deadline: Instant) -> Self::Output {
        match out {
            Ok(inner) => Ok(TimeoutPermit { inner, deadline }),
            Err(err) => Err(err.into()),
        }
    }

    fn expired(&self) -> Self::Output {
        Err(Error::timeout().retryable())
    }
}

/// `call`: converts the error; expiry is not retryable (the server may have processed it).
struct CallDone;

impl<T, E: Into<Error>> Finish<Result<T, E>> for CallDone {
    type Output = Result<T, Error>;

    fn done(&self, out: Result<T, E>, _deadline: Instant) -> Self::Output {
        out.map_err(Into::into)
    }

    fn expired(&self) -> Self::Output {
        Err(Error::timeout())
    }
}

impl<F: Future, M: Finish<F::Output>> Future for Within<F, M> {
    type Output = M::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<M::Output> {
        let mut this = self.project();
        // Ours, or the caller's if earlier: a deadline the caller set around this very future
        // (`with_deadline(d, svc.ready())`) was not current when it was built.
        let deadline = match deadline::current() {
            Some(outer) if outer < this.fut.deadline() => outer,
            _ => this.fut.deadline(),
        };
        if let Poll::Ready(out) = this.fut.as_mut().poll(cx) {
            return Poll::Ready(this.map.done(out, deadline));
        }
        let sleep = this.sleep.get_or_insert_with(|| sleep_until(deadline));
        match Pin::new(sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(this.map.expired()),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Error: Into<Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = TimeoutPermit<S::Permit>;

    fn ready(&self) -> impl Future<Output = Result<Self::Permit, Error>> {
        Within {
            fut: with_deadline(self.deadline(), self.inner.ready()),
            sleep: None,
            map: ReadyDone,
        }
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    fn try_ready(&self) -> TryReady<Self::Permit, Error> {
        match self.inner.try_ready() {
            TryReady::Ready(inner) => TryReady::Ready(TimeoutPermit {
                inner,
                deadline: self.deadline(),
            }),
            TryReady::Busy => TryReady::Busy,
            TryReady::Closed(err) => TryReady::Closed(err.into()),
        }
    }

    #[inline] // built in place by the caller: not inlined, the whole inner future is copied out
    fn call(
        &self,
        permit: Self::Permit,
        req: Req,
    ) -> impl Future<Output = Result<S::Response, Error>> {
        let TimeoutPermit { inner, deadline } = permit;
        Within {
            fut: with_deadline(deadline, self.inner.call(inner, req)),
            sleep: None,
            map: CallDone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::paused;
    use sheave_core::time::{now, sleep};
    use sheave_service::{ServiceExt, mock, service_fn};

    #[test]
    fn a_timeout_of_duration_max_means_no_limit_not_a_panic() {
        let svc = Timeout::new(
            service_fn(|n: u8| async move { Ok::<_, Error>(n) }),
            Duration::MAX,
        );
        assert_eq!(paused().block_on(svc.oneshot(7)).unwrap(), 7);
    }

    #[test]
    fn the_deadline_covers_waiting_for_readiness() {
        let (svc, handle) = mock::pair_with_permits::<(), ()>(0);
        let svc = Timeout::new(svc, Duration::from_millis(50));
        paused().block_on(async {
            let start = now();
            let err = svc.ready().await.unwrap_err();
            assert!(err.is_timeout());
            assert!(err.is_retryable(), "never sent, so retryable");
            assert_eq!(now() - start, Duration::from_millis(50));
        });
        drop(handle);
    }

    #[test]
    fn the_deadline_set_at_readiness_bounds_the_call() {
        let (svc, handle) = mock::pair_with_permits::<(), ()>(0);
        let svc = Timeout::new(svc, Duration::from_millis(100));
        paused().block_on(async {
            let start = now();
            let waiting = async {
                sleep(Duration::from_millis(80)).await;
                handle.allow(1);
            };
            let (permit, ()) = futures::join!(svc.ready(), waiting);
            let permit = permit.unwrap();
            assert_eq!(permit.deadline(), start + Duration::from_millis(100));
            let err = svc.call(permit, ()).await.unwrap_err();
            assert!(err.is_timeout());
            assert!(!err.is_retryable(), "the server may have processed it");
            assert_eq!(now() - start, Duration::from_millis(100));
        });
    }

    #[test]
    fn an_answer_at_once_never_arms_a_timer() {
        let svc = Timeout::new(
            service_fn(|n: u8| async move { Ok::<_, Error>(n) }),
            Duration::from_secs(1),
        );
        paused().block_on(async {
            let start = now();
            assert_eq!(svc.oneshot(7).await.unwrap(), 7);
            assert_eq!(now(), start);
        });
    }

    #[test]
    fn inner_layers_run_under_the_deadline() {
        let svc = Timeout::new(
            service_fn(|()| async { Ok::<_, Error>(deadline::current()) }),
            Duration::from_secs(2),
        );
        paused().block_on(async {
            let start = now_cached();
            let seen = svc.oneshot(()).await.unwrap();
            assert_eq!(seen, Some(start + Duration::from_secs(2)));
            // An earlier outer deadline wins.
            let outer = start + Duration::from_millis(5);
            let seen = with_deadline(outer, svc.oneshot(())).await.unwrap();
            assert_eq!(seen, Some(outer));
        });
    }

    #[test]
    fn debug_shows_the_config() {
        let svc = Timeout::new((), Duration::from_millis(3));
        assert_eq!(format!("{svc:?}"), "Timeout { timeout: 3ms, inner: () }");
    }
}
