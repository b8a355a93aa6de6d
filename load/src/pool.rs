//! [`Pool`]: the connections to one address as one service, so the balancer spreads requests
//! over *addresses* and the pool finds a connection with room in constant time.
//!
//! Why not each connection as its own balancer endpoint: a closed loop keeps every slot
//! busy, so when an answer frees one slot, two random picks almost never land on it and the
//! balancer asks every endpoint in turn — O(connections) per request, a quarter of the
//! client's time at `-c 50 -P 16`. The pool keeps a stack of freed slots instead: a slot is
//! pushed back when its call ends (or its permit is dropped), and `try_ready` pops one.
//!
//! - `try_ready` pops freed slots and asks that connection; when none is left it asks every
//!   connection once (a slot held by an abandoned call frees inside the connection, without
//!   a push). A connection that is closed closes the pool (the balancer reconnects it).
//! - `ready` waits on every connection's readiness at once; the first wins.
//! - `in_flight` is the pool's own count of permits and calls.
//!
//! ```
//! use sheave_load::pool::Pool;
//! use sheave_middleware::ConcurrencyLimit;
//! use sheave_service::{service_fn, Error, Service, ServiceExt};
//!
//! // Two "connections" that add their number to the request, one request at a time each.
//! let conn = |k: u32| {
//!     ConcurrencyLimit::new(service_fn(move |n: u32| async move { Ok::<_, Error>(n + k) }), 1)
//! };
//! let pool = Pool::new(vec![conn(100), conn(200)], 1);
//! let rt = sheave_core::Runtime::new().unwrap();
//! rt.block_on(async {
//!     assert_eq!(pool.oneshot(1).await.unwrap() % 100, 1);
//!     let (a, b) = (pool.ready().await.unwrap(), pool.ready().await.unwrap());
//!     assert_eq!(pool.in_flight(), Some(2)); // a slot on each connection
//!     assert!(pool.try_ready().is_busy());
//!     drop((a, b));
//!     assert!(pool.try_ready().is_ready());
//! });
//! ```

use futures::future::{FutureExt, select_all};
use sheave_service::{Error, Service, TryReady};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

struct Slots {
    /// Connection indices with a slot freed (one entry per slot).
    free: RefCell<Vec<usize>>,
    in_flight: Cell<usize>,
}

impl Slots {
    fn give_back(&self, index: usize) {
        self.free.borrow_mut().push(index);
        self.in_flight.set(self.in_flight.get() - 1);
    }
}

/// Connections to one address as one service; see the [module docs](self).
pub struct Pool<S> {
    conns: Vec<S>,
    slots: Rc<Slots>,
    /// Where the next full scan starts, so scans spread over the connections.
    cursor: Cell<usize>,
}

impl<S> fmt::Debug for Pool<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("connections", &self.conns.len())
            .field("in_flight", &self.slots.in_flight.get())
            .finish()
    }
}

impl<S> Pool<S> {
    /// A pool of `conns`, each holding `per_connection` requests at once.
    pub fn new(conns: Vec<S>, per_connection: usize) -> Pool<S> {
        let free = (0..per_connection.max(1))
            .flat_map(|_| 0..conns.len())
            .collect();
        Pool {
            conns,
            slots: Rc::new(Slots {
                free: RefCell::new(free),
                in_flight: Cell::new(0),
            }),
            cursor: Cell::new(0),
        }
    }

    /// The connections.
    pub fn get_ref(&self) -> &[S] {
        &self.conns
    }

    fn permit<P>(&self, index: usize, inner: P) -> PoolPermit<P> {
        self.slots.in_flight.set(self.slots.in_flight.get() + 1);
        PoolPermit {
            inner: Some(inner),
            index,
            slots: self.slots.clone(),
        }
    }
}

/// Capacity on one connection of a [`Pool`]; gives its slot back when dropped unused.
pub struct PoolPermit<P> {
    inner: Option<P>,
    index: usize,
    slots: Rc<Slots>,
}

impl<P> fmt::Debug for PoolPermit<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolPermit")
            .field("connection", &self.index)
            .finish()
    }
}

impl<P> Drop for PoolPermit<P> {
    fn drop(&mut self) {
        self.slots.give_back(self.index);
    }
}

impl<S, Req> Service<Req> for Pool<S>
where
    S: Service<Req, Error = Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Permit = PoolPermit<S::Permit>;

    fn try_ready(&self) -> TryReady<Self::Permit, Error> {
        loop {
            let Some(index) = self.slots.free.borrow_mut().pop() else {
                break;
            };
            match self.conns[index].try_ready() {
                TryReady::Ready(p) => return TryReady::Ready(self.permit(index, p)),
                // Its slot is still held by an abandoned call: forget this entry (the full
                // scan below finds the slot once the connection frees it).
                TryReady::Busy => {}
                TryReady::Closed(e) => return TryReady::Closed(e),
            }
        }
        let n = self.conns.len();
        let start = self.cursor.get();
        self.cursor.set((start + 1) % n.max(1));
        for k in 0..n {
            let index = (start + k) % n;
            match self.conns[index].try_ready() {
                TryReady::Ready(p) => return TryReady::Ready(self.permit(index, p)),
                TryReady::Busy => {}
                TryReady::Closed(e) => return TryReady::Closed(e),
            }
        }
        TryReady::Busy
    }

    async fn ready(&self) -> Result<Self::Permit, Error> {
        match self.try_ready() {
            TryReady::Ready(p) => return Ok(p),
            TryReady::Closed(e) => return Err(e),
            TryReady::Busy => {}
        }
        let waits = self
            .conns
            .iter()
            .map(|c| c.ready().boxed_local())
            .collect::<Vec<_>>();
        let (ready, index, _rest) = select_all(waits).await;
        match ready {
            Ok(p) => Ok(self.permit(index, p)),
            Err(e) => Err(e),
        }
    }

    fn in_flight(&self) -> Option<usize> {
        Some(self.slots.in_flight.get())
    }

    async fn call(&self, mut permit: Self::Permit, req: Req) -> Result<S::Response, Error> {
        let inner = permit.inner.take().expect("a permit is used once");
        // `permit` stays alive until the call ends or is dropped: then its slot is pushed back.
        self.conns[permit.index].call(inner, req).await
    }
}
