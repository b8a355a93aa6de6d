//! Dialing: [`ClientConfig`] and [`Connector`], which makes a [`ClientConnection`] per address.

use super::ClientConnection;
use crate::codec::Decoder;
use crate::dispatch::{Mode, Multiplex, Pipeline};
use sheave_core::net::TcpStream;
use sheave_core::time;
use sheave_service::{Error, NewService};
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

/// Settings of a client connection; see [`ClientConnection::with_config`] and [`Connector`].
///
/// ```
/// use sheave_proto::dispatch::ClientConfig;
/// use std::time::Duration;
///
/// let cfg = ClientConfig::default().max_in_flight(16).connect_timeout(Duration::from_secs(1));
/// assert_eq!(cfg.get_max_in_flight(), 16);
/// ```
#[derive(Debug, Clone)]
pub struct ClientConfig {
    max_in_flight: usize,
    max_abandoned: Option<usize>,
    abandoned_age: Duration,
    connect_timeout: Duration,
    nodelay: bool,
}

impl Default for ClientConfig {
    /// 128 requests in flight, a 5 s connect timeout, `TCP_NODELAY` on; abandoned calls
    /// bounded to half the in-flight bound and 10 s of age.
    fn default() -> Self {
        ClientConfig {
            max_in_flight: 128,
            max_abandoned: None,
            abandoned_age: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            nodelay: true,
        }
    }
}

impl ClientConfig {
    /// At most this many requests wait for responses at once; `ready()` waits beyond it.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// The configured in-flight bound.
    pub fn get_max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// At most this many abandoned calls — calls whose callers gave up (a timeout, a
    /// cancelled future) while the peer still owes their answers — before the connection is
    /// closed (default: half of [`max_in_flight`](Self::max_in_flight), at least 1).
    ///
    /// An abandoned call keeps its slot until the peer answers, because on a pipelined
    /// connection the answers are matched by order: a peer that stopped answering would
    /// otherwise pin the whole connection's capacity. Past the bound the connection is
    /// closed: every call still waiting fails with a retryable `Closed` error (the caller
    /// may retry it elsewhere), and a balancer reconnects the endpoint.
    pub fn max_abandoned(mut self, n: usize) -> Self {
        self.max_abandoned = Some(n.max(1));
        self
    }

    /// The bound on abandoned calls in force.
    pub fn get_max_abandoned(&self) -> usize {
        self.max_abandoned
            .unwrap_or(self.max_in_flight.div_ceil(2))
            .max(1)
    }

    /// An abandoned call older than this closes the connection too (default 10 s): a peer
    /// that answers nothing for that long is hung, however few calls gave up on it. Checked
    /// whenever a call is abandoned or capacity is asked for.
    pub fn abandoned_age(mut self, age: Duration) -> Self {
        self.abandoned_age = age;
        self
    }

    /// The age bound on abandoned calls.
    pub fn get_abandoned_age(&self) -> Duration {
        self.abandoned_age
    }

    /// How long [`Connector`] waits for a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets `TCP_NODELAY` on connections made by [`Connector`].
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }
}

/// Dials a [`ClientConnection`] per address: a [`NewService<SocketAddr>`](NewService), so a balancer
/// can build one endpoint per address. Applies the connect timeout and `TCP_NODELAY` of its
/// [`ClientConfig`].
///
/// ```
/// use sheave_core::{Runtime, net::TcpListener};
/// use sheave_proto::{codec::LinesCodec, dispatch::Connector};
/// use sheave_service::NewService;
///
/// let rt = Runtime::new().unwrap();
/// rt.block_on(async {
///     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
///     let connector = Connector::pipeline(LinesCodec::new());
///     let client = connector.new_service(listener.local_addr().unwrap()).await.unwrap();
///     assert!(!client.is_closed());
/// });
/// ```
pub struct Connector<C, M = Pipeline> {
    codec: C,
    config: ClientConfig,
    mode: PhantomData<M>,
}

impl<C: Clone, M> Clone for Connector<C, M> {
    fn clone(&self) -> Self {
        Connector {
            codec: self.codec.clone(),
            config: self.config.clone(),
            mode: PhantomData,
        }
    }
}

impl<C: fmt::Debug, M> fmt::Debug for Connector<C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("mode", &std::any::type_name::<M>())
            .field("codec", &self.codec)
            .field("config", &self.config)
            .finish()
    }
}

impl<C> Connector<C, Pipeline> {
    /// Dials pipelined clients that frame with a clone of `codec`.
    pub fn pipeline(codec: C) -> Self {
        Connector::new(codec)
    }
}

impl<C> Connector<C, Multiplex> {
    /// Dials multiplexed clients that frame with a clone of `codec`.
    pub fn multiplex(codec: C) -> Self {
        Connector::new(codec)
    }
}

impl<C, M> Connector<C, M> {
    fn new(codec: C) -> Self {
        Connector {
            codec,
            config: ClientConfig::default(),
            mode: PhantomData,
        }
    }

    /// Replaces the client settings.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }
}

impl<C, M> NewService<SocketAddr> for Connector<C, M>
where
    C: Decoder + Clone + 'static,
    M: Mode<C::Item, C::Item>,
{
    type Service = ClientConnection<C, M>;
    type Error = Error;

    async fn new_service(&self, addr: SocketAddr) -> Result<ClientConnection<C, M>, Error> {
        let stream = time::timeout(self.config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::timeout().with_context(format!("connecting to {addr}")))?
            .map_err(|e| Error::io(e).with_context(format!("connecting to {addr}")))?;
        stream.set_nodelay(self.config.nodelay)?;
        Ok(ClientConnection::with_config(
            stream,
            self.codec.clone(),
            &self.config,
        ))
    }
}
