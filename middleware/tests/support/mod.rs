//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use sheave_core::Runtime;

/// A runtime with a paused clock: virtual time jumps to the next timer when all is idle.
pub fn paused() -> Runtime {
    Runtime::builder().paused_clock().build().unwrap()
}

/// Polls `fut` once with a no-op waker.
pub fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// Polls `fut` once with the task's own waker (inside a runtime).
pub async fn poll_here<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut fut = Some(fut);
    std::future::poll_fn(|cx| Poll::Ready(fut.take().unwrap().poll(cx))).await
}

/// Milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Returns `Pending` `n` times (waking itself each time), then `Ready`: a fairness yield.
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
