//! The dispatch engine over real loopback sockets: O(1) completion, ordering, bounds,
//! client failure semantics, cancel safety, timeouts, threads and graceful shutdown.

mod pipe;
mod support;

use bytes::Bytes;
use futures::future::join_all;
use futures::{AsyncReadExt, AsyncWriteExt};
use sheave_core::net::TcpStream;
use sheave_core::{Runtime, spawn, time};
use sheave_proto::codec::LinesCodec;
use sheave_proto::codec::TaggedCodec;
use sheave_proto::dispatch::{ClientConfig, ClientConnection, Connector, ServerConnection};
use sheave_proto::{Framed, Server};
use sheave_service::{Error, ErrorKind, NewService, Service, ServiceExt, TryReady, service_fn};
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;
use support::{Gate, YieldOnce, listen, within};

#[test]
fn a_hundred_thousand_pipelined_requests_cost_linear_polls() {
    // tokio-proto #155/#193: polling every in-flight future on each wake-up is quadratic.
    const N: usize = 100_000;
    let rt = Runtime::new().unwrap();
    rt.block_on(within(60, async {
        let (listener, addr) = listen();
        let polls = Rc::new(Cell::new(0u64));
        let counted = polls.clone();
        spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let svc = service_fn(move |line: String| YieldOnce::new(line, counted.clone()));
            ServerConnection::pipeline()
                .serve(Framed::new(conn, LinesCodec::new()), svc)
                .await
                .unwrap();
        });
        let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
        let writer = spawn(async move {
            let mut batch = String::new();
            for i in 0..N {
                batch.push_str(&format!("{i}\n"));
                if batch.len() > 16 * 1024 {
                    wr.write_all(batch.as_bytes()).await.unwrap();
                    batch.clear();
                }
            }
            wr.write_all(batch.as_bytes()).await.unwrap();
            wr
        });
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut next = 0usize;
        let mut partial = String::new();
        while next < N {
            let n = rd.read(&mut buf).await.unwrap();
            assert!(n > 0, "server closed after {next} responses");
            partial.push_str(std::str::from_utf8(&buf[..n]).unwrap());
            while let Some(nl) = partial.find('\n') {
                got.push(partial[..nl].parse::<usize>().unwrap());
                partial.drain(..=nl);
                next += 1;
            }
        }
        drop(writer.await.unwrap());
        assert!(
            got.iter().copied().eq(0..N),
            "responses out of request order"
        );
        let polls = polls.get();
        eprintln!("{N} requests, {polls} polls of call futures");
        // Each future is pending once, then ready: two polls each, and never more.
        assert_eq!(polls, 2 * N as u64);
    }));
}

#[test]
fn pipelined_answers_ready_at_once_wait_behind_older_slow_ones() {
    // The server writes an answer that is ready on the first poll straight away only while
    // nothing older is in flight; behind a slow request it must wait its turn.
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let (listener, addr) = listen();
        spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let svc = service_fn(|line: String| async move {
                if line.starts_with("slow") {
                    time::sleep(Duration::from_millis(5)).await;
                }
                Ok::<_, Error>(line)
            });
            ServerConnection::pipeline()
                .serve(Framed::new(conn, LinesCodec::new()), svc)
                .await
                .unwrap();
        });
        let lines = [
            "fast0", "slow1", "fast2", "fast3", "slow4", "slow5", "fast6", "fast7",
        ];
        let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
        // All in one write (twice: the second round reuses the slots), then a line per write.
        for _ in 0..2 {
            wr.write_all((lines.join("\n") + "\n").as_bytes())
                .await
                .unwrap();
            let mut got = String::new();
            let mut buf = [0u8; 256];
            while got.matches('\n').count() < lines.len() {
                let n = rd.read(&mut buf).await.unwrap();
                assert!(n > 0, "server closed");
                got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
            }
            assert_eq!(got.lines().collect::<Vec<_>>(), lines);
        }
        for line in lines {
            wr.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        }
        let mut got = String::new();
        let mut buf = [0u8; 256];
        while got.matches('\n').count() < lines.len() {
            let n = rd.read(&mut buf).await.unwrap();
            assert!(n > 0, "server closed");
            got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        assert_eq!(got.lines().collect::<Vec<_>>(), lines);
    }));
}

