//! # sheave-load
//!
//! Two tools for finding out what networking code costs:
//!
//! - [`meter`]: the overhead meter — run a `Service` stack beside its bare inner service (and
//!   a peer, if you like), in one process, interleaved, and read the cost per call in time,
//!   heap allocations and instructions (callgrind), with the ratios. sheave's own benches
//!   (`--bench service`, `middleware`, `balance`) are written on it.
//! - the `sheave-load` command: a load generator whose client is the kit's own balanced stack.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod meter;
