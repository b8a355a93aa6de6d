//! [`Client`]: an HTTP client `Service` for one endpoint, and its [`Builder`], which is a
//! `NewService<SocketAddr>` (a connector), so `Balance` spreads requests over many endpoints
//! like any other sheave client.
//!
//! HTTP/1.1 keeps a small pool of connections ([`Builder::pool_size`], 8 by default): one
//! request per connection at a time. The pool shrinks after a burst: a connection idle for
//! [`Builder::idle_timeout`] (90 s by default) is closed, and at most [`Builder::max_idle`]
//! (by default the pool size) wait idle — one given back past that is closed at once.
//! [`Client::pool`] says how many are idle and in use now. HTTP/2 (prior knowledge, h2c) multiplexes every request
//! on one connection. `ready()` is honest: it waits for a free pool slot (or stream), and a
//! slot is held until the response body is read to its end or dropped — so a response body
//! left unread never leaks a pooled connection (a dropped one closes its connection instead of
//! returning it).
//!
//! ## HTTP/2 stream capacity
//! On HTTP/2 `ready()` hands out at most `min(`[`Builder::max_streams`]`, the peer's
//! SETTINGS_MAX_CONCURRENT_STREAMS)` permits at once. The peer's value is read from the
//! connection (hyper's `Connection::current_max_send_streams`, which h2 updates as it applies
//! the peer's SETTINGS) each time `ready()` looks, so a SETTINGS frame that lowers it takes
//! effect for the next `ready()` (permits already out stay out; `ready()` waits until enough
//! come back), and one that raises it is used by the next `ready()`, and wakes those waiting
//! when the connection task sees it (else the next released slot does). What is not
//! followed: before the peer's first SETTINGS frame arrives the bound is ours alone
//! ([`Builder::max_streams`]; RFC 9113 §6.5.2 starts the peer's limit unlimited), so the
//! first requests on a new connection may open more streams than the peer will take; a
//! stream the peer refuses fails with an `Unavailable` error flagged retryable, because a
//! refused stream (`REFUSED_STREAM`) was not processed (RFC 9113 §8.7). A slot is held until
//! our response body is done, which may be after the peer has closed the stream, so the
//! bound errs on the side of fewer streams.
//!
//! ## `Version::Auto`
//! Cleartext has no ALPN, so [`Version::Auto`] asks the server once per endpoint: on first
//! use it opens a probe connection and sends the HTTP/2 preface with an empty SETTINGS frame.
//! An HTTP/2 server must answer with its own SETTINGS frame first (RFC 9113 §3.4): then the
//! endpoint speaks h2c. Anything else — an HTTP/1.1 error status, a close, a reset, or silence
//! for the connect timeout — means HTTP/1.1. The probe connection is then closed, and the
//! answer is remembered for the client's life (a connection that cannot be made is an error,
//! as for any connect, not an answer). Until it is known, `ready()` hands out at most
//! `min(pool_size, max_streams)` permits.
//!
//! A connection that cannot be made is `Unavailable` and flagged retryable: the request was
//! not written.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use sheave_http::{Client, client::Version};
//!
//! // A builder is a connector: `NewService<SocketAddr>`; `build` gives one endpoint's client.
//! let builder = Client::<Empty<Bytes>>::builder()
//!     .version(Version::Auto)
//!     .max_streams(64)
//!     .pool_size(4)
//!     .idle_timeout(std::time::Duration::from_secs(30)) // close connections idle for 30 s
//!     .max_idle(2); // and keep at most 2 idle
//! assert!(format!("{builder:?}").contains("Auto"));
//! assert!(format!("{builder:?}").contains("max_idle: 2"));
//! ```

use crate::body::Body;
use crate::rt::{Io, LocalExec, Timer, write_all};
use bytes::Bytes;
use futures::future::poll_fn;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use sheave_core::net::TcpStream;
use sheave_core::sync::Notify;
use sheave_core::time;
use sheave_service::{BoxError, Error, ErrorKind, NewService, Service, TryReady};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

