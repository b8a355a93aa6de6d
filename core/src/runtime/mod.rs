//! The runtime: one event loop per thread, and the handle that reaches them from anywhere.
//!
//! A runtime thread owns a [`Core`]: an executor (tasks, run queue), a reactor (`mio::Poll`),
//! a timer wheel and a clock. Nothing in a core is shared with another thread; the only shared
//! piece is each thread's [`RemoteQueue`], where other threads drop wakes and spawns and then
//! write the thread's `mio::Waker`.
//!
//! `Runtime::new()` has one thread: the one that calls [`Runtime::block_on`].
//! `Runtime::builder().threads(n)` adds `n - 1` background threads; [`Handle`] spawns `Send`
//! futures (or `Send` closures that build `!Send` futures) onto any of them. No thread starts
//! behind the user's back.
//!
//! # The loop
//!
//! 1. poll the `block_on` future if it was woken;
//! 2. poll up to 128 queued tasks;
//! 3. wait for I/O: not at all when tasks are queued, else until the next timer (or forever);
//!    take cross-thread messages; fire due timers; go to 1.
//!
//! With a [paused clock](Builder::paused_clock), step 3 never sleeps on a timer: when no task
//! is runnable and no I/O event is ready, virtual time jumps to the next timer.

use crate::executor::{
    Executor, JoinHandle, JoinSlot, MAIN, POLLS_PER_TURN, TaskFuture, TaskId, TaskWaker,
};
use crate::reactor::{Reactor, WAKE_TOKEN, coop};
use crate::sync::lock;
use crate::time::{CACHED_NOW, Clock, wheel::Wheel};

mod handle;

pub use handle::{Handle, ShutdownSignal};
use handle::{HandleInner, ShutdownState};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// A unit of work sent to a thread from outside it.
enum Msg {
    /// Wake a task of that thread.
    Wake(TaskId),
    /// Run a closure on that thread (it spawns a task there).
    Run(Box<dyn FnOnce() + Send>),
}

/// The one part of a runtime thread that other threads touch.
pub(crate) struct RemoteQueue {
    msgs: Mutex<Vec<Msg>>,
    /// Set when messages are waiting and the thread was (or is being) woken for them.
    notified: AtomicBool,
    /// Set when the thread stopped: messages are no longer taken.
    closed: AtomicBool,
    waker: mio::Waker,
}

impl RemoteQueue {
    fn new(poll: &mio::Poll) -> io::Result<Self> {
        Ok(RemoteQueue {
            msgs: Mutex::new(Vec::new()),
            notified: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            waker: mio::Waker::new(poll.registry(), WAKE_TOKEN)?,
        })
    }

    pub(crate) fn push_wake(&self, id: TaskId) {
        self.push(Msg::Wake(id));
    }

    /// Queues a message; returns false if the thread has stopped.
    fn push(&self, msg: Msg) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        lock(&self.msgs).push(msg);
        if self.closed.load(Ordering::Acquire) {
            // The thread stopped between the check above and the push, after it drained the
            // queue: drop what is queued (their join handles report `Cancelled`).
            let stale = std::mem::take(&mut *lock(&self.msgs));
            drop(stale);
            return false;
        }
        if !self.notified.swap(true, Ordering::AcqRel)
            && let Err(e) = self.waker.wake()
        {
            log::error!("failed to wake a runtime thread: {e}");
        }
        true
    }
}

/// Everything one runtime thread owns.
pub(crate) struct Core {
    /// Unique among all runtime threads of the process (0 means "none").
    pub(crate) id: usize,
    pub(crate) exec: Executor,
    pub(crate) reactor: Reactor,
    pub(crate) timers: RefCell<Wheel>,
    pub(crate) clock: Clock,
    pub(crate) remote: Arc<RemoteQueue>,
    /// The runtime this thread belongs to, and this thread's index in it.
    handle: Handle,
    index: usize,
    /// Spare buffer swapped with the remote queue's, so draining it allocates nothing.
    spare: RefCell<Vec<Msg>>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("id", &self.id)
            .field("exec", &self.exec)
            .field("reactor", &self.reactor)
            .finish()
    }
}

