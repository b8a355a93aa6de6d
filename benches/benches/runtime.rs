//! The runtime beside tokio `current_thread` and a hand-written mio loop.
//!
//! Run: `cargo bench -p sheave-benches --bench runtime` (add `-- pingpong`, `-- timers` or
//! `-- syscalls`, `-- instructions` for one part).
//!
//! - **pingpong**: a TCP echo server on one thread, driven by the same hand-written mio client
//!   on another thread. 64-byte messages; 1, 16 and 128 connections one message at a time,
//!   then 1 and 16 connections pipelining 16 messages. Reports messages/s, p50/p99 round trip
//!   and the **server thread's CPU time per message** (from schedstat) — on 2 cores the client
//!   saturates its core first, so CPU per message is the figure that compares the servers.
//!   Each case runs twice per server, interleaved (sheave, tokio, mio, sheave, tokio, mio).
//! - **timers**: insert+cancel with 0 and 1M timers pending, insert+fire, in ns per operation
//!   (the thread's CPU time / ops), and the heap that 1M pending timers hold (the futures
//!   themselves, their container and the wheel's storage).
//! - **syscalls**: system calls per round trip, counted by `strace -c` on a server process
//!   serving 20,000 round trips on one connection (needs strace).
//! - **instructions**: user-space instructions per round trip of each server process, from
//!   callgrind (needs valgrind): the runtime's own overhead without the kernel's TCP work,
//!   which dominates the CPU columns on loopback.

use futures::AsyncWriteExt;
use sheave_benches::{
    CountingAlloc, current_tid, drive_echo, fmt_dur, live_heap_bytes, print_table, thread_cpu_ns,
    thread_user_sys_ticks,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SIZE: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Server {
    Sheave,
    Tokio,
    Mio,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Sheave => "sheave",
            Server::Tokio => "tokio",
            Server::Mio => "mio loop",
        }
    }
}

/// A running echo server: its address, its thread id, and how to stop it.
struct Running {
    addr: SocketAddr,
    tid: u64,
    stop: Box<dyn FnOnce()>,
}

fn start(server: Server) -> Running {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || match server {
        Server::Sheave => serve_sheave(tx),
        Server::Tokio => serve_tokio(tx),
        Server::Mio => serve_mio(tx),
    });
    let (addr, tid, stop): (SocketAddr, u64, Box<dyn FnOnce() + Send>) = rx.recv().unwrap();
    Running {
        addr,
        tid,
        stop: Box::new(move || {
            stop();
            thread.join().unwrap();
        }),
    }
}

type Ready = mpsc::Sender<(SocketAddr, u64, Box<dyn FnOnce() + Send>)>;

fn serve_sheave(ready: Ready) {
    use sheave_core::net::TcpListener;
    let rt = sheave_core::Runtime::new().unwrap();
    let handle = rt.handle().clone();
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let stopper = handle.clone();
        ready
            .send((
                listener.local_addr().unwrap(),
                current_tid(),
                Box::new(move || stopper.shutdown()),
            ))
            .unwrap();
        let accept = async {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                conn.set_nodelay(true).unwrap();
                sheave_core::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        };
        futures::future::select(Box::pin(accept), handle.shutdown_signal()).await;
    });
}

fn serve_tokio(ready: Ready) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        ready
            .send((
                listener.local_addr().unwrap(),
                current_tid(),
                Box::new(move || {
                    let _ = stop_tx.send(());
                }),
            ))
            .unwrap();
        let accept = async {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                conn.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        };
        futures::future::select(Box::pin(accept), stop_rx).await;
    });
}

