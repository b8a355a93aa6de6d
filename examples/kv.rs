//! A redis-protocol key-value server: `redis-cli` and `redis-benchmark` talk to it.
//!
//! ```text
//! cargo run --release --example kv                     # prints "listening on 127.0.0.1:PORT"
//! redis-cli -p PORT                                    # then: SET k v, GET k, INCR n, ...
//! redis-benchmark -p PORT -t ping,set,get,incr,mset -n 100000 -P 16 -q
//! ```
//!
//! `SIGTERM` or Ctrl-C drains it: it stops accepting, answers every request it has read,
//! closes the connections and exits 0.
//!
//! Flags: `--addr IP:PORT` (default 127.0.0.1:6380, port 0 picks one), `--threads N` (a
//! listener per runtime thread with `SO_REUSEPORT`; default 1), `--max-in-flight N` (per
//! connection; default 128), `--idle-timeout SECS`.
//!
//! It is the whole stack in a few lines: [`Server`] (listeners, limits, shutdown) + the
//! pipelined dispatcher + `RespCodec` + a `Service<Frame>` (`support/kv.rs`) over one store
//! shared by every thread. It speaks RESP2 and RESP3 (`HELLO 3`), and enough of redis for
//! redis-py and ioredis at their default settings: the handshake (HELLO, INFO, CLIENT,
//! SELECT, COMMAND), the string and key commands (GET, SET with its options, INCR and kin,
//! APPEND, MGET, MSET, EXPIRE, TTL, KEYS, SCAN, ...) and MULTI/EXEC transactions; the list is
//! in `support/kv.rs`.

mod support;

use sheave::{Error, Runtime};
use sheave_proto::{Server, resp::RespCodec};
use std::net::SocketAddr;
use std::time::Duration;
use support::kv::{Kv, KvService};

struct Args {
    addr: SocketAddr,
    threads: usize,
    max_in_flight: usize,
    idle_timeout: Option<Duration>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:6380".parse().unwrap(),
        threads: 1,
        max_in_flight: 128,
        idle_timeout: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--addr" => args.addr = value.parse().map_err(|e| bad(&e))?,
            "--threads" => args.threads = value.parse().map_err(|e| bad(&e))?,
            "--max-in-flight" => args.max_in_flight = value.parse().map_err(|e| bad(&e))?,
            "--idle-timeout" => {
                args.idle_timeout = Some(Duration::from_secs(value.parse().map_err(|e| bad(&e))?))
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("kv: {e}");
        std::process::exit(2)
    });
    let rt = Runtime::builder()
        .threads(args.threads)
        .build()
        .expect("runtime");
    let kv = Kv::new();
    rt.block_on(async move {
        let mut builder = Server::bind(args.addr)
            .codec(RespCodec::new())
            .threads(args.threads)
            .max_in_flight(args.max_in_flight)
            .shutdown_on_signals();
        if let Some(idle) = args.idle_timeout {
            builder = builder.idle_timeout(idle);
        }
        let server = builder.build().expect("bind");
        println!("listening on {}", server.local_addr());
        kv.set_port(server.local_addr().port());
        let served = server
            .serve(move |_peer: SocketAddr| {
                let kv = kv.clone();
                async move { Ok::<_, Error>(KvService::new(kv)) }
            })
            .await;
        if let Err(e) = served {
            eprintln!("kv: {e}");
        }
    });
}
