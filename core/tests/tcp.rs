//! TCP and UDP over real loopback sockets.

mod support;

use futures::{AsyncReadExt, AsyncWriteExt, future};
use sheave_core::net::{TcpListener, TcpStream, UdpSocket};
use sheave_core::{Runtime, spawn, time};
use std::time::Duration;
use support::{any_port, pattern};

/// Bounds every test: a hang fails instead of blocking CI.
const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn five_hundred_connections_echo_a_hundred_round_trips_each_byte_for_byte() {
    const CONNS: usize = 500;
    const ROUNDS: usize = 100;
    let rt = Runtime::new().unwrap();
    let checked = rt.block_on(async {
        let listener = TcpListener::bind(any_port()).unwrap();
        let addr = listener.local_addr().unwrap();
        spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                spawn(async move {
                    let mut buf = [0u8; 256];
                    loop {
                        let n = conn.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        conn.write_all(&buf[..n]).await.unwrap();
                    }
                });
            }
        });
        let clients = (0..CONNS).map(|c| async move {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            conn.set_nodelay(true).unwrap();
            let mut checked = 0;
            for round in 0..ROUNDS {
                let msg = pattern((c * ROUNDS + round) as u64, 64);
                conn.write_all(&msg).await.unwrap();
                let mut back = [0u8; 64];
                conn.read_exact(&mut back).await.unwrap();
                assert_eq!(&back[..], &msg[..], "connection {c}, round {round}");
                checked += back.len();
            }
            checked
        });
        let all = future::join_all(clients.map(spawn));
        let results = time::timeout(LIMIT, all)
            .await
            .expect("echo test timed out");
        results.into_iter().map(|r| r.unwrap()).sum::<usize>()
    });
    assert_eq!(checked, CONNS * ROUNDS * 64);
}

#[test]
fn a_mebibyte_crosses_a_split_stream_in_both_directions_at_once() {
    const LEN: usize = 1 << 20;
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind(any_port()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let (mut read, mut write) = conn.split_halves();
            let send = async {
                write.write_all(&pattern(1, LEN)).await.unwrap();
                write.close().await.unwrap();
            };
            let recv = async {
                let mut got = Vec::new();
                read.read_to_end(&mut got).await.unwrap();
                got
            };
            future::join(send, recv).await.1
        });
        let conn = TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = conn.into_split();
        let send = async move {
            write.write_all(&pattern(2, LEN)).await.unwrap();
            drop(write); // shuts down our write side: the server sees end-of-stream
        };
        let recv = async {
            let mut got = Vec::new();
            read.read_to_end(&mut got).await.unwrap();
            got
        };
        let (_, client_got) = time::timeout(LIMIT, future::join(send, recv))
            .await
            .unwrap();
        let server_got = server.await.unwrap();
        assert!(
            client_got == pattern(1, LEN),
            "client received a corrupted stream"
        );
        assert!(
            server_got == pattern(2, LEN),
            "server received a corrupted stream"
        );
    });
}

#[test]
fn connecting_to_a_closed_port_fails_with_connection_refused() {
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let addr = {
            let l = std::net::TcpListener::bind(any_port()).unwrap();
            l.local_addr().unwrap()
        };
        let err = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    });
}

#[test]
fn listeners_with_reuse_port_share_one_port() {
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let a = TcpListener::bind_reuse_port(any_port()).unwrap();
        let addr = a.local_addr().unwrap();
        let b = TcpListener::bind_reuse_port(addr).unwrap();
        assert_eq!(b.local_addr().unwrap(), addr);
        // Connections land on one listener or the other; both accept.
        let mut conns = Vec::new();
        for _ in 0..8 {
            conns.push(TcpStream::connect(addr).await.unwrap());
        }
        let accept_any = async {
            future::select(Box::pin(a.accept()), Box::pin(b.accept()))
                .await
                .factor_first()
                .0
        };
        let (_conn, peer) = time::timeout(LIMIT, accept_any).await.unwrap().unwrap();
        assert!(conns.iter().any(|c| c.local_addr().unwrap() == peer));
    });
}

