//! Helpers for this crate's unit tests (the integration tests have `tests/support`).

use sheave_core::Runtime;

/// A runtime with a paused clock: virtual time jumps to the next timer when all is idle.
pub(crate) fn paused() -> Runtime {
    Runtime::builder().paused_clock().build().unwrap()
}
