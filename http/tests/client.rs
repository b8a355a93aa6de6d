//! Our HTTP client against our server (HTTP/1.1 and h2c) and against nginx, a server no one
//! here wrote. Real loopback sockets; every wait bounded; nothing sleeps.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sheave_core::Runtime;
use sheave_http::Client;
use sheave_http::client::Version;
use sheave_service::{NewService, Service, ServiceExt, TryReady};
use std::net::SocketAddr;
use std::process::{Child, Command};
use support::{WITHIN, peer, start, start_with};

async fn get(client: &Client, path: &str) -> (u16, Bytes) {
    let req = http::Request::get(path)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.oneshot(req).await.expect("a response");
    let status = response.status().as_u16();
    (
        status,
        response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes(),
    )
}

fn both_versions(
    addr: SocketAddr,
    check: impl Fn(Client) -> std::pin::Pin<Box<dyn Future<Output = ()>>>,
) {
    for version in [Version::Http1, Version::Http2] {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let connector = Client::builder().version(version).pool_size(2);
            let client = sheave_core::time::timeout(WITHIN, connector.new_service(addr))
                .await
                .expect("connects in time")
                .expect("connects");
            sheave_core::time::timeout(WITHIN, check(client))
                .await
                .expect("in time");
        });
    }
}

#[test]
fn our_client_talks_to_our_server_over_http1_and_h2c_and_reuses_its_connections() {
    let server = start();
    both_versions(server.addr, |client| {
        Box::pin(async move {
            for _ in 0..20 {
                assert_eq!(get(&client, "/").await, (200, Bytes::from("hello, sheave")));
            }
            let post = http::Request::post("/echo")
                .body(Full::new(Bytes::from("echo me")))
                .unwrap();
            let response = client.oneshot(post).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "echo me");
            // Many at once: the pool (2 connections) or the h2 connection takes them all.
            let all = futures::future::join_all((0..50).map(|_| get(&client, "/"))).await;
            assert!(all.iter().all(|(s, _)| *s == 200));
        })
    });
    // Pooled, not one connection per request: far fewer than the 71 requests.
    assert!(
        server.handle.connections() <= 3,
        "{}",
        server.handle.connections()
    );
}

#[test]
fn an_unread_response_body_gives_its_pool_slot_back() {
    let server = start();
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::builder().pool_size(1).build(server.addr);
        for _ in 0..5 {
            let req = http::Request::get("/")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = client.oneshot(req).await.unwrap();
            drop(response); // unread
            assert!(client.try_ready().is_ready(), "the only slot came back");
        }
        assert_eq!(get(&client, "/").await.0, 200);
    });
}

#[test]
fn an_unreachable_endpoint_is_unavailable_and_retryable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let err = Client::<Full<Bytes>>::builder()
            .new_service(addr)
            .await
            .unwrap_err();
        assert!(err.is_unavailable() && err.is_retryable(), "{err}");
    });
}

#[test]
fn a_body_past_the_replay_cap_is_sent_once_and_the_error_says_why() {
    use sheave_http::body::{DEFAULT_REPLAY_CAP, Replay};
    use sheave_http::classify::{HttpRetry, SentOnceLayer};
    use sheave_middleware::retry::{RetryConfig, RetryLayer};
    use sheave_service::ServiceBuilder;
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // A peer that takes the request's first bytes and hangs up: a broken connection, which
    // an idempotent request would be retried after.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
        }
    });
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::<Replay<Full<Bytes>>>::builder()
            .new_service(addr)
            .await
            .expect("connects");
        let svc = ServiceBuilder::new()
            .layer(RetryLayer::new(RetryConfig::new().max_attempts(3)).policy(HttpRetry::new()))
            .layer(SentOnceLayer)
            .service(client);
        let body = Replay::new(
            Full::new(Bytes::from(vec![7u8; 1 << 20])),
            DEFAULT_REPLAY_CAP,
        )
        .await
        .unwrap();
        let req = http::Request::put("/big").body(body).unwrap();
        let err = sheave_core::time::timeout(WITHIN, svc.oneshot(req))
            .await
            .expect("in time")
            .expect_err("the peer hung up");
        assert!(err.is_non_retryable(), "{err}");
        assert_eq!(
            err.context(),
            Some("not retried: the request body (1048576 bytes) was past the replay cap of 64 KiB"),
            "{err}"
        );
    });
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection: sent once"
    );
}

