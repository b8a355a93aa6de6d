//! The admin listener (loopback unless the config says otherwise): `/metrics` in the
//! Prometheus text format 0.0.4, `/endpoints` in JSON, `/healthz`, and `/drain` (POST) to
//! start a graceful drain of every listener.
//!
//! Scraping sends a message to each runtime thread, which copies out its own counters; the
//! copies are merged here. The request path only ever touches its thread's `Cell`s.
//!
//! ```
//! use sheave_proxy::{Proxy, config::Config};
//! use std::io::{Read, Write};
//!
//! let proxy = Proxy::start(Config::parse(r#"
//!     [admin]
//!     address = "127.0.0.1:0"
//!     [[listener]]
//!     name = "redis"
//!     address = "127.0.0.1:0"
//!     protocol = "resp"
//!     cluster = "cache"
//!     [[cluster]]
//!     name = "cache"
//!     endpoints = ["127.0.0.1:6379"]
//! "#).unwrap()).unwrap();
//! let mut conn = std::net::TcpStream::connect(proxy.admin_addr().unwrap()).unwrap();
//! conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").unwrap();
//! let mut text = String::new();
//! conn.read_to_string(&mut text).unwrap();
//! assert!(text.starts_with("HTTP/1.1 200"));
//! assert!(text.contains("# TYPE sheave_proxy_requests_total counter\n"));
//! assert!(text.contains("sheave_proxy_connections_accepted_total{listener=\"redis\"} 0\n"));
//! ```

use crate::run::scrape;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use sheave_core::Handle;
use sheave_http::Body;
use sheave_service::{Error, Service};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The admin service: one per admin connection, sharing the drain switch (the admin's state
/// is shared between threads; it is not on any request path).
#[derive(Debug, Clone)]
pub struct Admin {
    listeners: crate::run::Listening,
    draining: Arc<AtomicBool>,
}

impl Admin {
    /// The admin of a proxy whose running listeners `/drain` stops.
    pub fn new(listeners: crate::run::Listening) -> Self {
        Admin {
            listeners,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

impl Service<Request<Body>> for Admin {
    type Response = Response<Full<Bytes>>;
    type Error = Error;
    type Permit = ();

    async fn ready(&self) -> Result<(), Error> {
        Ok(())
    }

    async fn call(&self, (): (), req: Request<Body>) -> Result<Self::Response, Error> {
        const TEXT: &str = "text/plain; charset=utf-8";
        Ok(match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                scrape(&Handle::current()).await.render(),
            ),
            (&Method::GET, "/endpoints") => reply(
                StatusCode::OK,
                "application/json",
                scrape(&Handle::current()).await.endpoints_json(),
            ),
            (&Method::GET, "/healthz") => match self.draining.load(Ordering::Acquire) {
                false => reply(StatusCode::OK, TEXT, "ok\n".into()),
                true => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "draining\n".into()),
            },
            (&Method::POST, "/drain") => {
                self.draining.store(true, Ordering::Release);
                self.listeners.drain();
                reply(StatusCode::ACCEPTED, TEXT, "draining\n".into())
            }
            (_, "/metrics" | "/endpoints" | "/healthz" | "/drain") => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "GET /metrics, /endpoints, /healthz; POST /drain\n".into(),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                TEXT,
                "GET /metrics, /endpoints, /healthz; POST /drain\n".into(),
            ),
        })
    }
}
