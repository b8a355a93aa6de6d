//! One endpoint of a balancer: its service, its load and its health, all in `Cell`s (the
//! balancer lives on one thread).

use super::config::{Ejection, PeakEwma, Policy};
use sheave_service::classify::Class;
use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

/// An endpoint: a key, a connected service, and what the balancer knows of it.
pub(crate) struct Endpoint<K, S> {
    pub(crate) key: K,
    pub(crate) svc: S,
    /// Requests sent and not yet answered.
    pending: Cell<u32>,
    /// Peak-EWMA round-trip estimate, nanoseconds, as of `stamp`.
    rtt_ns: Cell<f64>,
    stamp: Cell<Instant>,
    /// Set when discovery removed it or its connection closed: no new requests.
    gone: Cell<bool>,
    /// Failures in a row.
    failures_in_a_row: Cell<u32>,
    /// Ejected until this instant.
    ejected_until: Cell<Option<Instant>>,
    /// Ejections so far (resets on a success).
    ejections: Cell<u32>,
    requests: Cell<u64>,
    failures: Cell<u64>,
}

impl<K: fmt::Debug, S> fmt::Debug for Endpoint<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("key", &self.key)
            .field("pending", &self.pending.get())
            .field("rtt_ns", &self.rtt_ns.get())
            .field("gone", &self.gone.get())
            .field("ejected_until", &self.ejected_until.get())
            .finish()
    }
}

/// What a snapshot of the balancer says about one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStats<K> {
    /// The endpoint's key.
    pub key: K,
    /// Requests in flight now.
    pub pending: u32,
    /// The peak-EWMA round-trip estimate now (decayed to the time of the snapshot).
    pub rtt_estimate: Duration,
    /// Requests sent to it since it connected.
    pub requests: u64,
    /// Of those, how many the classifier called failures.
    pub failures: u64,
    /// Whether it is ejected now.
    pub ejected: bool,
}

impl<K: Clone, S> Endpoint<K, S> {
    pub(crate) fn new(key: K, svc: S, rtt: Duration, now: Instant) -> Self {
        Endpoint {
            key,
            svc,
            pending: Cell::new(0),
            rtt_ns: Cell::new(rtt.as_nanos() as f64),
            stamp: Cell::new(now),
            gone: Cell::new(false),
            failures_in_a_row: Cell::new(0),
            ejected_until: Cell::new(None),
            ejections: Cell::new(0),
            requests: Cell::new(0),
            failures: Cell::new(0),
        }
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.get()
    }