#[test]
fn a_stale_wake_of_a_finished_request_does_not_mute_the_next_one_in_its_slot() {
    // "wake" wakes itself on both of its polls, so a wake is queued after it finished; "sleep"
    // then gets the same slot and must still be woken by its timer.
    let rt = Runtime::new().unwrap();
    rt.block_on(within(10, async {
        let (listener, addr) = listen();
        spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let svc = service_fn(|line: String| async move {
                if line == "wake" {
                    let mut polls = 0;
                    futures::future::poll_fn(|cx| {
                        polls += 1;
                        cx.waker().wake_by_ref();
                        if polls == 1 {
                            Poll::Pending
                        } else {
                            Poll::Ready(())
                        }
                    })
                    .await;
                } else {
                    time::sleep(Duration::from_millis(5)).await;
                }
                Ok::<_, Error>(line)
            });
            ServerConnection::pipeline()
                .serve(Framed::new(conn, LinesCodec::new()), svc)
                .await
                .unwrap();
        });
        let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut buf = [0u8; 64];
        for line in ["wake", "sleep", "wake", "sleep"] {
            wr.write_all(format!("{line}\n").as_bytes()).await.unwrap();
            let n = rd.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], format!("{line}\n").as_bytes());
        }
    }));
}

#[test]
fn multiplexed_responses_come_in_completion_order_and_reach_their_callers() {
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let (listener, addr) = listen();
        let gate = Gate::default();
        spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                let gate = gate.clone();
                let svc = service_fn(move |(id, body): (u64, Bytes)| {
                    let gate = gate.clone();
                    async move {
                        match &body[..] {
                            b"slow" => gate.wait().await, // answered only after "fast"
                            _ => gate.open(),
                        }
                        Ok::<_, Error>((id, body))
                    }
                });
                spawn(async move {
                    ServerConnection::multiplex()
                        .serve(Framed::new(conn, TaggedCodec::new()), svc)
                        .await
                });
            }
        });
        // On the wire: "fast" (id 2) overtakes "slow" (id 1).
        let mut raw = Framed::new(TcpStream::connect(addr).await.unwrap(), TaggedCodec::new());
        {
            use futures::{SinkExt, StreamExt};
            raw.feed((1, Bytes::from("slow"))).await.unwrap();
            raw.send((2, Bytes::from("fast"))).await.unwrap();
            assert_eq!(raw.next().await.unwrap().unwrap(), (2, Bytes::from("fast")));
            assert_eq!(raw.next().await.unwrap().unwrap(), (1, Bytes::from("slow")));
        }
        // Through the client, each caller gets its own reply whatever the order.
        let client = ClientConnection::multiplex(
            TcpStream::connect(addr).await.unwrap(),
            TaggedCodec::new(),
        );
        let replies =
            join_all((0..50).map(|i| client.oneshot((0, Bytes::from(format!("{i}")))))).await;
        for (i, reply) in replies.into_iter().enumerate() {
            assert_eq!(reply.unwrap().1, Bytes::from(format!("{i}")));
        }
    }));
}

