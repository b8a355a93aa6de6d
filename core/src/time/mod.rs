//! Time: [`sleep`], [`sleep_until`], [`timeout`], [`interval`] and the clock they read.
//!
//! Every runtime thread has a hierarchical timer wheel (1 ms ticks, O(1) insert and cancel,
//! see `wheel.rs`) and a clock. A [`Sleep`] registers with the wheel of the thread that first
//! polls it, is cancelled when dropped, and can be re-armed with [`Sleep::reset`] — a connection
//! keeps one idle timer and moves it, instead of creating one per request.
//!
//! Timers never fire early: a deadline is rounded *up* to the next millisecond tick. The wheel
//! looks about 2.1 years ahead of *now* (however long the runtime has run); a [`Sleep`] further
//! away wakes at the horizon and re-arms itself, so it still completes at its deadline.
//!
//! With [`Builder::paused_clock`](crate::Builder::paused_clock), [`now`] reads a virtual clock
//! that jumps to the next timer whenever the thread has nothing else to do.
//!
//! ```
//! use sheave_core::{Runtime, time};
//! use std::time::Duration;
//!
//! let rt = Runtime::builder().paused_clock().build().unwrap();
//! rt.block_on(async {
//!     let slow = time::sleep(Duration::from_secs(10));
//!     let outcome = time::timeout(Duration::from_secs(1), slow).await;
//!     assert!(outcome.is_err(), "the timeout wins the race");
//! });
//! ```

pub(crate) mod wheel;

use crate::runtime;
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A runtime thread's clock: real, or paused (virtual).
#[derive(Debug)]
pub(crate) struct Clock {
    /// Tick 0 of the timer wheel.
    start: Instant,
    /// The virtual time, when paused.
    paused: Option<Cell<Instant>>,
    /// The time the loop last woke up (also published in the [`CACHED_NOW`] thread-local,
    /// which [`now_cached`] reads).
    cached: Cell<Instant>,
}

