//! [`FaultLayer`].

use sheave_service::Layer;

use super::{AllRequests, Fault, FaultConfig};

/// Wraps services in a [`Fault`]; each starts its draws from the configured seed.
#[derive(Debug, Clone, Copy)]
pub struct FaultLayer<P = AllRequests> {
    config: FaultConfig,
    predicate: P,
}

impl FaultLayer {
    /// Faults every request as `config` says.
    pub fn new(config: FaultConfig) -> Self {
        FaultLayer {
            config,
            predicate: AllRequests,
        }
    }
}

impl<P> FaultLayer<P> {
    /// Faults only the requests `predicate` selects.
    pub fn with_predicate<Q>(self, predicate: Q) -> FaultLayer<Q> {
        FaultLayer {
            config: self.config,
            predicate,
        }
    }
}

impl<S, P: Clone> Layer<S> for FaultLayer<P> {
    type Service = Fault<S, P>;

    fn layer(&self, inner: S) -> Fault<S, P> {
        Fault::with_predicate(inner, self.config, self.predicate.clone())
    }
}
