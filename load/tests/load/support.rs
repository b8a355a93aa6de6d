//! Servers for the `sheave-load` tests: outside programs (redis-server, nginx) that die with
//! their guards, and in-process servers on their own threads that count what they serve.

use sheave_core::Runtime;
use sheave_load::cli::{self, Config, Parsed};
use sheave_proto::codec::LinesCodec;
use sheave_proto::resp::{Frame, RespCodec};
use sheave_proto::{Server, ServerHandle};
use sheave_service::{Error, Service, TryReady};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::kv::{Kv, KvService};

/// The longest any wait for a server may take.
pub const WITHIN: Duration = Duration::from_secs(30);

#[path = "../../../testkit/peers.rs"]
mod peers;
pub use peers::free_port;

/// Whether `program` is installed; see [`peers::have`].
#[track_caller]
pub fn have(program: &str) -> bool {
    peers::have(program, program)
}

/// A config from command-line flags, as the binary would parse them.
#[track_caller]
pub fn config(args: &[&str]) -> Config {
    match cli::parse(args.iter().copied()).expect("valid flags") {
        Parsed::Run(c) => *c,
        Parsed::Help => panic!("--help"),
    }
}

/// A temporary directory of this test process, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "sheave-load-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real `redis-server` on a free loopback port, in a temporary directory, saving
/// nothing; killed when dropped.
pub struct RedisServer {
    pub addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts it and waits (on its log) until it accepts connections.
    pub fn start() -> RedisServer {
        let port = free_port();
        let dir = TempDir::new("redis");
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir.0)
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
        let server = RedisServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            _dir: dir,
        };
        rx.recv_timeout(WITHIN)
            .expect("redis-server did not become ready");
        server
    }

    /// Sends one inline command on a new connection and returns the reply's text.
    pub fn command(&self, line: &str) -> String {
        let mut conn = TcpStream::connect(self.addr).unwrap();
        conn.set_read_timeout(Some(WITHIN)).unwrap();
        conn.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let mut reader = BufReader::new(conn);
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        match first.as_bytes().first() {
            Some(b'$') => {
                let len: usize = first[1..].trim().parse().unwrap();
                let mut body = vec![0; len + 2];
                reader.read_exact(&mut body).unwrap();
                String::from_utf8_lossy(&body[..len]).into_owned()
            }
            _ => first[1..].trim().to_string(),
        }
    }

    /// `total_commands_processed` of `INFO stats` (this `INFO` itself not yet counted).
    pub fn commands_processed(&self) -> u64 {
        let info = self.command("INFO stats");
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .expect("INFO stats has total_commands_processed")
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on its own runtime thread; shut down and joined on drop.
pub struct InProcess {
    pub addr: SocketAddr,
    /// Requests the server's service was called with.
    pub served: Arc<AtomicU64>,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the server thread panicked");
        }
    }
}

/// Counts the calls, then hands them to the kv service.
struct Counting {
    inner: KvService,
    served: Arc<AtomicU64>,
}

impl Service<Frame> for Counting {
    type Response = Frame;
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        Ok(())
    }

    fn try_ready(&self) -> TryReady<(), Error> {
        TryReady::Ready(())
    }

    async fn call(&self, (): (), cmd: Frame) -> Result<Frame, Error> {
        self.served.fetch_add(1, Ordering::Relaxed);
        Ok(self.inner.execute(&cmd))
    }
}

/// The kv store of `examples/support/kv.rs` behind sheave's RESP server, counting calls.
pub fn kv_server() -> (InProcess, Kv) {
    let kv = Kv::new();
    let served = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let (kv2, served2) = (kv.clone(), served.clone());
    let thread = std::thread::spawn(move || {
        Runtime::new().unwrap().block_on(async move {
            let server = Server::bind("127.0.0.1:0".parse().unwrap())
                .codec(RespCodec::new())
                .build()
                .expect("bind");
            tx.send((server.local_addr(), server.handle())).unwrap();
            server
                .serve(move |_peer: SocketAddr| {
                    let service = Counting {
                        inner: KvService::new(kv2.clone()),
                        served: served2.clone(),
                    };
                    async move { Ok::<_, Error>(service) }
                })
                .await
                .expect("serve");
        });
    });
    let (addr, handle) = rx.recv_timeout(WITHIN).expect("server up");
    let server = InProcess {
        addr,
        served,
        handle,
        thread: Some(thread),
    };
    (server, kv)
}