#[test]
fn the_server_runs_at_most_max_in_flight_requests_per_connection() {
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let (listener, addr) = listen();
        let running = Rc::new(Cell::new(0usize));
        let peak = Rc::new(Cell::new(0usize));
        let gate = Gate::default();
        let (r, p, g) = (running.clone(), peak.clone(), gate.clone());
        spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let svc = service_fn(move |line: String| {
                let (r, p, g) = (r.clone(), p.clone(), g.clone());
                async move {
                    r.set(r.get() + 1);
                    p.set(p.get().max(r.get()));
                    g.wait().await;
                    r.set(r.get() - 1);
                    Ok::<_, Error>(line)
                }
            });
            ServerConnection::pipeline()
                .max_in_flight(3)
                .serve(Framed::new(conn, LinesCodec::new()), svc)
                .await
                .unwrap();
        });
        let client =
            ClientConnection::pipeline(TcpStream::connect(addr).await.unwrap(), LinesCodec::new());
        let calls = join_all((0..10).map(|i| client.oneshot(format!("{i}"))));
        let opener = async {
            // Wait (on events) until the server is saturated, then let everything through.
            while running.get() < 3 {
                sheave_core::yield_now().await;
            }
            gate.open();
        };
        let (replies, ()) = futures::join!(calls, opener);
        let replies: Vec<String> = replies.into_iter().map(Result::unwrap).collect();
        assert_eq!(replies, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(peak.get(), 3);
    }));
}

#[test]
fn when_the_connection_dies_every_request_in_flight_fails_closed() {
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let (listener, addr) = listen();
        let client =
            ClientConnection::pipeline(TcpStream::connect(addr).await.unwrap(), LinesCodec::new());
        let (conn, _) = listener.accept().await.unwrap();
        let calls = join_all((0..10).map(|i| client.oneshot(format!("{i}"))));
        let killer = async move {
            let conn = conn; // moved in: dropping it at the end hangs up
            // Read all ten requests, answer none, hang up.
            let mut seen = 0;
            let mut buf = [0u8; 256];
            while seen < 10 {
                let n = conn.read(&mut buf).await.unwrap();
                seen += buf[..n].iter().filter(|&&b| b == b'\n').count();
            }
        };
        let (results, ()) = futures::join!(calls, killer);
        for r in results {
            assert_eq!(r.unwrap_err().kind(), ErrorKind::Closed);
        }
        assert!(client.is_closed());
        assert!(Service::<String>::try_ready(&client).is_closed());
    }));
}

#[test]
fn a_caller_that_gives_up_does_not_shift_later_responses() {
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let (listener, addr) = listen();
        let client =
            ClientConnection::pipeline(TcpStream::connect(addr).await.unwrap(), LinesCodec::new());
        let (conn, _) = listener.accept().await.unwrap();
        let mut server = Framed::new(conn, LinesCodec::new());
        // The first caller times out before its answer comes.
        let first = time::timeout(Duration::from_millis(10), client.oneshot("a".to_string()));
        assert!(first.await.is_err());
        let second = client.oneshot("b".to_string());
        let answer = async {
            use futures::{SinkExt, StreamExt};
            assert_eq!(server.next().await.unwrap().unwrap(), "a");
            assert_eq!(server.next().await.unwrap().unwrap(), "b");
            server.send("reply to a").await.unwrap();
            server.send("reply to b").await.unwrap();
        };
        let (reply, ()) = futures::join!(second, answer);
        assert_eq!(reply.unwrap(), "reply to b");
    }));
}

#[test]
fn client_readiness_is_honest_and_a_dropped_waiter_loses_no_wakeup() {
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let (listener, addr) = listen();
        let config = ClientConfig::default().max_in_flight(1);
        let client = Connector::pipeline(LinesCodec::new())
            .config(config)
            .new_service(addr)
            .await
            .unwrap();
        let _server = listener.accept().await.unwrap();
        let ready = |c: &ClientConnection<LinesCodec>| Service::<String>::try_ready(c);
        let held = ready(&client).ready().expect("capacity for one");
        assert!(ready(&client).is_busy());
        // A waiter that is dropped while pending must not swallow the release.
        let mut dropped = Box::pin(Service::<String>::ready(&client));
        assert!(futures::poll!(dropped.as_mut()).is_pending());
        let live = Service::<String>::ready(&client);
        let release = async {
            drop(dropped);
            drop(held);
        };
        let (permit, ()) = futures::join!(live, release);
        assert!(permit.is_ok());
        assert!(matches!(ready(&client), TryReady::Busy));
    }));
}

