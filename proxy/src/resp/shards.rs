//! [`Shards`]: the bottom of the RESP stack. It sends each request to the shard of its key on
//! the ketama ring, under the per-attempt deadline, and takes a shard that keeps failing off
//! the ring for a while (twemproxy's `auto_eject_hosts`), so retries above it land on the
//! shards that answer.
//!
//! ```
//! use sheave_proto::resp::Frame;
//! use sheave_proxy::config::Config;
//! use sheave_proxy::ketama::{KeyHash, Ring};
//! use sheave_proxy::metrics::ClusterMetrics;
//! use sheave_proxy::resp::shards::{Routed, Shards};
//! use sheave_service::{Error, ServiceExt, service_fn};
//! use std::rc::Rc;
//!
//! let config = Config::parse(r#"
//!     [[listener]]
//!     name = "redis"
//!     address = "127.0.0.1:0"
//!     protocol = "resp"
//!     cluster = "cache"
//!     [[cluster]]
//!     name = "cache"
//!     endpoints = ["10.0.0.1:6379", "10.0.0.2:6379"]
//! "#).unwrap();
//! let cluster = &config.clusters[0];
//! // Two stand-in shards that answer with their own number.
//! let shard = |n: i64| service_fn(move |_cmd: Frame| async move { Ok::<_, Error>(Frame::Integer(n)) });
//! let labels = ["10.0.0.1:6379".to_string(), "10.0.0.2:6379".to_string()];
//! let metrics = Rc::new(ClusterMetrics::new("cache", &labels));
//! let ring = Ring::new(&[("10.0.0.1:6379", 1), ("10.0.0.2:6379", 1)], KeyHash::Fnv1a64, None);
//! sheave_core::Runtime::new().unwrap().block_on(async {
//!     let shards = Shards::new(cluster, vec![shard(0), shard(1)], metrics);
//!     for key in ["a", "b", "user:1", "user:2"] {
//!         let routed = Routed { frame: Frame::command(["GET", key]), key: 1 };
//!         let reply = (&shards).oneshot(routed).await.unwrap();
//!         assert_eq!(reply, Frame::Integer(ring.shard(key.as_bytes()) as i64));
//!     }
//! });
//! ```

use crate::config;
use crate::ketama::{KeyHash, Ring};
use crate::metrics::ClusterMetrics;
use sheave_core::time;
use sheave_middleware::discover::Change;
use sheave_middleware::retry::Backoff;
use sheave_proto::resp::Frame;
use sheave_service::{Error, ErrorKind, Service};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

impl<S> Shard<S> {
    fn new(service: S, name: &str, weight: u32, metrics: usize) -> Self {
        Shard {
            service,
            name: name.to_string(),
            weight,
            metrics,
            failures: Cell::new(0),
            ejections: Cell::new(0),
            ejected_until: Cell::new(None),
        }
    }
}

/// A request on its way to a shard: the command and the argument that picks its shard.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The command.
    pub frame: Frame,
    /// The position of the argument whose hash picks the shard.
    pub key: usize,
}

struct Shard<S> {
    service: S,
    /// Its name on the ring, and its weight.
    name: String,
    weight: u32,
    /// Its counters' index in the cluster's metrics.
    metrics: usize,
    /// Failures in a row.
    failures: Cell<u32>,
    /// Ejections so far (each lasts longer).
    ejections: Cell<u32>,
    /// Off the ring until then.
    ejected_until: Cell<Option<Instant>>,
}

/// The shards of one cluster on one runtime thread, and their ring.
pub struct Shards<S> {
    /// By index on the ring: the config's in order, then those discovery added; a removed
    /// one leaves its slot empty (so the others keep their indices).
    shards: RefCell<Vec<Option<Rc<Shard<S>>>>>,
    ring: RefCell<Ring>,
    hash: KeyHash,
    tag: Option<[u8; 2]>,
    try_timeout: Duration,
    ejection: config::Ejection,
    /// The earliest end of an ejection, when one is on.
    next_return: Cell<Option<Instant>>,
    metrics: Rc<ClusterMetrics>,
}

