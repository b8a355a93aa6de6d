//! # sheave
//!
//! A kit for writing fast networking code: a deliberately thin thread-per-core runtime
//! ([`Runtime`], [`net`], [`time`]), a Service model ([`service`]) in which requests meet
//! responses with explicit readiness for backpressure, a thin framing layer ([`proto`]) and
//! the middleware every client and server stack needs ([`middleware`]).
//!
//! This crate re-exports the member crates so one dependency brings the kit:
//! - `sheave-core` — the runtime: [`Runtime`], [`spawn`], [`Handle`], [`net`], [`time`];
//! - `sheave-service` — [`service`]: `Service`, `NewService`, `Layer`, the builder, the
//!   combinators, one [`Error`] type;
//! - `sheave-proto` — [`proto`]: codecs, framed transports, dispatchers, `Server`, `Connector`;
//! - `sheave-middleware` — [`middleware`]: timeout, retry, limits, shedding, log, stats,
//!   discovery, balancing, circuit breaking, hedging;
//! - `sheave-http` — [`http`] (the default-on `http` feature): HTTP/1.1 and HTTP/2 servers and
//!   clients as sheave services, hyper underneath.
//!
//! ```
//! use sheave::{Runtime, net::{TcpListener, TcpStream}};
//! use futures::{AsyncReadExt, AsyncWriteExt};
//!
//! let rt = Runtime::new().unwrap();
//! rt.block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     sheave::spawn(async move {
//!         let (mut conn, _) = listener.accept().await.unwrap();
//!         let mut buf = [0; 2];
//!         conn.read_exact(&mut buf).await.unwrap();
//!         conn.write_all(&buf).await.unwrap();
//!     });
//!     let mut conn = TcpStream::connect(addr).await.unwrap();
//!     conn.write_all(b"hi").await.unwrap();
//!     let mut buf = [0; 2];
//!     conn.read_exact(&mut buf).await.unwrap();
//!     assert_eq!(&buf, b"hi");
//! });
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

pub use sheave_core::{
    Builder, Handle, JoinError, JoinHandle, RemoteJoinHandle, Runtime, ShutdownSignal, net, signal,
    spawn, time, yield_now,
};
#[cfg(feature = "http")]
pub use sheave_http as http;
pub use sheave_middleware as middleware;
pub use sheave_proto as proto;
pub use sheave_service as service;
pub use sheave_service::Error;

/// The README's code, compiled and run as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
