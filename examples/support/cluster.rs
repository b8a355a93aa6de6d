//! A small cluster on loopback for the `tour` example and the balancing integration tests:
//! redis-protocol servers that can be slowed, killed and brought back, and the balanced
//! client stack in front of them.

#![allow(dead_code)] // the tour and the tests use different parts

use super::kv::{Kv, KvService};
use sheave::Handle;
use sheave::service::{Error, Service, ServiceBuilder, ServiceExt};
use sheave_middleware::ServiceBuilderExt;
use sheave_middleware::balance::{Backoff, Balance, Ejection, PeakEwma};
use sheave_middleware::discover;
use sheave_middleware::retry::{BudgetConfig, RetryConfig, RetryLayer, RetryableFailures};
use sheave_middleware::stats::{Stats, StatsConfig, StatsHandle};
use sheave_proto::dispatch::ClientConfig;
use sheave_proto::resp::{Frame, RespCodec};
use sheave_proto::{Connector, Server, ServerHandle};
use sheave_service::NewService;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// One backend server: a name, where it listens, and how to stop it.
#[derive(Debug)]
pub struct Backend {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Added to every response (a slow server).
    pub delay: Duration,
    kv: Kv,
    /// The runtime thread that serves it.
    thread: usize,
    running: Option<ServerHandle>,
}

impl Backend {
    /// Starts a backend on runtime thread `thread` of `rt`, on a free loopback port.
    pub fn start(
        rt: &Handle,
        thread: usize,
        name: &'static str,
        delay: Duration,
    ) -> io::Result<Backend> {
        let mut backend = Backend {
            name,
            addr: "127.0.0.1:0".parse().unwrap(),
            delay,
            kv: Kv::new(),
            thread,
            running: None,
        };
        backend.restart(rt)?;
        Ok(backend)
    }

    /// Stops accepting, lets requests in flight finish, closes every connection.
    pub fn kill(&mut self) {
        if let Some(handle) = self.running.take() {
            handle.shutdown();
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts serving again, on the same address (the data survives: it is the same store).
    pub fn restart(&mut self, rt: &Handle) -> io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (addr, kv, delay) = (self.addr, self.kv.clone(), self.delay);
        rt.spawn_with(self.thread, move || {
            let built = Server::bind(addr).codec(RespCodec::new()).build();
            let server = match built {
                Ok(server) => {
                    let _ = tx.send(Ok((server.local_addr(), server.handle())));
                    Some(server)
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    None
                }
            };
            async move {
                if let Some(server) = server {
                    let served = server
                        .serve(move |_peer: SocketAddr| {
                            let svc = slow(KvService::new(kv.clone()), delay);
                            async move { Ok::<_, Error>(svc) }
                        })
                        .await;
                    if let Err(e) = served {
                        eprintln!("backend on {addr}: {e}");
                    }
                }
            }
        });
        let (addr, handle) = rx
            .recv()
            .map_err(|_| io::Error::other("the backend thread is gone"))??;
        self.addr = addr;
        self.running = Some(handle);
        Ok(())
    }
}

/// A service that answers `delay` late (none when `delay` is zero).
fn slow(
    kv: KvService,
    delay: Duration,
) -> impl Service<Frame, Response = Frame, Error = Error> + Clone {
    kv.and_then(move |reply: Frame| async move {
        if !delay.is_zero() {
            sheave::time::sleep(delay).await;
        }
        Ok::<_, Error>(reply)
    })
}

/// The per-endpoint statistics the client keeps, one per backend name (they survive
/// reconnects: every connection to that backend records into the same `StatsHandle`).
pub fn endpoint_stats(names: &[&'static str]) -> Vec<(&'static str, StatsHandle)> {
    names
        .iter()
        .map(|n| (*n, StatsHandle::new(StatsConfig::default())))
        .collect()
}

/// The balanced client, outermost first — each layer's place is deliberate:
///
/// 1. `timeout` (500 ms): one deadline for the whole request, retries included — it sits
///    outside `retry` so a retry can never outlive the caller's patience;
/// 2. `retry` (idempotent requests, budget 20% + 10/s, backoff 5..50 ms): outside the
///    limit and the balancer, so a retry takes a fresh slot and a fresh pick — another
///    endpoint when one died;
/// 3. `concurrency_limit` (64): bounds what this client puts on the backends;
/// 4. the balancer: p2c over peak-EWMA, ejection after 3 failures in a row (max 50% of the
///    endpoints), reconnect every 20..200 ms; each endpoint's connection records its own
///    stats underneath.
///
/// `log` and `stats` (for the whole client) are added by the caller around this.
pub fn balanced_client(
    backends: &[(&'static str, SocketAddr)],
    stats: &[(&'static str, StatsHandle)],
) -> impl Service<Frame, Response = Frame, Error = Error> + use<> {
    let connector = Connector::pipeline(RespCodec::new()).config(
        ClientConfig::default()
            .max_in_flight(64)
            .connect_timeout(Duration::from_millis(200)),
    );
    let by_name: Vec<(&'static str, StatsHandle)> = stats.to_vec();
    let connect = move |(name, addr): (&'static str, SocketAddr)| {
        let connector = connector.clone();
        let stats = by_name
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| StatsHandle::new(StatsConfig::default()));
        async move {
            let conn = connector.new_service(addr).await?;
            Ok::<_, Error>(Stats::with_stats(conn, stats))
        }
    };
    let endpoints = discover::fixed(backends.iter().map(|(name, addr)| (*name, (*name, *addr))));
    let balance = Balance::builder()
        .peak_ewma(PeakEwma::default())
        .ejection(Ejection {
            consecutive_failures: 3,
            max_share: 0.5,
            ..Ejection::default()
        })
        .reconnect(Backoff::exponential(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
        .build(endpoints, connect);
    let retry = RetryConfig::new()
        .max_attempts(4)
        .backoff(Backoff::exponential(
            Duration::from_millis(5),
            Duration::from_millis(50),
        ))
        .budget(BudgetConfig::new().ratio(0.2).min_per_second(10));
    ServiceBuilder::new()
        .timeout(Duration::from_millis(500))
        .layer(RetryLayer::new(retry).policy(RetryableFailures::idempotent()))
        .concurrency_limit(64)
        .service(balance)
}
