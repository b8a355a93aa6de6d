//! Shared by the HTTP integration tests: a test server on its own runtime thread, and peers
//! (outside programs) that skip when absent, unless `SHEAVE_REQUIRE_PEERS=1`.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sheave_core::Runtime;
use sheave_http::{Body, Server};
use sheave_proto::ServerHandle;
use sheave_service::{Error, service_fn};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The bound on every wait of a test.
pub const WITHIN: Duration = Duration::from_secs(10);

/// A running test server; shut down (gracefully) and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    /// How many `/slow` requests the handler has begun.
    pub slow_started: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The handler of the tests: `/` says hello; `/echo` sends the body back; `/drop` drops the
/// body unread; `/timeout`, `/overloaded` and `/fail` fail with those errors; `/slow` counts
/// itself in `slow_started` and answers after 300 ms of work (server-side: the tests wait on
/// the count, not on a clock).
async fn handler(
    req: http::Request<Body>,
    slow_started: Arc<AtomicUsize>,
) -> Result<http::Response<Full<Bytes>>, Error> {
    let path = req.uri().path().to_string();
    let text = match path.as_str() {
        "/slow" => {
            slow_started.fetch_add(1, Ordering::SeqCst);
            sheave_core::time::sleep(Duration::from_millis(300)).await;
            Bytes::from_static(b"slow done")
        }
        "/echo" => req.into_body().collect().await?.to_bytes(),
        "/drop" => {
            drop(req);
            Bytes::from_static(b"dropped")
        }
        "/timeout" => return Err(Error::timeout()),
        "/overloaded" => return Err(Error::overloaded()),
        "/fail" => return Err(Error::service("boom")),
        _ => Bytes::from_static(b"hello, sheave"),
    };
    Ok(http::Response::new(Full::new(text)))
}

/// Starts the test server with `configure` applied to its builder.
pub fn start_with(
    configure: impl FnOnce(sheave_http::server::Builder) -> sheave_http::server::Builder
    + Send
    + 'static,
) -> TestServer {
    start_on(1, configure)
}

/// Like [`start_with`], on a runtime of `threads` threads.
pub fn start_on(
    threads: usize,
    configure: impl FnOnce(sheave_http::server::Builder) -> sheave_http::server::Builder
    + Send
    + 'static,
) -> TestServer {
    let (tx, rx) = std::sync::mpsc::channel();
    let slow_started = Arc::new(AtomicUsize::new(0));
    let counter = slow_started.clone();
    let thread = std::thread::spawn(move || {
        let rt = Runtime::builder().threads(threads).build().unwrap();
        rt.block_on(async move {
            let builder = configure(Server::bind("127.0.0.1:0".parse().unwrap()));
            let server = builder.build().unwrap();
            tx.send((server.local_addr(), server.handle())).unwrap();
            server
                .serve(move |_peer: SocketAddr| {
                    let counter = counter.clone();
                    async move {
                        Ok::<_, Error>(service_fn(move |req| handler(req, counter.clone())))
                    }
                })
                .await
                .unwrap();
        })
    });
    let (addr, handle) = rx.recv_timeout(WITHIN).expect("the server starts");
    TestServer {
        addr,
        handle,
        slow_started,
        thread: Some(thread),
    }
}

pub fn start() -> TestServer {
    start_with(|b| b)
}

#[path = "../../../testkit/peers.rs"]
mod peers;

/// Whether `program` is installed; see [`peers::have`].
#[track_caller]
pub fn peer(program: &str) -> bool {
    peers::have(program, program)
}

/// Sends `bytes` on a new connection and reads until the server closes it (bounded).
#[track_caller]
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(WITHIN)).unwrap();
    conn.set_write_timeout(Some(WITHIN)).unwrap();
    let _ = conn.write_all(bytes); // the server may close before reading all of it
    let mut out = Vec::new();
    let mut buf = [0; 8192];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "reading the answer: {e} (so far: {:?})",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A GET with `Connection: close` still gets its hello.
#[track_caller]
pub fn assert_serving(addr: SocketAddr) {
    let reply = exchange(
        addr,
        b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.ends_with("hello, sheave"), "{reply}");
}

/// Waits (bounded) until the server has begun `n` `/slow` requests.
#[track_caller]
pub fn wait_slow_started(server: &TestServer, n: usize) {
    let deadline = Instant::now() + WITHIN;
    while server.slow_started.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "the slow request never began");
        std::thread::yield_now();
    }
}

/// The resident set of this process (the test server runs in it), from `/proc/self/status`.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}
