//! [`BalanceBuilder`]: a [`Balance`]'s configuration, one setter at a time.

use super::shared::Shared;
use super::{Backoff, Balance, BalanceConfig, Ejection, PeakEwma, Policy, WhenBusy};
use crate::discover::Discover;
use sheave_service::classify::DefaultClassifier;
use sheave_service::{Error, NewService};
use std::fmt;
use std::hash::Hash;
use std::rc::Rc;
use std::time::Duration;

/// Builds a [`Balance`]; from [`Balance::builder`].
#[derive(Debug, Clone)]
pub struct BalanceBuilder<C = DefaultClassifier> {
    pub(super) config: BalanceConfig,
    pub(super) classifier: C,
}

impl<C> BalanceBuilder<C> {
    /// Sets the whole configuration.
    pub fn config(mut self, config: BalanceConfig) -> Self {
        self.config = config;
        self
    }

    /// p2c over pending requests.
    pub fn p2c_pending(mut self) -> Self {
        self.config.policy = Policy::P2cPending;
        self
    }

    /// p2c over peak-EWMA latency, with these parameters.
    pub fn peak_ewma(mut self, params: PeakEwma) -> Self {
        self.config.policy = Policy::P2cPeakEwma(params);
        self
    }

    /// Round robin.
    pub fn round_robin(mut self) -> Self {
        self.config.policy = Policy::RoundRobin;
        self
    }

    /// What `ready()` does when every pick is busy.
    pub fn when_busy(mut self, when: WhenBusy) -> Self {
        self.config.when_busy = when;
        self
    }

    /// How long `ready()` waits for a first endpoint.
    pub fn empty_wait(mut self, wait: Duration) -> Self {
        self.config.empty_wait = wait;
        self
    }

    /// Reconnect backoff.
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.config.reconnect = backoff;
        self
    }

    /// Outlier ejection parameters.
    pub fn ejection(mut self, ejection: Ejection) -> Self {
        self.config.ejection = Some(ejection);
        self
    }

    /// Never eject endpoints.
    pub fn without_ejection(mut self) -> Self {
        self.config.ejection = None;
        self
    }

    /// At most `n` `ready()` calls wait while every endpoint is full; see
    /// [`BalanceConfig::max_waiters`].
    pub fn max_waiters(mut self, n: usize) -> Self {
        self.config.max_waiters = n;
        self
    }

    /// Seeds the random picks (reproducible tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Judges outcomes with `classifier` instead of the default.
    pub fn classifier<C2>(self, classifier: C2) -> BalanceBuilder<C2> {
        BalanceBuilder {
            config: self.config,
            classifier,
        }
    }

    /// Starts the balancer: spawns its background task on this runtime thread.
    ///
    /// # Panics
    /// Outside a runtime thread.
    pub fn build<D, N, K, T>(self, discover: D, connector: N) -> Balance<K, N::Service, C>
    where
        D: Discover<Key = K, Target = T> + 'static,
        N: NewService<T> + 'static,
        N::Error: Into<Error>,
        N::Service: 'static,
        K: Clone + Eq + Hash + fmt::Debug + 'static,
        T: Clone + 'static,
    {
        let shared = Rc::new(Shared::new(self.config));
        let driver = sheave_core::spawn(super::driver::drive(discover, connector, shared.clone()));
        Balance {
            shared,
            classifier: self.classifier,
            driver,
        }
    }
}
