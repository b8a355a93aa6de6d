//! The server half of the reliability suite (issue 13, cases 6–10): the redis-protocol kv
//! server behind `sheave_proto::Server`, with a concurrency limit and load shedding in front of
//! the service, put under overload, a graceful drain, idle-connection and slow-loris storms,
//! and descriptor exhaustion.
//!
//! Each case is a runner that returns a plain result of figures and, where a report would plot
//! it, a per-interval [`Timeline`]. The integration test (`tests/reliability/main.rs`) asserts
//! the promises on these figures; the report example prints and plots them.
//!
//! * [`overload`] (6) and [`drain`] (7) and [`slow_loris`] (9) run the server in this process,
//!   on runtime thread 1 of a two-thread runtime, and the clients on the calling thread.
//! * [`idle_connections`] (8) and [`fd_exhaustion`] (10) need the server's own resident
//!   memory and CPU time, and its own descriptor limit: they run it as a child process (the
//!   calling executable run again with [`CHILD_ENV`] set, which must call
//!   [`serve_if_child`] first thing) and read `/proc/<pid>/`.
//!
//! Wall-clock figures come from a shared, noisy machine: they are ratios against a baseline
//! taken in the same run where the promise is a ratio.

#![allow(dead_code)] // the test and the report example use different parts

use super::kv::{Kv, KvService};
use futures::future::join_all;
use sheave::Handle;
use sheave::net::TcpStream;
use sheave::service::{Error, Service, ServiceExt, TryReady};
use sheave::time;
use sheave_middleware::{ConcurrencyLimit, LoadShed};
use sheave_proto::dispatch::{Client, ClientConfig};
use sheave_proto::resp::{Frame, RespCodec};
use sheave_proto::{Server, ServerHandle};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Figures

/// Counts per interval of a run, by when each request finished.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The width of each bucket.
    pub interval: Duration,
    /// One bucket per interval, from the start of the run.
    pub buckets: Vec<Bucket>,
}

/// One interval of a [`Timeline`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Answered (not an error reply).
    pub ok: u64,
    /// Refused with an explicit `Overloaded` reply.
    pub overloaded: u64,
    /// Anything else: another error reply, a broken connection, a missed deadline.
    pub failed: u64,
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// `-ERR overloaded`.
    Overloaded,
    /// Anything else.
    Failed,
}

impl Timeline {
    fn new(interval: Duration) -> Self {
        Timeline {
            interval,
            buckets: Vec::new(),
        }
    }

    fn record(&mut self, since_start: Duration, outcome: Outcome) {
        let i = (since_start.as_micros() / self.interval.as_micros().max(1)) as usize;
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, Bucket::default());
        }
        let b = &mut self.buckets[i];
        match outcome {
            Outcome::Ok => b.ok += 1,
            Outcome::Overloaded => b.overloaded += 1,
            Outcome::Failed => b.failed += 1,
        }
    }
}

/// Latencies of a run; quantiles by sorting (runs here are at most tens of thousands).
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// How many were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `q` quantile (0.0..=1.0), nearest rank; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    /// The largest.
    pub fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }
}

/// Milliseconds with two decimals, for the one-line figures.
pub fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

/// Resident memory of process `pid` (`VmRSS` of `/proc/<pid>/status`), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of process `pid`, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless it says otherwise).
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// How many descriptors process `pid` has open.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// How many of the descriptor numbers below `limit` process `pid` uses: the slots that
/// `RLIMIT_NOFILE = limit` leaves for new ones (a descriptor inherited with a higher number
/// takes none of them).
pub fn fd_slots_used(pid: u32, limit: u64) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .filter(|&fd| fd < limit)
            .count(),
    )
}

/// The soft and hard `RLIMIT_NOFILE` of this process (`/proc/self/limits`).
pub fn nofile_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line["Max open files".len()..].split_whitespace();
    let parse = |s: Option<&str>| match s? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    Some((parse(nums.next())?, parse(nums.next())?))
}

