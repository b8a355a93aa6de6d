//! A load run: the client stack, the closed and open loops, and the [`Report`] they make.
//!
//! The client is the kit's documented balanced stack (`examples/support/cluster.rs`),
//! outermost first:
//!
//! 1. `timeout` (`--deadline`): one deadline for the whole request, retries and waiting for
//!    capacity included — outside the retry, so a retry never outlives it;
//! 2. `retry` (`--retries`, `--retry-budget`): only what surely was not sent (an endpoint
//!    that was unavailable, a refusal), so the server's own counts stay exact; outside the
//!    limit and the balancer, so a retry takes a fresh slot and a fresh pick;
//! 3. `concurrency_limit` (`--limit`): what this client puts on the servers at most;
//! 4. `hedge` (`--hedge`): a backup after a percentile of latency, usually to another
//!    endpoint (p2c picks afresh);
//! 5. `timeout` per attempt (`--per-try`): above the balancer, so the balancer sees a hung
//!    endpoint fail;
//! 6. the balancer (`--policy`) over the addresses, each a [`Pool`] of `-c` connections that
//!    counts its attempts into its address's figures.
//!
//! Requests are `u64` seeds (see [`crate::protocol`]): the connection makes the
//! protocol's request from the seed.
//!
//! **Closed loop**: `connections × pipeline × addresses` tasks (at most `--limit`), each
//! sending its next request when the last is answered; latency counts from the call. **Open loop** (`--rate`): a
//! request is due every `1/rate` s whatever the answers do, each on its own task, and its
//! latency counts from when it was *due* (on a 1 ms clock: the requests due within a
//! millisecond leave together at its end, and count from then) — so a stalled server shows as the latency of every
//! request that was due during the stall, not as a slower loop that sends less (wrk2's point
//! about coordinated omission).
//!
//! A run starts its clock once every connection is made (or the connect timeout passed with
//! at least one made), and ends after `--duration` or `--requests`, whichever comes first;
//! requests in flight at the end are waited for (each is bounded by its deadline) and
//! counted.
//!
//! ```
//! use sheave_load::cli::{Config, Protocol};
//! use sheave_proto::{Server, codec::LinesCodec};
//! use sheave_service::{Error, service_fn};
//! use std::time::Duration;
//!
//! // A line echo server on its own thread.
//! let (tx, rx) = std::sync::mpsc::channel();
//! std::thread::spawn(move || {
//!     sheave_core::Runtime::new().unwrap().block_on(async move {
//!         let server = Server::bind("127.0.0.1:0".parse().unwrap())
//!             .codec(LinesCodec::new())
//!             .build()
//!             .unwrap();
//!         tx.send(server.local_addr()).unwrap();
//!         let _ = server
//!             .serve(|_peer| async {
//!                 Ok::<_, Error>(service_fn(|line: String| async move { Ok::<_, Error>(line) }))
//!             })
//!             .await;
//!     })
//! });
//! let addr = rx.recv().unwrap();
//!
//! let mut config = Config::new(Protocol::Lines, vec![addr]);
//! config.connections = 2;
//! config.requests = Some(100);
//! config.duration = None;
//! config.quiet = true;
//! let report = sheave_load::run(&config).unwrap();
//! assert_eq!(report.total.ok(), 100);
//! assert_eq!(report.endpoints[0].figures.requests(), 100);
//! ```

use crate::cli::{Config, Mode, Policy, Protocol as Which};
use crate::figures::{Failure, Figures};
use crate::pool::Pool;
use crate::protocol::{self, Protocol, Verdict};
use sheave_core::sync::Notify;
use sheave_core::time;
use sheave_middleware::balance::{Backoff, Balance, PeakEwma};
use sheave_middleware::discover;
use sheave_middleware::hedge::{HedgeConfig, HedgeLayer};
use sheave_middleware::retry::{BudgetConfig, RetryConfig, RetryLayer};
use sheave_middleware::{ConcurrencyLimitLayer, ServiceBuilderExt, TimeoutLayer};
use sheave_service::{Error, Service, ServiceBuilder, ServiceExt, TryReady};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// One address's figures: every attempt that went to it.
#[derive(Debug, Clone)]
pub struct EndpointReport {
    /// The address.
    pub addr: SocketAddr,
    /// Its attempts (a retried or hedged request counts on each endpoint it went to), with
    /// latencies from the call on that connection.
    pub figures: Figures,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The protocol.
    pub protocol: Which,
    /// Closed or open loop.
    pub mode: Mode,
    /// Connections to each address.
    pub connections: usize,
    /// In flight on each connection.
    pub pipeline: usize,
    /// From the start of the clock to the last answer.
    pub elapsed: Duration,
    /// Every request, as its caller saw it (in open loop, latency from when it was due).
    pub total: Figures,
    /// Per address, in the order given.
    pub endpoints: Vec<EndpointReport>,
}

