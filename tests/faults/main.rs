//! The balanced client under real backend faults, over real loopback sockets.
//!
//! The client is the documented stack (`examples/support/cluster.rs`: a deadline, idempotent
//! retries within a budget, a concurrency limit that sheds instead of queueing, a per-attempt
//! timeout, p2c peak-EWMA with ejection) in front of redis-protocol servers on a second runtime
//! thread. Load is offered **open loop** at a steady rate — each request is sent at its time
//! whatever the others are doing, and its latency counts from that time — so a stall shows as
//! missing successes, not as a slower closed loop. Each case prints one line of figures.
//!
//! The servers have switches: a hang switch (requests are read and never answered, sockets
//! stay open — a `SIGSTOP`ped process), a kill (the listener and its connections close), and a
//! backend that accepts every connection and closes it at once.

#[path = "../../examples/support/mod.rs"]
mod support;

use sheave::service::{Service, ServiceExt};
use sheave::time;
use sheave_proto::Connector;
use sheave_proto::dispatch::ClientConfig;
use sheave_proto::resp::{Frame, RespCodec};
use sheave_service::{ErrorKind, NewService};
use std::cell::RefCell;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::cluster::{ClientOptions, accept_and_close, cluster, connected, roomy};
use support::openloop::{
    Outcome, assert_few_sheds, assert_no_window_below, at, command, failed, failed_unshed,
    failures, get, offer, percentile, readings, requests, share,
};

/// The cases measure rates on a 2-core machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A hang from 1 s to 3 s of a 6 s run at 4,000/s; returns the outcomes and b's shares
/// while hung (from 1 s after the hang began) and after (from 1 s to 2 s after it ended).
fn hang_run(options: ClientOptions) -> (Vec<Outcome>, f64, f64) {
    let c = cluster(&["a", "b", "c"], Duration::ZERO);
    let b = c.backends[1].hang_switch();
    let marks: RefCell<Vec<Vec<u64>>> = RefCell::default();
    let mark = || marks.borrow_mut().push(readings(&c.stats));
    let outcomes = c.rt.block_on(async {
        let client = connected(&c.addrs(), &c.stats, options).await;
        let steps = vec![
            at(1.0, || b.hang()),
            at(2.0, mark),
            at(3.0, || {
                mark();
                b.resume()
            }),
            at(4.0, mark),
            at(5.0, mark),
            at(3.25, mark),
            at(3.5, mark),
            at(3.75, mark),
        ];
        offer(client, 4_000, 24_000, steps).await
    });
    c.rt.handle().shutdown();
    let m = marks.borrow();
    if std::env::var_os("FAULTS_DEBUG").is_some() {
        eprintln!("{m:?}");
    }
    (outcomes, share(&m[0], &m[1], 1), share(&m[5], &m[6], 1))
}

#[test]
fn a_hung_backend_is_ejected_within_a_second_and_with_per_try_timeouts_no_request_fails() {
    let _one = serial();
    let (outcomes, hung_share, recovered_share) = hang_run(roomy());
    let p99 = percentile(outcomes.iter().map(|o| o.latency).collect(), 0.99);
    println!(
        "hung backend, per-try timeouts: {} requests, {} failed, b's share {:.2}% while hung \
         and {:.1}% 1-2 s after, p99 {p99:?}",
        outcomes.len(),
        failures(&outcomes),
        hung_share * 100.0,
        recovered_share * 100.0
    );
    assert_eq!(
        failed_unshed(&outcomes),
        0,
        "per-try timeouts retry elsewhere: {}",
        failures(&outcomes)
    );
    assert_few_sheds(&outcomes);
    assert_no_window_below(&outcomes, 0.9);
    assert!(
        hung_share < 0.02,
        "ejected within a second: b took {:.2}% from 1 s into the hang",
        hung_share * 100.0
    );
    assert!(
        recovered_share >= 0.2,
        "back within 2 s: b took {:.1}%",
        recovered_share * 100.0
    );
}

#[test]
fn with_only_the_outer_deadline_a_hung_backend_fails_at_most_one_percent() {
    let _one = serial();
    let options = ClientOptions {
        per_try: None,
        ..roomy()
    };
    let (outcomes, hung_share, recovered_share) = hang_run(options);
    let share_failed = failed(&outcomes) as f64 / outcomes.len() as f64;
    println!(
        "hung backend, outer deadline only: {} requests, {} failed ({:.2}%), b's share {:.2}% \
         while hung and {:.1}% after",
        outcomes.len(),
        failures(&outcomes),
        share_failed * 100.0,
        hung_share * 100.0,
        recovered_share * 100.0
    );
    assert!(share_failed <= 0.01, "{:.2}% failed", share_failed * 100.0);
    assert_no_window_below(&outcomes, 0.9);
}