/// A line echo server that, once it has answered `after` lines, stalls every line for
/// `stall` (all lines that arrive in that window wait until it ends), once.
pub fn stalling_echo(after: u64, stall: Duration) -> InProcess {
    let served = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let served2 = served.clone();
    let thread = std::thread::spawn(move || {
        Runtime::new().unwrap().block_on(async move {
            let server = Server::bind("127.0.0.1:0".parse().unwrap())
                .codec(LinesCodec::new())
                .build()
                .expect("bind");
            tx.send((server.local_addr(), server.handle())).unwrap();
            let until: Arc<std::sync::Mutex<Option<Instant>>> = Default::default();
            server
                .serve(move |_peer: SocketAddr| {
                    let (served, until) = (served2.clone(), until.clone());
                    let svc = sheave_service::service_fn(move |line: String| {
                        let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                        if n == after {
                            *until.lock().unwrap() = Some(Instant::now() + stall);
                        }
                        let wait = until.lock().unwrap().filter(|u| *u > Instant::now());
                        async move {
                            if let Some(u) = wait {
                                sheave_core::time::sleep_until(u).await;
                            }
                            Ok::<_, Error>(line)
                        }
                    });
                    async move { Ok::<_, Error>(svc) }
                })
                .await
                .expect("serve");
        });
    });
    let (addr, handle) = rx.recv_timeout(WITHIN).expect("server up");
    InProcess {
        addr,
        served,
        handle,
        thread: Some(thread),
    }
}

/// A raw TCP echo server (a thread per connection), counting the bytes it echoed.
pub struct RawEcho {
    pub addr: SocketAddr,
    pub bytes: Arc<AtomicU64>,
}

pub fn raw_echo() -> RawEcho {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = bytes.clone();
    // The threads end when the test process does (the listener lives as long).
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    RawEcho { addr, bytes }
}

/// nginx with a generated config on free loopback ports (HTTP/1.1 and h2c), logging each
/// request to `access.log`; stopped on drop.
pub struct Nginx {
    pub addr: SocketAddr,
    pub h2: SocketAddr,
    child: Child,
    dir: TempDir,
}

impl Nginx {
    pub fn start() -> Option<Nginx> {
        let binary = ["/usr/sbin/nginx", "nginx"].into_iter().find(|b| {
            Command::new(b)
                .arg("-v")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        let Some(binary) = binary else {
            have("nginx");
            return None;
        };
        // Two free ports, held together while they are picked so they differ.
        let (port, h2) = {
            let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            (
                a.local_addr().unwrap().port(),
                b.local_addr().unwrap().port(),
            )
        };
        let dir = TempDir::new("nginx");
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n log_format counted \"$request_method $uri $status\";\n\
             log_format detail \"$request_method $args $http_x_test $content_length\";\n\
             access_log {d}/access.log counted;\n access_log {d}/detail.log detail;\n client_body_temp_path {d};\n\
             proxy_temp_path {d};\n fastcgi_temp_path {d};\n uwsgi_temp_path {d};\n\
             scgi_temp_path {d};\n keepalive_requests 1000000;\n\
             server {{\n  listen 127.0.0.1:{port};\n  listen 127.0.0.1:{h2} http2;\n\
             location /missing {{ return 404; }}\n\
             location / {{ return 200 \"hello from nginx\"; }}\n }}\n}}\n",
            d = dir.0.display(),
        );
        std::fs::write(dir.0.join("nginx.conf"), conf).unwrap();
        let mut child = Command::new(binary)
            .args(["-c", dir.0.join("nginx.conf").to_str().unwrap(), "-p"])
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let h2 = SocketAddr::from(([127, 0, 0, 1], h2));
        // Wait (bounded) until it accepts: a connect is the event.
        let deadline = Instant::now() + WITHIN;
        while TcpStream::connect(addr).is_err() || TcpStream::connect(h2).is_err() {
            let log = || std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nginx exited ({status}): {}", log());
            }
            assert!(Instant::now() < deadline, "nginx did not start: {}", log());
            std::thread::yield_now();
        }
        Some(Nginx {
            addr,
            h2,
            child,
            dir,
        })
    }

    /// The access log's lines: one per request nginx answered (`METHOD URI STATUS`).
    pub fn logged(&self) -> Vec<String> {
        self.log("access.log")
    }

    /// The detail log's lines: `METHOD ARGS X-TEST CONTENT-LENGTH` per request.
    pub fn details(&self) -> Vec<String> {
        self.log("detail.log")
    }

    fn log(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.0.join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, so the master stops its workers.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}
