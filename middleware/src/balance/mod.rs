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
//!   asks each pick's `try_ready`: the first with capacity wins; after
//!   [`picks`](BalanceConfig::picks) busy answers it waits for the least loaded one it saw
//!   *or any change of the endpoint set* ([`WhenBusy::WaitForBest`]), or fails at once with
//!   `Overloaded` ([`WhenBusy::FailFast`]). With no endpoint at all it waits at most
//!   [`empty_wait`](BalanceConfig::empty_wait), then fails with `Unavailable`; when every
//!   pick refuses for now (its `try_ready` says `Closed` with an error other than
//!   `ErrorKind::Closed` — an open circuit breaker), it fails at once with `Unavailable`.
//!   These errors are flagged retryable: nothing was sent.
//! - **Only a dead connection is dropped.** An endpoint whose readiness fails with
//!   `ErrorKind::Closed` is taken out and reconnected in the background; any other refusal
//!   (a breaker, a per-endpoint limit) leaves the connection alone.
//! - **Endpoints are tracked by key.** A permit holds its endpoint; a request whose endpoint
//!   was removed between `ready` and `call` is not sent anywhere: it fails with a retryable
//!   `Unavailable`. Requests already sent finish on the endpoint they went to.
//! - **Failures count.** The [classifier](sheave_service::classify) judges each outcome: a
//!   failure counts as a round trip of at least [`PeakEwma::failure_penalty`] (a host that
//!   fails fast never looks best), and [`Ejection`] takes an endpoint out after consecutive
//!   failures, for a backoff that grows with each ejection, never more than
//!   [`max_share`](Ejection::max_share) of the endpoints at once.
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

mod config;
mod driver;
mod endpoint;

pub use config::{Backoff, BalanceConfig, Ejection, PeakEwma, Policy, WhenBusy};
pub use endpoint::EndpointStats;

use crate::discover::Discover;
use endpoint::Endpoint;
use futures::future::{Either, select};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sheave_core::{JoinHandle, time};
use sheave_service::classify::{Classify, DefaultClassifier};
use sheave_service::{Error, ErrorKind, NewService, Service, TryReady};
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::hash::Hash;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The state the balancer shares with its background task.
pub(crate) struct Shared<K, S> {
    config: BalanceConfig,
    /// Connected endpoints that take requests.
    endpoints: RefCell<Vec<Rc<Endpoint<K, S>>>>,
    /// Bumped by every change of `endpoints`.
    version: Cell<u64>,
    /// `ready()` callers waiting for a change, each removed when its wait ends or is dropped
    /// (so the set never outgrows the callers actually waiting).
    waiters: RefCell<Slab<Waker>>,
    /// The background task.
    driver: RefCell<Option<Waker>>,
    /// Keys whose connection closed, for the background task to reconnect.
    reconnects: RefCell<Vec<K>>,
    rng: RefCell<SmallRng>,
    cursor: Cell<usize>,
}

impl<K: Clone + Eq, S> Shared<K, S> {
    fn new(config: BalanceConfig) -> Self {
        let rng = match config.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        Shared {
            config,
            endpoints: RefCell::new(Vec::new()),
            version: Cell::new(0),
            waiters: RefCell::new(Slab::new()),
            driver: RefCell::new(None),
            reconnects: RefCell::new(Vec::new()),
            rng: RefCell::new(rng),
            cursor: Cell::new(0),
        }
    }

    fn changed(&self) {
        self.version.set(self.version.get() + 1);
        // Wake outside the borrow: a woken task may be polled by a foreign executor at once.
        let woken: Vec<Waker> = self.waiters.borrow_mut().drain().collect();
        woken.into_iter().for_each(Waker::wake);
    }

