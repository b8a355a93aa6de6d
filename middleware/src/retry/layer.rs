//! [`RetryLayer`] and [`RetryConfig`].

use std::fmt;

use sheave_service::Layer;

use super::{Backoff, BudgetConfig, Retry, RetryableFailures};

/// The configuration of a [`Retry`]. Defaults (stable): 3 attempts, [`Backoff::default`]
/// (10 ms doubling to 1 s, jitter 0.5), [`BudgetConfig::default`] (Finagle's: 20% plus 10
/// per second over 10 s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    max_attempts: u32,
    backoff: Backoff,
    budget: BudgetConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            backoff: Backoff::default(),
            budget: BudgetConfig::default(),
        }
    }
}

impl RetryConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts per request, the first included (so 1 never retries).
    ///
    /// # Panics
    ///
    /// If `n` is zero.
    pub fn max_attempts(mut self, n: u32) -> Self {
        assert!(n > 0, "a request needs at least one attempt");
        self.max_attempts = n;
        self
    }

    /// The delay before each retry.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The budget each wrapped service gets.
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.budget = budget;
        self
    }

    /// The configured attempts.
    pub fn get_max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The configured backoff.
    pub fn get_backoff(&self) -> Backoff {
        self.backoff
    }

    /// The configured budget.
    pub fn get_budget(&self) -> BudgetConfig {
        self.budget
    }
}

/// Wraps services in a [`Retry`]; each service gets its own budget.
#[derive(Clone)]
pub struct RetryLayer<P = RetryableFailures> {
    policy: P,
    config: RetryConfig,
}

impl RetryLayer {
    /// With the default policy ([`RetryableFailures`]).
    pub fn new(config: RetryConfig) -> Self {
        RetryLayer {
            policy: RetryableFailures::new(),
            config,
        }
    }
}

impl<P> RetryLayer<P> {
    /// Replaces the policy.
    pub fn policy<Q>(self, policy: Q) -> RetryLayer<Q> {
        RetryLayer {
            policy,
            config: self.config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }
}

impl<P: fmt::Debug> fmt::Debug for RetryLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, P: Clone> Layer<S> for RetryLayer<P> {
    type Service = Retry<S, P>;

    fn layer(&self, inner: S) -> Retry<S, P> {
        Retry::with_policy(inner, self.policy.clone(), self.config)
    }
}
