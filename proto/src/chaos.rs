//! [`ChaosProxy`]: a TCP proxy that misbehaves on purpose, between any client and any server
//! on loopback — Toxiproxy's job, built on sheave's runtime.
//!
//! It relays bytes both ways and applies the [`Toxics`] in force: added latency and jitter,
//! a bandwidth cap, a reset after N bytes, a blackhole (accept, then never forward and never
//! close — a hung host), a half-close, refusing new connections, and writes sliced into
//! 1-byte segments. Rules apply to all traffic ([`ChaosHandle::set`]) or to one connection
//! ([`ChaosHandle::set_for`]), and change while traffic flows: each chunk is judged by the
//! rules in force when it is read, and a held (blackholed) connection resumes when the rule
//! is lifted.
//!
//! # Guarantees
//!
//! * **Loopback only.** [`bind`](ChaosProxy::bind) refuses a listen or upstream address off
//!   loopback: this is a test tool.
//! * **Bounded.** Each direction of a connection moves at most one 16 KiB chunk at a time,
//!   so a held or throttled connection holds at most that much in the proxy (the rest waits
//!   in the kernel's socket buffers, as it would in front of a slow peer).
//! * **Every loop ends**: a relay ends when both sides have closed or when a reset fires (or
//!   with its runtime); a blackholed connection waits on a rule change, not a timer, and
//!   [`ChaosHandle::stop`] releases it.
//!
//! # Example
//!
//! ```
//! use sheave_core::{Runtime, net::{TcpListener, TcpStream}};
//! use sheave_proto::chaos::{ChaosProxy, Toxics};
//! use std::time::Duration;
//!
//! let rt = Runtime::new().unwrap();
//! rt.block_on(async {
//!     // An upstream that echoes one message.
//!     let upstream = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//!     let upstream_addr = upstream.local_addr().unwrap();
//!     sheave_core::spawn(async move {
//!         let (conn, _) = upstream.accept().await.unwrap();
//!         let mut buf = [0u8; 5];
//!         let n = conn.read(&mut buf).await.unwrap();
//!         conn.write(&buf[..n]).await.unwrap();
//!     });
//!
//!     let proxy = ChaosProxy::bind("127.0.0.1:0".parse().unwrap(), upstream_addr).unwrap();
//!     let (addr, chaos) = (proxy.local_addr(), proxy.handle());
//!     sheave_core::spawn(proxy.run());
//!     chaos.set(Toxics::none().latency(Duration::from_millis(20), Duration::ZERO));
//!
//!     let client = TcpStream::connect(addr).await.unwrap();
//!     let start = std::time::Instant::now();
//!     client.write(b"hello").await.unwrap();
//!     let mut buf = [0u8; 5];
//!     let mut got = 0;
//!     while got < 5 {
//!         got += client.read(&mut buf[got..]).await.unwrap();
//!     }
//!     assert_eq!(&buf, b"hello");
//!     assert!(start.elapsed() >= Duration::from_millis(40), "20 ms each way");
//! });
//! ```

use futures::future::{Either, select};
use rand::Rng;
use sheave_core::net::{TcpListener, TcpStream};
use sheave_core::time::{self, sleep};
use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Duration;

/// The largest chunk a direction moves at once.
const CHUNK: usize = 16 * 1024;

/// How long the proxy waits to connect upstream before it resets the client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy does to traffic; [`Toxics::none`] relays untouched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Toxics {
    latency: Duration,
    jitter: Duration,
    bandwidth: Option<u64>,
    reset_after: Option<u64>,
    blackhole: bool,
    half_close: bool,
    refuse: bool,
    slice: bool,
}

impl Toxics {
    /// No toxic: a plain relay.
    pub fn none() -> Self {
        Toxics::default()
    }

    /// Each chunk, each way, waits `latency` plus a uniform `0..=jitter` before it is sent on.
    pub fn latency(mut self, latency: Duration, jitter: Duration) -> Self {
        self.latency = latency;
        self.jitter = jitter;
        self
    }

