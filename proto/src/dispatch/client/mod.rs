//! The client side of the dispatcher: a [`Service`] over one connection
//! ([`ClientConnection`]), and a [`Connector`] that dials them.
//!
//! `state.rs` holds what the handles and the connection task share, `task.rs` the task, and
//! `connector.rs` the dialing.

mod connector;
mod state;
mod task;

pub use connector::{ClientConfig, Connector};

use super::{Mode, Multiplex, Pipeline};
use crate::codec::{Decoder, Encoder};
use crate::framed::Framed;
use futures::io::{AsyncRead, AsyncWrite};
use sheave_core::net::TcpStream;
use sheave_core::sync::{Cancelled, WaiterId};
use sheave_service::{Error, Service, TryReady};
use state::{AbandonLimits, CallSlot, State};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::rc::Rc;
use std::task::{Context, Poll};
use task::{TaskGuard, drive};

/// What the handles and the connection task share.
struct Shared<C: Decoder, M, T> {
    framed: RefCell<Framed<T, C>>,
    state: RefCell<State<C::Item>>,
    max_in_flight: usize,
    abandon: AbandonLimits,
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
///   discarded, so later responses still reach their callers. Abandoned calls are bounded
///   in count and age ([`ClientConfig::max_abandoned`]): past the bound the connection is
///   closed, and the calls still waiting fail with a retryable `Closed` error.
/// - Cloning is cheap (an `Rc`); the connection closes once every clone is dropped and the
///   requests in flight are answered.
/// - Pipelined, responses are matched to requests in order: a request the peer answers
///   zero times or twice shifts every later response onto the wrong caller. Send only
///   requests the protocol answers exactly once ([`resp::check_command`](crate::resp::check_command)
///   checks RESP commands; [`resp::Client`](crate::resp::Client) applies it).
///
/// Build one over a connected stream ([`ClientConnection::pipeline`], [`ClientConnection::multiplex`]) or let a
/// [`Connector`] dial. Must be created on a runtime thread (it spawns the connection task).
///
/// ```
/// use sheave_core::{Runtime, net::{TcpListener, TcpStream}};
/// use sheave_proto::{codec::LinesCodec, dispatch::ClientConnection};
/// use sheave_service::{ErrorKind, Service, ServiceExt};
///
/// let rt = Runtime::new().unwrap();
/// rt.block_on(async {
///     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
///     let client = ClientConnection::pipeline(
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
pub struct ClientConnection<C: Decoder, M = Pipeline, T = TcpStream> {
    shared: Rc<Shared<C, M, T>>,
}

impl<C: Decoder, M, T> Clone for ClientConnection<C, M, T> {
    fn clone(&self) -> Self {
        self.shared.handles.set(self.shared.handles.get() + 1);
        ClientConnection {
            shared: self.shared.clone(),
        }
    }
}

impl<C: Decoder, M, T> Drop for ClientConnection<C, M, T> {
    fn drop(&mut self) {
        self.shared.handles.set(self.shared.handles.get() - 1);
        if self.shared.handles.get() == 0 {
            self.shared.state.borrow_mut().wake_conn();
        }
    }
}

impl<C: Decoder, M, T> fmt::Debug for ClientConnection<C, M, T> {
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

impl<C, T> ClientConnection<C, Pipeline, T>
where
    C: Decoder + 'static,
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    /// A pipelined client over `stream` with the default [`ClientConfig`].
    pub fn pipeline(stream: T, codec: C) -> Self {
        ClientConnection::with_config(stream, codec, &ClientConfig::default())
    }
}

impl<C, T> ClientConnection<C, Multiplex, T>
where
    C: Decoder + 'static,
    C::Item: super::Tagged,
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    /// A multiplexed client over `stream` with the default [`ClientConfig`].
    pub fn multiplex(stream: T, codec: C) -> Self {
        ClientConnection::with_config(stream, codec, &ClientConfig::default())
    }
}

