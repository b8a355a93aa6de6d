//! The sheave Service model: request → response, with explicit readiness.
//!
//! A [`Service`] is an asynchronous function with backpressure. A caller reserves capacity
//! with [`ready`](Service::ready), which returns a *permit*, then spends the permit on one
//! [`call`](Service::call); a permit dropped unused gives its capacity back. Both take
//! `&self`, so one stack serves every request of a connection without clones or locks, and
//! middleware are ordinary `async fn`s.
//!
//! # A short tour
//!
//! ```
//! use sheave_service::{service_fn, Error, Service, ServiceBuilder, ServiceExt};
//!
//! # futures::executor::block_on(async {
//! // 1. A service from a closure.
//! let lookup = service_fn(|key: String| async move {
//!     match key.as_str() {
//!         "answer" => Ok(42u32),
//!         _ => Err(Error::msg(sheave_service::ErrorKind::Service, "no such key")),
//!     }
//! });
//!
//! // 2. Readiness, then a call.
//! let permit = lookup.ready().await?;
//! assert_eq!(lookup.call(permit, "answer".to_string()).await?, 42);
//!
//! // 3. Middleware, in reading order: the first layer sees the request first.
//! let svc = ServiceBuilder::new()
//!     .map_request(|key: &str| key.to_lowercase())
//!     .map_response(|n: u32| n + 1)
//!     .service(lookup);
//! assert_eq!(svc.oneshot("ANSWER").await?, 43);
//!
//! // 4. One error type, classified by kind.
//! let err = svc.oneshot("question").await.unwrap_err();
//! assert!(err.is_service());
//! assert_eq!(err.to_string(), "service error: no such key");
//!
//! // 5. Type erasure at a boundary: one allocation per call for a zero-sized permit like this
//! //    one, two when the permit has a size (see `boxed`).
//! let boxed = svc.boxed();
//! assert_eq!(boxed.oneshot("answer").await?, 43);
//! # Ok::<_, Error>(()) }).unwrap();
//! ```
//!
//! # Where things are
//!
//! * [`Service`], [`TryReady`], [`NewService`], [`Layer`]: the traits.
//! * [`ServiceBuilder`], [`Identity`], [`Stack`], [`layer_fn`], [`option_layer`]: composing.
//! * [`ServiceExt`] and [`combinators`]: `map_request`, `and_then`, `filter`, `call_all`, ...
//! * [`BoxService`], [`BoxLocalService`], [`BoxNewService`], [`BoxLayer`]: erasing types.
//! * [`Error`], [`ErrorKind`], [`classify`]: what failed, and what that means to policies.
//! * [`deadline`]: the timeout primitive, carried by the task.
//! * `mock` (feature `test-util`): a mock service and handle for testing middleware.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

pub mod boxed;
pub mod builder;
pub mod call_all;
pub mod classify;
pub mod combinators;
pub mod deadline;
pub mod either;
pub mod error;
pub mod ext;
pub mod layer;
#[cfg(feature = "test-util")]
pub mod mock;
pub mod new_service;
pub mod service;
pub mod service_fn;

pub use boxed::{BoxLayer, BoxLocalService, BoxNewService, BoxPermit, BoxService};
pub use builder::ServiceBuilder;
pub use call_all::{CallAll, call_all};
pub use combinators::{
    AndThen, AndThenLayer, Filter, FilterLayer, MapErr, MapErrLayer, MapRequest, MapRequestLayer,
    MapResponse, MapResponseLayer, Then, ThenLayer,
};
pub use either::{Either, option_layer};
pub use error::{BoxError, Error, ErrorKind};
pub use ext::ServiceExt;
pub use layer::{Identity, Layer, LayerFn, Stack, layer_fn};
pub use new_service::{NewService, Shared, shared};
pub use service::{Service, TryReady};
pub use service_fn::{ServiceFn, service_fn};