#[test]
fn hung_and_dead_at_once_the_third_endpoint_carries_everything() {
    let _one = serial();
    let mut c = cluster(&["a", "b", "c"], Duration::ZERO);
    let b = c.backends[1].hang_switch();
    let backends = RefCell::new(std::mem::take(&mut c.backends));
    let marks: RefCell<Vec<Vec<u64>>> = RefCell::default();
    let mark = || marks.borrow_mut().push(readings(&c.stats));
    let addrs: Vec<_> = backends.borrow().iter().map(|b| (b.name, b.addr)).collect();
    let outcomes = c.rt.block_on(async {
        let client = connected(&addrs, &c.stats, roomy()).await;
        let steps = vec![
            at(1.0, || b.hang()),
            at(1.5, || backends.borrow_mut()[2].kill()),
            at(2.5, mark),
            at(4.9, mark),
        ];
        offer(client, 4_000, 20_000, steps).await
    });
    b.resume();
    c.rt.handle().shutdown();
    let m = marks.borrow();
    let a_share = share(&m[0], &m[1], 0);
    println!(
        "hung b + dead c: {} requests, {} failed, a's share {:.1}% from 2.5 s",
        outcomes.len(),
        failures(&outcomes),
        a_share * 100.0
    );
    assert_eq!(failed_unshed(&outcomes), 0, "{}", failures(&outcomes));
    assert_few_sheds(&outcomes);
    assert_no_window_below(&outcomes, 0.9);
    assert!(
        a_share > 0.95,
        "a carries everything: {:.1}%",
        a_share * 100.0
    );
}

#[test]
fn a_backend_that_accepts_and_closes_at_once_is_ejected_and_barely_redialled() {
    let _one = serial();
    let c = cluster(&["a", "b"], Duration::ZERO);
    let (x, accepted) = accept_and_close(c.rt.handle(), 1).unwrap();
    let mut addrs = c.addrs();
    addrs.push(("x", x));
    let accepts_at: RefCell<Vec<usize>> = RefCell::default();
    let outcomes = c.rt.block_on(async {
        let client = connected(&addrs, &c.stats, roomy()).await;
        let read = || {
            accepts_at
                .borrow_mut()
                .push(accepted.load(Ordering::SeqCst))
        };
        let steps = vec![at(1.0, read), at(4.9, read)];
        offer(client, 4_000, 20_000, steps).await
    });
    c.rt.handle().shutdown();
    let a = accepts_at.borrow();
    let per_second = (a[1] - a[0]) as f64 / 3.9;
    println!(
        "accept-and-close backend: {} requests, {} failed, {} connections in the first second, \
         {per_second:.1} redials/s after",
        outcomes.len(),
        failures(&outcomes),
        a[0]
    );
    assert_eq!(
        failed_unshed(&outcomes),
        0,
        "idempotent requests are retried elsewhere: {}",
        failures(&outcomes)
    );
    assert_few_sheds(&outcomes);
    assert!(
        a[0] <= 10,
        "ejected within its threshold: {} connections",
        a[0]
    );
    assert!(
        per_second <= 3.0,
        "{per_second:.1} redials per second while ejected"
    );
}

#[test]
fn abandoned_calls_past_the_bound_recycle_the_connection_and_no_reply_reaches_the_wrong_caller() {
    let _one = serial();
    let c = cluster(&["a"], Duration::ZERO);
    let hang = c.backends[0].hang_switch();
    let addr = c.backends[0].addr;
    c.rt.block_on(async {
        let connector = Connector::pipeline(RespCodec::new())
            .config(ClientConfig::default().max_in_flight(8).max_abandoned(2));
        let set = |k: &str, v: &str| command(&[b"SET", k.as_bytes(), v.as_bytes()]);
        let get = |k: &str| command(&[b"GET", k.as_bytes()]);
        let give_up = Duration::from_millis(20);

        // Two abandoned calls are tolerated; replies still reach the right callers.
        let client = connector.new_service(addr).await.unwrap();
        for (k, v) in [("k1", "v1"), ("k2", "v2"), ("k3", "v3")] {
            client.clone().oneshot(set(k, v)).await.unwrap();
        }
        hang.hang();
        for k in ["k1", "k2"] {
            assert!(
                time::timeout(give_up, client.clone().oneshot(get(k)))
                    .await
                    .is_err()
            );
        }
        assert_eq!(
            Service::<Frame>::in_flight(&client),
            Some(2),
            "abandoned calls hold their slots"
        );
        assert!(!client.is_closed(), "within the bound");
        hang.resume();
        let reply = client.clone().oneshot(get("k3")).await.unwrap();
        assert_eq!(reply, Frame::Bulk("v3".into()), "k3's reply, not k1's");
        assert_eq!(Service::<Frame>::in_flight(&client), Some(0));

        // A third one past the bound recycles the connection.
        hang.hang();
        for k in ["k1", "k2", "k3"] {
            assert!(
                time::timeout(give_up, client.clone().oneshot(get(k)))
                    .await
                    .is_err()
            );
        }
        assert!(
            client.is_closed(),
            "past the bound the connection is closed"
        );
        let err = client.clone().oneshot(get("k1")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed);
        assert!(err.is_retryable(), "callers may retry elsewhere: {err}");
        hang.resume();
        let fresh = connector.new_service(addr).await.unwrap();
        assert_eq!(
            fresh.oneshot(get("k2")).await.unwrap(),
            Frame::Bulk("v2".into())
        );
    });
    c.rt.handle().shutdown();
}

