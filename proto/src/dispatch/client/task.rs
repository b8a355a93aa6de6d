//! The connection task: writes what the callers encoded, reads the responses and hands each
//! to its caller; fails every caller when the connection ends.

use super::Shared;
use crate::codec::Decoder;
use crate::dispatch::Mode;
use futures::io::{AsyncRead, AsyncWrite};
use sheave_service::Error;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// The connection task: writes what callers encoded, reads responses and hands them out.
pub(super) fn drive<C, M, T>(shared: &Shared<C, M, T>, cx: &mut Context<'_>) -> Poll<()>
where
    C: Decoder,
    M: Mode<C::Item, C::Item>,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = shared.framed.borrow_mut();
    let mut state = shared.state.borrow_mut();
    match &state.conn_task {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => state.conn_task = Some(cx.waker().clone()),
    }
    if state.closed.is_some() {
        // Recycled by a caller (too many abandoned calls): every caller already has its
        // answer; only the connection is left to close.
        let _ = Pin::new(framed.get_mut()).poll_close(cx);
        return Poll::Ready(());
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
    // Tell the peer (a FIN); the stream itself goes with the last handle.
    let _ = Pin::new(framed.get_mut()).poll_close(cx);
    Poll::Ready(())
}

/// Held by the connection task: however the task ends — `drive` returning, or a panic (a
/// codec's, say) that the runtime catches and drops the task for — every caller still
/// waiting is failed, never left hanging.
pub(super) struct TaskGuard<C: Decoder, M, T>(pub(super) Rc<Shared<C, M, T>>);

impl<C: Decoder, M, T> Drop for TaskGuard<C, M, T> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.try_borrow_mut()
            && state.closed.is_none()
        {
            state.fail_all(Error::closed().with_context("the connection task ended"));
        }
    }
}
