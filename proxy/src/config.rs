//! The proxy's configuration: TOML, read with `serde`, then validated as a whole, so a bad
//! config is refused at start with the exact field and why, and nothing starts.
//!
//! ```
//! use sheave_proxy::config::Config;
//!
//! let config = Config::parse(r#"
//!     [[listener]]
//!     name = "redis"
//!     address = "127.0.0.1:22121"
//!     protocol = "resp"
//!     cluster = "cache"
//!
//!     [[cluster]]
//!     name = "cache"
//!     endpoints = ["127.0.0.1:6379", { address = "127.0.0.1:6380", name = "b" }]
//! "#).unwrap();
//! assert_eq!(config.clusters[0].endpoints[1].label(), "b");
//!
//! let err = Config::parse(r#"
//!     [[listener]]
//!     name = "redis"
//!     address = "127.0.0.1:22121"
//!     protocol = "resp"
//!     cluster = "nowhere"
//! "#).unwrap_err();
//! assert_eq!(err.field, "listener[0].cluster");
//! assert_eq!(err.to_string(), r#"listener[0].cluster: no cluster is named "nowhere""#);
//! ```

use serde::{Deserialize, Deserializer};
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Runtime threads, each serving every listener with its own connections and its own
    /// upstream connections (default 1).
    #[serde(default = "one")]
    pub threads: usize,
    /// The admin listener (`/metrics`, `/endpoints`, `/healthz`, `/drain`), if any.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Where clients connect (`[[listener]]`).
    #[serde(rename = "listener", default)]
    pub listeners: Vec<Listener>,
    /// Where requests go (`[[cluster]]`).
    #[serde(rename = "cluster", default)]
    pub clusters: Vec<Cluster>,
    /// HTTP routes (`[[route]]`), tried in order: the first whose host and path prefix match
    /// takes the request.
    #[serde(rename = "route", default)]
    pub routes: Vec<Route>,
}

/// One `[[route]]` of an HTTP listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The HTTP listener it belongs to.
    pub listener: String,
    /// The host it matches (`Host`, or the HTTP/2 `:authority`, without a port); any host
    /// when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// The path prefix it matches (default `/`: every path).
    #[serde(default = "root")]
    pub path_prefix: String,
    /// The cluster it sends to.
    pub cluster: String,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Where it listens; loopback unless `public` is set.
    pub address: SocketAddr,
    /// Allows a non-loopback admin address (default false): `/drain` is not for strangers.
    #[serde(default)]
    pub public: bool,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The redis protocol, RESP2 and RESP3: each key goes to its shard of the cluster.
    Resp,
    /// Bytes (L4): each connection goes to one balanced endpoint of the cluster.
    Tcp,
    /// HTTP/1.1 and HTTP/2 (h2c): each request goes to the cluster of its route.
    Http,
}

/// The HTTP version a cluster is spoken to in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HttpVersion {
    /// HTTP/1.1, a keep-alive pool of `pool_size` connections per endpoint and thread.
    #[serde(rename = "1.1")]
    Http1,
    /// HTTP/2 with prior knowledge (h2c), one multiplexed connection per endpoint and thread.
    #[serde(rename = "2")]
    Http2,
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Its name, in logs and metrics.
    pub name: String,
    /// Where it listens.
    pub address: SocketAddr,
    /// What it speaks.
    pub protocol: Protocol,
    /// The cluster it sends to (for `http`: where requests no route matches go; without
    /// it they get a 404).
    #[serde(default)]
    pub cluster: Option<String>,
    /// Connections open at most, across threads (default 10,000).
    #[serde(default = "max_connections")]
    pub max_connections: usize,
    /// A connection with nothing to do for this long is closed (default 300 s).
    #[serde(default = "idle_timeout", deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// RESP: how long a client has to finish a command it started; HTTP: to send a
    /// request's headers (default 30 s).
    #[serde(default = "read_timeout", deserialize_with = "duration")]
    pub read_timeout: Duration,
    /// RESP: pipelined commands of one connection in flight at once (default 256).
    #[serde(default = "max_in_flight")]
    pub max_in_flight: usize,
    /// TCP: bytes buffered in each direction (default 64 KiB).
    #[serde(default = "buffer")]
    pub buffer: usize,
}

