//! A TCP proxy that misbehaves on purpose, in front of any server on loopback (Toxiproxy's
//! job): see how your client copes with a slow, throttled, resetting or hung peer.
//!
//! ```text
//! cargo run --release --example kv -- --addr 127.0.0.1:6380 &      # something to proxy
//! cargo run --release --example chaos_proxy -- --upstream 127.0.0.1:6380 --latency-ms 50
//! redis-cli -p 7500 PING                                           # 100 ms later: PONG
//! ```
//!
//! It prints `listening on 127.0.0.1:PORT` once it accepts. Flags (each toxic applies to all
//! traffic; the library type, `sheave_proto::chaos::ChaosProxy`, also sets rules per
//! connection and changes them while traffic flows):
//!
//! - `--upstream IP:PORT` (required), `--listen IP:PORT` (default 127.0.0.1:7500; port 0
//!   picks one); both must be loopback;
//! - `--latency-ms N`, `--jitter-ms N`: added to each chunk, each way;
//! - `--bandwidth BYTES_PER_SEC`; `--reset-after BYTES`;
//! - `--blackhole` (accept, never forward, never close), `--half-close`, `--refuse`,
//!   `--slice` (1-byte writes).
//!
//! `SIGTERM` or `SIGINT` (Ctrl-C) stops it.

use sheave::Runtime;
use sheave_proto::chaos::{ChaosProxy, Toxics};
use std::net::SocketAddr;
use std::time::Duration;

struct Args {
    listen: SocketAddr,
    upstream: Option<SocketAddr>,
    toxics: Toxics,
    latency: Duration,
    jitter: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:7500".parse().unwrap(),
        upstream: None,
        toxics: Toxics::none(),
        latency: Duration::ZERO,
        jitter: Duration::ZERO,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let toxics = args.toxics;
        match flag.as_str() {
            "--blackhole" => args.toxics = toxics.blackhole(),
            "--half-close" => args.toxics = toxics.half_close(),
            "--refuse" => args.toxics = toxics.refuse(),
            "--slice" => args.toxics = toxics.slice(),
            _ => {
                let value = it.next().ok_or(format!("{flag} needs a value"))?;
                let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
                let number = || value.parse::<u64>().map_err(|e| bad(&e));
                match flag.as_str() {
                    "--listen" => args.listen = value.parse().map_err(|e| bad(&e))?,
                    "--upstream" => args.upstream = Some(value.parse().map_err(|e| bad(&e))?),
                    "--latency-ms" => args.latency = Duration::from_millis(number()?),
                    "--jitter-ms" => args.jitter = Duration::from_millis(number()?),
                    "--bandwidth" => args.toxics = toxics.bandwidth(number()?),
                    "--reset-after" => args.toxics = toxics.reset_after(number()?),
                    other => return Err(format!("unknown flag {other}")),
                }
            }
        }
    }
    args.toxics = args.toxics.latency(args.latency, args.jitter);
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("chaos_proxy: {e}");
        std::process::exit(2);
    });
    let Some(upstream) = args.upstream else {
        eprintln!("chaos_proxy: --upstream IP:PORT is required");
        std::process::exit(2);
    };
    let rt = Runtime::new().expect("runtime");
    rt.block_on(async {
        let proxy = ChaosProxy::bind(args.listen, upstream).unwrap_or_else(|e| {
            eprintln!("chaos_proxy: {e}");
            std::process::exit(1);
        });
        let chaos = proxy.handle();
        chaos.set(args.toxics);
        println!(
            "listening on {} (relaying to {upstream} with {:?})",
            proxy.local_addr(),
            args.toxics
        );
        let mut signals = sheave::signal::Signals::new().expect("signals");
        let run = std::pin::pin!(proxy.run());
        let stop = std::pin::pin!(signals.recv());
        if let futures::future::Either::Right((signal, _)) =
            futures::future::select(run, stop).await
        {
            eprintln!("chaos_proxy: {signal}, stopping");
            chaos.stop();
        }
    });
}
