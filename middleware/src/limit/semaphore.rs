//! The local (single-thread) semaphore behind the concurrency limits: FIFO waiters with
//! hand-off (see `waiters.rs`), and a capacity that can be resized while slots are out — the
//! adaptive limit moves it up and down.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::waiters::{Cancelled, WaitQueue, WaiterId};
use sheave_service::{Error, ErrorKind};

/// Invariant: `available > 0` only while nobody waits (a release hands its slot to the first
/// waiter instead of returning it to the pool).
pub(crate) struct Semaphore {
    max: Cell<usize>,
    available: Cell<usize>,
    /// Slots still out that a shrink already took away: their release retires them.
    debt: Cell<usize>,
    waiters: RefCell<WaitQueue>,
    /// `acquire` fails at once with `Overloaded` when this many already wait.
    max_waiters: Cell<usize>,
}

/// The default bound on a limit's waiters (Envoy's default for pending requests).
pub(crate) const DEFAULT_MAX_WAITERS: usize = 1024;

impl Semaphore {
    pub(crate) fn new(max: usize) -> Self {
        Semaphore {
            max: Cell::new(max),
            available: Cell::new(max),
            debt: Cell::new(0),
            waiters: RefCell::new(WaitQueue::new()),
            max_waiters: Cell::new(DEFAULT_MAX_WAITERS),
        }
    }

    pub(crate) fn max_waiters(&self) -> usize {
        self.max_waiters.get()
    }

    pub(crate) fn set_max_waiters(&self, n: usize) {
        self.max_waiters.set(n);
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

    /// Waits (FIFO) for a slot; fails at once with a retryable `Overloaded` error when
    /// [`max_waiters`](Self::max_waiters) callers already wait (nothing was sent).
    pub(crate) async fn acquire(this: &Rc<Semaphore>) -> Result<Slot, Error> {
        if !this.try_acquire() {
            if this.waiting() >= this.max_waiters.get() {
                return Err(
                    Error::msg(ErrorKind::Overloaded, "the limit's wait queue is full").retryable(),
                );
            }
            let mut waiter = Waiter {
                sem: this,
                id: None,
            };
            poll_fn(|cx| waiter.poll(cx)).await;
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
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut waiters = self.sem.waiters.borrow_mut();
        match self.id {
            None => {
                if self.sem.try_acquire() {
                    return Poll::Ready(());
                }
                // The bound on waiters is checked before waiting (`acquire`); the queue itself
                // has none, so it takes every waiter.
                match waiters.push(cx.waker()) {
                    Ok(id) => self.id = Some(id),
                    Err(full) => unreachable!("{full}"),
                }
                Poll::Pending
            }
            Some(id) if waiters.take_grant(id) => {
                self.id = None;
                Poll::Ready(())
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
