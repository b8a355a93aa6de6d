//! [`ServiceBuilderExt`]: this crate's layers as [`ServiceBuilder`] methods.

use std::time::Duration;

use log::Level;
use sheave_service::{ServiceBuilder, Stack};

use crate::limit::{ConcurrencyLimitLayer, RateConfig, RateLimitLayer};
use crate::log::LogLayer;
use crate::retry::{RetryConfig, RetryLayer};
use crate::shed::LoadShedLayer;
use crate::stats::{StatsConfig, StatsLayer};
use crate::timeout::TimeoutLayer;

/// Adds this crate's layers to a [`ServiceBuilder`], in reading order: each method adds its
/// layer *inside* the ones added before it (the first added sees the request first).
///
/// ```
/// use sheave_middleware::ServiceBuilderExt;
/// use sheave_service::ServiceBuilder;
/// use std::time::Duration;
///
/// let builder = ServiceBuilder::new().timeout(Duration::from_secs(1)).load_shed();
/// assert_eq!(
///     format!("{builder:?}"),
///     "ServiceBuilder [TimeoutLayer { timeout: 1s }, LoadShedLayer]"
/// );
/// ```
pub trait ServiceBuilderExt<L>: Sized {
    /// Adds a [`TimeoutLayer`].
    fn timeout(self, timeout: Duration) -> ServiceBuilder<Stack<TimeoutLayer, L>>;

    /// Adds a [`RetryLayer`] with the default policy; for another, use
    /// `.layer(RetryLayer::new(config).policy(p))`.
    fn retry(self, config: RetryConfig) -> ServiceBuilder<Stack<RetryLayer, L>>;

    /// Adds a [`ConcurrencyLimitLayer`].
    fn concurrency_limit(self, max: usize) -> ServiceBuilder<Stack<ConcurrencyLimitLayer, L>>;

    /// Adds a [`RateLimitLayer`].
    fn rate_limit(self, config: RateConfig) -> ServiceBuilder<Stack<RateLimitLayer, L>>;

    /// Adds a [`LoadShedLayer`].
    fn load_shed(self) -> ServiceBuilder<Stack<LoadShedLayer, L>>;

    /// Adds a [`LogLayer`].
    fn log<F>(self, level: Level, name: F) -> ServiceBuilder<Stack<LogLayer<F>, L>>;

    /// Adds a [`StatsLayer`].
    fn stats(self, config: StatsConfig) -> ServiceBuilder<Stack<StatsLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn timeout(self, timeout: Duration) -> ServiceBuilder<Stack<TimeoutLayer, L>> {
        self.layer(TimeoutLayer::new(timeout))
    }

    fn retry(self, config: RetryConfig) -> ServiceBuilder<Stack<RetryLayer, L>> {
        self.layer(RetryLayer::new(config))
    }

    fn concurrency_limit(self, max: usize) -> ServiceBuilder<Stack<ConcurrencyLimitLayer, L>> {
        self.layer(ConcurrencyLimitLayer::new(max))
    }

    fn rate_limit(self, config: RateConfig) -> ServiceBuilder<Stack<RateLimitLayer, L>> {
        self.layer(RateLimitLayer::new(config))
    }

    fn load_shed(self) -> ServiceBuilder<Stack<LoadShedLayer, L>> {
        self.layer(LoadShedLayer::new())
    }

    fn log<F>(self, level: Level, name: F) -> ServiceBuilder<Stack<LogLayer<F>, L>> {
        self.layer(LogLayer::new(level, name))
    }

    fn stats(self, config: StatsConfig) -> ServiceBuilder<Stack<StatsLayer, L>> {
        self.layer(StatsLayer::new(config))
    }
}
