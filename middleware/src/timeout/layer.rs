//! [`TimeoutLayer`].

use std::time::Duration;

use sheave_service::Layer;

use super::Timeout;

/// Wraps services in a [`Timeout`].
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// Each request gets at most `timeout`, from readiness to response.
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer { timeout }
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::new(inner, self.timeout)
    }
}
