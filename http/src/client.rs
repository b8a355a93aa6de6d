//! [`Client`]: an HTTP client `Service` for one endpoint, and its [`Builder`], which is a
//! `NewService<SocketAddr>` (a connector), so `Balance` spreads requests over many endpoints
//! like any other sheave client.
//!
//! HTTP/1.1 keeps a small pool of connections ([`Builder::pool_size`], 8 by default): one
//! request per connection at a time. HTTP/2 (prior knowledge, h2c) multiplexes every request
//! on one connection, up to [`Builder::max_streams`] at once. `ready()` is honest: it waits for
//! a free pool slot (or stream), and a slot is held until the response body is read to its end
//! or dropped — so a response body left unread never leaks a pooled connection (a dropped one
//! closes its connection instead of returning it).
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
//!     .version(Version::Http2)
//!     .max_streams(64)
//!     .pool_size(4);
//! assert!(format!("{builder:?}").contains("Http2"));
//! ```

use crate::body::Body;
use crate::rt::{Io, LocalExec, Timer};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use sheave_core::net::TcpStream;
use sheave_core::sync::Notify;
use sheave_core::time;
use sheave_service::{BoxError, Error, ErrorKind, NewService, Service};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// Which HTTP a [`Client`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.1, a pool of connections.
    Http1,
    /// HTTP/2 with prior knowledge (h2c), one multiplexed connection.
    Http2,
}

/// The default number of pooled HTTP/1.1 connections per endpoint: 8.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// The default bound on concurrent HTTP/2 streams from one client: 100.
pub const DEFAULT_MAX_STREAMS: usize = 100;
/// The default connect timeout: 3 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The default bound on a response body: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_BODY: u64 = 64 * 1024 * 1024;

/// Configures [`Client`]s; from [`Client::builder`]. A `NewService<SocketAddr>`: each endpoint
/// gets a client whose first connection is made before it is handed out.
pub struct Builder<B = Full<Bytes>> {
    version: Version,
    pool_size: usize,
    max_streams: usize,
    connect_timeout: Duration,
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
            .field("max_response_body", &self.max_response_body)
            .field("max_header_size", &self.max_header_size)
            .finish()
    }
}

impl<B> Builder<B> {
    /// HTTP/1.1 (the default) or HTTP/2 with prior knowledge.
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

    /// How many HTTP/2 requests are in flight at once on the connection; at least 1.
    pub fn max_streams(mut self, n: usize) -> Self {
        self.max_streams = n.max(1);
        self
    }

    /// How long a connection may take to open.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
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

