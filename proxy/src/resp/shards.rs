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
use sheave_middleware::retry::Backoff;
use sheave_proto::resp::Frame;
use sheave_service::{Error, ErrorKind, Service};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

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
    /// Failures in a row.
    failures: Cell<u32>,
    /// Ejections so far (each lasts longer).
    ejections: Cell<u32>,
    /// Off the ring until then.
    ejected_until: Cell<Option<Instant>>,
}

/// The shards of one cluster on one runtime thread, and their ring.
pub struct Shards<S> {
    shards: Vec<Shard<S>>,
    /// `(name, weight)`, in config order: what the ring is built from.
    names: Vec<(String, u32)>,
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
            .field("names", &self.names)
            .field("live", &self.live())
            .field("try_timeout", &self.try_timeout)
            .field("ejection", &self.ejection)
            .finish()
    }
}

impl<S> Shards<S> {
    /// The shards of `cluster`, one service each (in the order of its endpoints).
    pub fn new(cluster: &config::Cluster, services: Vec<S>, metrics: Rc<ClusterMetrics>) -> Self {
        let names: Vec<(String, u32)> = cluster
            .endpoints
            .iter()
            .map(|e| (e.label(), e.weight()))
            .collect();
        let hash = match cluster.hash {
            config::Hash::Fnv1a64 => KeyHash::Fnv1a64,
            config::Hash::Md5 => KeyHash::Md5,
        };
        let tag = cluster.hash_tag.as_ref().map(|t| {
            let b = t.as_bytes();
            [b[0], b[1]]
        });
        let borrowed: Vec<(&str, u32)> = names.iter().map(|(n, w)| (n.as_str(), *w)).collect();
        let ring = Ring::new(&borrowed, hash, tag);
        Shards {
            shards: services
                .into_iter()
                .map(|service| Shard {
                    service,
                    failures: Cell::new(0),
                    ejections: Cell::new(0),
                    ejected_until: Cell::new(None),
                })
                .collect(),
            names,
            ring: RefCell::new(ring),
            hash,
            tag,
            try_timeout: cluster.try_timeout,
            ejection: cluster.ejection.clone(),
            next_return: Cell::new(None),
            metrics,
        }
    }

    fn live(&self) -> Vec<bool> {
        self.shards
            .iter()
            .map(|s| s.ejected_until.get().is_none())
            .collect()
    }

    fn rebuild(&self) {
        let names: Vec<(&str, u32)> = self.names.iter().map(|(n, w)| (n.as_str(), *w)).collect();
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
        for (i, s) in self.shards.iter().enumerate() {
            match s.ejected_until.get() {
                Some(until) if until <= now => {
                    s.ejected_until.set(None);
                    s.failures
                        .set(self.ejection.consecutive_failures.saturating_sub(1));
                    self.metrics.endpoint(i).ejected.set(0);
                    log::info!("shard {} is back on the ring (probation)", self.names[i].0);
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
        let shard = &self.shards[index];
        self.metrics
            .endpoint(index)
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
        let ejected = self.live().iter().filter(|l| !**l).count();
        let allowed = ((self.shards.len() as f64 * self.ejection.max_share) as usize).max(1);
        if ejected >= allowed || ejected + 1 >= self.shards.len() {
            return; // keep at least one shard, and no more than the share
        }
        let shard = &self.shards[index];
        let n = shard.ejections.get() + 1;
        shard.ejections.set(n);
        let length = Backoff::exponential(self.ejection.base, self.ejection.max).nominal(n);
        let until = time::now() + length;
        shard.ejected_until.set(Some(until));
        self.next_return
            .set(Some(self.next_return.get().map_or(until, |t| t.min(until))));
        let m = self.metrics.endpoint(index);
        m.ejections.set(m.ejections.get() + 1);
        m.ejected.set(1);
        log::warn!(
            "shard {} ejected for {length:?} after {} failures in a row",
            self.names[index].0,
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
        let shard = &self.shards[index].service;
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