#[test]
fn overload_at_ten_times_capacity_fails_fast_in_bounded_memory_and_admitted_requests_stay_fast() {
    let _one = serial();
    // 3 backends answering in 50 ms behind a limit of 64: capacity 1,280 requests/s.
    let c = cluster(&["a", "b", "c"], Duration::from_millis(50));
    let rss_kib = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let (unloaded, loaded, grown, future_bytes) = c.rt.block_on(async {
        let client = connected(&c.addrs(), &c.stats, ClientOptions::default()).await;
        // What one request of this stack holds while it is in flight: its future.
        let future_bytes = std::mem::size_of_val(&client.oneshot(get(0)));
        let unloaded = offer(client.clone(), 400, 800, Vec::new()).await;
        let before = rss_kib();
        let loaded = offer(client, 12_800, 20_000, Vec::new()).await;
        (
            unloaded,
            loaded,
            rss_kib().saturating_sub(before),
            future_bytes,
        )
    });
    c.rt.handle().shutdown();
    let p99 = |o: &[Outcome], ok: bool| {
        percentile(
            o.iter().filter(|o| o.ok == ok).map(|o| o.latency).collect(),
            0.99,
        )
    };
    let (base, admitted) = (p99(&unloaded, true), p99(&loaded, true));
    // A refusal's own time: from the call to the error.
    let refused = percentile(
        loaded.iter().filter(|o| !o.ok).map(|o| o.service).collect(),
        0.99,
    );
    println!(
        "overload 10x: {} offered, {} admitted, {} refused; p99 unloaded {base:?}, admitted \
         {admitted:?}, refused {refused:?}; RSS grew {grown} KiB; a request's future \
         {future_bytes} bytes",
        loaded.len(),
        loaded.len() - failed(&loaded),
        failed(&loaded)
    );
    assert_eq!(failed(&unloaded), 0);
    assert!(
        failed(&loaded) > loaded.len() / 2,
        "most of a 10x load is refused"
    );
    assert!(
        refused <= Duration::from_millis(1),
        "refusals are immediate: {refused:?}"
    );
    assert!(
        admitted <= 2 * base,
        "admitted p99 {admitted:?} vs unloaded {base:?}"
    );
    assert!(
        grown < 64 * 1024,
        "client memory stays bounded: grew {grown} KiB"
    );
}

#[test]
fn sixteen_equal_endpoints_under_peak_ewma_each_get_within_a_quarter_of_an_even_share() {
    let _one = serial();
    const NAMES: [&str; 16] = [
        "e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9", "e10", "e11", "e12", "e13",
        "e14", "e15",
    ];
    let c = cluster(&NAMES, Duration::ZERO);
    // Room for a scheduling hiccup of the shared machine: this case is about shares.
    let options = ClientOptions {
        limit: 1024,
        ..roomy()
    };
    let outcomes = c.rt.block_on(async {
        let client = connected(&c.addrs(), &c.stats, options).await;
        offer(client, 8_000, 40_000, Vec::new()).await
    });
    c.rt.handle().shutdown();
    let counts: Vec<u64> = NAMES.iter().map(|n| requests(&c.stats, n)).collect();
    let total: u64 = counts.iter().sum();
    let shares: Vec<f64> = counts.iter().map(|&n| n as f64 / total as f64).collect();
    if std::env::var_os("FAULTS_DEBUG").is_some() {
        eprintln!("{counts:?}");
    }
    let (lo, hi) = shares
        .iter()
        .fold((1.0f64, 0.0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    println!(
        "16 equal endpoints: shares {:.2}%..{:.2}% (even 6.25%), {} failed",
        lo * 100.0,
        hi * 100.0,
        failures(&outcomes)
    );
    assert_eq!(failed_unshed(&outcomes), 0, "{}", failures(&outcomes));
    assert_few_sheds(&outcomes);
    let even = 1.0 / 16.0;
    assert!(
        lo >= 0.75 * even && hi <= 1.25 * even,
        "shares {:.2}%..{:.2}%",
        lo * 100.0,
        hi * 100.0
    );
}
