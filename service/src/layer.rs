//! [`Layer`]: a function from a service to a service (middleware), and the basic layers
//! [`Identity`], [`Stack`] and [`LayerFn`].
//!
//! A layer is configuration: it holds a middleware's settings and wraps any inner service
//! with them. Layers compose with [`Stack`] (or, more readably, with
//! [`ServiceBuilder`](crate::ServiceBuilder)).
//!
//! # Example
//!
//! ```
//! use sheave_service::{layer_fn, service_fn, Layer, ServiceExt};
//! use std::convert::Infallible;
//!
//! // A layer that adds one to every request before the inner service sees it.
//! let add_one = layer_fn(|inner| ServiceExt::<u32>::map_request(inner, |n: u32| n + 1));
//! let echo = service_fn(|n: u32| async move { Ok::<_, Infallible>(n) });
//! let svc = add_one.layer(echo);
//! # futures::executor::block_on(async {
//! assert_eq!(svc.oneshot(41).await, Ok(42));
//! # });
//! ```

use std::fmt;

/// Wraps an inner service `S` into a new service.
pub trait Layer<S> {
    /// The wrapped service.
    type Service;

    /// Wraps `inner`.
    fn layer(&self, inner: S) -> Self::Service;
}

impl<S, L> Layer<S> for &L
where
    L: Layer<S> + ?Sized,
{
    type Service = L::Service;

    fn layer(&self, inner: S) -> Self::Service {
        (**self).layer(inner)
    }
}

/// The layer that does nothing: `Identity.layer(s)` is `s`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity;

impl Identity {
    /// The identity layer.
    pub fn new() -> Self {
        Identity
    }
}

impl<S> Layer<S> for Identity {
    type Service = S;

    fn layer(&self, inner: S) -> S {
        inner
    }
}

/// Two layers composed: `outer` wraps what `inner` produced.
///
/// `Debug` prints a flat, comma-separated list, outermost first, so a
/// [`ServiceBuilder`](crate::ServiceBuilder) of many layers reads as a list rather than as
/// a nest; an [`Identity`] in the outer position (the builder's seed) is not printed.
#[derive(Clone, Copy, Default)]
pub struct Stack<Inner, Outer> {
    inner: Inner,
    outer: Outer,
}

impl<Inner, Outer> Stack<Inner, Outer> {
    /// Composes `inner` (applied first, closer to the service) and `outer`.
    pub fn new(inner: Inner, outer: Outer) -> Self {
        Stack { inner, outer }
    }

    /// The inner layer.
    pub fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The outer layer.
    pub fn outer(&self) -> &Outer {
        &self.outer
    }

    /// Both layers, `(inner, outer)`.
    pub fn into_parts(self) -> (Inner, Outer) {
        (self.inner, self.outer)
    }
}

impl<S, Inner, Outer> Layer<S> for Stack<Inner, Outer>
where
    Inner: Layer<S>,
    Outer: Layer<Inner::Service>,
{
    type Service = Outer::Service;

    fn layer(&self, service: S) -> Self::Service {
        self.outer.layer(self.inner.layer(service))
    }
}

/// True if `T` is [`Identity`]. Compares type names because `Stack`'s `Debug` must work for
/// any (possibly non-`'static`) layer, which rules out `TypeId`; a false positive would need
/// another type with this exact path.
pub(crate) fn is_identity<T: ?Sized>() -> bool {
    std::any::type_name::<T>() == std::any::type_name::<Identity>()
}

impl<Inner: fmt::Debug, Outer: fmt::Debug> fmt::Debug for Stack<Inner, Outer> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No `debug_struct`: each nested `Stack` would add a level of indentation. Written
        // flat, a stack prints as the list of its layers, outermost first.
        if !is_identity::<Outer>() {
            if f.alternate() {
                writeln!(f, "{:#?},", self.outer)?;
            } else {
                write!(f, "{:?}, ", self.outer)?;
            }
        }
        if f.alternate() {
            write!(f, "{:#?}", self.inner)
        } else {
            write!(f, "{:?}", self.inner)
        }
    }
}

/// A layer made from a closure; see [`layer_fn`].
#[derive(Clone, Copy)]
pub struct LayerFn<F> {
    f: F,
}

/// A layer from a closure `Fn(S) -> Service`.
///
/// ```
/// use sheave_service::{layer_fn, Layer};
///
/// let wrap = layer_fn(|inner: u32| (inner, "wrapped"));
/// assert_eq!(wrap.layer(7), (7, "wrapped"));
/// ```
pub fn layer_fn<F>(f: F) -> LayerFn<F> {
    LayerFn { f }
}

impl<F, S, Out> Layer<S> for LayerFn<F>
where
    F: Fn(S) -> Out,
{
    type Service = Out;

    fn layer(&self, inner: S) -> Out {
        (self.f)(inner)
    }
}

impl<F> fmt::Debug for LayerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerFn")
            .field("f", &format_args!("{}", std::any::type_name::<F>()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct A;
    #[derive(Debug)]
    struct B;

    #[test]
    fn a_stack_applies_inner_first_and_prints_outer_first() {
        let stack = Stack::new(layer_fn(|s: String| s + "i"), layer_fn(|s: String| s + "o"));
        assert_eq!(stack.layer(String::new()), "io");
        let printed = format!("{:?}", Stack::new(B, Stack::new(A, Identity)));
        assert_eq!(printed, "A, B");
    }
}
