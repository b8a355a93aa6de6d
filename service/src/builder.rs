//! [`ServiceBuilder`]: compose layers in reading order.
//!
//! **Order:** the first layer added is the outermost. It sees each request first and each
//! response last:
//!
//! ```text
//! ServiceBuilder::new().layer(a).layer(b).service(s)   ==   a.layer(b.layer(s))
//! request  ──▶ a ──▶ b ──▶ s
//! response ◀── a ◀── b ◀── s
//! ```
//!
//! `Debug` prints the layers flat, outermost first. Other sheave crates add shortcuts
//! (`timeout`, `retry`, ...) through their own extension traits on [`ServiceBuilder`], built
//! on the generic [`ServiceBuilder::layer`].
//!
//! # Example
//!
//! ```
//! use sheave_service::{service_fn, ServiceBuilder, ServiceExt};
//! use std::convert::Infallible;
//!
//! let svc = ServiceBuilder::new()
//!     .map_request(|s: &str| s.len())      // outermost: sees the request first
//!     .map_response(|n: usize| n * 10)     // sees the response before map_request's caller
//!     .service(service_fn(|n: usize| async move { Ok::<_, Infallible>(n + 1) }));
//!
//! # futures::executor::block_on(async {
//! assert_eq!(svc.oneshot("abc").await, Ok(40));
//! # });
//! ```

use std::fmt;

use crate::combinators::{
    AndThenLayer, FilterLayer, MapErrLayer, MapRequestLayer, MapResponseLayer, ThenLayer,
};
use crate::either::{Either, option_layer};
use crate::layer::{Identity, Layer, LayerFn, Stack, is_identity, layer_fn};
use crate::service_fn::{ServiceFn, service_fn};

/// Composes layers, first added outermost; see the [module docs](self).
#[derive(Clone, Default)]
pub struct ServiceBuilder<L> {
    layer: L,
}

impl ServiceBuilder<Identity> {
    /// An empty builder.
    pub fn new() -> Self {
        ServiceBuilder { layer: Identity }
    }
}

impl<L> ServiceBuilder<L> {
    /// Adds `layer` inside the layers added so far.
    pub fn layer<T>(self, layer: T) -> ServiceBuilder<Stack<T, L>> {
        ServiceBuilder {
            layer: Stack::new(layer, self.layer),
        }
    }

    /// Adds `layer` if it is `Some`; the service type becomes an [`Either`].
    pub fn option_layer<T>(
        self,
        layer: Option<T>,
    ) -> ServiceBuilder<Stack<Either<T, Identity>, L>> {
        self.layer(option_layer(layer))
    }

    /// Adds a layer made from a closure; see [`layer_fn`].
    pub fn layer_fn<F>(self, f: F) -> ServiceBuilder<Stack<LayerFn<F>, L>> {
        self.layer(layer_fn(f))
    }

    /// Adds a [`MapRequest`](crate::combinators::MapRequest) layer.
    pub fn map_request<F>(self, f: F) -> ServiceBuilder<Stack<MapRequestLayer<F>, L>> {
        self.layer(MapRequestLayer::new(f))
    }

    /// Adds a [`MapResponse`](crate::combinators::MapResponse) layer.
    pub fn map_response<F>(self, f: F) -> ServiceBuilder<Stack<MapResponseLayer<F>, L>> {
        self.layer(MapResponseLayer::new(f))
    }

    /// Adds a [`MapErr`](crate::combinators::MapErr) layer.
    pub fn map_err<F>(self, f: F) -> ServiceBuilder<Stack<MapErrLayer<F>, L>> {
        self.layer(MapErrLayer::new(f))
    }

    /// Adds an [`AndThen`](crate::combinators::AndThen) layer.
    pub fn and_then<F>(self, f: F) -> ServiceBuilder<Stack<AndThenLayer<F>, L>> {
        self.layer(AndThenLayer::new(f))
    }

    /// Adds a [`Then`](crate::combinators::Then) layer.
    pub fn then<F>(self, f: F) -> ServiceBuilder<Stack<ThenLayer<F>, L>> {
        self.layer(ThenLayer::new(f))
    }

    /// Adds a [`Filter`](crate::combinators::Filter) layer.
    pub fn filter<F>(self, f: F) -> ServiceBuilder<Stack<FilterLayer<F>, L>> {
        self.layer(FilterLayer::new(f))
    }

    /// The composed layer.
    pub fn get_ref(&self) -> &L {
        &self.layer
    }

    /// The composed layer, consuming the builder.
    pub fn into_inner(self) -> L {
        self.layer
    }

    /// Wraps `service` in all the layers.
    pub fn service<S>(&self, service: S) -> L::Service
    where
        L: Layer<S>,
    {
        self.layer.layer(service)
    }

    /// Wraps [`service_fn(f)`](service_fn) in all the layers.
    pub fn service_fn<F>(&self, f: F) -> L::Service
    where
        L: Layer<ServiceFn<F>>,
    {
        self.service(service_fn(f))
    }
}

impl<S, L: Layer<S>> Layer<S> for ServiceBuilder<L> {
    type Service = L::Service;

    fn layer(&self, inner: S) -> Self::Service {
        self.layer.layer(inner)
    }
}

impl<L: fmt::Debug> fmt::Debug for ServiceBuilder<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceBuilder [")?;
        if !is_identity::<L>() {
            if f.alternate() {
                write!(f, "\n{:#?}\n", self.layer)?;
            } else {
                write!(f, "{:?}", self.layer)?;
            }
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone)]
    struct A;
    #[derive(Debug, Clone)]
    struct B;
    #[derive(Debug, Clone)]
    struct C;

    #[test]
    fn debug_prints_layers_flat_outermost_first() {
        let b = ServiceBuilder::new();
        assert_eq!(format!("{b:?}"), "ServiceBuilder []");
        let b = b.layer(A).layer(B).layer(C);
        assert_eq!(format!("{b:?}"), "ServiceBuilder [A, B, C]");
        assert_eq!(format!("{b:#?}"), "ServiceBuilder [\nA,\nB,\nC\n]");
    }

    #[test]
    fn the_first_layer_added_is_outermost() {
        let b = ServiceBuilder::new()
            .layer_fn(|s: String| s + "a")
            .layer_fn(|s: String| s + "b");
        // `b` wraps the service first, then `a` wraps that.
        assert_eq!(b.service(String::new()), "ba");
    }
}