impl Report {
    /// Requests finished per second of [`elapsed`](Self::elapsed).
    pub fn rps(&self) -> f64 {
        self.total.requests() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A run that could not start.
#[derive(Debug)]
pub struct RunError(String);

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

/// Runs the load `config` describes, on one runtime thread of its own.
pub fn run(config: &Config) -> Result<Report, RunError> {
    let rt = sheave_core::Runtime::new().map_err(|e| RunError(format!("runtime: {e}")))?;
    rt.block_on(async {
        match config.protocol {
            Which::Resp => match protocol::Resp::new(config) {
                Ok(resp) => drive(config, resp).await,
                Err(e) => Err(RunError(format!("--command: {e}"))),
            },
            Which::Lines => drive(config, protocol::Lines::new(config)).await,
            Which::Tcp => drive(config, protocol::Tcp::new(config)).await,
            Which::Http1 | Which::Http2 => drive(config, protocol::Http::new(config)).await,
        }
    })
}

/// A connection that takes seeds: makes the protocol's request, judges the reply, and
/// records the attempt in its address's figures.
struct Conn<P: Protocol> {
    inner: Pool<P::Conn>,
    protocol: Rc<P>,
    figures: Rc<RefCell<Figures>>,
}

/// Counts an attempt whose caller gave up (a deadline, a hedge) as `canceled`.
struct Pending<'a> {
    figures: &'a RefCell<Figures>,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            use sheave_service::ErrorKind;
            self.figures
                .borrow_mut()
                .record_error(Failure::Kind(ErrorKind::Canceled));
        }
    }
}

impl<P: Protocol> Service<u64> for Conn<P> {
    type Response = Verdict;
    type Error = Error;
    type Permit = <Pool<P::Conn> as Service<P::Request>>::Permit;

    fn ready(&self) -> impl Future<Output = Result<Self::Permit, Error>> {
        self.inner.ready()
    }

    fn try_ready(&self) -> TryReady<Self::Permit, Error> {
        self.inner.try_ready()
    }

    fn in_flight(&self) -> Option<usize> {
        self.inner.in_flight()
    }

