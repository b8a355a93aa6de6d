//! The server side of the dispatcher: one connection, one service, many requests in flight.

use super::wake::{SlotWaker, WakeQueue};
use super::{Mode, Multiplex, Pipeline};
use crate::codec::{Decoder, Encoder};
use crate::framed::Framed;
use futures::io::{AsyncRead, AsyncWrite};
use sheave_core::time::{self, Sleep};
use sheave_service::{Error, ErrorKind, Service, TryReady};
use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, pending, poll_fn};
use std::marker::PhantomData;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Units of work (requests taken, responses completed) before a connection yields.
const BUDGET: usize = 256;

/// How long a closing connection that leaves requests unread waits, after its last reply and
/// its FIN, for the peer to close too. Closing a socket with unread input sends a reset, and
/// a reset can destroy replies the peer has not read yet: so the server half-closes, discards
/// what still arrives, and closes once the peer has (or after this long).
const LINGER: Duration = Duration::from_secs(1);

/// Serves one connection with one service: the server half of the dispatch engine.
///
/// Configure it once and call [`serve`](ServerConnection::serve) per connection (it is
/// `Clone` and cheap). Defaults: 128 requests in flight, a 256 KiB write buffer bound, no idle
/// or read timeout. See the [module docs](super) for the backpressure path.
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

impl<M> ServerConnection<M> {
    fn new() -> Self {
        ServerConnection {
            max_in_flight: 128,
            max_write_buffer: 256 * 1024,
            idle_timeout: None,
            read_timeout: None,
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
    /// stops reading holds it; [`Server`](crate::Server) sets 300 s (and a 30 s read timeout).
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
        let svc = &service;
        let mut drain = pin!(drain);
        let mut conn = Conn::new();
        poll_fn(|cx| {
            if !conn.draining && drain.as_mut().poll(cx).is_ready() {
                conn.draining = true;
            }
            conn.poll(
                self,
                &mut framed,
                svc,
                |permit, req| svc.call(permit, req),
                || svc.ready(),
                cx,
            )
        })
        .await
    }
}

/// One in-flight request: its future (boxed once, reused), its waker, and its answer.
struct Slot<F, R> {
    future: Pin<Box<Option<F>>>,
    flag: Arc<SlotWaker>,
    waker: Waker,
    tag: u64,
    out: Option<Result<R, Error>>,
}

/// The state of one served connection.
struct Conn<F, RF, Req, Resp> {
    slots: Vec<Slot<F, Resp>>,
    free: Vec<usize>,
    /// Pipeline: in-flight slots in request order.
    order: VecDeque<usize>,
    queue: Arc<WakeQueue>,
    woken: Vec<usize>,
    in_flight: usize,
    /// A decoded request waiting for a permit.
    waiting: Option<Req>,
    ready: Pin<Box<Option<RF>>>,
    /// Once set, no request is taken; the requests already taken are answered, and the
    /// result is returned when none is in flight and the write buffer is empty.
    closing: Option<Result<(), Error>>,
    /// A malformed frame: once the earlier requests are answered, the codec may write one
    /// last error reply saying why (`-ERR Protocol error: ...`) before the close.
    farewell: Option<Error>,
    /// Pipelined, a reply could not be written: no later one may be, or it would answer the
    /// wrong request.
    muted: bool,
    draining: bool,
    last_activity: Instant,
    idle: Option<Sleep>,
    /// Replies all written, the write side shut: discarding input until the peer closes, then
    /// returning this result.
    linger: Option<(Option<Result<(), Error>>, Sleep)>,
    /// When the partial frame at the end of the read buffer began to arrive.
    partial_since: Option<Instant>,
    read_deadline: Option<Sleep>,
}

impl<F, RF, Req, Resp> Conn<F, RF, Req, Resp> {
    fn new() -> Self {
        Conn {
            slots: Vec::new(),
            free: Vec::new(),
            order: VecDeque::new(),
            queue: Arc::new(WakeQueue::default()),
            woken: Vec::new(),
            in_flight: 0,
            waiting: None,
            ready: Box::pin(None),
            closing: None,
            farewell: None,
            muted: false,
            draining: false,
            last_activity: time::now_cached(),
            idle: None,
            linger: None,
            partial_since: None,
            read_deadline: None,
        }
    }