static NEXT_CORE_ID: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static CURRENT: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
    static CURRENT_ID: Cell<usize> = const { Cell::new(0) };
    /// Thread 0 of every runtime built on this thread (and not yet dropped), by runtime id:
    /// what [`Handle::spawn_with`] uses to run a thread-0 recipe at once when called here
    /// outside `block_on`.
    static OWNED: RefCell<Vec<(usize, Weak<Core>)>> = const { RefCell::new(Vec::new()) };
}

static NEXT_RUNTIME_ID: AtomicUsize = AtomicUsize::new(1);

/// Thread 0 of runtime `runtime`, if this thread owns that runtime.
fn owned_core(runtime: usize) -> Option<Rc<Core>> {
    OWNED.with(|o| {
        o.borrow()
            .iter()
            .find(|(id, _)| *id == runtime)
            .and_then(|(_, core)| core.upgrade())
    })
}

/// The id of the core running on this thread, or 0.
pub(crate) fn current_thread_id() -> usize {
    CURRENT_ID.with(|c| c.get())
}

/// Runs `f` with this thread's core; `None` outside a runtime thread.
pub(crate) fn try_with_core<R>(f: impl FnOnce(&Core) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow().as_deref().map(f))
}

/// This thread's current core, if any.
pub(crate) fn try_current_core() -> Option<Rc<Core>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `f` with this thread's core; panics outside a runtime thread.
pub(crate) fn with_core<R>(f: impl FnOnce(&Core) -> R) -> R {
    try_with_core(f).expect(
        "sheave: this must be called on a runtime thread (inside block_on or a spawned task)",
    )
}

/// Sets the thread's current core for the life of the guard.
struct Enter {
    prev: Option<Rc<Core>>,
    prev_id: usize,
    prev_now: Option<std::time::Instant>,
}

impl Enter {
    fn new(core: &Rc<Core>) -> Enter {
        let prev = CURRENT.with(|c| c.borrow_mut().replace(core.clone()));
        let prev_id = CURRENT_ID.with(|c| c.replace(core.id));
        let prev_now = CACHED_NOW.with(|c| c.replace(Some(core.clock.cached())));
        Enter {
            prev,
            prev_id,
            prev_now,
        }
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = self.prev.take());
        CURRENT_ID.with(|c| c.set(self.prev_id));
        CACHED_NOW.with(|c| c.set(self.prev_now));
    }
}

impl Core {
    fn new(
        poll: mio::Poll,
        remote: Arc<RemoteQueue>,
        paused: bool,
        handle: Handle,
        index: usize,
    ) -> Rc<Core> {
        Rc::new(Core {
            handle,
            index,
            id: NEXT_CORE_ID.fetch_add(1, Ordering::Relaxed),
            exec: Executor::new(),
            reactor: Reactor::new(poll),
            timers: RefCell::new(Wheel::new()),
            clock: Clock::new(paused),
            remote,
            spare: RefCell::new(Vec::new()),
        })
    }

