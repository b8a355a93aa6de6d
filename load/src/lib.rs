//! # sheave-load
//!
//! Two tools for finding out what networking code costs:
//!
//! - [`meter`]: the overhead meter — run a `Service` stack beside its bare inner service (and
//!   a peer, if you like), in one process, interleaved, and read the cost per call in time,
//!   heap allocations and instructions (callgrind), with the ratios. sheave's own benches
//!   (`--bench service`, `middleware`, `balance`) are written on it.
//! - the `sheave-load` command: a load generator whose client is the kit's own balanced stack
//!   ([`cli`] parses its flags, [`run`](mod@run) drives the load, [`protocol`] speaks RESP, lines, raw
//!   TCP and HTTP, [`figures`] counts, [`report`] prints and writes the results).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod figures;
pub mod meter;
pub mod pool;
pub mod protocol;
pub mod report;
pub mod run;

pub use run::{Report, run};
