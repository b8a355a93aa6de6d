//! The admin listener: `/metrics` read by a strict Prometheus text-format checker, with the
//! values matching the requests sent over two runtime threads; `/endpoints`, `/healthz`, and
//! `/drain`, after which the proxy stops.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use sheave_core::Runtime;
use sheave_http::{Body, Server};
use sheave_service::{Error, service_fn};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A sheave-http backend answering `ok` (runs until the test process ends).
fn http_backend() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        Runtime::new().unwrap().block_on(async move {
            let server = Server::bind("127.0.0.1:0".parse().unwrap())
                .build()
                .unwrap();
            tx.send(server.local_addr()).unwrap();
            server
                .serve(|_peer: SocketAddr| async move {
                    Ok::<_, Error>(service_fn(|_req: http::Request<Body>| async move {
                        Ok::<_, Error>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }))
                })
                .await
                .unwrap();
        })
    });
    rx.recv().unwrap()
}

/// A TCP echo backend on a thread.
fn echo_backend() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out.split_once("\r\n\r\n").unwrap().1.to_string())
}

/// One sample: its name, its labels, its value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Checks `text` strictly as the Prometheus text format 0.0.4 — one `# TYPE` per family,
/// before its samples; every sample of a declared family (histograms: `_bucket`, `_sum`,
/// `_count`); well-formed labels; no sample twice; histogram buckets cumulative, with a
/// `+Inf` bucket equal to `_count` — and returns the samples.
#[track_caller]
fn check_exposition(text: &str) -> Vec<Sample> {
    assert!(
        text.ends_with('\n'),
        "the exposition must end with a newline"
    );
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "two # TYPE for {name}"
            );
            assert!(
                !samples
                    .iter()
                    .any(|(n, _, _)| family_of(n, &types) == Some(name.to_string())),
                "# TYPE {name} after its samples"
            );
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                let mut labels = BTreeMap::new();
                for pair in body.split(',') {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label in {line:?}"));
                    assert!(
                        labels.insert(k.to_string(), v.to_string()).is_none(),
                        "{line}"
                    );
                }
                (name.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        assert!(
            family_of(&name, &types).is_some(),
            "sample {name} has no # TYPE before it"
        );
        assert!(seen.insert(series.to_string()), "{series} appears twice");
        samples.push((name, labels, value));
    }
    // Histograms: per series (labels without `le`), cumulative buckets ending in +Inf = count.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for (name, labels, value) in &samples {
            if *name == format!("{family}_bucket") {
                let mut key = labels.clone();
                let le = key.remove("le").expect("a bucket without le");
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                series.entry(key).or_default().push((le, *value));
            }
        }
        assert!(!series.is_empty(), "histogram {family} has no buckets");
        for (key, buckets) in series {
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family} {key:?}: buckets not cumulative: {buckets:?}"
            );
            let (le, inf) = *buckets.last().unwrap();
            assert!(le.is_infinite(), "{family} {key:?} has no +Inf bucket");
            let count = samples
                .iter()
                .find(|(n, l, _)| *n == format!("{family}_count") && *l == key)
                .unwrap_or_else(|| panic!("{family} {key:?} has no _count"))
                .2;
            assert_eq!(inf, count, "{family} {key:?}: +Inf bucket != count");
        }
    }
    samples
}

fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_string());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).map(String::as_str) == Some("histogram")
        {
            return Some(base.to_string());
        }
    }
    None
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
        .2
}