/// The floor: an echo server written directly on mio, no futures, no tasks.
fn serve_mio(ready: Ready) {
    use mio::net::{TcpListener, TcpStream};
    use mio::{Events, Interest, Poll, Token, Waker};
    use std::sync::Arc;
    const LISTENER: Token = Token(usize::MAX - 1);
    const WAKER: Token = Token(usize::MAX);
    let mut poll = Poll::new().unwrap();
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
    let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .unwrap();
    let w = waker.clone();
    ready
        .send((
            listener.local_addr().unwrap(),
            current_tid(),
            Box::new(move || w.wake().unwrap()),
        ))
        .unwrap();
    let mut conns: Vec<Option<TcpStream>> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        poll.poll(&mut events, None).unwrap();
        for event in events.iter() {
            match event.token() {
                WAKER => return,
                LISTENER => {
                    while let Ok((mut s, _)) = listener.accept() {
                        s.set_nodelay(true).unwrap();
                        poll.registry()
                            .register(&mut s, Token(conns.len()), Interest::READABLE)
                            .unwrap();
                        conns.push(Some(s));
                    }
                }
                Token(i) => {
                    let Some(s) = conns[i].as_mut() else { continue };
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => {
                                conns[i] = None;
                                break;
                            }
                            Ok(n) => {
                                // Echo payloads are tiny: the socket buffer takes them whole.
                                if s.write_all(&buf[..n]).is_err() {
                                    conns[i] = None;
                                    break;
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                conns[i] = None;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

struct Sample {
    rate: f64,
    cpu_per_msg: f64,
    /// Share of the server's CPU time spent in user space (the runtime and the echo loop).
    user_share: f64,
    p50: Duration,
    p99: Duration,
}

fn measure(server: Server, conns: usize, depth: usize) -> Sample {
    let running = start(server);
    let mut marks = Vec::new();
    let mut ticks = Vec::new();
    let load = drive_echo(
        running.addr,
        conns,
        depth,
        SIZE,
        Duration::from_millis(300),
        Duration::from_millis(1500),
        || {
            marks.push(thread_cpu_ns(running.tid));
            ticks.push(thread_user_sys_ticks(running.tid));
        },
    )
    .expect("load run");
    (running.stop)();
    let cpu = marks[1] - marks[0];
    let (user, sys) = (ticks[1].0 - ticks[0].0, ticks[1].1 - ticks[0].1);
    Sample {
        rate: load.rate(),
        cpu_per_msg: cpu as f64 / load.messages as f64,
        user_share: user as f64 / (user + sys).max(1) as f64,
        p50: load.pct(0.5),
        p99: load.pct(0.99),
    }
}

fn pingpong() {
    println!("## TCP echo, 64-byte messages, one server thread (2 runs each, interleaved)\n");
    let cases = [(1, 1), (16, 1), (128, 1), (1, 16), (16, 16)];
    let servers = [Server::Sheave, Server::Tokio, Server::Mio];
    let mut rows = Vec::new();
    for (conns, depth) in cases {
        let mut samples: Vec<Vec<Sample>> = servers.iter().map(|_| Vec::new()).collect();
        for _run in 0..2 {
            for (i, s) in servers.iter().enumerate() {
                samples[i].push(measure(*s, conns, depth));
            }
        }
        let avg =
            |v: &[Sample], f: fn(&Sample) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
        let sheave_cpu = avg(&samples[0], |s| s.cpu_per_msg);
        let sheave_rate = avg(&samples[0], |s| s.rate);
        for (i, s) in servers.iter().enumerate() {
            let cpu = avg(&samples[i], |s| s.cpu_per_msg);
            let user = avg(&samples[i], |s| s.user_share) * cpu;
            let rate = avg(&samples[i], |s| s.rate);
            let p50 = samples[i].iter().map(|s| s.p50).sum::<Duration>() / 2;
            let p99 = samples[i].iter().map(|s| s.p99).sum::<Duration>() / 2;
            rows.push(vec![
                format!("{conns} conn x depth {depth}"),
                s.name().to_string(),
                format!("{:.0}", rate),
                format!("{:.2} µs", cpu / 1e3),
                format!("{:.2} µs", user / 1e3),
                fmt_dur(p50),
                fmt_dur(p99),
                if i == 0 {
                    "1.00".to_string()
                } else {
                    format!("{:.2}", sheave_cpu / cpu)
                },
                if i == 0 {
                    "1.00".to_string()
                } else {
                    format!("{:.2}", sheave_rate / rate)
                },
            ]);
        }
    }
    print_table(
        &[
            "case",
            "server",
            "msg/s",
            "server CPU/msg",
            "of it user space",
            "p50",
            "p99",
            "sheave CPU ÷ this",
            "sheave msg/s ÷ this",
        ],
        &rows,
    );
}

const TIMER_OPS: usize = 1_000_000;

/// Runs `f` on a fresh thread; returns that thread's CPU time for it.
fn cpu_of(f: impl FnOnce() + Send + 'static) -> Duration {
    std::thread::spawn(move || {
        let tid = current_tid();
        let start = thread_cpu_ns(tid);
        f();
        Duration::from_nanos(thread_cpu_ns(tid) - start)
    })
    .join()
    .unwrap()
}

/// (insert+cancel ns/op with `pending` timers already armed, insert+fire ns/op, bytes per
/// pending timer) for sheave.
fn sheave_timers(pending: usize) -> (f64, f64, f64) {
    let (tx, rx) = mpsc::channel();
    cpu_of(move || {
        let rt = sheave_core::Runtime::new().unwrap();
        rt.block_on(async {
            let heap0 = live_heap_bytes();
            let mut armed = Vec::with_capacity(pending);
            for i in 0..pending {
                let mut s = sheave_core::time::sleep(Duration::from_secs(3600 + i as u64 % 1000));
                let _ = futures::poll!(&mut s);
                armed.push(s);
            }
            let per_timer = (live_heap_bytes() - heap0) as f64 / pending.max(1) as f64;
            let tid = current_tid();
            let t0 = thread_cpu_ns(tid);
            for i in 0..TIMER_OPS {
                let mut s = sheave_core::time::sleep(Duration::from_millis(10 + (i % 5000) as u64));
                let _ = futures::poll!(&mut s);
                drop(s);
            }
            tx.send((thread_cpu_ns(tid) - t0, per_timer)).unwrap();
        });
    });
    let (cancel_ns, per_timer) = rx.recv().unwrap();
    let fire = cpu_of(|| {
        let rt = sheave_core::Runtime::new().unwrap();
        rt.block_on(async {
            let mut armed = Vec::with_capacity(TIMER_OPS);
            for _ in 0..TIMER_OPS {
                let mut s = sheave_core::time::sleep(Duration::from_millis(1));
                let _ = futures::poll!(&mut s);
                armed.push(s);
            }
            for s in armed {
                s.await;
            }
        });
    });
    (
        cancel_ns as f64 / TIMER_OPS as f64,
        fire.as_nanos() as f64 / TIMER_OPS as f64,
        per_timer,
    )
}

fn tokio_timers(pending: usize) -> (f64, f64, f64) {
    let (tx, rx) = mpsc::channel();
    cpu_of(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let heap0 = live_heap_bytes();
            let mut armed = Vec::with_capacity(pending);
            for i in 0..pending {
                let mut s = Box::pin(tokio::time::sleep(Duration::from_secs(
                    3600 + i as u64 % 1000,
                )));
                let _ = futures::poll!(s.as_mut());
                armed.push(s);
            }
            let per_timer = (live_heap_bytes() - heap0) as f64 / pending.max(1) as f64;
            let tid = current_tid();
            let t0 = thread_cpu_ns(tid);
            for i in 0..TIMER_OPS {
                let mut s = std::pin::pin!(tokio::time::sleep(Duration::from_millis(
                    10 + (i % 5000) as u64
                )));
                let _ = futures::poll!(s.as_mut());
            }
            tx.send((thread_cpu_ns(tid) - t0, per_timer)).unwrap();
        });
    });
    let (cancel_ns, per_timer) = rx.recv().unwrap();
    let fire = cpu_of(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut armed = Vec::with_capacity(TIMER_OPS);
            for _ in 0..TIMER_OPS {
                let mut s = Box::pin(tokio::time::sleep(Duration::from_millis(1)));
                let _ = futures::poll!(s.as_mut());
                armed.push(s);
            }
            for s in armed {
                s.await;
            }
        });
    });
    (
        cancel_ns as f64 / TIMER_OPS as f64,
        fire.as_nanos() as f64 / TIMER_OPS as f64,
        per_timer,
    )
}

