//! [`Either`]: one of two services (or layers), chosen at run time, as one type.
//!
//! This is how optional middleware works: [`option_layer`] turns an `Option<L>` into a
//! layer that either applies `L` or does nothing, and the resulting service is an
//! `Either<L::Service, S>`. Both sides must agree on `Response` and `Error`; the permit is an
//! `Either` of the two permits.
//!
//! # Example
//!
//! ```
//! use sheave_service::{option_layer, service_fn, Layer, MapResponseLayer, ServiceExt};
//! use std::convert::Infallible;
//!
//! let echo = service_fn(|n: u32| async move { Ok::<_, Infallible>(n) });
//! let double = option_layer(Some(MapResponseLayer::new(|n: u32| n * 2)));
//! let skip = option_layer(None::<MapResponseLayer<fn(u32) -> u32>>);
//! # futures::executor::block_on(async {
//! assert_eq!(double.layer(echo).oneshot(4).await, Ok(8));
//! assert_eq!(skip.layer(echo).oneshot(4).await, Ok(4));
//! # });
//! ```

use crate::layer::{Identity, Layer};
use crate::service::{Service, TryReady};

/// One of two values: services, layers or permits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Either<A, B> {
    /// The first alternative.
    Left(A),
    /// The second alternative.
    Right(B),
}

/// A layer that applies `layer` if it is `Some`, and nothing otherwise.
pub fn option_layer<L>(layer: Option<L>) -> Either<L, Identity> {
    match layer {
        Some(layer) => Either::Left(layer),
        None => Either::Right(Identity),
    }
}

impl<S, A, B> Layer<S> for Either<A, B>
where
    A: Layer<S>,
    B: Layer<S>,
{
    type Service = Either<A::Service, B::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        match self {
            Either::Left(a) => Either::Left(a.layer(inner)),
            Either::Right(b) => Either::Right(b.layer(inner)),
        }
    }
}

impl<Req, A, B> Service<Req> for Either<A, B>
where
    A: Service<Req>,
    B: Service<Req, Response = A::Response, Error = A::Error>,
{
    type Response = A::Response;
    type Error = A::Error;
    type Permit = Either<A::Permit, B::Permit>;

    async fn ready(&self) -> Result<Self::Permit, Self::Error> {
        match self {
            Either::Left(a) => a.ready().await.map(Either::Left),
            Either::Right(b) => b.ready().await.map(Either::Right),
        }
    }

    fn try_ready(&self) -> TryReady<Self::Permit, Self::Error> {
        match self {
            Either::Left(a) => a.try_ready().map(Either::Left),
            Either::Right(b) => b.try_ready().map(Either::Right),
        }
    }

    /// # Panics
    ///
    /// If the permit comes from the other side (it was not reserved on this service).
    fn call(
        &self,
        permit: Self::Permit,
        req: Req,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> {
        use futures::future::Either as F;
        match (self, permit) {
            (Either::Left(a), Either::Left(p)) => F::Left(a.call(p, req)),
            (Either::Right(b), Either::Right(p)) => F::Right(b.call(p, req)),
            _ => panic!("Either::call: the permit was reserved on the other side"),
        }
    }
}
