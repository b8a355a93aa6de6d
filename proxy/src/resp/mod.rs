//! The RESP proxy (twemproxy's job): each command goes to the shard of its key by ketama
//! consistent hashing, multi-key commands are split by shard and their replies merged in
//! order, and commands that cannot be proxied are refused with the reason.
//!
//! **The stack,** per cluster and runtime thread, outermost first (the documented stack of
//! `examples/support/cluster.rs`, with the balancer replaced by the ring, since a key has one
//! shard):
//!
//! 1. `timeout` (`request_timeout`): one deadline per request, retries included;
//! 2. `retry` (`[cluster.retry]`, idempotent commands only — see
//!    [`is_idempotent`]), within a budget: above the ring, so a
//!    retry after an ejection goes to the key's new shard;
//! 3. `concurrency_limit` (`concurrency_limit`, nobody waits): bounds what the proxy puts on
//!    the shards and sheds past it;
//! 4. [`Shards`]: the ring, the per-attempt deadline (`try_timeout`) and
//!    ejection (`[cluster.ejection]`), over one balanced connection set per shard
//!    (`connections`, reconnecting with backoff), each a pipelined RESP3 client.
//!
//! **Pipelining** is kept end to end: the server's dispatcher takes up to `max_in_flight`
//! commands of a connection at once and answers in order; the commands in flight to one
//! shard share its pipelined connection, written in batches.
//!
//! **RESP2 and RESP3.** The proxy answers `HELLO` itself; each client connection's codec
//! then speaks the version asked for, and the shards are spoken to in RESP3 (`HELLO 3`), so
//! a RESP3 client gets maps and doubles, and a RESP2 client gets redis's own downgrade.
//!
//! ```
//! use sheave_proxy::{Proxy, config::Config};
//! use std::io::{Read, Write};
//!
//! // PING and HELLO are answered by the proxy itself: no shard needs to be up for them.
//! let config = Config::parse(r#"
//!     [[listener]]
//!     name = "redis"
//!     address = "127.0.0.1:0"
//!     protocol = "resp"
//!     cluster = "cache"
//!     [[cluster]]
//!     name = "cache"
//!     endpoints = ["127.0.0.1:6379", "127.0.0.1:6380"]
//! "#).unwrap();
//! let proxy = Proxy::start(config).unwrap();
//! let mut conn = std::net::TcpStream::connect(proxy.addr("redis").unwrap()).unwrap();
//! conn.write_all(b"PING\r\nMULTI\r\n").unwrap();
//! let mut reply = vec![0u8; 86];
//! conn.read_exact(&mut reply).unwrap();
//! assert_eq!(
//!     String::from_utf8(reply).unwrap(),
//!     "+PONG\r\n-ERR sheave-proxy: 'MULTI' cannot be proxied: transactions cannot span shards\r\n"
//! );
//! ```

pub mod commands;
pub mod shards;

use crate::config;
use crate::metrics::{ClusterMetrics, ListenerMetrics};
use bytes::Bytes;
use commands::{Action, Merge, classify, is_idempotent};
use shards::{Routed, Shards};
use sheave_core::time;
use sheave_middleware::balance::{Backoff, Balance};
use sheave_middleware::discover;
use sheave_middleware::retry::{Policy, Retry};
use sheave_middleware::{ConcurrencyLimitLayer, ServiceBuilderExt};
use sheave_proto::dispatch::ClientConfig;
use sheave_proto::resp::{Client, Frame, Hello};
use sheave_service::classify::{Classify, Idempotent};
use sheave_service::{Error, Service, ServiceBuilder};
use std::net::SocketAddr;
use std::rc::Rc;

/// Retries idempotent commands on any failure the [`Idempotent`] classifier calls
/// retryable (timeouts and closed connections included); never retries the others.
#[derive(Debug, Clone, Copy, Default)]
pub struct RespRetry;

impl Policy<Routed, Frame> for RespRetry {
    fn clone_request(&self, req: &Routed) -> Option<Routed> {
        let name = req.frame.arg(0)?;
        is_idempotent(name).then(|| req.clone())
    }

    fn should_retry(&self, outcome: Result<&Frame, &Error>) -> bool {
        Idempotent.classify(outcome).is_retryable()
    }
}

