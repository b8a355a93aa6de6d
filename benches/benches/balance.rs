//! The balancer beside tower 0.5's `balance::p2c`, same cases, same run.
//!
//! Run: `cargo bench -p sheave-benches --bench balance` (valgrind, if installed, adds the
//! instruction column).
//!
//! - **decision + call**: one request through p2c over 8 endpoints that answer at once
//!   (least-pending load on both sides: tower's `PendingRequests`, our `P2cPending`), polled
//!   directly with a no-op waker. Measured with the overhead meter (`sheave_load::meter`),
//!   the sides interleaved: ns per call (median of 5 repetitions of 200,000 calls, the
//!   balancer's set-up measured alone and subtracted), heap allocations and bytes per call
//!   (the meter's counting allocator) and instructions per call (callgrind in child runs of
//!   this binary: (count at 2N − count at N) / N, N = 100,000).
//! - **peak-EWMA under load**: 8 simulated endpoints answering after 1 ms, one after 10 ms;
//!   one driver keeps 32 requests in flight for 20,000 requests through p2c peak-EWMA
//!   (tower's `PeakEwmaDiscover`, default RTT 1 ms, decay 10 s; ours the same parameters),
//!   real timers on both sides (sheave's wheel, tokio's). Reports p50/p99/p999 latency,
//!   requests/s and the share the slow endpoint got.

use futures::StreamExt;
use sheave_benches::{CountingAlloc, fmt_dur, print_table};
use sheave_load::meter::Meter;
use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const ENDPOINTS: usize = 8;

fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the benchmarked balancer must answer at once"),
    }
}

/// `n` decisions + calls through sheave's balancer; returns a checksum.
fn sheave_decisions(n: u64) -> u64 {
    use sheave_middleware::balance::Balance;
    use sheave_middleware::discover;
    use sheave_service::{Error, ServiceExt, service_fn};
    let rt = sheave_core::Runtime::new().unwrap();
    rt.block_on(async {
        let connect = |i: usize| async move {
            Ok::<_, Error>(service_fn(move |x: u64| async move {
                Ok::<_, Error>(x + i as u64)
            }))
        };
        let lb = Balance::builder()
            .p2c_pending()
            .seed(7)
            .build(discover::fixed((0..ENDPOINTS).map(|i| (i, i))), connect);
        while lb.endpoints().len() < ENDPOINTS {
            sheave_core::yield_now().await;
        }
        let mut acc = 0u64;
        for i in 0..n {
            acc = acc.wrapping_add(now_or_never(lb.oneshot(black_box(i))).unwrap());
        }
        acc
    })
}

/// `n` decisions + calls through tower's p2c balancer; returns a checksum.
fn tower_decisions(n: u64) -> u64 {
    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;
    use tower::load::{CompleteOnResponse, PendingRequests};
    use tower::{Service, ServiceExt, service_fn};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let endpoints: Vec<_> = (0..ENDPOINTS)
            .map(|i| {
                PendingRequests::new(
                    service_fn(move |x: u64| async move { Ok::<_, Infallible>(x + i as u64) }),
                    CompleteOnResponse::default(),
                )
            })
            .collect();
        let mut lb = Balance::new(ServiceList::new(endpoints));
        // Let it discover and ready every endpoint.
        lb.ready().await.unwrap();
        let mut acc = 0u64;
        for i in 0..n {
            let ready = now_or_never(lb.ready()).unwrap();
            acc = acc.wrapping_add(now_or_never(ready.call(black_box(i))).unwrap());
        }
        acc
    })
}

fn run(side: &str, n: u64) -> u64 {
    if side == "sheave" {
        sheave_decisions(n)
    } else {
        tower_decisions(n)
    }
}

struct LoadResult {
    latencies: Vec<Duration>,
    elapsed: Duration,
    slow_share: f64,
}

const REQUESTS: usize = 20_000;
const IN_FLIGHT: usize = 32;

fn latency_of(endpoint: usize) -> Duration {
    Duration::from_millis(if endpoint == ENDPOINTS - 1 { 10 } else { 1 })
}