    async fn call(&self, permit: Self::Permit, seed: u64) -> Result<Verdict, Error> {
        let mut pending = Pending {
            figures: &self.figures,
            done: false,
        };
        let started = Instant::now();
        let outcome = match self.protocol.request(seed) {
            Ok(req) => match self.inner.call(permit, req).await {
                Ok(reply) => self.protocol.verdict(seed, reply).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        pending.done = true;
        let now = Instant::now();
        let mut figures = self.figures.borrow_mut();
        match &outcome {
            Ok(Verdict::Ok) => {
                ANSWERED.with(|a| a.set(Some(now)));
                figures.record_ok(now - started)
            }
            Ok(Verdict::ErrorReply) => figures.record_error(Failure::ErrorReply),
            Ok(Verdict::Unexpected) => figures.record_error(Failure::Unexpected),
            Err(e) => figures.record_error(Failure::Kind(e.kind())),
        }
        outcome
    }
}

thread_local! {
    /// When the last successful attempt on this thread was answered, as its [`Conn`] read
    /// the clock: the caller of that attempt resumes in the same poll (a success passes
    /// straight up the stack), so it takes this reading instead of making its own — one
    /// clock read less per request. Only successes set it, and each success sets it before
    /// its caller looks, so no caller sees another's reading.
    static ANSWERED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The time a request ended: the reading its connection made when it succeeded, or now.
fn ended(outcome: &Result<Verdict, Error>) -> Instant {
    let handed = ANSWERED.with(Cell::take);
    match (outcome, handed) {
        (Ok(Verdict::Ok), Some(at)) => at,
        _ => Instant::now(),
    }
}

/// Connections made so far, and the last connect error.
#[derive(Default)]
struct Connects {
    made: Cell<usize>,
    last_error: RefCell<Option<Error>>,
    changed: Notify,
}

/// A small, fast generator for the seeds (xorshift64*).
#[derive(Debug, Clone)]
struct Seeds(u64);

impl Seeds {
    fn new(seed: u64) -> Seeds {
        Seeds(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn record(total: &RefCell<Figures>, outcome: &Result<Verdict, Error>, latency: Duration) {
    let mut total = total.borrow_mut();
    match outcome {
        Ok(Verdict::Ok) => total.record_ok(latency),
        Ok(Verdict::ErrorReply) => total.record_error(Failure::ErrorReply),
        Ok(Verdict::Unexpected) => total.record_error(Failure::Unexpected),
        Err(e) => total.record_error(Failure::Kind(e.kind())),
    }
}

async fn drive<P: Protocol>(config: &Config, protocol: P) -> Result<Report, RunError> {
    let protocol = Rc::new(protocol);
    let per_endpoint: Vec<Rc<RefCell<Figures>>> = config
        .addrs
        .iter()
        .map(|_| Rc::new(RefCell::new(Figures::new())))
        .collect();
    let connects = Rc::new(Connects::default());
    let per_address = protocol.connections(config.connections);
    let connect = {
        let (protocol, per_endpoint, connects) =
            (protocol.clone(), per_endpoint.clone(), connects.clone());
        let addrs = config.addrs.clone();
        let pipeline = config.pipeline;
        move |index: usize| {
            let (protocol, figures, connects) = (
                protocol.clone(),
                per_endpoint[index].clone(),
                connects.clone(),
            );
            let addr = addrs[index];
            async move {
                let dials = (0..per_address).map(|_| {
                    let (protocol, connects) = (protocol.clone(), connects.clone());
                    async move {
                        let made = protocol.connect(addr).await;
                        match &made {
                            Ok(_) => connects.made.set(connects.made.get() + 1),
                            Err(e) => *connects.last_error.borrow_mut() = Some(e.clone()),
                        }
                        connects.changed.notify_waiters();
                        made
                    }
                });
                let conns = futures::future::try_join_all(dials).await?;
                Ok::<_, Error>(Conn {
                    inner: Pool::new(conns, pipeline),
                    protocol,
                    figures,
                })
            }
        }
    };
    // Each address is an endpoint of the balancer: a pool of its connections.
    let keys: Vec<(usize, usize)> = (0..config.addrs.len()).map(|a| (a, a)).collect();
    let wanted = keys.len() * per_address;
    let seed = config.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let builder = Balance::builder()
        .seed(seed)
        .empty_wait(config.connect_timeout)
        .reconnect(Backoff::exponential(
            Duration::from_millis(20),
            Duration::from_millis(500),
        ));
    let builder = match config.policy {
        Policy::P2cEwma => builder.peak_ewma(PeakEwma {
            // Round trips here are short: a long decay lets one slow sample skew shares.
            decay: Duration::from_millis(500),
            ..PeakEwma::default()
        }),
        Policy::P2cPending => builder.p2c_pending(),
        Policy::RoundRobin => builder.round_robin(),
    };
    let balance = builder.build(discover::fixed(keys), connect);
    let limit = config.in_flight_limit();
    // Closed loop: never more callers than slots, so nobody waits. Open loop: a request that
    // finds every slot taken waits (within its deadline) — its wait is part of its latency.
    let waiters = match config.mode {
        Mode::Closed => 0,
        Mode::Open { rate } => {
            ((rate * config.deadline.as_secs_f64()) as usize).clamp(1024, 1 << 20)
        }
    };
    let retry = (config.retries > 0).then(|| {
        RetryLayer::new(
            RetryConfig::new()
                .max_attempts(config.retries + 1)
                .backoff(Backoff::exponential(
                    Duration::from_millis(5),
                    Duration::from_millis(50),
                ))
                .budget(
                    BudgetConfig::new()
                        .ratio(config.retry_budget)
                        .min_per_second(10),
                ),
        )
    });
    let stack = ServiceBuilder::new()
        .timeout(config.deadline)
        .option_layer(retry)
        .layer(ConcurrencyLimitLayer::new(limit).max_waiters(waiters));
    // The hedge is in the type only when asked for: its future holds two attempts, and an
    // `Either` with it would triple the size of every request's future (2.5 KB, not 0.9).
    match config.hedge {
        Some(p) => {
            let client = stack
                .layer(HedgeLayer::new(HedgeConfig::default().percentile(p)))
                .option_layer(config.per_try.map(TimeoutLayer::new))
                .service(balance);
            measure(
                config,
                Rc::new(client),
                &connects,
                wanted,
                &per_endpoint,
                seed,
            )
            .await
        }
        None => {
            let client = stack
                .option_layer(config.per_try.map(TimeoutLayer::new))
                .service(balance);
            measure(
                config,
                Rc::new(client),
                &connects,
                wanted,
                &per_endpoint,
                seed,
            )
            .await
        }
    }
}

/// Waits for the connections, runs the loop, and gathers the figures.
async fn measure<S>(
    config: &Config,
    client: Rc<S>,
    connects: &Connects,
    wanted: usize,
    per_endpoint: &[Rc<RefCell<Figures>>],
    seed: u64,
) -> Result<Report, RunError>
where
    S: Service<u64, Response = Verdict, Error = Error> + 'static,
{
    // Start once every connection is made, or the connect timeout passed with one made.
    let connected_by = Instant::now() + config.connect_timeout + Duration::from_millis(100);
    loop {
        let changed = connects.changed.notified();
        if connects.made.get() >= wanted {
            break;
        }
        let left = connected_by.saturating_duration_since(Instant::now());
        if left.is_zero() || time::timeout(left, changed).await.is_err() {
            break;
        }
    }
    if connects.made.get() == 0 {
        let why = connects
            .last_error
            .borrow()
            .as_ref()
            .map_or("timed out".to_string(), |e| e.to_string());
        let addrs: Vec<String> = config.addrs.iter().map(|a| a.to_string()).collect();
        return Err(RunError(format!(
            "could not connect to {}: {why}",
            addrs.join(", ")
        )));
    }
    if connects.made.get() < wanted && !config.quiet {
        eprintln!(
            "sheave-load: {} of {wanted} connections made in time; going on (an address whose \
             connections are not all made is retried in the background)",
            connects.made.get()
        );
    }

    let start = Instant::now();
    for f in per_endpoint {
        f.borrow_mut().reset();
    }
    let total = Rc::new(RefCell::new(Figures::new()));
    let timeline = sheave_core::spawn(mark_ticks(total.clone()));
    let end = config.duration.map(|d| start + d);
    let finished = Rc::new(Cell::new(false));
    let progress = (!config.quiet && (config.progress || std::io::stderr().is_terminal()))
        .then(|| sheave_core::spawn(show_progress(total.clone(), start, finished.clone())));

    match config.mode {
        Mode::Closed => closed_loop(config, &client, &total, end, seed).await,
        Mode::Open { rate } => open_loop(config, &client, &total, end, rate, seed).await,
    }
    let elapsed = start.elapsed();
    timeline.abort();
    total.borrow_mut().mark(); // the last, partial tick
    finished.set(true);
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    debug_assert!(total.borrow().requests() <= config.requests.unwrap_or(u64::MAX));
    let total = total.borrow().clone();
    Ok(Report {
        protocol: config.protocol,
        mode: config.mode,
        connections: config.connections,
        pipeline: config.pipeline,
        elapsed,
        total,
        endpoints: config
            .addrs
            .iter()
            .zip(per_endpoint)
            .map(|(addr, f)| EndpointReport {
                addr: *addr,
                figures: f.borrow().clone(),
            })
            .collect(),
    })
}

/// `connections × pipeline × addresses` callers (at most `--limit`), each sending when the
/// last is answered.
async fn closed_loop<S>(
    config: &Config,
    client: &Rc<S>,
    total: &Rc<RefCell<Figures>>,
    end: Option<Instant>,
    seed: u64,
) where
    S: Service<u64, Response = Verdict, Error = Error> + 'static,
{
    // Never more callers than the limit admits: past it they would be shed at once.
    let slots =
        (config.connections * config.pipeline * config.addrs.len()).min(config.in_flight_limit());
    let tickets = Rc::new(Cell::new(config.requests.unwrap_or(u64::MAX)));
    let stop = Rc::new(Cell::new(false));
    let keyspace_free = Seeds::new(seed);
    let callers: Vec<_> = (0..slots)
        .map(|i| {
            let (client, total, tickets, stop) =
                (client.clone(), total.clone(), tickets.clone(), stop.clone());
            let mut seeds = keyspace_free.clone();
            seeds.0 ^= (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
            async move {
                // Each call starts when the last ended (what lies between is this loop's own
                // bookkeeping, counted against us).
                let mut called = Instant::now();
                while !stop.get() && tickets.get() > 0 {
                    tickets.set(tickets.get() - 1);
                    let outcome = client.oneshot(seeds.next()).await;
                    let now = ended(&outcome);
                    record(&total, &outcome, now.saturating_duration_since(called));
                    called = now;
                    if end.is_some_and(|end| now >= end) {
                        stop.set(true);
                    }
                }
            }
        })
        .map(sheave_core::spawn)
        .collect();
    for caller in callers {
        let _ = caller.await;
    }
}

/// `rate` requests a second, each on its own task, each timed from when it was due.
async fn open_loop<S>(
    config: &Config,
    client: &Rc<S>,
    total: &Rc<RefCell<Figures>>,
    end: Option<Instant>,
    rate: f64,
    seed: u64,
) where
    S: Service<u64, Response = Verdict, Error = Error> + 'static,
{
    let mut seeds = Seeds::new(seed);
    let outstanding = Rc::new((Cell::new(0u64), Notify::new()));
    let limit = config.requests.unwrap_or(u64::MAX);
    let mut issued = 0u64;
    // The origin of the due times is a tick of the timer wheel (the first tick of an interval
    // comes at once, the second on the wheel's clock), so that later ticks fall on whole
    // milliseconds of it.
    let mut tick = time::interval(Duration::from_millis(1));
    tick.tick().await;
    tick.tick().await;
    let start = Instant::now();
    // Request `i` is due at the end of millisecond `ceil(i × 1000 / rate)`: the sender runs
    // on the timer wheel's 1 ms clock, and the requests due within a millisecond leave
    // together at its end. Each is timed from that intended moment, so a late tick (a stall
    // of this process) counts too.
    let due_ms = |i: u64| (i as f64 * 1000.0 / rate).ceil() as u64;
    let last_ms = end.map(|end| end.saturating_duration_since(start).as_millis() as u64);
    while issued < limit && last_ms.is_none_or(|last| due_ms(issued) <= last) {
        tick.tick().await;
        // To the nearest millisecond: a tick may fire a little before or after its mark.
        let now_ms = (start.elapsed() + Duration::from_micros(500)).as_millis() as u64;
        while issued < limit
            && due_ms(issued) <= now_ms
            && last_ms.is_none_or(|last| due_ms(issued) <= last)
        {
            let due = start + Duration::from_millis(due_ms(issued));
            issued += 1;
            let (client, total, outstanding) = (client.clone(), total.clone(), outstanding.clone());
            let seed = seeds.next();
            outstanding.0.set(outstanding.0.get() + 1);
            sheave_core::spawn(async move {
                let outcome = client.oneshot(seed).await;
                let now = ended(&outcome);
                record(&total, &outcome, now.saturating_duration_since(due));
                outstanding.0.set(outstanding.0.get() - 1);
                if outstanding.0.get() == 0 {
                    outstanding.1.notify_waiters();
                }
            });
        }
    }
    loop {
        let idle = outstanding.1.notified();
        if outstanding.0.get() == 0 {
            break;
        }
        idle.await;
    }
}

/// Marks the throughput timeline every [`TICK`](crate::figures::TICK).
async fn mark_ticks(total: Rc<RefCell<Figures>>) {
    let mut tick = time::interval(crate::figures::TICK);
    tick.tick().await; // the first tick comes at once
    loop {
        tick.tick().await;
        total.borrow_mut().mark();
    }
}

/// Rewrites one line on stderr every second: elapsed, requests, rate, errors.
async fn show_progress(total: Rc<RefCell<Figures>>, start: Instant, finished: Rc<Cell<bool>>) {
    let mut tick = time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = (0u64, start);
    while !finished.get() {
        tick.tick().await;
        let (requests, errors) = {
            let t = total.borrow();
            (t.requests(), t.errors())
        };
        let now = Instant::now();
        let rate = (requests - last.0) as f64 / (now - last.1).as_secs_f64().max(1e-9);
        last = (requests, now);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{:>7.1}s {:>12} requests {:>12.0} req/s {:>8} errors  ",
            (now - start).as_secs_f64(),
            requests,
            rate,
            errors
        );
        let _ = err.flush();
    }
}
