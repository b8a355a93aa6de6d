//! The RESP proxy against real `redis-server` shards: every key on the shard it hashes to,
//! multi-key commands split and merged, pipelining, RESP2 and RESP3 clients, refusals,
//! redis-cli and redis-benchmark through it, and a shard killed mid-run.

mod support;

use sheave_proto::resp::Frame;
use sheave_proxy::ketama::{KeyHash, Ring};
use std::process::Command;
use support::{Conn, RedisServer, bulk, endpoints, have, proxy, run};

fn shards(n: usize) -> Vec<RedisServer> {
    (0..n).map(|_| RedisServer::start()).collect()
}

fn config(shards: &[RedisServer], extra: &str) -> String {
    format!(
        r#"
        [[listener]]
        name = "redis"
        address = "127.0.0.1:0"
        protocol = "resp"
        cluster = "cache"

        [[cluster]]
        name = "cache"
        endpoints = {}
        {extra}
        "#,
        endpoints(shards)
    )
}

/// The ring the proxy builds for these shards with the default hash (`fnv1a_64`).
fn ring(shards: &[RedisServer]) -> Ring {
    ring_with(shards, KeyHash::Fnv1a64)
}

fn ring_with(shards: &[RedisServer], hash: KeyHash) -> Ring {
    let names: Vec<String> = shards.iter().map(|s| s.addr.to_string()).collect();
    let servers: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    Ring::new(&servers, hash, None)
}

/// twemproxy's `fnv1a_64` keeps only 32 bits of the 64-bit prime (0x1b3), so keys that
/// differ in their last characters cluster on the ring; the spreading tests hash with md5.
const MD5: &str = r#"hash = "md5""#;

#[test]
fn every_key_lands_on_the_shard_it_hashes_to() {
    if !have("redis-server", "redis-server") {
        return;
    }
    let shards = shards(3);
    let proxy = proxy(&config(&shards, MD5));
    let mut conn = Conn::open(proxy.addr("redis").unwrap());
    for i in 0..300 {
        let key = format!("user:{i}");
        assert_eq!(conn.cmd(&["SET", &key, &i.to_string()]), Frame::ok());
    }
    let ring = ring_with(&shards, KeyHash::Md5);
    let mut direct: Vec<Conn> = shards.iter().map(|s| Conn::open(s.addr)).collect();
    let mut per_shard = [0; 3];
    for i in 0..300 {
        let key = format!("user:{i}");
        let home = ring.shard(key.as_bytes());
        per_shard[home] += 1;
        for (s, shard) in direct.iter_mut().enumerate() {
            let got = shard.cmd(&["GET", &key]);
            if s == home {
                assert_eq!(got, bulk(&i.to_string()), "{key} missing on its shard {s}");
            } else {
                assert_eq!(got, Frame::Null, "{key} found on shard {s}, not its {home}");
            }
        }
        assert_eq!(conn.cmd(&["GET", &key]), bulk(&i.to_string()));
    }
    // Ketama spreads 300 keys over 3 equal shards roughly evenly.
    assert!(
        per_shard.iter().all(|n| (50..150).contains(n)),
        "{per_shard:?}"
    );
}

