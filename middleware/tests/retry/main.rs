//! Retry: the budget's ratio under a total outage, backoff windows, flags for outer layers.

#[path = "../support/mod.rs"]
mod support;

use std::cell::{Cell, RefCell};
use std::time::Instant;

use sheave_core::time::{now, sleep};
use sheave_middleware::retry::{Backoff, BudgetConfig, NeverRetry, RetryConfig, RetryLayer};
use sheave_middleware::{Retry, ServiceBuilderExt};
use sheave_service::classify::{Class, DefaultClassifier};
use sheave_service::{Error, ServiceBuilder, ServiceExt, service_fn};
use support::{ms, paused};

/// Calls of a service that fails every request with a retryable error.
fn outage(calls: &Cell<u64>) -> impl sheave_service::Service<u64, Response = u64, Error = Error> {
    service_fn(move |_: u64| {
        calls.set(calls.get() + 1);
        async { Err(Error::unavailable()) }
    })
}

#[test]
fn the_budget_holds_retries_to_forty_percent_of_ten_thousand_failing_requests() {
    // tower's TpsBudget allows 50% here (its #857).
    let calls = Cell::new(0);
    let budget = BudgetConfig::new().ratio(0.4).min_per_second(0);
    let config = RetryConfig::new()
        .max_attempts(1_000)
        .backoff(Backoff::none())
        .budget(budget);
    let svc = Retry::new(outage(&calls), config);
    let refused = paused().block_on(async {
        let mut refused = 0;
        for i in 0..10_000 {
            let err = svc.oneshot(i).await.unwrap_err();
            assert!(err.is_unavailable(), "the original error comes back");
            assert!(
                err.is_non_retryable(),
                "flagged so outer layers do not retry"
            );
            refused += 1;
        }
        refused
    });
    assert_eq!(refused, 10_000);
    assert_eq!(calls.get(), 10_000 + 4_000);
}

#[test]
fn the_reserve_allows_min_per_second_retries_when_the_ratio_is_zero() {
    let calls = Cell::new(0);
    let budget = BudgetConfig::new()
        .ratio(0.0)
        .min_per_second(5)
        .ttl(std::time::Duration::from_secs(2));
    let config = RetryConfig::new()
        .max_attempts(2)
        .backoff(Backoff::none())
        .budget(budget);
    let svc = Retry::new(outage(&calls), config);
    paused().block_on(async {
        for i in 0..100 {
            let _ = svc.oneshot(i).await;
        }
    });
    assert_eq!(calls.get(), 100 + 10, "5 per second over a 2 s window");
}

#[test]
fn backoff_delays_fall_in_their_jitter_windows() {
    let times: RefCell<Vec<Instant>> = RefCell::default();
    let failing = service_fn(|_: u8| {
        times.borrow_mut().push(now());
        async { Err::<u8, _>(Error::unavailable()) }
    });
    let backoff = Backoff::exponential(ms(8), ms(100));
    let config = RetryConfig::new()
        .max_attempts(7)
        .backoff(backoff)
        .budget(BudgetConfig::new().min_per_second(1_000));
    let svc = Retry::new(failing, config);
    for _ in 0..20 {
        times.borrow_mut().clear();
        paused().block_on(async {
            let _ = svc.oneshot(0).await;
        });
        let times = times.borrow();
        assert_eq!(times.len(), 7);
        for (k, pair) in times.windows(2).enumerate() {
            let waited = pair[1] - pair[0];
            let (low, high) = backoff.window(k as u32 + 1);
            // The timer wheel rounds a deadline up to its next 1 ms tick, never down.
            assert!(
                low <= waited && waited < high + ms(1),
                "retry {}: waited {waited:?}, window {low:?}..={high:?}",
                k + 1
            );
        }
    }
    assert_eq!(backoff.window(5), (ms(50), ms(100)), "capped at 100 ms");
}

#[test]
fn an_inner_refusal_is_not_retried_by_an_outer_retry_layer() {
    let calls = Cell::new(0);
    let inner_budget = BudgetConfig::new().ratio(0.0).min_per_second(0);
    let stack = ServiceBuilder::new()
        .retry(RetryConfig::new().backoff(Backoff::none()))
        .layer(RetryLayer::new(
            RetryConfig::new()
                .backoff(Backoff::none())
                .budget(inner_budget),
        ))
        .service(outage(&calls));
    let err = paused().block_on(stack.oneshot(1)).unwrap_err();
    assert!(err.is_non_retryable());
    assert_eq!(
        calls.get(),
        1,
        "the inner budget said no, and the outer layer listened"
    );
}

#[test]
fn an_ok_response_a_classifier_calls_retryable_is_retried() {
    use sheave_middleware::retry::RetryableFailures;
    let calls = Cell::new(0);
    let busy_then_ok = service_fn(|_: u8| {
        calls.set(calls.get() + 1);
        let n = calls.get();
        async move { Ok::<_, Error>(if n < 3 { "BUSY" } else { "OK" }) }
    });
    let classifier = |outcome: Result<&&str, &Error>| match outcome {
        Ok(&"BUSY") => Class::Failure { retryable: true },
        Ok(_) => Class::Success,
        Err(e) => DefaultClassifier::classify_error(e),
    };
    let svc = Retry::with_policy(
        busy_then_ok,
        RetryableFailures::with_classifier(classifier),
        RetryConfig::new().backoff(Backoff::none()),
    );
    assert_eq!(paused().block_on(svc.oneshot(0)).unwrap(), "OK");
    assert_eq!(calls.get(), 3);
}

#[test]
fn a_successful_request_with_never_retry_costs_no_clone_and_no_timer() {
    #[derive(Debug)]
    struct NotClone;
    let svc = Retry::with_policy(
        service_fn(|_: NotClone| async { Ok::<_, Error>(1) }),
        NeverRetry,
        RetryConfig::new(),
    );
    paused().block_on(async {
        let start = now();
        assert_eq!(svc.oneshot(NotClone).await.unwrap(), 1);
        sleep(ms(0)).await;
        assert_eq!(now(), start);
    });
}

#[test]
fn debug_shows_policy_and_config() {
    let layer = RetryLayer::new(RetryConfig::new().max_attempts(2));
    let printed = format!("{layer:?}");
    assert!(
        printed.starts_with("RetryLayer { policy: RetryableFailures"),
        "{printed}"
    );
    assert!(printed.contains("max_attempts: 2"), "{printed}");
}
