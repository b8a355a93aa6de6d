//! The proxy's counters: plain `Cell`s owned by each runtime thread (nothing atomic on the
//! request path), merged across threads when `/metrics` is scraped, and written in the
//! Prometheus text format 0.0.4.
//!
//! ```
//! use sheave_proxy::metrics::{ClusterMetrics, Snapshot};
//! use std::time::Duration;
//!
//! let m = ClusterMetrics::new("cache", &["a".to_string()]);
//! m.request(Duration::from_micros(300), None);
//! let mut snap = Snapshot::default();
//! snap.add_cluster(&m);
//! let text = snap.render();
//! assert!(text.contains("sheave_proxy_requests_total{cluster=\"cache\"} 1\n"));
//! ```

use sheave_middleware::retry::Budget;
use sheave_service::ErrorKind;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::rc::{Rc, Weak};
use std::time::Duration;

/// The upper bounds of the latency histogram's buckets, in seconds (`+Inf` follows).
pub const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The failure kinds counted, by label.
const KINDS: [(ErrorKind, &str); 9] = [
    (ErrorKind::Timeout, "timeout"),
    (ErrorKind::Overloaded, "overloaded"),
    (ErrorKind::Unavailable, "unavailable"),
    (ErrorKind::Closed, "closed"),
    (ErrorKind::Canceled, "canceled"),
    (ErrorKind::Protocol, "protocol"),
    (ErrorKind::Io, "io"),
    (ErrorKind::Service, "service"),
    (ErrorKind::InvalidRequest, "invalid_request"),
];

fn kind_index(kind: ErrorKind) -> usize {
    KINDS.iter().position(|(k, _)| *k == kind).unwrap_or(7)
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// Counts `latency` in its bucket (the `+Inf` bucket is the count, kept elsewhere) and in
/// the sum.
fn observe(buckets: &[Cell<u64>; BUCKETS.len()], sum_ns: &Cell<u64>, latency: Duration) {
    let secs = latency.as_secs_f64();
    if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
        bump(&buckets[i]);
    }
    sum_ns.set(sum_ns.get() + latency.as_nanos() as u64);
}

/// What a balancer says of one endpoint at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancedState {
    /// The endpoint's name.
    pub endpoint: String,
    /// Whether the balancer has ejected it now.
    pub ejected: bool,
    /// Requests (HTTP) or spliced connections (TCP) in flight on it now.
    pub pending: u64,
}

/// Reads a balancer's endpoints at scrape time (on its own thread): gone once it is.
struct Probe(Box<dyn Fn() -> Option<Vec<BalancedState>>>);

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Probe")
    }
}

/// One endpoint's counters, on one thread.
#[derive(Debug, Default)]
pub struct EndpointMetrics {
    /// Attempts sent (first tries and retries).
    pub attempts: Cell<u64>,
    /// Failed attempts, by kind.
    pub failures: [Cell<u64>; 9],
    /// Times it was ejected.
    pub ejections: Cell<u64>,
    /// Whether it is ejected now (1) or not (0).
    pub ejected: Cell<u64>,
    /// Connections (TCP proxy) opened to it.
    pub connections: Cell<u64>,
    /// Attempt latencies, by bucket of [`BUCKETS`].
    pub buckets: [Cell<u64>; BUCKETS.len()],
    /// Attempt latency sum, in nanoseconds.
    pub latency_ns: Cell<u64>,
}

impl EndpointMetrics {
    /// Counts an attempt that took `latency` (to the reply for RESP, to the response headers
    /// for HTTP, to the connection for TCP) and its outcome.
    pub fn attempt(&self, latency: Duration, failure: Option<ErrorKind>) {
        bump(&self.attempts);
        if let Some(kind) = failure {
            bump(&self.failures[kind_index(kind)]);
        }
        observe(&self.buckets, &self.latency_ns, latency);
    }
}

