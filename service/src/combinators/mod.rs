//! The combinators behind [`ServiceExt`](crate::ServiceExt), each a plain struct with its
//! [`Layer`](crate::Layer) twin.
//!
//! Every combinator forwards `try_ready` to the inner service and passes the inner permit
//! through (`Permit = S::Permit`), so wrapping costs no readiness precision and no
//! allocation: the request path is generic all the way down.
//!
//! # Why the inner future is created *inside* each `async` block
//!
//! `async fn call(..) { self.inner.call(permit, req).await }`, not
//! `let call = self.inner.call(permit, req); async move { call.await }`: a future captured as
//! an upvar and then awaited is stored twice in the state machine, so five nested layers
//! grew the call future to 504 bytes (tower's: 24) and cost 229 instructions per call. Built
//! inside the block, the same stack is 120 bytes and 26 instructions — a third of tower's
//! (`cargo bench -p sheave-benches --bench service`).
//!
//! | service | layer | does |
//! |---|---|---|
//! | [`MapRequest`] | [`MapRequestLayer`] | `Fn(R) -> Req` on each request |
//! | [`MapResponse`] | [`MapResponseLayer`] | `Fn(Res) -> R` on each response |
//! | [`MapErr`] | [`MapErrLayer`] | `Fn(E) -> E2` on errors of `ready` and `call` |
//! | [`AndThen`] | [`AndThenLayer`] | async `Fn(Res) -> Result<R, E2>` after success |
//! | [`Then`] | [`ThenLayer`] | async `Fn(Result<Res, E>) -> Result<R, E2>` after any outcome |
//! | [`Filter`] | [`FilterLayer`] | async `Fn(R) -> Result<Req, E>` before the call |
//!
//! # Example
//!
//! ```
//! use sheave_service::{service_fn, Error, ServiceExt};
//!
//! let svc = service_fn(|n: u64| async move { Ok::<_, Error>(n * 2) })
//!     .map_request(|s: &str| s.parse::<u64>().unwrap_or(0))
//!     .and_then(|n| async move { Ok::<_, Error>(n + 1) })
//!     .map_response(|n| n.to_string());
//! # futures::executor::block_on(async {
//! assert_eq!(svc.oneshot("20").await.unwrap(), "41");
//! # });
//! ```

mod and_then;
mod filter;
mod map;

pub use and_then::{AndThen, AndThenLayer, Then, ThenLayer};
pub use filter::{Filter, FilterLayer};
pub use map::{MapErr, MapErrLayer, MapRequest, MapRequestLayer, MapResponse, MapResponseLayer};

/// Defines a combinator struct `{ inner: S, f: F }`, its accessors, its layer, and `Debug`
/// for both (closures print their type name).
macro_rules! combinator {
    ($(#[$doc:meta])* $name:ident, $(#[$ldoc:meta])* $layer:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub struct $name<S, F> {
            inner: S,
            f: F,
        }

        impl<S, F> $name<S, F> {
            /// Wraps `inner` with the closure `f`.
            pub fn new(inner: S, f: F) -> Self {
                $name { inner, f }
            }

            /// The inner service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }

            /// The inner service, mutably.
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }

            /// The inner service, consuming the wrapper.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }

        impl<S: std::fmt::Debug, F> std::fmt::Debug for $name<S, F> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("inner", &self.inner)
                    .field("f", &format_args!("{}", std::any::type_name::<F>()))
                    .finish()
            }
        }

        $(#[$ldoc])*
        #[derive(Clone, Copy)]
        pub struct $layer<F> {
            f: F,
        }

        impl<F> $layer<F> {
            /// A layer that wraps services with the closure `f`.
            pub fn new(f: F) -> Self {
                $layer { f }
            }
        }

        impl<S, F: Clone> crate::Layer<S> for $layer<F> {
            type Service = $name<S, F>;

            fn layer(&self, inner: S) -> Self::Service {
                $name::new(inner, self.f.clone())
            }
        }

        impl<F> std::fmt::Debug for $layer<F> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($layer))
                    .field("f", &format_args!("{}", std::any::type_name::<F>()))
                    .finish()
            }
        }
    };
}

pub(crate) use combinator;
