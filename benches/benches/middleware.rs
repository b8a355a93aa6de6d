//! The cost of sheave's middleware beside tower 0.5's, in the same run.
//!
//! Run: `cargo bench -p sheave-benches --bench middleware` (valgrind, if installed, adds the
//! instruction columns).
//!
//! Every case makes one request through a stack over a `service_fn` that answers at once:
//! readiness + call (`oneshot` for sheave; `ready().await` + `call` on `&mut` for tower),
//! polled directly with a no-op waker in a loop — no executor turn in the measurement, so what
//! is left is the middleware's own work on the path where nothing waits. sheave runs inside a
//! sheave `Runtime::block_on` (so its clock and timer wheel are there), tower inside a tokio
//! `current_thread` runtime with time enabled. The cases:
//! - **bare**: the `service_fn` alone;
//! - **timeout**: a 10 s timeout (it never fires);
//! - **concurrency limit**: 1,024 in flight;
//! - **retry**: a policy that copies the request but never retries (sheave's also keeps its
//!   default retry budget: one deposit per request);
//! - **load shed**: over the bare service;
//! - **rate limit**: a generous bucket (2^62 per second: it never empties);
//! - **full stack**: `map_request`, `map_response`, timeout, rate limit, retry, load shed,
//!   concurrency limit, in that order (tower's `RateLimit` is not `Clone`, so it cannot sit
//!   under tower's `Retry`; both stacks use the same order).
//!
//! Measured with the overhead meter (`sheave_load::meter`), the sides interleaved. Columns:
//! ns per call (median of 5 repetitions of 1M calls, the runtime's and the stack's set-up
//! measured alone and subtracted), heap allocations per call (the meter's counting global
//! allocator, set-up subtracted), and instructions per call from callgrind — deterministic,
//! where ns below ~10 vary 2x between processes here — computed as (count at 2N − count at
//! N) / N, N = 100,000, in child runs of this binary, so start-up cancels out.

use sheave_benches::CountingAlloc;
use sheave_load::meter::Meter;
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_IN_FLIGHT: usize = 1024;
const GENEROUS: u64 = 1 << 62;

/// Polls a future that must complete at once.
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the benchmarked stack must answer at once"),
    }
}

mod ours {
    use super::*;
    use sheave_middleware::ServiceBuilderExt;
    use sheave_middleware::limit::RateConfig;
    use sheave_middleware::retry::{Policy, RetryConfig, RetryLayer};
    use sheave_middleware::{ConcurrencyLimit, LoadShed, RateLimit, Retry, Timeout};
    use sheave_service::{Error, Service, ServiceBuilder, ServiceExt, service_fn};
    use std::fmt::Debug;

    /// Copies the request, never retries.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct NoRetry;

    impl<Res> Policy<u64, Res> for NoRetry {
        fn clone_request(&self, req: &u64) -> Option<u64> {
            Some(*req)
        }

        fn should_retry(&self, _outcome: Result<&Res, &Error>) -> bool {
            false
        }
    }

    pub(crate) fn bare() -> impl Service<u64, Response = u64, Error = Infallible> {
        service_fn(|x: u64| async move { Ok::<_, Infallible>(x + 1) })
    }

    fn rate() -> RateConfig {
        RateConfig::new(GENEROUS, Duration::from_secs(1))
    }

    fn run<S>(svc: &S, n: u64) -> u64
    where
        S: Service<u64, Response = u64>,
        S::Error: Debug,
    {
        let mut acc = 0u64;
        for i in 0..n {
            acc = acc.wrapping_add(now_or_never(svc.oneshot(black_box(i))).unwrap());
        }
        acc
    }