#[test]
fn a_slow_loris_is_cut_off_by_the_read_timeout_but_a_slow_request_within_it_is_served() {
    let rt = Runtime::builder().paused_clock().build().unwrap();
    rt.block_on(within(30, async {
        let (listener, addr) = listen();
        spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                spawn(async move {
                    let echo = service_fn(|l: String| async move { Ok::<_, Error>(l) });
                    ServerConnection::pipeline()
                        .read_timeout(Duration::from_secs(5))
                        .serve(Framed::new(conn, LinesCodec::new()), echo)
                        .await
                });
            }
        });
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"hel").await.unwrap();
        time::sleep(Duration::from_secs(3)).await;
        conn.write_all(b"lo\n").await.unwrap();
        let mut buf = [0u8; 6];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello\n");
        // Now one byte, then nothing: closed once 5 s pass.
        conn.write_all(b"x").await.unwrap();
        let start = time::now();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0);
        assert!(time::now() - start >= Duration::from_secs(5));
    }));
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let rt = Runtime::builder().paused_clock().build().unwrap();
    rt.block_on(within(30, async {
        let server = Server::bind("127.0.0.1:0".parse().unwrap())
            .codec(LinesCodec::new())
            .idle_timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let (addr, handle) = (server.local_addr(), server.handle());
        spawn(server.serve(|_| async {
            Ok::<_, Error>(service_fn(|l: String| async move { Ok::<_, Error>(l) }))
        }));
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"ping\n").await.unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).await.unwrap();
        let start = time::now();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0);
        assert!(time::now() - start >= Duration::from_secs(20));
        handle.shutdown();
    }));
}

#[test]
fn shutdown_stops_accepting_and_lets_the_request_in_flight_finish() {
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let gate = Gate::default();
        let started = Gate::default();
        let server = Server::bind("127.0.0.1:0".parse().unwrap())
            .codec(LinesCodec::new())
            .build()
            .unwrap();
        let (addr, handle) = (server.local_addr(), server.handle());
        let (g, s) = (gate.clone(), started.clone());
        let serving = spawn(server.serve_with(move || {
            let (g, s) = (g.clone(), s.clone());
            move |_: SocketAddr| {
                let (g, s) = (g.clone(), s.clone());
                async move {
                    Ok::<_, Error>(service_fn(move |l: String| {
                        let (g, s) = (g.clone(), s.clone());
                        async move {
                            s.open();
                            g.wait().await;
                            Ok::<_, Error>(format!("done {l}"))
                        }
                    }))
                }
            }
        }));
        let client =
            ClientConnection::pipeline(TcpStream::connect(addr).await.unwrap(), LinesCodec::new());
        let call = client.oneshot("work".to_string());
        let drive = async {
            started.wait().await;
            assert_eq!(handle.connections(), 1);
            handle.shutdown();
            // The listener closes: new connections are refused.
            for _ in 0..1000 {
                if TcpStream::connect(addr).await.is_err() {
                    break;
                }
                sheave_core::yield_now().await;
            }
            assert!(TcpStream::connect(addr).await.is_err());
            gate.open();
        };
        let (reply, ()) = futures::join!(call, drive);
        assert_eq!(reply.unwrap(), "done work");
        serving.await.unwrap().unwrap();
        assert_eq!(handle.connections(), 0);
    }));
}

