//! Client-side load balancing over the endpoints of a [discovery](crate::discover) source.
//!
//! A [`Balance`] is built from a [`Discover`] stream and a connector — a
//! [`NewService`] that turns a target (an address) into a service (a connection) — and is
//! itself a [`Service`]. A background task follows discovery, connects new endpoints
//! (retrying with backoff: an endpoint is handed out only once connected) and reconnects
//! endpoints whose connection closed.
//!
//! # What it guarantees
//!
//! - **Picks by health, then load.** [`Policy::P2cPending`] and [`Policy::P2cPeakEwma`] pick
//!   two endpoints at random and keep the less loaded; [`Policy::RoundRobin`] takes each in
//!   turn. Ejected endpoints are skipped unless every endpoint is ejected (panic mode).
//! - **Never waits on one endpoint while another has capacity, and never stalls.** `ready()`
//!   asks each pick's `try_ready` (each pick skips endpoints already found full): the first
//!   with capacity wins. When every pick is full or refusing, it asks *every* endpoint once
//!   (the ones in service first); only when **every** endpoint is full does it wait — for the
//!   cheapest full one to free a slot, for a call through the balancer to finish (each
//!   finished call wakes one waiting caller, the first in line; a woken caller that finds the
//!   slot taken keeps its place, one that goes away passes the wake on), or for the endpoint
//!   set to change (that wakes them all), whichever comes first ([`WhenBusy::WaitForBest`]) — or fail
//!   at once with `Overloaded` ([`WhenBusy::FailFast`]). At most
//!   [`max_waiters`](BalanceConfig::max_waiters) callers wait; the next fails at once with
//!   `Overloaded`. With no endpoint at all it waits at most
//!   [`empty_wait`](BalanceConfig::empty_wait), then fails with `Unavailable`; when every
//!   endpoint refuses for now (an open circuit breaker), it fails at once with
//!   `Unavailable`. These errors are flagged retryable: nothing was sent.
//! - **Load is what the connection holds.** An endpoint's load is the service's own count
//!   of requests holding its capacity ([`Service::in_flight`]) when it keeps one — a
//!   pipelined connection counts calls whose callers gave up while their answers are still
//!   owed — and the balancer's count of its own calls otherwise.
//! - **Only a dead connection is dropped**, by the rule on [`Service`]: an endpoint whose
//!   readiness fails with `ErrorKind::Closed` is closed for good — taken out and reconnected
//!   in the background; any other readiness error (a breaker, a per-endpoint limit) is
//!   refusing for now and leaves the connection alone.
//! - **Endpoints are tracked by key.** A permit holds its endpoint; a request whose endpoint
//!   was removed between `ready` and `call` is not sent anywhere: it fails with a retryable
//!   `Unavailable`. Requests already sent finish on the endpoint they went to.
//! - **Failures count, and so do calls given up.** The
//!   [classifier](sheave_service::classify) judges each outcome. A call dropped before it
//!   finished — an outer timeout expired, a hedge or a `select` lost interest — is judged
//!   as the classifier judges a `Timeout` error, after the time it waited: a hung endpoint
//!   whose callers all give up is seen failing and as slow as they were patient, not idle.
//!   A failure counts as a round trip of at least [`PeakEwma::failure_penalty`] (a host that
//!   fails fast never looks best; the rules of the estimate are on [`PeakEwma`]), and [`Ejection`] takes an endpoint out
//!   after consecutive failures, for a backoff that grows with each ejection, never more
//!   than [`max_share`](Ejection::max_share) of the endpoints at once.
//! - **Health belongs to the key.** Failures, ejections and the reconnect backoff survive a
//!   reconnect; a connection that closes before its first success is a failure, and while
//!   a key is ejected it is not redialled.
//!
//! # Where the timeouts go
//!
//! Put a [`Timeout`](crate::Timeout) **below** the retry and above the balancer for each
//! attempt (Envoy's `per_try_timeout`, Finagle's `TimeoutFilter` under its retries), and one
//! **above** the retry for the whole request: the per-try timeout turns a hung endpoint into
//! a quick, retryable failure that the balancer counts (it ejects the endpoint within a few
//! attempts) and leaves time for a retry elsewhere; the outer deadline bounds what the
//! caller waits in all. `examples/support/cluster.rs` is that stack.
//!
//! # Example
//!
//! ```
//! use sheave_middleware::balance::Balance;
//! use sheave_middleware::discover;
//! use sheave_service::{service_fn, Error, ServiceExt};
//!
//! let rt = sheave_core::Runtime::builder().paused_clock().build().unwrap();
//! rt.block_on(async {
//!     // Three "servers": each answers with its own name.
//!     let endpoints = discover::fixed([("a", "a"), ("b", "b"), ("c", "c")]);
//!     let connect = |name: &'static str| async move {
//!         Ok::<_, Error>(service_fn(move |_req: ()| async move { Ok::<_, Error>(name) }))
//!     };
//!     let lb = Balance::builder().round_robin().build(endpoints, connect);
//!     let mut seen = Vec::new();
//!     for _ in 0..6 {
//!         seen.push(lb.oneshot(()).await.unwrap());
//!     }
//!     seen.sort();
//!     assert_eq!(seen, ["a", "a", "b", "b", "c", "c"]);
//! });
//! ```