#[test]
fn keys_go_where_twemproxy_sends_them() {
    if !have("redis-server", "redis-server") || !have("nutcracker", "nutcracker") {
        return;
    }
    let shards = shards(3);
    let port = support::free_port();
    let dir = std::env::temp_dir().join(format!("sheave-proxy-nutcracker-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let servers: String = shards
        .iter()
        .map(|s| format!("    - {}:1\n", s.addr))
        .collect();
    let yml = dir.join("nutcracker.yml");
    std::fs::write(
        &yml,
        format!(
            "pool:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  servers:\n{servers}"
        ),
    )
    .unwrap();
    let mut nutcracker = support::Nutcracker::start(&yml, port);
    let mut twem = Conn::open(nutcracker.addr);
    for i in 0..200 {
        assert_eq!(twem.cmd(&["SET", &format!("k{i}"), "v"]), Frame::ok());
    }
    nutcracker.kill();
    let ring = ring(&shards);
    let mut direct: Vec<Conn> = shards.iter().map(|s| Conn::open(s.addr)).collect();
    for i in 0..200 {
        let key = format!("k{i}");
        let home = ring.shard(key.as_bytes());
        let found: Vec<usize> = (0..3)
            .filter(|s| direct[*s].cmd(&["EXISTS", &key]) == Frame::Integer(1))
            .collect();
        assert_eq!(
            found,
            vec![home],
            "{key}: twemproxy put it on {found:?}, ketama says {home}"
        );
    }
}

#[test]
fn multi_key_commands_are_split_across_shards_and_merged_in_order() {
    if !have("redis-server", "redis-server") {
        return;
    }
    let shards = shards(3);
    let proxy = proxy(&config(&shards, MD5));
    let mut conn = Conn::open(proxy.addr("redis").unwrap());
    let keys: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for (i, k) in keys.iter().enumerate() {
        mset.push(k.clone());
        mset.push(format!("value-{i}"));
    }
    let mset: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(conn.cmd(&mset), Frame::ok());
    // The keys really are spread: no shard has all of them.
    let ring = ring_with(&shards, KeyHash::Md5);
    let homes: std::collections::BTreeSet<usize> =
        keys.iter().map(|k| ring.shard(k.as_bytes())).collect();
    assert_eq!(homes.len(), 3);

    let mut mget = vec!["MGET", "m3", "absent"];
    mget.extend(keys.iter().rev().map(String::as_str));
    let Frame::Array(values) = conn.cmd(&mget) else {
        panic!("MGET did not return an array");
    };
    assert_eq!(values.len(), 22);
    assert_eq!(values[0], bulk("value-3"));
    assert_eq!(values[1], Frame::Null);
    for (j, v) in values[2..].iter().enumerate() {
        assert_eq!(*v, bulk(&format!("value-{}", 19 - j)));
    }
    let mut exists = vec!["EXISTS", "absent"];
    exists.extend(keys.iter().map(String::as_str));
    assert_eq!(conn.cmd(&exists), Frame::Integer(20));
    let mut del = vec!["DEL"];
    del.extend(keys[..10].iter().map(String::as_str));
    del.push("absent");
    assert_eq!(conn.cmd(&del), Frame::Integer(10));
    assert_eq!(conn.cmd(&exists), Frame::Integer(10));
}

#[test]
fn commands_that_cannot_be_proxied_get_a_clear_error() {
    if !have("redis-server", "redis-server") {
        return;
    }
    let shards = shards(2);
    let proxy = proxy(&config(&shards, ""));
    let mut conn = Conn::open(proxy.addr("redis").unwrap());
    for cmd in [
        &["MULTI"][..],
        &["SUBSCRIBE", "news"],
        &["KEYS", "*"],
        &["FLUSHALL"],
    ] {
        let Frame::Error(msg) = conn.cmd(cmd) else {
            panic!("{cmd:?} was not refused");
        };
        let msg = String::from_utf8_lossy(&msg).into_owned();
        assert!(
            msg.starts_with("ERR sheave-proxy: '") && msg.contains("cannot be proxied"),
            "{cmd:?}: {msg}"
        );
    }
    // The connection is still good.
    assert_eq!(conn.cmd(&["PING"]), Frame::Simple("PONG".into()));
}

#[test]
fn a_pipeline_of_commands_is_answered_in_order() {
    if !have("redis-server", "redis-server") {
        return;
    }
    let shards = shards(2);
    let proxy = proxy(&config(&shards, ""));
    let mut conn = Conn::open(proxy.addr("redis").unwrap());
    let mut cmds = Vec::new();
    for i in 0..500 {
        cmds.push(Frame::command(["SET", &format!("p{i}"), &i.to_string()]));
        cmds.push(Frame::command(["GET", &format!("p{i}")]));
        cmds.push(Frame::command(["INCR", "counter"]));
    }
    conn.send(&cmds); // one write: 1,500 commands in flight
    for i in 0..500 {
        assert_eq!(conn.reply(), Frame::ok());
        assert_eq!(conn.reply(), bulk(&i.to_string()));
        assert_eq!(conn.reply(), Frame::Integer(i + 1));
    }
}

#[test]
fn resp2_and_resp3_clients_get_their_own_protocol() {
    if !have("redis-server", "redis-server") {
        return;
    }
    let shards = shards(2);
    let proxy = proxy(&config(&shards, ""));
    let addr = proxy.addr("redis").unwrap();
    let mut two = Conn::open(addr);
    assert_eq!(two.cmd(&["HSET", "h", "f", "v"]), Frame::Integer(1));
    // RESP2: HGETALL is a flat array, and a missing key a null bulk string.
    two.send(&[
        Frame::command(["HGETALL", "h"]),
        Frame::command(["GET", "nope"]),
    ]);
    assert_eq!(two.raw(23), b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n$-1\r\n");

    let mut three = Conn::open(addr);
    three.send(&[Frame::command(["HELLO", "3"])]);
    let Frame::Map(hello) = three.reply() else {
        panic!("HELLO 3 was not answered with a map");
    };
    assert!(hello.contains(&(bulk("proto"), Frame::Integer(3))));
    // RESP3: a map, and the RESP3 null.
    three.send(&[
        Frame::command(["HGETALL", "h"]),
        Frame::command(["GET", "nope"]),
    ]);
    assert_eq!(three.raw(21), b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n_\r\n");
}

#[test]
fn redis_cli_and_redis_benchmark_work_through_the_proxy() {
    if !have("redis-server", "redis-server") || !have("redis-benchmark", "redis-tools") {
        return;
    }
    let shards = shards(2);
    let proxy = proxy(&config(&shards, ""));
    let port = proxy.addr("redis").unwrap().port().to_string();
    let cli = |args: &[&str]| {
        let out = run(Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args));
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["SET", "greeting", "hello"]), "OK\n");
    assert_eq!(cli(&["GET", "greeting"]), "hello\n");
    assert_eq!(cli(&["-3", "PING"]), "PONG\n");
    let out = run(Command::new("redis-benchmark").args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-n",
        "20000",
        "-c",
        "20",
        "-P",
        "16",
        "-r",
        "1000",
        "-t",
        "set,get",
        "-q",
    ]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    for test in ["SET", "GET"] {
        assert!(
            text.split(['\r', '\n'])
                .any(|l| l.starts_with(test) && l.contains("requests per second")),
            "no {test} result in {text:?}"
        );
    }
    assert!(!text.contains("ERR"), "{text}");
    // Every key redis-benchmark wrote is on its shard: count them on both.
    let ring = ring(&shards);
    let mut direct: Vec<Conn> = shards.iter().map(|s| Conn::open(s.addr)).collect();
    let mut seen = 0;
    for i in 0..1000 {
        let key = format!("key:{i:012}");
        let home = ring.shard(key.as_bytes());
        if direct[home].cmd(&["EXISTS", &key]) == Frame::Integer(1) {
            seen += 1;
        }
        assert_eq!(
            direct[1 - home].cmd(&["EXISTS", &key]),
            Frame::Integer(0),
            "{key}"
        );
    }
    assert!(
        seen > 900,
        "only {seen} of the 1,000 benchmark keys found on their shard"
    );
}

#[test]
fn a_shard_killed_mid_run_costs_no_idempotent_read() {
    if !have("redis-server", "redis-server") {
        return;
    }
    let mut shards = shards(3);
    let extra = r#"
        try_timeout = "200ms"
        request_timeout = "2s"
        [cluster.retry]
        max_attempts = 5
        [cluster.ejection]
        consecutive_failures = 2
        base = "30s"
    "#;
    let proxy = proxy(&config(&shards, extra));
    let addr = proxy.addr("redis").unwrap();
    let mut conn = Conn::open(addr);
    for i in 0..100 {
        assert_eq!(conn.cmd(&["SET", &format!("r{i}"), "v"]), Frame::ok());
    }
    let ring = ring(&shards);
    let victim = ring.shard(b"r0");
    // Readers in flight while the shard dies: four connections, pipelines of 10 GETs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let (mut reads, mut failures) = (0u64, Vec::new());
                let mut round = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) || round < 20 {
                    let cmds: Vec<Frame> = (0..10)
                        .map(|j| {
                            Frame::command(["GET", &format!("r{}", (r * 25 + j + round) % 100)])
                        })
                        .collect();
                    conn.send(&cmds);
                    for _ in 0..10 {
                        match conn.reply() {
                            Frame::Bulk(_) | Frame::Null => reads += 1,
                            other => failures.push(other),
                        }
                    }
                    round += 1;
                    if round > 100_000 {
                        break;
                    }
                }
                (reads, failures)
            })
        })
        .collect();
    // Kill once the readers have been running (their first replies are in), then let them
    // run on until each has done 20 rounds more after the kill.
    let mut probe = Conn::open(addr);
    assert_eq!(probe.cmd(&["GET", "r1"]), bulk("v"));
    shards[victim].kill();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for reader in readers {
        let (reads, failures) = reader.join().unwrap();
        assert!(failures.is_empty(), "failed reads: {failures:?}");
        total += reads;
    }
    assert!(total >= 800, "{total} reads");
    // After the ejection, the victim's keys are served by the others (as misses): reads
    // keep succeeding, and writes land on the key's new shard.
    let key = (0..100)
        .map(|i| format!("r{i}"))
        .find(|k| ring.shard(k.as_bytes()) == victim)
        .unwrap();
    assert_eq!(conn.cmd(&["GET", &key]), Frame::Null);
    assert_eq!(conn.cmd(&["SET", &key, "again"]), Frame::ok());
    assert_eq!(conn.cmd(&["GET", &key]), bulk("again"));
}

