//! `Content-Length`/`Transfer-Encoding` sanity over real sockets: a client behind `Framing`
//! never sends a message with conflicting framing, and a server behind it never writes one
//! (the caller gets a 500 instead, and the connection stays usable).

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sheave_core::Runtime;
use sheave_http::framing::FramingLayer;
use sheave_http::{Body, Client, Server};
use sheave_service::{Error, ErrorKind, Layer, NewService, ServiceExt, service_fn};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::WITHIN;

/// A server whose handler counts requests; `/bad-length` answers a 2-byte body with
/// `Content-Length: 5`, `/both` sets `Content-Length` and `Transfer-Encoding`, the rest say
/// hello. Every handler sits behind `Framing`.
fn serve(seen: Arc<AtomicUsize>) -> (SocketAddr, sheave_proto::ServerHandle) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = Runtime::new().unwrap();
        rt.block_on(async move {
            let server = Server::bind("127.0.0.1:0".parse().unwrap())
                .build()
                .unwrap();
            tx.send((server.local_addr(), server.handle())).unwrap();
            server
                .serve(move |_peer: SocketAddr| {
                    let seen = seen.clone();
                    async move {
                        Ok::<_, Error>(FramingLayer.layer(service_fn(
                            move |req: http::Request<Body>| {
                                seen.fetch_add(1, Ordering::SeqCst);
                                async move {
                                    let mut response =
                                        http::Response::new(Full::new(Bytes::from_static(b"ok")));
                                    let h = response.headers_mut();
                                    match req.uri().path() {
                                        "/bad-length" => {
                                            h.insert("content-length", "5".parse().unwrap());
                                        }
                                        "/both" => {
                                            h.insert("content-length", "2".parse().unwrap());
                                            h.insert(
                                                "transfer-encoding",
                                                "chunked".parse().unwrap(),
                                            );
                                        }
                                        _ => {}
                                    }
                                    Ok::<_, Error>(response)
                                }
                            },
                        )))
                    }
                })
                .await
                .unwrap();
        })
    });
    rx.recv_timeout(WITHIN).expect("the server starts")
}

/// Reads one response with a `Content-Length` (or until close) from `conn`.
fn read_response(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end].lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if let Some(length) = length
                && out.len() >= end + 4 + length
            {
                return text;
            }
        }
        match conn.read(&mut buf) {
            Ok(0) => return text,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading: {e} (so far {text:?})"),
        }
    }
}

#[test]
fn a_server_behind_framing_answers_500_instead_of_writing_conflicting_framing() {
    let seen = Arc::new(AtomicUsize::new(0));
    let (addr, handle) = serve(seen.clone());
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(WITHIN)).unwrap();
    for path in ["/bad-length", "/both", "/"] {
        write!(conn, "GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
        let reply = read_response(&mut conn);
        let lower = reply.to_ascii_lowercase();
        if path == "/" {
            assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
            assert!(reply.ends_with("ok"), "{reply}");
        } else {
            assert!(reply.starts_with("HTTP/1.1 500"), "{path}: {reply}");
            assert!(!lower.contains("transfer-encoding"), "{path}: {reply}");
            assert!(!lower.contains("content-length: 5"), "{path}: {reply}");
        }
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "one keep-alive connection served all three"
    );
    handle.shutdown();
}

#[test]
fn a_client_behind_framing_never_sends_conflicting_framing() {
    let seen = Arc::new(AtomicUsize::new(0));
    let (addr, handle) = serve(seen.clone());
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::<Full<Bytes>>::builder()
            .new_service(addr)
            .await
            .expect("connects");
        let client = FramingLayer.layer(client);
        let bad = [
            ("content-length", "5", "transfer-encoding", "chunked"),
            ("content-length", "5", "content-length", "6"),
            ("content-length", "4", "x-ok", "1"),
            ("transfer-encoding", "chunked, chunked", "x-ok", "1"),
        ];
        for (a, va, b, vb) in bad {
            let req = http::Request::post("/")
                .header(a, va)
                .header(b, vb)
                .body(Full::new(Bytes::from_static(b"hello")))
                .unwrap();
            let err = sheave_core::time::timeout(WITHIN, client.oneshot(req))
                .await
                .expect("in time")
                .expect_err("refused");
            assert_eq!(
                err.kind(),
                ErrorKind::InvalidRequest,
                "{a}: {va}, {b}: {vb}: {err}"
            );
            assert!(err.to_string().contains("request framing"), "{err}");
        }
        assert_eq!(
            seen.load(Ordering::SeqCst),
            0,
            "nothing refused reached the server"
        );
        // Agreeing duplicates are folded and sent.
        let req = http::Request::post("/")
            .header("content-length", "5")
            .header("content-length", "5")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let response = sheave_core::time::timeout(WITHIN, client.oneshot(req))
            .await
            .expect("in time")
            .expect("sent");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
    });
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    handle.shutdown();
}
