//! The client side of the dispatcher: a [`Service`] over one connection, and a connector.

use super::{Mode, Multiplex, Pipeline};
use crate::codec::{Decoder, Encoder};
use crate::framed::Framed;
use sheave_core::net::TcpStream;
use sheave_core::sync::{Cancelled, WaitQueue, WaiterId};
use sheave_core::time;
use sheave_service::{Error, NewService, Service, TryReady};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Settings of a client connection; see [`Client::with_config`] and [`Connector`].
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
    connect_timeout: Duration,
    nodelay: bool,
}

impl Default for ClientConfig {
    /// 128 requests in flight, a 5 s connect timeout, `TCP_NODELAY` on.
    fn default() -> Self {
        ClientConfig {
            max_in_flight: 128,
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

/// A waiting caller's place: filled by the connection task, or failed when it dies.
enum CallSlot<R> {
    Waiting(Option<Waker>),
    Done(Result<R, Error>),
    /// The caller went away; the response is discarded when it arrives.
    Abandoned,
}

/// The state shared by the client handles and the connection task.
struct State<R> {
    slots: Vec<Option<CallSlot<R>>>,
    free: Vec<usize>,
    /// Pipeline: slots in the order their requests were written.
    order: VecDeque<usize>,
    /// Permits handed out plus requests awaiting their response.
    in_flight: usize,
    closed: Option<Error>,
    conn_task: Option<Waker>,
    /// The `ready()` callers waiting for capacity, served in arrival order with hand-off: a
    /// release hands its capacity to **one** of them (waking all of them made every response
    /// cost O(waiters) polls: with `n` callers waiting, dispatch cost grew as `n²`), and a
    /// waiter that goes away passes what it was handed on.
    ready_waiters: WaitQueue,
}

impl<R> State<R> {
    fn insert(&mut self, slot: CallSlot<R>) -> usize {
        match self.free.pop() {
            Some(key) => {
                self.slots[key] = Some(slot);
                key
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, key: usize) {
        self.slots[key] = None;
        self.free.push(key);
    }

    /// Gives one unit of capacity back: to the first waiter if any (the count stays, now
    /// theirs), else to the pool.
    fn release(&mut self) {
        match self.ready_waiters.grant_front() {
            Some(waiter) => waiter.wake(),
            None => self.in_flight -= 1,
        }
    }

    fn wake_conn(&mut self) {
        if let Some(w) = &self.conn_task {
            w.wake_by_ref();
        }
    }

    /// Fills the slot `key` with a response; `false` if no request is waiting under `key`.
    fn fill(&mut self, key: usize, resp: Result<R, Error>) -> bool {
        match self.slots.get_mut(key).and_then(Option::as_mut) {
            Some(slot @ CallSlot::Waiting(_)) => {
                if let CallSlot::Waiting(Some(w)) = std::mem::replace(slot, CallSlot::Done(resp)) {
                    w.wake();
                }
            }
            Some(CallSlot::Abandoned) => self.remove(key),
            _ => return false,
        }
        self.release();
        true
    }

    /// The connection is gone: every waiting caller gets `err`, and so will every later one.
    fn fail_all(&mut self, err: Error) {
        self.closed = Some(err.clone());
        for key in 0..self.slots.len() {
            if matches!(
                self.slots[key],
                Some(CallSlot::Waiting(_) | CallSlot::Abandoned)
            ) {
                self.fill(key, Err(err.clone()));
            }
        }
        self.order.clear();
        // Every waiter has its answer now: the error.
        for waiter in self.ready_waiters.take_all() {
            waiter.wake();
        }
    }
}

struct Shared<C: Decoder, M> {
    framed: RefCell<Framed<TcpStream, C>>,
    state: RefCell<State<C::Item>>,
    max_in_flight: usize,
    handles: Cell<usize>,
    mode: PhantomData<M>,
}

/// A client [`Service`] over one connection: requests are written by the callers into one
/// buffer, a spawned connection task writes them out in batches and hands each response to
/// its caller.
///
/// - [`ready`](Service::ready) is honest: it waits while `max_in_flight` requests are
///   outstanding and fails with [`ErrorKind::Closed`](sheave_service::ErrorKind::Closed)
///   once the connection is gone.
/// - When the connection dies (the peer closes, an I/O or protocol error), every request in
///   flight fails with a `Closed` error; none is left waiting.
/// - A caller that gives up (drops its call future) keeps its place: its response is read and
///   discarded, so later responses still reach their callers.
/// - Cloning is cheap (an `Rc`); the connection closes once every clone is dropped and the
///   requests in flight are answered.
/// - Pipelined, responses are matched to requests in order: a request the peer answers
///   zero times or twice shifts every later response onto the wrong caller. Send only
///   requests the protocol answers exactly once ([`resp::check_command`](crate::resp::check_command)
///   checks RESP commands; [`resp::Client`](crate::resp::Client) applies it).
///
/// Build one over a connected stream ([`Client::pipeline`], [`Client::multiplex`]) or let a
/// [`Connector`] dial. Must be created on a runtime thread (it spawns the connection task).
///
/// ```
/// use sheave_core::{Runtime, net::{TcpListener, TcpStream}};
/// use sheave_proto::{codec::LinesCodec, dispatch::Client};
/// use sheave_service::{ErrorKind, Service, ServiceExt};
///
/// let rt = Runtime::new().unwrap();
/// rt.block_on(async {
///     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
///     let client = Client::pipeline(
///         TcpStream::connect(listener.local_addr().unwrap()).await.unwrap(),
///         LinesCodec::new(),
///     );
///     let (conn, _) = listener.accept().await.unwrap();
///     drop(conn); // the server goes away
///     let err = client.clone().oneshot("anyone?".to_string()).await.unwrap_err();
///     assert_eq!(err.kind(), ErrorKind::Closed);
///     assert!(Service::<String>::ready(&client).await.is_err()); // and it stays closed
/// });
/// ```
pub struct Client<C: Decoder, M = Pipeline> {
    shared: Rc<Shared<C, M>>,
}

impl<C: Decoder, M> Clone for Client<C, M> {
    fn clone(&self) -> Self {
        self.shared.handles.set(self.shared.handles.get() + 1);
        Client {
            shared: self.shared.clone(),
        }
    }
}

impl<C: Decoder, M> Drop for Client<C, M> {
    fn drop(&mut self) {
        self.shared.handles.set(self.shared.handles.get() - 1);
        if self.shared.handles.get() == 0 {
            self.shared.state.borrow_mut().wake_conn();
        }
    }
}

impl<C: Decoder, M> fmt::Debug for Client<C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.borrow();
        f.debug_struct("Client")
            .field("mode", &std::any::type_name::<M>())
            .field("in_flight", &state.in_flight)
            .field("max_in_flight", &self.shared.max_in_flight)
            .field("closed", &state.closed)
            .finish()
    }
}

impl<C: Decoder + 'static> Client<C, Pipeline> {
    /// A pipelined client over `stream` with the default [`ClientConfig`].
    pub fn pipeline(stream: TcpStream, codec: C) -> Self {
        Client::with_config(stream, codec, &ClientConfig::default())
    }
}

impl<C: Decoder + 'static> Client<C, Multiplex>
where
    C::Item: super::Tagged,
{
    /// A multiplexed client over `stream` with the default [`ClientConfig`].
    pub fn multiplex(stream: TcpStream, codec: C) -> Self {
        Client::with_config(stream, codec, &ClientConfig::default())
    }
}

impl<C: Decoder + 'static, M: Mode<C::Item, C::Item>> Client<C, M> {
    /// A client over `stream`; spawns its connection task on the current runtime thread.
    ///
    /// (The bound on `M` is its response side: for [`Multiplex`], responses are [`Tagged`](super::Tagged).)
    pub fn with_config(stream: TcpStream, codec: C, config: &ClientConfig) -> Self {
        let shared = Rc::new(Shared {
            framed: RefCell::new(Framed::new(stream, codec)),
            state: RefCell::new(State {
                slots: Vec::new(),
                free: Vec::new(),
                order: VecDeque::new(),
                in_flight: 0,
                closed: None,
                conn_task: None,
                ready_waiters: WaitQueue::new(),
            }),
            max_in_flight: config.max_in_flight,
            handles: Cell::new(1),
            mode: PhantomData,
        });
        let task = TaskGuard(shared.clone());
        sheave_core::spawn(async move { poll_fn(|cx| drive::<C, M>(&task.0, cx)).await });
        Client { shared }
    }

    /// Whether the connection is gone (every call now fails with `Closed`).
    pub fn is_closed(&self) -> bool {
        self.shared.state.borrow().closed.is_some()
    }
}

/// The connection task: writes what callers encoded, reads responses and hands them out.
fn drive<C: Decoder, M: Mode<C::Item, C::Item>>(
    shared: &Shared<C, M>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let mut framed = shared.framed.borrow_mut();
    let mut state = shared.state.borrow_mut();
    match &state.conn_task {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => state.conn_task = Some(cx.waker().clone()),
    }
    let result = loop {
        if let Poll::Ready(Err(e)) = framed.poll_flush_buf(cx) {
            break Err(e);
        }
        match framed.poll_fill(cx) {
            Poll::Ready(Ok(0)) => break Err(Error::closed().with_context("closed by the peer")),
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => break Err(e),
            Poll::Pending => {
                if shared.handles.get() == 0 && state.in_flight == 0 {
                    break Ok(());
                }
                return Poll::Pending;
            }
        }
        let mut failed = None;
        loop {
            match framed.decode() {
                Ok(Some(resp)) => {
                    let key = if <M as Mode<C::Item, C::Item>>::ORDERED {
                        state.order.pop_front()
                    } else {
                        usize::try_from(M::response_tag(&resp)).ok()
                    };
                    if !key.is_some_and(|key| state.fill(key, Ok(resp))) {
                        failed = Some(Error::protocol("a response that matches no request"));
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
    };
    let err = match result {
        Ok(()) => Error::closed().with_context("client dropped"),
        Err(e) if e.is_closed() => e,
        Err(e) => {
            log::debug!("client connection failed: {e}");
            Error::closed().with_context(format!("connection failed: {e}"))
        }
    };
    state.fail_all(err);
    let _ = framed.get_ref().shutdown(std::net::Shutdown::Both);
    Poll::Ready(())
}

/// Held by the connection task: however the task ends — `drive` returning, or a panic (a
/// codec's, say) that the runtime catches and drops the task for — every caller still
/// waiting is failed, never left hanging.
struct TaskGuard<C: Decoder, M>(Rc<Shared<C, M>>);

impl<C: Decoder, M> Drop for TaskGuard<C, M> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.try_borrow_mut()
            && state.closed.is_none()
        {
            state.fail_all(Error::closed().with_context("the connection task ended"));
        }
    }
}

/// Capacity for one request on a [`Client`]; dropping it unused gives the capacity back.
pub struct Permit<C: Decoder, M> {
    shared: Option<Rc<Shared<C, M>>>,
}

impl<C: Decoder, M> fmt::Debug for Permit<C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl<C: Decoder, M> Drop for Permit<C, M> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut state = shared.state.borrow_mut();
            state.release();
            if shared.handles.get() == 0 {
                // The last handle is gone and this was the last capacity held: the task
                // decides to close only when polled.
                state.wake_conn();
            }
        }
    }
}

