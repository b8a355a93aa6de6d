//! The reliability suite, balanced-client half: the documented client stack
//! (`examples/support/cluster.rs`) over three kv servers, with the chaos proxy
//! (`sheave_proto::chaos`) in front of one of them injecting the fault. Real sockets, load
//! offered open loop at a steady rate; each case prints one line of figures and asserts the
//! promise.
//!
//! The cases measure shares and latencies in real time on a 2-core machine that may be shared
//! with a build: each runs up to three times (`with_retries`) and passes on the first attempt
//! that keeps every promise; every attempt prints its figures.

#[path = "../../examples/support/mod.rs"]
mod support;

use sheave::service::ServiceExt;
use sheave_proto::Connector;
use sheave_proto::chaos::Toxics;
use sheave_proto::resp::{Frame, RespCodec};
use sheave_service::{ErrorKind, NewService};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use support::chaos::{self, cluster_with_proxy, during, p99};
use support::cluster::{Cluster, cluster, connected_counting, roomy};
use support::openloop::{
    assert_few_sheds, assert_no_window_below, at, command, failed, failed_unshed, failures, offer,
    offer_checked, with_retries,
};

/// The cases measure rates on a 2-core machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn case_1_a_blackholed_backend_fails_nothing_is_ejected_within_a_second_and_comes_back() {
    let _one = serial();
    with_retries(3, || {
        let run = chaos::blackhole();
        let outcomes = &run.outcomes;
        let fault_p99 = p99(&during(outcomes, 1.0, 3.0));
        println!(
            "case 1, blackhole: {} requests, {} failed, {} retries, p99 during the fault \
             {fault_p99:?}, b's share {:.2}% from 1 s into it and {:.1}% 1-2 s after",
            outcomes.len(),
            failures(outcomes),
            run.attempts.saturating_sub(outcomes.len() as u64),
            run.hung_share * 100.0,
            run.back_share * 100.0
        );
        assert_eq!(failed_unshed(outcomes), 0, "{}", failures(outcomes));
        assert_few_sheds(outcomes);
        assert_no_window_below(outcomes, 0.9);
        assert!(
            run.hung_share < 0.02,
            "ejected within 1 s: {:.2}%",
            run.hung_share * 100.0
        );
        // Back in rotation — at less than an even share: the proxy's extra hop makes b's round
        // trips longer than a's and c's, and peak-EWMA sees that.
        assert!(
            run.back_share >= 0.1,
            "probed back after the fault: {:.1}%",
            run.back_share * 100.0
        );
    });
}

/// Every backend holds `k0..k99` with value `v<n>`, so a reply says which request it answers.
fn preload(c: &Cluster) {
    let addrs: Vec<SocketAddr> = c.backends.iter().map(|b| b.addr).collect();
    c.rt.block_on(async {
        let connector = Connector::pipeline(RespCodec::new());
        for addr in addrs {
            let conn = connector.new_service(addr).await.unwrap();
            for k in 0..100 {
                let (key, value) = (format!("k{k}"), format!("v{k}"));
                let set = command(&[b"SET", key.as_bytes(), value.as_bytes()]);
                conn.clone().oneshot(set).await.unwrap();
            }
        }
    });
}

/// Whether `reply` is the value request `i` (a GET of `k{i % 100}`) asked for.
fn is_its_value(i: u64, reply: &Frame) -> bool {
    *reply == Frame::Bulk(format!("v{}", i % 100).into_bytes().into())
}

#[test]
fn case_2_a_backend_that_resets_mid_response_fails_no_idempotent_request_and_misplaces_no_reply() {
    let _one = serial();
    with_retries(3, || {
        let (c, addrs, chaos) = cluster_with_proxy();
        preload(&c);
        // Each connection to b is reset after 3,000 bytes: in the middle of a reply, most times.
        chaos.set(Toxics::none().reset_after(3_000));
        let outcomes = c.rt.block_on(async {
            let (client, _) = connected_counting(&addrs, &c.stats, roomy()).await;
            offer_checked(client, 4_000, 20_000, Vec::new(), is_its_value).await
        });
        c.rt.handle().shutdown();
        let resets = chaos.stats().resets;
        println!(
            "case 2, resets mid-response: {} requests, {} failed, {resets} connections reset",
            outcomes.len(),
            failures(&outcomes)
        );
        assert!(resets >= 2, "the fault happened: {resets} resets");
        assert!(outcomes.iter().all(|o| !o.wrong), "{}", failures(&outcomes));
        assert_eq!(failed_unshed(&outcomes), 0, "{}", failures(&outcomes));
        assert_few_sheds(&outcomes);
    });
}