    /// Waits until the endpoint set differs from `version`.
    async fn change_since(&self, version: u64) {
        /// Removes the waiter's entry when the wait is dropped — unless a change already
        /// drained every entry (the version moved), when the key may be someone else's.
        struct Waiting<'a> {
            waiters: &'a RefCell<Slab<Waker>>,
            current: &'a Cell<u64>,
            version: u64,
            key: Option<usize>,
        }
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                if let Some(key) = self.key
                    && self.current.get() == self.version
                {
                    self.waiters.borrow_mut().try_remove(key);
                }
            }
        }
        let mut waiting = Waiting {
            waiters: &self.waiters,
            current: &self.version,
            version,
            key: None,
        };
        poll_fn(|cx| {
            if self.version.get() != version {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            match waiting.key {
                Some(key) => {
                    if !waiters[key].will_wake(cx.waker()) {
                        waiters[key] = cx.waker().clone();
                    }
                }
                None => waiting.key = Some(waiters.insert(cx.waker().clone())),
            }
            Poll::Pending
        })
        .await
    }

    pub(crate) fn set_driver_waker(&self, waker: &Waker) {
        let mut slot = self.driver.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    pub(crate) fn take_reconnects(&self) -> Vec<K> {
        std::mem::take(&mut *self.reconnects.borrow_mut())
    }

    /// The round-trip estimate a new endpoint starts with: the mean of the others.
    fn neutral_rtt(&self, now: Instant) -> Duration {
        let cfg = match self.config.policy {
            Policy::P2cPeakEwma(cfg) => cfg,
            _ => return Duration::ZERO,
        };
        let endpoints = self.endpoints.borrow();
        if endpoints.is_empty() {
            return cfg.default_rtt;
        }
        let sum: f64 = endpoints.iter().map(|e| e.rtt_estimate(&cfg, now)).sum();
        Duration::from_nanos((sum / endpoints.len() as f64) as u64)
    }

    pub(crate) fn insert(&self, key: K, svc: S) {
        let now = time::now();
        let ep = Rc::new(Endpoint::new(key, svc, self.neutral_rtt(now), now));
        self.endpoints.borrow_mut().push(ep);
        self.changed();
    }

    pub(crate) fn remove(&self, key: &K) {
        let mut endpoints = self.endpoints.borrow_mut();
        if let Some(i) = endpoints.iter().position(|e| &e.key == key) {
            endpoints.swap_remove(i).mark_gone();
            drop(endpoints);
            self.changed();
        }
    }

    /// The endpoint's connection closed: take it out and ask for a reconnect.
    fn closed(&self, ep: &Rc<Endpoint<K, S>>) {
        let mut endpoints = self.endpoints.borrow_mut();
        let Some(i) = endpoints.iter().position(|e| Rc::ptr_eq(e, ep)) else {
            return; // already replaced or removed
        };
        endpoints.swap_remove(i).mark_gone();
        drop(endpoints);
        self.reconnects.borrow_mut().push(ep.key.clone());
        if let Some(w) = self.driver.borrow().as_ref() {
            w.wake_by_ref();
        }
        self.changed();
    }

    /// How many endpoints may be ejected at once.
    fn ejection_cap(&self, now: Instant) -> impl FnOnce() -> bool + '_ {
        move || {
            let Some(cfg) = &self.config.ejection else {
                return false;
            };
            let endpoints = self.endpoints.borrow();
            let cap = ((endpoints.len() as f64 * cfg.max_share) as usize).max(1);
            endpoints.iter().filter(|e| e.is_ejected(now)).count() < cap
        }
    }

    /// One random eligible index (ejected endpoints are ineligible unless `panic`).
    fn random_eligible(
        &self,
        endpoints: &[Rc<Endpoint<K, S>>],
        panic: bool,
        now: Instant,
    ) -> usize {
        let n = endpoints.len();
        let mut rng = self.rng.borrow_mut();
        for _ in 0..2 * n {
            let i = rng.random_range(0..n);
            if panic || !endpoints[i].is_ejected(now) {
                return i;
            }
        }
        endpoints
            .iter()
            .position(|e| !e.is_ejected(now))
            .unwrap_or(0)
    }

    /// The next endpoint by the policy.
    fn pick(&self, endpoints: &[Rc<Endpoint<K, S>>], now: Instant) -> Rc<Endpoint<K, S>> {
        let n = endpoints.len();
        let panic = endpoints.iter().all(|e| e.is_ejected(now));
        let policy = &self.config.policy;
        let i = match policy {
            Policy::RoundRobin => {
                let start = self.cursor.get();
                let i = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| panic || !endpoints[i].is_ejected(now))
                    .unwrap_or(start % n);
                self.cursor.set(i + 1);
                i
            }
            Policy::P2cPending | Policy::P2cPeakEwma(_) => {
                let a = self.random_eligible(endpoints, panic, now);
                if n == 1 {
                    a
                } else {
                    let mut b = self.random_eligible(endpoints, panic, now);
                    if b == a {
                        b = (a + 1 + self.rng.borrow_mut().random_range(0..n - 1)) % n;
                    }
                    if endpoints[b].cost(policy, now) < endpoints[a].cost(policy, now) {
                        b
                    } else {
                        a
                    }
                }
            }
        };
        endpoints[i].clone()
    }
}

