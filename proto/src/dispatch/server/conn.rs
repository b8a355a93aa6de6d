//! One served connection's state machine: [`Conn::poll`] runs its steps in order — poll the
//! woken calls, take new requests, read, write, close — until none makes progress.

mod close;

use super::ServerConnection;
use crate::codec::{Decoder, Encoder};
use crate::dispatch::Mode;
use crate::dispatch::wake::{SlotWaker, WakeQueue};
use crate::framed::Framed;
use close::CloseState;
use futures::io::{AsyncRead, AsyncWrite};
use sheave_core::time::{self, Sleep};
use sheave_service::{Error, ErrorKind, Service, TryReady};
use std::collections::VecDeque;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Units of work (requests taken, responses completed) before a connection yields.
const BUDGET: usize = 256;

/// What a step ends with: go on (with whether it made progress), or the poll's answer.
type Step = ControlFlow<Poll<Result<(), Error>>, bool>;

/// The service as the connection uses it: the service itself (for `try_ready`) and the two
/// futures it makes, as closures so that `Conn` can name their types (the `Service` trait
/// returns them as `impl Future`).
pub(super) struct ServiceFns<'a, S, CallFn, ReadyFn> {
    pub(super) service: &'a S,
    pub(super) call: CallFn,
    pub(super) ready: ReadyFn,
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
pub(super) struct Conn<F, RF, Req, Resp> {
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
    state: CloseState,
    last_activity: Instant,
    idle: Option<Sleep>,
    /// When the partial frame at the end of the read buffer began to arrive.
    partial_since: Option<Instant>,
    read_deadline: Option<Sleep>,
}

/// What one pass of the loop has left.
struct Turn {
    budget: usize,
    /// The read step is waiting for the socket (the read timeout may run).
    waiting_on_read: bool,
}

