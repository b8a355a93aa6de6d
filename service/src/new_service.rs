//! [`NewService`]: a factory of services, one per target.
//!
//! A server makes a service per connection (the target is the connection's info); a client
//! makes one per endpoint (the target is an address). Any
//! `Fn(Target) -> impl Future<Output = Result<S, E>>` is a `NewService`; [`Shared`] turns a
//! cloneable service into one.
//!
//! # Example: one `Send + Sync` factory, a `!Send` service per thread
//!
//! The factory is shared by every thread; each thread makes its own service, which can hold
//! an `Rc` because it never leaves that thread.
//!
//! ```
//! use sheave_service::{service_fn, NewService, ServiceExt};
//! use std::{cell::Cell, convert::Infallible, rc::Rc};
//!
//! // Counts the requests of its thread; `Rc<Cell<_>>` needs no atomics and no lock.
//! let factory = |thread: usize| async move {
//!     let seen = Rc::new(Cell::new(0u32));
//!     Ok::<_, Infallible>(service_fn(move |req: u32| {
//!         let seen = Rc::clone(&seen);
//!         async move {
//!             seen.set(seen.get() + 1);
//!             Ok::<_, Infallible>((thread, req, seen.get()))
//!         }
//!     }))
//! };
//!
//! fn assert_send_sync<T: Send + Sync>(_: &T) {}
//! assert_send_sync(&factory);
//!
//! std::thread::scope(|scope| {
//!     for thread in 0..2 {
//!         let factory = &factory;
//!         scope.spawn(move || {
//!             futures::executor::block_on(async {
//!                 let svc = factory.new_service(thread).await.unwrap();
//!                 assert_eq!(svc.oneshot(7).await, Ok((thread, 7, 1)));
//!                 assert_eq!(svc.oneshot(8).await, Ok((thread, 8, 2)));
//!             })
//!         });
//!     }
//! });
//! ```
//!
//! Such a service is indeed thread-local:
//!
//! ```compile_fail
//! use sheave_service::service_fn;
//! use std::{convert::Infallible, rc::Rc};
//!
//! let rc = Rc::new(());
//! let svc = service_fn(move |req: u32| {
//!     let _rc = Rc::clone(&rc);
//!     async move { Ok::<_, Infallible>(req) }
//! });
//! fn assert_send<T: Send>(_: T) {}
//! assert_send(svc);
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::ready;

/// Makes a service for each target.
///
/// There are no forwarding impls for `&N`, `Rc<N>` or `Arc<N>`: `&F` is itself a closure
/// when `F` is, so they would overlap the closure impl. Share a factory with a closure
/// instead: `move |t| factory.new_service(t)`.
pub trait NewService<Target> {
    /// The service made.
    type Service;
    /// The error when a service cannot be made.
    type Error;

    /// Makes a service for `target`.
    fn new_service(
        &self,
        target: Target,
    ) -> impl Future<Output = Result<Self::Service, Self::Error>>;
}

impl<F, T, Fut, S, E> NewService<T> for F
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<S, E>>,
{
    type Service = S;
    type Error = E;

    fn new_service(&self, target: T) -> impl Future<Output = Result<S, E>> {
        self(target)
    }
}

/// A [`NewService`] that hands out clones of one service, ignoring the target.
///
/// Why a wrapper rather than `impl<S: Service<Req> + Clone> NewService<T> for S`: such a
/// blanket impl would overlap the closure impl above (a closure can be `Clone` and a
/// `Service`), and its `Req` would appear in no part of the impl header, which Rust rejects.
/// Wrapping makes the intent explicit instead.
///
/// ```
/// use sheave_service::{service_fn, shared, NewService, ServiceExt};
/// use std::convert::Infallible;
///
/// let factory = shared(service_fn(|n: u32| async move { Ok::<_, Infallible>(n + 1) }));
/// # futures::executor::block_on(async {
/// let svc = factory.new_service("any target").await.unwrap();
/// assert_eq!(svc.oneshot(1).await, Ok(2));
/// # });
/// ```
#[derive(Clone, Copy, Default)]
pub struct Shared<S> {
    service: S,
}

/// A [`NewService`] cloning `service` for every target; see [`Shared`].
pub fn shared<S: Clone>(service: S) -> Shared<S> {
    Shared::new(service)
}

impl<S> Shared<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> Self {
        Shared { service }
    }

    /// The service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }

    /// The service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.service
    }

    /// The service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.service
    }
}

impl<S: Clone, T> NewService<T> for Shared<S> {
    type Service = S;
    type Error = Infallible;

    fn new_service(&self, _target: T) -> impl Future<Output = Result<S, Infallible>> {
        ready(Ok(self.service.clone()))
    }
}

impl<S: fmt::Debug> fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("service", &self.service)
            .finish()
    }
}