/// What one round of picking found.
enum Pick<K, S, P> {
    Ready(Rc<Endpoint<K, S>>, P),
    /// Every pick was busy; the least loaded of them.
    Busy(Rc<Endpoint<K, S>>),
    /// Every pick refused (without being dead); the last refusal.
    Refused(Error),
    Empty,
}

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

impl<K: Clone + Eq, S, C> Balance<K, S, C> {
    fn try_pick<Req>(&self, now: Instant) -> Pick<K, S, S::Permit>
    where
        S: Service<Req>,
        S::Error: Into<Error>,
    {
        let shared = &*self.shared;
        // Each dead endpoint found is removed, so this ends.
        loop {
            let endpoints = shared.endpoints.borrow();
            if endpoints.is_empty() {
                return Pick::Empty;
            }
            let mut best: Option<Rc<Endpoint<K, S>>> = None;
            let mut dead = None;
            let mut refused = None;
            for _ in 0..shared.config.picks.max(1) {
                let ep = shared.pick(&endpoints, now);
                match ep.svc.try_ready() {
                    TryReady::Ready(permit) => return Pick::Ready(ep, permit),
                    TryReady::Busy => {
                        let policy = &shared.config.policy;
                        if best
                            .as_ref()
                            .is_none_or(|b| ep.cost(policy, now) < b.cost(policy, now))
                        {
                            best = Some(ep);
                        }
                    }
                    TryReady::Closed(e) => {
                        let e: Error = e.into();
                        if e.kind() == ErrorKind::Closed {
                            // The connection died: drop it, reconnect in the background.
                            dead = Some(ep);
                            break;
                        }
                        // Refusing for now (an open circuit breaker, say): not dead, just
                        // not a candidate for this pick.
                        refused = Some(e);
                    }
                }
            }
            // Every pick refused: a refusing endpoint looks idle (nothing pending), so p2c
            // keeps choosing it while a healthy one waits. Look at every endpoint once: the
            // ones in service first, cheapest first; ejected ones only when no other can take
            // the request (a rare path, so the allocation is fine).
            if dead.is_none() && best.is_none() && refused.is_some() {
                let policy = &shared.config.policy;
                let mut order: Vec<_> = endpoints
                    .iter()
                    .map(|ep| (ep.is_ejected(now), ep.cost(policy, now), ep))
                    .collect();
                order.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
                for (ejected, _, ep) in order {
                    if best.is_some() && ejected {
                        break; // a busy endpoint in service beats an ejected one
                    }
                    match ep.svc.try_ready() {
                        TryReady::Ready(permit) => return Pick::Ready(ep.clone(), permit),
                        TryReady::Busy => {
                            let policy = &shared.config.policy;
                            if best
                                .as_ref()
                                .is_none_or(|b| ep.cost(policy, now) < b.cost(policy, now))
                            {
                                best = Some(ep.clone());
                            }
                        }
                        TryReady::Closed(e) => {
                            let e: Error = e.into();
                            if e.kind() == ErrorKind::Closed {
                                dead = Some(ep.clone());
                                break;
                            }
                        }
                    }
                }
            }
            drop(endpoints);
            match (dead, best, refused) {
                (Some(ep), _, _) => shared.closed(&ep),
                (None, Some(best), _) => return Pick::Busy(best),
                (None, None, Some(e)) => return Pick::Refused(e),
                (None, None, None) => return Pick::Empty,
            }
        }
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

/// Settles an endpoint's load when a call ends — or is dropped half-way.
struct InFlight<'a, K: Clone + Eq, S> {
    shared: &'a Shared<K, S>,
    endpoint: &'a Rc<Endpoint<K, S>>,
    /// When the call started — read only for peak-EWMA, which needs a round-trip time; the
    /// other policies read no clock per request.
    start: Option<Instant>,
}

impl<K: Clone + Eq, S> InFlight<'_, K, S> {
    fn settle(self, verdict: sheave_service::classify::Class) {
        let this = std::mem::ManuallyDrop::new(self);
        this.finish(Some(verdict));
    }

