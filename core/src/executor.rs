//! The local executor: a slab of tasks, a run queue, and the wakers that feed it.
//!
//! A task is a boxed `!Send`-capable future in a slab slot. Its [`TaskId`] is the slot key plus a
//! generation, so a wake that arrives after the task finished (and its slot was reused) is
//! dropped rather than polling a stranger.
//!
//! Each task has one waker (an `Arc`, made at spawn and cloned thereafter). Waking it:
//! - **on its own thread** pushes the id onto the run queue: no lock, no syscall;
//! - **from another thread** pushes a message onto the thread's [`Remote`](crate::runtime)
//!   queue and, if the thread was not already notified, writes its `mio::Waker` (one syscall).
//!
//! A `scheduled` flag on the waker keeps a task from being queued twice between two polls.

use crate::runtime::{self, RemoteQueue};
use pin_project_lite::pin_project;
use slab::Slab;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// A task's identity: slab key and the generation of that slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskId {
    pub(crate) key: usize,
    pub(crate) generation: u32,
}

/// The id the `block_on` future wakes with: it lives outside the slab.
pub(crate) const MAIN: TaskId = TaskId {
    key: usize::MAX,
    generation: 0,
};

/// The waker behind every task.
pub(crate) struct TaskWaker {
    /// The runtime thread that owns the task.
    owner: usize,
    id: TaskId,
    /// Set by a wake, cleared just before the task is polled: at most one queue entry per task.
    scheduled: AtomicBool,
    remote: Arc<RemoteQueue>,
}

impl TaskWaker {
    pub(crate) fn new(owner: usize, id: TaskId, remote: Arc<RemoteQueue>) -> Arc<Self> {
        Arc::new(TaskWaker {
            owner,
            id,
            scheduled: AtomicBool::new(false),
            remote,
        })
    }

    /// Lets the next wake queue the task again (the loop calls it before polling `block_on`'s
    /// future, which does not live in the slab).
    pub(crate) fn unschedule(&self) {
        self.scheduled.store(false, Ordering::Release);
    }

    fn schedule(&self) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        if runtime::current_thread_id() == self.owner {
            runtime::with_core(|core| core.exec.enqueue(self.id));
        } else {
            self.remote.push_wake(self.id);
        }
    }
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.schedule();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.schedule();
    }
}

/// One task in the slab.
struct Task {
    generation: u32,
    future: Pin<Box<dyn Future<Output = ()>>>,
    waker: Arc<TaskWaker>,
    /// `waker` as a `std::task::Waker`, built once: lent to each poll without touching the
    /// reference count.
    std_waker: Waker,
    /// Told when the task panics, so its `JoinHandle` reports it.
    on_panic: Rc<dyn PanicSink>,
}

/// The executor of one runtime thread.
pub(crate) struct Executor {
    tasks: RefCell<Slab<Task>>,
    queue: RefCell<VecDeque<TaskId>>,
    next_gen: Cell<u32>,
    /// Whether the `block_on` future was woken.
    main_woken: Cell<bool>,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("tasks", &self.tasks.borrow().len())
            .field("queued", &self.queue.borrow().len())
            .finish()
    }
}

/// How many tasks the loop polls before it looks at I/O and timers again.
pub(crate) const POLLS_PER_TURN: usize = 128;

impl Executor {
    pub(crate) fn new() -> Self {
        Executor {
            tasks: RefCell::new(Slab::new()),
            queue: RefCell::new(VecDeque::new()),
            next_gen: Cell::new(0),
            main_woken: Cell::new(true),
        }
    }

    pub(crate) fn enqueue(&self, id: TaskId) {
        if id == MAIN {
            self.main_woken.set(true);
        } else {
            self.queue.borrow_mut().push_back(id);
        }
    }

    pub(crate) fn take_main_woken(&self) -> bool {
        self.main_woken.replace(false)
    }

    pub(crate) fn has_work(&self) -> bool {
        self.main_woken.get() || !self.queue.borrow().is_empty()
    }

    /// Adds a task and queues its first poll.
    pub(crate) fn spawn(
        &self,
        owner: usize,
        remote: &Arc<RemoteQueue>,
        future: Pin<Box<dyn Future<Output = ()>>>,
        on_panic: Rc<dyn PanicSink>,
    ) -> (TaskId, Waker) {
        let generation = self.next_gen.get().wrapping_add(1);
        self.next_gen.set(generation);
        let mut tasks = self.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let id = TaskId {
            key: entry.key(),
            generation,
        };
        let waker = TaskWaker::new(owner, id, remote.clone());
        waker.scheduled.store(true, Ordering::Relaxed);
        let std_waker = Waker::from(waker.clone());
        entry.insert(Task {
            generation,
            future,
            std_waker: std_waker.clone(),
            waker,
            on_panic,
        });
        drop(tasks);
        self.queue.borrow_mut().push_back(id);
        (id, std_waker)
    }

