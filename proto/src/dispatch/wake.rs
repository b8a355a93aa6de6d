//! Per-slot wakers that queue the index of the woken slot, so only woken futures are polled.

use sheave_core::sync::lock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Wake, Waker};

/// The queue of woken slot indices of one connection, and the connection task's waker.
#[derive(Debug, Default)]
pub(crate) struct WakeQueue {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    woken: Vec<usize>,
    task: Option<Waker>,
}

impl WakeQueue {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Remembers the connection task's waker (cloned only when it changed).
    pub(crate) fn register(&self, waker: &Waker) {
        let mut inner = self.lock();
        match &inner.task {
            Some(w) if w.will_wake(waker) => {}
            _ => inner.task = Some(waker.clone()),
        }
    }

    /// Moves the queued indices into `into` (which should be empty).
    pub(crate) fn take(&self, into: &mut Vec<usize>) {
        let mut inner = self.lock();
        if !inner.woken.is_empty() {
            std::mem::swap(&mut inner.woken, into);
        }
    }

    /// A waker for slot `index`.
    pub(crate) fn slot_waker(self: &Arc<Self>, index: usize) -> (Arc<SlotWaker>, Waker) {
        let slot = Arc::new(SlotWaker {
            index,
            queued: AtomicBool::new(false),
            queue: self.clone(),
        });
        (slot.clone(), Waker::from(slot))
    }
}

/// Wakes one slot: queues its index once (until the slot is polled again) and wakes the task.
#[derive(Debug)]
pub(crate) struct SlotWaker {
    index: usize,
    queued: AtomicBool,
    queue: Arc<WakeQueue>,
}

impl SlotWaker {
    /// Called just before the slot is polled: later wakes queue it again.
    pub(crate) fn clear(&self) {
        self.queued.store(false, Ordering::Release);
    }
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut inner = self.queue.lock();
        inner.woken.push(self.index);
        if let Some(task) = &inner.task {
            task.wake_by_ref();
        }
    }
}
