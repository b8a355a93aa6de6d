//! Waiting primitives shared by the whole kit: one [`WaitQueue`] (FIFO waiters with hand-off,
//! for limits and connection capacity), one [`Notify`] (wake everyone waiting for a change or
//! an event), and the poison-tolerant [`lock`].
//!
//! Both are cancel-safe: a waiter that goes away leaves nothing behind, and a waiter that was
//! handed something it will not use passes it on, so a release never wakes a dead waiter
//! while a live one sleeps. The tests of that promise live here, once.
//!
//! ```
//! use sheave_core::sync::Notify;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering};
//!
//! // A shutdown flag that tasks on any thread can wait for.
//! let stop = Arc::new((AtomicBool::new(false), Notify::new()));
//! let rt = sheave_core::Runtime::new().unwrap();
//! rt.block_on(async {
//!     let theirs = stop.clone();
//!     std::thread::spawn(move || {
//!         theirs.0.store(true, Ordering::Release);
//!         theirs.1.notify_waiters();
//!     });
//!     loop {
//!         let changed = stop.1.notified(); // first, so no notification is missed
//!         if stop.0.load(Ordering::Acquire) {
//!             break;
//!         }
//!         changed.await;
//!     }
//! });
//! ```

mod notify;
mod wait_queue;

pub(crate) use notify::Waiting;
pub use notify::{Notified, Notify, OwnedNotified};
pub use wait_queue::{Cancelled, QueueFull, WaitQueue, WaiterId};

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, also when a thread panicked while holding it: every structure guarded in
/// this kit stays consistent across a panic (the panicking code never leaves it half
/// changed), and refusing the lock would turn one panic into a cascade.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