/// Which HTTP a [`Client`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.1, a pool of connections.
    Http1,
    /// HTTP/2 with prior knowledge (h2c), one multiplexed connection.
    Http2,
    /// Asks each endpoint once with a probe connection, then speaks h2c if it answered as an
    /// HTTP/2 server and HTTP/1.1 otherwise (see the [module docs](self#versionauto)).
    Auto,
}

/// The default number of pooled HTTP/1.1 connections per endpoint: 8.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// The default bound on concurrent HTTP/2 streams from one client: 100.
pub const DEFAULT_MAX_STREAMS: usize = 100;
/// The default connect timeout: 3 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The default time an idle HTTP/1.1 connection is kept: 90 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The default bound on a response body: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_BODY: u64 = 64 * 1024 * 1024;

/// Configures [`Client`]s; from [`Client::builder`]. A `NewService<SocketAddr>`: each endpoint
/// gets a client whose first connection is made before it is handed out.
pub struct Builder<B = Full<Bytes>> {
    version: Version,
    pool_size: usize,
    max_streams: usize,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: Option<usize>,
    max_response_body: u64,
    max_header_size: usize,
    _body: PhantomData<fn(B)>,
}

impl<B> Clone for Builder<B> {
    fn clone(&self) -> Self {
        Builder { ..*self }
    }
}

impl<B> fmt::Debug for Builder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("version", &self.version)
            .field("pool_size", &self.pool_size)
            .field("max_streams", &self.max_streams)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_idle", &self.idle_bound())
            .field("max_response_body", &self.max_response_body)
            .field("max_header_size", &self.max_header_size)
            .finish()
    }
}

impl<B> Builder<B> {
    /// HTTP/1.1 (the default), HTTP/2 with prior knowledge, or [`Version::Auto`].
    pub fn version(mut self, version: Version) -> Self {
        self.version = version;
        self
    }

    /// How many HTTP/1.1 connections an endpoint's client keeps (and so how many requests it
    /// has in flight); at least 1.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// How many HTTP/2 requests are in flight at once on the connection, at most; at least 1.
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS lowers it when smaller.
    pub fn max_streams(mut self, n: usize) -> Self {
        self.max_streams = n.max(1);
        self
    }

    /// How long a connection may take to open (and a [`Version::Auto`] probe to be answered).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an HTTP/1.1 connection may wait idle in the pool before it is closed
    /// ([`DEFAULT_IDLE_TIMEOUT`]; `Duration::MAX` keeps it until the peer closes it). One
    /// timer task per client does the closing while any connection is idle.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How many HTTP/1.1 connections may wait idle at once (by default the pool size): a
    /// connection whose response is done while that many are idle is closed, not pooled.
    /// 0 pools none (a connection per request).
    pub fn max_idle(mut self, n: usize) -> Self {
        self.max_idle = Some(n);
        self
    }

    fn idle_bound(&self) -> usize {
        self.max_idle.unwrap_or(self.pool_size)
    }

    /// The largest response body accepted (reading past it fails with `Protocol`).
    pub fn max_response_body(mut self, bytes: u64) -> Self {
        self.max_response_body = bytes;
        self
    }

    /// The largest response header block accepted (HTTP/1.1 buffer bound; HTTP/2 header list).
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.max_header_size = bytes.max(1024);
        self
    }

    /// A client for `addr`; it connects (and, for [`Version::Auto`], probes) on its first
    /// request.
    pub fn build(&self, addr: SocketAddr) -> Client<B> {
        let resolved = match self.version {
            Version::Auto => None,
            known => Some(known),
        };
        Client {
            inner: Rc::new(Inner {
                addr,
                config: self.clone(),
                in_use: Cell::new(0),
                freed: Rc::new(Notify::new()),
                idle: RefCell::new(Vec::new()),
                reaping: Cell::new(false),
                h2: RefCell::new(None),
                resolved: Cell::new(resolved),
                host: HeaderValue::try_from(addr.to_string()).ok(),
            }),
        }
    }
}

