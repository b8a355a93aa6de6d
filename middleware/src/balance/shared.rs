//! The state a [`Balance`](super::Balance) shares with its background task: the connected
//! endpoints, the waiters, and how calls settle into load and health.

use super::config::{BalanceConfig, Policy};
use super::endpoint::{Endpoint, Health, Sample};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use sheave_core::sync::Notify;
use sheave_core::time;
use sheave_service::classify::Class;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

pub(crate) struct Shared<K, S> {
    pub(crate) config: BalanceConfig,
    /// Connected endpoints that take requests.
    pub(crate) endpoints: RefCell<Vec<Rc<Endpoint<K, S>>>>,
    /// Bumped by every change a waiting `ready()` may care about: the endpoint set changed,
    /// or a call finished while someone waited (capacity was freed).
    epoch: Cell<u64>,
    /// Wakes the `ready()` callers waiting for the epoch to move (core's one `Notify`: a
    /// dropped wait leaves no entry behind).
    moved: Notify,
    /// How many `ready()` calls wait on `moved`: a call that finishes wakes them only if
    /// there are any, without taking the `Notify`'s lock on every request.
    waiting: Cell<usize>,
    /// The background task.
    driver: RefCell<Option<Waker>>,
    /// Keys whose connection closed, for the background task to reconnect.
    reconnects: RefCell<Vec<K>>,
    pub(crate) rng: RefCell<SmallRng>,
    pub(crate) cursor: Cell<usize>,
    /// No endpoint is ejected at or after this instant (the latest ejection's end): before
    /// it, picks check each endpoint's health; after it, they need not.
    ejections_end: Cell<Option<Instant>>,
}

impl<K: Clone + Eq, S> Shared<K, S> {
    pub(crate) fn new(config: BalanceConfig) -> Self {
        let rng = match config.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        Shared {
            config,
            endpoints: RefCell::new(Vec::new()),
            epoch: Cell::new(0),
            moved: Notify::new(),
            waiting: Cell::new(0),
            driver: RefCell::new(None),
            reconnects: RefCell::new(Vec::new()),
            rng: RefCell::new(rng),
            cursor: Cell::new(0),
            ejections_end: Cell::new(None),
        }
    }

    /// Whether any endpoint may be ejected now (false means surely none is).
    pub(crate) fn any_ejected(&self, now: Instant) -> bool {
        self.ejections_end.get().is_some_and(|end| now < end)
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiting.get()
    }

    /// Moves the epoch and wakes every waiter.
    fn bump(&self) {
        self.epoch.set(self.epoch.get() + 1);
        self.moved.notify_waiters();
    }

