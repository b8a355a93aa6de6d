//! Real clients through the proxy: curl, wrk and h2load over HTTP to nginx backends (which
//! count what they serve in their access logs), redis-py over RESP to real `redis-server`
//! shards (every key checked on the shard it hashes to), and a reload under load that loses
//! no request.

mod support;

use sheave_proto::resp::Frame;
use sheave_proxy::config::Config;
use sheave_proxy::ketama::{KeyHash, Ring};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::{Conn, Nginx, RedisServer, bulk, endpoints, have, have_nginx, proxy, run};

fn http_config(backends: &[&Nginx], version: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        r#"
        [[listener]]
        name = "web"
        address = "127.0.0.1:0"
        protocol = "http"
        cluster = "web"

        [[cluster]]
        name = "web"
        policy = "round-robin"
        http_version = "{version}"
        endpoints = [{}]
        "#,
        list.join(", ")
    )
}

/// h2load's summary holds `n` requests all done and all 2xx.
#[track_caller]
fn h2load_all_succeeded(text: &str, n: u64) {
    let line =
        format!("requests: {n} total, {n} started, {n} done, {n} succeeded, 0 failed, 0 errored");
    assert!(text.contains(&line), "{text}");
    assert!(text.contains(&format!("status codes: {n} 2xx")), "{text}");
}