impl<S> fmt::Debug for Shards<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shards")
            .field("names", &self.names())
            .field("live", &self.live())
            .field("try_timeout", &self.try_timeout)
            .field("ejection", &self.ejection)
            .finish()
    }
}

impl<S> Shards<S> {
    /// The shards of `cluster`, one service each (in the order of its endpoints).
    pub fn new(cluster: &config::Cluster, services: Vec<S>, metrics: Rc<ClusterMetrics>) -> Self {
        let hash = match cluster.hash {
            config::Hash::Fnv1a64 => KeyHash::Fnv1a64,
            config::Hash::Md5 => KeyHash::Md5,
        };
        let tag = cluster.hash_tag.as_ref().map(|t| {
            let b = t.as_bytes();
            [b[0], b[1]]
        });
        let shards = Shards {
            shards: RefCell::new(
                cluster
                    .endpoints
                    .iter()
                    .zip(services)
                    .enumerate()
                    .map(|(i, (e, service))| {
                        Some(Rc::new(Shard::new(service, &e.label(), e.weight(), i)))
                    })
                    .collect(),
            ),
            ring: RefCell::new(Ring::new(&[], hash, tag)),
            hash,
            tag,
            try_timeout: cluster.try_timeout,
            ejection: cluster.ejection.clone(),
            next_return: Cell::new(None),
            metrics,
        };
        shards.rebuild();
        shards
    }

