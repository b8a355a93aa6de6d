//! TCP: a listener and a stream, registered with the current thread's reactor.

use crate::reactor::{READ, Registration, WRITE};
use futures::io::{AsyncRead, AsyncWrite};
use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The backlog of a listening socket.
const BACKLOG: i32 = 1024;
/// The first and the longest pause of `accept` when the process runs out of descriptors.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(100));

/// A TCP listening socket.
///
/// ```
/// use sheave_core::{Runtime, net::{TcpListener, TcpStream}};
/// use futures::{AsyncReadExt, AsyncWriteExt};
///
/// let rt = Runtime::new().unwrap();
/// rt.block_on(async {
///     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
///     let addr = listener.local_addr().unwrap();
///     sheave_core::spawn(async move {
///         let (mut conn, _) = listener.accept().await.unwrap();
///         let mut buf = [0; 5];
///         conn.read_exact(&mut buf).await.unwrap();
///         conn.write_all(&buf).await.unwrap();
///     });
///     let mut client = TcpStream::connect(addr).await.unwrap();
///     client.write_all(b"hello").await.unwrap();
///     let mut buf = [0; 5];
///     client.read_exact(&mut buf).await.unwrap();
///     assert_eq!(&buf, b"hello");
/// });
/// ```
pub struct TcpListener {
    io: mio::net::TcpListener,
    reg: Registration,
    backoffs: std::cell::Cell<u64>,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("addr", &self.io.local_addr().ok())
            .finish()
    }
}

fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Whether an accept error means "out of descriptors or memory": transient, worth a pause.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// Whether an accept error concerns only the connection being accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

