//! Cases 8 and 10: the server as a child process, measured through `/proc/<pid>/`.

use super::figures::*;
use super::server::*;
use std::io::{self, Write};
use std::time::{Duration, Instant};

// Case 8: idle connections

/// Case 8's figures.
#[derive(Debug, Clone, Default)]
pub struct IdleReport {
    /// Idle connections held open.
    pub connections: usize,
    /// The server's resident memory with one connection, in KiB.
    pub rss_before_kib: u64,
    /// ... and with all of them, in KiB.
    pub rss_after_kib: u64,
    /// `(after - before) / connections`, in bytes.
    pub bytes_per_connection: u64,
    /// A fresh client's first `PING` round trip (connect included) meanwhile.
    pub fresh_ping: Duration,
    /// The server's open descriptors with all of them.
    pub server_fds: usize,
}

/// Case 8: opens `n` connections to a server process (in batches of 100, the last of each
/// batch pinged so the server has surely accepted the batch), measures its resident memory,
/// then times a fresh client's `PING`. `test_name` is the calling test (see
/// [`ServerProcess::start`]).
pub fn idle_connections(test_name: &str, n: usize) -> io::Result<IdleReport> {
    let server = ServerProcess::start(test_name, n + 100, None)?;
    let mut warm = std::net::TcpStream::connect(server.addr)?;
    ping(&mut warm, Duration::from_secs(10))?;
    let rss_before_kib = rss_kib(server.pid).ok_or_else(|| io::Error::other("no VmRSS"))?;
    let mut idle = Vec::with_capacity(n);
    while idle.len() < n {
        let batch = 100.min(n - idle.len());
        for _ in 0..batch {
            idle.push(std::net::TcpStream::connect(server.addr)?);
        }
        let last = idle.last_mut().expect("a batch");
        ping(last, Duration::from_secs(10))?;
    }
    // The pings went to the last of each batch; the server accepts in order, so it holds all.
    let rss_after_kib = rss_kib(server.pid).ok_or_else(|| io::Error::other("no VmRSS"))?;
    let server_fds = fd_count(server.pid).unwrap_or(0);
    let t = Instant::now();
    let mut fresh = std::net::TcpStream::connect(server.addr)?;
    ping(&mut fresh, Duration::from_secs(10))?;
    let fresh_ping = t.elapsed();
    Ok(IdleReport {
        connections: n,
        rss_before_kib,
        rss_after_kib,
        bytes_per_connection: rss_after_kib.saturating_sub(rss_before_kib) * 1024 / n as u64,
        fresh_ping,
        server_fds,
    })
}

// Case 10: descriptor exhaustion

/// Case 10's figures.
#[derive(Debug, Clone, Default)]
pub struct FdReport {
    /// The server's descriptor limit.
    pub limit: u64,
    /// Connections the server took before it ran out.
    pub held: usize,
    /// Connections waiting (in the kernel's queue) while it was out.
    pub waiting: usize,
    /// Of those, answered while it was out (must be none: it cannot accept them).
    pub answered_while_out: usize,
    /// How long the server was watched while out of descriptors.
    pub window: Duration,
    /// The server's CPU time over that window.
    pub cpu: Duration,
    /// From freeing the descriptors to the last waiting connection's answer.
    pub recovery: Duration,
    /// Whether a fresh client was then answered.
    pub fresh_answered: bool,
}

/// Case 10: a server process under `ulimit -n limit` takes connections (each pinged) until its
/// descriptors run out; `waiting` more connect and send `PING`, which it cannot accept; its CPU
/// time is read over `window`; then the held connections close and every waiting one must be
/// answered. `test_name` is the calling test (see [`ServerProcess::start`]).
pub fn fd_exhaustion(
    test_name: &str,
    limit: u64,
    waiting: usize,
    window: Duration,
) -> io::Result<FdReport> {
    let server = ServerProcess::start(test_name, 10_000, Some(limit))?;
    let mut held = vec![std::net::TcpStream::connect(server.addr)?];
    ping(&mut held[0], Duration::from_secs(10))?;
    let open =
        fd_slots_used(server.pid, limit).ok_or_else(|| io::Error::other("no /proc/<pid>/fd"))?;
    for _ in open as u64..limit {
        let mut s = std::net::TcpStream::connect(server.addr)?;
        ping(&mut s, Duration::from_secs(10))?;
        held.push(s);
    }
    let mut queued = Vec::with_capacity(waiting);
    for _ in 0..waiting {
        let mut s = std::net::TcpStream::connect(server.addr)?;
        s.write_all(PING)?;
        queued.push(s);
    }
    let full = fd_slots_used(server.pid, limit).unwrap_or(0);
    if full as u64 != limit {
        return Err(io::Error::other(format!(
            "the server holds {full} descriptors, not its limit {limit}"
        )));
    }
    // Watch it while it is out: no reply may come (it cannot accept), and its CPU time over
    // the window shows whether it spins. The wait is for a reply that must not arrive.
    let ticks_before = cpu_ticks(server.pid).unwrap_or(0);
    let t = Instant::now();
    let mut answered_while_out = 0;
    let mut probe = [0u8; 1];
    queued[0].set_read_timeout(Some(window))?;
    match queued[0].peek(&mut probe) {
        Ok(_) => answered_while_out += 1,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        Err(e) => return Err(e),
    }
    let watched = t.elapsed();
    let ticks = cpu_ticks(server.pid)
        .unwrap_or(0)
        .saturating_sub(ticks_before);
    for s in &mut queued[1..] {
        s.set_nonblocking(true)?;
        if s.peek(&mut probe).is_ok() {
            answered_while_out += 1;
        }
        s.set_nonblocking(false)?;
    }
    let cpu = Duration::from_micros(ticks * 1_000_000 / clock_ticks_per_second());
    let held_count = held.len();
    let freed = Instant::now();
    drop(held);
    for s in &mut queued {
        expect_pong(s, Duration::from_secs(10))?;
    }
    let recovery = freed.elapsed();
    let mut fresh = std::net::TcpStream::connect(server.addr)?;
    let fresh_answered = ping(&mut fresh, Duration::from_secs(10)).is_ok();
    Ok(FdReport {
        limit,
        held: held_count,
        waiting,
        answered_while_out,
        window: watched,
        cpu,
        recovery,
        fresh_answered,
    })
}
