//! The state a [`Balance`](super::Balance) shares with its background task: the connected
//! endpoints, the waiters, and how calls settle into load and health.

use super::config::{BalanceConfig, Policy};
use super::endpoint::{Endpoint, Health, Sample};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use sheave_core::sync::{Cancelled, Notify, WaitQueue, WaiterId};
use sheave_core::time;
use sheave_service::classify::Class;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub(crate) struct Shared<K, S> {
    pub(crate) config: BalanceConfig,
    /// Connected endpoints that take requests.
    pub(crate) endpoints: RefCell<Vec<Rc<Endpoint<K, S>>>>,
    /// Bumped by every change of the endpoint set (a waiting `ready()` looks again).
    epoch: Cell<u64>,
    /// Wakes the `ready()` callers waiting for the epoch to move (core's one `Notify`: a
    /// dropped wait leaves no entry behind).
    moved: Notify,
    /// How many `ready()` calls wait on `moved` (for the `max_waiters` bound).
    waiting: Cell<usize>,
    /// The `ready()` calls waiting because every endpoint was full, in arrival order: a call
    /// that finishes frees one slot and wakes **one** of them (the first), not all — with
    /// hundreds of callers waiting, waking all of them on every answer was a thundering
    /// herd. A woken caller that finds the slot taken goes back to its place
    /// ([`WaitQueue::requeue`]); one that goes away with a wake it did not use passes it on.
    /// Its length is bounded by the `max_waiters` check in `ready()`.
    slots: RefCell<WaitQueue>,
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
            slots: RefCell::new(WaitQueue::new()),
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
        // One slot was freed: the first `ready()` waiting because every endpoint was full
        // looks again (one, not all).
        self.slot_freed();
    }
}

impl<K, S> Shared<K, S> {
    /// Wakes the first caller waiting for a slot, if any.
    #[inline]
    pub(crate) fn slot_freed(&self) {
        // Nobody waits on the fast path (a closed loop with a slot per caller): one test,
        // and the settling call stays small enough to inline.
        if !self.slots.borrow().is_empty() {
            self.wake_first();
        }
    }

    #[inline(never)]
    fn wake_first(&self) {
        let next = self.slots.borrow_mut().grant_front();
        if let Some(waker) = next {
            waker.wake();
        }
    }

    /// How many callers wait for a slot (queued; a woken one that has not looked yet is not
    /// counted).
    #[cfg(test)]
    pub(crate) fn slot_waiters(&self) -> usize {
        self.slots.borrow().len()
    }
}

/// A `ready()` call's place in the line of callers waiting for a freed slot; see
/// `Shared::slots`. It keeps its place across the call's looks; dropped, it leaves the line
/// and passes on a wake it did not use.
pub(crate) struct Place<'a, K, S> {
    shared: &'a Shared<K, S>,
    id: Option<WaiterId>,
}

impl<'a, K, S> Place<'a, K, S> {
    pub(crate) fn new(shared: &'a Shared<K, S>) -> Self {
        Place { shared, id: None }
    }

    /// Ready once a slot was freed for this caller: joins the line on the first poll, and
    /// goes back to its old place in it when polled again after a wake it already took.
    pub(crate) fn poll_freed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut slots = self.shared.slots.borrow_mut();
        match self.id {
            Some(id) if slots.take_grant(id) => Poll::Ready(()),
            Some(id) => {
                slots.requeue(id, cx.waker());
                Poll::Pending
            }
            None => {
                // Unbounded queue: `push` cannot fail (`ready()` bounds the waiters).
                if let Ok(id) = slots.push(cx.waker()) {
                    self.id = Some(id);
                }
                Poll::Pending
            }
        }
    }
}

