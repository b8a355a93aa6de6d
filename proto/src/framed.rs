//! [`Framed`]: a byte stream turned into a stream of frames and a sink of frames.
//!
//! Reads land in a bounded read buffer that the decoder consumes from the front; writes are
//! encoded into one write buffer and go out in as few system calls as possible — many frames,
//! one `write`. The dispatchers of this crate drive a `Framed` through its `poll_*` methods;
//! application code can use it directly as a [`Stream`] of frames and a [`Sink`] of frames.
//!
//! ```
//! use futures::{SinkExt, StreamExt};
//! use sheave_core::{Runtime, net::{TcpListener, TcpStream}};
//! use sheave_proto::{Framed, codec::LinesCodec};
//!
//! let rt = Runtime::new().unwrap();
//! rt.block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     sheave_core::spawn(async move {
//!         let (conn, _) = listener.accept().await.unwrap();
//!         let mut lines = Framed::new(conn, LinesCodec::new());
//!         while let Some(Ok(line)) = lines.next().await {
//!             lines.send(line.to_uppercase()).await.unwrap();
//!         }
//!     });
//!     let mut client = Framed::new(TcpStream::connect(addr).await.unwrap(), LinesCodec::new());
//!     client.send("hello").await.unwrap();
//!     assert_eq!(client.next().await.unwrap().unwrap(), "HELLO");
//! });
//! ```

use crate::codec::{Decoder, Encoder};
use bytes::{Buf, BytesMut};
use futures::io::{AsyncRead, AsyncWrite};
use futures::{Sink, Stream};
use sheave_service::Error;
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// The most bytes read per system call.
const READ_CHUNK: usize = 64 * 1024;
/// Write once this many bytes are buffered, even if more frames could be batched.
const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// Reading stops while the read buffer holds this much without yielding a frame.
const DEFAULT_MAX_READ_BUFFER: usize = 16 * 1024 * 1024 + READ_CHUNK;

thread_local! {
    /// One read buffer per thread: a read copies only the bytes that arrived into the
    /// connection's buffer, instead of zero-filling a chunk of it first (no `unsafe` here).
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// A transport of frames over a byte stream `T`, with codec `C`.
///
/// - **Reading**: [`poll_fill`](Framed::poll_fill) appends at most 64 KiB per call, and only
///   while the read buffer is under its bound (16 MiB + 64 KiB by default, above every
///   codec's default frame limit); a frame that does not fit is a protocol error.
/// - **Writing**: frames are encoded into one buffer; [`poll_flush_buf`](Framed::poll_flush_buf)
///   writes it out. As a [`Sink`], `poll_ready` flushes only once the buffer passes its high
///   water mark (64 KiB), so a burst of `feed`s costs one system call.
pub struct Framed<T, C> {
    io: T,
    codec: C,
    read_buf: BytesMut,
    write_buf: BytesMut,
    max_read_buffer: usize,
    high_water: usize,
    eof: bool,
    failed: bool,
}

impl<T, C: fmt::Debug> fmt::Debug for Framed<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framed")
            .field("codec", &self.codec)
            .field("read_buffered", &self.read_buf.len())
            .field("write_buffered", &self.write_buf.len())
            .field("eof", &self.eof)
            .finish()
    }
}

impl<T, C> Framed<T, C> {
    /// Frames `io` with `codec`.
    pub fn new(io: T, codec: C) -> Self {
        Framed {
            io,
            codec,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            max_read_buffer: DEFAULT_MAX_READ_BUFFER,
            high_water: DEFAULT_HIGH_WATER,
            eof: false,
            failed: false,
        }
    }

    /// Sets the bound of the read buffer (at least 1 KiB is kept).
    pub fn set_max_read_buffer(&mut self, bytes: usize) {
        self.max_read_buffer = bytes.max(1024);
    }

    /// Sets the write buffer size past which the sink flushes before accepting a frame.
    pub fn set_high_water(&mut self, bytes: usize) {
        self.high_water = bytes.max(1);
    }

    /// The byte stream.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The byte stream, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The codec, mutably.
    pub fn codec_mut(&mut self) -> &mut C {
        &mut self.codec
    }

    /// Bytes read but not yet decoded.
    pub fn read_buffer(&self) -> &BytesMut {
        &self.read_buf
    }

    /// Bytes encoded but not yet written.
    pub fn write_buffer(&self) -> &BytesMut {
        &self.write_buf
    }

