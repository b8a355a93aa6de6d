//! A TCP echo server on loopback: every byte (so every line) it receives goes back.
//!
//! Run it and talk to it:
//!
//! ```text
//! cargo run --release --example echo                   # prints "listening on 127.0.0.1:PORT"
//! nc 127.0.0.1 PORT                                    # type lines; they come back
//! ```
//!
//! `SIGTERM` or Ctrl-C (`SIGINT`) stops it: it stops accepting, closes its connections and
//! exits 0.
//!
//! Or let it measure itself — it starts the server on a background runtime thread, drives it
//! from the main thread over many connections, checks every byte, and prints what it saw:
//!
//! ```text
//! cargo run --release --example echo -- --selftest [--connections 64] [--rounds 2000]
//! ```
//!
//! Flags: `--addr IP:PORT` (default 127.0.0.1:0), `--threads N` (server threads, each with its
//! own `SO_REUSEPORT` listener; default 1).

use futures::{AsyncReadExt, AsyncWriteExt, future};
use sheave::net::{TcpListener, TcpStream};
use sheave::signal::Signals;
use sheave::{Runtime, spawn, time};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Args {
    addr: SocketAddr,
    threads: usize,
    selftest: bool,
    connections: usize,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        selftest: false,
        connections: 64,
        rounds: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--threads" => {
                args.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?
            }
            "--connections" => {
                args.connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--rounds" => args.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--selftest" => args.selftest = true,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// Accepts connections forever; each is echoed by its own task.
async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((mut conn, _)) => {
                let _ = conn.set_nodelay(true);
                spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
}

/// Starts one listener per runtime thread on the same port, from outside `block_on`: thread 0's
/// recipe runs at once on this thread, the others' on their threads; each reports whether it
/// bound before this returns.
fn start_server(rt: &Runtime, addr: SocketAddr, first: usize) -> std::io::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind(addr)?;
    let addr = probe.local_addr()?;
    drop(probe);
    let handle = rt.handle();
    let (tx, rx) = std::sync::mpsc::channel();
    for t in first..handle.threads() {
        let tx = tx.clone();
        handle.spawn_with(t, move || {
            let bound = TcpListener::bind_reuse_port(addr);
            let ok = bound.as_ref().map(|_| ()).map_err(|e| e.to_string());
            tx.send(ok).unwrap();
            async move {
                if let Ok(listener) = bound {
                    serve(listener).await;
                }
            }
        });
    }
    for _ in first..handle.threads() {
        rx.recv()
            .expect("server thread")
            .map_err(std::io::Error::other)?;
    }
    Ok(addr)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echo: {e}");
            std::process::exit(2);
        }
    };
    if args.selftest {
        selftest(&args);
        return;
    }
    let rt = Runtime::builder().threads(args.threads).build().unwrap();
    let addr = start_server(&rt, args.addr, 0).unwrap_or_else(|e| {
        eprintln!("echo: cannot listen on {}: {e}", args.addr);
        std::process::exit(1);
    });
    rt.block_on(async {
        // Caught before the address is printed: whoever reads it may signal at once.
        let mut signals = Signals::new().unwrap_or_else(|e| {
            eprintln!("echo: cannot catch signals: {e}");
            std::process::exit(1);
        });
        println!(
            "listening on {addr} ({} thread(s)); Ctrl-C or SIGTERM stops",
            args.threads
        );
        let signal = signals.recv().await;
        eprintln!("echo: {signal}: stopping");
    });
    rt.handle().shutdown();
}

fn selftest(args: &Args) {
    // Thread 0 (this one) drives the clients; threads 1..=N serve.
    let rt = Runtime::builder()
        .threads(args.threads + 1)
        .build()
        .unwrap();
    let addr = start_server(&rt, args.addr, 1).expect("start server");
    println!(
        "echo selftest: server on {addr} ({} thread(s)), {} connections x {} round trips of 64 bytes",
        args.threads, args.connections, args.rounds
    );
    let rounds = args.rounds;
    let started = Instant::now();
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let clients = (0..args.connections).map(|c| {
            spawn(async move {
                let mut conn = TcpStream::connect(addr).await.expect("connect");
                conn.set_nodelay(true).unwrap();
                let mut lat = Vec::with_capacity(rounds);
                let mut msg = [0u8; 64];
                let mut back = [0u8; 64];
                for r in 0..rounds {
                    msg.iter_mut()
                        .enumerate()
                        .for_each(|(i, b)| *b = (c + r + i) as u8);
                    msg[63] = b'\n';
                    let t = Instant::now();
                    conn.write_all(&msg).await.expect("write");
                    conn.read_exact(&mut back).await.expect("read");
                    lat.push(t.elapsed());
                    assert_eq!(msg, back, "echo mismatch on connection {c}, round {r}");
                }
                lat
            })
        });
        let all = future::join_all(clients);
        let done = time::timeout(Duration::from_secs(300), all)
            .await
            .expect("selftest timed out");
        done.into_iter()
            .flat_map(|r| r.expect("client task"))
            .collect()
    });
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let n = latencies.len();
    println!(
        "{n} round trips checked in {:.2?}: {:.0} req/s, p50 {:?}, p99 {:?}, max {:?}",
        elapsed,
        n as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        latencies[n - 1]
    );
    rt.handle().shutdown();
}
