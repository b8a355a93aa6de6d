//! The HTTP server beside hyper 1.x on tokio's `current_thread` runtime, same run, driven by
//! `wrk` and `h2load`.
//!
//! ```text
//! cargo bench -p sheave-benches --bench http          # HTTP_BENCH_SECS=N per case (default 5)
//! ```
//!
//! Both servers run on one thread of this process and answer every request with the same
//! 13-byte `Hello, World!` (with `date` and `content-length`): **sheave** is `sheave_http::Server`
//! with a `service_fn`; **hyper** is hyper's own connection builder (`hyper_util`'s auto
//! builder, so both speak HTTP/1.1 and h2c on one port) over tokio. Cases:
//!
//! - HTTP/1.1, `wrk -t1 -c64 -d<secs> --latency`;
//! - HTTP/1.1 pipelined 16 deep (a wrk script sends 16 requests per write, TechEmpower style);
//! - HTTP/2, `h2load -c 16 -m 100 -n 200000`.
//!
//! Reported per case and server: requests per second, the server thread's CPU time per
//! request (user + system from `/proc/self/task/<tid>/schedstat`, so on loopback the kernel's
//! TCP work is included) and its user-space share (from `stat`), heap allocations per request
//! (a counting global allocator; only the server under load allocates while a case runs)
//! and, for wrk, p50/p99 latency; the ratio row is sheave ÷ hyper. Server threads are pinned
//! to core 0 and the load tools to core 1 with `taskset`. Wall-clock figures from a shared
//! machine are noisy: compare the ratio, and rerun.
//!
//! Then (`HTTP_BENCH_ONLY=servers,client,stack,callgrind` picks sections, all by default):
//!
//! - **client**: sheave's HTTP/1.1 client (a pool of 64, 64 requests in flight from one
//!   thread on the load core, every answer checked) against hyper's server, interleaved with
//!   `wrk -t1 -c64` (`HTTP_BENCH_ROUNDS=N`, default 3): a client that saturates before the
//!   server is no use for measuring one.
//! - **stack**: the tour's server-side middleware — a 1 s timeout, load shedding, a
//!   concurrency limit of 1,024 and stats — in front of the same handler, against the bare
//!   handler under `wrk -t1 -c64`, interleaved. The stack's stats must count every request
//!   wrk made, or the bench fails.
//! - **callgrind**: instructions per request in a child server (this executable with
//!   `SHEAVE_HTTP_BENCH_SERVE=bare|stack|hyper`) under callgrind, from `n` and `2n` requests of
//!   `h2load` (`HTTP_BENCH_CALLGRIND_N`, default 2,000), so start-up and connection set-up
//!   cancel: bare, stack and hyper over HTTP/1.1, bare and hyper over h2.
//!   `HTTP_BENCH_CALLGRIND_DIR=dir` keeps the profiles for `callgrind_annotate`.

use bytes::Bytes;
use http_body_util::Full;
use sheave_benches::{
    CountingAlloc, alloc_counts, current_tid, print_table, thread_cpu_ns, thread_user_sys_ticks,
};
use sheave_middleware::ServiceBuilderExt;
use sheave_middleware::stats::{Stats, StatsConfig, StatsHandle};
use sheave_service::ServiceBuilder;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const HELLO: &[u8] = b"Hello, World!";

async fn hello(
    _req: http::Request<sheave_http::Body>,
) -> Result<http::Response<Full<Bytes>>, sheave_service::Error> {
    Ok(http::Response::new(Full::new(Bytes::from_static(HELLO))))
}

/// Stores what its stats saw when the server drops it (at shutdown), for the bench thread.
struct Report {
    stats: StatsHandle,
    out: Arc<AtomicU64>,
}

impl Drop for Report {
    fn drop(&mut self) {
        let seen = self.stats.snapshot();
        // Successes only: a request the stack failed (timed out, shed) is not counted.
        self.out.store(seen.successes, Ordering::SeqCst);
    }
}

/// The stacked server: runs on its own thread and reports its stats' successes on shutdown.
struct Stacked {
    addr: SocketAddr,
    tid: u64,
    handle: sheave_proto::ServerHandle,
    thread: std::thread::JoinHandle<()>,
    successes: Arc<AtomicU64>,
}

