//! A large upload into a handler that reads its body slowly uses bounded memory: the body is
//! pulled frame by frame, so a slow reader slows the socket reads, and the client's writes
//! wait. Alone in its test binary, so the resident set it measures is this process's only
//! (the server runs in it; the client is a plain blocking socket on another thread).

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sheave_core::Runtime;
use sheave_http::{Body, Server};
use sheave_service::{Error, service_fn};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::{WITHIN, rss_bytes};

/// What the client uploads: 1 GiB.
const UPLOAD: u64 = 1 << 30;
/// The handler pauses after every `PACE` frames (a 1 ms pause after every frame takes
/// minutes for 1 GiB in a debug build).
const PACE: u64 = 16;
/// How much more resident memory the whole upload may take.
const BOUND: u64 = 16 * 1024 * 1024;

/// Reads the body one frame at a time, pausing 1 ms on the server's timer after every
/// `PACE` frames (the handler's pace: slower than the client can write), and answers with the
/// number of bytes and frames it read.
async fn slow_reader(req: http::Request<Body>) -> Result<http::Response<Full<Bytes>>, Error> {
    let mut body = req.into_body();
    let (mut bytes, mut frames) = (0u64, 0u64);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            bytes += data.len() as u64;
            frames += 1;
            if frames.is_multiple_of(PACE) {
                sheave_core::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    Ok(http::Response::new(Full::new(Bytes::from(format!(
        "{bytes} {frames}"
    )))))
}

/// One response with a `Content-Length`, read whole.
fn read_response(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end].lines().find_map(|l| {
                let l = l.to_ascii_lowercase();
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if out.len() >= end + 4 + length.expect("a content-length") {
                return text;
            }
        }
        let n = conn.read(&mut buf).expect("the answer");
        assert!(n > 0, "closed early: {text:?}");
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_slow_reader_of_a_1_gib_upload_keeps_memory_bounded() {
    let (tx, rx) = std::sync::mpsc::channel();
    let serving = std::thread::spawn(move || {
        let rt = Runtime::new().unwrap();
        rt.block_on(async move {
            let server = Server::bind("127.0.0.1:0".parse().unwrap())
                .max_body(2 * UPLOAD)
                .build()
                .unwrap();
            tx.send((server.local_addr(), server.handle())).unwrap();
            server
                .serve(|_peer: SocketAddr| async { Ok::<_, Error>(service_fn(slow_reader)) })
                .await
                .unwrap();
        })
    });
    let (addr, handle): (SocketAddr, sheave_proto::ServerHandle) =
        rx.recv_timeout(WITHIN).expect("the server starts");

    let started = std::time::Instant::now();
    let before = rss_bytes();
    let mut peak = before;
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        conn,
        "PUT /upload HTTP/1.1\r\nhost: t\r\ncontent-length: {UPLOAD}\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![0x5a_u8; 256 * 1024];
    let mut sent = 0u64;
    while sent < UPLOAD {
        let n = (UPLOAD - sent).min(chunk.len() as u64) as usize;
        conn.write_all(&chunk[..n])
            .expect("the server keeps reading");
        sent += n as u64;
        // Sampled as the upload goes (every 16 MiB), not on a clock.
        if sent.is_multiple_of(16 << 20) {
            peak = peak.max(rss_bytes());
        }
    }
    let reply = read_response(&mut conn);
    peak = peak.max(rss_bytes());
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap();
    let mut counts = body.split(' ').map(|n| n.parse::<u64>().unwrap());
    let (bytes, frames) = (counts.next().unwrap(), counts.next().unwrap());
    assert_eq!(bytes, UPLOAD, "every byte reached the handler");
    let grown = peak.saturating_sub(before);
    eprintln!(
        "slow upload: {UPLOAD} bytes in {frames} frames (a 1 ms pause every {PACE}) in {:?}; \
         resident set grew by at most {grown} bytes (bound {BOUND})",
        started.elapsed()
    );
    assert!(
        grown < BOUND,
        "memory grew by {grown} bytes during the upload"
    );
    handle.shutdown();
    serving.join().unwrap();
}