    fn finish(&self, verdict: Option<sheave_service::classify::Class>) {
        let (now, rtt) = match self.start {
            Some(start) => {
                let now = time::now();
                (now, now.saturating_duration_since(start))
            }
            None => (time::now_cached(), Duration::ZERO),
        };
        let cfg = &self.shared.config;
        self.endpoint.finish(
            rtt,
            verdict,
            &cfg.policy,
            cfg.ejection.as_ref(),
            self.shared.ejection_cap(now),
            now,
        );
    }
}

impl<K: Clone + Eq, S> Drop for InFlight<'_, K, S> {
    fn drop(&mut self) {
        self.finish(None);
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
        let shared = &*self.shared;
        let mut empty_until = None;
        loop {
            let version = shared.version.get();
            let now = time::now_cached();
            match self.try_pick::<Req>(now) {
                Pick::Ready(endpoint, inner) => return Ok(BalancePermit { endpoint, inner }),
                Pick::Busy(best) => {
                    if shared.config.when_busy == WhenBusy::FailFast {
                        return Err(
                            Error::msg(ErrorKind::Overloaded, "every endpoint is busy").retryable()
                        );
                    }
                    let outcome = {
                        let ready = pin!(best.svc.ready());
                        let change = pin!(shared.change_since(version));
                        match select(ready, change).await {
                            Either::Left((ready, _)) => Some(ready.map_err(Into::into)),
                            Either::Right(((), _)) => None,
                        }
                    };
                    match outcome {
                        Some(Ok(inner)) if !best.is_gone() => {
                            return Ok(BalancePermit {
                                endpoint: best,
                                inner,
                            });
                        }
                        Some(Err(e)) if e.kind() == ErrorKind::Closed => shared.closed(&best),
                        // Gone meanwhile, refusing now, or the set changed: look again.
                        Some(_) | None => {}
                    }
                }
                Pick::Refused(cause) => {
                    return Err(Error::new(ErrorKind::Unavailable, cause)
                        .with_context("no endpoint will take requests now")
                        .retryable());
                }
                Pick::Empty => {
                    let until = *empty_until
                        .get_or_insert_with(|| time::saturating_add(now, shared.config.empty_wait));
                    let change = shared.change_since(version);
                    if time::timeout_at(until, change).await.is_err() {
                        return Err(
                            Error::msg(ErrorKind::Unavailable, "no endpoint is connected")
                                .retryable(),
                        );
                    }
                }
            }
        }
    }

    fn try_ready(&self) -> TryReady<Self::Permit, Error> {
        match self.try_pick::<Req>(time::now_cached()) {
            Pick::Ready(endpoint, inner) => TryReady::Ready(BalancePermit { endpoint, inner }),
            Pick::Busy(_) | Pick::Refused(_) | Pick::Empty => TryReady::Busy,
        }
    }

    async fn call(&self, permit: Self::Permit, req: Req) -> Result<S::Response, Error> {
        let BalancePermit { endpoint, inner } = permit;
        if endpoint.is_gone() {
            return Err(Error::msg(ErrorKind::Unavailable, "the endpoint was removed").retryable());
        }
        endpoint.start();
        let in_flight = InFlight {
            shared: &self.shared,
            endpoint: &endpoint,
            start: matches!(self.shared.config.policy, Policy::P2cPeakEwma(_)).then(time::now),
        };
        let result = endpoint.svc.call(inner, req).await.map_err(Into::into);
        in_flight.settle(self.classifier.classify(result.as_ref()));
        if let Err(e) = &result
            && e.is_closed()
        {
            self.shared.closed(&endpoint);
        }
        result
    }
}