/// How a cluster spreads requests over its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Each key to its shard by ketama consistent hashing, as twemproxy does (RESP).
    Ketama,
    /// Power of two choices over peak-EWMA latency (TCP).
    P2cPeakEwma,
    /// Each endpoint in turn (TCP).
    RoundRobin,
}

/// How a RESP key is hashed onto the ketama ring (twemproxy's `hash:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Hash {
    /// `fnv1a_64` (twemproxy's 32-bit computation of it).
    #[serde(rename = "fnv1a_64")]
    Fnv1a64,
    /// `md5`.
    #[serde(rename = "md5")]
    Md5,
}

/// One `[[cluster]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Its name, which listeners refer to.
    pub name: String,
    /// Its endpoints (a static list): `"host:port"`, or `{ address, weight, name }`.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// A file of more endpoints (for ketama: shards, their names placing them on the ring),
    /// one `ADDRESS [weight=N] [name=NAME]` a line,
    /// re-read every `discovery_interval`; changes apply live (see
    /// [`discovery::file`](crate::discovery::file)). It must be readable at start.
    #[serde(default)]
    pub endpoints_file: Option<std::path::PathBuf>,
    /// TCP and HTTP: a `host:port` whose addresses (every one the resolver gives) are
    /// endpoints too, resolved again every `discovery_interval` on a resolver thread.
    #[serde(default)]
    pub dns: Option<String>,
    /// Endpoints (for ketama: shards, named by their keys) registered in etcd under a prefix,
    /// watched live
    /// (`etcd = { members = ["127.0.0.1:2379"], prefix = "/services/web/" }`; see
    /// [`discovery::etcd`](crate::discovery::etcd)).
    #[serde(default)]
    pub etcd: Option<EtcdSource>,
    /// How often `endpoints_file` is read and `dns` resolved (default 1 s).
    #[serde(default = "discovery_interval", deserialize_with = "duration")]
    pub discovery_interval: Duration,
    /// How requests are spread (default `ketama`).
    #[serde(default = "policy")]
    pub policy: Policy,
    /// Ketama: the key hash (default `fnv1a_64`).
    #[serde(default = "hash")]
    pub hash: Hash,
    /// Ketama: two characters; only what a key holds between them is hashed (`"{}"`).
    #[serde(default)]
    pub hash_tag: Option<String>,
    /// How long a connect may take (default 200 ms).
    #[serde(default = "connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// The deadline of a whole request, retries included (default 1 s).
    #[serde(default = "request_timeout", deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// The deadline of each attempt (default 250 ms).
    #[serde(default = "try_timeout", deserialize_with = "duration")]
    pub try_timeout: Duration,
    /// Requests in flight on the cluster at most, per thread; past it requests fail at once
    /// (default 4,096).
    #[serde(default = "concurrency_limit")]
    pub concurrency_limit: usize,
    /// RESP: connections to each endpoint, per thread (default 1, as twemproxy's
    /// `server_connections`).
    #[serde(default = "one")]
    pub connections: usize,
    /// RESP: requests pipelined on one upstream connection at most (default 1,024).
    #[serde(default = "per_connection")]
    pub max_in_flight_per_connection: usize,
    /// HTTP: the version spoken upstream (default `"1.1"`).
    #[serde(default = "http_version")]
    pub http_version: HttpVersion,
    /// HTTP/1.1: connections per endpoint and thread, at most (default 256): requests in
    /// flight to one endpoint beyond it wait for a connection (and past 1,024 waiting, are
    /// shed with a 503).
    #[serde(default = "pool_size")]
    pub pool_size: usize,
    /// HTTP/1.1: a pooled connection idle this long is closed (default 30 s), so the pool
    /// shrinks back after a burst.
    #[serde(default = "pool_idle_timeout", deserialize_with = "duration")]
    pub pool_idle_timeout: Duration,
    /// HTTP/1.1: connections per endpoint and thread kept idle at most (default `pool_size`);
    /// one whose response is done past it is closed at once.
    #[serde(default)]
    pub pool_max_idle: Option<usize>,
    /// Retries of idempotent requests.
    #[serde(default)]
    pub retry: Retry,
    /// Outlier ejection.
    #[serde(default)]
    pub ejection: Ejection,
    /// HTTP: hedge slow idempotent requests (`hedge = { percentile = 0.95 }`); off when absent.
    #[serde(default)]
    pub hedge: Option<Hedge>,
}