impl<C, M, T> ClientConnection<C, M, T>
where
    C: Decoder + 'static,
    M: Mode<C::Item, C::Item>,
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    /// A client over `stream` (a TCP or Unix socket, a TLS stream, an in-memory pipe: any
    /// `futures::io` byte stream); spawns its connection task on the current runtime thread.
    ///
    /// (The bound on `M` is its response side: for [`Multiplex`], responses are [`Tagged`](super::Tagged).)
    pub fn with_config(stream: T, codec: C, config: &ClientConfig) -> Self {
        let shared = Rc::new(Shared {
            framed: RefCell::new(Framed::new(stream, codec)),
            state: RefCell::new(State::new()),
            max_in_flight: config.get_max_in_flight(),
            abandon: AbandonLimits {
                max: config.get_max_abandoned(),
                age: config.get_abandoned_age(),
            },
            handles: Cell::new(1),
            mode: PhantomData,
        });
        let task = TaskGuard(shared.clone());
        sheave_core::spawn(async move { poll_fn(|cx| drive::<C, M, T>(&task.0, cx)).await });
        ClientConnection { shared }
    }
}

impl<C: Decoder, M, T> ClientConnection<C, M, T> {
    /// Whether the connection is gone (every call now fails with `Closed`).
    pub fn is_closed(&self) -> bool {
        self.shared.state.borrow().closed.is_some()
    }
}

/// Capacity for one request on a [`ClientConnection`]; dropping it unused gives the capacity back.
pub struct Permit<C: Decoder, M, T = TcpStream> {
    shared: Option<Rc<Shared<C, M, T>>>,
}

impl<C: Decoder, M, T> fmt::Debug for Permit<C, M, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl<C: Decoder, M, T> Drop for Permit<C, M, T> {
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

impl<C: Decoder, M, T> ClientConnection<C, M, T> {
    fn permit(&self) -> Permit<C, M, T> {
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
    ) -> Poll<Result<Permit<C, M, T>, Error>> {
        let mut state = self.shared.state.borrow_mut();
        if state.abandoned > 0 {
            state.check_abandoned_age(&self.shared.abandon);
        }
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
struct WaiterGuard<'a, C: Decoder, M, T> {
    client: &'a ClientConnection<C, M, T>,
    key: Option<WaiterId>,
}

impl<C: Decoder, M, T> Drop for WaiterGuard<'_, C, M, T> {
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
struct ResponseGuard<'a, C: Decoder, M, T> {
    shared: &'a Shared<C, M, T>,
    key: usize,
    done: bool,
}

impl<C: Decoder, M, T> ResponseGuard<'_, C, M, T> {
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

impl<C: Decoder, M, T> Drop for ResponseGuard<'_, C, M, T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.state.borrow_mut();
        match state.slots[self.key] {
            Some(CallSlot::Done(_)) => state.remove(self.key),
            _ => state.abandon(self.key, &self.shared.abandon),
        }
    }
}

impl<C, M, T, Req> Service<Req> for ClientConnection<C, M, T>
where
    C: Decoder + Encoder<Req>,
    M: Mode<Req, C::Item>,
{
    type Response = C::Item;
    type Error = Error;
    type Permit = Permit<C, M, T>;

    async fn ready(&self) -> Result<Permit<C, M, T>, Error> {
        let mut guard = WaiterGuard {
            client: self,
            key: None,
        };
        poll_fn(|cx| self.poll_ready(Some(cx), &mut guard.key)).await
    }

    /// Permits out plus calls awaiting their answers, abandoned ones included.
    fn in_flight(&self) -> Option<usize> {
        Some(self.shared.state.borrow().in_flight)
    }

    fn try_ready(&self) -> TryReady<Permit<C, M, T>, Error> {
        match self.poll_ready(None, &mut None) {
            Poll::Ready(Ok(permit)) => TryReady::Ready(permit),
            Poll::Ready(Err(e)) => TryReady::Closed(e),
            Poll::Pending => TryReady::Busy,
        }
    }

    async fn call(&self, mut permit: Permit<C, M, T>, mut req: Req) -> Result<C::Item, Error> {
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