/// nginx with a generated config on a free loopback port, stopped on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    h2_port: u16,
    /// h2c with `http2_max_concurrent_streams 2`.
    h2_narrow_port: u16,
    _dir: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers (a killed master leaves
        // them running, holding the test's output open).
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn nginx() -> Option<Nginx> {
    let binary = ["/usr/sbin/nginx", "nginx"].into_iter().find(|b| {
        Command::new(b)
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(binary) = binary else {
        peer("nginx");
        return None;
    };
    // Two free ports, held together while they are picked so they differ (nginx binds
    // them right after; a port taken in between shows as nginx exiting, reported below).
    let (port, h2, narrow) = {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
            c.local_addr().unwrap().port(),
        )
    };
    let dir = std::env::temp_dir().join(format!("sheave-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {dir};\n proxy_temp_path {dir};\n\
         fastcgi_temp_path {dir};\n uwsgi_temp_path {dir};\n scgi_temp_path {dir};\n\
         server {{\n  listen 127.0.0.1:{port};\n  listen 127.0.0.1:{h2} http2;\n\
         location / {{ return 200 \"hello from nginx\"; }}\n }}\n\
         server {{\n  listen 127.0.0.1:{narrow} http2;\n  http2_max_concurrent_streams 2;\n\
         location / {{ return 200 \"hello from nginx\"; }}\n }}\n}}\n",
        dir = dir.display(),
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut child = Command::new(binary)
        .args(["-c", dir.join("nginx.conf").to_str().unwrap(), "-p"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nginx starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Wait (bounded) until it accepts: a connect is the event.
    let deadline = std::time::Instant::now() + WITHIN;
    while [port, h2, narrow]
        .iter()
        .any(|p| std::net::TcpStream::connect(SocketAddr::new(addr.ip(), *p)).is_err())
    {
        let log = || std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            panic!("nginx exited ({status}): {}", log());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nginx did not start: {}",
            log()
        );
        std::thread::yield_now();
    }
    Some(Nginx {
        child,
        addr,
        h2_port: h2,
        h2_narrow_port: narrow,
        _dir: dir,
    })
}

#[test]
fn our_client_talks_to_nginx_over_http1_and_h2c() {
    let Some(nginx) = nginx() else {
        return;
    };
    for (version, port) in [
        (Version::Http1, nginx.addr.port()),
        (Version::Http2, nginx.h2_port),
    ] {
        let addr = SocketAddr::new(nginx.addr.ip(), port);
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let client = Client::builder().version(version).build(addr);
            for _ in 0..10 {
                let (status, body) = sheave_core::time::timeout(WITHIN, get(&client, "/"))
                    .await
                    .expect("in time");
                assert_eq!(
                    (status, body),
                    (200, Bytes::from("hello from nginx")),
                    "{version:?}"
                );
            }
            let permit = client.ready().await.unwrap();
            drop(permit);
        });
    }
}

#[test]
fn over_h2c_a_handler_that_drops_a_large_body_unread_still_answers_and_the_connection_lives() {
    let server = start();
    both_versions(server.addr, |client| {
        Box::pin(async move {
            // Just under the default 4 MiB body limit, never read by `/drop`: HTTP/2 resets
            // the stream's upload after the answer, HTTP/1.1 closes that connection.
            let big = Bytes::from(vec![b'x'; 4 * 1024 * 1024 - 1]);
            let req = http::Request::post("/drop").body(Full::new(big)).unwrap();
            let response = client.oneshot(req).await.expect("an answer");
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "dropped");
            assert_eq!(get(&client, "/").await, (200, Bytes::from("hello, sheave")));
        })
    });
}

/// Holds `limit` permits and checks the next `try_ready` is busy; gives one back and checks a
/// permit is free again; then runs `3 * limit` requests at once, all answered.
async fn ready_stops_at(client: &Client, limit: usize, hello: &str) {
    // One request first: the server's SETTINGS frame is read before its response.
    assert_eq!(
        get(client, "/").await,
        (200, Bytes::from(hello.to_string()))
    );
    assert_eq!(
        client.capacity(),
        limit,
        "the peer's SETTINGS_MAX_CONCURRENT_STREAMS"
    );
    let mut held: Vec<_> = Vec::new();
    for _ in 0..limit {
        held.push(client.ready().await.unwrap());
    }
    assert!(
        matches!(client.try_ready(), TryReady::Busy),
        "ready past the peer's stream limit"
    );
    assert_eq!(client.in_flight(), Some(limit));
    held.pop();
    assert!(matches!(client.try_ready(), TryReady::Ready(_)));
    drop(held);
    let all = futures::future::join_all((0..3 * limit).map(|_| get(client, "/"))).await;
    assert!(all.iter().all(|(s, _)| *s == 200), "{all:?}");
}

#[test]
fn over_h2c_ready_follows_our_servers_max_concurrent_streams() {
    let server = start_with(|b| b.max_concurrent_streams(3));
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let connector = Client::builder().version(Version::Http2).max_streams(100);
        let client = connector.new_service(server.addr).await.unwrap();
        sheave_core::time::timeout(WITHIN, ready_stops_at(&client, 3, "hello, sheave"))
            .await
            .expect("in time");
        // Our own bound wins when it is the lower one.
        let narrow = Client::builder()
            .version(Version::Http2)
            .max_streams(2)
            .new_service(server.addr)
            .await
            .unwrap();
        sheave_core::time::timeout(WITHIN, ready_stops_at(&narrow, 2, "hello, sheave"))
            .await
            .expect("in time");
    });
}