/// A cluster's `hedge` table: an idempotent HTTP request whose body was buffered whole
/// (as for a retry) that is still pending after the `percentile` of the latencies seen in
/// the last `window` gets a backup attempt on a fresh pick, and the first success wins
/// (`sheave_middleware::hedge`). Backups are bounded by their own budget (`budget_ratio` of
/// the requests) and withdraw from the retry budget too, so hedges and retries together
/// cannot multiply load in an outage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hedge {
    /// Send the backup after this percentile of recent latencies (default 0.95).
    #[serde(default = "hedge_percentile")]
    pub percentile: f64,
    /// Latencies to see (per thread) before hedging at all (default 100).
    #[serde(default = "hedge_min_samples")]
    pub min_samples: u64,
    /// The latency window (default 10 s).
    #[serde(default = "hedge_window", deserialize_with = "duration")]
    pub window: Duration,
    /// Backups may add this share of the requests (default 0.1).
    #[serde(default = "hedge_budget_ratio")]
    pub budget_ratio: f64,
}

/// A cluster's `etcd` table: each key `PREFIX NAME` holding `ADDRESS [weight=N]` is endpoint
/// `NAME`; puts and deletes apply as their watch event arrives.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSource {
    /// The etcd members' client addresses (their v3 JSON gateway), tried in turn.
    pub members: Vec<SocketAddr>,
    /// The key prefix, like `/services/web/`.
    pub prefix: String,
    /// How long a range request may take (default 5 s).
    #[serde(default = "etcd_timeout", deserialize_with = "duration")]
    pub request_timeout: Duration,
}

/// `[cluster.retry]`: idempotent requests are retried within a budget.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts at most, the first included (default 3; 1 turns retries off).
    #[serde(default = "max_attempts")]
    pub max_attempts: u32,
    /// The first backoff (default 5 ms), doubling up to `max_backoff` (default 50 ms).
    #[serde(default = "backoff", deserialize_with = "duration")]
    pub backoff: Duration,
    /// See `backoff`.
    #[serde(default = "max_backoff", deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// Retries may add this share of the requests (default 0.2) ...
    #[serde(default = "budget_ratio")]
    pub budget_ratio: f64,
    /// ... plus this many per second (default 10).
    #[serde(default = "budget_min")]
    pub budget_min_per_second: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: max_attempts(),
            backoff: backoff(),
            max_backoff: max_backoff(),
            budget_ratio: budget_ratio(),
            budget_min_per_second: budget_min(),
        }
    }
}

/// `[cluster.ejection]`: an endpoint that fails `consecutive_failures` times in a row is
/// left out for `base`, doubling on each ejection up to `max`. For ketama, a shard left out
/// is taken off the ring (its keys go to the others, as twemproxy's `auto_eject_hosts`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ejection {
    /// Failures in a row that eject (default 3; 0 never ejects).
    #[serde(default = "consecutive_failures")]
    pub consecutive_failures: u32,
    /// The first ejection's length (default 1 s).
    #[serde(default = "eject_base", deserialize_with = "duration")]
    pub base: Duration,
    /// The longest ejection (default 30 s).
    #[serde(default = "eject_max", deserialize_with = "duration")]
    pub max: Duration,
    /// The largest share of endpoints ejected at once (default 0.5; at least one).
    #[serde(default = "max_share")]
    pub max_share: f64,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            consecutive_failures: consecutive_failures(),
            base: eject_base(),
            max: eject_max(),
            max_share: max_share(),
        }
    }
}

/// One endpoint of a cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Endpoint {
    /// `"127.0.0.1:6379"`.
    Address(SocketAddr),
    /// `{ address = "127.0.0.1:6379", weight = 2, name = "a" }`.
    Full {
        /// Where it is.
        address: SocketAddr,
        /// Its ketama weight (default 1).
        #[serde(default = "one_u32")]
        weight: u32,
        /// Its ketama name, which places it on the ring (default `host:port`).
        #[serde(default)]
        name: Option<String>,
    },
}

