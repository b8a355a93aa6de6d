//! [`Notify`]: wakes every task waiting for "something changed", from any thread.

use super::lock;
use slab::Slab;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Wakes every waiting task at once: the "wait until something changes" primitive.
///
/// - [`notified`](Notify::notified) returns a future that completes at the first
///   [`notify_waiters`](Notify::notify_waiters) **after the future was created** — not after
///   it was first polled. So the race-free way to wait for a condition is: create the future,
///   check the condition, and await the future only if the condition does not hold yet.
/// - [`notify_waiters`](Notify::notify_waiters) completes every such future and wakes every
///   task polling one. A notification with no one waiting is not stored (use a flag beside
///   the `Notify` for "it happened", as in the module example).
///
/// `Send + Sync`, for flags shared across threads; on one thread it costs an uncontended lock
/// when a waiter registers or leaves. Polling a registered waiter again with the same waker
/// takes no lock. Cancel-safe: a dropped [`Notified`] removes its waker, so the set never
/// outgrows the tasks actually waiting.
///
/// ```
/// use sheave_core::sync::Notify;
/// use std::task::{Context, Waker};
///
/// let notify = Notify::new();
/// let mut a = Box::pin(notify.notified());
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(a.as_mut().poll(&mut cx).is_pending());
/// assert_eq!(notify.waiters(), 1);
/// let b = notify.notified(); // created before the notification: completes too
/// notify.notify_waiters();
/// assert!(a.as_mut().poll(&mut cx).is_ready());
/// assert!(Box::pin(b).as_mut().poll(&mut cx).is_ready());
/// let c = notify.notified(); // created after: waits for the next one
/// assert!(Box::pin(c).as_mut().poll(&mut cx).is_pending());
/// ```
#[derive(Default)]
pub struct Notify {
    /// Bumped by every `notify_waiters`, before the waiters are woken.
    generation: AtomicU64,
    waiters: Mutex<Slab<Waker>>,
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notify")
            .field("waiters", &self.waiters())
            .finish()
    }
}

impl Notify {
    /// A `Notify` with no one waiting.
    pub fn new() -> Notify {
        Notify::default()
    }

    /// A future that completes at the next [`notify_waiters`](Notify::notify_waiters) after
    /// this call.
    #[inline]
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            waiting: Waiting::new(self),
        }
    }

    /// Like [`notified`](Notify::notified), owning a reference count of the `Notify`.
    pub fn notified_owned(self: &Arc<Self>) -> OwnedNotified {
        OwnedNotified {
            notify: self.clone(),
            waiting: Waiting::new(self),
        }
    }

    /// Completes every [`Notified`] created before this call, and wakes the tasks polling
    /// them. The wakers are called after the lock is released.
    pub fn notify_waiters(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let woken: Vec<Waker> = lock(&self.waiters).drain().collect();
        woken.into_iter().for_each(Waker::wake);
    }

    /// How many tasks are registered as waiting (polled and not yet woken or dropped).
    pub fn waiters(&self) -> usize {
        lock(&self.waiters).len()
    }
}

/// One waiter's registration: the generation it waits past, and its waker's key in the set.
/// The mechanics behind [`Notified`] and [`OwnedNotified`] (and the runtime's shutdown signal).
#[derive(Debug)]
pub(crate) struct Waiting {
    generation: u64,
    /// The registered waker's key in the set, while registered.
    key: Option<usize>,
    /// A clone of the registered waker: a poll with the same one needs no lock.
    waker: Option<Waker>,
}

impl Waiting {
    /// Waits for the first notification of `notify` after this call.
    pub(crate) fn new(notify: &Notify) -> Waiting {
        Waiting {
            generation: notify.generation.load(Ordering::SeqCst),
            key: None,
            waker: None,
        }
    }

    #[inline]
    pub(crate) fn is_notified(&self, notify: &Notify) -> bool {
        notify.generation.load(Ordering::SeqCst) != self.generation
    }

