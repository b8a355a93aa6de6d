//! [`LogLayer`].

use std::fmt;

use log::Level;
use sheave_service::Layer;

use super::{Log, TARGET};

/// Wraps services in a [`Log`].
#[derive(Clone)]
pub struct LogLayer<F> {
    name: F,
    level: Level,
    target: &'static str,
}

impl<F> LogLayer<F> {
    /// One record per request at `level`, named by the closure `name: Fn(&Req) -> impl Display`.
    pub fn new(level: Level, name: F) -> Self {
        LogLayer {
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
}

impl<F> fmt::Debug for LogLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogLayer")
            .field("level", &self.level)
            .field("target", &self.target)
            .field("name", &crate::TypeName::of(&self.name))
            .finish()
    }
}

impl<S, F: Clone> Layer<S> for LogLayer<F> {
    type Service = Log<S, F>;

    fn layer(&self, inner: S) -> Log<S, F> {
        Log::new(inner, self.level, self.name.clone()).with_target(self.target)
    }
}