impl Endpoint {
    /// Where it is.
    pub fn address(&self) -> SocketAddr {
        match self {
            Endpoint::Address(a) | Endpoint::Full { address: a, .. } => *a,
        }
    }

    /// Its weight.
    pub fn weight(&self) -> u32 {
        match self {
            Endpoint::Address(_) => 1,
            Endpoint::Full { weight, .. } => *weight,
        }
    }

    /// Its name: the one given, else `host:port` (as twemproxy names a server on the
    /// ring; it drops the port when that is 11211, memcached's).
    pub fn label(&self) -> String {
        match self {
            Endpoint::Full { name: Some(n), .. } => n.clone(),
            other => {
                let a = other.address();
                match a.port() {
                    11211 => a.ip().to_string(),
                    _ => a.to_string(),
                }
            }
        }
    }
}

/// A config that is refused: the field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, as a path: `cluster[0].endpoints[1].weight`, or `toml` for a file that
    /// does not parse (the message then has the line and column).
    pub field: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

impl Config {
    /// Parses and validates `text`.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let reason = e.message().trim().to_string();
            let field = match e.span() {
                Some(span) => field_at(text, span.start, &reason),
                None => "toml".to_string(),
            };
            let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
            match line {
                Some(line) => refuse(field, format!("{reason} (line {line})")),
                None => refuse(field, reason),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| refuse(path.display().to_string(), e.to_string()))?;
        Config::parse(&text)
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Checks everything serde cannot: references, ranges, and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.threads == 0 {
            return Err(refuse("threads", "must be at least 1"));
        }
        if let Some(admin) = &self.admin
            && !admin.public
            && !admin.address.ip().is_loopback()
        {
            return Err(refuse(
                "admin.address",
                format!(
                    "{} is not a loopback address (set admin.public = true to allow it)",
                    admin.address
                ),
            ));
        }
        if self.listeners.is_empty() {
            return Err(refuse("listener", "at least one [[listener]] is needed"));
        }
        let mut names = HashSet::new();
        let mut addresses = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let at = |field: &str| format!("listener[{i}].{field}");
            plain_name(&at("name"), &l.name)?;
            if !names.insert(&l.name) {
                return Err(refuse(at("name"), format!("{:?} is used twice", l.name)));
            }
            if l.address.port() != 0 && !addresses.insert(l.address) {
                return Err(refuse(
                    at("address"),
                    format!("{} is used twice", l.address),
                ));
            }
            let cluster = match (&l.cluster, l.protocol) {
                (None, Protocol::Http) => None,
                (None, _) => {
                    return Err(refuse(
                        at("cluster"),
                        "a resp or tcp listener needs the cluster it sends to",
                    ));
                }
                (Some(name), _) => match self.cluster(name) {
                    Some(c) => Some(c),
                    None => {
                        return Err(refuse(
                            at("cluster"),
                            format!("no cluster is named {name:?}"),
                        ));
                    }
                },
            };
            if let Some(cluster) = cluster {
                balanced_for(l.protocol, cluster).map_err(|why| refuse(at("cluster"), why))?;
                if l.protocol == Protocol::Tcp && cluster.hedge.is_some() {
                    return Err(refuse(
                        at("cluster"),
                        format!(
                            "{:?} sets hedge, and a tcp connection cannot be hedged",
                            cluster.name
                        ),
                    ));
                }
            }
            positive(&at("max_connections"), l.max_connections)?;
            positive(&at("max_in_flight"), l.max_in_flight)?;
            nonzero(&at("idle_timeout"), l.idle_timeout)?;
            nonzero(&at("read_timeout"), l.read_timeout)?;
            if !(1024..=16 << 20).contains(&l.buffer) {
                return Err(refuse(at("buffer"), "must be between 1024 and 16 MiB"));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let at = |field: &str| format!("route[{i}].{field}");
            match self.listeners.iter().find(|l| l.name == r.listener) {
                None => {
                    return Err(refuse(
                        at("listener"),
                        format!("no listener is named {:?}", r.listener),
                    ));
                }
                Some(l) if l.protocol != Protocol::Http => {
                    return Err(refuse(
                        at("listener"),
                        format!("{:?} is not an http listener: only http routes", r.listener),
                    ));
                }
                Some(_) => {}
            }
            let Some(cluster) = self.cluster(&r.cluster) else {
                return Err(refuse(
                    at("cluster"),
                    format!("no cluster is named {:?}", r.cluster),
                ));
            };
            balanced_for(Protocol::Http, cluster).map_err(|why| refuse(at("cluster"), why))?;
            if !r.path_prefix.starts_with('/') {
                return Err(refuse(
                    at("path_prefix"),
                    format!("{:?} does not start with /", r.path_prefix),
                ));
            }
            if let Some(host) = &r.host
                && (host.is_empty() || host.contains(['/', ' ']))
            {
                return Err(refuse(at("host"), format!("{host:?} is not a host name")));
            }
        }
        let mut names = HashSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            c.validate(&format!("cluster[{i}]"))?;
            if !names.insert(&c.name) {
                return Err(refuse(
                    format!("cluster[{i}].name"),
                    format!("{:?} is used twice", c.name),
                ));
            }
        }
        Ok(())
    }
}