    pub(crate) fn run_case(case: usize, n: u64) -> u64 {
        let rt = sheave_core::Runtime::new().unwrap();
        rt.block_on(async {
            match case {
                0 => run(&bare(), n),
                1 => run(&Timeout::new(bare(), TIMEOUT), n),
                2 => run(&ConcurrencyLimit::new(bare(), MAX_IN_FLIGHT), n),
                3 => run(&Retry::with_policy(bare(), NoRetry, RetryConfig::new()), n),
                4 => run(&LoadShed::new(bare()), n),
                5 => run(&RateLimit::new(bare(), rate()), n),
                _ => {
                    let svc = ServiceBuilder::new()
                        .map_request(|x: u64| x ^ 1)
                        .map_response(|x: u64| x.wrapping_mul(3))
                        .timeout(TIMEOUT)
                        .rate_limit(rate())
                        .layer(RetryLayer::new(RetryConfig::new()).policy(NoRetry))
                        .load_shed()
                        .concurrency_limit(MAX_IN_FLIGHT)
                        .service(bare());
                    run(&svc, n)
                }
            }
        })
    }
}

mod peer {
    use super::*;
    use std::fmt::Debug;
    use tower::limit::{ConcurrencyLimit, RateLimit, rate::Rate};
    use tower::load_shed::LoadShed;
    use tower::retry::Retry;
    use tower::timeout::Timeout;
    use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

    /// Copies the request, never retries.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct NoRetry;

    impl<Res, E> tower::retry::Policy<u64, Res, E> for NoRetry {
        type Future = std::future::Ready<()>;

        fn retry(&mut self, _req: &mut u64, _result: &mut Result<Res, E>) -> Option<Self::Future> {
            None
        }

        fn clone_request(&mut self, req: &u64) -> Option<u64> {
            Some(*req)
        }
    }

    pub(crate) fn bare()
    -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone {
        service_fn(|x: u64| async move { Ok::<_, Infallible>(x + 1) })
    }

    fn rate() -> Rate {
        Rate::new(GENEROUS, Duration::from_secs(1))
    }

    fn run<S>(svc: &mut S, n: u64) -> u64
    where
        S: Service<u64, Response = u64>,
        S::Error: Debug,
    {
        let mut acc = 0u64;
        for i in 0..n {
            let ready = now_or_never(svc.ready()).unwrap();
            acc = acc.wrapping_add(now_or_never(ready.call(black_box(i))).unwrap());
        }
        acc
    }

    pub(crate) fn run_case(case: usize, n: u64) -> u64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            match case {
                0 => run(&mut bare(), n),
                1 => run(&mut Timeout::new(bare(), TIMEOUT), n),
                2 => run(&mut ConcurrencyLimit::new(bare(), MAX_IN_FLIGHT), n),
                3 => run(&mut Retry::new(NoRetry, bare()), n),
                4 => run(&mut LoadShed::new(bare()), n),
                5 => run(&mut RateLimit::new(bare(), rate()), n),
                _ => {
                    let mut svc = ServiceBuilder::new()
                        .map_request(|x: u64| x ^ 1)
                        .map_response(|x: u64| x.wrapping_mul(3))
                        .timeout(TIMEOUT)
                        .layer(tower::limit::RateLimitLayer::new(
                            GENEROUS,
                            Duration::from_secs(1),
                        ))
                        .retry(NoRetry)
                        .load_shed()
                        .concurrency_limit(MAX_IN_FLIGHT)
                        .service(bare());
                    run(&mut svc, n)
                }
            }
        })
    }
}

const CASES: [&str; 7] = [
    "bare",
    "timeout",
    "concurrency limit",
    "retry (never retries)",
    "load shed",
    "rate limit (generous)",
    "full stack + map_request/map_response",
];

/// Runs `n` calls of one case on one side; returns a checksum.
fn run_case(side: &str, case: usize, n: u64) -> u64 {
    match side {
        "sheave" => ours::run_case(case, n),
        _ => peer::run_case(case, n),
    }
}

const SIDES: [&str; 2] = ["sheave", "tower"];

fn main() {
    println!("## Middleware: one request through a stack (sheave vs tower 0.5, same run)\n");
    Meter::new("middleware")
        .calls(1_000_000)
        .instructions(100_000)
        .measure(&CASES, &SIDES, |case, side, n| {
            run_case(SIDES[side], case, n)
        })
        .print();
}