impl<B> NewService<SocketAddr> for Builder<B>
where
    B: http_body::Body<Data = Bytes> + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Service = Client<B>;
    type Error = Error;

    /// Connects once (so an unreachable endpoint is an error here, not on its first request)
    /// and gives the client, with that connection pooled. [`Version::Auto`] probes first.
    async fn new_service(&self, addr: SocketAddr) -> Result<Client<B>, Error> {
        let client = self.build(addr);
        match client.inner.version().await? {
            Version::Http1 => {
                let sender = client.inner.connect_h1().await?;
                client.inner.park(sender);
            }
            _ => {
                client.inner.h2_sender().await?;
            }
        }
        Ok(client)
    }
}

/// An HTTP client for one endpoint: a sheave `Service<http::Request<B>>` answering
/// `http::Response<`[`Body`]`>`.
pub struct Client<B = Full<Bytes>> {
    inner: Rc<Inner<B>>,
}

impl<B> Clone for Client<B> {
    fn clone(&self) -> Self {
        Client {
            inner: self.inner.clone(),
        }
    }
}

impl<B> fmt::Debug for Client<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.addr)
            .field("in_use", &self.inner.in_use.get())
            .field("capacity", &self.inner.capacity())
            .field("pool", &self.inner.pool())
            .field("version", &self.inner.resolved.get())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl<B> Client<B> {
    /// Starts configuring clients of request body `B`: HTTP/1.1, [`DEFAULT_POOL_SIZE`],
    /// [`DEFAULT_MAX_STREAMS`], [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_IDLE_TIMEOUT`], as
    /// many idle connections as the pool size, [`DEFAULT_MAX_RESPONSE_BODY`], 16 KiB of
    /// headers.
    pub fn builder() -> Builder<B> {
        Builder {
            version: Version::Http1,
            pool_size: DEFAULT_POOL_SIZE,
            max_streams: DEFAULT_MAX_STREAMS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_idle: None,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            max_header_size: 16 * 1024,
            _body: PhantomData,
        }
    }

    /// The endpoint.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The version this client speaks: the configured one, or for [`Version::Auto`] the
    /// probe's answer once it came (`None` before).
    pub fn version(&self) -> Option<Version> {
        self.inner.resolved.get()
    }

    /// How many requests may be in flight at once right now: the pool size on HTTP/1.1; on
    /// HTTP/2 [`Builder::max_streams`] lowered to the peer's SETTINGS_MAX_CONCURRENT_STREAMS
    /// once the connection has read it.
    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// The pool now: HTTP/1.1 connections idle, and slots in use.
    pub fn pool(&self) -> PoolStats {
        self.inner.pool()
    }

    /// A reader of [`pool`](Client::pool) that does not keep the client (and its
    /// connections) alive: for metrics read at scrape time.
    pub fn pool_probe(&self) -> PoolProbe<B> {
        PoolProbe {
            inner: Rc::downgrade(&self.inner),
        }
    }
}

/// A [`Client`]'s pool at one moment, from [`Client::pool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// HTTP/1.1 connections waiting idle for a request (0 on HTTP/2).
    pub idle: usize,
    /// Slots in use: on HTTP/1.1 each holds a connection (busy with a request, or its
    /// response body not yet read through) or is about to open one; on HTTP/2, a stream.
    pub in_use: usize,
}

/// Reads a [`Client`]'s pool while the client lives; from [`Client::pool_probe`].
pub struct PoolProbe<B = Full<Bytes>> {
    inner: std::rc::Weak<Inner<B>>,
}

impl<B> Clone for PoolProbe<B> {
    fn clone(&self) -> Self {
        PoolProbe {
            inner: self.inner.clone(),
        }
    }
}

impl<B> fmt::Debug for PoolProbe<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolProbe")
            .field("pool", &self.stats())
            .finish()
    }
}

impl<B> PoolProbe<B> {
    /// The pool now, or `None` once every handle of the client is gone.
    pub fn stats(&self) -> Option<PoolStats> {
        self.inner.upgrade().map(|inner| inner.pool())
    }
}

