//! The reactor: one `mio::Poll` per runtime thread and the readiness of every registered source.
//!
//! # The wakeup protocol
//!
//! - A source is registered **once**, edge-triggered, for reading and writing. Its slab key and
//!   a generation form the `mio::Token`; an event whose generation does not match the slot
//!   (the source was dropped and the slot reused) is dropped.
//! - Each source has an [`IoState`]: cached readiness bits, a `tick` bumped by every event, and
//!   one waker per direction. An event ORs its bits in, bumps the tick and wakes the waiters.
//! - An operation tries the syscall while the cached bit says ready. On `WouldBlock` it clears
//!   the bit **only if the tick is unchanged** since it read the bit, so a clear never erases an
//!   event that arrived in between (tokio #6133). A short read or write (fewer bytes than asked)
//!   also means the kernel buffer was drained or filled, so the bit is cleared the same way and
//!   the `WouldBlock` syscall is saved; the next edge sets it again. A peer's close (FIN, RST,
//!   an error) sets a **sticky** closed bit instead, which no read clears: the close may arrive
//!   in the same event as the last data, and no later event would report it again.
//! - New sources start *ready* in both directions: the first operation is tried at once (a fresh
//!   connection is writable, a listener may have a backlog) and learns otherwise from the kernel.
//! - [`coop`]: each task poll has a budget of I/O operations; when it is spent, the operation
//!   wakes the task and returns `Pending`, so one busy socket cannot starve the others.

use crate::runtime;
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Readable.
pub(crate) const READ: u8 = 0b0001;
/// Writable.
pub(crate) const WRITE: u8 = 0b0010;
/// The read side is closed (FIN or error): sticky — a short read never clears it, because no
/// further event will come to say so again.
const READ_CLOSED: u8 = 0b0100;
/// The write side is closed or errored: sticky, like [`READ_CLOSED`].
const WRITE_CLOSED: u8 = 0b1000;

/// The sticky "closed" bit that also makes `dir` ready.
fn closed_bit(dir: u8) -> u8 {
    if dir == READ {
        READ_CLOSED
    } else {
        WRITE_CLOSED
    }
}

/// The token of the thread's `mio::Waker` (cross-thread wakes and spawns).
pub(crate) const WAKE_TOKEN: mio::Token = mio::Token(usize::MAX);

/// The readiness of one registered source.
#[derive(Default)]
pub(crate) struct IoState {
    /// Cached readiness bits ([`READ`], [`WRITE`], and the sticky closed bits).
    readiness: Cell<u8>,
    /// Bumped by every event for this source.
    tick: Cell<u32>,
    reader: Cell<Option<Waker>>,
    writer: Cell<Option<Waker>>,
}

impl IoState {
    fn waker_cell(&self, dir: u8) -> &Cell<Option<Waker>> {
        if dir == READ {
            &self.reader
        } else {
            &self.writer
        }
    }

    fn set_waker(&self, dir: u8, waker: &Waker) {
        let cell = self.waker_cell(dir);
        let old = cell.take();
        cell.set(match old {
            Some(w) if w.will_wake(waker) => Some(w),
            _ => Some(waker.clone()),
        });
    }

    fn on_event(&self, bits: u8) {
        self.readiness.set(self.readiness.get() | bits);
        self.tick.set(self.tick.get().wrapping_add(1));
        if bits & READ != 0
            && let Some(w) = self.reader.take()
        {
            w.wake();
        }
        if bits & WRITE != 0
            && let Some(w) = self.writer.take()
        {
            w.wake();
        }
    }

    /// Clears `dir` unless an event arrived since `tick` was read.
    fn clear(&self, dir: u8, tick: u32) {
        if self.tick.get() == tick {
            self.readiness.set(self.readiness.get() & !dir);
        }
    }
}