/// Whether a listener of `protocol` can send to `cluster`.
fn balanced_for(protocol: Protocol, cluster: &Cluster) -> Result<(), String> {
    match (protocol, cluster.policy) {
        (Protocol::Resp, Policy::Ketama) => Ok(()),
        (Protocol::Resp, p) => Err(format!(
            "a resp listener needs a ketama cluster; {:?} has policy {p:?}",
            cluster.name
        )),
        (_, Policy::Ketama) => Err(format!(
            "a {} listener needs a balanced cluster (p2c-peak-ewma or round-robin); {:?} is \
             ketama, which shards by key",
            if protocol == Protocol::Tcp {
                "tcp"
            } else {
                "http"
            },
            cluster.name
        )),
        _ => Ok(()),
    }
}

impl Cluster {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let at = |field: &str| format!("{at}.{field}");
        plain_name(&at("name"), &self.name)?;
        if let Some(dns) = &self.dns {
            if self.policy == Policy::Ketama {
                return Err(refuse(
                    at("dns"),
                    "a ketama cluster's shards are named on the ring, and dns gives bare \
                     addresses; name them in an endpoints_file or etcd",
                ));
            }
            match dns.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
                Some((host, Ok(port))) if !host.is_empty() && port != 0 => {}
                _ => {
                    return Err(refuse(
                        at("dns"),
                        format!("{dns:?} is not host:port (a name and a port to connect to)"),
                    ));
                }
            }
        }
        if let Some(etcd) = &self.etcd {
            if etcd.members.is_empty() {
                return Err(refuse(
                    at("etcd.members"),
                    "at least one etcd member is needed",
                ));
            }
            if let Some(j) = etcd.members.iter().position(|m| m.port() == 0) {
                return Err(refuse(
                    at(&format!("etcd.members[{j}]")),
                    "port 0 is not a port one can connect to",
                ));
            }
            if etcd.prefix.is_empty() {
                return Err(refuse(
                    at("etcd.prefix"),
                    "must not be empty (an empty prefix would take every key in etcd)",
                ));
            }
            nonzero(&at("etcd.request_timeout"), etcd.request_timeout)?;
            crate::discovery::etcd_source(etcd).map_err(|e| refuse(at("etcd"), e.to_string()))?;
        }
        if self.endpoints.is_empty()
            && self.endpoints_file.is_none()
            && self.dns.is_none()
            && self.etcd.is_none()
        {
            return Err(refuse(
                at("endpoints"),
                "at least one endpoint is needed (or an endpoints_file, dns or etcd)",
            ));
        }
        nonzero(&at("discovery_interval"), self.discovery_interval)?;
        if let Some(path) = &self.endpoints_file {
            // Read now, so a missing or bad file stops the start with its line named.
            crate::discovery::FileDiscovery::open(path, self.discovery_interval)
                .map_err(|e| refuse(at("endpoints_file"), e.to_string()))?;
        }
        let mut labels = HashSet::new();
        for (j, e) in self.endpoints.iter().enumerate() {
            if e.address().port() == 0 {
                return Err(refuse(
                    at(&format!("endpoints[{j}].address")),
                    "port 0 is not a port one can connect to",
                ));
            }
            if e.weight() == 0 {
                return Err(refuse(
                    at(&format!("endpoints[{j}].weight")),
                    "must be at least 1",
                ));
            }
            if let Endpoint::Full {
                name: Some(name), ..
            } = e
            {
                plain_name(&at(&format!("endpoints[{j}].name")), name)?;
            }
            if !labels.insert(e.label()) {
                return Err(refuse(
                    at(&format!("endpoints[{j}]")),
                    format!("{:?} is listed twice (ketama names must differ)", e.label()),
                ));
            }
        }
        if let Some(tag) = &self.hash_tag
            && tag.len() != 2
        {
            return Err(refuse(
                at("hash_tag"),
                format!("must be two characters, like \"{{}}\"; {tag:?} is not"),
            ));
        }
        nonzero(&at("connect_timeout"), self.connect_timeout)?;
        nonzero(&at("request_timeout"), self.request_timeout)?;
        nonzero(&at("try_timeout"), self.try_timeout)?;
        if self.try_timeout > self.request_timeout {
            return Err(refuse(
                at("try_timeout"),
                format!(
                    "{:?} is longer than request_timeout ({:?}): no attempt could end in time \
                     for a retry",
                    self.try_timeout, self.request_timeout
                ),
            ));
        }
        positive(&at("concurrency_limit"), self.concurrency_limit)?;
        positive(&at("connections"), self.connections)?;
        positive(&at("pool_size"), self.pool_size)?;
        nonzero(&at("pool_idle_timeout"), self.pool_idle_timeout)?;
        if let Some(n) = self.pool_max_idle
            && n > self.pool_size
        {
            return Err(refuse(
                at("pool_max_idle"),
                format!("{n} is more than pool_size ({})", self.pool_size),
            ));
        }
        positive(
            &at("max_in_flight_per_connection"),
            self.max_in_flight_per_connection,
        )?;
        let r = &self.retry;
        if r.max_attempts == 0 {
            return Err(refuse(
                at("retry.max_attempts"),
                "must be at least 1 (1 means no retries)",
            ));
        }
        nonzero(&at("retry.backoff"), r.backoff)?;
        if r.max_backoff < r.backoff {
            return Err(refuse(
                at("retry.max_backoff"),
                "must not be shorter than retry.backoff",
            ));
        }
        if !(0.0..=1.0).contains(&r.budget_ratio) {
            return Err(refuse(
                at("retry.budget_ratio"),
                format!("{} is not between 0 and 1", r.budget_ratio),
            ));
        }
        if let Some(h) = &self.hedge {
            if self.policy == Policy::Ketama {
                return Err(refuse(
                    at("hedge"),
                    "only http clusters hedge: a ketama key has one shard to ask",
                ));
            }
            if !(h.percentile > 0.0 && h.percentile < 1.0) {
                return Err(refuse(
                    at("hedge.percentile"),
                    format!("{} is not in (0, 1)", h.percentile),
                ));
            }
            if h.min_samples == 0 {
                return Err(refuse(at("hedge.min_samples"), "must be at least 1"));
            }
            nonzero(&at("hedge.window"), h.window)?;
            if !(0.0..=1.0).contains(&h.budget_ratio) {
                return Err(refuse(
                    at("hedge.budget_ratio"),
                    format!("{} is not between 0 and 1", h.budget_ratio),
                ));
            }
        }
        let e = &self.ejection;
        nonzero(&at("ejection.base"), e.base)?;
        if e.max < e.base {
            return Err(refuse(
                at("ejection.max"),
                "must not be shorter than ejection.base",
            ));
        }
        if !(e.max_share > 0.0 && e.max_share <= 1.0) {
            return Err(refuse(
                at("ejection.max_share"),
                format!("{} is not in (0, 1]", e.max_share),
            ));
        }
        Ok(())
    }
}