    /// Waits until the epoch differs from `epoch`.
    pub(crate) async fn changed_since(&self, epoch: u64) {
        /// Counts the wait while it lasts, however it ends.
        struct Waiting<'a>(&'a Cell<usize>);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() - 1);
            }
        }
        // Created before the check: a bump between the two still completes it.
        let moved = self.moved.notified();
        if self.epoch.get() != epoch {
            return;
        }
        self.waiting.set(self.waiting.get() + 1);
        let _counted = Waiting(&self.waiting);
        moved.await;
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

    /// The estimate of an endpoint without history: the mean of those with one.
    pub(crate) fn neutral_rtt(&self, endpoints: &[Rc<Endpoint<K, S>>], now: Instant) -> f64 {
        let Policy::P2cPeakEwma(cfg) = &self.config.policy else {
            return 0.0;
        };
        let (sum, n) = endpoints
            .iter()
            .filter_map(|e| e.rtt_estimate(cfg, now))
            .fold((0.0, 0u32), |(sum, n), rtt| (sum + rtt, n + 1));
        if n == 0 {
            cfg.default_rtt.as_nanos() as f64
        } else {
            sum / f64::from(n)
        }
    }

    pub(crate) fn insert(&self, key: K, svc: S, health: Rc<Health>) {
        let ep = Rc::new(Endpoint::new(key, svc, health, time::now()));
        self.endpoints.borrow_mut().push(ep);
        self.bump();
    }

    pub(crate) fn remove(&self, key: &K) {
        let mut endpoints = self.endpoints.borrow_mut();
        if let Some(i) = endpoints.iter().position(|e| &e.key == key) {
            endpoints.swap_remove(i).mark_gone();
            drop(endpoints);
            self.bump();
        }
    }

    /// The endpoint's connection closed: take it out and ask for a reconnect. A connection
    /// that closed before its first success is a failure of its key (and lengthens the
    /// reconnect backoff): a server that accepts and closes at once gets ejected. A close
    /// found by a failed call (`failure_counted`) is not counted twice.
    pub(crate) fn closed(&self, ep: &Rc<Endpoint<K, S>>, failure_counted: bool) {
        let mut endpoints = self.endpoints.borrow_mut();
        let Some(i) = endpoints.iter().position(|e| Rc::ptr_eq(e, ep)) else {
            return; // already replaced or removed
        };
        endpoints.swap_remove(i).mark_gone();
        drop(endpoints);
        if !ep.ever_succeeded() {
            ep.health.bad_connection();
            if !failure_counted {
                self.failed(ep, time::now_cached());
            }
        }
        self.reconnects.borrow_mut().push(ep.key.clone());
        if let Some(w) = self.driver.borrow().as_ref() {
            w.wake_by_ref();
        }
        self.bump();
    }

    /// Whether one more endpoint may be ejected now (at most `max_share` of them, at least
    /// one).
    fn may_eject(&self, now: Instant) -> bool {
        let Some(cfg) = &self.config.ejection else {
            return false;
        };
        let endpoints = self.endpoints.borrow();
        let cap = ((endpoints.len() as f64 * cfg.max_share) as usize).max(1);
        !self.any_ejected(now) || endpoints.iter().filter(|e| e.is_ejected(now)).count() < cap
    }

    /// Counts a failure of `ep`'s key, and ejects it when that crosses the threshold and
    /// the cap allows.
    fn failed(&self, ep: &Endpoint<K, S>, now: Instant) {
        let ejection = self.config.ejection.as_ref();
        if ep.failed(ejection, now)
            && let Some(cfg) = ejection
            && self.may_eject(now)
        {
            ep.eject(cfg, now);
            let end = time::saturating_add(now, ep.health.ejected_for(now));
            if self.ejections_end.get().is_none_or(|e| e < end) {
                self.ejections_end.set(Some(end));
            }
        }
    }

    /// A call on `ep` ended after `rtt` with the classifier's `verdict`.
    pub(crate) fn settle(&self, ep: &Endpoint<K, S>, rtt: Duration, verdict: Class, now: Instant) {
        let sample = if verdict.is_failure() {
            Sample::Failed
        } else {
            Sample::Succeeded
        };
        self.record(ep, rtt, verdict, sample, now);
    }

    /// A call on `ep` was given up by its caller after `rtt`: `verdict` is the classifier's
    /// verdict on a timeout. It counts for ejection and stats like one, and as a latency of
    /// the time it waited.
    #[cold]
    pub(crate) fn given_up(
        &self,
        ep: &Endpoint<K, S>,
        rtt: Duration,
        verdict: Class,
        now: Instant,
    ) {
        self.record(ep, rtt, verdict, Sample::GivenUp, now);
    }

    #[inline]
    fn record(
        &self,
        ep: &Endpoint<K, S>,
        rtt: Duration,
        verdict: Class,
        sample: Sample,
        now: Instant,
    ) {
        ep.finish();
        if let Policy::P2cPeakEwma(cfg) = &self.config.policy
            && verdict != Class::Ignorable
        {
            ep.observe(cfg, rtt, sample, now);
        }
        match verdict {
            Class::Success => ep.succeeded(),
            Class::Failure { .. } => self.failed(ep, now),
            Class::Ignorable => {}
        }
        // Capacity was freed: a `ready()` waiting because every endpoint was full looks again.
        if self.waiting.get() > 0 {
            self.bump();
        }
    }
}