    /// At most `bytes_per_second` each way (at least 1).
    pub fn bandwidth(mut self, bytes_per_second: u64) -> Self {
        self.bandwidth = Some(bytes_per_second.max(1));
        self
    }

    /// Once `bytes` have passed (both ways together), both sides get a TCP reset.
    pub fn reset_after(mut self, bytes: u64) -> Self {
        self.reset_after = Some(bytes);
        self
    }

    /// Nothing is forwarded and nothing is closed — a hung host. Bytes wait in the socket
    /// buffers; lifting the rule lets them through.
    pub fn blackhole(mut self) -> Self {
        self.blackhole = true;
        self
    }

    /// The client's side is half-closed: it reads end-of-stream while what it writes still
    /// reaches the server.
    pub fn half_close(mut self) -> Self {
        self.half_close = true;
        self
    }

    /// New connections are reset as soon as they are accepted (what a host refusing
    /// connections looks like to a client that connected through a proxy).
    pub fn refuse(mut self) -> Self {
        self.refuse = true;
        self
    }

    /// Every write is one byte (with `TCP_NODELAY`, one segment per byte): the peer's parser
    /// sees every split point.
    pub fn slice(mut self) -> Self {
        self.slice = true;
        self
    }

    /// Whether the rules hold traffic (blackhole).
    pub fn is_blackhole(&self) -> bool {
        self.blackhole
    }
}

/// What the proxy has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChaosStats {
    /// Connections accepted and relayed.
    pub accepted: u64,
    /// Connections refused (reset at once).
    pub refused: u64,
    /// Connections reset by `reset_after`.
    pub resets: u64,
    /// Bytes from clients to the upstream.
    pub bytes_up: u64,
    /// Bytes from the upstream to clients.
    pub bytes_down: u64,
}

#[derive(Default)]
struct Rules {
    all: Toxics,
    per_connection: HashMap<u64, Toxics>,
    live: Vec<u64>,
    /// Tasks waiting for a rule change (a held relay, the accept loop), by wait id; each
    /// wait removes its own entry when it ends.
    waiting: HashMap<u64, Waker>,
    next_wait: u64,
    /// Bumped by every change.
    version: u64,
}

#[derive(Default)]
struct Control {
    rules: Mutex<Rules>,
    stopped: AtomicBool,
    accepted: AtomicU64,
    refused: AtomicU64,
    resets: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    next_id: AtomicU64,
}

impl Control {
    fn rules(&self) -> MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn toxics(&self, id: u64) -> Toxics {
        let rules = self.rules();
        rules.per_connection.get(&id).copied().unwrap_or(rules.all)
    }

    fn change(&self, f: impl FnOnce(&mut Rules)) {
        let woken = {
            let mut rules = self.rules();
            f(&mut rules);
            rules.version += 1;
            std::mem::take(&mut rules.waiting)
        };
        woken.into_values().for_each(Waker::wake);
    }

    /// The rules' version if connection `id` is blackholed now (read under one lock, so a
    /// lift that comes right after is not missed), `None` if it may flow.
    fn held(&self, id: u64) -> Option<u64> {
        let rules = self.rules();
        let toxics = rules.per_connection.get(&id).copied().unwrap_or(rules.all);
        (toxics.blackhole && !self.stopped.load(Ordering::SeqCst)).then_some(rules.version)
    }

    /// Waits until the rules change from now (or the proxy stops).
    async fn changed(&self) {
        let seen = self.rules().version;
        self.changed_since(seen).await
    }