/// The connections to one shard: `cluster.connections` pipelined RESP3 clients behind a
/// balancer that reconnects them.
fn shard_client(
    cluster: &config::Cluster,
    index: usize,
    addr: SocketAddr,
    metrics: Rc<ClusterMetrics>,
) -> impl Service<Frame, Response = Frame, Error = Error> + use<> {
    let config = ClientConfig::default()
        .max_in_flight(cluster.max_in_flight_per_connection)
        .connect_timeout(cluster.connect_timeout);
    let connect = move |addr: SocketAddr| {
        let (config, metrics) = (config.clone(), metrics.clone());
        async move {
            let client =
                Client::connect_hello(addr, config, Hello::new().name("sheave-proxy")).await?;
            let m = metrics.endpoint(index);
            m.connections.set(m.connections.get() + 1);
            Ok::<_, Error>(client)
        }
    };
    let connections = discover::fixed((0..cluster.connections).map(move |c| (c, addr)));
    Balance::builder()
        .without_ejection() // ejection is the ring's, by shard
        .reconnect(Backoff::exponential(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_secs(1),
        ))
        .empty_wait(cluster.connect_timeout.min(cluster.try_timeout))
        .build(connections, connect)
}

/// Builds the stack of `cluster` on this runtime thread (see the [module docs](self)).
///
/// # Panics
/// Outside a runtime thread.
pub fn cluster_stack(
    cluster: &config::Cluster,
    metrics: Rc<ClusterMetrics>,
) -> (
    Rc<impl Service<Routed, Response = Frame, Error = Error> + use<>>,
    Rc<impl std::fmt::Debug + ShardOf + use<>>,
) {
    let services = cluster
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| shard_client(cluster, i, e.address(), metrics.clone()))
        .collect();
    let shards = Rc::new(Shards::new(cluster, services, metrics.clone()));
    // Shards from discovery (a file, etcd) join and leave the ring as their changes arrive.
    let sources = crate::discovery::sources(cluster);
    if !sources.is_empty() {
        let mut changes = futures::stream::select_all(sources);
        let (shards, cluster, metrics) = (Rc::downgrade(&shards), cluster.clone(), metrics.clone());
        drop(sheave_core::spawn(async move {
            while let Some(change) = futures::StreamExt::next(&mut changes).await {
                let Some(shards) = shards.upgrade() else {
                    return; // the stack is gone
                };
                shards.apply(change, |addr, index| {
                    shard_client(&cluster, index, addr, metrics.clone())
                });
            }
        }));
    }
    let (retry, budget) = crate::stack::retry(cluster, &metrics);
    let attempts = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(cluster.concurrency_limit).max_waiters(0))
        .service(shards.clone());
    let stack = ServiceBuilder::new()
        .timeout(cluster.request_timeout)
        .service(Retry::with_budget(attempts, RespRetry, retry, budget));
    (Rc::new(stack), shards)
}

/// Which shard a key goes to now: what splitting needs of the ring.
pub trait ShardOf {
    /// The shard of `key`.
    fn shard_of(&self, key: &[u8]) -> usize;
}

impl<S> ShardOf for Shards<S> {
    fn shard_of(&self, key: &[u8]) -> usize {
        Shards::shard_of(self, key)
    }
}

/// The service of one client connection: routes, splits and merges, over the thread's
/// cluster stack.
#[derive(Debug)]
pub struct RespConnection<S, R> {
    stack: Rc<S>,
    ring: Rc<R>,
    metrics: Rc<ClusterMetrics>,
    listener: Rc<ListenerMetrics>,
}

impl<S, R> RespConnection<S, R> {
    /// A connection's service; counts the connection open until it is dropped.
    pub fn new(
        stack: Rc<S>,
        ring: Rc<R>,
        metrics: Rc<ClusterMetrics>,
        listener: Rc<ListenerMetrics>,
    ) -> Self {
        listener.accepted.set(listener.accepted.get() + 1);
        RespConnection {
            stack,
            ring,
            metrics,
            listener,
        }
    }
}

impl<S, R> Drop for RespConnection<S, R> {
    fn drop(&mut self) {
        self.listener.closed.set(self.listener.closed.get() + 1);
    }
}