    /// Ends the connection with `result` once every reply is written: at once if the peer has
    /// closed its side, else after a lingering close (see [`LINGER`]).
    fn finish<T, C>(
        &mut self,
        result: Result<(), Error>,
        framed: &mut Framed<T, C>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        if framed.is_eof() {
            return Poll::Ready(result);
        }
        let deadline = time::saturating_add(time::now_cached(), LINGER);
        self.linger = Some((Some(result), time::sleep_until(deadline)));
        if let Poll::Ready(Err(e)) = Pin::new(framed.get_mut()).poll_close(cx) {
            log::debug!("half-closing the connection: {e}");
            return Poll::Ready(self.linger.take().and_then(|(r, _)| r).expect("set"));
        }
        self.poll_linger(framed, cx)
    }

    /// Discards input until the peer closes, an error, or the linger deadline.
    fn poll_linger<T, C>(
        &mut self,
        framed: &mut Framed<T, C>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let (result, deadline) = self.linger.as_mut().expect("lingering");
        loop {
            framed.discard_read_buffer();
            match framed.poll_fill(cx) {
                Poll::Ready(Ok(n)) if n > 0 => continue,
                Poll::Ready(_) => break,
                Poll::Pending if Pin::new(&mut *deadline).poll(cx).is_ready() => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(result.take().expect("returned once"))
    }

    fn close(&mut self, result: Result<(), Error>) {
        if self.closing.is_none() {
            self.closing = Some(result);
            // The idle timeout bounds the wait for the last replies from now, not from the
            // last byte read (which may be long ago on a connection that was serving).
            self.last_activity = time::now_cached();
        }
    }
}

impl<F, RF, Req, Resp> Conn<F, RF, Req, Resp> {
    /// Polls slot `idx` once; on completion, hands its result to `complete`.
    fn poll_slot<M, T, C, E>(&mut self, idx: usize, framed: &mut Framed<T, C>)
    where
        F: Future<Output = Result<Resp, E>>,
        E: Into<Error>,
        C: Encoder<Resp>,
        M: Mode<Req, Resp>,
    {
        let slot = &mut self.slots[idx];
        let Some(fut) = slot.future.as_mut().as_pin_mut() else {
            return; // a stale wake of a free slot
        };
        slot.flag.clear();
        let mut cx = Context::from_waker(&slot.waker);
        if let Poll::Ready(result) = fut.poll(&mut cx) {
            slot.future.set(None);
            self.complete::<M, T, C>(idx, result.map_err(Into::into), framed);
        }
    }

    fn complete<M: Mode<Req, Resp>, T, C: Encoder<Resp>>(
        &mut self,
        idx: usize,
        result: Result<Resp, Error>,
        framed: &mut Framed<T, C>,
    ) {
        if !M::ORDERED {
            self.free.push(idx);
            self.in_flight -= 1;
            let tag = self.slots[idx].tag;
            self.write::<M, T, C, _>(result, tag, framed);
            return;
        }
        self.slots[idx].out = Some(result);
        while let Some(&head) = self.order.front() {
            let Some(out) = self.slots[head].out.take() else {
                break;
            };
            self.order.pop_front();
            self.free.push(head);
            self.in_flight -= 1;
            self.write::<M, T, C, _>(out, 0, framed);
        }
    }

    #[inline]
    /// Writes a finished request's outcome. Also while closing: a request that was taken is
    /// answered. A failed call becomes an error reply when the codec has them, and closes
    /// the connection when it has not.
    fn write<M: Mode<Req, Resp>, T, C: Encoder<Resp>, E: Into<Error>>(
        &mut self,
        result: Result<Resp, E>,
        tag: u64,
        framed: &mut Framed<T, C>,
    ) {
        if self.muted {
            return;
        }
        let failed = match result {
            Ok(mut resp) => {
                M::set_response_tag(&mut resp, tag);
                match framed.encode(resp) {
                    Ok(()) => return,
                    // The server's own reply could not be encoded: that is not the peer's
                    // protocol error, whatever kind the codec gave it.
                    Err(e) => {
                        log::warn!("a reply could not be encoded: {e}");
                        Error::new(ErrorKind::Service, e).with_context("encoding the reply")
                    }
                }
            }
            Err(e) => {
                let e = e.into();
                log::debug!("a call failed: {e}");
                e
            }
        };
        // The reply cannot be written as such: in pipelined mode an error reply takes its
        // place, so replies stay one per request. Without one (a codec with no error replies,
        // or a multiplexed reply, which would need the request's tag) the connection closes —
        // and pipelined, nothing more is written: a later reply would land on this request.
        if M::ORDERED && framed.encode_error(&failed) {
            return;
        }
        self.muted = M::ORDERED;
        self.close(Err(failed));
    }

    /// Puts a new call future in a free slot (allocating only while the pool grows).
    fn insert(&mut self, future: F, tag: u64) -> usize {
        let idx = match self.free.pop() {
            Some(idx) => {
                self.slots[idx].future.set(Some(future));
                idx
            }
            None => {
                let idx = self.slots.len();
                let (flag, waker) = self.queue.slot_waker(idx);
                self.slots.push(Slot {
                    future: Box::pin(Some(future)),
                    flag,
                    waker,
                    tag,
                    out: None,
                });
                idx
            }
        };
        self.slots[idx].tag = tag;
        self.in_flight += 1;
        idx
    }

    #[allow(clippy::too_many_arguments)]
    fn poll<M, T, C, S, CallFn, ReadyFn>(
        &mut self,
        cfg: &ServerConnection<M>,
        framed: &mut Framed<T, C>,
        svc: &S,
        call: CallFn,
        ready: ReadyFn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>>
    where
        M: Mode<Req, Resp>,
        T: AsyncRead + AsyncWrite + Unpin,
        C: Decoder<Item = Req> + Encoder<Resp>,
        S: Service<Req, Response = Resp>,
        S::Error: Into<Error>,
        CallFn: Fn(S::Permit, Req) -> F,
        F: Future<Output = Result<Resp, S::Error>>,
        ReadyFn: Fn() -> RF,
        RF: Future<Output = Result<S::Permit, S::Error>>,
    {
        if self.linger.is_some() {
            return self.poll_linger(framed, cx);
        }
        self.queue.register(cx.waker());
        let mut budget = BUDGET;
        let mut waiting_on_read = false;
        loop {
            let mut progress = false;

            // 1. Poll only the slots whose wakers fired.
            let mut woken = std::mem::take(&mut self.woken);
            self.queue.take(&mut woken);
            for &idx in &woken {
                self.poll_slot::<M, T, C, S::Error>(idx, framed);
                budget = budget.saturating_sub(1);
                progress = true;
            }
            woken.clear();
            self.woken = woken;

            // 2. Take new requests while the bounds allow.
            // Draining, no new request is decoded, but one already decoded (waiting for the
            // service's capacity) is still served.
            let taking = |c: &Self, f: &Framed<T, C>| {
                c.closing.is_none()
                    && (!c.draining || c.waiting.is_some())
                    && c.in_flight < cfg.max_in_flight
                    && f.write_buffer().len() < cfg.max_write_buffer
            };
            let mut need_input = false;
            while budget > 0 && taking(self, framed) {
                let req = match self.waiting.take() {
                    Some(req) => req,
                    None => match framed.decode() {
                        Ok(Some(req)) => {
                            self.partial_since = None;
                            req
                        }
                        Ok(None) => {
                            need_input = !framed.is_eof();
                            if framed.read_buffer().is_empty() {
                                self.partial_since = None;
                            } else if self.partial_since.is_none() {
                                self.partial_since = Some(time::now_cached());
                            }
                            break;
                        }
                        Err(e) => {
                            self.farewell = Some(e.clone());
                            self.close(Err(e));
                            break;
                        }
                    },
                };
                let permit = if let Some(fut) = self.ready.as_mut().as_pin_mut() {
                    match fut.poll(cx) {
                        Poll::Ready(result) => {
                            self.ready.set(None);
                            result
                        }
                        Poll::Pending => {
                            self.waiting = Some(req);
                            break;
                        }
                    }
                } else {
                    match svc.try_ready() {
                        TryReady::Ready(permit) => Ok(permit),
                        TryReady::Busy => {
                            self.ready.set(Some(ready()));
                            self.waiting = Some(req);
                            continue;
                        }
                        TryReady::Closed(e) => Err(e),
                    }
                };
                let permit = match permit {
                    Ok(permit) => permit,
                    Err(e) => {
                        self.close(Err(e.into()));
                        break;
                    }
                };
                let tag = M::request_tag(&req);
                let idx = self.insert(call(permit, req), tag);
                budget -= 1;
                progress = true;
                if M::ORDERED && !self.order.is_empty() {
                    self.order.push_back(idx);
                    self.poll_slot::<M, T, C, S::Error>(idx, framed);
                    continue;
                }
                // Fast path: most services answer on the first poll, and with nothing older in
                // flight the answer is next in line: write it now, without the order queue.
                let slot = &mut self.slots[idx];
                let fut = slot.future.as_mut().as_pin_mut().expect("just inserted");
                // A wake of the slot's previous future may have left the flag set (a plain
                // store on x86): clear it, or a wake of this future would not be queued.
                slot.flag.clear();
                let mut cx = Context::from_waker(&slot.waker);
                match fut.poll(&mut cx) {
                    Poll::Ready(result) => {
                        slot.future.set(None);
                        self.free.push(idx);
                        self.in_flight -= 1;
                        self.write::<M, T, C, _>(result, tag, framed);
                    }
                    Poll::Pending if M::ORDERED => self.order.push_back(idx),
                    Poll::Pending => {}
                }
            }

            // 3. Read when the decoder needs more and the bounds allow.
            if need_input && taking(self, framed) {
                match framed.poll_fill(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.last_activity = time::now_cached();
                        progress = true;
                    }
                    // The socket failed: no reply can be delivered any more.
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => waiting_on_read = true,
                }
            }

            // 4. Write when there is no more input to batch, or the batch is big.
            let blocked = framed.write_buffer().len() >= cfg.max_write_buffer;
            if !framed.write_buffer().is_empty() && (!progress || framed.over_high_water()) {
                let before = framed.write_buffer().len();
                let flushed = framed.poll_flush_buf(cx);
                if framed.write_buffer().len() < before {
                    // Bytes moved: the peer is reading (a stalled writer is not "active").
                    self.last_activity = time::now_cached();
                }
                match flushed {
                    Poll::Ready(Ok(())) => progress |= blocked,
                    Poll::Ready(Err(e)) => {
                        // The peer is gone: nothing more can be written.
                        return Poll::Ready(self.closing.take().unwrap_or(Err(e)));
                    }
                    Poll::Pending => progress |= blocked && framed.write_buffer().len() < before,
                }
            }

            // Closing waits for the calls in flight, whose replies are owed — unless no
            // reply can be written any more (muted), when waiting would only hold the socket.
            if self.closing.is_some() && (self.in_flight == 0 || self.muted) {
                if let Some(e) = self.farewell.take()
                    && !self.muted
                    && framed.encode_error(&e)
                {
                    continue; // write the reply, then close
                }
                if framed.write_buffer().is_empty() {
                    if let Some(Err(e)) = &self.closing {
                        log::debug!("closing connection: {e}");
                    }
                    let result = self.closing.take().expect("closing");
                    return self.finish(result, framed, cx);
                }
            }
            if !progress {
                break;
            }
            if budget == 0 {
                // Let the other connections of this thread run; come back right after.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }

        let quiet =
            self.in_flight == 0 && framed.write_buffer().is_empty() && self.waiting.is_none();
        if quiet && (self.draining || framed.is_eof()) {
            return self.finish(Ok(()), framed, cx);
        }
        // The service has work for this connection (requests in flight, or one waiting for
        // capacity): that is not idleness, however long it takes — unless the connection is
        // closing, when the idle timeout bounds the wait for the last replies.
        let serving = (self.in_flight > 0 || self.waiting.is_some()) && self.closing.is_none();
        self.poll_timers(
            cfg.read_timeout,
            cfg.idle_timeout,
            serving,
            waiting_on_read,
            cx,
        )
    }

    fn poll_timers(
        &mut self,
        read_timeout: Option<Duration>,
        idle_timeout: Option<Duration>,
        serving: bool,
        waiting_on_read: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        if let (Some(limit), Some(since)) = (read_timeout, self.partial_since)
            && waiting_on_read
        {
            let deadline = time::saturating_add(since, limit);
            let sleep = self
                .read_deadline
                .get_or_insert_with(|| time::sleep_until(deadline));
            if sleep.deadline() != deadline {
                sleep.reset(deadline);
            }
            if Pin::new(sleep).poll(cx).is_ready() {
                log::debug!("closing connection: no complete frame within {limit:?}");
                // Close like any other failure: the requests already taken are answered first.
                self.read_deadline = None;
                self.partial_since = None;
                self.close(Err(Error::timeout().with_context("read timeout")));
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        if let Some(limit) = idle_timeout {
            if serving {
                self.last_activity = time::now_cached();
            }
            let deadline = time::saturating_add(self.last_activity, limit);
            let sleep = self.idle.get_or_insert_with(|| time::sleep_until(deadline));
            // Re-armed lazily: only when it fires early, never per request.
            while Pin::new(&mut *sleep).poll(cx).is_ready() {
                let deadline = time::saturating_add(self.last_activity, limit);
                if time::now() >= deadline {
                    log::debug!("closing connection: idle for {limit:?}");
                    // Closing already (a failure, waiting for the last replies): that
                    // failure is the result, not a clean idle close.
                    return Poll::Ready(self.closing.take().unwrap_or(Ok(())));
                }
                sleep.reset(deadline);
            }
        }
        Poll::Pending
    }
}
