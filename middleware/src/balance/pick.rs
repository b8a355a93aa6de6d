//! Picking an endpoint: the policy's choice, then each candidate judged by its `try_ready`.
//!
//! One round of [`try_pick`] reads as three steps:
//!
//! 1. **Picks**: up to [`picks`](super::BalanceConfig::picks) choices by the policy, each
//!    excluding the endpoints already found busy or refusing — the first with capacity wins.
//! 2. **Scan**: when every pick failed, every endpoint is judged once, the ones in service
//!    before the ejected ones, so the balancer never waits while some endpoint has capacity.
//! 3. **Verdict**: a dead connection found on the way is taken out and the round starts over;
//!    otherwise the round answers busy (with the cheapest full endpoint), refused, or empty.

use super::Policy;
use super::endpoint::Endpoint;
use super::shared::Shared;
use rand::Rng;
use sheave_service::{Error, ErrorKind, Service, TryReady};
use std::rc::Rc;
use std::time::Instant;

/// What one round of picking found.
pub(crate) enum Pick<K, S, P> {
    Ready(Rc<Endpoint<K, S>>, P),
    /// Every endpoint was full; the cheapest of them.
    Busy(Rc<Endpoint<K, S>>),
    /// Every endpoint refused (without being dead); the last refusal.
    Refused(Error),
    Empty,
}

/// What an endpoint's `try_ready` says, by the rule on [`Service`]: a readiness error of
/// kind `Closed` is closed for good, any other is refusing for now.
enum Judged<P> {
    Ready(P),
    Busy,
    Refused(Error),
    Dead,
}

fn judge<K, S, Req>(ep: &Endpoint<K, S>) -> Judged<S::Permit>
where
    S: Service<Req>,
    S::Error: Into<Error>,
{
    match ep.svc.try_ready() {
        TryReady::Ready(permit) => Judged::Ready(permit),
        TryReady::Busy => Judged::Busy,
        TryReady::Closed(e) => {
            let e: Error = e.into();
            if e.kind() == ErrorKind::Closed {
                Judged::Dead
            } else {
                Judged::Refused(e)
            }
        }
    }
}

/// What a round saw of the endpoints that could not take the request.
struct Seen<K, S> {
    /// The cheapest full endpoint, and its cost.
    busy: Option<(Rc<Endpoint<K, S>>, f64)>,
    refused: Option<Error>,
    dead: Option<Rc<Endpoint<K, S>>>,
    /// Indices already judged (the first 64), so later picks look elsewhere.
    tried: u64,
}

impl<K: Clone + Eq, S> Seen<K, S> {
    fn was_tried(&self, i: usize) -> bool {
        was_tried(self.tried, i)
    }

    /// Judges endpoint `i`: its permit if it has capacity, else what it said is noted.
    fn judge<Req>(
        &mut self,
        shared: &Shared<K, S>,
        endpoints: &[Rc<Endpoint<K, S>>],
        i: usize,
        now: Instant,
    ) -> Option<S::Permit>
    where
        S: Service<Req>,
        S::Error: Into<Error>,
    {
        match judge::<K, S, Req>(&endpoints[i]) {
            Judged::Ready(permit) => Some(permit),
            other => {
                self.note::<Req>(shared, endpoints, i, other, now);
                None
            }
        }
    }

    /// Notes what endpoint `i`, which could not take the request, said.
    fn note<Req>(
        &mut self,
        shared: &Shared<K, S>,
        endpoints: &[Rc<Endpoint<K, S>>],
        i: usize,
        judged: Judged<S::Permit>,
        now: Instant,
    ) where
        S: Service<Req>,
    {
        if i < 64 {
            self.tried |= 1 << i;
        }
        let ep = &endpoints[i];
        match judged {
            Judged::Ready(_) => unreachable!("a permit is taken, not noted"),
            Judged::Busy => {
                let c = shared.cost::<Req>(endpoints, ep, now);
                if self.busy.as_ref().is_none_or(|(_, best)| c < *best) {
                    self.busy = Some((ep.clone(), c));
                }
            }
            Judged::Refused(e) => self.refused = Some(e),
            Judged::Dead => self.dead = Some(ep.clone()),
        }
    }
}

fn was_tried(tried: u64, i: usize) -> bool {
    i < 64 && tried & (1 << i) != 0
}