#[test]
fn case_3_a_flapping_backend_fails_nothing_and_retries_stay_within_the_budget() {
    let _one = serial();
    with_retries(3, || {
        let (c, addrs, chaos) = cluster_with_proxy();
        // Down (existing connections reset at their next byte, new ones refused) for 200 ms,
        // up for 200 ms, over the 5 s run.
        let down = Toxics::none().refuse().reset_after(0);
        let mut steps = Vec::new();
        for k in 0..12 {
            let t = 0.2 + 0.4 * f64::from(k);
            steps.push(at(t, || chaos.set(down)));
            steps.push(at(t + 0.2, || chaos.clear()));
        }
        let (outcomes, attempts) = c.rt.block_on(async {
            let (client, attempts) = connected_counting(&addrs, &c.stats, roomy()).await;
            let outcomes = offer(client, 4_000, 20_000, steps).await;
            (outcomes, attempts.snapshot().requests)
        });
        c.rt.handle().shutdown();
        let requests = outcomes.len() as u64;
        let retries = attempts.saturating_sub(requests);
        // The budget: 20% of requests, plus 10 per second of the 5 s run.
        let budget = requests / 5 + 10 * 5;
        let stats = chaos.stats();
        println!(
            "case 3, flapping 200/200 ms: {requests} requests, {} failed, {retries} retries \
             (budget {budget}), {} resets, {} refused",
            failures(&outcomes),
            stats.resets,
            stats.refused
        );
        assert!(stats.resets + stats.refused > 0, "the fault happened");
        assert_eq!(failed_unshed(&outcomes), 0, "{}", failures(&outcomes));
        assert_few_sheds(&outcomes);
        assert!(
            retries <= budget,
            "{retries} retries past the budget of {budget}"
        );
    });
}

#[test]
fn case_4_a_ten_times_slower_backend_gets_under_five_percent_and_hedging_keeps_the_tail() {
    let _one = serial();
    with_retries(3, || {
        let plain = chaos::slow(None);
        let hedged = chaos::slow(Some(chaos::hedging()));
        let healthy = p99(&during(&plain.outcomes, 1.0, 2.0));
        let slow_plain = p99(&during(&plain.outcomes, 2.5, 5.0));
        let slow_hedged = p99(&during(&hedged.outcomes, 2.5, 5.0));
        println!(
            "case 4, b 10x slower: b's share {:.2}% ({:.2}% hedged); p99 healthy {healthy:?}, slow \
             {slow_plain:?}, slow and hedged {slow_hedged:?}; {} / {} failed",
            plain.slow_share * 100.0,
            hedged.slow_share * 100.0,
            failures(&plain.outcomes),
            failures(&hedged.outcomes)
        );
        assert!(
            plain.slow_share < 0.05,
            "b took {:.2}%",
            plain.slow_share * 100.0
        );
        assert_eq!(
            failed_unshed(&plain.outcomes) + failed_unshed(&hedged.outcomes),
            0
        );
        assert!(
            slow_hedged <= 2 * healthy.max(Duration::from_millis(1)),
            "hedged p99 {slow_hedged:?} vs healthy {healthy:?}"
        );
    });
}

#[test]
fn case_5_all_backends_down_fail_fast_with_unavailable_and_the_budget_stops_the_storm() {
    let _one = serial();
    with_retries(3, || {
        let mut c = cluster(&["a", "b", "c"], Duration::ZERO);
        let addrs = c.addrs();
        let backends = RefCell::new(std::mem::take(&mut c.backends));
        let (outcomes, attempts) = c.rt.block_on(async {
            let (client, attempts) = connected_counting(&addrs, &c.stats, roomy()).await;
            let kill_all = || backends.borrow_mut().iter_mut().for_each(|b| b.kill());
            let outcomes = offer(client, 2_000, 6_000, vec![at(1.0, kill_all)]).await;
            (outcomes, attempts.snapshot().requests)
        });
        c.rt.handle().shutdown();
        let requests = outcomes.len() as u64;
        let retries = attempts.saturating_sub(requests);
        let budget = requests / 5 + 10 * 3;
        // From half a second after the deaths, every request is refused — how, and how fast.
        let dead = during(&outcomes, 1.5, 3.0);
        let unavailable = dead
            .iter()
            .filter(|o| o.error == Some(ErrorKind::Unavailable))
            .count();
        let slowest = dead.iter().map(|o| o.service).max().unwrap_or_default();
        println!(
            "case 5, all down: {requests} requests, {} failed, {} of {} after the deaths \
             Unavailable, slowest {slowest:?}; {retries} retries (budget {budget})",
            failures(&outcomes),
            unavailable,
            dead.len()
        );
        assert_eq!(failed(&during(&outcomes, 0.0, 0.9)), 0, "all good before");
        assert_eq!(unavailable, dead.len(), "{}", failures(&dead));
        assert!(
            slowest <= Duration::from_millis(250),
            "fast, within the 500 ms deadline"
        );
        assert!(
            retries <= budget,
            "{retries} retries past the budget of {budget}"
        );
    });
}
