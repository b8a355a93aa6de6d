//! [`RateLimit`]: a token bucket — `n` requests per period, bursts up to a capacity.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use sheave_core::time::{Sleep, now, now_cached, sleep_until};
use sheave_service::{Error, ErrorKind, Layer, Service, TryReady};

use super::waiters::{Cancelled, WaitQueue, WaiterId};
use crate::future::CallFuture;

/// The configuration of a [`RateLimit`]: `tokens` per `period`, and a bucket of `burst`.
///
/// Tokens arrive one at a time, evenly: the k-th token since the limiter was created arrives
/// at exactly `k × period / tokens` (integer nanoseconds, rounded up — no drift), and the
/// bucket holds at most `burst`. A new limiter starts full. So over any stretch of time `t`
/// the limiter admits at most `burst + ⌊t × tokens / period⌋` requests, and a saturated
/// limiter admits exactly `tokens` per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    tokens: u64,
    period: Duration,
    burst: u64,
    max_waiters: usize,
}

impl RateConfig {
    /// `tokens` per `period`, with a burst of `tokens`.
    ///
    /// # Panics
    ///
    /// If `tokens` is zero or `period` is shorter than a nanosecond or longer than ~584 years.
    pub fn new(tokens: u64, period: Duration) -> Self {
        assert!(tokens > 0, "a rate of zero tokens admits nothing");
        assert!(
            period > Duration::ZERO && period.as_nanos() <= u128::from(u64::MAX),
            "the period must be between 1 ns and u64::MAX ns"
        );
        RateConfig {
            tokens,
            period,
            burst: tokens,
            max_waiters: super::semaphore::DEFAULT_MAX_WAITERS,
        }
    }

    /// At most `n` (at least 1) `ready()` calls wait for a token (default 1,024); the next
    /// one fails at once with a retryable `Overloaded` error.
    pub fn max_waiters(mut self, n: usize) -> Self {
        self.max_waiters = n.max(1);
        self
    }

    /// The bound on waiters.
    pub fn get_max_waiters(&self) -> usize {
        self.max_waiters
    }

    /// The bucket's capacity: how many requests may pass at once after a quiet spell.
    ///
    /// # Panics
    ///
    /// If `burst` is zero.
    pub fn burst(mut self, burst: u64) -> Self {
        assert!(burst > 0, "a burst of zero admits nothing");
        self.burst = burst;
        self
    }

    /// Tokens per period.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The bucket's capacity.
    pub fn burst_size(&self) -> u64 {
        self.burst
    }
}

/// The token bucket behind a [`RateLimit`].
struct Bucket {
    config: RateConfig,
    /// Time zero of the refill arithmetic.
    start: Instant,
    tokens: Cell<u64>,
    /// Tokens that have arrived since `start` (whether or not the bucket had room).
    arrived: Cell<u64>,
    /// When token `arrived + 1` arrives: refills are computed only past it.
    next_at: Cell<Instant>,
    waiters: RefCell<WaitQueue>,
}

impl Bucket {
    fn new(config: RateConfig) -> Self {
        let start = now_cached();
        let bucket = Bucket {
            config,
            start,
            tokens: Cell::new(config.burst),
            arrived: Cell::new(0),
            next_at: Cell::new(start),
            waiters: RefCell::new(WaitQueue::new()),
        };
        bucket.next_at.set(bucket.arrival(1));
        bucket
    }

    /// When the `k`-th token since `start` arrives (rounded up to whole nanoseconds).
    fn arrival(&self, k: u64) -> Instant {
        let per = self.config.period.as_nanos();
        let n = u128::from(self.config.tokens);
        let ns = (u128::from(k) * per).div_ceil(n);
        let ns = u64::try_from(ns).unwrap_or(u64::MAX);
        self.start
            .checked_add(Duration::from_nanos(ns))
            .unwrap_or(self.start + Duration::from_secs(u32::MAX.into()))
    }

    /// Adds the tokens that arrived by `now`.
    fn refill(&self, now: Instant) {
        if now < self.next_at.get() {
            return;
        }
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let total = elapsed * u128::from(self.config.tokens) / self.config.period.as_nanos();
        let total = u64::try_from(total).unwrap_or(u64::MAX);
        let new = total.saturating_sub(self.arrived.get());
        self.arrived.set(total.max(self.arrived.get()));
        let tokens = self.tokens.get().saturating_add(new).min(self.config.burst);
        self.tokens.set(tokens);
        self.next_at
            .set(self.arrival(self.arrived.get().saturating_add(1)));
    }