/// The path of the field at byte `offset` of `text`, from the table headers above it and the
/// key on its line: `cluster[1].retry.backoff`. For a missing field (the error then points at
/// its table) the field named in `reason` is appended.
fn field_at(text: &str, offset: usize, reason: &str) -> String {
    let mut arrays: Vec<(String, usize)> = Vec::new();
    let mut table = String::new();
    let mut start = 0;
    let mut key = None;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        let trimmed = line.trim();
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|t| t.strip_suffix("]]"))
        {
            let name = name.trim().to_string();
            let n = match arrays.iter_mut().find(|(a, _)| *a == name) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    arrays.push((name.clone(), 0));
                    0
                }
            };
            table = format!("{name}[{n}]");
        } else if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            let name = name.trim();
            table = match name.split_once('.') {
                Some((head, rest)) => match arrays.iter().find(|(a, _)| a == head) {
                    Some((_, n)) => format!("{head}[{n}].{rest}"),
                    None => name.to_string(),
                },
                None => name.to_string(),
            };
        }
        if offset < end {
            key = line
                .split_once('=')
                .map(|(k, _)| k.trim().to_string())
                .filter(|k| !k.starts_with('['));
            break;
        }
        start = end;
    }
    let missing = reason
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next());
    let leaf = missing.map(str::to_string).or(key);
    match (table.is_empty(), leaf) {
        (true, Some(leaf)) => leaf,
        (false, Some(leaf)) => format!("{table}.{leaf}"),
        (_, None) if table.is_empty() => "toml".to_string(),
        (_, None) => table,
    }
}