#[test]
fn a_server_on_two_threads_serves_from_both() {
    let rt = Runtime::builder().threads(2).build().unwrap();
    rt.block_on(within(30, async {
        let server = Server::bind("127.0.0.1:0".parse().unwrap())
            .codec(LinesCodec::new())
            .threads(2)
            .build()
            .unwrap();
        let (addr, handle) = (server.local_addr(), server.handle());
        let serving = spawn(server.serve(|_: SocketAddr| async {
            Ok::<_, Error>(service_fn(|_: String| async {
                Ok::<_, Error>(format!("{}", sheave_core::Handle::thread_index().unwrap()))
            }))
        }));
        let mut seen = [false; 2];
        for _ in 0..500 {
            let stream = TcpStream::connect(addr).await.unwrap();
            let client = ClientConnection::pipeline(stream, LinesCodec::new());
            let thread: usize = client
                .oneshot("which".to_string())
                .await
                .unwrap()
                .parse()
                .unwrap();
            seen[thread] = true;
            if seen == [true, true] {
                break;
            }
        }
        assert_eq!(seen, [true, true]);
        handle.shutdown();
        serving.await.unwrap().unwrap();
    }));
}

#[test]
fn a_protocol_error_closes_the_connection_with_a_protocol_error() {
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let (listener, addr) = listen();
        let server = spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let echo = service_fn(|l: String| async move { Ok::<_, Error>(l) });
            ServerConnection::pipeline()
                .serve(Framed::new(conn, LinesCodec::with_max_length(8)), echo)
                .await
        });
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"ok\nthis line is far too long\n")
            .await
            .unwrap();
        let mut got = [0u8; 3];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ok\n", "the good frame is answered before the close");
        assert_eq!(
            server.await.unwrap().unwrap_err().kind(),
            ErrorKind::Protocol
        );
    }));
}

#[test]
fn public_types_implement_debug() {
    fn assert_debug<T: std::fmt::Debug>() {}
    assert_debug::<Server<LinesCodec>>();
    assert_debug::<ServerConnection>();
    assert_debug::<ClientConnection<LinesCodec>>();
    assert_debug::<Connector<LinesCodec>>();
}

#[test]
fn ready_waiters_get_capacity_in_arrival_order_one_release_at_a_time() {
    // Regression (review): every release woke every waiter (O(waiters) polls per response).
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let (listener, addr) = listen();
        let client = Connector::pipeline(LinesCodec::new())
            .config(ClientConfig::default().max_in_flight(1))
            .new_service(addr)
            .await
            .unwrap();
        let _server = listener.accept().await.unwrap();
        let held = Service::<String>::try_ready(&client).ready().unwrap();
        let order = Rc::new(std::cell::RefCell::new(Vec::new()));
        let polls = Rc::new(Cell::new(0u32));
        let waiters: Vec<_> = (0..3)
            .map(|i| {
                let (client, order, polls) = (client.clone(), order.clone(), polls.clone());
                spawn(async move {
                    let mut ready = std::pin::pin!(Service::<String>::ready(&client));
                    let permit = std::future::poll_fn(|cx| {
                        polls.set(polls.get() + 1);
                        ready.as_mut().poll(cx)
                    })
                    .await
                    .unwrap();
                    order.borrow_mut().push(i);
                    sheave_core::yield_now().await;
                    drop(permit);
                })
            })
            .collect();
        sheave_core::yield_now().await; // all three are waiting now, in order
        assert_eq!(polls.get(), 3);
        drop(held);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.borrow(), vec![0, 1, 2]);
        assert_eq!(polls.get(), 6, "each waiter was woken exactly once");
    }));
}

