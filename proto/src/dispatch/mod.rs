//! Dispatchers: one engine that turns a framed connection into a [`Service`](sheave_service::Service) on either side.
//!
//! Two role markers pick the matching of requests to responses, and two drivers pick the side:
//!
//! | | server ([`ServerConnection`]) | client ([`ClientConnection`]) |
//! |---|---|---|
//! | [`Pipeline`] | responses written in request order | responses matched first in, first out |
//! | [`Multiplex`] | responses written as they complete, tagged with the request's id | responses matched by id |
//!
//! The [`Mode`] trait is the whole difference between the rows: whether order matters, and how
//! to read and write a request id in a frame ([`Tagged`]).
//!
//! # Backpressure, from the socket to the service
//!
//! On the server side, a connection reads bytes only when its decoder needs more to make the
//! next frame; a decoded request waits for the service's [`ready`](sheave_service::Service::ready) before the
//! next one is decoded; at most `max_in_flight` requests run at once; and responses are encoded
//! into a write buffer that, once over `max_write_buffer`, stops the taking of new requests
//! until it drains. Each of these stops the reading, so a slow service, or a peer that sends
//! and never reads, fills the kernel's socket buffers and TCP pushes back on the peer — the
//! server's memory stays bounded by (in-flight bound × response size + write buffer bound +
//! one frame).
//!
//! Completion costs O(1) per response: each in-flight request has a slot with its own waker
//! that queues the slot's index when woken, and the connection polls only queued slots
//! (tokio-proto polled every in-flight future on each wake-up and went quadratic). Slots and
//! their boxed futures are reused, so a warmed-up connection allocates nothing per request.
//! Each call is polled once as soon as it is made; a response ready on that first poll with
//! nothing older in flight (the common case: most services answer at once) is encoded
//! straight away, bypassing the pipeline's order queue.
//!
//! ```
//! use sheave_core::{Runtime, net::{TcpListener, TcpStream}};
//! use sheave_proto::codec::LinesCodec;
//! use sheave_proto::dispatch::{ClientConnection, ServerConnection};
//! use sheave_proto::Framed;
//! use sheave_service::{Error, ServiceExt, service_fn};
//!
//! let rt = Runtime::new().unwrap();
//! rt.block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     sheave_core::spawn(async move {
//!         let (conn, _) = listener.accept().await.unwrap();
//!         let shout = service_fn(|line: String| async move { Ok::<_, Error>(line.to_uppercase()) });
//!         ServerConnection::pipeline()
//!             .serve(Framed::new(conn, LinesCodec::new()), shout)
//!             .await
//!     });
//!     let client = ClientConnection::pipeline(TcpStream::connect(addr).await.unwrap(), LinesCodec::new());
//!     assert_eq!(client.oneshot("hi".to_string()).await.unwrap(), "HI");
//! });
//! ```

mod client;
mod server;
mod wake;

pub use client::{ClientConfig, ClientConnection, Connector, Permit};
pub use server::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_WRITE_BUFFER, ServerConnection};

use std::fmt;

/// How a dispatcher matches responses to requests: [`Pipeline`] or [`Multiplex`].
///
/// `Req` is the request frame type and `Resp` the response frame type. The tag methods are
/// only used by [`Multiplex`]; for [`Pipeline`] they do nothing.
pub trait Mode<Req, Resp>: Copy + Default + fmt::Debug + 'static {
    /// Whether responses must follow request order.
    const ORDERED: bool;

    /// The id a request carries (server side).
    fn request_tag(req: &Req) -> u64;
    /// Gives a request its id (client side).
    fn set_request_tag(req: &mut Req, tag: u64);
    /// The id a response carries (client side).
    fn response_tag(resp: &Resp) -> u64;
    /// Gives a response the id of its request (server side).
    fn set_response_tag(resp: &mut Resp, tag: u64);
}

/// Responses in request order; no ids on the wire (redis, HTTP/1.1, memcached text).
#[derive(Debug, Clone, Copy, Default)]
pub struct Pipeline;

/// Responses in completion order, matched by an id carried in each frame (see [`Tagged`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Multiplex;

impl<Req, Resp> Mode<Req, Resp> for Pipeline {
    const ORDERED: bool = true;
    fn request_tag(_: &Req) -> u64 {
        0
    }
    fn set_request_tag(_: &mut Req, _: u64) {}
    fn response_tag(_: &Resp) -> u64 {
        0
    }
    fn set_response_tag(_: &mut Resp, _: u64) {}
}

impl<Req: Tagged, Resp: Tagged> Mode<Req, Resp> for Multiplex {
    const ORDERED: bool = false;
    fn request_tag(req: &Req) -> u64 {
        req.tag()
    }
    fn set_request_tag(req: &mut Req, tag: u64) {
        req.set_tag(tag)
    }
    fn response_tag(resp: &Resp) -> u64 {
        resp.tag()
    }
    fn set_response_tag(resp: &mut Resp, tag: u64) {
        resp.set_tag(tag)
    }
}

/// A frame that carries a request id, for [`Multiplex`]ed dispatch.
///
/// ```
/// use sheave_proto::dispatch::Tagged;
///
/// let mut frame = (0u64, "payload");
/// frame.set_tag(7);
/// assert_eq!(frame.tag(), 7);
/// ```
pub trait Tagged {
    /// The id.
    fn tag(&self) -> u64;
    /// Sets the id.
    fn set_tag(&mut self, tag: u64);
}

/// `(id, body)` pairs are tagged by their first element.
impl<T> Tagged for (u64, T) {
    fn tag(&self) -> u64 {
        self.0
    }
    fn set_tag(&mut self, tag: u64) {
        self.0 = tag;
    }
}