    /// Waits until the rules' version differs from `seen` (or the proxy stops).
    async fn changed_since(&self, seen: u64) {
        /// Takes the wait's entry out when the wait ends or is dropped.
        struct Wait<'a>(&'a Control, Option<u64>);
        impl Drop for Wait<'_> {
            fn drop(&mut self) {
                if let Some(key) = self.1 {
                    self.0.rules().waiting.remove(&key);
                }
            }
        }
        let mut wait = Wait(self, None);
        poll_fn(|cx| {
            let mut rules = self.rules();
            if rules.version != seen || self.stopped.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            let key = *wait.1.get_or_insert_with(|| {
                rules.next_wait += 1;
                rules.next_wait
            });
            rules.waiting.insert(key, cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Changes a running [`ChaosProxy`]'s rules from any thread; cheap to clone.
#[derive(Clone)]
pub struct ChaosHandle {
    control: Arc<Control>,
}

impl fmt::Debug for ChaosHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules = self.control.rules();
        f.debug_struct("ChaosHandle")
            .field("all", &rules.all)
            .field("per_connection", &rules.per_connection)
            .field("live", &rules.live.len())
            .finish()
    }
}

impl ChaosHandle {
    /// The rules for every connection without its own, from the next chunk on.
    pub fn set(&self, toxics: Toxics) {
        self.control.change(|r| r.all = toxics);
    }

    /// The rules for connection `id` (see [`connections`](Self::connections)).
    pub fn set_for(&self, id: u64, toxics: Toxics) {
        self.control.change(|r| {
            r.per_connection.insert(id, toxics);
        });
    }

    /// Connection `id` follows the rules for all again.
    pub fn clear_for(&self, id: u64) {
        self.control.change(|r| {
            r.per_connection.remove(&id);
        });
    }

    /// Back to a plain relay, for every connection.
    pub fn clear(&self) {
        self.control.change(|r| {
            r.all = Toxics::none();
            r.per_connection.clear();
        });
    }

    /// The ids of the connections being relayed now, oldest first.
    pub fn connections(&self) -> Vec<u64> {
        self.control.rules().live.clone()
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> ChaosStats {
        let c = &self.control;
        ChaosStats {
            accepted: c.accepted.load(Ordering::SeqCst),
            refused: c.refused.load(Ordering::SeqCst),
            resets: c.resets.load(Ordering::SeqCst),
            bytes_up: c.bytes_up.load(Ordering::SeqCst),
            bytes_down: c.bytes_down.load(Ordering::SeqCst),
        }
    }

    /// Stops accepting; held relays are released to end. Connections already relayed run
    /// until they close.
    pub fn stop(&self) {
        self.control.stopped.store(true, Ordering::SeqCst);
        self.control.change(|_| {});
    }
}

/// A misbehaving TCP proxy; see the [module docs](self). Bound on a runtime thread, served
/// there by [`run`](ChaosProxy::run).
pub struct ChaosProxy {
    listener: TcpListener,
    local: SocketAddr,
    upstream: SocketAddr,
    control: Arc<Control>,
}

impl fmt::Debug for ChaosProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosProxy")
            .field("listen", &self.local)
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl ChaosProxy {
    /// Listens on `listen` and relays to `upstream`; both must be loopback addresses.
    pub fn bind(listen: SocketAddr, upstream: SocketAddr) -> io::Result<ChaosProxy> {
        for (what, addr) in [("listen", listen), ("upstream", upstream)] {
            if !addr.ip().is_loopback() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the chaos proxy's {what} address {addr} is not on loopback"),
                ));
            }
        }
        let listener = TcpListener::bind(listen)?;
        Ok(ChaosProxy {
            local: listener.local_addr()?,
            listener,
            upstream,
            control: Arc::default(),
        })
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Changes the rules, from any thread.
    pub fn handle(&self) -> ChaosHandle {
        ChaosHandle {
            control: self.control.clone(),
        }
    }

    /// Accepts and relays until [`ChaosHandle::stop`]; each connection is relayed by a task
    /// of its own on this thread.
    pub async fn run(self) {
        let control = &self.control;
        while !control.stopped.load(Ordering::SeqCst) {
            let accepted = {
                let accept = pin!(self.listener.accept());
                let stop = pin!(control.changed());
                match select(accept, stop).await {
                    Either::Left((accepted, _)) => accepted,
                    Either::Right(((), _)) => continue,
                }
            };
            let Ok((client, _)) = accepted else {
                continue; // the listener backs off on EMFILE itself
            };
            let id = control.next_id.fetch_add(1, Ordering::SeqCst);
            if control.toxics(id).refuse {
                control.refused.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_linger(Some(Duration::ZERO));
                continue;
            }
            control.accepted.fetch_add(1, Ordering::SeqCst);
            sheave_core::spawn(relay(client, self.upstream, id, self.control.clone()));
        }
    }
}

