//! Type erasure: [`BoxService`], [`BoxLocalService`], [`BoxNewService`] and [`BoxLayer`].
//!
//! Deep generic stacks cost compile time; erase them at boundaries (a client handed to user
//! code, a router's routes). The cost is **one allocation per call when the inner permit is
//! zero-sized, two when it is not**, and only there:
//!
//! * `ready` first asks the inner service's `try_ready`, which allocates nothing; the
//!   permit is erased as a `Box<dyn Any>`: a box of a zero-sized permit (such as `()` or a
//!   `service_fn`'s) does not allocate, a box of any other permit (a concurrency limit's
//!   slot, a connection's reservation) is one allocation. Only when `try_ready` says `Busy`
//!   is the waiting `ready` future boxed too (one more, on that slow path).
//! * `call` boxes the inner call future: one allocation.
//!
//! [`BoxService`] is `Send + Sync` and wraps `Send + Sync` services, so it can be built on
//! one thread and shared with others. Its futures are not `Send`: stable Rust cannot yet
//! require a generic service's `async fn` futures to be `Send` (that needs return-type
//! notation), and sheave runs a request's future on the thread that started it.
//! [`BoxLocalService`] wraps any service, `Rc` inside included.
//!
//! # Example
//!
//! ```
//! use sheave_service::{service_fn, BoxService, Error, ServiceExt};
//!
//! fn make(offset: u32) -> BoxService<u32, u32, Error> {
//!     service_fn(move |n: u32| async move { Ok::<_, Error>(n + offset) })
//!         .map_response(|n| n * 2)
//!         .boxed()
//! }
//!
//! let services = vec![make(1), make(2)];
//! # futures::executor::block_on(async {
//! assert_eq!(services[1].oneshot(1).await.unwrap(), 6);
//! # });
//! ```

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use crate::layer::Layer;
use crate::new_service::NewService;
use crate::service::{Service, TryReady};

/// A boxed future borrowing the service it came from.
type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The permit of a boxed service: the inner permit, type-erased.
///
/// # Panics
///
/// Spending it on a boxed service whose inner permit type differs panics.
pub struct BoxPermit(Box<dyn Any>);

impl fmt::Debug for BoxPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxPermit")
    }
}

/// The dyn-compatible mirror of [`Service`].
trait DynService<Req, Res, E> {
    fn try_ready_dyn(&self) -> TryReady<BoxPermit, E>;
    fn in_flight_dyn(&self) -> Option<usize>;
    fn ready_dyn<'a>(&'a self) -> LocalBoxFuture<'a, Result<BoxPermit, E>>
    where
        Req: 'a;
    fn call_dyn<'a>(&'a self, permit: BoxPermit, req: Req) -> LocalBoxFuture<'a, Result<Res, E>>
    where
        Req: 'a;
}

impl<S, Req> DynService<Req, S::Response, S::Error> for S
where
    S: Service<Req>,
    S::Permit: 'static,
{
    fn try_ready_dyn(&self) -> TryReady<BoxPermit, S::Error> {
        self.try_ready().map(erase)
    }

    fn in_flight_dyn(&self) -> Option<usize> {
        self.in_flight()
    }

    fn ready_dyn<'a>(&'a self) -> LocalBoxFuture<'a, Result<BoxPermit, S::Error>>
    where
        Req: 'a,
    {
        Box::pin(async move { self.ready().await.map(erase) })
    }

    fn call_dyn<'a>(
        &'a self,
        permit: BoxPermit,
        req: Req,
    ) -> LocalBoxFuture<'a, Result<S::Response, S::Error>>
    where
        Req: 'a,
    {
        let permit = match permit.0.downcast::<S::Permit>() {
            Ok(permit) => *permit,
            Err(_) => panic!("BoxPermit spent on a service it was not reserved on"),
        };
        Box::pin(self.call(permit, req))
    }
}

fn erase<P: 'static>(permit: P) -> BoxPermit {
    BoxPermit(Box::new(permit))
}

async fn ready_erased<'a, Req: 'a, Res, E>(
    svc: &'a (dyn DynService<Req, Res, E> + 'a),
) -> Result<BoxPermit, E> {
    match svc.try_ready_dyn() {
        TryReady::Ready(permit) => Ok(permit),
        TryReady::Closed(err) => Err(err),
        TryReady::Busy => svc.ready_dyn().await,
    }
}

