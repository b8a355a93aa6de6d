//! The tables the meter and sheave's benches print: Markdown, right-aligned, so they paste
//! into a README as they are.
//!
//! # Example
//!
//! ```
//! use sheave_load::meter::table::{fmt_dur, table};
//! use std::time::Duration;
//!
//! let t = table(
//!     &["case", "p50"],
//!     &[vec!["get".into(), fmt_dur(Duration::from_micros(42))]],
//! );
//! assert_eq!(t, "| case |     p50 |\n|------|---------|\n|  get | 42.0 µs |\n");
//! ```

use std::fmt::Write;
use std::time::Duration;

/// A table as Markdown text: a header row, a rule, and the rows, every column padded to its
/// widest cell (cells right-aligned). Rows shorter than the header leave cells out.
///
/// ```
/// let t = sheave_load::meter::table::table(&["a", "bb"], &[vec!["1".into(), "2".into()]]);
/// assert_eq!(t.lines().count(), 3);
/// assert_eq!(t.lines().nth(2), Some("| 1 |  2 |"));
/// ```
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}", w = *w))
            .collect();
        let _ = writeln!(out, "| {} |", padded.join(" | "));
    };
    let mut out = String::new();
    line(&mut out, header.to_vec());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
    let _ = writeln!(out, "|{}|", rule.join("|"));
    for row in rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    out
}

/// Prints [`table`] to standard output.
///
/// ```
/// sheave_load::meter::table::print_table(&["side", "ns"], &[vec!["bare".into(), "3.1".into()]]);
/// ```
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", table(header, rows));
}

/// A duration, compactly: ns below 10 µs, µs with one decimal below 10 ms, else ms.
///
/// ```
/// use sheave_load::meter::table::fmt_dur;
/// use std::time::Duration;
///
/// assert_eq!(fmt_dur(Duration::from_nanos(950)), "950 ns");
/// assert_eq!(fmt_dur(Duration::from_micros(1500)), "1500.0 µs");
/// assert_eq!(fmt_dur(Duration::from_millis(25)), "25.0 ms");
/// ```
pub fn fmt_dur(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}