    /// A client for `addr`; it connects on its first request.
    pub fn build(&self, addr: SocketAddr) -> Client<B> {
        let slots = match self.version {
            Version::Http1 => self.pool_size,
            Version::Http2 => self.max_streams,
        };
        Client {
            inner: Rc::new(Inner {
                addr,
                config: self.clone(),
                free: Cell::new(slots),
                freed: Notify::new(),
                idle: RefCell::new(Vec::new()),
                h2: RefCell::new(None),
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
    /// and gives the client, with that connection pooled.
    async fn new_service(&self, addr: SocketAddr) -> Result<Client<B>, Error> {
        let client = self.build(addr);
        match client.inner.config.version {
            Version::Http1 => {
                let sender = client.inner.connect_h1().await?;
                client.inner.idle.borrow_mut().push(sender);
            }
            Version::Http2 => {
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
            .field("free", &self.inner.free.get())
            .field("idle", &self.inner.idle.borrow().len())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl<B> Client<B> {
    /// Starts configuring clients of request body `B`: HTTP/1.1, [`DEFAULT_POOL_SIZE`],
    /// [`DEFAULT_MAX_STREAMS`], [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_MAX_RESPONSE_BODY`],
    /// 16 KiB of headers.
    pub fn builder() -> Builder<B> {
        Builder {
            version: Version::Http1,
            pool_size: DEFAULT_POOL_SIZE,
            max_streams: DEFAULT_MAX_STREAMS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            max_header_size: 16 * 1024,
            _body: PhantomData,
        }
    }

    /// The endpoint.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }
}

struct Inner<B> {
    addr: SocketAddr,
    config: Builder<B>,
    /// Pool slots (HTTP/1.1) or streams (HTTP/2) not held by a permit or a response.
    free: Cell<usize>,
    /// Notified whenever a slot is freed.
    freed: Notify,
    /// HTTP/1.1 connections waiting for a request.
    idle: RefCell<Vec<http1::SendRequest<B>>>,
    /// The HTTP/2 connection, once made.
    h2: RefCell<Option<http2::SendRequest<B>>>,
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
        self.inner.free.set(self.inner.free.get() + 1);
        self.inner.freed.notify_waiters();
    }
}

/// Held by a response [`Body`]: the slot, and the HTTP/1.1 connection to give back to the pool
/// once the body has been read to its end.
pub(crate) struct Release {
    finish: Option<Box<dyn FnOnce()>>,
    _slot: Box<dyn std::any::Any>,
}

impl Release {
    /// The body was read to its end: the connection may be reused.
    pub(crate) fn complete(mut self) {
        if let Some(finish) = self.finish.take() {
            finish();
        }
    }
}

fn unavailable(addr: SocketAddr, e: impl Into<BoxError>) -> Error {
    Error::new(ErrorKind::Unavailable, e)
        .with_context(format!("connecting to {addr}"))
        .retryable()
}

fn hyper_error(e: hyper::Error) -> Error {
    if e.is_timeout() {
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

impl<B> Inner<B>
where
    B: http_body::Body<Data = Bytes> + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    async fn connect(&self) -> Result<Io, Error> {
        let addr = self.addr;
        let stream = time::timeout(self.config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|e| unavailable(addr, std::io::Error::from(e)))?
            .map_err(|e| unavailable(addr, e))?;
        let _ = stream.set_nodelay(true);
        Ok(Io::new(stream))
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<B>, Error> {
        let io = self.connect().await?;
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
            let Some(mut sender) = self.idle.borrow_mut().pop() else {
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
        if let Some(sender) = self.h2.borrow().as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let io = self.connect().await?;
        let (sender, conn) = http2::Builder::new(LocalExec)
            .timer(Timer)
            .max_header_list_size(self.config.max_header_size as u32)
            .handshake(io)
            .await
            .map_err(|e| unavailable(self.addr, e))?;
        let addr = self.addr;
        drop(sheave_core::spawn(async move {
            if let Err(e) = conn.await {
                log::debug!("{addr}: h2 connection ended: {e}");
            }
        }));
        let mut h2 = self.h2.borrow_mut();
        match h2.as_ref().filter(|s| !s.is_closed()) {
            Some(raced) => Ok(raced.clone()), // another request connected meanwhile
            None => {
                *h2 = Some(sender.clone());
                Ok(sender)
            }
        }
    }
}

/// Fills in what the version needs: HTTP/1.1 an origin-form path and a `Host`; HTTP/2 an
/// absolute URI.
fn prepare<B>(req: &mut Request<B>, addr: SocketAddr, version: Version) -> Result<(), Error> {
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
    let invalid = |e: http::Error| Error::new(ErrorKind::InvalidRequest, e);
    match version {
        Version::Http1 => {
            if !req.headers().contains_key(header::HOST) {
                let host = HeaderValue::from_str(&authority).map_err(|e| invalid(e.into()))?;
                req.headers_mut().insert(header::HOST, host);
            }
            *req.uri_mut() = Uri::try_from(path).map_err(|e| invalid(e.into()))?;
            *req.version_mut() = http::Version::HTTP_11;
        }
        Version::Http2 => {
            let scheme = req.uri().scheme_str().unwrap_or("http").to_string();
            *req.uri_mut() = Uri::builder()
                .scheme(scheme.as_str())
                .authority(authority)
                .path_and_query(path)
                .build()
                .map_err(invalid)?;
            *req.version_mut() = http::Version::HTTP_2;
        }
    }
    Ok(())
}

impl<B> Service<Request<B>> for Client<B>
where
    B: http_body::Body<Data = Bytes> + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Permit = Permit<B>;

    /// Waits for a free pool slot (HTTP/1.1) or stream (HTTP/2). Cancel-safe: a dropped wait
    /// holds nothing.
    async fn ready(&self) -> Result<Permit<B>, Error> {
        loop {
            let freed = self.inner.freed.notified(); // before the check: nothing is missed
            let free = self.inner.free.get();
            if free > 0 {
                self.inner.free.set(free - 1);
                return Ok(Permit {
                    slot: Slot {
                        inner: self.inner.clone(),
                    },
                });
            }
            freed.await;
        }
    }

    async fn call(&self, permit: Permit<B>, mut req: Request<B>) -> Result<Response<Body>, Error> {
        let inner = &self.inner;
        let version = inner.config.version;
        prepare(&mut req, inner.addr, version)?;
        let limit = inner.config.max_response_body;
        match version {
            Version::Http1 => {
                let mut sender = inner.h1_sender().await?;
                let response = sender.send_request(req).await.map_err(hyper_error)?;
                let pool = Rc::downgrade(inner);
                let release = Release {
                    finish: Some(Box::new(move || {
                        if let Some(inner) = pool.upgrade() {
                            inner.idle.borrow_mut().push(sender);
                        }
                    })),
                    _slot: Box::new(permit.slot),
                };
                Ok(response.map(|incoming| Body::client(incoming, limit, release)))
            }
            Version::Http2 => {
                let mut sender = inner.h2_sender().await?;
                let response = sender.send_request(req).await.map_err(hyper_error)?;
                let release = Release {
                    finish: None,
                    _slot: Box::new(permit.slot),
                };
                Ok(response.map(|incoming| Body::client(incoming, limit, release)))
            }
        }
    }
}
