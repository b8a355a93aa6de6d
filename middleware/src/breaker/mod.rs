//! Circuit breaking (failure accrual) for one service: stop sending to a service that keeps
//! failing, then let a single probe find out whether it recovered.
//!
//! ```text
//!            failures in a row >= threshold
//!   Closed ───────────────────────────────▶ Open (for backoff(n), growing with each opening)
//!     ▲                                        │ the time is up
//!     │ the probe succeeds                     ▼
//!     └────────────────────────────────── HalfOpen (one probe at a time)
//!                                              │ the probe fails
//!                                              └──────────▶ Open (longer)
//! ```
//!
//! While open, `ready()` fails at once with `Unavailable`, flagged retryable (nothing was
//! sent), so a balancer or a retry moves on instead of queueing behind a dead service. The
//! [classifier](sheave_service::classify) decides what a failure is; ignorable outcomes
//! (cancellations) leave the state alone. The breaker sits *outside* any timeout it should
//! count: a timeout is only a failure to a layer that sees it.
//!
//! ```
//! use sheave_middleware::breaker::{CircuitBreaker, BreakerConfig, State};
//! use sheave_service::{service_fn, Error, ErrorKind, Service, ServiceExt};
//!
//! let rt = sheave_core::Runtime::builder().paused_clock().build().unwrap();
//! rt.block_on(async {
//!     let broken = service_fn(|_: ()| async { Err::<(), _>(Error::msg(ErrorKind::Io, "refused")) });
//!     let breaker = CircuitBreaker::new(broken, BreakerConfig::default());
//!     for _ in 0..5 {
//!         assert!(breaker.oneshot(()).await.unwrap_err().is_io());
//!     }
//!     assert!(matches!(breaker.state(), State::Open { .. }));
//!     let fast = breaker.ready().await.unwrap_err();
//!     assert!(fast.is_unavailable() && fast.is_retryable());
//! });
//! ```

use crate::retry::Backoff;
use sheave_core::time;
use sheave_service::classify::{Class, Classify, DefaultClassifier};
use sheave_service::{Error, ErrorKind, Layer, Service, TryReady};
use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that open the circuit (default 5).
    pub consecutive_failures: u32,
    /// How long it stays open on its n-th opening in a row: the backoff's nominal (un-jittered)
    /// delay (default 1 s doubling to 30 s).
    pub backoff: Backoff,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            backoff: Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30)),
        }
    }
}

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests flow; `failures` in a row so far.
    Closed {
        /// Failures in a row.
        failures: u32,
    },
    /// Requests fail fast until `until`; this is the `opened`-th opening in a row.
    Open {
        /// When a probe may go.
        until: Instant,
        /// Openings in a row (resets when a probe succeeds).
        opened: u32,
    },
    /// One probe may go (or is out); its outcome closes or re-opens the circuit.
    HalfOpen {
        /// Whether the probe is out.
        probing: bool,
        /// Openings in a row so far.
        opened: u32,
    },
}

/// A circuit breaker around `S`; see the [module docs](self).
pub struct CircuitBreaker<S, C = DefaultClassifier> {
    inner: S,
    config: BreakerConfig,
    classifier: C,
    /// Shared with an outstanding probe permit, which must hand the probe slot back if it is
    /// dropped unused.
    state: Rc<Cell<State>>,
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("state", &self.state.get())
            .finish()
    }
}

