//! The state shared by a client connection's handles and its connection task: the callers'
//! slots, the capacity, and the queue of `ready()` callers.

use sheave_core::sync::WaitQueue;
use sheave_core::time;
use sheave_service::Error;
use std::collections::VecDeque;
use std::task::Waker;
use std::time::{Duration, Instant};

/// When abandoned calls close a connection; see
/// [`ClientConfig::max_abandoned`](super::ClientConfig::max_abandoned).
pub(super) struct AbandonLimits {
    pub(super) max: usize,
    pub(super) age: Duration,
}

/// A waiting caller's place: filled by the connection task, or failed when it dies.
pub(super) enum CallSlot<R> {
    Waiting(Option<Waker>),
    Done(Result<R, Error>),
    /// The caller went away (at this instant); the response is discarded when it arrives.
    Abandoned(Instant),
}

/// The state shared by the client handles and the connection task.
pub(super) struct State<R> {
    pub(super) slots: Vec<Option<CallSlot<R>>>,
    pub(super) free: Vec<usize>,
    /// Pipeline: slots in the order their requests were written.
    pub(super) order: VecDeque<usize>,
    /// Permits handed out plus requests awaiting their response.
    pub(super) in_flight: usize,
    /// Calls abandoned by their callers and not yet answered.
    pub(super) abandoned: usize,
    /// Abandoned calls in the order they were given up, with when: the front entry that is
    /// still abandoned is the oldest (entries whose call was answered are dropped as they
    /// reach the front).
    pub(super) abandoned_since: VecDeque<(usize, Instant)>,
    pub(super) closed: Option<Error>,
    pub(super) conn_task: Option<Waker>,
    /// The `ready()` callers waiting for capacity, served in arrival order with hand-off: a
    /// release hands its capacity to **one** of them (waking all of them made every response
    /// cost O(waiters) polls: with `n` callers waiting, dispatch cost grew as `n²`), and a
    /// waiter that goes away passes what it was handed on.
    pub(super) ready_waiters: WaitQueue,
}

impl<R> State<R> {
    pub(super) fn new() -> Self {
        State {
            slots: Vec::new(),
            free: Vec::new(),
            order: VecDeque::new(),
            in_flight: 0,
            abandoned: 0,
            abandoned_since: VecDeque::new(),
            closed: None,
            conn_task: None,
            ready_waiters: WaitQueue::new(),
        }
    }

    pub(super) fn insert(&mut self, slot: CallSlot<R>) -> usize {
        match self.free.pop() {
            Some(key) => {
                self.slots[key] = Some(slot);
                key
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    pub(super) fn remove(&mut self, key: usize) {
        self.slots[key] = None;
        self.free.push(key);
    }

    /// Gives one unit of capacity back: to the first waiter if any (the count stays, now
    /// theirs), else to the pool.
    pub(super) fn release(&mut self) {
        match self.ready_waiters.grant_front() {
            Some(waiter) => waiter.wake(),
            None => self.in_flight -= 1,
        }
    }

    pub(super) fn wake_conn(&mut self) {
        if let Some(w) = &self.conn_task {
            w.wake_by_ref();
        }
    }

    /// Fills the slot `key` with a response; `false` if no request is waiting under `key`.
    pub(super) fn fill(&mut self, key: usize, resp: Result<R, Error>) -> bool {
        match self.slots.get_mut(key).and_then(Option::as_mut) {
            Some(slot @ CallSlot::Waiting(_)) => {
                if let CallSlot::Waiting(Some(w)) = std::mem::replace(slot, CallSlot::Done(resp)) {
                    w.wake();
                }
            }
            Some(CallSlot::Abandoned(_)) => {
                self.remove(key);
                self.abandoned -= 1;
                if self.abandoned == 0 {
                    self.abandoned_since.clear();
                }
            }
            _ => return false,
        }
        self.release();
        true
    }

    /// A caller gave up on the call under `key`: past the bounds, the connection is closed.
    pub(super) fn abandon(&mut self, key: usize, limits: &AbandonLimits) {
        let now = time::now_cached();
        self.slots[key] = Some(CallSlot::Abandoned(now));
        self.abandoned += 1;
        self.abandoned_since.push_back((key, now));
        if self.abandoned_since.len() > 2 * self.abandoned + 16 {
            // Answered ones pile up behind a long-lived front entry: compact.
            let slots = &self.slots;
            self.abandoned_since
                .retain(|&(k, t)| matches!(slots[k], Some(CallSlot::Abandoned(at)) if at == t));
        }
        let oldest = self.oldest_abandoned().unwrap_or(now);
        if self.abandoned > limits.max {
            self.recycle(format!(
                "{} calls abandoned while the peer owed their answers",
                self.abandoned
            ));
        } else if now.saturating_duration_since(oldest) > limits.age {
            self.recycle("an abandoned call went unanswered too long".to_string());
        }
    }

    /// Checks the age bound (from `ready`), so a hung peer is found even when no call is
    /// abandoned any more.
    pub(super) fn check_abandoned_age(&mut self, limits: &AbandonLimits) {
        if let Some(oldest) = self.oldest_abandoned()
            && time::now_cached().saturating_duration_since(oldest) > limits.age
        {
            self.recycle("an abandoned call went unanswered too long".to_string());
        }
    }

    /// When the oldest call still abandoned was given up.
    fn oldest_abandoned(&mut self) -> Option<Instant> {
        while let Some(&(key, at)) = self.abandoned_since.front() {
            if matches!(self.slots[key], Some(CallSlot::Abandoned(t)) if t == at) {
                return Some(at);
            }
            self.abandoned_since.pop_front(); // answered meanwhile
        }
        None
    }

    /// Closes the connection because abandoned calls pinned it: replies can no longer be
    /// matched otherwise. Every waiting caller gets a retryable `Closed` error.
    fn recycle(&mut self, why: String) {
        log::debug!("client connection recycled: {why}");
        self.fail_all(Error::closed().with_context(why).retryable());
        self.wake_conn();
    }

    /// The connection is gone: every waiting caller gets `err`, and so will every later one.
    pub(super) fn fail_all(&mut self, err: Error) {
        self.closed = Some(err.clone());
        for key in 0..self.slots.len() {
            if matches!(
                self.slots[key],
                Some(CallSlot::Waiting(_) | CallSlot::Abandoned(_))
            ) {
                self.fill(key, Err(err.clone()));
            }
        }
        self.order.clear();
        // Every waiter has its answer now: the error.
        for waiter in self.ready_waiters.take_all() {
            waiter.wake();
        }
    }
}
