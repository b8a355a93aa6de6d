//! The kv example's commands beside a real `redis-server`: the same replies, errors worded
//! the same (clients match on the text); and the promises redis's own tests cannot check
//! here — transactions atomic across threads, a SCAN cursor stable while keys change.

use crate::kv::{Kv, KvService};
use crate::support::{KvServer, RedisServer, command, have};
use bytes::BytesMut;
use sheave_proto::codec::Decoder;
use sheave_proto::resp::{Frame, RespCodec};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One connection that sends commands and reads one reply each.
struct Conn {
    stream: TcpStream,
    codec: RespCodec,
    buf: BytesMut,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Conn {
            stream,
            codec: RespCodec::new(),
            buf: BytesMut::new(),
        }
    }

    #[track_caller]
    fn call(&mut self, cmd: &[&str]) -> Frame {
        self.stream.write_all(&command(cmd)).unwrap();
        let mut chunk = [0u8; 4096];
        for _ in 0..10_000 {
            if let Some(frame) = self.codec.decode(&mut self.buf).unwrap() {
                return frame;
            }
            let n = self.stream.read(&mut chunk).expect("a reply within 10 s");
            assert!(n > 0, "connection closed before the reply to {cmd:?}");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        panic!("no complete reply to {cmd:?}");
    }
}

/// Commands whose replies must be the same from kv and redis-server, run in order on one
/// connection each (state carries over: the transaction cases depend on it).
const SCRIPT: &[&[&str]] = &[
    &["NOSUCH", "a", "b"],
    &["nosuch"],
    &["GET"],
    &["GET", "a", "b"],
    &["SET", "k"],
    &["SET", "k", "v", "NX", "XX"],
    &["SET", "k", "v", "EX", "0"],
    &["SET", "k", "v", "EX", "abc"],
    &["SET", "k", "v", "EX", "10", "PX", "10"],
    &["SET", "k", "v", "KEEPTTL", "EX", "10"],
    &["SET", "k", "v", "GET"],
    &["SET", "k", "w", "NX", "GET"],
    &["SET", "k", "w", "XX", "GET"],
    &["SET", "absent", "w", "XX"],
    &["SETNX", "k", "x"],
    &["GET", "k"],
    &["INCR", "k"],
    &["INCRBY", "n", "abc"],
    &["INCRBY", "n", "9223372036854775807"],
    &["INCR", "n"],
    &["DECRBY", "m", "5"],
    &["DECR", "m"],
    &["INCRBY", "n", "01"],
    &["INCRBYFLOAT", "f", "1.5"],
    &["INCRBYFLOAT", "f", "abc"],
    &["INCRBYFLOAT", "f", "inf"],
    &["APPEND", "s", "ab"],
    &["APPEND", "s", "cd"],
    &["STRLEN", "s"],
    &["STRLEN", "absent"],
    &["GETDEL", "s"],
    &["GETDEL", "s"],
    &["MSET", "a", "1", "b"],
    &["MSET", "a", "1", "b", "2"],
    &["MSETNX", "a", "3", "c", "4"],
    &["MSETNX", "c", "4", "d", "5"],
    &["MGET", "a", "b", "c", "absent"],
    &["EXISTS", "a", "a", "absent"],
    &["TYPE", "a"],
    &["TYPE", "absent"],
    &["TTL", "a"],
    &["TTL", "absent"],
    &["PTTL", "absent"],
    &["EXPIRE", "a", "abc"],
    &["EXPIRE", "a", "100", "NX", "XX"],
    &["EXPIRE", "a", "100", "GT", "LT"],
    &["EXPIRE", "a", "100", "ZZ"],
    &["EXPIRE", "a", "100", "XX"],
    &["EXPIRE", "a", "100", "GT"],
    &["EXPIRE", "a", "100", "NX"],
    &["EXPIRE", "a", "200", "NX"],
    &["EXPIRE", "a", "200", "GT"],
    &["TTL", "a"],
    &["PERSIST", "a"],
    &["PERSIST", "a"],
    &["EXPIRE", "absent", "10"],
    &["EXPIRE", "b", "0"],
    &["EXISTS", "b"],
    &["GETEX", "a", "EX", "0"],
    &["GETEX", "a", "PERSIST", "EX", "10"],
    &["GETEX", "a", "EX", "10"],
    &["TTL", "a"],
    &["GETEX", "absent"],
    &["DEL", "a", "absent", "c"],
    &["UNLINK", "d"],
    &["SELECT", "0"],
    &["SELECT", "1"],
    &["SELECT", "x"],
    &["HELLO", "4"],
    &["HELLO", "x"],
    &["HELLO", "2", "AUTH", "bob", "pw"],
    &["HELLO", "2", "FOO"],
    &["AUTH", "pw"],
    &["AUTH", "default", "pw"],
    &["AUTH", "bob", "pw"],
    &["AUTH", "a", "b", "c"],
    &["CLIENT", "NOSUCH"],
    &["CLIENT", "SETNAME", "a b"],
    &["CLIENT", "SETNAME", "named"],
    &["CLIENT", "GETNAME"],
    &["CLIENT", "SETNAME"],
    &["ECHO"],
    &["PING", "a", "b"],
    &["SCAN", "abc"],
    &["SCAN", "0", "COUNT", "0"],
    &["SCAN", "0", "COUNT", "x"],
    &["SCAN", "0", "FOO", "1"],
    &["EXEC"],
    &["DISCARD"],
    &["MULTI"],
    &["MULTI"],
    &["WATCH", "a"],
    &["SET", "t", "1"],
    &["INCR", "t"],
    &["GET", "t"],
    &["EXEC"],
    &["MULTI"],
    &["SET", "t", "x"],
    &["GET"],
    &["INCR", "t"],
    &["EXEC"],
    &["GET", "t"],
    &["MULTI"],
    &["SET", "t", "x"],
    &["INCR", "t"],
    &["EXEC"],
    &["MULTI"],
    &["SET", "t", "y"],
    &["DISCARD"],
    &["GET", "t"],
    &["FLUSHALL", "NOW"],
    &["DBSIZE"],
];

