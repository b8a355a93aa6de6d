//! Figures: outcomes, timelines, latencies, and what `/proc` says about a process.

use std::process::Command;
use std::time::Duration;

/// Counts per interval of a run, by when each request finished.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The width of each bucket.
    pub interval: Duration,
    /// One bucket per interval, from the start of the run.
    pub buckets: Vec<Bucket>,
}

/// One interval of a [`Timeline`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Answered (not an error reply).
    pub ok: u64,
    /// Refused with an explicit `Overloaded` reply.
    pub overloaded: u64,
    /// Anything else: another error reply, a broken connection, a missed deadline.
    pub failed: u64,
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// `-ERR overloaded`.
    Overloaded,
    /// Anything else.
    Failed,
}

impl Timeline {
    pub(super) fn new(interval: Duration) -> Self {
        Timeline {
            interval,
            buckets: Vec::new(),
        }
    }

    pub(super) fn record(&mut self, since_start: Duration, outcome: Outcome) {
        let i = (since_start.as_micros() / self.interval.as_micros().max(1)) as usize;
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, Bucket::default());
        }
        let b = &mut self.buckets[i];
        match outcome {
            Outcome::Ok => b.ok += 1,
            Outcome::Overloaded => b.overloaded += 1,
            Outcome::Failed => b.failed += 1,
        }
    }
}

/// Latencies of a run; quantiles by sorting (runs here are at most tens of thousands).
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub(super) fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// How many were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `q` quantile (0.0..=1.0), nearest rank; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    /// The largest.
    pub fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }
}

/// Milliseconds with two decimals, for the one-line figures.
pub fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

/// Resident memory of process `pid` (`VmRSS` of `/proc/<pid>/status`), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of process `pid`, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless it says otherwise).
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// How many descriptors process `pid` has open.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// How many of the descriptor numbers below `limit` process `pid` uses: the slots that
/// `RLIMIT_NOFILE = limit` leaves for new ones (a descriptor inherited with a higher number
/// takes none of them).
pub fn fd_slots_used(pid: u32, limit: u64) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .filter(|&fd| fd < limit)
            .count(),
    )
}

/// The soft and hard `RLIMIT_NOFILE` of this process (`/proc/self/limits`).
pub fn nofile_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line["Max open files".len()..].split_whitespace();
    let parse = |s: Option<&str>| match s? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    Some((parse(nums.next())?, parse(nums.next())?))
}

/// Makes sure this process may open `n` descriptors: raises its own soft limit (up to the
/// hard one) with `prlimit` (util-linux) when it is lower. `Err` says why it could not.
pub fn ensure_nofile(n: u64) -> Result<(), String> {
    let (soft, hard) = nofile_limits().ok_or("cannot read /proc/self/limits")?;
    if soft >= n {
        return Ok(());
    }
    if hard < n {
        return Err(format!("needs {n} descriptors; the hard limit is {hard}"));
    }
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={n}:{hard}"))
        .status()
        .map_err(|e| format!("needs {n} descriptors (soft limit {soft}); prlimit: {e}"))?;
    match nofile_limits() {
        Some((soft, _)) if status.success() && soft >= n => Ok(()),
        _ => Err(format!(
            "needs {n} descriptors; prlimit could not raise {soft}"
        )),
    }
}