#[test]
fn a_peer_that_stops_reading_its_responses_is_closed_as_idle() {
    // Regression (review): a full write buffer counted as activity, so a peer that never
    // read kept its connection (and its buffers) forever.
    let rt = Runtime::builder().paused_clock().build().unwrap();
    rt.block_on(within(60, async {
        let server = Server::bind("127.0.0.1:0".parse().unwrap())
            .codec(LinesCodec::new())
            .idle_timeout(Duration::from_secs(20))
            .max_write_buffer(64 * 1024)
            .build()
            .unwrap();
        let (addr, handle) = (server.local_addr(), server.handle());
        let big = "x".repeat(60_000);
        spawn(server.serve(move |_| {
            let big = big.clone();
            async move {
                Ok::<_, Error>(service_fn(move |_: String| {
                    let big = big.clone();
                    async move { Ok::<_, Error>(big) }
                }))
            }
        }));
        let conn = TcpStream::connect(addr).await.unwrap();
        // Ask for far more than the socket buffers hold, and never read.
        for _ in 0..200 {
            (&conn).write_all(b"give\n").await.unwrap();
        }
        let start = time::now();
        while handle.connections() > 0 {
            time::sleep(Duration::from_secs(1)).await;
            assert!(
                time::now() - start < Duration::from_secs(60),
                "never closed"
            );
        }
        assert!(time::now() - start >= Duration::from_secs(20));
        handle.shutdown();
    }));
}

/// A RESP client connected to a one-connection pipelined server that answers with `answer`.
async fn resp_client_of<F, Fut>(
    answer: F,
) -> sheave_proto::dispatch::ClientConnection<
    sheave_proto::resp::RespCodec,
    sheave_proto::dispatch::Pipeline,
>
where
    F: Fn(sheave_proto::resp::Frame) -> Fut + 'static,
    Fut: Future<Output = Result<sheave_proto::resp::Frame, Error>> + 'static,
{
    use sheave_proto::resp::RespCodec;
    let (listener, addr) = listen();
    spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        ServerConnection::pipeline()
            .serve(Framed::new(conn, RespCodec::new()), service_fn(answer))
            .await
    });
    Connector::pipeline(RespCodec::new())
        .new_service(addr)
        .await
        .unwrap()
}

#[test]
fn a_failed_call_is_an_error_reply_when_the_protocol_has_them_and_the_connection_goes_on() {
    use sheave_proto::resp::Frame;
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let client = resp_client_of(|cmd: Frame| async move {
            match cmd.command_name().as_deref() {
                Some("FAIL") => Err(Error::msg(ErrorKind::Unavailable, "backend down")),
                _ => Ok(Frame::Simple("PONG".into())),
            }
        })
        .await;
        let failed = client.oneshot(Frame::command(["FAIL"])).await.unwrap();
        // The kind only: the context stays in the server's log.
        assert_eq!(failed, Frame::error("ERR unavailable"));
        let next = client.oneshot(Frame::command(["PING"])).await.unwrap();
        assert_eq!(next, Frame::Simple("PONG".into()));
    }));
}

#[test]
fn a_reply_the_server_cannot_encode_is_not_called_the_peers_protocol_error() {
    // Regression (review): the encoder's failure reached the client as
    // `-ERR Protocol error`, blaming the client for the server's own bad reply.
    use sheave_proto::resp::Frame;
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let client = resp_client_of(|cmd: Frame| async move {
            match cmd.command_name().as_deref() {
                // A simple string may not hold a line break: this cannot be encoded.
                Some("BAD") => Ok(Frame::Simple("a\nb".into())),
                _ => Ok(Frame::Simple("PONG".into())),
            }
        })
        .await;
        let failed = client.oneshot(Frame::command(["BAD"])).await.unwrap();
        assert_eq!(failed, Frame::error("ERR service error"));
        let next = client.oneshot(Frame::command(["PING"])).await.unwrap();
        assert_eq!(next, Frame::Simple("PONG".into()));
    }));
}

#[test]
fn once_no_reply_can_be_written_the_connection_does_not_wait_for_the_calls_in_flight() {
    // Regression (review): a muted pipelined connection still waited for every call in
    // flight, holding the socket for as long as the slowest of them.
    let rt = Runtime::builder().paused_clock().build().unwrap();
    rt.block_on(within(600, async {
        let (listener, addr) = listen();
        spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let svc = service_fn(|line: String| async move {
                if line == "a" {
                    time::sleep(Duration::from_millis(10)).await;
                    Err(Error::msg(ErrorKind::Unavailable, "a failed"))
                } else {
                    time::sleep(Duration::from_secs(3600)).await;
                    Ok(line)
                }
            });
            ServerConnection::pipeline()
                .serve(Framed::new(conn, LinesCodec::new()), svc)
                .await
        });
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let start = time::now();
        // `a` fails while `slow` is in flight behind it: `slow`'s reply can never be sent.
        conn.write_all(b"a\nslow\n").await.unwrap();
        assert_eq!(read_to_close(&mut conn).await, "");
        assert!(
            time::now() - start < Duration::from_secs(3600),
            "waited for `slow`"
        );
    }));
}

