//! `sheave-load` against real servers, each figure checked against the server's own count:
//! redis-server (`INFO stats`), the kv example's store (a counting service), nginx over
//! HTTP/1.1 and h2c (its access log); the coordinated-omission case (a server that stalls
//! once shows in open loop's p99, not in closed loop's); and the binary itself, run as a
//! process, with its JSON, HDR and SVG outputs read back.

#[path = "../../../examples/support/kv.rs"]
mod kv;
mod support;

use sheave_load::cli::{Mode, Protocol};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::{Nginx, RedisServer, config, have, kv_server, stalling_echo};

#[test]
fn against_redis_the_requests_sent_are_the_commands_redis_processed() {
    if !have("redis-server") {
        return;
    }
    let redis = RedisServer::start();
    let before = redis.commands_processed();
    let addr = redis.addr.to_string();
    let c = config(&[
        "-q",
        "-c",
        "4",
        "-P",
        "8",
        "-n",
        "20000",
        "-r",
        "1000",
        "--command",
        "SET key:__rand_int__ xyz",
        &addr,
    ]);
    let report = sheave_load::run(&c).unwrap();
    // The first INFO is counted by the second one; the second not yet.
    let processed = redis.commands_processed() - before - 1;
    assert_eq!(report.total.requests(), 20_000);
    assert_eq!(
        report.total.ok(),
        20_000,
        "{:?}",
        report.total.errors_by_kind()
    );
    assert_eq!(processed, 20_000, "redis processed {processed}");
    assert_eq!(report.endpoints[0].figures.requests(), 20_000);
    // 20,000 draws from 1,000 keys leave none out (the chance of one missing is e^-20 × 1000).
    assert_eq!(redis.command("DBSIZE"), "1000");
    assert!(!redis.command("GET key:000000000999").is_empty());
}

#[test]
fn against_two_redis_servers_each_endpoint_counts_what_its_server_processed() {
    if !have("redis-server") {
        return;
    }
    let servers = [RedisServer::start(), RedisServer::start()];
    let before: Vec<u64> = servers.iter().map(|s| s.commands_processed()).collect();
    let (a, b) = (servers[0].addr.to_string(), servers[1].addr.to_string());
    for policy in ["p2c-ewma", "p2c-pending", "round-robin"] {
        let c = config(&[
            "-q", "-c", "2", "-P", "4", "-n", "4000", "--policy", policy, &a, &b,
        ]);
        let report = sheave_load::run(&c).unwrap();
        assert_eq!(report.total.ok(), 4000, "{policy}");
        let attempts: u64 = report.endpoints.iter().map(|e| e.figures.requests()).sum();
        assert_eq!(attempts, 4000, "{policy}: no retries were needed");
        for e in &report.endpoints {
            assert!(
                e.figures.requests() > 400,
                "{policy}: {} got {}",
                e.addr,
                e.figures.requests()
            );
        }
        let _ = report;
    }
    // Over the three runs, each server processed what its endpoint counted (plus one INFO).
    let c = config(&["-q", "-c", "2", "-P", "4", "-n", "3000", &a, &b]);
    let before_last: Vec<u64> = servers.iter().map(|s| s.commands_processed()).collect();
    let report = sheave_load::run(&c).unwrap();
    for (i, server) in servers.iter().enumerate() {
        let processed = server.commands_processed() - before_last[i] - 1;
        assert_eq!(
            processed,
            report.endpoints[i].figures.requests(),
            "server {i}"
        );
    }
    assert!(servers[0].commands_processed() > before[0]);
}

#[test]
fn against_the_kv_store_every_request_is_served_once_and_the_error_replies_are_counted() {
    let (server, kv) = kv_server();
    let addr = server.addr.to_string();
    let c = config(&[
        "-q",
        "-c",
        "3",
        "-P",
        "16",
        "-n",
        "30000",
        "-r",
        "500",
        "--command",
        "INCR n:__rand_int__",
        &addr,
    ]);
    let report = sheave_load::run(&c).unwrap();
    assert_eq!(report.total.ok(), 30_000);
    assert_eq!(server.served.load(Ordering::Relaxed), 30_000);
    assert!(kv.len() <= 500 && kv.len() > 450, "{} keys", kv.len());
    // A command the store refuses: each an error reply, none a transport error.
    let c = config(&[
        "-q",
        "-c",
        "1",
        "-n",
        "100",
        "--command",
        "NOSUCHCOMMAND",
        &addr,
    ]);
    let report = sheave_load::run(&c).unwrap();
    assert_eq!(report.total.errors_by_kind(), vec![("error-reply", 100)]);
    assert_eq!(server.served.load(Ordering::Relaxed), 30_100);
}