    /// Polls up to `budget` queued tasks; returns how many were polled.
    pub(crate) fn run_queued(&self, budget: usize) -> usize {
        let mut polled = 0;
        while polled < budget {
            let Some(id) = self.queue.borrow_mut().pop_front() else {
                break;
            };
            polled += 1;
            self.poll_task(id);
        }
        polled
    }

    fn poll_task(&self, id: TaskId) {
        // Take the future out of the slab while it runs, so the task may spawn (which grows the
        // slab) or drop other tasks without a double borrow.
        let (mut future, waker) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(task) = tasks.get_mut(id.key) else {
                return;
            };
            if task.generation != id.generation {
                return;
            }
            task.waker.scheduled.store(false, Ordering::Release);
            let placeholder: Pin<Box<dyn Future<Output = ()>>> = Box::pin(std::future::pending());
            (
                std::mem::replace(&mut task.future, placeholder),
                std::mem::replace(&mut task.std_waker, Waker::noop().clone()),
            )
        };
        let mut cx = Context::from_waker(&waker);
        crate::reactor::coop::reset();
        let result = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
        let mut tasks = self.tasks.borrow_mut();
        match result {
            Ok(Poll::Pending) => {
                if let Some(task) = tasks
                    .get_mut(id.key)
                    .filter(|t| t.generation == id.generation)
                {
                    task.future = future;
                    task.std_waker = waker;
                }
            }
            Ok(Poll::Ready(())) => {
                tasks.try_remove(id.key);
                drop(tasks);
                drop(future);
            }
            Err(payload) => {
                let task = tasks.try_remove(id.key);
                drop(tasks);
                let msg = panic_message(&*payload);
                log::error!("a task panicked: {msg}");
                // Report before dropping the future, whose drop would report a cancellation.
                if let Some(task) = task {
                    task.on_panic.panicked(msg);
                }
                drop(future);
            }
        }
    }

    /// Drops every task (at shutdown). Their join handles report [`JoinError::Cancelled`].
    pub(crate) fn clear(&self) {
        loop {
            // Drop outside the borrow: a task's destructor may touch the executor.
            let drained: Vec<Task> = self.tasks.borrow_mut().drain().collect();
            if drained.is_empty() {
                break;
            }
            drop(drained);
        }
        self.queue.borrow_mut().clear();
    }
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

/// Why a task did not produce its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The task panicked; the panic message.
    Panicked(String),
    /// [`JoinHandle::abort`] stopped it.
    Aborted,
    /// The runtime shut down before the task finished.
    Cancelled,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(msg) => write!(f, "task panicked: {msg}"),
            JoinError::Aborted => f.write_str("task aborted"),
            JoinError::Cancelled => f.write_str("task cancelled by runtime shutdown"),
        }
    }
}

impl std::error::Error for JoinError {}

/// The shared state between a task and its handle.
#[derive(Debug)]
pub(crate) struct JoinSlot<T> {
    output: Option<Result<T, JoinError>>,
    waiter: Option<Waker>,
    aborted: bool,
    finished: bool,
}

impl<T> JoinSlot<T> {
    pub(crate) fn new() -> Self {
        JoinSlot {
            output: None,
            waiter: None,
            aborted: false,
            finished: false,
        }
    }

    pub(crate) fn finish(&mut self, out: Result<T, JoinError>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.output = Some(out);
        if let Some(w) = self.waiter.take() {
            w.wake();
        }
    }

