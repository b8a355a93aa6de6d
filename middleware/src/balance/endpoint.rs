//! One endpoint of a balancer: its connection, its load and its round-trip estimate (per
//! connection), and its [`Health`] (per key: it survives reconnects). All in `Cell`s: the
//! balancer lives on one thread.

use super::config::{Ejection, PeakEwma, Policy};
use sheave_service::Service;
use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

/// What the balancer knows of a key's health, whichever connection serves it now.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Failures in a row.
    failures_in_a_row: Cell<u32>,
    /// Ejected until this instant.
    ejected_until: Cell<Option<Instant>>,
    /// Ejections so far (cleared by a success).
    ejections: Cell<u32>,
    /// Connections in a row that failed to connect or closed before their first success.
    bad_connections: Cell<u32>,
}

impl Health {
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.get().is_some_and(|until| now < until)
    }

    /// How much longer the ejection lasts.
    pub(crate) fn ejected_for(&self, now: Instant) -> Duration {
        self.ejected_until
            .get()
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    pub(crate) fn bad_connections(&self) -> u32 {
        self.bad_connections.get()
    }

    pub(crate) fn bad_connection(&self) {
        self.bad_connections
            .set(self.bad_connections.get().saturating_add(1));
    }

    fn success(&self) {
        self.failures_in_a_row.set(0);
        self.ejections.set(0);
        self.bad_connections.set(0);
    }

    /// Counts a failure; true if it crosses the ejection threshold (on probation, after an
    /// ejection, one failure does).
    fn failure(&self, ejection: &Ejection, now: Instant) -> bool {
        let n = self.failures_in_a_row.get().saturating_add(1);
        self.failures_in_a_row.set(n);
        let threshold = if self.ejections.get() > 0 {
            1
        } else {
            ejection.consecutive_failures
        };
        n >= threshold && !self.is_ejected(now)
    }

    fn eject(&self, ejection: &Ejection, now: Instant) {
        let times = self.ejections.get().saturating_add(1);
        self.ejections.set(times);
        self.failures_in_a_row.set(0);
        self.ejected_until
            .set(Some(sheave_core::time::saturating_add(
                now,
                ejection.backoff.nominal(times),
            )));
    }
}

/// How a call ended, for the round-trip estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sample {
    Succeeded,
    Failed,
    /// Dropped by its caller before it finished.
    GivenUp,
}

/// How to read a service's own in-flight count ([`Service::in_flight`] for one request type).
type InFlightOf<S> = fn(&S) -> Option<usize>;

/// A connected endpoint: a key, its service, and what the balancer knows of it.
pub(crate) struct Endpoint<K, S> {
    pub(crate) key: K,
    pub(crate) svc: S,
    pub(crate) health: std::rc::Rc<Health>,
    /// Calls made through the balancer and not yet finished.
    pending: Cell<u32>,
    /// Reads the service's own count of requests holding its capacity (abandoned calls
    /// included), for the stats; set by the first call, which knows the request type.
    in_flight_of: Cell<Option<InFlightOf<S>>>,
    /// Peak-EWMA round-trip estimate, nanoseconds, as of `stamp`.
    rtt_ns: Cell<f64>,
    stamp: Cell<Instant>,
    /// Whether `rtt_ns` holds a sample (else the endpoint is neutral).
    sampled: Cell<bool>,
    /// Whether the estimate is a failure's penalty (it decays fast; a success replaces it).
    penalised: Cell<bool>,
    /// Whether the estimate is the first success after a penalty: it still decays fast until
    /// the next sample (a reply that waited out a stall is not the endpoint's pace).
    recovering: Cell<bool>,
    /// Set when discovery removed it or its connection closed: no new requests.
    gone: Cell<bool>,
    requests: Cell<u64>,
    successes: Cell<u64>,
    failures: Cell<u64>,
}

impl<K: fmt::Debug, S> fmt::Debug for Endpoint<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("key", &self.key)
            .field("pending", &self.pending.get())
            .field("rtt_ns", &self.rtt_ns.get())
            .field("gone", &self.gone.get())
            .field("health", &self.health)
            .finish()
    }
}

/// What a snapshot of the balancer says about one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStats<K> {
    /// The endpoint's key.
    pub key: K,
    /// Requests holding the endpoint's capacity: the balancer's calls in flight, or — when the
    /// connection says more, as a pipelined one does while it still owes answers to callers
    /// who gave up — the connection's own count.
    pub pending: u32,
    /// The peak-EWMA round-trip estimate now (decayed to the time of the snapshot; zero
    /// before the first sample).
    pub rtt_estimate: Duration,
    /// Requests sent on this connection.
    pub requests: u64,
    /// Of those, how many the classifier called failures (calls given up included).
    pub failures: u64,
    /// Whether it is ejected now.
    pub ejected: bool,
}

