//! Log and stats: one record per request, nothing when off; counters and percentiles.

#[path = "../support/mod.rs"]
mod support;

use std::cell::{Cell, RefCell};
use std::sync::Once;

use log::{Level, Log as _, Metadata, Record};
use sheave_core::time::sleep;
use sheave_middleware::stats::StatsConfig;
use sheave_middleware::{Log, Stats, Timeout};
use sheave_service::{Error, ErrorKind, ServiceExt, service_fn};
use support::{ms, paused};

thread_local! {
    static RECORDS: RefCell<Vec<(Level, String, String)>> = const { RefCell::new(Vec::new()) };
}

/// Captures records per thread; the target "quiet" is disabled.
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() != "quiet"
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let entry = (
                record.level(),
                record.target().to_string(),
                record.args().to_string(),
            );
            RECORDS.with(|r| r.borrow_mut().push(entry));
        }
    }

    fn flush(&self) {}
}

#[track_caller]
fn capture() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
    RECORDS.with(|r| r.borrow_mut().clear());
    assert!(Capture.enabled(&Metadata::builder().target("x").build()));
}

fn records() -> Vec<(Level, String, String)> {
    RECORDS.with(|r| r.borrow().clone())
}

fn slow_echo() -> impl sheave_service::Service<u64, Response = u64, Error = Error> {
    service_fn(|n: u64| async move {
        sleep(ms(n)).await;
        if n == 13 {
            Err(Error::unavailable())
        } else {
            Ok(n)
        }
    })
}

#[test]
fn one_record_per_request_with_name_outcome_and_latency() {
    capture();
    let svc = Log::new(slow_echo(), Level::Info, |n: &u64| format!("req#{n}"));
    paused().block_on(async {
        svc.oneshot(5).await.unwrap();
        svc.oneshot(13).await.unwrap_err();
    });
    let records = records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].0, Level::Info);
    assert_eq!(records[0].1, "sheave_middleware::log");
    assert_eq!(records[0].2, "req#5: ok in 5ms");
    assert_eq!(records[1].2, "req#13: unavailable in 13ms");
}

#[test]
fn a_cancelled_request_is_logged_as_canceled() {
    capture();
    let svc = Timeout::new(
        Log::new(slow_echo(), Level::Warn, |n: &u64| *n).with_target("mw"),
        ms(20),
    );
    paused().block_on(async {
        assert!(svc.oneshot(50).await.unwrap_err().is_timeout());
    });
    assert_eq!(
        records(),
        [(
            Level::Warn,
            "mw".to_string(),
            "50: canceled after 20ms".to_string()
        )]
    );
}

#[test]
fn when_the_level_is_off_the_name_closure_is_never_called() {
    capture();
    let named = Cell::new(0);
    let svc = Log::new(slow_echo(), Level::Debug, |n: &u64| {
        named.set(named.get() + 1);
        *n
    })
    .with_target("quiet");
    paused().block_on(async {
        for n in 0..10 {
            svc.oneshot(n).await.unwrap();
        }
    });
    assert_eq!(named.get(), 0);
    assert!(records().is_empty());
}

#[test]
fn stats_count_outcomes_and_report_percentiles_while_running() {
    let svc = Stats::new(slow_echo(), StatsConfig::new());
    let stats = svc.stats();
    paused().block_on(async {
        let watch = async {
            sleep(ms(1)).await;
            let snap = stats.snapshot();
            assert_eq!(
                (snap.requests, snap.in_flight),
                (1, 1),
                "readable mid-flight"
            );
        };
        let (res, ()) = futures::join!(svc.oneshot(2), watch);
        res.unwrap();
        for n in 1..=100 {
            let _ = svc.oneshot(n).await;
        }
    });
    let snap = stats.snapshot();
    assert_eq!(snap.requests, 101);
    assert_eq!(snap.successes, 100);
    assert_eq!(snap.errors(ErrorKind::Unavailable), 1);
    assert_eq!(snap.total_errors(), 1);
    assert_eq!(snap.in_flight, 0);
    assert_eq!(snap.latency.count, 101);
    assert_eq!(snap.latency.max, ms(100));
    // 2 significant digits: percentiles within 1% of the exact values.
    let near = |d: std::time::Duration, want: u64| {
        let (d, want) = (d.as_micros() as f64, (want * 1000) as f64);
        (d - want).abs() <= want / 100.0
    };
    assert!(near(snap.latency.p50, 50), "{:?}", snap.latency);
    assert!(near(snap.latency.p90, 90), "{:?}", snap.latency);
    assert!(near(snap.latency.p99, 99), "{:?}", snap.latency);
    stats.reset();
    assert_eq!(stats.snapshot().requests, 0);
}

#[test]
fn a_dropped_call_counts_as_canceled() {
    let svc = Timeout::new(Stats::new(slow_echo(), StatsConfig::new()), ms(10));
    let stats = svc.get_ref().stats();
    paused().block_on(async {
        assert!(svc.oneshot(50).await.unwrap_err().is_timeout());
    });
    let snap = stats.snapshot();
    assert_eq!((snap.requests, snap.in_flight), (1, 0));
    assert_eq!(snap.errors(ErrorKind::Canceled), 1);
    assert_eq!(snap.latency.max, ms(10));
}
