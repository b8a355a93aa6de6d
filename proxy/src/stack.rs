//! What every cluster's client stack reads from its config the same way, whichever listener
//! (HTTP, TCP or RESP) it serves: the balancer's settings, and the retry policy with its
//! budget (registered with the cluster's metrics, so `/metrics` shows what is left of it).

use crate::config::{self, Cluster};
use crate::metrics::ClusterMetrics;
use sheave_middleware::balance::{Backoff, BalanceBuilder, Ejection, PeakEwma};
use sheave_middleware::retry::{Budget, BudgetConfig, RetryConfig};
use std::rc::Rc;
use std::time::Duration;

/// `builder` with the cluster's reconnect backoff, empty-set wait, ejection and policy.
pub(crate) fn balancer<C>(cluster: &Cluster, builder: BalanceBuilder<C>) -> BalanceBuilder<C> {
    let e = &cluster.ejection;
    let builder = builder
        .reconnect(Backoff::exponential(
            Duration::from_millis(10),
            Duration::from_secs(1),
        ))
        .empty_wait(cluster.connect_timeout);
    let builder = match e.consecutive_failures {
        0 => builder.without_ejection(),
        n => builder.ejection(Ejection {
            consecutive_failures: n,
            backoff: Backoff::exponential(e.base, e.max),
            max_share: e.max_share,
        }),
    };
    match cluster.policy {
        config::Policy::RoundRobin => builder.round_robin(),
        _ => builder.peak_ewma(PeakEwma {
            decay: Duration::from_secs(1),
            ..PeakEwma::default()
        }),
    }
}

/// The cluster's retry policy and a fresh budget for it, registered with `metrics`.
pub(crate) fn retry(cluster: &Cluster, metrics: &ClusterMetrics) -> (RetryConfig, Rc<Budget>) {
    let r = &cluster.retry;
    let retry = RetryConfig::new()
        .max_attempts(r.max_attempts)
        .backoff(Backoff::exponential(r.backoff, r.max_backoff))
        .budget(
            BudgetConfig::new()
                .ratio(r.budget_ratio)
                .min_per_second(r.budget_min_per_second),
        );
    let budget = Rc::new(Budget::new(retry.get_budget()));
    metrics.add_budget(budget.clone());
    (retry, budget)
}
