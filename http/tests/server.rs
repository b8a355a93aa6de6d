//! The HTTP server against real clients (curl) and hostile bytes on real loopback sockets.
//! Every wait is bounded; nothing sleeps.

mod support;

use std::process::Command;
use support::{assert_serving, exchange, peer, start};

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn curl_gets_and_posts_over_http1_and_h2c_on_one_port() {
    if !peer("curl") {
        return;
    }
    let server = start();
    let base = format!("http://{}", server.addr);
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        assert_eq!(curl(&[version, &format!("{base}/")]), "hello, sheave");
        let posted = curl(&[version, "--data-binary", "a body", &format!("{base}/echo")]);
        assert_eq!(posted, "a body", "{version}");
        let chunked = curl(&[
            version,
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "chunked upload",
            &format!("{base}/echo"),
        ]);
        assert_eq!(chunked, "chunked upload", "{version}");
        let shown = curl(&[
            version,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            &format!("{base}/"),
        ]);
        let expected = if version == "--http1.1" { "1.1" } else { "2" };
        assert_eq!(shown, expected);
    }
}

#[test]
fn curl_reuses_one_kept_alive_connection_for_several_requests() {
    if !peer("curl") {
        return;
    }
    let server = start();
    let url = format!("http://{}/", server.addr);
    // `%{num_connects}` is the number of new connections each transfer made.
    let out = curl(&["--http1.1", "-w", " %{num_connects}\n", &url, &url, &url]);
    let connects: Vec<&str> = out.lines().map(|l| l.rsplit(' ').next().unwrap()).collect();
    assert_eq!(connects, ["1", "0", "0"], "{out}");
}

#[test]
fn handler_errors_become_statuses_and_keep_the_connection() {
    let server = start();
    let reqs = b"GET /timeout HTTP/1.1\r\nhost: t\r\n\r\n\
                 GET /overloaded HTTP/1.1\r\nhost: t\r\n\r\n\
                 GET /fail HTTP/1.1\r\nhost: t\r\n\r\n\
                 GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n";
    let reply = exchange(server.addr, reqs);
    let statuses: Vec<&str> = reply
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1"))
        .collect();
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 504 Gateway Timeout",
            "HTTP/1.1 503 Service Unavailable",
            "HTTP/1.1 500 Internal Server Error",
            "HTTP/1.1 200 OK"
        ],
        "{reply}"
    );
    assert!(
        reply.to_ascii_lowercase().contains("retry-after: 1"),
        "{reply}"
    );
}

#[test]
fn a_declared_body_over_the_limit_is_413_and_a_streamed_one_too() {
    let server = support::start_with(|b| b.max_body(1000));
    let big = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 5000\r\n\r\n",
    );
    assert!(big.starts_with("HTTP/1.1 413"), "{big}");
    let mut chunked =
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(b"258\r\n");
        chunked.extend_from_slice(&[b'x'; 600]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streamed = exchange(server.addr, &chunked);
    assert!(streamed.starts_with("HTTP/1.1 413"), "{streamed}");
    assert_serving(server.addr);
}

#[test]
fn a_handler_that_drops_the_body_unread_closes_that_connection_and_the_server_stays_healthy() {
    let server = start();
    let reply = exchange(
        server.addr,
        b"POST /drop HTTP/1.1\r\nhost: t\r\ncontent-length: 100000\r\n\r\npartial",
    );
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.ends_with("dropped"), "{reply}");
    assert_serving(server.addr);
}

/// Hostile requests: each gets an error status (or a close) on its own connection, never a
/// second (smuggled) request served, and the server keeps serving.
#[test]
fn hostile_requests_close_only_their_connection_with_the_right_status() {
    let server = start();
    let big_header = format!(
        "GET / HTTP/1.1\r\nhost: t\r\nx-big: {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "conflicting content-length",
            b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabcdeGET /smuggled HTTP/1.1\r\nhost: t\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "obfuscated transfer-encoding",
            b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: xchunked\r\n\r\n0\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nhost: t\r\nx-folded: a\r\n b\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        ("1 MiB header block", big_header.into_bytes(), "HTTP/1.1 431"),
        ("garbage", b"\x00\x01\x02garbage\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            "absurd chunk size",
            b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffffff\r\nx\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
    ];
    for (name, bytes, expected) in cases {
        let reply = exchange(server.addr, &bytes);
        assert!(reply.starts_with(expected), "{name}: {reply:?}");
        assert!(!reply.contains("smuggled"), "{name}: {reply:?}");
        assert_eq!(
            reply.matches("HTTP/1.1 ").count(),
            1,
            "{name}: one answer only: {reply:?}"
        );
        assert_serving(server.addr);
    }
}

#[test]
fn content_length_with_transfer_encoding_never_lets_a_request_be_smuggled() {
    let server = start();
    // The body is chunked (TE wins over CL, RFC 9112 §6.3); the bytes after the last chunk must
    // not be taken as a request, and the connection must not be kept.
    let reply = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 50\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: t\r\n\r\n",
    );
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply:?}");
    assert_serving(server.addr);
}