#[test]
fn the_whole_stack_hedge_per_try_retries_and_each_policy_answers_every_request() {
    let (a, _kv_a) = kv_server();
    let (b, _kv_b) = kv_server();
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let mut requests = 0;
    for policy in ["p2c-pending", "p2c-ewma", "round-robin"] {
        let c = config(&[
            "-q",
            "-c",
            "2",
            "-P",
            "4",
            "-n",
            "3000",
            "--hedge",
            "0.9",
            "--per-try",
            "500ms",
            "--retries",
            "3",
            "--limit",
            "8",
            "--policy",
            policy,
            &a_addr,
            &b_addr,
        ]);
        assert_eq!(c.hedge, Some(0.9));
        let report = sheave_load::run(&c).unwrap();
        assert_eq!(
            report.total.ok(),
            3000,
            "{policy}: {:?}",
            report.total.errors_by_kind()
        );
        requests += 3000;
        // Every attempt is counted on the endpoint it went to (hedges and their cancelled
        // losers too), so the attempts are at least the requests...
        let attempts: u64 = report.endpoints.iter().map(|e| e.figures.requests()).sum();
        assert!(attempts >= 3000, "{policy}: {attempts} attempts");
        // ...and the servers served no more than the attempts (a cancelled loser may never
        // have been written), and at least every request.
        let served = a.served.load(Ordering::Relaxed) + b.served.load(Ordering::Relaxed);
        assert!(
            served >= requests,
            "{policy}: served {served} of {requests}"
        );
    }
}

#[test]
fn open_loop_at_a_modest_rate_offers_what_it_promised() {
    let (server, _kv) = kv_server();
    let c = config(&[
        "-q",
        "--rate",
        "2000",
        "-d",
        "1s",
        "-c",
        "2",
        "-P",
        "8",
        &server.addr.to_string(),
    ]);
    let report = sheave_load::run(&c).unwrap();
    // 2,000 a second for a second: the requests due from 0 to 1,000 ms inclusive.
    assert!(
        (1990..=2010).contains(&report.total.requests()),
        "{}",
        report.total.requests()
    );
    assert_eq!(
        report.total.errors(),
        0,
        "{:?}",
        report.total.errors_by_kind()
    );
    assert_eq!(
        server.served.load(Ordering::Relaxed),
        report.total.requests()
    );
    let json = sheave_load::report::json(&report);
    let figures: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(figures["mode"], "open");
    assert_eq!(figures["rate"], 2000.0);
}

#[test]
fn a_run_bounded_by_duration_stops_by_itself_and_counts_every_answer() {
    let (server, _kv) = kv_server();
    let c = config(&[
        "-q",
        "-c",
        "2",
        "-P",
        "2",
        "-d",
        "300ms",
        &server.addr.to_string(),
    ]);
    let started = std::time::Instant::now();
    let report = sheave_load::run(&c).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        report.elapsed >= Duration::from_millis(300),
        "{:?}",
        report.elapsed
    );
    assert!(report.total.ok() > 0);
    assert_eq!(
        server.served.load(Ordering::Relaxed),
        report.total.requests()
    );
}

#[test]
fn a_command_that_does_not_get_one_reply_is_refused_before_anything_is_sent() {
    let c = config(&[
        "-q",
        "-n",
        "10",
        "--command",
        "SUBSCRIBE news",
        "127.0.0.1:1",
    ]);
    let err = sheave_load::run(&c).unwrap_err().to_string();
    assert!(
        err.starts_with("--command:") && err.contains("exactly one reply"),
        "{err}"
    );
}

#[test]
fn an_address_nobody_listens_on_is_a_clear_error() {
    let port = support::free_port();
    let c = config(&[
        "-q",
        "-n",
        "10",
        "--connect-timeout",
        "500ms",
        &format!("127.0.0.1:{port}"),
    ]);
    let err = sheave_load::run(&c).unwrap_err().to_string();
    assert!(err.contains("could not connect"), "{err}");
}

