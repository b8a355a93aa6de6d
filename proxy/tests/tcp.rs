//! The L4 proxy: echo through it, balanced over endpoints, a dead endpoint skipped, a
//! half-close passed through both ways, and idle connections closed.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A backend on a thread: each connection is handled by `serve` on its own thread; counts
/// the connections it accepted.
fn backend(serve: fn(TcpStream)) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || serve(conn));
        }
    });
    (addr, accepted)
}

fn echo(mut conn: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 || conn.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Reads to the end, then answers how much it read: only works if the FIN came through.
fn count_then_answer(mut conn: TcpStream) {
    let mut all = Vec::new();
    if conn.read_to_end(&mut all).is_ok() {
        let _ = conn.write_all(format!("got {} bytes", all.len()).as_bytes());
    }
}

fn config(endpoints: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
        [[listener]]
        name = "l4"
        address = "127.0.0.1:0"
        protocol = "tcp"
        cluster = "backends"
        buffer = 4096
        {extra}

        [[cluster]]
        name = "backends"
        endpoints = [{}]
        policy = "round-robin"
        "#,
        list.join(", ")
    )
}

fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn
}

#[test]
fn bytes_are_echoed_through_the_proxy_and_spread_over_the_endpoints() {
    let (a, count_a) = backend(echo);
    let (b, count_b) = backend(echo);
    let proxy = support::proxy(&config(&[a, b], ""));
    let addr = proxy.addr("l4").unwrap();
    for i in 0..20 {
        let mut conn = connect(addr);
        // More than the proxy's 4 KiB buffer, so it takes several rounds each way.
        let message: Vec<u8> = (0..50_000u32).map(|j| (i + j) as u8).collect();
        let writer = {
            let mut w = conn.try_clone().unwrap();
            let m = message.clone();
            std::thread::spawn(move || w.write_all(&m).unwrap())
        };
        let mut back = vec![0u8; message.len()];
        conn.read_exact(&mut back).unwrap();
        writer.join().unwrap();
        assert_eq!(back, message);
    }
    let (na, nb) = (
        count_a.load(Ordering::SeqCst),
        count_b.load(Ordering::SeqCst),
    );
    assert_eq!(na + nb, 20);
    assert!(na >= 5 && nb >= 5, "round robin sent {na} and {nb}");
}

#[test]
fn a_dead_endpoint_is_skipped_without_failing_a_connection() {
    let (live, count) = backend(echo);
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap() // dropped: connects are refused
    };
    let proxy = support::proxy(&config(&[dead, live], ""));
    let addr = proxy.addr("l4").unwrap();
    for _ in 0..20 {
        let mut conn = connect(addr);
        conn.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        conn.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
    }
    assert_eq!(count.load(Ordering::SeqCst), 20);
}

#[test]
fn a_half_close_is_passed_through_and_the_answer_still_arrives() {
    let (addr, _) = backend(count_then_answer);
    let proxy = support::proxy(&config(&[addr], ""));
    let mut conn = connect(proxy.addr("l4").unwrap());
    conn.write_all(&[7u8; 10_000]).unwrap();
    conn.shutdown(Shutdown::Write).unwrap(); // the backend answers only after this FIN
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap(); // and its FIN comes back too
    assert_eq!(answer, "got 10000 bytes");
}

#[test]
fn an_idle_connection_is_closed() {
    let (addr, _) = backend(echo);
    let proxy = support::proxy(&config(&[addr], r#"idle_timeout = "300ms""#));
    let mut conn = connect(proxy.addr("l4").unwrap());
    conn.write_all(b"hi").unwrap();
    let mut back = [0u8; 2];
    conn.read_exact(&mut back).unwrap();
    let quiet = Instant::now();
    let mut rest = Vec::new();
    // Nothing more is sent: the proxy closes the connection after the idle timeout.
    let n = conn.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0);
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(10),
        "closed after {waited:?}"
    );
}
