//! The TCP proxy (L4): each accepted connection is spliced to one endpoint of a balanced
//! cluster, with a bounded buffer in each direction, half-closes passed through, and an idle
//! timeout.
//!
//! **The balancer sees connections as load.** Each endpoint is a [`Dialer`]: a service whose
//! call opens a connection to it, and whose [`in_flight`](Service::in_flight) is the number
//! of proxied connections open to it. So p2c over peak-EWMA weighs an endpoint by its open
//! connections times its connect latency, round robin takes turns, and an endpoint that
//! refuses connections fails calls and is ejected like any failing endpoint. A refused
//! connect sent nothing, so it is retried (on another pick) within the budget.
//!
//! **Splicing.** Each direction reads at most `buffer` bytes, then writes them all before it
//! reads again, so a slow reader on one side stops the reading on the other (TCP pushes back
//! on the sender) and memory stays at two buffers per connection. When one side sends its
//! FIN (a read of 0), the proxy shuts down the write side towards the other and keeps the
//! other direction going: a client that half-closes still gets its whole answer. A
//! connection with no byte in either direction for `idle_timeout` is closed. On a drain,
//! spliced connections are left to finish for the server's drain timeout (10 s), then
//! dropped.
//!
//! ```
//! use sheave_proxy::{Proxy, config::Config};
//! use std::io::{Read, Write};
//!
//! // An echo backend on a thread, and the proxy in front of it.
//! let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = backend.local_addr().unwrap();
//! std::thread::spawn(move || {
//!     let (mut conn, _) = backend.accept().unwrap();
//!     let mut all = Vec::new();
//!     conn.read_to_end(&mut all).unwrap(); // until the client's FIN, passed through
//!     conn.write_all(&all).unwrap();
//! });
//! let proxy = Proxy::start(Config::parse(&format!(r#"
//!     [[listener]]
//!     name = "l4"
//!     address = "127.0.0.1:0"
//!     protocol = "tcp"
//!     cluster = "echo"
//!     [[cluster]]
//!     name = "echo"
//!     policy = "round-robin"
//!     endpoints = ["{addr}"]
//! "#)).unwrap()).unwrap();
//! let mut conn = std::net::TcpStream::connect(proxy.addr("l4").unwrap()).unwrap();
//! conn.write_all(b"half-closed").unwrap();
//! conn.shutdown(std::net::Shutdown::Write).unwrap();
//! let mut back = String::new();
//! conn.read_to_string(&mut back).unwrap();
//! assert_eq!(back, "half-closed");
//! ```

use crate::config;
use crate::metrics::{ClusterMetrics, ListenerMetrics};
use sheave_core::net::TcpStream;
use sheave_core::time;
use sheave_middleware::ServiceBuilderExt;
use sheave_middleware::balance::Balance;
use sheave_middleware::retry::{Retry, RetryableFailures};
use sheave_proto::Driver;
use sheave_service::{Error, ErrorKind, Service, ServiceBuilder};
use std::cell::{Cell, RefCell};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A connection to an endpoint, counted open (in the endpoint's load) until dropped.
#[derive(Debug)]
pub struct Upstream {
    /// The connection.
    pub stream: TcpStream,
    open: Rc<Cell<usize>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.open.set(self.open.get() - 1);
    }
}

/// One endpoint of an L4 cluster: each call connects to it.
#[derive(Debug, Clone)]
pub struct Dialer {
    addr: SocketAddr,
    index: usize,
    connect_timeout: Duration,
    open: Rc<Cell<usize>>,
    metrics: Rc<ClusterMetrics>,
}

impl Service<()> for Dialer {
    type Response = Upstream;
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        Ok(())
    }

    fn try_ready(&self) -> sheave_service::TryReady<(), Error> {
        sheave_service::TryReady::Ready(())
    }

    async fn call(&self, (): (), (): ()) -> Result<Upstream, Error> {
        let m = self.metrics.endpoint(self.index);
        let start = time::now();
        let outcome = match time::timeout(self.connect_timeout, TcpStream::connect(self.addr)).await
        {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                self.open.set(self.open.get() + 1);
                m.connections.set(m.connections.get() + 1);
                Ok(Upstream {
                    stream,
                    open: self.open.clone(),
                })
            }
            // Nothing was sent on a connection that never opened: safe to retry.
            Ok(Err(e)) => Err(Error::msg(
                ErrorKind::Unavailable,
                format!("connect to {}: {e}", self.addr),
            )
            .retryable()),
            Err(_) => Err(Error::msg(
                ErrorKind::Unavailable,
                format!("connect to {}: timed out", self.addr),
            )
            .retryable()),
        };
        m.attempt(start.elapsed(), outcome.as_ref().err().map(Error::kind));
        outcome
    }

    fn in_flight(&self) -> Option<usize> {
        Some(self.open.get())
    }
}