/// One cluster's counters, on one thread.
#[derive(Debug)]
pub struct ClusterMetrics {
    name: String,
    /// Per endpoint, by label: the config's in order, then those discovery added.
    endpoints: RefCell<Vec<(String, Rc<EndpointMetrics>)>>,
    requests: Cell<u64>,
    failures: [Cell<u64>; 9],
    buckets: [Cell<u64>; BUCKETS.len()],
    /// Latency sum, in nanoseconds.
    latency_ns: Cell<u64>,
    /// The retry budgets of this thread's stacks of the cluster.
    /// Weak: a stack a reload replaced stops counting once its last request is done.
    budgets: RefCell<Vec<Weak<Budget>>>,
    /// The balancers of this thread's stacks of the cluster (TCP and HTTP).
    balancers: RefCell<Vec<Probe>>,
    /// Backups sent by this thread's hedges of the cluster, read at scrape.
    hedges: RefCell<Vec<HedgeProbe>>,
    /// The HTTP connection pools of this thread's endpoint clients, by endpoint label.
    pools: RefCell<Vec<(String, PoolReader)>>,
}

/// Reads an HTTP client's pool, `(idle, in use)`, while the client lives.
struct PoolReader(Box<dyn Fn() -> Option<(u64, u64)>>);

impl fmt::Debug for PoolReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PoolReader").field(&(self.0)()).finish()
    }
}

/// Reads a hedge's backups sent (0 once the hedge is gone).
struct HedgeProbe(Box<dyn Fn() -> u64>);

impl std::fmt::Debug for HedgeProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HedgeProbe").field(&(self.0)()).finish()
    }
}

impl ClusterMetrics {
    /// Counters for cluster `name` with these endpoints.
    pub fn new(name: &str, endpoints: &[String]) -> Self {
        ClusterMetrics {
            name: name.to_string(),
            endpoints: RefCell::new(
                endpoints
                    .iter()
                    .map(|e| (e.clone(), Rc::default()))
                    .collect(),
            ),
            requests: Cell::new(0),
            failures: Default::default(),
            buckets: Default::default(),
            latency_ns: Cell::new(0),
            budgets: RefCell::default(),
            balancers: RefCell::default(),
            hedges: RefCell::default(),
            pools: RefCell::default(),
        }
    }

    /// Reports `budget`'s retries available at each scrape,
    /// while its stack holds it (a stack a reload replaced stops counting when it goes).
    pub fn add_budget(&self, budget: Rc<Budget>) {
        let mut budgets = self.budgets.borrow_mut();
        budgets.retain(|b| b.strong_count() > 0);
        budgets.push(Rc::downgrade(&budget));
    }

    /// Reports, at each scrape, the pool of an HTTP client of `endpoint` as `read` says it:
    /// `(idle, in use)`, until it says `None` (the client is gone).
    pub fn add_pool(&self, endpoint: &str, read: impl Fn() -> Option<(u64, u64)> + 'static) {
        let mut pools = self.pools.borrow_mut();
        // Those of clients gone (reconnected, or on a stack a reload replaced) are dropped.
        pools.retain(|(_, reader)| (reader.0)().is_some());
        pools.push((endpoint.to_string(), PoolReader(Box::new(read))));
    }

    /// Reports, at each scrape, the backups `sent` says a hedge of the cluster has sent.
    pub fn add_hedges(&self, sent: impl Fn() -> u64 + 'static) {
        self.hedges.borrow_mut().push(HedgeProbe(Box::new(sent)));
    }