    pub(crate) fn mark_gone(&self) {
        self.gone.set(true);
    }

    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.get().is_some_and(|until| now < until)
    }

    /// The load the policy compares: lower is better.
    pub(crate) fn cost(&self, policy: &Policy, now: Instant) -> f64 {
        let pending = self.pending.get() as f64;
        match policy {
            Policy::P2cPeakEwma(cfg) => self.rtt_estimate(cfg, now) * (pending + 1.0),
            Policy::P2cPending | Policy::RoundRobin => pending,
        }
    }

    /// The round-trip estimate decayed toward zero for the time since the last sample.
    pub(crate) fn rtt_estimate(&self, cfg: &PeakEwma, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.stamp.get()).as_nanos() as f64;
        let tau = cfg.decay.as_nanos().max(1) as f64;
        self.rtt_ns.get() * (-elapsed / tau).exp()
    }

    /// Counts a request as sent.
    pub(crate) fn start(&self) {
        self.pending.set(self.pending.get() + 1);
        self.requests.set(self.requests.get() + 1);
    }

    /// Counts a request as answered (or abandoned) after `rtt`, with the classifier's verdict
    /// (`None`: abandoned before an outcome — no sample, no verdict).
    pub(crate) fn finish(
        &self,
        rtt: Duration,
        verdict: Option<Class>,
        policy: &Policy,
        ejection: Option<&Ejection>,
        can_eject: impl FnOnce() -> bool,
        now: Instant,
    ) {
        self.pending.set(self.pending.get().saturating_sub(1));
        let Some(verdict) = verdict else {
            return;
        };
        let failed = matches!(verdict, Class::Failure { .. });
        if let Policy::P2cPeakEwma(cfg) = policy
            && verdict != Class::Ignorable
        {
            let sample = if failed {
                rtt.max(cfg.failure_penalty)
            } else {
                rtt
            };
            self.observe(cfg, sample.as_nanos() as f64, now);
        }
        match verdict {
            Class::Success => {
                self.failures_in_a_row.set(0);
                self.ejections.set(0);
            }
            Class::Failure { .. } => {
                self.failures.set(self.failures.get() + 1);
                let n = self.failures_in_a_row.get() + 1;
                self.failures_in_a_row.set(n);
                // An endpoint back from an ejection is on probation: one failure re-ejects it.
                let threshold = if self.ejections.get() > 0 {
                    1
                } else {
                    ejection.map_or(u32::MAX, |cfg| cfg.consecutive_failures)
                };
                if let Some(cfg) = ejection
                    && n >= threshold
                    && !self.is_ejected(now)
                    && can_eject()
                {
                    let times = self.ejections.get() + 1;
                    self.ejections.set(times);
                    self.failures_in_a_row.set(0);
                    self.ejected_until
                        .set(Some(now + cfg.backoff.nominal(times)));
                }
            }
            Class::Ignorable => {}
        }
    }

    /// Folds a round-trip sample into the peak-EWMA estimate.
    fn observe(&self, cfg: &PeakEwma, sample_ns: f64, now: Instant) {
        let current = self.rtt_ns.get();
        let next = if sample_ns > current {
            sample_ns // the peak: jump up at once
        } else {
            let elapsed = now.saturating_duration_since(self.stamp.get()).as_nanos() as f64;
            let tau = cfg.decay.as_nanos().max(1) as f64;
            let w = (-elapsed / tau).exp();
            current * w + sample_ns * (1.0 - w)
        };
        self.rtt_ns.set(next);
        self.stamp.set(now);
    }

    pub(crate) fn stats(&self, policy: &Policy, now: Instant) -> EndpointStats<K> {
        let cfg = match policy {
            Policy::P2cPeakEwma(cfg) => *cfg,
            _ => PeakEwma::default(),
        };
        EndpointStats {
            key: self.key.clone(),
            pending: self.pending.get(),
            rtt_estimate: Duration::from_nanos(self.rtt_estimate(&cfg, now) as u64),
            requests: self.requests.get(),
            failures: self.failures.get(),
            ejected: self.is_ejected(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(now: Instant) -> Endpoint<&'static str, ()> {
        Endpoint::new("a", (), Duration::from_millis(10), now)
    }

    #[test]
    fn peak_ewma_jumps_to_a_peak_and_decays_toward_lower_samples() {
        let cfg = PeakEwma::default();
        let policy = Policy::P2cPeakEwma(cfg);
        let t0 = Instant::now();
        let e = ep(t0);
        e.start();
        e.finish(
            Duration::from_millis(100),
            Some(Class::Success),
            &policy,
            None,
            || true,
            t0,
        );
        assert_eq!(
            e.rtt_estimate(&cfg, t0),
            100e6,
            "a higher sample is taken at once"
        );
        let later = t0 + cfg.decay;
        e.start();
        e.finish(
            Duration::from_millis(1),
            Some(Class::Success),
            &policy,
            None,
            || true,
            later,
        );
        let est = e.rtt_estimate(&cfg, later);
        assert!(est < 100e6 && est > 1e6, "{est}");
    }

    #[test]
    fn a_fast_failure_counts_as_the_penalty_latency() {
        let cfg = PeakEwma::default();
        let policy = Policy::P2cPeakEwma(cfg);
        let t0 = Instant::now();
        let e = ep(t0);
        e.start();
        let failed = Class::Failure { retryable: false };
        e.finish(
            Duration::from_micros(5),
            Some(failed),
            &policy,
            None,
            || true,
            t0,
        );
        assert_eq!(
            e.rtt_estimate(&cfg, t0),
            cfg.failure_penalty.as_nanos() as f64
        );
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_backoff_and_a_success_clears_it() {
        let t0 = Instant::now();
        let e = ep(t0);
        let cfg = Ejection {
            consecutive_failures: 2,
            ..Ejection::default()
        };
        let fail = Some(Class::Failure { retryable: true });
        let policy = Policy::P2cPending;
        for _ in 0..2 {
            e.start();
            e.finish(Duration::ZERO, fail, &policy, Some(&cfg), || true, t0);
        }
        assert!(e.is_ejected(t0));
        assert!(!e.is_ejected(t0 + cfg.backoff.nominal(1)));
        let t1 = t0 + cfg.backoff.nominal(1);
        e.start();
        e.finish(Duration::ZERO, fail, &policy, Some(&cfg), || true, t1);
        assert!(e.is_ejected(t1), "on probation, one failure re-ejects");
        assert!(
            e.is_ejected(t1 + cfg.backoff.nominal(1)),
            "the second ejection lasts longer"
        );
        e.start();
        e.finish(
            Duration::ZERO,
            Some(Class::Success),
            &policy,
            Some(&cfg),
            || true,
            t1,
        );
        assert_eq!(e.ejections.get(), 0);
    }

    #[test]
    fn ejection_respects_the_cap() {
        let t0 = Instant::now();
        let e = ep(t0);
        let cfg = Ejection {
            consecutive_failures: 1,
            ..Ejection::default()
        };
        e.start();
        let fail = Some(Class::Failure { retryable: true });
        e.finish(
            Duration::ZERO,
            fail,
            &Policy::P2cPending,
            Some(&cfg),
            || false,
            t0,
        );
        assert!(!e.is_ejected(t0));
    }
}
