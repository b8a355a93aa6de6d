//! Bodies: [`Body`], what arrives (a request on a server, a response on a client), pulled
//! frame by frame with a size limit; [`channel`], a bounded body for producers; and
//! [`Replay`], a request body buffered up to a cap so that retries can send it again.
//!
//! A [`Body`] is read only when its reader asks for the next frame, so a handler that stops
//! reading stops the reads from the socket: that is the backpressure. Dropping it unread
//! discards the rest the only safe way — hyper closes an HTTP/1.1 connection after the response
//! (it does not read and throw away the rest in the background) and resets an HTTP/2 stream.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::BodyExt;
//! use sheave_http::body;
//!
//! let rt = sheave_core::Runtime::new().unwrap();
//! rt.block_on(async {
//!     let (mut tx, body) = body::channel(1);
//!     sheave_core::spawn(async move {
//!         tx.send(Bytes::from_static(b"hello ")).await.unwrap();
//!         tx.send(Bytes::from_static(b"world")).await.unwrap();
//!     });
//!     let all = body.collect().await.unwrap().to_bytes();
//!     assert_eq!(all, "hello world");
//! });
//! ```

mod replay;

pub use replay::{DEFAULT_REPLAY_CAP, Replay};

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{Stream, future::poll_fn};
use http_body::{Frame, SizeHint};
use sheave_service::Error;
use std::cell::Cell;
use std::fmt;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// Why reading a [`Body`] failed, as the server answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// More bytes than the limit: 413.
    TooLarge,
    /// The peer broke the framing (a bad chunk, a reset stream): 400.
    Malformed,
}

/// What a body reports to the connection that serves it (shared, one thread).
pub(crate) type FaultCell = Rc<Cell<Option<Fault>>>;

/// An incoming body: an [`http_body::Body`] of [`Bytes`] whose errors are sheave
/// [`Error`]s of kind `Protocol`. At most `limit` bytes are accepted; past that the next
/// frame is an error (and a server answers 413), counted as the bytes arrive — nothing is
/// buffered to find out.
pub struct Body {
    kind: Kind,
    /// Data bytes still allowed.
    left: u64,
    limit: u64,
    fault: Option<FaultCell>,
    /// A client's pool slot, given back (with the connection) at the end of the body.
    release: Option<crate::client::Release>,
}