#[test]
fn udp_datagrams_round_trip_with_their_sender() {
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let server = UdpSocket::bind(any_port()).unwrap();
        let client = UdpSocket::bind(any_port()).unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        for i in 0..100u8 {
            client.send(&[i; 32]).await.unwrap();
            let mut buf = [0; 64];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            assert_eq!(
                (&buf[..n], from),
                (&[i; 32][..], client.local_addr().unwrap())
            );
            server.send_to(&buf[..n], from).await.unwrap();
            let n = client.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &[i; 32][..]);
        }
    });
}

#[test]
fn after_a_udp_error_the_next_recv_waits_instead_of_spinning() {
    // Regression (review): an error event set the sticky "closed" bit, which nothing
    // cleared once the error was read; the next `recv` looped on `WouldBlock` forever,
    // and no timer of that thread could fire. Run on its own thread, so a regression
    // fails the test instead of hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = Runtime::new().unwrap();
        let outcome = rt.block_on(async {
            let gone = std::net::UdpSocket::bind(any_port()).unwrap();
            let dead = gone.local_addr().unwrap();
            drop(gone);
            let socket = UdpSocket::bind(any_port()).unwrap();
            socket.connect(dead).unwrap();
            let mut buf = [0; 16];
            // The recv waits first, so the ICMP error arrives as an event.
            let (first, ()) = futures::join!(socket.recv(&mut buf), async {
                socket.send(b"x").await.unwrap();
            });
            let refused = first.unwrap_err().kind() == std::io::ErrorKind::ConnectionRefused;
            let second = time::timeout(Duration::from_millis(50), socket.recv(&mut buf)).await;
            (refused, second.is_err())
        });
        let _ = done.send(outcome);
    });
    let (refused, timed_out) = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the second recv spun instead of waiting");
    assert!(refused, "the first recv reports the ICMP error");
    assert!(timed_out, "the second recv waits (and its timeout fires)");
}

#[test]
fn a_busy_connection_does_not_starve_a_quiet_one() {
    // One task reads an endless stream; another needs a single round trip. The reader's I/O
    // budget makes it yield, so the round trip completes while the flood continues.
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind(any_port()).unwrap();
        let addr = listener.local_addr().unwrap();
        spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let mut flood = TcpStream::connect(addr).await.unwrap();
        let (mut flood_read, mut flood_write) = flood.split_halves();
        let stop = std::cell::Cell::new(false);
        let flooding = async {
            let chunk = [7u8; 16 * 1024];
            let mut buf = vec![0u8; 64 * 1024];
            while !stop.get() {
                let _ = future::join(flood_write.write_all(&chunk), async {
                    let _ = flood_read.read(&mut buf).await;
                })
                .await;
            }
        };
        let quiet = async {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            conn.write_all(b"hi").await.unwrap();
            let mut buf = [0; 2];
            conn.read_exact(&mut buf).await.unwrap();
            stop.set(true);
            buf
        };
        let (_, got) = time::timeout(LIMIT, future::join(flooding, quiet))
            .await
            .unwrap();
        assert_eq!(&got, b"hi");
    });
}

#[test]
fn a_close_that_arrives_with_the_last_data_is_still_seen() {
    // Regression: a short read cleared READ readiness even when the peer's FIN came in the
    // same epoll event as the data; the next read then waited forever for an edge that never
    // came. The runtime thread is held (blocked on a channel) while the peer writes and
    // closes, so both reach epoll as one event.
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let listener = std::net::TcpListener::bind(any_port()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let peer = std::thread::spawn(move || {
            use std::io::Write;
            let (mut s, _) = listener.accept().unwrap();
            go_rx.recv().unwrap();
            s.write_all(b"ok\n").unwrap();
            drop(s);
            done_tx.send(()).unwrap();
        });
        let conn = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        {
            // Wait for readability (registers interest), then hold the thread until the
            // peer has written and closed.
            let mut read = std::pin::pin!(conn.read(&mut buf));
            assert!(futures::poll!(read.as_mut()).is_pending());
            go_tx.send(()).unwrap();
            done_rx.recv().unwrap();
            let n = time::timeout(LIMIT, read).await.unwrap().unwrap();
            assert_eq!(n, 3);
        }
        assert_eq!(&buf[..3], b"ok\n");
        let eof = time::timeout(LIMIT, conn.read(&mut buf)).await;
        assert_eq!(eof.expect("the close was lost").unwrap(), 0);
        peer.join().unwrap();
    });
}
