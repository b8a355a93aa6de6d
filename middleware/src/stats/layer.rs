//! [`StatsLayer`].

use sheave_service::Layer;

use super::{Stats, StatsConfig};

/// Wraps services in a [`Stats`]; each gets its own [`StatsHandle`](super::StatsHandle), reached
/// through [`Stats::stats`].
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
    type Service = Stats<S>;

    fn layer(&self, inner: S) -> Stats<S> {
        Stats::new(inner, self.config)
    }
}