    /// Spawns a future on this core (which need not be the current thread's yet).
    fn spawn<F: Future + 'static>(&self, future: F) -> JoinHandle<F::Output> {
        let slot = Rc::new(RefCell::new(JoinSlot::new()));
        let task = TaskFuture::new(future, slot.clone());
        let (id, waker) = self
            .exec
            .spawn(self.id, &self.remote, Box::pin(task), slot.clone());
        JoinHandle { slot, id, waker }
    }

    /// Drives `future` to completion, running this core's tasks, I/O and timers meanwhile.
    fn run<F: Future>(self: &Rc<Core>, future: F) -> F::Output {
        let mut future = pin!(future);
        let main = TaskWaker::new(self.id, MAIN, self.remote.clone());
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        self.clock.refresh();
        // The future has never been polled: poll it first (an earlier `block_on` on this
        // runtime may have left the flag down).
        self.exec.enqueue(MAIN);
        loop {
            if self.exec.take_main_woken() {
                main.unschedule();
                coop::reset();
                if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                    return out;
                }
            }
            self.exec.run_queued(POLLS_PER_TURN);
            self.park();
        }
    }

    /// Waits for and dispatches I/O, cross-thread messages and timers.
    fn park(&self) {
        let busy = self.exec.has_work() || self.remote.notified.load(Ordering::Acquire);
        let next_timer = {
            let wheel = self.timers.borrow();
            if wheel.has_pending() {
                wheel.next_expiration()
            } else {
                None
            }
        };
        let timeout = if busy {
            Some(Duration::ZERO)
        } else {
            match next_timer {
                None => None,
                Some(_) if self.clock.is_paused() => Some(Duration::ZERO),
                Some(tick) => Some(self.clock.until_tick(tick)),
            }
        };
        let events = match self.reactor.turn(timeout) {
            Ok(n) => n,
            Err(e) => {
                log::error!("poll failed: {e}");
                0
            }
        };
        self.reactor.take_woken();
        self.drain_remote();
        if self.clock.is_paused()
            && events == 0
            && !self.exec.has_work()
            && let Some(tick) = next_timer
        {
            self.clock.advance_to_tick(tick);
        }
        let now = self.clock.refresh();
        if next_timer.is_some() {
            let tick = self.clock.tick_of(now);
            self.timers.borrow_mut().advance(tick, |_, waker| {
                if let Some(w) = waker {
                    w.wake();
                }
            });
        }
    }

    fn drain_remote(&self) {
        if !self.remote.notified.load(Ordering::Acquire) {
            return;
        }
        self.remote.notified.store(false, Ordering::SeqCst);
        let mut msgs = self.spare.take();
        std::mem::swap(&mut msgs, &mut *lock(&self.remote.msgs));
        for msg in msgs.drain(..) {
            match msg {
                Msg::Wake(id) => self.exec.enqueue(id),
                Msg::Run(f) => f(),
            }
        }
        *self.spare.borrow_mut() = msgs;
    }

    /// Stops taking messages and drops every task, with this core current.
    fn shutdown(self: &Rc<Core>) {
        self.remote.closed.store(true, Ordering::Release);
        let _enter = Enter::new(self);
        // Closures still queued would spawn on a stopped thread: drop them (their join
        // handles report `Cancelled`).
        drop(std::mem::take(&mut *lock(&self.remote.msgs)));
        self.exec.clear();
    }
}

/// Configures a [`Runtime`].
///
/// ```
/// let rt = sheave_core::Runtime::builder().threads(2).build().unwrap();
/// assert_eq!(rt.handle().threads(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    threads: usize,
    paused: bool,
    name: String,
}

impl Builder {
    /// How many runtime threads, counting the one that calls `block_on` (default 1).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Starts every thread with a paused clock: virtual time, which jumps to the next timer
    /// whenever no task is runnable and no I/O is ready. For tests: a 30 s timeout takes
    /// microseconds and fires exactly on its millisecond. `Instant`s from
    /// [`time::now`](crate::time::now) are ordinary `std::time::Instant`s, comparable with
    /// deadlines computed from them.
    ///
    /// Real I/O still happens in real time; while a test waits for a socket, virtual time may
    /// run ahead to the next timer.
    pub fn paused_clock(mut self) -> Self {
        self.paused = true;
        self
    }