impl TcpListener {
    /// Binds to `addr` (with `SO_REUSEADDR`, backlog 1024). Port 0 picks a free port.
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::from_std(listen(addr, false)?)
    }

    /// Binds to `addr` with `SO_REUSEPORT` as well, so each runtime thread can own a listener
    /// on the same port and the kernel spreads connections among them.
    pub fn bind_reuse_port(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::from_std(listen(addr, true)?)
    }

    /// Adopts a standard listener (made non-blocking here).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        let mut io = mio::net::TcpListener::from_std(listener);
        let reg = Registration::new(&mut io)?;
        Ok(TcpListener {
            io,
            reg,
            backoffs: std::cell::Cell::new(0),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Accepts a connection.
    ///
    /// One task accepts on a listener at a time: the reactor keeps one waker per direction
    /// of a socket (as tokio's `poll_*` methods do), so of two tasks waiting in `accept` on a
    /// shared listener only the last to wait is woken. Run one accept loop per listener and
    /// hand connections out from it (or give each thread its own listener with
    /// [`bind_reuse_port`](TcpListener::bind_reuse_port)).
    ///
    /// When the process is out of file descriptors (or the kernel out of buffers), `accept`
    /// does not fail and does not spin: it logs a warning, pauses (1 ms, doubling up to
    /// 100 ms) and tries again, so the server resumes as soon as descriptors free up. Errors that
    /// concern only the incoming connection (reset before accept) are skipped.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let mut pause = ACCEPT_BACKOFF.0;
        loop {
            let accepted =
                poll_fn(|cx| self.reg.poll_io(cx, READ, || self.io.accept(), |_| false)).await;
            match accepted {
                Ok((io, addr)) => return Ok((TcpStream::new(io)?, addr)),
                Err(e) if is_resource_exhaustion(&e) => {
                    self.backoffs.set(self.backoffs.get() + 1);
                    log::warn!("accept: {e}; pausing {pause:?}");
                    crate::time::sleep(pause).await;
                    pause = (pause * 2).min(ACCEPT_BACKOFF.1);
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// How many times [`accept`](TcpListener::accept) paused for lack of descriptors or buffers.
    pub fn accept_backoffs(&self) -> u64 {
        self.backoffs.get()
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.reg.deregister(&mut self.io);
    }
}

/// A TCP connection.
///
/// Reads and writes through the `futures::io` traits ([`AsyncRead`], [`AsyncWrite`]), so the
/// `AsyncReadExt`/`AsyncWriteExt` helpers and `futures::io::BufReader` (for `AsyncBufRead`)
/// work on it. Both traits are implemented for `&TcpStream` too: one task may read while
/// another writes, or use [`split_halves`](TcpStream::split_halves) / [`into_split`](TcpStream::into_split).
///
/// One reader and one writer at a time: the reactor keeps one waker per direction, so a
/// second task reading the same stream concurrently replaces the first one's waker.
///
/// A stream belongs to the runtime thread that made it:
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<sheave_core::net::TcpStream>();
/// ```
pub struct TcpStream {
    io: mio::net::TcpStream,
    reg: Registration,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("local", &self.io.local_addr().ok())
            .field("peer", &self.io.peer_addr().ok())
            .finish()
    }
}

impl TcpStream {
    fn new(mut io: mio::net::TcpStream) -> io::Result<TcpStream> {
        let reg = Registration::new(&mut io)?;
        Ok(TcpStream { io, reg })
    }

    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::new(mio::net::TcpStream::connect(addr)?)?;
        poll_fn(|cx| {
            loop {
                if stream.reg.poll_ready(cx, WRITE).is_pending() {
                    return Poll::Pending;
                }
                if let Some(e) = stream.io.take_error()? {
                    return Poll::Ready(Err(e));
                }
                match stream.io.peer_addr() {
                    Ok(_) => return Poll::Ready(Ok(())),
                    Err(e)
                        if e.kind() == io::ErrorKind::NotConnected
                            || e.raw_os_error() == Some(115) =>
                    {
                        // Still in progress (EINPROGRESS): wait for the writable edge.
                        stream.reg.clear_readiness(WRITE);
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        })
        .await?;
        Ok(stream)
    }

    /// Adopts a connected standard stream (made non-blocking here).
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        TcpStream::new(mio::net::TcpStream::from_std(stream))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.io.set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.io.nodelay()
    }

    /// Shuts down the read, write or both halves.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.shutdown(how)
    }

    /// Sets `SO_LINGER`. `Some(Duration::ZERO)` makes the close that follows a *reset*: the
    /// peer gets an RST instead of a FIN, and unsent data is discarded (what a crashed host
    /// or a middlebox that gives up looks like).
    pub fn set_linger(&self, linger: Option<std::time::Duration>) -> io::Result<()> {
        socket2::SockRef::from(&self.io).set_linger(linger)
    }

    /// Polls a read into `buf`.
    pub fn poll_read_buf(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let want = buf.len();
        self.reg
            .poll_io(cx, READ, || (&self.io).read(buf), |n| *n < want && *n > 0)
    }

    /// Polls a write of `buf`.
    pub fn poll_write_buf(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let want = buf.len();
        self.reg
            .poll_io(cx, WRITE, || (&self.io).write(buf), |n| *n < want)
    }

    /// Polls a gathering write of `bufs` (one syscall for many buffers).
    pub fn poll_write_bufs(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        self.reg
            .poll_io(cx, WRITE, || (&self.io).write_vectored(bufs), |n| *n < want)
    }

    /// Reads some bytes into `buf`; 0 means the peer closed its side.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read_buf(cx, buf)).await
    }

    /// Writes some bytes of `buf`; returns how many.
    pub async fn write(&self, buf: &[u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_write_buf(cx, buf)).await
    }

    /// Borrows the stream as a read half and a write half, for two branches of a `join`.
    ///
    /// (Not named `split`: `futures::AsyncReadExt::split` takes the stream by value and would
    /// win method resolution wherever that trait is imported.)
    pub fn split_halves(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (ReadHalf(self), WriteHalf(self))
    }

    /// Splits the stream into owned halves. Dropping the write half shuts down the write side
    /// (the peer reads end-of-stream).
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let stream = Rc::new(self);
        (OwnedReadHalf(stream.clone()), OwnedWriteHalf(stream))
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.reg.deregister(&mut self.io);
    }
}

macro_rules! async_io_for {
    ($ty:ty, $stream:ident => $get:expr) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                let $stream = &*self;
                ($get).poll_read_buf(cx, buf)
            }
        }

        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let $stream = &*self;
                ($get).poll_write_buf(cx, buf)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let $stream = &*self;
                ($get).poll_write_bufs(cx, bufs)
            }

            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }

            fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                let $stream = &*self;
                Poll::Ready(match ($get).shutdown(Shutdown::Write) {
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                    other => other,
                })
            }
        }
    };
}

async_io_for!(TcpStream, s => s);
async_io_for!(&TcpStream, s => *s);

/// The read half of a borrowed [`TcpStream`]; see [`TcpStream::split_halves`].
#[derive(Debug)]
pub struct ReadHalf<'a>(&'a TcpStream);

/// The write half of a borrowed [`TcpStream`]; see [`TcpStream::split_halves`].
#[derive(Debug)]
pub struct WriteHalf<'a>(&'a TcpStream);

/// The owned read half of a [`TcpStream`]; see [`TcpStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf(Rc<TcpStream>);

/// The owned write half of a [`TcpStream`]; see [`TcpStream::into_split`].
/// Dropping it shuts down the write side.
#[derive(Debug)]
pub struct OwnedWriteHalf(Rc<TcpStream>);

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_read_buf(cx, buf)
    }
}

impl AsyncRead for OwnedReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_read_buf(cx, buf)
    }
}

macro_rules! write_half {
    ($ty:ty) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.0.poll_write_buf(cx, buf)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.0.poll_write_bufs(cx, bufs)
            }

            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }

            fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(self.0.shutdown(Shutdown::Write))
            }
        }
    };
}

write_half!(WriteHalf<'_>);
write_half!(OwnedWriteHalf);