/// Reads from `conn` until the peer closes; returns everything read.
async fn read_to_close(conn: &mut TcpStream) -> String {
    let mut got = Vec::new();
    conn.read_to_end(&mut got).await.unwrap();
    String::from_utf8(got).unwrap()
}

#[test]
fn pipelined_no_reply_is_written_after_one_could_not_be() {
    // Regression (review): with a codec that has no error replies, a failed call closed the
    // connection but the replies after it were still written — each answering the wrong
    // request.
    let rt = Runtime::builder().paused_clock().build().unwrap();
    rt.block_on(within(30, async {
        let (listener, addr) = listen();
        spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let svc = service_fn(|line: String| async move {
                if line == "a" {
                    time::sleep(Duration::from_millis(50)).await;
                    Err(Error::msg(ErrorKind::Unavailable, "a failed"))
                } else {
                    Ok(line.to_uppercase())
                }
            });
            ServerConnection::pipeline()
                .serve(Framed::new(conn, LinesCodec::new()), svc)
                .await
        });
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"a\nb\n").await.unwrap();
        // `b` finished first but waits behind `a`; `a` fails: nothing may be written.
        assert_eq!(read_to_close(&mut conn).await, "");
    }));
}

#[test]
fn a_read_timeout_still_answers_the_requests_already_taken() {
    let rt = Runtime::builder().paused_clock().build().unwrap();
    rt.block_on(within(60, async {
        let (listener, addr) = listen();
        spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let svc = service_fn(|line: String| async move {
                time::sleep(Duration::from_secs(10)).await;
                Ok::<_, Error>(line)
            });
            ServerConnection::pipeline()
                .read_timeout(Duration::from_secs(5))
                .serve(Framed::new(conn, LinesCodec::new()), svc)
                .await
        });
        let mut conn = TcpStream::connect(addr).await.unwrap();
        // A request, then the start of a frame that never ends.
        conn.write_all(b"slow\npar").await.unwrap();
        let start = time::now();
        assert_eq!(read_to_close(&mut conn).await, "slow\n");
        assert!(time::now() - start >= Duration::from_secs(10));
    }));
}

#[test]
fn the_idle_timeout_bounds_the_wait_for_the_last_replies_and_serve_reports_why_it_closed() {
    // Regression (review): a connection closing on a read timeout, with a call still in
    // flight, counted its idle time from the last read and then returned `Ok`, hiding why
    // it closed.
    let rt = Runtime::builder().paused_clock().build().unwrap();
    rt.block_on(within(600, async {
        let (listener, addr) = listen();
        let served = spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let svc = service_fn(|line: String| async move {
                time::sleep(Duration::from_secs(100)).await;
                Ok::<_, Error>(line)
            });
            ServerConnection::pipeline()
                .idle_timeout(Duration::from_secs(20))
                .read_timeout(Duration::from_secs(5))
                .serve(Framed::new(conn, LinesCodec::new()), svc)
                .await
        });
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"slow\n").await.unwrap();
        time::sleep(Duration::from_secs(10)).await;
        // The start of a frame that never ends: the read timeout closes at 15 s, and the
        // idle timeout then allows the reply to `slow` (due at 100 s) until 35 s.
        conn.write_all(b"par").await.unwrap();
        let start = time::now();
        assert_eq!(read_to_close(&mut conn).await, "");
        let waited = time::now() - start;
        assert!(waited >= Duration::from_secs(25), "closed after {waited:?}");
        let err = served.await.unwrap().unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
    }));
}

