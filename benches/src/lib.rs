//! Shared support for sheave's benchmarks: a neutral load generator (a hand-written mio
//! client) for the network benches. The measuring machinery — per-thread CPU time, the
//! counting allocator, callgrind instruction counts, the interleaved comparisons and the
//! tables — is the overhead meter, `sheave_load::meter`, a supported API that users call
//! from their own benches; the names below re-export it for the benches written before it.
//!
//! Every bench compares sheave with a peer **in the same run**, interleaved, and prints the
//! ratio. Timings on this kind of machine vary ±20% between runs; the ratios are what to read.

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use sheave_load::meter::alloc::CountingAlloc;
pub use sheave_load::meter::table::{fmt_dur, print_table};

/// The Linux thread id of the calling thread ([`sheave_load::meter::cpu::current_tid`]).
pub fn current_tid() -> u64 {
    sheave_load::meter::cpu::current_tid().expect("/proc/thread-self")
}

/// CPU time (user + system, nanoseconds) that thread `tid` of this process has used so far
/// ([`sheave_load::meter::cpu::thread_cpu_ns`]).
pub fn thread_cpu_ns(tid: u64) -> u64 {
    sheave_load::meter::cpu::thread_cpu_ns(tid).expect("schedstat (needs CONFIG_SCHED_INFO)")
}

/// (user, system) CPU ticks of thread `tid` of this process
/// ([`sheave_load::meter::cpu::thread_user_sys_ticks`]).
pub fn thread_user_sys_ticks(tid: u64) -> (u64, u64) {
    sheave_load::meter::cpu::thread_user_sys_ticks(tid).expect("/proc/self/task/<tid>/stat")
}

/// Heap bytes currently allocated through [`CountingAlloc`](type@CountingAlloc) (0 when it is not installed).
pub fn live_heap_bytes() -> u64 {
    sheave_load::meter::alloc::live_bytes()
}

/// (allocations, bytes) counted so far by [`CountingAlloc`](type@CountingAlloc).
pub fn alloc_counts() -> (u64, u64) {
    let c = sheave_load::meter::alloc::counts();
    (c.allocations, c.bytes)
}

/// What a load run measured.
#[derive(Debug, Default, Clone)]
pub struct Load {
    /// Messages echoed (a round trip of depth `d` counts `d`).
    pub messages: u64,
    /// Wall time of the measured window.
    pub elapsed: Duration,
    /// Round-trip latencies, sorted.
    pub latencies: Vec<Duration>,
}

impl Load {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency percentile (`p` in 0..=1).
    pub fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies[((self.latencies.len() - 1) as f64 * p).round() as usize]
    }
}

struct Conn {
    stream: TcpStream,
    sent: usize,
    received: usize,
    started: Instant,
}

/// Drives an echo server at `addr` from the calling thread with a hand-written mio loop (the
/// same neutral client for every server): `conns` connections, each sending `depth` messages of
/// `size` bytes back to back and waiting for all of them before the next batch. Runs `warmup`,
/// then measures for `window`; calls `mark` when the measured window starts and ends.
pub fn drive_echo(
    addr: SocketAddr,
    conns: usize,
    depth: usize,
    size: usize,
    warmup: Duration,
    window: Duration,
    mut mark: impl FnMut(),
) -> io::Result<Load> {
    let mut poll = Poll::new()?;
    let batch = depth * size;
    let payload = vec![0x5au8; batch];
    let mut buf = vec![0u8; 64 * 1024];
    let mut conns: Vec<Conn> = (0..conns)
        .map(|i| {
            let std = std::net::TcpStream::connect(addr)?;
            std.set_nodelay(true)?;
            std.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(std);
            poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(Conn {
                stream,
                sent: 0,
                received: 0,
                started: Instant::now(),
            })
        })
        .collect::<io::Result<_>>()?;
    let mut events = Events::with_capacity(1024);
    let begin = Instant::now();
    let mut measuring = false;
    let mut load = Load::default();
    let mut window_start = begin;
    // Kick every connection off.
    let mut ready: Vec<usize> = (0..conns.len()).collect();
    loop {
        let now = Instant::now();
        if !measuring && now - begin >= warmup {
            measuring = true;
            window_start = now;
            mark();
        }
        if measuring && now - window_start >= window {
            mark();
            load.elapsed = now - window_start;
            break;
        }
        for i in ready.drain(..) {
            let c = &mut conns[i];
            // Write what is left of the batch.
            while c.sent < batch {
                match c.stream.write(&payload[c.sent..]) {
                    Ok(n) => c.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            // Read what has come back.
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => c.received += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if c.received >= batch {
                if measuring {
                    load.messages += depth as u64;
                    load.latencies.push(c.started.elapsed());
                }
                c.sent = 0;
                c.received -= batch;
                c.started = Instant::now();
                // Start the next batch at once.
                while c.sent < batch {
                    match c.stream.write(&payload[c.sent..]) {
                        Ok(n) => c.sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        ready.extend(events.iter().map(|e| e.token().0));
    }
    load.latencies.sort_unstable();
    Ok(load)
}
