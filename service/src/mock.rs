//! A mock service and its handle, for testing middleware (feature `test-util`).
//!
//! [`pair`] returns a [`Mock`] (the service under the middleware) and a [`Handle`] (the
//! test's side): the handle controls readiness, sees each request and answers it.
//!
//! * **Readiness.** [`pair`] starts with unlimited permits; [`pair_with_permits`] starts
//!   with `n`. [`Handle::allow`] grants more (switching an unlimited mock to counted mode),
//!   [`Handle::allow_unlimited`] lifts the limit. A permit is consumed by `call`; dropped
//!   unused, it returns its slot. [`Handle::close`] makes `ready` fail.
//! * **Requests.** `call` enqueues the request at once (before its future is polled);
//!   [`Handle::next_request`] / [`Handle::try_next_request`] take it with a
//!   [`SendResponse`]. The call resolves when the test answers; if the `SendResponse` is
//!   dropped, the call fails with [`ErrorKind::Canceled`](crate::ErrorKind::Canceled).
//!   Dropping the handle closes the mock and cancels unanswered requests.
//!
//! # Example
//!
//! ```
//! use sheave_service::{mock, Service};
//!
//! let (svc, handle) = mock::pair_with_permits::<&str, usize>(1);
//! # futures::executor::block_on(async {
//! let permit = svc.ready().await.unwrap();
//! assert!(svc.try_ready().is_busy()); // the only permit is taken
//! let call = svc.call(permit, "hello");
//! let (req, tx) = handle.try_next_request().unwrap();
//! tx.respond(req.len());
//! assert_eq!(call.await.unwrap(), 5);
//! # });
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures::channel::oneshot;

use crate::error::Error;
use crate::service::{Service, TryReady};

/// A mock service with unlimited permits, and its handle.
pub fn pair<Req, Res>() -> (Mock<Req, Res>, Handle<Req, Res>) {
    make(None)
}

/// A mock service with `permits` permits, and its handle.
pub fn pair_with_permits<Req, Res>(permits: usize) -> (Mock<Req, Res>, Handle<Req, Res>) {
    make(Some(permits))
}

fn make<Req, Res>(permits: Option<usize>) -> (Mock<Req, Res>, Handle<Req, Res>) {
    let state = Arc::new(Mutex::new(State {
        permits,
        closed: None,
        waiters: Vec::new(),
        next_waiter: 0,
        requests: VecDeque::new(),
        request_waker: None,
        mocks: 1,
        handle_alive: true,
    }));
    (
        Mock {
            state: Arc::clone(&state),
        },
        Handle { state },
    )
}

struct State<Req, Res> {
    /// Permits left; `None` is unlimited.
    permits: Option<usize>,
    /// Set by `close` (or by dropping the handle): `ready` fails with a clone.
    closed: Option<Error>,
    /// Pending `ready` futures by id. Each removes its own entry when dropped, and every
    /// grant wakes them all, so a canceled waiter can never swallow a wakeup.
    waiters: Vec<(u64, Waker)>,
    next_waiter: u64,
    /// Calls not yet taken by the handle.
    requests: VecDeque<(Req, SendResponse<Res>)>,
    /// The handle's `next_request`, waiting for a call.
    request_waker: Option<Waker>,
    /// Live `Mock` clones: when none are left, `next_request` returns `None`.
    mocks: usize,
    /// False once the handle is dropped: new calls are canceled at once.
    handle_alive: bool,
}

impl<Req, Res> State<Req, Res> {
    /// Takes a permit, if one is available.
    fn take_permit(&mut self) -> bool {
        match &mut self.permits {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }

    fn take_waiters(&mut self) -> Vec<Waker> {
        self.waiters.drain(..).map(|(_, w)| w).collect()
    }
}

type Shared<Req, Res> = Arc<Mutex<State<Req, Res>>>;

fn lock<Req, Res>(state: &Shared<Req, Res>) -> MutexGuard<'_, State<Req, Res>> {
    // A panicking test thread must not hide its own failure behind a poison error.
    state.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn wake_all(wakers: Vec<Waker>) {
    wakers.into_iter().for_each(Waker::wake);
}

/// The mock service; see the [module docs](self). Cheap to clone: clones share state.
pub struct Mock<Req, Res> {
    state: Shared<Req, Res>,
}

impl<Req, Res> Clone for Mock<Req, Res> {
    fn clone(&self) -> Self {
        lock(&self.state).mocks += 1;
        Mock {
            state: Arc::clone(&self.state),
        }
    }
}

impl<Req, Res> Drop for Mock<Req, Res> {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.state);
            state.mocks -= 1;
            state.request_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<Req, Res> fmt::Debug for Mock<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Mock")
            .field("permits", &state.permits)
            .field("closed", &state.closed)
            .field("queued_requests", &state.requests.len())
            .finish()
    }
}

/// The mock's permit: one slot of capacity, returned when dropped unused.
pub struct MockPermit<Req, Res> {
    state: Option<Shared<Req, Res>>,
}

impl<Req, Res> Drop for MockPermit<Req, Res> {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        let wakers = {
            let mut state = lock(&state);
            if let Some(n) = &mut state.permits {
                *n += 1;
            }
            state.take_waiters()
        };
        wake_all(wakers);
    }
}

impl<Req, Res> fmt::Debug for MockPermit<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MockPermit")
    }
}

/// The future of [`Mock::ready`]: takes a permit when one is granted.
struct Ready<Req, Res> {
    state: Shared<Req, Res>,
    id: Option<u64>,
}

