//! [`CallFuture`]: the one small hand-written future the request path uses.
//!
//! Most middleware here are plain `async fn`s. On the hottest path — a call that only needs
//! its error converted, and maybe a guard released when it finishes — an `async` block adds
//! a state machine, its drop glue and a larger future for every layer; this future adds
//! nothing but the conversion and the guard (`cargo bench -p sheave-benches --bench
//! middleware`).

use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use sheave_service::Error;

pin_project! {
    /// Polls `fut`, converts its error into [`Error`], and drops `guard` (a concurrency slot)
    /// as soon as it finishes.
    pub(crate) struct CallFuture<F, G> {
        #[pin]
        fut: F,
        guard: Option<G>,
    }
}

impl<F> CallFuture<F, ()> {
    /// Converts the error only.
    pub(crate) fn new(fut: F) -> Self {
        CallFuture { fut, guard: None }
    }
}

impl<F, G> CallFuture<F, G> {
    /// Converts the error and holds `guard` until `fut` finishes.
    pub(crate) fn guarded(fut: F, guard: G) -> Self {
        CallFuture {
            fut,
            guard: Some(guard),
        }
    }
}

impl<F, G, T, E> Future for CallFuture<F, G>
where
    F: Future<Output = Result<T, E>>,
    E: Into<Error>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.fut.poll(cx) {
            Poll::Ready(out) => {
                drop(this.guard.take());
                Poll::Ready(out.map_err(Into::into))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
