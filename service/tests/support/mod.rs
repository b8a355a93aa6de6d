//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use futures::task::{ArcWake, waker};

/// Compiles only if `T` is `Send`.
pub fn assert_send<T: Send>(_: &T) {}

/// Compiles only if `T` is `Sync`.
pub fn assert_sync<T: Sync>(_: &T) {}

/// A waker that records whether it was woken.
#[derive(Default)]
pub struct Flag(AtomicBool);

impl Flag {
    /// A fresh flag and its waker.
    pub fn new() -> (Arc<Flag>, Waker) {
        let flag = Arc::new(Flag::default());
        let waker = waker(Arc::clone(&flag));
        (flag, waker)
    }

    /// True if woken since the last call; clears the flag.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

impl ArcWake for Flag {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.store(true, Ordering::SeqCst);
    }
}

/// Polls `fut` once with `waker`.
#[track_caller]
pub fn poll_with<F: Future>(fut: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(waker))
}

/// Returns `Pending` `n` times (waking itself each time), then `Ready`: lets other
/// futures run in between, like a real I/O wait.
pub struct YieldNow(pub usize);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Polls `stream` for its next item once with `waker`.
#[track_caller]
pub fn poll_next_with<S: futures::Stream>(
    stream: Pin<&mut S>,
    waker: &Waker,
) -> Poll<Option<S::Item>> {
    stream.poll_next(&mut Context::from_waker(waker))
}
