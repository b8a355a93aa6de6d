//! A running example binary: its output line by line, `SIGTERM`, and a bounded wait for its
//! exit. Every wait is on an event (a line on a channel, the exit on a channel), bounded by
//! [`WITHIN`].

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The bound on every wait: generous, because the machine may be busy compiling.
pub const WITHIN: Duration = Duration::from_secs(120);

/// The built binary of example `name`: cargo puts it in `target/<profile>/examples/`, next to
/// the `deps/` folder holding this test.
#[track_caller]
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let path = profile.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo test` (which builds the examples) or \
         `cargo build --examples`",
        path.display()
    );
    path
}

/// Sends `SIG<name>` to `pid` with the shell's `kill` builtin (`/bin/sh` is everywhere; a
/// `kill` binary need not be).
fn signal(pid: u32, name: &str) -> ExitStatus {
    Command::new("sh")
        .args(["-c", &format!("kill -{name} {pid}")])
        .status()
        .expect("sh")
}

/// An example process, killed if still running when dropped (a failed test leaves nothing
/// behind).
pub struct Example {
    name: String,
    pid: u32,
    lines: Receiver<String>,
    exit: Receiver<std::io::Result<ExitStatus>>,
    stderr: Arc<Mutex<String>>,
    /// Everything printed so far, for failure messages.
    seen: Vec<String>,
    exited: bool,
}

impl Example {
    /// Starts example `name` with `args`, its standard output and error captured.
    #[track_caller]
    pub fn start(name: &str, args: &[&str]) -> Example {
        let mut child: Child = Command::new(binary(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
        let pid = child.id();
        let (line_tx, lines) = channel();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped");
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                collected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&text);
            }
        });
        let (exit_tx, exit) = channel();
        std::thread::spawn(move || {
            let _ = exit_tx.send(child.wait());
        });
        Example {
            name: name.to_string(),
            pid,
            lines,
            exit,
            stderr,
            seen: Vec::new(),
            exited: false,
        }
    }

    fn output(&self) -> String {
        format!(
            "stdout so far:\n{}\nstderr so far:\n{}",
            self.seen.join("\n"),
            self.stderr.lock().unwrap_or_else(|e| e.into_inner())
        )
    }

    /// Waits for a line of standard output containing `text`; returns it.
    #[track_caller]
    pub fn wait_for_line(&mut self, text: &str) -> String {
        loop {
            match self.lines.recv_timeout(WITHIN) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no line with {text:?} within {WITHIN:?}\n{}",
                    self.name,
                    self.output()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited without a line with {text:?}\n{}",
                    self.name,
                    self.output()
                ),
            }
        }
    }

    /// Sends `SIGTERM`, as a process manager stopping a server would.
    #[track_caller]
    pub fn terminate(&self) {
        let status = signal(self.pid, "TERM");
        assert!(status.success(), "kill -TERM {}: {status}", self.pid);
    }

    /// Waits for the process to exit by itself and checks it exited 0.
    #[track_caller]
    pub fn expect_exit_success(&mut self) {
        let status = match self.exit.recv_timeout(WITHIN) {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!(
                "{} did not exit within {WITHIN:?}\n{}",
                self.name,
                self.output()
            ),
        };
        self.exited = true;
        // Keep what it printed last for the message.
        self.seen.extend(self.lines.try_iter());
        assert!(
            status.success(),
            "{} exited with {status}\n{}",
            self.name,
            self.output()
        );
    }

    /// `SIGTERM`, then [`expect_exit_success`](Example::expect_exit_success): the server
    /// stops cleanly and exits 0.
    #[track_caller]
    pub fn terminate_and_expect_success(&mut self) {
        self.terminate();
        self.expect_exit_success();
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if !self.exited {
            let _ = signal(self.pid, "KILL");
        }
    }
}