/// A registration of a source with the current thread's reactor. Deregistering is the owner's
/// job ([`Registration::deregister`], called from the I/O type's `Drop`).
pub(crate) struct Registration {
    state: Rc<IoState>,
    key: usize,
    /// The core whose reactor holds the registration: only it may deregister the key. Weak,
    /// so the source is removed from its own table whichever runtime (if any) is current
    /// when it is dropped — between two `block_on`s, say — and not at all once that
    /// runtime is gone (closing the descriptor removes it from the poller anyway).
    owner: Weak<runtime::Core>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("readiness", &self.state.readiness.get())
            .finish()
    }
}

impl Registration {
    /// Registers `source` with the current thread's reactor.
    ///
    /// Fails with `io::ErrorKind::Other` outside a runtime thread.
    pub(crate) fn new(source: &mut impl mio::event::Source) -> io::Result<Self> {
        runtime::try_current_core()
            .map(|core| core.reactor.register(source, Rc::downgrade(&core)))
            .ok_or_else(|| io::Error::other("sheave: I/O must be created on a runtime thread"))?
    }

    /// Runs `op` while the source is ready in `dir`; returns `Pending` with the waker stored
    /// when it is not. `op` returns how many bytes it moved and how many it was asked to, or an
    /// error; a short transfer or `WouldBlock` clears the readiness bit.
    pub(crate) fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        dir: u8,
        mut op: impl FnMut() -> io::Result<R>,
        short: impl Fn(&R) -> bool,
    ) -> Poll<io::Result<R>> {
        if !coop::proceed(cx) {
            return Poll::Pending;
        }
        loop {
            let state = &*self.state;
            if state.readiness.get() & (dir | closed_bit(dir)) == 0 {
                state.set_waker(dir, cx.waker());
                return Poll::Pending;
            }
            let tick = state.tick.get();
            match op() {
                // Nothing to do after all: clear the sticky closed bit too. An error event
                // (a UDP socket's ICMP error, say) sets it, and once the call has returned
                // the error, it would otherwise keep this loop calling into `WouldBlock`.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    state.clear(dir | closed_bit(dir), tick)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(r) => {
                    if short(&r) {
                        state.clear(dir, tick);
                    }
                    return Poll::Ready(Ok(r));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Waits until the source is (believed) ready in `dir`, without doing I/O.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>, dir: u8) -> Poll<()> {
        if self.state.readiness.get() & (dir | closed_bit(dir)) != 0 {
            Poll::Ready(())
        } else {
            self.state.set_waker(dir, cx.waker());
            Poll::Pending
        }
    }

    /// Marks `dir` not ready (the caller saw `WouldBlock` outside [`poll_io`](Self::poll_io)).
    pub(crate) fn clear_readiness(&self, dir: u8) {
        let tick = self.state.tick.get();
        self.state.clear(dir, tick);
    }

    /// Removes the source from the reactor. Safe to call when the runtime is gone.
    pub(crate) fn deregister(&self, source: &mut impl mio::event::Source) {
        if let Some(core) = self.owner.upgrade() {
            core.reactor.deregister(self.key, source);
        }
    }
}

/// The per-thread reactor.
pub(crate) struct Reactor {
    /// The OS poller: epoll here.
    poll: RefCell<mio::Poll>,
    /// Reused event buffer.
    events: RefCell<mio::Events>,
    /// Registered sources: generation and state, by slab key.
    sources: RefCell<Slab<(u32, Rc<IoState>)>>,
    next_gen: Cell<u32>,
    /// Whether a poll returned the thread's `mio::Waker` token (cross-thread work arrived).
    woken: Cell<bool>,
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("sources", &self.sources.borrow().len())
            .finish()
    }
}

/// Bits of a token that hold the slab key; the rest hold the generation.
const KEY_BITS: u32 = 32;

impl Reactor {
    pub(crate) fn new(poll: mio::Poll) -> Self {
        Reactor {
            poll: RefCell::new(poll),
            events: RefCell::new(mio::Events::with_capacity(1024)),
            sources: RefCell::new(Slab::new()),
            next_gen: Cell::new(0),
            woken: Cell::new(false),
        }
    }

