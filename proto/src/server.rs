//! [`Server`]: listeners on every runtime thread, a dispatcher per connection, graceful shutdown.
//!
//! ```
//! use sheave_core::{Runtime, net::TcpStream};
//! use sheave_proto::{Server, codec::LinesCodec, dispatch::ClientConnection};
//! use sheave_service::{Error, ServiceExt, service_fn};
//! use std::net::SocketAddr;
//!
//! let rt = Runtime::new().unwrap();
//! rt.block_on(async {
//!     let server = Server::bind("127.0.0.1:0".parse().unwrap())
//!         .codec(LinesCodec::new())
//!         .build()
//!         .unwrap();
//!     let addr = server.local_addr();
//!     let handle = server.handle();
//!     // One service per connection; this one greets the peer by port.
//!     let serving = sheave_core::spawn(server.serve(|peer: SocketAddr| async move {
//!         Ok::<_, Error>(service_fn(move |name: String| async move {
//!             Ok::<_, Error>(format!("hello {name} from {}", peer.ip()))
//!         }))
//!     }));
//!     let client = ClientConnection::pipeline(TcpStream::connect(addr).await.unwrap(), LinesCodec::new());
//!     let reply = client.oneshot("ann".to_string()).await.unwrap();
//!     assert_eq!(reply, "hello ann from 127.0.0.1");
//!     handle.shutdown(); // stop accepting, drain, close
//!     serving.await.unwrap().unwrap();
//! });
//! ```

use crate::codec::{Decoder, Encoder};
use crate::dispatch::{Mode, Multiplex, Pipeline, ServerConnection};
use crate::framed::Framed;
use futures::future::{Either, select};
use sheave_core::net::{TcpListener, TcpStream};
use sheave_core::signal::Signals;
use sheave_core::sync::Notify;
use sheave_core::{Handle, JoinHandle, time};
use sheave_service::{Error, ErrorKind, NewService, Service};
use std::cell::Cell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A TCP server: start with [`Server::bind`], configure, [`build`](Builder::build) (which
/// binds), then [`serve`](Server::serve).
///
/// With [`threads(n)`](Builder::threads), every one of `n` runtime threads owns a listener on
/// the same port (`SO_REUSEPORT`; the kernel spreads connections) and serves its connections
/// itself, with its own services: nothing is shared between threads on the request path.
pub struct Server<C, M = Pipeline> {
    listener: TcpListener,
    /// Caught when [`Builder::shutdown_on_signals`] was asked for.
    signals: Option<Signals>,
    addr: SocketAddr,
    config: Config<C, M>,
    shared: Arc<Shared>,
}

/// Configures a [`Server`]; from [`Server::bind`].
pub struct Builder<C, M = Pipeline> {
    addr: SocketAddr,
    config: Config<C, M>,
}

struct Config<C, M> {
    codec: C,
    threads: usize,
    max_connections: usize,
    drain_timeout: Duration,
    on_signals: bool,
    conn: ServerConnection<M>,
}

impl<C: Clone, M> Clone for Config<C, M> {
    fn clone(&self) -> Self {
        Config {
            codec: self.codec.clone(),
            conn: self.conn.clone(),
            ..*self
        }
    }
}

impl<C: fmt::Debug, M> fmt::Debug for Config<C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("codec", &self.codec)
            .field("threads", &self.threads)
            .field("max_connections", &self.max_connections)
            .field("drain_timeout", &self.drain_timeout)
            .field("on_signals", &self.on_signals)
            .field("connection", &self.conn)
            .finish()
    }
}

impl<C: fmt::Debug, M> fmt::Debug for Builder<C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("addr", &self.addr)
            .field("config", &self.config)
            .finish()
    }
}

impl<C: fmt::Debug, M> fmt::Debug for Server<C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("config", &self.config)
            .finish()
    }
}

