//! [`Server`]: HTTP/1.1 and HTTP/2 (prior knowledge, h2c) on one port, told apart by the
//! client preface, with a sheave [`Service`] as the handler.
//!
//! The server is a [`sheave_proto::Server`] with an HTTP [`Driver`]: threads, `SO_REUSEPORT`,
//! `max_connections` and the graceful drain are its. Each connection gets its own service from
//! a [`NewService`] that sees the peer's address; the service takes
//! `http::Request<`[`Body`]`>` and answers `http::Response<B>` for any [`http_body::Body`]
//! `B`, so every sheave middleware wraps it unchanged.
//!
//! Errors become answers, and the connection stays up: a `Timeout` is 504; a readiness error
//! (shed, limit, open breaker) and an `Overloaded`/`Unavailable`/`Closed` error are 503 with
//! `Retry-After`; a body that broke its framing is 400 and one past the
//! [body limit](Builder::max_body) is 413 (a declared `Content-Length` over it is refused before
//! the handler runs). A request whose header does not arrive within the
//! [header read timeout](Builder::header_read_timeout) is answered 408 and closed. Limits are
//! on by default: see [`Builder`].
//!
//! On shutdown an HTTP/1.1 connection answers its request in flight with `Connection: close`;
//! an HTTP/2 connection sends GOAWAY, finishes its open streams, then closes.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use sheave_core::Runtime;
//! use sheave_http::{Body, Server};
//! use sheave_service::{Error, service_fn};
//! use std::io::{Read, Write};
//! use std::net::SocketAddr;
//!
//! let (tx, rx) = std::sync::mpsc::channel();
//! let serving = std::thread::spawn(move || {
//!     Runtime::new().unwrap().block_on(async {
//!         let server = Server::bind("127.0.0.1:0".parse().unwrap()).build().unwrap();
//!         tx.send((server.local_addr(), server.handle())).unwrap();
//!         server
//!             .serve(|_peer: SocketAddr| async move {
//!                 Ok::<_, Error>(service_fn(|_req: http::Request<Body>| async move {
//!                     Ok::<_, Error>(http::Response::new(Full::new(Bytes::from("hello"))))
//!                 }))
//!             })
//!             .await
//!             .unwrap();
//!     })
//! });
//! let (addr, handle) = rx.recv().unwrap();
//! // Any HTTP client will do: here a blocking socket.
//! let mut conn = std::net::TcpStream::connect(addr).unwrap();
//! conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
//! let mut reply = String::new();
//! conn.read_to_string(&mut reply).unwrap();
//! assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
//! assert!(reply.ends_with("hello"));
//! handle.shutdown(); // graceful: stop accepting, finish, close
//! serving.join().unwrap();
//! ```

use crate::body::{Body, Fault, FaultCell};
use crate::rt::{Flushing, Io, LocalExec, Timer, write_all};
use bytes::Bytes;
use futures::future::{Either, select};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use sheave_core::net::TcpStream;
use sheave_core::time;
use sheave_proto::server::Driver;
use sheave_proto::{Server as TcpServer, ServerHandle};
use sheave_service::{BoxError, Error, ErrorKind, NewService, Service, TryReady};
use std::cell::Cell;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

/// The HTTP/2 client preface: a connection that starts with it speaks HTTP/2.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The default bound on a request's header block: 16 KiB (431 past it on HTTP/1.1).
pub const DEFAULT_MAX_HEADER_SIZE: usize = 16 * 1024;
/// The default bound on a request body: 4 MiB (413 past it).
pub const DEFAULT_MAX_BODY: u64 = 4 * 1024 * 1024;
/// The default time a client has to send a request's headers: 30 s. On HTTP/1.1 it runs
/// from the moment the connection waits for a request, so it is also the keep-alive idle
/// timeout.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The default bound on concurrent HTTP/2 streams per connection: 100.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// The default bound on HTTP/2 streams reset by the client before the server took them: 20
/// (the rapid-reset guard; past it the connection is closed with GOAWAY).
pub const DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// The default `Retry-After` of a 503: 1 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The settings of every HTTP connection of a [`Server`].
#[derive(Debug, Clone)]
struct Config {
    max_header_size: usize,
    max_body: u64,
    header_read_timeout: Duration,
    max_concurrent_streams: u32,
    max_pending_accept_reset_streams: usize,
    retry_after: Duration,
    http2: bool,
}

/// An HTTP server: [`Server::bind`], configure, [`build`](Builder::build), then
/// [`serve`](Server::serve).
pub struct Server {
    inner: TcpServer<()>,
    config: Config,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("tcp", &self.inner)
            .field("http", &self.config)
            .finish()
    }
}

