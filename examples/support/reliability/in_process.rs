//! Cases 6, 7 and 9: the server on a runtime thread of this process.

use super::figures::*;
use super::load::*;
use super::server::*;
use futures::future::join_all;
use sheave::Handle;
use sheave::net::TcpStream;
use sheave::service::ServiceExt;
use sheave::time;
use sheave_proto::dispatch::ClientConnection;
use sheave_proto::resp::{Frame, RespCodec};
use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

// Case 6: 10x overload

/// Case 6's knobs. The server's sustainable rate is `limit / delay` (the default: 10 calls of
/// 50 ms at once, 200 requests per second), whatever the machine.
#[derive(Debug, Clone)]
pub struct OverloadConfig {
    /// Each call takes this long.
    pub delay: Duration,
    /// Calls at once; beyond it, `Overloaded`.
    pub limit: usize,
    /// The unloaded phase offers this share of the sustainable rate.
    pub unloaded_share: f64,
    /// The unloaded phase lasts this long.
    pub unloaded_for: Duration,
    /// The overload phase offers this multiple of the sustainable rate...
    pub overload_factor: u64,
    /// ...for this long.
    pub overload_for: Duration,
    /// Every request's deadline, from when it was due.
    pub deadline: Duration,
    /// Client connections the requests spread over.
    pub connections: usize,
}

impl Default for OverloadConfig {
    /// 10 × 50 ms calls (200/s sustainable); 1 s at half of it, then 3 s at 10× (2,000/s, so
    /// 6,000 requests: the 10 s shortened to keep CI short); a 250 ms deadline;
    /// 16 connections. The service time dominates the admitted latency, so scheduling noise
    /// on a busy machine (and a debug build) weighs little in the 2× promise.
    fn default() -> Self {
        OverloadConfig {
            delay: Duration::from_millis(50),
            limit: 10,
            unloaded_share: 0.5,
            unloaded_for: Duration::from_secs(1),
            overload_factor: 10,
            overload_for: Duration::from_secs(3),
            deadline: Duration::from_millis(250),
            connections: 16,
        }
    }
}

/// Case 6's figures.
#[derive(Debug, Clone)]
pub struct OverloadReport {
    /// The sustainable rate, requests per second.
    pub sustainable: u64,
    /// The unloaded phase.
    pub unloaded: Phase,
    /// The overload phase.
    pub overload: Phase,
    /// This process's resident memory before the overload, in KiB.
    pub rss_before_kib: u64,
}

/// Case 6: runs the unloaded phase, then the overload, against a server on thread 1 of `rt`
/// (which must have two threads); call from inside `rt.block_on`.
pub async fn overload(rt: &Handle, config: OverloadConfig) -> io::Result<OverloadReport> {
    let server = start_server(
        rt,
        1,
        ServerConfig {
            delay: config.delay,
            limit: config.limit,
            ..ServerConfig::default()
        },
    )?;
    let clients = connect_clients(server.addr, config.connections).await?;
    let sustainable = (config.limit as u128 * 1_000_000 / config.delay.as_micros().max(1)) as u64;
    let unloaded_rate = ((sustainable as f64 * config.unloaded_share) as u64).max(1);
    let unloaded = open_loop(
        &clients,
        unloaded_rate,
        config.unloaded_for,
        config.deadline,
    )
    .await;
    let rss_before_kib = rss_kib(std::process::id()).unwrap_or(0);
    let overload = open_loop(
        &clients,
        sustainable * config.overload_factor,
        config.overload_for,
        config.deadline,
    )
    .await;
    drop(clients);
    server.handle.shutdown();
    let _ = server.done.await;
    Ok(OverloadReport {
        sustainable,
        unloaded,
        overload,
        rss_before_kib,
    })
}

// Case 7: graceful drain under load