/// The default bound on open connections, across all threads.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The default idle timeout of a served connection: 5 minutes (see
/// [`ServerConnection::idle_timeout`]).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The default time a peer has to finish a frame once it has started: 30 s (see
/// [`ServerConnection::read_timeout`]).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time requests in flight have to finish on shutdown: 10 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Server<()> {
    /// Starts configuring a server on `addr` (port 0 picks a free port). Defaults: one
    /// thread, [`DEFAULT_MAX_CONNECTIONS`], the dispatcher's
    /// [in-flight](crate::dispatch::DEFAULT_MAX_IN_FLIGHT) and
    /// [write buffer](crate::dispatch::DEFAULT_MAX_WRITE_BUFFER) bounds,
    /// [`DEFAULT_IDLE_TIMEOUT`], [`DEFAULT_READ_TIMEOUT`], [`DEFAULT_DRAIN_TIMEOUT`]. Every
    /// connection has both timeouts: a server must not keep what a peer abandoned or trickles.
    ///
    /// Settings survive every other builder call, [`codec`](Builder::codec) and
    /// [`multiplex`](Builder::multiplex) included: call them in any order.
    pub fn bind(addr: SocketAddr) -> Builder<(), Pipeline> {
        Builder {
            addr,
            config: Config {
                codec: (),
                threads: 1,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                drain_timeout: DEFAULT_DRAIN_TIMEOUT,
                on_signals: false,
                conn: ServerConnection::pipeline()
                    .idle_timeout(DEFAULT_IDLE_TIMEOUT)
                    .read_timeout(DEFAULT_READ_TIMEOUT),
            },
        }
    }
}

impl<C, M> Config<C, M> {
    /// The same settings with the codec mapped and in dispatch mode `M2`.
    fn convert<C2, M2>(self, codec: impl FnOnce(C) -> C2) -> Config<C2, M2> {
        Config {
            codec: codec(self.codec),
            threads: self.threads,
            max_connections: self.max_connections,
            drain_timeout: self.drain_timeout,
            on_signals: self.on_signals,
            conn: self.conn.into_mode(),
        }
    }
}

impl<C, M> Builder<C, M> {
    /// Frames every connection with a clone of `codec`.
    pub fn codec<C2>(self, codec: C2) -> Builder<C2, M> {
        Builder {
            addr: self.addr,
            config: self.config.convert(|_| codec),
        }
    }

    /// Serves with the multiplexed dispatcher (request ids in the frames) instead of the
    /// pipelined one. Every setting made before it is kept: the mode is a type switch only.
    pub fn multiplex(self) -> Builder<C, Multiplex> {
        Builder {
            addr: self.addr,
            config: self.config.convert(|codec| codec),
        }
    }

    /// Listens and serves on this many runtime threads (at most the runtime's; at least 1).
    pub fn threads(mut self, n: usize) -> Self {
        self.config.threads = n.max(1);
        self
    }

    /// Closes connections accepted beyond this many open ones (across all threads).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// See [`ServerConnection::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.conn = self.config.conn.idle_timeout(timeout);
        self
    }

    /// See [`ServerConnection::read_timeout`] (the slow-loris guard).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.config.conn = self.config.conn.read_timeout(timeout);
        self
    }

    /// See [`ServerConnection::max_in_flight`].
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.conn = self.config.conn.max_in_flight(n);
        self
    }

    /// See [`ServerConnection::max_write_buffer`].
    pub fn max_write_buffer(mut self, bytes: usize) -> Self {
        self.config.conn = self.config.conn.max_write_buffer(bytes);
        self
    }

    /// On shutdown, how long requests in flight may take to finish before their connections
    /// are dropped.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.drain_timeout = timeout;
        self
    }

    /// Shuts down gracefully (as [`ServerHandle::shutdown`]) on `SIGTERM` or `SIGINT`: the
    /// server stops accepting, answers every request it has taken (within the
    /// [drain timeout](Builder::drain_timeout)), closes its connections, and
    /// [`serve`](Server::serve) returns. The signals are caught from [`build`](Builder::build)
    /// on, for the rest of the process (see [`sheave_core::signal`]).
    pub fn shutdown_on_signals(mut self) -> Self {
        self.config.on_signals = true;
        self
    }

    /// Binds the listener of the calling runtime thread (the others bind in
    /// [`serve`](Server::serve), on the port learnt here).
    ///
    /// # Panics
    /// Outside a runtime thread.
    pub fn build(self) -> io::Result<Server<C, M>> {
        let threads = self.config.threads.min(Handle::current().threads());
        let listener = if threads > 1 {
            TcpListener::bind_reuse_port(self.addr)?
        } else {
            TcpListener::bind(self.addr)?
        };
        let addr = listener.local_addr()?;
        let signals = match self.config.on_signals {
            true => Some(Signals::new()?),
            false => None,
        };
        let mut config = self.config;
        config.threads = threads;
        Ok(Server {
            listener,
            signals,
            addr,
            config,
            shared: Arc::new(Shared::default()),
        })
    }
}