/// The tour's server-side layers around the handler: a 1 s timeout, load shedding, a
/// concurrency limit of 1,024 per connection, and `stats` (shared by the thread's connections).
fn stacked(
    stats: StatsHandle,
) -> impl sheave_service::Service<
    http::Request<sheave_http::Body>,
    Response = http::Response<Full<Bytes>>,
    Error = sheave_service::Error,
> {
    ServiceBuilder::new()
        .timeout(Duration::from_secs(1))
        .load_shed()
        .concurrency_limit(1024)
        .layer_fn(move |inner| Stats::with_stats(inner, stats.clone()))
        .service(sheave_service::service_fn(hello))
}

/// Starts sheave's server with [`stacked`] around the handler.
fn start_sheave_stacked() -> Stacked {
    let (tx, rx) = mpsc::channel();
    let successes = Arc::new(AtomicU64::new(0));
    let out = successes.clone();
    let thread = std::thread::spawn(move || {
        let rt = sheave_core::Runtime::new().unwrap();
        rt.block_on(async move {
            let server = sheave_http::Server::bind("127.0.0.1:0".parse().unwrap())
                .build()
                .unwrap();
            tx.send((server.local_addr(), current_tid(), server.handle()))
                .unwrap();
            server
                .serve_with(move || {
                    let report = Report {
                        stats: StatsHandle::new(StatsConfig::default()),
                        out: out.clone(),
                    };
                    move |_peer: SocketAddr| {
                        let stats = report.stats.clone();
                        async move { Ok::<_, sheave_service::Error>(stacked(stats)) }
                    }
                })
                .await
                .unwrap();
        });
    });
    let (addr, tid, handle) = rx.recv().unwrap();
    Stacked {
        addr,
        tid,
        handle,
        thread,
        successes,
    }
}

/// Starts sheave's server on its own thread; returns its address and thread id.
fn start_sheave() -> (SocketAddr, u64) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = sheave_core::Runtime::new().unwrap();
        rt.block_on(async move {
            let server = sheave_http::Server::bind("127.0.0.1:0".parse().unwrap())
                .build()
                .unwrap();
            tx.send((server.local_addr(), current_tid())).unwrap();
            server
                .serve(|_peer: SocketAddr| async move {
                    Ok::<_, sheave_service::Error>(sheave_service::service_fn(hello))
                })
                .await
                .unwrap();
        });
    });
    rx.recv().unwrap()
}

/// Starts hyper on tokio's `current_thread` runtime on its own thread.
fn start_hyper() -> (SocketAddr, u64) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send((listener.local_addr().unwrap(), current_tid()))
                .unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(HELLO),
                        )))
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

/// One case: drives a server at an address, or `None` if the tool failed.
type Case<'a> = dyn Fn(SocketAddr) -> Option<Run> + 'a;

struct Run {
    requests: f64,
    rate: f64,
    p50: String,
    p99: String,
}

fn field_after<'a>(out: &'a str, marker: &str) -> Option<&'a str> {
    let at = out.find(marker)? + marker.len();
    out[at..].split_whitespace().next()
}

fn wrk(addr: SocketAddr, secs: u32, pipelined: bool) -> Option<Run> {
    let url = format!("http://{addr}/");
    let mut cmd = on_load_core("wrk");
    cmd.args(["-t1", "-c64", &format!("-d{secs}s"), "--latency"]);
    if pipelined {
        let script = std::env::temp_dir().join("sheave-wrk-pipeline16.lua");
        std::fs::write(
            &script,
            "init = function(args)\n  local r = {}\n  for i = 1, 16 do r[i] = wrk.format(nil, \"/\") end\n  req = table.concat(r)\nend\nrequest = function() return req end\n",
        )
        .ok()?;
        cmd.arg("-s").arg(script);
    }
    let out = cmd.arg(url).output().ok()?;
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let requests: f64 = out
        .lines()
        .find(|l| l.contains("requests in"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Run {
        requests,
        rate: field_after(&out, "Requests/sec:")?.parse().ok()?,
        p50: field_after(&out, " 50%")?.to_string(),
        p99: field_after(&out, " 99%")?.to_string(),
    })
}

fn h2load(addr: SocketAddr) -> Option<Run> {
    let out = on_load_core("h2load")
        .args([
            "-c",
            "16",
            "-m",
            "100",
            "-n",
            "200000",
            &format!("http://{addr}/"),
        ])
        .output()
        .ok()?;
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let succeeded: f64 = field_after(&out, "done, ")?.parse().ok()?;
    let rate: f64 = out
        .lines()
        .find(|l| l.starts_with("finished in"))?
        .split(", ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Run {
        requests: succeeded,
        rate,
        p50: "-".into(),
        p99: "-".into(),
    })
}