/// Configures a [`Server`]; from [`Server::bind`]. Every limit is on by default.
pub struct Builder {
    inner: sheave_proto::server::Builder<()>,
    config: Config,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("tcp", &self.inner)
            .field("http", &self.config)
            .finish()
    }
}

impl Server {
    /// Starts configuring a server on `addr` (port 0 picks a free port), with
    /// [`DEFAULT_MAX_HEADER_SIZE`], [`DEFAULT_MAX_BODY`], [`DEFAULT_HEADER_READ_TIMEOUT`],
    /// [`DEFAULT_MAX_CONCURRENT_STREAMS`], [`DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS`],
    /// [`DEFAULT_RETRY_AFTER`], and the TCP defaults of [`sheave_proto::Server::bind`].
    pub fn bind(addr: SocketAddr) -> Builder {
        Builder {
            inner: TcpServer::bind(addr),
            config: Config {
                max_header_size: DEFAULT_MAX_HEADER_SIZE,
                max_body: DEFAULT_MAX_BODY,
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
                max_pending_accept_reset_streams: DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS,
                retry_after: DEFAULT_RETRY_AFTER,
                http2: true,
            },
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// A handle to shut the server down (gracefully) and count its connections.
    pub fn handle(&self) -> ServerHandle {
        self.inner.handle()
    }

    /// Serves until [`ServerHandle::shutdown`]; each thread uses a clone of `new_service`.
    pub async fn serve<N, S, B>(self, new_service: N) -> io::Result<()>
    where
        N: NewService<SocketAddr, Service = S> + Clone + Send + Sync + 'static,
        N::Error: fmt::Display,
        S: Service<Request<Body>, Response = Response<B>> + 'static,
        S::Error: Into<Error>,
        B: http_body::Body<Data = Bytes> + 'static,
        B::Error: Into<BoxError>,
    {
        self.serve_with(move || new_service.clone()).await
    }

    /// Like [`serve`](Server::serve), with a `NewService` built once per thread, on it.
    pub async fn serve_with<F, N, S, B>(self, per_thread: F) -> io::Result<()>
    where
        F: Fn() -> N + Send + Sync + 'static,
        N: NewService<SocketAddr, Service = S> + 'static,
        N::Error: fmt::Display,
        S: Service<Request<Body>, Response = Response<B>> + 'static,
        S::Error: Into<Error>,
        B: http_body::Body<Data = Bytes> + 'static,
        B::Error: Into<BoxError>,
    {
        let config = self.config;
        self.inner
            .serve_driver(move || HttpDriver {
                new_service: per_thread(),
                config: Rc::new(config.clone()),
            })
            .await
    }
}

impl Builder {
    /// Listens and serves on this many runtime threads.
    pub fn threads(mut self, n: usize) -> Self {
        self.inner = self.inner.threads(n);
        self
    }

    /// Closes connections accepted beyond this many open ones.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.inner = self.inner.max_connections(n);
        self
    }

    /// On shutdown, how long requests in flight may take before their connections are dropped.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.inner = self.inner.drain_timeout(timeout);
        self
    }

    /// Shuts down gracefully on `SIGTERM` or `SIGINT`.
    pub fn shutdown_on_signals(mut self) -> Self {
        self.inner = self.inner.shutdown_on_signals();
        self
    }

    /// The largest request header block, start line included: HTTP/1.1 answers 431 past it and
    /// closes; HTTP/2 refuses the stream (it is the `SETTINGS_MAX_HEADER_LIST_SIZE` too).
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.config.max_header_size = bytes;
        self
    }

    /// The largest request body: a larger declared `Content-Length` is answered 413 at once;
    /// a body that grows past it while streaming fails the next read, and 413 is answered.
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.config.max_body = bytes;
        self
    }

    /// How long a client has to send a request's headers (and, on HTTP/1.1, how long a
    /// kept-alive connection may wait idle for its next request).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_read_timeout = timeout;
        self
    }

    /// How many HTTP/2 streams a connection may have open at once.
    pub fn max_concurrent_streams(mut self, n: u32) -> Self {
        self.config.max_concurrent_streams = n;
        self
    }

    /// How many HTTP/2 streams reset by the client before the server took them may be queued
    /// (the rapid-reset guard).
    pub fn max_pending_accept_reset_streams(mut self, n: usize) -> Self {
        self.config.max_pending_accept_reset_streams = n;
        self
    }

    /// Whether to serve HTTP/2 prior knowledge (h2c) beside HTTP/1.1; on by default. Off, a
    /// connection that opens with the HTTP/2 preface is handed to HTTP/1.1, which refuses it
    /// and closes: an HTTP/1.1-only server, as a client's [`Version::Auto`] probe sees one.
    ///
    /// [`Version::Auto`]: crate::client::Version::Auto
    pub fn http2(mut self, enabled: bool) -> Self {
        self.config.http2 = enabled;
        self
    }

    /// The `Retry-After` of the 503s this server answers.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.config.retry_after = after;
        self
    }

    /// Binds the listener. Fails on an impossible configuration (a zero limit or timeout).
    ///
    /// # Panics
    /// Outside a runtime thread.
    pub fn build(self) -> io::Result<Server> {
        let c = &self.config;
        let invalid = |what: &str| {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                what.to_string(),
            ))
        };
        if c.max_header_size < 1024 {
            return invalid("max_header_size must be at least 1024 bytes");
        }
        if c.header_read_timeout.is_zero() {
            return invalid("header_read_timeout must not be zero");
        }
        if c.max_concurrent_streams == 0 {
            return invalid("max_concurrent_streams must be at least 1");
        }
        Ok(Server {
            inner: self.inner.build()?,
            config: self.config,
        })
    }
}