#[test]
fn against_nginx_over_http1_and_h2c_the_access_log_counts_our_requests() {
    let Some(nginx) = Nginx::start() else {
        return;
    };
    let h1 = config(&[
        "-q",
        "--protocol",
        "http1",
        "-c",
        "4",
        "-n",
        "2000",
        "--path",
        "/a",
        &nginx.addr.to_string(),
    ]);
    let report = sheave_load::run(&h1).unwrap();
    assert_eq!(
        report.total.ok(),
        2000,
        "{:?}",
        report.total.errors_by_kind()
    );
    let h2 = config(&[
        "-q",
        "--protocol",
        "http2",
        "-c",
        "2",
        "-P",
        "8",
        "-n",
        "3000",
        "--path",
        "/b",
        &nginx.h2.to_string(),
    ]);
    let report = sheave_load::run(&h2).unwrap();
    assert_eq!(
        report.total.ok(),
        3000,
        "{:?}",
        report.total.errors_by_kind()
    );
    let missing = config(&[
        "-q",
        "--protocol",
        "http1",
        "-c",
        "1",
        "-n",
        "50",
        "--path",
        "/missing",
        &nginx.addr.to_string(),
    ]);
    let report = sheave_load::run(&missing).unwrap();
    assert_eq!(report.total.errors_by_kind(), vec![("error-reply", 50)]);

    let post = config(&[
        "-q",
        "--protocol",
        "http1",
        "-c",
        "2",
        "-n",
        "20",
        "--method",
        "POST",
        "--path",
        "/p?id=__rand_int__",
        "-r",
        "10",
        "-H",
        "X-Test: 1",
        "--body",
        "hello",
        &nginx.addr.to_string(),
    ]);
    let report = sheave_load::run(&post).unwrap();
    assert_eq!(report.total.ok(), 20, "{:?}", report.total.errors_by_kind());

    let log = nginx.logged();
    let count = |line: &str| log.iter().filter(|l| *l == line).count();
    assert_eq!(count("GET /a 200"), 2000, "{} lines", log.len());
    assert_eq!(count("GET /b 200"), 3000);
    assert_eq!(count("GET /missing 404"), 50);
    assert_eq!(count("POST /p 200"), 20);
    assert_eq!(log.len(), 5070, "nothing else was sent");
    // The POSTs carried the header, the body and a rendered placeholder below the keyspace.
    let posts: Vec<String> = nginx
        .details()
        .into_iter()
        .filter(|l| l.starts_with("POST"))
        .collect();
    assert_eq!(posts.len(), 20);
    for line in &posts {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[2..], ["1", "5"], "{line}");
        let id: u64 = fields[1].strip_prefix("id=").unwrap().parse().unwrap();
        assert!(id < 10 && fields[1].len() == 15, "{line}");
    }
}

#[test]
fn open_loop_shows_a_100ms_stall_in_its_p99_where_closed_loop_hides_it() {
    // Open loop: 1,000 requests a second for 1.5 s; the server stalls 200 ms after its 300th.
    // Every request due during the stall waits for its end, timed from when it was due:
    // about 10% of them wait 100 ms or more.
    let server = stalling_echo(300, Duration::from_millis(200));
    let open = config(&[
        "-q",
        "--protocol",
        "lines",
        "-c",
        "4",
        "-P",
        "64",
        "--rate",
        "1000",
        "-d",
        "1.5s",
        &server.addr.to_string(),
    ]);
    assert_eq!(open.mode, Mode::Open { rate: 1000.0 });
    let report = sheave_load::run(&open).unwrap();
    let total = &report.total;
    eprintln!(
        "open loop: {} requests, p50 {} us, p99 {} us, max {} us",
        total.requests(),
        total.percentile_us(0.5),
        total.percentile_us(0.99),
        total.max_us()
    );
    assert_eq!(total.errors(), 0, "{:?}", total.errors_by_kind());
    assert!(
        (1400..=1600).contains(&total.requests()),
        "{}",
        total.requests()
    );
    assert!(
        total.percentile_us(0.99) >= 100_000,
        "p99 {} us",
        total.percentile_us(0.99)
    );

    // Closed loop, one request at a time: the stall delays one request, and the loop sends
    // nothing meanwhile — so it is one sample in thousands, far from the p99.
    let server = stalling_echo(300, Duration::from_millis(200));
    let closed = config(&[
        "-q",
        "--protocol",
        "lines",
        "-c",
        "1",
        "-n",
        "5000",
        &server.addr.to_string(),
    ]);
    let report = sheave_load::run(&closed).unwrap();
    let total = &report.total;
    eprintln!(
        "closed loop: p99 {} us, max {} us",
        total.percentile_us(0.99),
        total.max_us()
    );
    assert_eq!(total.ok(), 5000);
    assert!(
        total.max_us() >= 150_000,
        "the stall is seen once: max {} us",
        total.max_us()
    );
    assert!(
        total.percentile_us(0.99) < 100_000,
        "p99 {} us",
        total.percentile_us(0.99)
    );
}