/// Whether section `name` runs: all do unless `HTTP_BENCH_ONLY` lists some (comma-separated:
/// `servers`, `client`, `stack`, `callgrind`).
fn wanted(name: &str) -> bool {
    std::env::var("HTTP_BENCH_ONLY").map_or(true, |only| only.split(',').any(|s| s == name))
}

fn main() {
    if let Ok(mode) = std::env::var(SERVE_ENV) {
        return serve_child(&mode);
    }
    let secs: u32 = std::env::var("HTTP_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    for tool in ["wrk", "h2load"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            eprintln!("skipped: {tool} is not installed (apt-get install wrk nghttp2-client)");
            return;
        }
    }
    let servers = [("sheave", start_sheave()), ("hyper/tokio", start_hyper())];
    for (_, (_, tid)) in &servers {
        pin(*tid, SERVER_CORE);
    }
    let rounds: u32 = std::env::var("HTTP_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    if wanted("servers") {
        servers_table(&servers, secs);
    }
    if wanted("client") {
        client_table(servers[1].1.0, secs, rounds);
    }
    if wanted("stack") {
        stack_table(servers[0].1, secs, rounds);
    }
    if wanted("callgrind") {
        callgrind_table();
    }
}

/// Every case against both servers.
fn servers_table(servers: &[(&str, (SocketAddr, u64)); 2], secs: u32) {
    let cases: [(&str, &Case<'_>); 3] = [
        ("HTTP/1.1 wrk -t1 -c64", &|a| wrk(a, secs, false)),
        ("HTTP/1.1 pipelined 16", &|a| wrk(a, secs, true)),
        ("HTTP/2 h2load -c16 -m100", &h2load),
    ];
    let mut rows = Vec::new();
    for (case, run) in cases {
        let mut results = Vec::new();
        for (name, (addr, tid)) in servers {
            let (m, _) = measure(*tid, || run(*addr), &format!("{case} against {name}"));
            results.push((name, m));
        }
        let (ours, peer) = (&results[0].1, &results[1].1);
        for (name, m) in &results {
            rows.push(vec![
                case.to_string(),
                name.to_string(),
                format!("{:.0}", m.run.rate),
                format!("{:.2} µs", m.cpu_ns / 1000.0),
                format!("{:.1}", m.allocs),
                format!("{:.0}%", m.user_share * 100.0),
                m.run.p50.clone(),
                m.run.p99.clone(),
            ]);
        }
        rows.push(vec![
            case.to_string(),
            "sheave ÷ hyper".into(),
            format!("{:.2}×", ours.run.rate / peer.run.rate),
            format!("{:.2}×", ours.cpu_ns / peer.cpu_ns),
            format!("{:.2}×", ours.allocs / peer.allocs),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    print_table(
        &[
            "case",
            "server",
            "req/s",
            "server CPU/req",
            "allocs/req",
            "user",
            "p50",
            "p99",
        ],
        &rows,
    );
}

/// The middleware stack, interleaved with the bare handler.
fn stack_table((bare_addr, bare_tid): (SocketAddr, u64), secs: u32, rounds: u32) {
    let stacked = start_sheave_stacked();
    pin(stacked.tid, SERVER_CORE);
    let sides = [
        ("bare handler", bare_addr, bare_tid),
        ("+ timeout, shed, limit, stats", stacked.addr, stacked.tid),
    ];
    let mut totals = [(0.0f64, 0.0f64, 0.0f64, 0.0f64); 2]; // requests, cpu ns, allocs, secs
    for _ in 0..rounds {
        for (i, (name, addr, tid)) in sides.iter().enumerate() {
            let (m, requests) = measure(*tid, || wrk(*addr, secs, false), name);
            totals[i].0 += requests;
            totals[i].1 += m.cpu_ns * requests;
            totals[i].2 += m.allocs * requests;
            totals[i].3 += requests / m.run.rate;
        }
    }
    stacked.handle.shutdown();
    stacked.thread.join().unwrap();
    let counted = stacked.successes.load(Ordering::SeqCst) as f64;
    assert!(
        counted >= totals[1].0,
        "the stack's stats saw {counted} successes, wrk {} responses",
        totals[1].0
    );
    let per = |t: (f64, f64, f64, f64)| (t.1 / t.0, t.2 / t.0, t.0 / t.3);
    let (bare, stack) = (per(totals[0]), per(totals[1]));
    let mut rows = Vec::new();
    for ((name, _, _), (cpu, allocs, rate)) in sides.iter().zip([bare, stack]) {
        rows.push(vec![
            name.to_string(),
            format!("{rate:.0}"),
            format!("{:.2} µs", cpu / 1000.0),
            format!("{allocs:.1}"),
        ]);
    }
    rows.push(vec![
        "stack ÷ bare".into(),
        format!("{:.3}×", stack.2 / bare.2),
        format!("{:.3}×", stack.0 / bare.0),
        format!("{:+.1}", stack.1 - bare.1),
    ]);
    println!();
    println!("HTTP/1.1 wrk -t1 -c64, {rounds} interleaved rounds of {secs} s each:");
    print_table(
        &["server (sheave)", "req/s", "server CPU/req", "allocs/req"],
        &rows,
    );
}

/// What one run measured on a server thread, per request.
struct Measured {
    run: Run,
    /// The part of the CPU time spent in user space (the rest is the kernel's).
    user_share: f64,
    cpu_ns: f64,
    allocs: f64,
}

/// Runs `run` and measures the server thread `tid`'s CPU and the process's allocations per
/// request; also returns the request count.
fn measure(tid: u64, run: impl FnOnce() -> Option<Run>, what: &str) -> (Measured, f64) {
    let (allocs_before, _) = alloc_counts();
    let before = thread_cpu_ns(tid);
    let ticks_before = thread_user_sys_ticks(tid);
    let result = run().unwrap_or_else(|| panic!("{what} failed"));
    let cpu = (thread_cpu_ns(tid) - before) as f64;
    let ticks_after = thread_user_sys_ticks(tid);
    let (allocs_after, _) = alloc_counts();
    let requests = result.requests;
    let (user, sys) = (
        (ticks_after.0 - ticks_before.0) as f64,
        (ticks_after.1 - ticks_before.1) as f64,
    );
    (
        Measured {
            user_share: user / (user + sys).max(1.0),
            cpu_ns: cpu / requests,
            allocs: (allocs_after - allocs_before) as f64 / requests,
            run: result,
        },
        requests,
    )
}

/// The core the servers run on; the load tools (wrk, h2load, our client) run on the other.
const SERVER_CORE: &str = "0";
const LOAD_CORE: &str = "1";

/// Pins thread `tid` of this process to `core` with `taskset` (best effort: a machine without
/// taskset, or with one core, runs unpinned, and says so).
fn pin(tid: u64, core: &str) {
    let pinned = Command::new("taskset")
        .args(["-pc", core, &tid.to_string()])
        .output()
        .is_ok_and(|o| o.status.success());
    if !pinned {
        eprintln!("note: could not pin thread {tid} to core {core}; running unpinned");
    }
}

/// `program args...` pinned to the load core (plain `program` when taskset is absent).
fn on_load_core(program: &str) -> Command {
    if Command::new("taskset").arg("-V").output().is_ok() {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", LOAD_CORE, program]);
        cmd
    } else {
        Command::new(program)
    }
}

/// sheave's HTTP/1.1 client as a load generator: 64 requests in flight (a pool of 64
/// connections, like `wrk -c64`) from one runtime thread pinned to the load core, for `secs`;
/// every response's status and body are checked. Also gives the client thread's CPU per
/// request.
fn our_client(addr: SocketAddr, secs: u32) -> Option<(Run, f64)> {
    use http_body_util::BodyExt;
    use sheave_service::{NewService, Service};
    const CONCURRENCY: usize = 64;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        pin(current_tid(), LOAD_CORE);
        let tid = current_tid();
        let rt = sheave_core::Runtime::new().unwrap();
        let result = rt.block_on(async move {
            let client = sheave_http::Client::<Full<Bytes>>::builder()
                .pool_size(CONCURRENCY)
                .new_service(addr)
                .await
                .ok()?;
            let cpu_before = thread_cpu_ns(tid);
            let start = std::time::Instant::now();
            let deadline = start + Duration::from_secs(secs.into());
            let done = std::cell::Cell::new(0u64);
            let failed = std::cell::Cell::new(0u64);
            let one = async || -> Result<(), sheave_service::Error> {
                let req = http::Request::get(http::Uri::from_static("/"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let permit = client.ready().await?;
                let response = client.call(permit, req).await?;
                let ok = response.status() == 200;
                let body = response.into_body().collect().await?.to_bytes();
                if !ok || body != HELLO {
                    return Err(sheave_service::Error::protocol("a wrong answer"));
                }
                Ok(())
            };
            let worker = async || {
                while std::time::Instant::now() < deadline {
                    match one().await {
                        Ok(()) => done.set(done.get() + 1),
                        Err(_) => failed.set(failed.get() + 1),
                    }
                }
            };
            futures::future::join_all((0..CONCURRENCY).map(|_| worker())).await;
            let elapsed = start.elapsed().as_secs_f64();
            let cpu = (thread_cpu_ns(tid) - cpu_before) as f64;
            if failed.get() > 0 {
                eprintln!("our client: {} failed requests", failed.get());
                return None;
            }
            let n = done.get() as f64;
            Some((
                Run {
                    requests: n,
                    rate: n / elapsed,
                    p50: "-".into(),
                    p99: "-".into(),
                },
                cpu / n,
            ))
        });
        let _ = tx.send(result);
    });
    rx.recv().ok()?
}

/// The environment variable that makes this executable a child server for callgrind:
/// `bare` or `stack`.
const SERVE_ENV: &str = "SHEAVE_HTTP_BENCH_SERVE";

/// Runs as a child server (see [`SERVE_ENV`]): prints its address, serves until SIGTERM
/// (`hyper`: hyper on tokio, until killed).
fn serve_child(mode: &str) {
    if mode == "hyper" {
        let (addr, _) = start_hyper();
        println!("{addr}");
        loop {
            std::thread::park();
        }
    }
    let stack = mode == "stack";
    let rt = sheave_core::Runtime::new().unwrap();
    rt.block_on(async move {
        let server = sheave_http::Server::bind("127.0.0.1:0".parse().unwrap())
            .shutdown_on_signals()
            .build()
            .unwrap();
        println!("{}", server.local_addr());
        let served = if stack {
            server
                .serve_with(move || {
                    let stats = StatsHandle::new(StatsConfig::default());
                    move |_peer: SocketAddr| {
                        let stats = stats.clone();
                        async move { Ok::<_, sheave_service::Error>(stacked(stats)) }
                    }
                })
                .await
        } else {
            server
                .serve(|_peer: SocketAddr| async move {
                    Ok::<_, sheave_service::Error>(sheave_service::service_fn(hello))
                })
                .await
        };
        served.unwrap();
    });
}

/// The instructions callgrind counts in a child server (`mode`) that serves `n` HTTP/1.1
/// requests from `h2load --h1 -c 8` and then stops on SIGTERM. `None` when valgrind or h2load
/// is missing or a request failed.
fn callgrind_server(mode: &str, n: u64, h2: bool) -> Option<u64> {
    use std::io::BufRead;
    // `HTTP_BENCH_CALLGRIND_DIR=dir` keeps the profiles (`dir/<mode>-<n>.out`), for
    // `callgrind_annotate`.
    let out_file = std::env::var("HTTP_BENCH_CALLGRIND_DIR")
        .map_or("/dev/null".to_string(), |dir| {
            format!("{dir}/{mode}-{}-{n}.out", if h2 { "h2" } else { "h1" })
        });
    let mut child = Command::new("valgrind")
        .args(["--tool=callgrind", "--cache-sim=no"])
        .arg(format!("--callgrind-out-file={out_file}"))
        .arg(std::env::current_exe().ok()?)
        .env(SERVE_ENV, mode)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    let addr: SocketAddr = line.trim().parse().ok()?;
    let out = Command::new("h2load")
        .args(if h2 {
            &["-c", "4", "-m", "10"][..]
        } else {
            &["--h1", "-c", "8", "-m", "1"][..]
        })
        .args(["-n", &n.to_string()])
        .arg(format!("http://{addr}/"))
        .output()
        .ok()?;
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    // "requests: N total, N started, N done, S succeeded, ...": S follows "done, ".
    let succeeded: u64 = field_after(&out, "done, ")?.parse().ok()?;
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let done = child.wait_with_output().ok()?;
    if succeeded != n {
        eprintln!("callgrind {mode} {n}: {succeeded} of {n} succeeded: {out}");
        return None;
    }
    let stderr = String::from_utf8_lossy(&done.stderr);
    stderr.lines().find_map(|l| {
        let (_, rest) = l.split_once("Collected :")?;
        rest.trim().parse().ok()
    })
}

/// Instructions per request in a child server (`mode`): from `n` and `2n` requests, so
/// start-up and the 8 connections' set-up cancel.
fn callgrind_per_request(mode: &str, n: u64, h2: bool) -> Option<f64> {
    let once = callgrind_server(mode, n, h2)?;
    let twice = callgrind_server(mode, 2 * n, h2)?;
    Some((twice as f64 - once as f64) / n as f64)
}

/// Our HTTP/1.1 client and `wrk`, both 64 requests in flight from one thread on the load
/// core, against hyper's server, interleaved: a client that saturates before the server is
/// of no use for measuring one.
fn client_table(hyper: SocketAddr, secs: u32, rounds: u32) {
    let (mut wrk_total, mut ours_total, mut ours_cpu) = ((0.0, 0.0), (0.0, 0.0), 0.0);
    for _ in 0..rounds {
        let w = wrk(hyper, secs, false).expect("wrk against hyper");
        wrk_total.0 += w.requests;
        wrk_total.1 += w.requests / w.rate;
        let (o, cpu) = our_client(hyper, secs).expect("our client against hyper");
        ours_total.0 += o.requests;
        ours_total.1 += o.requests / o.rate;
        ours_cpu += cpu * o.requests;
    }
    let (wrk_rate, ours_rate) = (wrk_total.0 / wrk_total.1, ours_total.0 / ours_total.1);
    println!();
    println!(
        "Load generators against hyper/tokio, HTTP/1.1, 64 in flight, {rounds} interleaved rounds of {secs} s:"
    );
    print_table(
        &["client", "req/s", "client CPU/req"],
        &[
            vec!["wrk -t1 -c64".into(), format!("{wrk_rate:.0}"), "-".into()],
            vec![
                "sheave_http::Client, pool 64".into(),
                format!("{ours_rate:.0}"),
                format!("{:.2} µs", ours_cpu / ours_total.0 / 1000.0),
            ],
            vec![
                "sheave ÷ wrk".into(),
                format!("{:.3}×", ours_rate / wrk_rate),
                String::new(),
            ],
        ],
    );
}

/// The middleware stack's cost in instructions per request (callgrind, `n` and `2n`
/// requests; `HTTP_BENCH_CALLGRIND_N`, default 2,000).
fn callgrind_table() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("skipped: valgrind is not installed (the instruction counts)");
        return;
    }
    let n: u64 = std::env::var("HTTP_BENCH_CALLGRIND_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let bare = callgrind_per_request("bare", n, false).expect("callgrind of the bare server");
    let stack = callgrind_per_request("stack", n, false).expect("callgrind of the stack");
    let hyper = callgrind_per_request("hyper", n, false).expect("callgrind of hyper's server");
    let bare_h2 = callgrind_per_request("bare", n, true).expect("callgrind of the bare h2 server");
    let hyper_h2 = callgrind_per_request("hyper", n, true).expect("callgrind of hyper's h2");
    println!();
    println!(
        "Server instructions per request (callgrind, {n} and {} requests from h2load; HTTP/1.1 unless marked h2):",
        2 * n
    );
    print_table(
        &["server", "instructions/req"],
        &[
            vec!["sheave, bare handler".into(), format!("{bare:.0}")],
            vec![
                "+ timeout, shed, limit, stats".into(),
                format!("{stack:.0}"),
            ],
            vec![
                "stack ÷ bare".into(),
                format!(
                    "{:.3}× ({:+.1}%)",
                    stack / bare,
                    (stack / bare - 1.0) * 100.0
                ),
            ],
            vec![
                "hyper/tokio (no header timeout)".into(),
                format!("{hyper:.0}"),
            ],
            vec![
                "sheave bare ÷ hyper".into(),
                format!("{:.3}×", bare / hyper),
            ],
            vec![
                "h2 (h2load -c4 -m10): sheave bare".into(),
                format!("{bare_h2:.0}"),
            ],
            vec!["h2: hyper/tokio".into(), format!("{hyper_h2:.0}")],
            vec![
                "h2: sheave ÷ hyper".into(),
                format!("{:.3}×", bare_h2 / hyper_h2),
            ],
        ],
    );
}
