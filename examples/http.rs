//! An HTTP server on loopback: a hello and a small JSON echo, HTTP/1.1 and h2c on one port.
//!
//! Run it and talk to it:
//!
//! ```text
//! cargo run --release --example http                   # prints "listening on 127.0.0.1:PORT"
//! curl http://127.0.0.1:PORT/                          # hello, sheave
//! curl --http2-prior-knowledge http://127.0.0.1:PORT/  # the same over HTTP/2
//! curl -d '{"name":"ann"}' http://127.0.0.1:PORT/echo  # {"echo":{"name":"ann"},"bytes":14}
//! ```
//!
//! `/echo` answers a JSON object with the body it got (which must be JSON-looking: an object or
//! an array; anything else is 400) and its length. `SIGTERM` or Ctrl-C (`SIGINT`) stops it
//! gracefully: requests in flight finish (HTTP/1.1 answers them with `Connection: close`,
//! HTTP/2 sends GOAWAY), then it exits 0.
//!
//! Flags: `--addr IP:PORT` (default 127.0.0.1:0), `--threads N` (default 1).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sheave::Runtime;
use sheave::http::{Body, Server};
use sheave::service::{Error, service_fn};
use std::net::SocketAddr;

async fn handle(req: http::Request<Body>) -> Result<http::Response<Full<Bytes>>, Error> {
    let (status, content_type, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/") => (200, "text/plain", Bytes::from_static(b"hello, sheave\n")),
        ("POST", "/echo") => {
            // Read the whole body (the server's body limit bounds it), check it looks like
            // JSON, and wrap it.
            let got = req.into_body().collect().await?.to_bytes();
            let text = String::from_utf8_lossy(&got);
            let trimmed = text.trim();
            let looks_json = (trimmed.starts_with('{') && trimmed.ends_with('}'))
                || (trimmed.starts_with('[') && trimmed.ends_with(']'));
            if looks_json {
                let out = format!("{{\"echo\":{trimmed},\"bytes\":{}}}\n", got.len());
                (200, "application/json", Bytes::from(out))
            } else {
                (
                    400,
                    "text/plain",
                    Bytes::from_static(b"send a JSON object or array\n"),
                )
            }
        }
        _ => (404, "text/plain", Bytes::from_static(b"not found\n")),
    };
    let response = http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body))
        .map_err(Error::service)?;
    Ok(response)
}

fn main() {
    let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut threads = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--addr", Some(v)) => addr = v.parse().expect("--addr IP:PORT"),
            ("--threads", Some(v)) => threads = v.parse().expect("--threads N"),
            _ => {
                eprintln!("usage: http [--addr IP:PORT] [--threads N]");
                std::process::exit(2);
            }
        }
    }
    let rt = Runtime::builder()
        .threads(threads)
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let server = Server::bind(addr)
            .threads(threads)
            .shutdown_on_signals()
            .build()
            .expect("bind");
        println!("listening on {} (HTTP/1.1 and h2c)", server.local_addr());
        server
            .serve(|_peer: SocketAddr| async move { Ok::<_, Error>(service_fn(handle)) })
            .await
            .expect("serve");
    });
}
