//! The server under test: the kv stack (shed, limit, slow kv) in this process or a child.

use super::super::kv::{Kv, KvService};
use sheave::Handle;
use sheave::service::{Error, Service, TryReady};
use sheave::time;
use sheave_middleware::{ConcurrencyLimit, LoadShed};
use sheave_proto::resp::{Frame, RespCodec};
use sheave_proto::{Server, ServerHandle};
use std::future::poll_fn;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

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
pub(super) fn stack(config: &ServerConfig, kv: &Kv) -> LoadShed<ConcurrencyLimit<SlowKv>> {
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
    let ((addr, handle), done) = super::super::bound_on(rt, thread, move || {
        let server = bind(&config)?;
        let bound = (server.local_addr(), server.handle());
        let serve = async move {
            if let Err(e) = serve(server, config).await {
                eprintln!("server: {e}");
            }
        };
        Ok((bound, serve))
    })?;
    Ok(RunningServer { addr, handle, done })
}

/// The server under test, bound on a free loopback port.
fn bind(config: &ServerConfig) -> io::Result<Server<RespCodec>> {
    Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .codec(RespCodec::new())
        .max_connections(config.max_connections)
        .build()
}

/// Serves [`stack`] over one store until the server is shut down.
async fn serve(server: Server<RespCodec>, config: ServerConfig) -> io::Result<()> {
    let kv = Kv::new();
    server
        .serve_with(move || {
            let svc = stack(&config, &kv);
            move |_peer: SocketAddr| {
                let svc = svc.clone();
                async move { Ok::<_, Error>(svc) }
            }
        })
        .await
}

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
        let server = bind(&config).expect("bind");
        println!("listening on {}", server.local_addr());
        let served = serve(server, config).await;
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
pub(super) const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// Sends `PING` on a blocking stream and reads `+PONG` within `within`.
pub(super) fn ping(stream: &mut std::net::TcpStream, within: Duration) -> io::Result<()> {
    stream.write_all(PING)?;
    expect_pong(stream, within)
}

pub(super) fn expect_pong(stream: &mut std::net::TcpStream, within: Duration) -> io::Result<()> {
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
