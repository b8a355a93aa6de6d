//! Bounded memory against a client that never reads. Alone in its test binary, so the
//! resident set it measures is the server's and this test's only.

mod support;

use support::{assert_serving, rss_bytes, start};

#[test]
fn a_client_that_pipelines_without_reading_is_held_back_with_bounded_memory() {
    use std::io::Write;
    let server = start();
    let before = rss_bytes();
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    // The writes stall once the server stops reading (its responses are unread): the
    // timeout is how the test sees that, not a wait.
    conn.set_write_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let request = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";
    let batch: Vec<u8> = request.repeat(1000);
    let (mut written, total) = (0usize, 400 * batch.len()); // 400,000 requests, 11 MB
    while written < total {
        match conn.write(&batch) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    assert!(
        written < total,
        "the server kept reading {written} bytes it could not answer"
    );
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 64 * 1024 * 1024, "memory grew by {grown} bytes");
    assert_serving(server.addr); // and everyone else is served
}