mod builder;
mod config;
mod driver;
mod endpoint;
mod pick;
mod shared;

pub use builder::BalanceBuilder;
pub use config::{Backoff, BalanceConfig, Ejection, PeakEwma, Policy, WhenBusy};
pub use endpoint::EndpointStats;

use crate::discover::Discover;
use endpoint::Endpoint;

use pick::Pick;
use shared::{Place, Shared};
use sheave_core::{JoinHandle, time};
use sheave_service::classify::{Classify, DefaultClassifier};
use sheave_service::{Error, ErrorKind, NewService, Service, TryReady};
use std::fmt;
use std::future::{Future, poll_fn};
use std::hash::Hash;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// A load balancer over discovered endpoints; see the [module docs](self).
///
/// Must be created on a runtime thread (it spawns its background task there) and used on it.
pub struct Balance<K, S, C = DefaultClassifier> {
    shared: Rc<Shared<K, S>>,
    classifier: C,
    driver: JoinHandle<()>,
}

impl<K, S, C> Drop for Balance<K, S, C> {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl<K: fmt::Debug, S, C> fmt::Debug for Balance<K, S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("config", &self.shared.config)
            .field("endpoints", &self.shared.endpoints.borrow().len())
            .field("classifier", &std::any::type_name::<C>())
            .finish()
    }
}

impl Balance<(), ()> {
    /// A builder with the default [`BalanceConfig`].
    pub fn builder() -> BalanceBuilder {
        BalanceBuilder {
            config: BalanceConfig::default(),
            classifier: DefaultClassifier,
        }
    }

    /// A balancer with the default configuration (p2c over peak-EWMA, ejection on).
    ///
    /// # Panics
    /// Outside a runtime thread.
    pub fn new<D, N, K, T>(discover: D, connector: N) -> Balance<K, N::Service>
    where
        D: Discover<Key = K, Target = T> + 'static,
        N: NewService<T> + 'static,
        N::Error: Into<Error>,
        N::Service: 'static,
        K: Clone + Eq + Hash + fmt::Debug + 'static,
        T: Clone + 'static,
    {
        Balance::builder().build(discover, connector)
    }
}

impl<K: Clone, S, C> Balance<K, S, C> {
    /// `ready()` once the first pick found no capacity (`pick`, at `epoch`): waits, or
    /// fails, by the rules in the module docs.
    async fn wait_ready<Req>(
        &self,
        mut epoch: u64,
        mut pick: Pick<K, S, S::Permit>,
    ) -> Result<BalancePermit<K, S, S::Permit>, Error>
    where
        K: Clone + Eq,
        S: Service<Req>,
        S::Error: Into<Error>,
    {
        let shared = &*self.shared;
        let mut empty_until = None;
        let mut place = Place::new(shared);
        loop {
            match pick {
                Pick::Ready(endpoint, inner) => return Ok(BalancePermit { endpoint, inner }),
                Pick::Busy(best) => {
                    if shared.config.when_busy == WhenBusy::FailFast {
                        return Err(
                            Error::msg(ErrorKind::Overloaded, "every endpoint is busy").retryable()
                        );
                    }
                    if shared.waiting() >= shared.config.max_waiters {
                        return Err(Error::msg(
                            ErrorKind::Overloaded,
                            "every endpoint is busy and the balancer's wait queue is full",
                        )
                        .retryable());
                    }
                    // Wait for the cheapest full endpoint, a change of the set, or a slot
                    // freed by any call (one per finished call, first come first served).
                    let outcome = {
                        let mut ready = pin!(best.svc.ready());
                        let mut change = pin!(shared.changed_since(epoch));
                        poll_fn(|cx| {
                            if let Poll::Ready(r) = ready.as_mut().poll(cx) {
                                return Poll::Ready(Some(r.map_err(Into::into)));
                            }
                            if change.as_mut().poll(cx).is_ready()
                                || place.poll_freed(cx).is_ready()
                            {
                                return Poll::Ready(None);
                            }
                            Poll::Pending
                        })
                        .await
                    };
                    match outcome {
                        Some(Ok(inner)) if !best.is_gone() => {
                            return Ok(BalancePermit {
                                endpoint: best,
                                inner,
                            });
                        }
                        Some(Err(e)) if e.kind() == ErrorKind::Closed => {
                            shared.closed(&best, false)
                        }
                        // Refusing now (its own wait queue is full, say): an answer, not a
                        // reason to look again at once — nothing has changed, and looking
                        // again without waiting would spin.
                        Some(Err(e)) => return Err(e),
                        // Gone meanwhile, or something changed: look again.
                        Some(Ok(_)) | None => {}
                    }
                }
                Pick::Refused(cause) => {
                    return Err(Error::new(ErrorKind::Unavailable, cause)
                        .with_context("no endpoint will take requests now")
                        .retryable());
                }
                Pick::Empty => {
                    let until = *empty_until.get_or_insert_with(|| {
                        time::saturating_add(time::now_cached(), shared.config.empty_wait)
                    });
                    let change = shared.changed_since(epoch);
                    if time::timeout_at(until, change).await.is_err() {
                        return Err(
                            Error::msg(ErrorKind::Unavailable, "no endpoint is connected")
                                .retryable(),
                        );
                    }
                }
            }
            epoch = shared.epoch();
            pick = shared.try_pick::<Req>(time::now_cached());
        }
    }

