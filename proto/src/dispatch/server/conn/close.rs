//! How a connection ends: the close state, the last replies, the lingering close, and the
//! read and idle timeouts.

use super::{Conn, ServerConnection, Step};
use crate::codec::Encoder;
use crate::framed::Framed;
use futures::io::{AsyncRead, AsyncWrite};
use sheave_core::time::{self, Sleep};
use sheave_service::Error;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long a closing connection that leaves requests unread waits, after its last reply and
/// its FIN, for the peer to close too. Closing a socket with unread input sends a reset, and
/// a reset can destroy replies the peer has not read yet: so the server half-closes, discards
/// what still arrives, and closes once the peer has (or after this long).
const LINGER: Duration = Duration::from_secs(1);

/// Where the connection is in its life. It only moves down this list.
// An explicit tag byte: the state is checked before every request taken, and a niche-packed
// discriminant (inside the `Result`) costs more compares than a byte.
#[repr(u8)]
pub(crate) enum CloseState {
    /// Taking requests.
    Open,
    /// The server is shutting down: no new request is decoded (one already decoded, waiting
    /// for the service's capacity, is still served); done once nothing is in flight.
    Draining,
    /// Ending with `result` (a malformed frame, a failed reply, a timeout): no request is
    /// taken, the ones taken are answered, then the result is returned.
    Closing {
        result: Result<(), Error>,
        /// A malformed frame: once the earlier requests are answered, the codec may write one
        /// last error reply saying why (`-ERR Protocol error: ...`) before the close.
        farewell: Option<Error>,
        /// Pipelined, a reply could not be written: no later one may be, or it would answer
        /// the wrong request.
        muted: bool,
    },
    /// Every reply written and the write side shut: discarding input until the peer closes
    /// or the deadline passes (see [`LINGER`]), then returning `result`.
    Lingering {
        result: Option<Result<(), Error>>,
        deadline: Sleep,
    },
}

impl<F, RF, Req, Resp> Conn<F, RF, Req, Resp> {
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, CloseState::Open)
    }

    /// The server shuts down: serve what was taken, take nothing new.
    pub(crate) fn start_draining(&mut self) {
        if self.is_open() {
            self.state = CloseState::Draining;
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        matches!(
            self.state,
            CloseState::Closing { .. } | CloseState::Lingering { .. }
        )
    }

    pub(crate) fn is_muted(&self) -> bool {
        matches!(self.state, CloseState::Closing { muted: true, .. })
    }

    /// Starts closing with `result` (the first reason wins).
    pub(crate) fn close(&mut self, result: Result<(), Error>) {
        self.close_with(result, None, false);
    }

    pub(crate) fn close_with(
        &mut self,
        result: Result<(), Error>,
        farewell: Option<Error>,
        muted: bool,
    ) {
        if !self.is_closing() {
            self.state = CloseState::Closing {
                result,
                farewell,
                muted,
            };
            // The idle timeout bounds the wait for the last replies from now, not from the
            // last byte read (which may be long ago on a connection that was serving).
            self.last_activity = time::now_cached();
        }
    }

    /// The result of a closing connection, taken once.
    pub(crate) fn take_result(&mut self) -> Option<Result<(), Error>> {
        match std::mem::replace(&mut self.state, CloseState::Draining) {
            CloseState::Closing { result, .. } => Some(result),
            CloseState::Lingering { result, .. } => result,
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Step 5: a closing connection waits for the calls in flight, whose replies are owed —
    /// unless no reply can be written any more (muted), when waiting would only hold the
    /// socket — then writes its farewell, then ends once the write buffer is empty.
    pub(crate) fn close_when_answered<T, C>(
        &mut self,
        framed: &mut Framed<T, C>,
        cx: &mut Context<'_>,
    ) -> Step
    where
        T: AsyncRead + AsyncWrite + Unpin,
        C: Encoder<Resp>,
    {
        let in_flight = self.in_flight;
        let CloseState::Closing {
            farewell, muted, ..
        } = &mut self.state
        else {
            return ControlFlow::Continue(false);
        };
        if in_flight > 0 && !*muted {
            return ControlFlow::Continue(false);
        }
        if let Some(e) = farewell.take()
            && !*muted
            && framed.encode_error(&e)
        {
            return ControlFlow::Continue(true); // write the reply, then close
        }
        if !framed.write_buffer().is_empty() {
            return ControlFlow::Continue(false);
        }
        let result = self.take_result().expect("closing");
        if let Err(e) = &result {
            log::debug!("closing connection: {e}");
        }
        ControlFlow::Break(self.finish(result, framed, cx))
    }

    /// After the loop: done if quiet and draining (or the peer closed); else wait, under the
    /// read and idle timeouts.
    pub(crate) fn end_or_wait<M, T, C>(
        &mut self,
        cfg: &ServerConnection<M>,
        framed: &mut Framed<T, C>,
        waiting_on_read: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let quiet =
            self.in_flight == 0 && framed.write_buffer().is_empty() && self.waiting.is_none();
        let draining = matches!(self.state, CloseState::Draining);
        if quiet && (draining || (framed.is_eof() && !self.is_closing())) {
            return self.finish(Ok(()), framed, cx);
        }
        // The service has work for this connection (requests in flight, or one waiting for
        // capacity): that is not idleness, however long it takes — unless the connection is
        // closing, when the idle timeout bounds the wait for the last replies.
        let serving = (self.in_flight > 0 || self.waiting.is_some()) && !self.is_closing();
        self.poll_timers(
            cfg.read_timeout,
            cfg.idle_timeout,
            serving,
            waiting_on_read,
            cx,
        )
    }

    /// Ends the connection with `result` once every reply is written: at once if the peer has
    /// closed its side, else after a lingering close (see [`LINGER`]).
    pub(crate) fn finish<T, C>(
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
        if let Poll::Ready(Err(e)) = Pin::new(framed.get_mut()).poll_close(cx) {
            log::debug!("half-closing the connection: {e}");
            return Poll::Ready(result);
        }
        let deadline = time::saturating_add(time::now_cached(), LINGER);
        self.state = CloseState::Lingering {
            result: Some(result),
            deadline: time::sleep_until(deadline),
        };
        self.poll_linger(framed, cx)
    }

    /// Discards input until the peer closes, an error, or the linger deadline.
    pub(crate) fn poll_linger<T, C>(
        &mut self,
        framed: &mut Framed<T, C>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let CloseState::Lingering { result, deadline } = &mut self.state else {
            return Poll::Pending;
        };
        loop {
            framed.discard_read_buffer();
            match framed.poll_fill(cx) {
                Poll::Ready(Ok(n)) if n > 0 => continue,
                Poll::Ready(_) => break,
                Poll::Pending if Pin::new(&mut *deadline).poll(cx).is_ready() => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(result.take().unwrap_or(Ok(())))
    }

    /// The read timeout (a frame started and not finished) and the idle timeout.
    pub(crate) fn poll_timers(
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
                    return Poll::Ready(self.take_result().unwrap_or(Ok(())));
                }
                sleep.reset(deadline);
            }
        }
        Poll::Pending
    }
}