#[test]
fn curl_wrk_and_h2load_through_the_proxy_to_nginx_backends() {
    if !have_nginx()
        || !have("curl", "curl")
        || !have("wrk", "wrk")
        || !have("h2load", "nghttp2-client")
    {
        return;
    }
    let (a, b) = (Nginx::start("a").unwrap(), Nginx::start("b").unwrap());
    let proxy = proxy(&http_config(&[&a, &b], "1.1"));
    let url = format!("http://{}/", proxy.addr("web").unwrap());

    // curl, both versions downstream: nginx's answer, with the proxy's Via.
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let out = run(Command::new("curl").args(["-s", "-i", "--max-time", "20", version, &url]));
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(out.status.success(), "{out:?}");
        assert!(
            text.starts_with("http/1.1 200") || text.starts_with("http/2 200"),
            "{text}"
        );
        assert!(
            text.contains("via: ") && text.contains("sheave-proxy"),
            "{text}"
        );
        assert!(
            text.ends_with("hello from a") || text.ends_with("hello from b"),
            "{text}"
        );
    }
    let before = a.served() + b.served();
    assert_eq!(before, 2, "one request each from curl");

    // h2load, HTTP/2 downstream (h1 upstream): an exact count, every one a 2xx.
    let out = run(Command::new("h2load").args(["-n", "2000", "-c", "4", "-m", "10", &url]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    h2load_all_succeeded(&text, 2000);
    assert_eq!(a.served() + b.served() - before, 2000);

    // wrk, HTTP/1.1 keep-alive: every answer a 2xx, no socket error; nginx served each one.
    let before = a.served() + b.served();
    let out = run(Command::new("wrk").args(["-t1", "-c8", "-d1s", &url]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "{text}"
    );
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no request count in {text}"));
    assert!(requests > 100, "{text}");
    let served = a.served() + b.served() - before;
    println!("wrk: {requests} answered, nginx served {served}");
    // wrk counts the answers it read; up to one request per connection may have been
    // answered as it stopped.
    assert!(
        (requests..=requests + 8).contains(&served),
        "wrk {requests}, nginx {served}"
    );
    assert!(
        a.served() > requests / 4 && b.served() > requests / 4,
        "round robin: a {}, b {}",
        a.served(),
        b.served()
    );

    proxy.drain();
    proxy.wait();
}

#[test]
fn a_reload_under_load_loses_no_request() {
    if !have_nginx() || !have("h2load", "nghttp2-client") {
        return;
    }
    let (a, b) = (Nginx::start("a").unwrap(), Nginx::start("b").unwrap());
    let proxy = proxy(&http_config(&[&a], "1.1"));
    let url = format!("http://{}/", proxy.addr("web").unwrap());
    let n = 20_000u64;
    // Closed loop, HTTP/1.1 keep-alive, 8 connections; h2load prints its progress each 10%.
    let mut load = Command::new("h2load")
        .args(["--h1", "-n", &n.to_string(), "-c", "8", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn h2load");
    let mut text = String::new();
    let mut reloads = Vec::new();
    for line in BufReader::new(load.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // At 20%: everything to b; at 50%: a and b.
        let next = match line.trim() {
            "progress: 20% done" => Some(vec![&b]),
            "progress: 50% done" => Some(vec![&a, &b]),
            _ => None,
        };
        if let Some(backends) = next {
            let served_a = a.served();
            let config = Config::parse(&http_config(&backends, "1.1")).unwrap();
            assert_eq!(proxy.reload(config).unwrap(), 1, "one cluster changed");
            reloads.push(served_a);
        }
        text.push_str(&line);
        text.push('\n');
    }
    assert!(load.wait().unwrap().success(), "{text}");
    assert_eq!(reloads.len(), 2, "h2load's progress lines: {text}");
    h2load_all_succeeded(&text, n);
    // nginx served every request, each exactly once; b served only after the first reload.
    // nginx logs a request after its response is sent: the last lines may trail h2load's
    // exit, so wait (bounded) for the log to reach n before comparing.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ((a.served() + b.served()) as u64) < n && std::time::Instant::now() < until {
        std::thread::yield_now();
    }
    assert_eq!((a.served() + b.served()) as u64, n);
    println!(
        "reload under load: a had served {reloads:?} at the reloads; a {}, b {} in all",
        a.served(),
        b.served()
    );
    assert!(
        reloads[0] > 0 && b.served() > 0,
        "a {reloads:?}, b {}",
        b.served()
    );
    assert!(
        a.served() > reloads[1],
        "a served nothing after the second reload"
    );
    proxy.drain();
    proxy.wait();
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/redis_py_proxy.py")
}

/// Where redis-py is installed: `$SHEAVE_PEER_CLIENTS/python` (default
/// `target/peer-clients/python` of the workspace, where `.ci/run` puts it).
fn python_path() -> PathBuf {
    std::env::var_os("SHEAVE_PEER_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peer-clients"))
        .join("python")
}

fn have_redis_py() -> bool {
    let found = Command::new("python3")
        .env("PYTHONPATH", python_path())
        .args(["-c", "import redis"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let why = format!(
            "redis-py not usable: python3 or the library under {} is missing \
             (pip install --target target/peer-clients/python redis)",
            python_path().display()
        );
        if std::env::var("SHEAVE_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{why}, but SHEAVE_REQUIRE_PEERS=1");
        }
        eprintln!("skipped: {why}");
    }
    found
}

#[test]
fn redis_py_through_the_proxy_resp2_and_resp3_every_key_on_its_shard() {
    if !have("redis-server", "redis-server") || !have_redis_py() {
        return;
    }
    let shards: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let proxy = proxy(&format!(
        r#"
        [[listener]]
        name = "redis"
        address = "127.0.0.1:0"
        protocol = "resp"
        cluster = "cache"

        [[cluster]]
        name = "cache"
        hash = "md5"
        endpoints = {}
        "#,
        endpoints(&shards)
    ));
    let addr = proxy.addr("redis").unwrap();
    let out = run(Command::new("python3")
        .env("PYTHONPATH", python_path())
        .arg(script())
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().last() == Some("all ok"),
        "redis-py through the proxy:\n{stdout}\n{stderr}"
    );
    for protocol in [2, 3] {
        for case in [
            "ping",
            "set and get 300 keys",
            "a pipeline of 1000 commands",
            "mget, mset, exists, delete across shards",
            "a command that cannot be proxied is a clean error",
        ] {
            let line = format!("ok resp{protocol}: {case}");
            assert!(stdout.lines().any(|l| l == line), "no {line:?}:\n{stdout}");
        }
    }
    // Every key the script wrote is on the shard the ring names, and only there.
    let names: Vec<String> = shards.iter().map(|s| s.addr.to_string()).collect();
    let servers: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let ring = Ring::new(&servers, KeyHash::Md5, None);
    let mut direct: Vec<Conn> = shards.iter().map(|s| Conn::open(s.addr)).collect();
    let keys = (0..300).map(|i| (format!("user:{i}"), i.to_string()));
    let pipe = (0..500).map(|i| (format!("pipe:{i}"), i.to_string()));
    let mut per_shard = [0; 3];
    for (key, value) in keys.chain(pipe) {
        let home = ring.shard(key.as_bytes());
        per_shard[home] += 1;
        for (s, shard) in direct.iter_mut().enumerate() {
            let got = shard.cmd(&["GET", &key]);
            match s == home {
                true => assert_eq!(got, bulk(&value), "{key} missing on its shard {s}"),
                false => assert_eq!(got, Frame::Null, "{key} on shard {s}, not its {home}"),
            }
        }
    }
    assert!(per_shard.iter().all(|&n| n > 100), "{per_shard:?}");
    proxy.drain();
    proxy.wait();
}