impl<K: Clone + Eq, S> Shared<K, S> {
    /// One round of picking; see the [module docs](self).
    pub(crate) fn try_pick<Req>(&self, now: Instant) -> Pick<K, S, S::Permit>
    where
        S: Service<Req>,
        S::Error: Into<Error>,
    {
        // Each dead endpoint found is removed, so this ends.
        loop {
            let endpoints = self.endpoints.borrow();
            if endpoints.is_empty() {
                return Pick::Empty;
            }
            let any_ejected = self.any_ejected(now);
            // 1. Picks — the first one, the common case, before any bookkeeping.
            let first = self.pick::<Req>(&endpoints, now, 0, any_ejected);
            let judged = judge::<K, S, Req>(&endpoints[first]);
            if let Judged::Ready(permit) = judged {
                return Pick::Ready(endpoints[first].clone(), permit);
            }
            let mut seen = Seen {
                busy: None,
                refused: None,
                dead: None,
                tried: 0,
            };
            seen.note::<Req>(self, &endpoints, first, judged, now);
            for _ in 1..self.config.picks.max(1) {
                if seen.dead.is_some() {
                    break;
                }
                let i = self.pick::<Req>(&endpoints, now, seen.tried, any_ejected);
                if let Some(permit) = seen.judge::<Req>(self, &endpoints, i, now) {
                    return Pick::Ready(endpoints[i].clone(), permit);
                }
            }
            // 2. Scan: in service first, then — only if none of those has room — ejected.
            if seen.dead.is_none() {
                for ejected in [false, true] {
                    if ejected && seen.busy.is_some() {
                        break; // a full endpoint in service beats an ejected one
                    }
                    for i in 0..endpoints.len() {
                        if seen.was_tried(i) || endpoints[i].is_ejected(now) != ejected {
                            continue;
                        }
                        if let Some(permit) = seen.judge::<Req>(self, &endpoints, i, now) {
                            return Pick::Ready(endpoints[i].clone(), permit);
                        }
                        if seen.dead.is_some() {
                            break;
                        }
                    }
                }
            }
            drop(endpoints);
            // 3. Verdict.
            match seen {
                Seen { dead: Some(ep), .. } => self.closed(&ep, false),
                Seen {
                    busy: Some((best, _)),
                    ..
                } => return Pick::Busy(best),
                Seen {
                    refused: Some(e), ..
                } => return Pick::Refused(e),
                Seen { .. } => return Pick::Empty,
            }
        }
    }

    /// The policy's next choice, among endpoints not tried this round when there are any;
    /// ejected endpoints only when every endpoint is ejected (panic mode).
    fn pick<Req>(
        &self,
        endpoints: &[Rc<Endpoint<K, S>>],
        now: Instant,
        tried: u64,
        any_ejected: bool,
    ) -> usize
    where
        S: Service<Req>,
    {
        let n = endpoints.len();
        let panic = any_ejected && endpoints.iter().all(|e| e.is_ejected(now));
        let healthy = |i: usize| !any_ejected || panic || !endpoints[i].is_ejected(now);
        let eligible = |i: usize| healthy(i) && !was_tried(tried, i);
        match self.config.policy {
            Policy::RoundRobin => {
                let start = self.cursor.get();
                let i = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| eligible(i))
                    .unwrap_or(start % n);
                self.cursor.set(i + 1);
                i
            }
            Policy::P2cPending | Policy::P2cPeakEwma(_) if n > 1 && tried == 0 && !any_ejected => {
                // The common case: every endpoint is eligible; two distinct draws.
                let mut rng = self.rng.borrow_mut();
                let a = rng.random_range(0..n);
                let b = (a + 1 + rng.random_range(0..n - 1)) % n;
                drop(rng);
                let cost = |i: usize| self.cost::<Req>(endpoints, &endpoints[i], now);
                if cost(b) < cost(a) { b } else { a }
            }
            Policy::P2cPending | Policy::P2cPeakEwma(_) => {
                let a = self.random_eligible(n, &eligible);
                let Some(b) = self.second_choice(n, a, &eligible) else {
                    return a;
                };
                let cost = |i: usize| self.cost::<Req>(endpoints, &endpoints[i], now);
                if cost(b) < cost(a) { b } else { a }
            }
        }
    }

    /// The policy's cost of `ep` (an endpoint without history costs the neutral estimate).
    fn cost<Req>(&self, endpoints: &[Rc<Endpoint<K, S>>], ep: &Endpoint<K, S>, now: Instant) -> f64
    where
        S: Service<Req>,
    {
        ep.cost::<Req>(&self.config.policy, now, || {
            self.neutral_rtt(endpoints, now)
        })
    }

    /// One random index that is `eligible`, if a few draws find one, else the first eligible
    /// one, else any.
    fn random_eligible(&self, n: usize, eligible: &impl Fn(usize) -> bool) -> usize {
        let mut rng = self.rng.borrow_mut();
        for _ in 0..2 * n {
            let i = rng.random_range(0..n);
            if eligible(i) {
                return i;
            }
        }
        (0..n).find(|&i| eligible(i)).unwrap_or(0)
    }

    /// A second, different eligible index for p2c, if there is one.
    fn second_choice(
        &self,
        n: usize,
        a: usize,
        eligible: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if n == 1 {
            return None;
        }
        let b = self.random_eligible(n, eligible);
        if b != a {
            return Some(b);
        }
        let mut rng = self.rng.borrow_mut();
        let b = (a + 1 + rng.random_range(0..n - 1)) % n;
        Some(b)
            .filter(|&b| eligible(b))
            .or_else(|| (0..n).find(|&i| i != a && eligible(i)))
    }
}
