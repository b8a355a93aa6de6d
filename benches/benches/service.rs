//! The cost of the Service model itself, beside tower 0.5 in the same run.
//!
//! Run: `cargo bench -p sheave-benches --bench service` (valgrind, if installed, adds the
//! instruction column).
//!
//! Every case makes one request through a stack over a `service_fn` that answers at once, with
//! readiness + call (`oneshot` for sheave; `ready().await` + `call` on `&mut` for tower), polled
//! directly with a no-op waker (no runtime in the measurement):
//! - **bare**: the `service_fn` alone;
//! - **5 combinators**: `map_request`, `map_response`, `map_err`, `and_then`, `then`;
//! - **5 combinators, boxed**: the same stack behind `BoxService` (tower's `util::BoxService`).
//!
//! Measured with the overhead meter (`sheave_load::meter`), the sides interleaved. Columns:
//! ns per call (median of 5 repetitions of 2M calls), heap allocations per call (the meter's
//! counting global allocator), and instructions per call from callgrind — deterministic,
//! where ns below ~10 vary 2x between processes here — computed as (count at 2N − count at
//! N) / N, N = 200,000, in child runs of this binary, so start-up cancels out.

use sheave_benches::CountingAlloc;
use sheave_load::meter::Meter;
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

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
    use sheave_service::{BoxService, Service, ServiceExt, service_fn};

    pub(crate) fn bare() -> impl Service<u64, Response = u64, Error = Infallible> {
        service_fn(|x: u64| async move { Ok::<_, Infallible>(x + 1) })
    }

    pub(crate) fn stack() -> impl Service<u64, Response = u64, Error = Infallible> {
        bare()
            .map_request(|x: u64| x ^ 1)
            .map_response(|x: u64| x.wrapping_mul(3))
            .map_err(|e: Infallible| e)
            .and_then(|x: u64| async move { Ok::<_, Infallible>(x + 2) })
            .then(|r: Result<u64, Infallible>| async move { r })
    }

    pub(crate) fn boxed() -> BoxService<u64, u64, Infallible> {
        stack().boxed()
    }

    pub(crate) fn run<S: Service<u64, Response = u64, Error = Infallible>>(svc: &S, n: u64) -> u64 {
        let mut acc = 0u64;
        for i in 0..n {
            acc = acc.wrapping_add(now_or_never(svc.oneshot(black_box(i))).unwrap());
        }
        acc
    }
}

mod peer {
    use super::*;
    use tower::util::BoxService;
    use tower::{Service, ServiceExt, service_fn};

    pub(crate) fn bare() -> impl Service<u64, Response = u64, Error = Infallible> {
        service_fn(|x: u64| async move { Ok::<_, Infallible>(x + 1) })
    }

    pub(crate) fn stack() -> impl Service<u64, Response = u64, Error = Infallible> {
        bare()
            .map_request(|x: u64| x ^ 1)
            .map_response(|x: u64| x.wrapping_mul(3))
            .map_err(|e: Infallible| e)
            .and_then(|x: u64| async move { Ok::<_, Infallible>(x + 2) })
            .then(|r: Result<u64, Infallible>| async move { r })
    }

    pub(crate) fn boxed() -> BoxService<u64, u64, Infallible> {
        // Built inline: an `impl Service` return type would hide that the futures are `Send`.
        BoxService::new(
            service_fn(|x: u64| async move { Ok::<_, Infallible>(x + 1) })
                .map_request(|x: u64| x ^ 1)
                .map_response(|x: u64| x.wrapping_mul(3))
                .map_err(|e: Infallible| e)
                .and_then(|x: u64| async move { Ok::<_, Infallible>(x + 2) })
                .then(|r: Result<u64, Infallible>| async move { r }),
        )
    }

    pub(crate) fn run<S: Service<u64, Response = u64, Error = Infallible>>(
        svc: &mut S,
        n: u64,
    ) -> u64 {
        let mut acc = 0u64;
        for i in 0..n {
            let ready = now_or_never(svc.ready()).unwrap();
            acc = acc.wrapping_add(now_or_never(ready.call(black_box(i))).unwrap());
        }
        acc
    }
}

const CASES: [&str; 3] = ["bare", "5 combinators", "5 combinators, boxed"];

/// Runs `n` calls of one case on one side; returns a checksum.
fn run_case(side: &str, case: &str, n: u64) -> u64 {
    match (side, case) {
        ("sheave", "bare") => ours::run(&ours::bare(), n),
        ("sheave", "5 combinators") => ours::run(&ours::stack(), n),
        ("sheave", _) => ours::run(&ours::boxed(), n),
        (_, "bare") => peer::run(&mut peer::bare(), n),
        (_, "5 combinators") => peer::run(&mut peer::stack(), n),
        _ => peer::run(&mut peer::boxed(), n),
    }
}

const SIDES: [&str; 2] = ["sheave", "tower"];

fn main() {
    println!("## Service model: one request through a stack (sheave vs tower 0.5, same run)\n");
    Meter::new("service")
        .calls(2_000_000)
        .instructions(200_000)
        .measure(&CASES, &SIDES, |case, side, n| {
            run_case(SIDES[side], CASES[case], n)
        })
        .print();
}