#[test]
fn over_h2c_ready_follows_nginxs_http2_max_concurrent_streams() {
    let Some(nginx) = nginx() else {
        return;
    };
    let addr = SocketAddr::new(nginx.addr.ip(), nginx.h2_narrow_port);
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::builder().version(Version::Http2).build(addr);
        sheave_core::time::timeout(WITHIN, ready_stops_at(&client, 2, "hello from nginx"))
            .await
            .expect("in time");
    });
}

/// Connects with `Version::Auto` and checks the version it settled on, then that requests
/// are answered with `hello`.
fn auto_speaks(addr: SocketAddr, expected: Version, hello: &str) {
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let client = sheave_core::time::timeout(
            WITHIN,
            Client::builder().version(Version::Auto).new_service(addr),
        )
        .await
        .expect("in time")
        .expect("connects");
        assert_eq!(client.version(), Some(expected), "{addr}");
        for _ in 0..5 {
            let got = sheave_core::time::timeout(WITHIN, get(&client, "/"))
                .await
                .expect("in time");
            assert_eq!(got, (200, Bytes::from(hello.to_string())), "{expected:?}");
        }
    });
}

#[test]
fn auto_speaks_h2c_to_our_server_and_http1_when_h2_is_off() {
    let both = start();
    auto_speaks(both.addr, Version::Http2, "hello, sheave");
    let h1_only = start_with(|b| b.http2(false));
    auto_speaks(h1_only.addr, Version::Http1, "hello, sheave");
    // A client built without connecting probes on its first request, once.
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::builder().version(Version::Auto).build(h1_only.addr);
        assert_eq!(client.version(), None);
        for _ in 0..3 {
            assert_eq!(get(&client, "/").await.0, 200);
        }
        assert_eq!(client.version(), Some(Version::Http1));
    });
    // The probe plus the pooled connection(s), not a probe per request.
    assert!(
        h1_only.handle.connections() <= 4,
        "{}",
        h1_only.handle.connections()
    );
}

#[test]
fn auto_speaks_h2c_to_nginx_with_http2_and_http1_without() {
    let Some(nginx) = nginx() else {
        return;
    };
    auto_speaks(nginx.addr, Version::Http1, "hello from nginx");
    auto_speaks(
        SocketAddr::new(nginx.addr.ip(), nginx.h2_port),
        Version::Http2,
        "hello from nginx",
    );
}

/// Waits (bounded by [`WITHIN`]) until `done` holds, looking every 10 ms on the runtime's
/// timer; false if it never did.
async fn until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + WITHIN;
    while !done() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        sheave_core::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    true
}

/// A burst of `n` requests at once: each finds no idle connection, so the pool opens `n`.
async fn burst(client: &Client, n: usize) {
    let all = futures::future::join_all((0..n).map(|_| get(client, "/"))).await;
    assert!(all.iter().all(|(s, _)| *s == 200));
}

#[test]
fn after_a_burst_idle_connections_past_the_idle_timeout_are_closed() {
    let server = start();
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let idle_timeout = std::time::Duration::from_millis(500);
        let client = Client::builder()
            .pool_size(16)
            .idle_timeout(idle_timeout)
            .build(server.addr);
        let started = std::time::Instant::now();
        burst(&client, 16).await;
        let pool = client.pool();
        assert_eq!(pool.in_use, 0);
        assert_eq!(server.handle.connections(), 16, "the burst opened 16");
        assert!(
            pool.idle == 16 || started.elapsed() >= idle_timeout,
            "all 16 idle at first: {pool:?}"
        );
        // Idle past the timeout: the client closes them, and the server sees the closes.
        assert!(
            until(|| client.pool().idle == 0).await,
            "{:?}",
            client.pool()
        );
        assert!(
            until(|| server.handle.connections() == 0).await,
            "the server still has {} open",
            server.handle.connections()
        );
        // Traffic at a steady pace keeps its one connection, and it works as before.
        for _ in 0..5 {
            assert_eq!(get(&client, "/").await.0, 200);
        }
        assert_eq!(client.pool().idle, 1);
        assert_eq!(server.handle.connections(), 1);
    });
}

#[test]
fn past_max_idle_a_connection_given_back_is_closed_at_once() {
    let server = start();
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::builder()
            .pool_size(12)
            .max_idle(3)
            .build(server.addr);
        let probe = client.pool_probe();
        burst(&client, 12).await;
        assert_eq!(
            probe.stats(),
            Some(sheave_http::client::PoolStats { idle: 3, in_use: 0 })
        );
        assert!(
            until(|| server.handle.connections() == 3).await,
            "the server still has {} open",
            server.handle.connections()
        );
        // The three are reused: no new connection for requests one at a time.
        for _ in 0..10 {
            assert_eq!(get(&client, "/").await.0, 200);
        }
        assert_eq!(server.handle.connections(), 3);
        drop(client);
        assert_eq!(probe.stats(), None, "the probe does not keep the client");
        assert!(until(|| server.handle.connections() == 0).await);
    });
}