impl<F, RF, Req, Resp> Conn<F, RF, Req, Resp> {
    pub(super) fn new() -> Self {
        Conn {
            slots: Vec::new(),
            free: Vec::new(),
            order: VecDeque::new(),
            queue: Arc::new(WakeQueue::default()),
            woken: Vec::new(),
            in_flight: 0,
            waiting: None,
            ready: Box::pin(None),
            state: CloseState::Open,
            last_activity: time::now_cached(),
            idle: None,
            partial_since: None,
            read_deadline: None,
        }
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
}

impl<F, RF, Req, Resp, E> Conn<F, RF, Req, Resp>
where
    F: Future<Output = Result<Resp, E>>,
    E: Into<Error>,
{
    /// Serves until the connection is done: the loop of steps, then the timers.
    pub(super) fn poll<M, T, C, S, CallFn, ReadyFn>(
        &mut self,
        cfg: &ServerConnection<M>,
        framed: &mut Framed<T, C>,
        svc: &ServiceFns<'_, S, CallFn, ReadyFn>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>>
    where
        M: Mode<Req, Resp>,
        T: AsyncRead + AsyncWrite + Unpin,
        C: Decoder<Item = Req> + Encoder<Resp>,
        S: Service<Req, Response = Resp, Error = E>,
        CallFn: Fn(S::Permit, Req) -> F,
        ReadyFn: Fn() -> RF,
        RF: Future<Output = Result<S::Permit, E>>,
    {
        if matches!(self.state, CloseState::Lingering { .. }) {
            return self.poll_linger(framed, cx);
        }
        self.queue.register(cx.waker());
        let mut turn = Turn {
            budget: BUDGET,
            waiting_on_read: false,
        };
        loop {
            let mut progress = self.poll_woken::<M, T, C>(framed, &mut turn);
            let (took, need_input) =
                self.take_requests::<M, T, C, S, CallFn, ReadyFn>(cfg, framed, svc, cx, &mut turn);
            progress |= took;
            match self.read(cfg, framed, need_input, cx, &mut turn) {
                ControlFlow::Continue(read) => progress |= read,
                ControlFlow::Break(done) => return done,
            }
            match self.write(cfg, framed, progress, cx) {
                ControlFlow::Continue(wrote) => progress |= wrote,
                ControlFlow::Break(done) => return done,
            }
            match self.close_when_answered(framed, cx) {
                ControlFlow::Continue(farewell) => progress |= farewell,
                ControlFlow::Break(done) => return done,
            }
            if !progress {
                break;
            }
            if turn.budget == 0 {
                // Let the other connections of this thread run; come back right after.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        self.end_or_wait(cfg, framed, turn.waiting_on_read, cx)
    }

    /// Step 1: polls only the calls whose wakers fired.
    fn poll_woken<M, T, C>(&mut self, framed: &mut Framed<T, C>, turn: &mut Turn) -> bool
    where
        M: Mode<Req, Resp>,
        C: Encoder<Resp>,
    {
        let mut woken = std::mem::take(&mut self.woken);
        self.queue.take(&mut woken);
        for &idx in &woken {
            self.poll_slot::<M, T, C>(idx, framed);
            turn.budget = turn.budget.saturating_sub(1);
        }
        let progress = !woken.is_empty();
        woken.clear();
        self.woken = woken;
        progress
    }

    /// Whether a new request may be taken: open (or draining with one already decoded),
    /// under the in-flight bound, and with room in the write buffer.
    fn taking<M, T, C>(&self, cfg: &ServerConnection<M>, framed: &Framed<T, C>) -> bool {
        let open = match self.state {
            CloseState::Open => true,
            CloseState::Draining => self.waiting.is_some(),
            _ => false,
        };
        open && self.in_flight < cfg.max_in_flight
            && framed.write_buffer().len() < cfg.max_write_buffer
    }

    /// Step 2: decodes requests and starts their calls while the bounds allow. Returns
    /// whether any was taken, and whether the decoder needs more input.
    fn take_requests<M, T, C, S, CallFn, ReadyFn>(
        &mut self,
        cfg: &ServerConnection<M>,
        framed: &mut Framed<T, C>,
        svc: &ServiceFns<'_, S, CallFn, ReadyFn>,
        cx: &mut Context<'_>,
        turn: &mut Turn,
    ) -> (bool, bool)
    where
        M: Mode<Req, Resp>,
        C: Decoder<Item = Req> + Encoder<Resp>,
        S: Service<Req, Response = Resp, Error = E>,
        CallFn: Fn(S::Permit, Req) -> F,
        ReadyFn: Fn() -> RF,
        RF: Future<Output = Result<S::Permit, E>>,
    {
        let mut progress = false;
        while turn.budget > 0 && self.taking(cfg, framed) {
            let req = match self.waiting.take() {
                Some(req) => req,
                None => match self.decode(framed) {
                    ControlFlow::Continue(req) => req,
                    ControlFlow::Break(need_input) => return (progress, need_input),
                },
            };
            let (permit, req) = match self.permit(req, svc, cx) {
                ControlFlow::Continue(Some(granted)) => granted,
                ControlFlow::Continue(None) => continue, // now waiting on `ready()`
                ControlFlow::Break(()) => break,
            };
            let tag = M::request_tag(&req);
            self.start_call::<M, T, C>(framed, (svc.call)(permit, req), tag, turn);
            progress = true;
        }
        (progress, false)
    }

    /// The next request from the read buffer; `Break(need_input)` when there is none (or a
    /// malformed frame closed the connection).
    fn decode<T, C>(&mut self, framed: &mut Framed<T, C>) -> ControlFlow<bool, Req>
    where
        C: Decoder<Item = Req>,
    {
        match framed.decode() {
            Ok(Some(req)) => {
                self.partial_since = None;
                ControlFlow::Continue(req)
            }
            Ok(None) => {
                if framed.read_buffer().is_empty() {
                    self.partial_since = None;
                } else if self.partial_since.is_none() {
                    self.partial_since = Some(time::now_cached());
                }
                ControlFlow::Break(!framed.is_eof())
            }
            Err(e) => {
                self.close_with(Err(e.clone()), Some(e), false);
                ControlFlow::Break(false)
            }
        }
    }

    /// The service's permit for `req`: `Continue(Some)` with it, `Continue(None)` when the
    /// request now waits for `ready()` (try again), `Break` when it must wait or the service
    /// refused (which closes the connection).
    #[allow(clippy::type_complexity)]
    fn permit<S, CallFn, ReadyFn>(
        &mut self,
        req: Req,
        svc: &ServiceFns<'_, S, CallFn, ReadyFn>,
        cx: &mut Context<'_>,
    ) -> ControlFlow<(), Option<(S::Permit, Req)>>
    where
        S: Service<Req, Response = Resp, Error = E>,
        ReadyFn: Fn() -> RF,
        RF: Future<Output = Result<S::Permit, E>>,
    {
        let permit = if let Some(fut) = self.ready.as_mut().as_pin_mut() {
            match fut.poll(cx) {
                Poll::Ready(result) => {
                    self.ready.set(None);
                    result
                }
                Poll::Pending => {
                    self.waiting = Some(req);
                    return ControlFlow::Break(());
                }
            }
        } else {
            match svc.service.try_ready() {
                TryReady::Ready(permit) => Ok(permit),
                TryReady::Busy => {
                    self.ready.set(Some((svc.ready)()));
                    self.waiting = Some(req);
                    return ControlFlow::Continue(None);
                }
                TryReady::Closed(e) => Err(e),
            }
        };
        match permit {
            Ok(permit) => ControlFlow::Continue(Some((permit, req))),
            Err(e) => {
                self.close(Err(e.into()));
                ControlFlow::Break(())
            }
        }
    }

    /// Puts a call in a slot and polls it once. Fast path: most services answer on the first
    /// poll, and with nothing older in flight the answer is next in line: it is written now,
    /// without the order queue.
    fn start_call<M, T, C>(&mut self, framed: &mut Framed<T, C>, call: F, tag: u64, turn: &mut Turn)
    where
        M: Mode<Req, Resp>,
        C: Encoder<Resp>,
    {
        let idx = self.insert(call, tag);
        turn.budget -= 1;
        if M::ORDERED && !self.order.is_empty() {
            self.order.push_back(idx);
            self.poll_slot::<M, T, C>(idx, framed);
            return;
        }
        let slot = &mut self.slots[idx];
        let fut = slot.future.as_mut().as_pin_mut().expect("just inserted");
        // A wake of the slot's previous future may have left the flag set (a plain store on
        // x86): clear it, or a wake of this future would not be queued.
        slot.flag.clear();
        let mut cx = Context::from_waker(&slot.waker);
        match fut.poll(&mut cx) {
            Poll::Ready(result) => {
                slot.future.set(None);
                self.free.push(idx);
                self.in_flight -= 1;
                self.answer::<M, T, C>(result.map_err(Into::into), tag, framed);
            }
            Poll::Pending if M::ORDERED => self.order.push_back(idx),
            Poll::Pending => {}
        }
    }

    /// Polls slot `idx` once; on completion, hands its result to `complete`.
    fn poll_slot<M, T, C>(&mut self, idx: usize, framed: &mut Framed<T, C>)
    where
        M: Mode<Req, Resp>,
        C: Encoder<Resp>,
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

    /// A call finished: answer it now (multiplexed), or once every earlier one is answered
    /// (pipelined).
    fn complete<M, T, C>(
        &mut self,
        idx: usize,
        result: Result<Resp, Error>,
        framed: &mut Framed<T, C>,
    ) where
        M: Mode<Req, Resp>,
        C: Encoder<Resp>,
    {
        if !M::ORDERED {
            self.free.push(idx);
            self.in_flight -= 1;
            let tag = self.slots[idx].tag;
            self.answer::<M, T, C>(result, tag, framed);
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
            self.answer::<M, T, C>(out, 0, framed);
        }
    }

    /// Writes a finished request's outcome into the write buffer. Also while closing: a
    /// request that was taken is answered. A failed call becomes an error reply when the
    /// codec has them, and closes the connection when it has not.
    #[inline]
    fn answer<M, T, C>(&mut self, result: Result<Resp, Error>, tag: u64, framed: &mut Framed<T, C>)
    where
        M: Mode<Req, Resp>,
        C: Encoder<Resp>,
    {
        if self.is_muted() {
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
        if M::ORDERED && self.is_closing() {
            // Already closing for another reason: that stays the result, and now no later
            // reply may be written either.
            if let CloseState::Closing { muted, .. } = &mut self.state {
                *muted = true;
            }
            return;
        }
        self.close_with(Err(failed), None, M::ORDERED);
    }

    /// Step 3: reads when the decoder needs more and the bounds allow.
    fn read<M, T, C>(
        &mut self,
        cfg: &ServerConnection<M>,
        framed: &mut Framed<T, C>,
        need_input: bool,
        cx: &mut Context<'_>,
        turn: &mut Turn,
    ) -> Step
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        if !need_input || !self.taking(cfg, framed) {
            return ControlFlow::Continue(false);
        }
        match framed.poll_fill(cx) {
            Poll::Ready(Ok(_)) => {
                self.last_activity = time::now_cached();
                ControlFlow::Continue(true)
            }
            // The socket failed: no reply can be delivered any more.
            Poll::Ready(Err(e)) => ControlFlow::Break(Poll::Ready(Err(e))),
            Poll::Pending => {
                turn.waiting_on_read = true;
                ControlFlow::Continue(false)
            }
        }
    }

    /// Step 4: writes when there is no more input to batch (`progress` is false), or the
    /// batch is big. Progress when a full write buffer drained (requests may be taken again).
    fn write<M, T, C>(
        &mut self,
        cfg: &ServerConnection<M>,
        framed: &mut Framed<T, C>,
        progress: bool,
        cx: &mut Context<'_>,
    ) -> Step
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let before = framed.write_buffer().len();
        if before == 0 || (progress && !framed.over_high_water()) {
            return ControlFlow::Continue(false);
        }
        let blocked = before >= cfg.max_write_buffer;
        let flushed = framed.poll_flush_buf(cx);
        if framed.write_buffer().len() < before {
            // Bytes moved: the peer is reading (a stalled writer is not "active").
            self.last_activity = time::now_cached();
        }
        match flushed {
            Poll::Ready(Ok(())) => ControlFlow::Continue(blocked),
            // The peer is gone: nothing more can be written.
            Poll::Ready(Err(e)) => {
                ControlFlow::Break(Poll::Ready(self.take_result().unwrap_or(Err(e))))
            }
            Poll::Pending => ControlFlow::Continue(blocked && framed.write_buffer().len() < before),
        }
    }
}