impl<K: Clone, S> Endpoint<K, S> {
    pub(crate) fn new(key: K, svc: S, health: std::rc::Rc<Health>, now: Instant) -> Self {
        Endpoint {
            key,
            svc,
            health,
            pending: Cell::new(0),
            in_flight_of: Cell::new(None),
            rtt_ns: Cell::new(0.0),
            stamp: Cell::new(now),
            sampled: Cell::new(false),
            penalised: Cell::new(false),
            recovering: Cell::new(false),
            gone: Cell::new(false),
            requests: Cell::new(0),
            successes: Cell::new(0),
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
        self.health.is_ejected(now)
    }

    /// Whether a call on this connection ever succeeded.
    pub(crate) fn ever_succeeded(&self) -> bool {
        self.successes.get() > 0
    }

    /// Requests holding the endpoint now: the service's own count when it keeps one (it
    /// sees calls abandoned by their callers), else the balancer's.
    fn load<Req>(&self) -> u32
    where
        S: Service<Req>,
    {
        let pending = self.pending.get();
        self.svc.in_flight().map_or(pending, |n| {
            u32::try_from(n).unwrap_or(u32::MAX).max(pending)
        })
    }

    /// The load the policy compares: lower is better. `neutral` is the estimate of an
    /// endpoint without history (asked for only when this one has none).
    pub(crate) fn cost<Req>(&self, policy: &Policy, now: Instant, neutral: impl Fn() -> f64) -> f64
    where
        S: Service<Req>,
    {
        let load = f64::from(self.load::<Req>());
        match policy {
            Policy::P2cPeakEwma(cfg) => {
                let rtt = self.rtt_estimate(cfg, now).unwrap_or_else(neutral);
                rtt * (load + 1.0)
            }
            Policy::P2cPending | Policy::RoundRobin => load,
        }
    }

    /// The round-trip estimate decayed toward zero for the time since the last sample;
    /// `None` before the first sample.
    pub(crate) fn rtt_estimate(&self, cfg: &PeakEwma, now: Instant) -> Option<f64> {
        if !self.sampled.get() {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.stamp.get()).as_nanos() as f64;
        Some(self.rtt_ns.get() * (-elapsed / self.tau(cfg)).exp())
    }

    fn tau(&self, cfg: &PeakEwma) -> f64 {
        let tau = if self.penalised.get() || self.recovering.get() {
            cfg.penalty_decay
        } else {
            cfg.decay
        };
        tau.as_nanos().max(1) as f64
    }

    /// Counts a request as sent (and notes how to read the connection's own count).
    pub(crate) fn start<Req>(&self)
    where
        S: Service<Req>,
    {
        self.pending.set(self.pending.get() + 1);
        self.requests.set(self.requests.get() + 1);
        self.in_flight_of.set(Some(<S as Service<Req>>::in_flight));
    }

    /// Counts a call as finished (answered, failed or given up).
    pub(crate) fn finish(&self) {
        self.pending.set(self.pending.get().saturating_sub(1));
    }

    /// Counts a success for this connection and its key.
    pub(crate) fn succeeded(&self) {
        self.successes.set(self.successes.get() + 1);
        self.health.success();
    }

    /// Counts a failure; true if the key should be ejected now (the cap is the caller's).
    pub(crate) fn failed(&self, ejection: Option<&Ejection>, now: Instant) -> bool {
        self.failures.set(self.failures.get() + 1);
        match ejection {
            Some(cfg) => self.health.failure(cfg, now),
            None => false,
        }
    }

    /// Ejects the key. The estimate is forgotten: back from the ejection, the endpoint starts
    /// neutral, so it gets its share at once if it is healthy again.
    pub(crate) fn eject(&self, ejection: &Ejection, now: Instant) {
        self.health.eject(ejection, now);
        self.sampled.set(false);
        self.penalised.set(false);
        self.recovering.set(false);
    }

    /// Folds a round-trip sample into the peak-EWMA estimate (the rules on [`PeakEwma`]).
    /// `outcome` is how the call ended: a success, a failure (a sample of at least the
    /// penalty), or given up by its caller (a sample of the time it waited — the caller's
    /// impatience is no measure of the endpoint's failures, but the wait is a real latency).
    pub(crate) fn observe(&self, cfg: &PeakEwma, rtt: Duration, outcome: Sample, now: Instant) {
        let failed = outcome == Sample::Failed;
        let sample = if failed {
            rtt.max(cfg.failure_penalty)
        } else {
            rtt
        }
        .as_nanos() as f64;
        let next = match self.rtt_estimate(cfg, now) {
            // The first sample replaces the prior; a success replaces a penalty.
            None => sample,
            Some(_) if self.penalised.get() && outcome == Sample::Succeeded => sample,
            // The peak: jump up at once.
            Some(current) if sample > current => sample,
            Some(_) => {
                let elapsed = now.saturating_duration_since(self.stamp.get()).as_nanos() as f64;
                let w = (-elapsed / self.tau(cfg)).exp();
                self.rtt_ns.get() * w + sample * (1.0 - w)
            }
        };
        self.rtt_ns.set(next);
        self.stamp.set(now);
        self.sampled.set(true);
        if outcome != Sample::GivenUp {
            let was_penalised = self.penalised.get();
            self.penalised.set(failed);
            self.recovering.set(was_penalised && !failed);
        }
    }

    pub(crate) fn stats(&self, policy: &Policy, now: Instant) -> EndpointStats<K> {
        let cfg = match policy {
            Policy::P2cPeakEwma(cfg) => *cfg,
            _ => PeakEwma::default(),
        };
        let seen = self
            .in_flight_of
            .get()
            .and_then(|of| of(&self.svc))
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
        EndpointStats {
            key: self.key.clone(),
            pending: self.pending.get().max(seen),
            rtt_estimate: Duration::from_nanos(self.rtt_estimate(&cfg, now).unwrap_or(0.0) as u64),
            requests: self.requests.get(),
            failures: self.failures.get(),
            ejected: self.is_ejected(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn ep(now: Instant) -> Endpoint<&'static str, ()> {
        Endpoint::new("a", (), Rc::new(Health::default()), now)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_first_sample_replaces_the_prior_then_peaks_jump_and_lower_samples_decay_in() {
        let cfg = PeakEwma::default();
        let t0 = Instant::now();
        let e = ep(t0);
        assert_eq!(e.rtt_estimate(&cfg, t0), None, "no history: neutral");
        e.observe(&cfg, Duration::from_micros(250), Sample::Succeeded, t0);
        assert_eq!(
            e.rtt_estimate(&cfg, t0),
            Some(250e3),
            "no decay from a prior"
        );
        e.observe(&cfg, ms(100), Sample::Succeeded, t0);
        assert_eq!(
            e.rtt_estimate(&cfg, t0),
            Some(100e6),
            "a higher sample at once"
        );
        let later = t0 + cfg.decay;
        e.observe(&cfg, ms(1), Sample::Succeeded, later);
        let est = e.rtt_estimate(&cfg, later).unwrap();
        assert!(est < 100e6 && est > 1e6, "{est}");
    }

    #[test]
    fn a_failure_is_the_penalty_and_the_next_success_replaces_it() {
        let cfg = PeakEwma::default();
        let t0 = Instant::now();
        let e = ep(t0);
        e.observe(&cfg, Duration::from_micros(250), Sample::Succeeded, t0);
        e.observe(&cfg, Duration::from_micros(5), Sample::Failed, t0);
        assert_eq!(
            e.rtt_estimate(&cfg, t0),
            Some(cfg.failure_penalty.as_nanos() as f64)
        );
        let t1 = t0 + ms(10);
        e.observe(&cfg, Duration::from_micros(300), Sample::Succeeded, t1);
        assert_eq!(e.rtt_estimate(&cfg, t1), Some(300e3));
    }

    #[test]
    fn a_penalised_estimate_decays_on_the_short_time_constant_without_traffic() {
        let cfg = PeakEwma::default();
        let t0 = Instant::now();
        let e = ep(t0);
        e.observe(&cfg, ms(100), Sample::Failed, t0);
        let two_s = e.rtt_estimate(&cfg, t0 + Duration::from_secs(2)).unwrap();
        // 1 s × e^-8: about 0.34 ms, comparable to a healthy loopback round trip.
        assert!(two_s < 0.5e6, "{two_s}");
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_backoff_and_a_success_clears_it() {
        let t0 = Instant::now();
        let e = ep(t0);
        let cfg = Ejection {
            consecutive_failures: 2,
            ..Ejection::default()
        };
        assert!(!e.failed(Some(&cfg), t0));
        assert!(e.failed(Some(&cfg), t0), "the second in a row crosses");
        e.eject(&cfg, t0);
        assert!(e.is_ejected(t0));
        assert!(!e.is_ejected(t0 + cfg.backoff.nominal(1)));
        let t1 = t0 + cfg.backoff.nominal(1);
        assert!(
            e.failed(Some(&cfg), t1),
            "on probation, one failure re-ejects"
        );
        e.eject(&cfg, t1);
        assert!(
            e.is_ejected(t1 + cfg.backoff.nominal(1)),
            "the second ejection lasts longer"
        );
        e.succeeded();
        assert_eq!(e.health.ejections.get(), 0);
    }

    #[test]
    fn health_outlives_the_connection() {
        let t0 = Instant::now();
        let health = Rc::new(Health::default());
        let cfg = Ejection {
            consecutive_failures: 3,
            ..Ejection::default()
        };
        for _ in 0..2 {
            let conn = Endpoint::new("a", (), health.clone(), t0);
            assert!(!conn.failed(Some(&cfg), t0));
        }
        let third = Endpoint::new("a", (), health.clone(), t0);
        assert!(third.failed(Some(&cfg), t0), "counted across connections");
    }
}
