//! What a run prints and writes: the table ([`table`]), the JSON for scripts ([`json`]), the
//! HDR histogram ([`write_hdr`]) and an SVG plot ([`write_plot`]).
//!
//! The JSON's top-level object is a stable contract: `requests`, `ok`, `errors`, `rps`,
//! `elapsed_s`, `p50_us`, `p90_us`, `p99_us`, `p999_us`, `max_us`, `errors_by_kind` (an object
//! of kind to count), `protocol`, `mode`, `rate` (open loop, else `null`), `connections`,
//! `pipeline`, and `endpoints`: an array with, per address, `addr`, `share` (of the attempts,
//! 0 to 1), `requests`, `ok`, `errors`, `errors_by_kind` and the same latency figures. It is
//! written by hand: a dozen numbers do not need a serializer.
//!
//! ```
//! use sheave_load::cli::{Mode, Protocol};
//! use sheave_load::figures::Figures;
//! use sheave_load::report;
//! use sheave_load::run::{EndpointReport, Report};
//! use std::time::Duration;
//!
//! let mut total = Figures::new();
//! total.record_ok(Duration::from_micros(120));
//! let report = Report {
//!     protocol: Protocol::Resp,
//!     mode: Mode::Closed,
//!     connections: 1,
//!     pipeline: 1,
//!     elapsed: Duration::from_secs(1),
//!     endpoints: vec![EndpointReport { addr: "127.0.0.1:6379".parse().unwrap(), figures: total.clone() }],
//!     total,
//! };
//! let json = report::json(&report);
//! assert!(json.contains("\"requests\": 1,"), "{json}");
//! assert!(report::table(&report).contains("127.0.0.1:6379"));
//! ```

use crate::cli::Mode;
use crate::figures::{Figures, TICK};
use crate::run::Report;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

fn ms(us: u64) -> String {
    if us >= 10_000_000 {
        format!("{:.1}s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{us}us")
    }
}

fn errors_text(f: &Figures) -> String {
    let kinds = f.errors_by_kind();
    if kinds.is_empty() {
        return "0".into();
    }
    let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!("{} ({})", f.errors(), parts.join(", "))
}

fn row(out: &mut String, name: &str, share: &str, f: &Figures) {
    let _ = writeln!(
        out,
        "{name:<22} {share:>6} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}  {}",
        f.requests(),
        ms(f.percentile_us(0.5)),
        ms(f.percentile_us(0.9)),
        ms(f.percentile_us(0.99)),
        ms(f.percentile_us(0.999)),
        ms(f.max_us()),
        errors_text(f),
    );
}

/// The table printed at the end: a row per endpoint (its attempts), the totals (requests as
/// their callers saw them), and the throughput.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let mode = match report.mode {
        Mode::Closed => "closed loop".to_string(),
        Mode::Open { rate } => format!("open loop at {rate} req/s, latency from the due time"),
    };
    let _ = writeln!(
        out,
        "{}: {} endpoint(s) x {} connection(s) x {} in flight, {mode}, {:.2} s",
        report.protocol.name(),
        report.endpoints.len(),
        report.connections,
        report.pipeline,
        report.elapsed.as_secs_f64(),
    );
    let _ = writeln!(
        out,
        "{:<22} {:>6} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}  errors",
        "endpoint", "share", "requests", "p50", "p90", "p99", "p99.9", "max"
    );
    let attempts: u64 = report.endpoints.iter().map(|e| e.figures.requests()).sum();
    for e in &report.endpoints {
        let share = format!(
            "{:.1}%",
            100.0 * e.figures.requests() as f64 / attempts.max(1) as f64
        );
        row(&mut out, &e.addr.to_string(), &share, &e.figures);
    }
    row(&mut out, "total", "", &report.total);
    let _ = writeln!(
        out,
        "throughput: {:.0} req/s ({} answered, {} failed, in {:.2} s)",
        report.rps(),
        report.total.ok(),
        report.total.errors(),
        report.elapsed.as_secs_f64(),
    );
    out
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_figures(out: &mut String, f: &Figures, indent: &str) {
    let _ = writeln!(out, "{indent}\"requests\": {},", f.requests());
    let _ = writeln!(out, "{indent}\"ok\": {},", f.ok());
    let _ = writeln!(out, "{indent}\"errors\": {},", f.errors());
    let kinds: Vec<String> = f
        .errors_by_kind()
        .iter()
        .map(|(k, n)| format!("{}: {n}", json_string(k)))
        .collect();
    let _ = writeln!(out, "{indent}\"errors_by_kind\": {{{}}},", kinds.join(", "));
    for (name, q) in [
        ("p50_us", 0.5),
        ("p90_us", 0.9),
        ("p99_us", 0.99),
        ("p999_us", 0.999),
    ] {
        let _ = writeln!(out, "{indent}\"{name}\": {},", f.percentile_us(q));
    }
    let _ = write!(out, "{indent}\"max_us\": {}", f.max_us());
}

