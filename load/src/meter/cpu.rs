//! CPU time of one thread of this process, from Linux's `/proc`: what a server thread spent
//! per request when the load generator saturates it.
//!
//! # Example
//!
//! ```
//! use sheave_load::meter::cpu;
//!
//! let tid = cpu::current_tid()?;
//! let before = cpu::thread_cpu_ns(tid)?;
//! let mut x = 0u64;
//! for i in 0..1_000_000u64 {
//!     x = std::hint::black_box(x.wrapping_add(i));
//! }
//! assert!(cpu::thread_cpu_ns(tid)? > before);
//! let (_user, _system) = cpu::thread_user_sys_ticks(tid)?;
//! # Ok::<_, std::io::Error>(())
//! ```

use std::io;

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {what}"))
}

/// The Linux thread id of the calling thread (from `/proc/thread-self`).
///
/// ```
/// let a = sheave_load::meter::cpu::current_tid()?;
/// let b = std::thread::spawn(sheave_load::meter::cpu::current_tid).join().unwrap()?;
/// assert_ne!(a, b);
/// # Ok::<_, std::io::Error>(())
/// ```
pub fn current_tid() -> io::Result<u64> {
    let link = std::fs::read_link("/proc/thread-self")?;
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad("/proc/thread-self link"))
}

/// CPU time (user + system, nanoseconds) that thread `tid` of this process has used so far,
/// from `/proc/self/task/<tid>/schedstat` (needs a kernel with `CONFIG_SCHED_INFO`).
///
/// ```
/// let tid = sheave_load::meter::cpu::current_tid()?;
/// assert!(sheave_load::meter::cpu::thread_cpu_ns(tid)? > 0);
/// # Ok::<_, std::io::Error>(())
/// ```
pub fn thread_cpu_ns(tid: u64) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("schedstat format"))
}

/// (user, system) CPU time of thread `tid` of this process, in clock ticks (10 ms here),
/// from `/proc/self/task/<tid>/stat`: coarse, but it splits the thread's own work (user) from
/// the kernel's on its behalf (system: syscalls, and on loopback the TCP stack itself).
///
/// ```
/// let tid = sheave_load::meter::cpu::current_tid()?;
/// let (user, system) = sheave_load::meter::cpu::thread_user_sys_ticks(tid)?;
/// assert!(user < u64::MAX && system < u64::MAX);
/// # Ok::<_, std::io::Error>(())
/// ```
pub fn thread_user_sys_ticks(tid: u64) -> io::Result<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = s
        .rfind(')')
        .and_then(|i| s.get(i + 2..))
        .ok_or_else(|| bad("stat format"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let field = |i: usize| -> io::Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("stat format"))
    };
    Ok((field(11)?, field(12)?))
}