impl<S> CircuitBreaker<S> {
    /// Wraps `inner` with the default classifier.
    pub fn new(inner: S, config: BreakerConfig) -> Self {
        CircuitBreaker::with_classifier(inner, config, DefaultClassifier)
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Wraps `inner`, judging outcomes with `classifier`.
    pub fn with_classifier(inner: S, config: BreakerConfig, classifier: C) -> Self {
        CircuitBreaker {
            inner,
            config,
            classifier,
            state: Rc::new(Cell::new(State::Closed { failures: 0 })),
        }
    }

    /// The state now (an open circuit whose time is up reads as half-open).
    pub fn state(&self) -> State {
        self.refresh(time::now_cached())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Moves Open to HalfOpen once its time is up.
    fn refresh(&self, now: Instant) -> State {
        let state = match self.state.get() {
            State::Open { until, opened } if now >= until => State::HalfOpen {
                probing: false,
                opened,
            },
            other => other,
        };
        self.state.set(state);
        state
    }

    /// Admits a request: `Ok(probe?)`, or the fail-fast error.
    fn admit(&self) -> Result<bool, Error> {
        match self.refresh(time::now_cached()) {
            State::Closed { .. } => Ok(false),
            State::HalfOpen {
                probing: false,
                opened,
            } => {
                self.state.set(State::HalfOpen {
                    probing: true,
                    opened,
                });
                Ok(true)
            }
            State::Open { .. } | State::HalfOpen { probing: true, .. } => {
                Err(Error::msg(ErrorKind::Unavailable, "circuit open").retryable())
            }
        }
    }

    fn release_probe(&self) {
        release_probe(&self.state);
    }

    fn record(&self, class: Class, probe: bool) {
        let now = time::now_cached();
        let next = match (self.state.get(), class) {
            (_, Class::Ignorable) if probe => {
                self.release_probe();
                return;
            }
            (_, Class::Ignorable) => return,
            (State::HalfOpen { .. }, Class::Success) if probe => State::Closed { failures: 0 },
            (State::HalfOpen { opened, .. }, Class::Failure { .. }) if probe => {
                self.open(now, opened + 1)
            }
            (State::Closed { .. }, Class::Success) => State::Closed { failures: 0 },
            (State::Closed { failures }, Class::Failure { .. }) => {
                if failures + 1 >= self.config.consecutive_failures {
                    self.open(now, 1)
                } else {
                    State::Closed {
                        failures: failures + 1,
                    }
                }
            }
            // Outcomes of requests sent before the circuit opened do not change it.
            (other, _) => other,
        };
        self.state.set(next);
    }

    fn open(&self, now: Instant, opened: u32) -> State {
        State::Open {
            until: now + self.config.backoff.nominal(opened),
            opened,
        }
    }
}

/// A probe permit was dropped unused (or its outcome was ignorable): let another probe go.
fn release_probe(state: &Cell<State>) {
    if let State::HalfOpen {
        probing: true,
        opened,
    } = state.get()
    {
        state.set(State::HalfOpen {
            probing: false,
            opened,
        });
    }
}

/// The permit of a [`CircuitBreaker`]: the inner permit, and — for the half-open probe — a
/// guard that lets another probe go if the permit is dropped unused.
pub struct BreakerPermit<P> {
    inner: P,
    probe: Option<ProbeGuard>,
}

impl<P> fmt::Debug for BreakerPermit<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerPermit")
            .field("probe", &self.probe.is_some())
            .finish()
    }
}

/// Hands the probe slot back on drop, unless disarmed.
struct ProbeGuard {
    state: Option<Rc<Cell<State>>>,
}

impl ProbeGuard {
    fn disarm(mut self) {
        self.state = None;
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            release_probe(state);
        }
    }
}

