//! `sheave-load` against the load generators it stands beside: is the tool the bottleneck?
//!
//! ```text
//! flock /work/heavy.lock cargo bench -p sheave-benches --bench load   # LOAD_BENCH_ROUNDS=N (3)
//! ```
//!
//! What is measured, each pair in the same run, interleaved round by round (sheave-load,
//! then the peer, then again), the server pinned to core 0 and the load generator to core 1
//! (`taskset`), each generator a child process on one thread:
//!
//! - **RESP**: `redis-benchmark -t get -c 50 -P {1,16} -n N` against `redis-server`, and
//!   `sheave-load -c 50 -P {1,16} -n N` with its default command (`GET key:__rand_int__`
//!   without `-r`: one key, as redis-benchmark's `-t get`);
//! - **HTTP/1.1**: `wrk -t1 -c64 -d3s` against nginx (one worker, `return 200`), and
//!   `sheave-load --protocol http1 -c 64 -d 3s`;
//! - **HTTP/2**: `h2load -c 4 -m 16 -n N` against nginx's h2c listener, and
//!   `sheave-load --protocol http2 -c 4 -P 16 -n N`.
//!
//! Reported per case: requests per second (the median over rounds; sheave ÷ peer ≥ 1 means
//! sheave-load drives at least as much load) and the generator's CPU time per request (user +
//! system of the child, read as the growth of this process's `cutime + cstime` in
//! `/proc/self/stat` across the child's life, 10 ms ticks; sheave ÷ peer ≤ 1 means it spends
//! no more). sheave-load runs with its whole documented stack — deadline, retry budget,
//! concurrency limit, the balancer (its default policy, p2c over pending requests), a pool
//! per address — because that is what it
//! is for. It runs as this bench binary re-executed (`SHEAVE_LOAD_CHILD=1`), which calls the
//! same library code as the `sheave-load` command.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER_CORE: &str = "0";
const CLIENT_CORE: &str = "1";