impl<Req, Res> Future for Ready<Req, Res> {
    type Output = Result<MockPermit<Req, Res>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = lock(&this.state);
        if let Some(err) = &state.closed {
            return Poll::Ready(Err(err.clone()));
        }
        if state.take_permit() {
            drop(state);
            return Poll::Ready(Ok(MockPermit {
                state: Some(Arc::clone(&this.state)),
            }));
        }
        let id = *this.id.get_or_insert_with(|| {
            state.next_waiter += 1;
            state.next_waiter
        });
        match state.waiters.iter_mut().find(|(w, _)| *w == id) {
            Some((_, waker)) => waker.clone_from(cx.waker()),
            None => state.waiters.push((id, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl<Req, Res> Drop for Ready<Req, Res> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock(&self.state).waiters.retain(|(w, _)| *w != id);
        }
    }
}

impl<Req, Res> Service<Req> for Mock<Req, Res> {
    type Response = Res;
    type Error = Error;
    type Permit = MockPermit<Req, Res>;

    fn ready(&self) -> impl Future<Output = Result<Self::Permit, Error>> {
        Ready {
            state: Arc::clone(&self.state),
            id: None,
        }
    }

    fn try_ready(&self) -> TryReady<Self::Permit, Error> {
        let mut state = lock(&self.state);
        if let Some(err) = &state.closed {
            return TryReady::Closed(err.clone());
        }
        if state.take_permit() {
            TryReady::Ready(MockPermit {
                state: Some(Arc::clone(&self.state)),
            })
        } else {
            TryReady::Busy
        }
    }

    /// Enqueues the request for the handle at once; the future resolves with its answer.
    fn call(&self, mut permit: Self::Permit, req: Req) -> impl Future<Output = Result<Res, Error>> {
        // The permit is spent: its slot does not come back.
        permit.state = None;
        let (tx, rx) = oneshot::channel();
        let waker = {
            let mut state = lock(&self.state);
            if state.handle_alive {
                state.requests.push_back((req, SendResponse { tx }));
            }
            state.request_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        async move { rx.await.unwrap_or_else(|_| Err(Error::canceled())) }
    }
}

/// The test's side of a [`Mock`]; see the [module docs](self).
pub struct Handle<Req, Res> {
    state: Shared<Req, Res>,
}

impl<Req, Res> Handle<Req, Res> {
    /// Grants `n` more permits. On an unlimited mock, switches to counted mode with `n`.
    pub fn allow(&self, n: usize) {
        let wakers = {
            let mut state = lock(&self.state);
            let permits = state.permits.unwrap_or(0).saturating_add(n);
            state.permits = Some(permits);
            state.take_waiters()
        };
        wake_all(wakers);
    }

    /// Lifts the permit limit.
    pub fn allow_unlimited(&self) {
        let wakers = {
            let mut state = lock(&self.state);
            state.permits = None;
            state.take_waiters()
        };
        wake_all(wakers);
    }

    /// Permits available now; `usize::MAX` when unlimited.
    pub fn permits(&self) -> usize {
        lock(&self.state).permits.unwrap_or(usize::MAX)
    }

    /// Makes every `ready` (and `try_ready`) fail with `err` from now on. Calls already
    /// made are not affected.
    pub fn close(&self, err: Error) {
        let wakers = {
            let mut state = lock(&self.state);
            state.closed = Some(err);
            state.take_waiters()
        };
        wake_all(wakers);
    }

    /// The next request and the means to answer it; `None` once every `Mock` is dropped
    /// and no request is left.
    pub async fn next_request(&self) -> Option<(Req, SendResponse<Res>)> {
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            if let Some(next) = state.requests.pop_front() {
                return Poll::Ready(Some(next));
            }
            if state.mocks == 0 {
                return Poll::Ready(None);
            }
            state.request_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The next request, if one is waiting.
    pub fn try_next_request(&self) -> Option<(Req, SendResponse<Res>)> {
        lock(&self.state).requests.pop_front()
    }

    /// The number of requests waiting to be taken.
    pub fn queued_requests(&self) -> usize {
        lock(&self.state).requests.len()
    }
}

impl<Req, Res> Drop for Handle<Req, Res> {
    fn drop(&mut self) {
        let (requests, wakers) = {
            let mut state = lock(&self.state);
            state.handle_alive = false;
            if state.closed.is_none() {
                state.closed = Some(Error::closed());
            }
            (std::mem::take(&mut state.requests), state.take_waiters())
        };
        // Dropping the senders (outside the lock) cancels the unanswered calls.
        drop(requests);
        wake_all(wakers);
    }
}

impl<Req, Res> fmt::Debug for Handle<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Handle")
            .field("permits", &state.permits)
            .field("closed", &state.closed)
            .field("queued_requests", &state.requests.len())
            .finish()
    }
}

/// Answers one mock call. Dropped unanswered, the call fails with `Canceled`.
pub struct SendResponse<Res> {
    tx: oneshot::Sender<Result<Res, Error>>,
}

impl<Res> SendResponse<Res> {
    /// Answers with a response.
    pub fn respond(self, res: Res) {
        self.send(Ok(res));
    }

    /// Answers with an error.
    pub fn fail(self, err: Error) {
        self.send(Err(err));
    }

    /// Answers with `result`. An answer to a call whose future was dropped is discarded.
    pub fn send(self, result: Result<Res, Error>) {
        let _ = self.tx.send(result);
    }

    /// True if the call's future was dropped (nobody awaits the answer).
    pub fn is_canceled(&self) -> bool {
        self.tx.is_canceled()
    }
}

impl<Res> fmt::Debug for SendResponse<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendResponse")
            .field("canceled", &self.tx.is_canceled())
            .finish()
    }
}