    /// Reports, at each scrape, what `read` says of the endpoints of `balancer` (while it
    /// lives).
    pub fn add_balancer<B: 'static>(
        &self,
        balancer: &Rc<B>,
        read: impl Fn(&B) -> Vec<BalancedState> + 'static,
    ) {
        let weak: Weak<B> = Rc::downgrade(balancer);
        let mut balancers = self.balancers.borrow_mut();
        // Those of balancers gone (on a stack a reload replaced) are dropped.
        balancers.retain(|probe| (probe.0)().is_some());
        balancers.push(Probe(Box::new(move || weak.upgrade().map(|b| read(&b)))));
    }

    /// Counts a request that took `latency` and failed with `failure`, if it did.
    pub fn request(&self, latency: Duration, failure: Option<ErrorKind>) {
        bump(&self.requests);
        if let Some(kind) = failure {
            bump(&self.failures[kind_index(kind)]);
        }
        observe(&self.buckets, &self.latency_ns, latency);
    }

    /// The endpoint at `index` (in the order of [`new`](ClusterMetrics::new), then of
    /// [`endpoint_named`](ClusterMetrics::endpoint_named)).
    pub fn endpoint(&self, index: usize) -> Rc<EndpointMetrics> {
        self.endpoints.borrow()[index].1.clone()
    }

    /// The index of the endpoint labelled `label`, added if it is new (a discovered one).
    pub fn endpoint_named(&self, label: &str) -> usize {
        let mut endpoints = self.endpoints.borrow_mut();
        match endpoints.iter().position(|(l, _)| l == label) {
            Some(i) => i,
            None => {
                endpoints.push((label.to_string(), Rc::default()));
                endpoints.len() - 1
            }
        }
    }
}

/// One listener's counters, on one thread.
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    /// Connections accepted.
    pub accepted: Cell<u64>,
    /// Connections closed.
    pub closed: Cell<u64>,
}

/// Counters merged over threads, ready to render.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    clusters: BTreeMap<String, ClusterTotals>,
    listeners: BTreeMap<String, (u64, u64)>,
}

#[derive(Debug, Default, Clone)]
struct ClusterTotals {
    requests: u64,
    failures: [u64; 9],
    buckets: [u64; BUCKETS.len()],
    latency_ns: u64,
    budget_available: u64,
    hedges: u64,
    endpoints: Vec<(String, EndpointTotals)>,
}

impl ClusterTotals {
    /// The totals of endpoint `label` (merged by label: threads may have discovered
    /// endpoints in different orders).
    fn endpoint(&mut self, label: &str) -> &mut EndpointTotals {
        let i = match self.endpoints.iter().position(|(l, _)| l == label) {
            Some(i) => i,
            None => {
                self.endpoints
                    .push((label.to_string(), EndpointTotals::default()));
                self.endpoints.len() - 1
            }
        };
        &mut self.endpoints[i].1
    }
}

#[derive(Debug, Default, Clone)]
struct EndpointTotals {
    attempts: u64,
    failures: [u64; 9],
    ejections: u64,
    ejected: u64,
    connections: u64,
    buckets: [u64; BUCKETS.len()],
    latency_ns: u64,
    pending: u64,
    pool_idle: u64,
    pool_in_use: u64,
}

impl EndpointTotals {
    fn add(&mut self, b: &EndpointTotals) {
        self.attempts += b.attempts;
        self.failures
            .iter_mut()
            .zip(b.failures)
            .for_each(|(x, y)| *x += y);
        self.ejections += b.ejections;
        self.ejected += b.ejected;
        self.connections += b.connections;
        self.buckets
            .iter_mut()
            .zip(b.buckets)
            .for_each(|(x, y)| *x += y);
        self.latency_ns += b.latency_ns;
        self.pending += b.pending;
        self.pool_idle += b.pool_idle;
        self.pool_in_use += b.pool_in_use;
    }
}

