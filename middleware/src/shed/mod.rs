//! [`LoadShed`]: fail at once with `Overloaded` when the inner service is *busy*, instead of
//! queueing.
//!
//! # Guarantees
//!
//! * **Never queues.** `ready()` asks the inner [`try_ready`](Service::try_ready): `Ready`
//!   passes the permit on, `Closed` passes the error on, and `Busy` — capacity is not
//!   available right now — gives a *shed* permit at once, whose `call` fails with
//!   [`ErrorKind::Overloaded`], flagged [`retryable`](Error::retryable): the request was not
//!   processed, so another endpoint (or a later attempt) may take it.
//! * **A shed is an answer, not a broken service.** The overload is reported by `call`, for
//!   that one request, never by `ready()`: a server's dispatcher treats a readiness error as
//!   "this service is done" and closes the connection, whereas a call error becomes that
//!   request's error reply (map it to your protocol's error with `then`), and a client's
//!   retry layer sees it like any other retryable call failure. (This is tower's split too:
//!   its `LoadShed` is always ready and fails in `call`.)
//! * **Sheds only "full", never "not yet".** tower's `LoadShed` sheds on any `Pending`, even a
//!   fairness yield (its #793). Here a `Busy` answer gets one more look before it is shed: the
//!   inner `ready()` is polled once with a probe waker. If it returns `Pending` *and wakes
//!   itself during that poll* — a yield, which asks to be polled again at once — the service
//!   is "not yet", not full, and `LoadShed` waits for it (yielding to the executor in turn).
//!   Only a `Pending` that leaves its waker registered for later (a queue, a timer) is
//!   overload. This matters because the default `try_ready` polls `ready()` once and
//!   reports a yield as `Busy`: a service that yields keeps its default `try_ready` and is
//!   still never shed.
//! * **Cancel safe.** The probed `ready()` future is dropped when shedding; the limiters of
//!   [`limit`](crate::limit) remove its queue entry.
//!
//! Services that can tell "full" from "not yet" cheaply should override `try_ready` (every
//! limiter in this crate does): `LoadShed` then needs no probe for them when they are ready,
//! and the probe's extra poll is spent only on the shedding path.
//!
//! [`LoadShed::try_ready`](Service::try_ready) forwards the inner answer (`Busy` stays
//! `Busy`: a balancer should pick another endpoint, not drop this one as `Closed`).
//!
//! # Example
//!
//! ```
//! use sheave_middleware::{ConcurrencyLimit, LoadShed};
//! use sheave_service::{service_fn, Error, Service, ServiceExt};
//!
//! let svc = LoadShed::new(ConcurrencyLimit::new(
//!     service_fn(|n: u32| async move { Ok::<_, Error>(n) }),
//!     1,
//! ));
//! # futures::executor::block_on(async {
//! let held = svc.ready().await.unwrap();
//! let err = svc.oneshot(1).await.unwrap_err(); // full: shed, not queued
//! assert!(err.is_overloaded() && err.is_retryable());
//! drop(held);
//! assert_eq!(svc.oneshot(2).await.unwrap(), 2);
//! # });
//! ```

mod layer;

pub use layer::LoadShedLayer;

use std::fmt;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use sheave_service::{Error, ErrorKind, Service, TryReady};

use crate::future::CallFuture;
use futures::future::Either;

/// The permit of a [`LoadShed`]: the inner permit, or none — the request is shed, and its
/// `call` fails with `Overloaded` without reaching the inner service.
#[derive(Debug)]
pub struct ShedPermit<P>(Option<P>);

impl<P> ShedPermit<P> {
    /// Whether this permit sheds its request.
    pub fn is_shed(&self) -> bool {
        self.0.is_none()
    }
}

/// Sheds requests when the inner service is busy; see the [module docs](self).
#[derive(Clone)]
pub struct LoadShed<S> {
    inner: S,
}

impl<S> LoadShed<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        LoadShed { inner }
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

impl<S: fmt::Debug> fmt::Debug for LoadShed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShed")
            .field("inner", &self.inner)
            .finish()
    }
}

