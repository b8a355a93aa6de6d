//! [`WaitQueue`]: FIFO waiters with hand-off, for anything that hands out capacity.

use std::collections::VecDeque;
use std::fmt;
use std::task::Waker;

/// A waiter's place in a [`WaitQueue`], from [`WaitQueue::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(u64);

/// What a waiter held when it was [cancelled](WaitQueue::cancel): what its owner must pass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It had been handed a unit of capacity it did not take: give it back (to the next
    /// waiter, which is what releasing it does).
    Granted,
    /// It was first in line (and no longer is): whatever the front waiter watches (a refill
    /// timer, say) is now the next waiter's to watch.
    WasFront,
    /// It was queued behind others, or not queued at all: nothing to pass on.
    Queued,
}

/// [`WaitQueue::push`] refused a waiter: the queue holds its
/// [maximum](WaitQueue::with_max_waiters). The caller should fail at once (overloaded)
/// rather than wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    /// The bound that was reached.
    pub max_waiters: usize,
}

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} waiters already queued", self.max_waiters)
    }
}

impl std::error::Error for QueueFull {}

/// Tasks waiting for capacity, served in arrival order, with **hand-off**: capacity released
/// while someone waits is handed to the first waiter ([`grant_front`](WaitQueue::grant_front))
/// instead of going back to the pool, so a newcomer can never overtake the queue, and a
/// woken waiter already owns what it was woken for ([`take_grant`](WaitQueue::take_grant)).
///
/// It is the bookkeeping only — no lock inside, for one thread (keep it in a `RefCell`) or
/// under the owner's lock — and the owner keeps the count of its capacity. The protocol:
///
/// - **wait**: if capacity is free *and the queue is empty*, take it; else
///   [`push`](WaitQueue::push) (or, polled again, [`take_grant`](WaitQueue::take_grant), then
///   [`set_waker`](WaitQueue::set_waker));
/// - **release**: [`grant_front`](WaitQueue::grant_front) and wake the waker it returns
///   (the capacity stays taken, now the waiter's); only if nobody waits, return the capacity
///   to the pool;
/// - **drop of a waiter** (cancel safety): [`cancel`](WaitQueue::cancel), and if it says
///   [`Cancelled::Granted`], release that capacity again, as above — so it goes to the next
///   waiter and no release ever wakes a dead waiter while a live one sleeps.
///
/// With [`with_max_waiters`](WaitQueue::with_max_waiters), `push` refuses waiters past the
/// bound ([`QueueFull`]): every queue has a bound, and past it a request should fail at once
/// rather than wait out its deadline. Memory: one `(u64, Waker)` per queued waiter (24 bytes
/// on 64-bit targets), plus 8 bytes per granted one.
///
/// ```
/// use sheave_core::sync::{Cancelled, WaitQueue};
/// use std::task::Waker;
///
/// let mut q = WaitQueue::with_max_waiters(2);
/// let (a, b) = (q.push(Waker::noop()).unwrap(), q.push(Waker::noop()).unwrap());
/// assert!(q.push(Waker::noop()).is_err()); // full: fail, don't wait
/// q.grant_front().unwrap().wake(); // a release: `a` now owns the capacity
/// assert_eq!(q.cancel(a), Cancelled::Granted); // ... but gave up: release it again
/// q.grant_front().unwrap().wake(); // `b` gets it
/// assert!(q.take_grant(b));
/// assert!(q.is_empty());
/// ```
pub struct WaitQueue {
    next_id: u64,
    /// Waiting, in arrival order. Ids only grow, so the queue is sorted by id.
    queue: VecDeque<(u64, Waker)>,
    /// Waiters handed a unit of capacity they have not taken yet.
    granted: Vec<u64>,
    max_waiters: usize,
}

impl Default for WaitQueue {
    fn default() -> Self {
        WaitQueue::new()
    }
}

