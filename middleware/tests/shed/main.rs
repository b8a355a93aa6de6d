//! Load shedding: fails fast on busy, never queues, never sheds a fairness yield.

#[path = "../support/mod.rs"]
mod support;

use std::cell::Cell;

use sheave_middleware::limit::RateConfig;
use sheave_middleware::{ConcurrencyLimit, LoadShed, RateLimit};
use sheave_service::{Error, Service, ServiceExt, TryReady, mock, service_fn};
use support::{YieldNow, ms, paused};

#[test]
fn shed_never_queues() {
    let limit = ConcurrencyLimit::new(service_fn(|n: u32| async move { Ok::<_, Error>(n) }), 2);
    let svc = LoadShed::new(limit);
    paused().block_on(async {
        let a = svc.ready().await.unwrap();
        let b = svc.ready().await.unwrap();
        for i in 0..100 {
            let shed = svc.ready().await.unwrap();
            assert!(shed.is_shed(), "full: the permit sheds");
            let err = svc.call(shed, i).await.unwrap_err();
            assert!(err.is_overloaded() && err.is_retryable());
            assert_eq!(svc.get_ref().waiting(), 0, "nothing was left in the queue");
        }
        drop((a, b));
        assert_eq!(svc.oneshot(7).await.unwrap(), 7);
    });
}

#[test]
fn an_empty_rate_limiter_is_shed_at_once() {
    let svc = LoadShed::new(RateLimit::new(
        service_fn(|()| async { Ok::<_, Error>(()) }),
        RateConfig::new(1, ms(1_000)),
    ));
    paused().block_on(async {
        let start = sheave_core::time::now();
        svc.oneshot(()).await.unwrap();
        assert!(svc.oneshot(()).await.unwrap_err().is_overloaded());
        assert_eq!(
            sheave_core::time::now(),
            start,
            "no waiting for the next token"
        );
        assert_eq!(svc.get_ref().waiting(), 0);
    });
}

/// Ready after one fairness yield, and does not override `try_ready` (whose default reports
/// that yield as `Busy`).
struct YieldsOnce {
    calls: Cell<u32>,
}

impl Service<u32> for YieldsOnce {
    type Response = u32;
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        YieldNow(1).await;
        Ok(())
    }

    async fn call(&self, _: (), n: u32) -> Result<u32, Error> {
        self.calls.set(self.calls.get() + 1);
        Ok(n)
    }
}

#[test]
fn a_fairness_yield_is_not_shed_even_behind_the_default_try_ready() {
    let inner = YieldsOnce {
        calls: Cell::new(0),
    };
    assert!(
        inner.try_ready().is_busy(),
        "the default try_ready cannot tell"
    );
    let svc = LoadShed::new(inner);
    paused().block_on(async {
        for n in 0..10 {
            assert_eq!(svc.oneshot(n).await.unwrap(), n);
        }
    });
    assert_eq!(svc.get_ref().calls.get(), 10);
}

#[test]
fn a_mock_without_permits_is_shed_and_its_waiter_entry_is_gone() {
    let (inner, handle) = mock::pair_with_permits::<u8, u8>(0);
    let svc = LoadShed::new(inner);
    let err = futures::executor::block_on(svc.oneshot(1)).unwrap_err();
    assert!(err.is_overloaded());
    handle.allow(1);
    assert_eq!(handle.permits(), 1, "no dead waiter took the permit");
    assert!(matches!(svc.try_ready(), TryReady::Ready(_)));
}

#[test]
fn try_ready_forwards_busy_rather_than_closing() {
    let (inner, handle) = mock::pair_with_permits::<u8, u8>(0);
    let svc = LoadShed::new(inner);
    assert!(svc.try_ready().is_busy());
    handle.close(Error::closed());
    assert!(svc.try_ready().is_closed());
}