thread_local! {
    /// The running core's cached time: one `Cell` read for [`now_cached`], instead of a walk
    /// through the thread's core (the hot path of every timeout and rate limiter).
    pub(crate) static CACHED_NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

impl Clock {
    pub(crate) fn new(paused: bool) -> Clock {
        let start = Instant::now();
        Clock {
            start,
            paused: paused.then(|| Cell::new(start)),
            cached: Cell::new(start),
        }
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    pub(crate) fn now(&self) -> Instant {
        match &self.paused {
            Some(now) => now.get(),
            None => Instant::now(),
        }
    }

    /// Reads the clock into the cached time (once per loop turn).
    pub(crate) fn refresh(&self) -> Instant {
        let now = self.now();
        self.cached.set(now);
        CACHED_NOW.with(|c| c.set(Some(now)));
        now
    }

    /// The cached time (what [`now_cached`] answers while this clock's core runs).
    pub(crate) fn cached(&self) -> Instant {
        self.cached.get()
    }

    /// The tick an instant falls in (rounded down: a tick counts as reached only once it fully
    /// elapsed).
    pub(crate) fn tick_of(&self, at: Instant) -> u64 {
        whole_millis(at.saturating_duration_since(self.start)).0
    }

    /// The tick of a deadline, rounded up so a timer never fires before its deadline. (Armed
    /// once per timed request: in u64, not `as_millis`'s u128.)
    #[inline]
    pub(crate) fn deadline_tick(&self, deadline: Instant) -> u64 {
        let (ms, rest) = whole_millis(deadline.saturating_duration_since(self.start));
        if rest { ms + 1 } else { ms }
    }

    /// Real time until `tick`, rounded up to whole milliseconds (epoll's resolution).
    pub(crate) fn until_tick(&self, tick: u64) -> Duration {
        let at = self.start + Duration::from_millis(tick);
        let left = at.saturating_duration_since(Instant::now());
        let ms = left.as_millis() as u64;
        Duration::from_millis(if left > Duration::from_millis(ms) {
            ms + 1
        } else {
            ms
        })
    }

    /// Moves virtual time forward to `tick` (never backwards).
    pub(crate) fn advance_to_tick(&self, tick: u64) {
        if let Some(now) = &self.paused {
            let at = self.start + Duration::from_millis(tick);
            if at > now.get() {
                now.set(at);
            }
        }
    }
}

/// The current time: the runtime thread's clock (virtual when paused), or the system's
/// monotonic clock outside a runtime.
#[inline]
pub fn now() -> Instant {
    runtime::try_with_core(|core| core.clock.now()).unwrap_or_else(Instant::now)
}

/// The time at which this thread's event loop last woke up (virtual when paused): no clock
/// read, so it costs a thread-local access. It lags the real time by at most one loop turn
/// (the time tasks have run since), which makes it the right clock for hot paths that only
/// need millisecond-scale deadlines — a per-request timeout, a rate limiter's refill — and
/// the wrong one for measuring latencies. Outside a runtime it reads the system clock.
///
/// ```
/// let rt = sheave_core::Runtime::new().unwrap();
/// rt.block_on(async {
///     let cached = sheave_core::time::now_cached();
///     assert!(cached <= sheave_core::time::now());
/// });
/// ```
#[inline]
pub fn now_cached() -> Instant {
    CACHED_NOW.with(Cell::get).unwrap_or_else(Instant::now)
}

/// `at + duration`, or — when that overflows (`Duration::MAX` as "no limit") — a moment
/// about 30 years after `at`, far past any timer's horizon. Never panics.
///
/// ```
/// use std::time::{Duration, Instant};
/// let now = Instant::now();
/// assert!(sheave_core::time::saturating_add(now, Duration::MAX) > now);
/// ```
#[inline]
pub fn saturating_add(at: Instant, duration: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    at.checked_add(duration)
        .unwrap_or_else(|| at.checked_add(FAR).unwrap_or(at))
}

/// Waits until `duration` has passed. `Duration::MAX` waits (practically) forever.
#[inline]
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(saturating_add(now(), duration))
}

/// Waits until `deadline`.
#[inline]
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        entry: None,
    }
}

/// A timer future. Registers with the wheel on first poll; dropping it cancels the timer.
///
/// ```
/// use sheave_core::{Runtime, time};
/// use std::time::Duration;
///
/// let rt = Runtime::builder().paused_clock().build().unwrap();
/// rt.block_on(async {
///     let start = time::now();
///     let mut idle = time::sleep(Duration::from_secs(5));
///     // Activity arrived: push the deadline out instead of making a new timer.
///     idle.reset(start + Duration::from_secs(8));
///     idle.await;
///     assert_eq!(time::now() - start, Duration::from_secs(8));
/// });
/// ```
pub struct Sleep {
    deadline: Instant,
    /// (core id, wheel key) once registered.
    entry: Option<(usize, usize)>,
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("registered", &self.entry.is_some())
            .finish()
    }
}

impl Sleep {
    /// When this sleep completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        now() >= self.deadline
    }

    /// Moves the deadline (earlier or later), re-arming the same timer in O(1).
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if let Some((owner, key)) = self.entry {
            let moved = runtime::try_with_core(|core| {
                if core.id == owner {
                    let tick = core.clock.deadline_tick(deadline);
                    core.timers.borrow_mut().reset(key, tick);
                    true
                } else {
                    false
                }
            });
            if moved != Some(true) {
                self.entry = None;
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        runtime::with_core(|core| {
            if core.clock.now() >= this.deadline {
                if let Some((owner, key)) = this.entry.take()
                    && owner == core.id
                {
                    core.timers.borrow_mut().remove(key);
                }
                return Poll::Ready(());
            }
            let mut wheel = core.timers.borrow_mut();
            match this.entry {
                Some((owner, key)) if owner == core.id => {
                    if wheel.is_fired(key) {
                        // Fired on a tick but the clock says not yet (cannot happen with ticks
                        // rounded up, but stay correct): re-arm.
                        wheel.reset(key, core.clock.deadline_tick(this.deadline));
                    }
                    wheel.set_waker(key, cx.waker());
                }
                _ => {
                    let tick = core.clock.deadline_tick(this.deadline);
                    let key = wheel.insert(tick, Some(cx.waker().clone()));
                    this.entry = Some((core.id, key));
                }
            }
            Poll::Pending
        })
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((owner, key)) = self.entry {
            runtime::try_with_core(|core| {
                if core.id == owner {
                    core.timers.borrow_mut().remove(key);
                }
            });
        }
    }
}