/// How one direction of a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The sender closed (or failed): its half is done.
    Closed,
    /// A `reset_after` fired: the whole connection goes down with RSTs.
    Reset,
}

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Up,
    Down,
}

async fn relay(client: TcpStream, upstream: SocketAddr, id: u64, control: Arc<Control>) {
    let server = match time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
        Ok(Ok(server)) => server,
        _ => {
            let _ = client.set_linger(Some(Duration::ZERO));
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    control.change(|r| r.live.push(id));
    let passed = Rc::new(std::cell::Cell::new(0u64));
    let up = pin!(pump(&client, &server, Way::Up, id, &control, &passed));
    let down = pin!(pump(&server, &client, Way::Down, id, &control, &passed));
    let reset = match select(up, down).await {
        Either::Left((End::Reset, _)) | Either::Right((End::Reset, _)) => true,
        Either::Left((End::Closed, other)) => other.await == End::Reset,
        Either::Right((End::Closed, other)) => other.await == End::Reset,
    };
    if reset {
        control.resets.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_linger(Some(Duration::ZERO));
        let _ = server.set_linger(Some(Duration::ZERO));
    }
    control.change(|r| {
        r.live.retain(|&c| c != id);
        r.per_connection.remove(&id);
    });
}

/// Moves bytes `from` → `to` under the rules in force, chunk by chunk.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    way: Way,
    id: u64,
    control: &Control,
    passed: &std::cell::Cell<u64>,
) -> End {
    let mut buf = vec![0u8; CHUNK];
    loop {
        // Held while blackholed: nothing read, nothing forwarded, nothing closed.
        while let Some(version) = control.held(id) {
            control.changed_since(version).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return End::Closed;
            }
            Ok(n) => n,
        };
        let toxics = control.toxics(id);
        if way == Way::Down && toxics.half_close {
            let _ = to.shutdown(Shutdown::Write);
            return End::Closed;
        }
        let delay = toxics.latency
            + if toxics.jitter.is_zero() {
                Duration::ZERO
            } else {
                let span = toxics.jitter.as_nanos() as u64;
                Duration::from_nanos(rand::rng().random_range(0..=span))
            };
        if !delay.is_zero() {
            sleep(delay).await;
        }
        // A blackhole that began while this chunk was on its way holds it too.
        while let Some(version) = control.held(id) {
            control.changed_since(version).await;
        }
        if let Some(rate) = toxics.bandwidth {
            sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
        let (chunk, reset) = match toxics.reset_after {
            Some(limit) if passed.get() + n as u64 >= limit => (
                &buf[..(limit.saturating_sub(passed.get()) as usize).min(n)],
                true,
            ),
            _ => (&buf[..n], false),
        };
        if write_all(to, chunk, toxics.slice).await.is_err() {
            return End::Closed;
        }
        passed.set(passed.get() + chunk.len() as u64);
        let counter = match way {
            Way::Up => &control.bytes_up,
            Way::Down => &control.bytes_down,
        };
        counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        if reset {
            return End::Reset;
        }
    }
}

async fn write_all(to: &TcpStream, mut chunk: &[u8], slice: bool) -> io::Result<()> {
    while !chunk.is_empty() {
        let step = if slice { 1 } else { chunk.len() };
        let n = to.write(&chunk[..step]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        chunk = &chunk[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_off_loopback_is_refused() {
        let rt = sheave_core::Runtime::new().unwrap();
        rt.block_on(async {
            let err =
                ChaosProxy::bind("0.0.0.0:0".parse().unwrap(), "127.0.0.1:1".parse().unwrap())
                    .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains("not on loopback"), "{err}");
            let err = ChaosProxy::bind(
                "127.0.0.1:0".parse().unwrap(),
                "10.0.0.1:6379".parse().unwrap(),
            )
            .unwrap_err();
            assert!(err.to_string().contains("upstream"), "{err}");
        });
    }
}