    /// The fast path (inlined: a connection polls its drain signal on every wake): notified,
    /// or registered already with this waker.
    #[inline]
    pub(crate) fn poll(&mut self, notify: &Notify, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_notified(notify) {
            self.key = None; // the notification drained the set: the key is nobody's now
            return Poll::Ready(());
        }
        if self.key.is_some() && self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // Registered with this waker already: a notification will wake it.
            return Poll::Pending;
        }
        self.register(notify, cx)
    }

    /// The slow path: (re-)registers the waker under the lock.
    #[cold]
    #[inline(never)]
    fn register(&mut self, notify: &Notify, cx: &mut Context<'_>) -> Poll<()> {
        let mut waiters = lock(&notify.waiters);
        // Re-check under the lock: `notify_waiters` bumps the generation before draining.
        if self.is_notified(notify) {
            self.key = None;
            return Poll::Ready(());
        }
        match self.key {
            Some(key) => waiters[key].clone_from(cx.waker()),
            None => self.key = Some(waiters.insert(cx.waker().clone())),
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Leaves the set (the waiter is dropped).
    pub(crate) fn release(&mut self, notify: &Notify) {
        if let Some(key) = self.key.take() {
            let mut waiters = lock(&notify.waiters);
            // A notification since then drained the set (the key may be someone else's now).
            if !self.is_notified(notify) {
                waiters.try_remove(key);
            }
        }
    }
}

/// Completes at the first [`Notify::notify_waiters`] after it was created; from
/// [`Notify::notified`]. Cancel-safe.
#[must_use = "futures do nothing unless polled"]
pub struct Notified<'a> {
    notify: &'a Notify,
    waiting: Waiting,
}

impl fmt::Debug for Notified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notified")
            .field("done", &self.is_notified())
            .finish()
    }
}

impl Notified<'_> {
    /// Whether a notification came since this future was created.
    pub fn is_notified(&self) -> bool {
        self.waiting.is_notified(self.notify)
    }
}

impl Future for Notified<'_> {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.waiting.poll(this.notify, cx)
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        self.waiting.release(self.notify);
    }
}

/// [`Notified`] holding its [`Notify`] by `Arc`, for a future that must own what it waits
/// on (to be spawned, or stored in a struct); from [`Notify::notified_owned`].
#[must_use = "futures do nothing unless polled"]
pub struct OwnedNotified {
    notify: Arc<Notify>,
    waiting: Waiting,
}

impl fmt::Debug for OwnedNotified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedNotified")
            .field("done", &self.is_notified())
            .finish()
    }
}

impl OwnedNotified {
    /// Whether a notification came since this future was created.
    pub fn is_notified(&self) -> bool {
        self.waiting.is_notified(&self.notify)
    }
}

impl Future for OwnedNotified {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.waiting.poll(&this.notify, cx)
    }
}

impl Drop for OwnedNotified {
    fn drop(&mut self) {
        self.waiting.release(&self.notify);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(0.into()));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn a_dropped_waiter_leaves_no_waker_and_cannot_remove_a_newer_ones_entry() {
        let notify = Notify::new();
        let (_, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            let mut n = Box::pin(notify.notified());
            assert!(n.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(notify.waiters(), 0);
        // Notified, then dropped without being polled again: its old key was drained and
        // now belongs to a newer waiter, which must stay registered.
        let mut old = Box::pin(notify.notified());
        assert!(old.as_mut().poll(&mut cx).is_pending());
        notify.notify_waiters();
        let mut new = Box::pin(notify.notified());
        assert!(new.as_mut().poll(&mut cx).is_pending());
        drop(old);
        assert_eq!(notify.waiters(), 1);
        notify.notify_waiters();
        assert!(new.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn every_waiter_is_woken_once_and_a_new_waker_replaces_the_old() {
        let notify = Notify::new();
        let (first, w1) = counter();
        let (second, w2) = counter();
        let mut a = Box::pin(notify.notified());
        let mut b = Box::pin(notify.notified());
        assert!(a.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        assert!(b.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        // `b` moves to another task: only that one is woken for it.
        assert!(b.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
        assert_eq!(notify.waiters(), 2);
        notify.notify_waiters();
        assert_eq!(first.0.load(Ordering::SeqCst), 1);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert!(a.as_mut().poll(&mut Context::from_waker(&w1)).is_ready());
        assert!(b.as_mut().poll(&mut Context::from_waker(&w2)).is_ready());
    }

    #[test]
    fn a_notification_from_another_thread_is_never_lost() {
        // The check-then-wait race: the flag is set and notified between the check and the
        // registration; the future, created before the check, still completes.
        for _ in 0..200 {
            let shared = Arc::new((std::sync::atomic::AtomicBool::new(false), Notify::new()));
            let theirs = shared.clone();
            let setter = std::thread::spawn(move || {
                theirs.0.store(true, Ordering::SeqCst);
                theirs.1.notify_waiters();
            });
            futures::executor::block_on(async {
                loop {
                    let changed = shared.1.notified();
                    if shared.0.load(Ordering::SeqCst) {
                        break;
                    }
                    changed.await;
                }
            });
            setter.join().unwrap();
        }
    }
}
