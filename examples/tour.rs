//! The tour: a balanced client routing around a slow server and a dead one.
//!
//! ```text
//! cargo run --release --example tour
//! ```
//!
//! Starts three redis-protocol servers on loopback (the kv service of `examples/kv.rs`) on a
//! second runtime thread — `a` and `c` answer at once, `b` answers 2 ms late — and drives
//! them with a client built from sheave's layers (stats, log, one 500 ms deadline, idempotent
//! retries within a budget, a concurrency limit that sheds instead of queueing, a 100 ms
//! timeout per attempt, and p2c peak-EWMA balancing with ejection and reconnect; see
//! `examples/support/cluster.rs`, where each layer's place is explained). A third of the way in, server `a` is killed;
//! two thirds in, it comes back on the same port. The run ends with a table per endpoint
//! and phase: where the requests went, and how fast they were answered. It exits non-zero if
//! any request failed. `RUST_LOG` is not read: install a logger to see the per-request log
//! lines (target `sheave_middleware::log`).

mod support;

use futures::future::join_all;
use indicatif::{ProgressBar, ProgressStyle};
use sheave::Runtime;
use sheave::service::{ServiceBuilder, ServiceExt};
use sheave_middleware::ServiceBuilderExt;
use sheave_middleware::stats::{Snapshot, StatsConfig};
use sheave_proto::resp::Frame;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::cluster::{Backend, balanced_client, endpoint_stats};

const REQUESTS: u64 = 300_000;
const WORKERS: usize = 48;
const NAMES: [&str; 3] = ["a", "b", "c"];

fn command(i: u64) -> Frame {
    let key = format!("key:{}", i % 1_000);
    let parts: Vec<Vec<u8>> = if i.is_multiple_of(4) {
        vec![
            b"SET".to_vec(),
            key.into_bytes(),
            i.to_string().into_bytes(),
        ]
    } else {
        vec![b"GET".to_vec(), key.into_bytes()]
    };
    Frame::Array(parts.into_iter().map(|p| Frame::Bulk(p.into())).collect())
}

/// What each endpoint saw in one phase of the run.
struct Phase {
    name: &'static str,
    per_endpoint: Vec<Snapshot>,
}

fn main() {
    let rt = Runtime::builder().threads(2).build().expect("runtime");
    let handle = rt.handle().clone();
    let mut backends: Vec<Backend> = NAMES
        .iter()
        .zip([0, 2, 0])
        .map(|(name, ms)| Backend::start(&handle, 1, name, Duration::from_millis(ms)).unwrap())
        .collect();
    for b in &backends {
        let note = if b.delay.is_zero() {
            ""
        } else {
            " (slow: +2 ms per reply)"
        };
        println!("server {} on {}{note}", b.name, b.addr);
    }
    let stats = endpoint_stats(&NAMES);
    let addrs: Vec<_> = backends.iter().map(|b| (b.name, b.addr)).collect();

    let client = ServiceBuilder::new()
        .stats(StatsConfig::default())
        .log(log::Level::Debug, |cmd: &Frame| format!("{cmd:?}"))
        .service(rt.block_on(async { balanced_client(&addrs, &stats) }));
    let totals = client.stats();

    let bar = ProgressBar::new(REQUESTS);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} requests  {msg}").expect("template"),
    );
    bar.set_message("all three servers up");

    let started = Instant::now();
    let phases: Rc<RefCell<Vec<Phase>>> = Rc::default();
    let failed = Rc::new(Cell::new(0u64));
    rt.block_on(async {
        let next = Rc::new(Cell::new(0u64));
        // Each phase's numbers, then a fresh start for the next phase.
        let cut = |name: &'static str| {
            let per_endpoint = stats
                .iter()
                .map(|(_, s)| {
                    let snap = s.snapshot();
                    s.reset();
                    snap
                })
                .collect();
            phases.borrow_mut().push(Phase { name, per_endpoint });
        };
        let backends = RefCell::new(&mut backends);
        let workers = (0..WORKERS).map(|_| async {
            loop {
                let i = next.get();
                if i >= REQUESTS {
                    break;
                }
                next.set(i + 1);
                if i == REQUESTS / 3 {
                    cut("before");
                    backends.borrow_mut()[0].kill();
                    bar.set_message("server a killed");
                } else if i == 2 * REQUESTS / 3 {
                    cut("a down");
                    backends.borrow_mut()[0]
                        .restart(&handle)
                        .expect("restart a");
                    bar.set_message("server a is back");
                }
                if let Err(e) = client.oneshot(command(i)).await {
                    failed.set(failed.get() + 1);
                    bar.println(format!("request {i} failed: {e}"));
                }
                if i.is_multiple_of(500) {
                    bar.set_position(i);
                }
            }
        });
        join_all(workers).await;
        cut("a back");
    });
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    report(&phases.borrow(), &totals.snapshot(), elapsed);
    let failed = failed.get();
    if failed > 0 {
        eprintln!("{failed} requests failed");
        std::process::exit(1);
    }
    handle.shutdown();
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn report(phases: &[Phase], total: &Snapshot, elapsed: Duration) {
    println!(
        "\n{} requests in {:.2?} ({:.0}/s), {} failed; client p50 {} ms, p99 {} ms\n",
        total.requests,
        elapsed,
        total.requests as f64 / elapsed.as_secs_f64(),
        total.total_errors(),
        ms(total.latency.p50),
        ms(total.latency.p99),
    );
    println!("what each endpoint served, per phase:\n");
    println!(
        "{:<8} {:>8} {:>7} {:>9} {:>7} {:>8} {:>8}",
        "phase", "endpoint", "share", "requests", "errors", "p50 ms", "p99 ms"
    );
    for phase in phases {
        let sum = phase
            .per_endpoint
            .iter()
            .map(|s| s.requests)
            .sum::<u64>()
            .max(1);
        for (i, (name, s)) in NAMES.iter().zip(&phase.per_endpoint).enumerate() {
            println!(
                "{:<8} {:>8} {:>6.1}% {:>9} {:>7} {:>8} {:>8}",
                if i == 0 { phase.name } else { "" },
                name,
                s.requests as f64 * 100.0 / sum as f64,
                s.requests,
                s.total_errors(),
                ms(s.latency.p50),
                ms(s.latency.p99),
            );
        }
    }
    println!(
        "\n`b` is slow, so peak-EWMA sends it little; while `a` is down its share goes to the\n\
         others, and its connection's in-flight requests are retried elsewhere; once it is back\n\
         the balancer reconnects and it takes traffic again."
    );
}
