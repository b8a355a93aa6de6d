//! The [`Service`] trait: an asynchronous function from a request to a response, with
//! explicit readiness, and [`TryReady`], the non-blocking answer to "can you take one more?".
//!
//! A caller first reserves capacity with [`ready`](Service::ready) (or
//! [`try_ready`](Service::try_ready)), receiving a *permit*, then spends the permit on
//! exactly one [`call`](Service::call). Dropping an unused permit releases the capacity.
//! Both methods take `&self`: one stack is shared by every request of a connection, and by
//! every task of a thread, with no clones, workers or locks.
//!
//! # Example
//!
//! ```
//! use sheave_service::Service;
//! use std::convert::Infallible;
//!
//! /// Doubles numbers; always ready.
//! struct Double;
//!
//! impl Service<u32> for Double {
//!     type Response = u32;
//!     type Error = Infallible;
//!     type Permit = ();
//!
//!     async fn ready(&self) -> Result<(), Infallible> {
//!         Ok(())
//!     }
//!
//!     // Always ready, so say so without building a `ready()` future: callers that ask
//!     // `try_ready` first (`oneshot`, balancers, load shedding) save a poll per call.
//!     fn try_ready(&self) -> sheave_service::TryReady<(), Infallible> {
//!         sheave_service::TryReady::Ready(())
//!     }
//!
//!     async fn call(&self, _permit: (), req: u32) -> Result<u32, Infallible> {
//!         Ok(req * 2)
//!     }
//! }
//!
//! # futures::executor::block_on(async {
//! let svc = Double;
//! let permit = svc.ready().await?;
//! assert_eq!(svc.call(permit, 21).await?, 42);
//! assert!(svc.try_ready().is_ready());
//! # Ok::<_, Infallible>(()) }).unwrap();
//! ```
//!
//! Writing a *middleware* — a service that wraps another — has a few more rules; the recipe
//! is in the middleware crate's `recipe` module (`sheave_middleware::recipe`).

use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// An asynchronous function from `Req` to a `Result<Response, Error>`, with backpressure.
///
/// The contract:
///
/// * [`ready`](Service::ready) waits until the service can take one more request and
///   returns a [`Permit`](Service::Permit) holding that capacity.
/// * [`call`](Service::call) spends a permit on one request. No call without capacity.
/// * A permit dropped unused releases its capacity: a caller that gives up leaks nothing.
/// * Errors from `ready` mean the service cannot take this request now. Whether that is
///   for good is the error's kind — **the one rule every service and caller follows**:
///
///   | readiness error | means | what a caller does |
///   |---|---|---|
///   | kind [`Closed`](crate::ErrorKind::Closed) | **closed for good**: this service will never take a request again (a dead connection) | drop it; a balancer reconnects |
///   | any other kind (`Unavailable`, `Overloaded`, ...) | **refusing for now**: an open circuit breaker, an ejected or overloaded endpoint | keep it; try another service, or this one later |
///
///   [`TryReady::Closed`] carries the same error and follows the same rule. A service that
///   refuses for a while (a breaker) returns a non-`Closed` kind; only a service that is
///   really gone returns `Closed`.
///
/// Permits must come from the same service value they are spent on. Services whose permit
/// is `()` cannot tell; services that can may panic on a foreign permit.
pub trait Service<Req> {
    /// The response of a successful call.
    type Response;
    /// The error of `ready` and `call`.
    type Error;
    /// Capacity reserved by `ready`; released when dropped unused.
    type Permit;

    /// Waits until the service can take one more request (backpressure), and reserves it.
    fn ready(&self) -> impl Future<Output = Result<Self::Permit, Self::Error>>;

    /// Reserves capacity without waiting: [`TryReady::Ready`] with a permit,
    /// [`TryReady::Busy`] when capacity is not available right now, or
    /// [`TryReady::Closed`] with the error `ready()` would fail with (closed for good or
    /// refusing for now, by its kind: the rule above).
    ///
    /// The default polls `ready()` once with a no-op waker and reports `Pending` as `Busy`;
    /// services that can tell "full" from "not yet" (a fairness yield, a lazy connect)
    /// override it, which lets load shedding and balancers decide precisely.
    fn try_ready(&self) -> TryReady<Self::Permit, Self::Error> {
        let fut = pin!(self.ready());
        let mut cx = Context::from_waker(Waker::noop());
        match fut.poll(&mut cx) {
            Poll::Ready(Ok(permit)) => TryReady::Ready(permit),
            Poll::Ready(Err(err)) => TryReady::Closed(err),
            Poll::Pending => TryReady::Busy,
        }
    }