#[test]
fn a_slow_header_is_answered_408_at_the_header_read_timeout() {
    let server =
        support::start_with(|b| b.header_read_timeout(std::time::Duration::from_millis(300)));
    // Half a request, then nothing: the server closes (within the test's bound).
    let reply = exchange(server.addr, b"GET / HTTP/1.1\r\nhost: t\r\n");
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply:?}"
    );
    assert_serving(server.addr);
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn h2load_with_16_connections_of_100_streams_sees_no_error() {
    if !peer("h2load") {
        return;
    }
    let server = start();
    let url = format!("http://{}/", server.addr);
    let out = run("h2load", &["-c", "16", "-m", "100", "-n", "20000", &url]);
    assert!(
        out.contains(
            "20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored"
        ),
        "{out}"
    );
    assert!(out.contains("status codes: 20000 2xx"), "{out}");
}

#[test]
fn a_thousand_concurrent_streams_on_one_connection_all_succeed() {
    if !peer("h2load") {
        return;
    }
    let server = support::start_with(|b| b.max_concurrent_streams(1000));
    let url = format!("http://{}/", server.addr);
    let out = run("h2load", &["-c", "1", "-m", "1000", "-n", "5000", &url]);
    assert!(out.contains("5000 succeeded, 0 failed, 0 errored"), "{out}");
}

#[test]
fn wrk_over_http1_sees_no_error_and_no_bad_status() {
    if !peer("wrk") {
        return;
    }
    let server = start();
    let url = format!("http://{}/", server.addr);
    let out = run("wrk", &["-t1", "-c16", "-d1s", &url]);
    assert!(out.contains("requests in"), "{out}");
    assert!(!out.contains("Socket errors"), "{out}");
    assert!(!out.contains("Non-2xx"), "{out}");
}

#[test]
fn an_upload_to_a_handler_that_does_not_read_is_not_read_for_it() {
    use std::io::Write;
    // Hyper pulls the body only when the handler asks: a handler that does not read stops
    // the reads from the socket, so the sender stalls (no background read-and-discard).
    let server = support::start_with(|b| b.max_body(1 << 30));
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    conn.set_write_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    conn.write_all(b"POST /slow HTTP/1.1\r\nhost: t\r\ncontent-length: 1073741824\r\n\r\n")
        .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut written = 0usize;
    while written < 1 << 30 {
        match conn.write(&chunk) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    assert!(
        written < 64 * 1024 * 1024,
        "{written} bytes of an unread body were taken"
    );
    assert_serving(server.addr);
}

#[test]
fn a_readiness_error_is_503_with_retry_after_and_the_connection_goes_on() {
    use sheave_service::{Error, Service};
    /// A service that is never ready (a shed, an open breaker).
    struct Refusing;
    impl Service<http::Request<sheave_http::Body>> for Refusing {
        type Response = http::Response<http_body_util::Empty<bytes::Bytes>>;
        type Error = Error;
        type Permit = ();
        async fn ready(&self) -> Result<(), Error> {
            Err(Error::overloaded())
        }
        async fn call(
            &self,
            _: (),
            _: http::Request<sheave_http::Body>,
        ) -> Result<Self::Response, Error> {
            unreachable!("never ready")
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        sheave_core::Runtime::new().unwrap().block_on(async move {
            let server = sheave_http::Server::bind("127.0.0.1:0".parse().unwrap())
                .retry_after(std::time::Duration::from_secs(7))
                .build()
                .unwrap();
            tx.send((server.local_addr(), server.handle())).unwrap();
            server
                .serve(|_peer: std::net::SocketAddr| async move { Ok::<_, Error>(Refusing) })
                .await
                .unwrap();
        })
    });
    let (addr, handle) = rx.recv_timeout(support::WITHIN).unwrap();
    let reply = exchange(
        addr,
        b"GET / HTTP/1.1\r\nhost: t\r\n\r\nGET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(
        reply.matches("HTTP/1.1 503 Service Unavailable").count(),
        2,
        "{reply}"
    );
    assert_eq!(
        reply.to_ascii_lowercase().matches("retry-after: 7").count(),
        2,
        "{reply}"
    );
    handle.shutdown();
    thread.join().unwrap();
}

#[test]
fn an_idle_kept_alive_connection_is_closed_at_the_timeout_without_a_408() {
    use std::io::{Read, Write};
    let server =
        support::start_with(|b| b.header_read_timeout(std::time::Duration::from_millis(300)));
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(support::WITHIN)).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    // The answer, then (once idle past the timeout) the close: read to the end.
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no close: {e}"),
        }
    }
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert!(
        got.ends_with("hello, sheave"),
        "nothing after the answer: {got}"
    );
}