#[test]
fn kv_answers_as_redis_server_does_errors_worded_the_same() {
    if !have("redis-server") {
        return;
    }
    // kv has one database, as a redis-server with `databases 1`.
    let redis = RedisServer::start_with(&["--databases", "1"]);
    let kv = KvServer::start();
    let mut ours = Conn::open(kv.addr);
    let mut theirs = Conn::open(redis.addr);
    let mut differences = Vec::new();
    for cmd in SCRIPT {
        let (a, b) = (ours.call(cmd), theirs.call(cmd));
        if a != b {
            differences.push(format!("{cmd:?}: kv {a:?}, redis-server {b:?}"));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// Runs `cmds` on `svc` and returns the last reply.
fn run(svc: &KvService, cmds: &[&[&str]]) -> Frame {
    let now = Instant::now();
    let mut last = Frame::Null;
    for cmd in cmds {
        last = svc.execute_at(&Frame::command(*cmd), now);
    }
    last
}

#[test]
fn transactions_and_mset_are_atomic_across_threads() {
    let kv = Kv::new();
    const ROUNDS: usize = 2_000;
    let writer = |kv: Kv, multi: bool| {
        std::thread::spawn(move || {
            let svc = KvService::new(kv);
            for i in 0..ROUNDS {
                let reply = if multi {
                    run(
                        &svc,
                        &[&["MULTI"], &["INCR", "a"], &["INCR", "b"], &["EXEC"]],
                    )
                } else {
                    let i = i.to_string();
                    run(&svc, &[&["MSET", "c", &i, "d", &i]])
                };
                assert!(!matches!(reply, Frame::Error(_)), "{reply:?}");
            }
        })
    };
    let writers = [writer(kv.clone(), true), writer(kv.clone(), false)];
    let reader = KvService::new(kv.clone());
    let mut seen = 0;
    while writers.iter().any(|w| !w.is_finished()) || seen == 0 {
        let reply = run(
            &reader,
            &[
                &["MULTI"],
                &["GET", "a"],
                &["GET", "b"],
                &["MGET", "c", "d"],
                &["EXEC"],
            ],
        );
        let Frame::Array(items) = reply else {
            panic!("EXEC: {reply:?}")
        };
        assert_eq!(items[0], items[1], "a transaction seen half done");
        let Frame::Array(cd) = &items[2] else {
            panic!("MGET: {:?}", items[2])
        };
        assert_eq!(cd[0], cd[1], "an MSET seen half done");
        seen += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    let total = ROUNDS.to_string();
    assert_eq!(run(&reader, &[&["GET", "a"]]), Frame::bulk(total.clone()));
    assert_eq!(run(&reader, &[&["GET", "b"]]), Frame::bulk(total));
}

#[test]
fn a_scan_returns_every_key_present_throughout_once_while_keys_come_and_go() {
    let kv = Kv::new();
    let svc = KvService::new(kv);
    let stable: Vec<String> = (0..1000).map(|i| format!("stable:{i}")).collect();
    for k in &stable {
        run(&svc, &[&["SET", k, "v"]]);
    }
    for i in 0..500 {
        run(&svc, &[&["SET", &format!("doomed:{i}"), "v"]]);
    }
    let mut cursor = "0".to_string();
    let mut returned = Vec::new();
    let mut calls = 0;
    loop {
        let reply = run(&svc, &[&["SCAN", &cursor, "COUNT", "7"]]);
        let Frame::Array(parts) = reply else {
            panic!("{reply:?}")
        };
        let [Frame::Bulk(next), Frame::Array(keys)] = &parts[..] else {
            panic!("{parts:?}")
        };
        returned.extend(keys.iter().map(|k| match k {
            Frame::Bulk(k) => String::from_utf8_lossy(k).into_owned(),
            other => panic!("{other:?}"),
        }));
        // Between calls: new keys arrive, doomed ones leave.
        run(&svc, &[&["SET", &format!("new:{calls}"), "v"]]);
        run(&svc, &[&["DEL", &format!("doomed:{calls}")]]);
        calls += 1;
        assert!(calls < 10_000, "the scan does not end");
        cursor = String::from_utf8_lossy(next).into_owned();
        if cursor == "0" {
            break;
        }
    }
    let unique: HashSet<&String> = returned.iter().collect();
    assert_eq!(unique.len(), returned.len(), "a key returned twice");
    for k in &stable {
        assert!(unique.contains(k), "{k} never returned");
    }
    // MATCH filters, TYPE string keeps everything, other types nothing.
    let reply = run(
        &svc,
        &[&["SCAN", "0", "MATCH", "stable:1?", "COUNT", "100000"]],
    );
    let Frame::Array(parts) = reply else { panic!() };
    assert_eq!(parts[0], Frame::bulk("0"));
    assert_eq!(parts[1].len(), 10);
    let reply = run(&svc, &[&["SCAN", "0", "TYPE", "list", "COUNT", "100000"]]);
    let Frame::Array(parts) = reply else { panic!() };
    assert_eq!(parts[1], Frame::Array(vec![]));
}

/// Everything `addr` writes after `input`, until it closes the connection.
fn until_closed(addr: SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(input).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("not closed after QUIT: {e} (got {got:?})"),
        }
        assert!(got.len() < 4096, "still talking after QUIT: {got:?}");
    }
}

#[test]
fn quit_is_answered_then_the_connection_closes_and_what_followed_is_not_run() {
    if !have("redis-server") {
        return;
    }
    let redis = RedisServer::start();
    let kv = KvServer::start();
    let input = [
        command(&["SET", "a", "1"]),
        command(&["QUIT"]),
        command(&["SET", "a", "2"]),
    ]
    .concat();
    for addr in [redis.addr, kv.addr] {
        assert_eq!(until_closed(addr, &input), b"+OK\r\n+OK\r\n");
        assert_eq!(Conn::open(addr).call(&["GET", "a"]), Frame::bulk("1"));
    }
}

#[test]
fn a_transaction_queue_is_bounded_and_a_refusal_aborts_it() {
    let svc = KvService::new(Kv::new());
    let now = Instant::now();
    let exec = |cmd: &[&str]| svc.execute_at(&Frame::command(cmd), now);
    assert_eq!(exec(&["MULTI"]), Frame::ok());
    let queued = Frame::Simple("QUEUED".into());
    for _ in 0..64 * 1024 {
        assert_eq!(exec(&["INCR", "n"]), queued);
    }
    let refused = exec(&["INCR", "n"]);
    assert!(
        matches!(&refused, Frame::Error(e) if e.starts_with(b"ERR a transaction may queue at most")),
        "{refused:?}"
    );
    assert!(matches!(exec(&["EXEC"]), Frame::Error(e) if e.starts_with(b"EXECABORT")));
    assert_eq!(exec(&["GET", "n"]), Frame::Null, "nothing of it ran");
    // Bytes count too: 65 values of 1 MiB pass 64 MiB.
    let mib = "x".repeat(1 << 20);
    assert_eq!(exec(&["MULTI"]), Frame::ok());
    for _ in 0..63 {
        assert_eq!(exec(&["SET", "big", &mib]), queued);
    }
    assert!(matches!(exec(&["SET", "big", &mib]), Frame::Error(_)));
    assert!(matches!(exec(&["EXEC"]), Frame::Error(e) if e.starts_with(b"EXECABORT")));
}