fn timers() {
    println!(
        "\n## Timers: ns per operation (thread CPU time / 1M ops), 2 runs each, interleaved\n"
    );
    /// One run: (idle-wheel figures, loaded-wheel figures), each (cancel ns, fire ns, bytes).
    type Run = ((f64, f64, f64), (f64, f64, f64));
    type Pick = fn(&Run) -> f64;
    let mut ours: Vec<Run> = Vec::new();
    let mut theirs: Vec<Run> = Vec::new();
    for _ in 0..2 {
        ours.push((sheave_timers(0), sheave_timers(1_000_000)));
        theirs.push((tokio_timers(0), tokio_timers(1_000_000)));
    }
    let mean = |v: &[Run], f: Pick| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let cases: [(&str, Pick); 4] = [
        ("insert+cancel, 0 pending", |s| s.0.0),
        ("insert+cancel, 1M pending", |s| s.1.0),
        ("insert+fire (1M, one deadline)", |s| s.0.1),
        ("heap bytes per pending timer (1M)", |s| s.1.2),
    ];
    let mut rows = Vec::new();
    for (name, pick) in cases {
        let a = mean(&ours, pick);
        let b = mean(&theirs, pick);
        rows.push(vec![
            name.to_string(),
            format!("{a:.1}"),
            format!("{b:.1}"),
            format!("{:.2}", a / b),
        ]);
    }
    print_table(&["case", "sheave", "tokio", "sheave ÷ tokio"], &rows);
}

/// `serve <sheave|tokio|mio>`: serve echo on 127.0.0.1, print the port, stop when stdin closes.
fn serve_process(which: &str) {
    let server = match which {
        "sheave" => Server::Sheave,
        "tokio" => Server::Tokio,
        _ => Server::Mio,
    };
    let running = start(server);
    println!("{}", running.addr);
    std::io::stdout().flush().unwrap();
    let mut sink = String::new();
    let _ = std::io::stdin().read_to_string(&mut sink);
    (running.stop)();
}