macro_rules! box_service {
    ($(#[$doc:meta])* $name:ident, $($bounds:tt)*) => {
        $(#[$doc])*
        pub struct $name<Req, Res, E> {
            inner: Box<dyn DynService<Req, Res, E> $($bounds)*>,
        }

        impl<Req, Res, E> $name<Req, Res, E> {
            /// Erases the type of `service`.
            pub fn new<S>(service: S) -> Self
            where
                S: Service<Req, Response = Res, Error = E> $($bounds)* + 'static,
                S::Permit: 'static,
            {
                $name { inner: Box::new(service) }
            }
        }

        impl<Req, Res, E> Service<Req> for $name<Req, Res, E> {
            type Response = Res;
            type Error = E;
            type Permit = BoxPermit;

            fn ready(&self) -> impl Future<Output = Result<BoxPermit, E>> {
                ready_erased(&*self.inner)
            }

            fn try_ready(&self) -> TryReady<BoxPermit, E> {
                self.inner.try_ready_dyn()
            }

            fn in_flight(&self) -> Option<usize> {
                self.inner.in_flight_dyn()
            }

            fn call(&self, permit: BoxPermit, req: Req) -> impl Future<Output = Result<Res, E>> {
                self.inner.call_dyn(permit, req)
            }
        }

        impl<Req, Res, E> fmt::Debug for $name<Req, Res, E> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    };
}

box_service!(
    /// A type-erased `Send + Sync` service; see the [module docs](self).
    BoxService,
    + Send + Sync
);

box_service!(
    /// A type-erased service that may be `!Send` (an `Rc` inside); see the
    /// [module docs](self).
    BoxLocalService,
);

/// The dyn-compatible mirror of [`NewService`].
trait DynNewService<T, Req, Res, E> {
    fn new_service_dyn<'a>(
        &'a self,
        target: T,
    ) -> LocalBoxFuture<'a, Result<BoxLocalService<Req, Res, E>, E>>
    where
        T: 'a;
}

impl<N, T, Req, Res, E> DynNewService<T, Req, Res, E> for N
where
    N: NewService<T>,
    N::Error: Into<E>,
    N::Service: Service<Req, Response = Res, Error = E> + 'static,
    <N::Service as Service<Req>>::Permit: 'static,
{
    fn new_service_dyn<'a>(
        &'a self,
        target: T,
    ) -> LocalBoxFuture<'a, Result<BoxLocalService<Req, Res, E>, E>>
    where
        T: 'a,
    {
        let fut = self.new_service(target);
        Box::pin(async move {
            match fut.await {
                Ok(svc) => Ok(BoxLocalService::new(svc)),
                Err(err) => Err(err.into()),
            }
        })
    }
}

/// A type-erased, `Send + Sync` [`NewService`] making [`BoxLocalService`]s.
///
/// The factory is shared by every thread; each service it makes lives on the thread that
/// asked for it (a connection's thread), so it may hold `Rc`s. One allocation for the
/// `new_service` future, one for the service.
///
/// ```
/// use sheave_service::{service_fn, BoxNewService, Error, NewService, ServiceExt};
///
/// let factory: BoxNewService<u32, u32, u32, Error> = BoxNewService::new(|offset: u32| async move {
///     Ok::<_, Error>(service_fn(move |n: u32| async move { Ok::<_, Error>(n + offset) }))
/// });
/// # futures::executor::block_on(async {
/// let svc = factory.new_service(10).await?;
/// assert_eq!(svc.oneshot(1).await?, 11);
/// # Ok::<_, Error>(()) }).unwrap();
/// ```
pub struct BoxNewService<T, Req, Res, E> {
    inner: Box<dyn DynNewService<T, Req, Res, E> + Send + Sync>,
}

impl<T, Req, Res, E> BoxNewService<T, Req, Res, E> {
    /// Erases the type of `new_service`.
    pub fn new<N>(new_service: N) -> Self
    where
        N: NewService<T> + Send + Sync + 'static,
        N::Error: Into<E>,
        N::Service: Service<Req, Response = Res, Error = E> + 'static,
        <N::Service as Service<Req>>::Permit: 'static,
    {
        BoxNewService {
            inner: Box::new(new_service),
        }
    }
}

impl<T, Req, Res, E> NewService<T> for BoxNewService<T, Req, Res, E> {
    type Service = BoxLocalService<Req, Res, E>;
    type Error = E;

    fn new_service(&self, target: T) -> impl Future<Output = Result<Self::Service, E>> {
        self.inner.new_service_dyn(target)
    }
}

impl<T, Req, Res, E> fmt::Debug for BoxNewService<T, Req, Res, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxNewService").finish_non_exhaustive()
    }
}

/// A type-erased layer producing [`BoxService`]s: the boundary where a deep generic stack
/// stops growing its type. Cheap to clone.
///
/// ```
/// use sheave_service::{BoxLayer, Error, MapResponseLayer, ServiceBuilder, ServiceExt};
///
/// let double = BoxLayer::new(MapResponseLayer::new(|n: u32| n * 2));
/// let svc = ServiceBuilder::new()
///     .layer(double)
///     .service_fn(|n: u32| async move { Ok::<_, Error>(n + 1) });
/// # futures::executor::block_on(async {
/// assert_eq!(svc.oneshot(1).await?, 4);
/// # Ok::<_, Error>(()) }).unwrap();
/// ```
pub struct BoxLayer<S, Req, Res, E> {
    layer: Arc<dyn Fn(S) -> BoxService<Req, Res, E> + Send + Sync>,
}

impl<S, Req, Res, E> BoxLayer<S, Req, Res, E> {
    /// Erases the type of `layer` and of the services it makes.
    pub fn new<L>(layer: L) -> Self
    where
        L: Layer<S> + Send + Sync + 'static,
        L::Service: Service<Req, Response = Res, Error = E> + Send + Sync + 'static,
        <L::Service as Service<Req>>::Permit: 'static,
    {
        BoxLayer {
            layer: Arc::new(move |inner| BoxService::new(layer.layer(inner))),
        }
    }
}

impl<S, Req, Res, E> Layer<S> for BoxLayer<S, Req, Res, E> {
    type Service = BoxService<Req, Res, E>;

    fn layer(&self, inner: S) -> Self::Service {
        (self.layer)(inner)
    }
}

impl<S, Req, Res, E> Clone for BoxLayer<S, Req, Res, E> {
    fn clone(&self) -> Self {
        BoxLayer {
            layer: Arc::clone(&self.layer),
        }
    }
}

impl<S, Req, Res, E> fmt::Debug for BoxLayer<S, Req, Res, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxLayer").finish_non_exhaustive()
    }
}