/// Names end up in metrics labels, JSON and logs as they are: letters, digits and `_ . : -`.
fn plain_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(refuse(field, "must not be empty"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.:-".contains(*c)))
    {
        Some(c) => Err(refuse(
            field,
            format!("{name:?} has {c:?}: use letters, digits and _ . : - only"),
        )),
        None => Ok(()),
    }
}

fn positive(field: &str, n: usize) -> Result<(), ConfigError> {
    match n {
        0 => Err(refuse(field, "must be at least 1")),
        _ => Ok(()),
    }
}

fn nonzero(field: &str, d: Duration) -> Result<(), ConfigError> {
    match d.is_zero() {
        true => Err(refuse(field, "must be longer than zero")),
        false => Ok(()),
    }
}

/// Parses `"250ms"`, `"5s"`, `"2m"`, `"1h"`, `"100us"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (ms, s, m, h, us)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let d = match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h, us)")),
    };
    Ok(d)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn etcd_timeout() -> Duration {
    Duration::from_secs(5)
}
fn discovery_interval() -> Duration {
    Duration::from_secs(1)
}
fn root() -> String {
    "/".to_string()
}
fn http_version() -> HttpVersion {
    HttpVersion::Http1
}
fn pool_size() -> usize {
    256
}
fn one() -> usize {
    1
}
fn one_u32() -> u32 {
    1
}
fn max_connections() -> usize {
    10_000
}
fn idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn max_in_flight() -> usize {
    256
}
fn buffer() -> usize {
    64 * 1024
}
fn policy() -> Policy {
    Policy::Ketama
}
fn hash() -> Hash {
    Hash::Fnv1a64
}
fn connect_timeout() -> Duration {
    Duration::from_millis(200)
}
fn request_timeout() -> Duration {
    Duration::from_secs(1)
}
fn try_timeout() -> Duration {
    Duration::from_millis(250)
}
fn concurrency_limit() -> usize {
    4096
}
fn per_connection() -> usize {
    1024
}
fn max_attempts() -> u32 {
    3
}
fn backoff() -> Duration {
    Duration::from_millis(5)
}
fn max_backoff() -> Duration {
    Duration::from_millis(50)
}
fn pool_idle_timeout() -> Duration {
    Duration::from_secs(30)
}
fn hedge_percentile() -> f64 {
    0.95
}
fn hedge_min_samples() -> u64 {
    100
}
fn hedge_window() -> Duration {
    Duration::from_secs(10)
}
fn hedge_budget_ratio() -> f64 {
    0.1
}
fn budget_ratio() -> f64 {
    0.2
}
fn budget_min() -> u32 {
    10
}
fn consecutive_failures() -> u32 {
    3
}
fn eject_base() -> Duration {
    Duration::from_secs(1)
}
fn eject_max() -> Duration {
    Duration::from_secs(30)
}
fn max_share() -> f64 {
    0.5
}