struct Inner<B> {
    addr: SocketAddr,
    config: Builder<B>,
    /// Slots held by a permit or a response.
    in_use: Cell<usize>,
    /// Notified whenever a slot is freed or the capacity may have grown.
    freed: Rc<Notify>,
    /// HTTP/1.1 connections waiting for a request, the longest idle first (taken from the
    /// back, so the oldest are the first to time out).
    idle: RefCell<Vec<Idle<B>>>,
    /// Whether the task closing timed-out idle connections is running.
    reaping: Cell<bool>,
    /// The HTTP/2 connection, once made.
    h2: RefCell<Option<H2<B>>>,
    /// `Http1` or `Http2` once known (at once unless the configuration says `Auto`).
    resolved: Cell<Option<Version>>,
    /// The `Host` of an HTTP/1.1 request whose URI names no authority: the address.
    host: Option<HeaderValue>,
}

/// A pooled HTTP/1.1 connection and when it became idle.
struct Idle<B> {
    sender: http1::SendRequest<B>,
    since: std::time::Instant,
}

/// An HTTP/2 connection: its sender, and a reader of the peer's
/// SETTINGS_MAX_CONCURRENT_STREAMS as the connection has applied it.
struct H2<B> {
    sender: http2::SendRequest<B>,
    peer_max: Rc<dyn Fn() -> usize>,
}

/// A slot of a [`Client`]'s capacity, from `ready()`; it goes back when dropped (once the
/// response body is done, if a response came).
pub struct Permit<B> {
    slot: Slot<B>,
}

impl<B> fmt::Debug for Permit<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("addr", &self.slot.inner.addr)
            .finish()
    }
}

struct Slot<B> {
    inner: Rc<Inner<B>>,
}

impl<B> Drop for Slot<B> {
    fn drop(&mut self) {
        self.inner.in_use.set(self.inner.in_use.get() - 1);
        self.inner.freed.notify_waiters();
    }
}

/// Held by a response [`Body`]: the slot, and the HTTP/1.1 connection to give back to the pool
/// once the body has been read to its end (one allocation per response).
pub(crate) struct Release {
    held: Box<dyn Held>,
}

/// What a response holds: dropped, it frees its slot (and closes an HTTP/1.1 connection whose
/// response was not read through); completed, it also gives the connection back.
trait Held {
    fn complete(self: Box<Self>);
}

impl<B: 'static> Held for Slot<B> {
    fn complete(self: Box<Self>) {} // HTTP/2: the stream is done; the slot goes on drop
}

/// An HTTP/1.1 response's slot and connection.
struct Pooled<B> {
    slot: Slot<B>,
    sender: http1::SendRequest<B>,
}

impl<B: 'static> Held for Pooled<B> {
    fn complete(self: Box<Self>) {
        let Pooled { slot, sender } = *self;
        slot.inner.park(sender);
    }
}

impl Release {
    /// The body was read to its end: the connection may be reused.
    pub(crate) fn complete(self) {
        self.held.complete();
    }
}

fn unavailable(addr: SocketAddr, e: impl Into<BoxError>) -> Error {
    Error::new(ErrorKind::Unavailable, e)
        .with_context(format!("connecting to {addr}"))
        .retryable()
}

/// Whether `e`, or an error it wraps, is an HTTP/2 `REFUSED_STREAM` from the peer.
fn refused_stream(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(e);
    while let Some(e) = at {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        at = e.source();
    }
    false
}

fn hyper_error(e: hyper::Error) -> Error {
    if refused_stream(&e) {
        // RFC 9113 §8.7: a refused stream was not processed; it may be sent again.
        Error::new(ErrorKind::Unavailable, e)
            .with_context("the server refused the stream (REFUSED_STREAM): not processed")
            .retryable()
    } else if e.is_timeout() {
        Error::new(ErrorKind::Timeout, e)
    } else if e.is_parse() || e.is_parse_status() {
        Error::new(ErrorKind::Protocol, e)
    } else if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
        // The connection went away before the whole response came: the peer broke no rule
        // (an idempotent request may be sent again).
        Error::new(ErrorKind::Closed, e)
    } else {
        Error::new(ErrorKind::Io, e)
    }
}

