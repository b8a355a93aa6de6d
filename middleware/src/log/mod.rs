//! [`Log`]: one [`log`] record per request — its name, its outcome, its latency.
//!
//! # Guarantees
//!
//! * **One record per request that completes**, at the configured level and target
//!   (default target `sheave_middleware::log`): `"{name}: ok in {latency:?}"` or
//!   `"{name}: {error kind} in {latency:?}"`. A request whose future is dropped (cancelled by
//!   an outer timeout, a caller that went away) logs `"{name}: canceled after {latency:?}"`.
//! * **The name** comes from a closure over `&Req`, called once per request, before the call.
//! * **Free when off**: `log_enabled!` is checked once per call, first; when the level is
//!   disabled the closure is not called, the clock is not read, and the call goes straight
//!   through.
//! * Latency is read from [`sheave_core::time::now`] (a real clock read when enabled: this is
//!   for people, and must not lag like the cached loop time).
//!
//! Responses and errors pass through untouched (errors converted into
//! [`sheave_service::Error`]).
//!
//! # Example
//!
//! ```
//! use log::Level;
//! use sheave_middleware::LogLayer;
//! use sheave_service::{service_fn, Error, Layer, ServiceExt};
//!
//! let layer = LogLayer::new(Level::Debug, |key: &String| format!("GET {key}"));
//! let svc = layer.layer(service_fn(|key: String| async move { Ok::<_, Error>(key.len()) }));
//! // Logs e.g. "GET answer: ok in 1.2µs" at debug level, if a logger has it enabled.
//! let rt = sheave_core::Runtime::new().unwrap();
//! assert_eq!(rt.block_on(svc.oneshot("answer".to_string())).unwrap(), 6);
//! ```

mod layer;

pub use layer::LogLayer;

use std::fmt::{self, Display};
use std::time::Instant;

use log::Level;
use sheave_core::time::now;
use sheave_service::{Error, Service, TryReady};

/// The default target of the records.
pub const TARGET: &str = "sheave_middleware::log";

/// Logs each request; see the [module docs](self).
#[derive(Clone)]
pub struct Log<S, F> {
    inner: S,
    name: F,
    level: Level,
    target: &'static str,
}

impl<S, F> Log<S, F> {
    /// Wraps `inner`: one record per request at `level`, named by `name`.
    pub fn new(inner: S, level: Level, name: F) -> Self {
        Log {
            inner,
            name,
            level,
            target: TARGET,
        }
    }

    /// Logs under `target` instead of [`TARGET`].
    pub fn with_target(mut self, target: &'static str) -> Self {
        self.target = target;
        self
    }

    /// The level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The target.
    pub fn target(&self) -> &'static str {
        self.target
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

impl<S: fmt::Debug, F> fmt::Debug for Log<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("level", &self.level)
            .field("target", &self.target)
            .field("name", &crate::TypeName::of(&self.name))
            .field("inner", &self.inner)
            .finish()
    }
}

/// A request being logged: writes the `canceled` record if dropped before it finished.
struct Pending<'a, D: Display> {
    name: D,
    start: Instant,
    level: Level,
    target: &'a str,
    done: bool,
}

impl<D: Display> Pending<'_, D> {
    fn finish(mut self, outcome: Result<(), &Error>) {
        self.done = true;
        let (name, latency) = (&self.name, now().saturating_duration_since(self.start));
        match outcome {
            Ok(()) => log::log!(target: self.target, self.level, "{name}: ok in {latency:?}"),
            Err(err) => {
                let kind = err.kind();
                log::log!(target: self.target, self.level, "{name}: {kind} in {latency:?}");
            }
        }
    }
}

impl<D: Display> Drop for Pending<'_, D> {
    fn drop(&mut self) {
        if !self.done {
            let (name, latency) = (&self.name, now().saturating_duration_since(self.start));
            log::log!(target: self.target, self.level, "{name}: canceled after {latency:?}");
        }
    }
}

impl<S, F, D, Req> Service<Req> for Log<S, F>
where
    S: Service<Req>,
    S::Error: Into<Error>,
    F: Fn(&Req) -> D,
    D: Display,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = S::Permit;

    fn ready(&self) -> impl Future<Output = Result<S::Permit, Error>> {
        crate::future::CallFuture::new(self.inner.ready())
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    fn try_ready(&self) -> TryReady<S::Permit, Error> {
        self.inner.try_ready().map_err(Into::into)
    }

    async fn call(&self, permit: S::Permit, req: Req) -> Result<S::Response, Error> {
        let pending = log::log_enabled!(target: self.target, self.level).then(|| Pending {
            name: (self.name)(&req),
            start: now(),
            level: self.level,
            target: self.target,
            done: false,
        });
        let out = self.inner.call(permit, req).await.map_err(Into::into);
        if let Some(pending) = pending {
            pending.finish(out.as_ref().map(|_| ()));
        }
        out
    }
}
