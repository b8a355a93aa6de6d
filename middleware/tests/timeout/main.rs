//! Timeout: fires at the deadline and not one tick before, covers readiness, cancels the
//! inner request, and bounds an inner retry.

#[path = "../support/mod.rs"]
mod support;

use std::cell::Cell;
use std::pin::pin;

use sheave_core::time::{now, sleep};
use sheave_middleware::retry::{Backoff, RetryConfig};
use sheave_middleware::{Retry, Timeout};
use sheave_service::{Error, Service, ServiceExt, mock, service_fn};
use support::{ms, paused, poll_here};

#[test]
fn a_timeout_fires_at_the_deadline_and_not_one_tick_before() {
    let (svc, handle) = mock::pair::<(), ()>();
    let svc = Timeout::new(svc, ms(100));
    paused().block_on(async {
        let start = now();
        let mut call = pin!(svc.oneshot(()));
        assert!(poll_here(call.as_mut()).await.is_pending());
        sleep(ms(99)).await;
        assert!(
            poll_here(call.as_mut()).await.is_pending(),
            "one tick early"
        );
        let err = call.await.unwrap_err();
        assert!(err.is_timeout());
        assert_eq!(now() - start, ms(100));
    });
    drop(handle);
}

#[test]
fn on_expiry_the_inner_request_is_cancelled() {
    let (svc, handle) = mock::pair::<u8, u8>();
    let svc = Timeout::new(svc, ms(10));
    paused().block_on(async {
        let err = svc.oneshot(1).await.unwrap_err();
        assert!(err.is_timeout());
    });
    let (req, tx) = handle.try_next_request().unwrap();
    assert_eq!(req, 1);
    assert!(tx.is_canceled(), "the inner call's future was dropped");
}

#[test]
fn waiting_for_readiness_uses_up_the_same_deadline() {
    let (svc, handle) = mock::pair_with_permits::<u8, u8>(0);
    let svc = Timeout::new(svc, ms(100));
    paused().block_on(async {
        let start = now();
        let grant = async {
            sleep(ms(70)).await;
            handle.allow(1);
        };
        let (res, ()) = futures::join!(svc.oneshot(1), grant);
        assert!(res.unwrap_err().is_timeout());
        // 70 ms waiting for a permit + 30 ms for the call: tower would have allowed 170 ms.
        assert_eq!(now() - start, ms(100));
    });
}

#[test]
fn an_answer_in_time_wins_and_the_timer_is_gone() {
    let (svc, handle) = mock::pair::<u8, u8>();
    let svc = Timeout::new(svc, ms(100));
    paused().block_on(async {
        let start = now();
        let answer = async {
            let (req, tx) = handle.next_request().await.unwrap();
            sleep(ms(40)).await;
            tx.respond(req + 1);
        };
        let (res, ()) = futures::join!(svc.oneshot(1), answer);
        assert_eq!(res.unwrap(), 2);
        assert_eq!(now() - start, ms(40));
        // Nothing else is pending: the cancelled timer does not hold virtual time back.
        sleep(ms(1)).await;
        assert_eq!(now() - start, ms(41));
    });
}

/// A service whose every call fails as `Unavailable` after `took`, counting calls.
fn failing_after(
    took: std::time::Duration,
    calls: &Cell<u32>,
) -> impl Service<u8, Response = u8, Error = Error> + '_ {
    service_fn(move |_: u8| {
        calls.set(calls.get() + 1);
        async move {
            sleep(took).await;
            Err::<u8, _>(Error::unavailable())
        }
    })
}

#[test]
fn a_retry_under_a_timeout_never_outlives_the_deadline() {
    let calls = Cell::new(0);
    let failing = failing_after(ms(30), &calls);
    let backoff = Backoff::exponential(ms(10), ms(10)).jitter(0.0);
    let config = RetryConfig::new().max_attempts(100).backoff(backoff);
    let svc = Timeout::new(Retry::new(failing, config), ms(100));
    paused().block_on(async {
        let start = now();
        let err = svc.oneshot(1).await.unwrap_err();
        // Attempts start at 0, 40 and 80 ms; the one at 80 ms is cut off at 100 ms.
        assert!(err.is_timeout());
        assert_eq!(now() - start, ms(100));
    });
    assert_eq!(calls.get(), 3);
}