    /// Runs `req` on the capacity that `permit` reserved.
    fn call(
        &self,
        permit: Self::Permit,
        req: Req,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>>;

    /// How many requests hold this service's capacity now — permits out plus calls not yet
    /// answered, **including calls whose callers gave up** but whose answers are still owed
    /// (a pipelined connection keeps their slots until the peer replies) — if the service
    /// knows; `None` (the default) if it does not.
    ///
    /// A balancer reads it as an endpoint's load, so a connection clogged by abandoned calls
    /// looks as full as it is. A wrapper forwards it (as it forwards `try_ready`); a service
    /// that does not know leaves the default, and the balancer counts its own calls instead.
    fn in_flight(&self) -> Option<usize> {
        None
    }
}

/// The answer of [`Service::try_ready`]: a permit, "busy right now", or a readiness error —
/// closed for good or refusing for now, by the error's kind (the rule on [`Service`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "a TryReady may hold a permit; dropping it releases the capacity"]
pub enum TryReady<P, E> {
    /// Capacity was reserved.
    Ready(P),
    /// No capacity right now; `ready()` would wait.
    Busy,
    /// The service will not take a request now; `ready()` would fail with this error. By the
    /// rule on [`Service`], an error of kind `Closed` means for good, any other kind means
    /// refusing for now.
    Closed(E),
}

impl<P, E> TryReady<P, E> {
    /// True for [`TryReady::Ready`].
    pub fn is_ready(&self) -> bool {
        matches!(self, TryReady::Ready(_))
    }

    /// True for [`TryReady::Busy`].
    pub fn is_busy(&self) -> bool {
        matches!(self, TryReady::Busy)
    }

    /// True for [`TryReady::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, TryReady::Closed(_))
    }

    /// Maps the permit.
    pub fn map<Q>(self, f: impl FnOnce(P) -> Q) -> TryReady<Q, E> {
        match self {
            TryReady::Ready(p) => TryReady::Ready(f(p)),
            TryReady::Busy => TryReady::Busy,
            TryReady::Closed(e) => TryReady::Closed(e),
        }
    }

    /// Maps the error.
    pub fn map_err<F>(self, f: impl FnOnce(E) -> F) -> TryReady<P, F> {
        match self {
            TryReady::Ready(p) => TryReady::Ready(p),
            TryReady::Busy => TryReady::Busy,
            TryReady::Closed(e) => TryReady::Closed(f(e)),
        }
    }

    /// The permit, if ready (a `Closed` error is dropped).
    pub fn ready(self) -> Option<P> {
        match self {
            TryReady::Ready(p) => Some(p),
            _ => None,
        }
    }

    /// `Ok(Some(permit))`, `Ok(None)` when busy, `Err(e)` when closed.
    pub fn into_result(self) -> Result<Option<P>, E> {
        match self {
            TryReady::Ready(p) => Ok(Some(p)),
            TryReady::Busy => Ok(None),
            TryReady::Closed(e) => Err(e),
        }
    }
}

impl<P, E> From<Result<P, E>> for TryReady<P, E> {
    /// `Ok` becomes `Ready`, `Err` becomes `Closed`.
    fn from(res: Result<P, E>) -> Self {
        match res {
            Ok(p) => TryReady::Ready(p),
            Err(e) => TryReady::Closed(e),
        }
    }
}

macro_rules! forward_service {
    ($($ty:ty),*) => {$(
        impl<S, Req> Service<Req> for $ty
        where
            S: Service<Req> + ?Sized,
        {
            type Response = S::Response;
            type Error = S::Error;
            type Permit = S::Permit;

            fn ready(&self) -> impl Future<Output = Result<Self::Permit, Self::Error>> {
                (**self).ready()
            }

            fn try_ready(&self) -> TryReady<Self::Permit, Self::Error> {
                (**self).try_ready()
            }

            fn call(
                &self,
                permit: Self::Permit,
                req: Req,
            ) -> impl Future<Output = Result<Self::Response, Self::Error>> {
                (**self).call(permit, req)
            }

            fn in_flight(&self) -> Option<usize> {
                (**self).in_flight()
            }
        }
    )*};
}

forward_service!(&S, Box<S>, Rc<S>, Arc<S>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_ready_helpers_map_and_convert() {
        let r: TryReady<u8, &str> = TryReady::Ready(1);
        assert!(r.is_ready());
        assert_eq!(r.map(|p| p + 1), TryReady::Ready(2));
        assert_eq!(r.into_result(), Ok(Some(1)));
        let b: TryReady<u8, &str> = TryReady::Busy;
        assert!(b.is_busy());
        assert_eq!(b.ready(), None);
        let c: TryReady<u8, &str> = TryReady::Closed("x");
        assert!(c.is_closed());
        assert_eq!(c.map_err(str::len), TryReady::Closed(1));
        assert_eq!(TryReady::from(Err::<u8, _>("y")), TryReady::Closed("y"));
    }
}