/// The HTTP/2 client preface and an empty SETTINGS frame: [`Version::Auto`]'s question.
const PROBE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

impl<B> Inner<B> {
    fn pool(&self) -> PoolStats {
        PoolStats {
            idle: self.idle.borrow().len(),
            in_use: self.in_use.get(),
        }
    }

    /// How many slots may be held at once now.
    fn capacity(&self) -> usize {
        let (pool, streams) = (self.config.pool_size, self.config.max_streams);
        match self.resolved.get() {
            Some(Version::Http1) => pool,
            Some(_) => match self.h2.borrow().as_ref() {
                Some(conn) if !conn.sender.is_closed() => streams.min((conn.peer_max)()),
                _ => streams, // a new connection starts at our bound
            },
            None => pool.min(streams),
        }
    }
}

impl<B> Inner<B>
where
    B: http_body::Body<Data = Bytes> + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    async fn connect_tcp(&self) -> Result<TcpStream, Error> {
        let addr = self.addr;
        let stream = time::timeout(self.config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|e| unavailable(addr, std::io::Error::from(e)))?
            .map_err(|e| unavailable(addr, e))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// `Http1` or `Http2`: the configured version, or [`Version::Auto`]'s answer (asked once).
    async fn version(&self) -> Result<Version, Error> {
        if let Some(known) = self.resolved.get() {
            return Ok(known);
        }
        let answer = self.probe().await?;
        let version = *self.resolved.get().get_or_insert(answer); // a racing probe may have won
        self.resolved.set(Some(version));
        self.freed.notify_waiters(); // the capacity is now the version's
        Ok(version)
    }

    /// Sends the HTTP/2 preface and an empty SETTINGS frame on a new connection: an HTTP/2
    /// server's first frame back is its SETTINGS (type 4, stream 0); anything else is
    /// HTTP/1.1.
    async fn probe(&self) -> Result<Version, Error> {
        let stream = self.connect_tcp().await?;
        let answer = async {
            write_all(&stream, PROBE).await?;
            let mut head = [0u8; 9];
            let mut n = 0;
            while n < head.len() {
                match stream.read(&mut head[n..]).await? {
                    0 => break,
                    got => n += got,
                }
            }
            let h2 = n == head.len() && head[3] == 4 && head[5..9] == [0; 4];
            Ok::<_, std::io::Error>(h2)
        };
        let h2 = matches!(
            time::timeout(self.config.connect_timeout, answer).await,
            Ok(Ok(true))
        );
        log::debug!(
            "{}: answers {}",
            self.addr,
            if h2 { "h2c" } else { "HTTP/1.1" }
        );
        Ok(if h2 { Version::Http2 } else { Version::Http1 })
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<B>, Error> {
        let io = Io::new(self.connect_tcp().await?);
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(self.config.max_header_size.max(8192) * 2)
            .handshake(io)
            .await
            .map_err(|e| unavailable(self.addr, e))?;
        let addr = self.addr;
        drop(sheave_core::spawn(async move {
            if let Err(e) = conn.await {
                log::debug!("{addr}: connection ended: {e}");
            }
        }));
        Ok(sender)
    }

    /// A pooled connection that can take a request now, or a new one.
    async fn h1_sender(&self) -> Result<http1::SendRequest<B>, Error> {
        loop {
            let Some(Idle { mut sender, .. }) = self.idle.borrow_mut().pop() else {
                break;
            };
            if sender.is_closed() {
                continue;
            }
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        self.connect_h1().await
    }

    async fn h2_sender(&self) -> Result<http2::SendRequest<B>, Error> {
        if let Some(conn) = self.h2.borrow().as_ref().filter(|c| !c.sender.is_closed()) {
            return Ok(conn.sender.clone());
        }
        let io = Io::new(self.connect_tcp().await?);
        let max = self.config.max_streams;
        let (sender, conn) = http2::Builder::new(LocalExec)
            .timer(Timer)
            .max_header_list_size(self.config.max_header_size as u32)
            .initial_max_send_streams(max)
            .handshake(io)
            .await
            .map_err(|e| unavailable(self.addr, e))?;
        // The connection task and `capacity()` share the connection: the task polls it, and
        // `capacity()` reads the peer's SETTINGS_MAX_CONCURRENT_STREAMS from it (hyper keeps
        // the socket in a task of its own, so the peer's SETTINGS are applied there, whether
        // or not this one runs).
        let conn = Rc::new(RefCell::new(Some(Box::pin(conn))));
        let last = Rc::new(Cell::new(max));
        let peer_max: Rc<dyn Fn() -> usize> = {
            let (conn, last) = (Rc::downgrade(&conn), last.clone());
            Rc::new(move || {
                let Some(conn) = conn.upgrade() else {
                    return last.get();
                };
                // Busy only while the task polls it (never the case when this runs).
                if let Ok(Some(conn)) = conn.try_borrow().as_deref() {
                    last.set(conn.current_max_send_streams());
                }
                last.get()
            })
        };
        let (addr, freed) = (self.addr, self.freed.clone());
        drop(sheave_core::spawn(async move {
            let mut seen = max;
            let done = poll_fn(|cx| {
                let mut slot = conn.borrow_mut();
                let Some(running) = slot.as_mut() else {
                    return Poll::Ready(Ok(()));
                };
                let polled = running.as_mut().poll(cx);
                // A raise seen here wakes the waiting `ready()`s (one seen by `capacity()`
                // first is used by the next `ready()` or slot released).
                let now = running.current_max_send_streams();
                if now > seen {
                    freed.notify_waiters();
                }
                seen = now;
                if polled.is_ready() {
                    *slot = None; // the connection ends here, not when the last reader goes
                }
                polled
            })
            .await;
            if let Err(e) = done {
                log::debug!("{addr}: h2 connection ended: {e}");
            }
            freed.notify_waiters(); // closed: a new connection starts at our own bound
        }));
        let mut h2 = self.h2.borrow_mut();
        match h2.as_ref().filter(|c| !c.sender.is_closed()) {
            Some(raced) => Ok(raced.sender.clone()), // another request connected meanwhile
            None => {
                *h2 = Some(H2 {
                    sender: sender.clone(),
                    peer_max,
                });
                Ok(sender)
            }
        }
    }
}

impl<B: 'static> Inner<B> {
    /// Gives an HTTP/1.1 connection back to the pool — or closes it (drops its sender, which
    /// ends hyper's connection task) when `max_idle` are idle already — and starts the task
    /// that closes connections idle past `idle_timeout`, if it is not running.
    fn park(self: &Rc<Self>, sender: http1::SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        {
            let mut idle = self.idle.borrow_mut();
            if idle.len() >= self.config.idle_bound() {
                return;
            }
            idle.push(Idle {
                sender,
                since: time::now_cached(),
            });
        }
        if !self.reaping.get() && self.config.idle_timeout != Duration::MAX {
            self.reaping.set(true);
            drop(sheave_core::spawn(reap(Rc::downgrade(self))));
        }
    }
}

/// Closes the pool's connections as they pass the idle timeout, sleeping until the oldest
/// will; ends when none is idle (the next one parked starts it again) or the client is gone.
async fn reap<B>(pool: std::rc::Weak<Inner<B>>) {
    loop {
        let next = {
            let Some(inner) = pool.upgrade() else {
                return;
            };
            let timeout = inner.config.idle_timeout;
            let now = time::now();
            let mut idle = inner.idle.borrow_mut();
            let expired = idle
                .iter()
                .take_while(|i| now.saturating_duration_since(i.since) >= timeout)
                .count();
            idle.drain(..expired); // dropping a sender closes its connection
            match idle.first() {
                Some(oldest) => time::saturating_add(oldest.since, timeout),
                None => {
                    inner.reaping.set(false);
                    return;
                }
            }
        };
        time::sleep_until(next).await;
    }
}

/// Fills in what the version needs: HTTP/1.1 an origin-form path and a `Host`; HTTP/2 an
/// absolute URI.
fn prepare<B>(
    req: &mut Request<B>,
    addr: SocketAddr,
    host: Option<&HeaderValue>,
    version: Version,
) -> Result<(), Error> {
    let invalid = |e: http::Error| Error::new(ErrorKind::InvalidRequest, e);
    if version == Version::Http1 {
        if !req.headers().contains_key(header::HOST) {
            let host = match (req.uri().authority(), host) {
                (Some(a), _) => HeaderValue::from_str(a.as_str()),
                (None, Some(host)) => Ok(host.clone()),
                (None, None) => HeaderValue::from_str(&addr.to_string()),
            }
            .map_err(|e| invalid(e.into()))?;
            req.headers_mut().insert(header::HOST, host);
        }
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            *req.uri_mut() = Uri::try_from(path).map_err(|e| invalid(e.into()))?;
        }
        *req.version_mut() = http::Version::HTTP_11;
        return Ok(());
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| addr.to_string());
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let scheme = req.uri().scheme_str().unwrap_or("http").to_string();
    *req.uri_mut() = Uri::builder()
        .scheme(scheme.as_str())
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(invalid)?;
    *req.version_mut() = http::Version::HTTP_2;
    Ok(())
}

