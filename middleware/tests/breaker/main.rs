//! The circuit breaker on the paused clock: it opens after the threshold, fails fast without
//! touching the service, lets exactly one probe through when the time is up, closes on a
//! good probe and opens for longer on a bad one; cancelled calls count for nothing.

#[path = "../support/mod.rs"]
mod support;

use sheave_core::time;
use sheave_middleware::breaker::{BreakerConfig, CircuitBreaker, State};
use sheave_middleware::retry::Backoff;
use sheave_service::{Error, ErrorKind, Service, ServiceExt, service_fn};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use support::{ms, paused, poll_once};

/// A backend whose health the test switches, counting the calls that reach it.
#[derive(Clone, Default)]
struct Backend {
    healthy: Rc<Cell<bool>>,
    calls: Rc<Cell<u32>>,
}

impl Backend {
    fn service(&self) -> impl Service<u32, Response = u32, Error = Error> + use<> {
        let (healthy, calls) = (self.healthy.clone(), self.calls.clone());
        service_fn(move |n: u32| {
            let (healthy, calls) = (healthy.clone(), calls.clone());
            async move {
                calls.set(calls.get() + 1);
                time::sleep(ms(5)).await;
                if healthy.get() {
                    Ok(n)
                } else {
                    Err(Error::msg(ErrorKind::Io, "connection refused"))
                }
            }
        })
    }
}

fn config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        backoff: Backoff::exponential(ms(100), Duration::from_secs(10)),
    }
}

#[track_caller]
fn assert_open(state: State) {
    assert!(matches!(state, State::Open { .. }), "not open: {state:?}");
}

#[test]
fn it_opens_after_the_threshold_and_fails_fast_without_calling_the_service() {
    paused().block_on(async {
        let backend = Backend::default();
        let breaker = CircuitBreaker::new(backend.service(), config());
        for n in 0..3 {
            assert!(breaker.oneshot(n).await.unwrap_err().is_io());
        }
        assert_open(breaker.state());
        let before = backend.calls.get();
        for _ in 0..100 {
            let fast = breaker.ready().await.unwrap_err();
            assert!(fast.is_unavailable() && fast.is_retryable(), "{fast}");
        }
        assert_eq!(
            backend.calls.get(),
            before,
            "nothing reached the service while open"
        );
    });
}

#[test]
fn after_the_open_time_one_probe_goes_and_a_good_one_closes_the_circuit() {
    paused().block_on(async {
        let backend = Backend::default();
        let breaker = CircuitBreaker::new(backend.service(), config());
        for n in 0..3 {
            let _ = breaker.oneshot(n).await;
        }
        let opened_at = time::now();
        let State::Open { until, .. } = breaker.state() else {
            panic!("not open: {:?}", breaker.state());
        };
        assert_eq!(
            until - opened_at,
            ms(100),
            "the first opening lasts the first backoff"
        );
        backend.healthy.set(true);
        time::sleep_until(until).await;
        // The probe's permit is out: a second caller still fails fast.
        let probe = breaker.ready().await.expect("a probe may go");
        assert!(breaker.ready().await.unwrap_err().is_unavailable());
        assert_eq!(breaker.call(probe, 7).await.unwrap(), 7);
        assert_eq!(breaker.state(), State::Closed { failures: 0 });
        for n in 0..10 {
            assert_eq!(breaker.oneshot(n).await.unwrap(), n);
        }
    });
}

#[test]
fn a_failed_probe_opens_the_circuit_for_longer() {
    paused().block_on(async {
        let backend = Backend::default();
        let breaker = CircuitBreaker::new(backend.service(), config());
        for n in 0..3 {
            let _ = breaker.oneshot(n).await;
        }
        let mut lengths = Vec::new();
        for _ in 0..3 {
            let State::Open { until, .. } = breaker.state() else {
                panic!("not open: {:?}", breaker.state());
            };
            time::sleep_until(until).await;
            let probe = breaker.ready().await.expect("a probe may go");
            let failed_at = {
                let err = breaker.call(probe, 0).await.unwrap_err();
                assert!(err.is_io());
                time::now()
            };
            let State::Open { until, .. } = breaker.state() else {
                panic!("a failed probe re-opens: {:?}", breaker.state());
            };
            lengths.push(until - failed_at);
        }
        assert_eq!(lengths, [ms(200), ms(400), ms(800)], "each opening doubles");
    });
}

#[test]
fn cancelled_calls_do_not_count_as_failures() {
    paused().block_on(async {
        let backend = Backend::default();
        let breaker = CircuitBreaker::new(backend.service(), config());
        for n in 0..2 {
            let _ = breaker.oneshot(n).await;
        }
        assert_eq!(breaker.state(), State::Closed { failures: 2 });
        // Ten callers give up mid-call (an outer deadline, say): not the service's failure.
        for n in 0..10 {
            let permit = breaker.ready().await.unwrap();
            let mut call = Box::pin(breaker.call(permit, n));
            assert!(poll_once(call.as_mut()).is_pending());
            drop(call);
        }
        assert_eq!(breaker.state(), State::Closed { failures: 2 });
        let _ = breaker.oneshot(99).await;
        assert_open(breaker.state());
    });
}