/// The error of [`timeout`]: the deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(_: Elapsed) -> std::io::Error {
        std::io::ErrorKind::TimedOut.into()
    }
}

/// Runs `future` for at most `duration`; on expiry the future is dropped (cancelled).
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    timeout_at(saturating_add(now(), duration), future)
}

/// Runs `future` until `deadline` at most.
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep_until(deadline),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`timeout`]: the inner output, or [`Elapsed`]. The inner future is polled
    /// first, so an output that is ready at the deadline wins.
    #[derive(Debug)]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        sleep: Sleep,
    }
}

impl<F> Timeout<F> {
    /// The inner future.
    pub fn get_ref(&self) -> &F {
        &self.future
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match Pin::new(this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Ticks every `period`, the first tick at once.
///
/// When a tick is late (the task was busy), the next one is scheduled `period` after the late
/// tick rather than bursting to catch up.
pub fn interval(period: Duration) -> Interval {
    assert!(period > Duration::ZERO, "interval period must be non-zero");
    Interval {
        sleep: sleep_until(now()),
        period,
    }
}

/// A periodic timer; see [`interval`]. Also a `futures::Stream` of tick instants.
///
/// ```
/// use sheave_core::{Runtime, time};
/// use std::time::Duration;
///
/// let rt = Runtime::builder().paused_clock().build().unwrap();
/// rt.block_on(async {
///     let start = time::now();
///     let mut every = time::interval(Duration::from_millis(250));
///     for _ in 0..5 {
///         every.tick().await;
///     }
///     assert_eq!(time::now() - start, Duration::from_secs(1));
/// });
/// ```
#[derive(Debug)]
pub struct Interval {
    sleep: Sleep,
    period: Duration,
}

impl Interval {
    /// Waits for the next tick; returns its scheduled instant.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        match Pin::new(&mut self.sleep).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let scheduled = self.sleep.deadline();
                let now = now();
                let next = if now > saturating_add(scheduled, self.period) {
                    saturating_add(now, self.period)
                } else {
                    saturating_add(scheduled, self.period)
                };
                self.sleep.reset(next);
                Poll::Ready(scheduled)
            }
        }
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

impl futures::Stream for Interval {
    type Item = Instant;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Instant>> {
        self.get_mut().poll_tick(cx).map(Some)
    }
}

/// `d` in whole milliseconds (saturating), and whether a part of a millisecond is left over.
#[inline]
fn whole_millis(d: Duration) -> (u64, bool) {
    let nanos = d.subsec_nanos();
    let ms = d
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(nanos / 1_000_000));
    (ms, !nanos.is_multiple_of(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_millis_agrees_with_as_millis_and_sees_a_partial_millisecond() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_micros(999),
            Duration::from_millis(1),
            Duration::from_nanos(1_000_001),
            Duration::new(86_400 * 365, 999_999_999),
        ] {
            let (ms, rest) = whole_millis(d);
            assert_eq!(u128::from(ms), d.as_millis(), "{d:?}");
            assert_eq!(rest, d > Duration::from_millis(ms), "{d:?}");
        }
        assert_eq!(whole_millis(Duration::MAX).0, u64::MAX);
    }
}
