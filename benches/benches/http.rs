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
//! TCP work is included) and, for wrk, p50/p99 latency; the ratio column is sheave ÷ hyper.
//! The load tool runs on the other core. Wall-clock figures from a shared machine are noisy:
//! compare the ratio, and rerun.

use bytes::Bytes;
use http_body_util::Full;
use sheave_benches::{current_tid, print_table, thread_cpu_ns};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc;

const HELLO: &[u8] = b"Hello, World!";

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
                    Ok::<_, sheave_service::Error>(sheave_service::service_fn(
                        |_req: http::Request<sheave_http::Body>| async move {
                            Ok::<_, sheave_service::Error>(http::Response::new(Full::new(
                                Bytes::from_static(HELLO),
                            )))
                        },
                    ))
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
            let before = thread_cpu_ns(*tid);
            let result = run(*addr).unwrap_or_else(|| panic!("{case} against {name} failed"));
            let cpu = (thread_cpu_ns(*tid) - before) as f64 / result.requests;
            results.push((name, result, cpu));
        }
        let (ours, peer) = (&results[0], &results[1]);
        for (name, r, cpu) in &results {
            rows.push(vec![
                case.to_string(),
                name.to_string(),
                format!("{:.0}", r.rate),
                format!("{:.2} µs", cpu / 1000.0),
                r.p50.clone(),
                r.p99.clone(),
            ]);
        }
        rows.push(vec![
            case.to_string(),
            "sheave ÷ hyper".into(),
            format!("{:.2}×", ours.1.rate / peer.1.rate),
            format!("{:.2}×", ours.2 / peer.2),
            String::new(),
            String::new(),
        ]);
    }
    print_table(
        &["case", "server", "req/s", "server CPU/req", "p50", "p99"],
        &rows,
    );
}
