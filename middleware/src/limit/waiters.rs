//! The limiters' FIFO waiter queue with hand-off: [`sheave_core::sync::WaitQueue`], the one
//! queue of the kit (its docs state the protocol; its tests, the cancel safety).
//!
//! Capacity released while someone waits is *handed* to the first waiter (it is not put back
//! in the pool), so a newcomer's `try_ready` can never overtake the queue, and a waiter that
//! was woken already owns what it was woken for. A waiter that is dropped cancels its entry;
//! if it had been handed capacity it did not take, the limiter gives that capacity back (to
//! the next waiter).

pub(crate) use sheave_core::sync::{Cancelled, WaitQueue, WaiterId};
