//! [`service_fn`]: a [`Service`] from an async closure.
//!
//! The service is always ready: its permit is `()`, `ready` resolves at once and
//! `try_ready` answers `Ready` without polling anything.
//!
//! # Example
//!
//! ```
//! use sheave_service::{service_fn, ServiceExt};
//! use std::convert::Infallible;
//!
//! let greet = service_fn(|name: String| async move { Ok::<_, Infallible>(format!("hello {name}")) });
//! # futures::executor::block_on(async {
//! assert_eq!(greet.oneshot("sheave".to_string()).await.unwrap(), "hello sheave");
//! # });
//! ```

use std::fmt;

use crate::service::{Service, TryReady};

/// A service made from a closure; see [`service_fn`].
#[derive(Clone, Copy)]
pub struct ServiceFn<F> {
    f: F,
}

/// A service from `f: Fn(Req) -> impl Future<Output = Result<Res, E>>`.
pub fn service_fn<F>(f: F) -> ServiceFn<F> {
    ServiceFn { f }
}

impl<F> ServiceFn<F> {
    /// The closure.
    pub fn get_ref(&self) -> &F {
        &self.f
    }

    /// The closure, mutably.
    pub fn get_mut(&mut self) -> &mut F {
        &mut self.f
    }

    /// The closure, consuming the service.
    pub fn into_inner(self) -> F {
        self.f
    }
}

impl<F, Req, Fut, Res, E> Service<Req> for ServiceFn<F>
where
    F: Fn(Req) -> Fut,
    Fut: Future<Output = Result<Res, E>>,
{
    type Response = Res;
    type Error = E;
    type Permit = ();

    fn ready(&self) -> impl Future<Output = Result<(), E>> {
        std::future::ready(Ok(()))
    }

    fn try_ready(&self) -> TryReady<(), E> {
        TryReady::Ready(())
    }

    fn call(&self, _permit: (), req: Req) -> impl Future<Output = Result<Res, E>> {
        (self.f)(req)
    }
}

impl<F> fmt::Debug for ServiceFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceFn")
            .field("f", &format_args!("{}", std::any::type_name::<F>()))
            .finish()
    }
}