impl Snapshot {
    /// Adds one thread's counters of a cluster.
    pub fn add_cluster(&mut self, m: &ClusterMetrics) {
        let t = self.clusters.entry(m.name.clone()).or_default();
        t.requests += m.requests.get();
        for (a, b) in t.failures.iter_mut().zip(&m.failures) {
            *a += b.get();
        }
        for (a, b) in t.buckets.iter_mut().zip(&m.buckets) {
            *a += b.get();
        }
        t.latency_ns += m.latency_ns.get();
        t.budget_available += m
            .budgets
            .borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .map(|b| b.available())
            .sum::<u64>();
        t.hedges += m.hedges.borrow().iter().map(|sent| (sent.0)()).sum::<u64>();
        for (label, b) in m.endpoints.borrow().iter() {
            t.endpoint(label).add(&EndpointTotals {
                attempts: b.attempts.get(),
                failures: b.failures.each_ref().map(Cell::get),
                ejections: b.ejections.get(),
                ejected: b.ejected.get(),
                connections: b.connections.get(),
                buckets: b.buckets.each_ref().map(Cell::get),
                latency_ns: b.latency_ns.get(),
                ..EndpointTotals::default()
            });
        }
        m.pools
            .borrow_mut()
            .retain(|(label, read)| match (read.0)() {
                Some((idle, in_use)) => {
                    let e = t.endpoint(label);
                    e.pool_idle += idle;
                    e.pool_in_use += in_use;
                    true
                }
                None => false,
            });
        m.balancers.borrow_mut().retain(|probe| match (probe.0)() {
            Some(states) => {
                for s in states {
                    let e = t.endpoint(&s.endpoint);
                    e.ejected += u64::from(s.ejected);
                    e.pending += s.pending;
                }
                true
            }
            None => false,
        });
    }

    /// Adds one thread's counters of a listener.
    pub fn add_listener(&mut self, name: &str, m: &ListenerMetrics) {
        let t = self.listeners.entry(name.to_string()).or_default();
        t.0 += m.accepted.get();
        t.1 += m.closed.get();
    }

    /// Merges another snapshot (another thread's) into this one.
    pub fn merge(&mut self, other: Snapshot) {
        for (name, o) in other.clusters {
            let t = self.clusters.entry(name).or_default();
            t.requests += o.requests;
            t.failures
                .iter_mut()
                .zip(o.failures)
                .for_each(|(a, b)| *a += b);
            t.buckets
                .iter_mut()
                .zip(o.buckets)
                .for_each(|(a, b)| *a += b);
            t.latency_ns += o.latency_ns;
            t.budget_available += o.budget_available;
            t.hedges += o.hedges;
            for (label, b) in o.endpoints {
                t.endpoint(&label).add(&b);
            }
        }
        for (name, (a, c)) in other.listeners {
            let t = self.listeners.entry(name).or_default();
            t.0 += a;
            t.1 += c;
        }
    }