impl<K, S> Drop for Place<'_, K, S> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let cancelled = self.shared.slots.borrow_mut().cancel(id);
            if cancelled == Cancelled::Granted {
                // Woken for a slot it will not look at: the next caller's.
                self.shared.slot_freed();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The balancer's line of callers waiting for a slot: wake one per freed slot, in order,
    //! and never lose a wake.

    use super::*;
    use rand::Rng;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }
    fn shared() -> Shared<u32, ()> {
        Shared::new(BalanceConfig::default())
    }
    fn poll(place: &mut Place<'_, u32, ()>, waker: &Waker) -> Poll<()> {
        place.poll_freed(&mut Context::from_waker(waker))
    }

    #[test]
    fn one_freed_slot_wakes_exactly_the_first_waiter() {
        let shared = shared();
        let counters: Vec<_> = (0..8).map(|_| counter()).collect();
        let mut places: Vec<_> = counters.iter().map(|_| Place::new(&shared)).collect();
        for (place, (_, waker)) in places.iter_mut().zip(&counters) {
            assert!(poll(place, waker).is_pending());
        }
        assert_eq!(shared.slot_waiters(), 8);
        shared.slot_freed();
        let woken: Vec<usize> = counters
            .iter()
            .map(|(c, _)| c.0.load(Ordering::SeqCst))
            .collect();
        assert_eq!(woken, [1, 0, 0, 0, 0, 0, 0, 0]);
        assert!(poll(&mut places[0], &counters[0].1).is_ready());
        for (place, (_, waker)) in places.iter_mut().zip(&counters).skip(1) {
            assert!(poll(place, waker).is_pending(), "no slot for the others");
        }
        // Two more slots: the next two, in order.
        shared.slot_freed();
        shared.slot_freed();
        let woken: Vec<usize> = counters
            .iter()
            .map(|(c, _)| c.0.load(Ordering::SeqCst))
            .collect();
        assert_eq!(woken, [1, 1, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_woken_waiter_that_finds_nothing_keeps_its_place() {
        let shared = shared();
        let (a_count, a) = counter();
        let (b_count, b) = counter();
        let mut first = Place::new(&shared);
        let mut second = Place::new(&shared);
        assert!(poll(&mut first, &a).is_pending());
        assert!(poll(&mut second, &b).is_pending());
        shared.slot_freed();
        assert!(poll(&mut first, &a).is_ready()); // looks: a newcomer took the slot
        assert!(poll(&mut first, &a).is_pending()); // waits again, ahead of `second`
        shared.slot_freed();
        assert_eq!(a_count.0.load(Ordering::SeqCst), 2);
        assert_eq!(b_count.0.load(Ordering::SeqCst), 0);
        assert!(poll(&mut first, &a).is_ready());
    }

    #[test]
    fn a_woken_waiter_dropped_hands_the_wake_to_the_next() {
        let shared = shared();
        let (_, a) = counter();
        let (b_count, b) = counter();
        let mut first = Place::new(&shared);
        let mut second = Place::new(&shared);
        assert!(poll(&mut first, &a).is_pending());
        assert!(poll(&mut second, &b).is_pending());
        shared.slot_freed();
        drop(first); // woken, never looked
        assert_eq!(b_count.0.load(Ordering::SeqCst), 1);
        assert!(poll(&mut second, &b).is_ready());
        drop(second);
        assert_eq!(shared.slot_waiters(), 0);
        // A waiter dropped while merely queued passes nothing and leaves nothing behind.
        let mut third = Place::new(&shared);
        assert!(poll(&mut third, &a).is_pending());
        drop(third);
        assert_eq!(shared.slot_waiters(), 0);
    }

    #[test]
    fn no_wake_is_lost_under_random_interleavings() {
        // Model: every freed slot while someone waits owes one live waiter a wake; a wake
        // is paid off only when its waiter looks, or dropped when nobody is left to take it.
        for seed in 0..200u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let shared = shared();
            // Each live waiter: its place, its wake count and waker, the wakes it has seen.
            type Live<'a> = (Place<'a, u32, ()>, Arc<Count>, Waker, usize);
            let mut live: Vec<Live<'_>> = Vec::new();
            let mut owed = 0usize;
            for _ in 0..300 {
                match rng.random_range(0..4) {
                    0 => {
                        let (c, w) = counter();
                        let mut place = Place::new(&shared);
                        assert!(poll(&mut place, &w).is_pending());
                        live.push((place, c, w, 0));
                    }
                    1 => {
                        if shared.slot_waiters() > 0 {
                            owed += 1;
                        }
                        shared.slot_freed();
                    }
                    2 if !live.is_empty() => {
                        // A woken waiter looks; on odd draws it found nothing and waits on.
                        let i = rng.random_range(0..live.len());
                        let (place, count, waker, seen) = &mut live[i];
                        let wakes = count.0.load(Ordering::SeqCst);
                        let ready = poll(place, waker).is_ready();
                        assert_eq!(ready, wakes > *seen, "ready exactly when woken");
                        if ready {
                            *seen = wakes;
                            owed -= 1;
                            if rng.random_bool(0.5) {
                                live.swap_remove(i); // took the slot and left
                            } else {
                                assert!(poll(place, waker).is_pending());
                            }
                        }
                    }
                    3 if !live.is_empty() => {
                        let i = rng.random_range(0..live.len());
                        let (place, count, _, seen) = live.swap_remove(i);
                        let held = count.0.load(Ordering::SeqCst) > seen;
                        // A woken waiter is out of the line: anyone still queued is another.
                        let queued = shared.slot_waiters() > 0;
                        drop(place);
                        if held && !queued {
                            owed -= 1; // nobody left to pass it to
                        }
                    }
                    _ => {}
                }
                let pending = live
                    .iter()
                    .filter(|(_, c, _, s)| c.0.load(Ordering::SeqCst) > *s)
                    .count();
                assert_eq!(
                    pending, owed,
                    "seed {seed}: every owed wake is held by a live waiter"
                );
                assert!(
                    live.iter()
                        .all(|(_, c, _, s)| c.0.load(Ordering::SeqCst) <= *s + 1),
                    "seed {seed}: one wake per waiter at a time"
                );
            }
        }
    }
}