    /// Drops the bytes read but not yet decoded (a closing server discards what it will not
    /// serve).
    pub(crate) fn discard_read_buffer(&mut self) {
        self.read_buf.clear();
    }

    /// Whether the peer has closed its side (a read returned 0).
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// The byte stream and the codec; buffered bytes are dropped.
    pub fn into_parts(self) -> (T, C) {
        (self.io, self.codec)
    }

    /// Encodes one frame into the write buffer (no I/O).
    pub fn encode<I>(&mut self, item: I) -> Result<(), Error>
    where
        C: Encoder<I>,
    {
        let before = self.write_buf.len();
        let encoded = self.codec.encode(item, &mut self.write_buf);
        if encoded.is_err() {
            // A codec may fail half-way through a frame (an array whose third element cannot
            // be encoded): never let the half written so far reach the wire, where the peer
            // would read the next frames as its missing parts.
            self.write_buf.truncate(before);
        }
        encoded
    }

    /// Buffers an error reply, if the codec has them (see [`Encoder::encode_error`]).
    pub fn encode_error<I>(&mut self, error: &Error) -> bool
    where
        C: Encoder<I>,
    {
        self.codec.encode_error(error, &mut self.write_buf)
    }

    /// Decodes one frame from the read buffer (no I/O); at end of stream, the codec's
    /// `decode_eof` decides what leftover bytes mean.
    pub fn decode(&mut self) -> Result<Option<C::Item>, Error>
    where
        C: Decoder,
    {
        if self.eof {
            self.codec.decode_eof(&mut self.read_buf)
        } else {
            self.codec.decode(&mut self.read_buf)
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin, C> Framed<T, C> {
    /// Reads more bytes into the read buffer: `Ready(Ok(n))` with `n > 0` bytes, `Ready(Ok(0))`
    /// at end of stream (see [`is_eof`](Framed::is_eof)). Errors when the buffer is full
    /// without having yielded a frame.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Error>> {
        if self.eof {
            return Poll::Ready(Ok(0));
        }
        let room = self.max_read_buffer.saturating_sub(self.read_buf.len());
        if room == 0 {
            return Poll::Ready(Err(Error::protocol(format!(
                "no frame in {} buffered bytes",
                self.read_buf.len()
            ))));
        }
        let want = room.min(READ_CHUNK);
        let io = &mut self.io;
        let buf = &mut self.read_buf;
        let n = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let n = ready!(Pin::new(io).poll_read(cx, &mut scratch[..want]))?;
            buf.extend_from_slice(&scratch[..n]);
            Poll::Ready(Ok::<_, io::Error>(n))
        });
        let n = ready!(n)?;
        if n == 0 {
            self.eof = true;
        }
        Poll::Ready(Ok(n))
    }

    /// Writes the write buffer out until it is empty (`Ready`) or the socket is full
    /// (`Pending`, with the waker registered).
    pub fn poll_flush_buf(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while !self.write_buf.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.write_buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
            }
            self.write_buf.advance(n);
        }
        // A burst grew the buffer far past the high water mark: give the memory back.
        if self.write_buf.capacity() > 4 * self.high_water.max(DEFAULT_HIGH_WATER) {
            self.write_buf = BytesMut::new();
        } else {
            self.write_buf.clear();
        }
        Poll::Ready(Ok(()))
    }

    /// Whether the write buffer has passed its high water mark.
    pub fn over_high_water(&self) -> bool {
        self.write_buf.len() >= self.high_water
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin, C: Decoder + Unpin> Stream for Framed<T, C> {
    type Item = Result<C::Item, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        loop {
            match this.decode() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) if this.eof => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if let Err(e) = ready!(this.poll_fill(cx)) {
                this.failed = true;
                return Poll::Ready(Some(Err(e)));
            }
        }
    }
}

impl<T, C, I> Sink<I> for Framed<T, C>
where
    T: AsyncRead + AsyncWrite + Unpin,
    C: Encoder<I> + Unpin,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.over_high_water() {
            ready!(this.poll_flush_buf(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: I) -> Result<(), Error> {
        self.get_mut().encode(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        ready!(this.poll_flush_buf(cx))?;
        Poll::Ready(ready!(Pin::new(&mut this.io).poll_flush(cx)).map_err(Error::from))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        ready!(this.poll_flush_buf(cx))?;
        Poll::Ready(ready!(Pin::new(&mut this.io).poll_close(cx)).map_err(Error::from))
    }
}