/// The figures as a JSON object; see the [module docs](self) for its fields.
pub fn json(report: &Report) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(
        out,
        "  \"protocol\": {},",
        json_string(report.protocol.name())
    );
    let (mode, rate) = match report.mode {
        Mode::Closed => ("closed", "null".to_string()),
        Mode::Open { rate } => ("open", format!("{rate}")),
    };
    let _ = writeln!(out, "  \"mode\": \"{mode}\",");
    let _ = writeln!(out, "  \"rate\": {rate},");
    let _ = writeln!(out, "  \"connections\": {},", report.connections);
    let _ = writeln!(out, "  \"pipeline\": {},", report.pipeline);
    let _ = writeln!(out, "  \"elapsed_s\": {:.6},", report.elapsed.as_secs_f64());
    let _ = writeln!(out, "  \"rps\": {:.3},", report.rps());
    json_figures(&mut out, &report.total, "  ");
    out.push_str(",\n  \"endpoints\": [");
    let attempts: u64 = report.endpoints.iter().map(|e| e.figures.requests()).sum();
    for (i, e) in report.endpoints.iter().enumerate() {
        out.push_str(if i == 0 { "\n    {\n" } else { ",\n    {\n" });
        let _ = writeln!(out, "      \"addr\": {},", json_string(&e.addr.to_string()));
        let _ = writeln!(
            out,
            "      \"share\": {:.6},",
            e.figures.requests() as f64 / attempts.max(1) as f64
        );
        json_figures(&mut out, &e.figures, "      ");
        out.push_str("\n    }");
    }
    out.push_str("\n  ]\n}\n");
    out
}

/// Writes the total latency histogram (microseconds) in HdrHistogram's V2 format, readable
/// by every HdrHistogram library (`hdrhistogram::serialization::Deserializer` here).
pub fn write_hdr(report: &Report, path: &Path) -> io::Result<()> {
    use hdrhistogram::serialization::{Serializer, V2Serializer};
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(report.total.histogram(), &mut bytes)
        .map_err(|e| io::Error::other(format!("{e:?}")))?;
    std::fs::write(path, bytes)
}

/// Draws the latency CDF (log scale of `1/(1-q)`, as HdrHistogram plots do) and the
/// throughput over time, side by side, as SVG.
pub fn write_plot(report: &Report, path: &Path) -> io::Result<()> {
    use plotters::prelude::*;
    let plot = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);

        // Latency by percentile: x = log10(1 / (1 - q)), 0 (p0) .. 4 (p99.99).
        let hist = report.total.histogram();
        let points: Vec<(f64, f64)> = (0..=400)
            .map(|i| {
                let x = i as f64 / 100.0;
                let q = 1.0 - 10f64.powf(-x);
                (x, report.total.percentile_us(q.min(1.0)) as f64 / 1000.0)
            })
            .collect();
        let top = (report.total.max_us() as f64 / 1000.0).max(0.001) * 1.1;
        let mut chart = ChartBuilder::on(&left)
            .caption("latency by percentile (ms)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..4f64, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .x_labels(5)
            .x_label_formatter(&|x| match x.round() as i64 {
                _ if (x - x.round()).abs() > 1e-6 => String::new(),
                0 => "0".into(),
                1 => "90".into(),
                2 => "99".into(),
                3 => "99.9".into(),
                4 => "99.99".into(),
                _ => String::new(),
            })
            .draw()?;
        if !hist.is_empty() {
            chart.draw_series(LineSeries::new(points, &BLUE))?;
        }

        // Answered requests per second, per tick (whole ticks only: the last is cut short).
        let full_ticks = (report.elapsed.as_nanos() / TICK.as_nanos()).max(1) as usize;
        let per_second: Vec<(f64, f64)> = report
            .total
            .timeline()
            .iter()
            .take(full_ticks)
            .enumerate()
            .map(|(i, n)| {
                (
                    i as f64 * TICK.as_secs_f64(),
                    *n as f64 / TICK.as_secs_f64(),
                )
            })
            .collect();
        let x_max = (per_second.len() as f64 * TICK.as_secs_f64()).max(TICK.as_secs_f64());
        let y_max = per_second.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&right)
            .caption("throughput (req/s)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        chart.configure_mesh().x_desc("seconds").draw()?;
        chart.draw_series(LineSeries::new(per_second, &RED))?;
        root.present()?;
        Ok(())
    };
    plot().map_err(|e| io::Error::other(e.to_string()))
}
