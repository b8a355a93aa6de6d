//! The reliability suite, server half (issue 13, cases 6–10): the kv server behind
//! `sheave_proto::Server`, with a concurrency limit and shedding in front of the service, under
//! overload, a graceful drain, 10,000 idle connections, 1,000 slow-loris connections and
//! descriptor exhaustion. Each case prints one line of figures and asserts the promise.
//!
//! The runners are `examples/support/reliability/` (the report example uses them too). The
//! cases run one at a time (a lock): they measure, on a small shared machine. Wall-clock
//! figures are noisy there: case 6's latency promise is a ratio against an unloaded baseline
//! of the same run, and case 9's bounds are loose (its ratios are printed, not asserted).
//!
//! ```text
//! cargo test --test reliability -- --nocapture
//! ```

#[path = "../../examples/support/mod.rs"]
mod support;

use sheave::Runtime;
use std::sync::Mutex;
use std::time::Duration;
use support::reliability::{self, OverloadConfig, ms};

/// One case at a time: they measure.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Skips a case that cannot run here, or fails it under `SHEAVE_REQUIRE_PEERS=1` (CI), where a
/// skip would hide a failure.
fn skip(reason: &str) {
    if std::env::var("SHEAVE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("cannot run, and SHEAVE_REQUIRE_PEERS=1: {reason}");
    }
    eprintln!("skipped: {reason}");
}

fn runtime() -> Runtime {
    Runtime::builder().threads(2).build().unwrap()
}

#[test]
fn case_6_at_ten_times_the_sustainable_rate_every_request_is_answered_or_refused_in_time_and_admitted_latency_holds()
 {
    let _serial = serial();
    let rt = runtime();
    let config = OverloadConfig::default();
    let deadline = config.deadline;
    let r = rt
        .block_on(reliability::overload(rt.handle(), config.clone()))
        .unwrap();
    let (u, o) = (&r.unloaded, &r.overload);
    let growth_kib = o.peak_rss_kib.saturating_sub(r.rss_before_kib);
    println!(
        "case 6 overload: sustainable {}/s, offered {}/s for {:?}: requests {} answered {} \
         overloaded {} failed {} late {}; admitted p50 {} p99 {} (unloaded p50 {} p99 {}, \
         {} requests); refusal p99 {}; RSS {} KiB before, peak {} KiB (+{} KiB)",
        r.sustainable,
        r.sustainable * config.overload_factor,
        config.overload_for,
        o.requests,
        o.answered,
        o.overloaded,
        o.failed,
        o.late,
        ms(o.admitted.quantile(0.5)),
        ms(o.admitted.quantile(0.99)),
        ms(u.admitted.quantile(0.5)),
        ms(u.admitted.quantile(0.99)),
        u.requests,
        ms(o.refused.quantile(0.99)),
        r.rss_before_kib,
        o.peak_rss_kib,
        growth_kib,
    );
    assert_eq!(u.failed + u.overloaded, 0, "unloaded, all are answered");
    let offered = r.sustainable * config.overload_factor * config.overload_for.as_secs();
    assert_eq!(o.requests, offered, "every request was offered and ended");
    assert_eq!(
        o.failed, 0,
        "every request is answered or refused as overloaded"
    );
    assert_eq!(o.answered + o.overloaded, o.requests);
    assert_eq!(o.late, 0, "nothing waits past its deadline ({deadline:?})");
    assert!(o.refused.max() <= deadline && o.admitted.max() <= deadline);
    assert!(o.overloaded > o.requests / 2, "most of a 10x offer is shed");
    let capacity = r.sustainable * config.overload_for.as_secs() * 12 / 10 + config.limit as u64;
    assert!(
        o.answered <= capacity,
        "no more admitted than the limit allows"
    );
    assert!(
        growth_kib <= 32 * 1024,
        "RSS grows by at most 32 MiB under overload"
    );
    assert!(
        o.admitted.quantile(0.99) <= u.admitted.quantile(0.99) * 2,
        "admitted p99 within 2x of the unloaded p99"
    );
}

#[test]
fn case_7_a_shutdown_with_a_thousand_requests_in_flight_answers_every_one_and_refuses_new_connections()
 {
    let _serial = serial();
    let rt = runtime();
    let r = rt
        .block_on(reliability::drain(
            rt.handle(),
            10,
            100,
            Duration::from_millis(20),
        ))
        .unwrap();
    println!(
        "case 7 drain: requests {} (all in the service at shutdown) answered {} wrong {} lost {}; \
         new connections after shutdown: {} tried, {} refused, {} served then closed, {} \
         closed unanswered, {} hung; drain took {}",
        r.requests,
        r.answered,
        r.wrong,
        r.lost,
        r.probes,
        r.refused,
        r.served_then_closed,
        r.closed_unanswered,
        r.hung,
        ms(r.drain_time),
    );
    assert_eq!(r.requests, 1_000);
    assert_eq!(r.answered, r.requests, "every accepted request is answered");
    assert_eq!(r.wrong, 0, "each with its own reply");
    assert_eq!(r.lost, 0, "none is lost");
    assert_eq!(r.hung, 0, "no new connection is left hanging");
    assert_eq!(
        r.refused, 1,
        "new connections are refused once the listener closes"
    );
    assert!(r.served, "serve returns once the drain is done");
}

