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
//! TCP work is included), heap allocations per request (a counting global allocator; only the
//! server under load allocates while a case runs) and, for wrk, p50/p99 latency; the ratio
//! column is sheave ÷ hyper. The load tool runs on the other core. Wall-clock figures from a
//! shared machine are noisy: compare the ratio, and rerun.
//!
//! A second table puts the tour's server-side middleware — a 1 s timeout, load shedding, a
//! concurrency limit of 1,024 and stats — in front of the same handler, and compares it with
//! the bare handler under `wrk -t1 -c64`, the two runs interleaved (bare, stack, bare,
//! stack, ...; `HTTP_BENCH_ROUNDS=N`, default 3) so a shared machine's drift hits both.
//! The stack's stats must count every request wrk made, or the bench fails.

use bytes::Bytes;
use http_body_util::Full;
use sheave_benches::{CountingAlloc, alloc_counts, current_tid, print_table, thread_cpu_ns};
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

/// Starts sheave's server with the tour's server-side layers around the handler (a 1 s
/// timeout, load shedding, a concurrency limit of 1,024 per connection, stats shared by the
/// thread's connections).
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
                        async move {
                            let svc = ServiceBuilder::new()
                                .timeout(Duration::from_secs(1))
                                .load_shed()
                                .concurrency_limit(1024)
                                .layer_fn(move |inner| Stats::with_stats(inner, stats.clone()))
                                .service(sheave_service::service_fn(hello));
                            Ok::<_, sheave_service::Error>(svc)
                        }
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
    let mut cmd = Command::new("wrk");
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
    let out = Command::new("h2load")
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

fn main() {
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
    let cases: [(&str, &Case<'_>); 3] = [
        ("HTTP/1.1 wrk -t1 -c64", &|a| wrk(a, secs, false)),
        ("HTTP/1.1 pipelined 16", &|a| wrk(a, secs, true)),
        ("HTTP/2 h2load -c16 -m100", &h2load),
    ];
    let mut rows = Vec::new();
    for (case, run) in cases {
        let mut results = Vec::new();
        for (name, (addr, tid)) in &servers {
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
        ]);
    }
    print_table(
        &[
            "case",
            "server",
            "req/s",
            "server CPU/req",
            "allocs/req",
            "p50",
            "p99",
        ],
        &rows,
    );

    // The middleware stack, interleaved with the bare handler.
    let rounds: u32 = std::env::var("HTTP_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let stacked = start_sheave_stacked();
    let (bare_addr, bare_tid) = servers[0].1;
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
    cpu_ns: f64,
    allocs: f64,
}

/// Runs `run` and measures the server thread `tid`'s CPU and the process's allocations per
/// request; also returns the request count.
fn measure(tid: u64, run: impl FnOnce() -> Option<Run>, what: &str) -> (Measured, f64) {
    let (allocs_before, _) = alloc_counts();
    let before = thread_cpu_ns(tid);
    let result = run().unwrap_or_else(|| panic!("{what} failed"));
    let cpu = (thread_cpu_ns(tid) - before) as f64;
    let (allocs_after, _) = alloc_counts();
    let requests = result.requests;
    (
        Measured {
            cpu_ns: cpu / requests,
            allocs: (allocs_after - allocs_before) as f64 / requests,
            run: result,
        },
        requests,
    )
}