fn sheave_load() -> LoadResult {
    use sheave_middleware::balance::{Balance, PeakEwma};
    use sheave_middleware::discover;
    use sheave_service::{Error, Service, service_fn};
    let rt = sheave_core::Runtime::new().unwrap();
    rt.block_on(async {
        let hits = Rc::new(RefCell::new([0usize; ENDPOINTS]));
        let h = hits.clone();
        let connect = move |i: usize| {
            let hits = h.clone();
            async move {
                Ok::<_, Error>(service_fn(move |_: u64| {
                    hits.borrow_mut()[i] += 1;
                    async move {
                        sheave_core::time::sleep(latency_of(i)).await;
                        Ok::<_, Error>(())
                    }
                }))
            }
        };
        let lb = Rc::new(
            Balance::builder()
                .peak_ewma(PeakEwma {
                    decay: Duration::from_secs(10),
                    default_rtt: Duration::from_millis(1),
                    failure_penalty: Duration::from_secs(1),
                    ..PeakEwma::default()
                })
                .build(discover::fixed((0..ENDPOINTS).map(|i| (i, i))), connect),
        );
        while lb.endpoints().len() < ENDPOINTS {
            sheave_core::yield_now().await;
        }
        let latencies = Rc::new(RefCell::new(Vec::with_capacity(REQUESTS)));
        let in_flight = Rc::new(std::cell::Cell::new(0usize));
        let (done_tx, mut done_rx) = futures::channel::mpsc::unbounded::<()>();
        let start = Instant::now();
        for i in 0..REQUESTS {
            while in_flight.get() >= IN_FLIGHT {
                done_rx.next().await;
            }
            let permit = lb.ready().await.unwrap();
            in_flight.set(in_flight.get() + 1);
            let (lb, lat, fl, tx) = (
                lb.clone(),
                latencies.clone(),
                in_flight.clone(),
                done_tx.clone(),
            );
            sheave_core::spawn(async move {
                let t = Instant::now();
                lb.call(permit, i as u64).await.unwrap();
                lat.borrow_mut().push(t.elapsed());
                fl.set(fl.get() - 1);
                let _ = tx.unbounded_send(());
            });
        }
        while in_flight.get() > 0 {
            done_rx.next().await;
        }
        let elapsed = start.elapsed();
        let hits = *hits.borrow();
        let latencies = std::mem::take(&mut *latencies.borrow_mut());
        LoadResult {
            latencies,
            elapsed,
            slow_share: hits[ENDPOINTS - 1] as f64 / REQUESTS as f64,
        }
    })
}

fn tower_load() -> LoadResult {
    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;
    use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
    use tower::{Service, ServiceExt, service_fn};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let hits = Rc::new(RefCell::new([0usize; ENDPOINTS]));
        let endpoints: Vec<_> = (0..ENDPOINTS)
            .map(|i| {
                let hits = hits.clone();
                service_fn(move |_: u64| {
                    hits.borrow_mut()[i] += 1;
                    async move {
                        tokio::time::sleep(latency_of(i)).await;
                        Ok::<_, Infallible>(())
                    }
                })
            })
            .collect();
        let discover = PeakEwmaDiscover::new(
            ServiceList::new(endpoints),
            Duration::from_millis(1),
            Duration::from_secs(10),
            CompleteOnResponse::default(),
        );
        let mut lb = Balance::new(discover);
        let latencies = Rc::new(RefCell::new(Vec::with_capacity(REQUESTS)));
        let in_flight = Rc::new(std::cell::Cell::new(0usize));
        let (done_tx, mut done_rx) = futures::channel::mpsc::unbounded::<()>();
        let start = Instant::now();
        for i in 0..REQUESTS {
            while in_flight.get() >= IN_FLIGHT {
                done_rx.next().await;
            }
            let fut = lb.ready().await.unwrap().call(i as u64);
            in_flight.set(in_flight.get() + 1);
            let (lat, fl, tx) = (latencies.clone(), in_flight.clone(), done_tx.clone());
            tokio::task::spawn_local(async move {
                let t = Instant::now();
                fut.await.unwrap();
                lat.borrow_mut().push(t.elapsed());
                fl.set(fl.get() - 1);
                let _ = tx.unbounded_send(());
            });
        }
        while in_flight.get() > 0 {
            done_rx.next().await;
        }
        let elapsed = start.elapsed();
        let hits = *hits.borrow();
        let latencies = std::mem::take(&mut *latencies.borrow_mut());
        LoadResult {
            latencies,
            elapsed,
            slow_share: hits[ENDPOINTS - 1] as f64 / REQUESTS as f64,
        }
    })
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    println!(
        "## One balancing decision + call, p2c over {ENDPOINTS} ready endpoints (sheave vs tower 0.5)\n"
    );
    const SIDES: [&str; 2] = ["sheave", "tower"];
    Meter::new("balance")
        .calls(200_000)
        .instructions(100_000)
        .measure(&["decision + call"], &SIDES, |_, side, n| {
            run(SIDES[side], n)
        })
        .print_by_side();

    println!(
        "\n## p2c peak-EWMA under load: {ENDPOINTS} endpoints (1 ms; one 10 ms), {IN_FLIGHT} in flight, {REQUESTS} requests, real timers, 2 runs each interleaved\n"
    );
    let mut rows = Vec::new();
    let mut runs: Vec<(&str, LoadResult)> = Vec::new();
    for _ in 0..2 {
        runs.push(("sheave", sheave_load()));
        runs.push(("tower", tower_load()));
    }
    for side in ["sheave", "tower"] {
        let mine: Vec<&LoadResult> = runs
            .iter()
            .filter(|(s, _)| *s == side)
            .map(|(_, r)| r)
            .collect();
        let mut all: Vec<Duration> = mine
            .iter()
            .flat_map(|r| r.latencies.iter().copied())
            .collect();
        all.sort_unstable();
        let secs: f64 = mine.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        let share = mine.iter().map(|r| r.slow_share).sum::<f64>() / mine.len() as f64;
        rows.push(vec![
            side.to_string(),
            fmt_dur(pct(&all, 0.5)),
            fmt_dur(pct(&all, 0.99)),
            fmt_dur(pct(&all, 0.999)),
            format!("{:.0}", all.len() as f64 / secs),
            format!("{:.1}%", share * 100.0),
        ]);
    }
    print_table(
        &[
            "side",
            "p50",
            "p99",
            "p999",
            "req/s",
            "slow endpoint's share",
        ],
        &rows,
    );
}
