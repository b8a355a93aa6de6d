//! Test helpers: a tagged codec, a gate, a future that is pending once, a deadline.

use sheave_core::net::TcpListener;
use sheave_core::time;
use sheave_service::Error;
use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Runs `fut` with a deadline of `secs` seconds; panics past it.
pub async fn within<F: Future>(secs: u64, fut: F) -> F::Output {
    time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("the test finished within its deadline")
}

/// A listener on 127.0.0.1, port 0.
pub fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Opened once; every waiter then passes. `Send + Sync`, for recipes that cross threads.
#[derive(Clone, Default)]
pub struct Gate(Arc<(AtomicBool, Mutex<Vec<Waker>>)>);

impl Gate {
    pub fn open(&self) {
        self.0.0.store(true, Ordering::Release);
        let waiters = std::mem::take(&mut *self.0.1.lock().unwrap());
        waiters.into_iter().for_each(Waker::wake);
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            let mut waiters = self.0.1.lock().unwrap();
            if self.0.0.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                waiters.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Pending on its first poll (waking itself at once), ready on the second; counts polls.
pub struct YieldOnce {
    value: Option<String>,
    yielded: bool,
    polls: Rc<Cell<u64>>,
}

impl YieldOnce {
    pub fn new(value: String, polls: Rc<Cell<u64>>) -> Self {
        YieldOnce {
            value: Some(value),
            yielded: false,
            polls,
        }
    }
}

impl Future for YieldOnce {
    type Output = Result<String, Error>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.polls.set(this.polls.get() + 1);
        if !this.yielded {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(this.value.take().expect("polled after completion")))
    }
}