impl<C: Decoder, M> Client<C, M> {
    fn permit(&self) -> Permit<C, M> {
        Permit {
            shared: Some(self.shared.clone()),
        }
    }

    /// A permit if capacity is free (or was handed to this waiter); else, with `cx`, queues
    /// the caller (FIFO) under `key`.
    fn poll_ready(
        &self,
        cx: Option<&mut Context<'_>>,
        key: &mut Option<WaiterId>,
    ) -> Poll<Result<Permit<C, M>, Error>> {
        let mut state = self.shared.state.borrow_mut();
        if let Some(e) = &state.closed {
            let e = e.clone();
            if let Some(k) = key.take()
                && state.ready_waiters.cancel(k) == Cancelled::Granted
            {
                state.in_flight -= 1; // closed: nobody else will use it
            }
            return Poll::Ready(Err(e));
        }
        if let Some(k) = *key {
            if state.ready_waiters.take_grant(k) {
                // Handed over by a release: already counted in `in_flight`.
                *key = None;
                drop(state);
                return Poll::Ready(Ok(self.permit()));
            }
            if let Some(cx) = cx {
                state.ready_waiters.set_waker(k, cx.waker());
            }
            return Poll::Pending;
        }
        // With hand-off, capacity is free only while nobody waits: no one is overtaken.
        if state.in_flight < self.shared.max_in_flight {
            state.in_flight += 1;
            drop(state);
            return Poll::Ready(Ok(self.permit()));
        }
        if let Some(cx) = cx {
            match state.ready_waiters.push(cx.waker()) {
                Ok(k) => *key = Some(k),
                Err(full) => {
                    return Poll::Ready(Err(Error::overloaded().with_context(full.to_string())));
                }
            }
        }
        Poll::Pending
    }
}