/// State shared by every thread of one server.
#[derive(Default)]
struct Shared {
    shutdown: AtomicBool,
    /// Notified once `shutdown` is set.
    stopping: Notify,
    connections: AtomicUsize,
}

impl Shared {
    async fn shutdown_signal(&self) {
        let stopping = self.stopping.notified(); // before the check: nothing is missed
        if !self.shutdown.load(Ordering::Acquire) {
            stopping.await;
        }
    }
}

/// Controls a running [`Server`] from any thread: `Send + Sync + Clone`.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("connections", &self.connections())
            .field("shutdown", &self.shared.shutdown.load(Ordering::Relaxed))
            .finish()
    }
}

impl ServerHandle {
    /// Starts a graceful shutdown: every thread stops accepting, lets the requests in flight
    /// finish (up to the drain timeout), writes their responses, closes the connections, and
    /// [`serve`](Server::serve) returns.
    pub fn shutdown(&self) {
        if !self.shared.shutdown.swap(true, Ordering::AcqRel) {
            self.shared.stopping.notify_waiters();
        }
    }

    /// How many connections are open, across all threads.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl<C, M> Server<C, M> {
    /// The bound address (with the port the kernel picked, if it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to shut the server down and count its connections.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<C, M> Server<C, M>
where
    C: Decoder + Clone + Send + 'static,
    M: Send + Sync + 'static,
{
    /// Serves until [`ServerHandle::shutdown`]: each connection gets its own service from
    /// `new_service`, called with the peer's address; each thread uses its own clone of
    /// `new_service`.
    pub async fn serve<N, S>(self, new_service: N) -> io::Result<()>
    where
        N: NewService<SocketAddr, Service = S> + Clone + Send + Sync + 'static,
        N::Error: fmt::Display,
        S: Service<C::Item> + 'static,
        S::Error: Into<Error>,
        C: Encoder<S::Response>,
        M: Mode<C::Item, S::Response>,
    {
        self.serve_with(move || new_service.clone()).await
    }

    /// Like [`serve`](Server::serve), but each thread builds its own `NewService` by calling
    /// `per_thread` once, on that thread: per-thread state (a cache, a connection pool) is then
    /// plain `Rc`/`RefCell`, and the `NewService` need not be `Send`.
    pub async fn serve_with<F, N, S>(self, per_thread: F) -> io::Result<()>
    where
        F: Fn() -> N + Send + Sync + 'static,
        N: NewService<SocketAddr, Service = S> + 'static,
        N::Error: fmt::Display,
        S: Service<C::Item> + 'static,
        S::Error: Into<Error>,
        C: Encoder<S::Response>,
        M: Mode<C::Item, S::Response>,
    {
        // A codec need only be `Send`; each thread takes its clone once, at start.
        let config = Mutex::new((self.config.codec.clone(), self.config.conn.clone()));
        self.serve_driver(move || {
            let (codec, conn) = sheave_core::sync::lock(&config).clone();
            CodecDriver {
                new_service: per_thread(),
                codec,
                conn,
            }
        })
        .await
    }
}

/// Serves one accepted connection: what a protocol plugs into [`Server`] with
/// [`serve_driver`](Server::serve_driver). The server keeps accept, threads,
/// `max_connections` and the drain; the driver owns everything on the wire. The codec
/// dispatcher of [`serve`](Server::serve) is one driver; an HTTP engine is another.
///
/// ```
/// use sheave_core::{Runtime, net::TcpStream};
/// use sheave_proto::{Driver, Server};
/// use std::net::SocketAddr;
///
/// /// Greets each peer with its own address, then closes.
/// struct Greet;
///
/// impl Driver for Greet {
///     async fn drive(&self, stream: TcpStream, peer: SocketAddr, _drain: impl Future<Output = ()>) {
///         let _ = stream.write(format!("hello {peer}\n").as_bytes()).await;
///     }
/// }
///
/// let rt = Runtime::new().unwrap();
/// rt.block_on(async {
///     let server = Server::bind("127.0.0.1:0".parse().unwrap()).build().unwrap();
///     let (addr, handle) = (server.local_addr(), server.handle());
///     let serving = sheave_core::spawn(server.serve_driver(|| Greet));
///     let conn = TcpStream::connect(addr).await.unwrap();
///     let mut buf = [0; 64];
///     let n = conn.read(&mut buf).await.unwrap();
///     let greeting = String::from_utf8_lossy(&buf[..n]).into_owned();
///     assert_eq!(greeting, format!("hello {}\n", conn.local_addr().unwrap()));
///     handle.shutdown();
///     serving.await.unwrap().unwrap();
/// });
/// ```
pub trait Driver {
    /// Serves `stream` (from `peer`) until it ends. Once `drain` completes, the server is
    /// shutting down: take no new request, finish the ones taken, and return (the server
    /// drops what is left after its drain timeout).
    fn drive(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        drain: impl Future<Output = ()>,
    ) -> impl Future<Output = ()>;
}

/// The driver of [`Server::serve`]: frames the stream with the codec and serves it with the
/// dispatcher, one service per connection.
struct CodecDriver<N, C, M> {
    new_service: N,
    codec: C,
    conn: ServerConnection<M>,
}

impl<N, C, M, S> Driver for CodecDriver<N, C, M>
where
    C: Decoder + Encoder<S::Response> + Clone,
    M: Mode<C::Item, S::Response>,
    N: NewService<SocketAddr, Service = S>,
    N::Error: fmt::Display,
    S: Service<C::Item>,
    S::Error: Into<Error>,
{
    async fn drive(&self, stream: TcpStream, peer: SocketAddr, drain: impl Future<Output = ()>) {
        let service = match self.new_service.new_service(peer).await {
            Ok(service) => service,
            Err(e) => return log::warn!("{peer}: no service: {e}"),
        };
        let framed = Framed::new(stream, self.codec.clone());
        match self.conn.serve_until(framed, service, drain).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Protocol => {
                log::warn!("{peer}: closing connection: {e}")
            }
            Err(e) => log::debug!("{peer}: connection ended: {e}"),
        }
    }
}

