//! [`CallAll`]: drive a stream of requests through a service, with bounded concurrency.
//!
//! `CallAll` takes a request from the stream, then waits for the service's `ready` before
//! taking the next, so a busy service slows the intake instead of queueing requests in memory
//! (at most one request waits for capacity). Capacity is reserved only once a request is at
//! hand: an idle stream holds no permit, and a deadline a permit carries (see `Timeout`)
//! starts with its request. At most [`max_in_flight`](CallAll::max_in_flight) calls run at
//! once (default [`CallAll::DEFAULT_MAX_IN_FLIGHT`]). Results come in request order, or in
//! completion order after [`unordered`](CallAll::unordered).
//!
//! Every request taken gets exactly one result: when `ready` fails, that error is the
//! result of the request that waited for it (in its place, in ordered mode), and the intake
//! goes on — a closed service fails the remaining requests quickly, one by one.
//!
//! `CallAll` borrows the service: the call futures borrow it too. Its last two type
//! parameters are the service's `ready` and `call` futures, inferred, never written.
//!
//! # Example
//!
//! ```
//! use futures::{stream, StreamExt};
//! use sheave_service::{service_fn, ServiceExt};
//! use std::convert::Infallible;
//!
//! let square = service_fn(|n: u64| async move { Ok::<_, Infallible>(n * n) });
//! # futures::executor::block_on(async {
//! let results: Vec<_> = square
//!     .call_all(stream::iter(1..=4))
//!     .max_in_flight(2)
//!     .collect()
//!     .await;
//! assert_eq!(results, vec![Ok(1), Ok(4), Ok(9), Ok(16)]);
//! # });
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::future::{self, Either, Ready};
use futures::stream::{FuturesOrdered, FuturesUnordered};
use pin_project_lite::pin_project;

use crate::service::Service;

pin_project! {
    /// A stream of the results of calling a service on each request of a stream; see the
    /// [module docs](self).
    #[must_use = "streams do nothing unless polled"]
    pub struct CallAll<'a, S, St, RF, CF>
    where
        S: Service<St::Item>,
        St: Stream,
        CF: Future,
    {
        svc: &'a S,
        #[pin]
        requests: St,
        #[pin]
        ready: Option<RF>,
        // A request taken from the stream, waiting for capacity.
        next: Option<St::Item>,
        make_ready: fn(&'a S) -> RF,
        make_call: fn(&'a S, S::Permit, St::Item) -> CF,
        in_flight: InFlight<Either<CF, Ready<CF::Output>>>,
        max_in_flight: usize,
        intake_done: bool,
    }
}

/// Running calls, yielded in request order or in completion order.
enum InFlight<F: Future> {
    Ordered(FuturesOrdered<F>),
    Unordered(FuturesUnordered<F>),
}

impl<F: Future> InFlight<F> {
    fn len(&self) -> usize {
        match self {
            InFlight::Ordered(q) => q.len(),
            InFlight::Unordered(q) => q.len(),
        }
    }

    fn push(&mut self, fut: F) {
        match self {
            InFlight::Ordered(q) => q.push_back(fut),
            InFlight::Unordered(q) => q.push(fut),
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        match self {
            InFlight::Ordered(q) => Pin::new(q).poll_next(cx),
            InFlight::Unordered(q) => Pin::new(q).poll_next(cx),
        }
    }
}

/// Calls `svc` on each request of `requests`; see the [module docs](self) and
/// [`ServiceExt::call_all`](crate::ServiceExt::call_all).
#[allow(clippy::type_complexity)]
pub fn call_all<'a, S, St>(
    svc: &'a S,
    requests: St,
) -> CallAll<
    'a,
    S,
    St,
    impl Future<Output = Result<S::Permit, S::Error>>,
    impl Future<Output = Result<S::Response, S::Error>>,
>
where
    S: Service<St::Item>,
    St: Stream,
{
    CallAll {
        svc,
        requests,
        ready: None,
        next: None,
        make_ready: |svc| svc.ready(),
        make_call: |svc, permit, req| svc.call(permit, req),
        in_flight: InFlight::Ordered(FuturesOrdered::new()),
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        intake_done: false,
    }
}

const DEFAULT_MAX_IN_FLIGHT: usize = 64;

impl<S, St, RF, CF> CallAll<'_, S, St, RF, CF>
where
    S: Service<St::Item>,
    St: Stream,
    CF: Future,
{
    /// The default bound on calls running at once: 64.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = DEFAULT_MAX_IN_FLIGHT;
}

impl<S, St, RF, CF> CallAll<'_, S, St, RF, CF>
where
    S: Service<St::Item>,
    St: Stream,
    CF: Future,
{
    /// Bounds the calls running at once (at least 1; 0 counts as 1).
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Yields results as calls complete rather than in request order.
    ///
    /// # Panics
    ///
    /// If calls are already running (the stream was polled before): the order is chosen
    /// before the first call.
    pub fn unordered(mut self) -> Self {
        assert!(
            self.in_flight.len() == 0,
            "CallAll::unordered must be called before the stream is polled"
        );
        self.in_flight = InFlight::Unordered(FuturesUnordered::new());
        self
    }

    /// The number of calls running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

impl<'a, S, St, RF, CF> Stream for CallAll<'a, S, St, RF, CF>
where
    S: Service<St::Item>,
    St: Stream,
    RF: Future<Output = Result<S::Permit, S::Error>>,
    CF: Future<Output = Result<S::Response, S::Error>>,
{
    type Item = Result<S::Response, S::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            // Intake: take a request, then reserve capacity to spend on it.
            if !*this.intake_done && this.in_flight.len() < *this.max_in_flight {
                if this.next.is_none() {
                    match this.requests.as_mut().poll_next(cx) {
                        Poll::Ready(Some(req)) => *this.next = Some(req),
                        Poll::Ready(None) => *this.intake_done = true,
                        Poll::Pending => {}
                    }
                }
                if this.next.is_some() {
                    if this.ready.is_none() {
                        this.ready.set(Some((this.make_ready)(this.svc)));
                    }
                    if let Some(ready) = this.ready.as_mut().as_pin_mut()
                        && let Poll::Ready(res) = ready.poll(cx)
                    {
                        this.ready.set(None);
                        if let Some(req) = this.next.take() {
                            this.in_flight.push(match res {
                                Ok(permit) => Either::Left((this.make_call)(this.svc, permit, req)),
                                // This request's result, in its place.
                                Err(err) => Either::Right(future::ready(Err(err))),
                            });
                        }
                        continue;
                    }
                }
            }
            // Drain. With nothing running and the intake open, the intake registered a wakeup.
            return match this.in_flight.poll_next(cx) {
                Poll::Ready(Some(res)) => Poll::Ready(Some(res)),
                Poll::Ready(None) if *this.intake_done => Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => Poll::Pending,
            };
        }
    }
}

impl<S, St, RF, CF> fmt::Debug for CallAll<'_, S, St, RF, CF>
where
    S: Service<St::Item> + fmt::Debug,
    St: Stream,
    CF: Future,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallAll")
            .field("svc", &self.svc)
            .field("in_flight", &self.in_flight.len())
            .field("max_in_flight", &self.max_in_flight)
            .field("ordered", &matches!(self.in_flight, InFlight::Ordered(_)))
            .field("intake_done", &self.intake_done)
            .finish_non_exhaustive()
    }
}