#[test]
fn a_draining_server_serves_the_request_it_already_decoded() {
    // Regression (review): a request decoded while the service had no capacity was never
    // served once the drain began, and the connection never finished.
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let gate = Gate::default();
        let server = Server::bind("127.0.0.1:0".parse().unwrap())
            .codec(LinesCodec::new())
            .build()
            .unwrap();
        let (addr, handle) = (server.local_addr(), server.handle());
        let asked = Arc::new(AtomicBool::new(false));
        let (g, a) = (gate.clone(), asked.clone());
        let serving = spawn(server.serve(move |_| {
            let echo = GatedEcho(g.clone(), a.clone());
            async move { Ok::<_, Error>(echo) }
        }));
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"hi\n").await.unwrap();
        // The server has decoded it and waits for capacity.
        while !asked.load(Ordering::Relaxed) {
            sheave_core::yield_now().await;
        }
        handle.shutdown();
        gate.open();
        assert_eq!(read_to_close(&mut conn).await, "hi\n");
        serving.await.unwrap().unwrap();
    }));
}

/// Echoes lines, but is ready only once the gate opens; says when it was first asked.
struct GatedEcho(Gate, Arc<AtomicBool>);

impl Service<String> for GatedEcho {
    type Response = String;
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        self.1.store(true, Ordering::Relaxed);
        self.0.wait().await;
        Ok(())
    }

    fn try_ready(&self) -> TryReady<(), Error> {
        TryReady::Busy
    }

    async fn call(&self, (): (), line: String) -> Result<String, Error> {
        Ok(line)
    }
}

#[test]
fn a_panicking_decoder_fails_the_waiting_callers_instead_of_stranding_them() {
    // Regression (review): only `drive` failed the callers; when the connection task
    // panicked, the runtime dropped it and every caller waited forever.
    use sheave_proto::codec::{Decoder, Encoder};
    #[derive(Clone)]
    struct Panicky(LinesCodec);
    impl Decoder for Panicky {
        type Item = String;
        #[track_caller]
        fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<String>, Error> {
            let line = self.0.decode(src)?;
            assert_ne!(line.as_deref(), Some("boom"), "a codec bug");
            Ok(line)
        }
    }
    impl Encoder<String> for Panicky {
        fn encode(&mut self, item: String, dst: &mut bytes::BytesMut) -> Result<(), Error> {
            self.0.encode(item, dst)
        }
    }
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let (listener, addr) = listen();
        let client = ClientConnection::pipeline(
            TcpStream::connect(addr).await.unwrap(),
            Panicky(LinesCodec::new()),
        );
        let (mut conn, _) = listener.accept().await.unwrap();
        let permit = Service::<String>::ready(&client).await.unwrap();
        let call = client.call(permit, "hi".to_string());
        conn.write_all(b"boom\n").await.unwrap();
        assert!(call.await.unwrap_err().is_closed());
        assert!(Service::<String>::ready(&client).await.is_err());
    }));
}

#[test]
fn a_permit_that_outlives_the_last_handle_still_lets_the_connection_close() {
    // Regression (review): dropping the permit never woke the connection task, which had
    // parked while the permit was counted: the socket stayed open for good.
    let rt = Runtime::new().unwrap();
    rt.block_on(within(30, async {
        let (listener, addr) = listen();
        let client =
            ClientConnection::pipeline(TcpStream::connect(addr).await.unwrap(), LinesCodec::new());
        let (conn, _) = listener.accept().await.unwrap();
        let permit = Service::<String>::ready(&client).await.unwrap();
        drop(client);
        // Let the connection task run and park while the permit is still held.
        for _ in 0..10 {
            sheave_core::yield_now().await;
        }
        drop(permit);
        let mut buf = [0u8; 16];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0, "the client closed");
    }));
}
