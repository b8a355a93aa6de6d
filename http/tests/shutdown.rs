//! Graceful shutdown with requests in flight: HTTP/1.1 answers them with `Connection: close`,
//! HTTP/2 sends GOAWAY and finishes its open streams; nothing accepted is dropped.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sheave_core::Runtime;
use sheave_http::Client;
use sheave_http::client::Version;
use sheave_service::ServiceExt;
use std::io::{Read, Write};
use support::{WITHIN, start, wait_slow_started};

#[test]
fn http1_shutdown_answers_the_request_in_flight_with_connection_close() {
    let server = start();
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(WITHIN)).unwrap();
    conn.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    wait_slow_started(&server, 1);
    server.handle.shutdown();
    let mut reply = String::new();
    conn.read_to_string(&mut reply)
        .expect("the answer, then a close");
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    assert!(reply.ends_with("slow done"), "{reply}");
}

#[test]
fn http2_shutdown_sends_goaway_and_finishes_the_open_streams() {
    let server = start();
    let addr = server.addr;
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::<Full<Bytes>>::builder()
            .version(Version::Http2)
            .build(addr);
        let slow = |c: Client<Full<Bytes>>| async move {
            let req = http::Request::get("/slow")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = c.oneshot(req).await?;
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, sheave_service::Error>(body)
        };
        // Three streams on one connection, all begun before the shutdown.
        let streams: Vec<_> = (0..3)
            .map(|_| sheave_core::spawn(slow(client.clone())))
            .collect();
        let started = server.slow_started.clone();
        let handle = server.handle.clone();
        let watcher = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + WITHIN;
            while started.load(std::sync::atomic::Ordering::SeqCst) < 3 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the streams never began"
                );
                std::thread::yield_now();
            }
            handle.shutdown();
        });
        for stream in streams {
            let body = sheave_core::time::timeout(WITHIN, stream)
                .await
                .expect("in time")
                .unwrap()
                .expect("the stream finishes");
            assert_eq!(body, "slow done");
        }
        watcher.join().unwrap();
        // After GOAWAY the connection takes no new stream, and the listener is gone.
        let req = http::Request::get("/")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let after = sheave_core::time::timeout(WITHIN, client.oneshot(req))
            .await
            .expect("in time");
        assert!(after.is_err(), "a request after shutdown must fail");
    });
}