impl fmt::Debug for WaitQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitQueue")
            .field("waiting", &self.queue.len())
            .field("granted", &self.granted.len())
            .field("max_waiters", &self.max_waiters())
            .finish()
    }
}

impl WaitQueue {
    /// An empty queue with no bound on its waiters.
    pub fn new() -> WaitQueue {
        WaitQueue::with_max_waiters(usize::MAX)
    }

    /// An empty queue that holds at most `max` waiters (at least 0: with 0, every `push`
    /// fails, for "never wait").
    pub fn with_max_waiters(max: usize) -> WaitQueue {
        WaitQueue {
            next_id: 0,
            queue: VecDeque::new(),
            granted: Vec::new(),
            max_waiters: max,
        }
    }

    /// The bound on waiters, if any.
    pub fn max_waiters(&self) -> Option<usize> {
        (self.max_waiters != usize::MAX).then_some(self.max_waiters)
    }

    /// Whether nobody is queued (granted waiters that have not taken their grant are not
    /// queued).
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// How many are queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether a [`push`](WaitQueue::push) would be refused.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.max_waiters
    }

    /// Queues a new waiter at the back; refused when the queue [is full](WaitQueue::is_full).
    pub fn push(&mut self, waker: &Waker) -> Result<WaiterId, QueueFull> {
        if self.is_full() {
            return Err(QueueFull {
                max_waiters: self.max_waiters,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back((id, waker.clone()));
        Ok(WaiterId(id))
    }

    fn position(&self, id: WaiterId) -> Option<usize> {
        self.queue.binary_search_by_key(&id.0, |(i, _)| *i).ok()
    }

    /// Updates the waker of a queued waiter (a no-op for one no longer queued).
    pub fn set_waker(&mut self, id: WaiterId, waker: &Waker) {
        if let Some(at) = self.position(id) {
            let stored = &mut self.queue[at].1;
            if !stored.will_wake(waker) {
                stored.clone_from(waker);
            }
        }
    }

    /// Puts waiter `id` back in line **at its old place** (by arrival order) with `waker`, or
    /// updates its waker if it is still queued. For a waiter that was woken by
    /// [`grant_front`](WaitQueue::grant_front), took its grant, found the capacity gone (a
    /// newcomer took it first, say) and waits again: it keeps its turn ahead of everyone who
    /// came after it.
    ///
    /// ```
    /// use sheave_core::sync::WaitQueue;
    /// use std::task::Waker;
    ///
    /// let mut q = WaitQueue::new();
    /// let (a, b) = (q.push(Waker::noop()).unwrap(), q.push(Waker::noop()).unwrap());
    /// q.grant_front();
    /// assert!(q.take_grant(a)); // woken, but found nothing: back in line
    /// q.requeue(a, Waker::noop());
    /// assert_eq!(q.front(), Some(a)); // still ahead of `b`
    /// assert_eq!(q.len(), 2);
    /// # let _ = b;
    /// ```
    pub fn requeue(&mut self, id: WaiterId, waker: &Waker) {
        match self.queue.binary_search_by_key(&id.0, |(i, _)| *i) {
            Ok(at) => {
                let stored = &mut self.queue[at].1;
                if !stored.will_wake(waker) {
                    stored.clone_from(waker);
                }
            }
            Err(at) => self.queue.insert(at, (id.0, waker.clone())),
        }
    }

    /// The first waiter.
    pub fn front(&self) -> Option<WaiterId> {
        self.queue.front().map(|(id, _)| WaiterId(*id))
    }

    /// A clone of the first waiter's waker.
    pub fn front_waker(&self) -> Option<Waker> {
        self.queue.front().map(|(_, w)| w.clone())
    }

    /// Hands one unit of capacity to the first waiter and takes it out of the queue; returns
    /// its waker (wake it once no borrow of the queue is held), or `None` if nobody waits.
    pub fn grant_front(&mut self) -> Option<Waker> {
        let (id, waker) = self.queue.pop_front()?;
        self.granted.push(id);
        Some(waker)
    }

    /// True (once) if waiter `id` was handed capacity: it owns it now.
    pub fn take_grant(&mut self, id: WaiterId) -> bool {
        match self.granted.iter().position(|g| *g == id.0) {
            Some(at) => {
                self.granted.swap_remove(at);
                true
            }
            None => false,
        }
    }

    /// Forgets waiter `id` (its future was dropped); says what it held, which its owner must
    /// pass on: see [`Cancelled`].
    pub fn cancel(&mut self, id: WaiterId) -> Cancelled {
        if self.take_grant(id) {
            return Cancelled::Granted;
        }
        match self.position(id) {
            Some(0) => {
                self.queue.pop_front();
                Cancelled::WasFront
            }
            Some(at) => {
                self.queue.remove(at);
                Cancelled::Queued
            }
            None => Cancelled::Queued,
        }
    }

    /// Takes every queued waiter out without granting anything, for when the capacity is
    /// gone for good (a closed connection): wake them all, and each finds out why when
    /// polled. Their later [`cancel`](WaitQueue::cancel)s report [`Cancelled::Queued`].
    pub fn take_all(&mut self) -> Vec<Waker> {
        self.queue.drain(..).map(|(_, w)| w).collect()
    }
}

#[cfg(test)]
mod tests {
    //! The cancel-safety tests of every waiter queue in the kit: the limits, the client
    //! dispatcher's capacity and the balancer build on this protocol.

    use super::*;
    use std::cell::{Cell, RefCell};
    use std::future::poll_fn;
    use std::pin::pin;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake};

    #[test]
    fn grants_go_in_arrival_order_and_cancel_reports_what_was_held() {
        let mut q = WaitQueue::new();
        let w = Waker::noop();
        let (a, b, c) = (q.push(w).unwrap(), q.push(w).unwrap(), q.push(w).unwrap());
        assert_eq!(q.front(), Some(a));
        assert_eq!(q.cancel(b), Cancelled::Queued);
        assert!(q.grant_front().is_some());
        assert_eq!(q.cancel(a), Cancelled::Granted);
        assert_eq!(q.front(), Some(c));
        assert_eq!(q.cancel(c), Cancelled::WasFront);
        assert!(q.is_empty());
        assert!(q.grant_front().is_none());
        assert_eq!(
            q.cancel(c),
            Cancelled::Queued,
            "a second cancel holds nothing"
        );
    }

    #[test]
    fn a_bounded_queue_refuses_past_its_bound_and_takes_again_once_one_leaves() {
        let mut q = WaitQueue::with_max_waiters(2);
        assert_eq!(q.max_waiters(), Some(2));
        let a = q.push(Waker::noop()).unwrap();
        q.push(Waker::noop()).unwrap();
        assert!(q.is_full());
        assert_eq!(q.push(Waker::noop()), Err(QueueFull { max_waiters: 2 }));
        q.cancel(a);
        assert!(q.push(Waker::noop()).is_ok());
        assert_eq!(WaitQueue::new().max_waiters(), None);
        assert!(WaitQueue::with_max_waiters(0).push(Waker::noop()).is_err());
    }

    /// A one-thread semaphore on the queue, exactly as the protocol in the docs says.
    struct Sem {
        free: Cell<usize>,
        q: RefCell<WaitQueue>,
    }

    impl Sem {
        fn new(n: usize) -> Rc<Sem> {
            Rc::new(Sem {
                free: Cell::new(n),
                q: RefCell::new(WaitQueue::new()),
            })
        }

        fn release(&self) {
            let next = self.q.borrow_mut().grant_front();
            match next {
                Some(w) => w.wake(),
                None => self.free.set(self.free.get() + 1),
            }
        }

        async fn acquire(self: &Rc<Sem>) {
            struct Guard<'a>(&'a Sem, Option<WaiterId>);
            impl Drop for Guard<'_> {
                fn drop(&mut self) {
                    if let Some(id) = self.1.take()
                        && self.0.q.borrow_mut().cancel(id) == Cancelled::Granted
                    {
                        self.0.release(); // pass it on
                    }
                }
            }
            let mut guard = Guard(self, None);
            poll_fn(|cx| {
                let mut q = self.q.borrow_mut();
                match guard.1 {
                    Some(id) if q.take_grant(id) => {
                        guard.1 = None;
                        Poll::Ready(())
                    }
                    Some(id) => {
                        q.set_waker(id, cx.waker());
                        Poll::Pending
                    }
                    None if q.is_empty() && self.free.get() > 0 => {
                        self.free.set(self.free.get() - 1);
                        Poll::Ready(())
                    }
                    None => {
                        guard.1 = Some(q.push(cx.waker()).expect("unbounded"));
                        Poll::Pending
                    }
                }
            })
            .await
        }
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once(f: std::pin::Pin<&mut impl Future<Output = ()>>, w: &Waker) -> bool {
        f.poll(&mut Context::from_waker(w)).is_ready()
    }

    #[test]
    fn a_waiter_dropped_after_its_grant_passes_the_capacity_to_the_next() {
        let sem = Sem::new(1);
        let counts: Vec<Arc<Count>> = (0..3).map(|_| Arc::new(Count(0.into()))).collect();
        let wakers: Vec<Waker> = counts.iter().map(|c| Waker::from(c.clone())).collect();
        let mut holder = Box::pin(sem.acquire());
        assert!(poll_once(holder.as_mut(), &wakers[0]));
        let mut a = Box::pin(sem.acquire());
        let mut b = Box::pin(sem.acquire());
        assert!(!poll_once(a.as_mut(), &wakers[1]));
        assert!(!poll_once(b.as_mut(), &wakers[2]));
        sem.release(); // the holder is done: handed to `a`, which is woken...
        assert_eq!(counts[1].0.load(Ordering::SeqCst), 1);
        drop(a); // ... but goes away without taking it: `b` must get it
        assert_eq!(counts[2].0.load(Ordering::SeqCst), 1);
        assert!(poll_once(b.as_mut(), &wakers[2]));
        assert_eq!(sem.free.get(), 0, "nothing leaked, nothing doubled");
    }

    #[test]
    fn a_newcomer_never_overtakes_a_woken_waiter() {
        let sem = Sem::new(1);
        let w = Waker::noop();
        let mut holder = Box::pin(sem.acquire());
        assert!(poll_once(holder.as_mut(), w));
        let mut first = Box::pin(sem.acquire());
        assert!(!poll_once(first.as_mut(), w));
        sem.release();
        let mut newcomer = Box::pin(sem.acquire());
        assert!(!poll_once(newcomer.as_mut(), w), "the capacity is first's");
        assert!(poll_once(first.as_mut(), w));
    }

    #[test]
    fn a_queued_waiter_dropped_leaves_nothing_and_a_release_reaches_the_live_one() {
        let sem = Sem::new(1);
        let w = Waker::noop();
        let mut holder = Box::pin(sem.acquire());
        assert!(poll_once(holder.as_mut(), w));
        let mut live = Box::pin(sem.acquire());
        {
            let mut gone = pin!(sem.acquire());
            assert!(!poll_once(gone.as_mut(), w));
            assert!(!poll_once(live.as_mut(), w));
            assert_eq!(sem.q.borrow().len(), 2);
        }
        assert_eq!(sem.q.borrow().len(), 1);
        sem.release();
        assert!(poll_once(live.as_mut(), w));
    }

    #[test]
    fn take_all_wakes_everyone_and_their_cancels_hold_nothing() {
        let mut q = WaitQueue::new();
        let ids: Vec<WaiterId> = (0..3).map(|_| q.push(Waker::noop()).unwrap()).collect();
        assert_eq!(q.take_all().len(), 3);
        assert!(q.is_empty());
        for id in ids {
            assert_eq!(q.cancel(id), Cancelled::Queued);
        }
    }
}
