//! File discovery: endpoints added and removed in the file during a run — traffic follows,
//! nothing goes to a removed endpoint once a request has reached its replacement, and a file
//! that stops parsing keeps the endpoints read before.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

/// A backend that greets each connection with its name and closes.
fn named(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let _ = conn.write_all(name.as_bytes());
        }
    });
    addr
}

/// Replaces the file in one step (a rename), as a deploy tool would.
fn publish(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn who(proxy: SocketAddr) -> String {
    let mut conn = TcpStream::connect(proxy).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut name = String::new();
    conn.read_to_string(&mut name).unwrap();
    name
}

#[test]
fn endpoints_follow_the_file_and_a_removed_one_gets_nothing_more() {
    let (a, b) = (named("a"), named("b"));
    let dir = std::env::temp_dir().join(format!("sheave-proxy-discovery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("endpoints");
    publish(&file, &format!("# the tier\n{a}\n"));
    let proxy = support::proxy(&format!(
        r#"
        [[listener]]
        name = "l4"
        address = "127.0.0.1:0"
        protocol = "tcp"
        cluster = "tier"

        [[cluster]]
        name = "tier"
        policy = "round-robin"
        endpoints_file = "{}"
        discovery_interval = "20ms"
        "#,
        file.display()
    ));
    let addr = proxy.addr("l4").unwrap();
    for _ in 0..20 {
        assert_eq!(who(addr), "a");
    }
    // Swap a for b: connections move over within a few re-reads.
    publish(&file, &format!("{b}\n"));
    let switched = (0..5000).position(|_| who(addr) == "b");
    assert!(switched.is_some(), "traffic never reached the new endpoint");
    for i in 0..50 {
        assert_eq!(
            who(addr),
            "b",
            "connection {i} after the switch went to the removed endpoint"
        );
    }
    // A broken file keeps what was read before.
    publish(&file, "not an address\n");
    for _ in 0..50 {
        assert_eq!(who(addr), "b");
    }
    // Both: round robin uses both.
    publish(&file, &format!("{a}\n{b}\n"));
    let both = (0..5000).position(|_| who(addr) == "a");
    assert!(both.is_some(), "the re-added endpoint got nothing");
    let names: Vec<String> = (0..20).map(|_| who(addr)).collect();
    assert!(
        names.iter().any(|n| n == "a") && names.iter().any(|n| n == "b"),
        "{names:?}"
    );
}

#[test]
fn a_dns_name_gives_its_addresses_as_endpoints() {
    let a = named("a");
    let proxy = support::proxy(&format!(
        r#"
        [[listener]]
        name = "l4"
        address = "127.0.0.1:0"
        protocol = "tcp"
        cluster = "tier"

        [[cluster]]
        name = "tier"
        policy = "round-robin"
        dns = "localhost:{}"
        discovery_interval = "100ms"
        "#,
        a.port()
    ));
    let addr = proxy.addr("l4").unwrap();
    // localhost may also resolve to ::1, where nothing listens: those connects are refused
    // and retried on the other address, so every connection still reaches the backend.
    for _ in 0..20 {
        assert_eq!(who(addr), "a");
    }
}
