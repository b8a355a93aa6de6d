//! # sheave-http
//!
//! HTTP/1.1 and HTTP/2 on sheave, with hyper underneath: a [`Server`] whose handler is a sheave
//! `Service<http::Request<Body>>`, a [`Client`] that is a sheave `Service` for one endpoint
//! (and a `NewService<SocketAddr>`, so `Balance` spreads requests over many), streaming
//! [bodies](body) with backpressure, and an HTTP [classifier](classify) for retry, breaker and
//! ejection.
//!
//! - [`rt`]: what hyper needs from the runtime — I/O over sheave's `TcpStream`, a
//!   thread-local executor, a timer on sheave's wheel. No tokio runtime is started.
//! - [`server`]: one port for HTTP/1.1 and h2c (prior knowledge), built on
//!   `sheave_proto::Server`; errors become statuses; limits on by default.
//! - [`client`]: HTTP/1.1 with a small keep-alive pool, or HTTP/2 multiplexed on one
//!   connection; `ready()` waits for real capacity.
//! - [`body`]: [`Body`] (incoming, pulled, size-limited) and a bounded [`body::channel`].
//! - [`classify`]: the HTTP classifier and an idempotent-only retry policy.
//! - [`layers`]: set/override/remove headers and rewrite `Host`, a request id, an access log.
//! - [`framing`]: `Content-Length`/`Transfer-Encoding` sanity: conflicting framing never
//!   reaches the wire.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use sheave_core::Runtime;
//! use sheave_http::{Body, Client, Server};
//! use sheave_service::{Error, ServiceExt, service_fn};
//! use std::net::SocketAddr;
//!
//! let rt = Runtime::new().unwrap();
//! rt.block_on(async {
//!     let server = Server::bind("127.0.0.1:0".parse().unwrap()).build().unwrap();
//!     let addr = server.local_addr();
//!     let handle = server.handle();
//!     let serving = sheave_core::spawn(server.serve(|_peer: SocketAddr| async move {
//!         Ok::<_, Error>(service_fn(|req: http::Request<Body>| async move {
//!             // Echo the body back.
//!             let bytes = req.into_body().collect().await?.to_bytes();
//!             Ok::<_, Error>(http::Response::new(Full::new(bytes)))
//!         }))
//!     }));
//!     let client = Client::builder().build(addr);
//!     let request = http::Request::post("/").body(Full::new(Bytes::from("ping"))).unwrap();
//!     let response = client.oneshot(request).await.unwrap();
//!     assert_eq!(response.status(), 200);
//!     let body = response.into_body().collect().await.unwrap().to_bytes();
//!     assert_eq!(body, "ping");
//!     handle.shutdown();
//!     serving.await.unwrap().unwrap();
//! });
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

pub mod body;
pub mod classify;
pub mod client;
pub mod framing;
pub mod layers;
pub mod rt;
pub mod server;

pub use body::Body;
pub use client::Client;
pub use server::Server;
