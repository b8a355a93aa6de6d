//! [`ConcurrencyLimit`]: at most `n` requests in flight, FIFO waiters.

use std::fmt;
use std::rc::Rc;

use sheave_service::{Error, Layer, Service, TryReady};

pub use super::semaphore::Slot;
use super::semaphore::{DEFAULT_MAX_WAITERS, Semaphore};
use crate::future::CallFuture;

/// At most `max` requests in flight; waiters queue FIFO. See the [module docs](super).
pub struct ConcurrencyLimit<S> {
    inner: S,
    sem: Rc<Semaphore>,
}

impl<S> ConcurrencyLimit<S> {
    /// Wraps `inner`, allowing at most `max` requests in flight.
    ///
    /// # Panics
    ///
    /// If `max` is zero.
    pub fn new(inner: S, max: usize) -> Self {
        assert!(max > 0, "a concurrency limit of zero admits nothing");
        ConcurrencyLimit {
            inner,
            sem: Rc::new(Semaphore::new(max)),
        }
    }

    /// The configured limit.
    pub fn max(&self) -> usize {
        self.sem.max()
    }

    /// Lets at most `n` `ready()` calls wait for a slot (default 1,024); the next one fails
    /// at once with a retryable `Overloaded` error. `0` queues nobody: a full limit refuses
    /// at once, like a [`LoadShed`](crate::LoadShed) over it but as a readiness error.
    pub fn with_max_waiters(self, n: usize) -> Self {
        self.sem.set_max_waiters(n);
        self
    }

    /// The bound on waiters.
    pub fn max_waiters(&self) -> usize {
        self.sem.max_waiters()
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.sem.available()
    }

    /// `ready()` calls waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.sem.waiting()
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
}

impl<S: Clone> Clone for ConcurrencyLimit<S> {
    /// The clone shares the limit.
    fn clone(&self) -> Self {
        ConcurrencyLimit {
            inner: self.inner.clone(),
            sem: Rc::clone(&self.sem),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("max", &self.sem.max())
            .field("available", &self.sem.available())
            .field("waiting", &self.waiting())
            .field("max_waiters", &self.sem.max_waiters())
            .field("inner", &self.inner)
            .finish()
    }
}

/// The permit of a [`ConcurrencyLimit`]: the inner permit and the slot.
#[derive(Debug)]
pub struct ConcurrencyPermit<P> {
    inner: P,
    slot: Slot,
}

impl<S, Req> Service<Req> for ConcurrencyLimit<S>
where
    S: Service<Req>,
    S::Error: Into<Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = ConcurrencyPermit<S::Permit>;

    /// Waits (FIFO) for a slot, then for the inner service; the slot is held meanwhile.
    /// Fails at once with `Overloaded` when [`max_waiters`](ConcurrencyLimit::max_waiters)
    /// callers already wait.
    async fn ready(&self) -> Result<Self::Permit, Error> {
        let slot = Semaphore::acquire(&self.sem).await?;
        let inner = self.inner.ready().await.map_err(Into::into)?;
        Ok(ConcurrencyPermit { inner, slot })
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    /// `Busy` when every slot is taken (or the inner service is busy), without queueing.
    fn try_ready(&self) -> TryReady<Self::Permit, Error> {
        let Some(slot) = Semaphore::try_slot(&self.sem) else {
            return TryReady::Busy;
        };
        match self.inner.try_ready() {
            TryReady::Ready(inner) => TryReady::Ready(ConcurrencyPermit { inner, slot }),
            TryReady::Busy => TryReady::Busy,
            TryReady::Closed(err) => TryReady::Closed(err.into()),
        }
    }

    /// The slot is released when the call finishes (or its future is dropped).
    fn call(
        &self,
        permit: Self::Permit,
        req: Req,
    ) -> impl Future<Output = Result<S::Response, Error>> {
        let ConcurrencyPermit { inner, slot } = permit;
        CallFuture::guarded(self.inner.call(inner, req), slot)
    }
}

/// Wraps services in a [`ConcurrencyLimit`]; each service gets its own limit.
#[derive(Debug, Clone, Copy)]
pub struct ConcurrencyLimitLayer {
    max: usize,
    max_waiters: usize,
}

impl ConcurrencyLimitLayer {
    /// At most `max` requests in flight per wrapped service, at most 1,024 waiting.
    pub fn new(max: usize) -> Self {
        ConcurrencyLimitLayer {
            max,
            max_waiters: DEFAULT_MAX_WAITERS,
        }
    }

    /// At most `n` callers wait for a slot; see [`ConcurrencyLimit::with_max_waiters`].
    pub fn max_waiters(mut self, n: usize) -> Self {
        self.max_waiters = n;
        self
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit::new(inner, self.max).with_max_waiters(self.max_waiters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheave_service::service_fn;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn svc(max: usize) -> ConcurrencyLimit<impl Service<u8, Response = u8, Error = Error>> {
        ConcurrencyLimit::new(service_fn(|n: u8| async move { Ok::<_, Error>(n) }), max)
    }

    #[test]
    fn try_ready_is_busy_when_full_and_a_dropped_permit_frees_the_slot() {
        let svc = svc(1);
        let permit = svc.try_ready().ready().unwrap();
        assert!(svc.try_ready().is_busy());
        assert_eq!(svc.waiting(), 0, "try_ready never queues");
        drop(permit);
        assert!(svc.try_ready().is_ready());
    }

    #[test]
    fn a_dropped_waiter_passes_on_a_slot_it_was_handed() {
        let svc = svc(1);
        let cx = &mut Context::from_waker(Waker::noop());
        let held = svc.try_ready().ready().unwrap();
        let mut a = Box::pin(svc.ready());
        let mut b = pin!(svc.ready());
        assert!(a.as_mut().poll(cx).is_pending());
        assert!(b.as_mut().poll(cx).is_pending());
        drop(held); // handed to `a`
        drop(a); // which never takes it
        assert!(matches!(b.as_mut().poll(cx), Poll::Ready(Ok(_))));
    }

    #[test]
    fn past_the_waiter_bound_ready_fails_at_once_with_overloaded() {
        let svc = svc(1).with_max_waiters(1);
        let cx = &mut Context::from_waker(Waker::noop());
        let held = svc.try_ready().ready().unwrap();
        let mut first = pin!(svc.ready());
        assert!(first.as_mut().poll(cx).is_pending(), "one may wait");
        let mut second = pin!(svc.ready());
        match second.as_mut().poll(cx) {
            Poll::Ready(Err(e)) => {
                assert_eq!(e.kind(), sheave_service::ErrorKind::Overloaded);
                assert!(e.is_retryable(), "nothing was sent");
            }
            other => panic!("expected an overload, got {:?}", other.map(|r| r.is_ok())),
        }
        drop(held);
        assert!(matches!(first.as_mut().poll(cx), Poll::Ready(Ok(_))));
    }

    #[test]
    fn debug_shows_the_config() {
        let layer = ConcurrencyLimitLayer::new(4);
        assert_eq!(
            format!("{layer:?}"),
            "ConcurrencyLimitLayer { max: 4, max_waiters: 1024 }"
        );
        let svc = layer.layer(());
        assert_eq!(
            format!("{svc:?}"),
            "ConcurrencyLimit { max: 4, available: 4, waiting: 0, max_waiters: 1024, inner: () }"
        );
    }
}