    pub(crate) fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>> {
        match self.output.take() {
            Some(out) => Poll::Ready(out),
            None if self.finished => Poll::Ready(Err(JoinError::Cancelled)),
            None => {
                match &self.waiter {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => self.waiter = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

/// Told when a task panicked.
pub(crate) trait PanicSink {
    fn panicked(&self, msg: String);
}

impl<T> PanicSink for RefCell<JoinSlot<T>> {
    fn panicked(&self, msg: String) {
        self.borrow_mut().finish(Err(JoinError::Panicked(msg)));
    }
}

impl<T> PanicSink for Arc<Mutex<JoinSlot<T>>> {
    fn panicked(&self, msg: String) {
        lock(self).finish(Err(JoinError::Panicked(msg)));
    }
}

/// Where a task's output goes: a local `Rc<RefCell<..>>` slot or a shared `Arc<Mutex<..>>` one.
pub(crate) trait Completion<T>: 'static {
    fn finish(&self, out: Result<T, JoinError>);
    fn aborted(&self) -> bool;
}

impl<T: 'static> Completion<T> for Rc<RefCell<JoinSlot<T>>> {
    fn finish(&self, out: Result<T, JoinError>) {
        self.borrow_mut().finish(out);
    }
    fn aborted(&self) -> bool {
        self.borrow().aborted
    }
}

impl<T: 'static> Completion<T> for Arc<Mutex<JoinSlot<T>>> {
    fn finish(&self, out: Result<T, JoinError>) {
        lock(self).finish(out);
    }
    fn aborted(&self) -> bool {
        lock(self).aborted
    }
}

use crate::sync::lock;

pin_project! {
    /// Drives a user future and delivers its output (or abort/cancel) to the join slot.
    pub(crate) struct TaskFuture<F: Future, C: Completion<F::Output>> {
        #[pin]
        future: F,
        slot: C,
        done: bool,
    }

    impl<F: Future, C: Completion<F::Output>> PinnedDrop for TaskFuture<F, C> {
        fn drop(this: Pin<&mut Self>) {
            if !this.done {
                this.slot.finish(Err(JoinError::Cancelled));
            }
        }
    }
}

impl<F: Future, C: Completion<F::Output>> TaskFuture<F, C> {
    pub(crate) fn new(future: F, slot: C) -> Self {
        TaskFuture {
            future,
            slot,
            done: false,
        }
    }
}

impl<F: Future, C: Completion<F::Output>> Future for TaskFuture<F, C> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(());
        }
        if this.slot.aborted() {
            *this.done = true;
            this.slot.finish(Err(JoinError::Aborted));
            return Poll::Ready(());
        }
        match this.future.poll(cx) {
            Poll::Ready(out) => {
                *this.done = true;
                this.slot.finish(Ok(out));
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// An owned permission to await a task spawned on this thread, or to abort it.
///
/// Awaiting gives the task's output, or a [`JoinError`] if it panicked, was aborted, or the
/// runtime shut down first. Dropping the handle detaches the task: it keeps running.
///
/// ```
/// let rt = sheave_core::Runtime::new().unwrap();
/// let n = rt.block_on(async {
///     let task = sheave_core::spawn(async { 6 * 7 });
///     task.await.unwrap()
/// });
/// assert_eq!(n, 42);
/// ```
pub struct JoinHandle<T> {
    pub(crate) slot: Rc<RefCell<JoinSlot<T>>>,
    pub(crate) id: TaskId,
    /// The task's waker: an abort wakes the task through it, from wherever the handle is.
    pub(crate) waker: Waker,
}

impl<T> JoinHandle<T> {
    /// Stops the task at its next poll; awaiting the handle then gives [`JoinError::Aborted`].
    /// Its future is dropped on this thread. Aborting a finished task does nothing.
    pub fn abort(&self) {
        let mut slot = self.slot.borrow_mut();
        if slot.finished {
            return;
        }
        slot.aborted = true;
        drop(slot);
        // The task sees the flag at its next poll, which this wake schedules (through the
        // runtime's remote queue if the handle is used outside the runtime's loop).
        self.waker.wake_by_ref();
    }

    /// Whether the task has finished (with an output or an error).
    pub fn is_finished(&self) -> bool {
        self.slot.borrow().finished
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.slot.borrow_mut().poll_output(cx)
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("task", &self.id.key)
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// A handle to a task spawned through a [`Handle`](crate::Handle) from any thread.
/// `Send` when the output is; await it from any thread or runtime.
pub struct RemoteJoinHandle<T> {
    pub(crate) slot: Arc<Mutex<JoinSlot<T>>>,
}

impl<T> RemoteJoinHandle<T> {
    /// Asks the task to stop at its next poll; awaiting then gives [`JoinError::Aborted`].
    /// (The task's thread notices at the task's next wake-up.)
    pub fn abort(&self) {
        lock(&self.slot).aborted = true;
    }

    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        lock(&self.slot).finished
    }
}

impl<T> Future for RemoteJoinHandle<T> {
    type Output = Result<T, JoinError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        lock(&self.slot).poll_output(cx)
    }
}

impl<T> fmt::Debug for RemoteJoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
