//! # sheave-proto
//!
//! Thin framing for sheave: make any protocol a [`Service`](sheave_service::Service) on both
//! sides in a few lines, with backpressure from the socket to the service.
//!
//! - [`codec`]: [`Decoder`](codec::Decoder) and [`Encoder`](codec::Encoder) over `BytesMut`;
//!   lines and length-delimited codecs. Every codec has limits on by default.
//! - [`resp`]: the redis protocol (RESP2 and RESP3, per connection): frames, codec, a typed
//!   client with the `HELLO` handshake and push frames kept apart.
//! - [`Framed`]: a connection as a stream and a sink of frames, with bounded buffers and
//!   batched writes.
//! - [`dispatch`]: one dispatch engine with role markers ([`Pipeline`](dispatch::Pipeline) /
//!   [`Multiplex`](dispatch::Multiplex)) and two drivers: [`ServerConnection`] serves a
//!   connection with a service; [`ClientConnection`] is a service over a connection, and [`Connector`]
//!   dials one per address.
//! - [`server`]: [`Server`] — listeners on every runtime thread, limits, timeouts, graceful
//!   shutdown.
//!
//! ```
//! use sheave_core::Runtime;
//! use sheave_proto::{Connector, Server, resp::{self, Frame, RespCodec}};
//! use sheave_service::{Error, NewService, service_fn};
//!
//! let rt = Runtime::new().unwrap();
//! rt.block_on(async {
//!     // A redis-protocol server that answers every command with PONG.
//!     let server = Server::bind("127.0.0.1:0".parse().unwrap())
//!         .codec(RespCodec::new())
//!         .build()
//!         .unwrap();
//!     let addr = server.local_addr();
//!     sheave_core::spawn(server.serve(|_peer| async {
//!         Ok::<_, Error>(service_fn(|_cmd: Frame| async {
//!             Ok::<_, Error>(Frame::Simple("PONG".into()))
//!         }))
//!     }));
//!     // And a typed client for it.
//!     let conn = Connector::pipeline(RespCodec::new()).new_service(addr).await.unwrap();
//!     let client = resp::Client::new(conn);
//!     assert_eq!(client.ping().await.unwrap(), "PONG");
//! });
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

pub mod chaos;
pub mod codec;
pub mod dispatch;
pub mod framed;
pub mod resp;
pub mod server;

pub use dispatch::{ClientConnection, Connector, ServerConnection};
pub use framed::Framed;
pub use server::{Driver, Server, ServerHandle};