    fn try_take(&self) -> bool {
        let n = self.tokens.get();
        if n == 0 {
            return false;
        }
        self.tokens.set(n - 1);
        true
    }

    /// Refills, hands tokens to waiters in order, and returns who to wake: the granted ones,
    /// and the new first waiter (which keeps the timer) — except waiter `me`, the caller.
    ///
    /// Skipping by id, not by comparing wakers: waiters polled by one task (`join!`) share
    /// a waker, and skipping all of them would leave a new first waiter asleep with the
    /// only timer.
    fn dispatch(&self, now: Instant, me: Option<WaiterId>) -> Vec<Waker> {
        self.refill(now);
        let mut waiters = self.waiters.borrow_mut();
        let mut wake = Vec::new();
        while !waiters.is_empty() && self.try_take() {
            let id = waiters.front();
            if let Some(waker) = waiters.grant_front()
                && id != me
            {
                wake.push(waker);
            }
        }
        if waiters.front() != me {
            wake.extend(waiters.front_waker());
        }
        wake
    }

    /// Gives an unspent token back and passes it on — if no token has arrived since it was
    /// taken (`epoch`, the arrival count then). Had it stayed in the bucket, a refill since
    /// might have found the bucket full: giving it back then could lift a burst above
    /// `burst` (tokens held across a refill, then all given back at once). Dropping it
    /// errs on the side of the rate.
    fn give_back(&self, epoch: u64) {
        if epoch != self.arrived.get() {
            return;
        }
        let tokens = self.tokens.get().saturating_add(1).min(self.config.burst);
        self.tokens.set(tokens);
        if !self.waiters.borrow().is_empty() {
            self.dispatch(now_cached(), None)
                .into_iter()
                .for_each(Waker::wake);
        }
    }
}

/// One token of a [`RateLimit`], taken by `ready` and spent by `call`; given back if the
/// permit is dropped unused before the next token arrives (later, it is dropped: the bucket
/// may have refilled around it).
pub struct Token {
    bucket: Option<Rc<Bucket>>,
    /// The bucket's arrival count when the token was taken.
    epoch: u64,
}

impl Token {
    fn spend(mut self) {
        self.bucket = None;
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if let Some(bucket) = self.bucket.take() {
            bucket.give_back(self.epoch);
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token")
    }
}

/// A queued `ready()`. The first waiter keeps the one timer (until the next token); the
/// others wait to be handed a token. Dropped, it leaves the queue, passes on a token it was
/// handed, and wakes the next first waiter so the timer is never lost.
struct Waiter<'a> {
    bucket: &'a Bucket,
    id: Option<WaiterId>,
    sleep: Option<Sleep>,
}

impl Waiter<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let id = {
                let mut waiters = self.bucket.waiters.borrow_mut();
                let id = match self.id {
                    None => {
                        if waiters.is_empty() {
                            self.bucket.refill(now_cached());
                            if self.bucket.try_take() {
                                return Poll::Ready(());
                            }
                        }
                        match waiters.push(cx.waker()) {
                            Ok(id) => id,
                            // The bucket's queue has no bound: this is never refused.
                            Err(full) => unreachable!("{full}"),
                        }
                    }
                    Some(id) if waiters.take_grant(id) => {
                        self.id = None;
                        return Poll::Ready(());
                    }
                    Some(id) => {
                        waiters.set_waker(id, cx.waker());
                        id
                    }
                };
                self.id = Some(id);
                if waiters.front() != Some(id) {
                    return Poll::Pending;
                }
                id
            };
            // First in line: collect what has arrived, then sleep until the next token.
            for waker in self.bucket.dispatch(now(), Some(id)) {
                waker.wake();
            }
            if self.bucket.waiters.borrow_mut().take_grant(id) {
                self.id = None;
                return Poll::Ready(());
            }
            let at = self.bucket.next_at.get();
            let sleep = self.sleep.get_or_insert_with(|| sleep_until(at));
            if sleep.deadline() != at {
                sleep.reset(at);
            }
            if Pin::new(sleep).poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The token has arrived (`now() >= at`): the next turn takes it.
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let held = self.bucket.waiters.borrow_mut().cancel(id);
        match held {
            // Granted just now (a granted waiter is woken and polled before time moves).
            Cancelled::Granted => self.bucket.give_back(self.bucket.arrived.get()),
            Cancelled::WasFront => {
                let next = self.bucket.waiters.borrow().front_waker();
                if let Some(waker) = next {
                    waker.wake();
                }
            }
            Cancelled::Queued => {}
        }
    }
}

