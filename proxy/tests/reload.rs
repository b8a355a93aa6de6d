//! Reloads: endpoint changes applied live (library and `SIGHUP`), the connections open
//! across a reload untouched, and a refused reload keeping the running config.

mod support;

use sheave_proxy::config::Config;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A backend that greets each connection with its name, then echoes until EOF.
fn named(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                if conn.write_all(name.as_bytes()).is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn config(endpoints: &[SocketAddr], port: u16) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
        [[listener]]
        name = "l4"
        address = "127.0.0.1:{port}"
        protocol = "tcp"
        cluster = "tier"

        [[cluster]]
        name = "tier"
        policy = "round-robin"
        endpoints = [{}]
        "#,
        list.join(", ")
    )
}

/// Opens a connection and reads the backend's one-letter greeting.
fn open(proxy: SocketAddr) -> (TcpStream, String) {
    let mut conn = TcpStream::connect(proxy).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut name = [0u8; 1];
    conn.read_exact(&mut name).unwrap();
    (conn, String::from_utf8_lossy(&name).into_owned())
}

#[track_caller]
fn still_echoes(conn: &mut TcpStream) {
    conn.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
}

#[test]
fn a_reload_moves_new_connections_and_keeps_the_open_ones() {
    let (a, b) = (named("a"), named("b"));
    let proxy = support::proxy(&config(&[a], 0));
    let addr = proxy.addr("l4").unwrap();
    let (mut kept, name) = open(addr);
    assert_eq!(name, "a");
    let n = proxy
        .reload(Config::parse(&config(&[b], 0)).unwrap())
        .unwrap();
    assert_eq!(n, 1);
    // Applied on the balancer's next poll: within a few connections.
    assert!(
        (0..1000).any(|_| open(addr).1 == "b"),
        "the reload never took effect"
    );
    for _ in 0..20 {
        assert_eq!(
            open(addr).1,
            "b",
            "a connection went to the removed endpoint"
        );
    }
    still_echoes(&mut kept); // opened before the reload, to the removed endpoint
}

#[test]
fn a_reload_that_changes_a_cluster_setting_rebuilds_it_for_new_connections() {
    let (a, b) = (named("a"), named("b"));
    let proxy = support::proxy(&config(&[a], 0));
    let addr = proxy.addr("l4").unwrap();
    let (mut kept, name) = open(addr);
    assert_eq!(name, "a");
    // Another policy and other endpoints: the cluster's stack is rebuilt on every thread.
    let changed = config(&[b], 0).replace("round-robin", "p2c-peak-ewma");
    assert_eq!(proxy.reload(Config::parse(&changed).unwrap()).unwrap(), 1);
    for _ in 0..20 {
        assert_eq!(open(addr).1, "b", "a new connection went to the old stack");
    }
    still_echoes(&mut kept); // spliced on the old stack, which it keeps
}

#[test]
fn a_refused_reload_names_the_field_and_keeps_the_running_config() {
    let (a, b) = (named("a"), named("b"));
    let proxy = support::proxy(&config(&[a], 0));
    let addr = proxy.addr("l4").unwrap();
    let refused = |text: String, field: &str| {
        let err = proxy.reload(Config::parse(&text).unwrap()).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.reason.contains("restart"), "{err}");
    };
    // Each also moves the endpoints to b, which must not happen.
    refused(format!("threads = 3\n{}", config(&[b], 0)), "threads");
    refused(
        format!("[admin]\naddress = \"127.0.0.1:0\"\n{}", config(&[b], 0)),
        "admin",
    );
    refused(
        config(&[b], 0).replace(
            "protocol = \"tcp\"",
            "protocol = \"tcp\"\nmax_connections = 5",
        ),
        "listener[0].max_connections",
    );
    refused(
        config(&[b], 0).replace("\"tcp\"", "\"http\""),
        "listener[0].protocol",
    );
    // A new address that cannot be bound (a backend holds it): refused, nothing changed.
    let err = proxy
        .reload(Config::parse(&config(&[b], a.port())).unwrap())
        .unwrap_err();
    assert_eq!(err.field, "listener[0].address", "{err}");
    let two = format!(
        "[[listener]]\nname = \"two\"\naddress = \"{a}\"\nprotocol = \"tcp\"\ncluster = \"tier\"\n"
    );
    let err = proxy
        .reload(Config::parse(&(config(&[b], 0) + &two)).unwrap())
        .unwrap_err();
    assert_eq!(err.field, "listener[1].address", "{err}");
    assert_eq!(proxy.listeners().len(), 1);
    assert_eq!(proxy.addr("l4"), Some(addr));
    // A cluster still in use cannot be removed: the new file does not validate.
    let err =
        Config::parse(&config(&[b], 0).replace("name = \"tier\"", "name = \"other\"")).unwrap_err();
    assert_eq!(err.field, "listener[0].cluster", "{err}");
    for _ in 0..20 {
        assert_eq!(open(addr).1, "a", "a refused reload changed something");
    }
}

