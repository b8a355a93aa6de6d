//! [`Replay`]: a request body that `Retry` and `Hedge` can send again, buffered up to a cap.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use sheave_service::{BoxError, Error, ErrorKind};
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The default cap of a [`Replay`] body: 64 KiB.
pub const DEFAULT_REPLAY_CAP: usize = 64 * 1024;

/// A request body buffered for resending, up to a cap: a body that ends within the cap is kept
/// whole, and [`try_clone`](Replay::try_clone) copies it (a `Bytes` clone: no copy of the
/// data); a longer one is sent once — what was read to find out, then the rest — and cannot
/// be cloned, so [`HttpRetry`](crate::classify::HttpRetry) does not retry it, and
/// [`SentOnce`](crate::classify::SentOnce) below the retry layer flags its failure
/// non-retryable with the reason ([`why_not_replayable`](Replay::why_not_replayable)).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use sheave_http::body::Replay;
///
/// let rt = sheave_core::Runtime::new().unwrap();
/// rt.block_on(async {
///     let small = Replay::new(Full::new(Bytes::from("twice")), 1024).await.unwrap();
///     let again = small.try_clone().expect("within the cap: replayable");
///     assert_eq!(again.collect().await.unwrap().to_bytes(), "twice");
///     let big = Replay::new(Full::new(Bytes::from(vec![0u8; 2048])), 1024).await.unwrap();
///     assert!(big.try_clone().is_none(), "past the cap: sent once");
///     assert_eq!(big.collect().await.unwrap().to_bytes().len(), 2048, "nothing lost");
/// });
/// ```
pub struct Replay<B> {
    state: State<B>,
}

enum State<B> {
    Buffered {
        data: Bytes,
        trailers: Option<HeaderMap>,
        /// Whether this copy has yielded its data (and trailers) yet.
        sent_data: bool,
        sent_trailers: bool,
    },
    Once {
        prefix: Option<Bytes>,
        rest: B,
        /// How much was read before the cap was passed, and the cap.
        read_ahead: usize,
        cap: usize,
        /// The whole length, if the body knew it when the cap was passed.
        whole: Option<u64>,
    },
}

impl<B> fmt::Debug for Replay<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Buffered { data, .. } => f
                .debug_struct("Replay")
                .field("buffered", &data.len())
                .finish(),
            State::Once { prefix, .. } => f
                .debug_struct("Replay")
                .field("once, read ahead", &prefix.as_ref().map_or(0, |p| p.len()))
                .finish(),
        }
    }
}

impl<B> Replay<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Reads `body` until it ends or passes `cap` bytes (so at most `cap` plus one frame is
    /// held). Fails if reading fails.
    pub async fn new(mut body: B, cap: usize) -> Result<Replay<B>, Error> {
        let mut buf = BytesMut::new();
        loop {
            match body.frame().await {
                None => {
                    return Ok(Replay::buffered(buf.freeze(), None));
                }
                Some(Err(e)) => return Err(Error::new(ErrorKind::Protocol, e.into())),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        buf.extend_from_slice(&data);
                        if buf.len() > cap {
                            let read_ahead = buf.len();
                            let whole = body
                                .size_hint()
                                .exact()
                                .map(|rest| rest + read_ahead as u64);
                            return Ok(Replay {
                                state: State::Once {
                                    prefix: Some(buf.freeze()),
                                    rest: body,
                                    read_ahead,
                                    cap,
                                    whole,
                                },
                            });
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body.
                        let trailers = frame.into_trailers().ok();
                        return Ok(Replay::buffered(buf.freeze(), trailers));
                    }
                },
            }
        }
    }
}

impl<B> Replay<B> {
    fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Replay<B> {
        Replay {
            state: State::Buffered {
                data,
                trailers,
                sent_data: false,
                sent_trailers: false,
            },
        }
    }

    /// Whether the whole body is buffered (and so can be sent again).
    pub fn is_replayable(&self) -> bool {
        matches!(self.state, State::Buffered { .. })
    }

    /// A fresh copy to send again, if the body is buffered.
    pub fn try_clone(&self) -> Option<Replay<B>> {
        match &self.state {
            State::Buffered { data, trailers, .. } => {
                Some(Replay::buffered(data.clone(), trailers.clone()))
            }
            State::Once { .. } => None,
        }
    }

    /// Why this body cannot be sent again, if it cannot: e.g. `the request body (1048576
    /// bytes) was past the replay cap of 64 KiB` (`at least N bytes` when the body's length
    /// was unknown). `None` for a buffered body.
    pub fn why_not_replayable(&self) -> Option<String> {
        match &self.state {
            State::Buffered { .. } => None,
            State::Once {
                read_ahead,
                cap,
                whole,
                ..
            } => {
                let size = match whole {
                    Some(n) => format!("{n} bytes"),
                    None => format!("at least {read_ahead} bytes"),
                };
                Some(format!(
                    "the request body ({size}) was past the replay cap of {}",
                    human_size(*cap)
                ))
            }
        }
    }
}

/// `65536` as `64 KiB`, `1048576` as `1 MiB`, other sizes in bytes.
fn human_size(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

impl<B> HttpBody for Replay<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match &mut self.state {
            State::Buffered {
                data,
                trailers,
                sent_data,
                sent_trailers,
            } => {
                if !*sent_data {
                    *sent_data = true;
                    if !data.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
                    }
                }
                if !*sent_trailers {
                    *sent_trailers = true;
                    if let Some(trailers) = trailers.clone() {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                }
                Poll::Ready(None)
            }
            State::Once { prefix, rest, .. } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                match Pin::new(rest).poll_frame(cx) {
                    Poll::Ready(Some(Err(e))) => {
                        Poll::Ready(Some(Err(Error::new(ErrorKind::Protocol, e.into()))))
                    }
                    Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Buffered {
                data,
                trailers,
                sent_data,
                sent_trailers,
            } => (*sent_data || data.is_empty()) && (*sent_trailers || trailers.is_none()),
            State::Once { prefix, rest, .. } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Buffered {
                data, sent_data, ..
            } => SizeHint::with_exact(if *sent_data { 0 } else { data.len() as u64 }),
            State::Once { prefix, rest, .. } => {
                let ahead = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let mut hint = SizeHint::new();
                hint.set_lower(rest.size_hint().lower() + ahead);
                if let Some(upper) = rest.size_hint().upper() {
                    hint.set_upper(upper + ahead);
                }
                hint
            }
        }
    }
}