fn error_reply(e: &Error) -> Frame {
    Frame::Error(Bytes::from(format!("ERR sheave-proxy: {e}")))
}

impl<S, R> RespConnection<S, R>
where
    S: Service<Routed, Response = Frame, Error = Error>,
    R: ShardOf,
{
    async fn forward(&self, req: Routed) -> Frame {
        let start = time::now();
        let outcome = async {
            let permit = self.stack.ready().await?;
            self.stack.call(permit, req).await
        }
        .await;
        self.metrics
            .request(start.elapsed(), outcome.as_ref().err().map(Error::kind));
        match outcome {
            Ok(reply) => reply,
            Err(e) => error_reply(&e),
        }
    }

    async fn split(&self, cmd: Frame, step: usize, merge: Merge) -> Frame {
        let Frame::Array(parts) = cmd else {
            unreachable!("classify splits arrays only")
        };
        let name = parts[0].clone();
        let keys = (parts.len() - 1) / step;
        // (shard, argument groups), in order of first appearance.
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for k in 0..keys {
            let (Frame::Bulk(key) | Frame::Simple(key)) = &parts[1 + k * step] else {
                return Frame::error("ERR sheave-proxy: keys must be strings");
            };
            let shard = self.ring.shard_of(key);
            match groups.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, ks)) => ks.push(k),
                None => groups.push((shard, vec![k])),
            }
        }
        if groups.len() == 1 {
            return self
                .forward(Routed {
                    frame: Frame::Array(parts),
                    key: 1,
                })
                .await;
        }
        let subs = groups.iter().map(|(_, ks)| {
            let mut sub = Vec::with_capacity(1 + ks.len() * step);
            sub.push(name.clone());
            for k in ks {
                sub.extend_from_slice(&parts[1 + k * step..1 + (k + 1) * step]);
            }
            self.forward(Routed {
                frame: Frame::Array(sub),
                key: 1,
            })
        });
        let replies = futures::future::join_all(subs).await;
        if let Some(err) = replies.iter().find(|r| r.is_error()) {
            return err.clone();
        }
        match merge {
            Merge::Values => {
                let mut values = vec![Frame::Null; keys];
                for ((_, ks), reply) in groups.iter().zip(replies) {
                    let Frame::Array(items) = reply else {
                        return Frame::error(
                            "ERR sheave-proxy: a shard's MGET reply is not an array",
                        );
                    };
                    if items.len() != ks.len() {
                        return Frame::error(
                            "ERR sheave-proxy: a shard's MGET reply has the wrong length",
                        );
                    }
                    for (k, item) in ks.iter().zip(items) {
                        values[*k] = item;
                    }
                }
                Frame::Array(values)
            }
            Merge::Sum => {
                let mut sum = 0i64;
                for reply in replies {
                    match reply {
                        Frame::Integer(n) => sum += n,
                        _ => {
                            return Frame::error(
                                "ERR sheave-proxy: a shard's reply is not an integer",
                            );
                        }
                    }
                }
                Frame::Integer(sum)
            }
            Merge::AllOk => Frame::ok(),
        }
    }
}

impl<S, R> Service<Frame> for RespConnection<S, R>
where
    S: Service<Routed, Response = Frame, Error = Error>,
    R: ShardOf,
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

    async fn call(&self, (): (), cmd: Frame) -> Result<Frame, Error> {
        Ok(match classify(&cmd) {
            Action::Local(reply) | Action::Refuse(reply) => reply,
            Action::Key(key) => self.forward(Routed { frame: cmd, key }).await,
            Action::SameShard { first, count, step } => {
                let end = count.map_or(cmd.len(), |n| (first + n * step).min(cmd.len()));
                let mut shard = None;
                for i in (first..end).step_by(step) {
                    let Some(key) = cmd.arg(i) else {
                        return Ok(Frame::error("ERR sheave-proxy: keys must be strings"));
                    };
                    let s = self.ring.shard_of(key);
                    if *shard.get_or_insert(s) != s {
                        return Ok(Frame::error(
                            "CROSSSLOT sheave-proxy: the keys of this command live on different shards",
                        ));
                    }
                }
                self.forward(Routed {
                    frame: cmd,
                    key: first,
                })
                .await
            }
            Action::Split { step, merge } => self.split(cmd, step, merge).await,
        })
    }
}
