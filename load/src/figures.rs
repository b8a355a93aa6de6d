//! [`Figures`]: what a run counts — requests, errors by kind, a latency histogram and
//! throughput over time — for the whole run and for each endpoint.
//!
//! Latencies are recorded for answered requests only (an error that fails in a microsecond
//! would flatter the percentiles), in microseconds, in an HDR histogram of 3 significant
//! digits up to an hour. Errors are counted by kind: the sheave [`ErrorKind`]s, plus
//! `error-reply` (the server said no: `-ERR`, HTTP 4xx/5xx) and `unexpected-reply` (an
//! answer that is not the one asked for).
//!
//! ```
//! use sheave_load::figures::{Failure, Figures};
//! use sheave_service::ErrorKind;
//! use std::time::Duration;
//!
//! let mut f = Figures::new();
//! f.record_ok(Duration::from_micros(250));
//! f.record_error(Failure::Kind(ErrorKind::Timeout));
//! f.record_error(Failure::ErrorReply);
//! assert_eq!((f.requests(), f.ok(), f.errors()), (3, 1, 2));
//! assert_eq!(f.errors_by_kind(), vec![("timeout", 1), ("error-reply", 1)]);
//! assert_eq!(f.percentile_us(0.5), 250);
//! ```

use hdrhistogram::Histogram;
use sheave_service::ErrorKind;
use std::time::Duration;

/// The names of the error kinds, in the order they are counted and printed.
pub const KINDS: [&str; 12] = [
    "timeout",
    "overloaded",
    "unavailable",
    "closed",
    "canceled",
    "protocol",
    "io",
    "service",
    "invalid-request",
    "other",
    "error-reply",
    "unexpected-reply",
];

/// The width of one bucket of [`Figures::timeline`] (`record_ok` counts in tenths of a second).
pub const TICK: Duration = Duration::from_millis(100);

/// The largest latency told apart: an hour, in microseconds (longer ones count as this).
const MAX_US: u64 = 3_600_000_000;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A sheave error of this kind.
    Kind(ErrorKind),
    /// The server answered with an error.
    ErrorReply,
    /// The answer was not the one asked for.
    Unexpected,
}

impl Failure {
    /// The index of this failure in [`KINDS`].
    pub fn index(self) -> usize {
        match self {
            Failure::Kind(kind) => match kind {
                ErrorKind::Timeout => 0,
                ErrorKind::Overloaded => 1,
                ErrorKind::Unavailable => 2,
                ErrorKind::Closed => 3,
                ErrorKind::Canceled => 4,
                ErrorKind::Protocol => 5,
                ErrorKind::Io => 6,
                ErrorKind::Service => 7,
                ErrorKind::InvalidRequest => 8,
                _ => 9,
            },
            Failure::ErrorReply => 10,
            Failure::Unexpected => 11,
        }
    }
}

/// Counts and latencies; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Figures {
    latency: Histogram<u64>,
    ok: u64,
    errors: [u64; KINDS.len()],
    /// The exact largest latency, in microseconds.
    max_us: u64,
    /// Answered requests per [`TICK`], one entry per [`mark`](Figures::mark).
    timeline: Vec<u64>,
    /// `ok` at the last mark.
    marked: u64,
}

impl Default for Figures {
    fn default() -> Self {
        Figures::new()
    }
}

impl Figures {
    /// Empty figures.
    pub fn new() -> Figures {
        Figures {
            latency: Histogram::new_with_bounds(1, MAX_US, 3).expect("valid bounds"),
            ok: 0,
            errors: [0; KINDS.len()],
            max_us: 0,
            timeline: Vec::new(),
            marked: 0,
        }
    }

    /// Forgets everything (once the connections are made, before the clock starts).
    pub fn reset(&mut self) {
        *self = Figures::new();
    }

    /// A request answered as asked after `latency`.
    pub fn record_ok(&mut self, latency: Duration) {
        // u64 arithmetic (`as_micros` is u128, and this runs once per request).
        let us =
            (latency.as_secs() * 1_000_000 + u64::from(latency.subsec_micros())).clamp(1, MAX_US);
        self.latency.saturating_record(us);
        self.max_us = self.max_us.max(us);
        self.ok += 1;
    }

    /// Closes a [`TICK`] of the timeline: the answers since the last mark. The run marks
    /// every tick from a timer, so the request path does no time arithmetic for it.
    pub fn mark(&mut self) {
        self.timeline.push(self.ok - self.marked);
        self.marked = self.ok;
    }

    /// A request that failed.
    pub fn record_error(&mut self, why: Failure) {
        self.errors[why.index()] += 1;
    }

    /// Requests finished: answered as asked, or failed.
    pub fn requests(&self) -> u64 {
        self.ok + self.errors()
    }

    /// Requests answered as asked.
    pub fn ok(&self) -> u64 {
        self.ok
    }

    /// Requests that failed, of any kind.
    pub fn errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// The kinds that occurred, with their counts, in [`KINDS`] order.
    pub fn errors_by_kind(&self) -> Vec<(&'static str, u64)> {
        KINDS
            .iter()
            .zip(self.errors)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (*k, n))
            .collect()
    }

    /// The `q`-th quantile (0.5, 0.99, ...) of the answered requests' latency, in
    /// microseconds (0 with none).
    pub fn percentile_us(&self, q: f64) -> u64 {
        if self.ok == 0 {
            return 0;
        }
        self.latency.value_at_quantile(q)
    }

    /// The largest latency, exactly, in microseconds.
    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The latency histogram, in microseconds.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.latency
    }

    /// Answered requests per [`TICK`] since the start, as marked.
    pub fn timeline(&self) -> &[u64] {
        &self.timeline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_its_own_slot() {
        let mut f = Figures::new();
        let all = [
            ErrorKind::Timeout,
            ErrorKind::Overloaded,
            ErrorKind::Unavailable,
            ErrorKind::Closed,
            ErrorKind::Canceled,
            ErrorKind::Protocol,
            ErrorKind::Io,
            ErrorKind::Service,
            ErrorKind::InvalidRequest,
        ];
        for kind in all {
            f.record_error(Failure::Kind(kind));
        }
        f.record_error(Failure::ErrorReply);
        f.record_error(Failure::Unexpected);
        let kinds = f.errors_by_kind();
        assert_eq!(kinds.len(), 11, "{kinds:?}");
        assert!(kinds.iter().all(|(_, n)| *n == 1));
        assert!(!kinds.iter().any(|(k, _)| *k == "other"));
    }

    #[test]
    fn the_timeline_counts_answers_per_mark() {
        let mut f = Figures::new();
        f.record_ok(Duration::from_micros(5));
        f.mark();
        f.mark();
        f.record_ok(Duration::from_micros(5));
        f.record_ok(Duration::from_micros(3));
        f.mark();
        assert_eq!(f.timeline(), &[1, 0, 2]);
        assert_eq!(f.max_us(), 5);
    }
}