#[test]
fn raw_tcp_and_line_echo_check_what_comes_back() {
    let server = stalling_echo(u64::MAX, Duration::ZERO);
    let lines = config(&[
        "-q",
        "--protocol",
        "lines",
        "-c",
        "2",
        "-P",
        "4",
        "-n",
        "1000",
        "-r",
        "50",
        &server.addr.to_string(),
    ]);
    let report = sheave_load::run(&lines).unwrap();
    assert_eq!(
        report.total.ok(),
        1000,
        "{:?}",
        report.total.errors_by_kind()
    );
    assert_eq!(server.served.load(Ordering::Relaxed), 1000);

    let echo = support::raw_echo();
    let tcp = config(&[
        "-q",
        "--protocol",
        "tcp",
        "--size",
        "100",
        "-c",
        "2",
        "-P",
        "4",
        "-n",
        "1000",
        &echo.addr.to_string(),
    ]);
    assert_eq!(tcp.protocol, Protocol::Tcp);
    let report = sheave_load::run(&tcp).unwrap();
    assert_eq!(
        report.total.ok(),
        1000,
        "{:?}",
        report.total.errors_by_kind()
    );
    assert_eq!(echo.bytes.load(Ordering::Relaxed), 100_000);
}

#[test]
fn the_binary_prints_its_help_and_writes_json_hdr_and_svg_that_read_back() {
    let bin = env!("CARGO_BIN_EXE_sheave-load");
    let help = Command::new(bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--protocol",
        "--connections",
        "--pipeline",
        "--duration",
        "--requests",
        "--rate",
        "--json",
        "--hdr",
        "--plot",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }

    let bad = Command::new(bin).args(["-c", "0"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(why.contains("-c: must be at least 1"), "{why}");

    let (server, _kv) = kv_server();
    let dir = support::TempDir::new("outputs");
    let (json, hdr, svg) = (
        dir.0.join("run.json"),
        dir.0.join("run.hdr"),
        dir.0.join("run.svg"),
    );
    let out = Command::new(bin)
        .args(["-c", "2", "-P", "4", "-n", "500", "--json"])
        .arg(&json)
        .arg("--hdr")
        .arg(&hdr)
        .arg("--plot")
        .arg(&svg)
        .arg(server.addr.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("throughput:") && stdout.contains(&server.addr.to_string()),
        "{stdout}"
    );

    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(figures["requests"], 500);
    assert_eq!(figures["errors"], 0);
    assert_eq!(figures["protocol"], "resp");
    assert!(figures["rps"].as_f64().unwrap() > 0.0);
    let (p50, p99, p999, max) = (
        figures["p50_us"].as_u64().unwrap(),
        figures["p99_us"].as_u64().unwrap(),
        figures["p999_us"].as_u64().unwrap(),
        figures["max_us"].as_u64().unwrap(),
    );
    assert!(
        p50 > 0 && p50 <= p99 && p99 <= p999 && p999 <= max + max / 500,
        "{figures}"
    );
    let endpoints = figures["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["addr"], server.addr.to_string());
    assert_eq!(endpoints[0]["requests"], 500);
    assert_eq!(endpoints[0]["share"], 1.0);
    assert_eq!(server.served.load(Ordering::Relaxed), 500);

    use hdrhistogram::serialization::Deserializer;
    let histogram: hdrhistogram::Histogram<u64> = Deserializer::new()
        .deserialize(&mut std::fs::read(&hdr).unwrap().as_slice())
        .unwrap();
    assert_eq!(histogram.len(), 500);
    assert_eq!(histogram.max(), histogram.highest_equivalent(max));

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("throughput"),
        "{}",
        &svg[..100.min(svg.len())]
    );
}
