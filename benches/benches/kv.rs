//! The redis-protocol kv server against its peers, driven by `redis-benchmark`.
//!
//! ```text
//! cargo bench -p sheave-benches --bench kv            # KV_BENCH_ROUNDS=N (default 3)
//! ```
//!
//! What is measured: `redis-benchmark -t ping,set,get -n 200000 -c 50 -q --csv` at `-P 1` and
//! `-P 16` (so PING_INLINE, PING_MBULK, SET and GET: 800,000 requests per run), then `-t incr`
//! and `-t mset` (10 keys a request) the same way, each its own rows, against three servers,
//! each a child process on one thread, interleaved round by round:
//!
//! - **sheave**: `examples/kv.rs`'s stack — `Server` + the pipelined dispatcher + `RespCodec`
//!   + `KvService` (the same module, `examples/support/kv.rs`);
//! - **tokio**: the same `RespCodec` and `KvService::execute_at` in a hand-written
//!   read → decode all → execute → encode all → write loop per connection on tokio's
//!   `current_thread` runtime (the strongest simple tokio server for this workload);
//! - **redis**: a real `redis-server --save '' --appendonly no`.
//!
//! Reported per test group, server and pipeline depth: requests per second (the mean of the group's tests'
//! rates, then the median over rounds; sheave ÷ peer above 1 means sheave is faster) and the server's CPU time per request (user + system
//! from `/proc/<pid>/stat`, 10 ms ticks, over all of its requests; sheave ÷ peer below 1
//! means sheave spends less).
//! The load generator runs on the other core; on loopback most server CPU is the kernel's TCP
//! path, which the ratios include. Since the tokio server shares the codec and the service,
//! the sheave ÷ tokio CPU ratio isolates the runtime, the dispatcher and the I/O path.
//!
//! For instruction counts of one server (user space only, steadier than the CPU ticks):
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/kv.out target/release/deps/kv-* serve sheave 7101
//! redis-benchmark -p 7101 -t get,set -n 100000 -c 50 -P 16 -q    # then stop the server
//! callgrind_annotate /tmp/kv.out                                  # `serve tokio` for the peer
//! ```

#[path = "../../examples/support/kv.rs"]
#[allow(unreachable_pub)]
mod kv;

use bytes::BytesMut;
use kv::{Kv, KvService};
use sheave_benches::print_table;
use sheave_proto::codec::{Decoder, Encoder};
use sheave_proto::resp::RespCodec;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

