//! Outside programs in tests, shared by every test crate of the workspace (each includes this
//! file with `#[path = ".../testkit/peers.rs"] mod peers;`): whether a peer is installed —
//! skipping with a reason when it is not, failing under `SHEAVE_REQUIRE_PEERS=1` (CI) where a
//! skip would hide a failure — running one with a deadline, and a free loopback port.

#![allow(dead_code)] // each test crate uses its own part

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The longest any outside program may run.
pub const PROGRAM_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether `program` is on the `PATH`. When it is not, prints why the test is skipped
/// (naming the Debian `package` to install), or panics when `SHEAVE_REQUIRE_PEERS=1`.
#[track_caller]
pub fn have(program: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("SHEAVE_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{program} is required (SHEAVE_REQUIRE_PEERS=1) but not installed");
        }
        eprintln!("skipped: {program} is not installed (apt-get install {package})");
    }
    found
}

/// Runs a command to completion, killing it if it outlives [`PROGRAM_TIMEOUT`].
#[track_caller]
pub fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PROGRAM_TIMEOUT) {
        Ok(output) => output.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{cmd:?} did not finish within {PROGRAM_TIMEOUT:?}");
        }
    }
}

/// A free loopback port (bound, then released for the program that takes it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("its address")
        .port()
}
