//! The redis protocol end to end, against programs no one here wrote: `redis-benchmark` and
//! `redis-cli` against our kv server, our client against a real `redis-server`; plus the two
//! abuse cases a server must survive — a peer that never reads, and a peer that sends garbage.
//!
//! Tests that need the redis binaries skip (with a reason) when they are absent, unless
//! `SHEAVE_REQUIRE_PEERS=1`, where they fail.

#[path = "../../examples/support/kv.rs"]
mod kv;
mod kv_semantics;
mod support;

use bytes::BytesMut;
use futures::future::join_all;
use sheave::Runtime;
use sheave::service::ErrorKind;
use sheave_proto::codec::Decoder;
use sheave_proto::resp::{self, Frame, RespCodec};
use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use support::{KvServer, RedisServer, command, have, run, value};

/// Writes `cmd` and reads one reply frame (blocking, with a 10 s read timeout).
#[track_caller]
fn roundtrip(stream: &mut TcpStream, cmd: &[&str]) -> Frame {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&command(cmd)).unwrap();
    let mut codec = RespCodec::new();
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..10_000 {
        if let Some(frame) = codec.decode(&mut buf).unwrap() {
            return frame;
        }
        let n = stream.read(&mut chunk).expect("a reply within 10 s");
        assert!(n > 0, "connection closed before the reply to {cmd:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
    panic!("no complete reply to {cmd:?}");
}

#[test]
fn redis_benchmark_with_pipelining_gets_no_errors_from_our_server() {
    if !have("redis-benchmark") {
        return;
    }
    let server = KvServer::start();
    let out = run(Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &server.addr.port().to_string()])
        .args([
            "-t",
            "ping,set,get,incr,mset",
            "-n",
            "20000",
            "-c",
            "20",
            "-P",
            "16",
            "-q",
        ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.to_lowercase().contains("error"), "{stderr}");
    for test in [
        "PING_INLINE",
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "MSET (10 keys)",
    ] {
        let line = stdout
            .split(['\r', '\n'])
            .rfind(|l| l.trim_start().starts_with(&format!("{test}:")))
            .unwrap_or_else(|| panic!("no {test} result in {stdout}"));
        assert!(line.contains("requests per second"), "{line}");
    }
    // 6 tests × 20,000 requests all reached the service, and the counter saw every INCR.
    assert!(server.calls.load(std::sync::atomic::Ordering::Relaxed) >= 120_000);
    let counter = server
        .kv
        .get(b"counter:__rand_int__", std::time::Instant::now());
    assert_eq!(counter.as_deref(), Some(&b"20000"[..]));
}

#[test]
fn redis_cli_round_trips_every_supported_command() {
    if !have("redis-cli") {
        return;
    }
    let server = KvServer::start();
    let port = server.addr.port().to_string();
    let cli = |args: &[&str]| {
        let out = run(Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args));
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let cases: &[(&[&str], &str)] = &[
        (&["PING"], "PONG\n"),
        (&["PING", "hello"], "hello\n"),
        (&["ECHO", "hi there"], "hi there\n"),
        (&["SET", "k", "v"], "OK\n"),
        (&["GET", "k"], "v\n"),
        (&["GET", "missing"], "\n"),
        (&["SET", "t", "v", "EX", "100"], "OK\n"),
        (&["SET", "p", "v", "PX", "100000"], "OK\n"),
        (
            &["SET", "bad", "v", "EX", "0"],
            "ERR invalid expire time in 'set' command\n\n",
        ),
        (&["EXISTS", "k", "t", "p", "nope"], "3\n"),
        (&["INCR", "n"], "1\n"),
        (&["INCR", "n"], "2\n"),
        (
            &["INCR", "k"],
            "ERR value is not an integer or out of range\n\n",
        ),
        (&["MGET", "k", "missing", "n"], "v\n\n2\n"),
        (&["DEL", "k", "t", "nope"], "2\n"),
        (&["EXISTS", "k"], "0\n"),
        (&["DBSIZE"], "2\n"),
        (&["CONFIG", "GET", "save"], "save\n\n"),
        (&["COMMAND", "COUNT"], "47\n"),
        (
            &["NOSUCH", "a"],
            "ERR unknown command 'NOSUCH', with args beginning with: 'a' \n\n",
        ),
        (&["FLUSHALL"], "OK\n"),
        (&["DBSIZE"], "0\n"),
    ];
    for (args, want) in cases {
        assert_eq!(cli(args), *want, "redis-cli {args:?}");
    }
}

/// Runs `f` on a fresh runtime, within 60 s.
fn within_a_minute<F: Future<Output = ()>>(f: F) {
    let rt = Runtime::new().unwrap();
    rt.block_on(sheave::time::timeout(Duration::from_secs(60), f))
        .expect("done within 60 s");
}

#[test]
fn our_client_speaks_resp3_to_a_real_redis_server_and_keeps_pushes_apart() {
    if !have("redis-server") {
        return;
    }
    let redis = RedisServer::start();
    within_a_minute(async {
        let hello = resp::Hello::new()
            .auth("default", "unused")
            .name("sheave-test");
        let client = resp::Client::connect_hello(redis.addr, Default::default(), hello)
            .await
            .unwrap();
        assert_eq!(client.protocol(), resp::Protocol::Resp3);
        assert_eq!(client.get("missing").await.unwrap(), None); // `_`, RESP3's null
        let cmd = |parts: &[&str]| client.command(Frame::command(parts));
        cmd(&["HSET", "h", "a", "1"]).await.unwrap();
        assert_eq!(
            cmd(&["HGETALL", "h"]).await.unwrap(),
            Frame::Map(vec![(Frame::bulk("a"), Frame::bulk("1"))])
        );
        assert_eq!(
            cmd(&["CLIENT", "GETNAME"]).await.unwrap(),
            Frame::bulk("sheave-test")
        );
        // Client tracking: redis pushes an invalidation on this connection when another
        // one changes a key this one read. The push is never taken for a reply.
        assert_eq!(
            cmd(&["CLIENT", "TRACKING", "ON"]).await.unwrap(),
            Frame::ok()
        );
        let mut pushes = client.pushes().expect("the first subscription");
        assert!(client.pushes().is_none(), "one subscriber at a time");
        let other = resp::Client::connect(redis.addr).await.unwrap();
        client.get("tracked").await.unwrap();
        other.set("tracked", "1").await.unwrap();
        assert_eq!(client.ping().await.unwrap(), "PONG");
        let invalidation = Frame::Push(vec![
            Frame::bulk("invalidate"),
            Frame::Array(vec![Frame::bulk("tracked")]),
        ]);
        assert_eq!(pushes.try_next(), Some(invalidation.clone()));
        // Nobody subscribed: dropped, and counted.
        drop(pushes);
        assert_eq!(client.dropped_pushes(), 0);
        client.get("tracked").await.unwrap();
        other.set("tracked", "2").await.unwrap();
        assert_eq!(client.ping().await.unwrap(), "PONG");
        assert_eq!(client.dropped_pushes(), 1);
        // Subscribed again, a stream: pushes interleaved with a pipeline of replies.
        let mut pushes = client.pushes().unwrap();
        client.get("tracked").await.unwrap();
        let (sets, gets) = futures::join!(
            other.set("tracked", "3"),
            join_all((0..500).map(|i| client.incr(format!("n:{}", i % 7))))
        );
        sets.unwrap();
        assert!(gets.into_iter().all(|r| r.is_ok()));
        assert_eq!(client.ping().await.unwrap(), "PONG");
        use futures::StreamExt;
        assert_eq!(pushes.next().await, Some(invalidation));
    });
}

#[test]
fn our_client_falls_back_to_resp2_when_the_server_refuses_hello() {
    if !have("redis-server") {
        return;
    }
    let redis = RedisServer::start_with(&["--rename-command", "HELLO", ""]);
    within_a_minute(async {
        let hello = resp::Hello::new()
            .auth("default", "unused")
            .name("old-school");
        let client = resp::Client::connect_hello(redis.addr, Default::default(), hello)
            .await
            .unwrap();
        assert_eq!(client.protocol(), resp::Protocol::Resp2);
        let cmd = |parts: &[&str]| client.command(Frame::command(parts));
        assert_eq!(
            cmd(&["CLIENT", "GETNAME"]).await.unwrap(),
            Frame::bulk("old-school")
        );
        cmd(&["HSET", "h", "a", "1"]).await.unwrap();
        assert_eq!(
            cmd(&["HGETALL", "h"]).await.unwrap(),
            Frame::Array(vec![Frame::bulk("a"), Frame::bulk("1")])
        );
    });
}

#[test]
fn our_client_speaks_resp3_to_our_kv_server() {
    let server = KvServer::start();
    within_a_minute(async {
        let client = resp::Client::connect_hello(
            server.addr,
            Default::default(),
            resp::Hello::new().name("me"),
        )
        .await
        .unwrap();
        assert_eq!(client.protocol(), resp::Protocol::Resp3);
        assert_eq!(client.get("missing").await.unwrap(), None);
        client.set("k", "v").await.unwrap();
        assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        let info = client
            .command(Frame::command(["INFO", "server"]))
            .await
            .unwrap();
        let Frame::Verbatim { text, .. } = info else {
            panic!("INFO in RESP3 is verbatim text: {info:?}")
        };
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains(&format!("tcp_port:{}\r\n", server.addr.port())),
            "{text}"
        );
        let refused = resp::Client::connect_hello(
            server.addr,
            Default::default(),
            resp::Hello::new().auth("bob", "secret"),
        )
        .await
        .unwrap_err();
        assert!(refused.to_string().contains("WRONGPASS"), "{refused}");
    });
}