/// Leaves the queue of `ready()` callers when its future is dropped (cancel safety): capacity
/// it was handed and did not take goes to the next caller.
struct WaiterGuard<'a, C: Decoder, M> {
    client: &'a Client<C, M>,
    key: Option<WaiterId>,
}

impl<C: Decoder, M> Drop for WaiterGuard<'_, C, M> {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            let mut state = self.client.shared.state.borrow_mut();
            if state.ready_waiters.cancel(k) == Cancelled::Granted {
                state.release();
            }
        }
    }
}

/// Waits for the response under `key`; dropped early, it leaves the slot abandoned.
struct ResponseGuard<'a, C: Decoder, M> {
    shared: &'a Shared<C, M>,
    key: usize,
    done: bool,
}

impl<C: Decoder, M> ResponseGuard<'_, C, M> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<C::Item, Error>> {
        let mut state = self.shared.state.borrow_mut();
        match state.slots[self.key].as_mut() {
            Some(CallSlot::Waiting(waker)) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Some(CallSlot::Done(_)) => {
                let Some(CallSlot::Done(result)) = state.slots[self.key].take() else {
                    unreachable!("just matched")
                };
                state.free.push(self.key);
                self.done = true;
                Poll::Ready(result)
            }
            _ => unreachable!("a live response guard owns its slot"),
        }
    }
}

