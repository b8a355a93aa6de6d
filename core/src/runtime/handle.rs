//! [`Handle`]: reaching a runtime's threads from anywhere — spawning onto them, and shutdown.

use super::{Enter, Msg, RemoteQueue, current_thread_id, owned_core, try_with_core, with_core};
use crate::executor::{Completion, JoinSlot, PanicSink, RemoteJoinHandle, TaskFuture};
use crate::sync::{Notify, Waiting, lock};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

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
pub(super) struct ShutdownState {
    flag: AtomicBool,
    /// Notified once the flag is set.
    notify: Notify,
}

pub(super) struct HandleInner {
    /// Unique among the runtimes of the process.
    pub(super) id: usize,
    pub(super) remotes: Vec<Arc<RemoteQueue>>,
    pub(super) next: AtomicUsize,
    pub(super) shutdown: ShutdownState,
}

/// Reaches a runtime's threads from any thread: spawns onto them and signals shutdown.
/// `Send + Sync + Clone`; cloning is one reference count.
///
/// # Thread 0
///
/// Thread 0 is the thread that owns the [`Runtime`](crate::Runtime) and calls [`Runtime::block_on`](crate::Runtime::block_on); its loop
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
    pub(super) inner: Arc<HandleInner>,
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