/// Case 7's figures.
#[derive(Debug, Clone, Default)]
pub struct DrainReport {
    /// Requests sent, all of them in the service when the shutdown began.
    pub requests: u64,
    /// Answered with their own reply (`ECHO n` → `n`).
    pub answered: u64,
    /// Answered with another request's reply, or an unexpected one.
    pub wrong: u64,
    /// Not answered (the connection closed first, or no answer within the bound).
    pub lost: u64,
    /// Connection attempts after the shutdown, until the first refusal.
    pub probes: u64,
    /// Of those, refused by the kernel (the listener is closed).
    pub refused: u64,
    /// Of those, accepted before the listener closed and answered, then closed.
    pub served_then_closed: u64,
    /// Of those, accepted and closed without an answer.
    pub closed_unanswered: u64,
    /// Of those, neither answered nor closed within 5 s.
    pub hung: u64,
    /// Whether `serve` returned (within 30 s of the shutdown).
    pub served: bool,
    /// From the shutdown to `serve` returning.
    pub drain_time: Duration,
    /// Answers per interval, from the shutdown.
    pub timeline: Timeline,
}

/// Case 7: `connections` × `per_connection` pipelined `ECHO n` requests are held in the service
/// (a closed gate) until all are in; the server shuts down; new connections are tried until
/// one is refused; then the gate opens (each call then takes `delay`) and every request is
/// checked against its answer. Runs the server on thread 1 of `rt`.
pub async fn drain(
    rt: &Handle,
    connections: usize,
    per_connection: usize,
    delay: Duration,
) -> io::Result<DrainReport> {
    let gate = Gate::closed();
    let server = start_server(
        rt,
        1,
        ServerConfig {
            delay,
            gate: gate.clone(),
            ..ServerConfig::default()
        },
    )?;
    let clients = connect_clients(server.addr, connections).await?;
    let requests = connections * per_connection;
    let report = Rc::new(RefCell::new(DrainReport {
        requests: requests as u64,
        timeline: Timeline::new(Duration::from_millis(100)),
        ..DrainReport::default()
    }));
    let started = Rc::new(RefCell::new(None::<Instant>));
    let mut tasks = Vec::with_capacity(requests);
    for i in 0..requests {
        let client = clients[i % connections].clone();
        let (report, started) = (report.clone(), started.clone());
        tasks.push(sheave::spawn(async move {
            let want = i.to_string();
            let req = Frame::command(["ECHO", want.as_str()]);
            let reply = time::timeout(Duration::from_secs(30), client.oneshot(req)).await;
            let since = started
                .borrow()
                .map_or(Duration::ZERO, |s: Instant| s.elapsed());
            let mut r = report.borrow_mut();
            let o = match reply {
                Ok(Ok(Frame::Bulk(b))) if b == want.as_bytes() => {
                    r.answered += 1;
                    Outcome::Ok
                }
                Ok(Ok(_)) => {
                    r.wrong += 1;
                    Outcome::Failed
                }
                Ok(Err(_)) | Err(_) => {
                    r.lost += 1;
                    Outcome::Failed
                }
            };
            r.timeline.record(since, o);
        }));
    }
    time::timeout(Duration::from_secs(30), gate.waiting_at_least(requests))
        .await
        .map_err(|_| io::Error::other(format!("only {} requests arrived", gate.waiting())))?;

    let shutdown_at = time::now();
    *started.borrow_mut() = Some(shutdown_at);
    server.handle.shutdown();
    // New connections: each is refused, or (accepted before the listener closed) answered or
    // closed — never left hanging. Until the first refusal, at most 1,000 tries.
    let mut probes = DrainReport::default();
    while probes.refused == 0 && probes.probes < 1_000 {
        probes.probes += 1;
        match TcpStream::connect(server.addr).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => probes.refused += 1,
            Err(_) => probes.closed_unanswered += 1,
            Ok(stream) => {
                let client = ClientConnection::pipeline(stream, RespCodec::new());
                let ping = Frame::command(["PING"]);
                match time::timeout(Duration::from_secs(5), client.oneshot(ping)).await {
                    Ok(Ok(_)) => probes.served_then_closed += 1,
                    Ok(Err(_)) => probes.closed_unanswered += 1,
                    Err(_) => probes.hung += 1,
                }
            }
        }
    }
    gate.open();
    for t in tasks {
        let _ = t.await;
    }
    let served = time::timeout(Duration::from_secs(30), server.done)
        .await
        .is_ok();
    let drain_time = shutdown_at.elapsed();
    let mut r = report.borrow().clone();
    r.probes = probes.probes;
    r.refused = probes.refused;
    r.served_then_closed = probes.served_then_closed;
    r.closed_unanswered = probes.closed_unanswered;
    r.hung = probes.hung;
    r.drain_time = drain_time;
    r.served = served;
    Ok(r)
}

