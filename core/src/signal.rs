//! Shutdown signals: `SIGTERM` and `SIGINT` as a future, on the current thread's reactor.
//!
//! A process manager stops a server with `SIGTERM` and a terminal with `SIGINT` (Ctrl-C). With
//! [`Signals`] registered, neither kills the process any more: each arrives as a [`Signal`]
//! from [`Signals::recv`], and the program decides what stopping means — a `sheave_proto`
//! server drains (it stops accepting, answers what it took, closes); a plain program calls
//! [`Handle::shutdown`](crate::Handle::shutdown) or returns from `block_on`.
//!
//! The signal handler only writes to a pipe (signal-hook's self-pipe, registered with mio),
//! so nothing runs inside the handler and the wake is an ordinary readable event.
//!
//! ```
//! use sheave_core::{Runtime, signal::{Signal, Signals}};
//!
//! let rt = Runtime::new().unwrap();
//! let got = rt.block_on(async {
//!     let mut signals = Signals::new().unwrap();
//!     // A real program waits for the process manager; this one signals itself.
//!     signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
//!     signals.recv().await
//! });
//! assert_eq!(got, Signal::Terminate);
//! ```
//!
//! Once registered, the signals stay caught for the life of the process, also after the
//! `Signals` is dropped (a later `SIGTERM` is then ignored, not fatal): register them when the
//! program means to handle them.

use crate::reactor::{READ, Registration};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};

/// A shutdown signal that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// `SIGTERM`: a process manager asks the program to stop.
    Terminate,
    /// `SIGINT`: Ctrl-C in a terminal.
    Interrupt,
    /// `SIGHUP`: by convention, "reload your configuration" (only from
    /// [`Signals::hangup`]).
    Hangup,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
            Signal::Hangup => "SIGHUP",
        })
    }
}

/// `SIGTERM` and `SIGINT`, caught and delivered on the current runtime thread. Not `Send`: it
/// belongs to the reactor of the thread that made it. Several may exist at once; each gets
/// every signal.
pub struct Signals {
    io: signal_hook_mio::v1_0::Signals,
    reg: Registration,
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signals").finish_non_exhaustive()
    }
}

impl Signals {
    /// Catches `SIGTERM` and `SIGINT` from now on.
    ///
    /// Fails outside a runtime thread, or when the handler cannot be installed.
    pub fn new() -> io::Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut io = signal_hook_mio::v1_0::Signals::new([SIGTERM, SIGINT])?;
        let reg = Registration::new(&mut io)?;
        Ok(Signals { io, reg })
    }

    /// Catches `SIGHUP` from now on (and only it), for a program that reloads its
    /// configuration on it; [`recv`](Signals::recv) then returns [`Signal::Hangup`].
    ///
    /// Fails outside a runtime thread, or when the handler cannot be installed.
    pub fn hangup() -> io::Result<Signals> {
        let mut io = signal_hook_mio::v1_0::Signals::new([signal_hook::consts::SIGHUP])?;
        let reg = Registration::new(&mut io)?;
        Ok(Signals { io, reg })
    }

    /// Waits for the next signal (one that arrived since the last `recv`, or a new one).
    /// Cancel-safe: a signal is taken only when it is returned.
    pub async fn recv(&mut self) -> Signal {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next signal; see [`recv`](Signals::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Signal> {
        let io = &mut self.io;
        let taken = self.reg.poll_io(
            cx,
            READ,
            || {
                // Signals still flagged after the first stay flagged for the next call.
                io.pending()
                    .next()
                    .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))
            },
            |_| false,
        );
        match taken {
            Poll::Ready(Ok(signal_hook::consts::SIGINT)) => Poll::Ready(Signal::Interrupt),
            Poll::Ready(Ok(signal_hook::consts::SIGHUP)) => Poll::Ready(Signal::Hangup),
            Poll::Ready(Ok(_)) => Poll::Ready(Signal::Terminate),
            Poll::Ready(Err(e)) => {
                // Reading the self-pipe does not fail in practice; if it does, waiting again
                // on the next event is all that can be done.
                log::error!("reading the signal pipe failed: {e}");
                self.reg.clear_readiness(READ);
                let _ = self.reg.poll_ready(cx, READ);
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.reg.deregister(&mut self.io);
    }
}
