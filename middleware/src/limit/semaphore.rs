//! The local (single-thread) semaphore behind the concurrency limits: FIFO waiters with
//! hand-off (see `waiters.rs`), and a capacity that can be resized while slots are out — the
//! adaptive limit moves it up and down.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::waiters::{Cancelled, QueueFull, WaitQueue, WaiterId};

/// Invariant: `available > 0` only while nobody waits (a release hands its slot to the first
/// waiter instead of returning it to the pool).
pub(crate) struct Semaphore {
    max: Cell<usize>,
    available: Cell<usize>,
    /// Slots still out that a shrink already took away: their release retires them.
    debt: Cell<usize>,
    waiters: RefCell<WaitQueue>,
}

impl Semaphore {
    pub(crate) fn new(max: usize) -> Self {
        Semaphore {
            max: Cell::new(max),
            available: Cell::new(max),
            debt: Cell::new(0),
            waiters: RefCell::new(WaitQueue::new()),
        }
    }

    /// A semaphore whose queue holds at most `max_waiters`: past them,
    /// [`acquire_bounded`](Semaphore::acquire_bounded) fails at once.
    #[allow(dead_code)] // for the concurrency limit's bound on waiters
    pub(crate) fn with_max_waiters(max: usize, max_waiters: usize) -> Self {
        let sem = Semaphore::new(max);
        *sem.waiters.borrow_mut() = WaitQueue::with_max_waiters(max_waiters);
        sem
    }

    pub(crate) fn max(&self) -> usize {
        self.max.get()
    }

    pub(crate) fn available(&self) -> usize {
        self.available.get()
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Slots held now.
    pub(crate) fn in_use(&self) -> usize {
        (self.max.get() + self.debt.get()).saturating_sub(self.available.get())
    }

    fn try_acquire(&self) -> bool {
        let n = self.available.get();
        if n == 0 {
            return false;
        }
        self.available.set(n - 1);
        true
    }

    fn release(&self) {
        let debt = self.debt.get();
        if debt > 0 {
            // The capacity shrank while this slot was out: retire it.
            self.debt.set(debt - 1);
            return;
        }
        let n = self.available.get();
        if n > 0 {
            // Nobody waits (the invariant): straight back to the pool.
            self.available.set(n + 1);
            return;
        }
        let waker = self.waiters.borrow_mut().grant_front();
        match waker {
            Some(waker) => waker.wake(),
            None => self.available.set(1),
        }
    }

    /// Changes the capacity. Growing hands the new slots to waiters first; shrinking takes
    /// free slots away at once and retires held ones as they are released.
    pub(crate) fn resize(&self, max: usize) {
        let old = self.max.get();
        self.max.set(max);
        if max > old {
            for _ in old..max {
                self.release();
            }
        } else {
            let cut = old - max;
            let free = self.available.get().min(cut);
            self.available.set(self.available.get() - free);
            self.debt.set(self.debt.get() + cut - free);
        }
    }

    /// A slot, if one is free and nobody waits.
    pub(crate) fn try_slot(this: &Rc<Semaphore>) -> Option<Slot> {
        this.try_acquire().then(|| Slot {
            sem: Rc::clone(this),
        })
    }

    /// Waits (FIFO) for a slot. For a semaphore without a bound on waiters (from
    /// [`new`](Semaphore::new)); see [`acquire_bounded`](Semaphore::acquire_bounded).
    pub(crate) async fn acquire(this: &Rc<Semaphore>) -> Slot {
        // Written out, not through `acquire_bounded`: a nested future made this one large
        // enough that moving it took a `memcpy` call (8 instructions per request).
        if !this.try_acquire() {
            let mut waiter = Waiter {
                sem: this,
                id: None,
            };
            poll_fn(|cx| waiter.poll(cx))
                .await
                .expect("a semaphore without a bound on waiters queues every waiter");
        }
        Slot {
            sem: Rc::clone(this),
        }
    }

    /// Waits (FIFO) for a slot; fails at once when the queue is full.
    #[allow(dead_code)] // for the concurrency limit's bound on waiters
    pub(crate) async fn acquire_bounded(this: &Rc<Semaphore>) -> Result<Slot, QueueFull> {
        if !this.try_acquire() {
            let mut waiter = Waiter {
                sem: this,
                id: None,
            };
            poll_fn(|cx| waiter.poll(cx)).await?;
        }
        Ok(Slot {
            sem: Rc::clone(this),
        })
    }
}

/// One slot of a concurrency limit: held by its permit, then by the call; released when
/// dropped.
pub struct Slot {
    sem: Rc<Semaphore>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.sem.release();
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot")
    }
}

/// A queued `ready()`; removes its entry, or passes on a slot it was handed, when dropped.
struct Waiter<'a> {
    sem: &'a Semaphore,
    id: Option<WaiterId>,
}

impl Waiter<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), QueueFull>> {
        let mut waiters = self.sem.waiters.borrow_mut();
        match self.id {
            None => {
                if self.sem.try_acquire() {
                    return Poll::Ready(Ok(()));
                }
                self.id = Some(waiters.push(cx.waker())?);
                Poll::Pending
            }
            Some(id) if waiters.take_grant(id) => {
                self.id = None;
                Poll::Ready(Ok(()))
            }
            Some(id) => {
                waiters.set_waker(id, cx.waker());
                Poll::Pending
            }
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let held = self.sem.waiters.borrow_mut().cancel(id);
            if held == Cancelled::Granted {
                self.sem.release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_its_bound_on_waiters_acquire_bounded_fails_at_once() {
        use std::pin::pin;
        let sem = Rc::new(Semaphore::with_max_waiters(1, 1));
        let held = Semaphore::try_slot(&sem).expect("one free slot");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut queued = pin!(Semaphore::acquire_bounded(&sem));
        assert!(queued.as_mut().poll(&mut cx).is_pending());
        let mut refused = pin!(Semaphore::acquire_bounded(&sem));
        assert_eq!(
            refused.as_mut().poll(&mut cx).map(|r| r.err()),
            Poll::Ready(Some(QueueFull { max_waiters: 1 }))
        );
        drop(held); // handed to the queued waiter
        assert!(matches!(queued.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
    }

    #[test]
    fn shrinking_retires_held_slots_and_growing_hands_slots_out() {
        let sem = Rc::new(Semaphore::new(3));
        let a = Semaphore::try_slot(&sem).unwrap();
        let b = Semaphore::try_slot(&sem).unwrap();
        sem.resize(1); // one free slot goes at once; one held slot is owed
        assert_eq!((sem.available(), sem.in_use()), (0, 2));
        drop(a); // retired, not returned
        assert_eq!((sem.available(), sem.in_use()), (0, 1));
        drop(b);
        assert_eq!((sem.available(), sem.in_use()), (1, 0));
        sem.resize(4);
        assert_eq!(sem.available(), 4);
    }
}
