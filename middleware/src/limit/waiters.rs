//! A FIFO queue of waiters with hand-off, shared by the limiters.
//!
//! Capacity released while someone waits is *handed* to the first waiter (it is not put back
//! in the pool), so a newcomer's `try_ready` can never overtake the queue, and a waiter that
//! was woken already owns what it was woken for.
//!
//! Cancel safety: a waiter that is dropped calls [`WaitQueue::cancel`]. If it was still
//! queued its entry goes with it; if it had been handed capacity it did not take, the caller
//! gives that capacity back (to the next waiter). Either way no release ever wakes a dead
//! waiter while a live one sleeps.

use std::collections::VecDeque;
use std::task::Waker;

/// What a cancelled waiter held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Canceled {
    /// It had been handed a unit of capacity: give it back.
    Granted,
    /// It was first in the queue (and no longer is).
    WasFront,
    /// It was queued behind others.
    Queued,
}

#[derive(Debug, Default)]
pub(crate) struct WaitQueue {
    next_id: u64,
    /// Waiting, in arrival order. Ids only grow, so the queue is sorted by id.
    queue: VecDeque<(u64, Waker)>,
    /// Waiters handed a unit of capacity they have not taken yet.
    granted: Vec<u64>,
}

impl WaitQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Queues a new waiter at the back; returns its id.
    pub(crate) fn push(&mut self, waker: &Waker) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back((id, waker.clone()));
        id
    }

    fn position(&self, id: u64) -> Option<usize> {
        self.queue.binary_search_by_key(&id, |(i, _)| *i).ok()
    }

    /// Updates the waker of a queued waiter.
    pub(crate) fn set_waker(&mut self, id: u64, waker: &Waker) {
        if let Some(at) = self.position(id) {
            self.queue[at].1.clone_from(waker);
        }
    }

    /// The id of the first waiter.
    pub(crate) fn front(&self) -> Option<u64> {
        self.queue.front().map(|(id, _)| *id)
    }

    /// A clone of the first waiter's waker.
    pub(crate) fn front_waker(&self) -> Option<Waker> {
        self.queue.front().map(|(_, w)| w.clone())
    }

    /// Hands one unit of capacity to the first waiter; returns its waker (wake it once no
    /// borrow is held), or `None` if nobody waits.
    pub(crate) fn grant_front(&mut self) -> Option<Waker> {
        let (id, waker) = self.queue.pop_front()?;
        self.granted.push(id);
        Some(waker)
    }

    /// True (once) if waiter `id` was handed capacity; it now owns it.
    pub(crate) fn take_grant(&mut self, id: u64) -> bool {
        match self.granted.iter().position(|g| *g == id) {
            Some(at) => {
                self.granted.swap_remove(at);
                true
            }
            None => false,
        }
    }

    /// Forgets waiter `id`; see [`Canceled`].
    pub(crate) fn cancel(&mut self, id: u64) -> Canceled {
        if self.take_grant(id) {
            return Canceled::Granted;
        }
        match self.position(id) {
            Some(0) => {
                self.queue.pop_front();
                Canceled::WasFront
            }
            Some(at) => {
                self.queue.remove(at);
                Canceled::Queued
            }
            None => Canceled::Queued,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_go_in_arrival_order_and_cancel_reports_what_was_held() {
        let mut q = WaitQueue::default();
        let w = Waker::noop();
        let (a, b, c) = (q.push(w), q.push(w), q.push(w));
        assert_eq!(q.front(), Some(a));
        assert_eq!(q.cancel(b), Canceled::Queued);
        assert!(q.grant_front().is_some());
        assert_eq!(q.cancel(a), Canceled::Granted);
        assert_eq!(q.front(), Some(c));
        assert_eq!(q.cancel(c), Canceled::WasFront);
        assert!(q.is_empty());
        assert!(q.grant_front().is_none());
    }
}
