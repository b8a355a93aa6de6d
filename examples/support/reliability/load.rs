//! The clients: an open-loop generator and closed-loop workers over pipelined connections.

use super::figures::*;
use sheave::net::TcpStream;
use sheave::service::{Error, ServiceExt};
use sheave::time;
use sheave_proto::dispatch::{ClientConfig, ClientConnection};
use sheave_proto::resp::{Frame, RespCodec};
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

pub(super) fn outcome(reply: &Result<Result<Frame, Error>, time::Elapsed>) -> Outcome {
    match reply {
        Ok(Ok(Frame::Error(msg))) if msg.starts_with(b"ERR overloaded") => Outcome::Overloaded,
        Ok(Ok(Frame::Error(_))) | Ok(Err(_)) | Err(_) => Outcome::Failed,
        Ok(Ok(_)) => Outcome::Ok,
    }
}

pub(super) async fn connect_clients(
    addr: SocketAddr,
    n: usize,
) -> io::Result<Vec<ClientConnection<RespCodec>>> {
    let config = ClientConfig::default().max_in_flight(4096);
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect(addr).await?;
        // As `Connector` does: without it, Nagle's algorithm holds a connection's next small
        // request until the server's delayed ACK (up to 40 ms on Linux).
        stream.set_nodelay(true)?;
        clients.push(ClientConnection::with_config(
            stream,
            RespCodec::new(),
            &config,
        ));
    }
    Ok(clients)
}

pub(super) fn get(i: u64) -> Frame {
    Frame::command(["GET".to_string(), format!("k{}", i % 100)])
}

/// Figures of one open-loop phase.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Requests offered.
    pub requests: u64,
    /// Answered.
    pub answered: u64,
    /// Refused with `-ERR overloaded`.
    pub overloaded: u64,
    /// Neither (another error, a broken connection, or no answer by the deadline).
    pub failed: u64,
    /// Answers (or refusals) that came after the request's deadline.
    pub late: u64,
    /// The answered requests' latency, from when each was due.
    pub admitted: Latencies,
    /// The refusals' latency, from when each was due.
    pub refused: Latencies,
    /// Outcomes per interval.
    pub timeline: Timeline,
    /// The peak resident memory of this process during the phase, in KiB.
    pub peak_rss_kib: u64,
}

/// Offers `rate` requests per second for `duration` over `clients`, open loop: each request is
/// due at its own time (a 1 ms interval timer issues the ones that came due), whether or not
/// earlier ones were answered, and its latency counts from when it was due.
pub(super) async fn open_loop(
    clients: &[ClientConnection<RespCodec>],
    rate: u64,
    duration: Duration,
    deadline: Duration,
) -> Phase {
    let phase = Rc::new(RefCell::new(Phase {
        timeline: Timeline::new(Duration::from_millis(100)),
        ..Phase::default()
    }));
    let start = time::now();
    let total = (rate as u128 * duration.as_micros() / 1_000_000) as u64;
    let mut ticker = time::interval(Duration::from_millis(1));
    let mut sent = 0u64;
    let mut tasks = Vec::with_capacity(total as usize);
    let mut last_rss = start;
    while sent < total {
        let now = ticker.tick().await;
        if now.duration_since(last_rss) >= Duration::from_millis(100) {
            last_rss = now;
            let rss = rss_kib(std::process::id()).unwrap_or(0);
            let mut p = phase.borrow_mut();
            p.peak_rss_kib = p.peak_rss_kib.max(rss);
        }
        let elapsed = now.duration_since(start);
        let due_count = ((rate as u128 * elapsed.as_micros() / 1_000_000) as u64 + 1).min(total);
        while sent < due_count {
            let i = sent;
            sent += 1;
            let due = start + Duration::from_micros((i as u128 * 1_000_000 / rate as u128) as u64);
            let client = clients[i as usize % clients.len()].clone();
            let phase = phase.clone();
            tasks.push(sheave::spawn(async move {
                let reply = time::timeout_at(due + deadline, client.oneshot(get(i))).await;
                let end = time::now();
                let latency = end.saturating_duration_since(due);
                let o = outcome(&reply);
                let mut p = phase.borrow_mut();
                p.requests += 1;
                if latency > deadline {
                    p.late += 1;
                }
                match o {
                    Outcome::Ok => {
                        p.answered += 1;
                        p.admitted.push(latency);
                    }
                    Outcome::Overloaded => {
                        p.overloaded += 1;
                        p.refused.push(latency);
                    }
                    Outcome::Failed => p.failed += 1,
                }
                p.timeline.record(end.saturating_duration_since(start), o);
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let rss = rss_kib(std::process::id()).unwrap_or(0);
    let mut p = phase.borrow().clone();
    p.peak_rss_kib = p.peak_rss_kib.max(rss);
    p
}
