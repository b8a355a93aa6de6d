//! The whole stack over the mock service, built with the builder extension.
//!
//! The same kind of stack over real TCP connections to real servers is tested in the root
//! crate's `tests/balance` (the tour's client against three loopback servers).

#[path = "../support/mod.rs"]
mod support;

use log::Level;
use sheave_core::time::{now, sleep};
use sheave_middleware::ServiceBuilderExt;
use sheave_middleware::limit::RateConfig;
use sheave_middleware::retry::{Backoff, RetryConfig};
use sheave_middleware::stats::StatsConfig;
use sheave_service::{Error, ErrorKind, ServiceBuilder, ServiceExt, mock};
use support::{ms, paused};

#[test]
fn the_builder_stacks_layers_in_reading_order() {
    let builder = ServiceBuilder::new()
        .stats(StatsConfig::new())
        .log(Level::Debug, |n: &u32| *n)
        .timeout(ms(100))
        .retry(RetryConfig::new())
        .load_shed()
        .concurrency_limit(4)
        .rate_limit(RateConfig::new(10, ms(1_000)));
    let printed = format!("{builder:?}");
    let order = [
        "StatsLayer",
        "LogLayer",
        "TimeoutLayer",
        "RetryLayer",
        "LoadShedLayer",
        "ConcurrencyLimitLayer",
        "RateLimitLayer",
    ];
    let at: Vec<usize> = order.iter().map(|l| printed.find(l).unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{printed}");
    assert!(
        printed.contains("TimeoutLayer { timeout: 100ms }"),
        "{printed}"
    );
}

#[test]
fn a_full_stack_over_the_mock_retries_sheds_times_out_and_counts() {
    let (inner, handle) = mock::pair::<u32, u32>();
    let svc = ServiceBuilder::new()
        .stats(StatsConfig::new()) // outermost: sees timeouts and sheds
        .timeout(ms(100)) // one deadline for readiness, the call and every retry
        .retry(RetryConfig::new().backoff(Backoff::none()))
        .load_shed() // a shed is a retryable call error: the retry above may try again
        .concurrency_limit(1)
        .service(inner);
    let stats = svc.stats();
    paused().block_on(async {
        let start = now();
        // 1. A retryable failure is retried, then answered.
        let server = async {
            let (_, tx) = handle.next_request().await.unwrap();
            tx.fail(Error::unavailable());
            let (req, tx) = handle.next_request().await.unwrap();
            tx.respond(req * 2);
        };
        let (res, ()) = futures::join!(svc.oneshot(21), server);
        assert_eq!(res.unwrap(), 42);

        // 2. An application error passes through untouched, once.
        let server = async {
            let (_, tx) = handle.next_request().await.unwrap();
            tx.fail(Error::service(std::io::Error::other("no such key")));
        };
        let (res, ()) = futures::join!(svc.oneshot(1), server);
        let err = res.unwrap_err();
        assert!(err.is_service() && !err.is_non_retryable());
        assert_eq!(handle.queued_requests(), 0);

        // 3. While one request holds the only slot, another is shed — at once, as a call
        //    error flagged retryable, so the retry layer above tries again, is shed again,
        //    and gives up after its attempts (flagging the error non-retryable for outer
        //    layers) — and the first one times out at its deadline.
        let first = svc.oneshot(3);
        let second = async {
            sleep(ms(10)).await;
            svc.oneshot(4).await
        };
        let (first, second) = futures::join!(first, second);
        let second = second.unwrap_err();
        assert!(
            second.is_overloaded() && second.is_non_retryable(),
            "{second:?}"
        );
        assert!(first.unwrap_err().is_timeout());
        assert_eq!(now() - start, ms(100));
        let (req, tx) = handle.try_next_request().unwrap();
        assert_eq!(req, 3);
        assert!(tx.is_canceled());
    });
    let snap = stats.snapshot();
    // The shed request is a call that failed `Overloaded`: stats see it.
    assert_eq!(snap.requests, 4);
    assert_eq!(snap.successes, 1);
    assert_eq!(snap.errors(ErrorKind::Service), 1);
    assert_eq!(snap.errors(ErrorKind::Overloaded), 1);
    assert_eq!(snap.errors(ErrorKind::Timeout), 1);
}