const CASE_8: &str = "case_8_ten_thousand_idle_connections_cost_little_memory_each_and_a_fresh_client_is_answered_at_once";

#[test]
fn case_8_ten_thousand_idle_connections_cost_little_memory_each_and_a_fresh_client_is_answered_at_once()
 {
    reliability::serve_if_child();
    let _serial = serial();
    const N: usize = 10_000;
    if let Err(reason) = reliability::ensure_nofile(N as u64 + 200) {
        return skip(&format!("case 8: {reason}"));
    }
    let r = reliability::idle_connections(CASE_8, N).unwrap();
    println!(
        "case 8 idle: {} idle connections; server RSS {} KiB with one, {} KiB with all: {} bytes \
         per connection; server fds {}; a fresh client's connect + PING took {}",
        r.connections,
        r.rss_before_kib,
        r.rss_after_kib,
        r.bytes_per_connection,
        r.server_fds,
        ms(r.fresh_ping),
    );
    assert!(r.server_fds > N, "the server holds every connection");
    assert!(
        r.bytes_per_connection <= 8 * 1024,
        "at most 8 KiB of resident memory per idle connection"
    );
    assert!(
        r.fresh_ping < Duration::from_secs(1),
        "a fresh client is answered at once"
    );
}

#[test]
fn case_9_a_thousand_slow_loris_connections_do_not_slow_a_normal_client() {
    let _serial = serial();
    const SLOW: usize = 1_000;
    if let Err(reason) = reliability::ensure_nofile(2 * SLOW as u64 + 200) {
        return skip(&format!("case 9: {reason}"));
    }
    let rt = runtime();
    let r = rt
        .block_on(reliability::slow_loris(
            rt.handle(),
            SLOW,
            3,
            Duration::from_secs(1),
        ))
        .unwrap();
    let (b, l) = (&r.baseline, &r.under_loris);
    println!(
        "case 9 slow-loris: {} connections dribbling 1 byte/s for {} s (server held {}); \
         normal client alone {:.0}/s p50 {} p99 {}, beside them {:.0}/s p50 {} p99 {} ({:.2}x \
         throughput), failed {}",
        r.slow,
        r.bytes_each,
        r.server_connections,
        b.rate,
        ms(b.latency.quantile(0.5)),
        ms(b.latency.quantile(0.99)),
        l.rate,
        ms(l.latency.quantile(0.5)),
        ms(l.latency.quantile(0.99)),
        l.rate / b.rate,
        l.failed,
    );
    assert!(
        r.server_connections > SLOW,
        "the server held the slow connections"
    );
    assert_eq!(b.failed + l.failed, 0);
    // The machine is shared (other builds run beside this test), so sub-millisecond figures
    // move by 2-3x between runs on their own: the ratios are printed, not asserted. A server
    // that let the slow connections hold it up would make the normal client wait at their
    // pace (a byte a second): a p99 of hundreds of milliseconds, or a collapse of the rate.
    assert!(
        l.latency.quantile(0.99) <= Duration::from_millis(25),
        "the normal client is never held up by the slow ones (p99 within 25 ms)"
    );
    assert!(
        l.rate >= b.rate / 3.0,
        "the normal client keeps a third of its throughput at worst (a loose bound: noisy machine)"
    );
}

const CASE_10: &str =
    "case_10_out_of_descriptors_the_server_waits_without_spinning_and_recovers_once_they_free_up";

#[test]
fn case_10_out_of_descriptors_the_server_waits_without_spinning_and_recovers_once_they_free_up() {
    reliability::serve_if_child();
    let _serial = serial();
    let window = Duration::from_secs(2);
    let r = reliability::fd_exhaustion(CASE_10, 64, 8, window).unwrap();
    let share = r.cpu.as_secs_f64() / r.window.as_secs_f64();
    println!(
        "case 10 fd exhaustion: limit {} fds; {} connections held, {} waiting, {} answered while \
         out; server CPU {} over {} waiting ({:.1}%); all waiting answered {} after fds freed; \
         fresh client answered: {}",
        r.limit,
        r.held,
        r.waiting,
        r.answered_while_out,
        ms(r.cpu),
        ms(r.window),
        share * 100.0,
        ms(r.recovery),
        r.fresh_answered,
    );
    assert_eq!(
        r.answered_while_out, 0,
        "out of descriptors, nothing is taken"
    );
    assert!(
        share <= 0.10,
        "no busy loop: at most 10% of a CPU while out"
    );
    assert!(
        r.recovery < Duration::from_secs(5),
        "recovers once descriptors free up"
    );
    assert!(r.fresh_answered);
}
