//! `AndThen` and `Then`: asynchronous steps after the inner call.

use crate::service::{Service, TryReady};

use super::combinator;

combinator!(
    /// Runs `async Fn(Res) -> Result<R, E2>` on each successful response; see
    /// [`ServiceExt::and_then`](crate::ServiceExt::and_then). Errors of the inner service
    /// (from `ready` and `call`) are converted with `Into<E2>` and skip the closure.
    AndThen,
    /// The layer of [`AndThen`].
    AndThenLayer
);

impl<S, F, Fut, R, E, Req> Service<Req> for AndThen<S, F>
where
    S: Service<Req>,
    S::Error: Into<E>,
    F: Fn(S::Response) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    type Response = R;
    type Error = E;
    type Permit = S::Permit;

    async fn ready(&self) -> Result<S::Permit, E> {
        self.inner.ready().await.map_err(Into::into)
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    fn try_ready(&self) -> TryReady<S::Permit, E> {
        self.inner.try_ready().map_err(Into::into)
    }

    async fn call(&self, permit: S::Permit, req: Req) -> Result<R, E> {
        let res = self.inner.call(permit, req).await.map_err(Into::into)?;
        (self.f)(res).await
    }
}

combinator!(
    /// Runs `async Fn(Result<Res, E>) -> Result<R, E2>` on each call's outcome, success or
    /// failure; see [`ServiceExt::then`](crate::ServiceExt::then). Readiness errors are not
    /// outcomes of a call: they are converted with `Into<E2>`.
    Then,
    /// The layer of [`Then`].
    ThenLayer
);

impl<S, F, Fut, R, E, Req> Service<Req> for Then<S, F>
where
    S: Service<Req>,
    S::Error: Into<E>,
    F: Fn(Result<S::Response, S::Error>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    type Response = R;
    type Error = E;
    type Permit = S::Permit;

    async fn ready(&self) -> Result<S::Permit, E> {
        self.inner.ready().await.map_err(Into::into)
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    fn try_ready(&self) -> TryReady<S::Permit, E> {
        self.inner.try_ready().map_err(Into::into)
    }

    async fn call(&self, permit: S::Permit, req: Req) -> Result<R, E> {
        (self.f)(self.inner.call(permit, req).await).await
    }
}
