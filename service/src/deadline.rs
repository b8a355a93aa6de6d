//! Deadlines: the timeout primitive, carried by the task rather than by the request.
//!
//! [`with_deadline`] wraps a future; while that future is polled, [`current`] returns the
//! deadline — or the outer one, if an enclosing `with_deadline` set an earlier one: **the
//! earliest deadline wins** when layers nest. Middleware read it to bound waiting for a
//! permit, queueing and retries ([`remaining`], [`is_expired`]).
//!
//! # Why task-local-by-poll
//!
//! * Any request type works: no trait for requests to implement, no field to thread through.
//! * Any executor works: the value is a thread-local set around each poll of the wrapped
//!   future and restored after it (also when the poll panics), so it is correct wherever the
//!   future is polled, without runtime support.
//! * The cost is two thread-local accesses per poll of a [`WithDeadline`].
//! * A *spawned* task does not inherit the deadline: it is polled by the executor, outside
//!   the wrapper. Wrap the spawned future in `with_deadline(deadline, ..)` to pass it on.
//!
//! Deadlines are plain [`Instant`]s and this module never reads a clock: callers pass `now`
//! (from a real clock or a test clock).
//!
//! # Example
//!
//! ```
//! use sheave_service::deadline;
//! use std::time::{Duration, Instant};
//!
//! let now = Instant::now();
//! let soon = now + Duration::from_millis(10);
//! let later = now + Duration::from_secs(10);
//!
//! # futures::executor::block_on(async {
//! assert_eq!(deadline::current(), None);
//! deadline::with_deadline(soon, async {
//!     // A nested, later deadline does not extend the outer one.
//!     deadline::with_deadline(later, async {
//!         assert_eq!(deadline::current(), Some(soon));
//!         assert_eq!(deadline::remaining(now), Some(Duration::from_millis(10)));
//!     })
//!     .await;
//! })
//! .await;
//! assert_eq!(deadline::current(), None);
//! # });
//! ```

use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;

thread_local! {
    /// The deadline of the future being polled on this thread, if any.
    static CURRENT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The deadline of the task being polled, if any.
#[inline]
pub fn current() -> Option<Instant> {
    CURRENT.with(Cell::get)
}

/// Time left until the current deadline (zero once passed), or `None` without a deadline.
#[inline]
pub fn remaining(now: Instant) -> Option<Duration> {
    current().map(|deadline| deadline.saturating_duration_since(now))
}

/// True if there is a current deadline and `now` is at or past it.
#[inline]
pub fn is_expired(now: Instant) -> bool {
    current().is_some_and(|deadline| deadline <= now)
}

/// Runs `fut` under `deadline` (or under the current deadline, if earlier).
pub fn with_deadline<F: IntoFuture>(deadline: Instant, fut: F) -> WithDeadline<F::IntoFuture> {
    WithDeadline {
        fut: fut.into_future(),
        deadline,
    }
}

pin_project! {
    /// A future polled under a deadline; see [`with_deadline`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct WithDeadline<F> {
        #[pin]
        fut: F,
        deadline: Instant,
    }
}

impl<F> WithDeadline<F> {
    /// The deadline this wrapper installs (before taking the earlier of it and the outer one).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The wrapped future.
    pub fn get_ref(&self) -> &F {
        &self.fut
    }

    /// The wrapped future, pinned.
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Pin<&mut F> {
        self.project().fut
    }

    /// The wrapped future, consuming the wrapper.
    pub fn into_inner(self) -> F {
        self.fut
    }
}

/// Restores the previous deadline when dropped, so a panicking poll leaves no trace.
struct Restore(Option<Instant>);

impl Drop for Restore {
    #[inline]
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

impl<F: Future> Future for WithDeadline<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let deadline = *this.deadline;
        let _restore = CURRENT.with(|c| {
            let outer = c.get();
            c.set(Some(outer.map_or(deadline, |outer| outer.min(deadline))));
            Restore(outer)
        });
        this.fut.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    #[test]
    fn a_panicking_poll_restores_the_outer_deadline() {
        let d = Instant::now();
        let res = catch_unwind(AssertUnwindSafe(|| {
            futures::executor::block_on(with_deadline(d, async { panic!("boom") }))
        }));
        assert!(res.is_err());
        assert_eq!(current(), None);
    }

    #[test]
    fn expiry_is_measured_against_the_given_now() {
        let d = Instant::now();
        futures::executor::block_on(with_deadline(d, async {
            assert!(is_expired(d));
            assert!(!is_expired(d - Duration::from_millis(1)));
            assert_eq!(remaining(d + Duration::from_secs(1)), Some(Duration::ZERO));
        }));
        assert!(!is_expired(d));
    }
}