fn main() {
    if std::env::var_os("SHEAVE_LOAD_CHILD").is_some() {
        return child();
    }
    let rounds: usize = std::env::var("LOAD_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut rows = Vec::new();
    if have("redis-server") && have("redis-benchmark") {
        let redis = Server::redis();
        let addr = format!("127.0.0.1:{}", redis.port);
        for pipeline in [1u32, 16] {
            let requests = if pipeline == 1 { 300_000 } else { 2_000_000 };
            let p = pipeline.to_string();
            let n = requests.to_string();
            rows.push(pair(
                &format!("RESP GET -c 50 -P {pipeline}"),
                "redis-benchmark",
                rounds,
                &["-q", "-c", "50", "-P", &p, "-n", &n, &addr],
                &[
                    "redis-benchmark",
                    "-p",
                    &redis.port.to_string(),
                    "-c",
                    "50",
                    "-P",
                    &p,
                    "-n",
                    &n,
                    "-t",
                    "get",
                    "-q",
                ],
                &|out| redis_benchmark_rps(out, requests as f64),
            ));
        }
    }
    if have("nginx") {
        let nginx = Server::nginx();
        if have("wrk") {
            let url = format!("http://127.0.0.1:{}/", nginx.port);
            let addr = format!("127.0.0.1:{}", nginx.port);
            rows.push(pair(
                "HTTP/1.1 -c 64",
                "wrk",
                rounds,
                &["-q", "--protocol", "http1", "-c", "64", "-d", "3s", &addr],
                &["wrk", "-t1", "-c64", "-d3s", &url],
                &wrk_rps,
            ));
        }
        if have("h2load") {
            let url = format!("http://127.0.0.1:{}/", nginx.h2_port);
            let addr = format!("127.0.0.1:{}", nginx.h2_port);
            rows.push(pair(
                "HTTP/2 -c 4 -m 16",
                "h2load",
                rounds,
                &[
                    "-q",
                    "--protocol",
                    "http2",
                    "-c",
                    "4",
                    "-P",
                    "16",
                    "-n",
                    "400000",
                    &addr,
                ],
                &["h2load", "-c", "4", "-m", "16", "-n", "400000", &url],
                &h2load_rps,
            ));
        }
    }
    println!(
        "\nsheave-load beside its peers, {rounds} rounds interleaved, server on core {SERVER_CORE}, \
         generator on core {CLIENT_CORE}"
    );
    println!(
        "{:<22} {:<16} {:>12} {:>12} {:>7} {:>11} {:>11} {:>7}  target (>= 1.0x req/s, <= 1.0x CPU)",
        "case",
        "peer",
        "peer req/s",
        "sheave req/s",
        "ratio",
        "peer us/req",
        "sheave us/req",
        "ratio"
    );
    for r in &rows {
        let rps_ratio = r.sheave.rps / r.peer.rps;
        let cpu_ratio = r.sheave.cpu_us / r.peer.cpu_us;
        let met = if rps_ratio >= 1.0 && cpu_ratio <= 1.0 {
            "met"
        } else {
            "not met"
        };
        println!(
            "{:<22} {:<16} {:>12.0} {:>12.0} {:>6.2}x {:>11.2} {:>11.2} {:>6.2}x  {met}",
            r.case,
            r.peer_name,
            r.peer.rps,
            r.sheave.rps,
            rps_ratio,
            r.peer.cpu_us,
            r.sheave.cpu_us,
            cpu_ratio
        );
    }
    if rows.is_empty() {
        println!("load bench skipped: needs redis-server + redis-benchmark, nginx + wrk / h2load");
    }
}

/// Runs sheave-load (the library behind the command) with the arguments after the name.
fn child() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match sheave_load::cli::parse(&args) {
        Ok(sheave_load::cli::Parsed::Run(c)) => c,
        other => panic!("bad sheave-load arguments {args:?}: {other:?}"),
    };
    let report = sheave_load::run(&config).expect("sheave-load run");
    // One line the parent reads: requests, errors, seconds.
    println!(
        "{} {} {}",
        report.total.requests(),
        report.total.errors(),
        report.elapsed.as_secs_f64()
    );
}

struct Measured {
    rps: f64,
    cpu_us: f64,
}

struct Row {
    case: String,
    peer_name: &'static str,
    sheave: Measured,
    peer: Measured,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pair(
    case: &str,
    peer_name: &'static str,
    rounds: usize,
    sheave_args: &[&str],
    peer_cmd: &[&str],
    peer_rps: &dyn Fn(&str) -> Option<(f64, f64)>,
) -> Row {
    let (mut s_rps, mut s_cpu, mut p_rps, mut p_cpu) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let exe = std::env::current_exe().expect("this bench");
        let mut cmd = pinned(exe.to_str().unwrap());
        cmd.args(sheave_args).env("SHEAVE_LOAD_CHILD", "1");
        let (out, cpu) = run_counted(cmd);
        let mut fields = out.split_whitespace();
        let mut next = || fields.next().and_then(|f| f.parse::<f64>().ok());
        let (requests, errors, secs) = (next(), next(), next());
        let (requests, errors, secs) = (
            requests.expect("requests"),
            errors.expect("errors"),
            secs.expect("seconds"),
        );
        assert_eq!(errors, 0.0, "{case}: sheave-load saw errors");
        s_rps.push(requests / secs);
        s_cpu.push(cpu.as_secs_f64() * 1e6 / requests);

        let mut cmd = pinned(peer_cmd[0]);
        cmd.args(&peer_cmd[1..]);
        let (out, cpu) = run_counted(cmd);
        let (rps, requests) =
            peer_rps(&out).unwrap_or_else(|| panic!("{case}: cannot read {peer_name}: {out}"));
        p_rps.push(rps);
        p_cpu.push(cpu.as_secs_f64() * 1e6 / requests);
        eprintln!(
            "{case} round {}: sheave-load {:.0} req/s {:.2} us/req, {peer_name} {:.0} req/s {:.2} us/req",
            round + 1,
            s_rps[round],
            s_cpu[round],
            p_rps[round],
            p_cpu[round]
        );
    }
    Row {
        case: case.to_string(),
        peer_name,
        sheave: Measured {
            rps: median(s_rps),
            cpu_us: median(s_cpu),
        },
        peer: Measured {
            rps: median(p_rps),
            cpu_us: median(p_cpu),
        },
    }
}