const REQUESTS: u32 = 200_000;
/// The `redis-benchmark -t` groups, each its own rows, and how many tests each runs
/// (`ping` is two: inline and multi-bulk). `mset` sets 10 keys per request.
const WORKLOADS: [(&str, usize); 3] = [("ping,set,get", 4), ("incr", 1), ("mset", 1)];
const CLIENTS: u32 = 50;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        match args.get(2).map(String::as_str) {
            Some("sheave") => serve_sheave(),
            Some("tokio") => serve_tokio(),
            other => panic!("serve what? {other:?}"),
        }
        return;
    }
    if Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .is_err()
        || Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!(
            "kv bench skipped: needs redis-benchmark and redis-server (apt-get install redis-server redis-tools)"
        );
        return;
    }
    let rounds: usize = std::env::var("KV_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let servers = ["sheave", "tokio", "redis"];
    let depths = [1u32, 16];
    // results[(workload * servers + server) * depths + depth] = (rates per round, CPU ticks,
    // requests)
    let cell = |w: usize, s: usize, d: usize| (w * servers.len() + s) * depths.len() + d;
    let mut results: Vec<(Vec<f64>, u64, u64)> =
        vec![(Vec::new(), 0, 0); WORKLOADS.len() * servers.len() * depths.len()];
    for round in 0..rounds {
        for (d, &depth) in depths.iter().enumerate() {
            for (s, &server) in servers.iter().enumerate() {
                let mut child = start(server);
                for (w, &(tests, count)) in WORKLOADS.iter().enumerate() {
                    let before = cpu_ticks(child.pid);
                    let (rate, requests) = benchmark(child.addr, tests, count, depth);
                    let ticks = cpu_ticks(child.pid) - before;
                    eprintln!(
                        "round {round} {tests} -P {depth} {server}: {rate:.0} req/s, {:.2} µs CPU/req",
                        ticks as f64 * 10_000.0 / requests as f64
                    );
                    let entry = &mut results[cell(w, s, d)];
                    entry.0.push(rate);
                    entry.1 += ticks;
                    entry.2 += requests;
                }
                child.stop();
            }
        }
    }
    let mut rows = Vec::new();
    for (w, &(tests, _)) in WORKLOADS.iter().enumerate() {
        for (d, depth) in depths.iter().enumerate() {
            let base = &results[cell(w, 0, d)];
            let base_rate = median(&base.0);
            let base_cpu = base.1 as f64 / base.2 as f64;
            for (s, server) in servers.iter().enumerate() {
                let r = &results[cell(w, s, d)];
                let rate = median(&r.0);
                let cpu = r.1 as f64 / r.2 as f64;
                rows.push(vec![
                    tests.to_string(),
                    format!("-P {depth}"),
                    server.to_string(),
                    format!("{:.0}k", rate / 1e3),
                    format!("{:.2}", base_rate / rate),
                    format!("{:.2} µs", cpu * 10_000.0),
                    format!("{:.2}", base_cpu / cpu),
                ]);
            }
        }
    }
    println!(
        "\nredis-benchmark -t <tests> -n {REQUESTS} -c {CLIENTS}, {rounds} rounds, one server thread"
    );
    print_table(
        &[
            "tests",
            "pipeline",
            "server",
            "req/s",
            "sheave ÷ peer",
            "server CPU / req",
            "sheave CPU ÷ peer",
        ],
        &rows,
    );
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A server under test: a child process, killed when stopped.
struct ServerProcess {
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

impl ServerProcess {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `server` and waits for the line that says it is listening.
fn start(server: &str) -> ServerProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = if server == "redis" {
        let mut c = Command::new("redis-server");
        c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        c
    } else {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["serve", server, &port.to_string()]);
        c
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn server");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("Ready to accept connections") || l.starts_with("listening on"));
    assert!(ready, "{server} did not start");
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let pid = child.id();
    ServerProcess {
        child,
        pid,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// utime + stime of process `pid`, in 10 ms ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat (1-based), i.e. 11 and 12 after the command name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Runs redis-benchmark's `tests` (`count` of them); returns the mean rate of its tests and
/// how many requests it sent.
fn benchmark(addr: SocketAddr, tests: &str, count: usize, depth: u32) -> (f64, u64) {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-t", tests, "-q", "--csv"])
        .args(["-n", &REQUESTS.to_string(), "-c", &CLIENTS.to_string()])
        .args(["-P", &depth.to_string()])
        .output()
        .expect("redis-benchmark");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let rates: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with("\"test\""))
        .filter_map(|l| l.split(',').nth(1)?.trim_matches('"').parse().ok())
        .collect();
    assert_eq!(rates.len(), count, "unexpected output: {text}");
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    (mean, u64::from(REQUESTS) * rates.len() as u64)
}

fn port_arg() -> u16 {
    std::env::args()
        .nth(3)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// The sheave server: the same stack as `examples/kv.rs`.
fn serve_sheave() {
    use sheave_proto::Server;
    let rt = sheave_core::Runtime::new().unwrap();
    let kv = Kv::new();
    rt.block_on(async move {
        let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], port_arg())))
            .codec(RespCodec::new())
            .build()
            .unwrap();
        println!("listening on {}", server.local_addr());
        server
            .serve(move |_: SocketAddr| {
                let kv = kv.clone();
                async move { Ok::<_, sheave_service::Error>(KvService::new(kv)) }
            })
            .await
            .unwrap();
    });
}

/// The tokio server: the same codec and commands in a hand-written per-connection loop.
fn serve_tokio() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let kv = Kv::new();
    rt.block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], port_arg()));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        println!("listening on {}", listener.local_addr().unwrap());
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            conn.set_nodelay(true).unwrap();
            let service = KvService::new(kv.clone());
            tokio::spawn(async move {
                let mut codec = RespCodec::new();
                let mut rd = BytesMut::with_capacity(16 * 1024);
                let mut wr = BytesMut::with_capacity(16 * 1024);
                loop {
                    match conn.read_buf(&mut rd).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let now = std::time::Instant::now();
                    loop {
                        match codec.decode(&mut rd) {
                            Ok(Some(cmd)) => {
                                let reply = service.execute_at(&cmd, now);
                                codec.encode(reply, &mut wr).unwrap();
                            }
                            Ok(None) => break,
                            Err(_) => return,
                        }
                    }
                    if conn.write_all(&wr).await.is_err() {
                        return;
                    }
                    wr.clear();
                }
            });
        }
    });
}