/// The balanced dialer of `cluster` on this runtime thread: a deadline for the whole
/// connect (retries included) > retry of refused connects within the budget > the balancer.
pub fn cluster_dialer(
    cluster: &config::Cluster,
    metrics: Rc<ClusterMetrics>,
) -> impl Service<(), Response = Upstream, Error = Error> + use<> {
    let connect_timeout = cluster.connect_timeout;
    let probe_metrics = metrics.clone();
    let connect = move |(label, addr): crate::discovery::Target| {
        let dialer = Dialer {
            addr,
            index: metrics.endpoint_named(&label),
            connect_timeout,
            open: Rc::new(Cell::new(0)),
            metrics: metrics.clone(),
        };
        async move { Ok::<_, Error>(dialer) }
    };
    let builder = crate::stack::balancer(cluster, Balance::builder());
    let balance = Rc::new(builder.build(crate::discovery::changes(cluster), connect));
    crate::http::probe_balancer(&probe_metrics, &balance);
    let (retry, budget) = crate::stack::retry(cluster, &probe_metrics);
    ServiceBuilder::new()
        .timeout(cluster.request_timeout)
        .service(Retry::with_budget(
            balance,
            RetryableFailures::new(),
            retry,
            budget,
        ))
}

/// An L4 listener's dialer and its cluster's counters on one runtime thread, as the last
/// reload left them: each connection takes the pair current when it is accepted and keeps
/// it to its end, so a reload swaps in a new cluster stack for the next connections while
/// the open ones stay spliced where they are.
pub type LiveDialer<D> = Rc<RefCell<(Rc<D>, Rc<ClusterMetrics>)>>;

/// Serves one L4 listener's connections on one runtime thread.
#[derive(Debug)]
pub struct TcpDriver<D> {
    dialer: LiveDialer<D>,
    buffer: usize,
    idle_timeout: Duration,
    listener: Rc<ListenerMetrics>,
}

impl<D> TcpDriver<D> {
    /// A driver that splices each connection to a connection from the dialer current in
    /// `dialer` when it is accepted.
    pub fn new(
        dialer: LiveDialer<D>,
        listener: &config::Listener,
        listener_metrics: Rc<ListenerMetrics>,
    ) -> Self {
        TcpDriver {
            dialer,
            buffer: listener.buffer,
            idle_timeout: listener.idle_timeout,
            listener: listener_metrics,
        }
    }
}

impl<D> Driver for TcpDriver<D>
where
    D: Service<(), Response = Upstream, Error = Error>,
{
    async fn drive(&self, client: TcpStream, peer: SocketAddr, _drain: impl Future<Output = ()>) {
        let l = &self.listener;
        l.accepted.set(l.accepted.get() + 1);
        let start = time::now();
        let (dialer, metrics) = self.dialer.borrow().clone();
        let upstream = async {
            let permit = dialer.ready().await?;
            dialer.call(permit, ()).await
        }
        .await;
        metrics.request(start.elapsed(), upstream.as_ref().err().map(Error::kind));
        match upstream {
            Ok(upstream) => {
                let _ = client.set_nodelay(true);
                let last = Cell::new(time::now());
                let up = pump(
                    &client,
                    &upstream.stream,
                    self.buffer,
                    self.idle_timeout,
                    &last,
                );
                let down = pump(
                    &upstream.stream,
                    &client,
                    self.buffer,
                    self.idle_timeout,
                    &last,
                );
                let (a, b) = futures::future::join(up, down).await;
                if let Err(e) = a.and(b) {
                    log::debug!("{peer}: {e}");
                }
            }
            Err(e) => log::warn!("{peer}: no upstream: {e}"),
        }
        l.closed.set(l.closed.get() + 1);
    }
}

/// Copies `from` to `to` through one buffer until `from` ends, then passes the FIN on.
/// Fails (ending both directions: the connection is then dropped) on an I/O error or when
/// neither direction moved a byte for `idle` (`last` is shared by both).
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    buffer: usize,
    idle: Duration,
    last: &Cell<Instant>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; buffer];
    loop {
        let n = loop {
            let deadline = last.get() + idle;
            match time::timeout_at(deadline, from.read(&mut buf)).await {
                Ok(read) => break read?,
                // The other direction may have moved meanwhile: idle only if neither did.
                Err(_) if time::now() >= last.get() + idle => {
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "idle timeout",
                    ));
                }
                Err(_) => continue,
            }
        };
        if n == 0 {
            let _ = to.shutdown(Shutdown::Write);
            return Ok(());
        }
        last.set(time::now());
        let mut sent = 0;
        while sent < n {
            let w = to.write(&buf[sent..n]).await?;
            if w == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            sent += w;
            last.set(time::now());
        }
    }
}