impl<C, M> Server<C, M>
where
    C: Clone + Send + 'static,
    M: Send + Sync + 'static,
{
    /// Serves until [`ServerHandle::shutdown`], each connection by a [`Driver`]: each thread
    /// builds its own by calling `per_thread` once, on that thread (so it need not be `Send`).
    pub async fn serve_driver<F, D>(self, per_thread: F) -> io::Result<()>
    where
        F: Fn() -> D + Send + Sync + 'static,
        D: Driver + 'static,
    {
        let handle = Handle::current();
        let here = Handle::thread_index().unwrap_or(0);
        let on_signal = self.signals.map(|mut signals| {
            let shared = self.shared.clone();
            sheave_core::spawn(async move {
                let stopped = pin!(shared.shutdown_signal());
                if let Either::Left((signal, _)) = select(pin!(signals.recv()), stopped).await {
                    log::info!("{signal}: shutting down");
                    ServerHandle {
                        shared: shared.clone(),
                    }
                    .shutdown();
                }
            })
        });
        let per_thread = Arc::new(per_thread);
        let limits = Limits {
            max_connections: self.config.max_connections,
            drain_timeout: self.config.drain_timeout,
        };
        let mut others = Vec::new();
        for i in 1..self.config.threads {
            let thread = (here + i) % handle.threads();
            let (per_thread, shared, addr) = (per_thread.clone(), self.shared.clone(), self.addr);
            others.push(handle.spawn_with(thread, move || async move {
                let listener = TcpListener::bind_reuse_port(addr)?;
                accept_loop(listener, per_thread(), limits, shared).await;
                Ok::<_, io::Error>(())
            }));
        }
        accept_loop(self.listener, per_thread(), limits, self.shared.clone()).await;
        if let Some(task) = on_signal {
            task.abort();
        }
        let mut result = Ok(());
        for other in others {
            match other.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(io::Error::other(e)),
            }
        }
        result
    }
}

