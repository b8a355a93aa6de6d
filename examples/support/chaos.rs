//! The reliability suite's balanced-client cases, shared by `tests/chaos` (which asserts
//! their promises) and the `chaos` example (which reports them): the documented client over
//! three kv servers, with a chaos proxy in front of `b`.

#![allow(dead_code)] // the tests and the report use different parts

use super::cluster::{ClientOptions, Cluster, cluster, connected_counting, roomy};
use super::openloop::{Outcome, at, offer, percentile, readings, share};
use sheave::Handle;
use sheave_middleware::hedge::HedgeConfig;
use sheave_proto::chaos::{ChaosHandle, ChaosProxy, Toxics};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

/// Starts a chaos proxy in front of `upstream` on runtime thread `thread`.
pub fn proxy(rt: &Handle, thread: usize, upstream: SocketAddr) -> (SocketAddr, ChaosHandle) {
    let (bound, _) = super::bound_on(rt, thread, move || {
        let proxy = ChaosProxy::bind("127.0.0.1:0".parse().unwrap(), upstream)?;
        Ok(((proxy.local_addr(), proxy.handle()), proxy.run()))
    })
    .expect("a chaos proxy on loopback");
    bound
}

/// Three backends, the middle one (`b`) behind a chaos proxy: the cluster, the client's
/// addresses, and the proxy's handle.
pub fn cluster_with_proxy() -> (Cluster, Vec<(&'static str, SocketAddr)>, ChaosHandle) {
    let c = cluster(&["a", "b", "c"], Duration::ZERO);
    let (b, chaos) = proxy(c.rt.handle(), 1, c.backends[1].addr);
    let mut addrs = c.addrs();
    addrs[1].1 = b;
    (c, addrs, chaos)
}

pub fn p99(outcomes: &[Outcome]) -> Duration {
    percentile(outcomes.iter().map(|o| o.latency).collect(), 0.99)
}

/// The outcomes of requests due between two instants of the run.
pub fn during(outcomes: &[Outcome], from: f64, to: f64) -> Vec<Outcome> {
    let (from, to) = (Duration::from_secs_f64(from), Duration::from_secs_f64(to));
    outcomes
        .iter()
        .filter(|o| o.due >= from && o.due < to)
        .copied()
        .collect()
}

/// Case 1's figures: a blackhole on `b` from 1 s to 3 s of a 6 s run at 4,000/s.
#[derive(Debug)]
pub struct Blackhole {
    pub outcomes: Vec<Outcome>,
    /// `b`'s share of the traffic from 1 s into the fault to its end.
    pub hung_share: f64,
    /// `b`'s share from 1 s to 2 s after the fault ended.
    pub back_share: f64,
    /// Attempts the retry layer made (first tries and retries).
    pub attempts: u64,
}

pub fn blackhole() -> Blackhole {
    let (c, addrs, chaos) = cluster_with_proxy();
    let marks: RefCell<Vec<Vec<u64>>> = RefCell::default();
    let mark = || marks.borrow_mut().push(readings(&c.stats));
    let (outcomes, attempts) = c.rt.block_on(async {
        let (client, attempts) = connected_counting(&addrs, &c.stats, roomy()).await;
        let steps = vec![
            at(1.0, || chaos.set(Toxics::none().blackhole())),
            at(2.0, mark),
            at(3.0, || {
                mark();
                chaos.clear()
            }),
            at(4.0, mark),
            at(5.0, mark),
        ];
        let outcomes = offer(client, 4_000, 24_000, steps).await;
        (outcomes, attempts.snapshot().requests)
    });
    c.rt.handle().shutdown();
    let m = marks.borrow();
    Blackhole {
        outcomes,
        hung_share: share(&m[0], &m[1], 1),
        back_share: share(&m[2], &m[3], 1),
        attempts,
    }
}

/// Case 4's figures: `b` at least 10x slower from 2 s of a 5 s run at 4,000/s.
#[derive(Debug)]
pub struct Slow {
    pub outcomes: Vec<Outcome>,
    /// `b`'s share from 2.5 s to the end.
    pub slow_share: f64,
    pub attempts: u64,
}

pub fn slow(hedge: Option<HedgeConfig>) -> Slow {
    let (c, addrs, chaos) = cluster_with_proxy();
    let marks: RefCell<Vec<Vec<u64>>> = RefCell::default();
    let mark = || marks.borrow_mut().push(readings(&c.stats));
    let options = ClientOptions { hedge, ..roomy() };
    let (outcomes, attempts) = c.rt.block_on(async {
        let (client, attempts) = connected_counting(&addrs, &c.stats, options).await;
        // Healthy for 2 s (hedging learns its percentile over a 1 s window), then b answers
        // at least 10x late: round trips here are 0.1-0.3 ms, so +1.5 ms each way (a margin
        // for a busy machine, whose stalls make the healthy endpoints slower too).
        let slow = Toxics::none().latency(Duration::from_micros(1_500), Duration::ZERO);
        let steps = vec![at(2.0, || chaos.set(slow)), at(2.5, mark), at(4.99, mark)];
        let outcomes = offer(client, 4_000, 20_000, steps).await;
        (outcomes, attempts.snapshot().requests)
    });
    c.rt.handle().shutdown();
    let m = marks.borrow();
    Slow {
        outcomes,
        slow_share: share(&m[0], &m[1], 1),
        attempts,
    }
}

/// The hedging the slow case turns on: a backup after the 90th percentile, learned over
/// 1 s windows.
pub fn hedging() -> HedgeConfig {
    HedgeConfig {
        window: Duration::from_secs(1),
        ..HedgeConfig::default().percentile(0.9).min_samples(100)
    }
}
