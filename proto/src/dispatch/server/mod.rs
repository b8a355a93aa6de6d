//! The server side of the dispatcher: one connection, one service, many requests in flight.
//!
//! [`ServerConnection`] is the configuration and the entry point; `conn.rs` is the state
//! machine of one connection.

mod conn;

use super::{Mode, Multiplex, Pipeline};
use crate::codec::{Decoder, Encoder};
use crate::framed::Framed;
use conn::{Conn, ServiceFns};
use futures::io::{AsyncRead, AsyncWrite};
use sheave_service::{Error, Service};
use std::fmt;
use std::future::{Future, pending, poll_fn};
use std::marker::PhantomData;
use std::pin::pin;
use std::time::Duration;

/// Serves one connection with one service: the server half of the dispatch engine.
///
/// Configure it once and call [`serve`](ServerConnection::serve) per connection (it is
/// `Clone` and cheap). Defaults: [`DEFAULT_MAX_IN_FLIGHT`] requests in flight, a
/// [`DEFAULT_MAX_WRITE_BUFFER`] write buffer bound, no idle or read timeout. See the [module docs](super) for the backpressure path.
///
/// A protocol error (malformed input, a frame over a limit) or a read timeout ends the
/// connection, but never silently: the requests already taken are answered first, then —
/// if the codec has error replies ([`Encoder::encode_error`](crate::codec::Encoder::encode_error),
/// e.g. RESP's `-ERR Protocol error: ...`) — one last reply says why, then `serve` returns
/// the error. A call that fails becomes that request's error reply when the codec has them
/// (pipelined mode), and ends the connection when it has not. A service can also answer
/// with an error *frame* itself, as an `Ok` response.
///
/// ```
/// use sheave_proto::dispatch::ServerConnection;
/// use std::time::Duration;
///
/// let conn = ServerConnection::pipeline()
///     .max_in_flight(64)
///     .idle_timeout(Duration::from_secs(60))
///     .read_timeout(Duration::from_secs(5));
/// assert_eq!(conn.get_max_in_flight(), 64);
/// ```
pub struct ServerConnection<M = Pipeline> {
    max_in_flight: usize,
    max_write_buffer: usize,
    idle_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    mode: PhantomData<M>,
}

impl<M> Clone for ServerConnection<M> {
    fn clone(&self) -> Self {
        ServerConnection { ..*self }
    }
}

impl<M> fmt::Debug for ServerConnection<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConnection")
            .field("mode", &std::any::type_name::<M>())
            .field("max_in_flight", &self.max_in_flight)
            .field("max_write_buffer", &self.max_write_buffer)
            .field("idle_timeout", &self.idle_timeout)
            .field("read_timeout", &self.read_timeout)
            .finish()
    }
}

impl ServerConnection<Pipeline> {
    /// A pipelined connection: responses in request order.
    pub fn pipeline() -> Self {
        ServerConnection::new()
    }
}

impl ServerConnection<Multiplex> {
    /// A multiplexed connection: responses as they complete, tagged with their request's id.
    pub fn multiplex() -> Self {
        ServerConnection::new()
    }
}

/// The default bound on requests in flight per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 128;

/// The default bound on response bytes waiting to be written, per connection: 256 KiB.
pub const DEFAULT_MAX_WRITE_BUFFER: usize = 256 * 1024;

impl<M> ServerConnection<M> {
    fn new() -> Self {
        ServerConnection {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
            idle_timeout: None,
            read_timeout: None,
            mode: PhantomData,
        }
    }

    /// The same settings for the other dispatch mode: the mode is a type switch only.
    pub fn into_mode<M2>(self) -> ServerConnection<M2> {
        let ServerConnection {
            max_in_flight,
            max_write_buffer,
            idle_timeout,
            read_timeout,
            mode: _,
        } = self;
        ServerConnection {
            max_in_flight,
            max_write_buffer,
            idle_timeout,
            read_timeout,
            mode: PhantomData,
        }
    }

    /// At most this many requests of one connection run at once (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// The configured in-flight bound.
    pub fn get_max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// No new request is taken while this many response bytes wait to be written.
    pub fn max_write_buffer(mut self, bytes: usize) -> Self {
        self.max_write_buffer = bytes.max(1);
        self
    }

    /// Closes a connection that for this long has had no request in flight or waiting for the
    /// service, and has moved no bytes: read none, and written none of what it owes (a peer
    /// that stopped reading its responses is idle too). Once the connection is closing (a
    /// malformed frame, a failed reply, a read timeout), it also bounds the wait for the last
    /// replies to be written.
    ///
    /// A raw `ServerConnection` has none by default, so nothing bounds how long a peer that
    /// stops reading holds it; [`Server`](crate::Server) sets
    /// [`DEFAULT_IDLE_TIMEOUT`](crate::server::DEFAULT_IDLE_TIMEOUT) (and
    /// [`DEFAULT_READ_TIMEOUT`](crate::server::DEFAULT_READ_TIMEOUT)).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Closes a connection that takes longer than this to deliver the rest of a frame whose
    /// first bytes arrived: the guard against slow-loris peers.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = Some(timeout);
        self
    }

    /// Serves requests from `framed` with `service` until the peer closes, an error occurs, or
    /// the idle timeout passes.
    pub async fn serve<T, C, S>(&self, framed: Framed<T, C>, service: S) -> Result<(), Error>
    where
        T: AsyncRead + AsyncWrite + Unpin,
        C: Decoder + Encoder<S::Response>,
        S: Service<C::Item>,
        S::Error: Into<Error>,
        M: Mode<C::Item, S::Response>,
    {
        self.serve_until(framed, service, pending()).await
    }

    /// Like [`serve`](ServerConnection::serve), and once `drain` completes: takes no new
    /// request, lets the ones in flight finish, flushes their responses and returns.
    pub async fn serve_until<T, C, S, D>(
        &self,
        mut framed: Framed<T, C>,
        service: S,
        drain: D,
    ) -> Result<(), Error>
    where
        T: AsyncRead + AsyncWrite + Unpin,
        C: Decoder + Encoder<S::Response>,
        S: Service<C::Item>,
        S::Error: Into<Error>,
        M: Mode<C::Item, S::Response>,
        D: Future<Output = ()>,
    {
        let svc = ServiceFns {
            service: &service,
            call: |permit, req| service.call(permit, req),
            ready: || service.ready(),
        };
        let mut drain = pin!(drain);
        let mut conn = Conn::new();
        poll_fn(|cx| {
            if conn.is_open() && drain.as_mut().poll(cx).is_ready() {
                conn.start_draining();
            }
            conn.poll(self, &mut framed, &svc, cx)
        })
        .await
    }
}
