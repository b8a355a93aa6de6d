//! What hyper needs from a runtime, on sheave: I/O ([`Io`]), an executor ([`LocalExec`]) and a
//! timer ([`Timer`]).
//!
//! - [`Io`] is `hyper::rt::Read` and `hyper::rt::Write` over sheave's
//!   [`TcpStream`]. hyper reads into uninitialised memory, which
//!   safe code cannot fill in place (this crate forbids `unsafe`), so reads go through a small
//!   scratch buffer owned by the connection and are copied once (`put_slice`). Bytes already
//!   read by the server's protocol sniffing are replayed first. On the HTTP/1.1 server,
//!   writes are gathered (up to 64 KiB) while hyper runs and sent in one write when that poll
//!   of the connection ends: hyper flushes each HTTP/1.1 response on its own, so the answers
//!   to pipelined requests would otherwise cost one system call each. Nothing is held past
//!   the poll that wrote it. (HTTP/2 is left alone: h2 batches its own frames.)
//! - [`LocalExec`] spawns on the current runtime thread with [`sheave_core::spawn`]: futures
//!   need not be `Send` (hyper's HTTP/2 server and client accept such an executor, see its
//!   `single_threaded` example). No tokio runtime is started anywhere.
//! - [`Timer`] puts hyper's timers (the HTTP/1.1 header read timeout, HTTP/2 keep-alive pings)
//!   on the timer wheel of the current thread, and reads sheave's clock, so a paused clock
//!   pauses hyper too. hyper requires its `Sleep` to be `Send + Sync`; sheave's
//!   [`Sleep`](sheave_core::time::Sleep) is, because it holds only its deadline and the
//!   `(thread id, wheel key)` of its registration, never a pointer into the wheel. The wheel is
//!   reached through the thread-local runtime core when the sleep is polled, reset or dropped,
//!   and only if that is the thread it registered on (on another thread a drop leaves the entry
//!   to fire once, harmlessly; a poll re-registers there). [`Sleep`] is a newtype so hyper can
//!   downcast it to reset the same timer in place.
//!
//! ```
//! use sheave_core::{Runtime, time};
//! use sheave_http::rt::Timer;
//! use std::time::Duration;
//!
//! let rt = Runtime::builder().paused_clock().build().unwrap();
//! rt.block_on(async {
//!     let start = time::now();
//!     hyper::rt::Timer::sleep(&Timer, Duration::from_secs(3)).await;
//!     assert_eq!(time::now() - start, Duration::from_secs(3));
//! });
//! ```

use bytes::{Buf, Bytes};
use hyper::rt::{Read, ReadBufCursor, Write};
use sheave_core::net::TcpStream;
use sheave_core::time;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

/// The largest read handed to the kernel at once (hyper grows its buffer up to its maximum,
/// but a read of 16 KiB per wake-up keeps the scratch buffer small).
const SCRATCH: usize = 16 * 1024;

/// A sheave [`TcpStream`] as hyper's I/O: `hyper::rt::Read + hyper::rt::Write`.
pub struct Io {
    /// Shared with the server's driver, which may answer on it after hyper gave up (a 408).
    stream: Rc<TcpStream>,
    /// Whether bytes arrived since the last write: a request was begun and not answered.
    partial: Rc<Cell<bool>>,
    /// Bytes read before hyper took the stream (the protocol sniff), replayed first.
    prefix: Bytes,
    /// Where reads land before they are copied into hyper's buffer; allocated on first read.
    scratch: Vec<u8>,
    /// With [`coalesce`](Io::coalesce): where writes wait for the end of the connection's poll.
    outbox: Option<Rc<Outbox>>,
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("stream", &self.stream)
            .field("replaying", &self.prefix.len())
            .finish()
    }
}

impl Io {
    /// Wraps `stream`.
    pub fn new(stream: TcpStream) -> Io {
        Io::with_prefix(stream, Bytes::new())
    }

    /// Wraps `stream`, replaying `prefix` (bytes already read from it) before reading more.
    pub fn with_prefix(stream: TcpStream, prefix: Bytes) -> Io {
        Io {
            stream: Rc::new(stream),
            partial: Rc::new(Cell::new(!prefix.is_empty())),
            prefix,
            scratch: Vec::new(),
            outbox: None,
        }
    }

    /// From now on, writes are gathered (up to [`OUTBOX_LIMIT`]) and go out in one write when
    /// the connection's poll ends ([`Flushing`] drives that): so the answers to pipelined
    /// requests, which hyper flushes one by one, leave in one `writev`, not one each. Nothing
    /// waits longer than the poll that wrote it.
    pub(crate) fn coalesce(&mut self) -> Rc<Outbox> {
        let outbox = Rc::new(Outbox {
            stream: self.stream.clone(),
            buf: RefCell::new(Vec::new()),
            sent: Cell::new(0),
            broken: Cell::new(None),
        });
        self.outbox = Some(outbox.clone());
        outbox
    }

    /// The stream and the "request begun, not answered" flag, for the server's driver.
    pub(crate) fn watch(&self) -> (Rc<TcpStream>, Rc<Cell<bool>>) {
        (self.stream.clone(), self.partial.clone())
    }

    /// The stream.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }
}

