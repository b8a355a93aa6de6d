//! Service discovery: where the endpoints of a balanced client come from.
//!
//! A discovery source is a [`Stream`] of [`Change`]s — `Insert(key, target)` and
//! `Remove(key)` — and that is all a [`Balance`](crate::balance::Balance) needs. Endpoints are
//! identified by their **key**, never by a position, so a removal can never hit the wrong
//! endpoint (tower's index-keyed cache, its #856).
//!
//! Three sources:
//! - [`fixed`]: a static list, inserted once;
//! - [`channel`]: a [`Publisher`] the program pushes changes into (bounded: a full channel
//!   makes `insert`/`remove` wait);
//! - [`dns`]: a host name resolved every interval on a dedicated blocking thread, the results
//!   diffed against the previous answer.
//!
//! ```
//! use futures::StreamExt;
//! use sheave_middleware::discover::{self, Change};
//!
//! # futures::executor::block_on(async {
//! let (publisher, mut changes) = discover::channel::<&str, u16>(8);
//! publisher.insert("a", 7001).await.unwrap();
//! publisher.remove("a").await.unwrap();
//! assert_eq!(changes.next().await, Some(Change::Insert("a", 7001)));
//! assert_eq!(changes.next().await, Some(Change::Remove("a")));
//! # });
//! ```

use futures::channel::mpsc;
use futures::{SinkExt, Stream};

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// One change to the set of endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<K, T> {
    /// An endpoint `K` appeared (or its target changed) at `T`.
    Insert(K, T),
    /// The endpoint `K` is gone.
    Remove(K),
}

/// A discovery source: any stream of [`Change`]s. Implemented for every such stream.
///
/// The stream ending means "no more changes": the balancer keeps the endpoints it has.
pub trait Discover: Stream<Item = Change<Self::Key, Self::Target>> {
    /// What identifies an endpoint.
    type Key;
    /// What the connector needs to reach it (typically a `SocketAddr`).
    type Target;
}

impl<S, K, T> Discover for S
where
    S: Stream<Item = Change<K, T>> + ?Sized,
{
    type Key = K;
    type Target = T;
}

/// A static list of endpoints: each is inserted once, then the stream ends.
///
/// ```
/// use futures::StreamExt;
/// use sheave_middleware::discover::{fixed, Change};
///
/// let list = fixed([("a", 1), ("b", 2)]);
/// let changes: Vec<_> = futures::executor::block_on(list.collect());
/// assert_eq!(changes, vec![Change::Insert("a", 1), Change::Insert("b", 2)]);
/// ```
pub fn fixed<K, T>(endpoints: impl IntoIterator<Item = (K, T)>) -> Fixed<K, T> {
    Fixed {
        pending: endpoints
            .into_iter()
            .map(|(k, t)| Change::Insert(k, t))
            .collect(),
    }
}

/// The stream of [`fixed`].
#[derive(Debug)]
pub struct Fixed<K, T> {
    pending: VecDeque<Change<K, T>>,
}

impl<K, T> Unpin for Fixed<K, T> {}

impl<K, T> Stream for Fixed<K, T> {
    type Item = Change<K, T>;
    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.get_mut().pending.pop_front())
    }
}

/// A bounded channel of changes: the [`Publisher`] side is `Clone + Send`; the
/// [`Subscription`] side is the discovery stream.
pub fn channel<K, T>(capacity: usize) -> (Publisher<K, T>, Subscription<K, T>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Publisher { tx }, Subscription { rx })
}

/// The sending side of [`channel`].
pub struct Publisher<K, T> {
    tx: mpsc::Sender<Change<K, T>>,
}

impl<K, T> Clone for Publisher<K, T> {
    fn clone(&self) -> Self {
        Publisher {
            tx: self.tx.clone(),
        }
    }
}

impl<K, T> fmt::Debug for Publisher<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

/// The subscription was dropped: nobody listens for changes any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("discovery subscription closed")
    }
}

impl std::error::Error for Closed {}

impl<K, T> Publisher<K, T> {
    /// Announces endpoint `key` at `target`; waits while the channel is full.
    pub async fn insert(&self, key: K, target: T) -> Result<(), Closed> {
        self.send(Change::Insert(key, target)).await
    }

    /// Announces that endpoint `key` is gone; waits while the channel is full.
    pub async fn remove(&self, key: K) -> Result<(), Closed> {
        self.send(Change::Remove(key)).await
    }

    /// Sends any change; waits while the channel is full.
    pub async fn send(&self, change: Change<K, T>) -> Result<(), Closed> {
        self.tx.clone().send(change).await.map_err(|_| Closed)
    }
}

/// The receiving side of [`channel`]: a discovery stream.
pub struct Subscription<K, T> {
    rx: mpsc::Receiver<Change<K, T>>,
}

impl<K, T> fmt::Debug for Subscription<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl<K, T> Stream for Subscription<K, T> {
    type Item = Change<K, T>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.get_mut().rx).poll_next(cx)
    }
}