fn pinned(program: &str) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", CLIENT_CORE, program]);
    cmd
}

/// This process's children's CPU time (user + system) so far, from `/proc/self/stat`.
fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the comm: state is field 3, so cutime (16) and cstime (17) are at 13 and 14.
    let ticks: u64 = fields[13].parse::<u64>().unwrap() + fields[14].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// Runs `cmd` to its end; its stdout and the CPU time it used.
fn run_counted(mut cmd: Command) -> (String, Duration) {
    let before = children_cpu();
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed after {:?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stdout)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        children_cpu() - before,
    )
}

/// `GET: 1106194.75 requests per second, p50=0.415 msec` (after `\r` progress lines); the
/// request count is the `-n` it was given.
fn redis_benchmark_rps(out: &str, requests: f64) -> Option<(f64, f64)> {
    let line = out
        .split(['\r', '\n'])
        .rfind(|l| l.contains("requests per second"))?;
    let rps: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((rps, requests))
}

/// `Requests/sec: 12345.67`, and `N requests in 3.00s`.
fn wrk_rps(out: &str) -> Option<(f64, f64)> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let requests = out
        .lines()
        .find(|l| l.contains("requests in"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((rps, requests))
}

/// `finished in 1.23s, 325000.00 req/s, ...` and `requests: 400000 total, ...`.
fn h2load_rps(out: &str) -> Option<(f64, f64)> {
    let finished = out.lines().find(|l| l.starts_with("finished in"))?;
    let rps = finished
        .split(", ")
        .find(|p| p.ends_with("req/s"))?
        .trim_end_matches(" req/s")
        .trim()
        .parse()
        .ok()?;
    let requests = out
        .lines()
        .find(|l| l.starts_with("requests:"))?
        .split(", ")
        .find(|p| p.trim().ends_with("succeeded"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((rps, requests))
}

fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("{program} not installed: its cases are skipped");
    }
    found
}

/// A server pinned to the server core, killed on drop.
struct Server {
    child: Child,
    port: u16,
    h2_port: u16,
    _dir: Option<std::path::PathBuf>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::yield_now();
    }
}

impl Server {
    fn redis() -> Server {
        let port = free_port();
        let child = Command::new("taskset")
            .args([
                "-c",
                SERVER_CORE,
                "redis-server",
                "--port",
                &port.to_string(),
            ])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        wait_for(port);
        Server {
            child,
            port,
            h2_port: 0,
            _dir: None,
        }
    }

    fn nginx() -> Server {
        let (port, h2) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("sheave-load-bench-nginx-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n keepalive_requests 100000000;\n\
             client_body_temp_path {d};\n proxy_temp_path {d};\n fastcgi_temp_path {d};\n\
             uwsgi_temp_path {d};\n scgi_temp_path {d};\n\
             server {{\n  listen 127.0.0.1:{port};\n  listen 127.0.0.1:{h2} http2;\n\
             http2_max_concurrent_streams 128;\n\
             location / {{ return 200 \"hello from nginx\"; }}\n }}\n}}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("taskset")
            .args(["-c", SERVER_CORE, "nginx", "-c"])
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx");
        wait_for(port);
        wait_for(h2);
        Server {
            child,
            port,
            h2_port: h2,
            _dir: Some(dir),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM, so nginx's master stops its worker too.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        if let Some(dir) = &self._dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