    fn register(
        &self,
        source: &mut impl mio::event::Source,
        owner: Weak<runtime::Core>,
    ) -> io::Result<Registration> {
        let generation = self.next_gen.get().wrapping_add(1);
        self.next_gen.set(generation);
        let state = Rc::new(IoState {
            readiness: Cell::new(READ | WRITE),
            ..IoState::default()
        });
        let key = self
            .sources
            .borrow_mut()
            .insert((generation, state.clone()));
        let token = mio::Token(((generation as usize) << KEY_BITS) | key);
        if let Err(e) = self.poll.borrow().registry().register(
            source,
            token,
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        ) {
            self.sources.borrow_mut().remove(key);
            return Err(e);
        }
        Ok(Registration { state, key, owner })
    }

    fn deregister(&self, key: usize, source: &mut impl mio::event::Source) {
        if let Err(e) = self.poll.borrow().registry().deregister(source) {
            log::debug!("deregister failed: {e}");
        }
        self.sources.borrow_mut().try_remove(key);
    }

    pub(crate) fn take_woken(&self) -> bool {
        self.woken.replace(false)
    }

    /// Waits for events (up to `timeout`) and dispatches them; returns how many arrived.
    pub(crate) fn turn(&self, timeout: Option<Duration>) -> io::Result<usize> {
        let mut events = self.events.borrow_mut();
        match self.poll.borrow_mut().poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(e) => return Err(e),
        }
        let mut n = 0;
        for event in events.iter() {
            n += 1;
            let token = event.token();
            if token == WAKE_TOKEN {
                self.woken.set(true);
                continue;
            }
            let key = token.0 & ((1 << KEY_BITS) - 1);
            let generation = (token.0 >> KEY_BITS) as u32;
            let state = match self.sources.borrow().get(key) {
                Some((g, state)) if *g == generation => state.clone(),
                _ => continue, // a late event for a dropped source
            };
            let mut bits = 0;
            if event.is_readable() {
                bits |= READ;
            }
            if event.is_read_closed() || event.is_error() {
                bits |= READ | READ_CLOSED;
            }
            if event.is_writable() {
                bits |= WRITE;
            }
            if event.is_write_closed() || event.is_error() {
                bits |= WRITE | WRITE_CLOSED;
            }
            state.on_event(bits);
        }
        Ok(n)
    }
}

/// Cooperative scheduling: a budget of I/O operations per task poll.
pub(crate) mod coop {
    use std::cell::Cell;
    use std::task::Context;

    /// I/O operations one task may complete in one poll before it must yield.
    pub(crate) const BUDGET: u32 = 128;

    thread_local! {
        static LEFT: Cell<u32> = const { Cell::new(BUDGET) };
    }

    /// Called by the executor before each task poll.
    pub(crate) fn reset() {
        LEFT.with(|l| l.set(BUDGET));
    }

    /// Spends one unit; when none is left, wakes the task (to run again after the others) and
    /// returns false.
    pub(crate) fn proceed(cx: &mut Context<'_>) -> bool {
        LEFT.with(|l| {
            let left = l.get();
            if left == 0 {
                cx.waker().wake_by_ref();
                false
            } else {
                l.set(left - 1);
                true
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::Runtime;
    use crate::net::TcpListener;
    use crate::runtime::with_core;

    fn registered(rt: &Runtime) -> usize {
        rt.block_on(async { with_core(|core| core.reactor.sources.borrow().len()) })
    }

    #[test]
    fn a_socket_dropped_between_block_ons_leaves_its_runtimes_table() {
        // Regression (review): deregistering needed the owning runtime to be current, so a
        // socket dropped between two `block_on`s stayed in the table for good.
        let rt = Runtime::new().unwrap();
        let before = registered(&rt);
        for _ in 0..5 {
            let listener =
                rt.block_on(async { TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap() });
            drop(listener); // no runtime is current here
        }
        assert_eq!(registered(&rt), before);
    }
}
