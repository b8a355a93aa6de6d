//! The reliability report: faults on purpose against sheave's own stacks, as a table and a
//! plot per case.
//!
//! ```text
//! cargo run --release --example chaos
//! ```
//!
//! Runs four cases of the reliability suite with a progress bar: from `tests/chaos`, three
//! redis-protocol servers behind the documented client stack (`examples/support/cluster.rs`)
//! with a chaos proxy (`sheave_proto::chaos`) in front of one of them — blackholed for two
//! seconds, then 10× slower, without and with hedging — load offered open loop at 4,000
//! requests/s; from `tests/reliability`, the kv server behind a limit and a shed at 10× its
//! capacity, and drained while 1,000 requests are in flight. It prints one table row per
//! case (requests, failed, retried, shed, p50, p99, RSS) and writes a throughput-and-errors
//! plot per case as an SVG file, whose path it prints (under `target/chaos-report/`). The
//! plots are drawn by the few lines of `svg` below: two polylines and their axes did not
//! seem worth a plotting crate's dependency tree. It exits non-zero if a case failed a
//! request it should not have.

mod support;

use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;
use support::chaos;
use support::openloop::{Outcome, failed, failed_unshed, percentile};
use support::reliability::{self, DrainReport, OverloadConfig, OverloadReport, Timeline};

/// One row of the report, and its plot.
struct Row {
    case: &'static str,
    requests: u64,
    /// Failed for a reason other than an explicit refusal.
    failed: u64,
    retried: u64,
    shed: u64,
    p50: Duration,
    p99: Duration,
    rss_kib: u64,
    /// Per 100 ms: answered/s and failed-or-shed/s.
    timeline: Vec<(f64, f64)>,
}

fn rss_kib() -> u64 {
    reliability::rss_kib(std::process::id()).unwrap_or(0)
}

/// A row for a balanced-client case: every request's outcome, and the retry layer's attempts.
fn client_row(case: &'static str, outcomes: Vec<Outcome>, attempts: u64) -> Row {
    let answered = |p| {
        percentile(
            outcomes
                .iter()
                .filter(|o| o.ok)
                .map(|o| o.latency)
                .collect(),
            p,
        )
    };
    let mut timeline: Vec<(f64, f64)> = Vec::new();
    for o in &outcomes {
        let i = (o.due.as_millis() / 100) as usize;
        if timeline.len() <= i {
            timeline.resize(i + 1, (0.0, 0.0));
        }
        if o.ok {
            timeline[i].0 += 10.0;
        } else {
            timeline[i].1 += 10.0;
        }
    }
    Row {
        case,
        requests: outcomes.len() as u64,
        failed: failed_unshed(&outcomes) as u64,
        retried: attempts.saturating_sub(outcomes.len() as u64),
        shed: (failed(&outcomes) - failed_unshed(&outcomes)) as u64,
        p50: answered(0.5),
        p99: answered(0.99),
        rss_kib: rss_kib(),
        timeline,
    }
}

/// Answered/s and failed-or-refused/s from a server case's timeline.
fn per_second(timeline: &Timeline) -> Vec<(f64, f64)> {
    let scale = 1.0 / timeline.interval.as_secs_f64().max(1e-3);
    timeline
        .buckets
        .iter()
        .map(|b| {
            (
                b.ok as f64 * scale,
                (b.overloaded + b.failed) as f64 * scale,
            )
        })
        .collect()
}

fn overload_row(r: OverloadReport) -> Row {
    let o = &r.overload;
    Row {
        case: "server at 10x overload",
        requests: r.unloaded.requests + o.requests,
        failed: r.unloaded.failed + o.failed,
        retried: 0,
        shed: r.unloaded.overloaded + o.overloaded,
        p50: o.admitted.quantile(0.5),
        p99: o.admitted.quantile(0.99),
        rss_kib: o.peak_rss_kib,
        timeline: per_second(&o.timeline),
    }
}

fn drain_row(r: DrainReport) -> Row {
    Row {
        case: "server drained under load",
        requests: r.requests,
        failed: r.lost + r.wrong + r.hung,
        retried: 0,
        shed: 0,
        p50: Duration::ZERO,
        p99: r.drain_time,
        rss_kib: rss_kib(),
        timeline: per_second(&r.timeline),
    }
}