/// Resolves `host:port` every `interval` on a dedicated blocking thread (name resolution
/// blocks) and yields the difference from the previous answer: an `Insert` per new address, a
/// `Remove` per vanished one. Endpoints are keyed by their `SocketAddr`.
///
/// A failed lookup is logged and changes nothing (the last known set stays). The thread stops
/// as soon as the stream is dropped (or, mid-lookup, when the lookup returns). An `interval`
/// under 100 ms is raised to 100 ms, so a zero never spins on the resolver.
///
/// ```
/// use futures::StreamExt;
/// use sheave_middleware::discover::{dns, Change};
/// use std::time::Duration;
///
/// let mut changes = dns("localhost", 6379, Duration::from_secs(30));
/// let first = futures::executor::block_on(changes.next()).unwrap();
/// assert!(matches!(first, Change::Insert(addr, _) if addr.ip().is_loopback()));
/// ```
pub fn dns(host: impl Into<String>, port: u16, interval: Duration) -> Dns {
    let host = host.into();
    let (mut tx, rx) = mpsc::channel::<Vec<SocketAddr>>(0);
    // Never sent on: dropped with the stream, which wakes the thread's wait at once.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let interval = interval.max(Duration::from_millis(100));
    let name = host.clone();
    let spawned = std::thread::Builder::new()
        .name("sheave-dns".into())
        .spawn(move || {
            loop {
                match (name.as_str(), port).to_socket_addrs() {
                    Ok(addrs) => {
                        // One answer waits at most; if the stream has not taken the last one
                        // yet, this one is dropped and the next lookup sends a fresh one.
                        match tx.try_send(addrs.collect()) {
                            Err(e) if e.is_disconnected() => return,
                            _ => {}
                        }
                    }
                    Err(e) => log::warn!("dns discovery: resolving {name}: {e}"),
                }
                match stopped.recv_timeout(interval) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return, // the stream is gone
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("dns discovery: cannot start the resolver thread: {e}");
    }
    Dns {
        host,
        _stop: stop,
        answers: rx,
        known: BTreeSet::new(),
        queued: VecDeque::new(),
    }
}

/// The stream of [`dns`].
pub struct Dns {
    host: String,
    /// Dropped with the stream: stops the resolver thread.
    _stop: std::sync::mpsc::Sender<()>,
    answers: mpsc::Receiver<Vec<SocketAddr>>,
    known: BTreeSet<SocketAddr>,
    queued: VecDeque<Change<SocketAddr, SocketAddr>>,
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns")
            .field("host", &self.host)
            .field("known", &self.known)
            .finish()
    }
}

impl Dns {
    /// Queues the changes from the known set to `answer`.
    fn diff(&mut self, answer: Vec<SocketAddr>) {
        let next: BTreeSet<SocketAddr> = answer.into_iter().collect();
        for gone in self.known.difference(&next) {
            self.queued.push_back(Change::Remove(*gone));
        }
        for new in next.difference(&self.known) {
            self.queued.push_back(Change::Insert(*new, *new));
        }
        self.known = next;
    }
}

impl Stream for Dns {
    type Item = Change<SocketAddr, SocketAddr>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.queued.pop_front() {
                return Poll::Ready(Some(change));
            }
            match Pin::new(&mut this.answers).poll_next(cx) {
                Poll::Ready(Some(answer)) => this.diff(answer),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn dns_answers_are_diffed_into_inserts_and_removes() {
        let (_tx, rx) = mpsc::channel(1);
        let mut d = Dns {
            host: "test".into(),
            _stop: std::sync::mpsc::channel().0,
            answers: rx,
            known: BTreeSet::new(),
            queued: VecDeque::new(),
        };
        d.diff(vec![addr(1), addr(2)]);
        d.diff(vec![addr(2), addr(3)]);
        d.diff(vec![addr(2), addr(3)]);
        let changes: Vec<_> = d.queued.drain(..).collect();
        assert_eq!(
            changes,
            vec![
                Change::Insert(addr(1), addr(1)),
                Change::Insert(addr(2), addr(2)),
                Change::Remove(addr(1)),
                Change::Insert(addr(3), addr(3)),
            ]
        );
    }

    /// The resolver threads of this process.
    fn resolver_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .filter(|comm| comm.trim() == "sheave-dns")
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn a_dropped_stream_stops_its_resolver_thread_at_once() {
        // Regression (review): the thread noticed only after sleeping out its interval, so
        // re-created streams piled up threads for an hour each.
        use futures::StreamExt;
        for _ in 0..5 {
            let mut d = dns("localhost", 1, Duration::from_secs(3600));
            assert!(futures::executor::block_on(d.next()).is_some());
        }
        // Each thread ends as soon as its stop channel closes; wait for that (bounded),
        // not for the hour-long interval.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while resolver_threads() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "threads outlived their streams"
            );
            std::thread::yield_now();
        }
    }
}
