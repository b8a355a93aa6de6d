//! The client libraries people use, at their default settings, against our kv server — and
//! against a real `redis-server` as the control (a case that fails there is a mistake in the
//! test, not in kv): redis-py (`redis_py.py`) and ioredis (`ioredis.js`), each used as its
//! README shows, running connect, SET/GET, a 3,000-command pipeline checked in order,
//! binary-safe keys and values, a 1 MiB value, 32 concurrent connections from one pool,
//! expiry, a transaction, and an unknown command.
//!
//! The libraries are looked for under `$SHEAVE_PEER_CLIENTS` (default `target/peer-clients`):
//! `python/` (`pip install --target`) and `node/node_modules` (`npm install --prefix node`),
//! where `.ci/run` installs them. When python3, node or a library is missing the test prints
//! a skip reason — and fails when `SHEAVE_REQUIRE_PEERS=1`.

#[path = "../../examples/support/kv.rs"]
mod kv;
#[allow(dead_code)] // the clients use only the servers and `run`
#[path = "../proto/support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use support::{KvServer, RedisServer, have, run};

fn cache() -> PathBuf {
    std::env::var_os("SHEAVE_PEER_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peer-clients"))
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// A client library: how to run its script, and how to check that it is installed.
struct Peer {
    name: &'static str,
    interpreter: &'static str,
    script: &'static str,
    /// The environment variable that points the interpreter at the cache, and the directory.
    path_var: &'static str,
    path: PathBuf,
    /// Arguments that load the library and exit.
    probe: &'static [&'static str],
    install: &'static str,
}

impl Peer {
    fn redis_py() -> Peer {
        Peer {
            name: "redis-py",
            interpreter: "python3",
            script: "redis_py.py",
            path_var: "PYTHONPATH",
            path: cache().join("python"),
            probe: &["-c", "import redis"],
            install: "pip install --target target/peer-clients/python redis",
        }
    }

    fn ioredis() -> Peer {
        Peer {
            name: "ioredis",
            interpreter: "node",
            script: "ioredis.js",
            path_var: "NODE_PATH",
            path: cache().join("node/node_modules"),
            probe: &["-e", "require('ioredis')"],
            install: "npm install --prefix target/peer-clients/node ioredis",
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(self.interpreter);
        cmd.env(self.path_var, &self.path);
        cmd
    }

    /// Whether the interpreter and the library are there; if not, says why the test is
    /// skipped, or panics when `SHEAVE_REQUIRE_PEERS=1`.
    fn available(&self) -> bool {
        let found = self
            .command()
            .args(self.probe)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let why = format!(
                "{} not usable: {} or the library under {} is missing ({})",
                self.name,
                self.interpreter,
                self.path.display(),
                self.install
            );
            if std::env::var("SHEAVE_REQUIRE_PEERS").as_deref() == Ok("1") {
                panic!("{why}, but SHEAVE_REQUIRE_PEERS=1");
            }
            eprintln!("skipped: {why}");
        }
        found
    }

    /// Runs every case against `addr`; panics with the script's output if one fails.
    fn passes_against(&self, server: &str, addr: SocketAddr) {
        let out = run(self
            .command()
            .arg(script(self.script))
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{} against {server}:\n{stdout}", self.name);
        assert!(
            out.status.success() && stdout.lines().last() == Some("all ok"),
            "{} failed against {server}:\n{stdout}\n{stderr}",
            self.name
        );
        for case in [
            "connect",
            "set and get",
            "pipeline of 3000 commands",
            "binary-safe keys and values",
            "a 1 MiB value",
            "32 concurrent connections from one pool",
            "expiry",
            "a transaction",
            "an unknown command is a clean error",
        ] {
            assert!(
                stdout.lines().any(|l| l.starts_with(&format!("ok {case}"))),
                "{}: no '{case}' against {server}:\n{stdout}",
                self.name
            );
        }
    }
}

fn every_case_passes(peer: Peer) {
    if !peer.available() || !have("redis-server") {
        return;
    }
    let control = RedisServer::start();
    peer.passes_against("redis-server", control.addr);
    let kv = KvServer::start();
    peer.passes_against("kv", kv.addr);
}

#[test]
fn redis_py_at_its_defaults_passes_every_case_against_kv_as_against_redis_server() {
    every_case_passes(Peer::redis_py());
}

#[test]
fn ioredis_at_its_defaults_passes_every_case_against_kv_as_against_redis_server() {
    every_case_passes(Peer::ioredis());
}

/// An example's binary, as `cargo test` builds it next to this test's own.
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join(name);
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} not built (cargo test --workspace builds it)",
        path.display()
    );
    if std::env::var("SHEAVE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{why}, but SHEAVE_REQUIRE_PEERS=1");
    }
    eprintln!("skipped: {why}");
    None
}

/// The kv example, started as its header says (with port 0); killed when dropped.
struct KvExample {
    child: Child,
    addr: SocketAddr,
}

impl KvExample {
    fn start(binary: &Path) -> KvExample {
        let mut child = Command::new(binary)
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the kv example");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the kv example said where it listens");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        KvExample { child, addr }
    }
}

impl Drop for KvExample {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_kv_example_runs_as_its_header_says_and_serves_kv_client_and_redis_py() {
    let (Some(kv), Some(kv_client)) = (example("kv"), example("kv_client")) else {
        return;
    };
    let server = KvExample::start(&kv);
    let out = run(Command::new(kv_client).arg(server.addr.to_string()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "protocol -> Resp3",
        "PING -> PONG",
        "INCR x100 -> up to Some(100)",
        "DEL -> 3",
    ] {
        assert!(stdout.contains(line), "no {line:?} in {stdout}");
    }
    let py = Peer::redis_py();
    if py.available() {
        py.passes_against("the kv example", server.addr);
    }
}
