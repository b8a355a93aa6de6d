//! The reliability report: faults on purpose against sheave's own stacks, as a table and a
//! plot per case.
//!
//! ```text
//! cargo run --release --example chaos
//! ```
//!
//! Runs the balanced-client cases of the reliability suite (`tests/chaos`) with a progress
//! bar: three redis-protocol servers behind the documented client stack
//! (`examples/support/cluster.rs`), a chaos proxy (`sheave_proto::chaos`) in front of one of
//! them — blackholed for two seconds, then 10× slower, without and with hedging — load
//! offered open loop at 4,000 requests/s. It prints one table row per case (requests,
//! failed, retried, shed, p50, p99, the process's RSS) and writes a throughput-and-errors
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

/// A case: its outcomes and the retry layer's attempts.
type Case = fn() -> (Vec<Outcome>, u64);

/// One row of the report.
struct Row {
    case: &'static str,
    outcomes: Vec<Outcome>,
    attempts: u64,
    rss_kib: u64,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn main() {
    let cases: [(&'static str, Case); 3] = [
        ("blackhole b 1-3 s", || {
            let r = chaos::blackhole();
            (r.outcomes, r.attempts)
        }),
        ("b 10x slower from 2 s", || {
            let r = chaos::slow(None);
            (r.outcomes, r.attempts)
        }),
        ("b 10x slower, hedged", || {
            let r = chaos::slow(Some(chaos::hedging()));
            (r.outcomes, r.attempts)
        }),
    ];
    let bar = ProgressBar::new(cases.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} cases  {msg}").expect("style"),
    );
    let mut rows = Vec::new();
    for (case, run) in cases {
        bar.set_message(case);
        let (outcomes, attempts) = run();
        rows.push(Row {
            case,
            outcomes,
            attempts,
            rss_kib: rss_kib(),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();

    println!(
        "| case | requests | failed | retried | shed | p50 | p99 | RSS |\n|---|---|---|---|---|---|---|---|"
    );
    let mut bad = false;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chaos-report");
    let _ = std::fs::create_dir_all(&dir);
    let mut plots = Vec::new();
    for row in &rows {
        let o = &row.outcomes;
        let latencies = |p| percentile(o.iter().filter(|o| o.ok).map(|o| o.latency).collect(), p);
        let shed = failed(o) - failed_unshed(o);
        println!(
            "| {} | {} | {} | {} | {} | {:.2} ms | {:.2} ms | {} MiB |",
            row.case,
            o.len(),
            failed_unshed(o),
            row.attempts.saturating_sub(o.len() as u64),
            shed,
            ms(latencies(0.5)),
            ms(latencies(0.99)),
            row.rss_kib / 1024
        );
        bad |= failed_unshed(o) > 0;
        let path = dir.join(format!("{}.svg", slug(row.case)));
        match std::fs::write(&path, svg(row.case, o)) {
            Ok(()) => plots.push(path),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
    println!();
    for p in &plots {
        println!("plot: {}", p.display());
    }
    if bad {
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

/// Per 100 ms of due time: (answered, failed) per second.
fn timeline(outcomes: &[Outcome]) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for o in outcomes {
        let i = (o.due.as_millis() / 100) as usize;
        if buckets.len() <= i {
            buckets.resize(i + 1, (0.0, 0.0));
        }
        if o.ok {
            buckets[i].0 += 10.0;
        } else {
            buckets[i].1 += 10.0;
        }
    }
    buckets
}

/// A throughput-and-errors-over-time plot: answered/s in blue, failed/s in red.
fn svg(title: &str, outcomes: &[Outcome]) -> String {
    let points = timeline(outcomes);
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
         answered/s (blue), failed/s (red), per 100 ms; peak {top:.0}/s</text>\n\
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