impl<C: Decoder, M> Drop for ResponseGuard<'_, C, M> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.state.borrow_mut();
        match state.slots[self.key] {
            Some(CallSlot::Done(_)) => state.remove(self.key),
            _ => state.slots[self.key] = Some(CallSlot::Abandoned),
        }
    }
}

impl<C, M, Req> Service<Req> for Client<C, M>
where
    C: Decoder + Encoder<Req>,
    M: Mode<Req, C::Item>,
{
    type Response = C::Item;
    type Error = Error;
    type Permit = Permit<C, M>;

    async fn ready(&self) -> Result<Permit<C, M>, Error> {
        let mut guard = WaiterGuard {
            client: self,
            key: None,
        };
        poll_fn(|cx| self.poll_ready(Some(cx), &mut guard.key)).await
    }

    fn try_ready(&self) -> TryReady<Permit<C, M>, Error> {
        match self.poll_ready(None, &mut None) {
            Poll::Ready(Ok(permit)) => TryReady::Ready(permit),
            Poll::Ready(Err(e)) => TryReady::Closed(e),
            Poll::Pending => TryReady::Busy,
        }
    }

    async fn call(&self, mut permit: Permit<C, M>, mut req: Req) -> Result<C::Item, Error> {
        let shared = &*self.shared;
        let key = {
            let mut state = shared.state.borrow_mut();
            if let Some(e) = &state.closed {
                return Err(e.clone());
            }
            let key = state.insert(CallSlot::Waiting(None));
            M::set_request_tag(&mut req, key as u64);
            if let Err(e) = shared.framed.borrow_mut().encode(req) {
                state.remove(key);
                return Err(e);
            }
            if M::ORDERED {
                state.order.push_back(key);
            }
            // The capacity now belongs to the slot; the connection task releases it.
            permit.shared = None;
            state.wake_conn();
            key
        };
        let mut guard = ResponseGuard {
            shared,
            key,
            done: false,
        };
        poll_fn(|cx| guard.poll(cx)).await
    }
}

/// Dials a [`Client`] per address: a [`NewService<SocketAddr>`](NewService), so a balancer
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
    type Service = Client<C, M>;
    type Error = Error;

    async fn new_service(&self, addr: SocketAddr) -> Result<Client<C, M>, Error> {
        let stream = time::timeout(self.config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::timeout().with_context(format!("connecting to {addr}")))?
            .map_err(|e| Error::io(e).with_context(format!("connecting to {addr}")))?;
        stream.set_nodelay(self.config.nodelay)?;
        Ok(Client::with_config(
            stream,
            self.codec.clone(),
            &self.config,
        ))
    }
}