    /// What the balancer knows of each connected endpoint, now.
    pub fn endpoints(&self) -> Vec<EndpointStats<K>> {
        let now = time::now();
        self.shared
            .endpoints
            .borrow()
            .iter()
            .map(|e| e.stats(&self.shared.config.policy, now))
            .collect()
    }

    /// The configuration.
    pub fn config(&self) -> &BalanceConfig {
        &self.shared.config
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }
}

/// A reservation on one endpoint.
pub struct BalancePermit<K, S, P> {
    endpoint: Rc<Endpoint<K, S>>,
    inner: P,
}

impl<K: fmt::Debug, S, P> fmt::Debug for BalancePermit<K, S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancePermit")
            .field("endpoint", &self.endpoint.key)
            .finish()
    }
}

impl<K, S, P> BalancePermit<K, S, P> {
    /// The key of the endpoint this permit reserved.
    pub fn key(&self) -> &K {
        &self.endpoint.key
    }
}

/// Settles an endpoint's load and health when a call ends — or is dropped half-way, when the
/// call counts as the classifier judges a timeout.
struct InFlight<
    'a,
    K: Clone + Eq,
    S,
    J: Fn(Result<&R, &Error>) -> sheave_service::classify::Class,
    R,
> {
    shared: &'a Shared<K, S>,
    endpoint: &'a Endpoint<K, S>,
    /// When the call started — read only for peak-EWMA, which needs a round-trip time; the
    /// other policies read no clock per request.
    start: Option<Instant>,
    classify: J,
    response: std::marker::PhantomData<fn(&R)>,
}

impl<K: Clone + Eq, S, J: Fn(Result<&R, &Error>) -> sheave_service::classify::Class, R>
    InFlight<'_, K, S, J, R>
{
    fn settle(self, outcome: Result<&R, &Error>) {
        let this = std::mem::ManuallyDrop::new(self);
        let (now, rtt) = this.elapsed();
        let verdict = (this.classify)(outcome);
        this.shared.settle(this.endpoint, rtt, verdict, now);
    }

    /// Now, and the time since the call started.
    fn elapsed(&self) -> (Instant, Duration) {
        match self.start {
            Some(start) => {
                let now = time::now();
                (now, now.saturating_duration_since(start))
            }
            None => (time::now_cached(), Duration::ZERO),
        }
    }
}

impl<K: Clone + Eq, S, J: Fn(Result<&R, &Error>) -> sheave_service::classify::Class, R> Drop
    for InFlight<'_, K, S, J, R>
{
    fn drop(&mut self) {
        // Given up before it finished: to the endpoint, a timeout.
        let (now, rtt) = self.elapsed();
        let verdict = (self.classify)(Err(&Error::timeout()));
        self.shared.given_up(self.endpoint, rtt, verdict, now);
    }
}

