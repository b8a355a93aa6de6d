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
    Completion, Executor, JoinHandle, JoinSlot, MAIN, POLLS_PER_TURN, PanicSink, RemoteJoinHandle,
    TaskFuture, TaskId, TaskWaker,
};
use crate::reactor::{Reactor, WAKE_TOKEN, coop};
use crate::sync::{Notify, Waiting, lock};
use crate::time::{CACHED_NOW, Clock, wheel::Wheel};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
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

/// Finishes a remote task's handle with `Cancelled` if the task never got to run.
struct CancelUnlessRun<T>(Option<Arc<Mutex<JoinSlot<T>>>>);

impl<T> Drop for CancelUnlessRun<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            lock(&slot).finish(Err(crate::JoinError::Cancelled));
        }
    }
}

#[derive(Default)]
struct ShutdownState {
    flag: AtomicBool,
    /// Notified once the flag is set.
    notify: Notify,
}

struct HandleInner {
    /// Unique among the runtimes of the process.
    id: usize,
    remotes: Vec<Arc<RemoteQueue>>,
    next: AtomicUsize,
    shutdown: ShutdownState,
}

/// Reaches a runtime's threads from any thread: spawns onto them and signals shutdown.
/// `Send + Sync + Clone`; cloning is one reference count.
///
/// # Thread 0
///
/// Thread 0 is the thread that owns the [`Runtime`] and calls [`Runtime::block_on`]; its loop
/// runs only inside `block_on`. Threads 1.. run on their own from `build()` until shutdown.
/// What reaches thread 0:
///
/// - **From thread 0's own thread, outside `block_on`** (setting up in `main` before the
///   loop starts): [`spawn_with`](Handle::spawn_with) runs the recipe *at once*, on this
///   thread, with the runtime's thread 0 current — so a listener it binds is bound when
///   `spawn_with` returns, and a channel it sends on has its message — and the future it
///   returns starts at the next `block_on`. Waiting for a thread-0 recipe before `block_on`
///   therefore works; waiting for its *future* to make progress does not (nothing runs it yet).
/// - **From inside `block_on`, or from another thread**: the work is queued and runs in
///   thread 0's loop — while a `block_on` runs there (work sent while none runs waits for
///   the next one, and is cancelled if the runtime is dropped first). So another OS thread
///   must not block waiting for thread 0 while thread 0 is not in `block_on`.
///
/// ```
/// use std::sync::mpsc;
/// let rt = sheave_core::Runtime::builder().threads(2).build().unwrap();
/// let (tx, rx) = mpsc::channel();
/// for t in 0..2 {
///     let tx = tx.clone();
///     // Outside block_on: thread 0's recipe runs here and now; thread 1's on thread 1.
///     rt.handle().spawn_with(t, move || {
///         tx.send(sheave_core::Handle::thread_index()).unwrap();
///         async {}
///     });
/// }
/// let mut ran: Vec<_> = (0..2).map(|_| rx.recv().unwrap()).collect();
/// ran.sort();
/// assert_eq!(ran, [Some(0), Some(1)]);
/// ```
///
/// # From a plain OS thread
///
/// ```
/// let rt = sheave_core::Runtime::builder().threads(2).build().unwrap();
/// let handle = rt.handle().clone();
/// let answer = std::thread::spawn(move || {
///     // From a plain OS thread: run on runtime thread 1, wait for the result.
///     futures::executor::block_on(handle.spawn_on(1, async { 40 + 2 })).unwrap()
/// })
/// .join()
/// .unwrap();
/// assert_eq!(answer, 42);
/// ```
#[derive(Clone)]
pub struct Handle {
    inner: Arc<HandleInner>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("threads", &self.threads())
            .field("shutdown", &self.is_shutdown())
            .finish()
    }
}

impl Handle {
    /// The handle of the runtime whose thread is running this code.
    ///
    /// # Panics
    /// Outside a runtime thread; see [`try_current`](Handle::try_current).
    pub fn current() -> Handle {
        Handle::try_current().expect("Handle::current called outside a runtime thread")
    }

    /// The handle of the current thread's runtime, or `None` outside a runtime thread.
    pub fn try_current() -> Option<Handle> {
        try_with_core(|core| core.handle.clone())
    }

    /// The index of the runtime thread running this code (0 is the `block_on` thread), or
    /// `None` outside a runtime thread.
    ///
    /// ```
    /// let rt = sheave_core::Runtime::builder().threads(2).build().unwrap();
    /// assert_eq!(rt.block_on(async { sheave_core::Handle::thread_index() }), Some(0));
    /// let on_1 = rt.handle().spawn_on(1, async { sheave_core::Handle::thread_index() });
    /// assert_eq!(futures::executor::block_on(on_1).unwrap(), Some(1));
    /// ```
    pub fn thread_index() -> Option<usize> {
        try_with_core(|core| core.index)
    }