#[test]
fn two_threads_each_with_a_reuse_port_listener_serve_every_connection() {
    let server = support::start_on(2, |b| b.threads(2));
    // The kernel spreads connections over both listeners; every one is served.
    for _ in 0..16 {
        assert_serving(server.addr);
    }
}

#[test]
fn connections_past_max_connections_are_closed_and_the_open_one_is_served() {
    use std::io::{Read, Write};
    let server = support::start_with(|b| b.max_connections(1));
    let mut first = std::net::TcpStream::connect(server.addr).unwrap();
    first.set_read_timeout(Some(support::WITHIN)).unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0; 4096];
    let n = first.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    // The first is still open: a second is refused (closed without an answer).
    let refused = exchange(server.addr, b"GET / HTTP/1.1\r\nhost: t\r\n\r\n");
    assert_eq!(refused, "", "{refused}");
    first
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut rest = String::new();
    first.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200 OK"), "{rest}");
}

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    use std::io::{Read, Write};
    let server = start();
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(support::WITHIN)).unwrap();
    // 200 requests in one write: hyper answers them one by one, the answers leave together.
    let mut burst = Vec::new();
    for i in 0..199 {
        let path = if i % 2 == 0 { "/" } else { "/nothing" };
        burst.extend_from_slice(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes());
    }
    burst.extend_from_slice(b"GET /last HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    conn.write_all(&burst).unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply)
        .expect("all answers, then the close");
    assert_eq!(reply.matches("HTTP/1.1 200 OK").count(), 200, "{reply}");
    assert_eq!(reply.matches("hello, sheave").count(), 200);
    assert!(reply.ends_with("hello, sheave"));
}

#[test]
fn a_streamed_response_chunk_goes_out_before_the_next_is_made() {
    use bytes::Bytes;
    use sheave_core::sync::Notify;
    use sheave_service::{Error, service_fn};
    use std::io::{BufRead, BufReader, Write};
    use std::sync::Arc;
    // The handler sends a first chunk, then waits until the client has read it: were writes
    // held back for longer than the poll that made them, this would never finish.
    let first_read = Arc::new(Notify::new());
    let signal = first_read.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = sheave_core::Runtime::new().unwrap();
        rt.block_on(async move {
            let server = sheave_http::Server::bind("127.0.0.1:0".parse().unwrap())
                .build()
                .unwrap();
            tx.send((server.local_addr(), server.handle())).unwrap();
            server
                .serve(move |_peer: std::net::SocketAddr| {
                    let signal = signal.clone();
                    async move {
                        Ok::<_, Error>(service_fn(move |_req: http::Request<sheave_http::Body>| {
                            let signal = signal.clone();
                            async move {
                                let (mut body_tx, body) = sheave_http::body::channel(1);
                                sheave_core::spawn(async move {
                                    let read = signal.notified();
                                    body_tx.send(Bytes::from_static(b"first\n")).await?;
                                    read.await;
                                    body_tx.send(Bytes::from_static(b"second\n")).await
                                });
                                Ok::<_, Error>(http::Response::new(body))
                            }
                        }))
                    }
                })
                .await
                .unwrap();
        });
    });
    let (addr, handle) = rx.recv_timeout(support::WITHIN).unwrap();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(support::WITHIN)).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut lines = BufReader::new(conn);
    let mut line = String::new();
    while line != "first\n" {
        line.clear();
        lines
            .read_line(&mut line)
            .expect("the first chunk, in time");
        assert!(!line.is_empty(), "closed before the first chunk");
    }
    first_read.notify_waiters();
    let mut rest = String::new();
    while !rest.contains("second\n") {
        let mut more = String::new();
        if lines.read_line(&mut more).expect("the second chunk") == 0 {
            break;
        }
        rest.push_str(&more);
    }
    assert!(rest.contains("second\n"), "{rest}");
    handle.shutdown();
}