/// Runs `serve <which>` as a child process under `tool` (a command prefix), drives it with
/// `conns` blocking client threads doing `rounds / conns` round trips each, then closes its
/// stdin and returns the tool's stderr and output file. `None` when the tool is missing.
fn under_tool(tool: &[&str], which: &str, conns: usize, rounds: usize) -> Option<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(tool[0])
        .args(&tool[1..])
        .arg(&exe)
        .args(["serve", which])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let addr: SocketAddr = line.trim().parse().expect("the server's address");
    let clients: Vec<_> = (0..conns)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn = std::net::TcpStream::connect(addr).unwrap();
                conn.set_nodelay(true).unwrap();
                let mut buf = [0u8; SIZE];
                for _ in 0..rounds / conns {
                    conn.write_all(&[1u8; SIZE]).unwrap();
                    conn.read_exact(&mut buf).unwrap();
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    Some(String::from_utf8_lossy(&out.stderr).into_owned())
}

const SERVERS: [&str; 3] = ["sheave", "tokio", "mio"];

fn syscalls() {
    const ROUNDS: usize = 20_000;
    println!(
        "\n## System calls per echo round trip (strace -c -f on the server process, 1 connection, {ROUNDS} round trips)\n"
    );
    let mut rows = Vec::new();
    for which in SERVERS {
        let file = std::env::temp_dir().join(format!("sheave-strace-{which}.txt"));
        let file = file.to_str().unwrap();
        if under_tool(&["strace", "-f", "-c", "-o", file], which, 1, ROUNDS).is_none() {
            println!("skipped: strace is not installed");
            return;
        }
        let report = std::fs::read_to_string(file).unwrap_or_default();
        let mut per_call = Vec::new();
        let mut total = 0u64;
        for l in report.lines() {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() >= 5 && cols[0].parse::<f64>().is_ok() {
                let calls: u64 = cols[3].parse().unwrap_or(0);
                let name = *cols.last().unwrap();
                if name == "total" {
                    total = calls;
                } else if calls >= ROUNDS as u64 / 10 {
                    per_call.push(format!("{name} {:.2}", calls as f64 / ROUNDS as f64));
                }
            }
        }
        rows.push(vec![
            which.to_string(),
            format!("{:.2}", total as f64 / ROUNDS as f64),
            per_call.join(", "),
        ]);
    }
    print_table(&["server", "syscalls / round trip", "per kind"], &rows);
}

/// User-space instructions per round trip of each server, from callgrind: the runtime's own
/// cost with the kernel taken out, deterministic where timings are not. Measured as the
/// difference between a run of 2N and a run of N round trips, so start-up cancels out.
fn instructions() {
    const N: usize = 10_000;
    println!(
        "\n## User-space instructions per echo round trip (callgrind on the server process; (count at 2N - count at N) / N, N = {N})\n"
    );
    let tool = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        "--cache-sim=no",
    ];
    let count = |which: &str, conns: usize, rounds: usize| -> Option<u64> {
        let stderr = under_tool(&tool, which, conns, rounds)?;
        stderr.lines().find_map(|l| {
            let (_, rest) = l.split_once("Collected :")?;
            rest.trim().parse().ok()
        })
    };
    let mut rows = Vec::new();
    for conns in [1usize, 16] {
        let mut per: Vec<f64> = Vec::new();
        for which in SERVERS {
            let (Some(a), Some(b)) = (count(which, conns, N), count(which, conns, 2 * N)) else {
                println!("skipped: valgrind is not installed");
                return;
            };
            per.push((b as f64 - a as f64) / N as f64);
        }
        for (i, which) in SERVERS.iter().enumerate() {
            rows.push(vec![
                format!("{conns} conn"),
                which.to_string(),
                format!("{:.0}", per[i]),
                format!("{:.2}", per[0] / per[i]),
            ]);
        }
    }
    print_table(
        &[
            "case",
            "server",
            "instructions / round trip",
            "sheave ÷ this",
        ],
        &rows,
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("serve") {
        serve_process(args.get(1).map(String::as_str).unwrap_or("sheave"));
        return;
    }
    let only = args.first().map(String::as_str);
    let started = Instant::now();
    if only.is_none() || only == Some("pingpong") {
        pingpong();
    }
    if only.is_none() || only == Some("timers") {
        timers();
    }
    if only.is_none() || only == Some("syscalls") {
        syscalls();
    }
    if only.is_none() || only == Some("instructions") {
        instructions();
    }
    println!("\n(total {:.0?})", started.elapsed());
}