enum Kind {
    Empty,
    Incoming(hyper::body::Incoming),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Empty => "empty",
            Kind::Incoming(_) => "incoming",
        };
        f.debug_struct("Body")
            .field("kind", &kind)
            .field("limit", &self.limit)
            .field("read", &(self.limit - self.left))
            .finish()
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl Body {
    /// A body with no bytes (for requests built in tests, say).
    pub fn empty() -> Body {
        Body {
            kind: Kind::Empty,
            left: 0,
            limit: 0,
            fault: None,
            release: None,
        }
    }

    pub(crate) fn incoming(
        incoming: hyper::body::Incoming,
        limit: u64,
        fault: Option<FaultCell>,
    ) -> Body {
        Body {
            kind: Kind::Incoming(incoming),
            left: limit,
            limit,
            fault,
            release: None,
        }
    }

    pub(crate) fn client(
        incoming: hyper::body::Incoming,
        limit: u64,
        release: crate::client::Release,
    ) -> Body {
        let mut body = Body::incoming(incoming, limit, None);
        body.release = Some(release);
        body
    }

    /// The most bytes this body accepts.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn fail(&mut self, fault: Fault, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if let Some(cell) = &self.fault {
            cell.set(Some(fault));
        }
        self.kind = Kind::Empty;
        self.release = None; // the connection is not reusable
        Poll::Ready(Some(Err(error)))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let Kind::Incoming(incoming) = &mut this.kind else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.left {
                        let limit = this.limit;
                        return this.fail(
                            Fault::TooLarge,
                            Error::protocol(format!("body larger than {limit} bytes")),
                        );
                    }
                    this.left -= n;
                }
                // The last frame: a consumer that knows the length (hyper's server does)
                // stops here and drops the body without polling for the end, so the
                // connection goes back to the pool now, not only on a final `None`.
                if incoming.is_end_stream()
                    && let Some(release) = this.release.take()
                {
                    release.complete();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(
                Fault::Malformed,
                Error::new(sheave_service::ErrorKind::Protocol, e),
            ),
            Poll::Ready(None) => {
                this.kind = Kind::Empty;
                if let Some(release) = this.release.take() {
                    release.complete();
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Incoming(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Incoming(incoming) => incoming.size_hint(),
        }
    }
}

/// The default capacity of a [`channel`] body: one frame in flight, so the producer runs at
/// the pace of the socket.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 1;

/// A bounded body fed by a [`Sender`]: at most `capacity` frames (at least 1) wait to be
/// written; `send` waits for room. The body ends when the sender is dropped.
pub fn channel(capacity: usize) -> (Sender, ChannelBody) {
    // An mpsc channel holds `buffer + 1` items per sender.
    let (tx, rx) = mpsc::channel(capacity.max(1) - 1);
    (Sender { tx }, ChannelBody { rx })
}

/// The producing end of a [`channel`] body.
#[derive(Debug)]
pub struct Sender {
    tx: mpsc::Sender<Result<Frame<Bytes>, Error>>,
}

impl Sender {
    /// Sends a chunk of data, waiting for room. Fails with `Closed` once the body was dropped
    /// (the peer went away).
    pub async fn send(&mut self, data: Bytes) -> Result<(), Error> {
        self.send_frame(Ok(Frame::data(data))).await
    }

    /// Sends trailers; the body should end after them.
    pub async fn send_trailers(&mut self, trailers: http::HeaderMap) -> Result<(), Error> {
        self.send_frame(Ok(Frame::trailers(trailers))).await
    }

    /// Ends the body with an error: the peer sees the body cut short (an HTTP/1.1 connection
    /// closed mid-body, an HTTP/2 stream reset), never a body that looks complete.
    pub async fn abort(mut self, error: Error) {
        let _ = self.send_frame(Err(error)).await;
    }

    async fn send_frame(&mut self, frame: Result<Frame<Bytes>, Error>) -> Result<(), Error> {
        poll_fn(|cx| self.tx.poll_ready(cx))
            .await
            .map_err(|_| Error::closed())?;
        self.tx.start_send(frame).map_err(|_| Error::closed())
    }
}

/// The body of a [`channel`].
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, Error>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use std::task::Waker;

    #[test]
    fn a_channel_of_capacity_one_takes_one_frame_then_waits() {
        let (mut tx, mut body) = channel(1);
        let mut cx = Context::from_waker(Waker::noop());
        let mut first = Box::pin(tx.send(Bytes::from_static(b"a")));
        assert!(first.as_mut().poll(&mut cx).is_ready());
        drop(first);
        let mut second = Box::pin(tx.send(Bytes::from_static(b"b")));
        assert!(second.as_mut().poll(&mut cx).is_pending(), "bounded");
        let got = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(got, Poll::Ready(Some(Ok(ref f))) if f.data_ref().unwrap() == "a"));
        assert!(second.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn sending_into_a_dropped_body_says_closed() {
        let (mut tx, body) = channel(1);
        drop(body);
        let mut cx = Context::from_waker(Waker::noop());
        let mut send = Box::pin(tx.send(Bytes::from_static(b"a")));
        let Poll::Ready(Err(e)) = send.as_mut().poll(&mut cx) else {
            panic!("a send into a dropped body must fail");
        };
        assert!(e.is_closed());
    }

    #[test]
    fn an_empty_body_ends_at_once() {
        let mut body = Body::empty();
        assert!(body.is_end_stream());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
    }
}