#[test]
fn sighup_reloads_the_file_and_a_bad_file_keeps_the_running_config() {
    let (a, b) = (named("a"), named("b"));
    let dir = std::env::temp_dir().join(format!("sheave-proxy-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("proxy.toml");
    let port = support::free_port();
    std::fs::write(&file, config(&[a], port)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sheave-proxy"))
        .arg("--config")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("l4 listening on"), "{line}");
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let hup = |pid: u32| {
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let (mut kept, name) = open(addr);
    assert_eq!(name, "a");

    std::fs::write(&file, "[[listener]]\nname = 3\n").unwrap();
    hup(child.id());
    let refused = stderr.next().unwrap().unwrap();
    assert!(
        refused.contains("refused, the running config is kept: listener[0].name: invalid type"),
        "{refused}"
    );
    assert_eq!(open(addr).1, "a");

    std::fs::write(&file, config(&[b], port)).unwrap();
    hup(child.id());
    let reloaded = stderr.next().unwrap().unwrap();
    assert!(reloaded.contains(": 1 clusters changed"), "{reloaded}");
    assert!(
        (0..1000).any(|_| open(addr).1 == "b"),
        "the reload never took effect"
    );
    assert_eq!(open(addr).1, "b");
    still_echoes(&mut kept);
    drop(kept); // else the drain waits its 10 s for this spliced connection

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// Replaces `file` whole (written beside it, then renamed over it), so the watcher never
/// reads it half-written.
fn publish(file: &std::path::Path, text: &str) {
    let next = file.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, file).unwrap();
}

#[test]
fn watch_reloads_the_file_when_it_changes_and_a_bad_change_keeps_the_running_config() {
    let (a, b) = (named("a"), named("b"));
    let dir = std::env::temp_dir().join(format!("sheave-proxy-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("proxy.toml");
    let port = support::free_port();
    std::fs::write(&file, config(&[a], port)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sheave-proxy"))
        .arg("--config")
        .arg(&file)
        .arg("--watch")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("l4 listening on"), "{line}");
    // Each reload (or refusal) logs one line: the event the test waits on.
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (mut kept, name) = open(addr);
    assert_eq!(name, "a");

    publish(&file, "[[listener]]\nname = 3\n");
    let refused = stderr.next().unwrap().unwrap();
    assert!(
        refused.contains("refused, the running config is kept: listener[0].name: invalid type"),
        "{refused}"
    );
    assert_eq!(open(addr).1, "a");

    publish(&file, &config(&[b], port));
    let reloaded = stderr.next().unwrap().unwrap();
    assert!(reloaded.contains(": 1 clusters changed"), "{reloaded}");
    assert!(
        (0..1000).any(|_| open(addr).1 == "b"),
        "the reload never took effect"
    );
    assert_eq!(open(addr).1, "b");
    still_echoes(&mut kept);
    drop(kept);

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP/1.1 keep-alive backend that answers every request with its name as the body;
/// `/slow` answers after 300 ms.
fn http_named(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let slow = line.split(' ').nth(1).is_some_and(|p| p == "/slow");
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        if header == "\r\n" {
                            break;
                        }
                    }
                    if slow {
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{name}");
                    if conn.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// One GET of `path` on a kept-alive connection: the status and the body.
fn get(reader: &mut BufReader<TcpStream>, path: &str) -> (u16, String) {
    reader
        .get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes())
        .unwrap();
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header == "\r\n" {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    (code, String::from_utf8_lossy(&body).trim().to_string())
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    BufReader::new(conn)
}

/// An HTTP listener whose `/x` route goes to `x_cluster`; cluster `a` answers within
/// `timeout`; `more` is appended (another cluster, a listener).
fn http_config(a: SocketAddr, b: SocketAddr, x_cluster: &str, timeout: &str, more: &str) -> String {
    format!(
        r#"
        [[listener]]
        name = "web"
        address = "127.0.0.1:0"
        protocol = "http"
        cluster = "a"

        [[route]]
        listener = "web"
        path_prefix = "/x"
        cluster = "{x_cluster}"

        [[cluster]]
        name = "a"
        policy = "round-robin"
        endpoints = ["{a}"]
        request_timeout = "{timeout}"
        try_timeout = "{timeout}"

        [[cluster]]
        name = "b"
        policy = "round-robin"
        endpoints = ["{b}"]
        {more}
        "#
    )
}

#[test]
fn a_reload_under_load_moves_a_route_and_changes_a_timeout_and_loses_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};
    let (a, b) = (http_named("a"), http_named("b"));
    let proxy = support::proxy(&http_config(a, b, "a", "10s", ""));
    let addr = proxy.addr("web").unwrap();
    // The load: 4 clients, each on one kept-alive connection opened before the reloads,
    // GETting /x in a closed loop until told to stop (at most 100_000 each).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, sent, seen) = (stop.clone(), sent.clone(), seen.clone());
            let mut conn = connect(addr);
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                for _ in 0..100_000 {
                    if stop.load(Relaxed) {
                        break;
                    }
                    let (code, body) = get(&mut conn, "/x");
                    assert_eq!(code, 200, "a request failed across a reload: {body}");
                    sent.fetch_add(1, Relaxed);
                    answers.push(body);
                }
                seen.lock().unwrap().extend(answers.iter().cloned());
                answers
            })
        })
        .collect();
    let wait_for = |n: usize| {
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while sent.load(Relaxed) < n {
            assert!(std::time::Instant::now() < until, "the load stalled");
            std::thread::yield_now();
        }
    };
    wait_for(500);
    // Reload 1: the route /x moves from cluster a to cluster b.
    assert_eq!(
        proxy
            .reload(Config::parse(&http_config(a, b, "b", "10s", "")).unwrap())
            .unwrap(),
        0,
        "no cluster changed, a route did"
    );
    let moved_at = sent.load(Relaxed);
    wait_for(moved_at + 2000);
    // Reload 2: cluster a's request timeout drops below what /slow takes.
    let mut probe = connect(addr);
    assert_eq!(get(&mut probe, "/slow"), (200, "a".to_string()));
    assert_eq!(
        proxy
            .reload(Config::parse(&http_config(a, b, "b", "100ms", "")).unwrap())
            .unwrap(),
        1
    );
    // The same connection, opened before: its next request has the new deadline (the
    // old one, 10 s, answered 200 after the backend's 300 ms).
    assert_eq!(get(&mut probe, "/slow").0, 504);
    let timed_at = sent.load(Relaxed);
    wait_for(timed_at + 1000);
    // Reload 3: a second listener starts; the load on the first goes on untouched.
    let two = "[[listener]]\nname = \"two\"\naddress = \"127.0.0.1:0\"\nprotocol = \"http\"\ncluster = \"a\"\n";
    assert_eq!(
        proxy
            .reload(Config::parse(&http_config(a, b, "b", "100ms", two)).unwrap())
            .unwrap(),
        0
    );
    let mut fresh = connect(proxy.addr("two").expect("the new listener"));
    assert_eq!(get(&mut fresh, "/"), (200, "a".to_string()));
    assert_eq!(
        get(&mut fresh, "/x"),
        (200, "a".to_string()),
        "two has no /x route"
    );
    let added_at = sent.load(Relaxed);
    wait_for(added_at + 1000);
    stop.store(true, Relaxed);
    let per_client: Vec<Vec<String>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let total: usize = per_client.iter().map(Vec::len).sum();
    assert_eq!(total, sent.load(Relaxed));
    for answers in &per_client {
        // On each connection: a, then b once the route moved, and never a again.
        let first_b = answers
            .iter()
            .position(|x| x == "b")
            .expect("never moved to b");
        assert!(
            answers[first_b..].iter().all(|x| x == "b"),
            "a request went back to a after the route moved"
        );
        assert!(answers[..first_b].iter().all(|x| x == "a"));
    }
    let seen = seen.lock().unwrap();
    let on_b = seen.iter().filter(|x| *x == "b").count();
    println!("{total} requests across 3 reloads, 0 failed; {on_b} to b after the route moved");
    // Every request after the first reload returned went to b; only those in flight at
    // it (at most one per client) could have been on a.
    assert!(
        on_b + moved_at + 4 >= total,
        "{on_b} on b of {total}, moved at {moved_at}"
    );
}

#[test]
fn a_reload_moves_a_listener_and_its_open_connections_finish_on_the_old_socket() {
    let a = named("a");
    let proxy = support::proxy(&config(&[a], 0));
    let old = proxy.addr("l4").unwrap();
    let (mut kept, _) = open(old);
    // Listener l4 moves to another port, and listener "two" starts.
    let port = support::free_port();
    let two = "[[listener]]\nname = \"two\"\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ncluster = \"tier\"\n";
    assert_eq!(
        proxy
            .reload(Config::parse(&(config(&[a], port) + two)).unwrap())
            .unwrap(),
        0
    );
    let moved = proxy.addr("l4").unwrap();
    assert_eq!(moved.port(), port);
    assert_eq!(open(moved).1, "a");
    assert_eq!(open(proxy.addr("two").unwrap()).1, "a");
    // The old socket stops accepting (its drain closes it), and the connection opened on
    // it before still works.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(old).is_ok() {
        assert!(
            std::time::Instant::now() < until,
            "the old listener still accepts"
        );
        std::thread::yield_now();
    }
    still_echoes(&mut kept);
    // Then "two" is removed again: l4 goes on.
    proxy
        .reload(Config::parse(&config(&[a], port)).unwrap())
        .unwrap();
    assert_eq!(proxy.listeners().len(), 1);
    assert_eq!(open(moved).1, "a");
}

