//! Heap allocations counted by a global allocator that a bench, test or example binary
//! installs: [`CountingAlloc`](type@CountingAlloc) (the system allocator with counters), read with [`counts`].
//!
//! The counting itself is [`stats_alloc`]'s `StatsAlloc` over [`System`]; this crate only
//! names it and reads it, so it stays `forbid(unsafe_code)` (an `impl GlobalAlloc` needs
//! `unsafe`). The counters are process-wide atomics: measure on one thread while the others
//! are quiet.
//!
//! # Example
//!
//! ```
//! use sheave_load::meter::alloc::{self, CountingAlloc};
//!
//! #[global_allocator]
//! static ALLOC: CountingAlloc = CountingAlloc;
//!
//! assert!(alloc::installed());
//! let before = alloc::counts();
//! let boxed = std::hint::black_box(Box::new([0u8; 100]));
//! let made = alloc::counts() - before;
//! assert_eq!((made.allocations, made.bytes), (1, 100));
//! drop(boxed);
//! ```

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::alloc::System;
use std::hint::black_box;
use std::ops::Sub;

/// The counting global allocator: the system allocator, counting every allocation and the
/// bytes asked for. Install it in the binary that measures (the meter reads its counters):
///
/// ```
/// use sheave_load::meter::alloc::CountingAlloc;
///
/// #[global_allocator]
/// static ALLOC: CountingAlloc = CountingAlloc;
/// # fn main() { assert!(sheave_load::meter::alloc::installed()); }
/// ```
///
/// The type is a reference to the one instrumented system allocator the meter reads; the
/// constant of the same name is that reference, so the line above reads like installing a
/// unit struct such as `System`.
pub type CountingAlloc = &'static StatsAlloc<System>;

/// The counting allocator to install: see the type [`CountingAlloc`](type@CountingAlloc).
///
/// ```standalone_crate
/// use sheave_load::meter::alloc::{self, CountingAlloc};
///
/// #[global_allocator]
/// static ALLOC: CountingAlloc = CountingAlloc;
///
/// fn main() {
///     let before = alloc::counts();
///     let v = std::hint::black_box(vec![0u64; 4]);
///     assert_eq!((alloc::counts() - before).bytes, 32);
///     drop(v);
/// }
/// ```
#[allow(non_upper_case_globals)]
pub const CountingAlloc: CountingAlloc = &INSTRUMENTED_SYSTEM;

/// What [`CountingAlloc`](type@CountingAlloc) has counted since the process started; subtract two readings for
/// what happened in between.
///
/// ```
/// use sheave_load::meter::alloc::Counts;
///
/// let a = Counts { allocations: 5, bytes: 80, live_bytes: 40 };
/// let b = Counts { allocations: 7, bytes: 112, live_bytes: 40 };
/// assert_eq!((b - a).allocations, 2);
/// assert_eq!((b - a).bytes, 32);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Allocations made, a `realloc` counting as one.
    pub allocations: u64,
    /// Bytes asked for (a `realloc` that grows counts what it adds).
    pub bytes: u64,
    /// Bytes allocated and not yet freed. In a difference: the change, wrapping if it fell.
    pub live_bytes: u64,
}

impl Sub for Counts {
    type Output = Counts;

    /// The counts between two readings (`later - earlier`), saturating at 0.
    fn sub(self, earlier: Counts) -> Counts {
        Counts {
            allocations: self.allocations.saturating_sub(earlier.allocations),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            live_bytes: self.live_bytes.wrapping_sub(earlier.live_bytes),
        }
    }
}

/// The counters now (all zero when [`CountingAlloc`](type@CountingAlloc) is not the global allocator).
///
/// ```
/// use sheave_load::meter::alloc::{Counts, counts};
///
/// // This doctest installs no counting allocator: every counter stays at zero.
/// let v = std::hint::black_box(vec![1u8; 64]);
/// assert_eq!(counts(), Counts::default());
/// # drop(v);
/// ```
pub fn counts() -> Counts {
    let s = INSTRUMENTED_SYSTEM.stats();
    Counts {
        allocations: (s.allocations + s.reallocations) as u64,
        bytes: s.bytes_allocated as u64,
        live_bytes: s.bytes_allocated.saturating_sub(s.bytes_deallocated) as u64,
    }
}

/// Heap bytes allocated now and not yet freed (0 when [`CountingAlloc`](type@CountingAlloc) is not installed).
///
/// ```
/// let live = sheave_load::meter::alloc::live_bytes();
/// assert_eq!(live, sheave_load::meter::alloc::counts().live_bytes);
/// ```
pub fn live_bytes() -> u64 {
    counts().live_bytes
}

/// Whether [`CountingAlloc`](type@CountingAlloc) is this process's global allocator: one allocation is made and
/// looked for in the counters. The meter prints `-` for allocations when it is not.
///
/// ```
/// // This doctest installs no allocator: nothing is counted.
/// assert!(!sheave_load::meter::alloc::installed());
/// ```
pub fn installed() -> bool {
    let before = counts();
    drop(black_box(Box::new(0u64)));
    counts().allocations > before.allocations
}