/// Admits requests at a rate (a token bucket); see [`RateConfig`] and the
/// [module docs](super). Clones share the bucket.
pub struct RateLimit<S> {
    inner: S,
    bucket: Rc<Bucket>,
}

impl<S> RateLimit<S> {
    /// Wraps `inner` with a new, full bucket.
    pub fn new(inner: S, config: RateConfig) -> Self {
        RateLimit {
            inner,
            bucket: Rc::new(Bucket::new(config)),
        }
    }

    /// The configuration.
    pub fn config(&self) -> RateConfig {
        self.bucket.config
    }

    /// Tokens in the bucket (as of the last refill).
    pub fn tokens(&self) -> u64 {
        self.bucket.tokens.get()
    }

    /// `ready()` calls waiting for a token.
    pub fn waiting(&self) -> usize {
        self.bucket.waiters.borrow().len()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }

    async fn take(&self) -> Result<Token, Error> {
        if self.bucket.waiters.borrow().len() >= self.bucket.config.max_waiters {
            return Err(
                Error::msg(ErrorKind::Overloaded, "the rate limit's wait queue is full")
                    .retryable(),
            );
        }
        let mut waiter = Waiter {
            bucket: &self.bucket,
            id: None,
            sleep: None,
        };
        poll_fn(|cx| waiter.poll(cx)).await;
        Ok(self.token())
    }

    fn token(&self) -> Token {
        Token {
            epoch: self.bucket.arrived.get(),
            bucket: Some(Rc::clone(&self.bucket)),
        }
    }
}

impl<S: Clone> Clone for RateLimit<S> {
    /// The clone shares the bucket.
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            bucket: Rc::clone(&self.bucket),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("config", &self.bucket.config)
            .field("tokens", &self.bucket.tokens.get())
            .field("waiting", &self.waiting())
            .field("inner", &self.inner)
            .finish()
    }
}

/// The permit of a [`RateLimit`]: the inner permit and a token.
#[derive(Debug)]
pub struct RatePermit<P> {
    inner: P,
    token: Token,
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req>,
    S::Error: Into<Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = RatePermit<S::Permit>;

    /// Waits (FIFO) for a token — a timer until the next one arrives — then for the inner
    /// service.
    async fn ready(&self) -> Result<Self::Permit, Error> {
        let token = self.take().await?;
        let inner = self.inner.ready().await.map_err(Into::into)?;
        Ok(RatePermit { inner, token })
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    /// `Busy` when the bucket is empty (or others wait), without queueing.
    fn try_ready(&self) -> TryReady<Self::Permit, Error> {
        let bucket = &*self.bucket;
        bucket.refill(now_cached());
        if !bucket.waiters.borrow().is_empty() || !bucket.try_take() {
            return TryReady::Busy;
        }
        let token = self.token();
        match self.inner.try_ready() {
            TryReady::Ready(inner) => TryReady::Ready(RatePermit { inner, token }),
            TryReady::Busy => TryReady::Busy,
            TryReady::Closed(err) => TryReady::Closed(err.into()),
        }
    }

    /// Spends the token.
    fn call(
        &self,
        permit: Self::Permit,
        req: Req,
    ) -> impl Future<Output = Result<S::Response, Error>> {
        let RatePermit { inner, token } = permit;
        token.spend();
        CallFuture::new(self.inner.call(inner, req))
    }
}

/// Wraps services in a [`RateLimit`]; each service gets its own bucket.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitLayer {
    config: RateConfig,
}

impl RateLimitLayer {
    /// A bucket per wrapped service, configured by `config`.
    pub fn new(config: RateConfig) -> Self {
        RateLimitLayer { config }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit::new(inner, self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheave_core::Runtime;
    use sheave_service::service_fn;

    #[test]
    fn arrivals_are_exact_and_never_drift() {
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let b = Bucket::new(RateConfig::new(3, Duration::from_secs(1)));
            assert_eq!(b.arrival(1) - b.start, Duration::from_nanos(333_333_334));
            assert_eq!(b.arrival(3) - b.start, Duration::from_secs(1));
            assert_eq!(b.arrival(3_000) - b.start, Duration::from_secs(1_000));
        });
    }

    #[test]
    fn try_ready_is_busy_when_empty_and_an_unused_permit_gives_its_token_back() {
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let svc = RateLimit::new(
                service_fn(|n: u8| async move { Ok::<_, Error>(n) }),
                RateConfig::new(2, Duration::from_secs(1)),
            );
            let a = svc.try_ready().ready().unwrap();
            let _b = svc.try_ready().ready().unwrap();
            assert!(svc.try_ready().is_busy());
            drop(a);
            assert!(svc.try_ready().is_ready());
        });
    }
}