#[test]
fn our_client_gets_what_a_real_redis_server_says() {
    if !have("redis-server") {
        return;
    }
    let redis = RedisServer::start();
    let rt = Runtime::new().unwrap();
    let checked = rt.block_on(sheave::time::timeout(Duration::from_secs(60), async {
        let client = resp::Client::connect(redis.addr).await.unwrap();
        assert_eq!(client.ping().await.unwrap(), "PONG");
        client.set("greeting", "hello").await.unwrap();
        assert_eq!(
            client.get("greeting").await.unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(client.get("missing").await.unwrap(), None);
        client
            .set_ex("short", "lived", Duration::from_secs(60))
            .await
            .unwrap();
        let ttl = client
            .command(Frame::command(["PTTL", "short"]))
            .await
            .unwrap();
        assert!(
            matches!(ttl, Frame::Integer(ms) if ms > 0 && ms <= 60_000),
            "{ttl:?}"
        );
        // Concurrent calls share the connection; redis answers in order.
        let counts = join_all((0..3).map(|_| client.incr("n"))).await;
        let mut counts: Vec<i64> = counts.into_iter().map(Result::unwrap).collect();
        counts.sort_unstable();
        assert_eq!(counts, [1, 2, 3]);
        let values = client.mget(&["greeting", "missing"]).await.unwrap();
        assert_eq!(values, [Some("hello".into()), None]);
        assert_eq!(
            client.exists(&["greeting", "n", "missing"]).await.unwrap(),
            2
        );
        let err = client.incr("greeting").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Service);
        assert!(err.to_string().contains("not an integer"), "{err}");
        let echo = client
            .command(Frame::command(["ECHO", "hi"]))
            .await
            .unwrap();
        assert_eq!(echo, Frame::Bulk("hi".into()));
        // A thousand pipelined writes and reads, each answered with its own value.
        let sets = join_all((0..1000).map(|i| {
            let client = &client;
            async move { client.set(format!("key:{i}"), format!("value:{i}")).await }
        }));
        assert!(sets.await.into_iter().all(|r| r.is_ok()));
        let gets = join_all((0..1000).map(|i| {
            let client = &client;
            async move { (i, client.get(format!("key:{i}")).await.unwrap()) }
        }));
        for (i, got) in gets.await {
            assert_eq!(got.as_deref(), Some(format!("value:{i}").as_bytes()));
        }
        assert_eq!(client.del(&["greeting", "n"]).await.unwrap(), 2);
    }));
    checked.expect("the redis exchange finished within 60 s");
}