impl<S, C> CircuitBreaker<S, C> {
    fn permit<P>(&self, inner: P, probe: bool) -> BreakerPermit<P> {
        BreakerPermit {
            inner,
            probe: probe.then(|| ProbeGuard {
                state: Some(self.state.clone()),
            }),
        }
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<Error>,
    C: Classify<S::Response, Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = BreakerPermit<S::Permit>;

    async fn ready(&self) -> Result<Self::Permit, Error> {
        // The probe slot is guarded from the moment it is taken: if this future is dropped
        // while the inner service makes it wait (a timeout, a `select`), or the inner
        // `ready()` fails, the guard hands the slot back.
        let probe = self.admit()?.then(|| ProbeGuard {
            state: Some(self.state.clone()),
        });
        let inner = self.inner.ready().await.map_err(Into::into)?;
        Ok(BreakerPermit { inner, probe })
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    fn try_ready(&self) -> TryReady<Self::Permit, Error> {
        let probe = match self.admit() {
            Ok(probe) => probe,
            Err(e) => return TryReady::Closed(e),
        };
        match self.inner.try_ready() {
            TryReady::Ready(inner) => TryReady::Ready(self.permit(inner, probe)),
            other => {
                if probe {
                    self.release_probe();
                }
                match other {
                    TryReady::Closed(e) => TryReady::Closed(e.into()),
                    _ => TryReady::Busy,
                }
            }
        }
    }

    async fn call(&self, permit: Self::Permit, req: Req) -> Result<S::Response, Error> {
        let BreakerPermit { inner, probe } = permit;
        let is_probe = probe.is_some();
        // If this call is dropped half-way, the guard hands the probe slot back.
        let result = self.inner.call(inner, req).await.map_err(Into::into);
        if let Some(guard) = probe {
            guard.disarm();
        }
        self.record(self.classifier.classify(result.as_ref()), is_probe);
        result
    }
}

/// A [`Layer`] that wraps services in a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy)]
pub struct CircuitBreakerLayer {
    config: BreakerConfig,
}

impl CircuitBreakerLayer {
    /// Breakers with `config`.
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreakerLayer { config }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;
    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker::new(inner, self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sheave_core::Runtime;
    use sheave_service::{ServiceExt, service_fn};

    fn flaky(fail: Rc<Cell<bool>>) -> impl Service<(), Response = (), Error = Error> {
        service_fn(move |_: ()| {
            let fail = fail.get();
            async move {
                if fail {
                    Err(Error::msg(ErrorKind::Io, "refused"))
                } else {
                    Ok(())
                }
            }
        })
    }

    #[test]
    fn the_breaker_walks_closed_open_half_open_closed() {
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let fail = Rc::new(Cell::new(true));
            let config = BreakerConfig {
                consecutive_failures: 3,
                ..BreakerConfig::default()
            };
            let b = CircuitBreaker::new(flaky(fail.clone()), config);
            for i in 0..3 {
                assert!(matches!(b.state(), State::Closed { failures } if failures == i));
                assert!(b.oneshot(()).await.unwrap_err().is_io());
            }
            let State::Open { until, opened: 1 } = b.state() else {
                panic!("not open: {:?}", b.state());
            };
            assert_eq!(until - time::now(), Duration::from_secs(1));
            assert!(
                b.ready().await.unwrap_err().is_unavailable(),
                "open fails fast"
            );

            // After the backoff: one probe; it fails and the circuit opens for longer.
            time::sleep(Duration::from_secs(1)).await;
            assert!(matches!(b.state(), State::HalfOpen { probing: false, .. }));
            let probe = b.ready().await.unwrap();
            assert!(
                b.ready().await.unwrap_err().is_unavailable(),
                "one probe at a time"
            );
            assert!(b.call(probe, ()).await.is_err());
            let State::Open { until, opened: 2 } = b.state() else {
                panic!("not re-opened: {:?}", b.state());
            };
            assert_eq!(until - time::now(), Duration::from_secs(2));

            // The next probe succeeds: closed again.
            time::sleep(Duration::from_secs(2)).await;
            fail.set(false);
            b.oneshot(()).await.unwrap();
            assert_eq!(b.state(), State::Closed { failures: 0 });
        });
    }

    #[test]
    fn a_probe_permit_dropped_unused_lets_another_probe_go() {
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let fail = Rc::new(Cell::new(true));
            let b = CircuitBreaker::new(flaky(fail.clone()), BreakerConfig::default());
            for _ in 0..5 {
                let _ = b.oneshot(()).await;
            }
            time::sleep(Duration::from_secs(1)).await;
            let probe = b.ready().await.unwrap();
            drop(probe);
            assert!(b.ready().await.is_ok(), "the slot came back");
        });
    }

    #[test]
    fn a_probe_whose_ready_is_dropped_while_waiting_hands_the_slot_back() {
        // Regression (review): the slot was guarded only once the inner ready() succeeded,
        // so a probe cancelled while waiting left the breaker open for good.
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let (svc, handle) = sheave_service::mock::pair::<(), ()>();
            let b = CircuitBreaker::new(svc, BreakerConfig::default());
            for _ in 0..5 {
                let called = b.oneshot(());
                let (out, ()) = futures::join!(called, async {
                    let (_, tx) = handle.next_request().await.unwrap();
                    tx.fail(Error::msg(ErrorKind::Io, "refused"));
                });
                assert!(out.is_err());
            }
            time::sleep(Duration::from_secs(1)).await;
            handle.allow(0); // the inner service makes the probe wait
            let waited = time::timeout(Duration::from_millis(10), b.ready()).await;
            assert!(waited.is_err(), "the probe was waiting when it was dropped");
            handle.allow(1);
            assert!(b.ready().await.is_ok(), "the next probe may go");
        });
    }

    #[test]
    fn a_success_resets_the_count_of_failures_in_a_row() {
        let rt = Runtime::builder().paused_clock().build().unwrap();
        rt.block_on(async {
            let fail = Rc::new(Cell::new(true));
            let b = CircuitBreaker::new(flaky(fail.clone()), BreakerConfig::default());
            for round in 0..10 {
                fail.set(round % 5 != 4); // four failures, one success, repeated
                let _ = b.oneshot(()).await;
            }
            assert!(matches!(b.state(), State::Closed { .. }));
        });
    }
}