#[test]
fn an_attempt_that_cannot_start_before_the_deadline_is_skipped() {
    let calls = Cell::new(0);
    let failing = failing_after(ms(30), &calls);
    let backoff = Backoff::exponential(ms(50), ms(50)).jitter(0.0);
    let config = RetryConfig::new().max_attempts(100).backoff(backoff);
    let svc = Timeout::new(Retry::new(failing, config), ms(100));
    paused().block_on(async {
        let start = now();
        let err = svc.oneshot(1).await.unwrap_err();
        // Attempt 1 ends at 30 ms; attempt 2 starts after the 50 ms backoff, at 80 ms, and
        // is cut off at 100 ms.
        assert!(err.is_timeout());
        assert_eq!(now() - start, ms(100));
    });
    assert_eq!(calls.get(), 2);

    // Now a deadline that leaves no room for the first retry's backoff: returned at once.
    calls.set(0);
    let failing = failing_after(ms(60), &calls);
    let svc = Timeout::new(Retry::new(failing, config), ms(100));
    paused().block_on(async {
        let start = now();
        let err = svc.oneshot(1).await.unwrap_err();
        assert!(
            err.is_unavailable(),
            "the attempt's own error, not a timeout"
        );
        assert_eq!(
            now() - start,
            ms(60),
            "no sleep toward an attempt that cannot run"
        );
    });
    assert_eq!(calls.get(), 1);
}

#[test]
fn a_permit_carries_the_deadline_from_readiness() {
    let (svc, _handle) = mock::pair::<u8, u8>();
    let svc = Timeout::new(svc, ms(100));
    paused().block_on(async {
        let start = now();
        let permit = svc.ready().await.unwrap();
        assert_eq!(permit.deadline(), start + ms(100));
    });
}

#[test]
fn a_deadline_set_around_the_ready_future_itself_tightens_the_timeout() {
    // Regression (review): `ready()` read the caller's deadline when the future was built,
    // so `with_deadline(d, svc.ready())` — built before `d` was current — ignored `d`.
    use sheave_service::deadline::with_deadline;
    let (inner, _handle) = mock::pair_with_permits::<u8, u8>(0);
    let svc = Timeout::new(inner, ms(1000));
    paused().block_on(async {
        let start = now();
        let err = with_deadline(start + ms(50), svc.ready())
            .await
            .unwrap_err();
        assert!(err.is_timeout());
        assert_eq!(now() - start, ms(50));
    });
}

#[test]
fn a_huge_backoff_under_a_deadline_skips_the_retry_instead_of_overflowing() {
    use sheave_service::deadline::with_deadline;
    let backoff =
        Backoff::exponential(std::time::Duration::MAX, std::time::Duration::MAX).jitter(0.0);
    let svc = Retry::new(
        service_fn(|_: u8| async { Err::<u8, _>(Error::unavailable()) }),
        RetryConfig::new().backoff(backoff),
    );
    paused().block_on(async {
        let err = with_deadline(now() + ms(100), svc.oneshot(1))
            .await
            .unwrap_err();
        assert!(err.is_unavailable());
    });
}

#[test]
fn call_all_over_a_timeout_starts_each_deadline_with_its_request() {
    // Regression (review): `call_all` reserved a permit before the next request arrived,
    // and the permit's deadline ran out while it waited: every call timed out.
    use futures::StreamExt;
    let svc = Timeout::new(
        service_fn(|n: u32| async move {
            sleep(ms(10)).await;
            Ok::<_, Error>(n)
        }),
        ms(100),
    );
    paused().block_on(async {
        let requests = futures::stream::iter(0..3u32).then(|n| async move {
            sleep(ms(500)).await;
            n
        });
        let results: Vec<_> = svc.call_all(requests).collect().await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    });
}