/// Serves one connection with hyper: HTTP/2 if it starts with the preface, else HTTP/1.1.
struct HttpDriver<N> {
    new_service: N,
    config: Rc<Config>,
}

impl<N, S, B> Driver for HttpDriver<N>
where
    N: NewService<SocketAddr, Service = S>,
    N::Error: fmt::Display,
    S: Service<Request<Body>, Response = Response<B>> + 'static,
    S::Error: Into<Error>,
    B: http_body::Body<Data = Bytes> + 'static,
    B::Error: Into<BoxError>,
{
    async fn drive(&self, stream: TcpStream, peer: SocketAddr, drain: impl Future<Output = ()>) {
        let config = &self.config;
        let service = match self.new_service.new_service(peer).await {
            Ok(service) => service,
            Err(e) => return log::warn!("{peer}: no service: {e}"),
        };
        let mut drain = pin!(drain);
        let sniffed = {
            let sniffing = pin!(time::timeout(config.header_read_timeout, sniff(&stream)));
            match select(sniffing, drain.as_mut()).await {
                Either::Left((sniffed, _)) => sniffed,
                Either::Right(_) => return, // draining before the first request
            }
        };
        let (h2, prefix) = match sniffed {
            Ok(Ok(Some(sniffed))) => sniffed,
            Ok(Ok(None)) => return, // closed
            Ok(Err(e)) => return log::debug!("{peer}: {e}"),
            Err(_) => return log::debug!("{peer}: no request in time"),
        };
        let h2 = h2 && config.http2;
        let mut io = Io::with_prefix(stream, prefix);
        let (stream, partial) = io.watch();
        let adapter = Adapter {
            service: Rc::new(service),
            config: config.clone(),
            handle: handle::<S, B>,
        };
        let served = if h2 {
            let conn = hyper::server::conn::http2::Builder::new(LocalExec)
                .timer(Timer)
                .max_concurrent_streams(config.max_concurrent_streams)
                .max_pending_accept_reset_streams(config.max_pending_accept_reset_streams)
                .max_header_list_size(config.max_header_size as u32)
                .serve_connection(io, adapter);
            // h2 buffers its own frames and writes them in batches: no gathering here.
            let mut conn = pin!(conn);
            match select(conn.as_mut(), drain).await {
                Either::Left((done, _)) => done,
                Either::Right(((), _)) => {
                    conn.as_mut().graceful_shutdown(); // GOAWAY, then finish the open streams
                    conn.await
                }
            }
        } else {
            // hyper flushes each HTTP/1.1 response: gather them per poll (see `rt`).
            let outbox = io.coalesce();
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(Timer)
                .header_read_timeout(config.header_read_timeout)
                .max_header_size(config.max_header_size)
                .max_buf_size(config.max_header_size.max(8192) * 2)
                .serve_connection(io, adapter);
            let mut conn = pin!(Flushing::new(conn, outbox));
            match select(conn.as_mut(), drain).await {
                Either::Left((done, _)) => done,
                Either::Right(((), _)) => {
                    // `Connection: close` on the request in flight
                    conn.as_mut().conn().graceful_shutdown();
                    conn.await
                }
            }
        };
        if let Err(e) = served {
            if !h2 && e.is_timeout() && partial.get() {
                // hyper closes on a header read timeout without a word: say 408 first.
                let _ = time::timeout(Duration::from_secs(1), write_all(&stream, TIMED_OUT)).await;
            }
            if e.is_parse() || e.is_parse_status() || e.is_timeout() {
                log::warn!("{peer}: closing connection: {e}");
            } else {
                log::debug!("{peer}: connection ended: {e}");
            }
        }
    }
}

