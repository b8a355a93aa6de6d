//! [`ServiceExt`]: combinators and conveniences for every [`Service`].
//!
//! Each combinator returns a plain struct (see [`combinators`](crate::combinators)) that
//! forwards `try_ready` and the inner permit: no boxing on the request path unless you ask
//! for it with [`boxed`](ServiceExt::boxed).
//!
//! # Example
//!
//! ```
//! use sheave_service::{service_fn, Error, ServiceExt};
//!
//! let svc = service_fn(|n: i64| async move { Ok::<_, Error>(n) })
//!     .filter(|n: i64| async move {
//!         if n >= 0 { Ok(n) } else { Err(Error::protocol("negative")) }
//!     })
//!     .map_response(|n| n * 2);
//! # futures::executor::block_on(async {
//! assert_eq!(svc.oneshot(21).await.unwrap(), 42);
//! assert!(svc.oneshot(-1).await.unwrap_err().is_protocol());
//! # });
//! ```

use futures::Stream;

use crate::boxed::{BoxLocalService, BoxService};
use crate::call_all::{CallAll, call_all};
use crate::combinators::{AndThen, Filter, MapErr, MapRequest, MapResponse, Then};
use crate::service::{Service, TryReady};

/// Combinators and conveniences, implemented for every [`Service`].
pub trait ServiceExt<Req>: Service<Req> {
    /// Waits for readiness, then calls: for callers that do not manage permits.
    ///
    /// Asks [`try_ready`](Service::try_ready) first and builds the `ready()` future only when
    /// the service is busy: a ready stack answers without constructing its chain of readiness
    /// futures.
    fn oneshot(&self, req: Req) -> impl Future<Output = Result<Self::Response, Self::Error>> {
        async move {
            let permit = match self.try_ready() {
                TryReady::Ready(permit) => permit,
                TryReady::Busy => self.ready().await?,
                TryReady::Closed(err) => return Err(err),
            };
            self.call(permit, req).await
        }
    }

    /// Maps each request with `f` before this service sees it.
    fn map_request<F, R>(self, f: F) -> MapRequest<Self, F>
    where
        Self: Sized,
        F: Fn(R) -> Req,
    {
        MapRequest::new(self, f)
    }

    /// Maps each response with `f`.
    fn map_response<F, R>(self, f: F) -> MapResponse<Self, F>
    where
        Self: Sized,
        F: Fn(Self::Response) -> R,
    {
        MapResponse::new(self, f)
    }

    /// Maps errors of `ready` and `call` with `f`; `map_err(Error::service)` lifts a user
    /// error into a [`sheave_service::Error`](crate::Error).
    fn map_err<F, E>(self, f: F) -> MapErr<Self, F>
    where
        Self: Sized,
        F: Fn(Self::Error) -> E,
    {
        MapErr::new(self, f)
    }

    /// Runs the async `f` on each successful response.
    fn and_then<F, Fut, R, E>(self, f: F) -> AndThen<Self, F>
    where
        Self: Sized,
        Self::Error: Into<E>,
        F: Fn(Self::Response) -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        AndThen::new(self, f)
    }

    /// Runs the async `f` on each call's outcome, success or failure.
    fn then<F, Fut, R, E>(self, f: F) -> Then<Self, F>
    where
        Self: Sized,
        Self::Error: Into<E>,
        F: Fn(Result<Self::Response, Self::Error>) -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        Then::new(self, f)
    }

    /// Admits (and may rewrite) each request with the async `f` before calling; `Err`
    /// rejects the request and releases its permit. See [`Filter`].
    fn filter<F, Fut, R>(self, f: F) -> Filter<Self, F>
    where
        Self: Sized,
        F: Fn(R) -> Fut,
        Fut: Future<Output = Result<Req, Self::Error>>,
    {
        Filter::new(self, f)
    }

    /// Erases the type: a `Send + Sync` [`BoxService`].
    fn boxed(self) -> BoxService<Req, Self::Response, Self::Error>
    where
        Self: Sized + Send + Sync + 'static,
        Self::Permit: 'static,
    {
        BoxService::new(self)
    }

    /// Erases the type: a [`BoxLocalService`], which may hold `Rc`s.
    fn boxed_local(self) -> BoxLocalService<Req, Self::Response, Self::Error>
    where
        Self: Sized + 'static,
        Self::Permit: 'static,
    {
        BoxLocalService::new(self)
    }

    /// Calls this service on each request of `requests`, waiting for readiness before
    /// taking each one, with bounded concurrency; see [`CallAll`].
    #[allow(clippy::type_complexity)]
    fn call_all<St>(
        &self,
        requests: St,
    ) -> CallAll<
        '_,
        Self,
        St,
        impl Future<Output = Result<Self::Permit, Self::Error>>,
        impl Future<Output = Result<Self::Response, Self::Error>>,
    >
    where
        Self: Sized,
        St: Stream<Item = Req>,
    {
        call_all(self, requests)
    }
}

impl<S, Req> ServiceExt<Req> for S where S: Service<Req> + ?Sized {}
