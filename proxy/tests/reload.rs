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
fn a_reload_that_changes_more_than_endpoints_is_refused_whole() {
    let (a, b) = (named("a"), named("b"));
    let proxy = support::proxy(&config(&[a], 0));
    let addr = proxy.addr("l4").unwrap();
    let moved = config(&[b], 0).replace("round-robin", "p2c-peak-ewma");
    let err = proxy.reload(Config::parse(&moved).unwrap()).unwrap_err();
    assert_eq!(err.field, "cluster[0]");
    assert!(err.reason.contains("restart"), "{err}");
    let err = proxy
        .reload(
            Config::parse(&config(&[a], 0).replace(
                "protocol = \"tcp\"",
                "protocol = \"tcp\"\nmax_connections = 5",
            ))
            .unwrap(),
        )
        .unwrap_err();
    assert_eq!(err.field, "listener[0]");
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
    assert!(
        reloaded.contains("the endpoints of 1 clusters changed"),
        "{reloaded}"
    );
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
    assert!(
        reloaded.contains("the endpoints of 1 clusters changed"),
        "{reloaded}"
    );
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