impl<K, S, C, Req> Service<Req> for Balance<K, S, C>
where
    K: Clone + Eq,
    S: Service<Req>,
    S::Error: Into<Error>,
    C: Classify<S::Response, Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = BalancePermit<K, S, S::Permit>;

    async fn ready(&self) -> Result<Self::Permit, Error> {
        // The fast path, a pick with capacity, carries none of the waiting's state: the wait
        // is boxed, so this future (which every layer above holds, and some move) stays
        // small. One allocation per wait, only when every endpoint is full.
        let epoch = self.shared.epoch();
        match self.shared.try_pick::<Req>(time::now_cached()) {
            Pick::Ready(endpoint, inner) => Ok(BalancePermit { endpoint, inner }),
            first => Box::pin(self.wait_ready::<Req>(epoch, first)).await,
        }
    }

    /// `Ready` from the first endpoint with capacity; `Busy` when every endpoint is full or
    /// none is connected yet; `Closed` with a retryable `Unavailable` error (refusing for
    /// now, by the rule on [`Service`]) when every endpoint refuses.
    fn try_ready(&self) -> TryReady<Self::Permit, Error> {
        match self.shared.try_pick::<Req>(time::now_cached()) {
            Pick::Ready(endpoint, inner) => TryReady::Ready(BalancePermit { endpoint, inner }),
            Pick::Refused(cause) => TryReady::Closed(
                Error::new(ErrorKind::Unavailable, cause)
                    .with_context("no endpoint will take requests now")
                    .retryable(),
            ),
            Pick::Busy(_) | Pick::Empty => TryReady::Busy,
        }
    }

    async fn call(&self, permit: Self::Permit, req: Req) -> Result<S::Response, Error> {
        let BalancePermit { endpoint, inner } = permit;
        if endpoint.is_gone() {
            return Err(Error::msg(ErrorKind::Unavailable, "the endpoint was removed").retryable());
        }
        endpoint.start::<Req>();
        let in_flight = InFlight {
            shared: &self.shared,
            endpoint: &endpoint,
            start: matches!(self.shared.config.policy, Policy::P2cPeakEwma(_)).then(time::now),
            classify: |outcome: Result<&S::Response, &Error>| self.classifier.classify(outcome),
            response: std::marker::PhantomData,
        };
        let result = endpoint.svc.call(inner, req).await.map_err(Into::into);
        in_flight.settle(result.as_ref());
        if let Err(e) = &result
            && e.is_closed()
        {
            // The call's failure is counted already.
            self.shared.closed(&endpoint, true);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover;
    use sheave_service::mock;

    #[test]
    fn a_finished_call_wakes_one_waiting_caller_not_all() {
        // Regression (issue 14): every finished call woke every `ready()` waiting for a
        // full balancer — hundreds of callers polled to find one slot.
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Context, Wake, Waker};
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let rt = crate::test_support::paused();
        rt.block_on(async {
            let (svc, handle) = mock::pair::<u32, u32>();
            let once = std::cell::RefCell::new(Some(crate::ConcurrencyLimit::new(svc, 1)));
            let connect = move |_: &'static str| {
                let svc = once.borrow_mut().take();
                async move { svc.ok_or_else(|| Error::msg(ErrorKind::Unavailable, "once")) }
            };
            let lb = Balance::builder().build(discover::fixed([("a", "a")]), connect);
            let permit = lb.ready().await.unwrap();
            let mut noop = Context::from_waker(Waker::noop());
            let mut call = Box::pin(lb.call(permit, 1));
            assert!(call.as_mut().poll(&mut noop).is_pending());
            let counts: Vec<_> = (0..8).map(|_| Arc::new(Count(0.into()))).collect();
            let wakers: Vec<Waker> = counts.iter().map(|c| Waker::from(c.clone())).collect();
            let mut waiters: Vec<_> = (0..8).map(|_| Box::pin(lb.ready())).collect();
            for (w, k) in waiters.iter_mut().zip(&wakers) {
                assert!(w.as_mut().poll(&mut Context::from_waker(k)).is_pending());
            }
            assert_eq!(lb.shared.slot_waiters(), 8);
            let (_, answer) = handle.try_next_request().unwrap();
            answer.respond(2);
            assert!(matches!(call.as_mut().poll(&mut noop), Poll::Ready(Ok(2))));
            let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect();
            assert!(woken[0] >= 1, "the first waiter is woken: {woken:?}");
            assert_eq!(woken[1..], [0; 7], "and nobody else: {woken:?}");
            let first = waiters[0]
                .as_mut()
                .poll(&mut Context::from_waker(&wakers[0]));
            assert!(matches!(first, Poll::Ready(Ok(_))), "the first proceeds");
            for (w, k) in waiters.iter_mut().zip(&wakers).skip(1) {
                assert!(w.as_mut().poll(&mut Context::from_waker(k)).is_pending());
            }
        });
    }

    #[test]
    fn dropped_waiters_leave_no_entry_behind() {
        // Regression (review): waiters were kept until the endpoint set changed, so with a
        // stable set the list grew with every task that ever waited.
        let rt = crate::test_support::paused();
        rt.block_on(async {
            let connect = |_: &'static str| async { Ok::<_, Error>(mock::pair::<u32, u32>().0) };
            let lb = Balance::builder().build(
                discover::fixed(std::iter::empty::<(&'static str, &'static str)>()),
                connect,
            );
            for _ in 0..100 {
                let wait = time::timeout(Duration::from_millis(1), lb.ready()).await;
                assert!(wait.is_err(), "no endpoint: it waits");
            }
            assert_eq!(lb.shared.waiting(), 0);
        });
    }
}
