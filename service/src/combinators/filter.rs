//! `Filter`: an asynchronous admission check (and optional rewrite) before the call.

use crate::service::{Service, TryReady};

use super::combinator;

combinator!(
    /// Checks each request with `async Fn(R) -> Result<Req, S::Error>` before calling the
    /// inner service; see [`ServiceExt::filter`](crate::ServiceExt::filter).
    ///
    /// `Ok(req)` admits the (possibly rewritten) request; `Err(e)` rejects it with `e`, and
    /// the permit is dropped, releasing its capacity. The check runs inside `call`, after
    /// `ready`: it holds the permit while it runs. A synchronous predicate returns
    /// `std::future::ready(..)`, which costs nothing.
    Filter,
    /// The layer of [`Filter`].
    FilterLayer
);

impl<S, F, Fut, R, Req> Service<R> for Filter<S, F>
where
    S: Service<Req>,
    F: Fn(R) -> Fut,
    Fut: Future<Output = Result<Req, S::Error>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Permit = S::Permit;

    fn ready(&self) -> impl Future<Output = Result<S::Permit, S::Error>> {
        self.inner.ready()
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    fn try_ready(&self) -> TryReady<S::Permit, S::Error> {
        self.inner.try_ready()
    }

    async fn call(&self, permit: S::Permit, req: R) -> Result<S::Response, S::Error> {
        let req = (self.f)(req).await?;
        self.inner.call(permit, req).await
    }
}