// Case 9: slow-loris

/// Closed-loop figures of a normal client.
#[derive(Debug, Clone, Default)]
pub struct Steady {
    /// Requests answered.
    pub answered: u64,
    /// Requests not answered.
    pub failed: u64,
    /// Answered per second.
    pub rate: f64,
    /// Round-trip latency.
    pub latency: Latencies,
}

/// `workers` loops of `GET` over one connection for `duration`.
async fn closed_loop(
    client: &ClientConnection<RespCodec>,
    workers: usize,
    duration: Duration,
) -> Steady {
    let steady = RefCell::new(Steady::default());
    let start = time::now();
    let until = start + duration;
    let loops = (0..workers).map(|w| {
        let steady = &steady;
        async move {
            let mut i = w as u64;
            while time::now() < until {
                let t = time::now();
                let reply = time::timeout(Duration::from_secs(5), client.oneshot(get(i))).await;
                let mut s = steady.borrow_mut();
                match reply {
                    Ok(Ok(Frame::Error(_))) | Ok(Err(_)) | Err(_) => s.failed += 1,
                    Ok(Ok(_)) => {
                        s.answered += 1;
                        s.latency.push(t.elapsed());
                    }
                }
                i += workers as u64;
            }
        }
    });
    join_all(loops).await;
    let mut s = steady.into_inner();
    s.rate = s.answered as f64 / start.elapsed().as_secs_f64();
    s
}

/// Case 9's figures.
#[derive(Debug, Clone, Default)]
pub struct LorisReport {
    /// Slow connections.
    pub slow: usize,
    /// Bytes each slow connection sent (one per second).
    pub bytes_each: usize,
    /// Connections the server held open while they dribbled (theirs and the normal one).
    pub server_connections: usize,
    /// The normal client alone.
    pub baseline: Steady,
    /// The normal client while the slow ones dribble.
    pub under_loris: Steady,
}

/// Case 9: a normal client (4 loops over one connection) for `baseline_for`; then `slow`
/// connections each send one byte of a `PING` per second for `seconds` seconds while the
/// normal client runs again. Runs the server on thread 1 of `rt`.
pub async fn slow_loris(
    rt: &Handle,
    slow: usize,
    seconds: usize,
    baseline_for: Duration,
) -> io::Result<LorisReport> {
    let server = start_server(rt, 1, ServerConfig::default())?;
    let normal = connect_clients(server.addr, 1).await?.remove(0);
    let baseline = closed_loop(&normal, 4, baseline_for).await;
    let mut lorises = Vec::with_capacity(slow);
    for _ in 0..slow {
        lorises.push(TcpStream::connect(server.addr).await?);
    }
    let bytes_each = seconds.min(PING.len() - 1);
    let dribble = async move {
        use futures::AsyncWriteExt;
        let mut tick = time::interval(Duration::from_secs(1));
        for i in 0..bytes_each {
            tick.tick().await;
            for s in lorises.iter_mut() {
                s.write_all(&PING[i..i + 1]).await?;
            }
        }
        Ok::<_, io::Error>(lorises)
    };
    let steady = closed_loop(&normal, 4, Duration::from_secs(seconds as u64));
    let (dribbled, under_loris) = futures::future::join(dribble, steady).await;
    let lorises = dribbled?;
    let server_connections = server.handle.connections();
    drop(lorises);
    drop(normal);
    server.handle.shutdown();
    let _ = server.done.await;
    Ok(LorisReport {
        slow,
        bytes_each,
        server_connections,
        baseline,
        under_loris,
    })
}
