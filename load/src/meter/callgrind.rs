//! Instructions counted by callgrind (valgrind's tool): deterministic where nanoseconds below
//! ~10 vary 2× between processes on a shared machine.
//!
//! [`per_call`] runs a measurement twice, at N and 2N calls, and divides the difference by
//! N, so the program's start-up (and anything else done once) cancels out. The meter does
//! this for you ([`Meter::instructions`](super::Meter::instructions)) by running its own
//! binary again under valgrind, in child mode; [`instructions`] is the building block for
//! other programs (a server process, say). Without valgrind every function here answers
//! `None` and the tables print `-`.
//!
//! # Example
//!
//! ```
//! use sheave_load::meter::callgrind;
//!
//! // Instructions per iteration of `true`'s main loop, if it had one: here, the same program
//! // at "N" and "2N" runs the same instructions, so the difference is 0.
//! let per = callgrind::per_call(1_000, |_n| {
//!     callgrind::instructions(std::path::Path::new("/bin/true"), &[], &[])
//! });
//! if callgrind::available() {
//!     assert_eq!(per, Some(0.0));
//! } else {
//!     assert_eq!(per, None);
//! }
//! ```

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Whether `valgrind` can be run here.
///
/// ```
/// let here = sheave_load::meter::callgrind::available();
/// assert_eq!(here, sheave_load::meter::callgrind::available()); // asked once, remembered
/// ```
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("valgrind")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The instructions callgrind counted for a whole run of `program` with `args` and the
/// extra environment `env`, or `None` when valgrind is missing or the run did not report a
/// count. The program's own output is discarded.
///
/// ```
/// use sheave_load::meter::callgrind;
/// use std::path::Path;
///
/// let n = callgrind::instructions(Path::new("/bin/true"), &[], &[]);
/// assert_eq!(n.is_some(), callgrind::available());
/// ```
pub fn instructions(program: &Path, args: &[OsString], env: &[(&str, &str)]) -> Option<u64> {
    if !available() {
        return None;
    }
    let out = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--cache-sim=no",
        ])
        .arg(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.lines().find_map(|l| {
        let (_, rest) = l.split_once("Collected :")?;
        rest.trim().parse().ok()
    })
}

/// Instructions per call: `at(2 × calls)` minus `at(calls)`, divided by `calls`, where
/// `at(n)` is the whole-run count of a run making `n` calls. `None` if either run is.
///
/// ```
/// // A program costing 1,000 to start and 7 per call:
/// let per = sheave_load::meter::callgrind::per_call(100, |n| Some(1_000 + 7 * n));
/// assert_eq!(per, Some(7.0));
/// ```
pub fn per_call(calls: u64, mut at: impl FnMut(u64) -> Option<u64>) -> Option<f64> {
    let once = at(calls)? as f64;
    let twice = at(2 * calls)? as f64;
    Some((twice - once) / calls.max(1) as f64)
}