    /// Applies a discovery change: a new shard joins the ring (its service made by `make`
    /// from its address and its metrics index), a changed one is replaced (a new service
    /// when its address changed), a removed one leaves the ring — its keys move to the
    /// others, and nothing more is sent to it; calls in flight on it finish.
    pub fn apply(
        &self,
        change: Change<String, crate::discovery::Endpoint>,
        make: impl FnOnce(SocketAddr, usize) -> S,
    ) {
        let mut shards = self.shards.borrow_mut();
        match change {
            Change::Insert(name, e) => {
                let slot = shards
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|s| s.name == name));
                let metrics = self.metrics.endpoint_named(&name);
                let shard = Some(Rc::new(Shard::new(
                    make(e.address, metrics),
                    &name,
                    e.weight,
                    metrics,
                )));
                match slot.or_else(|| shards.iter().position(Option::is_none)) {
                    Some(i) => shards[i] = shard,
                    None => shards.push(shard),
                }
                log::info!("shard {name} ({}) is on the ring", e.address);
            }
            Change::Remove(name) => {
                if let Some(slot) = shards
                    .iter_mut()
                    .find(|s| s.as_ref().is_some_and(|s| s.name == name))
                {
                    *slot = None;
                    log::info!("shard {name} left the ring");
                }
            }
        }
        drop(shards);
        self.rebuild();
    }

    fn names(&self) -> Vec<(String, u32)> {
        self.shards
            .borrow()
            .iter()
            .map(|s| {
                s.as_ref()
                    .map_or((String::new(), 1), |s| (s.name.clone(), s.weight))
            })
            .collect()
    }

    /// Per slot: a shard is there and not ejected.
    fn live(&self) -> Vec<bool> {
        self.shards
            .borrow()
            .iter()
            .map(|s| s.as_ref().is_some_and(|s| s.ejected_until.get().is_none()))
            .collect()
    }

    fn shard(&self, index: usize) -> Option<Rc<Shard<S>>> {
        self.shards.borrow().get(index).cloned().flatten()
    }

    fn rebuild(&self) {
        let names = self.names();
        let names: Vec<(&str, u32)> = names.iter().map(|(n, w)| (n.as_str(), *w)).collect();
        *self.ring.borrow_mut() = Ring::with_live(&names, &self.live(), self.hash, self.tag);
    }

    /// Puts back on the ring every shard whose ejection has ended, on probation: one more
    /// failure ejects it again, for longer.
    fn restore_due(&self, now: Instant) {
        let Some(due) = self.next_return.get() else {
            return;
        };
        if now < due {
            return;
        }
        let mut next = None::<Instant>;
        for s in self.shards.borrow().iter().flatten() {
            match s.ejected_until.get() {
                Some(until) if until <= now => {
                    s.ejected_until.set(None);
                    s.failures
                        .set(self.ejection.consecutive_failures.saturating_sub(1));
                    self.metrics.endpoint(s.metrics).ejected.set(0);
                    log::info!("shard {} is back on the ring (probation)", s.name);
                }
                Some(until) => next = Some(next.map_or(until, |n| n.min(until))),
                None => {}
            }
        }
        self.next_return.set(next);
        self.rebuild();
    }

    /// The shard `key` goes to now.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        self.restore_due(time::now_cached());
        self.ring.borrow().shard(key)
    }

    fn record(&self, index: usize, latency: Duration, outcome: Result<(), ErrorKind>) {
        let Some(shard) = self.shard(index) else {
            return; // removed while the attempt ran: its counters stay as they were
        };
        self.metrics
            .endpoint(shard.metrics)
            .attempt(latency, outcome.err().filter(|k| *k != ErrorKind::Canceled));
        match outcome {
            Ok(()) => {
                shard.failures.set(0);
                if shard.ejections.get() > 0 && shard.ejected_until.get().is_none() {
                    shard.ejections.set(0); // probation passed
                }
            }
            Err(ErrorKind::Canceled) => {}
            Err(_) => {
                let failures = shard.failures.get() + 1;
                shard.failures.set(failures);
                let threshold = self.ejection.consecutive_failures;
                if threshold > 0 && failures >= threshold && shard.ejected_until.get().is_none() {
                    self.eject(index);
                }
            }
        }
    }

    fn eject(&self, index: usize) {
        let present = self.shards.borrow().iter().flatten().count();
        let ejected = present - self.live().iter().filter(|l| **l).count();
        let allowed = ((present as f64 * self.ejection.max_share) as usize).max(1);
        if ejected >= allowed || ejected + 1 >= present {
            return; // keep at least one shard, and no more than the share
        }
        let Some(shard) = self.shard(index) else {
            return;
        };
        let n = shard.ejections.get() + 1;
        shard.ejections.set(n);
        let length = Backoff::exponential(self.ejection.base, self.ejection.max).nominal(n);
        let until = time::now() + length;
        shard.ejected_until.set(Some(until));
        self.next_return
            .set(Some(self.next_return.get().map_or(until, |t| t.min(until))));
        let m = self.metrics.endpoint(shard.metrics);
        m.ejections.set(m.ejections.get() + 1);
        m.ejected.set(1);
        log::warn!(
            "shard {} ejected for {length:?} after {} failures in a row",
            shard.name,
            shard.failures.get()
        );
        self.rebuild();
    }
}

impl<S, P> Service<Routed> for Shards<S>
where
    S: Service<Frame, Response = Frame, Error = Error, Permit = P>,
{
    type Response = Frame;
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        Ok(())
    }

    fn try_ready(&self) -> sheave_service::TryReady<(), Error> {
        sheave_service::TryReady::Ready(())
    }

    async fn call(&self, (): (), req: Routed) -> Result<Frame, Error> {
        let index = match req.frame.arg(req.key) {
            Some(key) => self.shard_of(key),
            None => return Err(Error::msg(ErrorKind::InvalidRequest, "no key to route by")),
        };
        let Some(shard) = self.shard(index) else {
            return Err(Error::msg(
                ErrorKind::Unavailable,
                "no shard is on the ring",
            ));
        };
        let shard = &shard.service;
        let start = time::now();
        let attempt = async {
            let permit = shard.ready().await?;
            shard.call(permit, req.frame).await
        };
        let outcome = match time::timeout(self.try_timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::timeout()),
        };
        self.record(
            index,
            start.elapsed(),
            outcome.as_ref().map(|_| ()).map_err(Error::kind),
        );
        outcome
    }
}
