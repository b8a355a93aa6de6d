//! Shared support for sheave's benchmarks: a neutral load generator (a hand-written mio client),
//! per-thread CPU time, heap-allocation counting, callgrind instruction counts and table output.
//!
//! Every bench compares sheave with a peer **in the same run**, interleaved, and prints the
//! ratio. Timings on this kind of machine vary ±20% between runs; the ratios are what to read.

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The Linux thread id of the calling thread.
pub fn current_tid() -> u64 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .expect("a numeric thread id")
}

/// CPU time (user + system, nanoseconds) that thread `tid` of this process has used so far,
/// from `/proc/self/task/<tid>/schedstat`.
pub fn thread_cpu_ns(tid: u64) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .expect("schedstat (needs CONFIG_SCHED_INFO)");
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat's first field")
}

/// (user, system) CPU time of thread `tid` of this process, in clock ticks of 10 ms, from
/// `/proc/self/task/<tid>/stat`: coarse, but it splits the runtime's own work (user) from the
/// kernel's (system: syscalls, and on loopback the TCP stack itself).
pub fn thread_user_sys_ticks(tid: u64) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).expect("stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &s[s.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (f[11].parse().unwrap(), f[12].parse().unwrap())
}

/// Heap bytes currently allocated through [`CountingAlloc`] (0 when it is not installed).
pub fn live_heap_bytes() -> u64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// A global allocator that counts allocations, for "allocations per call" columns.
/// Install with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
#[derive(Debug)]
pub struct CountingAlloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counters
// are plain atomics and do not allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded as is; `ptr` came from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// (allocations, bytes) counted so far by [`CountingAlloc`].
pub fn alloc_counts() -> (u64, u64) {
    (
        ALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    )
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

/// The instructions callgrind counted for a run of this executable with `args`, or `None` when
/// valgrind is not installed.
pub fn callgrind_instructions(args: &[&str]) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--cache-sim=no",
        ])
        .arg(exe)
        .args(args)
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.lines().find_map(|l| {
        let (_, rest) = l.split_once("Collected :")?;
        rest.trim().parse().ok()
    })
}

/// Formats a duration compactly (ns, µs or ms).
pub fn fmt_dur(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// Prints a table: a header row and rows of cells, columns padded.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}", w = *w))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(header.iter().map(|s| s.to_string()).collect());
    println!(
        "|{}|",
        widths
            .iter()
            .map(|w| format!("-{}-", "-".repeat(*w)))
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in rows {
        line(row.clone());
    }
}

/// The instructions per call of `case` on `side`, from callgrind: this executable is run as
/// `one <side> <case> <n>` for `n` = `calls` and 2 × `calls`, and the difference is divided
/// by `calls`, so start-up cancels out. `None` when valgrind is not installed.
pub fn callgrind_per_call(side: &str, case: usize, calls: u64) -> Option<f64> {
    let at = |n: u64| callgrind_instructions(&["one", side, &case.to_string(), &n.to_string()]);
    Some((at(2 * calls)? as f64 - at(calls)? as f64) / calls as f64)
}

/// Measures every case on both sides — `time(side, case)` gives (ns per call, allocations
/// per call), the sides interleaved case by case — adds callgrind's instructions per call
/// (see [`callgrind_per_call`]) and prints one table with the ratios.
pub fn compare_per_call(
    cases: &[&str],
    callgrind_calls: u64,
    time: impl Fn(&str, usize) -> (f64, f64),
) {
    let fmt_ins = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let mut rows = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (ns_a, al_a) = time("sheave", i);
        let (ns_b, al_b) = time("tower", i);
        let ins_a = callgrind_per_call("sheave", i, callgrind_calls);
        let ins_b = callgrind_per_call("tower", i, callgrind_calls);
        let ratio = match (ins_a, ins_b) {
            (Some(a), Some(b)) => format!("{:.2}", a / b),
            _ => "-".to_string(),
        };
        rows.push(vec![
            case.to_string(),
            format!("{ns_a:.1}"),
            format!("{ns_b:.1}"),
            format!("{:.2}", ns_a / ns_b),
            format!("{al_a:.2}"),
            format!("{al_b:.2}"),
            fmt_ins(ins_a),
            fmt_ins(ins_b),
            ratio,
        ]);
    }
    print_table(
        &[
            "stack",
            "sheave ns",
            "tower ns",
            "ns sheave ÷ tower",
            "sheave allocs",
            "tower allocs",
            "sheave instr",
            "tower instr",
            "instr sheave ÷ tower",
        ],
        &rows,
    );
}
