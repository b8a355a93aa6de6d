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
/// toward lower ones with time constant `decay`. An endpoint's cost is its estimate times
/// (requests in flight + 1).
///
/// The rules, in full:
///
/// 1. **No history is neutral.** An endpoint without a sample — new, reconnected, or back
///    from an ejection — costs the mean estimate of the endpoints that have one
///    (`default_rtt` when none has), so it is neither favoured nor shunned.
/// 2. **The first sample replaces that prior** outright: an estimate never has to decay
///    from a guess to the truth (with a 30 ms prior and 0.25 ms round trips that took tens
///    of seconds, and equal endpoints ended up with shares from 3.7% to 8.9%).
/// 3. **A higher sample is taken at once; a lower one is averaged in** with weight
///    `1 - e^(-Δt/decay)`.
/// 4. **A failure is a sample of at least `failure_penalty`**, so an endpoint that fails
///    fast never looks best, and it marks the estimate *penalised*. A call given up by its
///    caller (a timeout above the balancer, a hedge's loser) is a sample of the time it
///    waited: a hung endpoint's calls all look that slow, but a hedge's loser on a healthy
///    endpoint is not turned into a one-second penalty.
/// 5. **A penalised estimate recovers quickly**: it decays toward zero with
///    `penalty_decay` (not `decay`) while the endpoint gets no traffic, and the first
///    success replaces it with that success's round trip — which still decays with
///    `penalty_decay` until the next sample, since a reply that waited out a stall is not
///    the endpoint's pace. A server that stalled for a second is back in the rotation
///    within about `8 × penalty_decay` at worst.
/// 6. Otherwise, reading the estimate decays it toward zero with `decay`, so an endpoint
///    that looked slow is probed again once it has rested.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwma {
    /// The time constant of the decay (default 10 s, as Finagle's and linkerd's). Where round
    /// trips are sub-millisecond (a LAN, loopback), a few hundred milliseconds is better: one
    /// slow sample then skews equal endpoints' shares for that long, not for tens of seconds
    /// (`tests/faults`: 16 equal endpoints got 5.3–7.0% each with 250 ms, 5.5–7.3% with
    /// 500 ms, 4.7–7.6% with 1 s; even is 6.25%). Shorter is not free: a slow endpoint is
    /// probed again once its estimate has decayed to the others' level, about
    /// `decay × ln(slowdown)` after its last sample.
    pub decay: Duration,
    /// The estimate of an endpoint with no history when no other endpoint has one either
    /// (default 30 ms).
    pub default_rtt: Duration,
    /// A failed request counts as a round trip of at least this long (default 1 s), so an
    /// endpoint that fails fast never looks best.
    pub failure_penalty: Duration,
    /// The time constant with which a penalised estimate decays (default 250 ms).
    pub penalty_decay: Duration,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
            failure_penalty: Duration::from_secs(1),
            penalty_decay: Duration::from_millis(250),
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
///
/// Health belongs to the endpoint's **key**, not to one connection: failures, ejections and
/// the reconnect backoff survive a reconnect. A connection that closes before its first
/// success counts as a failure, and each such connection in a row lengthens the reconnect
/// backoff — so a server that accepts and closes at once is ejected like one that fails
/// every request, and is redialled only when its ejection ends.
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
    /// At most this many `ready()` calls wait while every endpoint is full (default 1,024);
    /// the next fails at once with a retryable `Overloaded` error.
    pub max_waiters: usize,
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
            max_waiters: 1024,
        }
    }
}
