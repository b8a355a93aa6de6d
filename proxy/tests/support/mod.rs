//! Helpers for the proxy's tests: outside programs (skipped with a reason when absent,
//! required when `SHEAVE_REQUIRE_PEERS=1`), real `redis-server` shards, a blocking RESP
//! connection, and a proxy started from a config text.

#![allow(dead_code)] // each test file uses its own part

use bytes::BytesMut;
use sheave_proto::codec::{Decoder, Encoder};
use sheave_proto::resp::{Frame, RespCodec};
use sheave_proxy::Proxy;
use sheave_proxy::config::Config;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[path = "../../../testkit/peers.rs"]
mod peers;
#[allow(unused_imports)] // each test file uses its own part
pub use peers::{PROGRAM_TIMEOUT, free_port, have, run};

/// A real `redis-server` on a free loopback port, no persistence; killed when dropped.
pub struct RedisServer {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts it and waits (on its log, not on a clock) until it accepts connections.
    #[track_caller]
    pub fn start() -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sheave-proxy-redis-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "notice"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("redis-server did not become ready");
        RedisServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: Some(child),
        }
    }

    /// Kills it now (`SIGKILL`: a crash, not a shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking RESP connection, with the kit's codec.
pub struct Conn {
    stream: TcpStream,
    codec: RespCodec,
    buf: BytesMut,
}

impl Conn {
    #[track_caller]
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            codec: RespCodec::new(),
            buf: BytesMut::new(),
        }
    }

    /// Writes these commands in one write.
    pub fn send(&mut self, cmds: &[Frame]) {
        let mut out = BytesMut::new();
        for cmd in cmds {
            self.codec.encode(cmd.clone(), &mut out).unwrap();
        }
        self.stream.write_all(&out).unwrap();
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one reply.
    #[track_caller]
    pub fn reply(&mut self) -> Frame {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).expect("a valid reply") {
                return frame;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).expect("read a reply");
            assert!(n > 0, "the connection closed before the reply");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads raw bytes until `n` are in (for protocol-exact checks).
    #[track_caller]
    pub fn raw(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let mut chunk = [0u8; 16 * 1024];
            let got = self.stream.read(&mut chunk).expect("read");
            assert!(got > 0, "closed after {} of {n} bytes", self.buf.len());
            self.buf.extend_from_slice(&chunk[..got]);
        }
        self.buf.split_to(n).to_vec()
    }

    /// Sends one command and reads its reply.
    #[track_caller]
    pub fn cmd(&mut self, parts: &[&str]) -> Frame {
        self.send(&[Frame::command(parts)]);
        self.reply()
    }
}

/// A proxy started from `config`, which must be valid.
#[track_caller]
pub fn proxy(config: &str) -> Proxy {
    let config = Config::parse(config).unwrap_or_else(|e| panic!("config refused: {e}"));
    Proxy::start(config).expect("the proxy starts")
}

/// The `endpoints = [...]` value for these servers.
pub fn endpoints(shards: &[RedisServer]) -> String {
    let list: Vec<String> = shards.iter().map(|s| format!("\"{}\"", s.addr)).collect();
    format!("[{}]", list.join(", "))
}

pub fn bulk(s: &str) -> Frame {
    Frame::Bulk(bytes::Bytes::copy_from_slice(s.as_bytes()))
}

/// `nutcracker` (twemproxy) with a config file; killed when dropped.
pub struct Nutcracker {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Nutcracker {
    /// Starts it and waits until it accepts connections (it logs nothing on start at the
    /// default level, so a connect is the event waited for, bounded in count).
    #[track_caller]
    pub fn start(config: &std::path::Path, port: u16) -> Nutcracker {
        let child = Command::new("nutcracker")
            .arg("-c")
            .arg(config)
            .args(["-s", &free_port().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nutcracker");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut n = Nutcracker {
            addr,
            child: Some(child),
        };
        for _ in 0..200 {
            if TcpStream::connect(addr).is_ok() {
                return n;
            }
            if let Some(Ok(Some(status))) = n.child.as_mut().map(|c| c.try_wait()) {
                panic!("nutcracker exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        n.kill();
        panic!("nutcracker did not listen on {addr}");
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nutcracker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// nginx serving `hello from NAME` on a free loopback port (`worker_processes 1`), every
/// request logged to its access log, so a test can count what it served; stopped on drop.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Nginx {
    /// Starts it, or says why not (skip or, under `SHEAVE_REQUIRE_PEERS=1`, panic).
    pub fn start(name: &str) -> Option<Nginx> {
        let binary = ["/usr/sbin/nginx", "nginx"].into_iter().find(|b| {
            Command::new(b)
                .arg("-v")
                .output()
                .is_ok_and(|o| o.status.success())
        })?;
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("sheave-proxy-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log {dir}/access.log;\n client_body_temp_path {dir};\n\
             proxy_temp_path {dir};\n fastcgi_temp_path {dir};\n uwsgi_temp_path {dir};\n\
             scgi_temp_path {dir};\n keepalive_requests 1000000;\n\
             server {{\n  listen 127.0.0.1:{port};\n\
             location / {{ return 200 \"hello from {name}\"; }}\n }}\n}}\n",
            dir = dir.display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut child = Command::new(binary)
            .args(["-c", dir.join("nginx.conf").to_str().unwrap(), "-p"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Bounded wait until it accepts: a connect is the event.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nginx exited ({status}): {log}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not start: {log}"
            );
            std::thread::yield_now();
        }
        Some(Nginx { child, addr, dir })
    }

    /// Requests it has answered (lines in its access log; nginx writes each as it ends).
    pub fn served(&self) -> usize {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker (a killed master leaves it running).
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether nginx is installed (see [`have`]).
pub fn have_nginx() -> bool {
    let found = ["/usr/sbin/nginx", "nginx"].into_iter().any(|b| {
        Command::new(b)
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        if std::env::var("SHEAVE_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("nginx not installed but SHEAVE_REQUIRE_PEERS=1");
        }
        eprintln!("skipped: nginx not installed (apt-get install nginx-light)");
    }
    found
}