/// Makes sure this process may open `n` descriptors: raises its own soft limit (up to the
/// hard one) with `prlimit` (util-linux) when it is lower. `Err` says why it could not.
pub fn ensure_nofile(n: u64) -> Result<(), String> {
    let (soft, hard) = nofile_limits().ok_or("cannot read /proc/self/limits")?;
    if soft >= n {
        return Ok(());
    }
    if hard < n {
        return Err(format!("needs {n} descriptors; the hard limit is {hard}"));
    }
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={n}:{hard}"))
        .status()
        .map_err(|e| format!("needs {n} descriptors (soft limit {soft}); prlimit: {e}"))?;
    match nofile_limits() {
        Some((soft, _)) if status.success() && soft >= n => Ok(()),
        _ => Err(format!(
            "needs {n} descriptors; prlimit could not raise {soft}"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The server under test

/// Holds calls until opened (open from the start unless made [`closed`](Gate::closed)), and
/// counts the calls waiting at it. Shared across threads.
#[derive(Clone, Default)]
pub struct Gate {
    inner: Arc<GateState>,
}

#[derive(Default)]
struct GateState {
    closed: AtomicBool,
    waiting: AtomicUsize,
    wakers: Mutex<Vec<Waker>>,
    /// Whoever waits in [`Gate::waiting_at_least`].
    watcher: Mutex<Option<Waker>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .field("waiting", &self.inner.waiting.load(Ordering::Relaxed))
            .finish()
    }
}

impl Gate {
    /// A gate that holds every call until [`open`](Gate::open).
    pub fn closed() -> Self {
        let gate = Gate::default();
        gate.inner.closed.store(true, Ordering::SeqCst);
        gate
    }

    /// Lets every held call through, and every later one.
    pub fn open(&self) {
        let wakers = {
            let mut w = self.inner.wakers.lock().unwrap();
            self.inner.closed.store(false, Ordering::SeqCst);
            std::mem::take(&mut *w)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// How many calls wait at the gate.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::SeqCst)
    }

    /// Completes once at least `n` calls wait at the gate.
    pub async fn waiting_at_least(&self, n: usize) {
        poll_fn(|cx| {
            *self.inner.watcher.lock().unwrap() = Some(cx.waker().clone());
            if self.waiting() >= n {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    async fn pass(&self) {
        if !self.inner.closed.load(Ordering::SeqCst) {
            return;
        }
        self.inner.waiting.fetch_add(1, Ordering::SeqCst);
        if let Some(w) = self.inner.watcher.lock().unwrap().as_ref() {
            w.wake_by_ref();
        }
        poll_fn(|cx| {
            let mut w = self.inner.wakers.lock().unwrap();
            if !self.inner.closed.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            w.push(cx.waker().clone());
            Poll::Pending
        })
        .await;
        self.inner.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The kv service, made to take `delay` per call (a sustainable rate that does not depend on
/// the machine) and to wait at `gate` first.
#[derive(Debug, Clone)]
pub struct SlowKv {
    kv: KvService,
    delay: Duration,
    gate: Gate,
}

impl Service<Frame> for SlowKv {
    type Response = Frame;
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        Ok(())
    }

    fn try_ready(&self) -> TryReady<(), Error> {
        TryReady::Ready(())
    }

    async fn call(&self, (): (), cmd: Frame) -> Result<Frame, Error> {
        self.gate.pass().await;
        if !self.delay.is_zero() {
            time::sleep(self.delay).await;
        }
        Ok(self.kv.execute(&cmd))
    }
}

/// How the server under test is built.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Each call takes this long.
    pub delay: Duration,
    /// Calls in progress at once, per server thread (beyond it: shed with `Overloaded`).
    pub limit: usize,
    /// `Server::max_connections`.
    pub max_connections: usize,
    /// Calls wait here first.
    pub gate: Gate,
}

impl Default for ServerConfig {
    /// No delay, a limit of 10,000 calls, 10,000 connections, an open gate.
    fn default() -> Self {
        ServerConfig {
            delay: Duration::ZERO,
            limit: 10_000,
            max_connections: 10_000,
            gate: Gate::default(),
        }
    }
}

/// The stack served to each connection of one server thread: the shed in front of a limit
/// shared by every connection of the thread, in front of the kv service. A shed call fails
/// with `Overloaded`, which the dispatcher writes as the reply `-ERR overloaded`.
fn stack(config: &ServerConfig, kv: &Kv) -> LoadShed<ConcurrencyLimit<SlowKv>> {
    let slow = SlowKv {
        kv: KvService::new(kv.clone()),
        delay: config.delay,
        gate: config.gate.clone(),
    };
    LoadShed::new(ConcurrencyLimit::new(slow, config.limit.max(1)))
}

/// A server on runtime thread `thread` of `rt`; see [`start_server`].
#[derive(Debug)]
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Shuts it down.
    pub handle: ServerHandle,
    /// Completes when `serve` returns (after the drain).
    pub done: sheave::RemoteJoinHandle<()>,
}

/// Starts the server under test on runtime thread `thread`, on a free loopback port.
pub fn start_server(rt: &Handle, thread: usize, config: ServerConfig) -> io::Result<RunningServer> {
    let (tx, rx) = std::sync::mpsc::channel();
    let done = rt.spawn_with(thread, move || {
        let built = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .codec(RespCodec::new())
            .max_connections(config.max_connections)
            .build();
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
            let Some(server) = server else { return };
            let kv = Kv::new();
            let served = server
                .serve_with(move || {
                    let svc = stack(&config, &kv);
                    move |_peer: SocketAddr| {
                        let svc = svc.clone();
                        async move { Ok::<_, Error>(svc) }
                    }
                })
                .await;
            if let Err(e) = served {
                eprintln!("server: {e}");
            }
        }
    });
    let (addr, handle) = rx
        .recv()
        .map_err(|_| io::Error::other("the server thread is gone"))??;
    Ok(RunningServer { addr, handle, done })
}

// ---------------------------------------------------------------------------------------------
// The server as a child process (cases 8 and 10)

/// Set (to the `--max-connections` figure) in a child process that must serve instead of
/// testing.
pub const CHILD_ENV: &str = "SHEAVE_RELIABILITY_SERVER";

/// In a process started by [`ServerProcess::start`], serves the kv stack forever (printing
/// `listening on ADDR` first) and never returns; elsewhere returns at once.
pub fn serve_if_child() {
    let Ok(max) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config = ServerConfig {
        max_connections: max.parse().expect("max connections"),
        ..ServerConfig::default()
    };
    let rt = sheave::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .codec(RespCodec::new())
            .max_connections(config.max_connections)
            .build()
            .expect("bind");
        println!("listening on {}", server.local_addr());
        let kv = Kv::new();
        let served = server
            .serve_with(move || {
                let svc = stack(&config, &kv);
                move |_peer: SocketAddr| {
                    let svc = svc.clone();
                    async move { Ok::<_, Error>(svc) }
                }
            })
            .await;
        eprintln!("server ended: {served:?}");
    });
    std::process::exit(0);
}

/// A server child process; killed and reaped on drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Runs this executable again as the server: the test `test_name` (which calls
    /// [`serve_if_child`]) under `ulimit -n nofile` when given, allowing `max_connections`.
    /// Waits for its `listening on` line.
    pub fn start(
        test_name: &str,
        max_connections: usize,
        nofile: Option<u64>,
    ) -> io::Result<ServerProcess> {
        let exe = std::env::current_exe()?;
        let limit = nofile.map_or(String::new(), |n| format!("ulimit -n {n} && "));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(r#"{limit}exec "$0" "$@""#))
            .arg(exe)
            .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, max_connections.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            // The test harness may have begun the line with the test's name.
            .find_map(|l| l.split("listening on ").nth(1).map(str::to_owned))
            .and_then(|a| a.trim().parse().ok());
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let mut process = ServerProcess {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        process.addr = addr.ok_or_else(|| io::Error::other("the server did not start"))?;
        Ok(process)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `PING` as bytes on the wire.
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// Sends `PING` on a blocking stream and reads `+PONG` within `within`.
fn ping(stream: &mut std::net::TcpStream, within: Duration) -> io::Result<()> {
    stream.write_all(PING)?;
    expect_pong(stream, within)
}

fn expect_pong(stream: &mut std::net::TcpStream, within: Duration) -> io::Result<()> {
    stream.set_read_timeout(Some(within))?;
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf)?;
    if &buf != b"+PONG\r\n" {
        return Err(io::Error::other(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&buf)
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Clients

fn outcome(reply: &Result<Result<Frame, Error>, time::Elapsed>) -> Outcome {
    match reply {
        Ok(Ok(Frame::Error(msg))) if msg.starts_with(b"ERR overloaded") => Outcome::Overloaded,
        Ok(Ok(Frame::Error(_))) | Ok(Err(_)) | Err(_) => Outcome::Failed,
        Ok(Ok(_)) => Outcome::Ok,
    }
}

async fn connect_clients(addr: SocketAddr, n: usize) -> io::Result<Vec<Client<RespCodec>>> {
    let config = ClientConfig::default().max_in_flight(4096);
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect(addr).await?;
        clients.push(Client::with_config(stream, RespCodec::new(), &config));
    }
    Ok(clients)
}

fn get(i: u64) -> Frame {
    Frame::command(["GET".to_string(), format!("k{}", i % 100)])
}

/// Figures of one open-loop phase.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Requests offered.
    pub requests: u64,
    /// Answered.
    pub answered: u64,
    /// Refused with `-ERR overloaded`.
    pub overloaded: u64,
    /// Neither (another error, a broken connection, or no answer by the deadline).
    pub failed: u64,
    /// Answers (or refusals) that came after the request's deadline.
    pub late: u64,
    /// The answered requests' latency, from when each was due.
    pub admitted: Latencies,
    /// The refusals' latency, from when each was due.
    pub refused: Latencies,
    /// Outcomes per interval.
    pub timeline: Timeline,
    /// The peak resident memory of this process during the phase, in KiB.
    pub peak_rss_kib: u64,
}

/// Offers `rate` requests per second for `duration` over `clients`, open loop: each request is
/// due at its own time (a 1 ms interval timer issues the ones that came due), whether or not
/// earlier ones were answered, and its latency counts from when it was due.
async fn open_loop(
    clients: &[Client<RespCodec>],
    rate: u64,
    duration: Duration,
    deadline: Duration,
) -> Phase {
    let phase = Rc::new(RefCell::new(Phase {
        timeline: Timeline::new(Duration::from_millis(100)),
        ..Phase::default()
    }));
    let start = time::now();
    let total = (rate as u128 * duration.as_micros() / 1_000_000) as u64;
    let mut ticker = time::interval(Duration::from_millis(1));
    let mut sent = 0u64;
    let mut tasks = Vec::with_capacity(total as usize);
    let mut last_rss = start;
    while sent < total {
        let now = ticker.tick().await;
        if now.duration_since(last_rss) >= Duration::from_millis(100) {
            last_rss = now;
            let rss = rss_kib(std::process::id()).unwrap_or(0);
            let mut p = phase.borrow_mut();
            p.peak_rss_kib = p.peak_rss_kib.max(rss);
        }
        let elapsed = now.duration_since(start);
        let due_count = ((rate as u128 * elapsed.as_micros() / 1_000_000) as u64 + 1).min(total);
        while sent < due_count {
            let i = sent;
            sent += 1;
            let due = start + Duration::from_micros((i as u128 * 1_000_000 / rate as u128) as u64);
            let client = clients[i as usize % clients.len()].clone();
            let phase = phase.clone();
            tasks.push(sheave::spawn(async move {
                let reply = time::timeout_at(due + deadline, client.oneshot(get(i))).await;
                let end = time::now();
                let latency = end.saturating_duration_since(due);
                let o = outcome(&reply);
                let mut p = phase.borrow_mut();
                p.requests += 1;
                if latency > deadline {
                    p.late += 1;
                }
                match o {
                    Outcome::Ok => {
                        p.answered += 1;
                        p.admitted.push(latency);
                    }
                    Outcome::Overloaded => {
                        p.overloaded += 1;
                        p.refused.push(latency);
                    }
                    Outcome::Failed => p.failed += 1,
                }
                p.timeline.record(end.saturating_duration_since(start), o);
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let rss = rss_kib(std::process::id()).unwrap_or(0);
    let mut p = phase.borrow().clone();
    p.peak_rss_kib = p.peak_rss_kib.max(rss);
    p
}

// ---------------------------------------------------------------------------------------------
// Case 6: 10x overload

/// Case 6's knobs. The server's sustainable rate is `limit / delay` (the default: 10 calls of
/// 50 ms at once, 200 requests per second), whatever the machine.
#[derive(Debug, Clone)]
pub struct OverloadConfig {
    /// Each call takes this long.
    pub delay: Duration,
    /// Calls at once; beyond it, `Overloaded`.
    pub limit: usize,
    /// The unloaded phase offers this share of the sustainable rate.
    pub unloaded_share: f64,
    /// The unloaded phase lasts this long.
    pub unloaded_for: Duration,
    /// The overload phase offers this multiple of the sustainable rate...
    pub overload_factor: u64,
    /// ...for this long.
    pub overload_for: Duration,
    /// Every request's deadline, from when it was due.
    pub deadline: Duration,
    /// Client connections the requests spread over.
    pub connections: usize,
}

impl Default for OverloadConfig {
    /// 10 × 50 ms calls (200/s sustainable); 1 s at half of it, then 3 s at 10× (2,000/s, so
    /// 6,000 requests: the issue's 10 s shortened to keep CI short); a 250 ms deadline;
    /// 64 connections. The service time dominates the admitted latency, so scheduling noise
    /// on a busy machine (and a debug build) weighs little in the 2× promise.
    fn default() -> Self {
        OverloadConfig {
            delay: Duration::from_millis(50),
            limit: 10,
            unloaded_share: 0.5,
            unloaded_for: Duration::from_secs(1),
            overload_factor: 10,
            overload_for: Duration::from_secs(3),
            deadline: Duration::from_millis(250),
            connections: 64,
        }
    }
}

/// Case 6's figures.
#[derive(Debug, Clone)]
pub struct OverloadReport {
    /// The sustainable rate, requests per second.
    pub sustainable: u64,
    /// The unloaded phase.
    pub unloaded: Phase,
    /// The overload phase.
    pub overload: Phase,
    /// This process's resident memory before the overload, in KiB.
    pub rss_before_kib: u64,
}

/// Case 6: runs the unloaded phase, then the overload, against a server on thread 1 of `rt`
/// (which must have two threads); call from inside `rt.block_on`.
pub async fn overload(rt: &Handle, config: OverloadConfig) -> io::Result<OverloadReport> {
    let server = start_server(
        rt,
        1,
        ServerConfig {
            delay: config.delay,
            limit: config.limit,
            ..ServerConfig::default()
        },
    )?;
    let clients = connect_clients(server.addr, config.connections).await?;
    let sustainable = (config.limit as u128 * 1_000_000 / config.delay.as_micros().max(1)) as u64;
    let unloaded_rate = ((sustainable as f64 * config.unloaded_share) as u64).max(1);
    let unloaded = open_loop(
        &clients,
        unloaded_rate,
        config.unloaded_for,
        config.deadline,
    )
    .await;
    let rss_before_kib = rss_kib(std::process::id()).unwrap_or(0);
    let overload = open_loop(
        &clients,
        sustainable * config.overload_factor,
        config.overload_for,
        config.deadline,
    )
    .await;
    drop(clients);
    server.handle.shutdown();
    let _ = server.done.await;
    Ok(OverloadReport {
        sustainable,
        unloaded,
        overload,
        rss_before_kib,
    })
}

// ---------------------------------------------------------------------------------------------
// Case 7: graceful drain under load

/// Case 7's figures.
#[derive(Debug, Clone, Default)]
pub struct DrainReport {
    /// Requests sent, all of them in the service when the shutdown began.
    pub requests: u64,
    /// Answered with their own reply (`ECHO n` → `n`).
    pub answered: u64,
    /// Answered with another request's reply, or an unexpected one.
    pub wrong: u64,
    /// Not answered (the connection closed first, or no answer within the bound).
    pub lost: u64,
    /// Connection attempts after the shutdown, until the first refusal.
    pub probes: u64,
    /// Of those, refused by the kernel (the listener is closed).
    pub refused: u64,
    /// Of those, accepted before the listener closed and answered, then closed.
    pub served_then_closed: u64,
    /// Of those, accepted and closed without an answer.
    pub closed_unanswered: u64,
    /// Of those, neither answered nor closed within 5 s.
    pub hung: u64,
    /// From the shutdown to `serve` returning.
    pub drain_time: Duration,
    /// Answers per interval, from the shutdown.
    pub timeline: Timeline,
}

/// Case 7: `connections` × `per_connection` pipelined `ECHO n` requests are held in the service
/// (a closed gate) until all are in; the server shuts down; new connections are tried until
/// one is refused; then the gate opens (each call then takes `delay`) and every request is
/// checked against its answer. Runs the server on thread 1 of `rt`.
pub async fn drain(
    rt: &Handle,
    connections: usize,
    per_connection: usize,
    delay: Duration,
) -> io::Result<DrainReport> {
    let gate = Gate::closed();
    let server = start_server(
        rt,
        1,
        ServerConfig {
            delay,
            gate: gate.clone(),
            ..ServerConfig::default()
        },
    )?;
    let clients = connect_clients(server.addr, connections).await?;
    let requests = connections * per_connection;
    let report = Rc::new(RefCell::new(DrainReport {
        requests: requests as u64,
        timeline: Timeline::new(Duration::from_millis(100)),
        ..DrainReport::default()
    }));
    let started = Rc::new(RefCell::new(None::<Instant>));
    let mut tasks = Vec::with_capacity(requests);
    for i in 0..requests {
        let client = clients[i % connections].clone();
        let (report, started) = (report.clone(), started.clone());
        tasks.push(sheave::spawn(async move {
            let want = i.to_string();
            let req = Frame::command(["ECHO", want.as_str()]);
            let reply = time::timeout(Duration::from_secs(30), client.oneshot(req)).await;
            let since = started
                .borrow()
                .map_or(Duration::ZERO, |s: Instant| s.elapsed());
            let mut r = report.borrow_mut();
            let o = match reply {
                Ok(Ok(Frame::Bulk(b))) if b == want.as_bytes() => {
                    r.answered += 1;
                    Outcome::Ok
                }
                Ok(Ok(_)) => {
                    r.wrong += 1;
                    Outcome::Failed
                }
                Ok(Err(_)) | Err(_) => {
                    r.lost += 1;
                    Outcome::Failed
                }
            };
            r.timeline.record(since, o);
        }));
    }
    time::timeout(Duration::from_secs(30), gate.waiting_at_least(requests))
        .await
        .map_err(|_| io::Error::other(format!("only {} requests arrived", gate.waiting())))?;

    let shutdown_at = time::now();
    *started.borrow_mut() = Some(shutdown_at);
    server.handle.shutdown();
    // New connections: each is refused, or (accepted before the listener closed) answered or
    // closed — never left hanging. Until the first refusal, at most 1,000 tries.
    let mut probes = DrainReport::default();
    while probes.refused == 0 && probes.probes < 1_000 {
        probes.probes += 1;
        match TcpStream::connect(server.addr).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => probes.refused += 1,
            Err(_) => probes.closed_unanswered += 1,
            Ok(stream) => {
                let client = Client::pipeline(stream, RespCodec::new());
                let ping = Frame::command(["PING"]);
                match time::timeout(Duration::from_secs(5), client.oneshot(ping)).await {
                    Ok(Ok(_)) => probes.served_then_closed += 1,
                    Ok(Err(_)) => probes.closed_unanswered += 1,
                    Err(_) => probes.hung += 1,
                }
            }
        }
    }
    gate.open();
    for t in tasks {
        let _ = t.await;
    }
    let _ = time::timeout(Duration::from_secs(30), server.done).await;
    let drain_time = shutdown_at.elapsed();
    let mut r = report.borrow().clone();
    r.probes = probes.probes;
    r.refused = probes.refused;
    r.served_then_closed = probes.served_then_closed;
    r.closed_unanswered = probes.closed_unanswered;
    r.hung = probes.hung;
    r.drain_time = drain_time;
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Case 8: idle connections

/// Case 8's figures.
#[derive(Debug, Clone, Default)]
pub struct IdleReport {
    /// Idle connections held open.
    pub connections: usize,
    /// The server's resident memory with one connection, in KiB.
    pub rss_before_kib: u64,
    /// ... and with all of them, in KiB.
    pub rss_after_kib: u64,
    /// `(after - before) / connections`, in bytes.
    pub bytes_per_connection: u64,
    /// A fresh client's first `PING` round trip (connect included) meanwhile.
    pub fresh_ping: Duration,
    /// The server's open descriptors with all of them.
    pub server_fds: usize,
}

/// Case 8: opens `n` connections to a server process (in batches of 100, the last of each
/// batch pinged so the server has surely accepted the batch), measures its resident memory,
/// then times a fresh client's `PING`. `test_name` is the calling test (see
/// [`ServerProcess::start`]).
pub fn idle_connections(test_name: &str, n: usize) -> io::Result<IdleReport> {
    let server = ServerProcess::start(test_name, n + 100, None)?;
    let mut warm = std::net::TcpStream::connect(server.addr)?;
    ping(&mut warm, Duration::from_secs(10))?;
    let rss_before_kib = rss_kib(server.pid).ok_or_else(|| io::Error::other("no VmRSS"))?;
    let mut idle = Vec::with_capacity(n);
    while idle.len() < n {
        let batch = 100.min(n - idle.len());
        for _ in 0..batch {
            idle.push(std::net::TcpStream::connect(server.addr)?);
        }
        let last = idle.last_mut().expect("a batch");
        ping(last, Duration::from_secs(10))?;
    }
    // The pings went to the last of each batch; the server accepts in order, so it holds all.
    let rss_after_kib = rss_kib(server.pid).ok_or_else(|| io::Error::other("no VmRSS"))?;
    let server_fds = fd_count(server.pid).unwrap_or(0);
    let t = Instant::now();
    let mut fresh = std::net::TcpStream::connect(server.addr)?;
    ping(&mut fresh, Duration::from_secs(10))?;
    let fresh_ping = t.elapsed();
    Ok(IdleReport {
        connections: n,
        rss_before_kib,
        rss_after_kib,
        bytes_per_connection: rss_after_kib.saturating_sub(rss_before_kib) * 1024 / n as u64,
        fresh_ping,
        server_fds,
    })
}

// ---------------------------------------------------------------------------------------------
// Case 9: slow-loris

/// Closed-loop figures of a normal client.
#[derive(Debug, Clone, Default)]
pub struct Steady {
    /// Requests answered.
    pub answered: u64,
    /// Requests not answered.
    pub failed: u64,
    /// Answered per second.
    pub rate: f64,
    /// Round-trip latency.
    pub latency: Latencies,
}

/// `workers` loops of `GET` over one connection for `duration`.
async fn closed_loop(client: &Client<RespCodec>, workers: usize, duration: Duration) -> Steady {
    let steady = RefCell::new(Steady::default());
    let start = time::now();
    let until = start + duration;
    let loops = (0..workers).map(|w| {
        let steady = &steady;
        async move {
            let mut i = w as u64;
            while time::now() < until {
                let t = time::now();
                let reply = time::timeout(Duration::from_secs(5), client.oneshot(get(i))).await;
                let mut s = steady.borrow_mut();
                match reply {
                    Ok(Ok(Frame::Error(_))) | Ok(Err(_)) | Err(_) => s.failed += 1,
                    Ok(Ok(_)) => {
                        s.answered += 1;
                        s.latency.push(t.elapsed());
                    }
                }
                i += workers as u64;
            }
        }
    });
    join_all(loops).await;
    let mut s = steady.into_inner();
    s.rate = s.answered as f64 / start.elapsed().as_secs_f64();
    s
}

/// Case 9's figures.
#[derive(Debug, Clone, Default)]
pub struct LorisReport {
    /// Slow connections.
    pub slow: usize,
    /// Bytes each slow connection sent (one per second).
    pub bytes_each: usize,
    /// Connections the server held open while they dribbled (theirs and the normal one).
    pub server_connections: usize,
    /// The normal client alone.
    pub baseline: Steady,
    /// The normal client while the slow ones dribble.
    pub under_loris: Steady,
}

/// Case 9: a normal client (4 loops over one connection) for `baseline_for`; then `slow`
/// connections each send one byte of a `PING` per second for `seconds` seconds while the
/// normal client runs again. Runs the server on thread 1 of `rt`.
pub async fn slow_loris(
    rt: &Handle,
    slow: usize,
    seconds: usize,
    baseline_for: Duration,
) -> io::Result<LorisReport> {
    let server = start_server(rt, 1, ServerConfig::default())?;
    let normal = connect_clients(server.addr, 1).await?.remove(0);
    let baseline = closed_loop(&normal, 4, baseline_for).await;
    let mut lorises = Vec::with_capacity(slow);
    for _ in 0..slow {
        lorises.push(TcpStream::connect(server.addr).await?);
    }
    let bytes_each = seconds.min(PING.len() - 1);
    let dribble = async move {
        use futures::AsyncWriteExt;
        let mut tick = time::interval(Duration::from_secs(1));
        for i in 0..bytes_each {
            tick.tick().await;
            for s in lorises.iter_mut() {
                s.write_all(&PING[i..i + 1]).await?;
            }
        }
        Ok::<_, io::Error>(lorises)
    };
    let steady = closed_loop(&normal, 4, Duration::from_secs(seconds as u64));
    let (dribbled, under_loris) = futures::future::join(dribble, steady).await;
    let lorises = dribbled?;
    let server_connections = server.handle.connections();
    drop(lorises);
    drop(normal);
    server.handle.shutdown();
    let _ = server.done.await;
    Ok(LorisReport {
        slow,
        bytes_each,
        server_connections,
        baseline,
        under_loris,
    })
}

// ---------------------------------------------------------------------------------------------
// Case 10: descriptor exhaustion

/// Case 10's figures.
#[derive(Debug, Clone, Default)]
pub struct FdReport {
    /// The server's descriptor limit.
    pub limit: u64,
    /// Connections the server took before it ran out.
    pub held: usize,
    /// Connections waiting (in the kernel's queue) while it was out.
    pub waiting: usize,
    /// Of those, answered while it was out (must be none: it cannot accept them).
    pub answered_while_out: usize,
    /// How long the server was watched while out of descriptors.
    pub window: Duration,
    /// The server's CPU time over that window.
    pub cpu: Duration,
    /// From freeing the descriptors to the last waiting connection's answer.
    pub recovery: Duration,
    /// Whether a fresh client was then answered.
    pub fresh_answered: bool,
}

/// Case 10: a server process under `ulimit -n limit` takes connections (each pinged) until its
/// descriptors run out; `waiting` more connect and send `PING`, which it cannot accept; its CPU
/// time is read over `window`; then the held connections close and every waiting one must be
/// answered. `test_name` is the calling test (see [`ServerProcess::start`]).
pub fn fd_exhaustion(
    test_name: &str,
    limit: u64,
    waiting: usize,
    window: Duration,
) -> io::Result<FdReport> {
    let server = ServerProcess::start(test_name, 10_000, Some(limit))?;
    let mut held = vec![std::net::TcpStream::connect(server.addr)?];
    ping(&mut held[0], Duration::from_secs(10))?;
    let open =
        fd_slots_used(server.pid, limit).ok_or_else(|| io::Error::other("no /proc/<pid>/fd"))?;
    for _ in open as u64..limit {
        let mut s = std::net::TcpStream::connect(server.addr)?;
        ping(&mut s, Duration::from_secs(10))?;
        held.push(s);
    }
    let mut queued = Vec::with_capacity(waiting);
    for _ in 0..waiting {
        let mut s = std::net::TcpStream::connect(server.addr)?;
        s.write_all(PING)?;
        queued.push(s);
    }
    let full = fd_slots_used(server.pid, limit).unwrap_or(0);
    if full as u64 != limit {
        return Err(io::Error::other(format!(
            "the server holds {full} descriptors, not its limit {limit}"
        )));
    }
    // Watch it while it is out: no reply may come (it cannot accept), and its CPU time over
    // the window shows whether it spins. The wait is for a reply that must not arrive.
    let ticks_before = cpu_ticks(server.pid).unwrap_or(0);
    let t = Instant::now();
    let mut answered_while_out = 0;
    let mut probe = [0u8; 1];
    queued[0].set_read_timeout(Some(window))?;
    match queued[0].peek(&mut probe) {
        Ok(_) => answered_while_out += 1,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        Err(e) => return Err(e),
    }
    let watched = t.elapsed();
    let ticks = cpu_ticks(server.pid)
        .unwrap_or(0)
        .saturating_sub(ticks_before);
    for s in &mut queued[1..] {
        s.set_nonblocking(true)?;
        if s.peek(&mut probe).is_ok() {
            answered_while_out += 1;
        }
        s.set_nonblocking(false)?;
    }
    let cpu = Duration::from_micros(ticks * 1_000_000 / clock_ticks_per_second());
    let held_count = held.len();
    let freed = Instant::now();
    drop(held);
    for s in &mut queued {
        expect_pong(s, Duration::from_secs(10))?;
    }
    let recovery = freed.elapsed();
    let mut fresh = std::net::TcpStream::connect(server.addr)?;
    let fresh_answered = ping(&mut fresh, Duration::from_secs(10)).is_ok();
    Ok(FdReport {
        limit,
        held: held_count,
        waiting,
        answered_while_out,
        window: watched,
        cpu,
        recovery,
        fresh_answered,
    })
}
