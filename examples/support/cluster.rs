//! A small cluster on loopback for the `tour` example and the balancing integration tests:
//! redis-protocol servers that can be slowed, killed and brought back, and the balanced
//! client stack in front of them.

#![allow(dead_code)] // the tour and the tests use different parts

use super::kv::{Kv, KvService};
use sheave::Handle;
use sheave::service::{Error, Service, ServiceBuilder, ServiceExt};
use sheave_middleware::balance::{Backoff, Balance, Ejection, PeakEwma};
use sheave_middleware::discover;
use sheave_middleware::hedge::{HedgeConfig, HedgeLayer};
use sheave_middleware::retry::{BudgetConfig, RetryConfig, RetryLayer, RetryableFailures};
use sheave_middleware::stats::{Stats, StatsConfig, StatsHandle};
use sheave_middleware::{ConcurrencyLimitLayer, ServiceBuilderExt, TimeoutLayer};
use sheave_proto::dispatch::ClientConfig;
use sheave_proto::resp::{Frame, RespCodec};
use sheave_proto::{Connector, Server, ServerHandle};
use sheave_service::NewService;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
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
    /// While on, requests are read and never answered (a hung host: its sockets stay open).
    hang: HangSwitch,
}

/// A switch that makes a backend hang: requests that arrive while it is on are read and left
/// unanswered until it is turned off (like `SIGSTOP` … `SIGCONT` on a server process).
#[derive(Debug, Clone, Default)]
pub struct HangSwitch {
    inner: Arc<HangState>,
}

#[derive(Debug, Default)]
struct HangState {
    on: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

impl HangSwitch {
    /// From now on, nothing is answered.
    pub fn hang(&self) {
        self.inner.on.store(true, Ordering::SeqCst);
    }

    /// Answers everything held, and everything after.
    pub fn resume(&self) {
        self.inner.on.store(false, Ordering::SeqCst);
        let woken = std::mem::take(&mut *self.inner.waiting.lock().unwrap());
        woken.into_iter().for_each(Waker::wake);
    }

