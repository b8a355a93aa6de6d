//! `MapRequest`, `MapResponse`, `MapErr`: synchronous maps around a service.

use crate::service::{Service, TryReady};

use super::combinator;

combinator!(
    /// Maps each request with `Fn(R) -> Req` before the inner service sees it; see
    /// [`ServiceExt::map_request`](crate::ServiceExt::map_request).
    MapRequest,
    /// The layer of [`MapRequest`].
    MapRequestLayer
);

impl<S, F, R, Req> Service<R> for MapRequest<S, F>
where
    S: Service<Req>,
    F: Fn(R) -> Req,
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

    fn call(
        &self,
        permit: S::Permit,
        req: R,
    ) -> impl Future<Output = Result<S::Response, S::Error>> {
        self.inner.call(permit, (self.f)(req))
    }
}

combinator!(
    /// Maps each response with `Fn(Res) -> R`; see
    /// [`ServiceExt::map_response`](crate::ServiceExt::map_response).
    MapResponse,
    /// The layer of [`MapResponse`].
    MapResponseLayer
);

impl<S, F, R, Req> Service<Req> for MapResponse<S, F>
where
    S: Service<Req>,
    F: Fn(S::Response) -> R,
{
    type Response = R;
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

    async fn call(&self, permit: S::Permit, req: Req) -> Result<R, S::Error> {
        self.inner.call(permit, req).await.map(&self.f)
    }
}

combinator!(
    /// Maps errors of both `ready` and `call` with `Fn(E) -> E2`; see
    /// [`ServiceExt::map_err`](crate::ServiceExt::map_err).
    MapErr,
    /// The layer of [`MapErr`].
    MapErrLayer
);

impl<S, F, E, Req> Service<Req> for MapErr<S, F>
where
    S: Service<Req>,
    F: Fn(S::Error) -> E,
{
    type Response = S::Response;
    type Error = E;
    type Permit = S::Permit;

    async fn ready(&self) -> Result<S::Permit, E> {
        self.inner.ready().await.map_err(&self.f)
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    fn try_ready(&self) -> TryReady<S::Permit, E> {
        self.inner.try_ready().map_err(&self.f)
    }

    async fn call(&self, permit: S::Permit, req: Req) -> Result<S::Response, E> {
        self.inner.call(permit, req).await.map_err(&self.f)
    }
}