/// A case of the report, run to its row.
type Case = fn() -> Row;

fn main() {
    let cases: [(&'static str, Case); 5] = [
        ("blackhole b 1-3 s", || {
            let r = chaos::blackhole();
            client_row("blackhole b 1-3 s", r.outcomes, r.attempts)
        }),
        ("b 10x slower from 2 s", || {
            let r = chaos::slow(None);
            client_row("b 10x slower from 2 s", r.outcomes, r.attempts)
        }),
        ("b 10x slower, hedged", || {
            let r = chaos::slow(Some(chaos::hedging()));
            client_row("b 10x slower, hedged", r.outcomes, r.attempts)
        }),
        ("server at 10x overload", || {
            let rt = sheave::Runtime::builder()
                .threads(2)
                .build()
                .expect("runtime");
            let handle = rt.handle().clone();
            let report = rt.block_on(reliability::overload(&handle, OverloadConfig::default()));
            handle.shutdown();
            overload_row(report.expect("the overload case"))
        }),
        ("server drained under load", || {
            let rt = sheave::Runtime::builder()
                .threads(2)
                .build()
                .expect("runtime");
            let handle = rt.handle().clone();
            let report = rt.block_on(reliability::drain(
                &handle,
                10,
                100,
                Duration::from_millis(20),
            ));
            handle.shutdown();
            drain_row(report.expect("the drain case"))
        }),
    ];
    let bar = ProgressBar::new(cases.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} cases  {msg}").expect("style"),
    );
    let mut rows = Vec::new();
    for (case, run) in cases {
        bar.set_message(case);
        rows.push(run());
        bar.inc(1);
    }
    bar.finish_and_clear();

    println!(
        "| case | requests | failed | retried | shed | p50 | p99 | RSS |\n|---|---|---|---|---|---|---|---|"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chaos-report");
    let _ = std::fs::create_dir_all(&dir);
    let mut plots = Vec::new();
    for row in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.2} ms | {:.2} ms | {} MiB |",
            row.case,
            row.requests,
            row.failed,
            row.retried,
            row.shed,
            ms(row.p50),
            ms(row.p99),
            row.rss_kib / 1024
        );
        let path = dir.join(format!("{}.svg", slug(row.case)));
        match std::fs::write(&path, svg(row.case, &row.timeline)) {
            Ok(()) => plots.push(path),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
    println!(
        "\n(shed: refused at once with Overloaded, by design; for the drain, p99 is the time \
         serve took to return after the shutdown)\n"
    );
    for p in &plots {
        println!("plot: {}", p.display());
    }
    if rows.iter().any(|r| r.failed > 0) {
        eprintln!("a case failed requests it should not have");
        std::process::exit(1);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn slug(case: &str) -> String {
    case.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// A throughput-and-errors-over-time plot: answered/s in blue, failed/s in red.
fn svg(title: &str, points: &[(f64, f64)]) -> String {
    let (w, h, pad) = (800.0, 300.0, 40.0);
    let top = points.iter().map(|p| p.0.max(p.1)).fold(1.0, f64::max);
    let x = |i: usize| pad + i as f64 * (w - 2.0 * pad) / points.len().max(1) as f64;
    let y = |v: f64| h - pad - v / top * (h - 2.0 * pad);
    let line = |pick: fn(&(f64, f64)) -> f64| {
        let mut s = String::new();
        for (i, p) in points.iter().enumerate() {
            let _ = write!(s, "{:.1},{:.1} ", x(i), y(pick(p)));
        }
        s
    };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{pad}\" y=\"20\" font-family=\"sans-serif\" font-size=\"14\">{title}: \
         answered/s (blue), failed or shed/s (red), per 100 ms; peak {top:.0}/s</text>\n\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"black\"/>\n",
        b = h - pad,
        r = w - pad
    );
    for s in 0..=points.len() / 10 {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" font-family=\"sans-serif\" font-size=\"11\">{s} s</text>",
            x(s * 10),
            h - pad + 15.0
        );
    }
    let _ = writeln!(
        out,
        "<polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"2\" points=\"{}\"/>",
        line(|p| p.0)
    );
    let _ = writeln!(
        out,
        "<polyline fill=\"none\" stroke=\"crimson\" stroke-width=\"2\" points=\"{}\"/>\n</svg>",
        line(|p| p.1)
    );
    out
}