    /// Waits while the switch is on.
    async fn pass(&self) {
        poll_fn(|cx| {
            if !self.inner.on.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            self.inner.waiting.lock().unwrap().push(cx.waker().clone());
            // Turned off meanwhile: `resume` may have drained before the push.
            if self.inner.on.load(Ordering::SeqCst) {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }
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
            hang: HangSwitch::default(),
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

    /// The backend's hang switch.
    pub fn hang_switch(&self) -> HangSwitch {
        self.hang.clone()
    }

    /// Starts serving again, on the same address (the data survives: it is the same store).
    pub fn restart(&mut self, rt: &Handle) -> io::Result<()> {
        let (addr, kv, delay) = (self.addr, self.kv.clone(), self.delay);
        let hang = self.hang.clone();
        let ((addr, handle), _) = super::bound_on(rt, self.thread, move || {
            let server = Server::bind(addr).codec(RespCodec::new()).build()?;
            let bound = (server.local_addr(), server.handle());
            let serve = async move {
                let served = server
                    .serve(move |_peer: SocketAddr| {
                        let svc = slow(KvService::new(kv.clone()), delay, hang.clone());
                        async move { Ok::<_, Error>(svc) }
                    })
                    .await;
                if let Err(e) = served {
                    eprintln!("backend on {addr}: {e}");
                }
            };
            Ok((bound, serve))
        })?;
        self.addr = addr;
        self.running = Some(handle);
        Ok(())
    }
}

/// A service that answers `delay` late (none when `delay` is zero), and not at all while
/// `hang` is on.
fn slow(
    kv: KvService,
    delay: Duration,
    hang: HangSwitch,
) -> impl Service<Frame, Response = Frame, Error = Error> + Clone {
    kv.and_then(move |reply: Frame| {
        let hang = hang.clone();
        async move {
            if !delay.is_zero() {
                sheave::time::sleep(delay).await;
            }
            hang.pass().await;
            Ok::<_, Error>(reply)
        }
    })
}

/// A "backend" that accepts each connection and closes it at once — what a server at its
/// connection limit, or a proxy with a dead upstream, looks like. Counts the connections.
pub fn accept_and_close(rt: &Handle, thread: usize) -> io::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let (addr, _) = super::bound_on(rt, thread, move || {
        let listener = sheave::net::TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
        let addr = listener.local_addr()?;
        let serve = async move {
            while let Ok((conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        };
        Ok((addr, serve))
    })?;
    Ok((addr, accepted))
}

/// The per-endpoint statistics the client keeps, one per backend name (they survive
/// reconnects: every connection to that backend records into the same `StatsHandle`).
pub fn endpoint_stats(names: &[&'static str]) -> Vec<(&'static str, StatsHandle)> {
    names
        .iter()
        .map(|n| (*n, StatsHandle::new(StatsConfig::default())))
        .collect()
}

/// How the tests vary the documented stack.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// The deadline of a whole request, retries included.
    pub deadline: Duration,
    /// The deadline of each attempt (`None`: only the outer deadline).
    pub per_try: Option<Duration>,
    /// Requests in flight on the backends at most.
    pub limit: usize,
    /// Requests in flight per connection at most.
    pub per_connection: usize,
    /// Hedge each attempt (a backup after the percentile), or not.
    pub hedge: Option<HedgeConfig>,
}

impl Default for ClientOptions {
    /// The tour's: 500 ms per request, 100 ms per attempt, 64 in flight, 64 per connection.
    fn default() -> Self {
        ClientOptions {
            deadline: Duration::from_millis(500),
            per_try: Some(Duration::from_millis(100)),
            limit: 64,
            per_connection: 64,
            hedge: None,
        }
    }
}

/// The balanced client with the default [`ClientOptions`]; see [`balanced_client_with`].
pub fn balanced_client(
    backends: &[(&'static str, SocketAddr)],
    stats: &[(&'static str, StatsHandle)],
) -> impl Service<Frame, Response = Frame, Error = Error> + use<> {
    balanced_client_with(backends, stats, ClientOptions::default()).0
}

/// What a test can watch of a client from [`balanced_client_with`].
#[derive(Debug)]
pub struct Probes {
    /// The connections the client made.
    pub connects: Connects,
    /// Every attempt the retry layer made (first tries and retries), counted below it.
    pub attempts: StatsHandle,
}

/// The names of the backends the client connected to, one per connection made.
#[derive(Debug)]
pub struct Connects(futures::channel::mpsc::UnboundedReceiver<&'static str>);

impl Connects {
    /// Waits until `n` more connections were made (a load test starts once every backend is
    /// connected, so that its first requests do not wait for connects).
    pub async fn wait_for(&mut self, n: usize) {
        use futures::StreamExt;
        for _ in 0..n {
            self.0.next().await.expect("the client is gone");
        }
    }
}

/// The balanced client, outermost first — each layer's place is deliberate:
///
/// 1. `timeout` (500 ms): one deadline for the whole request, retries included — it sits
///    outside `retry` so a retry can never outlive the caller's patience;
/// 2. `retry` (idempotent requests, budget 20% + 10/s, backoff 5..50 ms): outside the
///    limit and the balancer, so a retry takes a fresh slot and a fresh pick — another
///    endpoint when one died or hung;
/// 3. `concurrency_limit` (64, **nobody waits**): bounds what this client puts on the
///    backends, and sheds instead of queueing — past 64 in flight a request fails at once
///    with a retryable `Overloaded` readiness error, so an overloaded client answers in
///    microseconds, its memory stays bounded, and the requests it admits are not slowed by a
///    queue in front of them. (A `load_shed` layer would do the same, but it also sheds
///    while the balancer is still connecting at start-up, which the limit's own bound does
///    not: the balancer's `ready()` waits for a first endpoint.)
/// 4. `timeout` per attempt (100 ms; Envoy's `per_try_timeout`): below the retry, so an
///    attempt on a hung backend ends in time for a retry elsewhere, and above the balancer,
///    so the balancer sees the attempt fail and ejects the backend within a few attempts;
/// 5. the balancer: p2c over peak-EWMA with a 500 ms decay (round trips here are
///    sub-millisecond: with the default 10 s, one slow sample would skew equal endpoints'
///    shares for seconds), ejection after 3 failures in a row (max 50% of the endpoints,
///    250 ms growing to 500 ms, so a backend that recovers is probed again within half a
///    second), reconnect every 20..200 ms; each endpoint's connection records its own stats
///    underneath.
///
/// `log` and `stats` (for the whole client) are added by the caller around this.
pub fn balanced_client_with(
    backends: &[(&'static str, SocketAddr)],
    stats: &[(&'static str, StatsHandle)],
    options: ClientOptions,
) -> (
    impl Service<Frame, Response = Frame, Error = Error> + use<>,
    Probes,
) {
    let (connected, connects) = futures::channel::mpsc::unbounded();
    let connector = Connector::pipeline(RespCodec::new()).config(
        ClientConfig::default()
            .max_in_flight(options.per_connection)
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
        let connected = connected.clone();
        async move {
            let conn = connector.new_service(addr).await?;
            let _ = connected.unbounded_send(name); // nobody may be listening
            Ok::<_, Error>(Stats::with_stats(conn, stats))
        }
    };
    let endpoints = discover::fixed(backends.iter().map(|(name, addr)| (*name, (*name, *addr))));
    let balance = Balance::builder()
        .peak_ewma(PeakEwma {
            decay: Duration::from_millis(500),
            ..PeakEwma::default()
        })
        .ejection(Ejection {
            consecutive_failures: 3,
            max_share: 0.5,
            backoff: Backoff::exponential(Duration::from_millis(250), Duration::from_millis(500)),
        })
        .reconnect(Backoff::exponential(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
        .empty_wait(Duration::from_millis(100))
        .build(endpoints, connect);
    let retry = RetryConfig::new()
        .max_attempts(4)
        .backoff(Backoff::exponential(
            Duration::from_millis(5),
            Duration::from_millis(50),
        ))
        .budget(BudgetConfig::new().ratio(0.2).min_per_second(10));
    let attempts = StatsHandle::new(StatsConfig::default());
    let client = ServiceBuilder::new()
        .timeout(options.deadline)
        .layer(RetryLayer::new(retry).policy(RetryableFailures::idempotent()))
        .layer_fn({
            let attempts = attempts.clone();
            move |inner| Stats::with_stats(inner, attempts.clone())
        })
        .layer(ConcurrencyLimitLayer::new(options.limit).max_waiters(0))
        .option_layer(options.hedge.map(HedgeLayer::new))
        .option_layer(options.per_try.map(TimeoutLayer::new))
        .service(balance);
    let probes = Probes {
        connects: Connects(connects),
        attempts,
    };
    (client, probes)
}

/// The documented stack with room for 256 requests in flight instead of 64: the fault cases
/// measure what a hang or a death costs, and a scheduling hiccup of a shared 2-core machine
/// (a 16 ms stall fills 64 slots at 4,000/s) would otherwise shed requests for reasons of
/// its own. The overload case keeps the limit of 64: there, shedding is the subject.
pub fn roomy() -> ClientOptions {
    ClientOptions {
        limit: 256,
        ..ClientOptions::default()
    }
}

/// The documented client, once it has connected to every backend.
pub async fn connected(
    backends: &[(&'static str, SocketAddr)],
    stats: &[(&'static str, StatsHandle)],
    options: ClientOptions,
) -> Rc<impl Service<Frame, Response = Frame, Error = Error> + use<>> {
    connected_counting(backends, stats, options).await.0
}

/// [`connected`], with the count of the retry layer's attempts.
pub async fn connected_counting(
    backends: &[(&'static str, SocketAddr)],
    stats: &[(&'static str, StatsHandle)],
    options: ClientOptions,
) -> (
    Rc<impl Service<Frame, Response = Frame, Error = Error> + use<>>,
    StatsHandle,
) {
    let (client, mut probes) = balanced_client_with(backends, stats, options);
    probes.connects.wait_for(backends.len()).await;
    (Rc::new(client), probes.attempts)
}

pub struct Cluster {
    pub rt: sheave::Runtime,
    pub backends: Vec<Backend>,
    pub stats: Vec<(&'static str, StatsHandle)>,
}

pub fn cluster(names: &[&'static str], delay: Duration) -> Cluster {
    let rt = sheave::Runtime::builder().threads(2).build().unwrap();
    let handle = rt.handle().clone();
    let backends = names
        .iter()
        .map(|n| Backend::start(&handle, 1, n, delay).unwrap())
        .collect();
    Cluster {
        rt,
        backends,
        stats: endpoint_stats(names),
    }
}

impl Cluster {
    pub fn addrs(&self) -> Vec<(&'static str, SocketAddr)> {
        self.backends.iter().map(|b| (b.name, b.addr)).collect()
    }
}
