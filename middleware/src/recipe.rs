//! A recipe: writing your own middleware.
//!
//! A middleware is a [`Service`] that wraps another. The trait makes most of it an ordinary
//! `async fn`; five rules make it a good citizen of a stack. The example below follows all
//! of them: a layer that counts the calls an endpoint finished, failed, or saw given up.
//!
//! 1. **Forward `try_ready`.** The default `try_ready` builds your `ready()` future and
//!    polls it once; the inner service's `try_ready` answers without a future. Callers ask
//!    `try_ready` first on every request (`oneshot`, the balancer, load shedding), so a
//!    middleware that leaves the default costs 15–20 ns per call in a stack, and hides
//!    whether the inner service is *busy* or *closed* from whoever asks.
//! 2. **Forward `in_flight`.** A balancer reads it as the endpoint's load; a pipelined
//!    connection counts calls whose callers gave up there. The default (`None`) makes the
//!    balancer fall back on counting its own calls.
//! 3. **Keep the permit's meaning.** A permit is capacity reserved by `ready`; dropping it
//!    unused must give the capacity back. Wrap the inner permit in yours (or pass it
//!    through) and let its `Drop` do the giving back — never release capacity in `call`
//!    only, because a caller may drop the permit instead of calling.
//! 4. **Count a cancelled call.** The caller may drop the `call` future at any `.await` (a
//!    timeout, a hedge, a `select`). Whatever your layer counts when a call ends, count
//!    it in a guard's `Drop` too, or a hung backend whose callers all give up looks idle:
//!    the balancer judges a dropped call as the classifier judges a timeout.
//! 5. **Follow the readiness rule** stated on [`Service`]: a readiness error of kind
//!    `Closed` means closed for good, any other kind means refusing for now. Return
//!    `Closed` only when the inner service is gone.
//!
//! ```
//! use sheave_service::{Error, Layer, Service, ServiceExt, TryReady, service_fn};
//! use std::cell::Cell;
//! use std::rc::Rc;
//!
//! /// What a [`Counted`] saw.
//! #[derive(Debug, Default)]
//! struct Counts {
//!     ok: Cell<u64>,
//!     failed: Cell<u64>,
//!     given_up: Cell<u64>,
//! }
//!
//! struct Counted<S> {
//!     inner: S,
//!     counts: Rc<Counts>,
//! }
//!
//! /// Counts the call as given up unless it was settled (rule 4).
//! struct Settle<'a> {
//!     counts: &'a Counts,
//!     settled: bool,
//! }
//!
//! impl Drop for Settle<'_> {
//!     fn drop(&mut self) {
//!         if !self.settled {
//!             self.counts.given_up.set(self.counts.given_up.get() + 1);
//!         }
//!     }
//! }
//!
//! impl<S: Service<Req>, Req> Service<Req> for Counted<S> {
//!     type Response = S::Response;
//!     type Error = S::Error;
//!     // Rule 3: the inner permit as it is; its `Drop` gives the capacity back.
//!     type Permit = S::Permit;
//!
//!     async fn ready(&self) -> Result<S::Permit, S::Error> {
//!         self.inner.ready().await
//!     }
//!
//!     // Rule 1.
//!     fn try_ready(&self) -> TryReady<S::Permit, S::Error> {
//!         self.inner.try_ready()
//!     }
//!
//!     // Rule 2.
//!     fn in_flight(&self) -> Option<usize> {
//!         self.inner.in_flight()
//!     }
//!
//!     async fn call(&self, permit: S::Permit, req: Req) -> Result<S::Response, S::Error> {
//!         let mut settle = Settle { counts: &self.counts, settled: false };
//!         let result = self.inner.call(permit, req).await;
//!         settle.settled = true;
//!         let n = if result.is_ok() { &self.counts.ok } else { &self.counts.failed };
//!         n.set(n.get() + 1);
//!         result
//!     }
//! }
//!
//! /// The layer, so the builder can stack it.
//! struct CountedLayer(Rc<Counts>);
//!
//! impl<S> Layer<S> for CountedLayer {
//!     type Service = Counted<S>;
//!     fn layer(&self, inner: S) -> Counted<S> {
//!         Counted { inner, counts: self.0.clone() }
//!     }
//! }
//!
//! let counts = Rc::new(Counts::default());
//! let never = service_fn(|_: ()| std::future::pending::<Result<(), Error>>());
//! let svc = CountedLayer(counts.clone()).layer(never);
//!
//! let rt = sheave_core::Runtime::builder().paused_clock().build().unwrap();
//! rt.block_on(async {
//!     let call = svc.oneshot(());
//!     let gave_up = sheave_core::time::timeout(std::time::Duration::from_millis(10), call).await;
//!     assert!(gave_up.is_err());
//! });
//! assert_eq!(counts.given_up.get(), 1, "a call dropped half-way still counts");
//! ```
//!
//! Name it `Name`/`NameLayer`, give both `new`, `get_ref`/`get_mut`/`into_inner`, a `Debug`
//! that shows the configuration, and say in the module docs what the layer guarantees — the
//! middleware in this crate are the examples to copy.

#[cfg(doc)]
use sheave_service::Service;
