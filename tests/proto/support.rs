//! Helpers for the proto tests: an in-process kv server, outside programs run with a
//! deadline, and a redis-server that dies with its guard.

use bytes::Bytes;
use sheave::service::{Service, TryReady};
use sheave::{Error, Runtime};
use sheave_proto::resp::{Frame, RespCodec};
use sheave_proto::{Server, ServerHandle};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::kv::{Kv, KvService};

#[path = "../../testkit/peers.rs"]
mod peers;
pub use peers::run;

/// Whether `program` (one of redis's) is installed; see [`peers::have`].
#[track_caller]
pub fn have(program: &str) -> bool {
    peers::have(program, "redis-server redis-tools")
}

/// A kv server on its own runtime thread; shut down (gracefully) and joined on drop.
pub struct KvServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    /// Calls made to the kv service, over every connection.
    pub calls: Arc<AtomicUsize>,
    pub kv: Kv,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Counts calls, then hands them to the kv service.
#[derive(Debug)]
struct Counting {
    inner: KvService,
    calls: Arc<AtomicUsize>,
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
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(self.inner.execute(&cmd))
    }
}

impl KvServer {
    /// Starts a kv server on 127.0.0.1, port 0, with a small write buffer bound.
    #[track_caller]
    pub fn start() -> KvServer {
        let kv = Kv::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let (kv2, calls2) = (kv.clone(), calls.clone());
        let thread = std::thread::spawn(move || {
            let rt = Runtime::new().expect("runtime");
            rt.block_on(async move {
                let server = Server::bind("127.0.0.1:0".parse().unwrap())
                    .codec(RespCodec::new())
                    .max_in_flight(32)
                    .max_write_buffer(64 * 1024)
                    .drain_timeout(Duration::from_secs(5))
                    .build()
                    .expect("bind");
                kv2.set_port(server.local_addr().port());
                tx.send((server.local_addr(), server.handle())).unwrap();
                server
                    .serve(move |_peer: SocketAddr| {
                        let service = Counting {
                            inner: KvService::new(kv2.clone()),
                            calls: calls2.clone(),
                        };
                        async move { Ok::<_, Error>(service) }
                    })
                    .await
                    .expect("serve");
            });
        });
        let (addr, handle) = rx.recv_timeout(Duration::from_secs(10)).expect("server up");
        KvServer {
            addr,
            handle,
            calls,
            kv,
            thread: Some(thread),
        }
    }
}

impl Drop for KvServer {
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

/// A real `redis-server` on a free loopback port; killed when dropped, even on panic.
pub struct RedisServer {
    pub addr: SocketAddr,
    child: Child,
}

impl RedisServer {
    /// Starts it and waits (on its log, not on a clock) until it accepts connections.
    #[track_caller]
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts it with more configuration arguments (`--rename-command HELLO ""`, ...).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "notice"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let stdout = child.stdout.take().unwrap();
        let server = RedisServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
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
        server
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A RESP command as bytes.
pub fn command(parts: &[&str]) -> Vec<u8> {
    use sheave_proto::codec::Encoder;
    let mut buf = bytes::BytesMut::new();
    RespCodec::new()
        .encode(Frame::command(parts), &mut buf)
        .unwrap();
    buf.to_vec()
}

/// A value of `n` bytes.
pub fn value(n: usize) -> Bytes {
    Bytes::from(vec![b'x'; n])
}
