//! How a [`Balance`](super::Balance) picks, waits, reconnects and ejects.

pub use crate::retry::Backoff;
use std::time::Duration;

/// How the balancer chooses an endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// Power of two choices over **pending requests**: pick two endpoints at random, use the
    /// one with fewer requests in flight. Cheap, and good when endpoints are alike.
    P2cPending,
    /// Power of two choices over **peak-EWMA latency** × (pending + 1): routes around slow
    /// endpoints. See [`PeakEwma`].
    P2cPeakEwma(PeakEwma),
    /// Each endpoint in turn (skipping busy and ejected ones): exactly even when all are ready.
    RoundRobin,
}

/// The peak-EWMA load estimate (Finagle's, also tower's): an exponentially weighted moving
/// average of round-trip times that jumps to any *higher* sample at once (the peak) and decays
/// toward lower ones with time constant `decay`. Reading the estimate also decays it toward
/// zero, so an endpoint that looked slow is probed again once it has rested.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwma {
    /// The time constant of the decay (default 10 s).
    pub decay: Duration,
    /// The estimate of an endpoint with no history when no other endpoint has one either
    /// (default 30 ms). Otherwise a new endpoint starts at the mean of the others: neutral,
    /// neither favoured nor shunned.
    pub default_rtt: Duration,
    /// A failed request counts as a round trip of at least this long (default 1 s), so an
    /// endpoint that fails fast never looks best.
    pub failure_penalty: Duration,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
            failure_penalty: Duration::from_secs(1),
        }
    }
}

/// What `ready()` does when every endpoint it tried is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenBusy {
    /// Wait for the least-loaded endpoint it tried (or for the endpoint set to change) — an
    /// outer timeout bounds the wait.
    WaitForBest,
    /// Fail at once with `Overloaded`, flagged retryable (nothing was sent).
    FailFast,
}

/// Outlier ejection: an endpoint that fails `consecutive_failures` times in a row is skipped
/// for `backoff.nominal(n)` on its n-th ejection, then probed back: on probation, one failure
/// ejects it again (for longer) and one success clears its record. No more than `max_share`
/// of the endpoints (but at least one) are ejected at once; when every endpoint is unhealthy
/// the balancer ignores health (Finagle's panic mode) rather than refuse all traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ejection {
    /// Failures in a row that eject an endpoint (default 5).
    pub consecutive_failures: u32,
    /// How long an ejection lasts, growing with each ejection (default 1 s … 60 s).
    pub backoff: Backoff,
    /// The largest fraction of endpoints ejected at once (default 0.1; at least one).
    pub max_share: f64,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            consecutive_failures: 5,
            backoff: Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60)),
            max_share: 0.1,
        }
    }
}

/// The balancer's configuration; see [`Balance::builder`](super::Balance::builder).
/// The defaults are stable within a minor version.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceConfig {
    /// How to pick (default: p2c over peak-EWMA).
    pub policy: Policy,
    /// How many picks `ready()` tries before it falls back on [`WhenBusy`] (default 3).
    pub picks: u32,
    /// What to do when every pick is busy (default [`WhenBusy::WaitForBest`]).
    pub when_busy: WhenBusy,
    /// How long `ready()` waits for a first endpoint to connect before failing with
    /// `Unavailable` (default 1 s).
    pub empty_wait: Duration,
    /// Reconnect backoff for endpoints that fail to connect or whose connection closed
    /// (default 10 ms doubling to 5 s, jittered so clients do not reconnect in lockstep).
    pub reconnect: Backoff,
    /// Outlier ejection, or `None` to never eject (default on).
    pub ejection: Option<Ejection>,
    /// Seed for the random picks (default: from the OS), for reproducible tests.
    pub seed: Option<u64>,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            policy: Policy::P2cPeakEwma(PeakEwma::default()),
            picks: 3,
            when_busy: WhenBusy::WaitForBest,
            empty_wait: Duration::from_secs(1),
            reconnect: Backoff::exponential(Duration::from_millis(10), Duration::from_secs(5)),
            ejection: Some(Ejection::default()),
            seed: None,
        }
    }
}