    /// The Prometheus text format 0.0.4: one `# HELP` and `# TYPE` per family, then its
    /// samples.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "sheave_proxy_requests_total",
            "counter",
            "Requests sent to a cluster (after splitting multi-key commands).",
        );
        for (c, t) in &self.clusters {
            let _ = writeln!(
                out,
                "sheave_proxy_requests_total{{cluster=\"{c}\"}} {}",
                t.requests
            );
        }
        family(
            &mut out,
            "sheave_proxy_request_failures_total",
            "counter",
            "Requests that failed after every attempt, by kind.",
        );
        for (c, t) in &self.clusters {
            for ((_, kind), n) in KINDS.iter().zip(t.failures) {
                let _ = writeln!(
                    out,
                    "sheave_proxy_request_failures_total{{cluster=\"{c}\",kind=\"{kind}\"}} {n}"
                );
            }
        }
        family(
            &mut out,
            "sheave_proxy_request_duration_seconds",
            "histogram",
            "Request latency through the proxy, retries included.",
        );
        for (c, t) in &self.clusters {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(t.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "sheave_proxy_request_duration_seconds_bucket{{cluster=\"{c}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "sheave_proxy_request_duration_seconds_bucket{{cluster=\"{c}\",le=\"+Inf\"}} {}",
                t.requests
            );
            let _ = writeln!(
                out,
                "sheave_proxy_request_duration_seconds_sum{{cluster=\"{c}\"}} {}",
                t.latency_ns as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "sheave_proxy_request_duration_seconds_count{{cluster=\"{c}\"}} {}",
                t.requests
            );
        }
        family(
            &mut out,
            "sheave_proxy_retries_total",
            "counter",
            "Attempts beyond the first of each request (attempts minus requests).",
        );
        for (c, t) in &self.clusters {
            let attempts: u64 = t.endpoints.iter().map(|(_, e)| e.attempts).sum();
            let _ = writeln!(
                out,
                "sheave_proxy_retries_total{{cluster=\"{c}\"}} {}",
                attempts.saturating_sub(t.requests + t.hedges)
            );
        }
        family(
            &mut out,
            "sheave_proxy_hedges_total",
            "counter",
            "Backup attempts sent for slow idempotent HTTP requests (cluster hedge).",
        );
        for (c, t) in &self.clusters {
            let _ = writeln!(
                out,
                "sheave_proxy_hedges_total{{cluster=\"{c}\"}} {}",
                t.hedges
            );
        }
        family(
            &mut out,
            "sheave_proxy_retry_budget_available",
            "gauge",
            "Retries the budgets allow now, summed over runtime threads (each has its own).",
        );
        for (c, t) in &self.clusters {
            let _ = writeln!(
                out,
                "sheave_proxy_retry_budget_available{{cluster=\"{c}\"}} {}",
                t.budget_available
            );
        }
        family(
            &mut out,
            "sheave_proxy_endpoint_attempts_total",
            "counter",
            "Attempts sent to an endpoint.",
        );
        for (c, t) in &self.clusters {
            for (e, m) in &t.endpoints {
                let _ = writeln!(
                    out,
                    "sheave_proxy_endpoint_attempts_total{{cluster=\"{c}\",endpoint=\"{e}\"}} {}",
                    m.attempts
                );
            }
        }
        family(
            &mut out,
            "sheave_proxy_endpoint_failures_total",
            "counter",
            "Failed attempts on an endpoint, by kind.",
        );
        for (c, t) in &self.clusters {
            for (e, m) in &t.endpoints {
                for ((_, kind), n) in KINDS.iter().zip(m.failures) {
                    let _ = writeln!(
                        out,
                        "sheave_proxy_endpoint_failures_total{{cluster=\"{c}\",endpoint=\"{e}\",kind=\"{kind}\"}} {n}"
                    );
                }
            }
        }
        family(
            &mut out,
            "sheave_proxy_endpoint_attempt_duration_seconds",
            "histogram",
            "Attempt latency on an endpoint: to the reply (resp), to the response headers (http), to the connection (tcp).",
        );
        for (c, t) in &self.clusters {
            for (e, m) in &t.endpoints {
                let mut cumulative = 0;
                for (bound, n) in BUCKETS.iter().zip(m.buckets) {
                    cumulative += n;
                    let _ = writeln!(
                        out,
                        "sheave_proxy_endpoint_attempt_duration_seconds_bucket{{cluster=\"{c}\",endpoint=\"{e}\",le=\"{bound}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "sheave_proxy_endpoint_attempt_duration_seconds_bucket{{cluster=\"{c}\",endpoint=\"{e}\",le=\"+Inf\"}} {}\n\
                     sheave_proxy_endpoint_attempt_duration_seconds_sum{{cluster=\"{c}\",endpoint=\"{e}\"}} {}\n\
                     sheave_proxy_endpoint_attempt_duration_seconds_count{{cluster=\"{c}\",endpoint=\"{e}\"}} {}",
                    m.attempts,
                    m.latency_ns as f64 / 1e9,
                    m.attempts
                );
            }
        }
        family(
            &mut out,
            "sheave_proxy_endpoint_ejections_total",
            "counter",
            "Times a ketama shard was taken off the ring (for tcp and http endpoints, see sheave_proxy_endpoint_ejected: their balancer's ejections are not counted).",
        );
        for (c, t) in &self.clusters {
            for (e, m) in &t.endpoints {
                let _ = writeln!(
                    out,
                    "sheave_proxy_endpoint_ejections_total{{cluster=\"{c}\",endpoint=\"{e}\"}} {}",
                    m.ejections
                );
            }
        }
        family(
            &mut out,
            "sheave_proxy_endpoint_ejected",
            "gauge",
            "Runtime threads on which the endpoint is ejected now: a ketama shard off the ring, or a tcp or http endpoint its balancer leaves out.",
        );
        for (c, t) in &self.clusters {
            for (e, m) in &t.endpoints {
                let _ = writeln!(
                    out,
                    "sheave_proxy_endpoint_ejected{{cluster=\"{c}\",endpoint=\"{e}\"}} {}",
                    m.ejected
                );
            }
        }
        family(
            &mut out,
            "sheave_proxy_endpoint_pending",
            "gauge",
            "In flight on a tcp or http endpoint now, as its balancers count: requests (http), spliced connections (tcp).",
        );
        for (c, t) in &self.clusters {
            for (e, m) in &t.endpoints {
                let _ = writeln!(
                    out,
                    "sheave_proxy_endpoint_pending{{cluster=\"{c}\",endpoint=\"{e}\"}} {}",
                    m.pending
                );
            }
        }
        family(
            &mut out,
            "sheave_proxy_endpoint_pool_connections",
            "gauge",
            "An http endpoint's upstream pool now, summed over runtime threads: HTTP/1.1 connections idle, and slots in use (a connection each on HTTP/1.1, a stream on HTTP/2); 0 for other endpoints.",
        );
        for (c, t) in &self.clusters {
            for (e, m) in &t.endpoints {
                for (state, n) in [("idle", m.pool_idle), ("in_use", m.pool_in_use)] {
                    let _ = writeln!(
                        out,
                        "sheave_proxy_endpoint_pool_connections{{cluster=\"{c}\",endpoint=\"{e}\",state=\"{state}\"}} {n}"
                    );
                }
            }
        }
        family(
            &mut out,
            "sheave_proxy_endpoint_connections_total",
            "counter",
            "Upstream connections opened to an endpoint.",
        );
        for (c, t) in &self.clusters {
            for (e, m) in &t.endpoints {
                let _ = writeln!(
                    out,
                    "sheave_proxy_endpoint_connections_total{{cluster=\"{c}\",endpoint=\"{e}\"}} {}",
                    m.connections
                );
            }
        }
        family(
            &mut out,
            "sheave_proxy_connections_accepted_total",
            "counter",
            "Client connections accepted by a listener.",
        );
        for (l, (accepted, _)) in &self.listeners {
            let _ = writeln!(
                out,
                "sheave_proxy_connections_accepted_total{{listener=\"{l}\"}} {accepted}"
            );
        }
        family(
            &mut out,
            "sheave_proxy_connections_open",
            "gauge",
            "Client connections open on a listener.",
        );
        for (l, (accepted, closed)) in &self.listeners {
            let _ = writeln!(
                out,
                "sheave_proxy_connections_open{{listener=\"{l}\"}} {}",
                accepted.saturating_sub(*closed)
            );
        }
        out
    }

    /// Each endpoint's state and load, as JSON: `{"cluster": [{"endpoint": ..., ...}]}`.
    pub fn endpoints_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (c, t)) in self.clusters.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{c}\":[");
            for (j, (e, m)) in t.endpoints.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                let failures: u64 = m.failures.iter().sum();
                let state = if m.ejected > 0 { "ejected" } else { "active" };
                let _ = write!(
                    out,
                    "{{\"endpoint\":\"{e}\",\"state\":\"{state}\",\"attempts\":{},\"failures\":{failures},\"ejections\":{},\"connections\":{},\"pending\":{}}}",
                    m.attempts, m.ejections, m.connections, m.pending
                );
            }
            out.push(']');
        }
        out.push('}');
        out
    }
}