/// Builds a [`Balance`]; from [`Balance::builder`].
#[derive(Debug, Clone)]
pub struct BalanceBuilder<C = DefaultClassifier> {
    config: BalanceConfig,
    classifier: C,
}

impl<C> BalanceBuilder<C> {
    /// Sets the whole configuration.
    pub fn config(mut self, config: BalanceConfig) -> Self {
        self.config = config;
        self
    }

    /// p2c over pending requests.
    pub fn p2c_pending(mut self) -> Self {
        self.config.policy = Policy::P2cPending;
        self
    }

    /// p2c over peak-EWMA latency, with these parameters.
    pub fn peak_ewma(mut self, params: PeakEwma) -> Self {
        self.config.policy = Policy::P2cPeakEwma(params);
        self
    }

    /// Round robin.
    pub fn round_robin(mut self) -> Self {
        self.config.policy = Policy::RoundRobin;
        self
    }

    /// What `ready()` does when every pick is busy.
    pub fn when_busy(mut self, when: WhenBusy) -> Self {
        self.config.when_busy = when;
        self
    }

    /// How long `ready()` waits for a first endpoint.
    pub fn empty_wait(mut self, wait: Duration) -> Self {
        self.config.empty_wait = wait;
        self
    }

    /// Reconnect backoff.
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.config.reconnect = backoff;
        self
    }

    /// Outlier ejection parameters.
    pub fn ejection(mut self, ejection: Ejection) -> Self {
        self.config.ejection = Some(ejection);
        self
    }

    /// Never eject endpoints.
    pub fn without_ejection(mut self) -> Self {
        self.config.ejection = None;
        self
    }

    /// Seeds the random picks (reproducible tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Judges outcomes with `classifier` instead of the default.
    pub fn classifier<C2>(self, classifier: C2) -> BalanceBuilder<C2> {
        BalanceBuilder {
            config: self.config,
            classifier,
        }
    }

    /// Starts the balancer: spawns its background task on this runtime thread.
    ///
    /// # Panics
    /// Outside a runtime thread.
    pub fn build<D, N, K, T>(self, discover: D, connector: N) -> Balance<K, N::Service, C>
    where
        D: Discover<Key = K, Target = T> + 'static,
        N: NewService<T> + 'static,
        N::Error: Into<Error>,
        N::Service: 'static,
        K: Clone + Eq + Hash + fmt::Debug + 'static,
        T: Clone + 'static,
    {
        let shared = Rc::new(Shared::new(self.config));
        let driver = sheave_core::spawn(driver::drive(discover, connector, shared.clone()));
        Balance {
            shared,
            classifier: self.classifier,
            driver,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover;
    use sheave_core::Runtime;
    use sheave_service::mock;

    #[test]
    fn dropped_waiters_leave_no_entry_behind() {
        // Regression (review): waiters were kept until the endpoint set changed, so with a
        // stable set the list grew with every task that ever waited.
        let rt = Runtime::builder().paused_clock().build().unwrap();
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
            assert_eq!(lb.shared.waiters.borrow().len(), 0);
        });
    }
}
