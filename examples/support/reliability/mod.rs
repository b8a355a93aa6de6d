//! The server half of the reliability suite (issue 13, cases 6–10): the redis-protocol kv
//! server behind `sheave_proto::Server`, with a concurrency limit and load shedding in front of
//! the service, put under overload, a graceful drain, idle-connection and slow-loris storms,
//! and descriptor exhaustion.
//!
//! Each case is a runner that returns a plain result of figures and, where a report would plot
//! it, a per-interval [`Timeline`]. The integration test (`tests/reliability/main.rs`) asserts
//! the promises on these figures; the report example prints and plots them.
//!
//! * [`overload`] (6) and [`drain`] (7) and [`slow_loris`] (9) run the server in this process,
//!   on runtime thread 1 of a two-thread runtime, and the clients on the calling thread.
//! * [`idle_connections`] (8) and [`fd_exhaustion`] (10) need the server's own resident
//!   memory and CPU time, and its own descriptor limit: they run it as a child process (the
//!   calling executable run again with [`CHILD_ENV`] set, which must call
//!   [`serve_if_child`] first thing) and read `/proc/<pid>/`.
//!
//! Wall-clock figures come from a shared, noisy machine: they are ratios against a baseline
//! taken in the same run where the promise is a ratio.

#![allow(dead_code, unused_imports)] // the test and the report example use different parts

mod child;
mod figures;
mod in_process;
mod load;
mod server;

pub use child::*;
pub use figures::*;
pub use in_process::*;
pub use load::Phase;
pub use server::*;
