//! The chaos proxy over real loopback sockets: each toxic against an echo server, rules
//! changed while traffic flows.

use sheave_core::net::{TcpListener, TcpStream};
use sheave_core::{Runtime, spawn, time};
use sheave_proto::chaos::{ChaosHandle, ChaosProxy, Toxics};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bounds a test's async part.
async fn within<F: Future>(secs: u64, f: F) -> F::Output {
    time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("the test took too long")
}

/// An echo server (every connection echoes until the peer closes), a proxy in front of it,
/// and the proxy's address and handle.
fn proxied_echo() -> (SocketAddr, ChaosHandle) {
    let upstream = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    spawn(async move {
        while let Ok((conn, _)) = upstream.accept().await {
            spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || write_all(&conn, &buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let proxy = ChaosProxy::bind("127.0.0.1:0".parse().unwrap(), upstream_addr).unwrap();
    let out = (proxy.local_addr(), proxy.handle());
    spawn(proxy.run());
    out
}

async fn write_all(conn: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = conn.write(bytes).await?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Reads exactly `n` bytes, or what came before the stream ended or failed.
async fn read_n(conn: &TcpStream, n: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match conn.read(&mut out[got..]).await? {
            0 => break,
            k => got += k,
        }
    }
    out.truncate(got);
    Ok(out)
}

/// Sends `msg` and reads its echo.
async fn round_trip(conn: &TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
    write_all(conn, msg).await?;
    read_n(conn, msg.len()).await
}

#[test]
fn with_no_toxic_it_relays_bytes_untouched() {
    Runtime::new().unwrap().block_on(within(10, async {
        let (addr, chaos) = proxied_echo();
        let conn = TcpStream::connect(addr).await.unwrap();
        let msg: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        assert_eq!(round_trip(&conn, &msg).await.unwrap(), msg);
        let stats = chaos.stats();
        assert_eq!(
            (stats.accepted, stats.bytes_up, stats.bytes_down),
            (1, 200_000, 200_000)
        );
    }));
}

#[test]
fn latency_delays_each_way_and_can_be_lifted_while_traffic_flows() {
    Runtime::new().unwrap().block_on(within(10, async {
        let (addr, chaos) = proxied_echo();
        let conn = TcpStream::connect(addr).await.unwrap();
        chaos.set(Toxics::none().latency(Duration::from_millis(30), Duration::from_millis(5)));
        let start = Instant::now();
        round_trip(&conn, b"ping").await.unwrap();
        let slow = start.elapsed();
        assert!(
            slow >= Duration::from_millis(60),
            "30 ms each way: {slow:?}"
        );
        chaos.clear();
        let start = Instant::now();
        round_trip(&conn, b"ping").await.unwrap();
        assert!(start.elapsed() < slow, "lifted on the same connection");
    }));
}

#[test]
fn bandwidth_caps_the_rate() {
    Runtime::new().unwrap().block_on(within(10, async {
        let (addr, chaos) = proxied_echo();
        chaos.set(Toxics::none().bandwidth(100_000));
        let conn = TcpStream::connect(addr).await.unwrap();
        let start = Instant::now();
        let msg = vec![7u8; 20_000];
        assert_eq!(round_trip(&conn, &msg).await.unwrap(), msg);
        // 20 kB up and 20 kB down at 100 kB/s each way, pipelined: at least 0.2 s.
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
    }));
}

#[test]
fn reset_after_n_bytes_resets_both_sides() {
    Runtime::new().unwrap().block_on(within(10, async {
        let (addr, chaos) = proxied_echo();
        chaos.set(Toxics::none().reset_after(1_000));
        let conn = TcpStream::connect(addr).await.unwrap();
        let msg = vec![1u8; 4_000];
        let _ = write_all(&conn, &msg).await;
        let got = read_n(&conn, msg.len()).await;
        // 1,000 bytes pass in all (up and down together), then an RST.
        match got {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
            Ok(bytes) => assert!(bytes.len() < msg.len(), "cut short: {}", bytes.len()),
        }
        assert_eq!(chaos.stats().resets, 1);
        assert!(chaos.stats().bytes_up + chaos.stats().bytes_down <= 1_000);
    }));
}

#[test]
fn a_blackhole_holds_traffic_without_closing_and_lifting_it_lets_it_through() {
    Runtime::new().unwrap().block_on(within(10, async {
        let (addr, chaos) = proxied_echo();
        let conn = TcpStream::connect(addr).await.unwrap();
        round_trip(&conn, b"before").await.unwrap();
        chaos.set(Toxics::none().blackhole());
        write_all(&conn, b"held").await.unwrap();
        let mut buf = [0u8; 4];
        let waited = time::timeout(Duration::from_millis(200), conn.read(&mut buf)).await;
        assert!(waited.is_err(), "nothing comes back, and nothing closes");
        chaos.clear();
        assert_eq!(read_n(&conn, 4).await.unwrap(), b"held");
    }));
}

#[test]
fn half_close_gives_the_client_end_of_stream() {
    Runtime::new().unwrap().block_on(within(10, async {
        let (addr, chaos) = proxied_echo();
        chaos.set(Toxics::none().half_close());
        let conn = TcpStream::connect(addr).await.unwrap();
        write_all(&conn, b"x").await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0, "end of stream");
    }));
}

#[test]
fn refuse_resets_new_connections_and_lifting_it_accepts_again() {
    Runtime::new().unwrap().block_on(within(10, async {
        let (addr, chaos) = proxied_echo();
        chaos.set(Toxics::none().refuse());
        let conn = TcpStream::connect(addr).await.unwrap();
        let got = round_trip(&conn, b"anyone?").await;
        assert!(got.is_err() || got.unwrap().is_empty(), "refused");
        assert_eq!(chaos.stats().refused, 1);
        chaos.clear();
        let conn = TcpStream::connect(addr).await.unwrap();
        assert_eq!(round_trip(&conn, b"hello").await.unwrap(), b"hello");
    }));
}

#[test]
fn slicing_delivers_every_byte_in_order() {
    Runtime::new().unwrap().block_on(within(10, async {
        let (addr, chaos) = proxied_echo();
        chaos.set(Toxics::none().slice());
        let conn = TcpStream::connect(addr).await.unwrap();
        let msg: Vec<u8> = (0..2_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(round_trip(&conn, &msg).await.unwrap(), msg);
    }));
}

#[test]
fn rules_for_one_connection_leave_the_others_alone() {
    Runtime::new().unwrap().block_on(within(10, async {
        let (addr, chaos) = proxied_echo();
        let held = TcpStream::connect(addr).await.unwrap();
        round_trip(&held, b"a").await.unwrap();
        let free = TcpStream::connect(addr).await.unwrap();
        round_trip(&free, b"b").await.unwrap();
        let ids = chaos.connections();
        assert_eq!(ids.len(), 2);
        chaos.set_for(ids[0], Toxics::none().blackhole());
        write_all(&held, b"c").await.unwrap();
        assert_eq!(
            round_trip(&free, b"d").await.unwrap(),
            b"d",
            "the other flows"
        );
        let mut buf = [0u8; 1];
        assert!(
            time::timeout(Duration::from_millis(100), held.read(&mut buf))
                .await
                .is_err()
        );
        chaos.clear_for(ids[0]);
        assert_eq!(read_n(&held, 1).await.unwrap(), b"c");
    }));
}