#[test]
fn metrics_count_what_was_sent_and_pass_a_strict_format_check() {
    let (web, echo) = (http_backend(), echo_backend());
    let proxy = support::proxy(&format!(
        r#"
        threads = 2
        [admin]
        address = "127.0.0.1:0"

        [[listener]]
        name = "web"
        address = "127.0.0.1:0"
        protocol = "http"
        cluster = "site"

        [[listener]]
        name = "l4"
        address = "127.0.0.1:0"
        protocol = "tcp"
        cluster = "echo"

        [[cluster]]
        name = "site"
        policy = "round-robin"
        endpoints = ["{web}"]

        [[cluster]]
        name = "echo"
        policy = "round-robin"
        endpoints = ["{echo}"]
        "#
    ));
    let admin = proxy.admin_addr().unwrap();
    // 30 HTTP requests on 10 connections (spread by the kernel over the two threads), and
    // 5 TCP connections.
    for _ in 0..10 {
        let mut conn = TcpStream::connect(proxy.addr("web").unwrap()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        for i in 0..3 {
            let close = if i == 2 { "connection: close\r\n" } else { "" };
            write!(conn, "GET / HTTP/1.1\r\nhost: x\r\n{close}\r\n").unwrap();
        }
        let mut out = String::new();
        conn.read_to_string(&mut out).unwrap();
        assert_eq!(out.matches("HTTP/1.1 200").count(), 3, "{out}");
    }
    for _ in 0..5 {
        let mut conn = TcpStream::connect(proxy.addr("l4").unwrap()).unwrap();
        conn.write_all(b"hi").unwrap();
        let mut back = [0u8; 2];
        conn.read_exact(&mut back).unwrap();
    }
    // The last TCP connection's close may still be on its way: the counts that are final
    // once a response was read are checked.
    let (status, text) = get(admin, "GET", "/metrics");
    assert_eq!(status, 200);
    let samples = check_exposition(&text);
    assert_eq!(
        value(
            &samples,
            "sheave_proxy_requests_total",
            &[("cluster", "site")]
        ),
        30.0
    );
    assert_eq!(
        value(
            &samples,
            "sheave_proxy_requests_total",
            &[("cluster", "echo")]
        ),
        5.0
    );
    assert_eq!(
        value(
            &samples,
            "sheave_proxy_request_duration_seconds_count",
            &[("cluster", "site")]
        ),
        30.0
    );
    assert_eq!(
        value(
            &samples,
            "sheave_proxy_endpoint_attempts_total",
            &[("cluster", "site")]
        ),
        30.0
    );
    assert_eq!(
        value(
            &samples,
            "sheave_proxy_retries_total",
            &[("cluster", "site")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &samples,
            "sheave_proxy_request_failures_total",
            &[("cluster", "site"), ("kind", "timeout")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &samples,
            "sheave_proxy_connections_accepted_total",
            &[("listener", "web")]
        ),
        10.0
    );
    assert_eq!(
        value(
            &samples,
            "sheave_proxy_connections_accepted_total",
            &[("listener", "l4")]
        ),
        5.0
    );
    assert_eq!(
        value(
            &samples,
            "sheave_proxy_endpoint_connections_total",
            &[("cluster", "echo")]
        ),
        5.0
    );

    // Per endpoint: an attempt histogram counting every attempt, nothing in flight or
    // ejected now; each cluster's retry budgets (one per thread, 100 reserve retries each at
    // the defaults, plus 0.2 per request sent on that thread, rounded down).
    for (cluster, attempts) in [("site", 30.0), ("echo", 5.0)] {
        let labels = [("cluster", cluster)];
        assert_eq!(
            value(
                &samples,
                "sheave_proxy_endpoint_attempt_duration_seconds_count",
                &labels
            ),
            attempts
        );
        assert!(
            value(
                &samples,
                "sheave_proxy_endpoint_attempt_duration_seconds_sum",
                &labels
            ) > 0.0
        );
        assert_eq!(
            value(&samples, "sheave_proxy_endpoint_ejected", &labels),
            0.0
        );
    }
    assert_eq!(
        value(
            &samples,
            "sheave_proxy_endpoint_pending",
            &[("cluster", "site")]
        ),
        0.0
    );
    // The upstream pools: every response was read, so nothing is in use; each thread's
    // client keeps the one connection it reused (a thread the kernel gave no request still
    // holds the one it opened when it connected).
    let pool = |state| {
        value(
            &samples,
            "sheave_proxy_endpoint_pool_connections",
            &[("cluster", "site"), ("state", state)],
        )
    };
    assert_eq!(pool("in_use"), 0.0);
    assert!((1.0..=2.0).contains(&pool("idle")), "{}", pool("idle"));
    assert_eq!(
        value(
            &samples,
            "sheave_proxy_hedges_total",
            &[("cluster", "site")]
        ),
        0.0
    );
    let budget = |cluster| {
        value(
            &samples,
            "sheave_proxy_retry_budget_available",
            &[("cluster", cluster)],
        )
    };
    // 30 requests over 2 threads add 5 or 6 (floor(0.2 × n) on each); 5 connections 0 or 1.
    assert!(
        (205.0..=206.0).contains(&budget("site")),
        "{}",
        budget("site")
    );
    assert!(
        (200.0..=201.0).contains(&budget("echo")),
        "{}",
        budget("echo")
    );

    let (status, json) = get(admin, "GET", "/endpoints");
    assert_eq!(status, 200);
    assert!(
        json.starts_with("{\"echo\":[{\"endpoint\":") && json.contains("\"site\":["),
        "{json}"
    );
    assert!(
        json.contains("\"state\":\"active\",\"attempts\":30"),
        "{json}"
    );
    assert_eq!(get(admin, "GET", "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(admin, "GET", "/drain").0, 405);
    assert_eq!(get(admin, "POST", "/drain"), (202, "draining\n".into()));
    // The drain stops every listener; the proxy then stops by itself.
    let web = proxy.addr("web").unwrap();
    proxy.wait();
    assert!(
        TcpStream::connect(web).is_err(),
        "the web listener still accepts after the drain"
    );
}