impl Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let want = buf.remaining().min(SCRATCH);
        if this.scratch.len() < want {
            this.scratch.resize(want, 0);
        }
        match this.stream.poll_read_buf(cx, &mut this.scratch[..want]) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.partial.set(true);
                }
                buf.put_slice(&this.scratch[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.partial.set(false);
        match &self.outbox {
            Some(outbox) => outbox.poll_gather(cx, &[IoSlice::new(buf)]),
            None => self.stream.poll_write_buf(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.partial.set(false);
        match &self.outbox {
            Some(outbox) => outbox.poll_gather(cx, bufs),
            None => self.stream.poll_write_bufs(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket, or (gathered) at the end of the poll.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(outbox) = &self.outbox {
            ready!(outbox.poll_drain(cx))?; // what was written goes before the FIN
        }
        match self.stream.shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// The most bytes an [`Outbox`] gathers before a write must wait for them to go out (the
/// backpressure on a peer that does not read): 64 KiB.
pub(crate) const OUTBOX_LIMIT: usize = 64 * 1024;

/// Writes gathered by a coalescing [`Io`], sent by [`Outbox::poll_drain`].
pub(crate) struct Outbox {
    stream: Rc<TcpStream>,
    buf: RefCell<Vec<u8>>,
    /// How much of `buf` has gone out.
    sent: Cell<usize>,
    /// A write failed: every later one fails the same way.
    broken: Cell<Option<io::ErrorKind>>,
}

impl Outbox {
    /// Takes all of `bufs` (once the outbox is under its limit, which may mean waiting for the
    /// socket), or fails as the socket did.
    fn poll_gather(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.buf.borrow().len() + len > OUTBOX_LIMIT {
            ready!(self.poll_drain(cx))?;
            if len >= OUTBOX_LIMIT {
                return self.stream.poll_write_bufs(cx, bufs); // a big write goes straight out
            }
        }
        if let Some(kind) = self.broken.get() {
            return Poll::Ready(Err(kind.into()));
        }
        let mut buf = self.buf.borrow_mut();
        for b in bufs {
            buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    /// Sends what was gathered; `Pending` (woken when the socket takes more) until it all went.
    pub(crate) fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(kind) = self.broken.get() {
            return Poll::Ready(Err(kind.into()));
        }
        let mut buf = self.buf.borrow_mut();
        while self.sent.get() < buf.len() {
            match ready!(self.stream.poll_write_buf(cx, &buf[self.sent.get()..])) {
                Ok(0) => {
                    self.broken.set(Some(io::ErrorKind::WriteZero));
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => self.sent.set(self.sent.get() + n),
                Err(e) => {
                    self.broken.set(Some(e.kind()));
                    buf.clear();
                    self.sent.set(0);
                    return Poll::Ready(Err(e));
                }
            }
        }
        buf.clear();
        self.sent.set(0);
        Poll::Ready(Ok(()))
    }
}

pin_project_lite::pin_project! {
    /// Runs a connection future over a coalescing [`Io`]: after each of its polls, sends what
    /// it wrote; it finishes only once that is out.
    pub(crate) struct Flushing<F: Future> {
        #[pin]
        conn: F,
        outbox: Rc<Outbox>,
        done: Option<F::Output>,
    }
}

impl<F: Future> Flushing<F> {
    pub(crate) fn new(conn: F, outbox: Rc<Outbox>) -> Self {
        Flushing {
            conn,
            outbox,
            done: None,
        }
    }

    /// The connection itself (for its graceful shutdown).
    pub(crate) fn conn(self: Pin<&mut Self>) -> Pin<&mut F> {
        self.project().conn
    }
}

impl<F: Future> Future for Flushing<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if this.done.is_none()
            && let Poll::Ready(out) = this.conn.poll(cx)
        {
            *this.done = Some(out);
        }
        // A failed write is remembered: the connection sees it on its next write.
        if this.outbox.poll_drain(cx).is_pending() {
            return Poll::Pending; // woken when the socket takes more
        }
        match this.done.take() {
            Some(out) => Poll::Ready(out),
            None => Poll::Pending,
        }
    }
}

/// Writes all of `bytes` to `stream`.
pub(crate) async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.write(bytes).await? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => bytes = &bytes[n..],
        }
    }
    Ok(())
}

/// hyper's executor on sheave: spawns on the current runtime thread; futures need not be
/// `Send`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, future: F) {
        drop(sheave_core::spawn(future)); // detached: it runs to its end
    }
}

/// hyper's timer on sheave's wheel and clock (see the [module docs](self) for why its sleeps
/// are `Send + Sync`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timer;

/// A sheave [`Sleep`](time::Sleep) as hyper's `Sleep`.
#[derive(Debug)]
pub struct Sleep(time::Sleep);

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl hyper::rt::Sleep for Sleep {}

impl hyper::rt::Timer for Timer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep(time::sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep(time::sleep_until(deadline)))
    }

    fn now(&self) -> Instant {
        time::now()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Sleep>() {
            Some(ours) => ours.get_mut().0.reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn sleeps_are_send_and_sync_as_hyper_requires() {
        assert_send_sync::<Sleep>();
        assert_send_sync::<time::Sleep>();
    }

    #[test]
    fn reset_moves_the_same_timer() {
        let rt = sheave_core::Runtime::builder()
            .paused_clock()
            .build()
            .unwrap();
        rt.block_on(async {
            let start = time::now();
            let timer = Timer;
            let mut sleep = hyper::rt::Timer::sleep(&timer, Duration::from_secs(10));
            hyper::rt::Timer::reset(&timer, &mut sleep, start + Duration::from_secs(2));
            assert!(sleep.as_mut().downcast_mut_pin::<Sleep>().is_some());
            sleep.await;
            assert_eq!(time::now() - start, Duration::from_secs(2));
        });
    }
}