    /// Prefix of the background threads' names (default `"sheave"`; threads are `sheave-1`, …).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Creates the pollers and starts the background threads.
    pub fn build(self) -> io::Result<Runtime> {
        let mut polls = Vec::with_capacity(self.threads);
        let mut remotes = Vec::with_capacity(self.threads);
        for _ in 0..self.threads {
            let poll = mio::Poll::new()?;
            remotes.push(Arc::new(RemoteQueue::new(&poll)?));
            polls.push(poll);
        }
        let handle = Handle {
            inner: Arc::new(HandleInner {
                id: NEXT_RUNTIME_ID.fetch_add(1, Ordering::Relaxed),
                remotes: remotes.clone(),
                next: AtomicUsize::new(0),
                shutdown: ShutdownState::default(),
            }),
        };
        let mut polls = polls.into_iter();
        let first = polls.next().expect("at least one thread");
        let core = Core::new(first, remotes[0].clone(), self.paused, handle.clone(), 0);
        OWNED.with(|o| o.borrow_mut().push((handle.inner.id, Rc::downgrade(&core))));
        let mut threads = Vec::with_capacity(self.threads - 1);
        for (i, poll) in polls.enumerate() {
            let remote = remotes[i + 1].clone();
            let theirs = handle.clone();
            let paused = self.paused;
            let thread = std::thread::Builder::new()
                .name(format!("{}-{}", self.name, i + 1))
                .spawn(move || {
                    /// Shuts the core down however the loop ends — also when it unwinds (a
                    /// panicking destructor), so the thread's queue is closed and handles to
                    /// it report `Cancelled` instead of waiting forever.
                    struct Stop(Rc<Core>);
                    impl Drop for Stop {
                        fn drop(&mut self) {
                            self.0.shutdown();
                        }
                    }
                    let core = Stop(Core::new(poll, remote, paused, theirs.clone(), i + 1));
                    let _enter = Enter::new(&core.0);
                    core.0.run(theirs.shutdown_signal());
                });
            match thread {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    // Stop the threads already started: nothing else would.
                    handle.shutdown();
                    for thread in threads {
                        let _ = thread.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Runtime {
            core,
            handle,
            threads,
        })
    }
}

/// A thread-per-core runtime: an event loop on the calling thread (driven by
/// [`block_on`](Runtime::block_on)) and optionally more on background threads.
///
/// Tasks spawned with [`spawn`](crate::spawn) stay on the thread that spawned them and need not
/// be `Send`. A `Runtime` is not `Send` itself: it belongs to the thread whose loop it drives.
///
/// ```
/// use sheave_core::{Runtime, time};
/// use std::time::Duration;
///
/// let rt = Runtime::builder().paused_clock().build().unwrap();
/// let waited = rt.block_on(async {
///     let start = time::now();
///     time::sleep(Duration::from_secs(30)).await; // virtual: returns at once
///     time::now() - start
/// });
/// assert_eq!(waited, Duration::from_secs(30));
/// ```
///
/// A runtime is bound to its thread:
///
/// ```compile_fail
/// fn assert_send<T: Send>(_: T) {}
/// assert_send(sheave_core::Runtime::new().unwrap());
/// ```
pub struct Runtime {
    core: Rc<Core>,
    handle: Handle,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("threads", &(self.threads.len() + 1))
            .field("paused_clock", &self.core.clock.is_paused())
            .finish()
    }
}

impl Runtime {
    /// A runtime of one thread: the caller of [`block_on`](Runtime::block_on).
    pub fn new() -> io::Result<Runtime> {
        Runtime::builder().build()
    }

    /// A [`Builder`] with the defaults: one thread, real clock.
    pub fn builder() -> Builder {
        Builder {
            threads: 1,
            paused: false,
            name: "sheave".to_string(),
        }
    }

    /// Runs `future` to completion on this thread, together with every task of this thread.
    ///
    /// # Panics
    /// When called from inside a runtime thread (a nested `block_on` would stall the outer
    /// loop), and when `future` panics.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        assert!(
            current_thread_id() == 0,
            "sheave: block_on called from within a runtime thread"
        );
        let _enter = Enter::new(&self.core);
        self.core.run(future)
    }

    /// Spawns a task on this runtime's `block_on` thread; it starts running at the next
    /// `block_on`.
    pub fn spawn<F: Future + 'static>(&self, future: F) -> JoinHandle<F::Output> {
        self.core.spawn(future)
    }

    /// A `Send + Sync` handle to every thread of this runtime.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let id = self.handle.inner.id;
        OWNED.with(|o| o.borrow_mut().retain(|(owned, _)| *owned != id));
        self.handle.shutdown();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("a runtime thread panicked");
            }
        }
        if current_thread_id() == 0 {
            self.core.shutdown();
        } else {
            // Dropped inside another runtime's loop: drop our tasks without entering ours,
            // and the work still queued for us (its handles report `Cancelled`).
            self.core.remote.closed.store(true, Ordering::Release);
            drop(std::mem::take(&mut *lock(&self.core.remote.msgs)));
        }
    }
}

/// Spawns a task on the current runtime thread. The future need not be `Send`: it never leaves
/// this thread.
///
/// # Panics
/// Outside a runtime thread.
///
/// ```
/// use std::rc::Rc;
/// let rt = sheave_core::Runtime::new().unwrap();
/// rt.block_on(async {
///     let local = Rc::new(5); // not Send, and that is fine
///     let task = sheave_core::spawn(async move { *local + 1 });
///     assert_eq!(task.await.unwrap(), 6);
/// });
/// ```
pub fn spawn<F: Future + 'static>(future: F) -> JoinHandle<F::Output> {
    CURRENT.with(|c| {
        let core = c.borrow();
        let core = core
            .as_ref()
            .expect("sheave::spawn called outside a runtime thread");
        core.spawn(future)
    })
}

/// Yields once to the other tasks of this thread.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