/// The answer to a request whose header did not arrive in time.
const TIMED_OUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Reads until the bytes diverge from the HTTP/2 preface or match all of it. `None`: the
/// peer closed first.
async fn sniff(stream: &TcpStream) -> io::Result<Option<(bool, Bytes)>> {
    let mut buf = [0u8; PREFACE.len()];
    let mut n = 0;
    loop {
        let got = stream.read(&mut buf[n..]).await?;
        if got == 0 {
            return Ok(None);
        }
        n += got;
        if buf[..n] != PREFACE[..n] {
            return Ok(Some((false, Bytes::copy_from_slice(&buf[..n]))));
        }
        if n == PREFACE.len() {
            return Ok(Some((true, Bytes::copy_from_slice(&buf))));
        }
    }
}

/// The body of every response: the handler's, or one of ours (an error's status).
type ResponseBody<B> = http_body_util::Either<B, Full<Bytes>>;

/// A sheave service as hyper's. `handle` is the function [`handle`] itself: through it the
/// type of its future (an `async fn`'s, which cannot be written down) becomes hyper's
/// `Service::Future`, so no request's future is boxed. (hyper's HTTP/1.1 dispatcher keeps one
/// future slot per connection and reuses it; HTTP/2 spawns one task per stream either way.)
struct Adapter<S, H> {
    service: Rc<S>,
    config: Rc<Config>,
    handle: H,
}

impl<S, H, F, B> hyper::service::Service<Request<hyper::body::Incoming>> for Adapter<S, H>
where
    H: Fn(Rc<S>, Rc<Config>, Request<hyper::body::Incoming>) -> F,
    F: Future<Output = Result<Response<ResponseBody<B>>, Infallible>>,
{
    type Response = Response<ResponseBody<B>>;
    type Error = Infallible;
    type Future = F;

    fn call(&self, req: Request<hyper::body::Incoming>) -> F {
        (self.handle)(self.service.clone(), self.config.clone(), req)
    }
}

async fn handle<S, B>(
    service: Rc<S>,
    config: Rc<Config>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<ResponseBody<B>>, Infallible>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: Into<Error>,
{
    // hyper has parsed a declared `Content-Length` into the body's size hint (its lower
    // bound; a chunked body's is 0), so no header lookup is needed here.
    let declared = http_body::Body::size_hint(req.body()).lower();
    if declared > config.max_body {
        return Ok(status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
            None,
        ));
    }
    // A permit first; most services have one at hand, so no `ready()` future is polled.
    let permit = match service.try_ready() {
        TryReady::Ready(permit) => Ok(permit),
        TryReady::Busy => service.ready().await,
        TryReady::Closed(e) => Err(e),
    };
    let permit = match permit {
        Ok(permit) => permit,
        Err(e) => {
            let e: Error = e.into();
            log::debug!("not ready: {e}");
            return Ok(status(
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable\n",
                Some(config.retry_after),
            ));
        }
    };
    // Where the body says why it failed, for the answer; a request without a body (most
    // GETs) cannot fail that way, and saves the allocation.
    let fault: Option<FaultCell> = match http_body::Body::is_end_stream(req.body()) {
        true => None,
        false => Some(Rc::new(Cell::new(None))),
    };
    let max_body = config.max_body;
    let req = req.map(|incoming| Body::incoming(incoming, max_body, fault.clone()));
    Ok(match service.call(permit, req).await {
        Ok(response) => response.map(http_body_util::Either::Left),
        Err(e) => {
            let e: Error = e.into();
            match fault.and_then(|f| f.get()) {
                Some(Fault::TooLarge) => status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large\n",
                    None,
                ),
                Some(Fault::Malformed) => {
                    status(StatusCode::BAD_REQUEST, "bad request body\n", None)
                }
                None => error_response(&e, &config),
            }
        }
    })
}

/// The answer to a handler's error.
fn error_response<B>(e: &Error, config: &Config) -> Response<ResponseBody<B>> {
    log::debug!("handler failed: {e}");
    match e.kind() {
        ErrorKind::Timeout => status(StatusCode::GATEWAY_TIMEOUT, "timed out\n", None),
        ErrorKind::Overloaded | ErrorKind::Unavailable | ErrorKind::Closed => status(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable\n",
            Some(config.retry_after),
        ),
        ErrorKind::Protocol | ErrorKind::InvalidRequest => {
            status(StatusCode::BAD_REQUEST, "bad request\n", None)
        }
        _ => status(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n", None),
    }
}

fn status<B>(
    code: StatusCode,
    text: &'static str,
    retry_after: Option<Duration>,
) -> Response<ResponseBody<B>> {
    let mut response = Response::new(http_body_util::Either::Right(Full::new(
        Bytes::from_static(text.as_bytes()),
    )));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Some(after) = retry_after {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(after.as_secs().max(1)),
        );
    }
    response
}