impl<B> Client<B> {
    fn take_slot(&self) -> Option<Permit<B>> {
        let in_use = self.inner.in_use.get();
        if in_use >= self.inner.capacity() {
            return None;
        }
        self.inner.in_use.set(in_use + 1);
        Some(Permit {
            slot: Slot {
                inner: self.inner.clone(),
            },
        })
    }
}

impl<B> Service<Request<B>> for Client<B>
where
    B: http_body::Body<Data = Bytes> + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Permit = Permit<B>;

    /// Waits for a free pool slot (HTTP/1.1) or stream (HTTP/2, within the peer's limit).
    /// Cancel-safe: a dropped wait holds nothing.
    async fn ready(&self) -> Result<Permit<B>, Error> {
        loop {
            let freed = self.inner.freed.notified(); // before the check: nothing is missed
            if let Some(permit) = self.take_slot() {
                return Ok(permit);
            }
            freed.await;
        }
    }

    /// A permit if a slot is free now, else `Busy`.
    fn try_ready(&self) -> TryReady<Permit<B>, Error> {
        match self.take_slot() {
            Some(permit) => TryReady::Ready(permit),
            None => TryReady::Busy,
        }
    }

    /// The slots held: requests sent or waiting to be, and responses not yet read through.
    fn in_flight(&self) -> Option<usize> {
        Some(self.inner.in_use.get())
    }

    async fn call(&self, permit: Permit<B>, mut req: Request<B>) -> Result<Response<Body>, Error> {
        let inner = &self.inner;
        let version = inner.version().await?;
        prepare(&mut req, inner.addr, inner.host.as_ref(), version)?;
        let limit = inner.config.max_response_body;
        if version == Version::Http1 {
            let mut sender = inner.h1_sender().await?;
            let response = sender.send_request(req).await.map_err(hyper_error)?;
            let release = Release {
                held: Box::new(Pooled {
                    slot: permit.slot,
                    sender,
                }),
            };
            return Ok(response.map(|incoming| Body::client(incoming, limit, release)));
        }
        let mut sender = inner.h2_sender().await?;
        let response = sender.send_request(req).await.map_err(hyper_error)?;
        let release = Release {
            held: Box::new(permit.slot),
        };
        Ok(response.map(|incoming| Body::client(incoming, limit, release)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_stream_is_found_in_the_error_chain() {
        let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert!(refused_stream(&refused));
        #[derive(Debug)]
        struct Wrapped(h2::Error);
        impl fmt::Display for Wrapped {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "wrapped")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert!(refused_stream(&Wrapped(refused)));
        assert!(!refused_stream(&h2::Error::from(h2::Reason::CANCEL)));
        assert!(!refused_stream(&std::io::Error::other("no")));
    }
}