/// What the accept loop of every thread enforces.
#[derive(Clone, Copy)]
struct Limits {
    max_connections: usize,
    drain_timeout: Duration,
}

/// Per-thread drain state: set once the server shuts down; connections wait on it. A waiting
/// connection that ends leaves no waker behind (a server with short connections would
/// otherwise keep one per connection ever accepted).
#[derive(Default)]
struct Drain {
    draining: Cell<bool>,
    /// Notified once `draining` is set.
    started: Notify,
}

impl Drain {
    fn start(&self) {
        self.draining.set(true);
        self.started.notify_waiters();
    }

    async fn wait(&self) {
        let started = self.started.notified(); // before the check: nothing is missed
        if !self.draining.get() {
            started.await;
        }
    }
}

/// Counts a connection while it lives (also when its task is aborted).
struct Counted(Arc<Shared>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts on one thread until shutdown, then drains that thread's connections.
async fn accept_loop<D: Driver + 'static>(
    listener: TcpListener,
    driver: D,
    limits: Limits,
    shared: Arc<Shared>,
) {
    let driver = Rc::new(driver);
    let drain = Rc::new(Drain::default());
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let mut shutdown = pin!(shared.shutdown_signal());
    loop {
        let accepted = match select(pin!(listener.accept()), shutdown.as_mut()).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(_) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("accept failed: {e}");
                continue;
            }
        };
        if shared.connections.fetch_add(1, Ordering::Relaxed) >= limits.max_connections {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            log::warn!(
                "{peer}: refused, {} connections open",
                limits.max_connections
            );
            continue;
        }
        let counted = Counted(shared.clone());
        let _ = stream.set_nodelay(true);
        let (driver, drain) = (driver.clone(), drain.clone());
        if tasks.len() >= 64 && tasks.len().is_power_of_two() {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(sheave_core::spawn(async move {
            let _counted = counted;
            driver.drive(stream, peer, drain.wait()).await;
        }));
    }
    drop(listener);
    drain.start();
    let all = async {
        for task in tasks.iter_mut() {
            let _ = task.await;
        }
    };
    if time::timeout(limits.drain_timeout, all).await.is_err() {
        let left = tasks.iter().filter(|t| !t.is_finished()).count();
        log::warn!("drain timeout: dropping {left} connections");
    }
    for task in &tasks {
        task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_multiplex_and_codec_in_any_order() {
        // Regression (issue 10): `multiplex()` reset the per-connection settings.
        let custom = Server::bind("127.0.0.1:0".parse().unwrap())
            .max_in_flight(7)
            .idle_timeout(Duration::from_secs(3))
            .read_timeout(Duration::from_secs(2))
            .max_write_buffer(1234)
            .threads(3)
            .max_connections(9)
            .drain_timeout(Duration::from_secs(4))
            .shutdown_on_signals()
            .multiplex()
            .codec(crate::codec::LinesCodec::new());
        let shown = format!("{custom:?}");
        for setting in [
            "max_in_flight: 7",
            "idle_timeout: Some(3s)",
            "read_timeout: Some(2s)",
            "max_write_buffer: 1234",
            "threads: 3",
            "max_connections: 9",
            "drain_timeout: 4s",
            "on_signals: true",
            "Multiplex",
        ] {
            assert!(shown.contains(setting), "{setting} lost: {shown}");
        }
        let defaults = format!(
            "{:?}",
            Server::bind("127.0.0.1:0".parse().unwrap()).multiplex()
        );
        assert!(defaults.contains("idle_timeout: Some(300s)"), "{defaults}");
        assert!(defaults.contains("read_timeout: Some(30s)"), "{defaults}");
    }

    #[test]
    fn connections_that_end_leave_no_drain_waiter_behind() {
        // Regression (review): each connection's waker stayed until shutdown, so a server
        // with short connections grew by one waker per connection ever accepted.
        let drain = Drain::default();
        for _ in 0..100 {
            let mut wait = Box::pin(drain.wait());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(drain.started.waiters(), 0);
        let mut wait = Box::pin(drain.wait());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        drain.start();
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }
}