#[test]
fn a_ketama_cluster_reloads_its_settings_but_not_its_ring() {
    let have_redis = support::have("redis-server", "redis-server");
    let shard = have_redis.then(support::RedisServer::start);
    // Without redis the stacks are still built and swapped (they connect lazily).
    let address = shard
        .as_ref()
        .map_or_else(|| "127.0.0.1:1".to_string(), |s| s.addr.to_string());
    let config = |extra: &str| {
        format!(
            r#"
            [[listener]]
            name = "redis"
            address = "127.0.0.1:0"
            protocol = "resp"
            cluster = "cache"

            [[cluster]]
            name = "cache"
            endpoints = ["{address}"]
            {extra}
            "#
        )
    };
    let proxy = support::proxy(&config(""));
    let addr = proxy.addr("redis").unwrap();
    let mut before = have_redis.then(|| support::Conn::open(addr));
    for (extra, field) in [
        ("hash = \"md5\"", "cluster[0].hash"),
        ("hash_tag = \"{}\"", "cluster[0].hash_tag"),
    ] {
        let err = proxy
            .reload(Config::parse(&config(extra)).unwrap())
            .unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
    let err = proxy
        .reload(Config::parse(&config("").replace(&address, "127.0.0.1:2")).unwrap())
        .unwrap_err();
    assert_eq!(err.field, "cluster[0].endpoints", "{err}");
    // Timeouts and limits rebuild the stack, for new connections.
    let settings = "request_timeout = \"2s\"\ntry_timeout = \"1s\"\nconcurrency_limit = 64";
    assert_eq!(
        proxy
            .reload(Config::parse(&config(settings)).unwrap())
            .unwrap(),
        1
    );
    if let Some(before) = &mut before {
        let mut after = support::Conn::open(addr);
        let ok = sheave_proto::resp::Frame::ok();
        assert_eq!(after.cmd(&["SET", "k", "new"]), ok);
        assert_eq!(before.cmd(&["GET", "k"]), support::bulk("new"));
        assert_eq!(before.cmd(&["SET", "k", "old"]), ok);
        assert_eq!(after.cmd(&["GET", "k"]), support::bulk("old"));
    }
}
