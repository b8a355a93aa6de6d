//! [`StatsLayer`].

use sheave_service::Layer;

use super::{StatsConfig, StatsService};

/// Wraps services in a [`StatsService`]; each gets its own [`Stats`](super::Stats), reached
/// through [`StatsService::stats`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StatsLayer {
    config: StatsConfig,
}

impl StatsLayer {
    /// Fresh stats per wrapped service, sized by `config`.
    pub fn new(config: StatsConfig) -> Self {
        StatsLayer { config }
    }
}

impl<S> Layer<S> for StatsLayer {
    type Service = StatsService<S>;

    fn layer(&self, inner: S) -> StatsService<S> {
        StatsService::new(inner, self.config)
    }
}