/// The error of a shed request: `Overloaded`, retryable (it was not processed).
fn shed() -> Error {
    Error::msg(ErrorKind::Overloaded, "load shed").retryable()
}

/// A waker that records whether it was woken: tells a yield (woken during its own poll) from
/// a wait.
struct Probe(AtomicBool);

impl Wake for Probe {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

thread_local! {
    /// One probe per thread: made once, used only on the shedding path.
    static PROBE: (Arc<Probe>, Waker) = {
        let probe = Arc::new(Probe(AtomicBool::new(false)));
        (Arc::clone(&probe), Waker::from(probe))
    };
}

/// Polls `fut` once with the probe: `Some(true)` if it yielded (woke itself), `Some(false)`
/// if it waits, `None` if it finished (`out` holds the output).
fn probe_poll<F: Future>(fut: std::pin::Pin<&mut F>, out: &mut Option<F::Output>) -> bool {
    PROBE.with(|(flag, waker)| {
        flag.0.store(false, Ordering::Relaxed);
        match fut.poll(&mut Context::from_waker(waker)) {
            Poll::Ready(v) => {
                *out = Some(v);
                true
            }
            Poll::Pending => flag.0.swap(false, Ordering::Relaxed),
        }
    })
}

impl<S, Req> Service<Req> for LoadShed<S>
where
    S: Service<Req>,
    S::Error: Into<Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = ShedPermit<S::Permit>;

    async fn ready(&self) -> Result<Self::Permit, Error> {
        match self.inner.try_ready() {
            TryReady::Ready(permit) => return Ok(ShedPermit(Some(permit))),
            TryReady::Closed(err) => return Err(err.into()),
            TryReady::Busy => {}
        }
        // Busy, or a default `try_ready` that saw a yield: look once more, with the probe.
        let mut fut = pin!(self.inner.ready());
        poll_fn(|cx| {
            let mut out = None;
            if probe_poll(fut.as_mut(), &mut out) {
                if let Some(res) = out {
                    return Poll::Ready(res.map(|p| ShedPermit(Some(p))).map_err(Into::into));
                }
                // A yield: "not yet". Yield in turn, and poll it again.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Ok(ShedPermit(None)))
        })
        .await
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    fn try_ready(&self) -> TryReady<Self::Permit, Error> {
        self.inner
            .try_ready()
            .map(|p| ShedPermit(Some(p)))
            .map_err(Into::into)
    }

    fn call(
        &self,
        permit: Self::Permit,
        req: Req,
    ) -> impl Future<Output = Result<S::Response, Error>> {
        match permit.0 {
            Some(permit) => Either::Left(CallFuture::new(self.inner.call(permit, req))),
            None => Either::Right(std::future::ready(Err(shed()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheave_service::{ServiceExt, mock, service_fn};

    #[test]
    fn a_full_service_is_shed_without_queueing() {
        let (svc, handle) = mock::pair_with_permits::<(), ()>(0);
        let svc = LoadShed::new(svc);
        let shed = futures::executor::block_on(svc.ready()).unwrap();
        assert!(shed.is_shed());
        let err = futures::executor::block_on(svc.call(shed, ())).unwrap_err();
        assert!(err.is_overloaded());
        assert!(err.is_retryable());
        handle.allow(1);
        assert!(!futures::executor::block_on(svc.ready()).unwrap().is_shed());
    }

    #[test]
    fn closed_passes_the_inner_error() {
        let (svc, handle) = mock::pair::<(), ()>();
        handle.close(Error::unavailable());
        let err = futures::executor::block_on(LoadShed::new(svc).oneshot(())).unwrap_err();
        assert!(err.is_unavailable());
    }

    #[test]
    fn debug_prints_the_inner_service() {
        let svc = LoadShed::new(service_fn(|()| async { Ok::<_, Error>(()) }));
        assert!(format!("{svc:?}").starts_with("LoadShed { inner: ServiceFn"));
    }
}