/// Reads `/proc/sys/net/ipv4/<name>`'s largest value (the most a socket buffer can grow to).
fn sysctl_max(name: &str) -> usize {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .ok()
        .and_then(|s| s.split_whitespace().last()?.parse().ok())
        .unwrap_or(8 << 20)
}

#[test]
fn a_client_that_never_reads_stops_the_server_reading_and_others_are_still_served() {
    let server = KvServer::start();
    const VALUE: usize = 64 * 1024;
    server.kv.set("big".into(), value(VALUE), None);
    let mut greedy = TcpStream::connect(server.addr).unwrap();
    greedy.set_nonblocking(true).unwrap();
    let requests = command(&["GET", "big"]).repeat(10_000);
    let mut written = 0;
    let mut other = TcpStream::connect(server.addr).unwrap();
    // Each round trip of `other` gives the server's event loop turns in which the greedy
    // connection could run too: had it no bound, 300 rounds would answer all 10,000.
    for _ in 0..300 {
        while written < requests.len() {
            match greedy.write(&requests[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == IoKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        assert_eq!(
            roundtrip(&mut other, &["PING"]),
            Frame::Simple("PONG".into())
        );
    }
    let calls = server.calls.load(std::sync::atomic::Ordering::Relaxed) - 300;
    // What the answered GETs can occupy: the peer's receive buffer, our send buffer, the
    // dispatcher's write buffer bound (64 KiB) and its in-flight bound (32), with slack 2×.
    let kernel = sysctl_max("tcp_rmem") + sysctl_max("tcp_wmem");
    let bound = 2 * ((kernel + 64 * 1024) / VALUE + 32);
    eprintln!("wrote {written} bytes of requests; {calls} answered; bound {bound}");
    assert!(
        calls < 10_000,
        "the server answered everything: no backpressure"
    );
    assert!(
        calls <= bound,
        "{calls} answered GETs > {bound}: memory not bounded"
    );
    assert_eq!(
        roundtrip(&mut other, &["ECHO", "still here"]),
        Frame::Bulk("still here".into())
    );
}

#[test]
fn garbage_closes_that_connection_only_after_answering_what_came_before_and_saying_why() {
    let server = KvServer::start();
    let mut good = TcpStream::connect(server.addr).unwrap();
    assert_eq!(roundtrip(&mut good, &["SET", "a", "1"]), Frame::ok());
    let mut bad = TcpStream::connect(server.addr).unwrap();
    // A valid command first: it is answered before the connection is closed.
    bad.write_all(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*abc\r\n$garbage\r\n")
        .unwrap();
    let got = read_until_closed(&mut bad);
    assert!(
        got.starts_with("$1\r\n1\r\n-ERR Protocol error: "),
        "the good command's reply, then redis's protocol error reply: {got:?}"
    );
    assert_eq!(roundtrip(&mut good, &["GET", "a"]), Frame::Bulk("1".into()));
    let mut fresh = TcpStream::connect(server.addr).unwrap();
    assert_eq!(roundtrip(&mut fresh, &["INCR", "a"]), Frame::Integer(2));
}

/// Everything the server sends until it closes the connection (a reset counts as closed):
/// bounded in time (10 s) and in size (4 KiB: a closed connection does not keep talking).
#[track_caller]
fn read_until_closed(conn: &mut TcpStream) -> String {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == IoKind::ConnectionReset => break,
            Err(e) => panic!("the connection was not closed: {e:?}"),
        }
        assert!(
            got.len() < 4096,
            "a closed connection does not keep talking"
        );
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn malformed_or_oversized_resp3_closes_that_connection_only_with_a_protocol_error() {
    let server = KvServer::start();
    let mut good = TcpStream::connect(server.addr).unwrap();
    let hello = roundtrip(&mut good, &["HELLO", "3"]);
    assert!(matches!(hello, Frame::Map(_)), "{hello:?}");
    let cases: [&[u8]; 4] = [
        b"%600000\r\n",   // 1.2 Mi elements: over the budget
        b",1.5.x\r\n",    // not a double
        b"=2\r\nab\r\n",  // a verbatim string without its format
        b"$20000000\r\n", // a bulk string over 16 MiB
    ];
    for input in cases {
        let mut bad = TcpStream::connect(server.addr).unwrap();
        bad.write_all(&[&command(&["PING"])[..], input].concat())
            .unwrap();
        let got = read_until_closed(&mut bad);
        assert!(
            got.starts_with("+PONG\r\n-ERR Protocol error: "),
            "{input:?}: the PING's reply, then the protocol error: {got:?}"
        );
        // The RESP3 connection is still served, in RESP3.
        assert_eq!(roundtrip(&mut good, &["GET", "missing"]), Frame::Null);
    }
}