    /// How many runtime threads there are (thread 0 is the `block_on` thread).
    pub fn threads(&self) -> usize {
        self.inner.remotes.len()
    }

    /// Spawns a `Send` future on the next thread in round-robin order.
    pub fn spawn<F>(&self, future: F) -> RemoteJoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let thread = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.threads();
        self.spawn_on(thread, future)
    }

    /// Spawns a `Send` future on thread `thread` (modulo the thread count).
    pub fn spawn_on<F>(&self, thread: usize, future: F) -> RemoteJoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_with(thread, move || future)
    }

    /// Runs `make` on thread `thread` and spawns the future it returns there. The future need
    /// not be `Send` — this is how each thread builds its own `!Send` state (a per-thread
    /// service stack, a listener) from a `Send` recipe.
    ///
    /// For thread 0, `make` runs at once when this is called from thread 0's own thread
    /// outside `block_on`, and otherwise in thread 0's loop: see [Thread 0](Handle#thread-0).
    ///
    /// After [`shutdown`](Handle::shutdown), the task is not started and its handle reports
    /// [`JoinError::Cancelled`](crate::JoinError::Cancelled).
    pub fn spawn_with<M, F>(&self, thread: usize, make: M) -> RemoteJoinHandle<F::Output>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        let slot = Arc::new(Mutex::new(JoinSlot::new()));
        let handle = RemoteJoinHandle { slot: slot.clone() };
        let thread = thread % self.threads();
        let remote = &self.inner.remotes[thread];
        // If the message is dropped without running (the thread stopped first), the guard
        // tells the handle, which would otherwise wait forever.
        let mut guard = CancelUnlessRun(Some(slot));
        let run: Box<dyn FnOnce() + Send> = Box::new(move || {
            let slot = guard.0.take().expect("a message runs once");
            // A panicking recipe fails its own handle, like a panicking task; it must not
            // unwind through the event loop, which would stop the thread.
            let future = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(make)) {
                Ok(future) => future,
                Err(payload) => {
                    slot.panicked(crate::executor::panic_message(&*payload));
                    return;
                }
            };
            with_core(|core| {
                let sink: Rc<dyn PanicSink> = Rc::new(slot.clone());
                let task = TaskFuture::new(future, slot);
                core.exec.spawn(core.id, &core.remote, Box::pin(task), sink);
            })
        });
        if self.is_shutdown() {
            drop(run); // cancels the handle
            return handle;
        }
        if thread == 0
            && current_thread_id() == 0
            && let Some(core) = owned_core(self.inner.id)
        {
            // Thread 0's own thread, outside `block_on`: nothing would take the message
            // before the next `block_on`, and the caller may be about to wait for the recipe.
            let _enter = Enter::new(&core);
            run();
            return handle;
        }
        if !remote.push(Msg::Run(run)) {
            Completion::finish(&handle.slot, Err(crate::JoinError::Cancelled));
        }
        handle
    }

    /// Signals shutdown: background threads drop their tasks and stop, spawns are refused, and
    /// every [`ShutdownSignal`] completes (a `block_on` future waiting on one returns).
    pub fn shutdown(&self) {
        let state = &self.inner.shutdown;
        if !state.flag.swap(true, Ordering::AcqRel) {
            state.notify.notify_waiters();
        }
    }

    /// Whether [`shutdown`](Handle::shutdown) was called.
    pub fn is_shutdown(&self) -> bool {
        self.inner.shutdown.flag.load(Ordering::Acquire)
    }

    /// A future that completes when [`shutdown`](Handle::shutdown) is called.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            waiting: Waiting::new(&self.inner.shutdown.notify),
            handle: self.clone(),
        }
    }
}

/// Completes when the runtime's [`Handle::shutdown`] is called. Cheap to poll; cancel-safe.
pub struct ShutdownSignal {
    handle: Handle,
    waiting: Waiting,
}

impl fmt::Debug for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownSignal")
            .field("fired", &self.handle.is_shutdown())
            .finish()
    }
}

impl Future for ShutdownSignal {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // The flag covers a shutdown before this signal was made; the notification one after.
        if this.handle.is_shutdown() {
            return Poll::Ready(());
        }
        this.waiting.poll(&this.handle.inner.shutdown.notify, cx)
    }
}

impl Drop for ShutdownSignal {
    fn drop(&mut self) {
        self.waiting.release(&self.handle.inner.shutdown.notify);
    }
}