/// A chaos proxy (the kit's Toxiproxy) in front of `upstream`, on its own runtime thread.
fn chaos_in_front_of(
    upstream: std::net::SocketAddr,
) -> (std::net::SocketAddr, sheave_proto::chaos::ChaosHandle) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        sheave_core::Runtime::new().unwrap().block_on(async move {
            let proxy =
                sheave_proto::chaos::ChaosProxy::bind("127.0.0.1:0".parse().unwrap(), upstream)
                    .unwrap();
            tx.send((proxy.local_addr(), proxy.handle())).unwrap();
            proxy.run().await;
        })
    });
    rx.recv().unwrap()
}

#[test]
fn a_shard_that_hangs_mid_run_costs_no_idempotent_read() {
    if !have("redis-server", "redis-server") {
        return;
    }
    let shards = shards(3);
    // The third shard is reached through a chaos proxy, which will blackhole it: its
    // connections stay open and nothing comes back (a hung host, not a dead one).
    let (hung_addr, chaos) = chaos_in_front_of(shards[2].addr);
    let endpoints = format!(
        "[\"{}\", \"{}\", \"{hung_addr}\"]",
        shards[0].addr, shards[1].addr
    );
    let proxy = proxy(&format!(
        r#"
        [[listener]]
        name = "redis"
        address = "127.0.0.1:0"
        protocol = "resp"
        cluster = "cache"

        [[cluster]]
        name = "cache"
        endpoints = {endpoints}
        hash = "md5"
        try_timeout = "100ms"
        request_timeout = "3s"
        [cluster.retry]
        max_attempts = 5
        [cluster.ejection]
        consecutive_failures = 2
        base = "30s"
        "#
    ));
    let addr = proxy.addr("redis").unwrap();
    let mut conn = Conn::open(addr);
    for i in 0..100 {
        assert_eq!(conn.cmd(&["SET", &format!("h{i}"), "v"]), Frame::ok());
    }
    let names = [
        shards[0].addr.to_string(),
        shards[1].addr.to_string(),
        hung_addr.to_string(),
    ];
    let servers: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let ring = Ring::new(&servers, KeyHash::Md5, None);
    let on_hung: Vec<String> = (0..100)
        .map(|i| format!("h{i}"))
        .filter(|k| ring.shard(k.as_bytes()) == 2)
        .collect();
    assert!(!on_hung.is_empty(), "no key on the shard to hang");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let (mut reads, mut failures, mut after) = (0u64, Vec::new(), 0);
                let mut round = 0;
                // Runs until 20 rounds after the hang was switched on.
                while after < 20 && round < 100_000 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        after += 1;
                    }
                    let cmds: Vec<Frame> = (0..10)
                        .map(|j| {
                            Frame::command(["GET", &format!("h{}", (r * 25 + j + round) % 100)])
                        })
                        .collect();
                    conn.send(&cmds);
                    for _ in 0..10 {
                        match conn.reply() {
                            Frame::Bulk(_) | Frame::Null => reads += 1,
                            other => failures.push(other),
                        }
                    }
                    round += 1;
                }
                (reads, failures)
            })
        })
        .collect();
    let mut probe = Conn::open(addr);
    assert_eq!(probe.cmd(&["GET", "h1"]), bulk("v"));
    chaos.set(sheave_proto::chaos::Toxics::none().blackhole());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for reader in readers {
        let (reads, failures) = reader.join().unwrap();
        assert!(failures.is_empty(), "failed reads: {failures:?}");
        assert!(reads >= 200, "{reads} reads");
    }
    // The hung shard is off the ring: its keys are misses on their new shard, at once.
    assert_eq!(conn.cmd(&["GET", &on_hung[0]]), Frame::Null);
    chaos.stop();
}
